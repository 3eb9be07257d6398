/* SPDX-License-Identifier: MIT */
/*
 * The recovery key escrow (format --recovery-key-escrow, recovery-key show): the recovery key
 * wrapped by a second KMS configuration, bound to the volume UUID and the purpose "recovery",
 * in the envelope of codec/escrow.h.  Both functions log their errors once, with what to do.
 */
#pragma once
#include "codec/escrow.h"
#include "core/core.h"

struct secret;

/* Wrap @key (the recovery key of volume @uuid) through @h, prove the wrap by unwrapping it again,
 * and return the envelope text in *@ret_json (heap).  @device and @label only inform (may be
 * NULL).  Return: 0 or the provider's error class (kms/provider.h). */
int core_escrow_seal(struct kms_handle *h, const char *uuid, const char *device, const char *label,
		     const struct secret *key, char **ret_json);

/* Read and parse the envelope @path into *@ret_env (escrow_done() it).  Return: 0; -ENOENT and
 * file errors; -EBADMSG when it is not an envelope (the message says why). */
int core_escrow_read(const char *path, struct escrow *ret_env);
/* Open the envelope's KMS configuration and unwrap the recovery key into *@ret_key (locked
 * memory).  Return: 0; the configuration's load errors; the provider's error class (-EACCES with
 * a message sending the operator to the right file when the KMS refuses the wrapped key itself:
 * the file was modified, or its volume UUID changed); -EBADMSG when the plaintext is not a
 * recovery key. */
int core_escrow_unwrap(const struct core_ctx *c, const char *path, const struct escrow *env,
		       struct secret **ret_key);

/* recovery-key show --device: is @device the volume of envelope @env (read from @path)?  0;
 * -ENOENT, -ENODEV (not LUKS2), -EPERM (another volume's escrow), each logged with what to do. */
int core_escrow_check_device(const char *path, const struct escrow *env, const char *device);
/* Does the unwrapped recovery @key open a keyslot of @device?  0; -EPERM (none) and other errors,
 * logged. */
int core_escrow_test_key(const char *path, const struct escrow *env, const char *device,
			 const struct secret *key);

/* Is @s a recovery key as format makes them (8 groups of 8 modhex characters)? */
bool core_recovery_key_valid(const struct secret *s);
