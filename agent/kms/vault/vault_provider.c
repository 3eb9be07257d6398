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
 * Auth: a token from the configuration, or AppRole (role_id + secret_id): the login() of the
 * shared struct kms_remote (kms/remote.h), which logs in on first use, again shortly before the
 * lease ends, and once more when Vault refuses the token (expired or revoked); authorize() puts it
 * in X-Vault-Token.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/http_msg.h"
#include "kms/provider.h"
#include "kms/remote.h"
#include "kms/vault/vault_codec.h"
#include "transport/http.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define VAULT_ALG_AAD "vault-transit:aad"	   /* associated_data */
#define VAULT_ALG_CONTEXT "vault-transit:context"  /* derived key context */
#define VAULT_ALG_BOTH "vault-transit:aad+context" /* derived AEAD key: both */
#define VAULT_TOKEN_MARGIN_S 10
/* The codec's builders want a token; kms_remote_call() builds without it and authorize() puts the
 * real one in its place. */
#define VAULT_TOKEN_PLACEHOLDER "-"

/* What the key read found (bits of vault_ctx.key_flags). */
enum {
	VAULT_KEY_KNOWN = 1 << 0,
	VAULT_KEY_AEAD = 1 << 1,
	VAULT_KEY_DERIVED = 1 << 2,
};

struct vault_ctx {
	struct kms_remote remote; /* client, retries, fail fast, the token */
	char *addr; /* "https://host[:port]" */
	char *ns;   /* NULL when none */
	char *mount;
	char *key;
	char *role_id;	     /* AppRole when set */
	char *approle_mount; /* NULL: "approle" */
	struct secret *secret_id;
	int key_flags; /* VAULT_KEY_*, atomic: written by the key read, read by wrap */
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
	kms_remote_done(&c->remote);
	free(c->addr);
	free(c->ns);
	free(c->mount);
	free(c->key);
	free(c->role_id);
	free(c->approle_mount);
	secret_free(c->secret_id);
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

static const struct kms_remote_ops vault_token_ops, vault_approle_ops;

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
	_cleanup_free_ char *base = NULL;
	struct vault_ctx *c;
	int r;

	if (!addr || !key)
		return kms_error_set(err, -EINVAL, "", "Address= and KeyName= must be set");
	r = kms_url_base(addr, &base);
	if (r == -EINVAL)
		return kms_error_set(err, r, "", "Address=%s is not an https:// URL without a path",
				     addr);
	if (r < 0)
		return r;
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
	c->addr = TAKE_PTR(base);
	c->ns = ns ? strdup(ns) : NULL;
	c->mount = strdup(mount);
	c->key = strdup(key);
	c->role_id = role ? strdup(role) : NULL;
	c->approle_mount = amount ? strdup(amount) : NULL;
	if ((ns && !c->ns) || !c->mount || !c->key || (role && !c->role_id) ||
	    (amount && !c->approle_mount)) {
		r = -ENOMEM;
		goto fail;
	}
	if (role)
		r = secret_from(sid->buf, sid->len, &c->secret_id);
	if (r < 0)
		goto fail;
	r = kms_remote_init(&c->remote, role ? &vault_approle_ops : &vault_token_ops, c, cfg, rt,
			    err);
	if (r < 0)
		goto fail;
	if (!role) {
		/* a configured token never changes: no login(), the remote keeps it */
		r = secret_from_cstr((const char *)tok->buf, tok->len, &c->remote.token);
		if (r < 0)
			goto fail;
	}
	*ret = c;
	return 0;
fail:
	vault_close(c);
	return r;
}

/* login(): AppRole; called with the remote's lock held. */
static int vault_login(struct kms_remote *rem, void *pctx, struct secret **ret_token,
		       time_t *ret_expires, struct kms_error *err)
{
	struct vault_ctx *c = pctx;
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_(vault_auth_done) struct vault_auth a = {};
	struct vault_target t = {.addr = c->addr, .ns = c->ns, .mount = c->mount};
	time_t now = time(NULL);
	int r;

	r = vault_build_approle_login(&t, c->approle_mount, c->role_id, c->secret_id, &req);
	if (r < 0)
		return kms_error_set(err, r, "", "cannot build the AppRole login request");
	r = kms_remote_send(rem, &req, &resp, err);
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
	r = secret_from_cstr(a.client_token, strlen(a.client_token), ret_token);
	if (r < 0)
		return r;
	*ret_expires = a.lease_duration ? now + (time_t)a.lease_duration : 0;
	return 0;
}

