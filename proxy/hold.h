/*
 * hold.h - a message held for the filters: stored as it comes in, run
 * through the chain at its end, then the envelope replayed (when filters
 * changed it) and the store streamed to the backend after its 354.
 *
 * hold.c works below the session, on a struct hold_env (the transaction,
 * the backend, the filter run, the client's facts), not on the session: it
 * sends to the backend and reads and writes the transaction, but never
 * answers the client; each step returns what the session does next
 * (struct hold_result).
 */
#ifndef SMTPCHAIN_HOLD_H
#define SMTPCHAIN_HOLD_H

#include <stddef.h>

#include "dotstream.h"

struct backend;
struct client_facts;
struct config;
struct filter_session;
struct txn;

/*
 * What a held message is worked on with: the session's parts it needs,
 * pointers the session sets once (they live as long as it does).
 */
struct hold_env {
	const char		*id;		/* the session id, for log lines */
	const struct config	*cfg;		/* spool and quarantine directories, limits */
	const struct client_facts *client;	/* the greeting replayed; the quarantine file */
	struct txn		*tx;		/* the envelope and the store */
	struct backend		*backend;	/* where the message goes */
	struct filter_session	*filter;	/* the chain's run over the message */
};

/* What the session does next with a held message. */
enum hold_action {
	HOLD_WAIT = 0,		/* nothing now: a module or the backend answers later */
	HOLD_FILTER,		/* the data is stored: run the filters (hold_filter()) */
	HOLD_END,		/* the message ends here without the backend: reply, status */
	HOLD_KEPT_BACK,		/* discarded or quarantined on purpose: answered as queued */
	HOLD_LOST,		/* the backend is gone: the session ends with 421 */
	HOLD_IO_ERROR,		/* the store cannot be read: the session ends with 451 */
};

struct hold_result {
	enum hold_action action;
	const char	*reply;		/* HOLD_END: the client's answer */
	const char	*status;	/* HOLD_END, HOLD_KEPT_BACK: the summary line's word */
};

/*
 * Start holding a message (DATA, or the first BDAT): the store is made;
 * the proxy answers 354 itself.  Returns NULL, or the refusal to give.
 */
const char	*hold_begin(const struct hold_env *h);
/* Checked DATA bytes (used of them, dot_scan()'s r) into the store. */
void	hold_feed(const struct hold_env *h, const char *p, size_t used, enum dot_result r);
/* End of the held message's data: refused, or HOLD_FILTER. */
struct hold_result hold_end(const struct hold_env *h);
/* The held message through the chain (again after a pending module answers). */
struct hold_result hold_filter(const struct hold_env *h);
/* The backend's 354 for the held message: stream the store to it. */
struct hold_result hold_send(const struct hold_env *h);
/* Go on streaming the store as the backend reads it (while tx.pumping). */
struct hold_result hold_pump(const struct hold_env *h);
/* A reply to the replayed envelope (BS_REPLAY_MAIL, BS_REPLAY_RCPT). */
struct hold_result hold_replay_reply(const struct hold_env *h, int step, const char *r, size_t n,
	    int code);

#endif
