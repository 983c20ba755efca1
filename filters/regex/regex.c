/*
 * regex.c - the "regex" filter module: Postfix header_checks(5),
 * body_checks and access(5) regular expression tables in front of the MTA.
 *
 * SYNOPSIS
 *	filter {
 *		module = "regex";
 *		header_checks = "/etc/smtpchain/header_checks";
 *		body_checks = "/etc/smtpchain/body_checks";
 *		client_checks = "/etc/smtpchain/client_checks";
 *		helo_checks = "/etc/smtpchain/helo_checks";
 *		sender_checks = "/etc/smtpchain/sender_checks";
 *		recipient_checks = "/etc/smtpchain/recipient_checks";
 *	}
 *
 * DESCRIPTION
 *	Each option is a table in Postfix's pcre: format (see rules.h and
 *	pcre_table(5)); each is optional, at least one is needed.  Tables are
 *	loaded once at start-up (and by `smtpchain -t`); an error names the
 *	file and line, and so does every log line about a rule.
 *
 *	client_checks	at connect: the client's verified name (when there is
 *			one), then its address; the first rule that applies
 *			to either decides, as with Postfix's check_client_access
 *	helo_checks	at HELO/EHLO: the name given
 *	sender_checks	at MAIL: the address, "<>" for the null sender
 *	recipient_checks at RCPT: each address; a refusal refuses that one
 *	header_checks	each header of the message, as one logical header
 *	body_checks	each line of the body (everything after the header
 *			section, MIME parts included: Postfix with
 *			disable_mime_input_processing)
 *
 * VERDICTS
 *	REJECT, 5NN	SC_REJECT with the rule's reply (4.x.x or a 4xx code:
 *			SC_TEMPFAIL); DEFER, DEFER_IF_PERMIT, 4NN: SC_TEMPFAIL
 *	DISCARD		SC_DISCARD; HOLD: SC_QUARANTINE.  At connect or HELO
 *			they are for every message of the session.
 *	OK, DUNNO	no action from this table: the chain goes on, and
 *			later filters and the backend still decide.  This is
 *			what OK means to a Postfix operator: it ends one
 *			restriction list, never content checks or other lists.
 *			SC_ACCEPT would skip every later filter (a virus
 *			scanner...) for the message or the whole session,
 *			which no Postfix OK does.
 *	WARN, INFO	a log line (warning, info); the search is over
 *	PREPEND (access) a header added at the top of the message, in the
 *			order the rules fired, each distinct header once;
 *			those of connect and HELO go into every message of
 *			the session (a new HELO replaces its own)
 *	PREPEND, REPLACE, IGNORE, STRIP (header_checks)
 *			header changes made at eom: PREPEND inserts the text
 *			as a header just before the matched one, REPLACE puts
 *			it in place of the matched header, IGNORE deletes it,
 *			STRIP deletes it and logs
 *
 *	REJECT and DISCARD in header or body checks end the inspection of
 *	the message at once, as in Postfix: the hook answers there, the rest
 *	of the message is not read and no header change is made.  HOLD is
 *	remembered, inspection goes on (a later REJECT or DISCARD still
 *	wins), and eom answers SC_QUARANTINE after making the header changes.
 *
 *	Access-table refusals are immediate: unlike Postfix's default
 *	smtpd_delay_reject, a client_checks REJECT refuses the connection.
 *
 * HEADER INDEXES
 *	The header hook sees the headers in order, so the n-th call of a
 *	message is header index n; a header's occurrence (among headers of
 *	its name, without case) is counted as they go by.  The changes are
 *	made at eom from the last header to the first, so that neither the
 *	index nor the occurrence of a header still to be changed has moved.
 *	The access PREPENDs go in last, at indexes 0, 1, ...
 *
 * BODY LINES
 *	The body hook gets arbitrary chunks; rules_body_feed cuts them into
 *	lines without CRLF and matches the lines of each chunk together (one
 *	Hyperscan scan for many lines), in order, with the same results and
 *	log lines as one by one.  A line longer than RULES_LINE_MAX (1 MB) is
 *	matched in pieces of 1 MB, each on its own (as Postfix's body_checks
 *	see pieces of line_length_limit bytes), so memory per session stays
 *	bounded and nothing after the first megabyte goes unseen.
 *
 * NEEDS
 *	smtpchain reads the descriptor after init(), so init() sets the
 *	hooks and needs this instance uses: an instance with access tables
 *	only (and no PREPEND in them) has no message hook and lets the proxy
 *	stream messages.
 *
 * Only <smtpchain/filter.h>, libc and PCRE2 (through rules.h).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <smtpchain/filter.h>

#include "rules.h"

/* One filter {} block. */
struct rx {
	struct rules	*hdr, *body, *client, *helo, *sender, *rcpt;
	bool		 occurrences;	/* header_checks can REPLACE/IGNORE/STRIP */
};

