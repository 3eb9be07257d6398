/* SPDX-License-Identifier: MIT */
/*
 * What rotation (core/rotate.c) needs below it: several kmscrypt tokens on one keyslot, a marker
 * token assigned to no keyslot, compare-and-remove of a token, keyslots added and destroyed (on
 * LUKS2 image files); and the state record's "history", kept by every save.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "state/state.h"
#include "util/cleanup.h"
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

static const char *formatted(const char *name)
{
	const char *img = test_image(name, TEST_IMAGE_BYTES);
	struct volume_format_params p = {
	    .uuid = UUID,
	    .keyslot = 0,
	    .secret = secret,
	    .recovery = recovery,
	    .token_json = test_token_json(0),
	};

	assert_int_equal(volume_format(img, &p), 0);
	return img;
}

static void test_two_tokens_one_keyslot(void **state)
{
	const char *img = formatted("two.img");
	const char *marker = "{\"type\":\"kmscrypt-pending\",\"keyslots\":[],\"op\":\"bind\","
			     "\"old_keyslot\":\"-1\",\"new_keyslot\":\"5\"}";
	struct volume_token *l = NULL;
	size_t n = 0;
	int id2 = -1, idm = -1;
	_cleanup_free_ char *first = strdup(test_token_json(0)), *second = NULL;

	/* a second kmscrypt token on keyslot 0 (rotate-master's window) and a marker on none */
	first[strlen(first) - 1] = 0;
	assert_true(asprintf(&second, "%s,\"note\":\"second\"}", first) > 0);
	assert_int_equal(volume_token_add(img, 0, second, &id2), 0);
	assert_int_equal(volume_token_add(img, -1, marker, &idm), 0);
	assert_int_equal(volume_tokens_list(img, &l, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(l[0].type, "kmscrypt");
	assert_int_equal(l[0].keyslot, 0);
	assert_int_equal(l[1].id, id2);
	assert_int_equal(l[1].keyslot, 0);
	assert_string_equal(l[2].type, "kmscrypt-pending");
	assert_int_equal(l[2].keyslot, -1);

	/* remove only what was read: a changed token is not removed */
	assert_int_equal(volume_token_remove(img, l[0].id, "{\"type\":\"kmscrypt\"}"), -ESTALE);
	assert_int_equal(volume_token_remove(img, l[0].id, l[0].json), 0);
	assert_int_equal(volume_token_remove(img, l[0].id, l[0].json), -ENOENT);
	assert_int_equal(volume_token_remove(img, idm, marker), 0);
	volume_tokens_free(l, n);

	/* the second token is the volume's token now, still on keyslot 0 */
	struct volume_header h = {};
	assert_int_equal(volume_read_header(img, &h), 0);
	assert_int_equal(h.token_id, id2);
	volume_header_done(&h);
}

static void test_keyslot_add_destroy(void **state)
{
	const char *img = formatted("ks.img");
	_cleanup_secret_ struct secret *fresh = test_secret_random();
	_cleanup_secret_ struct secret *wrong = test_secret_from_str("not-a-passphrase");
	bool active = true;
	int free_ks = -1;

	assert_int_equal(volume_free_keyslot(img, &free_ks), 0);
	assert_int_equal(free_ks, 2);
	assert_int_equal(volume_keyslot_add(img, 2, wrong, fresh), -EPERM);
	assert_int_equal(volume_keyslot_add(img, 0, secret, fresh), -EEXIST);
	assert_int_equal(volume_keyslot_add(img, 2, secret, fresh), 0);
	assert_int_equal(volume_test_secret(img, 2, fresh), 0);
	assert_int_equal(test_keyslot_count(img), 3);
	assert_int_equal(volume_keyslot_destroy(img, 0), 0);
	assert_int_equal(volume_keyslot_destroy(img, 0), 0); /* already gone: nothing to do */
	assert_int_equal(volume_keyslot_active(img, 0, &active), 0);
	assert_false(active);
	assert_int_equal(test_keyslot_count(img), 2);
	assert_int_equal(volume_test_secret(img, 1, recovery), 0); /* the recovery key stays */
}

static void test_state_history_kept(void **state)
{
	char dir[4096];
	struct volume_state s = {}, back = {};
	const char *hist = "[{\"kms\":\"lab\",\"key_version\":\"1\",\"since\":\"2026-12-04T17:00:00Z\","
			   "\"until\":\"2026-12-04T17:10:00Z\"},{\"kms\":\"lab2\",\"key_version\":\"2\"}]";

	snprintf(dir, sizeof(dir), "%s/state", test_dir);
	snprintf(s.uuid, sizeof(s.uuid), "%s", UUID);
	s.history = strdup(hist);
	assert_int_equal(state_save(dir, &s), 0);
	assert_int_equal(state_load(dir, UUID, &back), 0);
	assert_non_null(back.history);
	assert_non_null(strstr(back.history, "\"kms\":\"lab2\""));
	assert_non_null(strstr(back.history, "\"until\":\"2026-12-04T17:10:00Z\""));
	/* a save of what was loaded (any other command) keeps it */
	back.revoked = true;
	assert_int_equal(state_save(dir, &back), 0);
	volume_state_done(&back);
	assert_int_equal(state_load(dir, UUID, &back), 0);
	assert_true(back.revoked);
	assert_non_null(back.history);
	assert_non_null(strstr(back.history, "\"key_version\":\"1\""));
	volume_state_done(&back);
	/* never written when it is not an array */
	free(s.history);
	s.history = strdup("{\"kms\":\"x\"}");
	assert_int_equal(state_save(dir, &s), -EINVAL);
	volume_state_done(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_two_tokens_one_keyslot),
	    cmocka_unit_test(test_keyslot_add_destroy),
	    cmocka_unit_test(test_state_history_kept),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
