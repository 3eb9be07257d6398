/* SPDX-License-Identifier: MIT */
/*
 * Google Cloud KMS provider: the per-volume secret is wrapped with cryptoKeys.encrypt and
 * unwrapped with cryptoKeys.decrypt on a symmetric key (purpose ENCRYPT_DECRYPT), bound to the
 * volume by the AAD bytes KMSCRYPT_AAD_PREFIX "<uuid>:<keyslot>" as additionalAuthenticatedData.
 * Every request carries the CRC32C of what it sends and every reply is checked (gcp_codec.h);
 * an integrity failure is retried twice, then reported as -EBADMSG.
 *
 * Token layout (include/kmscrypt/token.h):
 *   key_id      "projects/P/locations/L/keyRings/R/cryptoKeys/K" (the configuration must name it)
 *   key_version "N" of the cryptoKeyVersion the encrypt reply names (informational: decrypt names
 *               the CryptoKey and Cloud KMS finds the version inside the ciphertext, so a volume
 *               keeps opening after the key rotates, as long as version N is ENABLED)
 *   alg         "gcp-kms:aad"
 *   blob        the ciphertext bytes as Cloud KMS returned them
 *
 * Credentials: a service account JSON key file (--service-account-file), or its client_email
 * (--email) and private key (--private-key-file: PEM, or the bare base64 of the PKCS#8 DER as seed
 * 004's privateKey), exchanged for an access token with an RS256 JWT assertion; or the GCE
 * metadata server (--credentials metadata).  The key files are read by open() (they hold several
 * lines, which configuration values cannot) and must not be readable by group or others.  The
 * access token lives in the shared struct kms_remote: fetched on first use, renewed a minute
 * before it expires, and once more when Cloud KMS answers 401 (expired or revoked).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec/http_msg.h"
#include "kms/gcp/gcp_codec.h"
#include "kms/provider.h"
#include "kms/remote.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/secret.h"

#define GCP_ALG "gcp-kms:aad"
#define GCP_FILE_MAX 65536
#define GCP_CRC_TRIES 3 /* "perform a limited number of retries" (data-integrity-guidelines) */

enum gcp_src { GCP_SRC_SERVICE_ACCOUNT, GCP_SRC_METADATA };

struct gcp_ctx {
	struct kms_remote remote; /* client, retries, fail fast, the access token */
	char *name;
	char *base;	/* "https://cloudkms.googleapis.com" */
	char *key_name; /* projects/.../cryptoKeys/K */
	char *enc_name; /* key_name, or its pinned cryptoKeyVersion */
	char *key_setting;
	char *version; /* KeyVersion=, NULL when unset */
	enum gcp_src src;
	char *email;
	char *kid;
	EVP_PKEY *pkey;
	char *token_url;
	char *metadata_base;
};

static const struct kms_option gcp_options[] = {
    {"ProjectId", "project-id", KMS_OPT_REQUIRED | KMS_OPT_KEY_IDENTITY,
     "project that holds the key ring (seed: projectId)"},
    {"Location", "location", KMS_OPT_REQUIRED | KMS_OPT_KEY_IDENTITY,
     "location of the key ring, e.g. global or europe-west1 (seed: location)"},
    {"KeyRing", "key-ring", KMS_OPT_REQUIRED | KMS_OPT_KEY_IDENTITY,
     "key ring of the key (seed: keyRing)"},
    {"KeyName", "key-name", KMS_OPT_REQUIRED | KMS_OPT_KEY_IDENTITY,
     "symmetric key, purpose ENCRYPT_DECRYPT (seed: keyName)"},
    {"KeyVersion", "key-version", KMS_OPT_CREDENTIAL,
     "encrypt with this key version instead of the primary one (seed: keyVersion)"},
    {"Endpoint", "endpoint", KMS_OPT_CREDENTIAL,
     "Cloud KMS host[:port] or https URL (default cloudkms.googleapis.com; seed: endpoint)"},
    {"Credentials", "credentials", KMS_OPT_CREDENTIAL,
     "service-account (default: --service-account-file, or --email and --private-key-file) "
     "or metadata (the GCE metadata server)"},
    {"ServiceAccountFile", "service-account-file", KMS_OPT_PATH | KMS_OPT_CREDENTIAL,
     "service account JSON key file (client_email, private_key, token_uri); mode 0600"},
    {"Email", "email", KMS_OPT_CREDENTIAL,
     "service account email, with --private-key-file (seed: email)"},
    {"PrivateKeyFile", "private-key-file", KMS_OPT_PATH | KMS_OPT_CREDENTIAL,
     "the service account's RSA private key: PEM, or bare base64 of the DER (seed: privateKey); "
     "mode 0600"},
    {"TokenEndpoint", "token-endpoint", KMS_OPT_CREDENTIAL,
     "OAuth 2.0 token endpoint host[:port] or URL (default oauth2.googleapis.com, or the key "
     "file's token_uri; seed: the kmsProviders endpoint)"},
    {"MetadataEndpoint", "metadata-endpoint", KMS_OPT_CREDENTIAL,
     "GCE metadata server URL (default " GCP_METADATA_ENDPOINT "; for tests)"},
    {"CaFile", "ca-file", KMS_OPT_PATH | KMS_OPT_CREDENTIAL,
     "PEM CA bundle that signs the endpoints' certificates (default: the system store)"},
    {NULL, NULL, 0, NULL},
};

