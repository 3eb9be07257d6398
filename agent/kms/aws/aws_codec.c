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
#include "codec/sigv4.h"
#include "kms/aws/aws_codec.h"
#include "codec/kms_error.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define AWS_JSON_CT "application/x-amz-json-1.1"
#define AWS_PLAINTEXT_MAX 4096 /* Encrypt accepts up to 4096 bytes */

static void json_put_ptr(struct json_object **o)
{
	json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_put_ptr)

int aws_kms_endpoint(const char *region, char **ret)
{
	if (!region || !*region || strlen(region) > 32)
		return -EINVAL;
	for (const char *p = region; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
			return -EINVAL;
	if (asprintf(ret, "https://kms.%s.amazonaws.com", region) < 0)
		return -ENOMEM;
	return 0;
}

static size_t ctx_size(const struct aws_kv *ctx, size_t n)
{
	size_t s = 0;

	for (size_t i = 0; i < n; i++)
		s += 6 * (strlen(ctx[i].key) + strlen(ctx[i].value)) + 8;
	return s;
}

static int ctx_check(const struct aws_kv *ctx, size_t n)
{
	if (n > 0 && !ctx)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!ctx[i].key || !ctx[i].value || !*ctx[i].key)
			return -EINVAL;
	return 0;
}

static void put_ctx(struct json_writer *w, const char *name, const struct aws_kv *ctx, size_t n)
{
	if (n == 0)
		return;
	json_writer_object_begin(w, name);
	for (size_t i = 0; i < n; i++)
		json_writer_string(w, ctx[i].key, ctx[i].value);
	json_writer_object_end(w);
}

/* Finish @w and wrap it into "POST / ... X-Amz-Target: TrentService.<action>". */
static int kms_request(const char *endpoint, const char *action, struct json_writer *w,
		       struct http_request *ret)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_free_ char *target = NULL;
	struct secret *body = NULL;
	int r;

	json_writer_object_end(w);
	r = json_writer_finish(w, &body);
	if (r < 0)
		return r;
	r = http_request_init(&req, "POST", endpoint);
	if (r >= 0 && strcmp(req.scheme, "https") != 0)
		r = -EINVAL; /* KMS calls are always https */
	if (r < 0) {
		secret_free(body);
		return r;
	}
	http_request_take_body(&req, body);
	if (asprintf(&target, "TrentService.%s", action) < 0)
		return -ENOMEM;
	r = http_request_header_add(&req, "Content-Type", AWS_JSON_CT);
	if (r >= 0)
		r = http_request_header_add(&req, "X-Amz-Target", target);
	if (r < 0)
		return r;
	*ret = req;
	memset(&req, 0, sizeof(req));
	return 0;
}

static bool str_ok(const char *s)
{
	return s && *s && strlen(s) <= 2048;
}

int aws_build_encrypt(const char *endpoint, const char *key_id, const struct aws_kv *ctx, size_t n_ctx,
		      const struct secret *plain, struct http_request *ret)
{
	struct json_writer w;
	int r;

	if (!endpoint || !str_ok(key_id) || !plain || plain->len == 0 || plain->len > AWS_PLAINTEXT_MAX ||
	    ctx_check(ctx, n_ctx) < 0)
		return -EINVAL;
	r = json_writer_init(&w, 1024 + 6 * strlen(key_id) + ctx_size(ctx, n_ctx) + plain->len / 3 * 4 + 8);
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_string(&w, "KeyId", key_id);
	json_writer_base64(&w, "Plaintext", plain->buf, plain->len);
	put_ctx(&w, "EncryptionContext", ctx, n_ctx);
	return kms_request(endpoint, "Encrypt", &w, ret);
}

int aws_build_decrypt(const char *endpoint, const char *key_id, const struct aws_kv *ctx, size_t n_ctx,
		      const uint8_t *blob, size_t blob_len, struct http_request *ret)
{
	struct json_writer w;
	int r;

	if (!endpoint || (key_id && !str_ok(key_id)) || !blob || blob_len == 0 || blob_len > 6144 ||
	    ctx_check(ctx, n_ctx) < 0)
		return -EINVAL;
	r = json_writer_init(&w, 1024 + (key_id ? 6 * strlen(key_id) : 0) + ctx_size(ctx, n_ctx) +
					 blob_len / 3 * 4 + 8);
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_base64(&w, "CiphertextBlob", blob, blob_len);
	if (key_id)
		json_writer_string(&w, "KeyId", key_id);
	put_ctx(&w, "EncryptionContext", ctx, n_ctx);
	return kms_request(endpoint, "Decrypt", &w, ret);
}

