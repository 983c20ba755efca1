/*
 * test_milter_codec.c - unit tests for the milter codec
 * (filters/milter/codec.c): the bytes of every MTA command, every milter
 * reply decoded, and the decoder's behaviour on split and broken input.
 *
 * Commands are checked against packets written out by hand from the
 * protocol (length in network order, command octet, data).  Replies are
 * built with a small encoder here (the milter's side, which the module does
 * not need) and decoded back: a round trip per reply type.  A stream of
 * all the replies is then fed in every two-piece split and byte by byte:
 * the decoded sequence must not change.  Malformed packets (length 0, over
 * the limit, unknown command, strings without NUL, short or trailing data)
 * must give an error that stays.  Every feed gets an exact-size heap copy,
 * so ASan sees reads past the end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "../../filters/milter/codec.h"

/* --- helpers --------------------------------------------------------------- */

/* Feed an exact-size heap copy of p. */
static int
feed(struct mc_decoder *d, const void *p, size_t n)
{
	unsigned char *copy = malloc(n ? n : 1);
	int rc;

	memcpy(copy, p, n);
	rc = mc_decoder_feed(d, copy, n);
	free(copy);
	return rc;
}

/* A milter-side packet: cmd and data of n octets, appended to b. */
static void
packet(struct mc_buf *b, char cmd, const void *data, size_t n)
{
	size_t len = n + 1;

	b->p = realloc(b->p, b->len + 5 + n);
	b->p[b->len++] = (unsigned char)(len >> 24);
	b->p[b->len++] = (unsigned char)(len >> 16);
	b->p[b->len++] = (unsigned char)(len >> 8);
	b->p[b->len++] = (unsigned char)len;
	b->p[b->len++] = (unsigned char)cmd;
	if (n)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	b->cap = b->len;
}

/* Data built piece by piece for packet(). */
struct data {
	unsigned char	 p[4096];
	size_t		 n;
};

static void
d_u32(struct data *d, uint32_t v)
{
	d->p[d->n++] = (unsigned char)(v >> 24);
	d->p[d->n++] = (unsigned char)(v >> 16);
	d->p[d->n++] = (unsigned char)(v >> 8);
	d->p[d->n++] = (unsigned char)v;
}

static void
d_str(struct data *d, const char *s)
{
	memcpy(d->p + d->n, s, strlen(s) + 1);
	d->n += strlen(s) + 1;
}

/* Decode exactly one reply from bytes; MC_REPLY with *r set, or the code. */
static int
decode_one(struct mc_decoder *d, const struct mc_buf *b, struct mc_reply *r)
{
	mc_decoder_init(d, 0);
	if (feed(d, b->p, b->len) != 0)
		return MC_ERROR;
	return mc_decoder_next(d, r);
}

/* A text summary of a reply, to compare decoded sequences. */
static void
summary(const struct mc_reply *r, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%c|%u|%u|%u|%u|%s|%s|%s|%s|%s|", r->cmd,
	    r->version, r->actions, r->protocol, r->index,
	    r->name ? r->name : "-", r->value ? r->value : "-", r->addr ? r->addr : "-",
	    r->args ? r->args : "-", r->text ? r->text : "-");

	for (int i = 0; i < MC_NSTAGES && n > 0 && (size_t)n < outlen; i++)
		n += snprintf(out + n, outlen - (size_t)n, "%s,", r->macros[i] ? r->macros[i] : "-");
	if (n > 0 && (size_t)n < outlen)
		snprintf(out + n, outlen - (size_t)n, "%.*s", (int)r->len,
		    r->data ? (const char *)r->data : "");
}

/* --- commands --------------------------------------------------------------- */

/* Check one encoder's output against the expected packet. */
#define CHECK_ENC(call, want, name) do { \
	struct mc_buf b_ = { 0 }; \
	int rc_ = (call); \
	is_int(rc_, 0, name " encodes"); \
	is_mem(b_.p, b_.len, want, sizeof(want) - 1, name " bytes"); \
	mc_buf_free(&b_); \
} while (0)

