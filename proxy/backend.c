/*
 * backend.c - the backend side of a session: one SMTP client connection to
 * Postfix or Exim per client connection, a struct backend (backend.h) the
 * session owns and drives.  It knows nothing of the session: it reports up
 * through the events table the session gave it (greeting, reply, lost,
 * progress, name_known, closed), logs with the session's id, and never
 * decides what the client hears.
 *
 * Every command sent is recorded in a FIFO (struct pending) so that each
 * reply, which the backend sends in order, is matched to what it answers.
 * Replies to the proxy's own commands (the XCLIENT prelude, XFORWARD, QUIT)
 * stay here; the rest go up as events.reply.
 *
 * The prelude, when xclient is on: greeting 220 -> our EHLO -> XCLIENT with
 * the client's address, port and verified name -> the backend's new 220,
 * which the client sees as the greeting.  A backend that does not offer
 * XCLIENT (or refuses it) gets XFORWARD before each MAIL when it offers
 * that; otherwise the client sees the first greeting.
 *
 * With backend_tls (may or encrypt) the prelude starts with TLS: greeting
 * 220 -> our EHLO -> STARTTLS -> 220 -> the handshake (client role, SNI and
 * verification for backend_tls_name) -> our EHLO again, inside TLS -> then
 * XCLIENT as above, or the first greeting.  The client sees none of it.
 * With "may", a backend that does not offer STARTTLS (or refuses it) is
 * used in plaintext; with "encrypt" that, a failed handshake or an
 * untrusted certificate ends the backend with BACKEND_TLS_FAILED.  A handshake
 * that fails ends it in either mode: the connection is unusable then.  The
 * prelude's commands all answer to BS_PRELUDE_EHLO; pending.verb tells
 * EHLO and STARTTLS apart.
 *
 * Several backends (backend = [ ... ]): a session tries them in order, from
 * the first (backend_balance = "failover") or from the next in turn
 * ("round-robin").  Until one greets with 2xx, a failure moves on to the
 * next: the connect fails or times out, the connection drops, no greeting
 * comes within timeout.connect, or the greeting is 4xx/5xx (that backend
 * gets QUIT).  A backend that failed
 * is marked down in this process for backend_hold_down seconds and skipped
 * by new sessions, unless every untried one is down.  When none is left the
 * client gets 421, or the last error greeting as it is (the session then
 * goes on with that backend, under timeout.backend like any other).  Once a
 * backend has greeted, a failure ends the session as with one backend.
 *
 * The connection is a struct conn (conn.c), as the client's is: once TLS
 * is on, conn_write() puts the ciphertext straight into bconn.out (so
 * outq_pending(&b->conn.out), which the session checks against
 * OUT_HIGH_WATER, counts what really waits for the socket); what is read
 * is decrypted into bconn.in until OpenSSL holds no more plaintext,
 * replies being taken out as they complete.
 */

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netdb.h>
#include <arpa/inet.h>

#include "backend.h"
#include "log.h"
#include "metrics.h"
#include "smtp.h"

/*
 * The client-name cache: the verified name (or "none") of recent client
 * addresses, per process, so that a client that comes back within
 * NAME_CACHE_TTL seconds - a busy sender opens many sessions - costs no
 * reverse and forward lookup on the thread pool (two resolver calls and
 * four thread hand-offs per session: a fifth of the proxy's CPU in the
 * bench's profile, bench/).  Direct-mapped by address, a fixed
 * NAME_CACHE_SIZE entries (bounded memory); only definite answers are
 * kept, never a temporary resolver failure.
 */
#define NAME_CACHE_SIZE	256
#define NAME_CACHE_TTL	60		/* seconds */

struct name_cache_entry {
	uint64_t	expires;	/* uv_now() ms; 0 = empty slot */
	int		family;
	unsigned char	addr[16];
	char		name[sizeof(((struct backend *)0)->cname)];	/* "" = no verified name */
};
static struct name_cache_entry name_cache[NAME_CACHE_SIZE];

/* The client's address bytes and their length (0 for a family we do not cache). */
static size_t
peer_addr_bytes(const struct backend *b, const unsigned char **p)
{
	*p = NULL;
	if (b->peer.ss_family == AF_INET) {
		*p = (const unsigned char *)&((const struct sockaddr_in *)&b->peer)->sin_addr;
		return 4;
	}
	if (b->peer.ss_family == AF_INET6) {
		*p = (const unsigned char *)&((const struct sockaddr_in6 *)&b->peer)->sin6_addr;
		return 16;
	}
	return 0;
}

/* The cache slot for the client's address (FNV-1a of its bytes), or NULL. */
static struct name_cache_entry *
name_cache_slot(const struct backend *b)
{
	const unsigned char *p;
	size_t n = peer_addr_bytes(b, &p);
	uint32_t h = 2166136261u;

	if (n == 0)
		return NULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return &name_cache[h % NAME_CACHE_SIZE];
}

/* A fresh cached answer for the client: copied into b->cname, true; else false. */
static bool
name_cache_get(struct backend *b)
{
	struct name_cache_entry *e = name_cache_slot(b);
	const unsigned char *p;
	size_t n = peer_addr_bytes(b, &p);

	if (e == NULL || p == NULL || e->expires == 0 || e->expires <= uv_now(b->loop) ||
	    e->family != b->peer.ss_family || memcmp(e->addr, p, n) != 0)
		return false;
	memcpy(b->cname, e->name, sizeof(b->cname));
	return true;
}