static void gcp_close(void *p)
{
	struct gcp_ctx *c = p;

	if (!c)
		return;
	kms_remote_done(&c->remote);
	free(c->name);
	free(c->base);
	free(c->key_name);
	free(c->enc_name);
	free(c->key_setting);
	free(c->version);
	free(c->email);
	free(c->kid);
	gcp_pkey_free(c->pkey);
	free(c->token_url);
	free(c->metadata_base);
	free(c);
}

/* Read a credential file: a regular file that group and others cannot read. */
static int read_private_file(const char *setting, const char *path, struct secret **ret,
			     struct kms_error *err)
{
	_cleanup_close_ int fd = -1;
	struct stat st;
	int r;

	fd = open_regular_file(path, &st);
	if (fd == -EACCES || fd == -EPERM)
		return kms_error_set(err, -ENOKEY, "CredentialFileUnreadable",
				     "cannot read %s '%s': %s", setting, path, strerror(-fd));
	if (fd < 0)
		return kms_error_set(err, -EINVAL, "CredentialFileInvalid",
				     "cannot open %s '%s': %s", setting, path, strerror(-fd));
	if (!FILE_MODE_PRIVATE(st.st_mode))
		return kms_error_set(
		    err, -EINVAL, "CredentialFileMode",
		    "%s '%s' holds a private key but is accessible by group or others "
		    "(mode %04o); run 'chmod 600 %s'",
		    setting, path, (unsigned)(st.st_mode & 07777), path);
	r = read_fd_secret(fd, GCP_FILE_MAX, 0, ret);
	if (r == -EACCES || r == -EPERM)
		return kms_error_set(err, -ENOKEY, "CredentialFileUnreadable",
				     "cannot read %s '%s': %s", setting, path, strerror(-r));
	if (r < 0)
		return kms_error_set(err, r == -EFBIG ? -EINVAL : r, "CredentialFileInvalid",
				     "cannot read %s '%s': %s", setting, path, strerror(-r));
	return 0;
}

static int load_service_account(struct gcp_ctx *c, const struct kms_config *cfg,
				struct kms_error *err)
{
	const char *file = kms_config_get(cfg, "ServiceAccountFile");
	const char *email = kms_config_get(cfg, "Email");
	const char *pkfile = kms_config_get(cfg, "PrivateKeyFile");
	const char *tep = kms_config_get(cfg, "TokenEndpoint");
	_cleanup_(gcp_service_account_done) struct gcp_service_account sa = {};
	_cleanup_secret_ struct secret *text = NULL;
	const char *uri;
	int r;

