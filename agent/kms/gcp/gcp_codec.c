/* SPDX-License-Identifier: MIT */
/* Google Cloud KMS and OAuth 2.0 codec (see gcp_codec.h for the wire formats). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "codec/base64.h"
#include "codec/http_msg.h"
#include "codec/json_util.h"
#include "codec/kms_error.h"
#include "kms/gcp/gcp_codec.h"
#include "util/cleanup.h"
#include "util/secret.h"

static void json_put_ptr(struct json_object **o)
{
	json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_put_ptr)

/* ---- CRC32C ---------------------------------------------------------------------------------- */

uint32_t gcp_crc32c(const void *data, size_t n)
{
	const uint8_t *p = data;
	uint32_t crc = 0xFFFFFFFFu;

	/* bitwise: the inputs are a 32-byte key, a 60-byte AAD and a ciphertext of ~100 bytes */
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
	}
	return crc ^ 0xFFFFFFFFu;
}

/* ---- names and endpoints --------------------------------------------------------------------- */

bool gcp_id_ok(const char *s, size_t max)
{
	size_t n;

	if (!s)
		return false;
	n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
			return false;
	return true;
}

/* Project IDs: [a-z0-9-] (6-30), also the dotted legacy App Engine form. */
static bool project_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 100)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		      *p == '.'))
			return false;
	return true;
}

static bool version_ok(const char *s)
{
	if (!s || !*s || strlen(s) > 10 || *s == '0')
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

int gcp_key_name(const struct gcp_key_ref *k, bool with_version, char **ret)
{
	int n;

	if (!k || !project_ok(k->project) || !gcp_id_ok(k->location, 63) ||
	    !gcp_id_ok(k->key_ring, 63) || !gcp_id_ok(k->key, 63) ||
	    (with_version && k->version && !version_ok(k->version)))
		return -EINVAL;
	if (with_version && k->version)
		n = asprintf(
		    ret, "projects/%s/locations/%s/keyRings/%s/cryptoKeys/%s/cryptoKeyVersions/%s",
		    k->project, k->location, k->key_ring, k->key, k->version);
	else
		n = asprintf(ret, "projects/%s/locations/%s/keyRings/%s/cryptoKeys/%s", k->project,
			     k->location, k->key_ring, k->key);
	return n < 0 ? -ENOMEM : 0;
}

static bool authority_chars_ok(const char *s, size_t n)
{
	if (n == 0 || n > 255)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || strchr("-.:[]", s[i])))
			return false;
	return true;
}

int gcp_endpoint_base(const char *s, char **ret)
{
	const char *host = s;
	size_t n;

	if (!s)
		return -EINVAL;
	if (strncmp(s, "https://", 8) == 0)
		host = s + 8;
	else if (strstr(s, "://"))
		return -EINVAL;
	n = strlen(host);
	while (n > 0 && host[n - 1] == '/')
		n--;
	if (!authority_chars_ok(host, n))
		return -EINVAL;
	return asprintf(ret, "https://%.*s", (int)n, host) < 0 ? -ENOMEM : 0;
}

int gcp_token_url(const char *s, char **ret)
{
	const char *host, *slash;
	size_t n;

	if (!s)
		return -EINVAL;
	if (strncmp(s, "https://", 8) != 0) {
		if (strstr(s, "://") || strchr(s, '/'))
			return -EINVAL;
		if (!authority_chars_ok(s, strlen(s)))
			return -EINVAL;
		return asprintf(ret, "https://%s/token", s) < 0 ? -ENOMEM : 0;
	}
	host = s + 8;
	slash = strchr(host, '/');
	n = slash ? (size_t)(slash - host) : strlen(host);
	if (!authority_chars_ok(host, n) || strpbrk(s, "?#@ \t\"\\"))
		return -EINVAL;
	if (!slash || slash[1] == 0)
		return asprintf(ret, "https://%.*s/token", (int)n, host) < 0 ? -ENOMEM : 0;
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

/* ---- service account key file and private key -------------------------------------------------
 */

void gcp_service_account_done(struct gcp_service_account *sa)
{
	if (!sa)
		return;
	free(sa->client_email);
	free(sa->token_uri);
	free(sa->private_key_id);
	secret_free(sa->private_key);
	memset(sa, 0, sizeof(*sa));
}

/* A string that can go into a JSON string and a header without escaping. */
static bool plain_text_ok(const char *s, size_t max)
{
	if (!s || !*s || strlen(s) > max)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x21 || (unsigned char)*s >= 0x7f || *s == '"' ||
		    *s == '\\')
			return false;
	return true;
}

