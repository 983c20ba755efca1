/*
 * config.h - the daemon's configuration, as loaded from smtpchain.conf.
 *
 * config_load() reads a file in UCL syntax (see cfgparse.h), checks every key
 * against the schema below and fills a struct config.  Errors are reported as
 * "file:line: what is wrong" in the caller's buffer; unknown keys, wrong types
 * and bad addresses are all errors.  The struct is immutable once loaded and
 * shared by every session.  The filter {} blocks are only checked for a
 * "module" key here; module.c hands the rest of each block to its module.
 */
#ifndef SMTPCHAIN_CONFIG_H
#define SMTPCHAIN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "log.h"

struct config_addr {
	struct sockaddr_storage	ss;		/* parsed address, port set */
	socklen_t		sslen;
	char			text[64];	/* as written: "127.0.0.1:25", "[::1]:25" */
	int			line;		/* line in the config file, for messages */
	bool			implicit_tls;	/* listen { tls = "implicit"; }: TLS from the first byte */
	bool			proxy_protocol;	/* listen { proxy_protocol = true; }: a PROXY v1/v2
						   header first, from a load balancer */
};

struct config_strlist {
	char		**v;
	size_t		  n;
};

struct cfg_node;

/* "backend_tls": TLS from the proxy to the backend (STARTTLS, RFC 3207). */
enum backend_tls_mode {
	BACKEND_TLS_NONE = 0,	/* plaintext (the default) */
	BACKEND_TLS_MAY,	/* STARTTLS when offered; the certificate is not checked */
	BACKEND_TLS_ENCRYPT,	/* STARTTLS required, certificate verified against
				   backend_tls_ca for backend_tls_name; else 421 */
};

#define CONFIG_MAX_BACKENDS	32

/* "backend_balance": which backend a new session tries first. */
enum backend_balance {
	BALANCE_FAILOVER = 0,	/* always the first; the next ones only when it fails */
	BALANCE_ROUND_ROBIN,	/* each in turn; failover from there */
};

/* One tls.sni entry: the certificate served to clients asking for these names. */
struct config_tls_sni {
	struct config_strlist	 names;		/* "mx.example.org", "*.example.net"; lower case */
	char			*cert;		/* PEM chain */
	char			*key;		/* PEM key */
	int			 line;		/* of the entry, for messages */
};

/* One filter {} block: which module, and the options it is given. */
struct config_filter {
	char			*module;	/* "module": a name (module_path/NAME.so), or a path if it has a '/' */
	char			*name;		/* "name": what logs, the quarantine header and
						   metrics call it; NULL = the module's own name
						   (module.c makes it unique) */
	int			 line;		/* of the filter {} block */
	struct cfg_node		*block;		/* the block's subtree (owned by struct config):
						   every key but "module" and "name" is the
						   module's option */
};

/*
 * Each field's key, with its type, range and default, is a row of the
 * tables in config.c; man/smtpchain.conf.5 documents them.
 */
struct config {
	char			*file;		/* path it was loaded from */
	char			*hostname;	/* "hostname": our name in our own replies; default gethostname() */

	struct config_addr	*listen;	/* "listen": string or list of strings; at least one */
	size_t			 nlisten;
	struct config_addr	 backend;	/* "backend": required; the first one when a list */
	struct config_addr	*backends;	/* "backend": string or list of strings, in order */
	size_t			 nbackends;	/* 1..CONFIG_MAX_BACKENDS */
	enum backend_balance	 backend_balance;/* "backend_balance": "failover", "round-robin" */
	unsigned		 backend_hold_down;/* "backend_hold_down": seconds a failed backend is
						   skipped; 0 = never */

	struct {
		enum log_level	level;		/* log.level: error|warning|info|debug */
		bool		transcript;	/* log.transcript */
		bool		transcript_body;/* log.transcript_body: log body lines too */
		bool		syslog;		/* log.syslog */
	} log;

	struct {				/* seconds; all > 0 */
		unsigned	command;	/* timeout.command */
		unsigned	data;		/* timeout.data */
		unsigned	backend;	/* timeout.backend */
		unsigned	connect;	/* timeout.connect */
		unsigned	shutdown;	/* timeout.shutdown */
		unsigned	proxy_protocol;	/* timeout.proxy_protocol: for the PROXY header; 1..300 */
		unsigned	module_check;	/* timeout.module_check: a reload's (or the start's) check
						   of the modules, then SIGKILL; 1..3600 */
	} timeout;

