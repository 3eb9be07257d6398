/* SPDX-License-Identifier: MIT */
/*
 * volume/reencrypt.c offline on LUKS2 image files (libcryptsetup re-encrypts a regular file with the
 * kernel crypto API, no device-mapper): the volume key changes, the kmscrypt keyslot keeps its
 * number and its token, the recovery key is carried when given, and libcryptsetup's documented
 * behaviour is pinned: a keyslot whose passphrase is not given is removed at the end.  A run
 * stopped by its progress callback stays pending, opens meanwhile, and resumes to the same result.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "util/cleanup.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/volume.h"
#include "test_volume_util.h"

#define UUID "5b1e2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e"

static struct secret *secret, *recovery;

static int setup(void **state)
{
	test_dir_create();
	secret = test_secret_random();
	recovery = test_secret_from_str("recovery-Zq7x-high-entropy-passphrase");
	return 0;
}

static int teardown(void **state)
{
	secret = secret_free(secret);
	recovery = secret_free(recovery);
	test_dir_remove();
	return 0;
}

static const char *formatted(const char *name)
{
	const char *img = test_image(name, TEST_IMAGE_BYTES);
	struct volume_format_params p = {
	    .uuid = UUID,
	    .keyslot = 0,
	    .secret = secret,
	    .recovery = recovery,
	    .token_json = test_token_json(0),
	    .sector_size = 512,
	};

	assert_int_equal(volume_format(img, &p), 0);
	return img;
}

/* The volume key, opened by @pass (64 bytes into @buf). */
static void volume_key(const char *img, const struct secret *pass, char buf[64])
{
	struct crypt_device *cd = NULL;
	size_t n = 64;

	assert_int_equal(crypt_init(&cd, img), 0);
	assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
	assert_true(crypt_volume_key_get(cd, CRYPT_ANY_SLOT, buf, &n, (const char *)pass->buf,
					 pass->len) >= 0);
	assert_int_equal(n, 64);
	crypt_free(cd);
}

/* After a finished re-encryption: key changed, keyslot 0 and its token as before, no journal. */
static void assert_done(const char *img, const char old_key[64], bool with_recovery)
{
	struct volume_reencrypt_info ri;
	struct volume_header h = {};
	char key[64];

	assert_int_equal(volume_reencrypt_info(img, &ri), 0);
	assert_int_equal(ri.pending, 0);
	assert_false(ri.journal);
	assert_int_equal(volume_test_secret(img, 0, secret), 0);
	assert_int_equal(volume_read_header(img, &h), 0);
	assert_non_null(h.token_json);
	assert_non_null(strstr(h.token_json, "\"keyslots\":[\"0\"]"));
	volume_header_done(&h);
	volume_key(img, secret, key);
	assert_int_not_equal(memcmp(key, old_key, 64), 0);
	if (with_recovery) {
		char rkey[64];
		int rks = volume_keyslot_of(img, recovery);
		assert_true(rks > 0);
		volume_key(img, recovery, rkey);
		assert_memory_equal(key, rkey, 64);
		assert_int_equal(test_keyslot_count(img), 2);
	} else {
		assert_int_equal(volume_keyslot_of(img, recovery), -EPERM);
		assert_int_equal(test_keyslot_count(img), 1);
	}
	explicit_bzero(key, sizeof(key));
}

static void test_reencrypt_keeps_keyslot_and_recovery(void **state)
{
	const char *img = formatted("keep.img");
	struct volume_reencrypt_params p = {.keyslot = 0, .secret = secret, .recovery = recovery};
	char key[64];
	int rks = -2;

	volume_key(img, secret, key);
	assert_int_equal(volume_reencrypt(img, &p, &rks), 0);
	assert_true(rks > 1);
	assert_done(img, key, true);
	/* a second run from the new layout works the same */
	volume_key(img, secret, key);
	assert_int_equal(volume_reencrypt(img, &p, &rks), 0);
	assert_done(img, key, true);
	explicit_bzero(key, sizeof(key));
}

/* What libcryptsetup does with a keyslot whose passphrase is not given: it is removed. */
static void test_reencrypt_drops_keyslot_without_passphrase(void **state)
{
	const char *img = formatted("drop.img");
	struct volume_reencrypt_params p = {.keyslot = 0, .secret = secret};
	char key[64];
	int rks = -2;

	assert_int_equal(volume_keyslot_of(img, recovery), 1);
	volume_key(img, secret, key);
	assert_int_equal(volume_reencrypt(img, &p, &rks), 0);
	assert_int_equal(rks, -1);
	assert_done(img, key, false);
	explicit_bzero(key, sizeof(key));
}

static int stop_at_first(uint64_t size, uint64_t offset, void *userdata)
{
	int *calls = userdata;

	(*calls)++;
	return offset < size ? 1 : 0;
}

static void test_reencrypt_stop_and_resume(void **state)
{
	const char *img = formatted("resume.img");
	int calls = 0;
	struct volume_reencrypt_params p = {.keyslot = 0, .secret = secret, .recovery = recovery,
					    .progress = stop_at_first, .userdata = &calls};
	struct volume_reencrypt_params q = {.secret = secret};
	struct volume_reencrypt_info ri;
	char key[64];
	int rks = -2;

	volume_key(img, secret, key);
	assert_int_equal(volume_reencrypt(img, &p, &rks), -EINTR);
	assert_true(calls >= 1);
	assert_int_equal(volume_reencrypt_info(img, &ri), 0);
	assert_int_not_equal(ri.pending, 0);
	assert_true(ri.journal);
	assert_int_equal(ri.keyslot, 0);
	/* meanwhile the kmscrypt secret (and the recovery key) still open it */
	assert_int_equal(volume_test_secret(img, 0, secret), 0);
	assert_true(volume_keyslot_of(img, recovery) >= 0);
	/* a second start is refused */
	assert_int_equal(volume_reencrypt(img, &p, &rks), -EALREADY);
	assert_int_equal(volume_reencrypt_resume(img, &q, &rks), 0);
	assert_true(rks > 1);
	assert_done(img, key, true);
	assert_int_equal(volume_reencrypt_resume(img, &q, &rks), -ENOENT);
	explicit_bzero(key, sizeof(key));
}

static void test_reencrypt_wrong_secret(void **state)
{
	const char *img = formatted("wrong.img");
	struct secret *other = test_secret_random();
	struct volume_reencrypt_params p = {.keyslot = 0, .secret = other, .recovery = recovery};
	struct volume_reencrypt_params q = {.keyslot = 0, .secret = secret, .recovery = other};
	struct volume_reencrypt_info ri;
	int rks;

	assert_int_equal(volume_reencrypt(img, &p, &rks), -EPERM);
	assert_int_equal(volume_reencrypt(img, &q, &rks), -EPERM);
	assert_int_equal(volume_reencrypt_info(img, &ri), 0);
	assert_false(ri.journal);
	assert_int_equal(ri.pending, 0);
	assert_int_equal(test_keyslot_count(img), 2);
	secret_free(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reencrypt_keeps_keyslot_and_recovery),
	    cmocka_unit_test(test_reencrypt_drops_keyslot_without_passphrase),
	    cmocka_unit_test(test_reencrypt_stop_and_resume),
	    cmocka_unit_test(test_reencrypt_wrong_secret),
	};

	log_setup();
	return cmocka_run_group_tests(tests, setup, teardown);
}
