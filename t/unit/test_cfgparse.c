/*
 * test_cfgparse.c - unit tests for the UCL-subset parser (cfgparse.c).
 *
 * Each test parses a small text and compares a compact dump of the tree
 * (objects {k=v;...}, arrays [v,...], strings "..", numbers, booleans), or
 * the exact "NAME:LINE: message" of an error.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "cfgparse.h"
#include "log.h"

static char	dumpbuf[8192];
static char	errbuf[512];

/* Append text to the dump buffer. */
static void
dump_add(const char *s)
{
	size_t len = strlen(dumpbuf);

	snprintf(dumpbuf + len, sizeof(dumpbuf) - len, "%s", s);
}

/* Dump a value (and, for members, its key) into the dump buffer. */
static void
dump_node(const struct cfg_node *n)
{
	char num[32];

	if (n->key) {
		dump_add(n->key);
		dump_add("=");
	}
	switch (n->type) {
	case CFG_OBJECT:
	case CFG_ARRAY:
		dump_add(n->type == CFG_OBJECT ? "{" : "[");
		for (const struct cfg_node *c = n->child; c; c = c->next) {
			dump_node(c);
			dump_add(n->type == CFG_OBJECT ? ";" : ",");
		}
		dump_add(n->type == CFG_OBJECT ? "}" : "]");
		break;
	case CFG_STRING:
		dump_add("\"");
		dump_add(n->str);
		dump_add("\"");
		break;
	case CFG_INT:
		snprintf(num, sizeof(num), "%lld", (long long)n->num);
		dump_add(num);
		break;
	case CFG_BOOL:
		dump_add(n->boolean ? "true" : "false");
		break;
	}
}

/* Parse text and return its dump, or "ERR " and the error message. */
static const char *
parse(const char *text)
{
	struct cfg_node *root;

	dumpbuf[0] = '\0';
	errbuf[0] = '\0';
	root = cfg_parse_buf(text, strlen(text), "t.conf", errbuf, sizeof(errbuf));
	if (root == NULL) {
		snprintf(dumpbuf, sizeof(dumpbuf), "ERR %s", errbuf);
		return dumpbuf;
	}
	if (root->type != CFG_OBJECT || root->key != NULL || root->next != NULL)
		return "bad root";
	for (const struct cfg_node *c = root->child; c; c = c->next) {
		dump_node(c);
		dump_add(";");
	}
	cfg_free(root);
	return dumpbuf;
}

/* Each form of a pair. */
static void
test_pairs(void)
{
	is_str(parse(""), "", "empty input");
	is_str(parse("  \n\t\n"), "", "only whitespace");
	is_str(parse("a = 1;"), "a=1;", "key = value;");
	is_str(parse("a : 1;"), "a=1;", "key : value;");
	is_str(parse("a: 1"), "a=1;", "key: value without terminator at EOF");
	is_str(parse("a 1;"), "a=1;", "key value;");
	is_str(parse("a=1"), "a=1;", "no blanks");
	is_str(parse("a = 1\nb = 2\n"), "a=1;b=2;", "newline terminates");
	is_str(parse("a = 1, b = 2"), "a=1;b=2;", "comma terminates");
	is_str(parse("a = 1; b = 2;"), "a=1;b=2;", "semicolons on one line");
	is_str(parse("a { b = 1 }"), "a={b=1;};", "key { } with no terminator before }");
	is_str(parse("a = { b = 1; }"), "a={b=1;};", "key = { }");
	is_str(parse("a : { b : 1 }"), "a={b=1;};", "key : { }");
	is_str(parse("a\n{\n b = 1\n}\n"), "a={b=1;};", "brace on the next line");
	is_str(parse("a {}; b {} c {}"), "a={};b={};c={};", "objects need no terminator");
	is_str(parse("a = [1] b = 2"), "a=[1,];b=2;", "arrays need no terminator");
	is_str(parse("a\n= 1"), "a=1;", "'=' on the next line");
	is_str(parse("a =\n 1"), "a=1;", "value on the line after '='");
	is_str(parse("\"quoted key\" = 1"), "quoted key=1;", "quoted key");
	is_str(parse("'single key' = 1"), "single key=1;", "single-quoted key");
	is_str(parse("a.b-c_d/e@f+g*h = 1"), "a.b-c_d/e@f+g*h=1;", "bare key characters");
	is_str(parse("\xef\xbb\xbf" "a = 1"), "a=1;", "byte order mark skipped");
	is_str(parse("a = 1\r\nb = 2\r\n"), "a=1;b=2;", "CRLF line ends");
}

