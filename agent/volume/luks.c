/* SPDX-License-Identifier: MIT */
/*
 * LUKS2 through libcryptsetup: headers, keyslots, tokens, and the dm-crypt life cycle (activate,
 * suspend + key wipe, resume, deactivate).  Every public function takes volume_lock() (dm.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libcryptsetup.h>
#include <libdevmapper.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>

#include "kmscrypt/token.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/dm.h"
#include "volume/keyring.h"
#include "volume/luks.h"
#include "volume/volume.h"

#define LUKS2_VOLUME_KEY_BYTES 64 /* aes-xts-plain64 with two AES-256 keys */
#define ACTIVATE_KEY_TIMEOUT_SEC 30

/*
 * Machine-generated secrets are high-entropy: PBKDF2 with 1000 iterations and no benchmark, as
 * systemd-cryptenroll and clevis do.  A default argon2id keyslot costs seconds and up to 1 GiB.
 */
const struct crypt_pbkdf_type luks_pbkdf_min = {
    .type = CRYPT_KDF_PBKDF2,
    .hash = "sha256",
    .iterations = 1000,
    .flags = CRYPT_PBKDF_NO_BENCHMARK,
};

static void luks_log(int level, const char *msg, void *usrptr)
{
	size_t n = strlen(msg);

	while (n > 0 && msg[n - 1] == '\n')
		n--;
	log_debug("libcryptsetup: %.*s", (int)n, msg);
}

static pthread_once_t luks_once = PTHREAD_ONCE_INIT;

static void luks_setup_once(void)
{
	/* The default callback serves every context and context-less messages; without it the
	 * library prints to stdout/stderr.  Our log is thread-safe (util/log.c takes a mutex). */
	crypt_set_log_callback(NULL, luks_log, NULL);
	/* kmscrypt unwraps its own tokens and never activates through libcryptsetup's token API, so
	 * no external token plugin is needed in this process; without this, every header load that
	 * asks for a token's status dlopen()s libcryptsetup-token-kmscrypt.so (and relocates it)
	 * again.  Process-wide and one-way: only ever reached through luks_lock(), which the token
	 * plugin never takes (it lives inside cryptsetup or systemd-cryptsetup). */
	crypt_token_external_disable();
}

void volume_set_debug(bool on)
{
	pthread_once(&luks_once, luks_setup_once);
	/* not CRYPT_DEBUG_JSON: no token dumps */
	crypt_set_debug_level(on ? CRYPT_DEBUG_ALL : CRYPT_DEBUG_NONE);
}

/* Take the lock and make sure libcryptsetup and libdevmapper log to us, not to stderr. */
void luks_lock(void)
{
	pthread_once(&luks_once, luks_setup_once);
	volume_lock();
	volume_dm_quiet();
}

void crypt_freep(struct crypt_device **cd)
{
	if (*cd)
		crypt_free(*cd);
}

/* Context for the LUKS2 header of @device: -ENOENT when missing, -ENODEV when not LUKS2. */
int luks_open(const char *device, struct crypt_device **ret)
{
	struct crypt_device *cd = NULL;
	struct stat st;
	int r;

	if (stat(device, &st) < 0)
		return -errno;
	if (volume_dm_device_suspended(device))
		return -EBUSY;
	r = crypt_init(&cd, device);
	if (r < 0)
		return r;
	r = crypt_load(cd, CRYPT_LUKS2, NULL);
	if (r < 0) {
		crypt_free(cd);
		return r == -EINVAL ? -ENODEV : r;
	}
	*ret = cd;
	return 0;
}

/* Context of the active mapping @name (header read from its backing device, never from @name). */
static int luks_open_by_name(const char *name, struct crypt_device **ret)
{
	int r;

	r = crypt_init_by_name(ret, name);
	if (r == -ENODEV)
		return -ENOENT; /* "Device %s is not active." */
	return r;
}

/* Opening one keyslot: an inactive keyslot (-ENOENT) is not opened by the secret either. */
static int keyslot_errno(int r)
{
	return r == -ENOENT ? -EPERM : r;
}

int luks_keyslot_for_open(struct crypt_device *cd, int keyslot)
{
	return crypt_reencrypt_status(cd, NULL) == CRYPT_REENCRYPT_NONE ? keyslot : CRYPT_ANY_SLOT;
}

