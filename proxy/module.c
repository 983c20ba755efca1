/*
 * module.c - load the filter modules of the config and give them their
 * options (see module.h).
 *
 * SYNOPSIS
 *	modules_load(cfg, filter_host(), &chain, err, sizeof(err));
 *	...
 *	modules_unload(&chain);
 *	config_free(cfg);
 *
 * DESCRIPTION
 *	For each filter {} block, in file order: resolve `module` (a path when
 *	it has a '/', else module_path/NAME.so), dlopen(RTLD_NOW | RTLD_LOCAL),
 *	find SC_FILTER_SYMBOL, check its ABI number and size, run init() with
 *	the block as a struct sc_options, then refuse the keys init() did not
 *	read.  The descriptor is copied after init() (zero-filled past the
 *	size the module declares), so a module may set its `needs` in init().
 *
 *	struct sc_options is the host side of one block: the block, names for
 *	messages, a "read" flag per key, the arrays opt_list() handed out and
 *	the first error.  Modules may keep the strings and arrays they got
 *	from the opt_* functions for as long as they are loaded, so each
 *	options object lives until modules_unload(), and the config (which
 *	owns the block) must outlive the chain.
 *
 *	What the chain needs beyond struct filter_module (the options object
 *	and the descriptor copy of each module) is kept in the same allocation
 *	as chain->v, after the n modules: modules_unload() only works on a
 *	chain that modules_load() filled.
 *
 * DIAGNOSTICS
 *	"FILE:LINE: filter "NAME": ..." with the line of the filter {} block
 *	(or of the option at fault) and NAME the `module` value as written.
 */
#include <ctype.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfgparse.h"
#include "config.h"
#include "log.h"
#include "module.h"

/* The smallest descriptor this host accepts: every field of ABI 1. */
#define DESC_MIN_SIZE	(offsetof(struct sc_filter, close) + sizeof(void *))

/* One filter {} block as init() sees it (opaque to modules). */
struct sc_options {
	const struct cfg_node	*block;		/* the filter {} object */
	const char		*file;		/* config file, for messages */
	const char		*name;		/* the `module` value, for messages */
	size_t			 nkeys;		/* members of block and of the objects in it */
	const struct cfg_node	**nodes;	/* [nkeys]: those members, depth first */
	size_t			*parent;	/* [nkeys]: index of the enclosing object, or SIZE_MAX */
	bool			*read;		/* [nkeys]: read by an opt_* call */
	const char		***lists;	/* [nkeys]: what opt_list() returned */
	char			 error[512];	/* the first error, "" if none */
};

/* What the chain keeps per module besides struct filter_module. */
struct module_extra {
	struct sc_options	*opts;
	struct sc_filter	 desc;		/* the module's descriptor, copied */
};

/* Where the extras of a chain begin: after the n modules, aligned. */
static size_t
extra_offset(size_t n)
{
	size_t off = n * sizeof(struct filter_module);
	size_t align = _Alignof(struct module_extra);

	return (off + align - 1) / align * align;
}

static struct module_extra *
extras_of(const struct filter_chain *chain)
{
	return (struct module_extra *)((char *)chain->v + extra_offset(chain->n));
}

/* Make a message one printable line, whatever the config or a module wrote. */
static void
printable(char *s)
{
	for (; *s != '\0'; s++)
		if (iscntrl((unsigned char)*s))
			*s = '?';
}

/* Write "FILE:LINE: filter "NAME": message" into a buffer. */
static void __attribute__((format(printf, 6, 0)))
vmodule_error(char *buf, size_t len, const char *file, int line, const char *name,
    const char *fmt, va_list ap)
{
	char msg[512];

	if (buf == NULL || len == 0)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	snprintf(buf, len, "%s:%d: filter \"%s\": %s", file, line, name, msg);
	printable(buf);
}

static void __attribute__((format(printf, 6, 7)))
module_error(char *buf, size_t len, const char *file, int line, const char *name,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmodule_error(buf, len, file, line, name, fmt, ap);
	va_end(ap);
}

