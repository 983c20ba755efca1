/*
 * testmilter.c - a milter for the tests, written with libmilter: every
 * milter action, chosen by the message, so that t/70-milter.t can check
 * what the milter module does with each.
 *
 * SYNOPSIS
 *	testmilter -p inet:PORT@127.0.0.1 [-n NAME] [-a ACTIONS] [-P FLAGS]
 *	    [-M STAGE=MACROS]... [-f hang:STAGE|exit:STAGE] [-D BYTES]
 *
 * OPTIONS
 *	-p SPEC		libmilter's socket (smfi_setconn), e.g. inet:8891@127.0.0.1
 *	-n NAME		a tag for what it adds (default "testmilter")
 *	-a ACTIONS	the actions it asks for, comma-separated: addhdrs,
 *			chghdrs, chgbody, addrcpt, addrcpt_par, delrcpt,
 *			quarantine, chgfrom, setsymlist; "all" (the default)
 *	-P FLAGS	protocol flags it asks for, comma-separated: noconnect,
 *			nohelo, nomail, norcpt, nodata, nohdrs, noeoh, nobody,
 *			nr_conn, nr_helo, nr_mail, nr_rcpt, nr_data, nr_hdr,
 *			nr_eoh, nr_body, nounknown, nr_unkn, leadspc (SKIP is
 *			always asked for)
 *	-M STAGE=LIST	the macros it wants at a stage (connect, helo, mail,
 *			rcpt, data, eoh, eom), sent with smfi_setsymlist
 *	-f MODE		fail on purpose: hang:STAGE sleeps an hour at STAGE,
 *			exit:STAGE exits at once at STAGE (connect, helo,
 *			mail, rcpt, data, header, eoh, body, eom, unknown)
 *	-D BYTES	the largest command libmilter reads (smfi_setmaxdatasize;
 *			its default is 65535: a longer header makes it hang up)
 *
 * DESCRIPTION
 *	Runs in the foreground; one line per event on stdout ("NAME: eom ...",
 *	"NAME: abort", "NAME: close"), so a test can tell what it saw.  A HELO
 *	inside TLS adds "NAME: helo-tls tls_version=V cert_subject=S
 *	cert_issuer=I" (the HELO macros, "-" when missing).
 *
 *	The words of the Subject choose what happens at end of message, in
 *	this order:
 *	  chgfrom	sender becomes <changed@example.org>
 *	  addrcpt	recipient <added@example.org> added
 *	  addrcpt_par	recipient <added-par@example.org> added with NOTIFY=NEVER
 *	  delrcpt	recipient <gone@example.org> removed
 *	  delheader	the first X-Delete-Me header removed
 *	  chgheader	the first X-Change-Me header becomes "changed by NAME"
 *	  addheader	"X-Milter-Added: added by NAME" appended
 *	  insheader	"X-Milter-Inserted: inserted by NAME" put first
 *	  insheader2	"X-Milter-Index-1: NAME" at index 1 and
 *			"X-Milter-Index-2: NAME" at index 2 (behind Postfix,
 *			index 1 is just below its Received:)
 *	  replbody	the body becomes two chunks: "Body replaced by NAME.\r\n"
 *			and "Second chunk.\r\n"
 *	  quarantine	smfi_quarantine("quarantined by NAME")
 *	  progress	four times: one second asleep, then smfi_progress()
 *	  hang		sleeps an hour before answering
 *	and the answer: reject (SMFIS_REJECT), tempfail (SMFIS_TEMPFAIL),
 *	replycode (smfi_setmlreply 550 5.7.1, two lines, then REJECT),
 *	discard, accept; otherwise continue.  "skip" answers SMFIS_SKIP to
 *	the first body chunk; "exit" exits at the first body chunk.
 *
 *	Unless the Subject has "notrace", the last change is a trace header
 *	"X-Testmilter-NAME: helo=H from=F rcpts=N headers=N lead=yes|no
 *	body=N chunks=N xh=X-A,X-B client_addr=A client_name=N j=J i=I
 *	mail_addr=M rcpt_addr=R": what it saw (lead: whether the Subject's
 *	value came with its leading space; xh: the X- headers it saw; the
 *	macros as smfi_getsymval gave them, "-" when missing).
 *
 *	Envelope refusals: HELO "milter-reject.test" gets 550 5.7.1; a sender
 *	whose local part is milter-reject gets 550 5.7.1, milter-tempfail 451
 *	4.7.1; a recipient whose local part is milter-reject gets 550 5.7.1
 *	"NAME: recipient refused", milter-tempfail 451 4.7.1 (that recipient
 *	only).  An unknown SMTP command whose line has MILTER-REJECT gets
 *	550 5.7.1, MILTER-TEMPFAIL 451 4.7.1 ("NAME: unknown LINE" is printed).
 *
 *	Each SMFIC_OPTNEG prints "negotiate ..." and each SMFIC_CONNECT
 *	"connect ...": more connects than negotiations means a connection was
 *	used again after SMFIC_QUIT_NC.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#define HANG_SECONDS	3600

/* What this instance is asked to be. */
static const char *name = "testmilter";
static unsigned long want_actions = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY |
    SMFIF_ADDRCPT | SMFIF_ADDRCPT_PAR | SMFIF_DELRCPT | SMFIF_QUARANTINE | SMFIF_CHGFROM |
    SMFIF_SETSYMLIST;
