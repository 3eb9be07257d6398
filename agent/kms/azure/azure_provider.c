/* SPDX-License-Identifier: MIT */
/*
 * Azure Key Vault provider: the per-volume secret is wrapped with an RSA key of the vault,
 * POST {vault}/keys/{name}/{version}/wrapkey (RSA-OAEP-256, api-version 7.4), and unwrapped with
 * .../unwrapkey under the key version recorded in the token, so volumes wrapped before the key
 * rotated keep opening.
 *
 * Binding to the volume: RSA-OAEP in Key Vault takes no label or AAD, so the value wrapped is
 *
 *     KMSCRYPT_AAD_PREFIX "<uuid>:<keyslot>" || 0x00 || secret        (azure_bind())
 *
 * and unwrap compares the first part with the volume and keyslot asking (azure_unbind()): a blob
 * copied to another volume or keyslot is refused (token_rejected).  The token records
 *
 *     key_id      "https://{vault}/keys/{name}"   (the kid Key Vault reported, without version)
 *     key_version "{version}"                      (from the kid of the wrapkey reply)
 *     alg         AZURE_ALG                        (this layout)
 *     blob        the RSA-OAEP-256 ciphertext (256, 384 or 512 bytes)
 *
 * Credentials: client credentials (tenant, client id, client secret) at the Microsoft identity
 * platform, or a managed identity through the instance metadata service; the bearer token is cached
 * by struct kms_remote until shortly before it expires and fetched again when Key Vault refuses it
 * (401).  The token audience follows the vault's cloud (vault.azure.net, vault.azure.cn, ...).
 *
 * `kms create` creates the key when it does not exist (RSA, wrapKey/unwrapKey, --key-size); an
 * existing key must meet the criteria of the product documentation (azure_key_check()), and a
 * rotation policy that rotates automatically gets a warning.  Deleting the configuration never
 * touches the vault.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/http_msg.h"
#include "kms/azure/azure_codec.h"
#include "kms/provider.h"
#include "kms/remote.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define AZURE_ALG "azure-kv:RSA-OAEP-256:aad-prefix"
#define AZURE_TOKEN_MARGIN_S 300 /* tokens live about an hour: renew 5 min early */

struct azure_ctx {
	struct kms_remote remote;
	char *base;	/* "https://vault[:port]" */
	char *resource; /* token audience of that vault */
	char *key_name;
	char *key_version; /* configured; NULL: the latest */
	char *key_id;	   /* recorded by `kms create`; NULL before */
	unsigned key_size; /* for a key kmscrypt creates */
	bool msi;
	char *tenant, *client_id;
	struct secret *client_secret;
	char *login, *imds; /* NULL: the defaults */
};

static const struct kms_option azure_options[] = {
    {"VaultUrl", "vault-url", KMS_OPT_REQUIRED | KMS_OPT_KEY_IDENTITY,
     "key vault URL or host, e.g. https://myvault.vault.azure.net"},
    {"KeyName", "key-name", KMS_OPT_REQUIRED | KMS_OPT_KEY_IDENTITY,
     "name of the RSA key in the vault (created by 'kms create' when missing)"},
    {"KeyVersion", "key-version", KMS_OPT_KEY_IDENTITY,
     "version of the key to wrap with (default: the latest)"},
    {"KeySize", "key-size", 0, "RSA size of a key kmscrypt creates: 2048 (default), 3072 or 4096"},
    {"KeyId", "key-id", KMS_OPT_KEY_IDENTITY,
     "key identifier https://VAULT/keys/NAME (recorded by 'kms create'; every later use must reach "
     "this key)"},
    {"TenantId", "tenant-id", KMS_OPT_CREDENTIAL, "Microsoft Entra (Azure AD) tenant id"},
    {"ClientId", "client-id", KMS_OPT_CREDENTIAL,
     "application (client) id; with --managed-identity, a user-assigned identity's client id"},
    {"ClientSecret", "client-secret", KMS_OPT_SECRET | KMS_OPT_CREDENTIAL,
     "file holding the application's client secret"},
    {"ManagedIdentity", "managed-identity", KMS_OPT_BOOL | KMS_OPT_CREDENTIAL,
     "use the Azure VM's managed identity (instance metadata service) instead of a client secret"},
    {"ImdsEndpoint", "imds-endpoint", KMS_OPT_CREDENTIAL,
     "instance metadata URL (default " AZURE_IMDS_ENDPOINT "; for tests)"},
    {"IdentityPlatformEndpoint", "identity-platform-endpoint", KMS_OPT_CREDENTIAL,
     "token authority, URL or host[:port] (default " AZURE_LOGIN_ENDPOINT "; sovereign clouds: "
     "https://login.microsoftonline.us, https://login.chinacloudapi.cn)"},
    {"CaFile", "ca-file", KMS_OPT_PATH | KMS_OPT_CREDENTIAL,
     "PEM CA bundle that signs the vault's and the token endpoint's certificates (default: the "
     "system store)"},
    {NULL, NULL, 0, NULL},
};

