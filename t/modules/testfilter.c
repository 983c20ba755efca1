/*
 * testfilter.c - a filter module for the tests: every verdict and every
 * message change of the module ABI, driven by its options.
 *
 * SYNOPSIS
 *	filter {
 *		module = "/path/to/testfilter.so";
 *		tag = "one";				# default "testfilter"
 *		reject_connect_from = "127.0.0.1";	# 554 5.7.1 "<tag>: connection refused"
 *		reject_helo = "bad.example";		# 550 5.7.1 "<tag>: helo refused"
 *		reject_mail = "spammer@example.org";	# 550 5.7.1 "<tag>: sender refused"
 *		reject_rcpt = "nobody@example.org";	# 550 5.7.1 "<tag>: recipient refused"
 *		tempfail_rcpt = "later@example.org";	# 451 4.7.1 "<tag>: recipient temporarily refused"
 *		verdict_subject = [ "SPAM=reject", "HOLD=quarantine" ];
 *		add_header = "X-Added: yes";		# at eom, appended
 *		insert_header = "X-First: yes";		# at eom, at index 0
 *		change_header = "Subject: changed";	# the first Subject
 *		delete_header = "X-Drop";		# the first X-Drop
 *		replace_body = "new body\n";
 *		change_from = "new@example.org";
 *		add_rcpt = "extra@example.org";
 *		del_rcpt = "gone@example.org";
 *		trace = true;		# add "X-Testfilter-<tag>: helo=H from=F rcpts=N headers=N body=N"
 *		trace_get = [ "cert_subject", "verify" ];	# at eom, add "X-Testfilter-<tag>-Get:
 *					# cert_subject=V verify=V" (host->get(); "-" when NULL)
 *		pending = true;		# answer every hook later, from a 10 ms libuv timer
 *		init_gate = "/path";	# init() waits (600 s at most) until that file exists
 *		probe_write = "/path";	# init() must be able to read it; at eom, add
 *					# "X-Testfilter-<tag>-Probe: open=RESULT", RESULT
 *					# what open(path, O_WRONLY) did: "ok" or the errno's
 *					# name (the workers' privileges, t/89-privsep.t)
 *		needs = [ "headers", "body" ];	# the default; sets sc_filter.needs
 *		hooks = [ "connect", "rcpt" ];	# the hooks it has; default all
 *	}
 *
 * DESCRIPTION
 *	Addresses compare without case and without angle brackets.  A
 *	verdict_subject entry is "WORD=VERDICT", VERDICT one of reject,
 *	tempfail, discard, quarantine, accept: the first entry whose WORD is
 *	in a Subject header decides the verdict at eom (reject and tempfail
 *	say 550 5.7.1 / 451 4.7.1 "<tag>: subject WORD").  The message
 *	changes are made at eom, in the order of the list above, the trace
 *	header last; a change the host refuses is logged as a warning.
 *
 *	The trace counts what this module saw through its hooks in the
 *	current transaction: the HELO name and sender (empty if none), the
 *	recipients it did not refuse itself, the headers and the body octets
 *	(so a later instance shows the changes of an earlier one).
 *
 *	With pending, each hook returns SC_PENDING and answers through
 *	host->resume() from a timer; the reply and, at eom, the message
 *	changes are made in the timer's callback, just before resume(), as a
 *	milter's answer would be.  abort() and close() stop the timer.  The
 *	libuv functions are weak references, resolved in the host process
 *	(the daemon links libuv), so the module loads where there is no
 *	libuv, and init() fails only if pending is asked for there.
 *
 *	needs and hooks set the exported descriptor's needs field and hook
 *	pointers in init() (hooks: connect, helo, mail, rcpt, data, header,
 *	eoh, body, eom; abort and close are always there).  smtpchain reads
 *	the descriptor after init() returns, so each filter {} block gets its
 *	own values; an envelope-only instance (no header/eoh/body/eom, needs
 *	= []) lets the proxy stream the message.
 *
 *	Only <smtpchain/filter.h>, libc and libuv's header are used: never the
 *	daemon's own headers.  init() only calls host->opt_*.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <uv.h>

#include <smtpchain/filter.h>

#pragma weak uv_timer_init
#pragma weak uv_timer_start
#pragma weak uv_timer_stop
#pragma weak uv_close

#define PENDING_MS	10

/* A "Name: value" option, split (value from after the colon). */
struct tf_header {
	char		*name;
	const char	*value;
};

