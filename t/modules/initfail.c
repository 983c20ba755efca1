/*
 * initfail.c - a filter module whose init() always fails, with
 * "initfail: this module always fails" or the text of its `message`
 * option, so the tests can check how a failed init() is reported.
 */
#include <stdio.h>

#include <smtpchain/filter.h>

/* Read `message` (so it is not an unknown key), then fail with it. */
static int
initfail_init(const struct sc_host *host, const struct sc_options *o,
    void **instance, char *err, size_t errlen)
{
	const char *message = "initfail: this module always fails";

	(void)instance;
	if (host->opt_string(o, "message", &message) == -1)
		return -1;
	snprintf(err, errlen, "%s", message);
	return -1;
}

/* Never called: init() never succeeds. */
static void
initfail_fini(void *instance)
{
	(void)instance;
}

const struct sc_filter smtpchain_filter = {
	.abi = SC_FILTER_ABI,
	.size = sizeof(struct sc_filter),
	.name = "initfail",
	.init = initfail_init,
	.fini = initfail_fini,
};