static void
test_commands(void)
{
	const char *names[] = { "j", "{client_addr}" };
	const char *values[] = { "mx.test", "192.0.2.1" };
	unsigned char big[MILTER_CHUNK_SIZE + 1];
	struct mc_buf b = { 0 };

	CHECK_ENC(mc_enc_optneg(&b_, 6, SMFI_CURR_ACTS, 0x1fffff),
	    "\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff", "OPTNEG");
	CHECK_ENC(mc_enc_macro(&b_, SMFIC_CONNECT, names, values, 2),
	    "\0\0\0\x24" "DCj\0mx.test\0{client_addr}\0" "192.0.2.1\0", "MACRO");
	CHECK_ENC(mc_enc_macro(&b_, SMFIC_EOH, names, values, 0), "\0\0\0\x02" "DN", "MACRO empty");
	CHECK_ENC(mc_enc_connect(&b_, "client.test", SMFIA_INET, 25, "192.0.2.1"),
	    "\0\0\0\x1a" "Cclient.test\0" "4\0\x19" "192.0.2.1\0", "CONNECT inet");
	CHECK_ENC(mc_enc_connect(&b_, "[::1]", SMFIA_INET6, 0xabcd, "::1"),
	    "\0\0\0\x0e" "C[::1]\0" "6\xab\xcd::1\0", "CONNECT inet6");
	CHECK_ENC(mc_enc_connect(&b_, "localhost", SMFIA_UNKNOWN, 0, NULL),
	    "\0\0\0\x0c" "Clocalhost\0U", "CONNECT unknown");
	CHECK_ENC(mc_enc_helo(&b_, "client.test"), "\0\0\0\x0dHclient.test\0", "HELO");
	CHECK_ENC(mc_enc_mail(&b_, "a@b", "SIZE=10  BODY=8BITMIME"),
	    "\0\0\0\x1d" "M<a@b>\0SIZE=10\0BODY=8BITMIME\0", "MAIL with args");
	CHECK_ENC(mc_enc_mail(&b_, "", NULL), "\0\0\0\x04M<>\0", "MAIL null sender");
	CHECK_ENC(mc_enc_rcpt(&b_, "x@y", ""), "\0\0\0\x07R<x@y>\0", "RCPT");
	CHECK_ENC(mc_enc_data(&b_), "\0\0\0\x01T", "DATA");
	CHECK_ENC(mc_enc_header(&b_, "Subject", "hi\n\tthere"),
	    "\0\0\0\x13LSubject\0hi\n\tthere\0", "HEADER");
	CHECK_ENC(mc_enc_eoh(&b_), "\0\0\0\x01N", "EOH");
	CHECK_ENC(mc_enc_body(&b_, "a\r\nb\r\n", 6), "\0\0\0\x07" "Ba\r\nb\r\n", "BODY");
	CHECK_ENC(mc_enc_bodyeob(&b_), "\0\0\0\x01" "E", "BODYEOB");
	CHECK_ENC(mc_enc_abort(&b_), "\0\0\0\x01" "A", "ABORT");
	CHECK_ENC(mc_enc_quit(&b_), "\0\0\0\x01Q", "QUIT");
	CHECK_ENC(mc_enc_quit_nc(&b_), "\0\0\0\x01K", "QUIT_NC");
	CHECK_ENC(mc_enc_unknown(&b_, "XFOO bar"), "\0\0\0\x0aUXFOO bar\0", "UNKNOWN");

	/* Body chunks: MILTER_CHUNK_SIZE is the most. */
	memset(big, 'x', sizeof(big));
	is_int(mc_enc_body(&b, big, MILTER_CHUNK_SIZE), 0, "BODY of 65535 octets");
	is_int(b.len, 5 + MILTER_CHUNK_SIZE, "BODY of 65535: length");
	ok(b.p[0] == 0 && b.p[1] == 1 && b.p[2] == 0 && b.p[3] == 0, "BODY of 65535: length field 65536");
	is_int(mc_enc_body(&b, big, sizeof(big)), -1, "BODY of 65536 octets refused");
	is_int(b.len, 5 + MILTER_CHUNK_SIZE, "a refused command leaves the buffer as it was");
	is_int(mc_enc_macro(&b, 'Z', names, values, 1), -1, "MACRO for a stage that is no command refused");
	is_int(mc_enc_connect(&b, "h", 'X', 1, "a"), -1, "CONNECT with a bad family refused");
	mc_buf_reset(&b);
	is_int(b.len, 0, "reset empties the buffer");
	is_int(mc_enc_abort(&b), 0, "encode after reset");
	is_int(mc_enc_quit(&b), 0, "packets append");
	is_mem(b.p, b.len, "\0\0\0\x01" "A\0\0\0\x01Q", 10, "two packets in one buffer");
	mc_buf_free(&b);
	ok(b.p == NULL && b.len == 0, "free");
}

