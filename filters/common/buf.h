/*
 * buf.h - a growable output buffer, shared by the filter modules' codecs
 * (the milter's packets, the policy protocol's requests): the encoders
 * append to it, the module writes p[0..len) and resets it.
 */
#ifndef SMTPCHAIN_FILTERS_BUF_H
#define SMTPCHAIN_FILTERS_BUF_H

#include <stddef.h>

struct buf {
	unsigned char	*p;
	size_t		 len, cap;
};

int	buf_reserve(struct buf *b, size_t n);	/* room for n more octets; -1 out of memory */
void	buf_reset(struct buf *b);		/* len = 0, memory kept */
void	buf_free(struct buf *b);

#endif
