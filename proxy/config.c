/*
 * config.c - load smtpchain.conf into a struct config (see config.h).
 *
 * SYNOPSIS
 *	cfg = config_load(path, err, sizeof(err));
 *	config_free(cfg);
 *	config_parse_addr("[::1]:10025", &addr);
 *
 * DESCRIPTION
 *	cfgparse.c turns the text into a tree; this file walks the tree
 *	against a schema.  The schema is a set of static tables, one per
 *	block, in the nginx manner: each row names a key, the function that
 *	checks and stores its value, where the value goes in struct config,
 *	and the allowed range.  A block row points to the table of its keys.
 *	Adding a key means adding one row (and a field in config.h); the row's
 *	last column is the key's default, written as in smtpchain.conf.
 *
 *	Rules: unknown keys are errors at every level; each key has exactly one
 *	type; a key may appear once per block unless its row says KEY_REPEAT
 *	(filter {}); required keys must be present.  Defaults are stored before
 *	the walk by the rows' own setters, so an absent key keeps its default.
 *	Two defaults depend on the machine and are filled in after the walk:
 *	hostname (gethostname()) and workers (the online CPUs).
 *
 *	A filter {} block is the exception to "unknown keys are errors": only
 *	its "module" and "name" keys are checked here; the others belong to the module and
 *	are checked when it is loaded (module.c).  So the parse tree is kept
 *	in the config (cfg->tree) for the blocks to point into.
 *
 * DIAGNOSTICS
 *	The first error, as "FILE:LINE: message", in the caller's buffer.  A
 *	missing required key has no line: "FILE: message".
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cfgparse.h"
#include "config.h"
#include "config-paths.h"	/* MODULE_PATH: the install's pkglibdir */
#include "ehlo.h"
#include "log.h"


#define CONFIG_MAX_KEYS		32	/* rows in one block table */
#define EHLO_LINE_MAX		500	/* an ehlo.add entry, without "250-" and CRLF */
#define TIMEOUT_MAX		86400	/* seconds */

/* What config_load is doing: the config being filled and where errors go. */
struct config_ctx {
	struct config	*cfg;
	const char	*file;
	char		*err;
	size_t		 errlen;
};

struct config_key;

/*
 * Check one value and store it; path is "block.key" for messages.  Returns
 * 0, or -1 after config_error().
 */
typedef int (*config_setter)(struct config_ctx *, const struct config_key *,
    const struct cfg_node *, const char *path);

/* One row of a schema table. */
struct config_key {
	const char		*name;
	config_setter		 set;
	size_t			 offset;	/* of the field in struct config */
	int64_t			 min, max;	/* numbers: the allowed range */
	const struct config_key	*block;		/* set_block: the keys inside */
	int			 flags;
#define KEY_REPEAT	0x01	/* may appear more than once */
#define KEY_REQUIRED	0x02	/* must appear */
	const char		*def;		/* the default as written in the file: a
						   number, true, false or a string; NULL =
						   none (the field stays zero or NULL) */
};

