/*
 * test_config.c - unit tests for config_load() and config_parse_addr().
 *
 * Each test writes a config text to a temporary file in /tmp, loads it, and
 * checks either the values or the exact error, with the file's path shown
 * as "F" (so "F:7: message").
 */
#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "cfgparse.h"
#include "config.h"
#include "config-paths.h"
#include "log.h"


static char	tmppath[64];
static char	errbuf[512];
static char	errshown[512];

/* Write text to a new temporary file; its path is in tmppath. */
static void
write_tmp(const char *text)
{
	int fd;

	snprintf(tmppath, sizeof(tmppath), "/tmp/test_config.XXXXXX");
	if ((fd = mkstemp(tmppath)) == -1) {
		perror("mkstemp");
		exit(2);
	}
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		perror("write");
		exit(2);
	}
	close(fd);
}

/* Load a config text; NULL on error, with the message in errshown. */
static struct config *
load(const char *text)
{
	struct config *cfg;
	size_t plen;

	write_tmp(text);
	errbuf[0] = errshown[0] = '\0';
	cfg = config_load(tmppath, errbuf, sizeof(errbuf));
	unlink(tmppath);
	plen = strlen(tmppath);
	if (strncmp(errbuf, tmppath, plen) == 0)
		snprintf(errshown, sizeof(errshown), "F%s", errbuf + plen);
	else
		snprintf(errshown, sizeof(errshown), "%s", errbuf);
	return cfg;
}

/* Load a text that must fail; return the error with the path as "F". */
static const char *
load_err(const char *text)
{
	struct config *cfg = load(text);

	if (cfg != NULL) {
		config_free(cfg);
		return "(loaded fine)";
	}
	return errshown;
}

#define BASE	"listen = \"127.0.0.1:10025\"\nbackend = \"127.0.0.1:25\"\n"

/* The sample config from the issue, and every value in it. */
static void
test_full(void)
{
	static const char text[] =
	    "listen  = [ \"127.0.0.1:10025\", \"[::1]:10025\" ];\n"
	    "backend = \"127.0.0.1:25\";\n"
	    "hostname = \"mx.example.org\";\n"
	    "log { level = \"debug\"; transcript = true; transcript_body = true; syslog = true; }\n"
	    "timeout { command = 301; data = 10min; backend = 302; connect = 31; shutdown = 32s; }\n"
	    "limits { max_connections = 1001; max_message_size = 50mb; max_recipients = 1002; max_line_length = 1000;\n"
	    "    spool_memory = 1mb; max_header_size = 64kb; }\n"
	    "ehlo {\n"
	    "    remove = [ \"CHUNKING\", \"SMTPUTF8\" ];\n"
	    "    add    = [ \"X-EXAMPLE\", \"DELIVERBY 240\" ];\n"
	    "    size   = 10485760;\n"
	    "}\n"
	    "xclient = false;\n"
	    "xforward = no;\n"
	    "filter { module = \"a\"; opt = 1; }\n"
	    "filter {\n"
	    "    module = \"/opt/b.so\";\n"
	    "    list = [ x, y ];\n"
	    "    sub { k = v }\n"
	    "}\n"
	    "module_path = \"/opt/smtpchain/modules\";\n"
	    "quarantine_dir = \"/srv/quarantine\";\n"
	    "spool_dir = \"/srv/spool\";\n";
	struct config *cfg = load(text);
	struct sockaddr_in *sin;
	struct sockaddr_in6 *sin6;
	char buf[64];

	ok(cfg != NULL, "full config loads");
	if (cfg == NULL) {
		diag("%s", errbuf);
		return;
	}
	is_str(cfg->file, tmppath, "file");
	is_str(cfg->hostname, "mx.example.org", "hostname");
	is_int(cfg->nlisten, 2, "two listen addresses");
	is_str(cfg->listen[0].text, "127.0.0.1:10025", "listen[0] text");
	is_int(cfg->listen[0].line, 1, "listen[0] line");
	sin = (struct sockaddr_in *)&cfg->listen[0].ss;
	is_int(sin->sin_family, AF_INET, "listen[0] family");
	is_int(ntohs(sin->sin_port), 10025, "listen[0] port");
	is_int(cfg->listen[0].sslen, sizeof(struct sockaddr_in), "listen[0] sslen");
	is_str(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)), "127.0.0.1", "listen[0] address");
	is_str(cfg->listen[1].text, "[::1]:10025", "listen[1] text");
	sin6 = (struct sockaddr_in6 *)&cfg->listen[1].ss;
	is_int(sin6->sin6_family, AF_INET6, "listen[1] family");
	is_int(ntohs(sin6->sin6_port), 10025, "listen[1] port");
	is_int(cfg->listen[1].sslen, sizeof(struct sockaddr_in6), "listen[1] sslen");
	is_str(inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf)), "::1", "listen[1] address");
	is_str(cfg->backend.text, "127.0.0.1:25", "backend text");
	is_int(cfg->backend.line, 2, "backend line");
	is_int(ntohs(((struct sockaddr_in *)&cfg->backend.ss)->sin_port), 25, "backend port");
	is_int(cfg->log.level, LOG_LVL_DEBUG, "log.level");
	ok(cfg->log.transcript, "log.transcript");
	ok(cfg->log.transcript_body, "log.transcript_body");
	ok(cfg->log.syslog, "log.syslog");
	is_int(cfg->timeout.command, 301, "timeout.command");
	is_int(cfg->timeout.data, 600, "timeout.data (10min)");
	is_int(cfg->timeout.backend, 302, "timeout.backend");
	is_int(cfg->timeout.connect, 31, "timeout.connect");
	is_int(cfg->timeout.shutdown, 32, "timeout.shutdown (32s)");
	is_int(cfg->limits.max_connections, 1001, "limits.max_connections");
	is_int(cfg->limits.max_message_size, 52428800, "limits.max_message_size (50mb)");
	is_int(cfg->limits.max_recipients, 1002, "limits.max_recipients");
	is_int(cfg->limits.max_line_length, 1000, "limits.max_line_length");
	is_int(cfg->ehlo.remove.n, 2, "ehlo.remove count");
	if (cfg->ehlo.remove.n == 2) {
		is_str(cfg->ehlo.remove.v[0], "CHUNKING", "ehlo.remove[0]");
		is_str(cfg->ehlo.remove.v[1], "SMTPUTF8", "ehlo.remove[1]");
	}
	is_int(cfg->ehlo.add.n, 2, "ehlo.add count");
	if (cfg->ehlo.add.n == 2) {
		is_str(cfg->ehlo.add.v[0], "X-EXAMPLE", "ehlo.add[0]");
		is_str(cfg->ehlo.add.v[1], "DELIVERBY 240", "ehlo.add[1]");
	}
	is_int(cfg->ehlo.size, 10485760, "ehlo.size");
	ok(!cfg->xclient, "xclient");
	ok(!cfg->xforward, "xforward (no)");
	is_int(cfg->spool_memory, 1048576, "limits.spool_memory (1mb)");
	is_int(cfg->max_header_size, 65536, "limits.max_header_size (64kb)");
	is_str(cfg->module_path, "/opt/smtpchain/modules", "module_path");
	is_str(cfg->quarantine_dir, "/srv/quarantine", "quarantine_dir");
	is_str(cfg->spool_dir, "/srv/spool", "spool_dir");
	is_int(cfg->nfilters, 2, "two filters");
	if (cfg->nfilters == 2) {
		const struct cfg_node *b = cfg->filters[1].block;

		is_str(cfg->filters[0].module, "a", "filter[0].module");
		is_int(cfg->filters[0].line, 15, "filter[0].line");
		ok(cfg->filters[0].block != NULL && cfg_get(cfg->filters[0].block, "opt") != NULL &&
		    cfg_get(cfg->filters[0].block, "opt")->num == 1, "filter[0].block has its options");
		is_str(cfg->filters[1].module, "/opt/b.so", "filter[1].module, a path");
		is_int(cfg->filters[1].line, 16, "filter[1].line");
		ok(b != NULL && b->type == CFG_OBJECT && cfg_get(b, "list") != NULL &&
		    cfg_get(b, "list")->type == CFG_ARRAY && cfg_get(b, "sub") != NULL &&
		    cfg_get(cfg_get(b, "sub"), "k") != NULL, "filter[1].block, nested options kept");
		ok(b != NULL && cfg_get(b, "module") != NULL, "the block keeps its module key");
	}
	config_free(cfg);
}

