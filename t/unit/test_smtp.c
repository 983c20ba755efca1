/*
 * test_smtp.c - unit tests for smtp.c: command lines, MAIL/RCPT paths and
 * parameters, reply scanning, xtext.
 *
 * Every input is copied into a buffer of exactly its length (no NUL after
 * it), so AddressSanitizer catches any read past the end.
 */
#include <stdlib.h>
#include <string.h>

#include "smtp.h"
#include "tap.h"

/* A heap copy of s without a terminating NUL, so overreads are caught. */
static char *
exact(const char *s, size_t len)
{
	char *p = malloc(len ? len : 1);

	if (p == NULL)
		abort();
	memcpy(p, s, len);
	return p;
}

/* smtp_parse_command on a string literal, through an exact-size copy. */
static int
parse_cmd(const char *s, struct smtp_cmd *cmd, char **copy)
{
	size_t len = strlen(s);

	*copy = exact(s, len);
	return smtp_parse_command(*copy, len, cmd);
}

/* smtp_parse_path on a string literal, through an exact-size copy. */
static int
parse_path(const char *s, size_t len, const char *prefix, struct smtp_path *path, char **copy)
{
	*copy = exact(s, len);
	return smtp_parse_path(*copy, len, prefix, path);
}

/* Check one command line: its verb and argument. */
static void
check_cmd(const char *line, enum smtp_verb verb, const char *arg)
{
	struct smtp_cmd cmd;
	char *copy, name[256];
	int rc;

	rc = parse_cmd(line, &cmd, &copy);
	snprintf(name, sizeof(name), "command '%s' parses", line);
	is_int(rc, 0, name);
	snprintf(name, sizeof(name), "command '%s' is %s", line, smtp_verb_name(verb));
	is_int(cmd.verb, verb, name);
	snprintf(name, sizeof(name), "command '%s' argument", line);
	is_mem(cmd.arg, cmd.arglen, arg, strlen(arg), name);
	free(copy);
}

/* Check that a command line is refused. */
static void
check_cmd_bad(const char *line, size_t len, const char *name)
{
	struct smtp_cmd cmd;
	char *copy = exact(line, len);

	is_int(smtp_parse_command(copy, len, &cmd), -1, name);
	free(copy);
}

