/* SPDX-License-Identifier: MIT */
/*
 * HashiCorp Vault (or OpenBao) Transit provider: the per-volume secret is wrapped with
 * POST /v1/<mount>/encrypt/<key> and unwrapped with /decrypt/<key>, bound to the volume by the AAD
 * bytes KMSCRYPT_AAD_PREFIX "<uuid>:<keyslot>" as associated_data (AEAD key types) and, for keys
 * created with derived=true, also as the key derivation context.  The token records which binding
 * was used in its algorithm name, so unwrap needs no key read (a policy with `update` on
 * <mount>/decrypt/<key> is enough); wrap reads the key once (`read` on <mount>/keys/<key>).
 * The key version of the ciphertext ("vault:v<N>:...") goes into kms_wrapped.key_version.
 *
 * Auth: a token from the configuration, or AppRole (role_id + secret_id): logged in on first use,
 * again shortly before the lease ends, and once more when Vault refuses the token (expired or
 * revoked).  Thread-safe like the AWS provider: the token is guarded by a mutex held only to log in
 * and to build a request.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/http_msg.h"
#include "kms/endpoint_down.h"
#include "kms/provider.h"
#include "kms/vault/vault_codec.h"
#include "transport/http.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define VAULT_ALG_AAD "vault-transit:aad"	   /* associated_data */
#define VAULT_ALG_CONTEXT "vault-transit:context"  /* derived key context */
#define VAULT_ALG_BOTH "vault-transit:aad+context" /* derived AEAD key: both */
#define VAULT_DEFAULT_DEADLINE_MS 30000
#define VAULT_TOKEN_MARGIN_S 10

struct vault_ctx {
	char *name;
	char *addr; /* "https://host[:port]" */
	char *ns;   /* NULL when none */
	char *mount;
	char *key;
	char *role_id;	     /* AppRole when set */
	char *approle_mount; /* NULL: "approle" */
	struct secret *secret_id;
	unsigned deadline_ms;
	struct http_client *http;

	pthread_mutex_t lock; /* guards everything below */
	struct secret *token; /* NUL-terminated; NULL until the first AppRole login */
	time_t token_refresh; /* log in again from then on; 0: the token does not expire */
	unsigned gen;
	bool key_known, aead, derived; /* from the key read */
	uint32_t latest_version;
	/* fail fast once Vault could not be reached in this run (see the AWS provider) */
	struct kms_down down; /* guarded by lock */
};

static const struct kms_option vault_options[] = {
	{"Address", "address", KMS_OPT_REQUIRED, "Vault URL, e.g. https://vault.example:8200"},
	{"Mount", "mount", 0, "path of the transit secrets engine (default transit)"},
	{"KeyName", "key-name", KMS_OPT_REQUIRED | KMS_OPT_KEY_IDENTITY, "name of the transit key"},
	{"Namespace", "namespace", 0, "Vault Enterprise/HCP namespace (X-Vault-Namespace)"},
	{"CaFile", "ca-file", KMS_OPT_PATH | KMS_OPT_CREDENTIAL,
	 "PEM CA bundle that signs Vault's certificate (default: the system store)"},
	{"Token", "token", KMS_OPT_SECRET | KMS_OPT_CREDENTIAL, "file holding a Vault token"},
	{"RoleId", "role-id", KMS_OPT_CREDENTIAL,
	 "AppRole role_id (AppRole auth, with --secret-id-file)"},
	{"SecretId", "secret-id", KMS_OPT_SECRET | KMS_OPT_CREDENTIAL,
	 "file holding the AppRole secret_id"},
	{"AppRoleMount", "approle-mount", KMS_OPT_CREDENTIAL,
	 "path of the AppRole auth method (default approle)"},
	{NULL, NULL, 0, NULL},
};

static void vault_close(void *p)
{
	struct vault_ctx *c = p;

	if (!c)
		return;
	http_client_free(c->http);
	pthread_mutex_destroy(&c->lock);
	free(c->name);
	free(c->addr);
	free(c->ns);
	free(c->mount);
	free(c->key);
	free(c->role_id);
	free(c->approle_mount);
	secret_free(c->secret_id);
	secret_free(c->token);
	free(c);
}

