/*
 * test_filter.c - unit tests for filter.c: the chain of filter modules as
 * a session drives it, in the test's own process (proxytest.h).
 *
 * Two modules, "first" and "second", are registered directly (their
 * descriptors are in this file); each records every hook call in a trace
 * and answers what the test tells it to.  Checked: hooks run in chain
 * order, step by step, the held message through one module before the
 * next; ACCEPT skips the rest of the chain for the message; REJECT and
 * TEMPFAIL refuse the step with the module's reply or the default;
 * DISCARD and QUARANTINE decide the message's outcome (the backend gets no
 * message; a quarantined one is written to quarantine_dir); a PENDING
 * answer suspends the chain until resume() (from a libuv timer, as a
 * milter's reply would come, or from inside the hook); a header added and the body replaced by one
 * module are what the next one sees and what the backend gets; the
 * envelope changes (change_from, add_rcpt, del_rcpt) reach the backend.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "proxytest.h"
#include "tap.h"

#define CONFIG	"xclient = false;\nxforward = false;\n"

/* What a module answers; reset before each test. */
struct behaviour {
	enum sc_verdict	 mail, rcpt, eom;
	const char	*rcpt_only;	/* rcpt's verdict only for this address */
	const char	*reply;		/* set_reply() text with the verdict, "CODE X.Y.Z text" */
	bool		 pending_rcpt;	/* rcpt answers later, through resume() */
	bool		 resume_inside;	/* rcpt calls resume() itself, then returns PENDING */
	bool		 eom_changes;	/* at eom: add a header, replace the body, change the envelope */
};

struct module {
	const char	*name;
	struct behaviour b;
	uv_timer_t	 timer;		/* for a pending answer */
	struct sc_ctx	*pending_ctx;
	enum sc_verdict	 pending_v;
};

static struct module mods[2] = { { .name = "first" }, { .name = "second" } };
static char trace[16384];

/* Append "WHO:HOOK " or "WHO:HOOK=ARG " to the trace. */
static void
record(const char *who, const char *hook, const char *arg)
{
	size_t n = strlen(trace);

	snprintf(trace + n, sizeof(trace) - n, "%s:%s%s%s ", who, hook, arg ? "=" : "",
	    arg ? arg : "");
}

/* A hook's module: the per-session state its connect hook set. */
static struct module *
mod(struct sc_ctx *c)
{
	return *filter_host()->state(c);
}

static enum sc_verdict
answer(struct sc_ctx *c, enum sc_verdict v)
{
	struct module *m = mod(c);

	if ((v == SC_REJECT || v == SC_TEMPFAIL) && m->b.reply != NULL) {
		int code = atoi(m->b.reply);
		char enh[16];

		sscanf(m->b.reply + 4, "%15s", enh);
		filter_host()->set_reply(c, code, enh, m->b.reply + 5 + strlen(enh));
	}
	return v;
}

static enum sc_verdict
f_connect0(struct sc_ctx *c)
{
	*filter_host()->state(c) = &mods[0];
	record("first", "connect", NULL);
	return SC_CONTINUE;
}

static enum sc_verdict
f_connect1(struct sc_ctx *c)
{
	*filter_host()->state(c) = &mods[1];
	record("second", "connect", NULL);
	return SC_CONTINUE;
}

static enum sc_verdict
f_helo(struct sc_ctx *c, const char *name)
{
	record(mod(c)->name, "helo", name);
	return SC_CONTINUE;
}

static enum sc_verdict
f_mail(struct sc_ctx *c, const char *addr, const char *params)
{
	(void)params;
	record(mod(c)->name, "mail", addr);
	return answer(c, mod(c)->b.mail);
}

static void
resume_later(uv_timer_t *h)
{
	struct module *m = h->data;

	record(m->name, "resume", NULL);
	filter_host()->resume(m->pending_ctx, answer(m->pending_ctx, m->pending_v));
}

static enum sc_verdict
f_rcpt(struct sc_ctx *c, const char *addr, const char *params)
{
	struct module *m = mod(c);
	enum sc_verdict v = SC_CONTINUE;

	(void)params;
	record(m->name, "rcpt", addr);
	if (m->b.rcpt_only == NULL || strcmp(m->b.rcpt_only, addr) == 0)
		v = m->b.rcpt;
	if (m->b.resume_inside) {
		record(m->name, "resume", NULL);
		filter_host()->resume(c, answer(c, v));
		return SC_PENDING;
	}
	if (m->b.pending_rcpt) {
		uv_timer_init(filter_host()->loop(c), &m->timer);
		m->timer.data = m;
		m->pending_ctx = c;
		m->pending_v = v;
		uv_timer_start(&m->timer, resume_later, 0, 0);
		return SC_PENDING;
	}
	return answer(c, v);
}

