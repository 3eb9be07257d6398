/* SPDX-License-Identifier: MIT */
/*
 * Thales CipherTrust Manager REST API messages (pure).
 * https://thalesdocs.com/ctp/cm/latest/admin/cm_admin/authentication/tokens/index.html and the
 * API playground of CipherTrust Manager (/playground_v2/api): /v1/auth, /v1/vault, /v1/crypto.
 *
 *   POST /api/v1/auth/tokens   {"grant_type":"password","username","password"[,"domain"]}
 *                              {"grant_type":"refresh_token","refresh_token"}
 *                              -> {"jwt":"<JWT>","duration":300,"token_type":"Bearer",
 *                                  "client_id","refresh_token_id","refresh_token"(password grant)}
 *                              The JWT is short-lived (5 min by default) and goes out as
 *                              "Authorization: Bearer <jwt>".
 *   GET  /api/v1/vault/keys2?name=<n>&limit=<l>
 *                              -> {"skip","limit","total","resources":[<key>...]}
 *   POST /api/v1/vault/keys2   {"name","algorithm":"aes","size":256,"usageMask":12} -> <key>
 *        <key> = {"id","name","state":"Active"|"Pre-Active"|"Deactivated"|"Destroyed"|
 *                 "Compromised"|...,"usageMask":N,"algorithm":"AES","size":256,"version":0,...}
 *        usageMask is the KMIP Cryptographic Usage Mask: Sign 1, Verify 2, Encrypt 4, Decrypt 8,
 *        WrapKey 16, UnwrapKey 32, ...  A new key starts at version 0 and rotation adds versions.
 *   POST /api/v1/crypto/encrypt {"id":<name>,"type":"name","plaintext":<b64>,"mode":"gcm",
 *                                "aad":<b64>}
 *                              -> {"id","version","mode","iv","tag","ciphertext"[,"aad",...]}
 *   POST /api/v1/crypto/decrypt every member of the encrypt reply, "aad" (ours, recomputed)
 *                              -> {"plaintext":<b64>}
 * Errors: {"code":N,"codeDesc":"NCERR...: text","message":"..."} with 400, 401 (JWT expired or
 * invalid, bad credentials), 403, 404, 409, 422, 429, 5xx.
 *
 * Where the documentation is silent the parsers take the tolerant reading: "duration" and
 * "version" may be integers or strings of digits, "duration" may be fractional (seconds), a key
 * list may name several keys (the exact name with the highest version wins).
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
struct json_object;

#define CT_USAGE_ENCRYPT 4u
#define CT_USAGE_DECRYPT 8u
#define CT_JWT_DEFAULT_S 300 /* documented lifetime of a JWT when the reply has no duration */

/* @base: "https://host[:port]" (kms_url_base()).  @domain: NULL for the user's default domain. */
int ct_build_login_password(const char *base, const char *username, const struct secret *password,
			    const char *domain, struct http_request *ret);
int ct_build_login_refresh(const char *base, const struct secret *refresh_token,
			   struct http_request *ret);
/* -> the JWT (NUL-terminated, locked) and when it stops working: @now + duration. */
int ct_parse_login(const struct http_response *resp, time_t now, struct secret **ret_jwt,
		   time_t *ret_expires, struct kms_error *err);

int ct_build_key_find(const char *base, const char *name, struct http_request *ret);
/* @algorithm: "aes" (the only one GCM wrapping can use); @size: 128, 192 or 256. */
int ct_build_key_create(const char *base, const char *name, const char *algorithm, unsigned size,
			struct http_request *ret);

struct ct_key {
	char *id;
	char *name;
	char *state;	 /* "Active", ... */
	char *algorithm; /* "AES", ... */
	uint32_t size;
	uint32_t usage_mask;
	bool has_usage_mask;
	char version[24]; /* "" when the key object has none */
};
void ct_key_done(struct ct_key *k);
/* The key named exactly @name in a list reply; *ret_found false when there is none. */
int ct_parse_key_list(const struct http_response *resp, const char *name, struct ct_key *ret,
		      bool *ret_found, struct kms_error *err);
/* One key object (the create reply). */
int ct_parse_key(const struct http_response *resp, struct ct_key *ret, struct kms_error *err);

/* The key rules of seed 000: Active, usage mask with Encrypt and Decrypt, an AES key.  0, or
 * -EACCES (state, usage) / -EINVAL (algorithm) with a one-line message naming the key and the fix.
 */
int ct_key_check(const struct ct_key *k, struct kms_error *err);

int ct_build_encrypt(const char *base, const char *key_name, const struct secret *plain,
		     const void *aad, size_t aad_len, struct http_request *ret);
/* The encrypt reply, validated (ciphertext, iv, tag base64; version an integer or digits) and
 * re-serialized as compact JSON: the blob kept in the volume's token.  @ret_version: the key
 * version as text. */
int ct_parse_encrypt(const struct http_response *resp, char **ret_blob, size_t *ret_blob_len,
		     char *ret_version, size_t version_size, struct kms_error *err);
/* Check a stored blob: a JSON object as ct_parse_encrypt() wrote it.  @ret_version as above. */
int ct_blob_check(const void *blob, size_t len, char *ret_version, size_t version_size);
/* Decrypt with every member of @blob sent back, "aad" replaced by @aad; a blob without "id"
 * names the key by @key_name ("type":"name"). */
int ct_build_decrypt(const char *base, const char *key_name, const void *blob, size_t blob_len,
		     const void *aad, size_t aad_len, struct http_request *ret);
/* "plaintext" straight into locked memory (the scanner, never json-c). */
int ct_parse_decrypt(const struct http_response *resp, struct secret **ret_plain,
		     struct kms_error *err);

enum ct_op { CT_OP_LOGIN, CT_OP_KEYS, CT_OP_ENCRYPT, CT_OP_DECRYPT };
/* Any non-2xx reply: -EAGAIN (408, 429, 5xx), -EACCES (401, 403, 404, 409, other 4xx: answers),
 * -EBADMSG (anything else).  A 400/409/422 to a decrypt sets token_rejected (the blob does not
 * open for this volume: tag, aad or a changed field).  The message is "CipherTrust: HTTP N:
 * <codeDesc>: <message>"; err->code is the NCERR... name when there is one. */
int ct_parse_error(const struct http_response *resp, enum ct_op op, struct kms_error *err);

/* A JSON version value (integer >= 0, or a string of 1-18 digits) as text.  0 or -EBADMSG. */
int ct_version_text(struct json_object *v, char *buf, size_t n);
