/* SPDX-License-Identifier: MIT */
/*
 * kmscrypt-generator: a systemd generator (systemd.generator(7)) that gives every kmscrypt volume
 * its own boot unit, kmscrypt-unlock@<instance>.service (the template
 * unit/kmscrypt-unlock@.service), as systemd-cryptsetup-generator does for /etc/crypttab: a volume
 * whose KMS denies access is one failed unit in `systemctl --failed`, and the other volumes and the
 * boot go on.
 *
 *   kmscrypt-generator NORMAL_DIR [EARLY_DIR LATE_DIR]      (systemd runs it at boot and on reload)
 *
 * Volumes come from:
 *   - /etc/kmscrypt/volumes, the operator's list (kmscrypt(8), "BOOT"), always;
 *   - the state dir's volume records (/var/lib/kmscrypt/volumes/<uuid>.json), when
 *     kmscrypt-unlock.service is enabled (the generator then replaces it): records whose device is
 *     not a block device (image files) are left out.  Generators run before the file systems of
 *     fstab are mounted: with /var on a file system of its own there is no record yet, so list the
 *     volumes in /etc/kmscrypt/volumes (the all-in-one unit then still runs for the rest).
 * Per volume, into NORMAL_DIR: a drop-in kmscrypt-unlock@<instance>.service.d/50-kmscrypt.conf
 * (the device, the ordering, the target to unlock) and, but for "noauto", a Wants= symlink from
 * cryptsetup.target (local provider) or remote-fs.target (a KMS on the network: ordered after
 * network-online.target, before remote-fs-pre.target).  When it wrote any, a drop-in for
 * kmscrypt-unlock.service skips that unit (a never-met condition) and orders it after the
 * per-volume units, so mounts that require it still wait for them.
 *
 * Nothing read from a file reaches a unit file unchecked: UUIDs are 8-4-4-4-12 hex digits, device
 * paths and mapping names are limited to characters that need no quoting, escaping or specifier
 * expansion in a unit file (no space, quote, backslash, '%' or '$'), and unit names are escaped
 * as systemd-escape --path does.  A line that does not pass is ignored with a warning.
 *
 * Environment (tests only; systemd runs generators with a clean environment): KMSCRYPT_CONFIG_DIR,
 * KMSCRYPT_STATE_DIR as for kmscrypt, KMSCRYPT_SYSTEMD_CONFIG_DIR (/etc/systemd/system),
 * KMSCRYPT_UNIT_DIR (where the template unit is installed: the target of the Wants= symlinks).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/state.h"
#include "util/escape.h"

#ifndef KMSCRYPT_UNIT_DIR_DEFAULT
#define KMSCRYPT_UNIT_DIR_DEFAULT "/lib/systemd/system"
#endif
#define DROPIN "50-kmscrypt-generator.conf"

struct gvol {
	char uuid[37];	  /* "" for a device path entry */
	char path[256];	  /* the device: /dev/disk/by-uuid/<uuid> or the listed path */
	char name[128];	  /* mapping name, "" for kmscrypt's default */
	char kms[80];	  /* the state record's KMS configuration, "" when unknown */
	char source[600]; /* what the volume came from, for SourcePath= and comments */
	bool noauto, netdev;
	char instance[512]; /* escaped instance name */
};

static const char *config_dir = "/etc/kmscrypt", *state_dir = "/var/lib/kmscrypt";
static const char *systemd_config_dir = "/etc/systemd/system",
		  *unit_dir = KMSCRYPT_UNIT_DIR_DEFAULT;
static FILE *log_file;
static int failures;

/* One line to /dev/kmsg when systemd runs us (journald is not up yet), else to stderr; untrusted
 * text is escaped. */