/* Id of the first token of type "kmscrypt", or -ENOENT. */
int token_find(struct crypt_device *cd)
{
	for (int id = 0; id < 32; id++) { /* LUKS2_TOKENS_MAX */
		const char *type = NULL;
		crypt_token_info ti = crypt_token_status(cd, id, &type);

		if (ti != CRYPT_TOKEN_INVALID && ti != CRYPT_TOKEN_INACTIVE && type &&
		    strcmp(type, KMSCRYPT_TOKEN_TYPE) == 0)
			return id;
	}
	return -ENOENT;
}

/* luks_open() and the kmscrypt token's id: -ENODEV when there is none. */
static int luks_open_token(const char *device, struct crypt_device **ret_cd, int *ret_token)
{
	struct crypt_device *cd = NULL;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	r = token_find(cd);
	if (r < 0) {
		crypt_free(cd);
		return -ENODEV;
	}
	*ret_cd = cd;
	*ret_token = r;
	return 0;
}

/*
 * Import @json as a new token assigned to exactly @keyslot.  libcryptsetup validates a token's
 * "keyslots" array on import (LUKS2_token_validate(): an array of strings naming existing
 * keyslots), so the keyslot must exist first; our JSON already names it, and
 * crypt_token_assign_keyslot() is a no-op then.  On failure the token is removed again.  Return:
 * the token id or -errno.
 */
static int token_import(struct crypt_device *cd, int keyslot, const char *json)
{
	const char *type = NULL;
	int token, r;

	token = crypt_token_json_set(cd, CRYPT_ANY_TOKEN, json);
	if (token < 0)
		return token == -EINVAL ? -EBADMSG : token;

	r = crypt_token_assign_keyslot(cd, token, keyslot);
	if (r < 0)
		goto fail;
	r = -EBADMSG;
	(void)crypt_token_status(cd, token, &type);
	if (!type || strcmp(type, KMSCRYPT_TOKEN_TYPE) != 0)
		goto fail;
	for (int ks = 0; ks < crypt_keyslot_max(CRYPT_LUKS2); ks++)
		if ((crypt_token_is_assigned(cd, token, ks) == 0) != (ks == keyslot))
			goto fail;
	return token;
fail:
	(void)crypt_token_json_set(cd, token, NULL);
	return r;
}

void volume_header_done(struct volume_header *h)
{
	if (!h)
		return;
	free(h->token_json);
	*h = (struct volume_header){.token_id = -1};
}

static int read_header_locked(const char *device, struct volume_header *ret)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	struct volume_header h = {.token_id = -1};
	const char *s;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	s = crypt_get_uuid(cd);
	snprintf(h.uuid, sizeof(h.uuid), "%s", s ?: "");
	s = crypt_get_label(cd);
	snprintf(h.label, sizeof(h.label), "%s", s ?: "");
	/* as volume_tokens_list() counts them: the unlock skips that second header read when
	 * there is only one (no rotation in progress) */
	for (int id = 0; id < 32; id++) { /* LUKS2_TOKENS_MAX */
		const char *type = NULL;
		crypt_token_info ti = crypt_token_status(cd, id, &type);

		if (ti != CRYPT_TOKEN_INVALID && ti != CRYPT_TOKEN_INACTIVE && type &&
		    strncmp(type, KMSCRYPT_TOKEN_TYPE, strlen(KMSCRYPT_TOKEN_TYPE)) == 0)
			h.kmscrypt_tokens++;
	}
	r = token_find(cd);
	if (r >= 0) {
		const char *json = NULL;

		h.token_id = r;
		r = crypt_token_json_get(cd, h.token_id, &json);
		if (r < 0)
			return r;
		h.token_json = strdup(json);
		if (!h.token_json)
			return -ENOMEM;
	}
	*ret = h;
	return 0;
}

int volume_read_header(const char *device, struct volume_header *ret)
{
	int r;

	luks_lock();
	r = read_header_locked(device, ret);
	volume_unlock();
	return r;
}

static int token_update_locked(const char *device, const char *old_json, const char *new_json,
			       char **ret_reread)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	const char *cur = NULL;
	int token, r;

	r = luks_open_token(device, &cd, &token);
	if (r < 0)
		return r;
	r = crypt_token_json_get(cd, token, &cur);
	if (r < 0)
		return r;
	/* Compare and swap: the caller edited what it read; anything else changed meanwhile. */
	if (strcmp(cur, old_json) != 0)
		return -ESTALE;
	/* Same token id: libcryptsetup replaces the token and writes both header copies (a crash
	 * leaves the old or the new token, never none). */
	r = crypt_token_json_set(cd, token, new_json);
	if (r < 0)
		return r == -EINVAL ? -EBADMSG : r;
	/* Read back: crypt_load() on a loaded context reads the header from the device again
	 * (both copies, checksums) and replaces the one in memory; no second context needed. */
	r = crypt_load(cd, CRYPT_LUKS2, NULL);
	if (r < 0)
		return r;
	cur = NULL;
	r = crypt_token_json_get(cd, token, &cur);
	if (r < 0)
		return r;
	*ret_reread = strdup(cur);
	return *ret_reread ? 0 : -ENOMEM;
}

