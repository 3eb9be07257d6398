/* SPDX-License-Identifier: MIT */
/* One kmscrypt volume as the commands see it: header, token, live mapping and saved state. */
#pragma once
#include <stdbool.h>

#include "core/core.h"
#include "codec/token.h"
#include "state/state.h"
#include "volume/volume.h"

struct vol {
	char *device;
	struct volume_header hdr;
	struct kmscrypt_token tok;
	bool has_tok;
	struct volume_mapping map;
	bool mapped;
	/* no plain crypt mapping, but the dm stack of a running or killed re-encryption holds the
	 * volume's keys (its top device is linear then): revoke must still find it */
	bool stacked;
	struct volume_state st;
	bool has_state;
	int state_r; /* state_load() result: -EBADMSG means the state file is corrupt */
	char mapping[128]; /* mapping name to use: live, saved, or default */

	/* outcome of the command for this volume */
	int r;
	int code; /* exit code (include/kmscrypt/exit.h) when it is not the class of r; 0: derive it */
	const char *result; /* "unlocked", "revoked", ... */
	char msg[768];
	double ms;
	struct volume_wipe_report wipe;
	struct core_wrap_answer *answers; /* tok.n_wraps answers of a multi-KMS unwrap, or NULL */
};

void vol_done(struct vol *v);
void vol_list_free(struct vol **l);
/* Fill @v from @device: header and token (-ENODEV when not kmscrypt), mapping, state.  Logs when
 * @log. */
int vol_from_device(const struct core_ctx *c, const char *device, struct vol *v, bool log);
/* A target is UUID=<uuid> (vol_from_uuid()), a mapping name, a device path, a LUKS UUID, or the
 * saved mapping name of a closed volume.  Logs when not found. */
int vol_resolve(const struct core_ctx *c, const char *target, struct vol *v);
/* Every kmscrypt volume this host knows: scanned block devices, live mappings, saved state. */
int vol_list_all(const struct core_ctx *c, struct vol ***ret);
/* The same; VOL_LIST_BLOCK_ONLY (unlock --all) leaves out saved-state volumes whose device is not a
 * block device (an image file recorded by an earlier command): when the scan worked, it has seen
 * every block device, so no saved record is read at all.  VOL_LIST_OPEN_ONLY (lock --all, revoke
 * --all): what is open or held by a re-encryption's dm stack is enough, and every such volume is
 * on a scanned block device or behind a live mapping; no saved record is read either (a host keeps
 * one per volume it ever saw). */
#define VOL_LIST_BLOCK_ONLY (1u << 0)
#define VOL_LIST_OPEN_ONLY (1u << 1)
/* VOL_LIST_MAPPED_ONLY (lock --all, revoke --all), with VOL_LIST_OPEN_ONLY: when every dm device
 * that names a LUKS volume is a plain LUKS2 crypt mapping (no dm-integrity, no re-encryption
 * stack: no volume can be held by a stack alone), the live mappings name every volume wanted and
 * the block devices are not scanned: only the open volumes' headers are read.  VOL_LIST_PEEK (lock
 * --all): read those with volume_header_peek() (no libcryptsetup) when it can tell. */
#define VOL_LIST_MAPPED_ONLY (1u << 2)
#define VOL_LIST_PEEK (1u << 3)
int vol_list(const struct core_ctx *c, unsigned flags, struct vol ***ret);
/* The volume with LUKS UUID @uuid on a block device (/dev/disk/by-uuid/@uuid, else a scan of
 * the block devices carrying a kmscrypt token; never the saved state's image files).  Logs when
 * not found (-ENOENT) or when @uuid is not a UUID (-EINVAL). */
int vol_from_uuid(const struct core_ctx *c, const char *uuid, struct vol *v);
/* Record a failure of the current command for @v: v->r = @r, v->msg from @fmt. */
void vol_fail(struct vol *v, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Re-read header, token, state and mapping (after the lock was released); keeps device and the
 * mapping name to use. */
int vol_refresh(const struct core_ctx *c, struct vol *v);
/* Revoked by either mark: the state dir's or the LUKS2 header's (include/kmscrypt/token.h). */
bool vol_revoked(const struct vol *v);
/* Why unlock must leave @v locked: its revoked mark or an unreadable state file (fail closed),
 * as one sentence naming the fix into @buf; NULL when it may be unlocked. */
const char *vol_refusal(const struct core_ctx *c, const struct vol *v, char *buf, size_t n);
/* "inactive", "active", "revoked-suspended", "revoked-closed", "suspended" */
const char *vol_state_name(const struct vol *v);
/* Save state changes: 0 or -errno, logs nothing (revoke and restore must fail on it). */
int vol_save_state(const struct core_ctx *c, struct vol *v);
/* The same, where the state carries no safety property: a failure is a warning. */
void vol_save_state_or_warn(const struct core_ctx *c, struct vol *v);
/* Set (@at > 0, with @reason) or clear (@at == 0) the revoked mark in @v's LUKS2 header; @v's
 * header and token are updated on success.  0 when there was nothing to change; -errno. */
int vol_mark_header(struct vol *v, time_t at, const char *reason);

void vol_audit(const struct core_ctx *c, const struct vol *v, const char *action, const char *reason);

/* Is volume @uuid still somewhere: its recorded @device (NULL or "?": unknown) with that UUID, a
 * /dev/disk/by-uuid link, an open mapping, or a block device carrying a kmscrypt token?  A device
 * that cannot be read counts as present: only a volume known to be gone may be forgotten (kms
 * delete --forget-missing). */
bool vol_present(const char *uuid, const char *device);
