/*
 * test_backend.c - unit tests for backend.c, driven in-process on a libuv
 * loop against a scripted peer: a listener on 127.0.0.1 in the same loop
 * that greets, answers each command line it reads with the script's next
 * reply, stays silent, or closes.  The backend's events are recorded and
 * checked: the greeting, replies matched to their pending commands (also
 * pipelined, and multi-line replies that arrive in pieces), a lost
 * connection, a timeout, an unreachable backend; and that the backend
 * reports closed exactly once after backend_release.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "backend.h"
#include "config.h"
#include "log.h"
#include "smtp.h"
#include "tap.h"

#define SILENT	""		/* a script step: read the line, answer nothing */
#define CLOSE	"\001close"	/* a script step: close the connection */
#define SPLIT	'|'		/* in a reply: write up to here, the rest a moment later */
#define MAX_EVENTS 8

static uv_loop_t *loop;

/* The scripted peer: the backend's side of the wire. */
static struct peer {
	uv_tcp_t	 server;
	uv_tcp_t	 conn;
	uv_timer_t	 later;		/* the second half of a SPLIT reply */
	bool		 accepted;
	const char	*greeting;
	const char	*const *script;	/* one step per command line read */
	size_t		 nsteps, step;
	char		 line[1024];
	size_t		 len;
	char		 lines[1024];	/* every line read, for the checks */
	const char	*rest;		/* the part after SPLIT, still to write */
	int		 port;
} peer;

/* What the backend reported. */
static struct record {
	int		 greetings;
	char		 greeting[512];
	int		 nreplies;
	struct pending	 p[MAX_EVENTS];
	int		 code[MAX_EVENTS];
	char		 text[MAX_EVENTS][512];
	int		 lost;
	enum backend_loss why;
	int		 closed;
	int		 progress;
} rec;

static void
on_greeting(void *owner, const char *r, size_t n)
{
	rec.greetings++;
	snprintf(rec.greeting, sizeof(rec.greeting), "%.*s", (int)n, r);
}

static void
on_reply(void *owner, struct pending p, const char *r, size_t n, int code)
{
	if (rec.nreplies < MAX_EVENTS) {
		rec.p[rec.nreplies] = p;
		rec.code[rec.nreplies] = code;
		snprintf(rec.text[rec.nreplies], sizeof(rec.text[0]), "%.*s", (int)n, r);
	}
	rec.nreplies++;
}

static void
on_lost(void *owner, enum backend_loss why, const char *r, size_t n)
{
	rec.lost++;
	rec.why = why;
}

static void on_progress(void *owner) { rec.progress++; }
static void on_name_known(void *owner) { }
static void on_closed(void *owner) { rec.closed++; }
static void on_transcript(void *owner, const char *dir, const char *p, size_t n) { }

static const struct backend_events events = {
	.greeting = on_greeting, .reply = on_reply, .lost = on_lost, .progress = on_progress,
	.name_known = on_name_known, .closed = on_closed, .transcript = on_transcript,
};

static void
peer_written(uv_write_t *req, int status)
{
	free(req);
}

/* Write p (a literal of the script: it outlives the write). */
static void
peer_write(const char *p, size_t n)
{
	uv_write_t *req = xmalloc(sizeof(*req));
	uv_buf_t buf = uv_buf_init((char *)p, (unsigned)n);

	if (uv_write(req, (uv_stream_t *)&peer.conn, &buf, 1, peer_written) != 0)
		free(req);
}

static void
peer_later(uv_timer_t *t)
{
	peer_write(peer.rest, strlen(peer.rest));
	peer.rest = NULL;
}

/* Send a reply; one with SPLIT goes in two writes, so it arrives in two reads. */
static void
peer_send(const char *r)
{
	const char *split = strchr(r, SPLIT);

	if (split == NULL) {
		peer_write(r, strlen(r));
		return;
	}
	peer_write(r, (size_t)(split - r));
	peer.rest = split + 1;
	uv_timer_start(&peer.later, peer_later, 50, 0);
}

