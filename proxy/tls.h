/*
 * tls.h - TLS with OpenSSL over memory BIOs, on both sides of a session:
 * toward the client in the server role (STARTTLS, RFC 3207, and implicit
 * TLS, RFC 8314), toward the backend in the client role (backend_tls: our
 * STARTTLS to Postfix or Exim).
 *
 * No sockets here: the session feeds the ciphertext it read, takes the
 * plaintext out, hands plaintext in and drains the ciphertext to its output
 * queue.  So TLS runs on the libuv loop like everything else and the
 * session keeps owning all I/O, timeouts and backpressure.  A struct
 * tls_conn works the same in either role.
 */
#ifndef SMTPCHAIN_TLS_H
#define SMTPCHAIN_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "iobuf.h"

struct tls_server;	/* the certificate, key and settings: one per process */
struct tls_conn;	/* one client connection */

/*
 * The server contexts from cfg->tls (certificate chain, key, protocols,
 * ciphers, session resumption, client certificates), one more per
 * tls.sni entry, chosen by the client's SNI.  NULL with a message in err
 * when a file cannot be used or a key does not match its certificate.
 * It keeps nothing of cfg: a reloaded config may free the old one.
 */
struct tls_server *tls_server_new(const struct config *cfg, char *err, size_t errlen);
void	tls_server_free(struct tls_server *ts);
/*
 * Session ticket keys, rotated as Postfix's tlsmgr does: a ring of two keys
 * in memory shared by every process, so a session made on one worker
 * resumes on another.  The master makes it before it forks
 * (tls_ticket_keys_init: 0, or -1 with errno) and makes a new key every
 * tls.ticket_key_rotation seconds and at each reload
 * (tls_ticket_keys_rotate: the new key's number).  Tickets are issued
 * under the newest key; one under the previous key still resumes (and is
 * replaced by a ticket under the newest); older ones get a full handshake.
 * Contexts made after tls_ticket_keys_init use the ring.
 */
int	tls_ticket_keys_init(void);
unsigned long tls_ticket_keys_rotate(void);

struct tls_conn *tls_conn_new(struct tls_server *ts);

/*
 * The client role, for backend_tls.  One context per process, made at
 * start-up from cfg (TLS 1.2 or later; trust anchors from backend_tls_ca,
 * else the system's store) and freed at exit; both from main.c.  0, or -1
 * with a message in err when the CA file cannot be used.
 */
int	tls_client_init(const struct config *cfg, char *err, size_t errlen);
void	tls_client_free(void);
/*
 * A connection in the client role, its ClientHello already waiting to be
 * drained.  name (may be NULL) is sent as SNI and is the name the
 * certificate is checked for; with verify, the handshake fails unless the
 * certificate chains to a trusted CA and carries name.
 */
struct tls_conn *tls_conn_connect(const char *name, bool verify);

void	tls_conn_free(struct tls_conn *tc);

/* Ciphertext from the client. */
void	tls_conn_feed(struct tls_conn *tc, const char *p, size_t n);
/*
 * Plaintext for the session: > 0 bytes, 0 when more input is needed, -1 on
 * a fatal error or the peer's close_notify (the reason in tls_conn_error).
 * Call it until it returns 0: plaintext may wait inside.
 */
ssize_t	tls_conn_read(struct tls_conn *tc, char *buf, size_t n);
/* Whether plaintext is waiting inside (call tls_conn_read again). */
bool	tls_conn_readable(struct tls_conn *tc);
/* The secret bits of the cipher once established ({cipher_bits}). */
int	tls_conn_cipher_bits(const struct tls_conn *tc);
/* Plaintext to the client; kept until the handshake allows it to go.  0 or -1. */
int	tls_conn_write(struct tls_conn *tc, const char *p, size_t n);
/* Move the ciphertext waiting to go (handshake, records, alerts) to q. */
void	tls_conn_drain(struct tls_conn *tc, struct outq *q);
/* Send close_notify (drain it afterwards); nothing may be written after it. */
void	tls_conn_close(struct tls_conn *tc);
/* Whether the connection failed (a read or a write returned -1). */
bool	tls_conn_failed(const struct tls_conn *tc);

bool	tls_conn_established(const struct tls_conn *tc);
const char *tls_conn_version(const struct tls_conn *tc);	/* "TLSv1.3" */
const char *tls_conn_cipher(const struct tls_conn *tc);
const char *tls_conn_error(const struct tls_conn *tc);		/* the last failure, for logs */
/*
 * The client certificate (server role, tls.ask_client_cert): "NONE" when
 * none was asked for, "NO" when the client sent none, "OK" when it chains
 * to tls.client_ca, else "FAIL" (sendmail's {verify} values).
 */
const char *tls_conn_peer_verify(struct tls_conn *tc);
/* The CommonName of its subject and of its issuer, or NULL (verified or not). */
const char *tls_conn_peer_subject(struct tls_conn *tc);
const char *tls_conn_peer_issuer(struct tls_conn *tc);
/*
 * For the summary log line: " tls=VERSION/CIPHER", and when a client
 * certificate was asked for " verify=OK|FAIL|NO" and, if one came,
 * cert_subject="CN" cert_issuer="CN" (logged verified or not).
 */
void	tls_conn_summary(struct tls_conn *tc, char *buf, size_t len);
/* Why the peer's certificate is not trusted for the name, or NULL when it is. */
const char *tls_conn_verify_error(const struct tls_conn *tc);

#endif
