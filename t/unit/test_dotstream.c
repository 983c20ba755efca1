/*
 * test_dotstream.c - unit tests for dotstream.c: the DATA scanner and the
 * BDAT-to-DATA dot-stuffer.
 *
 * Hand cases cover the SMTP smuggling patterns and every split point of the
 * end marker; property tests (fixed seed) check that any way of cutting the
 * input into pieces gives the same answer as one buffer, that the scanner
 * agrees with a naive reference, and that stuffed output scans back to
 * exactly its own end; a differential test holds the memchr() scan to the
 * byte loop it replaced, call by call.  Each call gets an exact-size heap
 * copy of its bytes, so AddressSanitizer catches a read past the end.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dotstream.h"
#include "tap.h"

struct scan_outcome {
	enum dot_result	result;
	size_t		pos;		/* absolute: end after ".\r\n", bad byte, or consumed */
	uint64_t	octets;
};

/* A heap copy of len bytes without anything after them. */
static char *
exact(const char *s, size_t len)
{
	char *p = malloc(len ? len : 1);

	if (p == NULL)
		abort();
	if (len)
		memcpy(p, s, len);
	return p;
}

/* One dot_scan call on an exact-size copy. */
static enum dot_result
scan_exact(struct dot_scanner *s, const char *buf, size_t len, size_t *used)
{
	char *copy = exact(buf, len);
	enum dot_result r = dot_scan(s, copy, len, used);

	free(copy);
	return r;
}

/*
 * Scan buf as a caller would, fed in pieces ending at cuts[0..ncuts) (then
 * len): bytes not consumed (a held-back CR) go again with the next piece.
 */
static struct scan_outcome
scan_pieces(const char *buf, size_t len, const size_t *cuts, size_t ncuts)
{
	struct scan_outcome out;
	struct dot_scanner s;
	size_t off = 0, end, used, k;
	enum dot_result r;

	dot_scanner_init(&s);
	for (k = 0; k <= ncuts; k++) {
		end = k < ncuts ? cuts[k] : len;
		if (end < off)
			end = off;
		r = scan_exact(&s, buf + off, end - off, &used);
		if (used > end - off)
			abort();
		if (r != DOT_MORE) {
			out.result = r;
			out.pos = off + used;
			out.octets = s.octets;
			return out;
		}
		off += used;
	}
	out.result = DOT_MORE;
	out.pos = off;
	out.octets = s.octets;
	return out;
}

/* Scan buf in one call. */
static struct scan_outcome
scan_whole(const char *buf, size_t len)
{
	return scan_pieces(buf, len, NULL, 0);
}

/*
 * The reference: what a strict server sees, byte by byte, with nothing but
 * the RFC 5321 rules (and no state carried between calls).
 */
static struct scan_outcome
scan_reference(const char *buf, size_t len)
{
	struct scan_outcome out;
	size_t i;

	for (i = 0; i < len; i++) {
		bool bol = i == 0 || buf[i - 1] == '\n';

		if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r')) {
			out.result = DOT_BAD_LF;
			out.pos = out.octets = i;
			return out;
		}
		if (buf[i] == '\r') {
			if (i + 1 == len)
				break;
			if (buf[i + 1] != '\n') {
				out.result = DOT_BAD_CR;
				out.pos = out.octets = i;
				return out;
			}
		}
		if (bol && buf[i] == '.' && i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
			out.result = DOT_END;
			out.pos = i + 3;
			out.octets = i;
			return out;
		}
	}
	out.result = DOT_MORE;
	out.pos = out.octets = i;
	return out;
}

/*
 * The first bare CR or LF in BDAT content (no end marker there): DOT_BAD_*
 * with its position, or DOT_MORE.
 */
static struct scan_outcome
first_bare(const char *buf, size_t len)
{
	struct scan_outcome out = { DOT_MORE, len, 0 };
	size_t i;

	for (i = 0; i < len; i++) {
		if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r')) {
			out.result = DOT_BAD_LF;
			out.pos = i;
			return out;
		}
		if (buf[i] == '\r' && i + 1 < len && buf[i + 1] != '\n') {
			out.result = DOT_BAD_CR;
			out.pos = i;
			return out;
		}
	}
	return out;
}

/* Two outcomes are the same. */
static bool
same_outcome(struct scan_outcome a, struct scan_outcome b)
{
	return a.result == b.result && a.pos == b.pos && a.octets == b.octets;
}

/* Check a whole-buffer scan, and that every single split agrees. */
static void
check_scan(const char *buf, size_t len, enum dot_result want, size_t wantpos,
    uint64_t wantoctets, const char *name)
{
	struct scan_outcome whole = scan_whole(buf, len), split;
	char label[256];
	size_t k, bad = 0;

	snprintf(label, sizeof(label), "%s: result", name);
	is_int(whole.result, want, label);
	snprintf(label, sizeof(label), "%s: position", name);
	is_int(whole.pos, wantpos, label);
	snprintf(label, sizeof(label), "%s: octets", name);
	is_int(whole.octets, wantoctets, label);
	for (k = 0; k <= len; k++) {
		split = scan_pieces(buf, len, &k, 1);
		if (!same_outcome(split, whole)) {
			diag("split at %zu: result %d pos %zu octets %llu", k,
			    (int)split.result, split.pos, (unsigned long long)split.octets);
			bad++;
		}
	}
	snprintf(label, sizeof(label), "%s: same at every split", name);
	is_int(bad, 0, label);
	/* One byte at a time. */
	{
		size_t cuts[512], n = len < 512 ? len : 512;

		for (k = 0; k < n; k++)
			cuts[k] = k;
		split = scan_pieces(buf, len, cuts, n);
		snprintf(label, sizeof(label), "%s: same byte by byte", name);
		ok(same_outcome(split, whole), label);
	}
	snprintf(label, sizeof(label), "%s: same as the reference", name);
	ok(same_outcome(scan_reference(buf, len), whole), label);
}