/* A verdict_subject entry. */
struct tf_rule {
	char		*word;
	enum sc_verdict	 verdict;
};

/* One filter {} block's instance. */
struct tf {
	const char	*tag;
	const char	*reject_connect_from, *reject_helo, *reject_mail;
	const char	*reject_rcpt, *tempfail_rcpt;
	struct tf_rule	*rules;
	size_t		 nrules;
	struct tf_header add, insert, change;
	const char	*delete_header, *replace_body;
	const char	*change_from, *add_rcpt, *del_rcpt;
	int		 trace, pending;
	char		*trace_name;	/* "X-Testfilter-<tag>" */
	char		*get_name;	/* "X-Testfilter-<tag>-Get" */
	const char *const *get;	/* trace_get: host->get() names */
	size_t		 nget;
	const char	*probe_write;	/* a file to try to open for writing at eom */
};

/* Per session (host->state()). */
struct tf_session {
	struct sc_ctx	*c;
	struct tf	*tf;
	char		*helo, *from;
	unsigned	 rcpts, headers;
	unsigned long long body;
	const struct tf_rule *rule;	/* the verdict_subject entry that matched */

	/* The answer of the current hook, given now or from the timer. */
	enum sc_verdict	 verdict;
	int		 code;		/* 0: no set_reply() */
	const char	*enhanced;
	char		 text[512];
	bool		 at_eom;	/* make the eom changes before answering */

	bool		 timer_ready;
	uv_timer_t	 timer;
};

static const struct sc_host *host;

/* Exported writable: init() sets needs from the options. */
struct sc_filter smtpchain_filter;

/* --- options ------------------------------------------------------------ */

/* Split "Name: value" for a header option; -1 after opt_error(). */
static int
tf_header_opt(const struct sc_options *o, const char *key, struct tf_header *h)
{
	const char *s, *colon;
	int rc;

	if ((rc = host->opt_string(o, key, &s)) != 0)
		return rc == 1 ? 0 : -1;
	colon = strchr(s, ':');
	if (colon == NULL || colon == s || strcspn(s, " \t") < (size_t)(colon - s))
		return host->opt_error(o, key, "expected \"Name: value\", got \"%s\"", s);
	h->name = strndup(s, (size_t)(colon - s));
	h->value = colon + 1;
	return h->name ? 0 : host->opt_error(o, key, "out of memory");
}

/* A verdict by name. */
static int
tf_verdict(const char *name, enum sc_verdict *v)
{
	static const struct {
		const char	*name;
		enum sc_verdict	 v;
	} names[] = {
		{ "reject", SC_REJECT }, { "tempfail", SC_TEMPFAIL },
		{ "discard", SC_DISCARD }, { "quarantine", SC_QUARANTINE },
		{ "accept", SC_ACCEPT },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i].name) == 0) {
			*v = names[i].v;
			return 0;
		}
	return -1;
}

/* verdict_subject: "WORD=VERDICT" entries. */
static int
tf_rules(const struct sc_options *o, struct tf *tf)
{
	const char *const *list;
	const char *eq;
	size_t n;
	int rc;

	if ((rc = host->opt_list(o, "verdict_subject", &list, &n)) != 0)
		return rc == 1 ? 0 : -1;
	if ((tf->rules = calloc(n + 1, sizeof(*tf->rules))) == NULL)
		return host->opt_error(o, "verdict_subject", "out of memory");
	for (size_t i = 0; i < n; i++) {
		struct tf_rule *r = &tf->rules[i];

		if ((eq = strrchr(list[i], '=')) == NULL || eq == list[i] ||
		    tf_verdict(eq + 1, &r->verdict) == -1)
			return host->opt_error(o, "verdict_subject", "bad entry \"%s\" "
			    "(expected WORD=reject|tempfail|discard|quarantine|accept)",
			    list[i]);
		if ((r->word = strndup(list[i], (size_t)(eq - list[i]))) == NULL)
			return host->opt_error(o, "verdict_subject", "out of memory");
		tf->nrules++;
	}
	return 0;
}

