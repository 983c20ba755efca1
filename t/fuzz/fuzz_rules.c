/*
 * fuzz_rules.c - libFuzzer harness for the regex module's table parser and
 * matcher (filters/regex/rules.c).
 *
 * Parses arbitrary bytes with rules_parse() as a header_checks, a
 * body_checks and an access table.  A table that loads is matched against
 * a few fixed strings and against each line of the input itself (so
 * substitutions see odd captures), and each PREPEND/REPLACE text goes
 * through rules_header_split().  The input is also cut into lines by
 * rules_liner in small pieces.  A refused table must come with one error
 * line "fuzz:LINE: ..." (or "fuzz: ..."); a hit must be consistent: a reply
 * code 4xx/5xx whose class the enhanced code shares, a text of the length
 * it claims, at most RULES_REPLY_MAX bytes of printable ASCII for a reply.
 * Every match is made twice, with the Hyperscan prefilter and with PCRE2
 * alone (rules_use_prefilter): the verdicts must be the same (the rule, its
 * action and its expanded text), unless PCRE2 reported a matching error.
 * The input is also fed as a body, in chunks of sizes taken from its first
 * bytes, through rules_body_feed (lines matched many at a time) and through
 * the line splitter with rules_match on each line, with PCRE2 alone: the
 * calls (line, rule, action, text, warning) and their results must be the
 * same one by one, unless a matching error came up.
 *
 *	clang -g -fsanitize=fuzzer,address,undefined -I. -I/usr/include/hs -Ifilters/regex \
 *	    t/fuzz/fuzz_rules.c filters/regex/rules.c -lpcre2-8 -lhs -o fuzz_rules
 *	./fuzz_rules -max_len=4096 corpus t/fuzz/seed/fuzz_rules
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../filters/regex/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort unless a hit is well formed. */
static void
check_hit(const struct rules_hit *h)
{
	char *name, *value;

	if (h == NULL)
		return;
	if (h->action >= RULES_ACTION_MAX || h->word == NULL || h->text == NULL ||
	    strlen(h->text) != h->textlen || h->line < 1 || strcmp(h->file, "fuzz") != 0)
		abort();
	if (h->action == RULES_REJECT) {
		if (h->code < 400 || h->code > 599 || h->enhanced[0] != '0' + h->code / 100 ||
		    h->enhanced[1] != '.' || h->textlen == 0 || h->textlen > RULES_REPLY_MAX)
			abort();
		for (size_t i = 0; i < h->textlen; i++)
			if ((unsigned char)h->text[i] < 0x20 || (unsigned char)h->text[i] > 0x7e)
				abort();
	}
	if ((h->action == RULES_PREPEND || h->action == RULES_REPLACE) &&
	    rules_header_split(h->text, &name, &value) == 0) {
		if (strchr(name, ':') != NULL || strchr(name, ' ') != NULL)
			abort();
		for (const char *p = value; *p; p++)
			if ((*p == '\n' && (p == value || p[-1] != '\r')) ||
			    (*p == '\r' && (p[1] != '\n' || (p[2] != ' ' && p[2] != '\t'))))
				abort();
		free(name);
		free(value);
	}
}

/* rules_match with the prefilter and without; abort when they disagree. */
static const struct rules_hit *
match_both(struct rules *t, const char *s, size_t len)
{
	static char text[2048];
	const struct rules_hit *h;
	char warn[256];
	unsigned line;
	int action;

	rules_use_prefilter(t, false);
	h = rules_match(t, s, len, warn, sizeof(warn));
	check_hit(h);
	line = h ? h->line : 0;
	action = h ? (int)h->action : -1;
	snprintf(text, sizeof(text), "%s", h ? h->text : "");
	rules_use_prefilter(t, true);
	h = rules_match(t, s, len, warn + 128, sizeof(warn) - 128);
	if (warn[0] == '\0' &&
	    ((h ? h->line : 0) != line || (h ? (int)h->action : -1) != action ||
	    strncmp(h ? h->text : "", text, sizeof(text) - 1) != 0))
		abort();
	return h;
}

struct each {
	struct rules	*t;
	size_t		 lines;
};

/* Match every line of the input against the table. */
static int
on_line(void *arg, const char *line, size_t len)
{
	struct each *e = arg;

	if (len > 8)	/* pieces are at most 8 bytes (see below) */
		abort();
	e->lines++;
	if (e->t != NULL)
		check_hit(match_both(e->t, line, len));
	return 0;
}

/* The calls a body makes: a log of them, to compare. */
struct calls {
	char		*log;
	size_t		 len, cap;
	bool		 warned;
	struct rules	*t;
};

