/*
 * master.c - the master process: binds the listeners, forks the workers,
 * supervises them, reloads the configuration, serves the metrics.
 *
 * The master never accepts an SMTP connection and never loads a filter
 * module.  It binds every listening socket (so a bad address fails at
 * start-up), forks `workers` worker processes that inherit the sockets
 * (worker.c), and then only waits for signals:
 *
 *   SIGCHLD  a worker exited.  One that was not told to go is logged with
 *            its exit status or signal and started again, after a backoff
 *            that doubles (0.25 s up to 30 s) while workers keep dying within
 *            10 s of their start.  Only that worker's sessions are lost.
 *   SIGHUP   reload: the file is loaded again and checked as -t does
 *            (modules loaded and initialised, in a short-lived child so the
 *            master stays clean; the master does not wait for it, but goes
 *            on restarting workers and serving the metrics, and a SIGHUP
 *            meanwhile is logged and ignored).  A bad config is logged and
 *            the running one kept.  A good one: listen addresses still there keep their
 *            socket, new ones are bound (a bind failure refuses the reload),
 *            removed ones closed; new workers start on the new config, and
 *            the old ones are told to retire (SIGUSR2): they accept nothing
 *            more, their sessions go on, and after timeout.shutdown they stop
 *            as on SIGTERM.
 *   SIGTERM, SIGINT  stop: the listeners are closed, every worker gets
 *            SIGTERM (a second signal is passed on again, which forces the
 *            workers to 421 their sessions); the master exits 0 once every
 *            worker has exited.
 *
 * With $NOTIFY_SOCKET set (systemd Type=notify), the master sends READY=1,
 * RELOADING=1 and STOPPING=1 itself: a datagram, no libsystemd.
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "connlimit.h"
#include "filter.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "privsep.h"
#include "server.h"
#include "tls.h"

#define MAX_WORKERS		METRICS_MAX_WORKERS	/* running and retiring */
#define CRASH_WINDOW_MS		10000	/* a worker dead sooner than this crashed */
#define BACKOFF_MIN_MS		250
#define BACKOFF_MAX_MS		30000

enum worker_state {
	WORKER_FREE = 0,	/* slot unused */
	WORKER_RUNNING,		/* accepting on the current config */
	WORKER_RETIRING,	/* an older config: told to finish (SIGUSR2) */
	WORKER_STOPPING,	/* told to stop (SIGTERM) */
};

struct worker {
	enum worker_state	state;
	pid_t			pid;
	unsigned		serial;		/* the nth worker started: session ids */
	uint64_t		started;	/* uv_now, ms */
};

static struct master {
	uv_loop_t		 loop;
	struct config		*cfg;		/* the current one */
	int			*fds;		/* listening sockets, one per cfg->listen[] */
	struct worker		 w[MAX_WORKERS];
	unsigned		 serial;
	unsigned		 crashes;	/* workers that died young, in a row */
	uint64_t		 next_spawn;	/* uv_now before which none is started */
	bool			 stopping;
	bool			 debug;		/* -d: log level debug, transcripts */
	struct metrics_proc {		/* the metrics server (metrics_serve) */
		int		 fd;	/* metrics.listen, bound here; -1: none */
		struct config_addr addr;/* what fd is bound to */
		pid_t		 pid;	/* 0: not running */
		bool		 stopping;	/* told to go (SIGTERM) */
		uint64_t	 next_spawn;	/* uv_now before which none is started */
	} mp;
	uv_timer_t		 spawn_timer;
	uv_timer_t		 ticket_timer;	/* tls.ticket_key_rotation: a new ticket key */
	uv_signal_t		 sighup, sigterm, sigint, sigchld;
	struct reload_check {		/* a reload's check, running in a child */
		struct config	*cfg;	/* NULL: none running */
		pid_t		 pid;	/* 0 once reaped */
		int		 status;
		uv_pipe_t	 pipe;	/* its error text, until EOF */
		bool		 pipe_open;
		uv_timer_t	 deadline;	/* timeout.module_check: then SIGKILL */
		bool		 timed_out;
		char		 err[1024];
		size_t		 got;
	} check;
} M;

