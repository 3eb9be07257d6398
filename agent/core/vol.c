/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/vol.h"
#include "util/cleanup.h"
#include "util/log.h"

void vol_done(struct vol *v)
{
	if (!v)
		return;
	free(v->device);
	volume_header_done(&v->hdr);
	token_done(&v->tok);
	free(v->answers);
	volume_state_done(&v->st);
	memset(v, 0, sizeof(*v));
}

void vol_list_free(struct vol **l)
{
	if (!l)
		return;
	for (size_t i = 0; l[i]; i++) {
		vol_done(l[i]);
		free(l[i]);
	}
	free(l);
}

/* "0fd1...-..." and "0FD1..." name the same UUID (as volume_mapping_find() compares) */
static bool uuid_same(const char *a, const char *b)
{
	for (;;) {
		while (*a == '-')
			a++;
		while (*b == '-')
			b++;
		if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
			return false;
		if (!*a)
			return true;
		a++, b++;
	}
}

/* Is LUKS UUID @uuid ("0fd1...-...") in @hexes (volume_dm_volumes(): no dashes, lower case)? */
static bool hex_listed(char **hexes, const char *uuid)
{
	for (size_t i = 0; hexes[i]; i++)
		if (uuid_same(hexes[i], uuid))
			return true;
	return false;
}

/* @maps: every mapping, listed once by the caller (vol_list(): one DM_DEVICE_LIST per run, not
 * one per volume); NULL: ask device-mapper.  @hexes: the volumes with any dm device
 * (volume_dm_volumes(), once per run); NULL: ask device-mapper per volume. */
static void vol_fill_runtime(const struct core_ctx *c, struct vol *v, struct volume_mapping **maps,
			     char **hexes)
{
	v->mapped = false;
	if (!maps) {
		v->mapped = volume_mapping_find(v->hdr.uuid, &v->map) == 0;
	} else {
		for (size_t i = 0; maps[i] && !v->mapped; i++)
			if (uuid_same(maps[i]->uuid, v->hdr.uuid)) {
				v->map = *maps[i];
				v->mapped = true;
			}
	}
	/* Only a volume without a crypt mapping can be held by a re-encryption stack alone; one
	 * without any dm device cannot. */
	v->stacked = !v->mapped && (!hexes || hex_listed(hexes, v->hdr.uuid)) &&
		     volume_stack_present(v->hdr.uuid) > 0;
	v->state_r = state_load(c->state_dir, v->hdr.uuid, &v->st);
	v->has_state = v->state_r == 0;
	if (v->mapped)
		snprintf(v->mapping, sizeof(v->mapping), "%s", v->map.name);
	else if (v->has_state && v->st.mapping)
		snprintf(v->mapping, sizeof(v->mapping), "%s", v->st.mapping);
	else
		core_default_mapping(v->hdr.label, v->hdr.uuid, v->mapping, sizeof(v->mapping));
}

/* @hdr: the device's header already read (taken over), or NULL to read it here. */
static int vol_from_device_maps(const struct core_ctx *c, const char *device, struct vol *v,
				bool log, struct volume_mapping **maps, char **hexes,
				struct volume_header *hdr)
{
	int r;

	memset(v, 0, sizeof(*v));
	/* Absolute paths in state and audit records: they outlive this working directory. */
	v->device = realpath(device, NULL);
	if (!v->device)
		v->device = strdup(device);
	if (!v->device)
		return -ENOMEM;
	if (hdr)
		r = core_volume_from_header(device, hdr, &v->hdr, &v->tok, log);
	else
		r = core_read_volume(device, &v->hdr, &v->tok, log);
	if (r < 0)
		return r;
	v->has_tok = true;
	vol_fill_runtime(c, v, maps, hexes);
	return 0;
}

int vol_from_device(const struct core_ctx *c, const char *device, struct vol *v, bool log)
{
	return vol_from_device_maps(c, device, v, log, NULL, NULL, NULL);
}

static int looks_like_uuid(const char *s)
{
	size_t n = strlen(s);

	if (n != 36)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!strchr("0123456789abcdefABCDEF-", s[i]))
			return 0;
	return 1;
}

static bool is_block_device(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISBLK(st.st_mode);
}

