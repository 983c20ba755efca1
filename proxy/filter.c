/*
 * filter.c - the filter chain: runs the modules' hooks for one session, in
 * chain order, and implements the host side of the module ABI (struct
 * sc_host: facts, replies, message changes, resume).
 *
 * One step runs at a time per session (struct filter_run).  For each module
 * the hook of the step is called; for the held message (FILTER_MESSAGE) a
 * module gets all its headers, eoh, its body in chunks and eom before the
 * next module starts, so each module sees the changes of the ones before
 * it, as milters do behind Postfix.  A command the proxy does not know is
 * a step of its own (FILTER_UNKNOWN, the modules' unknown hook, called
 * only when the module's descriptor is recent enough to have it).
 * SC_PENDING suspends the run until the
 * module calls resume(); the session is then woken up through the callback
 * it gave filter_session_open().
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filter.h"
#include "log.h"
#include "module.h"
#include "msgstore.h"
#include "replies.h"
#include "session.h"

#define BODY_CHUNK	65536

static const char *const step_names[FILTER_STEP_MAX] = {
	"connect", "helo", "mail", "rcpt", "data", "message", "unknown command",
};

static void *global_loop;
static unsigned char body_chunk[BODY_CHUNK];	/* valid during one body hook call */

static void	chain_run(struct session *s);
static bool	chain_verdict(struct session *s, enum sc_verdict v);

/* The chain of the session's server. */
static const struct filter_chain *
chain_of(const struct session *s)
{
	return &s->srv->chain;
}

/* The module a context belongs to. */
static const struct filter_module *
module_of(const struct sc_ctx *c)
{
	return &chain_of(c->s)->v[c->idx];
}

/* Remember the libuv loop for host->loop_global(). */
void
filter_set_loop(void *loop)
{
	global_loop = loop;
}

/* One context per module for a new session; resumed wakes it after a pending module. */
void
filter_session_open(struct session *s, void (*resumed)(struct session *s))
{
	size_t n = chain_of(s)->n;

	s->filter_resumed = resumed;
	if (n == 0)
		return;
	s->fctx = xcalloc(n, sizeof(*s->fctx));
	for (size_t i = 0; i < n; i++) {
		s->fctx[i].s = s;
		s->fctx[i].idx = i;
	}
}

/* Forget the current run (its arguments), e.g. when the session ends. */
static void
run_clear(struct filter_run *r)
{
	free(r->arg1);
	free(r->arg2);
	memset(r, 0, sizeof(*r));
}

/* abort() for every module that saw part of a message but not its end. */
void
filter_message_end(struct session *s)
{
	const struct filter_chain *ch = chain_of(s);

	size_t pending = SIZE_MAX;

	if (s->fctx == NULL)
		return;
	if (s->run.active && FILTER_STEP_IN_MESSAGE(s->run.step)) {
		if (s->run.waiting)
			pending = s->run.idx;	/* its abort() cancels the pending hook */
		run_clear(&s->run);
	}
	for (size_t i = 0; i < ch->n; i++) {
		struct sc_ctx *c = &s->fctx[i];

		if (c->in_message && (!c->got_eom || i == pending) && ch->v[i].desc->abort)
			ch->v[i].desc->abort(c);
		c->in_message = c->got_eom = c->replacing_body = false;
	}
	s->filter_skip_message = false;
	s->msg_outcome = s->session_outcome;
}

/* Session end: abort() what is open, then close() every module. */
void
filter_session_close(struct session *s)
{
	const struct filter_chain *ch = chain_of(s);

	if (s->fctx == NULL)
		return;
	filter_message_end(s);
	run_clear(&s->run);
	for (size_t i = 0; i < ch->n; i++)
		if (ch->v[i].desc->close)
			ch->v[i].desc->close(&s->fctx[i]);
	free(s->fctx);
	s->fctx = NULL;
}

