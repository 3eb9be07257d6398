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
#include "kms/azure/azure_codec.h"
#include "kmscrypt/token.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define AZURE_VALUE_MAX 1024u /* RSA-4096 ciphertext is 512 bytes */
#define AZURE_TOKEN_MAX 16384u

static void json_put_ptr(struct json_object **o)
{
	json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_put_ptr)

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool azure_key_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 127)
		return false;
	for (; *s; s++)
		if (!is_alnum(*s) && *s != '-')
			return false;
	return true;
}

bool azure_key_version_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 64)
		return false;
	for (; *s; s++)
		if (!is_alnum(*s))
			return false;
	return true;
}

bool azure_tenant_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 128 || *s == '.' || *s == '-')
		return false;
	for (; *s; s++)
		if (!is_alnum(*s) && *s != '-' && *s != '.')
			return false;
	return true;
}

/* "scheme://host[:port][/]" -> "scheme://host[:port]". */
static int url_base(const char *url, const char *scheme, char **ret)
{
	size_t sl = strlen(scheme), n;
	const char *host;

	if (!url || strncmp(url, scheme, sl) != 0 || strncmp(url + sl, "://", 3) != 0)
		return -EINVAL;
	n = strlen(url);
	while (n > sl + 3 && url[n - 1] == '/')
		n--;
	host = url + sl + 3;
	if (n == sl + 3 || n > 512 || memchr(host, '/', n - sl - 3) ||
	    memchr(host, '?', n - sl - 3) || memchr(host, '@', n - sl - 3) ||
	    memchr(host, '#', n - sl - 3))
		return -EINVAL;
	for (size_t i = sl + 3; i < n; i++)
		if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
			return -EINVAL;
	*ret = strndup(url, n);
	return *ret ? 0 : -ENOMEM;
}