/* needs: "headers" and/or "body", into the descriptor. */
static int
tf_needs(const struct sc_options *o)
{
	const char *const *list;
	uint32_t needs = 0;
	size_t n;
	int rc;

	if ((rc = host->opt_list(o, "needs", &list, &n)) == -1)
		return -1;
	if (rc == 1) {
		smtpchain_filter.needs = SC_NEED_HEADERS | SC_NEED_BODY;
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(list[i], "headers") == 0)
			needs |= SC_NEED_HEADERS;
		else if (strcmp(list[i], "body") == 0)
			needs |= SC_NEED_BODY;
		else
			return host->opt_error(o, "needs", "unknown need \"%s\" "
			    "(expected headers or body)", list[i]);
	}
	smtpchain_filter.needs = needs;
	return 0;
}

static enum sc_verdict tf_connect(struct sc_ctx *);
static enum sc_verdict tf_helo(struct sc_ctx *, const char *);
static enum sc_verdict tf_mail(struct sc_ctx *, const char *, const char *);
static enum sc_verdict tf_rcpt(struct sc_ctx *, const char *, const char *);
static enum sc_verdict tf_data(struct sc_ctx *);
static enum sc_verdict tf_header(struct sc_ctx *, const char *, const char *);
static enum sc_verdict tf_eoh(struct sc_ctx *);
static enum sc_verdict tf_body(struct sc_ctx *, const unsigned char *, size_t);
static enum sc_verdict tf_eom(struct sc_ctx *);

/* hooks: which hook pointers the descriptor gets (all when absent). */
static int
tf_hooks(const struct sc_options *o)
{
	static const char *const names[] = {
		"connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body", "eom",
	};
	const size_t nnames = sizeof(names) / sizeof(names[0]);
	const char *const *list;
	unsigned mask = 0;
	size_t n, j;
	int rc;

	if ((rc = host->opt_list(o, "hooks", &list, &n)) == -1)
		return -1;
	if (rc == 1)
		mask = (1u << nnames) - 1;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		for (j = 0; j < nnames && strcmp(list[i], names[j]) != 0; j++)
			continue;
		if (j == nnames)
			return host->opt_error(o, "hooks", "unknown hook \"%s\"", list[i]);
		mask |= 1u << j;
	}
	smtpchain_filter.connect = mask & 0x001 ? tf_connect : NULL;
	smtpchain_filter.helo = mask & 0x002 ? tf_helo : NULL;
	smtpchain_filter.mail = mask & 0x004 ? tf_mail : NULL;
	smtpchain_filter.rcpt = mask & 0x008 ? tf_rcpt : NULL;
	smtpchain_filter.data = mask & 0x010 ? tf_data : NULL;
	smtpchain_filter.header = mask & 0x020 ? tf_header : NULL;
	smtpchain_filter.eoh = mask & 0x040 ? tf_eoh : NULL;
	smtpchain_filter.body = mask & 0x080 ? tf_body : NULL;
	smtpchain_filter.eom = mask & 0x100 ? tf_eom : NULL;
	return 0;
}

static void tf_fini(void *instance);

