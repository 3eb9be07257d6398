/* SPDX-License-Identifier: MIT */
/* Thales CipherTrust Manager REST messages (pure); the wire layouts are in ciphertrust_codec.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "codec/base64.h"
#include "codec/http_msg.h"
#include "codec/json_util.h"
#include "codec/kms_error.h"
#include "kms/ciphertrust/ciphertrust_codec.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define CT_PLAINTEXT_MAX 4096u
#define CT_NAME_MAX 256u
#define CT_FIELD_MAX 8192u
#define CT_BLOB_MAX 32768u

static void json_put_ptr(struct json_object **o)
{
	json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_put_ptr)

/* Key names: printable ASCII without the characters CipherTrust refuses ('<', '>', '\'). */
static bool name_ok(const char *s)
{
	if (!s || !*s || strlen(s) > CT_NAME_MAX)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f || strchr("<>\\", *s))
			return false;
	return true;
}

static bool text_ok(const char *s, size_t max)
{
	if (!s || !*s || strlen(s) > max)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			return false;
	return true;
}

/* RFC 3986 unreserved characters stay, everything else is %XX. */
static int pct_encode(const char *s, char **ret)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1), *p = out;

	if (!out)
		return -ENOMEM;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    strchr("-._~", c)) {
			*p++ = (char)c;
		} else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = 0;
	*ret = out;
	return 0;
}

/* "<base><path>[?query]" with JSON headers; takes @body (NULL: none). */
static int ct_request(const char *base, const char *method, const char *path, const char *query,
		      struct secret *body, struct http_request *ret)
{
	_cleanup_(http_request_done) struct http_request req = {};
	int r;

	/* (the crypto endpoints refuse a request without an Accept header) */
	r = http_request_json(&req, method, base, path, query, body);
	if (r < 0)
		return r;
	*ret = req;
	memset(&req, 0, sizeof(req));
	return 0;
}

static int post_json(const char *base, const char *path, struct json_writer *w,
		     struct http_request *ret)
{
	struct secret *body;
	int r;

	r = json_writer_finish(w, &body);
	if (r < 0)
		return r;
	return ct_request(base, "POST", path, NULL, body, ret);
}

/* ---- auth -------------------------------------------------------------------------------------
 */

int ct_build_login_password(const char *base, const char *username, const struct secret *password,
			    const char *domain, struct http_request *ret)
{
	struct json_writer w;
	int r;

	if (!text_ok(username, 1024) || !password || password->len == 0 || password->len > 4096 ||
	    (domain && !text_ok(domain, 1024)))
		return -EINVAL;
	r = json_writer_init(
	    &w, 256 + 6 * (strlen(username) + password->len + (domain ? strlen(domain) : 0)));
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_string(&w, "grant_type", "password");
	json_writer_string(&w, "username", username);
	json_writer_string_n(&w, "password", password->buf, password->len);
	if (domain)
		json_writer_string(&w, "domain", domain);
	json_writer_object_end(&w);
	return post_json(base, "/api/v1/auth/tokens", &w, ret);
}

int ct_build_login_refresh(const char *base, const struct secret *refresh_token,
			   struct http_request *ret)
{
	struct json_writer w;
	int r;

	if (!refresh_token || refresh_token->len == 0 || refresh_token->len > 8192)
		return -EINVAL;
	r = json_writer_init(&w, 256 + 6 * refresh_token->len);
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_string(&w, "grant_type", "refresh_token");
	json_writer_string_n(&w, "refresh_token", refresh_token->buf, refresh_token->len);
	json_writer_object_end(&w);
	return post_json(base, "/api/v1/auth/tokens", &w, ret);
}

static bool ok_status(const struct http_response *resp)
{
	return resp->status >= 200 && resp->status <= 299;
}

static int malformed(const struct http_response *resp, struct kms_error *err, const char *what)
{
	return kms_error_fill(err, -EBADMSG, resp->status, "", NULL,
			      "malformed CipherTrust reply: %s", what);
}