static bool path_ok(const char *s)
{
	if (!*s || *s == '/' || s[strlen(s) - 1] == '/' || strstr(s, "..") || strstr(s, "//"))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr("-_./", *s)))
			return false;
	return true;
}

static int vault_open(const struct kms_config *cfg, const struct kms_runtime *rt, void **ret,
		      struct kms_error *err)
{
	const char *addr = kms_config_get(cfg, "Address"), *key = kms_config_get(cfg, "KeyName");
	const char *mount = kms_config_get(cfg, "Mount") ?: "transit";
	const char *ns = kms_config_get(cfg, "Namespace"), *role = kms_config_get(cfg, "RoleId");
	/* credentials: in the configuration's locked memory, copied into this context's */
	const struct secret *tok = kms_config_get_secret(cfg, "Token");
	const struct secret *sid = kms_config_get_secret(cfg, "SecretId");
	const char *amount = kms_config_get(cfg, "AppRoleMount");
	struct vault_ctx *c;
	size_t n;
	int r;

	if (!addr || !key)
		return kms_error_set(err, -EINVAL, "", "Address= and KeyName= must be set");
	n = strlen(addr);
	while (n > 8 && addr[n - 1] == '/')
		n--;
	if (strncmp(addr, "https://", 8) != 0 || n == 8 || memchr(addr + 8, '/', n - 8) ||
	    memchr(addr + 8, '@', n - 8) || memchr(addr + 8, '?', n - 8))
		return kms_error_set(err, -EINVAL, "",
				     "Address=%s is not an https:// URL without a path", addr);
	if (!path_ok(mount))
		return kms_error_set(err, -EINVAL, "", "Mount=%s is not a valid mount path", mount);
	if (!path_ok(key) || strchr(key, '/'))
		return kms_error_set(err, -EINVAL, "", "KeyName=%s is not a valid key name", key);
	if (amount && !path_ok(amount))
		return kms_error_set(err, -EINVAL, "", "AppRoleMount=%s is not a valid mount path",
				     amount);
	if (role && !sid)
		return kms_error_set(err, -EINVAL, "",
				     "AppRole needs SecretId= as well (--secret-id-file)");
	if (!role && !tok)
		return kms_error_set(err, -EINVAL, "",
				     "no credentials: give --token-file, or --role-id and "
				     "--secret-id-file for AppRole");
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	c->deadline_ms =
	    rt && rt->timeout_ms > 0 ? (unsigned)rt->timeout_ms : VAULT_DEFAULT_DEADLINE_MS;
	c->name = strdup(cfg->name ? cfg->name : "");
	c->addr = strndup(addr, n);
	c->ns = ns ? strdup(ns) : NULL;
	c->mount = strdup(mount);
	c->key = strdup(key);
	c->role_id = role ? strdup(role) : NULL;
	c->approle_mount = amount ? strdup(amount) : NULL;
	if (!c->name || !c->addr || (ns && !c->ns) || !c->mount || !c->key ||
	    (role && !c->role_id) || (amount && !c->approle_mount)) {
		r = -ENOMEM;
		goto fail;
	}
	if (role)
		r = secret_from(sid->buf, sid->len, &c->secret_id);
	else
		r = secret_from_cstr((const char *)tok->buf, tok->len, &c->token);
	if (r < 0)
		goto fail;
	r = kms_http_client_new(kms_config_get(cfg, "CaFile"), c->deadline_ms, &c->http, err);
	if (r < 0)
		goto fail;
	*ret = c;
	return 0;
fail:
	vault_close(c);
	return r;
}

static int vault_down_check(struct vault_ctx *c, struct kms_error *err)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = kms_down_check(&c->down, err);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* @locked: whether the caller holds c->lock (the AppRole login does). */
static int vault_send(struct vault_ctx *c, const struct http_request *req,
		      struct http_response *ret, struct kms_error *err, bool locked)
{
	struct http_retry policy = {.deadline_ms = c->deadline_ms};
	int r;

