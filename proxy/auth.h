/*
 * auth.h - AUTH (RFC 4954) relayed to the backend (auth.c): the command, the
 * exchange's lines (SS_AUTH) and the backend's answers.
 */
#ifndef SMTPCHAIN_AUTH_H
#define SMTPCHAIN_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "session.h"
#include "smtp.h"

/* AUTH mechanism [initial-response]: the command table's row. */
enum step_result cmd_auth(struct session *s, const struct smtp_cmd *cmd, const char *line,
	    size_t len);
/* One line of an AUTH exchange (SS_AUTH), relayed as it is. */
enum step_result process_auth(struct session *s);
/* The backend's answer to AUTH or to a line of the exchange (334, 235, or failure). */
bool	reply_auth(struct session *s, const char *r, size_t n, int code);

#endif