static void
calls_put(struct calls *c, const void *p, size_t n)
{
	if (c->len + n > c->cap) {
		c->cap = (c->len + n) * 2 + 256;
		if ((c->log = realloc(c->log, c->cap)) == NULL)
			abort();
	}
	memcpy(c->log + c->len, p, n);
	c->len += n;
}

static int
calls_hit(struct calls *c, const char *line, size_t len, const struct rules_hit *h,
    const char *warn)
{
	char head[64];
	int n = snprintf(head, sizeof(head), "\n%u %d %zu ", h ? h->line : 0,
	    h ? (int)h->action : -1, len);

	check_hit(h);
	if (warn[0] != '\0')
		c->warned = true;
	calls_put(c, head, (size_t)n);
	calls_put(c, line, len);
	if (h != NULL)
		calls_put(c, h->text, h->textlen);
	return h != NULL && (h->action == RULES_REJECT || h->action == RULES_DISCARD);
}

static int
on_body_hit(void *arg, const char *line, size_t len, const struct rules_hit *h, const char *warn)
{
	return calls_hit(arg, line, len, h, warn);
}

static int
on_body_line(void *arg, const char *line, size_t len)
{
	struct calls *c = arg;
	const struct rules_hit *h;
	char warn[256];

	h = rules_match(c->t, line, len, warn, sizeof(warn));
	if (h == NULL && warn[0] == '\0')
		return 0;
	return calls_hit(c, line, len, h, warn);
}

/* The input as a body, batched (mode 0) or line by line with PCRE2 alone. */
static void
body_calls(struct rules *t, int mode, const char *buf, size_t size, size_t max, struct calls *c)
{
	struct rules_liner lr;
	size_t o = 0, i = 0;
	int rc = 0;

	memset(c, 0, sizeof(*c));
	c->t = t;
	rules_use_prefilter(t, mode == 0);
	rules_liner_init(&lr, max);
	while (o < size && rc == 0) {
		/* chunk sizes from the input's first bytes: 1..256, or all */
		size_t k = size > 8 ? (size_t)(unsigned char)buf[i++ % 8] + 1 : size;

		if (k > size - o || k == 256)
			k = size - o;
		rc = mode == 0 ? rules_body_feed(t, &lr, buf + o, k, on_body_hit, c) :
		    rules_liner_feed(&lr, buf + o, k, on_body_line, c);
		calls_put(c, rc ? "!" : ".", 1);
		o += k;
	}
	if (rc == 0) {
		rc = mode == 0 ? rules_body_finish(t, &lr, on_body_hit, c) :
		    rules_liner_finish(&lr, on_body_line, c);
		calls_put(c, rc ? "E" : "e", 1);
	}
	rules_liner_free(&lr);
	rules_use_prefilter(t, true);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum rules_kind kinds[] = { RULES_HEADER, RULES_BODY, RULES_ACCESS };
	static const char *const subjects[] = {
		"Subject: hello world", "Subject: a\n\tb", "user@example.com", "<>",
		"192.0.2.1", "x", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
	};
	const char *buf = (const char *)data;
	char err[512], warn[256];

	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		struct rules *t;
		struct rules_liner lr;
		struct each e = { 0 };

		err[0] = '\0';
		t = rules_parse(buf, size, "fuzz", kinds[k], err, sizeof(err));
		if (t == NULL) {
			if (strncmp(err, "fuzz:", 5) != 0 || strchr(err, '\n') != NULL)
				abort();
			continue;
		}
		for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++)
			check_hit(match_both(t, subjects[i], strlen(subjects[i])));
		check_hit(rules_match_header(t, "X-Fuzz", " a\r\n b", warn, sizeof(warn)));
		/* Each line of the input, in pieces of at most 8 bytes, fed 3 at a time. */
		e.t = t;
		rules_liner_init(&lr, 8);
		for (size_t o = 0; o < size; o += 3)
			rules_liner_feed(&lr, buf + o, size - o < 3 ? size - o : 3, on_line, &e);
		rules_liner_finish(&lr, on_line, &e);
		rules_liner_free(&lr);
		/* The input as a body: batched and line by line make the same calls. */
		for (size_t m = 0; m < 2; m++) {
			struct calls batched, alone;

			body_calls(t, 0, buf, size, m ? 5 : 0, &batched);
			body_calls(t, 1, buf, size, m ? 5 : 0, &alone);
			if (!batched.warned && !alone.warned && (batched.len != alone.len ||
			    memcmp(batched.log, alone.log, alone.len) != 0))
				abort();
			free(batched.log);
			free(alone.log);
		}
		rules_free(t);
	}
	return 0;
}
