/*
 * codec.c - the bytes of the milter protocol, MTA side (see codec.h): one
 * encoder per command, and a decoder that cuts the milter's stream into
 * packets and checks each reply's data against its command.
 *
 * The decoder keeps the octets it was fed in one buffer; a packet is
 * returned once all of it is there, with its strings pointing into the
 * buffer, and the buffer is compacted at the next feed.  A length field
 * over the limit is refused as soon as its four octets are in, so a broken
 * or hostile milter cannot make the buffer grow past one packet plus one
 * read.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* Put a 32-bit number in network order. */
static void
put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* Read a 32-bit number in network order. */
static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * A packet under construction: pkt_begin() reserves the header, the
 * pkt_* helpers append data, pkt_end() writes the length.  On failure the
 * buffer goes back to where it was.
 */
struct pkt {
	struct mc_buf	*b;
	size_t		 start;
	int		 failed;
};

static void
pkt_begin(struct pkt *k, struct mc_buf *b, char cmd)
{
	k->b = b;
	k->start = b->len;
	k->failed = buf_reserve(b, MILTER_LEN_BYTES + 1) != 0;
	if (!k->failed) {
		b->len += MILTER_LEN_BYTES;
		b->p[b->len++] = (unsigned char)cmd;
	}
}

/* Append raw octets to the packet. */
static void
pkt_bytes(struct pkt *k, const void *p, size_t n)
{
	if (k->failed || n == 0)
		return;
	if (buf_reserve(k->b, n) != 0) {
		k->failed = 1;
		return;
	}
	memcpy(k->b->p + k->b->len, p, n);
	k->b->len += n;
}

/* Append a string and its NUL. */
static void
pkt_string(struct pkt *k, const char *s)
{
	pkt_bytes(k, s, strlen(s) + 1);
}

/* Append n octets of s, then a NUL. */
static void
pkt_stringn(struct pkt *k, const char *s, size_t n)
{
	pkt_bytes(k, s, n);
	pkt_bytes(k, "", 1);
}

static void
pkt_u32(struct pkt *k, uint32_t v)
{
	unsigned char n[4];

	put32(n, v);
	pkt_bytes(k, n, sizeof(n));
}

/* Write the length field; 0, or -1 with the buffer restored. */
static int
pkt_end(struct pkt *k)
{
	size_t len;

	if (!k->failed) {
		len = k->b->len - k->start - MILTER_LEN_BYTES;
		if (len > UINT32_MAX)
			k->failed = 1;
		else
			put32(k->b->p + k->start, (uint32_t)len);
	}
	if (k->failed) {
		k->b->len = k->start;
		return -1;
	}
	return 0;
}

/* A command without data. */
static int
enc_empty(struct mc_buf *b, char cmd)
{
	struct pkt k;

	pkt_begin(&k, b, cmd);
	return pkt_end(&k);
}

/* --- MTA -> milter commands ---------------------------------------------- */

int
mc_enc_optneg(struct mc_buf *b, uint32_t version, uint32_t actions, uint32_t protocol)
{
	struct pkt k;

	pkt_begin(&k, b, SMFIC_OPTNEG);
	pkt_u32(&k, version);
	pkt_u32(&k, actions);
	pkt_u32(&k, protocol);
	return pkt_end(&k);
}

int
mc_enc_macro(struct mc_buf *b, char stage, const char *const *names,
    const char *const *values, size_t n)
{
	struct pkt k;

	switch (stage) {
	case SMFIC_CONNECT: case SMFIC_HELO: case SMFIC_MAIL: case SMFIC_RCPT:
	case SMFIC_DATA: case SMFIC_EOH: case SMFIC_BODYEOB: case SMFIC_HEADER:
	case SMFIC_BODY: case SMFIC_UNKNOWN:
		break;
	default:
		return -1;
	}
	pkt_begin(&k, b, SMFIC_MACRO);
	pkt_bytes(&k, &stage, 1);
	for (size_t i = 0; i < n; i++) {
		pkt_string(&k, names[i]);
		pkt_string(&k, values[i]);
	}
	return pkt_end(&k);
}

int
mc_enc_connect(struct mc_buf *b, const char *hostname, char family, uint16_t port,
    const char *addr)
{
	struct pkt k;
	unsigned char nport[2] = { (unsigned char)(port >> 8), (unsigned char)port };

	switch (family) {
	case SMFIA_UNKNOWN: case SMFIA_UNIX: case SMFIA_INET: case SMFIA_INET6:
		break;
	default:
		return -1;
	}
	pkt_begin(&k, b, SMFIC_CONNECT);
	pkt_string(&k, hostname);
	pkt_bytes(&k, &family, 1);
	if (family != SMFIA_UNKNOWN) {
		pkt_bytes(&k, nport, sizeof(nport));
		pkt_string(&k, addr ? addr : "");
	}
	return pkt_end(&k);
}