static void
peer_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	*buf = uv_buf_init(peer.line + peer.len, (unsigned)(sizeof(peer.line) - peer.len));
}

/* Each whole line read takes the next step of the script. */
static void
peer_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	char *nl;

	if (nread < 0) {
		if (!uv_is_closing((uv_handle_t *)&peer.conn))
			uv_close((uv_handle_t *)&peer.conn, NULL);
		return;
	}
	peer.len += (size_t)nread;
	while ((nl = memchr(peer.line, '\n', peer.len)) != NULL) {
		size_t n = (size_t)(nl - peer.line) + 1;
		const char *step = peer.step < peer.nsteps ? peer.script[peer.step] : SILENT;

		size_t have = strlen(peer.lines);

		if (have + n < sizeof(peer.lines)) {
			memcpy(peer.lines + have, peer.line, n);
			peer.lines[have + n] = '\0';
		}
		memmove(peer.line, peer.line + n, peer.len - n);
		peer.len -= n;
		peer.step++;
		if (strcmp(step, CLOSE) == 0) {
			uv_close((uv_handle_t *)&peer.conn, NULL);
			return;
		}
		if (step[0] != '\0')
			peer_send(step);
	}
}

static void
peer_accept(uv_stream_t *server, int status)
{
	if (status != 0 || peer.accepted)
		return;
	uv_tcp_init(loop, &peer.conn);
	if (uv_accept(server, (uv_stream_t *)&peer.conn) != 0)
		return;
	peer.accepted = true;
	if (peer.greeting)
		peer_send(peer.greeting);
	uv_read_start((uv_stream_t *)&peer.conn, peer_alloc, peer_read);
}

/* A peer on a free port of 127.0.0.1 with this greeting and script. */
static void
peer_start(const char *greeting, const char *const *script, size_t nsteps)
{
	struct sockaddr_in sin;
	int len = sizeof(sin);

	memset(&peer, 0, sizeof(peer));
	peer.greeting = greeting;
	peer.script = script;
	peer.nsteps = nsteps;
	uv_tcp_init(loop, &peer.server);
	uv_timer_init(loop, &peer.later);
	uv_ip4_addr("127.0.0.1", 0, &sin);
	if (uv_tcp_bind(&peer.server, (const struct sockaddr *)&sin, 0) != 0 ||
	    uv_listen((uv_stream_t *)&peer.server, 4, peer_accept) != 0 ||
	    uv_tcp_getsockname(&peer.server, (struct sockaddr *)&sin, &len) != 0) {
		printf("Bail out! cannot listen on 127.0.0.1\n");
		exit(2);
	}
	peer.port = ntohs(sin.sin_port);
}

static void
peer_stop(void)
{
	uv_close((uv_handle_t *)&peer.server, NULL);
	uv_close((uv_handle_t *)&peer.later, NULL);
	if (peer.accepted && !uv_is_closing((uv_handle_t *)&peer.conn))
		uv_close((uv_handle_t *)&peer.conn, NULL);
}

/* A config with one backend on port, no XCLIENT or XFORWARD, timeout.backend secs. */
static struct config *
make_config(int port, unsigned timeout)
{
	char path[] = "/tmp/test_backend.XXXXXX", text[512], err[512];
	struct config *cfg;
	int fd = mkstemp(path);

	snprintf(text, sizeof(text), "listen = \"127.0.0.1:1\"\nbackend = \"127.0.0.1:%d\"\n"
	    "hostname = \"proxy.test\"\nxclient = false\nxforward = false\n"
	    "timeout { backend = %u\nconnect = %u }\n", port, timeout, timeout);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		printf("Bail out! cannot write %s\n", path);
		exit(2);
	}
	close(fd);
	cfg = config_load(path, err, sizeof(err));
	unlink(path);
	if (cfg == NULL) {
		printf("Bail out! config: %s\n", err);
		exit(2);
	}
	return cfg;
}