/* Remember the definite answer now in b->cname for the client's address. */
static void
name_cache_put(struct backend *b)
{
	struct name_cache_entry *e = name_cache_slot(b);
	const unsigned char *p;
	size_t n = peer_addr_bytes(b, &p);

	if (e == NULL || p == NULL)
		return;
	e->family = b->peer.ss_family;
	memset(e->addr, 0, sizeof(e->addr));
	memcpy(e->addr, p, n);
	memcpy(e->name, b->cname, sizeof(e->name));
	e->expires = uv_now(b->loop) + (uint64_t)NAME_CACHE_TTL * 1000;
}

/* XCLIENT attributes, as the backend lists them after the keyword. */
enum {
	XA_ADDR = 1 << 0, XA_PORT = 1 << 1, XA_NAME = 1 << 2, XA_HELO = 1 << 3,
	XA_PROTO = 1 << 4,
};

static void	backend_connected(uv_connect_t *req, int status);
static void	backend_read(void *owner, ssize_t nread);
static void	backend_written(struct outq *q, int status);
static void	backend_timeout(uv_timer_t *t);
static void	backend_closed_cb(uv_handle_t *h);
static void	name_looked_up(uv_getnameinfo_t *req, int status, const char *host, const char *service);
static void	name_confirmed(uv_getaddrinfo_t *req, int status, struct addrinfo *res);
static void	send_xclient(struct backend *b);
static void	backend_dial(struct backend *b);
static bool	backend_failover(struct backend *b, const char *why);

/*
 * What the last EHLO of the proxy's own prelude showed of a backend, per
 * process, for BACKEND_MEMO_TTL seconds: the prelude's EHLO is then skipped.
 * A backend known to offer XCLIENT gets it right after its greeting
 * (XCLIENT_README: "at any time, except in the middle of a mail
 * transaction"); one known not to has its greeting relayed at once, and
 * XFORWARD goes by the capabilities remembered.  That saves a round trip
 * per session to each side.  Only for plaintext backends (backend_tls asks
 * for a fresh EHLO anyway); a backend that refuses XCLIENT before an EHLO
 * gets the EHLO first from then on.  A change of the backend's XCLIENT
 * offer is seen within the TTL.
 */
#define BACKEND_MEMO_TTL	60
struct backend_memo {
	uint64_t		 until;		/* uv_now() ms; 0 = nothing known */
	struct ehlo_caps	 caps;		/* parsed from its EHLO reply */
	unsigned		 xclient_attrs;
	bool			 ehlo_first;	/* refused XCLIENT without EHLO */
};

/*
 * Per process: when each backend of the config may be tried again, and
 * where round robin goes next.  Reset when sessions of another config (a
 * reload) come along.
 */
static struct {
	const struct config	*cfg;
	uint64_t		 down_until[CONFIG_MAX_BACKENDS];	/* uv_now() ms; 0 = up */
	unsigned		 next;		/* round robin: the next first choice */
	struct backend_memo	 memo[CONFIG_MAX_BACKENDS];
} pool;

/* The backend in use, as configured ("127.0.0.1:2525"), for logs. */
static const char *
backend_name(const struct backend *b)
{
	return b->cfg->backends[b->idx].text;
}

/* (Re)start the backend timer while the backend owes us a reply or a read:
 * timeout.connect until the session has its backend (bchosen), timeout.backend after. */
static void
backend_timer_arm(struct backend *b)
{
	if (!b->up || b->conn.closed)
		return;
	if (b->pcount > 0 || outq_pending(&b->conn.out) > 0 || (b->conn.tls && !b->tls_up))
		uv_timer_start(&b->conn.timer, backend_timeout, (uint64_t)(b->chosen ?
		    b->cfg->timeout.backend : b->cfg->timeout.connect) * 1000, 0);
	else
		uv_timer_stop(&b->conn.timer);
}

/*
 * Which backend to try next: the first untried one, counting from the
 * balance's starting point, that is not held down; else the first untried
 * one even if held down (better than none).  -1 when all were tried.
 */
static int
backend_pick(struct backend *b)
{
	const struct config *cfg = b->cfg;
	uint64_t now = uv_now(b->loop);
	unsigned start = 0;
	int fallback = -1;

	if (pool.cfg != cfg) {
		memset(&pool, 0, sizeof(pool));
		pool.cfg = cfg;
	}
	if (cfg->backend_balance == BALANCE_ROUND_ROBIN) {
		if (b->tried == 0)
			b->idx = pool.next++ % cfg->nbackends;
		start = b->idx;
	}
	for (unsigned k = 0; k < cfg->nbackends; k++) {
		unsigned i = (start + k) % cfg->nbackends;

		if (b->tried & (1u << i))
			continue;
		if (pool.down_until[i] <= now)
			return (int)i;
		if (fallback < 0)
			fallback = (int)i;
	}
	return fallback;
}

/* A log line with the session's id. */
#define blog(b, lvl, ...)	log_id((b)->id, (lvl), __VA_ARGS__)

