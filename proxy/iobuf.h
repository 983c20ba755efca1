/*
 * iobuf.h - byte buffers for the wire: a bounded input buffer read into in
 * place, and an output queue that batches writes to one libuv stream.
 *
 * Input: libuv reads straight into iobuf_space(); the session consumes from
 * the front.  Output: callers append during one round of processing and call
 * outq_flush() once; at most one write is in flight, the next batch gathers
 * behind it.  Both are bounded by their owner, who stops reading when
 * outq_pending() grows past its mark (backpressure).
 *
 * outq_flush() called from an I/O callback first offers the batch to the
 * kernel itself (uv_try_write): a reply or a command nearly always fits the
 * socket buffer, and then no write request is made (libuv re-arms the
 * descriptor in epoll after each request: one epoll_ctl per reply).  The
 * done callback still runs later from the loop, never from inside
 * outq_flush(): for such a batch from the loop's check phase, right after
 * the I/O callbacks of the same iteration.
 */
#ifndef SMTPCHAIN_IOBUF_H
#define SMTPCHAIN_IOBUF_H

#include <stddef.h>
#include <uv.h>

struct iobuf {
	char	*data;
	size_t	 off;		/* first unread byte */
	size_t	 len;		/* unread bytes */
	size_t	 cap;		/* allocated; 0 until first use */
};

void	 iobuf_free(struct iobuf *b);
/* Room to write at the end (compacting first); allocates cap bytes lazily. */
char	*iobuf_space(struct iobuf *b, size_t cap, size_t *avail);
void	 iobuf_commit(struct iobuf *b, size_t n);
void	 iobuf_consume(struct iobuf *b, size_t n);
void	 iobuf_append(struct iobuf *b, const void *p, size_t n);	/* grows */
static inline const char *iobuf_head(const struct iobuf *b) { return b->data + b->off; }

struct outq;
typedef void (*outq_cb)(struct outq *q, int status);

struct outq {
	uv_stream_t	*stream;
	struct iobuf	 fill;		/* gathering the next write */
	struct iobuf	 flight;	/* being written */
	uv_write_t	 req;
	int		 writing;
	int		 done_due;	/* written at once: done runs in the check phase */
	struct outq	*due_next;	/* on the list of those */
	outq_cb		 done;		/* after each write: status 0 or a uv error */
	void		*owner;
};

void	outq_init(struct outq *q, uv_stream_t *stream, outq_cb done, void *owner);
void	outq_append(struct outq *q, const void *p, size_t n);
void	outq_printf(struct outq *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int	outq_flush(struct outq *q);	/* 0, or a uv error */
size_t	outq_pending(const struct outq *q);
void	outq_free(struct outq *q);

#endif
