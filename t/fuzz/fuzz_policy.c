/*
 * fuzz_policy.c - libFuzzer harness for the policy codec
 * (filters/policy/codec.c), used as the policy module uses it: an answer
 * from a server in reads of any size, then its action parsed and the
 * reply Postfix would give made from it.
 *
 * The first input octet picks the read size; the rest is the stream.
 * Checks: the same outcome (done, error, or more needed; the same action)
 * whether the stream is fed whole or in pieces; the reply is a 4xx/5xx
 * code with an enhanced code of the same class.
 *
 *	clang -g -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *	    t/fuzz/fuzz_policy.c filters/policy/codec.c -o fuzz_policy
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../filters/policy/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Feed the stream in reads of at most step octets; the outcome and the action (copied). */
static enum pc_read
run(const uint8_t *p, size_t n, size_t step, char *action, size_t alen)
{
	static struct pc_reader rd;
	enum pc_read r = PC_NEED_MORE;
	const char *err = NULL, *a;

	pc_reader_init(&rd);
	action[0] = '\0';
	for (size_t off = 0; off < n && r != PC_ERROR; off += step) {
		size_t k = n - off < step ? n - off : step;

		r = pc_reader_feed(&rd, (const char *)p + off, k, &err);
		if (r == PC_ERROR && err == NULL)
			abort();
	}
	if (r == PC_DONE) {
		if ((a = pc_answer(&rd, &err)) == NULL) {
			if (err == NULL)
				abort();
			snprintf(action, alen, "error: %s", err);
		} else {
			snprintf(action, alen, "%s", a);
		}
	}
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char whole[PC_MAX_ANSWER + 64], pieces[PC_MAX_ANSWER + 64];
	enum pc_read r1, r2;
	struct pc_action a;
	size_t step;

	if (size < 1)
		return 0;
	step = (size_t)data[0] % 17 + 1;
	data++;
	size--;
	r1 = run(data, size, size ? size : 1, whole, sizeof(whole));
	r2 = run(data, size, step, pieces, sizeof(pieces));
	if (r1 != r2 || strcmp(whole, pieces) != 0)
		abort();
	if (r1 == PC_DONE && strncmp(whole, "error: ", 7) != 0) {
		enum pc_kind k = pc_action_parse(whole, &a);

		if (k == PCA_REJECT || k == PCA_DEFER || k == PCA_DEFER_IF_PERMIT ||
		    k == PCA_DEFER_IF_REJECT) {
			char dsn[16], text[1024];
			int code;

			pc_reply(&a, "rcpt@example.org", "Recipient address", &code, dsn, text,
			    sizeof(text));
			if (code < 400 || code > 599 || dsn[0] != '0' + code / 100 || text[0] != '<')
				abort();
		}
		(void)pc_kind_name(k);
	}
	return 0;
}
