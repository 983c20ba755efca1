/*
 * server.h - a worker process's state: the loop, the loaded config, the
 * listeners (inherited from the master) and the live sessions.  One struct
 * server per worker.  The master (master.c) binds the listening sockets,
 * forks the workers and supervises them; see smtpchain(8).
 */
#ifndef SMTPCHAIN_SERVER_H
#define SMTPCHAIN_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "module.h"

struct session;
struct tls_server;

struct listener {
	uv_tcp_t		 tcp;
	struct server		*srv;
	const struct config_addr *addr;
};

struct server {
	uv_loop_t		*loop;
	struct config		*cfg;
	struct filter_chain	 chain;		/* the loaded filter modules */
	struct tls_server	*tls;		/* tls {}: STARTTLS and implicit TLS */
	bool			 transcript;	/* log.transcript or -d */
	const int		*listen_fds;	/* bound by the master, one per cfg->listen[] */
	struct listener		*listeners;
	size_t			 nlisteners;
	struct session		*sessions;	/* doubly linked, for shutdown */
	unsigned		 nsessions;
	uint64_t		 next_id;
	bool			 stopping;	/* SIGTERM: no new sessions */
	bool			 retiring;	/* reloaded: no new connections, sessions go on */
	bool			 shutdown_forced;/* its deadline passed */
	uv_timer_t		 shutdown_timer;
	uv_timer_t		 retire_timer;	/* retiring: then stop like SIGTERM */
	uv_signal_t		 sigterm, sigretire;
	/* worker.c's, called by session_close() (session.c) when a session has
	 * left the list (so the worker sees when it is drained) */
	void			(*session_closed)(struct server *srv);
};

/* master.c */
int	master_run(struct config *cfg, bool debug);	/* exit status */
int	config_check_runtime(const struct config *cfg, char *err, size_t errlen);	/* as -t */

/* worker.c */
int	worker_run(struct config *cfg, const int *listen_fds, unsigned serial, bool transcript);

/* listener.c */
int	listener_bind(const struct config_addr *addr, char *err, size_t errlen);	/* fd, or -1 */
int	listener_start(struct server *srv);		/* 0, or -1 after logging */
void	listener_stop(struct server *srv);

/* command.c: a session from accept() on */
uv_tcp_t *session_new(struct server *srv, const struct config_addr *la);	/* ready for uv_accept */
void	session_start(uv_tcp_t *client);	/* after a successful uv_accept */
void	session_discard(uv_tcp_t *client);	/* after a failed one */
void	sessions_shutdown(struct server *srv);	/* each: 421 now, or at the next safe point */

#endif
