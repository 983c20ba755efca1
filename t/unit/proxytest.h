/*
 * proxytest.h - a worker's server in the unit test's own process, for the
 * C tests of command.c, session.c and filter.c.
 *
 * SYNOPSIS
 *	struct proxytest t;
 *	struct peer client, backend;
 *
 *	proxytest_start(&t, "xclient = false;\n", filters, nfilters);
 *	proxytest_connect(&t, &client);		a client socket, accepted by
 *						the real listener (listener.c)
 *	proxytest_accept(&t, &backend);		the proxy's backend connection
 *	peer_send(&backend, "220 backend ESMTP\r\n");
 *	r = peer_reply(&t, &client);		"220 backend ESMTP\r\n"
 *	proxytest_stop(&t);
 *
 * DESCRIPTION
 *	The proxy side is the daemon's own code: a struct server on a private
 *	libuv loop, the config loaded by config_load() from a file written by
 *	the test (listen, backend and the caller's extra keys), the listening
 *	socket from listener_bind() and listener_start(), so sessions start
 *	through their real entry point (session_new, session_start).  The
 *	backend is a listening socket of the test on 127.0.0.1; the test plays
 *	both peers with plain blocking sockets.
 *
 *	Everything runs in one thread: whenever a peer waits for bytes that
 *	have not arrived, the loop runs one iteration (UV_RUN_ONCE), so the
 *	proxy moves exactly as far as the test's input lets it.  A wait that
 *	makes no progress for PROXYTEST_HANG_S seconds is a hang (a test
 *	bug, or the proxy stuck): "Bail out!" and exit 1.  It is not a time
 *	bound on the proxy: any progress restarts it.
 *
 *	filters, when given, become the server's chain as they are (hooks
 *	registered directly, no dlopen), in order.
 *
 *	proxytest_auto_backend() makes the backend answer by itself, inside
 *	the loop (for tests about what reaches it rather than when): 220 on
 *	connect, EHLO with PIPELINING, 8BITMIME and SIZE, 250 to MAIL, RCPT,
 *	RSET, NOOP and HELO, 354 to DATA and 250 at its end, 221 to QUIT.
 *	Everything it reads is appended to t->heard.
 */
#ifndef SMTPCHAIN_T_PROXYTEST_H
#define SMTPCHAIN_T_PROXYTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "server.h"
#include "smtpchain/filter.h"

#define PROXYTEST_HANG_S	300
#define PEER_BUF		262144

/* One side the test plays: a socket and what it has read and not consumed. */
struct peer {
	int	 fd;
	char	 buf[PEER_BUF];
	size_t	 len;
	bool	 eof;		/* read returned 0 or an error */
};

#define AUTO_CONNS	8

/* A connection to the automatic backend. */
struct auto_conn {
	uv_poll_t	 poll;
	int		 fd;
	bool		 open;
	bool		 in_data;
	char		 in[65536];
	size_t		 len;
	struct proxytest *t;
};

struct proxytest {
	uv_loop_t	 loop;
	struct server	 srv;
	struct config	*cfg;
	int		 listen_fd;	/* the proxy's listening socket */
	int		 backend_lfd;	/* the scripted backend's */
	char		 dir[64];	/* temporary: the config, spool, quarantine */
	uv_timer_t	 hang;
	uv_poll_t	 auto_listen;	/* proxytest_auto_backend(): its connections */
	bool		 auto_on;
	struct auto_conn auto_conn[AUTO_CONNS];
	char		 heard[PEER_BUF];	/* what the automatic backend read */
	size_t		 nheard;
	unsigned	 messages;	/* end of data it answered 250 */
};

/* Set up the server; extra is more config text.  0, or -1 after a diag. */
int	proxytest_start(struct proxytest *t, const char *extra,
	    const struct sc_filter *const *filters, size_t nfilters);
/* Close the peers first; waits for every session to end, then frees all. */
void	proxytest_stop(struct proxytest *t);

/* A new client connection to the proxy / the proxy's next backend connection. */
void	proxytest_connect(struct proxytest *t, struct peer *p);
void	proxytest_accept(struct proxytest *t, struct peer *p);

/* The backend answers by itself from now on (see above). */
void	proxytest_auto_backend(struct proxytest *t);
/* Run the loop until the automatic backend has answered n messages. */
void	proxytest_wait_messages(struct proxytest *t, unsigned n);

/* Run the loop without waiting until it has nothing ready to do. */
void	proxytest_settle(struct proxytest *t);

void	peer_send(struct peer *p, const char *s);
void	peer_close(struct peer *p);
/*
 * The next complete SMTP reply (all its lines) / the next line / everything
 * up to and including end, consumed; a static buffer, valid until the next
 * call.  NULL if the peer closed first (what it had is left in p->buf).
 */
const char *peer_reply(struct proxytest *t, struct peer *p);
const char *peer_line(struct proxytest *t, struct peer *p);
const char *peer_until(struct proxytest *t, struct peer *p, const char *end);
/* Wait for the proxy to close this connection; true if nothing else came first. */
bool	peer_wait_eof(struct proxytest *t, struct peer *p);
/* Nothing has arrived (after the loop settled): true if p->len is 0. */
bool	peer_quiet(struct proxytest *t, struct peer *p);

#endif
