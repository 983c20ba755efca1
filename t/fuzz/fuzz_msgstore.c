/*
 * fuzz_msgstore.c - libFuzzer harness for msgstore.c.
 *
 * Input: one byte seeding the sizes of the pieces the stream is fed in,
 * one byte choosing the output buffer size (1..16) and the memory
 * threshold (0, 16, 64 or 4096 bytes, so bodies spill to /tmp), then the
 * stuffed DATA stream.  Invariants, abort() when broken:
 *   - fed in one piece with the headers in memory, or in pieces with them
 *     spilled past the threshold, the store gives the same headers and
 *     the same output (whatever the bytes, bare CR/LF included), or refuses
 *     both with EMSGSIZE (header section over 64 KB) or both with EILSEQ
 *     (a NUL in a header);
 *   - for a stream of CRLF lines only (what dot_scan lets through), the
 *     output is the stream unstuffed and stuffed again, with a final CRLF
 *     when missing: for a canonically stuffed stream (every line starting
 *     with "." starts with ".."), that is the stream itself plus a final
 *     CRLF when missing;
 *   - msgstore_write_fd writes the unstuffed message, msgstore_size bytes;
 *   - the same header edits (inserts, changes, deletes, by index and by
 *     name) get the same answers and leave the same headers and output.
 * Every feed gets an exact-size heap copy, so reads past the end are seen.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "msgstore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct str {
	char	*p;
	size_t	 len;
	size_t	 cap;
};

static int memfd = -1;

/* Append n bytes. */
static void
str_add(struct str *s, const char *p, size_t n)
{
	if (s->len + n + 1 > s->cap) {
		s->cap = (s->len + n + 1) * 2;
		if ((s->p = realloc(s->p, s->cap)) == NULL)
			abort();
	}
	memcpy(s->p + s->len, p, n);
	s->len += n;
}

/* Whether a and b hold the same bytes. */
static bool
str_eq(const struct str *a, const struct str *b)
{
	return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

/*
 * Feed buf in pieces whose sizes follow from seed (seed 0: one piece).
 * NULL with *err set when the store refuses it (a header section over
 * the limit: a long input).
 */
static struct msgstore *
store_fed(const char *buf, size_t len, unsigned seed, size_t threshold, int *err)
{
	struct msgstore *m = msgstore_new("/tmp", threshold, 1 << 16);
	uint32_t x = seed * 2654435761u + 1;
	size_t off = 0, n;
	char *piece;

	while (off < len) {
		n = len - off;
		if (seed != 0) {
			x = x * 1103515245u + 12345u;
			n = 1 + (x >> 16) % (seed % 64 + 1);
			if (n > len - off)
				n = len - off;
		}
		if ((piece = malloc(n)) == NULL)
			abort();
		memcpy(piece, buf + off, n);
		if (msgstore_feed(m, piece, n) != 0) {
			*err = errno;
			free(piece);
			msgstore_free(m);
			return NULL;
		}
		free(piece);
		off += n;
	}
	if (msgstore_finish(m) != 0) {
		*err = errno;
		msgstore_free(m);
		return NULL;
	}
	*err = 0;
	return m;
}

/* The output through an exact-size buffer of n bytes. */
static struct str
output_of(struct msgstore *m, size_t n)
{
	struct str s = { 0 };
	char *buf = malloc(n);
	ssize_t r;

	if (buf == NULL || msgstore_output_begin(m) != 0)
		abort();
	while ((r = msgstore_output_read(m, buf, n)) > 0) {
		if ((size_t)r > n)
			abort();
		str_add(&s, buf, (size_t)r);
	}
	if (r < 0)
		abort();
	free(buf);
	return s;
}

/* Headers as "name\0value\0..." */
static struct str
headers_of(struct msgstore *m)
{
	struct str s = { 0 };
	const struct msg_header *h;
	size_t i;

	for (i = 0; i < msgstore_nheaders(m); i++) {
		h = msgstore_header(m, i);
		str_add(&s, h->name, strlen(h->name) + 1);
		str_add(&s, h->value, strlen(h->value) + 1);
	}
	return s;
}

/* What write_fd writes, through a memfd. */
static struct str
written(struct msgstore *m)
{
	struct str s = { 0 };
	char buf[4096];
	ssize_t r;

	if (memfd == -1 && (memfd = memfd_create("fuzz_msgstore", MFD_CLOEXEC)) == -1)
		abort();
	if (ftruncate(memfd, 0) != 0 || lseek(memfd, 0, SEEK_SET) != 0)
		abort();
	if (msgstore_write_fd(m, memfd) != 0 || lseek(memfd, 0, SEEK_SET) != 0)
		abort();
	while ((r = read(memfd, buf, sizeof(buf))) > 0)
		str_add(&s, buf, (size_t)r);
	return s;
}

/* Whether every CR is followed by LF and every LF preceded by CR. */
static bool
crlf_only(const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
			return false;
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return false;
	}
	return true;
}

/* Whether a line start is at i (start, or after CR LF). */
static bool
line_start(const char *p, size_t i)
{
	return i == 0 || (i >= 2 && p[i - 2] == '\r' && p[i - 1] == '\n');
}