#define CHECK_SCAN(lit, want, pos, octets) \
	check_scan((lit), sizeof(lit) - 1, (want), (pos), (octets), #lit)

/* The scanner on hand-picked inputs. */
static void
test_scan_cases(void)
{
	struct dot_scanner s;
	size_t used;

	/* Ends of data. */
	CHECK_SCAN(".\r\n", DOT_END, 3, 0);
	CHECK_SCAN("a\r\n.\r\n", DOT_END, 6, 3);
	CHECK_SCAN("Subject: x\r\n\r\nbody\r\n.\r\n", DOT_END, 23, 20);
	CHECK_SCAN("a\r\n.\r\nMAIL FROM:<x@y>\r\n", DOT_END, 6, 3);
	CHECK_SCAN("\r\n.\r\n", DOT_END, 5, 2);
	CHECK_SCAN("a\r\n..\r\n.\r\n", DOT_END, 10, 7);
	CHECK_SCAN("..\r\n.\r\n", DOT_END, 7, 4);
	CHECK_SCAN("a\r\n.x\r\n.\r\n", DOT_END, 10, 7);
	CHECK_SCAN("a\r\n. \r\n.\r\n", DOT_END, 10, 7);

	/* Not ends of data. */
	CHECK_SCAN("a.\r\n", DOT_MORE, 4, 4);
	CHECK_SCAN("a\r\n.", DOT_MORE, 4, 4);
	CHECK_SCAN("a\r\n.\r", DOT_MORE, 4, 4);
	CHECK_SCAN("a\r\n", DOT_MORE, 3, 3);
	CHECK_SCAN("a\r", DOT_MORE, 1, 1);
	CHECK_SCAN("\r", DOT_MORE, 0, 0);
	CHECK_SCAN("", DOT_MORE, 0, 0);
	CHECK_SCAN("a\r\n..\r\n", DOT_MORE, 7, 7);
	CHECK_SCAN("a\r\n.a\r\n", DOT_MORE, 7, 7);
	CHECK_SCAN("a\r\nx.\r\n", DOT_MORE, 7, 7);
	CHECK_SCAN(". \r\n", DOT_MORE, 4, 4);

	/* Smuggling patterns: bare LF. */
	CHECK_SCAN("\n.\n", DOT_BAD_LF, 0, 0);
	CHECK_SCAN("a\n.\n", DOT_BAD_LF, 1, 1);
	CHECK_SCAN("a\r\n.\n", DOT_BAD_LF, 4, 4);
	CHECK_SCAN("a\n.\r\n", DOT_BAD_LF, 1, 1);
	CHECK_SCAN("a\n\r\n.\r\n", DOT_BAD_LF, 1, 1);
	CHECK_SCAN("\n\r\n", DOT_BAD_LF, 0, 0);
	CHECK_SCAN("a\r\n\n.\r\n", DOT_BAD_LF, 3, 3);
	CHECK_SCAN("a\r\n.\n\r\n", DOT_BAD_LF, 4, 4);
	CHECK_SCAN("a\r\n\n", DOT_BAD_LF, 3, 3);
	CHECK_SCAN("\n", DOT_BAD_LF, 0, 0);

	/* Smuggling patterns: bare CR. */
	CHECK_SCAN("a\r.\r", DOT_BAD_CR, 1, 1);
	CHECK_SCAN("\r.\r", DOT_BAD_CR, 0, 0);
	CHECK_SCAN("a\r\n.\r", DOT_MORE, 4, 4);
	CHECK_SCAN("a\r\n.\ra", DOT_BAD_CR, 4, 4);
	CHECK_SCAN("a\r\n.\r.\r\n", DOT_BAD_CR, 4, 4);
	CHECK_SCAN("a\r.\r\n", DOT_BAD_CR, 1, 1);
	CHECK_SCAN("a\r\r\n", DOT_BAD_CR, 1, 1);
	CHECK_SCAN("\r\r\n", DOT_BAD_CR, 0, 0);
	CHECK_SCAN("a\r\n.\r\r\n", DOT_BAD_CR, 4, 4);
	CHECK_SCAN("a\r\n\r.\r\n", DOT_BAD_CR, 3, 3);
	CHECK_SCAN("a\rb", DOT_BAD_CR, 1, 1);
	CHECK_SCAN("a\r\0", DOT_BAD_CR, 1, 1);
	CHECK_SCAN("a\r\n\r\r", DOT_BAD_CR, 3, 3);

	/* Other bytes pass: NUL, 8-bit, long lines. */
	CHECK_SCAN("\0\xff\x80\r\n.\r\n", DOT_END, 8, 5);

	/* A held-back CR: the caller hands it back. */
	dot_scanner_init(&s);
	is_int(scan_exact(&s, "ab\r", 3, &used), DOT_MORE, "CR at end: more");
	is_int(used, 2, "CR at end: not consumed");
	is_int(s.octets, 2, "CR at end: not counted");
	is_int(scan_exact(&s, "\r\n.\r", 4, &used), DOT_MORE, "CR handed back");
	is_int(used, 3, "CR LF . consumed, last CR held");
	is_int(scan_exact(&s, "\r\n", 2, &used), DOT_END, "end of data after two holds");
	is_int(used, 2, "end of data: CR LF consumed");
	is_int(s.octets, 4, "octets: ab CR LF");

	/* Calls after the end or a refusal repeat it and consume nothing. */
	is_int(scan_exact(&s, "x\r\n", 3, &used), DOT_END, "after the end: DOT_END again");
	is_int(used, 0, "after the end: nothing consumed");
	dot_scanner_init(&s);
	is_int(scan_exact(&s, "a\nb", 3, &used), DOT_BAD_LF, "bare LF");
	is_int(scan_exact(&s, "b\r\n.\r\n", 6, &used), DOT_BAD_LF, "after a refusal: refused again");
	is_int(used, 0, "after a refusal: nothing consumed");
	dot_scanner_init(&s);
	is_int(scan_exact(&s, ".\r\n", 3, &used), DOT_END, "re-initialised scanner works");

	/* Empty calls change nothing, in every state. */
	dot_scanner_init(&s);
	is_int(scan_exact(&s, "a\r\n.", 4, &used), DOT_MORE, "dot at line start");
	is_int(scan_exact(&s, "", 0, &used), DOT_MORE, "empty call");
	is_int(used, 0, "empty call: nothing consumed");
	is_int(scan_exact(&s, "\r\n", 2, &used), DOT_END, "the dot survives an empty call");
	is_int(s.octets, 3, "octets after an empty call");
}

/* A small fixed-seed PRNG (xorshift64*), the same on every platform. */
static uint64_t rng_state = 0x5eed5eed5eed5eedULL;

/* A pseudo-random number below n (n > 0). */
static uint32_t
rng(uint32_t n)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32) % n;
}

