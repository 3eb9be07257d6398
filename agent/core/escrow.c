/* SPDX-License-Identifier: MIT */
/* The recovery key escrow through a second KMS configuration (core/escrow.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/escrow.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/volume.h"

bool core_recovery_key_valid(const struct secret *s)
{
	static const char modhex[] = "cbdefghijklnrtuv";

	if (!s || s->len != 71)
		return false;
	for (size_t i = 0; i < s->len; i++)
		if (i % 9 == 8 ? s->buf[i] != '-' : !s->buf[i] || !strchr(modhex, s->buf[i]))
			return false;
	return true;
}

int core_escrow_seal(struct kms_handle *h, const char *uuid, const char *device, const char *label,
		     const struct secret *key, char **ret_json)
{
	struct kms_aad aad = {.uuid = uuid, .purpose = KMS_AAD_PURPOSE_RECOVERY};
	_cleanup_secret_ struct secret *back = NULL;
	struct kms_wrapped w = {};
	struct kms_error err = {};
	struct escrow e;
	char buf[512];
	int r;

	if (h->open_r < 0) {
		err = h->open_err;
		r = h->open_r;
	} else {
		r = h->cfg.provider->wrap(h->ctx, &aad, key, &w, &err);
	}
	if (r < 0) {
		kms_error_describe(&err, buf, sizeof(buf));
		return log_error_errno(
		    r,
		    "KMS '%s' (%s) could not wrap the recovery key for the escrow: "
		    "%s; %s. Nothing was written.",
		    h->cfg.name, h->cfg.provider->name, buf, core_hint_for_error(r, &err));
	}
	/* An escrow that does not open is worse than none: prove it before the volume exists. */
	r = h->cfg.provider->unwrap(h->ctx, &aad, &w, &back, &err);
	if (r == 0 && (back->len != key->len || secret_memcmp(back->buf, key->buf, key->len) != 0))
		r = kms_error_set(&err, -EBADMSG, "RoundTrip", "the unwrapped key differs");
	if (r < 0) {
		kms_wrapped_done(&w);
		kms_error_describe(&err, buf, sizeof(buf));
		return log_error_errno(
		    r,
		    "KMS '%s' (%s) wrapped the recovery key but cannot unwrap it "
		    "again: %s; the escrow would not open, so nothing was written. "
		    "%s.",
		    h->cfg.name, h->cfg.provider->name, buf, core_hint_for_error(r, &err));
	}
	e = (struct escrow){.uuid = (char *)uuid,
			    .kms = h->cfg.name,
			    .provider = (char *)h->cfg.provider->name,
			    .key_id = w.key_id,
			    .key_version = w.key_version,
			    .alg = w.alg,
			    .device = (char *)device,
			    .label = (char *)label,
			    .blob = w.blob,
			    .blob_len = w.blob_len};
	r = escrow_format(&e, time(NULL), ret_json);
	kms_wrapped_done(&w);
	if (r < 0)
		return log_error_errno(r, "Cannot write the recovery key escrow: %m");
	return 0;
}

int core_escrow_read(const char *path, struct escrow *ret_env)
{
	_cleanup_free_ char *text = NULL;
	char why[256] = "";
	size_t len = 0;
	int r;

	*ret_env = (struct escrow){};
	r = read_file_text(path, ESCROW_FILE_MAX, &text, &len);
	if (r == -ENOENT)
		return log_error_errno(r, "Escrow file '%s' does not exist.", path);
	if (r == -EFBIG)
		return log_error_errno(EBADMSG,
				       "'%s' is not a kmscrypt recovery key escrow file: "
				       "larger than %d KiB.",
				       path, ESCROW_FILE_MAX / 1024);
	if (r < 0)
		return log_error_errno(r, "Cannot read escrow file '%s': %m", path);
	r = escrow_parse(text, len, ret_env, why, sizeof(why));
	if (r == -ENOMEM)
		return log_error_errno(r, "Out of memory.");
	if (r < 0)
		return log_error_errno(
		    r,
		    "'%s' is not a kmscrypt recovery key escrow file: %s. Use the "
		    "file that 'kmscrypt format --recovery-key-escrow' wrote.",
		    path, why);
	return 0;
}

