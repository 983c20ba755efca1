/*
 * policy.c - the policy filter module: asks Postfix policy servers
 * (postgrey, postfix-policyd-spf-python, any script speaking
 * SMTPD_POLICY_README's protocol) at the steps of the session where
 * Postfix's check_policy_service would, and acts on their access(5)
 * answers as Postfix does.
 *
 * SYNOPSIS
 *	filter {
 *		module = "policy";
 *		server = "inet:127.0.0.1:10023";	# or "unix:/path"
 *		steps = [ "rcpt" ];		# connect, helo, mail, rcpt, data,
 *						# end_of_data
 *		default_action = "451 4.3.5 Server configuration problem";
 *						# any access(5) action, or
 *						# "tempfail" (that one), "accept" (DUNNO)
 *		timeout = 100;			# seconds: connect, send, answer
 *		try_limit = 2;			# attempts per request
 *		retry_delay = 1;		# seconds between attempts
 *		request_limit = 0;		# requests per connection (0: no limit)
 *		max_idle = 300;			# seconds an unused connection is kept
 *		max_ttl = 1000;			# seconds a connection is used at most
 *		idle_connections = 32;		# kept per worker between sessions
 *		policy_context = "";		# sent as policy_context
 *	}
 *
 * DESCRIPTION
 *	Each step in `steps` sends one request (codec.c) with the attributes
 *	Postfix 3.7 sends, and the hook pends until the answer.  A session
 *	takes one connection at its first request and keeps it to its end,
 *	so that the requests about one message go over one connection (as
 *	SMTPD_POLICY_README promises); then the connection waits in a pool
 *	of at most idle_connections for the next session, up to max_idle
 *	seconds, and is used for max_ttl seconds and request_limit requests
 *	at most (Postfix's smtpd_policy_service_max_idle, _max_ttl and
 *	_request_limit).  No Nagle on TCP, and TCP_QUICKACK after a read
 *	that leaves an answer incomplete: a server writing its answer in two
 *	pieces does not wait for our delayed ACK.
 *
 *	A request that fails (no connection, the server closes or sends what
 *	is not an answer, an answer over PC_MAX_ANSWER octets, no answer
 *	within timeout) is tried again on a new connection, at once when the
 *	failed connection was an idle one used again, else after
 *	retry_delay, up to try_limit attempts (smtpd_policy_service_try_limit
 *	and _retry_delay); then a warning, and default_action answers that
 *	request.  The next request tries the server again.
 *
 *	Answers, with Postfix's meaning at each step (check_table_result):
 *	OK, DUNNO, DEFER_IF_REJECT, WARN, INFO: go on (WARN and INFO are
 *	logged; OK ends nothing else: the later filters and the backend still
 *	decide, as later restriction lists do in Postfix); REJECT, DEFER and
 *	NNN text: refused with Postfix's "<NAME>: CLASS rejected: TEXT"
 *	(at RCPT, this recipient only); DEFER_IF_PERMIT: deferred the same
 *	way (the proxy cannot know whether the backend's restrictions would
 *	permit: it defers, which is Postfix's outcome unless a later
 *	restriction rejects); PREPEND: the header is added at the top of the
 *	message, in the order of the answers; HOLD: the message is
 *	quarantined; DISCARD: the message is dropped with 250; REDIRECT:
 *	the message goes to that address only (its recipients replaced at
 *	end of message); BCC: that address is added; FILTER: there is no
 *	queue and no transport here, so it is logged as a warning and
 *	ignored (the backend's own content_filter still applies).  An answer
 *	at CONNECT or HELO counts for every message of the session.  An
 *	answer that is no access(5) action: warning, default_action.
 *
 *	Identical requests in one session (the same step with the same
 *	attributes: the instance differs from message to message) are asked
 *	once; the answer is kept for the session, at most CACHE_SIZE of them.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include <smtpchain/filter.h>

#include "../common/channel.h"
#include "../common/pending.h"
#include "codec.h"

#define DEFAULT_TIMEOUT		100	/* seconds, smtpd_policy_service_timeout */
#define DEFAULT_TRY_LIMIT	2
#define DEFAULT_RETRY_DELAY	1
#define DEFAULT_MAX_IDLE	300
#define DEFAULT_MAX_TTL		1000
#define DEFAULT_IDLE		32
#define MAX_IDLE_CONNECTIONS	1024
#define MAX_SECONDS		86400
#define DEFAULT_ACTION		"451 4.3.5 Server configuration problem"
#define CACHE_SIZE		8	/* answers kept per session */
#define MAX_RCPTS		1000	/* recipients remembered for REDIRECT */

/* The steps a request may be made at; their Postfix protocol_state. */
enum step {
	ST_CONNECT = 0,
	ST_HELO,
	ST_MAIL,
	ST_RCPT,
	ST_DATA,
	ST_EOD,
	ST_MAX,
};

static const struct {
	const char	*option;	/* in steps = [ ... ] */
	const char	*state;		/* protocol_state */
	const char	*reply_class;	/* Postfix's SMTPD_NAME_* */
} steps[ST_MAX] = {
	{ "connect", "CONNECT", "Client host" },
	{ "helo", "EHLO", "Helo command" },
	{ "mail", "MAIL", "Sender address" },
	{ "rcpt", "RCPT", "Recipient address" },
	{ "data", "DATA", "Data command" },
	{ "end_of_data", "END-OF-MESSAGE", "End-of-data" },
};

/* One filter {} block, and its idle connections (this worker's). */
struct policy_conf {
	const char	*server;	/* as configured, for logs */
	struct channel_addr addr;
	unsigned	 steps;		/* 1 << enum step */
	const char	*default_action;
	uint64_t	 timeout, retry_delay, max_idle, max_ttl;	/* ms */
	unsigned	 try_limit, request_limit;
	const char	*context;
	struct channel_pool pool;	/* idle connections: at most idle_connections */
};

