/*
 * listener.c - the listening sockets.  The master binds each configured
 * address (listener_bind), so a bad address fails at start-up and every
 * worker shares the same sockets; each worker opens the inherited fds in
 * its own loop (listener_start, as nginx does), accepts connections and
 * hands each to a new session.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "log.h"
#include "server.h"

#define LISTEN_BACKLOG	511

/* A connection is waiting on a listener. */
static void
listener_accept(uv_stream_t *stream, int status)
{
	struct listener *l = stream->data;
	uv_tcp_t *client;

	if (status != 0) {
		log_warn("accept on %s: %s", l->addr->text, uv_strerror(status));
		return;
	}
	client = session_new(l->srv, l->addr);
	if (uv_accept(stream, (uv_stream_t *)client) != 0) {
		session_discard(client);	/* another worker took it */
		return;
	}
	session_start(client);
}

/*
 * Bind and listen on one address (in the master, before the workers are
 * forked); returns the socket, or -1 with "ADDRESS: reason" in err.
 */
int
listener_bind(const struct config_addr *addr, char *err, size_t errlen)
{
	int fd, on = 1;

	fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "listen on %s: socket: %s", addr->text, strerror(errno));
		return -1;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	/*
	 * Replies and commands are small writes that must go out at once.
	 * Accepted sockets inherit TCP_NODELAY from the listening socket (on
	 * Linux and the BSDs): one setsockopt here, not one per session.
	 */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	if (addr->ss.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (const struct sockaddr *)&addr->ss, addr->sslen) == -1 ||
	    listen(fd, LISTEN_BACKLOG) == -1) {
		snprintf(err, errlen, "listen on %s: %s", addr->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Accept on every inherited listening socket; -1 (logged) if one fails. */
int
listener_start(struct server *srv)
{
	const struct config *cfg = srv->cfg;
	int rc;

	srv->listeners = xcalloc(cfg->nlisten, sizeof(*srv->listeners));
	for (size_t i = 0; i < cfg->nlisten; i++) {
		struct listener *l = &srv->listeners[i];

		l->srv = srv;
		l->addr = &cfg->listen[i];
		uv_tcp_init(srv->loop, &l->tcp);
		l->tcp.data = l;
		srv->nlisteners++;
		if ((rc = uv_tcp_open(&l->tcp, srv->listen_fds[i])) != 0 ||
		    (rc = uv_listen((uv_stream_t *)&l->tcp, LISTEN_BACKLOG, listener_accept)) != 0) {
			log_error("listen on %s: %s", l->addr->text, uv_strerror(rc));
			return -1;
		}
	}
	return 0;
}

/* Stop accepting: close this worker's copy of every listening socket. */
void
listener_stop(struct server *srv)
{
	for (size_t i = 0; i < srv->nlisteners; i++)
		if (!uv_is_closing((uv_handle_t *)&srv->listeners[i].tcp))
			uv_close((uv_handle_t *)&srv->listeners[i].tcp, NULL);
}
