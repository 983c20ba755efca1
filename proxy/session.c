/*
 * session.c - one session's lower layer, below the command logic
 * (command.c): the session's log lines and transcript, its state change,
 * what the client hears and in which order (a reply of the proxy's own
 * waits for the relayed commands before it), and the session's end:
 * session_fail(), session_close(), and session_free(), the one place its
 * memory goes.
 *
 * Calls only down (conn.c, backend.c, filter.c, txn.c, metrics.c,
 * connlimit.c, replies.c, log.c): command.c and the parts of the session
 * beside it (data.c, auth.c, hold.c) call it, it never calls them.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filter.h"
#include "log.h"
#include "replies.h"
#include "session.h"

static const char *const state_names[SS_STATE_MAX] = {
	"CONNECT", "COMMAND", "DATA", "BDAT", "DISCARD", "FILTER", "AUTH", "CLOSING", "PROXY",
	"CLOSED",
};

/* The name of a state, for log lines. */
const char *
session_state_name(enum session_state st)
{
	return state_names[st];
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
 * Credentials never reach the log: an AUTH command shows its mechanism
 * only, and every line of an AUTH exchange is masked.  Returns true when
 * p was such a line (out then holds what may be shown).
 */
static bool
auth_secret(const struct session *s, const char *p, size_t n, char *out, size_t outlen)
{
	size_t m = 5;

	if (s->state == SS_AUTH) {
		snprintf(out, outlen, "(AUTH data not logged)");
		return true;
	}
	if (n < 5 || strncasecmp(p, "AUTH ", 5) != 0)
		return false;
	while (m < n && p[m] != ' ')
		m++;
	snprintf(out, outlen, "%.*s%s", (int)(m < 64 ? m : 64), p,
	    m < n ? " (initial response not logged)" : "");
	return true;
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
		if (dir[0] != 'b' && dir[2] != 'c' && auth_secret(s, p, shown, line, sizeof(line)))
			;	/* client-to-backend AUTH data: masked */
		else
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
	if (s->state == st || s->state == SS_CLOSED)
		return;	/* CLOSED is final */
	session_log(s, LOG_LVL_DEBUG, "state %s -> %s (%s)", state_names[s->state],
	    state_names[st], why);
	s->state = st;
	if (st != SS_CLOSED)	/* its metrics row goes with metrics_session_close() */
		metrics_session_state(&s->metrics, state_names[st], s->facts.addr, s->facts.port);
}

/* Send bytes to the client as they are (a relayed or rewritten reply). */
void
session_reply(struct session *s, const char *p, size_t n)
{
	if (s->state == SS_CLOSED || s->client_gone)
		return;
	session_transcript(s, "p>c", p, n);
	metrics_bytes_out(&s->metrics, n);
	if (conn_write(&s->client, p, n) != 0)
		session_log(s, LOG_LVL_INFO, "TLS: %s", tls_conn_error(s->client.tls));
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
 * Callers check s->backend.pcount first where they can simply wait instead.
 */
void
session_local_reply(struct session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (s->backend.pcount == 0) {
		session_replyf(s, "%s", line);
		return;
	}
	if (s->deferred)
		log_panic("%s: two deferred replies", s->id);
	s->deferred = xstrdup(line);
}

/* One of the proxy's own replies (replies.c), in order: session_local_reply(). */
void
session_local_reply_of(struct session *s, enum reply_id id)
{
	char buf[512];

	session_local_reply(s, "%s", reply_line(id, s->cfg->hostname, buf, sizeof(buf)));
}

/* Send the held local reply once every relayed command before it is answered. */
void
session_flush_deferred(struct session *s)
{
	if (s->deferred && s->backend.pcount == 0) {
		session_replyf(s, "%s", s->deferred);
		free(s->deferred);
		s->deferred = NULL;
	}
}

/*
 * The backend is not wanted any more: QUIT between transactions, a dropped
 * connection inside DATA (so nothing half-sent is delivered).
 */
void
session_backend_leave(struct session *s)
{
	if (session_backend_in_data(s))
		backend_abort(&s->backend);
	else
		backend_quit(&s->backend);
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

	if (session_ending(s))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	session_log(s, LOG_LVL_INFO, "closing: %s", line);
	free(s->deferred);
	s->deferred = NULL;
	session_replyf(s, "%s", line);
	session_backend_leave(s);
	session_set_state(s, SS_CLOSING, "fail");
	session_update_reading(s);
	if (outq_flush(&s->client.out) != 0 || outq_pending(&s->client.out) == 0)
		session_close(s);
}

/* The last word of the session from the replies table (replies.c): session_fail(). */
void
session_fail_of(struct session *s, enum reply_id id)
{
	char buf[512];

	session_fail(s, "%s", reply_line(id, s->cfg->hostname, buf, sizeof(buf)));
}

/* The transaction is over (its outcome, RSET, a new EHLO/HELO). */
void
session_reset_transaction(struct session *s)
{
	txn_reset(&s->tx);
	filter_message_end(&s->filter);
}

/* Whether the backend is inside DATA (or BDAT): then only a dropped
 * connection keeps a partial message from delivery. */
bool
session_backend_in_data(const struct session *s)
{
	if (s->tx.pumping || s->tx.bdat_data_open)
		return true;
	if (s->tx.spooling)
		return false;
	return s->state == SS_DATA || s->state == SS_BDAT || s->state == SS_DISCARD;
}

/* Start or stop reading the client, by state and by output backlog. */
void
session_update_reading(struct session *s)
{
	bool want = !session_ending(s) && !s->client_gone && !s->client_eof &&
	    s->client.in.len < CLIENT_INBUF &&
	    outq_pending(&s->backend.conn.out) <= OUT_HIGH_WATER &&
	    outq_pending(&s->client.out) <= OUT_HIGH_WATER;

	if (want)
		conn_read_start(&s->client);
	else
		conn_read_stop(&s->client);
}

/* A refusal of the envelope, logged the way Postfix logs NOQUEUE rejects. */
void
session_log_refusal(struct session *s, const char *what, const char *r, size_t n)
{
	char reply[512];

	while (n > 0 && (r[n - 1] == '\n' || r[n - 1] == '\r'))
		n--;
	printable(r, n, reply, sizeof(reply));
	session_log(s, LOG_LVL_INFO, "reject: %s from [%s]:%u: %s; from=<%s> helo=<%s>",
	    what, s->facts.addr, s->facts.port, reply, s->tx.from, s->facts.helo);
}

/* Summary line for a message: what an operator greps for. */
void
session_log_outcome(struct session *s, const char *r, size_t n, const char *status)
{
	char reply[512], by[128] = "", tls[700] = "", btls[96] = "";
	const char *decider = s->filter.run.verdict != SC_CONTINUE ? filter_decider(&s->filter) : "";

	while (n > 0 && (r[n - 1] == '\n' || r[n - 1] == '\r'))
		n--;
	metrics_message_outcome(&s->metrics, status);
	if (strcmp(status, "sent") == 0)
		s->rcpt_refused = 0;	/* errors count "without delivering mail", as in Postfix */
	printable(r, n, reply, sizeof(reply));
	if (decider[0])
		snprintf(by, sizeof(by), " filter=%s", decider);
	if (s->client.tls && tls_conn_established(s->client.tls))
		tls_conn_summary(s->client.tls, tls, sizeof(tls));
	if (s->cfg->backend_tls != BACKEND_TLS_NONE) {
		struct tls_conn *bt = s->backend.tls_up ? s->backend.conn.tls : NULL;

		snprintf(btls, sizeof(btls), " backend_tls=%s%s%s", bt ? tls_conn_version(bt) : "none",
		    bt ? "/" : "", bt ? tls_conn_cipher(bt) : "");
	}
	session_log(s, LOG_LVL_INFO, "msgid=%s client=[%s]:%u helo=<%s>%s%s from=<%s> nrcpt=%u "
	    "size=%" PRIu64 "%s%s status=%s%s%s reply=\"%s\"", s->tx.msgid[0] ? s->tx.msgid : s->id,
	    s->facts.addr, s->facts.port, s->facts.helo,
	    s->facts.auth_done ? " sasl_username=" : "", s->facts.auth_done ? s->facts.auth_user : "",
	    s->tx.from, s->tx.rcpt_ok, s->tx.msg_octets, tls, btls, status, by,
	    s->tx.modified ? " modified=yes" : "", reply);
}

/* Close every handle; the session is freed when the last one has closed. */
void
session_close(struct session *s)
{
	struct server *srv = s->srv;

	if (s->state == SS_CLOSED)
		return;
	session_set_state(s, SS_CLOSED, "session closed");
	if (s->prev)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	srv->nsessions--;
	connlimit_release(&s->climit);
	metrics_session_close(&s->metrics);
	session_log(s, LOG_LVL_DEBUG, "closing session (%" PRIu64 " messages)", s->nmessages);
	backend_abort(&s->backend);
	backend_release(&s->backend);
	filter_session_close(&s->filter);
	conn_close(&s->client, session_handle_closed);
	uv_close((uv_handle_t *)&s->client.timer, session_handle_closed);
	if (srv->session_closed)
		srv->session_closed(srv);	/* the worker's: is it drained? */
}

/* Free the session itself: the one place its memory goes. */
static void
session_free(struct session *s)
{
	conn_free(&s->client);
	session_reset_transaction(s);
	txn_free(&s->tx);
	backend_free(&s->backend);
	free(s->greeting_text);
	free(s->offered.backend_auth);
	free(s->offered.reply);
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

void
session_handle_closed(uv_handle_t *h)
{
	session_unref(h->data);
}
