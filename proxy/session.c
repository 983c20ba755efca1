/*
 * session.c - the client side of one proxied SMTP connection.
 *
 * A session reads the client's commands, checks each against what the client
 * was offered, and relays it to the backend (backend.c), or answers it
 * itself when the proxy must refuse it.  Replies go back strictly in command
 * order: a local reply waits until every relayed command before it has its
 * answer.  Commands are pipelined to the backend only when it offers
 * PIPELINING and RFC 2920 allows the command inside a group.
 *
 * States (enum session_state) change only in session_set_state(), which logs
 * every transition at debug level:
 *
 *   CONNECT --greeting--> COMMAND --354--> DATA --CRLF.CRLF--> COMMAND
 *                            |  \--BDAT n--> BDAT --n octets--> COMMAND
 *                            |            DATA --over size--> DISCARD --end--> CLOSING
 *                            \--QUIT, 421, timeout, bad data--> CLOSING
 *
 * The DATA stream is checked by dotstream.c before a byte of it goes on: a
 * bare CR or LF ends the session with 521 and the backend connection is
 * dropped without an end of data, so the backend never sees a message
 * boundary the proxy did not see.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>

#include "log.h"
#include "session.h"

static const char *const state_names[SS_STATE_MAX] = {
	"CONNECT", "COMMAND", "DATA", "BDAT", "DISCARD", "CLOSING",
};

/* What processing one unit of client input led to. */
enum step_result {
	STEP_NEXT,		/* consumed; look at the next input */
	STEP_STOP,		/* wait: more input, a backend reply, or output room */
};

static void	client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void	client_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void	client_written(struct outq *q, int status);
static void	client_timeout(uv_timer_t *t);
static void	handle_closed(uv_handle_t *h);
static void	reset_transaction(struct session *s);
static void	reset_bdat(struct session *s);
static void	local_reply(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Log a line prefixed with the session id. */
void
session_log(struct session *s, enum log_level lvl, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	if (!log_enabled(lvl))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(lvl, "%s: %s", s->id, line);
}

/*
 * Make bytes printable for a log line: control bytes and 8-bit bytes become
 * \r, \n, \t or \xHH; out is always NUL-terminated.
 */
static void
printable(const char *p, size_t n, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c >= 0x20 && c < 0x7f && c != '\\') {
			out[o++] = (char)c;
			continue;
		}
		out[o++] = '\\';
		switch (c) {
		case '\r': out[o++] = 'r'; break;
		case '\n': out[o++] = 'n'; break;
		case '\t': out[o++] = 't'; break;
		case '\\': out[o++] = '\\'; break;
		default:
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
}

/*
 * Transcript: each line of p (a command or a whole reply) with a direction
 * mark: c>p client to proxy, p>b proxy to backend, b>p, p>c.  The final CRLF
 * is not shown; an inner bare CR or LF is.
 */
void
session_transcript(struct session *s, const char *dir, const char *p, size_t n)
{
	char line[1200];

	if (!s->srv->transcript)
		return;
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t len = nl ? (size_t)(nl - p) + 1 : n;
		size_t shown = len;

		if (shown >= 2 && p[shown - 2] == '\r' && p[shown - 1] == '\n')
			shown -= 2;
		printable(p, shown, line, sizeof(line));
		log_msg(LOG_LVL_INFO, "%s: %s %s", s->id, dir, line);
		p += len;
		n -= len;
	}
}

/* The only place the client-side state changes. */
void
session_set_state(struct session *s, enum session_state st, const char *why)
{
	if (s->state == st)
		return;
	session_log(s, LOG_LVL_DEBUG, "state %s -> %s (%s)", state_names[s->state],
	    state_names[st], why);
	s->state = st;
}

/* Send bytes to the client as they are (a relayed or rewritten reply). */
void
session_reply(struct session *s, const char *p, size_t n)
{
	if (s->closing || s->client_gone)
		return;
	session_transcript(s, "p>c", p, n);
	outq_append(&s->cout, p, n);
}

/* Send one reply line of our own. */
void
session_replyf(struct session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	memcpy(line + n, "\r\n", 2);
	session_reply(s, line, (size_t)n + 2);
}

/*
 * A reply of our own, in order: sent now when no relayed command is waiting
 * for its answer, else held (one slot) and sent when the last one arrives.
 * Callers check s->pcount first where they can simply wait instead.
 */
static void
local_reply(struct session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (s->pcount == 0) {
		session_replyf(s, "%s", line);
		return;
	}
	if (s->deferred)
		log_panic("%s: two deferred replies", s->id);
	s->deferred = xstrdup(line);
}

/* Send the held local reply once every relayed command before it is answered. */
static void
flush_deferred(struct session *s)
{
	if (s->deferred && s->pcount == 0) {
		session_replyf(s, "%s", s->deferred);
		free(s->deferred);
		s->deferred = NULL;
	}
}

