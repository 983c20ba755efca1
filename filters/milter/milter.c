/*
 * milter.c - the milter filter module: the MTA side of the sendmail milter
 * protocol (version 6), so that existing milters (OpenDKIM, rspamd,
 * ClamAV, ...) run as links of the smtpchain filter chain.  This file is
 * the protocol's state machine (the hooks, the replies, the failure
 * actions); the connection is link.c (over filters/common/channel.c,
 * shared with the policy module), the message changes changes.c, the
 * options conf.c, the bytes codec.c: as Postfix's milter8.c apart from
 * its milter.c.
 *
 * SYNOPSIS
 *	filter {
 *		module = "milter";
 *		socket = "inet:127.0.0.1:8891";	# or "inet:8891@127.0.0.1",
 *						# "inet6:[::1]:8891", "unix:/path"
 *		default_action = "tempfail";	# accept, reject, tempfail,
 *						# quarantine, shutdown
 *		timeout {			# seconds, 1..86400
 *			connect = 30;		# socket connect + SMFIC_OPTNEG
 *			command = 30;		# CONNECT, HELO, MAIL, RCPT, DATA, UNKNOWN
 *			content = 300;		# each HEADER, EOH and BODY chunk
 *			eom = 300;		# the end-of-message exchange
 *		}				# (timeout_connect = 30; ... also read)
 *		idle_connections = 4;		# kept after SMFIC_QUIT_NC, 0..64
 *		macros_connect = [ "j", "{daemon_name}", "v", "_" ];
 *		# also macros_helo, macros_mail, macros_rcpt, macros_data,
 *		# macros_eoh, macros_eom
 *	}
 *
 * DESCRIPTION
 *	One milter connection per SMTP session at a time, opened by the
 *	connect hook without blocking: socket connect, SMFIC_OPTNEG, then the
 *	client's SMFIC_CONNECT; the connect hook pends until the milter has
 *	answered.  When a session ends with the connection healthy and the
 *	milter where libmilter takes it (after an end of message answered
 *	CONTINUE, or an unknown command, outside a transaction), it gets
 *	SMFIC_QUIT_NC instead of SMFIC_QUIT and waits in a pool of at most
 *	idle_connections (default 4, 0 = never) for the next session, which
 *	starts at SMFIC_CONNECT with what was negotiated (libmilter keeps it,
 *	calls xxfi_close at QUIT_NC and expects CONNECT next).  An idle
 *	connection the milter closes (or writes on) is dropped, when the loop
 *	reads it or when a session would take it (a peek at the socket); one
 *	found dead while the next session's CONNECT waits is replaced by a new
 *	connection once.  Idle connections do not keep the daemon's loop alive.
 *	Each later hook sends its macros and command (SMFIC_HELO, MAIL, RCPT,
 *	DATA, HEADER, EOH, BODY in chunks of at most MILTER_CHUNK_SIZE,
 *	BODYEOB; SMFIC_UNKNOWN, without macros, for a command the proxy does
 *	not know, but not inside a transaction to a milter that skips DATA,
 *	see m_unknown) and pends until the reply, except for the steps the
 *	milter asked not to see (SMFIP_NO*) or not to answer (SMFIP_NR_*):
 *	these return SC_CONTINUE at once.  abort() sends SMFIC_ABORT, close() sends
 *	SMFIC_QUIT (or QUIT_NC, above); a reply still owed for a cancelled
 *	hook is read and dropped.  A session that ends while the connection
 *	is still being made or negotiated, or replies are owed (a client that
 *	connects and leaves at once), leaves it to finish alone: negotiate,
 *	read what is owed, then QUIT (link.c's drain); no milter sees a bare
 *	EOF from a healthy session.
 *
 *	Replies: SMFIR_CONTINUE -> SC_CONTINUE, ACCEPT -> SC_ACCEPT, REJECT ->
 *	SC_REJECT with "550 5.7.1 Command rejected", TEMPFAIL -> SC_TEMPFAIL
 *	with "451 4.7.1 Service unavailable - try again later" (Postfix's and
 *	sendmail's texts; at connect the host's greeting), REPLYCODE ->
 *	set_reply() and REJECT or TEMPFAIL by the code's class, DISCARD ->
 *	SC_DISCARD, SKIP -> no more body chunks, PROGRESS -> the timer starts
 *	again, CONN_FAIL -> SC_TEMPFAIL, SHUTDOWN -> "421 4.7.0" and
 *	SC_TEMPFAIL from then on.  The message changes (SMFIR_ADDHEADER,
 *	INSHEADER, CHGHEADER, ADDRCPT, ADDRCPT_PAR, DELRCPT, CHGFROM, REPLBODY,
 *	QUARANTINE) arrive during end of message; they are kept in order and
 *	made through the host when the final reply is CONTINUE or ACCEPT (a
 *	QUARANTINE then turns the verdict into SC_QUARANTINE).  An INSHEADER
 *	index counts the MTA's Received: as header 0, as behind Postfix
 *	(insert_index).  Header values
 *	go to the milter without their leading space unless it negotiated
 *	SMFIP_HDR_LEADSPC, and with folding as LF (as sendmail and Postfix
 *	send them); values from the milter get the space back and CRLF.
 *
 *	SMFIC_OPTNEG offers SMFIP_MDS_1M, as sendmail does when configured
 *	with Milter.maxdatasize (Postfix does not): a libmilter built with MDS
 *	negotiation then reads commands of up to 1 MB and says so (MDS_1M or
 *	MDS_256K in its reply); a libmilter without it ignores the offer and
 *	reads 65535 octets of data per command, unless the milter raised that
 *	with smfi_setmaxdatasize(), which the MTA cannot see.  So a header
 *	over the negotiated size goes all the same; when the milter hangs up
 *	on it, the warning says so.  Body chunks stay at MILTER_CHUNK_SIZE
 *	whatever was negotiated, as sendmail sends them.
 *
 *	Timeouts as Postfix's milter_connect_timeout, milter_command_timeout
 *	and milter_content_timeout (the content one for the message's
 *	headers and body); the end-of-message reply has its own (sendmail's
 *	T=E), as an eom may take long (DKIM signing, virus scans).
 *	SMFIR_PROGRESS starts the running timer again.
 *
 *	Macros, as Postfix sends them: with CONNECT, HELO, MAIL, RCPT, DATA,
 *	EOH and BODYEOB the stage's list; with each HEADER the end-of-header
 *	list and with each BODY chunk the end-of-message list (libmilter only
 *	keeps the EOH and EOM ones; other milters may read them); none with
 *	UNKNOWN.  Macros go even for a step the milter asked not to see, but
 *	not for skipped headers, end of header and body (as Postfix).  The
 *	names are those of the macros_* option, or these defaults (Postfix's
 *	milter_*_macros plus the client's address at connect), or the list
 *	the milter asked for in its OPTNEG reply:
 *	connect "j {daemon_name} {daemon_addr} v _ {client_addr} {client_port}
 *	{client_name}", helo "{tls_version} {cipher} {cipher_bits}
 *	{cert_subject} {cert_issuer}", mail "i {auth_type} {auth_authen}
 *	{auth_author} {mail_addr} {mail_host} {mail_mailer}", rcpt "i
 *	{rcpt_addr} {rcpt_host} {rcpt_mailer}", data, eoh and eom "i".  Values
 *	come from host->get(): j and {daemon_name} are our hostname,
 *	{daemon_addr} the address the client connected to, v is
 *	"smtpchain", _ is "NAME [ADDR]", {client_name} is "unknown" when the
 *	client has no verified name, i is the message's id (queue_id: the
 *	session id and the message's number), {mail_host} and
 *	{rcpt_host} the address's domain, {mail_mailer} and {rcpt_mailer}
 *	"smtp"; any other {name} is host->get("name").  A macro without a
 *	value is not sent.
 *
 * DIAGNOSTICS
 *	When the milter cannot be reached, closes the connection, sends
 *	something that is not the protocol, or does not answer in time, one
 *	warning names the socket and what happened, the connection is closed,
 *	and default_action holds for the rest of the session: tempfail (451
 *	4.7.1 from MAIL on; the greeting and HELO go through, as Postfix),
 *	reject (550 5.7.1, at connect 554), accept
 *	(SC_CONTINUE without the milter), quarantine (SC_QUARANTINE at end of
 *	message), shutdown (421 4.7.0).  The hook that was waiting gets the
 *	verdict, and so does every later hook of a message (MAIL onwards); a
 *	later HELO goes through.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include <smtpchain/filter.h>

#include "../common/pending.h"
#include "changes.h"
#include "codec.h"
#include "conf.h"
#include "link.h"

#define MAX_WAITING		8	/* replies owed at once (cancelled ones included) */

