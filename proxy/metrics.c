/*
 * metrics.c - counters shared by the workers, served by an unprivileged
 * child of the master.
 *
 * The region (struct region) is one anonymous MAP_SHARED mapping made by
 * the master before the first fork, so every worker sees the same pages.
 * Each worker adds to its own slot (struct wslot) with __atomic operations;
 * a slot outlives its worker and is reused by the next worker started in
 * it, so its counters only ever grow (Prometheus counters).  The master
 * sums the slots when scraped.  Live sessions are rows of a bounded table,
 * claimed by a compare-and-swap on the row's pid; the master clears a dead
 * worker's rows and its open-session gauge.  The table of filter names is
 * appended to under a robust process-shared mutex (as in connlimit.c): a
 * worker killed while holding it leaves it to the next taker, never to a
 * spin that no one ends.
 *
 * HTTP: a process of its own (metrics_serve), forked by the master, which
 * binds the listener; it gives up root before its first accept, as the
 * workers do, so no HTTP request is parsed by root.  It only reads the
 * region.  One request per connection: GET only, the request head bounded
 * (HTTP_MAX_REQUEST) and due within HTTP_TIMEOUT_MS of the accept (a
 * scraper sends it at once), the connection closed after the reply.  Idle
 * connections cannot lock a scrape out: at most HTTP_MAX_PER_CLIENT from one
 * address, and when HTTP_MAX_CONNS are open a new one closes the oldest
 * still waiting for its request.  The listener is meant for loopback or a
 * firewalled address.
 */
#include "autoconf.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/mman.h>

#include "log.h"
#include "metrics.h"
#include "privsep.h"
#include "shmutex.h"

#define HTTP_MAX_REQUEST	4096
#define HTTP_TIMEOUT_MS		2000	/* from the accept to a whole request head */
#define RENDER_MAX		(512 * 1024)

/* Counters, summed over the slots. */
enum counter {
	C_CONNECTIONS,
	C_MSG_ACCEPTED, C_MSG_REJECTED, C_MSG_TEMPFAILED, C_MSG_DISCARDED, C_MSG_QUARANTINED,
	C_BYTES_IN, C_BYTES_OUT,
	C_BACKEND_2XX, C_BACKEND_3XX, C_BACKEND_4XX, C_BACKEND_5XX,
	C_MAX
};

enum histogram { H_SESSION, H_MESSAGE, H_MAX };

/* Upper bounds of the histogram buckets, in seconds (then +Inf). */
static const double bucket_le[] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
};
#define NBUCKETS	(sizeof(bucket_le) / sizeof(bucket_le[0]))

static const char *const verdict_names[] = {
	"continue", "accept", "reject", "tempfail", "discard", "quarantine", "pending",
};
#define NVERDICTS	(sizeof(verdict_names) / sizeof(verdict_names[0]))

/* One worker slot's counters. */
struct wslot {
	pid_t		pid;			/* the worker now in it, 0 = none (master writes) */
	uint64_t	c[C_MAX];
	int64_t		sessions;		/* open now */
	uint64_t	bucket[H_MAX][NBUCKETS + 1];	/* not cumulative; last = over the top */
	uint64_t	sum_us[H_MAX];
	uint64_t	verdict[METRICS_MAX_FILTERS][NVERDICTS];
};

/* One live session, for /status. */
struct srow {
	pid_t		pid;			/* its worker; 0 = free (claimed by CAS) */
	unsigned	ready;			/* the fields below are written */
	char		id[16];
	char		client[64];
	char		state[12];
	int64_t		started;		/* time(NULL) */
	uint64_t	bytes_in, bytes_out;
};

struct region {
	uint64_t	restarts;		/* workers that died unexpectedly */
	pthread_mutex_t	names_lock;		/* robust, process-shared: appending to names */
	unsigned	nnames;			/* names[0..nnames) are written (release) */
	char		names[METRICS_MAX_FILTERS][64];
	struct wslot	slot[METRICS_MAX_WORKERS];
	struct srow	row[METRICS_MAX_SESSIONS];
};

static struct region	*R;		/* NULL: metrics off (unit tests) */
static struct wslot	*mine;		/* this worker's slot */
static pid_t		 my_pid;