static void	maintain_workers(void);
static void	reload_finish(void);
static void	close_listeners(const struct config *cfg, int *fds, const int *keep, size_t nkeep);
static void	ticket_keys_due(uv_timer_t *);
static void	ticket_keys_rotate(const char *why);

/* Tell systemd (Type=notify) how we are, when it asked ($NOTIFY_SOCKET). */
static void
sd_notify_state(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun;
	size_t len;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@') ||
	    (len = strlen(path)) >= sizeof(sun.sun_path))
		return;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, len);
	if (sun.sun_path[0] == '@')
		sun.sun_path[0] = '\0';		/* an abstract socket */
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return;		/* never blocks: a full queue loses the note, not the master */
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sun,
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) == -1)
		log_warn("sd_notify %s: %s", path, strerror(errno));
	close(fd);
}

/*
 * What -t checks beyond the file: the TLS contexts can be built and every
 * module loads and initialises.  0, or -1 with the error in err.
 */
int
config_check_runtime(const struct config *cfg, char *err, size_t errlen)
{
	struct filter_chain chain;
	struct tls_server *tls = NULL;
	char e[1024];

	if (cfg->tls.enabled && (tls = tls_server_new(cfg, e, sizeof(e))) == NULL) {
		snprintf(err, errlen, "%s: %s", cfg->file, e);
		return -1;
	}
	tls_server_free(tls);
	if (cfg->backend_tls != BACKEND_TLS_NONE && tls_client_init(cfg, e, sizeof(e)) != 0) {
		snprintf(err, errlen, "%s: %s", cfg->file, e);
		return -1;
	}
	tls_client_free();
	memset(&chain, 0, sizeof(chain));
	if (modules_load(cfg, filter_host(), &chain, err, errlen) != 0)
		return -1;
	modules_unload(&chain);
	return 0;
}

/* uv_walk() callback: close a handle's descriptor (not the handle). */
static void
close_handle_fd(uv_handle_t *h, void *arg)
{
	uv_os_fd_t fd;

	(void)arg;
	if (uv_fileno(h, &fd) == 0)
		close(fd);
}

/*
 * In a child: close the descriptors of the master's loop, which the child
 * never runs (a worker has uv_default_loop): those of its handles (the
 * metrics listener and connections, a reload's check pipe) and the loop's
 * own: its epoll instance, the pipe its signal handles write to, its async
 * eventfd and its spare descriptor for EMFILE.  libuv offers
 * uv_backend_fd() only, so the others are read from uv_loop_t's unix
 * fields (part of libuv 1.x's stable ABI).  Nothing here touches the epoll
 * set (no uv_close, no uv_run), and closing changes nothing for the
 * master: an epoll registration lives as long as some process holds the
 * file open, and the master still does.  libuv's process-wide signal lock
 * pipe is not the loop's: libuv makes a new one in the child itself
 * (pthread_atfork).  The listening sockets are plain descriptors (M.fds),
 * no handle of this loop: the child keeps them.
 */
static void
close_master_loop_fds(void)
{
#if UV_VERSION_MAJOR != 1
#error "close_master_loop_fds() reads libuv 1.x's uv_loop_t fields"
#endif
	int *fds[] = { &M.loop.backend_fd, &M.loop.signal_pipefd[0], &M.loop.signal_pipefd[1],
	    &M.loop.async_io_watcher.fd, &M.loop.async_wfd, &M.loop.emfile_fd };

	uv_walk(&M.loop, close_handle_fd, NULL);
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		bool seen = false;

		for (size_t j = 0; j < i; j++)
			seen = seen || *fds[j] == *fds[i];
		if (*fds[i] >= 0 && !seen)
			close(*fds[i]);
	}
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		*fds[i] = -1;
}

/*
 * fork() with every signal blocked, so no signal reaches the master's
 * handlers in the child.  In the child the master's signal handles are
 * dropped, its loop's descriptors and its own sockets closed; signals stay
 * blocked (the worker unblocks them once its own handlers are in place).
 */
