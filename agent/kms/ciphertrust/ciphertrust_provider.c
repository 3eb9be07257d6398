/* SPDX-License-Identifier: MIT */
/*
 * Thales CipherTrust Manager provider (seed 000): the per-volume secret is wrapped with
 * POST /api/v1/crypto/encrypt under an AES key named by KeyName=, AES-GCM with the volume binding
 * KMSCRYPT_AAD_PREFIX "<uuid>:<keyslot>" as aad, and unwrapped with /api/v1/crypto/decrypt.
 *
 * Token layout (include/kmscrypt/token.h fields):
 *   key_id       KeyName= (the identity of the configuration)
 *   key_version  the "version" of the encrypt reply as text ("0" for a new key; "" if none came)
 *   alg          "ciphertrust:aes-gcm+aad"
 *   blob         the encrypt reply as compact JSON text, every member kept as it came (id,
 *                version, mode, iv, tag, ciphertext and any other; "mode":"gcm" added when the
 *                reply had none).  Unwrap sends every member back to /crypto/decrypt, with "aad"
 *                always recomputed from the volume (never taken from the blob); a blob without
 *                "id" names the key as {"id":KeyName,"type":"name"}.  key_version must equal the
 *                blob's version, so decrypt uses the recorded version after a rotation.
 *
 * Auth: POST /api/v1/auth/tokens with a username and password (optional domain) or a refresh
 * token; the JWT (about 5 minutes) is kept by the shared remote piece, renewed shortly before it
 * expires and once more when the API answers 401.  A refused refresh token is a denied error that
 * tells the administrator to run `kmscrypt kms edit NAME --refresh-token-file FILE`.
 *
 * Wrap and unwrap check the key rules first (a key read at most every 10 s), so a key that was
 * deactivated or lost Encrypt/Decrypt usage is refused as denied, not as a bad token.
 *
 * `kms create` (provision): the key named KeyName= is looked up (GET /api/v1/vault/keys2?name=);
 * when none exists it is created with KeyAlgorithm= (aes) and KeySize= (256) and usageMask 12
 * (Encrypt|Decrypt).  An existing key must be Active and allow Encrypt and Decrypt.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "codec/http_msg.h"
#include "kms/ciphertrust/ciphertrust_codec.h"
#include "kms/provider.h"
#include "kms/remote.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define CT_ALG "ciphertrust:aes-gcm+aad"
#define CT_KEY_CHECK_MS 10000

struct ct_ctx {
	struct kms_remote r;
	char *name;
	char *base;
	char *key;
	char *username; /* NULL with a refresh token */
	char *domain;
	char *algorithm;
	unsigned size;
	struct secret *password;
	struct secret *refresh;
	pthread_mutex_t lock;
	uint64_t key_checked_ms; /* guarded by lock: when the key rules last held (kms_mono_ms) */
};

static const struct kms_option ct_options[] = {
    {"Url", "url", KMS_OPT_REQUIRED, "CipherTrust Manager URL, e.g. https://cm.example.com"},
    {"KeyName", "key-name", KMS_OPT_REQUIRED | KMS_OPT_KEY_IDENTITY,
     "name of the key; created by 'kms create' when none of that name exists"},
    {"KeyAlgorithm", "key-algorithm", 0, "algorithm of a key kmscrypt creates (aes, the default)"},
    {"KeySize", "key-size", 0, "size in bits of a key kmscrypt creates: 128, 192 or 256 (default)"},
    {"Username", "username", KMS_OPT_CREDENTIAL,
     "CipherTrust user (local or LDAP), with --password-file"},
    {"Password", "password", KMS_OPT_SECRET | KMS_OPT_CREDENTIAL, "file holding the password"},
    {"Domain", "domain", KMS_OPT_CREDENTIAL, "CipherTrust domain to log in to (default: root)"},
    {"RefreshToken", "refresh-token", KMS_OPT_SECRET | KMS_OPT_CREDENTIAL,
     "file holding a refresh token (instead of --username and --password-file)"},
    {"CaFile", "ca-file", KMS_OPT_PATH | KMS_OPT_CREDENTIAL,
     "PEM CA bundle that signs CipherTrust Manager's certificate (default: the system store)"},
    {NULL, NULL, 0, NULL},
};

