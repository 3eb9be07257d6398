/* SPDX-License-Identifier: MIT */
/* format, bind and unbind: LUKS2 header work, no device-mapper needed (core/format.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "core/escrow.h"
#include "core/flows.h"
#include "core/format.h"
#include "state/state.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/secret.h"

#define AUTH_KEY_MAX (8 * 1024 * 1024) /* cryptsetup's default key file size limit */

/* format's floor: libcryptsetup's default LUKS2 header (16 MiB: two 16 KiB JSON areas and the
 * keyslots area) plus 1 MiB of data, the least a filesystem or a test image can use. */
#define FORMAT_HEADER_BYTES (16ull << 20)
#define FORMAT_DATA_MIN_BYTES (1ull << 20)

static int device_size(const char *device, uint64_t *ret)
{
	_cleanup_close_ int fd = -1;
	struct stat st;

	fd = open(device, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (S_ISREG(st.st_mode)) {
		*ret = (uint64_t)st.st_size;
		return 0;
	}
	return ioctl(fd, BLKGETSIZE64, ret) < 0 ? -errno : 0;
}

int core_device_check(const char *device)
{
	struct stat st;

	if (stat(device, &st) < 0)
		return log_error_errno(errno, "Cannot use '%s': %m", device);
	if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
		return log_error_errno(EINVAL, "'%s' is neither a block device nor an image file.",
				       device);
	return 0;
}

static int uuid_random(char buf[40])
{
	uint8_t b[16];
	struct secret *s;
	int r;

	r = secret_random(sizeof(b), &s);
	if (r < 0)
		return r;
	memcpy(b, s->buf, sizeof(b));
	secret_free(s);
	b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
	b[8] = (b[8] & 0x3f) | 0x80; /* RFC 4122 variant */
	snprintf(buf, 40,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
		 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15]);
	return 0;
}

/* A printable recovery passphrase: 256 random bits as 64 modhex characters in groups of 8
 * (the alphabet systemd-cryptenroll uses, unambiguous on any keyboard layout). */
static int recovery_generate(struct secret **ret)
{
	static const char modhex[] = "cbdefghijklnrtuv";
	_cleanup_secret_ struct secret *rnd = NULL, *out = NULL;
	int r;

	r = secret_random(32, &rnd);
	if (r < 0)
		return r;
	r = secret_new(80, &out);
	if (r < 0)
		return r;
	for (size_t i = 0; i < 32; i++) {
		if (i > 0 && i % 4 == 0)
			out->buf[out->len++] = '-';
		out->buf[out->len++] = (uint8_t)modhex[rnd->buf[i] >> 4];
		out->buf[out->len++] = (uint8_t)modhex[rnd->buf[i] & 15];
	}
	*ret = TAKE_PTR(out);
	return 0;
}

/* The token of a new binding (core_wrap_token(), core/bind.c): version 1 for one KMS, else a
 * version-2 token for @n KMSs, the secret wrapped by each (@k 1), or split into @n Shamir shares,
 * k needed, share i wrapped by KMS i.  Logs on failure. */
static int wrap_token(struct kms_handle *hs, size_t n, unsigned k, const char *uuid, int keyslot,
		      const struct secret *secret, char **ret_json)
{
	struct kms_handle *hp[KMSCRYPT_TOKEN_MAX_WRAPS];
	char why[768];
	int r;

	for (size_t i = 0; i < n && i < KMSCRYPT_TOKEN_MAX_WRAPS; i++)
		hp[i] = &hs[i];
	r = core_wrap_token(hp, n, n == 1 ? 1 : k, n > 1, uuid, keyslot, secret, ret_json, why,
			    sizeof(why));
	return r < 0 ? log_error_errno(r, "%s.", why) : r;
}

/* "KMS 'a' (local)" or "KMSs 'a', 'b', 'c' (2 of 3 needed)" */
static void binding_desc(const struct kms_handle *hs, size_t n, unsigned k, char *buf, size_t len)
{
	size_t o = 0;

	if (n == 1) {
		snprintf(buf, len, "KMS '%s' (%s)", hs[0].cfg.name, hs[0].cfg.provider->name);
		return;
	}
	o += (size_t)snprintf(buf, len, "KMSs");
	for (size_t i = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s '%s' (%s)", i ? "," : "", hs[i].cfg.name,
				      hs[i].cfg.provider->name);
	if (o < len) {
		if (k == 1)
			snprintf(buf + o, len - o, ", any one of which opens it");
		else
			snprintf(buf + o, len - o, ", %u of which open it", k);
	}
}