	if (file && (email || pkfile))
		return kms_error_set(err, -EINVAL, "",
				     "give either --service-account-file or --email "
				     "with --private-key-file, not both");
	if (!file && !(email && pkfile))
		return kms_error_set(err, -EINVAL, "",
				     "no credentials: give --service-account-file, or --email and "
				     "--private-key-file, or --credentials metadata");
	if (file) {
		r = read_private_file("ServiceAccountFile", file, &text, err);
		if (r < 0)
			return r;
		r = gcp_parse_service_account(text->buf, text->len, &sa, err);
		if (r < 0) {
			char m[sizeof(err->message)];
			snprintf(m, sizeof(m), "%s", err ? err->message : "");
			return kms_error_set(err, -EINVAL, "ServiceAccountInvalid", "%s: %.300s",
					     file, m);
		}
		r = gcp_load_private_key(sa.private_key->buf, sa.private_key->len, &c->pkey);
		if (r < 0)
			return r == -ENOMEM ? r
					    : kms_error_set(err, -EINVAL, "ServiceAccountInvalid",
							    "the private_key of '%s' is not an RSA "
							    "private key of 2048 bits or more",
							    file);
		c->email = TAKE_PTR(sa.client_email);
		c->kid = TAKE_PTR(sa.private_key_id);
	} else {
		if (!strchr(email, '@') || strpbrk(email, "\"\\ "))
			return kms_error_set(err, -EINVAL, "",
					     "Email=%s is not a service account email", email);
		r = read_private_file("PrivateKeyFile", pkfile, &text, err);
		if (r < 0)
			return r;
		r = gcp_load_private_key(text->buf, text->len, &c->pkey);
		if (r < 0)
			return r == -ENOMEM
				   ? r
				   : kms_error_set(err, -EINVAL, "PrivateKeyInvalid",
						   "'%s' holds no RSA private key (PEM, or the "
						   "base64 of the PKCS#8 DER) of 2048 bits or more",
						   pkfile);
		c->email = strdup(email);
		if (!c->email)
			return -ENOMEM;
	}
	uri = tep ? tep : sa.token_uri ? sa.token_uri : GCP_TOKEN_URI;
	r = gcp_token_url(uri, &c->token_url);
	if (r == -EINVAL)
		return kms_error_set(err, r, "", "%s=%s is not an https URL or host[:port]",
				     tep ? "TokenEndpoint" : "token_uri", uri);
	return r;
}

static bool metadata_url_ok(const char *s)
{
	const char *h;

	if (strncmp(s, "http://", 7) == 0)
		h = s + 7;
	else
		return false;
	return *h && !strpbrk(h, "/?#@ ");
}

static const struct kms_remote_ops gcp_ops;

static int gcp_open(const struct kms_config *cfg, const struct kms_runtime *rt, void **ret,
		    struct kms_error *err)
{
	struct gcp_key_ref k = {
	    .project = kms_config_get(cfg, "ProjectId"),
	    .location = kms_config_get(cfg, "Location"),
	    .key_ring = kms_config_get(cfg, "KeyRing"),
	    .key = kms_config_get(cfg, "KeyName"),
	    .version = kms_config_get(cfg, "KeyVersion"),
	};
	const char *ep = kms_config_get(cfg, "Endpoint"), *src = kms_config_get(cfg, "Credentials");
	const char *md = kms_config_get(cfg, "MetadataEndpoint");
	struct gcp_ctx *c;
	int r;

