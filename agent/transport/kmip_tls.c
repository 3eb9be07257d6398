/* SPDX-License-Identifier: MIT */
/* KMIP over mutual TLS (see kmip_tls.h for the contract). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "kms/kmip/kmip_codec.h"
#include "kms/kmip/ttlv_codec.h"
#include "codec/kms_error.h"
#include "transport/kmip_tls.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/secret.h"

#define KMIP_KEY_FILE_MAX 65536

/* One connection of the pool; used by one request at a time.  ssl == NULL: not connected (the
 * next request on it connects). */
struct kmip_conn {
	SSL *ssl;
	int fd;
};

struct kmip_tls {
	pthread_mutex_t lock; /* guards the pool and the stats */
	pthread_cond_t cond;  /* a connection went back to the pool */
	struct kmip_conn **idle; /* most recently used last */
	size_t n_idle, n_total, max_connections;
	SSL_CTX *ctx;
	char *host;
	uint16_t port;
	bool host_is_ip;
	unsigned connect_timeout_ms, io_timeout_ms;
	size_t reply_max;
	struct kmip_tls_stats stats;
};

static int64_t now_ms_mono(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Never prompt for a passphrase on the terminal: an encrypted key is a configuration error. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

static const char *ssl_reason(unsigned long e)
{
	const char *s = e ? ERR_reason_error_string(e) : NULL;

	return s ? s : "unknown error";
}

static int load_client_key(SSL_CTX *ctx, const char *path, struct kms_error *err)
{
	_cleanup_secret_ struct secret *pem = NULL;
	_cleanup_close_ int fd = -1;
	struct stat st;
	EVP_PKEY *pk;
	BIO *b;
	int r;

	/* opened once: the mode checked is that of the file read (not of whatever the path names
	 * a moment later) */
	fd = open_regular_file(path, &st);
	if (fd == -EISDIR || fd == -EBADFD)
		return kms_error_set(err, -EINVAL, "ClientKey", "client key '%s' is not a file",
				     path);
	if (fd < 0)
		return kms_error_set(err, -EINVAL, "ClientKey", "client key '%s': %s", path,
				     strerror(-fd));
	/* like ssh(1): a private key others can read is not a private key */
	if (!FILE_MODE_PRIVATE(st.st_mode))
		return kms_error_set(
		    err, -EINVAL, "ClientKey",
		    "client key '%s' is accessible by group or others (mode %04o); "
		    "run 'chmod 600 %s'",
		    path, (unsigned)(st.st_mode & 07777), path);
	r = read_fd_secret(fd, KMIP_KEY_FILE_MAX, 0, &pem);
	if (r < 0)
		return kms_error_set(err, -EINVAL, "ClientKey", "cannot read client key '%s': %s",
				     path, strerror(-r));
	b = BIO_new_mem_buf(pem->buf, (int)pem->len);
	if (!b)
		return -ENOMEM;
	pk = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
	BIO_free(b);
	if (!pk)
		return kms_error_set(err, -EINVAL, "ClientKey",
				     "client key '%s' is not an unencrypted PEM private key (%s)",
				     path, ssl_reason(ERR_peek_last_error()));
	r = SSL_CTX_use_PrivateKey(ctx, pk);
	EVP_PKEY_free(pk);
	if (r != 1 && ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
		return kms_error_set(err, -EINVAL, "ClientKey",
				     "client key '%s' does not match the client certificate", path);
	if (r != 1)
		return kms_error_set(err, -EINVAL, "ClientKey", "cannot use client key '%s' (%s)",
				     path, ssl_reason(ERR_peek_last_error()));
	return 0;
}

static int build_ctx(const struct kmip_tls_options *o, SSL_CTX **ret, struct kms_error *err)
{
	SSL_CTX *ctx;
	int r = -EINVAL;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return -ENOMEM;
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		goto fail;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* CLEANSE_PLAINTEXT: a decrypted record (a Get reply holds key material) is wiped from
	 * OpenSSL's read buffer once read, and on SSL_free() */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
				     SSL_OP_CLEANSE_PLAINTEXT);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (o->ca_file) {
		if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1) {
			kms_error_set(err, r, "CAFile", "cannot load CA file '%s' (%s)", o->ca_file,
				      ssl_reason(ERR_peek_last_error()));
			goto fail;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		kms_error_set(err, r, "CAFile", "cannot load the system trust store");
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
		kms_error_set(err, r, "ClientCert", "cannot load client certificate '%s' (%s)",
			      o->cert_file, ssl_reason(ERR_peek_last_error()));
		goto fail;
	}
	r = load_client_key(ctx, o->key_file, err);
	if (r < 0)
		goto fail;
	if (SSL_CTX_check_private_key(ctx) != 1) {
		r = kms_error_set(err, -EINVAL, "ClientKey",
				  "client key '%s' does not match certificate '%s'", o->key_file,
				  o->cert_file);
		goto fail;
	}
	if (o->tls_ctx_hook)
		o->tls_ctx_hook(ctx, o->tls_ctx_hook_data);
	*ret = ctx;
	return 0;
fail:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return r;
}

int kmip_tls_new(const struct kmip_tls_options *o, struct kmip_tls **ret, struct kms_error *err)
{
	struct kmip_tls *t;
	unsigned char ip[16];
	int r;

	if (!o->host || !*o->host || !o->port || !o->cert_file || !o->key_file)
		return kms_error_set(err, -EINVAL, "",
				     "KMIP endpoint, client certificate and key "
				     "are required");
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->max_connections = o->max_connections ? o->max_connections : 4;
	t->host = strdup(o->host);
	t->idle = calloc(t->max_connections, sizeof(*t->idle));
	if (!t->host || !t->idle) {
		free(t->host);
		free(t->idle);
		free(t);
		return -ENOMEM;
	}
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	t->port = o->port;
	t->host_is_ip =
	    inet_pton(AF_INET, o->host, ip) == 1 || inet_pton(AF_INET6, o->host, ip) == 1;
	t->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;
	t->io_timeout_ms = o->io_timeout_ms ? o->io_timeout_ms : 15000;
	t->reply_max =
	    o->reply_max ? MIN(o->reply_max, (size_t)TTLV_MAX_MESSAGE) : TTLV_MAX_MESSAGE;
	r = build_ctx(o, &t->ctx, err);
	if (r < 0) {
		kmip_tls_free(t);
		return r;
	}
	*ret = t;
	return 0;
}

static void conn_close(struct kmip_conn *k)
{
	if (k->ssl) {
		/* best effort close_notify: non-blocking, never waits for the peer's */
		(void)SSL_shutdown(k->ssl);
		SSL_free(k->ssl);
		k->ssl = NULL;
	}
	if (k->fd >= 0) {
		(void)close(k->fd);
		k->fd = -1;
	}
	ERR_clear_error();
}

/* Block SIGPIPE in this thread while we may write to a socket whose peer is gone; a SIGPIPE
 * raised meanwhile is consumed before unblocking (the technique of PostgreSQL's libpq,
 * pq_block_sigpipe()/pq_reset_sigpipe()). */
struct sigpipe_guard {
	sigset_t old;
	bool was_pending;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
	sigset_t set, pend;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	(void)pthread_sigmask(SIG_BLOCK, &set, &g->old);
	g->was_pending = sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE);
}

