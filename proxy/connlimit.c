/*
 * connlimit.c - connection counts shared across the daemon's processes
 * (see connlimit.h for the contract).
 *
 * Layout of the shared mapping: a header (the robust mutex, the pid that
 * owns each column, each column's total) and cap entries, each an address
 * and one count per column.  An address's count is the sum of its columns,
 * the total the sum of the column totals, so forgetting a dead process is
 * zeroing its column.  An entry whose counts are all zero is removed at
 * once (backward-shift deletion), so the table holds only addresses with
 * open connections and never fills up with old ones.  At most half the
 * slots are used (linear probing stays short); when that many addresses
 * have connections open, a new one is counted in the header's overflow
 * entry, which has the per-client limit like any address.
 *
 * Why a mutex and not lock-free entries: reusing a slot for another address
 * without a lock needs a double-word compare-and-swap and a generation
 * dance; a robust process-shared mutex held for a few dozen instructions
 * per connection costs nothing measurable, and survives a holder's death.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/mman.h>

#include "connlimit.h"
#include "log.h"
#include "shmutex.h"

struct cl_entry {
	unsigned char	key[16];
	uint8_t		used;
	uint16_t	count[CONNLIMIT_SLOTS];	/* per column (process) */
};

struct cl_table {
	pthread_mutex_t	lock;
	pid_t		owner[CONNLIMIT_SLOTS];	/* 0 = free column */
	uint32_t	total[CONNLIMIT_SLOTS];
	struct cl_entry	overflow;		/* new addresses while the table is full */
	bool		warned;			/* about the overflow, at warned_at */
	time_t		warned_at;		/* CLOCK_MONOTONIC seconds */
	size_t		used;			/* entries in use */
	size_t		max_used;		/* addresses counted apart: cap / 2 */
	size_t		cap;			/* entries; a power of two */
	struct cl_entry	e[];
};

static struct cl_table	*tab;		/* the mapping, inherited by forked workers */
static int		 my_slot = -1;	/* this process's column; -1 again in a forked child */

static void	rebuild(void);
static enum connlimit_result acquire(const struct sockaddr_storage *, unsigned, unsigned,
	    struct connlimit_ticket *, unsigned *);

/* The key of an address: IPv6 as is, IPv4 as ::ffff:a.b.c.d. */
static void
addr_key(const struct sockaddr_storage *ss, unsigned char key[16])
{
	memset(key, 0, 16);
	if (ss->ss_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	} else {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	}
}

void
connlimit_client_addr(const struct sockaddr_storage *addr, unsigned ipv6_prefix,
    struct sockaddr_storage *out)
{
	memcpy(out, addr, sizeof(*out));
	if (out->ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
		unsigned char *b = sin6->sin6_addr.s6_addr;

		sin6->sin6_port = 0;
		sin6->sin6_flowinfo = 0;
		sin6->sin6_scope_id = 0;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) || ipv6_prefix >= 128)
			return;
		if (ipv6_prefix % 8)
			b[ipv6_prefix / 8] &= (unsigned char)(0xff << (8 - ipv6_prefix % 8));
		for (unsigned i = (ipv6_prefix + 7) / 8; i < 16; i++)
			b[i] = 0;
	} else if (out->ss_family == AF_INET) {
		((struct sockaddr_in *)out)->sin_port = 0;
	}
}

/* FNV-1a over the key: where its probe starts. */
static size_t
key_hash(const unsigned char key[16])
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	return h & (tab->cap - 1);
}

/* An entry's count: the sum of its columns. */
static unsigned
entry_sum(const struct cl_entry *e)
{
	unsigned n = 0;

	for (int i = 0; i < CONNLIMIT_SLOTS; i++)
		n += e->count[i];
	return n;
}

/* Take the table's mutex; a holder that died leaves the table to be rebuilt. */
static void
table_lock(void)
{
	shmutex_lock(&tab->lock, "connection table", rebuild);
}

static void
table_unlock(void)
{
	shmutex_unlock(&tab->lock);
}

/* The entry for key, inserted when asked and there is room; NULL otherwise. */
static struct cl_entry *
find(const unsigned char key[16], bool insert)
{
	size_t mask = tab->cap - 1, i = key_hash(key);

	for (size_t n = 0; n < tab->cap; n++, i = (i + 1) & mask) {
		struct cl_entry *e = &tab->e[i];

		if (!e->used) {
			if (!insert || tab->used >= tab->max_used)
				return NULL;
			memset(e, 0, sizeof(*e));
			memcpy(e->key, key, 16);
			e->used = 1;
			tab->used++;
			return e;
		}
		if (memcmp(e->key, key, 16) == 0)
			return e;
	}
	return NULL;
}

