/*
 * msgstore.c - one message held for the filter chain (see msgstore.h).
 *
 * Input goes through three small steps, each with its whole state in the
 * store so that the DATA stream may be cut anywhere between calls:
 *
 *	unstuff		a "." at the start of a line (start of data, or just
 *			after CR LF) is dropped;
 *	header parser	a state machine over the unstuffed bytes:
 *			H_LINE	start of a line in the header section; hpending
 *				says a complete header waits in hsec for a
 *				possible continuation line
 *			H_CR	a CR at the start of a line (empty line?)
 *			H_NAME	inside a header name, no colon yet
 *			H_VALUE	after the colon, up to the line's CR LF
 *			H_BODY	the header section is over
 *			The current line is read into the header store's
 *			buffer (hsec, from hstart); a complete header goes to
 *			the store's list (hdrstore.c: in memory, or spilled
 *			past mem_threshold).  A line whose fate is not decided
 *			yet (H_NAME) stays there; if it turns out not to be a
 *			header it goes to the body as it was.  Bytes held while
 *			undecided count toward max_header_bytes.
 *	body		appended to a struct body: in memory up to its limit,
 *			then in an unlinked temporary file written through a
 *			fixed staging buffer.
 *
 * Lines end at CR LF only.  Bare CR or LF cannot come from the session
 * (dot_scan refuses them), but they never break anything here: they are
 * kept as data.
 *
 * Output walks the message with a cursor (headers as "name:value\r\n", read
 * from the header store a block at a time when spilled, the separator, the
 * body, file parts read through a fixed buffer) and the
 * reader stuffs dots on the way, one decision per line start, so any
 * buffer size works and nothing is ever built whole in memory.  For safety
 * a line start, on output, is the start of data or any byte after a CR or
 * an LF: a bare CR in a body a filter wrote cannot hide an end of data from
 * a lax backend.
 *
 * The separator (empty line) goes out if the message had one, or if the
 * message was changed and has a body: after a header change or a new body,
 * the first body line could otherwise be read as a header.  An unchanged
 * message goes out byte for byte as it came in.  The body always ends
 * with CR LF: msgstore_finish() and msgstore_body_replace_commit() add
 * the final CR LF (or the LF after a final CR) when it is missing.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hdrstore.h"
#include "log.h"
#include "msgstore.h"

#define SPILL_STAGE	65536	/* write buffer of a body on file */
#define READ_CHUNK	65536	/* read buffer of an output cursor */

enum hstate { H_LINE = 0, H_CR, H_MBOX, H_NAME, H_NAMEWS, H_VALUE, H_BODY };

struct body {
	char		*buf;	/* the body (in memory) or its unwritten tail */
	size_t		 len;
	size_t		 cap;
	size_t		 limit;	/* bytes kept in memory before spilling */
	int		 fd;	/* -1 while in memory */
	uint64_t	 flushed;	/* bytes in the file */
	char		 tail[2];	/* the last bytes appended */
	uint8_t		 ntail;
};

enum cur_phase { CUR_HEADERS = 0, CUR_SEP, CUR_BODY, CUR_END };

struct cursor {
	enum cur_phase	 phase;
	size_t		 hdr;		/* header index */
	int		 part;		/* 0 the line, 1 its CRLF */
	size_t		 off;		/* in the part or the separator */
	bool		 sep;		/* the separator goes out */
	uint64_t	 body_off;	/* next body byte */
	char		*rbuf;		/* body bytes read from the file */
	size_t		 rlen;
	size_t		 rpos;
};
struct msgstore {
	char		*spool_dir;
	size_t		 mem_threshold;
	size_t		 max_header_bytes;

	struct hdrstore	 hs;		/* the header section (hdrstore.c) */
	struct msg_header view;		/* what msgstore_header() returns */
	char		*view_buf;
	size_t		 view_cap;

	bool		 separator;	/* the input had an empty line */
	uint64_t	 changes;	/* real changes so far (msgstore_changes): headers or body */
	bool		 finished;
	int		 error;		/* errno of a failed feed: sticky */

