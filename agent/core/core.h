/* SPDX-License-Identifier: MIT */
/*
 * The core layer: what every front end (cli/, plugin/, watch/) shares, below them and above kms/,
 * volume/, state/ and config/.  It owns
 *   - one run's context (struct core_ctx: config and state dirs, lock timeout, KMS runtime),
 *   - KMS configurations as loaded from the config dir, and the KMS handles of one run (kms_set:
 *     each configuration opened once, one connection per endpoint),
 *   - volumes as the flows see them (core/vol.h: header, token, mapping, state, marks),
 *   - the flows: unlock, lock, revoke, restore (core/flows.h), including the revoked marks and the
 *     wait for the token plugin's unlocks in flight; format, bind, unbind (core/format.h); check
 *     and the proof of a KMS configuration (core/check.h); rotation and re-encryption (flows.h).
 * Front ends parse arguments and print; they never reach into each other.  Functions that log say so;
 * each error is logged once, with what to do next.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "kms/provider.h"

struct config_error;
struct kmscrypt_token;
struct json_object;
struct volume_header;

struct core_ctx {
	const char *config_dir;    /* /etc/kmscrypt, or --config-dir / $KMSCRYPT_CONFIG_DIR */
	const char *state_dir;     /* /var/lib/kmscrypt, or --state-dir / $KMSCRYPT_STATE_DIR */
	unsigned lock_timeout_sec; /* how long to wait for the state-dir lock */
	struct kms_runtime rt;     /* shared by the providers of one run */
};

/* The state-dir lock; logs on failure.  Returns fd or -errno. */
int core_lock(const struct core_ctx *c);
/* Refuse a state dir, configuration dir or its kms/ that exists but that others than root may
 * change, or that is a symbolic link (util/safedir.h); logs the fix.  0 or -errno. */
int core_check_dirs(const struct core_ctx *c);

/* Load KMS configuration @name from the config dir; logs (naming file:line) on failure. */
int core_kms_load(const struct core_ctx *c, const char *name, struct kms_config *ret);
#define KMS_CONFIG_FILE_MAX (64 * 1024)
/* The same without logging (the token plugin logs through libcryptsetup): read @path once into
 * locked memory and parse it as configuration @name.  A file that holds a secret itself (not a
 * credential reference) and that group or others may access is refused, as ssh(1) refuses such a
 * private key.  Return: 0; -ENOENT; -EBADMSG (parse error, @err names the line); -EINVAL (the
 * mode: @err's message says which 'chmod' fixes it); -EFBIG, -EISDIR, -EBADFD, -errno; -ENOMEM. */
int kms_config_load_file(const char *path, const char *name, struct kms_config *ret,
			 struct config_error *err);
int core_kms_path(const struct core_ctx *c, const char *name, char **ret);
/* Read every secret setting X given as "XCredential=NAME" from $CREDENTIALS_DIRECTORY/NAME
 * (systemd credentials) into @cfg; logs on failure (-ENOENT: no such credential). */
int core_kms_resolve_credentials(struct kms_config *cfg);

/* An opened provider for one configuration. */
struct kms_handle {
	struct kms_config cfg;
	void *ctx;
	int open_r;               /* result of open; < 0: every use fails with it */
	struct kms_error open_err;
};
int kms_handle_open(const struct core_ctx *c, const char *name, struct kms_handle *ret);
void kms_handle_done(struct kms_handle *h);
/* The KMS handles of one run: each configuration is opened once and shared by all volumes bound
 * to it (one HTTPS client, so one TLS connection per endpoint).  kms_set_get() opens on first use
 * and remembers a failure, so it is logged once; call it from one thread, or open every handle
 * first and let threads only look them up. */
struct kms_set {
	struct kms_handle **h; /* grows as configurations are met: no limit on their number */
	int *r;
	size_t n;
};
struct kms_handle *kms_set_get(const struct core_ctx *c, struct kms_set *s, const char *name,
			       int *ret_r);
void kms_set_done(struct kms_set *s);

/* Unwrap the secret of a volume through @h; fills @err; no logging. */
int kms_handle_unwrap(struct kms_handle *h, const char *uuid, const struct kmscrypt_token *t,
		      struct secret **ret, struct kms_error *err);

/* One KMS's answer for one wrap of a token (core_token_unwrap()). */
struct core_wrap_answer {
	int r;                /* 0: unwrapped; < 0: its error; 1: not asked */
	struct kms_error err;
};
/* Unwrap @t's secret through every wrap of its binding (include/kmscrypt/token.h): @hs[i] is the
 * handle of wraps[i]'s configuration (NULL when it cannot be used, @hr[i] then says why).  The
 * KMSs are asked concurrently; any one for threshold 1, k shares combined (codec/shamir.h) for k of
 * n.  @ans (t->n_wraps entries) gets each KMS's answer (r 1: none yet when enough had answered).  Returns 0 with *@ret (32 bytes, which the
 * caller proves against the keyslot), or: when fewer than k answered, the first transient failure
 * (unavailable) if k could still answer later, else -EACCES if one denied, else the first error
 * (fewer than k KMSs can ever answer).  No logging. */