/* Run the loop until *cond, or until nothing is left to wait for (bounded). */
static void
run_until(const int *cond, int want)
{
	for (int i = 0; i < 100000 && *cond < want; i++)
		if (uv_run(loop, UV_RUN_ONCE) == 0)
			break;
}

static struct config *cfg;
static struct backend be;

/* A backend connected to a fresh peer (or to port, when port > 0). */
static void
start(const char *greeting, const char *const *script, size_t nsteps, unsigned timeout, int port)
{
	struct sockaddr_storage ss;

	memset(&rec, 0, sizeof(rec));
	peer_start(greeting, script, nsteps);
	cfg = make_config(port > 0 ? port : peer.port, timeout);
	memset(&ss, 0, sizeof(ss));
	uv_ip4_addr("192.0.2.1", 4321, (struct sockaddr_in *)&ss);
	backend_init(&be, cfg, loop, "TEST", &events, NULL);
	backend_connect(&be, &ss, "192.0.2.1", 4321);
}

/* Release the backend, wait for its closed event, free everything. */
static void
finish(const char *name)
{
	char what[128];

	backend_abort(&be);
	backend_release(&be);
	run_until(&rec.closed, 1);
	snprintf(what, sizeof(what), "%s: closed reported once after release", name);
	is_int(rec.closed, 1, what);
	backend_free(&be);
	peer_stop();
	uv_run(loop, UV_RUN_NOWAIT);
	config_free(cfg);
}

