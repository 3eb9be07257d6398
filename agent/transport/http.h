/* SPDX-License-Identifier: MIT */
/*
 * HTTPS transport: the only place that talks to libcurl (STYLE.md sections 1 and 4).
 *
 * One struct http_client per command run, shared by every provider and volume, safe to use from
 * several threads at once.  Design:
 *   - one curl multi handle per client, driven by one worker thread (started on the first request,
 *     all signals blocked, joined by http_client_free()): libcurl multiplexes HTTP/2 streams only
 *     within one multi handle, which one thread at a time may use.  A caller sets up an easy handle
 *     for its attempt, queues it and waits; the worker runs every transfer and every callback.
 *     So concurrent requests overlap instead of queueing: where the server's ALPN offers h2 they
 *     are streams on ONE TLS connection per endpoint (CURLOPT_PIPEWAIT: the first connection is
 *     awaited to learn whether it multiplexes); otherwise at most max_connections HTTP/1.1
 *     connections per endpoint, further requests waiting inside libcurl for a free one.
 *     Connections live in the multi handle's cache and are reused by later requests.
 *   - one CURLSH share (with lock callbacks) for the DNS cache and TLS sessions, so a second
 *     connection to the same endpoint resumes the TLS session.
 *   - TLS verification always on (there is no switch to turn it off); https only, except a request
 *     flagged HTTP_REQ_METADATA to a link-local/loopback metadata address, which may be plain http and
 *     never uses a proxy.  HTTPS_PROXY/NO_PROXY from the environment are honoured (libcurl's default).
 *   - response bodies go into locked memory, capped at body_max; bodies are never logged and
 *     CURLOPT_VERBOSE is never set.
 *   - what remains outside locked memory is libcurl's: it (7.88) assembles each request, headers
 *     (tokens, the signed session token) and, for bodies under 64 KiB, the body too (an Encrypt
 *     plaintext, a Vault secret_id), in its own heap buffer, which it frees without wiping; and its
 *     receive buffers (the easy handle's, freed after each attempt, and an HTTP/2 connection's
 *     stream buffers) hold a reply (a Decrypt reply carries the key, in base64) until freed or
 *     overwritten, unwiped.  OpenSSL's
 *     record buffers are cleansed: every TLS context gets SSL_OP_CLEANSE_PLAINTEXT
 *     (CURLOPT_SSL_CTX_FUNCTION), so a decrypted record is wiped once read, and outgoing plaintext
 *     is encrypted in place in the write buffer.
 *
 * Errors (provider.h classes):  -EAGAIN network/timeout/reset (message "could not connect to 'host':
 * ..."), -EACCES certificate not trusted (permanent: the message points at --ca-file), -EBADMSG reply
 * larger than the cap or not HTTP, -EINVAL request refused before sending (scheme, header with CR/LF),
 * -ETIMEDOUT overall deadline passed (http_send_retry), -ENOMEM.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_request;
struct http_response;
struct kms_error;
struct http_client;

/* What the transport reports about each attempt to an observer (-v logging at the front end).
 * Never bodies, never header values other than the request id. */
struct http_event {
	const char *method;     /* "POST" */
	const char *url;        /* "https://host[:port]/path" without the query */
	int status;             /* HTTP status, 0 when no reply arrived */
	int error;              /* 0, or the transport error (-EAGAIN, -EACCES, ...) */
	const char *message;    /* transport failure, one line; "" otherwise */
	unsigned latency_ms;    /* from sending to the reply (or the failure) */
	const char *request_id; /* the vendor's request id header, or NULL */
	unsigned attempt;       /* 1 for the first try */
	bool retrying;          /* another attempt follows (after backoff_ms, which full jitter may
				 * make 0) */
	unsigned backoff_ms;    /* the wait before the next attempt; 0 when none follows */
	bool reused;            /* the attempt reused an open connection */
};
typedef void (*http_observer_fn)(const struct http_event *ev, void *userdata);

struct http_client_options {
	const char *ca_file;          /* PEM bundle to trust instead of the system store; NULL: system */
	unsigned connect_timeout_ms;  /* 0: 5000 */
	unsigned request_timeout_ms;  /* per attempt; 0: 15000 (a request's own timeout_ms wins) */
	unsigned max_attempts;        /* http_send_retry(); 0: 3 */
	unsigned max_connections;     /* HTTP/1.1 connections per endpoint (HTTP/2: one); 0: 4 */
	size_t body_max;              /* 0: HTTP_BODY_MAX */
	const char *user_agent;       /* NULL: "kmscrypt/<version>" */
	/* Tests: called with each new TLS context (an OpenSSL SSL_CTX *) once kmscrypt set it up
	 * (from the worker thread). */
	void (*tls_ctx_hook)(void *ssl_ctx, void *userdata);
	void *tls_ctx_hook_data;
	/* Called after every attempt (from the calling thread).  NULL: none. */
	http_observer_fn observer;
	void *observer_data;
};

struct http_stats {
	uint64_t requests; /* transfers attempted (each retry counts) */
	uint64_t connects; /* new connections made (sum of CURLINFO_NUM_CONNECTS) */
	uint64_t retries;  /* attempts after the first in http_send_retry() */
};

/* libcurl (libcurl.so.4) is loaded by the first call, not at process start: a command that makes no
 * client never maps it.  -ELIBACC: it cannot be loaded (not installed, or older than 7.68);
 * -ENOMEM. */
int http_client_new(const struct http_client_options *o, struct http_client **ret);
struct http_client *http_client_free(struct http_client *c); /* NULL-safe; returns NULL */
void http_client_freep(struct http_client **c);
void http_client_get_stats(struct http_client *c, struct http_stats *ret);

/* One attempt.  0 when an HTTP reply arrived, whatever its status (the codec parses it); *ret is
 * written only then.  @err (optional) gets the message for a transport failure. */
int http_send(struct http_client *c, const struct http_request *req, struct http_response *ret,
	      struct kms_error *err);

/* What transient() returns for a rate limit (HTTP 429 counts as one whatever it returns). */
#define HTTP_RETRY_THROTTLED 2

/* Retry policy for http_send_retry(). */
struct http_retry {
	unsigned max_attempts; /* 0: the client's */
	unsigned deadline_ms;  /* overall budget for all attempts and waits; 0: none beyond attempts */
	/* Is this reply worth another attempt?  NULL: http_status_transient(status).  AWS passes a function
	 * that also retries ThrottlingException (HTTP 400) and returns HTTP_RETRY_THROTTLED for it. */
	int (*transient)(const struct http_response *resp, void *userdata);
	void *userdata;
	/* Attempts while the server is throttling (the last reply was a rate limit): a healthy server
	 * asking to come back later, so a fleet booting at once may need more tries than a failure
	 * deserves.  0 or less than max_attempts: max_attempts.  The deadline still bounds it. */
	unsigned max_attempts_throttled;
};

/* http_send() with retries: transport -EAGAIN and transient replies are retried after
 * max(Retry-After, kms_backoff_ms(attempt, random)); everything else (-EACCES, -EINVAL, 4xx answers)
 * is returned at once.  When attempts run out on a transient reply, that reply is returned (0) for
 * the codec to classify; when the deadline passes during a transport failure, -ETIMEDOUT. */
int http_send_retry(struct http_client *c, const struct http_request *req, const struct http_retry *policy,
		    struct http_response *ret, struct kms_error *err);
