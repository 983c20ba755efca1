/*
 * test_rules.c - unit tests for filters/regex/rules.c: the Postfix table
 * format (comments, continuation lines, flags, negation, if..endif), every
 * action of header_checks, body_checks and access tables, $N substitution,
 * reply codes, folded and 100 KB headers, the body line splitter on a
 * 100 KB line split anywhere, the "FILE:LINE: ..." errors, and the same
 * verdicts with the Hyperscan prefilter as with PCRE2 alone (differential),
 * and body lines matched many at a time (rules_body_feed) as one by one;
 * databases compiled in a child process as in place.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autoconf.h"
#include "../../filters/regex/rules.h"
#include "tap.h"

static char err[512];

/* A table from text, named "t.rules"; NULL (with a diagnostic) on error. */
static struct rules *
parse(enum rules_kind kind, const char *text)
{
	struct rules *t = rules_parse(text, strlen(text), "t.rules", kind, err, sizeof(err));

	if (t == NULL)
		diag("parse error: %s", err);
	return t;
}

/* The error a table gives (and NULL as the table). */
static const char *
parse_error(enum rules_kind kind, const char *text)
{
	struct rules *t = rules_parse(text, strlen(text), "t.rules", kind, err, sizeof(err));

	if (t != NULL) {
		rules_free(t);
		return "(parsed)";
	}
	return err;
}

/* Match a string. */
static const struct rules_hit *
match(struct rules *t, const char *s)
{
	return t ? rules_match(t, s, strlen(s), NULL, 0) : NULL;
}

/* The action a string gets, -1 for no rule. */
static int
action_of(struct rules *t, const char *s)
{
	const struct rules_hit *h = match(t, s);

	return h ? (int)h->action : -1;
}

/* The text a string gets, "(none)" for no rule. */
static const char *
text_of(struct rules *t, const char *s)
{
	const struct rules_hit *h = match(t, s);

	return h ? h->text : "(none)";
}

/* header_checks actions, one rule each, with their texts and lines. */
static void
test_content_actions(void)
{
	struct rules *t = parse(RULES_HEADER,
	    "# header checks\n"
	    "/^Subject: reject-plain/\tREJECT\n"
	    "/^Subject: reject-text/ REJECT Go away\n"
	    "/^Subject: reject-temp/ REJECT 4.7.0 Try later\n"
	    "/^Subject: reject-code/ REJECT 551 5.7.0 Coded\n"
	    "/^Subject: reject-four/ reject 452 Full\n"
	    "\n"
	    "/^Subject: discard/ DISCARD dropped it\n"
	    "/^Subject: hold/ HOLD held\n"
	    "/^Subject: warn/ WARN looks odd\n"
	    "/^Subject: info/ INFO noted\n"
	    "/^Subject: dunno/ DUNNO\n"
	    "/^Subject: ok/ OK\n"
	    "/^Subject: prepend/ PREPEND X-Flag: yes\n"
	    "/^Subject: replace/ REPLACE Subject: [replaced]\n"
	    "/^Subject: ignore/ IGNORE\n"
	    "/^Subject: strip/ STRIP stripped\n"
	    "/^Subject:/ REJECT last\n");
	const struct rules_hit *h;

	ok(t != NULL, "header_checks with every action parses");
	if (t == NULL)
		return;
	is_int(rules_count(t), 16, "16 rules");
	h = match(t, "Subject: reject-plain");
	ok(h && h->action == RULES_REJECT, "REJECT");
	if (h) {
		is_int(h->code, 550, "REJECT: 550");
		is_str(h->enhanced, "5.7.1", "REJECT: 5.7.1");
		is_str(h->text, "Message content rejected", "REJECT: Postfix's default text");
		is_int(h->line, 2, "REJECT: line of the rule");
		is_str(h->file, "t.rules", "REJECT: file of the rule");
		is_str(h->word, "REJECT", "REJECT: the word as written");
	}
	h = match(t, "Subject: reject-text");
	ok(h && h->code == 550 && strcmp(h->enhanced, "5.7.1") == 0 &&
	    strcmp(h->text, "Go away") == 0, "REJECT text: 550 5.7.1 text");
	h = match(t, "Subject: reject-temp");
	ok(h && h->code == 451 && strcmp(h->enhanced, "4.7.0") == 0 &&
	    strcmp(h->text, "Try later") == 0, "REJECT 4.x.x: temporary, 451 4.7.0");
	h = match(t, "Subject: reject-code");
	ok(h && h->code == 551 && strcmp(h->enhanced, "5.7.0") == 0 &&
	    strcmp(h->text, "Coded") == 0, "REJECT 551 5.7.0 text: used as given");
	h = match(t, "Subject: reject-four");
	ok(h && h->action == RULES_REJECT && h->code == 452 &&
	    strcmp(h->enhanced, "4.7.1") == 0 && strcmp(h->text, "Full") == 0,
	    "lower-case reject 452 text: 452 4.7.1");
	h = match(t, "Subject: discard");
	ok(h && h->action == RULES_DISCARD && strcmp(h->text, "dropped it") == 0, "DISCARD text");
	h = match(t, "Subject: hold");
	ok(h && h->action == RULES_HOLD && strcmp(h->text, "held") == 0, "HOLD text");
	h = match(t, "Subject: warn");
	ok(h && h->action == RULES_WARN && strcmp(h->text, "looks odd") == 0, "WARN text");
	h = match(t, "Subject: info");
	ok(h && h->action == RULES_INFO && strcmp(h->text, "noted") == 0, "INFO text");
	is_int(action_of(t, "Subject: dunno"), RULES_DUNNO, "DUNNO stops the search");
	is_int(action_of(t, "Subject: ok"), RULES_DUNNO, "OK is DUNNO in header_checks");
	h = match(t, "Subject: prepend");
	ok(h && h->action == RULES_PREPEND && strcmp(h->text, "X-Flag: yes") == 0, "PREPEND header");
	h = match(t, "Subject: replace");
	ok(h && h->action == RULES_REPLACE && strcmp(h->text, "Subject: [replaced]") == 0,
	    "REPLACE header");
	is_int(action_of(t, "Subject: ignore"), RULES_IGNORE, "IGNORE");
	h = match(t, "Subject: strip");
	ok(h && h->action == RULES_STRIP && strcmp(h->text, "stripped") == 0, "STRIP text");
	h = match(t, "Subject: anything else");
	ok(h && h->line == 18 && strcmp(h->text, "last") == 0, "first match wins, in file order");
	is_int(action_of(t, "From: someone"), -1, "no rule: NULL");
	ok(rules_has(t, RULES_PREPEND) && rules_has(t, RULES_IGNORE) && !rules_has(t, RULES_OK),
	    "rules_has");
	rules_free(t);
}

/* body_checks: content actions, header-only actions refused. */
static void
test_body_actions(void)
{
	struct rules *t = parse(RULES_BODY,
	    "/^<iframe src=(3D)?cid:.* height=(3D)?0 width=(3D)?0>$/\n"
	    "\tREJECT IFRAME vulnerability exploit\n"
	    "~^[[:alnum:]+/]{60,}$~ OK\n"
	    "/viagra/ HOLD\n");

	ok(t != NULL, "body_checks from the man pages parse");
	if (t == NULL)
		return;
	is_str(text_of(t, "<iframe src=3Dcid:x height=3D0 width=3D0>"),
	    "IFRAME vulnerability exploit", "body REJECT with continued text");
	is_int(action_of(t, "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx"),
	    RULES_DUNNO, "base64 line skipped with OK");
	is_int(action_of(t, "buy VIAGRA now"), RULES_HOLD, "HOLD, case-insensitive");
	rules_free(t);

	is_str(parse_error(RULES_BODY, "/x/ PREPEND X-A: b\n"),
	    "t.rules:1: PREPEND is not supported in body_checks (the body is not rewritten)",
	    "body_checks: PREPEND refused");
	ok(strstr(parse_error(RULES_BODY, "\n/x/ replace y\n"), "t.rules:2: replace is not supported") != NULL,
	    "body_checks: REPLACE refused");
	ok(strstr(parse_error(RULES_BODY, "/x/ IGNORE\n"), "IGNORE is not supported in body_checks") != NULL,
	    "body_checks: IGNORE refused");
}