static pid_t
fork_child(void)
{
	sigset_t all, old;
	pid_t pid;

	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid = fork();
	if (pid != 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		return pid;
	}
	uv_signal_stop(&M.sighup);
	uv_signal_stop(&M.sigterm);
	uv_signal_stop(&M.sigint);
	uv_signal_stop(&M.sigchld);
	close_master_loop_fds();
	return 0;
}

/*
 * Start checking cfg as -t does, in a child process: loading a module in
 * the master would leave it mapped there, and a reload must see the module
 * files as they are now.  The child writes its error to *fd and exits 0 or
 * 1, having unloaded every module it loaded (their fini frees what their
 * init allocated).  A module whose init hangs is ended by the parent with
 * SIGKILL after timeout.module_check: the kernel takes back everything
 * then, and no half-done init is interrupted inside the child (an alarm
 * there left a module's allocations behind, which valgrind reports).
 * The pid, or -1 with the error in err.
 */
static pid_t
check_start(const struct config *cfg, int *fd, char *err, size_t errlen)
{
	int pfd[2];
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) == -1) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return -1;
	}
	if ((pid = fork_child()) == -1) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		char e[1024];

		close(pfd[0]);
		if (M.mp.fd != -1)
			close(M.mp.fd);
		if (config_check_runtime(cfg, e, sizeof(e)) == 0)
			_exit(0);
		(void)!write(pfd[1], e, strlen(e));
		_exit(1);
	}
	close(pfd[1]);
	*fd = pfd[0];
	return pid;
}

/*
 * The check's outcome from its exit status, what it wrote, and whether its
 * deadline killed it: 0, or -1 with err.
 */
static int
check_result(const struct config *cfg, int status, char *err, size_t errlen, size_t got,
    bool timed_out)
{
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (timed_out)
		snprintf(err, errlen, "%s: the check of the modules did not finish within %u s "
		    "(timeout.module_check)", cfg->file, cfg->timeout.module_check);
	else if (got == 0)
		snprintf(err, errlen, "%s: the check of the modules failed (status 0x%x)",
		    cfg->file, status);
	return -1;
}

/*
 * The check at start-up, before the loop runs: wait for it, at most
 * timeout.module_check (then SIGKILL).
 */
static int
check_now(const struct config *cfg, char *err, size_t errlen)
{
	struct timespec now, end;
	struct pollfd pfd;
	char drop[256];
	bool timed_out = false;
	size_t got = 0;
	ssize_t n;
	int fd, status, ms;
	pid_t pid;

	if ((pid = check_start(cfg, &fd, err, errlen)) == -1)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += cfg->timeout.module_check;
	pfd.fd = fd;
	pfd.events = POLLIN;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		ms = (int)((end.tv_sec - now.tv_sec) * 1000 + (end.tv_nsec - now.tv_nsec) / 1000000);
		if (ms <= 0) {
			kill(pid, SIGKILL);
			timed_out = true;
			break;
		}
		if (poll(&pfd, 1, ms) == -1 && errno != EINTR)
			break;
		if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		if (got + 1 < errlen)
			n = read(fd, err + got, errlen - got - 1);
		else
			n = read(fd, drop, sizeof(drop));	/* the rest is dropped */
		if (n == 0 || (n == -1 && errno != EINTR))
			break;
		if (n > 0 && got + 1 < errlen)
			got += (size_t)n;
	}
	err[got] = '\0';
	close(fd);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	return check_result(cfg, status, err, errlen, got, timed_out);
}

/* Describe how a process ended: "exited with status 1", "killed by signal 9 (Killed)". */
static void
describe_status(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(status),
		    strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
	else
		snprintf(buf, len, "ended with status 0x%x", status);
}

/* How many worker slots are free (neither running nor retiring). */
static unsigned
free_slots(void)
{
	unsigned n = 0;

	for (unsigned i = 0; i < MAX_WORKERS; i++)
		if (M.w[i].state == WORKER_FREE)
			n++;
	return n;
}

/*
 * A reload starts cfg->workers new workers while the running ones retire:
 * 0 if there are slots for them, else -1 with why in err (workers of
 * earlier reloads still finishing their sessions).
 */
