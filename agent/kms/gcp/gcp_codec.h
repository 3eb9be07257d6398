/* SPDX-License-Identifier: MIT */
/*
 * Google Cloud KMS and Google OAuth 2.0 messages (pure: bytes and a clock in, bytes out).
 *
 * Cloud KMS REST v1
 * (https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys):
 *
 *   POST /v1/projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/V]:encrypt
 *        {"plaintext":"<b64>","additionalAuthenticatedData":"<b64>",
 *         "plaintextCrc32c":"<uint32 as decimal string>","additionalAuthenticatedDataCrc32c":"..."}
 *     -> {"name":"projects/.../cryptoKeys/K/cryptoKeyVersions/N","ciphertext":"<b64>",
 *         "ciphertextCrc32c":"...","verifiedPlaintextCrc32c":true,
 *         "verifiedAdditionalAuthenticatedDataCrc32c":true,"protectionLevel":"SOFTWARE"}
 *   POST /v1/projects/P/locations/L/keyRings/R/cryptoKeys/K:decrypt   (a CryptoKey, never a
 * version: "the server will choose the appropriate version", named inside the ciphertext)
 *        {"ciphertext":"<b64>","additionalAuthenticatedData":"<b64>","ciphertextCrc32c":"...",
 *         "additionalAuthenticatedDataCrc32c":"..."}
 *     -> {"plaintext":"<b64>","plaintextCrc32c":"...","usedPrimary":true,"protectionLevel":"..."}
 *   GET  /v1/projects/P/locations/L/keyRings/R/cryptoKeys/K
 *     -> {"name","purpose":"ENCRYPT_DECRYPT","primary":{"name","state":"ENABLED","algorithm",
 *         "protectionLevel"},"rotationPeriod","nextRotationTime","versionTemplate":{...}}
 *
 * The CRC32C fields are int64 in the proto, so JSON carries them as decimal strings (proto3 JSON
 * mapping); a reply with a bare number is accepted too.
 * https://cloud.google.com/kms/docs/data-integrity-guidelines: the client sends the checksums of
 * what it sends, and checks verified*Crc32c (the server saw what was sent) and the checksum of what
 * comes back; a mismatch is -EBADMSG (the request or reply was corrupted: worth a limited retry,
 * never an answer).
 *
 * Errors: {"error":{"code":403,"message":"...","status":"PERMISSION_DENIED","details":[...]}}
 * (https://cloud.google.com/apis/design/errors).
 *
 * OAuth 2.0 for service accounts
 * (https://developers.google.com/identity/protocols/oauth2/service-account): JWT header
 * {"alg":"RS256","typ":"JWT"[,"kid":private_key_id]}, claims {"iss":client_email,
 *   "scope":"https://www.googleapis.com/auth/cloudkms","aud":token_uri,"exp":iat+3600,"iat":now},
 *   signed RSASSA-PKCS1-v1_5 SHA-256, base64url without padding;
 *   POST token_uri  application/x-www-form-urlencoded
 *        grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=<jwt>
 *     -> {"access_token":"ya29...","expires_in":3599,"token_type":"Bearer"}
 *     or 400 {"error":"invalid_grant","error_description":"Invalid JWT Signature."}
 * GCE metadata server (https://cloud.google.com/compute/docs/access/authenticate-workloads):
 *   GET http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token
 *       with "Metadata-Flavor: Google" -> the same token JSON.
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
typedef struct evp_pkey_st EVP_PKEY;

#define GCP_KMS_ENDPOINT "https://cloudkms.googleapis.com"
#define GCP_TOKEN_URI "https://oauth2.googleapis.com/token"
#define GCP_METADATA_ENDPOINT "http://metadata.google.internal"
#define GCP_METADATA_TOKEN_PATH "/computeMetadata/v1/instance/service-accounts/default/token"
#define GCP_SCOPE "https://www.googleapis.com/auth/cloudkms"
#define GCP_JWT_LIFETIME 3600
#define GCP_PLAINTEXT_MAX 65536u

/* CRC32C (Castagnoli, reflected 0x82F63B78, init and final xor 0xFFFFFFFF), RFC 3720 B.4. */
uint32_t gcp_crc32c(const void *data, size_t n);

/* The key a configuration names. */
struct gcp_key_ref {
	const char *project;
	const char *location;
	const char *key_ring;
	const char *key;
	const char *version; /* NULL: the key (its primary version) */
};
/* Resource IDs: project [a-z0-9.-] (lower case), the others
 * [A-Za-z0-9_-]{1,63}, a version a positive decimal. */
bool gcp_id_ok(const char *s, size_t max);
/* "projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/V]" (@with_version: append V
 * when set).  -EINVAL when an ID is malformed. */
int gcp_key_name(const struct gcp_key_ref *k, bool with_version, char **ret);

/* "host[:port]" or "https://host[:port][/]" -> "https://host[:port]" (seed 004's endpoint is a
 * host and optional port).  -EINVAL otherwise. */
int gcp_endpoint_base(const char *s, char **ret);
/* The token URL: a full "https://host[:port]/path" is kept; "host[:port]" becomes
 * "https://host[:port]/token" (seed 004: "hostname and port number for the authentication
 * server").  -EINVAL otherwise. */