int volume_reread_token(const char *device, char **ret_json)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	const char *json = NULL;
	int token, r;

	/* No luks_lock(): that installs our log callback, and in the token plugin the process and
	 * its libcryptsetup log belong to the host (cryptsetup, systemd-cryptsetup). */
	volume_lock();
	r = luks_open_token(device, &cd, &token);
	if (r < 0)
		goto out;
	r = crypt_token_json_get(cd, token, &json);
	if (r < 0)
		goto out;
	*ret_json = strdup(json);
	r = *ret_json ? 0 : -ENOMEM;
out:
	crypt_free(TAKE_PTR(cd));
	volume_unlock();
	return r;
}

int volume_token_update(const char *device, const char *old_json, const char *new_json,
			char **ret_reread)
{
	int r;

	luks_lock();
	r = token_update_locked(device, old_json, new_json, ret_reread);
	volume_unlock();
	return r;
}

/* ---- scan ------------------------------------------------------------------------------------ */

static int read_sysfs_line(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "re");

	if (!f)
		return -errno;
	if (!fgets(buf, (int)size, f)) {
		fclose(f);
		return -EIO;
	}
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

/* /sys/class/block/@name -> "/dev/..." when worth probing: non-empty, not a suspended dm device
 * (reading one would block in D state until it is resumed). */
static int scan_candidate(const char *name, char **ret_path)
{
	_cleanup_free_ char *p = NULL, *line = NULL;
	char buf[64];
	size_t cap = 0;
	FILE *f;
	int r = -ENOENT;

	if (asprintf(&p, "/sys/class/block/%s/size", name) < 0)
		return -ENOMEM;
	if (read_sysfs_line(p, buf, sizeof(buf)) < 0 || strcmp(buf, "0") == 0)
		return -ENOENT;
	free(p);
	if (asprintf(&p, "/sys/class/block/%s/dm/suspended", name) < 0)
		return -ENOMEM;
	if (read_sysfs_line(p, buf, sizeof(buf)) == 0 && strcmp(buf, "0") != 0)
		return -EBUSY;
	free(p);
	/* A crypt mapping (or a sub-device of one's re-encryption) holds the plaintext of a LUKS
	 * volume, not a header: reading it costs a decryption per probe, and a volume nested in
	 * another one cannot be found before that one is open anyway (LVM and partitions below
	 * and above LUKS are still probed: their dm uuids are not "CRYPT-"). */
	if (asprintf(&p, "/sys/class/block/%s/dm/uuid", name) < 0)
		return -ENOMEM;
	if (read_sysfs_line(p, buf, sizeof(buf)) == 0 && strncmp(buf, "CRYPT-", 6) == 0)
		return -ENOENT;
	free(p);
	if (asprintf(&p, "/sys/class/block/%s/uevent", name) < 0)
		return -ENOMEM;
	f = fopen(p, "re");
	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		if (strncmp(line, "DEVNAME=", 8) != 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		r = asprintf(ret_path, "/dev/%s", line + 8) < 0 ? -ENOMEM : 0;
		break;
	}
	fclose(f);
	return r;
}

/* A device the scan found, with the header it read there. */
struct scan_hit {
	char *path;
	struct volume_header h;
};

static int hit_cmp(const void *a, const void *b)
{
	const struct scan_hit *x = a, *y = b;

	return strverscmp(x->path, y->path);
}