/* Where a connection stands. */
enum link_state {
	LK_RETRY_WAIT = 0,	/* made for a retry: connecting after retry_delay */
	LK_CONNECTING,
	LK_READY,		/* connected: a request may go */
	LK_ASKING,		/* a request sent, its answer not complete */
	LK_IDLE,		/* in the pool */
};

struct psess;

/* A connection to the server; frees itself when its channel is closed. */
struct plink {
	struct channel	 ch;
	enum link_state	 state;
	struct policy_conf *conf;
	struct psess	*ps;		/* the session using it, or NULL */
	bool		 discard;	/* the answer under way was cancelled */
	uint64_t	 born;		/* uv_now() at connect, ms */
	unsigned	 requests;	/* answered on it */
	struct pc_reader rd;
};

/* What answers ask of a message beyond the verdict. */
struct effects {
	char		**prepend;	/* "Name: value" */
	size_t		  nprepend;
	char		**bcc;
	size_t		  nbcc;
	char		 *redirect;
};

/* An answer kept for an identical request later in the session. */
struct cached {
	char		*request;
	size_t		 len;
	char		*action;
};

/* One session (host->state()). */
struct psess {
	struct sc_ctx		*c;
	struct policy_conf	*conf;
	struct plink		*link;

	/* The hook waiting for an answer, and an answer given during it. */
	enum step		 pending;
	bool			 waiting;
	struct pending		 answer;	/* its verdict, now or by resume() */
	struct pc_buf		 req;		/* the request being asked */
	unsigned		 tries;
	bool			 link_reused;

	/* The current message. */
	unsigned		 msgno;
	char			 instance[96];
	char			*sender, *sasl_sender;
	unsigned long long	 size;		/* SIZE=, then what the hooks counted */
	bool			 counted;
	char			**rcpts;
	size_t			 nrcpts;
	struct effects		 msg;
	struct effects		 session;	/* answered at CONNECT */
	struct effects		 helo;		/* at the last HELO/EHLO: a new one
						   (after STARTTLS) replaces them */

	struct cached		 cache[CACHE_SIZE];
	size_t			 ncache, cache_next;
};

static const struct sc_host *host;

static void	ask(struct psess *ps);
static void	request_failed(struct psess *ps, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));

/* --- small helpers ----------------------------------------------------------- */

/* Append a copy of s to a list; -1 out of memory. */
static int
list_add(char ***v, size_t *n, const char *s)
{
	char **nv = realloc(*v, (*n + 1) * sizeof(**v));

	if (nv == NULL)
		return -1;
	*v = nv;
	if ((nv[*n] = strdup(s)) == NULL)
		return -1;
	(*n)++;
	return 0;
}

static void
list_free(char ***v, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		free((*v)[i]);
	free(*v);
	*v = NULL;
	*n = 0;
}

static void
effects_free(struct effects *e)
{
	list_free(&e->prepend, &e->nprepend);
	list_free(&e->bcc, &e->nbcc);
	free(e->redirect);
	e->redirect = NULL;
}

/* An address without its angle brackets, as Postfix sends it. */
static char *
address_dup(const char *a)
{
	size_t n;

	if (a == NULL)
		return strdup("");
	n = strlen(a);
	if (n >= 2 && a[0] == '<' && a[n - 1] == '>')
		return strndup(a + 1, n - 2);
	return strdup(a);
}

/* Postfix's xtext_quote (no specials): what ccert_subject/issuer carry. */
static const char *
xtext(const char *s, char *buf, size_t len)
{
	size_t o = 0;

	if (s == NULL)
		return "";
	for (; *s && o + 4 < len; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < '!' || ch > '~' || ch == '+' || ch == '=')
			o += (size_t)snprintf(buf + o, len - o, "+%02X", ch);
		else
			buf[o++] = (char)ch;
	}
	buf[o] = '\0';
	return buf;
}

/* A fact from the host, "" when unknown. */
static const char *
fact(struct psess *ps, const char *name)
{
	const char *v = host->get(ps->c, name);

	return v ? v : "";
}

/* --- answering the host ------------------------------------------------------ */

/* A hook waits for an answer from now on. */
static void
hook_enter(struct psess *ps, enum step st)
{
	ps->pending = st;
	ps->waiting = true;
	pending_enter(&ps->answer);
}

/* What the hook returns: its answer if it came already, or SC_PENDING. */
static enum sc_verdict
hook_return(struct psess *ps)
{
	return pending_return(&ps->answer);
}

/* The waiting hook's verdict: returned from inside it, or through resume(). */
static void
finish_hook(struct psess *ps, enum sc_verdict v)
{
	if (!ps->waiting)
		return;
	ps->waiting = false;
	pending_give(&ps->answer, host, ps->c, v);
}

/* --- the connection ------------------------------------------------------------ */

static void
on_link_free(struct channel *ch)
{
	free(ch->data);
}

/* Close a connection nobody uses any more; it frees itself. */
static void
link_close(struct plink *l)
{
	l->ps = NULL;
	channel_close(&l->ch);
}

static void
on_idle_timeout(struct channel *ch)
{
	struct plink *l = ch->data;

	channel_pool_unlink(ch);
	link_close(l);
}

/* Whether a connection is past max_ttl or request_limit. */
static bool
link_worn(const struct plink *l)
{
	const struct policy_conf *conf = l->conf;

	return (conf->request_limit > 0 && l->requests >= conf->request_limit) ||
	    uv_now(l->ch.timer.loop) - l->born >= conf->max_ttl;
}

/* The session is done with its connection: into the pool when it can be, else closed. */
static void
link_release(struct psess *ps)
{
	struct plink *l = ps->link;
	struct policy_conf *conf = ps->conf;

	if (l == NULL)
		return;
	ps->link = NULL;
	l->ps = NULL;
	if (l->state != LK_READY || link_worn(l) || channel_queued(&l->ch) > 0 ||
	    !channel_pool_put(&conf->pool, &l->ch)) {
		link_close(l);
		return;
	}
	l->state = LK_IDLE;
	channel_timer_start(&l->ch, on_idle_timeout, conf->max_idle);
}

