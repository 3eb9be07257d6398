/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libdevmapper.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
	static bool
	    loaded; /* seen once: dm-mod is not unloaded under libdevmapper's open control fd */
	_cleanup_free_ char *line = NULL;
	_cleanup_close_ int fd = -1;
	size_t cap = 0;
	bool found = false;
	FILE *f;

	if (__atomic_load_n(&loaded, __ATOMIC_RELAXED))
		return true;
	/* dm-mod registers the misc device "device-mapper". */
	f = fopen("/proc/misc", "re");
	if (f) {
		while (!found && getline(&line, &cap, f) > 0)
			found = strstr(line, " device-mapper\n") != NULL;
		fclose(f);
	}
	if (found) {
		__atomic_store_n(&loaded, true, __ATOMIC_RELAXED);
		return true;
	}
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

enum volume_key_state volume_dm_key_state(const char *key, size_t len, bool *ret_logon)
{
	*ret_logon = false;
	if (len > 0 && key[0] == ':') {
		const char *type = memchr(key + 1, ':', len - 1);
		const char *d = type ? memchr(type + 1, ':', len - (size_t)(type + 1 - key)) : NULL;

		if (!d)
			return VOLUME_KEY_HEX; /* unparseable: treat as the worst case */
		*ret_logon = d - type - 1 == 5 && strncmp(type + 1, "logon", 5) == 0;
		return VOLUME_KEY_KEYRING;
	}
	if (len == 0 || (len == 1 && key[0] == '-'))
		return VOLUME_KEY_NONE;
	/* After "key wipe" dm-crypt drops the keyring reference and prints the zeroed key as hex
	 * (drivers/md/dm-crypt.c crypt_wipe_key(), crypt_status()). */
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

/* A crypt target's params: <cipher> <key> <iv_offset> <device path> <offset> [<#opt> <opt>...] */
static void crypt_target(const char *params, struct volume_dm_target *t)
{
	const char *key = strchr(params, ' ');
	const char *dev;
	size_t klen;

	key = key ? key + 1 : params + strlen(params);
	klen = strcspn(key, " ");
	t->key = volume_dm_key_state(key, klen, &t->logon);
	if (t->key == VOLUME_KEY_KEYRING)
		snprintf(t->key_field, sizeof(t->key_field), "%.*s", (int)klen, key);
	/* skip <key> and <iv_offset>; the device is "major:minor" */
	dev = key + klen;
	dev += strspn(dev, " ");
	dev += strcspn(dev, " ");
	dev += strspn(dev, " ");
	snprintf(t->devno, sizeof(t->devno), "%.*s", (int)strcspn(dev, " "), dev);
}

int volume_dm_table(const char *name, struct volume_dm_table *ret)
{
	struct dm_task *dmt;
	struct dm_info info;
	uint64_t start, length;
	char *type = NULL, *params = NULL;
	const char *uuid;
	void *next = NULL;
	int r = 0;

	memset(ret, 0, sizeof(*ret));
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
	uuid = dm_task_get_uuid(dmt);
	snprintf(ret->dm_uuid, sizeof(ret->dm_uuid), "%s", uuid ? uuid : "");
	ret->suspended = info.suspended;
	ret->major = info.major;
	ret->minor = info.minor;
	do {
		struct volume_dm_target *t;
		type = params = NULL;
		next = dm_get_next_target(dmt, next, &start, &length, &type, &params);
		if (!type)
			break;
		if (ret->n == VOLUME_DM_TARGETS_MAX) {
			ret->truncated = true;
			break;
		}
		t = &ret->t[ret->n++];
		t->start = start;
		t->crypt = strcmp(type, "crypt") == 0;
		if (t->crypt && params)
			crypt_target(params, t);
	} while (next);
out:
	dm_task_destroy(dmt);
	return r;
}

/* A LUKS2 crypt mapping from its table: -ENODEV when it is not one (the fields are still filled) */
static int mapping_from_table(const char *name, const struct volume_dm_table *tb,
			      struct volume_mapping *ret)
{
	struct volume_mapping m = {};
	int r;

