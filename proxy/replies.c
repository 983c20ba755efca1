/*
 * replies.c - the table of the SMTP replies the proxy makes itself (see
 * replies.h).  The texts follow Postfix's smtpd where it has the same
 * reply, so that a client sees what it would see without the proxy.
 */
#include <stdbool.h>
#include <stdio.h>

#include "log.h"
#include "replies.h"

struct reply_row {
	const char	*code;
	const char	*enhanced;
	bool		 host;		/* the hostname goes after the enhanced code */
	const char	*text;
	const char	*line;		/* "CODE ENHANCED TEXT" (rows without the host) */
};

#define ROW(id, code, enhanced, text)		\
	[id] = { code, enhanced, false, text, code " " enhanced " " text }
#define ROW_HOST(id, code, enhanced, text)	\
	[id] = { code, enhanced, true, text, NULL }

static const struct reply_row replies[REPLY_MAX] = {
	ROW(REPLY_OK, "250", "2.0.0", "Ok"),
	ROW(REPLY_TLS_READY, "220", "2.0.0", "Ready to start TLS"),
	[REPLY_DATA_GO] = { "354", "", false, "End data with <CR><LF>.<CR><LF>",
	    "354 End data with <CR><LF>.<CR><LF>" },
	ROW_HOST(REPLY_SHUTTING_DOWN, "421", "4.3.2", "Service shutting down, closing connection"),
	ROW_HOST(REPLY_TOO_MANY_ERRORS, "421", "4.7.0", "Error: too many errors"),
	ROW_HOST(REPLY_TOO_MANY_CONNECTIONS, "421", "4.7.0", "Error: too many connections"),
	ROW_HOST(REPLY_TIMEOUT, "421", "4.4.2", "Error: timeout exceeded"),
	ROW_HOST(REPLY_BACKEND_UNREACHABLE, "421", "4.3.0",
	    "Service not available, backend unreachable"),
	ROW_HOST(REPLY_BACKEND_LOST, "421", "4.3.0",
	    "Service not available, lost connection to backend"),
	ROW_HOST(REPLY_BACKEND_BAD_REPLY, "421", "4.3.0",
	    "Service not available, bad reply from backend"),
	ROW_HOST(REPLY_BACKEND_TLS_FAILED, "421", "4.7.5",
	    "Service not available, backend TLS failed"),
	ROW_HOST(REPLY_BACKEND_TIMEOUT, "421", "4.4.2", "Error: backend timeout"),
	ROW_HOST(REPLY_ONLY_BDAT, "421", "4.5.0",
	    "Error: only BDAT may follow a BDAT chunk here, closing connection"),
	ROW_HOST(REPLY_LOCAL_IO_ERROR, "451", "4.3.0", "Error: local I/O error, closing connection"),
	ROW(REPLY_CANNOT_QUARANTINE, "451", "4.3.0",
	    "Error: cannot keep the message, try again later"),
	ROW(REPLY_REPLAY_REFUSED, "451", "4.3.0",
	    "Error: the backend refused the envelope the filters made, try again later"),
	ROW(REPLY_NO_STORAGE, "452", "4.3.1", "Error: insufficient system storage"),
	ROW(REPLY_TOO_MANY_RCPTS, "452", "4.5.3", "Error: too many recipients"),
	ROW(REPLY_LINE_TOO_LONG, "500", "5.5.2", "Error: command line too long"),
	ROW(REPLY_BARE_CRLF_COMMAND, "500", "5.5.2", "Error: bare <CR> or <LF> in command"),
	ROW(REPLY_BAD_SYNTAX, "500", "5.5.2", "Error: bad syntax"),
	ROW(REPLY_AUTH_LINE_TOO_LONG, "500", "5.5.6", "Error: authentication line too long"),
	ROW(REPLY_SYNTAX_MAIL, "501", "5.5.4", "Syntax: MAIL FROM:<address>"),
	ROW(REPLY_SYNTAX_RCPT, "501", "5.5.4", "Syntax: RCPT TO:<address>"),
	ROW(REPLY_SYNTAX_BDAT, "501", "5.5.4", "Syntax: BDAT count [LAST]"),
	ROW(REPLY_SYNTAX_STARTTLS, "501", "5.5.4", "Syntax: STARTTLS"),
	ROW(REPLY_SYNTAX_AUTH, "501", "5.5.4", "Syntax: AUTH mechanism"),
	ROW(REPLY_BAD_SIZE, "501", "5.5.4", "Error: bad SIZE parameter"),
	ROW(REPLY_NOT_IMPLEMENTED, "502", "5.5.1", "Error: command not implemented"),
	ROW(REPLY_HELO_FIRST, "503", "5.5.1", "Error: send HELO/EHLO first"),
	ROW(REPLY_NEED_MAIL, "503", "5.5.1", "Error: need MAIL command"),
	ROW(REPLY_ALREADY_AUTHENTICATED, "503", "5.5.1", "Error: already authenticated"),
	ROW(REPLY_MAIL_IN_PROGRESS, "503", "5.5.1", "Error: MAIL transaction in progress"),
	ROW_HOST(REPLY_BARE_CRLF_DATA, "521", "5.5.2", "Error: bare <CR> or <LF> in message data"),
	ROW(REPLY_AUTH_NEEDS_TLS, "538", "5.7.11",
	    "Encryption required for requested authentication mechanism"),
	ROW(REPLY_NUL_IN_HEADER, "550", "5.6.0", "Error: NUL character in a message header"),
	ROW(REPLY_HEADER_TOO_BIG, "552", "5.3.4", "Error: message header size exceeds limit"),
	ROW(REPLY_MESSAGE_TOO_BIG, "552", "5.3.4", "Error: message size exceeds fixed limit"),
	ROW(REPLY_NON_ASCII, "553", "5.6.7", "Error: non-ASCII address without SMTPUTF8"),
	ROW(REPLY_NO_RCPTS, "554", "5.5.1", "Error: no valid recipients"),
	ROW(REPLY_UNSUPPORTED_PARAM, "555", "5.5.4", "Error: unsupported parameter"),
	ROW(REPLY_FILTER_TEMP_CONNECT, "421", "4.7.0",
	    "Service temporarily unavailable, try again later"),
	ROW(REPLY_FILTER_DENY_CONNECT, "554", "5.7.1", "Access denied"),
	ROW(REPLY_FILTER_TEMP_RCPT, "451", "4.7.1", "Recipient temporarily refused, try again later"),
	ROW(REPLY_FILTER_DENY_RCPT, "550", "5.7.1", "Recipient refused"),
	ROW(REPLY_FILTER_TEMP_MESSAGE, "451", "4.7.1",
	    "Message temporarily refused, try again later"),
	ROW(REPLY_FILTER_DENY_MESSAGE, "550", "5.7.1", "Message content rejected"),
	ROW(REPLY_FILTER_TEMP, "451", "4.7.1", "Try again later"),
	ROW(REPLY_FILTER_DENY_UNKNOWN, "550", "5.7.1", "Command rejected"),
	ROW(REPLY_FILTER_DENY, "550", "5.7.1", "Access denied"),
	ROW(REPLY_FILTER_IO_ERROR, "451", "4.3.0", "Error: local I/O error"),
};

/* The reply's line, without CRLF (see replies.h). */
const char *
reply_line(enum reply_id id, const char *hostname, char *buf, size_t len)
{
	const struct reply_row *r;

	if ((unsigned)id >= REPLY_MAX || replies[id].code == NULL)
		log_panic("reply %d", (int)id);
	r = &replies[id];
	if (!r->host)
		return r->line;
	snprintf(buf, len, "%s %s %s %s", r->code, r->enhanced, hostname, r->text);
	return buf;
}