int gcp_parse_service_account(const void *buf, size_t len, struct gcp_service_account *ret,
			      struct kms_error *err)
{
	static const char *const p_type[] = {"type", NULL};
	static const char *const p_email[] = {"client_email", NULL};
	static const char *const p_uri[] = {"token_uri", NULL};
	static const char *const p_kid[] = {"private_key_id", NULL};
	static const char *const p_key[] = {"private_key", NULL};
	_cleanup_(gcp_service_account_done) struct gcp_service_account sa = {};
	_cleanup_free_ char *type = NULL;
	int r;

	if (json_validate(buf, len) < 0)
		return kms_error_set(err, -EBADMSG, "ServiceAccountInvalid",
				     "the service account key file is not JSON");
	r = json_find_string(buf, len, p_type, &type);
	if (r == -ENOMEM)
		return r;
	if (r == 0 && strcmp(type, "service_account") != 0)
		return kms_error_set(err, -EBADMSG, "ServiceAccountInvalid",
				     "the key file is of type '%.64s', not a service account key "
				     "(type service_account)",
				     type);
	r = json_find_string(buf, len, p_email, &sa.client_email);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || !plain_text_ok(sa.client_email, 320) || !strchr(sa.client_email, '@'))
		return kms_error_set(err, -EBADMSG, "ServiceAccountInvalid",
				     "the service account key file has no valid client_email");
	r = json_find_string(buf, len, p_uri, &sa.token_uri);
	if (r == -ENOMEM)
		return r;
	if (r == 0 && !plain_text_ok(sa.token_uri, 2048))
		return kms_error_set(err, -EBADMSG, "ServiceAccountInvalid",
				     "the service account key file has an invalid token_uri");
	r = json_find_string(buf, len, p_kid, &sa.private_key_id);
	if (r == -ENOMEM)
		return r;
	if (r == 0 && !plain_text_ok(sa.private_key_id, 256)) {
		free(sa.private_key_id); /* optional: send no kid rather than a broken one */
		sa.private_key_id = NULL;
	}
	r = json_find_string_secret(buf, len, p_key, &sa.private_key);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || sa.private_key->len == 0)
		return kms_error_set(err, -EBADMSG, "ServiceAccountInvalid",
				     "the service account key file has no private_key");
	*ret = sa;
	memset(&sa, 0, sizeof(sa));
	return 0;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1; /* an encrypted key: refuse instead of prompting on a terminal */
}

void gcp_pkey_free(EVP_PKEY *key)
{
	EVP_PKEY_free(key);
}

int gcp_load_private_key(const void *buf, size_t len, EVP_PKEY **ret)
{
	EVP_PKEY *key = NULL;

	if (!buf || len == 0 || len > 65536)
		return -EBADMSG;
	if (memmem(buf, len, "-----BEGIN", 10)) {
		BIO *bio = BIO_new_mem_buf(buf, (int)len);

		if (!bio)
			return -ENOMEM;
		key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
		BIO_free(bio);
	} else {
		/* bare base64 of the PKCS#8 DER, possibly wrapped over lines */
		_cleanup_secret_ struct secret *b64 = NULL, *der = NULL;
		const uint8_t *p;
		int r;

		r = secret_new(len + 1, &b64);
		if (r < 0)
			return r;
		for (size_t i = 0; i < len; i++) {
			char c = ((const char *)buf)[i];
			if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
				continue;
			b64->buf[b64->len++] = (uint8_t)c;
		}
		r = base64_decode_secret((const char *)b64->buf, b64->len, 0, &der);
		if (r < 0)
			return r == -ENOMEM ? r : -EBADMSG;
		p = der->buf;
		key = d2i_AutoPrivateKey(NULL, &p, (long)der->len);
	}
	if (!key)
		return -EBADMSG;
	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key) < 2048) {
		EVP_PKEY_free(key);
		return -EBADMSG;
	}
	*ret = key;
	return 0;
}

/* ---- JWT assertion and token requests -----------------------------------------------------------
 */

static int b64url(const void *data, size_t n, char **ret)
{
	return base64_encode(data, n, 1, ret);
}

