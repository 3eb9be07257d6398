/* SPDX-License-Identifier: MIT */
/*
 * LUKS2 re-encryption to a new volume key (volume.h, "re-encryption").
 *
 * What libcryptsetup 2.6 does, and what we do around it:
 *   - crypt_reencrypt_init_by_passphrase(keyslot_old, keyslot_new) needs an existing *unbound*
 *     keyslot holding the new volume key; the kmscrypt secret opens both the old kmscrypt keyslot
 *     and that new one.  (Not by_keyring: it aborts in 2.6.1, see run_pass().)
 *   - While it is pending, an activation needs one keyslot of each key: the kmscrypt secret opens
 *     one of each, with CRYPT_ANY_SLOT (luks_keyslot_for_open()).
 *   - When the data pass finishes, libcryptsetup destroys every keyslot of the old key
 *     (lib/luks2/luks2_reencrypt.c, reencrypt_teardown_ok()), which also drops the keyslot from the
 *     tokens assigned to it.  A keyslot whose passphrase nobody gave a new-key keyslot is lost.
 *   - The kmscrypt secret is wrapped for "<uuid>:<keyslot>" (include/kmscrypt/token.h): so after
 *     the pass, the secret is added back in its old keyslot number from the new keyslot, the token
 *     re-assigned, and the extra keyslot destroyed.  The recovery keyslot keeps working in the new
 *     keyslot number made for it.
 * The journal token ("kmscrypt-reencrypt", assigned to no keyslot) holds the plan; its "done" is
 * set once the data pass finished, so every crash point has one way forward
 * (volume_reencrypt_resume()).
 */
#include <errno.h>
#include <libcryptsetup.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "kmscrypt/token.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/dm.h"
#include "volume/keyring.h"
#include "volume/luks.h"
#include "volume/volume.h"

#define REENC_HOTZONE_BYTES (8u << 20) /* the keyring passphrase outlives a crash by at most this */

struct journal {
	int id; /* token id, -1 when none */
	int keyslot, keyslot_new, recovery_new;
	bool done;
};

static int json_int(json_object *o, const char *key, int dflt)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return dflt;
	return json_object_get_int(v);
}

/* The journal token of @cd, if any: 0 (j->id -1 when none) or -EBADMSG. */
static int journal_read(struct crypt_device *cd, struct journal *j)
{
	*j = (struct journal){.id = -1, .keyslot = -1, .keyslot_new = -1, .recovery_new = -1};
	for (int id = 0; id < 32; id++) {
		const char *type = NULL, *text = NULL;
		crypt_token_info ti = crypt_token_status(cd, id, &type);
		json_object *o, *v;

		if (ti == CRYPT_TOKEN_INVALID || ti == CRYPT_TOKEN_INACTIVE || !type ||
		    strcmp(type, VOLUME_REENCRYPT_TOKEN_TYPE) != 0)
			continue;
		if (crypt_token_json_get(cd, id, &text) < 0)
			return -EBADMSG;
		o = json_tokener_parse(text);
		if (!o)
			return -EBADMSG;
		j->id = id;
		j->keyslot = json_int(o, "kmscrypt_keyslot", -1);
		j->keyslot_new = json_int(o, "new_keyslot", -1);
		j->recovery_new = json_int(o, "recovery_new_keyslot", -1);
		j->done = json_object_object_get_ex(o, "done", &v) && json_object_get_boolean(v);
		json_object_put(o);
		if (j->keyslot < 0 || j->keyslot_new < 0 || j->keyslot == j->keyslot_new)
			return -EBADMSG;
		return 0;
	}
	return 0;
}

