/*
 * backend.c - the backend side of a session: one SMTP client connection to
 * Postfix or Exim per client connection.
 *
 * Every command sent is recorded in a FIFO (struct pending) so that each
 * reply, which the backend sends in order, is matched to what it answers.
 * Replies to the proxy's own commands (the XCLIENT prelude, XFORWARD, QUIT)
 * stay here; the rest go to session_backend_reply().
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
 * untrusted certificate ends the session with BTLS_FAILED.  A handshake
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
 * outq_pending(&s->bconn.out), which the session checks against
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

#include "log.h"
#include "session.h"

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
	char		name[sizeof(((struct session *)0)->cname)];	/* "" = no verified name */
};
static struct name_cache_entry name_cache[NAME_CACHE_SIZE];

/* The client's address bytes and their length (0 for a family we do not cache). */
static size_t
peer_addr_bytes(const struct session *s, const unsigned char **p)
{
	*p = NULL;
	if (s->peer.ss_family == AF_INET) {
		*p = (const unsigned char *)&((const struct sockaddr_in *)&s->peer)->sin_addr;
		return 4;
	}
	if (s->peer.ss_family == AF_INET6) {
		*p = (const unsigned char *)&((const struct sockaddr_in6 *)&s->peer)->sin6_addr;
		return 16;
	}
	return 0;
}

/* The cache slot for the client's address (FNV-1a of its bytes), or NULL. */
static struct name_cache_entry *
name_cache_slot(const struct session *s)
{
	const unsigned char *p;
	size_t n = peer_addr_bytes(s, &p);
	uint32_t h = 2166136261u;

	if (n == 0)
		return NULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return &name_cache[h % NAME_CACHE_SIZE];
}

/* A fresh cached answer for the client: copied into s->cname, true; else false. */
static bool
name_cache_get(struct session *s)
{
	struct name_cache_entry *e = name_cache_slot(s);
	const unsigned char *p;
	size_t n = peer_addr_bytes(s, &p);

	if (e == NULL || p == NULL || e->expires == 0 || e->expires <= uv_now(s->srv->loop) ||
	    e->family != s->peer.ss_family || memcmp(e->addr, p, n) != 0)
		return false;
	memcpy(s->cname, e->name, sizeof(s->cname));
	return true;
}

