/*
 * test_session.c - unit tests for command.c and session.c (and backend.c below), in
 * the test's own process: a server on the test's loop, a client socket and
 * a scripted backend (proxytest.h), sessions started by the real listener.
 *
 * Checked: the backend's greeting relayed; the EHLO reply rewritten
 * (ehlo.remove, ehlo.add, the proxy's own SIZE); MAIL, RCPT and DATA
 * relayed byte for byte, with the client's 250 for the message only after
 * the backend's; a pipelined group relayed as one, its replies in order;
 * a backend lost in the middle of a transaction gives the
 * client 421 and the session ends; a bare LF in DATA ends the session with
 * 521 and the backend never sees the end of data.
 */
#include <stdio.h>
#include <string.h>

#include "proxytest.h"
#include "tap.h"

#define CONFIG	"xclient = false;\nxforward = false;\n" \
		"ehlo { remove = [ \"XYZZY\" ]; add = [ \"FOOBAR 1\" ]; size = 1000000; }\n"

#define BACKEND_EHLO	"250-backend.test\r\n250-PIPELINING\r\n250-XYZZY\r\n" \
			"250-SIZE 5000000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"

/* A client and a backend that have greeted each other through the proxy. */
static void
open_session(struct proxytest *t, struct peer *c, struct peer *b)
{
	const char *r;

	proxytest_connect(t, c);
	proxytest_accept(t, b);
	peer_send(b, "220 backend.test ESMTP scripted\r\n");
	r = peer_reply(t, c);
	is_str(r, "220 backend.test ESMTP scripted\r\n", "the backend's greeting is relayed as it is");
}

/* EHLO through the proxy: relayed, and the reply rewritten. */
static void
ehlo(struct proxytest *t, struct peer *c, struct peer *b)
{
	const char *r;

	peer_send(c, "EHLO client.test\r\n");
	r = peer_line(t, b);
	is_str(r, "EHLO client.test\r\n", "EHLO is relayed as it is");
	peer_send(b, BACKEND_EHLO);
	r = peer_reply(t, c);
	is_str(r, "250-backend.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n"
	    "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 FOOBAR 1\r\n",
	    "the EHLO reply: XYZZY removed (ehlo.remove), the proxy's SIZE (ehlo.size), "
	    "FOOBAR 1 added last (ehlo.add)");
}

/* MAIL and RCPT through the proxy, each answered 250 by the backend. */
static void
envelope(struct proxytest *t, struct peer *c, struct peer *b, const char *mail,
    const char *rcpt)
{
	char line[512];

	snprintf(line, sizeof(line), "%s\r\n", mail);
	peer_send(c, line);
	is_str(peer_line(t, b), line, "MAIL is relayed byte for byte");
	peer_send(b, "250 2.1.0 Ok\r\n");
	is_str(peer_reply(t, c), "250 2.1.0 Ok\r\n", "the backend's 250 to MAIL is relayed");
	snprintf(line, sizeof(line), "%s\r\n", rcpt);
	peer_send(c, line);
	is_str(peer_line(t, b), line, "RCPT is relayed byte for byte");
	peer_send(b, "250 2.1.5 Ok\r\n");
	is_str(peer_reply(t, c), "250 2.1.5 Ok\r\n", "the backend's 250 to RCPT is relayed");
}

static void
test_relay(void)
{
	struct proxytest t;
	struct peer c, b;
	const char *r;
	const char *msg = "Subject: test\r\nFrom: <a@client.test>\r\n\r\nline 1\r\n..dot\r\n"
	    "\t tab and trailing space \r\n";

	if (proxytest_start(&t, CONFIG, NULL, 0) != 0) {
		ok(0, "the proxy starts");
		return;
	}
	open_session(&t, &c, &b);
	ehlo(&t, &c, &b);
	envelope(&t, &c, &b, "MAIL FROM:<a@client.test> SIZE=100 BODY=8BITMIME",
	    "RCPT TO:<x@backend.test>");
	peer_send(&c, "DATA\r\n");
	is_str(peer_line(&t, &b), "DATA\r\n", "DATA is relayed");
	peer_send(&b, "354 End data with <CR><LF>.<CR><LF>\r\n");
	is_str(peer_reply(&t, &c), "354 End data with <CR><LF>.<CR><LF>\r\n", "354 is relayed");
	peer_send(&c, msg);
	peer_send(&c, ".\r\n");
	r = peer_until(&t, &b, "\r\n.\r\n");
	ok(r != NULL && strncmp(r, msg, strlen(msg)) == 0 && strcmp(r + strlen(msg), ".\r\n") == 0,
	    "the message and its end are relayed byte for byte (dots still stuffed)");
	ok(peer_quiet(&t, &c), "no reply to the message before the backend's");
	peer_send(&b, "250 2.0.0 Ok: queued as ABC\r\n");
	is_str(peer_reply(&t, &c), "250 2.0.0 Ok: queued as ABC\r\n",
	    "then the backend's 250 is relayed");

	peer_send(&c, "QUIT\r\n");
	is_str(peer_line(&t, &b), "QUIT\r\n", "QUIT is relayed");
	peer_send(&b, "221 2.0.0 Bye\r\n");
	is_str(peer_reply(&t, &c), "221 2.0.0 Bye\r\n", "221 is relayed");
	ok(peer_wait_eof(&t, &c), "the proxy closes the client's connection after 221");
	peer_close(&c);
	peer_close(&b);
	proxytest_stop(&t);
}

