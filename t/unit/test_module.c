/*
 * test_module.c - unit tests for modules_load() and modules_unload() with
 * the real test modules (t/modules/, built by "make check" into
 * $SMTPCHAIN_BUILDDIR/t/modules/.libs), and for testfilter's hooks driven
 * through a fake host table.  The test uses libuv itself, so the process
 * has it, as the daemon does, for testfilter's pending mode.
 *
 * Each test writes a config to a temporary file, loads it, and checks the
 * chain or the exact error, with the file's path shown as "F" and the
 * modules' directory as "L" (so "F:3: filter "L/x.so": ...").
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "tap.h"
#include "config.h"
#include "module.h"

#define BASE	"listen = \"127.0.0.1:10025\"\nbackend = \"127.0.0.1:25\"\n"

static char	libs[1024];		/* $SMTPCHAIN_BUILDDIR/t/modules/.libs */
static char	tmppath[64];
static char	errbuf[1024];
static char	errshown[1024];

/* --- a fake host: what testfilter's hooks call ---------------------------- */

/* One session as the fake host sees it. */
struct sc_ctx {
	void		*instance;
	void		*state;
	const char	*client_addr;
	char		 reply[256];		/* "CODE ENH TEXT" of set_reply() */
	char		 changes[2048];		/* one line per message change */
	uv_loop_t	*loop;
	int		 resumed;		/* resume() calls */
	enum sc_verdict	 verdict;		/* of the last one */
};

static void *
fake_instance(struct sc_ctx *c)
{
	return c->instance;
}

static void **
fake_state(struct sc_ctx *c)
{
	return &c->state;
}

static const char *
fake_get(struct sc_ctx *c, const char *name)
{
	return strcmp(name, "client_addr") == 0 ? c->client_addr : NULL;
}

static void __attribute__((format(printf, 3, 4)))
fake_log(struct sc_ctx *c, int level, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	(void)c;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	diag("module log %d: %s", level, line);
}

static int
fake_set_reply(struct sc_ctx *c, int code, const char *enhanced, const char *text)
{
	snprintf(c->reply, sizeof(c->reply), "%d %s %s", code, enhanced ? enhanced : "-", text);
	return 0;
}

/* Append one line to the change log. */
static int __attribute__((format(printf, 2, 3)))
change(struct sc_ctx *c, const char *fmt, ...)
{
	size_t len = strlen(c->changes);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->changes + len, sizeof(c->changes) - len, fmt, ap);
	va_end(ap);
	len = strlen(c->changes);
	snprintf(c->changes + len, sizeof(c->changes) - len, "\n");
	return 0;
}

static int
fake_add_header(struct sc_ctx *c, const char *name, const char *value)
{
	return change(c, "add %s:%s", name, value);
}

static int
fake_insert_header(struct sc_ctx *c, size_t index, const char *name, const char *value)
{
	return change(c, "insert %zu %s:%s", index, name, value);
}

static int
fake_change_header(struct sc_ctx *c, const char *name, size_t occurrence, const char *value)
{
	if (value == NULL)
		return change(c, "delete %s %zu", name, occurrence);
	return change(c, "change %s %zu:%s", name, occurrence, value);
}

static int
fake_replace_body(struct sc_ctx *c, const void *p, size_t n)
{
	return change(c, "body %.*s", (int)n, (const char *)p);
}

static int
fake_change_from(struct sc_ctx *c, const char *addr, const char *params)
{
	return change(c, "from %s %s", addr, params ? params : "-");
}

static int
fake_add_rcpt(struct sc_ctx *c, const char *addr, const char *params)
{
	return change(c, "add_rcpt %s %s", addr, params ? params : "-");
}

static int
fake_del_rcpt(struct sc_ctx *c, const char *addr)
{
	return change(c, "del_rcpt %s", addr);
}

static void
fake_resume(struct sc_ctx *c, enum sc_verdict v)
{
	c->resumed++;
	c->verdict = v;
}

static void *
fake_loop(struct sc_ctx *c)
{
	return c->loop;
}

