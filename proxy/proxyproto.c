/*
 * proxyproto.c - parse a PROXY protocol header, version 1 (text) or 2
 * (binary), from the bytes received so far (see proxyproto.h).
 *
 * The specification is HAProxy's "The PROXY protocol", versions 1 and 2.
 * Everything is checked against n before it is read; the only bounds are
 * PROXYPROTO_V1_MAX and PROXYPROTO_V2_MAX, so a peer that sends an endless
 * prefix is refused as soon as it passes them.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "proxyproto.h"

static const unsigned char v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

#define V1_PREFIX	"PROXY "
#define V2_HEADER	16		/* signature, version/command, family, length */

/* v2 byte 13: address family (high nibble) and transport (low nibble). */
enum {
	V2_UNSPEC = 0x00,
	V2_TCP4 = 0x11,
	V2_TCP6 = 0x21,
};

/* Record why the header is bad; returns PP_BAD. */
static enum proxyproto_result
bad(struct proxyproto *out, const char *why)
{
	out->error = why;
	return PP_BAD;
}

/* A v1 port: 1 to 5 digits, no leading zero (but "0"), at most 65535; -1 if bad. */
static int
v1_port(const char *p, size_t n)
{
	unsigned v = 0;

	if (n == 0 || n > 5 || (p[0] == '0' && n > 1))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	return v > 65535 ? -1 : (int)v;
}

/* A v1 address of one family into ss (port set later); -1 if bad. */
static int
v1_addr(int family, const char *p, size_t n, struct sockaddr_storage *ss)
{
	char text[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(text))
		return -1;
	memcpy(text, p, n);
	text[n] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		return inet_pton(AF_INET, text, &sin->sin_addr) == 1 ? 0 : -1;
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	sin6->sin6_family = AF_INET6;
	return inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1 ? 0 : -1;
}

