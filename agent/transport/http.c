/* SPDX-License-Identifier: MIT */
/*
 * libcurl behind one file.  See http.h for the design (one multi handle driven by a worker thread:
 * HTTP/2 multiplexing or a bounded HTTP/1.1 pool; CURLSH for DNS and TLS sessions).
 * Never CURLOPT_VERBOSE, never CURLOPT_SSL_VERIFYPEER=0, never a debug callback: bodies and headers
 * carry key material and tokens.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* libcurl is called through the table below (dlopen): no type-checking macros around its
 * variadic setters, which would name the linked functions. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <dlfcn.h>
#include <openssl/ssl.h>

#include "codec/http_msg.h"
#include "kmscrypt/version.h"
#include "codec/kms_error.h"
#include "transport/http.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define HTTP_BODY_INITIAL (16u * 1024u)

/* One request handed to the worker thread: the caller set up @h and waits for @done. */
struct job {
	CURL *h;
	CURLcode rc;
	bool done;
	struct job *next;
};

struct http_client {
	CURLSH *share;
	pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST];
	CURLM *multi; /* its connection cache holds every connection; used by the worker only */

	pthread_mutex_t pool_lock; /* guards everything below */
	pthread_cond_t pool_cond;  /* a job is done */
	struct job *pending, **pending_tail;
	bool worker_started, stopping;
	pthread_t worker;
	/* the process the worker runs in, 0 before it starts (atomic: read without the lock,
	 * which a forked child may have inherited held) */
	pid_t worker_pid;
	struct http_stats stats;

	char *ca_file, *user_agent;
	unsigned connect_timeout_ms, request_timeout_ms, max_attempts, max_connections;
	size_t body_max;
	void (*tls_ctx_hook)(void *ssl_ctx, void *userdata);
	void *tls_ctx_hook_data;
	http_observer_fn observer;
	void *observer_data;
};

/*
 * libcurl is loaded when the first client is made, not linked: with its dependencies it is 27 of
 * the 43 shared objects the binary would map, and lock, revoke, status and the local provider never
 * use it; loading and relocating them cost every command start-up time and resident memory (issue
 * 13).  Same library, same ABI (soname 4 since libcurl 7.16), resolved once and never unloaded.
 */
#define HTTP_LIBCURL_SONAME "libcurl.so.4"

#define CURL_FUNCTIONS(X)                                                                          \
	X(global_init) X(easy_init) X(easy_setopt) X(easy_getinfo) X(easy_perform)                 \
	X(easy_cleanup) X(easy_strerror) X(multi_init) X(multi_setopt) X(multi_cleanup)            \
	X(multi_add_handle) X(multi_remove_handle) X(multi_perform) X(multi_info_read)             \
	X(multi_poll) X(multi_wakeup) X(share_init) X(share_setopt) X(share_cleanup)               \
	X(slist_append) X(slist_free_all)

static struct {
#define FIELD(name) __typeof__(curl_##name) *name;
	CURL_FUNCTIONS(FIELD)
#undef FIELD
} libcurl;

#undef curl_easy_setopt /* curl.h's argument-count macros */
#undef curl_easy_getinfo
#undef curl_multi_setopt
#undef curl_share_setopt
#define curl_global_init (*libcurl.global_init)
#define curl_easy_init (*libcurl.easy_init)
#define curl_easy_setopt (*libcurl.easy_setopt)
#define curl_easy_getinfo (*libcurl.easy_getinfo)
#define curl_easy_perform (*libcurl.easy_perform)
#define curl_easy_cleanup (*libcurl.easy_cleanup)
#define curl_easy_strerror (*libcurl.easy_strerror)
#define curl_multi_init (*libcurl.multi_init)
#define curl_multi_setopt (*libcurl.multi_setopt)
#define curl_multi_cleanup (*libcurl.multi_cleanup)
#define curl_multi_add_handle (*libcurl.multi_add_handle)
#define curl_multi_remove_handle (*libcurl.multi_remove_handle)
#define curl_multi_perform (*libcurl.multi_perform)
#define curl_multi_info_read (*libcurl.multi_info_read)
#define curl_multi_poll (*libcurl.multi_poll)
#define curl_multi_wakeup (*libcurl.multi_wakeup)
#define curl_share_init (*libcurl.share_init)
#define curl_share_setopt (*libcurl.share_setopt)
#define curl_share_cleanup (*libcurl.share_cleanup)
#define curl_slist_append (*libcurl.slist_append)
#define curl_slist_free_all (*libcurl.slist_free_all)

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_r = -ELIBACC;

