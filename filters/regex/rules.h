/*
 * rules.h - Postfix-style regular expression tables: header_checks(5) and
 * body_checks for message content, access(5) for the SMTP envelope.
 *
 * The engine of the regex module, kept apart from the module ABI so that it
 * can be unit-tested and fuzzed.  Only libc, PCRE2 and (configure
 * --with-hyperscan) Hyperscan as a prefilter: see rules.c.
 *
 * SYNOPSIS
 *	char err[512];
 *	struct rules *t = rules_load("/etc/smtpchain/header_checks",
 *	    RULES_HEADER, err, sizeof(err));
 *	const struct rules_hit *h = rules_match_header(t, "Subject", " hi",
 *	    warn, sizeof(warn));
 *	if (h != NULL && h->action == RULES_REJECT)
 *		reply(h->code, h->enhanced, h->text);
 *	rules_free(t);
 *
 * TABLE FORMAT (pcre_table(5), header_checks(5))
 *	/pattern/flags ACTION [text]	when the pattern matches
 *	!/pattern/flags ACTION [text]	when it does not match
 *	if /pattern/flags ... endif	rules that apply when it matches
 *	if !/pattern/flags ... endif	(nest as deep as RULES_IF_DEPTH)
 *	# comment, blank lines		ignored, anywhere
 *	a line starting with white space continues the logical line before it
 *	(joined as they are, without the newline)
 *
 *	The delimiter is any character but a letter, a digit or white space;
 *	a backslash keeps the next character in the pattern.  Flags
 *	toggle the defaults: i (case-insensitive, default on), s (dot matches
 *	newline, default on), m (multi-line, off), x (extended, off),
 *	A (anchored, off), E (dollar at the end only, off), U (ungreedy, off).
 *	Patterns are PCRE2, compiled with JIT when it is available; regexp:
 *	(POSIX) tables of Postfix usually work unchanged.  The first rule that
 *	applies decides; DUNNO and OK end the search with "no action".
 *
 *	In the text, $1..$99, ${N} and $(N) stand for what the N-th group
 *	captured ("" when it took no part; $0 is the whole match) and $$ for
 *	a dollar sign.  A group number beyond the pattern's groups, a "$"
 *	followed by anything else, or a substitution in a negated rule is an
 *	error.
 *
 * ACTIONS (names without case)
 *	RULES_HEADER and RULES_BODY (header_checks(5)):
 *	    REJECT [text]	refuse the message: "550 5.7.1 text"; text may
 *			start with a code and/or an enhanced code (4.x.x or a
 *			4xx code: temporary); default "Message content rejected"
 *	    DISCARD [text], HOLD [text], WARN [text], INFO [text]
 *	    PREPEND text	(header_checks) insert "Name: value" before
 *	    REPLACE text	(header_checks) replace the header by "Name: value"
 *	    IGNORE		(header_checks) delete the header
 *	    STRIP [text]	(header_checks) delete the header and log
 *	    DUNNO, OK	no action
 *	RULES_ACCESS (access(5), for client/helo/sender/recipient checks):
 *	    REJECT [text]	"554 5.7.1 text" (default "Access denied")
 *	    DEFER [text], DEFER_IF_PERMIT [text]
 *			"450 4.7.1 text" (default "Access denied")
 *	    4NN text, 5NN text	that code (enhanced default 4.7.1 / 5.7.1)
 *	    OK, all-numerical, DUNNO	no action (action RULES_OK / RULES_DUNNO)
 *	    DISCARD [text], HOLD [text], WARN [text], INFO [text]
 *	    PREPEND Name: value	a header for the message
 *	Refused when the table is loaded, with "not supported": BCC, FILTER,
 *	REDIRECT, DELAY, PASS everywhere, DEFER_IF_REJECT in access tables,
 *	PREPEND/REPLACE/IGNORE/STRIP in body_checks (the module does not keep
 *	the body to rewrite it).  Any other word is an unknown action.
 *
 * MATCHING
 *	A header is matched as one string "Name:value", the value as the
 *	message has it (leading space kept) with each CRLF of its folding
 *	turned into a single LF, which is what Postfix's cleanup(8) matches
 *	(so /^Subject:.*word/ finds a word on a folded line, and $ and ^ with
 *	the m flag see the lines).  Body lines are matched without their
 *	CRLF; rules_liner cuts a body stream into lines, and a line longer
 *	than its limit into pieces of that size, each matched on its own as
 *	Postfix does with line_length_limit.  Empty strings never match
 *	(header_checks(5), BUGS).  A PCRE2 matching error (a match limit
 *	reached) makes that rule not apply and is reported in warn.
 *
 * DIAGNOSTICS
 *	Errors name the table and line: "FILE:LINE: message".
 */
