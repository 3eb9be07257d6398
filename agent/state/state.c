/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <json-c/json.h>

#include "codec/token.h"
#include "state/state.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/safedir.h"

#define STATE_FILE_MAX (64 * 1024)

void volume_state_done(struct volume_state *s)
{
	if (!s)
		return;
	free(s->device);
	free(s->mapping);
	free(s->kms);
	free(s->revoke_reason);
	free(s->watch_verdict);
	free(s->history);
	free(s->stack_plan);
	memset(s, 0, sizeof(*s));
}

static int uuid_valid(const char *uuid)
{
	size_t n = strlen(uuid);

	if (n == 0 || n >= 40)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!strchr("0123456789abcdefABCDEF-", uuid[i]))
			return 0;
	return 1;
}

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static time_t jtime(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return 0;
	return (time_t)json_object_get_int64(v);
}

static int dupopt(const char *s, char **ret)
{
	*ret = s ? strdup(s) : NULL;
	return (s && !*ret) ? -ENOMEM : 0;
}

static int state_parse(const char *text, struct volume_state *ret)
{
	struct volume_state s = {};
	json_object *o = json_tokener_parse(text), *v;
	const char *uuid;
	int r = -EBADMSG;

	if (!o || !json_object_is_type(o, json_type_object))
		goto out;
	uuid = jstr(o, "uuid");
	if (!uuid || !uuid_valid(uuid))
		goto out;
	snprintf(s.uuid, sizeof(s.uuid), "%s", uuid);
	if ((r = dupopt(jstr(o, "device"), &s.device)) < 0 ||
	    (r = dupopt(jstr(o, "mapping"), &s.mapping)) < 0 ||
	    (r = dupopt(jstr(o, "kms"), &s.kms)) < 0 ||
	    (r = dupopt(jstr(o, "revoke_reason"), &s.revoke_reason)) < 0 ||
	    (r = dupopt(jstr(o, "watch_verdict"), &s.watch_verdict)) < 0 ||
	    (r = dupopt(jstr(o, "revoked_stack_plan"), &s.stack_plan)) < 0)
		goto out;
	s.revoked_by_watcher = json_object_object_get_ex(o, "revoked_by_watcher", &v) &&
			       json_object_get_boolean(v);
	s.watch_last_probe = jtime(o, "watch_last_probe");
	if (json_object_object_get_ex(o, "watch_denials", &v) && json_object_is_type(v, json_type_int) &&
	    json_object_get_int(v) >= 0)
		s.watch_denials = (unsigned)json_object_get_int(v);
	if (json_object_object_get_ex(o, "history", &v) && json_object_is_type(v, json_type_array) &&
	    (r = dupopt(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
							     JSON_C_TO_STRING_NOSLASHESCAPE),
			&s.history)) < 0)
		goto out;
	s.revoked = json_object_object_get_ex(o, "revoked", &v) && json_object_get_boolean(v);
	s.last_unlock = jtime(o, "last_unlock");
	s.last_lock = jtime(o, "last_lock");
	s.last_revoke = jtime(o, "last_revoke");
	s.last_restore = jtime(o, "last_restore");
	*ret = s;
	memset(&s, 0, sizeof(s));
	r = 0;
out:
	json_object_put(o);
	volume_state_done(&s);
	return r;
}

int state_load(const char *dir, const char *uuid, struct volume_state *ret)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	int r;

	if (!uuid_valid(uuid))
		return -EINVAL;
	if (asprintf(&path, "%s/volumes/%s.json", dir, uuid) < 0)
		return -ENOMEM;
	r = read_file_text(path, STATE_FILE_MAX, &text, NULL);
	if (r < 0)
		return r;
	return state_parse(text, ret);
}

static void add_opt(json_object *o, const char *key, const char *v)
{
	if (v)
		json_object_object_add(o, key, json_object_new_string(v));
}

static void add_time(json_object *o, const char *key, time_t t)
{
	char buf[32];
	char k[64];

	if (!t)
		return;
	json_object_object_add(o, key, json_object_new_int64((int64_t)t));
	format_rfc3339(t, buf, sizeof(buf));
	snprintf(k, sizeof(k), "%s_utc", key);
	json_object_object_add(o, k, json_object_new_string(buf));
}