/* An idle connection still good for a request, or NULL. */
static struct plink *
pool_take(struct psess *ps)
{
	struct channel *ch;
	unsigned dropped;

	while ((ch = channel_pool_take(&ps->conf->pool, &dropped)) != NULL) {
		struct plink *l = ch->data;

		if (link_worn(l)) {
			link_close(l);
			continue;
		}
		channel_timer_stop(ch);
		l->state = LK_READY;
		return l;
	}
	return NULL;
}

static void	answered(struct psess *ps, const char *action, bool from_cache);

static void
on_read(struct channel *ch, ssize_t nread, const uv_buf_t *buf)
{
	struct plink *l = ch->data;
	struct psess *ps = l->ps;
	const char *err = NULL, *action;
	enum pc_read r;

	if (nread == 0)
		return;
	if (l->state == LK_IDLE || (ps == NULL && !l->discard)) {
		if (l->state == LK_IDLE)
			channel_pool_unlink(ch);
		link_close(l);		/* closed by the server, or talking out of turn */
		return;
	}
	if (nread < 0) {
		if (ps != NULL)
			request_failed(ps, "%s", nread == UV_EOF ? (l->rd.len ?
			    "the server closed the connection in the middle of its answer" :
			    "the server closed the connection") : uv_strerror((int)nread));
		else
			link_close(l);
		return;
	}
	if (l->state != LK_ASKING) {
		if (ps != NULL)
			request_failed(ps, "%zd octets from the server when no answer was due", nread);
		else
			link_close(l);
		return;
	}
	r = pc_reader_feed(&l->rd, buf->base, (size_t)nread, &err);
	if (r == PC_NEED_MORE) {
		channel_quickack(ch);	/* the rest of the answer without our delayed ACK */
		return;
	}
	if (r == PC_ERROR) {
		if (ps != NULL)
			request_failed(ps, "%s", err);
		else
			link_close(l);
		return;
	}
	channel_timer_stop(ch);
	l->state = LK_READY;
	l->requests++;
	if (l->discard || ps == NULL) {	/* cancelled: dropped, the connection is good */
		l->discard = false;
		pc_reader_init(&l->rd);
		if (ps == NULL)
			link_close(l);
		return;
	}
	if ((action = pc_answer(&l->rd, &err)) == NULL) {
		l->state = LK_ASKING;	/* not a usable connection any more */
		request_failed(ps, "malformed answer (%s)", err);
		return;
	}
	answered(ps, action, false);
	pc_reader_init(&l->rd);
}

static void
on_written(struct channel *ch, int status)
{
	struct plink *l = ch->data;

	if (status < 0 && status != UV_ECANCELED && l->ps != NULL && l->state == LK_ASKING)
		request_failed(l->ps, "writing to the server: %s", uv_strerror(status));
}

static void
on_request_timeout(struct channel *ch)
{
	struct plink *l = ch->data;

	if (l->ps != NULL)
		request_failed(l->ps, "no %s within %llu s",
		    l->state == LK_CONNECTING ? "connection" : "answer",
		    (unsigned long long)(l->conf->timeout / 1000));
	else
		link_close(l);
}

/* Send the session's request on its ready connection. */
static void
send_request(struct psess *ps)
{
	struct plink *l = ps->link;
	int rc;

	pc_reader_init(&l->rd);
	l->state = LK_ASKING;
	channel_timer_start(&l->ch, on_request_timeout, ps->conf->timeout);
	if ((rc = channel_write(&l->ch, ps->req.p, ps->req.len, on_written)) == UV_ENOMEM)
		request_failed(ps, "out of memory");
	else if (rc != 0)
		request_failed(ps, "writing to the server: %s", uv_strerror(rc));
}

static void
on_connected(struct channel *ch, int status)
{
	struct plink *l = ch->data;
	struct psess *ps = l->ps;
	int rc;

	if (status == UV_ECANCELED)
		return;
	if (ps == NULL) {
		link_close(l);
		return;
	}
	if (status < 0) {
		request_failed(ps, "cannot connect: %s", uv_strerror(status));
		return;
	}
	if ((rc = channel_read_start(ch, on_read)) != 0) {
		request_failed(ps, "cannot read: %s", uv_strerror(rc));
		return;
	}
	l->born = uv_now(ch->timer.loop);
	l->state = LK_READY;
	send_request(ps);
}

/* Connect a link made by link_new(). */
static void
link_connect(struct plink *l)
{
	int rc;

	l->state = LK_CONNECTING;
	channel_timer_start(&l->ch, on_request_timeout, l->conf->timeout);
	if ((rc = channel_connect(&l->ch, on_connected)) != 0 && l->ps != NULL)
		request_failed(l->ps, "cannot connect: %s", uv_strerror(rc));
}

static void
on_retry_timer(struct channel *ch)
{
	struct plink *l = ch->data;

	if (l->ps == NULL)
		link_close(l);
	else
		link_connect(l);
}

/* A new connection for the session (connected now, or after retry_delay); false on failure. */
static bool
link_new(struct psess *ps, bool delay)
{
	uv_loop_t *loop = host->loop(ps->c);
	struct plink *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return false;
	l->conf = ps->conf;
	if (channel_init(&l->ch, loop, &ps->conf->addr, l, on_link_free) != 0)
		return false;
	l->ps = ps;
	ps->link = l;
	if (delay) {
		l->state = LK_RETRY_WAIT;
		channel_timer_start(&l->ch, on_retry_timer, ps->conf->retry_delay);
	} else {
		link_connect(l);
	}
	return true;
}

/* --- requests ---------------------------------------------------------------- */

