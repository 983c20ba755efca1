/*
 * smtpchain/filter.h - the filter module ABI of smtpchain.
 *
 * A filter is a shared object that exports one symbol,
 *
 *	const struct sc_filter smtpchain_filter = {
 *		.abi = SC_FILTER_ABI, .size = sizeof(struct sc_filter), .name = "name", ...
 *	};
 *
 * loaded with dlopen(RTLD_NOW | RTLD_LOCAL) from module_path, in the order
 * of the filter {} blocks in smtpchain.conf.  A module built for another
 * SC_FILTER_ABI is refused at load time.  Modules never link against the
 * daemon: everything the host offers comes in struct sc_host, a table of
 * function pointers handed to init().
 *
 * Stability: both structs only ever grow at the end.  The host fills
 * sc_host.size with its size, so a module can tell whether a newer field is
 * there (SC_HOST_HAS(host, field)); the host reads sc_filter fields only up
 * to the size the module declares in sc_filter.size.
 *
 * Hooks run on the daemon's event loop and must not block.  A hook that
 * needs to wait (a network call, like the milter module) returns
 * SC_PENDING and later calls host->resume(ctx, verdict) exactly once, from
 * the loop's thread; abort() and close() cancel a pending hook: after them
 * the module must not call resume() for it.  A NULL hook means "not
 * interested".
 *
 * Hooks added after ABI 1 sit at the end of struct sc_filter (unknown);
 * the host calls one only when the module's sc_filter.size covers it
 * (SC_FILTER_HAS), so a module built against an older header keeps working.
 *
 * Privileges: init() runs in the worker before it gives up root, outside
 * any chroot, so a module can read its files there (and keep descriptors
 * open).  Every hook and fini() run after the drop: as the configured
 * `user` and its one group, no capabilities, no_new_privs, inside `chroot`
 * if set.  No root comes back; a file a hook writes must belong to that
 * user, and a unix socket it connects to must be writable by it
 * (smtpchain-filter(3), smtpchain.conf(5)).
 *
 * Strings handed to hooks are NUL-terminated and valid only during the call.
 * Header names and values are passed as they are in the message: the value
 * starts after the colon (leading space kept) and keeps its folding (CRLF
 * followed by white space) but not its final CRLF.
 */
#ifndef SMTPCHAIN_FILTER_H
#define SMTPCHAIN_FILTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SC_FILTER_ABI	1

/* What a hook answers. */
enum sc_verdict {
	SC_CONTINUE = 0,	/* go on to the next filter */
	SC_ACCEPT,		/* skip the rest of the chain for this message
				   (at connect/helo: for the whole session) */
	SC_REJECT,		/* 5xx: host->set_reply() text, or a default */
	SC_TEMPFAIL,		/* 4xx: likewise */
	SC_DISCARD,		/* say 250, drop the message on purpose (logged) */
	SC_QUARANTINE,		/* say 250, keep the message in quarantine_dir */
	SC_PENDING,		/* the answer comes later through host->resume() */
};

/* What the module needs to see (sc_filter.needs). */
#define SC_NEED_HEADERS	0x01	/* header/eoh hooks, header changes at eom */
#define SC_NEED_BODY	0x02	/* body hook, replace_body at eom */

/* Log levels for host->log (the daemon's own levels). */
#define SC_LOG_ERROR	0
#define SC_LOG_WARNING	1
#define SC_LOG_INFO	2
#define SC_LOG_DEBUG	3

struct sc_ctx;		/* one session as a filter sees it; opaque */
struct sc_options;	/* the filter's own config block; opaque */

struct sc_host {
	uint32_t	 abi;		/* SC_FILTER_ABI */
	uint32_t	 size;		/* sizeof(struct sc_host) of the host */