int core_token_unwrap(struct kms_handle *const *hs, const int *hr, const char *uuid,
		      const struct kmscrypt_token *t, bool wait_all, struct secret **ret,
		      struct core_wrap_answer *ans);
/* The same for a caller that cannot wait for the KMSs still answering after k did, and cannot
 * hold their handles open for core_unwrap_reap() (the token plugin, which runs inside
 * libcryptsetup's caller and keeps no state between calls): ownership of what the requests use
 * passes to this call, and @release(@arg) (which closes the handles) is called exactly once, by
 * this call when no request is left running, else by the thread of the last one to finish.
 * Never waits for more than k answers. */
int core_token_unwrap_detached(struct kms_handle *const *hs, const int *hr, const char *uuid,
			       const struct kmscrypt_token *t, struct secret **ret,
			       struct core_wrap_answer *ans, void (*release)(void *), void *arg);
/* core_token_unwrap() returns as soon as k KMSs answered (unless @wait_all: check waits for every
 * answer, to report them); the requests still running finish in the background.  Join them: call
 * this before closing any handle passed to it (kms_set_done() does). */
void core_unwrap_reap(void);
/* "KMS 'a' answered; KMS 'b' denied access (code: message); ..." */
void core_answers_describe(const struct kmscrypt_token *t, const struct core_wrap_answer *ans,
			   char *buf, size_t n);
unsigned core_answers_ok(const struct kmscrypt_token *t, const struct core_wrap_answer *ans);
/* A failure the KMS may not repeat later (network, 5xx, throttling): "unavailable". */
bool core_kms_transient(int r);

/* ---- bindings (core/bind.c) ---- */
/* The token of a new binding of keyslot @keyslot of volume @uuid to @secret: wrapped by @hs[0]
 * (@multi false: version 1, @n 1), or by each of the @n handles (@multi: version 2; @k 1: any-of,
 * each wrap holds @secret; 1 < @k <= @n: a fresh Shamir split, share i wrapped by @hs[i]).  Every
 * KMS must wrap: on the first that cannot, -errno with one line in @why (no logging). */
int core_wrap_token(struct kms_handle *const *hs, size_t n, unsigned k, bool multi,
		    const char *uuid, int keyslot, const struct secret *secret, char **ret_json,
		    char *why, size_t why_len);
/* The binding of a token as audit records and the state's history name it: {"kms", "provider",
 * "key_id", "key_version", "keyslot"} (those of the first wrap), plus for version 2 "threshold"
 * and "wraps": [{"kms", "provider", "key_id", "key_version", "share"}, ...].  The _text variant
 * parses token JSON (NULL when invalid). */
struct json_object *core_binding_json(const struct kmscrypt_token *t);
struct json_object *core_binding_json_text(const char *token_json);
/* "KMS 'a'" or "KMSs 'a', 'b', 'c' (2 of 3)" */
void core_binding_desc(const struct kmscrypt_token *t, char *buf, size_t len);

/* "<code>: <message> (HTTP n, request id)" into @buf for one-line errors. */
void kms_error_describe(const struct kms_error *e, char *buf, size_t n);
/* What to tell the operator after an unwrap error. */
const char *core_hint_for(int r);
/* The same, by cause where the provider said more than @r (@e->token_rejected: the recovery key,
 * not the KMS); @e may be NULL. */
const char *core_hint_for_error(int r, const struct kms_error *e);
/* What the KMS did, for "KMS 'x' (aws) %s: ...": "denied access", "could not be reached", ... */
const char *core_kms_failure(int r, const struct kms_error *e);

/* Read a header and its kmscrypt token; logs when @log is set.  -ENODEV: no LUKS2/no token. */
int core_read_volume(const char *device, struct volume_header *ret_hdr,
		    struct kmscrypt_token *ret_tok, bool log);
/* The same from a header already read (volume_scan_headers()): takes over *@hdr (left empty,
 * freed on failure). */
int core_volume_from_header(const char *device, struct volume_header *hdr,
			    struct volume_header *ret_hdr, struct kmscrypt_token *ret_tok, bool log);

/* Default mapping name for a volume: its label when usable, else "kmscrypt-<uuid8>". */
void core_default_mapping(const char *label, const char *uuid, char *buf, size_t n);
int core_mapping_name_valid(const char *name);
