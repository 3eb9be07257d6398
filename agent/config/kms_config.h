/* SPDX-License-Identifier: MIT */
/*
 * KMS configuration files: text <-> struct kms_config.  Pure: no file I/O here (cli/ reads and writes
 * the files with util/fileio.c).
 *
 *   # comment
 *   [KMS]
 *   Provider=local
 *   KeyFile=/etc/kmscrypt/keys/lab.key
 *   KeyId=sha256:0123...
 *   Created=2026-11-30T17:00:00Z
 *
 * One "[KMS]" section; keys are those of the provider's option table plus Provider, Created,
 * Description and the watch settings (WatchInterval, OnRevoke, RevokeAfter, AutoRestore).  A secret option X may instead be given as "XCredential=NAME": the secret is then
 * read at use from the systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME, cli/common.c), so
 * it can be delivered with LoadCredentialEncrypted= instead of sitting in the file.  Unknown or
 * repeated keys, a missing Provider or a missing required key are errors that name the line.
 *
 * The file is line-based, so no key or value may hold CR, LF or NUL: kms_config_set() refuses
 * them (a value with a newline would add a line of its own, e.g. "Endpoint=" redirecting signed
 * requests) and the parser never yields them.  Values of secret options (KMS_OPT_SECRET of any
 * provider in the list the parser was given) live in locked memory (struct secret), never in plain
 * heap strings.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "kms/provider.h"

struct config_error {
	unsigned line;      /* 0 when not tied to a line */
	char message[256];
};

/* Valid configuration name: [A-Za-z0-9][A-Za-z0-9._-]{0,63}. */
int kms_config_name_valid(const char *name);

/* @providers: NULL-terminated list to resolve Provider= against (kms_provider_all()). */
int kms_config_parse(const char *name, const char *text, size_t len,
		     const struct kms_provider *const *providers, struct kms_config *ret,
		     struct config_error *err);
/* Serialise (settings in the order the provider's option table lists them, then the rest) into
 * one heap buffer of the exact size (never grown, so no copy is left behind).  It holds the values
 * of secret options: explicit_bzero() it before free(). */
int kms_config_format(const struct kms_config *c, char **ret);
/* Set (replace or add) a setting; @value copied (into locked memory for a secret option).
 * Return: 0; -EINVAL when @key or @value holds CR or LF, or @key is empty or holds '=' (nothing
 * is changed then); -E2BIG too many settings; -ENOMEM. */
int kms_config_set(struct kms_config *c, const char *key, const char *value);
/* Same for a value that arrives in locked memory (a secret read from a file or a credential):
 * stored in locked memory without a heap copy.  -EINVAL also when @value holds a NUL. */
int kms_config_set_secret(struct kms_config *c, const char *key, const struct secret *value);
/* What `kmscrypt watch` does for the volumes of a configuration (kmscrypt(8), watch). */
enum kms_on_revoke {
	KMS_ON_REVOKE_WIPE,  /* the revoke flow: mark, suspend, wipe the key */
	KMS_ON_REVOKE_CLOSE, /* wipe, then remove the mapping once nothing holds it */
	KMS_ON_REVOKE_ALERT, /* log and audit only */
};
#define KMS_WATCH_INTERVAL_DEFAULT 60
#define KMS_WATCH_REVOKE_AFTER_DEFAULT 2
struct kms_watch_settings {
	unsigned interval_sec;  /* WatchInterval= (--interval), 1..86400, default 60 */
	enum kms_on_revoke on_revoke; /* OnRevoke= (--on-revoke), default wipe */
	unsigned revoke_after;  /* RevokeAfter= (--revoke-after): consecutive denials, 1..100, default 2 */
	bool auto_restore;      /* AutoRestore=yes|no (--auto-restore), default no */
};
/* The watch settings of @c, defaults for those unset.  -EINVAL (message in @err) for a bad value. */
int kms_config_watch_settings(const struct kms_config *c, struct kms_watch_settings *ret,
			      struct config_error *err);
const char *kms_on_revoke_name(enum kms_on_revoke a);
/* Check required settings are present and watch settings valid. -EBADMSG with message when not. */
int kms_config_validate(const struct kms_config *c, struct config_error *err);
/* The option table entry for @key (provider options only), NULL when none. */
const struct kms_option *kms_config_option(const struct kms_provider *p, const char *key);
/* Remove a setting; 0 also when it was not set. */
int kms_config_unset(struct kms_config *c, const char *key);
/* For "XCredential" where X is a secret option of @p: that option; else NULL. */
const struct kms_option *kms_config_credential_option(const struct kms_provider *p, const char *key);
/* Valid credential name (systemd's rules): 1-255 characters, no '/', not "." or "..". */
int kms_config_credential_name_valid(const char *name);
/* Free everything; values of secret settings are wiped first. */
void kms_config_done(struct kms_config *c);
