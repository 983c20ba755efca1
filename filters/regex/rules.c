/*
 * rules.c - Postfix-style regular expression tables (see rules.h): the
 * parser, PCRE2 matching with $N substitution, reply codes, and the line
 * splitter for message bodies.
 *
 * A table is an array of rules in file order.  "if" and "endif" are rules
 * too: an "if" knows the index of its "endif", so a search that finds the
 * condition false jumps past it, and matching is one loop without
 * recursion.  The match data, the expansion buffer and the hit are kept in
 * the table and reused, so matching allocates only when a string is longer
 * than any before it.
 *
 * The prefilter (configure --with-hyperscan): every pattern Hyperscan can
 * compile, exactly or with HS_FLAG_PREFILTER (a superset of the matches),
 * goes into one database per table, scanned once per string.  A rule whose
 * pattern did not report a match cannot match, so PCRE2 runs only for the
 * rules Hyperscan reported and for those it could not take (the x flag, an
 * empty match, a construct it refuses); the rules are still tried in order,
 * so the first that applies wins and PCRE2 gives the captures for $N.  A
 * rule the database holds whose PCRE2 match would only have failed with a
 * matching error (a limit reached on a string it cannot match) is now simply
 * not matched.
 *
 * Body lines are scanned many at a time (rules_body_feed): the lines of one
 * call, up to BATCH_BYTES, joined by "\n" without their CR, in one
 * hs_scan; each match's end offset names the line it ends in, and then
 * each line goes through the same rule loop as rules_match with its own
 * bits.  A body_checks table's database is built for that: every pattern
 * with HS_FLAG_MULTILINE, so that ^ and $ hold at every line's edges as
 * they do at a whole line's (and \b sees "\n", a non-word byte, where
 * the line had nothing); without HS_FLAG_SINGLEMATCH, so that each line's
 * matches are reported and not only the batch's first; without
 * HS_FLAG_DOTALL, so that "." does not carry a match over a line's end (a
 * line holds no "\n": the same matches within it).  A true match lies
 * within its line and ends there, so it is never lost; what \s, [^x] or
 * \n match across lines only adds candidates that PCRE2 then refuses.
 * Patterns that look at the subject's own edges or beyond the match (\A,
 * \z, \Z, \G, lookarounds, verbs) or turn an option off inside
 * themselves ((?-m) would undo the multi-line mode) stay out: PCRE2 alone,
 * as for those Hyperscan refuses.
 *
 * Compiled apart (rules_compile_apart, which the module asks for): a child
 * process compiles the database and sends it serialized through a pipe;
 * the table's process deserializes it, so it runs Hyperscan's scanner but
 * never its compiler, whose code (libhs and libstdc++, about 6.5 MB once
 * touched) and working memory (about 14 MB at its peak for the bench's 50
 * rules) would otherwise stay in its RSS.
 *
 * Reply texts: the text of a REJECT-like action may start with a three
 * digit code and/or an enhanced status code.  When the text is literal (no
 * $), codes are checked when the table is loaded; after a substitution they
 * are checked at match time and mended (the enhanced code takes the class
 * of the reply code; a DEFER keeps a 4xx code).
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "autoconf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pcre2.h>
#ifdef HAVE_HYPERSCAN
#include <sys/wait.h>
#include <dlfcn.h>
#include <unistd.h>

#include <hs.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#endif

#include "rules.h"

#define RULES_FILE_MAX	(64 * 1024 * 1024)	/* bytes of a table file */
#define SUBST_MAX	99			/* highest $N */
#define JIT_STACK_MIN	(32 * 1024)
#define JIT_STACK_MAX	(1024 * 1024)
#define BATCH_BYTES	(64 * 1024)		/* body lines per Hyperscan scan */
#define BATCH_LINES	1024
#define BATCH_LONG	(16 * 1024)		/* a longer line is scanned alone */

enum rule_type { RULE_MATCH = 0, RULE_IF, RULE_ENDIF };

/* How a refusal's reply is built. */
enum reply_family {
	FAM_NONE = 0,
	FAM_CONTENT,		/* header/body REJECT: 550 5.7.1, 4.x.x → 451 */
	FAM_ACCESS,		/* access REJECT: 554 5.7.1, 4.x.x → 450 */
	FAM_DEFER,		/* DEFER, DEFER_IF_PERMIT: 450 4.7.1, never 5xx */
	FAM_NUMERIC,		/* 4NN/5NN text: the code of the action */
};

struct rule {
	enum rule_type	 type;
	pcre2_code	*re;
	bool		 jit;		/* re is JIT-compiled: pcre2_jit_match() */
	bool		 prefiltered;	/* in the table's Hyperscan database */
	char		*src;		/* the pattern, until the database is built */
	uint32_t	 opts;		/* its PCRE2 options */
	bool		 negate;
	unsigned	 line;
	size_t		 endif;		/* RULE_IF: index of its endif */
	enum rules_action action;
	enum reply_family family;
	int		 code;		/* FAM_NUMERIC */
	char		*word;		/* the action as written */
	char		*text;		/* the text template, "" if none */
	bool		 subst;		/* text has a $ to expand */
};

struct rules {
	char		*name;
	enum rules_kind	 kind;
	struct rule	*v;
	size_t		 n, cap;
	size_t		 nrules;
	unsigned	 has;		/* 1 << action, for rules_has */
	uint32_t	 maxcapture;
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	pcre2_jit_stack	*jit;
	char		*out;		/* expansion of the hit's text */
	size_t		 outcap;
	char		*subj;		/* header subject */
	size_t		 subjcap;
	struct rules_hit hit;
	size_t		 nprefiltered;	/* rules in the Hyperscan database */
	bool		 prefilter_on;	/* use it (rules_use_prefilter) */
	size_t		 stride;	/* bytes of a bit set of rule indexes */
	unsigned char	*hits;		/* bit per rule index: Hyperscan reported it */
	size_t		 nalways;	/* rules that may apply with no bit set */
	struct rules_stats stats;

	/* The body lines of one rules_body_feed call: empty between calls. */
	char		*bbuf;		/* the lines, each followed by "\n" */
	size_t		 blen, bcap;
	uint32_t	*bend;		/* each line's end offset in bbuf */
	size_t		 bn;		/* lines in the batch */
	unsigned char	*bhits;		/* stride bytes per line: its bits */
	size_t		 bcur;		/* line of the last match reported */
#ifdef HAVE_HYPERSCAN
	hs_database_t	*hs_db;
	hs_scratch_t	*hs_scratch;
#endif
};

/* The parser's state for one table. */
struct parse {
	struct rules	*t;
	const char	*name;
	unsigned	 line;		/* first line of the logical line */
	size_t		 stack[RULES_IF_DEPTH];	/* open ifs (rule indexes) */
	unsigned	 depth;
	char		*err;
	size_t		 errlen;
};