int azure_vault_url_parse(const char *url, char **ret_base, char **ret_resource)
{
	_cleanup_free_ char *base = NULL, *resource = NULL;
	const char *host, *dot, *end;
	int r;

	/* seed 004 gives keyVaultEndpoint as a bare host ("myVaultName.vault.azure.net") */
	if (url && !strstr(url, "://")) {
		_cleanup_free_ char *full = NULL;

		if (asprintf(&full, "https://%s", url) < 0)
			return -ENOMEM;
		r = url_base(full, "https", &base);
	} else {
		r = url_base(url, "https", &base);
	}
	if (r < 0)
		return r;
	/* Sovereign clouds: myvault.vault.azure.cn -> https://vault.azure.cn (the token audience).
	 */
	host = base + 8;
	end = strchr(host, ':');
	if (!end)
		end = host + strlen(host);
	dot = memchr(host, '.', (size_t)(end - host));
	if (dot && (size_t)(end - dot) > 7 && strncasecmp(dot + 1, "vault.", 6) == 0 &&
	    memchr(dot + 7, '.', (size_t)(end - dot - 7))) {
		if (asprintf(&resource, "https://%.*s", (int)(end - dot - 1), dot + 1) < 0)
			return -ENOMEM;
		for (char *p = resource + 8; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
	} else {
		resource = strdup(AZURE_VAULT_RESOURCE);
		if (!resource)
			return -ENOMEM;
	}
	*ret_base = TAKE_PTR(base);
	if (ret_resource)
		*ret_resource = TAKE_PTR(resource);
	return 0;
}

/* ---- form encoding (application/x-www-form-urlencoded, into locked memory) ------------------ */

static int form_put(struct secret *s, const char *key, const void *value, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *v = value;
	int r;

	if (s->len && (r = secret_append(s, "&", 1)) < 0)
		return r;
	if ((r = secret_append(s, key, strlen(key))) < 0 || (r = secret_append(s, "=", 1)) < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		char e[3];

		if (is_alnum((char)v[i]) || v[i] == '-' || v[i] == '.' || v[i] == '_' ||
		    v[i] == '~') {
			r = secret_append(s, &v[i], 1);
		} else {
			e[0] = '%';
			e[1] = hex[v[i] >> 4];
			e[2] = hex[v[i] & 15];
			r = secret_append(s, e, 3);
			explicit_bzero(e, sizeof(e));
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static bool text_ok(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > max)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x21 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

int azure_build_token(const char *login, const char *tenant, const char *client_id,
		      const struct secret *client_secret, const char *resource,
		      struct http_request *ret)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_free_ char *base = NULL, *path = NULL, *scope = NULL;
	_cleanup_secret_ struct secret *body = NULL;
	int r;

	if (!azure_tenant_ok(tenant) || !text_ok(client_id, 256) || !client_secret ||
	    client_secret->len == 0 || client_secret->len > 4096 || !text_ok(resource, 512))
		return -EINVAL;
	r = url_base(login ? login : AZURE_LOGIN_ENDPOINT, "https", &base);
	if (r < 0)
		return r;
	if (asprintf(&path, "/%s/oauth2/v2.0/token", tenant) < 0 ||
	    asprintf(&scope, "%s/.default", resource) < 0)
		return -ENOMEM;
	r = secret_new(256 + 3 * (strlen(client_id) + strlen(scope) + client_secret->len), &body);
	if (r < 0)
		return r;
	if ((r = form_put(body, "client_id", client_id, strlen(client_id))) < 0 ||
	    (r = form_put(body, "scope", scope, strlen(scope))) < 0 ||
	    (r = form_put(body, "client_secret", client_secret->buf, client_secret->len)) < 0 ||
	    (r = form_put(body, "grant_type", "client_credentials", 18)) < 0)
		return r;
	r = http_request_init2(&req, "POST", base, path, NULL);
	if (r < 0)
		return r;
	http_request_take_body(&req, TAKE_PTR(body));
	if ((r = http_request_header_add(&req, "Content-Type",
					 "application/x-www-form-urlencoded")) < 0 ||
	    (r = http_request_header_add(&req, "Accept", "application/json")) < 0)
		return r;
	*ret = req;
	memset(&req, 0, sizeof(req));
	return 0;
}

/* Percent-encode @s for a query value into a heap string. */
static int query_escape(const char *s, char **ret)
{
	static const char hex[] = "0123456789ABCDEF";
	char *o = malloc(strlen(s) * 3 + 1), *p = o;

	if (!o)
		return -ENOMEM;
	for (; *s; s++) {
		if (is_alnum(*s) || strchr("-._~", *s)) {
			*p++ = *s;
		} else {
			*p++ = '%';
			*p++ = hex[(unsigned char)*s >> 4];
			*p++ = hex[(unsigned char)*s & 15];
		}
	}
	*p = 0;
	*ret = o;
	return 0;
}

int azure_build_imds_token(const char *imds, const char *resource, const char *client_id,
			   struct http_request *ret)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_free_ char *base = NULL, *query = NULL, *res = NULL, *cid = NULL;
	int r;

	if (!text_ok(resource, 512) || (client_id && !text_ok(client_id, 256)))
		return -EINVAL;
	r = url_base(imds ? imds : AZURE_IMDS_ENDPOINT, "http", &base);
	if (r == -EINVAL)
		r = url_base(imds, "https", &base);
	if (r < 0)
		return r;
	if ((r = query_escape(resource, &res)) < 0 ||
	    (client_id && (r = query_escape(client_id, &cid)) < 0))
		return r;
	if (asprintf(&query, "api-version=%s&resource=%s%s%s", AZURE_IMDS_API_VERSION, res,
		     cid ? "&client_id=" : "", cid ? cid : "") < 0)
		return -ENOMEM;
	r = http_request_init2(&req, "GET", base, "/metadata/identity/oauth2/token", query);
	if (r < 0)
		return r;
	req.flags |= HTTP_REQ_METADATA;
	if ((r = http_request_header_add(&req, "Metadata", "true")) < 0)
		return r;
	*ret = req;
	memset(&req, 0, sizeof(req));
	return 0;
}

static bool ok_status(const struct http_response *resp)
{
	return resp->status >= 200 && resp->status <= 299;
}

static const char *request_id(const struct http_response *resp)
{
	return http_response_header_get(resp, "x-ms-request-id");
}

static int malformed(const struct http_response *resp, struct kms_error *err, const char *what)
{
	return kms_error_fill(err, -EBADMSG, resp->status, "", request_id(resp),
			      "malformed Azure reply: %s", what);
}

/* Identity platform / IMDS errors: {"error":"invalid_client","error_description":"AADSTS...: ..."}
 */
static int token_error(const struct http_response *resp, struct kms_error *err)
{
	static const struct kms_code_class codes[] = {
	    {"temporarily_unavailable", -EAGAIN},
	    {"invalid_client", -EACCES},
	    {"unauthorized_client", -EACCES},
	    {"invalid_grant", -EACCES},
	    {"invalid_scope", -EACCES},
	    {"invalid_request", -EACCES},
	    {"invalid_resource", -EACCES},
	    {"identity_not_found", -EACCES},
	    {NULL, 0},
	};
	_cleanup_json_ struct json_object *o = NULL;
	const char *code = NULL, *desc = NULL;
	char d[300];
	int cls;

	if (resp->body && resp->body->len &&
	    json_parse_buf(resp->body->buf, resp->body->len, &o) >= 0) {
		code = json_get_str(o, "error");
		desc = json_get_str(o, "error_description");
	}
	cls = kms_http_classify(resp->status, code, codes);
	if (cls == 0 || (cls == -EBADMSG && resp->status >= 400 && resp->status <= 499))
		cls = -EACCES; /* a 4xx of the identity platform is an answer */
	/* AADSTS descriptions continue with "\r\nTrace ID: ..." lines: keep the first line */
	snprintf(d, sizeof(d), "%s", desc ? desc : "");
	d[strcspn(d, "\r\n")] = 0;
	return kms_error_fill(err, cls, resp->status, code ? code : "",
			      http_response_header_get(resp, "x-ms-request-id"),
			      "Azure token endpoint: HTTP %d%s%s%s%s", resp->status,
			      code ? ": " : "", code ? code : "", *d ? ": " : "", d);
}

/* expires_in / expires_on: a JSON number or a string of digits (IMDS sends strings). */
static int find_num(const void *buf, size_t len, const char *key, uint64_t *ret)
{
	const char *const path[] = {key, NULL};
	_cleanup_free_ char *s = NULL;
	char *end;
	int r;

	r = json_find_uint(buf, len, path, ret);
	if (r != -EBADMSG)
		return r;
	r = json_find_string(buf, len, path, &s);
	if (r < 0)
		return r;
	if (!*s || *s < '0' || *s > '9')
		return -EBADMSG;
	errno = 0;
	*ret = strtoull(s, &end, 10);
	return errno || *end ? -EBADMSG : 0;
}

int azure_parse_token(const struct http_response *resp, time_t now, struct secret **ret_token,
		      time_t *ret_expires, struct kms_error *err)
{
	static const char *const p_tok[] = {"access_token", NULL};
	static const char *const p_type[] = {"token_type", NULL};
	_cleanup_free_ char *tok = NULL, *type = NULL;
	uint64_t in = 0, on = 0;
	struct secret *s;
	int r, k;

	if (!ok_status(resp))
		return token_error(resp, err);
	if (!resp->body || !resp->body->len)
		return malformed(resp, err, "empty token reply");
	/* holds a token: the scanner only, json-c never sees it */
	r = json_find_string(resp->body->buf, resp->body->len, p_tok, &tok);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || !text_ok(tok, AZURE_TOKEN_MAX)) {
		if (tok)
			explicit_bzero(tok, strlen(tok));
		return malformed(resp, err, "no usable access_token");
	}
	r = json_find_string(resp->body->buf, resp->body->len, p_type, &type);
	if (r == 0 && strcasecmp(type, "Bearer") != 0)
		r = -EBADMSG;
	k = find_num(resp->body->buf, resp->body->len, "expires_on", &on);
	if (k == -EBADMSG || r == -EBADMSG) {
		explicit_bzero(tok, strlen(tok));
		return malformed(resp, err, "bad token_type or expires_on");
	}
	k = find_num(resp->body->buf, resp->body->len, "expires_in", &in);
	if (k == -EBADMSG || in > 366u * 86400u) {
		explicit_bzero(tok, strlen(tok));
		return malformed(resp, err, "bad expires_in");
	}
	r = secret_from_cstr(tok, strlen(tok), &s);
	explicit_bzero(tok, strlen(tok));
	if (r < 0)
		return r;
	*ret_token = s;
	/* expires_in is relative to our clock: prefer it over expires_on (the server's clock) */
	*ret_expires = in ? now + (time_t)in : on && on < (uint64_t)INT64_MAX ? (time_t)on : 0;
	return 0;
}

/* ---- Key Vault requests ---------------------------------------------------------------------- */

static int kv_request(const char *base, const char *method, const char *path, struct secret *body,
		      struct http_request *ret)
{
	return http_request_json(ret, method, base, path, "api-version=" AZURE_KV_API_VERSION, body);
}

/* "/keys/{name}[/{version}][/{op}]" */
static int key_path(const char *name, const char *version, const char *op, char **ret)
{
	if (!azure_key_name_ok(name) || (version && *version && !azure_key_version_ok(version)))
		return -EINVAL;
	if (asprintf(ret, "/keys/%s%s%s%s%s", name, version && *version ? "/" : "",
		     version && *version ? version : "", op ? "/" : "", op ? op : "") < 0)
		return -ENOMEM;
	return 0;
}

int azure_build_key_get(const char *base, const char *name, const char *version,
			struct http_request *ret)
{
	_cleanup_free_ char *path = NULL;
	int r = key_path(name, version, NULL, &path);

	return r < 0 ? r : kv_request(base, "GET", path, NULL, ret);
}

int azure_build_key_create(const char *base, const char *name, unsigned key_size,
			   struct http_request *ret)
{
	_cleanup_free_ char *path = NULL;
	struct json_writer w;
	struct secret *body;
	int r;

	if (key_size != 2048 && key_size != 3072 && key_size != 4096)
		return -EINVAL;
	r = key_path(name, NULL, "create", &path);
	if (r < 0)
		return r;
	r = json_writer_init(&w, 512);
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_string(&w, "kty", "RSA");
	json_writer_uint(&w, "key_size", key_size);
	json_writer_array_begin(&w, "key_ops");
	json_writer_string(&w, NULL, "wrapKey");
	json_writer_string(&w, NULL, "unwrapKey");
	json_writer_array_end(&w);
	json_writer_object_begin(&w, "attributes");
	json_writer_bool(&w, "enabled", true);
	json_writer_object_end(&w);
	json_writer_object_begin(&w, "tags");
	json_writer_string(&w, "created-by", "kmscrypt");
	json_writer_object_end(&w);
	json_writer_object_end(&w);
	r = json_writer_finish(&w, &body);
	if (r < 0)
		return r;
	return kv_request(base, "POST", path, body, ret);
}

int azure_build_rotation_policy_get(const char *base, const char *name, struct http_request *ret)
{
	_cleanup_free_ char *path = NULL;
	int r = key_path(name, NULL, "rotationpolicy", &path);

	return r < 0 ? r : kv_request(base, "GET", path, NULL, ret);
}

/* {"alg":"RSA-OAEP-256","value":"<base64url>"} without a heap copy of @value. */
static int crypto_body(const uint8_t *value, size_t n, struct secret **ret)
{
	static const char head[] = "{\"alg\":\"" AZURE_WRAP_ALG "\",\"value\":\"";
	_cleanup_secret_ struct secret *s = NULL;
	int r;

	r = secret_new(64 + (n + 2) / 3 * 4, &s);
	if (r < 0)
		return r;
	r = secret_append(s, head, sizeof(head) - 1);
	if (r < 0)
		return r;
	/* base64url straight into the locked body, 3 bytes at a time */
	for (size_t i = 0; i < n; i += 3) {
		static const char a[] =
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		uint32_t v = (uint32_t)value[i] << 16;
		size_t k = MIN((size_t)3, n - i);
		char o[4];

		if (k > 1)
			v |= (uint32_t)value[i + 1] << 8;
		if (k > 2)
			v |= value[i + 2];
		o[0] = a[(v >> 18) & 63];
		o[1] = a[(v >> 12) & 63];
		o[2] = a[(v >> 6) & 63];
		o[3] = a[v & 63];
		r = secret_append(s, o, k + 1);
		explicit_bzero(o, sizeof(o));
		v = 0;
		if (r < 0)
			return r;
	}
	r = secret_append(s, "\"}", 2);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}

static int build_crypto(const char *base, const char *name, const char *version, const char *op,
			const uint8_t *value, size_t n, struct http_request *ret)
{
	_cleanup_free_ char *path = NULL;
	struct secret *body = NULL;
	int r;

	if (!value || n == 0 || n > AZURE_VALUE_MAX)
		return -EINVAL;
	r = key_path(name, version, op, &path);
	if (r < 0)
		return r;
	r = crypto_body(value, n, &body);
	if (r < 0)
		return r;
	return kv_request(base, "POST", path, body, ret);
}

int azure_build_wrap(const char *base, const char *name, const char *version,
		     const struct secret *value, struct http_request *ret)
{
	if (!value)
		return -EINVAL;
	return build_crypto(base, name, version, "wrapkey", value->buf, value->len, ret);
}

int azure_build_unwrap(const char *base, const char *name, const char *version,
		       const uint8_t *value, size_t n, struct http_request *ret)
{
	return build_crypto(base, name, version, "unwrapkey", value, n, ret);
}

/* ---- replies --------------------------------------------------------------------------------- */

void azure_key_done(struct azure_key *k)
{
	if (!k)
		return;
	free(k->kid);
	free(k->name);
	free(k->version);
	free(k->kty);
	memset(k, 0, sizeof(*k));
}

int azure_kid_split(const char *kid, char **ret_name, char **ret_version)
{
	const char *p, *name, *slash;
	_cleanup_free_ char *n = NULL, *v = NULL;

	if (!kid || strncmp(kid, "https://", 8) != 0 || strlen(kid) > 1024)
		return -EBADMSG;
	p = strchr(kid + 8, '/');
	if (!p || p == kid + 8 || strncmp(p, "/keys/", 6) != 0)
		return -EBADMSG;
	name = p + 6;
	slash = strchr(name, '/');
	if (!slash)
		return -EBADMSG;
	n = strndup(name, (size_t)(slash - name));
	v = strdup(slash + 1);
	if (!n || !v)
		return -ENOMEM;
	if (!azure_key_name_ok(n) || !azure_key_version_ok(v))
		return -EBADMSG;
	if (ret_name)
		*ret_name = TAKE_PTR(n);
	if (ret_version)
		*ret_version = TAKE_PTR(v);
	return 0;
}

/* Optional Unix-time member: absent/null -> !*has; a number -> its value. */
static int get_time(struct json_object *o, const char *key, bool *has, int64_t *ret)
{
	struct json_object *v;

	*has = false;
	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return -EBADMSG;
	*ret = json_object_get_int64(v);
	*has = true;
	return 0;
}

int azure_parse_key(const struct http_response *resp, struct azure_key *ret, struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	_cleanup_(azure_key_done) struct azure_key k = {};
	struct json_object *key, *attrs, *ops, *en;
	const char *kid, *kty, *n;

	if (!ok_status(resp))
		return azure_parse_error(resp, false, err);
	/* key metadata and the public key only: json-c is fine */
	if (!resp->body || json_parse_buf(resp->body->buf, resp->body->len, &o) < 0)
		return malformed(resp, err, "key reply is not JSON");
	key = json_get_obj(o, "key");
	attrs = json_get_obj(o, "attributes");
	kid = json_get_str(key, "kid");
	kty = json_get_str(key, "kty");
	if (!key || !attrs || !kid || !kty)
		return malformed(resp, err, "no key.kid, key.kty or attributes");
	k.kid = strdup(kid);
	k.kty = strdup(kty);
	if (!k.kid || !k.kty)
		return -ENOMEM;
	if (azure_kid_split(kid, &k.name, &k.version) < 0)
		return malformed(resp, err, "key.kid is not https://VAULT/keys/NAME/VERSION");
	if (!json_object_object_get_ex(attrs, "enabled", &en) ||
	    !json_object_is_type(en, json_type_boolean))
		return malformed(resp, err, "no attributes.enabled");
	k.enabled = json_object_get_boolean(en);
	if (get_time(attrs, "nbf", &k.has_nbf, &k.nbf) < 0 ||
	    get_time(attrs, "exp", &k.has_exp, &k.exp) < 0)
		return malformed(resp, err, "bad attributes.nbf or attributes.exp");
	if (json_object_object_get_ex(key, "key_ops", &ops) &&
	    !json_object_is_type(ops, json_type_null)) {
		if (!json_object_is_type(ops, json_type_array))
			return malformed(resp, err, "key.key_ops is not a list");
		for (size_t i = 0; i < json_object_array_length(ops); i++) {
			struct json_object *e = json_object_array_get_idx(ops, i);
			const char *s = json_object_is_type(e, json_type_string)
					    ? json_object_get_string(e)
					    : "";

			k.op_wrap |= strcmp(s, "wrapKey") == 0;
			k.op_unwrap |= strcmp(s, "unwrapKey") == 0;
		}
	}
	/* the size of the modulus n (base64url, possibly with a leading zero byte) */
	n = json_get_str(key, "n");
	if (n) {
		_cleanup_free_ uint8_t *m = NULL;
		size_t ml = 0, skip = 0;

		if (base64_decode(n, strlen(n), 1, &m, &ml) < 0)
			return malformed(resp, err, "key.n is not base64url");
		while (skip < ml && m[skip] == 0)
			skip++;
		k.key_size = (unsigned)((ml - skip) * 8);
	}
	*ret = k;
	memset(&k, 0, sizeof(k));
	return 0;
}

static void fmt_time(int64_t t, char *buf, size_t n)
{
	/* civil from days (Howard Hinnant), UTC, no libc time functions (pure) */
	int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400, secs = t - days * 86400;
	int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097, yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1;
	int64_t m = mp < 10 ? mp + 3 : mp - 9;

	y += m <= 2;
	if (y < 0 || y > 9999)
		y = y < 0 ? 0 : 9999;
	snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02dZ", (int)y, (int)m, (int)d,
		 (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60));
}