/* access(5) tables. */
static void
test_access_actions(void)
{
	struct rules *t = parse(RULES_ACCESS,
	    "/^ok@/ OK\n"
	    "/^num@/ 12345\n"
	    "/^dunno@/ DUNNO\n"
	    "/^rej@/ REJECT\n"
	    "/^rejtext@/ REJECT No thanks\n"
	    "/^rejenh@/ REJECT 5.1.1 No such user\n"
	    "/^rejcode@/ REJECT 550 5.1.1 Unknown\n"
	    "/^defer@/ DEFER\n"
	    "/^deferp@/ DEFER_IF_PERMIT Greylisted\n"
	    "/^n450@/ 450 Later\n"
	    "/^n554@/ 554 5.7.0 Go\n"
	    "/^n550@/ 550\n"
	    "/^disc@/ DISCARD bye\n"
	    "/^hold@/ HOLD\n"
	    "/^pre@/ PREPEND X-Checked: yes\n"
	    "/^warn@/ WARN odd\n"
	    "/^info@/ INFO fyi\n");
	const struct rules_hit *h;

	ok(t != NULL, "access table parses");
	if (t == NULL)
		return;
	is_int(action_of(t, "ok@x"), RULES_OK, "OK");
	is_int(action_of(t, "num@x"), RULES_OK, "all-numerical is OK");
	is_int(action_of(t, "dunno@x"), RULES_DUNNO, "DUNNO");
	h = match(t, "rej@x");
	ok(h && h->action == RULES_REJECT && h->code == 554 && strcmp(h->enhanced, "5.7.1") == 0 &&
	    strcmp(h->text, "Access denied") == 0, "REJECT: 554 5.7.1 Access denied");
	h = match(t, "rejtext@x");
	ok(h && h->code == 554 && strcmp(h->text, "No thanks") == 0, "REJECT text");
	h = match(t, "rejenh@x");
	ok(h && h->code == 554 && strcmp(h->enhanced, "5.1.1") == 0 &&
	    strcmp(h->text, "No such user") == 0, "REJECT 5.1.1 text");
	h = match(t, "rejcode@x");
	ok(h && h->code == 550 && strcmp(h->enhanced, "5.1.1") == 0 &&
	    strcmp(h->text, "Unknown") == 0, "REJECT 550 5.1.1 text");
	h = match(t, "defer@x");
	ok(h && h->action == RULES_REJECT && h->code == 450 && strcmp(h->enhanced, "4.7.1") == 0 &&
	    strcmp(h->text, "Access denied") == 0, "DEFER: 450 4.7.1");
	h = match(t, "deferp@x");
	ok(h && h->code == 450 && strcmp(h->text, "Greylisted") == 0, "DEFER_IF_PERMIT: tempfail");
	h = match(t, "n450@x");
	ok(h && h->action == RULES_REJECT && h->code == 450 && strcmp(h->enhanced, "4.7.1") == 0 &&
	    strcmp(h->text, "Later") == 0, "450 text");
	h = match(t, "n554@x");
	ok(h && h->code == 554 && strcmp(h->enhanced, "5.7.0") == 0 && strcmp(h->text, "Go") == 0,
	    "554 5.7.0 text");
	h = match(t, "n550@x");
	ok(h && h->code == 550 && strcmp(h->text, "Access denied") == 0, "550 without text");
	h = match(t, "disc@x");
	ok(h && h->action == RULES_DISCARD && strcmp(h->text, "bye") == 0, "DISCARD");
	is_int(action_of(t, "hold@x"), RULES_HOLD, "HOLD");
	is_str(text_of(t, "pre@x"), "X-Checked: yes", "PREPEND");
	is_int(action_of(t, "warn@x"), RULES_WARN, "WARN");
	is_int(action_of(t, "info@x"), RULES_INFO, "INFO");
	rules_free(t);

	is_str(parse_error(RULES_ACCESS, "/x/ DEFER_IF_REJECT\n"),
	    "t.rules:1: DEFER_IF_REJECT is not supported by smtpchain", "DEFER_IF_REJECT refused");
	ok(strstr(parse_error(RULES_ACCESS, "/x/ permit_mynetworks\n"),
	    "t.rules:1: unknown action \"permit_mynetworks\" (Postfix restrictions") != NULL,
	    "restriction names refused");
	is_str(parse_error(RULES_ACCESS, "/x/ IGNORE\n"),
	    "t.rules:1: unknown action \"IGNORE\" in access tables", "IGNORE in access: unknown");
	is_str(parse_error(RULES_HEADER, "/x/ DEFER\n"),
	    "t.rules:1: unknown action \"DEFER\" in header_checks", "DEFER in header_checks: unknown");
	is_str(parse_error(RULES_ACCESS, "/x/ DEFER 550 No\n"),
	    "t.rules:1: DEFER: a deferral needs a 4xx reply, not a 5xx code", "DEFER 550 refused");
	is_str(parse_error(RULES_ACCESS, "/x/ 450 5.7.1 No\n"),
	    "t.rules:1: 450: reply code 450 and enhanced status code 5.7.1 do not agree",
	    "450 5.7.1 refused");
	is_str(parse_error(RULES_HEADER, "/x/ REJECT 250 fine\n"),
	    "t.rules:1: REJECT: reply code 250 is not 4xx or 5xx", "REJECT 250 refused");
}

/* Unsupported and unknown actions, and other errors, with FILE:LINE. */
static void
test_errors(void)
{
	static const char *const unsup[] = { "FILTER smtp:[127.0.0.1]:10025", "REDIRECT a@b",
		"BCC a@b", "DELAY 1h", "PASS" };

	for (size_t i = 0; i < sizeof(unsup) / sizeof(unsup[0]); i++) {
		char rule[128], want[128];

		snprintf(rule, sizeof(rule), "# c\n\n/x/ %s\n", unsup[i]);
		snprintf(want, sizeof(want), "t.rules:3: %.*s is not supported by smtpchain",
		    (int)strcspn(unsup[i], " "), unsup[i]);
		is_str(parse_error(RULES_HEADER, rule), want, want);
	}
	is_str(parse_error(RULES_HEADER, "/a/ REJECT\n/b/ FROBNICATE\n"),
	    "t.rules:2: unknown action \"FROBNICATE\" in header_checks", "unknown action");
	ok(strncmp(parse_error(RULES_HEADER, "/a/ OK\n\n/(unclosed/ REJECT\n"),
	    "t.rules:3: bad pattern /(unclosed/: missing closing parenthesis", 61) == 0,
	    "bad regex: file, line, PCRE2's reason");
	is_str(parse_error(RULES_HEADER, "/abc REJECT\n"),
	    "t.rules:1: no closing \"/\" after the pattern", "unclosed pattern");
	is_str(parse_error(RULES_HEADER, "/abc/\n"),
	    "t.rules:1: no action after the pattern", "missing action");
	is_str(parse_error(RULES_HEADER, "/abc/REJECT\n"),
	    "t.rules:1: unknown flag \"R\" after the pattern (a space is needed before the action)",
	    "action glued to the pattern");
	is_str(parse_error(RULES_HEADER, "/abc/q REJECT\n"),
	    "t.rules:1: unknown flag \"q\" after the pattern (a space is needed before the action)",
	    "unknown flag");
	is_str(parse_error(RULES_HEADER, "/abc/X REJECT\n"),
	    "t.rules:1: flag \"X\" is not supported with PCRE2", "flag X");
	is_str(parse_error(RULES_HEADER, "REJECT /abc/\n"),
	    "t.rules:1: expected /pattern/ ACTION, \"if\" or \"endif\", not \"REJECT /abc/\"",
	    "a line that is not a rule");
	is_str(parse_error(RULES_HEADER, "  /abc/ REJECT\n"),
	    "t.rules:1: continuation line (starting with white space) without a rule before it",
	    "continuation without a rule");
	{
		static const char nul[] = "/a/ OK\n/b\0/ OK\n";
		struct rules *t = rules_parse(nul, sizeof(nul) - 1, "t.rules", RULES_HEADER,
		    err, sizeof(err));

		ok(t == NULL && strcmp(err, "t.rules:2: NUL character in the table") == 0,
		    "NUL byte refused");
		rules_free(t);
	}
	is_str(parse_error(RULES_HEADER, "/a/ PREPEND\n"),
	    "t.rules:1: PREPEND needs a header text \"Name: value\"", "PREPEND without text");
	is_str(parse_error(RULES_HEADER, "/a/ REPLACE no colon here\n"),
	    "t.rules:1: REPLACE text must start with a header name and a colon: \"no colon here\"",
	    "REPLACE text that is not a header");
	is_str(parse_error(RULES_HEADER, "/a/ REJECT 550 4.7.1 mixed\n"),
	    "t.rules:1: REJECT: reply code 550 and enhanced status code 4.7.1 do not agree",
	    "code and enhanced code disagree");
}

