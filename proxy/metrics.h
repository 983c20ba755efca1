/*
 * metrics.h - counters shared by the workers, served by an unprivileged
 * child of the master.
 *
 * One fixed-size MAP_SHARED region, created by the master before the first
 * fork (metrics_init), holds a slot of counters per worker, updated with
 * __atomic operations and summed when scraped, and a bounded table of the
 * live sessions.  When metrics {} is set, the master binds metrics.listen
 * and forks a process that gives up root and serves them over HTTP:
 * GET /metrics (Prometheus text format 0.0.4) and GET /status (live
 * sessions, plain text).  Metric names: smtpchain(8), METRICS.
 *
 * Session code calls the metrics_session_* and metrics_* functions below,
 * one line each; they do nothing before metrics_worker_init (unit tests).
 */
#ifndef SMTPCHAIN_METRICS_H
#define SMTPCHAIN_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "config.h"

#define METRICS_MAX_WORKERS	64	/* worker slots: running and retiring */
#define METRICS_MAX_SESSIONS	1024	/* rows of the live session table */
#define METRICS_MAX_FILTERS	32	/* distinct filter names counted */

/* A session's own row of the metrics: it keeps this, metrics.c fills it. */
struct metrics_session {
	int		row;		/* in the live table, -1 if it was full */
	uint64_t	started;	/* uv_hrtime() at accept */
	uint64_t	msg_started;	/* uv_hrtime() at MAIL, 0 outside a transaction */
};

#define METRICS_EXIT_CONFIG	78	/* metrics_serve could not start: the master backs off */

/* master.c */
int	metrics_init(char *err, size_t errlen);
int	metrics_serve(const struct config *cfg, int fd);	/* the metrics process; exit status */
void	metrics_worker_started(unsigned slot, pid_t pid);
void	metrics_worker_gone(unsigned slot, bool unexpected);	/* clears its sessions */

/* worker.c */
void	metrics_worker_init(unsigned slot);
void	metrics_filters(const char *const *names, size_t n);	/* the loaded chain */

/* command.c, session.c, backend.c, filter.c: m is the session's own (struct metrics_session) */
void	metrics_session_open(struct metrics_session *m, const char *id, const char *caddr,
	    unsigned cport);
/* The state changed; the client too, as a PROXY header may set it. */
void	metrics_session_state(struct metrics_session *m, const char *state, const char *caddr,
	    unsigned cport);
void	metrics_session_close(struct metrics_session *m);
void	metrics_bytes_in(struct metrics_session *m, size_t n);
void	metrics_bytes_out(struct metrics_session *m, size_t n);
void	metrics_message_start(struct metrics_session *m);
void	metrics_message_outcome(struct metrics_session *m, const char *status);	/* the summary line's word */
void	metrics_backend_reply(int code);
void	metrics_filter_verdict(const char *filter, int verdict);	/* enum sc_verdict */

/* For tests and the status page: render into buf; returns the length. */
size_t	metrics_render(char *buf, size_t len);
size_t	metrics_render_status(char *buf, size_t len);

#endif