/* The most data in one command a milter reads, by what it negotiated. */
#define MAX_DATA_DEFAULT	MILTER_MAX_DATA_SIZE	/* 65535: libmilter's default */
#define MAX_DATA_256K		(256 * 1024 - 1)	/* SMFIP_MDS_256K */
#define MAX_DATA_1M		(1024 * 1024 - 1)	/* SMFIP_MDS_1M */

/* The hooks, for the one that owes the host a resume(). */
enum hook {
	HOOK_NONE = 0,
	HOOK_CONNECT,
	HOOK_HELO,
	HOOK_MAIL,
	HOOK_RCPT,
	HOOK_DATA,
	HOOK_HEADER,
	HOOK_EOH,
	HOOK_BODY,
	HOOK_EOM,
	HOOK_UNKNOWN,		/* any time: not part of a message */
};

static const char *const hook_names[] = {
	"none", "connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body", "eom",
	"unknown",
};

/* Whether a hook is a step of a message (MAIL up to its end). */
#define HOOK_IN_MESSAGE(h)	((h) >= HOOK_MAIL && (h) <= HOOK_EOM)

/* Where the conversation with the milter stands. */
enum ms_state {
	MS_CONNECTING = 0,	/* socket connect under way */
	MS_NEGOTIATING,		/* SMFIC_OPTNEG sent, its reply not yet in */
	MS_READY,		/* negotiated: commands and replies */
	MS_FAILED,		/* gone: the failure action for the rest of the session */
};

static const char *const state_names[] = {
	"connecting", "negotiating", "ready", "failed",
};

/* A reply the milter owes, oldest first. */
struct waiting {
	char		 cmd;		/* the SMFIC_* sent */
	bool		 discard;	/* its hook was cancelled: drop the reply */
};

/* One SMTP session's conversation with the milter (host->state()). */
struct msess {
	struct sc_ctx		*c;
	struct milter_conf	*conf;
	struct mlink		*link;
	enum ms_state		 state;
	enum fail_action	 fail_action;	/* MS_FAILED */
	bool			 reused;	/* link came from the idle pool */
	bool			 reusable;	/* the milter would take SMFIC_QUIT_NC now */

	/* Negotiated (copied from the link). */
	uint32_t		 actions, protocol;
	size_t			 max_data;

	/* The hook that waits for the milter, and an answer given during it. */
	enum hook		 pending;
	struct pending		 answer;	/* its verdict, now or by resume() */
	struct waiting		 waiting[MAX_WAITING];
	size_t			 nwaiting;

	/* The current message. */
	bool			 in_transaction;	/* the milter is inside MAIL..EOM */
	bool			 msg_done;	/* the milter decided: no more commands */
	bool			 skip_body;	/* SMFIR_SKIP during the body */
	size_t			 oversize;	/* a header sent over max_data: its size */
	unsigned char		*body;		/* the rest of a body chunk to send */
	size_t			 body_len, body_off;
	struct changes		 changes;	/* asked for during end of message */

	struct mc_buf		 out;		/* commands being put together */
};

static const struct sc_host *host;

/* --- small helpers --------------------------------------------------------- */

/* The domain of an address, or NULL. */
static const char *
domain_of(const char *addr)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;

	return at && at[1] ? at + 1 : NULL;
}

/* --- state and logging ---------------------------------------------------- */

/* The one place the conversation's state changes. */
static void
set_state(struct msess *ms, enum ms_state st, const char *why)
{
	if (ms->state != st)
		host->log(ms->c, SC_LOG_DEBUG, "milter %s: %s -> %s (%s)", ms->conf->socket,
		    state_names[ms->state], state_names[st], why);
	ms->state = st;
}

/* The milter asked not to see a step (SMFIP_NO*). */
static bool
skips(const struct msess *ms, uint32_t flag)
{
	return (ms->protocol & flag) != 0;
}

/* --- answering the host ------------------------------------------------------ */

/* The hook now waiting for the milter. */
static void
hook_enter(struct msess *ms, enum hook h)
{
	ms->pending = h;
	pending_enter(&ms->answer);
}

/* What a hook returns: its answer if it came already, or SC_PENDING. */
static enum sc_verdict
hook_return(struct msess *ms)
{
	return pending_return(&ms->answer);
}

/*
 * The waiting hook's answer: returned by the hook if we are still inside
 * it, otherwise given to host->resume().  After a resume() the session may
 * be gone: callers return at once.
 */
static void
finish_hook(struct msess *ms, enum sc_verdict v)
{
	if (ms->pending == HOOK_NONE)
		return;
	ms->pending = HOOK_NONE;
	pending_give(&ms->answer, host, ms->c, v);
}

/* The verdict of a hook once the milter is gone (and its reply, if any). */
static enum sc_verdict
failed_verdict(struct msess *ms, enum hook h, bool current)
{
	bool message = HOOK_IN_MESSAGE(h);

	if (!current && !message)
		return SC_CONTINUE;	/* a later HELO or unknown command goes through */
	switch (ms->fail_action) {
	case ACT_ACCEPT:
	case ACT_DEFAULT:
		return SC_CONTINUE;
	case ACT_QUARANTINE:
		return h == HOOK_EOM ? SC_QUARANTINE : SC_CONTINUE;
	case ACT_REJECT:
		host->set_reply(ms->c, h == HOOK_CONNECT ? 554 : 550, "5.7.1", "Command rejected");
		return SC_REJECT;
	case ACT_SHUTDOWN:
		host->set_reply(ms->c, 421, "4.7.0", "Server closing connection");
		return SC_TEMPFAIL;
	case ACT_TEMPFAIL:
	default:
		/*
		 * As Postfix: the client is greeted and its EHLO answered, and
		 * its MAIL gets the 451 (a 421 at the greeting would make a
		 * load balancer's health check mark the node down while one
		 * milter restarts).
		 */
		if (h == HOOK_CONNECT || h == HOOK_HELO)
			return SC_CONTINUE;
		host->set_reply(ms->c, 451, "4.7.1", "Service unavailable - try again later");
		return SC_TEMPFAIL;
	}
}