/* A header change of header_checks, made at eom. */
enum edit_kind { EDIT_PREPEND, EDIT_REPLACE, EDIT_DELETE };

struct edit {
	enum edit_kind	 kind;
	size_t		 index;		/* of the matched header */
	char		*oname;		/* REPLACE/DELETE: the matched header's name */
	size_t		 occ;		/* and its occurrence */
	char		*name, *value;	/* PREPEND/REPLACE: the new header */
};

/* Header texts "Name: value" from access PREPENDs. */
struct strlist {
	char		**v;
	size_t		 n, cap;
};

/* How many headers of a name went by (open addressing, lower-case keys). */
struct name_count {
	char		*name;
	size_t		 count;
};

/* Per session (host->state). */
struct rx_session {
	struct strlist	 conn_pre, helo_pre, msg_pre;

	/* The current message. */
	size_t		 nheaders;
	struct name_count *names;
	size_t		 nnames, namecap;
	struct edit	*edits;
	size_t		 nedits, editcap;
	bool		 hold;
	enum sc_verdict	 verdict;	/* what a body line decided */
	struct rules_liner liner;
};

static const struct sc_host *host;

/* Exported writable: init() sets the hooks and needs of each instance. */
extern struct sc_filter smtpchain_filter;

/* The answer to "out of memory" in a hook. */
static enum sc_verdict
rx_oom(struct sc_ctx *c)
{
	host->log(c, SC_LOG_ERROR, "out of memory");
	host->set_reply(c, 451, "4.3.0", "Error: insufficient system resources");
	return SC_TEMPFAIL;
}

/* --- small containers ---------------------------------------------------- */

static int
strlist_add(struct strlist *l, const char *s)
{
	char *d;

	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i], s) == 0)
			return 0;	/* each distinct header once */
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 4;
		char **v = realloc(l->v, ncap * sizeof(*v));

		if (v == NULL)
			return -1;
		l->v = v;
		l->cap = ncap;
	}
	if ((d = strdup(s)) == NULL)
		return -1;
	l->v[l->n++] = d;
	return 0;
}

static void
strlist_clear(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	l->n = 0;
}

static void
strlist_free(struct strlist *l)
{
	strlist_clear(l);
	free(l->v);
	l->v = NULL;
	l->cap = 0;
}

/* FNV-1a of a name without case. */
static size_t
name_hash(const char *s)
{
	size_t h = 2166136261u;

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch >= 'A' && ch <= 'Z')
			ch = (unsigned char)(ch - 'A' + 'a');
		h = (h ^ ch) * 16777619u;
	}
	return h;
}

