/*
 * codec.h - Postfix's policy delegation protocol (SMTPD_POLICY_README):
 * requests, answers and access(5) actions, without I/O (see codec.c).
 */
#ifndef SMTPCHAIN_POLICY_CODEC_H
#define SMTPCHAIN_POLICY_CODEC_H

#include <stddef.h>

#include "../common/buf.h"

#define PC_MAX_ANSWER	4096	/* octets of one answer, empty line included */

/*
 * A request being put together: "name=value\n" lines, then "\n", in
 * filters/common/buf.h's buffer, under the names the module and the
 * codec's tests use.
 */
#define pc_buf		buf
#define pc_buf_reset	buf_reset
#define pc_buf_free	buf_free

int	pc_put(struct pc_buf *b, const char *name, const char *value);
int	pc_put_int(struct pc_buf *b, const char *name, unsigned long long value);
int	pc_end(struct pc_buf *b);

/* An answer as it comes in: complete at its empty line. */
struct pc_reader {
	char	 buf[PC_MAX_ANSWER + 1];
	size_t	 len;
	size_t	 end;		/* length of the answer once complete, else 0 */
};

enum pc_read {
	PC_NEED_MORE = 0,
	PC_DONE,		/* the answer is complete: pc_answer() */
	PC_ERROR,		/* over PC_MAX_ANSWER, or more after the empty line */
};

void		pc_reader_init(struct pc_reader *r);
enum pc_read	pc_reader_feed(struct pc_reader *r, const char *p, size_t n, const char **err);

/*
 * The action of a complete answer (NUL-terminated, in r->buf), or NULL with
 * *err set: an answer must be exactly one "action=..." line, as Postfix's
 * attr_scan_plain reads it (any other attribute is an error there too).
 */
const char	*pc_answer(struct pc_reader *r, const char **err);

/* The actions of access(5) a policy server may answer. */
enum pc_kind {
	PCA_UNKNOWN = 0,	/* not an action we know (a restriction name...) */
	PCA_OK,			/* OK, RELAY, PERMIT, all digits */
	PCA_DUNNO,
	PCA_REJECT,		/* REJECT [text], 5NN text */
	PCA_DEFER,		/* DEFER [text], 4NN text */
	PCA_DEFER_IF_PERMIT,
	PCA_DEFER_IF_REJECT,
	PCA_PREPEND,		/* text is "Name: value" */
	PCA_HOLD,
	PCA_DISCARD,
	PCA_REDIRECT,		/* text is user@domain */
	PCA_BCC,		/* text is user@domain */
	PCA_FILTER,		/* text is transport:destination */
	PCA_WARN,
	PCA_INFO,
};

struct pc_action {
	enum pc_kind	 kind;
	int		 code;		/* REJECT, DEFER, DEFER_IF_*: the SMTP code */
	char		 dsn[16];	/* the enhanced status code, "" if none given */
	const char	*text;		/* after the keyword (and the status code), maybe "" */
	const char	*bad;		/* PCA_UNKNOWN: why, for the log */
};

/* Parse an action (s stays referenced by a->text).  Returns a->kind. */
enum pc_kind	pc_action_parse(const char *s, struct pc_action *a);
const char	*pc_kind_name(enum pc_kind k);

/*
 * The reply Postfix gives for a REJECT, DEFER or DEFER_IF_* action:
 * "<NAME>: CLASS rejected: TEXT" (TEXT by default "Access denied", or
 * "Service unavailable" for DEFER_IF_*), the enhanced code from the text
 * or 5.7.1 / 4.7.1, its class matched to the code's.  Fills code, dsn
 * (16 octets) and text.
 */
void	pc_reply(const struct pc_action *a, const char *name, const char *cls,
	    int *code, char *dsn, char *text, size_t textlen);

#endif
