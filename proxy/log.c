/*
 * log.c - logging to stderr or syslog, and the allocation wrappers.
 *
 * Lines on stderr carry a timestamp and the level; syslog adds its own.
 * Nothing here allocates, so it is safe to call on any error path.
 */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>

#include "log.h"

static enum log_level	log_level = LOG_LVL_INFO;
static int		log_syslog;
static const char	*log_prog = "smtpchain";
static pid_t		 log_pid;	/* getpid(), refreshed in a forked child */
static time_t		 log_ts_sec = -1;	/* the second log_ts was made for */
static char		 log_ts[32];	/* "YYYY-MM-DDTHH:MM:SS" of log_ts_sec */

static const char *const level_names[] = { "error", "warning", "info", "debug" };

/* After fork(): the child logs its own pid. */
static void
log_atfork_child(void)
{
	log_pid = getpid();
}

/* Set where lines go and the threshold; may be called again on reload. */
void
log_init(const char *progname, enum log_level level, int use_syslog)
{
	static int atfork_done;

	if (!atfork_done) {
		pthread_atfork(NULL, NULL, log_atfork_child);
		atfork_done = 1;
	}
	log_pid = getpid();
	if (progname)
		log_prog = progname;
	log_level = level;
	if (use_syslog && !log_syslog)
		openlog(log_prog, LOG_PID | LOG_NDELAY, LOG_MAIL);
	else if (!use_syslog && log_syslog)
		closelog();
	log_syslog = use_syslog;
}

/* Change the threshold (e.g. -d on the command line). */
void
log_set_level(enum log_level level)
{
	log_level = level;
}

/* Whether a line at this level would be written. */
int
log_enabled(enum log_level level)
{
	return level <= log_level;
}

/* Map "error", "warning", "info", "debug" to a level. */
int
log_level_parse(const char *name, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcasecmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	return -1;
}

/*
 * Write one line at a level.  On stderr each line is one write(2), so lines
 * of several worker processes sharing stderr never interleave; the
 * timestamp text is remade once a second, not per line.
 */
void
log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[8192 + 128];
	int saved = errno;

	if (!log_enabled(level))
		return;
	if (log_syslog) {
		vsnprintf(line, sizeof(line), fmt, ap);
		syslog(prio[level], "%s", line);
	} else {
		struct timeval tv;
		size_t n;
		int m;

		gettimeofday(&tv, NULL);
		if (tv.tv_sec != log_ts_sec) {
			struct tm tm;

			localtime_r(&tv.tv_sec, &tm);
			strftime(log_ts, sizeof(log_ts), "%Y-%m-%dT%H:%M:%S", &tm);
			log_ts_sec = tv.tv_sec;
		}
		if (log_pid == 0)
			log_pid = getpid();
		m = snprintf(line, sizeof(line), "%s.%03ld %s[%ld]: %s: ", log_ts,
		    (long)tv.tv_usec / 1000, log_prog, (long)log_pid, level_names[level]);
		n = m > 0 && (size_t)m < sizeof(line) ? (size_t)m : 0;
		m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
		if (m > 0)
			n += (size_t)m < sizeof(line) - n - 1 ? (size_t)m : sizeof(line) - n - 2;
		line[n++] = '\n';
		for (size_t off = 0; off < n; ) {
			ssize_t w = write(STDERR_FILENO, line + off, n - off);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			off += (size_t)w;
		}
	}
	errno = saved;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

/*
 * A line about one session (or one of its parts: filters, the held
 * message), prefixed with its id so that one connection can be grepped out.
 */
void
log_id(const char *id, enum log_level level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(level, "%s: %s", id, line);
}

/* The environment is broken: say why and exit 1 (start-up only). */
void
log_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_LVL_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

/* Our own bug: name the function and abort for a core dump. */
void
log_panic_at(const char *func, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(LOG_LVL_ERROR, "panic: %s: %s", func, line);
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		log_fatal("out of memory (%zu bytes)", n);
	return p;
}

void *
xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);

	if (p == NULL)
		log_fatal("out of memory (%zu x %zu bytes)", n, m);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		log_fatal("out of memory (%zu bytes)", n);
	return q;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}