static void sigpipe_restore(struct sigpipe_guard *g)
{
	sigset_t set, pend;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	if (!g->was_pending && sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE))
		(void)sigtimedwait(&set, NULL, &(struct timespec){0, 0});
	(void)pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

struct kmip_tls *kmip_tls_free(struct kmip_tls *t)
{
	struct sigpipe_guard g;

	if (!t)
		return NULL;
	/* every connection is back in the pool: the caller joined its threads */
	sigpipe_block(&g);
	for (size_t i = 0; i < t->n_idle; i++) {
		conn_close(t->idle[i]);
		free(t->idle[i]);
	}
	sigpipe_restore(&g);
	free(t->idle);
	SSL_CTX_free(t->ctx);
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	free(t->host);
	free(t);
	return NULL;
}

/* Wait until @fd is ready for @events or @deadline passes: 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int64_t left = deadline - now_ms_mono();
		int k;

		if (left <= 0)
			return -ETIMEDOUT;
		k = poll(&p, 1, (int)MIN(left, (int64_t)INT32_MAX));
		if (k > 0)
			return 0;
		if (k == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int tcp_connect(struct kmip_tls *t, struct kmip_conn *k, int64_t deadline,
		       struct kms_error *err)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char port[8];
	int r, last = ECONNREFUSED;

	snprintf(port, sizeof(port), "%u", (unsigned)t->port);
	r = getaddrinfo(t->host, port, &hints, &res);
	if (r != 0)
		return kms_error_set(err, -EAGAIN, "ConnectFailed",
				     "cannot resolve KMIP server '%s': %s", t->host,
				     r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		if (fd < 0) {
			last = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			if (errno != EINPROGRESS) {
				last = errno;
				close(fd);
				continue;
			}
			r = wait_fd(fd, POLLOUT, deadline);
			if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
				soerr = errno;
			if (r < 0 || soerr) {
				last = r < 0 ? -r : soerr;
				close(fd);
				continue;
			}
		}
		k->fd = fd;
		freeaddrinfo(res);
		return 0;
	}
	freeaddrinfo(res);
	return kms_error_set(err, -EAGAIN, "ConnectFailed",
			     "could not connect to KMIP server %s port %u: %s", t->host,
			     (unsigned)t->port,
			     last == ETIMEDOUT ? "connection timed out" : strerror(last));
}

/* A failed TLS operation: which class, and a message that says what to check. */
static int tls_failure(struct kmip_tls *t, struct kmip_conn *k, const char *what, int ssl_err,
		       int sys_errno, struct kms_error *err)
{
	unsigned long e = ERR_peek_last_error();
	long vr = k->ssl ? SSL_get_verify_result(k->ssl) : X509_V_OK;

	if (k->ssl && vr != X509_V_OK)
		return kms_error_set(
		    err, -EACCES, "ServerCertificateRejected",
		    "certificate of KMIP server %s port %u not accepted: %s (check "
		    "--ca-file, and that the certificate names '%s')",
		    t->host, (unsigned)t->port, X509_verify_cert_error_string(vr), t->host);
	if (ssl_err == SSL_ERROR_SSL && ERR_GET_LIB(e) == ERR_LIB_SSL) {
		switch (ERR_GET_REASON(e)) {
		case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
		case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
		case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
		case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
		case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
		case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
		case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
		case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
			/* the server's verdict on our certificate: an answer, not a fault */
			return kms_error_set(
			    err, -EACCES, "ClientCertificateRejected",
			    "KMIP server %s port %u refused the client certificate "
			    "(%s): check --client-cert/--client-key and that the "
			    "server trusts their CA",
			    t->host, (unsigned)t->port, ssl_reason(e));
		default:
			break;
		}
	}
	if (ssl_err == SSL_ERROR_SSL)
		return kms_error_set(err, -EAGAIN, "TLSError",
				     "TLS %s with KMIP server %s port %u "
				     "failed: %s",
				     what, t->host, (unsigned)t->port, ssl_reason(e));
	return kms_error_set(err, -EAGAIN, "ConnectionLost",
			     "KMIP server %s port %u closed the connection during TLS %s%s%s",
			     t->host, (unsigned)t->port, what, sys_errno ? ": " : "",
			     sys_errno ? strerror(sys_errno) : "");
}