static enum sc_verdict
f_data(struct sc_ctx *c)
{
	record(mod(c)->name, "data", NULL);
	return SC_CONTINUE;
}

static enum sc_verdict
f_header(struct sc_ctx *c, const char *name, const char *value)
{
	char h[512];

	snprintf(h, sizeof(h), "%s:%s", name, value);
	record(mod(c)->name, "header", h);
	return SC_CONTINUE;
}

static enum sc_verdict
f_eoh(struct sc_ctx *c)
{
	record(mod(c)->name, "eoh", NULL);
	return SC_CONTINUE;
}

static enum sc_verdict
f_body(struct sc_ctx *c, const unsigned char *p, size_t n)
{
	char b[512];

	snprintf(b, sizeof(b), "%.*s", (int)n, (const char *)p);
	for (char *q = b; *q; q++)
		if (*q == '\r' || *q == '\n')
			*q = '|';
	record(mod(c)->name, "body", b);
	return SC_CONTINUE;
}

static enum sc_verdict
f_eom(struct sc_ctx *c)
{
	struct module *m = mod(c);
	const struct sc_host *h = filter_host();

	record(m->name, "eom", NULL);
	if (m->b.eom_changes) {
		h->add_header(c, "X-First", " yes");	/* the value as written */
		h->replace_body(c, "new body\r\n", 10);
		h->change_from(c, "new@client.test", NULL);
		h->add_rcpt(c, "added@backend.test", NULL);
		h->del_rcpt(c, "x@backend.test");
	}
	return answer(c, m->b.eom);
}

static void
f_abort(struct sc_ctx *c)
{
	record(mod(c)->name, "abort", NULL);
}

static const struct sc_filter desc[2] = {
	{ .abi = SC_FILTER_ABI, .size = sizeof(struct sc_filter), .name = "first",
	  .needs = SC_NEED_HEADERS | SC_NEED_BODY,
	  .connect = f_connect0, .helo = f_helo, .mail = f_mail, .rcpt = f_rcpt,
	  .data = f_data, .header = f_header, .eoh = f_eoh, .body = f_body, .eom = f_eom,
	  .abort = f_abort },
	{ .abi = SC_FILTER_ABI, .size = sizeof(struct sc_filter), .name = "second",
	  .needs = SC_NEED_HEADERS | SC_NEED_BODY,
	  .connect = f_connect1, .helo = f_helo, .mail = f_mail, .rcpt = f_rcpt,
	  .data = f_data, .header = f_header, .eoh = f_eoh, .body = f_body, .eom = f_eom,
	  .abort = f_abort },
};
static const struct sc_filter *const chain[2] = { &desc[0], &desc[1] };

/* A session through both modules up to its EHLO reply. */
static void
start(struct proxytest *t, struct peer *c)
{
	memset(&mods[0].b, 0, sizeof(mods[0].b));
	memset(&mods[1].b, 0, sizeof(mods[1].b));
	trace[0] = '\0';
	if (proxytest_start(t, CONFIG, chain, 2) != 0)
		exit(1);
	proxytest_auto_backend(t);
	proxytest_connect(t, c);
	peer_reply(t, c);
	peer_send(c, "EHLO client.test\r\n");
	peer_reply(t, c);
}

static void
finish(struct proxytest *t, struct peer *c)
{
	peer_send(c, "QUIT\r\n");
	peer_reply(t, c);
	peer_wait_eof(t, c);
	peer_close(c);
	proxytest_stop(t);
}

static const char *
cmd(struct proxytest *t, struct peer *c, const char *line)
{
	peer_send(c, line);
	return peer_reply(t, c);
}

/* One message from a@client.test to the recipients; the reply to its end. */
static const char *
message(struct proxytest *t, struct peer *c, const char *const *rcpts, const char *text)
{
	static char last[1024];

	cmd(t, c, "MAIL FROM:<a@client.test>\r\n");
	for (; *rcpts != NULL; rcpts++) {
		char line[256];

		snprintf(line, sizeof(line), "RCPT TO:<%s>\r\n", *rcpts);
		cmd(t, c, line);
	}
	cmd(t, c, "DATA\r\n");
	peer_send(c, text);
	peer_send(c, ".\r\n");
	snprintf(last, sizeof(last), "%s", peer_reply(t, c));
	return last;
}

static const char *const one_rcpt[] = { "x@backend.test", NULL };

