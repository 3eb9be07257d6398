/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fileio.h"
#include "secret.h"

int read_file_text(const char *path, size_t max, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	size_t len = 0, cap = 4096;
	struct stat st;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return S_ISDIR(st.st_mode) ? -EISDIR : -EBADFD;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t k;
		if (len + 1 >= cap) {
			char *n;
			if (cap > max + 1)
				return -EFBIG;
			n = realloc(buf, cap * 2);
			if (!n)
				return -ENOMEM;
			buf = n;
			cap *= 2;
		}
		k = read(fd, buf + len, cap - len - 1);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (k == 0)
			break;
		len += (size_t)k;
		if (len > max)
			return -EFBIG;
	}
	buf[len] = 0;
	*ret = TAKE_PTR(buf);
	if (ret_len)
		*ret_len = len;
	return 0;
}

int read_file_secret(const char *path, size_t max, int strip, struct secret **ret)
{
	_cleanup_close_ int fd = -1;
	struct secret *s;
	int r;

	if (strcmp(path, "-") == 0)
		fd = dup(STDIN_FILENO);
	else
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
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
