/*
 * fuzz_ehlo.c - libFuzzer harness for ehlo.c: ehlo_caps_parse() on any
 * bytes, and ehlo_rewrite() with fixed policies.
 *
 * Invariants, abort() when broken: a rewritten list is itself one complete
 * 250 reply for smtp_reply_scan, of exactly the length returned; it offers
 * nothing from EHLO_NEVER (STARTTLS, AUTH, XCLIENT, XFORWARD); the client
 * caps are what the output says; SIZE never exceeds the cap; a rewrite
 * fails only when the input is not one complete 250 reply.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ehlo.h"
#include "smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fuzz_remove[] = { "VRFY", "x-gone", "ETRN" };
static const char *const fuzz_add[] = {
	"DSN", "X-ADDED 1", "PIPECONNECT", "STARTTLS", "AUTH PLAIN", "DELIVERBY 240",
};
static const char *const fuzz_add_size[] = { "SIZE 5000", "SMTPUTF8" };
static const char *const fuzz_remove_size[] = { "size" };

static const struct ehlo_policy fuzz_policies[] = {
	{ NULL, 0, NULL, 0, 0 },
	{ NULL, 0, NULL, 0, 1048576 },
	{ fuzz_remove, 3, fuzz_add, 6, 10240000 },
	{ NULL, 0, fuzz_add_size, 2, 4000 },
	{ fuzz_remove_size, 1, fuzz_add_size, 2, 4000 },
};

/* Rewrite reply with one policy and check the output. */
static void
fuzz_rewrite(const char *reply, size_t len, const struct ehlo_policy *pol, bool valid)
{
	struct ehlo_caps client, again;
	size_t cap = len + 512, replylen;
	char *out = malloc(cap);
	int n, code;

	if (out == NULL)
		abort();
	n = ehlo_rewrite(reply, len, pol, out, cap, &client);
	if (n < 0) {
		if (valid)
			abort();	/* a valid reply always fits in len + 512 */
		free(out);
		return;
	}
	if (!valid || (size_t)n > cap)
		abort();
	if (smtp_reply_scan(out, (size_t)n, &replylen, &code) != 1 || replylen != (size_t)n ||
	    code != 250)
		abort();
	ehlo_caps_parse(out, (size_t)n, &again);
	if (memcmp(&again, &client, sizeof(again)) != 0)
		abort();
	if (client.starttls || client.auth || client.xclient || client.xforward)
		abort();
	if (pol->size != 0 && client.size && (client.size_limit == 0 || client.size_limit > pol->size))
		abort();
	/* Rewriting the rewritten list changes nothing more. */
	if (pol->nadd == 0 && pol->nremove == 0) {
		char *out2 = malloc((size_t)n + 512);
		int m;

		if (out2 == NULL)
			abort();
		m = ehlo_rewrite(out, (size_t)n, pol, out2, (size_t)n + 512, &again);
		if (m != n || memcmp(out, out2, (size_t)n) != 0)
			abort();
		free(out2);
	}
	free(out);
}

/* One input: a backend's EHLO reply (or anything). */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *reply = (const char *)data;
	struct ehlo_caps caps;
	size_t replylen, i;
	int code;
	bool valid;

	ehlo_caps_parse(reply, size, &caps);
	valid = smtp_reply_scan(reply, size, &replylen, &code) == 1 && code == 250 &&
	    replylen == size;
	for (i = 0; i < sizeof(fuzz_policies) / sizeof(fuzz_policies[0]); i++)
		fuzz_rewrite(reply, size, &fuzz_policies[i], valid);
	return 0;
}
