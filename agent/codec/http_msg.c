/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec/http_msg.h"
#include "codec/kms_error.h"
#include "util/cleanup.h"
#include "util/secret.h"

static void free_wiped(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

static void headers_free(struct http_header *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(h[i].name);
		free_wiped(h[i].value);
	}
	free(h);
}

/* Characters allowed in an authority we accept: reg-name, IPv4, [IPv6] and :port.  No userinfo. */
static bool authority_ok(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == ':' || c == '[' || c == ']' || c == '_'))
			return false;
	}
	return true;
}

/* Path and query: printable ASCII without space, '#' or '"' (the wire form). */
static bool wire_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '#' || *s == '"')
			return false;
	return true;
}

static int split_scheme(const char *url, char **ret_scheme, const char **ret_rest)
{
	if (strncmp(url, "https://", 8) == 0) {
		*ret_rest = url + 8;
		*ret_scheme = strdup("https");
	} else if (strncmp(url, "http://", 7) == 0) {
		*ret_rest = url + 7;
		*ret_scheme = strdup("http");
	} else
		return -EINVAL;
	return *ret_scheme ? 0 : -ENOMEM;
}

int http_request_init2(struct http_request *req, const char *method, const char *base, const char *path,
		       const char *query)
{
	const char *rest;
	int r;

	if (!method || !base || !path || path[0] != '/' || !wire_ok(path) || (query && !wire_ok(query)))
		return -EINVAL;
	memset(req, 0, sizeof(*req));
	r = split_scheme(base, &req->scheme, &rest);
	if (r < 0)
		return r;
	if (!authority_ok(rest, strlen(rest))) {
		http_request_done(req);
		return -EINVAL;
	}
	req->method = strdup(method);
	req->host = strdup(rest);
	req->path = strdup(path);
	req->query = query && *query ? strdup(query) : NULL;
	if (!req->method || !req->host || !req->path || (query && *query && !req->query)) {
		http_request_done(req);
		return -ENOMEM;
	}
	r = http_request_header_add(req, "Host", req->host);
	if (r < 0)
		http_request_done(req);
	return r;
}

int http_request_init(struct http_request *req, const char *method, const char *url)
{
	_cleanup_free_ char *scheme = NULL, *base = NULL, *path = NULL;
	const char *rest, *p, *q;
	int r;

	r = split_scheme(url, &scheme, &rest);
	if (r < 0)
		return r;
	p = rest + strcspn(rest, "/?#");
	if (*p == '#')
		return -EINVAL;
	if (asprintf(&base, "%s://%.*s", scheme, (int)(p - rest), rest) < 0)
		return -ENOMEM;
	q = strchr(p, '?');
	if (q) {
		path = p == q ? strdup("/") : strndup(p, (size_t)(q - p));
		q++;
	} else
		path = strdup(*p ? p : "/");
	if (!path)
		return -ENOMEM;
	return http_request_init2(req, method, base, path, q);
}

static bool header_name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == ':')
			return false;
	return true;
}

int http_request_json(struct http_request *req, const char *method, const char *base, const char *path,
		      const char *query, struct secret *body)
{
	struct http_request r0 = {};
	int r;

	r = base ? http_request_init2(&r0, method, base, path, query) : -EINVAL;
	if (r >= 0 && strcmp(r0.scheme, "https") != 0)
		r = -EINVAL;
	if (r < 0) {
		http_request_done(&r0);
		secret_free(body);
		return r;
	}
	http_request_take_body(&r0, body);
	if (body)
		r = http_request_header_add(&r0, "Content-Type", "application/json");
	if (r >= 0)
		r = http_request_header_add(&r0, "Accept", "application/json");
	if (r < 0) {
		http_request_done(&r0);
		return r;
	}
	*req = r0;
	return 0;
}