/* Only the required keys: every default. */
static void
test_defaults(void)
{
	struct config *cfg = load(BASE);
	char host[256];

	ok(cfg != NULL, "minimal config loads");
	if (cfg == NULL) {
		diag("%s", errbuf);
		return;
	}
	if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		is_str(cfg->hostname, host, "hostname defaults to gethostname()");
	}
	is_int(cfg->nlisten, 1, "listen as a single string");
	is_int(cfg->log.level, LOG_LVL_INFO, "default log.level");
	ok(!cfg->log.transcript, "default log.transcript");
	ok(!cfg->log.transcript_body, "default log.transcript_body");
	ok(!cfg->log.syslog, "default log.syslog");
	is_int(cfg->timeout.command, 300, "default timeout.command");
	is_int(cfg->timeout.data, 600, "default timeout.data");
	is_int(cfg->timeout.backend, 300, "default timeout.backend");
	is_int(cfg->timeout.connect, 30, "default timeout.connect");
	is_int(cfg->timeout.shutdown, 30, "default timeout.shutdown");
	is_int(cfg->timeout.proxy_protocol, 5, "default timeout.proxy_protocol");
	is_int(cfg->timeout.module_check, 30, "default timeout.module_check");
	is_int(cfg->tls.ticket_key_rotation, 3600, "default tls.ticket_key_rotation");
	ok(!cfg->tls.ask_client_cert, "default tls.ask_client_cert");
	ok(!cfg->tls.enabled, "no tls {}: STARTTLS not offered");
	ok(!cfg->metrics.enabled, "no metrics {}: no metrics listener");
	is_int(cfg->limits.max_connections, 1000, "default limits.max_connections");
	is_int(cfg->limits.max_connections_per_client, 50,
	    "default limits.max_connections_per_client");
	is_int(cfg->limits.client_ipv6_prefix_length, 84,
	    "default limits.client_ipv6_prefix_length");
	is_int(cfg->limits.max_refused_recipients, 20, "default limits.max_refused_recipients");
	is_int(cfg->limits.max_message_size, 52428800, "default limits.max_message_size");
	is_int(cfg->limits.max_recipients, 1000, "default limits.max_recipients");
	is_int(cfg->limits.max_line_length, 512, "default limits.max_line_length");
	is_int(cfg->ehlo.remove.n, 0, "default ehlo.remove");
	is_int(cfg->ehlo.add.n, 0, "default ehlo.add");
	is_int(cfg->ehlo.size, 0, "default ehlo.size");
	ok(cfg->xclient, "default xclient");
	ok(cfg->xforward, "default xforward");
	ok(cfg->auth_requires_tls, "default auth_requires_tls");
	is_int(cfg->backend_balance, BALANCE_FAILOVER, "default backend_balance failover");
	is_int(cfg->backend_hold_down, 30, "default backend_hold_down");
	{
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		is_int(cfg->workers, cpus < 1 ? 1 : cpus > 32 ? 32 : cpus,
		    "default workers: one per online CPU, 1..32");
	}
	ok(cfg->priv.user == NULL && cfg->priv.group == NULL && cfg->priv.chroot == NULL,
	    "default user, group, chroot: none");
	is_int(cfg->nfilters, 0, "no filters by default");
	ok(cfg->filters == NULL, "no filter array");
	is_str(cfg->module_path, MODULE_PATH, "default module_path (MODULE_PATH)");
	is_str(cfg->quarantine_dir, "/var/spool/smtpchain/quarantine", "default quarantine_dir");
	is_str(cfg->spool_dir, "/var/spool/smtpchain/tmp", "default spool_dir");
	is_int(cfg->spool_memory, 262144, "default limits.spool_memory");
	is_int(cfg->max_header_size, 1048576, "default limits.max_header_size");
	is_int(cfg->backend_tls, BACKEND_TLS_NONE, "default backend_tls none");
	ok(cfg->backend_tls_ca == NULL, "default backend_tls_ca: none (the system's store)");
	ok(cfg->backend_tls_name == NULL, "default backend_tls_name: none");
	config_free(cfg);

	/* Empty blocks keep the defaults too; blocks with or without '='. */
	cfg = load(BASE "log = {}\ntimeout {}\nlimits : {}\nehlo {}\n");
	ok(cfg != NULL, "empty blocks load");
	if (cfg)
		is_int(cfg->timeout.data, 600, "empty timeout {} keeps defaults");
	config_free(cfg);

	/* Edge values that are allowed. */
	cfg = load(BASE "limits { max_line_length = 65536; max_message_size = 0 }\n"
	    "timeout { command = 1; data = 1d }\nehlo { size = 0; remove = \"PIPELINING\"; add = \"X-ONE\" }\n"
	    "hostname = \"[IPv6:2001:db8::1]\"\n");
	ok(cfg != NULL, "edge values load");
	if (cfg) {
		is_int(cfg->limits.max_line_length, 65536, "max_line_length 65536");
		is_int(cfg->limits.max_message_size, 0, "max_message_size 0 = none");
		is_int(cfg->timeout.command, 1, "timeout 1");
		is_int(cfg->timeout.data, 86400, "timeout 1d");
		is_int(cfg->ehlo.remove.n, 1, "ehlo.remove as a single string");
		is_int(cfg->ehlo.add.n, 1, "ehlo.add as a single string");
		is_str(cfg->hostname, "[IPv6:2001:db8::1]", "address literal hostname");
	}
	config_free(cfg);

	cfg = load(BASE "limits { spool_memory = 4096; max_header_size = 1024 }\n");
	ok(cfg != NULL, "lowest spool sizes load");
	if (cfg)
		ok(cfg->spool_memory == 4096 && cfg->max_header_size == 1024, "lowest spool sizes");
	config_free(cfg);
	cfg = load(BASE "limits { spool_memory = 64mb; max_header_size = 64mb }\n");
	ok(cfg != NULL, "highest spool sizes load");
	if (cfg)
		ok(cfg->spool_memory == 67108864 && cfg->max_header_size == 67108864,
		    "highest spool sizes");
	config_free(cfg);
	cfg = load(BASE "filter { module = x }\nfilter { module = x; a = 1 }\nfilter { module = y }\n");
	ok(cfg != NULL && cfg->nfilters == 3, "three filter {} blocks, one module twice");
	if (cfg && cfg->nfilters == 3)
		ok(strcmp(cfg->filters[0].module, "x") == 0 && strcmp(cfg->filters[1].module, "x") == 0 &&
		    strcmp(cfg->filters[2].module, "y") == 0 && cfg->filters[2].line == 5,
		    "filters in file order");
	if (cfg && cfg->nfilters == 3)
		ok(cfg->filters[0].name == NULL && cfg->filters[1].name == NULL,
		    "no name key: name NULL (module.c names it)");
	config_free(cfg);
	cfg = load(BASE "filter { module = x; name = \"rx-senders\" }\n"
	    "filter { module = x; name = \"Rx_2.b\"; a = 1 }\n");
	ok(cfg != NULL && cfg->nfilters == 2, "two named blocks of one module");
	if (cfg && cfg->nfilters == 2)
		ok(strcmp(cfg->filters[0].name, "rx-senders") == 0 &&
		    strcmp(cfg->filters[1].name, "Rx_2.b") == 0, "filter names as written");
	config_free(cfg);

	cfg = load(BASE "ehlo { remove = []; add = [] }\n");
	ok(cfg != NULL, "empty ehlo lists load");
	if (cfg)
		ok(cfg->ehlo.remove.n == 0 && cfg->ehlo.add.n == 0, "empty ehlo lists are empty");
	config_free(cfg);
	config_free(NULL);
	ok(1, "config_free(NULL)");
}