static int scan_locked(char ***ret_devices, struct volume_header **ret_headers)
{
	struct scan_hit *hits = NULL;
	struct volume_header *hs = NULL;
	char **l = NULL;
	struct dirent *de;
	size_t n = 0;
	DIR *d;
	int r = 0;

	d = opendir("/sys/class/block");
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		struct volume_header h = {.token_id = -1};
		struct scan_hit *nh;
		char *path = NULL;

		if (de->d_name[0] == '.' || scan_candidate(de->d_name, &path) < 0)
			continue;
		/* one header load per device: what the caller reads next comes with it */
		if (read_header_locked(path, &h) < 0 || h.token_id < 0) {
			volume_header_done(&h);
			free(path);
			continue;
		}
		nh = reallocarray(hits, n + 1, sizeof(*hits));
		if (!nh) {
			volume_header_done(&h);
			free(path);
			r = -ENOMEM;
			break;
		}
		hits = nh;
		hits[n++] = (struct scan_hit){.path = path, .h = h};
	}
	closedir(d);
	/* a stable order: strverscmp() of the paths */
	if (r == 0 && n > 0)
		qsort(hits, n, sizeof(*hits), hit_cmp);
	l = r == 0 ? calloc(n + 1, sizeof(*l)) : NULL;
	hs = r == 0 && ret_headers ? calloc(n + 1, sizeof(*hs)) : NULL;
	if (r == 0 && (!l || (ret_headers && !hs)))
		r = -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (r < 0) {
			free(hits[i].path);
			volume_header_done(&hits[i].h);
			continue;
		}
		l[i] = hits[i].path;
		if (hs)
			hs[i] = hits[i].h;
		else
			volume_header_done(&hits[i].h);
	}
	free(hits);
	if (r < 0) {
		free(l);
		free(hs);
		return r;
	}
	if (ret_headers)
		*ret_headers = hs;
	*ret_devices = l;
	return 0;
}

int volume_scan(char ***ret_devices)
{
	int r;

	luks_lock();
	r = scan_locked(ret_devices, NULL);
	volume_unlock();
	return r;
}

int volume_scan_headers(char ***ret_devices, struct volume_header **ret_headers)
{
	int r;

	luks_lock();
	r = scan_locked(ret_devices, ret_headers);
	volume_unlock();
	return r;
}

/* ---- header changes -------------------------------------------------------------------------- */

/* 4096 when the device's logical block size allows it and its size is a multiple of 4096.  Image
 * files count as 512-byte devices: a loop device over them has 512-byte logical blocks. */
static int format_sector_size(const char *device, uint32_t *ret)
{
	_cleanup_close_ int fd = -1;
	uint64_t size;
	struct stat st;
	int lbs = 512;

	fd = open(device, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKSSZGET, &lbs) < 0 || ioctl(fd, BLKGETSIZE64, &size) < 0)
			return -errno;
	} else if (S_ISREG(st.st_mode)) {
		size = (uint64_t)st.st_size;
	} else {
		return -ENOTBLK;
	}
	*ret = lbs <= 4096 && size % 4096 == 0 ? 4096 : (uint32_t)lbs;
	return 0;
}

static int format_locked(const char *device, const struct volume_format_params *p)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	struct crypt_params_luks2 params = {
	    .pbkdf = &luks_pbkdf_min,
	    .label = p->label,
	    .sector_size = p->sector_size,
	};
	uint64_t header_bytes;
	int r;

	if (!p->uuid || !p->secret || !p->token_json || p->keyslot < 0 ||
	    p->keyslot + (p->recovery ? 1 : 0) >= crypt_keyslot_max(CRYPT_LUKS2))
		return -EINVAL;
	if (volume_dm_device_suspended(device))
		return -EBUSY;
	if (!params.sector_size) {
		r = format_sector_size(device, &params.sector_size);
		if (r < 0)
			return r;
	}
	r = crypt_init(&cd, device);
	if (r < 0)
		return r;
	/* Writes the header at once; from here on a failure wipes it again. */
	r = crypt_format(cd, CRYPT_LUKS2, "aes", "xts-plain64", p->uuid, NULL,
			 LUKS2_VOLUME_KEY_BYTES, &params);
	if (r < 0)
		return r;
	header_bytes = crypt_get_data_offset(cd) * 512;

	r = crypt_set_pbkdf_type(cd, &luks_pbkdf_min);
	if (r < 0)
		goto wipe;
	r = crypt_keyslot_add_by_volume_key(cd, p->keyslot, NULL, 0, (const char *)p->secret->buf,
					    p->secret->len);
	if (r < 0)
		goto wipe;
	if (p->recovery) {
		r = crypt_keyslot_add_by_volume_key(
		    cd, p->keyslot + 1, NULL, 0, (const char *)p->recovery->buf, p->recovery->len);
		if (r < 0)
			goto wipe;
	}
	r = token_import(cd, p->keyslot, p->token_json);
	if (r < 0)
		goto wipe;
	return 0;