/* One of the backend's handles or requests is done: the owner hears of the last. */
static void
backend_unref(struct backend *b)
{
	if (b->handles == 0)
		log_panic("%s: backend handle count underflow", b->id);
	if (--b->handles == 0)
		b->ev->closed(b->owner);	/* may free b */
}

/* Set up, not connected: nothing to release until backend_connect. */
void
backend_init(struct backend *b, const struct config *cfg, uv_loop_t *loop, const char *id,
    const struct backend_events *ev, void *owner)
{
	memset(b, 0, sizeof(*b));
	b->cfg = cfg;
	b->loop = loop;
	b->id = id;
	b->ev = ev;
	b->owner = owner;
}

/* Open the backend connection and start the reverse lookup for XCLIENT. */
void
backend_connect(struct backend *b, const struct sockaddr_storage *peer, const char *caddr,
    unsigned cport)
{
	const struct config *cfg = b->cfg;

	memcpy(&b->peer, peer, sizeof(b->peer));
	snprintf(b->caddr, sizeof(b->caddr), "%s", caddr);
	b->cport = cport;
	conn_init(&b->conn, b->loop, b);
	conn_open(&b->conn, BACKEND_INBUF, backend_read, backend_written);
	b->handles += 2;
	b->init = true;

	b->cname_done = true;
	if ((cfg->xclient || cfg->xforward) && name_cache_get(b)) {
		/* Known from a recent session: no lookup. */
	} else if (cfg->xclient || cfg->xforward) {
		b->nireq.data = b;
		/*
		 * NI_NUMERICSERV: only the host name is wanted; without it
		 * glibc also looks the client's port up in /etc/services,
		 * reading the whole file for every session (a tenth of the
		 * proxy's CPU in the bench's profile).
		 */
		if (uv_getnameinfo(b->loop, &b->nireq, name_looked_up,
		    (const struct sockaddr *)&b->peer, NI_NAMEREQD | NI_NUMERICSERV) == 0) {
			b->handles++;
			b->cname_done = false;
		}
	}

	backend_dial(b);
}

/* Connect b->backend (initialised, not connected) to the next backend to try. */
static void
backend_dial(struct backend *b)
{
	const struct config *cfg = b->cfg;
	int i = backend_pick(b);
	int rc;

	if (i < 0)
		log_panic("%s: backend_dial: no backend left", b->id);
	b->idx = (unsigned)i;
	b->tried |= 1u << i;
	b->connect_req.data = b;
	rc = uv_tcp_connect(&b->connect_req, &b->conn.tcp,
	    (const struct sockaddr *)&cfg->backends[i].ss, backend_connected);
	if (rc != 0) {
		char why[128];

		snprintf(why, sizeof(why), "connect: %s", uv_strerror(rc));
		if (backend_failover(b, why))
			return;
		b->ev->lost(b->owner, BACKEND_UNREACHABLE, NULL, 0);
		return;
	}
	/*
	 * Read from now on, not from backend_connected: libuv watches the socket
	 * for POLLIN and POLLOUT together while it connects and keeps it
	 * registered in epoll after, where a read started later costs an
	 * epoll_ctl ADD that fails with EEXIST and a MOD (one system call a
	 * session saved).  libuv handles the connect before any read, so
	 * backend_read never runs before backend_connected.
	 */
	conn_read_start(&b->conn);
	b->pending[0].step = BS_GREETING;
	b->phead = 0;
	b->pcount = 1;
	uv_timer_start(&b->conn.timer, backend_timeout, (uint64_t)cfg->timeout.connect * 1000, 0);
}

/* The failed backend's handle is closed: connect the same handle to the next one. */
static void
backend_retry_closed(uv_handle_t *h)
{
	struct backend *b = h->data;

	b->retry = false;
	if (b->released) {
		backend_unref(b);	/* the owner ended meanwhile: the handle's last close */
		return;
	}
	conn_init(&b->conn, b->loop, b);
	backend_dial(b);
}

/*
 * The backend in use failed before it greeted with 2xx: mark it down, log
 * why, and when another one is left, close this connection (QUIT first if
 * it is up: it may have greeted with 4xx/5xx) and go on with the next.
 * False when nothing is left to try (the caller then fails the session, the
 * backend still marked down).
 */
static bool
backend_failover(struct backend *b, const char *why)
{
	const struct config *cfg = b->cfg;
	int next;

	if (pool.cfg == cfg && cfg->backend_hold_down > 0)
		pool.down_until[b->idx] = uv_now(b->loop) + (uint64_t)cfg->backend_hold_down * 1000;
	if (b->chosen || b->released || (next = backend_pick(b)) < 0) {
		if (cfg->nbackends > 1)
			blog(b, LOG_LVL_WARNING, "backend %s: %s; no backend left to try",
			    backend_name(b), why);
		else
			blog(b, LOG_LVL_WARNING, "backend %s: %s", backend_name(b), why);
		return false;
	}
	blog(b, LOG_LVL_WARNING, "backend %s: %s; trying %s", backend_name(b), why,
	    cfg->backends[next].text);
	if (b->up) {
		uv_buf_t quit = uv_buf_init((char *)"QUIT\r\n", 6);

		(void)uv_try_write((uv_stream_t *)&b->conn.tcp, &quit, 1);	/* best effort */
	}
	b->up = false;
	b->retry = true;
	b->pcount = 0;
	iobuf_consume(&b->conn.in, b->conn.in.len);
	uv_timer_stop(&b->conn.timer);
	conn_close(&b->conn, backend_retry_closed);
	return true;
}