int vol_from_uuid(const struct core_ctx *c, const char *uuid, struct vol *v)
{
	char link[64], want[37];
	struct volume_header *hdrs = NULL;
	char **devs = NULL;
	bool found = false;
	int r;

	memset(v, 0, sizeof(*v));
	if (!looks_like_uuid(uuid))
		return log_error_errno(EINVAL, "'UUID=%s' is not a LUKS UUID (8-4-4-4-12 hex "
					       "digits).",
				       uuid);
	for (size_t i = 0; i < sizeof(want); i++)
		want[i] = (char)tolower((unsigned char)uuid[i]);
	/* udev's link first (the device the per-volume boot unit waits for), then every block
	 * device carrying a kmscrypt token: never an image file (the saved state is not asked). */
	snprintf(link, sizeof(link), "/dev/disk/by-uuid/%s", want);
	if (is_block_device(link)) {
		if (vol_from_device(c, link, v, false) == 0 && strcasecmp(v->hdr.uuid, want) == 0)
			return 0;
		vol_done(v);
	}
	r = volume_scan_headers(&devs, &hdrs);
	if (r < 0)
		log_debug("Scanning block devices failed: %s", strerror(-r));
	for (size_t i = 0; devs && devs[i] && !found; i++) {
		if (strcasecmp(hdrs[i].uuid, want) != 0)
			continue;
		found = vol_from_device_maps(c, devs[i], v, false, NULL, NULL, &hdrs[i]) == 0;
		if (!found)
			vol_done(v);
	}
	for (size_t i = 0; devs && devs[i]; i++)
		volume_header_done(&hdrs[i]);
	free(hdrs);
	strv_free(devs);
	if (found)
		return 0;
	return log_error_errno(ENOENT,
			       "No block device holds kmscrypt volume %s. Check that its disk is "
			       "attached ('blkid -t UUID=%s').",
			       want, want);
}

int vol_resolve(const struct core_ctx *c, const char *target, struct vol *v)
{
	struct volume_mapping m = {};
	struct volume_state **states = NULL;
	int r;

	/* 0. UUID=<uuid> (crypttab's syntax, the per-volume boot unit): a block device */
	if (strncasecmp(target, "UUID=", 5) == 0)
		return vol_from_uuid(c, target + 5, v);
	/* 1. a live mapping */
	if (!strchr(target, '/') && volume_mapping_info(target, &m) == 0) {
		if (!m.device[0] || !m.uuid[0])
			return log_error_errno(ENODEV, "Mapping '%s' is not a LUKS2 volume.", target);
		r = vol_from_device(c, m.device, v, true);
		if (r < 0)
			return r;
		if (!v->mapped || strcmp(v->map.name, target) != 0) {
			v->map = m;
			v->mapped = true;
			snprintf(v->mapping, sizeof(v->mapping), "%s", target);
		}
		return 0;
	}
	/* 2. a device path or image file */
	struct stat st;
	if (strchr(target, '/') || stat(target, &st) == 0) {
		if (stat(target, &st) < 0)
			return log_error_errno(errno, "'%s': %m. Give a mapping name, a device or a "
						      "volume UUID.",
					       target);
		return vol_from_device(c, target, v, true);
	}
	/* 3. a UUID or the saved mapping name of a closed volume */
	r = state_list(c->state_dir, &states);
	if (r < 0)
		return log_error_errno(r, "Cannot read state dir '%s': %m", c->state_dir);
	for (size_t i = 0; states[i]; i++) {
		struct volume_state *s = states[i];
		if (!s->device)
			continue;
		if ((looks_like_uuid(target) && strcasecmp(s->uuid, target) == 0) ||
		    (s->mapping && strcmp(s->mapping, target) == 0)) {
			_cleanup_free_ char *dev = strdup(s->device);
			state_list_free(states);
			if (!dev)
				return -ENOMEM;
			r = vol_from_device(c, dev, v, true);
			if (r < 0)
				return r;
			if (looks_like_uuid(target) && strcasecmp(v->hdr.uuid, target) != 0)
				return log_error_errno(ENOENT,
						       "Volume %s was last seen on '%s', which now "
						       "holds volume %s.",
						       target, dev, v->hdr.uuid);
			return 0;
		}
	}
	state_list_free(states);
	return log_error_errno(ENOENT,
			       "No open mapping, device or known kmscrypt volume named '%s'. See "
			       "'kmscrypt status'.",
			       target);
}

static int list_add(struct vol ***l, size_t *n, struct vol *v)
{
	struct vol **nl = realloc(*l, (*n + 2) * sizeof(**l));
	struct vol *copy;

	if (!nl)
		return -ENOMEM;
	*l = nl;
	copy = malloc(sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	*copy = *v;
	nl[(*n)++] = copy;
	nl[*n] = NULL;
	return 0;
}

static bool list_has(struct vol **l, size_t n, const char *uuid)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(l[i]->hdr.uuid, uuid) == 0)
			return true;
	return false;
}

