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
/* The same, with the resume (or reopen) done by a worker of @pool (volume/pool.c; NULL: in this
 * process); the unwrap, the marks and the state stay in this process.  Thread-safe per volume. */
struct volume_pool;
void core_restore_in(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
		     struct volume_pool *pool);

/* ---- rotation (core/rotate.c) ---------------------------------------------------------------- */

/* What a rotation changed, for the front end to print. */
struct core_rotation {
	char old_kms[128], new_kms[128];
	char old_key_version[128], new_key_version[128];
	int old_keyslot, new_keyslot;
	bool resumed; /* rotate-secret finished what a killed run had begun */
};

/* rotate-master: unwrap @v's secret through the binding that opens it now, wrap it again under the
 * newest version of the master key of @kms (NULL: the same configuration), write the new token
 * next to the old one, prove it (unwrap it, it opens the keyslot), then remove the old token.  A
 * multi-KMS binding (token version 2) keeps its threshold and KMSs: k of them unwrap, the secret is
 * split afresh (k of n) and every KMS wraps its new share (or the secret, any-of) under its newest
 * key version; @replace_old (with @kms: --replace OLD=NEW) swaps one of its KMSs for @kms, and a
 * bare @kms is refused for it.  The new binding is recorded (state "history", kms-usage/ for every
 * KMS) before the header changes; the audit record names the old and the new binding
 * (core_binding_json()).  A revoked volume is refused.  The caller holds the state lock. */
void core_rotate_master(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
			const char *kms, const char *replace_old, struct core_rotation *out);
/* rotate-secret: a new random secret in a new keyslot, wrapped by the same configuration(s) (k of
 * n: split afresh, each new share wrapped by its KMS; every KMS of the binding must wrap, else
 * nothing changes), proven to open, then the old keyslot and its token destroyed (the keyslot
 * count does not grow; other keyslots such as the recovery key stay).  A run killed half-way is
 * finished or undone by the next (a "kmscrypt-pending" token marks it in the header). */
void core_rotate_secret(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
			struct core_rotation *out);
/* bind's header change with the same marker: a killed bind leaves no keyslot behind that the next
 * bind would not remove.  volume_bind()'s return values. */
int core_bind_marked(const struct core_ctx *c, const char *device, const struct secret *auth,
		     int keyslot, const struct secret *secret, const char *token_json);
/* Finish or undo what a killed bind or rotate-secret left in @device's header: 0 nothing, 1
 * finished, 2 undone; -errno with a reason in @why. */
int core_pending_cleanup(const struct core_ctx *c, const char *device, const char *uuid,
			 char *why, size_t n);
/* The "version" of @device's first kmscrypt token; 0 when none or unreadable. */
int core_token_version(const char *device);
/* Open (in @ks) the configurations of @v's other kmscrypt tokens: before threads start. */
void core_open_token_kms(const struct core_ctx *c, struct kms_set *ks, const struct vol *v);
/* The unlock path: @v's first token did not unwrap or open; try its other kmscrypt tokens (a
 * rotation leaves two for a moment).  On success v->tok is the token that worked. */
int core_unwrap_fallback(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
			 struct secret **ret);

/* ---- reencrypt (core/reencrypt.c) ------------------------------------------------------------ */

struct core_reencrypt_opts {
	bool resume;                   /* finish a re-encryption that was interrupted */
	const struct secret *recovery; /* NULL, or the recovery passphrase: its keyslot is carried */
	bool remove_others;            /* keyslots whose passphrase was not given may be removed */
	/* Before anything changes: @plan (one or more lines) says what will happen; @destructive
	 * when keyslots will be removed.  Return 0 to go on, -errno to stop (v->r takes it). */
	int (*confirm)(const char *plan, bool destructive, void *userdata);
	int (*progress)(uint64_t size, uint64_t offset, void *userdata); /* volume_progress_fn */
	void *userdata;
};

struct core_reencrypt_result {
	bool resumed;
	int keyslot;           /* the kmscrypt keyslot (same number as before) */
	int recovery_keyslot;  /* the recovery passphrase's keyslot afterwards, -1 when none */
	int removed[32];       /* keyslots removed because no passphrase for them was given */
	int n_removed;
	uint64_t bytes;        /* data re-encrypted by this run (last progress seen) */
	uint64_t total;        /* data size */
};

/* Re-encrypt @v's data to a new volume key (or finish an interrupted run with o->resume): the
 * secret is unwrapped through the KMS (it opens the old and the new keyslot), the volume stays
 * open and serving I/O.  Refuses (nothing changed) a volume that is not open (unless resuming),
 * revoked, with a re-encryption pending (unless resuming), or with keyslots whose passphrase
 * was not given (unless o->remove_others: they are removed at the end).  Fills v's outcome. */
void core_reencrypt(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
		    const struct core_reencrypt_opts *o, struct core_reencrypt_result *res);
/* One sentence for status/check when @v's header has a re-encryption pending, else NULL. */
const char *core_reencrypt_pending(const struct vol *v, char *buf, size_t n);

/* A running `kmscrypt reencrypt` holds the state-dir lock for its whole run; it records itself in
 * <state-dir>/reencrypt.run ("PID STARTTIME UUID MAPPING DEVICE") so that revoke can stop it.
 * Record after taking the lock (-errno when it cannot be written), unrecord before letting go. */
int core_reencrypt_record(const struct core_ctx *c, const struct vol *v);
void core_reencrypt_unrecord(const struct core_ctx *c);
/* Before revoke takes the lock: when a recorded re-encryption runs on @uuid (or the volume named
 * by @target, a DEVICE, MAPPING or UUID=; both NULL: any volume), send it SIGTERM (it stops after
 * the current step, resumable), wait up to CORE_REENCRYPT_STOP_SEC for it to exit, then SIGKILL
 * (crash-safe: reencrypt --resume finishes it).  0 when none runs or it is gone, -EBUSY (logged)
 * when it survived SIGKILL. */
#define CORE_REENCRYPT_STOP_SEC 10
int core_reencrypt_preempt(const struct core_ctx *c, const char *target, const char *uuid);
