/* SPDX-License-Identifier: MIT */
/*
 * The one shared piece of every remote (HTTPS) provider: AWS, Vault, Azure Key Vault, Google Cloud
 * KMS, CipherTrust.  A provider is its pure codec (agent/kms/<p>/<p>_codec.c) plus a short driver
 * that embeds a struct kms_remote and supplies struct kms_remote_ops.  The piece owns:
 *
 *   - client setup: one struct http_client per configuration context (CaFile= of the configuration,
 *     per-attempt timeout min(deadline, 15 s), shared by every volume of a run; concurrent
 *     requests overlap: HTTP/2 streams on one TLS connection where the server offers h2, else at
 *     most KMS_REMOTE_MAX_CONNECTIONS HTTP/1.1 connections per endpoint resuming one TLS session);
 *   - the credential cache: a bearer token (or the provider's own credentials) fetched on first
 *     use, renewed margin_s before it expires (at most a quarter of a short lifetime early), and
 *     fetched again once when the KMS refuses it (expired or revoked), guarded by one mutex that is
 *     held only to log in and to authorize a request;
 *   - the retry loop: http_send_retry() with the provider's transient() (Retry-After honoured) and
 *     the run's overall deadline: 3 attempts, up to 10 while the KMS throttles (remote.c);
 *   - fail fast: once an endpoint could not be reached within the deadline, the other volumes of
 *     this run get that answer at once (KMS_DOWN_MS);
 *   - reply-to-error classification shared by the codecs: kms_http_classify() (codec/http_msg.h).
 *
 * Thread-safe: kms_remote_call() may run from several threads at once.
 */
#pragma once
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "kms/provider.h"

#define KMS_DOWN_MS 20000
#define KMS_REMOTE_MAX_CONNECTIONS 4
#define KMS_REMOTE_DEFAULT_DEADLINE_MS 30000

struct http_client;
struct http_request;
struct http_response;
struct secret;
struct kms_remote;

/* "This endpoint was unreachable a moment ago" (guarded by kms_remote.down_lock). */
struct kms_down {
	int r; /* 0, or the -EAGAIN/-ETIMEDOUT remembered */
	uint64_t until_ms;
	struct kms_error err;
};

struct kms_remote_ops {
	/* Obtain a fresh credential.  Called with the remote's lock held, never twice at once.  Send
	 * the token request with kms_remote_send().  A bearer provider sets *ret_token (NUL-terminated
	 * text in locked memory, taken over by the remote); a provider that keeps its own credentials
	 * (AWS: key id, secret key, session token) stores them in @pctx and leaves *ret_token NULL.
	 * *ret_expires: absolute time the credential stops working; 0: it does not expire.
	 * NULL: the credentials never change (static keys, a configured Vault token). */
	int (*login)(struct kms_remote *r, void *pctx, struct secret **ret_token, time_t *ret_expires,
		     struct kms_error *err);
	/* Attach the credential to @req (called with the lock held; @token NULL when login() keeps its
	 * own).  NULL: "Authorization: Bearer <token>".  Vault sets X-Vault-Token, AWS signs (SigV4). */
	int (*authorize)(void *pctx, const struct secret *token, struct http_request *req, time_t now,
			 struct kms_error *err);
	/* Does this reply say the credential itself was refused (expired, revoked, unknown)?  Then the
	 * call logs in again once and repeats the request.  NULL: status 401.  Only used with login. */
	bool (*refused)(const struct http_response *resp, void *pctx);
	/* Is this reply worth another attempt?  NULL: http_status_transient(status).  AWS adds
	 * ThrottlingException (HTTP 400), for which it returns HTTP_RETRY_THROTTLED (transport/http.h):
	 * a rate limit gets more attempts than a failure (HTTP 429 always does).  @userdata is @pctx. */
	int (*transient)(const struct http_response *resp, void *userdata);
	unsigned margin_s; /* renew this long before expiry (0: 60) */
};

struct kms_remote {
	const struct kms_remote_ops *ops;
	void *pctx;           /* the provider's context, passed back to every op */
	char *name;           /* configuration name, for messages */
	unsigned deadline_ms; /* overall budget of one KMS operation including retries */
	struct http_client *http;

	pthread_mutex_t lock;  /* guards the credential below */
	struct secret *token;  /* NULL until the first login (or when login() keeps its own); a
				* provider without login() may set a fixed token here after
				* kms_remote_init() (a configured Vault token): done() frees it */
	time_t expires;        /* 0: does not expire */
	time_t renew_at;       /* log in again from then on (expires - margin); 0: never */
	bool logged_in;        /* login() succeeded at least once and was not invalidated */
	unsigned gen;          /* bumped on every login */

	pthread_mutex_t down_lock;
	struct kms_down down;
};

/* Set up @r for configuration @cfg: name, deadline (rt->timeout_ms, else the default), the HTTP
 * client trusting CaFile= of @cfg (NULL: the system store), with rt's observer (-v logging).  No
 * network I/O.  On failure fills @err; kms_remote_done() is safe after a failed init. */
int kms_remote_init(struct kms_remote *r, const struct kms_remote_ops *ops, void *pctx,
		    const struct kms_config *cfg, const struct kms_runtime *rt, struct kms_error *err);
void kms_remote_done(struct kms_remote *r); /* frees what init made; @r itself is the caller's */

/* Build a request for @op (the provider's own operation description) into @ret: called without the
 * lock; must not use the credential (kms_remote_call() attaches it). */
typedef int (*kms_remote_build_fn)(void *pctx, const void *op, struct http_request *ret);

/* One authenticated KMS request: fail fast if the endpoint is known down, build, log in when due
 * and authorize, send with retries, remember a network failure; a refused credential on the first
 * attempt: log in again and repeat once.  Returns 0 with the reply, whatever its status, in @ret
 * (the codec classifies it), or a provider.h error with @err filled. */
int kms_remote_call(struct kms_remote *r, kms_remote_build_fn build, const void *op,
		    struct http_response *ret, struct kms_error *err);

/* One unauthenticated request (token endpoint, instance metadata) with the same retries, deadline
 * and fail-fast memory.  Safe with or without r->lock held.  Retries use the transport's default
 * (http_status_transient()), not ops->transient: a token endpoint is not the KMS. */
int kms_remote_send(struct kms_remote *r, const struct http_request *req, struct http_response *ret,
		    struct kms_error *err);

/* kms_remote_send() to an endpoint that deserves its own message when it cannot be reached (an
 * instance metadata service, a token endpoint): a network failure (-EAGAIN/-ETIMEDOUT without an
 * HTTP reply) is described as "<prefix>: <transport message>" with vendor code @code, and that is
 * what the fail-fast memory repeats to the other volumes.  (Additive to the lead's contract.) */
int kms_remote_send_named(struct kms_remote *r, const struct http_request *req, const char *code,
			  const char *prefix, struct http_response *ret, struct kms_error *err);

/* The current credential for a provider that must sign inside its own code (AWS): makes sure it is
 * fresh (logging in when due) and calls @fn with the lock held.  Returns what @fn returns. */
int kms_remote_with_credential(struct kms_remote *r,
			       int (*fn)(void *pctx, const struct secret *token, void *userdata),
			       void *userdata, struct kms_error *err);

/* Forget the credential of generation @gen (the KMS refused it): the next call logs in again. */
void kms_remote_invalidate(struct kms_remote *r, unsigned gen);

uint64_t kms_mono_ms(void);

/* Normalize "https://host[:port][/]" to "https://host[:port]" (no path, query or userinfo);
 * -EINVAL for anything else, -ENOMEM. */
int kms_url_base(const char *url, char **ret);
