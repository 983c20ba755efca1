/*
 * quarantine.h - a held message kept aside in quarantine_dir.
 */
#ifndef SMTPCHAIN_QUARANTINE_H
#define SMTPCHAIN_QUARANTINE_H

struct session;

/*
 * Write the session's held message (tx.store) and its envelope to a new
 * file in cfg->quarantine_dir, whole or not at all.  Returns 0, or -1
 * (logged).
 */
int	quarantine(struct session *s);

#endif
