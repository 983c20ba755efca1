/*
 * tls.c - TLS with OpenSSL over memory BIOs (see tls.h): the server role
 * toward clients, the client role toward the backend.
 *
 * The read BIO takes what the session read from the socket; the write BIO
 * collects what must go out, which the session drains into its output
 * queue.  Plaintext written before the handshake is done waits in a small
 * buffer and goes out as soon as OpenSSL accepts it.
 *
 * The client role's context is process-wide (client_ctx below): made once
 * at start-up by tls_client_init(), shared by every backend connection.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls.h"

struct tls_server {
	SSL_CTX		*ctx;		/* the default certificate (tls.cert, tls.key) */
	struct tls_sni {
		SSL_CTX		*ctx;
		char		**names;	/* lower case; "*.d" = one label before d */
		size_t		 nnames;
	}		*sni;		/* tls.sni, in config order: the first match wins */
	size_t		 nsni;
	bool		 ask_client_cert;
};

struct tls_conn {
	SSL		*ssl;
	BIO		*in;		/* ciphertext from the peer */
	BIO		*out;		/* ciphertext to the peer */
	struct iobuf	 pending;	/* plaintext waiting for the handshake */
	const char	*peer;		/* "client" or "backend", for messages */
	bool		 failed;
	bool		 closed;	/* close_notify sent */
	bool		 peer_closed;	/* close_notify received: nothing more to read, but
					   replies may still be written (a half-close) */
	bool		 asked_cert;	/* a client certificate was asked for */
	bool		 peer_done;	/* peer_subject, peer_issuer filled in */
	char		 peer_subject[256];	/* the CN of the client's certificate */
	char		 peer_issuer[256];	/* the CN of its issuer */
	char		 error[200];
};

static SSL_CTX	*client_ctx;	/* the client role (backend_tls), see tls_client_init */

/*
 * The session ticket keys (tls.h): one shared mapping, written by the
 * master only, read by every process under a sequence count (odd while
 * the master writes; a reader that saw it change reads again).
 */
struct ticket_key {
	unsigned char	name[16];	/* in the ticket: which key made it */
	unsigned char	aes[32];	/* AES-256-CBC */
	unsigned char	hmac[32];	/* HMAC-SHA256 */
};
struct ticket_ring {
	uint64_t		seq;
	uint64_t		gen;	/* the newest key's number: key[gen % 2]; the previous key[(gen + 1) % 2] */
	struct ticket_key	key[2];
};
static struct ticket_ring *ring;	/* NULL: OpenSSL's own keys, per process */

static int	ticket_key_cb(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *,
		    EVP_MAC_CTX *, int);

/* The OpenSSL error queue's first entry as text (and the queue cleared). */
static void
ssl_error_text(char *buf, size_t len, const char *what)
{
	unsigned long e = ERR_get_error();

	if (e)
		snprintf(buf, len, "%s: %s", what, ERR_reason_error_string(e) ?
		    ERR_reason_error_string(e) : "unknown error");
	else
		snprintf(buf, len, "%s", what);
	ERR_clear_error();
}

/* "TLSv1.2" etc. to an OpenSSL version number; 0 if unknown. */
static int
tls_version_number(const char *name, size_t len)
{
	static const struct { const char *name; int v; } versions[] = {
		{ "TLSv1.2", TLS1_2_VERSION }, { "TLSv1.3", TLS1_3_VERSION },
	};

	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
		if (strlen(versions[i].name) == len && strncmp(versions[i].name, name, len) == 0)
			return versions[i].v;
	return 0;
}

/* tls.protocols ("TLSv1.2:TLSv1.3"): the lowest and highest version allowed. */
static int
tls_protocols(SSL_CTX *ctx, const char *spec, char *err, size_t errlen)
{
	int lo = 0, hi = 0;

	for (const char *p = spec; *p; ) {
		const char *colon = strchr(p, ':');
		size_t len = colon ? (size_t)(colon - p) : strlen(p);
		int v = tls_version_number(p, len);

		if (v == 0) {
			snprintf(err, errlen, "tls.protocols: unknown protocol \"%.*s\" "
			    "(TLSv1.2, TLSv1.3)", (int)len, p);
			return -1;
		}
		if (lo == 0 || v < lo)
			lo = v;
		if (v > hi)
			hi = v;
		p += len + (colon ? 1 : 0);
	}
	if (lo == 0)
		lo = hi = TLS1_3_VERSION;
	SSL_CTX_set_min_proto_version(ctx, lo);
	SSL_CTX_set_max_proto_version(ctx, hi);
	return 0;
}