/* Load libcurl (RTLD_LOCAL: its symbols stay out of the global scope) and initialise it. */
static void global_init(void)
{
	bool gnutls_var;
	void *dl;

	/* Debian's libcurl (OpenSSL) links librtmp, which links GnuTLS, whose constructor initialises
	 * it (random pool, PKCS#11 modules through p11-kit) when it is loaded: about 0.5 MiB resident
	 * for a library kmscrypt never calls (https only, OpenSSL).  GnuTLS's documented switch skips
	 * that; it is set only while libcurl loads (the token plugin runs in another program, which
	 * must not inherit it), and glibc's setenv() keeps the old array valid for a concurrent
	 * getenv(). */
	gnutls_var = !getenv("GNUTLS_NO_IMPLICIT_INIT") &&
		     setenv("GNUTLS_NO_IMPLICIT_INIT", "1", 0) == 0;
	dl = dlopen(HTTP_LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (gnutls_var)
		(void)unsetenv("GNUTLS_NO_IMPLICIT_INIT");
	if (!dl)
		return;
#define RESOLVE(name)                                                                              \
	libcurl.name = (__typeof__(libcurl.name))dlsym(dl, "curl_" #name);                         \
	if (!libcurl.name)                                                                         \
		return; /* older than 7.68 (curl_multi_wakeup) */
	CURL_FUNCTIONS(RESOLVE)
#undef RESOLVE
	global_r = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -ENOMEM;
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userp)
{
	struct http_client *c = userp;

	if ((unsigned)data < CURL_LOCK_DATA_LAST)
		pthread_mutex_lock(&c->share_lock[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *userp)
{
	struct http_client *c = userp;

	if ((unsigned)data < CURL_LOCK_DATA_LAST)
		pthread_mutex_unlock(&c->share_lock[data]);
}

int http_client_new(const struct http_client_options *o, struct http_client **ret)
{
	static const struct http_client_options defaults = {};
	struct http_client *c;

	if (!o)
		o = &defaults;
	pthread_once(&global_once, global_init);
	if (global_r < 0)
		return global_r;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_lock[i], NULL);
	pthread_mutex_init(&c->pool_lock, NULL);
	pthread_cond_init(&c->pool_cond, NULL);
	c->connect_timeout_ms = o->connect_timeout_ms ?: 5000;
	c->request_timeout_ms = o->request_timeout_ms ?: 15000;
	c->max_attempts = o->max_attempts ?: 3;
	c->max_connections = o->max_connections ?: 4;
	c->body_max = o->body_max ?: HTTP_BODY_MAX;
	c->tls_ctx_hook = o->tls_ctx_hook;
	c->tls_ctx_hook_data = o->tls_ctx_hook_data;
	c->observer = o->observer;
	c->observer_data = o->observer_data;
	c->ca_file = o->ca_file ? strdup(o->ca_file) : NULL;
	c->user_agent = strdup(o->user_agent ?: "kmscrypt/" KMSCRYPT_VERSION);
	c->pending_tail = &c->pending;
	c->share = curl_share_init();
	c->multi = curl_multi_init();
	if ((o->ca_file && !c->ca_file) || !c->user_agent || !c->share || !c->multi ||
	    curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_USERDATA, c) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
	    /* HTTP/2 where the server's ALPN offers it: every request to an endpoint on one
	     * connection; else at most max_connections HTTP/1.1 connections per endpoint, further
	     * requests queue inside libcurl for the next free one */
	    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX) != CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->max_connections) !=
		CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS,
			      (long)MAX(8u, 2 * c->max_connections)) != CURLM_OK) {
		http_client_free(c);
		return -ENOMEM;
	}
	*ret = c;
	return 0;
}

struct http_client *http_client_free(struct http_client *c)
{
	bool started;
	pid_t worker;

