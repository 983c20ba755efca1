/*
 * txn.h - one mail transaction of a session: its envelope, its recipients,
 * its message data state (DATA and BDAT) and the message held for the
 * filters.
 *
 * A transaction starts with MAIL and ends at its outcome, RSET or a new
 * EHLO/HELO: txn_reset() forgets it in one place (OpenSMTPD's smtp_tx).  The
 * struct lives inside the session (no allocation per message); what it owns
 * (the store, the copied command lines) is freed by txn_reset(), and the
 * recipients' array by txn_free() at the session's end.  The filters change
 * the envelope of a held message through txn_change_from(), txn_add_rcpt()
 * and txn_del_rcpt().
 */
#ifndef SMTPCHAIN_TXN_H
#define SMTPCHAIN_TXN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dotstream.h"

struct msgstore;

/*
 * A recipient of a held message (kept only when filters hold messages):
 * pending until its reply, then kept if accepted; a refused one is dropped.
 */
enum rcpt_status { RCPT_PENDING = 0, RCPT_OK, RCPT_DELETED, RCPT_ADDED };

struct rcpt_entry {
	char		*line;		/* "RCPT TO:<addr> params", no CRLF */
	char		*addr;
	uint8_t		 status;	/* enum rcpt_status */
};

struct txn {
	/* the envelope */
	char			 msgid[40];	/* this message's id, "SESSIONID.N": from its
						   MAIL until its outcome ("" outside) */
	bool			 in_mail;	/* MAIL accepted */
	bool			 mail_smtputf8;
	unsigned		 rcpt_ok;	/* RCPTs accepted */
	char			 from[256];
	uint64_t		 size_limit;	/* for this message; 0 = none (set by each
						   MAIL, kept past the reset) */

	/* the message data (the scanners are set up where each use starts) */
	struct dot_scanner	 dot;
	struct dot_stuffer	 stuff;
	uint64_t		 msg_octets;
	bool			 oversize;

	/* BDAT (bdat_left and bdat_last belong to the chunk being read) */
	bool			 bdat_convert;	/* BDAT relayed as DATA */
	bool			 bdat_data_open;/* our DATA got 354 */
	bool			 bdat_last;	/* the chunk being read is LAST */
	bool			 bdat_relayed;	/* this message's chunks go to the backend as they are */
	struct crlf_checker	 bdat_crlf;	/* and are checked for bare CR/LF on the way */
	bool			 bdat_failed;	/* this transaction's BDAT already failed */
	char			*bdat_error;	/* the reply for the rest of its chunks */
	uint64_t		 bdat_left;	/* octets of the chunk still to read */

	/* a message held for the filters */
	struct msgstore		*store;
	bool			 spooling;	/* message data goes to the store */
	bool			 held_dot;	/* a line-start '.' not yet given to the store */
	int			 store_errno;
	bool			 pumping;	/* the store is being sent to the backend */
	bool			 modified;	/* a filter changed the message (modified=yes) */
	char			*mail_line;	/* the MAIL command as relayed, no CRLF */
	char			*mail_canon;	/* "MAIL FROM:<addr> params" as the filters saw
						   it, for change_from() to spot a no-op */
	char			*env_from;	/* the MAIL command after change_from */
	bool			 envelope_changed;
	struct rcpt_entry	*rcpts;
	size_t			 nrcpts, rcpts_cap;
	size_t			 rcpt_reply_next;	/* next RCPT_PENDING to get a reply */
	size_t			 replay_cursor;	/* next replayed recipient to get a reply */
	unsigned		 replay_wait;	/* replayed RCPT replies still to come */
	unsigned		 replay_ok;
	char			*replay_error;	/* the envelope replay failed */
};

/* The transaction is over: forget it (the store and lines are freed). */
void	txn_reset(struct txn *t);
/* Forget the message's BDAT state (at its outcome, or a new MAIL). */
void	txn_reset_bdat(struct txn *t);
/* The session's end: txn_reset() and the recipients' array. */
void	txn_free(struct txn *t);

/* The MAIL command of a held message: as relayed, and as the filters saw it. */
void	txn_set_mail(struct txn *t, const char *line, size_t len, const char *canon);
/* A relayed recipient of a held message (line without CRLF); dropping one
 * hands its slot to the ones after it. */
void	txn_rcpt_record(struct txn *t, const char *line, size_t len, const char *addr,
	    enum rcpt_status status);
void	txn_rcpt_drop(struct txn *t, size_t i);
/* Whether the backend gets this recipient (kept, or added by filters). */
bool	txn_rcpt_goes(const struct rcpt_entry *e);

/*
 * The envelope changes a filter makes: 1 when the envelope changed, 0 when
 * it is as it was (the sender it has, a recipient already there, none to
 * delete).
 */
int	txn_change_from(struct txn *t, const char *addr, const char *params);
int	txn_add_rcpt(struct txn *t, const char *addr, const char *params);
int	txn_del_rcpt(struct txn *t, const char *addr);

#endif
