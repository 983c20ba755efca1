/*
 * changes.c - the message changes a milter asks for (see changes.h).
 *
 * DESCRIPTION
 *	Changes arrive during end of message and are kept, at most
 *	MAX_QUEUED_CHANGES octets of them; they are made through the host
 *	only when the final reply is CONTINUE or ACCEPT (milter.c decides),
 *	each one only if the milter negotiated its action (else a warning).
 *	A change the host refuses is logged and the others still go.
 *
 *	An INSHEADER index counts the MTA's Received: as header 0, as behind
 *	Postfix (insert_index).  Header values from the milter get their
 *	leading space back (unless it negotiated SMFIP_HDR_LEADSPC) and CRLF
 *	for LF; a replaced body's bare LFs become CRLF.  Envelope addresses
 *	go to the host without their angle brackets.
 */
#include <stdlib.h>
#include <string.h>

#include "changes.h"

/* A message change received during end of message, made at its final reply. */
struct change {
	struct change	*next;
	char		 cmd;		/* SMFIR_* */
	uint32_t	 index;
	char		*a, *b;		/* name/value, addr/args, reason */
	unsigned char	*data;		/* SMFIR_REPLBODY */
	size_t		 len;
};

void
changes_init(struct changes *cs)
{
	cs->head = NULL;
	cs->tail = &cs->head;
	cs->size = 0;
}

static void
change_free(struct change *ch)
{
	free(ch->a);
	free(ch->b);
	free(ch->data);
	free(ch);
}

void
changes_clear(struct changes *cs)
{
	struct change *ch, *next;

	for (ch = cs->head; ch != NULL; ch = next) {
		next = ch->next;
		change_free(ch);
	}
	changes_init(cs);
}

enum changes_kept
changes_keep(struct changes *cs, const struct mc_reply *r)
{
	struct change *ch = calloc(1, sizeof(*ch));
	const char *a = r->name ? r->name : r->addr ? r->addr : r->text;
	const char *b = r->name ? r->value : r->args;
	size_t size = sizeof(*ch) + (a ? strlen(a) : 0) + (b ? strlen(b) : 0) + r->len;

	if (ch == NULL)
		return CHANGE_NOMEM;
	ch->cmd = r->cmd;
	ch->index = r->index;
	if ((a && (ch->a = strdup(a)) == NULL) || (b && (ch->b = strdup(b)) == NULL))
		goto nomem;
	if (r->cmd == SMFIR_REPLBODY && r->len > 0) {
		if ((ch->data = malloc(r->len)) == NULL)
			goto nomem;
		memcpy(ch->data, r->data, r->len);
		ch->len = r->len;
	}
	if (size > MAX_QUEUED_CHANGES - cs->size) {
		change_free(ch);
		return CHANGE_TOO_MUCH;
	}
	cs->size += size;
	*cs->tail = ch;
	cs->tail = &ch->next;
	return CHANGE_KEPT;
nomem:
	change_free(ch);
	return CHANGE_NOMEM;
}

/*
 * A header value from the milter as the host wants it: the leading space
 * back (unless SMFIP_HDR_LEADSPC), LF line ends as CRLF.
 */
static char *
header_value_in(const struct changes_target *t, const char *v)
{
	size_t n = strlen(v), o = 0;
	char *out = malloc(2 * n + 2);

	if (out == NULL)
		return NULL;
	if (!t->leadspc)
		out[o++] = ' ';
	for (size_t i = 0; i < n; i++) {
		if (v[i] == '\n' && (i == 0 || v[i - 1] != '\r'))
			out[o++] = '\r';
		out[o++] = v[i];
	}
	out[o] = '\0';
	return out;
}

/* An envelope address without its angle brackets (in place). */
static char *
unbracket(char *addr)
{
	size_t n = strlen(addr);

	if (n >= 2 && addr[0] == '<' && addr[n - 1] == '>') {
		addr[n - 1] = '\0';
		return addr + 1;
	}
	return addr;
}

/* Whether the milter negotiated an action; logs when it did not. */
static bool
allowed(const struct changes_target *t, uint32_t action, char cmd)
{
	if (t->actions & action)
		return true;
	t->host->log(t->c, SC_LOG_WARNING, "milter %s: %s without negotiating it; ignored",
	    t->socket, mc_name(cmd, 1));
	return false;
}

/* Log a change the host refused. */
static void
check_change(const struct changes_target *t, int rc, char cmd, const char *arg)
{
	if (rc != 0)
		t->host->log(t->c, SC_LOG_WARNING, "milter %s: %s %s refused by the host",
		    t->socket, mc_name(cmd, 1), arg ? arg : "");
}