/* Flags: i toggles case, s, m, x, A, E, U; delimiters; escaped delimiter. */
static void
test_flags(void)
{
	struct rules *t;

	t = parse(RULES_HEADER, "/^subject: Hello/ REJECT\n");
	is_int(action_of(t, "SUBJECT: HELLO"), RULES_REJECT, "case-insensitive by default");
	rules_free(t);
	t = parse(RULES_HEADER, "/^Subject: Hello/i REJECT\n");
	is_int(action_of(t, "Subject: Hello"), RULES_REJECT, "i: exact case matches");
	is_int(action_of(t, "subject: hello"), -1, "i: toggles to case-sensitive");
	rules_free(t);
	t = parse(RULES_HEADER, "/^Subject: Hello/ii REJECT\n");
	is_int(action_of(t, "subject: hello"), RULES_REJECT, "ii: toggled twice");
	rules_free(t);
	t = parse(RULES_HEADER, "/^Subject: a.b$/ REJECT\n");
	is_int(action_of(t, "Subject: a\nb"), RULES_REJECT, "s is on by default: . matches LF");
	rules_free(t);
	t = parse(RULES_HEADER, "/^Subject: a.b$/s REJECT\n");
	is_int(action_of(t, "Subject: a\nb"), -1, "s toggles it off");
	rules_free(t);
	t = parse(RULES_HEADER, "/^b$/m REJECT\n");
	is_int(action_of(t, "Subject: a\nb"), RULES_REJECT, "m: ^ and $ at line breaks");
	rules_free(t);
	t = parse(RULES_HEADER, "/^b$/ REJECT\n");
	is_int(action_of(t, "Subject: a\nb"), -1, "without m: only at the ends");
	rules_free(t);
	t = parse(RULES_HEADER, "/ a b c /x REJECT\n");
	is_int(action_of(t, "xabcx"), RULES_REJECT, "x: white space ignored");
	rules_free(t);
	t = parse(RULES_HEADER, "/abc/A REJECT\n");
	is_int(action_of(t, "abcd"), RULES_REJECT, "A: anchored, at the start");
	is_int(action_of(t, "xabc"), -1, "A: anchored, not later");
	rules_free(t);
	t = parse(RULES_HEADER, "/c$/E REJECT\n");
	is_int(action_of(t, "abc\n"), -1, "E: $ only at the very end");
	rules_free(t);
	t = parse(RULES_HEADER, "/c$/ REJECT\n");
	is_int(action_of(t, "abc\n"), RULES_REJECT, "without E: $ before a final LF");
	rules_free(t);
	t = parse(RULES_HEADER, "/<(.+)>/U REPLACE X-A: $1\n");
	is_str(text_of(t, "<a> <b>"), "X-A: a", "U: ungreedy");
	rules_free(t);
	t = parse(RULES_HEADER, "|a/b| REJECT\n#x# REJECT\n");
	is_int(action_of(t, "xa/by"), RULES_REJECT, "another delimiter");
	rules_free(t);
	t = parse(RULES_HEADER, "/a\\/b/ REJECT\n");
	is_int(action_of(t, "xa/by"), RULES_REJECT, "escaped delimiter");
	rules_free(t);
}

/* !/pattern/ and if..endif. */
static void
test_negation_and_if(void)
{
	struct rules *t;

	t = parse(RULES_HEADER, "!/^Subject:/ DUNNO\n!/@example\\.com/ REJECT not ours\n");
	is_int(action_of(t, "From: x@example.org"), RULES_DUNNO, "negation: applies on no match");
	is_str(text_of(t, "Subject: x@example.org"), "not ours", "negation: second rule");
	is_int(action_of(t, "Subject: x@example.com"), -1, "negation: does not apply on a match");
	rules_free(t);

	t = parse(RULES_HEADER,
	    "if /^Subject:/\n"
	    "/viagra/ REJECT spam subject\n"
	    "if !/urgent/\n"
	    "/money/ HOLD\n"
	    "endif\n"
	    "/money/ WARN urgent money\n"
	    "ENDIF\n"
	    "/viagra/ INFO elsewhere\n");
	ok(t != NULL, "nested if..endif parses");
	is_int(rules_count(t), 4, "if/endif are not counted as rules");
	is_str(text_of(t, "Subject: buy viagra"), "spam subject", "if: inner rule");
	is_str(text_of(t, "X-Spam: viagra"), "elsewhere", "if: block skipped");
	is_int(action_of(t, "Subject: money now"), RULES_HOLD, "if !: nested block");
	is_str(text_of(t, "Subject: urgent money"), "urgent money", "if !: block skipped");
	rules_free(t);

	is_str(parse_error(RULES_HEADER, "/a/ OK\nendif\n"),
	    "t.rules:2: \"endif\" without \"if\"", "endif without if");
	is_str(parse_error(RULES_HEADER, "/a/ OK\nif /x/\n/b/ OK\n"),
	    "t.rules:2: \"if\" without \"endif\"", "if without endif");
	is_str(parse_error(RULES_HEADER, "if /x/ REJECT\nendif\n"),
	    "t.rules:1: unexpected text after the \"if\" pattern: \"REJECT\"", "if with an action");
	is_str(parse_error(RULES_HEADER, "if /x/\nendif now\n"),
	    "t.rules:2: unexpected text after \"endif\": \"now\"", "endif with text");
	is_str(parse_error(RULES_HEADER, "if /x/\nendif\nendif\n"),
	    "t.rules:3: \"endif\" without \"if\"", "one endif too many");
	{
		char deep[80 * 8 + 1] = "";

		for (int i = 0; i < 65; i++)
			strcat(deep, "if /x/\n");
		ok(strstr(parse_error(RULES_HEADER, deep), "t.rules:65: if..endif nested deeper") != NULL,
		    "nesting limit");
	}
}

/* Continuation lines, comments and blank lines inside them, CRLF files. */
static void
test_continuation(void)
{
	struct rules *t = parse(RULES_HEADER,
	    "# the man page's example\n"
	    "/^Content-(Disposition|Type).*name\\s*=\\s*\"?([^;]*(\\.|=2E)(\n"
	    "  ade|adp|asp|bas|bat|chm|cmd|com|cpl|crt|dll|exe|\n"
	    "  # a comment inside does not end it\n"
	    "\n"
	    "  hlp|ht[at]|\n"
	    "  vb[esx]?|vxd|ws[cfh]))(\\?=)?\"?\\s*(;|$)/x\n"
	    "    REJECT Attachment name \"$2\" may not end with \".$4\"\n"
	    "/^Subject: two/ REJECT first part\n"
	    "   second part   \n");
	const struct rules_hit *h;

	ok(t != NULL, "multi-line rules parse");
	if (t == NULL)
		return;
	h = match(t, "Content-Type: application/octet-stream; name=\"invoice.exe\"");
	ok(h && h->line == 2, "continued pattern: the rule's first line");
	is_str(h ? h->text : NULL, "Attachment name \"invoice.exe\" may not end with \".exe\"",
	    "continued pattern and text, $2 and $4");
	is_str(text_of(t, "Subject: two"), "first part   second part",
	    "lines joined as they are, trailing white space cut");
	rules_free(t);

	t = parse(RULES_ACCESS, "/^a@/ REJECT dos\r\n\r\n/^b@/\r\n DEFER crlf\r\n");
	is_str(text_of(t, "a@x"), "dos", "CRLF table: CR not in the text");
	is_str(text_of(t, "b@x"), "crlf", "CRLF table: continuation");
	rules_free(t);
}

