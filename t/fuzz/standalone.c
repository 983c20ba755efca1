/*
 * standalone.c - a main() for the libFuzzer harnesses when libFuzzer is not
 * there (a gcc build, configured without --enable-fuzzing): it replays
 * inputs instead of searching for new ones.
 *
 *	fuzz_NAME [-v] FILE|DIR ...
 *
 * Every file named, and every regular file directly inside every directory
 * named (in name order), is read whole and handed once to
 * LLVMFuzzerTestOneInput().  It prints TAP, one "ok" per file, so prove can
 * run it; a harness that finds a broken promise aborts, which prove reports
 * as a failed test.  "make check" runs each harness this way over its seed
 * corpus (t/95-fuzz.t): a regression replay, not a search.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inputs larger than this are refused (libFuzzer's default -max_len is far lower). */
#define REPLAY_MAX_INPUT (16u << 20)

static unsigned replay_count;

/* Read a whole file into a fresh buffer; NULL (errno set) on failure. */
static uint8_t *
replay_read(const char *path, size_t *lenp)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t cap = 0, len = 0, n;

	if (f == NULL)
		return NULL;
	for (;;) {
		if (len == cap) {
			uint8_t *nb;

			if (cap >= REPLAY_MAX_INPUT) {
				free(buf);
				fclose(f);
				errno = EFBIG;
				return NULL;
			}
			cap = cap ? cap * 2 : 4096;
			nb = realloc(buf, cap);
			if (nb == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		fclose(f);
		errno = EIO;
		return NULL;
	}
	fclose(f);
	*lenp = len;
	return buf;
}

/* Replay one file: the harness sees exactly its bytes (a private copy). */
static int
replay_file(const char *path)
{
	size_t len = 0;
	uint8_t *buf = replay_read(path, &len);

	if (buf == NULL) {
		printf("not ok %u - %s: %s\n", ++replay_count, path, strerror(errno));
		return 1;
	}
	fflush(stdout);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	printf("ok %u - %s (%zu bytes)\n", ++replay_count, path, len);
	fflush(stdout);
	return 0;
}

/* Compare directory entries by name, for a stable order. */
static int
replay_name_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/* Replay every regular file directly inside dir. */
static int
replay_dir(const char *dir)
{
	struct dirent **names;
	int n, i, failed = 0;

	n = scandir(dir, &names, NULL, replay_name_cmp);
	if (n < 0) {
		printf("not ok %u - %s: %s\n", ++replay_count, dir, strerror(errno));
		return 1;
	}
	for (i = 0; i < n; i++) {
		char path[4096];
		struct stat st;

		if (names[i]->d_name[0] != '.' &&
		    snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name) < (int)sizeof(path) &&
		    stat(path, &st) == 0 && S_ISREG(st.st_mode))
			failed |= replay_file(path);
		free(names[i]);
	}
	free(names);
	return failed;
}

int
main(int argc, char **argv)
{
	int i, failed = 0;

	for (i = 1; i < argc; i++) {
		struct stat st;

		if (argv[i][0] == '-')
			continue;	/* libFuzzer options (-runs=...), meaningless here */
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
			failed |= replay_dir(argv[i]);
		else
			failed |= replay_file(argv[i]);
	}
	if (replay_count == 0)
		printf("1..0 # SKIP no input files given\n");
	else
		printf("1..%u\n", replay_count);
	return failed;
}
