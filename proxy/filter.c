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
 *
 * Works on a struct filter_session (filter.h), which the session embeds:
 * the run's state, and the struct filter_env the session hands over at
 * filter_session_open() (its id, the client's facts, its connection, its
 * transaction).  Knows nothing else of the session and never calls it but
 * through env.resumed.  Calls down only: module.c, msgstore.c, txn.c,
 * tls.c, metrics.c, replies.c, log.c.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clientfacts.h"
#include "conn.h"
#include "filter.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "msgstore.h"
#include "replies.h"
#include "txn.h"

#define BODY_CHUNK	65536

static const char *const step_names[FILTER_STEP_MAX] = {
	"connect", "helo", "mail", "rcpt", "data", "message", "unknown command",
};

static void *global_loop;
static unsigned char body_chunk[BODY_CHUNK];	/* valid during one body hook call */

static void	chain_run(struct filter_session *fs);
static bool	chain_verdict(struct filter_session *fs, enum sc_verdict v);

/* The chain the session runs (its server's). */
static const struct filter_chain *
chain_of(const struct filter_session *fs)
{
	return fs->env.chain;
}

/* The module a context belongs to. */
static const struct filter_module *
module_of(const struct sc_ctx *c)
{
	return &chain_of(c->fs)->v[c->idx];
}

/* Remember the libuv loop for host->loop_global(). */
void
filter_set_loop(void *loop)
{
	global_loop = loop;
}

/* One context per module for a new session; env->resumed wakes it after a pending module. */
void
filter_session_open(struct filter_session *fs, const struct filter_env *env)
{
	size_t n = env->chain->n;

	fs->env = *env;
	if (n == 0)
		return;
	fs->ctx = xcalloc(n, sizeof(*fs->ctx));
	for (size_t i = 0; i < n; i++) {
		fs->ctx[i].fs = fs;
		fs->ctx[i].idx = i;
	}
}

/* Forget the current run (its arguments), e.g. when the session ends. */
static void
run_clear(struct filter_run *r)
{
	char *reply = r->reply;

	free(r->arg1);
	free(r->arg2);
	memset(r, 0, sizeof(*r));
	r->reply = reply;	/* the buffer stays for the session, emptied */
	if (reply != NULL)
		reply[0] = '\0';
}

/* The run's reply buffer, FILTER_REPLY_MAX bytes: allocated when first written. */
static char *
run_reply(struct filter_run *r)
{
	if (r->reply == NULL)
		r->reply = xcalloc(1, FILTER_REPLY_MAX);
	return r->reply;
}

/* abort() for every module that saw part of a message but not its end. */
void
filter_message_end(struct filter_session *fs)
{
	const struct filter_chain *ch = chain_of(fs);

	size_t pending = SIZE_MAX;

	if (fs->ctx == NULL)
		return;
	if (fs->run.active && FILTER_STEP_IN_MESSAGE(fs->run.step)) {
		if (fs->run.waiting)
			pending = fs->run.idx;	/* its abort() cancels the pending hook */
		run_clear(&fs->run);
	}
	for (size_t i = 0; i < ch->n; i++) {
		struct sc_ctx *c = &fs->ctx[i];

		if (c->in_message && (!c->got_eom || i == pending) && ch->v[i].desc->abort)
			ch->v[i].desc->abort(c);
		c->in_message = c->got_eom = c->replacing_body = false;
	}
	fs->skip_message = false;
	fs->msg_outcome = fs->session_outcome;
}