/*
 * The shipped sample conf/smtpchain.conf loads and states the defaults
 * (found through $SMTPCHAIN_SRCDIR, as "make check" sets it, or from the
 * source tree's top directory).
 */
static void
test_sample(void)
{
	struct config *sample, *defaults;
	const char *srcdir = getenv("SMTPCHAIN_SRCDIR");
	char path[1024], err[512];

	snprintf(path, sizeof(path), "%s/conf/smtpchain.conf", srcdir ? srcdir : ".");
	if (access(path, R_OK) == -1) {
		ok(1, "# SKIP conf/smtpchain.conf not found (set SMTPCHAIN_SRCDIR)");
		return;
	}
	sample = config_load(path, err, sizeof(err));
	ok(sample != NULL, "conf/smtpchain.conf loads");
	if (sample == NULL) {
		diag("%s", err);
		return;
	}
	defaults = load(BASE);
	if (defaults == NULL) {
		config_free(sample);
		return;
	}
	is_str(sample->hostname, defaults->hostname, "sample: hostname");
	is_int(sample->log.level, defaults->log.level, "sample: log.level");
	is_int(sample->log.transcript, defaults->log.transcript, "sample: log.transcript");
	is_int(sample->log.transcript_body, defaults->log.transcript_body,
	    "sample: log.transcript_body");
	is_int(sample->log.syslog, defaults->log.syslog, "sample: log.syslog");
	is_int(sample->timeout.command, defaults->timeout.command, "sample: timeout.command");
	is_int(sample->timeout.data, defaults->timeout.data, "sample: timeout.data");
	is_int(sample->timeout.backend, defaults->timeout.backend, "sample: timeout.backend");
	is_int(sample->timeout.connect, defaults->timeout.connect, "sample: timeout.connect");
	is_int(sample->timeout.shutdown, defaults->timeout.shutdown, "sample: timeout.shutdown");
	is_int(sample->limits.max_connections, defaults->limits.max_connections,
	    "sample: limits.max_connections");
	is_int(sample->limits.max_message_size, defaults->limits.max_message_size,
	    "sample: limits.max_message_size");
	is_int(sample->limits.max_recipients, defaults->limits.max_recipients,
	    "sample: limits.max_recipients");
	is_int(sample->limits.max_line_length, defaults->limits.max_line_length,
	    "sample: limits.max_line_length");
	is_int(sample->ehlo.remove.n, defaults->ehlo.remove.n, "sample: ehlo.remove");
	is_int(sample->ehlo.add.n, defaults->ehlo.add.n, "sample: ehlo.add");
	is_int(sample->ehlo.size, defaults->ehlo.size, "sample: ehlo.size");
	is_int(sample->xclient, defaults->xclient, "sample: xclient");
	is_int(sample->xforward, defaults->xforward, "sample: xforward");
	is_str(sample->module_path, defaults->module_path, "sample: module_path");
	is_str(sample->quarantine_dir, defaults->quarantine_dir, "sample: quarantine_dir");
	is_str(sample->spool_dir, defaults->spool_dir, "sample: spool_dir");
	is_int(sample->spool_memory, defaults->spool_memory, "sample: limits.spool_memory");
	is_int(sample->max_header_size, defaults->max_header_size,
	    "sample: limits.max_header_size");
	is_int(sample->nfilters, 0, "sample: no filters (the example is commented out)");
	is_int(sample->backend_tls, defaults->backend_tls, "sample: backend_tls");
	ok(sample->backend_tls_ca == NULL && sample->backend_tls_name == NULL,
	    "sample: backend_tls_ca and backend_tls_name not set");
	config_free(defaults);
	config_free(sample);
}