/* The TCP connect finished. */
static void
backend_connected(uv_connect_t *req, int status)
{
	struct backend *b = req->data;

	if (b->released || b->conn.closed)
		return;
	if (status != 0) {
		char why[128];

		snprintf(why, sizeof(why), "connect: %s", uv_strerror(status));
		if (backend_failover(b, why))
			return;
		b->pcount = 0;
		b->ev->lost(b->owner, BACKEND_UNREACHABLE, NULL, 0);
		return;
	}
	b->up = true;
	uv_tcp_nodelay(&b->conn.tcp, 1);
	backend_timer_arm(b);
}

/* Bytes to the backend: as they are, or through TLS once our STARTTLS got 220. */
static void
backend_out(struct backend *b, const char *p, size_t n)
{
	(void)conn_write(&b->conn, p, n);	/* a TLS failure is seen by backend_flush */
}

/* Queue a command; a reply is expected for it (step says what it answers). */
void
backend_send(struct backend *b, const char *p, size_t n, enum backend_step step, int verb)
{
	struct pending *pe;

	if (!b->up)
		return;
	if (b->pcount == PENDING_MAX)
		log_panic("%s: %d commands in flight", b->id, PENDING_MAX);
	pe = &b->pending[(b->phead + b->pcount) % PENDING_MAX];
	pe->step = (uint8_t)step;
	pe->verb = (uint8_t)verb;
	b->pcount++;
	if (n > 0) {
		b->ev->transcript(b->owner, "p>b", p, n);
		backend_out(b, p, n);
	}
}

/* Queue a command of our own, formatted. */
void
backend_sendf(struct backend *b, enum backend_step step, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		log_panic("%s: command too long", b->id);
	backend_send(b, line, (size_t)n, step, SMTP_UNKNOWN);
}

/* Message bytes: no reply is expected for them. */
void
backend_data(struct backend *b, const char *p, size_t n)
{
	if (b->up && n > 0)
		backend_out(b, p, n);
}

/* Start writing what has gathered for the backend. */
void
backend_flush(struct backend *b)
{
	int rc;

	if (!b->up)
		return;
	if (b->conn.tls && tls_conn_failed(b->conn.tls)) {
		blog(b, LOG_LVL_WARNING, "backend %s: TLS: %s", backend_name(b),
		    tls_conn_error(b->conn.tls));
		backend_abort(b);
		b->ev->lost(b->owner, BACKEND_WRITE_FAILED, NULL, 0);
		return;
	}
	if ((rc = conn_flush(&b->conn)) != 0) {
		blog(b, LOG_LVL_WARNING, "backend write: %s", uv_strerror(rc));
		backend_abort(b);
		b->ev->lost(b->owner, BACKEND_WRITE_FAILED, NULL, 0);
		return;
	}
	backend_timer_arm(b);
}

/*
 * Drop the backend connection now, without QUIT: used inside DATA, where
 * closing before the end of data is how a message is kept from delivery.
 */
void
backend_abort(struct backend *b)
{
	if (!b->init || b->conn.closed)
		return;
	b->up = false;
	b->pcount = 0;
	b->conn.out.fill.len = b->conn.out.fill.off = 0;	/* never to be sent */
	uv_timer_stop(&b->conn.timer);
	conn_close(&b->conn, backend_closed_cb);
}

/* Say QUIT between transactions; the connection closes once it is written. */
void
backend_quit(struct backend *b)
{
	b->ending = true;
	if (!b->up || b->conn.closed || b->quitting)
		return;
	b->quitting = true;
	backend_send(b, "QUIT\r\n", 6, BS_QUIT, SMTP_QUIT);
	if (b->conn.tls && b->tls_up)
		conn_tls_close(&b->conn);	/* close_notify after QUIT */
	backend_flush(b);
}

static void
backend_shut(uv_shutdown_t *req, int status)
{
	struct backend *b = req->data;

	free(req);
	if (!b->conn.closed)
		conn_close(&b->conn, backend_closed_cb);
}

/* Session end: close the backend's handles (after a pending QUIT is written). */
void
backend_release(struct backend *b)
{
	if (!b->init || b->released)
		return;
	b->released = true;
	if (!b->conn.closed && b->quitting) {
		uv_shutdown_t *req = xmalloc(sizeof(*req));

		req->data = b;
		b->up = false;
		if (uv_shutdown(req, (uv_stream_t *)&b->conn.tcp, backend_shut) == 0)
			goto timer;
		free(req);
	}
	backend_abort(b);
timer:
	uv_close((uv_handle_t *)&b->conn.timer, backend_closed_cb);
	tls_conn_free(b->conn.tls);		/* what it had to send is in conn.out already */
	b->conn.tls = NULL;
}

/* The backend's memory, once its handles are closed (or were never opened). */
void
backend_free(struct backend *b)
{
	conn_free(&b->conn);
	free(b->greeting);
	b->greeting = NULL;
}

static void
backend_closed_cb(uv_handle_t *h)
{
	backend_unref(h->data);
}

