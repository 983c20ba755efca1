/*
 * test_ehlo.c - unit tests for ehlo.c: reading a backend's EHLO list and
 * rewriting it for the client, on the lists real servers send (Postfix 3.7,
 * Exim 4.96) and on edge cases.
 *
 * Each rewrite is checked byte for byte, then its output must be one
 * complete 250 reply for smtp_reply_scan, and the client caps must match
 * what the output says.
 */
#include <stdlib.h>
#include <string.h>

#include "ehlo.h"
#include "smtp.h"
#include "tap.h"

#define POSTFIX \
	"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n" \
	"250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n" \
	"250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"

/* Postfix with the proxy allowed to send XCLIENT and XFORWARD. */
#define POSTFIX_X \
	"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n" \
	"250-ETRN\r\n250-STARTTLS\r\n250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT\r\n" \
	"250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n" \
	"250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"

/* What the proxy shows for POSTFIX (and POSTFIX_X) with no policy. */
#define POSTFIX_OUT \
	"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n" \
	"250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n" \
	"250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"

#define EXIM \
	"250-host Hello x [127.0.0.1]\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n" \
	"250-PIPELINING\r\n250-PIPECONNECT\r\n250-CHUNKING\r\n250-STARTTLS\r\n" \
	"250-PRDR\r\n250 HELP\r\n"

#define EXIM_OUT \
	"250-host Hello x [127.0.0.1]\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n" \
	"250-PIPELINING\r\n250-CHUNKING\r\n250 HELP\r\n"

/* The output is one complete 250 reply, and the caps describe it. */
static void
check_output_valid(const char *out, int n, const struct ehlo_caps *client, const char *name)
{
	struct ehlo_caps again;
	size_t replylen = 0;
	int code = 0;
	char label[256];

	snprintf(label, sizeof(label), "%s: output is one complete 250 reply", name);
	ok(n > 0 && smtp_reply_scan(out, (size_t)n, &replylen, &code) == 1 &&
	    replylen == (size_t)n && code == 250, label);
	ehlo_caps_parse(out, (size_t)n, &again);
	snprintf(label, sizeof(label), "%s: client caps are the output's", name);
	ok(memcmp(&again, client, sizeof(again)) == 0, label);
}

/* Rewrite reply with pol; compare with want (NULL: must fail). */
static int
check_rewrite(const char *reply, const struct ehlo_policy *pol, const char *want,
    struct ehlo_caps *client, const char *name)
{
	char out[4096], *in;
	size_t len = strlen(reply), wlen;
	char label[256];
	int n;

	in = malloc(len ? len : 1);
	if (in == NULL)
		abort();
	memcpy(in, reply, len);
	n = ehlo_rewrite(in, len, pol, out, sizeof(out), client);
	free(in);
	if (want == NULL) {
		snprintf(label, sizeof(label), "%s: refused", name);
		is_int(n, -1, label);
		return n;
	}
	wlen = strlen(want);
	snprintf(label, sizeof(label), "%s: length", name);
	is_int(n, (long long)wlen, label);
	snprintf(label, sizeof(label), "%s: text", name);
	is_mem(out, n > 0 ? (size_t)n : 0, want, wlen, label);
	if (n > 0)
		check_output_valid(out, n, client, name);
	return n;
}