/* The request for a step into ps->req; -1 out of memory. */
static int
encode_request(struct psess *ps, enum step st, const char *rcpt)
{
	struct pc_buf *b = &ps->req;
	const char *addr = host->get(ps->c, "client_addr");
	const char *name = host->get(ps->c, "client_name");
	const char *helo = host->get(ps->c, "helo");
	const char *bits = host->get(ps->c, "cipher_bits");
	const char *nrcpt = host->get(ps->c, "nrcpt");
	unsigned long count = nrcpt ? strtoul(nrcpt, NULL, 10) : 0;
	bool in_message = st >= ST_MAIL;
	bool late = st == ST_DATA || st == ST_EOD;
	char subject[600], issuer[600];
	int rc = 0;

	pc_buf_reset(b);
	rc |= pc_put(b, "request", "smtpd_access_policy");
	rc |= pc_put(b, "protocol_state", steps[st].state);
	rc |= pc_put(b, "protocol_name", fact(ps, "protocol_name"));
	rc |= pc_put(b, "client_address", addr);
	rc |= pc_put(b, "client_name", name ? name : "unknown");
	rc |= pc_put(b, "client_port", fact(ps, "client_port"));
	rc |= pc_put(b, "reverse_client_name", name ? name : "unknown");
	rc |= pc_put(b, "server_address", fact(ps, "daemon_addr"));
	rc |= pc_put(b, "server_port", fact(ps, "daemon_port"));
	rc |= pc_put(b, "helo_name", helo);
	rc |= pc_put(b, "sender", in_message ? ps->sender : "");
	/*
	 * At DATA and END-OF-MESSAGE only when there is one recipient, as
	 * Postfix.  The module remembers the recipients it did not refuse; a
	 * later filter or the backend may have refused some of them, and then
	 * which one the host accepted is unknown: none is sent, never a
	 * refused one.
	 */
	rc |= pc_put(b, "recipient", st == ST_RCPT ? rcpt : late && count == 1 &&
	    ps->nrcpts == 1 ? ps->rcpts[0] : "");
	rc |= pc_put_int(b, "recipient_count", late ? count : 0);
	rc |= pc_put(b, "queue_id", in_message ? ps->instance : "");
	rc |= pc_put(b, "instance", in_message ? ps->instance : "");
	rc |= pc_put_int(b, "size", in_message ? ps->size : 0);
	rc |= pc_put(b, "etrn_domain", "");
	rc |= pc_put(b, "stress", "");
	rc |= pc_put(b, "sasl_method", fact(ps, "auth_type"));
	rc |= pc_put(b, "sasl_username", fact(ps, "auth_authen"));
	rc |= pc_put(b, "sasl_sender", in_message && ps->sasl_sender ? ps->sasl_sender : "");
	rc |= pc_put(b, "ccert_subject", xtext(host->get(ps->c, "cert_subject"), subject,
	    sizeof(subject)));
	rc |= pc_put(b, "ccert_issuer", xtext(host->get(ps->c, "cert_issuer"), issuer,
	    sizeof(issuer)));
	rc |= pc_put(b, "ccert_fingerprint", "");
	rc |= pc_put(b, "ccert_pubkey_fingerprint", "");
	rc |= pc_put(b, "encryption_protocol", fact(ps, "tls_version"));
	rc |= pc_put(b, "encryption_cipher", fact(ps, "cipher"));
	rc |= pc_put(b, "encryption_keysize", bits ? bits : "0");
	rc |= pc_put(b, "policy_context", ps->conf->context);
	rc |= pc_end(b);
	return rc == 0 ? 0 : -1;
}

/* A cached answer to the request in ps->req, or NULL. */
static const char *
cache_find(const struct psess *ps)
{
	for (size_t i = 0; i < ps->ncache; i++)
		if (ps->cache[i].len == ps->req.len &&
		    memcmp(ps->cache[i].request, ps->req.p, ps->req.len) == 0)
			return ps->cache[i].action;
	return NULL;
}

/* Keep an answer for the request in ps->req (the oldest goes when full). */
static void
cache_keep(struct psess *ps, const char *action)
{
	struct cached *e = &ps->cache[ps->cache_next];
	char *req = malloc(ps->req.len), *act = strdup(action);

	if (req == NULL || act == NULL) {
		free(req);
		free(act);
		return;
	}
	free(e->request);
	free(e->action);
	memcpy(req, ps->req.p, ps->req.len);
	e->request = req;
	e->len = ps->req.len;
	e->action = act;
	ps->cache_next = (ps->cache_next + 1) % CACHE_SIZE;
	if (ps->ncache < CACHE_SIZE)
		ps->ncache++;
}

/* Ask the server (the request is in ps->req, the hook entered). */
static void
ask(struct psess *ps)
{
	struct plink *l;

	/* Worn out, or still owing the answer to a cancelled request: a new one. */
	if (ps->link != NULL && (link_worn(ps->link) || ps->link->state != LK_READY)) {
		link_close(ps->link);
		ps->link = NULL;
	}
	if (ps->link != NULL) {
		send_request(ps);
		return;
	}
	if ((l = pool_take(ps)) != NULL) {
		l->ps = ps;
		ps->link = l;
		ps->link_reused = true;
		send_request(ps);
		return;
	}
	ps->link_reused = false;
	if (!link_new(ps, false))
		request_failed(ps, "cannot make a socket");
}

/* --- answers ------------------------------------------------------------------ */

/* The name Postfix puts in its reply for this step: "<NAME>: CLASS rejected". */
static const char *
reply_name(struct psess *ps, enum step st, const char *rcpt, char *buf, size_t len)
{
	const char *name = host->get(ps->c, "client_name");

	switch (st) {
	case ST_CONNECT:
		snprintf(buf, len, "%s[%s]", name ? name : "unknown", fact(ps, "client_addr"));
		return buf;
	case ST_HELO:
		return fact(ps, "helo");
	case ST_MAIL:
		return ps->sender;
	case ST_RCPT:
		return rcpt;
	case ST_DATA:
		return "DATA";
	default:
		return "END-OF-MESSAGE";
	}
}