int gcp_jwt_assertion(EVP_PKEY *key, const char *kid, const char *email, const char *aud,
		      const char *scope, time_t now, struct secret **ret)
{
	_cleanup_free_ char *header = NULL, *claims = NULL, *h64 = NULL, *c64 = NULL, *s64 = NULL;
	_cleanup_free_ uint8_t *sig = NULL;
	_cleanup_secret_ struct secret *out = NULL;
	EVP_MD_CTX *md = NULL;
	size_t siglen = 0;
	int r;

	if (!key || !plain_text_ok(email, 320) || !plain_text_ok(aud, 2048) ||
	    !plain_text_ok(scope, 512) || (kid && !plain_text_ok(kid, 256)) || now <= 0)
		return -EINVAL;
	if (kid)
		r = asprintf(&header, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
	else
		r = asprintf(&header, "{\"alg\":\"RS256\",\"typ\":\"JWT\"}");
	if (r < 0)
		return -ENOMEM;
	if (asprintf(&claims,
		     "{\"iss\":\"%s\",\"scope\":\"%s\",\"aud\":\"%s\",\"exp\":%lld,\"iat\":%lld}",
		     email, scope, aud, (long long)now + GCP_JWT_LIFETIME, (long long)now) < 0)
		return -ENOMEM;
	if (b64url(header, strlen(header), &h64) < 0 || b64url(claims, strlen(claims), &c64) < 0)
		return -ENOMEM;
	r = secret_new(strlen(h64) + strlen(c64) + 2 + (size_t)EVP_PKEY_get_size(key) * 4 / 3 + 8,
		       &out);
	if (r < 0)
		return r;
	if (secret_append(out, h64, strlen(h64)) < 0 || secret_append(out, ".", 1) < 0 ||
	    secret_append(out, c64, strlen(c64)) < 0)
		return -ENOBUFS;
	md = EVP_MD_CTX_new();
	if (!md)
		return -ENOMEM;
	/* RSASSA-PKCS1-v1_5 with SHA-256 (RS256, RFC 7518 3.3): OpenSSL's default RSA padding */
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, NULL, &siglen, out->buf, out->len) != 1 || !(sig = malloc(siglen)) ||
	    EVP_DigestSign(md, sig, &siglen, out->buf, out->len) != 1) {
		EVP_MD_CTX_free(md);
		return -EBADMSG;
	}
	EVP_MD_CTX_free(md);
	if (b64url(sig, siglen, &s64) < 0)
		return -ENOMEM;
	if (secret_append(out, ".", 1) < 0 || secret_append(out, s64, strlen(s64)) < 0 ||
	    secret_append(out, "", 1) < 0)
		return -ENOBUFS;
	out->len--; /* NUL-terminated, len excludes it */
	*ret = TAKE_PTR(out);
	return 0;
}

#define JWT_GRANT "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"

int gcp_build_token_request(const char *token_url, const struct secret *assertion,
			    struct http_request *ret)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_secret_ struct secret *body = NULL;
	static const char prefix[] = "grant_type=" JWT_GRANT "&assertion=";
	int r;

	if (!token_url || !assertion || assertion->len == 0)
		return -EINVAL;
	/* the assertion is base64url and dots: nothing to percent-encode */
	for (size_t i = 0; i < assertion->len; i++) {
		uint8_t c = assertion->buf[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return -EINVAL;
	}
	r = http_request_init(&req, "POST", token_url);
	if (r < 0)
		return r;
	if (strcmp(req.scheme, "https") != 0)
		return -EINVAL;
	r = secret_new(sizeof(prefix) + assertion->len, &body);
	if (r < 0)
		return r;
	if (secret_append(body, prefix, sizeof(prefix) - 1) < 0 ||
	    secret_append(body, assertion->buf, assertion->len) < 0)
		return -ENOBUFS;
	http_request_take_body(&req, TAKE_PTR(body));
	r = http_request_header_add(&req, "Content-Type", "application/x-www-form-urlencoded");
	if (r >= 0)
		r = http_request_header_add(&req, "Accept", "application/json");
	if (r < 0)
		return r;
	*ret = req;
	memset(&req, 0, sizeof(req));
	return 0;
}

int gcp_build_metadata_token(const char *metadata_base, struct http_request *ret)
{
	_cleanup_(http_request_done) struct http_request req = {};
	int r;

	r = http_request_init2(&req, "GET", metadata_base ? metadata_base : GCP_METADATA_ENDPOINT,
			       GCP_METADATA_TOKEN_PATH, NULL);
	if (r < 0)
		return r;
	req.flags |= HTTP_REQ_METADATA;
	/* required by the metadata server; it refuses requests with X-Forwarded-For */
	r = http_request_header_add(&req, "Metadata-Flavor", "Google");
	if (r < 0)
		return r;
	*ret = req;
	memset(&req, 0, sizeof(req));
	return 0;
}

