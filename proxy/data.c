/*
 * data.c - the message's octets from the client (see data.h): DATA after
 * 354 and BDAT chunks, checked by dotstream.c before a byte of them goes on,
 * then relayed to the backend as they are, dot-stuffed into the backend's
 * DATA (a backend without CHUNKING), stored for the filters (hold.c), or
 * dropped (over the size limit, a refused chunk).  A bare CR or LF ends the
 * session with 521 and drops the backend connection before any end of data.
 *
 * Beside command.c, which calls it for the DATA and BDAT verbs and their
 * octets: it changes the state and answers through session.c, relays
 * through backend.c, and hands a held message's end back to command.c
 * (STEP_HELD); it never calls command.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "data.h"
#include "esmtp.h"
#include "filter.h"
#include "hold.h"
#include "log.h"
#include "msgstore.h"
#include "replies.h"
#include "session.h"

/*
 * BDAT count [LAST] (RFC 3030).  Relayed as it is to a backend with
 * CHUNKING; to one without, the proxy opens DATA once per message and sends
 * the chunks dot-stuffed; when filters hold messages, the chunks go to the
 * store like DATA.  A chunk that would take the message over the size limit
 * is refused at once with 552, and the session ends: the backend never gets
 * a LAST for it, and not one octet of it is read or stored.
 */
enum step_result
cmd_bdat(struct session *s, const struct smtp_cmd *cmd, const char *line, size_t len)
{
	const char *sp;
	size_t numlen;
	uint64_t count;
	bool last = false;

	if (!esmtp_offered(&s->offered, "CHUNKING")) {
		session_local_reply_of(s, REPLY_NOT_IMPLEMENTED);
		return STEP_NEXT;
	}
	sp = memchr(cmd->arg, ' ', cmd->arglen);
	numlen = sp ? (size_t)(sp - cmd->arg) : cmd->arglen;
	if (sp) {
		size_t rest = cmd->arglen - numlen;

		while (rest > 0 && *sp == ' ')
			sp++, rest--;
		if (rest == 4 && strncasecmp(sp, "LAST", 4) == 0)
			last = true;
		else
			numlen = 0;	/* bad syntax */
	}
	if (esmtp_parse_count(cmd->arg, numlen, &count) != 0) {
		/* The octets that follow cannot be told from commands: end here. */
		if (s->backend.pcount > 0)
			return STEP_STOP;
		session_fail_of(s, REPLY_SYNTAX_BDAT);
		return STEP_STOP;
	}
	if (s->tx.size_limit && (s->tx.msg_octets > s->tx.size_limit ||
	    count > s->tx.size_limit - s->tx.msg_octets)) {
		/*
		 * A chunk that cannot fit: refused before one octet of it is
		 * read or stored (its count may be anything up to 2^64-1, so
		 * it cannot be read and skipped), and the session ends: the
		 * octets that follow cannot be told from commands.
		 */
		if (s->backend.pcount > 0)
			return STEP_STOP;
		session_log(s, LOG_LVL_WARNING, "BDAT chunk of %" PRIu64 " octets after %" PRIu64
		    " would pass the limit of %" PRIu64 ": refusing the message", count,
		    s->tx.msg_octets, s->tx.size_limit);
		session_fail_of(s, REPLY_MESSAGE_TOO_BIG);
		return STEP_STOP;
	}
	if (filter_holds_message(&s->filter) && !s->tx.spooling && !s->tx.bdat_failed) {
		const char *reply;

		if (s->backend.pcount > 0)
			return STEP_STOP;	/* the recipients' answers decide */
		switch (filter_phase(&s->filter, FILTER_DATA, NULL, NULL, &reply)) {
		case FILTER_WAIT:
			return STEP_STOP;
		case FILTER_REFUSE:
			break;
		case FILTER_GO:
			reply = hold_begin(&s->hold);
			dot_stuffer_init(&s->tx.stuff);
			break;
		}
		if (reply) {	/* this message's chunks are read and refused with it */
			s->tx.bdat_failed = true;
			s->tx.bdat_error = xstrdup(reply);
		}
	}
	s->tx.bdat_left = count;
	s->tx.bdat_last = last;
	if (s->tx.spooling || s->tx.bdat_failed) {
		/* the octets go to the store, or nowhere */
	} else if (s->backend.caps.chunking) {
		if (!s->tx.bdat_relayed) {
			crlf_checker_init(&s->tx.bdat_crlf);
			s->tx.bdat_relayed = true;
		}
		backend_send(&s->backend, line, len, last ? BS_DOT : BS_COMMAND, SMTP_BDAT);
		s->last_sync = last;	/* the next message waits for this one's answer */
	} else if (!s->tx.bdat_data_open) {
		/* Open DATA at the backend first, then come back to this line. */
		if (s->backend.pcount > 0)
			return STEP_STOP;
		backend_send(&s->backend, "DATA\r\n", 6, BS_BDAT_DATA, SMTP_DATA);
		s->tx.bdat_convert = true;
		s->last_sync = true;
		s->tx.bdat_left = 0;
		return STEP_STOP;
	}
	session_set_state(s, SS_BDAT, last ? "BDAT LAST" : "BDAT");
	return STEP_NEXT;
}

