/*
 * fuzz_reply.c - libFuzzer harness for smtp_reply_scan(), used the way the
 * backend client uses it: over a stream, one reply after another, until it
 * needs more input or finds garbage.
 *
 * Checks: a reply found lies inside the buffer, ends in CRLF, has a code in
 * 200..559 that every line carries once smtp_reply_unify() ran (the last
 * line's), every strict prefix of it needs more input, and it is found
 * again when the buffer ends right after it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Check one reply found at p[0..len). */
static void
check_reply(const char *p, size_t len, int code)
{
	size_t pos = 0, replylen, i;
	char *copy;
	int again;

	if (len < 5 || p[len - 2] != '\r' || p[len - 1] != '\n')
		abort();
	if (code < 200 || code > 559)
		abort();
	/* Found again in a buffer that ends with it (exact copy, for ASan). */
	copy = malloc(len);
	if (copy == NULL)
		abort();
	memcpy(copy, p, len);
	/* Once unified, as the proxy relays it, every line starts with the code
	 * (the last line's), and a second pass changes nothing. */
	smtp_reply_unify(copy, len, code);
	while (pos < len) {
		const char *nl = memchr(copy + pos, '\n', len - pos);

		if (nl == NULL || (copy[pos] - '0') * 100 + (copy[pos + 1] - '0') * 10 +
		    (copy[pos + 2] - '0') != code)
			abort();
		pos = (size_t)(nl - copy) + 1;
	}
	if (smtp_reply_unify(copy, len, code) != 0)
		abort();
	if (smtp_reply_scan(copy, len, &replylen, &again) != 1 || replylen != len || again != code)
		abort();
	/* A strict prefix is never a complete reply nor an error. */
	for (i = len - 2; i < len; i++)
		if (smtp_reply_scan(copy, i, &replylen, &again) != 0)
			abort();
	if (len > 6 && smtp_reply_scan(copy, len / 2, &replylen, &again) != 0)
		abort();
	free(copy);
}

/* One input: bytes from a backend. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	size_t off = 0, replylen;
	int code, rc;

	while (off < size) {
		replylen = 0;
		code = 0;
		rc = smtp_reply_scan(p + off, size - off, &replylen, &code);
		if (rc == 0 || rc == -1)
			break;
		if (rc != 1 || replylen == 0 || replylen > size - off)
			abort();
		check_reply(p + off, replylen, code);
		off += replylen;
	}
	return 0;
}
