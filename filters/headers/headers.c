/*
 * headers.c - the "headers" filter module: remove, rewrite and add message
 * headers, and put the proxy's own Received: header on top.
 *
 * SYNOPSIS
 *	filter {
 *		module = "headers";
 *		remove = [ "X-Spam-Flag", "Disposition-Notification-To" ];
 *		rewrite = [ "X-Mailer: hidden" ];
 *		add = [ "X-Scanned-By: smtpchain" ];
 *		received = true;
 *	}
 *
 * DESCRIPTION
 *	Every option is optional; at least one is needed.  A list of one
 *	may be written as a plain string.  The changes are made at eom, in
 *	this order:
 *
 *	remove		names: every header of each name is deleted (names
 *			compare without case)
 *	rewrite		"Name: value": every header of that name gets the
 *			value; when the message has none, the header is added
 *			at the end
 *	add		"Name: value": appended at the end of the header section
 *	received	a trace header inserted at the top, as an MTA would:
 *
 *		Received: from HELO (CLIENT_NAME [CLIENT_ADDR])
 *			by HOSTNAME (smtpchain) with ESMTP id SESSION_ID;
 *			Tue, 14 May 2024 10:00:00 +0200
 *
 *			HELO and CLIENT_NAME are "unknown" when there is none
 *			(an IPv6 address is written [IPv6:ADDR]), the date is
 *			local time.
 *
 *	The value of a "Name: value" option is what follows the colon, kept
 *	as written (so "X-A: b" gives " b", the leading space of the usual
 *	form).  A name is 1..997 bytes from '!' to '~' but ':'; a value has
 *	no control characters but tab.  A name may not be given twice in
 *	remove or in rewrite, nor in both.  init() reports the first bad
 *	value as "FILE:LINE: filter NAME: KEY: ...".
 *
 *	The header hook counts, per message, the headers of the names in
 *	remove and rewrite; eom deletes occurrences from the last to the
 *	first, so the occurrence numbers it uses do not move.
 *
 * Only <smtpchain/filter.h> and libc.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <smtpchain/filter.h>

/* A "Name: value" option, split. */
struct hd_header {
	char		*name;
	const char	*value;		/* after the colon, as written */
};

/* One filter {} block. */
struct hd {
	const char *const *remove;
	size_t		 nremove;
	struct hd_header *rewrite, *add;
	size_t		 nrewrite, nadd;
	int		 received;
};

/* Per session: headers seen in the current message, per name of
 * remove (first nremove) and rewrite (next nrewrite). */
struct hd_session {
	size_t		*counts;
};

static const struct sc_host *host;

/* --- options ----------------------------------------------------------- */

/* Length of a valid header name at the start of s, ending at stop. */
static size_t
name_len(const char *s, char stop)
{
	size_t i = 0;

	while (s[i] != '\0' && s[i] != stop && s[i] != ':' &&
	    (unsigned char)s[i] > 32 && (unsigned char)s[i] < 127)
		i++;
	return s[i] == stop && i > 0 && i <= 997 ? i : 0;
}

/* Whether a value can be written as is: no controls but tab. */
static bool
value_ok(const char *v)
{
	for (; *v; v++)
		if (((unsigned char)*v < 0x20 && *v != '\t') || *v == 0x7f)
			return false;
	return true;
}

/* A list option of "Name: value" headers (unique: each name once); -1 after opt_error. */
static int
header_list(const struct sc_options *o, const char *key, bool unique, struct hd_header **out,
    size_t *n)
{
	const char *const *v;
	size_t count, nl;
	int rc;

	if ((rc = host->opt_list(o, key, &v, &count)) != 0)
		return rc == 1 ? 0 : -1;
	if (count == 0)
		return 0;
	if ((*out = calloc(count, sizeof(**out))) == NULL)
		return host->opt_error(o, key, "out of memory");
	for (size_t i = 0; i < count; i++) {
		if ((nl = name_len(v[i], ':')) == 0)
			return host->opt_error(o, key, "expected \"Name: value\", got \"%.60s\"", v[i]);
		if (!value_ok(v[i] + nl + 1))
			return host->opt_error(o, key, "control character in the value of %.*s",
			    (int)nl, v[i]);
		for (size_t k = 0; k < i; k++)
			if (unique && strncasecmp((*out)[k].name, v[i], nl) == 0 &&
			    (*out)[k].name[nl] == '\0')
				return host->opt_error(o, key, "%.*s given twice", (int)nl, v[i]);
		if (((*out)[i].name = strndup(v[i], nl)) == NULL)
			return host->opt_error(o, key, "out of memory");
		(*out)[i].value = v[i] + nl + 1;
		*n = i + 1;
	}
	return 0;
}