/* Copy a finished message into the caller's buffer. */
static void
copy_error(char *buf, size_t len, const char *msg)
{
	if (buf != NULL && len > 0)
		snprintf(buf, len, "%s", msg);
}

/* --- options ------------------------------------------------------------ */

/* Count (nodes == NULL) or list the members of obj and of the objects in it. */
static size_t
options_walk(struct sc_options *o, const struct cfg_node *obj, size_t parent, size_t n)
{
	for (const struct cfg_node *c = obj->child; c != NULL; c = c->next) {
		size_t me = n++;

		if (o->nodes != NULL) {
			o->nodes[me] = c;
			o->parent[me] = parent;
		}
		if (c->type == CFG_OBJECT)
			n = options_walk(o, c, me, n);
	}
	return n;
}

/* A new options object for a filter {} block. */
static struct sc_options *
options_new(const struct config *cfg, const struct config_filter *f)
{
	struct sc_options *o = xcalloc(1, sizeof(*o));

	o->block = f->block;
	o->file = cfg->file;
	o->name = f->module;
	o->nkeys = options_walk(o, f->block, SIZE_MAX, 0);
	o->nodes = xcalloc(o->nkeys + 1, sizeof(*o->nodes));
	o->parent = xcalloc(o->nkeys + 1, sizeof(*o->parent));
	options_walk(o, f->block, SIZE_MAX, 0);
	o->read = xcalloc(o->nkeys + 1, sizeof(*o->read));
	o->lists = xcalloc(o->nkeys + 1, sizeof(*o->lists));
	return o;
}

static void
options_free(struct sc_options *o)
{
	if (o == NULL)
		return;
	for (size_t i = 0; i < o->nkeys; i++)
		free(o->lists[i]);
	free(o->lists);
	free(o->read);
	free(o->parent);
	free(o->nodes);
	free(o);
}

/* Whether a top-level key of a filter {} block is ours, not the module's. */
static bool
host_key(const char *key)
{
	return strcmp(key, "module") == 0 || strcmp(key, "name") == 0;
}

/*
 * The member of the block with this key, marked as read; NULL when absent.
 * A dotted key names a member of an object in the block: "timeout.eom" is
 * `timeout { eom = ...; }` (the objects on the way are marked read too, so
 * that only their unread members count as unknown).  `module` is the
 * host's key, never an option.  The object is the host's own (allocated by
 * options_new), so writing through the module's const pointer is allowed.
 */
static const struct cfg_node *
opt_find(const struct sc_options *o, const char *key, size_t *index)
{
	struct sc_options *w = (struct sc_options *)o;
	size_t parent = SIZE_MAX, i;
	const char *seg = key;

	if (o == NULL || key == NULL || host_key(key))
		return NULL;
	for (;;) {
		size_t len = strcspn(seg, ".");

		for (i = 0; i < o->nkeys; i++)
			if (o->parent[i] == parent && strlen(o->nodes[i]->key) == len &&
			    strncmp(o->nodes[i]->key, seg, len) == 0)
				break;
		if (i == o->nkeys)
			return NULL;
		w->read[i] = true;
		if (seg[len] == '\0')
			break;
		if (o->nodes[i]->type != CFG_OBJECT)
			return NULL;
		parent = i;
		seg += len + 1;
	}
	if (index)
		*index = i;
	return o->nodes[i];
}

/* Record the first error: "FILE:LINE: filter "NAME": KEY: message". */
static void __attribute__((format(printf, 4, 0)))
opt_verror(const struct sc_options *o, int line, const char *key, const char *fmt,
    va_list ap)
{
	struct sc_options *w = (struct sc_options *)o;
	char msg[400];

	if (o->error[0] != '\0')
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (key != NULL)
		module_error(w->error, sizeof(w->error), o->file, line, o->name,
		    "%s: %s", key, msg);
	else
		module_error(w->error, sizeof(w->error), o->file, line, o->name,
		    "%s", msg);
}