/* Count one more header of this name; its occurrence, or 0 when out of memory. */
static size_t
name_seen(struct rx_session *s, const char *name)
{
	size_t i;

	if (2 * (s->nnames + 1) > s->namecap) {
		size_t ncap = s->namecap ? s->namecap * 2 : 64;
		struct name_count *v = calloc(ncap, sizeof(*v));

		if (v == NULL)
			return 0;
		for (size_t k = 0; k < s->namecap; k++) {
			if (s->names[k].name == NULL)
				continue;
			for (i = name_hash(s->names[k].name) & (ncap - 1); v[i].name; i = (i + 1) & (ncap - 1))
				;
			v[i] = s->names[k];
		}
		free(s->names);
		s->names = v;
		s->namecap = ncap;
	}
	for (i = name_hash(name) & (s->namecap - 1); s->names[i].name != NULL;
	    i = (i + 1) & (s->namecap - 1))
		if (strcasecmp(s->names[i].name, name) == 0)
			return ++s->names[i].count;
	if ((s->names[i].name = strdup(name)) == NULL)
		return 0;
	s->nnames++;
	return s->names[i].count = 1;
}

static struct edit *
edit_new(struct rx_session *s)
{
	struct edit *e;

	if (s->nedits == s->editcap) {
		size_t ncap = s->editcap ? s->editcap * 2 : 8;
		struct edit *v = realloc(s->edits, ncap * sizeof(*v));

		if (v == NULL)
			return NULL;
		s->edits = v;
		s->editcap = ncap;
	}
	e = &s->edits[s->nedits++];
	memset(e, 0, sizeof(*e));
	return e;
}

/* Forget the current message (after eom, in abort, at MAIL). */
static void
message_reset(struct rx_session *s)
{
	for (size_t i = 0; i < s->nedits; i++) {
		free(s->edits[i].oname);
		free(s->edits[i].name);
		free(s->edits[i].value);
	}
	s->nedits = 0;
	for (size_t i = 0; i < s->namecap; i++) {
		free(s->names[i].name);
		s->names[i].name = NULL;
		s->names[i].count = 0;
	}
	s->nnames = 0;
	if (s->namecap > 1024) {	/* a message with many names: give it back */
		free(s->names);
		s->names = NULL;
		s->namecap = 0;
	}
	s->nheaders = 0;
	s->hold = false;
	s->verdict = SC_CONTINUE;
	strlist_clear(&s->msg_pre);
	rules_liner_reset(&s->liner);
	if (s->liner.cap > 65536) {	/* a long line: do not keep up to 1 MB per session */
		rules_liner_free(&s->liner);
		rules_liner_init(&s->liner, RULES_LINE_MAX);
	}
}

/* The session's state, made on first use; NULL when out of memory. */
static struct rx_session *
session(struct sc_ctx *c)
{
	void **slot = host->state(c);
	struct rx_session *s = *slot;

	if (s == NULL && (s = calloc(1, sizeof(*s))) != NULL) {
		rules_liner_init(&s->liner, RULES_LINE_MAX);
		*slot = s;
	}
	return s;
}

/* --- logging ----------------------------------------------------------- */