/*
 * Reply, then close both sides: the last word of a session (421 on
 * timeouts and lost backends, 521 on smuggling attempts, 552 on size).
 * The backend gets QUIT when it is between commands, and a dropped
 * connection when it is inside DATA, so nothing half-sent is delivered.
 */
void
session_fail(struct session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (s->closing || s->state == SS_CLOSING)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	session_log(s, LOG_LVL_INFO, "closing: %s", line);
	free(s->deferred);
	s->deferred = NULL;
	session_replyf(s, "%s", line);
	if (s->state == SS_DATA || s->state == SS_BDAT || s->state == SS_DISCARD ||
	    s->bdat_data_open)
		backend_abort(s);
	else
		backend_quit(s);
	session_set_state(s, SS_CLOSING, "fail");
	session_update_reading(s);
	if (outq_flush(&s->cout) != 0 || outq_pending(&s->cout) == 0)
		session_close(s);
}

/* Forget a message's BDAT state (at its outcome, or a new MAIL). */
static void
reset_bdat(struct session *s)
{
	s->bdat_convert = false;
	s->bdat_data_open = false;
	s->bdat_failed = false;
	free(s->bdat_error);
	s->bdat_error = NULL;
	s->msg_octets = 0;
	s->oversize = false;
}

/* The transaction is over (its outcome, RSET, a new EHLO/HELO). */
static void
reset_transaction(struct session *s)
{
	s->in_mail = false;
	s->mail_smtputf8 = false;
	s->rcpt_ok = 0;
	s->from[0] = '\0';
	reset_bdat(s);
}

/* A refusal of the envelope, logged the way Postfix logs NOQUEUE rejects. */
static void
log_refusal(struct session *s, const char *what, const char *r, size_t n)
{
	char reply[512];

	while (n > 0 && (r[n - 1] == '\n' || r[n - 1] == '\r'))
		n--;
	printable(r, n, reply, sizeof(reply));
	session_log(s, LOG_LVL_INFO, "reject: %s from [%s]:%u: %s; from=<%s> helo=<%s>",
	    what, s->caddr, s->cport, reply, s->from, s->helo);
}

/* Whether the rewritten EHLO list offered this keyword to the client. */
static bool
offered(const struct session *s, const char *kw)
{
	const char *p = s->offered;
	size_t kwlen = strlen(kw);

	if (!s->esmtp || p == NULL)
		return false;
	/* skip the domain line, then look at each "250-KW..." / "250 KW..." */
	while ((p = strchr(p, '\n')) != NULL) {
		p++;
		if (strlen(p) < 4 + kwlen)
			break;
		if (strncasecmp(p + 4, kw, kwlen) == 0 &&
		    (p[4 + kwlen] == ' ' || p[4 + kwlen] == '\r' || p[4 + kwlen] == '='))
			return true;
	}
	return false;
}

/* The message size limit for a new transaction; 0 = none. */
static uint64_t
message_size_limit(const struct session *s)
{
	uint64_t limit = s->cfg->limits.max_message_size;

	if (s->ccaps.size && s->ccaps.size_limit &&
	    (limit == 0 || s->ccaps.size_limit < limit))
		limit = s->ccaps.size_limit;
	return limit;
}

/* Parse a decimal octet count (1 to 20 digits, no overflow); -1 if bad. */
static int
parse_count(const char *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 20)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(p[i] - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*out = v;
	return 0;
}

/*
 * The ESMTP parameters of MAIL or RCPT, against what the client was offered.
 * Returns NULL when all may go on, else the reply to give.
 */
static const char *
check_params(struct session *s, const struct smtp_path *path, bool is_mail, char *reply, size_t replylen)
{
	static const struct {
		const char	*param;
		const char	*extension;
		bool		 mail;	/* MAIL parameter, else RCPT */
	} needs[] = {
		{ "SIZE", "SIZE", true },	{ "SMTPUTF8", "SMTPUTF8", true },
		{ "RET", "DSN", true },		{ "ENVID", "DSN", true },
		{ "NOTIFY", "DSN", false },	{ "ORCPT", "DSN", false },
		{ "AUTH", "AUTH", true },	{ "BY", "DELIVERBY", true },
		{ "MT-PRIORITY", "MT-PRIORITY", true },
		{ "REQUIRETLS", "REQUIRETLS", true },
		{ "HOLDFOR", "FUTURERELEASE", true }, { "HOLDUNTIL", "FUTURERELEASE", true },
		{ "RRVS", "RRVS", false },	{ "BODY", NULL, true },
	};

	for (size_t i = 0; i < path->nparams; i++) {
		const struct smtp_param *pa = &path->params[i];

		for (size_t j = 0; j < sizeof(needs) / sizeof(needs[0]); j++) {
			if (strlen(needs[j].param) != pa->keylen ||
			    strncasecmp(needs[j].param, pa->key, pa->keylen) != 0)
				continue;
			if (needs[j].mail != is_mail)
				break;
			if (needs[j].extension == NULL) {	/* BODY= */
				if (pa->value && pa->valuelen == 4 &&
				    strncasecmp(pa->value, "7BIT", 4) == 0 && s->esmtp)
					break;
				if (pa->value && pa->valuelen == 8 &&
				    strncasecmp(pa->value, "8BITMIME", 8) == 0 &&
				    offered(s, "8BITMIME"))
					break;
			} else if (offered(s, needs[j].extension)) {
				break;
			}
			snprintf(reply, replylen, "555 5.5.4 Error: unsupported parameter %.*s",
			    (int)pa->keylen, pa->key);
			return reply;
		}
	}
	if (is_mail) {
		const struct smtp_param *size = smtp_path_param(path, "SIZE");
		uint64_t n, limit = message_size_limit(s);

		if (size && (size->value == NULL ||
		    parse_count(size->value, size->valuelen, &n) != 0)) {
			snprintf(reply, replylen, "501 5.5.4 Error: bad SIZE parameter");
			return reply;
		}
		if (size && limit && n > limit) {
			snprintf(reply, replylen, "552 5.3.4 Error: message size exceeds fixed limit");
			return reply;
		}
	}
	return NULL;
}