/* The default reply for a refusal at a step (replies.c). */
static const char *
default_reply(enum filter_step step, enum sc_verdict v)
{
	bool temp = v == SC_TEMPFAIL;
	enum reply_id id;

	switch (step) {
	case FILTER_CONNECT:
		id = temp ? REPLY_FILTER_TEMP_CONNECT : REPLY_FILTER_DENY_CONNECT;
		break;
	case FILTER_RCPT:
		id = temp ? REPLY_FILTER_TEMP_RCPT : REPLY_FILTER_DENY_RCPT;
		break;
	case FILTER_MESSAGE:
		id = temp ? REPLY_FILTER_TEMP_MESSAGE : REPLY_FILTER_DENY_MESSAGE;
		break;
	case FILTER_UNKNOWN:
		id = temp ? REPLY_FILTER_TEMP : REPLY_FILTER_DENY_UNKNOWN;
		break;
	default:
		id = temp ? REPLY_FILTER_TEMP : REPLY_FILTER_DENY;
		break;
	}
	return reply_line(id, NULL, NULL, 0);
}

/* The step has its answer. */
static void
run_finish(struct session *s, enum filter_answer answer)
{
	s->run.finished = true;
	s->run.answer = answer;
}

/* Apply a module's verdict for the current step; true when the step is decided. */
static bool
chain_verdict(struct session *s, enum sc_verdict v)
{
	struct filter_run *r = &s->run;
	const struct filter_module *m = &chain_of(s)->v[r->idx];

	metrics_filter_verdict(m->name, (int)v);
	switch (v) {
	case SC_CONTINUE:
		return false;
	case SC_ACCEPT:
		if (r->step <= FILTER_HELO)
			s->filter_skip_session = true;
		else if (r->step != FILTER_UNKNOWN)	/* there: this command only */
			s->filter_skip_message = true;
		log_id(s->id, LOG_LVL_DEBUG, "filter %s: accept at %s", m->name, step_names[r->step]);
		r->verdict = v;
		r->verdict_idx = r->idx;
		run_finish(s, FILTER_GO);
		return true;
	case SC_REJECT:
	case SC_TEMPFAIL: {
		char want = v == SC_REJECT ? '5' : '4';

		if (r->reply[0] != want) {
			if (r->reply[0])
				log_id(s->id, LOG_LVL_WARNING, "filter %s: reply class does not match "
				    "its verdict; using the default", m->name);
			snprintf(r->reply, sizeof(r->reply), "%s", default_reply(r->step, v));
		}
		r->verdict = v;
		r->verdict_idx = r->idx;
		log_id(s->id, LOG_LVL_INFO, "filter %s: %s at %s: %s", m->name,
		    v == SC_REJECT ? "reject" : "tempfail", step_names[r->step], r->reply);
		run_finish(s, FILTER_REFUSE);
		return true;
	}
	case SC_DISCARD:
	case SC_QUARANTINE:
		if (r->step == FILTER_UNKNOWN && !s->tx.in_mail) {
			log_id(s->id, LOG_LVL_INFO, "filter %s: %s at %s outside a transaction; "
			    "ignored", m->name, v == SC_DISCARD ? "discard" : "quarantine",
			    step_names[r->step]);
			return false;
		}
		/* The message's outcome; a later refusal of this step still counts. */
		if (s->msg_outcome == SC_CONTINUE || v == SC_DISCARD) {
			s->msg_outcome = v;
			s->msg_outcome_by = r->idx;
		}
		if (r->step <= FILTER_HELO)
			s->session_outcome = s->msg_outcome;
		log_id(s->id, LOG_LVL_INFO, "filter %s: %s at %s", m->name,
		    v == SC_DISCARD ? "discard" : "quarantine", step_names[r->step]);
		if (r->step == FILTER_MESSAGE) {
			r->verdict = v;
			r->verdict_idx = r->idx;
			run_finish(s, FILTER_GO);
			return true;
		}
		return false;
	case SC_PENDING:
	default:
		log_id(s->id, LOG_LVL_WARNING, "filter %s: invalid verdict %d at %s; tempfail",
		    m->name, (int)v, step_names[r->step]);
		r->reply[0] = '\0';
		return chain_verdict(s, SC_TEMPFAIL);
	}
}

/* Call a hook with resume() from inside it folded in. */
#define CALL_HOOK(r, call) ({						\
	enum sc_verdict v_;						\
	(r)->in_hook = true;						\
	v_ = (call);							\
	(r)->in_hook = false;						\
	if (v_ == SC_PENDING && (r)->resumed_early) {			\
		v_ = (r)->early_verdict;				\
		(r)->resumed_early = false;				\
	}								\
	v_;								\
})

static int changed(struct sc_ctx *, int, const char *, const char *);