	if (!k.project || !k.location || !k.key_ring || !k.key)
		return kms_error_set(err, -EINVAL, "",
				     "ProjectId=, Location=, KeyRing= and KeyName= must be set");
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	r = gcp_key_name(&k, false, &c->key_name);
	if (r == -EINVAL) {
		r = kms_error_set(
		    err, r, "",
		    "ProjectId=%s, Location=%s, KeyRing=%s or KeyName=%s is not a valid "
		    "Cloud KMS resource ID",
		    k.project, k.location, k.key_ring, k.key);
		goto fail;
	}
	if (r < 0)
		goto fail;
	r = gcp_key_name(&k, true, &c->enc_name);
	if (r == -EINVAL) {
		r = kms_error_set(err, r, "", "KeyVersion=%s is not a key version number",
				  k.version);
		goto fail;
	}
	if (r < 0)
		goto fail;
	r = gcp_endpoint_base(ep ? ep : GCP_KMS_ENDPOINT, &c->base);
	if (r == -EINVAL) {
		r = kms_error_set(err, r, "", "Endpoint=%s is not a host[:port] or https URL", ep);
		goto fail;
	}
	if (r < 0)
		goto fail;
	c->name = strdup(cfg->name ? cfg->name : "");
	c->key_setting = strdup(k.key);
	c->version = k.version ? strdup(k.version) : NULL;
	if (!c->name || !c->key_setting || (k.version && !c->version)) {
		r = -ENOMEM;
		goto fail;
	}
	if (src && strcmp(src, "metadata") == 0) {
		c->src = GCP_SRC_METADATA;
		if (md && !metadata_url_ok(md)) {
			r = kms_error_set(err, -EINVAL, "",
					  "MetadataEndpoint=%s is not an http://host[:port] URL",
					  md);
			goto fail;
		}
		c->metadata_base = strdup(md ? md : GCP_METADATA_ENDPOINT);
		if (!c->metadata_base) {
			r = -ENOMEM;
			goto fail;
		}
	} else if (!src || strcmp(src, "service-account") == 0) {
		c->src = GCP_SRC_SERVICE_ACCOUNT;
		r = load_service_account(c, cfg, err);
		if (r < 0)
			goto fail;
	} else {
		r = kms_error_set(err, -EINVAL, "",
				  "Credentials=%s is not service-account or metadata", src);
		goto fail;
	}
	r = kms_remote_init(&c->remote, &gcp_ops, c, cfg, rt, err);
	if (r < 0)
		goto fail;
	*ret = c;
	return 0;
fail:
	gcp_close(c);
	return r;
}

/* ---- the access token ------------------------------------------------------------------------ */

static int gcp_login(struct kms_remote *rem, void *pctx, struct secret **ret_token,
		     time_t *ret_expires, struct kms_error *err)
{
	struct gcp_ctx *c = pctx;
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_secret_ struct secret *jwt = NULL;
	bool md = c->src == GCP_SRC_METADATA;
	time_t now = time(NULL);
	uint32_t expires_in = 0;
	char prefix[320];
	int r;

	if (md) {
		r = gcp_build_metadata_token(c->metadata_base, &req);
		snprintf(prefix, sizeof(prefix), "cannot reach the GCE metadata server %.200s",
			 c->metadata_base);
	} else {
		r = gcp_jwt_assertion(c->pkey, c->kid, c->email, c->token_url, GCP_SCOPE, now,
				      &jwt);
		if (r >= 0)
			r = gcp_build_token_request(c->token_url, jwt, &req);
		snprintf(prefix, sizeof(prefix), "cannot reach the Google token endpoint %.200s",
			 c->token_url);
	}
	if (r < 0)
		return kms_error_set(err, r, "", "cannot build the %s token request",
				     md ? "metadata" : "service account");
	r = kms_remote_send_named(
	    rem, &req, md ? "MetadataUnreachable" : "TokenEndpointUnreachable", prefix, &resp, err);
	if (r < 0)
		return r;
	r = gcp_parse_token(&resp, md, ret_token, &expires_in, err);
	if (r == -EACCES && !md && err) {
		char m[sizeof(err->message)], code[sizeof(err->code)];

		snprintf(m, sizeof(m), "%s", err->message);
		snprintf(code, sizeof(code), "%s", err->code);
		kms_error_set(err, r, code,
			      "service account %.100s: %.200s (is the key deleted or the account "
			      "disabled, or this host's clock wrong?)",
			      c->email, m);
	}
	if (r < 0)
		return r;
	*ret_expires = now + (time_t)(expires_in ? expires_in : GCP_JWT_LIFETIME);
	return 0;
}

static bool gcp_refused(const struct http_response *resp, void *pctx)
{
	(void)pctx;
	return gcp_token_refused(resp);
}

static const struct kms_remote_ops gcp_ops = {
    .login = gcp_login,
    .authorize = NULL, /* Authorization: Bearer */
    .refused = gcp_refused,
    .transient = NULL, /* 429 RESOURCE_EXHAUSTED, 5xx UNAVAILABLE/INTERNAL */
    .margin_s = 60,
};

/* ---- requests -------------------------------------------------------------------------------- */

enum gcp_op_kind { GCP_OP_ENCRYPT, GCP_OP_DECRYPT, GCP_OP_GET };

