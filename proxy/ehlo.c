/*
 * ehlo.c - the EHLO capability list: read the backend's, write the client's.
 *
 * ehlo_caps_parse() notes what a 250 EHLO reply offers.  ehlo_rewrite()
 * builds the list the client sees: the domain line as the backend wrote it,
 * then only keywords the proxy can carry through (EHLO_CARRIED), foreign
 * X-keywords, and the operator's additions; never anything in EHLO_NEVER.
 * SIZE is always written from its parsed value, capped by the policy.
 *
 * Readings of the contract in ehlo.h, the strict way where it is silent:
 *   - a keyword must be an RFC 5321 ehlo-keyword (ALPHA / DIGIT, then also
 *     "-"); a backend line without one is dropped;
 *   - each keyword is shown once, the first time it comes (a backend listing
 *     DSN twice, or an add line for a keyword already shown, gives one line);
 *   - pol->remove wins over pol->add: a removed keyword is never shown;
 *   - an add line with a keyword in EHLO_NEVER, or holding a CR, LF or NUL,
 *     or without a valid keyword, is ignored;
 *   - an add line for SIZE stands in for the backend's value, and the cap
 *     still applies to it; a SIZE value that is not a number or does not fit
 *     in 64 bits counts as "no limit given".
 *
 * No allocation, no I/O; output goes to the caller's buffer.
 */
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ehlo.h"
#include "smtp.h"

static const char *const ehlo_carried[] = { EHLO_CARRIED };
static const char *const ehlo_never[] = { EHLO_NEVER };

#define EHLO_NCARRIED	(sizeof(ehlo_carried) / sizeof(ehlo_carried[0]))
#define EHLO_NNEVER	(sizeof(ehlo_never) / sizeof(ehlo_never[0]))

/* ASCII upper case, locale-independent. */
static unsigned char
ehlo_upper(unsigned char c)
{
	return c >= 'a' && c <= 'z' ? c - ('a' - 'A') : c;
}