	/* input: unstuffing, then the header parser */
	bool		 in_bol;
	bool		 in_cr;
	enum hstate	 hstate;
	bool		 hpending;	/* a complete header at hsec[hstart..] waits for a continuation */
	bool		 hcr;		/* the value's last byte is a CR */
	bool		 hfirst;	/* only mbox lines so far: another may come */
	bool		 hmbox;		/* the current line is an mbox line */
	size_t		 hmatched;	/* of "From " (after '>'s), in H_MBOX */
	size_t		 hstart;	/* where the current line starts in hsec */
	size_t		 hbytes;	/* header section bytes so far */

	struct body	 body;
	uint64_t	 body_rpos;	/* msgstore_body_read() */

	struct body	 repl;		/* a new body being written */
	bool		 replacing;
	bool		 repl_cr;	/* its last byte is a CR */
	int		 repl_error;

	struct cursor	 out;
	bool		 out_begun;
	bool		 out_bol;	/* the next output byte starts a line */
	bool		 out_dot;	/* its extra "." is written */
};


/* An empty body that may keep limit bytes in memory. */
static void
body_init(struct body *b, size_t limit)
{
	memset(b, 0, sizeof(*b));
	b->fd = -1;
	b->limit = limit;
}

/* Release a body's memory and file. */
static void
body_free(struct body *b)
{
	free(b->buf);
	if (b->fd != -1)
		close(b->fd);
	body_init(b, 0);
}

/* Bytes in a body. */
static uint64_t
body_size(const struct body *b)
{
	return b->flushed + b->len;
}

