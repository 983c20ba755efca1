/*
 * data.h - the message's octets from the client (data.c): DATA after 354
 * and BDAT chunks, checked, then relayed, stored for the filters or dropped.
 */
#ifndef SMTPCHAIN_DATA_H
#define SMTPCHAIN_DATA_H

#include <stdbool.h>
#include <stddef.h>

#include "session.h"
#include "smtp.h"

/* BDAT count [LAST]: the command table's row. */
enum step_result cmd_bdat(struct session *s, const struct smtp_cmd *cmd, const char *line,
	    size_t len);
/* The backend's answer to the DATA opened for BDAT chunks (BS_BDAT_DATA). */
bool	reply_bdat_data(struct session *s, const char *r, size_t n, int code);
/* Message data after 354 (SS_DATA, SS_DISCARD). */
enum step_result process_data(struct session *s);
/* The octets of a BDAT chunk (SS_BDAT). */
enum step_result process_bdat(struct session *s);

#endif
