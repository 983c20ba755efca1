/*
 * command.c - the client's commands on one proxied SMTP connection: the
 * command table, the state machine, the backend's events, the session's
 * start.
 *
 * A session reads the client's commands, checks each against what the client
 * was offered, and relays it to the backend (backend.c), or answers it
 * itself when the proxy must refuse it.  Replies go back strictly in command
 * order: a local reply waits until every relayed command before it has its
 * answer.  Commands are pipelined to the backend only when it offers
 * PIPELINING and RFC 2920 allows the command inside a group.  Each verb
 * has one row in command_table: what the proxy does with the command
 * (cmd_*) and with the backend's answer to it (reply_*), written side by
 * side below.
 *
 * States (enum session_state) change only in session_set_state() (session.c),
 * which logs every transition at debug level:
 *
 *   accept --proxy_protocol listener--> PROXY --PROXY header--> CONNECT
 *   accept ----------------------------------------------------> CONNECT
 *   CONNECT --backend's greeting, the chain's connect step--> COMMAND
 *   COMMAND --354--> DATA --CRLF.CRLF--> COMMAND
 *   COMMAND --BDAT n--> BDAT --n octets--> COMMAND
 *   COMMAND --AUTH, 334--> AUTH --one line relayed--> COMMAND
 *   DATA --over the size limit--> DISCARD --end--> CLOSING (held: COMMAND)
 *   DATA, BDAT (held for filters) --end--> FILTER --outcome--> COMMAND
 *   any --QUIT, 421, timeout, bad data, client gone, limits--> CLOSING
 *   CLOSING --last reply written--> CLOSED (session_close(): the handles
 *                                   close, the session is freed at the last)
 *   any --write error, the client gone, worker stopping--> CLOSED
 *
 * A held message's 354 is the proxy's own; in FILTER no client input is
 * read: the chain runs over the message, then the envelope is replayed and
 * the store sent (hold.c), or the message ends here.
 *
 * The client's EOF (a FIN, or a TLS close_notify) is a half-close: like
 * Postfix, which meets it only when it reads past what came before it, the
 * session answers every command read before it, in order, then closes; a
 * message not finished by then is dropped (client_eof_answered()).
 *
 * The DATA stream, and BDAT chunks whether relayed as they are or turned
 * into DATA, are read in data.c and checked by dotstream.c before a byte of
 * them goes on: a bare CR or LF ends the session with 521 and the backend
 * connection is dropped without an end of data, so the backend never sees a
 * message boundary the proxy did not see.
 *
 * The client's connection is a struct conn (conn.c); the backend is a
 * struct backend (backend.c) below the session, which reports up through
 * backend_events: on_backend_lost() here decides the 421 the client hears.
 * Below this file too, calling nothing above it: data.c (the message's
 * octets: DATA and BDAT), auth.c (the AUTH exchange), hold.c (the held
 * message), esmtp.c (what the client was offered), filter.c (the chain),
 * and session.c (struct session: log lines, the state change, replies in
 * order, the session's end and free), which the others use.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "filter.h"
#include "log.h"
#include "module.h"
#include "msgstore.h"
#include "esmtp.h"
#include "auth.h"
#include "data.h"
#include "hold.h"
#include "proxyproto.h"
#include "replies.h"
#include "session.h"

static void	client_read(void *owner, ssize_t nread);
static void	client_written(struct outq *q, int status);
static void	client_timeout(uv_timer_t *t);
static void	client_timer_arm(struct session *s);
static const struct backend_events backend_events;
static void	hold_act(struct session *s, struct hold_result r);
static void	client_eof(struct session *s);
static void	client_eof_answered(struct session *s);
static void	proxy_header_input(struct session *s);
static int	client_tls_input(struct session *s);
static void	session_process(struct session *s);
static void	session_greeting(struct session *s, const char *r, size_t n);
static void	session_backend_reply(struct session *s, struct pending p, const char *r, size_t n,
		    int code);

/* Relay a command line; sync: wait for its answer before the next command. */
static enum step_result
relay(struct session *s, const char *line, size_t len, enum smtp_verb verb, bool sync)
{
	backend_send(&s->backend, line, len, BS_COMMAND, verb);
	s->last_sync = sync;
	return STEP_NEXT;
}

/*
 * The message's id, from its MAIL on: the session id and the message's
 * number in the session.  The filters get it (queue_id; the milter's {i}),
 * the summary line and the quarantine file carry it, and so does our own
 * answer for a message we end.  A MAIL read again after a pending filter, or
 * refused, keeps the number; the next transaction gets the next one.
 */
static void
message_number(struct session *s)
{
	if (s->tx.msgid[0] == '\0')
		snprintf(s->tx.msgid, sizeof(s->tx.msgid), "%s.%" PRIu64, s->id, ++s->msgno);
}

/*
 * Ask the chain about a command step.  Returns true to go on with the
 * command, or false with *r set: STEP_STOP (a module is pending; the line
 * is read again when it answers) or STEP_NEXT after refusing it with the
 * module's reply.
 */
static bool
filter_allows(struct session *s, enum filter_step step, const char *a1, const char *a2,
    enum step_result *r)
{
	const char *reply;

	switch (filter_phase(&s->filter, step, a1, a2, &reply)) {
	case FILTER_GO:
		return true;
	case FILTER_WAIT:
		*r = STEP_STOP;
		return false;
	case FILTER_REFUSE:
		if (strncmp(reply, "421", 3) == 0) {	/* a module shutting the session */
			session_fail(s, "%s", reply);
			*r = STEP_STOP;
			return false;
		}
		session_local_reply(s, "%s", reply);
		*r = STEP_NEXT;
		return false;
	}
	return true;
}

/* EHLO and HELO: remember the name, ask the chain; the reply is rewritten later. */
static enum step_result
cmd_helo(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	size_t n = cmd->arglen < sizeof(s->facts.helo) - 1 ? cmd->arglen : sizeof(s->facts.helo) - 1;
	enum step_result r;

	memcpy(s->facts.helo, cmd->arg, n);
	s->facts.helo[n] = '\0';
	if (cmd->verb == SMTP_EHLO)
		s->facts.ehlo_seen = true;
	if (!filter_allows(s, FILTER_HELO, s->facts.helo, NULL, &r))
		return r;
	return relay(s, line, len, cmd->verb, true);
}

