/*
 * codec.c - the policy delegation protocol of Postfix, as bytes: the
 * request a policy client sends, the answer it reads back, and the
 * access(5) action in that answer.  Pure: no I/O, no host; the policy
 * module (policy.c) does the talking, t/unit/test_policy_codec and
 * t/fuzz/fuzz_policy test this file alone.
 *
 * DESCRIPTION
 *	A request is "name=value" lines and an empty line, as Postfix's
 *	attr_print_plain writes them (values raw; a CR or LF in a value,
 *	which SMTP never lets through, would end the line early, so it is
 *	written as '?').
 *
 *	An answer is read up to its empty line, at most PC_MAX_ANSWER octets;
 *	octets after it (a second answer nobody asked for) are an error, as is
 *	an answer with any attribute other than "action" (attr_scan_plain
 *	without ATTR_FLAG_EXTRA refuses them too).  Lines end with LF only,
 *	as in Postfix: a CR stays in the value.
 *
 *	Actions are parsed as Postfix's check_table_result (smtpd_check.c)
 *	does: the keyword up to the first blank, case-insensitive, then the
 *	text after the blanks; an enhanced status code at the start of the
 *	text (dsn_split) becomes the reply's.  A keyword we do not know (a
 *	restriction name such as reject_unknown_client_hostname, a lookup
 *	table) is PCA_UNKNOWN: the module applies its default_action.  The
 *	actions Postfix ignores with a warning when their argument is bad
 *	(PREPEND without "name:", REDIRECT/BCC without '@', FILTER without
 *	':') are PCA_DUNNO with `bad` saying why.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec.h"

#define MAP_REJECT_CODE	554	/* Postfix's access_map_reject_code */
#define MAP_DEFER_CODE	450	/* access_map_defer_code */

/* --- requests ------------------------------------------------------------- */

/* Append "name=value\n" (NULL value: empty); -1 out of memory. */
int
pc_put(struct pc_buf *b, const char *name, const char *value)
{
	size_t nn = strlen(name), vn;

	if (value == NULL)
		value = "";
	vn = strlen(value);
	if (buf_reserve(b, nn + vn + 2) != 0)
		return -1;
	memcpy(b->p + b->len, name, nn);
	b->len += nn;
	b->p[b->len++] = '=';
	for (size_t i = 0; i < vn; i++)
		b->p[b->len++] = value[i] == '\r' || value[i] == '\n' ? '?' : value[i];
	b->p[b->len++] = '\n';
	return 0;
}

int
pc_put_int(struct pc_buf *b, const char *name, unsigned long long value)
{
	char num[24];

	snprintf(num, sizeof(num), "%llu", value);
	return pc_put(b, name, num);
}

/* The empty line that ends a request. */
int
pc_end(struct pc_buf *b)
{
	if (buf_reserve(b, 1) != 0)
		return -1;
	b->p[b->len++] = '\n';
	return 0;
}

/* --- answers --------------------------------------------------------------- */

void
pc_reader_init(struct pc_reader *r)
{
	r->len = 0;
	r->end = 0;
}

/* Take n more octets of the answer. */
enum pc_read
pc_reader_feed(struct pc_reader *r, const char *p, size_t n, const char **err)
{
	size_t from = r->len;

	if (r->end != 0) {
		*err = "more octets after the end of the answer";
		return PC_ERROR;
	}
	if (n > PC_MAX_ANSWER - r->len) {
		*err = "answer over " "4096" " octets";
		return PC_ERROR;
	}
	memcpy(r->buf + r->len, p, n);
	r->len += n;
	r->buf[r->len] = '\0';
	/* The end: an LF at the start, or right after another LF. */
	for (size_t i = from; i < r->len; i++) {
		if (r->buf[i] != '\n' || (i > 0 && r->buf[i - 1] != '\n'))
			continue;
		r->end = i + 1;
		if (r->end < r->len) {
			*err = "more octets after the end of the answer";
			return PC_ERROR;
		}
		return PC_DONE;
	}
	return PC_NEED_MORE;
}

/* The action of a complete answer; see codec.h. */
const char *
pc_answer(struct pc_reader *r, const char **err)
{
	const char *action = NULL;
	char *line = r->buf, *nl, *eq;

	if (r->end == 0) {
		*err = "incomplete answer";
		return NULL;
	}
	r->buf[r->end] = '\0';
	while ((nl = strchr(line, '\n')) != NULL && nl != line) {
		*nl = '\0';
		if ((eq = strchr(line, '=')) == NULL) {
			*err = "a line without '='";
			return NULL;
		}
		*eq = '\0';
		if (strcmp(line, "action") != 0) {
			*err = "an attribute other than \"action\"";
			return NULL;
		}
		action = eq + 1;
		line = nl + 1;
	}
	if (action == NULL)
		*err = "no action attribute";
	return action;
}

/* --- actions --------------------------------------------------------------- */

static const char *const kind_names[] = {
	"unknown", "OK", "DUNNO", "REJECT", "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT",
	"PREPEND", "HOLD", "DISCARD", "REDIRECT", "BCC", "FILTER", "WARN", "INFO",
};

