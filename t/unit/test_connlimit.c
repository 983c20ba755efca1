/*
 * test_connlimit.c - unit tests for connlimit.c: the total and per-address
 * limits, release, IPv4 and IPv6 keys, a full table (new addresses counted
 * together in the overflow entry, removal frees places), and counts shared with forked processes: a child's counts are
 * seen by the parent, and dropped when the child dies, by
 * connlimit_process_died() or by the sweep when a new process claims a
 * column.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "connlimit.h"
#include "tap.h"

/* An address from text (v4 or v6). */
static struct sockaddr_storage
addr(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':')) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, text, &sin6->sin6_addr);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		inet_pton(AF_INET, text, &sin->sin_addr);
	}
	return ss;
}

static void
test_limits(void)
{
	struct sockaddr_storage a = addr("192.0.2.1"), b = addr("2001:db8::1");
	struct connlimit_ticket t[8], x;
	unsigned n;

	for (int i = 0; i < 3; i++)
		is_int(connlimit_acquire(&a, 5, 3, &t[i], &n), CONNLIMIT_OK, "a: under the per-client limit");
	is_int(n, 3, "a: its count");
	is_int(connlimit_acquire(&a, 5, 3, &x, &n), CONNLIMIT_CLIENT, "a: the 4th is over the per-client limit");
	is_int(n, 3, "a: the count that decided");
	ok(!x.total && !x.client, "a refused connection holds nothing");
	is_int(connlimit_count(&a), 3, "a: still 3");
	is_int(connlimit_acquire(&b, 5, 3, &t[3], &n), CONNLIMIT_OK, "b (IPv6): its own count");
	is_int(n, 1, "b: 1");
	is_int(connlimit_acquire(&b, 5, 3, &t[4], &n), CONNLIMIT_OK, "b: 2");
	is_int(connlimit_total(), 5, "total 5");
	is_int(connlimit_acquire(&b, 5, 3, &x, &n), CONNLIMIT_TOTAL, "b: the 6th in all is over the total");
	is_int(n, 5, "the total that decided");
	connlimit_release(&t[0]);
	is_int(connlimit_count(&a), 2, "a: released one");
	connlimit_release(&t[0]);
	is_int(connlimit_count(&a), 2, "releasing twice changes nothing");
	is_int(connlimit_acquire(&a, 5, 3, &t[0], &n), CONNLIMIT_OK, "a: room again");
	is_int(connlimit_acquire(&a, 0, 0, &t[5], &n), CONNLIMIT_OK, "no limits: always OK");
	ok(t[5].total && !t[5].client, "no per-client limit: counted in the total only");
	is_int(connlimit_count(&a), 3, "and not per client");

	/*
	 * A PROXY listener's connection: the total at accept, its client
	 * when the header names it (the total not counted twice, nor checked
	 * again), and over the per-client limit it still holds the total.
	 */
	struct connlimit_ticket p = { 0 };
	struct sockaddr_storage c = addr("198.51.100.7");
	connlimit_release(&t[5]);
	is_int(connlimit_acquire(&a, 6, 0, &p, &n), CONNLIMIT_OK, "proxy: counted in the total at accept");
	ok(p.total && !p.client, "proxy: the total only");
	is_int(connlimit_total(), 6, "proxy: total 6, the limit");
	is_int(connlimit_acquire_client(&c, 1, &p, &n), CONNLIMIT_OK, "proxy: then its client, at a full total");
	is_int(connlimit_total(), 6, "proxy: total still 6");
	is_int(connlimit_count(&c), 1, "proxy: its client counted");
	connlimit_release(&p);
	is_int(connlimit_total(), 5, "proxy: released, total 5");
	is_int(connlimit_count(&c), 0, "proxy: and its client");
	struct connlimit_ticket q = { 0 }, r = { 0 };
	is_int(connlimit_acquire(&c, 0, 1, &q, &n), CONNLIMIT_OK, "c: one connection");
	is_int(connlimit_acquire(&a, 0, 0, &r, &n), CONNLIMIT_OK, "proxy: accepted");
	is_int(connlimit_acquire_client(&c, 1, &r, &n), CONNLIMIT_CLIENT, "proxy: its client is over the limit");
	ok(r.total && !r.client, "and the ticket still holds the total");
	connlimit_release(&r);
	connlimit_release(&q);
	is_int(connlimit_total(), 5, "all given back");
	is_int(connlimit_acquire(&a, 0, 0, &t[5], &n), CONNLIMIT_OK, "a: counted in the total again");

	/* IPv4 and its IPv4-mapped IPv6 form are the same client. */
	struct sockaddr_storage m = addr("::ffff:192.0.2.1");
	is_int(connlimit_acquire(&m, 0, 3, &x, &n), CONNLIMIT_CLIENT, "::ffff:192.0.2.1 is 192.0.2.1");

	for (int i = 0; i < 6; i++)
		connlimit_release(&t[i]);
	is_int(connlimit_total(), 0, "all released: total 0");
	is_int(connlimit_count(&a), 0, "a: 0");
	is_int(connlimit_count(&b), 0, "b: 0");
}

