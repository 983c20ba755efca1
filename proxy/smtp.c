/*
 * smtp.c - SMTP protocol text: command lines, MAIL/RCPT paths with their
 * ESMTP parameters, server replies, xtext.
 *
 * Everything here works on a byte range that is not NUL-terminated and never
 * looks past its end.  Nothing allocates, nothing does I/O, nothing logs: the
 * callers (session, backend client) decide what a failure means on the wire.
 *
 * Paths follow RFC 5321 section 4.1.2, extended by RFC 6531 (SMTPUTF8): an
 * address may carry UTF-8, which must be well formed.  The parser is strict
 * where a lax reading could make the proxy and the backend disagree on what
 * was sent: no CR, LF or NUL anywhere in a command line, one closing bracket
 * found by a real grammar (a quoted local part may hold '>'), no repeated
 * ESMTP parameter.
 */
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "smtp.h"

static const char *const smtp_verb_names[SMTP_VERB_MAX] = {
	[SMTP_UNKNOWN] = "UNKNOWN",
	[SMTP_HELO] = "HELO",
	[SMTP_EHLO] = "EHLO",
	[SMTP_LHLO] = "LHLO",
	[SMTP_MAIL] = "MAIL",
	[SMTP_RCPT] = "RCPT",
	[SMTP_DATA] = "DATA",
	[SMTP_BDAT] = "BDAT",
	[SMTP_RSET] = "RSET",
	[SMTP_NOOP] = "NOOP",
	[SMTP_QUIT] = "QUIT",
	[SMTP_VRFY] = "VRFY",
	[SMTP_EXPN] = "EXPN",
	[SMTP_HELP] = "HELP",
	[SMTP_ETRN] = "ETRN",
	[SMTP_STARTTLS] = "STARTTLS",
	[SMTP_AUTH] = "AUTH",
	[SMTP_XCLIENT] = "XCLIENT",
	[SMTP_XFORWARD] = "XFORWARD",
	[SMTP_ATRN] = "ATRN",
	[SMTP_TURN] = "TURN",
};

/* The verb as written on the wire, "UNKNOWN" for anything else. */
const char *
smtp_verb_name(enum smtp_verb verb)
{
	if ((unsigned)verb >= SMTP_VERB_MAX)
		return "UNKNOWN";
	return smtp_verb_names[verb];
}

/* ASCII letter test that ignores the locale. */
static bool
smtp_is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* ASCII digit test that ignores the locale. */
static bool
smtp_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* ASCII upper case, locale-independent. */
static unsigned char
smtp_upper(unsigned char c)
{
	return c >= 'a' && c <= 'z' ? c - ('a' - 'A') : c;
}

/* Compare len bytes of s with the NUL-terminated word, ignoring ASCII case. */
static bool
smtp_word_eq(const char *s, size_t len, const char *word)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (word[i] == '\0' ||
		    smtp_upper((unsigned char)s[i]) != smtp_upper((unsigned char)word[i]))
			return false;
	}
	return word[i] == '\0';
}

/*
 * Length of the well-formed UTF-8 sequence for a non-ASCII character at
 * p[0], or 0 (overlong forms, surrogates and code points past U+10FFFF are
 * refused, as RFC 3629 demands).
 */
static size_t
smtp_utf8_len(const unsigned char *p, size_t avail)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (avail == 0)
		return 0;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		if (p[0] == 0xe0)
			lo = 0xa0;
		else if (p[0] == 0xed)
			hi = 0x9f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		if (p[0] == 0xf0)
			lo = 0x90;
		else if (p[0] == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (avail < n)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/* Parse one command line (CRLF removed) into verb and argument. */
int
smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd)
{
	const unsigned char *p = (const unsigned char *)line;
	size_t verblen, i, end;
	int v;

	cmd->verb = SMTP_UNKNOWN;
	cmd->arg = "";
	cmd->arglen = 0;
	if (len == 0)
		return -1;
	/* A CR, LF or NUL inside a line is where smuggling starts: refuse. */
	for (i = 0; i < len; i++)
		if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
			return -1;
	for (verblen = 0; verblen < len && p[verblen] != ' '; verblen++)
		if (!smtp_is_alpha(p[verblen]))
			return -1;
	if (verblen == 0)
		return -1;
	for (v = SMTP_UNKNOWN + 1; v < SMTP_VERB_MAX; v++)
		if (smtp_word_eq(line, verblen, smtp_verb_names[v])) {
			cmd->verb = (enum smtp_verb)v;
			break;
		}
	for (i = verblen; i < len && p[i] == ' '; i++)
		;
	for (end = len; end > i && p[end - 1] == ' '; end--)
		;
	cmd->arg = line + i;
	cmd->arglen = end - i;
	return 0;
}

