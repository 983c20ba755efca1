/*
 * test_replies.c - unit tests for replies.c's table: every row is there
 * and well formed (a 3-digit code, an enhanced code of the same class, a
 * text), a row that names the host gets it after the enhanced code, and
 * the lines clients have always seen are unchanged.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "replies.h"
#include "tap.h"

/* "CODE X.Y.Z " with X the code's class, or "354 " (no enhanced code). */
static int
well_formed(const char *line)
{
	size_t n = strlen(line);

	if (n < 5 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]) || line[3] != ' ')
		return 0;
	if (strncmp(line, "354 ", 4) == 0)
		return 1;
	return line[4] == line[0] && line[5] == '.' && isdigit((unsigned char)line[6]) &&
	    strchr(line + 6, ' ') != NULL && strchr(line, '\r') == NULL && strchr(line, '\n') == NULL;
}

int
main(void)
{
	char buf[512];
	int bad = 0;

	for (int id = 0; id < REPLY_MAX; id++) {
		const char *line = reply_line((enum reply_id)id, "mx.example", buf, sizeof(buf));

		if (!well_formed(line)) {
			diag("row %d: '%s'", id, line);
			bad++;
		}
	}
	is_int(bad, 0, "every row: code, enhanced code of its class, text");

	is_str(reply_line(REPLY_BACKEND_LOST, "mx.example", buf, sizeof(buf)),
	    "421 4.3.0 mx.example Service not available, lost connection to backend",
	    "a row naming the host");
	is_str(reply_line(REPLY_NOT_IMPLEMENTED, "mx.example", buf, sizeof(buf)),
	    "502 5.5.1 Error: command not implemented", "a row without it");
	is_str(reply_line(REPLY_TOO_MANY_ERRORS, "mx.example", buf, sizeof(buf)),
	    "421 4.7.0 mx.example Error: too many errors", "Postfix's too many errors");
	is_str(reply_line(REPLY_DATA_GO, NULL, NULL, 0), "354 End data with <CR><LF>.<CR><LF>",
	    "354 has no enhanced code");
	is_str(reply_line(REPLY_AUTH_NEEDS_TLS, NULL, NULL, 0),
	    "538 5.7.11 Encryption required for requested authentication mechanism",
	    "a two-digit enhanced detail");
	is_str(reply_line(REPLY_SHUTTING_DOWN, "h", buf, 12), "421 4.3.2 h",
	    "cut to the buffer, NUL-terminated");
	return done_testing();
}