/* Set the port of an address parsed by v1_addr or from v2 bytes. */
static void
set_port(struct sockaddr_storage *ss, unsigned port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

/* Version 1: one text line; b starts with a prefix of "PROXY ". */
static enum proxyproto_result
parse_v1(const char *b, size_t n, struct proxyproto *out)
{
	const char *tok[6], *end, *p;
	size_t toklen[6], ntok = 0, linelen;
	size_t look = n < PROXYPROTO_V1_MAX ? n : PROXYPROTO_V1_MAX;
	int family, sport, dport;

	if ((end = memchr(b, '\n', look)) == NULL) {
		const char *cr = memchr(b, '\r', look);

		if (cr != NULL && cr != b + look - 1)
			return bad(out, "v1: CR not followed by LF");
		return n >= PROXYPROTO_V1_MAX ? bad(out, "v1: line too long") : PP_NEED_MORE;
	}
	if (end == b || end[-1] != '\r')
		return bad(out, "v1: bare LF");
	linelen = (size_t)(end - b) - 1;	/* without CRLF */
	for (size_t i = 0; i < linelen; i++)
		if ((unsigned char)b[i] < 0x20 || (unsigned char)b[i] > 0x7e)
			return bad(out, "v1: control or 8-bit byte");

	/* Split what follows "PROXY " at single spaces. */
	p = b + sizeof(V1_PREFIX) - 1;
	while (p <= b + linelen && ntok < 6) {
		const char *sp = memchr(p, ' ', (size_t)(b + linelen - p));
		const char *e = sp ? sp : b + linelen;

		tok[ntok] = p;
		toklen[ntok++] = (size_t)(e - p);
		if (sp == NULL)
			break;
		p = sp + 1;
	}
	memset(out, 0, sizeof(*out));
	out->version = 1;
	out->len = linelen + 2;
	if (ntok >= 1 && toklen[0] == 7 && memcmp(tok[0], "UNKNOWN", 7) == 0) {
		out->local = true;	/* the rest of the line is to be ignored (spec 2.1) */
		return PP_OK;
	}
	if (ntok < 1 || toklen[0] != 4 || (memcmp(tok[0], "TCP4", 4) != 0 &&
	    memcmp(tok[0], "TCP6", 4) != 0))
		return bad(out, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
	family = tok[0][3] == '4' ? AF_INET : AF_INET6;
	if (ntok != 5 || p + toklen[4] != b + linelen)
		return bad(out, "v1: expected 4 fields after the protocol");
	if (v1_addr(family, tok[1], toklen[1], &out->src) != 0 ||
	    v1_addr(family, tok[2], toklen[2], &out->dst) != 0)
		return bad(out, "v1: bad address");
	if ((sport = v1_port(tok[3], toklen[3])) < 0 || (dport = v1_port(tok[4], toklen[4])) < 0)
		return bad(out, "v1: bad port");
	set_port(&out->src, (unsigned)sport);
	set_port(&out->dst, (unsigned)dport);
	return PP_OK;
}

/* The TLVs after the addresses: each must fit exactly; skipped. */
static int
v2_tlvs_ok(const unsigned char *p, size_t n)
{
	while (n > 0) {
		size_t vlen;

		if (n < 3)
			return -1;
		vlen = (size_t)p[1] << 8 | p[2];
		if (vlen > n - 3)
			return -1;
		p += 3 + vlen;
		n -= 3 + vlen;
	}
	return 0;
}

/* Version 2: binary; b starts with a prefix of the signature. */
static enum proxyproto_result
parse_v2(const unsigned char *b, size_t n, struct proxyproto *out)
{
	size_t len, total, alen;
	unsigned cmd, fam;

	if (n < V2_HEADER)
		return PP_NEED_MORE;
	if ((b[12] >> 4) != 2)
		return bad(out, "v2: version is not 2");
	cmd = b[12] & 0x0f;
	if (cmd > 1)
		return bad(out, "v2: command is neither LOCAL nor PROXY");
	fam = b[13];
	len = (size_t)b[14] << 8 | b[15];
	total = V2_HEADER + len;
	if (total > PROXYPROTO_V2_MAX)
		return bad(out, "v2: header too long");
	if (cmd == 1 && fam != V2_UNSPEC && fam != V2_TCP4 && fam != V2_TCP6)
		return bad(out, "v2: not TCP over IPv4 or IPv6");
	alen = fam == V2_TCP4 ? 12 : fam == V2_TCP6 ? 36 : 0;
	if (cmd == 1 && len < alen)
		return bad(out, "v2: address block too short");
	if (n < total)
		return PP_NEED_MORE;

	memset(out, 0, sizeof(*out));
	out->version = 2;
	out->len = total;
	if (cmd == 0 || fam == V2_UNSPEC) {
		out->local = true;	/* addresses and TLVs ignored (spec 2.2) */
		return PP_OK;
	}
	if (v2_tlvs_ok(b + V2_HEADER + alen, len - alen) != 0)
		return bad(out, "v2: malformed TLV");
	const unsigned char *a = b + V2_HEADER;

	if (fam == V2_TCP4) {
		struct sockaddr_in *src = (struct sockaddr_in *)&out->src;
		struct sockaddr_in *dst = (struct sockaddr_in *)&out->dst;

		src->sin_family = dst->sin_family = AF_INET;
		memcpy(&src->sin_addr, a, 4);
		memcpy(&dst->sin_addr, a + 4, 4);
		memcpy(&src->sin_port, a + 8, 2);	/* network order on both sides */
		memcpy(&dst->sin_port, a + 10, 2);
	} else {
		struct sockaddr_in6 *src = (struct sockaddr_in6 *)&out->src;
		struct sockaddr_in6 *dst = (struct sockaddr_in6 *)&out->dst;

		src->sin6_family = dst->sin6_family = AF_INET6;
		memcpy(&src->sin6_addr, a, 16);
		memcpy(&dst->sin6_addr, a + 16, 16);
		memcpy(&src->sin6_port, a + 32, 2);
		memcpy(&dst->sin6_port, a + 34, 2);
	}
	return PP_OK;
}

/* Parse the start of a connection; see proxyproto.h. */
enum proxyproto_result
proxyproto_parse(const void *buf, size_t n, struct proxyproto *out)
{
	const unsigned char *b = buf;
	size_t m;

	if (n == 0)
		return PP_NEED_MORE;
	if (b[0] == v2_sig[0]) {
		m = n < sizeof(v2_sig) ? n : sizeof(v2_sig);
		if (memcmp(b, v2_sig, m) != 0)
			return bad(out, "bad v2 signature");
		return m < sizeof(v2_sig) ? PP_NEED_MORE : parse_v2(b, n, out);
	}
	m = n < sizeof(V1_PREFIX) - 1 ? n : sizeof(V1_PREFIX) - 1;
	if (memcmp(b, V1_PREFIX, m) != 0)
		return bad(out, "no PROXY protocol signature");
	return m < sizeof(V1_PREFIX) - 1 ? PP_NEED_MORE : parse_v1(buf, n, out);
}

/* A name for a result. */
const char *
proxyproto_result_name(enum proxyproto_result r)
{
	switch (r) {
	case PP_NEED_MORE:
		return "NEED_MORE";
	case PP_OK:
		return "OK";
	case PP_BAD:
		return "BAD";
	}
	return "?";
}