int http_request_header_add(struct http_request *req, const char *name, const char *value)
{
	struct http_header *h;

	if (!header_name_ok(name) || !value)
		return -EINVAL;
	h = reallocarray(req->headers, req->n_headers + 1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	req->headers = h;
	h[req->n_headers].name = strdup(name);
	h[req->n_headers].value = strdup(value);
	if (!h[req->n_headers].name || !h[req->n_headers].value) {
		free(h[req->n_headers].name);
		free(h[req->n_headers].value);
		return -ENOMEM;
	}
	req->n_headers++;
	return 0;
}

int http_request_header_set(struct http_request *req, const char *name, const char *value)
{
	size_t i, j;
	char *v;

	for (i = 0; i < req->n_headers; i++)
		if (strcasecmp(req->headers[i].name, name) == 0)
			break;
	if (i == req->n_headers)
		return http_request_header_add(req, name, value);
	v = strdup(value);
	if (!v)
		return -ENOMEM;
	free_wiped(req->headers[i].value);
	req->headers[i].value = v;
	/* drop later duplicates */
	for (j = i + 1; j < req->n_headers;) {
		if (strcasecmp(req->headers[j].name, name) == 0) {
			free(req->headers[j].name);
			free_wiped(req->headers[j].value);
			memmove(&req->headers[j], &req->headers[j + 1],
				(req->n_headers - j - 1) * sizeof(req->headers[0]));
			req->n_headers--;
		} else
			j++;
	}
	return 0;
}

void http_request_header_remove(struct http_request *req, const char *name)
{
	for (size_t j = 0; j < req->n_headers;) {
		if (strcasecmp(req->headers[j].name, name) == 0) {
			free(req->headers[j].name);
			free_wiped(req->headers[j].value);
			memmove(&req->headers[j], &req->headers[j + 1],
				(req->n_headers - j - 1) * sizeof(req->headers[0]));
			req->n_headers--;
		} else
			j++;
	}
}

const char *http_request_header_get(const struct http_request *req, const char *name)
{
	for (size_t i = 0; i < req->n_headers; i++)
		if (strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

int http_request_set_body(struct http_request *req, const void *data, size_t n)
{
	struct secret *b;
	int r;

	r = secret_from(data, n, &b);
	if (r < 0)
		return r;
	http_request_take_body(req, b);
	return 0;
}

void http_request_take_body(struct http_request *req, struct secret *body)
{
	secret_free(req->body);
	req->body = body;
}

int http_request_url(const struct http_request *req, char **ret)
{
	char *u;

	if (!req->scheme || !req->host || !req->path)
		return -EINVAL;
	if (asprintf(&u, "%s://%s%s%s%s", req->scheme, req->host, req->path, req->query ? "?" : "",
		     req->query ? req->query : "") < 0)
		return -ENOMEM;
	*ret = u;
	return 0;
}

void http_request_done(struct http_request *req)
{
	if (!req)
		return;
	free(req->method);
	free(req->scheme);
	free(req->host);
	free(req->path);
	free(req->query);
	headers_free(req->headers, req->n_headers);
	secret_free(req->body);
	memset(req, 0, sizeof(*req));
}

struct http_request *http_request_free(struct http_request *req)
{
	http_request_done(req);
	free(req);
	return NULL;
}

int http_response_header_add(struct http_response *resp, const char *name, size_t name_len,
			     const char *value, size_t value_len)
{
	struct http_header *h;

	if (resp->n_headers >= 256) /* a reply with more headers than this is not from a KMS */
		return -EBADMSG;
	h = reallocarray(resp->headers, resp->n_headers + 1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	resp->headers = h;
	h[resp->n_headers].name = strndup(name, name_len);
	h[resp->n_headers].value = strndup(value, value_len);
	if (!h[resp->n_headers].name || !h[resp->n_headers].value) {
		free(h[resp->n_headers].name);
		free(h[resp->n_headers].value);
		return -ENOMEM;
	}
	resp->n_headers++;
	return 0;
}

const char *http_response_header_get(const struct http_response *resp, const char *name)
{
	for (size_t i = 0; i < resp->n_headers; i++)
		if (strcasecmp(resp->headers[i].name, name) == 0)
			return resp->headers[i].value;
	return NULL;
}

void http_response_done(struct http_response *resp)
{
	if (!resp)
		return;
	headers_free(resp->headers, resp->n_headers);
	secret_free(resp->body);
	memset(resp, 0, sizeof(*resp));
}

struct http_response *http_response_free(struct http_response *resp)
{
	http_response_done(resp);
	free(resp);
	return NULL;
}

bool http_status_transient(int status)
{
	/* 408 Request Timeout, 425 Too Early, 429 Too Many Requests, 5xx except 501 Not Implemented
	 * and 505 HTTP Version Not Supported, which will not get better by asking again. */
	if (status == 408 || status == 425 || status == 429)
		return true;
	return status >= 500 && status <= 599 && status != 501 && status != 505;
}

unsigned kms_backoff_ms(unsigned attempt, uint32_t rnd)
{
	uint64_t ceiling = KMS_BACKOFF_BASE_MS;

	if (attempt == 0)
		return 0;
	for (unsigned i = 1; i < attempt && ceiling < KMS_BACKOFF_CAP_MS; i++)
		ceiling *= 2;
	if (ceiling > KMS_BACKOFF_CAP_MS)
		ceiling = KMS_BACKOFF_CAP_MS;
	/* full jitter: uniform in [0, ceiling] */
	return (unsigned)(rnd % (ceiling + 1));
}

int64_t http_timegm(int year, int mon, int mday, int hour, int min, int sec)
{
	/* days from civil (Howard Hinnant's algorithm), proleptic Gregorian */
	int64_t y = year - (mon <= 2);
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t mp = (mon + 9) % 12;
	int64_t doy = (153 * mp + 2) / 5 + mday - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	int64_t days = era * 146097 + doe - 719468;

	return days * 86400 + hour * 3600 + min * 60 + sec;
}

static int month_from_name(const char *s)
{
	static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

	for (int i = 0; i < 12; i++)
		if (strncmp(s, names + 3 * i, 3) == 0)
			return i + 1;
	return -1;
}

static bool date_ok(int y, int mo, int d, int h, int mi, int s)
{
	return y >= 1970 && y <= 9999 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h >= 0 && h <= 23 &&
	       mi >= 0 && mi <= 59 && s >= 0 && s <= 60;
}

/* IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT",
 * asctime "Sun Nov  6 08:49:37 1994". */
static int http_date_parse(const char *v, int64_t *ret)
{
	char wd[16], mon[4], tz[4];
	int d, y, h, mi, s, n = 0, mo;

	if (sscanf(v, "%3s, %2d %3s %4d %2d:%2d:%2d %3s%n", wd, &d, mon, &y, &h, &mi, &s, tz, &n) == 8 &&
	    v[n] == 0 && strcmp(tz, "GMT") == 0) {
	} else if (sscanf(v, "%15[A-Za-z], %2d-%3s-%2d %2d:%2d:%2d %3s%n", wd, &d, mon, &y, &h, &mi, &s,
			  tz, &n) == 8 &&
		   v[n] == 0 && strcmp(tz, "GMT") == 0) {
		y += y < 70 ? 2000 : 1900;
	} else if (sscanf(v, "%3s %3s %2d %2d:%2d:%2d %4d%n", wd, mon, &d, &h, &mi, &s, &y, &n) == 7 &&
		   v[n] == 0) {
	} else
		return -EINVAL;
	mo = month_from_name(mon);
	if (mo < 0 || !date_ok(y, mo, d, h, mi, s))
		return -EINVAL;
	*ret = http_timegm(y, mo, d, h, mi, s);
	return 0;
}

int http_retry_after_parse(const char *value, time_t now, unsigned cap_ms, unsigned *ret_ms)
{
	const char *p = value;
	uint64_t secs = 0;
	int64_t when;

	if (!value)
		return -EINVAL;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p >= '0' && *p <= '9') {
		for (; *p >= '0' && *p <= '9'; p++) {
			secs = secs * 10 + (uint64_t)(*p - '0');
			if (secs > 86400u * 365)
				secs = 86400u * 365;
		}
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p)
			return -EINVAL;
	} else {
		if (http_date_parse(p, &when) < 0)
			return -EINVAL;
		secs = when > (int64_t)now ? (uint64_t)(when - (int64_t)now) : 0;
	}
	*ret_ms = secs * 1000 > cap_ms ? cap_ms : (unsigned)(secs * 1000);
	return 0;
}

int http_parse_rfc3339(const char *s, time_t *ret)
{
	int y, mo, d, h, mi, sec, n = 0, off = 0;
	const char *p;
	int64_t t;

	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
		return -EINVAL;
	if (!date_ok(y, mo, d, h, mi, sec))
		return -EINVAL;
	p = s + n;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	if ((*p == 'Z' || *p == 'z') && p[1] == 0)
		off = 0;
	else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':' && p[1] >= '0' && p[1] <= '9' &&
		 p[2] >= '0' && p[2] <= '9' && p[4] >= '0' && p[4] <= '9' && p[5] >= '0' && p[5] <= '9') {
		off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 + ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
		if (*p == '-')
			off = -off;
	} else
		return -EINVAL;
	t = http_timegm(y, mo, d, h, mi, sec) - off;
	*ret = (time_t)t;
	return 0;
}

int kms_http_classify(int status, const char *code, const struct kms_code_class *codes)
{
	if (code && *code)
		for (const struct kms_code_class *c = codes; c && c->code; c++)
			if (strcmp(c->code, code) == 0)
				return c->r;
	if (status >= 200 && status <= 299)
		return 0;
	if (http_status_transient(status))
		return -EAGAIN;
	if (status == 401 || status == 403 || status == 404 || status == 410)
		return -EACCES;
	if (status >= 400 && status <= 499 && code && *code)
		return -EACCES;
	return -EBADMSG;
}

int kms_error_fill(struct kms_error *e, int r, int http_status, const char *code, const char *request_id,
		   const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return r;
	e->http_status = http_status;
	e->token_rejected = false; /* a new reply: the codec sets it again when it applies */
	snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
	snprintf(e->request_id, sizeof(e->request_id), "%s", request_id ? request_id : "");
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	/* one line, printable: vendor messages may carry newlines or control characters */
	kms_error_sanitize(e);
	return r;
}
