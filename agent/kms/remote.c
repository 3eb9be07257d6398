/* SPDX-License-Identifier: MIT */
/*
 * The shared piece of the remote (HTTPS) providers (remote.h): client setup, credential cache,
 * retry loop and fail-fast memory.  Two locks: @lock guards the credential and is held across a
 * login (network I/O, so that concurrent volumes wait for one login instead of each doing their
 * own); @down_lock guards the fail-fast memory and is only ever held for a copy, so it may be
 * taken with or without @lock held (never the other way round).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/http_msg.h"
#include "kms/remote.h"
#include "transport/http.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define KMS_REMOTE_DEFAULT_MARGIN_S 60
#define KMS_REMOTE_ATTEMPT_MAX_MS 15000u
/* Attempts of one request: 3 (libmongocrypt's policy) for a network failure or a 5xx, so that a
 * KMS that is down fails fast; up to 10 while the KMS throttles (HTTP 429, AWS
 * ThrottlingException), the answer of a healthy KMS to a fleet booting at once, where 3 tries
 * within 0.6 s would give up long before the quota has room.  Waits: full jitter
 * (kms_backoff_ms()), at least Retry-After; the run's deadline (--timeout, 30 s) bounds it all. */
#define KMS_REMOTE_ATTEMPTS 3u
#define KMS_REMOTE_THROTTLED_ATTEMPTS 10u

uint64_t kms_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int kms_url_base(const char *url, char **ret)
{
	const char *host;
	size_t n;

	if (!url || strncmp(url, "https://", 8) != 0)
		return -EINVAL;
	n = strlen(url);
	while (n > 8 && url[n - 1] == '/')
		n--;
	host = url + 8;
	if (n == 8 || memchr(host, '/', n - 8) || memchr(host, '?', n - 8) ||
	    memchr(host, '#', n - 8) || memchr(host, '@', n - 8))
		return -EINVAL;
	*ret = strndup(url, n);
	return *ret ? 0 : -ENOMEM;
}

int kms_remote_init(struct kms_remote *r, const struct kms_remote_ops *ops, void *pctx,
		    const struct kms_config *cfg, const struct kms_runtime *rt,
		    struct kms_error *err)
{
	const char *ca_file = kms_config_get(cfg, "CaFile");
	struct http_client_options o = {
	    .ca_file = ca_file,
	    /* the volumes' requests overlap: HTTP/2 streams on one connection where the server
	     * offers h2, else up to this many HTTP/1.1 connections resuming one TLS session */
	    .max_connections = KMS_REMOTE_MAX_CONNECTIONS,
	    .observer = rt ? rt->http_observer : NULL,
	    .observer_data = rt ? rt->http_observer_data : NULL,
	};
	int k;

	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->down_lock, NULL);
	r->ops = ops;
	r->pctx = pctx;
	r->deadline_ms =
	    rt && rt->timeout_ms > 0 ? (unsigned)rt->timeout_ms : KMS_REMOTE_DEFAULT_DEADLINE_MS;
	r->name = strdup(cfg && cfg->name ? cfg->name : "");
	if (!r->name)
		return -ENOMEM;
	o.request_timeout_ms = MIN(r->deadline_ms, KMS_REMOTE_ATTEMPT_MAX_MS);
	k = http_client_new(&o, &r->http);
	if (k == -ELIBACC)
		return kms_error_set(err, k, "", "cannot load libcurl (libcurl.so.4, 7.68 or later), "
				     "which a remote KMS needs: install libcurl4");
	if (k < 0)
		return kms_error_set(err, k, "", "cannot set up the HTTPS client%s%s",
				     ca_file ? " with CaFile=" : "", ca_file ? ca_file : "");
	return 0;
}

void kms_remote_done(struct kms_remote *r)
{
	if (!r || !r->ops)
		return;
	http_client_free(r->http);
	secret_free(r->token);
	free(r->name);
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->down_lock);
	memset(r, 0, sizeof(*r));
}

