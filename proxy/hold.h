/*
 * hold.h - a message held for the filters: stored as it comes in, run
 * through the chain at its end, then the envelope replayed (when filters
 * changed it) and the store streamed to the backend after its 354.
 *
 * hold.c works below the session: it sends to the backend and reads and
 * writes the transaction (s->tx), but never answers the client; each step
 * returns what the session does next (struct hold_result).
 */
#ifndef SMTPCHAIN_HOLD_H
#define SMTPCHAIN_HOLD_H

#include <stddef.h>

#include "dotstream.h"

struct session;

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
const char	*hold_begin(struct session *s);
/* Checked DATA bytes (used of them, dot_scan()'s r) into the store. */
void	hold_feed(struct session *s, const char *p, size_t used, enum dot_result r);
/* End of the held message's data: refused, or HOLD_FILTER. */
struct hold_result hold_end(struct session *s);
/* The held message through the chain (again after a pending module answers). */
struct hold_result hold_filter(struct session *s);
/* The backend's 354 for the held message: stream the store to it. */
struct hold_result hold_send(struct session *s);
/* Go on streaming the store as the backend reads it (while tx.pumping). */
struct hold_result hold_pump(struct session *s);
/* A reply to the replayed envelope (BS_REPLAY_MAIL, BS_REPLAY_RCPT). */
struct hold_result hold_replay_reply(struct session *s, int step, const char *r, size_t n,
	    int code);

#endif
