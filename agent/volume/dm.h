/* SPDX-License-Identifier: MIT */
/*
 * Private to agent/volume/: libdevmapper queries and the lock that serialises every library call of
 * the volume layer.
 *
 * libdevmapper keeps process-global state (control fd, log function, name cache) and
 * libcryptsetup's dm backend adds its own (`_context`, `_dm_use_count`, and it resets
 * libdevmapper's log function to the stderr default when it lets go).  Two threads activating two
 * volumes would race on all of it, so the volume layer takes volume_lock() around each public
 * operation.  Activation with a PBKDF2 keyslot takes milliseconds; the slow part of `unlock --all`
 * (the KMS round trip) stays parallel.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "volume/volume.h"

void volume_lock(void);
void volume_unlock(void);

/* Route libdevmapper's messages to our debug log.  libcryptsetup resets the log function after each
 * of its dm operations, so call this (locked) before our own libdevmapper calls. */
void volume_dm_quiet(void);

/* Is device-mapper loaded, or loadable by opening /dev/mapper/control?  Reads /proc/misc only. */
bool volume_dm_available(void);

/* Locked variant of volume_mapping_info(); @ret_logon tells whether a keyring key is a logon key.
 * Also -ENODEV when @name is not a LUKS2 crypt mapping (the other fields are still filled). */
int volume_dm_query(const char *name, struct volume_mapping *ret, bool *ret_logon);

/* Locked: a DM task without arguments (DM_DEVICE_SUSPEND, DM_DEVICE_RESUME) on @name;
 * @skip_lockfs: no filesystem freeze before a suspend (a lower device of a stack). */
int volume_dm_simple(const char *name, int task, bool skip_lockfs);

/* Locked: remove the LUKS2 crypt mapping @name with DM_DEVICE_REMOVE (udev-synchronised, retried
 * while udev holds it open) when it is one crypt target on a device that is not a dm device of the
 * volume itself: what crypt_deactivate() does for it, without loading the header.  -EOPNOTSUPP for
 * any other shape (integrity, a re-encryption stack: use libcryptsetup), -ENODEV when @name is not a
 * LUKS2 crypt mapping, -ENOENT when it is gone, -EBUSY when it is in use. */
int volume_dm_remove_crypt(const char *name);

/* Send "key wipe" to the crypt target of the suspended mapping @name (what crypt_suspend() does
 * after DM_DEVICE_SUSPEND).  A message is no I/O on the device. */
int volume_dm_key_wipe(const char *name);

/* ---- the one dm table reader of the volume layer (dm.c; also volume/stack.c) ----------------- */

#define VOLUME_DM_TARGETS_MAX 16

struct volume_dm_target {
	uint64_t start;
	bool crypt;
	enum volume_key_state key; /* crypt targets: the shape of the key field */
	bool logon;		   /* key == VOLUME_KEY_KEYRING: a "logon" key */
	char key_field[200]; /* key == VOLUME_KEY_KEYRING: ":<size>:<type>:<desc>"; never hex */
	char devno[32];	     /* crypt targets: the backing device, "major:minor" */
};

struct volume_dm_table {
	char dm_uuid[130]; /* DM_UUID_LEN */
	unsigned int major, minor; /* of the dm device itself */
	bool suspended;
	bool truncated; /* more than VOLUME_DM_TARGETS_MAX targets */
	int n;
	struct volume_dm_target t[VOLUME_DM_TARGETS_MAX];
};

/* Locked: the table of @name (DM_DEVICE_TABLE; the kernel returns the keys, the ioctl buffers are
 * wiped after use; a hex key is only classified, never copied out).  -ENOENT when it is gone. */
int volume_dm_table(const char *name, struct volume_dm_table *ret);

/* The shape of a crypt table's <key> field (Documentation/admin-guide/device-mapper/dm-crypt.rst):
 * hex, "-" (no key), or ":<key_size>:<key_type>:<key_description>" (kernel keyring; an unparseable
 * one counts as hex, the worst case). */
enum volume_key_state volume_dm_key_state(const char *key, size_t len, bool *ret_logon);

/* Does dm uuid @dm_uuid belong to LUKS volume @hex (32 hex digits, no dashes, any case), i.e. is it
 * "CRYPT-<TYPE>-<hex>-<name>" (libcryptsetup's dm_prepare_uuid(); the devices of a re-encryption
 * stack are CRYPT-SUBDEV-...)?  @hex NULL: does it belong to any LUKS2 volume ("CRYPT-LUKS2-")? */
bool volume_dm_uuid_match(const char *dm_uuid, const char *hex);

/* Locked: one DM_DEVICE_LIST, then @fn(name, @userdata) for each device whose dm uuid (read from
 * sysfs, /sys/dev/block/M:m/dm/uuid: no ioctl) matches @hex as volume_dm_uuid_match() says; a
 * device whose uuid cannot be read is passed too (the caller's table read decides).  So only the
 * tables of a volume's own devices are read, however many other dm devices there are.  A negative
 * return of @fn stops the walk and is returned; -ENOTSUP without device-mapper. */
int volume_dm_list(const char *hex, int (*fn)(const char *name, void *userdata), void *userdata);
