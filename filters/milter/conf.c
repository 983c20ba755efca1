/*
 * conf.c - a milter filter {} block's options (see milter.c's SYNOPSIS):
 * socket, default_action, idle_connections, timeout { ... } (or the flat
 * timeout_*), macros_*; each checked, with the key named in the error.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "conf.h"

#define DEFAULT_TIMEOUT_CONNECT	30	/* seconds */
#define DEFAULT_TIMEOUT_COMMAND	30
#define DEFAULT_TIMEOUT_CONTENT	300
#define DEFAULT_TIMEOUT_EOM	300
#define MAX_TIMEOUT		86400
#define DEFAULT_IDLE		4	/* idle connections kept per filter {} block */
#define MAX_IDLE		64

const char *const fail_action_names[ACT_DEFAULT] = {
	"tempfail", "accept", "reject", "quarantine", "shutdown",
};

/*
 * socket: "inet:HOST:PORT", "inet:PORT@HOST", "inet6:[ADDR]:PORT",
 * "inet6:ADDR:PORT", "inet6:PORT@ADDR", "unix:/path", "local:/path";
 * numeric addresses only.
 */
static int
parse_socket(const struct sc_host *host, struct milter_conf *conf, const struct sc_options *o,
    const char *s)
{
	char hostpart[128], portpart[16];
	const char *rest, *at, *colon;
	bool v6;
	int port, rc;

	if (strncmp(s, "unix:", 5) == 0 || strncmp(s, "local:", 6) == 0) {
		conf->addr.kind = CHANNEL_UNIX;
		conf->addr.path = strchr(s, ':') + 1;
		if (conf->addr.path[0] != '/')
			return host->opt_error(o, "socket", "\"%s\": expected an absolute path", s);
		return 0;
	}
	if (strncmp(s, "inet:", 5) == 0)
		v6 = false, rest = s + 5;
	else if (strncmp(s, "inet6:", 6) == 0)
		v6 = true, rest = s + 6;
	else
		return host->opt_error(o, "socket", "\"%s\": expected inet:HOST:PORT, "
		    "inet6:[ADDR]:PORT or unix:/path", s);
	if ((at = strchr(rest, '@')) != NULL) {		/* libmilter's PORT@HOST */
		snprintf(portpart, sizeof(portpart), "%.*s", (int)(at - rest), rest);
		snprintf(hostpart, sizeof(hostpart), "%s", at + 1);
	} else if (v6 && rest[0] == '[') {
		const char *rbracket = strchr(rest, ']');

		if (rbracket == NULL || rbracket[1] != ':')
			return host->opt_error(o, "socket", "\"%s\": expected inet6:[ADDR]:PORT", s);
		snprintf(hostpart, sizeof(hostpart), "%.*s", (int)(rbracket - rest - 1), rest + 1);
		snprintf(portpart, sizeof(portpart), "%s", rbracket + 2);
	} else {
		if ((colon = strrchr(rest, ':')) == NULL)
			return host->opt_error(o, "socket", "\"%s\": no port", s);
		snprintf(hostpart, sizeof(hostpart), "%.*s", (int)(colon - rest), rest);
		snprintf(portpart, sizeof(portpart), "%s", colon + 1);
	}
	if (!v6 && hostpart[0] == '[' && hostpart[strlen(hostpart) - 1] == ']') {
		memmove(hostpart, hostpart + 1, strlen(hostpart));
		hostpart[strlen(hostpart) - 1] = '\0';
	}
	if ((port = channel_parse_port(portpart)) < 0)
		return host->opt_error(o, "socket", "\"%s\": bad port \"%s\"", s, portpart);
	conf->addr.kind = CHANNEL_INET;
	if (v6)
		rc = uv_ip6_addr(hostpart, port, (struct sockaddr_in6 *)&conf->addr.addr);
	else
		rc = uv_ip4_addr(hostpart, port, (struct sockaddr_in *)&conf->addr.addr);
	if (rc != 0)
		return host->opt_error(o, "socket", "\"%s\": \"%s\" is not a numeric IPv%c address",
		    s, hostpart, v6 ? '6' : '4');
	return 0;
}

/*
 * A timeout in seconds, kept in ms: timeout { NAME = ...; }, or the older
 * flat timeout_NAME (the block wins when both are there).
 */
static int
opt_timeout(const struct sc_host *host, const struct sc_options *o, const char *name, uint64_t *ms,
    long long dflt)
{
	char nested[32], flat[32];
	const char *key = NULL;
	long long v = dflt;
	int rc;

	snprintf(nested, sizeof(nested), "timeout.%s", name);
	snprintf(flat, sizeof(flat), "timeout_%s", name);
	if ((rc = host->opt_int(o, flat, &v)) == -1)
		return -1;
	if (rc == 0)
		key = flat;
	if ((rc = host->opt_int(o, nested, &v)) == -1)
		return -1;
	if (rc == 0)
		key = nested;
	if (v < 1 || v > MAX_TIMEOUT)
		return host->opt_error(o, key, "%lld is out of range (1..%d seconds)", v, MAX_TIMEOUT);
	*ms = (uint64_t)v * 1000;
	return 0;
}