static unsigned long want_protocol;
static char *symlist[SMFIM_LAST + 1];
static const char *fail_mode;		/* "hang" or "exit" */
static const char *fail_stage;

/* What one connection saw (smfi_setpriv). */
struct seen {
	char	 helo[256], from[256], subject[512], xh[512];
	char	 client_addr[64], client_name[256], j[256], mail_addr[256], rcpt_addr[256];
	int	 rcpts, headers, chunks;
	long	 body;
	bool	 lead;		/* the Subject value came with its leading space */
};

/* One line on stdout. */
static void __attribute__((format(printf, 1, 2)))
say(const char *fmt, ...)
{
	va_list ap;

	printf("%s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* Hang or exit here if -f asked for this stage. */
static void
maybe_fail(const char *stage)
{
	if (fail_stage == NULL || strcmp(stage, fail_stage) != 0)
		return;
	if (strcmp(fail_mode, "exit") == 0) {
		say("exit at %s", stage);
		_exit(3);
	}
	say("hang at %s", stage);
	sleep(HANG_SECONDS);
}

/* Copy a macro's value, "-" when the MTA did not send it. */
static void
macro(SMFICTX *ctx, const char *m, char *out, size_t outlen)
{
	const char *v = smfi_getsymval(ctx, (char *)m);

	snprintf(out, outlen, "%s", v ? v : "-");
}

/* Whether the Subject has this word (words split at spaces and tabs). */
static bool
has_word(const struct seen *s, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = s->subject; *p; ) {
		size_t len;

		p += strspn(p, " \t\r\n");
		len = strcspn(p, " \t\r\n");
		if (len == n && strncasecmp(p, word, n) == 0)
			return true;
		p += len;
	}
	return false;
}

/* The local part of an address is this. */
static bool
local_is(const char *addr, const char *local)
{
	size_t n = strlen(local);

	if (*addr == '<')
		addr++;
	return strncasecmp(addr, local, n) == 0 && addr[n] == '@';
}

/* Forget the message (the connection's facts stay). */
static void
reset_message(struct seen *s)
{
	s->from[0] = s->subject[0] = s->xh[0] = s->mail_addr[0] = s->rcpt_addr[0] = '\0';
	s->rcpts = s->headers = s->chunks = 0;
	s->body = 0;
	s->lead = false;
}

/* A flag by name, for -a and -P. */
struct flag_name {
	const char	*name;
	unsigned long	 flag;
};

/* The protocol flags and actions it may ask for. */
static const struct flag_name proto_names[] = {
	{ "noconnect", SMFIP_NOCONNECT }, { "nohelo", SMFIP_NOHELO },
	{ "nomail", SMFIP_NOMAIL }, { "norcpt", SMFIP_NORCPT }, { "nodata", SMFIP_NODATA },
	{ "nohdrs", SMFIP_NOHDRS }, { "noeoh", SMFIP_NOEOH }, { "nobody", SMFIP_NOBODY },
	{ "nr_conn", SMFIP_NR_CONN }, { "nr_helo", SMFIP_NR_HELO }, { "nr_mail", SMFIP_NR_MAIL },
	{ "nr_rcpt", SMFIP_NR_RCPT }, { "nr_data", SMFIP_NR_DATA }, { "nr_hdr", SMFIP_NR_HDR },
	{ "nr_eoh", SMFIP_NR_EOH }, { "nr_body", SMFIP_NR_BODY },
	{ "nounknown", SMFIP_NOUNKNOWN }, { "nr_unkn", SMFIP_NR_UNKN },
	{ "leadspc", SMFIP_HDR_LEADSPC },
}, action_names[] = {
	{ "addhdrs", SMFIF_ADDHDRS }, { "chghdrs", SMFIF_CHGHDRS }, { "chgbody", SMFIF_CHGBODY },
	{ "addrcpt", SMFIF_ADDRCPT }, { "addrcpt_par", SMFIF_ADDRCPT_PAR },
	{ "delrcpt", SMFIF_DELRCPT }, { "quarantine", SMFIF_QUARANTINE },
	{ "chgfrom", SMFIF_CHGFROM }, { "setsymlist", SMFIF_SETSYMLIST },
};

/* The answer for a step that asked for no reply (SMFIP_NR_*). */
static sfsistat
ok_or_noreply(unsigned long nr_flag)
{
	return (want_protocol & nr_flag) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

/* --- callbacks ------------------------------------------------------------ */

static sfsistat
tm_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
    unsigned long f3, unsigned long *pf0, unsigned long *pf1, unsigned long *pf2,
    unsigned long *pf3)
{
	(void)f2;
	(void)f3;
	*pf0 = want_actions & f0;
	*pf1 = (want_protocol | SMFIP_SKIP) & f1;
	*pf2 = *pf3 = 0;
	say("negotiate actions=0x%lx protocol=0x%lx offered 0x%lx 0x%lx", *pf0, *pf1, f0, f1);
	for (int i = 0; i <= SMFIM_LAST; i++)
		if (symlist[i] && smfi_setsymlist(ctx, i, symlist[i]) != MI_SUCCESS)
			say("setsymlist %d failed", i);
	return SMFIS_CONTINUE;
}

static sfsistat
tm_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *sa)
{
	struct seen *s = calloc(1, sizeof(*s));

	(void)sa;
	if (s == NULL)
		return SMFIS_TEMPFAIL;
	smfi_setpriv(ctx, s);
	macro(ctx, "{client_addr}", s->client_addr, sizeof(s->client_addr));
	macro(ctx, "{client_name}", s->client_name, sizeof(s->client_name));
	macro(ctx, "j", s->j, sizeof(s->j));
	say("connect %s addr=%s", hostname, s->client_addr);
	maybe_fail("connect");
	return ok_or_noreply(SMFIP_NR_CONN);
}