	struct {
		unsigned	max_connections;	/* limits.max_connections: all processes */
		unsigned	client_ipv6_prefix_length;/* limits.client_ipv6_prefix_length:
						   IPv6 clients counted by network */
		unsigned	max_connections_per_client;/* limits.max_connections_per_client: from one
							   address, all processes; 0 = no limit */
		uint64_t	max_message_size;	/* limits.max_message_size: 0 = none */
		unsigned	max_recipients;		/* limits.max_recipients */
		unsigned	max_refused_recipients;	/* limits.max_refused_recipients: a session
							   without a delivered message */
		unsigned	max_line_length;	/* limits.max_line_length: command line incl. CRLF; 512..65536 */
	} limits;

	struct {
		struct config_strlist	remove;	/* ehlo.remove: keywords, case-insensitive */
		struct config_strlist	add;	/* ehlo.add: "KEYWORD [params]" lines */
		uint64_t		size;	/* ehlo.size: 0 = not set */
	} ehlo;

	struct {				/* "tls {}": present = STARTTLS offered */
		bool		enabled;
		char		*cert;		/* tls.cert: PEM chain, required in tls {} */
		char		*key;		/* tls.key: PEM key, required in tls {} */
		char		*protocols;	/* tls.protocols: "TLSv1.2:TLSv1.3" (default) */
		char		*ciphers;	/* tls.ciphers: OpenSSL list for TLS 1.2; default OpenSSL's */
		struct config_tls_sni *sni;	/* tls.sni: certificates chosen by SNI; the
						   default (cert, key) when none matches */
		size_t		 nsni;
		bool		 ask_client_cert;/* tls.ask_client_cert: ask (never require) a
						   client certificate */
		char		*client_ca;	/* tls.client_ca: CA file (PEM) client
						   certificates are verified against */
		unsigned	 ticket_key_rotation;/* tls.ticket_key_rotation: seconds between
						   new session ticket keys */
	} tls;

	enum backend_tls_mode	backend_tls;	/* "backend_tls": "none", "may", "encrypt" */
	char			*backend_tls_ca;/* "backend_tls_ca": CA file (PEM) for "encrypt";
						   default NULL = the system's store */
	char			*backend_tls_name;/* "backend_tls_name": the name the backend's
						   certificate must carry, also sent as SNI;
						   required with "encrypt" */

	bool			auth_requires_tls;	/* "auth_requires_tls": AUTH only inside TLS */
	bool			xclient;	/* "xclient" */
	bool			xforward;	/* "xforward" */

	struct config_filter	*filters;	/* "filter": one per filter {} block, in file order */
	size_t			 nfilters;
	char			*module_path;	/* "module_path": where modules named without a '/' are */
	char			*quarantine_dir;/* "quarantine_dir": where SC_QUARANTINE messages go */
	char			*spool_dir;	/* "spool_dir": where a message held for filters spills
						   to an unlinked temp file */
	uint64_t		 spool_memory;	/* limits.spool_memory: bytes of a held body kept in
						   memory before it spills; 4096..67108864 */
	uint64_t		 max_header_size;/* limits.max_header_size: bytes of a held message's
						   header section; 1024..67108864 */

	unsigned		 workers;	/* "workers": worker processes, 1..32; default the
						   number of online CPUs (at most 64) */
	struct {				/* "metrics {}": present = the master serves HTTP */
		bool		   enabled;
		struct config_addr listen;	/* metrics.listen: required in metrics {} */
	} metrics;

	struct {				/* privilege separation (privsep.c) */
		char	*user;		/* "user": the account workers run as; NULL = unset
					   (refused when started as root; see privsep.h) */
		char	*group;		/* "group": their only group; default user's login group */
		char	*chroot;	/* "chroot": workers chroot here; NULL = none */
		uid_t	 uid;		/* of user, looked up at load (0 when unset) */
		gid_t	 gid;		/* of group, else of user's login group */
		int	 line;		/* of "user", for messages */
	} priv;

	struct cfg_node		*tree;		/* the parsed file, kept for filters[].block */
};

/*
 * Load and check a config file.  On success returns a new config (free with
 * config_free); on failure returns NULL and writes one line, without a
 * trailing newline, into err: "FILE:LINE: message", or "FILE: message" when
 * no line applies (unreadable file, missing required key).
 */
struct config *config_load(const char *path, char *err, size_t errlen);
void config_free(struct config *cfg);

/* Parse "host:port", "[v6]:port"; 0 ok, -1 bad (numeric addresses only). */
int config_parse_addr(const char *text, struct config_addr *out);

#endif