/* The remove list: names only; -1 after opt_error. */
static int
remove_list(const struct sc_options *o, struct hd *hd)
{
	int rc;

	if ((rc = host->opt_list(o, "remove", &hd->remove, &hd->nremove)) != 0) {
		hd->nremove = 0;
		return rc == 1 ? 0 : -1;
	}
	for (size_t i = 0; i < hd->nremove; i++) {
		if (name_len(hd->remove[i], '\0') == 0)
			return host->opt_error(o, "remove", "expected a header name, got \"%.60s\"",
			    hd->remove[i]);
		for (size_t k = 0; k < i; k++)
			if (strcasecmp(hd->remove[k], hd->remove[i]) == 0)
				return host->opt_error(o, "remove", "%s given twice", hd->remove[i]);
	}
	return 0;
}

static void
hd_fini(void *instance)
{
	struct hd *hd = instance;

	if (hd == NULL)
		return;
	for (size_t i = 0; i < hd->nrewrite; i++)
		free(hd->rewrite[i].name);
	for (size_t i = 0; i < hd->nadd; i++)
		free(hd->add[i].name);
	free(hd->rewrite);
	free(hd->add);
	free(hd);
}

/* Read and check the options. */
static int
hd_init(const struct sc_host *h, const struct sc_options *o, void **instance,
    char *err, size_t errlen)
{
	struct hd *hd;

	host = h;
	if ((hd = calloc(1, sizeof(*hd))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (remove_list(o, hd) != 0 ||
	    header_list(o, "rewrite", true, &hd->rewrite, &hd->nrewrite) != 0 ||
	    header_list(o, "add", false, &hd->add, &hd->nadd) != 0 ||
	    h->opt_bool(o, "received", &hd->received) < 0)
		goto fail;
	for (size_t i = 0; i < hd->nrewrite; i++)
		for (size_t k = 0; k < hd->nremove; k++)
			if (strcasecmp(hd->rewrite[i].name, hd->remove[k]) == 0) {
				h->opt_error(o, "rewrite", "%s is also in remove", hd->remove[k]);
				goto fail;
			}
	if (hd->nremove == 0 && hd->nrewrite == 0 && hd->nadd == 0 && !hd->received) {
		snprintf(err, errlen, "nothing to do: set remove, rewrite, add or received");
		goto fail;
	}
	*instance = hd;
	return 0;
fail:
	hd_fini(hd);
	return -1;
}

/* --- hooks ------------------------------------------------------------- */

/* The session's counts, made on first use; NULL when out of memory. */
static struct hd_session *
session(struct sc_ctx *c, const struct hd *hd)
{
	void **slot = host->state(c);
	struct hd_session *s = *slot;

	if (s != NULL)
		return s;
	if ((s = calloc(1, sizeof(*s))) == NULL ||
	    (s->counts = calloc(hd->nremove + hd->nrewrite + 1, sizeof(size_t))) == NULL) {
		free(s);
		return NULL;
	}
	*slot = s;
	return s;
}

static enum sc_verdict
hd_oom(struct sc_ctx *c)
{
	host->log(c, SC_LOG_ERROR, "out of memory");
	host->set_reply(c, 451, "4.3.0", "Error: insufficient system resources");
	return SC_TEMPFAIL;
}

/* Count the headers eom will remove or rewrite. */
static enum sc_verdict
hd_header(struct sc_ctx *c, const char *name, const char *value)
{
	const struct hd *hd = host->instance(c);
	struct hd_session *s;

	if (hd->nremove == 0 && hd->nrewrite == 0)
		return SC_CONTINUE;
	if ((s = session(c, hd)) == NULL)
		return hd_oom(c);
	for (size_t i = 0; i < hd->nremove; i++)
		if (strcasecmp(name, hd->remove[i]) == 0)
			s->counts[i]++;
	for (size_t i = 0; i < hd->nrewrite; i++)
		if (strcasecmp(name, hd->rewrite[i].name) == 0)
			s->counts[hd->nremove + i]++;
	return SC_CONTINUE;
}

/* Copy s for a header value: controls but tab become '?'; "unknown" if NULL/empty. */
static void
trace_word(char *buf, size_t size, const char *s)
{
	size_t i = 0;

	if (s == NULL || *s == '\0')
		s = "unknown";
	for (; s[i] != '\0' && i + 1 < size; i++)
		buf[i] = (unsigned char)s[i] <= 0x20 || s[i] == 0x7f ? '?' : s[i];
	buf[i] = '\0';
}

/* RFC 5322 date-time of now, local time, in the C locale's names. */
static void
rfc5322_date(char *buf, size_t size)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t now = time(NULL);
	struct tm tm;
	long off;

	localtime_r(&now, &tm);
	off = tm.tm_gmtoff / 60;
	snprintf(buf, size, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld",
	    days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
	    tm.tm_hour, tm.tm_min, tm.tm_sec, off < 0 ? '-' : '+',
	    (off < 0 ? -off : off) / 60, (off < 0 ? -off : off) % 60);
}

/* The proxy's Received: header, at the top. */
static void
add_received(struct sc_ctx *c)
{
	char helo[256], name[256], addr[128], hostname[256], id[128], date[64], value[1200];
	const char *a = host->get(c, "client_addr");

	trace_word(helo, sizeof(helo), host->get(c, "helo"));
	trace_word(name, sizeof(name), host->get(c, "client_name"));
	trace_word(addr, sizeof(addr), a);
	trace_word(hostname, sizeof(hostname), host->get(c, "hostname"));
	trace_word(id, sizeof(id), host->get(c, "session_id"));
	rfc5322_date(date, sizeof(date));
	snprintf(value, sizeof(value),
	    " from %s (%s [%s%s])\r\n\tby %s (smtpchain) with ESMTP id %s;\r\n\t%s",
	    helo, name, a != NULL && strchr(a, ':') != NULL ? "IPv6:" : "", addr,
	    hostname, id, date);
	if (host->insert_header(c, 0, "Received", value) != 0)
		host->log(c, SC_LOG_WARNING, "Received: refused by the host");
}

/* Make the changes: remove, rewrite, add, received. */
static enum sc_verdict
hd_eom(struct sc_ctx *c)
{
	const struct hd *hd = host->instance(c);
	struct hd_session *s = *host->state(c);
	size_t n;

	for (size_t i = 0; i < hd->nremove; i++)
		for (n = s ? s->counts[i] : 0; n > 0; n--)
			if (host->change_header(c, hd->remove[i], n, NULL) != 0)
				host->log(c, SC_LOG_WARNING, "remove %s #%zu: refused by the host",
				    hd->remove[i], n);
	for (size_t i = 0; i < hd->nrewrite; i++) {
		const struct hd_header *r = &hd->rewrite[i];

		n = s ? s->counts[hd->nremove + i] : 0;
		if (n == 0 && host->add_header(c, r->name, r->value) != 0)
			host->log(c, SC_LOG_WARNING, "rewrite %s: adding it refused by the host",
			    r->name);
		for (size_t k = 1; k <= n; k++)
			if (host->change_header(c, r->name, k, r->value) != 0)
				host->log(c, SC_LOG_WARNING, "rewrite %s #%zu: refused by the host",
				    r->name, k);
	}
	for (size_t i = 0; i < hd->nadd; i++)
		if (host->add_header(c, hd->add[i].name, hd->add[i].value) != 0)
			host->log(c, SC_LOG_WARNING, "add %s: refused by the host", hd->add[i].name);
	if (hd->received)
		add_received(c);
	if (s != NULL)
		memset(s->counts, 0, (hd->nremove + hd->nrewrite) * sizeof(size_t));
	return SC_CONTINUE;
}

/* The message ended elsewhere: forget its counts. */
static void
hd_abort(struct sc_ctx *c)
{
	const struct hd *hd = host->instance(c);
	struct hd_session *s = *host->state(c);

	if (s != NULL)
		memset(s->counts, 0, (hd->nremove + hd->nrewrite) * sizeof(size_t));
}

static void
hd_close(struct sc_ctx *c)
{
	void **slot = host->state(c);
	struct hd_session *s = *slot;

	if (s == NULL)
		return;
	free(s->counts);
	free(s);
	*slot = NULL;
}

const struct sc_filter smtpchain_filter = {
	.abi = SC_FILTER_ABI,
	.size = sizeof(struct sc_filter),
	.name = "headers",
	.needs = SC_NEED_HEADERS,
	.init = hd_init,
	.fini = hd_fini,
	.header = hd_header,
	.eom = hd_eom,
	.abort = hd_abort,
	.close = hd_close,
};
