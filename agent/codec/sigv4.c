/* SPDX-License-Identifier: MIT */
/*
 * AWS SigV4, following the published pseudocode:
 *
 *   CanonicalRequest = Method \n CanonicalURI \n CanonicalQuery \n
 *                      CanonicalHeaders (name:value\n ...) \n SignedHeaders \n hex(SHA256(body))
 *   StringToSign     = "AWS4-HMAC-SHA256" \n X-Amz-Date \n <yyyymmdd>/<region>/<service>/aws4_request \n
 *                      hex(SHA256(CanonicalRequest))
 *   kDate = HMAC("AWS4" + secret, yyyymmdd); kRegion = HMAC(kDate, region);
 *   kService = HMAC(kRegion, service); kSigning = HMAC(kService, "aws4_request")
 *   Signature = hex(HMAC(kSigning, StringToSign))
 *
 * The intermediate keys are key material: they live on the stack and are wiped with explicit_bzero().
 * The canonical request carries the session token (the signed X-Amz-Security-Token header), so
 * every string built here grows by copying and wiping (never realloc()) and is wiped before free.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "codec/http_msg.h"
#include "codec/sigv4.h"
#include "util/cleanup.h"
#include "util/secret.h"

void aws_creds_done(struct aws_creds *c)
{
	if (!c)
		return;
	free(c->access_key_id);
	secret_free(c->secret_access_key);
	if (c->session_token) {
		explicit_bzero(c->session_token, strlen(c->session_token));
		free(c->session_token);
	}
	memset(c, 0, sizeof(*c));
}

/* A growable string; sticky error.  Growing copies into a new buffer and wipes the old one. */
struct sbuf {
	char *s;
	size_t len, cap;
	int r;
};

static void sb_free(struct sbuf *b)
{
	if (b->s) {
		explicit_bzero(b->s, b->cap);
		free(b->s);
	}
	*b = (struct sbuf){};
}

static void sb_put(struct sbuf *b, const void *data, size_t n)
{
	if (b->r < 0)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = MAX(b->cap * 2, b->len + n + 64);
		char *s = malloc(cap);
		if (!s) {
			b->r = -ENOMEM;
			return;
		}
		if (b->s) {
			memcpy(s, b->s, b->len + 1);
			explicit_bzero(b->s, b->cap);
			free(b->s);
		}
		b->s = s;
		b->cap = cap;
	}
	memcpy(b->s + b->len, data, n);
	b->len += n;
	b->s[b->len] = 0;
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

static void sb_chr(struct sbuf *b, char c)
{
	sb_put(b, &c, 1);
}

static int sb_take(struct sbuf *b, char **ret)
{
	if (b->r < 0) {
		int r = b->r;

		sb_free(b);
		return r;
	}
	if (!b->s)
		sb_put(b, "", 0);
	if (b->r < 0)
		return b->r;
	*ret = b->s;
	return 0;
}

static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '_' || c == '.' || c == '~';
}

/* AWS URI encoding: every byte but the unreserved set as %XX (upper-case hex); '/' kept when asked. */
static void sb_uri_encode(struct sbuf *b, const char *s, size_t n, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (unreserved(c) || (keep_slash && c == '/'))
			sb_chr(b, (char)c);
		else {
			char e[3] = { '%', hex[c >> 4], hex[c & 15] };
			sb_put(b, e, 3);
		}
	}
}

/*
 * Canonical URI for every service but S3: remove "." and ".." segments and empty segments (repeated
 * slashes), keep a trailing slash, then URI-encode the result (so a '%' of the wire form becomes
 * "%25": AWS encodes the already-encoded path once more).
 */