	/*
	 * Options, during init() only.  Each returns 0 and sets *out, 1 when
	 * the key is absent (*out untouched), or -1 when it has the wrong type
	 * (the host has then recorded 'FILE:LINE: filter "NAME": KEY: ...'
	 * and the load fails whatever init() returns).  Every key the module
	 * does not read is an error after init() ("unknown key"), so typos do
	 * not go unnoticed.  Strings and arrays returned stay valid until the
	 * module's fini() has run: a module may keep them.  An empty list
	 * gives n = 0 and a non-NULL array.  A dotted key names a member of
	 * an object in the block: "timeout.eom" reads `timeout { eom = 300; }`
	 * (hosts before this was added answer 1, absent, for such keys).
	 */
	int	(*opt_string)(const struct sc_options *o, const char *key, const char **out);
	int	(*opt_int)(const struct sc_options *o, const char *key, long long *out);
	int	(*opt_bool)(const struct sc_options *o, const char *key, int *out);
	/* A list of strings (a single string counts as a list of one). */
	int	(*opt_list)(const struct sc_options *o, const char *key,
		    const char *const **out, size_t *n);
	/* Report a bad value: 'FILE:LINE: filter "NAME": KEY: message'; returns -1. */
	int	(*opt_error)(const struct sc_options *o, const char *key, const char *fmt, ...)
		    __attribute__((format(printf, 3, 4)));

	/* The module's instance (from init) and its per-session state slot. */
	void	*(*instance)(struct sc_ctx *c);
	void	**(*state)(struct sc_ctx *c);

	/*
	 * Session facts by name (NULL when unknown): "session_id",
	 * "queue_id" (the message's id, from its mail hook until its end:
	 * the session id, '.', the message's number in the session; the
	 * summary log line's msgid= and the quarantine file's name),
	 * "client_addr", "client_port", "client_name" (verified reverse name),
	 * "helo", "mail_addr", "rcpt_addr" (the one being checked, in rcpt),
	 * "hostname" (ours), "daemon_addr" (the address the client connected
	 * to; after a PROXY header, the destination the header names),
	 * "nrcpt" (accepted recipients so far), "tls_version", "cipher",
	 * "cipher_bits" (inside TLS), "auth_authen", "auth_type" (after AUTH),
	 * "auth_author" (MAIL's AUTH= parameter, during the mail hook); with
	 * tls.ask_client_cert, "verify" (OK, FAIL, NO: none sent; NONE: not
	 * asked) and "cert_subject", "cert_issuer" (the CommonNames of the
	 * client's certificate, only when it verified).
	 */
	const char *(*get)(struct sc_ctx *c, const char *name);

	void	(*log)(struct sc_ctx *c, int level, const char *fmt, ...)
		    __attribute__((format(printf, 3, 4)));

	/*
	 * The reply for a REJECT or TEMPFAIL verdict: code 4xx or 5xx matching
	 * the verdict, enhanced "x.y.z" or NULL, text; lines of a multi-line
	 * reply separated by '\n'.  Returns 0, or -1 if the reply is invalid.
	 */
	int	(*set_reply)(struct sc_ctx *c, int code, const char *enhanced, const char *text);

	/*
	 * Message changes, in eom only (and in a resume() for a pending eom).
	 * Header indexes count from 0 over the current header list; occurrence
	 * counts from 1 among headers of that name (case-insensitive), as in
	 * milter.  A value is everything after the colon, written exactly as
	 * given (byte for byte, as milter's SMFIP_HDR_LEADSPC expects): pass
	 * " value" for the usual "Name: value"; folding is "\r\n\t" inside it.  They take effect for the filters after this one and for
	 * what the backend receives.  Each returns 0, or -1 on a bad argument.
	 */
	int	(*add_header)(struct sc_ctx *c, const char *name, const char *value);
	int	(*insert_header)(struct sc_ctx *c, size_t index, const char *name, const char *value);
	int	(*change_header)(struct sc_ctx *c, const char *name, size_t occurrence,
		    const char *value);	/* value NULL deletes it */
	/* Replace the body: the first call starts a new body, further calls append. */
	int	(*replace_body)(struct sc_ctx *c, const void *p, size_t n);
	int	(*change_from)(struct sc_ctx *c, const char *addr, const char *params);
	int	(*add_rcpt)(struct sc_ctx *c, const char *addr, const char *params);
	int	(*del_rcpt)(struct sc_ctx *c, const char *addr);

