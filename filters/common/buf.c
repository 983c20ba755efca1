/*
 * buf.c - a growable output buffer (see buf.h): doubles from 256 octets,
 * refuses a size that would overflow.
 */
#include <stdint.h>
#include <stdlib.h>

#include "buf.h"

#define FIRST_CAP	256

int
buf_reserve(struct buf *b, size_t n)
{
	size_t cap = b->cap ? b->cap : FIRST_CAP;
	unsigned char *p;

	if (n > SIZE_MAX / 2 - b->len)
		return -1;
	if (b->len + n <= b->cap)
		return 0;
	while (cap < b->len + n)
		cap *= 2;
	if ((p = realloc(b->p, cap)) == NULL)
		return -1;
	b->p = p;
	b->cap = cap;
	return 0;
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
}

void
buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}