/* The session's facts, made on first use (SMFIP_NOCONNECT skips connect). */
static struct seen *
seen(SMFICTX *ctx)
{
	struct seen *s = smfi_getpriv(ctx);

	if (s == NULL && (s = calloc(1, sizeof(*s))) != NULL)
		smfi_setpriv(ctx, s);
	return s;
}

static sfsistat
tm_helo(SMFICTX *ctx, char *helo)
{
	struct seen *s = seen(ctx);

	snprintf(s->helo, sizeof(s->helo), "%s", helo);
	say("helo %s", helo);
	if (smfi_getsymval(ctx, "{tls_version}") != NULL) {
		char v[64], subject[256], issuer[256];

		macro(ctx, "{tls_version}", v, sizeof(v));
		macro(ctx, "{cert_subject}", subject, sizeof(subject));
		macro(ctx, "{cert_issuer}", issuer, sizeof(issuer));
		say("helo-tls tls_version=%s cert_subject=%s cert_issuer=%s", v, subject, issuer);
	}
	maybe_fail("helo");
	if (strcasecmp(helo, "milter-reject.test") == 0) {
		smfi_setreply(ctx, "550", "5.7.1", "testmilter: helo refused");
		return SMFIS_REJECT;
	}
	return ok_or_noreply(SMFIP_NR_HELO);
}

