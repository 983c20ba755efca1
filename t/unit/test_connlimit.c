/*
 * test_connlimit.c - unit tests for connlimit.c: the total and per-address
 * limits, release, IPv4 and IPv6 keys, many addresses (table growth and
 * removal), and counts shared with forked processes: a child's counts are
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

	/* IPv4 and its IPv4-mapped IPv6 form are the same client. */
	struct sockaddr_storage m = addr("::ffff:192.0.2.1");
	is_int(connlimit_acquire(&m, 0, 3, &x, &n), CONNLIMIT_CLIENT, "::ffff:192.0.2.1 is 192.0.2.1");

	for (int i = 0; i < 6; i++)
		connlimit_release(&t[i]);
	is_int(connlimit_total(), 0, "all released: total 0");
	is_int(connlimit_count(&a), 0, "a: 0");
	is_int(connlimit_count(&b), 0, "b: 0");
}

/* Many addresses at once: more than the minimum table, then all released. */
static void
test_many(void)
{
	enum { N = 3000 };
	static struct connlimit_ticket t[N];
	struct sockaddr_storage ss;
	unsigned n, okc = 0, counted = 0, bad = 0;
	char text[64];

	for (int i = 0; i < N; i++) {
		snprintf(text, sizeof(text), "10.%d.%d.1", i / 256, i % 256);
		ss = addr(text);
		okc += connlimit_acquire(&ss, 0, 2, &t[i], &n) == CONNLIMIT_OK;
		counted += t[i].client;
	}
	is_int(okc, N, "3000 addresses: all let in");
	is_int(counted, CONNLIMIT_MIN_ENTRIES, "as many counted per client as the table holds, "
	    "the others let in uncounted");
	for (int i = 0; i < N; i += 7) {
		snprintf(text, sizeof(text), "10.%d.%d.1", i / 256, i % 256);
		ss = addr(text);
		if (t[i].client && connlimit_count(&ss) != 1)
			bad++;
	}
	is_int(bad, 0, "each counted address counts 1");
	for (int i = 0; i < N; i++)
		connlimit_release(&t[i]);
	is_int(connlimit_total(), 0, "all released");
	ss = addr("10.0.5.1");
	is_int(connlimit_count(&ss), 0, "an address released is gone");
	is_int(connlimit_acquire(&ss, 0, 1, &t[0], &n), CONNLIMIT_OK, "and can come again");
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

int
main(void)
{
	ok(connlimit_init(100) == 0, "connlimit_init");
	ok(connlimit_init(100) == 0, "connlimit_init again: the same table");
	test_limits();
	test_many();
	test_fork();
	return done_testing();
}
