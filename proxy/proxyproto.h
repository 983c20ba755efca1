/*
 * proxyproto.h - the PROXY protocol header (HAProxy, versions 1 and 2), as
 * a load balancer sends it first on a connection, before any byte of the
 * client's own.
 *
 * proxyproto_parse() is a pure function over the bytes received so far: it
 * answers PP_NEED_MORE (a valid prefix, send more), PP_OK (a whole header,
 * its length and the addresses it carries) or PP_BAD (not a PROXY header,
 * or a malformed or oversized one).  It never reads past n bytes and keeps
 * no state, so the caller simply calls it again with more bytes.
 *
 * Accepted:
 *	v1: "PROXY TCP4 src dst sport dport\r\n", "PROXY TCP6 ...\r\n", and
 *	    "PROXY UNKNOWN[ anything]\r\n" (local); at most 107 bytes.
 *	v2: the 12-byte signature, version 2, command LOCAL (local) or PROXY
 *	    with TCP over IPv4 or IPv6 (addresses) or UNSPEC (local); TLVs
 *	    after the addresses are checked to be well formed and skipped;
 *	    at most PROXYPROTO_V2_MAX bytes in all.  UDP, UNIX and unknown
 *	    families are refused: this is a TCP service.
 * "local" means the header names no client: the connection's own peer
 * address stands (a health check from the load balancer itself).
 */
#ifndef SMTPCHAIN_PROXYPROTO_H
#define SMTPCHAIN_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define PROXYPROTO_V1_MAX	107	/* the longest v1 line, CRLF included (spec 2.1) */
#define PROXYPROTO_V2_MAX	4096	/* our bound on a v2 header, TLVs included */
#define PROXYPROTO_MAX		PROXYPROTO_V2_MAX	/* the most a caller must buffer */

enum proxyproto_result {
	PP_NEED_MORE = 0,	/* a valid prefix so far */
	PP_OK,			/* a whole header: see struct proxyproto */
	PP_BAD,			/* not a PROXY header, or a bad one */
};

/* What a whole header said. */
struct proxyproto {
	size_t			len;		/* bytes of the header (the caller consumes them) */
	int			version;	/* 1 or 2 */
	bool			local;		/* LOCAL, UNKNOWN or UNSPEC: no client named */
	struct sockaddr_storage	src;		/* the real client (when !local) */
	struct sockaddr_storage	dst;		/* the address it connected to (when !local) */
	const char		*error;		/* PP_BAD: what was wrong (a static string) */
};

/* Parse the start of a connection; see above.  out is filled on PP_OK;
 * on PP_BAD only out->error is set. */
enum proxyproto_result proxyproto_parse(const void *buf, size_t n, struct proxyproto *out);

/* A name for a result, for logs and tests. */
const char *proxyproto_result_name(enum proxyproto_result r);

#endif