static sfsistat
tm_envfrom(SMFICTX *ctx, char **argv)
{
	struct seen *s = seen(ctx);

	reset_message(s);
	snprintf(s->from, sizeof(s->from), "%s", argv[0]);
	macro(ctx, "{mail_addr}", s->mail_addr, sizeof(s->mail_addr));
	say("mail %s%s%s", argv[0], argv[1] ? " " : "", argv[1] ? argv[1] : "");
	maybe_fail("mail");
	if (local_is(argv[0], "milter-reject")) {
		smfi_setreply(ctx, "550", "5.7.1", "testmilter: sender refused");
		return SMFIS_REJECT;
	}
	if (local_is(argv[0], "milter-tempfail")) {
		smfi_setreply(ctx, "451", "4.7.1", "testmilter: sender temporarily refused");
		return SMFIS_TEMPFAIL;
	}
	return ok_or_noreply(SMFIP_NR_MAIL);
}

static sfsistat
tm_envrcpt(SMFICTX *ctx, char **argv)
{
	struct seen *s = seen(ctx);

	say("rcpt %s", argv[0]);
	maybe_fail("rcpt");
	if (local_is(argv[0], "milter-reject")) {
		smfi_setreply(ctx, "550", "5.7.1", "testmilter: recipient refused");
		return SMFIS_REJECT;
	}
	if (local_is(argv[0], "milter-tempfail")) {
		smfi_setreply(ctx, "451", "4.7.1", "testmilter: recipient temporarily refused");
		return SMFIS_TEMPFAIL;
	}
	macro(ctx, "{rcpt_addr}", s->rcpt_addr, sizeof(s->rcpt_addr));
	s->rcpts++;
	return ok_or_noreply(SMFIP_NR_RCPT);
}

static sfsistat
tm_data(SMFICTX *ctx)
{
	(void)ctx;
	say("data");
	maybe_fail("data");
	return ok_or_noreply(SMFIP_NR_DATA);
}

static sfsistat
tm_header(SMFICTX *ctx, char *hname, char *value)
{
	struct seen *s = seen(ctx);
	size_t o = strlen(s->xh);

	s->headers++;
	if (strcasecmp(hname, "Subject") == 0) {
		s->lead = value[0] == ' ';
		snprintf(s->subject, sizeof(s->subject), "%s", value);
	}
	if (strncasecmp(hname, "X-", 2) == 0 && o < sizeof(s->xh) - 1)
		snprintf(s->xh + o, sizeof(s->xh) - o, "%s%s", o ? "," : "", hname);
	maybe_fail("header");
	return ok_or_noreply(SMFIP_NR_HDR);
}

static sfsistat
tm_eoh(SMFICTX *ctx)
{
	(void)ctx;
	maybe_fail("eoh");
	return ok_or_noreply(SMFIP_NR_EOH);
}

static sfsistat
tm_body(SMFICTX *ctx, unsigned char *p, size_t n)
{
	struct seen *s = seen(ctx);

	(void)p;
	s->chunks++;
	s->body += (long)n;
	maybe_fail("body");
	if (has_word(s, "exit")) {
		say("exit in body");
		_exit(3);
	}
	if (has_word(s, "skip")) {
		say("skip after %ld octets", s->body);
		return SMFIS_SKIP;
	}
	return ok_or_noreply(SMFIP_NR_BODY);
}

/* Report a change libmilter refused (an action not negotiated). */
static void
check(int rc, const char *what)
{
	if (rc != MI_SUCCESS)
		say("%s failed", what);
}