/* --- replies ------------------------------------------------------------------ */

/* Every reply type: built here, decoded, fields checked. */
static void
test_replies(void)
{
	static const char multiline[] = "550-5.7.1 first\r\n550 5.7.1 second";
	static const char simple[] = {
		SMFIR_ACCEPT, SMFIR_CONTINUE, SMFIR_REJECT, SMFIR_TEMPFAIL, SMFIR_DISCARD,
		SMFIR_PROGRESS, SMFIR_SKIP, SMFIR_SHUTDOWN, SMFIR_CONN_FAIL,
	};
	struct mc_decoder d;
	struct mc_reply r;
	struct mc_buf b = { 0 };
	struct data x;

	for (size_t i = 0; i < sizeof(simple); i++) {
		char name[64];

		mc_buf_reset(&b);
		packet(&b, simple[i], NULL, 0);
		snprintf(name, sizeof(name), "%s decodes", mc_name(simple[i], 1));
		is_int(decode_one(&d, &b, &r), MC_REPLY, name);
		is_int(r.cmd, simple[i], "its command");
		ok(mc_reply_is_final(simple[i]) == (simple[i] != SMFIR_PROGRESS), "final or not");
		is_int(mc_decoder_next(&d, &r), MC_NEED_MORE, "nothing after it");
		mc_decoder_free(&d);
	}

	/* OPTNEG without and with macro lists. */
	memset(&x, 0, sizeof(x));
	d_u32(&x, 6);
	d_u32(&x, SMFIF_ADDHDRS | SMFIF_CHGBODY);
	d_u32(&x, SMFIP_NOHELO | SMFIP_NR_HDR);
	mc_buf_reset(&b);
	packet(&b, SMFIC_OPTNEG, x.p, x.n);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "OPTNEG reply decodes");
	is_int(r.version, 6, "OPTNEG version");
	is_int(r.actions, SMFIF_ADDHDRS | SMFIF_CHGBODY, "OPTNEG actions");
	is_int(r.protocol, SMFIP_NOHELO | SMFIP_NR_HDR, "OPTNEG protocol");
	ok(r.macros[SMFIM_CONNECT] == NULL && r.macros[SMFIM_EOM] == NULL, "OPTNEG: no macro lists");
	mc_decoder_free(&d);
	d_u32(&x, SMFIM_CONNECT);
	d_str(&x, "j {client_addr}");
	d_u32(&x, SMFIM_EOM);
	d_str(&x, "i");
	d_u32(&x, 77);		/* an unknown stage is ignored */
	d_str(&x, "{future}");
	mc_buf_reset(&b);
	packet(&b, SMFIC_OPTNEG, x.p, x.n);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "OPTNEG reply with macro lists decodes");
	is_str(r.macros[SMFIM_CONNECT], "j {client_addr}", "connect macro list");
	is_str(r.macros[SMFIM_EOM], "i", "eom macro list");
	ok(r.macros[SMFIM_HELO] == NULL, "no helo list");
	mc_decoder_free(&d);

	mc_buf_reset(&b);
	packet(&b, SMFIR_REPLYCODE, multiline, sizeof(multiline));
	is_int(decode_one(&d, &b, &r), MC_REPLY, "REPLYCODE decodes");
	is_str(r.text, "550-5.7.1 first\r\n550 5.7.1 second", "REPLYCODE text");
	mc_decoder_free(&d);

	mc_buf_reset(&b);
	packet(&b, SMFIR_ADDHEADER, "X-A\0 one\0", 9);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "ADDHEADER decodes");
	is_str(r.name, "X-A", "ADDHEADER name");
	is_str(r.value, " one", "ADDHEADER value");
	mc_decoder_free(&d);

	memset(&x, 0, sizeof(x));
	d_u32(&x, 3);
	d_str(&x, "X-Ins");
	d_str(&x, "v");
	mc_buf_reset(&b);
	packet(&b, SMFIR_INSHEADER, x.p, x.n);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "INSHEADER decodes");
	is_int(r.index, 3, "INSHEADER index");
	is_str(r.name, "X-Ins", "INSHEADER name");
	is_str(r.value, "v", "INSHEADER value");
	mc_decoder_free(&d);

	memset(&x, 0, sizeof(x));
	d_u32(&x, 2);
	d_str(&x, "Subject");
	d_str(&x, "");
	mc_buf_reset(&b);
	packet(&b, SMFIR_CHGHEADER, x.p, x.n);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "CHGHEADER decodes");
	is_int(r.index, 2, "CHGHEADER index");
	is_str(r.name, "Subject", "CHGHEADER name");
	is_str(r.value, "", "CHGHEADER empty value (delete)");
	mc_decoder_free(&d);

	mc_buf_reset(&b);
	packet(&b, SMFIR_ADDRCPT, "<new@x>\0", 8);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "ADDRCPT decodes");
	is_str(r.addr, "<new@x>", "ADDRCPT address");
	mc_decoder_free(&d);

	mc_buf_reset(&b);
	packet(&b, SMFIR_ADDRCPT_PAR, "<p@x>\0NOTIFY=NEVER\0", 19);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "ADDRCPT_PAR decodes");
	is_str(r.addr, "<p@x>", "ADDRCPT_PAR address");
	is_str(r.args, "NOTIFY=NEVER", "ADDRCPT_PAR args");
	mc_decoder_free(&d);

	mc_buf_reset(&b);
	packet(&b, SMFIR_ADDRCPT_PAR, "<p@x>\0", 6);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "ADDRCPT_PAR without args decodes");
	ok(r.args == NULL, "ADDRCPT_PAR: args absent");
	mc_decoder_free(&d);

	mc_buf_reset(&b);
	packet(&b, SMFIR_DELRCPT, "gone@x\0", 7);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "DELRCPT decodes");
	is_str(r.addr, "gone@x", "DELRCPT address");
	mc_decoder_free(&d);

	mc_buf_reset(&b);
	packet(&b, SMFIR_CHGFROM, "<f@x>\0SIZE=1\0", 13);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "CHGFROM decodes");
	is_str(r.addr, "<f@x>", "CHGFROM address");
	is_str(r.args, "SIZE=1", "CHGFROM args");
	mc_decoder_free(&d);

	mc_buf_reset(&b);
	packet(&b, SMFIR_REPLBODY, "new\0body\r\n", 10);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "REPLBODY decodes");
	is_mem(r.data, r.len, "new\0body\r\n", 10, "REPLBODY data (NUL kept)");
	mc_decoder_free(&d);

	mc_buf_reset(&b);
	packet(&b, SMFIR_REPLBODY, NULL, 0);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "empty REPLBODY decodes");
	is_int(r.len, 0, "empty REPLBODY length");
	mc_decoder_free(&d);

	mc_buf_reset(&b);
	packet(&b, SMFIR_QUARANTINE, "virus\0", 6);
	is_int(decode_one(&d, &b, &r), MC_REPLY, "QUARANTINE decodes");
	is_str(r.text, "virus", "QUARANTINE reason");
	ok(!mc_reply_is_final(SMFIR_QUARANTINE), "QUARANTINE is not final");
	mc_decoder_free(&d);
	mc_buf_free(&b);

	is_str(mc_name(SMFIC_BODYEOB, 0), "SMFIC_BODYEOB", "command name");
	is_str(mc_name(SMFIR_REPLBODY, 1), "SMFIR_REPLBODY", "reply name");
	is_str(mc_name('~', 1), "unknown reply", "unknown reply name");
}