/* Write "FILE:LINE: message" into the error buffer. */
static void __attribute__((format(printf, 3, 4)))
config_error(struct config_ctx *ctx, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (ctx->err == NULL || ctx->errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* One printable line, whatever the config file contained. */
	for (char *q = msg; *q != '\0'; q++)
		if (iscntrl((unsigned char)*q))
			*q = '?';
	if (line > 0)
		snprintf(ctx->err, ctx->errlen, "%s:%d: %s", ctx->file, line, msg);
	else
		snprintf(ctx->err, ctx->errlen, "%s: %s", ctx->file, msg);
}

/* The field a row stores into. */
static void *
config_field(struct config_ctx *ctx, const struct config_key *key)
{
	return (char *)ctx->cfg + key->offset;
}

/* "a string", "an object": a type name with its article. */
static const char *
config_a_type(enum cfg_type type)
{
	switch (type) {
	case CFG_OBJECT:
		return "an object";
	case CFG_ARRAY:
		return "an array";
	case CFG_STRING:
		return "a string";
	case CFG_INT:
		return "a number";
	case CFG_BOOL:
		return "a boolean";
	}
	return "a value";
}

/* Check that a value has a type; error "path: expected X, got Y" if not. */
static int
config_expect(struct config_ctx *ctx, const struct cfg_node *node,
    enum cfg_type type, const char *path)
{
	if (node->type == type)
		return 0;
	config_error(ctx, node->line, "%s: expected %s, got %s", path,
	    config_a_type(type), cfg_type_name(node->type));
	return -1;
}

/* A number within the row's range. */
static int
config_number(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path, int64_t *out)
{
	if (config_expect(ctx, node, CFG_INT, path) == -1)
		return -1;
	if (node->num < key->min || node->num > key->max) {
		config_error(ctx, node->line, "%s: %" PRId64 " is out of range (%"
		    PRId64 "..%" PRId64 ")", path, node->num, key->min, key->max);
		return -1;
	}
	*out = node->num;
	return 0;
}

/* An unsigned int field (counts, seconds). */
static int
set_uint(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	int64_t v;

	if (config_number(ctx, key, node, path, &v) == -1)
		return -1;
	*(unsigned *)config_field(ctx, key) = (unsigned)v;
	return 0;
}

/* A uint64_t field (sizes in bytes). */
static int
set_u64(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	int64_t v;

	if (config_number(ctx, key, node, path, &v) == -1)
		return -1;
	*(uint64_t *)config_field(ctx, key) = (uint64_t)v;
	return 0;
}

/* A bool field. */
static int
set_bool(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	if (config_expect(ctx, node, CFG_BOOL, path) == -1)
		return -1;
	*(bool *)config_field(ctx, key) = node->boolean;
	return 0;
}

/* log.level: error, warning, info or debug. */
static int
set_level(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	if (config_expect(ctx, node, CFG_STRING, path) == -1)
		return -1;
	if (log_level_parse(node->str, (enum log_level *)config_field(ctx, key)) == -1) {
		config_error(ctx, node->line, "%s: unknown level \"%s\" "
		    "(expected error, warning, info or debug)", path, node->str);
		return -1;
	}
	return 0;
}

static int set_string(struct config_ctx *, const struct config_key *,
    const struct cfg_node *, const char *);

/* hostname: a domain name (letters, digits, '-', '.', '_'), or an address literal. */
static int
set_hostname(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	const char *s;
	size_t len;
	bool good;

	if (config_expect(ctx, node, CFG_STRING, path) == -1)
		return -1;
	s = node->str;
	len = strlen(s);
	good = len > 0 && len <= 255;
	if (good && s[0] == '[') {
		/* An address literal: [192.0.2.1] or [IPv6:2001:db8::1]. */
		good = len > 2 && s[len - 1] == ']';
		for (size_t i = 1; good && i < len - 1; i++)
			good = isalnum((unsigned char)s[i]) || strchr(".:-", s[i]);
	} else {
		for (size_t i = 0; good && i < len; i++)
			good = isalnum((unsigned char)s[i]) || strchr(".-_", s[i]);
	}
	if (!good) {
		config_error(ctx, node->line, "%s: bad hostname \"%s\"", path, s);
		return -1;
	}
	return set_string(ctx, key, node, path);
}

/* Parse one address string into addr, with the error message on failure. */
static int
config_addr(struct config_ctx *ctx, const struct cfg_node *node,
    const char *path, struct config_addr *addr)
{
	if (config_expect(ctx, node, CFG_STRING, path) == -1)
		return -1;
	if (config_parse_addr(node->str, addr) == -1) {
		config_error(ctx, node->line, "%s: bad address \"%s\" "
		    "(expected HOST:PORT or [IPV6]:PORT)", path, node->str);
		return -1;
	}
	addr->line = node->line;
	return 0;
}

static int config_strings(struct config_ctx *, const struct cfg_node *, const char *,
    bool, const struct cfg_node **, size_t *);
static bool config_addr_same(const struct config_addr *, const struct config_addr *);

/* backend: one address or a list of them (tried in order), no repeats. */
static int
set_backends(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	struct config *cfg = ctx->cfg;
	const struct cfg_node *c, *first;
	size_t n;

	(void)key;
	if (config_strings(ctx, node, path, true, &first, &n) == -1)
		return -1;
	if (n > CONFIG_MAX_BACKENDS) {
		config_error(ctx, node->line, "%s: at most %d backends", path, CONFIG_MAX_BACKENDS);
		return -1;
	}
	cfg->backends = xcalloc(n, sizeof(*cfg->backends));
	for (c = first; c != NULL && cfg->nbackends < n; c = c->next) {
		struct config_addr *addr = &cfg->backends[cfg->nbackends];

		if (config_addr(ctx, c, path, addr) == -1)
			return -1;
		for (size_t i = 0; i < cfg->nbackends; i++)
			if (config_addr_same(&cfg->backends[i], addr)) {
				config_error(ctx, c->line, "%s: \"%s\" is already listed at line %d",
				    path, addr->text, cfg->backends[i].line);
				return -1;
			}
		cfg->nbackends++;
	}
	cfg->backend = cfg->backends[0];
	return 0;
}

/* backend_balance: "failover" or "round-robin". */
static int
set_balance(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	if (config_expect(ctx, node, CFG_STRING, path) == -1)
		return -1;
	if (strcmp(node->str, "failover") == 0)
		*(enum backend_balance *)config_field(ctx, key) = BALANCE_FAILOVER;
	else if (strcmp(node->str, "round-robin") == 0)
		*(enum backend_balance *)config_field(ctx, key) = BALANCE_ROUND_ROBIN;
	else {
		config_error(ctx, node->line, "%s: expected \"failover\" or \"round-robin\", "
		    "got \"%s\"", path, node->str);
		return -1;
	}
	return 0;
}

/* One address (metrics.listen). */
static int
set_addr(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	return config_addr(ctx, node, path, config_field(ctx, key));
}

/*
 * For keys taking a string or an array of strings: the first string node
 * (NULL for []) and how many there are.  Error if the type is wrong, or if
 * the list is empty and must not be.
 */
static int
config_strings(struct config_ctx *ctx, const struct cfg_node *node,
    const char *path, bool nonempty, const struct cfg_node **first, size_t *n)
{
	const struct cfg_node *c;

	if (node->type == CFG_STRING) {
		*first = node;
		*n = 1;
		return 0;
	}
	if (node->type != CFG_ARRAY) {
		config_error(ctx, node->line, "%s: expected a string or an array "
		    "of strings, got %s", path, cfg_type_name(node->type));
		return -1;
	}
	if (node->child == NULL && nonempty) {
		config_error(ctx, node->line, "%s: expected at least one entry", path);
		return -1;
	}
	*n = 0;
	for (c = node->child; c != NULL; c = c->next) {
		if (config_expect(ctx, c, CFG_STRING, path) == -1)
			return -1;
		(*n)++;
	}
	*first = node->child;
	return 0;
}

/* Whether two addresses are the same (family, address and port). */
static bool
config_addr_same(const struct config_addr *a, const struct config_addr *b)
{
	return a->sslen == b->sslen && memcmp(&a->ss, &b->ss, a->sslen) == 0;
}

/*
 * One listen entry: "ADDR", or { address = "ADDR"; tls = "implicit" | "starttls";
 * proxy_protocol = BOOL; } (starttls, the default, means STARTTLS is offered
 * when tls {} is there; proxy_protocol, default false, means every connection
 * starts with a PROXY protocol header from a load balancer).
 */
static int
listen_entry(struct config_ctx *ctx, const struct cfg_node *c, const char *path,
    struct config_addr *addr)
{
	const struct cfg_node *k, *a = NULL;

	if (c->type != CFG_OBJECT)
		return config_addr(ctx, c, path, addr);
	for (k = c->child; k != NULL; k = k->next) {
		if (strcmp(k->key, "address") == 0 && a == NULL) {
			a = k;
		} else if (strcmp(k->key, "tls") == 0) {
			if (config_expect(ctx, k, CFG_STRING, path) == -1)
				return -1;
			if (strcmp(k->str, "implicit") != 0 && strcmp(k->str, "starttls") != 0) {
				config_error(ctx, k->line, "%s.tls: expected \"implicit\" or "
				    "\"starttls\", got \"%s\"", path, k->str);
				return -1;
			}
			addr->implicit_tls = strcmp(k->str, "implicit") == 0;
		} else if (strcmp(k->key, "proxy_protocol") == 0) {
			if (config_expect(ctx, k, CFG_BOOL, path) == -1)
				return -1;
			addr->proxy_protocol = k->boolean;
		} else {
			config_error(ctx, k->line, "unknown key \"%s\" in %s {}", k->key, path);
			return -1;
		}
	}
	if (a == NULL) {
		config_error(ctx, c->line, "%s: missing key \"address\"", path);
		return -1;
	}
	bool implicit = addr->implicit_tls, proxied = addr->proxy_protocol;
	if (config_addr(ctx, a, path, addr) == -1)
		return -1;
	addr->implicit_tls = implicit;
	addr->proxy_protocol = proxied;
	return 0;
}

/* listen: one entry or a list of them, no repeats. */
static int
set_listen(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	struct config *cfg = ctx->cfg;
	const struct cfg_node *c, *first;
	size_t n = 0;

	(void)key;
	if (node->type != CFG_ARRAY && node->type != CFG_STRING && node->type != CFG_OBJECT) {
		config_error(ctx, node->line, "%s: expected a string, an object or an array "
		    "of them, got %s", path, cfg_type_name(node->type));
		return -1;
	}
	if (node->type == CFG_ARRAY) {
		first = node->child;
		for (c = first; c != NULL; c = c->next)
			n++;
		if (n == 0) {
			config_error(ctx, node->line, "%s: expected at least one entry", path);
			return -1;
		}
	} else {
		first = node;
		n = 1;
	}
	cfg->listen = xcalloc(n, sizeof(*cfg->listen));
	for (c = first; c != NULL && cfg->nlisten < n; c = node->type == CFG_ARRAY ? c->next : NULL) {
		struct config_addr *addr = &cfg->listen[cfg->nlisten];

		if (listen_entry(ctx, c, path, addr) == -1)
			return -1;
		for (size_t i = 0; i < cfg->nlisten; i++)
			if (config_addr_same(&cfg->listen[i], addr)) {
				config_error(ctx, c->line, "%s: \"%s\" is already "
				    "listed at line %d", path, addr->text, cfg->listen[i].line);
				return -1;
			}
		cfg->nlisten++;
	}
	return 0;
}

/* A string value as it is. */
static int
set_string(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	if (config_expect(ctx, node, CFG_STRING, path) == -1)
		return -1;
	free(*(char **)config_field(ctx, key));
	*(char **)config_field(ctx, key) = xstrdup(node->str);
	return 0;
}

/*
 * "user": an account that exists now (looked up at load, so -t and a
 * reload see what the system has): its uid, and its login group unless
 * "group" says otherwise.
 */
static int
set_user(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	struct passwd *pw;

	if (config_expect(ctx, node, CFG_STRING, path) == -1)
		return -1;
	errno = 0;
	if ((pw = getpwnam(node->str)) == NULL) {
		config_error(ctx, node->line, "%s: no such user \"%s\"%s%s", path, node->str,
		    errno ? ": " : "", errno ? strerror(errno) : "");
		return -1;
	}
	ctx->cfg->priv.uid = pw->pw_uid;
	if (ctx->cfg->priv.group == NULL)
		ctx->cfg->priv.gid = pw->pw_gid;
	ctx->cfg->priv.line = node->line;
	return set_string(ctx, key, node, path);
}

/* "group": a group that exists now; the workers' only group. */
static int
set_group(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	struct group *gr;

	if (config_expect(ctx, node, CFG_STRING, path) == -1)
		return -1;
	errno = 0;
	if ((gr = getgrnam(node->str)) == NULL) {
		config_error(ctx, node->line, "%s: no such group \"%s\"%s%s", path, node->str,
		    errno ? ": " : "", errno ? strerror(errno) : "");
		return -1;
	}
	ctx->cfg->priv.gid = gr->gr_gid;
	return set_string(ctx, key, node, path);
}

/* An EHLO keyword: a letter or digit, then letters, digits and '-' (RFC 5321). */
static bool
config_ehlo_keyword(const char *s, size_t len)
{
	if (len == 0 || !isalnum((unsigned char)s[0]))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-')
			return false;
	return true;
}

/* Whether the keyword s[0..len) is in a list, ignoring case. */
static bool
config_keyword_in(const char *s, size_t len, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(list[i]) == len && strncasecmp(s, list[i], len) == 0)
			return true;
	return false;
}