/* The first "." of each line removed. */
static struct str
unstuff(const char *p, size_t n)
{
	struct str s = { 0 };
	size_t i;

	for (i = 0; i < n; i++)
		if (!(p[i] == '.' && line_start(p, i)))
			str_add(&s, p + i, 1);
	return s;
}

/* A "." added at the start of each line that starts with one. */
static struct str
stuff(const char *p, size_t n)
{
	struct str s = { 0 };
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i] == '.' && line_start(p, i))
			str_add(&s, ".", 1);
		str_add(&s, p + i, 1);
	}
	return s;
}

/* A final CRLF on a non-empty string that lacks it. */
static void
end_line(struct str *s)
{
	if (s->len > 0 && (s->len < 2 || s->p[s->len - 2] != '\r' || s->p[s->len - 1] != '\n'))
		str_add(s, "\r\n", 2);
}

/* Whether each line starting with "." starts with "..". */
static bool
canonical(const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i] == '.' && line_start(p, i) && (i + 1 == n || p[i + 1] != '.'))
			return false;
	return true;
}

/*
 * The same header edits on both stores (seeded): inserts, changes and
 * deletes by index and by name, which must give the same answers.
 */
static void
edit_both(struct msgstore *a, struct msgstore *b, unsigned seed)
{
	uint32_t x = seed * 2654435761u + 7;
	char name[1000], value[32];
	int ra, rb;

	for (int i = 0; i < 40; i++) {
		size_t n = msgstore_nheaders(a), k;

		x = x * 1103515245u + 12345u;
		k = n > 0 ? (x >> 4) % n : 0;
		snprintf(value, sizeof(value), " e%d", i);
		if (n > 0)
			snprintf(name, sizeof(name), "%s", msgstore_header(a, k)->name);
		else
			snprintf(name, sizeof(name), "X-E");
		switch ((x >> 16) % 4) {
		case 0:
			ra = msgstore_insert_header(a, k, "X-E", value);
			rb = msgstore_insert_header(b, k, "X-E", value);
			break;
		case 1:
			ra = msgstore_change_header_at(a, k, name, (x >> 2) % 2 ? value : NULL);
			rb = msgstore_change_header_at(b, k, name, (x >> 2) % 2 ? value : NULL);
			break;
		default:
			ra = msgstore_change_header(a, name, 1 + (x >> 3) % 3, (x >> 2) % 2 ? value : NULL);
			rb = msgstore_change_header(b, name, 1 + (x >> 3) % 3, (x >> 2) % 2 ? value : NULL);
			break;
		}
		if (ra != rb || msgstore_changes(a) != msgstore_changes(b))
			abort();
	}
}

/* One input: a piece seed, a buffer/threshold byte, then the stream. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t thresholds[] = { 0, 16, 64, 4096 };
	struct msgstore *whole, *split;
	struct str o1, o2, h1, h2, un, want, w;
	const char *buf;
	size_t len, bufsize, threshold;
	int err1, err2;

	if (size < 2)
		return 0;
	buf = (const char *)data + 2;
	len = size - 2;
	bufsize = 1 + data[1] % 16;
	threshold = thresholds[(data[1] >> 4) % 4];

	whole = store_fed(buf, len, 0, SIZE_MAX, &err1);	/* headers never spilled */
	split = store_fed(buf, len, data[0] ? data[0] : 1, threshold, &err2);
	if (whole == NULL || split == NULL) {
		/* only a header section over the limit, or a NUL in a header, may
		 * be refused, the same way however the stream is cut */
		if ((err1 != EMSGSIZE && err1 != EILSEQ) || err2 != err1 || whole != NULL ||
		    split != NULL)
			abort();
		return 0;
	}
	o1 = output_of(whole, 65536);
	o2 = output_of(split, bufsize);
	h1 = headers_of(whole);
	h2 = headers_of(split);
	if (!str_eq(&o1, &o2) || !str_eq(&h1, &h2))
		abort();

	if (crlf_only(buf, len)) {
		un = unstuff(buf, len);
		want = stuff(un.p, un.len);
		end_line(&want);
		if (!str_eq(&o1, &want))
			abort();
		if (canonical(buf, len)) {
			struct str in = { 0 };

			str_add(&in, buf, len);
			end_line(&in);
			if (!str_eq(&o1, &in))
				abort();
			free(in.p);
		}
		end_line(&un);
		w = written(split);
		if (!str_eq(&w, &un) || msgstore_size(split) != un.len)
			abort();
		free(w.p);
		free(un.p);
		free(want.p);
	}
	free(o1.p);
	free(o2.p);
	free(h1.p);
	free(h2.p);
	edit_both(whole, split, data[0]);
	o1 = output_of(whole, 65536);
	o2 = output_of(split, bufsize);
	h1 = headers_of(whole);
	h2 = headers_of(split);
	if (!str_eq(&o1, &o2) || !str_eq(&h1, &h2))
		abort();
	free(o1.p);
	free(o2.p);
	free(h1.p);
	free(h2.p);
	msgstore_free(whole);
	msgstore_free(split);
	return 0;
}
