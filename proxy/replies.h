/*
 * replies.h - the SMTP replies the proxy makes itself, in one table: code,
 * enhanced status code (RFC 3463) and text, each written once.
 *
 * Replies relayed from the backend or set by a filter module are not here.
 * A row that names the host (as Postfix's 421s do) gets the configured
 * hostname after the enhanced code.  A caller adding a detail (a parameter
 * name, a message id, an address) appends it to the row's line.
 */
#ifndef SMTPCHAIN_REPLIES_H
#define SMTPCHAIN_REPLIES_H

#include <stddef.h>

enum reply_id {
	REPLY_OK = 0,			/* 250 2.0.0 Ok */
	REPLY_TLS_READY,		/* 220 to STARTTLS */
	REPLY_DATA_GO,			/* 354 of a message held for the filters */
	REPLY_SHUTTING_DOWN,		/* 421 4.3.2 */
	REPLY_TOO_MANY_ERRORS,		/* 421 4.7.0: limits.max_refused_recipients */
	REPLY_TOO_MANY_CONNECTIONS,	/* 421 4.7.0 (a caller may add " from ADDR") */
	REPLY_TIMEOUT,			/* 421 4.4.2: the client's */
	REPLY_BACKEND_UNREACHABLE,	/* 421 4.3.0 */
	REPLY_BACKEND_LOST,		/* 421 4.3.0 */
	REPLY_BACKEND_BAD_REPLY,	/* 421 4.3.0 */
	REPLY_BACKEND_TLS_FAILED,	/* 421 4.7.5 */
	REPLY_BACKEND_TIMEOUT,		/* 421 4.4.2 */
	REPLY_ONLY_BDAT,		/* 421 4.5.0: a command between BDAT chunks sent as DATA */
	REPLY_LOCAL_IO_ERROR,		/* 451 4.3.0, the session ends */
	REPLY_CANNOT_QUARANTINE,	/* 451 4.3.0 */
	REPLY_REPLAY_REFUSED,		/* 451 4.3.0: the envelope the filters made */
	REPLY_NO_STORAGE,		/* 452 4.3.1 */
	REPLY_TOO_MANY_RCPTS,		/* 452 4.5.3 */
	REPLY_LINE_TOO_LONG,		/* 500 5.5.2 */
	REPLY_BARE_CRLF_COMMAND,	/* 500 5.5.2 */
	REPLY_BAD_SYNTAX,		/* 500 5.5.2 */
	REPLY_AUTH_LINE_TOO_LONG,	/* 500 5.5.6 */
	REPLY_SYNTAX_MAIL,		/* 501 5.5.4 */
	REPLY_SYNTAX_RCPT,
	REPLY_SYNTAX_BDAT,
	REPLY_SYNTAX_STARTTLS,
	REPLY_SYNTAX_AUTH,
	REPLY_BAD_SIZE,			/* 501 5.5.4: SIZE= */
	REPLY_NOT_IMPLEMENTED,		/* 502 5.5.1 */
	REPLY_HELO_FIRST,		/* 503 5.5.1 */
	REPLY_NEED_MAIL,
	REPLY_ALREADY_AUTHENTICATED,
	REPLY_MAIL_IN_PROGRESS,
	REPLY_BARE_CRLF_DATA,		/* 521 5.5.2: smuggling */
	REPLY_AUTH_NEEDS_TLS,		/* 538 5.7.11 */
	REPLY_NUL_IN_HEADER,		/* 550 5.6.0 */
	REPLY_HEADER_TOO_BIG,		/* 552 5.3.4 */
	REPLY_MESSAGE_TOO_BIG,		/* 552 5.3.4 */
	REPLY_NON_ASCII,		/* 553 5.6.7 */
	REPLY_NO_RCPTS,			/* 554 5.5.1 */
	REPLY_UNSUPPORTED_PARAM,	/* 555 5.5.4 (a caller adds " NAME") */
	/* a module's refusal without a reply of its own (filter.c), by step */
	REPLY_FILTER_TEMP_CONNECT,	/* 421 4.7.0 */
	REPLY_FILTER_DENY_CONNECT,	/* 554 5.7.1 */
	REPLY_FILTER_TEMP_RCPT,		/* 451 4.7.1 */
	REPLY_FILTER_DENY_RCPT,		/* 550 5.7.1 */
	REPLY_FILTER_TEMP_MESSAGE,	/* 451 4.7.1 */
	REPLY_FILTER_DENY_MESSAGE,	/* 550 5.7.1 */
	REPLY_FILTER_TEMP,		/* 451 4.7.1: any other step */
	REPLY_FILTER_DENY_UNKNOWN,	/* 550 5.7.1: a command the proxy does not know */
	REPLY_FILTER_DENY,		/* 550 5.7.1: any other step */
	REPLY_FILTER_IO_ERROR,		/* 451 4.3.0: the held message could not be read */
	REPLY_MAX
};

/*
 * The reply's line without CRLF: "CODE ENHANCED TEXT", or for a row that
 * names the host "CODE ENHANCED HOSTNAME TEXT" written into buf (len).
 * The result is valid until buf is reused.
 */
const char *reply_line(enum reply_id id, const char *hostname, char *buf, size_t len);

#endif