static const struct sc_host host = {
	.abi = SC_FILTER_ABI,
	.size = sizeof(struct sc_host),
	.opt_string = module_opt_string,
	.opt_int = module_opt_int,
	.opt_bool = module_opt_bool,
	.opt_list = module_opt_list,
	.opt_error = module_opt_error,
	.instance = fake_instance,
	.state = fake_state,
	.get = fake_get,
	.log = fake_log,
	.set_reply = fake_set_reply,
	.add_header = fake_add_header,
	.insert_header = fake_insert_header,
	.change_header = fake_change_header,
	.replace_body = fake_replace_body,
	.change_from = fake_change_from,
	.add_rcpt = fake_add_rcpt,
	.del_rcpt = fake_del_rcpt,
	.resume = fake_resume,
	.loop = fake_loop,
};

/* --- loading configs ---------------------------------------------------- */

/* Replace every "from" in the string s (of size bytes) by "to". */
static void
replace_all(char *s, size_t size, const char *from, const char *to)
{
	char out[1024];
	size_t o = 0, flen = strlen(from);
	const char *p = s, *q;

	if (flen == 0)
		return;
	while ((q = strstr(p, from)) != NULL) {
		o += (size_t)snprintf(out + o, sizeof(out) - o, "%.*s%s", (int)(q - p), p, to);
		if (o >= sizeof(out))
			break;
		p = q + flen;
	}
	if (o < sizeof(out))
		snprintf(out + o, sizeof(out) - o, "%s", p);
	snprintf(s, size, "%s", out);
}

/*
 * Load a config (printf-style) and its modules.  0 with *cfgp and *chain,
 * or -1 with *cfgp NULL and the error in errbuf, and in errshown with "F"
 * for the file and "L" for the modules' directory.
 */
static int __attribute__((format(printf, 3, 4)))
load(struct config **cfgp, struct filter_chain *chain, const char *fmt, ...)
{
	char text[4096];
	struct config *cfg;
	va_list ap;
	int fd, rc;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	snprintf(tmppath, sizeof(tmppath), "/tmp/test_module.XXXXXX");
	if ((fd = mkstemp(tmppath)) == -1 ||
	    write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		perror("temp config");
		exit(2);
	}
	close(fd);
	errbuf[0] = '\0';
	memset(chain, 0, sizeof(*chain));
	*cfgp = NULL;
	cfg = config_load(tmppath, errbuf, sizeof(errbuf));
	unlink(tmppath);
	rc = -1;
	if (cfg != NULL) {
		memset(chain, 0xa5, sizeof(*chain));	/* must be emptied on failure */
		rc = modules_load(cfg, &host, chain, errbuf, sizeof(errbuf));
		if (rc == 0)
			*cfgp = cfg;
		else
			config_free(cfg);
	}
	snprintf(errshown, sizeof(errshown), "%s", errbuf);
	replace_all(errshown, sizeof(errshown), tmppath, "F");
	replace_all(errshown, sizeof(errshown), libs, "L");
	return rc;
}

/* Load a config that must fail; the error as shown, or "(loaded fine)". */
static const char * __attribute__((format(printf, 1, 2)))
load_err(const char *fmt, ...)
{
	struct filter_chain chain;
	struct config *cfg;
	char text[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (load(&cfg, &chain, "%s", text) == 0) {
		modules_unload(&chain);
		config_free(cfg);
		return "(loaded fine)";
	}
	if (chain.v != NULL || chain.n != 0 || chain.needs != 0 || chain.holds_message)
		return "(failed, but the chain is not empty)";
	return errshown;
}

/* Whether the dynamic linker still has this object loaded. */
static bool
is_loaded(const char *path)
{
	void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);

	if (h == NULL)
		return false;
	dlclose(h);
	return true;
}

/* A module's .so in the build tree. */
static const char *
so(const char *name)
{
	static char path[4][1100];
	static int i;

	i = (i + 1) % 4;
	snprintf(path[i], sizeof(path[i]), "%s/%s.so", libs, name);
	return path[i];
}

/* --- tests -------------------------------------------------------------- */

