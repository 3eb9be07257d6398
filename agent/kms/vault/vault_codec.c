/* SPDX-License-Identifier: MIT */
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
#include "kms/vault/vault_codec.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define VAULT_PLAINTEXT_MAX (32u * 1024u)

static void json_put_ptr(struct json_object **o)
{
	json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_put_ptr)

/* Key names and mount segments: [A-Za-z0-9_.-]+, mounts may nest with '/', no "." or ".." segment. */
static bool name_ok(const char *s, bool slashes)
{
	size_t seg = 0;

	if (!s || !*s || strlen(s) > 256)
		return false;
	for (const char *p = s;; p++) {
		if (*p == '/' || *p == 0) {
			if (seg == 0 || (seg == 1 && p[-1] == '.') || (seg == 2 && p[-1] == '.' && p[-2] == '.'))
				return false;
			if (*p == 0)
				return true;
			if (!slashes)
				return false;
			seg = 0;
			continue;
		}
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '_' || *p == '-' || *p == '.'))
			return false;
		seg++;
	}
}

static bool header_ok(const char *s)
{
	if (!s || !*s || strlen(s) > 4096)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* "<addr>/v1/<path>" with the Vault headers. */
static int vault_request(const struct vault_target *t, const char *method, const char *path, bool auth,
			 struct secret *body, struct http_request *ret)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_free_ char *full = NULL;
	int r;

	if (!t || !t->addr || (t->ns && !header_ok(t->ns)) || (auth && !header_ok(t->token))) {
		secret_free(body);
		return -EINVAL;
	}
	if (asprintf(&full, "/v1/%s", path) < 0) {
		secret_free(body);
		return -ENOMEM;
	}
	r = http_request_json(&req, method, t->addr, full, NULL, body);
	/* marks API calls; Vault requires it when CORS is on and it costs nothing elsewhere */
	if (r >= 0)
		r = http_request_header_add(&req, "X-Vault-Request", "true");
	if (r >= 0 && t->ns)
		r = http_request_header_add(&req, "X-Vault-Namespace", t->ns);
	if (r >= 0 && auth)
		r = http_request_header_add(&req, "X-Vault-Token", t->token);
	if (r < 0)
		return r;
	*ret = req;
	memset(&req, 0, sizeof(req));
	return 0;
}

static void put_binding(struct json_writer *w, const struct vault_binding *b)
{
	if (!b)
		return;
	if (b->aad && b->aad_len)
		json_writer_base64(w, "associated_data", b->aad, b->aad_len);
	if (b->context && b->context_len)
		json_writer_base64(w, "context", b->context, b->context_len);
}

static size_t binding_size(const struct vault_binding *b)
{
	return b ? (b->aad_len + b->context_len) / 3 * 4 + 16 : 0;
}

static int transit_path(const struct vault_target *t, const char *op, const char *key, char **ret)
{
	if (!t || !name_ok(t->mount, true) || !name_ok(key, false))
		return -EINVAL;
	if (asprintf(ret, "%s/%s/%s", t->mount, op, key) < 0)
		return -ENOMEM;
	return 0;
}

int vault_build_encrypt(const struct vault_target *t, const char *key, const struct secret *plain,
			const struct vault_binding *b, unsigned key_version, struct http_request *ret)
{
	_cleanup_free_ char *path = NULL;
	struct json_writer w;
	struct secret *body;
	int r;

	if (!plain || plain->len == 0 || plain->len > VAULT_PLAINTEXT_MAX)
		return -EINVAL;
	r = transit_path(t, "encrypt", key, &path);
	if (r < 0)
		return r;
	r = json_writer_init(&w, 256 + plain->len / 3 * 4 + binding_size(b));
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_base64(&w, "plaintext", plain->buf, plain->len);
	put_binding(&w, b);
	if (key_version)
		json_writer_uint(&w, "key_version", key_version);
	json_writer_object_end(&w);
	r = json_writer_finish(&w, &body);
	if (r < 0)
		return r;
	return vault_request(t, "POST", path, true, body, ret);
}

