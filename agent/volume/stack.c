/* SPDX-License-Identifier: MIT */
/*
 * Revoke and restore of a volume whose LUKS2 re-encryption is running or pending (volume.h,
 * "re-encryption dm stack").
 *
 * libcryptsetup 2.6 refuses crypt_suspend() and crypt_resume_*() while a re-encryption is pending,
 * and an online re-encryption is a stack of dm devices, each with its own copy of the keys
 * (measured in the VM): the top "<name>" (dm uuid CRYPT-LUKS2-<hex>-<name>) is one crypt target,
 * or several after a stop (one per segment, each naming the logon key of its digest,
 * ":64:logon:cryptsetup:<uuid>-d<N>"), or a linear target over "<name>-overlay" while it runs or
 * after a kill; "<name>-overlay" (CRYPT-SUBDEV-<hex>-<name>-overlay) has a crypt target per
 * segment, old and new key; "<name>-hotzone-forward" is linear.  So here: suspend every device of
 * the stack that holds a key (the top first), send "key wipe" to every crypt target (a dm message
 * reaches the target that holds its sector), and check every table shows the zero key.  Restore:
 * the key of each digest from its keyslot, "key set" per target, resume what we suspended.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <libcryptsetup.h>
#include <libdevmapper.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "util/cleanup.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/dm.h"
#include "volume/keyring.h"
#include "volume/luks.h"
#include "volume/volume.h"

#define STACK_MAX_DEVS 8

/* One dm device of the stack: its table as volume_dm_table() reads it (dm.h: the one reader; a
 * target's key_field is the keyring field only, never a hex key). */
struct stack_dev {
	char name[128];
	bool top; /* CRYPT-LUKS2-...: the mapping the file system is on */
	bool suspended;
	int n;
	struct volume_dm_target t[VOLUME_DM_TARGETS_MAX];
};

/* "0fd1...-..." -> "0fd1..." (lower case, no dashes) */
static void uuid_hex(const char *uuid, char *buf, size_t size)
{
	size_t o = 0;

	for (; *uuid && o + 1 < size; uuid++)
		if (*uuid != '-')
			buf[o++] = (char)tolower((unsigned char)*uuid);
	buf[o] = '\0';
}

struct stack_walk {
	const char *hex;
	struct stack_dev *devs;
	int n;
};

/* The table of @name, when it is a device of the volume (volume_dm_list() walks them). */
static int stack_query(const char *name, void *userdata)
{
	struct stack_walk *w = userdata;
	struct volume_dm_table tb;
	struct stack_dev *d;
	int r;

	r = volume_dm_table(name, &tb);
	if (r == -ENOENT)
		return 0; /* went away meanwhile */
	if (r < 0)
		return r;
	if (!volume_dm_uuid_match(tb.dm_uuid, w->hex))
		return 0;
	if (tb.truncated)
		return -E2BIG;
	if (w->n == STACK_MAX_DEVS)
		return -E2BIG;
	d = &w->devs[w->n];
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->top = strncmp(tb.dm_uuid, "CRYPT-LUKS2-", 12) == 0;
	d->suspended = tb.suspended;
	d->n = tb.n;
	memcpy(d->t, tb.t, sizeof(d->t));
	/* the top first */
	if (d->top && w->n > 0) {
		struct stack_dev tmp = w->devs[0];
		w->devs[0] = *d;
		*d = tmp;
	}
	w->n++;
	return 0;
}

