/*
 * proxytest.c - a worker's server in the unit test's own process; see
 * proxytest.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "connlimit.h"
#include "filter.h"
#include "log.h"
#include "module.h"
#include "proxytest.h"

#define AUTO_GREETING	"220 backend.test ESMTP\r\n"

static char out[PEER_BUF];	/* what peer_reply() and friends return */

static void
bail(const char *why)
{
	printf("Bail out! %s\n", why);
	fflush(stdout);
	exit(1);
}

static void
hang(uv_timer_t *h)
{
	(void)h;
	printf("# no progress for %d seconds\n", PROXYTEST_HANG_S);
	bail("the test hangs");
}

/* One iteration of the loop, waiting for an event if there is none. */
static void
step(struct proxytest *t)
{
	uv_timer_start(&t->hang, hang, PROXYTEST_HANG_S * 1000ULL, 0);
	uv_run(&t->loop, UV_RUN_ONCE);
}

void
proxytest_settle(struct proxytest *t)
{
	for (int i = 0; i < 16; i++)
		uv_run(&t->loop, UV_RUN_NOWAIT);
}

/* A socket of the test on 127.0.0.1, port 0: its fd and port. */
static int
test_listener(unsigned *port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd == -1 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(fd, 16) != 0 || getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
		bail("cannot listen on 127.0.0.1");
	*port = ntohs(sin.sin_port);
	return fd;
}