/* user, group, chroot: looked up at load; errors name the key and the line. */
static void
test_priv(void)
{
	struct config *cfg;
	struct group *gr = getgrnam("daemon");

	cfg = load(BASE);
	ok(cfg && cfg->priv.user == NULL && cfg->priv.chroot == NULL, "user and chroot unset by default");
	config_free(cfg);
	cfg = load(BASE "user = \"root\"\n");
	ok(cfg && cfg->priv.uid == 0 && cfg->priv.gid == 0 && strcmp(cfg->priv.user, "root") == 0,
	    "user = root: uid 0, its login group");
	config_free(cfg);
	if (gr != NULL) {
		cfg = load(BASE "group = \"daemon\"\nuser = \"root\"\nchroot = \"/var/empty\"\n");
		ok(cfg && cfg->priv.gid == gr->gr_gid, "group before user: the group's gid kept");
		if (cfg)
			is_str(cfg->priv.chroot, "/var/empty", "chroot");
		config_free(cfg);
	}
	is_str(load_err(BASE "user = \"no-such-user-tc\"\n"),
	    "F:3: user: no such user \"no-such-user-tc\"", "a user that does not exist");
	is_str(load_err(BASE "user = \"root\"\ngroup = \"no-such-group-tc\"\n"),
	    "F:4: group: no such group \"no-such-group-tc\"", "a group that does not exist");
	is_str(load_err(BASE "\ngroup = \"root\"\n"),
	    "F:4: group: needs user (the account the workers run as)", "group without user");
	is_str(load_err(BASE "chroot = \"/var/empty\"\n"),
	    "F:3: chroot: needs user (the account the workers run as)", "chroot without user");
	is_str(load_err(BASE "user = \"root\"\nchroot = \"var/empty\"\n"),
	    "F:4: chroot: \"var/empty\" is not an absolute path", "a relative chroot");
	is_str(load_err(BASE "user = 0\n"), "F:3: user: expected a string, got number",
	    "user: a number");
}

/* backend_tls, backend_tls_ca, backend_tls_name: values and errors. */
static void
test_backend_tls(void)
{
	struct config *cfg;
	char ca[64], text[512];
	int fd;

	/* Any readable file does for the load; its contents are checked at start-up. */
	snprintf(ca, sizeof(ca), "/tmp/test_config_ca.XXXXXX");
	if ((fd = mkstemp(ca)) == -1) {
		perror("mkstemp");
		exit(2);
	}
	close(fd);

	cfg = load(BASE "backend_tls = \"may\"\n");
	ok(cfg && cfg->backend_tls == BACKEND_TLS_MAY, "backend_tls may");
	config_free(cfg);
	cfg = load(BASE "backend_tls = \"none\"\nbackend_tls_name = \"mx.example.org\"\n");
	ok(cfg && cfg->backend_tls == BACKEND_TLS_NONE, "backend_tls none (a name is allowed)");
	config_free(cfg);
	snprintf(text, sizeof(text), BASE "backend_tls = \"encrypt\"\nbackend_tls_ca = \"%s\"\n"
	    "backend_tls_name = \"Mx-1.Example.org\"\n", ca);
	cfg = load(text);
	ok(cfg && cfg->backend_tls == BACKEND_TLS_ENCRYPT, "backend_tls encrypt");
	if (cfg) {
		is_str(cfg->backend_tls_ca, ca, "backend_tls_ca");
		is_str(cfg->backend_tls_name, "Mx-1.Example.org", "backend_tls_name");
	} else {
		diag("%s", errbuf);
	}
	config_free(cfg);
	cfg = load(BASE "backend_tls = \"encrypt\"\nbackend_tls_name = \"localhost\"\n");
	ok(cfg && cfg->backend_tls_ca == NULL, "encrypt without a CA file: the system's store");
	config_free(cfg);

	is_str(load_err(BASE "backend_tls = \"yes\"\n"),
	    "F:3: backend_tls: expected \"none\", \"may\" or \"encrypt\", got \"yes\"",
	    "backend_tls: unknown mode");
	is_str(load_err(BASE "backend_tls = \"Encrypt\"\n"),
	    "F:3: backend_tls: expected \"none\", \"may\" or \"encrypt\", got \"Encrypt\"",
	    "backend_tls: case-sensitive");
	is_str(load_err(BASE "backend_tls = true\n"),
	    "F:3: backend_tls: expected a string, got boolean", "backend_tls boolean");
	is_str(load_err(BASE "\nbackend_tls = \"encrypt\"\n"),
	    "F:4: backend_tls: \"encrypt\" needs backend_tls_name (the name in the backend's "
	    "certificate)", "encrypt without backend_tls_name");
	is_str(load_err(BASE "backend_tls_ca = \"/nonexistent/ca.pem\"\n"),
	    "F:3: backend_tls_ca: /nonexistent/ca.pem: No such file or directory",
	    "missing backend_tls_ca");
	is_str(load_err(BASE "backend_tls_ca = \"ca.pem\"\n"),
	    "F:3: backend_tls_ca: \"ca.pem\" is not an absolute path", "relative backend_tls_ca");
	is_str(load_err(BASE "backend_tls_name = \"[192.0.2.1]\"\n"),
	    "F:3: backend_tls_name: bad name \"[192.0.2.1]\" (expected a DNS name such as "
	    "mx.example.org)", "address literal as backend_tls_name");
	is_str(load_err(BASE "backend_tls_name = \"mx..example.org\"\n"),
	    "F:3: backend_tls_name: bad name \"mx..example.org\" (expected a DNS name such as "
	    "mx.example.org)", "empty label in backend_tls_name");
	is_str(load_err(BASE "backend_tls_name = \"\"\n"),
	    "F:3: backend_tls_name: bad name \"\" (expected a DNS name such as mx.example.org)",
	    "empty backend_tls_name");
	is_str(load_err(BASE "backend_tls_name = \"*.example.org\"\n"),
	    "F:3: backend_tls_name: bad name \"*.example.org\" (expected a DNS name such as "
	    "mx.example.org)", "wildcard as backend_tls_name");
	is_str(load_err(BASE "backend_tls = \"may\"\nbackend_tls = \"none\"\n"),
	    "F:4: backend_tls: duplicate key (first set at line 3)", "duplicate backend_tls");
	unlink(ca);
}