int
milter_conf_new(const struct sc_host *h, const struct sc_options *o, struct milter_conf **out,
    char *err, size_t errlen)
{
	static const struct {
		const char	*key;
		int		 stage;
		const char	*dflt;
	} macro_opts[] = {
		{ "macros_connect", SMFIM_CONNECT, "j {daemon_name} {daemon_addr} v _ "
		    "{client_addr} {client_port} {client_name}" },
		{ "macros_helo", SMFIM_HELO, "{tls_version} {cipher} {cipher_bits} "
		    "{cert_subject} {cert_issuer}" },
		{ "macros_mail", SMFIM_ENVFROM, "i {auth_type} {auth_authen} {auth_author} "
		    "{mail_addr} {mail_host} {mail_mailer}" },
		{ "macros_rcpt", SMFIM_ENVRCPT, "i {rcpt_addr} {rcpt_host} {rcpt_mailer}" },
		{ "macros_data", SMFIM_DATA, "i" },
		{ "macros_eoh", SMFIM_EOH, "i" },
		{ "macros_eom", SMFIM_EOM, "i" },
	};
	struct milter_conf *conf;
	const char *s, *const *list;
	long long idle;
	size_t n;
	int rc;

	if ((conf = calloc(1, sizeof(*conf))) == NULL) {
		snprintf(err, errlen, "milter: out of memory");
		return -1;
	}
	if ((rc = h->opt_string(o, "socket", &conf->socket)) == 1) {
		snprintf(err, errlen, "milter: missing key \"socket\"");
		goto fail;
	}
	if (rc == -1 || parse_socket(h, conf, o, conf->socket) == -1)
		goto fail;
	conf->default_action = ACT_TEMPFAIL;
	if ((rc = h->opt_string(o, "default_action", &s)) == -1)
		goto fail;
	if (rc == 0) {
		size_t i;

		for (i = 0; i < ACT_DEFAULT; i++)
			if (strcmp(s, fail_action_names[i]) == 0)
				break;
		if (i == ACT_DEFAULT) {
			h->opt_error(o, "default_action", "\"%s\": expected tempfail, accept, "
			    "reject, quarantine or shutdown", s);
			goto fail;
		}
		conf->default_action = (enum fail_action)i;
	}
	conf->pool.max = DEFAULT_IDLE;
	if ((rc = h->opt_int(o, "idle_connections", &idle)) == -1)
		goto fail;
	if (rc == 0 && (idle < 0 || idle > MAX_IDLE)) {
		h->opt_error(o, "idle_connections", "%lld is out of range (0..%d)", idle, MAX_IDLE);
		goto fail;
	}
	if (rc == 0)
		conf->pool.max = (unsigned)idle;
	if (opt_timeout(h, o, "connect", &conf->timeout_connect, DEFAULT_TIMEOUT_CONNECT) ||
	    opt_timeout(h, o, "command", &conf->timeout_command, DEFAULT_TIMEOUT_COMMAND) ||
	    opt_timeout(h, o, "content", &conf->timeout_content, DEFAULT_TIMEOUT_CONTENT) ||
	    opt_timeout(h, o, "eom", &conf->timeout_eom, DEFAULT_TIMEOUT_EOM))
		goto fail;
	for (size_t i = 0; i < sizeof(macro_opts) / sizeof(macro_opts[0]); i++) {
		struct namelist *l = &conf->macros[macro_opts[i].stage];

		if ((rc = h->opt_list(o, macro_opts[i].key, &list, &n)) == -1)
			goto fail;
		if (rc == 1) {
			if (names_add(l, macro_opts[i].dflt) != 0)
				goto nomem;
			continue;
		}
		for (size_t j = 0; j < n; j++)
			if (names_add(l, list[j]) != 0)
				goto nomem;
	}
	*out = conf;
	return 0;
nomem:
	snprintf(err, errlen, "milter: out of memory");
fail:
	milter_conf_free(conf);
	return -1;
}

void
milter_conf_free(struct milter_conf *conf)
{
	if (conf == NULL)
		return;
	/*
	 * Idle connections: the daemon closed every handle and ran its loop to
	 * the end before unloading modules, so only their memory is left.
	 */
	channel_pool_free(&conf->pool);
	for (int i = 0; i < MC_NSTAGES; i++)
		names_free(&conf->macros[i]);
	free(conf);
}