int azure_key_check(const struct azure_key *k, time_t now, struct kms_error *err)
{
	char t[64];

	if (strcmp(k->kty, "RSA") != 0 && strcmp(k->kty, "RSA-HSM") != 0)
		return kms_error_set(
		    err, -EACCES, "KeyNotRSA",
		    "Azure key '%s' is of type %s; kmscrypt wraps with RSA-OAEP-256 and "
		    "needs an RSA key (create an RSA key or choose another --key-name)",
		    k->name, k->kty);
	if (!k->enabled)
		return kms_error_set(
		    err, -EACCES, "KeyDisabled",
		    "Azure key '%s' version %s is disabled; enable it in the key vault "
		    "(az keyvault key set-attributes --enabled true)",
		    k->name, k->version);
	if (k->has_nbf && k->nbf > (int64_t)now) {
		fmt_time(k->nbf, t, sizeof(t));
		return kms_error_set(
		    err, -EACCES, "KeyNotYetActive",
		    "Azure key '%s' has an activation date in the future (%s); clear "
		    "it or set it to the past",
		    k->name, t);
	}
	if (k->has_exp) {
		fmt_time(k->exp, t, sizeof(t));
		return kms_error_set(err, -EACCES, "KeyExpires",
				     "Azure key '%s' has an expiration date (%s); volumes must not "
				     "depend on a key that expires: clear the expiration date",
				     k->name, t);
	}
	if (!k->op_wrap || !k->op_unwrap)
		return kms_error_set(err, -EACCES, "KeyOpsMissing",
				     "Azure key '%s' does not permit %s%s%s; allow the wrapKey and "
				     "unwrapKey operations on the key",
				     k->name, k->op_wrap ? "" : "wrapKey",
				     !k->op_wrap && !k->op_unwrap ? " and " : "",
				     k->op_unwrap ? "" : "unwrapKey");
	return 0;
}

