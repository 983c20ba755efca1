/*
 * auth.c - AUTH (RFC 4954) as the proxy relays it (see auth.h): the command
 * checked against what the client was offered, the exchange's lines relayed
 * as they are (a line that is not clean cancels it with "*"), the backend's
 * answer ending or going on with it.  The backend does the checking; the
 * identity is read from the responses for filters and logs (esmtp.c), the
 * secrets never reach a log line (session.c masks them in the transcript).
 *
 * Beside command.c, which calls it for the AUTH verb and the exchange's
 * lines: it relays, answers and changes the state through backend.c and
 * session.c, and never calls command.c.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "esmtp.h"
#include "log.h"
#include "replies.h"
#include "session.h"

/*
 * AUTH (RFC 4954): relayed to the backend, which does the checking; the
 * exchange's lines follow in SS_AUTH.  Before TLS it gets 538 unless
 * auth_requires_tls is off.
 */
enum step_result
cmd_auth(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	const char *sp;
	size_t mlen;

	if (!esmtp_offered(&s->offered, "AUTH")) {
		if (s->offered.backend_auth && !s->client.tls && s->cfg->auth_requires_tls && !s->facts.auth_done)
			session_local_reply_of(s, REPLY_AUTH_NEEDS_TLS);
		else if (s->facts.auth_done)
			session_local_reply_of(s, REPLY_ALREADY_AUTHENTICATED);
		else
			session_local_reply_of(s, REPLY_NOT_IMPLEMENTED);
		return STEP_NEXT;
	}
	if (s->facts.auth_done) {
		session_local_reply_of(s, REPLY_ALREADY_AUTHENTICATED);
		return STEP_NEXT;
	}
	if (s->tx.in_mail) {
		session_local_reply_of(s, REPLY_MAIL_IN_PROGRESS);
		return STEP_NEXT;
	}
	if (s->backend.pcount > 0)
		return STEP_STOP;
	sp = memchr(cmd->arg, ' ', cmd->arglen);
	mlen = sp ? (size_t)(sp - cmd->arg) : cmd->arglen;
	if (mlen == 0 || mlen >= sizeof(s->facts.auth_mech)) {
		session_local_reply_of(s, REPLY_SYNTAX_AUTH);
		return STEP_NEXT;
	}
	snprintf(s->facts.auth_mech, sizeof(s->facts.auth_mech), "%.*s", (int)mlen, cmd->arg);
	s->facts.auth_user[0] = '\0';
	if (sp) {
		const char *ir = sp + 1;

		esmtp_auth_identity(&s->facts, ir, cmd->arglen - (size_t)(ir - cmd->arg));
	}
	backend_send(&s->backend, line, len, BS_COMMAND, SMTP_AUTH);
	s->last_sync = true;	/* the 334 or the outcome first */
	return STEP_NEXT;
}

/* One line of an AUTH exchange (after a 334): relayed as it is, "*" cancels. */
enum step_result
process_auth(struct session *s)
{
	const char *head = iobuf_head(&s->client.in);
	const char *lf = memchr(head, '\n', s->client.in.len);
	size_t len;

	if (lf == NULL) {
		if (s->client.in.len < 12288)	/* RFC 4954's line limit */
			return STEP_STOP;
		session_fail_of(s, REPLY_AUTH_LINE_TOO_LONG);
		return STEP_STOP;
	}
	len = (size_t)(lf - head) + 1;
	session_transcript(s, "c>p", head, len);
	if (len < 2 || head[len - 2] != '\r' || memchr(head, '\r', len - 2) ||
	    memchr(head, '\0', len)) {
		/* Not a clean line: cancel the exchange at the backend. */
		backend_send(&s->backend, "*\r\n", 3, BS_COMMAND, SMTP_AUTH);
	} else {
		if (strcasecmp(s->facts.auth_mech, "PLAIN") == 0 || strcasecmp(s->facts.auth_mech, "CRAM-MD5") == 0 ||
		    strcasecmp(s->facts.auth_mech, "LOGIN") == 0)
			esmtp_auth_identity(&s->facts, head, len - 2);
		backend_send(&s->backend, head, len, BS_COMMAND, SMTP_AUTH);
	}
	s->last_sync = true;
	iobuf_consume(&s->client.in, len);
	session_set_state(s, SS_COMMAND, "AUTH line relayed");
	return STEP_NEXT;
}

/* AUTH's answer: 334 goes on with the exchange; 235 or a failure ends it. */
bool
reply_auth(struct session *s, const char *r, size_t n, int code)
{
	if (code == 334) {
		session_reply(s, r, n);
		session_set_state(s, SS_AUTH, "334");
		return true;
	}
	if (code == 235) {
		s->facts.auth_done = true;
		session_log(s, LOG_LVL_INFO, "authenticated: sasl_method=%s sasl_username=%s",
		    s->facts.auth_mech, s->facts.auth_user[0] ? s->facts.auth_user : "(unknown)");
	} else {
		session_log(s, LOG_LVL_INFO, "authentication failed: sasl_method=%s",
		    s->facts.auth_mech);
		s->facts.auth_user[0] = '\0';
	}
	session_reply(s, r, n);
	return true;
}