/* Append a copy of s to a string list. */
static void
config_strlist_add(struct config_strlist *list, const char *s)
{
	list->v = xrealloc(list->v, (list->n + 1) * sizeof(*list->v));
	list->v[list->n++] = xstrdup(s);
}

/* ehlo.remove: keywords to drop from the backend's list. */
static int
set_ehlo_remove(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	struct config_strlist *list = config_field(ctx, key);
	const struct cfg_node *c;
	size_t n;

	if (config_strings(ctx, node, path, false, &c, &n) == -1)
		return -1;
	for (; c != NULL && n > 0; c = c->next, n--) {
		if (!config_ehlo_keyword(c->str, strlen(c->str))) {
			config_error(ctx, c->line, "%s: bad keyword \"%s\" "
			    "(expected letters, digits and '-')", path, c->str);
			return -1;
		}
		config_strlist_add(list, c->str);
	}
	return 0;
}

/* ehlo.add: "KEYWORD [params]" lines the proxy offers itself. */
static int
set_ehlo_add(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	static const char *const never[] = { EHLO_NEVER };
	struct config_strlist *list = config_field(ctx, key);
	const struct cfg_node *c;
	size_t n, kwlen;
	const char *s;

	if (config_strings(ctx, node, path, false, &c, &n) == -1)
		return -1;
	for (; c != NULL && n > 0; c = c->next, n--) {
		s = c->str;
		kwlen = strcspn(s, " ");
		if (!config_ehlo_keyword(s, kwlen)) {
			config_error(ctx, c->line, "%s: bad entry \"%s\" (expected "
			    "KEYWORD [params], the keyword of letters, digits and '-')",
			    path, s);
			return -1;
		}
		/* Parameters: printable ASCII words separated by single spaces. */
		for (size_t i = kwlen; s[i] != '\0'; i++)
			if ((s[i] == ' ' && (s[i + 1] == ' ' || s[i + 1] == '\0')) ||
			    (s[i] != ' ' && (s[i] < 33 || s[i] > 126))) {
				config_error(ctx, c->line, "%s: bad parameters in \"%s\" "
				    "(printable ASCII words separated by single spaces)",
				    path, s);
				return -1;
			}
		if (strlen(s) > EHLO_LINE_MAX) {
			config_error(ctx, c->line, "%s: entry longer than %d characters",
			    path, EHLO_LINE_MAX);
			return -1;
		}
		if (config_keyword_in(s, kwlen, never, sizeof(never) / sizeof(never[0]))) {
			config_error(ctx, c->line, "%s: the proxy cannot offer %.*s",
			    path, (int)kwlen, s);
			return -1;
		}
		if (kwlen == 4 && strncasecmp(s, "SIZE", 4) == 0) {
			config_error(ctx, c->line, "%s: SIZE is set with ehlo.size, "
			    "not ehlo.add", path);
			return -1;
		}
		for (size_t i = 0; i < list->n; i++)
			if (strncasecmp(list->v[i], s, kwlen) == 0 &&
			    (list->v[i][kwlen] == ' ' || list->v[i][kwlen] == '\0')) {
				config_error(ctx, c->line, "%s: %.*s is added twice",
				    path, (int)kwlen, s);
				return -1;
			}
		config_strlist_add(list, s);
	}
	return 0;
}

