/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/safedir.h"

static int why_set(int r, char *why, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int why_set(int r, char *why, size_t n, const char *fmt, ...)
{
	va_list ap;

	if (why && n > 0) {
		va_start(ap, fmt);
		vsnprintf(why, n, fmt, ap);
		va_end(ap);
	}
	return r;
}

int dir_open_trusted(const char *path, const char *what, char *why, size_t n)
{
	_cleanup_close_ int fd = -1;
	struct stat st;

	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int r = -errno;

		/* O_DIRECTORY|O_NOFOLLOW on a symbolic link fails with ENOTDIR: tell them apart */
		if ((r == -ENOTDIR || r == -ELOOP) && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
			return why_set(
			    -ELOOP, why, n,
			    "%s '%s' is a symbolic link, which kmscrypt does not follow; use "
			    "the directory it points to",
			    what, path);
		if (r == -ENOTDIR)
			return why_set(r, why, n, "%s '%s' is not a directory", what, path);
		return why_set(r, why, n, "%s '%s' cannot be opened: %s", what, path, strerror(-r));
	}
	if (fstat(fd, &st) < 0)
		return why_set(-errno, why, n, "%s '%s' cannot be examined: %s", what, path,
			       strerror(errno));
	if (st.st_uid != 0 && st.st_uid != geteuid())
		return why_set(
		    -ENOLINK, why, n,
		    "%s '%s' is owned by uid %u, not root; run 'chown root:root %s' (and "
		    "'chmod go-w %s')",
		    what, path, (unsigned)st.st_uid, path, path);
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return why_set(
		    -ENOLINK, why, n,
		    "%s '%s' is writable by group or others (mode %04o); run 'chmod go-w "
		    "%s'",
		    what, path, (unsigned)(st.st_mode & 07777), path);
	return TAKE_FD(fd);
}
