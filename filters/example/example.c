/*
 * example.c - a smtpchain filter module to start from: refuses recipients
 * in one domain and stamps each message it lets through with a header.
 *
 *	filter {
 *		module = "/usr/local/lib/smtpchain/example.so";
 *		domain = "example.invalid";	# required
 *		header = "X-Example: checked";	# optional, this is the default
 *	}
 *
 * Build it against an installed smtpchain: see README and Makefile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <smtpchain/filter.h>

static const struct sc_host *host;	/* the daemon's services */

/* One filter {} block: what init() read (option strings stay valid). */
struct example {
	const char	*domain;
	const char	*header;
};

/* Read the options; a bad value is reported by host->opt_error (FILE:LINE). */
static int
ex_init(const struct sc_host *h, const struct sc_options *o, void **instance,
    char *err, size_t errlen)
{
	struct example *ex;
	int rc;

	host = h;
	if ((ex = calloc(1, sizeof(*ex))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* Each opt_* returns 0 (found), 1 (absent) or -1 (wrong type, reported). */
	if ((rc = h->opt_string(o, "domain", &ex->domain)) != 0) {
		if (rc == 1)
			snprintf(err, errlen, "domain: required");
		goto fail;
	}
	if ((rc = h->opt_string(o, "header", &ex->header)) == 1)
		ex->header = "X-Example: checked";
	else if (rc == -1)
		goto fail;
	if (strchr(ex->header, ':') == NULL) {
		h->opt_error(o, "header", "expected \"Name: value\", got \"%s\"", ex->header);
		goto fail;
	}
	*instance = ex;		/* host->instance(c) gives it back in every hook */
	return 0;
fail:
	free(ex);
	return -1;
}

static void
ex_fini(void *instance)
{
	free(instance);
}

/* Per recipient: a refusal refuses this recipient only. */
static enum sc_verdict
ex_rcpt(struct sc_ctx *c, const char *addr, const char *params)
{
	const struct example *ex = host->instance(c);
	const char *at = strrchr(addr, '@');
	const char *client = host->get(c, "client_addr");	/* NULL when unknown */

	(void)params;		/* the ESMTP parameters, e.g. "NOTIFY=NEVER" */
	if (at == NULL || strcasecmp(at + 1, ex->domain) != 0)
		return SC_CONTINUE;
	host->log(c, SC_LOG_INFO, "refused <%s> from %s", addr, client ? client : "?");
	host->set_reply(c, 550, "5.7.1", "Recipients in this domain are not accepted here");
	return SC_REJECT;
}

/* End of message: the only place where the message may be changed. */
static enum sc_verdict
ex_eom(struct sc_ctx *c)
{
	const struct example *ex = host->instance(c);
	const char *colon = strchr(ex->header, ':');
	char name[128];

	snprintf(name, sizeof(name), "%.*s", (int)(colon - ex->header), ex->header);
	if (host->add_header(c, name, colon + 1) != 0)	/* value keeps its leading space */
		host->log(c, SC_LOG_WARNING, "could not add %s", name);
	return SC_CONTINUE;
}

/* The one symbol smtpchain looks for.  NULL hooks: not interested. */
const struct sc_filter smtpchain_filter = {
	.abi = SC_FILTER_ABI,
	.size = sizeof(struct sc_filter),
	.name = "example",
	.needs = SC_NEED_HEADERS,	/* we change headers at eom */
	.init = ex_init,
	.fini = ex_fini,
	.rcpt = ex_rcpt,
	.eom = ex_eom,
};