static void __attribute__((format(printf, 2, 3))) glog(int level, const char *fmt, ...)
{
	char buf[1024], esc[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	cescape_buf(buf, esc, sizeof(esc));
	if (log_file == stderr)
		fprintf(stderr, "kmscrypt-generator: %s\n", esc);
	else
		fprintf(log_file, "<%d>kmscrypt-generator: %s\n", level, esc);
	fflush(log_file);
}

static bool uuid_valid(const char *s)
{
	static const int dash[] = {8, 13, 18, 23};

	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		bool want_dash = i == dash[0] || i == dash[1] || i == dash[2] || i == dash[3];
		if (want_dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
			return false;
	}
	return true;
}

/* Characters that mean the same in a unit file's Environment=, Description= and in argv: no
 * whitespace, quotes, backslash (C escapes), '%' (specifiers) or '$' (ExecStart= expansion). */
static bool plain_chars(const char *s, const char *extra)
{
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr(extra, *s))
			return false;
	return true;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* An absolute path without "." or ".." components or "//" (one device, one unit name). */
static bool path_valid(const char *s)
{
	return s[0] == '/' && strlen(s) < 200 && plain_chars(s, "/._:+@,=-") && !strstr(s, "//") &&
	       !strstr(s, "/./") && !strstr(s, "/../") && !ends_with(s, "/.") &&
	       !ends_with(s, "/..");
}

/* core_mapping_name_valid()'s set, and never an option to kmscrypt */
static bool name_valid(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= 120 && s[0] != '-' && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 &&
	       plain_chars(s, "._-+");
}

static int append(char *buf, size_t n, size_t *o, const char *add)
{
	size_t k = strlen(add);

	if (*o + k + 1 > n)
		return -ENAMETOOLONG;
	memcpy(buf + *o, add, k + 1);
	*o += k;
	return 0;
}

/* systemd's unit_name_path_escape() (systemd-escape --path): "/dev/disk/by-id/x-y" ->
 * "dev-disk-by\x2did-x\x2dy"; '/' separates, everything but [A-Za-z0-9:_.] (and a leading '.')
 * is \xNN. */
static int path_escape(const char *path, char *buf, size_t n)
{
	size_t o = 0;
	bool sep = false;

	buf[0] = 0;
	for (const char *p = path; *p; p++) {
		char tmp[8];
		if (*p == '/') {
			sep = o > 0;
			continue;
		}
		if (sep && append(buf, n, &o, "-") < 0)
			return -ENAMETOOLONG;
		sep = false;
		if (isalnum((unsigned char)*p) || *p == ':' || *p == '_' || (*p == '.' && o > 0))
			snprintf(tmp, sizeof(tmp), "%c", *p);
		else
			snprintf(tmp, sizeof(tmp), "\\x%02x", (unsigned char)*p);
		if (append(buf, n, &o, tmp) < 0)
			return -ENAMETOOLONG;
	}
	return o == 0 ? append(buf, n, &o, "-") : 0;
}

/* "" when the provider is unknown.  Only the Provider= line is looked at; the file may hold
 * credentials: the line buffer is wiped. */
static void kms_provider(const char *kms, char *buf, size_t n)
{
	char path[512], *line = NULL;
	size_t cap = 0;
	FILE *f;

	buf[0] = 0;
	if (!kms[0] || !plain_chars(kms, "._-") || kms[0] == '.')
		return;
	snprintf(path, sizeof(path), "%s/kms/%s.conf", config_dir, kms);
	f = fopen(path, "re");
	if (!f)
		return;
	while (getline(&line, &cap, f) > 0) {
		if (strncmp(line, "Provider=", 9) == 0) {
			line[strcspn(line, "\r\n")] = 0;
			snprintf(buf, n, "%s", line + 9);
		}
		explicit_bzero(line, cap);
	}
	free(line);
	fclose(f);
}

static struct gvol *find_vol(struct gvol *v, size_t n, const char *uuid, const char *path)
{
	for (size_t i = 0; i < n; i++)
		if ((uuid[0] && strcmp(v[i].uuid, uuid) == 0) ||
		    (path[0] && strcmp(v[i].path, path) == 0))
			return &v[i];
	return NULL;
}

static int add_vol(struct gvol **v, size_t *n, const struct gvol *g)
{
	struct gvol *nv;

	if (find_vol(*v, *n, g->uuid, g->path)) {
		glog(4, "%s: volume '%s' is listed twice; the first entry is used.", g->source,
		     g->uuid[0] ? g->uuid : g->path);
		return 0;
	}
	nv = realloc(*v, (*n + 1) * sizeof(**v));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[(*n)++] = *g;
	return 0;
}

/* /etc/kmscrypt/volumes: "VOLUME [NAME|-] [OPTIONS]" per line, '#' comments (kmscrypt(8)). */
static int read_list(struct gvol **v, size_t *n)
{
	char path[512], *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	FILE *f;
	int r = 0;

	snprintf(path, sizeof(path), "%s/volumes", config_dir);
	f = fopen(path, "re");
	if (!f) {
		if (errno != ENOENT)
			glog(3, "Cannot read '%s': %s; its volumes get no unit.", path,
			     strerror(errno));
		return errno == ENOENT ? 0 : -errno;
	}
	while (getline(&line, &cap, f) > 0) {
		struct gvol g = {};
		char *field[4] = {}, *save = NULL, *tok;
		int nf = 0;

		lineno++;
		line[strcspn(line, "#")] = 0;
		for (tok = strtok_r(line, " \t\r\n", &save); tok;
		     tok = strtok_r(NULL, " \t\r\n", &save))
			if (nf < 4)
				field[nf++] = tok;
			else
				nf = 5;
		if (nf == 0)
			continue;
		snprintf(g.source, sizeof(g.source), "%s:%u", path, lineno);
		if (nf > 3) {
			glog(4, "%s: more than 3 fields (VOLUME [NAME] [OPTIONS]); line ignored.",
			     g.source);
			continue;
		}
		if (strncasecmp(field[0], "UUID=", 5) == 0) {
			if (!uuid_valid(field[0] + 5)) {
				glog(4, "%s: '%s' is not UUID= and a LUKS UUID; line ignored.",
				     g.source, field[0]);
				continue;
			}
			for (int i = 0; i < 36; i++)
				g.uuid[i] = (char)tolower((unsigned char)field[0][5 + i]);
			snprintf(g.path, sizeof(g.path), "/dev/disk/by-uuid/%s", g.uuid);
		} else if (path_valid(field[0])) {
			snprintf(g.path, sizeof(g.path), "%s", field[0]);
		} else {
			glog(4,
			     "%s: '%s' is neither UUID=<uuid> nor an absolute device path of "
			     "letters, digits and /._:+@,=-; line ignored.",
			     g.source, field[0]);
			continue;
		}
		if (nf > 1 && strcmp(field[1], "-") != 0) {
			if (!name_valid(field[1])) {
				glog(4,
				     "%s: '%s' cannot be a mapping name (letters, digits and ._-+, "
				     "not starting with '-'); line ignored.",
				     g.source, field[1]);
				continue;
			}
			snprintf(g.name, sizeof(g.name), "%s", field[1]);
		}
		for (tok = nf > 2 ? strtok_r(field[2], ",", &save) : NULL; tok;
		     tok = strtok_r(NULL, ",", &save)) {
			if (strcmp(tok, "noauto") == 0)
				g.noauto = true;
			else if (strcmp(tok, "_netdev") == 0)
				g.netdev = true;
			else if (strcmp(tok, "nofail") != 0 && strcmp(tok, "auto") != 0)
				glog(4,
				     "%s: unknown option '%s' ignored (known: noauto, _netdev, "
				     "nofail).",
				     g.source, tok);
		}
		r = add_vol(v, n, &g);
		if (r < 0)
			break;
	}
	free(line);
	fclose(f);
	return r;
}

/* kmscrypt-unlock.service is enabled: a symlink to it in a .wants/ or .requires/ dir of /etc. */
static bool all_in_one_enabled(void)
{
	char pat[512];
	glob_t g = {};
	bool found;

	snprintf(pat, sizeof(pat), "%s/*.{wants,requires}/kmscrypt-unlock.service",
		 systemd_config_dir);
	found = glob(pat, GLOB_BRACE | GLOB_NOSORT, NULL, &g) == 0 && g.gl_pathc > 0;
	globfree(&g);
	return found;
}

static int read_state(struct gvol **v, size_t *n, struct volume_state **states)
{
	for (size_t i = 0; states && states[i]; i++) {
		const struct volume_state *s = states[i];
		struct gvol g = {};
		struct stat st;
		int r;

		if (!uuid_valid(s->uuid))
			continue;
		for (int k = 0; k < 36; k++)
			g.uuid[k] = (char)tolower((unsigned char)s->uuid[k]);
		if (find_vol(*v, *n, g.uuid, ""))
			continue;
		/* An image file recorded by an earlier command is no volume of this boot. */
		if (s->device && stat(s->device, &st) == 0 && !S_ISBLK(st.st_mode))
			continue;
		snprintf(g.path, sizeof(g.path), "/dev/disk/by-uuid/%s", g.uuid);
		snprintf(g.source, sizeof(g.source), "%s/volumes/%s.json", state_dir, s->uuid);
		r = add_vol(v, n, &g);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The KMS configuration of each volume, from its state record (by UUID or by device path). */
static void fill_kms(struct gvol *v, size_t n, struct volume_state **states)
{
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; states && states[k]; k++) {
			const struct volume_state *s = states[k];
			if (!s->kms ||
			    !((v[i].uuid[0] && strcasecmp(s->uuid, v[i].uuid) == 0) ||
			      (!v[i].uuid[0] && s->device && strcmp(s->device, v[i].path) == 0)))
				continue;
			snprintf(v[i].kms, sizeof(v[i].kms), "%s", s->kms);
		}
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	size_t len = strlen(text);

	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len) {
		int e = errno ? errno : EIO;
		close(fd);
		return -e;
	}
	return close(fd) < 0 ? -errno : 0;
}

static int mkdir_p1(const char *path)
{
	return mkdir(path, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

static void fail(int r, const char *what, const char *path)
{
	glog(3, "Cannot %s '%s': %s", what, path, strerror(-r));
	failures++;
}

static void write_unit(const char *dir, struct gvol *g)
{
	char unit[600], dev[600], path[1400], provider[64], desc[600], text[4096];
	bool network;
	int r;

	if (g->uuid[0])
		snprintf(g->instance, sizeof(g->instance), "%s", g->uuid);
	else if (path_escape(g->path, g->instance, sizeof(g->instance)) < 0)
		return fail(-ENAMETOOLONG, "name a unit after", g->path);
	snprintf(unit, sizeof(unit), "kmscrypt-unlock@%s.service", g->instance);
	if (strlen(unit) > 255)
		return fail(-ENAMETOOLONG, "name a unit after", g->path);
	if (path_escape(g->path, dev, sizeof(dev) - 8) < 0)
		return fail(-ENAMETOOLONG, "name a device unit after", g->path);
	strcat(dev, ".device");
	kms_provider(g->kms, provider, sizeof(provider));
	/* The local provider reads a key file; any other KMS, or one we cannot tell, is remote. */
	network = g->netdev || strcmp(provider, "local") != 0;
	if (g->name[0])
		snprintf(desc, sizeof(desc), "%s%s as /dev/mapper/%s", g->uuid[0] ? "UUID=" : "",
			 g->uuid[0] ? g->uuid : g->path, g->name);
	else
		snprintf(desc, sizeof(desc), "%s%s", g->uuid[0] ? "UUID=" : "",
			 g->uuid[0] ? g->uuid : g->path);
	snprintf(text, sizeof(text),
		 "# Automatically generated by kmscrypt-generator from %s\n"
		 "[Unit]\n"
		 "Description=Unlock kmscrypt volume %s through its KMS\n"
		 "SourcePath=%.*s\n"
		 "BindsTo=%s\n"
		 "After=%s\n"
		 "%s"
		 "\n"
		 "[Service]\n"
		 "Environment=KMSCRYPT_VOLUME=%s%s\n"
		 "%s%s%s",
		 g->source, desc, (int)strcspn(g->source, ":"), g->source, dev, dev,
		 network ? "# A KMS on the network (or one not known from the state dir)\n"
			   "Wants=network-online.target\n"
			   "After=network-online.target\n"
			   "Before=remote-fs-pre.target remote-cryptsetup.target\n"
			 : "# The local provider: no network needed\n"
			   "Before=cryptsetup.target\n",
		 g->uuid[0] ? "UUID=" : "", g->uuid[0] ? g->uuid : g->path,
		 g->name[0] ? "Environment=KMSCRYPT_UNLOCK_OPTIONS=--name=" : "", g->name,
		 g->name[0] ? "\n" : "");
	snprintf(path, sizeof(path), "%s/%s.d", dir, unit);
	r = mkdir_p1(path);
	if (r < 0)
		return fail(r, "create", path);
	snprintf(path, sizeof(path), "%s/%s.d/" DROPIN, dir, unit);
	r = write_file(path, text);
	if (r < 0)
		return fail(r, "write", path);
	if (g->noauto)
		return;
	snprintf(path, sizeof(path), "%s/%s.wants", dir,
		 network ? "remote-fs.target" : "cryptsetup.target");
	r = mkdir_p1(path);
	if (r < 0)
		return fail(r, "create", path);
	snprintf(path, sizeof(path), "%s/%s.wants/%s", dir,
		 network ? "remote-fs.target" : "cryptsetup.target", unit);
	snprintf(text, sizeof(text), "%s/kmscrypt-unlock@.service", unit_dir);
	if (symlink(text, path) < 0)
		return fail(-errno, "link", path);
}

/* kmscrypt-unlock.service (unlock --all) would unlock the same volumes, noauto ones included. */
static void write_all_in_one(const char *dir, struct gvol *v, size_t n)
{
	char path[600], *text = NULL;
	size_t cap = 0;
	FILE *f;
	int r;

	snprintf(path, sizeof(path), "%s/kmscrypt-unlock.service.d", dir);
	r = mkdir_p1(path);
	if (r < 0)
		return fail(r, "create", path);
	snprintf(path, sizeof(path), "%s/kmscrypt-unlock.service.d/" DROPIN, dir);
	f = open_memstream(&text, &cap);
	if (!f)
		return fail(-ENOMEM, "write", path);
	fprintf(
	    f,
	    "# Automatically generated by kmscrypt-generator: every volume has its own\n"
	    "# kmscrypt-unlock@.service instance, so this all-in-one unit is skipped (the "
	    "condition\n"
	    "# names this very file: it is never met). It still orders what requires it (fstab's\n"
	    "# x-systemd.requires=kmscrypt-unlock.service) after the per-volume units.\n"
	    "[Unit]\n"
	    "ConditionPathExists=!%s\n",
	    path);
	for (size_t i = 0; i < n; i++)
		if (v[i].instance[0])
			fprintf(f, "After=kmscrypt-unlock@%s.service\n", v[i].instance);
	if (fclose(f) != 0) {
		free(text);
		return fail(-ENOMEM, "write", path);
	}
	r = write_file(path, text);
	free(text);
	if (r < 0)
		fail(r, "write", path);
}

int main(int argc, char **argv)
{
	struct volume_state **states = NULL;
	struct gvol *v = NULL;
	size_t n = 0, written = 0;
	const char *e;
	int r;

	log_file = stderr;
	if (getenv("SYSTEMD_SCOPE")) { /* run by systemd (v251+): journald is not up yet */
		FILE *k = fopen("/dev/kmsg", "we");
		if (k)
			log_file = k;
	}
	if (argc != 2 && argc != 4) {
		glog(3, "Usage: kmscrypt-generator NORMAL_DIR [EARLY_DIR LATE_DIR]");
		return 2;
	}
	if ((e = getenv("KMSCRYPT_CONFIG_DIR")) && *e)
		config_dir = e;
	if ((e = getenv("KMSCRYPT_STATE_DIR")) && *e)
		state_dir = e;
	if ((e = getenv("KMSCRYPT_SYSTEMD_CONFIG_DIR")) && *e)
		systemd_config_dir = e;
	if ((e = getenv("KMSCRYPT_UNIT_DIR")) && *e)
		unit_dir = e;

	r = read_list(&v, &n);
	if (r == -ENOMEM)
		goto oom;
	if (r < 0)
		failures++;
	/* The records: missing before /var is mounted, or on a machine without volumes. */
	r = state_list(state_dir, &states);
	if (r < 0) {
		if (r != -ENOENT)
			glog(4, "Cannot read the state dir '%s': %s.", state_dir, strerror(-r));
		states = NULL;
	}
	if (all_in_one_enabled() && read_state(&v, &n, states) < 0)
		goto oom;
	fill_kms(v, n, states);
	for (size_t i = 0; i < n; i++) {
		int before = failures;
		write_unit(argv[1], &v[i]);
		if (failures == before)
			written++;
		else
			v[i].instance[0] = 0;
	}
	if (written > 0)
		write_all_in_one(argv[1], v, n);
	if (states)
		state_list_free(states);
	free(v);
	return failures ? 1 : 0;
oom:
	glog(3, "Out of memory.");
	return 1;
}