int state_save(const char *dir, const struct volume_state *s)
{
	_cleanup_free_ char *path = NULL, *vdir = NULL;
	json_object *o;
	const char *text;
	int r;

	if (!uuid_valid(s->uuid))
		return -EINVAL;
	if (asprintf(&vdir, "%s/volumes", dir) < 0 ||
	    asprintf(&path, "%s/volumes/%s.json", dir, s->uuid) < 0)
		return -ENOMEM;
	r = mkdir_p(vdir, 0700);
	if (r < 0)
		return r;
	o = json_object_new_object();
	if (!o)
		return -ENOMEM;
	json_object_object_add(o, "uuid", json_object_new_string(s->uuid));
	add_opt(o, "device", s->device);
	add_opt(o, "mapping", s->mapping);
	add_opt(o, "kms", s->kms);
	json_object_object_add(o, "revoked", json_object_new_boolean(s->revoked));
	add_opt(o, "revoke_reason", s->revoke_reason);
	add_opt(o, "revoked_stack_plan", s->stack_plan);
	add_time(o, "last_unlock", s->last_unlock);
	add_time(o, "last_lock", s->last_lock);
	add_time(o, "last_revoke", s->last_revoke);
	add_time(o, "last_restore", s->last_restore);
	if (s->revoked_by_watcher)
		json_object_object_add(o, "revoked_by_watcher", json_object_new_boolean(true));
	add_opt(o, "watch_verdict", s->watch_verdict);
	add_time(o, "watch_last_probe", s->watch_last_probe);
	if (s->watch_verdict)
		json_object_object_add(o, "watch_denials", json_object_new_int((int)s->watch_denials));
	if (s->history) {
		json_object *h = json_tokener_parse(s->history);
		if (!h || !json_object_is_type(h, json_type_array)) {
			json_object_put(h);
			json_object_put(o);
			return -EINVAL;
		}
		json_object_object_add(o, "history", h);
	}
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
						     JSON_C_TO_STRING_NOSLASHESCAPE);
	r = write_file_atomic(path, text, strlen(text), 0600, 0);
	json_object_put(o);
	return r;
}

void state_list_free(struct volume_state **l)
{
	if (!l)
		return;
	for (size_t i = 0; l[i]; i++) {
		volume_state_done(l[i]);
		free(l[i]);
	}
	free(l);
}

int state_list(const char *dir, struct volume_state ***ret)
{
	_cleanup_free_ char *vdir = NULL;
	struct volume_state **l = calloc(1, sizeof(*l));
	size_t n = 0;
	struct dirent *de;
	DIR *d;

	if (!l)
		return -ENOMEM;
	if (asprintf(&vdir, "%s/volumes", dir) < 0) {
		free(l);
		return -ENOMEM;
	}
	d = opendir(vdir);
	if (!d) {
		if (errno == ENOENT) {
			*ret = l;
			return 0;
		}
		free(l);
		return -errno;
	}
	while ((de = readdir(d))) {
		char uuid[64];
		size_t len = strlen(de->d_name);
		struct volume_state *s, **nl;

		if (len < 6 || len - 5 >= sizeof(uuid) || strcmp(de->d_name + len - 5, ".json") != 0)
			continue;
		memcpy(uuid, de->d_name, len - 5);
		uuid[len - 5] = 0;
		s = calloc(1, sizeof(*s));
		if (!s)
			break;
		if (state_load(dir, uuid, s) < 0) {
			free(s);
			continue;
		}
		nl = realloc(l, (n + 2) * sizeof(*l));
		if (!nl) {
			volume_state_done(s);
			free(s);
			break;
		}
		l = nl;
		l[n++] = s;
		l[n] = NULL;
	}
	closedir(d);
	*ret = l;
	return 0;
}

int state_dir_open(const char *dir, bool create)
{
	if (create) {
		int r = mkdir_p(dir, 0700);

		if (r < 0)
			return r;
	}
	return dir_open_trusted(dir, "State dir", NULL, 0);
}

/* @name in the state dir @dfd: never through a symbolic link (-ELOOP), never anything but a regular
 * file (-EBADF; O_NONBLOCK keeps a FIFO planted there from blocking the open). */
static int state_file_open(int dfd, const char *name, int flags)
{
	_cleanup_close_ int fd = -1;
	struct stat st;

	fd = openat(dfd, name, flags | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY,
		    0600);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EBADF;
	return TAKE_FD(fd);
}