static enum sc_verdict apply_action(struct psess *ps, const char *action, bool is_default);
extern struct sc_filter smtpchain_filter;

/* The configured default_action for this request, after a failure or an unknown answer. */
static enum sc_verdict
apply_default(struct psess *ps)
{
	return apply_action(ps, ps->conf->default_action, true);
}

/*
 * What an answer means at the pending step (the current recipient is the
 * last one remembered); effects for the message are kept.
 */
static enum sc_verdict
apply_action(struct psess *ps, const char *action, bool is_default)
{
	enum step st = ps->pending;
	const char *rcpt = ps->nrcpts ? ps->rcpts[ps->nrcpts - 1] : "";
	struct effects *fx = st == ST_CONNECT ? &ps->session : st == ST_HELO ? &ps->helo :
	    &ps->msg;
	const char *srv = ps->conf->server;
	struct pc_action a;
	char namebuf[600], dsn[16], text[1024];
	const char *name = reply_name(ps, st, rcpt, namebuf, sizeof(namebuf));
	int code;

	switch (pc_action_parse(action, &a)) {
	case PCA_UNKNOWN:
		host->log(ps->c, SC_LOG_WARNING, "policy %s: %s at %s: \"%.200s\": %s; "
		    "default_action \"%s\"", srv, is_default ? "default_action" : "answer",
		    steps[st].state, action, a.bad, ps->conf->default_action);
		return is_default ? SC_TEMPFAIL : apply_default(ps);
	case PCA_OK:
	case PCA_DUNNO:
		if (a.bad != NULL)
			host->log(ps->c, SC_LOG_WARNING, "policy %s: \"%.200s\" at %s: %s; "
			    "ignored", srv, action, steps[st].state, a.bad);
		return SC_CONTINUE;
	case PCA_REJECT:
	case PCA_DEFER:
	case PCA_DEFER_IF_PERMIT:
		pc_reply(&a, name, steps[st].reply_class, &code, dsn, text, sizeof(text));
		host->set_reply(ps->c, code, dsn, text);
		return code >= 500 ? SC_REJECT : SC_TEMPFAIL;
	case PCA_DEFER_IF_REJECT:
		host->log(ps->c, SC_LOG_INFO, "policy %s: DEFER_IF_REJECT at %s: nothing to "
		    "defer (the backend's own refusals stand)", srv, steps[st].state);
		return SC_CONTINUE;
	case PCA_WARN:
	case PCA_INFO:
		host->log(ps->c, a.kind == PCA_WARN ? SC_LOG_WARNING : SC_LOG_INFO,
		    "policy %s: %s: <%s>: %s %s", srv, a.kind == PCA_WARN ? "warn" : "info",
		    name, steps[st].reply_class, a.text);
		return SC_CONTINUE;
	case PCA_FILTER:
		host->log(ps->c, SC_LOG_WARNING, "policy %s: FILTER %s at %s ignored: the "
		    "proxy has no queue and no transports", srv, a.text, steps[st].state);
		return SC_CONTINUE;
	case PCA_PREPEND:
		/* As Postfix: too late to add a header; warned, ignored. */
		if (st == ST_EOD) {
			host->log(ps->c, SC_LOG_WARNING, "policy %s: access table %s: action "
			    "PREPEND must be used before smtpd_end_of_data_restrictions",
			    srv, srv);
			return SC_CONTINUE;
		}
		if (list_add(&fx->prepend, &fx->nprepend, a.text) != 0)
			return SC_TEMPFAIL;
		return SC_CONTINUE;
	case PCA_BCC:
		if (list_add(&fx->bcc, &fx->nbcc, a.text) != 0)
			return SC_TEMPFAIL;
		host->log(ps->c, SC_LOG_INFO, "policy %s: <%s>: %s triggers BCC %s", srv, name,
		    steps[st].reply_class, a.text);
		return SC_CONTINUE;
	case PCA_REDIRECT:
		free(fx->redirect);
		if ((fx->redirect = strdup(a.text)) == NULL)
			return SC_TEMPFAIL;
		host->log(ps->c, SC_LOG_INFO, "policy %s: <%s>: %s triggers REDIRECT %s", srv,
		    name, steps[st].reply_class, a.text);
		return SC_CONTINUE;
	case PCA_HOLD:
		host->log(ps->c, SC_LOG_INFO, "policy %s: hold: <%s>: %s %s", srv, name,
		    steps[st].reply_class, *a.text ? a.text : "triggers HOLD action");
		return SC_QUARANTINE;
	case PCA_DISCARD:
		host->log(ps->c, SC_LOG_INFO, "policy %s: discard: <%s>: %s %s", srv, name,
		    steps[st].reply_class, *a.text ? a.text : "triggers DISCARD action");
		return SC_DISCARD;
	}
	return SC_CONTINUE;
}

static enum sc_verdict	message_end(struct psess *ps, enum sc_verdict v);

/* The step's verdict to the host; a refused recipient is forgotten. */
static void
step_done(struct psess *ps, enum sc_verdict v)
{
	if (ps->pending == ST_EOD)
		v = message_end(ps, v);
	if (ps->pending == ST_RCPT && (v == SC_REJECT || v == SC_TEMPFAIL) && ps->nrcpts > 0)
		free(ps->rcpts[--ps->nrcpts]);
	finish_hook(ps, v);
}

/* An answer for the pending step: the hook's verdict. */
static void
answered(struct psess *ps, const char *action, bool from_cache)
{
	host->log(ps->c, SC_LOG_DEBUG, "policy %s: %s: action=%s%s", ps->conf->server,
	    steps[ps->pending].state, action, from_cache ? " (cached)" : "");
	if (!from_cache)
		cache_keep(ps, action);
	if (ps->link != NULL && link_worn(ps->link)) {
		link_close(ps->link);
		ps->link = NULL;
	}
	step_done(ps, apply_action(ps, action, false));
}