	snprintf(m.name, sizeof(m.name), "%s", name);
	m.suspended = tb->suspended;
	r = dm_uuid_to_luks(tb->dm_uuid, m.uuid, sizeof(m.uuid));
	if (tb->n == 0 || !tb->t[0].crypt) {
		r = -ENODEV;
	} else {
		const struct volume_dm_target *t = &tb->t[0];
		m.key = t->key;
		if (t->key == VOLUME_KEY_KEYRING) {
			/* ":<size>:<type>:<desc>" -> "<desc>" */
			const char *d = strchr(t->key_field + 1, ':');
			d = d ? strchr(d + 1, ':') : NULL;
			snprintf(m.key_desc, sizeof(m.key_desc), "%s", d ? d + 1 : "");
		}
		if (t->devno[0] && devno_to_path(t->devno, m.device, sizeof(m.device)) < 0)
			snprintf(m.device, sizeof(m.device), "%s", t->devno);
	}
	*ret = m;
	return r;
}

int volume_dm_query(const char *name, struct volume_mapping *ret, bool *ret_logon)
{
	struct volume_dm_table tb;
	int r;

	if (!volume_dm_available())
		return -ENOTSUP;
	if (strlen(name) >= sizeof(ret->name))
		return -ENAMETOOLONG;
	r = volume_dm_table(name, &tb);
	if (r < 0)
		return r;
	r = mapping_from_table(name, &tb, ret);
	if (ret_logon)
		*ret_logon = tb.n > 0 && tb.t[0].logon;
	return r;
}

bool volume_dm_uuid_match(const char *dm_uuid, const char *hex)
{
	const char *p;
	size_t n;

	if (!dm_uuid || strncmp(dm_uuid, "CRYPT-", 6) != 0)
		return false;
	if (!hex)
		return strncmp(dm_uuid, "CRYPT-LUKS2-", 12) == 0;
	p = strchr(dm_uuid + 6, '-');
	n = strlen(hex);
	return p && n > 0 && strncasecmp(p + 1, hex, n) == 0 && p[1 + n] == '-';
}

/* The dm uuid of block device @dev (libdevmapper's encoding, as glibc's major()/minor() read it)
 * from sysfs: "" when it has none. */
static int dm_sysfs_uuid(uint64_t dev, char *buf, size_t size)
{
	char path[80];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/dm/uuid", major((dev_t)dev),
		 minor((dev_t)dev));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	if (n == (ssize_t)size - 1)
		return -E2BIG;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

int volume_dm_list(const char *hex, int (*fn)(const char *name, void *userdata), void *userdata)
{
	struct dm_names *names;
	struct dm_task *dmt;
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
	names = dm_task_get_names(dmt);
	for (unsigned next = 0; names && names->dev; names = (void *)((char *)names + next)) {
		char uuid[160];

		next = names->next;
		/* unreadable (no sysfs?): let the table decide */
		if (dm_sysfs_uuid(names->dev, uuid, sizeof(uuid)) < 0 ||
		    volume_dm_uuid_match(uuid, hex)) {
			r = fn(names->name, userdata);
			if (r < 0)
				goto out;
			r = 0;
		}
		if (!next)
			break;
	}
out:
	dm_task_destroy(dmt);
	return r;
}

int volume_dm_simple(const char *name, int task, bool skip_lockfs)
{
	struct dm_task *dmt;
	int r = 0;

	volume_dm_quiet();
	dmt = dm_task_create(task);
	if (!dmt)
		return -ENOMEM;
	if (!dm_task_set_name(dmt, name) || (skip_lockfs && !dm_task_skip_lockfs(dmt)))
		r = -ENOMEM;
	else if (!dm_task_run(dmt))
		r = dm_task_get_errno(dmt) > 0 ? -dm_task_get_errno(dmt) : -EIO;
	dm_task_destroy(dmt);
	return r;
}

/* Does dm device @maj:@min have holders (/sys/dev/block/M:m/holders/ not empty)? */
static bool dm_has_holders(unsigned int maj, unsigned int min)
{
	char path[80];
	struct dirent *de;
	bool any = false;
	DIR *d;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/holders", maj, min);
	d = opendir(path);
	if (!d)
		return false;
	while (!any && (de = readdir(d)))
		any = de->d_name[0] != '.';
	closedir(d);
	return any;
}

int volume_dm_remove_crypt(const char *name)
{
	struct volume_dm_table tb;
	unsigned int maj, min;
	char uuid[sizeof(((struct volume_dm_table *)0)->dm_uuid)];
	struct dm_task *dmt;
	uint32_t cookie = 0;
	int r, n;

	if (!volume_dm_available())
		return -ENOTSUP;
	r = volume_dm_table(name, &tb);
	if (r < 0)
		return r;
	if (!volume_dm_uuid_match(tb.dm_uuid, NULL) || tb.n == 0 || !tb.t[0].crypt)
		return -ENODEV;
	/* One crypt target straight on a device that is not one of the volume's own dm devices
	 * (dm-integrity, a re-encryption's hotzone or overlay: CRYPT-SUBDEV-/CRYPT-* uuids) is all
	 * libcryptsetup's deactivation would remove too.  Anything else is left to it. */
	if (tb.n != 1 || tb.truncated || sscanf(tb.t[0].devno, "%u:%u%n", &maj, &min, &n) != 2 ||
	    tb.t[0].devno[n] != '\0')
		return -EOPNOTSUPP;
	r = dm_sysfs_uuid(makedev(maj, min), uuid, sizeof(uuid));
	if (r != -ENOENT && (r < 0 || strncmp(uuid, "CRYPT-", 6) == 0))
		return -EOPNOTSUPP;
	/* A device stacked on it (LVM, another dm device) holds it for good: say so at once, as
	 * crypt_deactivate() does, instead of retrying the removal for seconds. */
	if (dm_has_holders(tb.major, tb.minor))
		return -EBUSY;
	r = 0;

	volume_dm_quiet();
	dmt = dm_task_create(DM_DEVICE_REMOVE);
	if (!dmt)
		return -ENOMEM;
	/* What `cryptsetup close` does: retry while udev's probes hold the device open for a
	 * moment, and let udev remove /dev/mapper/<name> (libdevmapper does it itself when udev
	 * is not running), waiting until it has, so the name is free when we return. */
	if (!dm_task_set_name(dmt, name) || !dm_task_retry_remove(dmt) ||
	    !dm_task_set_cookie(dmt, &cookie, 0)) {
		dm_task_destroy(dmt);
		return -ENOMEM;
	}
	if (!dm_task_run(dmt)) {
		r = dm_task_errno(dmt);
		if (r == -ENXIO)
			r = -ENOENT;
	}
	(void)dm_udev_wait(cookie);
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

struct list_ctx {
	const char *hex; /* NULL: every LUKS2 volume */
	struct volume_mapping **l;
	size_t n;
	bool stack; /* a device of the volume other than a plain crypt mapping */
};

static int list_one(const char *name, void *userdata)
{
	struct list_ctx *x = userdata;
	struct volume_dm_table tb;
	struct volume_mapping m, **nl;
	int r;

	if (strlen(name) >= sizeof(m.name))
		return 0;
	r = volume_dm_table(name, &tb);
	if (r < 0)
		return r == -ENOENT ? 0 : r; /* gone meanwhile */
	if (!volume_dm_uuid_match(tb.dm_uuid, x->hex))
		return 0; /* what the table says counts, not sysfs */
	if (x->hex && (strncmp(tb.dm_uuid, "CRYPT-LUKS2-", 12) != 0 || tb.n != 1 || tb.truncated ||
		       !tb.t[0].crypt))
		x->stack = true;
	if (mapping_from_table(name, &tb, &m) < 0)
		return 0;
	nl = reallocarray(x->l, x->n + 2, sizeof(*x->l));
	if (!nl)
		return -ENOMEM;
	x->l = nl;
	x->l[x->n] = malloc(sizeof(m));
	if (!x->l[x->n])
		return -ENOMEM;
	*x->l[x->n++] = m;
	x->l[x->n] = NULL;
	return 0;
}

/* "0fd1...-..." -> "0fd1..." (lower case, no dashes); -EINVAL when not 32 hex digits */
static int uuid_to_hex(const char *uuid, char *buf, size_t size)
{
	size_t o = 0;

	for (; *uuid; uuid++) {
		if (*uuid == '-')
			continue;
		if (!isxdigit((unsigned char)*uuid) || o + 1 >= size)
			return -EINVAL;
		buf[o++] = (char)tolower((unsigned char)*uuid);
	}
	buf[o] = '\0';
	return o == 32 ? 0 : -EINVAL;
}

/* Locked; a NULL-terminated, name-sorted array of the LUKS2 crypt mappings (of LUKS volume @uuid
 * only, when not NULL; *ret_stack as volume_mapping_list_of()). */
static int mapping_list_locked(const char *uuid, struct volume_mapping ***ret, bool *ret_stack)
{
	struct list_ctx x = {};
	char hex[40];
	int r;

	if (uuid) {
		if (uuid_to_hex(uuid, hex, sizeof(hex)) < 0)
			return -EINVAL;
		x.hex = hex;
	}
	x.l = calloc(1, sizeof(*x.l));
	if (!x.l)
		return -ENOMEM;
	r = volume_dm_list(x.hex, list_one, &x);
	if (r < 0) {
		volume_mapping_list_free(x.l);
		return r;
	}
	qsort(x.l, x.n, sizeof(*x.l), mapping_cmp);
	*ret = x.l;
	if (ret_stack)
		*ret_stack = x.stack;
	return 0;
}

int volume_dm_volumes(char ***ret)
{
	struct dm_names *names;
	struct dm_task *dmt;
	char **l = NULL;
	size_t n = 0;
	int r = 0;

	volume_lock();
	if (!volume_dm_available()) {
		r = -ENOTSUP;
		goto unlock;
	}
	volume_dm_quiet();
	dmt = dm_task_create(DM_DEVICE_LIST);
	if (!dmt) {
		r = -ENOMEM;
		goto unlock;
	}
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
		char uuid[160], hex[40];
		const char *p;
		char **nl;

		next = names->next;
		r = dm_sysfs_uuid(names->dev, uuid, sizeof(uuid));
		if (r < 0)
			goto out; /* cannot tell: the caller asks per volume */
		/* "CRYPT-<TYPE>-<hex>-<name>" */
		p = strncmp(uuid, "CRYPT-", 6) == 0 ? strchr(uuid + 6, '-') : NULL;
		if (p && strspn(p + 1, "0123456789abcdefABCDEF") == 32 && p[33] == '-') {
			for (int i = 0; i < 32; i++)
				hex[i] = (char)tolower((unsigned char)p[1 + i]);
			hex[32] = '\0';
			nl = reallocarray(l, n + 2, sizeof(*l));
			if (!nl) {
				r = -ENOMEM;
				goto out;
			}
			l = nl;
			l[n] = strdup(hex);
			if (!l[n]) {
				r = -ENOMEM;
				goto out;
			}
			l[++n] = NULL;
		}
		if (!next)
			break;
	}
	*ret = TAKE_PTR(l);
out:
	dm_task_destroy(dmt);
unlock:
	volume_unlock();
	for (size_t i = 0; l && l[i]; i++)
		free(l[i]);
	free(l);
	return r;
}

int volume_mapping_list_of(const char *uuid, struct volume_mapping ***ret, bool *ret_stack)
{
	int r;

	volume_lock();
	r = mapping_list_locked(uuid, ret, ret_stack);
	volume_unlock();
	return r;
}

int volume_mapping_list(struct volume_mapping ***ret)
{
	int r;

	volume_lock();
	r = mapping_list_locked(NULL, ret, NULL);
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

	/* only the tables of this volume's own dm devices are read */
	r = volume_mapping_list_of(uuid, &l, NULL);
	if (r == -EINVAL)
		return -ENOENT; /* not a LUKS UUID: no mapping has it */
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