/* Relay a command line; sync: wait for its answer before the next command. */
static enum step_result
relay(struct session *s, const char *line, size_t len, enum smtp_verb verb, bool sync)
{
	backend_send(s, line, len, BS_COMMAND, verb);
	s->last_sync = sync;
	return STEP_NEXT;
}

/* EHLO and HELO: remember the name; the reply is rewritten in on_reply. */
static enum step_result
cmd_helo(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	size_t n = cmd->arglen < sizeof(s->helo) - 1 ? cmd->arglen : sizeof(s->helo) - 1;

	memcpy(s->helo, cmd->arg, n);
	s->helo[n] = '\0';
	return relay(s, line, len, cmd->verb, true);
}

/* MAIL FROM: syntax, parameters against the offered list, XFORWARD first. */
static enum step_result
cmd_mail(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	struct smtp_path path;
	const char *err;
	char reply[256];
	size_t n;

	if (smtp_parse_path(cmd->arg, cmd->arglen, "FROM:", &path) != 0) {
		local_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return STEP_NEXT;
	}
	if ((err = check_params(s, &path, true, reply, sizeof(reply))) != NULL) {
		local_reply(s, "%s", err);
		return STEP_NEXT;
	}
	s->mail_smtputf8 = smtp_path_param(&path, "SMTPUTF8") != NULL;
	if (path.eightbit && !s->mail_smtputf8) {
		local_reply(s, "553 5.6.7 Error: non-ASCII address without SMTPUTF8");
		return STEP_NEXT;
	}
	n = path.addrlen < sizeof(s->from) - 1 ? path.addrlen : sizeof(s->from) - 1;
	memcpy(s->from, path.addr, n);
	s->from[n] = '\0';
	s->size_limit = message_size_limit(s);
	backend_xforward(s);
	return relay(s, line, len, SMTP_MAIL, false);
}

/* RCPT TO: syntax, DSN parameters, and the recipient limit. */
static enum step_result
cmd_rcpt(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	struct smtp_path path;
	const char *err;
	char reply[256];

	if (smtp_parse_path(cmd->arg, cmd->arglen, "TO:", &path) != 0) {
		local_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return STEP_NEXT;
	}
	if ((err = check_params(s, &path, false, reply, sizeof(reply))) != NULL) {
		local_reply(s, "%s", err);
		return STEP_NEXT;
	}
	if (path.eightbit && !s->mail_smtputf8) {
		local_reply(s, "553 5.6.7 Error: non-ASCII address without SMTPUTF8");
		return STEP_NEXT;
	}
	if (s->rcpt_ok + s->rcpt_sent >= s->cfg->limits.max_recipients) {
		if (s->rcpt_sent > 0)
			return STEP_STOP;	/* the count depends on replies to come */
		local_reply(s, "452 4.5.3 Error: too many recipients");
		return STEP_NEXT;
	}
	s->rcpt_sent++;
	return relay(s, line, len, SMTP_RCPT, false);
}

/*
 * BDAT count [LAST] (RFC 3030).  Relayed as it is to a backend with
 * CHUNKING; to one without, the proxy opens DATA once per message and sends
 * the chunks dot-stuffed.  A chunk over the size limit is read and refused,
 * and the session ends: the backend never gets a LAST for it.
 */
