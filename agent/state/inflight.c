/* SPDX-License-Identifier: MIT */
/*
 * The token plugin's side of the state dir: a shared lock, and records of unlocks in flight.
 *
 * libcryptsetup activates a volume after the plugin has returned its secret, so the plugin cannot
 * hold the state lock until the mapping exists.  Instead it leaves inflight/<uuid>.<pid> ("<pid>
 * <starttime>") before it returns, while it still holds the lock shared; `kmscrypt revoke` (lock
 * held exclusively, so no further plugin unlock can pass its check) waits for every live record of
 * the volume to land and wipes what landed.  A record whose process is gone (pid not running, or
 * reused: /proc/<pid>/stat start time differs) is stale and removed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/state.h"
#include "util/cleanup.h"

/* Field 22 of /proc/<pid>/stat: start time in clock ticks since boot; 0 when not running. */
static unsigned long long proc_starttime(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
	if (!p)
		return 0;
	/* after ") ": state(3) ppid(4) ... starttime(22) */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d "
			  "%llu",
		   &start) != 1)
		return 0;
	return start;
}

static int inflight_path(const char *dir, const char *uuid, pid_t pid, char **ret)
{
	return asprintf(ret, "%s/inflight/%s.%d", dir, uuid, (int)pid) < 0 ? -ENOMEM : 0;
}

int inflight_add(const char *dir, const char *uuid)
{
	_cleanup_free_ char *sub = NULL, *path = NULL;
	_cleanup_close_ int fd = -1;
	pid_t pid = getpid();
	unsigned long long start = proc_starttime(pid);
	char line[64];
	int n;

	if (start == 0)
		return -ESRCH; /* no /proc: a record revoke could not check would be worthless */

	if (asprintf(&sub, "%s/inflight", dir) < 0)
		return -ENOMEM;
	if (mkdir(sub, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (inflight_path(dir, uuid, pid, &path) < 0)
		return -ENOMEM;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	n = snprintf(line, sizeof(line), "%d %llu\n", (int)pid, start);
	if (write(fd, line, (size_t)n) != n)
		return -EIO;
	/* no fsync: the record matters only while this boot's process runs */
	return 0;
}

int inflight_list(const char *dir, const char *uuid, struct inflight **ret, size_t *ret_n)
{
	_cleanup_free_ char *sub = NULL;
	struct inflight *l = NULL;
	size_t n = 0, ulen = strlen(uuid);
	struct dirent *de;
	DIR *d;

	if (asprintf(&sub, "%s/inflight", dir) < 0)
		return -ENOMEM;
	d = opendir(sub);
	if (!d) {
		if (errno != ENOENT)
			return -errno;
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	while ((de = readdir(d))) {
		_cleanup_free_ char *path = NULL;
		unsigned long long start = 0;
		struct inflight *nl;
		char buf[64];
		ssize_t k;
		int pid = 0, fd;

		if (strncmp(de->d_name, uuid, ulen) != 0 || de->d_name[ulen] != '.')
			continue;
		if (asprintf(&path, "%s/%s", sub, de->d_name) < 0) {
			closedir(d);
			free(l);
			return -ENOMEM;
		}
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		k = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[k > 0 ? k : 0] = 0;
		if (sscanf(buf, "%d %llu", &pid, &start) != 2 || pid <= 0 ||
		    proc_starttime(pid) != start || start == 0) {
			(void)unlink(path); /* stale: that process is gone */
			continue;
		}
		nl = realloc(l, (n + 1) * sizeof(*l));
		if (!nl) {
			closedir(d);
			free(l);
			return -ENOMEM;
		}
		l = nl;
		l[n++] = (struct inflight){.pid = pid, .starttime = start};
	}
	closedir(d);
	*ret = l;
	*ret_n = n;
	return 0;
}

bool inflight_alive(const struct inflight *f)
{
	return proc_starttime(f->pid) == f->starttime;
}

int inflight_remove(const char *dir, const char *uuid, pid_t pid)
{
	_cleanup_free_ char *path = NULL;

	if (inflight_path(dir, uuid, pid, &path) < 0)
		return -ENOMEM;
	return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}