int ct_parse_login(const struct http_response *resp, time_t now, struct secret **ret_jwt,
		   time_t *ret_expires, struct kms_error *err)
{
	static const char *const p_jwt[] = {"jwt", NULL};
	static const char *const p_dur[] = {"duration", NULL};
	_cleanup_secret_ struct secret *jwt = NULL;
	_cleanup_free_ char *dtext = NULL;
	uint64_t dur = 0;
	int r;

	if (!ok_status(resp))
		return ct_parse_error(resp, CT_OP_LOGIN, err);
	if (!resp->body)
		return malformed(resp, err, "empty token reply");
	/* the reply also holds a refresh token: the scanner only, json-c never sees it */
	r = json_find_string_secret(resp->body->buf, resp->body->len, p_jwt, &jwt);
	if (r == -ENOENT || r == -EBADMSG)
		return malformed(resp, err, "no jwt in the token reply");
	if (r < 0)
		return r;
	if (jwt->len == 0 || jwt->len > 16384)
		return malformed(resp, err, "jwt is empty or too long");
	for (size_t i = 0; i < jwt->len; i++)
		if (jwt->buf[i] < 0x21 || jwt->buf[i] >= 0x7f)
			return malformed(resp, err, "jwt is not a header value");
	{
		/* NUL-terminated for the Authorization header */
		struct secret *t = NULL;
		r = secret_from_cstr((const char *)jwt->buf, jwt->len, &t);
		if (r < 0)
			return r;
		secret_free(jwt);
		jwt = t;
	}
	/* "duration": seconds.  Integer in the documentation's examples; a string of digits is
	 * taken too, anything else (absent, 0, fractional) means the documented 300 s: a JWT that
	 * expires earlier is refused with 401 and renewed then. */
	r = json_find_uint(resp->body->buf, resp->body->len, p_dur, &dur);
	if (r == -EBADMSG &&
	    json_find_string(resp->body->buf, resp->body->len, p_dur, &dtext) == 0) {
		char *end = NULL;
		unsigned long long v = strtoull(dtext, &end, 10);
		dur = end && end != dtext && !*end ? v : 0;
	}
	if (dur == 0 || dur > 366u * 86400u)
		dur = CT_JWT_DEFAULT_S;
	*ret_expires = now + (time_t)dur;
	*ret_jwt = TAKE_PTR(jwt);
	return 0;
}

/* ---- keys -------------------------------------------------------------------------------------
 */

int ct_build_key_find(const char *base, const char *name, struct http_request *ret)
{
	_cleanup_free_ char *enc = NULL, *query = NULL;
	int r;

	if (!name_ok(name))
		return -EINVAL;
	r = pct_encode(name, &enc);
	if (r < 0)
		return r;
	if (asprintf(&query, "name=%s&limit=100", enc) < 0)
		return -ENOMEM;
	return ct_request(base, "GET", "/api/v1/vault/keys2", query, NULL, ret);
}

int ct_build_key_create(const char *base, const char *name, const char *algorithm, unsigned size,
			struct http_request *ret)
{
	struct json_writer w;
	int r;

	if (!name_ok(name) || !algorithm || strcasecmp(algorithm, "aes") != 0 ||
	    (size != 128 && size != 192 && size != 256))
		return -EINVAL;
	r = json_writer_init(&w, 512 + 6 * strlen(name));
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_string(&w, "name", name);
	json_writer_string(&w, "algorithm", "aes");
	json_writer_uint(&w, "size", size);
	json_writer_uint(&w, "usageMask", CT_USAGE_ENCRYPT | CT_USAGE_DECRYPT);
	json_writer_object_end(&w);
	return post_json(base, "/api/v1/vault/keys2", &w, ret);
}

void ct_key_done(struct ct_key *k)
{
	if (!k)
		return;
	free(k->id);
	free(k->name);
	free(k->state);
	free(k->algorithm);
	memset(k, 0, sizeof(*k));
}

int ct_version_text(struct json_object *v, char *buf, size_t n)
{
	const char *s;
	int64_t i;
	double d;

	switch (json_object_get_type(v)) {
	case json_type_int:
		i = json_object_get_int64(v);
		if (i < 0 || i > 999999999999999999LL)
			return -EBADMSG;
		return snprintf(buf, n, "%lld", (long long)i) < (int)n ? 0 : -EBADMSG;
	case json_type_double:
		d = json_object_get_double(v);
		if (!(d >= 0 && d < 1e15) || d != (double)(int64_t)d)
			return -EBADMSG;
		return snprintf(buf, n, "%lld", (long long)d) < (int)n ? 0 : -EBADMSG;
	case json_type_string:
		s = json_object_get_string(v);
		if (!*s || strlen(s) > 18 || strspn(s, "0123456789") != strlen(s))
			return -EBADMSG;
		return snprintf(buf, n, "%s", s) < (int)n ? 0 : -EBADMSG;
	default:
		return -EBADMSG;
	}
}