	if (!c)
		return NULL;
	/* no request is in flight: the caller joined its threads */
	worker = __atomic_load_n(&c->worker_pid, __ATOMIC_ACQUIRE);
	if (worker != 0 && worker != getpid()) {
		/* a forked child: the connections are the parent's (closing them here would send
		 * close_notify on its sockets), the worker is not in this process and its locks may
		 * have been copied held: leave it all (the child exits soon) */
		return NULL;
	}
	pthread_mutex_lock(&c->pool_lock);
	c->stopping = true;
	started = c->worker_started;
	pthread_mutex_unlock(&c->pool_lock);
	if (started) {
		curl_multi_wakeup(c->multi);
		pthread_join(c->worker, NULL);
	}
	if (c->multi)
		curl_multi_cleanup(c->multi); /* closes the cached connections */
	if (c->share)
		curl_share_cleanup(c->share);
	for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&c->share_lock[i]);
	pthread_mutex_destroy(&c->pool_lock);
	pthread_cond_destroy(&c->pool_cond);
	free(c->ca_file);
	free(c->user_agent);
	free(c);
	return NULL;
}

void http_client_freep(struct http_client **c)
{
	*c = http_client_free(*c);
}

void http_client_get_stats(struct http_client *c, struct http_stats *ret)
{
	pthread_mutex_lock(&c->pool_lock);
	*ret = c->stats;
	pthread_mutex_unlock(&c->pool_lock);
}

/* The worker: the one thread that drives the multi handle, so that concurrent requests share its
 * connections (libcurl multiplexes HTTP/2 streams only within one multi handle, and a multi handle
 * is used by one thread at a time).  Callers set up an easy handle, queue it and wait; every
 * libcurl callback (headers, body, TLS context) runs here. */
static void *worker_main(void *p)
{
	struct http_client *c = p;

	for (;;) {
		struct job *add, *j;
		CURLMsg *msg;
		bool stop;
		int left, running;

		pthread_mutex_lock(&c->pool_lock);
		add = c->pending;
		c->pending = NULL;
		c->pending_tail = &c->pending;
		stop = c->stopping;
		pthread_mutex_unlock(&c->pool_lock);
		if (stop)
			break; /* http_client_free(): nothing is in flight */
		for (j = add; j;) {
			struct job *next = j->next;
			CURLMcode mc = curl_multi_add_handle(c->multi, j->h);

			if (mc != CURLM_OK) {
				pthread_mutex_lock(&c->pool_lock);
				j->rc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY
								  : CURLE_FAILED_INIT;
				j->done = true;
				pthread_cond_broadcast(&c->pool_cond);
				pthread_mutex_unlock(&c->pool_lock);
			}
			j = next;
		}
		(void)curl_multi_perform(c->multi, &running);
		while ((msg = curl_multi_info_read(c->multi, &left))) {
			CURL *h = msg->easy_handle;
			CURLcode rc = msg->data.result;
			char *priv = NULL;

			if (msg->msg != CURLMSG_DONE)
				continue;
			(void)curl_easy_getinfo(h, CURLINFO_PRIVATE, &priv);
			curl_multi_remove_handle(c->multi, h);
			j = (struct job *)(void *)priv;
			pthread_mutex_lock(&c->pool_lock);
			j->rc = rc;
			j->done = true;
			pthread_cond_broadcast(&c->pool_cond);
			pthread_mutex_unlock(&c->pool_lock);
		}
		/* sleeps until a socket is ready, libcurl's next timeout, or curl_multi_wakeup() */
		(void)curl_multi_poll(c->multi, NULL, 0, 1000, NULL);
	}
	return NULL;
}

/* Run the transfer set up on @h through the worker (started on first use, with every signal
 * blocked: signals stay with the caller's threads) and wait for it. */