static bool ok_status(const struct http_response *resp)
{
	return resp->status >= 200 && resp->status <= 299;
}

int gcp_parse_token(const struct http_response *resp, bool metadata, struct secret **ret_token,
		    uint32_t *ret_expires_in, struct kms_error *err)
{
	static const char *const p_tok[] = {"access_token", NULL};
	static const char *const p_exp[] = {"expires_in", NULL};
	static const char *const p_type[] = {"token_type", NULL};
	const char *who = metadata ? "GCE metadata server" : "Google token endpoint";
	_cleanup_secret_ struct secret *tok = NULL;
	_cleanup_free_ char *type = NULL;
	uint64_t exp = 0;
	int r;

	if (!ok_status(resp)) {
		_cleanup_json_ struct json_object *o = NULL;
		const char *e = NULL, *d = NULL;
		int cls;

		if (resp->body && json_parse_buf(resp->body->buf, resp->body->len, &o) >= 0) {
			struct json_object *eo = json_get_obj(o, "error");
			if (eo) { /* a Google API error shape */
				e = json_get_str(eo, "status");
				d = json_get_str(eo, "message");
			} else {
				e = json_get_str(o, "error");
				d = json_get_str(o, "error_description");
			}
		}
		if (http_status_transient(resp->status))
			cls = -EAGAIN;
		else if (resp->status == 400 || resp->status == 401 || resp->status == 403 ||
			 resp->status == 404)
			cls = -EACCES;
		else
			cls = -EBADMSG;
		if (metadata && resp->status == 404)
			return kms_error_fill(
			    err, cls, resp->status, e ? e : "", NULL,
			    "%s: this instance has no service account (HTTP 404); "
			    "attach one to the VM",
			    who);
		return kms_error_fill(err, cls, resp->status, e ? e : "", NULL,
				      "%s refused the token request: HTTP %d%s%s%s%s", who,
				      resp->status, e ? ": " : "", e ? e : "", d ? ": " : "",
				      d ? d : "");
	}
	if (!resp->body)
		return kms_error_fill(err, -EBADMSG, resp->status, "", NULL, "%s: empty reply",
				      who);
	r = json_find_string_secret(resp->body->buf, resp->body->len, p_tok, &tok);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || tok->len == 0 || tok->len > 8192)
		return kms_error_fill(err, -EBADMSG, resp->status, "", NULL,
				      "malformed reply from the %s: no access_token", who);
	for (size_t i = 0; i < tok->len; i++)
		if (tok->buf[i] < 0x21 || tok->buf[i] >= 0x7f)
			return kms_error_fill(err, -EBADMSG, resp->status, "", NULL,
					      "malformed reply from the %s: access_token is not a "
					      "header value",
					      who);
	r = json_find_uint(resp->body->buf, resp->body->len, p_exp, &exp);
	if (r == -EBADMSG || exp > UINT32_MAX)
		return kms_error_fill(err, -EBADMSG, resp->status, "", NULL,
				      "malformed reply from the %s: bad expires_in", who);
	r = json_find_string(resp->body->buf, resp->body->len, p_type, &type);
	if (r == -ENOMEM)
		return r;
	if (r == 0 && strcasecmp(type, "Bearer") != 0)
		return kms_error_fill(err, -EBADMSG, resp->status, "", NULL,
				      "the %s issued a token of type '%.32s', not Bearer", who,
				      type);
	r = secret_append(tok, "", 1); /* NUL-terminate for the Authorization header */
	if (r < 0) {
		_cleanup_secret_ struct secret *t2 = NULL;
		r = secret_from_cstr((const char *)tok->buf, tok->len, &t2);
		if (r < 0)
			return r;
		secret_free(tok);
		tok = TAKE_PTR(t2);
	} else
		tok->len--;
	*ret_token = TAKE_PTR(tok);
	*ret_expires_in = (uint32_t)exp;
	return 0;
}

/* ---- Cloud KMS requests -----------------------------------------------------------------------
 */

static void put_crc(struct json_writer *w, const char *key, const void *data, size_t n)
{
	char v[16];

	snprintf(v, sizeof(v), "%u", gcp_crc32c(data, n));
	json_writer_string(w, key, v); /* int64 -> JSON string (proto3 JSON mapping) */
}

static int kms_request(const char *base, const char *method, const char *name, const char *verb,
		       struct secret *body, struct http_request *ret)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_free_ char *path = NULL;
	int r;

	if (asprintf(&path, "/v1/%s%s%s", name, verb ? ":" : "", verb ? verb : "") < 0) {
		secret_free(body);
		return -ENOMEM;
	}
	r = http_request_json(&req, method, base, path, NULL, body);
	if (r < 0)
		return r;
	*ret = req;
	memset(&req, 0, sizeof(req));
	return 0;
}

