/* SPDX-License-Identifier: MIT */
/*
 * The dm table reading shared by the volume layer (volume/dm.h): which dm devices belong to a LUKS
 * volume (the filter that keeps revoke from reading every table of the host), and the shape of a
 * crypt table's key field.  Pure functions: no device-mapper needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "volume/dm.h"

#define HEX "0fd1f9c45a3e4b7e9c2d1e2f3a4b5c6d"

static void test_uuid_match(void **state)
{
	(void)state;
	/* the top mapping and the devices of a re-encryption stack (libcryptsetup
	 * dm_prepare_uuid()) */
	assert_true(volume_dm_uuid_match("CRYPT-LUKS2-" HEX "-kv-data", HEX));
	assert_true(volume_dm_uuid_match("CRYPT-SUBDEV-" HEX "-kv-data-overlay", HEX));
	assert_true(volume_dm_uuid_match("CRYPT-LUKS2-0FD1F9C45A3E4B7E9C2D1E2F3A4B5C6D-kv", HEX));
	/* other volumes, other owners */
	assert_false(volume_dm_uuid_match("CRYPT-LUKS2-1fd1f9c45a3e4b7e9c2d1e2f3a4b5c6d-kv", HEX));
	assert_false(volume_dm_uuid_match("CRYPT-LUKS2-" HEX "0-kv", HEX)); /* longer hex */
	assert_false(volume_dm_uuid_match("CRYPT-LUKS2-0fd1f9c45a3e4b7e9c2d1e2f3a4b5c6-kv", HEX));
	assert_false(volume_dm_uuid_match("CRYPT-LUKS2-" HEX, HEX)); /* no "-<name>" */
	assert_false(volume_dm_uuid_match("LVM-" HEX "-x", HEX));
	assert_false(volume_dm_uuid_match("", HEX));
	assert_false(volume_dm_uuid_match(NULL, HEX));
	assert_false(volume_dm_uuid_match("CRYPT-LUKS2-" HEX "-kv", ""));
	/* NULL: any LUKS2 top mapping */
	assert_true(volume_dm_uuid_match("CRYPT-LUKS2-" HEX "-kv", NULL));
	assert_false(volume_dm_uuid_match("CRYPT-SUBDEV-" HEX "-kv-overlay", NULL));
	assert_false(volume_dm_uuid_match("CRYPT-PLAIN-kv", NULL));
	assert_false(volume_dm_uuid_match("LVM-x", NULL));
}

static void test_key_state(void **state)
{
	bool logon = true;

	(void)state;
	assert_int_equal(volume_dm_key_state(":64:logon:cryptsetup:x-d0", 25, &logon),
			 VOLUME_KEY_KEYRING);
	assert_true(logon);
	assert_int_equal(volume_dm_key_state(":64:user:kmscrypt:x", 19, &logon),
			 VOLUME_KEY_KEYRING);
	assert_false(logon);
	assert_int_equal(volume_dm_key_state(":64:logon", 9, &logon),
			 VOLUME_KEY_HEX); /* worst case */
	assert_int_equal(volume_dm_key_state("0000000000000000", 16, &logon), VOLUME_KEY_WIPED);
	assert_int_equal(volume_dm_key_state("00000000000000a0", 16, &logon), VOLUME_KEY_HEX);
	assert_int_equal(volume_dm_key_state("-", 1, &logon), VOLUME_KEY_NONE);
	assert_int_equal(volume_dm_key_state("", 0, &logon), VOLUME_KEY_NONE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_uuid_match),
	    cmocka_unit_test(test_key_state),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