wipe:
	/* Leave no half-made header (keyslots without their token) behind. */
	(void)crypt_wipe(cd, device, CRYPT_WIPE_ZERO, 0, header_bytes, 0, CRYPT_WIPE_NO_DIRECT_IO,
			 NULL, NULL);
	return r;
}

int volume_format(const char *device, const struct volume_format_params *p)
{
	int r;

	luks_lock();
	r = format_locked(device, p);
	volume_unlock();
	return r;
}

static int free_keyslot_locked(const char *device, int *ret_keyslot)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	for (int ks = 0; ks < crypt_keyslot_max(CRYPT_LUKS2); ks++)
		if (crypt_keyslot_status(cd, ks) == CRYPT_SLOT_INACTIVE) {
			*ret_keyslot = ks;
			return 0;
		}
	return -ENOSPC;
}

int volume_free_keyslot(const char *device, int *ret_keyslot)
{
	int r;

	luks_lock();
	r = free_keyslot_locked(device, ret_keyslot);
	volume_unlock();
	return r;
}

static int bind_locked(const char *device, const struct secret *auth, int keyslot,
		       const struct secret *secret, const char *token_json)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	if (token_find(cd) >= 0)
		return -EEXIST; /* one kmscrypt token per volume (include/kmscrypt/token.h) */
	if (crypt_keyslot_status(cd, keyslot) != CRYPT_SLOT_INACTIVE)
		return crypt_keyslot_status(cd, keyslot) == CRYPT_SLOT_INVALID ? -EINVAL : -EEXIST;
	r = crypt_set_pbkdf_type(cd, &luks_pbkdf_min);
	if (r < 0)
		return r;
	r = crypt_keyslot_add_by_passphrase(cd, keyslot, (const char *)auth->buf, auth->len,
					    (const char *)secret->buf, secret->len);
	if (r < 0)
		return r; /* -EPERM: @auth opens no keyslot */
	r = token_import(cd, keyslot, token_json);
	if (r < 0) {
		int k = crypt_keyslot_destroy(cd, keyslot);
		if (k < 0)
			log_debug("Failed to remove keyslot %d again: %s", keyslot, strerror(-k));
		return r;
	}
	return 0;
}

int volume_bind(const char *device, const struct secret *auth, int keyslot,
		const struct secret *secret, const char *token_json)
{
	int r;

	luks_lock();
	r = bind_locked(device, auth, keyslot, secret, token_json);
	volume_unlock();
	return r;
}

static int unbind_locked(const char *device)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	bool ours[64] = {};
	int token, max, left = 0, r;

	r = luks_open_token(device, &cd, &token);
	if (r < 0)
		return r;
	max = MIN(crypt_keyslot_max(CRYPT_LUKS2), (int)ARRAY_SIZE(ours));
	for (int ks = 0; ks < max; ks++) {
		crypt_keyslot_info ki = crypt_keyslot_status(cd, ks);

		ours[ks] = crypt_token_is_assigned(cd, token, ks) == 0;
		if (!ours[ks] && (ki == CRYPT_SLOT_ACTIVE || ki == CRYPT_SLOT_ACTIVE_LAST))
			left++;
	}
	if (left == 0)
		return -EPERM; /* the volume would be locked for good */
	/* Keyslots first (each call writes the header): a crash in between leaves a token that opens
	 * nothing, which the next unbind finds and removes.  Token first would leave a keyslot that
	 * the secret (unwrapped from any copy of the old token) still opens, with no token to show
	 * it or for unbind to find. */
	for (int ks = 0; ks < max; ks++) {
		if (!ours[ks] || crypt_keyslot_status(cd, ks) == CRYPT_SLOT_INACTIVE)
			continue;
		r = crypt_keyslot_destroy(cd, ks);
		if (r < 0)
			return r;
	}
	r = crypt_token_json_set(cd, token, NULL);
	return r < 0 ? r : 0;
}

int volume_unbind(const char *device)
{
	int r;

	luks_lock();
	r = unbind_locked(device);
	volume_unlock();
	return r;
}

static int unbind_left_locked(const char *device, int *ret_left)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	int token, left = 0, r;

	r = luks_open_token(device, &cd, &token);
	if (r < 0)
		return r;
	for (int ks = 0; ks < crypt_keyslot_max(CRYPT_LUKS2); ks++) {
		crypt_keyslot_info ki = crypt_keyslot_status(cd, ks);

		if (crypt_token_is_assigned(cd, token, ks) != 0 &&
		    (ki == CRYPT_SLOT_ACTIVE || ki == CRYPT_SLOT_ACTIVE_LAST))
			left++;
	}
	*ret_left = left;
	return 0;
}

