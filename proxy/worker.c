/*
 * worker.c - one worker process: its own loop, the listening sockets it
 * inherited from the master, its own TLS contexts and filter modules
 * (loaded after the fork, so a reload picks up the modules as they are on
 * disk now), and the sessions it accepted.
 *
 * Signals from the master:
 *   SIGTERM  stop: no new connections; a session between transactions gets
 *            421 now, one inside a transaction when it ends; after
 *            timeout.shutdown (or a second SIGTERM) the rest get 421.
 *   SIGUSR2  retire (after a reload): no new connections, every session
 *            goes on as usual; after timeout.shutdown the worker stops as on
 *            SIGTERM.
 * SIGINT and SIGHUP are the master's: a worker ignores them (a ^C on the
 * terminal reaches the whole process group; the master passes it on).
 * The worker exits 0 when its last session has closed, and 78 (EX_CONFIG)
 * when its TLS contexts or modules cannot be set up or root cannot be
 * given up.
 *
 * Privileges: the TLS keys are read and every module's init() runs as the
 * master's user (root), then the worker gives up root for good
 * (privsep_drop: `user`, its group, no capabilities, no_new_privs, and
 * `chroot` if set) before it accepts anything.
 */
#include "autoconf.h"

#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filter.h"
#include "log.h"
#include "module.h"
#include "privsep.h"
#include "server.h"
#include "tls.h"

#define EXIT_CONFIG	78	/* sysexits.h EX_CONFIG: the master backs off */

/* Everything is closed: close the process-wide handles so uv_run returns. */
static void
server_drained(struct server *srv)
{
	log_info("worker: all sessions closed, exiting");
	if (!uv_is_closing((uv_handle_t *)&srv->shutdown_timer))
		uv_close((uv_handle_t *)&srv->shutdown_timer, NULL);
	if (!uv_is_closing((uv_handle_t *)&srv->retire_timer))
		uv_close((uv_handle_t *)&srv->retire_timer, NULL);
	if (!uv_is_closing((uv_handle_t *)&srv->sigterm))
		uv_close((uv_handle_t *)&srv->sigterm, NULL);
	if (!uv_is_closing((uv_handle_t *)&srv->sigretire))
		uv_close((uv_handle_t *)&srv->sigretire, NULL);
}

/* A session closed (session_close(), session.c): stopping or retiring, the last
 * one drains the worker. */
static void
worker_session_closed(struct server *srv)
{
	if ((srv->stopping || srv->retiring) && srv->nsessions == 0)
		server_drained(srv);
}

/* The shutdown deadline passed. */
static void
shutdown_deadline(uv_timer_t *t)
{
	struct server *srv = t->data;

	log_warn("shutdown: %u sessions still open after %us, closing them",
	    srv->nsessions, srv->cfg->timeout.shutdown);
	srv->shutdown_forced = true;
	sessions_shutdown(srv);
}

/* Stop: no new connections, sessions finish their transaction (SIGTERM). */
static void
worker_stop(struct server *srv)
{
	if (srv->stopping) {
		shutdown_deadline(&srv->shutdown_timer);
		return;
	}
	log_info("worker: stopping, %u sessions finishing", srv->nsessions);
	srv->stopping = true;
	uv_timer_stop(&srv->retire_timer);
	listener_stop(srv);
	uv_timer_start(&srv->shutdown_timer, shutdown_deadline,
	    (uint64_t)srv->cfg->timeout.shutdown * 1000, 0);
	sessions_shutdown(srv);
	if (srv->nsessions == 0)
		server_drained(srv);
}

/* SIGTERM from the master: stop; a second one forces it. */
static void
on_sigterm(uv_signal_t *h, int signum)
{
	worker_stop(h->data);
}

/* The retiring worker's grace period is over: stop as on SIGTERM. */
static void
retire_deadline(uv_timer_t *t)
{
	struct server *srv = t->data;

	log_info("worker: retiring for %us, %u sessions left", srv->cfg->timeout.shutdown,
	    srv->nsessions);
	worker_stop(srv);
}

/* SIGUSR2 from the master after a reload: no new connections, sessions go on. */
static void
on_sigretire(uv_signal_t *h, int signum)
{
	struct server *srv = h->data;

	if (srv->stopping || srv->retiring)
		return;
	srv->retiring = true;
	log_info("worker: reloaded, no new connections, %u sessions finishing", srv->nsessions);
	listener_stop(srv);
	uv_timer_start(&srv->retire_timer, retire_deadline,
	    (uint64_t)srv->cfg->timeout.shutdown * 1000, 0);
	if (srv->nsessions == 0)
		server_drained(srv);
}

static void
close_any(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/*
 * Run one worker on a config the master loaded and checked, accepting on
 * listen_fds (one per cfg->listen[]); serial numbers the workers the master
 * started, so session ids stay unique across workers; transcript is
 * log.transcript or -d.  TLS session tickets resume on any worker (the
 * keys are the master's, see tls.h).  Signals arrive blocked (see master.c's fork_child)
 * and are unblocked once the worker's handlers are in place.  Returns the
 * exit status.
 */
int
worker_run(struct config *cfg, const int *listen_fds, unsigned serial, bool transcript)
{
	sigset_t none;
	struct server srv;
	char err[1024];
	int status = 0;

	memset(&srv, 0, sizeof(srv));
	srv.cfg = cfg;
	srv.listen_fds = listen_fds;
	srv.next_id = (uint64_t)serial << 32;
	srv.transcript = transcript;
	srv.session_closed = worker_session_closed;
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);

	if (cfg->tls.enabled && (srv.tls = tls_server_new(cfg, err, sizeof(err))) == NULL) {
		log_error("worker: %s: %s", cfg->file, err);
		return EXIT_CONFIG;
	}
	if (cfg->backend_tls != BACKEND_TLS_NONE && tls_client_init(cfg, err, sizeof(err)) != 0) {
		log_error("worker: %s: %s", cfg->file, err);
		tls_server_free(srv.tls);
		return EXIT_CONFIG;
	}
	if (modules_load(cfg, filter_host(), &srv.chain, err, sizeof(err)) != 0) {
		log_error("worker: %s", err);
		tls_client_free();
		tls_server_free(srv.tls);
		return EXIT_CONFIG;
	}

	if (privsep_drop(cfg, "worker", err, sizeof(err)) != 0) {
		log_error("worker: %s", err);
		modules_unload(&srv.chain);
		tls_client_free();
		tls_server_free(srv.tls);
		return EXIT_CONFIG;
	}

	srv.loop = uv_default_loop();
	filter_set_loop(srv.loop);
	uv_timer_init(srv.loop, &srv.shutdown_timer);
	uv_timer_init(srv.loop, &srv.retire_timer);
	srv.shutdown_timer.data = srv.retire_timer.data = &srv;
	uv_signal_init(srv.loop, &srv.sigterm);
	uv_signal_init(srv.loop, &srv.sigretire);
	srv.sigterm.data = srv.sigretire.data = &srv;
	uv_signal_start(&srv.sigterm, on_sigterm, SIGTERM);
	uv_signal_start(&srv.sigretire, on_sigretire, SIGUSR2);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	if (listener_start(&srv) != 0)
		status = EXIT_CONFIG;
	else
		uv_run(srv.loop, UV_RUN_DEFAULT);

	uv_walk(srv.loop, close_any, NULL);
	uv_run(srv.loop, UV_RUN_DEFAULT);
	uv_loop_close(srv.loop);
	modules_unload(&srv.chain);
	tls_client_free();
	tls_server_free(srv.tls);
	free(srv.listeners);
	return status;
}