static enum step_result
cmd_bdat(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	const char *sp;
	size_t numlen;
	uint64_t count;
	bool last = false;

	if (!offered(s, "CHUNKING")) {
		local_reply(s, "502 5.5.1 Error: command not implemented");
		return STEP_NEXT;
	}
	sp = memchr(cmd->arg, ' ', cmd->arglen);
	numlen = sp ? (size_t)(sp - cmd->arg) : cmd->arglen;
	if (sp) {
		size_t rest = cmd->arglen - numlen;

		while (rest > 0 && *sp == ' ')
			sp++, rest--;
		if (rest == 4 && strncasecmp(sp, "LAST", 4) == 0)
			last = true;
		else
			numlen = 0;	/* bad syntax */
	}
	if (parse_count(cmd->arg, numlen, &count) != 0) {
		/* The octets that follow cannot be told from commands: end here. */
		if (s->pcount > 0)
			return STEP_STOP;
		session_fail(s, "501 5.5.4 Syntax: BDAT count [LAST]");
		return STEP_STOP;
	}
	s->bdat_left = count;
	s->bdat_last = last;
	if (s->size_limit && s->msg_octets + count > s->size_limit)
		s->oversize = true;
	if (s->bcaps.chunking) {
		if (!s->oversize && !s->bdat_failed)
			backend_send(s, line, len, last ? BS_DOT : BS_COMMAND, SMTP_BDAT);
		s->last_sync = false;
	} else if (!s->bdat_data_open && !s->bdat_failed && !s->oversize) {
		/* Open DATA at the backend first, then come back to this line. */
		if (s->pcount > 0)
			return STEP_STOP;
		backend_send(s, "DATA\r\n", 6, BS_BDAT_DATA, SMTP_DATA);
		s->bdat_convert = true;
		s->last_sync = true;
		s->bdat_left = 0;
		return STEP_STOP;
	}
	session_set_state(s, SS_BDAT, last ? "BDAT LAST" : "BDAT");
	return STEP_NEXT;
}

/* Commands the proxy refuses itself; they never reach the backend. */
static enum step_result
cmd_refuse(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	session_log(s, LOG_LVL_INFO, "refused %s from client", smtp_verb_name(cmd->verb));
	local_reply(s, "502 5.5.1 Error: command not implemented");
	return STEP_NEXT;
}

/* Everything else is the backend's to answer. */
static enum step_result
cmd_relay(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	return relay(s, line, len, cmd->verb, true);
}

/* RSET may be pipelined (RFC 2920). */
static enum step_result
cmd_relay_group(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	return relay(s, line, len, cmd->verb, false);
}

/*
 * The command table: one row per verb.  Unknown verbs are relayed: the
 * backend may implement what the proxy does not know.
 */
static const struct command_rule {
	enum smtp_verb	verb;
	enum step_result (*proceed)(struct session *, const struct smtp_cmd *, const char *, size_t);
} command_table[] = {
	{ SMTP_HELO,	 cmd_helo },
	{ SMTP_EHLO,	 cmd_helo },
	{ SMTP_MAIL,	 cmd_mail },
	{ SMTP_RCPT,	 cmd_rcpt },
	{ SMTP_DATA,	 cmd_relay },
	{ SMTP_BDAT,	 cmd_bdat },
	{ SMTP_RSET,	 cmd_relay_group },
	{ SMTP_NOOP,	 cmd_relay },
	{ SMTP_QUIT,	 cmd_relay },
	{ SMTP_VRFY,	 cmd_relay },
	{ SMTP_EXPN,	 cmd_relay },
	{ SMTP_HELP,	 cmd_relay },
	{ SMTP_ETRN,	 cmd_relay },
	{ SMTP_STARTTLS, cmd_refuse },
	{ SMTP_AUTH,	 cmd_refuse },
	{ SMTP_XCLIENT,	 cmd_refuse },
	{ SMTP_XFORWARD, cmd_refuse },
	{ SMTP_ATRN,	 cmd_refuse },
	{ SMTP_TURN,	 cmd_refuse },
	{ SMTP_UNKNOWN,	 cmd_relay },
};

/* Whether the next command may be sent before the answers to earlier ones. */
static bool
may_send_next(const struct session *s)
{
	if (s->pcount == 0)
		return true;
	return !s->last_sync && s->bcaps.pipelining && s->esmtp;
}

