/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by test_volume_header.c and test_volume_dm.c: image files in a temp dir, LUKS2
 * headers made directly with libcryptsetup (the "someone else's volume" case), loop devices.
 * Header-only: each test program includes it once.
 */
#pragma once
#include <fcntl.h>
#include <libcryptsetup.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "util/secret.h"

#define TEST_IMAGE_BYTES (32u << 20) /* 16 MiB LUKS2 header area + 16 MiB data */

static char test_dir[] = "/tmp/kmscrypt-test-volume-XXXXXX";

static inline void test_dir_create(void)
{
	if (!mkdtemp(test_dir))
		abort();
}

static inline void test_dir_remove(void)
{
	char cmd[sizeof(test_dir) + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_dir);
	(void)!system(cmd);
}

/* A sparse, all-zero image file test_dir/@name of @size bytes; returns a static path buffer. */
static inline const char *test_image(const char *name, off_t size)
{
	static char path[4][256];
	static int next;
	char *p = path[next++ % 4];
	int fd;

	snprintf(p, sizeof(path[0]), "%s/%s", test_dir, name);
	fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, size) < 0)
		abort();
	close(fd);
	return p;
}

static inline struct secret *test_secret_from_str(const char *s)
{
	struct secret *sec = NULL;

	if (secret_from(s, strlen(s), &sec) < 0)
		abort();
	return sec;
}

static inline struct secret *test_secret_random(void)
{
	struct secret *sec = NULL;

	if (secret_random(32, &sec) < 0)
		abort();
	return sec;
}

/* The kmscrypt token as the CLI builds it (include/kmscrypt/token.h). */
static inline const char *test_token_json(int keyslot)
{
	static char json[512];

	snprintf(json, sizeof(json),
		 "{\"type\":\"kmscrypt\",\"keyslots\":[\"%d\"],\"version\":1,\"kms\":\"lab\","
		 "\"provider\":\"local\",\"key_id\":\"test-key\",\"key_version\":\"\","
		 "\"alg\":\"A256GCM\",\"blob\":\"AAAA\",\"created\":\"2026-11-30T16:00:00Z\"}",
		 keyslot);
	return json;
}

/* A LUKS2 volume made by someone else: passphrase in keyslot 0 (cheap PBKDF2 for test speed). */
static inline int test_luks_with_passphrase(const char *path, const char *passphrase)
{
	struct crypt_pbkdf_type pbkdf = {.type = CRYPT_KDF_PBKDF2,
					 .hash = "sha256",
					 .iterations = 1000,
					 .flags = CRYPT_PBKDF_NO_BENCHMARK};
	struct crypt_params_luks2 params = {.pbkdf = &pbkdf, .sector_size = 512};
	struct crypt_device *cd = NULL;
	int r;

	r = crypt_init(&cd, path);
	if (r < 0)
		return r;
	r = crypt_format(cd, CRYPT_LUKS2, "aes", "xts-plain64", NULL, NULL, 64, &params);
	if (r >= 0)
		r = crypt_keyslot_add_by_volume_key(cd, 0, NULL, 0, passphrase, strlen(passphrase));
	crypt_free(cd);
	return r < 0 ? r : 0;
}

/* Active keyslots of @path's header, -errno. */
static inline int test_keyslot_count(const char *path)
{
	struct crypt_device *cd = NULL;
	int r, n = 0;

	r = crypt_init(&cd, path);
	if (r < 0)
		return r;
	r = crypt_load(cd, CRYPT_LUKS2, NULL);
	for (int ks = 0; r >= 0 && ks < crypt_keyslot_max(CRYPT_LUKS2); ks++) {
		crypt_keyslot_info ki = crypt_keyslot_status(cd, ks);
		n += ki == CRYPT_SLOT_ACTIVE || ki == CRYPT_SLOT_ACTIVE_LAST;
	}
	crypt_free(cd);
	return r < 0 ? r : n;
}

/* Attach @path to a free loop device; -errno when loop devices are not usable here. */
static inline int test_loop_attach(const char *path, char *ret_dev, size_t size)
{
	int ctl, fd, dev, n;

	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return -errno;
	n = ioctl(ctl, LOOP_CTL_GET_FREE);
	close(ctl);
	if (n < 0)
		return -errno;
	snprintf(ret_dev, size, "/dev/loop%d", n);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dev = open(ret_dev, O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		n = -errno;
		close(fd);
		return n;
	}
	n = ioctl(dev, LOOP_SET_FD, fd) < 0 ? -errno : 0;
	close(fd);
	close(dev);
	return n;
}

static inline void test_loop_detach(const char *dev)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC);

	if (fd >= 0) {
		(void)ioctl(fd, LOOP_CLR_FD, 0);
		close(fd);
	}
}

/* Run @fn with stderr going to a file; return how many bytes it wrote there, and the first of them
 * in @buf (NUL-terminated) unless NULL; with @buf NULL they are shown on the real stderr. */
static inline long test_stderr_capture(void (*fn)(void *), void *userdata, char *buf, size_t size)
{
	char path[300], show[4096];
	ssize_t k;
	long n;
	int saved, fd;

	fflush(stderr);
	snprintf(path, sizeof(path), "%s/stderr.txt", test_dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	saved = dup(STDERR_FILENO);
	if (fd < 0 || saved < 0 || dup2(fd, STDERR_FILENO) < 0)
		abort();
	fn(userdata);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = lseek(fd, 0, SEEK_END);
	if (!buf) {
		buf = show;
		size = sizeof(show);
	}
	k = pread(fd, buf, size - 1, 0);
	buf[k > 0 ? k : 0] = '\0';
	if (n > 0 && buf == show) /* what leaked (or why an assertion inside @fn failed) */
		fprintf(stderr, "stderr while redirected:\n%s\n", show);
	close(fd);
	return n;
}