/* A stream with one of each reply, for the split tests. */
static void
all_replies(struct mc_buf *b)
{
	struct data x;

	memset(&x, 0, sizeof(x));
	d_u32(&x, 6);
	d_u32(&x, SMFI_CURR_ACTS);
	d_u32(&x, SMFIP_NOUNKNOWN);
	d_u32(&x, SMFIM_ENVRCPT);
	d_str(&x, "{rcpt_addr}");
	packet(b, SMFIC_OPTNEG, x.p, x.n);
	packet(b, SMFIR_CONTINUE, NULL, 0);
	packet(b, SMFIR_ADDHEADER, "X-A\0v\0", 6);
	memset(&x, 0, sizeof(x));
	d_u32(&x, 0);
	d_str(&x, "X-I");
	d_str(&x, "w");
	packet(b, SMFIR_INSHEADER, x.p, x.n);
	memset(&x, 0, sizeof(x));
	d_u32(&x, 1);
	d_str(&x, "Subject");
	d_str(&x, "new");
	packet(b, SMFIR_CHGHEADER, x.p, x.n);
	packet(b, SMFIR_ADDRCPT, "a@x\0", 4);
	packet(b, SMFIR_ADDRCPT_PAR, "b@x\0NOTIFY=NEVER\0", 17);
	packet(b, SMFIR_DELRCPT, "c@x\0", 4);
	packet(b, SMFIR_CHGFROM, "d@x\0", 4);
	packet(b, SMFIR_REPLBODY, "body\r\n", 6);
	packet(b, SMFIR_QUARANTINE, "why\0", 4);
	packet(b, SMFIR_PROGRESS, NULL, 0);
	packet(b, SMFIR_REPLYCODE, "451 4.7.1 later\0", 16);
	packet(b, SMFIR_ACCEPT, NULL, 0);
	packet(b, SMFIR_SKIP, NULL, 0);
}