/* ASCII letter or digit, locale-independent. */
static bool
ehlo_is_alnum(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* Length of the keyword at the start of text: up to a space or '='. */
static size_t
ehlo_keyword_len(const char *text, size_t len)
{
	size_t i;

	for (i = 0; i < len && text[i] != ' ' && text[i] != '='; i++)
		;
	return i;
}

/* Whether kw[0..len) is an ehlo-keyword: (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"). */
static bool
ehlo_keyword_valid(const char *kw, size_t len)
{
	size_t i;

	if (len == 0 || !ehlo_is_alnum((unsigned char)kw[0]))
		return false;
	for (i = 1; i < len; i++)
		if (!ehlo_is_alnum((unsigned char)kw[i]) && kw[i] != '-')
			return false;
	return true;
}

/* Two keywords are equal, ignoring ASCII case. */
static bool
ehlo_keyword_eq(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t i;

	if (alen != blen)
		return false;
	for (i = 0; i < alen; i++)
		if (ehlo_upper((unsigned char)a[i]) != ehlo_upper((unsigned char)b[i]))
			return false;
	return true;
}

/* 1 if keyword (up to a space or '=') is in the NUL-terminated list. */
bool
ehlo_keyword_in(const char *kw, size_t kwlen, const char *const *list, size_t n)
{
	size_t i, klen = ehlo_keyword_len(kw, kwlen);

	if (list == NULL)
		return false;
	for (i = 0; i < n; i++) {
		if (list[i] == NULL)
			continue;
		if (ehlo_keyword_eq(kw, klen, list[i], ehlo_keyword_len(list[i], strlen(list[i]))))
			return true;
	}
	return false;
}

/*
 * The SIZE value after the keyword in text ("SIZE 10240000"); 0 when there
 * is none, it is not a plain number, or it does not fit in 64 bits.
 */
static uint64_t
ehlo_size_value(const char *text, size_t len)
{
	size_t i = ehlo_keyword_len(text, len);
	uint64_t v = 0;
	unsigned d;
	bool any = false;

	while (i < len && (text[i] == ' ' || text[i] == '='))
		i++;
	for (; i < len && text[i] >= '0' && text[i] <= '9'; i++) {
		d = (unsigned)(text[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return 0;	/* absurd: no limit */
		v = v * 10 + d;
		any = true;
	}
	while (i < len && text[i] == ' ')
		i++;
	if (!any || i != len)
		return 0;
	return v;
}

/*
 * The next line of a reply at *pos: its text after "ddd-" / "ddd " (empty
 * for "dddCRLF"), without the line end.  Returns false at the end; *code250
 * says whether the line has the 250 code.
 */
static bool
ehlo_next_line(const char *reply, size_t len, size_t *pos, const char **text,
    size_t *textlen, bool *code250)
{
	size_t start = *pos, end, next;
	const char *cr;

	if (start >= len)
		return false;
	cr = memchr(reply + start, '\n', len - start);
	if (cr == NULL) {
		end = next = len;
	} else {
		next = (size_t)(cr - reply) + 1;
		end = next - 1;
		if (end > start && reply[end - 1] == '\r')
			end--;
	}
	*pos = next;
	*code250 = end - start >= 3 && memcmp(reply + start, "250", 3) == 0 &&
	    (end - start == 3 || reply[start + 3] == '-' || reply[start + 3] == ' ');
	if (end - start > 4) {
		*text = reply + start + 4;
		*textlen = end - start - 4;
	} else {
		*text = reply + end;
		*textlen = 0;
	}
	return true;
}

/* Read the keywords of a complete multi-line 250 EHLO reply (CRLF lines). */
void
ehlo_caps_parse(const char *reply, size_t len, struct ehlo_caps *caps)
{
	const char *text;
	size_t pos = 0, textlen, klen;
	bool code250, first = true;

	memset(caps, 0, sizeof(*caps));
	while (ehlo_next_line(reply, len, &pos, &text, &textlen, &code250)) {
		if (first) {
			first = false;	/* the domain line */
			continue;
		}
		if (!code250)
			continue;
		klen = ehlo_keyword_len(text, textlen);
#define EHLO_IS(word)	ehlo_keyword_eq(text, klen, (word), sizeof(word) - 1)
		if (EHLO_IS("PIPELINING"))
			caps->pipelining = true;
		else if (EHLO_IS("CHUNKING"))
			caps->chunking = true;
		else if (EHLO_IS("SMTPUTF8"))
			caps->smtputf8 = true;
		else if (EHLO_IS("8BITMIME"))
			caps->eightbitmime = true;
		else if (EHLO_IS("DSN"))
			caps->dsn = true;
		else if (EHLO_IS("ENHANCEDSTATUSCODES"))
			caps->enhancedstatuscodes = true;
		else if (EHLO_IS("SIZE")) {
			if (!caps->size)
				caps->size_limit = ehlo_size_value(text, textlen);
			caps->size = true;
		} else if (EHLO_IS("STARTTLS"))
			caps->starttls = true;
		else if (EHLO_IS("AUTH"))
			caps->auth = true;
		else if (EHLO_IS("XCLIENT"))
			caps->xclient = true;
		else if (EHLO_IS("XFORWARD"))
			caps->xforward = true;
#undef EHLO_IS
	}
}

struct ehlo_out {
	char	*buf;
	size_t	 len;
	size_t	 cap;
	size_t	 first_kw;	/* where the first keyword line starts */
	size_t	 last;		/* where the last line written starts */
	bool	 overflow;
};

/* Append one "250-text" CRLF line (the last one is fixed up at the end). */
static void
ehlo_out_line(struct ehlo_out *o, const char *text, size_t textlen)
{
	if (o->overflow || o->cap - o->len < textlen + 6) {
		o->overflow = true;
		return;
	}
	o->last = o->len;
	memcpy(o->buf + o->len, "250-", 4);
	memcpy(o->buf + o->len + 4, text, textlen);
	memcpy(o->buf + o->len + 4 + textlen, "\r\n", 2);
	o->len += textlen + 6;
}

/* Whether a keyword line for kw is already in the output. */
static bool
ehlo_out_has(const struct ehlo_out *o, const char *kw, size_t kwlen)
{
	const char *text;
	size_t pos = o->first_kw, textlen;
	bool code250;

	while (ehlo_next_line(o->buf, o->len, &pos, &text, &textlen, &code250))
		if (ehlo_keyword_eq(text, ehlo_keyword_len(text, textlen), kw, kwlen))
			return true;
	return false;
}

/* Write "SIZE n" (or a bare "SIZE") for a value, capped by the policy. */
static void
ehlo_out_size(struct ehlo_out *o, uint64_t value, uint64_t cap)
{
	char line[32];
	int n;

	if (cap != 0 && (value == 0 || value > cap))
		value = cap;
	if (value == 0)
		n = snprintf(line, sizeof(line), "SIZE");
	else
		n = snprintf(line, sizeof(line), "SIZE %llu", (unsigned long long)value);
	ehlo_out_line(o, line, (size_t)n);
}

/* Whether an add line can be shown: a valid keyword, not NEVER, clean text. */
static bool
ehlo_add_usable(const char *line, const struct ehlo_policy *pol)
{
	size_t len = strlen(line), klen = ehlo_keyword_len(line, len);

	if (!ehlo_keyword_valid(line, klen))
		return false;
	if (strpbrk(line, "\r\n") != NULL)
		return false;
	if (ehlo_keyword_in(line, len, ehlo_never, EHLO_NNEVER))
		return false;
	if (ehlo_keyword_in(line, len, pol->remove, pol->nremove))
		return false;
	return true;
}

/* The first usable add line for the keyword, or NULL. */
static const char *
ehlo_add_for(const struct ehlo_policy *pol, const char *kw, size_t kwlen)
{
	size_t i;

	for (i = 0; pol->add != NULL && i < pol->nadd; i++) {
		const char *a = pol->add[i];

		if (a == NULL || !ehlo_add_usable(a, pol))
			continue;
		if (ehlo_keyword_eq(a, ehlo_keyword_len(a, strlen(a)), kw, kwlen))
			return a;
	}
	return NULL;
}

/* Rewrite the backend's 250 EHLO reply into the list the client sees. */
int
ehlo_rewrite(const char *reply, size_t len, const struct ehlo_policy *pol,
    char *out, size_t outlen, struct ehlo_caps *client)
{
	static const struct ehlo_policy none;
	struct ehlo_out o = { .buf = out, .cap = outlen };
	const char *text, *add;
	size_t pos = 0, textlen, klen, replylen, i;
	bool code250;
	int code;

	if (pol == NULL)
		pol = &none;
	if (client != NULL)
		memset(client, 0, sizeof(*client));
	if (smtp_reply_scan(reply, len, &replylen, &code) != 1 || code != 250 || replylen != len)
		return -1;

	/* The domain line, as it is. */
	ehlo_next_line(reply, len, &pos, &text, &textlen, &code250);
	ehlo_out_line(&o, text, textlen);
	o.first_kw = o.len;

	/* The backend's keywords, in order. */
	while (ehlo_next_line(reply, len, &pos, &text, &textlen, &code250)) {
		klen = ehlo_keyword_len(text, textlen);
		if (!ehlo_keyword_valid(text, klen))
			continue;
		if (ehlo_keyword_in(text, klen, pol->remove, pol->nremove) ||
		    ehlo_keyword_in(text, klen, ehlo_never, EHLO_NNEVER))
			continue;
		if (ehlo_out_has(&o, text, klen))
			continue;
		add = ehlo_add_for(pol, text, klen);
		if (ehlo_keyword_eq(text, klen, "SIZE", 4)) {
			if (add != NULL)
				ehlo_out_size(&o, ehlo_size_value(add, strlen(add)), pol->size);
			else
				ehlo_out_size(&o, ehlo_size_value(text, textlen), pol->size);
		} else if (add != NULL)
			ehlo_out_line(&o, add, strlen(add));
		else if (ehlo_keyword_in(text, klen, ehlo_carried, EHLO_NCARRIED) ||
		    text[0] == 'X' || text[0] == 'x')
			ehlo_out_line(&o, text, textlen);
	}

	/* The operator's additions the backend did not have. */
	for (i = 0; pol->add != NULL && i < pol->nadd; i++) {
		add = pol->add[i];
		if (add == NULL || !ehlo_add_usable(add, pol))
			continue;
		klen = ehlo_keyword_len(add, strlen(add));
		if (ehlo_out_has(&o, add, klen))
			continue;
		if (ehlo_keyword_eq(add, klen, "SIZE", 4))
			ehlo_out_size(&o, ehlo_size_value(add, strlen(add)), pol->size);
		else
			ehlo_out_line(&o, add, strlen(add));
	}

	/* The SIZE cap, when nobody said SIZE. */
	if (pol->size != 0 && !ehlo_keyword_in("SIZE", 4, pol->remove, pol->nremove) &&
	    !ehlo_out_has(&o, "SIZE", 4))
		ehlo_out_size(&o, 0, pol->size);

	if (o.overflow || o.len > INT_MAX)
		return -1;
	o.buf[o.last + 3] = ' ';
	if (client != NULL)
		ehlo_caps_parse(o.buf, o.len, client);
	return (int)o.len;
}