static int
room_for_workers(const struct config *cfg, char *err, size_t errlen)
{
	unsigned n = free_slots();

	if (n >= cfg->workers)
		return 0;
	snprintf(err, errlen, "%u free worker slots, %u needed: workers of an earlier "
	    "reload are still finishing their sessions; try again later", n, cfg->workers);
	return -1;
}

/* Start one worker on the current config; false if none could be. */
static bool
spawn_worker(void)
{
	unsigned slot;
	pid_t pid;

	for (slot = 0; slot < MAX_WORKERS; slot++)
		if (M.w[slot].state == WORKER_FREE)
			break;
	if (slot == MAX_WORKERS) {
		log_error("no free worker slot (%d workers running or retiring)", MAX_WORKERS);
		return false;
	}
	M.serial++;
	if ((pid = fork_child()) == -1) {
		log_error("fork: %s", strerror(errno));
		return false;
	}
	if (pid == 0) {
		pid_t master = getppid();
		int status;

		prctl(PR_SET_PDEATHSIG, SIGTERM);	/* the master gone: stop */
		if (getppid() != master)
			_exit(0);
		if (M.mp.fd != -1)
			close(M.mp.fd);
		metrics_worker_init(slot);
		status = worker_run(M.cfg, M.fds, M.serial, M.debug || M.cfg->log.transcript);
		exit(status);	/* not _exit: LeakSanitizer checks the worker too */
	}
	M.w[slot].state = WORKER_RUNNING;
	M.w[slot].pid = pid;
	M.w[slot].serial = M.serial;
	M.w[slot].started = uv_now(&M.loop);
	metrics_worker_started(slot, pid);
	log_info("worker %u started (pid %ld)", M.serial, (long)pid);
	return true;
}

/*
 * Start the metrics server on the bound M.mp.fd: a child that gives up
 * root and answers HTTP (metrics_serve), so the master parses nothing a
 * peer sends.
 */
static void
spawn_metrics(void)
{
	pid_t pid;

	if ((pid = fork_child()) == -1) {
		log_error("fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		pid_t master = getppid();
		int status;

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != master)
			_exit(0);
		prctl(PR_SET_NAME, "sc-metrics");	/* ps, and the tests, tell it from a worker */
		close_listeners(M.cfg, M.fds, NULL, 0);
		status = metrics_serve(M.cfg, M.mp.fd);
		exit(status);
	}
	M.mp.pid = pid;
	M.mp.stopping = false;
	log_info("metrics server started (pid %ld)", (long)pid);
}

/* Tell the metrics server to stop, if it runs. */
static void
stop_metrics(void)
{
	if (M.mp.pid != 0 && !M.mp.stopping) {
		M.mp.stopping = true;
		kill(M.mp.pid, SIGTERM);
	}
}

/* The metrics server has exited: logged; maintain_workers starts another. */
static void
metrics_exited(int status)
{
	char how[128];

	describe_status(status, how, sizeof(how));
	if (M.mp.stopping || M.stopping)
		log_info("metrics server (pid %ld) %s", (long)M.mp.pid, how);
	else {
		M.mp.next_spawn = uv_now(&M.loop) + 1000;
		log_error("metrics server (pid %ld) %s unexpectedly; starting another in 1000 ms",
		    (long)M.mp.pid, how);
	}
	M.mp.pid = 0;
	M.mp.stopping = false;
}

/*
 * metrics.listen for cfg: the socket the running config has when the
 * address is the same, else a new one bound (and the metrics server, if
 * running, told to stop: maintain_workers starts one on the new socket).
 * 0, or -1 with err when it cannot be bound.
 */
static int
metrics_listener(const struct config *cfg, char *err, size_t errlen)
{
	int fd = -1;

	if (cfg->metrics.enabled && M.mp.fd != -1 && M.mp.addr.sslen == cfg->metrics.listen.sslen &&
	    memcmp(&M.mp.addr.ss, &cfg->metrics.listen.ss, M.mp.addr.sslen) == 0)
		return 0;
	if (cfg->metrics.enabled && (fd = listener_bind(&cfg->metrics.listen, err, errlen)) == -1) {
		char e[512];

		snprintf(e, sizeof(e), "%s", err);
		snprintf(err, errlen, "%s:%d: metrics.%s", cfg->file, cfg->metrics.listen.line, e);
		return -1;
	}
	stop_metrics();
	if (M.mp.fd != -1)
		close(M.mp.fd);
	M.mp.fd = fd;
	M.mp.addr = cfg->metrics.listen;
	return 0;
}