static void ct_close(void *p)
{
	struct ct_ctx *c = p;

	if (!c)
		return;
	kms_remote_done(&c->r);
	pthread_mutex_destroy(&c->lock);
	free(c->name);
	free(c->base);
	free(c->key);
	free(c->username);
	free(c->domain);
	free(c->algorithm);
	secret_free(c->password);
	secret_free(c->refresh);
	free(c);
}

/* ---- auth -------------------------------------------------------------------------------------
 */

static int ct_login(struct kms_remote *r, void *pctx, struct secret **ret_token,
		    time_t *ret_expires, struct kms_error *err)
{
	struct ct_ctx *c = pctx;
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	char code[96] = "";
	int k;

	if (c->refresh)
		k = ct_build_login_refresh(c->base, c->refresh, &req);
	else
		k = ct_build_login_password(c->base, c->username, c->password, c->domain, &req);
	if (k < 0)
		return kms_error_set(err, k, "",
				     "cannot build the CipherTrust login request of '%s'", c->name);
	k = kms_remote_send(r, &req, &resp, err);
	if (k < 0)
		return k;
	k = ct_parse_login(&resp, time(NULL), ret_token, ret_expires, err);
	if (k == -EACCES)
		snprintf(code, sizeof(code), "%s",
			 err && err->code[0] ? err->code : "LoginRefused");
	if (k == -EACCES && c->refresh)
		return kms_error_set(
		    err, k, code,
		    "CipherTrust refused the refresh token of configuration '%s' "
		    "(expired or revoked): issue a new one and run 'kmscrypt kms edit %s "
		    "--refresh-token-file FILE'",
		    c->name, c->name);
	if (k == -EACCES)
		return kms_error_set(
		    err, k, code,
		    "CipherTrust refused the login of user '%s'%s%s (HTTP %d): check it "
		    "and its password, then run 'kmscrypt kms edit %s --username USER "
		    "--password-file FILE'",
		    c->username, c->domain ? " in domain " : "", c->domain ? c->domain : "",
		    resp.status, c->name);
	return k;
}

static const struct kms_remote_ops ct_remote_ops = {
    .login = ct_login, .margin_s = 30, /* JWTs live 300 s */
};

static int ct_open(const struct kms_config *cfg, const struct kms_runtime *rt, void **ret,
		   struct kms_error *err)
{
	const char *url = kms_config_get(cfg, "Url"), *key = kms_config_get(cfg, "KeyName");
	const char *user = kms_config_get(cfg, "Username"), *dom = kms_config_get(cfg, "Domain");
	const char *alg = kms_config_get(cfg, "KeyAlgorithm") ?: "aes";
	const char *size = kms_config_get(cfg, "KeySize") ?: "256";
	const struct secret *pw = kms_config_get_secret(cfg, "Password");
	const struct secret *rtok = kms_config_get_secret(cfg, "RefreshToken");
	struct ct_ctx *c;
	int r;

	if (!url || !key)
		return kms_error_set(err, -EINVAL, "", "Url= and KeyName= must be set");
	if (strcasecmp(alg, "aes") != 0)
		return kms_error_set(
		    err, -EINVAL, "",
		    "KeyAlgorithm=%s: kmscrypt wraps with AES-GCM, so only aes can be "
		    "created",
		    alg);
	if (strcmp(size, "128") != 0 && strcmp(size, "192") != 0 && strcmp(size, "256") != 0)
		return kms_error_set(err, -EINVAL, "", "KeySize=%s: give 128, 192 or 256", size);
	if (rtok && (user || pw))
		return kms_error_set(err, -EINVAL, "",
				     "give either --refresh-token-file or --username with "
				     "--password-file, not both");
	if (!rtok && (!user || !pw))
		return kms_error_set(err, -EINVAL, "",
				     "no credentials: give --username and --password-file, or "
				     "--refresh-token-file");
	if (rtok && dom)
		return kms_error_set(
		    err, -EINVAL, "",
		    "--domain goes with --username; a refresh token carries its domain");
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	c->size = (unsigned)atoi(size);
	r = kms_url_base(url, &c->base);
	if (r == -EINVAL) {
		ct_close(c);
		return kms_error_set(err, r, "", "Url=%s is not an https:// URL without a path",
				     url);
	}
	c->name = strdup(cfg->name ? cfg->name : "");
	c->key = strdup(key);
	c->algorithm = strdup(alg);
	c->username = user ? strdup(user) : NULL;
	c->domain = dom ? strdup(dom) : NULL;
	if (r < 0 || !c->name || !c->key || !c->algorithm || (user && !c->username) ||
	    (dom && !c->domain)) {
		ct_close(c);
		return -ENOMEM;
	}
	if (rtok)
		r = secret_from(rtok->buf, rtok->len, &c->refresh);
	else
		r = secret_from(pw->buf, pw->len, &c->password);
	if (r >= 0)
		r = kms_remote_init(&c->r, &ct_remote_ops, c, cfg, rt, err);
	if (r < 0) {
		ct_close(c);
		return r;
	}
	*ret = c;
	return 0;
}