/* --- the connection (link.c) ------------------------------------------------ */

static void	fail(struct msess *ms, enum fail_action act, const char *fmt, ...)
		    __attribute__((format(printf, 3, 4)));
static bool	link_open(struct msess *ms);
static uint64_t	timeout_for(const struct msess *ms, char cmd);

/*
 * Keep the session's connection for a later one when the milter is at a
 * point where libmilter takes SMFIC_QUIT_NC (after an end of message it
 * answered with CONTINUE, or an unknown command) and owes nothing; the
 * link checks the rest (nothing buffered, room in the pool, QUIT_NC
 * written at once).  Returns false when the link must go another way.
 */
static bool
pool_put(struct msess *ms, struct mlink *l)
{
	struct milter_conf *conf = ms->conf;

	if (!ms->reusable || ms->state != MS_READY || ms->in_transaction || ms->nwaiting > 0 ||
	    !mlink_pool_put(l, &conf->pool))
		return false;
	host->log(ms->c, SC_LOG_DEBUG, "milter %s: SMFIC_QUIT_NC, connection kept for a later "
	    "session (%u idle)", conf->socket, conf->pool.n);
	return true;
}

/*
 * The session ends while the milter is being connected or negotiated with,
 * or owes replies: the link finishes alone (mlink_drain), bounded by the
 * timeout of what it waits for.  False when the link is not in such a state.
 */
static bool
link_drain(struct msess *ms, struct mlink *l)
{
	uint64_t t;

	if (ms->state == MS_CONNECTING)
		t = ms->conf->timeout_connect;
	else if ((ms->state == MS_NEGOTIATING || ms->state == MS_READY) && ms->nwaiting > 0)
		t = timeout_for(ms, ms->waiting[0].cmd);
	else
		return false;
	mlink_drain(l, ms->state == MS_CONNECTING, (unsigned)ms->nwaiting, ms->in_transaction, t);
	host->log(ms->c, SC_LOG_DEBUG, "milter %s: session over while %s; %s, then SMFIC_QUIT",
	    ms->conf->socket, state_names[ms->state], ms->state == MS_CONNECTING ?
	    "negotiating" : "reading the replies owed");
	return true;
}

/*
 * Let go of the connection: keep it for a later session when it is healthy
 * and the milter is where SMFIC_QUIT_NC is allowed (pool_put), let it
 * finish alone when it owes replies (link_drain), else say goodbye if the
 * milter is listening (ABORT inside a transaction, then QUIT, written only
 * if the socket takes them at once) and close it.
 */
static void
link_release(struct msess *ms, bool quit)
{
	struct mlink *l = ms->link;

	if (l == NULL)
		return;
	ms->link = NULL;
	mlink_detach(l);
	if (quit && (pool_put(ms, l) || link_drain(ms, l)))
		return;
	mlink_close(l, quit && ms->state == MS_READY && ms->nwaiting == 0, ms->in_transaction);
}

/* The timeout for a reply to cmd, in ms. */
static uint64_t
timeout_for(const struct msess *ms, char cmd)
{
	switch (cmd) {
	case SMFIC_OPTNEG:
		return ms->conf->timeout_connect;
	case SMFIC_HEADER:
	case SMFIC_EOH:
	case SMFIC_BODY:
		return ms->conf->timeout_content;
	case SMFIC_BODYEOB:
		return ms->conf->timeout_eom;
	default:
		return ms->state == MS_CONNECTING ? ms->conf->timeout_connect :
		    ms->conf->timeout_command;
	}
}

/* (Re)start the timer for what we wait for now, or stop it. */
static void
arm_timer(struct msess *ms)
{
	struct mlink *l = ms->link;

	if (l == NULL)
		return;
	if (ms->state == MS_CONNECTING)
		mlink_wait(l, timeout_for(ms, 0));
	else if (ms->nwaiting > 0)
		mlink_wait(l, timeout_for(ms, ms->waiting[0].cmd));
	else
		mlink_wait(l, 0);
}

/* A new message: nothing decided, nothing kept. */
static void
message_reset(struct msess *ms)
{
	ms->msg_done = false;
	ms->skip_body = false;
	ms->oversize = 0;
	free(ms->body);
	ms->body = NULL;
	ms->body_len = ms->body_off = 0;
	changes_clear(&ms->changes);
}

/*
 * The milter is gone or broke the protocol: log why, close the connection,
 * hold the failure action from now on, and answer the waiting hook.
 */
static void
fail(struct msess *ms, enum fail_action act, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	if (ms->state == MS_FAILED)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (ms->reused && ms->pending == HOOK_CONNECT && act == ACT_DEFAULT) {
		/* The milter closed the idle connection as we took it: a new one. */
		host->log(ms->c, SC_LOG_INFO, "milter %s: an idle connection failed (%s); "
		    "opening a new one", ms->conf->socket, why);
		ms->reused = false;
		link_release(ms, false);
		ms->nwaiting = 0;
		mc_buf_reset(&ms->out);
		set_state(ms, MS_CONNECTING, "reconnecting");
		link_open(ms);
		return;
	}
	ms->fail_action = act == ACT_DEFAULT ? ms->conf->default_action : act;
	host->log(ms->c, SC_LOG_WARNING, "milter %s: %s; %s for the rest of the session%s%s",
	    ms->conf->socket, why, fail_action_names[ms->fail_action],
	    ms->pending != HOOK_NONE ? ", starting at " : "",
	    ms->pending != HOOK_NONE ? hook_names[ms->pending] : "");
	link_release(ms, false);
	set_state(ms, MS_FAILED, why);
	ms->nwaiting = 0;
	ms->in_transaction = false;
	message_reset(ms);
	if (ms->pending != HOOK_NONE)
		finish_hook(ms, failed_verdict(ms, ms->pending, true));
}

/* Why the milter may have hung up: a header over what it negotiated, or "". */
static const char *
oversize_note(const struct msess *ms, char *buf, size_t len)
{
	if (ms->oversize == 0)
		return "";
	snprintf(buf, len, " after a header of %zu octets (it negotiated %zu; libmilter "
	    "reads no more unless the milter calls smfi_setmaxdatasize or negotiates "
	    "SMFIP_MDS_1M)", ms->oversize, ms->max_data);
	return buf;
}

/* Send what ms->out holds; false after fail(). */
static bool
flush_out(struct msess *ms)
{
	int rc;

	if (ms->out.len == 0)
		return true;
	if (ms->link == NULL) {
		mc_buf_reset(&ms->out);
		return false;
	}
	rc = mlink_send(ms->link, &ms->out);
	mc_buf_reset(&ms->out);
	if (rc == UV_ENOMEM) {
		fail(ms, ACT_DEFAULT, "out of memory");
		return false;
	}
	ms->reusable = false;	/* until a reply says the milter is where QUIT_NC goes */
	if (rc != 0) {
		fail(ms, ACT_DEFAULT, "writing to the milter: %s", uv_strerror(rc));
		return false;
	}
	return true;
}

/* A reply is now owed for cmd. */
static void
expect_reply(struct msess *ms, char cmd)
{
	if (ms->nwaiting == MAX_WAITING) {
		fail(ms, ACT_DEFAULT, "too many commands without replies");
		return;
	}
	ms->waiting[ms->nwaiting].cmd = cmd;
	ms->waiting[ms->nwaiting].discard = false;
	if (ms->nwaiting++ == 0)
		arm_timer(ms);
}