/* Decode everything available into one summary string. */
static void
drain(struct mc_decoder *d, char *out, size_t outlen, int *rc)
{
	struct mc_reply r;
	char one[512];
	size_t o = strlen(out);

	while ((*rc = mc_decoder_next(d, &r)) == MC_REPLY) {
		summary(&r, one, sizeof(one));
		o += (size_t)snprintf(out + o, outlen - o, "%s\n", one);
	}
}

static void
test_splits(void)
{
	struct mc_buf b = { 0 };
	struct mc_decoder d;
	char whole[8192] = "", got[8192];
	int rc, bad = 0;

	all_replies(&b);
	mc_decoder_init(&d, 0);
	feed(&d, b.p, b.len);
	drain(&d, whole, sizeof(whole), &rc);
	is_int(rc, MC_NEED_MORE, "the whole stream decodes");
	is_int(mc_decoder_pending(&d), 0, "nothing left over");
	mc_decoder_free(&d);

	for (size_t cut = 0; cut <= b.len; cut++) {
		got[0] = '\0';
		mc_decoder_init(&d, 0);
		feed(&d, b.p, cut);
		drain(&d, got, sizeof(got), &rc);
		feed(&d, b.p + cut, b.len - cut);
		drain(&d, got, sizeof(got), &rc);
		if (strcmp(got, whole) != 0 || rc != MC_NEED_MORE) {
			if (!bad++)
				diag("split at %zu differs", cut);
		}
		mc_decoder_free(&d);
	}
	is_int(bad, 0, "every two-piece split decodes the same");

	got[0] = '\0';
	mc_decoder_init(&d, 0);
	for (size_t i = 0; i < b.len; i++) {
		feed(&d, b.p + i, 1);
		drain(&d, got, sizeof(got), &rc);
	}
	is_str(got, whole, "byte by byte decodes the same");
	is_int(rc, MC_NEED_MORE, "byte by byte: no error");
	mc_decoder_free(&d);
	mc_buf_free(&b);
}

/* One malformed packet: an error, a message, and it stays. */
static void
bad(const void *bytes, size_t n, const char *why, const char *name)
{
	struct mc_decoder d;
	struct mc_reply r;
	char label[160];

	mc_decoder_init(&d, 0);
	feed(&d, bytes, n);
	snprintf(label, sizeof(label), "%s: error", name);
	is_int(mc_decoder_next(&d, &r), MC_ERROR, label);
	snprintf(label, sizeof(label), "%s: says why", name);
	if (!ok(strstr(mc_decoder_error(&d), why) != NULL, label))
		diag("error: %s", mc_decoder_error(&d));
	snprintf(label, sizeof(label), "%s: sticky", name);
	ok(mc_decoder_next(&d, &r) == MC_ERROR && feed(&d, "\0\0\0\1c", 5) == MC_ERROR, label);
	mc_decoder_free(&d);
}

