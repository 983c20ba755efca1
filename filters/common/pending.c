/*
 * pending.c - a hook's verdict now or later (see pending.h).
 */
#include "pending.h"

void
pending_enter(struct pending *p)
{
	p->in_hook = true;
	p->have_early = false;
}

enum sc_verdict
pending_return(struct pending *p)
{
	p->in_hook = false;
	if (p->have_early) {
		p->have_early = false;
		return p->early;
	}
	return SC_PENDING;
}

void
pending_give(struct pending *p, const struct sc_host *host, struct sc_ctx *c, enum sc_verdict v)
{
	if (p->in_hook) {
		p->early = v;
		p->have_early = true;
		return;
	}
	host->resume(c, v);
}
