/*
 * quarantine.h - a held message kept aside in quarantine_dir.
 */
#ifndef SMTPCHAIN_QUARANTINE_H
#define SMTPCHAIN_QUARANTINE_H

struct client_facts;
struct txn;

/*
 * Write the held message (tx->store) and its envelope to a new file in dir
 * (quarantine_dir), whole or not at all, with a header naming the session
 * id, the client, and the filter module that decided.  Returns 0, or -1
 * (logged).
 */
int	quarantine(const char *dir, const char *id, const struct client_facts *client,
	    const struct txn *tx, const char *filter);

#endif
