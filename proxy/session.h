/*
 * session.h - one client connection and its backend connection.
 *
 * Private to session.c (the client side: the command table and the state
 * machine), backend.c (the backend side: connect, XCLIENT prelude, reply
 * handling) and the session's parts below it: hold.c (the held message),
 * quarantine.c and filter.c.  The transaction is its own struct (txn.h).
 * Each side's socket, timer, buffers and TLS are a struct conn (conn.c):
 * client and bconn.  Memory: everything a session owns hangs off this
 * struct and is freed in one place, session_free(), once every handle is
 * closed.
 */
#ifndef SMTPCHAIN_SESSION_H
#define SMTPCHAIN_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <uv.h>

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
	SS_CLOSING,		/* last reply going out, then close */
	SS_PROXY,		/* proxy_protocol listener: reading the PROXY header first */
	SS_STATE_MAX
};

/* What a reply from the backend answers (FIFO: the backend answers in order). */
enum backend_step {
	BS_GREETING = 0,	/* 220 on connect */
	BS_PRELUDE_EHLO,	/* our own EHLO before XCLIENT (not relayed) */
	BS_XCLIENT,		/* its 220 is relayed as the greeting */
	BS_XFORWARD,		/* not relayed */
	BS_COMMAND,		/* a client command, relayed; pending.verb says which */
	BS_DOT,			/* end of data (DATA or BDAT LAST): the message's outcome */
	BS_BDAT_DATA,		/* our DATA for a BDAT transaction to a backend without CHUNKING */
	BS_QUIT,		/* our QUIT when the client went away (not relayed) */
	BS_RESET,		/* our RSET after a held message's local outcome */
	BS_REPLAY_MAIL,		/* the envelope again, after filters changed it */
	BS_REPLAY_RCPT,
	BS_REPLAY_DATA,		/* DATA for a held message */
};

struct pending {
	uint8_t		step;		/* enum backend_step */
	uint8_t		verb;		/* enum smtp_verb for BS_COMMAND */
};

#define PENDING_MAX	64		/* commands in flight to the backend */
#define CLIENT_INBUF	32768		/* client input buffer */
#define BACKEND_INBUF	16384		/* backend input: one whole reply must fit */
#define OUT_HIGH_WATER	262144		/* stop reading the other side above this */

struct session {
	struct session		*next, *prev;	/* server's list */
	struct server		*srv;
	const struct config	*cfg;
	char			 id[16];	/* for every log line */
	enum session_state	 state;

	/* client side */
	struct conn		 client;	/* in: commands and data; timer: idle */
	char			 caddr[INET6_ADDRSTRLEN];
	unsigned		 cport;
	char			 cname[256];	/* verified reverse name, or "" */
	bool			 cname_done;	/* lookup finished (or not needed) */
	char			 helo[256];
	bool			 client_eof;	/* the client shut its sending side (FIN or
						   close_notify): what it sent before is still
						   answered, in order, then the session ends */
	bool			 client_gone;	/* the client cannot be written to any more */
	bool			 skip_line;	/* discarding the rest of an over-long line */
	bool			 line_logged;	/* the current command line is in the transcript */
	struct sockaddr_storage	 peer;		/* the client's address (the real one, after a PROXY header) */
	struct sockaddr_storage	 local;		/* the address it connected to: after a PROXY
						   header the one it named, else ours, looked up
						   when a filter asks ({daemon_addr}); AF_UNSPEC
						   until then */
	char			 lbaddr[INET6_ADDRSTRLEN];	/* with a PROXY header: the load */
	unsigned		 lbport;		/* balancer's address and port, else "" */
	struct connlimit_ticket	 climit;	/* counted in the shared connection table */
	const struct config_addr *laddr;	/* the listener it came in on */
	bool			 btls_up;	/* its handshake is done (EHLO again, then on) */
	bool			 tls_logged;
	char			*deferred;	/* a local reply waiting for the backend's answers */