static CURLcode perform(struct http_client *c, CURL *h)
{
	struct job j = { .h = h };
	pid_t worker = __atomic_load_n(&c->worker_pid, __ATOMIC_ACQUIRE);
	int k = 0;

	if (curl_easy_setopt(h, CURLOPT_PRIVATE, (void *)&j) != CURLE_OK)
		return CURLE_FAILED_INIT;
	if (worker != 0 && worker != getpid()) {
		/* a child forked after the parent's first request: no worker here, and the cached
		 * connections (and the share's locks) are the parent's.  A connection of its own.
		 */
		(void)curl_easy_setopt(h, CURLOPT_SHARE, NULL);
		return curl_easy_perform(h);
	}
	pthread_mutex_lock(&c->pool_lock);
	if (!c->worker_started) {
		sigset_t all, old;

		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		k = pthread_create(&c->worker, NULL, worker_main, c);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		c->worker_started = k == 0;
		if (k == 0)
			__atomic_store_n(&c->worker_pid, getpid(), __ATOMIC_RELEASE);
	}
	if (k != 0) {
		pthread_mutex_unlock(&c->pool_lock);
		return CURLE_OUT_OF_MEMORY;
	}
	*c->pending_tail = &j;
	c->pending_tail = &j.next;
	pthread_mutex_unlock(&c->pool_lock);
	curl_multi_wakeup(c->multi);
	pthread_mutex_lock(&c->pool_lock);
	while (!j.done)
		pthread_cond_wait(&c->pool_cond, &c->pool_lock);
	pthread_mutex_unlock(&c->pool_lock);
	return j.rc;
}

static void stats_add(struct http_client *c, long connects)
{
	pthread_mutex_lock(&c->pool_lock);
	c->stats.requests++;
	if (connects > 0)
		c->stats.connects += (uint64_t)connects;
	pthread_mutex_unlock(&c->pool_lock);
}

struct transfer {
	struct http_response *resp;
	size_t body_max;
	bool too_big;
	int r; /* -ENOMEM from a callback */
};

static size_t on_header(char *data, size_t size, size_t n, void *userdata)
{
	struct transfer *t = userdata;
	size_t len = size * n, k, v, e;

	/* a new status line (100 Continue, a proxy's CONNECT reply) starts a new header set */
	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		struct http_response *resp = t->resp;
		for (size_t i = 0; i < resp->n_headers; i++) {
			free(resp->headers[i].name);
			free(resp->headers[i].value);
		}
		free(resp->headers);
		resp->headers = NULL;
		resp->n_headers = 0;
		return len;
	}
	for (k = 0; k < len && data[k] != ':'; k++)
		;
	if (k == 0 || k == len)
		return len; /* the blank line ending the headers, or not a header */
	for (v = k + 1; v < len && (data[v] == ' ' || data[v] == '\t'); v++)
		;
	for (e = len; e > v && (data[e - 1] == '\r' || data[e - 1] == '\n' || data[e - 1] == ' '); e--)
		;
	if (http_response_header_add(t->resp, data, k, data + v, e - v) < 0) {
		t->r = -EBADMSG;
		return 0;
	}
	return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *userdata)
{
	struct transfer *t = userdata;
	struct http_response *resp = t->resp;
	size_t len = size * n, need;

	if (len == 0)
		return 0;
	need = (resp->body ? resp->body->len : 0) + len;
	if (need > t->body_max) {
		t->too_big = true;
		return 0; /* curl fails with CURLE_WRITE_ERROR */
	}
	if (!resp->body || need > resp->body->cap) {
		/* grow into a bigger locked buffer; the old one is wiped by secret_free() */
		size_t cap = MAX(HTTP_BODY_INITIAL, need);
		struct secret *s;

		if (resp->body)
			cap = MAX(cap, resp->body->cap * 2);
		cap = MIN(cap, t->body_max);
		if (secret_new(cap, &s) < 0) {
			t->r = -ENOMEM;
			return 0;
		}
		if (resp->body) {
			memcpy(s->buf, resp->body->buf, resp->body->len);
			s->len = resp->body->len;
			secret_free(resp->body);
		}
		resp->body = s;
	}
	memcpy(resp->body->buf + resp->body->len, data, len);
	resp->body->len += len;
	return len;
}

/* Metadata services live on link-local addresses; loopback is allowed for test doubles. */
static bool metadata_host_ok(const char *authority)
{
	char host[64];
	const char *end;
	size_t n;
	struct in_addr a4;
	struct in6_addr a6;

	if (authority[0] == '[') {
		end = strchr(authority, ']');
		if (!end)
			return false;
		authority++;
	} else
		end = authority + strcspn(authority, ":");
	n = (size_t)(end - authority);
	if (n == 0 || n >= sizeof(host))
		return false;
	memcpy(host, authority, n);
	host[n] = 0;
	if (strcmp(host, "metadata.google.internal") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1) {
		uint32_t ip = ntohl(a4.s_addr);
		return (ip >> 16) == 0xa9fe /* 169.254/16 */ || (ip >> 24) == 127;
	}
	if (inet_pton(AF_INET6, host, &a6) == 1) {
		static const uint8_t ec2[16] = { 0xfd, 0x00, 0x0e, 0xc2, [15] = 0x54 }; /* fd00:ec2::254 */
		return memcmp(&a6, ec2, 16) == 0 || IN6_IS_ADDR_LOOPBACK(&a6) || IN6_IS_ADDR_LINKLOCAL(&a6);
	}
	return false;
}

