/*
 * main.c - smtpchain(8): command line, start-up, signals, shutdown.
 *
 *	smtpchain [-c file] [-t] [-d] [-V] [-h]
 *
 * Runs in the foreground and logs to stderr (or syslog when log.syslog is
 * set).  SIGTERM or SIGINT: stop accepting, let sessions finish their
 * transaction up to timeout.shutdown, then 421 the rest and exit 0.
 */
#include "autoconf.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "filter.h"
#include "log.h"
#include "module.h"
#include "server.h"
#include "session.h"
#include "tls.h"

#define DEFAULT_CONFIG	SYSCONFDIR "/smtpchain/smtpchain.conf"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: smtpchain [-c file] [-t] [-d] [-V] [-h]\n"
	    "  -c file  configuration file (default %s)\n"
	    "  -t       check the configuration and exit (0 ok, 1 with file:line: error)\n"
	    "  -d       debug: log level debug and a transcript of every session\n"
	    "  -V       print the version and exit\n"
	    "  -h       this help\n", DEFAULT_CONFIG);
}

/* Everything is closed: close the process-wide handles so uv_run returns. */
void
server_drained(struct server *srv)
{
	log_info("all sessions closed, exiting");
	if (!uv_is_closing((uv_handle_t *)&srv->shutdown_timer))
		uv_close((uv_handle_t *)&srv->shutdown_timer, NULL);
	if (!uv_is_closing((uv_handle_t *)&srv->sigterm))
		uv_close((uv_handle_t *)&srv->sigterm, NULL);
	if (!uv_is_closing((uv_handle_t *)&srv->sigint))
		uv_close((uv_handle_t *)&srv->sigint, NULL);
}

/* Tell each session to stop (idle ones now; all of them when forced). */
static void
shutdown_sessions(struct server *srv)
{
	struct session *s, *next;

	for (s = srv->sessions; s; s = next) {
		next = s->next;
		session_shutdown(s);
	}
}

/* The shutdown deadline passed. */
static void
shutdown_deadline(uv_timer_t *t)
{
	struct server *srv = t->data;

	log_warn("shutdown: %u sessions still open after %us, closing them",
	    srv->nsessions, srv->cfg->timeout.shutdown);
	srv->shutdown_forced = true;
	shutdown_sessions(srv);
}

/* SIGTERM, SIGINT: graceful stop; a second signal forces it. */
static void
on_signal(uv_signal_t *h, int signum)
{
	struct server *srv = h->data;

	if (srv->stopping) {
		shutdown_deadline(&srv->shutdown_timer);
		return;
	}
	log_info("signal %d: no new connections, %u sessions finishing", signum, srv->nsessions);
	srv->stopping = true;
	listener_stop(srv);
	uv_timer_start(&srv->shutdown_timer, shutdown_deadline,
	    (uint64_t)srv->cfg->timeout.shutdown * 1000, 0);
	shutdown_sessions(srv);
	if (srv->nsessions == 0)
		server_drained(srv);
}

static void
close_any(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int
main(int argc, char **argv)
{
	const char *path = DEFAULT_CONFIG;
	bool check = false, debug = false;
	struct server srv;
	char err[1024];
	int ch;

	while ((ch = getopt(argc, argv, "c:tdVh")) != -1) {
		switch (ch) {
		case 'c': path = optarg; break;
		case 't': check = true; break;
		case 'd': debug = true; break;
		case 'V': printf("%s %s\n", PACKAGE_NAME, PACKAGE_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 1;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 1;
	}

	memset(&srv, 0, sizeof(srv));
	if ((srv.cfg = config_load(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (srv.cfg->tls.enabled &&
	    (srv.tls = tls_server_new(srv.cfg, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s: %s\n", path, err);
		config_free(srv.cfg);
		return 1;
	}
	if (srv.cfg->backend_tls != BACKEND_TLS_NONE &&
	    tls_client_init(srv.cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		tls_server_free(srv.tls);
		config_free(srv.cfg);
		return 1;
	}
	if (modules_load(srv.cfg, filter_host(), &srv.chain, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		tls_client_free();
		tls_server_free(srv.tls);
		config_free(srv.cfg);
		return 1;
	}
	if (check) {
		modules_unload(&srv.chain);
		tls_client_free();
		tls_server_free(srv.tls);
		config_free(srv.cfg);
		return 0;
	}
	log_init("smtpchain", debug ? LOG_LVL_DEBUG : srv.cfg->log.level, srv.cfg->log.syslog);
	srv.transcript = debug || srv.cfg->log.transcript;
	signal(SIGPIPE, SIG_IGN);

	srv.loop = uv_default_loop();
	filter_set_loop(srv.loop);
	uv_timer_init(srv.loop, &srv.shutdown_timer);
	srv.shutdown_timer.data = &srv;
	uv_signal_init(srv.loop, &srv.sigterm);
	uv_signal_init(srv.loop, &srv.sigint);
	srv.sigterm.data = srv.sigint.data = &srv;
	uv_signal_start(&srv.sigterm, on_signal, SIGTERM);
	uv_signal_start(&srv.sigint, on_signal, SIGINT);

	connlimit_init(srv.cfg->limits.max_connections);	/* before any fork: shared counts */
	if (listener_start(&srv) != 0) {
		uv_walk(srv.loop, close_any, NULL);
		uv_run(srv.loop, UV_RUN_DEFAULT);
		modules_unload(&srv.chain);
		return 1;
	}
	log_info("smtpchain %s started", PACKAGE_VERSION);
	uv_run(srv.loop, UV_RUN_DEFAULT);

	uv_walk(srv.loop, close_any, NULL);
	uv_run(srv.loop, UV_RUN_DEFAULT);
	uv_loop_close(srv.loop);
	modules_unload(&srv.chain);
	tls_client_free();
	tls_server_free(srv.tls);
	free(srv.listeners);
	config_free(srv.cfg);
	return 0;
}