/* Random bytes, heavy on CR, LF and '.', so the edge cases come up. */
static size_t
random_noise(char *buf, size_t max)
{
	size_t len = rng((uint32_t)max + 1), i;

	for (i = 0; i < len; i++) {
		uint32_t k = rng(100);
		buf[i] = k < 20 ? '\r' : k < 40 ? '\n' : k < 60 ? '.' : k < 90 ? 'a' : (char)rng(256);
	}
	return len;
}

/*
 * A message of CRLF lines (some dot-stuffed, some empty), an end of data,
 * then more text; now and then one byte is corrupted or the end left out.
 */
static size_t
random_message(char *buf, size_t max)
{
	static const char *const pieces[] = {
		"a", "..", ".", "x.", " ", "\xff", "Subject: t", ".a", "\0",
	};
	size_t len = 0, lines = rng(8), i, n;

	for (i = 0; i < lines && len + 40 < max; i++) {
		n = rng(4);
		while (n-- > 0) {
			const char *p = pieces[rng(sizeof(pieces) / sizeof(pieces[0]))];
			size_t pl = p[0] ? strlen(p) : 1;

			memcpy(buf + len, p, pl);
			len += pl;
		}
		memcpy(buf + len, "\r\n", 2);
		len += 2;
	}
	if (rng(4) != 0 && len + 3 < max) {
		memcpy(buf + len, ".\r\n", 3);
		len += 3;
	}
	if (len + 20 < max)
		len += random_noise(buf + len, 16);
	if (len > 0 && rng(3) == 0) {
		static const char bad[] = { '\r', '\n', '.' };
		buf[rng((uint32_t)len)] = bad[rng(3)];
	}
	return len;
}

/* Property: any cutting of the input gives the one-buffer answer. */
static void
test_scan_property(void)
{
	char buf[512];
	size_t cuts[512], len, ncuts, k, pos;
	size_t ends = 0, bads = 0, mores = 0, failed_split = 0, failed_pieces = 0,
	    failed_ref = 0, failed_bytes = 0;
	struct scan_outcome whole, split;
	int iter;

	for (iter = 0; iter < 4000; iter++) {
		len = iter % 2 ? random_message(buf, sizeof(buf)) : random_noise(buf, 64);
		whole = scan_whole(buf, len);
		if (whole.result == DOT_END)
			ends++;
		else if (whole.result == DOT_MORE)
			mores++;
		else
			bads++;
		if (!same_outcome(whole, scan_reference(buf, len)))
			failed_ref++;
		/* Split once at every point. */
		for (k = 0; k <= len; k++) {
			split = scan_pieces(buf, len, &k, 1);
			if (!same_outcome(split, whole))
				failed_split++;
		}
		/* Random small pieces. */
		for (k = 0; k < 4; k++) {
			for (ncuts = 0, pos = 0; ncuts < 512; ncuts++) {
				pos += rng(5);
				if (pos >= len)
					break;
				cuts[ncuts] = pos;
			}
			split = scan_pieces(buf, len, cuts, ncuts);
			if (!same_outcome(split, whole))
				failed_pieces++;
		}
		/* Byte by byte. */
		for (k = 0; k < len; k++)
			cuts[k] = k;
		if (!same_outcome(scan_pieces(buf, len, cuts, len), whole))
			failed_bytes++;
	}
	diag("random inputs: %zu ends, %zu refused, %zu unfinished", ends, bads, mores);
	ok(ends > 100 && bads > 100 && mores > 100, "random inputs reach every outcome");
	is_int(failed_ref, 0, "random inputs: one buffer agrees with the reference");
	is_int(failed_split, 0, "random inputs: every single split agrees");
	is_int(failed_pieces, 0, "random inputs: random small pieces agree");
	is_int(failed_bytes, 0, "random inputs: byte by byte agrees");
}