/* The connection to the backend is gone or unusable: close it, tell the owner (events.lost). */
static void
backend_lost(struct backend *b, const char *why)
{
	if (!b->chosen && !b->ending && backend_failover(b, why))
		return;		/* before its greeting: the next one is tried */
	if (b->chosen || b->ending)
		blog(b, LOG_LVL_WARNING, "backend %s: %s", backend_name(b), why);
	backend_abort(b);
	b->ev->lost(b->owner, BACKEND_LOST, NULL, 0);
}

/* backend_tls could not be had: log why, close, tell the owner. */
static void
backend_tls_fail(struct backend *b, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	blog(b, LOG_LVL_WARNING, "backend %s: TLS failed: %s", backend_name(b), why);
	backend_abort(b);
	b->ev->lost(b->owner, BACKEND_TLS_FAILED, NULL, 0);
}

/* The client sees the backend's greeting (the first one, or XCLIENT's). */
static void
relay_greeting(struct backend *b, const char *r, size_t n)
{
	b->ev->greeting(b->owner, r, n);
	free(b->greeting);
	b->greeting = NULL;
}

/* Which XCLIENT attributes the backend's EHLO reply lists. */
static unsigned
xclient_attributes(const char *r, size_t n)
{
	static const struct { const char *name; unsigned bit; } attrs[] = {
		{ "ADDR", XA_ADDR }, { "PORT", XA_PORT }, { "NAME", XA_NAME },
		{ "HELO", XA_HELO }, { "PROTO", XA_PROTO },
	};
	const char *end = r + n, *p = r;
	unsigned bits = 0;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t len = eol ? (size_t)(eol - p) : (size_t)(end - p);

		if (len > 12 && strncasecmp(p + 4, "XCLIENT ", 8) == 0) {
			const char *q = p + 12, *lend = p + len;

			while (q < lend) {
				const char *sp = memchr(q, ' ', (size_t)(lend - q));
				size_t wl = (sp ? sp : lend) - q;

				while (wl > 0 && (q[wl - 1] == '\r'))
					wl--;
				for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++)
					if (wl == strlen(attrs[i].name) &&
					    strncasecmp(q, attrs[i].name, wl) == 0)
						bits |= attrs[i].bit;
				q = sp ? sp + 1 : lend;
			}
		}
		p = eol ? eol + 1 : end;
	}
	return bits;
}

/* The client's address as XCLIENT and XFORWARD want it. */
static void
xclient_addr(const struct backend *b, char *out, size_t outlen)
{
	if (strchr(b->caddr, ':'))
		snprintf(out, outlen, "IPV6:%s", b->caddr);
	else
		snprintf(out, outlen, "%s", b->caddr);
}

/* The client's verified name, xtext-encoded, or [UNAVAILABLE]. */
static void
xclient_name(const struct backend *b, char *out, size_t outlen)
{
	if (b->cname[0] == '\0' || smtp_xtext_encode(b->cname, strlen(b->cname), out, outlen) < 0)
		snprintf(out, outlen, "[UNAVAILABLE]");
}

/* Tell the backend who the real client is (Postfix XCLIENT_README). */
static void
send_xclient(struct backend *b)
{
	char addr[INET6_ADDRSTRLEN + 8], name[800], line[1024];
	int n;

	b->xclient_wait = false;
	xclient_addr(b, addr, sizeof(addr));
	xclient_name(b, name, sizeof(name));
	n = snprintf(line, sizeof(line), "XCLIENT");
	if (b->xclient_attrs & XA_ADDR)
		n += snprintf(line + n, sizeof(line) - n, " ADDR=%s", addr);
	if (b->xclient_attrs & XA_PORT)
		n += snprintf(line + n, sizeof(line) - n, " PORT=%u", b->cport);
	if (b->xclient_attrs & XA_NAME)
		n += snprintf(line + n, sizeof(line) - n, " NAME=%s", name);
	backend_sendf(b, BS_XCLIENT, "%s\r\n", line);
	backend_flush(b);
}

/* XFORWARD before MAIL, for a backend that offers it but not XCLIENT. */
void
backend_xforward(struct backend *b, const char *chelo, bool esmtp)
{
	char addr[INET6_ADDRSTRLEN + 8], name[800], helo[800];

	if (b->xclient_done || !b->cfg->xforward || !b->caps.xforward || !b->up)
		return;
	xclient_addr(b, addr, sizeof(addr));
	xclient_name(b, name, sizeof(name));
	if (chelo[0] == '\0' || smtp_xtext_encode(chelo, strlen(chelo), helo, sizeof(helo)) < 0)
		snprintf(helo, sizeof(helo), "[UNAVAILABLE]");
	backend_sendf(b, BS_XFORWARD, "XFORWARD NAME=%s ADDR=%s PORT=%u\r\n", name, addr, b->cport);
	backend_sendf(b, BS_XFORWARD, "XFORWARD PROTO=%s HELO=%s SOURCE=REMOTE\r\n",
	    esmtp ? "ESMTP" : "SMTP", helo);
}

/* A command of the prelude (EHLO, STARTTLS): its reply comes back as BS_PRELUDE_EHLO. */
static void
prelude_send(struct backend *b, int verb, const char *line)
{
	backend_send(b, line, strlen(line), BS_PRELUDE_EHLO, verb);
}