/* Drive one SSL call to completion.  0 when done; -ETIMEDOUT; -EPIPE when the peer closed (EOF or
 * reset); -EPROTO for other TLS failures (*ret_ssl_err, *ret_errno tell which). */
static int ssl_step(struct kmip_conn *k, int rc, int64_t deadline, int *ret_ssl_err, int *ret_errno)
{
	int e = SSL_get_error(k->ssl, rc), r;

	*ret_ssl_err = e;
	*ret_errno = 0;
	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		r = wait_fd(k->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
		return r < 0 ? r : 1; /* 1: call again */
	case SSL_ERROR_ZERO_RETURN:
		return -EPIPE;
	case SSL_ERROR_SYSCALL:
		*ret_errno = errno;
		return -EPIPE; /* EOF or ECONNRESET/EPIPE */
	default:
		return -EPROTO;
	}
}

static int conn_open(struct kmip_tls *t, struct kmip_conn *k, int64_t deadline,
		     struct kms_error *err)
{
	int r, ssl_err, sys;

	r = tcp_connect(t, k, deadline, err);
	if (r < 0)
		return r;
	ERR_clear_error();
	k->ssl = SSL_new(t->ctx);
	if (!k->ssl) {
		conn_close(k);
		return -ENOMEM;
	}
	if (t->host_is_ip)
		r = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(k->ssl), t->host);
	else
		r = X509_VERIFY_PARAM_set1_host(SSL_get0_param(k->ssl), t->host, 0) &&
		    SSL_set_tlsext_host_name(k->ssl, t->host);
	if (r != 1 || SSL_set_fd(k->ssl, k->fd) != 1) {
		conn_close(k);
		return -ENOMEM;
	}
	for (;;) {
		int rc = SSL_connect(k->ssl);

		if (rc == 1)
			break;
		r = ssl_step(k, rc, deadline, &ssl_err, &sys);
		if (r == 1)
			continue;
		if (r == -ETIMEDOUT)
			r = kms_error_set(err, -EAGAIN, "Timeout",
					  "TLS handshake with KMIP server %s port %u timed out",
					  t->host, (unsigned)t->port);
		else
			r = tls_failure(t, k, "handshake", ssl_err, sys, err);
		conn_close(k);
		return r;
	}
	pthread_mutex_lock(&t->lock);
	t->stats.connects++;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

