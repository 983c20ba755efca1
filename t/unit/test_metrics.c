/*
 * test_metrics.c - unit tests for the shared table of filter names in
 * metrics.c: names are added once and counted per verdict, and a process
 * that dies (exits, or is SIGKILLed) holding the table's lock leaves it to
 * the next taker, which registers its name (a spinlock left taken would
 * refuse every new name from then on).
 *
 * metrics.c is included, not linked, for its static lock functions: a
 * child takes the lock the way filter_index() does and dies in the
 * middle, without a race to win.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../proxy/metrics.c"
#include "tap.h"

static char	page[RENDER_MAX];

/* Whether /metrics has this line. */
static bool
rendered(const char *line)
{
	char want[256];

	metrics_render(page, sizeof(page));
	snprintf(want, sizeof(want), "\n%s\n", line);
	return strstr(page, want) != NULL;
}

/* A child takes the names' lock, scribbles past nnames, and dies as told. */
static void
die_holding_lock(int how)
{
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		names_lock();
		memset(R->names[R->nnames], 'x', sizeof(R->names[0]));	/* half-written */
		if (how == SIGKILL)
			raise(SIGKILL);
		_exit(0);
	}
	ok(pid > 0 && waitpid(pid, &status, 0) == pid, "child done");
	if (how == SIGKILL)
		ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the child was SIGKILLed holding the lock");
	else
		ok(WIFEXITED(status), "the child exited holding the lock");
}

int
main(void)
{
	char err[256];

	is_int(metrics_init(err, sizeof(err)), 0, "metrics_init");
	metrics_worker_init(0);

	metrics_filter_verdict("regex", 2);
	metrics_filter_verdict("regex", 2);
	metrics_filter_verdict("regex#2", 2);
	is_int(R->nnames, 2, "two names");
	ok(rendered("smtpchain_filter_verdicts_total{filter=\"regex\",verdict=\"reject\"} 2"),
	    "regex: 2 rejects");
	ok(rendered("smtpchain_filter_verdicts_total{filter=\"regex#2\",verdict=\"reject\"} 1"),
	    "regex#2: 1 reject");

	die_holding_lock(0);
	metrics_filter_verdict("after-exit", 3);
	is_int(R->nnames, 3, "a name added after a holder exited");
	ok(rendered("smtpchain_filter_verdicts_total{filter=\"after-exit\",verdict=\"tempfail\"} 1"),
	    "and counted under its own name (the scribble rewritten)");

	die_holding_lock(SIGKILL);
	metrics_filter_verdict("after-kill", 4);
	is_int(R->nnames, 4, "a name added after a holder was SIGKILLed");
	ok(rendered("smtpchain_filter_verdicts_total{filter=\"after-kill\",verdict=\"discard\"} 1"),
	    "and counted");
	metrics_filter_verdict("after-kill", 4);
	metrics_filter_verdict("then-another", 1);
	is_int(R->nnames, 5, "the lock works as before afterwards");
	ok(rendered("smtpchain_filter_verdicts_total{filter=\"after-kill\",verdict=\"discard\"} 2"),
	    "after-kill: 2 discards");
	return done_testing();
}