int volume_unbind_keyslots_left(const char *device, int *ret_left)
{
	int r;

	luks_lock();
	r = unbind_left_locked(device, ret_left);
	volume_unlock();
	return r;
}

static int test_secret_locked(const char *device, int keyslot, const struct secret *secret)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	/* name NULL: only checks that the keyslot opens; no dm needed (works on image files).  It
	 * still asks libdevmapper about keyring support, outside libcryptsetup's dm log setup. */
	volume_dm_quiet();
	r = crypt_activate_by_passphrase(cd, NULL, luks_keyslot_for_open(cd, keyslot),
					 (const char *)secret->buf, secret->len, 0);
	return r < 0 ? keyslot_errno(r) : 0;
}

int volume_test_secret(const char *device, int keyslot, const struct secret *secret)
{
	int r;

	luks_lock();
	r = test_secret_locked(device, keyslot, secret);
	volume_unlock();
	return r;
}

/* ---- device-mapper --------------------------------------------------------------------------- */

static int activate_locked(const char *device, const char *name, int keyslot,
			   const struct secret *secret)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	_cleanup_free_ char *desc = NULL, *uuid = NULL;
	struct volume_mapping m;
	key_serial_t id;
	bool logon = false;
	int r, k;

	if (!volume_dm_available())
		return -ENOTSUP;
	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	if (crypt_status(cd, name) >= CRYPT_ACTIVE)
		return -EEXIST;
	uuid = strdup(crypt_get_uuid(cd) ?: "");
	if (!uuid || asprintf(&desc, "kmscrypt:%s", uuid) < 0)
		return -ENOMEM;

	r = volume_keyring_add_user(desc, secret, ACTIVATE_KEY_TIMEOUT_SEC, &id);
	if (r < 0)
		return r;
	/* The volume key goes to dm-crypt as a logon key "cryptsetup:<uuid>-d0" named in the table
	 * (the default; a process-wide switch in libcryptsetup 2.6). */
	(void)crypt_volume_key_keyring(cd, 1);
	volume_dm_quiet();
	r = crypt_activate_by_keyring(cd, name, desc, luks_keyslot_for_open(cd, keyslot), 0);
	if (keyctl_invalidate(id) < 0)
		log_debug("Failed to invalidate key '%s': %m", desc);
	/* libcryptsetup leaves its logon copy of the volume key in this thread's keyring on
	 * success; dm-crypt holds its own copy, so drop it now rather than at thread exit. */
	k = volume_keyring_purge(uuid);
	if (k < 0)
		log_debug("Failed to purge keys of '%s': %s", uuid, strerror(-k));
	if (r < 0)
		return keyslot_errno(r);

	volume_dm_quiet();
	r = volume_dm_query(name, &m, &logon);
	if (r < 0 || m.key != VOLUME_KEY_KEYRING || !logon) {
		log_debug("Mapping '%s' does not name a logon key (state %d), removing it.", name,
			  r < 0 ? r : (int)m.key);
		(void)crypt_deactivate(cd, name);
		return -EBADMSG;
	}
	return 0;
}

int volume_activate(const char *device, const char *name, int keyslot, const struct secret *secret)
{
	int r;

	luks_lock();
	r = activate_locked(device, name, keyslot, secret);
	volume_unlock();
	return r;
}

static int deactivate_locked(const char *name)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	struct volume_mapping m;
	int r;

	/* Only LUKS2 crypt mappings: "lock" must not take down someone's LVM volume by name.  The
	 * common shape (one crypt target on a plain device) goes straight to device-mapper: no
	 * header load (crypt_init_by_name() reads it twice, and starts libcryptsetup's crypto
	 * backend) for a removal that needs none. */
	r = volume_dm_remove_crypt(name);
	if (r != -EOPNOTSUPP)
		return r;
	r = volume_dm_query(name, &m, NULL);
	if (r < 0)
		return r;
	r = luks_open_by_name(name, &cd);
	if (r < 0)
		return r;
	r = crypt_deactivate(cd, name);
	return r == -ENODEV ? -ENOENT : r;
}