int aws_build_generate_data_key_without_plaintext(const char *endpoint, const char *key_id,
						  const struct aws_kv *ctx, size_t n_ctx, unsigned n_bytes,
						  struct http_request *ret)
{
	struct json_writer w;
	int r;

	if (!endpoint || !str_ok(key_id) || n_bytes < 1 || n_bytes > 1024 || ctx_check(ctx, n_ctx) < 0)
		return -EINVAL;
	r = json_writer_init(&w, 1024 + 6 * strlen(key_id) + ctx_size(ctx, n_ctx));
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_string(&w, "KeyId", key_id);
	put_ctx(&w, "EncryptionContext", ctx, n_ctx);
	json_writer_uint(&w, "NumberOfBytes", n_bytes);
	return kms_request(endpoint, "GenerateDataKeyWithoutPlaintext", &w, ret);
}

int aws_build_describe_key(const char *endpoint, const char *key_id, struct http_request *ret)
{
	struct json_writer w;
	int r;

	if (!endpoint || !str_ok(key_id))
		return -EINVAL;
	r = json_writer_init(&w, 1024 + 6 * strlen(key_id));
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_string(&w, "KeyId", key_id);
	return kms_request(endpoint, "DescribeKey", &w, ret);
}

int aws_build_list_aliases(const char *endpoint, const char *key_id, unsigned limit, const char *marker,
			   struct http_request *ret)
{
	struct json_writer w;
	int r;

	if (!endpoint || (key_id && !str_ok(key_id)) || limit > 100 || (marker && !*marker) ||
	    (marker && strlen(marker) > 4096))
		return -EINVAL;
	r = json_writer_init(&w, 1024 + (key_id ? 6 * strlen(key_id) : 0) + (marker ? 6 * strlen(marker) : 0));
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	if (key_id)
		json_writer_string(&w, "KeyId", key_id);
	if (limit)
		json_writer_uint(&w, "Limit", limit);
	if (marker)
		json_writer_string(&w, "Marker", marker);
	return kms_request(endpoint, "ListAliases", &w, ret);
}

int aws_build_reencrypt(const char *endpoint, const uint8_t *blob, size_t blob_len, const char *src_key_id,
			const struct aws_kv *src_ctx, size_t n_src_ctx, const char *dst_key_id,
			const struct aws_kv *dst_ctx, size_t n_dst_ctx, struct http_request *ret)
{
	struct json_writer w;
	int r;

	if (!endpoint || !blob || blob_len == 0 || blob_len > 6144 || (src_key_id && !str_ok(src_key_id)) ||
	    !str_ok(dst_key_id) || ctx_check(src_ctx, n_src_ctx) < 0 || ctx_check(dst_ctx, n_dst_ctx) < 0)
		return -EINVAL;
	r = json_writer_init(&w, 1024 + blob_len / 3 * 4 + (src_key_id ? 6 * strlen(src_key_id) : 0) +
					 6 * strlen(dst_key_id) + ctx_size(src_ctx, n_src_ctx) +
					 ctx_size(dst_ctx, n_dst_ctx));
	if (r < 0)
		return r;
	json_writer_object_begin(&w, NULL);
	json_writer_base64(&w, "CiphertextBlob", blob, blob_len);
	if (src_key_id)
		json_writer_string(&w, "SourceKeyId", src_key_id);
	put_ctx(&w, "SourceEncryptionContext", src_ctx, n_src_ctx);
	json_writer_string(&w, "DestinationKeyId", dst_key_id);
	put_ctx(&w, "DestinationEncryptionContext", dst_ctx, n_dst_ctx);
	return kms_request(endpoint, "ReEncrypt", &w, ret);
}

/* ---- replies ---------------------------------------------------------------------------------- */

