/* SPDX-License-Identifier: MIT */
/*
 * AWS KMS provider: the per-volume secret is wrapped with Encrypt and unwrapped with Decrypt under
 * a symmetric customer master key, with an EncryptionContext that names the volume and keyslot:
 *
 *   {"kmscrypt:volume": "<LUKS2 UUID>", "kmscrypt:keyslot": "<n>"}
 *
 * so a blob copied to another volume or keyslot does not decrypt (InvalidCiphertextException), and
 * CloudTrail records which volume asked.  Decrypt also names the key ARN recorded in the token.
 * https://docs.aws.amazon.com/kms/latest/developerguide/encrypt_context.html
 *
 * Credentials: static keys from the configuration, the EC2 instance role through IMDSv2, or the
 * standard AWS_* environment variables.  The driver is a struct kms_remote (kms/remote.h: client,
 * retries, fail fast, credential cache): IMDS credentials are its login() (fetched on first use,
 * refreshed shortly before they expire and once more when KMS answers ExpiredTokenException), and
 * its authorize() signs each request with SigV4 under the remote's lock.  Static and environment
 * keys never change: no login().
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/http_msg.h"
#include "codec/sigv4.h"
#include "kms/aws/aws_codec.h"
#include "kms/provider.h"
#include "kms/remote.h"
#include "transport/http.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define AWS_ALG "aws-kms:SYMMETRIC_DEFAULT"
#define AWS_CREDS_MARGIN_S 60 /* refresh IMDS credentials this long before they expire */
#define AWS_IMDS_TOKEN_TTL 21600

enum aws_source {
	AWS_SRC_STATIC,
	AWS_SRC_IMDS,
	AWS_SRC_ENV,
};

struct aws_ctx {
	struct kms_remote remote; /* client, retries, fail fast; its lock guards the credentials */
	char *region;
	char *endpoint;	 /* "https://host[:port]", no trailing '/' */
	char *key_id;	 /* as configured: key id, ARN or alias/... */
	char *key_arn;	 /* recorded by `kms create`; NULL before */
	char *imds_base; /* NULL: AWS_IMDS_ENDPOINT */
	enum aws_source src;

	/* credentials: set once by open() (static, env) or by login() (IMDS) under remote.lock */
	char *akid;
	struct secret *secret_key;
	struct secret *session_token; /* NUL-terminated text; NULL for long-term keys */
	time_t expiration;	      /* 0: does not expire */
	struct secret *imds_token;    /* NUL-terminated */
	time_t imds_token_expiry;
};

static const struct kms_option aws_options[] = {
	{"Region", "region", KMS_OPT_REQUIRED, "AWS region of the key, e.g. eu-west-1"},
	{"KeyId", "key-id", KMS_OPT_REQUIRED | KMS_OPT_KEY_IDENTITY,
	 "key id, key ARN or alias/NAME (aliases are resolved with ListAliases)"},
	{"KeyArn", "key-arn", KMS_OPT_KEY_IDENTITY,
	 "ARN of the key (recorded by 'kms create'; every later use must reach this key)"},
	{"Endpoint", "endpoint", KMS_OPT_CREDENTIAL,
	 "KMS endpoint URL, e.g. a VPC or FIPS endpoint (default https://kms.REGION.amazonaws.com)"},
	{"CaFile", "ca-file", KMS_OPT_PATH | KMS_OPT_CREDENTIAL,
	 "PEM CA bundle that signs the endpoint's certificate (default: the system store)"},
	{"Credentials", "credentials", KMS_OPT_CREDENTIAL,
	 "where credentials come from: static (default: --access-key-id and "
	 "--secret-access-key-file), imds (EC2 instance role via IMDSv2) or env (AWS_* variables)"},
	{"AccessKeyId", "access-key-id", KMS_OPT_CREDENTIAL, "access key id (static credentials)"},
	{"SecretAccessKey", "secret-access-key", KMS_OPT_SECRET | KMS_OPT_CREDENTIAL,
	 "file holding the secret access key (static credentials)"},
	{"SessionToken", "session-token", KMS_OPT_SECRET | KMS_OPT_CREDENTIAL,
	 "file holding a session token (temporary static credentials)"},
	{"ImdsEndpoint", "imds-endpoint", KMS_OPT_CREDENTIAL,
	 "instance metadata URL (default " AWS_IMDS_ENDPOINT "; for tests)"},
	{NULL, NULL, 0, NULL},
};

