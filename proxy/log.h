/*
 * log.h - logging for smtpchain.
 *
 * One idiom for everything the daemon says: log_msg() with a level.  Lines go
 * to stderr (foreground) or syslog.  Session code prefixes every line with the
 * session id, so an operator can grep one connection out of a busy log.
 *
 * Failure tiers (see STYLE): log_warn for the peer's mistakes (keep going),
 * log_fatal for a broken environment (exit 1, start-up only), log_panic for our
 * own bugs (abort, naming the function).
 */
#ifndef SMTPCHAIN_LOG_H
#define SMTPCHAIN_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARNING, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_init(const char *progname, enum log_level level, int use_syslog);
void log_set_level(enum log_level level);
int  log_enabled(enum log_level level);
int  log_level_parse(const char *name, enum log_level *out);	/* 0 ok, -1 unknown */

void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* A line prefixed with a session's id ("ID: text"). */
void log_id(const char *id, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_error(...)	log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)	log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_info(...)	log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)	do { if (log_enabled(LOG_LVL_DEBUG)) log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)

void log_fatal(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));
void log_panic_at(const char *func, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));
#define log_panic(...)	log_panic_at(__func__, __VA_ARGS__)

/* Allocation wrappers that never return NULL (out of memory is fatal). */
#include <stddef.h>
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