/* EHLO's 250: what the backend offers, rewritten for the client; a new start. */
static bool
reply_ehlo(struct session *s, const char *r, size_t n, int code)
{
	size_t cap = n + 2048;
	char *out;
	struct ehlo_policy pol = {
		.remove = (const char *const *)s->cfg->ehlo.remove.v,
		.nremove = s->cfg->ehlo.remove.n,
		.add = (const char *const *)s->cfg->ehlo.add.v,
		.nadd = s->cfg->ehlo.add.n,
		.size = s->cfg->ehlo.size,
	};
	int m;

	if (code != 250) {
		session_reply(s, r, n);
		return true;
	}
	out = xmalloc(cap);
	ehlo_caps_parse(r, n, &s->backend.caps);
	m = ehlo_rewrite(r, n, &pol, out, cap, &s->offered.caps);
	if (m < 0) {
		session_log(s, LOG_LVL_WARNING, "cannot rewrite the backend's EHLO reply");
		free(out);
		session_fail_of(s, REPLY_BACKEND_BAD_REPLY);
		return false;
	}
	free(s->offered.backend_auth);
	s->offered.backend_auth = esmtp_auth_line(r, n);
	if (s->srv->tls && !s->client.tls)
		m = esmtp_offer(out, (size_t)m, cap, "STARTTLS");
	if (esmtp_auth_allowed(&s->offered, &s->facts, s->client.tls != NULL, s->cfg->auth_requires_tls))
		m = esmtp_offer(out, (size_t)m, cap, s->offered.backend_auth);
	free(s->offered.reply);
	s->offered.reply = xstrndup(out, (size_t)m);
	free(out);
	s->ehlo_done = s->facts.esmtp = true;
	session_reset_transaction(s);
	session_reply(s, s->offered.reply, (size_t)m);
	return true;
}

/* HELO's 250: a new start without extensions. */
static bool
reply_helo(struct session *s, const char *r, size_t n, int code)
{
	if (code == 250) {
		s->ehlo_done = true;
		s->facts.esmtp = false;
		memset(&s->offered.caps, 0, sizeof(s->offered.caps));
		free(s->offered.reply);		/* no extensions after HELO */
		s->offered.reply = NULL;
		session_reset_transaction(s);
	}
	session_reply(s, r, n);
	return true;
}

/* MAIL FROM: syntax, parameters against the offered list, the chain, XFORWARD first. */
static enum step_result
cmd_mail(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	struct smtp_path path;
	const char *err;
	char reply[256], addr[512], params[1024];
	enum step_result r;
	size_t n;

	if (s->client.tls && !s->ehlo_done) {	/* RFC 3207: everything starts over after TLS */
		session_local_reply_of(s, REPLY_HELO_FIRST);
		return STEP_NEXT;
	}
	if (smtp_parse_path(cmd->arg, cmd->arglen, "FROM:", &path) != 0) {
		session_local_reply_of(s, REPLY_SYNTAX_MAIL);
		return STEP_NEXT;
	}
	if ((err = esmtp_check_params(&s->offered, s->cfg->limits.max_message_size, &path, true,
	    reply, sizeof(reply))) != NULL) {
		session_local_reply(s, "%s", err);
		return STEP_NEXT;
	}
	if (path.eightbit && !smtp_path_param(&path, "SMTPUTF8")) {
		session_local_reply_of(s, REPLY_NON_ASCII);
		return STEP_NEXT;
	}
	snprintf(addr, sizeof(addr), "%.*s", (int)path.addrlen, path.addr);
	esmtp_path_params(&path, params, sizeof(params));
	message_number(s);
	if (!filter_allows(s, FILTER_MAIL, addr, params, &r))
		return r;
	s->tx.mail_smtputf8 = smtp_path_param(&path, "SMTPUTF8") != NULL;
	n = path.addrlen < sizeof(s->tx.from) - 1 ? path.addrlen : sizeof(s->tx.from) - 1;
	memcpy(s->tx.from, path.addr, n);
	s->tx.from[n] = '\0';
	s->tx.size_limit = esmtp_size_limit(&s->offered, s->cfg->limits.max_message_size);
	if (s->srv->chain.n > 0) {
		char canon[1600];

		snprintf(canon, sizeof(canon), "MAIL FROM:<%s>%s%s", addr, params[0] ? " " : "", params);
		txn_set_mail(&s->tx, line, len - 2, canon);
	}
	/* A new message's BDAT state starts here, in the client's order: the
	 * answer to MAIL may come after its chunks were relayed (pipelining). */
	txn_reset_bdat(&s->tx);
	backend_xforward(&s->backend, s->facts.helo, s->facts.esmtp);
	return relay(s, line, len, SMTP_MAIL, false);
}

/* MAIL's answer: the transaction begins, or the refusal is logged. */
static bool
reply_mail(struct session *s, const char *r, size_t n, int code)
{
	if (code / 100 == 2) {
		s->tx.in_mail = true;
		metrics_message_start(&s->metrics);
	} else {
		session_log_refusal(s, "MAIL", r, n);
	}
	session_reply(s, r, n);
	return true;
}

/* RCPT TO: syntax, DSN parameters, the recipient limit, the chain. */
static enum step_result
cmd_rcpt(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	struct smtp_path path;
	const char *err;
	char reply[256], addr[512], params[1024];
	enum step_result r;

	if (smtp_parse_path(cmd->arg, cmd->arglen, "TO:", &path) != 0) {
		s->rcpt_refused++;
		session_local_reply_of(s, REPLY_SYNTAX_RCPT);
		return STEP_NEXT;
	}
	if ((err = esmtp_check_params(&s->offered, s->cfg->limits.max_message_size, &path, false,
	    reply, sizeof(reply))) != NULL) {
		s->rcpt_refused++;
		session_local_reply(s, "%s", err);
		return STEP_NEXT;
	}
	if (path.eightbit && !s->tx.mail_smtputf8) {
		s->rcpt_refused++;
		session_local_reply_of(s, REPLY_NON_ASCII);
		return STEP_NEXT;
	}
	if (s->tx.rcpt_ok + s->rcpt_sent >= s->cfg->limits.max_recipients) {
		if (s->rcpt_sent > 0)
			return STEP_STOP;	/* the count depends on replies to come */
		/* not an error: the client sends the rest in another transaction
		 * (Postfix counts none of the first smtpd_recipient_overshoot_limit) */
		session_local_reply_of(s, REPLY_TOO_MANY_RCPTS);
		return STEP_NEXT;
	}
	snprintf(addr, sizeof(addr), "%.*s", (int)path.addrlen, path.addr);
	esmtp_path_params(&path, params, sizeof(params));
	if (!filter_allows(s, FILTER_RCPT, addr, params, &r)) {
		if (r == STEP_NEXT)
			s->rcpt_refused++;	/* a module refused it */
		return r;
	}
	if (s->srv->chain.n > 0)
		txn_rcpt_record(&s->tx, line, len - 2, addr, RCPT_PENDING);
	s->rcpt_sent++;
	return relay(s, line, len, SMTP_RCPT, false);
}