/* $N, ${N}, $(N), $$, $0, groups that took no part, and errors. */
static void
test_substitution(void)
{
	struct rules *t = parse(RULES_ACCESS,
	    "/^(.*)-outgoing@(.*)$/ 550 Use ${1}@${2} instead\n"
	    "/^(friend@(?!my\\.domain$).*)$/ 550 Stick this in your pipe $1\n"
	    "/^(a)|(b)@/ REJECT got [$1][$2] $$5 $(1)x\n"
	    "/^whole@(.*)/ WARN $0 / $1\n");

	ok(t != NULL, "substitutions parse");
	is_str(text_of(t, "list-outgoing@example.org"), "Use list@example.org instead", "${N}");
	is_str(text_of(t, "friend@example.org"), "Stick this in your pipe friend@example.org", "$N");
	is_str(text_of(t, "b@x"), "got [][b] $5 x", "unset group empty, $$ and $(N)");
	is_str(text_of(t, "whole@x"), "whole@x / x", "$0 is the whole match");
	rules_free(t);

	is_str(parse_error(RULES_HEADER, "/(a)/ REJECT $2\n"),
	    "t.rules:1: substitution \"$2\": the pattern has 1 group", "$N beyond the groups");
	is_str(parse_error(RULES_HEADER, "/(a)/ REJECT $1st\n"),
	    "t.rules:1: bad substitution \"$1st\": non-numeric substitution (write ${N} when a letter follows)",
	    "$1st");
	ok(strstr(parse_error(RULES_HEADER, "/a/ REJECT costs $ 5\n"),
	    "t.rules:1: bad substitution \"$ 5\": \"$\" must be followed by") != NULL, "lone $");
	is_str(parse_error(RULES_HEADER, "/a/ REJECT ${x}\n"),
	    "t.rules:1: bad substitution \"${x}\": expected a group number inside ${...} or $(...)",
	    "${x}");
	is_str(parse_error(RULES_HEADER, "!/(a)/ REJECT $1\n"),
	    "t.rules:1: substitution \"$1\" in a negated rule, which captures nothing",
	    "substitution in a negated rule");
	t = parse(RULES_HEADER, "!/(a)/ REJECT costs $$5\n");
	is_str(text_of(t, "Subject: b"), "costs $5", "$$ in a negated rule");
	rules_free(t);
}

/* Reply texts from substitutions: codes mended, bytes made safe, length cut. */
static void
test_reply_text(void)
{
	struct rules *t = parse(RULES_HEADER,
	    "/^X-Code: (.*)/ REJECT $1\n"
	    "/^X-Defer: (.*)/ REJECT 4.7.1 $1\n");
	struct rules *a = parse(RULES_ACCESS, "/^(.*)$/ DEFER $1\n");
	const struct rules_hit *h;
	char big[2000];

	h = match(t, "X-Code: 451 4.3.0 busy");
	ok(h && h->code == 451 && strcmp(h->enhanced, "4.3.0") == 0 && strcmp(h->text, "busy") == 0,
	    "codes from a substitution");
	h = match(t, "X-Code: 550 4.3.0 mixed");
	ok(h && h->code == 550 && strcmp(h->enhanced, "5.3.0") == 0,
	    "enhanced code takes the reply code's class");
	h = match(t, "X-Code: 250 fine");
	ok(h && h->code == 550 && strcmp(h->text, "250 fine") == 0, "a 2xx code stays text");
	h = match(t, "X-Code: a\tb\x01\xc3\xa9");
	is_str(h ? h->text : NULL, "a b???", "controls and 8-bit bytes become ?");
	h = match(a, "5.7.1 no");
	ok(h && h->code == 450 && strcmp(h->enhanced, "4.7.1") == 0, "DEFER stays 4xx");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "X-Code: ", 8);
	h = match(t, big);
	ok(h && h->textlen == RULES_REPLY_MAX && strlen(h->text) == RULES_REPLY_MAX,
	    "reply text cut at RULES_REPLY_MAX");
	h = match(t, "X-Defer: x\ny");
	ok(h && h->code == 451 && strcmp(h->text, "x?y") == 0, "LF in a reply text replaced");
	rules_free(t);
	rules_free(a);
}

/* Headers: the subject string, folding, 100 KB, header texts split back. */
static void
test_headers(void)
{
	struct rules *t = parse(RULES_HEADER,
	    "/^Subject: make money\\s+fast/ REJECT folded\n"
	    "/^Subject:.*SPAMWORD$/ REJECT long\n"
	    "/^X-Name: (.*)$/ REPLACE X-Name: <$1>\n");
	const struct rules_hit *h;
	size_t len = 0, n = 100 * 1024;
	char *s, *name, *value, *v;

	s = rules_header_subject("Subject", " make money\r\n\tfast", &len);
	is_str(s, "Subject: make money\n\tfast", "subject: CRLF of the folding becomes LF");
	is_int(len, strlen("Subject: make money\n\tfast"), "subject length");
	free(s);
	h = rules_match_header(t, "Subject", " make money\r\n fast", NULL, 0);
	ok(h && strcmp(h->text, "folded") == 0, "folded header matched as one logical header");
	h = rules_match_header(t, "subject", " make money fast", NULL, 0);
	ok(h && strcmp(h->text, "folded") == 0, "name as written, case-insensitive match");

	v = malloc(n + 32);
	memset(v, 'a', n);
	for (size_t i = 76; i < n; i += 78)
		memcpy(v + i, "\r\n", 2), v[i + 2] = ' ';
	strcpy(v + n, " SPAMWORD");
	h = rules_match_header(t, "Subject", v, NULL, 0);
	ok(h && strcmp(h->text, "long") == 0, "100 KB folded header");
	free(v);

	h = rules_match_header(t, "X-Name", " a\r\n b", NULL, 0);
	is_str(h ? h->text : NULL, "X-Name: <a\n b>", "REPLACE text keeps the LF of the capture");
	ok(h && rules_header_split(h->text, &name, &value) == 0 && strcmp(name, "X-Name") == 0 &&
	    strcmp(value, " <a\r\n b>") == 0, "header split: LF before a blank is folding again");
	if (h && name) {
		free(name);
		free(value);
	}
	ok(rules_header_split("X-A: one\ntwo\rthree", &name, &value) == 0 &&
	    strcmp(value, " one two three") == 0, "header split: other CR/LF become spaces");
	free(name);
	free(value);
	ok(rules_header_split("X-A:", &name, &value) == 0 && strcmp(name, "X-A") == 0 &&
	    strcmp(value, "") == 0, "header split: empty value");
	free(name);
	free(value);
	ok(rules_header_split("Bad Name: x", &name, &value) == -1 && name == NULL,
	    "header split: space in the name");
	ok(rules_header_split(": x", &name, &value) == -1, "header split: empty name");
	ok(rules_header_split("NoColon", &name, &value) == -1, "header split: no colon");
	rules_free(t);
}

struct lines {
	size_t	 n;		/* lines handed over */
	size_t	 total;		/* their bytes */
	size_t	 longest;
	char	 first[64];
	char	 last[64];
	struct rules *t;
	int	 hits;
};

