/*
 * fuzz_proxyproto.c - libFuzzer harness for proxyproto.c: any bytes as the
 * start of a connection on a proxy_protocol listener.
 *
 * Invariants, abort() when broken: OK means a header length within the
 * bounds and no longer than the input, an address family of AF_INET or
 * AF_INET6 unless local; every shorter prefix of an OK header is NEED_MORE
 * (the daemon parses again as bytes arrive, so it must never decide early);
 * the same header followed by other bytes parses the same; BAD comes with
 * a reason; NEED_MORE never happens past the bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One input: the first bytes of a connection. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxyproto pp, again;
	enum proxyproto_result r;

	memset(&pp, 0, sizeof(pp));
	r = proxyproto_parse(data, size, &pp);
	switch (r) {
	case PP_NEED_MORE:
		if (size >= PROXYPROTO_MAX)
			abort();
		break;
	case PP_BAD:
		if (pp.error == NULL)
			abort();
		break;
	case PP_OK:
		if (pp.len == 0 || pp.len > size || pp.len > PROXYPROTO_MAX)
			abort();
		if (pp.version == 1 && pp.len > PROXYPROTO_V1_MAX)
			abort();
		if (!pp.local && ((pp.src.ss_family != AF_INET && pp.src.ss_family != AF_INET6) ||
		    pp.src.ss_family != pp.dst.ss_family))
			abort();
		for (size_t i = 0; i < pp.len; i++)
			if (proxyproto_parse(data, i, &again) != PP_NEED_MORE)
				abort();
		memset(&again, 0, sizeof(again));
		if (proxyproto_parse(data, pp.len, &again) != PP_OK || again.len != pp.len ||
		    again.local != pp.local || memcmp(&again.src, &pp.src, sizeof(pp.src)) != 0)
			abort();
		break;
	default:
		abort();
	}
	return 0;
}