/* Move a body to a new unlinked temporary file in the spool directory. */
static int
body_spill(const struct msgstore *m, struct body *b)
{
	int fd, saved;

	if ((fd = spool_tempfile(m->spool_dir)) == -1)
		return -1;
	if (write_all(fd, b->buf, b->len) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	b->fd = fd;
	b->flushed = b->len;
	b->len = 0;
	if (b->cap > SPILL_STAGE) {
		free(b->buf);
		b->buf = NULL;
		b->cap = 0;
	}
	return 0;
}

/* Write a spilled body's staged bytes to its file. */
static int
body_flush(struct body *b)
{
	if (b->fd == -1 || b->len == 0)
		return 0;
	if (write_all(b->fd, b->buf, b->len) == -1)
		return -1;
	b->flushed += b->len;
	b->len = 0;
	return 0;
}

/* Flush a spilled body and drop its staging buffer: nothing more comes. */
static int
body_settle(struct body *b)
{
	if (b->fd == -1)
		return 0;
	if (body_flush(b) == -1)
		return -1;
	free(b->buf);
	b->buf = NULL;
	b->cap = 0;
	return 0;
}

/* Append bytes to a body, spilling it to a file past its memory limit. */
static int
body_append(const struct msgstore *m, struct body *b, const char *p, size_t n)
{
	if (n == 0)
		return 0;
	if (b->fd == -1 && n <= b->limit && b->len <= b->limit - n) {
		buf_reserve(&b->buf, &b->cap, b->len + n, b->limit);
		memcpy(b->buf + b->len, p, n);
		b->len += n;
	} else {
		if (b->fd == -1 && body_spill(m, b) == -1)
			return -1;
		if (b->len + n > SPILL_STAGE && body_flush(b) == -1)
			return -1;
		if (n >= SPILL_STAGE) {
			if (write_all(b->fd, p, n) == -1)
				return -1;
			b->flushed += n;
		} else {
			buf_reserve(&b->buf, &b->cap, b->len + n, SPILL_STAGE);
			memcpy(b->buf + b->len, p, n);
			b->len += n;
		}
	}
	if (n >= 2) {
		b->tail[0] = p[n - 2];
		b->tail[1] = p[n - 1];
		b->ntail = 2;
	} else {
		b->tail[0] = b->tail[1];
		b->tail[1] = p[0];
		if (b->ntail < 2)
			b->ntail++;
	}
	return 0;
}

/* End a non-empty body with CR LF: add it, or the LF after a final CR. */
static int
body_end_line(const struct msgstore *m, struct body *b)
{
	if (b->ntail == 0)
		return 0;
	if (b->tail[1] == '\r')
		return body_append(m, b, "\n", 1);
	if (b->ntail == 2 && b->tail[0] == '\r' && b->tail[1] == '\n')
		return 0;
	return body_append(m, b, "\r\n", 2);
}

/* Read body bytes at off into dst: up to n, 0 at the end, -1 with errno. */
static ssize_t
body_pread(const struct body *b, uint64_t off, char *dst, size_t n)
{
	uint64_t size = body_size(b);
	ssize_t r;

	if (off >= size || n == 0)
		return 0;
	if (off < b->flushed) {
		if ((uint64_t)n > b->flushed - off)
			n = (size_t)(b->flushed - off);
		if (n > SSIZE_MAX)
			n = SSIZE_MAX;
		do
			r = pread(b->fd, dst, n, (off_t)off);
		while (r == -1 && errno == EINTR);
		if (r == 0) {
			errno = EIO;	/* the file lost bytes we wrote */
			return -1;
		}
		return r;
	}
	if ((uint64_t)n > size - off)
		n = (size_t)(size - off);
	if (n > SSIZE_MAX)
		n = SSIZE_MAX;
	memcpy(dst, b->buf + (off - b->flushed), n);
	return (ssize_t)n;
}

/* A new, empty store. */
struct msgstore *
msgstore_new(const char *spool_dir, size_t mem_threshold, size_t max_header_bytes)
{
	struct msgstore *m = xcalloc(1, sizeof(*m));

	m->spool_dir = xstrdup(spool_dir);
	m->mem_threshold = mem_threshold;
	m->max_header_bytes = max_header_bytes;
	m->in_bol = true;
	m->hstate = H_LINE;
	m->hfirst = true;
	hs_init(&m->hs, m->spool_dir, mem_threshold, max_header_bytes + 2);
	body_init(&m->body, mem_threshold);
	body_init(&m->repl, 0);
	return m;
}

/* Free a store, its headers, bodies, files and buffers. */
void
msgstore_free(struct msgstore *m)
{
	if (m == NULL)
		return;
	hs_free(&m->hs);
	free(m->view_buf);
	body_free(&m->body);
	body_free(&m->repl);
	free(m->out.rbuf);
	free(m->spool_dir);
	free(m);
}

/* Record a feed failure (sticky) and return -1 with its errno. */
static int
feed_fail(struct msgstore *m, int err)
{
	m->error = err;
	errno = err;
	return -1;
}

/* Bytes of the header section, counted against max_header_bytes: 0 or -1 (EMSGSIZE). */
static int
header_bytes(struct msgstore *m, const char *p, size_t n)
{
	if (n > m->max_header_bytes - m->hbytes) {
		errno = EMSGSIZE;
		return -1;
	}
	m->hbytes += n;
	buf_reserve(&m->hs.hsec, &m->hs.hsec_cap, m->hs.hsec_len + n, m->max_header_bytes + 2);
	memcpy(m->hs.hsec + m->hs.hsec_len, p, n);
	m->hs.hsec_len += n;
	return 0;
}

/* The header at hsec[hstart..], complete, goes to the list: 0 or -1 with errno. */
static int
header_push(struct msgstore *m)
{
	int rc = hs_push(&m->hs, m->hstart, m->hmbox);

	m->hmbox = false;
	m->hstart = m->hs.hsec_len;
	m->hpending = false;
	return rc;
}

/*
 * The header section is over; the line at hsec[hstart..] (undecided, not a
 * header), then pre, start the body.  The header buffers shrink to fit.
 */
static int
header_end(struct msgstore *m, const char *pre, size_t len)
{
	size_t held = m->hs.hsec_len - m->hstart;
	int rc = held > 0 ? body_append(m, &m->body, m->hs.hsec + m->hstart, held) : 0;

	if (rc == 0)
		rc = body_append(m, &m->body, pre, len);
	m->hbytes -= held;
	m->hs.hsec_len = m->hstart;
	m->hstate = H_BODY;
	hs_parsed(&m->hs);
	return rc;
}

/*
 * Value bytes from p (n > 0) up to the end of the line; *used says how
 * many.  0, or -1 with errno (EMSGSIZE; EILSEQ for a NUL: see msgstore.h).
 */
static int
header_value(struct msgstore *m, const char *p, size_t n, size_t *used)
{
	const char *nl = memchr(p, '\n', n);
	size_t k = nl != NULL ? (size_t)(nl - p) + 1 : n;
	bool cr_before;

	const char *nul = memchr(p, '\0', k);

	/* as byte by byte: a NUL is refused if the bytes before it fit */
	if (nul != NULL && (size_t)(nul - p) <= m->max_header_bytes - m->hbytes) {
		errno = EILSEQ;
		return -1;
	}
	if (header_bytes(m, p, k) == -1)
		return -1;
	*used = k;
	cr_before = k >= 2 ? p[k - 2] == '\r' : m->hcr;
	if (nl != NULL && cr_before) {
		m->hs.hsec_len -= 2;	/* the line's CR LF is not in the value */
		m->hpending = true;
		m->hstate = H_LINE;
	} else
		m->hcr = p[k - 1] == '\r';
	return 0;
}

/*
 * Unstuffed bytes for the header section; *used says how many it took (it
 * stops where the body starts).  0, or -1 with errno (EMSGSIZE, EILSEQ, or
 * a failed write of the first body bytes).
 *
 * A header line is as Postfix's is_header() takes it: name bytes (printable
 * ASCII but ':'), then optional SP or HTAB (RFC 5322's obs-field), then a
 * colon.  A line starting with SP or HTAB continues the header before it.
 */
static int
header_take(struct msgstore *m, const char *p, size_t n, size_t *used)
{
	unsigned char c;
	size_t i = 0, k;

	while (i < n && m->hstate != H_BODY) {
		c = (unsigned char)p[i];
		switch (m->hstate) {
		case H_LINE:
			if (m->hpending && m->hmbox && (c == ' ' || c == '\t')) {
				/* as Postfix's smtpd: after mbox lines, white space starts the body */
				header_push(m);
				if (header_end(m, NULL, 0) == -1)
					return -1;
				break;
			}
			if (m->hpending && (c == ' ' || c == '\t')) {
				/* a continuation: the CR LF was counted with its line */
				buf_reserve(&m->hs.hsec, &m->hs.hsec_cap, m->hs.hsec_len + 2,
				    m->max_header_bytes + 2);
				m->hs.hsec[m->hs.hsec_len++] = '\r';
				m->hs.hsec[m->hs.hsec_len++] = '\n';
				if (header_bytes(m, p + i, 1) == -1)
					return -1;
				m->hstate = H_VALUE;
				m->hcr = false;
				i++;
				break;
			}
			if (m->hpending && header_push(m) == -1)
				return -1;
			if (m->hfirst && (c == '>' || c == 'F')) {
				/* maybe an mbox "From " line, before any header */
				m->hmatched = 0;
				m->hstate = H_MBOX;
				break;
			}
			m->hfirst = false;
			if (c == '\r') {
				m->hstate = H_CR;
				i++;
			} else if (name_char(c)) {
				if (header_bytes(m, p + i, 1) == -1)
					return -1;
				m->hstate = H_NAME;
				i++;
			} else if (header_end(m, NULL, 0) == -1)
				return -1;
			break;
		case H_CR:
			if (c == '\n') {
				m->separator = true;
				i++;
				if (header_end(m, NULL, 0) == -1)
					return -1;
			} else if (header_end(m, "\r", 1) == -1)
				return -1;
			break;
		case H_MBOX:
			if ((m->hmatched == 0 && c == '>') || c == "From "[m->hmatched]) {
				if (header_bytes(m, p + i, 1) == -1)
					return -1;
				i++;
				if (c != '>' && ++m->hmatched == 5) {
					m->hmbox = true;
					m->hstate = H_VALUE;
					m->hcr = false;
				}
			} else {
				/* not one: the bytes so far are name bytes */
				m->hfirst = false;
				m->hstate = H_NAME;
			}
			break;
		case H_NAME:
		case H_NAMEWS:
			if ((m->hstate == H_NAME && name_char(c)) || c == ' ' || c == '\t' || c == ':') {
				if (header_bytes(m, p + i, 1) == -1)
					return -1;
				i++;
				if (c == ':') {
					m->hstate = H_VALUE;
					m->hcr = false;
				} else if (c == ' ' || c == '\t')
					m->hstate = H_NAMEWS;
			} else if (header_end(m, NULL, 0) == -1)	/* not a header: the body */
				return -1;
			break;
		case H_VALUE:
			if (header_value(m, p + i, n - i, &k) == -1)
				return -1;
			i += k;
			break;
		case H_BODY:
			break;
		}
	}
	*used = i;
	return 0;
}

/* Unstuffed bytes: to the header parser, then to the body. */
static int
take(struct msgstore *m, const char *p, size_t n)
{
	size_t used;

	if (m->hstate != H_BODY) {
		if (header_take(m, p, n, &used) == -1)
			return -1;
		p += used;
		n -= used;
	}
	return body_append(m, &m->body, p, n);
}

/* Feed bytes of the stuffed DATA stream: line by line, found with memchr. */
int
msgstore_feed(struct msgstore *m, const char *p, size_t n)
{
	const char *nl;
	size_t i = 0, start;

	if (m->error != 0) {
		errno = m->error;
		return -1;
	}
	if (m->finished) {
		errno = EINVAL;
		return -1;
	}
	while (i < n) {
		if (m->in_bol && p[i] == '.') {
			/* dot-stuffing: the first "." of a line goes */
			m->in_bol = false;
			m->in_cr = false;
			i++;
			continue;
		}
		m->in_bol = false;
		start = i;
		if (m->in_cr && p[i] == '\n') {
			i++;
			m->in_bol = true;
		}
		while (!m->in_bol) {
			if ((nl = memchr(p + i, '\n', n - i)) == NULL) {
				i = n;
				break;
			}
			i = (size_t)(nl - p) + 1;
			m->in_bol = nl > p + start && nl[-1] == '\r';
		}
		m->in_cr = !m->in_bol && p[i - 1] == '\r';
		if (take(m, p + start, i - start) == -1)
			return feed_fail(m, errno);
	}
	return 0;
}

/* End of data: close the header section, end the body with CR LF, flush it. */
int
msgstore_finish(struct msgstore *m)
{
	int rc = 0;

	if (m->error != 0) {
		errno = m->error;
		return -1;
	}
	if (m->finished)
		return 0;
	switch (m->hstate) {
	case H_LINE:
		if (m->hpending)
			rc = header_push(m);
		if (rc == 0)
			rc = header_end(m, NULL, 0);
		break;
	case H_CR:
		rc = header_end(m, "\r", 1);
		break;
	case H_MBOX:
	case H_NAME:
	case H_NAMEWS:
		rc = header_end(m, NULL, 0);
		break;
	case H_VALUE:
		if (m->hcr)
			m->hs.hsec_len--;	/* a final CR: the start of the missing CR LF */
		if ((rc = header_push(m)) == 0)
			rc = header_end(m, NULL, 0);
		break;
	case H_BODY:
		break;
	}
	if (rc == -1 || body_end_line(m, &m->body) == -1 || body_settle(&m->body) == -1)
		return feed_fail(m, errno);
	m->finished = true;
	return 0;
}

/* Whether the separator goes out: it was there, or a changed message has a body. */
static bool
separator_out(const struct msgstore *m)
{
	return m->separator || (m->changes > 0 && body_size(&m->body) > 0);
}

/* Octets of the message as it is now, unstuffed. */
uint64_t
msgstore_size(const struct msgstore *m)
{
	return body_size(&m->body) + m->hs.hlive + (separator_out(m) ? 2 : 0);
}

/* Number of headers. */
size_t
msgstore_nheaders(const struct msgstore *m)
{
	return m->hs.nhdrs;
}

/* Header i (NULL past the end, or a failed spool read), copied out as two C strings. */
const struct msg_header *
msgstore_header(struct msgstore *m, size_t i)
{
	struct hline l;
	size_t nlen, voff = 0, vlen;

	if (i >= m->hs.nhdrs || hs_get(&m->hs, i, &l) == -1)
		return NULL;
	if (l.mbox) {		/* as Postfix's smtpd shows it: "X-Mailbox-Line: From ..." */
		nlen = sizeof(MBOX_NAME) - 1;
		vlen = l.len + 1;
	} else {
		nlen = line_namelen(l.p, l.len);
		voff = line_valueoff(l.p, l.len);
		vlen = l.len - voff;
	}
	buf_reserve(&m->view_buf, &m->view_cap, nlen + vlen + 2, SIZE_MAX);
	memcpy(m->view_buf, l.mbox ? MBOX_NAME : l.p, nlen);
	m->view_buf[nlen] = '\0';
	if (l.mbox) {
		m->view_buf[nlen + 1] = ' ';
		memcpy(m->view_buf + nlen + 2, l.p, l.len);
	} else
		memcpy(m->view_buf + nlen + 1, l.p + voff, vlen);
	m->view_buf[nlen + 1 + vlen] = '\0';
	m->view.name = m->view_buf;
	m->view.value = m->view_buf + nlen + 1;
	return &m->view;
}

/* Count a header operation's change (hdrstore.c: 1 changed, 0 nothing, -1 failed). */
static int
header_changed(struct msgstore *m, int r)
{
	if (r == 1)
		m->changes++;
	return r == -1 ? -1 : 0;
}

/* Append a header. */
int
msgstore_add_header(struct msgstore *m, const char *name, const char *value)
{
	return header_changed(m, hs_insert_header(&m->hs, m->hs.nhdrs, name, value));
}

/* Insert a header before index; index >= count appends. */
int
msgstore_insert_header(struct msgstore *m, size_t index, const char *name, const char *value)
{
	return header_changed(m, hs_insert_header(&m->hs, index, name, value));
}

/* Change or delete the occurrence-th header of that name; add it if there is none. */
int
msgstore_change_header(struct msgstore *m, const char *name, size_t occurrence, const char *value)
{
	return header_changed(m, hs_change_header(&m->hs, name, occurrence, value));
}

/* Change or delete header index, which must have that name. */
int
msgstore_change_header_at(struct msgstore *m, size_t index, const char *name, const char *value)
{
	return header_changed(m, hs_change_header_at(&m->hs, index, name, value));
}

/* Read the body from its start. */
int
msgstore_body_rewind(struct msgstore *m)
{
	m->body_rpos = 0;
	return 0;
}

/* The next bytes of the body: count, 0 at the end, -1 with errno. */
ssize_t
msgstore_body_read(struct msgstore *m, void *buf, size_t n)
{
	ssize_t r = body_pread(&m->body, m->body_rpos, buf, n);

	if (r > 0)
		m->body_rpos += (uint64_t)r;
	return r;
}

/* Start a new body (dropping one begun and not committed). */
int
msgstore_body_replace_begin(struct msgstore *m)
{
	size_t used = m->body.fd == -1 ? m->body.cap : 0;

	body_free(&m->repl);
	/* old and new bodies share the memory budget until the commit */
	body_init(&m->repl, m->mem_threshold > used ? m->mem_threshold - used : 0);
	m->replacing = true;
	m->repl_cr = false;
	m->repl_error = 0;
	return 0;
}

/* Bytes of the new body; a bare LF becomes CR LF. */
int
msgstore_body_replace_append(struct msgstore *m, const void *p, size_t n)
{
	const char *s = p;
	size_t i, start = 0;

	if (!m->replacing) {
		errno = EINVAL;
		return -1;
	}
	if (m->repl_error != 0) {
		errno = m->repl_error;
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (s[i] == '\n' && !m->repl_cr) {
			if (body_append(m, &m->repl, s + start, i - start) == -1 ||
			    body_append(m, &m->repl, "\r\n", 2) == -1)
				goto fail;
			start = i + 1;
		}
		m->repl_cr = s[i] == '\r';
	}
	if (body_append(m, &m->repl, s + start, n - start) == -1)
		goto fail;
	return 0;

fail:
	m->repl_error = errno;
	return -1;
}

/*
 * Whether two bodies hold the same bytes: 1, 0, or -1 with errno (a failed
 * read).  Only bodies of one size are read, in chunks of READ_CHUNK.
 */
static int
bodies_equal(const struct body *a, const struct body *b)
{
	char *x, *y;
	uint64_t off = 0, size = body_size(a);
	int same = 1;

	if (size != body_size(b))
		return 0;
	x = xmalloc(READ_CHUNK);
	y = xmalloc(READ_CHUNK);
	while (off < size && same == 1) {
		ssize_t n = body_pread(a, off, x, READ_CHUNK), k = 0;

		while (n > 0 && k < n) {	/* b may come in smaller runs */
			ssize_t r = body_pread(b, off + (uint64_t)k, y, (size_t)(n - k));

			if (r <= 0) {
				n = -1;
				break;
			}
			if (memcmp(x + k, y, (size_t)r) != 0)
				same = 0;
			k += r;
		}
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			same = -1;
			break;
		}
		off += (uint64_t)n;
	}
	free(x);
	free(y);
	return same;
}