static int dup_str(struct json_object *o, const char *key, char **ret)
{
	const char *s = json_get_str(o, key);

	*ret = NULL;
	if (!s)
		return 0;
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

/* One key object; -EBADMSG when it is not one. */
static int key_from_json(struct json_object *o, struct ct_key *ret)
{
	_cleanup_(ct_key_done) struct ct_key k = {};
	struct json_object *v;
	uint32_t u;
	int r;

	if (!json_object_is_type(o, json_type_object) || !json_get_str(o, "name"))
		return -EBADMSG;
	if ((r = dup_str(o, "id", &k.id)) < 0 || (r = dup_str(o, "name", &k.name)) < 0 ||
	    (r = dup_str(o, "state", &k.state)) < 0 ||
	    (r = dup_str(o, "algorithm", &k.algorithm)) < 0)
		return r;
	r = json_get_u32(o, "usageMask", &u);
	if (r == -EBADMSG)
		return r;
	k.has_usage_mask = r == 0;
	k.usage_mask = r == 0 ? u : 0;
	if (json_get_u32(o, "size", &k.size) == -EBADMSG)
		return -EBADMSG;
	if (json_object_object_get_ex(o, "version", &v) && v &&
	    ct_version_text(v, k.version, sizeof(k.version)) < 0)
		return -EBADMSG;
	*ret = k;
	memset(&k, 0, sizeof(k));
	return 0;
}

int ct_parse_key_list(const struct http_response *resp, const char *name, struct ct_key *ret,
		      bool *ret_found, struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	struct json_object *res;
	struct ct_key best = {};
	size_t n;

	if (!ok_status(resp))
		return ct_parse_error(resp, CT_OP_KEYS, err);
	if (!resp->body || json_parse_buf(resp->body->buf, resp->body->len, &o) < 0)
		return malformed(resp, err, "key list is not JSON");
	if (!json_object_object_get_ex(o, "resources", &res) || !res) {
		/* an empty list may come as "resources": null or without the member */
		if (json_object_is_type(o, json_type_object)) {
			*ret_found = false;
			return 0;
		}
		return malformed(resp, err, "key list is not an object");
	}
	if (!json_object_is_type(res, json_type_array))
		return malformed(resp, err, "key list resources is not an array");
	n = json_object_array_length(res);
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(res, i);
		const char *en =
		    json_object_is_type(e, json_type_object) ? json_get_str(e, "name") : NULL;
		struct ct_key k = {};
		int r;

		/* other keys of the list are none of our business, whatever their fields */
		if (!en || strcmp(en, name) != 0)
			continue;
		r = key_from_json(e, &k);
		if (r == -ENOMEM) {
			ct_key_done(&best);
			return r;
		}
		if (r < 0) {
			ct_key_done(&best);
			return malformed(resp, err, "the key in the list has a bad field");
		}
		if (best.name && strtoull(k.version, NULL, 10) < strtoull(best.version, NULL, 10)) {
			ct_key_done(&k);
			continue;
		}
		ct_key_done(&best);
		best = k;
	}
	*ret_found = best.name != NULL;
	if (best.name)
		*ret = best;
	return 0;
}

int ct_parse_key(const struct http_response *resp, struct ct_key *ret, struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	int r;

	if (!ok_status(resp))
		return ct_parse_error(resp, CT_OP_KEYS, err);
	if (!resp->body || json_parse_buf(resp->body->buf, resp->body->len, &o) < 0)
		return malformed(resp, err, "key reply is not JSON");
	r = key_from_json(o, ret);
	if (r == -EBADMSG)
		return malformed(resp, err, "key reply has no name or a bad field");
	return r;
}

int ct_key_check(const struct ct_key *k, struct kms_error *err)
{
	bool enc = k->usage_mask & CT_USAGE_ENCRYPT, dec = k->usage_mask & CT_USAGE_DECRYPT;

	/* absent fields (a reduced key view) are not held against the key: the KMS still refuses */
	if (k->state && strcasecmp(k->state, "Active") != 0)
		return kms_error_set(err, -EACCES, "KeyNotActive",
				     "CipherTrust key '%s' is %s, not Active: activate it in "
				     "CipherTrust Manager or choose another --key-name",
				     k->name, k->state);
	if (k->algorithm && strcasecmp(k->algorithm, "aes") != 0)
		return kms_error_set(
		    err, -EINVAL, "KeyAlgorithm",
		    "CipherTrust key '%s' is a %s key; kmscrypt wraps with AES-GCM: "
		    "choose an AES key or a new --key-name",
		    k->name, k->algorithm);
	if (k->has_usage_mask && !enc && !dec)
		return kms_error_set(err, -EACCES, "KeyUsage",
				     "CipherTrust key '%s' allows neither Encrypt nor Decrypt "
				     "(usageMask %u): add both to its key usage",
				     k->name, k->usage_mask);
	if (k->has_usage_mask && !enc)
		return kms_error_set(
		    err, -EACCES, "KeyUsageEncrypt",
		    "CipherTrust key '%s' does not allow Encrypt (usageMask %u lacks "
		    "4): add Encrypt to its key usage",
		    k->name, k->usage_mask);
	if (k->has_usage_mask && !dec)
		return kms_error_set(
		    err, -EACCES, "KeyUsageDecrypt",
		    "CipherTrust key '%s' does not allow Decrypt (usageMask %u lacks "
		    "8): add Decrypt to its key usage",
		    k->name, k->usage_mask);
	return 0;
}