static sfsistat
tm_eom(SMFICTX *ctx)
{
	struct seen *s = seen(ctx);
	char buf[256], trace[4096], i[128];

	macro(ctx, "i", i, sizeof(i));
	say("eom subject=%s body=%ld chunks=%d", s->subject, s->body, s->chunks);
	maybe_fail("eom");
	if (has_word(s, "chgfrom"))
		check(smfi_chgfrom(ctx, "<changed@example.org>", NULL), "chgfrom");
	if (has_word(s, "addrcpt"))
		check(smfi_addrcpt(ctx, "<added@example.org>"), "addrcpt");
	if (has_word(s, "addrcpt_par"))
		check(smfi_addrcpt_par(ctx, "<added-par@example.org>", "NOTIFY=NEVER"), "addrcpt_par");
	if (has_word(s, "delrcpt"))
		check(smfi_delrcpt(ctx, "<gone@example.org>"), "delrcpt");
	if (has_word(s, "delheader"))
		check(smfi_chgheader(ctx, "X-Delete-Me", 1, NULL), "delheader");
	if (has_word(s, "chgheader")) {
		snprintf(buf, sizeof(buf), "changed by %s", name);
		check(smfi_chgheader(ctx, "X-Change-Me", 1, buf), "chgheader");
	}
	if (has_word(s, "addheader")) {
		snprintf(buf, sizeof(buf), "added by %s", name);
		check(smfi_addheader(ctx, "X-Milter-Added", buf), "addheader");
	}
	if (has_word(s, "insheader")) {
		snprintf(buf, sizeof(buf), "inserted by %s", name);
		check(smfi_insheader(ctx, 0, "X-Milter-Inserted", buf), "insheader");
	}
	if (has_word(s, "insheader2")) {
		check(smfi_insheader(ctx, 1, "X-Milter-Index-1", name), "insheader2");
		check(smfi_insheader(ctx, 2, "X-Milter-Index-2", name), "insheader2");
	}
	if (has_word(s, "replbody")) {
		snprintf(buf, sizeof(buf), "Body replaced by %s.\r\n", name);
		check(smfi_replacebody(ctx, (unsigned char *)buf, (int)strlen(buf)), "replbody");
		check(smfi_replacebody(ctx, (unsigned char *)"Second chunk.\r\n", 15), "replbody");
	}
	if (has_word(s, "quarantine")) {
		snprintf(buf, sizeof(buf), "quarantined by %s", name);
		check(smfi_quarantine(ctx, buf), "quarantine");
	}
	if (has_word(s, "progress"))
		for (int k = 0; k < 4; k++) {
			sleep(1);
			check(smfi_progress(ctx), "progress");
		}
	if (has_word(s, "hang")) {
		say("hang in eom");
		sleep(HANG_SECONDS);
	}
	if (!has_word(s, "notrace")) {
		snprintf(trace, sizeof(trace), "helo=%s from=%s rcpts=%d headers=%d lead=%s "
		    "body=%ld chunks=%d xh=%s client_addr=%s client_name=%s j=%s i=%s "
		    "mail_addr=%s rcpt_addr=%s", s->helo[0] ? s->helo : "-",
		    s->from[0] ? s->from : "-", s->rcpts, s->headers, s->lead ? "yes" : "no",
		    s->body, s->chunks, s->xh[0] ? s->xh : "-", s->client_addr, s->client_name,
		    s->j, i, s->mail_addr, s->rcpt_addr);
		snprintf(buf, sizeof(buf), "X-Testmilter-%s", name);
		check(smfi_addheader(ctx, buf, trace), "trace header");
	}
	if (has_word(s, "reject"))
		return SMFIS_REJECT;
	if (has_word(s, "tempfail"))
		return SMFIS_TEMPFAIL;
	if (has_word(s, "replycode")) {
		check(smfi_setmlreply(ctx, "550", "5.7.1", "testmilter: first line",
		    "testmilter: second line", NULL), "setmlreply");
		return SMFIS_REJECT;
	}
	if (has_word(s, "discard"))
		return SMFIS_DISCARD;
	if (has_word(s, "accept"))
		return SMFIS_ACCEPT;
	return SMFIS_CONTINUE;
}

/* An SMTP command the MTA does not know: refused when it asks to be. */
static sfsistat
tm_unknown(SMFICTX *ctx, const char *line)
{
	say("unknown %s", line);
	maybe_fail("unknown");
	if (strstr(line, "MILTER-REJECT") != NULL) {
		smfi_setreply(ctx, "550", "5.7.1", "testmilter: unknown command refused");
		return SMFIS_REJECT;
	}
	if (strstr(line, "MILTER-TEMPFAIL") != NULL) {
		smfi_setreply(ctx, "451", "4.7.1", "testmilter: unknown command deferred");
		return SMFIS_TEMPFAIL;
	}
	return ok_or_noreply(SMFIP_NR_UNKN);
}

static sfsistat
tm_abort(SMFICTX *ctx)
{
	struct seen *s = smfi_getpriv(ctx);

	say("abort");
	if (s)
		reset_message(s);
	return SMFIS_CONTINUE;
}

static sfsistat
tm_close(SMFICTX *ctx)
{
	free(smfi_getpriv(ctx));
	smfi_setpriv(ctx, NULL);
	say("close");
	return SMFIS_CONTINUE;
}

/* --- start-up --------------------------------------------------------------- */

