/*
 * link.h - the milter module's connection to a milter (link.c): connect,
 * the replies cut from the stream, writes, the reply timer, the pool of
 * negotiated connections kept after SMFIC_QUIT_NC, and the drain of a
 * connection whose session ended mid-exchange.  It reports to its session
 * (milter.c) through struct mlink_events and never decides what the
 * client hears.
 */
#ifndef SMTPCHAIN_MILTER_LINK_H
#define SMTPCHAIN_MILTER_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/channel.h"
#include "codec.h"

/* What the module offers in SMFIC_OPTNEG. */
#define OFFERED_ACTIONS	(SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_ADDRCPT | \
	SMFIF_ADDRCPT_PAR | SMFIF_DELRCPT | SMFIF_QUARANTINE | SMFIF_CHGFROM | SMFIF_SETSYMLIST)
/*
 * Every protocol step but SMFIP_RCPT_REJ (refused recipients are not
 * sent), and commands of up to 1 MB (SMFIP_MDS_1M, as sendmail offers with
 * Milter.maxdatasize: a libmilter built with MDS negotiation then reads
 * that much, others ignore the offer).
 */
#define OFFERED_PROTOCOL ((SMFI_CURR_PROT & ~SMFIP_RCPT_REJ) | SMFIP_MDS_1M)

/* A list of macro names. */
struct namelist {
	char	**v;
	size_t	  n;
};

void	names_free(struct namelist *l);
/* Append the names in s (separated by spaces, tabs or commas); -1 out of memory. */
int	names_add(struct namelist *l, const char *s);

/* What went wrong, for the session to word (status: libuv's; detail: the decoder's). */
enum mlink_error {
	MLINK_CONNECT,		/* the socket did not connect */
	MLINK_READ_START,	/* connected, but cannot read */
	MLINK_READ,		/* UV_EOF, or a read error */
	MLINK_WRITE,
	MLINK_FEED,		/* the decoder refused the octets (detail) */
	MLINK_MALFORMED,	/* a reply that is not the protocol (detail) */
	MLINK_TIMEOUT,		/* the timer of mlink_wait() ran out */
};

/* What a connection reports to the session using it. */
struct mlink_events {
	void	(*on_connected)(void *owner);	/* reading: negotiate */
	void	(*on_reply)(void *owner, const struct mc_reply *r);
	void	(*on_error)(void *owner, enum mlink_error e, int status, const char *detail);
};

/*
 * A connection.  What was negotiated belongs to it: a connection used
 * again after SMFIC_QUIT_NC starts at SMFIC_CONNECT without a new
 * SMFIC_OPTNEG.
 */
struct mlink {
	struct channel		 ch;
	struct mc_decoder	 dec;
	void			*owner;		/* the session using it, or NULL */
	const struct mlink_events *ev;
	bool			 waiting;	/* mlink_wait()'s timer runs */
	unsigned		 sessions;	/* sessions it served, for the log */
	/* Its session is gone mid-exchange: the owed replies, then SMFIC_QUIT (mlink_drain). */
	bool			 draining;
	bool			 drain_optneg;	/* still connecting: OPTNEG first */
	bool			 drain_abort;	/* inside a transaction: ABORT before QUIT */
	unsigned		 owed;		/* replies still to read */

	/* Negotiated (SMFIC_OPTNEG's reply). */
	uint32_t		 actions, protocol;
	size_t			 max_data;	/* the most data in one command it reads */
	struct namelist		 symlist[MC_NSTAGES];	/* the milter's own lists */
	bool			 has_symlist[MC_NSTAGES];
};

/* A new connection for owner; NULL with *rc (UV_ENOMEM, or the socket's error). */
struct mlink	*mlink_new(uv_loop_t *loop, const struct channel_addr *a, void *owner,
		    const struct mlink_events *ev, int *rc);
/* Connect; on_connected or on_error follows unless this returns < 0. */
int		 mlink_connect(struct mlink *l);
/* Send a copy of the encoded commands; < 0 (UV_ENOMEM...) when they cannot go. */
int		 mlink_send(struct mlink *l, const struct mc_buf *cmds);
/* Wait at most ms for what is owed (MLINK_TIMEOUT), or stop waiting (0). */
void		 mlink_wait(struct mlink *l, uint64_t ms);
/* The session lets go of it (no more events). */
void		 mlink_detach(struct mlink *l);
/* Say goodbye if it can go at once (ABORT first if abort, then QUIT) and close. */
void		 mlink_close(struct mlink *l, bool quit, bool abort);

/* SMFIC_QUIT_NC and into the pool, when it is clean and there is room; false if not. */
bool		 mlink_pool_put(struct mlink *l, struct channel_pool *p);
/* An idle connection still quiet, or NULL (*dropped: the dead ones closed). */
struct mlink	*mlink_pool_take(struct channel_pool *p, void *owner,
		    const struct mlink_events *ev, unsigned *dropped);

/*
 * Finish alone, without a session: negotiate first if still connecting,
 * read the owed replies, ABORT if abort, QUIT, close; at most timeout ms.
 */
void		 mlink_drain(struct mlink *l, bool connecting, unsigned owed, bool abort,
		    uint64_t timeout);

#endif