/* ---- context --------------------------------------------------------------------------------- */

static void aws_close(void *p)
{
	struct aws_ctx *c = p;

	if (!c)
		return;
	kms_remote_done(&c->remote);
	free(c->region);
	free(c->endpoint);
	free(c->key_id);
	free(c->key_arn);
	free(c->imds_base);
	free(c->akid);
	secret_free(c->secret_key);
	secret_free(c->session_token);
	secret_free(c->imds_token);
	free(c);
}

static int aws_load_creds(struct aws_ctx *c, const struct kms_config *cfg, struct kms_error *err)
{
	const char *src = kms_config_get(cfg, "Credentials");
	const char *akid = NULL, *sk = NULL, *tok = NULL;
	int r;

	if (!src || strcmp(src, "static") == 0) {
		/* both from the configuration's locked memory (struct secret, NUL-terminated) */
		const struct secret *ssk = kms_config_get_secret(cfg, "SecretAccessKey");
		const struct secret *stok = kms_config_get_secret(cfg, "SessionToken");

		c->src = AWS_SRC_STATIC;
		akid = kms_config_get(cfg, "AccessKeyId");
		sk = ssk ? (const char *)ssk->buf : NULL;
		tok = stok ? (const char *)stok->buf : NULL;
		if (!akid || !sk)
			return kms_error_set(
			    err, -EINVAL, "",
			    "static credentials need AccessKeyId= and SecretAccessKey= "
			    "(--access-key-id and --secret-access-key-file), or choose "
			    "--credentials imds|env");
	} else if (strcmp(src, "imds") == 0) {
		c->src = AWS_SRC_IMDS;
		return 0; /* fetched on first use: open() does no network I/O */
	} else if (strcmp(src, "env") == 0) {
		c->src = AWS_SRC_ENV;
		akid = getenv("AWS_ACCESS_KEY_ID");
		sk = getenv("AWS_SECRET_ACCESS_KEY");
		tok = getenv("AWS_SESSION_TOKEN");
		if (!akid || !*akid || !sk || !*sk)
			return kms_error_set(err, -EINVAL, "",
					     "Credentials=env, but AWS_ACCESS_KEY_ID or "
					     "AWS_SECRET_ACCESS_KEY is not set");
		if (tok && !*tok)
			tok = NULL;
	} else {
		return kms_error_set(err, -EINVAL, "",
				     "Credentials=%s is not one of static, imds, env", src);
	}
	c->akid = strdup(akid);
	if (!c->akid)
		return -ENOMEM;
	r = secret_from(sk, strlen(sk), &c->secret_key);
	if (r >= 0 && tok)
		r = secret_from_cstr(tok, strlen(tok), &c->session_token);
	return r;
}

static const struct kms_remote_ops aws_static_ops, aws_imds_ops;

static int aws_open(const struct kms_config *cfg, const struct kms_runtime *rt, void **ret,
		    struct kms_error *err)
{
	const char *region = kms_config_get(cfg, "Region"), *key = kms_config_get(cfg, "KeyId");
	const char *arn = kms_config_get(cfg, "KeyArn"), *ep = kms_config_get(cfg, "Endpoint");
	const char *imds = kms_config_get(cfg, "ImdsEndpoint");
	struct aws_ctx *c;
	int r;

	if (!region || !key)
		return kms_error_set(err, -EINVAL, "", "Region= and KeyId= must be set");
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->region = strdup(region);
	c->key_id = strdup(key);
	c->key_arn = arn ? strdup(arn) : NULL;
	c->imds_base = imds ? strdup(imds) : NULL;
	if (!c->region || !c->key_id || (arn && !c->key_arn) || (imds && !c->imds_base)) {
		r = -ENOMEM;
		goto fail;
	}
	if (ep) {
		r = kms_url_base(ep, &c->endpoint);
		if (r == -EINVAL)
			r = kms_error_set(err, r, "",
					  "Endpoint=%s is not an https:// URL without a path", ep);
	} else {
		r = aws_kms_endpoint(region, &c->endpoint);
		if (r == -EINVAL)
			r = kms_error_set(err, r, "", "Region=%s is not an AWS region name",
					  region);
	}
	if (r < 0)
		goto fail;
	r = aws_load_creds(c, cfg, err);
	if (r < 0)
		goto fail;
	r = kms_remote_init(&c->remote, c->src == AWS_SRC_IMDS ? &aws_imds_ops : &aws_static_ops, c,
			    cfg, rt, err);
	if (r < 0)
		goto fail;
	*ret = c;
	return 0;
fail:
	aws_close(c);
	return r;
}

