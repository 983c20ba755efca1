/*
 * changes.h - the message changes a milter asks for during end of message
 * (SMFIR_ADDHEADER, INSHEADER, CHGHEADER, ADDRCPT, ADDRCPT_PAR, DELRCPT,
 * CHGFROM, REPLBODY, QUARANTINE): kept in order, then made through the
 * host at the final reply (changes.c).
 */
#ifndef SMTPCHAIN_MILTER_CHANGES_H
#define SMTPCHAIN_MILTER_CHANGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <smtpchain/filter.h>

#include "codec.h"

#define MAX_QUEUED_CHANGES	(256u * 1024 * 1024)	/* octets of changes held at eom */

struct change;

/* The changes of one message, oldest first. */
struct changes {
	struct change	*head, **tail;
	size_t		 size;		/* octets held */
};

enum changes_kept {
	CHANGE_KEPT = 0,
	CHANGE_NOMEM,
	CHANGE_TOO_MUCH,	/* over MAX_QUEUED_CHANGES */
};

/* Who makes the changes, and what the milter negotiated. */
struct changes_target {
	const struct sc_host	*host;
	struct sc_ctx		*c;
	const char		*socket;	/* the milter, for logs */
	uint32_t		 actions;	/* SMFIF_* */
	bool			 leadspc;	/* SMFIP_HDR_LEADSPC */
};

void			changes_init(struct changes *cs);
enum changes_kept	changes_keep(struct changes *cs, const struct mc_reply *r);
void			changes_clear(struct changes *cs);
/* Make them in the order they came, then forget them; true when one was QUARANTINE. */
bool			changes_apply(struct changes *cs, const struct changes_target *t);

#endif
