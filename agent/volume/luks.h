/* SPDX-License-Identifier: MIT */
/* Private to agent/volume/: what luks.c shares with reencrypt.c. */
#pragma once
#include <libcryptsetup.h>

/* PBKDF2, 1000 iterations, no benchmark: for keyslots opened by machine-generated secrets. */
extern const struct crypt_pbkdf_type luks_pbkdf_min;

/* volume_lock() with libcryptsetup and libdevmapper logging to us. */
void luks_lock(void);
void crypt_freep(struct crypt_device **cd);
/* Context for the LUKS2 header of @device: -ENOENT when missing, -ENODEV when not LUKS2. */
int luks_open(const char *device, struct crypt_device **ret);
/* Id of the first token of type "kmscrypt", or -ENOENT. */
int token_find(struct crypt_device *cd);
/* The keyslot to open @keyslot's secret with: @keyslot, or CRYPT_ANY_SLOT while a re-encryption
 * is pending (libcryptsetup then needs one keyslot of the old key and one of the new key, and
 * the kmscrypt secret opens one of each: volume/reencrypt.c). */
int luks_keyslot_for_open(struct crypt_device *cd, int keyslot);
