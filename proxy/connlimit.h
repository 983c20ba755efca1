/*
 * connlimit.h - connection counts shared by every process of the daemon:
 * the total (limits.max_connections) and per client address
 * (limits.max_connections_per_client).
 *
 * connlimit_init() maps one fixed-size table with mmap(MAP_SHARED |
 * MAP_ANONYMOUS) and must run once in the master before any worker is
 * forked, so that every worker sees the same table.  Without it (unit tests,
 * a caller that never forks) the first use maps a table for this process.
 *
 * The table is keyed by client address (IPv4 as IPv4-mapped IPv6), open
 * addressing with linear probing, guarded by one process-shared robust
 * mutex (held for a few dozen instructions per connection).  Each process
 * counts in its own column (a slot claimed by pid), so the counts of a
 * process that dies can be dropped: by the master with
 * connlimit_process_died(pid) when it reaps a worker, and in any case when
 * a new process claims a slot (slots of pids that no longer exist are
 * swept then).  A process that dies holding the mutex leaves it
 * EOWNERDEAD: the next one rebuilds the table and goes on.
 */
#ifndef SMTPCHAIN_CONNLIMIT_H
#define SMTPCHAIN_CONNLIMIT_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>

#define CONNLIMIT_SLOTS		64	/* processes counted apart; more share the last */
#define CONNLIMIT_MIN_ENTRIES	1024
#define CONNLIMIT_MAX_ENTRIES	65536	/* distinct client addresses at once */

/* What one connection holds: the caller keeps it until connlimit_release(). */
struct connlimit_ticket {
	unsigned char	key[16];	/* the address, IPv4-mapped when IPv4 */
	bool		total;		/* counted in the total */
	bool		client;		/* counted for its address */
};

enum connlimit_result {
	CONNLIMIT_OK = 0,	/* counted: call connlimit_release() when it closes */
	CONNLIMIT_TOTAL,	/* over max_total: not counted */
	CONNLIMIT_CLIENT,	/* over max_per_client for this address: not counted */
};

/*
 * Map the shared table for about max_connections concurrent clients (in
 * the master, before forking).  0, or -1 with errno (mmap, mutex).
 */
int	connlimit_init(unsigned max_connections);

/*
 * Count one more connection from addr unless that makes more than max_total
 * in all (0 = no limit) or more than max_per_client from addr (0 = no
 * limit).  *count is the count that decided: the total for CONNLIMIT_TOTAL,
 * the address's for the others.  t records what was counted.  When the
 * table is full, a new address is let in uncounted per client (the total
 * still applies).
 */
enum connlimit_result connlimit_acquire(const struct sockaddr_storage *addr, unsigned max_total,
	    unsigned max_per_client, struct connlimit_ticket *t, unsigned *count);

/* The connection has closed: give back what its ticket holds (twice is harmless). */
void	connlimit_release(struct connlimit_ticket *t);

/* A process is gone (the master reaped it): drop everything it counted. */
void	connlimit_process_died(pid_t pid);

/* For tests: the total now, and the count of one address. */
unsigned connlimit_total(void);
unsigned connlimit_count(const struct sockaddr_storage *addr);

#endif
