/* SPDX-License-Identifier: MIT */
/*
 * Secrets: key material lives only in buffers from secret_new(): page-aligned anonymous mappings,
 * mlock()ed (best effort), excluded from core dumps, wiped with explicit_bzero() when freed.
 * A secret is never a C string, never goes into json-c, a log line, argv, the environment or a file.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

struct secret {
	uint8_t *buf;
	size_t len; /* bytes in use */
	size_t cap; /* bytes mapped; fixed at creation */
};

/* A zero-length secret that can hold up to @cap bytes.  Return: 0 or -ENOMEM. */
int secret_new(size_t cap, struct secret **ret);
/* A secret holding a copy of @n bytes at @data. */
int secret_from(const void *data, size_t n, struct secret **ret);
/* A copy of @n bytes at @s followed by a NUL (for tokens that go into headers as C strings);
 * len excludes the NUL. */
int secret_from_cstr(const char *s, size_t n, struct secret **ret);
/* @len random bytes from getrandom(2).  Return: 0, -ENOMEM or -errno. */
int secret_random(size_t len, struct secret **ret);
/* Append; -ENOBUFS (and nothing appended) when it would exceed cap. */
int secret_append(struct secret *s, const void *data, size_t n);
/* Wipe the contents, keep the buffer (len becomes 0). NULL-safe. */
void secret_clear(struct secret *s);
/* Wipe and free. NULL-safe, returns NULL. */
struct secret *secret_free(struct secret *s);
void secret_freep(struct secret **s);
/* Constant-time comparison of two byte strings of equal length: 0 when equal. */
int secret_memcmp(const void *a, const void *b, size_t n);
