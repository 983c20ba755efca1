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
 * mutex (held for a few dozen instructions per connection).  It holds
 * max(max_connections, CONNLIMIT_MIN_ADDRESSES) addresses, at most
 * CONNLIMIT_MAX_ADDRESSES, in twice as many slots (probe runs stay short).
 * When that many addresses have connections open, a new address is counted
 * under one shared overflow entry with the per-client limit: a flood of
 * distinct addresses is limited as if it were one client, never let in
 * uncounted.  Each process
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
#define CONNLIMIT_MIN_ADDRESSES	4096	/* counted apart at least, whatever max_connections */
#define CONNLIMIT_MAX_ADDRESSES	65536	/* and at most (twice as many slots) */

/* What one connection holds: the caller keeps it until connlimit_release(). */
struct connlimit_ticket {
	unsigned char	key[16];	/* the address, IPv4-mapped when IPv4 */
	bool		total;		/* counted in the total */
	bool		client;		/* counted for its address, or ... */
	bool		overflow;	/* ... (with client) under the shared overflow entry */
};

enum connlimit_result {
	CONNLIMIT_OK = 0,	/* counted: call connlimit_release() when it closes */
	CONNLIMIT_TOTAL,	/* over max_total: not counted */
	CONNLIMIT_CLIENT,	/* over max_per_client for this address: not counted */
	CONNLIMIT_OVERFLOW,	/* table full, over max_per_client for the overflow entry */
};

/*
 * Map the shared table for max(max_connections, CONNLIMIT_MIN_ADDRESSES)
 * client addresses, at most CONNLIMIT_MAX_ADDRESSES (in the master, before
 * forking; the size is kept for the daemon's life).  0, or -1 with errno
 * (mmap, mutex).
 */
int	connlimit_init(unsigned max_connections);

/*
 * Count one more connection from addr unless that makes more than max_total
 * in all (0 = no limit) or more than max_per_client from addr (0 = no
 * limit).  *count is the count that decided: the total for CONNLIMIT_TOTAL,
 * the address's for the others.  t records what was counted.  When the
 * table is full, a new address is counted under the shared overflow entry
 * (with max_per_client as its limit; CONNLIMIT_OVERFLOW when over it, *count
 * its count), and a warning is logged, at most once a minute for all the
 * processes.
 */
enum connlimit_result connlimit_acquire(const struct sockaddr_storage *addr, unsigned max_total,
	    unsigned max_per_client, struct connlimit_ticket *t, unsigned *count);

/*
 * A connection counted in the total only (connlimit_acquire with
 * max_per_client 0: one on a PROXY protocol listener, waiting for the header
 * that names its client) now knows its client: count addr too, as
 * connlimit_acquire does, keeping t's place in the total.  Over the limit,
 * t still holds the total (release it).
 */
enum connlimit_result connlimit_acquire_client(const struct sockaddr_storage *addr,
	    unsigned max_per_client, struct connlimit_ticket *t, unsigned *count);

/* The connection has closed: give back what its ticket holds (twice is harmless). */
void	connlimit_release(struct connlimit_ticket *t);

/*
 * The address a client is counted under: an IPv6 address (not IPv4-mapped)
 * cut to its first ipv6_prefix bits (limits.client_ipv6_prefix_length, as
 * Postfix's smtpd_client_ipv6_prefix_length: one host usually has a whole
 * /64 or more), anything else as it is.  The port is zeroed.
 */
void	connlimit_client_addr(const struct sockaddr_storage *addr, unsigned ipv6_prefix,
	    struct sockaddr_storage *out);

/* A process is gone (the master reaped it): drop everything it counted. */
void	connlimit_process_died(pid_t pid);

/*
 * For tests: the total now, the count of one address (0 for one counted in
 * the overflow entry), the overflow entry's count, and how many addresses
 * the table counts apart.
 */
unsigned connlimit_total(void);
unsigned connlimit_count(const struct sockaddr_storage *addr);
unsigned connlimit_overflow_count(void);
unsigned connlimit_capacity(void);

#endif
