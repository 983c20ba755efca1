/*
 * codec.h - the bytes of the sendmail milter protocol (version 6), MTA side:
 * encoders for the commands an MTA sends and an incremental decoder for the
 * replies a milter sends back.  No I/O, no allocation beyond the buffers
 * named here, no logging: the milter module (milter.c) does the talking.
 *
 * SYNOPSIS
 *	struct mc_buf out = { 0 };
 *	mc_enc_optneg(&out, SMFI_PROT_VERSION, actions, protocol);
 *	... write out.p, out.len; mc_buf_reset(&out);
 *
 *	struct mc_decoder d;
 *	mc_decoder_init(&d, MC_MAX_PACKET);
 *	mc_decoder_feed(&d, bytes, n);
 *	while ((rc = mc_decoder_next(&d, &reply)) == MC_REPLY)
 *		... reply is valid until the next feed/next/free ...
 *	if (rc == MC_ERROR) ... mc_decoder_error(&d) says why (sticky) ...
 *
 * DESCRIPTION
 *	A packet is a 4-octet length in network order (counting the command
 *	octet and the data), the command octet, the data.  Strings in the data
 *	end with NUL.  The constants (SMFIC_*, SMFIR_*, SMFIP_*, SMFIF_*,
 *	SMFIM_*, MILTER_CHUNK_SIZE) come from libmilter's <libmilter/mfdef.h>
 *	and <libmilter/mfapi.h>.
 *
 *	The encoders append one packet to a growable buffer and return 0, or
 *	-1 when memory runs out or an argument cannot be encoded (a body
 *	chunk over MILTER_CHUNK_SIZE, a macro stage that is no command); the
 *	buffer is then left as it was.
 *
 *	The decoder takes the milter's bytes in pieces of any size.  Each
 *	complete packet becomes a struct mc_reply whose strings point into
 *	the decoder's buffer.  A packet longer than the decoder's limit, an
 *	unknown reply command, or data that does not fit the command (missing
 *	NUL, wrong size, trailing bytes) is an error; errors are sticky.
 */
#ifndef SMTPCHAIN_MILTER_CODEC_H
#define SMTPCHAIN_MILTER_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"

#include <libmilter/mfapi.h>
#include <libmilter/mfdef.h>

/* The largest milter packet accepted by default (length field value). */
#define MC_MAX_PACKET	(1024 * 1024)

/* Macro stages in the OPTNEG reply: SMFIM_CONNECT .. SMFIM_EOH. */
#define MC_NSTAGES	(SMFIM_LAST + 1)

/*
 * The output buffer of encoded packets: filters/common/buf.h's, under the
 * names the milter module and the codec's tests use.
 */
#define mc_buf		buf
#define mc_buf_reset	buf_reset	/* len = 0, memory kept */
#define mc_buf_free	buf_free

/* --- MTA -> milter commands --------------------------------------------- */

/* SMFIC_OPTNEG: protocol version, the actions and protocol steps offered. */
int	mc_enc_optneg(struct mc_buf *b, uint32_t version, uint32_t actions, uint32_t protocol);
/* SMFIC_MACRO for the command `stage` (SMFIC_CONNECT, ...): n name/value pairs. */
int	mc_enc_macro(struct mc_buf *b, char stage, const char *const *names,
	    const char *const *values, size_t n);
/* SMFIC_CONNECT: family SMFIA_INET/INET6/UNIX/UNKNOWN; port in host order. */
int	mc_enc_connect(struct mc_buf *b, const char *hostname, char family, uint16_t port,
	    const char *addr);