/* ---- requests ---------------------------------------------------------------------------------
 */

enum ct_kind { KIND_FIND, KIND_CREATE, KIND_ENCRYPT, KIND_DECRYPT };

struct ct_call {
	enum ct_kind kind;
	const struct secret *plain;
	const void *blob;
	size_t blob_len;
	const char *aad;
	size_t aad_len;
};

static int ct_build(void *pctx, const void *op_, struct http_request *ret)
{
	struct ct_ctx *c = pctx;
	const struct ct_call *op = op_;

	switch (op->kind) {
	case KIND_FIND:
		return ct_build_key_find(c->base, c->key, ret);
	case KIND_CREATE:
		return ct_build_key_create(c->base, c->key, c->algorithm, c->size, ret);
	case KIND_ENCRYPT:
		return ct_build_encrypt(c->base, c->key, op->plain, op->aad, op->aad_len, ret);
	case KIND_DECRYPT:
		return ct_build_decrypt(c->base, c->key, op->blob, op->blob_len, op->aad,
					op->aad_len, ret);
	}
	return -EINVAL;
}

static int key_find(struct ct_ctx *c, struct ct_key *ret, bool *found, struct kms_error *err)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	int r;

	r = kms_remote_call(&c->r, ct_build, &(struct ct_call){.kind = KIND_FIND}, &resp, err);
	if (r < 0)
		return r;
	return ct_parse_key_list(&resp, c->key, ret, found, err);
}

static int not_found(struct ct_ctx *c, struct kms_error *err)
{
	return kms_error_fill(
	    err, -EACCES, 404, "KeyNotFound", NULL,
	    "CipherTrust has no key named '%s' that user %s%s%s can read: create it "
	    "with 'kmscrypt kms create' or grant the user Read and Use on it",
	    c->key, c->username ? "'" : "", c->username ? c->username : "of the refresh token",
	    c->username ? "'" : "");
}