static void
test_greeting_and_replies(void)
{
	static const char *const script[] = {
		"250 2.1.0 Ok\r\n",
		"250 2.1.5 Ok\r\n",
		"250-proxy.test\r\n250-PIPE|LINING\r\n250 8BITMIME\r\n",
	};

	start("220 peer.test ESMTP\r\n", script, 3, 30, 0);
	run_until(&rec.greetings, 1);
	is_int(rec.greetings, 1, "greeting: reported once");
	is_str(rec.greeting, "220 peer.test ESMTP\r\n", "greeting: the peer's, as it is");
	ok(be.up && be.chosen, "greeting: the backend is up and chosen");
	is_int(be.pcount, 0, "greeting: nothing pending after it");

	/* Two commands pipelined: each reply to its own command, in order. */
	backend_send(&be, "MAIL FROM:<a@x>\r\n", 17, BS_COMMAND, SMTP_MAIL);
	backend_send(&be, "RCPT TO:<b@y>\r\n", 15, BS_COMMAND, SMTP_RCPT);
	is_int(be.pcount, 2, "pipelined: two pending");
	backend_flush(&be);
	run_until(&rec.nreplies, 2);
	is_int(rec.nreplies, 2, "pipelined: two replies");
	is_int(rec.p[0].verb, SMTP_MAIL, "pipelined: the first answers MAIL");
	is_int(rec.p[1].verb, SMTP_RCPT, "pipelined: the second answers RCPT");
	is_int(rec.p[0].step, BS_COMMAND, "pipelined: a client command's step");
	is_int(rec.code[0], 250, "pipelined: MAIL's code");
	is_str(rec.text[1], "250 2.1.5 Ok\r\n", "pipelined: RCPT's text");
	is_str(peer.lines, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n", "pipelined: the peer read both");

	/* A multi-line reply arriving in two reads: one event, every line. */
	backend_send(&be, "EHLO client.test\r\n", 18, BS_COMMAND, SMTP_EHLO);
	backend_flush(&be);
	run_until(&rec.nreplies, 3);
	is_int(rec.nreplies, 3, "multi-line: one reply for three lines");
	is_int(rec.p[2].verb, SMTP_EHLO, "multi-line: answers EHLO");
	is_int(rec.code[2], 250, "multi-line: code");
	is_str(rec.text[2], "250-proxy.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
	    "multi-line: the whole reply, put together");
	is_int(rec.lost, 0, "no loss reported");
	ok(rec.progress > 0, "progress reported after reads");
	finish("replies");
}

static void
test_lost(void)
{
	static const char *const script[] = { CLOSE };

	start("220 peer.test ESMTP\r\n", script, 1, 30, 0);
	run_until(&rec.greetings, 1);
	backend_send(&be, "MAIL FROM:<a@x>\r\n", 17, BS_COMMAND, SMTP_MAIL);
	backend_flush(&be);
	run_until(&rec.lost, 1);
	is_int(rec.lost, 1, "lost: reported once when the peer closes");
	is_int(rec.why, BACKEND_LOST, "lost: as BACKEND_LOST");
	is_int(rec.nreplies, 0, "lost: no reply made up");
	ok(!be.up && be.conn.closed, "lost: the backend closed its connection");
	finish("lost");
}

static void
test_timeout(void)
{
	static const char *const script[] = { SILENT };

	start("220 peer.test ESMTP\r\n", script, 1, 1, 0);
	run_until(&rec.greetings, 1);
	backend_send(&be, "MAIL FROM:<a@x>\r\n", 17, BS_COMMAND, SMTP_MAIL);
	backend_flush(&be);
	run_until(&rec.lost, 1);
	is_int(rec.lost, 1, "timeout: reported once when no reply comes");
	is_int(rec.why, BACKEND_TIMEOUT, "timeout: as BACKEND_TIMEOUT");
	is_int(rec.nreplies, 0, "timeout: no reply made up");
	finish("timeout");
}

static void
test_reply_to_nothing(void)
{
	start("220 peer.test ESMTP\r\n421 4.4.2 peer.test Error: timeout exceeded\r\n",
	    NULL, 0, 30, 0);
	run_until(&rec.lost, 1);
	is_int(rec.greetings, 1, "unsolicited 421: the greeting first");
	is_int(rec.lost, 1, "unsolicited 421: reported");
	is_int(rec.why, BACKEND_SAID_421, "unsolicited 421: as BACKEND_SAID_421");
	finish("421");
}

static void
test_unreachable(void)
{
	uv_tcp_t probe;
	struct sockaddr_in sin;
	int len = sizeof(sin), port;

	/* A port nothing listens on: bound, never listened to, then closed. */
	uv_tcp_init(loop, &probe);
	uv_ip4_addr("127.0.0.1", 0, &sin);
	uv_tcp_bind(&probe, (const struct sockaddr *)&sin, 0);
	uv_tcp_getsockname(&probe, (struct sockaddr *)&sin, &len);
	port = ntohs(sin.sin_port);
	uv_close((uv_handle_t *)&probe, NULL);
	uv_run(loop, UV_RUN_NOWAIT);

	start(NULL, NULL, 0, 30, port);
	run_until(&rec.lost, 1);
	is_int(rec.lost, 1, "unreachable: reported");
	is_int(rec.why, BACKEND_UNREACHABLE, "unreachable: as BACKEND_UNREACHABLE");
	is_int(rec.greetings, 0, "unreachable: no greeting");
	finish("unreachable");
}

/* Count the TCP and timer handles still open (iobuf.c's phase handles stay). */
static void
count_open(uv_handle_t *h, void *arg)
{
	if ((h->type == UV_TCP || h->type == UV_TIMER) && !uv_is_closing(h))
		(*(int *)arg)++;
}

int
main(void)
{
	int left = 0;

	log_init("test_backend", LOG_LVL_ERROR, 0);
	loop = uv_default_loop();
	test_greeting_and_replies();
	test_lost();
	test_timeout();
	test_reply_to_nothing();
	test_unreachable();
	uv_walk(loop, count_open, &left);
	is_int(left, 0, "no TCP or timer handle left open");
	return done_testing();
}
