/*
 * hold.c - a message held for the filters (see hold.h): the store filled
 * from DATA, the chain's verdict on it, the envelope replayed when filters
 * changed it, and the store streamed to the backend.  Never answers the
 * client: each step tells the session what to do next.
 *
 * Works on a struct hold_env (hold.h): the parts of the session a held
 * message needs (the transaction, the backend, the filter run, the
 * client's facts), not the session.  Calls down only: backend.c, filter.c,
 * msgstore.c, quarantine.c, txn.c, replies.c, log.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "clientfacts.h"
#include "config.h"
#include "conn.h"
#include "filter.h"
#include "hold.h"
#include "log.h"
#include "msgstore.h"
#include "quarantine.h"
#include "replies.h"
#include "smtp.h"
#include "txn.h"

/* One of the proxy's own replies that does not name the host. */
static const char *
fixed(enum reply_id id)
{
	return reply_line(id, NULL, NULL, 0);
}

/* The message ends without the backend, with reply. */
static struct hold_result
ended(const char *reply, const char *status)
{
	return (struct hold_result){ .action = HOLD_END, .reply = reply, .status = status };
}

/* The message is kept from the backend on purpose (status says how). */
static struct hold_result
kept_back(const char *status)
{
	return (struct hold_result){ .action = HOLD_KEPT_BACK, .status = status };
}

/*
 * Start holding a message for the filters (DATA, or the first BDAT): the
 * session answers 354 itself (every recipient has its answer by now: the
 * caller waited for pcount 0); the backend gets DATA only when the filters
 * have decided.  Returns NULL, or the refusal to give instead.
 */
const char *
hold_begin(const struct hold_env *h)
{
	if (!h->tx->in_mail)
		return fixed(REPLY_NEED_MAIL);
	if (h->tx->rcpt_ok == 0)
		return fixed(REPLY_NO_RCPTS);
	h->tx->store = msgstore_new(h->cfg->spool_dir, h->cfg->spool_memory, h->cfg->max_header_size);
	h->tx->spooling = true;
	h->tx->held_dot = false;
	h->tx->store_errno = 0;
	h->tx->msg_octets = 0;
	return NULL;
}

/* The reply that ends a held message the store could not take. */
static const char *
store_error_reply(int err)
{
	if (err == EMSGSIZE)
		return fixed(REPLY_HEADER_TOO_BIG);
	if (err == EILSEQ)	/* no filter could see past it: see msgstore.h */
		return fixed(REPLY_NUL_IN_HEADER);
	return fixed(REPLY_NO_STORAGE);
}

/*
 * Checked DATA bytes into the store, without the end marker ".\r\n" (whose
 * dot may have ended the previous piece: a line-start dot is held back
 * until the next bytes tell what it is).
 */
void
hold_feed(const struct hold_env *h, const char *p, size_t used, enum dot_result r)
{
	size_t n = used;

	if (h->tx->store_errno != 0)
		return;
	if (h->tx->held_dot) {
		h->tx->held_dot = false;
		if (r == DOT_END && used == 2)
			return;		/* that dot began the end marker */
		if (msgstore_feed(h->tx->store, ".", 1) != 0) {
			h->tx->store_errno = errno;
			return;
		}
	}
	if (r == DOT_END) {
		n = used - 3;
	} else if (r == DOT_MORE && used > 0 && dot_scan_at_dot(&h->tx->dot)) {
		n = used - 1;
		h->tx->held_dot = true;
	}
	if (n > 0 && msgstore_feed(h->tx->store, p, n) != 0)
		h->tx->store_errno = errno;
}

/* The filters have decided a held message: act on it. */
static struct hold_result
hold_decided(const struct hold_env *h, enum filter_answer answer, const char *reply)
{
	size_t n = 0;

	if (answer == FILTER_REFUSE)
		return ended(reply, reply[0] == '4' ? "deferred" : "rejected");
	switch (h->filter->msg_outcome) {
	case SC_DISCARD:
		return kept_back("discarded");
	case SC_QUARANTINE:
		if (quarantine(h->cfg->quarantine_dir, h->id, h->client, h->tx, filter_decider(h->filter)) == 0)
			return kept_back("quarantined");
		return ended(fixed(REPLY_CANNOT_QUARANTINE), "deferred");
	default:
		break;
	}
	if (!h->backend->up)
		return (struct hold_result){ .action = HOLD_LOST };
	if (!h->tx->envelope_changed) {
		backend_send(h->backend, "DATA\r\n", 6, BS_REPLAY_DATA, SMTP_DATA);
		return (struct hold_result){ .action = HOLD_WAIT };
	}
	for (size_t i = 0; i < h->tx->nrcpts; i++)
		n += txn_rcpt_goes(&h->tx->rcpts[i]);
	if (n == 0) {
		log_id(h->id, LOG_LVL_INFO, "filters removed every recipient");
		return kept_back("discarded");
	}
	/* The envelope again, as the filters left it; DATA once every answer is in. */
	backend_send(h->backend, "RSET\r\n", 6, BS_RESET, SMTP_RSET);
	/* RSET made the backend forget XFORWARD */
	backend_xforward(h->backend, h->client->helo, h->client->esmtp);
	backend_sendf(h->backend, BS_REPLAY_MAIL, "%s\r\n",
	    h->tx->env_from ? h->tx->env_from : h->tx->mail_line);
	h->tx->replay_cursor = 0;
	h->tx->replay_wait = 0;
	h->tx->replay_ok = 0;
	for (size_t i = 0; i < h->tx->nrcpts; i++) {
		if (!txn_rcpt_goes(&h->tx->rcpts[i]))
			continue;
		backend_sendf(h->backend, BS_REPLAY_RCPT, "%s\r\n", h->tx->rcpts[i].line);
		h->tx->replay_wait++;
	}
	return (struct hold_result){ .action = HOLD_WAIT };
}