/* ---- crypto -----------------------------------------------------------------------------------
 */

int ct_build_encrypt(const char *base, const char *key_name, const struct secret *plain,
		     const void *aad, size_t aad_len, struct http_request *ret)
{
	struct json_writer w;
	int r;

	if (!name_ok(key_name) || !plain || plain->len == 0 || plain->len > CT_PLAINTEXT_MAX ||
	    !aad || aad_len == 0 || aad_len > 1024)
		return -EINVAL;
	r = json_writer_init(&w, 512 + 6 * strlen(key_name) + (plain->len + aad_len) / 3 * 4 + 8);
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_string(&w, "id", key_name);
	json_writer_string(&w, "type", "name");
	json_writer_base64(&w, "plaintext", plain->buf, plain->len);
	json_writer_string(&w, "mode", "gcm");
	json_writer_base64(&w, "aad", aad, aad_len);
	json_writer_object_end(&w);
	return post_json(base, "/api/v1/crypto/encrypt", &w, ret);
}

/* The fields a GCM ciphertext needs back: non-empty printable strings.  The version, when there
 * is one, as text into @ver.  -EBADMSG names nothing: the callers say "malformed". */
static int blob_fields_ok(struct json_object *o, char *ver, size_t ver_size)
{
	static const char *const need[] = {"ciphertext", "iv", "tag"};
	struct json_object *v;

	if (!json_object_is_type(o, json_type_object))
		return -EBADMSG;
	for (size_t i = 0; i < ARRAY_SIZE(need); i++)
		if (!text_ok(json_get_str(o, need[i]), CT_FIELD_MAX))
			return -EBADMSG;
	if (json_object_object_get_ex(o, "mode", &v) &&
	    (!json_object_is_type(v, json_type_string) ||
	     strcasecmp(json_object_get_string(v), "gcm") != 0))
		return -EBADMSG;
	*ver = 0;
	if (json_object_object_get_ex(o, "version", &v) && v &&
	    ct_version_text(v, ver, ver_size) < 0)
		return -EBADMSG;
	if (json_object_object_get_ex(o, "plaintext", &v))
		return -EBADMSG; /* never store key material */
	return 0;
}

int ct_parse_encrypt(const struct http_response *resp, char **ret_blob, size_t *ret_blob_len,
		     char *ret_version, size_t version_size, struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	const char *s;
	char *blob;

	if (!ok_status(resp))
		return ct_parse_error(resp, CT_OP_ENCRYPT, err);
	/* an encrypt reply holds no key material: json-c may read it */
	if (!resp->body || json_parse_buf(resp->body->buf, resp->body->len, &o) < 0)
		return malformed(resp, err, "encrypt reply is not JSON");
	if (blob_fields_ok(o, ret_version, version_size) < 0)
		return malformed(
		    resp, err,
		    "encrypt reply lacks ciphertext, iv or tag, or has a bad mode or version");
	if (!json_object_object_get_ex(o, "mode", NULL) &&
	    json_object_object_add(o, "mode", json_object_new_string("gcm")) < 0)
		return -ENOMEM;
	s = json_object_to_json_string_ext(o,
					   JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!s)
		return -ENOMEM;
	if (strlen(s) > CT_BLOB_MAX)
		return malformed(resp, err, "encrypt reply is too large");
	blob = strdup(s);
	if (!blob)
		return -ENOMEM;
	*ret_blob = blob;
	*ret_blob_len = strlen(blob);
	return 0;
}

static int blob_parse(const void *blob, size_t len, struct json_object **ret)
{
	if (!blob || len == 0 || len > CT_BLOB_MAX || memchr(blob, 0, len))
		return -EBADMSG;
	return json_parse_buf(blob, len, ret);
}