/* Our EHLO before the prelude (first, or again inside TLS). */
static void
prelude_ehlo(struct backend *b)
{
	char line[300];

	snprintf(line, sizeof(line), "EHLO %s\r\n", b->cfg->hostname);
	prelude_send(b, SMTP_EHLO, line);
}

/* The prelude after EHLO (and TLS): XCLIENT when it applies, else the first greeting. */
static void
prelude_done(struct backend *b)
{
	if (b->cfg->xclient && b->caps.xclient && (b->xclient_attrs & XA_ADDR)) {
		if (b->cname_done)
			send_xclient(b);
		else
			b->xclient_wait = true;
		return;
	}
	relay_greeting(b, b->greeting, strlen(b->greeting));
}

/*
 * The greeting of a backend whose EHLO is remembered (struct backend_memo):
 * XCLIENT at once, or the greeting relayed at once.  False when nothing
 * fresh is known, or the backend wants EHLO before XCLIENT: the prelude
 * runs as usual.
 */
static bool
prelude_remembered(struct backend *b, const char *r, size_t n)
{
	const struct backend_memo *m;

	if (b->cfg->backend_tls != BACKEND_TLS_NONE || pool.cfg != b->cfg)
		return false;
	m = &pool.memo[b->idx];
	if (m->until <= uv_now(b->loop))
		return false;
	b->caps = m->caps;
	b->xclient_attrs = m->xclient_attrs;
	if (!(b->caps.xclient && (b->xclient_attrs & XA_ADDR))) {
		relay_greeting(b, r, n);
		return true;
	}
	if (m->ehlo_first)
		return false;
	b->greeting = xstrndup(r, n);
	b->xclient_unprobed = true;
	prelude_done(b);
	return true;
}

/* The backend's answer to our EHLO: STARTTLS next when backend_tls wants it. */
static void
prelude_ehlo_reply(struct backend *b, const char *r, size_t n, int code)
{
	enum backend_tls_mode mode = b->cfg->backend_tls;

	if (code != 250) {
		blog(b, LOG_LVL_WARNING, "backend refused our EHLO: %.*s",
		    (int)(n > 2 ? n - 2 : n), r);
		if (mode == BACKEND_TLS_ENCRYPT && !b->tls_up) {
			backend_tls_fail(b, "EHLO refused, so no STARTTLS (backend_tls = encrypt)");
			return;
		}
		relay_greeting(b, b->greeting, strlen(b->greeting));
		return;
	}
	ehlo_caps_parse(r, n, &b->caps);
	b->xclient_attrs = xclient_attributes(r, n);
	if (mode == BACKEND_TLS_NONE && pool.cfg == b->cfg) {
		struct backend_memo *m = &pool.memo[b->idx];

		m->caps = b->caps;
		m->xclient_attrs = b->xclient_attrs;
		m->until = uv_now(b->loop) + BACKEND_MEMO_TTL * 1000;
	}
	if (mode != BACKEND_TLS_NONE && b->conn.tls == NULL) {
		if (b->caps.starttls) {
			prelude_send(b, SMTP_STARTTLS, "STARTTLS\r\n");
			return;
		}
		if (mode == BACKEND_TLS_ENCRYPT) {
			backend_tls_fail(b, "STARTTLS not offered (backend_tls = encrypt)");
			return;
		}
		blog(b, LOG_LVL_INFO, "backend %s offers no STARTTLS: going on in "
		    "plaintext (backend_tls = may)", backend_name(b));
	}
	prelude_done(b);
}

/* The backend's answer to our STARTTLS: 220 starts the handshake. */
static void
prelude_starttls_reply(struct backend *b, const char *r, size_t n, int code)
{
	if (code != 220) {
		if (b->cfg->backend_tls == BACKEND_TLS_ENCRYPT) {
			backend_tls_fail(b, "STARTTLS refused: %.*s", (int)(n > 2 ? n - 2 : n), r);
			return;
		}
		blog(b, LOG_LVL_WARNING, "backend refused STARTTLS, going on in plaintext "
		    "(backend_tls = may): %.*s", (int)(n > 2 ? n - 2 : n), r);
		prelude_done(b);
		return;
	}
	/* r is at the head of bconn.in: anything after it was sent before TLS, in the clear. */
	if (b->conn.in.len > n) {
		backend_tls_fail(b, "%zu bytes after the 220 to STARTTLS", b->conn.in.len - n);
		return;
	}
	conn_starttls(&b->conn, tls_conn_connect(b->cfg->backend_tls_name,
	    b->cfg->backend_tls == BACKEND_TLS_ENCRYPT));	/* the ClientHello queued */
	if (tls_conn_failed(b->conn.tls))
		backend_tls_fail(b, "%s", tls_conn_error(b->conn.tls));
}

/* The handshake is done: log what was agreed, then EHLO again (RFC 3207 4.2). */
static void
backend_tls_up(struct backend *b)
{
	const char *bad = tls_conn_verify_error(b->conn.tls);
	const char *name = b->cfg->backend_tls_name;

	b->tls_up = true;
	if (b->cfg->backend_tls == BACKEND_TLS_ENCRYPT && bad != NULL) {
		backend_tls_fail(b, "certificate not trusted: %s", bad);	/* OpenSSL checked already */
		return;
	}
	if (bad != NULL)
		blog(b, LOG_LVL_INFO, "backend TLS established: %s with cipher %s, "
		    "certificate not verified (%s)", tls_conn_version(b->conn.tls),
		    tls_conn_cipher(b->conn.tls), bad);
	else
		blog(b, LOG_LVL_INFO, "backend TLS established: %s with cipher %s, "
		    "certificate verified%s%s", tls_conn_version(b->conn.tls), tls_conn_cipher(b->conn.tls),
		    name ? " for " : "", name ? name : "");
	prelude_ehlo(b);
}