/* Write @j as a new journal token (j->id < 0) or over the existing one. */
static int journal_write(struct crypt_device *cd, struct journal *j)
{
	char json[256];
	int r;

	snprintf(json, sizeof(json),
		 "{\"type\":\"%s\",\"keyslots\":[],\"kmscrypt_keyslot\":%d,\"new_keyslot\":%d,"
		 "\"recovery_new_keyslot\":%d,\"done\":%s}",
		 VOLUME_REENCRYPT_TOKEN_TYPE, j->keyslot, j->keyslot_new, j->recovery_new,
		 j->done ? "true" : "false");
	r = crypt_token_json_set(cd, j->id >= 0 ? j->id : CRYPT_ANY_TOKEN, json);
	if (r < 0)
		return r;
	j->id = r;
	return 0;
}

static bool slot_bound(struct crypt_device *cd, int ks)
{
	crypt_keyslot_info ki = crypt_keyslot_status(cd, ks);

	return ki == CRYPT_SLOT_ACTIVE || ki == CRYPT_SLOT_ACTIVE_LAST;
}

static int info_locked(const char *device, struct volume_reencrypt_info *ret)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	struct volume_reencrypt_info i = {.keyslot = -1, .keyslot_new = -1, .recovery_new = -1};
	struct journal j;
	crypt_reencrypt_info ri;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	ri = crypt_reencrypt_status(cd, NULL);
	i.pending = ri == CRYPT_REENCRYPT_NONE ? 0 : ri == CRYPT_REENCRYPT_CLEAN ? 1 : 2;
	r = journal_read(cd, &j);
	if (r < 0)
		return r;
	i.journal = j.id >= 0;
	i.keyslot = j.keyslot;
	i.keyslot_new = j.keyslot_new;
	i.recovery_new = j.recovery_new;
	i.new_key_bound = i.journal && (j.done || slot_bound(cd, j.keyslot_new));
	for (int ks = 0; ks < crypt_keyslot_max(CRYPT_LUKS2) && i.n_active < 32; ks++)
		if (slot_bound(cd, ks))
			i.active[i.n_active++] = ks;
	*ret = i;
	return 0;
}

int volume_reencrypt_info(const char *device, struct volume_reencrypt_info *ret)
{
	int r;

	luks_lock();
	r = info_locked(device, ret);
	volume_unlock();
	return r;
}

static int test_pass(struct crypt_device *cd, int keyslot, const struct secret *s)
{
	volume_dm_quiet();
	return crypt_activate_by_passphrase(cd, NULL, keyslot, (const char *)s->buf, s->len, 0);
}

int volume_keyslot_of(const char *device, const struct secret *pass)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	int r;

	luks_lock();
	r = luks_open(device, &cd);
	if (r == 0) {
		r = test_pass(cd, CRYPT_ANY_SLOT, pass);
		if (r == -ENOENT)
			r = -EPERM;
	}
	crypt_free(TAKE_PTR(cd));
	volume_unlock();
	return r;
}

/* @name must be an active crypt mapping of @cd's volume. */
static int check_mapping(struct crypt_device *cd, const char *name)
{
	struct volume_mapping m;
	const char *uuid = crypt_get_uuid(cd);
	int r;

	if (!volume_dm_available())
		return -ENOTSUP;
	volume_dm_quiet();
	r = volume_dm_query(name, &m, NULL);
	/* -ENODEV with the uuid filled: the top of an online re-encryption's device stack, whose
	 * first target is not (yet) a crypt target */
	if (r < 0 && !(r == -ENODEV && m.uuid[0]))
		return r;
	if (!uuid || strcasecmp(m.uuid, uuid) != 0 || m.suspended)
		return -EBUSY;
	return 0;
}

static int free_slot(struct crypt_device *cd, int after, int not)
{
	for (int ks = after; ks < crypt_keyslot_max(CRYPT_LUKS2); ks++)
		if (ks != not && crypt_keyslot_status(cd, ks) == CRYPT_SLOT_INACTIVE)
			return ks;
	return -ENOSPC;
}