/* Strings, bare words, numbers and booleans. */
static void
test_values(void)
{
	is_str(parse("a = \"x y\""), "a=\"x y\";", "double-quoted string");
	is_str(parse("a = 'x y'"), "a=\"x y\";", "single-quoted string");
	is_str(parse("a = \"\""), "a=\"\";", "empty string");
	is_str(parse("a = \"1\""), "a=\"1\";", "quoted number stays a string");
	is_str(parse("a = \"true\""), "a=\"true\";", "quoted boolean stays a string");
	is_str(parse("a = info"), "a=\"info\";", "bare word");
	is_str(parse("a = 127.0.0.1:25"), "a=\"127.0.0.1:25\";", "bare address with ':'");
	is_str(parse("a = /var/run/x.sock"), "a=\"/var/run/x.sock\";", "bare path");
	is_str(parse("a = x[1]"), "a=\"x[1]\";", "brackets inside a bare word");
	is_str(parse("a = [x]"), "a=[\"x\",];", "']' closes the array, not the word");
	is_str(parse("a = b#c"), "a=\"b\";", "'#' ends a bare word");
	is_str(parse("a = b/*c*/"), "a=\"b\";", "a comment ends a bare word");
	is_str(parse("a = 1.5"), "a=\"1.5\";", "non-integer is a string");
	is_str(parse("a = 10x"), "a=\"10x\";", "unknown suffix makes a string");
	is_str(parse("a = 0"), "a=0;", "zero");
	is_str(parse("a = -42"), "a=-42;", "negative");
	is_str(parse("a = +42"), "a=42;", "explicit plus");
	is_str(parse("a = -"), "a=\"-\";", "a lone sign is a word");
	is_str(parse("a = 9223372036854775807"), "a=9223372036854775807;", "INT64_MAX");
	is_str(parse("a = -9223372036854775808"), "a=-9223372036854775808;", "INT64_MIN");
	is_str(parse("a = 10k"), "a=10000;", "10k = 10000");
	is_str(parse("a = 10kb"), "a=10240;", "10kb = 10240");
	is_str(parse("a = 10KB"), "a=10240;", "suffixes are case-insensitive");
	is_str(parse("a = 2m"), "a=2000000;", "m = 1000^2");
	is_str(parse("a = 50mb"), "a=52428800;", "50mb");
	is_str(parse("a = 3g"), "a=3000000000;", "g = 1000^3");
	is_str(parse("a = 2gb"), "a=2147483648;", "gb = 1024^3");
	is_str(parse("a = 30s"), "a=30;", "30s");
	is_str(parse("a = 5min"), "a=300;", "5min");
	is_str(parse("a = 2h"), "a=7200;", "2h");
	is_str(parse("a = 1d"), "a=86400;", "1d");
	is_str(parse("a = -1k"), "a=-1000;", "negative with suffix");
	is_str(parse("a = 8589934591gb"), "a=9223372035781033984;", "largest gb that fits");
	is_str(parse("a=true;b=false;c=yes;d=no;e=on;f=off;g=TRUE"),
	    "a=true;b=false;c=true;d=false;e=true;f=false;g=true;", "booleans");
	is_str(parse("a = truex"), "a=\"truex\";", "boolean prefix is a word");
}