/* Every dm device of LUKS volume @uuid, the top first; only their own tables are read. */
static int stack_list(const char *uuid, struct stack_dev *devs, int *ret_n)
{
	char hex[40];
	struct stack_walk w = {.hex = hex, .devs = devs};
	int r;

	uuid_hex(uuid, hex, sizeof(hex));
	if (strlen(hex) != 32)
		return -EINVAL;
	r = volume_dm_list(hex, stack_query, &w);
	if (r < 0)
		return r;
	*ret_n = w.n;
	return 0;
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static bool dev_has_key(const struct stack_dev *d)
{
	for (int i = 0; i < d->n; i++)
		if (d->t[i].crypt && d->t[i].key != VOLUME_KEY_NONE && d->t[i].key != VOLUME_KEY_WIPED)
			return true;
	return false;
}

static int dm_msg(const char *name, uint64_t sector, const char *msg)
{
	struct dm_task *dmt;
	int r = 0;

	volume_dm_quiet();
	dmt = dm_task_create(DM_DEVICE_TARGET_MSG);
	if (!dmt)
		return -ENOMEM;
	if (!dm_task_set_name(dmt, name) || !dm_task_set_sector(dmt, sector) ||
	    !dm_task_set_message(dmt, msg) || !dm_task_secure_data(dmt))
		r = -ENOMEM;
	else if (!dm_task_run(dmt))
		r = dm_task_get_errno(dmt) > 0 ? -dm_task_get_errno(dmt) : -EIO;
	dm_task_destroy(dmt);
	return r;
}

int volume_stack_present(const char *uuid)
{
	struct stack_dev devs[STACK_MAX_DEVS];
	int n = 0, r;

	volume_lock();
	r = stack_list(uuid, devs, &n);
	volume_unlock();
	if (r < 0)
		return r;
	for (int i = 0; i < n; i++)
		if (!devs[i].top || devs[i].n != 1 || !devs[i].t[0].crypt)
			return 1;
	return 0;
}

static int append(char **buf, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int append(char **buf, size_t *len, const char *fmt, ...)
{
	va_list ap;
	char *line = NULL, *nb;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	nb = realloc(*buf, *len + (size_t)n + 1);
	if (!nb) {
		free(line);
		return -ENOMEM;
	}
	memcpy(nb + *len, line, (size_t)n + 1);
	*len += (size_t)n;
	*buf = nb;
	free(line);
	return 0;
}

static int stack_wipe_locked(const char *uuid, char **ret_plan, struct volume_wipe_report *rep,
			     char *top, size_t top_size)
{
	struct stack_dev devs[STACK_MAX_DEVS];
	_cleanup_free_ char *plan = NULL;
	size_t plen = 0;
	uint64_t t0;
	int n = 0, r, k, first = 0;

	r = stack_list(uuid, devs, &n);
	if (r < 0)
		return r;
	if (n == 0)
		return -ENOENT;
	snprintf(top, top_size, "%s", devs[0].name);
	/* The plan for restore: which devices we suspend, which key each crypt target names. */
	for (int i = 0; i < n; i++) {
		for (int j = 0; j < devs[i].n; j++)
			if (devs[i].t[j].key == VOLUME_KEY_KEYRING &&
			    append(&plan, &plen, "K %s %" PRIu64 " %s\n", devs[i].name,
				   devs[i].t[j].start, devs[i].t[j].key_field) < 0)
				return -ENOMEM;
			else if (devs[i].t[j].key == VOLUME_KEY_HEX)
				first = first ?: -EBADMSG; /* never made by kmscrypt; still wiped */
	}
	t0 = now_usec();
	for (int i = 0; i < n; i++) {
		/* the top always (I/O waits, its file system frozen first); the others when they hold
		 * a key; one already suspended (a killed step's) stays as it is */
		if (devs[i].suspended || (!devs[i].top && !dev_has_key(&devs[i])))
			continue;
		r = volume_dm_simple(devs[i].name, DM_DEVICE_SUSPEND, !devs[i].top);
		if (r < 0) {
			log_debug("Cannot suspend '%s': %s", devs[i].name, strerror(-r));
			first = first ?: r;
			continue;
		}
		devs[i].suspended = true;
		if (append(&plan, &plen, "S %s\n", devs[i].name) < 0)
			return -ENOMEM;
	}
	for (int i = 0; i < n; i++)
		for (int j = 0; j < devs[i].n; j++) {
			if (!devs[i].t[j].crypt || devs[i].t[j].key == VOLUME_KEY_WIPED ||
			    devs[i].t[j].key == VOLUME_KEY_NONE)
				continue;
			r = dm_msg(devs[i].name, devs[i].t[j].start, "key wipe");
			if (r < 0) {
				log_debug("Cannot wipe the key of '%s' at sector %" PRIu64 ": %s",
					  devs[i].name, devs[i].t[j].start, strerror(-r));
				first = first ?: r;
			}
		}
	rep->suspend_usec = now_usec() - t0;
	k = volume_keyring_purge(uuid);
	if (k >= 0)
		rep->keys_invalidated = k;
	else
		first = first ?: k;
	/* Check every table again, whatever happened above. */
	r = stack_list(uuid, devs, &n);
	if (r < 0)
		return r;
	rep->table_key_zero = true;
	for (int i = 0; i < n; i++)
		for (int j = 0; j < devs[i].n; j++)
			if (devs[i].t[j].crypt && devs[i].t[j].key != VOLUME_KEY_WIPED) {
				log_debug("'%s' at sector %" PRIu64 " still holds a key (state %d).",
					  devs[i].name, devs[i].t[j].start, devs[i].t[j].key);
				rep->table_key_zero = false;
			}
	*ret_plan = TAKE_PTR(plan);
	if (!rep->table_key_zero)
		return first ?: -EBADMSG;
	return 0;
}

int volume_stack_suspend_wipe(const char *uuid, char **ret_plan, struct volume_wipe_report *ret,
			      char *top, size_t top_size)
{
	struct volume_wipe_report rep = {};
	int r;

	*ret_plan = NULL;
	luks_lock();
	r = stack_wipe_locked(uuid, ret_plan, &rep, top, top_size);
	volume_unlock();
	*ret = rep;
	return r;
}

/* The volume key of digest @digest, from a keyslot of that digest that @secret opens. */
static int digest_key(struct crypt_device *cd, json_object *digests, int digest,
		      const struct secret *secret, char *vk, size_t *vk_size)
{
	json_object *d, *ks;
	char id[16];

	snprintf(id, sizeof(id), "%d", digest);
	if (!json_object_object_get_ex(digests, id, &d) ||
	    !json_object_object_get_ex(d, "keyslots", &ks) || !json_object_is_type(ks, json_type_array))
		return -ENOKEY;
	for (size_t i = 0; i < json_object_array_length(ks); i++) {
		int slot = atoi(json_object_get_string(json_object_array_get_idx(ks, i)));
		size_t size = *vk_size;
		if (crypt_volume_key_get(cd, slot, vk, &size, (const char *)secret->buf,
					 secret->len) >= 0) {
			*vk_size = size;
			return 0;
		}
	}
	return -ENOKEY;
}

static int stack_resume_locked(const char *uuid, const char *device, const struct secret *secret,
			       const char *plan)
{
	_cleanup_(crypt_freep) struct crypt_device *cd = NULL;
	_cleanup_secret_ struct secret *vk = NULL;
	json_object *hdr = NULL, *digests = NULL;
	const char *json = NULL;
	char prefix[80], line[512];
	const char *p;
	int r, k;

	{
		struct stack_dev devs[STACK_MAX_DEVS];
		int n = 0;
		r = stack_list(uuid, devs, &n);
		if (r < 0)
			return r;
		if (n == 0)
			return -ENOENT; /* closed since (a reboot): nothing to resume */
	}
	r = luks_open(device, &cd);
	if (r < 0)
		return r;
	r = crypt_dump_json(cd, &json, 0);
	if (r < 0)
		return r;
	hdr = json_tokener_parse(json);
	if (!hdr || !json_object_object_get_ex(hdr, "digests", &digests)) {
		r = -EBADMSG;
		goto out;
	}
	r = secret_new(512, &vk);
	if (r < 0)
		goto out;
	snprintf(prefix, sizeof(prefix), "cryptsetup:%s-d", uuid);
	/* 1. every key named by the plan into this thread's keyring, then "key set" per target */
	for (p = plan; *p; p += strcspn(p, "\n") + (p[strcspn(p, "\n")] == '\n')) {
		char name[128], field[200];
		uint64_t start;
		const char *desc;
		key_serial_t id;
		size_t size = vk->cap;
		unsigned ksize;
		int digest;

		snprintf(line, sizeof(line), "%.*s", (int)strcspn(p, "\n"), p);
		if (line[0] != 'K')
			continue;
		if (sscanf(line, "K %127s %" SCNu64 " %199s", name, &start, field) != 3 ||
		    sscanf(field, ":%u:logon:", &ksize) != 1 || !(desc = strstr(field, ":logon:"))) {
			r = -EBADMSG;
			goto out;
		}
		desc += 7;
		if (strncmp(desc, prefix, strlen(prefix)) != 0) {
			r = -EBADMSG; /* a key kmscrypt cannot produce again */
			goto out;
		}
		digest = atoi(desc + strlen(prefix));
		r = digest_key(cd, digests, digest, secret, (char *)vk->buf, &size);
		if (r < 0)
			goto out;
		if (size != ksize) {
			r = -EBADMSG;
			goto out;
		}
		id = add_key("logon", desc, vk->buf, size, KEY_SPEC_THREAD_KEYRING);
		if (id < 0) {
			r = -errno;
			goto out;
		}
		r = snprintf(line, sizeof(line), "key set %s", field) < (int)sizeof(line) ? 0 : -E2BIG;
		if (r == 0)
			r = dm_msg(name, start, line);
		explicit_bzero(line, sizeof(line));
		if (r < 0) {
			log_debug("Cannot set the key of '%s' at sector %" PRIu64 ": %s", name, start,
				  strerror(-r));
			goto out;
		}
	}
	/* 2. resume what revoke suspended, the lower devices first */
	{
		const char *s[STACK_MAX_DEVS];
		int ns = 0;
		for (p = plan; *p; p += strcspn(p, "\n") + (p[strcspn(p, "\n")] == '\n'))
			if (p[0] == 'S' && ns < STACK_MAX_DEVS)
				s[ns++] = p + 2;
		for (int i = ns - 1; i >= 0; i--) {
			char name[128];
			snprintf(name, sizeof(name), "%.*s", (int)strcspn(s[i], "\n"), s[i]);
			r = volume_dm_simple(name, DM_DEVICE_RESUME, false);
			if (r < 0) {
				log_debug("Cannot resume '%s': %s", name, strerror(-r));
				goto out;
			}
		}
	}
	/* 3. check: every target of the plan names its logon key again */
	{
		struct stack_dev devs[STACK_MAX_DEVS];
		char hex[40];
		int n = 0;
		r = stack_list(uuid, devs, &n);
		if (r < 0)
			goto out;
		uuid_hex(uuid, hex, sizeof(hex));
		for (int i = 0; i < n; i++)
			for (int j = 0; j < devs[i].n; j++)
				if (devs[i].t[j].crypt && devs[i].t[j].key == VOLUME_KEY_HEX) {
					r = -EBADMSG;
					goto out;
				}
	}
	r = 0;
out:
	k = volume_keyring_purge(uuid);
	if (k < 0)
		log_debug("Failed to purge keys of '%s': %s", uuid, strerror(-k));
	json_object_put(hdr);
	return r;
}

int volume_stack_resume(const char *uuid, const char *device, const struct secret *secret,
			const char *plan)
{
	int r;

	luks_lock();
	r = stack_resume_locked(uuid, device, secret, plan);
	volume_unlock();
	return r;
}