/*
 * Filter names: a block's name key (not an option of the module), else the
 * module's own name, NAME#2... when another block has it.
 */
static void
test_names(void)
{
	struct filter_chain chain;
	struct config *cfg;
	const char *tf = so("testfilter");

	if (load(&cfg, &chain, BASE "filter { module = \"%s\" }\n"
	    "filter { module = \"%s\"; name = \"testfilter\" }\n"
	    "filter { module = \"%s\"; tag = x }\n"
	    "filter { module = \"%s\"; name = \"second\" }\n", tf, tf, tf, tf) != 0) {
		ok(0, "four blocks, some named, load");
		diag("%s", errbuf);
		return;
	}
	ok(1, "four blocks, some named, load (name is not the module's option)");
	is_int(chain.n, 4, "four modules");
	if (chain.n == 4) {
		is_str(chain.v[0].name, "testfilter#2", "unnamed, its name taken by a later block: #2");
		is_str(chain.v[1].name, "testfilter", "named as its module: that name");
		is_str(chain.v[2].name, "testfilter#3", "the next unnamed one: #3");
		is_str(chain.v[3].name, "second", "named");
	}
	modules_unload(&chain);
	config_free(cfg);
}

/* testfilter by path and by name through module_path. */
static void
test_load(void)
{
	struct filter_chain chain;
	struct config *cfg;

	if (load(&cfg, &chain, BASE "filter {\n module = \"%s\";\n}\n", so("testfilter")) != 0) {
		ok(0, "testfilter loads by path");
		diag("%s", errbuf);
		return;
	}
	ok(1, "testfilter loads by path");
	is_int(chain.n, 1, "one module");
	is_str(chain.v[0].name, "testfilter", "name from sc_filter.name");
	is_str(chain.v[0].path, so("testfilter"), "path as written");
	is_int(chain.v[0].line, 3, "line of the filter {} block");
	ok(chain.v[0].dl != NULL && chain.v[0].desc != NULL, "handle and descriptor");
	ok(chain.v[0].instance != NULL, "instance from init()");
	is_int(chain.v[0].desc->abi, SC_FILTER_ABI, "descriptor abi");
	is_int(chain.v[0].needs, SC_NEED_HEADERS | SC_NEED_BODY, "default needs");
	is_int(chain.needs, SC_NEED_HEADERS | SC_NEED_BODY, "chain needs");
	ok(chain.holds_message, "a module with message hooks holds the message");
	ok(is_loaded(so("testfilter")), "loaded while the chain is");
	modules_unload(&chain);
	ok(chain.v == NULL && chain.n == 0, "unload empties the chain");
	ok(!is_loaded(so("testfilter")), "unload dlclose()s it");
	modules_unload(&chain);
	ok(1, "unload twice is harmless");
	config_free(cfg);

	if (load(&cfg, &chain, BASE "module_path = \"%s\";\nfilter { module = testfilter; "
	    "tag = \"named\" }\n", libs) != 0) {
		ok(0, "testfilter loads by name");
		diag("%s", errbuf);
		return;
	}
	ok(1, "testfilter loads by name");
	is_str(chain.v[0].path, so("testfilter"), "module_path/NAME.so");
	is_int(chain.v[0].line, 4, "line");
	modules_unload(&chain);
	config_free(cfg);

	/* No filters: an empty chain. */
	if (load(&cfg, &chain, BASE) == 0) {
		ok(chain.v == NULL && chain.n == 0 && chain.needs == 0 && !chain.holds_message,
		    "no filter {}: empty chain");
		modules_unload(&chain);
		config_free(cfg);
	} else {
		ok(0, "no filter {}: empty chain");
	}
}

