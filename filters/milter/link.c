/*
 * link.c - the milter module's connection to a milter (see link.h), over
 * filters/common/channel.c: the milter side of what milter.c's protocol
 * state machine says and hears.
 *
 * DESCRIPTION
 *	Replies are cut from the stream by the codec's decoder and handed up
 *	one at a time (on_reply) while a session listens; a failure of the
 *	socket, the decoder or the timer is handed up once (on_error), and
 *	the session decides what its client hears.  After a read that leaves
 *	a reply owed (the changes and the verdict at end of message come as
 *	several), TCP_QUICKACK (channel.c says why: 40 ms a message).
 *
 *	Pool: a connection whose milter is where libmilter takes
 *	SMFIC_QUIT_NC (milter.c decides when) gets it, written only if the
 *	socket takes it at once, and waits for the next session without
 *	keeping the loop alive.  An idle connection the milter closes (or
 *	writes on) is dropped, when the loop reads it or when a session
 *	would take it (channel.c's peek).
 *
 *	Drain: a session that ends while the connection is being made or
 *	negotiated, or while replies are owed (a client that connects and
 *	leaves at once, one that drops mid-message), leaves it to finish
 *	alone instead of a bare EOF, which milters log as an error (rspamd:
 *	"Unexpected EOF"): it negotiates if it was still connecting, reads the
 *	replies owed, then says ABORT (in a transaction) and QUIT, as Postfix
 *	does at the end of every session.  Bounded by the timeout of what it
 *	waits for; it does not keep the loop alive.
 */
#include <stdlib.h>
#include <string.h>

#include "link.h"

/* --- macro name lists ------------------------------------------------------ */