/*
 * The request failed: close the connection; try again (at once when the
 * connection was an idle one used again, else after retry_delay) or give
 * up with default_action.
 */
static void
request_failed(struct psess *ps, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	bool reused = ps->link_reused;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (ps->link != NULL) {
		link_close(ps->link);
		ps->link = NULL;
	}
	ps->link_reused = false;
	if (!ps->waiting)
		return;
	if (++ps->tries < ps->conf->try_limit) {
		host->log(ps->c, reused ? SC_LOG_INFO : SC_LOG_WARNING, "policy %s: %s at %s "
		    "(attempt %u of %u); trying again", ps->conf->server, why,
		    steps[ps->pending].state, ps->tries, ps->conf->try_limit);
		if (link_new(ps, !reused))
			return;
		snprintf(why, sizeof(why), "cannot make a socket");
	}
	host->log(ps->c, SC_LOG_WARNING, "policy %s: %s at %s (attempt %u of %u); "
	    "default_action \"%s\"", ps->conf->server, why, steps[ps->pending].state,
	    ps->tries, ps->conf->try_limit, ps->conf->default_action);
	step_done(ps, apply_default(ps));
}

/* Ask about a step: the hook's verdict, or SC_PENDING. */
static enum sc_verdict
query(struct psess *ps, enum step st, const char *rcpt)
{
	const char *cached;

	if (ps->waiting) {
		host->log(ps->c, SC_LOG_ERROR, "policy %s: %s while %s waits; tempfail",
		    ps->conf->server, steps[st].state, steps[ps->pending].state);
		return SC_TEMPFAIL;
	}
	hook_enter(ps, st);
	ps->tries = 0;
	if (encode_request(ps, st, rcpt) != 0) {
		host->log(ps->c, SC_LOG_ERROR, "policy %s: out of memory", ps->conf->server);
		ps->waiting = false;
		(void)pending_return(&ps->answer);	/* nothing came: SC_PENDING */
		return SC_TEMPFAIL;
	}
	if ((cached = cache_find(ps)) != NULL)
		answered(ps, cached, true);
	else
		ask(ps);
	return hook_return(ps);
}

/* --- the message ------------------------------------------------------------- */

static void
message_reset(struct psess *ps)
{
	free(ps->sender);
	free(ps->sasl_sender);
	ps->sender = ps->sasl_sender = NULL;
	ps->size = 0;
	ps->counted = false;
	ps->instance[0] = '\0';
	list_free(&ps->rcpts, &ps->nrcpts);
	effects_free(&ps->msg);
}

/* Prepend, BCC and REDIRECT of a list of effects; -1 when the host refused one. */
static int
effects_apply(struct psess *ps, const struct effects *fx, size_t *at)
{
	int rc = 0;

	for (size_t i = 0; i < fx->nprepend; i++) {
		const char *p = fx->prepend[i], *colon = strchr(p, ':');
		char *name = strndup(p, (size_t)(colon - p));

		if (name == NULL || host->insert_header(ps->c, (*at)++, name, colon + 1) != 0) {
			host->log(ps->c, SC_LOG_WARNING, "policy %s: PREPEND %.200s refused by "
			    "the host", ps->conf->server, p);
			rc = -1;
		}
		free(name);
	}
	if (fx->redirect != NULL) {
		for (size_t i = 0; i < ps->nrcpts; i++)
			(void)host->del_rcpt(ps->c, ps->rcpts[i]);	/* refused ones are not there */
		if (host->add_rcpt(ps->c, fx->redirect, NULL) != 0)
			rc = -1;
	}
	for (size_t i = 0; i < fx->nbcc; i++)
		if (host->add_rcpt(ps->c, fx->bcc[i], NULL) != 0)
			rc = -1;
	return rc;
}

/* At end of message: make the message's changes; the verdict stands. */
static enum sc_verdict
message_end(struct psess *ps, enum sc_verdict v)
{
	size_t at = 0;

	if (v != SC_CONTINUE && v != SC_ACCEPT && v != SC_QUARANTINE)
		return v;
	if (effects_apply(ps, &ps->session, &at) != 0 || effects_apply(ps, &ps->helo, &at) != 0 ||
	    effects_apply(ps, &ps->msg, &at) != 0)
		host->log(ps->c, SC_LOG_WARNING, "policy %s: a change was refused by the host",
		    ps->conf->server);
	return v;
}

/* --- hooks ------------------------------------------------------------------- */

static struct psess *
session_of(struct sc_ctx *c)
{
	return *host->state(c);
}

static bool
asks_at(const struct psess *ps, enum step st)
{
	return (ps->conf->steps & (1u << st)) != 0;
}

static enum sc_verdict
p_connect(struct sc_ctx *c)
{
	void **slot = host->state(c);
	struct psess *ps;

	if (*slot != NULL)
		return SC_CONTINUE;
	if ((ps = calloc(1, sizeof(*ps))) == NULL) {
		host->log(c, SC_LOG_ERROR, "policy: out of memory");
		return SC_TEMPFAIL;
	}
	ps->c = c;
	ps->conf = host->instance(c);
	*slot = ps;
	return asks_at(ps, ST_CONNECT) ? query(ps, ST_CONNECT, NULL) : SC_CONTINUE;
}

static enum sc_verdict
p_helo(struct sc_ctx *c, const char *name)
{
	struct psess *ps = session_of(c);

	(void)name;
	if (ps == NULL || !asks_at(ps, ST_HELO))
		return SC_CONTINUE;
	effects_free(&ps->helo);	/* what the previous HELO/EHLO added */
	return query(ps, ST_HELO, NULL);
}

/* The SIZE= parameter of MAIL, or 0. */
static unsigned long long
size_param(const char *params)
{
	for (const char *p = params; p && *p; p += strcspn(p, " ")) {
		p += strspn(p, " ");
		if (strncasecmp(p, "SIZE=", 5) == 0)
			return strtoull(p + 5, NULL, 10);
	}
	return 0;
}