/* Who holds a flock(2) lock on the file open as @fd: /proc/locks lists each lock as
 * "N: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF" (proc(5); major and minor in
 * hex), waiters as "N: -> FLOCK ...".  F_GETLK cannot see flock(2) locks.  The pid is the process that
 * took the lock (it may have passed the descriptor on).  0 when none is found. */
static pid_t lock_holder_fd(int fd)
{
	char line[256];
	struct stat st;
	pid_t found = 0;
	FILE *f;

	if (fstat(fd, &st) < 0)
		return 0;
	f = fopen("/proc/locks", "re");
	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		char type[16];
		unsigned maj, min;
		unsigned long ino;
		int pid, k;

		k = sscanf(line, "%*d: %15s %*s %*s %d %x:%x:%lu", type, &pid, &maj, &min, &ino);
		if (k != 5 || strcmp(type, "FLOCK") != 0)
			continue;
		if (ino == (unsigned long)st.st_ino && maj == major(st.st_dev) &&
		    min == minor(st.st_dev) && pid > 0 && pid != getpid())
			found = pid;
	}
	fclose(f);
	return found;
}

static int lock_take(const char *dir, unsigned timeout_sec, int op, bool create,
		     void (*waiting)(pid_t holder, void *userdata), void *userdata,
		     pid_t *ret_holder)
{
	_cleanup_close_ int dfd = -1, fd = -1;

	dfd = state_dir_open(dir, create);
	if (dfd < 0)
		return dfd;
	fd = state_file_open(dfd, "lock", O_RDWR);
	if (fd < 0)
		return fd;
	for (unsigned waited = 0;; waited++) {
		if (flock(fd, op | LOCK_NB) == 0)
			return TAKE_FD(fd);
		if (errno != EWOULDBLOCK && errno != EINTR)
			return -errno;
		if (waited >= timeout_sec * 10) {
			if (ret_holder)
				*ret_holder = lock_holder_fd(fd);
			return -EBUSY;
		}
		if (waited == 10 && waiting) /* say it once, after a second */
			waiting(lock_holder_fd(fd), userdata);
		usleep(100 * 1000);
	}
}

int state_lock(const char *dir, unsigned timeout_sec)
{
	return lock_take(dir, timeout_sec, LOCK_EX, true, NULL, NULL, NULL);
}

int state_lock_wait(const char *dir, unsigned timeout_sec,
		    void (*waiting)(pid_t holder, void *userdata), void *userdata,
		    pid_t *ret_holder)
{
	return lock_take(dir, timeout_sec, LOCK_EX, true, waiting, userdata, ret_holder);
}

int state_lock_shared(const char *dir, unsigned timeout_sec)
{
	return lock_take(dir, timeout_sec, LOCK_SH, false, NULL, NULL, NULL);
}

/* One write(2) of @line and a '\n' with O_APPEND, then fsync: records of concurrent writers do not
 * interleave. */
static int append_record(int fd, const char *line)
{
	_cleanup_free_ char *rec = NULL;
	size_t len;
	ssize_t k;

	if (asprintf(&rec, "%s\n", line) < 0)
		return -ENOMEM;
	len = strlen(rec);
	do
		k = write(fd, rec, len);
	while (k < 0 && errno == EINTR);
	if (k < 0)
		return -errno;
	if ((size_t)k != len)
		return -EIO;
	return fsync(fd) < 0 ? -errno : 0;
}

