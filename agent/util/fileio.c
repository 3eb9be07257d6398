/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fileio.h"
#include "secret.h"

int open_regular_file(const char *path, struct stat *ret_st)
{
	_cleanup_close_ int fd = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, ret_st) < 0)
		return -errno;
	if (!S_ISREG(ret_st->st_mode))
		return S_ISDIR(ret_st->st_mode) ? -EISDIR : -EBADFD;
	return TAKE_FD(fd);
}

/* Grow a heap buffer holding @len bytes to @cap bytes: copy, then wipe and free the old one
 * (realloc() may move the bytes and leave the old copy behind in freed memory). */
static int grow_wiped(char **buf, size_t len, size_t old_cap, size_t cap)
{
	char *n = malloc(cap);

	if (!n)
		return -ENOMEM;
	memcpy(n, *buf, len);
	explicit_bzero(*buf, old_cap);
	free(*buf);
	*buf = n;
	return 0;
}

static void free_wiped(char *buf, size_t cap)
{
	if (buf) {
		explicit_bzero(buf, cap);
		free(buf);
	}
}

int read_file_text(const char *path, size_t max, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = -1;
	char *buf = NULL;
	size_t len = 0, cap;
	struct stat st;
	int r;

	fd = open_regular_file(path, &st);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;
	/* room for the whole file, its NUL, and one byte to see the end without growing */
	cap = (size_t)st.st_size + 2;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t k;
		if (len + 1 >= cap) {
			/* the file grew since fstat() (or is a /proc file of size 0) */
			size_t ncap = MIN(MAX(cap * 2, (size_t)4096), max + 2);

			if (len > max) {
				r = -EFBIG;
				goto fail;
			}
			r = grow_wiped(&buf, len, cap, ncap);
			if (r < 0)
				goto fail;
			cap = ncap;
		}
		k = read(fd, buf + len, cap - len - 1);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto fail;
		}
		if (k == 0)
			break;
		len += (size_t)k;
		if (len > max) {
			r = -EFBIG;
			goto fail;
		}
	}
	buf[len] = 0;
	*ret = buf;
	if (ret_len)
		*ret_len = len;
	return 0;
fail:
	free_wiped(buf, cap);
	return r;
}

int read_fd_secret(int fd, size_t max, int strip, struct secret **ret)
{
	struct secret *s;
	int r;

	r = secret_new(max + 1, &s);
	if (r < 0)
		return r;
	for (;;) {
		ssize_t k = read(fd, s->buf + s->len, s->cap - s->len);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			secret_free(s);
			return r;
		}
		if (k == 0)
			break;
		s->len += (size_t)k;
		if (s->len > max) {
			secret_free(s);
			return -EFBIG;
		}
	}
	if (strip && s->len > 0 && s->buf[s->len - 1] == '\n') {
		s->buf[--s->len] = 0;
		if (s->len > 0 && s->buf[s->len - 1] == '\r')
			s->buf[--s->len] = 0;
	}
	*ret = s;
	return 0;
}

int read_file_secret(const char *path, size_t max, int strip, struct secret **ret)
{
	_cleanup_close_ int fd = -1;

	if (strcmp(path, "-") == 0)
		fd = dup(STDIN_FILENO);
	else
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	return read_fd_secret(fd, max, strip, ret);
}

static int fsync_dir_of(const char *path)
{
	_cleanup_free_ char *copy = strdup(path);
	_cleanup_close_ int dfd = -1;

	if (!copy)
		return -ENOMEM;
	dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	if (fsync(dfd) < 0)
		return -errno;
	return 0;
}

int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, int excl)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -1;
	const char *p = data;
	int r;

	if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0)
		return -ENOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, mode) < 0) {
		r = -errno;
		goto fail;
	}
	while (len > 0) {
		ssize_t k = write(fd, p, len);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto fail;
		}
		p += k;
		len -= (size_t)k;
	}
	if (fsync(fd) < 0) {
		r = -errno;
		goto fail;
	}
	if (excl) {
		/* link() fails with EEXIST instead of replacing: no window where both exist as @path. */
		if (link(tmp, path) < 0) {
			r = -errno;
			goto fail;
		}
		(void)unlink(tmp);
	} else if (rename(tmp, path) < 0) {
		r = -errno;
		goto fail;
	}
	return fsync_dir_of(path);
fail:
	(void)unlink(tmp);
	return r;
}

int mkdir_p(const char *path, mode_t mode)
{
	_cleanup_free_ char *p = strdup(path);

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int append_line(const char *path, const char *line, mode_t mode)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	int n;

	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, mode);
	if (fd < 0)
		return -errno;
	n = asprintf(&buf, "%s\n", line);
	if (n < 0)
		return -ENOMEM;
	if (write(fd, buf, (size_t)n) != n)
		return errno ? -errno : -EIO;
	if (fsync(fd) < 0)
		return -errno;
	return 0;
}

int fd_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t k = write(fd, p, len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO;
		p += k;
		len -= (size_t)k;
	}
	return 0;
}