	/* 429, 5xx (sealed: 503), 412 and network errors are retried by the transport */
	r = http_send_retry(c->http, req, &policy, ret, err);
	if (!locked)
		pthread_mutex_lock(&c->lock);
	r = kms_down_note(&c->down, r, err);
	if (!locked)
		pthread_mutex_unlock(&c->lock);
	return r;
}

/* AppRole login; called with c->lock held. */
static int vault_login(struct vault_ctx *c, struct kms_error *err)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_(vault_auth_done) struct vault_auth a = {};
	_cleanup_secret_ struct secret *tok = NULL;
	struct vault_target t = {.addr = c->addr, .ns = c->ns, .mount = c->mount};
	time_t now = time(NULL);
	int r;

	r = vault_build_approle_login(&t, c->approle_mount, c->role_id, c->secret_id, &req);
	if (r < 0)
		return kms_error_set(err, r, "", "cannot build the AppRole login request");
	r = vault_send(c, &req, &resp, err, true);
	if (r < 0)
		return r;
	r = vault_parse_approle_login(&resp, &a, err);
	if (r < 0) {
		if (err && err->message[0]) {
			char m[sizeof(err->message)];
			snprintf(m, sizeof(m), "%s", err->message);
			snprintf(err->message, sizeof(err->message), "AppRole login failed: %.360s",
				 m);
		}
		return r;
	}
	r = secret_from_cstr(a.client_token, strlen(a.client_token), &tok);
	if (r < 0)
		return r;
	secret_free(c->token);
	c->token = TAKE_PTR(tok);
	/* renew a little before the lease ends: 10 s, or a quarter of very short leases */
	c->token_refresh = a.lease_duration
			       ? now + (time_t)a.lease_duration -
				     (time_t)MIN(VAULT_TOKEN_MARGIN_S, a.lease_duration / 4)
			       : 0;
	c->gen++;
	return 0;
}

enum vault_op_kind { VAULT_OP_ENCRYPT, VAULT_OP_DECRYPT, VAULT_OP_KEY_READ };

struct vault_op {
	enum vault_op_kind kind;
	const struct secret *plain;
	const char *ciphertext;
	const struct vault_binding *b;
};