/* Commands: verbs, case, arguments, refusals. */
static void
test_commands(void)
{
	struct smtp_cmd cmd;
	int v;

	check_cmd("EHLO client.example", SMTP_EHLO, "client.example");
	check_cmd("ehlo client.example", SMTP_EHLO, "client.example");
	check_cmd("HeLo x", SMTP_HELO, "x");
	check_cmd("LHLO x", SMTP_LHLO, "x");
	check_cmd("MAIL FROM:<a@b.example>", SMTP_MAIL, "FROM:<a@b.example>");
	check_cmd("mail from:<>", SMTP_MAIL, "from:<>");
	check_cmd("RCPT TO:<a@b>  ", SMTP_RCPT, "TO:<a@b>");
	check_cmd("DATA", SMTP_DATA, "");
	check_cmd("DATA   ", SMTP_DATA, "");
	check_cmd("BDAT 100 LAST", SMTP_BDAT, "100 LAST");
	check_cmd("RSET", SMTP_RSET, "");
	check_cmd("NOOP hello there", SMTP_NOOP, "hello there");
	check_cmd("QUIT", SMTP_QUIT, "");
	check_cmd("VRFY user", SMTP_VRFY, "user");
	check_cmd("EXPN list", SMTP_EXPN, "list");
	check_cmd("HELP", SMTP_HELP, "");
	check_cmd("ETRN example.org", SMTP_ETRN, "example.org");
	check_cmd("STARTTLS", SMTP_STARTTLS, "");
	check_cmd("starttls", SMTP_STARTTLS, "");
	check_cmd("AUTH PLAIN AGZvbwBiYXI=", SMTP_AUTH, "PLAIN AGZvbwBiYXI=");
	check_cmd("XCLIENT ADDR=1.2.3.4", SMTP_XCLIENT, "ADDR=1.2.3.4");
	check_cmd("XFORWARD NAME=x", SMTP_XFORWARD, "NAME=x");
	check_cmd("ATRN", SMTP_ATRN, "");
	check_cmd("TURN", SMTP_TURN, "");
	check_cmd("MAIL    FROM:<a@b>", SMTP_MAIL, "FROM:<a@b>");
	check_cmd("FOO bar", SMTP_UNKNOWN, "bar");
	check_cmd("MAILX FROM:<a@b>", SMTP_UNKNOWN, "FROM:<a@b>");
	check_cmd("MAI", SMTP_UNKNOWN, "");
	check_cmd("STARTTLSX", SMTP_UNKNOWN, "");

	check_cmd_bad("", 0, "empty line refused");
	check_cmd_bad(" QUIT", 5, "leading space refused");
	check_cmd_bad("   ", 3, "only spaces refused");
	check_cmd_bad("QU1T", 4, "digit in verb refused");
	check_cmd_bad("QUIT\t", 5, "tab after verb refused");
	check_cmd_bad("MAIL:FROM", 9, "colon in verb refused");
	check_cmd_bad("\xc3\xa9HLO x", 7, "8-bit verb refused");
	check_cmd_bad("DATA\n", 5, "bare LF at end refused");
	check_cmd_bad("RCPT TO:<a@b>\nDATA", 18, "bare LF inside refused");
	check_cmd_bad("NOOP a\rb", 8, "bare CR inside refused");
	check_cmd_bad("NOOP a\0b", 8, "NUL inside refused");

	for (v = 0; v < SMTP_VERB_MAX; v++)
		ok(smtp_verb_name((enum smtp_verb)v) != NULL, "every verb has a name");
	is_str(smtp_verb_name(SMTP_STARTTLS), "STARTTLS", "verb name STARTTLS");
	is_str(smtp_verb_name(SMTP_UNKNOWN), "UNKNOWN", "verb name UNKNOWN");
	is_str(smtp_verb_name(SMTP_VERB_MAX), "UNKNOWN", "verb name out of range");
	is_str(smtp_verb_name((enum smtp_verb)-1), "UNKNOWN", "verb name negative");

	/* Only len bytes are looked at. */
	is_int(smtp_parse_command("QUIT now", 4, &cmd), 0, "length bounds the line");
	is_int(cmd.verb, SMTP_QUIT, "length bounds the line: verb");
	is_int(cmd.arglen, 0, "length bounds the line: no argument");
}

/* Check a path that must parse: its address and parameter count. */
static void
check_path(const char *arg, const char *prefix, const char *addr, size_t nparams, bool eightbit)
{
	struct smtp_path path;
	char *copy, name[512];
	int rc;

	rc = parse_path(arg, strlen(arg), prefix, &path, &copy);
	snprintf(name, sizeof(name), "path '%s' parses", arg);
	is_int(rc, 0, name);
	snprintf(name, sizeof(name), "path '%s' address", arg);
	is_mem(path.addr, path.addrlen, addr, strlen(addr), name);
	snprintf(name, sizeof(name), "path '%s' parameters", arg);
	is_int(path.nparams, nparams, name);
	snprintf(name, sizeof(name), "path '%s' eightbit", arg);
	is_int(path.eightbit, eightbit, name);
	free(copy);
}

/* Check a path that must be refused with rc. */
static void
check_path_bad(const char *arg, const char *prefix, int want)
{
	struct smtp_path path;
	char *copy, name[512];

	snprintf(name, sizeof(name), "path '%s' (%s) refused", arg, prefix);
	is_int(parse_path(arg, strlen(arg), prefix, &path, &copy), want, name);
	free(copy);
}