static int
on_line(void *arg, const char *line, size_t len)
{
	struct lines *l = arg;

	if (l->n == 0)
		snprintf(l->first, sizeof(l->first), "%.*s", (int)(len < 60 ? len : 60), line);
	snprintf(l->last, sizeof(l->last), "%.*s", (int)(len < 60 ? len : 60), line);
	l->n++;
	l->total += len;
	if (len > l->longest)
		l->longest = len;
	if (l->t && rules_match(l->t, line, len, NULL, 0) != NULL)
		l->hits++;
	return 0;
}

/* Feed s in chunks of step bytes. */
static void
feed(struct rules_liner *lr, const char *s, size_t n, size_t step, struct lines *l)
{
	for (size_t o = 0; o < n; o += step)
		rules_liner_feed(lr, s + o, n - o < step ? n - o : step, on_line, l);
	rules_liner_finish(lr, on_line, l);
}

/* The body line splitter: CRLF split anywhere, 100 KB lines, pieces. */
static void
test_body_lines(void)
{
	static const size_t steps[] = { 1, 2, 3, 7, 4096, 65536, 1 << 20 };
	size_t n = 100 * 1024, blen;
	struct rules_liner lr;
	struct lines l;
	char *body;
	struct rules *t = parse(RULES_BODY, "/^a+BADWORD$/ REJECT\n/^line [0-9]$/ WARN\n");

	/* "line 1", a 100 KB line ending in BADWORD, an empty line, "line 2", no final CRLF */
	body = malloc(n + 64);
	strcpy(body, "line 1\r\n");
	blen = strlen(body);
	memset(body + blen, 'a', n);
	blen += n;
	memcpy(body + blen, "BADWORD\r\n\r\nline 2", 17);
	blen += 17;

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		char name[64];

		memset(&l, 0, sizeof(l));
		l.t = t;
		rules_liner_init(&lr, 0);
		feed(&lr, body, blen, steps[i], &l);
		snprintf(name, sizeof(name), "chunks of %zu: 4 lines, 100 KB one matched whole", steps[i]);
		ok(l.n == 4 && l.longest == n + 7 && l.hits == 3 && strcmp(l.first, "line 1") == 0 &&
		    strcmp(l.last, "line 2") == 0 && l.total == n + 7 + 12, name);
		rules_liner_free(&lr);
	}

	/* A limit of 1000 bytes: the long line comes in pieces, CR never alone. */
	memset(&l, 0, sizeof(l));
	rules_liner_init(&lr, 1000);
	feed(&lr, body, blen, 333, &l);
	is_int(l.longest, 1000, "pieces of at most max bytes");
	is_int(l.total, n + 7 + 12, "no byte lost or added in pieces");
	is_int(l.n, 3 + (n + 7 + 999) / 1000, "number of pieces");
	rules_liner_free(&lr);

	/* Exactly max bytes then CRLF, split between CR and LF. */
	memset(&l, 0, sizeof(l));
	rules_liner_init(&lr, 4);
	rules_liner_feed(&lr, "abcd\r", 5, on_line, &l);
	rules_liner_feed(&lr, "\nef\n", 4, on_line, &l);
	rules_liner_finish(&lr, on_line, &l);
	ok(l.n == 2 && l.total == 6 && strcmp(l.first, "abcd") == 0 && strcmp(l.last, "ef") == 0,
	    "a line of exactly max bytes, CR LF split: one line");
	rules_liner_free(&lr);

	free(body);
	rules_free(t);
}

/* Empty strings, matching errors, rules_load. */
static void
test_misc(void)
{
	struct rules *t = parse(RULES_BODY, "!/x/ REJECT\n");
	const char *tmp = getenv("TMPDIR");
	char warn[256], path[512];
	const struct rules_hit *h;
	char subject[64];
	int fd;

	snprintf(path, sizeof(path), "%s/test_rules.XXXXXX", tmp && *tmp ? tmp : "/tmp");

	ok(rules_match(t, "", 0, NULL, 0) == NULL, "an empty line never matches");
	rules_free(t);

	/*
	 * Catastrophic backtracking: the match limit ends it, the rule is
	 * skipped.  (PCRE2 alone: the Hyperscan prefilter knows the string
	 * cannot match and never lets PCRE2 try.)
	 */
	t = parse(RULES_BODY, "/^(a|aa)+$/ REJECT slow\n/a/ WARN next rule\n");
	memset(subject, 'a', 60);
	strcpy(subject + 60, "b");
	if (t != NULL)
		rules_use_prefilter(t, false);
	h = t ? rules_match(t, subject, strlen(subject), warn, sizeof(warn)) : NULL;
	ok(h && h->action == RULES_WARN, "a matching error skips the rule");
	ok(strncmp(warn, "t.rules:1: matching error, rule skipped: ", 41) == 0, "and is reported");
	diag("%s", warn);
	if (t != NULL && rules_prefilter_count(t) > 0) {
		rules_use_prefilter(t, true);
		h = rules_match(t, subject, strlen(subject), warn, sizeof(warn));
		ok(h && h->action == RULES_WARN && warn[0] == '\0',
		    "with the prefilter: the rule that cannot match is not tried, no error");
	}
	h = t ? rules_match(t, "aa", 2, warn, sizeof(warn)) : NULL;
	ok(h && h->action == RULES_REJECT && warn[0] == '\0', "warn cleared on the next match");
	rules_free(t);

	if ((fd = mkstemp(path)) >= 0) {
		static const char table[] = "# file\n/a/ OK\n\n/b/ BCC x@y\n";
		char want[600];

		ok(write(fd, table, sizeof(table) - 1) == (ssize_t)sizeof(table) - 1, "table written");
		close(fd);
		t = rules_load(path, RULES_HEADER, err, sizeof(err));
		snprintf(want, sizeof(want), "%s:4: BCC is not supported by smtpchain", path);
		ok(t == NULL && strcmp(err, want) == 0, "rules_load: FILE:LINE in errors");
		unlink(path);
	}
	t = rules_load("/nonexistent/header_checks", RULES_HEADER, err, sizeof(err));
	ok(t == NULL && strcmp(err, "/nonexistent/header_checks: No such file or directory") == 0,
	    "rules_load: a missing file");
	t = parse(RULES_HEADER, "");
	ok(t != NULL && rules_count(t) == 0 && match(t, "x: y") == NULL, "an empty table");
	is_str(t ? rules_name(t) : NULL, "t.rules", "rules_name");
	rules_free(t);
}

/*
 * Differential: the same tables and strings give the same verdicts with the
 * Hyperscan prefilter and with PCRE2 alone.  Patterns cover what Hyperscan
 * takes exactly, what it takes only as a prefilter (back-references,
 * lookarounds), what it refuses (empty matches, the x flag), every flag,
 * negation, if..endif and $N; strings are random text with words, URLs,
 * HTML, folded headers and hostile bytes (NUL, CR, LF, 8-bit).
 */
static const char *const diff_patterns[] = {
	"/viagra/", "/^Subject:.*\\bfree\\b/", "/^from:\\s*\"?(\\w+)/", "/x-mailer:.*(outlook|bat)/",
	"/https?:\\/\\/[^\\/\\s]*\\.(zip|top|xyz)\\//", "/<a\\s+href=\"([^\"]*)\"/", "/\\d{3}-\\d{4}/",
	"/^\\s*<iframe/", "/(\\w)\\1\\1/", "/foo(?=bar)/", "/(?<!un)lock/", "/^$/",
	"/b$/", "/b$/E", "/^line$/m", "/a.b/", "/a.b/s", "/A.B/i", "/Cap/i", "/ c a p /x",
	"/word/A", "/^(\\w+)@(\\w+)\\.com$/", "/(a+)+$/", "/[\\x80-\\xff]{2}/", "/\\x00/",
	"/\\r/", "/\\n\\t/", "/(?i)MiXeD/", "/(?-i)lower/", "/o{2,}/U", "/click here|unsubscribe/",
	"/\\bprize\\b.*\\bclaim\\b/", "/%[0-9a-f]{2}/", "/&#x?[0-9a-f]+;/", "/=\\?utf-8\\?[bq]\\?/",
	"/[[:upper:]]{5}/", "/\\Qa.b\\E/", "/(?s)x.y/", "/\\Aabc/", "/xyz\\z/", "/ab\\Z/",
	"/a*/", "/^/m",	/* match any string: last, or the rules after them never decide */
};