void aws_ciphertext_done(struct aws_ciphertext *c)
{
	if (!c)
		return;
	free(c->blob);
	free(c->key_id);
	free(c->source_key_id);
	free(c->algorithm);
	memset(c, 0, sizeof(*c));
}

void aws_key_metadata_done(struct aws_key_metadata *m)
{
	if (!m)
		return;
	free(m->key_id);
	free(m->arn);
	free(m->key_state);
	free(m->key_usage);
	free(m->key_spec);
	free(m->key_manager);
	free(m->description);
	memset(m, 0, sizeof(*m));
}

void aws_alias_list_done(struct aws_alias_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n_aliases; i++) {
		free(l->aliases[i].name);
		free(l->aliases[i].arn);
		free(l->aliases[i].target_key_id);
	}
	free(l->aliases);
	free(l->next_marker);
	memset(l, 0, sizeof(*l));
}

static const char *request_id(const struct http_response *resp)
{
	const char *id = http_response_header_get(resp, "x-amzn-RequestId");

	return id ? id : http_response_header_get(resp, "x-amz-request-id");
}

static bool ok_status(const struct http_response *resp)
{
	return resp->status >= 200 && resp->status <= 299;
}

static int malformed(const struct http_response *resp, struct kms_error *err, const char *what)
{
	return kms_error_fill(err, -EBADMSG, resp->status, "", request_id(resp),
			      "malformed AWS KMS reply: %s", what);
}

/* Parse a 2xx body that carries no key material. */
static int parse_body(const struct http_response *resp, struct json_object **ret, struct kms_error *err)
{
	if (!resp->body || json_parse_buf(resp->body->buf, resp->body->len, ret) < 0 ||
	    !json_object_is_type(*ret, json_type_object)) {
		if (resp->body && *ret) {
			json_object_put(*ret);
			*ret = NULL;
		}
		return malformed(resp, err, "not a JSON object");
	}
	return 0;
}

static int dup_opt(const char *s, char **ret)
{
	*ret = NULL;
	if (s && !(*ret = strdup(s)))
		return -ENOMEM;
	return 0;
}

static int parse_ciphertext(const struct http_response *resp, bool reencrypt, struct aws_ciphertext *ret,
			    struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	_cleanup_(aws_ciphertext_done) struct aws_ciphertext c = {};
	const char *blob, *key_id;
	int r;

	if (!ok_status(resp))
		return aws_parse_error(resp, err);
	r = parse_body(resp, &o, err);
	if (r < 0)
		return r;
	blob = json_get_str(o, "CiphertextBlob");
	key_id = json_get_str(o, "KeyId");
	if (!blob || !key_id)
		return malformed(resp, err, "no CiphertextBlob or KeyId");
	r = base64_decode(blob, strlen(blob), 0, &c.blob, &c.blob_len);
	if (r == -EBADMSG || (r >= 0 && c.blob_len == 0))
		return malformed(resp, err, "CiphertextBlob is not base64");
	if (r < 0)
		return r;
	if (dup_opt(key_id, &c.key_id) < 0 ||
	    dup_opt(json_get_str(o, reencrypt ? "DestinationEncryptionAlgorithm" : "EncryptionAlgorithm"),
		    &c.algorithm) < 0 ||
	    (reencrypt && dup_opt(json_get_str(o, "SourceKeyId"), &c.source_key_id) < 0))
		return -ENOMEM;
	*ret = c;
	memset(&c, 0, sizeof(c));
	return 0;
}

int aws_parse_encrypt(const struct http_response *resp, struct aws_ciphertext *ret, struct kms_error *err)
{
	return parse_ciphertext(resp, false, ret, err);
}

int aws_parse_generate_data_key_without_plaintext(const struct http_response *resp,
						  struct aws_ciphertext *ret, struct kms_error *err)
{
	return parse_ciphertext(resp, false, ret, err);
}

int aws_parse_reencrypt(const struct http_response *resp, struct aws_ciphertext *ret, struct kms_error *err)
{
	return parse_ciphertext(resp, true, ret, err);
}