/* authorize(): X-Vault-Token in place of the builder's placeholder. */
static int vault_authorize(void *pctx, const struct secret *token, struct http_request *req,
			   time_t now, struct kms_error *err)
{
	(void)pctx;
	(void)now;
	if (!token)
		return kms_error_set(err, -EINVAL, "", "no Vault token");
	return http_request_header_set(req, "X-Vault-Token", (const char *)token->buf);
}

/* Vault refused the token itself (expired, revoked, unknown): worth one fresh AppRole login. */
static bool vault_token_refused(const struct http_response *resp, void *pctx)
{
	(void)pctx;
	if (resp->status != 403 || !resp->body)
		return false;
	return memmem(resp->body->buf, resp->body->len, "invalid token", 13) ||
	       memmem(resp->body->buf, resp->body->len, "permission denied", 17);
}

static const struct kms_remote_ops vault_token_ops = {
	.authorize = vault_authorize,
};

static const struct kms_remote_ops vault_approle_ops = {
	.login = vault_login,
	.authorize = vault_authorize,
	.refused = vault_token_refused,
	.margin_s = VAULT_TOKEN_MARGIN_S,
};

enum vault_op_kind { VAULT_OP_ENCRYPT, VAULT_OP_DECRYPT, VAULT_OP_KEY_READ };

struct vault_op {
	enum vault_op_kind kind;
	const struct secret *plain;
	const char *ciphertext;
	const struct vault_binding *b;
};

static int vault_build(void *pctx, const void *p, struct http_request *ret)
{
	const struct vault_ctx *c = pctx;
	const struct vault_op *op = p;
	struct vault_target t = {
	    .addr = c->addr, .ns = c->ns, .mount = c->mount, .token = VAULT_TOKEN_PLACEHOLDER};

	switch (op->kind) {
	case VAULT_OP_ENCRYPT:
		return vault_build_encrypt(&t, c->key, op->plain, op->b, 0, ret);
	case VAULT_OP_DECRYPT:
		return vault_build_decrypt(&t, c->key, op->ciphertext, op->b, ret);
	case VAULT_OP_KEY_READ:
		return vault_build_key_read(&t, c->key, ret);
	}
	return -EINVAL;
}

static int vault_call(struct vault_ctx *c, const struct vault_op *op, struct http_response *ret,
		      struct kms_error *err)
{
	return kms_remote_call(&c->remote, vault_build, op, ret, err);
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
	__atomic_store_n(&c->key_flags,
			 VAULT_KEY_KNOWN | (k.aead ? VAULT_KEY_AEAD : 0) |
			     (k.derived ? VAULT_KEY_DERIVED : 0),
			 __ATOMIC_RELEASE);
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

/* The volume binding: the AAD bytes in @buf (128 bytes) as associated_data and/or context. */
static int vault_bind(const struct kms_aad *aad, bool use_aad, bool use_ctx, char *buf,
		      struct vault_binding *ret)
{
	int k = kms_aad_format(aad, buf, 128);

	if (k < 0)
		return k;
	*ret = (struct vault_binding){
	    .aad = use_aad ? (const uint8_t *)buf : NULL,
	    .aad_len = use_aad ? (size_t)k : 0,
	    .context = use_ctx ? (const uint8_t *)buf : NULL,
	    .context_len = use_ctx ? (size_t)k : 0,
	};
	return 0;
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
	bool use_aad, use_ctx;
	int flags, r;