/* Remember the definite answer now in s->cname for the client's address. */
static void
name_cache_put(struct session *s)
{
	struct name_cache_entry *e = name_cache_slot(s);
	const unsigned char *p;
	size_t n = peer_addr_bytes(s, &p);

	if (e == NULL || p == NULL)
		return;
	e->family = s->peer.ss_family;
	memset(e->addr, 0, sizeof(e->addr));
	memcpy(e->addr, p, n);
	memcpy(e->name, s->cname, sizeof(e->name));
	e->expires = uv_now(s->srv->loop) + (uint64_t)NAME_CACHE_TTL * 1000;
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
static void	send_xclient(struct session *s);
static void	backend_dial(struct session *s);
static bool	backend_failover(struct session *s, const char *why);

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
backend_name(const struct session *s)
{
	return s->cfg->backends[s->bidx].text;
}

/* The client's answer when backend_tls cannot be had (the log says why). */
#define BTLS_FAILED	"421 4.7.5 %s Service not available, backend TLS failed"

/* (Re)start the backend timer while the backend owes us a reply or a read:
 * timeout.connect until the session has its backend (bchosen), timeout.backend after. */
static void
backend_timer_arm(struct session *s)
{
	if (!s->backend_up || s->bconn.closed)
		return;
	if (s->pcount > 0 || outq_pending(&s->bconn.out) > 0 || (s->bconn.tls && !s->btls_up))
		uv_timer_start(&s->bconn.timer, backend_timeout, (uint64_t)(s->bchosen ?
		    s->cfg->timeout.backend : s->cfg->timeout.connect) * 1000, 0);
	else
		uv_timer_stop(&s->bconn.timer);
}

/*
 * Which backend to try next: the first untried one, counting from the
 * balance's starting point, that is not held down; else the first untried
 * one even if held down (better than none).  -1 when all were tried.
 */
static int
backend_pick(struct session *s)
{
	const struct config *cfg = s->cfg;
	uint64_t now = uv_now(s->srv->loop);
	unsigned start = 0;
	int fallback = -1;

	if (pool.cfg != cfg) {
		memset(&pool, 0, sizeof(pool));
		pool.cfg = cfg;
	}
	if (cfg->backend_balance == BALANCE_ROUND_ROBIN) {
		if (s->btried == 0)
			s->bidx = pool.next++ % cfg->nbackends;
		start = s->bidx;
	}
	for (unsigned k = 0; k < cfg->nbackends; k++) {
		unsigned i = (start + k) % cfg->nbackends;

		if (s->btried & (1u << i))
			continue;
		if (pool.down_until[i] <= now)
			return (int)i;
		if (fallback < 0)
			fallback = (int)i;
	}
	return fallback;
}

/* Open the backend connection and start the reverse lookup for XCLIENT. */
void
backend_connect(struct session *s)
{
	const struct config *cfg = s->cfg;

	conn_init(&s->bconn, s->srv->loop, s);
	conn_open(&s->bconn, BACKEND_INBUF, backend_read, backend_written);
	s->handles += 2;
	s->backend_init = true;

	s->cname_done = true;
	if ((cfg->xclient || cfg->xforward) && name_cache_get(s)) {
		/* Known from a recent session: no lookup. */
	} else if (cfg->xclient || cfg->xforward) {
		s->nireq.data = s;
		/*
		 * NI_NUMERICSERV: only the host name is wanted; without it
		 * glibc also looks the client's port up in /etc/services,
		 * reading the whole file for every session (a tenth of the
		 * proxy's CPU in the bench's profile).
		 */
		if (uv_getnameinfo(s->srv->loop, &s->nireq, name_looked_up,
		    (const struct sockaddr *)&s->peer, NI_NAMEREQD | NI_NUMERICSERV) == 0) {
			s->handles++;
			s->cname_done = false;
		}
	}

	backend_dial(s);
}

/* Connect s->backend (initialised, not connected) to the next backend to try. */
static void
backend_dial(struct session *s)
{
	const struct config *cfg = s->cfg;
	int i = backend_pick(s);
	int rc;

	if (i < 0)
		log_panic("%s: backend_dial: no backend left", s->id);
	s->bidx = (unsigned)i;
	s->btried |= 1u << i;
	s->connect_req.data = s;
	rc = uv_tcp_connect(&s->connect_req, &s->bconn.tcp,
	    (const struct sockaddr *)&cfg->backends[i].ss, backend_connected);
	if (rc != 0) {
		char why[128];

		snprintf(why, sizeof(why), "connect: %s", uv_strerror(rc));
		if (backend_failover(s, why))
			return;
		session_fail(s, "421 4.3.0 %s Service not available, backend unreachable",
		    cfg->hostname);
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
	conn_read_start(&s->bconn);
	s->pending[0].step = BS_GREETING;
	s->phead = 0;
	s->pcount = 1;
	uv_timer_start(&s->bconn.timer, backend_timeout, (uint64_t)cfg->timeout.connect * 1000, 0);
}

/* The failed backend's handle is closed: connect the same handle to the next one. */
static void
backend_retry_closed(uv_handle_t *h)
{
	struct session *s = h->data;

	s->bretry = false;
	if (s->closing) {
		session_unref(s);	/* the session ended meanwhile: the handle's last close */
		return;
	}
	conn_init(&s->bconn, s->srv->loop, s);
	backend_dial(s);
}

/*
 * The backend in use failed before it greeted with 2xx: mark it down, log
 * why, and when another one is left, close this connection (QUIT first if
 * it is up: it may have greeted with 4xx/5xx) and go on with the next.
 * False when nothing is left to try (the caller then fails the session, the
 * backend still marked down).
 */
static bool
backend_failover(struct session *s, const char *why)
{
	const struct config *cfg = s->cfg;
	int next;

	if (pool.cfg == cfg && cfg->backend_hold_down > 0)
		pool.down_until[s->bidx] = uv_now(s->srv->loop) + (uint64_t)cfg->backend_hold_down * 1000;
	if (s->bchosen || s->closing || (next = backend_pick(s)) < 0) {
		if (cfg->nbackends > 1)
			session_log(s, LOG_LVL_WARNING, "backend %s: %s; no backend left to try",
			    backend_name(s), why);
		else
			session_log(s, LOG_LVL_WARNING, "backend %s: %s", backend_name(s), why);
		return false;
	}
	session_log(s, LOG_LVL_WARNING, "backend %s: %s; trying %s", backend_name(s), why,
	    cfg->backends[next].text);
	if (s->backend_up) {
		uv_buf_t quit = uv_buf_init((char *)"QUIT\r\n", 6);

		(void)uv_try_write((uv_stream_t *)&s->bconn.tcp, &quit, 1);	/* best effort */
	}
	s->backend_up = false;
	s->bretry = true;
	s->pcount = 0;
	iobuf_consume(&s->bconn.in, s->bconn.in.len);
	uv_timer_stop(&s->bconn.timer);
	conn_close(&s->bconn, backend_retry_closed);
	return true;
}

/* The TCP connect finished. */
static void
backend_connected(uv_connect_t *req, int status)
{
	struct session *s = req->data;

	if (s->closing || s->bconn.closed)
		return;
	if (status != 0) {
		char why[128];

		snprintf(why, sizeof(why), "connect: %s", uv_strerror(status));
		if (backend_failover(s, why))
			return;
		s->pcount = 0;
		session_fail(s, "421 4.3.0 %s Service not available, backend unreachable",
		    s->cfg->hostname);
		return;
	}
	s->backend_up = true;
	uv_tcp_nodelay(&s->bconn.tcp, 1);
	backend_timer_arm(s);
}

/* Bytes to the backend: as they are, or through TLS once our STARTTLS got 220. */
static void
backend_out(struct session *s, const char *p, size_t n)
{
	(void)conn_write(&s->bconn, p, n);	/* a TLS failure is seen by backend_flush */
}

/* Queue a command; a reply is expected for it (step says what it answers). */
void
backend_send(struct session *s, const char *p, size_t n, enum backend_step step, int verb)
{
	struct pending *pe;

	if (!s->backend_up)
		return;
	if (s->pcount == PENDING_MAX)
		log_panic("%s: %d commands in flight", s->id, PENDING_MAX);
	pe = &s->pending[(s->phead + s->pcount) % PENDING_MAX];
	pe->step = (uint8_t)step;
	pe->verb = (uint8_t)verb;
	s->pcount++;
	if (n > 0) {
		session_transcript(s, "p>b", p, n);
		backend_out(s, p, n);
	}
}

/* Queue a command of our own, formatted. */
void
backend_sendf(struct session *s, enum backend_step step, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		log_panic("%s: command too long", s->id);
	backend_send(s, line, (size_t)n, step, SMTP_UNKNOWN);
}

/* Message bytes: no reply is expected for them. */
void
backend_data(struct session *s, const char *p, size_t n)
{
	if (s->backend_up && n > 0)
		backend_out(s, p, n);
}

/* Start writing what has gathered for the backend. */
void
backend_flush(struct session *s)
{
	int rc;

	if (!s->backend_up)
		return;
	if (s->bconn.tls && tls_conn_failed(s->bconn.tls)) {
		session_log(s, LOG_LVL_WARNING, "backend %s: TLS: %s", backend_name(s),
		    tls_conn_error(s->bconn.tls));
		backend_abort(s);
		session_fail(s, "421 4.3.0 %s Service not available, lost connection to backend",
		    s->cfg->hostname);
		return;
	}
	if ((rc = conn_flush(&s->bconn)) != 0) {
		session_log(s, LOG_LVL_WARNING, "backend write: %s", uv_strerror(rc));
		backend_abort(s);
		session_fail(s, "421 4.3.0 %s Service not available, lost connection to backend",
		    s->cfg->hostname);
		return;
	}
	backend_timer_arm(s);
}

/*
 * Drop the backend connection now, without QUIT: used inside DATA, where
 * closing before the end of data is how a message is kept from delivery.
 */
void
backend_abort(struct session *s)
{
	if (!s->backend_init || s->bconn.closed)
		return;
	s->backend_up = false;
	s->pcount = 0;
	s->bconn.out.fill.len = s->bconn.out.fill.off = 0;	/* never to be sent */
	uv_timer_stop(&s->bconn.timer);
	conn_close(&s->bconn, backend_closed_cb);
}

/* Say QUIT between transactions; the connection closes once it is written. */
void
backend_quit(struct session *s)
{
	if (!s->backend_up || s->bconn.closed || s->backend_quitting)
		return;
	if (session_backend_in_data(s)) {
		backend_abort(s);
		return;
	}
	s->backend_quitting = true;
	backend_send(s, "QUIT\r\n", 6, BS_QUIT, SMTP_QUIT);
	if (s->bconn.tls && s->btls_up)
		conn_tls_close(&s->bconn);	/* close_notify after QUIT */
	backend_flush(s);
}

static void
backend_shut(uv_shutdown_t *req, int status)
{
	struct session *s = req->data;

	free(req);
	if (!s->bconn.closed)
		conn_close(&s->bconn, backend_closed_cb);
}

/* Session end: close the backend's handles (after a pending QUIT is written). */
void
backend_release(struct session *s)
{
	if (!s->backend_init)
		return;
	if (!s->bconn.closed && s->backend_quitting) {
		uv_shutdown_t *req = xmalloc(sizeof(*req));

		req->data = s;
		s->backend_up = false;
		if (uv_shutdown(req, (uv_stream_t *)&s->bconn.tcp, backend_shut) == 0)
			goto timer;
		free(req);
	}
	backend_abort(s);
timer:
	uv_close((uv_handle_t *)&s->bconn.timer, backend_closed_cb);
	tls_conn_free(s->bconn.tls);		/* what it had to send is in bconn.out already */
	s->bconn.tls = NULL;
}

static void
backend_closed_cb(uv_handle_t *h)
{
	session_unref(h->data);
}

/* The connection to the backend is gone or unusable: tell the client. */
static void
backend_lost(struct session *s, const char *why)
{
	if (!s->bchosen && s->state == SS_CONNECT && backend_failover(s, why))
		return;		/* before its greeting: the next one is tried */
	if (s->bchosen || s->state != SS_CONNECT)
		session_log(s, LOG_LVL_WARNING, "backend %s: %s", backend_name(s), why);
	backend_abort(s);
	if (s->state == SS_CLOSING) {
		session_process(s);	/* closes once the last reply is out */
		return;
	}
	session_fail(s, "421 4.3.0 %s Service not available, lost connection to backend",
	    s->cfg->hostname);
}

/* backend_tls could not be had: tell the client, close, log why. */
static void
backend_tls_fail(struct session *s, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	session_log(s, LOG_LVL_WARNING, "backend %s: TLS failed: %s", backend_name(s), why);
	backend_abort(s);
	session_fail(s, BTLS_FAILED, s->cfg->hostname);
}

/* The client sees the backend's greeting (the first one, or XCLIENT's). */
static void
relay_greeting(struct session *s, const char *r, size_t n)
{
	session_greeting(s, r, n);
	free(s->greeting);
	s->greeting = NULL;
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
xclient_addr(const struct session *s, char *out, size_t outlen)
{
	if (strchr(s->caddr, ':'))
		snprintf(out, outlen, "IPV6:%s", s->caddr);
	else
		snprintf(out, outlen, "%s", s->caddr);
}

/* The client's verified name, xtext-encoded, or [UNAVAILABLE]. */
static void
xclient_name(const struct session *s, char *out, size_t outlen)
{
	if (s->cname[0] == '\0' || smtp_xtext_encode(s->cname, strlen(s->cname), out, outlen) < 0)
		snprintf(out, outlen, "[UNAVAILABLE]");
}

/* Tell the backend who the real client is (Postfix XCLIENT_README). */
static void
send_xclient(struct session *s)
{
	char addr[INET6_ADDRSTRLEN + 8], name[800], line[1024];
	int n;

	s->xclient_wait = false;
	xclient_addr(s, addr, sizeof(addr));
	xclient_name(s, name, sizeof(name));
	n = snprintf(line, sizeof(line), "XCLIENT");
	if (s->xclient_attrs & XA_ADDR)
		n += snprintf(line + n, sizeof(line) - n, " ADDR=%s", addr);
	if (s->xclient_attrs & XA_PORT)
		n += snprintf(line + n, sizeof(line) - n, " PORT=%u", s->cport);
	if (s->xclient_attrs & XA_NAME)
		n += snprintf(line + n, sizeof(line) - n, " NAME=%s", name);
	backend_sendf(s, BS_XCLIENT, "%s\r\n", line);
	backend_flush(s);
}

/* XFORWARD before MAIL, for a backend that offers it but not XCLIENT. */
void
backend_xforward(struct session *s)
{
	char addr[INET6_ADDRSTRLEN + 8], name[800], helo[800];

	if (s->xclient_done || !s->cfg->xforward || !s->bcaps.xforward || !s->backend_up)
		return;
	xclient_addr(s, addr, sizeof(addr));
	xclient_name(s, name, sizeof(name));
	if (s->helo[0] == '\0' || smtp_xtext_encode(s->helo, strlen(s->helo), helo, sizeof(helo)) < 0)
		snprintf(helo, sizeof(helo), "[UNAVAILABLE]");
	backend_sendf(s, BS_XFORWARD, "XFORWARD NAME=%s ADDR=%s PORT=%u\r\n", name, addr, s->cport);
	backend_sendf(s, BS_XFORWARD, "XFORWARD PROTO=%s HELO=%s SOURCE=REMOTE\r\n",
	    s->esmtp ? "ESMTP" : "SMTP", helo);
}

/* A command of the prelude (EHLO, STARTTLS): its reply comes back as BS_PRELUDE_EHLO. */
static void
prelude_send(struct session *s, int verb, const char *line)
{
	backend_send(s, line, strlen(line), BS_PRELUDE_EHLO, verb);
}

/* Our EHLO before the prelude (first, or again inside TLS). */
static void
prelude_ehlo(struct session *s)
{
	char line[300];

	snprintf(line, sizeof(line), "EHLO %s\r\n", s->cfg->hostname);
	prelude_send(s, SMTP_EHLO, line);
}

/* The prelude after EHLO (and TLS): XCLIENT when it applies, else the first greeting. */
static void
prelude_done(struct session *s)
{
	if (s->cfg->xclient && s->bcaps.xclient && (s->xclient_attrs & XA_ADDR)) {
		if (s->cname_done)
			send_xclient(s);
		else
			s->xclient_wait = true;
		return;
	}
	relay_greeting(s, s->greeting, strlen(s->greeting));
}

/*
 * The greeting of a backend whose EHLO is remembered (struct backend_memo):
 * XCLIENT at once, or the greeting relayed at once.  False when nothing
 * fresh is known, or the backend wants EHLO before XCLIENT: the prelude
 * runs as usual.
 */
static bool
prelude_remembered(struct session *s, const char *r, size_t n)
{
	const struct backend_memo *m;

	if (s->cfg->backend_tls != BACKEND_TLS_NONE || pool.cfg != s->cfg)
		return false;
	m = &pool.memo[s->bidx];
	if (m->until <= uv_now(s->srv->loop))
		return false;
	s->bcaps = m->caps;
	s->xclient_attrs = m->xclient_attrs;
	if (!(s->bcaps.xclient && (s->xclient_attrs & XA_ADDR))) {
		relay_greeting(s, r, n);
		return true;
	}
	if (m->ehlo_first)
		return false;
	s->greeting = xstrndup(r, n);
	s->xclient_unprobed = true;
	prelude_done(s);
	return true;
}

/* The backend's answer to our EHLO: STARTTLS next when backend_tls wants it. */
static void
prelude_ehlo_reply(struct session *s, const char *r, size_t n, int code)
{
	enum backend_tls_mode mode = s->cfg->backend_tls;

	if (code != 250) {
		session_log(s, LOG_LVL_WARNING, "backend refused our EHLO: %.*s",
		    (int)(n > 2 ? n - 2 : n), r);
		if (mode == BACKEND_TLS_ENCRYPT && !s->btls_up) {
			backend_tls_fail(s, "EHLO refused, so no STARTTLS (backend_tls = encrypt)");
			return;
		}
		relay_greeting(s, s->greeting, strlen(s->greeting));
		return;
	}
	ehlo_caps_parse(r, n, &s->bcaps);
	s->xclient_attrs = xclient_attributes(r, n);
	if (mode == BACKEND_TLS_NONE && pool.cfg == s->cfg) {
		struct backend_memo *m = &pool.memo[s->bidx];

		m->caps = s->bcaps;
		m->xclient_attrs = s->xclient_attrs;
		m->until = uv_now(s->srv->loop) + BACKEND_MEMO_TTL * 1000;
	}
	if (mode != BACKEND_TLS_NONE && s->bconn.tls == NULL) {
		if (s->bcaps.starttls) {
			prelude_send(s, SMTP_STARTTLS, "STARTTLS\r\n");
			return;
		}
		if (mode == BACKEND_TLS_ENCRYPT) {
			backend_tls_fail(s, "STARTTLS not offered (backend_tls = encrypt)");
			return;
		}
		session_log(s, LOG_LVL_INFO, "backend %s offers no STARTTLS: going on in "
		    "plaintext (backend_tls = may)", backend_name(s));
	}
	prelude_done(s);
}

/* The backend's answer to our STARTTLS: 220 starts the handshake. */
static void
prelude_starttls_reply(struct session *s, const char *r, size_t n, int code)
{
	if (code != 220) {
		if (s->cfg->backend_tls == BACKEND_TLS_ENCRYPT) {
			backend_tls_fail(s, "STARTTLS refused: %.*s", (int)(n > 2 ? n - 2 : n), r);
			return;
		}
		session_log(s, LOG_LVL_WARNING, "backend refused STARTTLS, going on in plaintext "
		    "(backend_tls = may): %.*s", (int)(n > 2 ? n - 2 : n), r);
		prelude_done(s);
		return;
	}
	/* r is at the head of bconn.in: anything after it was sent before TLS, in the clear. */
	if (s->bconn.in.len > n) {
		backend_tls_fail(s, "%zu bytes after the 220 to STARTTLS", s->bconn.in.len - n);
		return;
	}
	conn_starttls(&s->bconn, tls_conn_connect(s->cfg->backend_tls_name,
	    s->cfg->backend_tls == BACKEND_TLS_ENCRYPT));	/* the ClientHello queued */
	if (tls_conn_failed(s->bconn.tls))
		backend_tls_fail(s, "%s", tls_conn_error(s->bconn.tls));
}

/* The handshake is done: log what was agreed, then EHLO again (RFC 3207 4.2). */
static void
backend_tls_up(struct session *s)
{
	const char *bad = tls_conn_verify_error(s->bconn.tls);
	const char *name = s->cfg->backend_tls_name;

	s->btls_up = true;
	if (s->cfg->backend_tls == BACKEND_TLS_ENCRYPT && bad != NULL) {
		backend_tls_fail(s, "certificate not trusted: %s", bad);	/* OpenSSL checked already */
		return;
	}
	if (bad != NULL)
		session_log(s, LOG_LVL_INFO, "backend TLS established: %s with cipher %s, "
		    "certificate not verified (%s)", tls_conn_version(s->bconn.tls),
		    tls_conn_cipher(s->bconn.tls), bad);
	else
		session_log(s, LOG_LVL_INFO, "backend TLS established: %s with cipher %s, "
		    "certificate verified%s%s", tls_conn_version(s->bconn.tls), tls_conn_cipher(s->bconn.tls),
		    name ? " for " : "", name ? name : "");
	prelude_ehlo(s);
}

/* A reply to one of the proxy's own commands. */
static void
prelude_reply(struct session *s, struct pending p, const char *r, size_t n, int code)
{
	switch (p.step) {
	case BS_GREETING:
		if (code / 100 != 2) {
			char why[300];

			snprintf(why, sizeof(why), "greeting %.*s", (int)(n > 2 ? n - 2 : n), r);
			for (char *q = why; *q; q++)
				if (*q == '\r' || *q == '\n')
					*q = ' ';
			if (backend_failover(s, why))
				return;
			s->bchosen = true;	/* the last one left: its greeting is relayed */
		} else {
			s->bchosen = true;
			if (s->cfg->nbackends > 1)
				session_log(s, LOG_LVL_INFO, "using backend %s", backend_name(s));
		}
		if (code == 220 && s->cfg->xclient && prelude_remembered(s, r, n))
			return;
		if (code == 220 && (s->cfg->xclient || s->cfg->backend_tls != BACKEND_TLS_NONE)) {
			s->greeting = xstrndup(r, n);
			prelude_ehlo(s);
			return;
		}
		if (s->cfg->backend_tls == BACKEND_TLS_ENCRYPT) {
			backend_tls_fail(s, "greeting is not 220, so no STARTTLS: %.*s",
			    (int)(n > 2 ? n - 2 : n), r);
			return;
		}
		relay_greeting(s, r, n);
		return;
	case BS_PRELUDE_EHLO:
		if (p.verb == SMTP_STARTTLS)
			prelude_starttls_reply(s, r, n, code);
		else
			prelude_ehlo_reply(s, r, n, code);
		return;
	case BS_XCLIENT:
		if (code == 220) {
			s->xclient_done = true;
			relay_greeting(s, r, n);
			return;
		}
		if (s->xclient_unprobed && code / 100 != 4) {
			/* It wants EHLO first: ours, then XCLIENT again. */
			session_log(s, LOG_LVL_INFO, "backend %s refused XCLIENT before EHLO, "
			    "sending EHLO first: %.*s", backend_name(s), (int)(n > 2 ? n - 2 : n), r);
			s->xclient_unprobed = false;
			if (pool.cfg == s->cfg)
				pool.memo[s->bidx].ehlo_first = true;
			prelude_ehlo(s);
			return;
		}
		session_log(s, LOG_LVL_WARNING, "backend refused XCLIENT: %.*s",
		    (int)(n > 2 ? n - 2 : n), r);
		relay_greeting(s, s->greeting, strlen(s->greeting));
		return;
	case BS_XFORWARD:
		if (code / 100 != 2)
			session_log(s, LOG_LVL_WARNING, "backend refused XFORWARD: %.*s",
			    (int)(n > 2 ? n - 2 : n), r);
		return;
	case BS_QUIT:
		return;
	case BS_RESET:
		if (code / 100 != 2)
			session_log(s, LOG_LVL_WARNING, "backend refused RSET: %.*s",
			    (int)(n > 2 ? n - 2 : n), r);
		return;
	default:
		session_backend_reply(s, p, r, n, code);
	}
}

/* Split bconn.in into replies and match each to its command. */
static void
backend_replies(struct session *s)
{
	size_t rlen;
	int code, rc;

	while (s->backend_up && !s->closing && s->bconn.in.len > 0) {
		const char *r = iobuf_head(&s->bconn.in);
		struct pending p;

		rc = smtp_reply_scan(r, s->bconn.in.len, &rlen, &code);
		if (rc == 0) {
			if (s->bconn.in.len == BACKEND_INBUF)
				backend_lost(s, "reply too long");
			break;
		}
		if (rc < 0) {
			backend_lost(s, "malformed reply");
			break;
		}
		session_transcript(s, "b>p", r, rlen);
		if (smtp_reply_unify(s->bconn.in.data + s->bconn.in.off, rlen, code) > 0) {
			/*
			 * Lines with different codes: the last one's counts, as
			 * for Postfix's SMTP client; the client gets every line
			 * with it.  Never "lost connection": after an end of data
			 * the backend may have queued the message.
			 */
			session_log(s, LOG_LVL_WARNING, "backend %s: reply with different codes on its "
			    "lines: taking the last line's %d", backend_name(s), code);
		}
		metrics_backend_reply(code);
		if (s->pcount == 0) {
			if (code == 421) {	/* e.g. the backend's own idle timeout */
				session_reply(s, r, rlen);
				backend_abort(s);
				session_set_state(s, SS_CLOSING, "backend sent 421");
				break;
			}
			backend_lost(s, "reply to no command");
			break;
		}
		p = s->pending[s->phead];
		s->phead = (s->phead + 1) % PENDING_MAX;
		s->pcount--;
		prelude_reply(s, p, r, rlen, code);
		if (!s->bconn.closed)
			iobuf_consume(&s->bconn.in, rlen);
	}
}

/*
 * Ciphertext was fed: take out all the plaintext OpenSSL has (into
 * bconn.in, replies taken out as they complete, so it has room), send what
 * the handshake wants sent, and go on with the prelude once it is done.
 */
static void
backend_tls_input(struct session *s)
{
	for (;;) {
		ssize_t n = conn_tls_input(&s->bconn);

		if (n > 0) {
			backend_replies(s);
			if (!s->backend_up || s->closing)
				return;
			continue;
		}
		if (n == 0)
			break;
		backend_replies(s);	/* what came before the failure or close_notify */
		if (!s->backend_up || s->closing)
			return;
		if (!s->btls_up) {
			backend_tls_fail(s, "%s", tls_conn_error(s->bconn.tls));
		} else {
			char why[256];

			snprintf(why, sizeof(why), "TLS: %s", tls_conn_error(s->bconn.tls));
			backend_lost(s, why);
		}
		return;
	}
	if (!s->btls_up && tls_conn_established(s->bconn.tls))
		backend_tls_up(s);
	backend_flush(s);
}

/* Bytes (or EOF) from the backend: plaintext into bconn.in, or ciphertext into OpenSSL. */
static void
backend_read(void *owner, ssize_t nread)
{
	struct session *s = owner;

	if (s->bconn.closed)
		return;
	if (s->closing) {		/* the answer to our QUIT, or its EOF */
		if (nread < 0)
			backend_abort(s);
		return;
	}
	if (nread < 0) {
		const char *why = nread == UV_EOF ? "connection closed" : uv_strerror((int)nread);

		if (s->bconn.tls && !s->btls_up)
			backend_tls_fail(s, "in the handshake: %s", why);
		else
			backend_lost(s, why);
		return;
	}
	if (s->bconn.tls)
		backend_tls_input(s);
	else
		backend_replies(s);
	if (!s->closing) {
		backend_timer_arm(s);
		session_process(s);
	}
}

/* A write to the backend finished. */
static void
backend_written(struct outq *q, int status)
{
	struct session *s = q->owner;

	if (s->closing || s->bconn.closed)
		return;
	if (status != 0) {
		backend_lost(s, uv_strerror(status));
		return;
	}
	backend_timer_arm(s);
	session_process(s);
}

/* The backend did not answer (or connect) in time. */
static void
backend_timeout(uv_timer_t *t)
{
	struct session *s = t->data;

	if (s->closing)
		return;
	if (!s->backend_up) {
		if (backend_failover(s, "connect timeout"))
			return;
		backend_abort(s);
		session_fail(s, "421 4.3.0 %s Service not available, backend unreachable",
		    s->cfg->hostname);
		return;
	}
	if (s->bconn.tls && !s->btls_up) {
		backend_tls_fail(s, "timeout in the handshake");
		return;
	}
	if (!s->bchosen && backend_failover(s, "timeout waiting for the greeting"))
		return;
	session_log(s, LOG_LVL_WARNING, "backend %s: timeout (%u replies outstanding)",
	    backend_name(s), s->pcount);
	backend_abort(s);
	session_fail(s, "421 4.4.2 %s Error: backend timeout", s->cfg->hostname);
}

/* The client's name is known (or known to be unknown): whoever waited goes on. */
static void
lookup_done(struct session *s)
{
	s->cname_done = true;
	if (!s->closing && s->xclient_wait)
		send_xclient(s);
	if (!s->closing && s->state == SS_CONNECT && s->greeting_text) {
		session_greeting(s, NULL, 0);
		session_process(s);
	}
	session_unref(s);
}

/* The reverse lookup finished; confirm the name maps back to the address. */
static void
name_looked_up(uv_getnameinfo_t *req, int status, const char *host, const char *service)
{
	struct session *s = req->data;
	struct addrinfo hints;

	if (!s->closing && status == 0 && host && strlen(host) < sizeof(s->cname)) {
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = s->peer.ss_family;
		hints.ai_socktype = SOCK_STREAM;
		snprintf(s->cname, sizeof(s->cname), "%s", host);
		s->aireq.data = s;
		if (uv_getaddrinfo(s->srv->loop, &s->aireq, name_confirmed, host, NULL, &hints) == 0) {
			s->handles++;
			session_unref(s);
			return;
		}
		s->cname[0] = '\0';
	}
	if (!s->closing && status == UV_EAI_NONAME)
		name_cache_put(s);		/* definitely no name */
	lookup_done(s);
}

/* Forward confirmation: keep the name only if it resolves to the client's address. */
static void
name_confirmed(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct session *s = req->data;
	bool match = false;

	for (struct addrinfo *ai = status == 0 ? res : NULL; ai && !match; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET && s->peer.ss_family == AF_INET)
			match = memcmp(&((struct sockaddr_in *)ai->ai_addr)->sin_addr,
			    &((struct sockaddr_in *)&s->peer)->sin_addr, sizeof(struct in_addr)) == 0;
		else if (ai->ai_family == AF_INET6 && s->peer.ss_family == AF_INET6)
			match = memcmp(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr,
			    &((struct sockaddr_in6 *)&s->peer)->sin6_addr, sizeof(struct in6_addr)) == 0;
	}
	if (res)
		uv_freeaddrinfo(res);
	if (!match)
		s->cname[0] = '\0';
	if (!s->closing && (status == 0 || status == UV_EAI_NONAME))
		name_cache_put(s);		/* confirmed, or definitely not */
	lookup_done(s);
}