int vol_list_all(const struct core_ctx *c, struct vol ***ret)
{
	return vol_list(c, 0, ret);
}

static size_t count_ptrs(void **p)
{
	size_t n = 0;

	while (p[n])
		n++;
	return n;
}

static int vol_device_cmp(const void *a, const void *b)
{
	const struct vol *const *x = a, *const *y = b;

	return strcmp((*x)->device, (*y)->device);
}

int vol_list(const struct core_ctx *c, unsigned flags, struct vol ***ret)
{
	bool skip_scan;
	struct vol **l = calloc(1, sizeof(*l));
	size_t n = 0;
	char **devs = NULL;
	struct volume_mapping **maps = NULL;
	struct volume_state **states = NULL;
	struct volume_header *hdrs = NULL;
	char **hexes = NULL;
	int r, k;

	if (!l)
		return -ENOMEM;
	/* The live mappings, once: every volume below looks its own up in this list; and which
	 * volumes have any dm device (no table read), so a closed one is not asked about its
	 * re-encryption stack unless it has one. */
	if (volume_mapping_list(&maps) < 0)
		maps = NULL;
	if (maps && volume_dm_volumes(&hexes) < 0)
		hexes = NULL;
	/* VOL_LIST_MAPPED_ONLY: when every dm device that names a LUKS volume is a plain LUKS2 crypt
	 * mapping (as many dm devices with a CRYPT-* uuid as mappings: no dm-integrity, no
	 * re-encryption stack), the mappings name every volume wanted, and the scan of every block
	 * device is skipped: only the open volumes' headers are read (vol.h). */
	skip_scan = (flags & VOL_LIST_MAPPED_ONLY) && maps && hexes &&
		    count_ptrs((void **)maps) == count_ptrs((void **)hexes);
	/* Block devices carrying a kmscrypt token, each header read once. */
	r = skip_scan ? 0 : volume_scan_headers(&devs, &hdrs);
	if (r < 0)
		log_debug("Scanning block devices failed: %s", strerror(-r));
	for (size_t i = 0; devs && devs[i]; i++) {
		struct vol v;
		if (vol_from_device_maps(c, devs[i], &v, false, maps, hexes, &hdrs[i]) == 0 &&
		    !list_has(l, n, v.hdr.uuid)) {
			if (list_add(&l, &n, &v) < 0)
				vol_done(&v);
		} else {
			vol_done(&v);
		}
	}
	for (size_t i = 0; devs && devs[i]; i++)
		volume_header_done(&hdrs[i]); /* (taken over: empty unless a list_add() failed) */
	free(hdrs);
	strv_free(devs);
	/* Live mappings whose backing device is a kmscrypt volume (e.g. image files). */
	if (maps) {
		for (size_t i = 0; maps[i]; i++) {
			struct volume_header ph = {.token_id = -1};
			struct vol v;
			if (!maps[i]->device[0] || list_has(l, n, maps[i]->uuid))
				continue;
			/* reading a suspended dm device would block until it is resumed */
			if (volume_dm_device_suspended(maps[i]->device)) {
				log_debug("Skipping '%s': its device '%s' is suspended.", maps[i]->name,
					  maps[i]->device);
				continue;
			}
			/* lock --all: the header without libcryptsetup when its two copies
			 * agree (volume_header_peek()), else through it */
			if (skip_scan && (flags & VOL_LIST_PEEK) &&
			    volume_header_peek(maps[i]->device, &ph) == 0)
				k = vol_from_device_maps(c, maps[i]->device, &v, false, maps, hexes, &ph);
			else
				k = vol_from_device_maps(c, maps[i]->device, &v, false, maps, hexes, NULL);
			volume_header_done(&ph);
			if (k == 0 && !list_has(l, n, v.hdr.uuid)) {
				if (list_add(&l, &n, &v) < 0)
					vol_done(&v);
			} else {
				vol_done(&v);
			}
		}
	}
	/* Volumes from saved state (image files, devices not scanned): none to find for
	 * VOL_LIST_OPEN_ONLY, nor for VOL_LIST_BLOCK_ONLY after a scan that worked (vol.h). */
	if (!(flags & VOL_LIST_OPEN_ONLY) && !((flags & VOL_LIST_BLOCK_ONLY) && r == 0) &&
	    state_list(c->state_dir, &states) == 0) {
		for (size_t i = 0; states[i]; i++) {
			struct vol v;
			if (!states[i]->device || list_has(l, n, states[i]->uuid))
				continue;
			/* unlock --all: an image file recorded by an earlier command is not a
			 * volume of this machine's boot (libcryptsetup would attach a loop
			 * device to it) */
			/* a block device: the scan above looked at every non-empty one (it skips
			 * suspended dm devices, which reading would block on); loading its header
			 * again per record costs a libcryptsetup open of each detached loop device
			 * an old volume left a record for */
			if (r == 0 && is_block_device(states[i]->device))
				continue;
			if ((flags & VOL_LIST_BLOCK_ONLY) && !is_block_device(states[i]->device)) {
				log_debug("Skipping '%s' (volume %s): not a block device.",
					  states[i]->device, states[i]->uuid);
				continue;
			}
			if (vol_from_device_maps(c, states[i]->device, &v, false, maps, hexes, NULL) == 0 &&
			    strcmp(v.hdr.uuid, states[i]->uuid) == 0 && !list_has(l, n, v.hdr.uuid)) {
				if (list_add(&l, &n, &v) < 0)
					vol_done(&v);
			} else {
				vol_done(&v);
			}
		}
		state_list_free(states);
	}
	volume_mapping_list_free(maps);
	strv_free(hexes);
	if (skip_scan) /* the scan's order: by device path */
		qsort(l, n, sizeof(*l), vol_device_cmp);
	*ret = l;
	return 0;
}