/* Accept any client certificate: the verdict is kept for {verify}, never enforced. */
static int
accept_any_cert(int ok, X509_STORE_CTX *store)
{
	(void)ok;
	(void)store;
	return 1;
}

/*
 * The private key file for the certificate just loaded into ctx; an error
 * when it cannot be read or is not that certificate's key (whatever its type).
 */
static int
load_key(SSL_CTX *ctx, const char *key, const char *what, char *err, size_t errlen)
{
	X509 *cert = SSL_CTX_get0_certificate(ctx);
	EVP_PKEY *pkey = NULL;
	BIO *in = BIO_new_file(key, "r");
	char msg[600];
	int rc = -1;

	snprintf(msg, sizeof(msg), "%s.key: %s", what, key);
	if (in == NULL || (pkey = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL)) == NULL)
		ssl_error_text(err, errlen, msg);
	else if (cert == NULL || X509_check_private_key(cert, pkey) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "%s: not the key of %s.cert (key values mismatch)", msg, what);
	} else if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1)
		ssl_error_text(err, errlen, msg);
	else
		rc = 0;
	EVP_PKEY_free(pkey);
	BIO_free(in);
	return rc;
}

/*
 * One server context: the settings of the tls {} block with the
 * certificate chain cert and key (what names them in messages: "tls" or
 * "tls.sni (line N)").  Every context gets the same settings, as the
 * servername callback may switch a connection to any of them.
 */
static SSL_CTX *
server_ctx_new(const struct config *cfg, const char *cert, const char *key,
    const char *what, char *err, size_t errlen)
{
	static const unsigned char sid_ctx[] = "smtpchain";
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char msg[700];

	if (ctx == NULL) {
		ssl_error_text(err, errlen, "tls: cannot create a context");
		return NULL;
	}
	if (tls_protocols(ctx, cfg->tls.protocols ? cfg->tls.protocols : "TLSv1.2:TLSv1.3",
	    err, errlen) != 0)
		goto fail;
	if (cfg->tls.ciphers && SSL_CTX_set_cipher_list(ctx, cfg->tls.ciphers) != 1) {
		ssl_error_text(err, errlen, "tls.ciphers");
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(msg, sizeof(msg), "%s.cert: %s", what, cert);
		ssl_error_text(err, errlen, msg);
		goto fail;
	}
	if (load_key(ctx, key, what, err, errlen) != 0)
		goto fail;
	if (cfg->tls.client_ca != NULL) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls.client_ca);

		if (names == NULL ||
		    SSL_CTX_load_verify_locations(ctx, cfg->tls.client_ca, NULL) != 1) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			snprintf(msg, sizeof(msg), "tls.client_ca: %s", cfg->tls.client_ca);
			ssl_error_text(err, errlen, msg);
			goto fail;
		}
		SSL_CTX_set_client_CA_list(ctx, names);	/* the CAs named in the request */
	}
	if (cfg->tls.ask_client_cert)	/* asked, never required (no FAIL_IF_NO_PEER_CERT) */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, accept_any_cert);
	/* Resumption: the internal session cache and tickets (keys: the shared ring). */
	if (ring != NULL)
		SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* Whether an SNI name (lower case) matches a tls.sni name ("*.d" = one label before d). */
static bool
sni_name_matches(const char *pattern, const char *name)
{
	const char *dot;

	if (pattern[0] == '*' && pattern[1] == '.') {
		dot = strchr(name, '.');
		return dot != NULL && dot != name && strcmp(dot + 1, pattern + 2) == 0;
	}
	return strcmp(pattern, name) == 0;
}

/*
 * The servername callback: the client's SNI picks the tls.sni entry whose
 * context (certificate) the connection switches to; the default stays
 * when there is no SNI or no entry matches.
 */