/* The held message through the chain (again after a pending module answers). */
struct hold_result
hold_filter(const struct hold_env *h)
{
	const char *reply;
	enum filter_answer answer = filter_phase(h->filter, FILTER_MESSAGE, NULL, NULL, &reply);

	if (answer == FILTER_WAIT)
		return (struct hold_result){ .action = HOLD_WAIT };
	return hold_decided(h, answer, reply);
}

/* End of a held message's data: refuse it, or on to the filters. */
struct hold_result
hold_end(const struct hold_env *h)
{
	if (h->tx->oversize)
		return ended(fixed(REPLY_MESSAGE_TOO_BIG), "rejected");
	if (h->tx->store_errno == 0 && msgstore_finish(h->tx->store) != 0)
		h->tx->store_errno = errno;
	if (h->tx->store_errno != 0) {
		log_id(h->id, LOG_LVL_WARNING, "holding the message: %s",
		    h->tx->store_errno == EILSEQ ? "NUL character in a header value" :
		    strerror(h->tx->store_errno));
		return ended(store_error_reply(h->tx->store_errno),
		    h->tx->store_errno == EMSGSIZE || h->tx->store_errno == EILSEQ ? "rejected" : "deferred");
	}
	return (struct hold_result){ .action = HOLD_FILTER };
}

/* Stream the held message to the backend after its 354, as the backend reads it. */
struct hold_result
hold_pump(const struct hold_env *h)
{
	static char buf[65536];

	while (h->tx->pumping && h->backend->up &&
	    outq_pending(&h->backend->conn.out) <= OUT_HIGH_WATER) {
		ssize_t n = msgstore_output_read(h->tx->store, buf, sizeof(buf));

		if (n < 0) {
			log_id(h->id, LOG_LVL_ERROR, "reading the held message: %s", strerror(errno));
			return (struct hold_result){ .action = HOLD_IO_ERROR };
		}
		if (n == 0) {
			h->tx->pumping = false;
			backend_data(h->backend, ".\r\n", 3);
			backend_send(h->backend, NULL, 0, BS_DOT, SMTP_DATA);
			break;
		}
		backend_data(h->backend, buf, (size_t)n);
	}
	return (struct hold_result){ .action = HOLD_WAIT };
}

/* The backend's 354 for the held message: stream the store to it. */
struct hold_result
hold_send(const struct hold_env *h)
{
	if (msgstore_output_begin(h->tx->store) != 0) {
		log_id(h->id, LOG_LVL_ERROR, "reading the held message: %s", strerror(errno));
		return (struct hold_result){ .action = HOLD_IO_ERROR };
	}
	h->tx->pumping = true;
	return hold_pump(h);
}

/* A reply to the replayed envelope of a held message. */
struct hold_result
hold_replay_reply(const struct hold_env *h, int step, const char *r, size_t n, int code)
{
	if (step == BS_REPLAY_MAIL) {
		if (code / 100 != 2 && h->tx->replay_error == NULL)
			h->tx->replay_error = xstrndup(r, n);
		return (struct hold_result){ .action = HOLD_WAIT };
	}
	/* BS_REPLAY_RCPT: which recipient this answers, in the order they were sent */
	while (h->tx->replay_cursor < h->tx->nrcpts &&
	    !txn_rcpt_goes(&h->tx->rcpts[h->tx->replay_cursor]))
		h->tx->replay_cursor++;
	if (code / 100 == 2) {
		h->tx->replay_ok++;
	} else if (h->tx->replay_cursor < h->tx->nrcpts) {
		struct rcpt_entry *e = &h->tx->rcpts[h->tx->replay_cursor];

		log_id(h->id, LOG_LVL_WARNING, "backend refused %s recipient <%s> after the "
		    "filters: %.*s", e->status == RCPT_ADDED ? "added" : "kept", e->addr,
		    (int)(n > 2 ? n - 2 : n), r);
		if (e->status == RCPT_OK && h->tx->replay_error == NULL)
			h->tx->replay_error = xstrndup(r, n);	/* the client was told 250 for it */
	}
	h->tx->replay_cursor++;
	if (--h->tx->replay_wait > 0)
		return (struct hold_result){ .action = HOLD_WAIT };
	if (h->tx->replay_error != NULL || h->tx->replay_ok == 0)
		return ended(fixed(REPLY_REPLAY_REFUSED), "deferred");
	backend_send(h->backend, "DATA\r\n", 6, BS_REPLAY_DATA, SMTP_DATA);
	return (struct hold_result){ .action = HOLD_WAIT };
}