int aws_parse_decrypt(const struct http_response *resp, struct secret **ret_plain, char **ret_key_id,
		      struct kms_error *err)
{
	static const char *const plaintext_path[] = { "Plaintext", NULL };
	static const char *const key_id_path[] = { "KeyId", NULL };
	_cleanup_secret_ struct secret *plain = NULL;
	_cleanup_free_ char *key_id = NULL;
	int r;

	if (!ok_status(resp))
		return aws_parse_error(resp, err);
	if (!resp->body)
		return malformed(resp, err, "empty body");
	/* The scanner, not json-c: the plaintext goes from the locked body into locked memory. */
	r = json_find_b64_secret(resp->body->buf, resp->body->len, plaintext_path, &plain);
	if (r == -ENOENT)
		return malformed(resp, err, "no Plaintext");
	if (r == -EBADMSG)
		return malformed(resp, err, "not JSON or Plaintext is not base64");
	if (r < 0)
		return r;
	if (plain->len == 0)
		return malformed(resp, err, "empty Plaintext");
	r = json_find_string(resp->body->buf, resp->body->len, key_id_path, &key_id);
	if (r == -ENOENT || r == -EBADMSG)
		return malformed(resp, err, "no KeyId");
	if (r < 0)
		return r;
	*ret_plain = TAKE_PTR(plain);
	if (ret_key_id)
		*ret_key_id = TAKE_PTR(key_id);
	return 0;
}

int aws_parse_describe_key(const struct http_response *resp, struct aws_key_metadata *ret,
			   struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	_cleanup_(aws_key_metadata_done) struct aws_key_metadata m = {};
	struct json_object *md, *v;
	bool enabled;
	int r;

	if (!ok_status(resp))
		return aws_parse_error(resp, err);
	r = parse_body(resp, &o, err);
	if (r < 0)
		return r;
	md = json_get_obj(o, "KeyMetadata");
	if (!md || !json_get_str(md, "KeyId") || json_get_bool(md, "Enabled", &enabled) < 0)
		return malformed(resp, err, "no KeyMetadata.KeyId or Enabled");
	m.enabled = enabled;
	if (dup_opt(json_get_str(md, "KeyId"), &m.key_id) < 0 || dup_opt(json_get_str(md, "Arn"), &m.arn) < 0 ||
	    dup_opt(json_get_str(md, "KeyState"), &m.key_state) < 0 ||
	    dup_opt(json_get_str(md, "KeyUsage"), &m.key_usage) < 0 ||
	    dup_opt(json_get_str(md, "KeySpec") ?: json_get_str(md, "CustomerMasterKeySpec"), &m.key_spec) < 0 ||
	    dup_opt(json_get_str(md, "KeyManager"), &m.key_manager) < 0 ||
	    dup_opt(json_get_str(md, "Description"), &m.description) < 0)
		return -ENOMEM;
	/* timestamps are epoch seconds as JSON numbers, possibly fractional */
	if (json_object_object_get_ex(md, "DeletionDate", &v) &&
	    (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int))) {
		double d = json_object_get_double(v);
		if (d > 0 && d < 253402300800.0)
			m.deletion_date = (time_t)d;
	}
	*ret = m;
	memset(&m, 0, sizeof(m));
	return 0;
}

int aws_parse_list_aliases(const struct http_response *resp, struct aws_alias_list *ret,
			   struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	_cleanup_(aws_alias_list_done) struct aws_alias_list l = {};
	struct json_object *arr;
	size_t n;
	bool truncated = false;
	int r;

	if (!ok_status(resp))
		return aws_parse_error(resp, err);
	r = parse_body(resp, &o, err);
	if (r < 0)
		return r;
	if (!json_object_object_get_ex(o, "Aliases", &arr) || !json_object_is_type(arr, json_type_array))
		return malformed(resp, err, "no Aliases array");
	r = json_get_bool(o, "Truncated", &truncated);
	if (r == -EBADMSG)
		return malformed(resp, err, "Truncated is not a boolean");
	l.truncated = truncated;
	if (truncated) {
		const char *marker = json_get_str(o, "NextMarker");
		if (!marker || !*marker)
			return malformed(resp, err, "Truncated without NextMarker");
		if (dup_opt(marker, &l.next_marker) < 0)
			return -ENOMEM;
	}
	n = json_object_array_length(arr);
	l.aliases = calloc(n ? n : 1, sizeof(*l.aliases));
	if (!l.aliases)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct json_object *a = json_object_array_get_idx(arr, i);
		struct aws_alias *al = &l.aliases[l.n_aliases];

		if (!json_get_str(a, "AliasName"))
			return malformed(resp, err, "alias without AliasName");
		l.n_aliases++;
		if (dup_opt(json_get_str(a, "AliasName"), &al->name) < 0 ||
		    dup_opt(json_get_str(a, "AliasArn"), &al->arn) < 0 ||
		    dup_opt(json_get_str(a, "TargetKeyId"), &al->target_key_id) < 0)
			return -ENOMEM;
	}
	*ret = l;
	memset(&l, 0, sizeof(l));
	return 0;
}