/* MAIL FROM / RCPT TO paths. */
static void
test_paths(void)
{
	check_path("FROM:<a@b.example>", "FROM:", "a@b.example", 0, false);
	check_path("from:<a@b.example>", "FROM:", "a@b.example", 0, false);
	check_path("FROM:<a@b.example>", "from:", "a@b.example", 0, false);
	check_path("FROM:<>", "FROM:", "", 0, false);
	check_path("FROM:<> SIZE=100", "FROM:", "", 1, false);
	check_path("FROM: <a@b>", "FROM:", "a@b", 0, false);
	check_path("FROM:  <a@b>", "FROM:", "a@b", 0, false);
	check_path("FROM: <>", "FROM:", "", 0, false);
	check_path("TO:<a@b>", "TO:", "a@b", 0, false);
	check_path("TO: <a@b>", "TO:", "a@b", 0, false);
	check_path("TO:<Postmaster>", "TO:", "Postmaster", 0, false);
	check_path("TO:<postmaster>", "TO:", "postmaster", 0, false);
	check_path("TO:<a@b>   ", "TO:", "a@b", 0, false);
	check_path("FROM:<first.last+tag@sub.example.org>", "FROM:",
	    "first.last+tag@sub.example.org", 0, false);
	check_path("FROM:<!#$%&'*+-/=?^_`{|}~@x>", "FROM:", "!#$%&'*+-/=?^_`{|}~@x", 0, false);
	check_path("FROM:<\"a b\"@x>", "FROM:", "\"a b\"@x", 0, false);
	check_path("FROM:<\"a>b\"@x>", "FROM:", "\"a>b\"@x", 0, false);
	check_path("FROM:<\"a\\\"b\"@x>", "FROM:", "\"a\\\"b\"@x", 0, false);
	check_path("FROM:<\"a\\\\\"@x>", "FROM:", "\"a\\\\\"@x", 0, false);
	check_path("FROM:<\"\"@x>", "FROM:", "\"\"@x", 0, false);
	check_path("FROM:<\"a@b\"@x>", "FROM:", "\"a@b\"@x", 0, false);
	check_path("FROM:<a@[192.0.2.1]>", "FROM:", "a@[192.0.2.1]", 0, false);
	check_path("FROM:<a@[IPv6:2001:db8::1]>", "FROM:", "a@[IPv6:2001:db8::1]", 0, false);
	check_path("FROM:<a@x-y.example>", "FROM:", "a@x-y.example", 0, false);
	check_path("FROM:<a@1.2.3.4>", "FROM:", "a@1.2.3.4", 0, false);
	check_path("FROM:<a@localhost>", "FROM:", "a@localhost", 0, false);
	check_path("FROM:<@relay.example:a@b>", "FROM:", "a@b", 0, false);
	check_path("TO:<@r1.example,@r2.example:a@b>", "TO:", "a@b", 0, false);

	/* RFC 6531 */
	check_path("FROM:<j\xc3\xb6rg@m\xc3\xbcnchen.example> SMTPUTF8", "FROM:",
	    "j\xc3\xb6rg@m\xc3\xbcnchen.example", 1, true);
	check_path("TO:<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a>",
	    "TO:", "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a", 0, true);
	check_path("TO:<\"\xf0\x9f\x98\x80 x\"@b>", "TO:", "\"\xf0\x9f\x98\x80 x\"@b", 0, true);
	check_path("TO:<a@b> ORCPT=rfc822;\xc3\xa9@b", "TO:", "a@b", 1, false);

	/* Parameters */
	check_path("FROM:<a@b> SIZE=1000 BODY=8BITMIME", "FROM:", "a@b", 2, false);
	check_path("FROM:<a@b>  SIZE=1000   BODY=8BITMIME  ", "FROM:", "a@b", 2, false);
	check_path("FROM:<a@b> SMTPUTF8", "FROM:", "a@b", 1, false);
	check_path("FROM:<a@b> RET=HDRS ENVID=QQ314159", "FROM:", "a@b", 2, false);
	check_path("TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@c", "TO:", "a@b", 2, false);
	check_path("FROM:<a@b> X-FOO-1=bar", "FROM:", "a@b", 1, false);
	check_path("FROM:<a@b> 1ST=x", "FROM:", "a@b", 1, false);

	/* Syntax errors */
	check_path_bad("", "FROM:", -1);
	check_path_bad("FROM:", "FROM:", -1);
	check_path_bad("FROM", "FROM:", -1);
	check_path_bad("FROM:a@b", "FROM:", -1);
	check_path_bad("FROM:<a@b", "FROM:", -1);
	check_path_bad("FROM:<a@b>>", "FROM:", -1);
	check_path_bad("FROM:<a@b>x", "FROM:", -1);
	check_path_bad("FROM :<a@b>", "FROM:", -1);
	check_path_bad("TO:<a@b>", "FROM:", -1);
	check_path_bad("FROM:<a@b>", "TO:", -1);
	check_path_bad("FROM:<<a@b>>", "FROM:", -1);
	check_path_bad("FROM:<a>", "FROM:", -1);
	check_path_bad("FROM:<postmaster>", "FROM:", -1);
	check_path_bad("TO:<>", "TO:", -1);
	check_path_bad("TO:<@x:postmaster>", "TO:", -1);
	check_path_bad("FROM:<@b>", "FROM:", -1);
	check_path_bad("FROM:<a@>", "FROM:", -1);
	check_path_bad("FROM:<a@@b>", "FROM:", -1);
	check_path_bad("FROM:<a b@c>", "FROM:", -1);
	check_path_bad("FROM:<a..b@c>", "FROM:", -1);
	check_path_bad("FROM:<.a@c>", "FROM:", -1);
	check_path_bad("FROM:<a.@c>", "FROM:", -1);
	check_path_bad("FROM:<a@b..c>", "FROM:", -1);
	check_path_bad("FROM:<a@b.>", "FROM:", -1);
	check_path_bad("FROM:<a@.b>", "FROM:", -1);
	check_path_bad("FROM:<a@-b>", "FROM:", -1);
	check_path_bad("FROM:<a@b->", "FROM:", -1);
	check_path_bad("FROM:<a@b_c>", "FROM:", -1);
	check_path_bad("FROM:<a@[]>", "FROM:", -1);
	check_path_bad("FROM:<a@[1.2.3.4>", "FROM:", -1);
	check_path_bad("FROM:<a@[1.2 3]>", "FROM:", -1);
	check_path_bad("FROM:<a@[a\\]]>", "FROM:", -1);
	check_path_bad("FROM:<\"a b@c>", "FROM:", -1);
	check_path_bad("FROM:<\"a\"b@c>", "FROM:", -1);
	check_path_bad("FROM:<\"a\\\"@c>", "FROM:", -1);
	check_path_bad("FROM:<\"a\tb\"@c>", "FROM:", -1);
	check_path_bad("FROM:<a\"b\"@c>", "FROM:", -1);
	check_path_bad("FROM:<@x,a@b>", "FROM:", -1);
	check_path_bad("FROM:<@x:>", "FROM:", -1);
	check_path_bad("FROM:<@:a@b>", "FROM:", -1);
	check_path_bad("FROM:<a@b> =x", "FROM:", -1);
	check_path_bad("FROM:<a@b> SIZE=", "FROM:", -1);
	check_path_bad("FROM:<a@b> SIZE==1", "FROM:", -1);
	check_path_bad("FROM:<a@b> SIZE=1=2", "FROM:", -1);
	check_path_bad("FROM:<a@b> -X", "FROM:", -1);
	check_path_bad("FROM:<a@b> S_Z=1", "FROM:", -1);
	check_path_bad("FROM:<a@b> SIZE=1\t", "FROM:", -1);
	check_path_bad("FROM:<a@b>\tSIZE=1", "FROM:", -1);
	check_path_bad("FROM:<a@b> SIZE=1 size=2", "FROM:", -1);
	check_path_bad("FROM:<a@b> BODY=8BITMIME BODY=7BIT", "FROM:", -1);
	/* UTF-8 must be well formed. */
	check_path_bad("FROM:<\xc3@b>", "FROM:", -1);
	check_path_bad("FROM:<\xc3(@b>", "FROM:", -1);
	check_path_bad("FROM:<\xc0\xaf@b>", "FROM:", -1);
	check_path_bad("FROM:<\xe0\x80\xaf@b>", "FROM:", -1);
	check_path_bad("FROM:<\xed\xa0\x80@b>", "FROM:", -1);
	check_path_bad("FROM:<\xf4\x90\x80\x80@b>", "FROM:", -1);
	check_path_bad("FROM:<\xff@b>", "FROM:", -1);
	check_path_bad("FROM:<a@b\x80>", "FROM:", -1);
	check_path_bad("FROM:<\"\x80\"@b>", "FROM:", -1);
	check_path_bad("FROM:<a@b> ENVID=\xc3", "FROM:", -1);
	check_path_bad("FROM:<a@b> \xc3\xa9=1", "FROM:", -1);
	/* Truncated in the middle of a UTF-8 sequence at the end of the input. */
	check_path_bad("FROM:<a@b\xe4\xbe", "FROM:", -1);
}