#define GREETED	"first:connect second:connect first:helo=client.test second:helo=client.test "

static void
test_order(void)
{
	struct proxytest t;
	struct peer c;

	start(&t, &c);
	is_str(message(&t, &c, one_rcpt, "Subject: hi\r\n\r\nbody\r\n"), "250 2.0.0 Ok: queued\r\n",
	    "a message through two modules that go on: the backend's 250");
	is_str(trace, GREETED "first:mail=a@client.test second:mail=a@client.test "
	    "first:rcpt=x@backend.test second:rcpt=x@backend.test first:data second:data "
	    "first:header=Subject: hi first:eoh first:body=body|| first:eom "
	    "second:header=Subject: hi second:eoh second:body=body|| second:eom ",
	    "hooks in chain order, step by step; the held message through the first module "
	    "(headers, eoh, body, eom), then the second");
	is_str(t.heard, "EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<x@backend.test>\r\n"
	    "DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n", "the backend gets the message as it was sent");
	finish(&t, &c);
}

static void
test_accept(void)
{
	struct proxytest t;
	struct peer c;

	start(&t, &c);
	mods[0].b.mail = SC_ACCEPT;
	is_str(message(&t, &c, one_rcpt, "Subject: one\r\n\r\nbody\r\n"), "250 2.0.0 Ok: queued\r\n",
	    "ACCEPT at MAIL: the message goes to the backend");
	is_str(trace, GREETED "first:mail=a@client.test first:abort ",
	    "ACCEPT skips the rest of the chain for the message (the second module sees "
	    "none of it; the first gets abort() at its end)");
	trace[0] = '\0';
	mods[0].b.mail = SC_CONTINUE;
	message(&t, &c, one_rcpt, "Subject: two\r\n\r\nbody\r\n");
	ok(strstr(trace, "second:mail=a@client.test ") && strstr(trace, "second:eom "),
	    "the next message goes through the whole chain again");
	finish(&t, &c);
}

static void
test_refusals(void)
{
	struct proxytest t;
	struct peer c;

	start(&t, &c);
	mods[1].b.mail = SC_TEMPFAIL;
	is_str(cmd(&t, &c, "MAIL FROM:<a@client.test>\r\n"), "451 4.7.1 Try again later\r\n",
	    "TEMPFAIL at MAIL without a reply of its own: the default 451");
	is_str(trace, GREETED "first:mail=a@client.test second:mail=a@client.test ",
	    "the first module ran before the second refused");
	mods[1].b.mail = SC_CONTINUE;
	trace[0] = '\0';
	cmd(&t, &c, "MAIL FROM:<a@client.test>\r\n");
	mods[0].b.rcpt = SC_REJECT;
	mods[0].b.rcpt_only = "bad@backend.test";
	mods[0].b.reply = "550 5.7.1 first says no";
	is_str(cmd(&t, &c, "RCPT TO:<bad@backend.test>\r\n"), "550 5.7.1 first says no\r\n",
	    "REJECT at RCPT: the module's reply");
	is_str(cmd(&t, &c, "RCPT TO:<good@backend.test>\r\n"), "250 2.0.0 Ok\r\n",
	    "the next recipient is the backend's to answer");
	is_str(trace, "first:mail=a@client.test second:mail=a@client.test "
	    "first:rcpt=bad@backend.test first:rcpt=good@backend.test second:rcpt=good@backend.test ",
	    "a refused recipient stops the chain for that recipient only");
	cmd(&t, &c, "RSET\r\n");
	is_str(t.heard, "EHLO client.test\r\nMAIL FROM:<a@client.test>\r\n"
	    "RCPT TO:<good@backend.test>\r\nRSET\r\n",
	    "the backend never sees the refused MAIL or RCPT");
	finish(&t, &c);
}

/* How many files the quarantine directory has. */
static int
quarantined(struct proxytest *t)
{
	char path[128];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/quarantine", t->dir);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		n += strstr(e->d_name, ".eml") != NULL;
	closedir(d);
	return n;
}