static bool name_ok(const char *name)
{
	return name && strncmp(name, "projects/", 9) == 0 && strlen(name) < 1024 &&
	       plain_text_ok(name, 1024) && !strstr(name, "..") && !strpbrk(name, "?#%:");
}

int gcp_build_encrypt(const char *base, const char *name, const struct secret *plain,
		      const void *aad, size_t aad_len, struct http_request *ret)
{
	struct json_writer w;
	struct secret *body;
	int r;

	if (!name_ok(name) || !plain || plain->len == 0 || plain->len > GCP_PLAINTEXT_MAX ||
	    aad_len > GCP_PLAINTEXT_MAX || (aad_len && !aad))
		return -EINVAL;
	r = json_writer_init(&w, 256 + (plain->len + aad_len) / 3 * 4 + 16);
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_base64(&w, "plaintext", plain->buf, plain->len);
	put_crc(&w, "plaintextCrc32c", plain->buf, plain->len);
	if (aad_len) {
		json_writer_base64(&w, "additionalAuthenticatedData", aad, aad_len);
		put_crc(&w, "additionalAuthenticatedDataCrc32c", aad, aad_len);
	}
	json_writer_object_end(&w);
	r = json_writer_finish(&w, &body);
	if (r < 0)
		return r;
	return kms_request(base, "POST", name, "encrypt", body, ret);
}

int gcp_build_decrypt(const char *base, const char *key_name, const uint8_t *ct, size_t ct_len,
		      const void *aad, size_t aad_len, struct http_request *ret)
{
	struct json_writer w;
	struct secret *body;
	int r;

	if (!name_ok(key_name) || strstr(key_name, "/cryptoKeyVersions/") || !ct || ct_len == 0 ||
	    ct_len > 2 * GCP_PLAINTEXT_MAX || aad_len > GCP_PLAINTEXT_MAX || (aad_len && !aad))
		return -EINVAL;
	r = json_writer_init(&w, 256 + (ct_len + aad_len) / 3 * 4 + 16);
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_base64(&w, "ciphertext", ct, ct_len);
	put_crc(&w, "ciphertextCrc32c", ct, ct_len);
	if (aad_len) {
		json_writer_base64(&w, "additionalAuthenticatedData", aad, aad_len);
		put_crc(&w, "additionalAuthenticatedDataCrc32c", aad, aad_len);
	}
	json_writer_object_end(&w);
	r = json_writer_finish(&w, &body);
	if (r < 0)
		return r;
	return kms_request(base, "POST", key_name, "decrypt", body, ret);
}

int gcp_build_get_key(const char *base, const char *key_name, struct http_request *ret)
{
	if (!name_ok(key_name))
		return -EINVAL;
	return kms_request(base, "GET", key_name, NULL, NULL, ret);
}

/* ---- Cloud KMS replies ------------------------------------------------------------------------
 */

static int malformed(const struct http_response *resp, struct kms_error *err, const char *what)
{
	return kms_error_fill(err, -EBADMSG, resp->status, "", NULL,
			      "malformed Cloud KMS reply: %s", what);
}

static int crc_mismatch(const struct http_response *resp, struct kms_error *err, const char *what)
{
	return kms_error_fill(err, -EBADMSG, resp->status, "Crc32cMismatch", NULL,
			      "Cloud KMS integrity check failed: %s (data corrupted in transit)",
			      what);
}