struct stuff_outcome {
	enum dot_result	result;
	size_t		pos;		/* absolute offset of the bad byte */
	int		finish;		/* dot_stuff_finish() result, when DOT_MORE */
	char		out[4096];
	size_t		outlen;
	uint64_t	octets;
};

/*
 * Stuff in as a caller would: content in pieces ending at cuts (then len),
 * an output buffer of outroom bytes per call, then the finish.
 */
static void
stuff_pieces(const char *in, size_t len, const size_t *cuts, size_t ncuts,
    size_t outroom, struct stuff_outcome *o)
{
	struct dot_stuffer s;
	size_t off = 0, end, used, produced, k;
	enum dot_result r;
	char *piece, *out, fin[5];

	memset(o, 0, sizeof(*o));
	dot_stuffer_init(&s);
	for (k = 0; k <= ncuts; k++) {
		end = k < ncuts ? cuts[k] : len;
		if (end < off)
			end = off;
		while (off < end) {
			piece = exact(in + off, end - off);
			out = malloc(outroom);
			if (out == NULL)
				abort();
			r = dot_stuff(&s, piece, end - off, &used, out, outroom, &produced);
			if (used > end - off || produced > outroom || o->outlen + produced > sizeof(o->out))
				abort();
			memcpy(o->out + o->outlen, out, produced);
			o->outlen += produced;
			free(piece);
			free(out);
			if (r != DOT_MORE) {
				o->result = r;
				o->pos = off + used;
				return;
			}
			if (used == 0)
				abort();	/* no progress with room >= 2 */
			off += used;
		}
	}
	o->result = DOT_MORE;
	o->octets = s.octets;
	o->finish = dot_stuff_finish(&s, fin, sizeof(fin));
	if (o->finish > 0) {
		memcpy(o->out + o->outlen, fin, (size_t)o->finish);
		o->outlen += (size_t)o->finish;
	}
}

/* Check stuffing of a literal in one go, and with every split. */
static void
check_stuff(const char *in, size_t len, enum dot_result want, size_t wantpos,
    const char *wantout, size_t wantoutlen, const char *name)
{
	static struct stuff_outcome whole, split;
	char label[256];
	size_t k, bad = 0;

	stuff_pieces(in, len, NULL, 0, 4096, &whole);
	snprintf(label, sizeof(label), "stuff %s: result", name);
	is_int(whole.result, want, label);
	if (want == DOT_MORE) {
		snprintf(label, sizeof(label), "stuff %s: output", name);
		is_mem(whole.out, whole.outlen, wantout, wantoutlen, label);
		snprintf(label, sizeof(label), "stuff %s: octets", name);
		is_int(whole.octets, len, label);
	} else {
		snprintf(label, sizeof(label), "stuff %s: position", name);
		is_int(whole.pos, wantpos, label);
		snprintf(label, sizeof(label), "stuff %s: output before the bad byte", name);
		is_mem(whole.out, whole.outlen, wantout, wantoutlen, label);
	}
	for (k = 0; k <= len; k++) {
		stuff_pieces(in, len, &k, 1, 2 + k % 3, &split);
		if (split.result != whole.result || split.outlen != whole.outlen ||
		    memcmp(split.out, whole.out, whole.outlen) != 0 || split.finish != whole.finish ||
		    (want != DOT_MORE && split.pos != whole.pos &&
		    !(want == DOT_BAD_CR && k == whole.pos + 1 && split.pos == k)))
			bad++;
	}
	snprintf(label, sizeof(label), "stuff %s: same at every split, small output", name);
	is_int(bad, 0, label);
}

