/*
 * test_proxyproto.c - unit tests for proxyproto.c: PROXY protocol v1 and v2
 * headers as HAProxy sends them, each fed whole and one byte at a time
 * (every proper prefix must be NEED_MORE), and bad ones: truncated,
 * oversized, bad signatures, LOCAL, UNKNOWN, unknown families, bad TLVs.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"
#include "tap.h"

/* The address and port of ss as "addr port". */
static const char *
addr_text(const struct sockaddr_storage *ss)
{
	static char buf[2][80];
	static int which;
	char a[INET6_ADDRSTRLEN];
	char *out = buf[which ^= 1];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, a, sizeof(a));
		snprintf(out, 80, "%s %u", a, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof(a));
		snprintf(out, 80, "%s %u", a, ntohs(sin6->sin6_port));
	} else {
		snprintf(out, 80, "family %d", ss->ss_family);
	}
	return out;
}

/*
 * Every proper prefix of a good header is NEED_MORE, the whole is OK with
 * the given length, and so is the whole followed by client bytes.
 */
static void
good(const char *name, const void *buf, size_t n, size_t hdrlen, struct proxyproto *pp)
{
	unsigned char *more = malloc(n + 16);
	char label[160];
	size_t i;

	for (i = 0; i < hdrlen; i++)
		if (proxyproto_parse(buf, i, pp) != PP_NEED_MORE)
			break;
	snprintf(label, sizeof(label), "%s: every prefix needs more", name);
	is_int(i, hdrlen, label);
	snprintf(label, sizeof(label), "%s: OK", name);
	is_int(proxyproto_parse(buf, n, pp), PP_OK, label);
	snprintf(label, sizeof(label), "%s: header length", name);
	is_int(pp->len, hdrlen, label);
	memcpy(more, buf, n);
	memcpy(more + n, "EHLO x\r\n", 8);
	snprintf(label, sizeof(label), "%s: OK with client bytes after it", name);
	is_int(proxyproto_parse(more, n + 8, pp), PP_OK, label);
	free(more);
}

/* A header that is refused, whole; prefixes may be NEED_MORE or BAD. */
static void
refused(const char *name, const void *buf, size_t n)
{
	struct proxyproto pp;
	char label[160];

	snprintf(label, sizeof(label), "%s: BAD", name);
	is_int(proxyproto_parse(buf, n, &pp), PP_BAD, label);
	if (pp.error)
		diag("%s: %s", name, pp.error);
}

/* A string literal that is refused (its length without the NUL). */
#define REFUSED(name, lit) refused((name), (lit), sizeof(lit) - 1)

/* A v2 header: signature, ver/cmd, family, then len bytes of body. */
static size_t
v2(unsigned char *out, unsigned vercmd, unsigned fam, const void *body, size_t len)
{
	static const unsigned char sig[12] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
	};

	memcpy(out, sig, 12);
	out[12] = (unsigned char)vercmd;
	out[13] = (unsigned char)fam;
	out[14] = (unsigned char)(len >> 8);
	out[15] = (unsigned char)len;
	if (len)
		memcpy(out + 16, body, len);
	return 16 + len;
}