/* tls {}: sni entries, ask_client_cert, client_ca (files are opened by tls.c, not here). */
static void
test_tls_sni(void)
{
	struct config *cfg;

#define TLS_OPEN BASE "tls {\n cert = \"/c.pem\"; key = \"/k.pem\";\n"
	cfg = load(TLS_OPEN " sni = [ { names = [ \"MX.Example.org\", \"*.example.net\" ];\n"
	    "   cert = \"/mx.pem\"; key = \"/mx.key\"; },\n"
	    "  { names = \"other.test\"; cert = \"/o.pem\"; key = \"/o.key\"; } ];\n"
	    " ask_client_cert = true;\n}\n");
	ok(cfg && cfg->tls.nsni == 2, "tls.sni: two entries");
	if (cfg && cfg->tls.nsni == 2) {
		is_int((long)cfg->tls.sni[0].names.n, 2, "tls.sni[0]: two names");
		is_str(cfg->tls.sni[0].names.v[0], "mx.example.org", "tls.sni: names in lower case");
		is_str(cfg->tls.sni[0].names.v[1], "*.example.net", "tls.sni: a wildcard name");
		is_str(cfg->tls.sni[0].cert, "/mx.pem", "tls.sni[0].cert");
		is_str(cfg->tls.sni[1].key, "/o.key", "tls.sni[1].key");
		is_int(cfg->tls.sni[1].line, 7, "tls.sni[1]: its line");
		ok(cfg->tls.ask_client_cert && cfg->tls.client_ca == NULL,
		    "ask_client_cert without client_ca");
	}
	config_free(cfg);
	cfg = load(TLS_OPEN " sni = { names = \"a.test\"; cert = \"/a.pem\"; key = \"/a.key\"; }\n}\n");
	ok(cfg && cfg->tls.nsni == 1 && !cfg->tls.ask_client_cert, "tls.sni: one entry as a block");
	config_free(cfg);

	is_str(load_err(TLS_OPEN " sni = { names = \"a.test\"; cert = \"/a.pem\"; }\n}\n"),
	    "F:5: tls.sni: missing key \"key\"", "tls.sni: an entry without key");
	is_str(load_err(TLS_OPEN " sni = { cert = \"/a.pem\"; key = \"/a.key\"; }\n}\n"),
	    "F:5: tls.sni: missing key \"names\"", "tls.sni: an entry without names");
	is_str(load_err(TLS_OPEN " sni = { names = []; cert = \"/a.pem\"; key = \"/a.key\"; }\n}\n"),
	    "F:5: tls.sni: expected at least one entry", "tls.sni: no names");
	is_str(load_err(TLS_OPEN " sni = { names = \"a.*.test\"; cert = \"/a.pem\"; key = \"/a.key\"; }\n}\n"),
	    "F:5: tls.sni.names: bad name \"a.*.test\" (expected a DNS name, or *. and one)",
	    "tls.sni: a wildcard not in front");
	is_str(load_err(TLS_OPEN " sni = { names = \"a.test\"; cert = \"a.pem\"; key = \"/a.key\"; }\n}\n"),
	    "F:5: tls.sni.cert: \"a.pem\" is not an absolute path", "tls.sni: a relative cert");
	is_str(load_err(TLS_OPEN " sni = { names = \"a.test\"; size = 1; }\n}\n"),
	    "F:5: tls.sni: unknown key \"size\"", "tls.sni: an unknown key");
	is_str(load_err(TLS_OPEN " sni = { names = \"a.test\"; names = \"b.test\"; }\n}\n"),
	    "F:5: tls.sni: duplicate key \"names\"", "tls.sni: a key twice");
	is_str(load_err(TLS_OPEN " sni = \"a.test\";\n}\n"),
	    "F:5: tls.sni: expected an array, got string", "tls.sni: a string");
	is_str(load_err(TLS_OPEN " client_ca = \"/nonexistent/ca.pem\";\n}\n"),
	    "F:5: tls.client_ca: /nonexistent/ca.pem: No such file or directory",
	    "tls.client_ca: a missing file");
	is_str(load_err(TLS_OPEN " ask_client_cert = \"yes\";\n}\n"),
	    "F:5: tls.ask_client_cert: expected a boolean, got string", "tls.ask_client_cert: a string");
#undef TLS_OPEN
}