static int
sni_select(SSL *ssl, int *alert, void *arg)
{
	const struct tls_server *ts = arg;
	const char *sent = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	char name[256];
	size_t len;

	(void)alert;
	if (sent == NULL || (len = strlen(sent)) == 0 || len >= sizeof(name))
		return SSL_TLSEXT_ERR_OK;
	for (size_t i = 0; i <= len; i++)
		name[i] = (char)tolower((unsigned char)sent[i]);
	if (name[len - 1] == '.')
		name[len - 1] = '\0';
	for (size_t i = 0; i < ts->nsni; i++)
		for (size_t j = 0; j < ts->sni[i].nnames; j++)
			if (sni_name_matches(ts->sni[i].names[j], name)) {
				SSL_set_SSL_CTX(ssl, ts->sni[i].ctx);
				return SSL_TLSEXT_ERR_OK;
			}
	return SSL_TLSEXT_ERR_OK;
}

/* A new random key: 0, or -1 with errno. */
static int
ticket_key_new(struct ticket_key *k)
{
	if (getrandom(k, sizeof(*k), 0) != (ssize_t)sizeof(*k))
		return -1;
	return 0;
}

int
tls_ticket_keys_init(void)
{
	struct ticket_ring *r;

	if (ring != NULL)
		return 0;
	r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED)
		return -1;
	if (ticket_key_new(&r->key[0]) != 0 || ticket_key_new(&r->key[1]) != 0) {
		munmap(r, sizeof(*r));
		return -1;
	}
	r->gen = 1;
	ring = r;
	return 0;
}

unsigned long
tls_ticket_keys_rotate(void)
{
	struct ticket_key k;

	if (ring == NULL || ticket_key_new(&k) != 0)
		return 0;	/* getrandom() does not fail once the pool is ready: keep the keys */
	__atomic_add_fetch(&ring->seq, 1, __ATOMIC_ACQ_REL);	/* odd: being written */
	memcpy(&ring->key[(ring->gen + 1) % 2], &k, sizeof(k));	/* the oldest goes */
	__atomic_store_n(&ring->gen, ring->gen + 1, __ATOMIC_RELEASE);
	__atomic_add_fetch(&ring->seq, 1, __ATOMIC_ACQ_REL);
	OPENSSL_cleanse(&k, sizeof(k));
	return (unsigned long)ring->gen;
}

/* The newest and the previous key, read consistently; false if the master kept writing. */
static bool
ticket_keys_read(struct ticket_key *newest, struct ticket_key *previous)
{
	for (int tries = 0; tries < 1000; tries++) {
		uint64_t seq = __atomic_load_n(&ring->seq, __ATOMIC_ACQUIRE), gen;

		if (seq % 2 != 0)
			continue;
		gen = __atomic_load_n(&ring->gen, __ATOMIC_ACQUIRE);
		memcpy(newest, &ring->key[gen % 2], sizeof(*newest));
		memcpy(previous, &ring->key[(gen + 1) % 2], sizeof(*previous));
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&ring->seq, __ATOMIC_RELAXED) == seq)
			return true;
	}
	return false;
}