/* A CRC32C member of a json-c object: decimal string (proto3 int64) or a number. */
static int obj_crc(struct json_object *o, const char *key, uint32_t *ret)
{
	struct json_object *v;
	unsigned long long x;
	char *end;

	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return -ENOENT;
	if (json_object_is_type(v, json_type_int)) {
		int64_t i = json_object_get_int64(v);
		if (i < 0 || i > (int64_t)UINT32_MAX)
			return -EBADMSG;
		*ret = (uint32_t)i;
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return -EBADMSG;
	const char *s = json_object_get_string(v);
	if (!*s || *s < '0' || *s > '9' || strlen(s) > 10)
		return -EBADMSG;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (*end || errno || x > UINT32_MAX)
		return -EBADMSG;
	*ret = (uint32_t)x;
	return 0;
}

static bool obj_true(struct json_object *o, const char *key)
{
	bool b = false;

	return json_get_bool(o, key, &b) == 0 && b;
}

void gcp_ciphertext_done(struct gcp_ciphertext *c)
{
	if (!c)
		return;
	free(c->ct);
	free(c->version_name);
	free(c->version);
	memset(c, 0, sizeof(*c));
}

int gcp_parse_encrypt(const struct http_response *resp, const char *key_name, bool aad_sent,
		      struct gcp_ciphertext *ret, struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	_cleanup_(gcp_ciphertext_done) struct gcp_ciphertext c = {};
	const char *ct64, *name, *ver;
	size_t kl;
	uint32_t crc;
	int r;

	if (!ok_status(resp))
		return gcp_parse_error(resp, err);
	/* the ciphertext is not secret: json-c may see this reply */
	if (!resp->body || json_parse_buf(resp->body->buf, resp->body->len, &o) < 0 ||
	    !json_object_is_type(o, json_type_object))
		return malformed(resp, err, "not a JSON object");
	ct64 = json_get_str(o, "ciphertext");
	name = json_get_str(o, "name");
	if (!ct64 || !*ct64)
		return malformed(resp, err, "no ciphertext");
	if (!name)
		return malformed(resp, err, "no name (the key version used)");
	/* "Check this field to verify that the intended resource was used for encryption." */
	kl = key_name ? strlen(key_name) : 0;
	if (!key_name || strncmp(name, key_name, kl) != 0 ||
	    strncmp(name + kl, "/cryptoKeyVersions/", 19) != 0 || !version_ok(name + kl + 19)) {
		return kms_error_fill(
		    err, -EBADMSG, resp->status, "UnexpectedKeyVersion", NULL,
		    "Cloud KMS encrypted with '%.200s', not a version of key '%.160s'", name,
		    key_name ? key_name : "");
	}
	ver = name + kl + 19;
	/* the server checked the CRC32C we sent of the plaintext (and of the AAD) */
	if (!obj_true(o, "verifiedPlaintextCrc32c"))
		return crc_mismatch(resp, err, "the server did not verify plaintextCrc32c");
	if (aad_sent && !obj_true(o, "verifiedAdditionalAuthenticatedDataCrc32c"))
		return crc_mismatch(resp, err,
				    "the server did not verify additionalAuthenticatedDataCrc32c");
	r = base64_decode(ct64, strlen(ct64), 0, &c.ct, &c.ct_len);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || c.ct_len == 0 || c.ct_len > 2 * GCP_PLAINTEXT_MAX)
		return malformed(resp, err, "ciphertext is not base64");
	r = obj_crc(o, "ciphertextCrc32c", &crc);
	if (r == -ENOENT)
		return crc_mismatch(resp, err, "no ciphertextCrc32c in the reply");
	if (r < 0)
		return malformed(resp, err, "bad ciphertextCrc32c");
	if (crc != gcp_crc32c(c.ct, c.ct_len))
		return crc_mismatch(resp, err, "ciphertextCrc32c does not match the ciphertext");
	c.version_name = strdup(name);
	c.version = strdup(ver);
	if (!c.version_name || !c.version)
		return -ENOMEM;
	*ret = c;
	memset(&c, 0, sizeof(c));
	return 0;
}

int gcp_parse_decrypt(const struct http_response *resp, struct secret **ret, struct kms_error *err)
{
	static const char *const p_pt[] = {"plaintext", NULL};
	static const char *const p_crc[] = {"plaintextCrc32c", NULL};
	_cleanup_secret_ struct secret *plain = NULL;
	_cleanup_free_ char *s = NULL;
	uint64_t crc = 0;
	int r;

	if (!ok_status(resp))
		return gcp_parse_error(resp, err);
	if (!resp->body)
		return malformed(resp, err, "empty body");
	/* carries the key: the scanner only, straight into locked memory */
	r = json_find_b64_secret(resp->body->buf, resp->body->len, p_pt, &plain);
	if (r == -ENOMEM)
		return r;
	if (r == -ENOENT)
		return malformed(resp, err, "no plaintext");
	if (r < 0)
		return malformed(resp, err, "not JSON or plaintext is not base64");
	if (plain->len == 0)
		return malformed(resp, err, "empty plaintext");
	r = json_find_string(resp->body->buf, resp->body->len, p_crc, &s);
	if (r == -ENOMEM)
		return r;
	if (r == 0) {
		char *end;
		if (!*s || *s < '0' || *s > '9' || strlen(s) > 10)
			return malformed(resp, err, "bad plaintextCrc32c");
		errno = 0;
		crc = strtoull(s, &end, 10);
		if (*end || errno)
			return malformed(resp, err, "bad plaintextCrc32c");
	} else if (r == -EBADMSG) {
		r = json_find_uint(resp->body->buf, resp->body->len, p_crc, &crc);
		if (r < 0)
			return malformed(resp, err, "bad plaintextCrc32c");
	} else
		return crc_mismatch(resp, err, "no plaintextCrc32c in the reply");
	if (crc > UINT32_MAX)
		return malformed(resp, err, "bad plaintextCrc32c");
	if ((uint32_t)crc != gcp_crc32c(plain->buf, plain->len))
		return crc_mismatch(resp, err, "plaintextCrc32c does not match the plaintext");
	*ret = TAKE_PTR(plain);
	return 0;
}