/* Reading the backend's lists. */
static void
test_caps_parse(void)
{
	struct ehlo_caps c;
	const char *r;

	ehlo_caps_parse(POSTFIX, strlen(POSTFIX), &c);
	ok(c.pipelining && c.chunking && c.smtputf8 && c.eightbitmime && c.dsn &&
	    c.enhancedstatuscodes && c.starttls, "Postfix: the flags");
	ok(c.size, "Postfix: SIZE");
	is_int(c.size_limit, 10240000, "Postfix: SIZE value");
	ok(!c.auth && !c.xclient && !c.xforward, "Postfix: no AUTH, XCLIENT, XFORWARD");

	ehlo_caps_parse(POSTFIX_X, strlen(POSTFIX_X), &c);
	ok(c.xclient && c.xforward, "Postfix with XCLIENT and XFORWARD");

	ehlo_caps_parse(EXIM, strlen(EXIM), &c);
	ok(c.pipelining && c.chunking && c.eightbitmime && c.starttls, "Exim: the flags");
	ok(!c.smtputf8 && !c.dsn && !c.enhancedstatuscodes, "Exim: not offered");
	is_int(c.size_limit, 52428800, "Exim: SIZE value");

	r = "250-x\r\n250-AUTH=LOGIN PLAIN\r\n250-auth login\r\n250-size\r\n250 pipelining\r\n";
	ehlo_caps_parse(r, strlen(r), &c);
	ok(c.auth, "AUTH=LOGIN is AUTH");
	ok(c.size, "lower-case size");
	is_int(c.size_limit, 0, "bare SIZE: no limit");
	ok(c.pipelining, "lower-case pipelining");

	r = "250 host\r\n";
	ehlo_caps_parse(r, strlen(r), &c);
	ok(!c.pipelining && !c.size && !c.chunking, "one line: nothing offered");

	r = "250-PIPELINING\r\n250 x\r\n";
	ehlo_caps_parse(r, strlen(r), &c);
	ok(!c.pipelining, "the first line is the domain, not a keyword");

	r = "250-x\r\n250-SIZE 99999999999999999999999\r\n250 DSN\r\n";
	ehlo_caps_parse(r, strlen(r), &c);
	ok(c.size && c.size_limit == 0, "SIZE past 64 bits: no limit");
	r = "250-x\r\n250-SIZE 18446744073709551615\r\n250 DSN\r\n";
	ehlo_caps_parse(r, strlen(r), &c);
	ok(c.size_limit == UINT64_MAX, "SIZE of exactly 2^64-1");
	r = "250-x\r\n250-SIZE 18446744073709551616\r\n250 DSN\r\n";
	ehlo_caps_parse(r, strlen(r), &c);
	ok(c.size && c.size_limit == 0, "SIZE of 2^64: no limit");
	r = "250-x\r\n250-SIZE -5\r\n250-SIZE 7\r\n250 DSN\r\n";
	ehlo_caps_parse(r, strlen(r), &c);
	ok(c.size && c.size_limit == 0, "SIZE -5: no limit, the first SIZE counts");
	r = "250-x\r\n250-SIZE 12abc\r\n250 DSN\r\n";
	ehlo_caps_parse(r, strlen(r), &c);
	ok(c.size && c.size_limit == 0, "SIZE 12abc: no limit");
	r = "250-x\r\n250-SIZE   4096  \r\n250 DSN\r\n";
	ehlo_caps_parse(r, strlen(r), &c);
	is_int(c.size_limit, 4096, "SIZE with extra spaces");

	/* Garbage does not crash and offers nothing it should not. */
	ehlo_caps_parse("", 0, &c);
	ok(!c.size && !c.pipelining, "empty input");
	r = "250-x\n250-PIPELINING";
	ehlo_caps_parse(r, strlen(r), &c);
	ok(c.pipelining, "bare LF and no final CRLF still read");
	r = "250-x\r\n550-PIPELINING\r\n250 DSN\r\n";
	ehlo_caps_parse(r, strlen(r), &c);
	ok(!c.pipelining && c.dsn, "a line with another code is skipped");
}

/* ehlo_keyword_in: the keyword ends at a space or '='. */
static void
test_keyword_in(void)
{
	static const char *const list[] = { "SIZE", "AUTH", "X-FOO 1" };

	ok(ehlo_keyword_in("SIZE", 4, list, 3), "exact");
	ok(ehlo_keyword_in("size 100", 8, list, 3), "case and value");
	ok(ehlo_keyword_in("AUTH=LOGIN", 10, list, 3), "keyword=value");
	ok(ehlo_keyword_in("x-foo", 5, list, 3), "list entries with parameters");
	ok(!ehlo_keyword_in("SIZ", 3, list, 3), "prefix does not match");
	ok(!ehlo_keyword_in("SIZES", 5, list, 3), "longer does not match");
	ok(!ehlo_keyword_in("SIZE", 4, list, 0), "empty list");
	ok(!ehlo_keyword_in("SIZE", 4, NULL, 3), "NULL list");
	ok(!ehlo_keyword_in("", 0, list, 3), "empty keyword");
	ok(ehlo_keyword_in("SIZE 100", 4, list, 3), "length bounds the keyword");
}