/* NUL, CR and LF inside a path; the length, not a NUL, ends the input. */
static void
test_paths_binary(void)
{
	struct smtp_path path;
	char *copy;

	is_int(parse_path("FROM:<a\0@b>", 11, "FROM:", &path, &copy), -1, "NUL in local part refused");
	free(copy);
	is_int(parse_path("FROM:<a@b\0>", 11, "FROM:", &path, &copy), -1, "NUL in domain refused");
	free(copy);
	is_int(parse_path("FROM:<\"a\0\"@b>", 13, "FROM:", &path, &copy), -1, "NUL in quoted string refused");
	free(copy);
	is_int(parse_path("FROM:<\"a\\\0\"@b>", 14, "FROM:", &path, &copy), -1, "quoted NUL refused");
	free(copy);
	is_int(parse_path("FROM:<a@b> X=\n", 14, "FROM:", &path, &copy), -1, "LF in parameter refused");
	free(copy);
	is_int(parse_path("FROM:<a@b> X=1\r", 15, "FROM:", &path, &copy), -1, "CR after parameter refused");
	free(copy);
	is_int(parse_path("FROM:<a@b> SIZE=5", 10, "FROM:", &path, &copy), 0, "length bounds the path");
	is_int(path.nparams, 0, "length bounds the path: no parameters");
	free(copy);
	is_int(parse_path("FROM:<a@b>", 9, "FROM:", &path, &copy), -1, "path cut before '>' refused");
	free(copy);
}

