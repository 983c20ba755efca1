/*
 * tap.h - a minimal TAP producer for the C unit tests (run by prove).
 *
 *	ok(cond, "name")		one test
 *	is_int(got, want, "name")	prints both values on failure
 *	is_str(got, want, "name")	likewise for NUL-terminated strings
 *	is_mem(got, gotlen, want, wantlen, "name")
 *	done_testing()			prints the plan; returns the exit status
 */
#ifndef SMTPCHAIN_TAP_H
#define SMTPCHAIN_TAP_H

#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

static int
tap_ok(int cond, const char *name, const char *file, int line)
{
	tap_n++;
	printf("%sok %d - %s\n", cond ? "" : "not ", tap_n, name);
	if (!cond) {
		tap_failed++;
		printf("#   Failed test '%s'\n#   at %s line %d.\n", name, file, line);
	}
	return cond;
}

#define ok(cond, name) tap_ok(!!(cond), (name), __FILE__, __LINE__)
#define is_int(got, want, name) do { \
	long long g_ = (long long)(got), w_ = (long long)(want); \
	if (!tap_ok(g_ == w_, (name), __FILE__, __LINE__)) \
		printf("#          got: %lld\n#     expected: %lld\n", g_, w_); \
} while (0)
#define is_str(got, want, name) do { \
	const char *g_ = (got), *w_ = (want); \
	int c_ = g_ && w_ ? strcmp(g_, w_) == 0 : g_ == w_; \
	if (!tap_ok(c_, (name), __FILE__, __LINE__)) \
		printf("#          got: '%s'\n#     expected: '%s'\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); \
} while (0)
#define is_mem(got, gotlen, want, wantlen, name) do { \
	size_t gl_ = (gotlen), wl_ = (wantlen); \
	int c_ = gl_ == wl_ && memcmp((got), (want), gl_) == 0; \
	if (!tap_ok(c_, (name), __FILE__, __LINE__)) \
		printf("#          got: '%.*s'\n#     expected: '%.*s'\n", (int)gl_, (const char *)(got), (int)wl_, (const char *)(want)); \
} while (0)
#define diag(...) do { printf("# "); printf(__VA_ARGS__); printf("\n"); } while (0)

static int
done_testing(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

#endif
