/*
 * fuzz_command.c - libFuzzer harness for the command-line side of smtp.c:
 * smtp_parse_command(), smtp_parse_path() on MAIL/RCPT arguments (and on
 * the raw input with both prefixes), smtp_path_param() and
 * smtp_xtext_encode().
 *
 * Besides the sanitizers, it checks what the parsers promise: every pointer
 * they return lies inside the input, eightbit matches the bytes, a
 * parameter is found by its own key, and xtext decodes back to the input
 * and fails cleanly when the output is one byte short.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort unless [p, p + len) lies within [base, base + size). */
static void
check_inside(const char *p, size_t len, const char *base, size_t size)
{
	if (p < base || p > base + size || len > (size_t)(base + size - p))
		abort();
}

/* Check the promises of a parsed path over arg[0..len). */
static void
check_path(const struct smtp_path *path, int rc, const char *arg, size_t len)
{
	const struct smtp_param *found;
	char key[256];
	size_t i;

	if (rc != 0 && rc != -1 && rc != -2)
		abort();
	if (rc == -1)
		return;
	if (path->nparams > SMTP_MAX_PARAMS)
		abort();
	if (path->addrlen > 0) {
		check_inside(path->addr, path->addrlen, arg, len);
		for (i = 0; i < path->addrlen; i++)
			if ((unsigned char)path->addr[i] >= 0x80 && !path->eightbit)
				abort();
		if (memchr(path->addr, '\r', path->addrlen) ||
		    memchr(path->addr, '\n', path->addrlen) ||
		    memchr(path->addr, '\0', path->addrlen))
			abort();
	}
	for (i = 0; i < path->nparams; i++) {
		const struct smtp_param *p = &path->params[i];

		if (p->keylen == 0)
			abort();
		check_inside(p->key, p->keylen, arg, len);
		if (p->value != NULL) {
			if (p->valuelen == 0)
				abort();
			check_inside(p->value, p->valuelen, arg, len);
		}
		if (rc == 0 && p->keylen < sizeof(key)) {
			memcpy(key, p->key, p->keylen);
			key[p->keylen] = '\0';
			found = smtp_path_param(path, key);
			if (found != p)
				abort();	/* keys are unique, so it is this one */
		}
	}
}

/* Parse arg as a MAIL or RCPT argument and check the result. */
static void
fuzz_path(const char *arg, size_t len, const char *prefix)
{
	struct smtp_path path;
	int rc;

	rc = smtp_parse_path(arg, len, prefix, &path);
	check_path(&path, rc, arg, len);
}

/* Value of one hex digit, or -1. */
static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Encode as xtext, decode again, and try a buffer one byte short. */
static void
fuzz_xtext(const char *src, size_t len)
{
	size_t cap = len * 3 + 1, i, o = 0;
	char *out = malloc(cap), *back = malloc(len ? len : 1);
	int n, m;

	if (out == NULL || back == NULL)
		abort();
	n = smtp_xtext_encode(src, len, out, cap);
	if (n < 0 || (size_t)n >= cap || out[n] != '\0' || strlen(out) != (size_t)n)
		abort();
	for (i = 0; i < (size_t)n; i++) {
		unsigned char c = (unsigned char)out[i];

		if (c < 0x21 || c > 0x7e || c == '=')
			abort();
		if (c == '+') {
			if (i + 2 >= (size_t)n + 1 || hexval(out[i + 1]) < 0 || hexval(out[i + 2]) < 0)
				abort();
			back[o++] = (char)(hexval(out[i + 1]) * 16 + hexval(out[i + 2]));
			i += 2;
		} else
			back[o++] = (char)c;
	}
	if (o != len || memcmp(back, src, len) != 0)
		abort();
	m = smtp_xtext_encode(src, len, out, (size_t)n);	/* no room for the NUL */
	if (m != -1 || (n > 0 && out[0] != '\0'))
		abort();
	free(out);
	free(back);
}

/* One input: a command line (CRLF removed). */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *line = (const char *)data;
	struct smtp_cmd cmd;

	if (smtp_parse_command(line, size, &cmd) == 0) {
		if (cmd.verb >= SMTP_VERB_MAX || smtp_verb_name(cmd.verb) == NULL)
			abort();
		if (cmd.arglen > 0) {
			check_inside(cmd.arg, cmd.arglen, line, size);
			if (cmd.arg[0] == ' ' || cmd.arg[cmd.arglen - 1] == ' ')
				abort();
		}
		if (memchr(line, '\n', size) || memchr(line, '\r', size) || memchr(line, '\0', size))
			abort();
		if (cmd.verb == SMTP_MAIL)
			fuzz_path(cmd.arg, cmd.arglen, "FROM:");
		else if (cmd.verb == SMTP_RCPT)
			fuzz_path(cmd.arg, cmd.arglen, "TO:");
	}
	fuzz_path(line, size, "FROM:");
	fuzz_path(line, size, "to:");
	fuzz_xtext(line, size);
	return 0;
}
