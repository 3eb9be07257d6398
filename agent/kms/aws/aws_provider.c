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
 * standard AWS_* environment variables.  IMDS credentials are fetched on first use, refreshed
 * shortly before they expire and once more when KMS answers ExpiredTokenException.  One HTTP client
 * per configuration (its own CA file), shared by all volumes of a run: one TLS connection per
 * endpoint for sequential use.  Thread-safe: unwrap runs from several threads; the credentials are
 * guarded by a mutex that is held only to refresh them and to sign.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/http_msg.h"
#include "codec/sigv4.h"
#include "kms/aws/aws_codec.h"
#include "kms/endpoint_down.h"
#include "kms/provider.h"
#include "transport/http.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define AWS_ALG "aws-kms:SYMMETRIC_DEFAULT"
#define AWS_DEFAULT_DEADLINE_MS 30000
#define AWS_CREDS_MARGIN_S 60 /* refresh IMDS credentials this long before they expire */
#define AWS_IMDS_TOKEN_TTL 21600

enum aws_source {
	AWS_SRC_STATIC,
	AWS_SRC_IMDS,
	AWS_SRC_ENV,
};

struct aws_ctx {
	char *name; /* configuration name, for messages */
	char *region;
	char *endpoint;	 /* "https://host[:port]", no trailing '/' */
	char *key_id;	 /* as configured: key id, ARN or alias/... */
	char *key_arn;	 /* recorded by `kms create`; NULL before */
	char *imds_base; /* NULL: AWS_IMDS_ENDPOINT */
	enum aws_source src;
	unsigned deadline_ms;
	struct http_client *http;

