/*
 * privsep.h - who the processes run as (privsep.c).
 *
 * The master starts as root (it binds port 25 and reads the TLS keys,
 * rule files, modules and the config, which only root may read) and stays
 * root: it is the supervisor and re-reads all of that on SIGHUP.  It never
 * reads a byte from the network.  Every process that does (the workers,
 * and the metrics server) drops for good to the configured `user` before
 * its first accept: chroot if asked, the user's one group, the user's uid,
 * no capabilities, no_new_privs; a way back to root is an abort.
 *
 * Started as root without `user`: refused, unless `user = "root"` is
 * written out.  Started as anyone else without `user`: the processes run
 * as that account, as before.
 */
#ifndef SMTPCHAIN_PRIVSEP_H
#define SMTPCHAIN_PRIVSEP_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/*
 * Whether cfg may be run by this process: refused when we are root and cfg
 * has no `user`.  0, or -1 with "FILE: ..." naming the key in err.
 */
int	privsep_check_user(const struct config *cfg, char *err, size_t errlen);

/*
 * Whether quarantine_dir and spool_dir (under chroot, if set) exist, are
 * directories owned by the workers' user and writable by no one else.
 * Checked when the workers run as a `user` that is not root.  0, or -1
 * with err.
 */
int	privsep_check_dirs(const struct config *cfg, char *err, size_t errlen);

/*
 * In a worker or the metrics server, after everything root-only has been
 * read and before the first accept: give up root for good (see above).
 * what names the process for messages.  0, or -1 with err (the process
 * must then exit); a drop that can be undone aborts.
 */
int	privsep_drop(const struct config *cfg, const char *what, char *err, size_t errlen);

#endif