/* ---- errors ----------------------------------------------------------------------------------- */

/* https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html and the per-action Errors
 * sections: answers (never retried) vs faults (retried with backoff). */
static const char *const denied_codes[] = {
	"AccessDeniedException", "DisabledException", "KMSInvalidStateException", "NotFoundException",
	"InvalidCiphertextException", "IncorrectKeyException", "InvalidKeyUsageException",
	"InvalidGrantTokenException", "InvalidGrantIdException", "InvalidArnException",
	"InvalidSignatureException", "UnrecognizedClientException", "IncompleteSignature",
	"IncompleteSignatureException", "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId",
	"MissingAuthenticationToken", "MissingAuthenticationTokenException", "SignatureDoesNotMatch",
	"AccessDenied", "NotAuthorized", "OptInRequired", "RequestExpired",
	"ValidationException", "SerializationException", "InvalidAliasNameException",
	"UnsupportedOperationException", "DryRunOperationException",
};
static const char *const transient_codes[] = {
	"ThrottlingException", "Throttling", "ThrottledException", "LimitExceededException",
	"RequestLimitExceeded", "TooManyRequestsException", "KMSInternalException",
	"DependencyTimeoutException", "KeyUnavailableException", "InternalFailure", "InternalError",
	"ServiceUnavailable", "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
};

/* "com.amazonaws.kms#AccessDeniedException" -> "AccessDeniedException"; and for the header form
 * "AccessDeniedException:http://internal.amazon.com/coral/..." the part before ':'. */
static void error_name(const char *raw, char *buf, size_t n)
{
	const char *p = raw, *h = strrchr(raw, '#');
	size_t k;

	if (h)
		p = h + 1;
	k = strcspn(p, ":");
	if (k >= n)
		k = n - 1;
	memcpy(buf, p, k);
	buf[k] = 0;
}

int aws_error_class(const char *code)
{
	char name[96];

	if (!code || !*code)
		return 0;
	error_name(code, name, sizeof(name));
	for (size_t i = 0; i < ARRAY_SIZE(denied_codes); i++)
		if (strcmp(name, denied_codes[i]) == 0)
			return -EACCES;
	for (size_t i = 0; i < ARRAY_SIZE(transient_codes); i++)
		if (strcmp(name, transient_codes[i]) == 0)
			return -EAGAIN;
	return 0;
}

int aws_parse_error(const struct http_response *resp, struct kms_error *err)
{
	_cleanup_json_ struct json_object *o = NULL;
	const char *type = NULL, *msg = NULL, *hdr;
	char name[96] = "";
	int cls;

	if (resp->body && resp->body->len > 0 &&
	    json_parse_buf(resp->body->buf, resp->body->len, &o) >= 0 &&
	    json_object_is_type(o, json_type_object)) {
		type = json_get_str(o, "__type");
		msg = json_get_str(o, "message") ?: json_get_str(o, "Message");
	}
	hdr = http_response_header_get(resp, "x-amzn-ErrorType");
	if (!type || !*type)
		type = hdr;
	if (type)
		error_name(type, name, sizeof(name));
	cls = aws_error_class(name);
	if (cls == 0) {
		if (http_status_transient(resp->status))
			cls = -EAGAIN;
		else if (*name && resp->status >= 400 && resp->status <= 499)
			cls = -EACCES; /* an answer we do not know by name: still an answer */
		else if (resp->status == 401 || resp->status == 403)
			cls = -EACCES;
		else
			cls = -EBADMSG;
	}
	if (*name) {
		kms_error_fill(err, cls, resp->status, name, request_id(resp), "AWS KMS: %s%s%.300s",
			       name, msg ? ": " : "", msg ? msg : "");
		/* the blob or its EncryptionContext (volume, keyslot) is not what the key sealed:
		 * a token modified or copied from another volume */
		if (err && (strcmp(name, "InvalidCiphertextException") == 0 ||
			    strcmp(name, "IncorrectKeyException") == 0))
			err->token_rejected = true;
		return cls;
	}
	return kms_error_fill(err, cls, resp->status, "", request_id(resp),
			      "AWS KMS: HTTP %d without an error code", resp->status);
}