/* The new body replaces the old one, which is released. */
int
msgstore_body_replace_commit(struct msgstore *m)
{
	int err, same;

	if (!m->replacing) {
		errno = EINVAL;
		return -1;
	}
	m->replacing = false;
	err = m->repl_error;
	if (err == 0 && (body_end_line(m, &m->repl) == -1 || body_settle(&m->repl) == -1))
		err = errno;
	if (err != 0) {
		body_free(&m->repl);
		errno = err;
		return -1;
	}
	if ((same = bodies_equal(&m->body, &m->repl)) == -1) {
		err = errno;
		body_free(&m->repl);
		errno = err;
		return -1;
	}
	if (same) {		/* the body it had: keep that one, nothing changes */
		body_free(&m->repl);
		body_init(&m->repl, 0);
		m->body_rpos = 0;
		return 0;
	}
	body_free(&m->body);
	m->body = m->repl;
	m->body.limit = m->mem_threshold;
	body_init(&m->repl, 0);
	m->body_rpos = 0;
	m->changes++;
	m->out_begun = false;
	return 0;
}

/* Real changes so far (see msgstore.h). */
uint64_t
msgstore_changes(const struct msgstore *m)
{
	return m->changes;
}

/* Start a cursor at the start of the message. */
static void
cursor_begin(const struct msgstore *m, struct cursor *c)
{
	char *rbuf = c->rbuf;

	memset(c, 0, sizeof(*c));
	c->rbuf = rbuf;
	c->sep = separator_out(m);
	c->phase = CUR_HEADERS;
}