/* ---- credentials ----------------------------------------------------------------------------- */

static int imds_send(struct aws_ctx *c, const struct http_request *req, struct http_response *resp,
		     struct kms_error *err)
{
	return kms_remote_send_named(&c->remote, req, "ImdsUnavailable",
				     "EC2 instance metadata service not reachable (is this an EC2 "
				     "instance with an instance role?)",
				     resp, err);
}

/* login(): IMDSv2 session token, role name, role credentials.  Called with the remote's lock held;
 * the credentials stay in @pctx (SigV4 needs three values, not one bearer token). */
static int imds_login(struct kms_remote *rem, void *pctx, struct secret **ret_token,
		      time_t *ret_expires, struct kms_error *err)
{
	struct aws_ctx *c = pctx;
	_cleanup_(aws_creds_done) struct aws_creds creds = {};
	_cleanup_free_ char *role = NULL;
	_cleanup_secret_ struct secret *sk = NULL, *tok = NULL;
	time_t now = time(NULL);
	int r;

	(void)rem;
	*ret_token = NULL;
	if (!c->imds_token || now + AWS_CREDS_MARGIN_S >= c->imds_token_expiry) {
		_cleanup_(http_request_done) struct http_request req = {};
		_cleanup_(http_response_done) struct http_response resp = {};
		_cleanup_free_ char *t = NULL;

		r = aws_imds_build_token(c->imds_base, AWS_IMDS_TOKEN_TTL, &req);
		if (r < 0)
			return kms_error_set(err, r, "", "ImdsEndpoint=%s is not a usable URL",
					     c->imds_base ? c->imds_base : AWS_IMDS_ENDPOINT);
		r = imds_send(c, &req, &resp, err);
		if (r < 0)
			return r;
		r = aws_imds_parse_token(&resp, &t, err);
		if (r < 0)
			return r;
		c->imds_token = secret_free(c->imds_token);
		r = secret_from_cstr(t, strlen(t), &c->imds_token);
		explicit_bzero(t, strlen(t));
		if (r < 0)
			return r;
		c->imds_token_expiry = now + AWS_IMDS_TOKEN_TTL;
	}
	{
		_cleanup_(http_request_done) struct http_request req = {};
		_cleanup_(http_response_done) struct http_response resp = {};

		r = aws_imds_build_role(c->imds_base, (const char *)c->imds_token->buf, &req);
		if (r >= 0)
			r = imds_send(c, &req, &resp, err);
		if (r >= 0)
			r = aws_imds_parse_role(&resp, &role, err);
		if (r < 0)
			goto token_fail;
	}
	{
		_cleanup_(http_request_done) struct http_request req = {};
		_cleanup_(http_response_done) struct http_response resp = {};

		r = aws_imds_build_credentials(c->imds_base, (const char *)c->imds_token->buf, role,
					       &req);
		if (r >= 0)
			r = imds_send(c, &req, &resp, err);
		if (r >= 0)
			r = aws_imds_parse_credentials(&resp, &creds, err);
		if (r < 0)
			goto token_fail;
	}
	r = secret_from(creds.secret_access_key->buf, creds.secret_access_key->len, &sk);
	if (r < 0)
		return r;
	r = secret_from_cstr(creds.session_token, strlen(creds.session_token), &tok);
	if (r < 0)
		return r;
	free(c->akid);
	c->akid = TAKE_PTR(creds.access_key_id);
	secret_free(c->secret_key);
	c->secret_key = TAKE_PTR(sk);
	secret_free(c->session_token);
	c->session_token = TAKE_PTR(tok);
	c->expiration = creds.expiration;
	*ret_expires = creds.expiration;
	return 0;
token_fail:
	/* a metadata session token the service no longer accepts is fetched again next time */
	if (err && err->http_status == 401)
		c->imds_token_expiry = 0;
	return r;
}

/* authorize(): SigV4 with the current credentials (the remote's lock is held). */
static int aws_sign(void *pctx, const struct secret *token, struct http_request *req, time_t now,
		    struct kms_error *err)
{
	struct aws_ctx *c = pctx;
	/* a view on the locked copies, never passed to aws_creds_done() */
	struct aws_creds view = {
	    .access_key_id = c->akid,
	    .secret_access_key = c->secret_key,
	    .session_token = c->session_token ? (char *)c->session_token->buf : NULL,
	    .expiration = c->expiration,
	};
	int r;

