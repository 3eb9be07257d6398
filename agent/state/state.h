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
#include <time.h>

struct volume_state {
	char uuid[40];
	char *device;
	char *mapping;
	char *kms;
	bool revoked;
	char *revoke_reason;
	time_t last_unlock, last_lock, last_revoke, last_restore; /* 0: never */
};
void volume_state_done(struct volume_state *s);

/* -ENOENT when there is no state for @uuid; -EBADMSG when the file is corrupt. */
int state_load(const char *dir, const char *uuid, struct volume_state *ret);
int state_save(const char *dir, const struct volume_state *s);
/* All volume states, NULL-terminated array of heap structs. */
int state_list(const char *dir, struct volume_state ***ret);
void state_list_free(struct volume_state **l);

/* Take the state dir lock, waiting up to @timeout_sec.  Returns an fd (close to release), -EBUSY on
 * timeout. */
int state_lock(const char *dir, unsigned timeout_sec);

struct audit_record {
	const char *action;  /* unlock, lock, revoke, restore, format, bind, unbind, kms-create, ... */
	const char *uuid;
	const char *mapping;
	const char *device;
	const char *kms;
	const char *reason;
	const char *result;  /* "ok" or a one-line error */
	double duration_ms;  /* < 0: not recorded */
};
int audit_append(const char *dir, const struct audit_record *a);

int usage_record(const char *dir, const char *kms, const char *uuid, const char *device);
/* UUIDs ("uuid (device)") of volumes ever bound to @kms, NULL-terminated; empty list when none. */
int usage_list(const char *dir, const char *kms, char ***ret);
void strv_free(char **l);