/* ESMTP parameters: keys, values, lookup, the limit. */
static void
test_params(void)
{
	struct smtp_path path;
	const struct smtp_param *pp;
	char arg[1024], *copy;
	const char *s;
	int i, n;

	s = "FROM:<a@b> SIZE=12345 BODY=8BITMIME SMTPUTF8 ENVID=x+2By";
	is_int(parse_path(s, strlen(s), "FROM:", &path, &copy), 0, "parameters parse");
	is_int(path.nparams, 4, "four parameters");
	is_mem(path.params[0].key, path.params[0].keylen, "SIZE", 4, "first key");
	is_mem(path.params[0].value, path.params[0].valuelen, "12345", 5, "first value");
	is_mem(path.params[2].key, path.params[2].keylen, "SMTPUTF8", 8, "keyword without value");
	ok(path.params[2].value == NULL, "no value is NULL");
	is_int(path.params[2].valuelen, 0, "no value has length 0");
	pp = smtp_path_param(&path, "size");
	ok(pp == &path.params[0], "lookup is case-insensitive");
	pp = smtp_path_param(&path, "BODY");
	ok(pp != NULL && pp->valuelen == 8 && memcmp(pp->value, "8BITMIME", 8) == 0, "lookup BODY");
	pp = smtp_path_param(&path, "envid");
	ok(pp != NULL && pp->valuelen == 5 && memcmp(pp->value, "x+2By", 5) == 0, "lookup ENVID");
	ok(smtp_path_param(&path, "SIZ") == NULL, "prefix of a key does not match");
	ok(smtp_path_param(&path, "SIZEX") == NULL, "longer key does not match");
	ok(smtp_path_param(&path, "RET") == NULL, "absent key");
	free(copy);

	/* Exactly SMTP_MAX_PARAMS is fine, one more is -2. */
	for (n = SMTP_MAX_PARAMS; n <= SMTP_MAX_PARAMS + 1; n++) {
		size_t len = (size_t)snprintf(arg, sizeof(arg), "FROM:<a@b>");
		for (i = 0; i < n; i++)
			len += (size_t)snprintf(arg + len, sizeof(arg) - len, " P%d=%d", i, i);
		if (n == SMTP_MAX_PARAMS) {
			is_int(parse_path(arg, len, "FROM:", &path, &copy), 0, "16 parameters accepted");
			is_int(path.nparams, SMTP_MAX_PARAMS, "16 parameters stored");
			pp = smtp_path_param(&path, "P15");
			ok(pp != NULL && pp->valuelen == 2 && memcmp(pp->value, "15", 2) == 0, "last parameter found");
		} else
			is_int(parse_path(arg, len, "FROM:", &path, &copy), -2, "17 parameters: -2");
		free(copy);
	}
	/* A syntax error wins over the count. */
	{
		size_t len = (size_t)snprintf(arg, sizeof(arg), "FROM:<a@b>");
		for (i = 0; i < SMTP_MAX_PARAMS + 3; i++)
			len += (size_t)snprintf(arg + len, sizeof(arg) - len, " P%d=%d", i, i);
		len += (size_t)snprintf(arg + len, sizeof(arg) - len, " =bad");
		is_int(parse_path(arg, len, "FROM:", &path, &copy), -1, "syntax error after too many: -1");
		free(copy);
	}
	/* A repeated key past the limit is still a syntax error. */
	{
		size_t len = (size_t)snprintf(arg, sizeof(arg), "FROM:<a@b>");
		for (i = 0; i < SMTP_MAX_PARAMS + 1; i++)
			len += (size_t)snprintf(arg + len, sizeof(arg) - len, " P%d=%d", i, i);
		len += (size_t)snprintf(arg + len, sizeof(arg) - len, " P0=again");
		is_int(parse_path(arg, len, "FROM:", &path, &copy), -1, "repeat past the limit: -1");
		free(copy);
	}
}