/* Finish a replace_body() that an eom began. */
static void
commit_body(struct session *s, struct sc_ctx *c)
{
	uint64_t before;

	if (!c->replacing_body)
		return;
	c->replacing_body = false;
	before = msgstore_changes(s->tx.store);
	if (msgstore_body_replace_commit(s->tx.store) != 0)
		log_id(s->id, LOG_LVL_WARNING, "filter %s: replacing the body: %s",
		    module_of(c)->name, strerror(errno));
	else
		changed(c, msgstore_changes(s->tx.store) != before, "replace body", NULL);
}

/*
 * The held message through one module, from where it stopped: its headers,
 * eoh, body chunks, eom.  Returns the first verdict that is not CONTINUE,
 * SC_PENDING, or SC_CONTINUE when the module is done with the message.
 */
static enum sc_verdict
message_through(struct session *s, struct sc_ctx *c)
{
	struct filter_run *r = &s->run;
	const struct sc_filter *d = module_of(c)->desc;
	enum sc_verdict v;
	ssize_t n;

	c->in_message = true;
	for (;;) {
		switch (r->stage) {
		case STAGE_HEADERS:
			if (d->header && r->header < msgstore_nheaders(s->tx.store)) {
				const struct msg_header *h = msgstore_header(s->tx.store, r->header++);

				if (h == NULL)		/* a spilled header section could not be read */
					goto io_error;
				v = CALL_HOOK(r, d->header(c, h->name, h->value));
				if (v != SC_CONTINUE)
					return v;
				continue;
			}
			r->stage = STAGE_EOH;
			continue;
		case STAGE_EOH:
			r->stage = STAGE_BODY;
			if (d->body && msgstore_body_rewind(s->tx.store) != 0)
				goto io_error;
			if (d->eoh && (v = CALL_HOOK(r, d->eoh(c))) != SC_CONTINUE)
				return v;
			continue;
		case STAGE_BODY:
			if (d->body) {
				if ((n = msgstore_body_read(s->tx.store, body_chunk, sizeof(body_chunk))) < 0)
					goto io_error;
				if (n > 0) {
					v = CALL_HOOK(r, d->body(c, body_chunk, (size_t)n));
					if (v != SC_CONTINUE)
						return v;
					continue;
				}
			}
			r->stage = STAGE_EOM;
			continue;
		case STAGE_EOM:
			r->stage = STAGE_DONE;
			c->got_eom = true;
			if (d->eom) {
				v = CALL_HOOK(r, d->eom(c));
				if (v != SC_PENDING)
					commit_body(s, c);
				return v;
			}
			return SC_CONTINUE;
		case STAGE_DONE:
			return SC_CONTINUE;
		}
	}
io_error:
	log_id(s->id, LOG_LVL_WARNING, "reading the held message: %s", strerror(errno));
	snprintf(r->reply, sizeof(r->reply), "%s", reply_line(REPLY_FILTER_IO_ERROR, NULL, NULL, 0));
	return SC_TEMPFAIL;
}

/* One module's hook for the current step. */
static enum sc_verdict
call_module(struct session *s, size_t idx)
{
	struct filter_run *r = &s->run;
	struct sc_ctx *c = &s->fctx[idx];
	const struct sc_filter *d = chain_of(s)->v[idx].desc;

	if (FILTER_STEP_IN_MESSAGE(r->step))
		c->in_message = true;
	switch (r->step) {
	case FILTER_CONNECT:
		return d->connect ? CALL_HOOK(r, d->connect(c)) : SC_CONTINUE;
	case FILTER_HELO:
		return d->helo ? CALL_HOOK(r, d->helo(c, r->arg1)) : SC_CONTINUE;
	case FILTER_MAIL:
		return d->mail ? CALL_HOOK(r, d->mail(c, r->arg1, r->arg2)) : SC_CONTINUE;
	case FILTER_RCPT:
		return d->rcpt ? CALL_HOOK(r, d->rcpt(c, r->arg1, r->arg2)) : SC_CONTINUE;
	case FILTER_DATA:
		return d->data ? CALL_HOOK(r, d->data(c)) : SC_CONTINUE;
	case FILTER_MESSAGE:
		return message_through(s, c);
	case FILTER_UNKNOWN:
		return SC_FILTER_HAS(d, unknown) && d->unknown ?
		    CALL_HOOK(r, d->unknown(c, r->arg1)) : SC_CONTINUE;
	default:
		log_panic("%s: step %d", s->id, (int)r->step);
	}
}