static int write_all(struct kmip_conn *k, const uint8_t *p, size_t n, int64_t deadline,
		     int *ret_ssl_err, int *ret_errno)
{
	while (n > 0) {
		int rc = SSL_write(k->ssl, p, (int)MIN(n, (size_t)INT32_MAX)), r;

		if (rc > 0) {
			p += rc;
			n -= (size_t)rc;
			continue;
		}
		r = ssl_step(k, rc, deadline, ret_ssl_err, ret_errno);
		if (r != 1)
			return r;
	}
	return 0;
}

static int read_exact(struct kmip_conn *k, uint8_t *p, size_t n, int64_t deadline, size_t *got,
		      int *ret_ssl_err, int *ret_errno)
{
	while (n > 0) {
		int rc = SSL_read(k->ssl, p, (int)MIN(n, (size_t)INT32_MAX)), r;

		if (rc > 0) {
			p += rc;
			n -= (size_t)rc;
			*got += (size_t)rc;
			continue;
		}
		r = ssl_step(k, rc, deadline, ret_ssl_err, ret_errno);
		if (r != 1)
			return r;
	}
	return 0;
}

/* One request and its reply on the open connection.  *ret_got: reply bytes seen (0 means the
 * server may not have processed the request). */
static int exchange(struct kmip_tls *t, struct kmip_conn *k, const struct secret *req,
		    int64_t deadline, struct secret **ret, size_t *ret_got, struct kms_error *err)
{
	_cleanup_secret_ struct secret *rsp = NULL;
	uint8_t hdr[TTLV_HEADER_BYTES];
	size_t total = 0;
	int r, ssl_err = 0, sys = 0;

	*ret_got = 0;
	ERR_clear_error();
	r = write_all(k, req->buf, req->len, deadline, &ssl_err, &sys);
	if (r == 0)
		r = read_exact(k, hdr, sizeof(hdr), deadline, ret_got, &ssl_err, &sys);
	if (r < 0)
		goto io_error;
	r = ttlv_message_size(hdr, KMIP_TAG_RESPONSE_MESSAGE, &total);
	if (r < 0 || total > t->reply_max)
		return kms_error_set(err, -EBADMSG, "InvalidReply",
				     "KMIP server %s port %u sent %s", t->host, (unsigned)t->port,
				     r < 0 ? "something that is not a KMIP ResponseMessage"
					   : "a reply larger than the limit");
	r = secret_new(total, &rsp);
	if (r < 0)
		return r;
	memcpy(rsp->buf, hdr, sizeof(hdr));
	r = read_exact(k, rsp->buf + sizeof(hdr), total - sizeof(hdr), deadline, ret_got, &ssl_err,
		       &sys);
	if (r < 0)
		goto io_error;
	rsp->len = total;
	*ret = TAKE_PTR(rsp);
	return 0;
io_error:
	if (r == -ETIMEDOUT)
		return kms_error_set(err, -ETIMEDOUT, "Timeout",
				     "KMIP server %s port %u did not answer in time", t->host,
				     (unsigned)t->port);
	if (r == -EPIPE) {
		kms_error_set(err, -EPIPE, "ConnectionLost",
			      "KMIP server %s port %u closed the connection%s%s", t->host,
			      (unsigned)t->port, sys ? ": " : "", sys ? strerror(sys) : "");
		return -EPIPE;
	}
	return tls_failure(t, k, "exchange", ssl_err, sys, err);
}