/* The PBKDF of @keyslot for a copy of it, without benchmark (what cryptsetup reencrypt does). */
static int pbkdf_like(struct crypt_device *cd, int keyslot)
{
	struct crypt_pbkdf_type pb = {};
	int r;

	r = crypt_keyslot_get_pbkdf(cd, keyslot, &pb);
	if (r < 0)
		return crypt_set_pbkdf_type(cd, NULL);
	pb.flags |= CRYPT_PBKDF_NO_BENCHMARK;
	pb.time_ms = 0;
	return crypt_set_pbkdf_type(cd, &pb);
}

/* The data pass: init (or resume) through the keyring, then run. */
static int run_pass(struct crypt_device *cd, const char *name, const struct secret *secret,
		    int keyslot_old, int keyslot_new, bool resume,
		    const struct volume_reencrypt_params *p)
{
	struct crypt_params_luks2 luks2 = {.sector_size = (uint32_t)crypt_get_sector_size(cd)};
	struct crypt_params_reencrypt rp = {
	    .mode = CRYPT_REENCRYPT_REENCRYPT,
	    .direction = CRYPT_REENCRYPT_FORWARD,
	    .resilience = "checksum",
	    .hash = "sha256",
	    /* a step suspends the mapping's I/O for its hotzone: keep steps short online */
	    .max_hotzone_size = REENC_HOTZONE_BYTES / 512,
	    .luks2 = &luks2,
	    .flags = resume ? CRYPT_REENCRYPT_RESUME_ONLY : 0,
	};
	_cleanup_free_ char *uuid = NULL, *cipher = NULL, *mode = NULL;
	int r, k;

	uuid = strdup(crypt_get_uuid(cd) ?: "");
	cipher = strdup(crypt_get_cipher(cd) ?: "aes");
	mode = strdup(crypt_get_cipher_mode(cd) ?: "xts-plain64");
	if (!uuid || !cipher || !mode)
		return -ENOMEM;
	/* Not crypt_reencrypt_init_by_keyring(): in libcryptsetup 2.6.1 it free()s the passphrase
	 * it read from the keyring with the wrong allocator and aborts ("free(): invalid pointer",
	 * tests/unit/test_volume_reencrypt.c ran into it).  The passphrase call copies the secret
	 * into libcryptsetup's own wiped memory. */
	(void)crypt_volume_key_keyring(cd, 1);
	volume_dm_quiet();
	r = crypt_reencrypt_init_by_passphrase(cd, name, (const char *)secret->buf, secret->len,
					       keyslot_old, keyslot_new, resume ? NULL : cipher,
					       resume ? NULL : mode, &rp);
	if (r >= 0) {
		volume_dm_quiet();
		r = crypt_reencrypt_run(cd, p->progress, p->userdata);
	}
	/* the logon copies of both volume keys stay in this thread's keyring otherwise */
	k = volume_keyring_purge(uuid);
	if (k < 0)
		log_debug("Failed to purge keys of '%s': %s", uuid, strerror(-k));
	if (r < 0)
		return r == -ENOENT ? -EPERM : r;
	/* a progress callback that asked to stop leaves it pending, and run returns 0 */
	if (crypt_reencrypt_status(cd, NULL) != CRYPT_REENCRYPT_NONE)
		return -EINTR;
	return 0;
}

/* After the data pass: the kmscrypt secret back in its keyslot number, token re-assigned, the
 * extra keyslot gone, then the journal.  Each step checks first: safe to repeat after a crash. */