#ifndef SMTPCHAIN_RULES_H
#define SMTPCHAIN_RULES_H

#include <stdbool.h>
#include <stddef.h>

/* Inside the module's .so, only smtpchain_filter is exported. */
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

#define RULES_IF_DEPTH		64		/* if..endif nesting */
#define RULES_REPLY_MAX		450		/* bytes of reply text kept */
#define RULES_LINE_MAX		(1024 * 1024)	/* default body piece size */

/* What a table is for: which actions it accepts. */
enum rules_kind {
	RULES_HEADER = 0,	/* header_checks */
	RULES_BODY,		/* body_checks */
	RULES_ACCESS,		/* client/helo/sender/recipient checks */
};

enum rules_action {
	RULES_DUNNO = 0,	/* DUNNO (and OK in header/body_checks) */
	RULES_OK,		/* access tables: OK or an all-numerical result */
	RULES_REJECT,		/* refuse: code (4xx: temporary), enhanced, text */
	RULES_DISCARD,		/* text: for the log ("" if none) */
	RULES_HOLD,
	RULES_WARN,
	RULES_INFO,
	RULES_PREPEND,		/* text: a "Name: value" header */
	RULES_REPLACE,		/* text: a "Name: value" header */
	RULES_IGNORE,
	RULES_STRIP,		/* text: for the log */
	RULES_ACTION_MAX
};

/* The rule that applied, as rules_match() found it. */
struct rules_hit {
	enum rules_action action;
	const char	*word;		/* the action as written in the table */
	int		 code;		/* RULES_REJECT: 4xx or 5xx */
	char		 enhanced[12];	/* RULES_REJECT: "x.y.z", class of code */
	const char	*text;		/* after substitution; "" when none.  For
					   RULES_REJECT, the reply text without
					   its codes, printable ASCII only, at
					   most RULES_REPLY_MAX bytes */
	size_t		 textlen;
	const char	*file;		/* the table, for logs */
	unsigned	 line;		/* the rule's first line */
};

struct rules;

/*
 * Load a table from a file, or from memory (name used in messages).
 * Returns NULL with "FILE:LINE: message" (or "FILE: message") in err.
 */
struct rules	*rules_load(const char *path, enum rules_kind kind, char *err, size_t errlen);
struct rules	*rules_parse(const char *buf, size_t len, const char *name,
		    enum rules_kind kind, char *err, size_t errlen);
void		 rules_free(struct rules *t);

/* Rules in the table (if/endif lines not counted). */
size_t		 rules_count(const struct rules *t);
/* Whether some rule of the table has this action. */
bool		 rules_has(const struct rules *t, enum rules_action a);
/* The table's name, as given to rules_load/rules_parse. */
const char	*rules_name(const struct rules *t);
/* Rules whose pattern the Hyperscan prefilter holds (0 without it). */
size_t		 rules_prefilter_count(const struct rules *t);
/*
 * Compile the Hyperscan databases of the tables loaded from now on in a
 * short-lived child process, which hands each over serialized: the process
 * that loads them maps Hyperscan's scanner only, never its compiler (its
 * code and working memory stay out of that process's RSS).  Off by
 * default (the tests, the fuzzer); the module turns it on.  The same
 * databases either way; when no child can be started, compiled in place;
 * when the child fails, no prefilter (PCRE2 alone).
 */
