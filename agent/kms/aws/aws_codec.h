/* SPDX-License-Identifier: MIT */
/*
 * AWS KMS JSON 1.1 and EC2 IMDSv2 messages (pure: bytes and structs in, bytes and structs out).
 * https://docs.aws.amazon.com/kms/latest/APIReference/
 *
 * Every KMS request is
 *
 *   POST / HTTP/1.1
 *   Host: kms.<region>.amazonaws.com          (or the configured endpoint)
 *   Content-Type: application/x-amz-json-1.1
 *   X-Amz-Target: TrentService.<Action>
 *
 *   {"KeyId":"...", ...}
 *
 * unsigned: the caller signs it with sigv4_sign(req, creds, region, "kms", now) right before sending
 * (credentials may be refreshed between attempts).  Bodies are written as JSON text into locked
 * memory; binary fields are base64.  Replies that carry key material (Decrypt's "Plaintext", IMDS's
 * "SecretAccessKey") are read by json_find_*() straight into locked memory, never by json-c.
 *
 * Error replies: {"__type":"[namespace#]Name","message":"..."} (also "Message"), HTTP 400 for most
 * (ThrottlingException too), 5xx for KMSInternalException/DependencyTimeoutException; the error name
 * may instead come in the x-amzn-ErrorType header ("Name:http://internal.amazon.com/...").  The
 * request id comes in x-amzn-RequestId.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct http_request;
struct http_response;
struct kms_error;
struct secret;
struct aws_creds;

#define AWS_IMDS_ENDPOINT "http://169.254.169.254"
#define AWS_IMDS_TOKEN_TTL_MAX 21600

/* One EncryptionContext pair (string to string, all UTF-8). */
struct aws_kv {
	const char *key;
	const char *value;
};

/* "https://kms.<region>.amazonaws.com" into a heap string; -EINVAL for a malformed region. */
int aws_kms_endpoint(const char *region, char **ret);

/* Encrypt: {"KeyId","Plaintext"(b64),"EncryptionContext"}. @plain at most 4096 bytes. */
int aws_build_encrypt(const char *endpoint, const char *key_id, const struct aws_kv *ctx, size_t n_ctx,
		      const struct secret *plain, struct http_request *ret);
/* Decrypt: {"CiphertextBlob"(b64),"KeyId"(optional but recommended),"EncryptionContext"}. */
int aws_build_decrypt(const char *endpoint, const char *key_id, const struct aws_kv *ctx, size_t n_ctx,
		      const uint8_t *blob, size_t blob_len, struct http_request *ret);
/* GenerateDataKeyWithoutPlaintext: {"KeyId","EncryptionContext","NumberOfBytes"} (1..1024). */
int aws_build_generate_data_key_without_plaintext(const char *endpoint, const char *key_id,
						  const struct aws_kv *ctx, size_t n_ctx, unsigned n_bytes,
						  struct http_request *ret);
/* DescribeKey: {"KeyId"}. */
int aws_build_describe_key(const char *endpoint, const char *key_id, struct http_request *ret);
/* ListAliases: {"KeyId"(optional),"Limit"(1..100, 0: default),"Marker"(optional, from NextMarker)}. */
int aws_build_list_aliases(const char *endpoint, const char *key_id, unsigned limit, const char *marker,
			   struct http_request *ret);
/* ReEncrypt: {"CiphertextBlob","SourceKeyId","SourceEncryptionContext","DestinationKeyId",
 * "DestinationEncryptionContext"}. */
int aws_build_reencrypt(const char *endpoint, const uint8_t *blob, size_t blob_len, const char *src_key_id,
			const struct aws_kv *src_ctx, size_t n_src_ctx, const char *dst_key_id,
			const struct aws_kv *dst_ctx, size_t n_dst_ctx, struct http_request *ret);

/* Encrypt, GenerateDataKeyWithoutPlaintext and ReEncrypt replies. */
struct aws_ciphertext {
	uint8_t *blob; /* CiphertextBlob, decoded */
	size_t blob_len;
	char *key_id;        /* KeyId: the key ARN that encrypted */
	char *source_key_id; /* ReEncrypt only: SourceKeyId; else NULL */
	char *algorithm;     /* EncryptionAlgorithm / DestinationEncryptionAlgorithm; may be NULL */
};
void aws_ciphertext_done(struct aws_ciphertext *c);