/* The oldest owed reply has come. */
static void
reply_received(struct msess *ms)
{
	memmove(ms->waiting, ms->waiting + 1, (ms->nwaiting - 1) * sizeof(ms->waiting[0]));
	ms->nwaiting--;
	arm_timer(ms);
}

/* The encoder ran out of memory. */
static void
encode_failed(struct msess *ms)
{
	mc_buf_reset(&ms->out);
	fail(ms, ACT_DEFAULT, "out of memory encoding a command");
}

/* --- macros ------------------------------------------------------------------- */

/* A macro's value for the milter, or NULL to leave it out. */
static const char *
macro_value(struct msess *ms, const char *name, char *buf, size_t buflen)
{
	struct sc_ctx *c = ms->c;
	char key[64];
	size_t n = strlen(name);
	const char *v, *a;

	if (n >= 2 && name[0] == '{' && name[n - 1] == '}')
		snprintf(key, sizeof(key), "%.*s", (int)(n - 2), name + 1);
	else
		snprintf(key, sizeof(key), "%s", name);
	if (strcmp(key, "j") == 0 || strcmp(key, "daemon_name") == 0)
		return host->get(c, "hostname");
	if (strcmp(key, "v") == 0)
		return "smtpchain";
	if (strcmp(key, "i") == 0)
		return host->get(c, "queue_id");
	if (strcmp(key, "_") == 0) {
		if ((a = host->get(c, "client_addr")) == NULL)
			return NULL;
		v = host->get(c, "client_name");
		snprintf(buf, buflen, "%s [%s]", v ? v : "unknown", a);
		return buf;
	}
	if (strcmp(key, "client_name") == 0)
		return (v = host->get(c, "client_name")) ? v : "unknown";
	if (strcmp(key, "mail_mailer") == 0 || strcmp(key, "rcpt_mailer") == 0)
		return "smtp";
	if (strcmp(key, "mail_host") == 0)
		return domain_of(host->get(c, "mail_addr"));
	if (strcmp(key, "rcpt_host") == 0)
		return domain_of(host->get(c, "rcpt_addr"));
	return host->get(c, key);
}

/*
 * SMFIC_MACRO with the list of a stage for the command cmd into ms->out
 * (nothing when no macro has a value).
 */
static bool
put_macros(struct msess *ms, int stage, char cmd)
{
	const struct namelist *l = ms->link && ms->link->has_symlist[stage] ?
	    &ms->link->symlist[stage] : &ms->conf->macros[stage];
	const char **names, **values;
	char **copies;
	size_t n = 0;
	int rc = 0;

	if (l->n == 0)
		return true;
	names = calloc(l->n, sizeof(*names));
	values = calloc(l->n, sizeof(*values));
	copies = calloc(l->n, sizeof(*copies));
	if (names == NULL || values == NULL || copies == NULL) {
		rc = -1;
		goto out;
	}
	for (size_t i = 0; i < l->n; i++) {
		char buf[600];
		const char *v = macro_value(ms, l->v[i], buf, sizeof(buf));

		if (v == NULL)
			continue;
		if ((copies[n] = strdup(v)) == NULL) {	/* host->get() may reuse its buffer */
			rc = -1;
			goto out;
		}
		names[n] = l->v[i];
		values[n] = copies[n];
		n++;
	}
	if (n > 0)
		rc = mc_enc_macro(&ms->out, cmd, names, values, n);
out:
	for (size_t i = 0; copies && i < n; i++)
		free(copies[i]);
	free(names);
	free(values);
	free(copies);
	if (rc != 0)
		encode_failed(ms);
	return rc == 0;
}

/*
 * One protocol step: the stage's macros, then the command (unless the
 * milter asked not to see it), and a reply to wait for (unless it asked
 * not to answer).  encode puts the command into ms->out.  The hook must
 * have called hook_enter(); the answer goes through finish_hook().
 */
static void
step(struct msess *ms, int stage, uint32_t no_flag, uint32_t nr_flag, char cmd,
    int (*encode)(struct msess *ms, const void *arg), const void *arg)
{
	bool send = !skips(ms, no_flag);

	if (stage >= 0 && !put_macros(ms, stage, cmd))
		return;
	if (send && encode(ms, arg) != 0) {
		encode_failed(ms);
		return;
	}
	if (!flush_out(ms))
		return;
	if (!send || skips(ms, nr_flag)) {
		if (send && cmd == SMFIC_UNKNOWN)
			ms->reusable = true;
		finish_hook(ms, SC_CONTINUE);
	} else {
		expect_reply(ms, cmd);
	}
}

/* --- header values ------------------------------------------------------------ */

/* A header value for the milter: no leading space (unless asked for), LF line ends. */
static char *
header_value_out(const struct msess *ms, const char *v)
{
	size_t o = 0;
	char *out;

	if (!skips(ms, SMFIP_HDR_LEADSPC) && *v == ' ')
		v++;
	if ((out = malloc(strlen(v) + 1)) == NULL)
		return NULL;
	for (; *v; v++)
		if (!(v[0] == '\r' && v[1] == '\n'))
			out[o++] = *v;
	out[o] = '\0';
	return out;
}

/* --- replies ------------------------------------------------------------------- */

/* Whether s starts with a valid enhanced status code of class cls; its length. */
static size_t
enhanced_len(const char *s, char cls)
{
	const char *p = s;

	if (*p++ != cls || *p++ != '.')
		return 0;
	for (int part = 0; part < 2; part++) {
		size_t d = strspn(p, "0123456789");

		if (d == 0 || d > 3)
			return 0;
		p += d;
		if (part == 0 && *p++ != '.')
			return 0;
	}
	return *p == ' ' || *p == '\0' ? (size_t)(p - s) : 0;
}

/*
 * SMFIR_REPLYCODE: "550-5.7.1 a\r\n550 5.7.1 b" into set_reply(550,
 * "5.7.1", "a\nb"); '%%' becomes '%' (the text was a sendmail format).
 * Returns SC_REJECT or SC_TEMPFAIL, or SC_PENDING when it is not a 4xx/5xx
 * reply.
 */