int azure_parse_rotation_policy(const struct http_response *resp, bool *ret_rotates,
				struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	struct json_object *acts;
	bool rotates = false;

	if (!ok_status(resp))
		return azure_parse_error(resp, false, err);
	if (!resp->body || json_parse_buf(resp->body->buf, resp->body->len, &o) < 0 ||
	    !json_object_is_type(o, json_type_object))
		return malformed(resp, err, "rotation policy is not JSON");
	if (json_object_object_get_ex(o, "lifetimeActions", &acts) &&
	    !json_object_is_type(acts, json_type_null)) {
		if (!json_object_is_type(acts, json_type_array))
			return malformed(resp, err, "lifetimeActions is not a list");
		for (size_t i = 0; i < json_object_array_length(acts); i++) {
			struct json_object *a =
			    json_get_obj(json_object_array_get_idx(acts, i), "action");
			const char *type = json_get_str(a, "type");

			/* the service spells it "Rotate" (older versions: "rotate") */
			if (type && strcasecmp(type, "Rotate") == 0)
				rotates = true;
		}
	}
	*ret_rotates = rotates;
	return 0;
}

int azure_parse_wrap(const struct http_response *resp, char **ret_kid, uint8_t **ret_value,
		     size_t *ret_len, struct kms_error *err)
{
	static const char *const p_kid[] = {"kid", NULL};
	static const char *const p_val[] = {"value", NULL};
	_cleanup_free_ char *kid = NULL, *val = NULL;
	uint8_t *v = NULL;
	size_t n = 0;
	int r;

	if (!ok_status(resp))
		return azure_parse_error(resp, false, err);
	if (!resp->body)
		return malformed(resp, err, "empty wrapkey reply");
	r = json_find_string(resp->body->buf, resp->body->len, p_kid, &kid);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || azure_kid_split(kid, NULL, NULL) < 0)
		return malformed(
		    resp, err,
		    "wrapkey reply has no kid of the form https://VAULT/keys/NAME/VERSION");
	r = json_find_string(resp->body->buf, resp->body->len, p_val, &val);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || base64_decode(val, strlen(val), 1, &v, &n) < 0 || n == 0 ||
	    n > AZURE_VALUE_MAX) {
		free(v);
		return malformed(resp, err, "wrapkey reply has no base64url value");
	}
	*ret_kid = TAKE_PTR(kid);
	*ret_value = v;
	*ret_len = n;
	return 0;
}