	(void)token;
	r = sigv4_sign(req, &view, c->region, "kms", now);
	if (r == -EINVAL)
		return kms_error_set(err, r, "", "cannot sign the KMS request (SigV4)");
	return r;
}

/* ---- requests -------------------------------------------------------------------------------- */

enum aws_op_kind { AWS_OP_ENCRYPT, AWS_OP_DECRYPT, AWS_OP_DESCRIBE, AWS_OP_LIST_ALIASES };

struct aws_op {
	enum aws_op_kind kind;
	const char *key_id;
	const struct aws_kv *ctx;
	size_t n_ctx;
	const struct secret *plain;
	const uint8_t *blob;
	size_t blob_len;
	const char *marker;
};

static int aws_op_build(void *pctx, const void *p, struct http_request *ret)
{
	const struct aws_ctx *c = pctx;
	const struct aws_op *op = p;

	switch (op->kind) {
	case AWS_OP_ENCRYPT:
		return aws_build_encrypt(c->endpoint, op->key_id, op->ctx, op->n_ctx, op->plain,
					 ret);
	case AWS_OP_DECRYPT:
		return aws_build_decrypt(c->endpoint, op->key_id, op->ctx, op->n_ctx, op->blob,
					 op->blob_len, ret);
	case AWS_OP_DESCRIBE:
		return aws_build_describe_key(c->endpoint, op->key_id, ret);
	case AWS_OP_LIST_ALIASES:
		return aws_build_list_aliases(c->endpoint, NULL, 100, op->marker, ret);
	}
	return -EINVAL;
}

/* ThrottlingException comes as HTTP 400: retry what the codec calls transient, and say which of
 * those are the request quota (more attempts: remote.c). */
static int aws_transient(const struct http_response *resp, void *userdata)
{
	static const char *const throttled[] = {
	    "ThrottlingException", "Throttling", "ThrottledException", "LimitExceededException",
	    "RequestLimitExceeded", "TooManyRequestsException",
	};
	struct kms_error e = {};

	(void)userdata;
	if (resp->status == 200 || aws_parse_error(resp, &e) != -EAGAIN)
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(throttled); i++)
		if (strcmp(e.code, throttled[i]) == 0)
			return HTTP_RETRY_THROTTLED;
	return 1;
}

/* KMS refused the (IMDS) credentials themselves: worth one fresh login. */
static bool aws_creds_expired(const struct http_response *resp, void *pctx)
{
	struct kms_error e = {};

	(void)pctx;
	if (resp->status == 200)
		return false;
	(void)aws_parse_error(resp, &e);
	return strcmp(e.code, "ExpiredTokenException") == 0 || strcmp(e.code, "ExpiredToken") == 0;
}

static const struct kms_remote_ops aws_static_ops = {
	.authorize = aws_sign,
	.transient = aws_transient,
};

static const struct kms_remote_ops aws_imds_ops = {
	.login = imds_login,
	.authorize = aws_sign,
	.refused = aws_creds_expired,
	.transient = aws_transient,
	.margin_s = AWS_CREDS_MARGIN_S,
};

/* Build, sign, send (with retries); the reply, whatever its status, goes to the caller's parser. */
static int aws_call(struct aws_ctx *c, const struct aws_op *op, struct http_response *ret,
		    struct kms_error *err)
{
	return kms_remote_call(&c->remote, aws_op_build, op, ret, err);
}

/* ---- key validation -------------------------------------------------------------------------- */

/* alias/NAME -> target key id, by paging through ListAliases. */
static int aws_resolve_alias(struct aws_ctx *c, const char *alias, char **ret,
			     struct kms_error *err)
{
	_cleanup_free_ char *marker = NULL;