/* RCPT's answer: counted; a held message's recipient kept or dropped. */
static bool
reply_rcpt(struct session *s, const char *r, size_t n, int code)
{
	s->rcpt_sent--;
	if (code / 100 == 2) {
		s->tx.rcpt_ok++;
	} else {
		s->rcpt_refused++;
		session_log_refusal(s, "RCPT", r, n);
	}
	if (s->tx.rcpt_reply_next < s->tx.nrcpts && code / 100 == 2)
		s->tx.rcpts[s->tx.rcpt_reply_next++].status = RCPT_OK;
	else if (s->tx.rcpt_reply_next < s->tx.nrcpts)
		txn_rcpt_drop(&s->tx, s->tx.rcpt_reply_next);
	session_reply(s, r, n);
	return true;
}

/* DATA: the chain's data step, then relayed, or held for the filters. */
static enum step_result
cmd_data(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	enum step_result r;
	const char *refusal;

	if (filter_holds_message(&s->filter) && s->backend.pcount > 0)
		return STEP_STOP;	/* the recipients' answers decide (before the chain runs) */
	if (!filter_allows(s, FILTER_DATA, NULL, NULL, &r))
		return r;
	if (!filter_holds_message(&s->filter))
		return relay(s, line, len, SMTP_DATA, true);
	if ((refusal = hold_begin(&s->hold)) != NULL) {
		session_local_reply(s, "%s", refusal);
		return STEP_NEXT;
	}
	dot_scanner_init(&s->tx.dot);
	session_replyf(s, "%s", reply_line(REPLY_DATA_GO, NULL, NULL, 0));
	session_set_state(s, SS_DATA, "354 (held for filters)");
	return STEP_NEXT;
}

/* DATA's 354: the message data follows. */
static bool
reply_data(struct session *s, const char *r, size_t n, int code)
{
	if (code == 354) {
		dot_scanner_init(&s->tx.dot);
		s->tx.msg_octets = 0;
		session_reply(s, r, n);
		session_set_state(s, SS_DATA, "354");
		return true;
	}
	session_reply(s, r, n);
	return true;
}

/*
 * STARTTLS (RFC 3207).  Whatever the client pipelined after it is thrown
 * away, never read inside TLS (CVE-2011-0411 class), and the session starts
 * over: EHLO is required again and the transaction is gone.
 */
static enum step_result
cmd_starttls(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	if (s->srv->tls == NULL || s->client.tls || !esmtp_offered(&s->offered, "STARTTLS")) {
		session_local_reply_of(s, REPLY_NOT_IMPLEMENTED);
		return STEP_NEXT;
	}
	if (cmd->arglen > 0) {
		session_local_reply_of(s, REPLY_SYNTAX_STARTTLS);
		return STEP_NEXT;
	}
	if (s->backend.pcount > 0)
		return STEP_STOP;	/* the 220 must be the last plaintext the client gets */
	if (s->client.in.len > len) {
		session_log(s, LOG_LVL_WARNING, "discarding %zu octets the client sent after "
		    "STARTTLS before TLS (command injection attempt?)", s->client.in.len - len);
		s->client.in.len = len;
	}
	session_replyf(s, "%s", reply_line(REPLY_TLS_READY, NULL, NULL, 0));
	conn_starttls(&s->client, tls_conn_new(s->srv->tls));
	s->ehlo_done = s->facts.esmtp = false;
	free(s->offered.reply);
	s->offered.reply = NULL;
	s->facts.helo[0] = '\0';
	session_reset_transaction(s);
	return STEP_NEXT;
}

/* Commands the proxy refuses itself; they never reach the backend. */
static enum step_result
cmd_refuse(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	session_log(s, LOG_LVL_INFO, "refused %s from client", smtp_verb_name(cmd->verb));
	session_local_reply_of(s, REPLY_NOT_IMPLEMENTED);
	return STEP_NEXT;
}

/* Everything else is the backend's to answer. */
static enum step_result
cmd_relay(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	return relay(s, line, len, cmd->verb, true);
}

/* The backend's answer, relayed as it is. */
static bool
reply_relay(struct session *s, const char *r, size_t n, int code)
{
	(void)code;
	session_reply(s, r, n);
	return true;
}

/*
 * QUIT's answer: the last the client gets; the backend connection goes.
 * The 221 is written before the backend's close (a client that sends its
 * next message on a new connection waits for it; an error is seen by
 * session_process's flush, which then finds nothing pending and closes).
 */
static bool
reply_quit(struct session *s, const char *r, size_t n, int code)
{
	(void)code;
	session_reply(s, r, n);
	if (!s->client_gone)
		(void)outq_flush(&s->client.out);
	backend_abort(&s->backend);
	session_set_state(s, SS_CLOSING, "QUIT");
	return true;
}

/*
 * A verb the proxy does not know: the chain sees the line first (as a
 * milter gets SMFIC_UNKNOWN before Postfix's smtpd answers 502), then the
 * backend answers it.
 */
static enum step_result
cmd_unknown(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	enum step_result r;
	char *text = xstrndup(line, len - 2);
	bool go = filter_allows(s, FILTER_UNKNOWN, text, NULL, &r);

	free(text);
	if (!go)
		return r;
	return relay(s, line, len, cmd->verb, true);
}

/* RSET may be pipelined (RFC 2920). */
static enum step_result
cmd_relay_group(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	return relay(s, line, len, cmd->verb, false);
}

/* RSET's answer: the transaction is gone. */
static bool
reply_rset(struct session *s, const char *r, size_t n, int code)
{
	(void)code;
	session_reset_transaction(s);
	session_reply(s, r, n);
	return true;
}

/*
 * The command table: one row per verb, with what the proxy does with the
 * command (proceed) and with the backend's answer to it when it was
 * relayed (reply: false when the session ended instead).  Unknown verbs go
 * through the filter chain and are relayed: the backend may implement what
 * the proxy does not know.
 */
static const struct command_rule {
	enum smtp_verb	verb;
	enum step_result (*proceed)(struct session *, const struct smtp_cmd *, const char *, size_t);
	bool		(*reply)(struct session *, const char *, size_t, int);
} command_table[] = {
	{ SMTP_HELO,	 cmd_helo,	  reply_helo },
	{ SMTP_EHLO,	 cmd_helo,	  reply_ehlo },
	{ SMTP_MAIL,	 cmd_mail,	  reply_mail },
	{ SMTP_RCPT,	 cmd_rcpt,	  reply_rcpt },
	{ SMTP_DATA,	 cmd_data,	  reply_data },
	{ SMTP_BDAT,	 cmd_bdat,	  reply_relay },	/* a chunk; LAST is BS_DOT */
	{ SMTP_RSET,	 cmd_relay_group, reply_rset },
	{ SMTP_NOOP,	 cmd_relay,	  reply_relay },
	{ SMTP_QUIT,	 cmd_relay,	  reply_quit },
	{ SMTP_VRFY,	 cmd_relay,	  reply_relay },
	{ SMTP_EXPN,	 cmd_relay,	  reply_relay },
	{ SMTP_HELP,	 cmd_relay,	  reply_relay },
	{ SMTP_ETRN,	 cmd_relay,	  reply_relay },
	{ SMTP_STARTTLS, cmd_starttls,	  reply_relay },	/* answered here */
	{ SMTP_AUTH,	 cmd_auth,	  reply_auth },
	{ SMTP_XCLIENT,	 cmd_refuse,	  reply_relay },	/* never relayed */
	{ SMTP_XFORWARD, cmd_refuse,	  reply_relay },
	{ SMTP_ATRN,	 cmd_refuse,	  reply_relay },
	{ SMTP_TURN,	 cmd_refuse,	  reply_relay },
	{ SMTP_UNKNOWN,	 cmd_unknown,	  reply_relay },
};