	/* The answer to a hook that returned SC_PENDING (once, on the loop). */
	void	(*resume)(struct sc_ctx *c, enum sc_verdict v);

	/* The daemon's libuv loop (a uv_loop_t *), for modules doing their own I/O. */
	void	*(*loop)(struct sc_ctx *c);
	void	*(*loop_global)(void);

	/* --- added after ABI 1: check with SC_HOST_HAS(host, field) -------- */

	/*
	 * In eom, as change_header(), for the header at index (from 0 over the
	 * current list), which must have that name (case-insensitive): value
	 * NULL deletes it.  -1 if there is no such header at index.  A module
	 * that noted indexes in its header hook and changes them last first
	 * costs the host a walk of the list in all, where change_header() by
	 * name and occurrence may walk it once per change.
	 */
	int	(*change_header_at)(struct sc_ctx *c, size_t index, const char *name,
		    const char *value);
};

/* Whether a host table has a field (for fields added after ABI 1). */
#define SC_HOST_HAS(h, field) \
	((h)->size >= offsetof(struct sc_host, field) + sizeof((h)->field))

struct sc_filter {
	uint32_t	 abi;		/* SC_FILTER_ABI */
	uint32_t	 size;		/* sizeof(struct sc_filter) when built */
	const char	*name;
	uint32_t	 needs;		/* SC_NEED_* */

	/*
	 * Once per filter {} block, at start-up and for `smtpchain -t`: read
	 * the options, set *instance.  Returns 0, or -1 with a message in err
	 * (or after host->opt_error).  Both init and fini may be NULL.  The
	 * host reads `needs` and the hook pointers after init() returns.
	 */
	int	(*init)(const struct sc_host *host, const struct sc_options *o,
		    void **instance, char *err, size_t errlen);
	void	(*fini)(void *instance);

	/* Session and message hooks, in protocol order; each may be NULL. */
	enum sc_verdict	(*connect)(struct sc_ctx *c);
	enum sc_verdict	(*helo)(struct sc_ctx *c, const char *name);
	enum sc_verdict	(*mail)(struct sc_ctx *c, const char *addr, const char *params);
	/* Per recipient: REJECT/TEMPFAIL refuse this recipient only. */
	enum sc_verdict	(*rcpt)(struct sc_ctx *c, const char *addr, const char *params);
	enum sc_verdict	(*data)(struct sc_ctx *c);
	enum sc_verdict	(*header)(struct sc_ctx *c, const char *name, const char *value);
	enum sc_verdict	(*eoh)(struct sc_ctx *c);
	enum sc_verdict	(*body)(struct sc_ctx *c, const unsigned char *p, size_t n);
	enum sc_verdict	(*eom)(struct sc_ctx *c);
	/* The message ended without an outcome from this filter (RSET, drop, another filter). */
	void		(*abort)(struct sc_ctx *c);
	/* The session is over: free what *state points to. */
	void		(*close)(struct sc_ctx *c);

	/* --- added after ABI 1: used only when size covers them ----------- */

	/*
	 * A command line whose verb the proxy does not know (line without its
	 * CRLF), at any point of the session, before it is relayed to the
	 * backend (which then answers it, usually 502).  REJECT / TEMPFAIL
	 * answer the client with set_reply() text (default "550 5.7.1 Command
	 * rejected" / "451 4.7.1 Try again later") and the backend never sees
	 * the line; a 421 reply closes the session.  CONTINUE and ACCEPT relay
	 * it (ACCEPT skips the later filters for this command only).  DISCARD
	 * and QUARANTINE count for the message under way, and are ignored
	 * outside a transaction.  Milter's SMFIC_UNKNOWN.
	 */
	enum sc_verdict	(*unknown)(struct sc_ctx *c, const char *line);
};

/* Whether a module's descriptor has a field (for hooks added after ABI 1). */
#define SC_FILTER_HAS(d, field) \
	((d)->size >= offsetof(struct sc_filter, field) + sizeof((d)->field))

/* What a module exports. */
#define SC_FILTER_SYMBOL	"smtpchain_filter"

#ifdef __cplusplus
}
#endif

#endif
