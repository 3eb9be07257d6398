/* SPDX-License-Identifier: MIT */
/*
 * The flows (core/core.h): what unlock, lock, revoke and restore do to one volume, for every front
 * end.  Each fills the volume's outcome (v->r, v->code, v->result, v->msg: one line naming the cause
 * and what to do, v->ms) and logs nothing; the caller prints and audits.  The caller holds the
 * state-dir lock (core_lock()) around a flow.
 */
#pragma once
#include "core/core.h"
#include "core/vol.h"

struct secret;

/* Unwrap @v's secret through its KMS configuration (opened once per run in @ks).  On failure v->r and
 * v->msg say why ("Cannot <verb> ...") and *ret_err (may be NULL) has the provider's error. */
int core_unwrap(const struct core_ctx *c, struct kms_set *ks, struct vol *v, const char *verb,
		struct secret **ret, struct kms_error *ret_err);

/* Unlock @vols (concurrently when more than one); a revoked volume, or one whose state file cannot
 * be read, is left locked.  Every KMS configuration is opened before the threads start.  Returns
 * 0 or -ENOMEM; each volume's outcome is in the volume. */
int core_unlock(const struct core_ctx *c, struct kms_set *ks, struct vol **vols, size_t n);

/* Close @v's mapping (result "locked" or "already-locked"). */
void core_lock_volume(const struct core_ctx *c, struct vol *v);

/* Revoke: mark @v revoked in the state dir and in its LUKS2 header (@reason may be NULL; @by_watcher
 * records who revoked, for auto-restore), wait for the token plugin's unlocks in flight, suspend
 * every mapping of the volume and wipe its key, verify each table shows an all-zero key.  Persist
 * or fail: a mark that could not be saved is a failure (v->code 1: state dir, 5: header) even
 * though the key was wiped. */
void core_revoke(const struct core_ctx *c, struct vol *v, const char *reason, bool by_watcher);

/* Restore: unwrap through the KMS, resume (or reopen a closed volume), then clear both marks
 * (persist or fail).  While the KMS refuses, the device stays as it is and both marks stay. */
void core_restore(const struct core_ctx *c, struct kms_set *ks, struct vol *v);
