/* SPDX-License-Identifier: MIT */
/*
 * HashiCorp Vault (and OpenBao) Transit secrets engine and auth messages (pure).
 * https://developer.hashicorp.com/vault/api-docs/secret/transit
 *
 *   POST /v1/<mount>/encrypt/<key>   {"plaintext":"<b64>","associated_data":"<b64>","context":"<b64>",
 *                                     "key_version":N}          -> {"data":{"ciphertext":"vault:vN:...",
 *                                                                            "key_version":N}}
 *   POST /v1/<mount>/decrypt/<key>   {"ciphertext":"vault:vN:...","associated_data","context"}
 *                                                                -> {"data":{"plaintext":"<b64>"}}
 *   POST /v1/<mount>/rewrap/<key>    {"ciphertext","context"}    -> {"data":{"ciphertext","key_version"}}
 *   GET  /v1/<mount>/keys/<key>                                  -> {"data":{"type","latest_version",
 *                                     "min_decryption_version","min_encryption_version","deletion_allowed",
 *                                     "derived","exportable","supports_encryption","supports_decryption",
 *                                     "keys":{"1":<time>,...}}}
 *   POST /v1/auth/<approle>/login    {"role_id","secret_id"}     -> {"auth":{"client_token",
 *                                     "lease_duration","renewable","accessor"}}
 *   GET  /v1/auth/token/lookup-self                              -> {"data":{"ttl","renewable",
 *                                     "expire_time","display_name","id"(the token itself!)}}
 * Headers: X-Vault-Token, X-Vault-Namespace (Enterprise/HCP namespaces), X-Vault-Request: true.
 * Errors: {"errors":["..."]} with 400 (bad request: bad ciphertext, failed authentication of the
 * ciphertext, key version too old), 403 (permission denied, bad token), 404, 429 (rate limit), 500,
 * 503 (sealed or standby), 412 (eventual consistency on performance standbys).
 *
 * associated_data is accepted only by AEAD key types (aes128-gcm96, aes256-gcm96, chacha20-poly1305);
 * context only by keys created with derived=true (where it is required).  The caller decides from
 * the key read (vault_parse_key) which to send.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_request;
struct http_response;
struct kms_error;
struct secret;

struct vault_target {
	const char *addr;      /* "https://vault.example:8200" */
	const char *ns;        /* X-Vault-Namespace; NULL when none */
	const char *token;     /* X-Vault-Token; NULL for login */
	const char *mount;     /* transit mount path, e.g. "transit" (may be nested: "team/transit") */
};

/* Optional binding data, raw bytes (base64-encoded by the builders). */
struct vault_binding {
	const uint8_t *aad; /* associated_data: AEAD key types only */
	size_t aad_len;
	const uint8_t *context; /* derived keys only */
	size_t context_len;
};

int vault_build_encrypt(const struct vault_target *t, const char *key, const struct secret *plain,
			const struct vault_binding *b, unsigned key_version, struct http_request *ret);
int vault_build_decrypt(const struct vault_target *t, const char *key, const char *ciphertext,
			const struct vault_binding *b, struct http_request *ret);
/* -EOPNOTSUPP when @b has associated_data: Vault's rewrap does not accept it (hashicorp/vault#29532),
 * so AAD-bound ciphertexts move to a new key version by decrypt + encrypt. */
int vault_build_rewrap(const struct vault_target *t, const char *key, const char *ciphertext,
		       const struct vault_binding *b, struct http_request *ret);
int vault_build_key_read(const struct vault_target *t, const char *key, struct http_request *ret);
/* @approle_mount: NULL for "approle". */
int vault_build_approle_login(const struct vault_target *t, const char *approle_mount, const char *role_id,
			      const struct secret *secret_id, struct http_request *ret);
int vault_build_token_lookup_self(const struct vault_target *t, struct http_request *ret);

struct vault_ciphertext {
	char *ciphertext;     /* "vault:v<N>:<b64>" */
	unsigned key_version; /* N */
};
void vault_ciphertext_done(struct vault_ciphertext *c);

struct vault_key_info {
	char *name;
	char *type; /* aes256-gcm96, chacha20-poly1305, rsa-4096, ... */
	uint32_t latest_version, min_decryption_version, min_encryption_version;
	bool deletion_allowed, derived, exportable, supports_encryption, supports_decryption;
	bool aead; /* type accepts associated_data */
};
void vault_key_info_done(struct vault_key_info *k);

struct vault_auth {
	char *client_token; /* wiped on done */
	char *accessor;
	uint32_t lease_duration; /* seconds; 0: does not expire */
	bool renewable;
};
void vault_auth_done(struct vault_auth *a);

struct vault_token_info {
	uint32_t ttl; /* seconds left; 0: no expiry (root tokens) */
	bool renewable;
	char *display_name;
};
void vault_token_info_done(struct vault_token_info *i);

/* "vault:v<N>:..." -> N (>= 1).  -EBADMSG when not in that form. */
int vault_ciphertext_version(const char *ciphertext, unsigned *ret);

/* Replies: 2xx parses the body, anything else goes through vault_parse_error(). */
int vault_parse_encrypt(const struct http_response *resp, struct vault_ciphertext *ret,
			struct kms_error *err);
int vault_parse_rewrap(const struct http_response *resp, struct vault_ciphertext *ret,
		       struct kms_error *err);
/* data.plaintext straight into locked memory (never json-c). */
int vault_parse_decrypt(const struct http_response *resp, struct secret **ret_plain, struct kms_error *err);
int vault_parse_key(const struct http_response *resp, struct vault_key_info *ret, struct kms_error *err);
int vault_parse_approle_login(const struct http_response *resp, struct vault_auth *ret,
			      struct kms_error *err);
int vault_parse_token_lookup_self(const struct http_response *resp, struct vault_token_info *ret,
				  struct kms_error *err);
/* -EACCES (403, 404, permission denied, ciphertext that does not authenticate, version too old),
 * -EAGAIN (412, 429, 5xx incl. sealed), -EBADMSG (malformed ciphertext, unexpected reply). */
int vault_parse_error(const struct http_response *resp, struct kms_error *err);
