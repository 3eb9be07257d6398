/* SPDX-License-Identifier: MIT */
/*
 * HTTP messages as plain data (pure): what a codec builds and parses, and what transport/http.c sends.
 *
 * A request is split the way a signer needs it: scheme, host (authority as it goes into `Host:`), path
 * and query in their wire form (percent-encoded as they go on the request line), an ordered header
 * list that may hold the same name several times, and a body in locked memory (bodies may carry
 * key material).  Header values are wiped when freed: they carry tokens and signatures.
 *
 * Also here, because every provider needs them and they are pure: the retry policy (backoff with
 * full jitter, Retry-After parsing), which HTTP statuses are transient, and kms_error_fill().
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct secret;
struct kms_error;

#define HTTP_BODY_MAX (1024u * 1024u) /* cap on a response body */

enum {
	/* A link-local metadata service request (EC2 IMDS, Azure IMDS, GCE metadata): the only kind
	 * that may use plain http://, and it never goes through a proxy. */
	HTTP_REQ_METADATA = 1u << 0,
};

struct http_header {
	char *name;
	char *value; /* may hold obs-fold line breaks ("a\n  b") only in the SigV4 test vectors;
		      * transport/http.c refuses CR/LF in header values */
};

struct http_request {
	char *method; /* "GET", "POST", "PUT" */
	char *scheme; /* "https" (or "http" for HTTP_REQ_METADATA) */
	char *host;   /* authority: "kms.eu-west-1.amazonaws.com", "127.0.0.1:8443", "[::1]:8200" */
	char *path;   /* wire form, starts with '/' */
	char *query;  /* wire form without '?'; NULL when none */
	struct http_header *headers;
	size_t n_headers;
	struct secret *body; /* NULL: no body */
	unsigned flags;      /* HTTP_REQ_* */
	unsigned timeout_ms; /* 0: the client's default */
};

struct http_response {
	int status;
	struct http_header *headers;
	size_t n_headers;
	struct secret *body; /* NULL when empty; at most HTTP_BODY_MAX bytes */
};

/* Start a request: @url is "https://host[:port][/path][?query]" (or http:// for metadata); adds a
 * `Host` header from the URL.  @req must be zeroed or done.  Return: 0, -EINVAL (bad URL), -ENOMEM. */
int http_request_init(struct http_request *req, const char *method, const char *url);
/* Like http_request_init() but with the path (and optional query) given apart from the base URL
 * "scheme://host[:port]"; a trailing '/' of @base and a path in @base are not allowed. */
int http_request_init2(struct http_request *req, const char *method, const char *base, const char *path,
		       const char *query);
/* The request of a JSON API (every HTTPS provider): http_request_init2() limited to https, taking
 * over @body (NULL: none; freed on failure too), with "Content-Type: application/json" when there
 * is a body and "Accept: application/json".  @req must be zeroed; it is left zeroed on failure. */
int http_request_json(struct http_request *req, const char *method, const char *base, const char *path,
		      const char *query, struct secret *body);
/* Append a header (duplicates allowed). */
int http_request_header_add(struct http_request *req, const char *name, const char *value);
/* Replace the first header named @name (case-insensitive) in place, dropping any later ones, or append. */
int http_request_header_set(struct http_request *req, const char *name, const char *value);
/* Remove all headers named @name. */
void http_request_header_remove(struct http_request *req, const char *name);
/* First value of @name (case-insensitive) or NULL. */
const char *http_request_header_get(const struct http_request *req, const char *name);
/* Copy @n bytes into a new locked body (replacing any body). */
int http_request_set_body(struct http_request *req, const void *data, size_t n);
/* Take ownership of @body (replacing any body). */
void http_request_take_body(struct http_request *req, struct secret *body);
/* "scheme://host/path?query" into a heap string. */
int http_request_url(const struct http_request *req, char **ret);
/* NULL-safe; wipes header values and the body, leaves @req zeroed. */
void http_request_done(struct http_request *req);
struct http_request *http_request_free(struct http_request *req);

int http_response_header_add(struct http_response *resp, const char *name, size_t name_len,
			     const char *value, size_t value_len);
const char *http_response_header_get(const struct http_response *resp, const char *name);
void http_response_done(struct http_response *resp);
struct http_response *http_response_free(struct http_response *resp);

/* Is @status worth another attempt?  408, 425, 429, 500, 502, 503, 504 (and other 5xx). */
bool http_status_transient(int status);

/* A vendor error code and the provider.h class it means (-EACCES, -EAGAIN, -EBADMSG, ...). */
struct kms_code_class {
	const char *code;
	int r;
};

/* Reply-to-error classification shared by the remote codecs (pure).  In order:
 *   @code found in @codes (NULL-safe, ended by an entry with code == NULL): its class;
 *   2xx: 0;
 *   http_status_transient(@status): -EAGAIN (unavailable);
 *   401, 403, 404, 410: -EACCES (denied: a permanent answer of the KMS);
 *   other 4xx with a vendor code: -EACCES (an answer we do not know by name is still an answer);
 *   anything else (no status, 3xx, a 4xx without a code, 1xx): -EBADMSG (invalid). */
int kms_http_classify(int status, const char *code, const struct kms_code_class *codes);

/* Retry policy (pure; the caller sleeps).  Full jitter: rnd mod min(200 ms * 2^(attempt-1), 20 s),
 * @attempt counting from 1 for the delay before the second try.  @rnd is uniformly random. */
#define KMS_BACKOFF_BASE_MS 200u
#define KMS_BACKOFF_CAP_MS 20000u
unsigned kms_backoff_ms(unsigned attempt, uint32_t rnd);

/* Parse a Retry-After value (RFC 9110 10.2.3): delay-seconds, or an HTTP-date (IMF-fixdate, also the
 * obsolete RFC 850 and asctime forms) relative to @now.  A date in the past gives 0.
 * The result is capped at @cap_ms.  Return: 0 or -EINVAL. */
int http_retry_after_parse(const char *value, time_t now, unsigned cap_ms, unsigned *ret_ms);

/* Pure date helpers: seconds since the epoch of a UTC civil time (no TZ, no locale). */
int64_t http_timegm(int year, int mon /* 1-12 */, int mday, int hour, int min, int sec);
/* RFC 3339 / ISO 8601 "YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm)" -> time_t.  -EINVAL when malformed. */
int http_parse_rfc3339(const char *s, time_t *ret);

/* Fill @e (NULL-safe): HTTP status, vendor code, request id (NULL: none) and a one-line message.
 * Returns @r.  (Pure twin of kms_error_set(), usable from the codec library.) */
int kms_error_fill(struct kms_error *e, int r, int http_status, const char *code, const char *request_id,
		   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