/* Session end: abort() what is open, then close() every module. */
void
filter_session_close(struct filter_session *fs)
{
	const struct filter_chain *ch = chain_of(fs);

	if (fs->ctx == NULL)
		goto out;
	filter_message_end(fs);
	run_clear(&fs->run);
	for (size_t i = 0; i < ch->n; i++)
		if (ch->v[i].desc->close)
			ch->v[i].desc->close(&fs->ctx[i]);
	free(fs->ctx);
	fs->ctx = NULL;
out:
	free(fs->run.reply);
	fs->run.reply = NULL;
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
run_finish(struct filter_session *fs, enum filter_answer answer)
{
	fs->run.finished = true;
	fs->run.answer = answer;
}

/* Apply a module's verdict for the current step; true when the step is decided. */
static bool
chain_verdict(struct filter_session *fs, enum sc_verdict v)
{
	struct filter_run *r = &fs->run;
	const struct filter_module *m = &chain_of(fs)->v[r->idx];

	metrics_filter_verdict(m->name, (int)v);
	switch (v) {
	case SC_CONTINUE:
		return false;
	case SC_ACCEPT:
		if (r->step <= FILTER_HELO)
			fs->skip_session = true;
		else if (r->step != FILTER_UNKNOWN)	/* there: this command only */
			fs->skip_message = true;
		log_id(fs->env.id, LOG_LVL_DEBUG, "filter %s: accept at %s", m->name, step_names[r->step]);
		r->verdict = v;
		r->verdict_idx = r->idx;
		run_finish(fs, FILTER_GO);
		return true;
	case SC_REJECT:
	case SC_TEMPFAIL: {
		char want = v == SC_REJECT ? '5' : '4';

		if (run_reply(r)[0] != want) {
			if (r->reply[0])
				log_id(fs->env.id, LOG_LVL_WARNING, "filter %s: reply class does not match "
				    "its verdict; using the default", m->name);
			snprintf(r->reply, FILTER_REPLY_MAX, "%s", default_reply(r->step, v));
		}
		r->verdict = v;
		r->verdict_idx = r->idx;
		log_id(fs->env.id, LOG_LVL_INFO, "filter %s: %s at %s: %s", m->name,
		    v == SC_REJECT ? "reject" : "tempfail", step_names[r->step], r->reply);
		run_finish(fs, FILTER_REFUSE);
		return true;
	}
	case SC_DISCARD:
	case SC_QUARANTINE:
		if (r->step == FILTER_UNKNOWN && !fs->env.tx->in_mail) {
			log_id(fs->env.id, LOG_LVL_INFO, "filter %s: %s at %s outside a transaction; "
			    "ignored", m->name, v == SC_DISCARD ? "discard" : "quarantine",
			    step_names[r->step]);
			return false;
		}
		/* The message's outcome; a later refusal of this step still counts. */
		if (fs->msg_outcome == SC_CONTINUE || v == SC_DISCARD) {
			fs->msg_outcome = v;
			fs->msg_outcome_by = r->idx;
		}
		if (r->step <= FILTER_HELO)
			fs->session_outcome = fs->msg_outcome;
		log_id(fs->env.id, LOG_LVL_INFO, "filter %s: %s at %s", m->name,
		    v == SC_DISCARD ? "discard" : "quarantine", step_names[r->step]);
		if (r->step == FILTER_MESSAGE) {
			r->verdict = v;
			r->verdict_idx = r->idx;
			run_finish(fs, FILTER_GO);
			return true;
		}
		return false;
	case SC_PENDING:
	default:
		log_id(fs->env.id, LOG_LVL_WARNING, "filter %s: invalid verdict %d at %s; tempfail",
		    m->name, (int)v, step_names[r->step]);
		if (r->reply != NULL)
			r->reply[0] = '\0';
		return chain_verdict(fs, SC_TEMPFAIL);
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
commit_body(struct filter_session *fs, struct sc_ctx *c)
{
	uint64_t before;

	if (!c->replacing_body)
		return;
	c->replacing_body = false;
	before = msgstore_changes(fs->env.tx->store);
	if (msgstore_body_replace_commit(fs->env.tx->store) != 0)
		log_id(fs->env.id, LOG_LVL_WARNING, "filter %s: replacing the body: %s",
		    module_of(c)->name, strerror(errno));
	else
		changed(c, msgstore_changes(fs->env.tx->store) != before, "replace body", NULL);
}

/*
 * The held message through one module, from where it stopped: its headers,
 * eoh, body chunks, eom.  Returns the first verdict that is not CONTINUE,
 * SC_PENDING, or SC_CONTINUE when the module is done with the message.
 */
static enum sc_verdict
message_through(struct filter_session *fs, struct sc_ctx *c)
{
	struct filter_run *r = &fs->run;
	const struct sc_filter *d = module_of(c)->desc;
	enum sc_verdict v;
	ssize_t n;

	c->in_message = true;
	for (;;) {
		switch (r->stage) {
		case STAGE_HEADERS:
			if (d->header && r->header < msgstore_nheaders(fs->env.tx->store)) {
				const struct msg_header *h = msgstore_header(fs->env.tx->store, r->header++);

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
			if (d->body && msgstore_body_rewind(fs->env.tx->store) != 0)
				goto io_error;
			if (d->eoh && (v = CALL_HOOK(r, d->eoh(c))) != SC_CONTINUE)
				return v;
			continue;
		case STAGE_BODY:
			if (d->body) {
				if ((n = msgstore_body_read(fs->env.tx->store, body_chunk, sizeof(body_chunk))) < 0)
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
					commit_body(fs, c);
				return v;
			}
			return SC_CONTINUE;
		case STAGE_DONE:
			return SC_CONTINUE;
		}
	}
io_error:
	log_id(fs->env.id, LOG_LVL_WARNING, "reading the held message: %s", strerror(errno));
	snprintf(run_reply(r), FILTER_REPLY_MAX, "%s", reply_line(REPLY_FILTER_IO_ERROR, NULL, NULL, 0));
	return SC_TEMPFAIL;
}

/* One module's hook for the current step. */
static enum sc_verdict
call_module(struct filter_session *fs, size_t idx)
{
	struct filter_run *r = &fs->run;
	struct sc_ctx *c = &fs->ctx[idx];
	const struct sc_filter *d = chain_of(fs)->v[idx].desc;

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
		return message_through(fs, c);
	case FILTER_UNKNOWN:
		return SC_FILTER_HAS(d, unknown) && d->unknown ?
		    CALL_HOOK(r, d->unknown(c, r->arg1)) : SC_CONTINUE;
	default:
		log_panic("%s: step %d", fs->env.id, (int)r->step);
	}
}

/* Run modules from r->idx until the step is decided or a module is pending. */
static void
chain_run(struct filter_session *fs)
{
	struct filter_run *r = &fs->run;
	const struct filter_chain *ch = chain_of(fs);

	while (!r->finished && r->idx < ch->n) {
		enum sc_verdict v = call_module(fs, r->idx);

		if (v == SC_PENDING) {
			r->waiting = true;
			return;
		}
		if (chain_verdict(fs, v))
			return;
		r->idx++;
		r->stage = STAGE_HEADERS;
		r->header = 0;
	}
	if (!r->finished)
		run_finish(fs, FILTER_GO);
}

/* Run one step, or collect the answer of a run that has finished. */
enum filter_answer
filter_phase(struct filter_session *fs, enum filter_step step, const char *a1, const char *a2,
    const char **reply)
{
	struct filter_run *r = &fs->run;
	enum filter_answer answer;

	*reply = NULL;
	if (chain_of(fs)->n == 0 || fs->skip_session ||
	    (FILTER_STEP_IN_MESSAGE(step) && fs->skip_message))
		return FILTER_GO;
	if (r->active && r->step != step)
		log_panic("%s: step %s asked while %s runs", fs->env.id, step_names[step],
		    step_names[r->step]);
	if (!r->active) {
		run_clear(r);
		r->active = true;
		r->step = step;
		r->arg1 = a1 ? xstrdup(a1) : NULL;
		r->arg2 = a2 ? xstrdup(a2) : NULL;
		chain_run(fs);
	}
	if (r->waiting)
		return FILTER_WAIT;
	answer = r->answer;
	r->active = false;
	*reply = r->reply != NULL ? r->reply : "";
	return answer;
}

/*
 * Whether the coming message is held for the chain rather than streamed: a
 * module has message hooks, or a discard/quarantine outcome is pending,
 * unless a module accepted the session or the message.
 */
bool
filter_holds_message(const struct filter_session *fs)
{
	if (chain_of(fs)->n == 0 || fs->skip_session || fs->skip_message)
		return false;
	return chain_of(fs)->holds_message || fs->msg_outcome != SC_CONTINUE;
}

/* The module that decided the last step, for the log. */
const char *
filter_decider(const struct filter_session *fs)
{
	const struct filter_chain *ch = chain_of(fs);

	if (fs->run.verdict == SC_CONTINUE || fs->run.verdict_idx >= ch->n)
		return "";
	return ch->v[fs->run.verdict_idx].name;
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
 * destination a PROXY header named (the session sets client->local), else
 * ours, asked of the socket the first time a filter wants it (not in every
 * session).  NULL when unknown.
 */
static const struct sockaddr_storage *
daemon_sockaddr(struct filter_session *fs)
{
	struct sockaddr_storage *local = &fs->env.client->local;
	int sslen = sizeof(*local);

	if (local->ss_family == AF_UNSPEC &&
	    uv_tcp_getsockname(&fs->env.conn->tcp, (struct sockaddr *)local, &sslen) != 0)
		local->ss_family = AF_UNSPEC;
	return local->ss_family == AF_INET || local->ss_family == AF_INET6 ? local : NULL;
}

/* That address, numeric. */
static const char *
daemon_addr(struct filter_session *fs, char *buf, size_t len)
{
	const struct sockaddr_storage *ss = daemon_sockaddr(fs);

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
daemon_port(struct filter_session *fs, char *buf, size_t len)
{
	const struct sockaddr_storage *ss = daemon_sockaddr(fs);

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
	struct filter_session *fs = c->fs;

	if (strcmp(name, "session_id") == 0)
		return fs->env.id;
	if (strcmp(name, "queue_id") == 0)
		return fs->env.tx->msgid[0] ? fs->env.tx->msgid : NULL;
	if (strcmp(name, "client_addr") == 0)
		return fs->env.client->addr;
	if (strcmp(name, "client_port") == 0) {
		snprintf(c->scratch, sizeof(c->scratch), "%u", fs->env.client->port);
		return c->scratch;
	}
	if (strcmp(name, "client_name") == 0)
		return fs->env.client_name[0] ? fs->env.client_name : NULL;
	if (strcmp(name, "helo") == 0)
		return fs->env.client->helo[0] ? fs->env.client->helo : NULL;
	if (strcmp(name, "protocol_name") == 0)
		return fs->env.client->ehlo_seen ? "ESMTP" : "SMTP";
	if (strcmp(name, "mail_addr") == 0)
		return fs->run.step == FILTER_MAIL && fs->run.active ? fs->run.arg1 :
		    fs->env.tx->in_mail || fs->env.tx->from[0] ? fs->env.tx->from : NULL;
	if (strcmp(name, "rcpt_addr") == 0)
		return fs->run.active && fs->run.step == FILTER_RCPT ? fs->run.arg1 : NULL;
	if (strcmp(name, "hostname") == 0)
		return fs->env.hostname;
	if (strcmp(name, "daemon_addr") == 0)
		return daemon_addr(fs, c->scratch, sizeof(c->scratch));
	if (strcmp(name, "daemon_port") == 0)
		return daemon_port(fs, c->scratch, sizeof(c->scratch));
	if (fs->env.conn->tls && tls_conn_established(fs->env.conn->tls)) {
		if (strcmp(name, "tls_version") == 0)
			return tls_conn_version(fs->env.conn->tls);
		if (strcmp(name, "cipher") == 0)
			return tls_conn_cipher(fs->env.conn->tls);
		if (strcmp(name, "cipher_bits") == 0) {
			snprintf(c->scratch, sizeof(c->scratch), "%d", tls_conn_cipher_bits(fs->env.conn->tls));
			return c->scratch;
		}
		if (strcmp(name, "verify") == 0)
			return tls_conn_peer_verify(fs->env.conn->tls);
		/* As Postfix: the client certificate's CNs only when it verified. */
		if (strcmp(name, "cert_subject") == 0 || strcmp(name, "cert_issuer") == 0)
			return strcmp(tls_conn_peer_verify(fs->env.conn->tls), "OK") != 0 ? NULL :
			    name[5] == 's' ? tls_conn_peer_subject(fs->env.conn->tls) :
			    tls_conn_peer_issuer(fs->env.conn->tls);
	}
	if (fs->env.client->auth_done && strcmp(name, "auth_authen") == 0)
		return fs->env.client->auth_user[0] ? fs->env.client->auth_user : NULL;
	if (fs->env.client->auth_done && strcmp(name, "auth_type") == 0)
		return fs->env.client->auth_mech;
	if (fs->env.client->auth_done && strcmp(name, "auth_author") == 0 && fs->run.active &&
	    fs->run.step == FILTER_MAIL)
		return mail_auth_param(fs->run.arg2, c->value, sizeof(c->value));
	if (strcmp(name, "nrcpt") == 0) {
		snprintf(c->scratch, sizeof(c->scratch), "%u", fs->env.tx->rcpt_ok);
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
	log_id(c->fs->env.id, (enum log_level)level, "filter %s: %s", module_of(c)->name, line);
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
	struct filter_run *r = &c->fs->run;
	char cls = (char)('0' + code / 100);
	size_t o = 0;
	const char *line = text ? text : "";
	char *buf;

	if (code < 400 || code > 599 || (enhanced && !valid_enhanced(enhanced, cls)))
		return -1;
	for (const char *p = line; *p; p++)
		if ((unsigned char)*p < 0x20 && *p != '\n' && *p != '\t')
			return -1;
	buf = run_reply(r);
	for (;;) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		int n = snprintf(buf + o, FILTER_REPLY_MAX - o, "%s%d%c%s%s%.*s",
		    o ? "\r\n" : "", code, nl ? '-' : ' ', enhanced ? enhanced : "",
		    enhanced ? " " : "", (int)len, line);

		if (n < 0 || (size_t)n >= FILTER_REPLY_MAX - o) {
			buf[0] = '\0';
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
	struct filter_run *r = &c->fs->run;

	return r->active && r->step == FILTER_MESSAGE && r->idx == c->idx &&
	    r->stage == STAGE_DONE && c->fs->env.tx->store != NULL;
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
	log_id(c->fs->env.id, rc >= 0 ? LOG_LVL_DEBUG : LOG_LVL_WARNING, "filter %s: %s %s%s",
	    module_of(c)->name, what, arg ? arg : "",
	    rc > 0 ? "" : rc == 0 ? " (no change)" : " (refused)");
	if (rc > 0)
		c->fs->env.tx->modified = true;
	return rc < 0 ? -1 : 0;
}

/* A msgstore change's result for changed(): -1, or whether the count moved. */
static int
store_result(struct sc_ctx *c, uint64_t before, int rc)
{
	if (rc != 0)
		return -1;
	return msgstore_changes(c->fs->env.tx->store) != before;
}

static int
host_add_header(struct sc_ctx *c, const char *name, const char *value)
{
	uint64_t before;

	if (!in_eom(c) || !name || !value)
		return -1;
	before = msgstore_changes(c->fs->env.tx->store);
	return changed(c, store_result(c, before, msgstore_add_header(c->fs->env.tx->store, name, value)),
	    "add header", name);
}

static int
host_insert_header(struct sc_ctx *c, size_t index, const char *name, const char *value)
{
	uint64_t before;

	if (!in_eom(c) || !name || !value)
		return -1;
	before = msgstore_changes(c->fs->env.tx->store);
	return changed(c, store_result(c, before,
	    msgstore_insert_header(c->fs->env.tx->store, index, name, value)), "insert header", name);
}

static int
host_change_header(struct sc_ctx *c, const char *name, size_t occurrence, const char *value)
{
	uint64_t before;

	if (!in_eom(c) || !name || occurrence == 0)
		return -1;
	before = msgstore_changes(c->fs->env.tx->store);
	return changed(c, store_result(c, before,
	    msgstore_change_header(c->fs->env.tx->store, name, occurrence, value)),
	    value ? "change header" : "delete header", name);
}

static int
host_change_header_at(struct sc_ctx *c, size_t index, const char *name, const char *value)
{
	uint64_t before;

	if (!in_eom(c) || !name)
		return -1;
	before = msgstore_changes(c->fs->env.tx->store);
	return changed(c, store_result(c, before,
	    msgstore_change_header_at(c->fs->env.tx->store, index, name, value)),
	    value ? "change header" : "delete header", name);
}

/* The new body is committed (and logged as a change) when the module's eom ends. */
static int
host_replace_body(struct sc_ctx *c, const void *p, size_t n)
{
	if (!in_eom(c))
		return -1;
	if (!c->replacing_body) {
		if (msgstore_body_replace_begin(c->fs->env.tx->store) != 0)
			return -1;
		c->replacing_body = true;
	}
	return msgstore_body_replace_append(c->fs->env.tx->store, p, n);
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
	return changed(c, txn_change_from(c->fs->env.tx, addr, params), "change sender to", addr);
}

static int
host_add_rcpt(struct sc_ctx *c, const char *addr, const char *params)
{
	if (!in_eom(c) || !valid_envelope_addr(addr) || !valid_params(params))
		return -1;
	return changed(c, txn_add_rcpt(c->fs->env.tx, addr, params), "add recipient", addr);
}

static int
host_del_rcpt(struct sc_ctx *c, const char *addr)
{
	if (!in_eom(c) || addr == NULL)
		return -1;
	return changed(c, txn_del_rcpt(c->fs->env.tx, addr), "delete recipient", addr);
}

/* A pending hook's answer: go on with the run, then wake the session up. */
static void
host_resume(struct sc_ctx *c, enum sc_verdict v)
{
	struct filter_session *fs = c->fs;
	struct filter_run *r = &fs->run;

	if (!r->active || r->idx != c->idx || r->finished) {
		log_id(fs->env.id, LOG_LVL_WARNING, "filter %s: resume() with nothing pending; ignored",
		    module_of(c)->name);
		return;
	}
	if (r->in_hook) {		/* answered before the hook even returned */
		r->resumed_early = true;
		r->early_verdict = v;
		return;
	}
	if (!r->waiting) {
		log_id(fs->env.id, LOG_LVL_WARNING, "filter %s: resume() twice; ignored",
		    module_of(c)->name);
		return;
	}
	r->waiting = false;
	if (r->step == FILTER_MESSAGE && r->stage == STAGE_DONE)
		commit_body(fs, c);
	if (v == SC_PENDING)
		v = SC_TEMPFAIL;
	if (!chain_verdict(fs, v)) {
		/* CONTINUE: the same module goes on with the message, or the next one. */
		if (r->step != FILTER_MESSAGE || r->stage == STAGE_DONE) {
			r->idx++;
			r->stage = STAGE_HEADERS;
			r->header = 0;
		}
		chain_run(fs);
	}
	if (!r->waiting)
		fs->env.resumed(fs->env.owner);
}

static void *
host_loop(struct sc_ctx *c)
{
	return c->fs->env.loop;
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