/* A comma-separated list of names into flags; exits on an unknown one. */
static unsigned long
parse_flags(const char *list, const struct flag_name *t, size_t n, const char *what)
{
	unsigned long flags = 0;
	char *copy = strdup(list), *save = NULL;

	for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
		size_t i;

		if (strcmp(w, "all") == 0) {
			for (i = 0; i < n; i++)
				flags |= t[i].flag;
			continue;
		}
		if (strcmp(w, "none") == 0)
			continue;
		for (i = 0; i < n && strcmp(w, t[i].name) != 0; i++)
			continue;
		if (i == n) {
			fprintf(stderr, "testmilter: unknown %s \"%s\"\n", what, w);
			exit(2);
		}
		flags |= t[i].flag;
	}
	free(copy);
	return flags;
}

/* -M STAGE=LIST */
static void
parse_symlist(const char *arg)
{
	static const char *const stages[] = {
		[SMFIM_CONNECT] = "connect", [SMFIM_HELO] = "helo", [SMFIM_ENVFROM] = "mail",
		[SMFIM_ENVRCPT] = "rcpt", [SMFIM_DATA] = "data", [SMFIM_EOM] = "eom",
		[SMFIM_EOH] = "eoh",
	};
	const char *eq = strchr(arg, '=');

	for (int i = 0; eq && i <= SMFIM_LAST; i++)
		if (strlen(stages[i]) == (size_t)(eq - arg) && strncmp(arg, stages[i], eq - arg) == 0) {
			symlist[i] = strdup(eq + 1);
			return;
		}
	fprintf(stderr, "testmilter: bad -M \"%s\" (expected STAGE=MACROS)\n", arg);
	exit(2);
}

static void
usage(void)
{
	fprintf(stderr, "usage: testmilter -p SPEC [-n NAME] [-a ACTIONS] [-P FLAGS] "
	    "[-M STAGE=MACROS] [-f hang:STAGE|exit:STAGE] [-D BYTES]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct smfiDesc desc = {
		.xxfi_name = "testmilter",
		.xxfi_version = SMFI_VERSION,
		.xxfi_connect = tm_connect,
		.xxfi_helo = tm_helo,
		.xxfi_envfrom = tm_envfrom,
		.xxfi_envrcpt = tm_envrcpt,
		.xxfi_header = tm_header,
		.xxfi_eoh = tm_eoh,
		.xxfi_body = tm_body,
		.xxfi_eom = tm_eom,
		.xxfi_abort = tm_abort,
		.xxfi_close = tm_close,
		.xxfi_data = tm_data,
		.xxfi_negotiate = tm_negotiate,
		.xxfi_unknown = tm_unknown,
	};
	const char *spec = NULL;
	char *colon;
	int ch;

	while ((ch = getopt(argc, argv, "p:n:a:P:M:f:D:")) != -1) {
		switch (ch) {
		case 'p':
			spec = optarg;
			break;
		case 'n':
			name = optarg;
			break;
		case 'a':
			want_actions = parse_flags(optarg, action_names,
			    sizeof(action_names) / sizeof(action_names[0]), "action");
			break;
		case 'P':
			want_protocol = parse_flags(optarg, proto_names,
			    sizeof(proto_names) / sizeof(proto_names[0]), "protocol flag");
			break;
		case 'M':
			parse_symlist(optarg);
			break;
		case 'f':
			if ((colon = strchr(optarg, ':')) == NULL)
				usage();
			*colon = '\0';
			fail_mode = optarg;
			fail_stage = colon + 1;
			if (strcmp(fail_mode, "hang") != 0 && strcmp(fail_mode, "exit") != 0)
				usage();
			break;
		case 'D':
			smfi_setmaxdatasize((size_t)strtoul(optarg, NULL, 10));
			break;
		default:
			usage();
		}
	}
	if (spec == NULL)
		usage();
	desc.xxfi_flags = want_actions;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (smfi_setconn((char *)spec) != MI_SUCCESS || smfi_register(desc) != MI_SUCCESS) {
		fprintf(stderr, "testmilter: cannot set up %s\n", spec);
		return 1;
	}
	if (smfi_opensocket(true) != MI_SUCCESS) {
		fprintf(stderr, "testmilter: cannot open %s\n", spec);
		return 1;
	}
	say("ready on %s", spec);
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
