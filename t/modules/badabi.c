/*
 * badabi.c - a filter module built for the next filter ABI, which
 * smtpchain must refuse to load ("built for filter ABI 2, this smtpchain
 * has ABI 1").  Its init() must never run.
 */
#include <stdlib.h>

#include <smtpchain/filter.h>

/* Refused before it can be called; abort() shows it if it ever is. */
static int
badabi_init(const struct sc_host *host, const struct sc_options *o,
    void **instance, char *err, size_t errlen)
{
	(void)host, (void)o, (void)instance, (void)err, (void)errlen;
	abort();
}

const struct sc_filter smtpchain_filter = {
	.abi = SC_FILTER_ABI + 1,
	.size = sizeof(struct sc_filter),
	.name = "badabi",
	.init = badabi_init,
};