int	mc_enc_helo(struct mc_buf *b, const char *name);
/* SMFIC_MAIL / SMFIC_RCPT: "<addr>" then each space-separated parameter. */
int	mc_enc_mail(struct mc_buf *b, const char *addr, const char *params);
int	mc_enc_rcpt(struct mc_buf *b, const char *addr, const char *params);
int	mc_enc_data(struct mc_buf *b);
int	mc_enc_header(struct mc_buf *b, const char *name, const char *value);
int	mc_enc_eoh(struct mc_buf *b);
/* SMFIC_BODY: at most MILTER_CHUNK_SIZE octets. */
int	mc_enc_body(struct mc_buf *b, const void *p, size_t n);
int	mc_enc_bodyeob(struct mc_buf *b);
int	mc_enc_abort(struct mc_buf *b);
int	mc_enc_quit(struct mc_buf *b);
int	mc_enc_quit_nc(struct mc_buf *b);
/* SMFIC_UNKNOWN: an SMTP command line the MTA does not know (without CRLF). */
int	mc_enc_unknown(struct mc_buf *b, const char *line);

/* --- milter -> MTA replies ---------------------------------------------- */

/*
 * One decoded reply.  cmd is the packet's command octet: SMFIC_OPTNEG for
 * the negotiation reply, otherwise one of the SMFIR_* below.  Which fields
 * are set depends on cmd:
 *
 *	SMFIC_OPTNEG		version, actions, protocol, macros[stage]
 *				(NULL when the milter gave no list for it)
 *	SMFIR_ACCEPT, CONTINUE, REJECT, TEMPFAIL, DISCARD, PROGRESS, SKIP,
 *	SHUTDOWN, CONN_FAIL	nothing
 *	SMFIR_REPLYCODE		text ("550 5.7.1 ...", lines joined by CRLF)
 *	SMFIR_ADDHEADER		name, value
 *	SMFIR_INSHEADER		index (0-based position), name, value
 *	SMFIR_CHGHEADER		index (occurrence, 1 = first; 0 as sent), name,
 *				value ("" = delete)
 *	SMFIR_ADDRCPT		addr
 *	SMFIR_ADDRCPT_PAR	addr, args (NULL when absent)
 *	SMFIR_DELRCPT		addr
 *	SMFIR_CHGFROM		addr, args (NULL when absent)
 *	SMFIR_REPLBODY		data, len (a chunk of the new body)
 *	SMFIR_QUARANTINE	text (the reason)
 */
struct mc_reply {
	char		 cmd;
	uint32_t	 version, actions, protocol;
	const char	*macros[MC_NSTAGES];
	uint32_t	 index;
	const char	*name, *value;
	const char	*addr, *args;
	const char	*text;
	const unsigned char *data;
	size_t		 len;
};

/* Whether a reply ends the exchange for a command (vs. a modification or progress). */
int	mc_reply_is_final(char cmd);
/* A name for a command or reply octet, for logs ("SMFIR_ACCEPT"). */
const char *mc_name(char cmd, int reply);

/* The incremental reply decoder. */
struct mc_decoder {
	unsigned char	*buf;
	size_t		 len, cap;	/* octets held */
	size_t		 off;		/* start of the next packet in buf */
	size_t		 max;		/* largest packet length accepted */
	char		 err[128];	/* "" or why the stream is broken */
};

#define MC_ERROR	(-1)	/* malformed stream (sticky) or out of memory */
#define MC_NEED_MORE	0	/* no complete packet yet */
#define MC_REPLY	1	/* *r holds the next reply */

void	mc_decoder_init(struct mc_decoder *d, size_t max_packet);
void	mc_decoder_free(struct mc_decoder *d);
/* Append octets from the milter; MC_ERROR on out of memory or a broken stream. */
int	mc_decoder_feed(struct mc_decoder *d, const void *p, size_t n);
/* The next complete reply: MC_REPLY, MC_NEED_MORE or MC_ERROR. */
int	mc_decoder_next(struct mc_decoder *d, struct mc_reply *r);
/* Why the decoder failed ("" if it did not). */
const char *mc_decoder_error(const struct mc_decoder *d);
/* Octets received but not yet returned as replies. */
size_t	mc_decoder_pending(const struct mc_decoder *d);

#endif