/* ---- IMDSv2 ----------------------------------------------------------------------------------- */

static int imds_request(const char *base, const char *method, const char *path, const char *token,
			struct http_request *ret)
{
	_cleanup_(http_request_done) struct http_request req = {};
	int r;

	r = http_request_init2(&req, method, base ? base : AWS_IMDS_ENDPOINT, path, NULL);
	if (r < 0)
		return r;
	req.flags |= HTTP_REQ_METADATA;
	if (token) {
		r = http_request_header_add(&req, "X-aws-ec2-metadata-token", token);
		if (r < 0)
			return r;
	}
	*ret = req;
	memset(&req, 0, sizeof(req));
	return 0;
}

static bool imds_token_ok(const char *t)
{
	if (!t || !*t || strlen(t) > 4096)
		return false;
	for (; *t; t++)
		if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f)
			return false;
	return true;
}

/* IAM role names: [\w+=,.@-]{1,64} */
static bool role_ok(const char *s, size_t n)
{
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '+' || c == '=' || c == ',' || c == '.' || c == '@' || c == '-'))
			return false;
	}
	return true;
}

static int imds_error(const struct http_response *resp, struct kms_error *err, const char *what)
{
	int cls;

	if (http_status_transient(resp->status))
		cls = -EAGAIN;
	else if (resp->status == 401 || resp->status == 403 || resp->status == 404 || resp->status == 405)
		cls = -EACCES; /* IMDS disabled, v1-only, hop limit, no instance profile */
	else
		cls = -EBADMSG;
	return kms_error_fill(err, cls, resp->status, "", NULL, "EC2 instance metadata: %s: HTTP %d", what,
			      resp->status);
}

int aws_imds_build_token(const char *base, unsigned ttl_seconds, struct http_request *ret)
{
	_cleanup_(http_request_done) struct http_request req = {};
	char ttl[16];
	int r;

	if (ttl_seconds < 1 || ttl_seconds > AWS_IMDS_TOKEN_TTL_MAX)
		return -EINVAL;
	snprintf(ttl, sizeof(ttl), "%u", ttl_seconds);
	r = imds_request(base, "PUT", "/latest/api/token", NULL, &req);
	if (r >= 0)
		r = http_request_header_add(&req, "X-aws-ec2-metadata-token-ttl-seconds", ttl);
	if (r < 0)
		return r;
	*ret = req;
	memset(&req, 0, sizeof(req));
	return 0;
}

int aws_imds_parse_token(const struct http_response *resp, char **ret_token, struct kms_error *err)
{
	char *t;

	if (resp->status != 200)
		return imds_error(resp, err, "session token");
	if (!resp->body || resp->body->len == 0 || resp->body->len > 4096)
		return kms_error_fill(err, -EBADMSG, resp->status, "", NULL,
				      "EC2 instance metadata: malformed session token");
	t = strndup((const char *)resp->body->buf, resp->body->len);
	if (!t)
		return -ENOMEM;
	if (strlen(t) != resp->body->len || !imds_token_ok(t)) {
		explicit_bzero(t, strlen(t));
		free(t);
		return kms_error_fill(err, -EBADMSG, resp->status, "", NULL,
				      "EC2 instance metadata: malformed session token");
	}
	*ret_token = t;
	return 0;
}

