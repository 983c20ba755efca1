/*
 * smtp.h - SMTP protocol text: command lines, MAIL/RCPT paths and parameters,
 * replies.  Pure functions on byte ranges, no I/O, no allocation: the session
 * and the backend client call them, the unit tests and fuzzers drive them.
 */
#ifndef SMTPCHAIN_SMTP_H
#define SMTPCHAIN_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_verb {
	SMTP_UNKNOWN = 0,
	SMTP_HELO, SMTP_EHLO, SMTP_LHLO,
	SMTP_MAIL, SMTP_RCPT, SMTP_DATA, SMTP_BDAT,
	SMTP_RSET, SMTP_NOOP, SMTP_QUIT,
	SMTP_VRFY, SMTP_EXPN, SMTP_HELP, SMTP_ETRN,
	SMTP_STARTTLS, SMTP_AUTH,
	SMTP_XCLIENT, SMTP_XFORWARD,
	SMTP_ATRN, SMTP_TURN,
	SMTP_VERB_MAX
};

const char *smtp_verb_name(enum smtp_verb verb);

struct smtp_cmd {
	enum smtp_verb	 verb;
	const char	*arg;		/* after the verb and one or more spaces; "" if none */
	size_t		 arglen;	/* trailing spaces not included */
};

/*
 * Parse one command line, CRLF already removed.  The verb is matched
 * case-insensitively and must be followed by end of line or a space (MAIL and
 * RCPT are recognised as "MAIL" / "RCPT" verbs; "FROM:"/"TO:" belong to the
 * argument).  A verb made of letters but not known is SMTP_UNKNOWN.  Returns
 * 0, or -1 when the line is empty, the verb is not made of letters, or the
 * line holds a CR, LF or NUL anywhere (the caller answers 500 5.5.2).
 */
int smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd);

#define SMTP_MAX_PARAMS 16

struct smtp_param {
	const char	*key;		/* e.g. "SIZE", as written */
	size_t		 keylen;
	const char	*value;		/* NULL when the parameter has no "=" */
	size_t		 valuelen;
};

struct smtp_path {
	const char	*addr;		/* between < and >, brackets and any source route
					   excluded; "" for <> */
	size_t		 addrlen;
	bool		 eightbit;	/* a byte >= 0x80 in the path, source
					   route included */
	struct smtp_param params[SMTP_MAX_PARAMS];
	size_t		 nparams;
};

/*
 * Parse the argument of MAIL ("FROM:<addr> params") or RCPT ("TO:<addr>
 * params"); prefix is "FROM:" or "TO:" (case-insensitive; a space after the
 * colon is tolerated, as Postfix does).  Addresses must be in angle brackets
 * and follow RFC 5321 4.1.2; UTF-8 (RFC 6531) must be well formed.  A mailbox
 * needs a domain, except RCPT TO:<Postmaster>; RCPT TO:<> is a syntax error,
 * and so is a parameter given twice (proxy and backend could read different
 * ones).  Returns 0, or -1 on a syntax error (501 5.5.4), -2 on too many
 * parameters (455/555 5.5.4).
 */
int smtp_parse_path(const char *arg, size_t len, const char *prefix, struct smtp_path *path);

/* The parameter named key (case-insensitive), or NULL. */
const struct smtp_param *smtp_path_param(const struct smtp_path *path, const char *key);

/*
 * Find one complete reply at the start of buf: lines "ddd-text CRLF" ending
 * with "ddd text CRLF" (or "dddCRLF").  Returns 1 with *replylen (bytes
 * including the final CRLF) and *code set, 0 when more input is needed, -1
 * when the text is not a valid reply (bad code: not %x32-35 %x30-35 %x30-39
 * as RFC 5321 4.2 has it; a line not ending in CRLF; bare CR or LF).  -1 is
 * given as soon as the bytes seen prove it, even when the reply is not
 * complete yet.  Lines with different codes are a valid reply whose code is
 * the last line's, as Postfix's SMTP client reads it (smtp_chat.c); see
 * smtp_reply_unify().
 */
int smtp_reply_scan(const char *buf, size_t len, size_t *replylen, int *code);

/*
 * Rewrite the code of every line of a complete reply (as smtp_reply_scan
 * found it) to code, so that what is relayed says one thing.  Returns how
 * many lines had another code (0: the reply was uniform).
 */
int smtp_reply_unify(char *buf, size_t len, int code);

/*
 * Encode src as RFC 3461 xtext (for XCLIENT/XFORWARD values): bytes outside
 * 0x21..0x7e and '+' and '=' become "+HH" (upper-case hex).  Returns the
 * length written (always NUL-terminated) or -1 when it does not fit (out is
 * then "" if outlen > 0).
 */
int smtp_xtext_encode(const char *src, size_t len, char *out, size_t outlen);

#endif