/* ---- context --------------------------------------------------------------------------------- */

static void azure_close(void *p)
{
	struct azure_ctx *c = p;

	if (!c)
		return;
	kms_remote_done(&c->remote);
	free(c->base);
	free(c->resource);
	free(c->key_name);
	free(c->key_version);
	free(c->key_id);
	free(c->tenant);
	free(c->client_id);
	secret_free(c->client_secret);
	free(c->login);
	free(c->imds);
	free(c);
}

static bool truthy(const char *v)
{
	return v && (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

static int dup_opt(const char *v, char **ret)
{
	if (!v) {
		*ret = NULL;
		return 0;
	}
	*ret = strdup(v);
	return *ret ? 0 : -ENOMEM;
}

/* Check every setting (no network I/O) into @c. */
static int azure_settings(struct azure_ctx *c, const struct kms_config *cfg, struct kms_error *err)
{
	const char *url = kms_config_get(cfg, "VaultUrl"), *name = kms_config_get(cfg, "KeyName");
	const char *ver = kms_config_get(cfg, "KeyVersion"), *size = kms_config_get(cfg, "KeySize");
	const char *tenant = kms_config_get(cfg, "TenantId"),
		   *cid = kms_config_get(cfg, "ClientId");
	const char *login = kms_config_get(cfg, "IdentityPlatformEndpoint");
	const char *imds = kms_config_get(cfg, "ImdsEndpoint"), *kid = kms_config_get(cfg, "KeyId");
	const struct secret *sec = kms_config_get_secret(cfg, "ClientSecret");
	int r;

	if (!url || !name)
		return kms_error_set(err, -EINVAL, "", "VaultUrl= and KeyName= must be set");
	r = azure_vault_url_parse(url, &c->base, &c->resource);
	if (r == -EINVAL)
		return kms_error_set(err, r, "",
				     "VaultUrl=%s is not an https:// URL without a path (e.g. "
				     "https://myvault.vault.azure.net)",
				     url);
	if (r < 0)
		return r;
	if (!azure_key_name_ok(name))
		return kms_error_set(
		    err, -EINVAL, "",
		    "KeyName=%s is not a Key Vault key name (1-127 letters, digits "
		    "and '-')",
		    name);
	if (ver && *ver && !azure_key_version_ok(ver))
		return kms_error_set(err, -EINVAL, "",
				     "KeyVersion=%s is not a Key Vault key version (letters and "
				     "digits, e.g. 0123456789abcdef0123456789abcdef)",
				     ver);
	c->key_size = 2048;
	if (size) {
		if (strcmp(size, "2048") != 0 && strcmp(size, "3072") != 0 &&
		    strcmp(size, "4096") != 0)
			return kms_error_set(err, -EINVAL, "",
					     "KeySize=%s is not one of 2048, 3072, 4096", size);
		c->key_size = (unsigned)atoi(size);
	}
	c->msi = truthy(kms_config_get(cfg, "ManagedIdentity"));
	if (c->msi) {
		/* `kms create` refuses both (azure_provision()); after `kms edit
		 * --managed-identity` the old secret stays in the file, unused */
		if (imds && (strncmp(imds, "http://", 7) != 0 && strncmp(imds, "https://", 8) != 0))
			return kms_error_set(err, -EINVAL, "",
					     "ImdsEndpoint=%s is not an http:// URL", imds);
	} else {
		if (!tenant || !cid || !sec)
			return kms_error_set(
			    err, -EINVAL, "",
			    "no credentials: give --tenant-id, --client-id and "
			    "--client-secret-file, or --managed-identity on an Azure VM");
		if (!azure_tenant_ok(tenant))
			return kms_error_set(
			    err, -EINVAL, "",
			    "TenantId=%s is not a tenant id (a GUID or a domain name)", tenant);
		r = secret_from(sec->buf, sec->len, &c->client_secret);
		if (r < 0)
			return r;
	}
	if (login) {
		_cleanup_free_ char *full = NULL;

		/* seed 004: "a hostname and port number", e.g. login.microsoftonline.us */
		if (!strstr(login, "://") && asprintf(&full, "https://%s", login) < 0)
			return -ENOMEM;
		r = kms_url_base(full ? full : login, &c->login);
		if (r == -EINVAL)
			return kms_error_set(
			    err, r, "",
			    "IdentityPlatformEndpoint=%s is not an https:// URL without "
			    "a path (e.g. https://login.microsoftonline.us)",
			    login);
		if (r < 0)
			return r;
	}
	if ((r = dup_opt(ver && *ver ? ver : NULL, &c->key_version)) < 0 ||
	    (r = dup_opt(name, &c->key_name)) < 0 || (r = dup_opt(kid, &c->key_id)) < 0 ||
	    (r = dup_opt(tenant, &c->tenant)) < 0 || (r = dup_opt(cid, &c->client_id)) < 0 ||
	    (r = dup_opt(c->msi ? imds : NULL, &c->imds)) < 0)
		return r;
	return 0;
}

/* ---- login ----------------------------------------------------------------------------------- */

static int azure_login(struct kms_remote *rm, void *pctx, struct secret **ret_token,
		       time_t *ret_expires, struct kms_error *err)
{
	struct azure_ctx *c = pctx;
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	int r;

	if (c->msi)
		r = azure_build_imds_token(c->imds, c->resource, c->client_id, &req);
	else
		r = azure_build_token(c->login, c->tenant, c->client_id, c->client_secret,
				      c->resource, &req);
	if (r == -EINVAL)
		return kms_error_set(err, r, "", "cannot build the token request (check %s)",
				     c->msi ? "ImdsEndpoint= and ClientId="
					    : "IdentityPlatformEndpoint=, TenantId= and ClientId=");
	if (r < 0)
		return r;
	r = kms_remote_send(rm, &req, &resp, err);
	if (r == -EAGAIN || r == -ETIMEDOUT) {
		char m[300];

		snprintf(m, sizeof(m), "%.280s", err ? err->message : "");
		return kms_error_set(
		    err, r, c->msi ? "ImdsUnavailable" : "TokenEndpointUnavailable",
		    c->msi ? "Azure instance metadata service not reachable (is this an "
			     "Azure VM with a managed identity?): %s"
			   : "Microsoft identity platform not reachable: %s",
		    m);
	}
	if (r < 0)
		return r;
	r = azure_parse_token(&resp, time(NULL), ret_token, ret_expires, err);
	if (r == -EACCES && err) {
		char m[sizeof(err->message)];

		snprintf(m, sizeof(m), "%s", err->message);
		snprintf(
		    err->message, sizeof(err->message), "%.270s; %s", m,
		    c->msi
			? "check that the VM has a managed identity (and --client-id names a "
			  "user-assigned one)"
			: "check --tenant-id, --client-id and the client secret (kmscrypt kms edit "
			  "NAME --client-secret-file F)");
	}
	return r;
}

static const struct kms_remote_ops azure_remote_ops = {
    .login = azure_login,
    .margin_s = AZURE_TOKEN_MARGIN_S,
};

static int azure_open(const struct kms_config *cfg, const struct kms_runtime *rt, void **ret,
		      struct kms_error *err)
{
	struct azure_ctx *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	r = azure_settings(c, cfg, err);
	if (r >= 0)
		r = kms_remote_init(&c->remote, &azure_remote_ops, c, cfg, rt, err);
	if (r < 0) {
		azure_close(c);
		return r;
	}
	*ret = c;
	return 0;
}

/* ---- requests -------------------------------------------------------------------------------- */

enum azure_op_kind { AZ_KEY_GET, AZ_KEY_CREATE, AZ_ROTATION, AZ_WRAP, AZ_UNWRAP };

struct azure_op {
	enum azure_op_kind kind;
	const char *version;
	const struct secret *plain;
	const uint8_t *blob;
	size_t blob_len;
};

static int azure_build(void *pctx, const void *opp, struct http_request *ret)
{
	const struct azure_ctx *c = pctx;
	const struct azure_op *op = opp;

	switch (op->kind) {
	case AZ_KEY_GET:
		return azure_build_key_get(c->base, c->key_name, op->version, ret);
	case AZ_KEY_CREATE:
		return azure_build_key_create(c->base, c->key_name, c->key_size, ret);
	case AZ_ROTATION:
		return azure_build_rotation_policy_get(c->base, c->key_name, ret);
	case AZ_WRAP:
		return azure_build_wrap(c->base, c->key_name, op->version, op->plain, ret);
	case AZ_UNWRAP:
		return azure_build_unwrap(c->base, c->key_name, op->version, op->blob, op->blob_len,
					  ret);
	}
	return -EINVAL;
}

/* "https://vault/keys/name/version" -> "https://vault/keys/name" */
static int kid_base(const char *kid, char **ret)
{
	const char *slash = strrchr(kid, '/');

	if (!slash)
		return -EBADMSG;
	*ret = strndup(kid, (size_t)(slash - kid));
	return *ret ? 0 : -ENOMEM;
}

static int azure_key_get(struct azure_ctx *c, struct azure_key *ret, struct kms_error *err)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	struct azure_op op = {.kind = AZ_KEY_GET, .version = c->key_version};
	int r;

	r = kms_remote_call(&c->remote, azure_build, &op, &resp, err);
	if (r < 0)
		return r;
	r = azure_parse_key(&resp, ret, err);
	if (r == -EACCES && resp.status == 404)
		return kms_error_fill(err, r, 404, "KeyNotFound", err ? err->request_id : NULL,
				      "Azure key '%s'%s%s does not exist in vault %s", c->key_name,
				      c->key_version ? " version " : "",
				      c->key_version ? c->key_version : "", c->base);
	return r;
}

/* ---- describe and provision ------------------------------------------------------------------ */

static int azure_describe(void *p, struct kms_key_info *ret, struct kms_error *err)
{
	struct azure_ctx *c = p;
	_cleanup_(azure_key_done) struct azure_key k = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_free_ char *id = NULL;
	struct azure_op op = {.kind = AZ_ROTATION};
	struct kms_error perr = {};
	bool rotates = false, policy_known;
	int r;

	r = azure_key_get(c, &k, err);
	if (r < 0)
		return r;
	r = azure_key_check(&k, time(NULL), err);
	if (r < 0)
		return r;
	r = kid_base(k.kid, &id);
	if (r < 0)
		return r;
	if (c->key_id && strcmp(c->key_id, id) != 0)
		return kms_error_set(
		    err, -EACCES, "KeyMismatch",
		    "these settings reach key %s, but configuration '%s' is for key %s", id,
		    c->remote.name, c->key_id);
	/* the rotation policy needs keys/getrotationpolicy: unreadable is no error, only unknown */
	r = kms_remote_call(&c->remote, azure_build, &op, &resp, &perr);
	policy_known = r >= 0 && azure_parse_rotation_policy(&resp, &rotates, &perr) >= 0;
	snprintf(ret->key_id, sizeof(ret->key_id), "%s", id);
	snprintf(ret->key_version, sizeof(ret->key_version), "%s", k.version);
	snprintf(ret->state, sizeof(ret->state), "%s", "enabled");
	snprintf(ret->description, sizeof(ret->description),
		 "Azure Key Vault %s key %s, %u bits, version %s%s%s", k.kty, k.name, k.key_size,
		 k.version, c->key_version ? " (pinned)" : " (latest)",
		 !policy_known ? "; rotation policy not readable"
		 : rotates     ? "; WARNING: its rotation policy rotates the key automatically"
			       : "");
	if (policy_known && rotates)
		snprintf(
		    ret->warning, sizeof(ret->warning),
		    "Azure key '%s' has a rotation policy that rotates it automatically; volumes "
		    "keep opening with their recorded version, but new versions are used only "
		    "when volumes are rewrapped (remove the Rotate action to follow the product "
		    "guidance)",
		    k.name);
	return 0;
}

static int azure_provision(struct kms_config *cfg, const struct kms_runtime *rt,
			   struct kms_error *err)
{
	_cleanup_(azure_key_done) struct azure_key k = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct azure_ctx *c = NULL;
	struct azure_op op = {.kind = AZ_KEY_CREATE};
	int r;

	if (truthy(kms_config_get(cfg, "ManagedIdentity")) &&
	    (kms_config_get_secret(cfg, "ClientSecret") || kms_config_get(cfg, "TenantId")))
		return kms_error_set(err, -EINVAL, "",
				     "give either --managed-identity or --tenant-id and "
				     "--client-secret-file, not both");
	r = azure_open(cfg, rt, (void **)&c, err);
	if (r < 0)
		return r;
	r = azure_key_get(c, &k, err);
	if (r == 0) {
		/* an existing key is validated by describe(); a size asked for must match */
		if (kms_config_get(cfg, "KeySize") && k.key_size && k.key_size != c->key_size)
			r = kms_error_set(err, -EINVAL, "KeySizeMismatch",
					  "Azure key '%s' exists with %u bits, not --key-size %u; "
					  "drop --key-size or choose another --key-name",
					  k.name, k.key_size, c->key_size);
		goto out;
	}
	if (r != -EACCES || !err || strcmp(err->code, "KeyNotFound") != 0)
		goto out;
	if (c->key_version) {
		r = kms_error_set(err, -EACCES, "KeyNotFound",
				  "Azure key '%s' version %s does not exist; kmscrypt creates only "
				  "new keys (drop --key-version to create one)",
				  c->key_name, c->key_version);
		goto out;
	}
	memset(err, 0, sizeof(*err));
	r = kms_remote_call(&c->remote, azure_build, &op, &resp, err);
	if (r >= 0) {
		azure_key_done(&k);
		r = azure_parse_key(&resp, &k, err);
	}
	if (r < 0 && err && r == -EACCES && resp.status == 403) {
		char m[sizeof(err->message)];

		snprintf(m, sizeof(m), "%s", err->message);
		snprintf(
		    err->message, sizeof(err->message),
		    "cannot create key '%s' (%.250s); grant the create permission or create the "
		    "key yourself",
		    c->key_name, m);
	}
out:
	azure_close(c);
	return r;
}

/* ---- wrap and unwrap ------------------------------------------------------------------------- */

static int azure_wrap(void *p, const struct kms_aad *aad, const struct secret *plain,
		      struct kms_wrapped *ret, struct kms_error *err)
{
	struct azure_ctx *c = p;
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_secret_ struct secret *bound = NULL;
	_cleanup_free_ char *kid = NULL, *name = NULL, *ver = NULL, *id = NULL;
	_cleanup_free_ uint8_t *blob = NULL;
	struct azure_op op = {.kind = AZ_WRAP, .version = c->key_version};
	struct kms_wrapped w = {};
	size_t n = 0;
	int r;

	r = azure_bind(aad, plain, &bound);
	if (r == -EINVAL)
		return kms_error_set(err, r, "", "secret of %zu bytes cannot be bound and wrapped",
				     plain ? plain->len : 0);
	if (r < 0)
		return r;
	op.plain = bound;
	r = kms_remote_call(&c->remote, azure_build, &op, &resp, err);
	if (r < 0)
		return r;
	r = azure_parse_wrap(&resp, &kid, &blob, &n, err);
	if (r < 0)
		return r;
	r = azure_kid_split(kid, &name, &ver);
	if (r >= 0)
		r = kid_base(kid, &id);
	if (r == -EBADMSG || (r >= 0 && strcmp(name, c->key_name) != 0))
		return kms_error_set(err, -EBADMSG, "", "wrapkey reply names another key (%s)",
				     kid);
	if (r < 0)
		return r;
	if (c->key_id && strcmp(id, c->key_id) != 0)
		return kms_error_set(err, -EACCES, "KeyMismatch",
				     "wrapkey used key %s, but configuration '%s' is for key %s",
				     id, c->remote.name, c->key_id);
	w.key_id = TAKE_PTR(id);
	w.key_version = TAKE_PTR(ver);
	w.alg = strdup(AZURE_ALG);
	w.blob = TAKE_PTR(blob);
	w.blob_len = n;
	if (!w.alg) {
		kms_wrapped_done(&w);
		return -ENOMEM;
	}
	*ret = w;
	return 0;
}

static int azure_unwrap(void *p, const struct kms_aad *aad, const struct kms_wrapped *w,
			struct secret **ret, struct kms_error *err)
{
	struct azure_ctx *c = p;
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_secret_ struct secret *plain = NULL;
	struct azure_op op = {.kind = AZ_UNWRAP, .blob = w->blob, .blob_len = w->blob_len};
	const char *slash;
	int r;

	if (!w->alg || strcmp(w->alg, AZURE_ALG) != 0)
		return kms_error_reject(err, -EBADMSG, "UnsupportedAlgorithm",
					"token algorithm '%s' is not %s", w->alg ? w->alg : "",
					AZURE_ALG);
	if (w->key_id && *w->key_id) {
		slash = strrchr(w->key_id, '/');
		if ((c->key_id && strcmp(w->key_id, c->key_id) != 0) || !slash ||
		    strcmp(slash + 1, c->key_name) != 0)
			return kms_error_reject(
			    err, -EACCES, "KeyMismatch",
			    "secret was wrapped with key %s, but configuration '%s' is for key %s",
			    w->key_id, c->remote.name, c->key_id ? c->key_id : c->key_name);
	}
	op.version = w->key_version && *w->key_version ? w->key_version : c->key_version;
	if (op.version && !azure_key_version_ok(op.version))
		return kms_error_reject(err, -EBADMSG, "InvalidCiphertext",
					"token key version is not a Key Vault key version");
	if (!w->blob || w->blob_len == 0 || w->blob_len > 1024)
		return kms_error_reject(err, -EBADMSG, "InvalidCiphertext",
					"token blob is not an RSA-OAEP ciphertext");
	r = kms_remote_call(&c->remote, azure_build, &op, &resp, err);
	if (r < 0)
		return r;
	r = azure_parse_unwrap(&resp, &plain, err);
	if (r < 0)
		return r;
	return azure_unbind(aad, plain, ret, err);
}

static int azure_policy(const struct kms_config *cfg, char **ret, struct kms_error *err)
{
	const char *url = kms_config_get(cfg, "VaultUrl"), *name = kms_config_get(cfg, "KeyName");
	_cleanup_free_ char *base = NULL;
	bool msi = truthy(kms_config_get(cfg, "ManagedIdentity"));
	int r;

	if (!url || !name || azure_vault_url_parse(url, &base, NULL) < 0 ||
	    !azure_key_name_ok(name))
		return kms_error_set(err, -EINVAL, "", "VaultUrl= and KeyName= must be valid");
	/* KeyId is recorded once the key existed at `kms create`; before that kmscrypt creates it
	 */
	r = azure_policy_text(base, name, !kms_config_get(cfg, "KeyId"), msi,
			      kms_config_get(cfg, "ClientId"), ret);
	return r;
}

const struct kms_provider kms_provider_azure = {
    .name = "azure",
    .description = "Azure Key Vault RSA key (RSA-OAEP-256 wrapkey/unwrapkey); the volume UUID "
		   "and keyslot are wrapped with the secret and checked on unwrap",
    .warning = NULL,
    .options = azure_options,
    .identity_key = "KeyId",
    .provision = azure_provision,
    .open = azure_open,
    .close = azure_close,
    .describe = azure_describe,
    .wrap = azure_wrap,
    .unwrap = azure_unwrap,
    .policy = azure_policy,
};
