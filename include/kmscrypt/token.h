/* SPDX-License-Identifier: MIT */
/*
 * The kmscrypt LUKS2 token.
 *
 * A volume bound to kmscrypt carries one LUKS2 token of type "kmscrypt" (see `cryptsetup luksDump`):
 *
 *   {
 *     "type":        "kmscrypt",
 *     "keyslots":    ["1"],                  exactly one keyslot, opened by the unwrapped secret
 *     "version":     1,                      token schema version
 *     "kms":         "lab",                  name of the KMS configuration (/etc/kmscrypt/kms/<kms>.conf)
 *     "provider":    "local",                provider that wrapped the secret
 *     "key_id":      "...",                  key identity at the KMS (ARN, key name, KMIP id, fingerprint)
 *     "key_version": "...",                  key version used to wrap, "" when the KMS has none
 *     "alg":         "A256GCM",              wrapping algorithm, provider-defined name
 *     "blob":        "<base64>",             wrapped secret; provider-defined bytes (may carry an IV)
 *     "created":     "2026-11-30T16:00:00Z"  when the secret was wrapped (UTC, RFC 3339)
 *     "revoked":     {"at": "2026-12-04T14:00:00Z", "reason": "incident 42"}
 *                                            optional: present only while the volume is revoked
 *   }
 *
 * The revoked mark.  `kmscrypt revoke` writes "revoked" into the token (and the same mark into the
 * state dir) before it wipes the key; `kmscrypt restore` removes both, only after the KMS has
 * unwrapped the secret again.  While the mark is present `kmscrypt unlock`, `unlock --all`,
 * `check` and the token plugin (`cryptsetup open --token-only`, crypttab) refuse the volume, on any
 * host, with or without /var/lib/kmscrypt.  It is an administrative pause that root on the host can
 * undo (by editing the header); revoking access at the KMS is the control no host can undo.  "at"
 * and "reason" are informational; any "revoked" value other than null counts as revoked, and a
 * "revoked" that is not an object makes the token invalid (fail closed).
 *
 * No string field may hold a control character (U+0000-U+001F, U+007F): such a token is invalid.
 *
 * The wrapped secret is bound to the volume: every provider passes the associated data
 * KMSCRYPT_AAD_PREFIX "<luks-uuid>:<keyslot>" (or the provider's equivalent, e.g. an AWS
 * EncryptionContext {"kmscrypt:volume": uuid, "kmscrypt:keyslot": n}) so a token copied onto another
 * volume does not unwrap.  Unknown fields are preserved by readers of a newer schema and rejected by
 * none; a missing required field makes the token invalid.
 */
#pragma once

#define KMSCRYPT_TOKEN_TYPE "kmscrypt"
#define KMSCRYPT_TOKEN_VERSION 1
#define KMSCRYPT_AAD_PREFIX "kmscrypt:v1:"
#define KMSCRYPT_SECRET_BYTES 32 /* the per-volume secret that opens the kmscrypt keyslot */