	for (unsigned page = 0; page < 1000; page++) {
		_cleanup_(http_response_done) struct http_response resp = {};
		_cleanup_(aws_alias_list_done) struct aws_alias_list l = {};
		struct aws_op op = {.kind = AWS_OP_LIST_ALIASES, .marker = marker};
		int r;

		r = aws_call(c, &op, &resp, err);
		if (r < 0)
			return r;
		r = aws_parse_list_aliases(&resp, &l, err);
		if (r < 0)
			return r;
		for (size_t i = 0; i < l.n_aliases; i++) {
			if (strcmp(l.aliases[i].name, alias) != 0)
				continue;
			if (!l.aliases[i].target_key_id)
				return kms_error_set(err, -EACCES, "NotFoundException",
						     "alias %s in region %s points to no key",
						     alias, c->region);
			*ret = strdup(l.aliases[i].target_key_id);
			return *ret ? 0 : -ENOMEM;
		}
		if (!l.truncated || !l.next_marker)
			break;
		free(marker);
		marker = TAKE_PTR(l.next_marker);
	}
	return kms_error_set(err, -EACCES, "NotFoundException",
			     "alias %s does not exist in region %s (ListAliases)", alias,
			     c->region);
}

static int aws_describe(void *p, struct kms_key_info *ret, struct kms_error *err)
{
	struct aws_ctx *c = p;
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_(aws_key_metadata_done) struct aws_key_metadata m = {};
	_cleanup_free_ char *target = NULL;
	struct aws_op op = {.kind = AWS_OP_DESCRIBE, .key_id = c->key_id};
	int r;

	if (strncmp(c->key_id, "alias/", 6) == 0) {
		r = aws_resolve_alias(c, c->key_id, &target, err);
		if (r < 0)
			return r;
		op.key_id = target;
	}
	r = aws_call(c, &op, &resp, err);
	if (r < 0)
		return r;
	r = aws_parse_describe_key(&resp, &m, err);
	if (r < 0)
		return r;
	if (!m.arn || !m.key_state)
		return kms_error_set(err, -EBADMSG, "", "DescribeKey reply lacks Arn or KeyState");
	if (strcmp(m.key_state, "Enabled") != 0 || !m.enabled)
		return kms_error_set(err, -EACCES, "KeyNotEnabled",
				     "AWS KMS key %s is %s (KeyState), not Enabled", m.arn,
				     m.key_state);
	if (!m.key_spec || strcmp(m.key_spec, "SYMMETRIC_DEFAULT") != 0)
		return kms_error_set(
		    err, -EINVAL, "UnsupportedKeySpec",
		    "AWS KMS key %s has KeySpec %s; kmscrypt needs a symmetric key "
		    "(SYMMETRIC_DEFAULT)",
		    m.arn, m.key_spec ? m.key_spec : "(none)");
	if (!m.key_usage || strcmp(m.key_usage, "ENCRYPT_DECRYPT") != 0)
		return kms_error_set(
		    err, -EINVAL, "UnsupportedKeyUsage",
		    "AWS KMS key %s has KeyUsage %s; kmscrypt needs ENCRYPT_DECRYPT", m.arn,
		    m.key_usage ? m.key_usage : "(none)");
	if (c->key_arn && strcmp(c->key_arn, m.arn) != 0)
		return kms_error_set(
		    err, -EACCES, "KeyMismatch",
		    "these settings reach key %s, but configuration '%s' is for key %s", m.arn,
		    c->remote.name, c->key_arn);
	snprintf(ret->key_id, sizeof(ret->key_id), "%s", m.arn);
	ret->key_version[0] = 0;
	snprintf(ret->state, sizeof(ret->state), "%s", m.key_state);
	snprintf(ret->description, sizeof(ret->description), "AWS KMS %s %s key%s%s%s%s",
		 m.key_spec, m.key_usage, target ? " via " : "", target ? c->key_id : "",
		 m.description && *m.description ? ": " : "",
		 m.description && *m.description ? m.description : "");
	return 0;
}

/* ---- wrap and unwrap ------------------------------------------------------------------------- */

/* The EncryptionContext of a volume keyslot; @slot is the caller's buffer for the number.  The
 * recovery key escrow has "recovery" there (codec/kms_error.h): same keys, so `kms policy`'s
 * condition on kms:EncryptionContextKeys holds for it too. */
static void aws_context(const struct kms_aad *aad, char slot[16], struct aws_kv ret[2])
{
	ret[0] = (struct aws_kv){"kmscrypt:volume", aad->uuid};
	ret[1] = (struct aws_kv){"kmscrypt:keyslot", kms_aad_slot(aad, slot)};
}

