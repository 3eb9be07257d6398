/* SPDX-License-Identifier: MIT */
/*
 * The volume layer on LUKS2 image files: format, keyslots, tokens, probing.  No device-mapper
 * needed; the dm functions are only checked for failing fast and quietly where dm is missing.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/cleanup.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/volume.h"
#include "test_volume_util.h"

#define UUID "0fd1f9c4-5a3e-4b7e-9c2d-1e2f3a4b5c6d"

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

static const char *formatted(const char *name, bool with_recovery)
{
	const char *img = test_image(name, TEST_IMAGE_BYTES);
	struct volume_format_params p = {
	    .uuid = UUID,
	    .label = "data",
	    .keyslot = 0,
	    .secret = secret,
	    .recovery = with_recovery ? recovery : NULL,
	    .token_json = test_token_json(0),
	};

	assert_int_equal(volume_format(img, &p), 0);
	return img;
}

static void test_format(void **state)
{
	const char *img = formatted("format.img", true);
	struct volume_header h = {};
	struct crypt_device *cd = NULL;

	assert_int_equal(volume_read_header(img, &h), 0);
	assert_string_equal(h.uuid, UUID);
	assert_string_equal(h.label, "data");
	assert_int_equal(h.token_id, 0);
	assert_non_null(h.token_json);
	assert_non_null(strstr(h.token_json, "\"type\":\"kmscrypt\""));
	assert_non_null(strstr(h.token_json, "\"keyslots\":[\"0\"]"));
	volume_header_done(&h);
	assert_null(h.token_json);
	assert_int_equal(h.token_id, -1);
	assert_int_equal(test_keyslot_count(img), 2);

	/* The parameters volume.h promises, read back with libcryptsetup itself. */
	assert_int_equal(crypt_init(&cd, img), 0);
	assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
	assert_int_equal(crypt_get_sector_size(cd), 4096);
	assert_int_equal(crypt_get_volume_key_size(cd), 64);
	assert_string_equal(crypt_get_cipher(cd), "aes");
	assert_string_equal(crypt_get_cipher_mode(cd), "xts-plain64");
	crypt_free(cd);
}

static void test_format_sector_512(void **state)
{
	/* Not a multiple of 4096 bytes: falls back to 512-byte sectors. */
	const char *img = test_image("odd.img", TEST_IMAGE_BYTES + 512);
	struct volume_format_params p = {
	    .uuid = UUID,
	    .keyslot = 0,
	    .secret = secret,
	    .token_json = test_token_json(0),
	};
	struct volume_header h = {};
	struct crypt_device *cd = NULL;

	assert_int_equal(volume_format(img, &p), 0);
	assert_int_equal(crypt_init(&cd, img), 0);
	assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
	assert_int_equal(crypt_get_sector_size(cd), 512);
	crypt_free(cd);
	assert_int_equal(volume_read_header(img, &h), 0);
	assert_string_equal(h.label, "");
	volume_header_done(&h);
}

static void test_format_bad_token_leaves_no_header(void **state)
{
	const char *img = test_image("badtoken.img", TEST_IMAGE_BYTES);
	struct volume_format_params p = {
	    .uuid = UUID,
	    .keyslot = 0,
	    .secret = secret,
	    .token_json = "{\"type\":",
	};
	struct volume_header h = {};

	assert_int_equal(volume_format(img, &p), -EBADMSG);
	assert_int_equal(volume_read_header(img, &h), -ENODEV);
	assert_int_equal(volume_probe_blank(img, NULL), 0);
}

static void test_secret_checks(void **state)
{
	const char *img = formatted("secret.img", true);
	struct secret *wrong = test_secret_random();

	assert_int_equal(volume_test_secret(img, 0, secret), 0);
	assert_int_equal(volume_test_secret(img, 0, wrong), -EPERM);
	assert_int_equal(volume_test_secret(img, 0, recovery), -EPERM); /* other keyslot */
	assert_int_equal(volume_test_secret(img, 1, recovery), 0);
	assert_int_equal(volume_test_secret(img, 5, secret), -EPERM); /* inactive keyslot */
	secret_free(wrong);
}