/*
 * The unstuffed bytes at the cursor, as one contiguous run: *p and *avail,
 * *avail 0 at the end.  0, or -1 with errno (a failed read).
 */
static int
cursor_peek(struct msgstore *m, struct cursor *c, const char **p, size_t *avail)
{
	const struct body *b = &m->body;
	struct hline h;
	ssize_t r;

	for (;;) {
		switch (c->phase) {
		case CUR_HEADERS:
			if (c->hdr >= m->hs.nhdrs) {
				c->phase = CUR_SEP;
				c->off = 0;
				continue;
			}
			if (c->part == 0) {
				if (hs_get(&m->hs, c->hdr, &h) == -1)
					return -1;
				*p = h.p;
				*avail = h.len;
			} else {
				*p = "\r\n";
				*avail = 2;
			}
			if (c->off < *avail) {
				*p += c->off;
				*avail -= c->off;
				return 0;
			}
			c->off = 0;
			if (++c->part == 2) {
				c->part = 0;
				c->hdr++;
			}
			continue;
		case CUR_SEP:
			if (c->sep && c->off < 2) {
				*p = &"\r\n"[c->off];
				*avail = 2 - c->off;
				return 0;
			}
			c->phase = CUR_BODY;
			continue;
		case CUR_BODY:
			if (c->rpos < c->rlen) {
				*p = c->rbuf + c->rpos;
				*avail = c->rlen - c->rpos;
				return 0;
			}
			if (c->body_off >= body_size(b)) {
				c->phase = CUR_END;
				continue;
			}
			if (c->body_off < b->flushed) {
				if (c->rbuf == NULL)
					c->rbuf = xmalloc(READ_CHUNK);
				if ((r = body_pread(b, c->body_off, c->rbuf, READ_CHUNK)) < 0)
					return -1;
				c->rlen = (size_t)r;
				c->rpos = 0;
				continue;
			}
			*p = b->buf + (c->body_off - b->flushed);
			*avail = (size_t)(body_size(b) - c->body_off);
			return 0;
		case CUR_END:
			*p = "";
			*avail = 0;
			return 0;
		}
	}
}