/* The row of a verb (SMTP_UNKNOWN's for one not in the table). */
static const struct command_rule *
command_rule(enum smtp_verb verb)
{
	const struct command_rule *rule;

	for (rule = command_table; rule->verb != verb && rule->verb != SMTP_UNKNOWN; rule++)
		;
	return rule;
}

/* Whether the next command may be sent before the answers to earlier ones. */
static bool
may_send_next(const struct session *s)
{
	if (s->backend.pcount == 0)
		return true;
	/*
	 * The ring of commands in flight is full (a client pipelining more
	 * than PENDING_MAX RCPTs used to hit backend_send()'s panic and take
	 * the daemon down): read no further until the backend answers.  A
	 * few slots stay free for what one command may add later (a BDAT
	 * chunk and its end, an RSET after a message).
	 */
	if (s->backend.pcount + 4 > PENDING_MAX)
		return false;
	return !s->last_sync && s->backend.caps.pipelining && s->facts.esmtp;
}

/* One command line from the client buffer, when one is complete. */
static enum step_result
process_command(struct session *s)
{
	const char *head = iobuf_head(&s->client.in);
	size_t max = s->cfg->limits.max_line_length, len;
	const char *lf;
	struct smtp_cmd cmd;
	enum step_result r;

	if (s->deferred || !may_send_next(s))
		return STEP_STOP;
	lf = memchr(head, '\n', s->client.in.len);
	if (s->skip_line) {
		iobuf_consume(&s->client.in, lf ? (size_t)(lf - head) + 1 : s->client.in.len);
		if (lf) {
			s->skip_line = false;
			client_timer_arm(s);	/* a whole (refused) line: the next one may start */
		}
		return lf ? STEP_NEXT : STEP_STOP;
	}
	if (lf == NULL && s->client.in.len < max)
		return STEP_STOP;
	if (lf == NULL || (size_t)(lf - head) + 1 > max) {
		session_log(s, LOG_LVL_WARNING, "command line too long (over %zu octets)", max);
		session_local_reply_of(s, REPLY_LINE_TOO_LONG);
		s->skip_line = lf == NULL;
		iobuf_consume(&s->client.in, lf ? (size_t)(lf - head) + 1 : s->client.in.len);
		if (lf)
			client_timer_arm(s);
		return STEP_NEXT;
	}
	len = (size_t)(lf - head) + 1;
	if (s->srv->stopping && !s->tx.in_mail) {
		session_fail_of(s, REPLY_SHUTTING_DOWN);
		return STEP_STOP;
	}
	if (s->rcpt_refused >= s->cfg->limits.max_refused_recipients) {
		if (s->backend.pcount > 0)
			return STEP_STOP;	/* the replies owed go first */
		session_log(s, LOG_LVL_WARNING, "%u refused recipients without a delivered "
		    "message (limits.max_refused_recipients)", s->rcpt_refused);
		session_fail_of(s, REPLY_TOO_MANY_ERRORS);
		return STEP_STOP;
	}
	if (len < 2 || head[len - 2] != '\r' || memchr(head, '\r', len - 2) != NULL ||
	    memchr(head, '\0', len) != NULL) {
		session_transcript(s, "c>p", head, len);
		session_log(s, LOG_LVL_WARNING, "bare <CR> or <LF> or NUL in command from client");
		session_local_reply_of(s, REPLY_BARE_CRLF_COMMAND);
		iobuf_consume(&s->client.in, len);
		client_timer_arm(s);
		return STEP_NEXT;
	}
	if (!s->line_logged) {
		session_transcript(s, "c>p", head, len);
		s->line_logged = true;
	}
	if (smtp_parse_command(head, len - 2, &cmd) != 0) {
		session_local_reply_of(s, REPLY_BAD_SYNTAX);
		r = STEP_NEXT;
	} else if (s->tx.bdat_data_open && cmd.verb != SMTP_BDAT) {
		/*
		 * Between BDAT chunks turned into DATA the backend is inside its
		 * DATA: a relayed line would become message text and its reply
		 * never come (the session hung).  NOOP is answered here; anything
		 * else ends the session, and the half message is dropped.
		 */
		if (cmd.verb == SMTP_NOOP) {
			session_local_reply_of(s, REPLY_OK);
			r = STEP_NEXT;
		} else {
			session_log(s, LOG_LVL_WARNING, "%s between BDAT chunks relayed as DATA",
			    smtp_verb_name(cmd.verb) ? smtp_verb_name(cmd.verb) : "a command");
			session_fail_of(s, REPLY_ONLY_BDAT);
			r = STEP_STOP;
		}
	} else {
		r = command_rule(cmd.verb)->proceed(s, &cmd, head, len);
	}
	if (r == STEP_NEXT && !session_ending(s)) {
		iobuf_consume(&s->client.in, len);
		s->line_logged = false;
		client_timer_arm(s);	/* timeout.command runs from here to the next line's end */
	}
	return r;
}

/* The status word for a final reply code. */
static const char *
status_of(int code)
{
	return code / 100 == 2 ? "sent" : code / 100 == 4 ? "deferred" : "rejected";
}

/*
 * A held message ends without the backend: the client gets reply, the
 * backend's open transaction is reset, the session goes on.
 */
static void
hold_outcome_local(struct session *s, const char *reply, const char *status)
{
	if (strncmp(reply, "421", 3) == 0) {	/* a module shutting the session */
		session_log_outcome(s, reply, strlen(reply), status);
		session_fail(s, "%s", reply);
		return;
	}
	session_local_reply(s, "%s", reply);
	session_log_outcome(s, reply, strlen(reply), status);
	s->nmessages++;
	if (s->backend.up) {
		backend_send(&s->backend, "RSET\r\n", 6, BS_RESET, SMTP_RSET);
		s->last_sync = false;
	}
	session_reset_transaction(s);
	session_set_state(s, SS_COMMAND, "message outcome");
}

/*
 * A message we keep from the backend on purpose (discarded, quarantined):
 * the client is answered as for a relayed message, with the message's id,
 * as Postfix answers after a milter's discard or hold; only the log says
 * what happened (status), so that a sender cannot tell which of its
 * messages were dropped.
 */