static int finish_keyslots(const char *device, const struct secret *secret)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	struct journal j;
	int token, r;

	/* a fresh context: the header as the data pass left it on disk */
	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	r = journal_read(cd, &j);
	if (r < 0)
		return r;
	if (j.id < 0)
		return 0;
	if (!j.done) {
		j.done = true;
		r = journal_write(cd, &j);
		if (r < 0)
			return r;
	}
	if (crypt_keyslot_status(cd, j.keyslot) == CRYPT_SLOT_INACTIVE) {
		r = crypt_set_pbkdf_type(cd, &luks_pbkdf_min);
		if (r < 0)
			return r;
		/* opens the new-key keyslot (now the data's), adds the same secret in its old number */
		r = crypt_keyslot_add_by_passphrase(cd, j.keyslot, (const char *)secret->buf,
						    secret->len, (const char *)secret->buf,
						    secret->len);
		if (r < 0)
			return r == -ENOENT ? -EPERM : r;
	}
	token = token_find(cd);
	if (token >= 0 && crypt_token_is_assigned(cd, token, j.keyslot) != 0) {
		r = crypt_token_assign_keyslot(cd, token, j.keyslot);
		if (r < 0)
			return r;
	}
	if (slot_bound(cd, j.keyslot) && crypt_keyslot_status(cd, j.keyslot_new) != CRYPT_SLOT_INACTIVE) {
		r = crypt_keyslot_destroy(cd, j.keyslot_new);
		if (r < 0)
			return r;
	}
	r = crypt_token_json_set(cd, j.id, NULL);
	return r < 0 ? r : 0;
}

static int start_locked(const char *device, const struct volume_reencrypt_params *p,
			int *ret_recovery_keyslot)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	_cleanup_secret_ struct secret *vk = NULL;
	struct journal j;
	int r, rec_old = -1, vk_size;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	if (crypt_reencrypt_status(cd, NULL) != CRYPT_REENCRYPT_NONE)
		return -EALREADY;
	r = journal_read(cd, &j);
	if (r < 0)
		return r;
	if (j.id >= 0)
		return -EALREADY;
	if (p->name) {
		r = check_mapping(cd, p->name);
		if (r < 0)
			return r;
	}
	r = test_pass(cd, p->keyslot, p->secret);
	if (r < 0)
		return r == -ENOENT ? -EPERM : r;
	if (p->recovery) {
		rec_old = test_pass(cd, CRYPT_ANY_SLOT, p->recovery);
		if (rec_old < 0 || rec_old == p->keyslot)
			return -EPERM;
	}
	/* the new-key keyslots, and one free for libcryptsetup's "reencrypt" keyslot */
	j.keyslot = p->keyslot;
	j.keyslot_new = free_slot(cd, 0, -1);
	if (j.keyslot_new < 0)
		return j.keyslot_new;
	if (p->recovery) {
		j.recovery_new = free_slot(cd, j.keyslot_new + 1, -1);
		if (j.recovery_new < 0)
			return j.recovery_new;
	}
	r = free_slot(cd, MAX(j.keyslot_new, j.recovery_new) + 1, -1);
	if (r < 0)
		return r;

	vk_size = crypt_get_volume_key_size(cd);
	if (vk_size <= 0)
		return -EINVAL;
	r = secret_random((size_t)vk_size, &vk);
	if (r < 0)
		return r;
	/* the plan first: from here on every crash leaves a journal to finish or undo */
	r = journal_write(cd, &j);
	if (r < 0)
		return r;
	r = crypt_set_pbkdf_type(cd, &luks_pbkdf_min);
	if (r >= 0)
		r = crypt_keyslot_add_by_key(cd, j.keyslot_new, (const char *)vk->buf, vk->len,
					     (const char *)p->secret->buf, p->secret->len,
					     CRYPT_VOLUME_KEY_NO_SEGMENT);
	if (r >= 0 && p->recovery) {
		r = pbkdf_like(cd, rec_old);
		if (r >= 0)
			/* DIGEST_REUSE: bound to the new key's digest, the one of keyslot_new;
			 * without it each unbound keyslot gets a digest of its own, and the
			 * recovery keyslot would stay unbound when the new key takes over */
			r = crypt_keyslot_add_by_key(cd, j.recovery_new, (const char *)vk->buf,
						     vk->len, (const char *)p->recovery->buf,
						     p->recovery->len,
						     CRYPT_VOLUME_KEY_NO_SEGMENT |
							     CRYPT_VOLUME_KEY_DIGEST_REUSE);
	}
	vk = secret_free(vk);
	if (r >= 0)
		r = run_pass(cd, p->name, p->secret, p->keyslot, j.keyslot_new, false, p);
	if (r < 0 && crypt_reencrypt_status(cd, NULL) == CRYPT_REENCRYPT_NONE &&
	    r != -EINTR) {
		/* nothing started: take the new keyslots and the journal away again */
		int k;
		if (crypt_keyslot_status(cd, j.keyslot_new) == CRYPT_SLOT_UNBOUND)
			(void)crypt_keyslot_destroy(cd, j.keyslot_new);
		if (j.recovery_new >= 0 &&
		    crypt_keyslot_status(cd, j.recovery_new) == CRYPT_SLOT_UNBOUND)
			(void)crypt_keyslot_destroy(cd, j.recovery_new);
		k = crypt_token_json_set(cd, j.id, NULL);
		if (k < 0)
			log_debug("Failed to remove the re-encryption journal: %s", strerror(-k));
		return r;
	}
	if (r < 0)
		return r;
	crypt_free(TAKE_PTR(cd));
	r = finish_keyslots(device, p->secret);
	if (r < 0)
		return r;
	*ret_recovery_keyslot = j.recovery_new;
	return 0;
}