/* Move the cursor k bytes on (k no more than the last peek gave). */
static void
cursor_advance(struct cursor *c, size_t k)
{
	if (c->phase == CUR_BODY) {
		c->body_off += k;
		if (c->rpos < c->rlen)
			c->rpos += k;
	} else
		c->off += k;
}

/* Start reading the message for the backend (ends the input if need be). */
int
msgstore_output_begin(struct msgstore *m)
{
	if (msgstore_finish(m) == -1)
		return -1;
	if (m->hs.error != 0) {		/* a header change could not reach the spool */
		errno = m->hs.error;
		return -1;
	}
	cursor_begin(m, &m->out);
	m->out_begun = true;
	m->out_bol = true;
	m->out_dot = false;
	return 0;
}

/* The next bytes of the dot-stuffed message: count, 0 at the end, -1 with errno. */
ssize_t
msgstore_output_read(struct msgstore *m, char *buf, size_t n)
{
	const char *p, *d;
	size_t out = 0, avail, k;

	if (!m->out_begun || n == 0) {
		errno = EINVAL;
		return -1;
	}
	if (n > SSIZE_MAX)
		n = SSIZE_MAX;
	while (out < n) {
		if (cursor_peek(m, &m->out, &p, &avail) == -1)
			return out > 0 ? (ssize_t)out : -1;
		if (avail == 0)
			break;
		if (m->out_bol && p[0] == '.' && !m->out_dot) {
			buf[out++] = '.';	/* the stuffed dot; the line's own comes next */
			m->out_dot = true;
			continue;
		}
		/* copy up to the next "." that starts a line (found with memchr) */
		if (avail > n - out)
			avail = n - out;
		k = avail;
		for (d = p + 1; (d = memchr(d, '.', (size_t)(p + avail - d))) != NULL; d++)
			if (d[-1] == '\r' || d[-1] == '\n') {
				k = (size_t)(d - p);
				break;
			}
		memcpy(buf + out, p, k);
		out += k;
		cursor_advance(&m->out, k);
		m->out_bol = p[k - 1] == '\r' || p[k - 1] == '\n';
		m->out_dot = false;
	}
	if (m->out.phase == CUR_END && m->out.rbuf != NULL) {
		free(m->out.rbuf);
		m->out.rbuf = NULL;
	}
	return (ssize_t)out;
}

/* Write the message, unstuffed, to fd. */
int
msgstore_write_fd(struct msgstore *m, int fd)
{
	struct cursor c = { 0 };
	const char *p;
	size_t avail;
	int rc = 0, saved;

	cursor_begin(m, &c);
	for (;;) {
		if (cursor_peek(m, &c, &p, &avail) == -1 ||
		    (avail > 0 && write_all(fd, p, avail) == -1)) {
			rc = -1;
			break;
		}
		if (avail == 0)
			break;
		cursor_advance(&c, avail);
	}
	saved = errno;
	free(c.rbuf);
	errno = saved;
	return rc;
}