/* Escapes in quoted strings. */
static void
test_escapes(void)
{
	struct cfg_node *root;
	const char *text;

	is_str(parse("a = \"q\\\"b\\\\s\\/\""), "a=\"q\"b\\s/\";", "\\\" \\\\ \\/");
	text = "a = \"n\\nt\\tr\\r\"";
	root = cfg_parse_buf(text, strlen(text), "t.conf", errbuf, sizeof(errbuf));
	ok(root != NULL, "\\n \\t \\r parse");
	if (root)
		is_str(cfg_get(root, "a")->str, "n\nt\tr\r", "\\n \\t \\r decode");
	cfg_free(root);
	is_str(parse("a = \"\\u0041\\u00e9\\u20ac\""), "a=\"A\xc3\xa9\xe2\x82\xac\";",
	    "\\u escapes to UTF-8 (1, 2, 3 bytes)");
	is_str(parse("a = \"\\ud83d\\ude00\""), "a=\"\xf0\x9f\x98\x80\";",
	    "\\u surrogate pair to 4 bytes");
	is_str(parse("a = 'it\\'s \\\\ \\n'"), "a=\"it's \\ \\n\";",
	    "single quotes: only \\' and \\\\ are escapes");
	is_str(parse("a = '\"'"), "a=\"\"\";", "double quote inside single quotes");
	is_str(parse("a = \"'\""), "a=\"'\";", "single quote inside double quotes");
	is_str(parse("a = \"# not /* a */ comment\""),
	    "a=\"# not /* a */ comment\";", "comment markers inside strings");
}

/* Comments of both kinds. */
static void
test_comments(void)
{
	is_str(parse("# only a comment"), "", "only a comment");
	is_str(parse("a = 1 # trailing\nb = 2"), "a=1;b=2;", "# to end of line");
	is_str(parse("# first\na = 1"), "a=1;", "comment line first");
	is_str(parse("/* block */ a = 1"), "a=1;", "C comment before a pair");
	is_str(parse("a /* x */ = /* y */ 1 /* z */;"), "a=1;", "C comments between tokens");
	is_str(parse("a = 1 /* spans\nlines */ b = 2"), "a=1;b=2;",
	    "multi-line C comment acts as a newline");
	is_str(parse("a = [ 1, # one\n 2 /* two */ ]"), "a=[1,2,];", "comments in arrays");
	is_str(parse("a { # c\n b = 1 # d\n}"), "a={b=1;};", "comments in objects");
	is_str(parse("/**/a=1"), "a=1;", "empty C comment");
}

/* Arrays, nesting and repeated keys. */
static void
test_structure(void)
{
	struct cfg_node *root, *n;
	const char *text;

	is_str(parse("a = []"), "a=[];", "empty array");
	is_str(parse("a = {}"), "a={};", "empty object");
	is_str(parse("a = [1, \"two\", three, true]"), "a=[1,\"two\",\"three\",true,];",
	    "mixed array");
	is_str(parse("a = [1, 2,]"), "a=[1,2,];", "trailing comma");
	is_str(parse("a = [\n 1\n 2\n]"), "a=[1,2,];", "newlines separate elements");
	is_str(parse("a = [[1, 2], [], {b = 1}]"), "a=[[1,2,],[],{b=1;},];", "nested arrays and objects");
	is_str(parse("a { b { c { d = 1; } } }"), "a={b={c={d=1;};};};", "nested objects");
	is_str(parse("filter { a = 1 } filter { a = 2 } x = 3; filter { a = 3 }"),
	    "filter={a=1;};filter={a=2;};x=3;filter={a=3;};", "repeated keys kept in order");

	text = "a = 1\nb {\n c = \"x\"\n}\nb = 2\nd = [\n  1,\n  2\n]\n";
	root = cfg_parse_buf(text, strlen(text), "t.conf", errbuf, sizeof(errbuf));
	ok(root != NULL, "line test parses");
	if (root == NULL)
		return;
	is_int(cfg_get(root, "a")->line, 1, "line of a");
	n = cfg_get(root, "b");
	is_int(n->type, CFG_OBJECT, "cfg_get returns the first b");
	is_int(n->line, 2, "line of b {");
	is_int(cfg_get(n, "c")->line, 3, "line of b.c");
	is_int(n->next->line, 5, "line of the second b");
	is_int(n->next->num, 2, "value of the second b");
	n = cfg_get(root, "d");
	is_int(n->child->line, 7, "line of d[0]");
	is_int(n->child->next->line, 8, "line of d[1]");
	ok(cfg_get(root, "B") == NULL, "cfg_get is case-sensitive");
	ok(cfg_get(root, "zz") == NULL, "cfg_get of a missing key");
	ok(cfg_get(cfg_get(root, "a"), "x") == NULL, "cfg_get on a non-object");
	cfg_free(root);

	is_str(cfg_type_name(CFG_OBJECT), "object", "type name object");
	is_str(cfg_type_name(CFG_ARRAY), "array", "type name array");
	is_str(cfg_type_name(CFG_STRING), "string", "type name string");
	is_str(cfg_type_name(CFG_INT), "number", "type name number");
	is_str(cfg_type_name(CFG_BOOL), "boolean", "type name boolean");
}