/* Remove an entry, moving later ones of its probe run back (linear probing). */
static void
remove_entry(struct cl_entry *victim)
{
	size_t mask = tab->cap - 1, i = (size_t)(victim - tab->e), j = i;

	tab->e[i].used = 0;
	tab->used--;
	for (;;) {
		size_t k;

		j = (j + 1) & mask;
		if (!tab->e[j].used)
			return;
		k = key_hash(tab->e[j].key);
		/* Leave e[j] where it is when its home k lies cyclically in (i, j]. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		tab->e[i] = tab->e[j];
		tab->e[j].used = 0;
		i = j;
	}
}

/*
 * Re-insert every entry that still counts something, merging duplicates:
 * after a holder died mid-update, and after a column was cleared.
 */
static void
rebuild(void)
{
	size_t n = 0;
	struct cl_entry *keep = malloc(tab->cap * sizeof(*keep));

	if (keep == NULL)
		return;		/* zero entries stay; they are harmless */
	for (size_t i = 0; i < tab->cap; i++)
		if (tab->e[i].used && entry_sum(&tab->e[i]) > 0)
			keep[n++] = tab->e[i];
	memset(tab->e, 0, tab->cap * sizeof(tab->e[0]));
	tab->used = 0;
	for (size_t i = 0; i < n; i++) {
		struct cl_entry *e = find(keep[i].key, true);

		for (int c = 0; e && c < CONNLIMIT_SLOTS; c++)
			e->count[c] += keep[i].count[c];
	}
	free(keep);
}

/* Drop everything column c counted (its process is gone); under the lock. */
static void
clear_column(int c)
{
	for (size_t i = 0; i < tab->cap; i++)
		tab->e[i].count[c] = 0;
	tab->overflow.count[c] = 0;
	tab->total[c] = 0;
	tab->owner[c] = 0;
	rebuild();
}

/*
 * After fork(), in the child: the column is the parent's, claim another on
 * first use.  (Rather than compare getpid() with the claimer's pid on every
 * use: two system calls a session.)
 */
static void
forget_column(void)
{
	my_slot = -1;
}

/* This process's column: claimed on first use, after sweeping dead owners. */
static int
my_column(void)
{
	pid_t pid;

	if (my_slot >= 0)
		return my_slot;
	pid = getpid();
	table_lock();
	for (int c = 0; c < CONNLIMIT_SLOTS; c++)
		if (tab->owner[c] != 0 && tab->owner[c] != pid &&
		    kill(tab->owner[c], 0) == -1 && errno == ESRCH)
			clear_column(c);
	my_slot = CONNLIMIT_SLOTS - 1;	/* all taken: share the last one */
	for (int c = 0; c < CONNLIMIT_SLOTS; c++)
		if (tab->owner[c] == 0 || tab->owner[c] == pid) {
			tab->owner[c] = pid;
			my_slot = c;
			break;
		}
	table_unlock();
	return my_slot;
}

/* Map the shared table; see connlimit.h. */
int
connlimit_init(unsigned max_connections)
{
	size_t cap = 2 * CONNLIMIT_MIN_ADDRESSES, size;
	void *p;
	int rc;

	if (tab != NULL)
		return 0;
	while (cap < 2 * CONNLIMIT_MAX_ADDRESSES && cap < 2 * (size_t)max_connections)
		cap *= 2;
	size = sizeof(struct cl_table) + cap * sizeof(struct cl_entry);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	if ((rc = pthread_atfork(NULL, NULL, forget_column)) != 0) {
		munmap(p, size);
		errno = rc;
		return -1;
	}
	tab = p;
	tab->cap = cap;
	tab->max_used = cap / 2;
	if ((rc = shmutex_init(&tab->lock)) != 0) {
		munmap(p, size);
		tab = NULL;
		errno = rc;
		return -1;
	}
	return 0;
}

/* Map a table for this process alone when nobody called connlimit_init. */
static void
ensure_table(unsigned hint)
{
	if (tab == NULL && connlimit_init(hint ? hint : 1000) != 0)
		log_panic("connlimit: cannot map the connection table: %s", strerror(errno));
}

/*
 * Whether to warn that the table is full: at most once a minute for all the
 * processes (the time is in the table); under the lock.
 */
static bool
overflow_warning_due(void)
{
	struct timespec now;

	if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
		return false;
	if (tab->warned && now.tv_sec - tab->warned_at < 60)
		return false;
	tab->warned = true;
	tab->warned_at = now.tv_sec;
	return true;
}

/* The warning that the table is full (outside the lock). */
static void
warn_full(size_t addresses)
{
	log_warn("connection table full (%zu client addresses with connections open): "
	    "new addresses are counted together under one "
	    "limits.max_connections_per_client", addresses);
}

/* Count a new connection, or say which limit it is over; see connlimit.h. */
enum connlimit_result
connlimit_acquire(const struct sockaddr_storage *addr, unsigned max_total,
    unsigned max_per_client, struct connlimit_ticket *t, unsigned *count)
{
	memset(t, 0, sizeof(*t));
	return acquire(addr, max_total, max_per_client, t, count);
}

enum connlimit_result
connlimit_acquire_client(const struct sockaddr_storage *addr, unsigned max_per_client,
    struct connlimit_ticket *t, unsigned *count)
{
	if (!t->total || t->client)
		log_panic("the ticket is not one counted in the total only");
	return acquire(addr, 0, max_per_client, t, count);
}

/*
 * Count addr against max_per_client and, unless t already holds its place
 * in the total, against max_total (both 0 = no limit).
 */
static enum connlimit_result
acquire(const struct sockaddr_storage *addr, unsigned max_total, unsigned max_per_client,
    struct connlimit_ticket *t, unsigned *count)
{
	unsigned total = 0, n;
	size_t addresses = 0;
	bool warn = false, held = t->total;
	struct cl_entry *e;
	int c;

	ensure_table(max_total);
	c = my_column();
	addr_key(addr, t->key);
	table_lock();
	for (int i = 0; i < CONNLIMIT_SLOTS; i++)
		total += tab->total[i];
	if (!held && max_total && total >= max_total) {
		table_unlock();
		*count = total;
		return CONNLIMIT_TOTAL;
	}
	*count = 0;
	if (max_per_client) {
		if ((e = find(t->key, true)) == NULL) {
			/* The table is full: counted with every other address not in it. */
			e = &tab->overflow;
			t->overflow = true;
			addresses = tab->used;
			warn = overflow_warning_due();
		}
		n = entry_sum(e);
		if (n >= max_per_client) {
			table_unlock();
			if (warn)
				warn_full(addresses);
			*count = n;
			if (t->overflow) {
				t->overflow = false;
				return CONNLIMIT_OVERFLOW;
			}
			return CONNLIMIT_CLIENT;
		}
		if (e->count[c] < UINT16_MAX) {
			e->count[c]++;
			t->client = true;
			*count = n + 1;
		} else {
			t->overflow = false;
			if (n == 0 && e != &tab->overflow)
				remove_entry(e);
		}
	}
	if (!held)
		tab->total[c]++;
	t->total = true;
	table_unlock();
	if (warn)
		warn_full(addresses);
	return CONNLIMIT_OK;
}

/* Give back what a ticket holds. */
void
connlimit_release(struct connlimit_ticket *t)
{
	int c;

	if (tab == NULL || (!t->total && !t->client))
		return;
	c = my_column();
	table_lock();
	if (t->total && tab->total[c] > 0)
		tab->total[c]--;
	if (t->client && t->overflow) {
		if (tab->overflow.count[c] > 0)
			tab->overflow.count[c]--;
	} else if (t->client) {
		struct cl_entry *e = find(t->key, false);

		if (e != NULL && e->count[c] > 0 && --e->count[c] == 0 && entry_sum(e) == 0)
			remove_entry(e);
	}
	table_unlock();
	t->total = t->client = t->overflow = false;
}

/* Drop the column of a process that is gone; see connlimit.h. */
void
connlimit_process_died(pid_t pid)
{
	if (tab == NULL || pid <= 0)
		return;
	table_lock();
	for (int c = 0; c < CONNLIMIT_SLOTS; c++)
		if (tab->owner[c] == pid)
			clear_column(c);
	table_unlock();
}

/* The total now (for tests). */
unsigned
connlimit_total(void)
{
	unsigned total = 0;

	if (tab == NULL)
		return 0;
	table_lock();
	for (int i = 0; i < CONNLIMIT_SLOTS; i++)
		total += tab->total[i];
	table_unlock();
	return total;
}

/* One address's count now (for tests). */
unsigned
connlimit_count(const struct sockaddr_storage *addr)
{
	unsigned char key[16];
	struct cl_entry *e;
	unsigned n;

	if (tab == NULL)
		return 0;
	addr_key(addr, key);
	table_lock();
	n = (e = find(key, false)) != NULL ? entry_sum(e) : 0;
	table_unlock();
	return n;
}

/* The overflow entry's count now (for tests). */
unsigned
connlimit_overflow_count(void)
{
	unsigned n;

	if (tab == NULL)
		return 0;
	table_lock();
	n = entry_sum(&tab->overflow);
	table_unlock();
	return n;
}

/* How many addresses the table counts apart (for tests). */
unsigned
connlimit_capacity(void)
{
	return tab != NULL ? (unsigned)tab->max_used : 0;
}
