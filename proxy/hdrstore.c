/*
 * hdrstore.c - the header section of a held message (see hdrstore.h).
 *
 * In memory the headers are one buffer of lines and a gap buffer of
 * 8-byte entries.  Once lines and entries take more than mem_limit bytes
 * (limits.spool_memory, the body's budget too), the section is spilled,
 * as the body is, to an unlinked temporary file in the spool directory:
 *
 *	file	records "len|mbox<<31" (4 bytes) + the line, grouped in blocks
 *		of about HB_N headers (HB_BYTES, or one header, at most);
 *	blocks	in memory, 16 bytes each: file offset, length, header count;
 *		at limits.max_header_size (1 MiB) of 4-byte headers, 262,144
 *		headers in about 2,000 blocks: 32 KiB;
 *	window	one block read into memory; every read or change goes
 *		through it, so the headers a filter walks in order, or a run
 *		of changes near one another, cost one read (and one write) a
 *		block, not one a header.  A changed block goes back to its place
 *		when it still fits, else to the end of the file; one that grows
 *		past twice its size splits in two, one that empties goes.  When
 *		dead bytes outweigh the live ones the file is rewritten.
 *
 * Finding header i walks the blocks from the last one found, so the walks
 * filters make (in order, or a search by name going on from where the last
 * one for that name ended: the hints) cost what they move.  A failed spool
 * read or write sets a sticky error: the message then cannot go out.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "hdrstore.h"
#include "log.h"

#define NAME_MAX_LEN	997	/* longest header name a filter may set */
#define TEMP_NAME	"/smtpchain-msg.XXXXXX"
#define HB_N		128	/* headers a spilled block is cut to */
#define HB_BYTES	16384	/* bytes a spilled block is cut to */
#define REC_HDR		4	/* a record's length and mbox bit */
#define LINE_MAX_LEN	((size_t)INT32_MAX / 4)	/* longest line a filter may make */
#define DEAD_MIN	(1024 * 1024)	/* dead file bytes before a rewrite */

/* Room for need bytes in a growing buffer, never more than limit unless need is. */
void
buf_reserve(char **buf, size_t *cap, size_t need, size_t limit)
{
	size_t ncap;

	if (need <= *cap)
		return;
	ncap = *cap < 256 ? 256 : *cap;
	while (ncap < need && ncap <= SIZE_MAX / 2)
		ncap *= 2;
	if (ncap < need)
		ncap = need;
	if (ncap > limit && need <= limit)
		ncap = limit;
	*buf = xrealloc(*buf, ncap);
	*cap = ncap;
}