/* Nesting up to the limit, and one level beyond. */
static void
test_depth(void)
{
	char text[512];
	size_t len = 0;
	int i;

	/* 32 nested objects: a { a { ... } } */
	for (i = 0; i < 32; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len, "a{");
	for (i = 0; i < 32; i++)
		text[len++] = '}';
	text[len] = '\0';
	ok(strncmp(parse(text), "ERR", 3) != 0, "32 levels of objects are fine");

	len = 0;
	for (i = 0; i < 33; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len, "a{\n");
	for (i = 0; i < 33; i++)
		text[len++] = '}';
	text[len] = '\0';
	is_str(parse(text), "ERR t.conf:33: objects and arrays nested more than 32 deep",
	    "33 levels of objects are refused");

	len = (size_t)snprintf(text, sizeof(text), "a = ");
	for (i = 0; i < 33; i++)
		text[len++] = '[';
	text[len] = '\0';
	is_str(parse(text), "ERR t.conf:1: objects and arrays nested more than 32 deep",
	    "33 levels of arrays are refused");

	/* A deep hostile input fails fast, without deep recursion. */
	{
		size_t big = 1000000;
		char *deep = malloc(big + 5);

		memcpy(deep, "a = ", 4);
		memset(deep + 4, '[', big);
		deep[big + 4] = '\0';
		is_str(parse(deep), "ERR t.conf:1: objects and arrays nested more than 32 deep",
		    "a million '[' are refused");
		free(deep);
	}
}