/* An address of the test range, one per i (up to 65536). */
static struct sockaddr_storage
nth(int i)
{
	char text[64];

	snprintf(text, sizeof(text), "10.%d.%d.1", i / 256, i % 256);
	return addr(text);
}

/*
 * More addresses than the table holds: those beyond it are counted together
 * in the overflow entry, limited as one client (max_per_client), never let
 * in uncounted; a place freed in the table is used again.
 */
static void
test_full(void)
{
	enum { N = CONNLIMIT_MIN_ADDRESSES };
	static struct connlimit_ticket t[N];
	struct connlimit_ticket o[3], again, x;
	struct sockaddr_storage ss;
	unsigned n, okc = 0, counted = 0, bad = 0;

	is_int(connlimit_capacity(), N, "connlimit_init(100): the table holds the floor, 4096 addresses");
	for (int i = 0; i < N; i++) {
		ss = nth(i);
		okc += connlimit_acquire(&ss, 0, 2, &t[i], &n) == CONNLIMIT_OK;
		counted += t[i].client && !t[i].overflow;
	}
	is_int(okc, N, "4096 addresses: all let in");
	is_int(counted, N, "each counted for its own address");
	is_int(connlimit_overflow_count(), 0, "none in the overflow entry");

	/* Full: new addresses share one per-client limit (2). */
	ss = nth(N);
	is_int(connlimit_acquire(&ss, 0, 2, &o[0], &n), CONNLIMIT_OK, "table full: a new address is let in");
	ok(o[0].total && o[0].client && o[0].overflow, "counted in the overflow entry");
	is_int(n, 1, "its count is the overflow entry's");
	is_int(connlimit_count(&ss), 0, "not under its own address");
	ss = nth(N + 1);
	is_int(connlimit_acquire(&ss, 0, 2, &o[1], &n), CONNLIMIT_OK, "another new address: let in");
	is_int(n, 2, "the overflow entry counts 2");
	ss = nth(N + 2);
	is_int(connlimit_acquire(&ss, 0, 2, &x, &n), CONNLIMIT_OVERFLOW,
	    "a third new address is over the shared per-client limit");
	is_int(n, 2, "the count that decided");
	ok(!x.total && !x.client && !x.overflow, "a refused connection holds nothing");
	is_int(connlimit_total(), N + 2, "the total counts the overflow's connections");

	/* Addresses in the table keep their own counts and limits. */
	ss = nth(7);
	is_int(connlimit_acquire(&ss, 0, 2, &again, &n), CONNLIMIT_OK, "an address in the table: its own count");
	is_int(n, 2, "2 for that address");
	is_int(connlimit_acquire(&ss, 0, 2, &x, &n), CONNLIMIT_CLIENT, "and its own limit");
	connlimit_release(&again);

	/* A place freed in the table: the next new address is counted apart again. */
	connlimit_release(&t[0]);
	ss = nth(N + 2);
	is_int(connlimit_acquire(&ss, 0, 2, &o[2], &n), CONNLIMIT_OK, "a place freed: a new address is let in");
	ok(o[2].client && !o[2].overflow, "under its own address");
	is_int(connlimit_count(&ss), 1, "which counts 1");
	is_int(connlimit_overflow_count(), 2, "the overflow entry still 2");

	/* A process that dies with overflow connections: they are dropped with it. */
	pid_t pid = fork();
	int st = 0;

	if (pid == 0) {
		struct connlimit_ticket ct;

		ss = nth(N + 3);		/* the table is full again: overflow, limit 3 */
		_exit(connlimit_acquire(&ss, 0, 3, &ct, &n) == CONNLIMIT_OK && ct.overflow ? 0 : 1);
	}
	waitpid(pid, &st, 0);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a child counts one in the overflow entry");
	is_int(connlimit_overflow_count(), 3, "the parent sees it");
	connlimit_process_died(pid);
	is_int(connlimit_overflow_count(), 2, "dropped when the child is reaped");

	connlimit_release(&o[0]);
	is_int(connlimit_overflow_count(), 1, "an overflow connection released");
	connlimit_release(&o[0]);
	is_int(connlimit_overflow_count(), 1, "releasing twice changes nothing");
	connlimit_release(&o[1]);
	connlimit_release(&o[2]);
	is_int(connlimit_overflow_count(), 0, "overflow entry: 0");
	for (int i = 1; i < N; i++) {
		if (i % 7 == 0) {
			ss = nth(i);
			bad += connlimit_count(&ss) != 1;
		}
		connlimit_release(&t[i]);
	}
	is_int(bad, 0, "each address in the table counted 1");
	is_int(connlimit_total(), 0, "all released");
	ss = nth(5);
	is_int(connlimit_count(&ss), 0, "an address released is gone");
	is_int(connlimit_acquire(&ss, 0, 1, &t[0], &n), CONNLIMIT_OK, "and can come again");
	ok(!t[0].overflow, "under its own address");
	connlimit_release(&t[0]);
}