/* The backoff is over: start what is missing. */
static void
spawn_due(uv_timer_t *t)
{
	maintain_workers();
}

/* Start workers until cfg->workers run on the current config (after the backoff). */
static void
maintain_workers(void)
{
	unsigned running = 0;
	uint64_t now = uv_now(&M.loop);

	if (M.stopping)
		return;
	if (M.mp.fd != -1 && M.mp.pid == 0) {
		if (now >= M.mp.next_spawn)
			spawn_metrics();
		else
			uv_timer_start(&M.spawn_timer, spawn_due, M.mp.next_spawn - now, 0);
	}
	for (unsigned i = 0; i < MAX_WORKERS; i++)
		if (M.w[i].state == WORKER_RUNNING)
			running++;
	for (; running < M.cfg->workers; running++) {
		if (now < M.next_spawn) {
			uv_timer_start(&M.spawn_timer, spawn_due, M.next_spawn - now, 0);
			return;
		}
		if (!free_slots())
			return;		/* on_sigchld calls again when one frees */
		if (!spawn_worker()) {
			M.next_spawn = now + BACKOFF_MAX_MS;
			uv_timer_start(&M.spawn_timer, spawn_due, BACKOFF_MAX_MS, 0);
			return;
		}
	}
}

/* Every worker has exited after SIGTERM: close our handles, uv_run returns. */
static void
master_done(void)
{
	log_info("all workers exited, exiting");
	uv_close((uv_handle_t *)&M.spawn_timer, NULL);
	uv_close((uv_handle_t *)&M.check.deadline, NULL);
	uv_close((uv_handle_t *)&M.ticket_timer, NULL);
	uv_close((uv_handle_t *)&M.sighup, NULL);
	uv_close((uv_handle_t *)&M.sigterm, NULL);
	uv_close((uv_handle_t *)&M.sigint, NULL);
	uv_close((uv_handle_t *)&M.sigchld, NULL);
}

/* Whether any worker is left. */
static bool
workers_left(void)
{
	if (M.mp.pid != 0)
		return true;	/* the metrics server, too */
	for (unsigned i = 0; i < MAX_WORKERS; i++)
		if (M.w[i].state != WORKER_FREE)
			return true;
	return false;
}

/* One worker has exited: log it, and start a new one if it was not told to go. */
static void
worker_exited(unsigned slot, int status)
{
	struct worker *w = &M.w[slot];
	uint64_t now = uv_now(&M.loop), delay;
	char how[128];

	describe_status(status, how, sizeof(how));
	metrics_worker_gone(slot, w->state == WORKER_RUNNING && !M.stopping);
	connlimit_process_died(w->pid);		/* its connections are gone */
	if (w->state != WORKER_RUNNING || M.stopping) {
		log_info("worker %u (pid %ld) %s", w->serial, (long)w->pid, how);
		memset(w, 0, sizeof(*w));
		return;
	}
	if (now - w->started < CRASH_WINDOW_MS || (WIFEXITED(status) && WEXITSTATUS(status) != 0))
		M.crashes++;
	else
		M.crashes = 0;
	delay = 0;
	if (M.crashes > 0) {
		delay = (uint64_t)BACKOFF_MIN_MS << (M.crashes > 8 ? 7 : M.crashes - 1);
		if (delay > BACKOFF_MAX_MS)
			delay = BACKOFF_MAX_MS;
	}
	M.next_spawn = now + delay;
	log_error("worker %u (pid %ld) %s unexpectedly; its sessions are lost; "
	    "starting another in %" PRIu64 " ms", w->serial, (long)w->pid, how, delay);
	memset(w, 0, sizeof(*w));
}

