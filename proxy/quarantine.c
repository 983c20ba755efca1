/*
 * quarantine.c - a held message kept aside: written with its envelope to
 * one file in quarantine_dir (a module's SC_QUARANTINE), for an operator
 * to look at; the client is answered as for a delivered message.  Knows
 * the transaction and the client's facts, not the session; calls only
 * msgstore.c and log.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clientfacts.h"
#include "log.h"
#include "msgstore.h"
#include "quarantine.h"
#include "txn.h"

/*
 * Quarantine: the message and its envelope in one file in quarantine_dir,
 * written to a temporary name, synced, then linked to its final name, so
 * that a file there is always whole.  The final name is MSGID.TIME.eml; a
 * file of that name already there (two instances sharing the directory, a
 * restart within the second) is never replaced: the link fails and the next
 * name, MSGID.TIME-N.eml, is tried.  dir: quarantine_dir; id: the
 * session's; filter: the module that decided.  Returns 0 or -1 (logged).
 */
int
quarantine(const char *dir, const char *id, const struct client_facts *client,
    const struct txn *tx, const char *filter)
{
	char name[128], tmp[PATH_MAX], path[PATH_MAX], head[1024];
	int fd, n;

	snprintf(name, sizeof(name), "%s.%ld", tx->msgid[0] ? tx->msgid : id, (long)time(NULL));
	if (snprintf(tmp, sizeof(tmp), "%s/.tmp.%s", dir, name) >= (int)sizeof(tmp))
		return -1;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		log_id(id, LOG_LVL_ERROR, "quarantine: %s: %s", tmp, strerror(errno));
		return -1;
	}
	n = snprintf(head, sizeof(head), "X-Smtpchain-Quarantine: session=%s client=[%s]:%u"
	    " helo=<%s> filter=%s\r\nX-Smtpchain-Envelope-From: <%s>\r\n", id, client->addr,
	    client->port, client->helo, filter, tx->from);
	if (write(fd, head, (size_t)n) != n)
		goto fail;
	for (size_t i = 0; i < tx->nrcpts; i++) {
		if (tx->rcpts[i].status != RCPT_OK && tx->rcpts[i].status != RCPT_ADDED)
			continue;
		n = snprintf(head, sizeof(head), "X-Smtpchain-Envelope-To: <%s>\r\n", tx->rcpts[i].addr);
		if (write(fd, head, (size_t)n) != n)
			goto fail;
	}
	if (msgstore_write_fd(tx->store, fd) != 0 || fsync(fd) != 0)
		goto fail;
	if (close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	for (unsigned try = 0;; try++) {
		if ((try == 0 ? snprintf(path, sizeof(path), "%s/%s.eml", dir, name) :
		    snprintf(path, sizeof(path), "%s/%s-%u.eml", dir, name, try)) >= (int)sizeof(path)) {
			errno = ENAMETOOLONG;
			goto fail;
		}
		if (link(tmp, path) == 0)
			break;
		if (errno != EEXIST || try == 1000)
			goto fail;
	}
	unlink(tmp);
	log_id(id, LOG_LVL_INFO, "quarantined as %s", path);
	return 0;
fail:
	log_id(id, LOG_LVL_ERROR, "quarantine: %s: %s", tmp, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return -1;
}