/* Read every option; only host->opt_* is called here. */
static int
tf_init(const struct sc_host *h, const struct sc_options *o, void **instance,
    char *err, size_t errlen)
{
	static const struct {
		const char	*key;
		size_t		 offset;
	} strings[] = {
		{ "tag", offsetof(struct tf, tag) },
		{ "reject_connect_from", offsetof(struct tf, reject_connect_from) },
		{ "reject_helo", offsetof(struct tf, reject_helo) },
		{ "reject_mail", offsetof(struct tf, reject_mail) },
		{ "reject_rcpt", offsetof(struct tf, reject_rcpt) },
		{ "tempfail_rcpt", offsetof(struct tf, tempfail_rcpt) },
		{ "delete_header", offsetof(struct tf, delete_header) },
		{ "replace_body", offsetof(struct tf, replace_body) },
		{ "change_from", offsetof(struct tf, change_from) },
		{ "add_rcpt", offsetof(struct tf, add_rcpt) },
		{ "del_rcpt", offsetof(struct tf, del_rcpt) },
		{ "probe_write", offsetof(struct tf, probe_write) },
	};
	struct tf *tf;
	const char *init_gate = NULL;
	size_t len;

	host = h;
	if ((tf = calloc(1, sizeof(*tf))) == NULL) {
		snprintf(err, errlen, "testfilter: out of memory");
		return -1;
	}
	tf->tag = "testfilter";
	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
		if (h->opt_string(o, strings[i].key,
		    (const char **)((char *)tf + strings[i].offset)) == -1)
			goto fail;
	if (tf_header_opt(o, "add_header", &tf->add) == -1 ||
	    tf_header_opt(o, "insert_header", &tf->insert) == -1 ||
	    tf_header_opt(o, "change_header", &tf->change) == -1 ||
	    tf_rules(o, tf) == -1 || tf_needs(o) == -1 || tf_hooks(o) == -1 ||
	    h->opt_string(o, "init_gate", &init_gate) == -1 ||
	    h->opt_bool(o, "trace", &tf->trace) == -1 ||
	    h->opt_bool(o, "pending", &tf->pending) == -1 ||
	    h->opt_list(o, "trace_get", &tf->get, &tf->nget) == -1)
		goto fail;
	/* probe_write: init() runs where the module's files can be read. */
	if (tf->probe_write != NULL) {
		int fd = open(tf->probe_write, O_RDONLY | O_CLOEXEC);

		if (fd == -1) {
			h->opt_error(o, "probe_write", "cannot read %s in init()", tf->probe_write);
			goto fail;
		}
		close(fd);
	}
	/*
	 * A slow init, as long as the test wants: until the gate file exists,
	 * 600 s at most (the test's steps meanwhile may take minutes under
	 * valgrind on a loaded machine; the proxy's timeout.module_check or
	 * its stop ends a check that waits longer).
	 */
	for (int i = 0; init_gate != NULL && i < 60000 && access(init_gate, F_OK) != 0; i++)
		usleep(10000);
	if (tf->pending && (uv_timer_init == NULL || uv_timer_start == NULL ||
	    uv_timer_stop == NULL || uv_close == NULL)) {
		h->opt_error(o, "pending", "needs libuv in the host process");
		goto fail;
	}
	len = strlen("X-Testfilter-") + strlen(tf->tag) + 1;
	if ((tf->trace_name = malloc(len)) == NULL) {
		snprintf(err, errlen, "testfilter: out of memory");
		goto fail;
	}
	snprintf(tf->trace_name, len, "X-Testfilter-%s", tf->tag);
	if ((tf->get_name = malloc(len + 4)) == NULL) {
		snprintf(err, errlen, "testfilter: out of memory");
		goto fail;
	}
	snprintf(tf->get_name, len + 4, "X-Testfilter-%s-Get", tf->tag);
	*instance = tf;
	return 0;

fail:
	tf_fini(tf);
	return -1;
}

static void
tf_fini(void *instance)
{
	struct tf *tf = instance;

	if (tf == NULL)
		return;
	for (size_t i = 0; i < tf->nrules; i++)
		free(tf->rules[i].word);
	free(tf->rules);
	free(tf->add.name);
	free(tf->insert.name);
	free(tf->change.name);
	free(tf->trace_name);
	free(tf->get_name);
	free(tf);
}

/* --- sessions ----------------------------------------------------------- */

/* Replace a saved string with a copy of s (NULL: forget it). */
static void
tf_set(char **dst, const char *s)
{
	free(*dst);
	*dst = s ? strdup(s) : NULL;
}

/* Forget the current transaction. */
static void
tf_reset_message(struct tf_session *ss)
{
	tf_set(&ss->from, NULL);
	ss->rcpts = ss->headers = 0;
	ss->body = 0;
	ss->rule = NULL;
}

static void tf_timer_fired(uv_timer_t *t);

