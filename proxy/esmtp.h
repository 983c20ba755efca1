/*
 * esmtp.h - ESMTP as the client was offered it (see esmtp.c).
 */
#ifndef SMTPCHAIN_ESMTP_H
#define SMTPCHAIN_ESMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ehlo.h"

struct client_facts;
struct smtp_path;

/*
 * What the client was offered: the session's (it sets these at EHLO, HELO
 * and STARTTLS), read by the checks below.
 */
struct esmtp_offered {
	char		*reply;		/* the rewritten EHLO reply, to check parameters:
					   NULL unless the last greeting was an EHLO
					   answered 250 (HELO and STARTTLS clear it) */
	struct ehlo_caps caps;		/* what it offers (its SIZE) */
	char		*backend_auth;	/* the backend's "AUTH mech..." EHLO line, or NULL */
};

/* Whether the rewritten EHLO list offered this keyword to the client. */
bool	esmtp_offered(const struct esmtp_offered *o, const char *kw);
/* The message size limit for a new transaction (the lower of ours and the
 * offered SIZE); 0 = none. */
uint64_t esmtp_size_limit(const struct esmtp_offered *o, uint64_t max_message_size);
/* A decimal octet count (1 to 20 digits, no overflow): 0, or -1 if bad. */
int	esmtp_parse_count(const char *p, size_t n, uint64_t *out);
/* MAIL's or RCPT's parameters against the offered list: NULL, or the reply (in reply). */
const char *esmtp_check_params(const struct esmtp_offered *o, uint64_t max_message_size,
	    const struct smtp_path *path, bool is_mail, char *reply, size_t replylen);
/* A path's parameters as one string ("" if none), for filters. */
void	esmtp_path_params(const struct smtp_path *path, char *out, size_t outlen);
/* One keyword appended to a rewritten EHLO reply of len (cap): the new length. */
int	esmtp_offer(char *reply, size_t len, size_t cap, const char *kw);
/* The backend's "AUTH mech..." EHLO line (allocated), or NULL. */
char	*esmtp_auth_line(const char *r, size_t n);
/* Whether the client may be offered AUTH now (the backend has it, the client
 * has not authenticated; over TLS if tls_required). */
bool	esmtp_auth_allowed(const struct esmtp_offered *o, const struct client_facts *client,
	    bool tls, bool tls_required);
/* The identity in a SASL response (never the secret), into client->auth_user. */
void	esmtp_auth_identity(struct client_facts *client, const char *b64, size_t n);

#endif
