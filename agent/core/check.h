/* SPDX-License-Identifier: MIT */
/*
 * The checks that change nothing (core/check.c): `kmscrypt check` proves that a volume's KMS still
 * unwraps its secret and that the secret opens its keyslot, without activating anything; the proof
 * of a KMS configuration (`kms check`, and `kms create`/`kms edit` before they save) opens its
 * provider and wraps and unwraps a random test secret.  Front ends parse arguments and print;
 * these functions log their errors once (except where said), with what to do next.
 */
#pragma once
#include <stdbool.h>

#include "core/core.h"
#include "core/vol.h"

/* Check volume @device: read its header, token and state (logged when it is no kmscrypt volume);
 * warn when a re-encryption is pending; refuse a revoked volume, or one whose state file cannot be
 * read, without asking any KMS; unwrap its secret through its binding (@ks: each configuration
 * opened once per run; a multi-KMS binding asks every KMS and leaves each answer in v->answers; a
 * kmscrypt token left by an interrupted rotation is tried when the first does not unwrap) and
 * prove that the secret opens the token's keyslot (libcryptsetup only, no device-mapper).  An audit
 * record "check" is written once a KMS was asked.  @v is filled as far as it got, also on failure
 * (the caller vol_done()s it): v->r (0 or -errno: -EALREADY revoked, -EBADMSG corrupt state file or
 * a secret that opens no keyslot, else the KMS's or the device's error), v->msg (one line: why it
 * failed, for a KMS error the provider's own description; empty when only the log says it), v->ms.
 * Not logged: a configuration that cannot be used was logged when @ks first opened it.  Returns
 * v->r. */
int core_check_volume(const struct core_ctx *c, struct kms_set *ks, const char *device,
		      struct vol *v);

/* Prove KMS configuration @cfg (credentials resolved): open its provider, describe its key into
 * @info, wrap a random 32-byte secret and unwrap it; different bytes back are -EBADMSG (code
 * "RoundTripMismatch").  *@ret_ms is how long it took, set either way.  0 or -errno with @err
 * filled; no logging. */
int core_kms_prove(const struct core_ctx *c, const struct kms_config *cfg,
		   struct kms_key_info *info, double *ret_ms, struct kms_error *err);

/* What `kms check` found. */
struct core_kms_check {
	struct kms_config cfg;    /* as loaded: cfg.name, cfg.provider */
	bool proved;              /* the round trip was tried (r, info, err, ms say how it went) */
	int r;                    /* 0, or why it failed (-errno) */
	struct kms_key_info info; /* the key as the KMS described it (r == 0) */
	struct kms_error err;     /* the provider's error (r < 0) */
	double ms;                /* how long the round trip took */
};

/* `kms check @name`: load the configuration and its systemd credentials, then core_kms_prove().
 * Every failure is logged ("... failed its check: <the KMS's error>; <what to do>.").  Returns
 * res->r; res->proved is false when the configuration could not be loaded or its credentials
 * read (there is then nothing to report but the logged error).  core_kms_check_done() @res
 * either way. */
int core_kms_check(const struct core_ctx *c, const char *name, struct core_kms_check *res);
void core_kms_check_done(struct core_kms_check *res);
