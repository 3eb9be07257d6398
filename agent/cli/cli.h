/* SPDX-License-Identifier: MIT */
/* Command implementations.  Each cmd_*() returns a process exit code (include/kmscrypt/exit.h) and
 * logs its errors once, naming the volume, the cause and what to do next. */
#pragma once
#include <stdbool.h>
#include <stdio.h>

#include "kms/provider.h"

struct config_error;
struct json_object;
struct kmscrypt_token;
struct volume_header;

struct cli {
	const char *config_dir;  /* --config-dir, $KMSCRYPT_CONFIG_DIR, /etc/kmscrypt */
	const char *state_dir;   /* --state-dir, $KMSCRYPT_STATE_DIR, /var/lib/kmscrypt */
	bool json;               /* --json: machine output on stdout */
	bool quiet;
	unsigned timeout_sec;    /* --timeout: overall deadline of one KMS operation */
	unsigned lock_timeout_sec;
	struct kms_runtime rt;
};

/* -errno -> exit code (the table in kmscrypt(8)). */
int cli_exit_code(int r);
const char *cli_exit_name(int code);

/* The state-dir lock; logs on failure.  Returns fd or -errno. */
int cli_lock(const struct cli *c);
/* Refuse a state dir, configuration dir or its kms/ that exists but that others than root may
 * change, or that is a symbolic link (util/safedir.h); logs the fix.  0 or -errno. */
int cli_check_dirs(const struct cli *c);

/* Load KMS configuration @name from the config dir; logs (naming file:line) on failure. */
int cli_kms_load(const struct cli *c, const char *name, struct kms_config *ret);
#define KMS_CONFIG_FILE_MAX (64 * 1024)
/* The same without logging (the token plugin logs through libcryptsetup): read @path once into
 * locked memory and parse it as configuration @name.  A file that holds a secret itself (not a
 * credential reference) and that group or others may access is refused, as ssh(1) refuses such a
 * private key.  Return: 0; -ENOENT; -EBADMSG (parse error, @err names the line); -EINVAL (the
 * mode: @err's message says which 'chmod' fixes it); -EFBIG, -EISDIR, -EBADFD, -errno; -ENOMEM. */
int kms_config_load_file(const char *path, const char *name, struct kms_config *ret,
			 struct config_error *err);
int cli_kms_path(const struct cli *c, const char *name, char **ret);
/* Read every secret setting X given as "XCredential=NAME" from $CREDENTIALS_DIRECTORY/NAME
 * (systemd credentials) into @cfg; logs on failure (-ENOENT: no such credential). */
int cli_kms_resolve_credentials(struct kms_config *cfg);

/* An opened provider for one configuration. */
struct kms_handle {
	struct kms_config cfg;
	void *ctx;
	int open_r;               /* result of open; < 0: every use fails with it */
	struct kms_error open_err;
};
int kms_handle_open(const struct cli *c, const char *name, struct kms_handle *ret);
void kms_handle_done(struct kms_handle *h);
/* The KMS handles of one run: each configuration is opened once and shared by all volumes bound
 * to it (one HTTPS client, so one TLS connection per endpoint).  kms_set_get() opens on first use
 * and remembers a failure, so it is logged once; call it from one thread, or open every handle
 * first and let threads only look them up. */
struct kms_set {
	struct kms_handle h[32];
	int r[32];
	size_t n;
};
struct kms_handle *kms_set_get(const struct cli *c, struct kms_set *s, const char *name,
			       int *ret_r);
void kms_set_done(struct kms_set *s);

/* Unwrap the secret of a volume through @h; fills @err; no logging. */
int kms_handle_unwrap(struct kms_handle *h, const char *uuid, const struct kmscrypt_token *t,
		      struct secret **ret, struct kms_error *err);

/* "<code>: <message> (HTTP n, request id)" into @buf for one-line errors. */
void kms_error_describe(const struct kms_error *e, char *buf, size_t n);
/* What to tell the operator after an unwrap error. */
const char *cli_hint_for(int r);
/* The same, by cause where the provider said more than @r (@e->token_rejected: the recovery key,
 * not the KMS); @e may be NULL. */
const char *cli_hint_for_error(int r, const struct kms_error *e);
/* What the KMS did, for "KMS 'x' (aws) %s: ...": "denied access", "could not be reached", ... */
const char *cli_kms_failure(int r, const struct kms_error *e);

/* Read a header and its kmscrypt token; logs when @log is set.  -ENODEV: no LUKS2/no token. */
int cli_read_volume(const char *device, struct volume_header *ret_hdr,
		    struct kmscrypt_token *ret_tok, bool log);

/* Default mapping name for a volume: its label when usable, else "kmscrypt-<uuid8>". */
void cli_default_mapping(const char *label, const char *uuid, char *buf, size_t n);
int cli_mapping_name_valid(const char *name);

/* Print a JSON object on stdout (pretty) and free it. */
void cli_print_json(struct json_object *o);

double now_ms(void);
/* A JSON number of milliseconds with microsecond precision. */
struct json_object *json_ms(double ms);

int cmd_kms(struct cli *c, int argc, char **argv);
int cmd_format(struct cli *c, int argc, char **argv);
int cmd_bind(struct cli *c, int argc, char **argv);
int cmd_unbind(struct cli *c, int argc, char **argv);
int cmd_check(struct cli *c, int argc, char **argv);
int cmd_unlock(struct cli *c, int argc, char **argv);
int cmd_lock(struct cli *c, int argc, char **argv);
int cmd_revoke(struct cli *c, int argc, char **argv);
int cmd_restore(struct cli *c, int argc, char **argv);
int cmd_status(struct cli *c, int argc, char **argv);

/* Help texts (cli/help.c); cli_help() prints the one for @cmd (NULL: overview). */
int cli_help(const char *cmd, FILE *f);