static enum sc_verdict
reply_code(struct msess *ms, const char *reply)
{
	char enh[16] = "", *text, *o;
	const char *line = reply;
	size_t elen;
	int code;

	if (strlen(reply) < 3 || (reply[0] != '4' && reply[0] != '5') ||
	    reply[1] < '0' || reply[1] > '9' || reply[2] < '0' || reply[2] > '9' ||
	    (reply[3] != ' ' && reply[3] != '-' && reply[3] != '\0' && reply[3] != '\r'))
		return SC_PENDING;
	code = (reply[0] - '0') * 100 + (reply[1] - '0') * 10 + (reply[2] - '0');
	if (reply[3] == ' ' || reply[3] == '-') {
		elen = enhanced_len(reply + 4, reply[0]);
		if (elen > 0 && elen < sizeof(enh))
			snprintf(enh, sizeof(enh), "%.*s", (int)elen, reply + 4);
	}
	if ((text = o = malloc(strlen(reply) + 1)) == NULL)
		return reply[0] == '5' ? SC_REJECT : SC_TEMPFAIL;
	while (*line) {
		size_t n = strcspn(line, "\r\n");
		const char *p = line;

		if (n >= 3 && strncmp(p, reply, 3) == 0 && (n == 3 || p[3] == ' ' || p[3] == '-')) {
			p += n == 3 ? 3 : 4;
			if (enh[0] && strncmp(p, enh, strlen(enh)) == 0 &&
			    (p[strlen(enh)] == ' ' || p[strlen(enh)] == '\r' || p[strlen(enh)] == '\n' ||
			    p[strlen(enh)] == '\0')) {
				p += strlen(enh);
				if (*p == ' ')
					p++;
			}
		}
		if (o != text)
			*o++ = '\n';
		for (; p < line + n; p++) {
			if (p[0] == '%' && p + 1 < line + n && p[1] == '%')
				p++;
			else if (p[0] == '%')
				continue;
			*o++ = *p;
		}
		line += n;
		if (line[0] == '\r' && line[1] == '\n')
			line += 2;
		else if (*line)
			line++;
	}
	*o = '\0';
	if (host->set_reply(ms->c, code, enh[0] ? enh : NULL, text) != 0)
		host->log(ms->c, SC_LOG_WARNING, "milter %s: reply \"%s\" refused by the host; "
		    "using the default", ms->conf->socket, reply);
	free(text);
	return reply[0] == '5' ? SC_REJECT : SC_TEMPFAIL;
}

static void	send_body_piece(struct msess *ms);

/* Keep a message change for the final reply. */
static void
keep_change(struct msess *ms, const struct mc_reply *r)
{
	switch (changes_keep(&ms->changes, r)) {
	case CHANGE_KEPT:
		break;
	case CHANGE_NOMEM:
		fail(ms, ACT_DEFAULT, "out of memory keeping a message change");
		break;
	case CHANGE_TOO_MUCH:
		fail(ms, ACT_DEFAULT, "more than %u octets of message changes", MAX_QUEUED_CHANGES);
		break;
	}
}

/* Make the kept changes through the host; true when the milter asked for quarantine. */
static bool
apply_changes(struct msess *ms)
{
	const struct changes_target t = {
		.host = host,
		.c = ms->c,
		.socket = ms->conf->socket,
		.actions = ms->actions,
		.leadspc = skips(ms, SMFIP_HDR_LEADSPC),
	};

	return changes_apply(&ms->changes, &t);
}

/* The milter's answer to the waiting command cmd: the hook's verdict. */
static void
reply_final(struct msess *ms, char cmd, const struct mc_reply *r)
{
	enum sc_verdict v;
	bool rcpt = cmd == SMFIC_RCPT;
	bool message = cmd != SMFIC_CONNECT && cmd != SMFIC_HELO && cmd != SMFIC_UNKNOWN;

	switch (r->cmd) {
	case SMFIR_CONTINUE:
	case SMFIR_SKIP:
		if (cmd == SMFIC_BODY) {
			if (r->cmd == SMFIR_SKIP)
				ms->skip_body = true;
			else if (ms->body_off < ms->body_len) {
				send_body_piece(ms);
				return;
			}
		}
		v = SC_CONTINUE;
		break;
	case SMFIR_ACCEPT:
		v = SC_ACCEPT;
		break;
	case SMFIR_REJECT:
		/* Postfix's and sendmail's texts (at connect: the host's greeting). */
		if (cmd != SMFIC_CONNECT)
			host->set_reply(ms->c, 550, "5.7.1", "Command rejected");
		v = SC_REJECT;
		break;
	case SMFIR_TEMPFAIL:
	case SMFIR_CONN_FAIL:
		if (cmd != SMFIC_CONNECT)
			host->set_reply(ms->c, 451, "4.7.1", "Service unavailable - try again later");
		v = SC_TEMPFAIL;
		break;
	case SMFIR_REPLYCODE:
		if ((v = reply_code(ms, r->text)) == SC_PENDING) {
			fail(ms, ACT_DEFAULT, "malformed SMFIR_REPLYCODE \"%.100s\"", r->text);
			return;
		}
		break;
	case SMFIR_DISCARD:
		v = SC_DISCARD;
		break;
	case SMFIR_SHUTDOWN:
		fail(ms, ACT_SHUTDOWN, "SMFIR_SHUTDOWN in reply to %s", mc_name(cmd, 0));
		return;
	default:
		fail(ms, ACT_DEFAULT, "unexpected %s in reply to %s", mc_name(r->cmd, 1),
		    mc_name(cmd, 0));
		return;
	}
	free(ms->body);
	ms->body = NULL;
	ms->body_len = ms->body_off = 0;
	/* libmilter takes SMFIC_QUIT_NC after these (not after ACCEPT, REJECT...: back at HELO). */
	if ((cmd == SMFIC_BODYEOB && r->cmd == SMFIR_CONTINUE) ||
	    (cmd == SMFIC_UNKNOWN && r->cmd != SMFIR_ACCEPT))
		ms->reusable = true;
	if (cmd == SMFIC_BODYEOB) {
		/* The end of the message: its changes, then the verdict. */
		if ((v == SC_CONTINUE || v == SC_ACCEPT) && apply_changes(ms))
			v = SC_QUARANTINE;
		changes_clear(&ms->changes);
		ms->in_transaction = false;
		ms->msg_done = true;
	} else if (message && (v == SC_ACCEPT || v == SC_DISCARD ||
	    (!rcpt && (v == SC_REJECT || v == SC_TEMPFAIL)))) {
		/* The milter is done with this message (libmilter is back at HELO). */
		ms->msg_done = true;
		if (!(rcpt && v == SC_DISCARD))
			ms->in_transaction = false;
	}
	finish_hook(ms, v);
}

/* SMFIC_OPTNEG's reply: what was negotiated; then the connect step. */
static void
negotiated(struct msess *ms, const struct mc_reply *r);

/* One reply from the milter (the link's on_reply). */
static void
on_reply(void *owner, const struct mc_reply *r)
{
	struct msess *ms = owner;
	struct waiting w;

	if (ms->nwaiting == 0) {
		fail(ms, ACT_DEFAULT, "%s when no reply was due", mc_name(r->cmd, 1));
		return;
	}
	w = ms->waiting[0];
	if (r->cmd == SMFIR_PROGRESS) {
		arm_timer(ms);
		return;
	}
	if (w.cmd == SMFIC_OPTNEG || r->cmd == SMFIC_OPTNEG) {
		if (w.cmd != r->cmd) {
			fail(ms, ACT_DEFAULT, "%s in reply to %s", mc_name(r->cmd, 1),
			    mc_name(w.cmd, 0));
			return;
		}
		reply_received(ms);
		negotiated(ms, r);
		return;
	}
	if (!mc_reply_is_final(r->cmd)) {
		if (w.cmd != SMFIC_BODYEOB) {
			fail(ms, ACT_DEFAULT, "%s in reply to %s (only allowed at end of message)",
			    mc_name(r->cmd, 1), mc_name(w.cmd, 0));
			return;
		}
		if (!w.discard)
			keep_change(ms, r);
		return;
	}
	reply_received(ms);
	if (w.discard)
		return;
	reply_final(ms, w.cmd, r);
}