struct gcp_op {
	enum gcp_op_kind kind;
	const struct secret *plain;
	const uint8_t *ct;
	size_t ct_len;
	const char *aad;
	size_t aad_len;
};

static int gcp_build(void *pctx, const void *opv, struct http_request *ret)
{
	struct gcp_ctx *c = pctx;
	const struct gcp_op *op = opv;

	switch (op->kind) {
	case GCP_OP_ENCRYPT:
		return gcp_build_encrypt(c->base, c->enc_name, op->plain, op->aad, op->aad_len,
					 ret);
	case GCP_OP_DECRYPT:
		return gcp_build_decrypt(c->base, c->key_name, op->ct, op->ct_len, op->aad,
					 op->aad_len, ret);
	case GCP_OP_GET:
		return gcp_build_get_key(c->base, c->key_name, ret);
	}
	return -EINVAL;
}

static bool crc_failure(int r, const struct kms_error *err)
{
	return r == -EBADMSG && err && strcmp(err->code, "Crc32cMismatch") == 0;
}

static int gcp_describe(void *p, struct kms_key_info *ret, struct kms_error *err)
{
	struct gcp_ctx *c = p;
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_(gcp_key_info_done) struct gcp_key_info k = {};
	const char *ver;
	int r;

	r = kms_remote_call(&c->remote, gcp_build, &(struct gcp_op){.kind = GCP_OP_GET}, &resp,
			    err);
	if (r < 0)
		return r;
	r = gcp_parse_key(&resp, &k, err);
	if (r < 0 && err && strcmp(err->code, "PERMISSION_DENIED") == 0 &&
	    strlen(err->message) < sizeof(err->message) - 80)
		strcat(err->message, " (reading the key needs cloudkms.cryptoKeys.get: see "
				     "'kmscrypt kms policy')");
	if (r < 0)
		return r;
	if (strcmp(k.name, c->key_name) != 0)
		return kms_error_set(err, -EBADMSG, "UnexpectedKey",
				     "Cloud KMS described key '%.200s' instead of '%.200s'", k.name,
				     c->key_name);
	r = gcp_check_key(&k, err);
	if (r < 0)
		return r;
	ver = k.primary_name ? strrchr(k.primary_name, '/') : NULL;
	snprintf(ret->key_id, sizeof(ret->key_id), "%s", c->key_setting);
	snprintf(ret->key_version, sizeof(ret->key_version), "%s",
		 c->version ? c->version
		 : ver	    ? ver + 1
			    : "");
	snprintf(ret->state, sizeof(ret->state), "%s", k.primary_state);
	snprintf(ret->description, sizeof(ret->description),
		 "Cloud KMS key %.120s, %.40s %.16s, primary version %.12s%s%.20s%s%.12s",
		 c->key_name, k.algorithm ? k.algorithm : "?", k.protection ? k.protection : "",
		 ver ? ver + 1 : "?", k.rotation_period ? ", rotation every " : "",
		 k.rotation_period ? k.rotation_period : "", c->version ? ", encrypts with " : "",
		 c->version ? c->version : "");
	return 0;
}

static int gcp_wrap(void *p, const struct kms_aad *aad, const struct secret *plain,
		    struct kms_wrapped *ret, struct kms_error *err)
{
	struct gcp_ctx *c = p;
	_cleanup_(gcp_ciphertext_done) struct gcp_ciphertext ct = {};
	struct kms_wrapped w = {};
	char aadbuf[128];
	int k, r = 0;

	k = kms_aad_format(aad, aadbuf, sizeof(aadbuf));
	if (k < 0)
		return k;
	for (unsigned i = 0; i < GCP_CRC_TRIES; i++) {
		_cleanup_(http_response_done) struct http_response resp = {};
		struct gcp_op op = {
		    .kind = GCP_OP_ENCRYPT, .plain = plain, .aad = aadbuf, .aad_len = (size_t)k};

		r = kms_remote_call(&c->remote, gcp_build, &op, &resp, err);
		if (r < 0)
			return r;
		r = gcp_parse_encrypt(&resp, c->key_name, true, &ct, err);
		if (!crc_failure(r, err))
			break;
	}
	if (r < 0)
		return r;
	w.key_id = strdup(c->key_name);
	w.key_version = strdup(ct.version);
	w.alg = strdup(GCP_ALG);
	w.blob = TAKE_PTR(ct.ct);
	w.blob_len = ct.ct_len;
	if (!w.key_id || !w.key_version || !w.alg) {
		kms_wrapped_done(&w);
		return -ENOMEM;
	}
	*ret = w;
	return 0;
}