void		 rules_compile_apart(bool on);
/*
 * Whether matching uses the prefilter (on after loading when it holds any
 * rule): off, every pattern runs through PCRE2.  The answers are the same
 * either way; the differential tests compare them.
 */
void		 rules_use_prefilter(struct rules *t, bool on);

/*
 * The first rule that applies to s[0..len), or NULL.  The hit and its
 * strings live in t until the next rules_match*() or rules_free(): a table
 * is used by one thread at a time.  warn (may be NULL) receives a matching
 * error, or "" when there was none.
 */
const struct rules_hit *rules_match(struct rules *t, const char *s, size_t len,
		    char *warn, size_t warnlen);
/* Match a header given as the module ABI passes it (see MATCHING). */
const struct rules_hit *rules_match_header(struct rules *t, const char *name,
		    const char *value, char *warn, size_t warnlen);

/*
 * The string a header is matched as: "Name:value", CRLF of the folding
 * turned into LF.  Returns a malloc'd string (its length in *lenp), or
 * NULL when out of memory.
 */
char		*rules_header_subject(const char *name, const char *value, size_t *lenp);

/*
 * Split a header text "Name: value" (PREPEND, REPLACE) for the module ABI:
 * *name gets a copy of the name, *value a copy of what follows the colon
 * with each LF before a space or tab turned back into CRLF (folding) and
 * any other CR or LF into a space.  Returns 0, or -1 when the text does
 * not start with a valid header name (1..997 bytes 33..126 but ':') and a
 * colon, or when out of memory.
 */
int		 rules_header_split(const char *text, char **name, char **value);

/*
 * Match a body's lines: rules_body_feed cuts the stream into lines as
 * rules_liner_feed does (l keeps a line cut at the end of p for the next
 * call) and matches each as rules_match would, in order, calling fn for
 * each line that a rule applied to (h) or that met a matching error (warn
 * is not "").  Lines, h and warn are valid during the call of fn only.
 * Returns 0, the first non-zero result of fn (no later line is matched), or
 * -1 when out of memory (in the liner: the lines before are matched).
 * rules_body_finish matches a last line without a line end.
 *
 * With the prefilter, the lines of one call are scanned by Hyperscan many
 * at a time (up to 64 KiB, joined by "\n"), which is why this is not
 * rules_liner_feed with rules_match: the same answers, call by call.
 */
typedef int	 rules_hit_fn(void *arg, const char *line, size_t len,
		    const struct rules_hit *h, const char *warn);
struct rules_liner;

int		 rules_body_feed(struct rules *t, struct rules_liner *l, const void *p,
		    size_t n, rules_hit_fn *fn, void *arg);
int		 rules_body_finish(struct rules *t, struct rules_liner *l, rules_hit_fn *fn,
		    void *arg);

/* What matching did so far (for tests and measurements). */
struct rules_stats {
	size_t	 scans;		/* Hyperscan scans */
	size_t	 reports;	/* matches Hyperscan reported */
	size_t	 pcre2;		/* PCRE2 matches run */
};

void		 rules_get_stats(const struct rules *t, struct rules_stats *st);

/*
 * Cut a stream (a message body) into lines without their line end (LF or
 * CRLF), handing each to fn; a line longer than max bytes is handed over in
 * pieces of max bytes.  Memory stays under max + a little.
 */
typedef int	 rules_line_fn(void *arg, const char *line, size_t len);

struct rules_liner {
	char	*buf;
	size_t	 len, cap, max;
};

void		 rules_liner_init(struct rules_liner *l, size_t max);
/* Feed bytes; returns 0, or the first non-zero result of fn (the rest of
 * p is then not looked at), or -1 when out of memory. */
int		 rules_liner_feed(struct rules_liner *l, const void *p, size_t n,
		    rules_line_fn *fn, void *arg);
/* The end of the stream: hands over a last line without a line end. */
int		 rules_liner_finish(struct rules_liner *l, rules_line_fn *fn, void *arg);
/* Forget buffered bytes (keeps memory for reuse); free releases it. */
void		 rules_liner_reset(struct rules_liner *l);
void		 rules_liner_free(struct rules_liner *l);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