static void test_read_header_errors(void **state)
{
	struct volume_header h = {};
	char missing[300];

	snprintf(missing, sizeof(missing), "%s/missing.img", test_dir);
	assert_int_equal(volume_read_header(missing, &h), -ENOENT);
	assert_int_equal(volume_read_header(test_image("blank.img", TEST_IMAGE_BYTES), &h),
			 -ENODEV);
}

static void test_probe(void **state)
{
	const char *blank = test_image("probe-blank.img", TEST_IMAGE_BYTES);
	const char *luks = formatted("probe-luks.img", false);
	const char *dos = test_image("probe-dos.img", TEST_IMAGE_BYTES);
	/* One Linux partition at sector 2048, 8192 sectors, and the 0x55aa boot signature. */
	static const uint8_t entry[16] = {0x00, 0,    0, 0, 0x83, 0,	0, 0,
					  0x00, 0x08, 0, 0, 0x00, 0x20, 0, 0};
	char missing[300];
	char *what = NULL;
	int fd;

	assert_int_equal(volume_probe_blank(blank, &what), 0);
	assert_null(what);

	assert_int_equal(volume_probe_blank(luks, &what), -EEXIST);
	assert_string_equal(what, "crypto_LUKS header");
	free(what);
	what = NULL;

	fd = open(dos, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, entry, sizeof(entry), 446), (ssize_t)sizeof(entry));
	assert_int_equal(pwrite(fd, "\x55\xaa", 2, 510), 2);
	close(fd);
	assert_int_equal(volume_probe_blank(dos, &what), -EEXIST);
	assert_string_equal(what, "dos partition table");
	free(what);

	snprintf(missing, sizeof(missing), "%s/missing.img", test_dir);
	assert_int_equal(volume_probe_blank(missing, NULL), -ENOENT);
}

static void test_bind_unbind(void **state)
{
	const char *img = test_image("bind.img", TEST_IMAGE_BYTES);
	struct secret *auth = test_secret_from_str("correct horse battery staple");
	struct secret *wrong = test_secret_from_str("incorrect horse");
	struct volume_header h = {};
	int ks = -1;

	assert_int_equal(test_luks_with_passphrase(img, "correct horse battery staple"), 0);
	assert_int_equal(volume_free_keyslot(img, &ks), 0);
	assert_int_equal(ks, 1);

	assert_int_equal(volume_bind(img, wrong, ks, secret, test_token_json(ks)), -EPERM);
	assert_int_equal(test_keyslot_count(img), 1);

	assert_int_equal(volume_bind(img, auth, ks, secret, test_token_json(ks)), 0);
	assert_int_equal(test_keyslot_count(img), 2);
	assert_int_equal(volume_test_secret(img, ks, secret), 0);
	assert_int_equal(volume_read_header(img, &h), 0);
	assert_true(h.token_id >= 0);
	assert_non_null(strstr(h.token_json, "\"keyslots\":[\"1\"]"));
	volume_header_done(&h);

	/* One kmscrypt token per volume. */
	assert_int_equal(volume_bind(img, auth, 2, secret, test_token_json(2)), -EEXIST);
	assert_int_equal(test_keyslot_count(img), 2);

	assert_int_equal(volume_unbind(img), 0);
	assert_int_equal(test_keyslot_count(img), 1);
	assert_int_equal(volume_test_secret(img, ks, secret), -EPERM);
	assert_int_equal(volume_read_header(img, &h), 0);
	assert_int_equal(h.token_id, -1);
	assert_null(h.token_json);
	volume_header_done(&h);
	assert_int_equal(volume_unbind(img), -ENODEV);

	secret_free(auth);
	secret_free(wrong);
}

