/*
 * module.h - loading filter modules (.so) and handing them their options.
 *
 * One struct filter_module per filter {} block, in file order.  Loading is
 * dlopen(RTLD_NOW | RTLD_LOCAL) of the block's `module`: a name looked up
 * as MODULE_PATH/NAME.so, or a path when it contains a '/'.  The exported
 * SC_FILTER_SYMBOL must have abi == SC_FILTER_ABI and a plausible size, or
 * the module is refused ('FILE:LINE: filter "NAME": built for filter ABI N,
 * this smtpchain has ABI M (rebuild the module)').  Then init() runs with the block's options
 * (every key but `module` and `name`); a key the module did not read is an error.
 * `smtpchain -t` does all of this too, so a bad option fails the check.
 */
#ifndef SMTPCHAIN_MODULE_H
#define SMTPCHAIN_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "smtpchain/filter.h"

struct filter_module {
	char			*name;		/* the block's "name", else the module's own
						   (sc_filter.name), NAME#2... when taken */
	char			*path;		/* what was dlopen()ed */
	int			 line;		/* of the filter {} block */
	void			*dl;
	const struct sc_filter	*desc;
	void			*instance;	/* from init() */
	uint32_t		 needs;		/* desc->needs, plus NEEDS for eom-only modules */
};

struct filter_chain {
	struct filter_module	*v;
	size_t			 n;
	uint32_t		 needs;		/* union of the modules' needs */
	bool			 holds_message;	/* some module has a header/eoh/body/eom hook */
};

/*
 * Load and init every filter {} of cfg in order, with host as the table
 * given to init() (its opt_* members must be the module_opt_* functions
 * below).  0 with *chain filled, or -1 with "FILE:LINE: ..." in err and
 * nothing left loaded.
 */
int	modules_load(const struct config *cfg, const struct sc_host *host,
	    struct filter_chain *chain, char *err, size_t errlen);
/* fini() every instance, dlclose, free. */
void	modules_unload(struct filter_chain *chain);

/* The option accessors of struct sc_host (see smtpchain/filter.h). */
int	module_opt_string(const struct sc_options *o, const char *key, const char **out);
int	module_opt_int(const struct sc_options *o, const char *key, long long *out);
int	module_opt_bool(const struct sc_options *o, const char *key, int *out);
int	module_opt_list(const struct sc_options *o, const char *key,
	    const char *const **out, size_t *n);
int	module_opt_error(const struct sc_options *o, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