/* Each error class, with its line. */
static void
test_errors(void)
{
	/* Syntax errors come from cfgparse with the same prefix. */
	is_str(load_err(BASE "log {\n level info\n"), "F:3: '{' is never closed", "syntax error");
	is_str(load_err(BASE "\nlisten2\n"), "F:4: expected '=' or '{' after key \"listen2\"",
	    "syntax error: key alone");

	/* Unknown keys. */
	is_str(load_err(BASE "foo = 1\n"), "F:3: unknown key \"foo\"", "unknown top-level key");
	is_str(load_err(BASE "log {\n level = info\n foo = 1\n}\n"),
	    "F:5: unknown key \"foo\" in log {}", "unknown key in log {}");
	is_str(load_err(BASE "timeout { sessions = 1 }\n"),
	    "F:3: unknown key \"sessions\" in timeout {}", "unknown key in timeout {}");
	is_str(load_err(BASE "limits { max_size = 1 }\n"),
	    "F:3: unknown key \"max_size\" in limits {}", "unknown key in limits {}");
	is_str(load_err(BASE "ehlo { drop = [] }\n"),
	    "F:3: unknown key \"drop\" in ehlo {}", "unknown key in ehlo {}");
	is_str(load_err(BASE "Listen = \"127.0.0.1:1\"\n"), "F:3: unknown key \"Listen\"",
	    "keys are case-sensitive");

	/* Wrong types. */
	is_str(load_err(BASE "log { level = 3 }\n"),
	    "F:3: log.level: expected a string, got number", "log.level number");
	is_str(load_err(BASE "log { transcript = \"yes\" }\n"),
	    "F:3: log.transcript: expected a boolean, got string", "quoted boolean");
	is_str(load_err(BASE "log = \"info\"\n"), "F:3: log: expected an object, got string",
	    "block as a string");
	is_str(load_err(BASE "timeout { command = \"300\" }\n"),
	    "F:3: timeout.command: expected a number, got string", "quoted number");
	is_str(load_err(BASE "timeout { command = 1.5 }\n"),
	    "F:3: timeout.command: expected a number, got string", "fractional number");
	is_str(load_err(BASE "xclient = 1\n"), "F:3: xclient: expected a boolean, got number",
	    "xclient number");
	is_str(load_err(BASE "hostname = [ \"a\" ]\n"),
	    "F:3: hostname: expected a string, got array", "hostname array");
	is_str(load_err("listen = 25\nbackend = \"127.0.0.1:25\"\n"),
	    "F:1: listen: expected a string, an object or an array of them, got number",
	    "listen number");
	is_str(load_err("listen = [\n \"127.0.0.1:1\",\n 2 ]\nbackend = \"127.0.0.1:25\"\n"),
	    "F:3: listen: expected a string, got number", "listen element number");
	is_str(load_err("listen = []\nbackend = \"127.0.0.1:25\"\n"),
	    "F:1: listen: expected at least one entry", "listen empty");
	is_str(load_err("listen = \"127.0.0.1:1\"\nbackend = { a = 1 }\n"),
	    "F:2: backend: expected a string or an array of strings, got object", "backend object");
	is_str(load_err(BASE "ehlo { remove = 1 }\n"),
	    "F:3: ehlo.remove: expected a string or an array of strings, got number",
	    "ehlo.remove number");
	is_str(load_err(BASE "ehlo { add = [ {} ] }\n"),
	    "F:3: ehlo.add: expected a string, got object", "ehlo.add object");
	is_str(load_err(BASE "ehlo { size = true }\n"),
	    "F:3: ehlo.size: expected a number, got boolean", "ehlo.size boolean");
	is_str(load_err(BASE "filter = \"x\"\n"), "F:3: filter: expected an object, got string",
	    "filter string");
	is_str(load_err(BASE "filter { module = [ \"a\" ] }\n"),
	    "F:3: filter.module: expected a string, got array", "filter.module array");
	is_str(load_err(BASE "module_path = 1\n"), "F:3: module_path: expected a string, got number",
	    "module_path number");
	is_str(load_err(BASE "spool_dir = true\n"), "F:3: spool_dir: expected a string, got boolean",
	    "spool_dir boolean");
	is_str(load_err(BASE "limits { spool_memory = \"1mb\" }\n"),
	    "F:3: limits.spool_memory: expected a number, got string", "quoted spool_memory");

	/* Duplicates. */
	is_str(load_err(BASE "backend = \"127.0.0.1:26\"\n"),
	    "F:3: backend: duplicate key (first set at line 2)", "duplicate backend");
	is_str(load_err(BASE "log {\n level = info\n level = debug\n}\n"),
	    "F:5: log.level: duplicate key (first set at line 4)", "duplicate log.level");
	is_str(load_err(BASE "xclient = true\nxclient = false\n"),
	    "F:4: xclient: duplicate key (first set at line 3)", "duplicate xclient");
	is_str(load_err(BASE "filter {\n module = a\n x = 1\n x = 2\n}\n"),
	    "F:6: filter.x: duplicate key (first set at line 5)", "duplicate key in filter {}");
	is_str(load_err(BASE "filter { module = a; module = b }\n"),
	    "F:3: filter.module: duplicate key (first set at line 3)", "duplicate filter.module");
	is_str(load_err(BASE "spool_dir = \"/a\"\nspool_dir = \"/b\"\n"),
	    "F:4: spool_dir: duplicate key (first set at line 3)", "duplicate spool_dir");
	is_str(load_err(BASE "log {}\nlog {}\n"),
	    "F:4: log: duplicate key (first set at line 3)", "duplicate block");
	is_str(load_err("listen = [ \"127.0.0.1:1\",\n\"127.0.0.1:1\" ]\nbackend = \"127.0.0.1:25\"\n"),
	    "F:2: listen: \"127.0.0.1:1\" is already listed at line 1", "duplicate listen address");
	is_str(load_err(BASE "ehlo { add = [ \"X-A 1\", \"x-a 2\" ] }\n"),
	    "F:3: ehlo.add: x-a is added twice", "duplicate ehlo.add keyword");

	/* Required keys. */
	is_str(load_err("listen = \"127.0.0.1:1\"\n"), "F: missing required key \"backend\"",
	    "missing backend");
	is_str(load_err("backend = \"127.0.0.1:1\"\n"), "F: missing required key \"listen\"",
	    "missing listen");
	is_str(load_err(BASE "filter { module = a }\n\nfilter {\n tag = x\n}\n"),
	    "F:5: filter: missing key \"module\"", "filter without module");
	is_str(load_err(BASE "filter {}\n"), "F:3: filter: missing key \"module\"",
	    "empty filter {}");

	/* Bad values. */
	is_str(load_err("listen = \"1.2.3:x\"\nbackend = \"127.0.0.1:25\"\n"),
	    "F:1: listen: bad address \"1.2.3:x\" (expected HOST:PORT or [IPV6]:PORT)",
	    "bad listen address");
	is_str(load_err("listen = \"127.0.0.1:1\"\nbackend = \"localhost:25\"\n"),
	    "F:2: backend: bad address \"localhost:25\" (expected HOST:PORT or [IPV6]:PORT)",
	    "backend by name");
	is_str(load_err("listen = \"127.0.0.1:1\"\nbackend = \"127.0.0.1:0\"\n"),
	    "F:2: backend: bad address \"127.0.0.1:0\" (expected HOST:PORT or [IPV6]:PORT)",
	    "port 0");
	is_str(load_err(BASE "log { level = verbose }\n"),
	    "F:3: log.level: unknown level \"verbose\" (expected error, warning, info or debug)",
	    "bad level name");
	is_str(load_err(BASE "timeout {\n command = 0\n}\n"),
	    "F:4: timeout.command: 0 is out of range (1..86400)", "timeout 0");
	is_str(load_err(BASE "timeout { data = -5 }\n"),
	    "F:3: timeout.data: -5 is out of range (1..86400)", "negative timeout");
	is_str(load_err(BASE "timeout { shutdown = 2d }\n"),
	    "F:3: timeout.shutdown: 172800 is out of range (1..86400)", "timeout too long");
	is_str(load_err(BASE "limits { max_line_length = 511 }\n"),
	    "F:3: limits.max_line_length: 511 is out of range (512..65536)", "max_line_length 511");
	is_str(load_err(BASE "limits { max_line_length = 65537 }\n"),
	    "F:3: limits.max_line_length: 65537 is out of range (512..65536)",
	    "max_line_length 65537");
	is_str(load_err(BASE "limits { max_connections = 0 }\n"),
	    "F:3: limits.max_connections: 0 is out of range (1..1000000)", "max_connections 0");
	is_str(load_err(BASE "limits { max_recipients = 0 }\n"),
	    "F:3: limits.max_recipients: 0 is out of range (1..1000000)", "max_recipients 0");
	is_str(load_err(BASE "limits { max_message_size = -1 }\n"),
	    "F:3: limits.max_message_size: -1 is out of range (0..9223372036854775807)",
	    "negative size");
	is_str(load_err(BASE "filter { module = \"\" }\n"),
	    "F:3: filter.module: empty module name", "empty module name");
	is_str(load_err(BASE "filter { module = a; name = 1 }\n"),
	    "F:3: filter.name: expected a string, got number", "filter.name a number");
	is_str(load_err(BASE "filter { module = a; name = \"\" }\n"),
	    "F:3: filter.name: \"\" is not a filter name (1 to 63 letters, digits, '.', '_', '-')",
	    "empty filter.name");
	is_str(load_err(BASE "filter { module = a; name = \"a b\" }\n"),
	    "F:3: filter.name: \"a b\" is not a filter name (1 to 63 letters, digits, '.', '_', '-')",
	    "filter.name with a space");
	is_str(load_err(BASE "filter { module = a; name = \"a#2\" }\n"),
	    "F:3: filter.name: \"a#2\" is not a filter name (1 to 63 letters, digits, '.', '_', '-')",
	    "filter.name with '#' (kept for generated names)");
	is_str(load_err(BASE "filter { module = a; name = "
	    "\"0123456789012345678901234567890123456789012345678901234567890123\" }\n"),
	    "F:3: filter.name: \"0123456789012345678901234567890123456789012345678901234567890123\" "
	    "is not a filter name (1 to 63 letters, digits, '.', '_', '-')", "filter.name of 64");
	is_str(load_err(BASE "filter { module = a; name = one }\nfilter { module = b }\n"
	    "filter {\n module = a\n name = one\n}\n"),
	    "F:7: filter.name: \"one\" is already the name of the filter at line 3",
	    "two blocks with one name");
	is_str(load_err(BASE "module_path = \"lib/smtpchain\"\n"),
	    "F:3: module_path: \"lib/smtpchain\" is not an absolute path", "relative module_path");
	is_str(load_err(BASE "quarantine_dir = \"\"\n"),
	    "F:3: quarantine_dir: \"\" is not an absolute path", "empty quarantine_dir");
	is_str(load_err(BASE "spool_dir = \"tmp\"\n"),
	    "F:3: spool_dir: \"tmp\" is not an absolute path", "relative spool_dir");
	is_str(load_err(BASE "limits { spool_memory = 4095 }\n"),
	    "F:3: limits.spool_memory: 4095 is out of range (4096..67108864)", "spool_memory too small");
	is_str(load_err(BASE "limits { spool_memory = 67108865 }\n"),
	    "F:3: limits.spool_memory: 67108865 is out of range (4096..67108864)",
	    "spool_memory too large");
	is_str(load_err(BASE "limits { max_header_size = 1023 }\n"),
	    "F:3: limits.max_header_size: 1023 is out of range (1024..67108864)",
	    "max_header_size too small");
	is_str(load_err(BASE "limits { max_header_size = 65mb }\n"),
	    "F:3: limits.max_header_size: 68157440 is out of range (1024..67108864)",
	    "max_header_size too large");
	is_str(load_err(BASE "hostname = \"mx example\"\n"),
	    "F:3: hostname: bad hostname \"mx example\"", "hostname with a space");
	is_str(load_err(BASE "hostname = \"mx\\r\\n250 x\"\n"),
	    "F:3: hostname: bad hostname \"mx??250 x\"", "hostname with CRLF");
	is_str(load_err(BASE "hostname = \"\"\n"), "F:3: hostname: bad hostname \"\"",
	    "empty hostname");
	is_str(load_err(BASE "ehlo { add = [ \"STARTTLS\" ] }\n"),
	    "F:3: ehlo.add: the proxy cannot offer STARTTLS", "ehlo.add STARTTLS");
	is_str(load_err(BASE "ehlo {\n add = [\n \"X-OK\",\n \"auth PLAIN LOGIN\" ]\n}\n"),
	    "F:6: ehlo.add: the proxy cannot offer auth", "ehlo.add auth, case-insensitive");
	is_str(load_err(BASE "ehlo { add = \"XCLIENT ADDR\" }\n"),
	    "F:3: ehlo.add: the proxy cannot offer XCLIENT", "ehlo.add XCLIENT");
	is_str(load_err(BASE "ehlo { add = \"BURL imap\" }\n"),
	    "F:3: ehlo.add: the proxy cannot offer BURL", "ehlo.add BURL");
	is_str(load_err(BASE "ehlo { add = \"SIZE 1000\" }\n"),
	    "F:3: ehlo.add: SIZE is set with ehlo.size, not ehlo.add", "ehlo.add SIZE");
	is_str(load_err(BASE "ehlo { add = \"X_BAD\" }\n"),
	    "F:3: ehlo.add: bad entry \"X_BAD\" (expected KEYWORD [params], the keyword of "
	    "letters, digits and '-')", "ehlo.add bad keyword");
	is_str(load_err(BASE "ehlo { add = \"-X\" }\n"),
	    "F:3: ehlo.add: bad entry \"-X\" (expected KEYWORD [params], the keyword of "
	    "letters, digits and '-')", "ehlo.add keyword starting with '-'");
	is_str(load_err(BASE "ehlo { add = \"X-A  1\" }\n"),
	    "F:3: ehlo.add: bad parameters in \"X-A  1\" (printable ASCII words separated "
	    "by single spaces)", "ehlo.add double space");
	is_str(load_err(BASE "ehlo { add = \"X-A 1\\r\\n\" }\n"),
	    "F:3: ehlo.add: bad parameters in \"X-A 1??\" (printable ASCII words separated "
	    "by single spaces)", "ehlo.add CRLF");
	is_str(load_err(BASE "ehlo { add = \"\" }\n"),
	    "F:3: ehlo.add: bad entry \"\" (expected KEYWORD [params], the keyword of "
	    "letters, digits and '-')", "ehlo.add empty");
	is_str(load_err(BASE "ehlo { remove = [ \"8BITMIME\", \"SIZE 10\" ] }\n"),
	    "F:3: ehlo.remove: bad keyword \"SIZE 10\" (expected letters, digits and '-')",
	    "ehlo.remove with a parameter");

	/* The file itself. */
	{
		char err[256];

		ok(config_load("/nonexistent/smtpchain.conf", err, sizeof(err)) == NULL,
		    "missing file");
		is_str(err, "/nonexistent/smtpchain.conf: No such file or directory",
		    "missing file message");
	}
}