/* SIGCHLD: reap every exited worker. */
static void
on_sigchld(uv_signal_t *h, int signum)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (M.check.cfg != NULL && M.check.pid == pid) {
			M.check.pid = 0;
			M.check.status = status;
			reload_finish();
			continue;
		}
		if (M.mp.pid != 0 && M.mp.pid == pid) {
			metrics_exited(status);
			continue;
		}
		for (unsigned i = 0; i < MAX_WORKERS; i++)
			if (M.w[i].state != WORKER_FREE && M.w[i].pid == pid) {
				worker_exited(i, status);
				break;
			}
	}
	if (M.stopping) {
		if (!workers_left())
			master_done();
		return;
	}
	maintain_workers();
}

/* Close the listening sockets of cfg that are not in keep (NULL: all). */
static void
close_listeners(const struct config *cfg, int *fds, const int *keep, size_t nkeep)
{
	for (size_t i = 0; i < cfg->nlisten; i++) {
		bool kept = false;

		for (size_t j = 0; j < nkeep; j++)
			kept = kept || keep[j] == fds[i];
		if (!kept && fds[i] != -1)
			close(fds[i]);
		fds[i] = -1;
	}
}

/*
 * The listening sockets for cfg: those of the running config whose
 * address is unchanged are kept, the others bound.  NULL (err set) when
 * one cannot be bound; nothing of the running config is touched then.
 */
static int *
open_listeners(const struct config *cfg, char *err, size_t errlen)
{
	int *fds = xcalloc(cfg->nlisten, sizeof(*fds));

	for (size_t i = 0; i < cfg->nlisten; i++) {
		const struct config_addr *a = &cfg->listen[i];

		fds[i] = -1;
		for (size_t j = 0; M.cfg && j < M.cfg->nlisten && fds[i] == -1; j++) {
			const struct config_addr *o = &M.cfg->listen[j];

			if (o->sslen == a->sslen && memcmp(&o->ss, &a->ss, a->sslen) == 0 &&
			    M.fds[j] != -1)
				fds[i] = M.fds[j];
		}
		if (fds[i] == -1 && (fds[i] = listener_bind(a, err, errlen)) == -1) {
			for (size_t j = 0; j < i; j++) {	/* close only what we bound */
				bool old = false;

				for (size_t k = 0; M.cfg && k < M.cfg->nlisten; k++)
					old = old || M.fds[k] == fds[j];
				if (!old)
					close(fds[j]);
			}
			free(fds);
			return NULL;
		}
	}
	return fds;
}

/* The check's error text, as the child writes it (the rest is dropped). */
static void
check_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	static char drop[256];

	if (M.check.got + 1 < sizeof(M.check.err))
		*buf = uv_buf_init(M.check.err + M.check.got,
		    (unsigned)(sizeof(M.check.err) - M.check.got - 1));
	else
		*buf = uv_buf_init(drop, sizeof(drop));
}

static void
check_pipe_closed(uv_handle_t *h)
{
	M.check.pipe_open = false;
	reload_finish();
}

/* The reload's check has run for timeout.module_check: end it (reaped by on_sigchld). */
static void
check_deadline(uv_timer_t *t)
{
	if (M.check.cfg == NULL || M.check.pid == 0)
		return;
	M.check.timed_out = true;
	kill(M.check.pid, SIGKILL);
}

static void
check_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	if (nread > 0 && buf->base != M.check.err + M.check.got)
		return;		/* past the buffer: dropped */
	if (nread > 0)
		M.check.got += (size_t)nread;
	else if (nread < 0)
		uv_close((uv_handle_t *)st, check_pipe_closed);
}

/*
 * SIGHUP: load the file, then check it in a child (check_start) while the
 * master goes on supervising and serving the metrics; reload_finish()
 * switches once the child has exited and its pipe is closed.
 */