static void test_bind_keyslot_in_use(void **state)
{
	const char *img = test_image("inuse.img", TEST_IMAGE_BYTES);
	struct secret *auth = test_secret_from_str("pw");

	assert_int_equal(test_luks_with_passphrase(img, "pw"), 0);
	assert_int_equal(volume_bind(img, auth, 0, secret, test_token_json(0)), -EEXIST);
	assert_int_equal(test_keyslot_count(img), 1);
	secret_free(auth);
}

static void test_bind_rollback(void **state)
{
	const char *img = test_image("rollback.img", TEST_IMAGE_BYTES);
	struct secret *auth = test_secret_from_str("pw");
	static const char *const bad[] = {
	    "{\"type\":\"kmscrypt\",",				  /* not JSON */
	    "{\"type\":\"kmscrypt\"}",				  /* no keyslots */
	    "{\"type\":\"kmscrypt\",\"keyslots\":[\"7\"]}",	  /* missing keyslot */
	    "{\"type\":\"kmscrypt\",\"keyslots\":[\"0\",\"1\"]}", /* more than ours */
	    "{\"type\":\"clevis\",\"keyslots\":[\"1\"]}",	  /* not ours */
	};
	struct volume_header h = {};

	assert_int_equal(test_luks_with_passphrase(img, "pw"), 0);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_int_equal(volume_bind(img, auth, 1, secret, bad[i]), -EBADMSG);
		assert_int_equal(test_keyslot_count(img), 1);
		assert_int_equal(volume_test_secret(img, 1, secret), -EPERM);
		assert_int_equal(volume_read_header(img, &h), 0);
		assert_int_equal(h.token_id, -1);
		volume_header_done(&h);
	}
	secret_free(auth);
}

static void test_unbind_last_keyslot(void **state)
{
	const char *img = formatted("last.img", false);
	struct volume_header h = {};

	assert_int_equal(volume_unbind(img), -EPERM);
	assert_int_equal(test_keyslot_count(img), 1);
	assert_int_equal(volume_read_header(img, &h), 0);
	assert_int_equal(h.token_id, 0);
	volume_header_done(&h);
	assert_int_equal(volume_test_secret(img, 0, secret), 0);

	/* With the recovery keyslot left, unbind goes through and recovery still opens. */
	img = formatted("last2.img", true);
	assert_int_equal(volume_unbind(img), 0);
	assert_int_equal(test_keyslot_count(img), 1);
	assert_int_equal(volume_test_secret(img, 1, recovery), 0);
}

struct dm_calls {
	const char *img;
	int info, find, list, suspend, resume, deactivate, activate, test;
};

/* No assertions in here: stderr is redirected while it runs. */
static void call_dm_functions(void *userdata)
{
	struct dm_calls *c = userdata;
	struct volume_mapping m;
	struct volume_mapping **l = NULL;
	struct volume_wipe_report rep;

	c->info = volume_mapping_info("kmscrypt-test-none", &m);
	c->find = volume_mapping_find(UUID, &m);
	c->list = volume_mapping_list(&l);
	volume_mapping_list_free(l);
	c->suspend = volume_suspend_wipe("kmscrypt-test-none", &rep);
	c->resume = volume_resume("kmscrypt-test-none", 0, secret);
	c->deactivate = volume_deactivate("kmscrypt-test-none");
	c->activate = volume_activate(c->img, "kmscrypt-test-none", 0, secret);
	/* header-only calls touch libdevmapper too (libcryptsetup asks dm about keyring support) */
	c->test = volume_test_secret(c->img, 0, secret);
}