int ct_blob_check(const void *blob, size_t len, char *ret_version, size_t version_size)
{
	_cleanup_json_ struct json_object *o = NULL;
	int r;

	r = blob_parse(blob, len, &o);
	if (r < 0)
		return r;
	return blob_fields_ok(o, ret_version, version_size);
}

int ct_build_decrypt(const char *base, const char *key_name, const void *blob, size_t blob_len,
		     const void *aad, size_t aad_len, struct http_request *ret)
{
	_cleanup_json_ struct json_object *o = NULL;
	_cleanup_free_ char *aad64 = NULL;
	char ver[24];
	const char *s;
	int r;

	if (!name_ok(key_name) || !aad || aad_len == 0 || aad_len > 1024)
		return -EINVAL;
	r = blob_parse(blob, blob_len, &o);
	if (r < 0 || blob_fields_ok(o, ver, sizeof(ver)) < 0)
		return -EINVAL;
	r = base64_encode(aad, aad_len, 0, &aad64);
	if (r < 0)
		return r;
	/* every member of the encrypt reply goes back as it came; the binding is always ours */
	json_object_object_del(o, "aad");
	if (json_object_object_add(o, "aad", json_object_new_string(aad64)) < 0)
		return -ENOMEM;
	if (!json_object_object_get_ex(o, "mode", NULL) &&
	    json_object_object_add(o, "mode", json_object_new_string("gcm")) < 0)
		return -ENOMEM;
	if (!json_object_object_get_ex(o, "id", NULL)) {
		json_object_object_del(o, "type");
		if (json_object_object_add(o, "id", json_object_new_string(key_name)) < 0 ||
		    json_object_object_add(o, "type", json_object_new_string("name")) < 0)
			return -ENOMEM;
	}
	s = json_object_to_json_string_ext(o,
					   JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!s)
		return -ENOMEM;
	{
		struct secret *body = NULL;
		r = secret_from(s, strlen(s), &body);
		if (r < 0)
			return r;
		return ct_request(base, "POST", "/api/v1/crypto/decrypt", NULL, body, ret);
	}
}

int ct_parse_decrypt(const struct http_response *resp, struct secret **ret_plain,
		     struct kms_error *err)
{
	static const char *const p_pt[] = {"plaintext", NULL};
	_cleanup_secret_ struct secret *plain = NULL;
	int r;

	if (!ok_status(resp))
		return ct_parse_error(resp, CT_OP_DECRYPT, err);
	if (!resp->body)
		return malformed(resp, err, "empty decrypt reply");
	r = json_find_b64_secret(resp->body->buf, resp->body->len, p_pt, &plain);
	if (r == -ENOENT)
		return malformed(resp, err, "no plaintext in the decrypt reply");
	if (r == -EBADMSG)
		return malformed(resp, err, "decrypt reply is not JSON or plaintext is not base64");
	if (r < 0)
		return r;
	if (plain->len == 0)
		return malformed(resp, err, "empty plaintext");
	*ret_plain = TAKE_PTR(plain);
	return 0;
}

/* ---- errors -----------------------------------------------------------------------------------
 */

int ct_parse_error(const struct http_response *resp, enum ct_op op, struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	const char *desc = NULL, *msg = NULL;
	char code[96] = "";
	int cls, st = resp->status;

	/* error replies carry no key material; a login error echoes nothing of the credential */
	if (resp->body && resp->body->len > 0 &&
	    json_parse_buf(resp->body->buf, resp->body->len, &o) >= 0 &&
	    json_object_is_type(o, json_type_object)) {
		desc = json_get_str(o, "codeDesc");
		msg = json_get_str(o, "message");
		if (!msg)
			msg = json_get_str(o, "error_description");
		if (!msg)
			msg = json_get_str(o, "error");
		if (desc && strncmp(desc, "NCERR", 5) == 0)
			snprintf(code, sizeof(code), "%.*s", (int)strcspn(desc, ": "), desc);
	}
	if (st == 408 || st == 429 || (st >= 500 && st <= 599))
		cls = -EAGAIN;
	else if (st >= 400 && st <= 499)
		cls = -EACCES; /* answers, not faults */
	else
		cls = -EBADMSG;
	kms_error_fill(err, cls, st, code, NULL, "CipherTrust: HTTP %d%s%.160s%s%.200s", st,
		       desc ? ": " : "", desc ? desc : "", msg ? ": " : "", msg ? msg : "");
	/* a well-formed decrypt the KMS will not open: tag, aad (other volume or keyslot) or a
	 * changed field of the stored reply */
	if (err && op == CT_OP_DECRYPT && (st == 400 || st == 409 || st == 422))
		err->token_rejected = true;
	return cls;
}