static void
on_sighup(uv_signal_t *h, int signum)
{
	struct config *cfg;
	char err[1024];
	pid_t pid;
	int fd;

	if (M.stopping)
		return;
	if (M.check.cfg != NULL) {
		log_warn("SIGHUP: the previous reload is still being checked (pid %ld); "
		    "this one is ignored, send SIGHUP again once it is done", (long)M.check.pid);
		return;
	}
	sd_notify_state("RELOADING=1");
	log_info("SIGHUP: reloading %s", M.cfg->file);
	if ((cfg = config_load(M.cfg->file, err, sizeof(err))) == NULL ||
	    privsep_check_user(cfg, err, sizeof(err)) != 0 ||
	    privsep_check_dirs(cfg, err, sizeof(err)) != 0 ||
	    room_for_workers(cfg, err, sizeof(err)) != 0 ||
	    (pid = check_start(cfg, &fd, err, sizeof(err))) == -1) {
		log_error("reload failed, still running the previous configuration: %s", err);
		config_free(cfg);
		sd_notify_state("READY=1");
		return;
	}
	M.check.cfg = cfg;
	M.check.pid = pid;
	M.check.got = 0;
	M.check.timed_out = false;
	uv_timer_start(&M.check.deadline, check_deadline, (uint64_t)cfg->timeout.module_check * 1000, 0);
	uv_pipe_init(&M.loop, &M.check.pipe, 0);
	M.check.pipe_open = true;
	if (uv_pipe_open(&M.check.pipe, fd) != 0 ||
	    uv_read_start((uv_stream_t *)&M.check.pipe, check_alloc, check_read) != 0)
		uv_close((uv_handle_t *)&M.check.pipe, check_pipe_closed);
}

/* The reload's check is over (exited, pipe closed): switch, or keep the old config. */
static void
reload_finish(void)
{
	struct config *cfg = M.check.cfg;
	char err[1024];
	unsigned retiring = 0;
	int *fds;

	if (cfg == NULL || M.check.pid != 0 || M.check.pipe_open)
		return;
	M.check.cfg = NULL;
	uv_timer_stop(&M.check.deadline);
	M.check.err[M.check.got] = '\0';
	snprintf(err, sizeof(err), "%s", M.check.err);
	if (M.stopping) {
		config_free(cfg);
		return;
	}
	if (check_result(cfg, M.check.status, err, sizeof(err), M.check.got, M.check.timed_out) != 0 ||
	    room_for_workers(cfg, err, sizeof(err)) != 0 ||
	    (fds = open_listeners(cfg, err, sizeof(err))) == NULL) {
		log_error("reload failed, still running the previous configuration: %s", err);
		config_free(cfg);
		sd_notify_state("READY=1");
		return;
	}
	if (metrics_listener(cfg, err, sizeof(err)) != 0)
		log_error("reload: %s; metrics stay where they were", err);
	close_listeners(M.cfg, M.fds, fds, cfg->nlisten);
	free(M.fds);
	M.fds = fds;
	config_free(M.cfg);
	M.cfg = cfg;
	ticket_keys_rotate("reload");
	log_init("smtpchain", M.debug ? LOG_LVL_DEBUG : cfg->log.level, cfg->log.syslog);
	for (unsigned i = 0; i < MAX_WORKERS; i++)
		if (M.w[i].state == WORKER_RUNNING) {
			M.w[i].state = WORKER_RETIRING;
			kill(M.w[i].pid, SIGUSR2);
			retiring++;
		}
	M.crashes = 0;
	M.next_spawn = 0;
	uv_timer_stop(&M.spawn_timer);
	maintain_workers();
	log_info("reloaded: %u workers on the new configuration, %u retiring", cfg->workers,
	    retiring);
	sd_notify_state("READY=1");
}

/*
 * A new TLS session ticket key (tls.c keeps the previous one for
 * decryption), and the next one due in tls.ticket_key_rotation seconds.
 */
static void
ticket_keys_rotate(const char *why)
{
	if (!M.cfg->tls.enabled) {
		uv_timer_stop(&M.ticket_timer);
		return;
	}
	log_info("TLS session ticket key %lu made (%s); the previous one still decrypts",
	    tls_ticket_keys_rotate(), why);
	uv_timer_start(&M.ticket_timer, ticket_keys_due,
	    (uint64_t)M.cfg->tls.ticket_key_rotation * 1000, 0);
}

static void
ticket_keys_due(uv_timer_t *t)
{
	ticket_keys_rotate("tls.ticket_key_rotation");
}