const char *
pc_kind_name(enum pc_kind k)
{
	return (size_t)k < sizeof(kind_names) / sizeof(kind_names[0]) ? kind_names[k] : "?";
}

/* Length of an RFC 3463 status code "C.SSS.DDD" at s followed by a blank or the end, or 0. */
static size_t
dsn_len(const char *s)
{
	const char *p = s;

	if (*p != '2' && *p != '4' && *p != '5')
		return 0;
	p++;
	for (int part = 0; part < 2; part++) {
		size_t d;

		if (*p++ != '.')
			return 0;
		d = strspn(p, "0123456789");
		if (d == 0 || d > 3)
			return 0;
		p += d;
	}
	return *p == '\0' || *p == ' ' || *p == '\t' ? (size_t)(p - s) : 0;
}

/* An enhanced code at the start of a->text moves into a->dsn. */
static void
split_dsn(struct pc_action *a)
{
	size_t n = dsn_len(a->text);

	if (n == 0)
		return;
	memcpy(a->dsn, a->text, n);
	a->dsn[n] = '\0';
	a->text += n;
	a->text += strspn(a->text, " \t");
}

/* Whether s is "name: ..." with a header name (printable, no blank, no colon). */
static int
is_header(const char *s)
{
	const char *p = s;

	while (*p > ' ' && *p < 127 && *p != ':')
		p++;
	return p > s && *p == ':';
}

enum pc_kind
pc_action_parse(const char *s, struct pc_action *a)
{
	static const struct {
		const char	*word;
		enum pc_kind	 kind;
		int		 code;
	} words[] = {
		{ "OK", PCA_OK, 0 }, { "RELAY", PCA_OK, 0 }, { "PERMIT", PCA_OK, 0 },
		{ "DUNNO", PCA_DUNNO, 0 },
		{ "REJECT", PCA_REJECT, MAP_REJECT_CODE }, { "DEFER", PCA_DEFER, MAP_DEFER_CODE },
		{ "DEFER_IF_PERMIT", PCA_DEFER_IF_PERMIT, MAP_DEFER_CODE },
		{ "DEFER_IF_REJECT", PCA_DEFER_IF_REJECT, MAP_DEFER_CODE },
		{ "PREPEND", PCA_PREPEND, 0 }, { "HOLD", PCA_HOLD, 0 },
		{ "DISCARD", PCA_DISCARD, 0 }, { "REDIRECT", PCA_REDIRECT, 0 },
		{ "BCC", PCA_BCC, 0 }, { "FILTER", PCA_FILTER, 0 },
		{ "WARN", PCA_WARN, 0 }, { "INFO", PCA_INFO, 0 },
	};
	size_t wlen = strcspn(s, " \t");

	memset(a, 0, sizeof(*a));
	a->text = s + wlen + strspn(s + wlen, " \t");
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		if (strlen(words[i].word) != wlen || strncasecmp(s, words[i].word, wlen) != 0)
			continue;
		a->kind = words[i].kind;
		a->code = words[i].code;
		if (a->code != 0)
			split_dsn(a);
		else if (a->kind == PCA_PREPEND && !is_header(a->text))
			a->bad = "PREPEND requires header: text";
		else if ((a->kind == PCA_REDIRECT || a->kind == PCA_BCC) &&
		    strchr(a->text, '@') == NULL)
			a->bad = "requires a user@domain target";
		else if (a->kind == PCA_FILTER && strchr(a->text, ':') == NULL)
			a->bad = "FILTER requires transport:destination";
		if (a->bad != NULL)
			a->kind = PCA_DUNNO;
		return a->kind;
	}
	if (wlen > 0 && strspn(s, "0123456789") == strlen(s)) {
		a->kind = PCA_OK;	/* as Postfix: an all-digit answer means OK */
		return a->kind;
	}
	if (wlen == 3 && *a->text && (s[0] == '4' || s[0] == '5') &&
	    isdigit((unsigned char)s[1]) && isdigit((unsigned char)s[2])) {
		a->kind = s[0] == '5' ? PCA_REJECT : PCA_DEFER;
		a->code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
		split_dsn(a);
		return a->kind;
	}
	a->kind = PCA_UNKNOWN;
	a->text = s;
	a->bad = wlen == 0 ? "empty action" : "not an action of access(5)";
	return a->kind;
}

/* The reply for a refusing action; see codec.h. */
void
pc_reply(const struct pc_action *a, const char *name, const char *cls, int *code, char *dsn,
    char *text, size_t textlen)
{
	const char *dflt = a->kind == PCA_DEFER_IF_PERMIT || a->kind == PCA_DEFER_IF_REJECT ?
	    "Service unavailable" : "Access denied";

	*code = a->code;
	if (a->dsn[0])
		snprintf(dsn, 16, "%s", a->dsn);
	else
		snprintf(dsn, 16, "%c.7.1", a->code >= 500 ? '5' : '4');
	dsn[0] = (char)('0' + a->code / 100);	/* the class follows the code */
	snprintf(text, textlen, "<%s>: %s rejected: %s", name ? name : "", cls,
	    a->text && *a->text ? a->text : dflt);
}
