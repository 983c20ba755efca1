/*
 * dotstream.h - the DATA stream, seen exactly as a strict SMTP server sees it.
 *
 * dot_scan() walks the client's bytes after 354 and finds the one end of data
 * RFC 5321 allows, CRLF "." CRLF, and any bare CR or bare LF (a CR not
 * followed by LF, an LF not preceded by CR).  Those are refused before they
 * reach the backend: a backend that tolerates bare newlines must never see a
 * message boundary the proxy did not see (SMTP smuggling).  Lines of any
 * length pass; only bytes are counted.
 *
 * dot_stuff() turns BDAT chunk content into a DATA stream for a backend
 * without CHUNKING: a '.' at the start of a line is doubled, and
 * dot_stuff_finish() writes the end of data.
 */
#ifndef SMTPCHAIN_DOTSTREAM_H
#define SMTPCHAIN_DOTSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dot_result {
	DOT_MORE = 0,	/* all of *used may go on; call again with more input */
	DOT_END,	/* end of data: *used includes the final ".\r\n" */
	DOT_BAD_CR,	/* buf[*used] is a CR not followed by LF */
	DOT_BAD_LF,	/* buf[*used] is an LF not preceded by CR */
};

struct dot_scanner {
	uint8_t		state;		/* private */
	uint64_t	octets;		/* message bytes so far, dot-stuffed, end marker excluded */
};

/* Start of a message: just after the 354. */
void dot_scanner_init(struct dot_scanner *s);

/*
 * Scan buf.  A CR that is the last byte of buf is not consumed (*used stops
 * before it) because the next byte decides; the caller keeps it and calls
 * again with more bytes after it.  Bytes [0, *used) are checked and may be
 * forwarded as they are.  After DOT_END or DOT_BAD_* the scanner is done:
 * further calls return the same result with *used = 0 until
 * dot_scanner_init().
 */
enum dot_result dot_scan(struct dot_scanner *s, const char *buf, size_t len, size_t *used);

/*
 * After DOT_MORE: whether the last byte consumed was a '.' at the start of
 * a line, whose meaning (a stuffed line, or the end marker) the next bytes
 * decide.  A caller that unstuffs holds it back until then.
 */
bool	dot_scan_at_dot(const struct dot_scanner *s);

struct dot_stuffer {
	uint8_t		state;		/* private */
	uint64_t	octets;		/* content bytes consumed */
};

void dot_stuffer_init(struct dot_stuffer *s);

/*
 * Copy in to out, stuffing dots; stops when out has less than 2 bytes left or
 * in is used up.  BDAT chunks are length-delimited, so a CR at the end of in
 * is consumed and remembered; a CR is only written together with its LF, so
 * a bare CR never reaches out.  Returns DOT_MORE, or DOT_BAD_CR / DOT_BAD_LF
 * with *used at the offending byte (nothing from it on is written); for a
 * CR that ended the previous chunk, *used is 0.  A refusal is final: further
 * calls return it again with nothing used or written (after
 * dot_stuff_finish(), they return DOT_END).
 */
enum dot_result dot_stuff(struct dot_stuffer *s, const char *in, size_t len,
    size_t *used, char *out, size_t outlen, size_t *produced);

/*
 * End of the last chunk: write "\r\n.\r\n" when the content did not end with
 * CRLF (and was not empty), ".\r\n" otherwise.  out needs 5 bytes.  Returns
 * the length, or -1 if a CR was left pending (bare CR at the very end), the
 * content was refused, the end was already written, or out is too small.
 */
int dot_stuff_finish(struct dot_stuffer *s, char *out, size_t outlen);

/*
 * BDAT chunks relayed as they are (the backend has CHUNKING) are only
 * checked: every CR followed by LF, every LF preceded by CR, across chunk
 * boundaries (a chunk may end between the CR and the LF).
 */
struct crlf_checker {
	uint8_t		state;		/* private */
};

void crlf_checker_init(struct crlf_checker *c);

/*
 * Check in.  Returns DOT_MORE when every byte is clean (a final CR is
 * remembered), or DOT_BAD_CR / DOT_BAD_LF with *bad at the offending byte
 * (0 for a CR that ended the previous call).  A refusal is final.
 */
enum dot_result crlf_check(struct crlf_checker *c, const char *in, size_t len, size_t *bad);

/* At the end of the last chunk: whether a CR is left without its LF (a bare CR). */
bool	crlf_check_cr_pending(const struct crlf_checker *c);

#endif