int
mc_enc_helo(struct mc_buf *b, const char *name)
{
	struct pkt k;

	pkt_begin(&k, b, SMFIC_HELO);
	pkt_string(&k, name);
	return pkt_end(&k);
}

/* MAIL or RCPT: "<addr>", then the parameters one string each. */
static int
enc_envelope(struct mc_buf *b, char cmd, const char *addr, const char *params)
{
	struct pkt k;
	const char *p = params ? params : "";

	pkt_begin(&k, b, cmd);
	pkt_bytes(&k, "<", 1);
	pkt_bytes(&k, addr, strlen(addr));
	pkt_string(&k, ">");
	for (;;) {
		size_t n;

		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		n = strcspn(p, " ");
		pkt_stringn(&k, p, n);
		p += n;
	}
	return pkt_end(&k);
}

int
mc_enc_mail(struct mc_buf *b, const char *addr, const char *params)
{
	return enc_envelope(b, SMFIC_MAIL, addr, params);
}

int
mc_enc_rcpt(struct mc_buf *b, const char *addr, const char *params)
{
	return enc_envelope(b, SMFIC_RCPT, addr, params);
}

int
mc_enc_data(struct mc_buf *b)
{
	return enc_empty(b, SMFIC_DATA);
}

int
mc_enc_header(struct mc_buf *b, const char *name, const char *value)
{
	struct pkt k;

	pkt_begin(&k, b, SMFIC_HEADER);
	pkt_string(&k, name);
	pkt_string(&k, value);
	return pkt_end(&k);
}

int
mc_enc_eoh(struct mc_buf *b)
{
	return enc_empty(b, SMFIC_EOH);
}

int
mc_enc_body(struct mc_buf *b, const void *p, size_t n)
{
	struct pkt k;

	if (n > MILTER_CHUNK_SIZE)
		return -1;
	pkt_begin(&k, b, SMFIC_BODY);
	pkt_bytes(&k, p, n);
	return pkt_end(&k);
}

int
mc_enc_bodyeob(struct mc_buf *b)
{
	return enc_empty(b, SMFIC_BODYEOB);
}

int
mc_enc_abort(struct mc_buf *b)
{
	return enc_empty(b, SMFIC_ABORT);
}

int
mc_enc_quit(struct mc_buf *b)
{
	return enc_empty(b, SMFIC_QUIT);
}

int
mc_enc_quit_nc(struct mc_buf *b)
{
	return enc_empty(b, SMFIC_QUIT_NC);
}

int
mc_enc_unknown(struct mc_buf *b, const char *line)
{
	struct pkt k;

	pkt_begin(&k, b, SMFIC_UNKNOWN);
	pkt_string(&k, line);
	return pkt_end(&k);
}

/* --- names --------------------------------------------------------------- */

static const struct {
	char		 cmd;
	int		 reply;
	const char	*name;
} names[] = {
	{ SMFIC_ABORT, 0, "SMFIC_ABORT" }, { SMFIC_BODY, 0, "SMFIC_BODY" },
	{ SMFIC_CONNECT, 0, "SMFIC_CONNECT" }, { SMFIC_MACRO, 0, "SMFIC_MACRO" },
	{ SMFIC_BODYEOB, 0, "SMFIC_BODYEOB" }, { SMFIC_HELO, 0, "SMFIC_HELO" },
	{ SMFIC_QUIT_NC, 0, "SMFIC_QUIT_NC" }, { SMFIC_HEADER, 0, "SMFIC_HEADER" },
	{ SMFIC_MAIL, 0, "SMFIC_MAIL" }, { SMFIC_EOH, 0, "SMFIC_EOH" },
	{ SMFIC_OPTNEG, 0, "SMFIC_OPTNEG" }, { SMFIC_QUIT, 0, "SMFIC_QUIT" },
	{ SMFIC_RCPT, 0, "SMFIC_RCPT" }, { SMFIC_DATA, 0, "SMFIC_DATA" },
	{ SMFIC_UNKNOWN, 0, "SMFIC_UNKNOWN" },
	{ SMFIC_OPTNEG, 1, "SMFIC_OPTNEG" },
	{ SMFIR_ADDRCPT, 1, "SMFIR_ADDRCPT" }, { SMFIR_DELRCPT, 1, "SMFIR_DELRCPT" },
	{ SMFIR_ADDRCPT_PAR, 1, "SMFIR_ADDRCPT_PAR" }, { SMFIR_SHUTDOWN, 1, "SMFIR_SHUTDOWN" },
	{ SMFIR_ACCEPT, 1, "SMFIR_ACCEPT" }, { SMFIR_REPLBODY, 1, "SMFIR_REPLBODY" },
	{ SMFIR_CONTINUE, 1, "SMFIR_CONTINUE" }, { SMFIR_DISCARD, 1, "SMFIR_DISCARD" },
	{ SMFIR_CHGFROM, 1, "SMFIR_CHGFROM" }, { SMFIR_CONN_FAIL, 1, "SMFIR_CONN_FAIL" },
	{ SMFIR_ADDHEADER, 1, "SMFIR_ADDHEADER" }, { SMFIR_INSHEADER, 1, "SMFIR_INSHEADER" },
	{ SMFIR_SETSYMLIST, 1, "SMFIR_SETSYMLIST" }, { SMFIR_CHGHEADER, 1, "SMFIR_CHGHEADER" },
	{ SMFIR_PROGRESS, 1, "SMFIR_PROGRESS" }, { SMFIR_QUARANTINE, 1, "SMFIR_QUARANTINE" },
	{ SMFIR_REJECT, 1, "SMFIR_REJECT" }, { SMFIR_SKIP, 1, "SMFIR_SKIP" },
	{ SMFIR_TEMPFAIL, 1, "SMFIR_TEMPFAIL" }, { SMFIR_REPLYCODE, 1, "SMFIR_REPLYCODE" },
};