/* The metrics server process's HTTP side. */
struct http_conn {
	uv_tcp_t		 tcp;
	uv_timer_t		 timer;
	uv_write_t		 wreq;
	struct http_conn	*next, *prev;
	char			 req[HTTP_MAX_REQUEST];
	size_t			 len;
	char			*resp;
	int			 handles;
	bool			 answered;
	unsigned char		 peer[16];	/* the client's address, IPv4-mapped when IPv4 */
};

static struct {
	bool			 on;
	uv_tcp_t		*tcp;		/* the listener; a new one per start, freed
						   in its close callback (a reload may start
						   the next before the last one has closed) */
	struct config_addr	 addr;
	struct http_conn	*conns;
	unsigned		 nconns;	/* open connections, at most HTTP_MAX_CONNS */
} http;

#define HTTP_MAX_CONNS		64	/* open at once; more close the oldest idle one */
#define HTTP_MAX_PER_CLIENT	8	/* open at once from one address; more are closed */

/* ------------------------------------------------------------------------- */
/* Workers: the increments */

/* Add to one of this worker's counters. */
static void
add(enum counter c, uint64_t n)
{
	if (mine)
		__atomic_add_fetch(&mine->c[c], n, __ATOMIC_RELAXED);
}

/* One observation of a histogram, in nanoseconds. */
static void
observe(enum histogram h, uint64_t ns)
{
	double secs = (double)ns / 1e9;
	size_t b = 0;

	if (mine == NULL)
		return;
	while (b < NBUCKETS && secs > bucket_le[b])
		b++;
	__atomic_add_fetch(&mine->bucket[h][b], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&mine->sum_us[h], ns / 1000, __ATOMIC_RELAXED);
}

/* The worker in slot starts counting (after the fork). */
void
metrics_worker_init(unsigned slot)
{
	if (R == NULL || slot >= METRICS_MAX_WORKERS)
		return;
	mine = &R->slot[slot];
	my_pid = getpid();
}

/* Copy a string into a fixed field, cut if it must be. */
static void
set_field(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src);
}