	if (!(__atomic_load_n(&c->key_flags, __ATOMIC_ACQUIRE) & VAULT_KEY_KNOWN)) {
		struct vault_key_info info = {};
		r = vault_key_read(c, &info, err);
		vault_key_info_done(&info);
		if (r < 0)
			return r;
	}
	flags = __atomic_load_n(&c->key_flags, __ATOMIC_ACQUIRE);
	use_aad = flags & VAULT_KEY_AEAD;
	use_ctx = flags & VAULT_KEY_DERIVED;
	r = vault_bind(aad, use_aad, use_ctx, aadbuf, &b);
	if (r < 0)
		return r;
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
	int r;

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
		    w->key_id, c->remote.name, c->key);
	if (!w->blob || w->blob_len == 0 || w->blob_len > 65536 || memchr(w->blob, 0, w->blob_len))
		return kms_error_reject(err, -EBADMSG, "InvalidCiphertext",
					"token blob is not a Vault ciphertext");
	ct = strndup((const char *)w->blob, w->blob_len);
	if (!ct)
		return -ENOMEM;
	if (vault_ciphertext_version(ct, &v) < 0)
		return kms_error_reject(err, -EBADMSG, "InvalidCiphertext",
					"token blob is not of the form vault:v<N>:...");
	r = vault_bind(aad, use_aad, use_ctx, aadbuf, &b);
	if (r < 0)
		return r;
	r = vault_call(c, &(struct vault_op){.kind = VAULT_OP_DECRYPT, .ciphertext = ct, .b = &b},
		       &resp, err);
	if (r < 0)
		return r;
	return vault_parse_decrypt(&resp, ret, err);
}

/* `kms policy`: the Vault policy (HCL) that lets this configuration's token do exactly what
 * kmscrypt does: update on encrypt/<key> (wrap: format, bind, kms check) and decrypt/<key>
 * (unwrap: unlock, check), read on keys/<key> (the key's type, never its material: before the
 * first wrap and in kms check).  Paths are relative to the namespace the policy is written in.
 * https://developer.hashicorp.com/vault/api-docs/secret/transit */
static int vault_policy(const struct kms_config *cfg, char **ret, struct kms_error *err)
{
	const char *key = kms_config_get(cfg, "KeyName");
	const char *mount = kms_config_get(cfg, "Mount") ?: "transit";
	const char *ns = kms_config_get(cfg, "Namespace"), *role = kms_config_get(cfg, "RoleId");
	const char *amount = kms_config_get(cfg, "AppRoleMount") ?: "approle";
	_cleanup_free_ char *nsline = NULL, *authline = NULL;
	const char *name = cfg->name ? cfg->name : "NAME";

	if (!key || !path_ok(key) || strchr(key, '/'))
		return kms_error_set(err, -EINVAL, "", "KeyName=%s is not a valid key name",
				     key ? key : "");
	if (!path_ok(mount) || !path_ok(amount))
		return kms_error_set(err, -EINVAL, "", "Mount=%s or AppRoleMount=%s is not a valid "
				     "mount path", mount, amount);
	if (ns && (!path_ok(ns) || strpbrk(ns, "\"\n")))
		return kms_error_set(err, -EINVAL, "", "Namespace=%s is not a valid namespace", ns);
	if ((ns ? asprintf(&nsline,
			  "# Write it in namespace %s (the paths are relative to it):\n"
			  "#   vault policy write -namespace=%s kmscrypt-%s kmscrypt-%s.hcl\n"
			  "# (written in a parent namespace instead, prefix each path with \"%s/\").\n",
			  ns, ns, name, name, ns)
		: asprintf(&nsline, "#   vault policy write kmscrypt-%s kmscrypt-%s.hcl\n",
			   name, name)) < 0)
		return -ENOMEM;
	if ((role ? asprintf(&authline,
			    "# AppRole (RoleId=%s): give the role this policy; the login at\n"
			    "# auth/%s/login needs none:\n"
			    "#   vault write auth/%s/role/ROLE_NAME token_policies=kmscrypt-%s\n",
			    role, amount, amount, name)
		 : asprintf(&authline,
			    "# Token (Token=): a token with this policy only, e.g.\n"
			    "#   vault token create -policy=kmscrypt-%s -orphan -period=768h\n",
			    name)) < 0)
		return -ENOMEM;
	if (asprintf(ret,
		     "# Vault policy for kmscrypt KMS configuration '%s': transit key '%s' at mount "
		     "'%s'.\n%s%s\n"
		     "# format, bind, kms check: wrap a volume secret\n"
		     "path \"%s/encrypt/%s\" {\n  capabilities = [\"update\"]\n}\n\n"
		     "# unlock, check: unwrap a volume secret\n"
		     "path \"%s/decrypt/%s\" {\n  capabilities = [\"update\"]\n}\n\n"
		     "# format, bind, kms check: the key's type and versions (not its material)\n"
		     "path \"%s/keys/%s\" {\n  capabilities = [\"read\"]\n}\n",
		     name, key, mount, nsline, authline, mount, key, mount, key, mount, key) < 0)
		return -ENOMEM;
	return 0;
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
	.policy = vault_policy,
};
