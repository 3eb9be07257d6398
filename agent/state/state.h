/* SPDX-License-Identifier: MIT */
/*
 * Persistent state under the state dir (default /var/lib/kmscrypt, mode 0700):
 *
 *   volumes/<uuid>.json   per volume: device, mapping, KMS configuration, revoked mark and reason,
 *                         last unlock/lock/revoke/restore times.  Written atomically.
 *   kms-usage/<name>      every volume ever bound to KMS configuration <name>, one JSON line each;
 *                         kept after unbind (old headers and backups may still need the key).
 *   audit.log             JSON lines: time, action, volume, mapping, device, reason, result.
 *   lock                  flock(2) that serialises commands which change volumes or configurations.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct volume_state {
	char uuid[40];
	char *device;
	char *mapping;
	char *kms;
	bool revoked;
	char *revoke_reason;
	time_t last_unlock, last_lock, last_revoke, last_restore; /* 0: never */
	bool revoked_by_watcher; /* the mark was set by `kmscrypt watch` (auto-restore may lift it) */
	/* what `kmscrypt watch` last saw: "usable", "denied", "unavailable", "invalid"; NULL: never */
	char *watch_verdict;
	time_t watch_last_probe;
	unsigned watch_denials;  /* consecutive denied verdicts */
	/* Every binding the volume's secret was ever wrapped under (core/rotate.c), as the JSON text
	 * of an array of {"kms", "provider", "key_id", "key_version", "keyslot", "since", "until"}
	 * ("until" absent: current); NULL when never recorded.  Kept as it is by every save. */
	char *history;
	/* What restore needs after a revoke of a re-encryption dm stack (volume_stack_suspend_wipe()
	 * plan: devices suspended, the logon key each crypt target named; no secret); NULL when
	 * none. */
	char *stack_plan;
};
void volume_state_done(struct volume_state *s);

/* -ENOENT when there is no state for @uuid; -EBADMSG when the file is corrupt. */
int state_load(const char *dir, const char *uuid, struct volume_state *ret);
int state_save(const char *dir, const struct volume_state *s);
/* All volume states, NULL-terminated array of heap structs. */
int state_list(const char *dir, struct volume_state ***ret);
void state_list_free(struct volume_state **l);

/* The state dir as an O_DIRECTORY|O_NOFOLLOW fd, created (mode 0700) when @create and missing, and
 * refused unless root owns it and neither group nor others may write it (util/safedir.h: -ENOLINK;
 * -ELOOP when it is a symbolic link).  Files that carry a safety property (lock, audit.log) are
 * opened relative to it with O_NOFOLLOW. */
int state_dir_open(const char *dir, bool create);

/* Take the state dir lock, waiting up to @timeout_sec.  Returns an fd (close to release), -EBUSY on
 * timeout, -ELOOP when 'lock' is a symbolic link, state_dir_open()'s errors. */
int state_lock(const char *dir, unsigned timeout_sec);
/* The same, calling @waiting once after about a second of waiting with the PID that holds the lock
 * (0: unknown; from /proc/locks), and on -EBUSY setting *ret_holder (optional) likewise. */
int state_lock_wait(const char *dir, unsigned timeout_sec,
		    void (*waiting)(pid_t holder, void *userdata), void *userdata,
		    pid_t *ret_holder);

struct audit_record {
	const char *action;  /* unlock, lock, revoke, restore, format, bind, unbind, kms-create, ... */
	const char *uuid;
	const char *mapping;
	const char *device;
	const char *kms;
	const char *reason;
	const char *result;  /* "ok" or a one-line error */
	double duration_ms;  /* < 0: not recorded */
	/* rotations, bind: the binding before and after, each the JSON text of an object (NULL:
	 * none); written as "old" and "new" */
	const char *old_binding;
	const char *new_binding;
};
/* One JSON line appended to audit.log (opened in state_dir_open()'s fd, O_NOFOLLOW) and fsynced. */
int audit_append(const char *dir, const struct audit_record *a);

int usage_record(const char *dir, const char *kms, const char *uuid, const char *device);
/* UUIDs ("uuid (device)") of volumes ever bound to @kms, NULL-terminated; empty list when none. */
int usage_list(const char *dir, const char *kms, char ***ret);
/* `kms delete --forget-missing`: drop the usage record of @kms (0 when there is none). */
int usage_forget(const char *dir, const char *kms);
/* Remove the state record of @uuid (0 when there is none). */
int state_remove(const char *dir, const char *uuid);
void strv_free(char **l);

/* ---- the token plugin's side (state/inflight.c) ----------------------------------------------- */

/* The state dir lock taken shared (the token plugin, across its check, unwrap and re-check), waiting
 * up to @timeout_sec: an fd, -EBUSY on timeout, -ENOENT when @dir does not exist (it is not
 * created), state_dir_open()'s errors for an untrusted dir. */
int state_lock_shared(const char *dir, unsigned timeout_sec);

/* An unlock through the token plugin that has passed its checks and handed its secret to
 * libcryptsetup, which activates after the plugin returned: inflight/<uuid>.<pid>. */
struct inflight {
	pid_t pid;
	unsigned long long starttime; /* /proc/<pid>/stat field 22, tells a reused pid apart */
};
/* Record the calling process (call with the lock held shared). */
int inflight_add(const char *dir, const char *uuid);
/* Live records of @uuid (stale ones are removed); *ret is heap (free()), NULL when none. */
int inflight_list(const char *dir, const char *uuid, struct inflight **ret, size_t *ret_n);
bool inflight_alive(const struct inflight *f);
int inflight_remove(const char *dir, const char *uuid, pid_t pid);
