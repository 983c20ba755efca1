/*
 * ehlo.h - the EHLO capability list: what the backend offers, and the list
 * the client is shown after the operator's rewrite (ehlo {} in the config).
 *
 * The proxy only advertises what it can carry through.  A keyword is shown to
 * the client when it is one the proxy relays (EHLO_CARRIED below), or an
 * X-keyword other than the ones the proxy owns, or the operator added it;
 * everything else the backend offers is dropped, never advertised blindly.
 */
#ifndef SMTPCHAIN_EHLO_H
#define SMTPCHAIN_EHLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Keywords relayed when both sides support them.  STARTTLS and AUTH are not
 * here yet (the TLS issue); ATRN and TURN never are (a proxy cannot reverse the
 * roles); XCLIENT and XFORWARD belong to the proxy and are never shown.
 */
#define EHLO_CARRIED \
	"SIZE", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES", \
	"PIPELINING", "CHUNKING", "ETRN", "VRFY", "EXPN", "HELP", "DELIVERBY", \
	"MT-PRIORITY", "NO-SOLICITING"

/* Keywords no config may add and no backend list may pass through. */
#define EHLO_NEVER \
	"STARTTLS", "AUTH", "XCLIENT", "XFORWARD", "ATRN", "TURN", "XEXCH50", \
	"BINARYMIME", "REQUIRETLS", "BURL"

struct ehlo_caps {
	bool		pipelining;
	bool		chunking;
	bool		smtputf8;
	bool		eightbitmime;
	bool		dsn;
	bool		enhancedstatuscodes;
	bool		size;		/* SIZE offered (with or without a value) */
	uint64_t	size_limit;	/* its value; 0 = no limit given (or not a
					   number, or past 64 bits) */
	bool		starttls;
	bool		auth;
	bool		xclient;
	bool		xforward;
};

/*
 * Read the keywords of a complete multi-line 250 EHLO reply (CRLF lines).
 * The first line is the domain, never a keyword; lines with another code
 * are skipped; for a keyword listed twice the first line counts.
 */
void ehlo_caps_parse(const char *reply, size_t len, struct ehlo_caps *caps);

struct ehlo_policy {
	const char *const *remove;	/* keywords to drop, case-insensitive */
	size_t		   nremove;
	const char *const *add;		/* "KEYWORD [params]" lines to add or replace */
	size_t		   nadd;
	uint64_t	   size;	/* SIZE cap; 0 = none */
};

/*
 * 1 if keyword (up to a space or '=') is in the list of n NUL-terminated
 * strings, case-insensitively.  Entries may carry parameters too ("SIZE
 * 100"): only their keyword is compared.  NULL entries or list are skipped.
 */
bool ehlo_keyword_in(const char *kw, size_t kwlen, const char *const *list, size_t n);

/*
 * Rewrite the backend's complete 250 EHLO reply into out (CRLF lines,
 * "250-" continuation, "250 " on the last).  The first line (the domain
 * line) is kept as it is.  Then, for each keyword line in order: dropped if
 * in pol->remove or EHLO_NEVER, or not carried (see above); replaced by an
 * add line with the same keyword; SIZE rewritten to the smaller of the
 * backend's value and pol->size (a bare "SIZE" when neither is set).  Then
 * add lines whose keyword was not there are appended in order, and "SIZE
 * pol->size" when the backend gave no SIZE, pol->size is set and SIZE is not
 * removed.  client gets what the rewritten list offers.  Returns the length
 * written, or -1 if out is too small or the reply is not a 250 reply.
 *
 * Where the above is silent, the strict reading: reply must be exactly one
 * complete 250 reply (len is its length); a backend line whose keyword is
 * not an RFC 5321 ehlo-keyword is dropped; each keyword is shown once, the
 * first time it comes; pol->remove wins over pol->add (a keyword in both is
 * never shown); an add line with an EHLO_NEVER keyword, a CR or LF, or no
 * valid keyword is ignored; an add line for SIZE stands in for the
 * backend's value and the cap still applies; a SIZE value that is not a
 * number or does not fit in 64 bits counts as no limit.  pol may be NULL (no
 * changes), client may be NULL.  A "250" domain line without text is
 * written with an empty text ("250 " CRLF).
 */
int ehlo_rewrite(const char *reply, size_t len, const struct ehlo_policy *pol,
    char *out, size_t outlen, struct ehlo_caps *client);

#endif
