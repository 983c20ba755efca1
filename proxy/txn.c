/*
 * txn.c - one mail transaction: its reset, the recipients kept for a held
 * message, and the envelope changes filters make (see txn.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "msgstore.h"
#include "txn.h"

/* Forget a message's BDAT state (at its outcome, or a new MAIL). */
void
txn_reset_bdat(struct txn *t)
{
	t->bdat_convert = false;
	t->bdat_data_open = false;
	t->bdat_relayed = false;
	t->bdat_failed = false;
	free(t->bdat_error);
	t->bdat_error = NULL;
	t->msg_octets = 0;
	t->oversize = false;
}

/* Forget a held message and its envelope copy. */
static void
reset_held(struct txn *t)
{
	if (t->store) {
		msgstore_free(t->store);
		t->store = NULL;
	}
	t->spooling = t->pumping = false;
	t->store_errno = 0;
	for (size_t i = 0; i < t->nrcpts; i++) {
		free(t->rcpts[i].line);
		free(t->rcpts[i].addr);
	}
	t->nrcpts = t->rcpt_reply_next = t->replay_cursor = 0;
	t->replay_wait = t->replay_ok = 0;
	free(t->replay_error);
	t->replay_error = NULL;
	free(t->mail_line);
	t->mail_line = NULL;
	free(t->mail_canon);
	t->mail_canon = NULL;
	free(t->env_from);
	t->env_from = NULL;
	t->envelope_changed = false;
	t->modified = false;
}

/* The transaction is over (its outcome, RSET, a new EHLO/HELO). */
void
txn_reset(struct txn *t)
{
	t->msgid[0] = '\0';
	t->in_mail = false;
	t->mail_smtputf8 = false;
	t->rcpt_ok = 0;
	t->from[0] = '\0';
	txn_reset_bdat(t);
	reset_held(t);
}

/* The session's end. */
void
txn_free(struct txn *t)
{
	txn_reset(t);
	free(t->rcpts);
	t->rcpts = NULL;
	t->rcpts_cap = 0;
}

/* The MAIL command of a held message, as relayed and as the filters saw it. */
void
txn_set_mail(struct txn *t, const char *line, size_t len, const char *canon)
{
	free(t->mail_line);
	t->mail_line = xstrndup(line, len);
	free(t->mail_canon);
	t->mail_canon = xstrdup(canon);
}

/*
 * Keep a relayed recipient of a held message, for a replay after filters
 * and the envelope header of a quarantined one.  Pending until its reply:
 * then kept if accepted, dropped if refused (nothing later needs it).
 */
void
txn_rcpt_record(struct txn *t, const char *line, size_t len, const char *addr,
    enum rcpt_status status)
{
	struct rcpt_entry *e;

	if (t->nrcpts == t->rcpts_cap) {
		t->rcpts_cap = t->rcpts_cap ? t->rcpts_cap * 2 : 8;
		t->rcpts = xrealloc(t->rcpts, t->rcpts_cap * sizeof(*t->rcpts));
	}
	e = &t->rcpts[t->nrcpts++];
	e->line = xstrndup(line, len);
	e->addr = xstrdup(addr);
	e->status = (uint8_t)status;
}

/* Forget recipient i (refused): its slot goes to the ones after it, still pending. */
void
txn_rcpt_drop(struct txn *t, size_t i)
{
	free(t->rcpts[i].line);
	free(t->rcpts[i].addr);
	memmove(t->rcpts + i, t->rcpts + i + 1, (t->nrcpts - i - 1) * sizeof(*t->rcpts));
	t->nrcpts--;
}

/* The recipients the backend gets for a held message (kept, or added by filters). */
bool
txn_rcpt_goes(const struct rcpt_entry *e)
{
	return e->status == RCPT_OK || e->status == RCPT_ADDED;
}

/* change_from() from a module: the MAIL command for the replay. */
int
txn_change_from(struct txn *t, const char *addr, const char *params)
{
	char line[1200];
	const char *now = t->env_from ? t->env_from : t->mail_canon;

	snprintf(line, sizeof(line), "MAIL FROM:<%s>%s%s", addr, params && *params ? " " : "",
	    params ? params : "");
	if (now != NULL && strcmp(line, now) == 0)
		return 0;	/* the sender and parameters it has */
	free(t->env_from);
	t->env_from = xstrdup(line);
	snprintf(t->from, sizeof(t->from), "%s", addr);
	t->envelope_changed = true;
	return 1;
}

/* add_rcpt() from a module; a recipient already there, as written, is not added twice. */
int
txn_add_rcpt(struct txn *t, const char *addr, const char *params)
{
	char line[1200];
	int n = snprintf(line, sizeof(line), "RCPT TO:<%s>%s%s", addr,
	    params && *params ? " " : "", params ? params : "");

	for (size_t i = 0; i < t->nrcpts; i++)
		if (txn_rcpt_goes(&t->rcpts[i]) && strcmp(t->rcpts[i].line, line) == 0)
			return 0;
	txn_rcpt_record(t, line, (size_t)n, addr, RCPT_ADDED);
	t->envelope_changed = true;
	return 1;
}

/* del_rcpt() from a module: every matching recipient (case-insensitive, <> optional). */
int
txn_del_rcpt(struct txn *t, const char *addr)
{
	size_t len = strlen(addr);
	int rc = 0;

	if (len >= 2 && addr[0] == '<' && addr[len - 1] == '>') {
		addr++;
		len -= 2;
	}
	for (size_t i = 0; i < t->nrcpts; i++) {
		struct rcpt_entry *e = &t->rcpts[i];

		if (txn_rcpt_goes(e) && strlen(e->addr) == len && strncasecmp(e->addr, addr, len) == 0) {
			e->status = RCPT_DELETED;
			t->envelope_changed = true;
			rc = 1;
		}
	}
	return rc;
}
