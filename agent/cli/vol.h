/* SPDX-License-Identifier: MIT */
/* One kmscrypt volume as the commands see it: header, token, live mapping and saved state. */
#pragma once
#include <stdbool.h>

#include "cli/cli.h"
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
	struct volume_state st;
	bool has_state;
	int state_r; /* state_load() result: -EBADMSG means the state file is corrupt */
	char mapping[128]; /* mapping name to use: live, saved, or default */

	/* outcome of the command for this volume */
	int r;
	const char *result; /* "unlocked", "revoked", ... */
	char msg[768];
	double ms;
	struct volume_wipe_report wipe;
};

void vol_done(struct vol *v);
void vol_list_free(struct vol **l);
/* Fill @v from @device: header and token (-ENODEV when not kmscrypt), mapping, state.  Logs when
 * @log. */
int vol_from_device(const struct cli *c, const char *device, struct vol *v, bool log);
/* A target is a mapping name, a device path, a LUKS UUID, or the saved mapping name of a closed
 * volume.  Logs when not found. */
int vol_resolve(const struct cli *c, const char *target, struct vol *v);
/* Every kmscrypt volume this host knows: scanned block devices, live mappings, saved state. */
int vol_list_all(const struct cli *c, struct vol ***ret);
/* "inactive", "active", "revoked-suspended", "revoked-closed", "suspended" */
const char *vol_state_name(const struct vol *v);
/* Save state changes; logs a warning on failure. */
void vol_save_state(const struct cli *c, struct vol *v);
void vol_audit(const struct cli *c, const struct vol *v, const char *action, const char *reason);