/* Take a connection from the pool (the most recently used: the warmest), a new slot while fewer
 * than max_connections exist, else wait for one to come back. */
static struct kmip_conn *pool_get(struct kmip_tls *t)
{
	struct kmip_conn *k = NULL;

	pthread_mutex_lock(&t->lock);
	while (t->n_idle == 0 && t->n_total >= t->max_connections)
		pthread_cond_wait(&t->cond, &t->lock);
	if (t->n_idle > 0)
		k = t->idle[--t->n_idle];
	else {
		k = calloc(1, sizeof(*k));
		if (k) {
			k->fd = -1;
			t->n_total++;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return k;
}

static void pool_put(struct kmip_tls *t, struct kmip_conn *k, unsigned requests)
{
	pthread_mutex_lock(&t->lock);
	t->stats.requests += requests;
	t->idle[t->n_idle++] = k;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

int kmip_tls_roundtrip(struct kmip_tls *t, const struct secret *req, unsigned timeout_ms,
		       struct secret **ret, struct kms_error *err)
{
	int64_t deadline = now_ms_mono() + (timeout_ms ? timeout_ms : t->io_timeout_ms);
	struct sigpipe_guard g;
	struct kmip_conn *k;
	unsigned requests = 0;
	int r;

	if (!req || req->len < TTLV_HEADER_BYTES)
		return -EINVAL;
	k = pool_get(t);
	if (!k)
		return -ENOMEM;
	sigpipe_block(&g);
	for (unsigned attempt = 0;; attempt++) {
		bool reused = k->ssl != NULL;
		size_t got = 0;

		if (!k->ssl) {
			int64_t cdl = MIN(deadline, now_ms_mono() + t->connect_timeout_ms);

			r = conn_open(t, k, cdl, err);
			if (r < 0)
				break;
		}
		requests++;
		r = exchange(t, k, req, deadline, ret, &got, err);
		if (r == 0)
			break;
		/* after any failure the connection's state is unknown: never reuse it */
		conn_close(k);
		/* A reused connection that broke before the reply started: the server restarted or
		 * timed out an idle connection.  Try once more on a new one.  (Should the server
		 * have executed the request and died before answering, the request runs twice:
		 * harmless for Get/Encrypt/Decrypt; a Create would leave an unused key behind.) */
		if (r == -EPIPE && reused && got == 0 && attempt == 0)
			continue;
		break;
	}
	sigpipe_restore(&g);
	pool_put(t, k, requests);
	if (r == -EPIPE || r == -ETIMEDOUT)
		r = -EAGAIN;
	return r;
}

void kmip_tls_get_stats(struct kmip_tls *t, struct kmip_tls_stats *ret)
{
	pthread_mutex_lock(&t->lock);
	*ret = t->stats;
	pthread_mutex_unlock(&t->lock);
}