/* A header as one safe log string: "Name: value", cut at 120 bytes. */
static const char *
header_for_log(char *buf, size_t size, const char *name, const char *value)
{
	size_t o = 0;
	const char *p;

	o = (size_t)snprintf(buf, size, "%.60s:", name);
	if (o >= size)
		o = size - 1;
	for (p = value; *p && o + 4 < size && o < 120; p++) {
		if (*p == '\r')
			continue;
		buf[o++] = *p == '\n' || *p == '\t' ? ' ' :
		    (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
	}
	if (*p != '\0' && o + 4 <= size) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

/* Up to size-1 bytes of p[0..len) for a log line, controls as '?', "..." when cut. */
static const char *
safe_for_log(char *buf, size_t size, const char *p, size_t len)
{
	size_t n = len < size - 1 ? len : size - 1;

	for (size_t i = 0; i < n; i++)
		buf[i] = (unsigned char)p[i] < 0x20 || p[i] == 0x7f ? '?' : p[i];
	if (n < len && n >= 3)
		memcpy(buf + n - 3, "...", 3);
	buf[n] = '\0';
	return buf;
}

/* Log what a rule did: "TABLE FILE:LINE: ACTION WHAT: text". */
static void
log_hit(struct sc_ctx *c, int level, const char *table, const struct rules_hit *h,
    const char *what)
{
	char text[204];

	safe_for_log(text, sizeof(text), h->text, h->textlen);
	if (h->action == RULES_REJECT)
		host->log(c, level, "%s %s:%u: %s %s: %d %s %s", table, h->file, h->line,
		    h->word, what, h->code, h->enhanced, text);
	else
		host->log(c, level, "%s %s:%u: %s %s%s%s", table, h->file, h->line,
		    h->word, what, h->textlen ? ": " : "", text);
}

/* The refusal of a rule: its reply, REJECT or TEMPFAIL by the code's class. */
static enum sc_verdict
refuse(struct sc_ctx *c, const struct rules_hit *h)
{
	if (host->set_reply(c, h->code, h->enhanced, h->text) != 0)
		host->log(c, SC_LOG_WARNING, "%s:%u: reply refused by the host; using the default",
		    h->file, h->line);
	return h->code < 500 ? SC_TEMPFAIL : SC_REJECT;
}

/* --- access tables ----------------------------------------------------- */

/*
 * Look key up in an access table and act on the rule that applies.
 * *matched: whether one did.  pre: where a PREPEND goes.
 */
static enum sc_verdict
access_check(struct sc_ctx *c, struct rules *t, const char *table, const char *what,
    const char *key, struct strlist *pre, bool *matched)
{
	const struct rules_hit *h;
	char warn[256], subject[300], k[204];

	*matched = false;
	h = rules_match(t, key, strlen(key), warn, sizeof(warn));
	if (warn[0] != '\0')
		host->log(c, SC_LOG_WARNING, "%s", warn);
	if (h == NULL)
		return SC_CONTINUE;
	*matched = true;
	safe_for_log(k, sizeof(k), key, strlen(key));
	snprintf(subject, sizeof(subject), strcmp(what, "client") == 0 || strcmp(what, "helo") == 0 ||
	    strcmp(key, "<>") == 0 ? "%s %s" : "%s <%s>", what, k);
	switch (h->action) {
	case RULES_REJECT:
		log_hit(c, SC_LOG_INFO, table, h, subject);
		return refuse(c, h);
	case RULES_DISCARD:
		log_hit(c, SC_LOG_INFO, table, h, subject);
		return SC_DISCARD;
	case RULES_HOLD:
		log_hit(c, SC_LOG_INFO, table, h, subject);
		return SC_QUARANTINE;
	case RULES_WARN:
		log_hit(c, SC_LOG_WARNING, table, h, subject);
		return SC_CONTINUE;
	case RULES_INFO:
		log_hit(c, SC_LOG_INFO, table, h, subject);
		return SC_CONTINUE;
	case RULES_PREPEND:
		log_hit(c, SC_LOG_DEBUG, table, h, subject);
		if (pre == NULL || strlist_add(pre, h->text) != 0)
			return rx_oom(c);
		return SC_CONTINUE;
	case RULES_OK:
	case RULES_DUNNO:
	default:
		log_hit(c, SC_LOG_DEBUG, table, h, subject);
		return SC_CONTINUE;
	}
}

static enum sc_verdict
rx_connect(struct sc_ctx *c)
{
	struct rx *rx = host->instance(c);
	struct rx_session *s = session(c);
	const char *name = host->get(c, "client_name");
	const char *addr = host->get(c, "client_addr");
	enum sc_verdict v = SC_CONTINUE;
	bool matched = false;

	if (s == NULL)
		return rx_oom(c);
	if (name != NULL && name[0] != '\0' && strcasecmp(name, "unknown") != 0)
		v = access_check(c, rx->client, "client_checks", "client", name, &s->conn_pre, &matched);
	if (!matched && addr != NULL)
		v = access_check(c, rx->client, "client_checks", "client", addr, &s->conn_pre, &matched);
	return v;
}

static enum sc_verdict
rx_helo(struct sc_ctx *c, const char *name)
{
	struct rx *rx = host->instance(c);
	struct rx_session *s = session(c);
	bool matched;

	if (s == NULL)
		return rx_oom(c);
	strlist_clear(&s->helo_pre);
	return access_check(c, rx->helo, "helo_checks", "helo", name ? name : "", &s->helo_pre,
	    &matched);
}

static enum sc_verdict
rx_mail(struct sc_ctx *c, const char *addr, const char *params)
{
	struct rx *rx = host->instance(c);
	struct rx_session *s = session(c);
	bool matched;

	if (s == NULL)
		return rx_oom(c);
	message_reset(s);
	if (rx->sender == NULL)
		return SC_CONTINUE;
	return access_check(c, rx->sender, "sender_checks", "sender",
	    addr != NULL && addr[0] != '\0' ? addr : "<>", &s->msg_pre, &matched);
}

static enum sc_verdict
rx_rcpt(struct sc_ctx *c, const char *addr, const char *params)
{
	struct rx *rx = host->instance(c);
	struct rx_session *s = session(c);
	bool matched;

	if (s == NULL)
		return rx_oom(c);
	return access_check(c, rx->rcpt, "recipient_checks", "recipient", addr ? addr : "",
	    &s->msg_pre, &matched);
}

/* --- header_checks ----------------------------------------------------- */

/*
 * Record a header change for eom.  Returns 0, -1 when out of memory, -2
 * when text (PREPEND, REPLACE) is not a header.
 */
static int
add_edit(struct rx_session *s, enum edit_kind kind, size_t index, const char *oname,
    size_t occ, const char *text)
{
	char *on = NULL, *name = NULL, *value = NULL;
	struct edit *e;

	if (kind != EDIT_DELETE && rules_header_split(text, &name, &value) != 0)
		return -2;
	if ((kind != EDIT_PREPEND && (on = strdup(oname)) == NULL) ||
	    (e = edit_new(s)) == NULL) {
		free(on);
		free(name);
		free(value);
		return -1;
	}
	e->kind = kind;
	e->index = index;
	e->occ = occ;
	e->oname = on;
	e->name = name;
	e->value = value;
	return 0;
}

static enum sc_verdict
rx_header(struct sc_ctx *c, const char *name, const char *value)
{
	struct rx *rx = host->instance(c);
	struct rx_session *s = session(c);
	const struct rules_hit *h;
	char warn[256], what[160], hl[140];
	size_t index, occ = 0;
	int rc = 0;

	if (s == NULL)
		return rx_oom(c);
	index = s->nheaders++;
	if (rx->occurrences && (occ = name_seen(s, name)) == 0)
		return rx_oom(c);
	h = rules_match_header(rx->hdr, name, value, warn, sizeof(warn));
	if (warn[0] != '\0')
		host->log(c, SC_LOG_WARNING, "%s", warn);
	if (h == NULL)
		return SC_CONTINUE;
	snprintf(what, sizeof(what), "header %s", header_for_log(hl, sizeof(hl), name, value));
	switch (h->action) {
	case RULES_REJECT:
		log_hit(c, SC_LOG_INFO, "header_checks", h, what);
		return refuse(c, h);
	case RULES_DISCARD:
		log_hit(c, SC_LOG_INFO, "header_checks", h, what);
		return SC_DISCARD;
	case RULES_HOLD:
		log_hit(c, SC_LOG_INFO, "header_checks", h, what);
		s->hold = true;
		return SC_CONTINUE;
	case RULES_WARN:
		log_hit(c, SC_LOG_WARNING, "header_checks", h, what);
		return SC_CONTINUE;
	case RULES_INFO:
		log_hit(c, SC_LOG_INFO, "header_checks", h, what);
		return SC_CONTINUE;
	case RULES_PREPEND:
		log_hit(c, SC_LOG_DEBUG, "header_checks", h, what);
		rc = add_edit(s, EDIT_PREPEND, index, name, occ, h->text);
		break;
	case RULES_REPLACE:
		log_hit(c, SC_LOG_DEBUG, "header_checks", h, what);
		rc = add_edit(s, EDIT_REPLACE, index, name, occ, h->text);
		break;
	case RULES_IGNORE:
		log_hit(c, SC_LOG_DEBUG, "header_checks", h, what);
		rc = add_edit(s, EDIT_DELETE, index, name, occ, NULL);
		break;
	case RULES_STRIP:
		log_hit(c, SC_LOG_INFO, "header_checks", h, what);
		rc = add_edit(s, EDIT_DELETE, index, name, occ, NULL);
		break;
	default:
		log_hit(c, SC_LOG_DEBUG, "header_checks", h, what);
		return SC_CONTINUE;
	}
	if (rc == -2) {
		/* A substitution made it something that is not a header. */
		host->log(c, SC_LOG_WARNING, "header_checks %s:%u: %s text is not a header "
		    "\"Name: value\" after substitution; ignored", h->file, h->line, h->word);
		return SC_CONTINUE;
	}
	return rc == 0 ? SC_CONTINUE : rx_oom(c);
}

/* --- body_checks ------------------------------------------------------- */

/*
 * What body_checks found on one body line (a rule that applied, or a
 * matching error); non-zero stops the body (s->verdict).
 */
static int
body_hit(void *arg, const char *line, size_t len, const struct rules_hit *h, const char *warn)
{
	struct sc_ctx *c = arg;
	struct rx_session *s = *host->state(c);
	char what[128];

	if (warn[0] != '\0')
		host->log(c, SC_LOG_WARNING, "%s", warn);
	if (h == NULL)
		return 0;
	memcpy(what, "body ", 5);
	safe_for_log(what + 5, sizeof(what) - 5, line, len);
	switch (h->action) {
	case RULES_REJECT:
		log_hit(c, SC_LOG_INFO, "body_checks", h, what);
		s->verdict = refuse(c, h);
		return 1;
	case RULES_DISCARD:
		log_hit(c, SC_LOG_INFO, "body_checks", h, what);
		s->verdict = SC_DISCARD;
		return 1;
	case RULES_HOLD:
		log_hit(c, SC_LOG_INFO, "body_checks", h, what);
		s->hold = true;
		return 0;
	case RULES_WARN:
		log_hit(c, SC_LOG_WARNING, "body_checks", h, what);
		return 0;
	case RULES_INFO:
		log_hit(c, SC_LOG_INFO, "body_checks", h, what);
		return 0;
	default:
		log_hit(c, SC_LOG_DEBUG, "body_checks", h, what);
		return 0;
	}
}

static enum sc_verdict
rx_body(struct sc_ctx *c, const unsigned char *p, size_t n)
{
	struct rx *rx = host->instance(c);
	struct rx_session *s = session(c);
	int rc;

	if (s == NULL)
		return rx_oom(c);
	if (s->verdict != SC_CONTINUE)
		return s->verdict;
	rc = rules_body_feed(rx->body, &s->liner, p, n, body_hit, c);
	if (rc < 0)
		return rx_oom(c);
	return rc > 0 ? s->verdict : SC_CONTINUE;
}

/* --- end of message ---------------------------------------------------- */

/* A header text "Name: value" added at index; logs a refusal. */
static void
insert_text(struct sc_ctx *c, size_t index, const char *text)
{
	char *name, *value;

	if (rules_header_split(text, &name, &value) != 0) {
		host->log(c, SC_LOG_WARNING, "PREPEND \"%.60s\": not a header \"Name: value\"; ignored",
		    text);
		return;
	}
	if (host->insert_header(c, index, name, value) != 0)
		host->log(c, SC_LOG_WARNING, "PREPEND %s: refused by the host", name);
	free(name);
	free(value);
}

/*
 * Change or delete header index of that name: by index where the host
 * offers it (the edits go last first, so the host walks its list once), else
 * by name and occurrence.
 */
static int
change_at(struct sc_ctx *c, const struct edit *e, const char *value)
{
	if (SC_HOST_HAS(host, change_header_at))
		return host->change_header_at(c, e->index, e->oname, value);
	return host->change_header(c, e->oname, e->occ, value);
}

/* The header changes of header_checks, last first, then the access PREPENDs. */
static void
apply_changes(struct sc_ctx *c, struct rx_session *s)
{
	const struct strlist *lists[] = { &s->conn_pre, &s->helo_pre, &s->msg_pre };
	struct strlist seen = { 0 };
	size_t at = 0;
	int rc;

	for (size_t i = s->nedits; i-- > 0; ) {
		const struct edit *e = &s->edits[i];

		switch (e->kind) {
		case EDIT_PREPEND:
			rc = host->insert_header(c, e->index, e->name, e->value);
			break;
		case EDIT_REPLACE:
			if (strcasecmp(e->oname, e->name) == 0)
				rc = change_at(c, e, e->value);
			else if ((rc = change_at(c, e, NULL)) == 0)
				rc = host->insert_header(c, e->index, e->name, e->value);
			break;
		case EDIT_DELETE:
		default:
			rc = change_at(c, e, NULL);
			break;
		}
		if (rc != 0)
			host->log(c, SC_LOG_WARNING, "header_checks: change of header %zu (%s) "
			    "refused by the host", e->index, e->oname ? e->oname : e->name);
	}
	for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++) {
		for (size_t i = 0; i < lists[k]->n; i++) {
			size_t before = seen.n;

			if (strlist_add(&seen, lists[k]->v[i]) != 0) {
				host->log(c, SC_LOG_ERROR, "out of memory");
				break;
			}
			if (seen.n > before)	/* not a duplicate */
				insert_text(c, at++, lists[k]->v[i]);
		}
	}
	strlist_free(&seen);
}

static enum sc_verdict
rx_eom(struct sc_ctx *c)
{
	struct rx *rx = host->instance(c);
	struct rx_session *s = session(c);
	enum sc_verdict v;
	int rc;

	if (s == NULL)
		return rx_oom(c);
	/* The last line, if the body did not end with CRLF. */
	if (rx->body != NULL && s->verdict == SC_CONTINUE &&
	    (rc = rules_body_finish(rx->body, &s->liner, body_hit, c)) < 0)
		s->verdict = rx_oom(c);
	if (s->verdict != SC_CONTINUE) {
		v = s->verdict;
		message_reset(s);
		return v;
	}
	apply_changes(c, s);
	v = s->hold ? SC_QUARANTINE : SC_CONTINUE;
	message_reset(s);
	return v;
}

static void
rx_abort(struct sc_ctx *c)
{
	struct rx_session *s = *host->state(c);

	if (s != NULL)
		message_reset(s);
}

static void
rx_close(struct sc_ctx *c)
{
	void **slot = host->state(c);
	struct rx_session *s = *slot;

	if (s == NULL)
		return;
	message_reset(s);
	free(s->names);
	free(s->edits);
	strlist_free(&s->conn_pre);
	strlist_free(&s->helo_pre);
	strlist_free(&s->msg_pre);
	rules_liner_free(&s->liner);
	free(s);
	*slot = NULL;
}

/* --- init -------------------------------------------------------------- */

static void
rx_fini(void *instance)
{
	struct rx *rx = instance;

	if (rx == NULL)
		return;
	rules_free(rx->hdr);
	rules_free(rx->body);
	rules_free(rx->client);
	rules_free(rx->helo);
	rules_free(rx->sender);
	rules_free(rx->rcpt);
	free(rx);
}

/* The options, their kind of table and where the table goes. */
static const struct {
	const char	*key;
	enum rules_kind	 kind;
	size_t		 offset;	/* of the struct rules * in struct rx */
} rx_tables[] = {
	{ "header_checks",	RULES_HEADER,	offsetof(struct rx, hdr) },
	{ "body_checks",	RULES_BODY,	offsetof(struct rx, body) },
	{ "client_checks",	RULES_ACCESS,	offsetof(struct rx, client) },
	{ "helo_checks",	RULES_ACCESS,	offsetof(struct rx, helo) },
	{ "sender_checks",	RULES_ACCESS,	offsetof(struct rx, sender) },
	{ "recipient_checks",	RULES_ACCESS,	offsetof(struct rx, rcpt) },
};

/* Load the tables the block names; set this instance's hooks and needs. */
static int
rx_init(const struct sc_host *h, const struct sc_options *o, void **instance,
    char *err, size_t errlen)
{
	struct rx *rx;
	bool any = false, prepends = false;
	char lerr[512];

	host = h;
	/* Hyperscan's compiler runs in a child: this process keeps its scanner only. */
	rules_compile_apart(true);
	if ((rx = calloc(1, sizeof(*rx))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < sizeof(rx_tables) / sizeof(rx_tables[0]); i++) {
		struct rules **t = (struct rules **)((char *)rx + rx_tables[i].offset);
		const char *path;
		int rc = h->opt_string(o, rx_tables[i].key, &path);

		if (rc < 0)
			goto fail;
		if (rc == 1)
			continue;
		if ((*t = rules_load(path, rx_tables[i].kind, lerr, sizeof(lerr))) == NULL) {
			h->opt_error(o, rx_tables[i].key, "%s", lerr);
			goto fail;
		}
		any = true;
		if (rx_tables[i].kind == RULES_ACCESS && rules_has(*t, RULES_PREPEND))
			prepends = true;
	}
	if (!any) {
		snprintf(err, errlen, "no table: set at least one of header_checks, body_checks, "
		    "client_checks, helo_checks, sender_checks, recipient_checks");
		goto fail;
	}
	/* occurrences by name, for a host that cannot change a header by index */
	rx->occurrences = rx->hdr != NULL && !SC_HOST_HAS(host, change_header_at) &&
	    (rules_has(rx->hdr, RULES_REPLACE) || rules_has(rx->hdr, RULES_IGNORE) ||
	    rules_has(rx->hdr, RULES_STRIP));

	smtpchain_filter.connect = rx->client ? rx_connect : NULL;
	smtpchain_filter.helo = rx->helo ? rx_helo : NULL;
	/* mail also starts a message's state, which header/body/PREPEND use. */
	smtpchain_filter.mail = rx->sender || rx->hdr || rx->body || prepends ? rx_mail : NULL;
	smtpchain_filter.rcpt = rx->rcpt ? rx_rcpt : NULL;
	smtpchain_filter.header = rx->hdr ? rx_header : NULL;
	smtpchain_filter.body = rx->body ? rx_body : NULL;
	smtpchain_filter.eom = rx->hdr || rx->body || prepends ? rx_eom : NULL;
	smtpchain_filter.needs = (rx->hdr || prepends ? SC_NEED_HEADERS : 0) |
	    (rx->body ? SC_NEED_BODY : 0);
	*instance = rx;
	return 0;

fail:
	rx_fini(rx);
	return -1;
}

struct sc_filter smtpchain_filter = {
	.abi = SC_FILTER_ABI,
	.size = sizeof(struct sc_filter),
	.name = "regex",
	.needs = SC_NEED_HEADERS | SC_NEED_BODY,
	.init = rx_init,
	.fini = rx_fini,
	.connect = rx_connect,
	.helo = rx_helo,
	.mail = rx_mail,
	.rcpt = rx_rcpt,
	.header = rx_header,
	.body = rx_body,
	.eom = rx_eom,
	.abort = rx_abort,
	.close = rx_close,
};
