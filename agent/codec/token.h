/* SPDX-License-Identifier: MIT */
/* The kmscrypt LUKS2 token (schema in include/kmscrypt/token.h): JSON text <-> struct.  Pure. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kmscrypt/token.h"

/* One wrap of a version-2 token: the keyslot secret (share 0) or one Shamir share of it (share =
 * x coordinate 1..255, codec/shamir.h) wrapped by one KMS configuration. */
struct kmscrypt_wrap {
	char *kms;
	char *provider;
	char *key_id;
	char *key_version;
	char *alg;
	uint8_t *blob;
	size_t blob_len;
	unsigned share;
};

#define TOKEN_MAX_WRAPS KMSCRYPT_TOKEN_MAX_WRAPS

/* Version 1 and 2 parse into the same struct.  The v1 fields (kms ... blob) are always those of the
 * first wrap (their own copies), so code that knows one KMS per volume keeps working; @wraps has
 * every wrap (one for a v1 token) and @threshold how many must answer (1 for v1 and any-of). */
struct kmscrypt_token {
	int version;
	int keyslot;
	char *kms;
	char *provider;
	char *key_id;
	char *key_version;
	char *alg;
	char *created;
	bool revoked;           /* the header carries the revoked mark ("revoked" object) */
	char *revoked_at;       /* its "at" ("" when absent), valid when @revoked */
	char *revoked_reason;   /* its "reason" ("" when absent), valid when @revoked */
	uint8_t *blob;
	size_t blob_len;
	unsigned threshold;           /* k: wraps that must answer (1 after parsing v1) */
	size_t n_wraps;               /* n: 1..TOKEN_MAX_WRAPS after parsing */
	struct kmscrypt_wrap *wraps;  /* owned; wraps[0] mirrors the v1 fields */
};

/* Parse and validate.  -EBADMSG with a one-line reason in @err (may be NULL) when the JSON is not a
 * well-formed kmscrypt token: wrong type, unsupported version, not exactly one keyslot, a required
 * field missing or of the wrong type, a string field holding a control character, blob not base64 or
 * too large, "revoked" not an object. */
int token_parse(const char *json, struct kmscrypt_token *ret, char *err, size_t errlen);
/* The parsers of kmscrypt's own documents (this token, the escrow envelope of codec/escrow.h) fail
 * through here: the reason, formatted, into @err (may be NULL).  Return: -EBADMSG. */
int token_fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Serialise; @created is set from @now when NULL.  @t->version 2 writes @t->wraps and
 * @t->threshold (-EINVAL when they break the rules of include/kmscrypt/token.h); any other version
 * writes a version-1 token from the v1 fields (so a parsed v1 token is written back as v1). */
int token_format(const struct kmscrypt_token *t, time_t now, char **ret_json);
void token_done(struct kmscrypt_token *t);
/* Rewrite the token JSON @json with the revoked mark set (@at > 0: "revoked": {"at": RFC 3339 of
 * @at, "reason": @reason when not NULL/empty}) or removed (@at == 0); every other field, known or
 * not, is kept as it is.  -EBADMSG when @json is not a JSON object, -EINVAL when @reason is too long
 * or holds a control character. */
int token_json_set_revoked(const char *json, time_t at, const char *reason, char **ret_json);
/* RFC 3339 UTC "YYYY-MM-DDTHH:MM:SSZ" of @t into @buf (>= 21 bytes).  -ERANGE (and "(invalid
 * time)" in @buf) when @t is outside years 0-9999 or cannot be converted. */
int format_rfc3339(time_t t, char *buf, size_t n);