static void
hold_outcome_kept_back(struct session *s, const char *status)
{
	char text[128];

	snprintf(text, sizeof(text), "%s: queued as %s", reply_line(REPLY_OK, NULL, NULL, 0),
	    s->tx.msgid[0] ? s->tx.msgid : s->id);
	hold_outcome_local(s, text, status);
}

/* What a step of the held message (hold.c) asks of the session. */
static void
hold_act(struct session *s, struct hold_result r)
{
	switch (r.action) {
	case HOLD_WAIT:
		return;
	case HOLD_FILTER:
		session_set_state(s, SS_FILTER, "end of data (held)");
		hold_act(s, hold_filter(&s->hold));
		return;
	case HOLD_END:
		hold_outcome_local(s, r.reply, r.status);
		return;
	case HOLD_KEPT_BACK:
		hold_outcome_kept_back(s, r.status);
		return;
	case HOLD_LOST:
		session_fail_of(s, REPLY_BACKEND_LOST);
		return;
	case HOLD_IO_ERROR:
		backend_abort(&s->backend);
		session_fail_of(s, REPLY_LOCAL_IO_ERROR);
		return;
	}
}

/* The answer to the end of a message (DATA's dot, BDAT LAST): its outcome. */
static bool
reply_dot(struct session *s, const char *r, size_t n, int code)
{
	session_reply(s, r, n);
	session_log_outcome(s, r, n, status_of(code));
	s->nmessages++;
	session_reset_transaction(s);
	if (s->state == SS_FILTER)
		session_set_state(s, SS_COMMAND, "message relayed");
	return true;
}

/* The answer to DATA for a held message: 354 sends the store; else it is the outcome. */
static bool
reply_replay_data(struct session *s, const char *r, size_t n, int code)
{
	if (code == 354) {
		hold_act(s, hold_send(&s->hold));
		return false;
	}
	session_reply(s, r, n);
	session_log_outcome(s, r, n, status_of(code));
	s->nmessages++;
	backend_send(&s->backend, "RSET\r\n", 6, BS_RESET, SMTP_RSET);
	session_reset_transaction(s);
	session_set_state(s, SS_COMMAND, "DATA refused");
	return true;
}

/* A pending module answered: go on where the session stopped. */
static void
session_filter_resumed(void *owner)
{
	struct session *s = owner;

	if (s->state == SS_CLOSED)
		return;
	if (s->filter.run.step == FILTER_CONNECT)
		session_greeting(s, NULL, 0);
	else if (s->filter.run.step == FILTER_MESSAGE && s->state == SS_FILTER)
		hold_act(s, hold_filter(&s->hold));
	session_process(s);
}

/*
 * The backend's greeting (r, or the one held when r is NULL): relayed once
 * the connect step of the chain allows it (and the client's name is known,
 * for the modules).
 */
static void
session_greeting(struct session *s, const char *r, size_t n)
{
	const char *reply;

	if (r != NULL) {
		free(s->greeting_text);
		s->greeting_text = xstrndup(r, n);
	}
	if (s->greeting_text == NULL || s->state != SS_CONNECT)
		return;
	if (s->srv->chain.n > 0 && !s->backend.cname_done)
		return;	/* the lookup's end calls again */
	switch (filter_phase(&s->filter, FILTER_CONNECT, NULL, NULL, &reply)) {
	case FILTER_WAIT:
		return;
	case FILTER_REFUSE:
		session_fail(s, "%s", reply);
		return;
	case FILTER_GO:
		break;
	}
	session_reply(s, s->greeting_text, strlen(s->greeting_text));
	free(s->greeting_text);
	s->greeting_text = NULL;
	session_set_state(s, SS_COMMAND, "greeting");
}

/*
 * Run whatever client input can run now, then push the output.  Called after
 * each read from either side and after writes drain.
 */
static void
session_process(struct session *s)
{
	enum step_result r = STEP_STOP;

	if (s->tx.pumping)
		hold_act(s, hold_pump(&s->hold));
again:
	while (!session_ending(s) && s->state != SS_CONNECT &&
	    s->state != SS_FILTER) {
		if (outq_pending(&s->backend.conn.out) > OUT_HIGH_WATER ||
		    outq_pending(&s->client.out) > OUT_HIGH_WATER)
			break;
		switch (s->state) {
		case SS_COMMAND:
			r = s->client.in.len ? process_command(s) : STEP_STOP;
			break;
		case SS_DATA:
		case SS_DISCARD:
			r = s->client.in.len ? process_data(s) : STEP_STOP;
			break;
		case SS_BDAT:
			r = s->client.in.len || s->tx.bdat_left == 0 ? process_bdat(s) : STEP_STOP;
			break;
		case SS_AUTH:
			r = s->client.in.len ? process_auth(s) : STEP_STOP;
			break;
		default:
			r = STEP_STOP;
		}
		if (r == STEP_HELD) {	/* the held message's data is in (data.c) */
			hold_act(s, hold_end(&s->hold));
			r = STEP_NEXT;
		}
		if (r == STEP_STOP)
			break;
	}
	if (s->state == SS_CLOSED)
		return;
	if (!s->client_gone && !s->client_eof && s->state != SS_CLOSING &&
	    outq_pending(&s->backend.conn.out) <= OUT_HIGH_WATER &&
	    outq_pending(&s->client.out) <= OUT_HIGH_WATER && s->client.in.len < CLIENT_INBUF &&
	    conn_tls_pending(&s->client)) {
		size_t before = s->client.in.len;

		if (client_tls_input(s) != 0)
			return;
		if (s->client.in.len > before)
			goto again;
	}
	client_eof_answered(s);
	backend_flush(&s->backend);
	if (!s->client_gone && outq_flush(&s->client.out) != 0) {
		session_close(s);
		return;
	}
	if (s->state == SS_CLOSING && (s->client_gone || outq_pending(&s->client.out) == 0) &&
	    (s->backend.conn.closed || outq_pending(&s->backend.conn.out) == 0)) {
		/* a dropped backend's last write does not count, nor what a
		 * gone client was to get (a TLS alert after a bad handshake) */
		session_close(s);
		return;
	}
	session_update_reading(s);
}

/*
 * A backend reply to something the client sent (BS_COMMAND: the reply
 * handler of the command's row; BS_DOT, BS_BDAT_DATA) or to the replay of a
 * held message: each handler updates what the proxy knows and relays it.
 * Then a 421 ends the session, and a local reply waiting for it goes out.
 */
