/*
 * conn.c - one TCP connection, plaintext or TLS over memory BIOs (see
 * conn.h); the client's and the backend's side of a session alike.
 */

#include <stddef.h>

#include "conn.h"
#include "log.h"

#define conn_of(h)	((struct conn *)((char *)(h) - offsetof(struct conn, tcp)))

/*
 * Ciphertext as read, fed to OpenSSL in the read callback that follows the
 * allocation at once (one loop, one thread): one buffer for every conn.
 */
static char tls_raw[65536];

/* Set up the TCP handle. */
void
conn_init(struct conn *c, uv_loop_t *loop, void *owner)
{
	uv_tcp_init(loop, &c->tcp);
	c->tcp.data = owner;
	c->reading = false;
	c->closed = false;
}

/* Set up the timer and the output queue. */
void
conn_open(struct conn *c, size_t in_max, conn_read_cb on_read, outq_cb written)
{
	c->in_max = in_max;
	c->on_read = on_read;
	uv_timer_init(c->tcp.loop, &c->timer);
	c->timer.data = c->tcp.data;
	outq_init(&c->out, (uv_stream_t *)&c->tcp, written, c->tcp.data);
}

/* libuv asks where to put the bytes: straight into in, or aside for TLS. */
static void
conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct conn *c = conn_of(h);
	size_t avail;
	char *p;

	(void)hint;
	if (c->tls) {
		*buf = uv_buf_init(tls_raw, sizeof(tls_raw));
		return;
	}
	p = iobuf_space(&c->in, c->in_max, &avail);
	*buf = uv_buf_init(p, (unsigned)avail);
}

/* Bytes or the end from the socket: into in, or to OpenSSL; then the owner. */
static void
conn_read_done(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = conn_of(stream);

	if (nread == 0)
		return;
	if (nread > 0) {
		if (c->tls)
			tls_conn_feed(c->tls, buf->base, (size_t)nread);
		else
			iobuf_commit(&c->in, (size_t)nread);
	}
	c->on_read(c->tcp.data, nread);
}

/* Start reading (no-op when reading). */
int
conn_read_start(struct conn *c)
{
	int rc;

	if (c->reading)
		return 0;
	if ((rc = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read_done)) == 0)
		c->reading = true;
	return rc;
}

/* Stop reading (no-op when not reading). */
void
conn_read_stop(struct conn *c)
{
	if (!c->reading)
		return;
	uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = false;
}

/* Bytes to the peer: as they are, or as TLS records. */
int
conn_write(struct conn *c, const char *p, size_t n)
{
	int rc;

	if (c->tls == NULL) {
		outq_append(&c->out, p, n);
		return 0;
	}
	rc = tls_conn_write(c->tls, p, n);
	tls_conn_drain(c->tls, &c->out);
	return rc;
}

/* Start writing what has gathered. */
int
conn_flush(struct conn *c)
{
	return outq_flush(&c->out);
}

/* Plaintext from TLS into in, as far as it has room. */
ssize_t
conn_tls_input(struct conn *c)
{
	size_t added = 0;

	for (;;) {
		size_t avail;
		char *p = iobuf_space(&c->in, c->in_max, &avail);
		ssize_t n;

		if (avail == 0)
			break;
		if ((n = tls_conn_read(c->tls, p, avail)) > 0) {
			iobuf_commit(&c->in, (size_t)n);
			added += (size_t)n;
			continue;
		}
		if (n == 0)
			break;
		tls_conn_drain(c->tls, &c->out);	/* an alert, if any */
		return -1;
	}
	tls_conn_drain(c->tls, &c->out);
	return (ssize_t)added;
}

/* Plaintext waiting inside TLS. */
bool
conn_tls_pending(const struct conn *c)
{
	return c->tls != NULL && tls_conn_readable(c->tls);
}

/* Switch to TLS; in the client role the ClientHello is queued now. */
void
conn_starttls(struct conn *c, struct tls_conn *tls)
{
	c->tls = tls;
	tls_conn_drain(c->tls, &c->out);
}

/* Queue TLS's close_notify. */
void
conn_tls_close(struct conn *c)
{
	tls_conn_close(c->tls);
	tls_conn_drain(c->tls, &c->out);
}

/* Close the TCP handle (reading stops with it). */
void
conn_close(struct conn *c, uv_close_cb cb)
{
	if (c->closed)
		log_panic("conn_close: closed twice");
	c->closed = true;
	c->reading = false;
	uv_close((uv_handle_t *)&c->tcp, cb);
}

/* Release the buffers and TLS (once its handles are closed). */
void
conn_free(struct conn *c)
{
	iobuf_free(&c->in);
	outq_free(&c->out);
	tls_conn_free(c->tls);
	c->tls = NULL;
}