int azure_parse_unwrap(const struct http_response *resp, struct secret **ret, struct kms_error *err)
{
	static const char *const p_val[] = {"value", NULL};
	_cleanup_secret_ struct secret *text = NULL, *plain = NULL;
	int r;

	if (!ok_status(resp))
		return azure_parse_error(resp, true, err);
	if (!resp->body)
		return malformed(resp, err, "empty unwrapkey reply");
	r = json_find_string_secret(resp->body->buf, resp->body->len, p_val, &text);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return malformed(resp, err, "unwrapkey reply has no value");
	r = base64_decode_secret((const char *)text->buf, text->len, 1, &plain);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || plain->len == 0)
		return malformed(resp, err, "unwrapkey value is not base64url");
	*ret = TAKE_PTR(plain);
	return 0;
}

int azure_parse_error(const struct http_response *resp, bool unwrap, struct kms_error *err)
{
	static const struct kms_code_class codes[] = {
	    {"Throttled", -EAGAIN},
	    {"ServiceUnavailable", -EAGAIN},
	    {"InternalServerError", -EAGAIN},
	    {"Unauthorized", -EACCES},
	    {"Forbidden", -EACCES},
	    {"KeyNotFound", -EACCES},
	    {"NotFound", -EACCES},
	    {"BadParameter", -EACCES},
	    {NULL, 0},
	};
	_cleanup_json_ struct json_object *o = NULL;
	struct json_object *e = NULL;
	const char *code = NULL, *msg = NULL, *inner = NULL;
	char m[300];
	int cls;

	if (resp->body && resp->body->len &&
	    json_parse_buf(resp->body->buf, resp->body->len, &o) >= 0) {
		e = json_get_obj(o, "error");
		code = json_get_str(e, "code");
		msg = json_get_str(e, "message");
		inner = json_get_str(json_get_obj(e, "innererror"), "code");
	}
	cls = kms_http_classify(resp->status, code, codes);
	if (cls == 0) /* a 2xx that did not parse is not an error reply */
		cls = -EBADMSG;
	if (resp->status == 429 || resp->status >= 500)
		cls = -EAGAIN;
	snprintf(m, sizeof(m), "%s", msg ? msg : "");
	m[strcspn(m, "\r\n")] = 0;
	kms_error_fill(err, cls, resp->status,
		       inner  ? inner
		       : code ? code
			      : "",
		       request_id(resp), "Azure Key Vault: HTTP %d%s%s%s%s", resp->status,
		       code ? ": " : "", code ? code : "", *m ? ": " : "", m);
	/* a value that does not unwrap (RSA-OAEP decoding failed): the token was modified */
	if (err && unwrap && cls == -EACCES && resp->status == 400)
		err->token_rejected = true;
	return cls;
}