/* The RFC 5322 atext set (Atom characters), ASCII part. */
static bool
smtp_is_atext(unsigned char c)
{
	if (smtp_is_alpha(c) || smtp_is_digit(c))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/*
 * Parse a Dot-string local part (Atom *("." Atom)) at arg[*pos]; UTF-8
 * characters count as atext (RFC 6531).  Returns false on a syntax error.
 */
static bool
smtp_parse_dot_string(const unsigned char *p, size_t len, size_t *pos, bool *eightbit)
{
	size_t i = *pos, n;
	bool atom_empty = true;

	while (i < len) {
		if (p[i] >= 0x80) {
			if ((n = smtp_utf8_len(p + i, len - i)) == 0)
				return false;
			*eightbit = true;
			i += n;
			atom_empty = false;
		} else if (smtp_is_atext(p[i])) {
			i++;
			atom_empty = false;
		} else if (p[i] == '.') {
			if (atom_empty)
				return false;
			i++;
			atom_empty = true;
		} else
			break;
	}
	if (atom_empty)
		return false;
	*pos = i;
	return true;
}

/*
 * Parse a Quoted-string local part at p[*pos] (which is the opening quote):
 * qtextSMTP, quoted-pairSMTP and UTF-8.  Returns false on a syntax error.
 */
static bool
smtp_parse_quoted(const unsigned char *p, size_t len, size_t *pos, bool *eightbit)
{
	size_t i = *pos + 1, n;

	while (i < len) {
		if (p[i] == '"') {
			*pos = i + 1;
			return true;
		}
		if (p[i] == '\\') {
			if (i + 1 >= len || p[i + 1] < 32 || p[i + 1] > 126)
				return false;
			i += 2;
		} else if (p[i] >= 0x80) {
			if ((n = smtp_utf8_len(p + i, len - i)) == 0)
				return false;
			*eightbit = true;
			i += n;
		} else if (p[i] >= 32 && p[i] <= 126)
			i++;
		else
			return false;
	}
	return false;
}

/*
 * Parse a Domain (sub-domain *("." sub-domain), labels of letters, digits
 * and inner hyphens, or U-labels) or an address literal ("[" 1*dcontent
 * "]") at p[*pos].  Returns false on a syntax error.
 */
static bool
smtp_parse_domain(const unsigned char *p, size_t len, size_t *pos, bool *eightbit)
{
	size_t i = *pos, n;
	bool label_empty = true, last_hyphen = false;

	if (i < len && p[i] == '[') {
		for (i++; i < len && p[i] != ']'; i++)
			if (p[i] < 33 || p[i] > 126 || p[i] == '[' || p[i] == '\\')
				return false;
		if (i >= len || i == *pos + 1)
			return false;
		*pos = i + 1;
		return true;
	}
	while (i < len) {
		if (p[i] >= 0x80) {
			if ((n = smtp_utf8_len(p + i, len - i)) == 0)
				return false;
			*eightbit = true;
			i += n;
			label_empty = false;
			last_hyphen = false;
		} else if (smtp_is_alpha(p[i]) || smtp_is_digit(p[i])) {
			i++;
			label_empty = false;
			last_hyphen = false;
		} else if (p[i] == '-') {
			if (label_empty)
				return false;
			i++;
			last_hyphen = true;
		} else if (p[i] == '.') {
			if (label_empty || last_hyphen)
				return false;
			i++;
			label_empty = true;
		} else
			break;
	}
	if (label_empty || last_hyphen)
		return false;
	*pos = i;
	return true;
}

/*
 * Parse an optional source route ("@" Domain *("," "@" Domain) ":") at
 * p[*pos]; RFC 5321 says to accept and ignore it.  Returns false on a
 * syntax error.
 */
static bool
smtp_parse_route(const unsigned char *p, size_t len, size_t *pos, bool *eightbit)
{
	size_t i = *pos;

	if (i >= len || p[i] != '@')
		return true;
	for (;;) {
		i++;	/* the '@' */
		if (!smtp_parse_domain(p, len, &i, eightbit))
			return false;
		if (i < len && p[i] == ',') {
			i++;
			if (i >= len || p[i] != '@')
				return false;
			continue;
		}
		if (i < len && p[i] == ':') {
			*pos = i + 1;
			return true;
		}
		return false;
	}
}

/* ESMTP keyword: (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"); returns its length. */
static size_t
smtp_param_keyword_len(const unsigned char *p, size_t len)
{
	size_t i;

	if (len == 0 || !(smtp_is_alpha(p[0]) || smtp_is_digit(p[0])))
		return 0;
	for (i = 1; i < len; i++)
		if (!(smtp_is_alpha(p[i]) || smtp_is_digit(p[i]) || p[i] == '-'))
			break;
	return i;
}

/*
 * Parse the ESMTP parameters after the closing bracket, p[*pos] onwards.
 * Returns 0, -1 on a syntax error, -2 when there are too many.
 */
static int
smtp_parse_params(const unsigned char *p, size_t len, size_t pos, struct smtp_path *path)
{
	size_t i = pos, klen, vstart, n, j, count = 0;
	struct smtp_param param;

	if (i < len && p[i] != ' ')
		return -1;
	for (;;) {
		while (i < len && p[i] == ' ')
			i++;
		if (i >= len)
			break;
		if ((klen = smtp_param_keyword_len(p + i, len - i)) == 0)
			return -1;
		param.key = (const char *)p + i;
		param.keylen = klen;
		param.value = NULL;
		param.valuelen = 0;
		i += klen;
		if (i < len && p[i] == '=') {
			vstart = ++i;
			while (i < len && p[i] != ' ') {
				if (p[i] >= 0x80) {
					if ((n = smtp_utf8_len(p + i, len - i)) == 0)
						return -1;
					i += n;
				} else if (p[i] >= 33 && p[i] <= 126 && p[i] != '=')
					i++;
				else
					return -1;
			}
			if (i == vstart)
				return -1;
			param.value = (const char *)p + vstart;
			param.valuelen = i - vstart;
		}
		if (i < len && p[i] != ' ')
			return -1;
		/* The same keyword twice: proxy and backend could read different ones. */
		for (j = 0; j < count && j < SMTP_MAX_PARAMS; j++)
			if (path->params[j].keylen == klen &&
			    strncasecmp(path->params[j].key, param.key, klen) == 0)
				return -1;
		if (count < SMTP_MAX_PARAMS)
			path->params[count] = param;
		count++;
	}
	if (count > SMTP_MAX_PARAMS) {
		path->nparams = SMTP_MAX_PARAMS;
		return -2;
	}
	path->nparams = count;
	return 0;
}

/* Parse "FROM:<path> params" or "TO:<path> params". */
int
smtp_parse_path(const char *arg, size_t len, const char *prefix, struct smtp_path *path)
{
	const unsigned char *p = (const unsigned char *)arg;
	size_t plen = strlen(prefix), i, start, mbox;
	bool is_rcpt = smtp_word_eq(prefix, plen, "TO:");

	memset(path, 0, sizeof(*path));
	path->addr = "";
	if (len < plen || !smtp_word_eq(arg, plen, prefix))
		return -1;
	i = plen;
	while (i < len && p[i] == ' ')	/* "MAIL FROM: <a@b>", as Postfix allows */
		i++;
	if (i >= len || p[i] != '<')
		return -1;
	start = ++i;
	if (i < len && p[i] == '>') {
		if (is_rcpt)
			return -1;	/* RCPT TO:<> is not an address */
		return smtp_parse_params(p, len, i + 1, path);
	}
	if (!smtp_parse_route(p, len, &i, &path->eightbit))
		return -1;
	mbox = i;
	if (i < len && p[i] == '"') {
		if (!smtp_parse_quoted(p, len, &i, &path->eightbit))
			return -1;
	} else if (!smtp_parse_dot_string(p, len, &i, &path->eightbit))
		return -1;
	if (i < len && p[i] == '@') {
		i++;
		if (!smtp_parse_domain(p, len, &i, &path->eightbit))
			return -1;
	} else if (!(is_rcpt && mbox == start &&
	    smtp_word_eq(arg + mbox, i - mbox, "postmaster")))
		return -1;	/* only <Postmaster> may go without a domain */
	if (i >= len || p[i] != '>')
		return -1;
	path->addr = arg + mbox;
	path->addrlen = i - mbox;
	return smtp_parse_params(p, len, i + 1, path);
}

/* The parameter named key (case-insensitive), or NULL. */
const struct smtp_param *
smtp_path_param(const struct smtp_path *path, const char *key)
{
	size_t i;

	for (i = 0; i < path->nparams && i < SMTP_MAX_PARAMS; i++)
		if (smtp_word_eq(path->params[i].key, path->params[i].keylen, key))
			return &path->params[i];
	return NULL;
}

/* Find one complete reply (one or more lines; its code is the last line's) at buf. */
int
smtp_reply_scan(const char *buf, size_t len, size_t *replylen, int *code)
{
	const unsigned char *p = (const unsigned char *)buf;
	size_t pos = 0, i;
	int this;
	bool last;

	for (;;) {
		/* Reply-code = %x32-35 %x30-35 %x30-39, checked as bytes arrive. */
		if (pos >= len)
			return 0;
		if (p[pos] < '2' || p[pos] > '5')
			return -1;
		if (pos + 1 >= len)
			return 0;
		if (p[pos + 1] < '0' || p[pos + 1] > '5')
			return -1;
		if (pos + 2 >= len)
			return 0;
		if (!smtp_is_digit(p[pos + 2]))
			return -1;
		this = (p[pos] - '0') * 100 + (p[pos + 1] - '0') * 10 + (p[pos + 2] - '0');
		if (pos + 3 >= len)
			return 0;
		if (p[pos + 3] == '\r') {
			last = true;
			i = pos + 3;
		} else if (p[pos + 3] == ' ' || p[pos + 3] == '-') {
			last = p[pos + 3] == ' ';
			i = pos + 4;
		} else
			return -1;
		for (; i < len && p[i] != '\r'; i++)
			if (p[i] == '\n')
				return -1;	/* bare LF */
		if (i + 1 >= len)
			return 0;
		if (p[i + 1] != '\n')
			return -1;	/* bare CR */
		pos = i + 2;
		if (last) {
			*replylen = pos;
			*code = this;
			return 1;
		}
	}
}

/* Give every line of a complete reply the same code; count the lines changed. */
int
smtp_reply_unify(char *buf, size_t len, int code)
{
	char digits[3] = { (char)('0' + code / 100), (char)('0' + code / 10 % 10),
	    (char)('0' + code % 10) };
	size_t pos = 0;
	int changed = 0;

	while (pos + 3 <= len) {
		const char *nl = memchr(buf + pos, '\n', len - pos);

		if (memcmp(buf + pos, digits, 3) != 0) {
			memcpy(buf + pos, digits, 3);
			changed++;
		}
		if (nl == NULL)
			break;
		pos = (size_t)(nl - buf) + 1;
	}
	return changed;
}

/* Encode src as RFC 3461 xtext into out, NUL-terminated. */
int
smtp_xtext_encode(const char *src, size_t len, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p = (const unsigned char *)src;
	size_t i, o = 0;

	if (outlen == 0)
		return -1;
	for (i = 0; i < len; i++) {
		if (p[i] >= 0x21 && p[i] <= 0x7e && p[i] != '+' && p[i] != '=') {
			if (outlen - o < 2)
				goto toolong;
			out[o++] = (char)p[i];
		} else {
			if (outlen - o < 4)
				goto toolong;
			out[o++] = '+';
			out[o++] = hex[p[i] >> 4];
			out[o++] = hex[p[i] & 0x0f];
		}
		if (o > INT_MAX - 4)
			goto toolong;
	}
	out[o] = '\0';
	return (int)o;
toolong:
	out[0] = '\0';
	return -1;
}
