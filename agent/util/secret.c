/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "secret.h"

int secret_new(size_t cap, struct secret **ret)
{
	struct secret *s;
	long page = sysconf(_SC_PAGESIZE);
	size_t mapped;

	if (page <= 0)
		page = 4096;
	mapped = ((cap ? cap : 1) + (size_t)page - 1) / (size_t)page * (size_t)page;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->buf = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->buf == MAP_FAILED) {
		free(s);
		return -ENOMEM;
	}
	/* Best effort: RLIMIT_MEMLOCK may be small for unprivileged test runs. */
	(void)mlock(s->buf, mapped);
	(void)madvise(s->buf, mapped, MADV_DONTDUMP);
	(void)madvise(s->buf, mapped, MADV_DONTFORK);
	s->cap = mapped;
	s->len = 0;
	*ret = s;
	return 0;
}

int secret_from(const void *data, size_t n, struct secret **ret)
{
	struct secret *s;
	int r;

	r = secret_new(n, &s);
	if (r < 0)
		return r;
	memcpy(s->buf, data, n);
	s->len = n;
	*ret = s;
	return 0;
}

int secret_from_cstr(const char *s, size_t n, struct secret **ret)
{
	struct secret *t;
	int r;

	r = secret_new(n + 1, &t);
	if (r < 0)
		return r;
	memcpy(t->buf, s, n);
	t->buf[n] = 0;
	t->len = n;
	*ret = t;
	return 0;
}

int secret_random(size_t len, struct secret **ret)
{
	struct secret *s;
	size_t done = 0;
	int r;

	r = secret_new(len, &s);
	if (r < 0)
		return r;
	while (done < len) {
		ssize_t k = getrandom(s->buf + done, len - done, 0);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			secret_free(s);
			return r;
		}
		done += (size_t)k;
	}
	s->len = len;
	*ret = s;
	return 0;
}

int secret_append(struct secret *s, const void *data, size_t n)
{
	if (n > s->cap - s->len)
		return -ENOBUFS;
	memcpy(s->buf + s->len, data, n);
	s->len += n;
	return 0;
}

void secret_clear(struct secret *s)
{
	if (!s)
		return;
	explicit_bzero(s->buf, s->cap);
	s->len = 0;
}

struct secret *secret_free(struct secret *s)
{
	if (!s)
		return NULL;
	explicit_bzero(s->buf, s->cap);
	(void)munlock(s->buf, s->cap);
	(void)munmap(s->buf, s->cap);
	explicit_bzero(s, sizeof(*s));
	free(s);
	return NULL;
}

void secret_freep(struct secret **s)
{
	*s = secret_free(*s);
}

int secret_memcmp(const void *a, const void *b, size_t n)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t d = 0;

	for (size_t i = 0; i < n; i++)
		d |= x[i] ^ y[i];
	return d != 0;
}