static bool header_value_ok(const char *v)
{
	for (; *v; v++)
		if (*v == '\r' || *v == '\n' || *v == 0)
			return false;
	return true;
}

static void slist_free_wiped(struct curl_slist *l)
{
	for (struct curl_slist *i = l; i; i = i->next)
		if (i->data)
			explicit_bzero(i->data, strlen(i->data));
	curl_slist_free_all(l);
}

static int build_headers(const struct http_request *req, struct curl_slist **ret)
{
	struct curl_slist *l = NULL, *t;

	for (size_t i = 0; i < req->n_headers; i++) {
		_cleanup_free_ char *line = NULL;
		const struct http_header *h = &req->headers[i];
		size_t k;

		if (!header_value_ok(h->value) || !header_value_ok(h->name)) {
			slist_free_wiped(l);
			return -EINVAL;
		}
		/* "Name;" sends an empty header in curl's syntax; "Name:" would remove it.  Built in
		 * a buffer of the exact size: asprintf() grows its buffer without wiping, and the
		 * value may be a token. */
		k = strlen(h->name) + (*h->value ? 2 + strlen(h->value) : 1);
		line = malloc(k + 1);
		if (!line) {
			slist_free_wiped(l);
			return -ENOMEM;
		}
		if (*h->value)
			snprintf(line, k + 1, "%s: %s", h->name, h->value);
		else
			snprintf(line, k + 1, "%s;", h->name);
		t = curl_slist_append(l, line);
		explicit_bzero(line, k);
		if (!t) {
			slist_free_wiped(l);
			return -ENOMEM;
		}
		l = t;
	}
	/* no "Expect: 100-continue" round trip for bodies over 1 KiB */
	t = curl_slist_append(l, "Expect:");
	if (!t) {
		slist_free_wiped(l);
		return -ENOMEM;
	}
	*ret = t;
	return 0;
}

/* libcurl (OpenSSL backend) calls this for the TLS context of every new connection.  OpenSSL keeps
 * the last decrypted record (a Decrypt reply with the plaintext key, a Vault token) in its read
 * buffer until overwritten; SSL_OP_CLEANSE_PLAINTEXT (OpenSSL 3.0) wipes it as soon as it is read,
 * and on SSL_free(). */
static CURLcode on_ssl_ctx(CURL *h, void *ssl_ctx, void *userdata)
{
	struct http_client *c = userdata;

	SSL_CTX_set_options(ssl_ctx, SSL_OP_CLEANSE_PLAINTEXT);
	if (c->tls_ctx_hook)
		c->tls_ctx_hook(ssl_ctx, c->tls_ctx_hook_data);
	return CURLE_OK;
}

static bool tls_trust_error(CURLcode rc)
{
	switch (rc) {
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CRL_BADFILE:
		return true;
	default:
		return false;
	}
}

static int map_curl_error(struct http_client *c, const struct http_request *req, CURLcode rc,
			  const struct transfer *t, const char *errbuf, struct kms_error *err)
{
	const char *detail = *errbuf ? errbuf : curl_easy_strerror(rc);

	if (t->r == -ENOMEM || rc == CURLE_OUT_OF_MEMORY)
		return -ENOMEM;
	if (t->too_big)
		return kms_error_fill(err, -EBADMSG, 0, "", NULL,
				      "reply from '%s' is larger than %zu bytes", req->host, c->body_max);
	if (t->r < 0)
		return kms_error_fill(err, t->r, 0, "", NULL, "malformed reply headers from '%s'", req->host);
	if (tls_trust_error(rc))
		return kms_error_fill(err, -EACCES, 0, "tls", NULL,
				      "TLS certificate of '%s' is not trusted (%s); check --ca-file", req->host,
				      detail);
	switch (rc) {
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return kms_error_fill(err, -EINVAL, 0, "", NULL, "refusing to send to '%s': %s", req->host,
				      detail);
	case CURLE_OPERATION_TIMEDOUT:
		return kms_error_fill(err, -EAGAIN, 0, "timeout", NULL, "request to '%s' timed out: %s",
				      req->host, detail);
	case CURLE_WEIRD_SERVER_REPLY:
		return kms_error_fill(err, -EAGAIN, 0, "", NULL, "malformed HTTP reply from '%s': %s",
				      req->host, detail);
	default:
		/* resolve, connect, proxy, reset, TLS handshake, partial reply: worth another try */
		return kms_error_fill(err, -EAGAIN, 0, "network", NULL, "could not connect to '%s': %s",
				      req->host, detail);
	}
}

