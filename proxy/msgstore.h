/*
 * msgstore.h - one message held for the filter chain.
 *
 * The store is fed the DATA stream as the client sends it (dot-stuffed CRLF
 * lines, already checked by dot_scan, without the final ".\r\n"), removes
 * the dot-stuffing, and keeps:
 *   - the header section parsed into a list (folded headers kept as one
 *     header, folding intact), bounded by max_header_bytes, stored compactly:
 *     the lines in one buffer (about the wire size) and 8 bytes of index a
 *     header, and, like the body, past mem_threshold in an unlinked
 *     temporary file in spool_dir, in blocks of about 128 headers, with 16
 *     bytes of index a block and one block in memory; every header
 *     operation costs what it walks, and a run of changes to one name walks
 *     the list once (see hdrstore.c);
 *   - the body in memory up to mem_threshold bytes, then in an unlinked
 *     temporary file in spool_dir, so memory per session stays bounded
 *     whatever the message size.
 * Filters read and change it (headers, body); the proxy then reads it back
 * as a dot-stuffed stream for the backend.  Nothing here does network I/O;
 * file I/O is plain blocking read/write on a local spool.
 *
 * The header section is split as Postfix splits it, so that the filters see
 * every header the backend parses: it ends at the first empty line, or at
 * the first line that is not a header, which then starts the body.  A
 * header line is what Postfix's is_header() takes: name bytes (33..126 but
 * ':'), optional SP or HTAB (RFC 5322's obs-field "Name : value"), a colon.
 * A line starting with SP or HTAB is a continuation only after a header.
 * Lines at the very start that match ">*From " (mbox lines) are headers
 * too: Postfix's smtpd turns them into "X-Mailbox-Line: From ..." and goes
 * on parsing headers after them, so the filters see them by that name (the
 * backend still gets the bytes as they came); white space right after them
 * starts the body, as in smtpd.  A NUL in a header value is refused
 * (EILSEQ): header_checks and milters take C strings (the milter protocol
 * too), so no filter could see the value whole while the backend would get
 * every byte.  A NUL where a name would start makes the line body, as in
 * Postfix.  The store remembers whether there was an empty line so that an
 * unchanged message goes out byte for byte as it came in.  Lines end at
 * CRLF only; a bare CR or LF is kept as data.
 *
 * The separator goes out if the message had one, or if the message was
 * changed (a header change or a new body) and has a non-empty body, so
 * that the body's first line cannot be read as a header; an empty header
 * list with it is a message with an empty header section.
 */
#ifndef SMTPCHAIN_MSGSTORE_H
#define SMTPCHAIN_MSGSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct msg_header {
	char	*name;		/* NUL-terminated, as written */
	char	*value;		/* after the colon: leading space kept, folding
				   (CRLF + WSP) kept, final CRLF not included */
};

struct msgstore;

/*
 * A new, empty store.  spool_dir: where a body or a header section over
 * mem_threshold goes (created with mkstemp and unlinked at once).  Returns NULL only on
 * allocation failure (never: xmalloc) — so never NULL.
 */
struct msgstore *msgstore_new(const char *spool_dir, size_t mem_threshold, size_t max_header_bytes);
void	msgstore_free(struct msgstore *m);

/*
 * Feed bytes of the stuffed DATA stream (any split, even inside a CRLF).
 * Returns 0, or -1 with errno: EMSGSIZE when the header section exceeds
 * max_header_bytes, EILSEQ for a NUL in a header value, or the errno of a
 * failed temp file write (ENOSPC...).
 * Header bytes are counted as they came ("name:value\r\n", folding
 * included, the separator not), and so are the bytes of a line not yet
 * known to be a header or not (a long run of name bytes without a colon).
 * An error sticks: later calls, and msgstore_finish(), fail with it.
 * After msgstore_finish(): EINVAL.
 */
int	msgstore_feed(struct msgstore *m, const char *p, size_t n);
/*
 * End of data: a pending header is complete, and a non-empty body that does
 * not end with CRLF gets one (the LF alone after a final CR), so that what
 * the filters read is what the backend gets.  Calling it again does
 * nothing.  Returns 0 or -1 with errno.
 */
int	msgstore_finish(struct msgstore *m);