/* SIGTERM, SIGINT: stop every worker, then exit; a second one forces them. */
static void
on_sigterm(uv_signal_t *h, int signum)
{
	unsigned n = 0;

	if (!M.stopping) {
		M.stopping = true;
		sd_notify_state("STOPPING=1");
		uv_timer_stop(&M.spawn_timer);
		close_listeners(M.cfg, M.fds, NULL, 0);
		stop_metrics();
		if (M.mp.fd != -1)
			close(M.mp.fd);
		M.mp.fd = -1;
		if (M.check.cfg != NULL && M.check.pid != 0)
			kill(M.check.pid, SIGKILL);	/* a reload being checked: moot */
	}
	for (unsigned i = 0; i < MAX_WORKERS; i++)
		if (M.w[i].state != WORKER_FREE) {
			M.w[i].state = WORKER_STOPPING;
			kill(M.w[i].pid, SIGTERM);
			n++;
		}
	log_info("signal %d: stopping, %u workers finishing their sessions", signum, n);
	if (n == 0)
		master_done();
}

static void
close_any_handle(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/*
 * Run the master on a loaded config (main.c loaded it; the master owns it
 * now); debug is -d.  Returns the exit status: 1 when start-up fails (the error on
 * stderr), else 0 after SIGTERM.
 */
int
master_run(struct config *cfg, bool debug)
{
	char err[1024];

	M.debug = debug;
	M.mp.fd = -1;
	if (tls_ticket_keys_init() != 0) {	/* before any fork: every process shares them */
		fprintf(stderr, "TLS session ticket keys: %s\n", strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&M.loop);
	uv_timer_init(&M.loop, &M.spawn_timer);
	uv_timer_init(&M.loop, &M.check.deadline);
	uv_timer_init(&M.loop, &M.ticket_timer);
	uv_signal_init(&M.loop, &M.sighup);
	uv_signal_init(&M.loop, &M.sigterm);
	uv_signal_init(&M.loop, &M.sigint);
	uv_signal_init(&M.loop, &M.sigchld);
	if (check_now(cfg, err, sizeof(err)) != 0 ||
	    privsep_check_user(cfg, err, sizeof(err)) != 0 ||
	    privsep_check_dirs(cfg, err, sizeof(err)) != 0 ||
	    (M.fds = open_listeners(cfg, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		config_free(cfg);
		return 1;
	}
	M.cfg = cfg;
	/* Shared tables before any fork (the connection table keeps its size on reload). */
	if (connlimit_init(cfg->limits.max_connections) != 0) {
		fprintf(stderr, "connection table: %s\n", strerror(errno));
		return 1;
	}
	if (metrics_init(err, sizeof(err)) != 0 || metrics_listener(cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	uv_signal_start(&M.sighup, on_sighup, SIGHUP);
	uv_signal_start(&M.sigterm, on_sigterm, SIGTERM);
	uv_signal_start(&M.sigint, on_sigterm, SIGINT);
	uv_signal_start(&M.sigchld, on_sigchld, SIGCHLD);
	for (size_t i = 0; i < cfg->nlisten; i++)
		log_info("listening on %s%s, relaying to %s%s", cfg->listen[i].text,
		    cfg->listen[i].proxy_protocol ? " (PROXY protocol)" : "", cfg->backends[0].text,
		    cfg->nbackends > 1 ? " and the other backends" : "");
	log_info("smtpchain %s started, %u workers", PACKAGE_VERSION, cfg->workers);
	maintain_workers();
	if (cfg->tls.enabled)	/* the first key is new: the next one in a period */
		uv_timer_start(&M.ticket_timer, ticket_keys_due,
		    (uint64_t)cfg->tls.ticket_key_rotation * 1000, 0);
	sd_notify_state("READY=1");
	uv_run(&M.loop, UV_RUN_DEFAULT);
	uv_walk(&M.loop, close_any_handle, NULL);
	uv_run(&M.loop, UV_RUN_DEFAULT);
	uv_loop_close(&M.loop);
	free(M.fds);
	config_free(M.cfg);
	return 0;
}
