/*
 * session.h - one client connection and its backend connection.
 *
 * Private to session.c (the client side: the command table and the state
 * machine) and the session's parts below it: client.c (log lines, state
 * change, replies in order, the session's end), data.c (DATA and BDAT),
 * auth.c (AUTH), hold.c (the held message) and quarantine.c.  The
 * transaction is its own struct (txn.h); what is known about the client is
 * a struct client_facts (clientfacts.h); the filter chain's run is a struct
 * filter_session (filter.h), filter.c's, which knows nothing else of this.
 * The client's socket, timer, buffers and TLS are a struct conn (conn.c);
 * the backend is a struct backend (backend.c), an object below the session
 * that reports up through callbacks.  Memory: everything a session owns
 * hangs off this struct and is freed in one place, session_free()
 * (client.c), once every handle is closed.
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
#include "filter.h"
#include "iobuf.h"
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
#define OUT_HIGH_WATER	262144		/* stop reading the other side above this */

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
	char			*backend_auth;	/* the backend's "AUTH mech..." EHLO line, or NULL */
	bool			 ehlo_done;	/* a 250 to EHLO or HELO */
	struct ehlo_caps	 ccaps;
	char			*offered;	/* the rewritten list, to check parameters */

	/* the transaction (txn.h), and what outlives it */
	struct txn		 tx;
	uint64_t		 msgno;		/* messages numbered in this session */
	unsigned		 rcpt_sent;	/* RCPTs in flight */
	unsigned		 rcpt_refused;	/* since the last delivered message */

	/* the filter chain's run for this session (filter.c's) */
	struct filter_session	 filter;
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

/* What processing one unit of client input led to (session.c, data.c, auth.c). */
enum step_result {
	STEP_NEXT,		/* consumed; look at the next input */
	STEP_STOP,		/* wait: more input, a backend reply, or output room */
	STEP_HELD,		/* data.c: a held message's data is all in: the session
				   runs hold_end(), then goes on as for STEP_NEXT */
};

#endif