int vol_refresh(const struct core_ctx *c, struct vol *v)
{
	char mapping[sizeof(v->mapping)];
	int r;

	snprintf(mapping, sizeof(mapping), "%s", v->mapping);
	volume_header_done(&v->hdr);
	token_done(&v->tok);
	free(v->answers); /* sized for the token just freed */
	v->answers = NULL;
	volume_state_done(&v->st);
	v->has_tok = v->has_state = v->mapped = false;
	v->map = (struct volume_mapping){};
	r = core_read_volume(v->device, &v->hdr, &v->tok, true);
	if (r < 0)
		return r;
	v->has_tok = true;
	vol_fill_runtime(c, v, NULL, NULL);
	snprintf(v->mapping, sizeof(v->mapping), "%s", v->mapped ? v->map.name : mapping);
	return 0;
}

bool vol_revoked(const struct vol *v)
{
	return (v->has_state && v->st.revoked) || (v->has_tok && v->tok.revoked);
}

const char *vol_refusal(const struct core_ctx *c, const struct vol *v, char *buf, size_t n)
{
	if (v->state_r < 0 && v->state_r != -ENOENT) {
		/* Fail closed: only a missing state file means "no mark". */
		snprintf(buf, n,
			 "Left '%s' (UUID %s) locked: its state file '%s/volumes/%s.json' %s%s%s, and "
			 "it may say the volume is revoked. Check it, then fix or remove it.",
			 v->device, v->hdr.uuid, c->state_dir, v->hdr.uuid,
			 v->state_r == -EBADMSG ? "is corrupt" : "cannot be read (",
			 v->state_r == -EBADMSG ? "" : strerror(-v->state_r),
			 v->state_r == -EBADMSG ? "" : ")");
		return buf;
	}
	if (v->has_tok && v->tok.revoked) {
		snprintf(buf, n,
			 "Left '%s' (UUID %s) locked: its LUKS2 header is marked revoked%s%s%s%s%s. Run "
			 "'kmscrypt restore %s' once access is back.",
			 v->device, v->hdr.uuid, *v->tok.revoked_at ? " since " : "",
			 v->tok.revoked_at, *v->tok.revoked_reason ? " ('" : "",
			 v->tok.revoked_reason, *v->tok.revoked_reason ? "')" : "", v->device);
		return buf;
	}
	if (v->has_state && v->st.revoked) {
		snprintf(buf, n,
			 "Left '%s' (UUID %s) locked: it is revoked%s%s%s. Run 'kmscrypt restore %s' "
			 "once access is back.",
			 v->device, v->hdr.uuid, v->st.revoke_reason ? " ('" : "",
			 v->st.revoke_reason ? v->st.revoke_reason : "", v->st.revoke_reason ? "')" : "",
			 v->device);
		return buf;
	}
	return NULL;
}

