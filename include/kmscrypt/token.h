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
 * Version 2: several KMSs (`kmscrypt bind|format DEVICE --kms A --kms B [--threshold K]`).  The
 * top-level fields are those of version 1 less the five of one wrap and the blob, plus:
 *
 *   {
 *     "type": "kmscrypt", "keyslots": ["1"],
 *     "version":   2,
 *     "threshold": 2,                        k: how many wraps must be unwrapped to open the keyslot
 *     "wraps": [                             n (1..16) wraps, each by a different KMS configuration
 *       {"kms": "a", "provider": "local", "key_id": "...", "key_version": "", "alg": "A256GCM",
 *        "blob": "<base64>", "share": 1},
 *       ...
 *     ],
 *     "created": "...", "revoked": {...}     as in version 1
 *   }
 *
 *   - any-of: "threshold": 1; every wrap holds the whole 32-byte secret and "share" is 0; any one
 *     KMS opens the volume.
 *   - k of n: 2 <= k <= n; the secret is split with Shamir's scheme over GF(2^8) (the AES field,
 *     x^8 + x^4 + x^3 + x + 1; agent/codec/shamir.h), each byte the constant term of its own random
 *     polynomial of degree k-1; wrap i holds the 32-byte share at x = "share" (1..255, distinct).
 *     Any k shares give the secret by Lagrange interpolation at 0; fewer give nothing about it.
 *   Invalid: threshold outside 1..n, n outside 1..16, a share repeated or 0 with k > 1, a share
 *   other than 0 with k = 1, two wraps naming the same KMS configuration.  Each wrap is bound to
 *   the volume with the same associated data as a version-1 wrap (below).  kmscrypt writes
 *   version 1 for a single KMS and reads both.
 *
 *   The fields of a wrap are those of a version-1 token and mean the same: "kms" the configuration
 *   name, "provider" the provider that wrapped, "key_id" and "key_version" the key and version at
 *   that KMS ("" when it has none), "alg" the provider's wrapping algorithm, "blob" base64 of the
 *   provider's bytes, "share" the x coordinate of the share it holds (0: the whole secret).  Every
 *   field is required; a version-2 token has no top-level "kms", "provider", "key_id",
 *   "key_version", "alg" or "blob" (readers take the first wrap's where one KMS is shown, e.g.
 *   the audit's and luksDump's first "kms" line).  Wraps are kept in the order they were given
 *   (`--kms A --kms B ...`), and share i + 1 is wrap i's when the binding is written.
 *   Unlocking asks every KMS concurrently and goes on as soon as k answered (the others are not
 *   waited for); a wrap's secret or share is exactly 32 bytes, else that KMS counts as failed.
 *   Only whole shares of one token are ever combined: shares of two tokens (a rotation window,
 *   below) are never mixed, because each token's shares come from its own random polynomials.
 *
 * Rotation: the two-token window.  A rotation never edits a token in place; it adds the new one
 * and removes the old one only after the new one has proven itself (unwrapped through its KMSs and
 * opened its keyslot), so the header always holds at least one kmscrypt token that opens the
 * volume:
 *
 *   rotate-master   one keyslot, two tokens for a moment: the old and the new "kmscrypt" token
 *                   both list the same keyslot ("keyslots": ["1"]) and unwrap to the same secret
 *                   (version 2: split afresh, so their shares differ and do not mix).
 *   rotate-secret   a new keyslot with its own token next to the old keyslot and its token, plus
 *                   a marker token assigned to no keyslot, written first and removed last:
 *                     {"type": "kmscrypt-pending", "keyslots": [], "op": "rotate-secret",
 *                      "old_keyslot": "1", "new_keyslot": "2"}
 *                   ("op": "bind" with "old_keyslot": "-1" for bind).  The next kmscrypt run that
 *                   changes the header finishes (the new keyslot's token proves itself: the old
 *                   keyslot's tokens, the old keyslot, then the marker go) or undoes (the new
 *                   keyslot and its token go) what a killed run left.
 *
 * Readers must therefore accept several "kmscrypt" tokens on one volume: unlock, `check` and the
 * token plugin try the first and fall back to the others (libcryptsetup itself tries every token
 * of a type), a token that does not open its keyslot is passed over, and a "kmscrypt-pending"
 * token opens nothing (readers other than kmscrypt ignore it; `cryptsetup token remove` of it by
 * hand is safe only when no kmscrypt command is running).  The version of every token in the window is the
 * version of the binding (a version-1 binding rotated with --kms stays version 1; a version-2 one
 * stays version 2 with the same threshold; --replace OLD=NEW changes one wrap's KMS).
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
#define KMSCRYPT_TOKEN_VERSION 1       /* one KMS */
#define KMSCRYPT_TOKEN_VERSION_MULTI 2 /* several KMSs: any-of or k of n */
#define KMSCRYPT_TOKEN_MAX_WRAPS 16
#define KMSCRYPT_AAD_PREFIX "kmscrypt:v1:"
#define KMSCRYPT_SECRET_BYTES 32 /* the per-volume secret that opens the kmscrypt keyslot */
