/* SPDX-License-Identifier: MIT */
/*
 * The flows that make or remove a binding in a LUKS2 header (core/format.c): format (a new volume
 * bound to one or more KMSs, with a recovery key and its optional escrow), bind (an existing
 * volume) and unbind.  Front ends parse arguments, ask for confirmation and print; everything
 * between (the state-dir lock, KMS wraps, keyslots, the recovery key file, state and audit
 * records) happens here.  Every function logs its errors once, with what to do next.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/token.h"
#include "core/core.h"
#include "kmscrypt/token.h"
#include "volume/volume.h"

struct secret;

/* "KMS 'a' (local)" or "KMSs 'a' (local), 'b' (vault), 2 of which open it" */
#define CORE_BINDING_DESC_MAX (KMSCRYPT_TOKEN_MAX_WRAPS * 80)

/* Is @device a block device or an image file?  0, -EINVAL (neither) or -errno; logs. */
int core_device_check(const char *device);

/* What format checks before it asks anything (and before it takes the state-dir lock, so a
 * person reading the question holds up no boot unlock): @device exists, holds a LUKS2 header and
 * at least 1 MiB of data, and is not an open volume.  Return: 0 when it carries no signature;
 * -EEXIST when it does (not logged: *@ret_what, heap or NULL, names it for the question); other
 * errors logged.  core_format() checks again what may have changed since. */
int core_format_probe(const char *device, char **ret_what);

struct core_format_req {
	const char *device;          /* absolute when it resolves */
	const char *const *kms;      /* the KMS configurations of the binding, @n_kms of them */
	size_t n_kms;                /* 1 to KMSCRYPT_TOKEN_MAX_WRAPS, all different */
	unsigned threshold;          /* 1 (any one opens it) to @n_kms (Shamir k of n) */
	const char *label;           /* the LUKS2 label, NULL for none (at most 47 characters) */
	const char *recovery_path;   /* a new file (0600) for the recovery key or its escrow */
	const char *escrow_kms;      /* wrap the recovery key by this configuration into the file */
	bool no_recovery;            /* no recovery keyslot at all */
	uint32_t sector_size;        /* 0: libcryptsetup's default */
};

struct core_format_result {
	char uuid[40];                    /* the new volume's UUID */
	const char *provider;             /* the provider of kms[0] (a static string) */
	char desc[CORE_BINDING_DESC_MAX]; /* the binding, for one line of text */
	struct secret *recovery;          /* the recovery key when no @recovery_path got it: the
					   * only copy, locked (secret_free() it) */
};

/* Format @req->device (core_format_probe() passed and the caller confirmed): wrap a fresh secret
 * by every KMS, write the recovery key (or its escrow) to its file before the volume exists, then
 * the LUKS2 header with the token in keyslot 0 and the recovery key in keyslot 1; record the
 * binding in state and audit.  A failure before volume_format() writes nothing.  0 or -errno. */
int core_format(const struct core_ctx *c, const struct core_format_req *req,
		struct core_format_result *ret);
void core_format_result_done(struct core_format_result *res);

struct core_bind_req {
	const char *device;     /* absolute when it resolves */
	const char *const *kms; /* as in core_format_req */
	size_t n_kms;
	unsigned threshold;
	const char *keyfile;    /* opens an existing keyslot; read verbatim, "-" is stdin */
};

struct core_bind_result {
	char uuid[40];                    /* set once the header is read, also on failure */
	int keyslot;                      /* the new keyslot */
	const char *provider;             /* the provider of kms[0] (a static string) */
	char desc[CORE_BINDING_DESC_MAX]; /* the binding, for one line of text */
};

/* Bind the existing LUKS2 volume @req->device: finish or undo what a killed bind left, wrap a
 * fresh secret by every KMS and add it in a free keyslot with its token.  0 or -errno (-EEXIST:
 * already bound; -EPERM: the key file opens no keyslot; -ENODEV: not LUKS2). */
int core_bind(const struct core_ctx *c, const struct core_bind_req *req,
	      struct core_bind_result *ret);

/* unbind in two steps, so that the front end can ask in between. */
struct core_unbind {
	const char *device;
	struct volume_header hdr;
	struct kmscrypt_token tok; /* tok.kms: NULL when the token cannot be parsed */
	int left;                  /* the keyslots left afterwards (0 when unknown) */
};
/* Read @device's header and token (logs; an invalid token is no error) and count the keyslots
 * unbind would leave.  0 or -errno; core_unbind_done() @u either way. */
int core_unbind_prepare(const char *device, struct core_unbind *u);
/* Remove the kmscrypt token(s) and keyslot under the state-dir lock, and audit it.  0 or -errno
 * (-EPERM: the kmscrypt keyslot is the only one). */
int core_unbind(const struct core_ctx *c, struct core_unbind *u);
void core_unbind_done(struct core_unbind *u);