static void
test_outcomes(void)
{
	struct proxytest t;
	struct peer c;
	const char *r;

	start(&t, &c);
	mods[1].b.eom = SC_DISCARD;
	r = message(&t, &c, one_rcpt, "Subject: discard me\r\n\r\nbody\r\n");
	ok(strncmp(r, "250 2.0.0 Ok: queued as ", 24) == 0,
	    "DISCARD at eom: the client gets the proxy's own 250");
	ok(strstr(trace, "second:eom ") != NULL, "after the whole chain ran");
	trace[0] = '\0';
	mods[1].b.eom = SC_CONTINUE;
	mods[0].b.eom = SC_QUARANTINE;
	r = message(&t, &c, one_rcpt, "Subject: quarantine me\r\n\r\nbody\r\n");
	ok(strncmp(r, "250 2.0.0 Ok: queued as ", 24) == 0,
	    "QUARANTINE at eom: the proxy's own 250");
	ok(strstr(trace, "first:eom second:abort ") != NULL,
	    "QUARANTINE decides the message: the second module gets abort(), not the message");
	is_int(quarantined(&t), 1, "the message is in quarantine_dir");
	is_str(t.heard, "EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<x@backend.test>\r\n"
	    "RSET\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<x@backend.test>\r\n",
	    "the backend gets neither message (an RSET ends the first envelope)");
	finish(&t, &c);
}

static void
test_pending(void)
{
	struct proxytest t;
	struct peer c;

	start(&t, &c);
	mods[0].b.pending_rcpt = true;
	cmd(&t, &c, "MAIL FROM:<a@client.test>\r\n");
	is_str(cmd(&t, &c, "RCPT TO:<x@backend.test>\r\n"), "250 2.0.0 Ok\r\n",
	    "PENDING, then resume(CONTINUE): the recipient goes on to the backend");
	is_str(trace, GREETED "first:mail=a@client.test second:mail=a@client.test "
	    "first:rcpt=x@backend.test first:resume second:rcpt=x@backend.test ",
	    "the chain waits for resume() before the next module");
	trace[0] = '\0';
	mods[0].b.rcpt = SC_REJECT;
	mods[0].b.reply = "550 5.7.1 later no";
	is_str(cmd(&t, &c, "RCPT TO:<y@backend.test>\r\n"), "550 5.7.1 later no\r\n",
	    "PENDING, then resume(REJECT): the module's reply");
	is_str(trace, "first:rcpt=y@backend.test first:resume ", "and the second module is not asked");
	trace[0] = '\0';
	mods[0].b.pending_rcpt = false;
	mods[0].b.resume_inside = true;
	is_str(cmd(&t, &c, "RCPT TO:<w@backend.test>\r\n"), "550 5.7.1 later no\r\n",
	    "resume(REJECT) from inside the hook, then PENDING: the module's reply");
	mods[0].b.rcpt = SC_CONTINUE;
	is_str(cmd(&t, &c, "RCPT TO:<v@backend.test>\r\n"), "250 2.0.0 Ok\r\n",
	    "resume(CONTINUE) from inside the hook: the recipient goes on");
	is_str(trace, "first:rcpt=w@backend.test first:resume first:rcpt=v@backend.test "
	    "first:resume second:rcpt=v@backend.test ", "the chain goes on at once");
	cmd(&t, &c, "RSET\r\n");
	ok(strstr(t.heard, "y@backend.test") == NULL && strstr(t.heard, "w@backend.test") == NULL,
	    "the backend never sees the refused recipients");
	finish(&t, &c);
}

static void
test_changes(void)
{
	struct proxytest t;
	struct peer c;
	static const char *const two[] = { "x@backend.test", "z@backend.test", NULL };

	start(&t, &c);
	mods[0].b.eom_changes = true;
	is_str(message(&t, &c, two, "Subject: change me\r\n\r\nold body\r\n"),
	    "250 2.0.0 Ok: queued\r\n", "a changed message: the backend's 250");
	ok(strstr(trace, "first:body=old body|| first:eom ") != NULL,
	    "the first module sees the message as it came");
	ok(strstr(trace, "second:header=Subject: change me second:header=X-First: yes "
	    "second:eoh second:body=new body|| second:eom ") != NULL,
	    "the second sees the first one's header and body");
	is_str(t.heard, "EHLO client.test\r\nMAIL FROM:<a@client.test>\r\n"
	    "RCPT TO:<x@backend.test>\r\nRCPT TO:<z@backend.test>\r\nRSET\r\n"
	    "MAIL FROM:<new@client.test>\r\nRCPT TO:<z@backend.test>\r\n"
	    "RCPT TO:<added@backend.test>\r\nDATA\r\n"
	    "Subject: change me\r\nX-First: yes\r\n\r\nnew body\r\n.\r\n",
	    "the backend gets the changed envelope (sender changed, a recipient deleted, "
	    "one added), replayed after RSET, and the changed message");
	finish(&t, &c);
}

int
main(void)
{
	test_order();
	test_accept();
	test_refusals();
	test_outcomes();
	test_pending();
	test_changes();
	return done_testing();
}