static int setup(struct http_client *c, CURL *h, const struct http_request *req, const char *url,
		 struct curl_slist *headers, struct transfer *t, char *errbuf)
{
	bool metadata = req->flags & HTTP_REQ_METADATA;
	unsigned timeout = req->timeout_ms ?: c->request_timeout_ms;
	CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                                              \
	do {                                                                                       \
		if (rc == CURLE_OK)                                                                \
			rc = curl_easy_setopt(h, opt, val);                                        \
	} while (0)

	SET(CURLOPT_SHARE, c->share);
	SET(CURLOPT_URL, url);
	/* HTTP/2 when ALPN agrees (https only), else HTTP/1.1; PIPEWAIT: while the first connection
	 * to an endpoint is being set up, wait to learn whether it multiplexes instead of opening
	 * one connection per concurrent request */
	SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	SET(CURLOPT_PIPEWAIT, 1L);
	/* https only; plain http for link-local metadata requests, which never go through a proxy */
	SET(CURLOPT_PROTOCOLS_STR, metadata && strcmp(req->scheme, "http") == 0 ? "http" : "https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	if (metadata)
		SET(CURLOPT_PROXY, "");
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	/* fails (CURLE_NOT_BUILT_IN) with a TLS backend other than OpenSSL: then nothing is sent */
	SET(CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
	SET(CURLOPT_SSL_CTX_DATA, c);
	if (c->ca_file) {
		SET(CURLOPT_CAINFO, c->ca_file);
		SET(CURLOPT_CAPATH, NULL); /* trust the given bundle only */
	}
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_CONNECTTIMEOUT_MS, (long)MIN(c->connect_timeout_ms, timeout));
	SET(CURLOPT_TIMEOUT_MS, (long)timeout);
	SET(CURLOPT_USERAGENT, c->user_agent);
	SET(CURLOPT_HTTPHEADER, headers);
	SET(CURLOPT_ERRORBUFFER, errbuf);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	SET(CURLOPT_HEADERDATA, t);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, t);
	SET(CURLOPT_ACCEPT_ENCODING, NULL); /* no compression: bodies are small and land in locked memory */
	if (req->body || strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0) {
		/* POSTFIELDS does not copy the body at setopt time, but libcurl 7.88 copies a body
		 * under 64 KiB, with the headers, into its own request buffer, which it frees
		 * unwiped: that copy is the residue http.h describes */
		SET(CURLOPT_POST, 1L);
		SET(CURLOPT_POSTFIELDS, req->body ? (const char *)req->body->buf : "");
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body->len : 0));
		if (strcmp(req->method, "POST") != 0)
			SET(CURLOPT_CUSTOMREQUEST, req->method);
	} else if (strcmp(req->method, "GET") == 0)
		SET(CURLOPT_HTTPGET, 1L);
	else
		SET(CURLOPT_CUSTOMREQUEST, req->method);
#undef SET
	return rc == CURLE_OK ? 0 : rc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* What an observer is told about one attempt, kept until it is told (after the retry decision). */
struct attempt {
	char url[512]; /* scheme://host/path, no query (parameters are not for the log) */
	char request_id[96];
	int status, error;
	unsigned latency_ms;
	bool reused;
};

/* The vendors' documented request id headers, first match wins: AWS (x-amzn-RequestId; S3-style
 * x-amz-request-id), Azure (x-ms-request-id), and the common x-request-id (CipherTrust, proxies).
 * Vault and Google Cloud KMS send none in headers. */