/* ---- fail fast ---------------------------------------------------------------------------------
 */

/* The failure remembered a moment ago (copied to @err) while it is fresh, else 0. */
static int down_check(struct kms_remote *r, struct kms_error *err)
{
	int k = 0;

	pthread_mutex_lock(&r->down_lock);
	if (r->down.r < 0 && kms_mono_ms() < r->down.until_ms) {
		k = r->down.r;
		if (err)
			*err = r->down.err;
	}
	pthread_mutex_unlock(&r->down_lock);
	return k;
}

/* Remember @k if it is a network failure that outlasted the retries (no HTTP answer: even a 5xx
 * is an answer and is not remembered).  Returns @k. */
static int down_note(struct kms_remote *r, int k, const struct kms_error *err)
{
	if ((k != -EAGAIN && k != -ETIMEDOUT) || (err && err->http_status != 0))
		return k;
	pthread_mutex_lock(&r->down_lock);
	r->down.r = k;
	r->down.until_ms = kms_mono_ms() + KMS_DOWN_MS;
	if (err)
		r->down.err = *err;
	else
		memset(&r->down.err, 0, sizeof(r->down.err));
	pthread_mutex_unlock(&r->down_lock);
	return k;
}

/* Send with retries; a network failure is named (@code, @prefix: see kms_remote_send_named())
 * and remembered. */
static int send_policy(struct kms_remote *r, const struct http_request *req,
		       const struct http_retry *policy, const char *code, const char *prefix,
		       struct http_response *ret, struct kms_error *err)
{
	struct kms_error e = {};
	int k;

	k = down_check(r, err);
	if (k < 0)
		return k;
	k = http_send_retry(r->http, req, policy, ret, &e);
	if (k < 0 && prefix && (k == -EAGAIN || k == -ETIMEDOUT) && e.http_status == 0) {
		char msg[sizeof(e.message)];

		snprintf(msg, sizeof(msg), "%.300s", e.message);
		kms_error_set(&e, k, code ? code : "", "%s: %s", prefix, msg);
	}
	if (err)
		*err = e;
	if (k < 0)
		return down_note(r, k, &e);
	return 0;
}

int kms_remote_send(struct kms_remote *r, const struct http_request *req, struct http_response *ret,
		    struct kms_error *err)
{
	struct http_retry policy = {
	    .max_attempts = KMS_REMOTE_ATTEMPTS,
	    .deadline_ms = r->deadline_ms,
	    .max_attempts_throttled = KMS_REMOTE_THROTTLED_ATTEMPTS,
	};

	return send_policy(r, req, &policy, NULL, NULL, ret, err);
}

int kms_remote_send_named(struct kms_remote *r, const struct http_request *req, const char *code,
			  const char *prefix, struct http_response *ret, struct kms_error *err)
{
	struct http_retry policy = {
	    .max_attempts = KMS_REMOTE_ATTEMPTS,
	    .deadline_ms = r->deadline_ms,
	    .max_attempts_throttled = KMS_REMOTE_THROTTLED_ATTEMPTS,
	};

	return send_policy(r, req, &policy, code, prefix, ret, err);
}

/* ---- credential
 * ---------------------------------------------------------------------------------- */

/* Log in when due.  Called with r->lock held. */
static int ensure_login(struct kms_remote *r, time_t now, struct kms_error *err)
{
	struct secret *tok = NULL;
	time_t expires = 0;
	unsigned margin;
	int k;

	if (!r->ops->login || (r->logged_in && (!r->renew_at || now < r->renew_at)))
		return 0;
	k = r->ops->login(r, r->pctx, &tok, &expires, err);
	if (k < 0) {
		secret_free(tok);
		return k;
	}
	if (tok) {
		secret_free(r->token);
		r->token = tok;
	}
	r->expires = expires;
	/* renew margin_s early, but at most a quarter of a short lifetime early */
	margin = r->ops->margin_s ? r->ops->margin_s : KMS_REMOTE_DEFAULT_MARGIN_S;
	if (!expires)
		r->renew_at = 0;
	else if (expires <= now)
		r->renew_at = expires; /* already stale: use it once, log in again next time */
	else
		r->renew_at = expires - (time_t)MIN((time_t)margin, (expires - now) / 4);
	r->logged_in = true;
	r->gen++;
	return 0;
}