static void
test_v1(void)
{
	struct proxyproto pp;
	const char *h;
	char big[200];

	h = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n";
	good("v1 TCP4", h, strlen(h), strlen(h), &pp);
	is_int(pp.version, 1, "v1 TCP4: version");
	ok(!pp.local, "v1 TCP4: not local");
	is_str(addr_text(&pp.src), "192.0.2.7 56324", "v1 TCP4: source");
	is_str(addr_text(&pp.dst), "198.51.100.1 25", "v1 TCP4: destination");

	h = "PROXY TCP6 2001:db8::7 2001:db8::1 65535 587\r\n";
	good("v1 TCP6", h, strlen(h), strlen(h), &pp);
	is_str(addr_text(&pp.src), "2001:db8::7 65535", "v1 TCP6: source");
	is_str(addr_text(&pp.dst), "2001:db8::1 587", "v1 TCP6: destination");

	h = "PROXY UNKNOWN\r\n";
	good("v1 UNKNOWN", h, strlen(h), strlen(h), &pp);
	ok(pp.local, "v1 UNKNOWN: local");
	h = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
	good("v1 UNKNOWN with junk", h, strlen(h), strlen(h), &pp);
	ok(pp.local, "v1 UNKNOWN with junk: local");

	/* The longest legal line: 107 bytes. */
	h = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	is_int(strlen(h), 104, "v1: the longest address line is 104 bytes");
	good("v1 longest TCP6", h, strlen(h), strlen(h), &pp);

	REFUSED("v1 lowercase", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
	REFUSED("v1 not PROXY", "EHLO x\r\n");
	REFUSED("v1 HTTP", "GET / HTTP/1.0\r\n");
	REFUSED("v1 TCP5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n");
	REFUSED("v1 UDP4", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n");
	REFUSED("v1 v6 address in TCP4", "PROXY TCP4 ::1 ::1 1 2\r\n");
	REFUSED("v1 v4 address in TCP6", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n");
	REFUSED("v1 bad address", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n");
	REFUSED("v1 port too big", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n");
	REFUSED("v1 port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n");
	REFUSED("v1 port not a number", "PROXY TCP4 1.2.3.4 5.6.7.8 x 2\r\n");
	REFUSED("v1 missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n");
	REFUSED("v1 extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n");
	REFUSED("v1 double space", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n");
	REFUSED("v1 trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n");
	REFUSED("v1 bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n");
	REFUSED("v1 bare CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX");
	REFUSED("v1 NUL inside", "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n");
	REFUSED("v1 empty protocol", "PROXY \r\n");

	/* Oversized: no CRLF within 107 bytes. */
	memset(big, 'A', sizeof(big));
	memcpy(big, "PROXY UNKNOWN ", 14);
	is_int(proxyproto_parse(big, 106, &pp), PP_NEED_MORE, "v1: 106 bytes without CRLF need more");
	is_int(proxyproto_parse(big, 107, &pp), PP_BAD, "v1: 107 bytes without CRLF are too long");
	is_int(proxyproto_parse(big, sizeof(big), &pp), PP_BAD, "v1: 200 bytes without CRLF are too long");
	memcpy(big + 105, "\r\n", 2);
	is_int(proxyproto_parse(big, 107, &pp), PP_OK, "v1: CRLF at 106..107 is OK");
	memcpy(big + 105, "AA\r\n", 4);
	is_int(proxyproto_parse(big, 109, &pp), PP_BAD, "v1: CRLF at 108..109 is too long");

	/* Truncated lines only ever need more. */
	h = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 25";
	is_int(proxyproto_parse(h, strlen(h), &pp), PP_NEED_MORE, "v1 truncated: need more");
	is_int(proxyproto_parse("PRO", 3, &pp), PP_NEED_MORE, "v1 prefix PRO: need more");
	is_int(proxyproto_parse("PRX", 3, &pp), PP_BAD, "v1 prefix PRX: bad at once");
	is_int(proxyproto_parse("", 0, &pp), PP_NEED_MORE, "nothing yet: need more");
}

static void
test_v2(void)
{
	unsigned char buf[8192], body[5000];
	struct proxyproto pp;
	size_t n;

	/* PROXY TCP4 192.0.2.7:56324 -> 198.51.100.1:25 */
	static const unsigned char a4[12] = {
		192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0x00, 0x19
	};
	n = v2(buf, 0x21, 0x11, a4, sizeof(a4));
	good("v2 TCP4", buf, n, n, &pp);
	is_int(pp.version, 2, "v2 TCP4: version");
	ok(!pp.local, "v2 TCP4: not local");
	is_str(addr_text(&pp.src), "192.0.2.7 56324", "v2 TCP4: source");
	is_str(addr_text(&pp.dst), "198.51.100.1 25", "v2 TCP4: destination");

	unsigned char a6[36] = { 0 };
	a6[0] = 0x20; a6[1] = 0x01; a6[2] = 0x0d; a6[3] = 0xb8; a6[15] = 7;
	a6[16] = 0x20; a6[17] = 0x01; a6[18] = 0x0d; a6[19] = 0xb8; a6[31] = 1;
	a6[32] = 0xff; a6[33] = 0xff; a6[34] = 0x02; a6[35] = 0x4b;
	n = v2(buf, 0x21, 0x21, a6, sizeof(a6));
	good("v2 TCP6", buf, n, n, &pp);
	is_str(addr_text(&pp.src), "2001:db8::7 65535", "v2 TCP6: source");
	is_str(addr_text(&pp.dst), "2001:db8::1 587", "v2 TCP6: destination");

	/* TLVs after the addresses: ALPN "h2", a NOOP with 3 bytes, an empty one. */
	memcpy(body, a4, 12);
	memcpy(body + 12, "\x01\x00\x02h2\x04\x00\x03xyz\xe0\x00\x00", 14);
	n = v2(buf, 0x21, 0x11, body, 26);
	good("v2 TCP4 with TLVs", buf, n, n, &pp);
	is_str(addr_text(&pp.src), "192.0.2.7 56324", "v2 TLVs: source");
	memcpy(body + 12, "\x01\x00\x03h2", 5);		/* value longer than what is left */
	n = v2(buf, 0x21, 0x11, body, 17);
	refused("v2 TLV overruns", buf, n);
	memcpy(body + 12, "\x01\x00", 2);		/* a TLV header cut short */
	n = v2(buf, 0x21, 0x11, body, 14);
	refused("v2 TLV header cut", buf, n);

	/* LOCAL: the load balancer's own health check; anything after is skipped. */
	n = v2(buf, 0x20, 0x00, NULL, 0);
	good("v2 LOCAL", buf, n, n, &pp);
	ok(pp.local, "v2 LOCAL: local");
	n = v2(buf, 0x20, 0x11, a4, sizeof(a4));
	good("v2 LOCAL with addresses", buf, n, n, &pp);
	ok(pp.local, "v2 LOCAL with addresses: local");
	n = v2(buf, 0x21, 0x00, NULL, 0);
	good("v2 PROXY UNSPEC", buf, n, n, &pp);
	ok(pp.local, "v2 PROXY UNSPEC: local");

	/* Refused families and commands. */
	n = v2(buf, 0x21, 0x12, a4, sizeof(a4));
	refused("v2 UDP4", buf, n);
	n = v2(buf, 0x21, 0x31, body, 216);
	refused("v2 UNIX stream", buf, n);
	n = v2(buf, 0x21, 0x41, a4, sizeof(a4));
	refused("v2 unknown family 0x41", buf, n);
	n = v2(buf, 0x21, 0x13, a4, sizeof(a4));
	refused("v2 unknown transport 0x13", buf, n);
	n = v2(buf, 0x22, 0x11, a4, sizeof(a4));
	refused("v2 command 2", buf, n);
	n = v2(buf, 0x11, 0x11, a4, sizeof(a4));
	refused("v2 version 1 in a v2 header", buf, n);
	n = v2(buf, 0x31, 0x11, a4, sizeof(a4));
	refused("v2 version 3", buf, n);
	n = v2(buf, 0x21, 0x11, a4, 11);
	refused("v2 TCP4 address block too short", buf, n);
	n = v2(buf, 0x21, 0x21, a6, 35);
	refused("v2 TCP6 address block too short", buf, n);

	/* A bad family is refused from the first 16 bytes, before the body. */
	v2(buf, 0x21, 0x41, a4, sizeof(a4));
	is_int(proxyproto_parse(buf, 16, &pp), PP_BAD, "v2 unknown family: bad from the fixed header");

	/* Signatures. */
	n = v2(buf, 0x21, 0x11, a4, sizeof(a4));
	buf[7] = 'q';
	refused("v2 bad signature", buf, n);
	is_int(proxyproto_parse(buf, 7, &pp), PP_NEED_MORE, "v2 bad signature: a good prefix needs more");
	is_int(proxyproto_parse(buf, 8, &pp), PP_BAD, "v2 bad signature: bad at the first wrong byte");
	REFUSED("CRLF alone", "\r\n\r\nQUIT\r\n");

	/* Truncated: header and body. */
	n = v2(buf, 0x21, 0x11, a4, sizeof(a4));
	is_int(proxyproto_parse(buf, 15, &pp), PP_NEED_MORE, "v2 truncated fixed header: need more");
	is_int(proxyproto_parse(buf, n - 1, &pp), PP_NEED_MORE, "v2 truncated body: need more");

	/* Oversized: the length says more than our bound; refused at once. */
	memset(body, 0, sizeof(body));
	memcpy(body, a4, 12);
	body[12] = 0xe0;
	body[13] = (unsigned char)((4096 - 16 - 12 - 3) >> 8);
	body[14] = (unsigned char)(4096 - 16 - 12 - 3);
	n = v2(buf, 0x21, 0x11, body, 4096 - 16);
	is_int(n, PROXYPROTO_V2_MAX, "v2: a header of exactly the bound");
	good("v2 at the bound", buf, n, n, &pp);
	body[14]++;
	n = v2(buf, 0x21, 0x11, body, 4096 - 16 + 1);
	is_int(proxyproto_parse(buf, 16, &pp), PP_BAD, "v2: one byte over the bound: bad from the fixed header");
	buf[14] = 0xff;
	buf[15] = 0xff;
	is_int(proxyproto_parse(buf, 16, &pp), PP_BAD, "v2: length 65535: bad");
}

int
main(void)
{
	test_v1();
	test_v2();
	ok(strcmp(proxyproto_result_name(PP_BAD), "BAD") == 0, "result names");
	return done_testing();
}
