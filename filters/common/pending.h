/*
 * pending.h - a hook's verdict that may come while the hook still runs
 * (then the hook returns it) or later (then it goes to host->resume()):
 * the SC_PENDING bookkeeping of the milter and policy modules, whose
 * answers come from a server (pending.c).
 */
#ifndef SMTPCHAIN_FILTERS_PENDING_H
#define SMTPCHAIN_FILTERS_PENDING_H

#include <stdbool.h>

#include <smtpchain/filter.h>

struct pending {
	bool		 in_hook;	/* between pending_enter and pending_return */
	bool		 have_early;	/* the verdict came during the hook */
	enum sc_verdict	 early;
};

/* The hook starts waiting. */
void		pending_enter(struct pending *p);
/* What the hook returns: the verdict if it came already, or SC_PENDING. */
enum sc_verdict	pending_return(struct pending *p);
/*
 * The verdict: kept for pending_return() inside the hook, else given to
 * host->resume(), after which the session may be gone: callers return.
 */
void		pending_give(struct pending *p, const struct sc_host *host, struct sc_ctx *c,
		    enum sc_verdict v);

#endif
