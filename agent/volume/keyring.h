/* SPDX-License-Identifier: MIT */
/* Private to agent/volume/: the kernel keyring (keyutils). */
#pragma once
#include <keyutils.h>

struct secret;

/* Add @s as a `user` key @desc to the process keyring, expiring after @timeout_sec. */
int volume_keyring_add_user(const char *desc, const struct secret *s, unsigned timeout_sec,
			    key_serial_t *ret_id);

/* Invalidate every key visible in /proc/keys whose description is "kmscrypt:<uuid>" or
 * "cryptsetup:<uuid>-d<N>" (the volume key libcryptsetup leaves in the thread keyring).
 * Return: the number of keys invalidated, or -errno. */
int volume_keyring_purge(const char *uuid);