struct aws_key_metadata {
	char *key_id;    /* KeyMetadata.KeyId (UUID or mrk-...) */
	char *arn;       /* KeyMetadata.Arn */
	char *key_state; /* Enabled, Disabled, PendingDeletion, PendingImport, Unavailable, Creating, ... */
	char *key_usage; /* ENCRYPT_DECRYPT, SIGN_VERIFY, ... */
	char *key_spec;  /* SYMMETRIC_DEFAULT, RSA_2048, ... */
	char *key_manager;   /* AWS or CUSTOMER */
	char *description;
	bool enabled;
	time_t deletion_date; /* 0 unless PendingDeletion (epoch seconds in the reply) */
};
void aws_key_metadata_done(struct aws_key_metadata *m);

struct aws_alias {
	char *name; /* AliasName, "alias/..." */
	char *arn;
	char *target_key_id; /* NULL for AWS managed aliases not yet used */
};
struct aws_alias_list {
	struct aws_alias *aliases;
	size_t n_aliases;
	char *next_marker; /* NULL when not Truncated */
	bool truncated;
};
void aws_alias_list_done(struct aws_alias_list *l);

/* Replies: status 200 parses the body (-EBADMSG when malformed); any other status goes through
 * aws_parse_error().  *ret is written only on success. */
int aws_parse_encrypt(const struct http_response *resp, struct aws_ciphertext *ret, struct kms_error *err);
int aws_parse_generate_data_key_without_plaintext(const struct http_response *resp,
						  struct aws_ciphertext *ret, struct kms_error *err);
int aws_parse_reencrypt(const struct http_response *resp, struct aws_ciphertext *ret, struct kms_error *err);
/* Plaintext straight into locked memory; @ret_key_id (optional) gets the ARN of the key used. */
int aws_parse_decrypt(const struct http_response *resp, struct secret **ret_plain, char **ret_key_id,
		      struct kms_error *err);
int aws_parse_describe_key(const struct http_response *resp, struct aws_key_metadata *ret,
			   struct kms_error *err);
int aws_parse_list_aliases(const struct http_response *resp, struct aws_alias_list *ret,
			   struct kms_error *err);

/* Any non-2xx reply -> class (-EACCES denied, -EAGAIN transient, -EBADMSG malformed) and *err
 * (code without namespace, one-line message, status, x-amzn-RequestId). */
int aws_parse_error(const struct http_response *resp, struct kms_error *err);
/* The class of an error code alone (namespace prefix allowed): -EACCES, -EAGAIN or 0 (unknown). */
int aws_error_class(const char *code);

/*
 * EC2 Instance Metadata Service v2 (link-local, plain http, flagged HTTP_REQ_METADATA):
 *   PUT /latest/api/token                 X-aws-ec2-metadata-token-ttl-seconds: <ttl>  -> token (text)
 *   GET /latest/meta-data/iam/security-credentials/         X-aws-ec2-metadata-token -> role name(s)
 *   GET /latest/meta-data/iam/security-credentials/<role>   -> {"Code":"Success","AccessKeyId",
 *       "SecretAccessKey","Token","Expiration":"2024-01-01T00:00:00Z",...}
 * @base: NULL for AWS_IMDS_ENDPOINT (tests pass their own).
 */
int aws_imds_build_token(const char *base, unsigned ttl_seconds, struct http_request *ret);
int aws_imds_parse_token(const struct http_response *resp, char **ret_token, struct kms_error *err);
int aws_imds_build_role(const char *base, const char *token, struct http_request *ret);
/* The first role name listed. */
int aws_imds_parse_role(const struct http_response *resp, char **ret_role, struct kms_error *err);
int aws_imds_build_credentials(const char *base, const char *token, const char *role,
			       struct http_request *ret);
int aws_imds_parse_credentials(const struct http_response *resp, struct aws_creds *ret,
			       struct kms_error *err);
