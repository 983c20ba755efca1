/*
 * dotstream.c - the DATA stream scanner and the BDAT-to-DATA dot-stuffer.
 *
 * Both are small state machines over bytes, with their whole state in the
 * caller's struct, so input may be split anywhere between calls and the
 * answer is the same as for one buffer.  They are strict on purpose: in
 * message data every CR must be followed by LF and every LF preceded by CR;
 * anything else is refused, so a backend that is lax about line ends can
 * never be shown an end of data (or a command after it) that the proxy did
 * not see.  The only end of data is CR LF "." CR LF, where the first CR LF
 * may be the start of the stream (an empty message).
 *
 * Scanner states:
 *	BOL	at the start of a line (start of data, or just after CR LF)
 *	TEXT	inside a line
 *	DOT	just after a "." at the start of a line
 * A CR is only ever consumed together with the byte after it, so the
 * scanner needs no "after CR" state: a CR at the end of the buffer is left
 * to the caller, who hands it back with more bytes.
 *
 * The stuffer reads length-delimited BDAT content and so has to consume a
 * final CR: it remembers it (state CR) and writes it only once the LF has
 * come, so a bare CR is never written out.
 *
 * The CR/LF checker is the stuffer without output, for BDAT chunks relayed
 * as they are to a backend with CHUNKING: states TEXT and CR only.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dotstream.h"

enum dot_state {
	DS_BOL = 0,
	DS_TEXT,
	DS_DOT,
	DS_CR,		/* stuffer only: a CR consumed, its LF not yet seen */
	DS_END,		/* scanner: end of data found */
	DS_BAD_CR,	/* refused; sticky until re-initialised */
	DS_BAD_LF,
	DS_DONE,	/* stuffer: dot_stuff_finish() has written the end */
};

/* Whether the last byte scanned was a '.' at the start of a line. */
bool
dot_scan_at_dot(const struct dot_scanner *s)
{
	return s->state == DS_DOT;
}

/* Start of a message: just after the 354. */
void
dot_scanner_init(struct dot_scanner *s)
{
	s->state = DS_BOL;
	s->octets = 0;
}

/* The result a scanner or stuffer in a final state gives again. */
static enum dot_result
dot_final_result(uint8_t state)
{
	switch (state) {
	case DS_BAD_CR:
		return DOT_BAD_CR;
	case DS_BAD_LF:
		return DOT_BAD_LF;
	default:
		return DOT_END;
	}
}

/*
 * The offset of the first CR or LF in p[0..len), or len if there is none.
 * Two memchr() calls (word- or vector-wide in libc) rather than a loop over
 * bytes: the LF ends the search for the CR, so in a well-formed line each
 * byte is looked at about twice, but many at a time.
 */
static size_t
dot_line_break(const unsigned char *p, size_t len)
{
	const unsigned char *lf = memchr(p, '\n', len);
	size_t limit = lf != NULL ? (size_t)(lf - p) : len;
	const unsigned char *cr = memchr(p, '\r', limit);

	return cr != NULL ? (size_t)(cr - p) : limit;
}

/* Scan DATA bytes for bare CR/LF and the end of data. */
enum dot_result
dot_scan(struct dot_scanner *s, const char *buf, size_t len, size_t *used)
{
	const unsigned char *p = (const unsigned char *)buf;
	enum dot_result r = DOT_MORE;
	uint8_t state = s->state;
	size_t i = 0;

	*used = 0;
	if (state != DS_BOL && state != DS_TEXT && state != DS_DOT)
		return dot_final_result(state);
	while (i < len) {
		if (state == DS_TEXT) {
			/* The common case: run to the next CR or LF. */
			i += dot_line_break(p + i, len - i);
			if (i == len)
				break;
		}
		if (p[i] == '\n') {
			state = DS_BAD_LF;
			r = DOT_BAD_LF;
			break;
		}
		if (p[i] == '\r') {
			if (i + 1 == len)
				break;		/* the next byte decides: hand the CR back */
			if (p[i + 1] != '\n') {
				state = DS_BAD_CR;
				r = DOT_BAD_CR;
				break;
			}
			i += 2;
			if (state == DS_DOT) {
				state = DS_END;
				r = DOT_END;
				break;
			}
			state = DS_BOL;
			continue;
		}
		/* Any other byte. */
		if (state == DS_BOL && p[i] == '.')
			state = DS_DOT;
		else
			state = DS_TEXT;
		i++;
	}
	s->octets += i;
	if (r == DOT_END)
		s->octets -= 3;		/* ".\r\n" is not message data */
	s->state = state;
	*used = i;
	return r;
}