/* This session's state, made on first use. */
static struct tf_session *
tf_session(struct sc_ctx *c)
{
	void **slot = host->state(c);
	struct tf_session *ss = *slot;

	if (ss != NULL)
		return ss;
	if ((ss = calloc(1, sizeof(*ss))) == NULL)
		return NULL;
	ss->c = c;
	ss->tf = host->instance(c);
	if (ss->tf->pending) {
		uv_timer_init(host->loop(c), &ss->timer);
		ss->timer.data = ss;
		ss->timer_ready = true;
	}
	*slot = ss;
	return ss;
}

/* Whether two addresses are the same, without case and angle brackets. */
static bool
tf_addr_is(const char *addr, const char *want)
{
	size_t alen, wlen;

	if (addr == NULL || want == NULL)
		return false;
	if (*addr == '<')
		addr++;
	if (*want == '<')
		want++;
	alen = strcspn(addr, ">");
	wlen = strcspn(want, ">");
	return alen == wlen && strncasecmp(addr, want, alen) == 0;
}

/* Set the answer of the current hook. */
static void __attribute__((format(printf, 5, 6)))
tf_answer(struct tf_session *ss, enum sc_verdict v, int code, const char *enhanced,
    const char *fmt, ...)
{
	va_list ap;

	ss->verdict = v;
	ss->code = code;
	ss->enhanced = enhanced;
	ss->text[0] = '\0';
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(ss->text, sizeof(ss->text), fmt, ap);
		va_end(ap);
	}
}

/* Log a change the host refused. */
static void
tf_check(struct tf_session *ss, int rc, const char *what)
{
	if (rc != 0)
		host->log(ss->c, SC_LOG_WARNING, "testfilter %s: %s refused", ss->tf->tag, what);
}

/* The eom changes, in the documented order, the trace header last. */
static void
tf_eom_changes(struct tf_session *ss)
{
	struct sc_ctx *c = ss->c;
	struct tf *tf = ss->tf;
	char trace[1024];

	if (tf->change_from)
		tf_check(ss, host->change_from(c, tf->change_from, NULL), "change_from");
	if (tf->add_rcpt)
		tf_check(ss, host->add_rcpt(c, tf->add_rcpt, NULL), "add_rcpt");
	if (tf->del_rcpt)
		tf_check(ss, host->del_rcpt(c, tf->del_rcpt), "del_rcpt");
	if (tf->delete_header)
		tf_check(ss, host->change_header(c, tf->delete_header, 1, NULL), "delete_header");
	if (tf->change.name)
		tf_check(ss, host->change_header(c, tf->change.name, 1, tf->change.value),
		    "change_header");
	if (tf->add.name)
		tf_check(ss, host->add_header(c, tf->add.name, tf->add.value), "add_header");
	if (tf->insert.name)
		tf_check(ss, host->insert_header(c, 0, tf->insert.name, tf->insert.value),
		    "insert_header");
	if (tf->replace_body)
		tf_check(ss, host->replace_body(c, tf->replace_body, strlen(tf->replace_body)),
		    "replace_body");
	if (tf->trace) {
		snprintf(trace, sizeof(trace), " helo=%s from=%s rcpts=%u headers=%u body=%llu",
		    ss->helo ? ss->helo : "", ss->from ? ss->from : "", ss->rcpts,
		    ss->headers, ss->body);
		tf_check(ss, host->add_header(c, tf->trace_name, trace), "trace header");
	}
	if (tf->probe_write) {
		int fd = open(tf->probe_write, O_WRONLY | O_APPEND | O_CLOEXEC);
		const char *r = fd >= 0 ? "ok" : errno == EACCES ? "EACCES" : errno == EPERM ?
		    "EPERM" : errno == ENOENT ? "ENOENT" : "other";
		char name[128];

		if (fd >= 0)
			close(fd);
		snprintf(name, sizeof(name), "%s-Probe", tf->trace_name);
		snprintf(trace, sizeof(trace), " open=%s", r);
		tf_check(ss, host->add_header(c, name, trace), "probe_write header");
	}
	if (tf->nget > 0) {
		size_t n = 0;

		for (size_t i = 0; i < tf->nget && n < sizeof(trace); i++) {
			const char *v = host->get(c, tf->get[i]);
			int k = snprintf(trace + n, sizeof(trace) - n, " %s=%s", tf->get[i],
			    v ? v : "-");

			n += k > 0 ? (size_t)k : 0;
		}
		tf_check(ss, host->add_header(c, tf->get_name, trace), "trace_get header");
	}
}