/* One command line from the client buffer, when one is complete. */
static enum step_result
process_command(struct session *s)
{
	const char *head = iobuf_head(&s->cin);
	size_t max = s->cfg->limits.max_line_length, len;
	const char *lf;
	struct smtp_cmd cmd;
	const struct command_rule *rule;
	enum step_result r;

	if (s->deferred || !may_send_next(s))
		return STEP_STOP;
	lf = memchr(head, '\n', s->cin.len);
	if (s->skip_line) {
		iobuf_consume(&s->cin, lf ? (size_t)(lf - head) + 1 : s->cin.len);
		if (lf)
			s->skip_line = false;
		return lf ? STEP_NEXT : STEP_STOP;
	}
	if (lf == NULL && s->cin.len < max)
		return STEP_STOP;
	if (lf == NULL || (size_t)(lf - head) + 1 > max) {
		session_log(s, LOG_LVL_WARNING, "command line too long (over %zu octets)", max);
		local_reply(s, "500 5.5.2 Error: command line too long");
		s->skip_line = lf == NULL;
		iobuf_consume(&s->cin, lf ? (size_t)(lf - head) + 1 : s->cin.len);
		return STEP_NEXT;
	}
	len = (size_t)(lf - head) + 1;
	if (s->srv->stopping && !s->in_mail) {
		session_fail(s, "421 4.3.2 %s Service shutting down, closing connection",
		    s->cfg->hostname);
		return STEP_STOP;
	}
	if (len < 2 || head[len - 2] != '\r' || memchr(head, '\r', len - 2) != NULL ||
	    memchr(head, '\0', len) != NULL) {
		session_transcript(s, "c>p", head, len);
		session_log(s, LOG_LVL_WARNING, "bare <CR> or <LF> or NUL in command from client");
		local_reply(s, "500 5.5.2 Error: bare <CR> or <LF> in command");
		iobuf_consume(&s->cin, len);
		return STEP_NEXT;
	}
	if (!s->line_logged) {
		session_transcript(s, "c>p", head, len);
		s->line_logged = true;
	}
	if (smtp_parse_command(head, len - 2, &cmd) != 0) {
		local_reply(s, "500 5.5.2 Error: bad syntax");
		r = STEP_NEXT;
	} else {
		for (rule = command_table; rule->verb != cmd.verb && rule->verb != SMTP_UNKNOWN; rule++)
			;
		r = rule->proceed(s, &cmd, head, len);
	}
	if (r == STEP_NEXT && s->state != SS_CLOSING) {
		iobuf_consume(&s->cin, len);
		s->line_logged = false;
	}
	return r;
}

/* Message data after 354: check it, pass it on, find its end. */
static enum step_result
process_data(struct session *s)
{
	size_t used;
	enum dot_result r = dot_scan(&s->dot, iobuf_head(&s->cin), s->cin.len, &used);

	if (!s->oversize && s->size_limit && s->dot.octets > s->size_limit) {
		session_log(s, LOG_LVL_WARNING, "message over %" PRIu64 " octets: discarding it",
		    s->size_limit);
		s->oversize = true;
		backend_abort(s);
		session_set_state(s, SS_DISCARD, "over the size limit");
	}
	if (!s->oversize) {
		if (s->cfg->log.transcript_body)
			session_transcript(s, "c>p", iobuf_head(&s->cin), used);
		backend_data(s, iobuf_head(&s->cin), used);
	}
	iobuf_consume(&s->cin, used);
	s->msg_octets = s->dot.octets;
	switch (r) {
	case DOT_MORE:
		return STEP_STOP;
	case DOT_END:
		if (s->oversize) {
			session_fail(s, "552 5.3.4 Error: message size exceeds fixed limit");
			return STEP_STOP;
		}
		if (s->srv->transcript) {
			char note[64];

			snprintf(note, sizeof(note), "(message data, %" PRIu64 " octets)", s->msg_octets);
			session_transcript(s, "c>p", note, strlen(note));
		}
		backend_send(s, NULL, 0, BS_DOT, SMTP_DATA);
		s->last_sync = true;
		session_set_state(s, SS_COMMAND, "end of data");
		return STEP_NEXT;
	case DOT_BAD_CR:
	case DOT_BAD_LF:
		session_log(s, LOG_LVL_WARNING, "bare <%s> in message data after %" PRIu64
		    " octets: refusing the message (SMTP smuggling?)",
		    r == DOT_BAD_CR ? "CR" : "LF", s->dot.octets);
		backend_abort(s);
		session_fail(s, "521 5.5.2 %s Error: bare <CR> or <LF> in message data",
		    s->cfg->hostname);
		return STEP_STOP;
	}
	return STEP_STOP;
}