static void
test_malformed(void)
{
	struct mc_decoder d;
	struct mc_reply r;

	bad("\0\0\0\0c", 5, "length 0", "length 0");
	bad("\0\x10\0\x01" "c", 5, "limit", "length over 1 MiB");
	bad("\xff\xff\xff\xff", 4, "limit", "length 4 GiB (header only)");
	bad("\0\0\0\x01Z", 5, "unknown reply command 'Z'", "unknown command");
	bad("\0\0\0\x01\x01", 5, "unknown reply command 0x01", "unknown control command");
	bad("\0\0\0\x02" "cX", 6, "unexpected data", "CONTINUE with data");
	bad("\0\0\0\x04yabc", 8, "without NUL", "REPLYCODE without NUL");
	bad("\0\0\0\x01y", 5, "without NUL", "REPLYCODE without data");
	bad("\0\0\0\x05hX-A\0", 9, "without NUL", "ADDHEADER without value");
	bad("\0\0\0\x04h\0v\0", 8, "empty header name", "ADDHEADER empty name");
	bad("\0\0\0\x03i\0\0", 7, "no header index", "INSHEADER short index");
	bad("\0\0\0\x0am\0\0\0\x01N\0v\0x", 14, "unexpected data", "CHGHEADER trailing octet");
	bad("\0\0\0\x04+a@x", 8, "without NUL", "ADDRCPT without NUL");
	bad("\0\0\0\x06" "2a@\0xy", 10, "arguments without NUL", "ADDRCPT_PAR args without NUL");
	bad("\0\0\0\x03-\0\0", 7, "unexpected data", "DELRCPT two strings");
	bad("\0\0\0\x04" "e\0ab", 8, "arguments without NUL", "CHGFROM args without NUL");
	bad("\0\0\0\x09O\0\0\0\x06\0\0\0\0", 13, "shorter than 12", "OPTNEG short");
	bad("\0\0\0\x0fO\0\0\0\x06\0\0\0\0\0\0\0\0\0\0", 19, "truncated macro stage",
	    "OPTNEG truncated stage");
	bad("\0\0\0\x12O\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\0j", 22, "macro list without NUL",
	    "OPTNEG list without NUL");

	/* A packet right at the limit is fine; one octet more is not. */
	mc_decoder_init(&d, 16);
	feed(&d, "\0\0\0\x10" "b0123456789abcde", 20);
	is_int(mc_decoder_next(&d, &r), MC_REPLY, "packet at a 16-octet limit");
	is_int(r.len, 15, "its body chunk");
	feed(&d, "\0\0\0\x11", 4);
	is_int(mc_decoder_next(&d, &r), MC_ERROR, "packet over a 16-octet limit");
	mc_decoder_free(&d);

	/* An incomplete packet is no error: it waits. */
	mc_decoder_init(&d, 0);
	feed(&d, "\0\0\0\x05hX-A", 8);
	is_int(mc_decoder_next(&d, &r), MC_NEED_MORE, "incomplete packet waits");
	is_int(mc_decoder_pending(&d), 8, "its octets are held");
	feed(&d, "\0", 1);
	is_int(mc_decoder_next(&d, &r), MC_ERROR, "completed without a value: error");
	mc_decoder_free(&d);

	/* An empty decoder. */
	mc_decoder_init(&d, 0);
	is_int(mc_decoder_next(&d, &r), MC_NEED_MORE, "empty decoder needs more");
	is_str(mc_decoder_error(&d), "", "no error");
	mc_decoder_free(&d);
}

/* A big REPLBODY near the default limit, fed in 64 KiB reads. */
static void
test_big(void)
{
	struct mc_buf b = { 0 };
	struct mc_decoder d;
	struct mc_reply r;
	size_t n = MC_MAX_PACKET - 1, off = 0;
	unsigned char *body = malloc(n);
	int rc = MC_NEED_MORE;

	memset(body, 'z', n);
	packet(&b, SMFIR_REPLBODY, body, n);
	mc_decoder_init(&d, 0);
	while (off < b.len && rc == MC_NEED_MORE) {
		size_t k = b.len - off < 65536 ? b.len - off : 65536;

		feed(&d, b.p + off, k);
		off += k;
		rc = mc_decoder_next(&d, &r);
	}
	is_int(rc, MC_REPLY, "1 MiB packet decodes");
	ok(r.len == n && r.data[0] == 'z' && r.data[n - 1] == 'z', "1 MiB body intact");
	mc_decoder_free(&d);
	mc_buf_free(&b);
	free(body);
}

int
main(void)
{
	test_commands();
	test_replies();
	test_splits();
	test_malformed();
	test_big();
	return done_testing();
}