const char *
mc_name(char cmd, int reply)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].cmd == cmd && names[i].reply == !!reply)
			return names[i].name;
	return reply ? "unknown reply" : "unknown command";
}

int
mc_reply_is_final(char cmd)
{
	switch (cmd) {
	case SMFIC_OPTNEG:
	case SMFIR_ACCEPT: case SMFIR_CONTINUE: case SMFIR_REJECT: case SMFIR_TEMPFAIL:
	case SMFIR_DISCARD: case SMFIR_REPLYCODE: case SMFIR_SKIP: case SMFIR_SHUTDOWN:
	case SMFIR_CONN_FAIL:
		return 1;
	default:
		return 0;
	}
}

/* --- the reply decoder ---------------------------------------------------- */

void
mc_decoder_init(struct mc_decoder *d, size_t max_packet)
{
	memset(d, 0, sizeof(*d));
	d->max = max_packet ? max_packet : MC_MAX_PACKET;
}

void
mc_decoder_free(struct mc_decoder *d)
{
	free(d->buf);
	d->buf = NULL;
	d->len = d->cap = d->off = 0;
}

const char *
mc_decoder_error(const struct mc_decoder *d)
{
	return d->err;
}

size_t
mc_decoder_pending(const struct mc_decoder *d)
{
	return d->len - d->off;
}

/* Record why the stream is broken; returns MC_ERROR. */
static int __attribute__((format(printf, 2, 3)))
dec_fail(struct mc_decoder *d, const char *fmt, ...)
{
	va_list ap;

	if (d->err[0] == '\0') {
		va_start(ap, fmt);
		vsnprintf(d->err, sizeof(d->err), fmt, ap);
		va_end(ap);
	}
	return MC_ERROR;
}

int
mc_decoder_feed(struct mc_decoder *d, const void *p, size_t n)
{
	size_t cap;
	unsigned char *nb;

	if (d->err[0])
		return MC_ERROR;
	if (d->off > 0) {	/* drop what was returned already */
		memmove(d->buf, d->buf + d->off, d->len - d->off);
		d->len -= d->off;
		d->off = 0;
	}
	if (n == 0)
		return 0;
	if (n > SIZE_MAX / 2 - d->len)
		return dec_fail(d, "input too large");
	if (d->len + n > d->cap) {
		cap = d->cap ? d->cap : 4096;
		while (cap < d->len + n)
			cap *= 2;
		if ((nb = realloc(d->buf, cap)) == NULL)
			return dec_fail(d, "out of memory");
		d->buf = nb;
		d->cap = cap;
	}
	memcpy(d->buf + d->len, p, n);
	d->len += n;
	return 0;
}

/* A cursor over one reply's data. */
struct cur {
	const unsigned char *p;
	size_t		 left;
};

/* A NUL-terminated string from the data, or NULL when there is no NUL. */
static const char *
cur_string(struct cur *c)
{
	const unsigned char *nul;
	const char *s;

	if (c->left == 0 || (nul = memchr(c->p, '\0', c->left)) == NULL)
		return NULL;
	s = (const char *)c->p;
	c->left -= (size_t)(nul - c->p) + 1;
	c->p = nul + 1;
	return s;
}