/* Key the ticket's HMAC (SHA-256) with k; false on an OpenSSL error. */
static bool
ticket_hmac_init(EVP_MAC_CTX *hctx, struct ticket_key *k)
{
	OSSL_PARAM params[3];

	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k->hmac, sizeof(k->hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	return EVP_MAC_CTX_set_params(hctx, params) == 1;
}

/*
 * OpenSSL's ticket key callback (key_name: 16 bytes, iv: the cipher's IV
 * length, 16 for AES-256-CBC): encrypt under the newest key; decrypt
 * under the key the ticket names if it is the newest (1) or the previous
 * (2: OpenSSL issues a new ticket under the newest), else 0 (a full
 * handshake).  -1 on an error.
 */
static int
ticket_key_cb(SSL *ssl, unsigned char *key_name, unsigned char *iv, EVP_CIPHER_CTX *ectx,
    EVP_MAC_CTX *hctx, int enc)
{
	struct ticket_key keys[2], *k = NULL;
	int rc = -1;

	(void)ssl;
	if (!ticket_keys_read(&keys[0], &keys[1]))
		return enc ? -1 : 0;
	if (enc) {
		k = &keys[0];
		if (RAND_bytes(iv, 16) == 1 && ticket_hmac_init(hctx, k) &&
		    EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1) {
			memcpy(key_name, k->name, 16);
			rc = 1;
		}
	} else {
		for (int i = 0; i < 2 && k == NULL; i++)
			if (memcmp(key_name, keys[i].name, 16) == 0)
				k = &keys[i];
		if (k == NULL)
			rc = 0;		/* too old, or another server's */
		else if (ticket_hmac_init(hctx, k) &&
		    EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1)
			rc = k == &keys[0] ? 1 : 2;
	}
	OPENSSL_cleanse(keys, sizeof(keys));
	return rc;
}

/* The server contexts from the tls {} block: the default, then one per tls.sni entry. */
struct tls_server *
tls_server_new(const struct config *cfg, char *err, size_t errlen)
{
	struct tls_server *ts = xcalloc(1, sizeof(*ts));

	if ((ts->ctx = server_ctx_new(cfg, cfg->tls.cert, cfg->tls.key, "tls", err, errlen)) == NULL)
		goto fail;
	ts->sni = xcalloc(cfg->tls.nsni ? cfg->tls.nsni : 1, sizeof(*ts->sni));
	for (size_t i = 0; i < cfg->tls.nsni; i++) {
		const struct config_tls_sni *e = &cfg->tls.sni[i];
		char what[64];

		snprintf(what, sizeof(what), "tls.sni (line %d)", e->line);
		if ((ts->sni[i].ctx = server_ctx_new(cfg, e->cert, e->key, what, err, errlen)) == NULL)
			goto fail;
		ts->nsni++;
		ts->sni[i].names = xcalloc(e->names.n ? e->names.n : 1, sizeof(char *));
		for (size_t j = 0; j < e->names.n; j++)
			ts->sni[i].names[ts->sni[i].nnames++] = xstrdup(e->names.v[j]);
	}
	if (ts->nsni > 0) {
		SSL_CTX_set_tlsext_servername_callback(ts->ctx, sni_select);
		SSL_CTX_set_tlsext_servername_arg(ts->ctx, ts);
	}
	ts->ask_client_cert = cfg->tls.ask_client_cert;
	return ts;
fail:
	tls_server_free(ts);
	return NULL;
}

void
tls_server_free(struct tls_server *ts)
{
	if (ts == NULL)
		return;
	SSL_CTX_free(ts->ctx);
	for (size_t i = 0; i < ts->nsni; i++) {
		SSL_CTX_free(ts->sni[i].ctx);
		for (size_t j = 0; j < ts->sni[i].nnames; j++)
			free(ts->sni[i].names[j]);
		free(ts->sni[i].names);
	}
	free(ts->sni);
	free(ts);
}

/* A connection on ctx with its two memory BIOs. */
static struct tls_conn *
conn_alloc(SSL_CTX *ctx, const char *peer)
{
	struct tls_conn *tc = xcalloc(1, sizeof(*tc));

	if ((tc->ssl = SSL_new(ctx)) == NULL)
		log_fatal("tls: SSL_new failed");
	tc->in = BIO_new(BIO_s_mem());
	tc->out = BIO_new(BIO_s_mem());
	if (tc->in == NULL || tc->out == NULL)
		log_fatal("tls: BIO_new failed");
	BIO_set_mem_eof_return(tc->in, -1);	/* empty means "more to come" */
	SSL_set_bio(tc->ssl, tc->in, tc->out);
	tc->peer = peer;
	return tc;
}

/* A connection in the server role, waiting for the client's hello. */
struct tls_conn *
tls_conn_new(struct tls_server *ts)
{
	struct tls_conn *tc = conn_alloc(ts->ctx, "client");

	tc->asked_cert = ts->ask_client_cert;
	SSL_set_accept_state(tc->ssl);
	return tc;
}

/* The client role's context: TLS 1.2 or later, the CA file or the system's store. */
int
tls_client_init(const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL) {
		ssl_error_text(err, errlen, "backend_tls: cannot create a context");
		return -1;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (cfg->backend_tls_ca != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, cfg->backend_tls_ca, NULL) != 1) {
			char what[600];

			snprintf(what, sizeof(what), "backend_tls_ca: %s", cfg->backend_tls_ca);
			ssl_error_text(err, errlen, what);
			SSL_CTX_free(ctx);
			return -1;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		ssl_error_text(err, errlen, "backend_tls: the system's CA store");
		SSL_CTX_free(ctx);
		return -1;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);	/* per connection, see tls_conn_connect */
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_free(client_ctx);
	client_ctx = ctx;
	return 0;
}