static bool ciphertext_ok(const char *c)
{
	unsigned v;

	return c && strlen(c) < 16384 && vault_ciphertext_version(c, &v) == 0;
}

static int build_with_ciphertext(const struct vault_target *t, const char *op, const char *key,
				 const char *ciphertext, const struct vault_binding *b, struct http_request *ret)
{
	_cleanup_free_ char *path = NULL;
	struct json_writer w;
	struct secret *body;
	int r;

	if (!ciphertext_ok(ciphertext))
		return -EINVAL;
	r = transit_path(t, op, key, &path);
	if (r < 0)
		return r;
	r = json_writer_init(&w, 256 + strlen(ciphertext) + binding_size(b));
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_string(&w, "ciphertext", ciphertext);
	put_binding(&w, b);
	json_writer_object_end(&w);
	r = json_writer_finish(&w, &body);
	if (r < 0)
		return r;
	return vault_request(t, "POST", path, true, body, ret);
}

int vault_build_decrypt(const struct vault_target *t, const char *key, const char *ciphertext,
			const struct vault_binding *b, struct http_request *ret)
{
	return build_with_ciphertext(t, "decrypt", key, ciphertext, b, ret);
}

int vault_build_rewrap(const struct vault_target *t, const char *key, const char *ciphertext,
		       const struct vault_binding *b, struct http_request *ret)
{
	/* Vault's rewrap takes context (derived keys) but no associated_data, and fails with "cipher:
	 * message authentication failed" on AEAD ciphertexts made with some (hashicorp/vault#29532,
	 * #31791).  Refuse instead of sending a request that cannot work: the caller re-encrypts with
	 * decrypt + encrypt. */
	if (b && b->aad && b->aad_len)
		return -EOPNOTSUPP;
	return build_with_ciphertext(t, "rewrap", key, ciphertext, b, ret);
}

int vault_build_key_read(const struct vault_target *t, const char *key, struct http_request *ret)
{
	_cleanup_free_ char *path = NULL;
	int r;

	r = transit_path(t, "keys", key, &path);
	if (r < 0)
		return r;
	return vault_request(t, "GET", path, true, NULL, ret);
}

int vault_build_approle_login(const struct vault_target *t, const char *approle_mount, const char *role_id,
			      const struct secret *secret_id, struct http_request *ret)
{
	_cleanup_free_ char *path = NULL;
	struct json_writer w;
	struct secret *body;
	int r;

	if (!approle_mount)
		approle_mount = "approle";
	if (!name_ok(approle_mount, true) || !role_id || !*role_id || strlen(role_id) > 1024 || !secret_id ||
	    secret_id->len == 0 || secret_id->len > 1024)
		return -EINVAL;
	if (asprintf(&path, "auth/%s/login", approle_mount) < 0)
		return -ENOMEM;
	r = json_writer_init(&w, 256 + 6 * (strlen(role_id) + secret_id->len));
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_string(&w, "role_id", role_id);
	json_writer_string_n(&w, "secret_id", secret_id->buf, secret_id->len);
	json_writer_object_end(&w);
	r = json_writer_finish(&w, &body);
	if (r < 0)
		return r;
	return vault_request(t, "POST", path, false, body, ret);
}

int vault_build_token_lookup_self(const struct vault_target *t, struct http_request *ret)
{
	return vault_request(t, "GET", "auth/token/lookup-self", true, NULL, ret);
}

/* ---- replies ---------------------------------------------------------------------------------- */

void vault_ciphertext_done(struct vault_ciphertext *c)
{
	if (!c)
		return;
	free(c->ciphertext);
	memset(c, 0, sizeof(*c));
}

void vault_key_info_done(struct vault_key_info *k)
{
	if (!k)
		return;
	free(k->name);
	free(k->type);
	memset(k, 0, sizeof(*k));
}

void vault_auth_done(struct vault_auth *a)
{
	if (!a)
		return;
	if (a->client_token) {
		explicit_bzero(a->client_token, strlen(a->client_token));
		free(a->client_token);
	}
	free(a->accessor);
	memset(a, 0, sizeof(*a));
}