static int canonical_uri(struct sbuf *b, const char *path)
{
	const char **segs;
	size_t *lens, n = 0, cap = 1;
	const char *p;
	bool trailing;

	if (!path || !*path)
		path = "/";
	for (p = path; *p; p++)
		if (*p == '/')
			cap++;
	segs = calloc(cap, sizeof(*segs));
	lens = calloc(cap, sizeof(*lens));
	if (!segs || !lens) {
		free(segs);
		free(lens);
		return -ENOMEM;
	}
	for (p = path; *p;) {
		size_t k;

		while (*p == '/')
			p++;
		k = strcspn(p, "/");
		if (k == 0)
			break;
		if (k == 1 && p[0] == '.') {
		} else if (k == 2 && p[0] == '.' && p[1] == '.') {
			if (n > 0)
				n--;
		} else {
			segs[n] = p;
			lens[n] = k;
			n++;
		}
		p += k;
	}
	trailing = path[strlen(path) - 1] == '/';
	sb_chr(b, '/');
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			sb_chr(b, '/');
		sb_uri_encode(b, segs[i], lens[i], false);
	}
	if (n > 0 && trailing)
		sb_chr(b, '/');
	free(segs);
	free(lens);
	return b->r;
}

static int hexv(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode @n bytes (a malformed escape stays literal); then AWS-encode into a new string. */
static char *query_component(const char *s, size_t n)
{
	struct sbuf raw = {}, enc = {};
	char *out = NULL;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && hexv(s[i + 1]) >= 0 && hexv(s[i + 2]) >= 0) {
			sb_chr(&raw, (char)(hexv(s[i + 1]) << 4 | hexv(s[i + 2])));
			i += 2;
		} else
			sb_chr(&raw, s[i]);
	}
	if (raw.r >= 0) {
		sb_uri_encode(&enc, raw.s ? raw.s : "", raw.len, false);
		if (sb_take(&enc, &out) < 0)
			out = NULL;
	} else
		sb_free(&enc);
	sb_free(&raw);
	return out;
}

struct qparam {
	char *name, *value;
};

static int qparam_cmp(const void *a, const void *b)
{
	const struct qparam *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->value, y->value);
}

/* Canonical query: each name and value URI-encoded, sorted by name then value, "name=value" joined
 * by '&'; a parameter without '=' gets an empty value. */
static int canonical_query(struct sbuf *b, const char *query)
{
	struct qparam *q = NULL;
	size_t n = 0, cap = 1;
	const char *p;
	int r = 0;

	if (!query || !*query)
		return 0;
	for (p = query; *p; p++)
		if (*p == '&')
			cap++;
	q = calloc(cap, sizeof(*q));
	if (!q)
		return -ENOMEM;
	for (p = query; *p;) {
		size_t k = strcspn(p, "&"), nk;
		const char *eq;

		if (k > 0) {
			eq = memchr(p, '=', k);
			nk = eq ? (size_t)(eq - p) : k;
			q[n].name = query_component(p, nk);
			q[n].value = eq ? query_component(eq + 1, k - nk - 1) : strdup("");
			n++;
			if (!q[n - 1].name || !q[n - 1].value) {
				r = -ENOMEM;
				goto out;
			}
		}
		p += k;
		if (*p == '&')
			p++;
	}
	qsort(q, n, sizeof(*q), qparam_cmp);
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			sb_chr(b, '&');
		sb_str(b, q[i].name);
		sb_chr(b, '=');
		sb_str(b, q[i].value);
	}
	r = b->r;
out:
	for (size_t i = 0; i < n; i++) {
		free(q[i].name);
		free(q[i].value);
	}
	free(q);
	return r;
}

/* Value canonical form: trim, collapse runs of spaces/tabs to one space; obs-fold continuation lines
 * (the test suite's get-header-value-multiline) become separate comma-joined values. */
static void sb_header_value(struct sbuf *b, const char *v)
{
	bool first_line = true;

	for (;;) {
		size_t k = strcspn(v, "\n");
		size_t i = 0, end = k;
		bool space = false, any = false;

		if (end > 0 && v[end - 1] == '\r')
			end--;
		while (i < end && (v[i] == ' ' || v[i] == '\t'))
			i++;
		while (end > i && (v[end - 1] == ' ' || v[end - 1] == '\t'))
			end--;
		if (!first_line && i < end)
			sb_chr(b, ',');
		for (; i < end; i++) {
			if (v[i] == ' ' || v[i] == '\t') {
				space = true;
				continue;
			}
			if (space && any)
				sb_chr(b, ' ');
			space = false;
			any = true;
			sb_chr(b, v[i]);
		}
		first_line = false;
		if (!v[k])
			break;
		v += k + 1;
	}
}