static int authorize_bearer(const struct secret *token, struct http_request *req,
			    struct kms_error *err)
{
	_cleanup_free_ char *v = NULL;
	size_t n;
	int k;

	if (!token || !token->buf || token->len == 0)
		return kms_error_set(err, -EINVAL, "", "no access token to authorize the request");
	n = token->len + sizeof("Bearer ");
	v = malloc(n);
	if (!v)
		return -ENOMEM;
	snprintf(v, n, "Bearer %.*s", (int)token->len, (const char *)token->buf);
	k = http_request_header_set(req, "Authorization", v);
	explicit_bzero(v, n);
	return k;
}

int kms_remote_with_credential(struct kms_remote *r,
			       int (*fn)(void *pctx, const struct secret *token, void *userdata),
			       void *userdata, struct kms_error *err)
{
	int k;

	pthread_mutex_lock(&r->lock);
	k = ensure_login(r, time(NULL), err);
	if (k >= 0)
		k = fn(r->pctx, r->token, userdata);
	pthread_mutex_unlock(&r->lock);
	return k;
}

void kms_remote_invalidate(struct kms_remote *r, unsigned gen)
{
	pthread_mutex_lock(&r->lock);
	if (r->gen == gen)
		r->logged_in = false;
	pthread_mutex_unlock(&r->lock);
}

/* ---- the call
 * ------------------------------------------------------------------------------------ */

static bool refused_default(const struct http_response *resp, void *pctx)
{
	(void)pctx;
	return resp->status == 401;
}

int kms_remote_call(struct kms_remote *r, kms_remote_build_fn build, const void *op,
		    struct http_response *ret, struct kms_error *err)
{
	struct http_retry policy = {
	    .max_attempts = KMS_REMOTE_ATTEMPTS,
	    .deadline_ms = r->deadline_ms,
	    .transient = r->ops->transient,
	    .userdata = r->pctx,
	    .max_attempts_throttled = KMS_REMOTE_THROTTLED_ATTEMPTS,
	};

	for (unsigned attempt = 0;; attempt++) {
		_cleanup_(http_request_done) struct http_request req = {};
		struct http_response resp = {};
		unsigned gen;
		int k;

		k = down_check(r, err);
		if (k < 0)
			return k;
		k = build(r->pctx, op, &req);
		if (k == -EINVAL)
			return kms_error_set(err, k, "",
					     "cannot build the KMS request of configuration '%s' "
					     "(check its key name and URL settings)",
					     r->name);
		if (k < 0)
			return k;

		pthread_mutex_lock(&r->lock);
		k = ensure_login(r, time(NULL), err);
		if (k >= 0) {
			if (r->ops->authorize)
				k = r->ops->authorize(r->pctx, r->token, &req, time(NULL), err);
			else
				k = authorize_bearer(r->token, &req, err);
		}
		gen = r->gen;
		pthread_mutex_unlock(&r->lock);
		if (k < 0)
			return k;

		k = send_policy(r, &req, &policy, NULL, NULL, &resp, err);
		if (k < 0)
			return k;
		if (attempt == 0 && r->ops->login &&
		    (r->ops->refused ? r->ops->refused : refused_default)(&resp, r->pctx)) {
			/* expired or revoked: one fresh login, one more try */
			http_response_done(&resp);
			kms_remote_invalidate(r, gen);
			continue;
		}
		*ret = resp;
		return 0;
	}
}