/* A reply to one of the proxy's own commands. */
static void
prelude_reply(struct backend *b, struct pending p, const char *r, size_t n, int code)
{
	switch (p.step) {
	case BS_GREETING:
		if (code / 100 != 2) {
			char why[300];

			snprintf(why, sizeof(why), "greeting %.*s", (int)(n > 2 ? n - 2 : n), r);
			for (char *q = why; *q; q++)
				if (*q == '\r' || *q == '\n')
					*q = ' ';
			if (backend_failover(b, why))
				return;
			b->chosen = true;	/* the last one left: its greeting is relayed */
		} else {
			b->chosen = true;
			if (b->cfg->nbackends > 1)
				blog(b, LOG_LVL_INFO, "using backend %s", backend_name(b));
		}
		if (code == 220 && b->cfg->xclient && prelude_remembered(b, r, n))
			return;
		if (code == 220 && (b->cfg->xclient || b->cfg->backend_tls != BACKEND_TLS_NONE)) {
			b->greeting = xstrndup(r, n);
			prelude_ehlo(b);
			return;
		}
		if (b->cfg->backend_tls == BACKEND_TLS_ENCRYPT) {
			backend_tls_fail(b, "greeting is not 220, so no STARTTLS: %.*s",
			    (int)(n > 2 ? n - 2 : n), r);
			return;
		}
		relay_greeting(b, r, n);
		return;
	case BS_PRELUDE_EHLO:
		if (p.verb == SMTP_STARTTLS)
			prelude_starttls_reply(b, r, n, code);
		else
			prelude_ehlo_reply(b, r, n, code);
		return;
	case BS_XCLIENT:
		if (code == 220) {
			b->xclient_done = true;
			relay_greeting(b, r, n);
			return;
		}
		if (b->xclient_unprobed && code / 100 != 4) {
			/* It wants EHLO first: ours, then XCLIENT again. */
			blog(b, LOG_LVL_INFO, "backend %s refused XCLIENT before EHLO, "
			    "sending EHLO first: %.*s", backend_name(b), (int)(n > 2 ? n - 2 : n), r);
			b->xclient_unprobed = false;
			if (pool.cfg == b->cfg)
				pool.memo[b->idx].ehlo_first = true;
			prelude_ehlo(b);
			return;
		}
		blog(b, LOG_LVL_WARNING, "backend refused XCLIENT: %.*s",
		    (int)(n > 2 ? n - 2 : n), r);
		relay_greeting(b, b->greeting, strlen(b->greeting));
		return;
	case BS_XFORWARD:
		if (code / 100 != 2)
			blog(b, LOG_LVL_WARNING, "backend refused XFORWARD: %.*s",
			    (int)(n > 2 ? n - 2 : n), r);
		return;
	case BS_QUIT:
		return;
	case BS_RESET:
		if (code / 100 != 2)
			blog(b, LOG_LVL_WARNING, "backend refused RSET: %.*s",
			    (int)(n > 2 ? n - 2 : n), r);
		return;
	default:
		b->ev->reply(b->owner, p, r, n, code);
	}
}

/* Split bconn.in into replies and match each to its command. */
static void
backend_replies(struct backend *b)
{
	size_t rlen;
	int code, rc;

	while (b->up && !b->released && b->conn.in.len > 0) {
		const char *r = iobuf_head(&b->conn.in);
		struct pending p;

		rc = smtp_reply_scan(r, b->conn.in.len, &rlen, &code);
		if (rc == 0) {
			if (b->conn.in.len == BACKEND_INBUF)
				backend_lost(b, "reply too long");
			break;
		}
		if (rc < 0) {
			backend_lost(b, "malformed reply");
			break;
		}
		b->ev->transcript(b->owner, "b>p", r, rlen);
		if (smtp_reply_unify(b->conn.in.data + b->conn.in.off, rlen, code) > 0) {
			/*
			 * Lines with different codes: the last one's counts, as
			 * for Postfix's SMTP client; the client gets every line
			 * with it.  Never "lost connection": after an end of data
			 * the backend may have queued the message.
			 */
			blog(b, LOG_LVL_WARNING, "backend %s: reply with different codes on its "
			    "lines: taking the last line's %d", backend_name(b), code);
		}
		metrics_backend_reply(code);
		if (b->pcount == 0) {
			if (code == 421) {	/* e.g. the backend's own idle timeout */
				backend_abort(b);
				b->ev->lost(b->owner, BACKEND_SAID_421, r, rlen);
				break;
			}
			backend_lost(b, "reply to no command");
			break;
		}
		p = b->pending[b->phead];
		b->phead = (b->phead + 1) % PENDING_MAX;
		b->pcount--;
		prelude_reply(b, p, r, rlen, code);
		if (!b->conn.closed)
			iobuf_consume(&b->conn.in, rlen);
	}
}