struct hdr {
	char *lname;
	const char *value;
	size_t order;
};

static int hdr_cmp(const void *a, const void *b)
{
	const struct hdr *x = a, *y = b;
	int c = strcmp(x->lname, y->lname);

	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Canonical headers and the signed header list: every header of the request (lower-case names,
 * sorted; repeated names joined with ',' in the order they appear). */
static int canonical_headers(const struct http_request *req, struct sbuf *ch, struct sbuf *sh)
{
	struct hdr *h;
	size_t n = 0;
	int r = 0;

	h = calloc(req->n_headers + 1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	for (size_t i = 0; i < req->n_headers; i++) {
		h[n].lname = strdup(req->headers[i].name);
		if (!h[n].lname) {
			r = -ENOMEM;
			goto out;
		}
		for (char *c = h[n].lname; *c; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char)(*c - 'A' + 'a');
		h[n].value = req->headers[i].value;
		h[n].order = i;
		n++;
	}
	qsort(h, n, sizeof(*h), hdr_cmp);
	for (size_t i = 0; i < n; i++) {
		bool same = i > 0 && strcmp(h[i].lname, h[i - 1].lname) == 0;

		if (same)
			sb_chr(ch, ',');
		else {
			if (i > 0) {
				sb_chr(ch, '\n');
				sb_chr(sh, ';');
			}
			sb_str(ch, h[i].lname);
			sb_chr(ch, ':');
			sb_str(sh, h[i].lname);
		}
		sb_header_value(ch, h[i].value);
	}
	if (n > 0)
		sb_chr(ch, '\n');
	r = ch->r < 0 ? ch->r : sh->r;
out:
	for (size_t i = 0; i < n; i++)
		free(h[i].lname);
	free(h);
	return r;
}

static void hex32(const uint8_t d[32], char out[65])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < 32; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[64] = 0;
}

static int hmac256(const void *key, size_t klen, const void *data, size_t n, uint8_t out[32])
{
	unsigned int olen = 32;

	if (!HMAC(EVP_sha256(), key, (int)klen, data, n, out, &olen) || olen != 32)
		return -EIO;
	return 0;
}

static bool token_ok(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '/' || *s == ',')
			return false;
	return true;
}

/* The signature (hex) of @sts under the derived key. */
static int sign_sts(const struct secret *key, const char *date, const char *region, const char *service,
		    const char *sts, char out[65])
{
	_cleanup_secret_ struct secret *k = NULL;
	uint8_t kd[32], kr[32], ks[32], kg[32], sig[32];
	int r;

	r = secret_new(4 + key->len, &k);
	if (r < 0)
		return r;
	memcpy(k->buf, "AWS4", 4);
	memcpy(k->buf + 4, key->buf, key->len);
	k->len = 4 + key->len;
	r = hmac256(k->buf, k->len, date, strlen(date), kd);
	if (r >= 0)
		r = hmac256(kd, 32, region, strlen(region), kr);
	if (r >= 0)
		r = hmac256(kr, 32, service, strlen(service), ks);
	if (r >= 0)
		r = hmac256(ks, 32, "aws4_request", 12, kg);
	if (r >= 0)
		r = hmac256(kg, 32, sts, strlen(sts), sig);
	if (r >= 0)
		hex32(sig, out);
	explicit_bzero(kd, sizeof(kd));
	explicit_bzero(kr, sizeof(kr));
	explicit_bzero(ks, sizeof(ks));
	explicit_bzero(kg, sizeof(kg));
	explicit_bzero(sig, sizeof(sig));
	return r;
}