/* The octets of a BDAT chunk: relayed, stuffed into DATA, or dropped. */
static enum step_result
process_bdat(struct session *s)
{
	size_t n = s->cin.len < s->bdat_left ? s->cin.len : (size_t)s->bdat_left;
	const char *p = iobuf_head(&s->cin);
	bool forward = !s->oversize && !s->bdat_failed;

	if (forward && s->bdat_convert) {
		char out[16384];
		size_t used = 0, produced, off = 0;
		enum dot_result r;

		while (off < n) {
			r = dot_stuff(&s->stuff, p + off, n - off, &used, out, sizeof(out), &produced);
			backend_data(s, out, produced);
			off += used;
			if (r != DOT_MORE) {
				session_log(s, LOG_LVL_WARNING, "bare <CR> or <LF> in BDAT data: refusing the message");
				backend_abort(s);
				session_fail(s, "521 5.5.2 %s Error: bare <CR> or <LF> in message data",
				    s->cfg->hostname);
				return STEP_STOP;
			}
		}
	} else if (forward) {
		backend_data(s, p, n);
	}
	iobuf_consume(&s->cin, n);
	s->bdat_left -= n;
	s->msg_octets += n;
	if (s->bdat_left > 0)
		return STEP_STOP;

	session_set_state(s, SS_COMMAND, "end of chunk");
	if (s->oversize) {
		session_fail(s, "552 5.3.4 Error: message size exceeds fixed limit");
		return STEP_STOP;
	}
	if (s->bdat_failed) {
		local_reply(s, "%s", s->bdat_error);
		if (s->bdat_last)
			reset_bdat(s);	/* the client starts over with a new MAIL */
		return STEP_NEXT;
	}
	if (!s->bdat_convert)
		return STEP_NEXT;	/* the backend answers the chunk */
	if (s->bdat_last) {
		char end[8];
		int m = dot_stuff_finish(&s->stuff, end, sizeof(end));

		if (m < 0) {
			backend_abort(s);
			session_fail(s, "521 5.5.2 %s Error: bare <CR> or <LF> in message data",
			    s->cfg->hostname);
			return STEP_STOP;
		}
		backend_data(s, end, (size_t)m);
		backend_send(s, NULL, 0, BS_DOT, SMTP_BDAT);
		s->last_sync = true;
		return STEP_NEXT;
	}
	local_reply(s, "250 2.0.0 Ok: %" PRIu64 " octets received", s->msg_octets);
	return STEP_NEXT;
}

/*
 * Run whatever client input can run now, then push the output.  Called after
 * each read from either side and after writes drain.
 */
void
session_process(struct session *s)
{
	enum step_result r = STEP_STOP;

	while (!s->closing && s->state != SS_CLOSING && s->state != SS_CONNECT) {
		if (outq_pending(&s->bout) > OUT_HIGH_WATER ||
		    outq_pending(&s->cout) > OUT_HIGH_WATER)
			break;
		switch (s->state) {
		case SS_COMMAND:
			r = s->cin.len ? process_command(s) : STEP_STOP;
			break;
		case SS_DATA:
		case SS_DISCARD:
			r = s->cin.len ? process_data(s) : STEP_STOP;
			break;
		case SS_BDAT:
			r = s->cin.len || s->bdat_left == 0 ? process_bdat(s) : STEP_STOP;
			break;
		default:
			r = STEP_STOP;
		}
		if (r == STEP_STOP)
			break;
	}
	if (s->closing)
		return;
	if (s->client_gone && s->state != SS_CLOSING && s->pcount == 0 &&
	    (s->state == SS_COMMAND || s->state == SS_CONNECT)) {
		session_log(s, LOG_LVL_INFO, "client disconnected");
		backend_quit(s);
		session_set_state(s, SS_CLOSING, "client gone");
	}
	backend_flush(s);
	if (!s->client_gone && outq_flush(&s->cout) != 0) {
		session_close(s);
		return;
	}
	if (s->state == SS_CLOSING && outq_pending(&s->cout) == 0 &&
	    outq_pending(&s->bout) == 0) {
		session_close(s);
		return;
	}
	session_update_reading(s);
}

/* Summary line for a message: what an operator greps for. */
static void
log_outcome(struct session *s, const char *r, size_t n, int code)
{
	char reply[512];
	const char *status = code / 100 == 2 ? "sent" : code / 100 == 4 ? "deferred" : "rejected";

	while (n > 0 && (r[n - 1] == '\n' || r[n - 1] == '\r'))
		n--;
	printable(r, n, reply, sizeof(reply));
	session_log(s, LOG_LVL_INFO, "client=[%s]:%u helo=<%s> from=<%s> nrcpt=%u size=%" PRIu64
	    " status=%s reply=\"%s\"", s->caddr, s->cport, s->helo, s->from, s->rcpt_ok,
	    s->msg_octets, status, reply);
}

/*
 * A backend reply to something the client sent (BS_COMMAND, BS_DOT,
 * BS_BDAT_DATA): update what the proxy knows, then relay it (EHLO rewritten).
 */