static const char *const diff_words[] = {
	"free", "viagra", "Subject: ", "From: \"bob", "x-mailer: The Bat", "http://a.example.xyz/",
	"https://bit.ly/abc123", "<a href=\"http://x/\">", "555-1234", "<iframe src=", "aaa", "foobar",
	"unlock", "lock", "line", "b", "a\nb", "A\nB", "CAP", "cap", "word", "user@host.com", "\xe9\xe8",
	"\r", "\n\t", "MIXED", "LOWER", "ooo", "click here", "prize", "claim", "%2f", "&#x41;",
	"=?utf-8?q?", "HELLO", "a.b", "xyz", "abc", "ab\n", " ", "  ", "<p>", "</html>", "lorem",
};

static uint64_t diff_seed = 0x1234567887654321ULL;

static uint32_t
diff_rng(uint32_t n)
{
	diff_seed ^= diff_seed >> 12;
	diff_seed ^= diff_seed << 25;
	diff_seed ^= diff_seed >> 27;
	return (uint32_t)((diff_seed * 0x2545F4914F6CDD1DULL) >> 32) % n;
}

/* A random string of words and bytes into buf (at most max); its length. */
static size_t
diff_string(char *buf, size_t max)
{
	size_t len = 0, n = 1 + diff_rng(12);

	while (n-- > 0 && len + 40 < max) {
		if (diff_rng(6) == 0) {
			buf[len++] = (char)diff_rng(256);
		} else {
			const char *w = diff_words[diff_rng(sizeof(diff_words) / sizeof(diff_words[0]))];

			memcpy(buf + len, w, strlen(w));
			len += strlen(w);
		}
		if (diff_rng(3) == 0)
			buf[len++] = ' ';
	}
	return len;
}

/* Whether t matches s the same with the prefilter and without. */
static bool
diff_same(struct rules *t, const char *s, size_t len)
{
	const struct rules_hit *h;
	char warn[256], text[600];
	unsigned line;
	int action;

	rules_use_prefilter(t, false);
	h = rules_match(t, s, len, warn, sizeof(warn));
	if (warn[0] != '\0')
		return true;	/* a matching error: the prefilter may know better */
	line = h ? h->line : 0;
	action = h ? (int)h->action : -1;
	snprintf(text, sizeof(text), "%s", h ? h->text : "");
	rules_use_prefilter(t, true);
	h = rules_match(t, s, len, warn, sizeof(warn));
	return (h ? h->line : 0) == line && (h ? (int)h->action : -1) == action &&
	    strcmp(h ? h->text : "", text) == 0;
}

static void
test_prefilter_differential(void)
{
	static char table[16384], buf[1024];
	size_t np = sizeof(diff_patterns) / sizeof(diff_patterns[0]), o = 0, len;
	size_t differ = 0, hits = 0, tables = 0, prefiltered = 0;
	struct rules *t, *alone[64];
	char one[256];

	/* Each pattern alone (plain and negated), and all in one table in order. */
	for (size_t i = 0; i < np; i++) {
		snprintf(one, sizeof(one), "%s WARN rule %zu\n!%s INFO not %zu\n",
		    diff_patterns[i], i, diff_patterns[i], i);
		alone[i] = parse(RULES_HEADER, one);
		o += (size_t)snprintf(table + o, sizeof(table) - o, "%s%s WARN all %zu\n",
		    i % 7 == 3 ? "if !/zzz/\n" : "", diff_patterns[i], i);
		if (i % 7 == 3)
			o += (size_t)snprintf(table + o, sizeof(table) - o, "endif\n");
	}
	o += (size_t)snprintf(table + o, sizeof(table) - o,
	    "/(\\w+)@(\\w+)/ REJECT 550 5.7.1 no $2 for $1\n"
	    "if /a/\n/(b+)(c)?/ WARN in if: $1[$2]\nif !/q/\n/d/ INFO nested\nendif\nendif\n");
	t = parse(RULES_BODY, table);
	ok(t != NULL && np <= 64, "differential: the tables load");
	if (t == NULL)
		return;
#ifdef HAVE_HYPERSCAN
	ok(rules_prefilter_count(t) > 0, "differential: the prefilter holds rules");
#endif
	diag("prefilter holds %zu of the table's patterns (%zu rules and their ifs)",
	    rules_prefilter_count(t), rules_count(t));
	for (int iter = 0; iter < 20000; iter++) {
		len = diff_string(buf, sizeof(buf));
		if (len == 0)
			continue;
		differ += !diff_same(t, buf, len);
		hits += rules_match(t, buf, len, NULL, 0) != NULL;
		if (!diff_same(alone[iter % np], buf, len)) {
			if (differ++ < 5)
				diag("rule %s differs on \"%.*s\"", diff_patterns[iter % np], (int)len, buf);
		}
	}
	for (size_t i = 0; i < np; i++) {
		if (alone[i] != NULL) {
			tables++;
			prefiltered += rules_prefilter_count(alone[i]) > 0;
		}
		rules_free(alone[i]);
	}
	diag("%zu of %zu single-pattern tables prefiltered; %zu of 20000 strings hit",
	    prefiltered, tables, hits);
	is_int(tables, np, "differential: every pattern loads");
	is_int(differ, 0, "differential: the same verdicts with and without the prefilter");
	rules_free(t);
}

/*
 * Body lines many at a time (rules_body_feed): the calls of fn, one by
 * one, against the line splitter with rules_match on each line, with PCRE2
 * alone and with the prefilter.  A call is logged as one text line: the
 * body line, the rule's line, action and text, the warning; a REJECT or
 * DISCARD stops the body, as in the module.
 */
struct calls {
	char	*log;
	size_t	 len, cap;
	size_t	 n;
	struct rules *t;	/* per-line reference: the table matched */
};

static void
calls_add(struct calls *c, const char *line, size_t len, const struct rules_hit *h,
    const char *warn)
{
	char head[700];
	int hn;

	hn = snprintf(head, sizeof(head), "%u %d [%s] {%s} ", h ? h->line : 0,
	    h ? (int)h->action : -1, h ? h->text : "", warn);
	if (c->len + (size_t)hn + len + 3 > c->cap) {
		c->cap = (c->len + (size_t)hn + len + 3) * 2;
		c->log = realloc(c->log, c->cap);
	}
	memcpy(c->log + c->len, head, (size_t)hn);
	c->len += (size_t)hn;
	memcpy(c->log + c->len, line, len);
	c->len += len;
	c->log[c->len++] = '\n';
	c->log[c->len] = '\0';
	c->n++;
}

/* A line of the log that is not a call: a call's result. */
static void
calls_raw(struct calls *c, const char *s)
{
	size_t n = strlen(s);

	if (c->len + n + 2 > c->cap) {
		c->cap = (c->len + n + 2) * 2;
		c->log = realloc(c->log, c->cap);
	}
	memcpy(c->log + c->len, s, n);
	c->len += n;
	c->log[c->len++] = '\n';
	c->log[c->len] = '\0';
}

static int
calls_stop(const struct rules_hit *h)
{
	return h != NULL && (h->action == RULES_REJECT || h->action == RULES_DISCARD);
}

/* rules_hit_fn: log the call. */
static int
on_hit(void *arg, const char *line, size_t len, const struct rules_hit *h, const char *warn)
{
	calls_add(arg, line, len, h, warn);
	return calls_stop(h);
}

/* rules_line_fn: rules_match the line, log as rules_body_feed would call. */
static int
on_line_match(void *arg, const char *line, size_t len)
{
	struct calls *c = arg;
	const struct rules_hit *h;
	char warn[256];

	h = rules_match(c->t, line, len, warn, sizeof(warn));
	if (h == NULL && warn[0] == '\0')
		return 0;
	calls_add(c, line, len, h, warn);
	return calls_stop(h);
}

