/*
 * backend.h - the connection to the backend (Postfix or Exim): an object
 * below the session, as a libuv handle is below its user.
 *
 * The session embeds a struct backend, sets it up with backend_init() and
 * drives it with backend_connect/send/data/flush/quit/abort/release.  The
 * backend never decides what the client hears: it reports up through the
 * events table - the greeting the client is to see, each reply matched to
 * the command it answers, the connection lost or unusable (after logging
 * why, with the session's id) - and the session answers.  It runs the
 * prelude of its own (EHLO, STARTTLS for backend_tls, XCLIENT) and the
 * failover between several backends without the session's help.
 */
#ifndef SMTPCHAIN_BACKEND_H
#define SMTPCHAIN_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <uv.h>

#include "config.h"
#include "conn.h"
#include "ehlo.h"

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
#define BACKEND_INBUF	16384		/* backend input: one whole reply must fit */

/* Why the backend can no longer be used (the reason logged; the owner ends it: backend_abort). */
enum backend_loss {
	BACKEND_UNREACHABLE,	/* no backend could be connected to */
	BACKEND_LOST,		/* the connection dropped, timed out or sent garbage */
	BACKEND_WRITE_FAILED,	/* a write (or TLS on it) failed */
	BACKEND_TLS_FAILED,	/* backend_tls could not be had */
	BACKEND_TIMEOUT,	/* no reply within timeout.backend */
	BACKEND_SAID_421,	/* a 421 to no command (its own idle timeout): r, n */
};

/* What the backend reports, to the owner given to backend_init. */
struct backend_events {
	/* The greeting the client is to see (the first, or XCLIENT's 220). */
	void	(*greeting)(void *owner, const char *r, size_t n);
	/* A reply to a command the owner sent (steps BS_COMMAND and after). */
	void	(*reply)(void *owner, struct pending p, const char *r, size_t n, int code);
	/* The backend is gone: the owner tells the client (r, n: BACKEND_SAID_421's reply). */
	void	(*lost)(void *owner, enum backend_loss why, const char *r, size_t n);
	/* Bytes were read or written: what waited for the backend may go on. */
	void	(*progress)(void *owner);
	/* The client's name lookup finished (backend.cname is final). */
	void	(*name_known)(void *owner);
	/* Every handle and request of the backend is done (after backend_release). */
	void	(*closed)(void *owner);
	/* A command or reply for the transcript: dir "p>b" or "b>p". */
	void	(*transcript)(void *owner, const char *dir, const char *p, size_t n);
};

struct backend {
	const struct config	*cfg;
	uv_loop_t		*loop;
	const char		*id;		/* the session's, for log lines */
	const struct backend_events *ev;
	void			*owner;

	/* the client, for XCLIENT and XFORWARD (copied at backend_connect) */
	struct sockaddr_storage	 peer;
	char			 caddr[INET6_ADDRSTRLEN];
	unsigned		 cport;
	char			 cname[256];	/* verified reverse name, or "" */
	bool			 cname_done;	/* lookup finished (or not needed) */
	uv_getnameinfo_t	 nireq;
	uv_getaddrinfo_t	 aireq;

	struct conn		 conn;		/* in: replies; tls after our STARTTLS (backend_tls) */
	uv_connect_t		 connect_req;
	unsigned		 handles;	/* open handles and requests; closed at 0 */
	bool			 up;		/* connected and usable */
	bool			 init;		/* its handles exist */
	bool			 released;	/* backend_release was called: no more events */
	bool			 ending;	/* the owner said QUIT (or wanted to): no failover */
	bool			 quitting;	/* our QUIT is on its way */
	bool			 tls_up;	/* backend_tls handshake done (EHLO again, then on) */
	unsigned		 idx;		/* cfg->backends[idx] is the one in use */
	uint32_t		 tried;		/* bit i: cfg->backends[i] was tried */
	bool			 chosen;	/* it greeted with 2xx, or 4xx/5xx and none was left:
						   no failover, timeout.backend from here on */
	bool			 retry;		/* its handle is closing, to try the next backend */
	unsigned		 xclient_attrs;	/* XCLIENT attributes the backend takes */
	bool			 xclient_wait;	/* XCLIENT waits for the reverse lookup */
	bool			 xclient_done;	/* the backend knows the real client */
	bool			 xclient_unprobed; /* XCLIENT sent without our EHLO first */
	struct ehlo_caps	 caps;		/* what the backend offers */
	char			*greeting;	/* held while the prelude runs */
	struct pending		 pending[PENDING_MAX];
	unsigned		 phead, pcount;	/* commands sent, not yet answered */
};

void	backend_init(struct backend *b, const struct config *cfg, uv_loop_t *loop,
	    const char *id, const struct backend_events *ev, void *owner);
/* Connect (and look the client's name up for XCLIENT when it is wanted). */
void	backend_connect(struct backend *b, const struct sockaddr_storage *peer,
	    const char *caddr, unsigned cport);
/* Queue a command; a reply is expected for it (step says what it answers). */
void	backend_send(struct backend *b, const char *p, size_t n, enum backend_step step, int verb);
void	backend_sendf(struct backend *b, enum backend_step step, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void	backend_data(struct backend *b, const char *p, size_t n);	/* message bytes, no reply expected */
void	backend_flush(struct backend *b);
void	backend_abort(struct backend *b);	/* drop the connection: nothing half-sent is delivered */
/* Polite QUIT, then close; never inside DATA (the QUIT would be message
 * text): the session calls it through session_backend_leave(), which aborts there. */
void	backend_quit(struct backend *b);
/* XFORWARD before MAIL, when it applies (helo: the client's, esmtp: it said EHLO). */
void	backend_xforward(struct backend *b, const char *helo, bool esmtp);
void	backend_release(struct backend *b);	/* close the handles (owner's end); events stop */
void	backend_free(struct backend *b);	/* memory, once closed (or never connected) */

#endif