static enum sc_verdict
p_mail(struct sc_ctx *c, const char *addr, const char *params)
{
	struct psess *ps = session_of(c);
	const char *i, *author;

	if (ps == NULL)
		return SC_CONTINUE;
	message_reset(ps);
	ps->msgno++;
	/* The host's message id (the log's msgid=), or the same made here by an older host. */
	if ((i = host->get(c, "queue_id")) != NULL)
		snprintf(ps->instance, sizeof(ps->instance), "%s", i);
	else
		snprintf(ps->instance, sizeof(ps->instance), "%s.%u", fact(ps, "session_id"),
		    ps->msgno);
	ps->sender = address_dup(addr);
	author = host->get(c, "auth_author");
	ps->sasl_sender = author ? strdup(author) : NULL;
	ps->size = size_param(params);
	if (ps->sender == NULL) {
		host->log(c, SC_LOG_ERROR, "policy: out of memory");
		return SC_TEMPFAIL;
	}
	return asks_at(ps, ST_MAIL) ? query(ps, ST_MAIL, NULL) : SC_CONTINUE;
}

static enum sc_verdict
p_rcpt(struct sc_ctx *c, const char *addr, const char *params)
{
	struct psess *ps = session_of(c);
	char *a;

	(void)params;
	if (ps == NULL)
		return SC_CONTINUE;
	if ((a = address_dup(addr)) == NULL)
		return SC_TEMPFAIL;
	if (ps->nrcpts >= MAX_RCPTS) {		/* keep the newest as the current one */
		free(ps->rcpts[ps->nrcpts - 1]);
		ps->rcpts[ps->nrcpts - 1] = a;
	} else if (list_add(&ps->rcpts, &ps->nrcpts, a) != 0) {
		free(a);
		return SC_TEMPFAIL;
	} else {
		free(a);
	}
	return asks_at(ps, ST_RCPT) ? query(ps, ST_RCPT, ps->rcpts[ps->nrcpts - 1]) :
	    SC_CONTINUE;
}

static enum sc_verdict
p_data(struct sc_ctx *c)
{
	struct psess *ps = session_of(c);

	if (ps == NULL || !asks_at(ps, ST_DATA))
		return SC_CONTINUE;
	return query(ps, ST_DATA, NULL);
}

/* Counting the message's size for END-OF-MESSAGE (headers as they are). */
static enum sc_verdict
p_header(struct sc_ctx *c, const char *name, const char *value)
{
	struct psess *ps = session_of(c);

	if (ps != NULL && asks_at(ps, ST_EOD)) {
		if (!ps->counted)
			ps->size = 0;
		ps->counted = true;
		ps->size += strlen(name) + 1 + strlen(value) + 2;
	}
	return SC_CONTINUE;
}

static enum sc_verdict
p_body(struct sc_ctx *c, const unsigned char *p, size_t n)
{
	struct psess *ps = session_of(c);

	(void)p;
	if (ps != NULL && asks_at(ps, ST_EOD)) {
		if (!ps->counted)
			ps->size = 0;
		ps->counted = true;
		ps->size += n;
	}
	return SC_CONTINUE;
}

static enum sc_verdict
p_eom(struct sc_ctx *c)
{
	struct psess *ps = session_of(c);

	if (ps == NULL)
		return SC_CONTINUE;
	if (asks_at(ps, ST_EOD))
		return query(ps, ST_EOD, NULL);	/* message_end() after the answer */
	return message_end(ps, SC_CONTINUE);
}

/* The message ended without our verdict: a pending answer is dropped. */
static void
p_abort(struct sc_ctx *c)
{
	struct psess *ps = session_of(c);

	if (ps == NULL)
		return;
	if (ps->waiting) {
		ps->waiting = false;
		if (ps->link != NULL && ps->link->state == LK_ASKING)
			ps->link->discard = true;
		else if (ps->link != NULL) {	/* connecting or waiting to retry */
			link_close(ps->link);
			ps->link = NULL;
		}
	}
	message_reset(ps);
}

static void
p_close(struct sc_ctx *c)
{
	void **slot = host->state(c);
	struct psess *ps = *slot;

	if (ps == NULL)
		return;
	*slot = NULL;
	ps->waiting = false;
	if (ps->link != NULL && ps->link->state != LK_READY) {
		link_close(ps->link);	/* a request under way: the answer would be stale */
		ps->link = NULL;
	}
	link_release(ps);
	message_reset(ps);
	effects_free(&ps->session);
	effects_free(&ps->helo);
	for (size_t i = 0; i < ps->ncache; i++) {
		free(ps->cache[i].request);
		free(ps->cache[i].action);
	}
	pc_buf_free(&ps->req);
	free(ps);
}

/* --- options ------------------------------------------------------------------- */

/* server: "inet:HOST:PORT", "inet:[ADDR]:PORT" (v6 too), "unix:/path"; numeric addresses. */
static int
parse_server(struct policy_conf *conf, const struct sc_options *o, const char *s)
{
	char hostpart[128];
	const char *rest, *colon;
	int port;

	if (strncmp(s, "unix:", 5) == 0) {
		conf->addr.kind = CHANNEL_UNIX;
		conf->addr.path = s + 5;
		if (conf->addr.path[0] != '/')
			return host->opt_error(o, "server", "\"%s\": expected an absolute path", s);
		return 0;
	}
	if (strncmp(s, "inet:", 5) != 0)
		return host->opt_error(o, "server", "\"%s\": expected inet:HOST:PORT or "
		    "unix:/path", s);
	rest = s + 5;
	if ((colon = strrchr(rest, ':')) == NULL || (port = channel_parse_port(colon + 1)) < 0)
		return host->opt_error(o, "server", "\"%s\": no port, or a bad one", s);
	snprintf(hostpart, sizeof(hostpart), "%.*s", (int)(colon - rest), rest);
	if (hostpart[0] == '[' && hostpart[strlen(hostpart) - 1] == ']') {
		memmove(hostpart, hostpart + 1, strlen(hostpart));
		hostpart[strlen(hostpart) - 1] = '\0';
	}
	conf->addr.kind = CHANNEL_INET;
	if (uv_ip4_addr(hostpart, port, (struct sockaddr_in *)&conf->addr.addr) != 0 &&
	    uv_ip6_addr(hostpart, port, (struct sockaddr_in6 *)&conf->addr.addr) != 0)
		return host->opt_error(o, "server", "\"%s\": \"%s\" is not a numeric address",
		    s, hostpart);
	return 0;
}