/*
 * Ciphertext was fed: take out all the plaintext OpenSSL has (into
 * bconn.in, replies taken out as they complete, so it has room), send what
 * the handshake wants sent, and go on with the prelude once it is done.
 */
static void
backend_tls_input(struct backend *b)
{
	for (;;) {
		ssize_t n = conn_tls_input(&b->conn);

		if (n > 0) {
			backend_replies(b);
			if (!b->up || b->released)
				return;
			continue;
		}
		if (n == 0)
			break;
		backend_replies(b);	/* what came before the failure or close_notify */
		if (!b->up || b->released)
			return;
		if (!b->tls_up) {
			backend_tls_fail(b, "%s", tls_conn_error(b->conn.tls));
		} else {
			char why[256];

			snprintf(why, sizeof(why), "TLS: %s", tls_conn_error(b->conn.tls));
			backend_lost(b, why);
		}
		return;
	}
	if (!b->tls_up && tls_conn_established(b->conn.tls))
		backend_tls_up(b);
	backend_flush(b);
}

/* Bytes (or EOF) from the backend: plaintext into bconn.in, or ciphertext into OpenSSL. */
static void
backend_read(void *owner, ssize_t nread)
{
	struct backend *b = owner;

	if (b->conn.closed)
		return;
	if (b->released) {		/* the answer to our QUIT, or its EOF */
		if (nread < 0)
			backend_abort(b);
		return;
	}
	if (nread < 0) {
		const char *why = nread == UV_EOF ? "connection closed" : uv_strerror((int)nread);

		if (b->conn.tls && !b->tls_up)
			backend_tls_fail(b, "in the handshake: %s", why);
		else
			backend_lost(b, why);
		return;
	}
	if (b->conn.tls)
		backend_tls_input(b);
	else
		backend_replies(b);
	if (!b->released) {
		backend_timer_arm(b);
		b->ev->progress(b->owner);
	}
}

/* A write to the backend finished. */
static void
backend_written(struct outq *q, int status)
{
	struct backend *b = q->owner;

	if (b->released || b->conn.closed)
		return;
	if (status != 0) {
		backend_lost(b, uv_strerror(status));
		return;
	}
	backend_timer_arm(b);
	b->ev->progress(b->owner);
}

/* The backend did not answer (or connect) in time. */
static void
backend_timeout(uv_timer_t *t)
{
	struct backend *b = t->data;

	if (b->released)
		return;
	if (!b->up) {
		if (backend_failover(b, "connect timeout"))
			return;
		backend_abort(b);
		b->ev->lost(b->owner, BACKEND_UNREACHABLE, NULL, 0);
		return;
	}
	if (b->conn.tls && !b->tls_up) {
		backend_tls_fail(b, "timeout in the handshake");
		return;
	}
	if (!b->chosen && backend_failover(b, "timeout waiting for the greeting"))
		return;
	blog(b, LOG_LVL_WARNING, "backend %s: timeout (%u replies outstanding)",
	    backend_name(b), b->pcount);
	backend_abort(b);
	b->ev->lost(b->owner, BACKEND_TIMEOUT, NULL, 0);
}

/* The client's name is known (or known to be unknown): whoever waited goes on. */
static void
lookup_done(struct backend *b)
{
	b->cname_done = true;
	if (!b->released && b->xclient_wait)
		send_xclient(b);
	if (!b->released)
		b->ev->name_known(b->owner);
	backend_unref(b);
}

/* The reverse lookup finished; confirm the name maps back to the address. */
static void
name_looked_up(uv_getnameinfo_t *req, int status, const char *host, const char *service)
{
	struct backend *b = req->data;
	struct addrinfo hints;

	if (!b->released && status == 0 && host && strlen(host) < sizeof(b->cname)) {
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = b->peer.ss_family;
		hints.ai_socktype = SOCK_STREAM;
		snprintf(b->cname, sizeof(b->cname), "%s", host);
		b->aireq.data = b;
		if (uv_getaddrinfo(b->loop, &b->aireq, name_confirmed, host, NULL, &hints) == 0) {
			b->handles++;
			backend_unref(b);
			return;
		}
		b->cname[0] = '\0';
	}
	if (!b->released && status == UV_EAI_NONAME)
		name_cache_put(b);		/* definitely no name */
	lookup_done(b);
}

/* Forward confirmation: keep the name only if it resolves to the client's address. */
static void
name_confirmed(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct backend *b = req->data;
	bool match = false;

	for (struct addrinfo *ai = status == 0 ? res : NULL; ai && !match; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET && b->peer.ss_family == AF_INET)
			match = memcmp(&((struct sockaddr_in *)ai->ai_addr)->sin_addr,
			    &((struct sockaddr_in *)&b->peer)->sin_addr, sizeof(struct in_addr)) == 0;
		else if (ai->ai_family == AF_INET6 && b->peer.ss_family == AF_INET6)
			match = memcmp(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr,
			    &((struct sockaddr_in6 *)&b->peer)->sin6_addr, sizeof(struct in6_addr)) == 0;
	}
	if (res)
		uv_freeaddrinfo(res);
	if (!match)
		b->cname[0] = '\0';
	if (!b->released && (status == 0 || status == UV_EAI_NONAME))
		name_cache_put(b);		/* confirmed, or definitely not */
	lookup_done(b);
}
