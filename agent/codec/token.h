/* SPDX-License-Identifier: MIT */
/* The kmscrypt LUKS2 token (schema in include/kmscrypt/token.h): JSON text <-> struct.  Pure. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

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
};

/* Parse and validate.  -EBADMSG with a one-line reason in @err (may be NULL) when the JSON is not a
 * well-formed kmscrypt token: wrong type, unsupported version, not exactly one keyslot, a required
 * field missing or of the wrong type, a string field holding a control character, blob not base64 or
 * too large, "revoked" not an object. */
int token_parse(const char *json, struct kmscrypt_token *ret, char *err, size_t errlen);
/* Serialise; @created is set from @now when NULL. */
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