/* Every error, with its line. */
static void
test_errors(void)
{
	struct cfg_node *root;
	static const char nul[] = "a = 1\nb = \"x\0y\"\n";

	root = cfg_parse_buf(nul, sizeof(nul) - 1, "t.conf", errbuf, sizeof(errbuf));
	ok(root == NULL, "NUL byte refused");
	is_str(errbuf, "t.conf:2: NUL byte in the input", "NUL byte message and line");
	root = cfg_parse_buf("\0", 1, "t.conf", errbuf, sizeof(errbuf));
	ok(root == NULL, "lone NUL byte refused");
	root = cfg_parse_buf(NULL, 0, "t.conf", errbuf, sizeof(errbuf));
	ok(root != NULL && root->child == NULL, "NULL buffer of length 0 is empty");
	cfg_free(root);
	root = cfg_parse_buf("a = @", 5, "t.conf", NULL, 0);
	ok(root != NULL, "no error buffer is fine when parsing works");
	cfg_free(root);
	root = cfg_parse_buf("a = ", 4, "t.conf", NULL, 0);
	ok(root == NULL, "no error buffer is fine on error");

	is_str(parse("a = 1\n\nlisten\n"),
	    "ERR t.conf:3: expected '=' or '{' after key \"listen\"", "key alone");
	is_str(parse("listen;"),
	    "ERR t.conf:1: expected '=' or '{' after key \"listen\"", "key then ';'");
	is_str(parse("a {\n listen }"),
	    "ERR t.conf:2: expected '=' or '{' after key \"listen\"", "key then '}'");
	is_str(parse("a\nb = 1"),
	    "ERR t.conf:1: expected '=' or '{' after key \"a\"", "value must be on the key's line");
	is_str(parse("\n\na =\n"),
	    "ERR t.conf:3: expected a value after key \"a\", got end of file", "'=' then EOF");
	is_str(parse("a = ;"),
	    "ERR t.conf:1: expected a value after key \"a\", got ';'", "'=' then ';'");
	is_str(parse("a = }"),
	    "ERR t.conf:1: expected a value after key \"a\", got '}'", "'=' then '}'");
	is_str(parse("a = = 1"),
	    "ERR t.conf:1: expected a value after key \"a\", got '='", "'=' twice");
	is_str(parse("\na = 1 2"),
	    "ERR t.conf:2: expected ';' or a new line after the value of key \"a\", got '2'",
	    "two values");
	is_str(parse("a = \"x\" b = 1"),
	    "ERR t.conf:1: expected ';' or a new line after the value of key \"a\", got 'b'",
	    "missing terminator after a string");
	is_str(parse("a { b = 1 ] }"),
	    "ERR t.conf:1: expected ';' or a new line after the value of key \"b\", got ']'",
	    "']' in an object");
	is_str(parse("a = 1\n}"), "ERR t.conf:2: unexpected '}'", "'}' at top level");
	is_str(parse("a = 1;;"), "ERR t.conf:1: expected a key, got ';'", "two ';'");
	is_str(parse("= 1"), "ERR t.conf:1: expected a key, got '='", "no key");
	is_str(parse("a = 1\n[b] = 1"), "ERR t.conf:2: expected a key, got '['", "'[' as a key");
	is_str(parse("a = 1\n\x01"), "ERR t.conf:2: expected a key, got byte 0x01",
	    "control byte");
	is_str(parse("a = \xc3\xa9"), "ERR t.conf:1: expected a value after key \"a\", got byte 0xc3",
	    "non-ASCII bare word");
	is_str(parse("'' = 1"), "ERR t.conf:1: empty key", "empty quoted key");
	is_str(parse("a {\n\n b = 1\n"), "ERR t.conf:1: '{' is never closed", "unclosed '{'");
	is_str(parse("x = 1\na = [\n 1,\n"), "ERR t.conf:2: '[' is never closed", "unclosed '['");
	is_str(parse("a = [1 2]"), "ERR t.conf:1: expected ',' or ']' in array, got '2'",
	    "missing comma in array");
	is_str(parse("a = [1;2]"), "ERR t.conf:1: expected ',' or ']' in array, got ';'",
	    "';' in array");
	is_str(parse("a = [\n1,,2]"), "ERR t.conf:2: expected a value or ']' in array, got ','",
	    "empty element");
	is_str(parse("a = [1 }"), "ERR t.conf:1: expected ',' or ']' in array, got '}'",
	    "'}' in array");
	is_str(parse("a = 1\nb = \"abc\n\""),
	    "ERR t.conf:2: unterminated string (quoted strings end on the line they start)",
	    "newline in a string");
	is_str(parse("a = 1\nb = 'abc"),
	    "ERR t.conf:2: unterminated string (quoted strings end on the line they start)",
	    "string open at EOF");
	is_str(parse("b = \"abc\\"),
	    "ERR t.conf:1: unterminated string (quoted strings end on the line they start)",
	    "backslash at EOF");
	is_str(parse("\"abc = 1"),
	    "ERR t.conf:1: unterminated string (quoted strings end on the line they start)",
	    "unterminated key");
	is_str(parse("a = 1\n\nb = \"\\q\""), "ERR t.conf:3: unknown escape \\q in string",
	    "unknown escape");
	is_str(parse("b = \"\\\x01\""), "ERR t.conf:1: unknown escape \\ + byte 0x01 in string",
	    "escape of a control byte");
	is_str(parse("b = \"\\u12\""),
	    "ERR t.conf:1: bad \\u escape in string (expected 4 hex digits)", "short \\u");
	is_str(parse("b = \"\\u12g4\""),
	    "ERR t.conf:1: bad \\u escape in string (expected 4 hex digits)", "non-hex \\u");
	is_str(parse("b = \"\\u0000\""), "ERR t.conf:1: \\u0000 is not allowed in a string",
	    "\\u0000");
	is_str(parse("b = \"\\ud800\""),
	    "ERR t.conf:1: bad \\u escape in string (lone high surrogate)", "lone high surrogate");
	is_str(parse("b = \"\\ud800\\u0041\""),
	    "ERR t.conf:1: bad \\u escape in string (lone high surrogate)",
	    "high surrogate then a non-surrogate");
	is_str(parse("b = \"\\udc00\""),
	    "ERR t.conf:1: bad \\u escape in string (lone low surrogate)", "lone low surrogate");
	is_str(parse("a = 1\n/* open\n\n"), "ERR t.conf:2: unterminated comment",
	    "unterminated comment");
	is_str(parse("a = 1 /* open *"), "ERR t.conf:1: unterminated comment",
	    "comment ending in '*'");
	is_str(parse("a = 1\nb = 9223372036854775808"),
	    "ERR t.conf:2: number out of range: 9223372036854775808", "INT64_MAX + 1");
	is_str(parse("b = -9223372036854775809"),
	    "ERR t.conf:1: number out of range: -9223372036854775809", "INT64_MIN - 1");
	is_str(parse("b = 99999999999999999999999"),
	    "ERR t.conf:1: number out of range: 99999999999999999999999", "far too many digits");
	is_str(parse("b = 8589934592gb"), "ERR t.conf:1: number out of range: 8589934592gb",
	    "suffix overflows");
	is_str(parse("b = 153722867280912931min"),
	    "ERR t.conf:1: number out of range: 153722867280912931min", "minutes overflow");
	is_str(parse("\"a\\n\";"), "ERR t.conf:1: expected '=' or '{' after key \"a?\"",
	    "control characters in messages are replaced");

	/* The first error wins; errlen is respected. */
	{
		char small[8];

		root = cfg_parse_buf("listen", 6, "t.conf", small, sizeof(small));
		ok(root == NULL && strcmp(small, "t.conf:") == 0, "error truncated to errlen");
	}
}