/* A pipelined group: relayed as one, each reply in order, a refusal passed on. */
static void
test_pipelining(void)
{
	struct proxytest t;
	struct peer c, b;
	const char *r;

	if (proxytest_start(&t, CONFIG, NULL, 0) != 0) {
		ok(0, "the proxy starts");
		return;
	}
	open_session(&t, &c, &b);
	ehlo(&t, &c, &b);
	peer_send(&c, "MAIL FROM:<a@client.test>\r\nRCPT TO:<x@backend.test>\r\n"
	    "RCPT TO:<nobody@backend.test>\r\nDATA\r\n");
	r = peer_until(&t, &b, "DATA\r\n");
	is_str(r, "MAIL FROM:<a@client.test>\r\nRCPT TO:<x@backend.test>\r\n"
	    "RCPT TO:<nobody@backend.test>\r\nDATA\r\n",
	    "a pipelined group reaches the backend as it was sent");
	ok(peer_quiet(&t, &c), "no reply before the backend's");
	peer_send(&b, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <nobody@backend.test>: "
	    "Recipient address rejected\r\n354 go ahead\r\n");
	r = peer_until(&t, &c, "354 go ahead\r\n");
	is_str(r, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <nobody@backend.test>: "
	    "Recipient address rejected\r\n354 go ahead\r\n",
	    "the replies, in order, the refusal as the backend gave it");
	peer_send(&c, "Subject: x\r\n\r\nx\r\n.\r\nQUIT\r\n");
	r = peer_until(&t, &b, "\r\n.\r\n");
	is_str(r, "Subject: x\r\n\r\nx\r\n.\r\n", "the message is relayed");
	peer_send(&b, "250 2.0.0 Ok: queued as DEF\r\n");
	is_str(peer_reply(&t, &c), "250 2.0.0 Ok: queued as DEF\r\n", "its 250 is relayed");
	is_str(peer_line(&t, &b), "QUIT\r\n", "then the QUIT sent after it");
	peer_send(&b, "221 2.0.0 Bye\r\n");
	is_str(peer_reply(&t, &c), "221 2.0.0 Bye\r\n", "and its 221");
	ok(peer_wait_eof(&t, &c), "the session ends");
	peer_close(&c);
	peer_close(&b);
	proxytest_stop(&t);
}

static void
test_backend_lost(void)
{
	struct proxytest t;
	struct peer c, b;
	const char *r;

	if (proxytest_start(&t, CONFIG, NULL, 0) != 0) {
		ok(0, "the proxy starts");
		return;
	}
	open_session(&t, &c, &b);
	ehlo(&t, &c, &b);
	peer_send(&c, "MAIL FROM:<a@client.test>\r\n");
	peer_line(&t, &b);
	peer_send(&b, "250 2.1.0 Ok\r\n");
	peer_reply(&t, &c);
	peer_send(&c, "RCPT TO:<x@backend.test>\r\n");
	is_str(peer_line(&t, &b), "RCPT TO:<x@backend.test>\r\n", "RCPT reaches the backend");
	peer_close(&b);		/* lost before it answers */
	r = peer_reply(&t, &c);
	ok(r != NULL && strncmp(r, "421 4.3.0 ", 10) == 0 &&
	    strstr(r, "lost connection to backend") != NULL,
	    "a backend lost inside a transaction: the client gets 421 4.3.0");
	ok(peer_wait_eof(&t, &c), "and the session ends");
	peer_close(&c);
	proxytest_stop(&t);
}

static void
test_bare_lf(void)
{
	struct proxytest t;
	struct peer c, b;
	const char *r;

	if (proxytest_start(&t, CONFIG, NULL, 0) != 0) {
		ok(0, "the proxy starts");
		return;
	}
	open_session(&t, &c, &b);
	ehlo(&t, &c, &b);
	envelope(&t, &c, &b, "MAIL FROM:<a@client.test>", "RCPT TO:<x@backend.test>");
	peer_send(&c, "DATA\r\n");
	peer_line(&t, &b);
	peer_send(&b, "354 go ahead\r\n");
	peer_reply(&t, &c);
	peer_send(&c, "Subject: smuggle\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\n.\r\n");
	r = peer_reply(&t, &c);
	ok(r != NULL && strncmp(r, "521 5.5.2 ", 10) == 0 && strstr(r, "bare <CR> or <LF>"),
	    "a bare LF in DATA: 521 5.5.2");
	ok(peer_wait_eof(&t, &c), "and the client's connection is closed");
	peer_wait_eof(&t, &b);
	ok(strstr(b.buf, "\r\n.\r\n") == NULL && strstr(b.buf, "MAIL FROM:<evil") == NULL,
	    "the backend never sees an end of data or the smuggled command");
	peer_close(&c);
	peer_close(&b);
	proxytest_stop(&t);
}

int
main(void)
{
	test_relay();
	test_pipelining();
	test_backend_lost();
	test_bare_lf();
	return done_testing();
}