/* A 32-bit number from the data; -1 when too short. */
static int
cur_u32(struct cur *c, uint32_t *v)
{
	if (c->left < 4)
		return -1;
	*v = get32(c->p);
	c->p += 4;
	c->left -= 4;
	return 0;
}

/* The OPTNEG reply: three numbers, then (stage, "macro names") pairs. */
static int
dec_optneg(struct mc_decoder *d, struct cur *c, struct mc_reply *r)
{
	uint32_t stage;
	const char *list;

	if (cur_u32(c, &r->version) || cur_u32(c, &r->actions) || cur_u32(c, &r->protocol))
		return dec_fail(d, "SMFIC_OPTNEG reply shorter than 12 octets");
	while (c->left > 0) {
		if (cur_u32(c, &stage) != 0)
			return dec_fail(d, "SMFIC_OPTNEG reply: truncated macro stage");
		if ((list = cur_string(c)) == NULL)
			return dec_fail(d, "SMFIC_OPTNEG reply: macro list without NUL");
		if (stage < MC_NSTAGES)
			r->macros[stage] = list;	/* unknown stages are ignored */
	}
	return MC_REPLY;
}

/* Check one reply's data against its command and fill r. */
static int
dec_reply(struct mc_decoder *d, char cmd, struct cur *c, struct mc_reply *r)
{
	const char *name = mc_name(cmd, 1);

	memset(r, 0, sizeof(*r));
	r->cmd = cmd;
	switch (cmd) {
	case SMFIC_OPTNEG:
		return dec_optneg(d, c, r);
	case SMFIR_ACCEPT: case SMFIR_CONTINUE: case SMFIR_REJECT: case SMFIR_TEMPFAIL:
	case SMFIR_DISCARD: case SMFIR_PROGRESS: case SMFIR_SKIP: case SMFIR_SHUTDOWN:
	case SMFIR_CONN_FAIL:
		break;
	case SMFIR_REPLYCODE:
	case SMFIR_QUARANTINE:
		if ((r->text = cur_string(c)) == NULL)
			return dec_fail(d, "%s: text without NUL", name);
		break;
	case SMFIR_INSHEADER:
	case SMFIR_CHGHEADER:
		if (cur_u32(c, &r->index) != 0)
			return dec_fail(d, "%s: no header index", name);
		/* FALLTHROUGH */
	case SMFIR_ADDHEADER:
		if ((r->name = cur_string(c)) == NULL || (r->value = cur_string(c)) == NULL)
			return dec_fail(d, "%s: header name or value without NUL", name);
		if (r->name[0] == '\0')
			return dec_fail(d, "%s: empty header name", name);
		break;
	case SMFIR_ADDRCPT:
	case SMFIR_DELRCPT:
		if ((r->addr = cur_string(c)) == NULL)
			return dec_fail(d, "%s: address without NUL", name);
		break;
	case SMFIR_ADDRCPT_PAR:
	case SMFIR_CHGFROM:
		if ((r->addr = cur_string(c)) == NULL)
			return dec_fail(d, "%s: address without NUL", name);
		if (c->left > 0 && (r->args = cur_string(c)) == NULL)
			return dec_fail(d, "%s: arguments without NUL", name);
		break;
	case SMFIR_REPLBODY:
		r->data = c->p;
		r->len = c->left;
		c->p += c->left;
		c->left = 0;
		break;
	default:
		if (cmd >= ' ' && cmd < 0x7f)
			return dec_fail(d, "unknown reply command '%c'", cmd);
		return dec_fail(d, "unknown reply command 0x%02x", (unsigned char)cmd);
	}
	if (c->left != 0)
		return dec_fail(d, "%s: %zu octets of unexpected data", name, c->left);
	return MC_REPLY;
}

int
mc_decoder_next(struct mc_decoder *d, struct mc_reply *r)
{
	uint32_t plen;
	struct cur c;
	size_t have = d->len - d->off;
	const unsigned char *p = d->buf + d->off;

	if (d->err[0])
		return MC_ERROR;
	if (have < MILTER_LEN_BYTES)
		return MC_NEED_MORE;
	plen = get32(p);
	if (plen == 0)
		return dec_fail(d, "packet of length 0");
	if (plen > d->max)
		return dec_fail(d, "packet of %lu octets (limit %zu)", (unsigned long)plen, d->max);
	if (have - MILTER_LEN_BYTES < plen)
		return MC_NEED_MORE;
	c.p = p + MILTER_LEN_BYTES + 1;
	c.left = plen - 1;
	d->off += MILTER_LEN_BYTES + plen;
	return dec_reply(d, (char)p[MILTER_LEN_BYTES], &c, r);
}