static int aws_wrap(void *p, const struct kms_aad *aad, const struct secret *plain,
		    struct kms_wrapped *ret, struct kms_error *err)
{
	struct aws_ctx *c = p;
	_cleanup_(http_response_done) struct http_response resp = {};
	struct aws_ciphertext ct = {};
	struct aws_kv kv[2];
	char slot[16];
	struct kms_wrapped w = {};
	/* once `kms create` recorded the ARN, wrap with it: a re-pointed alias must not move
	 * volumes */
	struct aws_op op = {.kind = AWS_OP_ENCRYPT,
			    .key_id = c->key_arn ? c->key_arn : c->key_id,
			    .ctx = kv,
			    .n_ctx = 2,
			    .plain = plain};
	int r;

	aws_context(aad, slot, kv);
	r = aws_call(c, &op, &resp, err);
	if (r < 0)
		return r;
	r = aws_parse_encrypt(&resp, &ct, err);
	if (r < 0)
		return r;
	w.key_id = strdup(ct.key_id ? ct.key_id : op.key_id);
	w.key_version = strdup("");
	w.alg = strdup(AWS_ALG);
	w.blob = TAKE_PTR(ct.blob);
	w.blob_len = ct.blob_len;
	aws_ciphertext_done(&ct);
	if (!w.key_id || !w.key_version || !w.alg) {
		kms_wrapped_done(&w);
		return -ENOMEM;
	}
	if (c->key_arn && strcmp(w.key_id, c->key_arn) != 0) {
		r = kms_error_set(err, -EACCES, "KeyMismatch",
				  "Encrypt used key %s, but configuration '%s' is for key %s",
				  w.key_id, c->remote.name, c->key_arn);
		kms_wrapped_done(&w);
		return r;
	}
	*ret = w;
	return 0;
}

static int aws_unwrap(void *p, const struct kms_aad *aad, const struct kms_wrapped *w,
		      struct secret **ret, struct kms_error *err)
{
	struct aws_ctx *c = p;
	_cleanup_(http_response_done) struct http_response resp = {};
	struct aws_kv kv[2];
	char slot[16];
	struct aws_op op = {.kind = AWS_OP_DECRYPT,
			    .key_id = w->key_id && *w->key_id ? w->key_id
				      : c->key_arn	      ? c->key_arn
							      : c->key_id,
			    .ctx = kv,
			    .n_ctx = 2,
			    .blob = w->blob,
			    .blob_len = w->blob_len};
	int r;

	if (!w->alg || strcmp(w->alg, AWS_ALG) != 0)
		return kms_error_reject(err, -EBADMSG, "UnsupportedAlgorithm",
				     "token algorithm '%s' is not %s", w->alg ? w->alg : "",
				     AWS_ALG);
	if (c->key_arn && strcmp(op.key_id, c->key_arn) != 0)
		return kms_error_reject(
		    err, -EACCES, "KeyMismatch",
		    "secret was wrapped with key %s, but configuration '%s' is for "
		    "key %s",
		    op.key_id, c->remote.name, c->key_arn);
	aws_context(aad, slot, kv);
	r = aws_call(c, &op, &resp, err);
	if (r < 0)
		return r;
	return aws_parse_decrypt(&resp, ret, NULL, err);
}

/* ---- kms policy ------------------------------------------------------------------------------ */

/* Field @i (0-based, ':'-separated) of an ARN "arn:PARTITION:kms:REGION:ACCOUNT:key/ID" into @buf;
 * @dflt when absent or empty. */
static void arn_field(const char *arn, unsigned i, const char *dflt, char *buf, size_t n)
{
	const char *p = arn;

	for (unsigned k = 0; p && k < i; k++) {
		p = strchr(p, ':');
		if (p)
			p++;
	}
	if (!p || !*p || *p == ':') {
		snprintf(buf, n, "%s", dflt);
		return;
	}
	snprintf(buf, n, "%.*s", (int)strcspn(p, ":"), p);
}

static json_object *aws_statement(const char *sid, const char *principal, const char *const *actions,
				  size_t n_actions, const char *resource)
{
	json_object *st = json_object_new_object(), *pr = json_object_new_object();
	json_object *act = json_object_new_array();

	for (size_t i = 0; i < n_actions; i++)
		json_object_array_add(act, json_object_new_string(actions[i]));
	json_object_object_add(pr, "AWS", json_object_new_string(principal));
	json_object_object_add(st, "Sid", json_object_new_string(sid));
	json_object_object_add(st, "Effect", json_object_new_string("Allow"));
	json_object_object_add(st, "Principal", pr);
	json_object_object_add(st, "Action", act);
	json_object_object_add(st, "Resource", json_object_new_string(resource));
	return st;
}

