/*
 * nodelay-shim.c - an LD_PRELOAD library for the benchmark: every TCP
 * socket the process accepts or connects gets TCP_NODELAY.
 *
 * Haraka (Node.js) leaves Nagle on, on its client sockets and on its
 * connections to the backend.  When it writes a reply in two writes, the
 * second waits for the peer's delayed ACK of the first (the stall issue 14
 * found in libmilter, ~40 ms a message).  bench/bench.pl's system
 * "haraka-nodelay" runs Haraka with this library so that the comparison is
 * also made against a Haraka without that stall.  Built by bench.pl with
 * cc -shared -fPIC; never part of smtpchain.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* TCP_NODELAY on fd if it is a TCP socket; errors are ignored (not TCP). */
static void
nodelay(int fd)
{
	int one = 1;

	if (fd >= 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int
accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	static int (*real)(int, struct sockaddr *, socklen_t *, int);
	int c;

	if (real == NULL)
		real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
	c = real(fd, sa, len, flags);
	nodelay(c);
	return c;
}

int
accept(int fd, struct sockaddr *sa, socklen_t *len)
{
	return accept4(fd, sa, len, 0);
}

int
connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	static int (*real)(int, const struct sockaddr *, socklen_t);

	if (real == NULL)
		real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
	if (sa != NULL && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6))
		nodelay(fd);
	return real(fd, sa, len);
}