void
names_free(struct namelist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

int
names_add(struct namelist *l, const char *s)
{
	static const char sep[] = " \t,";

	for (s += strspn(s, sep); *s; s += strspn(s, sep)) {
		size_t n = strcspn(s, sep);
		char **v = realloc(l->v, (l->n + 1) * sizeof(*v));

		if (v == NULL)
			return -1;
		l->v = v;
		if ((l->v[l->n] = strndup(s, n)) == NULL)
			return -1;
		l->n++;
		s += n;
	}
	return 0;
}

/* --- the connection --------------------------------------------------------- */

/* Both handles are closed: free the link. */
static void
on_free(struct channel *ch)
{
	struct mlink *l = ch->data;

	mc_decoder_free(&l->dec);
	for (int i = 0; i < MC_NSTAGES; i++)
		names_free(&l->symlist[i]);
	free(l);
}

/* Hand a failure to the session, if one listens. */
static void
report(struct mlink *l, enum mlink_error e, int status, const char *detail)
{
	if (l->owner != NULL)
		l->ev->on_error(l->owner, e, status, detail);
}

struct mlink *
mlink_new(uv_loop_t *loop, const struct channel_addr *a, void *owner,
    const struct mlink_events *ev, int *rc)
{
	struct mlink *l = calloc(1, sizeof(*l));

	if (l == NULL) {
		*rc = UV_ENOMEM;
		return NULL;
	}
	mc_decoder_init(&l->dec, MC_MAX_PACKET);
	if ((*rc = channel_init(&l->ch, loop, a, l, on_free)) != 0)
		return NULL;		/* frees itself */
	l->owner = owner;
	l->ev = ev;
	return l;
}

void
mlink_detach(struct mlink *l)
{
	l->owner = NULL;
}

static void
on_timeout(struct channel *ch)
{
	report(ch->data, MLINK_TIMEOUT, 0, NULL);
}

void
mlink_wait(struct mlink *l, uint64_t ms)
{
	l->waiting = ms > 0;
	if (ms > 0)
		channel_timer_start(&l->ch, on_timeout, ms);
	else
		channel_timer_stop(&l->ch);
}

static void
on_written(struct channel *ch, int status)
{
	struct mlink *l = ch->data;

	if (status < 0 && status != UV_ECANCELED && l->owner != NULL)
		report(l, MLINK_WRITE, status, NULL);
	else if (status < 0 && ch->idle)
		channel_pool_drop(ch);
}

int
mlink_send(struct mlink *l, const struct mc_buf *cmds)
{
	return channel_write(&l->ch, cmds->p, cmds->len, on_written);
}

void
mlink_close(struct mlink *l, bool quit, bool abort)
{
	struct mc_buf bye = { 0 };

	l->owner = NULL;
	if (quit && l->ch.connected && channel_queued(&l->ch) == 0) {
		if ((!abort || mc_enc_abort(&bye) == 0) && mc_enc_quit(&bye) == 0)
			(void)channel_try_write(&l->ch, bye.p, bye.len);
		mc_buf_free(&bye);
	}
	channel_close(&l->ch);
}

/* --- the pool ---------------------------------------------------------------- */

bool
mlink_pool_put(struct mlink *l, struct channel_pool *p)
{
	struct mc_buf bye = { 0 };
	bool kept = false;

	if (channel_pool_full(p) || !l->ch.connected || mc_decoder_pending(&l->dec) > 0 ||
	    channel_queued(&l->ch) > 0)
		return false;
	if (mc_enc_quit_nc(&bye) == 0)
		kept = channel_try_write(&l->ch, bye.p, bye.len);
	mc_buf_free(&bye);
	if (!kept)
		return false;
	l->owner = NULL;
	mlink_wait(l, 0);
	return channel_pool_put(p, &l->ch);
}

struct mlink *
mlink_pool_take(struct channel_pool *p, void *owner, const struct mlink_events *ev,
    unsigned *dropped)
{
	struct channel *ch = channel_pool_take(p, dropped);
	struct mlink *l;

	if (ch == NULL)
		return NULL;
	l = ch->data;
	l->owner = owner;
	l->ev = ev;
	l->sessions++;
	return l;
}

/* --- a connection without a session ------------------------------------------ */

static void
on_drain_written(struct channel *ch, int status)
{
	if (status < 0)
		channel_close(ch);
}

/* After its goodbye, or after a failure, close it. */
static void
on_drain_last_written(struct channel *ch, int status)
{
	(void)status;
	channel_close(ch);
}

/* Write commands on a draining link; last: then close it. */
static void
drain_write(struct mlink *l, const struct mc_buf *cmds, bool last)
{
	if (cmds->len == 0 || channel_write(&l->ch, cmds->p, cmds->len,
	    last ? on_drain_last_written : on_drain_written) != 0)
		channel_close(&l->ch);
}

/* A draining link has every reply it was owed: ABORT if need be, QUIT, close. */
static void
drain_finish(struct mlink *l)
{
	struct mc_buf bye = { 0 };

	channel_timer_stop(&l->ch);
	if ((!l->drain_abort || mc_enc_abort(&bye) == 0) && mc_enc_quit(&bye) == 0)
		drain_write(l, &bye, true);
	else
		channel_close(&l->ch);
	mc_buf_free(&bye);
}

/* What a draining link reads: replies counted, nothing else looked at. */
static void
drain_read(struct mlink *l, ssize_t nread, const uv_buf_t *buf)
{
	struct mc_reply r;
	int rc;

	if (nread < 0 || mc_decoder_feed(&l->dec, buf->base, (size_t)nread) != 0) {
		channel_close(&l->ch);
		return;
	}
	while (l->owed > 0) {
		if ((rc = mc_decoder_next(&l->dec, &r)) == MC_NEED_MORE)
			return;
		if (rc == MC_ERROR) {
			channel_close(&l->ch);
			return;
		}
		if (r.cmd == SMFIC_OPTNEG || (r.cmd != SMFIR_PROGRESS && mc_reply_is_final(r.cmd)))
			l->owed--;
	}
	drain_finish(l);
}

/* A draining link waited long enough: close it. */
static void
on_drain_timeout(struct channel *ch)
{
	channel_close(ch);
}

void
mlink_drain(struct mlink *l, bool connecting, unsigned owed, bool abort, uint64_t timeout)
{
	l->owner = NULL;
	l->draining = true;
	l->drain_optneg = connecting;
	l->drain_abort = abort;
	l->owed = owed;
	channel_timer_start(&l->ch, on_drain_timeout, timeout);
	channel_keep_loop(&l->ch, false);
}

/* --- reading ----------------------------------------------------------------- */

/* Read what the milter sent, one reply at a time while the session listens. */
static void
on_read(struct channel *ch, ssize_t nread, const uv_buf_t *buf)
{
	struct mlink *l = ch->data;
	struct mc_reply r;
	int rc;

	if (ch->idle && nread != 0) {
		channel_pool_drop(ch);	/* closed by the milter, or talking out of turn */
		return;
	}
	if (l->draining) {
		if (nread != 0)
			drain_read(l, nread, buf);
		return;
	}
	if (l->owner == NULL || nread == 0)
		return;
	if (nread < 0) {
		report(l, MLINK_READ, (int)nread, NULL);
		return;
	}
	if (mc_decoder_feed(&l->dec, buf->base, (size_t)nread) != 0) {
		report(l, MLINK_FEED, 0, mc_decoder_error(&l->dec));
		return;
	}
	/* A reply may end the session (resume, then close): check l->owner each time. */
	while (l->owner != NULL) {
		if ((rc = mc_decoder_next(&l->dec, &r)) == MC_NEED_MORE)
			break;
		if (rc == MC_ERROR) {
			report(l, MLINK_MALFORMED, 0, mc_decoder_error(&l->dec));
			break;
		}
		l->ev->on_reply(l->owner, &r);
	}
	if (l->owner != NULL && l->waiting)
		channel_quickack(ch);
}

/* The socket is connected (or not). */
static void
on_connected(struct channel *ch, int status)
{
	struct mlink *l = ch->data;
	struct mc_buf optneg = { 0 };
	int rc;

	if (l->draining && status != UV_ECANCELED) {
		/* Its session is gone: negotiate, so that QUIT can follow. */
		if (status < 0 || channel_read_start(ch, on_read) != 0 ||
		    mc_enc_optneg(&optneg, SMFI_PROT_VERSION, OFFERED_ACTIONS, OFFERED_PROTOCOL) != 0) {
			mc_buf_free(&optneg);
			channel_close(ch);
			return;
		}
		l->owed = 1;
		drain_write(l, &optneg, false);
		mc_buf_free(&optneg);
		return;
	}
	if (l->owner == NULL || status == UV_ECANCELED)
		return;
	if (status < 0) {
		report(l, MLINK_CONNECT, status, NULL);
		return;
	}
	if ((rc = channel_read_start(ch, on_read)) != 0) {
		report(l, MLINK_READ_START, rc, NULL);
		return;
	}
	l->ev->on_connected(l->owner);
}

int
mlink_connect(struct mlink *l)
{
	return channel_connect(&l->ch, on_connected);
}