/* Look the key up and apply the key rules of seed 000. */
static int key_lookup_checked(struct ct_ctx *c, struct ct_key *ret, struct kms_error *err)
{
	bool found = false;
	int r;

	r = key_find(c, ret, &found, err);
	if (r < 0)
		return r;
	if (!found)
		return not_found(c, err);
	r = ct_key_check(ret, err);
	if (r < 0) {
		ct_key_done(ret);
		return r;
	}
	pthread_mutex_lock(&c->lock);
	c->key_checked_ms = kms_mono_ms();
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* The key rules, checked at most every CT_KEY_CHECK_MS: a run over many volumes reads the key once,
 * a watcher that probes every minute sees a key deactivated since.  CipherTrust follows KMIP, where
 * a Deactivated key may still decrypt: kmscrypt refuses it, so deactivating the key revokes. */
static int key_check_fresh(struct ct_ctx *c, struct kms_error *err)
{
	struct ct_key k = {};
	bool fresh;
	int r;

	pthread_mutex_lock(&c->lock);
	fresh = c->key_checked_ms && kms_mono_ms() - c->key_checked_ms < CT_KEY_CHECK_MS;
	pthread_mutex_unlock(&c->lock);
	if (fresh)
		return 0;
	r = key_lookup_checked(c, &k, err);
	ct_key_done(&k);
	return r;
}

static int ct_describe(void *p, struct kms_key_info *ret, struct kms_error *err)
{
	struct ct_ctx *c = p;
	_cleanup_(ct_key_done) struct ct_key k = {};
	int r;

	r = key_lookup_checked(c, &k, err);
	if (r < 0)
		return r;
	snprintf(ret->key_id, sizeof(ret->key_id), "%s", c->key);
	snprintf(ret->key_version, sizeof(ret->key_version), "%s", k.version);
	snprintf(ret->state, sizeof(ret->state), "%s", k.state ? k.state : "Active");
	snprintf(ret->description, sizeof(ret->description),
		 "CipherTrust key %s (%s-%u, usageMask %u, version %s, id %.64s) at %s", c->key,
		 k.algorithm ? k.algorithm : "AES", k.size, k.usage_mask,
		 k.version[0] ? k.version : "?", k.id ? k.id : "?", c->base);
	return 0;
}

/* `kms create`: use the key of that name, or create it. */
static int ct_provision(struct kms_config *cfg, const struct kms_runtime *rt, struct kms_error *err)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_(ct_key_done) struct ct_key k = {};
	struct ct_ctx *c = NULL;
	bool found = false;
	int r;

	r = ct_open(cfg, rt, (void **)&c, err);
	if (r < 0)
		return r;
	r = key_find(c, &k, &found, err);
	if (r >= 0 && !found) {
		r = kms_remote_call(&c->r, ct_build, &(struct ct_call){.kind = KIND_CREATE}, &resp,
				    err);
		if (r >= 0)
			r = ct_parse_key(&resp, &k, err);
		if (r == -EACCES && resp.status >= 400 && err) {
			char code[96];
			snprintf(code, sizeof(code), "%s", err->code);
			kms_error_set(
			    err, r, code,
			    "CipherTrust did not create key '%s' (HTTP %d): the user must be in "
			    "the Key Users group, or create the key yourself",
			    c->key, resp.status);
		}
	}
	if (r >= 0)
		r = ct_key_check(&k, err);
	ct_close(c);
	return r;
}

static int ct_wrap(void *p, const struct kms_aad *aad, const struct secret *plain,
		   struct kms_wrapped *ret, struct kms_error *err)
{
	struct ct_ctx *c = p;
	_cleanup_(http_response_done) struct http_response resp = {};
	struct kms_wrapped w = {};
	char aadbuf[128], ver[24];
	char *blob = NULL;
	size_t blob_len = 0;
	int k, r;

	r = key_check_fresh(c, err);
	if (r < 0)
		return r;
	k = kms_aad_format(aad, aadbuf, sizeof(aadbuf));
	if (k < 0)
		return k;
	r = kms_remote_call(
	    &c->r, ct_build,
	    &(struct ct_call){
		.kind = KIND_ENCRYPT, .plain = plain, .aad = aadbuf, .aad_len = (size_t)k},
	    &resp, err);
	if (r < 0)
		return r;
	r = ct_parse_encrypt(&resp, &blob, &blob_len, ver, sizeof(ver), err);
	if (r < 0)
		return r;
	w.key_id = strdup(c->key);
	w.key_version = strdup(ver);
	w.alg = strdup(CT_ALG);
	w.blob = (uint8_t *)blob;
	w.blob_len = blob_len;
	if (!w.key_id || !w.key_version || !w.alg) {
		kms_wrapped_done(&w);
		return -ENOMEM;
	}
	*ret = w;
	return 0;
}

/* Decrypt said no (4xx): if the key itself is the reason (gone, not Active, usage), say that
 * instead of blaming the token. */
static int explain_refusal(struct ct_ctx *c, int r, struct kms_error *err)
{
	struct kms_error kerr = {};
	struct ct_key k = {};
	bool found = false;

	if (key_find(c, &k, &found, &kerr) < 0)
		return r;
	if (!found)
		r = not_found(c, &kerr);
	else if (ct_key_check(&k, &kerr) < 0)
		r = -EACCES; /* an algorithm change is an answer here too */
	else
		kerr.message[0] = 0;
	ct_key_done(&k);
	if (kerr.message[0] && err)
		*err = kerr;
	return r;
}

static int ct_unwrap(void *p, const struct kms_aad *aad, const struct kms_wrapped *w,
		     struct secret **ret, struct kms_error *err)
{
	struct ct_ctx *c = p;
	_cleanup_(http_response_done) struct http_response resp = {};
	char aadbuf[128], ver[24];
	int k, r;