int sigv4_sign_debug(struct http_request *req, const struct aws_creds *c, const char *region,
		     const char *service, time_t now, char **ret_creq, char **ret_sts)
{
	struct sbuf creq = {}, ch = {}, sh = {}, sts = {}, authz = {};
	char amzdate[17], date[9], body_hash[65], creq_hash[65], sig[65];
	uint8_t d[32];
	struct tm tm;
	int r;

	if (!req || !c || !token_ok(c->access_key_id) || !c->secret_access_key || !token_ok(region) ||
	    !token_ok(service) || !req->method || !http_request_header_get(req, "Host"))
		return -EINVAL;
	if (!gmtime_r(&now, &tm) || tm.tm_year + 1900 < 1970 || tm.tm_year + 1900 > 9999)
		return -EINVAL;
	if (strftime(amzdate, sizeof(amzdate), "%Y%m%dT%H%M%SZ", &tm) != 16)
		return -EINVAL;
	memcpy(date, amzdate, 8);
	date[8] = 0;

	/* the headers that take part in the signature */
	http_request_header_remove(req, "Authorization");
	r = http_request_header_set(req, "X-Amz-Date", amzdate);
	if (r >= 0 && c->session_token)
		r = http_request_header_set(req, "X-Amz-Security-Token", c->session_token);
	if (r < 0)
		return r;

	SHA256(req->body ? req->body->buf : (const uint8_t *)"", req->body ? req->body->len : 0, d);
	hex32(d, body_hash);

	sb_str(&creq, req->method);
	sb_chr(&creq, '\n');
	r = canonical_uri(&creq, req->path);
	if (r < 0)
		goto out;
	sb_chr(&creq, '\n');
	r = canonical_query(&creq, req->query);
	if (r < 0)
		goto out;
	sb_chr(&creq, '\n');
	r = canonical_headers(req, &ch, &sh);
	if (r < 0)
		goto out;
	sb_put(&creq, ch.s, ch.len);
	sb_chr(&creq, '\n');
	sb_put(&creq, sh.s, sh.len);
	sb_chr(&creq, '\n');
	sb_str(&creq, body_hash);
	if (creq.r < 0) {
		r = creq.r;
		goto out;
	}

	SHA256((const uint8_t *)creq.s, creq.len, d);
	hex32(d, creq_hash);
	sb_str(&sts, "AWS4-HMAC-SHA256\n");
	sb_str(&sts, amzdate);
	sb_chr(&sts, '\n');
	sb_str(&sts, date);
	sb_chr(&sts, '/');
	sb_str(&sts, region);
	sb_chr(&sts, '/');
	sb_str(&sts, service);
	sb_str(&sts, "/aws4_request\n");
	sb_str(&sts, creq_hash);
	if (sts.r < 0) {
		r = sts.r;
		goto out;
	}

	r = sign_sts(c->secret_access_key, date, region, service, sts.s, sig);
	if (r < 0)
		goto out;
	sb_str(&authz, "AWS4-HMAC-SHA256 Credential=");
	sb_str(&authz, c->access_key_id);
	sb_chr(&authz, '/');
	sb_str(&authz, date);
	sb_chr(&authz, '/');
	sb_str(&authz, region);
	sb_chr(&authz, '/');
	sb_str(&authz, service);
	sb_str(&authz, "/aws4_request, SignedHeaders=");
	sb_put(&authz, sh.s, sh.len);
	sb_str(&authz, ", Signature=");
	sb_str(&authz, sig);
	if (authz.r < 0) {
		r = authz.r;
		goto out;
	}
	r = http_request_header_add(req, "Authorization", authz.s);
	if (r < 0)
		goto out;
	if (ret_creq)
		*ret_creq = TAKE_PTR(creq.s);
	if (ret_sts)
		*ret_sts = TAKE_PTR(sts.s);
out:
	explicit_bzero(sig, sizeof(sig));
	/* the canonical request and headers hold the session token */
	sb_free(&authz);
	sb_free(&creq);
	sb_free(&ch);
	sb_free(&sh);
	sb_free(&sts);
	return r;
}

int sigv4_sign(struct http_request *req, const struct aws_creds *c, const char *region, const char *service,
	       time_t now)
{
	return sigv4_sign_debug(req, c, region, service, now, NULL, NULL);
}
