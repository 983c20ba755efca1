/*
 * conf.h - a milter filter {} block's options, checked (conf.c).
 */
#ifndef SMTPCHAIN_MILTER_CONF_H
#define SMTPCHAIN_MILTER_CONF_H

#include <stdint.h>

#include <smtpchain/filter.h>

#include "../common/channel.h"
#include "codec.h"
#include "link.h"

/* What happens when the milter is gone. */
enum fail_action {
	ACT_TEMPFAIL = 0,
	ACT_ACCEPT,
	ACT_REJECT,
	ACT_QUARANTINE,
	ACT_SHUTDOWN,
	ACT_DEFAULT,		/* fail(): the configured one */
};

/* Their names in default_action and in the log (ACT_DEFAULT has none). */
extern const char *const fail_action_names[ACT_DEFAULT];

/* One filter {} block (and its idle connections, which are this process's). */
struct milter_conf {
	const char	*socket;	/* as configured, for logs */
	struct channel_addr addr;
	enum fail_action default_action;
	uint64_t	 timeout_connect, timeout_command, timeout_content, timeout_eom; /* ms */
	struct namelist	 macros[MC_NSTAGES];
	struct channel_pool pool;	/* idle after SMFIC_QUIT_NC, at most idle_connections */
};

/* The block's options, or -1 with the reason in err or through host->opt_error(). */
int	milter_conf_new(const struct sc_host *h, const struct sc_options *o,
	    struct milter_conf **out, char *err, size_t errlen);
/* With its idle connections (their memory only: the loop has run to its end). */
void	milter_conf_free(struct milter_conf *conf);

#endif