/* An integer option in lo..hi (dflt when absent), scaled by mult. */
static int
opt_range(const struct sc_options *o, const char *key, long long lo, long long hi,
    long long dflt, uint64_t mult, uint64_t *out)
{
	long long v = dflt;
	int rc;

	if ((rc = host->opt_int(o, key, &v)) == -1)
		return -1;
	if (v < lo || v > hi)
		return host->opt_error(o, key, "%lld is out of range (%lld..%lld)", v, lo, hi);
	*out = (uint64_t)v * mult;
	return 0;
}

static int
p_init(const struct sc_host *h, const struct sc_options *o, void **instance,
    char *err, size_t errlen)
{
	struct policy_conf *conf;
	const char *const *list;
	struct pc_action a;
	uint64_t v;
	size_t n;
	bool eod;
	int rc;

	host = h;
	if ((conf = calloc(1, sizeof(*conf))) == NULL) {
		snprintf(err, errlen, "policy: out of memory");
		return -1;
	}
	if ((rc = h->opt_string(o, "server", &conf->server)) == 1) {
		snprintf(err, errlen, "policy: missing key \"server\"");
		goto fail;
	}
	if (rc == -1 || parse_server(conf, o, conf->server) == -1)
		goto fail;
	conf->steps = 1u << ST_RCPT;
	if ((rc = h->opt_list(o, "steps", &list, &n)) == -1)
		goto fail;
	if (rc == 0) {
		conf->steps = 0;
		for (size_t i = 0; i < n; i++) {
			size_t st;

			for (st = 0; st < ST_MAX; st++)
				if (strcmp(list[i], steps[st].option) == 0)
					break;
			if (st == ST_MAX) {
				h->opt_error(o, "steps", "\"%s\": expected connect, helo, mail, "
				    "rcpt, data or end_of_data", list[i]);
				goto fail;
			}
			conf->steps |= 1u << st;
		}
	}
	conf->default_action = DEFAULT_ACTION;
	if ((rc = h->opt_string(o, "default_action", &conf->default_action)) == -1)
		goto fail;
	if (strcasecmp(conf->default_action, "tempfail") == 0)
		conf->default_action = DEFAULT_ACTION;
	else if (strcasecmp(conf->default_action, "accept") == 0)
		conf->default_action = "DUNNO";
	if (pc_action_parse(conf->default_action, &a) == PCA_UNKNOWN || a.bad != NULL) {
		h->opt_error(o, "default_action", "\"%s\": %s", conf->default_action,
		    a.bad ? a.bad : "not an action");
		goto fail;
	}
	conf->context = "";
	if (h->opt_string(o, "policy_context", &conf->context) == -1)
		goto fail;
	if (opt_range(o, "timeout", 1, MAX_SECONDS, DEFAULT_TIMEOUT, 1000, &conf->timeout) ||
	    opt_range(o, "retry_delay", 0, MAX_SECONDS, DEFAULT_RETRY_DELAY, 1000,
	    &conf->retry_delay) ||
	    opt_range(o, "max_idle", 1, MAX_SECONDS, DEFAULT_MAX_IDLE, 1000, &conf->max_idle) ||
	    opt_range(o, "max_ttl", 1, MAX_SECONDS, DEFAULT_MAX_TTL, 1000, &conf->max_ttl))
		goto fail;
	if (opt_range(o, "try_limit", 1, 10, DEFAULT_TRY_LIMIT, 1, &v))
		goto fail;
	conf->try_limit = (unsigned)v;
	if (opt_range(o, "request_limit", 0, 1000000000, 0, 1, &v))
		goto fail;
	conf->request_limit = (unsigned)v;
	if (opt_range(o, "idle_connections", 0, MAX_IDLE_CONNECTIONS, DEFAULT_IDLE, 1, &v))
		goto fail;
	conf->pool.max = (unsigned)v;
	/*
	 * Read by the host after init, per block: headers and body are read
	 * only to count END-OF-MESSAGE's size (the host reads the held body
	 * for any module with a body hook).
	 */
	eod = (conf->steps & (1u << ST_EOD)) != 0;
	smtpchain_filter.needs = SC_NEED_HEADERS | (eod ? SC_NEED_BODY : 0);
	smtpchain_filter.header = eod ? p_header : NULL;
	smtpchain_filter.body = eod ? p_body : NULL;
	*instance = conf;
	return 0;
fail:
	free(conf);
	return -1;
}

static void
p_fini(void *instance)
{
	struct policy_conf *conf = instance;

	if (conf == NULL)
		return;
	/* The daemon closed every handle and ran its loop before unloading: memory only. */
	channel_pool_free(&conf->pool);
	free(conf);
}

/*
 * Headers: PREPEND is made at end of message.  p_init sets `needs` and the
 * header and body hooks for each block (the host reads them after init()).
 */
struct sc_filter smtpchain_filter = {
	.abi = SC_FILTER_ABI,
	.size = sizeof(struct sc_filter),
	.name = "policy",
	.needs = SC_NEED_HEADERS,
	.init = p_init,
	.fini = p_fini,
	.connect = p_connect,
	.helo = p_helo,
	.mail = p_mail,
	.rcpt = p_rcpt,
	.data = p_data,
	.eom = p_eom,
	.abort = p_abort,
	.close = p_close,
};
