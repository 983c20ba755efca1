/*
 * session.h - one client connection and its backend connection.
 *
 * session.c owns it and is the bottom of the session: its log lines, state
 * change, replies in order, and its end, declared below; it calls nothing
 * above it.  Above it: command.c (the command table and the state machine,
 * the session's start), and beside that, called by it, data.c (DATA and
 * BDAT) and auth.c (AUTH), which answer and change the state through
 * session.c.  Below, working on their own parts and not on this struct:
 * hold.c (the held message: struct hold_env), esmtp.c (struct
 * esmtp_offered), quarantine.c.  The transaction is its own struct
 * (txn.h); what is known about the client is a struct client_facts
 * (clientfacts.h); the filter chain's run is a struct filter_session
 * (filter.h), filter.c's, which knows nothing else of the session.
 * The client's socket, timer, buffers and TLS are a struct conn (conn.c);
 * the backend is a struct backend (backend.c), an object below the session
 * that reports up through callbacks.  Memory: everything a session owns
 * hangs off this struct and is freed in one place, session_free()
 * (session.c), once every handle is closed.
 */
#ifndef SMTPCHAIN_SESSION_H
#define SMTPCHAIN_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <uv.h>

#include "backend.h"
#include "clientfacts.h"
#include "conn.h"
#include "connlimit.h"
#include "metrics.h"
#include "dotstream.h"
#include "ehlo.h"
#include "esmtp.h"
#include "filter.h"
#include "hold.h"
#include "iobuf.h"
#include "log.h"
#include "replies.h"
#include "server.h"
#include "smtp.h"
#include "tls.h"
#include "txn.h"

/* What the client side is doing. */
enum session_state {
	SS_CONNECT = 0,		/* waiting for the backend's greeting (and the XCLIENT prelude) */
	SS_COMMAND,		/* reading commands */
	SS_DATA,		/* relaying message data after 354 */
	SS_BDAT,		/* relaying the octets of one BDAT chunk */
	SS_DISCARD,		/* message over the size limit: reading to its end */
	SS_FILTER,		/* a held message: filters, then relayed to the backend */
	SS_AUTH,		/* an AUTH exchange: client lines relayed as they are */
	SS_CLOSING,		/* last reply going out, then close (SS_CLOSED) */
	SS_PROXY,		/* proxy_protocol listener: reading the PROXY header first */
	SS_CLOSED,		/* session_close(): its handles are closing; freed at the last */
	SS_STATE_MAX
};

#define CLIENT_INBUF	32768		/* client input buffer */

struct session {
	struct session		*next, *prev;	/* server's list */
	struct server		*srv;
	const struct config	*cfg;
	char			 id[16];	/* for every log line */
	enum session_state	 state;

	/* client side */
	struct conn		 client;	/* in: commands and data; timer: idle */
	struct client_facts	 facts;		/* its address, greeting, authentication */
	bool			 client_eof;	/* the client shut its sending side (FIN or
						   close_notify): what it sent before is still
						   answered, in order, then the session ends */
	bool			 client_gone;	/* the client cannot be written to any more */
	bool			 skip_line;	/* discarding the rest of an over-long line */
	bool			 line_logged;	/* the current command line is in the transcript */
	struct sockaddr_storage	 peer;		/* the client's address (the real one, after a PROXY header) */
	char			 lbaddr[INET6_ADDRSTRLEN];	/* with a PROXY header: the load */
	unsigned		 lbport;		/* balancer's address and port, else "" */
	struct connlimit_ticket	 climit;	/* counted in the shared connection table */
	const struct config_addr *laddr;	/* the listener it came in on */
	bool			 tls_logged;
	char			*deferred;	/* a local reply waiting for the backend's answers */

	/* backend side (backend.c: its connection, prelude, pending replies,
	 * and the client's verified name, backend.cname) */
	struct backend		 backend;
	bool			 last_sync;	/* the last command sent ends a pipelining group */

	/* what the client was offered (after the rewrite) */
	bool			 ehlo_done;	/* a 250 to EHLO or HELO */
	struct esmtp_offered	 offered;	/* the list, its SIZE, the backend's AUTH line */

	/* the transaction (txn.h), and what outlives it */
	struct txn		 tx;
	uint64_t		 msgno;		/* messages numbered in this session */
	unsigned		 rcpt_sent;	/* RCPTs in flight */
	unsigned		 rcpt_refused;	/* since the last delivered message */

	/* the filter chain's run for this session (filter.c's) */
	struct filter_session	 filter;
	struct hold_env		 hold;		/* a held message's view of this session (hold.c) */
	char			*greeting_text;	/* held until the connect step is decided */

	struct metrics_session	 metrics;	/* metrics.c: live row, timings */

	unsigned		 handles;	/* open uv handles; free at zero */
	uint64_t		 nmessages;
};

/* Whether the session is ending: its last reply going out, or its handles closing. */
static inline bool
session_ending(const struct session *s)
{
	return s->state == SS_CLOSING || s->state == SS_CLOSED;
}

/* What processing one unit of client input led to (command.c, data.c, auth.c). */
enum step_result {
	STEP_NEXT,		/* consumed; look at the next input */
	STEP_STOP,		/* wait: more input, a backend reply, or output room */
	STEP_HELD,		/* data.c: a held message's data is all in: the session
				   runs hold_end(), then goes on as for STEP_NEXT */
};

/*
 * session.c: the session's lower layer (toward the client), which calls
 * nothing above it.
 */

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