int volume_reencrypt(const char *device, const struct volume_reencrypt_params *p,
		     int *ret_recovery_keyslot)
{
	int r;

	*ret_recovery_keyslot = -1;
	luks_lock();
	r = start_locked(device, p, ret_recovery_keyslot);
	volume_unlock();
	return r;
}

static int resume_locked(const char *device, const struct volume_reencrypt_params *p,
			 int *ret_recovery_keyslot)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	const char *name = p->name;
	crypt_reencrypt_info ri;
	struct journal j;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	ri = crypt_reencrypt_status(cd, NULL);
	r = journal_read(cd, &j);
	if (r < 0)
		return r;
	if (j.id < 0)
		return ri == CRYPT_REENCRYPT_NONE ? -ENOENT : -EMEDIUMTYPE;
	if (ri == CRYPT_REENCRYPT_INVALID)
		return -EBADMSG;
	if (p->name) {
		r = check_mapping(cd, p->name);
		if ((r == -ENOENT || r == -ENOTSUP) && p->name_optional)
			name = NULL; /* not open (or no device-mapper at all): offline */
		else if (r < 0)
			return r;
	}
	*ret_recovery_keyslot = j.recovery_new;
	if (ri != CRYPT_REENCRYPT_NONE) {
		r = run_pass(cd, name, p->secret, CRYPT_ANY_SLOT, CRYPT_ANY_SLOT, true, p);
	} else if (!j.done && crypt_keyslot_status(cd, j.keyslot_new) == CRYPT_SLOT_UNBOUND) {
		/* stopped after the new keyslots were made, before the data pass began */
		if (j.recovery_new >= 0 &&
		    crypt_keyslot_status(cd, j.recovery_new) == CRYPT_SLOT_INACTIVE)
			*ret_recovery_keyslot = -1; /* never made: the recovery key is not carried */
		r = run_pass(cd, name, p->secret, j.keyslot, j.keyslot_new, false, p);
	} else if (!j.done && !slot_bound(cd, j.keyslot_new)) {
		/* stopped before the new key had a keyslot: nothing changed; undo the plan */
		if (j.recovery_new >= 0 &&
		    crypt_keyslot_status(cd, j.recovery_new) == CRYPT_SLOT_UNBOUND)
			(void)crypt_keyslot_destroy(cd, j.recovery_new);
		r = crypt_token_json_set(cd, j.id, NULL);
		return r < 0 ? r : -ECANCELED;
	}
	if (r < 0)
		return r;
	crypt_free(TAKE_PTR(cd));
	return finish_keyslots(device, p->secret);
}

int volume_reencrypt_resume(const char *device, const struct volume_reencrypt_params *p,
			    int *ret_recovery_keyslot)
{
	int r;

	*ret_recovery_keyslot = -1;
	luks_lock();
	r = resume_locked(device, p, ret_recovery_keyslot);
	volume_unlock();
	return r;
}
