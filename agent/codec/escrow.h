/* SPDX-License-Identifier: MIT */
/*
 * The recovery key escrow envelope (format --recovery-key-escrow): JSON text <-> struct.  Pure.
 *
 *   {
 *     "type": "kmscrypt-recovery-escrow",
 *     "version": 1,
 *     "uuid": "<LUKS2 UUID of the volume>",
 *     "purpose": "recovery",
 *     "kms": "<KMS configuration name>",
 *     "provider": "<provider of that configuration>",
 *     "key_id": "<master key as the KMS names it>",
 *     "key_version": "<key version, \"\" when the KMS has none>",
 *     "alg": "<provider-defined algorithm>",
 *     "blob": "<base64 of the wrapped recovery key>",
 *     "created": "<RFC 3339 UTC>",
 *     "device": "<device path at format>",          (informative, optional)
 *     "label": "<LUKS2 label>"                      (informative, optional)
 *   }
 *
 * The plaintext of the blob is the recovery key (64 modhex characters in 8 groups), wrapped with
 * the binding KMSCRYPT_AAD_PREFIX "<uuid>:recovery" (codec/kms_error.h): a blob moved to another
 * volume's envelope, or an envelope whose uuid was changed, does not unwrap.  "device", "label"
 * and "created" are not authenticated: they only help the operator find the volume.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define ESCROW_TYPE "kmscrypt-recovery-escrow"
#define ESCROW_VERSION 1
#define ESCROW_FILE_MAX (64 * 1024)

struct escrow {
	int version;
	char *uuid;
	char *purpose; /* "recovery" */
	char *kms;
	char *provider;
	char *key_id;
	char *key_version;
	char *alg;
	char *created; /* "" when absent */
	char *device;  /* NULL when absent */
	char *label;   /* NULL when absent */
	uint8_t *blob;
	size_t blob_len;
};

/* Serialise (@e->created is ignored: written from @now); -EINVAL when a required field is NULL. */
int escrow_format(const struct escrow *e, time_t now, char **ret_json);
/* Parse and validate.  -EBADMSG with a one-line reason in @err when @json is not an escrow
 * envelope of a version this code reads: not JSON, wrong type, unknown version or purpose, a
 * required field missing, not a string or holding a control character, uuid not a UUID, kms not a
 * configuration name, blob not base64 or empty. */
int escrow_parse(const char *json, size_t len, struct escrow *ret, char *err, size_t errlen);
void escrow_done(struct escrow *e);
