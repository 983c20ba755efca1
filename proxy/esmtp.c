/*
 * esmtp.c - ESMTP as the client was offered it: the rewritten EHLO list
 * (a keyword added to it, which keywords it has), MAIL and RCPT parameters
 * checked against it, the message size limit, the backend's AUTH line and
 * the identity in a SASL response.  Works on what the client was offered
 * (struct esmtp_offered, which the session embeds) and the client's facts,
 * not on the session; never answers the client.  Calls only smtp.c,
 * replies.c and log.c.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>

#include "clientfacts.h"
#include "esmtp.h"
#include "log.h"
#include "replies.h"
#include "smtp.h"

/* Whether the rewritten EHLO list offered this keyword to the client. */
bool
esmtp_offered(const struct esmtp_offered *o, const char *kw)
{
	const char *p = o->reply;
	size_t kwlen = strlen(kw);

	if (p == NULL)		/* no EHLO answered 250 (or HELO, STARTTLS since) */
		return false;
	/* skip the domain line, then look at each "250-KW..." / "250 KW..." */
	while ((p = strchr(p, '\n')) != NULL) {
		p++;
		if (strlen(p) < 4 + kwlen)
			break;
		if (strncasecmp(p + 4, kw, kwlen) == 0 &&
		    (p[4 + kwlen] == ' ' || p[4 + kwlen] == '\r' || p[4 + kwlen] == '='))
			return true;
	}
	return false;
}

/* The message size limit for a new transaction; 0 = none. */
uint64_t
esmtp_size_limit(const struct esmtp_offered *o, uint64_t max_message_size)
{
	uint64_t limit = max_message_size;

	if (o->caps.size && o->caps.size_limit &&
	    (limit == 0 || o->caps.size_limit < limit))
		limit = o->caps.size_limit;
	return limit;
}

/* Parse a decimal octet count (1 to 20 digits, no overflow); -1 if bad. */
int
esmtp_parse_count(const char *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 20)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(p[i] - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*out = v;
	return 0;
}

/*
 * The ESMTP parameters of MAIL or RCPT, against what the client was offered.
 * Returns NULL when all may go on, else the reply to give.
 */
const char *
esmtp_check_params(const struct esmtp_offered *o, uint64_t max_message_size,
    const struct smtp_path *path, bool is_mail, char *reply, size_t replylen)
{
	static const struct {
		const char	*param;
		const char	*extension;
		bool		 mail;	/* MAIL parameter, else RCPT */
	} needs[] = {
		{ "SIZE", "SIZE", true },	{ "SMTPUTF8", "SMTPUTF8", true },
		{ "RET", "DSN", true },		{ "ENVID", "DSN", true },
		{ "NOTIFY", "DSN", false },	{ "ORCPT", "DSN", false },
		{ "AUTH", "AUTH", true },	{ "BY", "DELIVERBY", true },
		{ "MT-PRIORITY", "MT-PRIORITY", true },
		{ "REQUIRETLS", "REQUIRETLS", true },
		{ "HOLDFOR", "FUTURERELEASE", true }, { "HOLDUNTIL", "FUTURERELEASE", true },
		{ "RRVS", "RRVS", false },	{ "BODY", NULL, true },
	};

	for (size_t i = 0; i < path->nparams; i++) {
		const struct smtp_param *pa = &path->params[i];

		for (size_t j = 0; j < sizeof(needs) / sizeof(needs[0]); j++) {
			if (strlen(needs[j].param) != pa->keylen ||
			    strncasecmp(needs[j].param, pa->key, pa->keylen) != 0)
				continue;
			if (needs[j].mail != is_mail)
				break;
			if (needs[j].extension == NULL) {	/* BODY= */
				if (pa->value && pa->valuelen == 4 &&
				    strncasecmp(pa->value, "7BIT", 4) == 0 && o->reply != NULL)
					break;
				if (pa->value && pa->valuelen == 8 &&
				    strncasecmp(pa->value, "8BITMIME", 8) == 0 &&
				    esmtp_offered(o, "8BITMIME"))
					break;
			} else if (esmtp_offered(o, needs[j].extension)) {
				break;
			}
			snprintf(reply, replylen, "%s %.*s",
			    reply_line(REPLY_UNSUPPORTED_PARAM, NULL, NULL, 0),
			    (int)pa->keylen, pa->key);
			return reply;
		}
	}
	if (is_mail) {
		const struct smtp_param *size = smtp_path_param(path, "SIZE");
		uint64_t n, limit = esmtp_size_limit(o, max_message_size);

		if (size && (size->value == NULL ||
		    esmtp_parse_count(size->value, size->valuelen, &n) != 0))
			return reply_line(REPLY_BAD_SIZE, NULL, NULL, 0);
		if (size && limit && n > limit)
			return reply_line(REPLY_MESSAGE_TOO_BIG, NULL, NULL, 0);
	}
	return NULL;
}