/* Policies on Postfix's and Exim's lists. */
static void
test_rewrite_real(void)
{
	static const char *const rm_vrfy[] = { "VRFY", "etrn" };
	static const char *const rm_size[] = { "SIZE" };
	static const char *const add_dsn[] = { "DSN" };
	static const char *const add_new[] = { "X-EXAMPLE yes", "DELIVERBY 240" };
	static const char *const add_replace[] = { "ENHANCEDSTATUSCODES", "pipelining" };
	static const char *const add_never[] = { "STARTTLS", "AUTH PLAIN", "XCLIENT ADDR", "BURL imap" };
	static const char *const add_pipeconnect[] = { "PIPECONNECT" };
	struct ehlo_policy pol;
	struct ehlo_caps c;

	memset(&pol, 0, sizeof(pol));
	check_rewrite(POSTFIX, &pol, POSTFIX_OUT, &c, "Postfix, no policy");
	ok(!c.starttls, "Postfix: STARTTLS not shown");
	ok(c.pipelining && c.chunking && c.smtputf8 && c.dsn, "Postfix: client caps");
	is_int(c.size_limit, 10240000, "Postfix: client SIZE");
	check_rewrite(POSTFIX, NULL, POSTFIX_OUT, &c, "Postfix, NULL policy");
	check_rewrite(POSTFIX_X, &pol, POSTFIX_OUT, &c, "Postfix with XCLIENT/XFORWARD");
	ok(!c.xclient && !c.xforward, "XCLIENT and XFORWARD never shown");

	check_rewrite(EXIM, &pol, EXIM_OUT, &c, "Exim, no policy");
	ok(c.pipelining && c.chunking && c.eightbitmime && !c.starttls, "Exim: client caps");

	/* Removal */
	pol.remove = rm_vrfy;
	pol.nremove = 2;
	check_rewrite(POSTFIX, &pol,
	    "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
	    "250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n", &c, "remove VRFY and etrn");

	/* Add: present keeps one line, absent is appended in order. */
	memset(&pol, 0, sizeof(pol));
	pol.add = add_dsn;
	pol.nadd = 1;
	check_rewrite(POSTFIX, &pol, POSTFIX_OUT, &c, "add DSN when present: one DSN");
	check_rewrite(EXIM, &pol,
	    "250-host Hello x [127.0.0.1]\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
	    "250-PIPELINING\r\n250-CHUNKING\r\n250-HELP\r\n250 DSN\r\n", &c, "add DSN to Exim");
	ok(c.dsn, "added DSN in client caps");
	pol.add = add_new;
	pol.nadd = 2;
	check_rewrite(EXIM, &pol,
	    "250-host Hello x [127.0.0.1]\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
	    "250-PIPELINING\r\n250-CHUNKING\r\n250-HELP\r\n250-X-EXAMPLE yes\r\n250 DELIVERBY 240\r\n",
	    &c, "add two new keywords");

	/* Replace in place. */
	pol.add = add_replace;
	pol.nadd = 2;
	check_rewrite(POSTFIX, &pol,
	    "250-mx.example\r\n250-pipelining\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
	    "250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
	    "250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n", &c, "replace in place");
	pol.add = add_new;
	pol.nadd = 2;
	check_rewrite("250-h\r\n250-DELIVERBY 100\r\n250 DSN\r\n", &pol,
	    "250-h\r\n250-DELIVERBY 240\r\n250-DSN\r\n250 X-EXAMPLE yes\r\n", &c,
	    "replace parameters in place, append the rest");

	/* A keyword not carried, added by the operator, replaces the backend's line. */
	pol.add = add_pipeconnect;
	pol.nadd = 1;
	check_rewrite(EXIM, &pol,
	    "250-host Hello x [127.0.0.1]\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
	    "250-PIPELINING\r\n250-PIPECONNECT\r\n250-CHUNKING\r\n250 HELP\r\n", &c,
	    "operator adds PIPECONNECT");

	/* EHLO_NEVER cannot be added. */
	pol.add = add_never;
	pol.nadd = 4;
	check_rewrite(POSTFIX, &pol, POSTFIX_OUT, &c, "NEVER keywords cannot be added");
	ok(!c.starttls && !c.auth && !c.xclient, "NEVER keywords not in client caps");

	/* SIZE cap */
	memset(&pol, 0, sizeof(pol));
	pol.size = 1048576;
	check_rewrite(POSTFIX, &pol,
	    "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1048576\r\n250-VRFY\r\n"
	    "250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
	    "250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n", &c, "SIZE capped");
	is_int(c.size_limit, 1048576, "SIZE capped: client caps");
	pol.size = 20000000;
	check_rewrite(POSTFIX, &pol, POSTFIX_OUT, &c, "cap above the backend's SIZE");
	is_int(c.size_limit, 10240000, "cap above: client keeps the backend's");
	pol.size = 0;
	check_rewrite(POSTFIX, &pol, POSTFIX_OUT, &c, "cap 0 keeps the backend's SIZE");
	pol.size = 1048576;
	check_rewrite("250-x\r\n250-PIPELINING\r\n250 DSN\r\n", &pol,
	    "250-x\r\n250-PIPELINING\r\n250-DSN\r\n250 SIZE 1048576\r\n", &c,
	    "backend without SIZE: SIZE cap appended");
	ok(c.size && c.size_limit == 1048576, "appended SIZE in client caps");
	check_rewrite("250-x\r\n250-SIZE\r\n250 DSN\r\n", &pol,
	    "250-x\r\n250-SIZE 1048576\r\n250 DSN\r\n", &c, "bare SIZE with a cap");
	pol.remove = rm_size;
	pol.nremove = 1;
	check_rewrite(POSTFIX, &pol,
	    "250-mx.example\r\n250-PIPELINING\r\n250-VRFY\r\n"
	    "250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
	    "250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n", &c, "SIZE removed: none, cap or not");
	ok(!c.size, "SIZE removed: not in client caps");
	check_rewrite("250-x\r\n250 DSN\r\n", &pol, "250-x\r\n250 DSN\r\n", &c,
	    "SIZE removed, backend without SIZE: none");
}