void
session_backend_reply(struct session *s, struct pending p, const char *r, size_t n, int code)
{
	switch (p.step) {
	case BS_BDAT_DATA:
		if (code == 354) {
			s->bdat_data_open = true;
			dot_stuffer_init(&s->stuff);
		} else {
			/* Answer this and the transaction's other chunks with it. */
			s->bdat_failed = true;
			while (n > 0 && (r[n - 1] == '\n' || r[n - 1] == '\r'))
				n--;
			free(s->bdat_error);
			s->bdat_error = xstrndup(r, n);
		}
		return;
	case BS_DOT:
		session_reply(s, r, n);
		log_outcome(s, r, n, code);
		s->nmessages++;
		reset_transaction(s);
		break;
	case BS_COMMAND:
		switch (p.verb) {
		case SMTP_EHLO:
			if (code == 250) {
				size_t cap = n + 2048;
				char *out = xmalloc(cap);
				struct ehlo_policy pol = {
					.remove = (const char *const *)s->cfg->ehlo.remove.v,
					.nremove = s->cfg->ehlo.remove.n,
					.add = (const char *const *)s->cfg->ehlo.add.v,
					.nadd = s->cfg->ehlo.add.n,
					.size = s->cfg->ehlo.size,
				};
				int m;

				ehlo_caps_parse(r, n, &s->bcaps);
				m = ehlo_rewrite(r, n, &pol, out, cap, &s->ccaps);
				if (m < 0) {
					session_log(s, LOG_LVL_WARNING, "cannot rewrite the backend's EHLO reply");
					free(out);
					session_fail(s, "421 4.3.0 %s Service not available, bad reply from backend",
					    s->cfg->hostname);
					return;
				}
				free(s->offered);
				s->offered = xstrndup(out, (size_t)m);
				free(out);
				s->ehlo_done = s->esmtp = true;
				reset_transaction(s);
				session_reply(s, s->offered, (size_t)m);
				goto relayed;
			}
			break;
		case SMTP_HELO:
			if (code == 250) {
				s->ehlo_done = true;
				s->esmtp = false;
				memset(&s->ccaps, 0, sizeof(s->ccaps));
				reset_transaction(s);
			}
			break;
		case SMTP_MAIL:
			if (code / 100 == 2) {
				s->in_mail = true;
				reset_bdat(s);
			} else {
				log_refusal(s, "MAIL", r, n);
			}
			break;
		case SMTP_RCPT:
			s->rcpt_sent--;
			if (code / 100 == 2)
				s->rcpt_ok++;
			else
				log_refusal(s, "RCPT", r, n);
			break;
		case SMTP_DATA:
			if (code == 354) {
				dot_scanner_init(&s->dot);
				s->msg_octets = 0;
				session_reply(s, r, n);
				session_set_state(s, SS_DATA, "354");
				goto relayed;
			}
			break;
		case SMTP_RSET:
			reset_transaction(s);
			break;
		case SMTP_QUIT:
			session_reply(s, r, n);
			backend_abort(s);
			session_set_state(s, SS_CLOSING, "QUIT");
			goto relayed;
		default:
			break;
		}
		session_reply(s, r, n);
		break;
	default:
		log_panic("%s: step %d", s->id, p.step);
	}
relayed:
	if (code == 421 && s->state != SS_CLOSING) {
		/* The backend is closing: so do we, after relaying its reason. */
		backend_abort(s);
		session_set_state(s, SS_CLOSING, "backend sent 421");
	}
	flush_deferred(s);
}

/* Start or stop reading the client, by state and by output backlog. */
void
session_update_reading(struct session *s)
{
	bool want = !s->closing && !s->client_gone && s->state != SS_CLOSING &&
	    s->cin.len < CLIENT_INBUF &&
	    outq_pending(&s->bout) <= OUT_HIGH_WATER &&
	    outq_pending(&s->cout) <= OUT_HIGH_WATER;

	if (want && !s->reading) {
		if (uv_read_start((uv_stream_t *)&s->client, client_alloc, client_read) == 0)
			s->reading = true;
	} else if (!want && s->reading) {
		uv_read_stop((uv_stream_t *)&s->client);
		s->reading = false;
	}
}

/* libuv asks where to put client bytes: straight into cin. */
static void
client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct session *s = h->data;
	size_t avail;
	char *p = iobuf_space(&s->cin, CLIENT_INBUF, &avail);

	*buf = uv_buf_init(p, (unsigned)avail);
}

/* Arm the client idle timer for what the client is expected to do next. */
static void
client_timer_arm(struct session *s)
{
	unsigned secs = s->state == SS_DATA || s->state == SS_BDAT || s->state == SS_DISCARD ?
	    s->cfg->timeout.data : s->cfg->timeout.command;

	uv_timer_start(&s->ctimer, client_timeout, (uint64_t)secs * 1000, 0);
}

/* Bytes (or EOF) from the client. */
static void
client_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct session *s = stream->data;

	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF)
			session_log(s, LOG_LVL_INFO, "client read: %s", uv_strerror((int)nread));
		s->client_gone = true;
		uv_read_stop(stream);
		s->reading = false;
		if (s->state == SS_DATA || s->state == SS_BDAT || s->state == SS_DISCARD) {
			session_log(s, LOG_LVL_INFO, "client disconnected in the middle of a message "
			    "(%" PRIu64 " octets): dropping it", s->msg_octets);
			backend_abort(s);
			session_close(s);
			return;
		}
		session_process(s);
		return;
	}
	iobuf_commit(&s->cin, (size_t)nread);
	client_timer_arm(s);
	session_process(s);
}

/* A write to the client finished. */
static void
client_written(struct outq *q, int status)
{
	struct session *s = q->owner;

	if (s->closing)
		return;
	if (status != 0) {
		session_log(s, LOG_LVL_INFO, "client write: %s", uv_strerror(status));
		s->client_gone = true;
		if (s->state == SS_DATA || s->state == SS_BDAT || s->state == SS_DISCARD)
			backend_abort(s);
		else
			backend_quit(s);
		session_close(s);
		return;
	}
	session_process(s);
}

