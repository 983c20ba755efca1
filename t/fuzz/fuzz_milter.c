/*
 * fuzz_milter.c - libFuzzer harness for the milter reply decoder
 * (filters/milter/codec.c), used the way the milter module uses it: bytes
 * from a milter in reads of any size, one reply after another, until it
 * needs more input or the stream is broken.
 *
 * The first input octet picks the packet limit (tiny to the default 1 MiB)
 * and the read size; the rest is the stream.  Checks: the stream decodes
 * to the same replies (and the same error, at the same point) whether it
 * is fed whole, in reads of the chosen size, or one octet at a time; every
 * string of a reply is NUL-terminated inside the decoder's buffer (ASan
 * sees a read past it); an error is sticky.
 *
 *	clang -g -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *	    -I include t/fuzz/fuzz_milter.c filters/milter/codec.c -o fuzz_milter
 *	./fuzz_milter -max_total_time=60 corpus/ t/fuzz/seed/fuzz_milter
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../filters/milter/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Append a string (NULL as "-") and a separator to a growing summary. */
static void
add(char **out, size_t *len, size_t *cap, const void *p, size_t n)
{
	if (*len + n + 1 > *cap) {
		*cap = (*len + n + 1) * 2;
		if ((*out = realloc(*out, *cap)) == NULL)
			abort();
	}
	memcpy(*out + *len, p, n);
	*len += n;
	(*out)[*len] = '\0';
}

static void
add_str(char **out, size_t *len, size_t *cap, const char *s)
{
	if (s == NULL)
		s = "-";
	add(out, len, cap, s, strlen(s));	/* strlen: ASan checks the NUL is inside */
	add(out, len, cap, "|", 1);
}

/* One reply, summarised. */
static void
summarise(const struct mc_reply *r, char **out, size_t *len, size_t *cap)
{
	char num[64];

	snprintf(num, sizeof(num), "%c:%u:%u:%u:%u:%zu:", r->cmd, r->version, r->actions,
	    r->protocol, r->index, r->len);
	add(out, len, cap, num, strlen(num));
	add_str(out, len, cap, r->name);
	add_str(out, len, cap, r->value);
	add_str(out, len, cap, r->addr);
	add_str(out, len, cap, r->args);
	add_str(out, len, cap, r->text);
	for (int i = 0; i < MC_NSTAGES; i++)
		add_str(out, len, cap, r->macros[i]);
	if (r->len > 0)
		add(out, len, cap, r->data, r->len);
	if (r->cmd != SMFIR_REPLBODY && r->len != 0)
		abort();
	if ((r->cmd == SMFIR_ADDHEADER || r->cmd == SMFIR_INSHEADER || r->cmd == SMFIR_CHGHEADER) &&
	    (r->name == NULL || r->value == NULL || r->name[0] == '\0'))
		abort();
	add(out, len, cap, "\n", 1);
}

/* Decode data fed in reads of `step` octets; returns the summary (caller frees). */
static char *
decode(const uint8_t *data, size_t size, size_t step, size_t max)
{
	struct mc_decoder d;
	struct mc_reply r;
	char *out = NULL;
	size_t len = 0, cap = 0, off = 0;
	int rc = MC_NEED_MORE;

	add(&out, &len, &cap, "", 0);
	mc_decoder_init(&d, max);
	while (off < size && rc != MC_ERROR) {
		size_t n = size - off < step ? size - off : step;
		uint8_t *copy = malloc(n);	/* exact size, for ASan */

		if (copy == NULL)
			abort();
		memcpy(copy, data + off, n);
		rc = mc_decoder_feed(&d, copy, n);
		free(copy);
		off += n;
		while (rc != MC_ERROR && (rc = mc_decoder_next(&d, &r)) == MC_REPLY)
			summarise(&r, &out, &len, &cap);
	}
	if (rc == MC_ERROR) {
		if (mc_decoder_error(&d)[0] == '\0')
			abort();
		if (mc_decoder_next(&d, &r) != MC_ERROR || mc_decoder_feed(&d, "x", 1) != MC_ERROR)
			abort();	/* sticky */
		add(&out, &len, &cap, "ERROR ", 6);
		add_str(&out, &len, &cap, mc_decoder_error(&d));
	} else {
		char pending[32];

		snprintf(pending, sizeof(pending), "pending %zu", mc_decoder_pending(&d));
		add(&out, &len, &cap, pending, strlen(pending));
	}
	mc_decoder_free(&d);
	return out;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t limits[] = { 1, 5, 16, 300, 65536, MC_MAX_PACKET };
	size_t max, step;
	char *whole, *stepped, *bytes;

	if (size < 1)
		return 0;
	max = limits[data[0] % (sizeof(limits) / sizeof(limits[0]))];
	step = (size_t)(data[0] >> 3) + 1;
	data++;
	size--;
	whole = decode(data, size, size ? size : 1, max);
	stepped = decode(data, size, step, max);
	bytes = size <= 4096 ? decode(data, size, 1, max) : NULL;
	if (strcmp(whole, stepped) != 0 || (bytes && strcmp(whole, bytes) != 0))
		abort();
	free(whole);
	free(stepped);
	free(bytes);
	return 0;
}