/* A directory or search path: a non-empty absolute path. */
static int
set_path(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	if (config_expect(ctx, node, CFG_STRING, path) == -1)
		return -1;
	if (node->str[0] != '/') {
		config_error(ctx, node->line, "%s: \"%s\" is not an absolute path",
		    path, node->str);
		return -1;
	}
	return set_string(ctx, key, node, path);
}

/* backend_tls: "none", "may" or "encrypt". */
static int
set_backend_tls(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	static const struct { const char *name; enum backend_tls_mode mode; } modes[] = {
		{ "none", BACKEND_TLS_NONE }, { "may", BACKEND_TLS_MAY },
		{ "encrypt", BACKEND_TLS_ENCRYPT },
	};

	if (config_expect(ctx, node, CFG_STRING, path) == -1)
		return -1;
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (strcmp(node->str, modes[i].name) == 0) {
			*(enum backend_tls_mode *)config_field(ctx, key) = modes[i].mode;
			return 0;
		}
	config_error(ctx, node->line, "%s: expected \"none\", \"may\" or \"encrypt\", "
	    "got \"%s\"", path, node->str);
	return -1;
}

/* A file the daemon reads at start-up: an absolute path that can be read now. */
static int
set_file(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	if (set_path(ctx, key, node, path) == -1)
		return -1;
	if (access(node->str, R_OK) == -1) {
		config_error(ctx, node->line, "%s: %s: %s", path, node->str, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * backend_tls_name: a DNS name (letters, digits, '-', '.'), the one the
 * backend's certificate must carry; no address literals (a certificate is
 * checked against a name here, never against an address).
 */
static int
set_tls_name(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	const char *s;
	size_t len;
	bool good;

	if (config_expect(ctx, node, CFG_STRING, path) == -1)
		return -1;
	s = node->str;
	len = strlen(s);
	good = len > 0 && len <= 253 && s[0] != '.' && s[0] != '-' && s[len - 1] != '.';
	for (size_t i = 0; good && i < len; i++)
		good = isalnum((unsigned char)s[i]) || s[i] == '-' ||
		    (s[i] == '.' && s[i + 1] != '.');
	if (!good) {
		config_error(ctx, node->line, "%s: bad name \"%s\" (expected a DNS name "
		    "such as mx.example.org)", path, s);
		return -1;
	}
	return set_string(ctx, key, node, path);
}

/* A tls.sni name: a DNS name, or "*." and one (a wildcard for one label). */
static bool
config_sni_name(const char *s)
{
	size_t len;
	bool good;

	if (s[0] == '*' && s[1] == '.')
		s += 2;
	len = strlen(s);
	good = len > 0 && len <= 253 && s[0] != '.' && s[0] != '-' && s[len - 1] != '.';
	for (size_t i = 0; good && i < len; i++)
		good = isalnum((unsigned char)s[i]) || s[i] == '-' ||
		    (s[i] == '.' && s[i + 1] != '.');
	return good;
}

/*
 * One tls.sni entry: { names = NAME or [ NAMES ]; cert = PATH; key = PATH; },
 * all three required.  The files are opened by tls.c at start-up (and -t).
 */
static int
tls_sni_entry(struct config_ctx *ctx, const struct cfg_node *obj, const char *path,
    struct config_tls_sni *e)
{
	const struct cfg_node *k, *c, *names = NULL;
	size_t n;

	if (config_expect(ctx, obj, CFG_OBJECT, path) == -1)
		return -1;
	e->line = obj->line;
	for (k = obj->child; k != NULL; k = k->next) {
		char **field = strcmp(k->key, "cert") == 0 ? &e->cert :
		    strcmp(k->key, "key") == 0 ? &e->key : NULL;

		if (strcmp(k->key, "names") == 0 && names == NULL) {
			names = k;
		} else if (field != NULL && *field == NULL) {
			if (config_expect(ctx, k, CFG_STRING, path) == -1)
				return -1;
			if (k->str[0] != '/') {
				config_error(ctx, k->line, "%s.%s: \"%s\" is not an absolute "
				    "path", path, k->key, k->str);
				return -1;
			}
			*field = xstrdup(k->str);
		} else {
			config_error(ctx, k->line, "%s: %s key \"%s\"", path,
			    strcmp(k->key, "names") == 0 || field ? "duplicate" : "unknown", k->key);
			return -1;
		}
	}
	if (names == NULL || e->cert == NULL || e->key == NULL) {
		config_error(ctx, obj->line, "%s: missing key \"%s\"", path,
		    names == NULL ? "names" : e->cert == NULL ? "cert" : "key");
		return -1;
	}
	if (config_strings(ctx, names, path, true, &c, &n) == -1)
		return -1;
	for (; c != NULL && n > 0; c = c->next, n--) {
		if (!config_sni_name(c->str)) {
			config_error(ctx, c->line, "%s.names: bad name \"%s\" (expected a "
			    "DNS name, or *. and one)", path, c->str);
			return -1;
		}
		config_strlist_add(&e->names, c->str);
		for (char *q = e->names.v[e->names.n - 1]; *q; q++)
			*q = (char)tolower((unsigned char)*q);
	}
	return 0;
}

/* tls.sni: one entry or a list of them (see tls_sni_entry). */
static int
set_tls_sni(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	struct config *cfg = ctx->cfg;
	const struct cfg_node *c;
	size_t n = 0;

	(void)key;
	if (node->type == CFG_OBJECT) {
		cfg->tls.sni = xcalloc(1, sizeof(*cfg->tls.sni));
		cfg->tls.nsni = 1;
		return tls_sni_entry(ctx, node, path, &cfg->tls.sni[0]);
	}
	if (config_expect(ctx, node, CFG_ARRAY, path) == -1)
		return -1;
	for (c = node->child; c != NULL; c = c->next)
		n++;
	cfg->tls.sni = xcalloc(n ? n : 1, sizeof(*cfg->tls.sni));
	for (c = node->child; c != NULL; c = c->next)
		if (tls_sni_entry(ctx, c, path, &cfg->tls.sni[cfg->tls.nsni++]) == -1)
			return -1;
	return 0;
}

/*
 * filter { module = "..."; name = "..."; ... }: one entry of cfg->filters,
 * in file order.  "module" (required, a non-empty string) and "name"
 * (optional: letters, digits, '.', '_', '-', at most 63, unique among the
 * blocks' names) are ours; the other keys are the module's options,
 * checked by module.c and the module itself, but a key given twice is an
 * error here as anywhere else.  The block stays in the parse tree, which
 * the config keeps.
 */
static int
set_filter(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	struct config *cfg = ctx->cfg;
	const struct cfg_node *c, *d, *module = NULL, *name = NULL;
	struct config_filter *f;

	(void)key;
	if (config_expect(ctx, node, CFG_OBJECT, path) == -1)
		return -1;
	for (c = node->child; c != NULL; c = c->next) {
		for (d = node->child; d != c; d = d->next)
			if (strcmp(d->key, c->key) == 0) {
				config_error(ctx, c->line, "%s.%s: duplicate key "
				    "(first set at line %d)", path, c->key, d->line);
				return -1;
			}
		if (strcmp(c->key, "module") == 0)
			module = c;
		else if (strcmp(c->key, "name") == 0)
			name = c;
	}
	if (module == NULL) {
		config_error(ctx, node->line, "%s: missing key \"module\"", path);
		return -1;
	}
	if (module->type != CFG_STRING) {
		config_error(ctx, module->line, "%s.module: expected a string, got %s",
		    path, cfg_type_name(module->type));
		return -1;
	}
	if (module->str[0] == '\0') {
		config_error(ctx, module->line, "%s.module: empty module name", path);
		return -1;
	}
	if (name != NULL) {
		size_t len;

		if (name->type != CFG_STRING) {
			config_error(ctx, name->line, "%s.name: expected a string, got %s",
			    path, cfg_type_name(name->type));
			return -1;
		}
		len = strlen(name->str);
		if (len == 0 || len > 63 ||
		    strspn(name->str, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789._-") != len) {
			config_error(ctx, name->line, "%s.name: \"%s\" is not a filter name "
			    "(1 to 63 letters, digits, '.', '_', '-')", path, name->str);
			return -1;
		}
		for (size_t i = 0; i < cfg->nfilters; i++)
			if (cfg->filters[i].name != NULL &&
			    strcmp(cfg->filters[i].name, name->str) == 0) {
				config_error(ctx, name->line, "%s.name: \"%s\" is already "
				    "the name of the filter at line %d", path, name->str,
				    cfg->filters[i].line);
				return -1;
			}
	}
	cfg->filters = xrealloc(cfg->filters, (cfg->nfilters + 1) * sizeof(*cfg->filters));
	f = &cfg->filters[cfg->nfilters++];
	f->module = xstrdup(module->str);
	f->name = name != NULL ? xstrdup(name->str) : NULL;
	f->line = node->line;
	f->block = (struct cfg_node *)node;	/* the tree is cfg->tree */
	return 0;
}

static int config_walk(struct config_ctx *, const struct config_key *,
    const struct cfg_node *, const char *);

/* A block (log {}, timeout {}, ...): walk its keys with the row's table. */
static int
set_block(struct config_ctx *ctx, const struct config_key *key,
    const struct cfg_node *node, const char *path)
{
	if (config_expect(ctx, node, CFG_OBJECT, path) == -1)
		return -1;
	return config_walk(ctx, key->block, node, path);
}

#define F(field)	offsetof(struct config, field)

static const struct config_key log_keys[] = {
	{ "level",		set_level,	F(log.level),		0, 0, NULL, 0, "info" },
	{ "transcript",		set_bool,	F(log.transcript),	0, 0, NULL, 0, "false" },
	{ "transcript_body",	set_bool,	F(log.transcript_body),	0, 0, NULL, 0, "false" },
	{ "syslog",		set_bool,	F(log.syslog),		0, 0, NULL, 0, "false" },
	{ NULL, NULL, 0, 0, 0, NULL, 0, NULL }
};

static const struct config_key timeout_keys[] = {
	{ "command",	set_uint, F(timeout.command),	1, TIMEOUT_MAX, NULL, 0, "300" },
	{ "data",	set_uint, F(timeout.data),	1, TIMEOUT_MAX, NULL, 0, "600" },
	{ "backend",	set_uint, F(timeout.backend),	1, TIMEOUT_MAX, NULL, 0, "300" },
	{ "connect",	set_uint, F(timeout.connect),	1, TIMEOUT_MAX, NULL, 0, "30" },
	{ "shutdown",	set_uint, F(timeout.shutdown),	1, TIMEOUT_MAX, NULL, 0, "30" },
	{ "proxy_protocol", set_uint, F(timeout.proxy_protocol), 1, 300, NULL, 0, "5" },
	{ "module_check", set_uint, F(timeout.module_check), 1, 3600, NULL, 0, "30" },
	{ NULL, NULL, 0, 0, 0, NULL, 0, NULL }
};

static const struct config_key limits_keys[] = {
	{ "max_connections",	set_uint, F(limits.max_connections),	1, 1000000, NULL, 0, "1000" },
	{ "max_connections_per_client", set_uint, F(limits.max_connections_per_client), 0, 65535, NULL, 0, "50" },
	{ "client_ipv6_prefix_length", set_uint, F(limits.client_ipv6_prefix_length), 1, 128, NULL, 0, "84" },	/* as Postfix 3.8 */
	{ "max_message_size",	set_u64,  F(limits.max_message_size),	0, INT64_MAX, NULL, 0, "52428800" },
	{ "max_recipients",	set_uint, F(limits.max_recipients),	1, 1000000, NULL, 0, "1000" },
	{ "max_refused_recipients", set_uint, F(limits.max_refused_recipients), 1, 1000000, NULL, 0, "20" },
	{ "max_line_length",	set_uint, F(limits.max_line_length),	512, 65536, NULL, 0, "512" },
	{ "spool_memory",	set_u64,  F(spool_memory),		4096, 67108864, NULL, 0, "262144" },
	{ "max_header_size",	set_u64,  F(max_header_size),		1024, 67108864, NULL, 0, "1048576" },
	{ NULL, NULL, 0, 0, 0, NULL, 0, NULL }
};

static const struct config_key ehlo_keys[] = {
	{ "remove",	set_ehlo_remove, F(ehlo.remove),	0, 0, NULL, 0, NULL },
	{ "add",	set_ehlo_add,	 F(ehlo.add),		0, 0, NULL, 0, NULL },
	{ "size",	set_u64,	 F(ehlo.size),		0, INT64_MAX, NULL, 0, "0" },
	{ NULL, NULL, 0, 0, 0, NULL, 0, NULL }
};

static const struct config_key tls_keys[] = {
	{ "cert",	set_path,	F(tls.cert),		0, 0, NULL, KEY_REQUIRED, NULL },
	{ "key",	set_path,	F(tls.key),		0, 0, NULL, KEY_REQUIRED, NULL },
	{ "protocols",	set_string,	F(tls.protocols),	0, 0, NULL, 0, NULL },
	{ "ciphers",	set_string,	F(tls.ciphers),		0, 0, NULL, 0, NULL },
	{ "sni",	set_tls_sni,	0,			0, 0, NULL, 0, NULL },
	{ "ask_client_cert", set_bool,	F(tls.ask_client_cert),	0, 0, NULL, 0, "false" },
	{ "client_ca",	set_file,	F(tls.client_ca),	0, 0, NULL, 0, NULL },
	{ "ticket_key_rotation", set_uint, F(tls.ticket_key_rotation), 1, TIMEOUT_MAX, NULL, 0, "3600" },	/* as Postfix's smtpd_tls_session_cache_timeout */
	{ NULL, NULL, 0, 0, 0, NULL, 0, NULL }
};

static const struct config_key metrics_keys[] = {
	{ "listen",	set_addr,	F(metrics.listen),	0, 0, NULL, KEY_REQUIRED, NULL },
	{ NULL, NULL, 0, 0, 0, NULL, 0, NULL }
};

static const struct config_key top_keys[] = {
	{ "listen",	set_listen,	0,		0, 0, NULL, KEY_REQUIRED, NULL },
	{ "backend",	set_backends,	0,		0, 0, NULL, KEY_REQUIRED, NULL },
	{ "backend_balance", set_balance, F(backend_balance), 0, 0, NULL, 0, "failover" },
	{ "backend_hold_down", set_uint, F(backend_hold_down), 0, TIMEOUT_MAX, NULL, 0, "30" },
	{ "hostname",	set_hostname,	F(hostname),	0, 0, NULL, 0, NULL },	/* default: gethostname() */
	{ "log",	set_block,	0,		0, 0, log_keys, 0, NULL },
	{ "timeout",	set_block,	0,		0, 0, timeout_keys, 0, NULL },
	{ "limits",	set_block,	0,		0, 0, limits_keys, 0, NULL },
	{ "ehlo",	set_block,	0,		0, 0, ehlo_keys, 0, NULL },
	{ "tls",	set_block,	0,		0, 0, tls_keys, 0, NULL },
	{ "xclient",	set_bool,	F(xclient),	0, 0, NULL, 0, "true" },
	{ "auth_requires_tls", set_bool, F(auth_requires_tls), 0, 0, NULL, 0, "true" },
	{ "backend_tls", set_backend_tls, F(backend_tls), 0, 0, NULL, 0, "none" },
	{ "backend_tls_ca", set_file,	F(backend_tls_ca), 0, 0, NULL, 0, NULL },
	{ "backend_tls_name", set_tls_name, F(backend_tls_name), 0, 0, NULL, 0, NULL },
	{ "xforward",	set_bool,	F(xforward),	0, 0, NULL, 0, "true" },
	{ "filter",	set_filter,	0,		0, 0, NULL, KEY_REPEAT, NULL },
	{ "module_path", set_path,	F(module_path),	0, 0, NULL, 0, MODULE_PATH },
	{ "quarantine_dir", set_path,	F(quarantine_dir), 0, 0, NULL, 0, "/var/spool/smtpchain/quarantine" },
	{ "spool_dir",	set_path,	F(spool_dir),	0, 0, NULL, 0, "/var/spool/smtpchain/tmp" },
	{ "workers",	set_uint,	F(workers),	1, 32, NULL, 0, NULL },	/* default: the online CPUs */
	{ "metrics",	set_block,	0,		0, 0, metrics_keys, 0, NULL },
	{ "user",	set_user,	F(priv.user),	0, 0, NULL, 0, NULL },
	{ "group",	set_group,	F(priv.group),	0, 0, NULL, 0, NULL },
	{ "chroot",	set_path,	F(priv.chroot),	0, 0, NULL, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL, 0, NULL }
};

#undef F

/*
 * Walk the members of an object against a table: unknown keys, repeats and
 * missing required keys are errors.  block is the object's path ("" for
 * the top level).
 */
static int
config_walk(struct config_ctx *ctx, const struct config_key *table,
    const struct cfg_node *obj, const char *block)
{
	int seen[CONFIG_MAX_KEYS] = { 0 };
	const struct cfg_node *node;
	char path[128];
	size_t i;

	for (i = 0; table[i].name != NULL; i++)
		if (i >= CONFIG_MAX_KEYS)
			log_panic("block \"%s\" has more than %d keys", block,
			    CONFIG_MAX_KEYS);
	for (node = obj->child; node != NULL; node = node->next) {
		for (i = 0; table[i].name != NULL; i++)
			if (strcmp(table[i].name, node->key) == 0)
				break;
		if (table[i].name == NULL) {
			if (*block == '\0')
				config_error(ctx, node->line, "unknown key \"%s\"",
				    node->key);
			else
				config_error(ctx, node->line, "unknown key \"%s\" in %s {}",
				    node->key, block);
			return -1;
		}
		if (*block == '\0')
			snprintf(path, sizeof(path), "%s", node->key);
		else
			snprintf(path, sizeof(path), "%s.%s", block, node->key);
		if (seen[i] && !(table[i].flags & KEY_REPEAT)) {
			config_error(ctx, node->line, "%s: duplicate key (first set "
			    "at line %d)", path, seen[i]);
			return -1;
		}
		seen[i] = node->line;
		if (table[i].set(ctx, &table[i], node, path) == -1)
			return -1;
	}
	for (i = 0; table[i].name != NULL; i++)
		if ((table[i].flags & KEY_REQUIRED) && !seen[i]) {
			if (*block == '\0')
				config_error(ctx, 0, "missing required key \"%s\"",
				    table[i].name);
			else
				config_error(ctx, obj->line, "missing required key "
				    "\"%s\" in %s {}", table[i].name, block);
			return -1;
		}
	return 0;
}

/*
 * One worker per online CPU, 1..32: at most half the master's 64 worker
 * slots, so a reload can start a whole new set while the old one retires.
 */
static unsigned
config_default_workers(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > 32 ? 32 : (unsigned)n;
}

/*
 * Store the defaults of a table's rows, and of the blocks inside, through
 * the rows' own setters.  A default the setter refuses is our bug.
 */
static void
config_defaults(struct config *cfg, const struct config_key *table,
    const char *block)
{
	struct config_ctx ctx;
	struct cfg_node node;
	char path[128], err[512];

	memset(&ctx, 0, sizeof(ctx));
	ctx.cfg = cfg;
	ctx.file = "(defaults)";
	ctx.err = err;
	ctx.errlen = sizeof(err);

	for (const struct config_key *key = table; key->name != NULL; key++) {
		if (*block == '\0')
			snprintf(path, sizeof(path), "%s", key->name);
		else
			snprintf(path, sizeof(path), "%s.%s", block, key->name);
		if (key->block != NULL)
			config_defaults(cfg, key->block, path);
		if (key->def == NULL)
			continue;
		memset(&node, 0, sizeof(node));
		if (strcmp(key->def, "true") == 0 || strcmp(key->def, "false") == 0) {
			node.type = CFG_BOOL;
			node.boolean = strcmp(key->def, "true") == 0;
		} else if (key->def[0] != '\0' &&
		    key->def[strspn(key->def, "0123456789")] == '\0') {
			node.type = CFG_INT;
			node.num = strtoll(key->def, NULL, 10);
		} else {
			node.type = CFG_STRING;
			node.str = (char *)key->def;
		}
		if (key->set(&ctx, key, &node, path) == -1)
			log_panic("config_defaults: %s", err);
	}
}

/* Our host name, for when the config gives none. */
static char *
config_default_hostname(void)
{
	char name[256];

	if (gethostname(name, sizeof(name)) == -1 || name[0] == '\0')
		return xstrdup("localhost");
	name[sizeof(name) - 1] = '\0';
	return xstrdup(name);
}

/* Load and check a config file; see config.h. */
struct config *
config_load(const char *path, char *err, size_t errlen)
{
	struct config_ctx ctx;
	struct cfg_node *root;
	struct config *cfg;

	if (err && errlen)
		err[0] = '\0';
	if ((root = cfg_parse_file(path, err, errlen)) == NULL)
		return NULL;
	cfg = xcalloc(1, sizeof(*cfg));
	cfg->file = xstrdup(path);
	cfg->tree = root;
	config_defaults(cfg, top_keys, "");

	memset(&ctx, 0, sizeof(ctx));
	ctx.cfg = cfg;
	ctx.file = path;
	ctx.err = err;
	ctx.errlen = errlen;
	if (config_walk(&ctx, top_keys, root, "") == -1) {
		config_free(cfg);
		return NULL;
	}
	if (cfg->hostname == NULL)
		cfg->hostname = config_default_hostname();
	if (cfg->workers == 0)
		cfg->workers = config_default_workers();
	cfg->tls.enabled = cfg->tls.cert != NULL;
	cfg->metrics.enabled = cfg->metrics.listen.sslen != 0;
	if (cfg->priv.group != NULL && cfg->priv.user == NULL) {
		config_error(&ctx, cfg_get(root, "group")->line, "group: needs user "
		    "(the account the workers run as)");
		config_free(cfg);
		return NULL;
	}
	if (cfg->priv.chroot != NULL && cfg->priv.user == NULL) {
		config_error(&ctx, cfg_get(root, "chroot")->line, "chroot: needs user "
		    "(the account the workers run as)");
		config_free(cfg);
		return NULL;
	}
	if (cfg->backend_tls == BACKEND_TLS_ENCRYPT && cfg->backend_tls_name == NULL) {
		config_error(&ctx, cfg_get(root, "backend_tls")->line, "backend_tls: \"encrypt\" "
		    "needs backend_tls_name (the name in the backend's certificate)");
		config_free(cfg);
		return NULL;
	}
	for (size_t i = 0; i < cfg->nlisten; i++)
		if (cfg->listen[i].implicit_tls && !cfg->tls.enabled) {
			config_error(&ctx, cfg->listen[i].line, "listen: %s: tls = \"implicit\" "
			    "needs a tls {} block", cfg->listen[i].text);
			config_free(cfg);
			return NULL;
		}
	return cfg;
}

/* Free a string list's strings and array. */
static void
config_strlist_free(struct config_strlist *list)
{
	for (size_t i = 0; i < list->n; i++)
		free(list->v[i]);
	free(list->v);
	list->v = NULL;
	list->n = 0;
}

/* Free a config and everything it owns. */
void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->file);
	free(cfg->hostname);
	free(cfg->listen);
	free(cfg->backends);
	config_strlist_free(&cfg->ehlo.remove);
	config_strlist_free(&cfg->ehlo.add);
	for (size_t i = 0; i < cfg->nfilters; i++) {
		free(cfg->filters[i].module);
		free(cfg->filters[i].name);
	}
	free(cfg->filters);
	free(cfg->module_path);
	free(cfg->quarantine_dir);
	free(cfg->spool_dir);
	free(cfg->priv.user);
	free(cfg->priv.group);
	free(cfg->priv.chroot);
	free(cfg->tls.cert);
	free(cfg->tls.key);
	free(cfg->tls.protocols);
	free(cfg->tls.ciphers);
	for (size_t i = 0; i < cfg->tls.nsni; i++) {
		config_strlist_free(&cfg->tls.sni[i].names);
		free(cfg->tls.sni[i].cert);
		free(cfg->tls.sni[i].key);
	}
	free(cfg->tls.sni);
	free(cfg->tls.client_ca);
	free(cfg->backend_tls_ca);
	free(cfg->backend_tls_name);
	cfg_free(cfg->tree);
	free(cfg);
}

/* Parse "host:port" or "[v6]:port", numeric only; see config.h. */
int
config_parse_addr(const char *text, struct config_addr *out)
{
	struct config_addr addr;
	char host[INET6_ADDRSTRLEN + 1];
	const char *port, *end;
	size_t hostlen;
	unsigned long portnum = 0;

	memset(&addr, 0, sizeof(addr));
	if (strlen(text) >= sizeof(addr.text))
		return -1;
	if (text[0] == '[') {
		if ((end = strchr(text, ']')) == NULL || end[1] != ':')
			return -1;
		hostlen = (size_t)(end - text - 1);
		if (hostlen == 0 || hostlen >= sizeof(host))
			return -1;
		memcpy(host, text + 1, hostlen);
		host[hostlen] = '\0';
		port = end + 2;
	} else {
		if ((end = strrchr(text, ':')) == NULL)
			return -1;
		hostlen = (size_t)(end - text);
		if (hostlen == 0 || hostlen >= sizeof(host) ||
		    memchr(text, ':', hostlen) != NULL)
			return -1;
		memcpy(host, text, hostlen);
		host[hostlen] = '\0';
		port = end + 1;
	}

	/* The port: 1 to 5 digits, 1..65535. */
	if (*port == '\0' || strlen(port) > 5)
		return -1;
	for (const char *p = port; *p != '\0'; p++) {
		if (!isdigit((unsigned char)*p))
			return -1;
		portnum = portnum * 10 + (unsigned long)(*p - '0');
	}
	if (portnum < 1 || portnum > 65535)
		return -1;

	if (text[0] == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&addr.ss;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)portnum);
		addr.sslen = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&addr.ss;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -1;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)portnum);
		addr.sslen = sizeof(*sin);
	}
	snprintf(addr.text, sizeof(addr.text), "%s", text);
	addr.line = out->line;
	*out = addr;
	return 0;
}