/* The link failed (its on_error): why, in the words the log has always used. */
static void
on_link_error(void *owner, enum mlink_error e, int status, const char *detail)
{
	struct msess *ms = owner;
	char note[200];

	switch (e) {
	case MLINK_CONNECT:
		fail(ms, ACT_DEFAULT, "cannot connect: %s", uv_strerror(status));
		break;
	case MLINK_READ_START:
		fail(ms, ACT_DEFAULT, "cannot read: %s", uv_strerror(status));
		break;
	case MLINK_READ:
		if (status == UV_EOF)
			fail(ms, ACT_DEFAULT, "the milter closed the connection%s%s",
			    ms->nwaiting ? " instead of replying" : "",
			    oversize_note(ms, note, sizeof(note)));
		else
			fail(ms, ACT_DEFAULT, "reading from the milter: %s%s", uv_strerror(status),
			    oversize_note(ms, note, sizeof(note)));
		break;
	case MLINK_WRITE:
		fail(ms, ACT_DEFAULT, "writing to the milter: %s%s", uv_strerror(status),
		    oversize_note(ms, note, sizeof(note)));
		break;
	case MLINK_FEED:
		fail(ms, ACT_DEFAULT, "reading from the milter: %s", detail);
		break;
	case MLINK_MALFORMED:
		fail(ms, ACT_DEFAULT, "malformed reply: %s", detail);
		break;
	case MLINK_TIMEOUT:
		if (ms->state == MS_CONNECTING)
			fail(ms, ACT_DEFAULT, "no connection within %llu s",
			    (unsigned long long)(ms->conf->timeout_connect / 1000));
		else
			fail(ms, ACT_DEFAULT, "no reply to %s within %llu s",
			    ms->nwaiting ? mc_name(ms->waiting[0].cmd, 0) : "?",
			    (unsigned long long)(timeout_for(ms, ms->nwaiting ?
			    ms->waiting[0].cmd : 0) / 1000));
		break;
	}
}

/* --- the connect step ------------------------------------------------------------ */

/* The client as SMFIC_CONNECT tells it. */
static int
encode_connect(struct msess *ms, const void *arg)
{
	const char *addr = host->get(ms->c, "client_addr");
	const char *name = host->get(ms->c, "client_name");
	const char *port = host->get(ms->c, "client_port");
	char hostname[300];

	(void)arg;
	if (addr == NULL)
		return mc_enc_connect(&ms->out, name ? name : "localhost", SMFIA_UNKNOWN, 0, NULL);
	if (name == NULL)
		snprintf(hostname, sizeof(hostname), "[%s]", addr);
	else
		snprintf(hostname, sizeof(hostname), "%s", name);
	return mc_enc_connect(&ms->out, hostname, strchr(addr, ':') ? SMFIA_INET6 : SMFIA_INET,
	    (uint16_t)(port ? strtoul(port, NULL, 10) : 0), addr);
}

static void
negotiated(struct msess *ms, const struct mc_reply *r)
{
	struct mlink *l = ms->link;

	if (r->version < 2 || r->version > SMFI_PROT_VERSION) {
		fail(ms, ACT_DEFAULT, "protocol version %u not supported", r->version);
		return;
	}
	if (r->actions & ~(uint32_t)OFFERED_ACTIONS)
		host->log(ms->c, SC_LOG_WARNING, "milter %s: actions 0x%x were not offered; ignored",
		    ms->conf->socket, r->actions & ~(uint32_t)OFFERED_ACTIONS);
	if (r->protocol & ~(uint32_t)(OFFERED_PROTOCOL | SMFI_INTERNAL))
		host->log(ms->c, SC_LOG_WARNING, "milter %s: protocol steps 0x%x were not "
		    "offered; ignored", ms->conf->socket,
		    r->protocol & ~(uint32_t)(OFFERED_PROTOCOL | SMFI_INTERNAL));
	l->actions = ms->actions = r->actions & OFFERED_ACTIONS;
	l->protocol = ms->protocol = r->protocol & OFFERED_PROTOCOL;
	/* As sendmail: 1M or 256K when the reply says so, else libmilter's default. */
	l->max_data = ms->max_data = (r->protocol & SMFIP_MDS_1M) ? MAX_DATA_1M :
	    (r->protocol & SMFIP_MDS_256K) ? MAX_DATA_256K : MAX_DATA_DEFAULT;
	for (int i = 0; i < MC_NSTAGES; i++) {
		if (r->macros[i] == NULL)
			continue;
		if (!(ms->actions & SMFIF_SETSYMLIST))
			host->log(ms->c, SC_LOG_WARNING, "milter %s: macro list without "
			    "SMFIF_SETSYMLIST; used anyway", ms->conf->socket);
		names_free(&l->symlist[i]);
		if (names_add(&l->symlist[i], r->macros[i]) != 0) {
			fail(ms, ACT_DEFAULT, "out of memory");
			return;
		}
		l->has_symlist[i] = true;
	}
	host->log(ms->c, SC_LOG_DEBUG, "milter %s: version %u, actions 0x%x, protocol 0x%x, "
	    "commands of up to %zu octets", ms->conf->socket, r->version, ms->actions,
	    ms->protocol, ms->max_data);
	set_state(ms, MS_READY, "negotiated");
	step(ms, SMFIM_CONNECT, SMFIP_NOCONNECT, SMFIP_NR_CONN, SMFIC_CONNECT, encode_connect, NULL);
}

/* The socket is connected (the link's on_connected): negotiate. */
static void
on_link_connected(void *owner)
{
	struct msess *ms = owner;

	set_state(ms, MS_NEGOTIATING, "connected");
	if (mc_enc_optneg(&ms->out, SMFI_PROT_VERSION, OFFERED_ACTIONS, OFFERED_PROTOCOL) != 0) {
		encode_failed(ms);
		return;
	}
	if (flush_out(ms))
		expect_reply(ms, SMFIC_OPTNEG);
}

static const struct mlink_events link_events = {
	.on_connected = on_link_connected,
	.on_reply = on_reply,
	.on_error = on_link_error,
};

/* Open the connection to the milter, without waiting; false after fail(). */
static bool
link_open(struct msess *ms)
{
	struct mlink *l;
	int rc;

	if ((l = mlink_new(host->loop(ms->c), &ms->conf->addr, ms, &link_events, &rc)) == NULL) {
		if (rc == UV_ENOMEM)
			fail(ms, ACT_DEFAULT, "out of memory");
		else
			fail(ms, ACT_DEFAULT, "cannot make a socket: %s", uv_strerror(rc));
		return false;
	}
	ms->link = l;
	arm_timer(ms);
	if ((rc = mlink_connect(l)) != 0) {
		fail(ms, ACT_DEFAULT, "cannot connect: %s", uv_strerror(rc));
		return false;
	}
	return true;
}

/*
 * Start on an idle connection if there is one: negotiated already, the
 * milter expects SMFIC_CONNECT (after our SMFIC_QUIT_NC).  False when the
 * pool is empty.
 */
static bool
link_reuse(struct msess *ms)
{
	unsigned dropped;
	struct mlink *l = mlink_pool_take(&ms->conf->pool, ms, &link_events, &dropped);

	for (unsigned i = 0; i < dropped; i++)
		host->log(ms->c, SC_LOG_INFO, "milter %s: an idle connection was closed by the "
		    "milter (or it wrote while idle); dropped", ms->conf->socket);
	if (l == NULL)
		return false;
	ms->link = l;
	ms->reused = true;
	ms->actions = l->actions;
	ms->protocol = l->protocol;
	ms->max_data = l->max_data;
	host->log(ms->c, SC_LOG_DEBUG, "milter %s: an idle connection used again (session %u "
	    "on it)", ms->conf->socket, l->sessions + 1);
	set_state(ms, MS_READY, "connection used again");
	step(ms, SMFIM_CONNECT, SMFIP_NOCONNECT, SMFIP_NR_CONN, SMFIC_CONNECT, encode_connect, NULL);
	return true;
}

