/*
 * clientfacts.h - what the proxy knows about the client of one session:
 * where it connects from and to, how it greeted, how it authenticated.
 *
 * A plain struct, no code: struct session owns one (session.h) and writes
 * it as the session learns these facts; the parts that only read them get a
 * pointer to it and nothing else of the session: the filter chain's host
 * table (filter.c), the ESMTP checks (esmtp.c), the held message's replay
 * (hold.c) and the quarantine file (quarantine.c).
 */
#ifndef SMTPCHAIN_CLIENTFACTS_H
#define SMTPCHAIN_CLIENTFACTS_H

#include <stdbool.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct client_facts {
	char			 addr[INET6_ADDRSTRLEN];	/* the client's address (after a
						   PROXY header, the one it named) */
	unsigned		 port;
	struct sockaddr_storage	 local;		/* the address it connected to: after a PROXY
						   header the one it named, else ours, looked up
						   when a filter asks ({daemon_addr}); AF_UNSPEC
						   until then */
	char			 helo[256];	/* the EHLO or HELO name, "" before */
	bool			 esmtp;		/* the last accepted greeting was EHLO, not HELO */
	bool			 ehlo_seen;	/* an EHLO came, accepted or not yet: the
						   protocol name filters see is ESMTP from
						   then on (as Postfix: a later HELO does not
						   downgrade it), SMTP before */
	bool			 auth_done;	/* the backend said 235 */
	char			 auth_mech[32];
	char			 auth_user[256];	/* the authenticated identity, for filters and logs */
};

#endif
