/*
 * esmtp.h - ESMTP as the client was offered it (see esmtp.c).
 */
#ifndef SMTPCHAIN_ESMTP_H
#define SMTPCHAIN_ESMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct session;
struct smtp_path;

/* Whether the rewritten EHLO list offered this keyword to the client. */
bool	esmtp_offered(const struct session *s, const char *kw);
/* The message size limit for a new transaction; 0 = none. */
uint64_t esmtp_size_limit(const struct session *s);
/* A decimal octet count (1 to 20 digits, no overflow): 0, or -1 if bad. */
int	esmtp_parse_count(const char *p, size_t n, uint64_t *out);
/* MAIL's or RCPT's parameters against the offered list: NULL, or the reply (in reply). */
const char *esmtp_check_params(struct session *s, const struct smtp_path *path, bool is_mail,
	    char *reply, size_t replylen);
/* A path's parameters as one string ("" if none), for filters. */
void	esmtp_path_params(const struct smtp_path *path, char *out, size_t outlen);
/* One keyword appended to a rewritten EHLO reply of len (cap): the new length. */
int	esmtp_offer(char *reply, size_t len, size_t cap, const char *kw);
/* The backend's "AUTH mech..." EHLO line (allocated), or NULL. */
char	*esmtp_auth_line(const char *r, size_t n);
/* Whether the client may be offered AUTH now (the backend has it; TLS if required). */
bool	esmtp_auth_allowed(const struct session *s);
/* The identity in a SASL response (never the secret), into s->auth_user. */
void	esmtp_auth_identity(struct session *s, const char *b64, size_t n);

#endif