int gcp_token_url(const char *s, char **ret);

/* ---- credentials ---- */

/* A service account JSON key file (type "service_account"). */
struct gcp_service_account {
	char *client_email;
	char *token_uri;	    /* NULL when the file has none */
	char *private_key_id;	    /* NULL when the file has none */
	struct secret *private_key; /* PEM text, NUL-terminated, locked */
};
void gcp_service_account_done(struct gcp_service_account *sa);
/* The private key is read with the JSON scanner only (never json-c).  -EBADMSG with @err filled
 * when the document is not a service account key. */
int gcp_parse_service_account(const void *buf, size_t len, struct gcp_service_account *ret,
			      struct kms_error *err);
/* An RSA private key from PEM ("PRIVATE KEY" PKCS#8 or "RSA PRIVATE KEY") or from the bare base64
 * of the PKCS#8 DER (seed 004: "without the prefix and suffix markers"; whitespace allowed).
 * -EBADMSG when it is neither or not RSA. */
int gcp_load_private_key(const void *buf, size_t len, EVP_PKEY **ret);
void gcp_pkey_free(EVP_PKEY *key);

/* The signed assertion header.claims.signature (NUL-terminated, in locked memory). @kid may be
 * NULL. */
int gcp_jwt_assertion(EVP_PKEY *key, const char *kid, const char *email, const char *aud,
		      const char *scope, time_t now, struct secret **ret);
int gcp_build_token_request(const char *token_url, const struct secret *assertion,
			    struct http_request *ret);
int gcp_build_metadata_token(const char *metadata_base, struct http_request *ret);
/* A token reply (token endpoint or metadata server): access_token (header-safe, locked,
 * NUL-terminated) and expires_in (0 when absent).  Errors: -EACCES (invalid_grant, 400/401/403),
 * -EAGAIN (429, 5xx), -EBADMSG (malformed). */
int gcp_parse_token(const struct http_response *resp, bool metadata, struct secret **ret_token,
		    uint32_t *ret_expires_in, struct kms_error *err);

/* ---- Cloud KMS ---- */

/* @name: gcp_key_name() with the version when encrypting with a pinned one. */
int gcp_build_encrypt(const char *base, const char *name, const struct secret *plain,
		      const void *aad, size_t aad_len, struct http_request *ret);
int gcp_build_decrypt(const char *base, const char *key_name, const uint8_t *ct, size_t ct_len,
		      const void *aad, size_t aad_len, struct http_request *ret);
int gcp_build_get_key(const char *base, const char *key_name, struct http_request *ret);

struct gcp_ciphertext {
	uint8_t *ct;
	size_t ct_len;
	char *version_name; /* "projects/.../cryptoKeyVersions/N" */
	char *version;	    /* "N" */
};
void gcp_ciphertext_done(struct gcp_ciphertext *c);
/* Checks verifiedPlaintextCrc32c, verifiedAdditionalAuthenticatedDataCrc32c (when @aad_sent),
 * ciphertextCrc32c, and that name is a version of @key_name. */
int gcp_parse_encrypt(const struct http_response *resp, const char *key_name, bool aad_sent,
		      struct gcp_ciphertext *ret, struct kms_error *err);
/* plaintext straight into locked memory, checked against plaintextCrc32c. */
int gcp_parse_decrypt(const struct http_response *resp, struct secret **ret, struct kms_error *err);

struct gcp_key_info {
	char *name;
	char *purpose;	       /* ENCRYPT_DECRYPT, ... */
	char *primary_name;    /* NULL when the key has no primary */
	char *primary_state;   /* ENABLED, DISABLED, DESTROYED, DESTROY_SCHEDULED, ... */
	char *algorithm;       /* GOOGLE_SYMMETRIC_ENCRYPTION */
	char *protection;      /* SOFTWARE, HSM, EXTERNAL, ... */
	char *rotation_period; /* "7776000s" or NULL */
};
void gcp_key_info_done(struct gcp_key_info *k);
int gcp_parse_key(const struct http_response *resp, struct gcp_key_info *ret,
		  struct kms_error *err);
/* Checks a described key: -EINVAL with a message naming what is wrong (purpose not ENCRYPT_DECRYPT,
 * no primary version, primary not ENABLED). */
int gcp_check_key(const struct gcp_key_info *k, struct kms_error *err);

/* Any non-2xx Cloud KMS reply: -EACCES (UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND,
 * FAILED_PRECONDITION, a ciphertext or AAD that does not decrypt: token_rejected), -EAGAIN
 * (RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED, ABORTED, 5xx, 429), -EBADMSG
 * (INVALID_ARGUMENT such as a checksum mismatch, anything unparsable). */
int gcp_parse_error(const struct http_response *resp, struct kms_error *err);
/* Does this reply refuse the bearer token itself (401 UNAUTHENTICATED)? */
bool gcp_token_refused(const struct http_response *resp);

/* `kms policy`: gcloud commands and an IAM policy binding granting @member (e.g.
 * "serviceAccount:kms@p.iam.gserviceaccount.com") roles/cloudkms.cryptoKeyEncrypterDecrypter and
 * cloudkms.cryptoKeys.get (a custom role) on the key. */
int gcp_policy_text(const struct gcp_key_ref *k, const char *member, char **ret);
