/*
 * channel.c - a filter module's connection to its server (see channel.h),
 * under the milter and policy modules' protocols.
 *
 * DESCRIPTION
 *	No Nagle on TCP: a module's commands that need no answer (milter
 *	headers with SMFIP_NR_HDR, body chunks) go out back to back, and a
 *	small write held until the server's delayed ACK costs up to 40 ms a
 *	message.  The other way, channel_quickack() after a read that leaves
 *	an answer owed: libmilter writes each reply on its own with Nagle on,
 *	a policy server may write its answer in two pieces, and we have
 *	nothing to send back, so without it the kernel delays our ACK (40 ms
 *	at least on Linux) and the server's next write waits in its send
 *	queue for it.  TCP_QUICKACK is not sticky: the module sets it again
 *	after each such read.  Unix sockets have no such delay.
 *
 *	An idle connection in a pool does not keep the loop alive.  Before
 *	one is used again, a peek at its socket (channel_pool_take): the
 *	module's read callback drops a connection the server closes or
 *	writes on, but that close may wait in this very loop iteration,
 *	behind the event that starts the session.
 *
 *	Reads go to one static area, consumed by the read callback before the
 *	next read.  Functions return 0 or a libuv error and never log: the
 *	module words what the operator reads.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "channel.h"

/* A write under way: the request and its octets. */
struct wreq {
	uv_write_t		 req;
	channel_status_cb	*cb;
	unsigned char		 data[];
};

int
channel_parse_port(const char *s)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v == 0 || v > 65535)
		return -1;
	return (int)v;
}

/* A handle is closed; the last one frees the channel. */
static void
on_closed(uv_handle_t *h)
{
	struct channel *ch = h->data;

	if (--ch->open_handles == 0)
		ch->on_free(ch);
}

static void
on_timer(uv_timer_t *t)
{
	struct channel *ch = t->data;

	ch->on_timer(ch);
}

int
channel_init(struct channel *ch, uv_loop_t *loop, const struct channel_addr *a, void *data,
    void (*on_free)(struct channel *ch))
{
	int rc;

	ch->addr = a;
	ch->data = data;
	ch->on_free = on_free;
	uv_timer_init(loop, &ch->timer);
	ch->timer.data = ch;
	ch->open_handles = 1;
	rc = a->kind == CHANNEL_INET ? uv_tcp_init(loop, &ch->io.tcp) :
	    uv_pipe_init(loop, &ch->io.pipe, 0);
	if (rc != 0) {
		uv_close((uv_handle_t *)&ch->timer, on_closed);	/* only the timer to close */
		return rc;
	}
	ch->io.h.data = ch;
	ch->open_handles++;
	ch->creq.data = ch;
	return 0;
}

static void
on_connected(uv_connect_t *req, int status)
{
	struct channel *ch = req->data;

	if (status == 0)
		ch->connected = true;
	ch->on_connect(ch, status);
}

int
channel_connect(struct channel *ch, channel_status_cb *cb)
{
	ch->on_connect = cb;
	if (ch->addr->kind == CHANNEL_INET) {
		uv_tcp_nodelay(&ch->io.tcp, 1);
		return uv_tcp_connect(&ch->creq, &ch->io.tcp,
		    (const struct sockaddr *)&ch->addr->addr, on_connected);
	}
	uv_pipe_connect(&ch->creq, &ch->io.pipe, ch->addr->path, on_connected);
	return 0;
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char area[65536];

	(void)h;
	(void)suggested;
	*buf = uv_buf_init(area, sizeof(area));
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct channel *ch = s->data;

	ch->on_read(ch, nread, buf);
}

int
channel_read_start(struct channel *ch, channel_read_cb *cb)
{
	ch->on_read = cb;
	return uv_read_start(&ch->io.s, on_alloc, on_read);
}

static void
on_written(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct channel *ch = req->handle->data;
	channel_status_cb *cb = w->cb;

	free(w);
	cb(ch, status);
}