/* --- sessions ------------------------------------------------------------------ */

/* This session's conversation, or NULL (no connect hook ran, or out of memory). */
static struct msess *
session_of(struct sc_ctx *c)
{
	return *host->state(c);
}

/*
 * Common start of a hook: the verdict to return at once (the milter is
 * gone or done with this message), or SC_PENDING to go on.
 */
static enum sc_verdict
hook_precheck(struct msess *ms, enum hook h)
{
	if (ms == NULL)
		return SC_CONTINUE;
	if (ms->pending != HOOK_NONE) {
		host->log(ms->c, SC_LOG_ERROR, "milter %s: %s hook while %s waits; tempfail",
		    ms->conf->socket, hook_names[h], hook_names[ms->pending]);
		return SC_TEMPFAIL;
	}
	if (ms->state == MS_FAILED)
		return failed_verdict(ms, h, false);
	if (ms->state != MS_READY)
		return SC_CONTINUE;
	if (h > HOOK_MAIL && HOOK_IN_MESSAGE(h) && ms->msg_done)
		return SC_CONTINUE;
	return SC_PENDING;
}

static enum sc_verdict
m_connect(struct sc_ctx *c)
{
	void **slot = host->state(c);
	struct msess *ms;

	if (*slot != NULL)
		return SC_CONTINUE;
	if ((ms = calloc(1, sizeof(*ms))) == NULL) {
		host->log(c, SC_LOG_ERROR, "milter: out of memory");
		return SC_TEMPFAIL;
	}
	ms->c = c;
	ms->conf = host->instance(c);
	changes_init(&ms->changes);
	ms->state = MS_CONNECTING;
	*slot = ms;
	hook_enter(ms, HOOK_CONNECT);
	if (!link_reuse(ms))
		link_open(ms);
	return hook_return(ms);
}

static int
encode_helo(struct msess *ms, const void *arg)
{
	return mc_enc_helo(&ms->out, arg);
}

static enum sc_verdict
m_helo(struct sc_ctx *c, const char *name)
{
	struct msess *ms = session_of(c);
	enum sc_verdict v;

	if ((v = hook_precheck(ms, HOOK_HELO)) != SC_PENDING)
		return v;
	hook_enter(ms, HOOK_HELO);
	step(ms, SMFIM_HELO, SMFIP_NOHELO, SMFIP_NR_HELO, SMFIC_HELO, encode_helo, name);
	return hook_return(ms);
}

/* MAIL and RCPT arguments for the encoders. */
struct envelope_arg {
	const char	*addr, *params;
};

static int
encode_mail(struct msess *ms, const void *arg)
{
	const struct envelope_arg *e = arg;

	return mc_enc_mail(&ms->out, e->addr, e->params);
}

static int
encode_rcpt(struct msess *ms, const void *arg)
{
	const struct envelope_arg *e = arg;

	return mc_enc_rcpt(&ms->out, e->addr, e->params);
}

static enum sc_verdict
m_mail(struct sc_ctx *c, const char *addr, const char *params)
{
	struct msess *ms = session_of(c);
	struct envelope_arg e = { addr ? addr : "", params };
	enum sc_verdict v;

	if ((v = hook_precheck(ms, HOOK_MAIL)) != SC_PENDING)
		return v;
	message_reset(ms);
	hook_enter(ms, HOOK_MAIL);
	if (ms->in_transaction && mc_enc_abort(&ms->out) != 0)
		encode_failed(ms);
	ms->in_transaction = true;
	if (ms->state == MS_READY)
		step(ms, SMFIM_ENVFROM, SMFIP_NOMAIL, SMFIP_NR_MAIL, SMFIC_MAIL, encode_mail, &e);
	return hook_return(ms);
}

static enum sc_verdict
m_rcpt(struct sc_ctx *c, const char *addr, const char *params)
{
	struct msess *ms = session_of(c);
	struct envelope_arg e = { addr ? addr : "", params };
	enum sc_verdict v;

	if ((v = hook_precheck(ms, HOOK_RCPT)) != SC_PENDING)
		return v;
	hook_enter(ms, HOOK_RCPT);
	step(ms, SMFIM_ENVRCPT, SMFIP_NORCPT, SMFIP_NR_RCPT, SMFIC_RCPT, encode_rcpt, &e);
	return hook_return(ms);
}

static int
encode_data(struct msess *ms, const void *arg)
{
	(void)arg;
	return mc_enc_data(&ms->out);
}

static enum sc_verdict
m_data(struct sc_ctx *c)
{
	struct msess *ms = session_of(c);
	enum sc_verdict v;

	if ((v = hook_precheck(ms, HOOK_DATA)) != SC_PENDING)
		return v;
	hook_enter(ms, HOOK_DATA);
	step(ms, SMFIM_DATA, SMFIP_NODATA, SMFIP_NR_DATA, SMFIC_DATA, encode_data, NULL);
	return hook_return(ms);
}

/* A header for the encoder: the value as the milter gets it. */
struct header_arg {
	const char	*name, *value;
};

static int
encode_header(struct msess *ms, const void *arg)
{
	const struct header_arg *h = arg;

	return mc_enc_header(&ms->out, h->name, h->value);
}

/*
 * One header.  A header longer than what the milter negotiated (max_data)
 * goes all the same: the milter may read more than it said (libmilter's
 * smfi_setmaxdatasize() is not negotiated).  If it hangs up, the log says
 * why (on_link_error).
 */
static enum sc_verdict
m_header(struct sc_ctx *c, const char *name, const char *value)
{
	struct msess *ms = session_of(c);
	struct header_arg h = { name, NULL };
	enum sc_verdict v;
	char *out;
	size_t size;

	if ((v = hook_precheck(ms, HOOK_HEADER)) != SC_PENDING)
		return v;
	if (skips(ms, SMFIP_NOHDRS))
		return SC_CONTINUE;
	hook_enter(ms, HOOK_HEADER);
	if ((out = header_value_out(ms, value)) == NULL) {
		encode_failed(ms);
		return hook_return(ms);
	}
	h.value = out;
	size = strlen(name) + 1 + strlen(out) + 1;
	if (size > ms->max_data) {
		ms->oversize = size;
		host->log(c, SC_LOG_DEBUG, "milter %s: header %.64s of %zu octets, over the %zu "
		    "the milter negotiated", ms->conf->socket, name, size, ms->max_data);
	}
	step(ms, SMFIM_EOH, SMFIP_NOHDRS, SMFIP_NR_HDR, SMFIC_HEADER, encode_header, &h);
	free(out);
	return hook_return(ms);
}

static int
encode_eoh(struct msess *ms, const void *arg)
{
	(void)arg;
	return mc_enc_eoh(&ms->out);
}