/* cfg_parse_file on a real file, and on missing ones. */
static void
test_file(void)
{
	char path[] = "/tmp/test_cfgparse.XXXXXX";
	const char *text = "a = 1\nb { c = \"d\" }\n";
	struct cfg_node *root;
	int fd;

	fd = mkstemp(path);
	ok(fd != -1, "mkstemp");
	if (fd == -1)
		return;
	ok(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write temp file");
	close(fd);
	root = cfg_parse_file(path, errbuf, sizeof(errbuf));
	ok(root != NULL, "cfg_parse_file works");
	if (root) {
		is_int(cfg_get(root, "a")->num, 1, "file value a");
		is_str(cfg_get(cfg_get(root, "b"), "c")->str, "d", "file value b.c");
	}
	cfg_free(root);

	fd = open(path, O_WRONLY | O_TRUNC);
	ok(write(fd, "x = 1\ny = \n", 11) == 11, "write bad temp file");
	close(fd);
	root = cfg_parse_file(path, errbuf, sizeof(errbuf));
	ok(root == NULL, "cfg_parse_file fails on a bad file");
	{
		char want[128];

		snprintf(want, sizeof(want), "%s:2: expected a value after key \"y\", got end of file",
		    path);
		is_str(errbuf, want, "file error names the path");
	}
	unlink(path);

	root = cfg_parse_file("/nonexistent/smtpchain.conf", errbuf, sizeof(errbuf));
	ok(root == NULL, "missing file");
	is_str(errbuf, "/nonexistent/smtpchain.conf: No such file or directory",
	    "missing file message");
	root = cfg_parse_file("/tmp", errbuf, sizeof(errbuf));
	ok(root == NULL, "a directory");
	is_str(errbuf, "/tmp: Is a directory", "directory message");
}

int
main(void)
{
	test_pairs();
	test_values();
	test_escapes();
	test_comments();
	test_structure();
	test_depth();
	test_errors();
	test_file();
	return done_testing();
}