int
channel_write(struct channel *ch, const void *p, size_t n, channel_status_cb *cb)
{
	struct wreq *w = malloc(sizeof(*w) + n);
	uv_buf_t b;
	int rc;

	if (w == NULL)
		return UV_ENOMEM;
	memcpy(w->data, p, n);
	w->cb = cb;
	b = uv_buf_init((char *)w->data, (unsigned)n);
	if ((rc = uv_write(&w->req, &ch->io.s, &b, 1, on_written)) != 0)
		free(w);
	return rc;
}

bool
channel_try_write(struct channel *ch, const void *p, size_t n)
{
	uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);

	return uv_try_write(&ch->io.s, &b, 1) == (int)n;
}

size_t
channel_queued(const struct channel *ch)
{
	return uv_stream_get_write_queue_size(&ch->io.s);
}

void
channel_timer_start(struct channel *ch, channel_timer_cb *cb, uint64_t ms)
{
	ch->on_timer = cb;
	uv_timer_start(&ch->timer, on_timer, ms, 0);
}

void
channel_timer_stop(struct channel *ch)
{
	uv_timer_stop(&ch->timer);
}

void
channel_quickack(struct channel *ch)
{
#ifdef TCP_QUICKACK
	uv_os_fd_t fd;
	int one = 1;

	if (ch->addr->kind == CHANNEL_INET && uv_fileno(&ch->io.h, &fd) == 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
#else
	(void)ch;
#endif
}

void
channel_keep_loop(struct channel *ch, bool keep)
{
	if (keep) {
		uv_ref(&ch->io.h);
		uv_ref((uv_handle_t *)&ch->timer);
	} else {
		uv_unref(&ch->io.h);
		uv_unref((uv_handle_t *)&ch->timer);
	}
}

void
channel_close(struct channel *ch)
{
	if (!uv_is_closing(&ch->io.h))
		uv_close(&ch->io.h, on_closed);
	if (!uv_is_closing((uv_handle_t *)&ch->timer))
		uv_close((uv_handle_t *)&ch->timer, on_closed);
}

/* --- the pool of idle connections ------------------------------------------- */

bool
channel_pool_full(const struct channel_pool *p)
{
	return p->n >= p->max;
}

bool
channel_pool_put(struct channel_pool *p, struct channel *ch)
{
	if (channel_pool_full(p))
		return false;
	channel_keep_loop(ch, false);
	ch->pool = p;
	ch->idle = true;
	ch->next_idle = p->idle;
	p->idle = ch;
	p->n++;
	return true;
}

void
channel_pool_unlink(struct channel *ch)
{
	struct channel **pp;

	if (ch->pool == NULL)
		return;
	for (pp = &ch->pool->idle; *pp != NULL; pp = &(*pp)->next_idle)
		if (*pp == ch) {
			*pp = ch->next_idle;
			ch->pool->n--;
			break;
		}
	ch->pool = NULL;
	ch->next_idle = NULL;
	ch->idle = false;
}

void
channel_pool_drop(struct channel *ch)
{
	channel_pool_unlink(ch);
	channel_close(ch);
}

/* Whether an idle socket has nothing to read: the server neither closed it nor wrote. */
static bool
quiet(struct channel *ch)
{
	uv_os_fd_t fd;
	char octet;

	if (uv_fileno(&ch->io.h, &fd) != 0)
		return false;
	return recv(fd, &octet, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
	    (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

struct channel *
channel_pool_take(struct channel_pool *p, unsigned *dropped)
{
	struct channel *ch;

	*dropped = 0;
	while ((ch = p->idle) != NULL) {
		channel_pool_unlink(ch);
		if (!uv_is_closing(&ch->io.h) && uv_is_readable(&ch->io.s) &&
		    uv_is_writable(&ch->io.s) && quiet(ch)) {
			channel_keep_loop(ch, true);
			return ch;
		}
		(*dropped)++;
		channel_close(ch);
	}
	return NULL;
}

void
channel_pool_free(struct channel_pool *p)
{
	struct channel *ch;

	while ((ch = p->idle) != NULL) {
		channel_pool_unlink(ch);
		if (!uv_is_closing(&ch->io.h) || !uv_is_closing((uv_handle_t *)&ch->timer))
			channel_close(ch);	/* a loop still runs: it frees the channel */
		else
			ch->on_free(ch);
	}
}