/* A session was accepted: count it, and take a row for /status. */
void
metrics_session_open(struct metrics_session *m, const char *id, const char *caddr,
    unsigned cport)
{
	m->row = -1;
	m->started = uv_hrtime();
	if (mine == NULL)
		return;
	add(C_CONNECTIONS, 1);
	__atomic_add_fetch(&mine->sessions, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < METRICS_MAX_SESSIONS; i++) {
		pid_t free_row = 0;
		struct srow *r = &R->row[i];

		if (!__atomic_compare_exchange_n(&r->pid, &free_row, my_pid, false,
		    __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			continue;
		set_field(r->id, sizeof(r->id), id);
		snprintf(r->client, sizeof(r->client), "[%s]:%u", caddr, cport);
		set_field(r->state, sizeof(r->state), "CONNECT");
		r->started = (int64_t)time(NULL);
		r->bytes_in = r->bytes_out = 0;
		__atomic_store_n(&r->ready, 1, __ATOMIC_RELEASE);
		m->row = i;
		return;
	}
}

/* The session changed state (the client too, as a PROXY header may set it). */
void
metrics_session_state(struct metrics_session *m, const char *state, const char *caddr,
    unsigned cport)
{
	struct srow *r;

	if (mine == NULL || m->row < 0)
		return;
	r = &R->row[m->row];
	set_field(r->state, sizeof(r->state), state);
	snprintf(r->client, sizeof(r->client), "[%s]:%u", caddr, cport);
}

/* The session is closing: its duration, and its row freed. */
void
metrics_session_close(struct metrics_session *m)
{
	if (mine == NULL || m->started == 0)
		return;
	__atomic_sub_fetch(&mine->sessions, 1, __ATOMIC_RELAXED);
	observe(H_SESSION, uv_hrtime() - m->started);
	if (m->row >= 0) {
		struct srow *r = &R->row[m->row];

		__atomic_store_n(&r->ready, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&r->pid, 0, __ATOMIC_RELEASE);
		m->row = -1;
	}
}

/* Bytes read from the client. */
void
metrics_bytes_in(struct metrics_session *m, size_t n)
{
	add(C_BYTES_IN, n);
	if (mine && m->row >= 0)
		__atomic_add_fetch(&R->row[m->row].bytes_in, n, __ATOMIC_RELAXED);
}

/* Bytes sent to the client. */
void
metrics_bytes_out(struct metrics_session *m, size_t n)
{
	add(C_BYTES_OUT, n);
	if (mine && m->row >= 0)
		__atomic_add_fetch(&R->row[m->row].bytes_out, n, __ATOMIC_RELAXED);
}

/* MAIL was accepted: the message's relay time starts. */
void
metrics_message_start(struct metrics_session *m)
{
	m->msg_started = uv_hrtime();
}

/* A message's outcome, as session_log_outcome() words it (sent, deferred, rejected, ...). */
void
metrics_message_outcome(struct metrics_session *m, const char *status)
{
	enum counter c;

	if (strcmp(status, "sent") == 0)
		c = C_MSG_ACCEPTED;
	else if (strcmp(status, "deferred") == 0)
		c = C_MSG_TEMPFAILED;
	else if (strcmp(status, "discarded") == 0)
		c = C_MSG_DISCARDED;
	else if (strcmp(status, "quarantined") == 0)
		c = C_MSG_QUARANTINED;
	else
		c = C_MSG_REJECTED;
	add(c, 1);
	if (m->msg_started != 0)
		observe(H_MESSAGE, uv_hrtime() - m->msg_started);
	m->msg_started = 0;
}

/* A reply from the backend, by class. */
void
metrics_backend_reply(int code)
{
	switch (code / 100) {
	case 2: add(C_BACKEND_2XX, 1); break;
	case 3: add(C_BACKEND_3XX, 1); break;
	case 4: add(C_BACKEND_4XX, 1); break;
	case 5: add(C_BACKEND_5XX, 1); break;
	default: break;
	}
}

/*
 * Take the names' mutex.  A holder that died (SIGKILL) left nothing to
 * repair: a name is published by nnames after it is written, so a half
 * written one past nnames is simply written again.
 */
static void
names_lock(void)
{
	shmutex_lock(&R->names_lock, "metrics: the filter names", NULL);
}

static void
names_unlock(void)
{
	shmutex_unlock(&R->names_lock);
}

/*
 * The index of a filter's name in the shared table, added if new; -1 when
 * the table is full.
 */
static int
filter_index(const char *name)
{
	unsigned n = __atomic_load_n(&R->nnames, __ATOMIC_ACQUIRE);
	int found = -1;

	for (unsigned i = 0; i < n; i++)
		if (strncmp(R->names[i], name, sizeof(R->names[i]) - 1) == 0)
			return (int)i;
	names_lock();
	n = R->nnames;
	for (unsigned i = 0; i < n && found < 0; i++)
		if (strncmp(R->names[i], name, sizeof(R->names[i]) - 1) == 0)
			found = (int)i;
	if (found < 0 && n < METRICS_MAX_FILTERS) {
		set_field(R->names[n], sizeof(R->names[n]), name);
		__atomic_store_n(&R->nnames, n + 1, __ATOMIC_RELEASE);
		found = (int)n;
	}
	names_unlock();
	return found;
}

/* A filter module's verdict. */
void
metrics_filter_verdict(const char *filter, int verdict)
{
	int i;

	if (mine == NULL || verdict < 0 || (size_t)verdict >= NVERDICTS ||
	    (i = filter_index(filter)) < 0)
		return;
	__atomic_add_fetch(&mine->verdict[i][verdict], 1, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------------- */
/* The master: slots and rendering */

/* A worker was started in slot. */
void
metrics_worker_started(unsigned slot, pid_t pid)
{
	if (R)
		__atomic_store_n(&R->slot[slot].pid, pid, __ATOMIC_RELEASE);
}

/* The worker in slot has exited: clear its live sessions and gauge. */
void
metrics_worker_gone(unsigned slot, bool unexpected)
{
	pid_t pid;

	if (R == NULL)
		return;
	pid = R->slot[slot].pid;
	for (int i = 0; pid != 0 && i < METRICS_MAX_SESSIONS; i++)
		if (__atomic_load_n(&R->row[i].pid, __ATOMIC_ACQUIRE) == pid) {
			R->row[i].ready = 0;
			__atomic_store_n(&R->row[i].pid, 0, __ATOMIC_RELEASE);
		}
	__atomic_store_n(&R->slot[slot].sessions, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&R->slot[slot].pid, 0, __ATOMIC_RELEASE);
	if (unexpected)
		__atomic_add_fetch(&R->restarts, 1, __ATOMIC_RELAXED);
}

/* A bounded text buffer for a reply. */
struct out {
	char	*buf;
	size_t	 len, cap;
};

static void outf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append to o; what does not fit is cut (the buffer is sized for the tables). */
static void
outf(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->len + 1 >= o->cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len = (size_t)n < o->cap - o->len ? o->len + (size_t)n : o->cap - 1;
}

/* The sum of one counter over every slot. */
static uint64_t
sum(enum counter c)
{
	uint64_t t = 0;

	for (int i = 0; i < METRICS_MAX_WORKERS; i++)
		t += __atomic_load_n(&R->slot[i].c[c], __ATOMIC_RELAXED);
	return t;
}

/* One histogram in the text format. */
static void
render_histogram(struct out *o, enum histogram h, const char *name, const char *help)
{
	uint64_t cum = 0, sum_us = 0;

	outf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (size_t b = 0; b <= NBUCKETS; b++) {
		for (int i = 0; i < METRICS_MAX_WORKERS; i++)
			cum += __atomic_load_n(&R->slot[i].bucket[h][b], __ATOMIC_RELAXED);
		if (b < NBUCKETS)
			outf(o, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, bucket_le[b], cum);
		else
			outf(o, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
	}
	for (int i = 0; i < METRICS_MAX_WORKERS; i++)
		sum_us += __atomic_load_n(&R->slot[i].sum_us[h], __ATOMIC_RELAXED);
	outf(o, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name, (double)sum_us / 1e6, name, cum);
}

/* Write a label value with \\, \" and \n escaped. */
static void
label_value(char *dst, size_t len, const char *src)
{
	size_t o = 0;

	for (; *src && o + 3 < len; src++) {
		if (*src == '\\' || *src == '"') {
			dst[o++] = '\\';
			dst[o++] = *src;
		} else if (*src == '\n') {
			dst[o++] = '\\';
			dst[o++] = 'n';
		} else {
			dst[o++] = *src;
		}
	}
	dst[o] = '\0';
}

/* Everything, in the Prometheus text format 0.0.4. */
size_t
metrics_render(char *buf, size_t len)
{
	static const struct { enum counter c; const char *outcome; } outcomes[] = {
		{ C_MSG_ACCEPTED, "accepted" }, { C_MSG_REJECTED, "rejected" },
		{ C_MSG_TEMPFAILED, "tempfailed" }, { C_MSG_DISCARDED, "discarded" },
		{ C_MSG_QUARANTINED, "quarantined" },
	};
	static const struct { enum counter c; const char *class; } classes[] = {
		{ C_BACKEND_2XX, "2xx" }, { C_BACKEND_3XX, "3xx" },
		{ C_BACKEND_4XX, "4xx" }, { C_BACKEND_5XX, "5xx" },
	};
	struct out o = { buf, 0, len };
	int64_t open = 0;
	unsigned up = 0, nnames;

	if (R == NULL || len == 0)
		return 0;
	buf[0] = '\0';
	for (int i = 0; i < METRICS_MAX_WORKERS; i++) {
		open += __atomic_load_n(&R->slot[i].sessions, __ATOMIC_RELAXED);
		up += __atomic_load_n(&R->slot[i].pid, __ATOMIC_RELAXED) != 0;
	}
	outf(&o, "# HELP smtpchain_connections_total Client connections accepted.\n"
	    "# TYPE smtpchain_connections_total counter\n"
	    "smtpchain_connections_total %" PRIu64 "\n", sum(C_CONNECTIONS));
	outf(&o, "# HELP smtpchain_connections_current Client connections open now.\n"
	    "# TYPE smtpchain_connections_current gauge\n"
	    "smtpchain_connections_current %" PRId64 "\n", open < 0 ? 0 : open);
	outf(&o, "# HELP smtpchain_messages_total Messages by outcome.\n"
	    "# TYPE smtpchain_messages_total counter\n");
	for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
		outf(&o, "smtpchain_messages_total{outcome=\"%s\"} %" PRIu64 "\n",
		    outcomes[i].outcome, sum(outcomes[i].c));
	outf(&o, "# HELP smtpchain_filter_verdicts_total Verdicts of each filter module.\n"
	    "# TYPE smtpchain_filter_verdicts_total counter\n");
	nnames = __atomic_load_n(&R->nnames, __ATOMIC_ACQUIRE);
	for (unsigned f = 0; f < nnames; f++) {
		char name[160];

		label_value(name, sizeof(name), R->names[f]);
		for (size_t v = 0; v < NVERDICTS; v++) {
			uint64_t t = 0;

			for (int i = 0; i < METRICS_MAX_WORKERS; i++)
				t += __atomic_load_n(&R->slot[i].verdict[f][v], __ATOMIC_RELAXED);
			outf(&o, "smtpchain_filter_verdicts_total{filter=\"%s\",verdict=\"%s\"} %"
			    PRIu64 "\n", name, verdict_names[v], t);
		}
	}
	outf(&o, "# HELP smtpchain_received_bytes_total Bytes read from clients.\n"
	    "# TYPE smtpchain_received_bytes_total counter\n"
	    "smtpchain_received_bytes_total %" PRIu64 "\n", sum(C_BYTES_IN));
	outf(&o, "# HELP smtpchain_sent_bytes_total Bytes sent to clients.\n"
	    "# TYPE smtpchain_sent_bytes_total counter\n"
	    "smtpchain_sent_bytes_total %" PRIu64 "\n", sum(C_BYTES_OUT));
	outf(&o, "# HELP smtpchain_backend_replies_total Backend replies by class.\n"
	    "# TYPE smtpchain_backend_replies_total counter\n");
	for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
		outf(&o, "smtpchain_backend_replies_total{class=\"%s\"} %" PRIu64 "\n",
		    classes[i].class, sum(classes[i].c));
	render_histogram(&o, H_SESSION, "smtpchain_session_duration_seconds",
	    "Time from accept to close of client sessions.");
	render_histogram(&o, H_MESSAGE, "smtpchain_message_relay_seconds",
	    "Time from MAIL to the message's final reply.");
	outf(&o, "# HELP smtpchain_workers Worker processes running.\n"
	    "# TYPE smtpchain_workers gauge\nsmtpchain_workers %u\n", up);
	outf(&o, "# HELP smtpchain_worker_restarts_total Workers that died unexpectedly "
	    "and were replaced.\n# TYPE smtpchain_worker_restarts_total counter\n"
	    "smtpchain_worker_restarts_total %" PRIu64 "\n",
	    __atomic_load_n(&R->restarts, __ATOMIC_RELAXED));
	return o.len;
}

/* The live sessions, one line each: id worker client state age bytes. */
size_t
metrics_render_status(char *buf, size_t len)
{
	struct out o = { buf, 0, len };
	int64_t now = (int64_t)time(NULL);
	unsigned n = 0;

	if (R == NULL || len == 0)
		return 0;
	buf[0] = '\0';
	outf(&o, "%-16s %-8s %-48s %-8s %6s %12s %12s\n", "ID", "WORKER", "CLIENT", "STATE",
	    "AGE", "BYTES_IN", "BYTES_OUT");
	for (int i = 0; i < METRICS_MAX_SESSIONS; i++) {
		const struct srow *r = &R->row[i];
		pid_t pid = __atomic_load_n(&r->pid, __ATOMIC_ACQUIRE);

		if (pid == 0 || !__atomic_load_n(&r->ready, __ATOMIC_ACQUIRE))
			continue;
		outf(&o, "%-16.15s %-8ld %-48.63s %-8.11s %6" PRId64 " %12" PRIu64 " %12" PRIu64 "\n",
		    r->id, (long)pid, r->client, r->state, now - r->started,
		    __atomic_load_n(&r->bytes_in, __ATOMIC_RELAXED),
		    __atomic_load_n(&r->bytes_out, __ATOMIC_RELAXED));
		n++;
	}
	outf(&o, "# %u sessions\n", n);
	return o.len;
}

/* ------------------------------------------------------------------------- */
/* The metrics server process: HTTP */

/* One handle of a connection closed; free it at the last. */
static void
http_closed(uv_handle_t *h)
{
	struct http_conn *c = h->data;

	if (--c->handles == 0) {
		free(c->resp);
		free(c);
	}
}

/* Close a connection (after the reply, on error or timeout). */
static void
http_close(struct http_conn *c)
{
	if (uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		http.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	http.nconns--;
	uv_close((uv_handle_t *)&c->tcp, http_closed);
	uv_close((uv_handle_t *)&c->timer, http_closed);
}

static void
http_written(uv_write_t *w, int status)
{
	http_close(w->data);
}

/* Send a whole reply, then close. */
static void
http_reply(struct http_conn *c, const char *status, const char *ctype, const char *body,
    size_t blen)
{
	char head[256];
	int hlen;
	uv_buf_t b;

	c->answered = true;
	uv_read_stop((uv_stream_t *)&c->tcp);
	hlen = snprintf(head, sizeof(head), "HTTP/1.0 %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n", status, ctype, blen);
	c->resp = xmalloc((size_t)hlen + blen);
	memcpy(c->resp, head, (size_t)hlen);
	memcpy(c->resp + hlen, body, blen);
	b = uv_buf_init(c->resp, (unsigned)((size_t)hlen + blen));
	c->wreq.data = c;
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, http_written) != 0)
		http_close(c);
}

/* An error reply with a one-line body. */
static void
http_error(struct http_conn *c, const char *status)
{
	char body[128];
	int n = snprintf(body, sizeof(body), "%s\n", status);

	http_reply(c, status, "text/plain; charset=utf-8", body, (size_t)n);
}

/* A complete request head: answer it. */
static void
http_request(struct http_conn *c)
{
	char method[16], target[256], version[16], *body;
	size_t n;

	c->req[c->len] = '\0';
	if (sscanf(c->req, "%15[A-Z] %255[^ \r\n] %15[^ \r\n]", method, target, version) != 3 ||
	    strncmp(version, "HTTP/1.", 7) != 0) {
		http_error(c, "400 Bad Request");
		return;
	}
	if (strcmp(method, "GET") != 0) {
		http_error(c, "405 Method Not Allowed");
		return;
	}
	if (strcmp(target, "/metrics") != 0 && strcmp(target, "/status") != 0) {
		http_error(c, "404 Not Found");
		return;
	}
	body = xmalloc(RENDER_MAX);
	if (strcmp(target, "/metrics") == 0) {
		n = metrics_render(body, RENDER_MAX);
		http_reply(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, n);
	} else {
		n = metrics_render_status(body, RENDER_MAX);
		http_reply(c, "200 OK", "text/plain; charset=utf-8", body, n);
	}
	free(body);
}

static void
http_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct http_conn *c = h->data;

	buf->base = c->req + c->len;
	buf->len = sizeof(c->req) - 1 - c->len;
}

/* Request bytes: wait for the end of the head (a blank line), bounded. */
static void
http_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct http_conn *c = stream->data;

	if (nread < 0) {
		http_close(c);
		return;
	}
	if (c->answered)
		return;
	c->len += (size_t)nread;
	c->req[c->len] = '\0';
	if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n"))
		http_request(c);
	else if (c->len >= sizeof(c->req) - 1)
		http_error(c, "431 Request Header Fields Too Large");
}

static void
http_timeout(uv_timer_t *t)
{
	http_close(t->data);
}

/* A connection's peer address as a key: IPv6 as is, IPv4 as ::ffff:a.b.c.d. */
static void
http_peer(struct http_conn *c)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	memset(c->peer, 0, sizeof(c->peer));
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
		return;
	if (ss.ss_family == AF_INET6) {
		memcpy(c->peer, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
	} else if (ss.ss_family == AF_INET) {
		c->peer[10] = c->peer[11] = 0xff;
		memcpy(c->peer + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
	}
}

/*
 * Room for c, just accepted: false when its address has
 * HTTP_MAX_PER_CLIENT others open; over HTTP_MAX_CONNS in all, the oldest
 * connection still waiting for its request is closed for it (false when
 * every other one is being answered).  A flood of idle connections then
 * holds at most a few slots per address for HTTP_TIMEOUT_MS, and never
 * keeps a scrape out.
 */
static bool
http_room(struct http_conn *c)
{
	struct http_conn *o, *oldest = NULL;
	unsigned same = 0;

	for (o = c->next; o != NULL; o = o->next) {	/* newest first */
		if (memcmp(o->peer, c->peer, sizeof(c->peer)) == 0)
			same++;
		if (!o->answered)
			oldest = o;
	}
	if (same >= HTTP_MAX_PER_CLIENT)
		return false;
	if (http.nconns > HTTP_MAX_CONNS) {
		if (oldest == NULL)
			return false;
		http_close(oldest);
	}
	return true;
}

/* A connection to the metrics listener. */
static void
http_accept(uv_stream_t *server, int status)
{
	struct http_conn *c;

	if (status != 0)
		return;
	c = xcalloc(1, sizeof(*c));
	uv_tcp_init(server->loop, &c->tcp);
	uv_timer_init(server->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->handles = 2;
	if ((c->next = http.conns) != NULL)
		c->next->prev = c;
	http.conns = c;
	http.nconns++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		http_close(c);
		return;
	}
	http_peer(c);
	if (!http_room(c)) {
		http_close(c);	/* idle connections must not use up the master's fds */
		return;
	}
	uv_timer_start(&c->timer, http_timeout, HTTP_TIMEOUT_MS, 0);
	uv_read_start((uv_stream_t *)&c->tcp, http_alloc, http_read);
}

/* A listener's handle closed: free it. */
static void
http_listener_closed(uv_handle_t *h)
{
	free(h);
}

/* Serve HTTP on fd, bound to addr by the master; 0, or -1 with the error in err. */
static int
http_start(uv_loop_t *loop, const struct config_addr *addr, int fd, char *err, size_t errlen)
{
	int rc;

	http.tcp = xcalloc(1, sizeof(*http.tcp));
	uv_tcp_init(loop, http.tcp);
	http.on = true;
	http.addr = *addr;
	if ((rc = uv_tcp_open(http.tcp, fd)) != 0 ||
	    (rc = uv_listen((uv_stream_t *)http.tcp, 64, http_accept)) != 0) {
		snprintf(err, errlen, "metrics.listen %s: %s", addr->text, uv_strerror(rc));
		uv_close((uv_handle_t *)http.tcp, http_listener_closed);
		http.tcp = NULL;
		http.on = false;
		return -1;
	}
	log_info("metrics on http://%s/metrics", http.addr.text);
	return 0;
}

/* Stop listening for HTTP (open connections finish). */
static void
http_stop(void)
{
	if (http.on && http.tcp && !uv_is_closing((uv_handle_t *)http.tcp))
		uv_close((uv_handle_t *)http.tcp, http_listener_closed);
	http.tcp = NULL;
	http.on = false;
}

/* SIGTERM from the master: stop listening, close the connections. */
static void
serve_stop(uv_signal_t *h, int signum)
{
	while (http.conns != NULL)
		http_close(http.conns);
	http_stop();
	uv_close((uv_handle_t *)h, NULL);
}

/*
 * The metrics server process, forked by the master, which bound fd to
 * cfg's metrics.listen: give up root (privsep_drop) and serve /metrics and
 * /status until SIGTERM, so that no HTTP request is ever parsed by root.
 * Signals arrive blocked (master.c's fork_child).  Returns the exit status.
 */
int
metrics_serve(const struct config *cfg, int fd)
{
	uv_loop_t *loop = uv_default_loop();
	uv_signal_t sigterm;
	sigset_t none;
	char err[1024];

	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	if (privsep_drop(cfg, "metrics", err, sizeof(err)) != 0) {
		log_error("metrics: %s", err);
		close(fd);
		return METRICS_EXIT_CONFIG;
	}
	if (http_start(loop, &cfg->metrics.listen, fd, err, sizeof(err)) != 0) {
		log_error("metrics: %s", err);	/* fd closed with the handle */
		uv_run(loop, UV_RUN_DEFAULT);
		uv_loop_close(loop);
		return METRICS_EXIT_CONFIG;
	}
	uv_signal_init(loop, &sigterm);
	uv_signal_start(&sigterm, serve_stop, SIGTERM);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	return 0;
}

/*
 * The master, before the first fork: map the shared region.  0, or -1
 * with the error in err.
 */
int
metrics_init(char *err, size_t errlen)
{
	void *p = mmap(NULL, sizeof(struct region), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct region *r = p;
	int rc;

	if (p == MAP_FAILED) {
		snprintf(err, errlen, "metrics: mmap %zu bytes: %s", sizeof(struct region),
		    strerror(errno));
		return -1;
	}
	if ((rc = shmutex_init(&r->names_lock)) != 0) {
		munmap(p, sizeof(struct region));
		snprintf(err, errlen, "metrics: a process-shared mutex: %s", strerror(rc));
		return -1;
	}
	R = r;		/* zero-filled */
	return 0;
}