static void
session_backend_reply(struct session *s, struct pending p, const char *r, size_t n, int code)
{
	bool relayed;

	switch (p.step) {
	case BS_COMMAND:
		relayed = command_rule(p.verb)->reply(s, r, n, code);
		break;
	case BS_DOT:
		relayed = reply_dot(s, r, n, code);
		break;
	case BS_BDAT_DATA:
		relayed = reply_bdat_data(s, r, n, code);
		break;
	case BS_REPLAY_MAIL:
	case BS_REPLAY_RCPT:
		hold_act(s, hold_replay_reply(&s->hold, p.step, r, n, code));
		return;
	case BS_REPLAY_DATA:
		relayed = reply_replay_data(s, r, n, code);
		break;
	default:
		log_panic("%s: step %d", s->id, p.step);
	}
	if (!relayed)
		return;
	if (code == 421 && !session_ending(s)) {
		/* The backend is closing: so do we, after relaying its reason. */
		backend_abort(&s->backend);
		session_set_state(s, SS_CLOSING, "backend sent 421");
	}
	session_flush_deferred(s);
}

/*
 * Plaintext out of TLS into client.in, as far as it has room, and the TLS
 * output (handshake, alerts) to the client.  Returns -1 when TLS failed or
 * the client closed it (the session is then ending).
 */
static int
client_tls_input(struct session *s)
{
	if (conn_tls_input(&s->client) < 0) {
		session_log(s, LOG_LVL_INFO, "TLS: %s", tls_conn_error(s->client.tls));
		if (tls_conn_failed(s->client.tls))
			s->client_gone = true;	/* no reply can reach it; a close_notify is a half-close */
		client_eof(s);
		return -1;
	}
	if (!s->tls_logged && tls_conn_established(s->client.tls)) {
		s->tls_logged = true;
		session_log(s, LOG_LVL_INFO, "TLS established: %s with cipher %s",
		    tls_conn_version(s->client.tls), tls_conn_cipher(s->client.tls));
	}
	return 0;
}

/* Arm the client idle timer for what the client is expected to do next. */
static void
client_timer_arm(struct session *s)
{
	unsigned secs = s->state == SS_DATA || s->state == SS_BDAT || s->state == SS_DISCARD ?
	    s->cfg->timeout.data : s->state == SS_PROXY ? s->cfg->timeout.proxy_protocol :
	    s->cfg->timeout.command;

	uv_timer_start(&s->client.timer, client_timeout, (uint64_t)secs * 1000, 0);
}

/* Bytes (or EOF) from the client. */
static void
client_read(void *owner, ssize_t nread)
{
	struct session *s = owner;

	if (nread < 0) {
		if (nread != UV_EOF) {
			session_log(s, LOG_LVL_INFO, "client read: %s", uv_strerror((int)nread));
			s->client_gone = true;	/* a reset, not a half-close */
		}
		client_eof(s);
		return;
	}
	/*
	 * Between commands, timeout.command bounds the time to send a whole
	 * command line: bytes dripped one at a time must not keep a session
	 * for ever, so reading does not restart it (a complete line or a
	 * reply written does).  Message data and AUTH lines: any byte is
	 * progress, timeout.data is the longest pause.  A PROXY header:
	 * timeout.proxy_protocol from accept, whatever comes.
	 */
	if (s->state != SS_COMMAND && s->state != SS_PROXY)
		client_timer_arm(s);
	metrics_bytes_in(&s->metrics, (size_t)nread);
	if (s->client.tls && client_tls_input(s) != 0)
		return;
	if (s->state == SS_PROXY) {
		proxy_header_input(s);
		return;
	}
	session_process(s);
}

/*
 * The client shut its sending side.  Like Postfix, which meets the EOF only
 * when it reads past everything sent before it, the proxy goes on with the
 * input it has: every command read gets its answer, in order, and the
 * session ends when client_eof_answered() finds nothing left to answer.
 */
static void
client_eof(struct session *s)
{
	if (s->client_eof)
		return;
	s->client_eof = true;
	conn_read_stop(&s->client);
	if (s->state == SS_PROXY) {
		session_log(s, LOG_LVL_WARNING, "PROXY protocol: [%s]:%u closed the connection "
		    "before a whole header (%zu bytes)", s->facts.addr, s->facts.port, s->client.in.len);
		session_close(s);
		return;
	}
	session_process(s);
}

/*
 * After the client's EOF, once the input before it has run out and every
 * command in it has its answer: end the session.  A message the client had
 * not finished is dropped (the backend connection too, before any end of
 * data, so nothing of it is delivered); between messages the backend gets
 * QUIT.  A finished message waits for its outcome (SS_FILTER, or the
 * backend's answer to the end of data) like any other command.
 */
static void
client_eof_answered(struct session *s)
{
	bool unfinished;

	if (!s->client_eof || session_ending(s))
		return;
	if (outq_pending(&s->backend.conn.out) > OUT_HIGH_WATER ||
	    outq_pending(&s->client.out) > OUT_HIGH_WATER)
		return;		/* paused for output, not out of input */
	switch (s->state) {
	case SS_DATA:
	case SS_DISCARD:
	case SS_BDAT:
		unfinished = true;
		break;
	case SS_COMMAND:
	case SS_AUTH:
		if (s->backend.pcount > 0 || s->deferred || s->filter.run.waiting ||
		    memchr(iobuf_head(&s->client.in), '\n', s->client.in.len) != NULL)
			return;		/* answers still to come, or a line still to run */
		/* BDAT chunks without their LAST */
		unfinished = s->tx.bdat_data_open || s->tx.spooling || s->tx.msg_octets > 0;
		break;
	default:
		return;			/* the greeting, or the filters' verdict, first */
	}
	if (unfinished) {
		session_log(s, LOG_LVL_INFO, "client disconnected in the middle of a message "
		    "(%" PRIu64 " octets): dropping it", s->tx.msg_octets);
		backend_abort(&s->backend);
		session_set_state(s, SS_CLOSING, "client gone in a message");
		return;
	}
	if (s->client.in.len > 0)
		session_log(s, LOG_LVL_INFO, "client disconnected after an unfinished command line "
		    "(%zu octets, ignored)", s->client.in.len);
	else
		session_log(s, LOG_LVL_INFO, "client disconnected");
	if (s->state == SS_AUTH)
		backend_abort(&s->backend);
	else
		session_backend_leave(s);
	session_set_state(s, SS_CLOSING, "client gone");
}

/* A write to the client finished. */
static void
client_written(struct outq *q, int status)
{
	struct session *s = q->owner;

	if (s->state == SS_CLOSED)
		return;
	if (status != 0) {
		session_log(s, LOG_LVL_INFO, "client write: %s", uv_strerror(status));
		s->client_gone = true;
		if (session_backend_in_data(s) || s->state == SS_FILTER)
			backend_abort(&s->backend);
		else
			session_backend_leave(s);
		session_close(s);
		return;
	}
	if (s->state == SS_COMMAND)
		client_timer_arm(s);	/* a reply went out: the client's turn starts now */
	session_process(s);
}