/* ---- binding --------------------------------------------------------------------------------- */

int azure_bind(const struct kms_aad *aad, const struct secret *secret, struct secret **ret)
{
	_cleanup_secret_ struct secret *s = NULL;
	char buf[160];
	int k, r;

	if (!secret || secret->len == 0 || secret->len > 128)
		return -EINVAL;
	k = kms_aad_format(aad, buf, sizeof(buf));
	if (k < 0)
		return k;
	r = secret_new((size_t)k + 1 + secret->len, &s);
	if (r < 0)
		return r;
	if ((r = secret_append(s, buf, (size_t)k + 1)) < 0 || /* with its NUL */
	    (r = secret_append(s, secret->buf, secret->len)) < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}

int azure_unbind(const struct kms_aad *aad, const struct secret *plain, struct secret **ret,
		 struct kms_error *err)
{
	const uint8_t *nul;
	char buf[160];
	size_t got;
	int k;

	k = kms_aad_format(aad, buf, sizeof(buf));
	if (k < 0)
		return k;
	nul = plain ? memchr(plain->buf, 0, MIN(plain->len, sizeof(buf))) : NULL;
	if (!nul || (size_t)(nul - plain->buf) + 1 >= plain->len ||
	    memcmp(plain->buf, KMSCRYPT_AAD_PREFIX, strlen(KMSCRYPT_AAD_PREFIX)) != 0)
		return kms_error_reject(err, -EBADMSG, "InvalidCiphertext",
					"the unwrapped value is not a kmscrypt binding");
	got = (size_t)(nul - plain->buf);
	if (got != (size_t)k || memcmp(plain->buf, buf, got) != 0)
		return kms_error_reject(err, -EACCES, "VolumeMismatch",
					"the wrapped secret belongs to another volume or keyslot");
	return secret_from(nul + 1, plain->len - got - 1, ret);
}

/* ---- kms policy ------------------------------------------------------------------------------ */

int azure_policy_text(const char *base, const char *name, bool create, bool managed_identity,
		      const char *client_id, char **ret)
{
	const char *who = client_id ? client_id : "<client-id>";
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	if (!f)
		return -ENOMEM;
	fprintf(
	    f,
	    "# Azure Key Vault %s, key '%s': what kmscrypt needs.\n"
	    "# Keys: get%s, wrapKey, unwrapKey (getrotationpolicy is optional: it lets kmscrypt "
	    "warn\n"
	    "# about automatic rotation).  kmscrypt never deletes, updates or rotates the key.\n"
	    "#\n"
	    "# Vault access policy model (permission model \"Vault access policy\"):\n"
	    "az keyvault set-policy --name <vault-name> %s %s --key-permissions get%s wrapKey "
	    "unwrapKey\n"
	    "# ARM template accessPolicies entry:\n"
	    "{\"tenantId\": \"<tenant-id>\", \"objectId\": \"<object-id of %s>\",\n"
	    " \"permissions\": {\"keys\": [\"get\",%s \"wrapKey\", \"unwrapKey\"]}}\n"
	    "#\n"
	    "# Azure RBAC model: built-in role \"Key Vault Crypto Service Encryption User\"\n"
	    "# (e147488a-f6f5-4113-8e2d-b22465e65bf6: keys/read, keys/wrap/action, "
	    "keys/unwrap/action)%s\n"
	    "az role assignment create --role \"Key Vault Crypto Service Encryption User\" "
	    "--assignee %s --scope <vault-resource-id>/keys/%s\n"
	    "# or a custom role with exactly these dataActions:\n"
	    "{\"Name\": \"kmscrypt %s\", \"IsCustom\": true,\n"
	    " \"Actions\": [], \"NotActions\": [],\n"
	    " \"DataActions\": [\"Microsoft.KeyVault/vaults/keys/read\",%s\n"
	    "                 \"Microsoft.KeyVault/vaults/keys/wrap/action\",\n"
	    "                 \"Microsoft.KeyVault/vaults/keys/unwrap/action\"],\n"
	    " \"NotDataActions\": [], \"AssignableScopes\": [\"<vault-resource-id>\"]}\n",
	    base, name, create ? ", create" : "", managed_identity ? "--object-id" : "--spn",
	    managed_identity ? "<principal-id of the managed identity>" : who,
	    create ? " create" : "", managed_identity ? "the managed identity" : who,
	    create ? " \"create\"," : "",
	    create ? "\n# plus, while kmscrypt creates the key, "
		     "Microsoft.KeyVault/vaults/keys/create/action "
		     "(\"Key Vault Crypto Officer\" or the custom role below)"
		   : "",
	    managed_identity ? "<principal-id of the managed identity>" : who, name, name,
	    create ? "\n                 \"Microsoft.KeyVault/vaults/keys/create/action\"," : "");
	if (fclose(f) != 0) {
		free(s);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}