/* Build @op with the current token (logging in first when due). */
static int vault_build(struct vault_ctx *c, const struct vault_op *op, struct http_request *ret,
		       unsigned *ret_gen, struct kms_error *err)
{
	struct vault_target t = {.addr = c->addr, .ns = c->ns, .mount = c->mount};
	int r = 0;

	pthread_mutex_lock(&c->lock);
	if (c->role_id && (!c->token || (c->token_refresh && time(NULL) >= c->token_refresh)))
		r = vault_login(c, err);
	if (r >= 0) {
		t.token = (const char *)c->token->buf;
		*ret_gen = c->gen;
		switch (op->kind) {
		case VAULT_OP_ENCRYPT:
			r = vault_build_encrypt(&t, c->key, op->plain, op->b, 0, ret);
			break;
		case VAULT_OP_DECRYPT:
			r = vault_build_decrypt(&t, c->key, op->ciphertext, op->b, ret);
			break;
		case VAULT_OP_KEY_READ:
			r = vault_build_key_read(&t, c->key, ret);
			break;
		}
		if (r < 0)
			r = kms_error_set(err, r, "", "cannot build a Vault request for key '%s'",
					  c->key);
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* Vault refused the token itself (expired, revoked, unknown): worth one fresh AppRole login. */
static bool vault_token_refused(const struct http_response *resp)
{
	if (resp->status != 403 || !resp->body)
		return false;
	return memmem(resp->body->buf, resp->body->len, "invalid token", 13) ||
	       memmem(resp->body->buf, resp->body->len, "permission denied", 17);
}

static int vault_call(struct vault_ctx *c, const struct vault_op *op, struct http_response *ret,
		      struct kms_error *err)
{
	for (unsigned attempt = 0;; attempt++) {
		_cleanup_(http_request_done) struct http_request req = {};
		struct http_response resp = {};
		unsigned gen = 0;
		int r;

		r = vault_down_check(c, err);
		if (r < 0)
			return r;
		r = vault_build(c, op, &req, &gen, err);
		if (r < 0)
			return r;
		r = vault_send(c, &req, &resp, err, false);
		if (r < 0)
			return r;
		if (attempt == 0 && c->role_id && vault_token_refused(&resp)) {
			http_response_done(&resp);
			pthread_mutex_lock(&c->lock);
			if (c->gen == gen)
				c->token_refresh = 1; /* next vault_build() logs in again */
			pthread_mutex_unlock(&c->lock);
			continue;
		}
		*ret = resp;
		return 0;
	}
}

/* Read the key: type, versions, derived.  Fills the cache in @c. */
static int vault_key_read(struct vault_ctx *c, struct vault_key_info *ret, struct kms_error *err)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	struct vault_op op = {.kind = VAULT_OP_KEY_READ};
	struct vault_key_info k = {};
	int r;

	r = vault_call(c, &op, &resp, err);
	if (r < 0)
		return r;
	r = vault_parse_key(&resp, &k, err);
	if (r == -EACCES && resp.status == 404)
		/* Vault answers a missing key with 404 and an empty error list */
		return kms_error_fill(err, r, 404, "KeyNotFound", NULL,
				      "Vault: transit key '%s' not found at mount '%s'%s%s", c->key,
				      c->mount, c->ns ? " in namespace " : "", c->ns ? c->ns : "");
	if (r < 0)
		return r;
	if (!k.supports_encryption || !k.supports_decryption || (!k.aead && !k.derived)) {
		r = kms_error_set(
		    err, -EINVAL, "UnsupportedKeyType",
		    "Vault transit key '%s' is of type %s; kmscrypt needs an AEAD key "
		    "(aes256-gcm96, aes128-gcm96, chacha20-poly1305) or a derived key",
		    c->key, k.type ? k.type : "(unknown)");
		vault_key_info_done(&k);
		return r;
	}
	pthread_mutex_lock(&c->lock);
	c->key_known = true;
	c->aead = k.aead;
	c->derived = k.derived;
	c->latest_version = k.latest_version;
	pthread_mutex_unlock(&c->lock);
	*ret = k;
	return 0;
}

static int vault_describe(void *p, struct kms_key_info *ret, struct kms_error *err)
{
	struct vault_ctx *c = p;
	_cleanup_(vault_key_info_done) struct vault_key_info k = {};
	int r;

	r = vault_key_read(c, &k, err);
	if (r < 0)
		return r;
	snprintf(ret->key_id, sizeof(ret->key_id), "%s", c->key);
	snprintf(ret->key_version, sizeof(ret->key_version), "%u", k.latest_version);
	snprintf(ret->state, sizeof(ret->state), "%s", "enabled");
	snprintf(ret->description, sizeof(ret->description),
		 "Vault transit key %s/%s%s%s, type %s%s, version %u (min decryption %u)", c->mount,
		 c->key, c->ns ? " in namespace " : "", c->ns ? c->ns : "", k.type ? k.type : "?",
		 k.derived ? " (derived)" : "", k.latest_version, k.min_decryption_version);
	return 0;
}

static const char *vault_alg(bool aad, bool context)
{
	return aad && context ? VAULT_ALG_BOTH : aad ? VAULT_ALG_AAD : VAULT_ALG_CONTEXT;
}

static int vault_wrap(void *p, const struct kms_aad *aad, const struct secret *plain,
		      struct kms_wrapped *ret, struct kms_error *err)
{
	struct vault_ctx *c = p;
	_cleanup_(http_response_done) struct http_response resp = {};
	struct vault_ciphertext ct = {};
	struct kms_wrapped w = {};
	struct vault_binding b = {};
	char aadbuf[128], ver[16];
	bool known, use_aad, use_ctx;
	int k, r;

	pthread_mutex_lock(&c->lock);
	known = c->key_known;
	pthread_mutex_unlock(&c->lock);
	if (!known) {
		struct vault_key_info info = {};
		r = vault_key_read(c, &info, err);
		vault_key_info_done(&info);
		if (r < 0)
			return r;
	}
	pthread_mutex_lock(&c->lock);
	use_aad = c->aead;
	use_ctx = c->derived;
	pthread_mutex_unlock(&c->lock);
	k = kms_aad_format(aad, aadbuf, sizeof(aadbuf));
	if (k < 0)
		return k;
	if (use_aad) {
		b.aad = (const uint8_t *)aadbuf;
		b.aad_len = (size_t)k;
	}
	if (use_ctx) {
		b.context = (const uint8_t *)aadbuf;
		b.context_len = (size_t)k;
	}
	r = vault_call(c, &(struct vault_op){.kind = VAULT_OP_ENCRYPT, .plain = plain, .b = &b},
		       &resp, err);
	if (r < 0)
		return r;
	r = vault_parse_encrypt(&resp, &ct, err);
	if (r < 0)
		return r;
	snprintf(ver, sizeof(ver), "%u", ct.key_version);
	w.key_id = strdup(c->key);
	w.key_version = strdup(ver);
	w.alg = strdup(vault_alg(use_aad, use_ctx));
	w.blob_len = strlen(ct.ciphertext);
	w.blob = (uint8_t *)TAKE_PTR(ct.ciphertext); /* the text without its NUL */
	vault_ciphertext_done(&ct);
	if (!w.key_id || !w.key_version || !w.alg) {
		kms_wrapped_done(&w);
		return -ENOMEM;
	}
	*ret = w;
	return 0;
}

static int vault_unwrap(void *p, const struct kms_aad *aad, const struct kms_wrapped *w,
			struct secret **ret, struct kms_error *err)
{
	struct vault_ctx *c = p;
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_free_ char *ct = NULL;
	struct vault_binding b = {};
	char aadbuf[128];
	bool use_aad, use_ctx;
	unsigned v;
	int k, r;

	if (!w->alg)
		return kms_error_set(err, -EBADMSG, "UnsupportedAlgorithm",
				     "token has no algorithm");
	use_aad = strcmp(w->alg, VAULT_ALG_AAD) == 0 || strcmp(w->alg, VAULT_ALG_BOTH) == 0;
	use_ctx = strcmp(w->alg, VAULT_ALG_CONTEXT) == 0 || strcmp(w->alg, VAULT_ALG_BOTH) == 0;
	if (!use_aad && !use_ctx)
		return kms_error_set(err, -EBADMSG, "UnsupportedAlgorithm",
				     "token algorithm '%s' is not a Vault transit binding", w->alg);
	if (w->key_id && strcmp(w->key_id, c->key) != 0)
		return kms_error_reject(
		    err, -EACCES, "KeyMismatch",
		    "secret was wrapped with transit key '%s', but configuration '%s' "
		    "is for key '%s'",
		    w->key_id, c->name, c->key);
	if (!w->blob || w->blob_len == 0 || w->blob_len > 65536 || memchr(w->blob, 0, w->blob_len))
		return kms_error_reject(err, -EBADMSG, "InvalidCiphertext",
					"token blob is not a Vault ciphertext");
	ct = strndup((const char *)w->blob, w->blob_len);
	if (!ct)
		return -ENOMEM;
	if (vault_ciphertext_version(ct, &v) < 0)
		return kms_error_reject(err, -EBADMSG, "InvalidCiphertext",
					"token blob is not of the form vault:v<N>:...");
	k = kms_aad_format(aad, aadbuf, sizeof(aadbuf));
	if (k < 0)
		return k;
	if (use_aad) {
		b.aad = (const uint8_t *)aadbuf;
		b.aad_len = (size_t)k;
	}
	if (use_ctx) {
		b.context = (const uint8_t *)aadbuf;
		b.context_len = (size_t)k;
	}
	r = vault_call(c, &(struct vault_op){.kind = VAULT_OP_DECRYPT, .ciphertext = ct, .b = &b},
		       &resp, err);
	if (r < 0)
		return r;
	return vault_parse_decrypt(&resp, ret, err);
}

const struct kms_provider kms_provider_vault = {
	.name = "vault",
	.description = "HashiCorp Vault/OpenBao Transit key; the volume is bound as associated data",
	.warning = NULL,
	.options = vault_options,
	.identity_key = "KeyName",
	.provision = NULL,
	.open = vault_open,
	.close = vault_close,
	.describe = vault_describe,
	.wrap = vault_wrap,
	.unwrap = vault_unwrap,
};