/* Run modules from r->idx until the step is decided or a module is pending. */
static void
chain_run(struct session *s)
{
	struct filter_run *r = &s->run;
	const struct filter_chain *ch = chain_of(s);

	while (!r->finished && r->idx < ch->n) {
		enum sc_verdict v = call_module(s, r->idx);

		if (v == SC_PENDING) {
			r->waiting = true;
			return;
		}
		if (chain_verdict(s, v))
			return;
		r->idx++;
		r->stage = STAGE_HEADERS;
		r->header = 0;
	}
	if (!r->finished)
		run_finish(s, FILTER_GO);
}

/* Run one step, or collect the answer of a run that has finished. */
enum filter_answer
filter_phase(struct session *s, enum filter_step step, const char *a1, const char *a2,
    const char **reply)
{
	struct filter_run *r = &s->run;
	enum filter_answer answer;

	*reply = NULL;
	if (chain_of(s)->n == 0 || s->filter_skip_session ||
	    (FILTER_STEP_IN_MESSAGE(step) && s->filter_skip_message))
		return FILTER_GO;
	if (r->active && r->step != step)
		log_panic("%s: step %s asked while %s runs", s->id, step_names[step],
		    step_names[r->step]);
	if (!r->active) {
		run_clear(r);
		r->active = true;
		r->step = step;
		r->arg1 = a1 ? xstrdup(a1) : NULL;
		r->arg2 = a2 ? xstrdup(a2) : NULL;
		chain_run(s);
	}
	if (r->waiting)
		return FILTER_WAIT;
	answer = r->answer;
	r->active = false;
	*reply = r->reply;
	return answer;
}

/* The module that decided the last step, for the log. */
const char *
filter_decider(const struct session *s)
{
	const struct filter_chain *ch = chain_of(s);

	if (s->run.verdict == SC_CONTINUE || s->run.verdict_idx >= ch->n)
		return "";
	return ch->v[s->run.verdict_idx].name;
}

/* --- the host table ---------------------------------------------------- */

static void *
host_instance(struct sc_ctx *c)
{
	return module_of(c)->instance;
}

static void **
host_state(struct sc_ctx *c)
{
	return &c->state;
}

/*
 * The address the client connected to ({daemon_addr}, {daemon_port}): the
 * destination a PROXY header named (session.c sets s->local), else ours,
 * asked of the socket the first time a filter wants it (not in every
 * session).  NULL when unknown.
 */
static const struct sockaddr_storage *
daemon_sockaddr(struct session *s)
{
	int sslen = sizeof(s->local);

	if (s->local.ss_family == AF_UNSPEC &&
	    uv_tcp_getsockname(&s->client.tcp, (struct sockaddr *)&s->local, &sslen) != 0)
		s->local.ss_family = AF_UNSPEC;
	return s->local.ss_family == AF_INET || s->local.ss_family == AF_INET6 ?
	    &s->local : NULL;
}

/* That address, numeric. */
static const char *
daemon_addr(struct session *s, char *buf, size_t len)
{
	const struct sockaddr_storage *ss = daemon_sockaddr(s);

	if (ss == NULL)
		return NULL;
	if (ss->ss_family == AF_INET6)
		uv_ip6_name((const struct sockaddr_in6 *)ss, buf, len);
	else
		uv_ip4_name((const struct sockaddr_in *)ss, buf, len);
	return buf;
}

/* Its port, in decimal. */
static const char *
daemon_port(struct session *s, char *buf, size_t len)
{
	const struct sockaddr_storage *ss = daemon_sockaddr(s);

	if (ss == NULL)
		return NULL;
	snprintf(buf, len, "%u", ntohs(ss->ss_family == AF_INET6 ?
	    ((const struct sockaddr_in6 *)ss)->sin6_port :
	    ((const struct sockaddr_in *)ss)->sin_port));
	return buf;
}

/*
 * MAIL's AUTH= parameter (RFC 4954), xtext decoded, when the client sent
 * one other than <> ({auth_author}, as Postfix's sasl_sender); NULL else.
 */
