/* SPDX-License-Identifier: MIT */
/*
 * KMS providers sit behind one small vtable.  A provider wraps and unwraps the per-volume secret with a
 * customer master key held by a KMS.  Every error is classified by its return value:
 *
 *   0           success
 *   -EACCES     denied: permanent answer of the KMS (revoked, disabled, not found, bad credentials,
 *               wrong key, ciphertext that does not authenticate).  Never retried.
 *   -EAGAIN     unavailable: transient (network, timeout, throttled, 5xx, sealed).  Retried by the caller.
 *   -ETIMEDOUT  unavailable: the overall deadline passed.
 *   -EBADMSG    invalid: malformed input or reply (bad JSON, bad base64, wrong length), or a token
 *               whose algorithm the configuration does not allow.
 *   -EINVAL     bad configuration value (the message says which setting).
 *   -ENOKEY     a local file the provider needs (key file) cannot be read for lack of permission:
 *               not an answer of the KMS.  The message names the file.
 *   -ENOMEM     out of memory.
 *
 * and described in *ret_err (vendor code, one-line message, HTTP status and request id) for the log line.
 * When the refusal is about the wrapped secret itself (it does not authenticate for this volume, or
 * names another key: the token was modified or copied from another volume), the provider also sets
 * ret_err->token_rejected, so the operator is sent to the recovery key, not to the KMS.
 * Provider code never logs secrets and never logs at all: the caller logs once at the edge.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "codec/kms_error.h"

struct secret;
struct http_client;
struct http_event;

/* One line "Key=Value" of a configuration file.  Neither key nor value holds CR, LF or NUL. */
struct kms_setting {
	char *key;
	char *value;           /* for a secret option: points into @secret, never free()d itself */
	struct secret *secret; /* the value of a secret option in locked memory (NUL-terminated) */
	unsigned line;
};

/* A named KMS configuration: /etc/kmscrypt/kms/<name>.conf, parsed by config/kms_config.c. */
struct kms_config {
	char *name;
	const struct kms_provider *provider;
	struct kms_setting *settings;
	size_t n_settings;
};
const char *kms_config_get(const struct kms_config *c, const char *key); /* NULL when unset */
/* The value of a secret option (KMS_OPT_SECRET) in locked memory, NUL-terminated (len excludes
 * the NUL); NULL when unset. */
const struct secret *kms_config_get_secret(const struct kms_config *c, const char *key);

enum {
	KMS_OPT_REQUIRED = 1 << 0,     /* must be set */
	KMS_OPT_CREDENTIAL = 1 << 1,   /* may be changed by `kms edit` */
	KMS_OPT_PATH = 1 << 2,         /* a file path, stored absolute */
	KMS_OPT_SECRET = 1 << 3,       /* secret value: read from a file (--<flag>-file), masked on show */
	KMS_OPT_KEY_IDENTITY = 1 << 4, /* identifies the master key: immutable once a volume used it */
	KMS_OPT_BOOL = 1 << 5,         /* a switch without argument; stored as "yes" */
};

/* A setting a provider accepts: the configuration file key and its command line flag. */
struct kms_option {
	const char *key;  /* e.g. "KeyFile" */
	const char *flag; /* e.g. "key-file" (used as --key-file); for KMS_OPT_SECRET, --<flag>-file */
	unsigned flags;
	const char *help;
};

/* What one command run shares between providers and volumes. */
struct kms_runtime {
	struct http_client *http; /* shared HTTPS transport (NULL where unused) */
	const char *config_dir;
	int timeout_ms;           /* overall deadline for one KMS operation incl. retries */
	/* -v: reports each HTTPS attempt (transport/http.h); NULL: none.  Passed to every HTTP
	 * client a provider creates (kms_remote_init() does it). */
	void (*http_observer)(const struct http_event *ev, void *userdata);
	void *http_observer_data;
};

/* What `kms check`/`kms show` print about the key. */
struct kms_key_info {
	char key_id[512];
	char key_version[128];
	char state[64];        /* "enabled", "Active", ... as the KMS says */
	char description[256]; /* e.g. "AES-256-GCM key file, fingerprint 1a2b..." */
	char warning[256];     /* "" or one line the operator should act on (e.g. an Azure key
				* rotation policy); printed by kms create and kms check */
};

struct kms_provider {
	const char *name;        /* "local", "aws", "vault", "kmip", ... */
	const char *description; /* one line for `kms create --help` */
	const char *warning;     /* printed by `kms show`, e.g. "not for production"; may be NULL */
	const struct kms_option *options; /* terminated by an entry with key == NULL */
	/* The setting that names the master key as describe() reports it in kms_key_info.key_id (e.g.
	 * "KeyId" for local, a resolved ARN for AWS).  `kms create` records it when unset, and `kms
	 * edit` refuses new credentials whose describe() reports another key. */
	const char *identity_key;

	/* `kms create`: check settings and, where the provider does so, create the master key; may add
	 * settings to @cfg (e.g. a KeyId the KMS assigned).  Optional. */
	int (*provision)(struct kms_config *cfg, const struct kms_runtime *rt, struct kms_error *err);
	/* Prepare a context for this run: load credentials, parse endpoints.  No network I/O. */
	int (*open)(const struct kms_config *cfg, const struct kms_runtime *rt, void **ret_ctx,
		    struct kms_error *err);
	void (*close)(void *ctx);
	/* Authenticate and validate the key (enabled, usable for wrap/unwrap). */
	int (*describe)(void *ctx, struct kms_key_info *ret, struct kms_error *err);
	int (*wrap)(void *ctx, const struct kms_aad *aad, const struct secret *plain,
		    struct kms_wrapped *ret, struct kms_error *err);
	int (*unwrap)(void *ctx, const struct kms_aad *aad, const struct kms_wrapped *w,
		      struct secret **ret, struct kms_error *err);
	/* `kms policy NAME`: the least-privilege permissions this configuration needs, in the
	 * provider's own format (AWS key policy statement, Vault policy HCL, ...), ready to paste: a
	 * heap string ending in a newline.  From the settings alone, no network I/O. */
	int (*policy)(const struct kms_config *cfg, char **ret, struct kms_error *err);
};

/* The registry (kms/registry.c). */
const struct kms_provider *kms_provider_find(const char *name);
const struct kms_provider *const *kms_provider_all(void); /* NULL-terminated */