static void test_dm_missing_fast_and_quiet(void **state)
{
	struct dm_calls c = {.img = formatted("nodm.img", false)};
	int before = volume_keyring_count_kmscrypt();
	bool dm = access("/sys/module/dm_mod", F_OK) == 0;

	assert_true(before >= 0);
	assert_int_equal(test_stderr_capture(call_dm_functions, &c, NULL, 0), 0);
	assert_int_equal(c.info, dm ? -ENOENT : -ENOTSUP);
	assert_int_equal(c.find, dm ? -ENOENT : -ENOTSUP);
	assert_int_equal(c.list, dm ? 0 : -ENOTSUP);
	assert_int_equal(c.suspend, dm ? -ENOENT : -ENOTSUP);
	assert_int_equal(c.resume, dm ? -ENOENT : -ENOTSUP);
	assert_int_equal(c.deactivate, dm ? -ENOENT : -ENOTSUP);
	if (!dm)
		assert_int_equal(c.activate, -ENOTSUP);
	else
		assert_int_equal(volume_deactivate("kmscrypt-test-none"), 0);
	assert_int_equal(c.test, 0);
	assert_int_equal(volume_keyring_count_kmscrypt(), before); /* nothing left behind */
}

static void call_format_bad_uuid(void *userdata)
{
	struct volume_format_params p = {
	    .uuid = "not-a-uuid",
	    .keyslot = 0,
	    .secret = secret,
	    .token_json = test_token_json(0),
	};

	*(int *)userdata = volume_format(test_image("log.img", TEST_IMAGE_BYTES), &p);
}

/* libcryptsetup's messages go to our log at LOG_DEBUG: hidden by default, shown with debug. */
static void test_library_log_routing(void **state)
{
	int saved = log_max_level, r = 0;
	char buf[4096];
	long n;

	log_max_level = LOG_INFO;
	n = test_stderr_capture(call_format_bad_uuid, &r, buf, sizeof(buf));
	assert_int_equal(n, 0);
	assert_int_equal(r, -EINVAL);
	log_max_level = LOG_DEBUG;
	n = test_stderr_capture(call_format_bad_uuid, &r, buf, sizeof(buf));
	log_max_level = saved;
	assert_true(n > 0);
	assert_int_equal(r, -EINVAL);
	assert_non_null(strstr(buf, "libcryptsetup: Wrong LUKS UUID format provided.\n"));
}

struct thread_arg {
	const char *img;
	int result;
};

static void *thread_check(void *userdata)
{
	struct thread_arg *a = userdata;
	struct volume_header h = {};

	a->result = 0;
	for (int i = 0; i < 5 && a->result == 0; i++) {
		a->result = volume_test_secret(a->img, 0, secret);
		if (a->result == 0)
			a->result = volume_read_header(a->img, &h);
		volume_header_done(&h);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct thread_arg a[4];
	pthread_t t[4];

	for (int i = 0; i < 4; i++) {
		char name[32];
		snprintf(name, sizeof(name), "thread%d.img", i);
		a[i].img = strdup(formatted(name, false));
		assert_int_equal(pthread_create(&t[i], NULL, thread_check, &a[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(a[i].result, 0);
		free((char *)a[i].img);
	}
}

static void test_scan_loop(void **state)
{
	const char *img = formatted("scan.img", false);
	char dev[64];
	char **l = NULL;
	bool found = false;
	int r;

	r = test_loop_attach(img, dev, sizeof(dev));
	if (r < 0)
		skip(); /* no loop devices (not root, or none in this container) */
	r = volume_scan(&l);
	test_loop_detach(dev);
	assert_int_equal(r, 0);
	assert_non_null(l);
	for (char **p = l; *p; p++) {
		found = found || strcmp(*p, dev) == 0;
		free(*p);
	}
	free(l);
	assert_true(found);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format),
	    cmocka_unit_test(test_format_sector_512),
	    cmocka_unit_test(test_format_bad_token_leaves_no_header),
	    cmocka_unit_test(test_secret_checks),
	    cmocka_unit_test(test_read_header_errors),
	    cmocka_unit_test(test_probe),
	    cmocka_unit_test(test_bind_unbind),
	    cmocka_unit_test(test_bind_keyslot_in_use),
	    cmocka_unit_test(test_bind_rollback),
	    cmocka_unit_test(test_unbind_last_keyslot),
	    cmocka_unit_test(test_dm_missing_fast_and_quiet),
	    cmocka_unit_test(test_library_log_routing),
	    cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_scan_loop),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
