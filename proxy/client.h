/*
 * client.h - the session's side toward the client, below the command logic
 * (client.c): log lines, the transcript, the state change, replies in
 * order, and the session's end.  Calls nothing above it.
 */
#ifndef SMTPCHAIN_CLIENT_H
#define SMTPCHAIN_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "log.h"
#include "replies.h"
#include "session.h"

/* A log line prefixed with the session id. */
#define session_log(s, lvl, ...)	log_id((s)->id, (lvl), __VA_ARGS__)
/* A command or reply in the transcript: dir is c>p, p>b, b>p or p>c. */
void	session_transcript(struct session *s, const char *dir, const char *p, size_t n);
/* The refusal of MAIL or RCPT, logged as Postfix logs NOQUEUE rejects. */
void	session_log_refusal(struct session *s, const char *what, const char *r, size_t n);
/* The summary line of a message (status: sent, deferred, rejected, ...). */
void	session_log_outcome(struct session *s, const char *r, size_t n, const char *status);

/* The only place the state changes (logged at debug level). */
void	session_set_state(struct session *s, enum session_state st, const char *why);
const char *session_state_name(enum session_state st);

/* To the client now, as is (a relayed or rewritten reply). */
void	session_reply(struct session *s, const char *p, size_t n);
/* One line of our own, now. */
void	session_replyf(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* One line of our own, in order: held while relayed commands await answers. */
void	session_local_reply(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void	session_local_reply_of(struct session *s, enum reply_id id);
/* The held local reply, once every relayed command before it is answered. */
void	session_flush_deferred(struct session *s);

/* Whether the backend is inside DATA or BDAT (only a dropped connection
 * keeps a partial message from delivery). */
bool	session_backend_in_data(const struct session *s);
/* The backend is not wanted any more: QUIT, or dropped inside DATA. */
void	session_backend_leave(struct session *s);
/* The transaction is over (its outcome, RSET, a new EHLO/HELO). */
void	session_reset_transaction(struct session *s);
/* Start or stop reading the client, by state and by output backlog. */
void	session_update_reading(struct session *s);

/* Reply, then close both sides: the last word of a session. */
void	session_fail(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void	session_fail_of(struct session *s, enum reply_id id);
/* Close every handle; the session is freed when the last one has closed. */
void	session_close(struct session *s);
/* A handle or request is done; the session is freed at the last. */
void	session_unref(struct session *s);
/* uv_close()'s callback for the session's handles. */
void	session_handle_closed(uv_handle_t *h);

#endif