void vault_token_info_done(struct vault_token_info *i)
{
	if (!i)
		return;
	free(i->display_name);
	memset(i, 0, sizeof(*i));
}

int vault_ciphertext_version(const char *c, unsigned *ret)
{
	unsigned long v = 0;
	const char *p;

	if (!c || strncmp(c, "vault:v", 7) != 0)
		return -EBADMSG;
	p = c + 7;
	if (*p < '1' || *p > '9')
		return -EBADMSG;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > 0x7fffffff)
			return -EBADMSG;
	}
	if (*p != ':' || p[1] == 0)
		return -EBADMSG;
	/* the rest is base64 (the standard alphabet) */
	for (p++; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		      *p == '+' || *p == '/' || *p == '='))
			return -EBADMSG;
	*ret = (unsigned)v;
	return 0;
}

static bool ok_status(const struct http_response *resp)
{
	return resp->status >= 200 && resp->status <= 299;
}

static int malformed(const struct http_response *resp, struct kms_error *err, const char *what)
{
	return kms_error_fill(err, -EBADMSG, resp->status, "", NULL, "malformed Vault reply: %s", what);
}

static int parse_ciphertext(const struct http_response *resp, struct vault_ciphertext *ret,
			    struct kms_error *err)
{
	static const char *const p_ct[] = { "data", "ciphertext", NULL };
	_cleanup_(vault_ciphertext_done) struct vault_ciphertext c = {};
	int r;

	if (!ok_status(resp))
		return vault_parse_error(resp, err);
	if (!resp->body)
		return malformed(resp, err, "empty body");
	r = json_find_string(resp->body->buf, resp->body->len, p_ct, &c.ciphertext);
	if (r == -ENOENT || r == -EBADMSG)
		return malformed(resp, err, "no data.ciphertext");
	if (r < 0)
		return r;
	if (vault_ciphertext_version(c.ciphertext, &c.key_version) < 0)
		return malformed(resp, err, "ciphertext is not \"vault:v<N>:<base64>\"");
	*ret = c;
	memset(&c, 0, sizeof(c));
	return 0;
}

int vault_parse_encrypt(const struct http_response *resp, struct vault_ciphertext *ret,
			struct kms_error *err)
{
	return parse_ciphertext(resp, ret, err);
}

int vault_parse_rewrap(const struct http_response *resp, struct vault_ciphertext *ret,
		       struct kms_error *err)
{
	return parse_ciphertext(resp, ret, err);
}

int vault_parse_decrypt(const struct http_response *resp, struct secret **ret_plain, struct kms_error *err)
{
	static const char *const p_pt[] = { "data", "plaintext", NULL };
	_cleanup_secret_ struct secret *plain = NULL;
	int r;

	if (!ok_status(resp))
		return vault_parse_error(resp, err);
	if (!resp->body)
		return malformed(resp, err, "empty body");
	r = json_find_b64_secret(resp->body->buf, resp->body->len, p_pt, &plain);
	if (r == -ENOENT)
		return malformed(resp, err, "no data.plaintext");
	if (r == -EBADMSG)
		return malformed(resp, err, "not JSON or data.plaintext is not base64");
	if (r < 0)
		return r;
	if (plain->len == 0)
		return malformed(resp, err, "empty plaintext");
	*ret_plain = TAKE_PTR(plain);
	return 0;
}

static bool type_is_aead(const char *type)
{
	return strcmp(type, "aes128-gcm96") == 0 || strcmp(type, "aes256-gcm96") == 0 ||
	       strcmp(type, "chacha20-poly1305") == 0;
}