void
tls_client_free(void)
{
	SSL_CTX_free(client_ctx);
	client_ctx = NULL;
}

/* A connection in the client role; its ClientHello is in the write BIO. */
struct tls_conn *
tls_conn_connect(const char *name, bool verify)
{
	struct tls_conn *tc;
	int r;

	if (client_ctx == NULL)
		log_panic("tls_conn_connect: no client context (tls_client_init)");
	tc = conn_alloc(client_ctx, "backend");
	if (name != NULL) {
		if (SSL_set_tlsext_host_name(tc->ssl, name) != 1 || SSL_set1_host(tc->ssl, name) != 1)
			log_fatal("tls: cannot set the backend's name %s", name);
		SSL_set_hostflags(tc->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	}
	SSL_set_verify(tc->ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	SSL_set_connect_state(tc->ssl);
	r = SSL_do_handshake(tc->ssl);
	if (r <= 0 && SSL_get_error(tc->ssl, r) != SSL_ERROR_WANT_READ &&
	    SSL_get_error(tc->ssl, r) != SSL_ERROR_WANT_WRITE) {
		ssl_error_text(tc->error, sizeof(tc->error), "TLS handshake");
		tc->failed = true;
	}
	return tc;
}

void
tls_conn_free(struct tls_conn *tc)
{
	if (tc == NULL)
		return;
	SSL_free(tc->ssl);	/* frees both BIOs */
	iobuf_free(&tc->pending);
	free(tc);
}

void
tls_conn_feed(struct tls_conn *tc, const char *p, size_t n)
{
	if (n > 0 && BIO_write(tc->in, p, (int)n) != (int)n)
		log_fatal("tls: BIO_write failed");
}

/* Push held plaintext into OpenSSL as far as the handshake allows. */
static int
flush_pending(struct tls_conn *tc)
{
	while (tc->pending.len > 0) {
		int n = SSL_write(tc->ssl, iobuf_head(&tc->pending), (int)tc->pending.len);

		if (n > 0) {
			iobuf_consume(&tc->pending, (size_t)n);
			continue;
		}
		switch (SSL_get_error(tc->ssl, n)) {
		case SSL_ERROR_WANT_READ:
		case SSL_ERROR_WANT_WRITE:
			return 0;
		default:
			tc->failed = true;
			ssl_error_text(tc->error, sizeof(tc->error), "TLS write");
			return -1;
		}
	}
	return 0;
}

ssize_t
tls_conn_read(struct tls_conn *tc, char *buf, size_t n)
{
	int r;

	if (tc->failed || tc->peer_closed)
		return -1;
	r = SSL_read(tc->ssl, buf, (int)(n > 65536 ? 65536 : n));
	if (r > 0) {
		flush_pending(tc);
		return r;
	}
	switch (SSL_get_error(tc->ssl, r)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return flush_pending(tc) == 0 ? 0 : -1;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(tc->error, sizeof(tc->error), "%s closed TLS (close_notify)", tc->peer);
		tc->peer_closed = true;
		return -1;
	default:
		ssl_error_text(tc->error, sizeof(tc->error), SSL_is_init_finished(tc->ssl) ?
		    "TLS read" : "TLS handshake");
		if (!SSL_is_init_finished(tc->ssl) && SSL_get_verify_result(tc->ssl) != X509_V_OK) {
			size_t len = strlen(tc->error);

			snprintf(tc->error + len, sizeof(tc->error) - len, " (%s)",
			    X509_verify_cert_error_string(SSL_get_verify_result(tc->ssl)));
		}
		tc->failed = true;
		return -1;
	}
}

bool
tls_conn_readable(struct tls_conn *tc)
{
	return !tc->failed && !tc->peer_closed && (SSL_pending(tc->ssl) > 0 || BIO_ctrl_pending(tc->in) > 0);
}

int
tls_conn_write(struct tls_conn *tc, const char *p, size_t n)
{
	if (tc->failed)
		return -1;
	iobuf_append(&tc->pending, p, n);
	return flush_pending(tc);
}

void
tls_conn_drain(struct tls_conn *tc, struct outq *q)
{
	char buf[16384];
	int n;

	while ((n = BIO_read(tc->out, buf, sizeof(buf))) > 0)
		outq_append(q, buf, (size_t)n);
}

void
tls_conn_close(struct tls_conn *tc)
{
	if (tc->failed || tc->closed || !SSL_is_init_finished(tc->ssl))
		return;
	tc->closed = true;
	if (flush_pending(tc) == 0)
		SSL_shutdown(tc->ssl);	/* 0: sent, the peer's is not awaited */
	ERR_clear_error();
}

bool
tls_conn_failed(const struct tls_conn *tc)
{
	return tc->failed;
}

bool
tls_conn_established(const struct tls_conn *tc)
{
	return SSL_is_init_finished(tc->ssl);
}

const char *
tls_conn_version(const struct tls_conn *tc)
{
	return SSL_get_version(tc->ssl);
}

const char *
tls_conn_cipher(const struct tls_conn *tc)
{
	return SSL_get_cipher_name(tc->ssl);
}

/* The secret bits of the cipher in use (milter's {cipher_bits}). */
int
tls_conn_cipher_bits(const struct tls_conn *tc)
{
	return SSL_get_cipher_bits(tc->ssl, NULL);
}

const char *
tls_conn_error(const struct tls_conn *tc)
{
	return tc->error[0] ? tc->error : "TLS error";
}

const char *
tls_conn_verify_error(const struct tls_conn *tc)
{
	long v = SSL_get_verify_result(tc->ssl);

	if (SSL_get0_peer_certificate(tc->ssl) == NULL)
		return "no certificate";
	return v == X509_V_OK ? NULL : X509_verify_cert_error_string(v);
}

/* The CommonName of a certificate name into buf ("" when there is none), printable only. */
static void
name_cn(const X509_NAME *name, char *buf, size_t len)
{
	int i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
	unsigned char *utf8 = NULL;
	int n;

	buf[0] = '\0';
	if (i < 0 || (n = ASN1_STRING_to_UTF8(&utf8,
	    X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)))) < 0)
		return;
	snprintf(buf, len, "%.*s", n, (const char *)utf8);
	for (char *q = buf; *q; q++)
		if ((unsigned char)*q < 0x20 || *q == 0x7f || *q == '"')
			*q = '?';
	OPENSSL_free(utf8);
}