static void attempt_request_id(const struct http_response *resp, struct attempt *a)
{
	static const char *const names[] = {"x-amzn-RequestId", "x-amz-request-id",
					    "x-ms-request-id", "x-request-id"};

	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		const char *v = http_response_header_get(resp, names[i]);
		if (v && *v) {
			snprintf(a->request_id, sizeof(a->request_id), "%s", v);
			return;
		}
	}
}

static void attempt_report(struct http_client *c, const struct http_request *req,
			   const struct attempt *a, const struct kms_error *err, unsigned attempt,
			   int backoff_ms /* < 0: no attempt follows */)
{
	struct http_event ev = {
		.method = req->method,
		.url = a->url,
		.status = a->status,
		.error = a->error,
		.message = a->error && err ? err->message : "",
		.latency_ms = a->latency_ms,
		.request_id = a->request_id[0] ? a->request_id : NULL,
		.attempt = attempt,
		.retrying = backoff_ms >= 0,
		.backoff_ms = backoff_ms >= 0 ? (unsigned)backoff_ms : 0,
		.reused = a->reused,
	};

	if (c->observer && a->url[0])
		c->observer(&ev, c->observer_data);
}

/* http_send() for one attempt, describing it in @a (when the request got as far as sending). */
static int send_attempt(struct http_client *c, const struct http_request *req,
			struct http_response *ret, struct kms_error *err, struct attempt *a)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_free_ char *url = NULL;
	struct curl_slist *headers = NULL;
	struct transfer t = { .resp = &resp, .body_max = c->body_max };
	char errbuf[CURL_ERROR_SIZE] = "";
	long status = 0, connects = 0;
	uint64_t start;
	CURLcode rc;
	CURL *h;
	int r;

	if (!req || !req->method || !req->scheme || !req->host || !req->path)
		return kms_error_fill(err, -EINVAL, 0, "", NULL, "incomplete HTTP request");
	if (strcmp(req->scheme, "https") != 0 &&
	    !(strcmp(req->scheme, "http") == 0 && (req->flags & HTTP_REQ_METADATA)))
		return kms_error_fill(err, -EINVAL, 0, "", NULL, "refusing plain %s:// to '%s': https only",
				      req->scheme, req->host);
	if ((req->flags & HTTP_REQ_METADATA) && !metadata_host_ok(req->host))
		return kms_error_fill(err, -EINVAL, 0, "", NULL,
				      "'%s' is not a link-local metadata address", req->host);
	r = http_request_url(req, &url);
	if (r < 0)
		return r;
	r = build_headers(req, &headers);
	if (r < 0)
		return kms_error_fill(err, r, 0, "", NULL, "invalid header in request to '%s'", req->host);

	h = curl_easy_init(); /* per attempt: the connections live in the worker's multi handle */
	if (!h) {
		slist_free_wiped(headers);
		return -ENOMEM;
	}
	snprintf(a->url, sizeof(a->url), "%s://%s%s", req->scheme, req->host, req->path);
	r = setup(c, h, req, url, headers, &t, errbuf);
	if (r < 0) {
		curl_easy_cleanup(h);
		slist_free_wiped(headers);
		return kms_error_fill(err, r, 0, "", NULL, "could not set up the request to '%s'", req->host);
	}
	start = now_ms();
	rc = perform(c, h);
	a->latency_ms = (unsigned)MIN(now_ms() - start, (uint64_t)UINT_MAX);
	(void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	(void)curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
	curl_easy_cleanup(h);
	stats_add(c, connects);
	slist_free_wiped(headers);

	a->reused = rc == CURLE_OK && connects == 0;
	if (rc != CURLE_OK)
		return a->error = map_curl_error(c, req, rc, &t, errbuf, err);
	if (status < 100 || status > 599)
		return a->error = kms_error_fill(err, -EBADMSG, 0, "", NULL,
						 "no HTTP status from '%s'", req->host);
	resp.status = a->status = (int)status;
	attempt_request_id(&resp, a);
	*ret = resp;
	memset(&resp, 0, sizeof(resp));
	return 0;
}

int http_send(struct http_client *c, const struct http_request *req, struct http_response *ret,
	      struct kms_error *err)
{
	struct kms_error local = {};
	struct attempt a = {};
	int r;