/* config_parse_addr on its own. */
static void
test_addr(void)
{
	static const char *const good[] = {
		"127.0.0.1:25", "0.0.0.0:1", "255.255.255.255:65535", "[::1]:10025",
		"[::]:25", "[2001:db8::1]:587", "[::ffff:192.0.2.1]:25",
		"[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535",
	};
	static const char *const bad[] = {
		"", ":", "127.0.0.1", "127.0.0.1:", ":25", "127.0.0.1:0", "127.0.0.1:65536",
		"127.0.0.1:99999", "127.0.0.1:+25", "127.0.0.1:-1", "127.0.0.1:25x",
		"127.0.0.1:000025", "127.1:25", "256.0.0.1:25", "localhost:25", "::1:25",
		"[::1]", "[::1]25", "[::1]:", "[]:25", "[127.0.0.1]:25", "[::1:25",
		"[fe80::1%eth0]:25", " 127.0.0.1:25", "127.0.0.1 :25",
		"[0000:0000:0000:0000:0000:0000:0000:0000:0000]:25",
		"[::1]:25:25",
	};
	struct config_addr a;
	char name[128];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		memset(&a, 0xa5, sizeof(a));
		a.line = 7;
		snprintf(name, sizeof(name), "good address %s", good[i]);
		ok(config_parse_addr(good[i], &a) == 0, name);
		is_str(a.text, good[i], "text kept");
		is_int(a.line, 7, "line left alone");
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(name, sizeof(name), "bad address '%s'", bad[i]);
		ok(config_parse_addr(bad[i], &a) == -1, name);
	}
	ok(config_parse_addr("[::1]:25", &a) == 0 &&
	    a.sslen == sizeof(struct sockaddr_in6) &&
	    ntohs(((struct sockaddr_in6 *)&a.ss)->sin6_port) == 25, "IPv6 port set");
}

