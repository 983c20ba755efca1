/*
 * test_listener.c - unit tests for listener.c: what the listening sockets
 * hand on to the connections accepted on them.
 *
 * The session no longer sets TCP_NODELAY on each client connection (a
 * setsockopt per session); listener_bind sets it on the listening socket
 * and the kernel copies it to every accepted socket.  This test holds the
 * kernel to that, for IPv4 and IPv6 (::1, skipped where there is none).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"
#include "tap.h"

/* The TCP_NODELAY of a socket accepted on a listener_bind socket for ip. */
static int
accepted_nodelay(int family, const char *ip, const char *name)
{
	struct config_addr a;
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	char err[256];
	int lfd, cfd, afd = -1, on = -1;
	socklen_t olen = sizeof(on);

	memset(&a, 0, sizeof(a));
	a.ss.ss_family = (sa_family_t)family;
	if (family == AF_INET) {
		inet_pton(AF_INET, ip, &((struct sockaddr_in *)&a.ss)->sin_addr);
		a.sslen = sizeof(struct sockaddr_in);
	} else {
		inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&a.ss)->sin6_addr);
		a.sslen = sizeof(struct sockaddr_in6);
	}
	snprintf(a.text, sizeof(a.text), "%s", name);
	if ((lfd = listener_bind(&a, err, sizeof(err))) == -1) {
		diag("%s", err);
		return -2;
	}
	getsockname(lfd, (struct sockaddr *)&bound, &blen);
	cfd = socket(family, SOCK_STREAM, 0);
	if (cfd != -1 && connect(cfd, (struct sockaddr *)&bound, blen) == 0) {
		struct pollfd pfd = { .fd = lfd, .events = POLLIN };

		if (poll(&pfd, 1, -1) == 1)	/* the listener is non-blocking */
			afd = accept(lfd, NULL, NULL);
	}
	if (afd != -1 && getsockopt(afd, IPPROTO_TCP, TCP_NODELAY, &on, &olen) != 0)
		on = -1;
	if (afd != -1)
		close(afd);
	if (cfd != -1)
		close(cfd);
	close(lfd);
	return on;
}

int
main(void)
{
	int v6;

	ok(accepted_nodelay(AF_INET, "127.0.0.1", "127.0.0.1:0") > 0,
	    "IPv4: an accepted socket has TCP_NODELAY from the listener");
	v6 = accepted_nodelay(AF_INET6, "::1", "[::1]:0");
	if (v6 == -2)
		diag("no ::1 here: the IPv6 case is skipped");
	else
		ok(v6 > 0, "IPv6: an accepted socket has TCP_NODELAY from the listener");
	return done_testing();
}