	pthread_mutex_t lock; /* guards everything below */
	char *akid;
	struct secret *secret_key;
	struct secret *session_token; /* NUL-terminated text; NULL for long-term keys */
	time_t expiration;	      /* 0: does not expire */
	unsigned gen;		      /* bumped on every credential change */
	struct secret *imds_token;    /* NUL-terminated */
	time_t imds_token_expiry;
	/* Fail fast: once an endpoint (KMS or IMDS) could not be reached within the deadline, the
	 * other volumes of this run get that answer at once instead of each waiting out its own
	 * deadline in the queue for the one connection (a boot with 50 volumes and a black-holed
	 * endpoint would otherwise take 50 deadlines). */
	struct kms_down down; /* guarded by lock */
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
	http_client_free(c->http);
	pthread_mutex_destroy(&c->lock);
	free(c->name);
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

/* "https://host[:port][/]" -> "https://host[:port]"; anything else is a configuration error. */
static int endpoint_normalize(const char *url, char **ret)
{
	const char *host;
	size_t n = strlen(url);

	if (strncmp(url, "https://", 8) != 0)
		return -EINVAL;
	while (n > 8 && url[n - 1] == '/')
		n--;
	host = url + 8;
	if (n == 8 || memchr(host, '/', n - 8) || memchr(host, '?', n - 8) ||
	    memchr(host, '@', n - 8))
		return -EINVAL;
	*ret = strndup(url, n);
	return *ret ? 0 : -ENOMEM;
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
	pthread_mutex_init(&c->lock, NULL);
	c->deadline_ms =
	    rt && rt->timeout_ms > 0 ? (unsigned)rt->timeout_ms : AWS_DEFAULT_DEADLINE_MS;
	c->name = strdup(cfg->name ? cfg->name : "");
	c->region = strdup(region);
	c->key_id = strdup(key);
	c->key_arn = arn ? strdup(arn) : NULL;
	c->imds_base = imds ? strdup(imds) : NULL;
	if (!c->name || !c->region || !c->key_id || (arn && !c->key_arn) ||
	    (imds && !c->imds_base)) {
		r = -ENOMEM;
		goto fail;
	}
	if (ep) {
		r = endpoint_normalize(ep, &c->endpoint);
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
	r = kms_http_client_new(kms_config_get(cfg, "CaFile"), c->deadline_ms, &c->http, err);
	if (r < 0)
		goto fail;
	*ret = c;
	return 0;
fail:
	aws_close(c);
	return r;
}

/* Was an endpoint found unreachable a moment ago in this run?  Then repeat that answer. */
static int aws_down_check(struct aws_ctx *c, struct kms_error *err)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = kms_down_check(&c->down, err);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* Remember a network failure (not an HTTP answer) that outlasted the retries.  Lock held or not
 * according to @locked. */
static int aws_down_note(struct aws_ctx *c, int r, const struct kms_error *err, bool locked)
{
	if (!locked)
		pthread_mutex_lock(&c->lock);
	r = kms_down_note(&c->down, r, err);
	if (!locked)
		pthread_mutex_unlock(&c->lock);
	return r;
}

/* ---- credentials ----------------------------------------------------------------------------- */

static int imds_send(struct aws_ctx *c, const struct http_request *req, struct http_response *resp,
		     struct kms_error *err)
{
	struct http_retry policy = {.deadline_ms = c->deadline_ms};
	int r;

	r = http_send_retry(c->http, req, &policy, resp, err);
	if (r == -EAGAIN || r == -ETIMEDOUT) {
		char msg[sizeof(err->message)];

		snprintf(msg, sizeof(msg), "%.300s", err ? err->message : "");
		r = kms_error_set(err, r, "ImdsUnavailable",
				  "EC2 instance metadata service not reachable (is this an EC2 "
				  "instance with an instance role?): %s",
				  msg);
		return aws_down_note(c, r, err, true);
	}
	return r;
}

/* IMDSv2: session token, role name, role credentials.  Called with c->lock held. */
static int imds_refresh(struct aws_ctx *c, struct kms_error *err)
{
	_cleanup_(aws_creds_done) struct aws_creds creds = {};
	_cleanup_free_ char *role = NULL;
	_cleanup_secret_ struct secret *sk = NULL, *tok = NULL;
	time_t now = time(NULL);
	int r;

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
	c->gen++;
	return 0;
token_fail:
	/* a metadata session token the service no longer accepts is fetched again next time */
	if (err && err->http_status == 401)
		c->imds_token_expiry = 0;
	return r;
}

/* Sign @req with current credentials (refreshing IMDS credentials first when due). */
static int aws_sign(struct aws_ctx *c, struct http_request *req, unsigned *ret_gen,
		    struct kms_error *err)
{
	struct aws_creds view = {};
	time_t now = time(NULL);
	int r = 0;

	pthread_mutex_lock(&c->lock);
	if (c->src == AWS_SRC_IMDS &&
	    (!c->secret_key || (c->expiration && now + AWS_CREDS_MARGIN_S >= c->expiration)))
		r = imds_refresh(c, err);
	if (r >= 0) {
		/* a view on the locked copies, never passed to aws_creds_done() */
		view.access_key_id = c->akid;
		view.secret_access_key = c->secret_key;
		view.session_token = c->session_token ? (char *)c->session_token->buf : NULL;
		view.expiration = c->expiration;
		r = sigv4_sign(req, &view, c->region, "kms", now);
		*ret_gen = c->gen;
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* KMS said the credentials of generation @gen expired: make the next aws_sign() fetch new ones. */
static void aws_creds_invalidate(struct aws_ctx *c, unsigned gen)
{
	pthread_mutex_lock(&c->lock);
	if (c->gen == gen)
		c->expiration = 1;
	pthread_mutex_unlock(&c->lock);
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

static int aws_op_build(const struct aws_ctx *c, const struct aws_op *op, struct http_request *ret)
{
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

/* ThrottlingException comes as HTTP 400: retry what the codec calls transient. */
static int aws_transient(const struct http_response *resp, void *userdata)
{
	return resp->status != 200 && aws_parse_error(resp, NULL) == -EAGAIN;
}

static bool aws_creds_expired(const struct http_response *resp)
{
	struct kms_error e = {};

	if (resp->status == 200)
		return false;
	(void)aws_parse_error(resp, &e);
	return strcmp(e.code, "ExpiredTokenException") == 0 || strcmp(e.code, "ExpiredToken") == 0;
}

/* Build, sign, send (with retries); the reply, whatever its status, goes to the caller's parser.
 * Expired IMDS credentials are replaced once. */
static int aws_call(struct aws_ctx *c, const struct aws_op *op, struct http_response *ret,
		    struct kms_error *err)
{
	struct http_retry policy = {.transient = aws_transient, .deadline_ms = c->deadline_ms};

	for (unsigned attempt = 0;; attempt++) {
		_cleanup_(http_request_done) struct http_request req = {};
		struct http_response resp = {};
		unsigned gen = 0;
		int r;

		r = aws_down_check(c, err);
		if (r < 0)
			return r;
		r = aws_op_build(c, op, &req);
		if (r == -EINVAL)
			return kms_error_set(err, r, "", "cannot build a KMS request for key '%s'",
					     op->key_id ? op->key_id : "");
		if (r < 0)
			return r;
		r = aws_sign(c, &req, &gen, err);
		if (r < 0)
			return r;
		r = http_send_retry(c->http, &req, &policy, &resp, err);
		if (r < 0)
			return aws_down_note(c, r, err, false);
		if (attempt == 0 && c->src == AWS_SRC_IMDS && aws_creds_expired(&resp)) {
			http_response_done(&resp);
			aws_creds_invalidate(c, gen);
			continue;
		}
		*ret = resp;
		return 0;
	}
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
		    c->name, c->key_arn);
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

/* The EncryptionContext of a volume keyslot; @slot is the caller's buffer for the number. */
static void aws_context(const struct kms_aad *aad, char slot[16], struct aws_kv ret[2])
{
	snprintf(slot, 16, "%d", aad->keyslot);
	ret[0] = (struct aws_kv){"kmscrypt:volume", aad->uuid};
	ret[1] = (struct aws_kv){"kmscrypt:keyslot", slot};
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
				  w.key_id, c->name, c->key_arn);
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
		    op.key_id, c->name, c->key_arn);
	aws_context(aad, slot, kv);
	r = aws_call(c, &op, &resp, err);
	if (r < 0)
		return r;
	return aws_parse_decrypt(&resp, ret, NULL, err);
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
};
