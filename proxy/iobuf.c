/*
 * iobuf.c - input buffers and batched output queues (see iobuf.h).
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iobuf.h"
#include "log.h"

/* See outq_due_run(): the queues owed a done callback, and the loop's phase. */
static struct outq	*due_head;
static uv_prepare_t	 phase_prepare;
static uv_check_t	 due_check;
static uv_loop_t	*due_loop;
static int		 in_poll_phase;

/* Release a buffer's memory. */
void
iobuf_free(struct iobuf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* Writable room at the end of b, allocating cap bytes on first use. */
char *
iobuf_space(struct iobuf *b, size_t cap, size_t *avail)
{
	if (b->cap == 0) {
		b->data = xmalloc(cap);
		b->cap = cap;
	}
	if (b->off > 0 && (b->len == 0 || b->off + b->len == b->cap)) {
		memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
	}
	*avail = b->cap - b->off - b->len;
	return b->data + b->off + b->len;
}

/* n bytes were written at iobuf_space(). */
void
iobuf_commit(struct iobuf *b, size_t n)
{
	if (n > b->cap - b->off - b->len)
		log_panic("commit %zu past the end", n);
	b->len += n;
}

/* Drop n bytes from the front. */
void
iobuf_consume(struct iobuf *b, size_t n)
{
	if (n > b->len)
		log_panic("consume %zu of %zu", n, b->len);
	b->len -= n;
	b->off = b->len ? b->off + n : 0;
}

/* Append, growing the buffer as needed (output side only). */
void
iobuf_append(struct iobuf *b, const void *p, size_t n)
{
	if (b->off + b->len + n > b->cap) {
		if (b->off > 0) {
			memmove(b->data, b->data + b->off, b->len);
			b->off = 0;
		}
		if (b->len + n > b->cap) {
			size_t cap = b->cap ? b->cap : 1024;

			while (cap < b->len + n)
				cap *= 2;
			b->data = xrealloc(b->data, cap);
			b->cap = cap;
		}
	}
	memcpy(b->data + b->off + b->len, p, n);
	b->len += n;
}

static void outq_phase_init(uv_loop_t *loop);

/* Bind a queue to its stream; done runs after every completed write. */
void
outq_init(struct outq *q, uv_stream_t *stream, outq_cb done, void *owner)
{
	if (due_loop == NULL)
		outq_phase_init(stream->loop);
	memset(q, 0, sizeof(*q));
	q->stream = stream;
	q->done = done;
	q->owner = owner;
	q->req.data = q;
}

void
outq_append(struct outq *q, const void *p, size_t n)
{
	iobuf_append(&q->fill, p, n);
}

void
outq_printf(struct outq *q, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		log_panic("vsnprintf failed");
	outq_append(q, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* Bytes accepted but not yet handed to the kernel. */
size_t
outq_pending(const struct outq *q)
{
	return q->fill.len + q->flight.len;
}

static void outq_written(uv_write_t *req, int status);

/*
 * Queues whose last batch went out inside outq_flush(), waiting for their
 * done callback; one loop per process (a worker's), so one list.  Their
 * done runs from a check handle, which libuv runs right after the poll
 * phase: so a batch is written at once only during the poll phase (from
 * an I/O callback), between the prepare handle and the check handle.  A
 * flush from a timer, a write's completion or a close goes through
 * uv_write as before: from there the check handle would run only after
 * the next poll, which may block until some other event (a lost wake-up).
 */

static void
outq_poll_begins(uv_prepare_t *h)
{
	(void)h;
	in_poll_phase = 1;
}

static void
outq_due_run(uv_check_t *h)
{
	struct outq *q;

	(void)h;
	/* A done callback may flush again and put its queue back: run until empty. */
	while ((q = due_head) != NULL) {
		due_head = q->due_next;
		q->due_next = NULL;
		q->done_due = 0;
		if (q->done)
			q->done(q, 0);
	}
	in_poll_phase = 0;
}

/* The prepare and check handles, with the first queue (neither keeps the loop alive). */
static void
outq_phase_init(uv_loop_t *loop)
{
	uv_prepare_init(loop, &phase_prepare);
	uv_check_init(loop, &due_check);
	uv_prepare_start(&phase_prepare, outq_poll_begins);
	uv_check_start(&due_check, outq_due_run);
	uv_unref((uv_handle_t *)&phase_prepare);
	uv_unref((uv_handle_t *)&due_check);
	due_loop = loop;
}

static void
outq_due(struct outq *q)
{
	if (q->done_due)
		return;
	q->done_due = 1;
	q->due_next = due_head;
	due_head = q;
}

/* Start writing what has gathered, unless a write is already in flight. */
int
outq_flush(struct outq *q)
{
	struct iobuf tmp;
	uv_buf_t buf;
	int rc;

	if (q->writing || q->fill.len == 0)
		return 0;
	if (in_poll_phase && due_loop == q->stream->loop &&
	    !uv_is_closing((uv_handle_t *)&due_check)) {
		buf = uv_buf_init(q->fill.data + q->fill.off, (unsigned)q->fill.len);
		rc = uv_try_write(q->stream, &buf, 1);
		if (rc == (int)q->fill.len) {
			q->fill.len = q->fill.off = 0;
			outq_due(q);
			return 0;
		}
		if (rc > 0)
			iobuf_consume(&q->fill, (size_t)rc);
		/* else EAGAIN, or an error that uv_write reports through done */
	}
	tmp = q->flight;
	q->flight = q->fill;
	q->fill = tmp;
	q->fill.len = q->fill.off = 0;
	buf = uv_buf_init(q->flight.data + q->flight.off, (unsigned)q->flight.len);
	if ((rc = uv_write(&q->req, q->stream, &buf, 1, outq_written)) != 0) {
		q->flight.len = q->flight.off = 0;
		return rc;
	}
	q->writing = 1;
	return 0;
}

/* A write finished: release big buffers, start the next batch, tell the owner. */
static void
outq_written(uv_write_t *req, int status)
{
	struct outq *q = req->data;

	q->writing = 0;
	q->flight.len = q->flight.off = 0;
	if (q->flight.cap > 65536)
		iobuf_free(&q->flight);
	if (status == 0)
		status = outq_flush(q);
	if (q->done)
		q->done(q, status);
}

void
outq_free(struct outq *q)
{
	for (struct outq **pp = &due_head; *pp != NULL; pp = &(*pp)->due_next)
		if (*pp == q) {
			*pp = q->due_next;
			break;
		}
	iobuf_free(&q->fill);
	iobuf_free(&q->flight);
}