int
proxytest_start(struct proxytest *t, const char *extra,
    const struct sc_filter *const *filters, size_t nfilters)
{
	static bool once;
	char path[128], err[1024];
	unsigned bport;
	FILE *f;

	if (!once) {
		log_init("proxytest", LOG_LVL_WARNING, 0);
		if (connlimit_init(1000) != 0)
			bail("connlimit_init failed");
		once = true;
	}
	memset(t, 0, sizeof(*t));
	t->listen_fd = -1;
	snprintf(t->dir, sizeof(t->dir), "%s/proxytest.XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(t->dir) == NULL)
		bail("mkdtemp failed");
	snprintf(path, sizeof(path), "%s/spool", t->dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/quarantine", t->dir);
	mkdir(path, 0700);
	t->backend_lfd = test_listener(&bport);

	snprintf(path, sizeof(path), "%s/smtpchain.conf", t->dir);
	if ((f = fopen(path, "w")) == NULL)
		bail("cannot write the config");
	fprintf(f, "listen = \"127.0.0.1:1\";\nbackend = \"127.0.0.1:%u\";\n"
	    "hostname = \"proxy.test\";\nspool_dir = \"%s/spool\";\n"
	    "quarantine_dir = \"%s/quarantine\";\n%s", bport, t->dir, t->dir,
	    extra ? extra : "");
	fclose(f);
	if ((t->cfg = config_load(path, err, sizeof(err))) == NULL) {
		printf("# config: %s\n", err);
		return -1;
	}

	/* The proxy's listener on a port of the kernel's choosing. */
	((struct sockaddr_in *)&t->cfg->listen[0].ss)->sin_port = 0;
	if ((t->listen_fd = listener_bind(&t->cfg->listen[0], err, sizeof(err))) == -1) {
		printf("# listener_bind: %s\n", err);
		return -1;
	}
	{
		socklen_t len = sizeof(t->cfg->listen[0].ss);

		getsockname(t->listen_fd, (struct sockaddr *)&t->cfg->listen[0].ss, &len);
	}

	uv_loop_init(&t->loop);
	uv_timer_init(&t->loop, &t->hang);
	t->srv.loop = &t->loop;
	t->srv.cfg = t->cfg;
	t->srv.listen_fds = &t->listen_fd;
	filter_set_loop(&t->loop);
	if (nfilters > 0) {
		struct filter_chain *ch = &t->srv.chain;

		ch->v = xcalloc(nfilters, sizeof(*ch->v));
		for (size_t i = 0; i < nfilters; i++) {
			struct filter_module *m = &ch->v[i];

			m->name = xstrdup(filters[i]->name);
			m->path = xstrdup("(test)");
			m->desc = filters[i];
			m->needs = filters[i]->needs ? filters[i]->needs :
			    SC_NEED_HEADERS | SC_NEED_BODY;
			ch->needs |= m->needs;
			if (filters[i]->header || filters[i]->eoh || filters[i]->body ||
			    filters[i]->eom)
				ch->holds_message = true;
			ch->n++;
		}
	}
	if (listener_start(&t->srv) != 0)
		return -1;
	return 0;
}

static void
close_any(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

/* Answer the complete lines the automatic backend has read. */
static void
auto_answer(struct auto_conn *a)
{
	static const char *const ok[] = { "MAIL", "RCPT", "RSET", "NOOP", "HELO" };
	char *nl;

	while ((nl = memchr(a->in, '\n', a->len)) != NULL) {
		size_t n = (size_t)(nl - a->in) + 1;
		const char *r = NULL;

		if (a->in_data) {
			if (n == 3 && memcmp(a->in, ".\r\n", 3) == 0) {
				a->in_data = false;
				a->t->messages++;
				r = "250 2.0.0 Ok: queued\r\n";
			}
		} else if (strncasecmp(a->in, "EHLO", 4) == 0) {
			r = "250-backend.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
			    "250 SIZE 10000000\r\n";
		} else if (strncasecmp(a->in, "DATA", 4) == 0) {
			a->in_data = true;
			r = "354 go ahead\r\n";
		} else if (strncasecmp(a->in, "QUIT", 4) == 0) {
			r = "221 2.0.0 Bye\r\n";
		} else {
			r = "502 5.5.2 Error: command not recognized\r\n";
			for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
				if (strncasecmp(a->in, ok[i], 4) == 0)
					r = "250 2.0.0 Ok\r\n";
		}
		memmove(a->in, a->in + n, a->len - n);
		a->len -= n;
		if (r != NULL && write(a->fd, r, strlen(r)) != (ssize_t)strlen(r))
			bail("the automatic backend cannot write");
	}
}

static void
auto_readable(uv_poll_t *h, int status, int events)
{
	struct auto_conn *a = h->data;
	struct proxytest *t = a->t;
	ssize_t n;

	(void)events;
	if (a->len + 1 >= sizeof(a->in))
		bail("the automatic backend got a line too long");
	n = status < 0 ? -1 : read(a->fd, a->in + a->len, sizeof(a->in) - a->len);
	if (n <= 0) {
		uv_poll_stop(h);
		uv_close((uv_handle_t *)h, NULL);
		close(a->fd);
		a->fd = -1;
		return;
	}
	if (t->nheard + (size_t)n >= sizeof(t->heard))
		bail("the automatic backend heard too much");
	memcpy(t->heard + t->nheard, a->in + a->len, (size_t)n);
	t->nheard += (size_t)n;
	t->heard[t->nheard] = '\0';
	a->len += (size_t)n;
	auto_answer(a);
}

static void
auto_accept(uv_poll_t *h, int status, int events)
{
	struct proxytest *t = h->data;
	struct auto_conn *a = NULL;
	int fd;

	(void)status; (void)events;
	if ((fd = accept(t->backend_lfd, NULL, NULL)) == -1)
		return;
	for (size_t i = 0; i < AUTO_CONNS && a == NULL; i++)
		if (!t->auto_conn[i].open)
			a = &t->auto_conn[i];
	if (a == NULL)
		bail("the automatic backend has too many connections");
	memset(a, 0, sizeof(*a));
	a->open = true;
	a->fd = fd;
	a->t = t;
	uv_poll_init(&t->loop, &a->poll, fd);
	a->poll.data = a;
	uv_poll_start(&a->poll, UV_READABLE, auto_readable);
	if (write(fd, AUTO_GREETING, strlen(AUTO_GREETING)) != (ssize_t)strlen(AUTO_GREETING))
		bail("the automatic backend cannot greet");
}

void
proxytest_auto_backend(struct proxytest *t)
{
	uv_poll_init(&t->loop, &t->auto_listen, t->backend_lfd);
	t->auto_listen.data = t;
	uv_poll_start(&t->auto_listen, UV_READABLE, auto_accept);
	t->auto_on = true;
}

void
proxytest_wait_messages(struct proxytest *t, unsigned n)
{
	while (t->messages < n)
		step(t);
}

void
proxytest_stop(struct proxytest *t)
{
	listener_stop(&t->srv);
	while (t->srv.nsessions > 0)
		step(t);
	uv_timer_stop(&t->hang);
	uv_walk(&t->loop, close_any, NULL);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&t->loop) != 0)
		printf("# the loop still had handles at the end\n");
	for (size_t i = 0; i < AUTO_CONNS; i++)
		if (t->auto_conn[i].open && t->auto_conn[i].fd != -1)
			close(t->auto_conn[i].fd);
	for (size_t i = 0; i < t->srv.chain.n; i++) {
		free(t->srv.chain.v[i].name);
		free(t->srv.chain.v[i].path);
	}
	free(t->srv.chain.v);
	free(t->srv.listeners);
	config_free(t->cfg);
	close(t->backend_lfd);
	nftw(t->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

void
proxytest_connect(struct proxytest *t, struct peer *p)
{
	const struct sockaddr_storage *ss = &t->cfg->listen[0].ss;

	memset(p, 0, sizeof(*p));
	if ((p->fd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    connect(p->fd, (const struct sockaddr *)ss, sizeof(struct sockaddr_in)) != 0)
		bail("cannot connect to the proxy");
}

void
proxytest_accept(struct proxytest *t, struct peer *p)
{
	struct pollfd pfd = { .fd = t->backend_lfd, .events = POLLIN };

	memset(p, 0, sizeof(*p));
	while (poll(&pfd, 1, 0) != 1)
		step(t);
	if ((p->fd = accept(t->backend_lfd, NULL, NULL)) == -1)
		bail("accept failed");
}

void
peer_send(struct peer *p, const char *s)
{
	size_t n = strlen(s), o = 0;

	while (o < n) {
		ssize_t w = write(p->fd, s + o, n - o);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			bail("write to the proxy failed");
		o += (size_t)w;
	}
}

void
peer_close(struct peer *p)
{
	if (p->fd != -1)
		close(p->fd);
	p->fd = -1;
}

/* Read what has arrived, or run the loop once when nothing has. */
static void
fill(struct proxytest *t, struct peer *p)
{
	struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
	ssize_t n;

	if (p->eof)
		return;
	if (poll(&pfd, 1, 0) != 1) {
		step(t);
		return;
	}
	if (p->len + 1 >= sizeof(p->buf))
		bail("a peer's buffer is full");
	n = read(p->fd, p->buf + p->len, sizeof(p->buf) - 1 - p->len);
	if (n <= 0)
		p->eof = true;
	else
		p->len += (size_t)n;
	p->buf[p->len] = '\0';
}

/* Hand out and consume the first n bytes. */
static const char *
take(struct peer *p, size_t n)
{
	memcpy(out, p->buf, n);
	out[n] = '\0';
	memmove(p->buf, p->buf + n, p->len - n);
	p->len -= n;
	p->buf[p->len] = '\0';
	return out;
}

const char *
peer_until(struct proxytest *t, struct peer *p, const char *end)
{
	char *e;

	while ((e = strstr(p->buf, end)) == NULL) {
		if (p->eof)
			return NULL;
		fill(t, p);
	}
	return take(p, (size_t)(e - p->buf) + strlen(end));
}

const char *
peer_line(struct proxytest *t, struct peer *p)
{
	return peer_until(t, p, "\r\n");
}

const char *
peer_reply(struct proxytest *t, struct peer *p)
{
	for (;;) {
		size_t o = 0;
		char *nl;

		while ((nl = strstr(p->buf + o, "\r\n")) != NULL) {
			bool last = nl - (p->buf + o) < 4 || p->buf[o + 3] != '-';

			o = (size_t)(nl - p->buf) + 2;
			if (last)
				return take(p, o);
		}
		if (p->eof)
			return NULL;
		fill(t, p);
	}
}

bool
peer_wait_eof(struct proxytest *t, struct peer *p)
{
	while (!p->eof)
		fill(t, p);
	return p->len == 0;
}

bool
peer_quiet(struct proxytest *t, struct peer *p)
{
	struct pollfd pfd = { .fd = p->fd, .events = POLLIN };

	proxytest_settle(t);
	if (!p->eof && poll(&pfd, 1, 0) == 1)
		fill(t, p);
	return p->len == 0;
}