static enum sc_verdict
m_eoh(struct sc_ctx *c)
{
	struct msess *ms = session_of(c);
	enum sc_verdict v;

	if ((v = hook_precheck(ms, HOOK_EOH)) != SC_PENDING)
		return v;
	if (skips(ms, SMFIP_NOEOH))
		return SC_CONTINUE;	/* no event, no macros, as Postfix */
	hook_enter(ms, HOOK_EOH);
	step(ms, SMFIM_EOH, SMFIP_NOEOH, SMFIP_NR_EOH, SMFIC_EOH, encode_eoh, NULL);
	return hook_return(ms);
}

/*
 * The next piece of the body chunk (at most MILTER_CHUNK_SIZE); with
 * SMFIP_NR_BODY all of it at once, and the hook continues.
 */
static void
send_body_piece(struct msess *ms)
{
	do {
		size_t n = ms->body_len - ms->body_off;

		if (n > MILTER_CHUNK_SIZE)
			n = MILTER_CHUNK_SIZE;
		if (!put_macros(ms, SMFIM_EOM, SMFIC_BODY))
			return;
		if (mc_enc_body(&ms->out, ms->body + ms->body_off, n) != 0) {
			encode_failed(ms);
			return;
		}
		ms->body_off += n;
	} while (skips(ms, SMFIP_NR_BODY) && ms->body_off < ms->body_len);
	if (!flush_out(ms))
		return;
	if (skips(ms, SMFIP_NR_BODY)) {
		free(ms->body);
		ms->body = NULL;
		ms->body_len = ms->body_off = 0;
		finish_hook(ms, SC_CONTINUE);
	} else {
		expect_reply(ms, SMFIC_BODY);
	}
}

static enum sc_verdict
m_body(struct sc_ctx *c, const unsigned char *p, size_t n)
{
	struct msess *ms = session_of(c);
	enum sc_verdict v;

	if ((v = hook_precheck(ms, HOOK_BODY)) != SC_PENDING)
		return v;
	if (skips(ms, SMFIP_NOBODY) || ms->skip_body || n == 0)
		return SC_CONTINUE;
	free(ms->body);
	if ((ms->body = malloc(n)) == NULL) {
		host->log(c, SC_LOG_ERROR, "milter %s: out of memory", ms->conf->socket);
		return SC_TEMPFAIL;
	}
	memcpy(ms->body, p, n);	/* p is valid during this call only */
	ms->body_len = n;
	ms->body_off = 0;
	hook_enter(ms, HOOK_BODY);
	send_body_piece(ms);
	return hook_return(ms);
}

static int
encode_bodyeob(struct msess *ms, const void *arg)
{
	(void)arg;
	return mc_enc_bodyeob(&ms->out);
}

static enum sc_verdict
m_eom(struct sc_ctx *c)
{
	struct msess *ms = session_of(c);
	enum sc_verdict v;

	if ((v = hook_precheck(ms, HOOK_EOM)) != SC_PENDING) {
		/* The milter left the message earlier: close its transaction. */
		if (ms && ms->state == MS_READY && ms->in_transaction && ms->pending == HOOK_NONE) {
			ms->in_transaction = false;
			if (mc_enc_abort(&ms->out) != 0)
				encode_failed(ms);
			else
				flush_out(ms);
		}
		return v;
	}
	hook_enter(ms, HOOK_EOM);
	changes_clear(&ms->changes);
	step(ms, SMFIM_EOM, 0, 0, SMFIC_BODYEOB, encode_bodyeob, NULL);
	return hook_return(ms);
}

static int
encode_unknown(struct msess *ms, const void *arg)
{
	return mc_enc_unknown(&ms->out, arg);
}

/*
 * A command the proxy does not know: SMFIC_UNKNOWN with the line, unless
 * the milter asked not to see it (SMFIP_NOUNKNOWN) or not to answer it
 * (SMFIP_NR_UNKN).  No macros, as Postfix (milter_unknown_command_macros
 * is empty by default) and sendmail.
 *
 * Not inside a transaction when the milter asked not to see DATA
 * (SMFIP_NODATA): libmilter's state table goes from UNKNOWN to HELO, MAIL,
 * RCPT, DATA, BODY, ABORT or QUIT only, and drops a HEADER, EOH or BODYEOB
 * that comes next without replying to it (the session would wait for
 * timeout.content, then get default_action).  With DATA sent, the step
 * after an unknown command inside a transaction is always one it takes.
 * Postfix and sendmail send it anyway (and stall the same way).
 */
static enum sc_verdict
m_unknown(struct sc_ctx *c, const char *line)
{
	struct msess *ms = session_of(c);
	enum sc_verdict v;

	if ((v = hook_precheck(ms, HOOK_UNKNOWN)) != SC_PENDING)
		return v;
	if (skips(ms, SMFIP_NOUNKNOWN))
		return SC_CONTINUE;
	if (ms->in_transaction && skips(ms, SMFIP_NODATA)) {
		host->log(c, SC_LOG_DEBUG, "milter %s: no SMFIC_UNKNOWN inside a transaction "
		    "(the milter skips DATA, libmilter would not take the header next)",
		    ms->conf->socket);
		return SC_CONTINUE;
	}
	hook_enter(ms, HOOK_UNKNOWN);
	step(ms, -1, SMFIP_NOUNKNOWN, SMFIP_NR_UNKN, SMFIC_UNKNOWN, encode_unknown, line);
	return hook_return(ms);
}

/* The message ended without our verdict: tell the milter, drop an owed reply. */
static void
m_abort(struct sc_ctx *c)
{
	struct msess *ms = session_of(c);

	if (ms == NULL)
		return;
	if (ms->pending != HOOK_NONE) {
		/* Cancelled: its reply is read and dropped, resume() is not called. */
		ms->pending = HOOK_NONE;
		for (size_t i = 0; i < ms->nwaiting; i++)
			ms->waiting[i].discard = true;
	}
	message_reset(ms);
	if (ms->state == MS_READY && ms->in_transaction) {
		ms->in_transaction = false;
		if (mc_enc_abort(&ms->out) != 0)
			encode_failed(ms);
		else
			flush_out(ms);
	}
}

/* The session is over: QUIT, close the connection, free the state. */
static void
m_close(struct sc_ctx *c)
{
	void **slot = host->state(c);
	struct msess *ms = *slot;

	if (ms == NULL)
		return;
	*slot = NULL;
	ms->pending = HOOK_NONE;
	link_release(ms, true);
	message_reset(ms);
	mc_buf_free(&ms->out);
	free(ms);
}

/* --- the module ------------------------------------------------------------------ */

static int
m_init(const struct sc_host *h, const struct sc_options *o, void **instance,
    char *err, size_t errlen)
{
	struct milter_conf *conf;

	host = h;
	if (milter_conf_new(h, o, &conf, err, errlen) != 0)
		return -1;
	*instance = conf;
	return 0;
}

static void
m_fini(void *instance)
{
	milter_conf_free(instance);
}

const struct sc_filter smtpchain_filter = {
	.abi = SC_FILTER_ABI,
	.size = sizeof(struct sc_filter),
	.name = "milter",
	.needs = SC_NEED_HEADERS | SC_NEED_BODY,
	.init = m_init,
	.fini = m_fini,
	.connect = m_connect,
	.helo = m_helo,
	.mail = m_mail,
	.rcpt = m_rcpt,
	.data = m_data,
	.header = m_header,
	.eoh = m_eoh,
	.body = m_body,
	.eom = m_eom,
	.abort = m_abort,
	.close = m_close,
	.unknown = m_unknown,
};
