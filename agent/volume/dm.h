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

struct volume_mapping;

void volume_lock(void);
void volume_unlock(void);

/* Route libdevmapper's messages to our debug log.  libcryptsetup resets the log function after each
 * of its dm operations, so call this (locked) before our own libdevmapper calls. */
void volume_dm_quiet(void);

/* Is device-mapper loaded, or loadable by opening /dev/mapper/control?  Reads /proc/misc only. */
bool volume_dm_available(void);

/* Is @path a suspended dm block device?  Reading one blocks in D state until it is resumed, so
 * nothing may open it for I/O (sysfs only, no lock needed). */
bool volume_dm_device_suspended(const char *path);

/* Locked variant of volume_mapping_info(); @ret_logon tells whether a keyring key is a logon key.
 * Also -ENODEV when @name is not a LUKS2 crypt mapping (the other fields are still filled). */
int volume_dm_query(const char *name, struct volume_mapping *ret, bool *ret_logon);

/* Send "key wipe" to the crypt target of the suspended mapping @name (what crypt_suspend() does
 * after DM_DEVICE_SUSPEND).  A message is no I/O on the device. */
int volume_dm_key_wipe(const char *name);
