/*
 * conn.h - one TCP connection of a session, either side: the client's
 * (server role) or the backend's (client role).
 *
 * A conn owns the socket, its idle timer, the input buffer the owner
 * consumes from and the output queue it appends to.  TLS, when on, sits
 * between them over memory BIOs (tls.c): conn_write() encrypts into the
 * output queue, and what is read is ciphertext fed to OpenSSL, taken out
 * as plaintext into `in` by conn_tls_input().  So the owner reads `in`
 * and writes through conn_write() the same way with TLS or without, as
 * nginx hides SSL behind c->recv and c->send.
 *
 * The owner's pointer is in tcp.data and timer.data, so libuv's close and
 * timer callbacks get the owner as they did; the read callback reaches
 * the owner through on_read.  The owner counts the handles and frees the
 * conn (conn_free) when both are closed.
 */
#ifndef SMTPCHAIN_CONN_H
#define SMTPCHAIN_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "iobuf.h"
#include "tls.h"

/* A connection's output waiting above this: stop reading the other side. */
#define OUT_HIGH_WATER	262144
/*
 * Bytes (nread > 0: already in `in`, or fed to TLS: call conn_tls_input),
 * or the end (nread < 0: UV_EOF or an error).  Never called with 0.
 */
typedef void (*conn_read_cb)(void *owner, ssize_t nread);

struct conn {
	uv_tcp_t	 tcp;		/* tcp.data: the owner */
	uv_timer_t	 timer;		/* timer.data: the owner */
	struct iobuf	 in;		/* plaintext read, not yet consumed */
	size_t		 in_max;	/* in's size: the longest unit of input must fit */
	struct outq	 out;		/* to the socket: plaintext, or TLS records */
	struct tls_conn	*tls;		/* after STARTTLS (either role) or implicit TLS */
	conn_read_cb	 on_read;
	bool		 reading;	/* uv_read_start is on */
	bool		 closed;	/* uv_close called on tcp */
};

/* The TCP handle (again, after a close, to connect elsewhere). */
void	conn_init(struct conn *c, uv_loop_t *loop, void *owner);
/* The timer and the output queue: written runs after each write (q->owner is the owner). */
void	conn_open(struct conn *c, size_t in_max, conn_read_cb on_read, outq_cb written);
int	conn_read_start(struct conn *c);	/* 0 or a uv error */
void	conn_read_stop(struct conn *c);
/* Bytes to the peer, through TLS when it is on: 0, or -1 when TLS failed. */
int	conn_write(struct conn *c, const char *p, size_t n);
int	conn_flush(struct conn *c);		/* start writing: 0 or a uv error */
/*
 * Plaintext out of TLS into `in`, as far as it has room, then TLS's own
 * output (handshake, alerts) to the queue: the bytes added (0: TLS needs
 * more input, or `in` is full), or -1 when TLS failed or the peer sent
 * close_notify (tls_conn_error says which).
 */
ssize_t	conn_tls_input(struct conn *c);
/* Whether TLS holds plaintext that `in` had no room for. */
bool	conn_tls_pending(const struct conn *c);
/* TLS from now on (tls from tls_conn_new or tls_conn_connect): its first flight queued. */
void	conn_starttls(struct conn *c, struct tls_conn *tls);
void	conn_tls_close(struct conn *c);		/* close_notify queued; nothing after it */
void	conn_close(struct conn *c, uv_close_cb cb);	/* the TCP handle; once */
void	conn_free(struct conn *c);		/* buffers and TLS; handles closed */

#endif
