/*
 * test_quarantine.c - unit tests for quarantine.c, which works on a
 * transaction and the client's facts, not on a session: the file holds the
 * header naming session, client and filter, the envelope (recipients that
 * go, not deleted ones) and the message as stored; a second message of the
 * same id never replaces the first; a directory that cannot be written to
 * gives -1 and leaves nothing behind.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clientfacts.h"
#include "msgstore.h"
#include "quarantine.h"
#include "tap.h"
#include "txn.h"

/* The names in dir that end in ".eml", and the count of all entries but . and .. */
static size_t
list(const char *dir, char names[][256], size_t max, size_t *all)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	*all = 0;
	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		(*all)++;
		if (n < max && len > 4 && strcmp(e->d_name + len - 4, ".eml") == 0)
			snprintf(names[n++], 256, "%s", e->d_name);
	}
	closedir(d);
	return n;
}

/* The whole of a file (static buffer). */
static const char *
slurp(const char *dir, const char *name)
{
	static char buf[8192];
	char path[512];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((f = fopen(path, "r")) == NULL)
		return "";
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

int
main(void)
{
	char dir[] = "/tmp/test_quarantine.XXXXXX", names[4][256], path[512];
	static const char msg[] = "Subject: hello\r\n\r\nbody line\r\n";
	struct client_facts client = { .addr = "192.0.2.7", .port = 40001, .helo = "client.example" };
	struct txn tx = { 0 };
	size_t n, all;

	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(tx.msgid, sizeof(tx.msgid), "0000000A.1");
	snprintf(tx.from, sizeof(tx.from), "sender@example.org");
	txn_rcpt_record(&tx, "RCPT TO:<kept@example.org>", 26, "kept@example.org", RCPT_OK);
	txn_rcpt_record(&tx, "RCPT TO:<gone@example.org>", 26, "gone@example.org", RCPT_DELETED);
	txn_rcpt_record(&tx, "RCPT TO:<added@example.org>", 27, "added@example.org", RCPT_ADDED);
	tx.store = msgstore_new(dir, 1 << 20, 65536);
	ok(tx.store != NULL, "a store");
	ok(msgstore_feed(tx.store, msg, sizeof(msg) - 1) == 0 && msgstore_finish(tx.store) == 0,
	    "the message is stored");

	is_int(quarantine(dir, "0000000A", &client, &tx, "spam"), 0, "quarantined");
	n = list(dir, names, 4, &all);
	is_int(n, 1, "one .eml file");
	is_int(all, 1, "and no temporary file left");
	ok(n == 1 && strncmp(names[0], "0000000A.1.", 11) == 0, "named after the message id");
	is_str(n == 1 ? slurp(dir, names[0]) : "",
	    "X-Smtpchain-Quarantine: session=0000000A client=[192.0.2.7]:40001"
	    " helo=<client.example> filter=spam\r\n"
	    "X-Smtpchain-Envelope-From: <sender@example.org>\r\n"
	    "X-Smtpchain-Envelope-To: <kept@example.org>\r\n"
	    "X-Smtpchain-Envelope-To: <added@example.org>\r\n"
	    "Subject: hello\r\n\r\nbody line\r\n",
	    "the header, the envelope that goes (not the deleted recipient), the message");

	is_int(quarantine(dir, "0000000A", &client, &tx, "spam"), 0, "the same message again");
	n = list(dir, names, 4, &all);
	is_int(n, 2, "a second file: the first is not replaced");

	is_int(quarantine("/nonexistent/quarantine", "0000000A", &client, &tx, "spam"), -1,
	    "a directory that is not there: -1");

	for (size_t i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	msgstore_free(tx.store);
	tx.store = NULL;
	txn_free(&tx);
	rmdir(dir);
	return done_testing();
}