/* Modules that cannot be loaded, with the exact messages. */
static void
test_load_errors(void)
{
	static const char *const libz[] = {
		"/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1",
		"/lib64/libz.so.1", "/usr/lib64/libz.so.1", "/lib/libz.so.1", "/usr/lib/libz.so.1",
	};
	const char *src = getenv("SMTPCHAIN_SRCDIR");
	const char *z = NULL;
	char want[2048];

	is_str(load_err(BASE "filter {\n module = \"/nonexistent/nosuch.so\"\n}\n"),
	    "F:3: filter \"/nonexistent/nosuch.so\": cannot load /nonexistent/nosuch.so: "
	    "cannot open shared object file: No such file or directory", "missing file");
	is_str(load_err(BASE "module_path = \"/nonexistent/dir\"\nfilter { module = nosuch }\n"),
	    "F:4: filter \"nosuch\": cannot load /nonexistent/dir/nosuch.so: "
	    "cannot open shared object file: No such file or directory",
	    "missing file by name");
	if (src == NULL) {
		ok(1, "# SKIP SMTPCHAIN_SRCDIR not set");
	} else {
		snprintf(want, sizeof(want), "F:3: filter \"%s/t/modules/testfilter.c\": cannot "
		    "load %s/t/modules/testfilter.c: invalid ELF header", src, src);
		is_str(load_err(BASE "filter { module = \"%s/t/modules/testfilter.c\" }\n", src),
		    want, "not a shared object");
	}

	for (size_t i = 0; i < sizeof(libz) / sizeof(libz[0]) && z == NULL; i++)
		if (access(libz[i], R_OK) == 0)
			z = libz[i];
	if (z == NULL) {
		ok(1, "# SKIP no libz.so.1 to load");
	} else {
		snprintf(want, sizeof(want), "F:3: filter \"%s\": %s does not export "
		    "smtpchain_filter (not a smtpchain filter module?)", z, z);
		is_str(load_err(BASE "filter { module = \"%s\" }\n", z), want, "no symbol");
	}

	is_str(load_err(BASE "module_path = \"%s\"\nfilter { module = badabi }\n", libs),
	    "F:4: filter \"badabi\": built for filter ABI 2, this smtpchain has ABI 1 "
	    "(rebuild the module)", "wrong ABI");
	ok(!is_loaded(so("badabi")), "badabi unloaded after the refusal");
	is_str(load_err(BASE "filter {\n module = \"%s\"\n}\n", so("badabi")),
	    "F:3: filter \"L/badabi.so\": built for filter ABI 2, this smtpchain has ABI 1 "
	    "(rebuild the module)", "wrong ABI, by path");
}