/* "FILE:LINE: message" into the parser's err; returns -1. */
static int __attribute__((format(printf, 2, 3)))
perr(struct parse *ps, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ps->err == NULL || ps->errlen == 0)
		return -1;
	n = snprintf(ps->err, ps->errlen, "%s:%u: ", ps->name, ps->line);
	if (n < 0 || (size_t)n >= ps->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* Postfix's ISSPACE: the C locale's white space. */
static bool
is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static bool
is_alnum(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* Grow a byte buffer to hold at least need bytes; -1 when out of memory. */
static int
grow(char **buf, size_t *cap, size_t need)
{
	size_t ncap = *cap ? *cap : 256;
	char *p;

	if (need <= *cap)
		return 0;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return -1;
		ncap *= 2;
	}
	if ((p = realloc(*buf, ncap)) == NULL)
		return -1;
	*buf = p;
	*cap = ncap;
	return 0;
}

/* --- reply codes -------------------------------------------------------- */

/*
 * The codes at the start of a reply text: "NNN" then "D.D.D", each
 * optional and followed by white space or the end.  *code gets a code
 * whose first digit is 2..5 (0 if none; the caller judges the class),
 * enh an enhanced code of class 2, 4 or 5 ("" if none).  Returns the
 * offset of the text after them and their white space.
 */
static size_t
reply_prefix(const char *s, size_t len, bool want_code, int *code, char enh[12])
{
	size_t i = 0, j;
	int parts;

	*code = 0;
	enh[0] = '\0';
	if (want_code && len >= 3 && s[0] >= '2' && s[0] <= '5' && is_digit(s[1]) &&
	    is_digit(s[2]) && (len == 3 || s[3] == ' ' || s[3] == '\t')) {
		*code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
		for (i = 3; i < len && (s[i] == ' ' || s[i] == '\t'); i++)
			;
	}
	/* class "." 1-3 digits "." 1-3 digits */
	if (i + 5 <= len && (s[i] == '2' || s[i] == '4' || s[i] == '5') && s[i + 1] == '.') {
		j = i + 2;
		for (parts = 0; parts < 2; parts++) {
			size_t d = 0;

			while (j < len && is_digit(s[j]) && d < 4)
				j++, d++;
			if (d == 0 || d > 3)
				break;
			if (parts == 0) {
				if (j >= len || s[j] != '.')
					break;
				j++;
			}
		}
		if (parts == 2 && (j == len || s[j] == ' ' || s[j] == '\t') && j - i < 12) {
			memcpy(enh, s + i, j - i);
			enh[j - i] = '\0';
			for (i = j; i < len && (s[i] == ' ' || s[i] == '\t'); i++)
				;
		}
	}
	return i;
}

/* The reply code for a refusal, from the family and what the text says. */
static int
reply_code(enum reply_family fam, int rule_code, int text_code, char enh_class)
{
	switch (fam) {
	case FAM_NUMERIC:
		return rule_code;
	case FAM_DEFER:
		return text_code >= 400 && text_code < 500 ? text_code : 450;
	case FAM_ACCESS:
		if (text_code >= 400 && text_code < 600)
			return text_code;
		return enh_class == '4' ? 450 : 554;
	case FAM_CONTENT:
	default:
		if (text_code >= 400 && text_code < 600)
			return text_code;
		return enh_class == '4' ? 451 : 550;
	}
}

/* Load-time check of a literal reply text; -1 after perr. */
static int
check_reply(struct parse *ps, const struct rule *r)
{
	char enh[12];
	int code;
	size_t len = strlen(r->text);

	reply_prefix(r->text, len, r->family != FAM_NUMERIC, &code, enh);
	if (code != 0 && (code < 400 || code > 599))
		return perr(ps, "%s: reply code %d is not 4xx or 5xx", r->word, code);
	if (enh[0] == '2')
		return perr(ps, "%s: enhanced status code %s is not 4.x.x or 5.x.x", r->word, enh);
	if (r->family == FAM_NUMERIC)
		code = r->code;
	if (code != 0 && enh[0] != '\0' && enh[0] != '0' + code / 100)
		return perr(ps, "%s: reply code %d and enhanced status code %s do not agree",
		    r->word, code, enh);
	if (r->family == FAM_DEFER && (code / 100 == 5 || enh[0] == '5'))
		return perr(ps, "%s: a deferral needs a 4xx reply, not %s", r->word,
		    code ? "a 5xx code" : enh);
	return 0;
}

/* --- substitutions ------------------------------------------------------ */

/*
 * One "$..." at s (s[0] == '$'): sets *n to the group number (-1 for "$$")
 * and returns the length of the construct, or 0 when it is malformed
 * (*why says how).
 */
static size_t
subst_at(const char *s, int *n, const char **why)
{
	size_t i = 1;
	char close = 0;
	int v = 0, digits = 0;

	if (s[1] == '$') {
		*n = -1;
		return 2;
	}
	if (s[1] == '{' || s[1] == '(') {
		close = s[1] == '{' ? '}' : ')';
		i = 2;
	}
	while (is_digit(s[i])) {
		if (++digits > 3) {
			*why = "group number too large";
			return 0;
		}
		v = v * 10 + (s[i++] - '0');
	}
	if (close) {
		if (digits == 0 || s[i] != close) {
			*why = "expected a group number inside ${...} or $(...)";
			return 0;
		}
		i++;
	} else if (digits == 0) {
		*why = "\"$\" must be followed by a group number, ${N}, $(N) or \"$\" "
		    "(write $$ for a dollar sign)";
		return 0;
	} else if (is_alnum(s[i]) || s[i] == '_') {
		*why = "non-numeric substitution (write ${N} when a letter follows)";
		return 0;
	}
	*n = v;
	return i;
}

/* Check a rule's text template; sets r->subst.  -1 after perr. */
static int
check_subst(struct parse *ps, struct rule *r, uint32_t ncapture)
{
	const char *why = NULL;
	size_t k;
	int n;

	for (const char *p = r->text; (p = strchr(p, '$')) != NULL; p += k) {
		if ((k = subst_at(p, &n, &why)) == 0)
			return perr(ps, "bad substitution \"%.12s\": %s", p, why);
		if (n < 0)
			continue;
		r->subst = true;
		if (r->negate)
			return perr(ps, "substitution \"%.*s\" in a negated rule, which captures nothing",
			    (int)k, p);
		if ((uint32_t)n > ncapture || n > SUBST_MAX)
			return perr(ps, "substitution \"%.*s\": the pattern has %u group%s",
			    (int)k, p, (unsigned)ncapture, ncapture == 1 ? "" : "s");
	}
	if (!r->subst && strstr(r->text, "$$") != NULL)
		r->subst = true;	/* still needs expanding: $$ → $ */
	return 0;
}

/* Expand r's text against the match of s in t->md into t->out; -1 if out of memory. */
static int
expand(struct rules *t, const struct rule *r, const char *s, int nset, size_t *lenp)
{
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
	size_t o = 0, tl = strlen(r->text);
	const char *why;
	int n;

	if (grow(&t->out, &t->outcap, tl + 1) != 0)
		return -1;
	if (!r->subst) {
		memcpy(t->out, r->text, tl + 1);
		*lenp = tl;
		return 0;
	}
	for (const char *p = r->text; *p; ) {
		const char *add = p;
		size_t addlen = 1, k = 1;

		if (*p == '$' && (k = subst_at(p, &n, &why)) != 0) {
			if (n < 0) {
				addlen = 1;
			} else if (n < nset && ov[2 * n] != PCRE2_UNSET) {
				add = s + ov[2 * n];
				addlen = ov[2 * n + 1] - ov[2 * n];
			} else {
				addlen = 0;
			}
		} else {
			k = 1;
		}
		if (grow(&t->out, &t->outcap, o + addlen + (tl - (size_t)(p - r->text)) + 1) != 0)
			return -1;
		memcpy(t->out + o, add, addlen);
		o += addlen;
		p += k;
	}
	t->out[o] = '\0';
	*lenp = o;
	return 0;
}

/* --- header texts ------------------------------------------------------- */

/* Length of a valid header name at the start of s, followed by ':' (0 if none). */
static size_t
header_name_len(const char *s)
{
	size_t i = 0;

	while (s[i] != '\0' && s[i] != ':' && (unsigned char)s[i] > 32 && (unsigned char)s[i] < 127)
		i++;
	return s[i] == ':' && i > 0 && i <= 997 ? i : 0;
}

/* See rules.h. */
int
rules_header_split(const char *text, char **name, char **value)
{
	size_t nl = header_name_len(text), o = 0;
	const char *v;
	char *out;

	*name = *value = NULL;
	if (nl == 0)
		return -1;
	v = text + nl + 1;
	/* Each LF may become CRLF: at most twice as long. */
	if ((out = malloc(2 * strlen(v) + 1)) == NULL)
		return -1;
	for (; *v; v++) {
		if (*v == '\r' && v[1] == '\n')
			continue;	/* CRLF is handled at its LF */
		if (*v == '\n' && (v[1] == ' ' || v[1] == '\t') && o > 0) {
			out[o++] = '\r';
			out[o++] = '\n';
		} else if (*v == '\r' || *v == '\n') {
			out[o++] = ' ';
		} else {
			out[o++] = *v;
		}
	}
	out[o] = '\0';
	if ((*name = strndup(text, nl)) == NULL) {
		free(out);
		return -1;
	}
	*value = out;
	return 0;
}

/* Write the header subject into buf (room for strlen(name)+strlen(value)+2). */
static size_t
subject_write(char *buf, const char *name, const char *value)
{
	size_t nl = strlen(name), o;

	memcpy(buf, name, nl);
	buf[nl] = ':';
	o = nl + 1;
	for (const char *v = value; *v; v++) {
		if (v[0] == '\r' && v[1] == '\n')
			continue;
		buf[o++] = *v;
	}
	buf[o] = '\0';
	return o;
}

/* See rules.h. */
char *
rules_header_subject(const char *name, const char *value, size_t *lenp)
{
	char *buf = malloc(strlen(name) + strlen(value) + 2);

	if (buf == NULL)
		return NULL;
	*lenp = subject_write(buf, name, value);
	return buf;
}

/* --- the Hyperscan prefilter ------------------------------------------- */

static bool compile_apart;	/* rules_compile_apart(): in a child process */

/* See rules.h. */
void
rules_compile_apart(bool on)
{
	compile_apart = on;
}

#ifdef HAVE_HYPERSCAN
/*
 * Whether an option setting "(?" at p turns an option off ("(?i-m)",
 * "(?-m:", "(?^)"): (?-m) would take ^ and $ back to the batch's edges,
 * where a line alone has its own.  Options only turned on are harmless.
 */
static bool
unsets_options(const char *p)
{
	for (p += 2; *p != '\0' && *p != ')' && *p != ':'; p++) {
		if (*p == '-' || *p == '^')
			return true;
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
			return false;
	}
	return false;
}

/*
 * Whether a pattern looks at the subject's edges or beyond its own match in
 * a way that Hyperscan would not see the same in a batch of lines: \A, \z,
 * \Z, \G, a lookaround, a verb ("(*": also the newline conventions), an
 * option turned off inside it.  Read on the source with backslash pairs
 * skipped; whatever else such a pair of characters means (\Q..\E, a
 * comment, a class) can only make this say yes where it need not.
 */
static bool
sees_outside(const char *src)
{
	for (const char *p = src; *p != '\0'; p++) {
		if (*p == '\\') {
			if (p[1] == '\0')
				break;
			if (strchr("AzZG", p[1]) != NULL)
				return true;
			p++;
		} else if (p[0] == '(' && (p[1] == '*' || (p[1] == '?' &&
		    (p[2] == '=' || p[2] == '!' || p[2] == '*' || (p[2] == '<' &&
		    (p[3] == '=' || p[3] == '!' || p[3] == '*')))))) {
			return true;
		} else if (p[0] == '(' && p[1] == '?' && unsets_options(p)) {
			return true;
		}
	}
	return false;
}

/*
 * Hyperscan's flags for a rule, or -1 when the rule stays with PCRE2 alone.
 * batch: for a body_checks table, scanned a batch of lines at a time (see
 * the top of the file).
 */
static int
hs_flags_of(const struct rule *r, bool batch)
{
	unsigned flags = batch ? HS_FLAG_MULTILINE : HS_FLAG_SINGLEMATCH;
	uint32_t nl = 0;

	/*
	 * x changes what the pattern says: not translated.  A (anchored), E
	 * (dollar at the end only) and U (ungreedy) only narrow or reorder
	 * the matches, so the pattern without them is a superset: fine for a
	 * prefilter, as every hit is matched again by PCRE2.  Hyperscan knows
	 * LF as the only newline: a pattern with another convention (PCRE2
	 * built so) stays out.
	 */
	if (r->opts & PCRE2_EXTENDED)
		return -1;
	if (pcre2_pattern_info(r->re, PCRE2_INFO_NEWLINE, &nl) != 0 || nl != PCRE2_NEWLINE_LF)
		return -1;
	if (batch && sees_outside(r->src))
		return -1;
	if (r->opts & PCRE2_CASELESS)
		flags |= HS_FLAG_CASELESS;
	if ((r->opts & PCRE2_DOTALL) && !batch)
		flags |= HS_FLAG_DOTALL;
	if (r->opts & PCRE2_MULTILINE)
		flags |= HS_FLAG_MULTILINE;
	return (int)flags;
}

/* Hyperscan reported rule id in the one string scanned: mark it, go on. */
static int
prefilter_hit(unsigned id, unsigned long long from, unsigned long long to,
    unsigned flags, void *ctx)
{
	struct rules *t = ctx;

	(void)from;
	(void)to;
	(void)flags;
	t->stats.reports++;
	t->hits[id / 8] |= (unsigned char)(1u << (id % 8));
	return 0;
}

/*
 * Hyperscan reported rule id in a batch, in a match ending at offset to:
 * mark it for the line that holds that end (the first whose end is at or
 * after it).  Matches come mostly in order, so the line of the last one is
 * tried first.  A match ending on the "\n" after the last line is no line's.
 */
static int
batch_hit(unsigned id, unsigned long long from, unsigned long long to,
    unsigned flags, void *ctx)
{
	struct rules *t = ctx;
	size_t k = t->bcur, lo, hi;

	(void)from;
	(void)flags;
	t->stats.reports++;
	if (t->bend[k] < to || (k > 0 && t->bend[k - 1] >= to)) {
		for (lo = 0, hi = t->bn; lo < hi; ) {
			size_t mid = lo + (hi - lo) / 2;

			if (t->bend[mid] < to)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == t->bn)
			return 0;
		t->bcur = k = lo;
	}
	t->bhits[k * t->stride + id / 8] |= (unsigned char)(1u << (id % 8));
	return 0;
}

/*
 * Hyperscan's compiler.  Built with libhs_runtime (HAVE_HS_RUNTIME), the
 * module links the scanner only, and the compiler comes from libhs, loaded
 * with dlopen() where a database is compiled (in the child when compiled
 * apart), so that the process that scans never maps libhs's compiler nor
 * the libstdc++ it needs.  The database goes from one to the other
 * serialized, the format of one Hyperscan version.
 */
struct hs_compiler {
	hs_error_t	(*compile_multi)(const char *const *, const unsigned *, const unsigned *,
			    unsigned, unsigned, const hs_platform_info_t *, hs_database_t **,
			    hs_compile_error_t **);
	hs_error_t	(*expression_info)(const char *, unsigned, hs_expr_info_t **,
			    hs_compile_error_t **);
	hs_error_t	(*free_compile_error)(hs_compile_error_t *);
	hs_error_t	(*serialize_database)(const hs_database_t *, char **, size_t *);
	hs_error_t	(*free_database)(hs_database_t *);
};

#define HS_STR(x)	HS_STR2(x)
#define HS_STR2(x)	#x

/* The compiler's functions into c (loaded once); 0, or -1 when libhs cannot be had. */
static int
hs_compiler_get(struct hs_compiler *c)
{
#ifdef HAVE_HS_RUNTIME
	static void *lib;
	static const char *const names[] = { "hs_compile_multi", "hs_expression_info",
	    "hs_free_compile_error", "hs_serialize_database", "hs_free_database" };
	void **fn[] = { (void **)&c->compile_multi, (void **)&c->expression_info,
	    (void **)&c->free_compile_error, (void **)&c->serialize_database,
	    (void **)&c->free_database };

	if (lib == NULL && (lib = dlopen("libhs.so." HS_STR(HS_MAJOR), RTLD_NOW | RTLD_LOCAL)) == NULL)
		return -1;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if ((*fn[i] = dlsym(lib, names[i])) == NULL)
			return -1;
#else
	c->compile_multi = hs_compile_multi;
	c->expression_info = hs_expression_info;
	c->free_compile_error = hs_free_compile_error;
	c->serialize_database = hs_serialize_database;
	c->free_database = hs_free_database;
#endif
	return 0;
}

/*
 * The flags a rule's pattern goes into the database with, or -1: checked
 * alone first (hs_expression_info, much cheaper than a compile), exactly,
 * else as a prefilter; a pattern that can match the empty string stays out
 * (Hyperscan refuses it).
 */
static int
hs_check(const struct hs_compiler *hc, const struct rule *r, bool batch)
{
	hs_expr_info_t *info = NULL;
	hs_compile_error_t *cerr = NULL;
	int f = hs_flags_of(r, batch);

	if (f < 0)
		return -1;
	if (hc->expression_info(r->src, (unsigned)f, &info, &cerr) != HS_SUCCESS) {
		hc->free_compile_error(cerr);
		cerr = NULL;
		f |= HS_FLAG_PREFILTER;
		if (hc->expression_info(r->src, (unsigned)f, &info, &cerr) != HS_SUCCESS) {
			hc->free_compile_error(cerr);
			return -1;
		}
	}
	if (info->min_width == 0)
		f = -1;
	free(info);	/* allocated with Hyperscan's misc allocator: malloc */
	return f;
}

/*
 * Compile the rules' patterns into one database, serialized: *bytes and
 * *len (NULL, 0 when there is none; free() it), and the indexes of the
 * rules it holds into ids (*np of them; room for t->n).  Each is checked
 * alone first (hs_check); should the database still refuse one, it is
 * tried again with HS_FLAG_PREFILTER, then left out (PCRE2 alone): each
 * failure removes one candidate or weakens it, so this ends.  Returns -1
 * only when out of memory; no database (or no compiler) is not an error.
 */
static int
prefilter_compile(struct rules *t, char **bytes, size_t *len, unsigned *ids, size_t *np)
{
	struct hs_compiler hc;
	const char **expr = NULL;
	unsigned *flags = NULL;
	hs_compile_error_t *cerr = NULL;
	hs_database_t *db = NULL;
	size_t n = 0;
	int f, rc = -1;

	*bytes = NULL;
	*len = 0;
	*np = 0;
	if (hs_compiler_get(&hc) != 0)
		return 0;
	if ((expr = calloc(t->n, sizeof(*expr))) == NULL ||
	    (flags = calloc(t->n, sizeof(*flags))) == NULL)
		goto out;
	for (size_t i = 0; i < t->n; i++) {
		if (t->v[i].re == NULL || (f = hs_check(&hc, &t->v[i], t->kind == RULES_BODY)) < 0)
			continue;
		expr[n] = t->v[i].src;
		flags[n] = (unsigned)f;
		ids[n] = (unsigned)i;
		n++;
	}
	while (n > 0 && hc.compile_multi(expr, flags, ids, (unsigned)n, HS_MODE_BLOCK,
	    NULL, &db, &cerr) != HS_SUCCESS) {
		int k = cerr != NULL ? cerr->expression : -1;

		hc.free_compile_error(cerr);
		cerr = NULL;
		db = NULL;
		if (k < 0 || (size_t)k >= n) {
			n = 0;		/* not one pattern's fault: no prefilter */
			break;
		}
		if (!(flags[k] & HS_FLAG_PREFILTER)) {
			flags[k] |= HS_FLAG_PREFILTER;
			continue;
		}
		n--;
		memmove(expr + k, expr + k + 1, (n - (size_t)k) * sizeof(*expr));
		memmove(flags + k, flags + k + 1, (n - (size_t)k) * sizeof(*flags));
		memmove(ids + k, ids + k + 1, (n - (size_t)k) * sizeof(*ids));
	}
	if (db != NULL && n > 0 && hc.serialize_database(db, bytes, len) == HS_SUCCESS)
		*np = n;
	else
		*bytes = NULL;
	if (db != NULL)
		hc.free_database(db);
	rc = 0;
out:
	free(expr);
	free(flags);
	return rc;
}

/* The serialized database for this process (with its scratch), or none. */
static void
prefilter_install(struct rules *t, const char *bytes, size_t len, const unsigned *ids, size_t n)
{
	hs_database_t *db = NULL;

	if (n == 0 || hs_deserialize_database(bytes, len, &db) != HS_SUCCESS)
		return;
	if (hs_alloc_scratch(db, &t->hs_scratch) != HS_SUCCESS) {
		hs_free_database(db);
		return;
	}
	t->hs_db = db;
	for (size_t j = 0; j < n; j++)
		t->v[ids[j]].prefiltered = true;
	t->nprefiltered = n;
	t->prefilter_on = true;
}

/* What a compiling child sends first: then n rule indexes, then len bytes. */
struct apart_head {
	uint64_t	 n;		/* rules in the database (0: none) */
	uint64_t	 len;		/* bytes of the serialized database */
};

/* write() all of p; 0 or -1. */
static int
write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = write(fd, c, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* In the child: compile, send the database serialized on fd, exit. */
static void __attribute__((noreturn))
apart_child(struct rules *t, int fd, unsigned *ids)
{
	struct apart_head head = { 0, 0 };
	char *bytes;
	size_t n, len;

	if (prefilter_compile(t, &bytes, &len, ids, &n) != 0)
		_exit(2);	/* out of memory */
	if (bytes != NULL) {
		head.n = n;
		head.len = len;
	}
	if (write_all(fd, &head, sizeof(head)) != 0 ||
	    write_all(fd, ids, (size_t)head.n * sizeof(*ids)) != 0 ||
	    write_all(fd, bytes, (size_t)head.len) != 0)
		_exit(3);
	free(bytes);
	_exit(0);
}

/*
 * Compile in a child (rules_compile_apart): fork, read what it sends, wait
 * for it.  Returns 0 with the database installed (or none: a child that
 * failed leaves the table to PCRE2 alone, not this process to a compiler
 * that could fail the same way), -1 when out of memory, 1 when no child
 * could be started (then compile here).
 */
static int
prefilter_apart(struct rules *t, unsigned *ids)
{
	struct apart_head head;
	char *buf = NULL;
	size_t got = 0, cap = 0, idlen;
	int pfd[2], status = 0, rc = 0;
	pid_t pid;

	if (pipe(pfd) == -1)
		return 1;
	if ((pid = fork()) == -1) {
		close(pfd[0]);
		close(pfd[1]);
		return 1;
	}
	if (pid == 0) {
		close(pfd[0]);
		apart_child(t, pfd[1], ids);
	}
	close(pfd[1]);
	for (;;) {
		ssize_t r;

		if (grow(&buf, &cap, got + 65536) != 0) {
			rc = -1;
			break;
		}
		r = read(pfd[0], buf + got, cap - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(pfd[0]);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	if (rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 2)
		rc = -1;
	if (rc != 0 || got < sizeof(head)) {
		free(buf);
		return rc;
	}
	memcpy(&head, buf, sizeof(head));
	idlen = head.n <= t->n ? (size_t)head.n * sizeof(*ids) : 0;
	if (head.n > 0 && head.n <= t->n && got == sizeof(head) + idlen + head.len) {
		memcpy(ids, buf + sizeof(head), idlen);
		for (size_t j = 0; j < head.n; j++)
			if (ids[j] >= t->n || t->v[ids[j]].re == NULL)
				head.n = 0;
		prefilter_install(t, buf + sizeof(head) + idlen, (size_t)head.len, ids,
		    (size_t)head.n);
	}
	free(buf);
	return 0;
}

/*
 * The table's database, compiled here or in a child (rules_compile_apart).
 * Returns -1 only when out of memory; no database is not an error.
 */
static int
prefilter_build(struct rules *t)
{
	char *bytes;
	unsigned *ids;
	size_t n, len;
	int rc;

	if (hs_valid_platform() != HS_SUCCESS || t->n == 0)
		return 0;
	if ((ids = calloc(t->n, sizeof(*ids))) == NULL)
		return -1;
	if (compile_apart && (rc = prefilter_apart(t, ids)) <= 0) {
		free(ids);
		return rc;
	}
	if ((rc = prefilter_compile(t, &bytes, &len, ids, &n)) == 0 && bytes != NULL)
		prefilter_install(t, bytes, len, ids, n);
	free(bytes);
	free(ids);
#ifdef __GLIBC__
	/*
	 * The compiler's working memory (about 14 MB for the bench's 50 rules)
	 * is free again but glibc keeps it mapped: give it back to the system,
	 * or it counts in the process's RSS for good.
	 */
	malloc_trim(0);
#endif
	return rc;
}

/* Scan s once for every prefiltered rule: t->hits.  0, or -1 (use PCRE2 alone). */
static int
prefilter_scan(struct rules *t, const char *s, size_t len)
{
	memset(t->hits, 0, t->stride);
	if (len > UINT32_MAX)
		return -1;
	t->stats.scans++;
	return hs_scan(t->hs_db, s, (unsigned)len, 0, t->hs_scratch, prefilter_hit, t) ==
	    HS_SUCCESS ? 0 : -1;
}

/* Scan the batch once: t->bhits.  0, or -1 (use PCRE2 alone). */
static int
batch_scan(struct rules *t)
{
	memset(t->bhits, 0, t->bn * t->stride);
	t->bcur = 0;
	t->stats.scans++;
	return hs_scan(t->hs_db, t->bbuf, (unsigned)t->blen, 0, t->hs_scratch, batch_hit, t) ==
	    HS_SUCCESS ? 0 : -1;
}

static void
prefilter_free(struct rules *t)
{
	hs_free_scratch(t->hs_scratch);
	hs_free_database(t->hs_db);
}
#else
/* Without Hyperscan: nothing to build, every scan fails (PCRE2 alone). */
static int
prefilter_build(struct rules *t)
{
	(void)t;
	return 0;
}

static int
prefilter_scan(struct rules *t, const char *s, size_t len)
{
	(void)t;
	(void)s;
	(void)len;
	return -1;
}

static int
batch_scan(struct rules *t)
{
	(void)t;
	return -1;
}

static void
prefilter_free(struct rules *t)
{
	(void)t;
}
#endif

/*
 * After the database: the bit sets, and the rules that may apply to a line
 * where Hyperscan reported nothing (not in the database, or negated).  The
 * patterns' text is not needed any more.
 */
static int
prefilter_finish(struct rules *t)
{
	t->stride = t->n / 8 + 1;
	if ((t->hits = calloc(t->stride, 1)) == NULL)
		return -1;
	for (size_t i = 0; i < t->n; i++) {
		const struct rule *r = &t->v[i];

		if (r->type != RULE_ENDIF && (!r->prefiltered || r->negate))
			t->nalways++;
		free(t->v[i].src);
		t->v[i].src = NULL;
	}
	return 0;
}

/* --- the parser --------------------------------------------------------- */

struct action_def {
	const char	*name;
	enum rules_action action;
	enum reply_family content, access;	/* FAM_NONE: family not relevant */
	unsigned	 kinds;			/* 1 << kind where it is allowed */
};

#define K_HDR	(1u << RULES_HEADER)
#define K_BODY	(1u << RULES_BODY)
#define K_ACC	(1u << RULES_ACCESS)
#define K_ALL	(K_HDR | K_BODY | K_ACC)

static const struct action_def action_defs[] = {
	{ "REJECT",		RULES_REJECT,	FAM_CONTENT, FAM_ACCESS, K_ALL },
	{ "DEFER",		RULES_REJECT,	FAM_NONE, FAM_DEFER, K_ACC },
	{ "DEFER_IF_PERMIT",	RULES_REJECT,	FAM_NONE, FAM_DEFER, K_ACC },
	{ "DISCARD",		RULES_DISCARD,	FAM_NONE, FAM_NONE, K_ALL },
	{ "HOLD",		RULES_HOLD,	FAM_NONE, FAM_NONE, K_ALL },
	{ "WARN",		RULES_WARN,	FAM_NONE, FAM_NONE, K_ALL },
	{ "INFO",		RULES_INFO,	FAM_NONE, FAM_NONE, K_ALL },
	{ "DUNNO",		RULES_DUNNO,	FAM_NONE, FAM_NONE, K_ALL },
	{ "OK",			RULES_OK,	FAM_NONE, FAM_NONE, K_ALL },
	{ "PREPEND",		RULES_PREPEND,	FAM_NONE, FAM_NONE, K_HDR | K_ACC },
	{ "REPLACE",		RULES_REPLACE,	FAM_NONE, FAM_NONE, K_HDR },
	{ "IGNORE",		RULES_IGNORE,	FAM_NONE, FAM_NONE, K_HDR },
	{ "STRIP",		RULES_STRIP,	FAM_NONE, FAM_NONE, K_HDR },
};

/* Postfix actions smtpchain refuses rather than ignore. */
static const char *const unsupported[] = {
	"BCC", "FILTER", "REDIRECT", "DELAY", "PASS", "DEFER_IF_REJECT",
};

static const char *
kind_name(enum rules_kind k)
{
	return k == RULES_HEADER ? "header_checks" : k == RULES_BODY ? "body_checks" :
	    "access tables";
}

/* Set r's action from its word; -1 after perr. */
static int
parse_action(struct parse *ps, struct rule *r)
{
	enum rules_kind kind = ps->t->kind;
	const char *w = r->word;
	size_t wl = strlen(w), i;

	if (kind == RULES_ACCESS && is_digit(w[0]) && strspn(w, "0123456789") == wl) {
		if (wl == 3 && (w[0] == '4' || w[0] == '5')) {
			r->action = RULES_REJECT;
			r->family = FAM_NUMERIC;
			r->code = atoi(w);
		} else {
			r->action = RULES_OK;	/* access(5): all-numerical is OK */
		}
		return 0;
	}
	for (i = 0; i < sizeof(action_defs) / sizeof(action_defs[0]); i++) {
		const struct action_def *d = &action_defs[i];

		if (strcasecmp(w, d->name) != 0)
			continue;
		if (!(d->kinds & (1u << kind))) {
			if (kind == RULES_BODY && (d->kinds & K_HDR))
				return perr(ps, "%s is not supported in body_checks "
				    "(the body is not rewritten)", w);
			break;
		}
		r->action = d->action;
		r->family = kind == RULES_ACCESS ? d->access : d->content;
		if (r->action == RULES_OK && kind != RULES_ACCESS)
			r->action = RULES_DUNNO;	/* header_checks(5): OK is DUNNO */
		return 0;
	}
	for (i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++)
		if (strcasecmp(w, unsupported[i]) == 0)
			return perr(ps, "%s is not supported by smtpchain", w);
	if (kind == RULES_ACCESS && (strchr(w, '_') != NULL || strcasecmp(w, "permit") == 0))
		return perr(ps, "unknown action \"%.40s\" (Postfix restrictions are not "
		    "supported, only access(5) actions)", w);
	return perr(ps, "unknown action \"%.40s\" in %s", w, kind_name(kind));
}

/* Append a rule slot; NULL when out of memory (after perr). */
static struct rule *
rule_new(struct parse *ps, enum rule_type type)
{
	struct rules *t = ps->t;
	struct rule *r;

	if (t->n == t->cap) {
		size_t ncap = t->cap ? t->cap * 2 : 16;
		struct rule *v = realloc(t->v, ncap * sizeof(*v));

		if (v == NULL) {
			perr(ps, "out of memory");
			return NULL;
		}
		t->v = v;
		t->cap = ncap;
	}
	r = &t->v[t->n++];
	memset(r, 0, sizeof(*r));
	r->type = type;
	r->line = ps->line;
	return r;
}

/*
 * "[!...]/pattern/flags" at *pp: compiles it into r and advances *pp past
 * the flags.  -1 after perr.
 */
static int
parse_pattern(struct parse *ps, struct rule *r, const char **pp)
{
	const char *p = *pp, *start, *f;
	uint32_t opts = PCRE2_CASELESS | PCRE2_DOTALL;
	PCRE2_UCHAR msg[256];
	PCRE2_SIZE erroff;
	char delim;
	int errcode;
	uint32_t ncap;

	while (*p == '!') {
		r->negate = !r->negate;
		p++;
	}
	delim = *p;
	if (delim == '\0' || is_alnum(delim) || is_space(delim))
		return perr(ps, "expected a pattern such as /regex/ %s",
		    delim == '\0' ? "at the end of the line" : "here");
	start = ++p;
	while (*p != '\0' && *p != delim) {
		if (*p == '\\' && p[1] != '\0')
			p++;
		p++;
	}
	if (*p != delim)
		return perr(ps, "no closing \"%c\" after the pattern", delim);
	for (f = p + 1; *f != '\0' && !is_space(*f); f++) {
		switch (*f) {
		case 'i': opts ^= PCRE2_CASELESS; break;
		case 's': opts ^= PCRE2_DOTALL; break;
		case 'm': opts ^= PCRE2_MULTILINE; break;
		case 'x': opts ^= PCRE2_EXTENDED; break;
		case 'A': opts ^= PCRE2_ANCHORED; break;
		case 'E': opts ^= PCRE2_DOLLAR_ENDONLY; break;
		case 'U': opts ^= PCRE2_UNGREEDY; break;
		case 'X':
			return perr(ps, "flag \"X\" is not supported with PCRE2");
		default:
			return perr(ps, "unknown flag \"%c\" after the pattern%s", *f,
			    is_alnum(*f) ? " (a space is needed before the action)" : "");
		}
	}
	*pp = f;
	r->opts = opts;
	if ((r->src = strndup(start, (size_t)(p - start))) == NULL)
		return perr(ps, "out of memory");
	r->re = pcre2_compile((PCRE2_SPTR)start, (PCRE2_SIZE)(p - start), opts,
	    &errcode, &erroff, NULL);
	if (r->re == NULL) {
		if (pcre2_get_error_message(errcode, msg, sizeof(msg)) < 0)
			snprintf((char *)msg, sizeof(msg), "error %d", errcode);
		return perr(ps, "bad pattern %c%.*s%c: %s at offset %zu", delim,
		    (int)((p - start) > 60 ? 60 : (p - start)), start, delim,
		    (const char *)msg, (size_t)erroff);
	}
	/* JIT when available: then matched with pcre2_jit_match(). */
	r->jit = pcre2_jit_compile(r->re, PCRE2_JIT_COMPLETE) == 0;
	if (pcre2_pattern_info(r->re, PCRE2_INFO_CAPTURECOUNT, &ncap) == 0 &&
	    ncap > ps->t->maxcapture)
		ps->t->maxcapture = ncap;
	return 0;
}

/* The end of a line after an if/endif: nothing may follow.  -1 after perr. */
static int
expect_end(struct parse *ps, const char *p, const char *what)
{
	while (is_space(*p))
		p++;
	if (*p != '\0')
		return perr(ps, "unexpected text after %s: \"%.20s\"", what, p);
	return 0;
}

/* One logical line (NUL-terminated at len; trailing white space is cut here). */
static int
parse_logical(struct parse *ps, char *line, size_t len)
{
	const char *p = line;
	struct rule *r;
	uint32_t ncap = 0;
	size_t tl;

	while (len > 0 && is_space(line[len - 1]))
		len--;
	line[len] = '\0';

	if (strncasecmp(p, "if", 2) == 0 && !is_alnum(p[2])) {
		if (ps->depth == RULES_IF_DEPTH)
			return perr(ps, "if..endif nested deeper than %d", RULES_IF_DEPTH);
		if ((r = rule_new(ps, RULE_IF)) == NULL)
			return -1;
		for (p += 2; is_space(*p); p++)
			;
		if (parse_pattern(ps, r, &p) != 0)
			return -1;
		ps->stack[ps->depth++] = ps->t->n - 1;
		return expect_end(ps, p, "the \"if\" pattern");
	}
	if (strncasecmp(p, "endif", 5) == 0 && !is_alnum(p[5])) {
		if (ps->depth == 0)
			return perr(ps, "\"endif\" without \"if\"");
		if (rule_new(ps, RULE_ENDIF) == NULL)
			return -1;
		ps->t->v[ps->stack[--ps->depth]].endif = ps->t->n - 1;
		return expect_end(ps, p + 5, "\"endif\"");
	}
	if (is_alnum(*p))
		return perr(ps, "expected /pattern/ ACTION, \"if\" or \"endif\", not \"%.20s\"", p);

	if ((r = rule_new(ps, RULE_MATCH)) == NULL)
		return -1;
	if (parse_pattern(ps, r, &p) != 0)
		return -1;
	while (is_space(*p))
		p++;
	if (*p == '\0')
		return perr(ps, "no action after the pattern");
	tl = strcspn(p, " \t\r\n\v\f");
	if ((r->word = strndup(p, tl)) == NULL)
		return perr(ps, "out of memory");
	for (p += tl; is_space(*p); p++)
		;
	if ((r->text = strdup(p)) == NULL)
		return perr(ps, "out of memory");
	ps->t->nrules++;
	if (parse_action(ps, r) != 0)
		return -1;
	ps->t->has |= 1u << r->action;

	(void)pcre2_pattern_info(r->re, PCRE2_INFO_CAPTURECOUNT, &ncap);
	if (check_subst(ps, r, ncap) != 0)
		return -1;
	if ((r->action == RULES_PREPEND || r->action == RULES_REPLACE)) {
		if (r->text[0] == '\0')
			return perr(ps, "%s needs a header text \"Name: value\"", r->word);
		if (!r->subst && header_name_len(r->text) == 0)
			return perr(ps, "%s text must start with a header name and a colon: \"%.40s\"",
			    r->word, r->text);
	}
	if (r->action == RULES_REJECT && !r->subst && check_reply(ps, r) != 0)
		return -1;
	return 0;
}

/* See rules.h. */
struct rules *
rules_parse(const char *buf, size_t len, const char *name, enum rules_kind kind,
    char *err, size_t errlen)
{
	struct parse ps = { .name = name, .err = err, .errlen = errlen };
	char *logical = NULL;
	size_t llen = 0, lcap = 0;
	unsigned lineno = 0;
	const char *p = buf, *end = buf + len;
	struct rules *t;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((t = calloc(1, sizeof(*t))) == NULL || (t->name = strdup(name)) == NULL) {
		free(t);
		snprintf(err, errlen, "%s: out of memory", name);
		return NULL;
	}
	t->kind = kind;
	ps.t = t;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end, *q;
		size_t n;

		lineno++;
		if (memchr(p, '\0', (size_t)(le - p)) != NULL) {
			ps.line = lineno;
			perr(&ps, "NUL character in the table");
			goto fail;
		}
		n = (size_t)(le - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		for (q = p; q < p + n && is_space(*q); q++)
			;
		if (q == p + n || *q == '#') {
			/* blank or comment: ignored, even inside a logical line */
		} else if (is_space(*p)) {
			if (llen == 0) {
				ps.line = lineno;
				perr(&ps, "continuation line (starting with white space) "
				    "without a rule before it");
				goto fail;
			}
		} else if (llen > 0) {
			logical[llen] = '\0';
			if (parse_logical(&ps, logical, llen) != 0)
				goto fail;
			llen = 0;
		}
		if (q < p + n && *q != '#') {
			if (llen == 0)
				ps.line = lineno;
			if (grow(&logical, &lcap, llen + n + 1) != 0) {
				perr(&ps, "out of memory");
				goto fail;
			}
			memcpy(logical + llen, p, n);
			llen += n;
		}
		p = nl ? nl + 1 : end;
	}
	if (llen > 0) {
		logical[llen] = '\0';
		if (parse_logical(&ps, logical, llen) != 0)
			goto fail;
	}
	if (ps.depth > 0) {
		ps.line = t->v[ps.stack[ps.depth - 1]].line;
		perr(&ps, "\"if\" without \"endif\"");
		goto fail;
	}
	free(logical);
	logical = NULL;
	if ((t->md = pcre2_match_data_create(t->maxcapture + 1, NULL)) == NULL ||
	    (t->mctx = pcre2_match_context_create(NULL)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", name);
		goto fail;
	}
	/* A JIT stack larger than the default, for long lines; none is fine too. */
	if ((t->jit = pcre2_jit_stack_create(JIT_STACK_MIN, JIT_STACK_MAX, NULL)) != NULL)
		pcre2_jit_stack_assign(t->mctx, NULL, t->jit);
	if (prefilter_build(t) != 0 || prefilter_finish(t) != 0) {
		snprintf(err, errlen, "%s: out of memory", name);
		goto fail;
	}
	return t;

fail:
	free(logical);
	rules_free(t);
	return NULL;
}

/* See rules.h. */
struct rules *
rules_load(const char *path, enum rules_kind kind, char *err, size_t errlen)
{
	FILE *fp;
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	struct rules *t;

	if ((fp = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	for (;;) {
		if (grow(&buf, &cap, len + 65536) != 0) {
			snprintf(err, errlen, "%s: out of memory", path);
			goto fail;
		}
		n = fread(buf + len, 1, cap - len, fp);
		len += n;
		if (len > RULES_FILE_MAX) {
			snprintf(err, errlen, "%s: larger than %d MB", path, RULES_FILE_MAX >> 20);
			goto fail;
		}
		if (n == 0)
			break;
	}
	if (ferror(fp)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	fclose(fp);
	t = rules_parse(buf, len, path, kind, err, errlen);
	free(buf);
	return t;
fail:
	fclose(fp);
	free(buf);
	return NULL;
}

/* See rules.h. */
void
rules_free(struct rules *t)
{
	if (t == NULL)
		return;
	prefilter_free(t);
	free(t->hits);
	free(t->bbuf);
	free(t->bend);
	free(t->bhits);
	for (size_t i = 0; i < t->n; i++) {
		pcre2_code_free(t->v[i].re);
		free(t->v[i].src);
		free(t->v[i].word);
		free(t->v[i].text);
	}
	free(t->v);
	pcre2_match_data_free(t->md);
	pcre2_match_context_free(t->mctx);
	pcre2_jit_stack_free(t->jit);
	free(t->out);
	free(t->subj);
	free(t->name);
	free(t);
}

size_t
rules_count(const struct rules *t)
{
	return t->nrules;
}

bool
rules_has(const struct rules *t, enum rules_action a)
{
	return (t->has & (1u << a)) != 0;
}

const char *
rules_name(const struct rules *t)
{
	return t->name;
}

size_t
rules_prefilter_count(const struct rules *t)
{
	return t->nprefiltered;
}

void
rules_use_prefilter(struct rules *t, bool on)
{
	t->prefilter_on = on && t->nprefiltered > 0;
}

/* --- matching ----------------------------------------------------------- */

/* Replace bytes that must not reach a log line or a reply. */
static void
sanitize(char *s, size_t len, bool ascii_only)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\t')
			s[i] = ' ';
		else if (c < 0x20 || c == 0x7f || (ascii_only && c >= 0x80))
			s[i] = '?';
	}
}

/* Fill t->hit for rule r, which applied to s; NULL if out of memory. */
static const struct rules_hit *
make_hit(struct rules *t, const struct rule *r, const char *s, int nset)
{
	struct rules_hit *h = &t->hit;
	size_t len, off;
	int tcode;

	memset(h, 0, sizeof(*h));
	h->action = r->action;
	h->word = r->word;
	h->file = t->name;
	h->line = r->line;
	if (expand(t, r, s, nset, &len) != 0)
		return NULL;
	h->text = t->out;
	h->textlen = len;
	switch (r->action) {
	case RULES_REJECT:
		off = reply_prefix(t->out, len, r->family != FAM_NUMERIC, &tcode, h->enhanced);
		if (tcode != 0 && (tcode < 400 || tcode > 599)) {
			tcode = 0;	/* not a code of ours: part of the text */
			off = 0;
			h->enhanced[0] = '\0';
		}
		h->code = reply_code(r->family, r->code, tcode, h->enhanced[0]);
		if (h->enhanced[0] == '\0')
			memcpy(h->enhanced, h->code < 500 ? "4.7.1" : "5.7.1", 6);
		else
			h->enhanced[0] = (char)('0' + h->code / 100);
		h->text = t->out + off;
		h->textlen = len - off;
		if (h->textlen > RULES_REPLY_MAX) {
			h->textlen = RULES_REPLY_MAX;
			t->out[off + h->textlen] = '\0';
		}
		sanitize(t->out + off, h->textlen, true);
		if (h->textlen == 0) {
			h->text = t->kind == RULES_ACCESS ? "Access denied" :
			    "Message content rejected";
			h->textlen = strlen(h->text);
		}
		break;
	case RULES_PREPEND:
	case RULES_REPLACE:
		break;		/* a header: rules_header_split() makes it safe */
	default:
		sanitize(t->out, len, false);
		break;
	}
	return h;
}

/*
 * Run one rule's pattern: 1 match (*nset set), 0 no match, -1 error (warn
 * set).  cand: the string's bits from Hyperscan, or NULL (no scan).
 */
static int
run(struct rules *t, const struct rule *r, const unsigned char *cand, const char *s,
    size_t len, int *nset, char *warn, size_t warnlen)
{
	size_t i = (size_t)(r - t->v);
	int rc;

	if (cand != NULL && r->prefiltered && !(cand[i / 8] & (1u << (i % 8))))
		return 0;	/* Hyperscan saw no match: PCRE2 cannot find one */
	t->stats.pcre2++;
	if (r->jit)
		rc = pcre2_jit_match(r->re, (PCRE2_SPTR)s, len, 0, 0, t->md, t->mctx);
	else
		rc = pcre2_match(r->re, (PCRE2_SPTR)s, len, 0, 0, t->md, t->mctx);

	if (rc >= 0) {
		/* 0: the ovector was too small; not possible with our match data. */
		*nset = rc == 0 ? (int)pcre2_get_ovector_count(t->md) : rc;
		return 1;
	}
	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	if (warn != NULL && warnlen > 0 && warn[0] == '\0') {
		PCRE2_UCHAR msg[128];

		if (pcre2_get_error_message(rc, msg, sizeof(msg)) < 0)
			snprintf((char *)msg, sizeof(msg), "error %d", rc);
		snprintf(warn, warnlen, "%s:%u: matching error, rule skipped: %s",
		    t->name, r->line, (const char *)msg);
	}
	return -1;
}

/*
 * The first rule that applies to s[0..len) (not empty), with cand as in
 * run(); warn was cleared by the caller.  When Hyperscan reported nothing
 * and every rule is in its database and not negated, none can apply.
 */
static const struct rules_hit *
match_string(struct rules *t, const char *s, size_t len, const unsigned char *cand,
    char *warn, size_t warnlen)
{
	size_t i = 0;
	int m, nset = 0;

	if (cand != NULL && t->nalways == 0) {
		size_t b = 0;

		while (b < t->stride && cand[b] == 0)
			b++;
		if (b == t->stride)
			return NULL;
	}
	while (i < t->n) {
		const struct rule *r = &t->v[i];

		switch (r->type) {
		case RULE_ENDIF:
			i++;
			break;
		case RULE_IF:
			m = run(t, r, cand, s, len, &nset, warn, warnlen);
			if (m < 0 || (m == 1) == r->negate)
				i = r->endif + 1;
			else
				i++;
			break;
		case RULE_MATCH:
			m = run(t, r, cand, s, len, &nset, warn, warnlen);
			if (m >= 0 && (m == 1) != r->negate)
				return make_hit(t, r, s, r->negate ? 0 : nset);
			i++;
			break;
		}
	}
	return NULL;
}

/* See rules.h. */
const struct rules_hit *
rules_match(struct rules *t, const char *s, size_t len, char *warn, size_t warnlen)
{
	const unsigned char *cand = NULL;

	if (warn != NULL && warnlen > 0)
		warn[0] = '\0';
	if (len == 0)
		return NULL;	/* empty lines never match, as in Postfix */
	/* A body table's database is for lines: a string with a LF goes without. */
	if (t->prefilter_on && (t->kind != RULES_BODY || memchr(s, '\n', len) == NULL) &&
	    prefilter_scan(t, s, len) == 0)
		cand = t->hits;
	return match_string(t, s, len, cand, warn, warnlen);
}

/* See rules.h. */
const struct rules_hit *
rules_match_header(struct rules *t, const char *name, const char *value,
    char *warn, size_t warnlen)
{
	size_t len;

	if (grow(&t->subj, &t->subjcap, strlen(name) + strlen(value) + 2) != 0) {
		if (warn != NULL && warnlen > 0)
			snprintf(warn, warnlen, "%s: out of memory", t->name);
		return NULL;
	}
	len = subject_write(t->subj, name, value);
	return rules_match(t, t->subj, len, warn, warnlen);
}

/* See rules.h. */
void
rules_get_stats(const struct rules *t, struct rules_stats *st)
{
	*st = t->stats;
}

/* --- body lines, many at a time --------------------------------------- */

/* A rules_body_feed call: the table, and whom to tell. */
struct body_run {
	struct rules	*t;
	rules_hit_fn	*fn;
	void		*arg;
};

/* Match one line on its own and tell fn what there is to tell. */
static int
line_alone(struct body_run *br, const char *line, size_t len)
{
	const struct rules_hit *h;
	char warn[256];

	h = rules_match(br->t, line, len, warn, sizeof(warn));
	return h != NULL || warn[0] != '\0' ? br->fn(br->arg, line, len, h, warn) : 0;
}

/*
 * Match the batch's lines in order, each with its bits, telling fn; the
 * batch is empty after.  Returns 0 or fn's first non-zero result (the lines
 * after that one are not matched).
 */
static int
batch_flush(struct body_run *br)
{
	struct rules *t = br->t;
	const struct rules_hit *h;
	bool scanned;
	char warn[256];
	size_t start = 0;
	int rc = 0;

	if (t->bn == 0)
		return 0;
	scanned = batch_scan(t) == 0;
	for (size_t k = 0; k < t->bn && rc == 0; k++) {
		const char *line = t->bbuf + start;
		size_t len = t->bend[k] - start;

		start = t->bend[k] + 1;
		warn[0] = '\0';
		h = match_string(t, line, len, scanned ? t->bhits + k * t->stride : NULL,
		    warn, sizeof(warn));
		if (h != NULL || warn[0] != '\0')
			rc = br->fn(br->arg, line, len, h, warn);
	}
	t->bn = 0;
	t->blen = 0;
	return rc;
}

/*
 * A line from the liner: into the batch (flushed first when full).  An
 * empty line never matches; a long one, or one the batch has no memory
 * for, is matched alone after the batch.
 */
static int
batch_add(void *arg, const char *line, size_t len)
{
	struct body_run *br = arg;
	struct rules *t = br->t;
	int rc;

	if (len == 0)
		return 0;
	if (t->bn == BATCH_LINES || t->blen + len + 1 > BATCH_BYTES || len > BATCH_LONG) {
		if ((rc = batch_flush(br)) != 0)
			return rc;
	}
	if (len > BATCH_LONG ||
	    (t->bend == NULL && (t->bend = malloc(BATCH_LINES * sizeof(*t->bend))) == NULL) ||
	    (t->bhits == NULL && (t->bhits = malloc(BATCH_LINES * t->stride)) == NULL) ||
	    grow(&t->bbuf, &t->bcap, t->blen + len + 1) != 0) {
		if ((rc = batch_flush(br)) != 0)
			return rc;
		return line_alone(br, line, len);
	}
	memcpy(t->bbuf + t->blen, line, len);
	t->blen += len;
	t->bend[t->bn++] = (uint32_t)t->blen;
	t->bbuf[t->blen++] = '\n';
	return 0;
}

/* A line from the liner, matched alone (no prefilter). */
static int
body_line_alone(void *arg, const char *line, size_t len)
{
	return line_alone(arg, line, len);
}

/*
 * The liner's result rc, after the batch: a liner that ran out of memory
 * has left lines in it, which go first (as they would have one by one).
 */
static int
body_done(struct body_run *br, int rc)
{
	int frc = batch_flush(br);

	return frc != 0 ? frc : rc;
}

/* Whether t's lines go in batches: only a body table's database is for them. */
static bool
batched(const struct rules *t)
{
	return t->prefilter_on && t->kind == RULES_BODY;
}

/* See rules.h. */
int
rules_body_feed(struct rules *t, struct rules_liner *l, const void *p, size_t n,
    rules_hit_fn *fn, void *arg)
{
	struct body_run br = { t, fn, arg };

	if (!batched(t))
		return rules_liner_feed(l, p, n, body_line_alone, &br);
	return body_done(&br, rules_liner_feed(l, p, n, batch_add, &br));
}

/* See rules.h. */
int
rules_body_finish(struct rules *t, struct rules_liner *l, rules_hit_fn *fn, void *arg)
{
	struct body_run br = { t, fn, arg };

	if (!batched(t))
		return rules_liner_finish(l, body_line_alone, &br);
	return body_done(&br, rules_liner_finish(l, batch_add, &br));
}

/* --- the body line splitter ------------------------------------------ */

void
rules_liner_init(struct rules_liner *l, size_t max)
{
	memset(l, 0, sizeof(*l));
	l->max = max > 0 ? max : RULES_LINE_MAX;
}

/* One line without its LF: CR stripped, handed over in pieces of at most max. */
static int
liner_emit(struct rules_liner *l, const char *p, size_t n, rules_line_fn *fn, void *arg)
{
	int rc;

	if (n > 0 && p[n - 1] == '\r')
		n--;
	while (n > l->max) {
		if ((rc = fn(arg, p, l->max)) != 0)
			return rc;
		p += l->max;
		n -= l->max;
	}
	return fn(arg, p, n);
}

/* Buffer part of a line; full pieces go out, one byte stays back (a CR?). */
static int
liner_append(struct rules_liner *l, const char *p, size_t n, rules_line_fn *fn, void *arg)
{
	int rc;

	while (n > 0) {
		size_t room, k;

		if (l->len == l->max + 1) {
			if ((rc = fn(arg, l->buf, l->max)) != 0)
				return rc;
			l->buf[0] = l->buf[l->max];
			l->len = 1;
		}
		if (grow(&l->buf, &l->cap, l->len + n < l->max + 1 ? l->len + n : l->max + 1) != 0)
			return -1;
		room = l->max + 1 - l->len;
		k = n < room ? n : room;
		memcpy(l->buf + l->len, p, k);
		l->len += k;
		p += k;
		n -= k;
	}
	return 0;
}

int
rules_liner_feed(struct rules_liner *l, const void *data, size_t n, rules_line_fn *fn, void *arg)
{
	const char *p = data, *end = p + n;
	int rc;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		if (nl == NULL)
			return liner_append(l, p, (size_t)(end - p), fn, arg);
		if (l->len == 0) {
			rc = liner_emit(l, p, (size_t)(nl - p), fn, arg);
		} else {
			if ((rc = liner_append(l, p, (size_t)(nl - p), fn, arg)) != 0)
				return rc;
			rc = liner_emit(l, l->buf, l->len, fn, arg);
			l->len = 0;
		}
		if (rc != 0)
			return rc;
		p = nl + 1;
	}
	return 0;
}

int
rules_liner_finish(struct rules_liner *l, rules_line_fn *fn, void *arg)
{
	int rc = 0;

	if (l->len > 0)
		rc = liner_emit(l, l->buf, l->len, fn, arg);
	l->len = 0;
	return rc;
}

void
rules_liner_reset(struct rules_liner *l)
{
	l->len = 0;
}

void
rules_liner_free(struct rules_liner *l)
{
	free(l->buf);
	l->buf = NULL;
	l->len = l->cap = 0;
}
