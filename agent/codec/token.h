/* SPDX-License-Identifier: MIT */
/* The kmscrypt LUKS2 token (schema in include/kmscrypt/token.h): JSON text <-> struct.  Pure. */
#pragma once
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
	uint8_t *blob;
	size_t blob_len;
};

/* Parse and validate.  -EBADMSG with a one-line reason in @err (may be NULL) when the JSON is not a
 * well-formed kmscrypt token: wrong type, unsupported version, not exactly one keyslot, a required
 * field missing or of the wrong type, blob not base64 or too large. */
int token_parse(const char *json, struct kmscrypt_token *ret, char *err, size_t errlen);
/* Serialise; @created is set from @now when NULL. */
int token_format(const struct kmscrypt_token *t, time_t now, char **ret_json);
void token_done(struct kmscrypt_token *t);
/* RFC 3339 UTC "YYYY-MM-DDTHH:MM:SSZ" of @t into @buf (>= 21 bytes). */
void format_rfc3339(time_t t, char *buf, size_t n);