/* init() failures and option errors. */
static void
test_init_errors(void)
{
	struct filter_chain chain;
	struct config *cfg;

#define M	"module_path = \"%s\"\n"
	is_str(load_err(BASE M "filter {\n module = initfail\n}\n", libs),
	    "F:4: filter \"initfail\": initfail: this module always fails", "init fails");
	ok(!is_loaded(so("initfail")), "initfail unloaded after the failure");
	is_str(load_err(BASE M "filter {\n module = initfail\n message = \"no way\"\n}\n", libs),
	    "F:4: filter \"initfail\": no way", "init fails with its option's text");
	is_str(load_err(BASE M "filter {\n module = initfail\n message = \"a\\r\\nb\"\n}\n", libs),
	    "F:4: filter \"initfail\": a??b", "a module's message is made one line");
	is_str(load_err(BASE M "filter {\n module = initfail\n\n message = 42\n}\n", libs),
	    "F:7: filter \"initfail\": message: expected a string", "opt_string: wrong type");

	is_str(load_err(BASE M "filter {\n module = testfilter\n tag = x\n tagg = y\n}\n", libs),
	    "F:7: filter \"testfilter\": unknown key \"tagg\"", "unknown key");
	ok(!is_loaded(so("testfilter")), "testfilter unloaded after an unknown key");
	is_str(load_err(BASE M "filter { module = testfilter\n tag = 3 }\n", libs),
	    "F:5: filter \"testfilter\": tag: expected a string", "string option given a number");
	is_str(load_err(BASE M "filter { module = testfilter\n trace = \"yes\" }\n", libs),
	    "F:5: filter \"testfilter\": trace: expected a boolean", "bool option given a string");
	is_str(load_err(BASE M "filter { module = testfilter\n needs = 3 }\n", libs),
	    "F:5: filter \"testfilter\": needs: expected a string or an array of strings",
	    "list option given a number");
	is_str(load_err(BASE M "filter { module = testfilter\n needs = [\n \"headers\",\n"
	    " true ] }\n", libs),
	    "F:7: filter \"testfilter\": needs: expected a string", "list element of a wrong type");
	is_str(load_err(BASE M "filter { module = testfilter\n needs = [ \"head\" ] }\n", libs),
	    "F:5: filter \"testfilter\": needs: unknown need \"head\" (expected headers or body)",
	    "opt_error from the module");
	is_str(load_err(BASE M "filter { module = testfilter\n\n verdict_subject = [ \"A=reject\", "
	    "\"B=maybe\" ] }\n", libs),
	    "F:6: filter \"testfilter\": verdict_subject: bad entry \"B=maybe\" (expected "
	    "WORD=reject|tempfail|discard|quarantine|accept)", "opt_error with a list");
	is_str(load_err(BASE M "filter { module = testfilter\n add_header = \"no colon\" }\n", libs),
	    "F:5: filter \"testfilter\": add_header: expected \"Name: value\", got \"no colon\"",
	    "header option without a colon");
	is_str(load_err(BASE M "filter { module = testfilter\n hooks = [ eom, nope ] }\n", libs),
	    "F:5: filter \"testfilter\": hooks: unknown hook \"nope\"", "unknown hook");

	/* pending needs libuv in the process (the test links it). */
	if (load(&cfg, &chain, BASE M "filter { module = testfilter; pending = true }\n",
	    libs) == 0) {
		ok(1, "pending with libuv");
		modules_unload(&chain);
		config_free(cfg);
	} else {
		ok(0, "pending with libuv");
		diag("%s", errbuf);
	}

	/* A later failure unloads the modules before it. */
	is_str(load_err(BASE M "filter { module = testfilter }\nfilter { module = testfilter }\n"
	    "filter { module = initfail }\n", libs),
	    "F:6: filter \"initfail\": initfail: this module always fails",
	    "third module fails");
	ok(!is_loaded(so("testfilter")), "the modules before it are unloaded");

	/* Config errors come first. */
	is_str(load_err(BASE "filter {\n tag = x\n}\n"), "F:3: filter: missing key \"module\"",
	    "no module key");
#undef M
}

/* Order, per-block options, needs and holds_message. */
static void
test_chain(void)
{
	struct filter_chain chain;
	struct config *cfg;

	if (load(&cfg, &chain, BASE "module_path = \"%s\"\n"
	    "filter { module = testfilter; tag = a }\n"
	    "filter { module = \"%s\"; tag = b; needs = headers }\n"
	    "filter { module = testfilter; tag = c; needs = [ body ]; hooks = [ rcpt, eom ] }\n",
	    libs, so("testfilter")) != 0) {
		ok(0, "three filters load");
		diag("%s", errbuf);
		return;
	}
	ok(1, "three filters load");
	is_int(chain.n, 3, "three modules");
	is_int(chain.v[0].line, 4, "first block first");
	is_int(chain.v[1].line, 5, "second block second");
	is_int(chain.v[2].line, 6, "third block third");
	ok(chain.v[0].instance != chain.v[1].instance && chain.v[1].instance != chain.v[2].instance,
	    "an instance per block");
	is_int(chain.v[0].needs, SC_NEED_HEADERS | SC_NEED_BODY, "a: needs both");
	is_int(chain.v[1].needs, SC_NEED_HEADERS, "b: needs headers");
	is_int(chain.v[2].needs, SC_NEED_BODY, "c: needs body");
	ok(chain.v[0].desc->header != NULL && chain.v[0].desc->connect != NULL,
	    "a: every hook");
	ok(chain.v[2].desc->header == NULL && chain.v[2].desc->connect == NULL &&
	    chain.v[2].desc->rcpt != NULL && chain.v[2].desc->eom != NULL &&
	    chain.v[2].desc->close != NULL, "c: its own hooks (the descriptor is read after init)");
	is_int(chain.needs, SC_NEED_HEADERS | SC_NEED_BODY, "chain needs: the union");
	ok(chain.holds_message, "holds the message");
	modules_unload(&chain);
	ok(!is_loaded(so("testfilter")), "loaded three times, unloaded");
	config_free(cfg);

	/* Envelope hooks only: the message is not held. */
	if (load(&cfg, &chain, BASE "module_path = \"%s\"\n"
	    "filter { module = testfilter; needs = []; hooks = [ connect, helo, mail, rcpt, data ] }\n"
	    "filter { module = testfilter; needs = []; hooks = rcpt }\n", libs) != 0) {
		ok(0, "envelope-only filters load");
		diag("%s", errbuf);
		return;
	}
	is_int(chain.needs, 0, "envelope only: needs nothing");
	ok(!chain.holds_message, "envelope only: the message is not held");
	modules_unload(&chain);
	config_free(cfg);

	/* needs = [] with a message hook: the module gets everything. */
	if (load(&cfg, &chain, BASE "module_path = \"%s\"\n"
	    "filter { module = testfilter; needs = []; hooks = [ rcpt, eom ] }\n", libs) != 0) {
		ok(0, "eom-only filter loads");
		diag("%s", errbuf);
		return;
	}
	is_int(chain.v[0].needs, SC_NEED_HEADERS | SC_NEED_BODY,
	    "an eom hook without needs needs both");
	ok(chain.holds_message, "eom hook: the message is held");
	modules_unload(&chain);
	config_free(cfg);
}