/* The client said nothing for too long. */
static void
client_timeout(uv_timer_t *t)
{
	struct session *s = t->data;

	if (s->state == SS_PROXY) {	/* a load balancer: no SMTP reply */
		session_log(s, LOG_LVL_WARNING, "PROXY protocol: no header from [%s]:%u in %us "
		    "(%zu bytes), closing", s->facts.addr, s->facts.port, s->cfg->timeout.proxy_protocol,
		    s->client.in.len);
		session_close(s);
		return;
	}
	if ((s->backend.pcount > 0 && s->state != SS_DATA && s->state != SS_BDAT) ||
	    s->state == SS_FILTER || s->filter.run.waiting) {
		client_timer_arm(s);	/* waiting for the backend or a filter, not the client */
		return;
	}
	session_log(s, LOG_LVL_WARNING, "timeout in state %s", session_state_name(s->state));
	session_fail_of(s, REPLY_TIMEOUT);
}

/*
 * Called on SIGTERM and when its deadline passes: a session between
 * transactions (or every session, when forced) gets 421 now; one inside a
 * transaction gets it at the next command after the transaction ends.
 */
static void
session_shutdown(struct session *s)
{
	if (s->state == SS_CLOSED)
		return;
	if (s->state == SS_PROXY) {
		session_close(s);	/* no session yet, and no SMTP reply to a load balancer */
		return;
	}
	if (s->state == SS_CLOSING) {
		if (s->srv->shutdown_forced)
			session_close(s);	/* its last words had their chance */
		return;
	}
	if (s->srv->shutdown_forced ||
	    (s->state == SS_COMMAND && s->backend.pcount == 0 && !s->tx.in_mail)) {
		session_fail_of(s, REPLY_SHUTTING_DOWN);
	}
}

/*
 * The backend is gone (backend.c logged why; an unreachable one's handle
 * may still be open: session_close() aborts it): the client hears 421, or
 * the backend's own 421 as it is.
 */
static void
on_backend_lost(void *owner, enum backend_loss why, const char *r, size_t n)
{
	struct session *s = owner;

	switch (why) {
	case BACKEND_UNREACHABLE:
		session_fail_of(s, REPLY_BACKEND_UNREACHABLE);
		return;
	case BACKEND_LOST:
		if (s->state == SS_CLOSING) {
			session_process(s);	/* closes once the last reply is out */
			return;
		}
		/* FALLTHROUGH */
	case BACKEND_WRITE_FAILED:
		session_fail_of(s, REPLY_BACKEND_LOST);
		return;
	case BACKEND_TLS_FAILED:
		session_fail_of(s, REPLY_BACKEND_TLS_FAILED);
		return;
	case BACKEND_TIMEOUT:
		session_fail_of(s, REPLY_BACKEND_TIMEOUT);
		return;
	case BACKEND_SAID_421:		/* e.g. the backend's own idle timeout */
		session_reply(s, r, n);
		session_set_state(s, SS_CLOSING, "backend sent 421");
		return;
	}
}

/* The client's name is known: a greeting held for the filters' connect step may go. */
static void
on_backend_name_known(void *owner)
{
	struct session *s = owner;

	if (s->state == SS_CONNECT && s->greeting_text) {
		session_greeting(s, NULL, 0);
		session_process(s);
	}
}

static void
on_backend_greeting(void *owner, const char *r, size_t n)
{
	session_greeting(owner, r, n);
}

static void
on_backend_reply(void *owner, struct pending p, const char *r, size_t n, int code)
{
	session_backend_reply(owner, p, r, n, code);
}

static void
on_backend_progress(void *owner)
{
	session_process(owner);
}

static void
on_backend_closed(void *owner)
{
	session_unref(owner);
}

static void
on_backend_transcript(void *owner, const char *dir, const char *p, size_t n)
{
	session_transcript(owner, dir, p, n);
}

/* What the backend reports up (backend.h). */
static const struct backend_events backend_events = {
	.greeting = on_backend_greeting,
	.reply = on_backend_reply,
	.lost = on_backend_lost,
	.progress = on_backend_progress,
	.name_known = on_backend_name_known,
	.closed = on_backend_closed,
	.transcript = on_backend_transcript,
};

/* Tell each session to stop (idle ones now; all of them when forced). */
void
sessions_shutdown(struct server *srv)
{
	struct session *s, *next;

	for (s = srv->sessions; s; s = next) {
		next = s->next;
		session_shutdown(s);
	}
}

/* A new session for the listener to accept into. */
uv_tcp_t *
session_new(struct server *srv, const struct config_addr *la)
{
	struct session *s = xcalloc(1, sizeof(*s));

	s->srv = srv;
	s->laddr = la;
	s->cfg = srv->cfg;
	snprintf(s->id, sizeof(s->id), "%08" PRIX64, ++srv->next_id);
	conn_init(&s->client, srv->loop, s);
	backend_init(&s->backend, srv->cfg, srv->loop, s->id, &backend_events, s);
	s->hold = (struct hold_env){ .id = s->id, .cfg = s->cfg, .client = &s->facts, .tx = &s->tx,
	    .backend = &s->backend, .filter = &s->filter };
	s->handles = 1;
	return &s->client.tcp;
}

/* The accept failed: just release the handle. */
void
session_discard(uv_tcp_t *client)
{
	struct session *s = client->data;

	session_set_state(s, SS_CLOSED, "accept failed");
	conn_close(&s->client, session_handle_closed);
}

/* Set the client's address and port (caddr, cport, peer) from a socket address. */
static void
set_client(struct session *s, const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

		uv_ip6_name(sin6, s->facts.addr, sizeof(s->facts.addr));
		s->facts.port = ntohs(sin6->sin6_port);
	} else {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		uv_ip4_name(sin, s->facts.addr, sizeof(s->facts.addr));
		s->facts.port = ntohs(sin->sin_port);
	}
	memcpy(&s->peer, ss, sizeof(*ss));
}

/*
 * Count the connection in the table shared by all processes (connlimit.c):
 * over limits.max_connections in all, or limits.max_connections_per_client
 * from this address (the real one, after a PROXY header) or, when the
 * table is full, from all the addresses counted together in its overflow
 * entry, the client gets 421 4.7.0 and the session closes.  True when it
 * is over.  per_client false: the total only (a PROXY protocol listener's
 * connection waiting for its header; the address comes with the header).
 */