void gcp_key_info_done(struct gcp_key_info *k)
{
	if (!k)
		return;
	free(k->name);
	free(k->purpose);
	free(k->primary_name);
	free(k->primary_state);
	free(k->algorithm);
	free(k->protection);
	free(k->rotation_period);
	memset(k, 0, sizeof(*k));
}

static int dup_opt(const char *s, char **ret)
{
	if (!s)
		return 0;
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

int gcp_parse_key(const struct http_response *resp, struct gcp_key_info *ret, struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	_cleanup_(gcp_key_info_done) struct gcp_key_info k = {};
	struct json_object *prim;

	if (!ok_status(resp))
		return gcp_parse_error(resp, err);
	if (!resp->body || json_parse_buf(resp->body->buf, resp->body->len, &o) < 0 ||
	    !json_object_is_type(o, json_type_object))
		return malformed(resp, err, "not a JSON object");
	if (!json_get_str(o, "name") || !json_get_str(o, "purpose"))
		return malformed(resp, err, "no name or purpose");
	prim = json_get_obj(o, "primary");
	if (dup_opt(json_get_str(o, "name"), &k.name) < 0 ||
	    dup_opt(json_get_str(o, "purpose"), &k.purpose) < 0 ||
	    dup_opt(json_get_str(o, "rotationPeriod"), &k.rotation_period) < 0 ||
	    dup_opt(json_get_str(prim, "name"), &k.primary_name) < 0 ||
	    dup_opt(json_get_str(prim, "state"), &k.primary_state) < 0 ||
	    dup_opt(json_get_str(prim, "algorithm"), &k.algorithm) < 0 ||
	    dup_opt(json_get_str(prim, "protectionLevel"), &k.protection) < 0)
		return -ENOMEM;
	if (prim && !k.primary_state)
		return malformed(resp, err, "primary version without a state");
	*ret = k;
	memset(&k, 0, sizeof(k));
	return 0;
}

int gcp_check_key(const struct gcp_key_info *k, struct kms_error *err)
{
	if (strcmp(k->purpose, "ENCRYPT_DECRYPT") != 0)
		return kms_error_set(err, -EINVAL, "KeyPurpose",
				     "Cloud KMS key '%.200s' has purpose %.40s; kmscrypt needs a "
				     "symmetric key with purpose ENCRYPT_DECRYPT",
				     k->name, k->purpose);
	if (!k->primary_state)
		return kms_error_set(err, -EACCES, "NoPrimaryVersion",
				     "Cloud KMS key '%.200s' has no primary version; create or "
				     "restore one and make it primary",
				     k->name);
	if (strcmp(k->primary_state, "ENABLED") != 0)
		return kms_error_set(err, -EACCES, "KeyVersionNotEnabled",
				     "the primary version of Cloud KMS key '%.200s' is %.40s, not "
				     "ENABLED; enable it or make an enabled version primary",
				     k->name, k->primary_state);
	return 0;
}

/* Statuses of google.rpc.Code (https://cloud.google.com/apis/design/errors#handling_errors). */
static int status_class(const char *st, const char *msg, bool *ret_reject)
{
	static const char *const transient[] = {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL",
						"DEADLINE_EXCEEDED",  "ABORTED",     "UNKNOWN"};
	static const char *const denied[] = {"UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND",
					     "FAILED_PRECONDITION"};

	*ret_reject = false;
	for (size_t i = 0; i < ARRAY_SIZE(transient); i++)
		if (strcmp(st, transient[i]) == 0)
			return -EAGAIN;
	for (size_t i = 0; i < ARRAY_SIZE(denied); i++)
		if (strcmp(st, denied[i]) == 0)
			return -EACCES;
	if (strcmp(st, "INVALID_ARGUMENT") == 0) {
		/* "The checksum in field ciphertext_crc32c did not match the data in field
		 * ciphertext.": corrupted in transit, not an answer about the key */
		if (msg && strcasestr(msg, "checksum"))
			return -EBADMSG;
		/* "Decryption failed: the ciphertext is invalid." (also for a wrong AAD) */
		if (msg && (strcasestr(msg, "decryption failed") ||
			    strcasestr(msg, "ciphertext is invalid"))) {
			*ret_reject = true;
			return -EACCES;
		}
		return -EBADMSG;
	}
	return 0;
}

int gcp_parse_error(const struct http_response *resp, struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	const char *st = NULL, *msg = NULL;
	bool reject = false;
	int cls = 0;

	if (resp->body && resp->body->len > 0 &&
	    json_parse_buf(resp->body->buf, resp->body->len, &o) >= 0) {
		struct json_object *e = json_get_obj(o, "error");
		st = json_get_str(e, "status");
		msg = json_get_str(e, "message");
	}
	if (st)
		cls = status_class(st, msg, &reject);
	if (cls == 0) {
		if (resp->status == 429 || http_status_transient(resp->status))
			cls = -EAGAIN;
		else if (resp->status == 401 || resp->status == 403 || resp->status == 404)
			cls = -EACCES;
		else
			cls = -EBADMSG;
	}
	if (st || msg)
		kms_error_fill(err, cls, resp->status, st ? st : "", NULL,
			       "Cloud KMS: HTTP %d %s: %s", resp->status, st ? st : "",
			       msg ? msg : "(no message)");
	else
		kms_error_fill(err, cls, resp->status, "", NULL,
			       "Cloud KMS: HTTP %d without an error message", resp->status);
	if (reject && err)
		err->token_rejected = true;
	return cls;
}

bool gcp_token_refused(const struct http_response *resp)
{
	return resp->status == 401;
}

/* ---- kms policy -------------------------------------------------------------------------------
 */

int gcp_policy_text(const struct gcp_key_ref *k, const char *member, char **ret)
{
	_cleanup_free_ char *name = NULL;
	const char *m = member ? member : "serviceAccount:SERVICE_ACCOUNT_EMAIL";
	int r;

	r = gcp_key_name(k, false, &name);
	if (r < 0)
		return r;
	if (!plain_text_ok(m, 400))
		return -EINVAL;
	r = asprintf(
	    ret,
	    "# Google Cloud KMS: least privilege for kmscrypt on key\n"
	    "#   %s\n%s"
	    "# wrap and unwrap (cloudkms.cryptoKeyVersions.useToEncrypt, useToDecrypt), granted on "
	    "the\n"
	    "# key itself, not the key ring or project:\n"
	    "gcloud kms keys add-iam-policy-binding %s --project %s --location %s --keyring %s \\\n"
	    "    --member '%s' --role roles/cloudkms.cryptoKeyEncrypterDecrypter\n"
	    "# kms create and kms check read the key (purpose, state of the primary version):\n"
	    "# cloudkms.cryptoKeys.get, which that role does not include; unlocking does not need "
	    "it.\n"
	    "gcloud iam roles create kmscryptKeyGet --project %s --title 'kmscrypt key get' \\\n"
	    "    --permissions cloudkms.cryptoKeys.get --stage GA\n"
	    "gcloud kms keys add-iam-policy-binding %s --project %s --location %s --keyring %s \\\n"
	    "    --member '%s' --role projects/%s/roles/kmscryptKeyGet\n"
	    "# The same bindings for the key's IAM policy (merge them into the existing policy of\n"
	    "# 'gcloud kms keys get-iam-policy', then 'gcloud kms keys set-iam-policy KEY FILE'):\n"
	    "{\n"
	    "  \"bindings\": [\n"
	    "    {\"role\": \"roles/cloudkms.cryptoKeyEncrypterDecrypter\", \"members\": "
	    "[\"%s\"]},\n"
	    "    {\"role\": \"projects/%s/roles/kmscryptKeyGet\", \"members\": [\"%s\"]}\n"
	    "  ]\n"
	    "}\n",
	    name,
	    member ? ""
		   : "# replace SERVICE_ACCOUNT_EMAIL by the instance's service account (gcloud "
		     "compute\n"
		     "# instances describe VM --format='value(serviceAccounts[].email)')\n",
	    k->key, k->project, k->location, k->key_ring, m, k->project, k->key, k->project,
	    k->location, k->key_ring, m, k->project, m, k->project, m);
	return r < 0 ? -ENOMEM : 0;
}