/*
 * Feed body[0..n) in the chunks given (sizes, nchunks), batched (mode 0)
 * or line by line (mode 1); the log of calls goes to c, each call's result
 * too.  Stops after a call returns non-zero, as the module does.
 */
static void
body_run(struct rules *t, int mode, const char *body, size_t n, const size_t *chunks,
    size_t nchunks, size_t max, struct calls *c)
{
	struct rules_liner lr;
	size_t o = 0;
	int rc = 0;
	char r[32];

	memset(c, 0, sizeof(*c));
	c->t = t;
	rules_liner_init(&lr, max);
	for (size_t i = 0; o < n && rc == 0; i++) {
		size_t k = chunks[i % nchunks];

		if (k > n - o)
			k = n - o;
		rc = mode == 0 ? rules_body_feed(t, &lr, body + o, k, on_hit, c) :
		    rules_liner_feed(&lr, body + o, k, on_line_match, c);
		snprintf(r, sizeof(r), "= %d", rc);
		calls_raw(c, r);
		o += k;
	}
	if (rc == 0) {
		rc = mode == 0 ? rules_body_finish(t, &lr, on_hit, c) :
		    rules_liner_finish(&lr, on_line_match, c);
		snprintf(r, sizeof(r), "=end %d", rc);
		calls_raw(c, r);
	}
	rules_liner_free(&lr);
}

/* The first differing line of two logs, for a diagnostic. */
static void
calls_diff(const struct calls *a, const struct calls *b)
{
	size_t i = 0, ls = 0;
	int na, nb;

	while (i < a->len && i < b->len && a->log[i] == b->log[i])
		if (a->log[i++] == '\n')
			ls = i;
	na = (int)strcspn(a->log + ls, "\n");
	nb = (int)strcspn(b->log + ls, "\n");
	diag("per line: %.*s", na < 200 ? na : 200, a->log + ls);
	diag("batched:  %.*s", nb < 200 ? nb : 200, b->log + ls);
}

/*
 * Whether batched, line by line with the prefilter and line by line with
 * PCRE2 alone all make the same calls.
 */
static bool
body_same(struct rules *t, const char *body, size_t n, const size_t *chunks, size_t nchunks,
    size_t max, size_t *ncalls)
{
	struct calls batched, line, alone;
	bool same;

	rules_use_prefilter(t, true);
	body_run(t, 0, body, n, chunks, nchunks, max, &batched);
	body_run(t, 1, body, n, chunks, nchunks, max, &line);
	rules_use_prefilter(t, false);
	body_run(t, 1, body, n, chunks, nchunks, max, &alone);
	rules_use_prefilter(t, true);
	same = batched.len == alone.len && memcmp(batched.log, alone.log, alone.len) == 0 &&
	    line.len == alone.len && memcmp(line.log, alone.log, alone.len) == 0;
	if (!same)
		calls_diff(&alone, batched.len == alone.len &&
		    memcmp(batched.log, alone.log, alone.len) == 0 ? &line : &batched);
	*ncalls += alone.n;
	free(batched.log);
	free(line.log);
	free(alone.log);
	return same;
}

/* Cases written out: the edges of lines in a batch. */
static void
test_body_batch(void)
{
	static const size_t whole[] = { 1 << 20 }, bytes[] = { 1 };
	struct rules *t = parse(RULES_BODY,
	    "/^b/ WARN starts with b\n"
	    "/a$/ WARN ends with a\n"
	    "/\\bcd\\b/ WARN word cd\n"
	    "/\\Aef/ WARN ef at the start\n"
	    "/gh\\z/ WARN gh at the end\n"
	    "/x\\s+y/ WARN x then y\n"
	    "/(?<!q)rs/ INFO rs\n"
	    "/stop/ REJECT stop\n"
	    "/(n+)/ INFO $1\n"
	    "/(?-m)^ij/ WARN ij, m off\n"
	    "/(?^)kl$/ WARN kl, options reset\n");
	static const char body[] =
	    "xa\r\nb\r\n\r\nab\ncd\r\nxcd cdx\r\n" "ef\r\nxef\r\n" "gh\r\nghx\r\n" "x\r\ny\r\n"
	    "rs\r\nqrs\r\n" "a\r\r\n" "ij\r\nkl\r\n" "nnn\r\nstop\r\nb\r\n";
	struct calls c;
	struct rules_stats st0, st1;
	size_t ncalls = 0;
	char *big;

	ok(t != NULL, "body batch: the table loads");
	if (t == NULL)
		return;
	body_run(t, 0, body, sizeof(body) - 1, whole, 1, 0, &c);
	/* a$ at a line's end, ^ and \A at its start, \b at both; not x\s+y across
	 * lines, nor a$ before a CR left in the line; ^ and $ with multi-line
	 * mode turned off inside the pattern (a line in the middle of a batch:
	 * such a pattern stays out of the batch's database); the REJECT stops. */
	is_str(c.log,
	    "2 5 [ends with a] {} xa\n1 5 [starts with b] {} b\n3 5 [word cd] {} cd\n"
	    "4 5 [ef at the start] {} ef\n5 5 [gh at the end] {} gh\n7 6 [rs] {} rs\n"
	    "10 5 [ij, m off] {} ij\n11 5 [kl, options reset] {} kl\n"
	    "9 6 [nnn] {} nnn\n8 2 [stop] {} stop\n= 1\n", "body batch: the calls, in order");
	free(c.log);
	ok(body_same(t, body, sizeof(body) - 1, whole, 1, 0, &ncalls), "body batch: one chunk");
	ok(body_same(t, body, sizeof(body) - 1, bytes, 1, 0, &ncalls), "body batch: byte by byte");
	ok(body_same(t, body, sizeof(body) - 1, whole, 1, 3, &ncalls), "body batch: pieces of 3");

	/* 3,000 lines in one chunk: a few scans, not one per line. */
	big = malloc(3000 * 8 + 1);
	for (int i = 0; i < 3000; i++)
		memcpy(big + i * 8, i == 2999 ? "xx cd\r\n\n" : "xxxxxx\r\n", 8);
	rules_get_stats(t, &st0);
	body_run(t, 0, big, 3000 * 8, whole, 1, 0, &c);
	rules_get_stats(t, &st1);
#ifdef HAVE_HYPERSCAN
	ok(st1.scans - st0.scans <= 4, "body batch: 3,000 lines in at most 4 scans");
	diag("3,000 lines: %zu scans, %zu matches reported, %zu PCRE2 runs", st1.scans - st0.scans,
	    st1.reports - st0.reports, st1.pcre2 - st0.pcre2);
#endif
	is_str(c.log, "3 5 [word cd] {} xx cd\n= 0\n=end 0\n", "body batch: the last line found");
	free(c.log);
	free(big);
	rules_free(t);
}

/*
 * Random and adversarial bodies through random tables: batched, line by
 * line with the prefilter and with PCRE2 alone give the same calls.
 * Patterns: anchors and \b at the lines' edges, subject edges (\A, \z,
 * \Z), lookarounds, what could match across lines (\s, [^x], \n, . with
 * s), empty matches; every body_checks action, negation, if..endif, $N.
 * Bodies: CRLF, LF, bare CR, empty lines, lines at the liner's limit and
 * over it, longer than a batch's line, more lines and bytes than a batch,
 * fed in random chunks.
 */