/* Replace the body with one chunk from the milter, bare LF made CRLF. */
static int
replace_body_chunk(const struct changes_target *t, const struct change *ch, bool *prev_cr)
{
	static const unsigned char empty[1];
	unsigned char buf[8192];
	size_t o = 0;
	int rc = 0;

	if (ch->len == 0)
		return t->host->replace_body(t->c, empty, 0);
	for (size_t i = 0; i < ch->len && rc == 0; i++) {
		unsigned char ch_i = ch->data[i];

		if (ch_i == '\n' && !*prev_cr)
			buf[o++] = '\r';
		buf[o++] = ch_i;
		*prev_cr = ch_i == '\r';
		if (o >= sizeof(buf) - 2) {
			rc = t->host->replace_body(t->c, buf, o);
			o = 0;
		}
	}
	if (rc == 0 && o > 0)
		rc = t->host->replace_body(t->c, buf, o);
	return rc;
}

/*
 * Where SMFIR_INSHEADER's index k puts a header in our list.  Behind
 * Postfix the milter's header 0 is Postfix's own Received: (Postfix passes
 * k + 1 to its 1-based insert), which the milter never saw; behind us the
 * backend prepends its Received: on top afterwards.  So *mta is where that
 * Received: stands in the milter's view (0 until headers are inserted above
 * it): an index at or above it is ours as is and pushes it down, one below
 * it is one less.  A lone index k >= 1 is k - 1, and the message the
 * backend passes on reads as behind Postfix.
 */
static size_t
insert_index(uint32_t k, size_t *mta)
{
	if (k <= *mta) {
		(*mta)++;
		return k;
	}
	return k - 1;
}

/* SMFIR_ADDHEADER, INSHEADER, CHGHEADER. */
static void
header_change(const struct changes_target *t, struct change *ch, size_t *mta)
{
	const struct sc_host *host = t->host;
	uint32_t index = ch->index ? ch->index : 1;
	char *v;

	if (!allowed(t, ch->cmd == SMFIR_CHGHEADER ? SMFIF_CHGHDRS : SMFIF_ADDHDRS, ch->cmd))
		return;
	if (ch->cmd == SMFIR_CHGHEADER && ch->b[0] == '\0') {
		check_change(t, host->change_header(t->c, ch->a, index, NULL), ch->cmd, ch->a);
		return;
	}
	if ((v = header_value_in(t, ch->b)) == NULL)
		return;
	if (ch->cmd == SMFIR_ADDHEADER)
		check_change(t, host->add_header(t->c, ch->a, v), ch->cmd, ch->a);
	else if (ch->cmd == SMFIR_INSHEADER)
		check_change(t, host->insert_header(t->c, insert_index(ch->index, mta), ch->a, v),
		    ch->cmd, ch->a);
	else
		check_change(t, host->change_header(t->c, ch->a, index, v), ch->cmd, ch->a);
	free(v);
}

bool
changes_apply(struct changes *cs, const struct changes_target *t)
{
	const struct sc_host *host = t->host;
	struct sc_ctx *c = t->c;
	bool prev_cr = false, quarantine = false;
	size_t mta = 0;		/* the MTA's Received: in the milter's view (insert_index) */

	for (struct change *ch = cs->head; ch != NULL; ch = ch->next) {
		switch (ch->cmd) {
		case SMFIR_ADDHEADER:
		case SMFIR_INSHEADER:
		case SMFIR_CHGHEADER:
			header_change(t, ch, &mta);
			break;
		case SMFIR_ADDRCPT:
			if (allowed(t, SMFIF_ADDRCPT, ch->cmd))
				check_change(t, host->add_rcpt(c, unbracket(ch->a), NULL), ch->cmd, ch->a);
			break;
		case SMFIR_ADDRCPT_PAR:
			if (allowed(t, SMFIF_ADDRCPT_PAR, ch->cmd))
				check_change(t, host->add_rcpt(c, unbracket(ch->a), ch->b), ch->cmd, ch->a);
			break;
		case SMFIR_DELRCPT:
			if (allowed(t, SMFIF_DELRCPT, ch->cmd))
				check_change(t, host->del_rcpt(c, unbracket(ch->a)), ch->cmd, ch->a);
			break;
		case SMFIR_CHGFROM:
			if (allowed(t, SMFIF_CHGFROM, ch->cmd))
				check_change(t, host->change_from(c, unbracket(ch->a), ch->b), ch->cmd,
				    ch->a);
			break;
		case SMFIR_REPLBODY:
			if (allowed(t, SMFIF_CHGBODY, ch->cmd))
				check_change(t, replace_body_chunk(t, ch, &prev_cr), ch->cmd, NULL);
			break;
		case SMFIR_QUARANTINE:
			if (allowed(t, SMFIF_QUARANTINE, ch->cmd)) {
				quarantine = true;
				host->log(c, SC_LOG_INFO, "milter %s: quarantine: %s", t->socket,
				    ch->a ? ch->a : "");
			}
			break;
		}
	}
	changes_clear(cs);
	return quarantine;
}