int volume_deactivate(const char *name)
{
	int r;

	luks_lock();
	r = deactivate_locked(name);
	volume_unlock();
	return r;
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static int suspend_wipe_locked(const char *name, struct volume_wipe_report *ret)
{
	struct volume_wipe_report rep = {};
	struct volume_mapping m;
	uint64_t t0;
	int r, k;

	r = volume_dm_query(name, &m, NULL);
	if (r < 0)
		return r;
	if (!m.suspended) {
		/* What crypt_suspend() does for a LUKS2 crypt mapping (volume_dm_query() said it is
		 * one): DM_DEVICE_SUSPEND (flushing), then the "key wipe" message.  Without it no
		 * libcryptsetup context, whose init reads the LUKS2 header from the backing device
		 * once more.  A failed message leaves the device suspended (no I/O with the key
		 * still loaded); the table check below reports it. */
		t0 = now_usec();
		r = volume_dm_simple(name, DM_DEVICE_SUSPEND, false);
		if (r == 0)
			r = volume_dm_key_wipe(name);
		rep.suspend_usec = now_usec() - t0;
	} else if (m.key != VOLUME_KEY_WIPED) {
		/* Suspended by someone else (dmsetup suspend) with the key still loaded. */
		r = volume_dm_key_wipe(name);
	}
	/* Whatever happened above, keys for the volume have no business in our keyrings. */
	k = volume_keyring_purge(m.uuid);
	if (r < 0)
		return r;
	if (k < 0)
		return k;
	rep.keys_invalidated = k;

	volume_dm_quiet();
	r = volume_dm_query(name, &m, NULL);
	if (r < 0)
		return r;
	rep.table_key_zero = m.suspended && m.key == VOLUME_KEY_WIPED;
	if (!rep.table_key_zero) {
		log_debug("Mapping '%s' still holds a key after the wipe (state %d).", name, m.key);
		return -EBADMSG;
	}
	*ret = rep;
	return 0;
}

int volume_suspend_wipe(const char *name, struct volume_wipe_report *ret)
{
	int r;

	luks_lock();
	r = suspend_wipe_locked(name, ret);
	volume_unlock();
	return r;
}

static int resume_locked(const char *name, int keyslot, const struct secret *secret)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	struct volume_mapping m;
	bool logon = false;
	int r, k;

	r = volume_dm_query(name, &m, NULL);
	if (r < 0)
		return r;
	if (!m.suspended)
		return -EALREADY;
	r = luks_open_by_name(name, &cd);
	if (r < 0)
		return r;
	/* 2.6 has no resume by keyring; with the keyring switch on (and dm-crypt supporting it),
	 * resume_by_volume_key() loads the volume key as logon key "cryptsetup:<uuid>-d0" and sends
	 * "key set :64:logon:cryptsetup:<uuid>-d0" before DM_DEVICE_RESUME: no hex in the table. */
	(void)crypt_volume_key_keyring(cd, 1);
	r = crypt_resume_by_passphrase(cd, name, keyslot, (const char *)secret->buf, secret->len);
	k = volume_keyring_purge(m.uuid); /* the logon copy stays in our thread keyring otherwise */
	if (k < 0)
		log_debug("Failed to purge keys of '%s': %s", m.uuid, strerror(-k));
	if (r < 0)
		return keyslot_errno(r);

	volume_dm_quiet();
	r = volume_dm_query(name, &m, &logon);
	if (r < 0 || m.suspended || m.key != VOLUME_KEY_KEYRING || !logon) {
		/* Never leave a hex key live: suspend and wipe again. */
		log_debug("Mapping '%s' resumed without a logon key (state %d), wiping it again.",
			  name, r < 0 ? r : (int)m.key);
		(void)crypt_suspend(cd, name);
		return -EBADMSG;
	}
	return 0;
}

int volume_resume(const char *name, int keyslot, const struct secret *secret)
{
	int r;

	luks_lock();
	r = resume_locked(name, keyslot, secret);
	volume_unlock();
	return r;
}

/* ---- several tokens, keyslot add/destroy (rotation: core/rotate.c) ---------------------------- */

void volume_tokens_free(struct volume_token *l, size_t n)
{
	if (!l)
		return;
	for (size_t i = 0; i < n; i++) {
		free(l[i].type);
		free(l[i].json);
	}
	free(l);
}