/* The network keys of issue 6: proxy_protocol listeners. */
static void
test_net(void)
{
	struct config *cfg;

	cfg = load("listen = [ \"127.0.0.1:25\", { address = \"127.0.0.1:10025\"; proxy_protocol = true; },\n"
	    "  { proxy_protocol = false; address = \"[::1]:10025\"; } ];\n"
	    "backend = \"127.0.0.1:2525\";\ntimeout { proxy_protocol = 3; }\n");
	ok(cfg != NULL, "proxy_protocol listeners load");
	if (cfg != NULL) {
		is_int(cfg->nlisten, 3, "three listeners");
		ok(!cfg->listen[0].proxy_protocol, "a string entry: no PROXY header");
		ok(cfg->listen[1].proxy_protocol, "proxy_protocol = true");
		is_str(cfg->listen[1].text, "127.0.0.1:10025", "its address");
		ok(!cfg->listen[2].proxy_protocol, "proxy_protocol = false, before the address");
		is_int(cfg->timeout.proxy_protocol, 3, "timeout.proxy_protocol");
		config_free(cfg);
	}
	cfg = load(BASE);
	if (cfg != NULL) {
		is_int(cfg->timeout.proxy_protocol, 5, "timeout.proxy_protocol defaults to 5");
		config_free(cfg);
	}
	is_str(load_err("listen = { address = \"127.0.0.1:25\"; proxy_protocol = \"yes\"; };\n"
	    "backend = \"127.0.0.1:2525\";\n"),
	    "F:1: listen: expected a boolean, got string", "proxy_protocol must be a boolean");
	is_str(load_err(BASE "timeout { proxy_protocol = 301; }\n"),
	    "F:3: timeout.proxy_protocol: 301 is out of range (1..300)", "timeout.proxy_protocol bound");

	cfg = load(BASE "limits { max_connections_per_client = 0; }\n");
	ok(cfg != NULL && cfg->limits.max_connections_per_client == 0,
	    "limits.max_connections_per_client = 0 (no limit)");
	config_free(cfg);
	cfg = load(BASE);
	ok(cfg != NULL && cfg->limits.max_connections_per_client == 50,
	    "limits.max_connections_per_client defaults to 50");
	config_free(cfg);
	is_str(load_err(BASE "limits { max_connections_per_client = 65536; }\n"),
	    "F:3: limits.max_connections_per_client: 65536 is out of range (0..65535)",
	    "limits.max_connections_per_client bound");

	/* Several backends. */
	cfg = load("listen = \"127.0.0.1:25\";\nbackend = [ \"127.0.0.1:2525\", \"[::1]:2526\" ];\n"
	    "backend_balance = \"round-robin\";\nbackend_hold_down = 0;\n");
	ok(cfg != NULL, "a list of backends loads");
	if (cfg != NULL) {
		is_int(cfg->nbackends, 2, "two backends");
		is_str(cfg->backends[0].text, "127.0.0.1:2525", "the first");
		is_str(cfg->backends[1].text, "[::1]:2526", "the second");
		is_str(cfg->backend.text, "127.0.0.1:2525", "backend is the first one");
		is_int(cfg->backend_balance, BALANCE_ROUND_ROBIN, "backend_balance round-robin");
		is_int(cfg->backend_hold_down, 0, "backend_hold_down 0");
		config_free(cfg);
	}
	cfg = load(BASE);
	if (cfg != NULL) {
		is_int(cfg->nbackends, 1, "a string: one backend");
		is_str(cfg->backends[0].text, "127.0.0.1:25", "in the list too");
		is_int(cfg->backend_balance, BALANCE_FAILOVER, "backend_balance defaults to failover");
		is_int(cfg->backend_hold_down, 30, "backend_hold_down defaults to 30");
		config_free(cfg);
	}
	is_str(load_err("listen = \"127.0.0.1:25\";\nbackend = [];\n"),
	    "F:2: backend: expected at least one entry", "backend = [] is refused");
	is_str(load_err("listen = \"127.0.0.1:25\";\nbackend = [ \"127.0.0.1:1\",\n \"127.0.0.1:1\" ];\n"),
	    "F:3: backend: \"127.0.0.1:1\" is already listed at line 2", "a backend twice is refused");
	is_str(load_err("listen = \"127.0.0.1:25\";\nbackend = [ \"127.0.0.1:1\", 2 ];\n"),
	    "F:2: backend: expected a string, got number", "a backend that is not a string");
	is_str(load_err(BASE "backend_balance = \"random\";\n"),
	    "F:3: backend_balance: expected \"failover\" or \"round-robin\", got \"random\"",
	    "backend_balance: unknown value");
}

int
main(void)
{
	test_full();
	test_defaults();
	test_sample();
	test_errors();
	test_priv();
	test_backend_tls();
	test_tls_sni();
	test_addr();
	test_net();
	return done_testing();
}