int core_escrow_unwrap(const struct core_ctx *c, const char *path, const struct escrow *env,
		       struct secret **ret_key)
{
	_cleanup_secret_ struct secret *key = NULL;
	struct kms_handle h = {};
	struct kms_error err = {};
	char buf[512];
	int r;

	r = kms_handle_open(c, env->kms, &h);
	if (r < 0)
		goto out; /* logged: no such configuration, unreadable, ... */
	if (strcmp(env->provider, h.cfg.provider->name) != 0) {
		r = log_error_errno(
		    EACCES,
		    "Escrow file '%s' was wrapped by provider %s, but KMS "
		    "configuration '%s' uses %s: create the configuration the escrow "
		    "was made with (same provider and key) under that name.",
		    path, env->provider, h.cfg.name, h.cfg.provider->name);
		goto out;
	}
	if (h.open_r < 0) {
		err = h.open_err;
		r = h.open_r;
	} else {
		struct kms_aad aad = {.uuid = env->uuid, .purpose = KMS_AAD_PURPOSE_RECOVERY};
		struct kms_wrapped w = {.key_id = env->key_id,
					.key_version = env->key_version,
					.alg = env->alg,
					.blob = env->blob,
					.blob_len = env->blob_len};
		r = h.cfg.provider->unwrap(h.ctx, &aad, &w, &key, &err);
	}
	if (r < 0) {
		kms_error_describe(&err, buf, sizeof(buf));
		if (err.token_rejected)
			log_error_errno(
			    r,
			    "KMS '%s' (%s) refuses the wrapped key of escrow file '%s': %s. "
			    "The file was modified, or it is not the escrow of volume %s "
			    "(the volume UUID is bound into the wrap): use the escrow file "
			    "written when that volume was formatted.",
			    h.cfg.name, h.cfg.provider->name, path, buf, env->uuid);
		else
			log_error_errno(
			    r,
			    "KMS '%s' (%s) could not unwrap the recovery key of volume %s "
			    "from '%s': %s; %s.",
			    h.cfg.name, h.cfg.provider->name, env->uuid, path, buf,
			    core_hint_for_error(r, &err));
		goto out;
	}
	if (!core_recovery_key_valid(key)) {
		r = log_error_errno(
		    EBADMSG,
		    "Escrow file '%s' unwrapped to something that is not a kmscrypt "
		    "recovery key; it was not written by 'kmscrypt format'.",
		    path);
		goto out;
	}
	*ret_key = TAKE_PTR(key);
	r = 0;
out:
	kms_handle_done(&h);
	return r;
}

int core_escrow_check_device(const char *path, const struct escrow *env, const char *device)
{
	struct volume_header hdr = {};
	int r;

	r = volume_read_header(device, &hdr);
	if (r == -ENOENT)
		return log_error_errno(r, "Device '%s' does not exist.", device);
	if (r < 0) {
		log_error_errno(r, "'%s' is not a LUKS2 volume: %m", device);
		return r == -EINVAL ? -ENODEV : r;
	}
	if (strcasecmp(hdr.uuid, env->uuid) != 0) {
		r = log_error_errno(EPERM,
				    "Escrow file '%s' holds the recovery key of volume %s, but '%s' is "
				    "volume %s: use the escrow file of that volume.",
				    path, env->uuid, device, hdr.uuid);
		volume_header_done(&hdr);
		return r;
	}
	volume_header_done(&hdr);
	return 0;
}

int core_escrow_test_key(const char *path, const struct escrow *env, const char *device,
			 const struct secret *key)
{
	int r = volume_test_secret(device, -1 /* CRYPT_ANY_SLOT */, key);

	if (r == -EPERM)
		log_error("The recovery key of escrow file '%s' opens no keyslot of '%s' (UUID %s): "
			  "its recovery keyslot was removed or its passphrase changed. Nothing was "
			  "written.",
			  path, device, env->uuid);
	else if (r < 0)
		log_error_errno(r, "Cannot test the recovery key on '%s': %m", device);
	return r;
}