static const char *
mail_auth_param(const char *params, char *buf, size_t len)
{
	const char *p = params;
	size_t o = 0;

	while (p != NULL && *p != '\0' && strncasecmp(p, "AUTH=", 5) != 0)
		if ((p = strchr(p, ' ')) != NULL)
			p++;
	if (p == NULL || *p == '\0' || strncmp(p + 5, "<>", 2) == 0)
		return NULL;
	for (p += 5; *p != '\0' && *p != ' ' && o + 1 < len; p++) {
		if (*p == '+' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
			char hex[3] = { p[1], p[2], '\0' };

			buf[o++] = (char)strtoul(hex, NULL, 16);
			p += 2;
		} else {
			buf[o++] = *p;
		}
	}
	buf[o] = '\0';
	return o > 0 ? buf : NULL;
}

/* Session facts by name, for modules (and milter macros). */
static const char *
host_get(struct sc_ctx *c, const char *name)
{
	struct session *s = c->s;

	if (strcmp(name, "session_id") == 0)
		return s->id;
	if (strcmp(name, "queue_id") == 0)
		return s->tx.msgid[0] ? s->tx.msgid : NULL;
	if (strcmp(name, "client_addr") == 0)
		return s->caddr;
	if (strcmp(name, "client_port") == 0) {
		snprintf(c->scratch, sizeof(c->scratch), "%u", s->cport);
		return c->scratch;
	}
	if (strcmp(name, "client_name") == 0)
		return s->backend.cname[0] ? s->backend.cname : NULL;
	if (strcmp(name, "helo") == 0)
		return s->helo[0] ? s->helo : NULL;
	if (strcmp(name, "protocol_name") == 0)
		return s->ehlo_seen ? "ESMTP" : "SMTP";
	if (strcmp(name, "mail_addr") == 0)
		return s->run.step == FILTER_MAIL && s->run.active ? s->run.arg1 :
		    s->tx.in_mail || s->tx.from[0] ? s->tx.from : NULL;
	if (strcmp(name, "rcpt_addr") == 0)
		return s->run.active && s->run.step == FILTER_RCPT ? s->run.arg1 : NULL;
	if (strcmp(name, "hostname") == 0)
		return s->cfg->hostname;
	if (strcmp(name, "daemon_addr") == 0)
		return daemon_addr(s, c->scratch, sizeof(c->scratch));
	if (strcmp(name, "daemon_port") == 0)
		return daemon_port(s, c->scratch, sizeof(c->scratch));
	if (s->client.tls && tls_conn_established(s->client.tls)) {
		if (strcmp(name, "tls_version") == 0)
			return tls_conn_version(s->client.tls);
		if (strcmp(name, "cipher") == 0)
			return tls_conn_cipher(s->client.tls);
		if (strcmp(name, "cipher_bits") == 0) {
			snprintf(c->scratch, sizeof(c->scratch), "%d", tls_conn_cipher_bits(s->client.tls));
			return c->scratch;
		}
		if (strcmp(name, "verify") == 0)
			return tls_conn_peer_verify(s->client.tls);
		/* As Postfix: the client certificate's CNs only when it verified. */
		if (strcmp(name, "cert_subject") == 0 || strcmp(name, "cert_issuer") == 0)
			return strcmp(tls_conn_peer_verify(s->client.tls), "OK") != 0 ? NULL :
			    name[5] == 's' ? tls_conn_peer_subject(s->client.tls) :
			    tls_conn_peer_issuer(s->client.tls);
	}
	if (s->auth_done && strcmp(name, "auth_authen") == 0)
		return s->auth_user[0] ? s->auth_user : NULL;
	if (s->auth_done && strcmp(name, "auth_type") == 0)
		return s->auth_mech;
	if (s->auth_done && strcmp(name, "auth_author") == 0 && s->run.active &&
	    s->run.step == FILTER_MAIL)
		return mail_auth_param(s->run.arg2, c->value, sizeof(c->value));
	if (strcmp(name, "nrcpt") == 0) {
		snprintf(c->scratch, sizeof(c->scratch), "%u", s->tx.rcpt_ok);
		return c->scratch;
	}
	return NULL;
}

static void __attribute__((format(printf, 3, 4)))
host_log(struct sc_ctx *c, int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (level < SC_LOG_ERROR || level > SC_LOG_DEBUG)
		level = SC_LOG_INFO;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_id(c->s->id, (enum log_level)level, "filter %s: %s", module_of(c)->name, line);
}