/* The ESMTP parameters of a path as one string ("" if none), for filters. */
void
esmtp_path_params(const struct smtp_path *path, char *out, size_t outlen)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < path->nparams && o < outlen; i++) {
		const struct smtp_param *pa = &path->params[i];
		int n = snprintf(out + o, outlen - o, "%s%.*s%s%.*s", i ? " " : "",
		    (int)pa->keylen, pa->key, pa->value ? "=" : "",
		    pa->value ? (int)pa->valuelen : 0, pa->value ? pa->value : "");

		if (n < 0 || (size_t)n >= outlen - o) {
			out[o] = '\0';
			break;
		}
		o += (size_t)n;
	}
}

/*
 * Append one keyword to a rewritten EHLO reply (its last "250 " line
 * becomes "250-").  Returns the new length; the reply is unchanged if it
 * does not fit in cap.
 */
int
esmtp_offer(char *reply, size_t len, size_t cap, const char *kw)
{
	size_t kwlen = strlen(kw), last = len;

	if (len < 6 || len + kwlen + 6 > cap)
		return (int)len;
	while (last > 0 && !(last < len - 2 && reply[last - 1] == '\n'))
		last--;
	if (reply[last + 3] == ' ')
		reply[last + 3] = '-';
	memcpy(reply + len, "250 ", 4);
	memcpy(reply + len + 4, kw, kwlen);
	memcpy(reply + len + 4 + kwlen, "\r\n", 2);
	return (int)(len + kwlen + 6);
}

/* The EHLO line of the backend's AUTH keyword ("AUTH PLAIN LOGIN"), or NULL. */
char *
esmtp_auth_line(const char *r, size_t n)
{
	const char *end = r + n, *p = r;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t len = eol ? (size_t)(eol - p) : (size_t)(end - p);

		if (len > 2 && p[len - 1] == '\r')
			len--;
		if (len > 9 && strncasecmp(p + 4, "AUTH ", 5) == 0)
			return xstrndup(p + 4, len - 4);
		p = eol ? eol + 1 : end;
	}
	return NULL;
}

/* Whether the client may be offered AUTH now (the backend has it; TLS if required). */
bool
esmtp_auth_allowed(const struct esmtp_offered *o, const struct client_facts *client, bool tls,
    bool tls_required)
{
	return o->backend_auth && !client->auth_done && (tls || !tls_required);
}

/*
 * The identity in a SASL response, for filters and logs (never the
 * secret): PLAIN's authcid, LOGIN's user name, CRAM-MD5's user name.
 */
void
esmtp_auth_identity(struct client_facts *client, const char *b64, size_t n)
{
	unsigned char buf[1024];
	int len;

	if (client->auth_user[0] || n == 0 || n > 1300 || (n == 1 && b64[0] == '*'))
		return;
	if ((len = EVP_DecodeBlock(buf, (const unsigned char *)b64, (int)n)) < 0)
		return;
	while (len > 0 && n >= 1 && b64[n - 1] == '=' && len > 0)
		len--, n--;
	if (strcasecmp(client->auth_mech, "PLAIN") == 0) {
		unsigned char *a = memchr(buf, '\0', (size_t)len), *b;

		if (a && (b = memchr(a + 1, '\0', (size_t)(len - (a + 1 - buf)))))
			snprintf(client->auth_user, sizeof(client->auth_user), "%.*s", (int)(b - a - 1), a + 1);
	} else if (strcasecmp(client->auth_mech, "LOGIN") == 0) {
		snprintf(client->auth_user, sizeof(client->auth_user), "%.*s", len, buf);
	} else if (strcasecmp(client->auth_mech, "CRAM-MD5") == 0) {
		unsigned char *sp = memchr(buf, ' ', (size_t)len);

		if (sp)
			snprintf(client->auth_user, sizeof(client->auth_user), "%.*s", (int)(sp - buf), buf);
	}
	for (size_t i = 0; client->auth_user[i]; i++)	/* printable only */
		if ((unsigned char)client->auth_user[i] < 0x20 || (unsigned char)client->auth_user[i] == 0x7f)
			client->auth_user[i] = '?';
	explicit_bzero(buf, sizeof(buf));
}