/* The client certificate's subject and issuer CNs, once per connection. */
static void
peer_names(struct tls_conn *tc)
{
	X509 *cert;

	if (tc->peer_done || !SSL_is_init_finished(tc->ssl))
		return;
	tc->peer_done = true;
	if ((cert = SSL_get0_peer_certificate(tc->ssl)) == NULL)
		return;
	name_cn(X509_get_subject_name(cert), tc->peer_subject, sizeof(tc->peer_subject));
	name_cn(X509_get_issuer_name(cert), tc->peer_issuer, sizeof(tc->peer_issuer));
}

const char *
tls_conn_peer_verify(struct tls_conn *tc)
{
	if (!tc->asked_cert)
		return "NONE";
	if (SSL_get0_peer_certificate(tc->ssl) == NULL)
		return "NO";
	return SSL_get_verify_result(tc->ssl) == X509_V_OK ? "OK" : "FAIL";
}

const char *
tls_conn_peer_subject(struct tls_conn *tc)
{
	peer_names(tc);
	return tc->peer_subject[0] ? tc->peer_subject : NULL;
}

const char *
tls_conn_peer_issuer(struct tls_conn *tc)
{
	peer_names(tc);
	return tc->peer_issuer[0] ? tc->peer_issuer : NULL;
}

void
tls_conn_summary(struct tls_conn *tc, char *buf, size_t len)
{
	const char *subject = tls_conn_peer_subject(tc), *issuer = tls_conn_peer_issuer(tc);
	int n = snprintf(buf, len, " tls=%s/%s", tls_conn_version(tc), tls_conn_cipher(tc));

	if (!tc->asked_cert || n < 0 || (size_t)n >= len)
		return;
	n += snprintf(buf + n, len - (size_t)n, " verify=%s", tls_conn_peer_verify(tc));
	if (subject != NULL && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, " cert_subject=\"%s\" cert_issuer=\"%s\"",
		    subject, issuer ? issuer : "");
}
