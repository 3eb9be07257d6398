/* SPDX-License-Identifier: MIT */
/*
 * The local provider's wrap format (pure; the caller supplies the nonce).
 *
 *   blob = nonce (12 bytes) || AES-256-GCM ciphertext (len of plaintext) || tag (16 bytes)
 *
 * with the associated data KMSCRYPT_AAD_PREFIX "<uuid>:<keyslot>", so that the blob opens only on the
 * volume and keyslot it was made for.  The key identity is "sha256:" + the first 16 bytes (hex) of
 * SHA-256("kmscrypt-local-key-id" || key): it names the key without revealing it.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

struct secret;

#define LOCAL_KEY_BYTES 32
#define LOCAL_NONCE_BYTES 12
#define LOCAL_TAG_BYTES 16
#define LOCAL_ALG "A256GCM"

/* Parse a key file's contents: exactly 32 raw bytes, or base64 text of 32 bytes (one optional
 * trailing newline).  -EBADMSG otherwise. */
int local_key_parse(const struct secret *file, struct secret **ret_key);
/* "sha256:<32 hex digits>" into @buf (>= 40 bytes). */
int local_key_id(const struct secret *key, char *buf, size_t n);
int local_seal(const struct secret *key, const uint8_t nonce[LOCAL_NONCE_BYTES], const char *aad,
	       const struct secret *plain, uint8_t **ret_blob, size_t *ret_len);
/* -EACCES when the tag does not verify (wrong key, wrong volume, tampered), -EBADMSG when malformed. */
int local_open(const struct secret *key, const char *aad, const uint8_t *blob, size_t len,
	       struct secret **ret_plain);
/* local_open() of a volume's wrapped secret (AAD from @aad), its refusal described in @err as a
 * rejected token (codec/kms_error.h): the local provider and KMIP's local-wrap mode. */
struct kms_aad;
struct kms_error;
int local_open_volume(const struct secret *key, const struct kms_aad *aad, const uint8_t *blob,
		      size_t len, struct secret **ret_plain, struct kms_error *err);