static int gcp_unwrap(void *p, const struct kms_aad *aad, const struct kms_wrapped *w,
		      struct secret **ret, struct kms_error *err)
{
	struct gcp_ctx *c = p;
	char aadbuf[128];
	int k, r = 0;

	if (!w->alg || strcmp(w->alg, GCP_ALG) != 0)
		return kms_error_set(err, -EBADMSG, "UnsupportedAlgorithm",
				     "token algorithm '%s' is not a Cloud KMS binding",
				     w->alg ? w->alg : "");
	if (!w->key_id || strcmp(w->key_id, c->key_name) != 0)
		return kms_error_reject(
		    err, -EACCES, "KeyMismatch",
		    "secret was wrapped with Cloud KMS key '%s', but configuration "
		    "'%s' is for key '%s'",
		    w->key_id ? w->key_id : "", c->name, c->key_name);
	if (!w->blob || w->blob_len == 0 || w->blob_len > 2 * GCP_PLAINTEXT_MAX)
		return kms_error_reject(err, -EBADMSG, "InvalidCiphertext",
					"token blob is not a Cloud KMS ciphertext");
	k = kms_aad_format(aad, aadbuf, sizeof(aadbuf));
	if (k < 0)
		return k;
	for (unsigned i = 0; i < GCP_CRC_TRIES; i++) {
		_cleanup_(http_response_done) struct http_response resp = {};
		struct gcp_op op = {.kind = GCP_OP_DECRYPT,
				    .ct = w->blob,
				    .ct_len = w->blob_len,
				    .aad = aadbuf,
				    .aad_len = (size_t)k};

		r = kms_remote_call(&c->remote, gcp_build, &op, &resp, err);
		if (r < 0)
			return r;
		r = gcp_parse_decrypt(&resp, ret, err);
		if (!crc_failure(r, err))
			break;
	}
	return r;
}

/* `kms policy`: the IAM bindings on the key for the configured service account. */
static int gcp_policy(const struct kms_config *cfg, char **ret, struct kms_error *err)
{
	struct gcp_key_ref k = {
	    .project = kms_config_get(cfg, "ProjectId"),
	    .location = kms_config_get(cfg, "Location"),
	    .key_ring = kms_config_get(cfg, "KeyRing"),
	    .key = kms_config_get(cfg, "KeyName"),
	};
	const char *email = kms_config_get(cfg, "Email"),
		   *file = kms_config_get(cfg, "ServiceAccountFile");
	const char *src = kms_config_get(cfg, "Credentials");
	_cleanup_(gcp_service_account_done) struct gcp_service_account sa = {};
	_cleanup_free_ char *member = NULL;
	int r;

	if (!email && file && !(src && strcmp(src, "metadata") == 0)) {
		_cleanup_secret_ struct secret *text = NULL;
		/* the email is in the key file; if it cannot be read, print a placeholder */
		if (read_private_file("ServiceAccountFile", file, &text, NULL) >= 0 &&
		    gcp_parse_service_account(text->buf, text->len, &sa, NULL) >= 0)
			email = sa.client_email;
	}
	if (email && asprintf(&member, "serviceAccount:%s", email) < 0)
		return -ENOMEM;
	r = gcp_policy_text(&k, member, ret);
	if (r == -EINVAL)
		return kms_error_set(err, r, "",
				     "the key settings or the service account email of "
				     "this configuration are not valid");
	return r;
}

const struct kms_provider kms_provider_gcp = {
    .name = "gcp",
    .description = "Google Cloud KMS symmetric key; the volume is bound as additional "
		   "authenticated data",
    .warning = NULL,
    .options = gcp_options,
    .identity_key = "KeyName",
    .provision = NULL,
    .open = gcp_open,
    .close = gcp_close,
    .describe = gcp_describe,
    .wrap = gcp_wrap,
    .unwrap = gcp_unwrap,
    .policy = gcp_policy,
};