static bool
over_limits(struct session *s, bool per_client)
{
	const struct config *cfg = s->cfg;
	struct sockaddr_storage counted;
	char range[INET6_ADDRSTRLEN + 8] = "", line[512];
	enum connlimit_result r;
	unsigned n;

	/* IPv6 clients by their network (limits.client_ipv6_prefix_length). */
	connlimit_client_addr(&s->peer, cfg->limits.client_ipv6_prefix_length, &counted);
	if (s->climit.total)	/* counted while it waited for a PROXY header */
		r = connlimit_acquire_client(&counted, cfg->limits.max_connections_per_client,
		    &s->climit, &n);
	else
		r = connlimit_acquire(&counted, cfg->limits.max_connections,
		    per_client ? cfg->limits.max_connections_per_client : 0, &s->climit, &n);
	if (counted.ss_family == AF_INET6 &&
	    memcmp(&((struct sockaddr_in6 *)&counted)->sin6_addr,
	    &((struct sockaddr_in6 *)&s->peer)->sin6_addr, 16) != 0) {
		char net[INET6_ADDRSTRLEN];

		uv_ip6_name((const struct sockaddr_in6 *)&counted, net, sizeof(net));
		snprintf(range, sizeof(range), " in %s/%u", net, cfg->limits.client_ipv6_prefix_length);
	}
	switch (r) {
	case CONNLIMIT_OK:
		return false;
	case CONNLIMIT_TOTAL:
		session_log(s, LOG_LVL_WARNING, "too many connections (%u, limits.max_connections)", n);
		session_set_state(s, SS_CLOSING, "too many connections");
		session_replyf(s, "%s", reply_line(REPLY_TOO_MANY_CONNECTIONS, cfg->hostname, line,
		    sizeof(line)));
		break;
	case CONNLIMIT_CLIENT:
		session_log(s, LOG_LVL_WARNING, "too many connections from [%s] (%u%s, "
		    "limits.max_connections_per_client)", s->facts.addr, n, range);
		session_set_state(s, SS_CLOSING, "too many connections from the client");
		session_replyf(s, "%s from %s", reply_line(REPLY_TOO_MANY_CONNECTIONS, cfg->hostname,
		    line, sizeof(line)), s->facts.addr);
		break;
	case CONNLIMIT_OVERFLOW:
		session_log(s, LOG_LVL_WARNING, "too many connections from [%s] and the other "
		    "addresses counted together while the connection table is full (%u, "
		    "limits.max_connections_per_client)", s->facts.addr, n);
		session_set_state(s, SS_CLOSING, "too many connections from addresses counted together");
		session_replyf(s, "%s", reply_line(REPLY_TOO_MANY_CONNECTIONS, cfg->hostname, line,
		    sizeof(line)));
		break;
	}
	if (outq_flush(&s->client.out) != 0)
		session_close(s);
	return true;
}

/*
 * The client is known (the peer, or the client a PROXY header named): log
 * it, apply the connection limits, start TLS on an implicit TLS listener,
 * open the filters and connect to the backend.
 */
static void
session_begin(struct session *s)
{
	struct server *srv = s->srv;

	session_set_state(s, SS_CONNECT, "client known");
	if (s->lbaddr[0])
		session_log(s, LOG_LVL_INFO, "connect from [%s]:%u via [%s]:%u", s->facts.addr,
		    s->facts.port, s->lbaddr, s->lbport);
	else
		session_log(s, LOG_LVL_INFO, "connect from [%s]:%u", s->facts.addr, s->facts.port);

	if (over_limits(s, true))
		return;
	if (s->laddr && s->laddr->implicit_tls && srv->tls)
		conn_starttls(&s->client, tls_conn_new(srv->tls));	/* RFC 8314: TLS from the first byte */
	client_timer_arm(s);
	filter_session_open(&s->filter, &(struct filter_env){
		.id = s->id, .chain = &srv->chain, .loop = srv->loop, .hostname = s->cfg->hostname,
		.client = &s->facts, .conn = &s->client, .client_name = s->backend.cname,
		.tx = &s->tx, .owner = s, .resumed = session_filter_resumed,
	});
	s->handles++;		/* the backend's, until its events.closed */
	backend_connect(&s->backend, &s->peer, s->facts.addr, s->facts.port);
	if (s->state == SS_CLOSED)
		return;
	if (s->client.tls && s->client.in.len > 0) {	/* TLS bytes that came with the PROXY header */
		tls_conn_feed(s->client.tls, iobuf_head(&s->client.in), s->client.in.len);
		iobuf_consume(&s->client.in, s->client.in.len);
		if (client_tls_input(s) != 0)
			return;		/* client_eof() ends the session as for any bad handshake */
	}
	session_update_reading(s);
}

/*
 * Bytes from a proxy_protocol listener before the header is whole: the
 * header's client replaces the load balancer's address and its destination
 * our own (the address the client connected to), what follows it
 * stays in client.in for the session.  A bad header closes the connection with
 * no reply (the peer is a load balancer, not an SMTP client).
 */
static void
proxy_header_input(struct session *s)
{
	struct proxyproto pp;
	enum proxyproto_result r;

	r = proxyproto_parse(iobuf_head(&s->client.in), s->client.in.len, &pp);
	if (r == PP_NEED_MORE && s->client.in.len < PROXYPROTO_MAX)
		return;
	if (r != PP_OK) {
		session_log(s, LOG_LVL_WARNING, "PROXY protocol: bad header from [%s]:%u: %s, "
		    "closing", s->facts.addr, s->facts.port, r == PP_BAD ? pp.error : "too long");
		session_close(s);
		return;
	}
	iobuf_consume(&s->client.in, pp.len);
	snprintf(s->lbaddr, sizeof(s->lbaddr), "%s", s->facts.addr);
	s->lbport = s->facts.port;
	if (pp.local) {
		session_log(s, LOG_LVL_INFO, "PROXY protocol v%d: LOCAL from [%s]:%u",
		    pp.version, s->facts.addr, s->facts.port);
	} else {
		set_client(s, &pp.src);
		memcpy(&s->facts.local, &pp.dst, sizeof(s->facts.local));	/* as Postfix: the server address too */
	}
	session_begin(s);
	if (!session_ending(s) && s->client.in.len > 0)
		session_process(s);	/* the client spoke before the greeting */
}

/* Set up a session on an accepted connection: read the PROXY header first, or begin. */
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

	if (uv_tcp_getpeername(&s->client.tcp, (struct sockaddr *)&ss, &sslen) == 0)
		set_client(s, &ss);
	/* TCP_NODELAY: inherited from the listening socket (listener_bind). */
	conn_open(&s->client, CLIENT_INBUF, client_read, client_written);
	s->handles++;
	metrics_session_open(&s->metrics, s->id, s->facts.addr, s->facts.port);

	if (s->laddr && s->laddr->proxy_protocol) {
		/*
		 * Counted in limits.max_connections from accept, as any
		 * connection; per client only when the header names it (under
		 * the balancer's address every client would count as one).
		 * timeout.proxy_protocol runs from accept: bytes do not
		 * restart it, so a header dripped a byte at a time ends there.
		 */
		if (over_limits(s, false))
			return;
		session_set_state(s, SS_PROXY, "proxy_protocol listener");
		client_timer_arm(s);
		session_update_reading(s);
		return;
	}
	session_begin(s);
}