/* testfilter's hooks through the fake host: verdicts, replies, changes, trace. */
static void
test_testfilter_hooks(void)
{
	struct filter_chain chain;
	const struct sc_filter *d;
	struct config *cfg;
	struct sc_ctx c;
	static const unsigned char body[] = "hello\r\n";

	if (load(&cfg, &chain, BASE "filter {\n module = \"%s\"\n tag = t1\n"
	    " reject_connect_from = \"192.0.2.1\"\n reject_helo = bad.example\n"
	    " reject_mail = \"spam@example.org\"\n reject_rcpt = \"no@example.org\"\n"
	    " tempfail_rcpt = \"later@example.org\"\n"
	    " verdict_subject = [ \"SPAM=reject\", \"HOLD=quarantine\", \"LATER=tempfail\" ]\n"
	    " add_header = \"X-Added: yes\"\n insert_header = \"X-First: 1\"\n"
	    " change_header = \"Subject: changed\"\n delete_header = X-Drop\n"
	    " replace_body = \"new\\n\"\n change_from = \"new@example.org\"\n"
	    " add_rcpt = \"extra@example.org\"\n del_rcpt = \"gone@example.org\"\n"
	    " trace = true\n}\n", so("testfilter")) != 0) {
		ok(0, "testfilter with every option loads");
		diag("%s", errbuf);
		return;
	}
	d = chain.v[0].desc;

	memset(&c, 0, sizeof(c));
	c.instance = chain.v[0].instance;
	c.client_addr = "192.0.2.1";
	is_int(d->connect(&c), SC_REJECT, "connect from reject_connect_from");
	is_str(c.reply, "554 5.7.1 t1: connection refused", "connect reply");
	d->close(&c);
	ok(c.state == NULL, "close() clears the state");

	memset(&c, 0, sizeof(c));
	c.instance = chain.v[0].instance;
	c.client_addr = "127.0.0.1";
	is_int(d->connect(&c), SC_CONTINUE, "connect");
	is_int(d->helo(&c, "BAD.example"), SC_REJECT, "helo reject_helo");
	is_str(c.reply, "550 5.7.1 t1: helo refused", "helo reply");
	is_int(d->helo(&c, "mx.example"), SC_CONTINUE, "helo");
	is_int(d->mail(&c, "<Spam@Example.ORG>", ""), SC_REJECT, "mail reject_mail");
	is_str(c.reply, "550 5.7.1 t1: sender refused", "mail reply");
	is_int(d->mail(&c, "a@example.org", "BODY=8BITMIME"), SC_CONTINUE, "mail");
	is_int(d->rcpt(&c, "no@example.org", ""), SC_REJECT, "rcpt reject_rcpt");
	is_str(c.reply, "550 5.7.1 t1: recipient refused", "rcpt reply");
	is_int(d->rcpt(&c, "later@example.org", ""), SC_TEMPFAIL, "rcpt tempfail_rcpt");
	is_str(c.reply, "451 4.7.1 t1: recipient temporarily refused", "tempfail reply");
	c.reply[0] = '\0';
	is_int(d->rcpt(&c, "b@example.org", ""), SC_CONTINUE, "rcpt");
	is_int(d->rcpt(&c, "c@example.org", ""), SC_CONTINUE, "rcpt 2");
	is_int(d->data(&c), SC_CONTINUE, "data");
	is_int(d->header(&c, "From", " a@example.org"), SC_CONTINUE, "header From");
	is_int(d->header(&c, "Subject", " buy SPAM now"), SC_CONTINUE, "header Subject");
	is_int(d->eoh(&c), SC_CONTINUE, "eoh");
	is_int(d->body(&c, body, sizeof(body) - 1), SC_CONTINUE, "body");
	is_str(c.reply, "", "no reply so far");
	is_int(d->eom(&c), SC_REJECT, "eom: subject SPAM");
	is_str(c.reply, "550 5.7.1 t1: subject SPAM", "eom reply");
	is_str(c.changes,
	    "from new@example.org -\n"
	    "add_rcpt extra@example.org -\n"
	    "del_rcpt gone@example.org\n"
	    "delete X-Drop 1\n"
	    "change Subject 1: changed\n"
	    "add X-Added: yes\n"
	    "insert 0 X-First: 1\n"
	    "body new\n\n"
	    "add X-Testfilter-t1: helo=mx.example from=a@example.org rcpts=2 headers=2 body=7\n",
	    "eom changes, in order, the trace last");

	/* The next transaction starts afresh. */
	c.changes[0] = c.reply[0] = '\0';
	is_int(d->mail(&c, "", ""), SC_CONTINUE, "mail <>");
	is_int(d->rcpt(&c, "b@example.org", ""), SC_CONTINUE, "rcpt");
	is_int(d->header(&c, "subject", " HOLD this"), SC_CONTINUE, "header subject");
	is_int(d->eom(&c), SC_QUARANTINE, "eom: subject HOLD");
	ok(strstr(c.changes, "from= rcpts=1 headers=1 body=0\n") != NULL, "trace of the second");
	is_str(c.reply, "", "no reply for quarantine");

	/* abort() forgets the message. */
	c.changes[0] = '\0';
	d->mail(&c, "x@example.org", "");
	d->header(&c, "Subject", " LATER");
	d->abort(&c);
	is_int(d->eom(&c), SC_CONTINUE, "after abort(), the subject is forgotten");
	ok(strstr(c.changes, "from= rcpts=0 headers=0 body=0\n") != NULL, "trace after abort()");
	d->close(&c);
	modules_unload(&chain);
	config_free(cfg);

	/* Defaults: no verdicts, no changes. */
	if (load(&cfg, &chain, BASE "filter { module = \"%s\" }\n", so("testfilter")) != 0) {
		ok(0, "plain testfilter loads");
		return;
	}
	d = chain.v[0].desc;
	memset(&c, 0, sizeof(c));
	c.instance = chain.v[0].instance;
	c.client_addr = "192.0.2.1";
	ok(d->connect(&c) == SC_CONTINUE && d->helo(&c, "x") == SC_CONTINUE &&
	    d->mail(&c, "a@b", "") == SC_CONTINUE && d->rcpt(&c, "c@d", "") == SC_CONTINUE &&
	    d->header(&c, "Subject", " SPAM") == SC_CONTINUE && d->eom(&c) == SC_CONTINUE,
	    "defaults: every hook continues");
	is_str(c.changes, "", "defaults: no changes");
	is_str(c.reply, "", "defaults: no reply");
	d->close(&c);
	modules_unload(&chain);
	config_free(cfg);
}