/*
 * The answer to our DATA for BDAT chunks to a backend without CHUNKING:
 * 354 opens it; anything else answers this and the transaction's other
 * chunks.  Not relayed.
 */
bool
reply_bdat_data(struct session *s, const char *r, size_t n, int code)
{
	if (code == 354) {
		s->tx.bdat_data_open = true;
		dot_stuffer_init(&s->tx.stuff);
		return false;
	}
	s->tx.bdat_failed = true;
	while (n > 0 && (r[n - 1] == '\n' || r[n - 1] == '\r'))
		n--;
	free(s->tx.bdat_error);
	s->tx.bdat_error = xstrndup(r, n);
	return false;
}

/* Message data after 354: check it, pass it on (or to the store), find its end. */
enum step_result
process_data(struct session *s)
{
	size_t used;
	enum dot_result r = dot_scan(&s->tx.dot, iobuf_head(&s->client.in), s->client.in.len, &used);

	if (!s->tx.oversize && s->tx.size_limit && s->tx.dot.octets > s->tx.size_limit) {
		session_log(s, LOG_LVL_WARNING, "message over %" PRIu64 " octets: discarding it",
		    s->tx.size_limit);
		s->tx.oversize = true;
		if (!s->tx.spooling)
			backend_abort(&s->backend);
		session_set_state(s, SS_DISCARD, "over the size limit");
	}
	if (!s->tx.oversize) {
		if (s->cfg->log.transcript_body)
			session_transcript(s, "c>p", iobuf_head(&s->client.in), used);
		if (!s->tx.spooling)
			backend_data(&s->backend, iobuf_head(&s->client.in), used);
		else
			hold_feed(&s->hold, iobuf_head(&s->client.in), used, r);
	}
	iobuf_consume(&s->client.in, used);
	s->tx.msg_octets = s->tx.dot.octets;
	switch (r) {
	case DOT_MORE:
		return STEP_STOP;
	case DOT_END:
		if (s->srv->transcript) {
			char note[64];

			snprintf(note, sizeof(note), "(message data, %" PRIu64 " octets)", s->tx.msg_octets);
			session_transcript(s, "c>p", note, strlen(note));
		}
		if (s->tx.spooling)
			return STEP_HELD;	/* the session runs hold_end() */
		if (s->tx.oversize) {
			session_fail_of(s, REPLY_MESSAGE_TOO_BIG);
			return STEP_STOP;
		}
		backend_send(&s->backend, NULL, 0, BS_DOT, SMTP_DATA);
		s->last_sync = true;
		session_set_state(s, SS_COMMAND, "end of data");
		return STEP_NEXT;
	case DOT_BAD_CR:
	case DOT_BAD_LF:
		session_log(s, LOG_LVL_WARNING, "bare <%s> in message data after %" PRIu64
		    " octets: refusing the message (SMTP smuggling?)",
		    r == DOT_BAD_CR ? "CR" : "LF", s->tx.dot.octets);
		backend_abort(&s->backend);
		session_fail_of(s, REPLY_BARE_CRLF_DATA);
		return STEP_STOP;
	}
	return STEP_STOP;
}