	if (!w->alg || strcmp(w->alg, CT_ALG) != 0)
		return kms_error_set(err, -EBADMSG, "UnsupportedAlgorithm",
				     "token algorithm '%s' is not a CipherTrust binding",
				     w->alg ? w->alg : "");
	if (w->key_id && strcmp(w->key_id, c->key) != 0)
		return kms_error_reject(
		    err, -EACCES, "KeyMismatch",
		    "secret was wrapped with CipherTrust key '%s', but configuration "
		    "'%s' is for key '%s'",
		    w->key_id, c->name, c->key);
	if (ct_blob_check(w->blob, w->blob_len, ver, sizeof(ver)) < 0)
		return kms_error_reject(err, -EBADMSG, "InvalidCiphertext",
					"token blob is not a CipherTrust encrypt reply");
	if (w->key_version && strcmp(w->key_version, ver) != 0)
		return kms_error_reject(err, -EBADMSG, "InvalidCiphertext",
					"token key version '%s' differs from its ciphertext's '%s'",
					w->key_version, ver);
	r = key_check_fresh(c, err);
	if (r < 0)
		return r;
	k = kms_aad_format(aad, aadbuf, sizeof(aadbuf));
	if (k < 0)
		return k;
	r = kms_remote_call(&c->r, ct_build,
			    &(struct ct_call){.kind = KIND_DECRYPT,
					      .blob = w->blob,
					      .blob_len = w->blob_len,
					      .aad = aadbuf,
					      .aad_len = (size_t)k},
			    &resp, err);
	if (r < 0)
		return r;
	r = ct_parse_decrypt(&resp, ret, err);
	if (r == -EACCES && resp.status >= 400 && resp.status <= 499 && resp.status != 401)
		r = explain_refusal(c, r, err);
	return r;
}

static int ct_policy(const struct kms_config *cfg, char **ret, struct kms_error *err)
{
	const char *key = kms_config_get(cfg, "KeyName"), *user = kms_config_get(cfg, "Username");
	const char *name = cfg->name ? cfg->name : "NAME";
	char *s = NULL;

	if (!key)
		return kms_error_set(err, -EINVAL, "", "KeyName= must be set");
	if (asprintf(
		&s,
		"# CipherTrust Manager: least privilege for kmscrypt configuration '%s', key "
		"'%s'.\n"
		"# 1. Key usage: the key must be Active and allow Encrypt and Decrypt: usageMask "
		"12\n"
		"#    (Encrypt 4 + Decrypt 8; a key kmscrypt creates gets exactly that).\n"
		"# 2. Key access (Read, Use, Encrypt, Decrypt) for %s%s%s through a group: add "
		"the\n"
		"#    user to group 'kmscrypt-%s' and give the group these permissions on the key\n"
		"#    (Keys > %s > Access in the web console, or merge into the key's meta):\n"
		"{\n"
		"  \"usageMask\": 12,\n"
		"  \"meta\": {\n"
		"    \"permissions\": {\n"
		"      \"ReadKey\": [\"kmscrypt-%s\"],\n"
		"      \"UseKey\": [\"kmscrypt-%s\"],\n"
		"      \"EncryptWithKey\": [\"kmscrypt-%s\"],\n"
		"      \"DecryptWithKey\": [\"kmscrypt-%s\"]\n"
		"    }\n"
		"  }\n"
		"}\n"
		"# 3. Only for 'kmscrypt kms create' to create a missing key: the user must be in\n"
		"#    the group Key Users (the owner of a key holds every permission on it).\n",
		name, key, user ? "user '" : "the user of the refresh token", user ? user : "",
		user ? "'" : "", name, key, name, name, name, name) < 0)
		return -ENOMEM;
	*ret = s;
	return 0;
}

const struct kms_provider kms_provider_ciphertrust = {
    .name = "ciphertrust",
    .description = "Thales CipherTrust Manager AES key (REST, AES-GCM); the volume is bound as aad",
    .warning = NULL,
    .options = ct_options,
    .identity_key = "KeyName",
    .provision = ct_provision,
    .open = ct_open,
    .close = ct_close,
    .describe = ct_describe,
    .wrap = ct_wrap,
    .unwrap = ct_unwrap,
    .policy = ct_policy,
};