/* Run the loop until the module's timer has fired; the number of resume() calls. */
static int
run_until_resumed(struct sc_ctx *c)
{
	int before = c->resumed;

	c->reply[0] = '\0';
	uv_run(c->loop, UV_RUN_DEFAULT);
	return c->resumed - before;
}

/* testfilter's pending mode: SC_PENDING, then resume() from a libuv timer. */
static void
test_testfilter_pending(void)
{
	struct filter_chain chain;
	const struct sc_filter *d;
	struct config *cfg;
	struct sc_ctx c;
	uv_loop_t loop;

	if (load(&cfg, &chain, BASE "filter { module = \"%s\"; pending = true; tag = p;\n"
	    " reject_rcpt = \"no@example.org\"; verdict_subject = \"X=discard\";\n"
	    " add_header = \"X-P: 1\"; trace = true }\n", so("testfilter")) != 0) {
		ok(0, "pending testfilter loads");
		diag("%s", errbuf);
		return;
	}
	uv_loop_init(&loop);
	d = chain.v[0].desc;
	memset(&c, 0, sizeof(c));
	c.instance = chain.v[0].instance;
	c.client_addr = "127.0.0.1";
	c.loop = &loop;

	is_int(d->connect(&c), SC_PENDING, "pending: connect answers later");
	is_int(c.resumed, 0, "pending: not resumed inside the hook");
	is_int(run_until_resumed(&c), 1, "pending: one resume() from the timer");
	is_int(c.verdict, SC_CONTINUE, "pending: connect resumes with CONTINUE");
	is_int(d->mail(&c, "a@example.org", ""), SC_PENDING, "pending: mail");
	run_until_resumed(&c);
	is_int(d->rcpt(&c, "no@example.org", ""), SC_PENDING, "pending: rcpt");
	is_int(run_until_resumed(&c), 1, "pending: rcpt resumed");
	is_int(c.verdict, SC_REJECT, "pending: rcpt refused on resume");
	is_str(c.reply, "550 5.7.1 p: recipient refused", "pending: reply set before resume()");
	d->rcpt(&c, "b@example.org", "");
	run_until_resumed(&c);
	is_int(d->header(&c, "Subject", " X"), SC_PENDING, "pending: header");
	run_until_resumed(&c);
	is_int(d->eom(&c), SC_PENDING, "pending: eom");
	is_str(c.changes, "", "pending: no change before the timer");
	is_int(run_until_resumed(&c), 1, "pending: eom resumed");
	is_int(c.verdict, SC_DISCARD, "pending: eom verdict on resume");
	is_str(c.changes, "add X-P: 1\nadd X-Testfilter-p: helo= from=a@example.org rcpts=1 "
	    "headers=1 body=0\n", "pending: changes made in the timer, before resume()");

	/* abort() cancels a pending answer. */
	d->mail(&c, "a@example.org", "");
	run_until_resumed(&c);
	is_int(d->rcpt(&c, "b@example.org", ""), SC_PENDING, "pending: another rcpt");
	d->abort(&c);
	is_int(run_until_resumed(&c), 0, "pending: no resume() after abort()");

	/* close() cancels too, and frees the state once the timer is closed. */
	is_int(d->data(&c), SC_PENDING, "pending: data");
	d->close(&c);
	is_int(run_until_resumed(&c), 0, "pending: no resume() after close()");
	is_int(uv_loop_close(&loop), 0, "pending: the module closed its timer");
	modules_unload(&chain);
	config_free(cfg);
}

int
main(void)
{
	const char *builddir = getenv("SMTPCHAIN_BUILDDIR");

	if (builddir == NULL || *builddir == '\0') {
		printf("1..0 # SKIP SMTPCHAIN_BUILDDIR not set\n");
		return 0;
	}
	snprintf(libs, sizeof(libs), "%s/t/modules/.libs", builddir);
	if (access(so("testfilter"), R_OK) == -1) {
		printf("1..0 # SKIP %s not built (make check builds it)\n", so("testfilter"));
		return 0;
	}
	test_load();
	test_names();
	test_load_errors();
	test_init_errors();
	test_chain();
	test_testfilter_hooks();
	test_testfilter_pending();
	return done_testing();
}