static void __attribute__((format(printf, 4, 5)))
opt_record(const struct sc_options *o, int line, const char *key, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	opt_verror(o, line, key, fmt, ap);
	va_end(ap);
}

/* host->opt_string: 0 and *out, 1 absent, -1 not a string (error recorded). */
int
module_opt_string(const struct sc_options *o, const char *key, const char **out)
{
	const struct cfg_node *c;

	if ((c = opt_find(o, key, NULL)) == NULL)
		return 1;
	if (c->type != CFG_STRING) {
		opt_record(o, c->line, key, "expected a string");
		return -1;
	}
	*out = c->str;
	return 0;
}

/* host->opt_int: numbers only (suffixes applied by the parser). */
int
module_opt_int(const struct sc_options *o, const char *key, long long *out)
{
	const struct cfg_node *c;

	if ((c = opt_find(o, key, NULL)) == NULL)
		return 1;
	if (c->type != CFG_INT) {
		opt_record(o, c->line, key, "expected a number");
		return -1;
	}
	*out = (long long)c->num;
	return 0;
}

/* host->opt_bool: true/false/yes/no/on/off, as 1 or 0. */
int
module_opt_bool(const struct sc_options *o, const char *key, int *out)
{
	const struct cfg_node *c;

	if ((c = opt_find(o, key, NULL)) == NULL)
		return 1;
	if (c->type != CFG_BOOL) {
		opt_record(o, c->line, key, "expected a boolean");
		return -1;
	}
	*out = c->boolean ? 1 : 0;
	return 0;
}

/*
 * host->opt_list: a string (a list of one) or an array of strings.  The
 * array (NULL-terminated, never NULL itself) is kept in the options object
 * and stays valid until modules_unload().
 */
int
module_opt_list(const struct sc_options *o, const char *key,
    const char *const **out, size_t *n)
{
	const struct cfg_node *c, *e;
	const char **v;
	size_t i, count = 0;

	if ((c = opt_find(o, key, &i)) == NULL)
		return 1;
	if (o->lists[i] == NULL) {
		if (c->type == CFG_STRING) {
			count = 1;
		} else if (c->type == CFG_ARRAY) {
			for (e = c->child; e != NULL; e = e->next) {
				if (e->type != CFG_STRING) {
					opt_record(o, e->line, key, "expected a string");
					return -1;
				}
				count++;
			}
		} else {
			opt_record(o, c->line, key, "expected a string or an array of strings");
			return -1;
		}
		v = xcalloc(count + 1, sizeof(*v));
		if (c->type == CFG_STRING)
			v[0] = c->str;
		else
			for (e = c->child, count = 0; e != NULL; e = e->next)
				v[count++] = e->str;
		o->lists[i] = v;
	}
	for (count = 0; o->lists[i][count] != NULL; count++)
		continue;
	*out = o->lists[i];
	*n = count;
	return 0;
}

/*
 * host->opt_error: the module found a bad value.  The line is the key's,
 * or the block's when the key is absent (or NULL).  Returns -1.
 */
int
module_opt_error(const struct sc_options *o, const char *key, const char *fmt, ...)
{
	const struct cfg_node *c = opt_find(o, key, NULL);
	va_list ap;

	if (o == NULL)
		return -1;
	va_start(ap, fmt);
	opt_verror(o, c ? c->line : o->block->line, key, fmt, ap);
	va_end(ap);
	return -1;
}

/* --- loading ------------------------------------------------------------ */

/* What dlopen() takes for a `module` value: a path, or module_path/NAME.so. */
static char *
module_resolve(const struct config *cfg, const char *module)
{
	char *path;
	size_t len;

	if (strchr(module, '/') != NULL)
		return xstrdup(module);
	len = strlen(cfg->module_path) + strlen(module) + sizeof("/.so");
	path = xmalloc(len);
	snprintf(path, len, "%s/%s.so", cfg->module_path, module);
	return path;
}

