/*
 * listener.c - the listening sockets: bind each configured address, accept
 * connections and hand each to a new session.
 */

#include <stdlib.h>

#include "log.h"
#include "server.h"

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
		session_discard(client);
		return;
	}
	session_start(client);
}

/* Bind and listen on every configured address; -1 (logged) if one fails. */
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
		if ((rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&l->addr->ss,
		    l->addr->ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0)) != 0 ||
		    (rc = uv_listen((uv_stream_t *)&l->tcp, 511, listener_accept)) != 0) {
			log_error("listen on %s: %s", l->addr->text, uv_strerror(rc));
			return -1;
		}
		log_info("listening on %s%s, relaying to %s%s", l->addr->text,
		    l->addr->proxy_protocol ? " (PROXY protocol)" : "", cfg->backends[0].text,
		    cfg->nbackends > 1 ? " and the other backends" : "");
	}
	return 0;
}

/* Stop accepting: close every listening socket. */
void
listener_stop(struct server *srv)
{
	for (size_t i = 0; i < srv->nlisteners; i++)
		if (!uv_is_closing((uv_handle_t *)&srv->listeners[i].tcp))
			uv_close((uv_handle_t *)&srv->listeners[i].tcp, NULL);
}