/* Whether s is "D.DDD.DDD" with the given class digit. */
static bool
valid_enhanced(const char *s, char cls)
{
	int parts = 0, digits = 0;

	if (s[0] != cls || s[1] != '.')
		return false;
	for (const char *p = s + 2; ; p++) {
		if (*p >= '0' && *p <= '9' && digits < 3) {
			digits++;
		} else if ((*p == '.' || *p == '\0') && digits > 0) {
			parts++;
			digits = 0;
			if (*p == '\0')
				break;
		} else {
			return false;
		}
	}
	return parts == 2;
}

/* A module's reply for its refusal: checked, built as a (multi-line) reply. */
static int
host_set_reply(struct sc_ctx *c, int code, const char *enhanced, const char *text)
{
	struct filter_run *r = &c->s->run;
	char cls = (char)('0' + code / 100);
	size_t o = 0;
	const char *line = text ? text : "";

	if (code < 400 || code > 599 || (enhanced && !valid_enhanced(enhanced, cls)))
		return -1;
	for (const char *p = line; *p; p++)
		if ((unsigned char)*p < 0x20 && *p != '\n' && *p != '\t')
			return -1;
	for (;;) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		int n = snprintf(r->reply + o, sizeof(r->reply) - o, "%s%d%c%s%s%.*s",
		    o ? "\r\n" : "", code, nl ? '-' : ' ', enhanced ? enhanced : "",
		    enhanced ? " " : "", (int)len, line);

		if (n < 0 || (size_t)n >= sizeof(r->reply) - o) {
			r->reply[0] = '\0';
			return -1;
		}
		o += (size_t)n;
		if (!nl)
			break;
		line = nl + 1;
	}
	return 0;
}

/* Whether message changes are allowed now: in this module's eom. */
static bool
in_eom(struct sc_ctx *c)
{
	struct filter_run *r = &c->s->run;

	return r->active && r->step == FILTER_MESSAGE && r->idx == c->idx &&
	    r->stage == STAGE_DONE && c->s->tx.store != NULL;
}

/*
 * Log a message change at debug level (a refusal as a warning); rc is -1
 * (refused), 0 (done, but the message is as it was: a header set to the
 * value it had, a missing one deleted...) or 1 (the message changed: the
 * summary line says modified=yes).  The module gets 0 or -1.
 */
static int
changed(struct sc_ctx *c, int rc, const char *what, const char *arg)
{
	log_id(c->s->id, rc >= 0 ? LOG_LVL_DEBUG : LOG_LVL_WARNING, "filter %s: %s %s%s",
	    module_of(c)->name, what, arg ? arg : "",
	    rc > 0 ? "" : rc == 0 ? " (no change)" : " (refused)");
	if (rc > 0)
		c->s->tx.modified = true;
	return rc < 0 ? -1 : 0;
}

/* A msgstore change's result for changed(): -1, or whether the count moved. */
static int
store_result(struct sc_ctx *c, uint64_t before, int rc)
{
	if (rc != 0)
		return -1;
	return msgstore_changes(c->s->tx.store) != before;
}

static int
host_add_header(struct sc_ctx *c, const char *name, const char *value)
{
	uint64_t before;

	if (!in_eom(c) || !name || !value)
		return -1;
	before = msgstore_changes(c->s->tx.store);
	return changed(c, store_result(c, before, msgstore_add_header(c->s->tx.store, name, value)),
	    "add header", name);
}

static int
host_insert_header(struct sc_ctx *c, size_t index, const char *name, const char *value)
{
	uint64_t before;

	if (!in_eom(c) || !name || !value)
		return -1;
	before = msgstore_changes(c->s->tx.store);
	return changed(c, store_result(c, before,
	    msgstore_insert_header(c->s->tx.store, index, name, value)), "insert header", name);
}

static int
host_change_header(struct sc_ctx *c, const char *name, size_t occurrence, const char *value)
{
	uint64_t before;

	if (!in_eom(c) || !name || occurrence == 0)
		return -1;
	before = msgstore_changes(c->s->tx.store);
	return changed(c, store_result(c, before,
	    msgstore_change_header(c->s->tx.store, name, occurrence, value)),
	    value ? "change header" : "delete header", name);
}

static int
host_change_header_at(struct sc_ctx *c, size_t index, const char *name, const char *value)
{
	uint64_t before;

	if (!in_eom(c) || !name)
		return -1;
	before = msgstore_changes(c->s->tx.store);
	return changed(c, store_result(c, before,
	    msgstore_change_header_at(c->s->tx.store, index, name, value)),
	    value ? "change header" : "delete header", name);
}