/* dlerror()'s text without a leading "PATH: ", which our message already has. */
static const char *
dl_reason(const char *path)
{
	const char *e = dlerror();
	size_t len = strlen(path);

	if (e == NULL)
		return "unknown error";
	if (strncmp(e, path, len) == 0 && strncmp(e + len, ": ", 2) == 0)
		return e + len + 2;
	return e;
}

/*
 * The first key of the block (or of an object in it) but `module` and `name` that no
 * opt_* call read, or NULL; its dotted name ("timeout.bogus") into path.
 */
static const struct cfg_node *
unread_key(const struct sc_options *o, char *path, size_t pathlen)
{
	for (size_t i = 0; i < o->nkeys; i++) {
		if (o->read[i] || (o->parent[i] == SIZE_MAX && host_key(o->nodes[i]->key)))
			continue;
		snprintf(path, pathlen, "%s", o->nodes[i]->key);
		for (size_t p = o->parent[i]; p != SIZE_MAX; p = o->parent[p]) {
			size_t klen = strlen(o->nodes[p]->key), plen = strlen(path);

			if (klen + 1 + plen + 1 > pathlen)
				break;
			memmove(path + klen + 1, path, plen + 1);
			memcpy(path, o->nodes[p]->key, klen);
			path[klen] = '.';
		}
		return o->nodes[i];
	}
	return NULL;
}

/* Whether a module looks at the message (holds it until the chain is done). */
static bool
has_message_hook(const struct sc_filter *d)
{
	return d->header != NULL || d->eoh != NULL || d->body != NULL || d->eom != NULL;
}

/*
 * Load one filter {} into m and x.  Returns 0, or -1 with the message in
 * err and nothing of it left loaded.
 */
static int
module_load_one(const struct config *cfg, const struct config_filter *f,
    const struct sc_host *host, struct filter_module *m, struct module_extra *x,
    char *err, size_t errlen)
{
	const struct sc_filter *live;
	const struct cfg_node *unknown;
	char unknown_path[256];
	struct sc_options *o = NULL;
	char initerr[512];
	size_t size;
	void *dl, *instance = NULL;
	char *path;
	int rc;

	path = module_resolve(cfg, f->module);
	if ((dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		module_error(err, errlen, cfg->file, f->line, f->module,
		    "cannot load %s: %s", path, dl_reason(path));
		goto fail;
	}
	dlerror();
	if ((live = dlsym(dl, SC_FILTER_SYMBOL)) == NULL) {
		module_error(err, errlen, cfg->file, f->line, f->module,
		    "%s does not export %s (not a smtpchain filter module?)",
		    path, SC_FILTER_SYMBOL);
		goto fail;
	}
	if (live->abi != SC_FILTER_ABI) {
		module_error(err, errlen, cfg->file, f->line, f->module,
		    "built for filter ABI %u, this smtpchain has ABI %d (rebuild the module)",
		    (unsigned)live->abi, SC_FILTER_ABI);
		goto fail;
	}
	if (live->size < DESC_MIN_SIZE) {
		module_error(err, errlen, cfg->file, f->line, f->module,
		    "descriptor too small (%u bytes, at least %zu expected)",
		    (unsigned)live->size, DESC_MIN_SIZE);
		goto fail;
	}

	o = options_new(cfg, f);
	initerr[0] = '\0';
	rc = live->init ? live->init(host, o, &instance, initerr, sizeof(initerr)) : 0;
	if (rc != 0) {
		initerr[sizeof(initerr) - 1] = '\0';
		if (o->error[0] != '\0')
			copy_error(err, errlen, o->error);
		else
			module_error(err, errlen, cfg->file, f->line, f->module, "%s",
			    initerr[0] ? initerr : "init failed");
		goto fail;
	}
	/* A wrong type the module chose to ignore is still an error. */
	unknown = unread_key(o, unknown_path, sizeof(unknown_path));
	if (o->error[0] != '\0' || unknown != NULL) {
		if (o->error[0] != '\0')
			copy_error(err, errlen, o->error);
		else
			module_error(err, errlen, cfg->file, unknown->line, f->module,
			    "unknown key \"%s\"", unknown_path);
		if (live->fini)
			live->fini(instance);
		goto fail;
	}

	/* Read after init(): a module may set needs from its options. */
	size = live->size < sizeof(x->desc) ? live->size : sizeof(x->desc);
	memset(&x->desc, 0, sizeof(x->desc));
	memcpy(&x->desc, live, size);
	x->opts = o;
	m->name = NULL;		/* chain_names() gives every module its name */
	m->path = path;
	m->line = f->line;
	m->dl = dl;
	m->desc = &x->desc;
	m->instance = instance;
	m->needs = x->desc.needs;
	if (m->needs == 0 && has_message_hook(&x->desc))
		m->needs = SC_NEED_HEADERS | SC_NEED_BODY;
	return 0;

fail:
	options_free(o);
	if (dl != NULL)
		dlclose(dl);
	free(path);
	return -1;
}

/*
 * fini() and dlclose() the first n modules of v, last first, and free v
 * (which holds the extras x too).
 */
static void
unload(struct filter_module *v, struct module_extra *x, size_t n)
{
	for (size_t i = n; i-- > 0; ) {
		if (x[i].desc.fini)
			x[i].desc.fini(v[i].instance);
		dlclose(v[i].dl);
		options_free(x[i].opts);
		free(v[i].name);
		free(v[i].path);
	}
	free(v);
}

/* Whether one of the first n modules of v is called name. */
static bool
name_taken(const struct filter_module *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].name != NULL && strcmp(v[i].name, name) == 0)
			return true;
	return false;
}