int audit_append(const char *dir, const struct audit_record *a)
{
	_cleanup_close_ int dfd = -1, fd = -1;
	json_object *o = json_object_new_object();
	struct timespec ts;
	char when[64], frac[32];
	int r;

	if (!o)
		return -ENOMEM;
	clock_gettime(CLOCK_REALTIME, &ts);
	format_rfc3339(ts.tv_sec, when, sizeof(when));
	/* insert milliseconds before the Z */
	snprintf(frac, sizeof(frac), ".%03ldZ", ts.tv_nsec / 1000000);
	when[strlen(when) - 1] = 0;
	strncat(when, frac, sizeof(when) - strlen(when) - 1);
	json_object_object_add(o, "time", json_object_new_string(when));
	add_opt(o, "action", a->action);
	add_opt(o, "volume", a->uuid);
	add_opt(o, "mapping", a->mapping);
	add_opt(o, "device", a->device);
	add_opt(o, "kms", a->kms);
	add_opt(o, "reason", a->reason);
	add_opt(o, "result", a->result);
	if (a->old_binding)
		json_object_object_add(o, "old", json_tokener_parse(a->old_binding));
	if (a->new_binding)
		json_object_object_add(o, "new", json_tokener_parse(a->new_binding));
	if (a->duration_ms >= 0) {
		char ms[32];
		snprintf(ms, sizeof(ms), "%.3f", a->duration_ms);
		json_object_object_add(o, "duration_ms", json_object_new_double_s(a->duration_ms, ms));
	}
	dfd = state_dir_open(dir, true);
	r = dfd < 0 ? dfd : (fd = state_file_open(dfd, "audit.log", O_WRONLY | O_APPEND));
	if (r >= 0)
		r = append_record(fd, json_object_to_json_string_ext(
					      o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return r;
}

static int usage_path(const char *dir, const char *kms, char **ret)
{
	if (strchr(kms, '/') || kms[0] == '.')
		return -EINVAL;
	return asprintf(ret, "%s/kms-usage/%s", dir, kms) < 0 ? -ENOMEM : 0;
}

void strv_free(char **l)
{
	if (!l)
		return;
	for (size_t i = 0; l[i]; i++)
		free(l[i]);
	free(l);
}

int usage_list(const char *dir, const char *kms, char ***ret)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	char **l = calloc(1, sizeof(*l));
	size_t n = 0;
	int r;

	if (!l)
		return -ENOMEM;
	r = usage_path(dir, kms, &path);
	if (r < 0)
		goto fail;
	r = read_file_text(path, 4 * 1024 * 1024, &text, NULL);
	if (r == -ENOENT) {
		*ret = l;
		return 0;
	}
	if (r < 0)
		goto fail;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		json_object *o = json_tokener_parse(line);
		const char *uuid = o ? jstr(o, "uuid") : NULL, *dev = o ? jstr(o, "device") : NULL;
		char *item = NULL, **nl;
		int dup = 0;

		if (uuid) {
			for (size_t i = 0; i < n; i++)
				if (strncmp(l[i], uuid, strlen(uuid)) == 0)
					dup = 1;
			if (!dup && asprintf(&item, "%s (%s)", uuid, dev ? dev : "?") < 0)
				item = NULL;
		}
		json_object_put(o);
		if (!item)
			continue;
		nl = realloc(l, (n + 2) * sizeof(*l));
		if (!nl) {
			free(item);
			r = -ENOMEM;
			goto fail;
		}
		l = nl;
		l[n++] = item;
		l[n] = NULL;
	}
	*ret = l;
	return 0;
fail:
	strv_free(l);
	return r;
}

int usage_forget(const char *dir, const char *kms)
{
	_cleanup_free_ char *path = NULL;
	int r;

	r = usage_path(dir, kms, &path);
	if (r < 0)
		return r;
	return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

int state_remove(const char *dir, const char *uuid)
{
	_cleanup_free_ char *path = NULL;

	if (!uuid_valid(uuid))
		return -EINVAL;
	if (asprintf(&path, "%s/volumes/%s.json", dir, uuid) < 0)
		return -ENOMEM;
	return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

int usage_record(const char *dir, const char *kms, const char *uuid, const char *device)
{
	_cleanup_free_ char *path = NULL, *udir = NULL;
	json_object *o;
	char when[32];
	int r;

	r = usage_path(dir, kms, &path);
	if (r < 0)
		return r;
	if (asprintf(&udir, "%s/kms-usage", dir) < 0)
		return -ENOMEM;
	r = mkdir_p(udir, 0700);
	if (r < 0)
		return r;
	o = json_object_new_object();
	if (!o)
		return -ENOMEM;
	format_rfc3339(time(NULL), when, sizeof(when));
	json_object_object_add(o, "uuid", json_object_new_string(uuid));
	add_opt(o, "device", device);
	json_object_object_add(o, "bound", json_object_new_string(when));
	r = append_line(path,
			json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
								  JSON_C_TO_STRING_NOSLASHESCAPE),
			0600);
	json_object_put(o);
	return r;
}
