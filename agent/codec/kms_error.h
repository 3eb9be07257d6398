/* SPDX-License-Identifier: MIT */
/*
 * The KMS types that codecs and transports share with providers: the classified error of one KMS
 * operation, what a wrapped secret is bound to, and the wrapped secret itself.  Implemented in
 * codec/kms_common.c (pure).  kms/provider.h documents the error classes (return values) and builds
 * the provider vtable on these.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kms_error {
	int http_status;      /* 0 when not an HTTP reply */
	char code[96];        /* vendor error code, e.g. "AccessDeniedException"; "" when none */
	char message[384];    /* one line, no secrets, no bodies */
	char request_id[96];  /* vendor request id when the reply had one */
	bool token_rejected;  /* the wrapped secret was refused: token modified or copied (see above) */
};

/* Fill @e (NULL-safe) with a code and a printf-style message; returns @r for `return kms_error_set(..)`.
 * Leaves http_status, request_id and token_rejected as they are. */
int kms_error_set(struct kms_error *e, int r, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* kms_error_set() for a refusal of the wrapped secret itself: also sets token_rejected. */
int kms_error_reject(struct kms_error *e, int r, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Make code, message and request id one printable line each (they may hold a server's text): tabs
 * and line breaks become spaces, other control characters and malformed UTF-8 are escaped
 * (util/escape.h).  kms_error_set() and kms_error_fill() call it; so must code that writes the
 * fields itself. */
void kms_error_sanitize(struct kms_error *e);

/* What a wrapped secret is bound to.  The AAD bytes are KMSCRYPT_AAD_PREFIX "<uuid>:<keyslot>", or
 * KMSCRYPT_AAD_PREFIX "<uuid>:<purpose>" for a secret that opens no keyslot through a token (the
 * recovery key escrow, purpose KMS_AAD_PURPOSE_RECOVERY): a purpose is letters, never a number, so
 * neither wrap opens as the other.  Providers with a structured context put the purpose where
 * the keyslot number goes (AWS: "kmscrypt:keyslot": "recovery"), so least-privilege policies on
 * the context keys stay as they are. */
struct kms_aad {
	const char *uuid;    /* LUKS2 UUID, lower case with dashes */
	int keyslot;
	const char *purpose; /* NULL: a keyslot's secret; else [a-z]+, replaces the keyslot */
};
#define KMS_AAD_PURPOSE_RECOVERY "recovery"
/* Writes the AAD string into @buf (NUL-terminated); returns its length or -ENOBUFS. */
int kms_aad_format(const struct kms_aad *aad, char *buf, size_t n);
/* The keyslot part of the binding for messages and contexts: "<keyslot>" or the purpose. */
const char *kms_aad_slot(const struct kms_aad *aad, char buf[16]);

/* A wrapped secret as stored in the LUKS2 token (include/kmscrypt/token.h). */
struct kms_wrapped {
	char *key_id;      /* key identity used (ARN, key name, KMIP unique id, fingerprint) */
	char *key_version; /* "" when the KMS has no versions */
	char *alg;         /* provider-defined algorithm name */
	uint8_t *blob;     /* provider-defined bytes (ciphertext, may carry IV/nonce/tag) */
	size_t blob_len;
};
void kms_wrapped_done(struct kms_wrapped *w);
