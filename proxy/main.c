/*
 * main.c - smtpchain(8): command line and start-up.
 *
 *	smtpchain [-c file] [-t] [-d] [-V] [-h]
 *
 * Runs in the foreground and logs to stderr (or syslog when log.syslog is
 * set).  -t checks the file, the TLS settings and the modules, and exits.
 * Otherwise the process becomes the master (master.c), which forks the
 * workers (worker.c) and handles the signals: SIGTERM or SIGINT stop
 * accepting, let sessions finish their transaction up to timeout.shutdown,
 * then 421 the rest and exit 0; SIGHUP reloads.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "config-paths.h"	/* SYSCONFDIR */
#include "log.h"
#include "server.h"

#define DEFAULT_CONFIG	SYSCONFDIR "/smtpchain/smtpchain.conf"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: smtpchain [-c file] [-t] [-d] [-V] [-h]\n"
	    "  -c file  configuration file (default %s)\n"
	    "  -t       check the configuration and exit (0 ok, 1 with file:line: error)\n"
	    "  -d       debug: log level debug and a transcript of every session\n"
	    "  -V       print the version and exit\n"
	    "  -h       this help\n", DEFAULT_CONFIG);
}

int
main(int argc, char **argv)
{
	const char *path = DEFAULT_CONFIG;
	bool check = false, debug = false;
	struct config *cfg;
	char err[1024];
	int ch;

	while ((ch = getopt(argc, argv, "c:tdVh")) != -1) {
		switch (ch) {
		case 'c': path = optarg; break;
		case 't': check = true; break;
		case 'd': debug = true; break;
		case 'V': printf("%s %s\n", PACKAGE_NAME, PACKAGE_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 1;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 1;
	}

	if ((cfg = config_load(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (check) {
		int rc = config_check_runtime(cfg, err, sizeof(err));

		if (rc != 0)
			fprintf(stderr, "%s\n", err);
		config_free(cfg);
		return rc == 0 ? 0 : 1;
	}
	log_init("smtpchain", debug ? LOG_LVL_DEBUG : cfg->log.level, cfg->log.syslog);
	return master_run(cfg, debug);
}