	if (!err && c->observer)
		err = &local; /* the observer gets the failure's message */
	r = send_attempt(c, req, ret, err, &a);
	attempt_report(c, req, &a, err, 1, -1);
	return r;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint32_t random_u32(void)
{
	uint32_t v = 0;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != sizeof(v))
		v = (uint32_t)now_ms() * 2654435761u; /* jitter only; not a secret */
	return v;
}

static int default_transient(const struct http_response *resp, void *userdata)
{
	return http_status_transient(resp->status);
}

int http_send_retry(struct http_client *c, const struct http_request *req, const struct http_retry *policy,
		    struct http_response *ret, struct kms_error *err)
{
	static const struct http_retry none = {};
	const struct http_retry *p = policy ?: &none;
	int (*transient)(const struct http_response *, void *) = p->transient ?: default_transient;
	unsigned max = p->max_attempts ?: c->max_attempts;
	uint64_t start = now_ms(), deadline = p->deadline_ms ? start + p->deadline_ms : 0;
	struct http_response last = {};
	struct kms_error local = {};
	int r = -EAGAIN;

	if (!err && c->observer)
		err = &local; /* the observer gets a failure's message */

	for (unsigned attempt = 1;; attempt++) {
		struct http_request one = *req; /* shallow: only timeout_ms differs */
		struct http_response resp = {};
		struct attempt a = {};
		unsigned wait = 0, remaining = 0;
		bool throttled;
		int t = 0;

		if (deadline) {
			uint64_t now = now_ms();
			if (now >= deadline)
				break;
			remaining = (unsigned)(deadline - now);
			if (!one.timeout_ms || one.timeout_ms > remaining)
				one.timeout_ms = remaining;
			if (!req->timeout_ms && c->request_timeout_ms < one.timeout_ms)
				one.timeout_ms = c->request_timeout_ms;
		}
		r = send_attempt(c, &one, &resp, err, &a);
		if (r == 0)
			t = transient(&resp, p->userdata);
		if (r == 0 && !t) {
			attempt_report(c, req, &a, err, attempt, -1);
			http_response_done(&last);
			*ret = resp;
			return 0;
		}
		if (r < 0 && r != -EAGAIN) {
			attempt_report(c, req, &a, err, attempt, -1);
			http_response_done(&last);
			return r; /* denied, invalid, malformed: asking again will not help */
		}
		http_response_done(&last);
		last = resp; /* zeroed when r < 0 */
		/* a rate limit may have more attempts than a failure (policy->max_attempts_throttled) */
		throttled = r == 0 && (t == HTTP_RETRY_THROTTLED || last.status == 429);
		if (attempt >= (throttled ? MAX(max, p->max_attempts_throttled) : max)) {
			attempt_report(c, req, &a, err, attempt, -1);
			break;
		}
		wait = kms_backoff_ms(attempt, random_u32());
		if (r == 0) {
			unsigned ra;
			const char *v = http_response_header_get(&last, "Retry-After");

			if (v && http_retry_after_parse(v, time(NULL), KMS_BACKOFF_CAP_MS, &ra) == 0)
				wait = MAX(wait, ra);
		}
		if (deadline && now_ms() + wait >= deadline) {
			/* no time for another attempt: stop now rather than sleep past the deadline */
			attempt_report(c, req, &a, err, attempt, -1);
			deadline = 0;
			if (r < 0)
				r = -ETIMEDOUT;
			break;
		}
		attempt_report(c, req, &a, err, attempt, (int)MIN(wait, (unsigned)INT32_MAX));
		sleep_ms(wait);
		pthread_mutex_lock(&c->pool_lock);
		c->stats.retries++;
		pthread_mutex_unlock(&c->pool_lock);
	}
	if (last.status) {
		/* out of attempts (or time) on a transient reply: the codec classifies it */
		*ret = last;
		return 0;
	}
	if (r == -ETIMEDOUT || (deadline && now_ms() >= deadline)) {
		char code[sizeof(err->code)] = "", msg[sizeof(err->message)] = "";

		if (err) {
			memcpy(code, err->code, sizeof(code));
			memcpy(msg, err->message, sizeof(msg));
		}
		return kms_error_fill(err, -ETIMEDOUT, 0, code, NULL, "deadline reached for '%s'%s%.300s",
				      req->host, *msg ? ": " : "", msg);
	}
	return r;
}