/* A child counts connections, then dies; the parent sees and drops them. */
static void
test_fork(void)
{
	struct sockaddr_storage a = addr("198.51.100.9");
	struct connlimit_ticket t, mine;
	int p2c[2], c2p[2];
	unsigned n;
	pid_t pid;
	char c;

	is_int(connlimit_acquire(&a, 0, 10, &mine, &n), CONNLIMIT_OK, "the parent counts one");
	if (pipe(p2c) != 0 || pipe(c2p) != 0)
		exit(2);
	if ((pid = fork()) == 0) {
		struct connlimit_ticket ct[3];

		for (int i = 0; i < 3; i++)
			connlimit_acquire(&a, 0, 10, &ct[i], &n);
		if (write(c2p[1], "x", 1) != 1 || read(p2c[0], &c, 1) != 1)
			_exit(1);
		_exit(0);	/* dies holding its three */
	}
	if (read(c2p[0], &c, 1) != 1)
		exit(2);
	is_int(connlimit_count(&a), 4, "the child's three are seen by the parent");
	is_int(connlimit_acquire(&a, 0, 4, &t, &n), CONNLIMIT_CLIENT, "and count against the limit");
	if (write(p2c[1], "x", 1) != 1)
		exit(2);
	waitpid(pid, NULL, 0);
	is_int(connlimit_count(&a), 4, "a dead child's counts stay until it is reaped");
	connlimit_process_died(pid);
	is_int(connlimit_count(&a), 1, "connlimit_process_died drops them");
	is_int(connlimit_total(), 1, "and its total");

	/* A child killed, nobody calls process_died: the next new process sweeps it. */
	if ((pid = fork()) == 0) {
		struct connlimit_ticket ct;

		connlimit_acquire(&a, 0, 10, &ct, &n);
		if (write(c2p[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	if (read(c2p[0], &c, 1) != 1)
		exit(2);
	is_int(connlimit_count(&a), 2, "a second child counts one");
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	if ((pid = fork()) == 0) {
		struct connlimit_ticket ct;

		connlimit_acquire(&a, 0, 10, &ct, &n);	/* claims a column: sweeps the dead */
		connlimit_release(&ct);
		_exit(n == 2 ? 0 : 1);
	}
	int st = 0;

	waitpid(pid, &st, 0);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a new process sees only the live counts");
	is_int(connlimit_count(&a), 1, "the killed child's count was swept");
	connlimit_release(&mine);
	is_int(connlimit_total(), 0, "all released");
}

/* The address a client is counted under: IPv6 cut to the prefix. */
static void
test_client_addr(void)
{
	static const struct {
		const char	*in;
		unsigned	 bits;
		const char	*out;
	} cases[] = {
		{ "2001:db8::1", 84, "2001:db8::" },
		{ "2001:db8::fff:0:3", 84, "2001:db8::" },
		{ "2001:db8::1000:0:4", 84, "2001:db8::1000:0:0" },
		{ "2001:db8::1000:0:4", 64, "2001:db8::" },
		{ "2001:db8::1000:0:4", 128, "2001:db8::1000:0:4" },
		{ "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 1, "::" },
		{ "a001:db8::1", 1, "8000::" },
		{ "2001:db8:abcd:ef01::", 60, "2001:db8:abcd:ef00::" },
		{ "::ffff:192.0.2.7", 84, "::ffff:192.0.2.7" },	/* IPv4-mapped: as IPv4 */
		{ "192.0.2.7", 84, "192.0.2.7" },
	};
	struct connlimit_ticket t = { 0 }, u = { 0 };
	unsigned n;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sockaddr_storage in = addr(cases[i].in), out, want = addr(cases[i].out);
		char msg[160];

		((struct sockaddr_in6 *)&in)->sin6_port = htons(25);	/* same offset for IPv4 */
		connlimit_client_addr(&in, cases[i].bits, &out);
		snprintf(msg, sizeof(msg), "%s/%u is %s", cases[i].in, cases[i].bits, cases[i].out);
		ok(memcmp(&out, &want, sizeof(out)) == 0, msg);
	}
	/* Two hosts of one /84 count as one client. */
	struct sockaddr_storage a = addr("2001:db8::1"), b = addr("2001:db8::2"), ka, kb;
	connlimit_client_addr(&a, 84, &ka);
	connlimit_client_addr(&b, 84, &kb);
	is_int(connlimit_acquire(&ka, 0, 1, &t, &n), CONNLIMIT_OK, "2001:db8::1 in its /84");
	is_int(connlimit_acquire(&kb, 0, 1, &u, &n), CONNLIMIT_CLIENT, "2001:db8::2: the same /84, over 1");
	connlimit_release(&t);
	is_int(connlimit_count(&ka), 0, "released");
}

int
main(void)
{
	ok(connlimit_init(100) == 0, "connlimit_init");
	ok(connlimit_init(100) == 0, "connlimit_init again: the same table");
	test_limits();
	test_client_addr();
	test_full();
	test_fork();
	return done_testing();
}