int vault_parse_key(const struct http_response *resp, struct vault_key_info *ret, struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	_cleanup_(vault_key_info_done) struct vault_key_info k = {};
	struct json_object *d;
	const char *type;
	bool b;

	if (!ok_status(resp))
		return vault_parse_error(resp, err);
	/* key metadata holds no key material (exportable keys are read from /export/, never here) */
	if (!resp->body || json_parse_buf(resp->body->buf, resp->body->len, &o) < 0)
		return malformed(resp, err, "not JSON");
	d = json_get_obj(o, "data");
	type = json_get_str(d, "type");
	if (!d || !type || json_get_u32(d, "latest_version", &k.latest_version) < 0 ||
	    json_get_u32(d, "min_decryption_version", &k.min_decryption_version) < 0)
		return malformed(resp, err, "no data.type, latest_version or min_decryption_version");
	if (json_get_u32(d, "min_encryption_version", &k.min_encryption_version) == -EBADMSG)
		return malformed(resp, err, "bad min_encryption_version");
#define BOOL_FIELD(f)                                                                              \
	do {                                                                                       \
		int _r = json_get_bool(d, #f, &b);                                                 \
		if (_r == -EBADMSG)                                                                \
			return malformed(resp, err, "bad " #f);                                    \
		k.f = _r == 0 && b;                                                                \
	} while (0)
	BOOL_FIELD(deletion_allowed);
	BOOL_FIELD(derived);
	BOOL_FIELD(exportable);
	BOOL_FIELD(supports_encryption);
	BOOL_FIELD(supports_decryption);
#undef BOOL_FIELD
	k.aead = type_is_aead(type);
	k.type = strdup(type);
	if (!k.type || (json_get_str(d, "name") && !(k.name = strdup(json_get_str(d, "name")))))
		return -ENOMEM;
	*ret = k;
	memset(&k, 0, sizeof(k));
	return 0;
}

int vault_parse_approle_login(const struct http_response *resp, struct vault_auth *ret,
			      struct kms_error *err)
{
	static const char *const p_tok[] = { "auth", "client_token", NULL };
	static const char *const p_acc[] = { "auth", "accessor", NULL };
	static const char *const p_lease[] = { "auth", "lease_duration", NULL };
	static const char *const p_renew[] = { "auth", "renewable", NULL };
	_cleanup_(vault_auth_done) struct vault_auth a = {};
	const uint8_t *buf;
	size_t len;
	uint64_t lease = 0;
	int r;

	if (!ok_status(resp))
		return vault_parse_error(resp, err);
	if (!resp->body)
		return malformed(resp, err, "empty body");
	buf = resp->body->buf;
	len = resp->body->len;
	/* holds a token: the scanner only */
	r = json_find_string(buf, len, p_tok, &a.client_token);
	if (r == -ENOENT || r == -EBADMSG || (r == 0 && (!*a.client_token || strlen(a.client_token) > 4096)))
		return malformed(resp, err, "no auth.client_token");
	if (r < 0)
		return r;
	for (const char *p = a.client_token; *p; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p >= 0x7f)
			return malformed(resp, err, "auth.client_token is not a header value");
	r = json_find_string(buf, len, p_acc, &a.accessor);
	if (r < 0 && r != -ENOENT)
		return r == -EBADMSG ? malformed(resp, err, "bad auth.accessor") : r;
	r = json_find_uint(buf, len, p_lease, &lease);
	if (r == -EBADMSG || lease > UINT32_MAX)
		return malformed(resp, err, "bad auth.lease_duration");
	a.lease_duration = (uint32_t)lease;
	r = json_find_bool(buf, len, p_renew, &a.renewable);
	if (r == -EBADMSG)
		return malformed(resp, err, "bad auth.renewable");
	*ret = a;
	memset(&a, 0, sizeof(a));
	return 0;
}

int vault_parse_token_lookup_self(const struct http_response *resp, struct vault_token_info *ret,
				  struct kms_error *err)
{
	static const char *const p_ttl[] = { "data", "ttl", NULL };
	static const char *const p_renew[] = { "data", "renewable", NULL };
	static const char *const p_name[] = { "data", "display_name", NULL };
	_cleanup_(vault_token_info_done) struct vault_token_info i = {};
	uint64_t ttl = 0;
	int r;

	if (!ok_status(resp))
		return vault_parse_error(resp, err);
	if (!resp->body)
		return malformed(resp, err, "empty body");
	/* data.id is the token itself: the scanner only, json-c never sees this reply */
	r = json_find_uint(resp->body->buf, resp->body->len, p_ttl, &ttl);
	if (r < 0 || ttl > UINT32_MAX)
		return r == -ENOMEM ? r : malformed(resp, err, "no data.ttl");
	i.ttl = (uint32_t)ttl;
	r = json_find_bool(resp->body->buf, resp->body->len, p_renew, &i.renewable);
	if (r == -EBADMSG)
		return malformed(resp, err, "bad data.renewable");
	r = json_find_string(resp->body->buf, resp->body->len, p_name, &i.display_name);
	if (r < 0 && r != -ENOENT)
		return r == -EBADMSG ? malformed(resp, err, "bad data.display_name") : r;
	*ret = i;
	memset(&i, 0, sizeof(i));
	return 0;
}

/* Vault's messages for a ciphertext that is well-formed but will not open (answers, not faults). */
static const char *const denied_msgs[] = {
	"permission denied",
	"message authentication failed", /* wrong key, associated_data or context */
	"disallowed by policy",           /* "ciphertext or signature version is disallowed by policy (too old)" */
	"too old",
	"encryption key not found",
	"key not found",
	"invalid key version",
	"requested version for decryption is less than the minimum decryption key version",
	"missing client token",
	"invalid token",
	"bad token",
	"not allowed",
	"not supported",
	"requires derivation context",
	"missing 'context'",
};
/* ... and for a ciphertext that is not one. */
static const char *const malformed_msgs[] = {
	"invalid ciphertext",
	"unable to decode",
	"illegal base64",
	"failed to base64-decode",
};
static const char *const transient_msgs[] = {
	"vault is sealed",
	"local node not active",
	"rate limit quota exceeded",
};

static bool contains_any(const char *msg, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcasestr(msg, list[i]))
			return true;
	return false;
}

int vault_parse_error(const struct http_response *resp, struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	struct json_object *errors;
	char msg[384] = "";
	int cls;

	if (resp->body && resp->body->len > 0 && json_parse_buf(resp->body->buf, resp->body->len, &o) >= 0 &&
	    json_object_object_get_ex(o, "errors", &errors) && json_object_is_type(errors, json_type_array)) {
		size_t n = json_object_array_length(errors), used = 0;

		for (size_t i = 0; i < n && used + 1 < sizeof(msg); i++) {
			struct json_object *e = json_object_array_get_idx(errors, i);
			int k;

			if (!json_object_is_type(e, json_type_string))
				continue;
			k = snprintf(msg + used, sizeof(msg) - used, "%s%s", used ? "; " : "",
				     json_object_get_string(e));
			if (k < 0)
				break;
			used = MIN(used + (size_t)k, sizeof(msg) - 1);
		}
	}
	/* Vault wraps multierrors as "1 error occurred:\n\t* permission denied\n\n": one line please */
	for (char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';

	if (contains_any(msg, transient_msgs, ARRAY_SIZE(transient_msgs)) ||
	    http_status_transient(resp->status) || resp->status == 412)
		cls = -EAGAIN;
	else if (resp->status == 401 || resp->status == 403 || resp->status == 404)
		cls = -EACCES;
	else if (resp->status == 400 && contains_any(msg, malformed_msgs, ARRAY_SIZE(malformed_msgs)))
		cls = -EBADMSG;
	else if (contains_any(msg, denied_msgs, ARRAY_SIZE(denied_msgs)))
		cls = -EACCES;
	else if (resp->status >= 400 && resp->status <= 499 && *msg)
		cls = -EACCES; /* an answer we do not know by wording */
	else
		cls = -EBADMSG;
	if (*msg) {
		kms_error_fill(err, cls, resp->status, "", NULL, "Vault: HTTP %d: %s", resp->status, msg);
		/* wrong associated_data or context (volume, keyslot) or a changed ciphertext: a token
		 * modified or copied from another volume */
		if (err && cls == -EACCES && strcasestr(msg, "message authentication failed"))
			err->token_rejected = true;
		return cls;
	}
	return kms_error_fill(err, cls, resp->status, "", NULL, "Vault: HTTP %d without an error message",
			      resp->status);
}