/* BDAT octets stuffed into a DATA stream, for the backend or for the store. */
static bool
bdat_stuff_out(struct session *s, const char *p, size_t n)
{
	char out[16384];
	size_t used = 0, produced, off = 0;

	while (off < n) {
		enum dot_result r = dot_stuff(&s->tx.stuff, p + off, n - off, &used, out,
		    sizeof(out), &produced);

		if (s->tx.spooling) {
			if (s->tx.store_errno == 0 && msgstore_feed(s->tx.store, out, produced) != 0)
				s->tx.store_errno = errno;
		} else {
			backend_data(&s->backend, out, produced);
		}
		off += used;
		if (r != DOT_MORE)
			return false;
	}
	return true;
}

/* Bare CR or LF in BDAT data that must become a DATA stream: refuse, end. */
static void
bdat_refuse_bare(struct session *s)
{
	session_log(s, LOG_LVL_WARNING, "bare <CR> or <LF> in BDAT data: refusing the message");
	backend_abort(&s->backend);
	session_fail_of(s, REPLY_BARE_CRLF_DATA);
}

/* The octets of a BDAT chunk: relayed, stuffed into DATA or the store, or dropped. */
enum step_result
process_bdat(struct session *s)
{
	size_t n = s->client.in.len < s->tx.bdat_left ? s->client.in.len : (size_t)s->tx.bdat_left;
	const char *p = iobuf_head(&s->client.in);
	bool forward = !s->tx.oversize && !s->tx.bdat_failed;

	if (forward && (s->tx.bdat_convert || s->tx.spooling)) {
		if (!bdat_stuff_out(s, p, n)) {
			bdat_refuse_bare(s);
			return STEP_STOP;
		}
	} else if (forward) {
		/*
		 * Relayed as it is: checked before a byte goes on.  The backend
		 * delivers nothing before the last octet of a LAST chunk, and
		 * bdat_refuse_bare() drops its connection before that.
		 */
		size_t bad;

		if (crlf_check(&s->tx.bdat_crlf, p, n, &bad) != DOT_MORE ||
		    (s->tx.bdat_last && n == s->tx.bdat_left && crlf_check_cr_pending(&s->tx.bdat_crlf))) {
			bdat_refuse_bare(s);
			return STEP_STOP;
		}
		backend_data(&s->backend, p, n);
	}
	iobuf_consume(&s->client.in, n);
	s->tx.bdat_left -= n;
	s->tx.msg_octets += n;
	if (s->tx.bdat_left > 0)
		return STEP_STOP;

	session_set_state(s, SS_COMMAND, "end of chunk");
	if (s->tx.oversize) {
		session_fail_of(s, REPLY_MESSAGE_TOO_BIG);
		return STEP_STOP;
	}
	if (s->tx.bdat_failed) {
		session_local_reply(s, "%s", s->tx.bdat_error);
		if (s->tx.bdat_last)
			txn_reset_bdat(&s->tx);	/* the client starts over with a new MAIL */
		return STEP_NEXT;
	}
	if (!s->tx.bdat_convert && !s->tx.spooling)
		return STEP_NEXT;	/* the backend answers the chunk */
	if (s->tx.bdat_last) {
		char end[8];
		int m = dot_stuff_finish(&s->tx.stuff, end, sizeof(end));

		if (m < 0) {
			bdat_refuse_bare(s);
			return STEP_STOP;
		}
		if (s->tx.spooling) {
			/* the store takes the stream without its final ".\r\n" */
			if (s->tx.store_errno == 0 && msgstore_feed(s->tx.store, end, (size_t)m - 3) != 0)
				s->tx.store_errno = errno;
			return STEP_HELD;	/* the session runs hold_end() */
		}
		backend_data(&s->backend, end, (size_t)m);
		backend_send(&s->backend, NULL, 0, BS_DOT, SMTP_BDAT);
		s->last_sync = true;
		s->tx.bdat_data_open = false;	/* the backend's DATA is ended: no longer inside it */
		return STEP_NEXT;
	}
	session_local_reply(s, "%s: %" PRIu64 " octets received", reply_line(REPLY_OK, NULL, NULL, 0),
	    s->tx.msg_octets);
	return STEP_NEXT;
}