/* Start the content of a BDAT transaction. */
void
dot_stuffer_init(struct dot_stuffer *s)
{
	s->state = DS_BOL;
	s->octets = 0;
}

/* Copy BDAT content to a DATA stream, doubling dots at line start. */
enum dot_result
dot_stuff(struct dot_stuffer *s, const char *in, size_t len,
    size_t *used, char *out, size_t outlen, size_t *produced)
{
	const unsigned char *p = (const unsigned char *)in;
	enum dot_result r = DOT_MORE;
	uint8_t state = s->state;
	size_t i = 0, o = 0, n;

	*used = 0;
	*produced = 0;
	if (state == DS_DONE)
		return DOT_END;
	if (state != DS_BOL && state != DS_TEXT && state != DS_CR)
		return dot_final_result(state);
	while (i < len && outlen - o >= 2) {
		if (state == DS_CR) {
			if (p[i] != '\n') {
				/*
				 * The bare CR itself was consumed earlier (at
				 * i - 1, or at the end of the previous chunk)
				 * and never written: report the CR if it is in
				 * this buffer, else the byte that gives it away.
				 */
				if (i > 0)
					i--;
				state = DS_BAD_CR;
				r = DOT_BAD_CR;
				break;
			}
			out[o++] = '\r';
			out[o++] = '\n';
			i++;
			state = DS_BOL;
			continue;
		}
		if (p[i] == '\n') {
			state = DS_BAD_LF;
			r = DOT_BAD_LF;
			break;
		}
		if (p[i] == '\r') {
			i++;
			state = DS_CR;
			continue;
		}
		if (state == DS_BOL && p[i] == '.') {
			out[o++] = '.';
			out[o++] = '.';
			i++;
			state = DS_TEXT;
			continue;
		}
		/* A run of ordinary bytes, as far as out has room. */
		n = len - i < outlen - o ? len - i : outlen - o;
		n = dot_line_break(p + i, n);	/* >= 1: p[i] is ordinary */
		memcpy(out + o, p + i, n);
		o += n;
		i += n;
		state = DS_TEXT;
	}
	s->octets += i;
	s->state = state;
	*used = i;
	*produced = o;
	return r;
}

/* Write the end of data after the last chunk. */
int
dot_stuff_finish(struct dot_stuffer *s, char *out, size_t outlen)
{
	switch (s->state) {
	case DS_BOL:
		if (outlen < 3)
			return -1;
		memcpy(out, ".\r\n", 3);
		s->state = DS_DONE;
		return 3;
	case DS_TEXT:
		if (outlen < 5)
			return -1;
		memcpy(out, "\r\n.\r\n", 5);
		s->state = DS_DONE;
		return 5;
	default:
		return -1;	/* a bare CR at the very end, refused, or done */
	}
}

/* Start of a message relayed in BDAT chunks. */
void
crlf_checker_init(struct crlf_checker *c)
{
	c->state = DS_TEXT;
}

/* Check relayed BDAT content for bare CR and bare LF. */
enum dot_result
crlf_check(struct crlf_checker *c, const char *in, size_t len, size_t *bad)
{
	for (size_t i = 0; i < len; i++) {
		if (c->state == DS_TEXT) {
			/* The common case: run to the next CR or LF. */
			i += dot_line_break((const unsigned char *)in + i, len - i);
			if (i == len)
				break;
		}
		switch (c->state) {
		case DS_CR:
			if (in[i] != '\n') {
				c->state = DS_BAD_CR;
				*bad = i > 0 ? i - 1 : 0;
				return DOT_BAD_CR;
			}
			c->state = DS_TEXT;
			break;
		case DS_TEXT:
			if (in[i] == '\r') {
				c->state = DS_CR;
			} else if (in[i] == '\n') {
				c->state = DS_BAD_LF;
				*bad = i;
				return DOT_BAD_LF;
			}
			break;
		default:
			*bad = 0;
			return dot_final_result(c->state);
		}
	}
	if (c->state == DS_BAD_CR || c->state == DS_BAD_LF) {
		*bad = 0;
		return dot_final_result(c->state);
	}
	return DOT_MORE;
}

/* Whether the content so far ends with a CR still waiting for its LF. */
bool
crlf_check_cr_pending(const struct crlf_checker *c)
{
	return c->state == DS_CR;
}