static const char *const batch_patterns[] = {
	"/^b/", "/a$/", "/^ab$/", "/\\bab/", "/ab\\b/", "/\\Bb/", "/b\\B/", "/\\Aa/", "/a\\z/",
	"/b\\Z/", "/a\\s+b/", "/a[^x]b/", "/a\\nb/", "/a.b/", "/a.b/s", "/a$\\n^b/m", "/^a/m",
	"/b$/m", "/(?<=a)b/", "/a(?=b)/", "/(?<!\\w)ab/", "/^$/", "/x*/", "/(a)(b)?c/", "/c{3}/",
	"/\\x00/", "/\\r/", "/[\\x80-\\xff]/", "/free/", "/https?:\\/\\/[^\\s]*@/", "/^\\s*<p>/",
	"/b$/E", "/ab/A", "/ A B /x", "/(?i)AB/", "/(?-i)ab/", "/ab+?c/U", "/\\Qa.b\\E/",
	"/\\d{2,}/", "/^.{20,}$/", "/(\\w+)@(\\w+)/", "/viagra.*order/", "/(?s)a.c/",
	"/(?-m)^b/", "/(?i-m:a$)/", "/(?^)^ab/",
};
static const char *const batch_actions[] = {
	"REJECT rejected $0", "DISCARD", "HOLD held", "WARN w $1", "INFO i", "DUNNO", "OK",
	"REJECT 451 4.7.1 later", "WARN", "INFO $0 and $1",
};
static const char *const batch_words[] = {
	"a", "b", "ab", "ba", "c", "abc", "ccc", "x", " ", "\t", "free", "viagra", "order", "@",
	"http://h/p@", "<p>", "12", "a.b", "A", "B", "\xe9", "\x00", "\r", "\r\n", "\n", "\n\n",
	"\r\n\r\n", "user@host",
};

/* A random table of a few rules; its text into buf. */
static void
batch_table(char *buf, size_t size)
{
	size_t o = 0, n = 1 + diff_rng(6), depth = 0;
	size_t np = sizeof(batch_patterns) / sizeof(batch_patterns[0]);
	size_t na = sizeof(batch_actions) / sizeof(batch_actions[0]);

	buf[0] = '\0';
	for (size_t i = 0; i < n && o + 200 < size; i++) {
		const char *p = batch_patterns[diff_rng((uint32_t)np)];
		const char *a = batch_actions[diff_rng((uint32_t)na)];
		bool neg = diff_rng(6) == 0;

		if (diff_rng(8) == 0 && depth < 2) {
			o += (size_t)snprintf(buf + o, size - o, "if %s%s\n", diff_rng(3) ? "" : "!", p);
			depth++;
			continue;
		}
		if (neg && strchr(a, '$') != NULL)
			a = "WARN negated";
		o += (size_t)snprintf(buf + o, size - o, "%s%s %s\n", neg ? "!" : "", p, a);
		if (depth > 0 && diff_rng(3) == 0) {
			o += (size_t)snprintf(buf + o, size - o, "endif\n");
			depth--;
		}
	}
	while (depth-- > 0)
		o += (size_t)snprintf(buf + o, size - o, "endif\n");
}

/* A random body into buf (at most max); its length. */
static size_t
batch_body(char *buf, size_t max)
{
	size_t len = 0, n = 1 + diff_rng(diff_rng(10) == 0 ? 4000 : 60);
	size_t nw = sizeof(batch_words) / sizeof(batch_words[0]);

	while (n-- > 0 && len + 20000 < max) {
		uint32_t k = diff_rng(40);

		if (k == 0) {		/* a long line, longer than a batch line at times */
			size_t l = diff_rng(3) == 0 ? 16 * 1024 + diff_rng(3) : 1 + diff_rng(300);

			memset(buf + len, diff_rng(2) ? 'c' : 'a', l);
			len += l;
		} else if (k < 4) {
			buf[len++] = (char)diff_rng(256);
		} else {
			const char *w = batch_words[diff_rng((uint32_t)nw)];
			size_t l = w[0] == '\0' ? 1 : strlen(w);

			memcpy(buf + len, w, l);
			len += l;
		}
		if (diff_rng(4) == 0) {
			memcpy(buf + len, "\r\n", 2);
			len += 2;
		}
	}
	return len;
}

static void
test_body_batch_differential(void)
{
	static char table[4096];
	static const size_t maxes[] = { 0, 0, 0, 5, 64 };
	size_t bodymax = 300 * 1024, differ = 0, tables = 0, ncalls = 0;
	char *body = malloc(bodymax);
	struct rules_stats st = { 0 };

	for (int iter = 0; iter < 600; iter++) {
		struct rules *t;
		size_t len, chunks[4];

		batch_table(table, sizeof(table));
		t = rules_parse(table, strlen(table), "t.rules", RULES_BODY, err, sizeof(err));
		if (t == NULL)
			continue;	/* $1 for a pattern without a group */
		tables++;
		for (int b = 0; b < 4; b++) {
			len = batch_body(body, bodymax);
			for (int i = 0; i < 4; i++)
				chunks[i] = diff_rng(4) == 0 ? 65536 : 1 + diff_rng(diff_rng(2) ? 100 : 20000);
			if (!body_same(t, body, len, chunks, 4, maxes[diff_rng(5)], &ncalls)) {
				if (differ++ < 5)
					diag("differs with the table:\n%s", table);
			}
		}
		{
			struct rules_stats s;

			rules_get_stats(t, &s);
			st.scans += s.scans;
			st.reports += s.reports;
			st.pcre2 += s.pcre2;
		}
		rules_free(t);
	}
	diag("%zu tables, 4 bodies each: %zu calls; %zu scans, %zu matches reported, %zu PCRE2 runs",
	    tables, ncalls, st.scans, st.reports, st.pcre2);
	ok(ncalls > 1000, "body batch differential: rules applied, and often");
	is_int(differ, 0, "body batch differential: the same calls batched, line by line, PCRE2 alone");
	free(body);
}

/*
 * Databases compiled in a child (rules_compile_apart): the same rules
 * prefiltered and the same calls as compiled in place, for a body table
 * and a header table.
 */
static void
test_compile_apart(void)
{
	static const size_t chunks[] = { 4096, 70000, 1 };
	static char table[4096];
	size_t ncalls = 0, same = 0, loaded = 0, len;
	struct rules *here, *apart;
	char *body = malloc(300 * 1024);

	diff_seed = 42;
	for (int iter = 0; iter < 20; iter++) {
		batch_table(table, sizeof(table));
		rules_compile_apart(false);
		here = rules_parse(table, strlen(table), "t.rules", RULES_BODY, err, sizeof(err));
		rules_compile_apart(true);
		apart = rules_parse(table, strlen(table), "t.rules", RULES_BODY, err, sizeof(err));
		rules_compile_apart(false);
		if (here == NULL || apart == NULL) {
			same += here == NULL && apart == NULL;	/* $1 without a group */
			rules_free(here);
			rules_free(apart);
			continue;
		}
		loaded++;
		len = batch_body(body, 300 * 1024);
		same += rules_prefilter_count(here) == rules_prefilter_count(apart) &&
		    body_same(apart, body, len, chunks, 3, 0, &ncalls);
		rules_free(here);
		rules_free(apart);
	}
	ok(loaded >= 5, "compiled apart: tables loaded");
	is_int(same, 20, "compiled apart: the same rules prefiltered, the same calls (or refused alike)");
	rules_compile_apart(true);
	here = parse(RULES_HEADER, "/^Subject:.*\\bfree\\b/ REJECT\n/^From: a(x+)y/ WARN $1\n");
	rules_compile_apart(false);
#ifdef HAVE_HYPERSCAN
	is_int(here ? rules_prefilter_count(here) : 0, 2, "compiled apart: a header table's database");
#endif
	is_int(action_of(here, "Subject: get it free now"), RULES_REJECT, "compiled apart: a header matches");
	is_str(text_of(here, "From: axxy"), "xx", "compiled apart: $1");
	rules_free(here);
	free(body);
}

/* Each group of tests prints its own TAP lines. */
int
main(void)
{
	test_content_actions();
	test_body_actions();
	test_access_actions();
	test_errors();
	test_flags();
	test_negation_and_if();
	test_continuation();
	test_substitution();
	test_reply_text();
	test_headers();
	test_body_lines();
	test_misc();
	test_prefilter_differential();
	test_body_batch();
	test_body_batch_differential();
	test_compile_apart();
	return done_testing();
}
