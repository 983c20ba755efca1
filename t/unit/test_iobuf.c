/*
 * test_iobuf.c - unit tests for iobuf.c's output queue on a real libuv
 * loop and a socket pair: a batch flushed from an I/O callback is written
 * at once and its done callback runs in the same loop iteration; a batch
 * flushed from a timer goes through a write request, and its done callback
 * never waits for another event (the loop must not go to sleep in poll
 * while a done callback is owed: a lost wake-up stalls a session until
 * some timeout).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "iobuf.h"
#include "tap.h"

static uv_loop_t loop;
static uv_pipe_t writer;
static struct outq q;
static uv_timer_t kick, guard;
static uv_prepare_t watch;
static char got[256];
static size_t gotlen;
static int done_calls, owed, lost_wakeup, guard_fired;
static int sync_path;		/* outq_flush wrote it all before returning */

static void
on_done(struct outq *oq, int status)
{
	(void)oq;
	if (status == 0)
		done_calls++;
	owed = 0;
	uv_stop(&loop);
}

/* Before each poll: is the loop about to sleep while a done callback is owed? */
static void
on_prepare(uv_prepare_t *h)
{
	(void)h;
	if (owed && uv_backend_timeout(&loop) != 0)
		lost_wakeup = 1;
}

static void
flush(const char *text)
{
	outq_append(&q, text, strlen(text));
	owed = 1;
	if (outq_flush(&q) != 0)
		owed = 0;
	sync_path = !q.writing && outq_pending(&q) == 0;
}

static void
on_kick(uv_timer_t *t)
{
	(void)t;
	flush("from a timer\r\n");
}

static void
on_guard(uv_timer_t *t)
{
	(void)t;
	guard_fired = 1;
	uv_stop(&loop);
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	static char b[256];

	(void)h;
	(void)hint;
	*buf = uv_buf_init(b, sizeof(b));
}

/*
 * The peer's side: read outside the loop, as another process would (a
 * peer in this loop would wake its poll with every write and hide a lost
 * wake-up).
 */
static void
peer_read(int fd)
{
	ssize_t n;

	gotlen = 0;
	while ((n = recv(fd, got + gotlen, sizeof(got) - 1 - gotlen, MSG_DONTWAIT)) > 0)
		gotlen += (size_t)n;
}

/* The writer side: "ping" makes it answer from this I/O callback. */
static void
on_ping(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	(void)s;
	if (n == 6 && memcmp(buf->base, "ping\r\n", 6) == 0)
		flush("pong\r\n");
}

/* Run until the done callback (or the guard: a hang) stops the loop. */
static void
run(void)
{
	uv_timer_start(&guard, on_guard, 30000, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_timer_stop(&guard);
	uv_run(&loop, UV_RUN_NOWAIT);	/* anything still in flight */
}

int
main(void)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		perror("socketpair");
		return 1;
	}
	uv_loop_init(&loop);
	uv_pipe_init(&loop, &writer, 0);
	uv_pipe_open(&writer, sv[0]);
	uv_timer_init(&loop, &kick);
	uv_timer_init(&loop, &guard);
	uv_prepare_init(&loop, &watch);
	uv_prepare_start(&watch, on_prepare);
	outq_init(&q, (uv_stream_t *)&writer, on_done, NULL);
	/* The writer reads too, so that "ping" from the reader side is an I/O callback. */
	uv_read_start((uv_stream_t *)&writer, on_alloc, on_ping);

	/* 1. From an I/O callback: written at once, done from the same iteration's check phase. */
	if (write(sv[1], "ping\r\n", 6) != 6)
		perror("write");
	run();
	peer_read(sv[1]);
	ok(!guard_fired, "I/O callback: the done callback ran (no hang)");
	is_int(done_calls, 1, "I/O callback: one done callback, status 0");
	ok(!lost_wakeup, "I/O callback: no sleep while it was owed");
	ok(sync_path, "I/O callback: written before outq_flush returned (no write request)");
	ok(gotlen == 6 && memcmp(got, "pong\r\n", 6) == 0, "I/O callback: the bytes arrived as sent");

	/*
	 * 2. From a timer (outside the poll phase), once the loop has run:
	 * uv_backend_timeout() is 0 while descriptors wait to be registered
	 * with epoll, as in the first iteration, which would hide a lost
	 * wake-up from on_prepare().
	 */
	done_calls = lost_wakeup = 0;
	uv_timer_start(&kick, on_kick, 0, 0);
	run();
	peer_read(sv[1]);
	ok(!guard_fired, "timer: the done callback ran (no hang)");
	is_int(done_calls, 1, "timer: one done callback, status 0");
	ok(!lost_wakeup, "timer: the loop never went to sleep while the done callback was owed");
	ok(!sync_path, "timer: written through a write request");
	is_int(gotlen, strlen("from a timer\r\n"), "timer: the bytes arrived");
	ok(memcmp(got, "from a timer\r\n", gotlen) == 0, "timer: as sent");

	outq_free(&q);
	uv_close((uv_handle_t *)&writer, NULL);
	uv_close((uv_handle_t *)&kick, NULL);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_close((uv_handle_t *)&watch, NULL);
	return done_testing();
}
