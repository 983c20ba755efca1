/*
 * fuzz_dotstream.c - libFuzzer harness for dotstream.c.
 *
 * The first byte picks a split point (and an output buffer size); the rest
 * is the stream.  Invariants, abort() when broken:
 *   - dot_scan over the stream in one call and in two pieces (fed as the
 *     session does: a held-back CR goes again with the next piece) gives
 *     the same result, the same position and the same octet count;
 *   - the same bytes taken as BDAT content and stuffed with dot_stuff (in
 *     the same two pieces, through a small output buffer) give the same
 *     output as in one go, and when accepted, the stuffed stream plus
 *     dot_stuff_finish() scans with dot_scan to DOT_END exactly at its end,
 *     never earlier;
 *   - crlf_check (BDAT relayed as it is) over the same pieces refuses what
 *     dot_stuff refuses, and leaves a CR pending when the finish fails.
 * Every call gets an exact-size heap copy, so reads past the end are seen.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dotstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct scan_outcome {
	enum dot_result	result;
	size_t		pos;
	uint64_t	octets;
};

/* dot_scan on an exact-size copy of buf. */
static enum dot_result
scan_exact(struct dot_scanner *s, const char *buf, size_t len, size_t *used)
{
	char *copy = malloc(len ? len : 1);
	enum dot_result r;

	if (copy == NULL)
		abort();
	if (len)
		memcpy(copy, buf, len);
	r = dot_scan(s, copy, len, used);
	free(copy);
	if (*used > len)
		abort();
	return r;
}

/* Scan buf fed as [0, cut) then [cut, len), keeping back what was not used. */
static struct scan_outcome
scan_split(const char *buf, size_t len, size_t cut)
{
	struct scan_outcome out = { DOT_MORE, 0, 0 };
	struct dot_scanner s;
	size_t off = 0, used, end, k;
	enum dot_result r;

	dot_scanner_init(&s);
	for (k = 0; k < 2; k++) {
		end = k == 0 ? cut : len;
		r = scan_exact(&s, buf + off, end - off, &used);
		if (r != DOT_MORE) {
			out.result = r;
			out.pos = off + used;
			out.octets = s.octets;
			return out;
		}
		off += used;
	}
	out.pos = off;
	out.octets = s.octets;
	return out;
}

/*
 * Stuff in as BDAT content, in pieces [0, cut) and [cut, len), through an
 * output buffer of room bytes; out gets the stream (finish included).
 * Returns the dot_stuff result, with *finish the dot_stuff_finish() result.
 */
static enum dot_result
stuff_split(const char *in, size_t len, size_t cut, size_t room, char *out,
    size_t *outlen, int *finish)
{
	struct dot_stuffer s;
	size_t off = 0, end, used, produced, k;
	enum dot_result r;
	char *piece, *chunk, fin[5];

	*outlen = 0;
	*finish = 0;
	dot_stuffer_init(&s);
	for (k = 0; k < 2; k++) {
		end = k == 0 ? cut : len;
		while (off < end) {
			piece = malloc(end - off);
			chunk = malloc(room);
			if (piece == NULL || chunk == NULL)
				abort();
			memcpy(piece, in + off, end - off);
			r = dot_stuff(&s, piece, end - off, &used, chunk, room, &produced);
			if (used > end - off || produced > room)
				abort();
			memcpy(out + *outlen, chunk, produced);
			*outlen += produced;
			free(piece);
			free(chunk);
			if (r != DOT_MORE)
				return r;
			if (used == 0)
				abort();	/* no progress with room >= 2 */
			off += used;
		}
	}
	if (s.octets != len)
		abort();
	*finish = dot_stuff_finish(&s, fin, sizeof(fin));
	if (*finish > 0) {
		memcpy(out + *outlen, fin, (size_t)*finish);
		*outlen += (size_t)*finish;
	}
	return DOT_MORE;
}

/*
 * Check in as relayed BDAT content with crlf_check, in pieces [0, cut) and
 * [cut, len) (exact copies); *cr_left: a CR pending at the end.
 */
static enum dot_result
crlf_split(const char *in, size_t len, size_t cut, bool *cr_left)
{
	struct crlf_checker c;
	size_t off = 0, end, bad, k;
	enum dot_result r = DOT_MORE;

	crlf_checker_init(&c);
	for (k = 0; k < 2 && r == DOT_MORE; k++) {
		char *piece;

		end = k == 0 ? cut : len;
		piece = malloc(end - off + 1);
		if (piece == NULL)
			abort();
		memcpy(piece, in + off, end - off);
		r = crlf_check(&c, piece, end - off, &bad);
		if (r != DOT_MORE && bad >= end - off && end > off)
			abort();	/* the offending byte lies in the piece */
		free(piece);
		off = end;
	}
	*cr_left = crlf_check_cr_pending(&c);
	return r;
}

/* One input: a split byte, then the stream. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct scan_outcome whole, split, end;
	const char *buf;
	size_t len, cut, room, outlen1, outlen2;
	enum dot_result r1, r2, c1, c2;
	int fin1, fin2;
	bool cr1, cr2;
	char *out1, *out2;

	if (size < 1)
		return 0;
	buf = (const char *)data + 1;
	len = size - 1;
	cut = len * data[0] / 255;
	room = 2 + data[0] % 7;

	whole = scan_split(buf, len, len);
	split = scan_split(buf, len, cut);
	if (whole.result != split.result || whole.pos != split.pos || whole.octets != split.octets)
		abort();
	if (whole.result == DOT_END && whole.octets + 3 != whole.pos)
		abort();

	out1 = malloc(2 * len + 5);
	out2 = malloc(2 * len + 5);
	if (out1 == NULL || out2 == NULL)
		abort();
	r1 = stuff_split(buf, len, len, 2 * len + 5, out1, &outlen1, &fin1);
	r2 = stuff_split(buf, len, cut, room, out2, &outlen2, &fin2);
	if (r1 != r2 || fin1 != fin2 || outlen1 != outlen2 || memcmp(out1, out2, outlen1) != 0)
		abort();
	if (r1 == DOT_MORE && fin1 > 0) {
		end = scan_split(out1, outlen1, outlen1);
		if (end.result != DOT_END || end.pos != outlen1)
			abort();
		/* Also when the stuffed stream arrives in two pieces. */
		end = scan_split(out1, outlen1, outlen1 * data[0] / 255);
		if (end.result != DOT_END || end.pos != outlen1)
			abort();
	} else if (r1 == DOT_MORE && !(len > 0 && buf[len - 1] == '\r'))
		abort();	/* finish may only fail on a CR left pending */
	/* The relay path's checker refuses exactly what the stuffer refuses,
	 * wherever the chunk boundary falls, and has a CR pending exactly when
	 * dot_stuff_finish() fails on one. */
	c1 = crlf_split(buf, len, len, &cr1);
	c2 = crlf_split(buf, len, cut, &cr2);
	if (c1 != c2 || cr1 != cr2 || c1 != r1)
		abort();
	if (r1 == DOT_MORE && cr1 != (fin1 < 0))
		abort();
	free(out1);
	free(out2);
	return 0;
}