/*
 * Name the n modules of v: a block's "name" if it has one (config.c made
 * those unique), else the module's own name (sc_filter.name, or `module`
 * as written), and when that is taken, by a named block or an earlier
 * one, NAME#2, NAME#3, ...: two regex blocks without a name are "regex"
 * and "regex#2".
 */
static void
chain_names(const struct config *cfg, struct filter_module *v, struct module_extra *x,
    size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (cfg->filters[i].name != NULL)
			v[i].name = xstrdup(cfg->filters[i].name);
	for (size_t i = 0; i < n; i++) {
		const char *base = x[i].desc.name && x[i].desc.name[0] ?
		    x[i].desc.name : cfg->filters[i].module;
		char buf[256];

		if (v[i].name != NULL)
			continue;
		snprintf(buf, sizeof(buf), "%s", base);
		for (size_t k = 2; name_taken(v, n, buf); k++)
			snprintf(buf, sizeof(buf), "%s#%zu", base, k);
		v[i].name = xstrdup(buf);
	}
}

/* Load and init every filter {} of cfg; see module.h. */
int
modules_load(const struct config *cfg, const struct sc_host *host,
    struct filter_chain *chain, char *err, size_t errlen)
{
	size_t n = cfg->nfilters;
	struct module_extra *x;

	memset(chain, 0, sizeof(*chain));
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (n == 0)
		return 0;
	chain->v = xcalloc(1, extra_offset(n) + n * sizeof(struct module_extra));
	x = (struct module_extra *)((char *)chain->v + extra_offset(n));
	for (size_t i = 0; i < n; i++) {
		struct filter_module *m = &chain->v[i];

		if (module_load_one(cfg, &cfg->filters[i], host, m, &x[i], err, errlen) == -1) {
			unload(chain->v, x, i);
			memset(chain, 0, sizeof(*chain));
			return -1;
		}
		chain->needs |= m->needs;
		if (has_message_hook(m->desc) ||
		    (m->desc->needs & (SC_NEED_HEADERS | SC_NEED_BODY)))
			chain->holds_message = true;
	}
	chain_names(cfg, chain->v, x, n);
	chain->n = n;
	return 0;
}

/* fini() every instance (last first), dlclose, free; see module.h. */
void
modules_unload(struct filter_chain *chain)
{
	if (chain == NULL)
		return;
	if (chain->v != NULL)
		unload(chain->v, extras_of(chain), chain->n);
	memset(chain, 0, sizeof(*chain));
}