const char *vol_state_name(const struct vol *v)
{
	bool revoked = vol_revoked(v);

	if (v->mapped) {
		if (revoked)
			return v->map.suspended ? "revoked-suspended" : "revoked-active";
		return v->map.suspended ? "suspended" : "active";
	}
	/* open through a re-encryption's dm stack only: its keys are loaded (or revoke suspended
	 * and wiped it), it is not closed */
	if (v->stacked)
		return revoked ? "revoked-suspended" : "active";
	return revoked ? "revoked-closed" : "inactive";
}

int vol_save_state(const struct core_ctx *c, struct vol *v)
{
	if (!v->has_state) {
		snprintf(v->st.uuid, sizeof(v->st.uuid), "%s", v->hdr.uuid);
		v->has_state = true;
	}
	if (!v->st.device || strcmp(v->st.device, v->device) != 0) {
		free(v->st.device);
		v->st.device = strdup(v->device);
	}
	if (v->mapping[0] && (!v->st.mapping || strcmp(v->st.mapping, v->mapping) != 0)) {
		free(v->st.mapping);
		v->st.mapping = strdup(v->mapping);
	}
	if (v->has_tok && (!v->st.kms || strcmp(v->st.kms, v->tok.kms) != 0)) {
		free(v->st.kms);
		v->st.kms = strdup(v->tok.kms);
	}
	if (!v->st.device || (v->mapping[0] && !v->st.mapping) || (v->has_tok && !v->st.kms))
		return -ENOMEM;
	return state_save(c->state_dir, &v->st);
}

void vol_save_state_or_warn(const struct core_ctx *c, struct vol *v)
{
	int r = vol_save_state(c, v);

	if (r < 0)
		log_warning_errno(r, "Cannot save state of volume %s in '%s', ignoring: %m",
				  v->hdr.uuid, c->state_dir);
}

int vol_mark_header(struct vol *v, time_t at, const char *reason)
{
	_cleanup_free_ char *json = NULL, *reread = NULL;
	struct kmscrypt_token tok = {};
	char why[256];
	int r;

	if (!v->has_tok || !v->hdr.token_json)
		return -ENODEV;
	if (at == 0 && !v->tok.revoked)
		return 0;
	r = token_json_set_revoked(v->hdr.token_json, at, reason, &json);
	if (r < 0)
		return r;
	r = volume_token_update(v->device, v->hdr.token_json, json, &reread);
	if (r < 0)
		return r;
	/* What the header now says (read back from the device): the mark is only set when it
	 * reads back. */
	r = token_parse(reread, &tok, why, sizeof(why));
	if (r < 0)
		return -EIO;
	if (tok.revoked != (at > 0)) {
		token_done(&tok);
		return -EIO;
	}
	token_done(&v->tok);
	v->tok = tok;
	free(v->hdr.token_json);
	v->hdr.token_json = TAKE_PTR(reread);
	return 0;
}

void vol_audit(const struct core_ctx *c, const struct vol *v, const char *action, const char *reason)
{
	int r = audit_append(c->state_dir, &(struct audit_record){
						   .action = action,
						   .uuid = v->hdr.uuid,
						   .mapping = v->mapping,
						   .device = v->device,
						   .kms = v->has_tok ? v->tok.kms : NULL,
						   .reason = reason,
						   .result = v->r == 0 ? (v->result ? v->result : "ok") : v->msg,
						   .duration_ms = v->ms,
					   });
	if (r < 0)
		log_warning_errno(r, "Cannot append to the audit log in '%s', ignoring: %m",
				  c->state_dir);
}

bool vol_present(const char *uuid, const char *device)
{
	struct volume_header *hdrs = NULL;
	struct volume_mapping m;
	char path[128], **devs = NULL;
	bool found = false;
	int r;

	if (device && strcmp(device, "?") != 0) {
		struct volume_header h = {};

		r = volume_read_header(device, &h);
		found = r == 0 ? strcasecmp(h.uuid, uuid) == 0 : r != -ENOENT && r != -ENODEV;
		volume_header_done(&h);
		if (found)
			return true;
	}
	snprintf(path, sizeof(path), "/dev/disk/by-uuid/%s", uuid);
	if (access(path, F_OK) == 0 || volume_mapping_find(uuid, &m) == 0)
		return true;
	if (volume_scan_headers(&devs, &hdrs) < 0)
		return false;
	for (size_t i = 0; devs[i]; i++) {
		found = found || strcasecmp(hdrs[i].uuid, uuid) == 0;
		volume_header_done(&hdrs[i]);
	}
	free(hdrs);
	strv_free(devs);
	return found;
}