/* Give the answer: the changes of an eom, the reply, the verdict. */
static enum sc_verdict
tf_settle(struct tf_session *ss)
{
	if (ss->at_eom) {
		ss->at_eom = false;
		tf_eom_changes(ss);
	}
	if (ss->code != 0 &&
	    host->set_reply(ss->c, ss->code, ss->enhanced, ss->text) != 0)
		host->log(ss->c, SC_LOG_WARNING, "testfilter %s: set_reply refused",
		    ss->tf->tag);
	return ss->verdict;
}

/* The pending answer is due. */
static void
tf_timer_fired(uv_timer_t *t)
{
	struct tf_session *ss = t->data;

	host->resume(ss->c, tf_settle(ss));
	/* ss may be closed now (freed later, by uv_close's callback). */
}

/* Answer now, or SC_PENDING and from the timer with pending. */
static enum sc_verdict
tf_respond(struct tf_session *ss)
{
	if (!ss->tf->pending)
		return tf_settle(ss);
	uv_timer_start(&ss->timer, tf_timer_fired, PENDING_MS, 0);
	return SC_PENDING;
}

/* --- hooks -------------------------------------------------------------- */

static enum sc_verdict
tf_connect(struct sc_ctx *c)
{
	struct tf_session *ss = tf_session(c);

	if (ss == NULL)
		return SC_TEMPFAIL;
	if (tf_addr_is(host->get(c, "client_addr"), ss->tf->reject_connect_from))
		tf_answer(ss, SC_REJECT, 554, "5.7.1", "%s: connection refused", ss->tf->tag);
	else
		tf_answer(ss, SC_CONTINUE, 0, NULL, NULL);
	return tf_respond(ss);
}

static enum sc_verdict
tf_helo(struct sc_ctx *c, const char *name)
{
	struct tf_session *ss = tf_session(c);

	if (ss == NULL)
		return SC_TEMPFAIL;
	tf_set(&ss->helo, name);
	if (name && ss->tf->reject_helo && strcasecmp(name, ss->tf->reject_helo) == 0)
		tf_answer(ss, SC_REJECT, 550, "5.7.1", "%s: helo refused", ss->tf->tag);
	else
		tf_answer(ss, SC_CONTINUE, 0, NULL, NULL);
	return tf_respond(ss);
}

static enum sc_verdict
tf_mail(struct sc_ctx *c, const char *addr, const char *params)
{
	struct tf_session *ss = tf_session(c);

	(void)params;
	if (ss == NULL)
		return SC_TEMPFAIL;
	tf_reset_message(ss);
	tf_set(&ss->from, addr);
	if (tf_addr_is(addr, ss->tf->reject_mail))
		tf_answer(ss, SC_REJECT, 550, "5.7.1", "%s: sender refused", ss->tf->tag);
	else
		tf_answer(ss, SC_CONTINUE, 0, NULL, NULL);
	return tf_respond(ss);
}

static enum sc_verdict
tf_rcpt(struct sc_ctx *c, const char *addr, const char *params)
{
	struct tf_session *ss = tf_session(c);

	(void)params;
	if (ss == NULL)
		return SC_TEMPFAIL;
	if (tf_addr_is(addr, ss->tf->reject_rcpt)) {
		tf_answer(ss, SC_REJECT, 550, "5.7.1", "%s: recipient refused", ss->tf->tag);
	} else if (tf_addr_is(addr, ss->tf->tempfail_rcpt)) {
		tf_answer(ss, SC_TEMPFAIL, 451, "4.7.1", "%s: recipient temporarily refused",
		    ss->tf->tag);
	} else {
		ss->rcpts++;
		tf_answer(ss, SC_CONTINUE, 0, NULL, NULL);
	}
	return tf_respond(ss);
}