/* Check smtp_reply_scan on a literal: result, and length and code if 1. */
static void
check_reply(const char *buf, size_t len, int want, size_t wantlen, int wantcode, const char *name)
{
	size_t replylen = 0;
	int code = 0, rc;
	char *copy = exact(buf, len);

	rc = smtp_reply_scan(copy, len, &replylen, &code);
	is_int(rc, want, name);
	if (want == 1) {
		is_int(replylen, wantlen, name);
		is_int(code, wantcode, name);
	}
	free(copy);
}

/* Replies: single, multi-line, incomplete, malformed. */
static void
test_replies(void)
{
	const char *ehlo = "250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n";
	size_t i, n, replylen;
	int code;

	check_reply("220 mx.example ESMTP\r\n", 22, 1, 22, 220, "one line");
	check_reply("250 OK\r\nrest", 12, 1, 8, 250, "one line, more after it");
	check_reply("354\r\n", 5, 1, 5, 354, "code only");
	check_reply("250 \r\n", 6, 1, 6, 250, "code and space");
	check_reply(ehlo, strlen(ehlo), 1, strlen(ehlo), 250, "multi-line");
	check_reply("250-a\r\n250-\r\n250 b\r\n", 20, 1, 20, 250, "empty continuation text");
	check_reply("550-5.1.1 no\r\n550 5.1.1 such user\r\n250 OK\r\n", 43, 1, 35, 550,
	    "multi-line then the next reply");
	check_reply("599 x\r\n", 7, -1, 0, 0, "second digit 9 refused");
	check_reply("421 bye\r\n", 9, 1, 9, 421, "421");
	check_reply("500 x\r\n", 7, 1, 7, 500, "500");
	check_reply("559 x\r\n", 7, 1, 7, 559, "559");
	check_reply("200 x\r\n", 7, 1, 7, 200, "200");

	/* Every strict prefix of a complete reply needs more. */
	n = strlen(ehlo);
	for (i = 0; i < n; i++) {
		char *copy = exact(ehlo, i);
		if (smtp_reply_scan(copy, i, &replylen, &code) != 0) {
			free(copy);
			break;
		}
		free(copy);
	}
	is_int(i, n, "every prefix of a multi-line reply is incomplete");
	check_reply("", 0, 0, 0, 0, "empty");
	check_reply("2", 1, 0, 0, 0, "one digit");
	check_reply("250", 3, 0, 0, 0, "three digits");
	check_reply("250 OK", 6, 0, 0, 0, "no CRLF yet");
	check_reply("250 OK\r", 7, 0, 0, 0, "CR, LF not yet");
	check_reply("250-OK\r\n", 8, 0, 0, 0, "continuation, no last line");
	check_reply("250-OK\r\n25", 10, 0, 0, 0, "continuation, partial code");

	/* Malformed */
	check_reply("150 x\r\n", 7, -1, 0, 0, "1xx refused");
	check_reply("650 x\r\n", 7, -1, 0, 0, "6xx refused");
	check_reply("050 x\r\n", 7, -1, 0, 0, "0xx refused");
	check_reply("260 x\r\n", 7, -1, 0, 0, "second digit 6 refused");
	check_reply("x50 x\r\n", 7, -1, 0, 0, "letter refused");
	check_reply("x", 1, -1, 0, 0, "letter refused early");
	check_reply("2x", 2, -1, 0, 0, "second letter refused early");
	check_reply("25x", 3, -1, 0, 0, "third letter refused early");
	check_reply("25 x\r\n", 6, -1, 0, 0, "two digits refused");
	check_reply("2500 x\r\n", 8, -1, 0, 0, "four digits refused");
	check_reply("250x\r\n", 6, -1, 0, 0, "no separator refused");
	check_reply("250_x\r\n", 7, -1, 0, 0, "bad separator refused");
	/* Mixed codes: the last line's, as Postfix's SMTP client reads it. */
	check_reply("250-a\r\n251 b\r\n", 14, 1, 14, 251, "mixed codes: the last line's");
	check_reply("250-a\r\n550 b\r\n", 14, 1, 14, 550, "mixed classes: the last line's");
	check_reply("550-a\r\n250-b\r\n451 c\r\n", 21, 1, 21, 451, "three codes: the last line's");
	check_reply("250-a\r\n251", 10, 0, 0, 0, "mixed codes: more needed");
	check_reply("250 OK\n", 7, -1, 0, 0, "bare LF refused");
	check_reply("250-a\n250 b\r\n", 13, -1, 0, 0, "bare LF in a continuation refused");
	check_reply("250 a\nb\r\n", 9, -1, 0, 0, "bare LF inside a line refused");
	check_reply("250 a\rb\r\n", 9, -1, 0, 0, "bare CR inside a line refused");
	check_reply("250 OK\r\r\n", 9, -1, 0, 0, "CR CR LF refused");
	check_reply("250\n", 4, -1, 0, 0, "code and bare LF refused");
	check_reply("250-a\r\n\r\n", 9, -1, 0, 0, "empty line refused");
	check_reply(" 250 x\r\n", 8, -1, 0, 0, "leading space refused");
}