/* The new body is committed (and logged as a change) when the module's eom ends. */
static int
host_replace_body(struct sc_ctx *c, const void *p, size_t n)
{
	if (!in_eom(c))
		return -1;
	if (!c->replacing_body) {
		if (msgstore_body_replace_begin(c->s->tx.store) != 0)
			return -1;
		c->replacing_body = true;
	}
	return msgstore_body_replace_append(c->s->tx.store, p, n);
}

/* An address for the envelope: no brackets, no controls, no spaces. */
static bool
valid_envelope_addr(const char *addr)
{
	if (addr == NULL || strlen(addr) > 512)
		return false;
	for (const char *p = addr; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == 0x7f)
			return false;
	return true;
}

/* ESMTP parameters: printable ASCII, single spaces. */
static bool
valid_params(const char *params)
{
	if (params == NULL)
		return true;
	if (strlen(params) > 512)
		return false;
	for (const char *p = params; *p; p++)
		if ((unsigned char)*p < ' ' || (unsigned char)*p > '~')
			return false;
	return true;
}

static int
host_change_from(struct sc_ctx *c, const char *addr, const char *params)
{
	if (!in_eom(c) || !valid_envelope_addr(addr) || !valid_params(params))
		return -1;
	return changed(c, txn_change_from(&c->s->tx, addr, params), "change sender to", addr);
}

static int
host_add_rcpt(struct sc_ctx *c, const char *addr, const char *params)
{
	if (!in_eom(c) || !valid_envelope_addr(addr) || !valid_params(params))
		return -1;
	return changed(c, txn_add_rcpt(&c->s->tx, addr, params), "add recipient", addr);
}

static int
host_del_rcpt(struct sc_ctx *c, const char *addr)
{
	if (!in_eom(c) || addr == NULL)
		return -1;
	return changed(c, txn_del_rcpt(&c->s->tx, addr), "delete recipient", addr);
}

/* A pending hook's answer: go on with the run, then wake the session up. */
static void
host_resume(struct sc_ctx *c, enum sc_verdict v)
{
	struct session *s = c->s;
	struct filter_run *r = &s->run;

	if (!r->active || r->idx != c->idx || r->finished) {
		log_id(s->id, LOG_LVL_WARNING, "filter %s: resume() with nothing pending; ignored",
		    module_of(c)->name);
		return;
	}
	if (r->in_hook) {		/* answered before the hook even returned */
		r->resumed_early = true;
		r->early_verdict = v;
		return;
	}
	if (!r->waiting) {
		log_id(s->id, LOG_LVL_WARNING, "filter %s: resume() twice; ignored",
		    module_of(c)->name);
		return;
	}
	r->waiting = false;
	if (r->step == FILTER_MESSAGE && r->stage == STAGE_DONE)
		commit_body(s, c);
	if (v == SC_PENDING)
		v = SC_TEMPFAIL;
	if (!chain_verdict(s, v)) {
		/* CONTINUE: the same module goes on with the message, or the next one. */
		if (r->step != FILTER_MESSAGE || r->stage == STAGE_DONE) {
			r->idx++;
			r->stage = STAGE_HEADERS;
			r->header = 0;
		}
		chain_run(s);
	}
	if (!r->waiting)
		s->filter_resumed(s);
}

static void *
host_loop(struct sc_ctx *c)
{
	return c->s->srv->loop;
}

static void *
host_loop_global(void)
{
	return global_loop;
}

static const struct sc_host host_table = {
	.abi = SC_FILTER_ABI,
	.size = sizeof(struct sc_host),
	.opt_string = module_opt_string,
	.opt_int = module_opt_int,
	.opt_bool = module_opt_bool,
	.opt_list = module_opt_list,
	.opt_error = module_opt_error,
	.instance = host_instance,
	.state = host_state,
	.get = host_get,
	.log = host_log,
	.set_reply = host_set_reply,
	.add_header = host_add_header,
	.insert_header = host_insert_header,
	.change_header = host_change_header,
	.replace_body = host_replace_body,
	.change_from = host_change_from,
	.add_rcpt = host_add_rcpt,
	.del_rcpt = host_del_rcpt,
	.resume = host_resume,
	.loop = host_loop,
	.loop_global = host_loop_global,
	.change_header_at = host_change_header_at,
};

const struct sc_host *
filter_host(void)
{
	return &host_table;
}
