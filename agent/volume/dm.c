/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libdevmapper.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/log.h"
#include "volume/dm.h"
#include "volume/volume.h"

/* See dm.h: the libraries' own globals make this the one lock of the volume layer. */
static pthread_mutex_t volume_mutex = PTHREAD_MUTEX_INITIALIZER;

void volume_lock(void)
{
	pthread_mutex_lock(&volume_mutex);
}

void volume_unlock(void)
{
	pthread_mutex_unlock(&volume_mutex);
}

__attribute__((format(printf, 5, 6))) static void
dm_log_debug(int level, const char *file, int line, int dm_errno_or_class, const char *f, ...)
{
	_cleanup_free_ char *msg = NULL;
	va_list ap;

	if (log_max_level < LOG_DEBUG)
		return;
	va_start(ap, f);
	if (vasprintf(&msg, f, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (msg && strncmp(msg, "<backtrace>", 11) != 0) /* stack markers, as libcryptsetup does */
		log_debug("libdevmapper: %s", msg);
}

void volume_dm_quiet(void)
{
	dm_log_with_errno_init(dm_log_debug);
}

bool volume_dm_available(void)
{
	_cleanup_free_ char *line = NULL;
	_cleanup_close_ int fd = -1;
	size_t cap = 0;
	bool found = false;
	FILE *f;

	/* dm-mod registers the misc device "device-mapper". */
	f = fopen("/proc/misc", "re");
	if (f) {
		while (!found && getline(&line, &cap, f) > 0)
			found = strstr(line, " device-mapper\n") != NULL;
		fclose(f);
	}
	if (found)
		return true;
	/* Not loaded: opening the control node (a devtmpfs static node when dm-mod is a module)
	 * loads it on demand; without dm in the kernel the open fails (ENODEV).  A node left over
	 * in a container's /dev must not count. */
	fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
	return fd >= 0;
}

bool volume_dm_device_suspended(const char *path)
{
	char sys[96], buf[8] = "";
	struct stat st;
	FILE *f;

	if (stat(path, &st) < 0 || !S_ISBLK(st.st_mode))
		return false;
	snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u/dm/suspended", major(st.st_rdev),
		 minor(st.st_rdev));
	f = fopen(sys, "re");
	if (!f)
		return false; /* not a dm device */
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	return buf[0] == '1';
}

/* "7:0" -> "/dev/loop0" through /sys/dev/block/7:0/uevent (DEVNAME=loop0). */
static int devno_to_path(const char *devno, char *buf, size_t size)
{
	_cleanup_free_ char *path = NULL, *line = NULL;
	size_t cap = 0;
	int r = -ENOENT;
	FILE *f;

	if (asprintf(&path, "/sys/dev/block/%s/uevent", devno) < 0)
		return -ENOMEM;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		if (strncmp(line, "DEVNAME=", 8) != 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		r = snprintf(buf, size, "/dev/%s", line + 8) < (int)size ? 0 : -ENAMETOOLONG;
		break;
	}
	fclose(f);
	return r;
}

/* dm uuid "CRYPT-LUKS2-<32 hex>-<name>" (cryptsetup lib/libdevmapper.c, dm_prepare_uuid()) to
 * the LUKS UUID */
static int dm_uuid_to_luks(const char *dm_uuid, char *buf, size_t size)
{
	static const char prefix[] = "CRYPT-LUKS2-";
	const char *hex;
	size_t o = 0;

	if (!dm_uuid || strncmp(dm_uuid, prefix, sizeof(prefix) - 1) != 0)
		return -ENODEV;
	hex = dm_uuid + sizeof(prefix) - 1;
	if (size < 37 || strspn(hex, "0123456789abcdefABCDEF") != 32 || hex[32] != '-')
		return -ENODEV;
	for (int i = 0; i < 32; i++) {
		if (i == 8 || i == 12 || i == 16 || i == 20)
			buf[o++] = '-';
		buf[o++] = (char)tolower((unsigned char)hex[i]);
	}
	buf[o] = '\0';
	return 0;
}

/*
 * The key field of a crypt table line (Documentation/admin-guide/device-mapper/dm-crypt.rst):
 *   <cipher> <key> <iv_offset> <device path> <offset> [<#opt_params> <opt_params>]
 * <key> is hex, "-" (no key), or ":<key_size>:<key_type>:<key_description>" (kernel keyring).
 * After "key wipe" dm-crypt drops the keyring reference and prints the zeroed key as hex
 * (drivers/md/dm-crypt.c crypt_wipe_key(), crypt_status()).
 */
static enum volume_key_state parse_key(const char *key, size_t len, char *desc, size_t desc_size,
				       bool *ret_logon)
{
	*ret_logon = false;
	if (len > 0 && key[0] == ':') {
		const char *type = memchr(key + 1, ':', len - 1);
		const char *d = type ? memchr(type + 1, ':', len - (size_t)(type + 1 - key)) : NULL;

		if (!d)
			return VOLUME_KEY_HEX; /* unparseable: treat as the worst case */
		*ret_logon = d - type - 1 == 5 && strncmp(type + 1, "logon", 5) == 0;
		snprintf(desc, desc_size, "%.*s", (int)(len - (size_t)(d + 1 - key)), d + 1);
		return VOLUME_KEY_KEYRING;
	}
	if (len == 0 || (len == 1 && key[0] == '-'))
		return VOLUME_KEY_NONE;
	for (size_t i = 0; i < len; i++)
		if (key[i] != '0')
			return VOLUME_KEY_HEX;
	return VOLUME_KEY_WIPED;
}

static int dm_task_errno(struct dm_task *dmt)
{
	int e = dm_task_get_errno(dmt);

	return e > 0 ? -e : -EIO;
}

int volume_dm_query(const char *name, struct volume_mapping *ret, bool *ret_logon)
{
	struct volume_mapping m = {};
	struct dm_task *dmt;
	struct dm_info info;
	uint64_t start, length;
	char *type = NULL, *params = NULL;
	bool logon = false;
	int r;

	if (!volume_dm_available())
		return -ENOTSUP;
	if (strlen(name) >= sizeof(m.name))
		return -ENAMETOOLONG;
	volume_dm_quiet();
	dmt = dm_task_create(DM_DEVICE_TABLE);
	if (!dmt)
		return -ENOMEM;
	/* The kernel always returns the key field (dmsetup masks it in user space unless
	 * --showkeys); secure_data makes libdevmapper and the kernel wipe the ioctl buffers after
	 * use. */
	if (!dm_task_set_name(dmt, name) || !dm_task_secure_data(dmt)) {
		r = -ENOMEM;
		goto out;
	}
	if (!dm_task_run(dmt)) {
		r = dm_task_errno(dmt);
		if (r == -ENXIO)
			r = -ENOENT;
		goto out;
	}
	if (!dm_task_get_info(dmt, &info) || !info.exists) {
		r = -ENOENT;
		goto out;
	}
	snprintf(m.name, sizeof(m.name), "%s", name);
	m.suspended = info.suspended;
	r = dm_uuid_to_luks(dm_task_get_uuid(dmt), m.uuid, sizeof(m.uuid));

	(void)dm_get_next_target(dmt, NULL, &start, &length, &type, &params);
	if (!type || strcmp(type, "crypt") != 0 || !params) {
		r = -ENODEV;
	} else {
		const char *key = strchr(params, ' ');
		const char *dev;
		size_t klen;

		key = key ? key + 1 : params + strlen(params);
		klen = strcspn(key, " ");
		m.key = parse_key(key, klen, m.key_desc, sizeof(m.key_desc), &logon);
		/* skip <key> and <iv_offset>; the device is "major:minor" */
		dev = key + klen;
		dev += strspn(dev, " ");
		dev += strcspn(dev, " ");
		dev += strspn(dev, " ");
		if (*dev) {
			char devno[32];
			snprintf(devno, sizeof(devno), "%.*s", (int)strcspn(dev, " "), dev);
			if (devno_to_path(devno, m.device, sizeof(m.device)) < 0)
				snprintf(m.device, sizeof(m.device), "%s", devno);
		}
	}
	*ret = m;
	if (ret_logon)
		*ret_logon = logon;
out:
	dm_task_destroy(dmt);
	return r;
}

int volume_dm_key_wipe(const char *name)
{
	struct dm_task *dmt;
	int r = 0;

	volume_dm_quiet();
	dmt = dm_task_create(DM_DEVICE_TARGET_MSG);
	if (!dmt)
		return -ENOMEM;
	if (!dm_task_set_name(dmt, name) || !dm_task_set_sector(dmt, 0) ||
	    !dm_task_set_message(dmt, "key wipe"))
		r = -ENOMEM;
	else if (!dm_task_run(dmt))
		r = dm_task_errno(dmt);
	dm_task_destroy(dmt);
	return r;
}

int volume_mapping_info(const char *name, struct volume_mapping *ret)
{
	struct volume_mapping m;
	int r;

	volume_lock();
	r = volume_dm_query(name, &m, NULL);
	volume_unlock();
	if (r < 0)
		return r;
	*ret = m;
	return 0;
}

static int mapping_cmp(const void *a, const void *b)
{
	const struct volume_mapping *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

void volume_mapping_list_free(struct volume_mapping **l)
{
	if (!l)
		return;
	for (struct volume_mapping **p = l; *p; p++)
		free(*p);
	free(l);
}

/* Locked; a NULL-terminated, name-sorted array of the LUKS2 crypt mappings. */
static int mapping_list_locked(struct volume_mapping ***ret)
{
	struct volume_mapping **l = NULL;
	struct dm_names *names;
	struct dm_task *dmt;
	size_t n = 0;
	int r = 0;

	if (!volume_dm_available())
		return -ENOTSUP;
	volume_dm_quiet();
	dmt = dm_task_create(DM_DEVICE_LIST);
	if (!dmt)
		return -ENOMEM;
	if (!dm_task_run(dmt)) {
		r = dm_task_errno(dmt);
		goto out;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		r = -ENOMEM;
		goto out;
	}
	names = dm_task_get_names(dmt);
	for (unsigned next = 0; names && names->dev; names = (void *)((char *)names + next)) {
		struct volume_mapping m, **nl;

		next = names->next;
		if (volume_dm_query(names->name, &m, NULL) == 0) {
			nl = reallocarray(l, n + 2, sizeof(*l));
			if (!nl) {
				r = -ENOMEM;
				goto out;
			}
			l = nl;
			l[n] = malloc(sizeof(m));
			if (!l[n]) {
				r = -ENOMEM;
				goto out;
			}
			*l[n++] = m;
			l[n] = NULL;
		}
		if (!next)
			break;
	}
	qsort(l, n, sizeof(*l), mapping_cmp);
	*ret = TAKE_PTR(l);
out:
	volume_mapping_list_free(l);
	dm_task_destroy(dmt);
	return r;
}

int volume_mapping_list(struct volume_mapping ***ret)
{
	int r;

	volume_lock();
	r = mapping_list_locked(ret);
	volume_unlock();
	return r;
}

/* "0fd1...-..." and "0FD1..." name the same UUID */
static bool uuid_equal(const char *a, const char *b)
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

int volume_mapping_find(const char *uuid, struct volume_mapping *ret)
{
	struct volume_mapping **l = NULL;
	int r;

	r = volume_mapping_list(&l);
	if (r < 0)
		return r;
	r = -ENOENT;
	for (struct volume_mapping **p = l; *p; p++)
		if (uuid_equal((*p)->uuid, uuid)) {
			*ret = **p;
			r = 0;
			break;
		}
	volume_mapping_list_free(l);
	return r;
}