static enum sc_verdict
tf_data(struct sc_ctx *c)
{
	struct tf_session *ss = tf_session(c);

	if (ss == NULL)
		return SC_TEMPFAIL;
	tf_answer(ss, SC_CONTINUE, 0, NULL, NULL);
	return tf_respond(ss);
}

static enum sc_verdict
tf_header(struct sc_ctx *c, const char *name, const char *value)
{
	struct tf_session *ss = tf_session(c);

	if (ss == NULL)
		return SC_TEMPFAIL;
	ss->headers++;
	if (ss->rule == NULL && strcasecmp(name, "Subject") == 0)
		for (size_t i = 0; i < ss->tf->nrules; i++)
			if (strstr(value, ss->tf->rules[i].word) != NULL) {
				ss->rule = &ss->tf->rules[i];
				break;
			}
	tf_answer(ss, SC_CONTINUE, 0, NULL, NULL);
	return tf_respond(ss);
}

static enum sc_verdict
tf_eoh(struct sc_ctx *c)
{
	struct tf_session *ss = tf_session(c);

	if (ss == NULL)
		return SC_TEMPFAIL;
	tf_answer(ss, SC_CONTINUE, 0, NULL, NULL);
	return tf_respond(ss);
}

static enum sc_verdict
tf_body(struct sc_ctx *c, const unsigned char *p, size_t n)
{
	struct tf_session *ss = tf_session(c);

	(void)p;
	if (ss == NULL)
		return SC_TEMPFAIL;
	ss->body += n;
	tf_answer(ss, SC_CONTINUE, 0, NULL, NULL);
	return tf_respond(ss);
}

static enum sc_verdict
tf_eom(struct sc_ctx *c)
{
	struct tf_session *ss = tf_session(c);
	const struct tf_rule *r;

	if (ss == NULL)
		return SC_TEMPFAIL;
	r = ss->rule;
	if (r != NULL && r->verdict == SC_REJECT)
		tf_answer(ss, SC_REJECT, 550, "5.7.1", "%s: subject %s", ss->tf->tag, r->word);
	else if (r != NULL && r->verdict == SC_TEMPFAIL)
		tf_answer(ss, SC_TEMPFAIL, 451, "4.7.1", "%s: subject %s", ss->tf->tag, r->word);
	else
		tf_answer(ss, r ? r->verdict : SC_CONTINUE, 0, NULL, NULL);
	ss->at_eom = true;
	return tf_respond(ss);
}

/* The message ended elsewhere: forget it, cancel a pending answer. */
static void
tf_abort(struct sc_ctx *c)
{
	struct tf_session *ss = *host->state(c);

	if (ss == NULL)
		return;
	if (ss->timer_ready)
		uv_timer_stop(&ss->timer);
	ss->at_eom = false;
	tf_reset_message(ss);
}

/* Free the session state once libuv is done with the timer. */
static void
tf_free_session(struct tf_session *ss)
{
	free(ss->helo);
	free(ss->from);
	free(ss);
}

static void
tf_timer_closed(uv_handle_t *h)
{
	tf_free_session(h->data);
}

static void
tf_close(struct sc_ctx *c)
{
	void **slot = host->state(c);
	struct tf_session *ss = *slot;

	*slot = NULL;
	if (ss == NULL)
		return;
	if (ss->timer_ready) {
		uv_timer_stop(&ss->timer);
		uv_close((uv_handle_t *)&ss->timer, tf_timer_closed);
	} else {
		tf_free_session(ss);
	}
}

struct sc_filter smtpchain_filter = {
	.abi = SC_FILTER_ABI,
	.size = sizeof(struct sc_filter),
	.name = "testfilter",
	.needs = SC_NEED_HEADERS | SC_NEED_BODY,
	.init = tf_init,
	.fini = tf_fini,
	.connect = tf_connect,
	.helo = tf_helo,
	.mail = tf_mail,
	.rcpt = tf_rcpt,
	.data = tf_data,
	.header = tf_header,
	.eoh = tf_eoh,
	.body = tf_body,
	.eom = tf_eom,
	.abort = tf_abort,
	.close = tf_close,
};