/* Octets of the message as it is now (headers + separator + body, CRLF
 * lines, unstuffed): what msgstore_write_fd() writes. */
uint64_t msgstore_size(const struct msgstore *m);

/* Headers, in order; msgstore_header() is NULL past the end, or when a
 * spilled header section cannot be read (the message then cannot go out:
 * msgstore_output_begin() fails); it copies the header out as two C
 * strings (name without the white space before the colon), valid until
 * the next msgstore_header() call or header change. */
size_t	msgstore_nheaders(const struct msgstore *m);
const struct msg_header *msgstore_header(struct msgstore *m, size_t i);
/* Append; insert before index (index >= count appends); change the
 * occurrence-th (from 1) header of that name, case-insensitive, value NULL
 * deletes it (no such header: add it when value is not NULL, as milter's
 * chgheader does).  Values may contain folding ("\r\n\t"); a name must be
 * 1..997 printable bytes without ':' or space; a value must not contain a
 * bare CR or LF, nor CRLF not followed by a space or tab.  0 or -1 (EINVAL,
 * also for occurrence 0; or the errno of a failed spool read or write,
 * which sticks: the message cannot go out).  A value is stored as given: it goes out as
 * "name:value", so a filter wanting "Name: v" passes " v".  A change keeps
 * the name as the message spells it.  Changing a header to the value it
 * has, or deleting one that is not there, changes nothing (0, and
 * msgstore_changes() stays). */
int	msgstore_add_header(struct msgstore *m, const char *name, const char *value);
int	msgstore_insert_header(struct msgstore *m, size_t index, const char *name, const char *value);
int	msgstore_change_header(struct msgstore *m, const char *name, size_t occurrence, const char *value);

/*
 * Change (value) or delete (NULL) header index, which must have that name
 * (case-insensitive): 0, or -1 (EINVAL: no such header there, a bad name
 * or value).  Same value: nothing changes.  Costs the distance from the
 * last change, not a search.
 */
int	msgstore_change_header_at(struct msgstore *m, size_t index, const char *name,
	    const char *value);

/*
 * Read the (unstuffed) body from the start: rewind, then read until 0.
 * Returns bytes read, 0 at the end, -1 with errno.
 */
int	msgstore_body_rewind(struct msgstore *m);
ssize_t	msgstore_body_read(struct msgstore *m, void *buf, size_t n);

/*
 * Replace the body: begin, append any number of times (the new body may be
 * large: it spills like the original), commit.  CRLF line ends are the
 * caller's job except that a bare LF is turned into CRLF and a final CRLF
 * is added if missing at commit (a non-empty body; the LF alone after a
 * final CR).  Until the commit the old body stays readable, and the two
 * share the memory budget (mem_threshold).  begin again drops a body not
 * committed; append or commit without begin: EINVAL; after a failed
 * append, commit fails with its errno and the old body stays.  A new body
 * with the same bytes as the old one changes nothing (the old one stays,
 * and so does msgstore_changes()).  0 or -1 with errno.
 */
int	msgstore_body_replace_begin(struct msgstore *m);
int	msgstore_body_replace_append(struct msgstore *m, const void *p, size_t n);
int	msgstore_body_replace_commit(struct msgstore *m);

/*
 * How many real changes the headers and body have had: a caller compares
 * the count before and after a change to know whether the message changed.
 */
uint64_t msgstore_changes(const struct msgstore *m);

/*
 * The message for the backend: begin, then read until 0: headers, the
 * separator, the body, dot-stuffed, ending with CRLF, WITHOUT the final
 * ".\r\n".  Returns bytes, 0 at the end, -1 with errno.  Any n >= 1 works
 * (n 0, or a read before begin: EINVAL); begin calls msgstore_finish() if
 * need be.  A "." is doubled at the start of the message and after every
 * CR or LF (after CRLF only, in a valid message; the rest is a safety
 * net for bodies that filters write).  A header change or a new body
 * needs a new begin.
 */
int	msgstore_output_begin(struct msgstore *m);
ssize_t	msgstore_output_read(struct msgstore *m, char *buf, size_t n);

/*
 * Write the message, unstuffed, to fd (for the quarantine).  0 or -1 with
 * errno.  Does not fsync or close fd.
 */
int	msgstore_write_fd(struct msgstore *m, int fd);

#endif