/* Key policy statements for the principal that runs kmscrypt: Encrypt and Decrypt only with the
 * EncryptionContext kmscrypt writes (exactly the keys kmscrypt:volume and kmscrypt:keyslot;
 * "Null": false so that a request without any context does not pass ForAllValues vacuously),
 * DescribeKey (kms check, kms create), and ListAliases when KeyId= is an alias (resolved on
 * every check; ListAliases is honoured only from an IAM policy, Resource "*").
 * https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html */
static int aws_policy(const struct kms_config *cfg, char **ret, struct kms_error *err)
{
	static const char *const describe[] = {"kms:DescribeKey"};
	static const char *const wrap[] = {"kms:Encrypt", "kms:Decrypt"};
	static const char *const aliases[] = {"kms:ListAliases"};
	const char *region = kms_config_get(cfg, "Region"), *key = kms_config_get(cfg, "KeyId");
	const char *arn = kms_config_get(cfg, "KeyArn");
	char part[32], account[32], principal[160], resource[600];
	json_object *doc, *sts, *st, *cond, *all, *keys, *null;
	const char *text;

	if (!region || !key)
		return kms_error_set(err, -EINVAL, "", "Region= and KeyId= must be set");
	if (!arn && strncmp(key, "arn:", 4) == 0 && strstr(key, ":key/"))
		arn = key;
	if (arn)
		snprintf(resource, sizeof(resource), "%s", arn);
	else
		/* a bare key id (or an alias not yet resolved by 'kms create') */
		snprintf(resource, sizeof(resource), "arn:%s:kms:%s:ACCOUNT_ID:key/%s",
			 strncmp(region, "cn-", 3) == 0	   ? "aws-cn"
			 : strncmp(region, "us-gov-", 7) == 0 ? "aws-us-gov"
							      : "aws",
			 region, strncmp(key, "alias/", 6) == 0 ? "KEY_ID" : key);
	arn_field(resource, 1, "aws", part, sizeof(part));
	arn_field(resource, 4, "ACCOUNT_ID", account, sizeof(account));
	snprintf(principal, sizeof(principal), "arn:%s:iam::%s:role/ROLE_THAT_RUNS_KMSCRYPT", part,
		 account);

	doc = json_object_new_object();
	sts = json_object_new_array();
	json_object_object_add(doc, "Version", json_object_new_string("2012-10-17"));
	json_object_array_add(sts, aws_statement("KmscryptDescribeKey", principal, describe,
						 ARRAY_SIZE(describe), resource));
	st = aws_statement("KmscryptWrapUnwrapBoundToVolume", principal, wrap, ARRAY_SIZE(wrap),
			   resource);
	cond = json_object_new_object();
	all = json_object_new_object();
	keys = json_object_new_array();
	null = json_object_new_object();
	json_object_array_add(keys, json_object_new_string("kmscrypt:volume"));
	json_object_array_add(keys, json_object_new_string("kmscrypt:keyslot"));
	json_object_object_add(all, "kms:EncryptionContextKeys", keys);
	json_object_object_add(cond, "ForAllValues:StringEquals", all);
	json_object_object_add(null, "kms:EncryptionContextKeys", json_object_new_string("false"));
	json_object_object_add(cond, "Null", null);
	json_object_object_add(st, "Condition", cond);
	json_object_array_add(sts, st);
	if (strncmp(key, "alias/", 6) == 0)
		json_object_array_add(sts, aws_statement("KmscryptResolveAlias", principal, aliases,
							 ARRAY_SIZE(aliases), "*"));
	json_object_object_add(doc, "Statement", sts);
	text = json_object_to_json_string_ext(
	    doc, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (asprintf(ret, "%s\n", text ? text : "") < 0) {
		json_object_put(doc);
		return -ENOMEM;
	}
	json_object_put(doc);
	return 0;
}

const struct kms_provider kms_provider_aws = {
	.name = "aws",
	.description = "AWS KMS symmetric key; volume UUID and keyslot go in the EncryptionContext",
	.warning = NULL,
	.options = aws_options,
	.identity_key = "KeyArn",
	.provision = NULL,
	.open = aws_open,
	.close = aws_close,
	.describe = aws_describe,
	.wrap = aws_wrap,
	.unwrap = aws_unwrap,
	.policy = aws_policy,
};