/* Every line of a reply given one code. */
static void
test_reply_unify(void)
{
	char mixed[] = "250-a\r\n550-b\r\n451 c\r\n";
	char same[] = "250-a\r\n250 b\r\n";
	char one[] = "354\r\n";

	is_int(smtp_reply_unify(mixed, strlen(mixed), 451), 2, "unify: two lines rewritten");
	is_str(mixed, "451-a\r\n451-b\r\n451 c\r\n", "unify: every line has the last code");
	is_int(smtp_reply_unify(same, strlen(same), 250), 0, "unify: a uniform reply is left alone");
	is_str(same, "250-a\r\n250 b\r\n", "unify: unchanged");
	is_int(smtp_reply_unify(one, strlen(one), 354), 0, "unify: code only");
}

/* xtext encoding. */
static void
test_xtext(void)
{
	char out[64];
	int n;

	n = smtp_xtext_encode("abc", 3, out, sizeof(out));
	is_int(n, 3, "plain length");
	is_str(out, "abc", "plain");
	n = smtp_xtext_encode("a+b=c d", 7, out, sizeof(out));
	is_str(out, "a+2Bb+3Dc+20d", "plus, equals, space");
	is_int(n, 13, "plus, equals, space: length");
	n = smtp_xtext_encode("\x00\x7f\x80\xff\t!~", 7, out, sizeof(out));
	is_str(out, "+00+7F+80+FF+09!~", "controls and 8-bit");
	n = smtp_xtext_encode("", 0, out, sizeof(out));
	is_int(n, 0, "empty");
	is_str(out, "", "empty is NUL-terminated");
	n = smtp_xtext_encode("[192.0.2.1]", 11, out, sizeof(out));
	is_str(out, "[192.0.2.1]", "address literal untouched");

	/* Exact fits and one byte short. */
	is_int(smtp_xtext_encode("abc", 3, out, 4), 3, "fits exactly with the NUL");
	is_int(smtp_xtext_encode("abc", 3, out, 3), -1, "no room for the NUL");
	is_str(out, "", "failure leaves an empty string");
	is_int(smtp_xtext_encode("a b", 3, out, 6), 5, "hex fits exactly");
	is_str(out, "a+20b", "hex fits exactly: text");
	is_int(smtp_xtext_encode("a b", 3, out, 5), -1, "hex one short");
	is_int(smtp_xtext_encode(" ", 1, out, 3), -1, "hex needs four bytes");
	is_int(smtp_xtext_encode("a", 1, out, 0), -1, "no room at all");
	is_int(smtp_xtext_encode("", 0, out, 1), 0, "empty in one byte");
}

/* Run every group of tests and print the TAP plan. */
int
main(void)
{
	test_commands();
	test_paths();
	test_paths_binary();
	test_params();
	test_replies();
	test_reply_unify();
	test_xtext();
	return done_testing();
}