int aws_imds_build_role(const char *base, const char *token, struct http_request *ret)
{
	if (!imds_token_ok(token))
		return -EINVAL;
	return imds_request(base, "GET", "/latest/meta-data/iam/security-credentials/", token, ret);
}

int aws_imds_parse_role(const struct http_response *resp, char **ret_role, struct kms_error *err)
{
	const char *p, *end;
	size_t n;
	char *role;

	if (resp->status == 404)
		return kms_error_fill(err, -EACCES, 404, "", NULL,
				      "EC2 instance metadata: no IAM instance profile is attached");
	if (resp->status != 200)
		return imds_error(resp, err, "role name");
	if (!resp->body || resp->body->len == 0)
		return kms_error_fill(err, -EBADMSG, 200, "", NULL, "EC2 instance metadata: no role listed");
	p = (const char *)resp->body->buf;
	end = p + resp->body->len;
	n = 0;
	while (p + n < end && p[n] != '\n' && p[n] != '\r')
		n++;
	if (!role_ok(p, n))
		return kms_error_fill(err, -EBADMSG, 200, "", NULL,
				      "EC2 instance metadata: malformed role name");
	role = strndup(p, n);
	if (!role)
		return -ENOMEM;
	*ret_role = role;
	return 0;
}

int aws_imds_build_credentials(const char *base, const char *token, const char *role,
			       struct http_request *ret)
{
	_cleanup_free_ char *path = NULL;

	if (!imds_token_ok(token) || !role || !role_ok(role, strlen(role)))
		return -EINVAL;
	if (asprintf(&path, "/latest/meta-data/iam/security-credentials/%s", role) < 0)
		return -ENOMEM;
	return imds_request(base, "GET", path, token, ret);
}

int aws_imds_parse_credentials(const struct http_response *resp, struct aws_creds *ret,
			       struct kms_error *err)
{
	static const char *const p_code[] = { "Code", NULL };
	static const char *const p_akid[] = { "AccessKeyId", NULL };
	static const char *const p_secret[] = { "SecretAccessKey", NULL };
	static const char *const p_token[] = { "Token", NULL };
	static const char *const p_exp[] = { "Expiration", NULL };
	_cleanup_(aws_creds_done) struct aws_creds c = {};
	_cleanup_free_ char *code = NULL, *exp = NULL;
	const uint8_t *buf;
	size_t len;
	int r;

	if (resp->status != 200)
		return imds_error(resp, err, "role credentials");
	if (!resp->body)
		return kms_error_fill(err, -EBADMSG, 200, "", NULL, "EC2 instance metadata: empty credentials");
	buf = resp->body->buf;
	len = resp->body->len;
	/* This document holds a secret key: the scanner only, never json-c. */
	r = json_find_string(buf, len, p_code, &code);
	if (r == -EBADMSG)
		return kms_error_fill(err, r, 200, "", NULL, "EC2 instance metadata: malformed credentials");
	if (r >= 0 && strcmp(code, "Success") != 0)
		return kms_error_fill(err, -EAGAIN, 200, code, NULL,
				      "EC2 instance metadata: credentials not available (%.64s)", code);
	if (r < 0 && r != -ENOENT)
		return r;
	r = json_find_string(buf, len, p_akid, &c.access_key_id);
	if (r >= 0)
		r = json_find_string_secret(buf, len, p_secret, &c.secret_access_key);
	if (r >= 0)
		r = json_find_string(buf, len, p_token, &c.session_token);
	if (r >= 0)
		r = json_find_string(buf, len, p_exp, &exp);
	if (r == -ENOENT || r == -EBADMSG)
		return kms_error_fill(err, -EBADMSG, 200, "", NULL,
				      "EC2 instance metadata: credentials lack AccessKeyId, SecretAccessKey, "
				      "Token or Expiration");
	if (r < 0)
		return r;
	if (!*c.access_key_id || c.secret_access_key->len == 0 || !*c.session_token ||
	    http_parse_rfc3339(exp, &c.expiration) < 0)
		return kms_error_fill(err, -EBADMSG, 200, "", NULL,
				      "EC2 instance metadata: malformed credentials");
	*ret = c;
	memset(&c, 0, sizeof(c));
	return 0;
}