/* The client said nothing for too long. */
static void
client_timeout(uv_timer_t *t)
{
	struct session *s = t->data;

	if (s->pcount > 0 && s->state != SS_DATA && s->state != SS_BDAT) {
		client_timer_arm(s);	/* waiting for the backend, not the client */
		return;
	}
	session_log(s, LOG_LVL_WARNING, "timeout in state %s", state_names[s->state]);
	session_fail(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->hostname);
}

/*
 * Called on SIGTERM and when its deadline passes: a session between
 * transactions (or every session, when forced) gets 421 now; one inside a
 * transaction gets it at the next command after the transaction ends.
 */
void
session_shutdown(struct session *s)
{
	if (s->closing || s->state == SS_CLOSING)
		return;
	if (s->srv->shutdown_forced || (s->state == SS_COMMAND && s->pcount == 0 && !s->in_mail)) {
		session_fail(s, "421 4.3.2 %s Service shutting down, closing connection",
		    s->cfg->hostname);
	}
}

/* A new session for the listener to accept into. */
uv_tcp_t *
session_new(struct server *srv)
{
	struct session *s = xcalloc(1, sizeof(*s));

	s->srv = srv;
	s->cfg = srv->cfg;
	snprintf(s->id, sizeof(s->id), "%08" PRIX64, ++srv->next_id);
	uv_tcp_init(srv->loop, &s->client);
	s->client.data = s;
	s->handles = 1;
	return &s->client;
}

/* The accept failed: just release the handle. */
void
session_discard(uv_tcp_t *client)
{
	struct session *s = client->data;

	s->closing = true;
	uv_close((uv_handle_t *)&s->client, handle_closed);
}

/* Set up a session on an accepted connection and connect to the backend. */
void
session_start(uv_tcp_t *client)
{
	struct session *s = client->data;
	struct server *srv = s->srv;
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);

	if ((s->next = srv->sessions) != NULL)
		s->next->prev = s;
	srv->sessions = s;
	srv->nsessions++;

	if (uv_tcp_getpeername(&s->client, (struct sockaddr *)&ss, &sslen) == 0) {
		if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

			uv_ip6_name(sin6, s->caddr, sizeof(s->caddr));
			s->cport = ntohs(sin6->sin6_port);
		} else {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

			uv_ip4_name(sin, s->caddr, sizeof(s->caddr));
			s->cport = ntohs(sin->sin_port);
		}
		memcpy(&s->peer, &ss, sizeof(ss));
	}
	uv_tcp_nodelay(&s->client, 1);
	outq_init(&s->cout, (uv_stream_t *)&s->client, client_written, s);
	uv_timer_init(srv->loop, &s->ctimer);
	s->ctimer.data = s;
	s->handles++;
	session_log(s, LOG_LVL_INFO, "connect from [%s]:%u", s->caddr, s->cport);

	if (srv->nsessions > s->cfg->limits.max_connections) {
		session_log(s, LOG_LVL_WARNING, "too many connections (%u)", srv->nsessions - 1);
		session_set_state(s, SS_CLOSING, "too many connections");
		session_replyf(s, "421 4.7.0 %s Error: too many connections", s->cfg->hostname);
		if (outq_flush(&s->cout) != 0)
			session_close(s);
		return;
	}
	client_timer_arm(s);
	backend_connect(s);
	if (!s->closing)
		session_update_reading(s);
}

/* Close every handle; the session is freed when the last one has closed. */
void
session_close(struct session *s)
{
	struct server *srv = s->srv;

	if (s->closing)
		return;
	s->closing = true;
	if (s->prev)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	srv->nsessions--;
	session_log(s, LOG_LVL_DEBUG, "closing session (%" PRIu64 " messages)", s->nmessages);
	backend_abort(s);
	backend_release(s);
	uv_close((uv_handle_t *)&s->client, handle_closed);
	uv_close((uv_handle_t *)&s->ctimer, handle_closed);
	if (srv->stopping && srv->nsessions == 0)
		server_drained(srv);
}

/* Free the session itself: the one place its memory goes. */
static void
session_free(struct session *s)
{
	iobuf_free(&s->cin);
	iobuf_free(&s->bin);
	outq_free(&s->cout);
	outq_free(&s->bout);
	reset_transaction(s);
	free(s->greeting);
	free(s->offered);
	free(s->deferred);
	free(s);
}

/* One of the session's handles or requests is done; free at the last. */
void
session_unref(struct session *s)
{
	if (s->handles == 0)
		log_panic("%s: handle count underflow", s->id);
	if (--s->handles == 0)
		session_free(s);
}

static void
handle_closed(uv_handle_t *h)
{
	session_unref(h->data);
}