/* Open the handle of each KMS of a new binding; logs. */
static int open_handles(const struct core_ctx *c, const char *const *names, size_t n,
			struct kms_handle *hs)
{
	for (size_t i = 0; i < n; i++) {
		int r = kms_handle_open(c, names[i], &hs[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static void record_binding(const struct core_ctx *c, const char *action, const char *uuid,
			   const char *device, const char *const *names, size_t n_names,
			   const char *result)
{
	struct volume_state s = {};
	const char *kms = names[0];
	char all[KMSCRYPT_TOKEN_MAX_WRAPS * 66] = "";

	for (size_t i = 0, o = 0; i < n_names && o < sizeof(all); i++)
		o += (size_t)snprintf(all + o, sizeof(all) - o, "%s%s", i ? "," : "", names[i]);
	if (strcmp(result, "ok") == 0) {
		for (size_t i = 0; i < n_names; i++) {
			int r = usage_record(c->state_dir, names[i], uuid, device);
			if (r < 0)
				log_warning_errno(r, "Cannot record that '%s' uses KMS '%s', "
						     "ignoring: %m",
						  device, names[i]);
		}
		if (state_load(c->state_dir, uuid, &s) < 0)
			snprintf(s.uuid, sizeof(s.uuid), "%s", uuid);
		free(s.device);
		free(s.kms);
		s.device = strdup(device);
		s.kms = strdup(kms);
		s.revoked = false;
		if (state_save(c->state_dir, &s) < 0)
			log_warning("Cannot save state for %s, ignoring.", uuid);
		volume_state_done(&s);
	}
	/* the binding made, as the header now holds it (every KMS, key version and the threshold,
	 * as rotation records name it: core_binding_json()); without one, the names (configuration
	 * names are [A-Za-z0-9._-]: no JSON escaping needed) */
	char nb[sizeof(all) + 32];
	struct volume_header hdr = {};
	struct kmscrypt_token t = {};
	json_object *b = NULL;

	snprintf(nb, sizeof(nb), "{\"kms\":\"%s\"}", all);
	if (strcmp(result, "ok") == 0 && core_read_volume(device, &hdr, &t, false) == 0 &&
	    strcmp(hdr.uuid, uuid) == 0)
		b = core_binding_json(&t);
	(void)audit_append(c->state_dir,
			   &(struct audit_record){.action = action,
						  .uuid = uuid,
						  .device = device,
						  .kms = all,
						  .result = result,
						  .duration_ms = -1,
						  .new_binding = b ? json_object_to_json_string(b) : nb});
	json_object_put(b);
	token_done(&t);
	volume_header_done(&hdr);
}

/* format never touches an open volume, even with --force. */
static int refuse_open(const char *device)
{
	struct volume_header old = {};
	struct volume_mapping m = {};
	int r = 0;

	if (volume_read_header(device, &old) == 0 && volume_mapping_find(old.uuid, &m) == 0)
		r = log_error_errno(EBUSY,
				    "'%s' (UUID %s) is open as '%s'. Lock it first; format never "
				    "touches an open volume.",
				    device, old.uuid, m.name);
	volume_header_done(&old);
	return r;
}

int core_format_probe(const char *device, char **ret_what)
{
	uint64_t size = 0;
	int r;

	r = core_device_check(device);
	if (r < 0)
		return r;
	r = device_size(device, &size);
	if (r < 0)
		return log_error_errno(r, "Cannot read the size of '%s': %m", device);
	if (size < FORMAT_HEADER_BYTES + FORMAT_DATA_MIN_BYTES)
		return log_error_errno(ENOSPC,
				       "'%s' holds %llu bytes: too small for a LUKS2 volume, which "
				       "needs 16 MiB of header and at least 1 MiB of data (17 MiB). "
				       "Nothing was written.",
				       device, (unsigned long long)size);
	r = refuse_open(device);
	if (r < 0)
		return r;
	r = volume_probe_blank(device, ret_what);
	if (r < 0 && r != -EEXIST)
		log_error_errno(r, "Cannot probe '%s': %m", device);
	return r;
}

/* The recovery key (or its escrow envelope) into a new file, before the volume exists, so a
 * volume never exists whose recovery key was lost.  Logs. */
static int recovery_write(const char *path, const void *data, size_t len)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);

	if (fd < 0 || write(fd, data, len) != (ssize_t)len || fsync(fd) < 0) {
		int r = log_error_errno(errno, "Cannot write recovery key file '%s': %m", path);
		if (fd >= 0)
			(void)unlink(path);
		return r;
	}
	return 0;
}

int core_format(const struct core_ctx *c, const struct core_format_req *req,
		struct core_format_result *ret)
{
	const char *device = req->device;
	struct kms_handle hs[KMSCRYPT_TOKEN_MAX_WRAPS] = {};
	struct kms_handle escrow_h = {};
	_cleanup_secret_ struct secret *secret = NULL, *recovery = NULL;
	_cleanup_free_ char *token = NULL, *envelope = NULL;
	bool recovery_written = false;
	char mapping[128];
	int r, lock;

	*ret = (struct core_format_result){};
	lock = core_lock(c);
	if (lock < 0)
		return lock;

	/* What core_format_probe() saw is checked again under the lock. */
	r = refuse_open(device);
	if (r < 0)
		goto out;
	if (req->recovery_path && access(req->recovery_path, F_OK) == 0) {
		r = log_error_errno(EEXIST,
				    "Recovery key file '%s' already exists; choose a new path (it is "
				    "never overwritten).",
				    req->recovery_path);
		goto out;
	}
	r = open_handles(c, req->kms, req->n_kms, hs);
	if (r < 0)
		goto out;
	if (req->escrow_kms) {
		r = kms_handle_open(c, req->escrow_kms, &escrow_h);
		if (r < 0)
			goto out;
	}
	binding_desc(hs, req->n_kms, req->threshold, ret->desc, sizeof(ret->desc));
	ret->provider = hs[0].cfg.provider->name;

	/* Wrap before writing anything: a KMS failure leaves the device untouched. */
	r = uuid_random(ret->uuid);
	if (r < 0)
		goto out;
	r = secret_random(KMSCRYPT_SECRET_BYTES, &secret);
	if (r < 0)
		goto out;
	r = wrap_token(hs, req->n_kms, req->threshold, ret->uuid, 0, secret, &token);
	if (r < 0)
		goto out;
	if (!req->no_recovery) {
		r = recovery_generate(&recovery);
		if (r < 0)
			goto out;
	}
	if (req->escrow_kms) {
		/* the file gets the key wrapped by the escrow configuration (codec/escrow.h) */
		r = core_escrow_seal(&escrow_h, ret->uuid, device, req->label, recovery, &envelope);
		if (r < 0)
			goto out;
	}
	if (req->recovery_path) {
		r = envelope ? recovery_write(req->recovery_path, envelope, strlen(envelope))
			     : recovery_write(req->recovery_path, recovery->buf, recovery->len);
		if (r < 0)
			goto out;
		recovery_written = true;
	}
	r = volume_format(device, &(struct volume_format_params){
					  .uuid = ret->uuid,
					  .label = req->label,
					  .keyslot = 0,
					  .secret = secret,
					  .recovery = recovery,
					  .token_json = token,
					  .sector_size = req->sector_size,
				  });
	if (r < 0) {
		log_error_errno(r, "Cannot format '%s': %m", device);
		if (recovery_written)
			(void)unlink(req->recovery_path);
		record_binding(c, "format", ret->uuid, device, req->kms, req->n_kms, "error");
		goto out;
	}
	record_binding(c, "format", ret->uuid, device, req->kms, req->n_kms, "ok");
	if (req->escrow_kms) {
		/* the escrow needs its configuration while the volume lives: kms delete refuses */
		r = usage_record(c->state_dir, req->escrow_kms, ret->uuid, device);
		if (r < 0)
			log_warning_errno(r, "Cannot record that '%s' uses KMS '%s' for its "
					     "recovery key escrow, ignoring: %m",
					  device, req->escrow_kms);
		(void)audit_append(c->state_dir,
				   &(struct audit_record){.action = "recovery-escrow",
							  .uuid = ret->uuid,
							  .device = device,
							  .kms = req->escrow_kms,
							  .result = "ok",
							  .duration_ms = -1});
		r = 0;
	}
	core_default_mapping(req->label, ret->uuid, mapping, sizeof(mapping));
	if (req->label && strcmp(req->label, mapping) != 0)
		log_notice("Label '%s' cannot be a device-mapper name; 'kmscrypt unlock' will open "
			   "'%s' as /dev/mapper/%s (choose another with --name).",
			   req->label, device, mapping);
	if (!req->recovery_path)
		ret->recovery = TAKE_PTR(recovery);
out:
	close(lock);
	for (size_t i = 0; i < req->n_kms; i++)
		kms_handle_done(&hs[i]);
	kms_handle_done(&escrow_h);
	return r;
}

void core_format_result_done(struct core_format_result *res)
{
	if (res)
		res->recovery = secret_free(res->recovery);
}

int core_bind(const struct core_ctx *c, const struct core_bind_req *req,
	      struct core_bind_result *ret)
{
	const char *device = req->device;
	struct volume_header hdr = {};
	struct kms_handle hs[KMSCRYPT_TOKEN_MAX_WRAPS] = {};
	_cleanup_secret_ struct secret *auth = NULL, *secret = NULL;
	_cleanup_free_ char *token = NULL;
	int r, lock;

	*ret = (struct core_bind_result){.keyslot = -1};
	r = core_device_check(device);
	if (r < 0)
		return r;
	lock = core_lock(c);
	if (lock < 0)
		return lock;
	r = volume_read_header(device, &hdr);
	if (r < 0) {
		log_error_errno(r, "'%s' is not a LUKS2 volume (%m). 'kmscrypt bind' adds kmscrypt "
				   "to an existing LUKS2 volume; use 'kmscrypt format' for a new one.",
				device);
		r = r == -EINVAL ? -ENODEV : r;
		goto out;
	}
	snprintf(ret->uuid, sizeof(ret->uuid), "%s", hdr.uuid);
	{
		/* a bind or rotate-secret killed half-way: finish or undo it first (core/rotate.c) */
		char why[512];
		r = core_pending_cleanup(c, device, hdr.uuid, why, sizeof(why));
		if (r < 0) {
			log_error("Cannot bind '%s' (UUID %s): %s.", device, hdr.uuid, why);
			goto out;
		}
		if (r > 0) {
			volume_header_done(&hdr);
			r = volume_read_header(device, &hdr);
			if (r < 0)
				goto out;
		}
	}
	if (hdr.token_id >= 0) {
		r = log_error_errno(EEXIST,
				    "'%s' (UUID %s) is already bound to kmscrypt (token %d). Unbind it "
				    "first to bind it to another KMS.",
				    device, hdr.uuid, hdr.token_id);
		goto out;
	}
	/* Key files are used verbatim, as cryptsetup --key-file does. */
	r = read_file_secret(req->keyfile, AUTH_KEY_MAX, 0, &auth);
	if (r < 0) {
		log_error_errno(r, "Cannot read key file '%s': %m", req->keyfile);
		goto out;
	}
	r = open_handles(c, req->kms, req->n_kms, hs);
	if (r < 0)
		goto out;
	binding_desc(hs, req->n_kms, req->threshold, ret->desc, sizeof(ret->desc));
	ret->provider = hs[0].cfg.provider->name;
	r = volume_free_keyslot(device, &ret->keyslot);
	if (r < 0) {
		log_error_errno(r, "No free keyslot on '%s': %m", device);
		goto out;
	}
	r = secret_random(KMSCRYPT_SECRET_BYTES, &secret);
	if (r < 0)
		goto out;
	r = wrap_token(hs, req->n_kms, req->threshold, hdr.uuid, ret->keyslot, secret, &token);
	if (r < 0)
		goto out;
	r = core_bind_marked(c, device, auth, ret->keyslot, secret, token);
	if (r == -EPERM) {
		log_error("The key file '%s' opens no keyslot of '%s'. Nothing was changed.",
			  req->keyfile, device);
		goto out;
	}
	if (r < 0) {
		log_error_errno(r, "Cannot bind '%s': %m. The header was left as it was.", device);
		goto out;
	}
	record_binding(c, "bind", hdr.uuid, device, req->kms, req->n_kms, "ok");
out:
	close(lock);
	volume_header_done(&hdr);
	for (size_t i = 0; i < req->n_kms; i++)
		kms_handle_done(&hs[i]);
	return r;
}

int core_unbind_prepare(const char *device, struct core_unbind *u)
{
	int r;

	*u = (struct core_unbind){.device = device};
	r = core_read_volume(device, &u->hdr, &u->tok, true);
	if (r < 0 && r != -EBADMSG)
		return r;
	if (volume_unbind_keyslots_left(device, &u->left) < 0)
		u->left = 0;
	return 0;
}

int core_unbind(const struct core_ctx *c, struct core_unbind *u)
{
	const char *device = u->device, *kms = u->tok.kms;
	json_object *ob;
	int r, lock;

	lock = core_lock(c);
	if (lock < 0)
		return lock;
	r = volume_unbind(device);
	if (r == -EPERM) {
		log_error("Refusing to unbind '%s': its kmscrypt keyslot is the only one, and removing "
			  "it would make the volume unopenable. Add a passphrase first "
			  "(cryptsetup luksAddKey).",
			  device);
		goto out;
	}
	if (r < 0) {
		log_error_errno(r, "Cannot unbind '%s': %m", device);
		goto out;
	}
	/* an interrupted rotation may have left a second kmscrypt token: it goes too */
	for (int i = 0; i < 32 && volume_unbind(device) == 0; i++)
		;
	ob = json_object_new_object();
	json_object_object_add(ob, "kms", kms && *kms ? json_object_new_string(kms) : NULL);
	(void)audit_append(c->state_dir, &(struct audit_record){.action = "unbind",
								.uuid = u->hdr.uuid,
								.device = device,
								.kms = kms,
								.result = "ok",
								.duration_ms = -1,
								.old_binding = json_object_to_json_string(ob)});
	json_object_put(ob);
out:
	close(lock);
	return r;
}

void core_unbind_done(struct core_unbind *u)
{
	if (!u)
		return;
	token_done(&u->tok);
	volume_header_done(&u->hdr);
}