	/* backend side */
	struct conn		 bconn;		/* in: replies; tls after our STARTTLS (backend_tls) */
	uv_connect_t		 connect_req;
	bool			 backend_up;	/* connected and usable */
	bool			 backend_init;	/* its handles exist */
	bool			 backend_quitting;/* our QUIT is on its way */
	unsigned		 bidx;		/* cfg->backends[bidx] is the one in use */
	uint32_t		 btried;	/* bit i: cfg->backends[i] was tried by this session */
	bool			 bchosen;	/* it greeted with 2xx, or 4xx/5xx and none was left:
						   no failover, timeout.backend from here on */
	bool			 bretry;	/* its handle is closing, to try the next backend */
	unsigned		 xclient_attrs;	/* XCLIENT attributes the backend takes */
	struct pending		 pending[PENDING_MAX];
	unsigned		 phead, pcount;
	bool			 last_sync;	/* the last command sent ends a pipelining group */
	bool			 xclient_wait;	/* XCLIENT waits for the reverse lookup */
	bool			 xclient_done;	/* the backend knows the real client */
	bool			 xclient_unprobed; /* XCLIENT sent without our EHLO first */
	struct ehlo_caps	 bcaps;		/* what the backend offers */
	char			*greeting;	/* held while the prelude runs */
	uv_getnameinfo_t	 nireq;
	uv_getaddrinfo_t	 aireq;

	/* what the client was offered (after the rewrite) */
	char			*backend_auth;	/* the backend's "AUTH mech..." EHLO line, or NULL */
	bool			 auth_done;	/* the backend said 235 */
	char			 auth_mech[32];
	char			 auth_user[256];	/* the authenticated identity, for filters and logs */
	bool			 ehlo_done;	/* a 250 to EHLO or HELO */
	bool			 esmtp;		/* EHLO, not HELO */
	bool			 ehlo_seen;	/* an EHLO came, accepted or not yet: the
						   protocol name filters see is ESMTP from
						   then on (as Postfix: a later HELO does not
						   downgrade it), SMTP before */
	struct ehlo_caps	 ccaps;
	char			*offered;	/* the rewritten list, to check parameters */

	/* the transaction (txn.h), and what outlives it */
	struct txn		 tx;
	uint64_t		 msgno;		/* messages numbered in this session */
	unsigned		 rcpt_sent;	/* RCPTs in flight */
	unsigned		 rcpt_refused;	/* since the last delivered message */

	/* the filter chain */
	struct sc_ctx		*fctx;		/* one per module */
	struct filter_run	 run;
	void			(*filter_resumed)(struct session *s);	/* filter_session_open()'s */
	bool			 filter_skip_session;	/* a module accepted the session */
	bool			 filter_skip_message;	/* a module accepted the message */
	enum sc_verdict		 session_outcome;	/* discard/quarantine from connect/helo */
	enum sc_verdict		 msg_outcome;		/* discard/quarantine for this message */
	size_t			 msg_outcome_by;
	char			*greeting_text;	/* held until the connect step is decided */

	struct metrics_session	 metrics;	/* metrics.c: live row, timings */

	unsigned		 handles;	/* open uv handles; free at zero */
	bool			 closing;
	uint64_t		 nmessages;
};

/* session.c, for backend.c */
void	session_log(struct session *s, enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void	session_transcript(struct session *s, const char *dir, const char *p, size_t n);
void	session_reply(struct session *s, const char *p, size_t n);	/* to the client, as is */
void	session_replyf(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void	session_fail(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));	/* reply, then close both sides */
void	session_set_state(struct session *s, enum session_state st, const char *why);
void	session_process(struct session *s);	/* run queued client input */
void	session_close(struct session *s);
void	session_update_reading(struct session *s);
void	session_backend_reply(struct session *s, struct pending p, const char *r, size_t n, int code);
void	session_unref(struct session *s);	/* a handle or request is done */
void	session_greeting(struct session *s, const char *r, size_t n);	/* the backend's, to relay */
bool	session_backend_in_data(const struct session *s);

/* backend.c */
void	backend_connect(struct session *s);
void	backend_send(struct session *s, const char *p, size_t n, enum backend_step step, int verb);
void	backend_sendf(struct session *s, enum backend_step step, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void	backend_data(struct session *s, const char *p, size_t n);	/* message bytes, no reply expected */
void	backend_flush(struct session *s);
void	backend_abort(struct session *s);	/* drop the connection: nothing half-sent is delivered */
void	backend_quit(struct session *s);	/* polite QUIT, then close */
void	backend_xforward(struct session *s);	/* XFORWARD before MAIL, when it applies */
void	backend_release(struct session *s);	/* close the backend's handles (session end) */

#endif