#define CHECK_STUFF(lit, want, pos, outlit) \
	check_stuff((lit), sizeof(lit) - 1, (want), (pos), (outlit), sizeof(outlit) - 1, #lit)

/* The stuffer on hand-picked inputs. */
static void
test_stuff_cases(void)
{
	struct dot_stuffer s;
	size_t used, produced;
	char out[64];

	CHECK_STUFF("", DOT_MORE, 0, ".\r\n");
	CHECK_STUFF("a\r\n", DOT_MORE, 0, "a\r\n.\r\n");
	CHECK_STUFF("a", DOT_MORE, 0, "a\r\n.\r\n");
	CHECK_STUFF(".", DOT_MORE, 0, "..\r\n.\r\n");
	CHECK_STUFF(".\r\n", DOT_MORE, 0, "..\r\n.\r\n");
	CHECK_STUFF("a\r\n.\r\nb", DOT_MORE, 0, "a\r\n..\r\nb\r\n.\r\n");
	CHECK_STUFF("..x\r\n", DOT_MORE, 0, "...x\r\n.\r\n");
	CHECK_STUFF("a.b\r\n.c\r\n", DOT_MORE, 0, "a.b\r\n..c\r\n.\r\n");
	CHECK_STUFF("\r\n\r\n", DOT_MORE, 0, "\r\n\r\n.\r\n");
	CHECK_STUFF("\r\n.", DOT_MORE, 0, "\r\n..\r\n.\r\n");
	CHECK_STUFF("a\nb", DOT_BAD_LF, 1, "a");
	CHECK_STUFF("\n", DOT_BAD_LF, 0, "");
	CHECK_STUFF("a\r\n.\n", DOT_BAD_LF, 4, "a\r\n..");
	CHECK_STUFF("a\rb", DOT_BAD_CR, 1, "a");
	CHECK_STUFF("a\r.\r\n", DOT_BAD_CR, 1, "a");
	CHECK_STUFF("a\r\r\n", DOT_BAD_CR, 1, "a");
	CHECK_STUFF("\r\r", DOT_BAD_CR, 0, "");

	/* A bare CR at the very end: dot_stuff_finish refuses. */
	dot_stuffer_init(&s);
	is_int(dot_stuff(&s, "ab\r", 3, &used, out, sizeof(out), &produced), DOT_MORE, "CR at end: more");
	is_int(used, 3, "CR at end: consumed");
	is_int(produced, 2, "CR at end: not written yet");
	is_int(s.octets, 3, "CR at end: counted");
	is_int(dot_stuff_finish(&s, out, sizeof(out)), -1, "finish after a bare CR: -1");

	/* The CR of the previous chunk, then not LF. */
	dot_stuffer_init(&s);
	dot_stuff(&s, "ab\r", 3, &used, out, sizeof(out), &produced);
	is_int(dot_stuff(&s, "x\r\n", 3, &used, out, sizeof(out), &produced), DOT_BAD_CR,
	    "CR from the last chunk, then x: bad CR");
	is_int(used, 0, "the bad CR is before this chunk");
	is_int(produced, 0, "nothing written");
	is_int(dot_stuff(&s, "\r\n", 2, &used, out, sizeof(out), &produced), DOT_BAD_CR,
	    "refused stays refused");
	is_int(dot_stuff_finish(&s, out, sizeof(out)), -1, "finish after a refusal: -1");

	/* The CR of the previous chunk, then LF: one CRLF out. */
	dot_stuffer_init(&s);
	dot_stuff(&s, "ab\r", 3, &used, out, sizeof(out), &produced);
	is_int(dot_stuff(&s, "\n.", 2, &used, out, sizeof(out), &produced), DOT_MORE, "CR | LF");
	is_mem(out, produced, "\r\n..", 4, "CR | LF: CRLF then the stuffed dot");
	is_int(dot_stuff_finish(&s, out, sizeof(out)), 5, "finish mid-line: 5 bytes");
	is_mem(out, 5, "\r\n.\r\n", 5, "finish mid-line: CRLF . CRLF");

	/* Output room: stops below two bytes, never splits a pair. */
	dot_stuffer_init(&s);
	is_int(dot_stuff(&s, "..", 2, &used, out, 1, &produced), DOT_MORE, "room 1: more");
	is_int(used, 0, "room 1: nothing consumed");
	is_int(produced, 0, "room 1: nothing written");
	is_int(dot_stuff(&s, "..", 2, &used, out, 3, &produced), DOT_MORE, "room 3");
	is_int(used, 1, "room 3: one dot consumed");
	is_mem(out, produced, "..", 2, "room 3: the dot doubled");
	is_int(dot_stuff(&s, "abcdef", 6, &used, out, 4, &produced), DOT_MORE, "room 4");
	is_int(used, 4, "room 4: fills the buffer");
	is_mem(out, produced, "abcd", 4, "room 4: bytes");

	/* finish needs its room; the empty message is ".\r\n". */
	dot_stuffer_init(&s);
	is_int(dot_stuff_finish(&s, out, 2), -1, "finish: room 2 is too small");
	is_int(dot_stuff_finish(&s, out, 3), 3, "finish of nothing: 3 bytes");
	is_mem(out, 3, ".\r\n", 3, "finish of nothing: . CRLF");
	is_int(dot_stuff_finish(&s, out, sizeof(out)), -1, "finish twice: -1");
	dot_stuffer_init(&s);
	dot_stuff(&s, "a", 1, &used, out, sizeof(out), &produced);
	is_int(dot_stuff_finish(&s, out, 4), -1, "finish mid-line: room 4 is too small");
}

/* Undo dot-stuffing of a DATA stream that ends with ".\r\n". */
static size_t
unstuff(const char *in, size_t len, char *out)
{
	size_t i, o = 0;
	bool bol = true;

	if (len < 3)
		abort();
	len -= 3;	/* ".\r\n" */
	for (i = 0; i < len; i++) {
		if (!(bol && in[i] == '.'))
			out[o++] = in[i];
		bol = in[i] == '\n';
	}
	return o;
}

/* Random content made only of CRLF lines and text (valid BDAT content). */
static size_t
random_content(char *buf, size_t max)
{
	size_t len = rng((uint32_t)max + 1), i;

	for (i = 0; i < len; i++) {
		uint32_t k = rng(100);

		if (k < 20 && i + 1 < len) {
			buf[i++] = '\r';
			buf[i] = '\n';
		} else
			buf[i] = k < 50 ? '.' : k < 90 ? 'a' : (char)(0x80 + rng(128));
	}
	return len;
}

/* Property: stuffed output scans to exactly its end and unstuffs back. */
static void
test_stuff_property(void)
{
	static struct stuff_outcome whole, split;
	static char buf[512], back[4096], expect[600];
	size_t cuts[512], len, ncuts, pos, k, explen;
	size_t failed_scan = 0, failed_back = 0, failed_split = 0, failed_bad = 0, bads = 0;
	struct scan_outcome sc, ref;
	int iter;

	for (iter = 0; iter < 4000; iter++) {
		len = iter % 2 ? random_content(buf, 200) : random_noise(buf, 64);
		stuff_pieces(buf, len, NULL, 0, sizeof(whole.out), &whole);
		/* Content is refused exactly where a scan would find a bare CR/LF. */
		ref = first_bare(buf, len);
		if (whole.result != DOT_MORE) {
			bads++;
			if (!((ref.result == DOT_BAD_CR || ref.result == DOT_BAD_LF) &&
			    ref.result == whole.result && ref.pos == whole.pos))
				failed_bad++;
		} else if (len > 0 && buf[len - 1] == '\r') {
			if (whole.finish != -1)
				failed_bad++;
		} else {
			/* No bare CR/LF in content; the scan of the stuffed stream ends at its end. */
			sc = scan_whole(whole.out, whole.outlen);
			if (whole.finish < 0 || sc.result != DOT_END || sc.pos != whole.outlen)
				failed_scan++;
			memcpy(expect, buf, len);
			explen = len;
			if (len > 0 && !(len >= 2 && buf[len - 2] == '\r' && buf[len - 1] == '\n')) {
				memcpy(expect + explen, "\r\n", 2);
				explen += 2;
			}
			k = unstuff(whole.out, whole.outlen, back);
			if (k != explen || memcmp(back, expect, k) != 0 || whole.octets != len)
				failed_back++;
		}
		/* Random pieces and small output buffers give the same bytes. */
		for (ncuts = 0, pos = 0; ncuts < 512; ncuts++) {
			pos += rng(6);
			if (pos >= len)
				break;
			cuts[ncuts] = pos;
		}
		stuff_pieces(buf, len, cuts, ncuts, 2 + rng(6), &split);
		if (split.result != whole.result || split.outlen != whole.outlen ||
		    memcmp(split.out, whole.out, whole.outlen) != 0 || split.finish != whole.finish)
			failed_split++;
	}
	diag("random content: %zu refused", bads);
	ok(bads > 100, "random content is refused sometimes");
	is_int(failed_bad, 0, "random content: refused exactly at the bare CR/LF");
	is_int(failed_scan, 0, "random content: stuffed stream ends exactly at its end");
	is_int(failed_back, 0, "random content: unstuffing gives the content back");
	is_int(failed_split, 0, "random content: pieces and small buffers agree");
}

/*
 * The byte loops of dotstream.c before the memchr() scan (commit 077a2f3),
 * kept here word for word as the reference for the differential test: the
 * scan may get faster, never different.  The state numbers are
 * dotstream.c's, so the scanners' whole structs can be compared.
 */
enum old_state {
	OLD_BOL = 0, OLD_TEXT, OLD_DOT, OLD_CR, OLD_END, OLD_BAD_CR, OLD_BAD_LF, OLD_DONE,
};

static enum dot_result
old_final_result(uint8_t state)
{
	return state == OLD_BAD_CR ? DOT_BAD_CR : state == OLD_BAD_LF ? DOT_BAD_LF : DOT_END;
}

static enum dot_result
old_dot_scan(struct dot_scanner *s, const char *buf, size_t len, size_t *used)
{
	const unsigned char *p = (const unsigned char *)buf;
	enum dot_result r = DOT_MORE;
	uint8_t state = s->state;
	size_t i = 0;

	*used = 0;
	if (state != OLD_BOL && state != OLD_TEXT && state != OLD_DOT)
		return old_final_result(state);
	while (i < len) {
		if (state == OLD_TEXT) {
			while (i < len && p[i] != '\r' && p[i] != '\n')
				i++;
			if (i == len)
				break;
		}
		if (p[i] == '\n') {
			state = OLD_BAD_LF;
			r = DOT_BAD_LF;
			break;
		}
		if (p[i] == '\r') {
			if (i + 1 == len)
				break;
			if (p[i + 1] != '\n') {
				state = OLD_BAD_CR;
				r = DOT_BAD_CR;
				break;
			}
			i += 2;
			if (state == OLD_DOT) {
				state = OLD_END;
				r = DOT_END;
				break;
			}
			state = OLD_BOL;
			continue;
		}
		if (state == OLD_BOL && p[i] == '.')
			state = OLD_DOT;
		else
			state = OLD_TEXT;
		i++;
	}
	s->octets += i;
	if (r == DOT_END)
		s->octets -= 3;
	s->state = state;
	*used = i;
	return r;
}

static enum dot_result
old_dot_stuff(struct dot_stuffer *s, const char *in, size_t len,
    size_t *used, char *out, size_t outlen, size_t *produced)
{
	const unsigned char *p = (const unsigned char *)in;
	enum dot_result r = DOT_MORE;
	uint8_t state = s->state;
	size_t i = 0, o = 0, n;

	*used = 0;
	*produced = 0;
	if (state == OLD_DONE)
		return DOT_END;
	if (state != OLD_BOL && state != OLD_TEXT && state != OLD_CR)
		return old_final_result(state);
	while (i < len && outlen - o >= 2) {
		if (state == OLD_CR) {
			if (p[i] != '\n') {
				if (i > 0)
					i--;
				state = OLD_BAD_CR;
				r = DOT_BAD_CR;
				break;
			}
			out[o++] = '\r';
			out[o++] = '\n';
			i++;
			state = OLD_BOL;
			continue;
		}
		if (p[i] == '\n') {
			state = OLD_BAD_LF;
			r = DOT_BAD_LF;
			break;
		}
		if (p[i] == '\r') {
			i++;
			state = OLD_CR;
			continue;
		}
		if (state == OLD_BOL && p[i] == '.') {
			out[o++] = '.';
			out[o++] = '.';
			i++;
			state = OLD_TEXT;
			continue;
		}
		n = 1;
		while (i + n < len && n < outlen - o &&
		    p[i + n] != '\r' && p[i + n] != '\n')
			n++;
		memcpy(out + o, p + i, n);
		o += n;
		i += n;
		state = OLD_TEXT;
	}
	s->octets += i;
	s->state = state;
	*used = i;
	*produced = o;
	return r;
}

/*
 * Hostile input for the differential test: long runs of text (so the
 * memchr() scan crosses word and vector widths), lone CRs and LFs at any
 * offset, dots at line start, NULs and high bytes, CR at a run's end.
 */
static size_t
random_hostile(char *buf, size_t max)
{
	size_t len = 0, run, k;

	while (len < max && rng(12) != 0) {
		run = rng(4) == 0 ? rng(300) : rng(20);
		for (k = 0; k < run && len < max; k++)
			buf[len++] = rng(8) ? (char)('a' + rng(26)) : (char)rng(256);
		if (len + 3 > max)
			break;
		switch (rng(10)) {
		case 0:
			buf[len++] = '\r';
			break;
		case 1:
			buf[len++] = '\n';
			break;
		case 2:
			memcpy(buf + len, "\r\n.", 3);
			len += 3;
			break;
		default:
			memcpy(buf + len, "\r\n", 2);
			len += 2;
			if (rng(5) == 0)
				buf[len++] = '.';
		}
	}
	return len;
}

/*
 * Feed buf to the new and the old scanner in the same pieces, fed as the
 * session does (bytes not consumed go again with the next piece); true when
 * every call gives the same result, the same count used and the same state.
 */
static bool
scan_differs(const char *buf, size_t len, const size_t *cuts, size_t ncuts)
{
	struct dot_scanner a, b;
	size_t off = 0, end, ua, ub, k;
	enum dot_result ra, rb;

	dot_scanner_init(&a);
	dot_scanner_init(&b);
	for (k = 0; k <= ncuts; k++) {
		end = k < ncuts ? cuts[k] : len;
		if (end < off)
			continue;
		ra = scan_exact(&a, buf + off, end - off, &ua);
		rb = old_dot_scan(&b, buf + off, end - off, &ub);
		if (ra != rb || ua != ub || a.state != b.state || a.octets != b.octets ||
		    dot_scan_at_dot(&a) != (b.state == OLD_DOT))
			return true;
		off += ua;
		if (ra != DOT_MORE)
			return false;
	}
	return false;
}

/* The same for the stuffer, through an output buffer of outroom bytes. */
static bool
stuff_differs(const char *buf, size_t len, const size_t *cuts, size_t ncuts, size_t outroom)
{
	struct dot_stuffer a, b;
	char oa[64], ob[64];
	size_t off = 0, end, ua, ub, pa, pb, k;
	enum dot_result ra, rb;
	char *copy;

	dot_stuffer_init(&a);
	dot_stuffer_init(&b);
	for (k = 0; k <= ncuts; k++) {
		end = k < ncuts ? cuts[k] : len;
		while (off < end) {
			copy = exact(buf + off, end - off);
			ra = dot_stuff(&a, copy, end - off, &ua, oa, outroom, &pa);
			free(copy);
			rb = old_dot_stuff(&b, buf + off, end - off, &ub, ob, outroom, &pb);
			if (ra != rb || ua != ub || pa != pb || memcmp(oa, ob, pa) != 0 ||
			    a.state != b.state || a.octets != b.octets)
				return true;
			if (ra != DOT_MORE)
				return false;
			off += ua;
		}
	}
	return false;
}

/* Differential: the memchr() scan against the byte loop it replaced. */
static void
test_differential(void)
{
	static char buf[4096];
	size_t cuts[4096], len, ncuts, pos, k;
	size_t scan_bad = 0, stuff_bad = 0;
	int iter;

	for (iter = 0; iter < 3000; iter++) {
		switch (iter % 3) {
		case 0:
			len = random_hostile(buf, sizeof(buf));
			break;
		case 1:
			len = random_message(buf, 512);
			break;
		default:
			len = random_noise(buf, 200);
		}
		/* One buffer, random pieces, byte by byte. */
		scan_bad += scan_differs(buf, len, NULL, 0);
		for (ncuts = 0, pos = 0; ncuts < sizeof(cuts) / sizeof(cuts[0]); ncuts++) {
			pos += 1 + rng(iter % 2 ? 8 : 400);
			if (pos >= len)
				break;
			cuts[ncuts] = pos;
		}
		scan_bad += scan_differs(buf, len, cuts, ncuts);
		stuff_bad += stuff_differs(buf, len, cuts, ncuts, 2 + rng(62));
		stuff_bad += stuff_differs(buf, len, NULL, 0, 64);
		if (iter % 10 == 0) {
			for (k = 0; k < len; k++)
				cuts[k] = k;
			scan_bad += scan_differs(buf, len, cuts, len);
			stuff_bad += stuff_differs(buf, len, cuts, len, 2 + rng(62));
		}
	}
	is_int(scan_bad, 0, "differential: dot_scan agrees with the old byte loop call by call");
	is_int(stuff_bad, 0, "differential: dot_stuff agrees with the old byte loop call by call");
}

/* Run every group of tests and print the TAP plan. */
/* crlf_check over pieces: the result, and *bad, for relayed BDAT chunks. */
static enum dot_result
crlf_pieces(const char *const *pieces, size_t n, size_t *bad, bool *cr_left)
{
	struct crlf_checker c;
	enum dot_result r = DOT_MORE;

	crlf_checker_init(&c);
	*bad = 0;
	for (size_t i = 0; i < n && r == DOT_MORE; i++)
		r = crlf_check(&c, pieces[i], strlen(pieces[i]), bad);
	*cr_left = crlf_check_cr_pending(&c);
	return r;
}

/* Relayed BDAT content: bare CR and LF found across chunk boundaries. */
static void
test_crlf_check(void)
{
	size_t bad;
	bool cr;
	const char *clean[] = { "Subject: x\r\n\r\nbody\r\n" };
	const char *split[] = { "a\r", "\nb\r\n" };
	const char *lf[] = { "Subject: x\r\n", "\n.\nsmuggled" };
	const char *lf2[] = { "ab\ncd" };
	const char *crsplit[] = { "a\r", "b" };
	const char *crin[] = { "a\rb" };
	const char *crend[] = { "body\r" };

	is_int(crlf_pieces(clean, 1, &bad, &cr), DOT_MORE, "crlf: clean content");
	ok(!cr, "crlf: nothing pending");
	is_int(crlf_pieces(split, 2, &bad, &cr), DOT_MORE, "crlf: CRLF split across chunks is fine");
	is_int(crlf_pieces(lf, 2, &bad, &cr), DOT_BAD_LF, "crlf: bare LF at a chunk's start");
	is_int(bad, 0, "crlf: at its first byte");
	is_int(crlf_pieces(lf2, 1, &bad, &cr), DOT_BAD_LF, "crlf: bare LF inside");
	is_int(bad, 2, "crlf: at the LF");
	is_int(crlf_pieces(crsplit, 2, &bad, &cr), DOT_BAD_CR, "crlf: a chunk's final CR, no LF after it");
	is_int(bad, 0, "crlf: reported at the next piece's start");
	is_int(crlf_pieces(crin, 1, &bad, &cr), DOT_BAD_CR, "crlf: bare CR inside");
	is_int(bad, 1, "crlf: at the CR");
	is_int(crlf_pieces(crend, 1, &bad, &cr), DOT_MORE, "crlf: a final CR waits");
	ok(cr, "crlf: and is pending at the end (a bare CR if the chunk was LAST)");
	{
		struct crlf_checker c;

		crlf_checker_init(&c);
		crlf_check(&c, "\n", 1, &bad);
		is_int(crlf_check(&c, "ok\r\n", 4, &bad), DOT_BAD_LF, "crlf: a refusal is final");
	}
	/* Random content split anywhere: crlf_check refuses what dot_stuff refuses. */
	{
		static const char alphabet[] = "ab\r\n.";
		unsigned seed = 12345, agree = 0;

		for (int round = 0; round < 3000; round++) {
			char in[40], out[200];
			size_t len, cut, used, produced, bad2;
			struct dot_stuffer st;
			struct crlf_checker c;
			enum dot_result rs, rc;

			seed = seed * 1103515245u + 12345u;
			len = (seed >> 16) % sizeof(in);
			for (size_t i = 0; i < len; i++) {
				seed = seed * 1103515245u + 12345u;
				in[i] = alphabet[(seed >> 16) % 5];
			}
			seed = seed * 1103515245u + 12345u;
			cut = len ? (seed >> 16) % (len + 1) : 0;
			dot_stuffer_init(&st);
			rs = dot_stuff(&st, in, len, &used, out, sizeof(out), &produced);
			crlf_checker_init(&c);
			rc = crlf_check(&c, in, cut, &bad2);
			if (rc == DOT_MORE)
				rc = crlf_check(&c, in + cut, len - cut, &bad2);
			if (rc == rs && (rs != DOT_MORE ||
			    crlf_check_cr_pending(&c) == (dot_stuff_finish(&st, out, sizeof(out)) < 0)))
				agree++;
		}
		is_int(agree, 3000, "crlf: agrees with dot_stuff on 3000 random split inputs");
	}
}

int
main(void)
{
	test_scan_cases();
	test_scan_property();
	test_stuff_cases();
	test_stuff_property();
	test_differential();
	test_crlf_check();
	return done_testing();
}