static int tokens_list_locked(const char *device, struct volume_token **ret, size_t *ret_n)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	struct volume_token *l = NULL;
	size_t n = 0;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	for (int id = 0; id < 32; id++) { /* LUKS2_TOKENS_MAX */
		const char *type = NULL, *json = NULL;
		crypt_token_info ti = crypt_token_status(cd, id, &type);
		struct volume_token *nl;

		if (ti == CRYPT_TOKEN_INVALID || ti == CRYPT_TOKEN_INACTIVE || !type ||
		    strncmp(type, KMSCRYPT_TOKEN_TYPE, strlen(KMSCRYPT_TOKEN_TYPE)) != 0)
			continue;
		if (crypt_token_json_get(cd, id, &json) < 0)
			continue;
		nl = reallocarray(l, n + 1, sizeof(*l));
		if (!nl) {
			volume_tokens_free(l, n);
			return -ENOMEM;
		}
		l = nl;
		l[n] = (struct volume_token){.id = id, .keyslot = -1};
		l[n].type = strdup(type);
		l[n].json = strdup(json);
		n++;
		if (!l[n - 1].type || !l[n - 1].json) {
			volume_tokens_free(l, n);
			return -ENOMEM;
		}
		for (int ks = 0; ks < crypt_keyslot_max(CRYPT_LUKS2); ks++)
			if (crypt_token_is_assigned(cd, id, ks) == 0) {
				l[n - 1].keyslot = ks;
				break;
			}
	}
	*ret = l;
	*ret_n = n;
	return 0;
}

int volume_tokens_list(const char *device, struct volume_token **ret, size_t *ret_n)
{
	int r;

	luks_lock();
	r = tokens_list_locked(device, ret, ret_n);
	volume_unlock();
	return r;
}

static int token_add_locked(const char *device, int keyslot, const char *json, int *ret_id)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	if (keyslot >= 0) {
		r = token_import(cd, keyslot, json);
	} else {
		r = crypt_token_json_set(cd, CRYPT_ANY_TOKEN, json);
		if (r == -EINVAL)
			r = -EBADMSG;
	}
	if (r < 0)
		return r;
	if (ret_id)
		*ret_id = r;
	return 0;
}

int volume_token_add(const char *device, int keyslot, const char *json, int *ret_id)
{
	int r;

	luks_lock();
	r = token_add_locked(device, keyslot, json, ret_id);
	volume_unlock();
	return r;
}

static int token_remove_locked(const char *device, int id, const char *expect_json)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	const char *cur = NULL;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	r = crypt_token_json_get(cd, id, &cur);
	if (r < 0)
		return r == -EINVAL ? -ENOENT : r;
	if (expect_json && strcmp(cur, expect_json) != 0)
		return -ESTALE;
	r = crypt_token_json_set(cd, id, NULL);
	return r < 0 ? r : 0;
}

int volume_token_remove(const char *device, int id, const char *expect_json)
{
	int r;

	luks_lock();
	r = token_remove_locked(device, id, expect_json);
	volume_unlock();
	return r;
}

static int keyslot_add_locked(const char *device, int keyslot, const struct secret *auth,
			      const struct secret *secret)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	if (crypt_keyslot_status(cd, keyslot) != CRYPT_SLOT_INACTIVE)
		return -EEXIST;
	r = crypt_set_pbkdf_type(cd, &luks_pbkdf_min);
	if (r < 0)
		return r;
	volume_dm_quiet();
	r = crypt_keyslot_add_by_passphrase(cd, keyslot, (const char *)auth->buf, auth->len,
					    (const char *)secret->buf, secret->len);
	return r < 0 ? keyslot_errno(r) : 0;
}

int volume_keyslot_add(const char *device, int keyslot, const struct secret *auth,
		       const struct secret *secret)
{
	int r;

	luks_lock();
	r = keyslot_add_locked(device, keyslot, auth, secret);
	volume_unlock();
	return r;
}

static int keyslot_destroy_locked(const char *device, int keyslot)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	if (crypt_keyslot_status(cd, keyslot) == CRYPT_SLOT_INACTIVE)
		return 0;
	r = crypt_keyslot_destroy(cd, keyslot);
	return r < 0 ? r : 0;
}

int volume_keyslot_destroy(const char *device, int keyslot)
{
	int r;

	luks_lock();
	r = keyslot_destroy_locked(device, keyslot);
	volume_unlock();
	return r;
}

static int keyslot_active_locked(const char *device, int keyslot, bool *ret)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	crypt_keyslot_info ki;
	int r;

	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	ki = crypt_keyslot_status(cd, keyslot);
	*ret = ki == CRYPT_SLOT_ACTIVE || ki == CRYPT_SLOT_ACTIVE_LAST;
	return 0;
}

int volume_keyslot_active(const char *device, int keyslot, bool *ret)
{
	int r;

	luks_lock();
	r = keyslot_active_locked(device, keyslot, ret);
	volume_unlock();
	return r;
}