/* Write all of p to fd despite short writes and signals. */
int
write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Write all of p to fd at off. */
static int
pwrite_all(int fd, const char *p, size_t n, uint64_t off)
{
	ssize_t w;

	while (n > 0) {
		w = pwrite(fd, p, n, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		p += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/* Read n bytes of fd at off: 0, or -1 with errno (EIO: the file lost bytes we wrote). */
static int
pread_all(int fd, char *p, size_t n, uint64_t off)
{
	ssize_t r;

	while (n > 0) {
		r = pread(fd, p, n, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0) {
			errno = EIO;
			return -1;
		}
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* A new temporary file in dir, unlinked at once. */
int
spool_tempfile(const char *dir)
{
	size_t dlen = strlen(dir);
	char *path = xmalloc(dlen + sizeof(TEMP_NAME));
	int fd, saved;

	memcpy(path, dir, dlen);
	memcpy(path + dlen, TEMP_NAME, sizeof(TEMP_NAME));
	if ((fd = mkostemp(path, O_CLOEXEC)) == -1) {
		saved = errno;
		free(path);
		errno = saved;
		return -1;
	}
	if (unlink(path) == -1) {
		saved = errno;
		close(fd);
		free(path);
		errno = saved;
		return -1;
	}
	free(path);
	return fd;
}

/* A header name a filter may set: 1..997 name bytes. */
static bool
valid_name(const char *name)
{
	size_t i;

	for (i = 0; name[i] != '\0'; i++)
		if (!name_char((unsigned char)name[i]) || i >= NAME_MAX_LEN)
			return false;
	return i > 0;
}

/* A header value a filter may set: CR only in CR LF followed by SP or HTAB. */
static bool
valid_value(const char *value)
{
	const char *p;

	for (p = value; *p != '\0'; p++) {
		if (*p == '\n')
			return false;
		if (*p == '\r') {
			if (p[1] != '\n' || (p[2] != ' ' && p[2] != '\t'))
				return false;
			p++;
		}
	}
	return true;
}

/* Length of the name at the start of a header line (white space and colon not included). */
size_t
line_namelen(const char *line, size_t len)
{
	size_t k = 0;

	while (k < len && name_char((unsigned char)line[k]))
		k++;
	return k;
}

/* Offset of the value in a header line: just after its colon. */
size_t
line_valueoff(const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);

	return colon != NULL ? (size_t)(colon - line) + 1 : len;
}

/* Whether a header has the name (nlen bytes), case-insensitive. */
static bool
hline_named(const struct hline *l, const char *name, size_t nlen)
{
	if (l->mbox)
		return nlen == sizeof(MBOX_NAME) - 1 && strncasecmp(name, MBOX_NAME, nlen) == 0;
	return l->len >= nlen && line_namelen(l->p, l->len) == nlen &&
	    strncasecmp(l->p, name, nlen) == 0;
}

/* An empty header section. */
void
hs_init(struct hdrstore *hs, const char *spool_dir, size_t mem_limit, size_t line_limit)
{
	memset(hs, 0, sizeof(*hs));
	hs->spool_dir = spool_dir;
	hs->mem_limit = mem_limit;
	hs->line_limit = line_limit;
	hs->fd = -1;
	hs->win.blk = SIZE_MAX;
}

/* Free its buffers and file. */
void
hs_free(struct hdrstore *hs)
{
	free(hs->hsec);
	free(hs->ents);
	for (size_t k = 0; k < HS_NHINTS; k++)
		free(hs->hints[k].name);
	free(hs->blocks);
	free(hs->win.buf);
	free(hs->win.offs);
	if (hs->fd != -1)
		close(hs->fd);
	hs_init(hs, NULL, 0, 0);
}

/* Record a spool failure (sticky) and return -1 with its errno. */
static int
hs_fail(struct hdrstore *hs)
{
	if (hs->error == 0)
		hs->error = errno;
	errno = hs->error;
	return -1;
}

/* ------------------------------------------------------------------ */
/* In memory: one buffer of lines, a gap buffer of entries.            */

/* The entry of header i (i < nhdrs). */
static struct hent *
ent_at(const struct hdrstore *hs, size_t i)
{
	return &hs->ents[i < hs->gap_at ? i : i + hs->gap_len];
}

/* Move the gap of the entry list to index at (<= nhdrs): the cost is the distance. */
static void
gap_move(struct hdrstore *hs, size_t at)
{
	if (at < hs->gap_at)
		memmove(hs->ents + at + hs->gap_len, hs->ents + at,
		    (hs->gap_at - at) * sizeof(*hs->ents));
	else if (at > hs->gap_at)
		memmove(hs->ents + hs->gap_at, hs->ents + hs->gap_at + hs->gap_len,
		    (at - hs->gap_at) * sizeof(*hs->ents));
	hs->gap_at = at;
}

/* A full entry list doubles; the gap is at its end, then. */
static void
gap_grow(struct hdrstore *hs)
{
	size_t ncap = hs->ents_cap ? hs->ents_cap * 2 : 16;

	gap_move(hs, hs->nhdrs);
	hs->ents = xrealloc(hs->ents, ncap * sizeof(*hs->ents));
	hs->gap_len = ncap - hs->nhdrs;
	hs->ents_cap = ncap;
}

/* Put a header entry at index at (<= nhdrs). */
static void
mem_insert(struct hdrstore *hs, size_t at, struct hent e)
{
	if (hs->gap_len == 0)
		gap_grow(hs);
	gap_move(hs, at);
	hs->ents[at] = e;
	hs->gap_at++;
	hs->gap_len--;
	hs->nhdrs++;
}

/* Take header at (< nhdrs) out of the list; its line is dead. */
static void
mem_remove(struct hdrstore *hs, size_t at)
{
	gap_move(hs, at);
	hs->hdead += hs->ents[at + hs->gap_len].len;
	hs->gap_len++;
	hs->nhdrs--;
}

/*
 * Copy the live lines to a new buffer, in order, when more than half of
 * the buffer is dead (only once the header section is parsed: the parser
 * keeps offsets into it).  The cost is the live bytes, paid for by as many
 * dead ones.
 */
static void
hsec_compact(struct hdrstore *hs)
{
	char *nbuf;
	size_t len = 0;

	if (!hs->parsed || hs->hdead < 65536 || hs->hdead < hs->hsec_len / 2)
		return;
	nbuf = xmalloc(hs->hsec_len - hs->hdead + 1);
	for (size_t i = 0; i < hs->nhdrs; i++) {
		struct hent *e = ent_at(hs, i);

		memcpy(nbuf + len, hs->hsec + e->off, e->len);
		e->off = (uint32_t)len;
		len += e->len;
	}
	free(hs->hsec);
	hs->hsec = nbuf;
	hs->hsec_len = hs->hsec_cap = len;
	hs->hdead = 0;
}

/*
 * A new line at the end of the buffer, for entry *e: the prefix (name and
 * colon) of header `from` as the message spells them (from < nhdrs), or
 * name and ":"; then the value.  0, or -1 with errno (EFBIG: past what an
 * offset holds).
 */
static int
hsec_add(struct hdrstore *hs, size_t from, const char *name, const char *value, size_t valuelen,
    struct hent *e)
{
	size_t preoff = 0, prelen, clen = 0, n;
	char *dst;

	hsec_compact(hs);
	if (from < hs->nhdrs && ent_at(hs, from)->mbox) {
		name = MBOX_NAME;	/* a changed mbox line is a real header */
		from = SIZE_MAX;
	}
	if (from < hs->nhdrs) {
		const struct hent *f = ent_at(hs, from);

		preoff = f->off;
		prelen = line_valueoff(hs->hsec + f->off, f->len);
	} else {
		prelen = strlen(name);
		clen = 1;
	}
	n = prelen + clen + valuelen;
	if (valuelen > INT32_MAX || n > INT32_MAX || hs->hsec_len > (size_t)INT32_MAX - n) {
		errno = EFBIG;
		return -1;
	}
	buf_reserve(&hs->hsec, &hs->hsec_cap, hs->hsec_len + n, hs->line_limit);
	dst = hs->hsec + hs->hsec_len;
	if (from < hs->nhdrs)
		memmove(dst, hs->hsec + preoff, prelen);
	else {
		memcpy(dst, name, prelen);
		dst[prelen] = ':';
	}
	memcpy(dst + prelen + clen, value, valuelen);
	e->off = (uint32_t)hs->hsec_len;
	e->len = (uint32_t)n & INT32_MAX;
	e->mbox = 0;
	hs->hsec_len += n;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Spilled: blocks of records in a file, one block in the window.      */

/* A new block descriptor at index at. */
static void
blocks_insert(struct hdrstore *hs, size_t at, struct hblock b)
{
	if (hs->nblocks == hs->blocks_cap) {
		hs->blocks_cap = hs->blocks_cap ? hs->blocks_cap * 2 : 64;
		hs->blocks = xrealloc(hs->blocks, hs->blocks_cap * sizeof(*hs->blocks));
	}
	memmove(hs->blocks + at + 1, hs->blocks + at, (hs->nblocks - at) * sizeof(*hs->blocks));
	hs->blocks[at] = b;
	hs->nblocks++;
}

/* The length and mbox bit of the record at buf. */
static uint32_t
rec_hdr(const char *buf)
{
	uint32_t h;

	memcpy(&h, buf, sizeof(h));
	return h;
}

/* Room for n record offsets in the window. */
static void
win_offs_reserve(struct hwindow *w, size_t n)
{
	if (n <= w->offs_cap)
		return;
	w->offs_cap = n < 2 * HB_N + 2 ? 2 * HB_N + 2 : n * 2;
	w->offs = xrealloc(w->offs, w->offs_cap * sizeof(*w->offs));
}

/* Rewrite the file with only the live blocks, in order (the window is clean). */
static int
sp_compact(struct hdrstore *hs)
{
	struct hwindow *w = &hs->win;
	uint64_t end = 0;
	int fd, saved;
	size_t b;

	if ((fd = spool_tempfile(hs->spool_dir)) == -1)
		return -1;
	w->blk = SIZE_MAX;	/* its buffer carries the blocks over */
	for (b = 0; b < hs->nblocks; b++) {
		const struct hblock *k = &hs->blocks[b];

		buf_reserve(&w->buf, &w->cap, k->len, SIZE_MAX);
		if (pread_all(hs->fd, w->buf, k->len, k->off) == -1 ||
		    write_all(fd, w->buf, k->len) == -1) {
			saved = errno;
			close(fd);
			errno = saved;
			return -1;	/* the old file stays as it was */
		}
	}
	for (b = 0; b < hs->nblocks; b++) {
		hs->blocks[b].off = end;
		end += hs->blocks[b].len;
	}
	close(hs->fd);
	hs->fd = fd;
	hs->file_end = end;
	hs->file_dead = 0;
	return 0;
}

/* Write a changed window back: in its place if it fits, else at the end of the file. */
static int
win_flush(struct hdrstore *hs)
{
	struct hwindow *w = &hs->win;
	struct hblock *b;

	if (w->blk == SIZE_MAX || !w->dirty)
		return 0;
	b = &hs->blocks[w->blk];
	if (w->len <= b->len) {
		if (pwrite_all(hs->fd, w->buf, w->len, b->off) == -1)
			return -1;
		hs->file_dead += b->len - w->len;
	} else {
		if (pwrite_all(hs->fd, w->buf, w->len, hs->file_end) == -1)
			return -1;
		hs->file_dead += b->len;
		b->off = hs->file_end;
		hs->file_end += w->len;
	}
	b->len = (uint32_t)w->len;
	w->dirty = false;
	if (hs->file_dead > DEAD_MIN && hs->file_dead > hs->file_end / 2)
		return sp_compact(hs);
	return 0;
}

/* Read block b, whose first header is header first, into the window. */
static int
win_load(struct hdrstore *hs, size_t b, size_t first)
{
	struct hwindow *w = &hs->win;
	const struct hblock *k = &hs->blocks[b];
	size_t pos = 0;

	w->blk = SIZE_MAX;
	buf_reserve(&w->buf, &w->cap, k->len, SIZE_MAX);
	if (pread_all(hs->fd, w->buf, k->len, k->off) == -1)
		return -1;
	win_offs_reserve(w, k->n);
	for (size_t j = 0; j < k->n; j++) {
		if (k->len - pos < REC_HDR)
			break;
		w->offs[j] = (uint32_t)pos;
		pos += REC_HDR + (rec_hdr(w->buf + pos) & INT32_MAX);
	}
	if (pos != k->len) {
		errno = EIO;	/* the file is not what we wrote */
		return -1;
	}
	w->blk = b;
	w->first = first;
	w->len = k->len;
	w->dirty = false;
	hs->cur_blk = b;
	hs->cur_first = first;
	return 0;
}

/* Make header i (< nhdrs) one of the window's: walk the blocks from the last one found. */
static int
sp_locate(struct hdrstore *hs, size_t i)
{
	struct hwindow *w = &hs->win;
	size_t b, first;

	if (w->blk != SIZE_MAX && i >= w->first && i - w->first < hs->blocks[w->blk].n)
		return 0;
	if (win_flush(hs) == -1)
		return -1;
	b = hs->cur_blk;
	first = hs->cur_first;
	if (b >= hs->nblocks)
		b = first = 0;
	while (i >= first + hs->blocks[b].n) {
		first += hs->blocks[b].n;
		b++;
	}
	while (i < first) {
		b--;
		first -= hs->blocks[b].n;
	}
	return win_load(hs, b, first);
}

/* A window grown past twice a block's size: its first half becomes a block of its own. */
static int
win_split(struct hdrstore *hs)
{
	struct hwindow *w = &hs->win;
	size_t n = hs->blocks[w->blk].n, k, j;
	struct hblock nb;

	if (n <= 1 || (n <= 2 * HB_N && w->len <= 2 * HB_BYTES))
		return 0;
	k = n / 2;
	nb.off = hs->file_end;
	nb.len = w->offs[k];
	nb.n = (uint32_t)k;
	if (pwrite_all(hs->fd, w->buf, nb.len, nb.off) == -1)
		return -1;
	hs->file_end += nb.len;
	blocks_insert(hs, w->blk, nb);
	w->blk++;
	w->first += k;
	hs->blocks[w->blk].n = (uint32_t)(n - k);
	memmove(w->buf, w->buf + nb.len, w->len - nb.len);
	w->len -= nb.len;
	for (j = 0; j < n - k; j++)
		w->offs[j] = w->offs[j + k] - nb.len;
	hs->cur_blk = w->blk;
	hs->cur_first = w->first;
	return 0;
}

/*
 * In the window's record j, replace the line's bytes from `from` to its
 * end by a, b, c (none pointing into the window), and set its mbox bit.
 * j == the block's count: a new record at the end.
 */
static void
win_splice(struct hdrstore *hs, size_t j, bool add, size_t from, const char *a, size_t alen,
    const char *b, size_t blen, const char *c, size_t clen, bool mbox)
{
	struct hwindow *w = &hs->win;
	size_t n = hs->blocks[w->blk].n, pos, oldlen = 0, newlen, start, end, k;
	uint32_t h;

	pos = j < n ? w->offs[j] : w->len;
	if (add) {
		win_offs_reserve(w, n + 1);
		memmove(w->offs + j + 1, w->offs + j, (n - j) * sizeof(*w->offs));
		w->offs[j] = (uint32_t)pos;
		buf_reserve(&w->buf, &w->cap, w->len + REC_HDR, SIZE_MAX);
		memmove(w->buf + pos + REC_HDR, w->buf + pos, w->len - pos);
		memset(w->buf + pos, 0, REC_HDR);
		w->len += REC_HDR;
		n++;
		hs->blocks[w->blk].n = (uint32_t)n;
		for (k = j + 1; k < n; k++)
			w->offs[k] += REC_HDR;
		from = 0;
	} else
		oldlen = rec_hdr(w->buf + pos) & INT32_MAX;
	newlen = from + alen + blen + clen;
	start = pos + REC_HDR + from;
	end = pos + REC_HDR + oldlen;
	buf_reserve(&w->buf, &w->cap, w->len - (end - start) + (newlen - from), SIZE_MAX);
	memmove(w->buf + start + (newlen - from), w->buf + end, w->len - end);
	if (alen > 0)		/* a piece not given is NULL */
		memcpy(w->buf + start, a, alen);
	if (blen > 0)
		memcpy(w->buf + start + alen, b, blen);
	if (clen > 0)
		memcpy(w->buf + start + alen + blen, c, clen);
	w->len = w->len - (end - start) + (newlen - from);
	h = (uint32_t)newlen | (mbox ? 1U << 31 : 0);
	memcpy(w->buf + pos, &h, sizeof(h));
	for (k = j + 1; k < n; k++)
		w->offs[k] = (uint32_t)(w->offs[k] - oldlen + newlen);
	w->dirty = true;
}

/* A new header at index at (<= nhdrs): the line a, b, c. */
static int
sp_insert(struct hdrstore *hs, size_t at, const char *a, size_t alen, const char *b, size_t blen,
    const char *c, size_t clen, bool mbox)
{
	size_t j;

	if (hs->nblocks == 0) {
		blocks_insert(hs, 0, (struct hblock){ 0, 0, 0 });
		hs->win.blk = 0;
		hs->win.first = 0;
		hs->win.len = 0;
		hs->cur_blk = hs->cur_first = 0;
		j = 0;
	} else if (at < hs->nhdrs) {
		if (sp_locate(hs, at) == -1)
			return -1;
		j = at - hs->win.first;
	} else {
		if (sp_locate(hs, hs->nhdrs - 1) == -1)
			return -1;
		j = hs->blocks[hs->win.blk].n;
	}
	win_splice(hs, j, true, 0, a, alen, b, blen, c, clen, mbox);
	hs->nhdrs++;
	return win_split(hs);
}

/* Header i's line from `from` on becomes a, b, c (mbox bit: mbox). */
static int
sp_change(struct hdrstore *hs, size_t i, size_t from, const char *a, size_t alen,
    const char *b, size_t blen, bool mbox)
{
	if (sp_locate(hs, i) == -1)
		return -1;
	win_splice(hs, i - hs->win.first, false, from, a, alen, b, blen, NULL, 0, mbox);
	return win_split(hs);
}

/* Take header i out; a block left empty goes. */
static int
sp_remove(struct hdrstore *hs, size_t i)
{
	struct hwindow *w = &hs->win;
	size_t j, n, pos, end, k;

	if (sp_locate(hs, i) == -1)
		return -1;
	j = i - w->first;
	n = hs->blocks[w->blk].n;
	pos = w->offs[j];
	end = j + 1 < n ? w->offs[j + 1] : w->len;
	memmove(w->buf + pos, w->buf + end, w->len - end);
	w->len -= end - pos;
	for (k = j; k + 1 < n; k++)
		w->offs[k] = w->offs[k + 1] - (uint32_t)(end - pos);
	hs->blocks[w->blk].n = (uint32_t)--n;
	hs->nhdrs--;
	w->dirty = true;
	if (n == 0) {
		hs->file_dead += hs->blocks[w->blk].len;
		memmove(hs->blocks + w->blk, hs->blocks + w->blk + 1,
		    (hs->nblocks - w->blk - 1) * sizeof(*hs->blocks));
		hs->nblocks--;
		hs->cur_blk = w->blk < hs->nblocks ? w->blk : 0;
		hs->cur_first = w->blk < hs->nblocks ? w->first : 0;
		w->blk = SIZE_MAX;
		w->dirty = false;
	}
	return 0;
}

/*
 * Lines and entries take more than mem_limit: move the headers to a file.
 * Only between headers (hsec holds nothing but their lines).
 */
static int
hs_spill(struct hdrstore *hs)
{
	struct hent *ents = hs->ents;
	char *hsec = hs->hsec;
	size_t n = hs->nhdrs, gap_at = hs->gap_at, gap_len = hs->gap_len, i;
	int fd, rc = 0;

	if ((fd = spool_tempfile(hs->spool_dir)) == -1)
		return hs_fail(hs);
	hs->fd = fd;
	hs->nhdrs = 0;
	hs->ents = NULL;
	hs->hsec = NULL;
	hs->ents_cap = hs->gap_at = hs->gap_len = 0;
	hs->hsec_len = hs->hsec_cap = hs->hdead = 0;
	for (i = 0; i < n && rc == 0; i++) {
		const struct hent *e = &ents[i < gap_at ? i : i + gap_len];

		rc = sp_insert(hs, i, hsec + e->off, e->len, NULL, 0, NULL, 0, e->mbox);
	}
	free(ents);
	free(hsec);
	return rc == -1 ? hs_fail(hs) : 0;
}

/*
 * Spill when lines and entries in memory take more than mem_limit: at a
 * header's end while parsing (between_lines), or once parsed.
 */
static int
hs_check_spill(struct hdrstore *hs, bool between_lines)
{
	if (hs->fd != -1 || (!between_lines && !hs->parsed) ||
	    hs->hsec_len + hs->nhdrs * sizeof(struct hent) <= hs->mem_limit)
		return 0;
	return hs_spill(hs);
}

/* ------------------------------------------------------------------ */
/* Either way.                                                         */

/* Header i (< nhdrs). */
int
hs_get(struct hdrstore *hs, size_t i, struct hline *out)
{
	const char *rec;
	uint32_t h;

	if (hs->fd == -1) {
		const struct hent *e = ent_at(hs, i);

		out->p = hs->hsec + e->off;
		out->len = e->len;
		out->mbox = e->mbox;
		return 0;
	}
	if (sp_locate(hs, i) == -1)
		return hs_fail(hs);
	rec = hs->win.buf + hs->win.offs[i - hs->win.first];
	h = rec_hdr(rec);
	out->p = rec + REC_HDR;
	out->len = h & INT32_MAX;
	out->mbox = (h >> 31) != 0;
	return 0;
}

/* The hint of a name, or NULL. */
static struct hint *
hint_find(struct hdrstore *hs, const char *name)
{
	for (size_t k = 0; k < HS_NHINTS; k++)
		if (hs->hints[k].name != NULL && strcasecmp(hs->hints[k].name, name) == 0)
			return &hs->hints[k];
	return NULL;
}

/* A new hint for a name, at the start of the list (the oldest one goes). */
static struct hint *
hint_new(struct hdrstore *hs, const char *name)
{
	struct hint *h = &hs->hints[hs->next_hint++ % HS_NHINTS];

	free(h->name);
	h->name = xstrdup(name);
	h->at = 0;
	h->before = 0;
	return h;
}

/* Keep the hints right after header l (its name, at least) comes in at index at (+1) or goes (-1). */
static void
hints_shift(struct hdrstore *hs, size_t at, const struct hline *l, int delta)
{
	for (size_t k = 0; k < HS_NHINTS; k++) {
		struct hint *h = &hs->hints[k];

		if (h->name == NULL || (delta > 0 ? at > h->at : at >= h->at))
			continue;
		h->at = delta > 0 ? h->at + 1 : h->at - 1;
		if (hline_named(l, h->name, strlen(h->name)))
			h->before = delta > 0 ? h->before + 1 : h->before - 1;
	}
}

/* Whether header i has the name: 1, 0, or -1 with errno. */
static int
named(struct hdrstore *hs, size_t i, const char *name, size_t nlen)
{
	struct hline l;

	if (hs_get(hs, i, &l) == -1)
		return -1;
	return hline_named(&l, name, nlen);
}

/*
 * Index of the occurrence-th (from 1) header of that name into *at, nhdrs
 * if there is none.  It starts from the name's hint (where the last search
 * for it ended) and moves it to what it finds: a run of changes to headers
 * of one name, in either order, costs one walk of the list.  0 or -1.
 */
static int
find_occurrence(struct hdrstore *hs, const char *name, size_t occurrence, size_t *at)
{
	size_t nlen = strlen(name), i, seen;
	struct hint *h = hint_find(hs, name);
	int r = 0;

	if (h == NULL)
		h = hint_new(hs, name);
	if (occurrence > h->before) {
		for (i = h->at, seen = h->before; i < hs->nhdrs; i++)
			if ((r = named(hs, i, name, nlen)) != 0 && (r == -1 || ++seen == occurrence))
				break;
		if (r == -1)
			return -1;
		h->at = i;
		h->before = i < hs->nhdrs ? occurrence - 1 : seen;
		*at = i;
		return 0;
	}
	for (i = h->at, seen = h->before; i-- > 0; )
		if ((r = named(hs, i, name, nlen)) != 0 && (r == -1 || seen-- == occurrence))
			break;
	if (r == -1)
		return -1;
	if (i == SIZE_MAX)
		log_panic("find_occurrence: hint for %s counts %zu before %zu", name, h->before, h->at);
	h->at = i;
	h->before = occurrence - 1;
	*at = i;
	return 0;
}

/* The parsed line hsec[start..hsec_len) is a complete header. */
int
hs_push(struct hdrstore *hs, size_t start, bool mbox)
{
	struct hline l = { hs->hsec + start, hs->hsec_len - start, mbox };

	if (hs->error != 0)
		return hs_fail(hs);
	if (hs->fd == -1) {
		struct hent e = { (uint32_t)start, (uint32_t)l.len & INT32_MAX, mbox };

		mem_insert(hs, hs->nhdrs, e);
		hs->hlive += (uint64_t)l.len + 2;
		hints_shift(hs, hs->nhdrs - 1, &l, +1);
		return hs_check_spill(hs, true);
	}
	if (sp_insert(hs, hs->nhdrs, l.p, l.len, NULL, 0, NULL, 0, mbox) == -1)
		return hs_fail(hs);
	hs->hlive += (uint64_t)l.len + 2;
	hints_shift(hs, hs->nhdrs - 1, &l, +1);
	hs->hsec_len = start;
	return 0;
}

/* The header section is parsed: the buffers shrink to fit. */
void
hs_parsed(struct hdrstore *hs)
{
	hs->parsed = true;
	if (hs->hsec_len < hs->hsec_cap) {
		hs->hsec = hs->hsec_len > 0 ? xrealloc(hs->hsec, hs->hsec_len) :
		    (free(hs->hsec), NULL);
		hs->hsec_cap = hs->hsec_len;
	}
	if (hs->fd == -1 && hs->nhdrs + 16 < hs->ents_cap) {
		gap_move(hs, hs->nhdrs);
		hs->ents_cap = hs->nhdrs + 16;
		hs->ents = xrealloc(hs->ents, hs->ents_cap * sizeof(*hs->ents));
		hs->gap_len = hs->ents_cap - hs->nhdrs;
	}
}

/* Insert a header before index; index >= count appends. */
int
hs_insert_header(struct hdrstore *hs, size_t index, const char *name, const char *value)
{
	size_t nlen, vlen;
	struct hline l;

	if (name == NULL || value == NULL || !valid_name(name) || !valid_value(value)) {
		errno = EINVAL;
		return -1;
	}
	if (hs->error != 0)
		return hs_fail(hs);
	if (index > hs->nhdrs)
		index = hs->nhdrs;
	nlen = strlen(name);
	vlen = strlen(value);
	if (vlen > LINE_MAX_LEN - nlen - 1) {
		errno = EFBIG;
		return -1;
	}
	if (hs->fd == -1) {
		struct hent e;

		if (hsec_add(hs, SIZE_MAX, name, value, vlen, &e) == -1)
			return -1;
		mem_insert(hs, index, e);
	} else if (sp_insert(hs, index, name, nlen, ":", 1, value, vlen, false) == -1)
		return hs_fail(hs);
	hs->hlive += (uint64_t)nlen + 1 + vlen + 2;
	l = (struct hline){ name, nlen, false };	/* the hints look at the name only */
	hints_shift(hs, index, &l, +1);
	return hs_check_spill(hs, false) == -1 ? -1 : 1;
}

/* Change (value) or delete (NULL) header i (< nhdrs), keeping the name as the message spells it. */
static int
header_set(struct hdrstore *hs, size_t i, const char *value)
{
	struct hline l;
	size_t voff, vlen, oldlen;
	struct hent *e, ne;

	if (hs_get(hs, i, &l) == -1)
		return -1;
	if (value == NULL) {
		hs->hlive -= (uint64_t)l.len + 2;
		hints_shift(hs, i, &l, -1);
		if (hs->fd == -1) {
			mem_remove(hs, i);
			return 1;
		}
		return sp_remove(hs, i) == -1 ? hs_fail(hs) : 1;
	}
	vlen = strlen(value);
	if (l.mbox) {
		if (vlen == l.len + 1 && value[0] == ' ' && memcmp(l.p, value + 1, l.len) == 0)
			return 0;
		voff = 0;
	} else {
		voff = line_valueoff(l.p, l.len);
		if (l.len - voff == vlen && memcmp(l.p + voff, value, vlen) == 0)
			return 0;	/* the value it has: nothing changes */
	}
	oldlen = l.len;
	if (vlen > LINE_MAX_LEN - voff - sizeof(MBOX_NAME)) {
		errno = EFBIG;
		return -1;
	}
	if (hs->fd == -1) {
		if (hsec_add(hs, i, NULL, value, vlen, &ne) == -1)
			return -1;
		e = ent_at(hs, i);
		hs->hdead += e->len;
		hs->hlive = hs->hlive - e->len + ne.len;
		*e = ne;
		return hs_check_spill(hs, false) == -1 ? -1 : 1;
	}
	if (l.mbox) {		/* a changed mbox line is a real header */
		if (sp_change(hs, i, 0, MBOX_NAME ":", sizeof(MBOX_NAME), value, vlen, false) == -1)
			return hs_fail(hs);
		hs->hlive = hs->hlive - oldlen + sizeof(MBOX_NAME) + vlen;
	} else {
		if (sp_change(hs, i, voff, value, vlen, NULL, 0, false) == -1)
			return hs_fail(hs);
		hs->hlive = hs->hlive - oldlen + voff + vlen;
	}
	return 1;
}

/* Change or delete the occurrence-th header of that name; add it if there is none. */
int
hs_change_header(struct hdrstore *hs, const char *name, size_t occurrence, const char *value)
{
	size_t i;

	if (name == NULL || occurrence == 0 || !valid_name(name) ||
	    (value != NULL && !valid_value(value))) {
		errno = EINVAL;
		return -1;
	}
	if (hs->error != 0)
		return hs_fail(hs);
	if (find_occurrence(hs, name, occurrence, &i) == -1)
		return -1;
	if (i < hs->nhdrs)
		return header_set(hs, i, value);
	if (value == NULL)
		return 0;
	return hs_insert_header(hs, hs->nhdrs, name, value);
}

/* Change or delete header index, which must have that name. */
int
hs_change_header_at(struct hdrstore *hs, size_t index, const char *name, const char *value)
{
	int r;

	if (name == NULL || !valid_name(name) || (value != NULL && !valid_value(value)) ||
	    index >= hs->nhdrs) {
		errno = EINVAL;
		return -1;
	}
	if (hs->error != 0)
		return hs_fail(hs);
	if ((r = named(hs, index, name, strlen(name))) != 1) {
		if (r == 0)
			errno = EINVAL;
		return -1;
	}
	return header_set(hs, index, value);
}
