/*
 * hdrstore.h - the header section of a held message (msgstore's own part;
 * nothing else includes it).
 *
 * The headers are kept in message order, each as its line "name:value"
 * (white space before the colon and folding kept, final CR LF not
 * included) and a flag for an mbox "From " line.  While the lines and
 * their index fit in mem_limit bytes (limits.spool_memory, as the body),
 * they sit in one buffer with an 8-byte entry a header; past it the
 * section is spilled: the lines go to an unlinked temporary file in the
 * spool directory, in blocks of up to HB_N headers, and memory keeps 16
 * bytes a block and one block at a time (see hdrstore.c).  msgstore.c's
 * header parser writes the line it reads into hsec directly, from hstart
 * (the start of the current line) to hsec_len, then calls hs_push().
 */
#ifndef SMTPCHAIN_HDRSTORE_H
#define SMTPCHAIN_HDRSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MBOX_NAME	"X-Mailbox-Line"
#define HS_NHINTS	8

/* A header in memory: its line at hsec[off..off+len). */
struct hent {
	uint32_t	 off;
	uint32_t	 len:31;
	uint32_t	 mbox:1;	/* an mbox "From " line: see msgstore.h */
};

/* A spilled block: its records at off in the file, n headers. */
struct hblock {
	uint64_t	 off;
	uint32_t	 len;
	uint32_t	 n;
};

/* The one spilled block held in memory, to read or change. */
struct hwindow {
	size_t		 blk;		/* the block's index, or SIZE_MAX: none */
	size_t		 first;		/* index of its first header */
	char		*buf;		/* its records */
	size_t		 len;
	size_t		 cap;
	uint32_t	*offs;		/* where each header's record starts in buf */
	size_t		 offs_cap;
	bool		 dirty;		/* changed since it was read */
};

/* Where the last search for a name ended (see find_occurrence). */
struct hint {
	char		*name;		/* NULL: unused */
	size_t		 at;
	size_t		 before;
};

/* A header as callers see it: valid until the next hs_* call. */
struct hline {
	const char	*p;
	size_t		 len;
	bool		 mbox;
};

struct hdrstore {
	const char	*spool_dir;	/* the msgstore's */
	size_t		 mem_limit;	/* lines + index kept in memory before spilling */
	size_t		 line_limit;	/* growth cap of hsec while parsing */
	bool		 parsed;	/* the header section is over */
	int		 error;		/* errno of a failed spool read or write: sticky */

	size_t		 nhdrs;
	uint64_t	 hlive;		/* bytes of the headers as they go out (CR LF included) */
	struct hint	 hints[HS_NHINTS];
	unsigned	 next_hint;

	/*
	 * In memory: the lines in one buffer, and the list as a gap buffer of
	 * entries (gap_len free entries at gap_at), so that a run of inserts
	 * or deletes moving through the list costs the distance it moves.
	 * Changed or deleted lines are dead bytes (hdead) until a compaction.
	 * Spilled: hsec holds only the line being parsed.
	 */
	char		*hsec;
	size_t		 hsec_len;
	size_t		 hsec_cap;
	size_t		 hdead;
	struct hent	*ents;
	size_t		 ents_cap;
	size_t		 gap_at;
	size_t		 gap_len;

	/* Spilled: the file, its blocks in order, one of them in memory. */
	int		 fd;		/* -1: in memory */
	struct hblock	*blocks;
	size_t		 nblocks;
	size_t		 blocks_cap;
	uint64_t	 file_end;
	uint64_t	 file_dead;	/* bytes no block uses */
	size_t		 cur_blk;	/* where the last block search ended */
	size_t		 cur_first;	/* index of that block's first header */
	struct hwindow	 win;
};

/* A byte allowed in a header name: printable ASCII but ':' (Postfix's is_header()). */
static inline bool
name_char(unsigned char c)
{
	return c >= 33 && c <= 126 && c != ':';
}

void	hs_init(struct hdrstore *hs, const char *spool_dir, size_t mem_limit, size_t line_limit);
void	hs_free(struct hdrstore *hs);

/* The parsed line hsec[start..hsec_len) is a complete header: 0 or -1 with errno. */
int	hs_push(struct hdrstore *hs, size_t start, bool mbox);
/* The header section is parsed (hsec[hsec_len..] is gone): buffers shrink to fit. */
void	hs_parsed(struct hdrstore *hs);

/* Header i (< nhdrs): 0, or -1 with errno (a failed spool read). */
int	hs_get(struct hdrstore *hs, size_t i, struct hline *out);

/* Header operations for msgstore.h's API: 1 changed, 0 nothing to do, -1 with errno. */
int	hs_insert_header(struct hdrstore *hs, size_t index, const char *name, const char *value);
int	hs_change_header(struct hdrstore *hs, const char *name, size_t occurrence, const char *value);
int	hs_change_header_at(struct hdrstore *hs, size_t index, const char *name, const char *value);

/* Length of the name at the start of a header line; offset of its value (after the colon). */
size_t	line_namelen(const char *line, size_t len);
size_t	line_valueoff(const char *line, size_t len);

/* Room for need bytes in a growing buffer, never more than limit unless need is. */
void	buf_reserve(char **buf, size_t *cap, size_t need, size_t limit);
/* A temporary file in dir, unlinked at once: the fd, or -1 with errno. */
int	spool_tempfile(const char *dir);
/* Write all of p to fd despite short writes and signals: 0 or -1 with errno. */
int	write_all(int fd, const char *p, size_t n);

#endif