/* Edge cases: one-line replies, odd keywords, bad input, small buffers. */
static void
test_rewrite_edges(void)
{
	static const char *const add_dsn[] = { "DSN" };
	static const char *const add_bad[] = { "BAD\r\nLINE", "", " SPACE", "-DASH", "OK_NOT", "GOOD" };
	static const char *const add_twice[] = { "X-A 1", "x-a 2" };
	static const char *const add_size[] = { "SIZE 5000" };
	static const char *const rm_and_add[] = { "DSN" };
	struct ehlo_policy pol;
	struct ehlo_caps c;
	char out[64];
	const char *r;
	int n;

	memset(&pol, 0, sizeof(pol));
	check_rewrite("250 host\r\n", &pol, "250 host\r\n", &c, "one-line reply");
	check_rewrite("250 \r\n", &pol, "250 \r\n", &c, "one-line reply, empty text");
	check_rewrite("250\r\n", &pol, "250 \r\n", &c, "code-only reply");
	pol.add = add_dsn;
	pol.nadd = 1;
	check_rewrite("250 host\r\n", &pol, "250-host\r\n250 DSN\r\n", &c, "one-line reply plus an add");
	pol.size = 1000;
	check_rewrite("250 host\r\n", &pol, "250-host\r\n250-DSN\r\n250 SIZE 1000\r\n", &c,
	    "one-line reply plus an add and a cap");

	/* X-keywords pass, the proxy's own do not; unknown ones are dropped. */
	memset(&pol, 0, sizeof(pol));
	check_rewrite("250-h\r\n250-XVERP\r\n250-X-EXAMPLE a b\r\n250-xtra\r\n250-XEXCH50\r\n"
	    "250-XCLIENT ADDR\r\n250-XFORWARD NAME\r\n250-AUTH=LOGIN\r\n250-AUTH LOGIN PLAIN\r\n"
	    "250-BINARYMIME\r\n250-REQUIRETLS\r\n250-BURL imap\r\n250-ATRN\r\n250-TURN\r\n"
	    "250-PRDR\r\n250-FUTURE-THING\r\n250 DSN\r\n", &pol,
	    "250-h\r\n250-XVERP\r\n250-X-EXAMPLE a b\r\n250-xtra\r\n250 DSN\r\n", &c,
	    "X-keywords, NEVER and unknown keywords");

	/* Case-insensitive keywords; text kept as written. */
	check_rewrite("250-h\r\n250-pipelining\r\n250-Size 100\r\n250-starttls\r\n250 chunking\r\n",
	    &pol, "250-h\r\n250-pipelining\r\n250-SIZE 100\r\n250 chunking\r\n", &c,
	    "lower-case keywords");
	ok(c.pipelining && c.chunking && c.size_limit == 100, "lower-case keywords: caps");

	/* Duplicates and invalid keywords are dropped. */
	check_rewrite("250-h\r\n250-DSN\r\n250-dsn\r\n250-SIZE 10\r\n250-SIZE 20\r\n250-\r\n"
	    "250- DSN\r\n250-=x\r\n250-PIPE_LINING\r\n250 DSN\r\n", &pol,
	    "250-h\r\n250-DSN\r\n250 SIZE 10\r\n", &c, "duplicates and invalid keywords");

	/* Absurd SIZE values. */
	check_rewrite("250-h\r\n250 SIZE 99999999999999999999999\r\n", &pol,
	    "250-h\r\n250 SIZE\r\n", &c, "SIZE past 64 bits, no cap: bare SIZE");
	pol.size = 1048576;
	check_rewrite("250-h\r\n250 SIZE 99999999999999999999999\r\n", &pol,
	    "250-h\r\n250 SIZE 1048576\r\n", &c, "SIZE past 64 bits, capped");
	check_rewrite("250-h\r\n250 SIZE 0\r\n", &pol,
	    "250-h\r\n250 SIZE 1048576\r\n", &c, "SIZE 0 (no limit), capped");
	pol.size = UINT64_MAX;
	check_rewrite("250-h\r\n250 DSN\r\n", &pol,
	    "250-h\r\n250-DSN\r\n250 SIZE 18446744073709551615\r\n", &c, "cap of 2^64-1");

	/* Bad add lines are ignored; the first of two adds wins. */
	memset(&pol, 0, sizeof(pol));
	pol.add = add_bad;
	pol.nadd = 6;
	check_rewrite("250-h\r\n250 DSN\r\n", &pol, "250-h\r\n250-DSN\r\n250 GOOD\r\n", &c,
	    "bad add lines ignored");
	pol.add = add_twice;
	pol.nadd = 2;
	check_rewrite("250-h\r\n250 DSN\r\n", &pol, "250-h\r\n250-DSN\r\n250 X-A 1\r\n", &c,
	    "the first of two adds for one keyword");
	check_rewrite("250-h\r\n250-X-A 0\r\n250 DSN\r\n", &pol, "250-h\r\n250-X-A 1\r\n250 DSN\r\n", &c,
	    "an add replaces an X-keyword");

	/* An added SIZE stands in for the backend's, under the cap. */
	pol.add = add_size;
	pol.nadd = 1;
	check_rewrite("250-h\r\n250-SIZE 10240000\r\n250 DSN\r\n", &pol,
	    "250-h\r\n250-SIZE 5000\r\n250 DSN\r\n", &c, "SIZE replaced by an add");
	check_rewrite("250-h\r\n250 DSN\r\n", &pol, "250-h\r\n250-DSN\r\n250 SIZE 5000\r\n", &c,
	    "SIZE added");
	pol.size = 4000;
	check_rewrite("250-h\r\n250 DSN\r\n", &pol, "250-h\r\n250-DSN\r\n250 SIZE 4000\r\n", &c,
	    "SIZE added, capped lower");

	/* remove wins over add. */
	memset(&pol, 0, sizeof(pol));
	pol.remove = rm_and_add;
	pol.nremove = 1;
	pol.add = add_dsn;
	pol.nadd = 1;
	check_rewrite("250-h\r\n250-DSN\r\n250 CHUNKING\r\n", &pol, "250-h\r\n250 CHUNKING\r\n", &c,
	    "remove and add the same keyword: removed");
	check_rewrite("250-h\r\n250 CHUNKING\r\n", &pol, "250-h\r\n250 CHUNKING\r\n", &c,
	    "remove and add, backend without it: not shown");

	/* Everything dropped: the domain line becomes the last line. */
	memset(&pol, 0, sizeof(pol));
	check_rewrite("250-h\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n", &pol, "250 h\r\n", &c,
	    "everything dropped");

	/* Not a complete 250 reply. */
	check_rewrite("", &pol, NULL, &c, "empty reply");
	check_rewrite("550 no\r\n", &pol, NULL, &c, "550 reply");
	check_rewrite("250-h\r\n", &pol, NULL, &c, "incomplete reply");
	check_rewrite("250-h\r\n250 DSN", &pol, NULL, &c, "no final CRLF");
	check_rewrite("250-h\n250 DSN\r\n", &pol, NULL, &c, "bare LF");
	check_rewrite("250-h\r\n251 DSN\r\n", &pol, NULL, &c, "mixed codes");
	check_rewrite("250 h\r\n250 DSN\r\n", &pol, NULL, &c, "two replies");

	/* Output too small. */
	r = "250-mx.example\r\n250 DSN\r\n";
	n = ehlo_rewrite(r, strlen(r), &pol, out, strlen(r), &c);
	is_int(n, (int)strlen(r), "output of exactly the needed size");
	n = ehlo_rewrite(r, strlen(r), &pol, out, strlen(r) - 1, &c);
	is_int(n, -1, "output one byte short");
	n = ehlo_rewrite(r, strlen(r), &pol, out, 0, &c);
	is_int(n, -1, "no output room");
	n = ehlo_rewrite(r, strlen(r), &pol, out, sizeof(out), NULL);
	is_int(n, (int)strlen(r), "NULL client caps");
}

/* Run every group of tests and print the TAP plan. */
int
main(void)
{
	test_caps_parse();
	test_keyword_in();
	test_rewrite_real();
	test_rewrite_edges();
	return done_testing();
}
