/* SPDX-License-Identifier: MIT */
/* The recovery key escrow: the "recovery" binding (codec/kms_error.h) and the envelope
 * (codec/escrow.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec/escrow.h"
#include "codec/kms_error.h"
#include "kms/local/local_codec.h"
#include "util/secret.h"

#define UUID "0b1c2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
#define UUID2 "11111111-2222-4333-8444-555555555555"

static void test_aad_purpose(void **state)
{
	char buf[128], slot[16];

	(void)state;
	assert_int_equal(
	    kms_aad_format(&(struct kms_aad){.uuid = UUID, .keyslot = 1}, buf, sizeof(buf)),
	    strlen("kmscrypt:v1:" UUID ":1"));
	assert_string_equal(buf, "kmscrypt:v1:" UUID ":1");
	kms_aad_format(&(struct kms_aad){.uuid = UUID, .purpose = KMS_AAD_PURPOSE_RECOVERY}, buf,
		       sizeof(buf));
	assert_string_equal(buf, "kmscrypt:v1:" UUID ":recovery");
	assert_string_equal(kms_aad_slot(&(struct kms_aad){.keyslot = 3}, slot), "3");
	assert_string_equal(kms_aad_slot(&(struct kms_aad){.purpose = "recovery"}, slot),
			    "recovery");
}

/* A key wrapped for the escrow of a volume opens for that purpose and volume only. */
static void test_recovery_binding(void **state)
{
	struct secret *key, *plain, *out = NULL;
	static const uint8_t nonce[LOCAL_NONCE_BYTES] = {1, 2, 3};
	const struct kms_aad esc = {.uuid = UUID, .purpose = KMS_AAD_PURPOSE_RECOVERY};
	const struct kms_aad slot1 = {.uuid = UUID, .keyslot = 1};
	const struct kms_aad other = {.uuid = UUID2, .purpose = KMS_AAD_PURPOSE_RECOVERY};
	struct kms_error err = {};
	char aad[128];
	uint8_t *blob;
	size_t len;

	(void)state;
	assert_int_equal(secret_random(LOCAL_KEY_BYTES, &key), 0);
	assert_int_equal(secret_from_cstr("cbdefghi", 8, &plain), 0);
	kms_aad_format(&esc, aad, sizeof(aad));
	assert_int_equal(local_seal(key, nonce, aad, plain, &blob, &len), 0);
	assert_int_equal(local_open_volume(key, &esc, blob, len, &out, &err), 0);
	assert_memory_equal(out->buf, "cbdefghi", 8);
	out = secret_free(out);
	assert_int_equal(local_open_volume(key, &slot1, blob, len, &out, &err), -EACCES);
	assert_true(err.token_rejected);
	assert_non_null(strstr(err.message, "keyslot 1"));
	err = (struct kms_error){};
	assert_int_equal(local_open_volume(key, &other, blob, len, &out, &err), -EACCES);
	assert_true(err.token_rejected);
	assert_non_null(strstr(err.message, UUID2));
	assert_non_null(strstr(err.message, "keyslot recovery"));
	free(blob);
	secret_free(plain);
	secret_free(key);
}

static void test_envelope_round_trip(void **state)
{
	struct escrow in = {.uuid = UUID,
			    .kms = "escrow",
			    .provider = "vault",
			    .key_id = "transit/keys/escrow",
			    .key_version = "3",
			    .alg = "aes256-gcm96",
			    .device = "/dev/vdb",
			    .label = "data",
			    .blob = (uint8_t *)"\x00\x01\xfe",
			    .blob_len = 3};
	struct escrow out = {};
	char *json = NULL, err[256] = "";

	(void)state;
	assert_int_equal(escrow_format(&in, 1764806400, &json), 0);
	assert_non_null(strstr(json, "\"type\":\"kmscrypt-recovery-escrow\""));
	assert_non_null(strstr(json, "\"purpose\":\"recovery\""));
	assert_non_null(strstr(json, "\"device\":\"/dev/vdb\""));
	assert_int_equal(escrow_parse(json, strlen(json), &out, err, sizeof(err)), 0);
	assert_int_equal(out.version, 1);
	assert_string_equal(out.uuid, UUID);
	assert_string_equal(out.kms, "escrow");
	assert_string_equal(out.provider, "vault");
	assert_string_equal(out.key_id, "transit/keys/escrow");
	assert_string_equal(out.key_version, "3");
	assert_string_equal(out.alg, "aes256-gcm96");
	assert_string_equal(out.created, "2025-12-04T00:00:00Z");
	assert_string_equal(out.label, "data");
	assert_int_equal(out.blob_len, 3);
	assert_memory_equal(out.blob, "\x00\x01\xfe", 3);
	escrow_done(&out);
	free(json);
}

static void test_envelope_bad(void **state)
{
	static const char *const bad[] = {
	    "",
	    "[]",
	    "{\"type\":\"kmscrypt\",\"version\":1}",
	    /* unknown version */
	    "{\"type\":\"kmscrypt-recovery-escrow\",\"version\":2,\"uuid\":\"" UUID "\","
	    "\"purpose\":\"recovery\",\"kms\":\"b\",\"provider\":\"local\",\"key_id\":\"k\","
	    "\"key_version\":\"\",\"alg\":\"A256GCM\",\"blob\":\"AQID\"}",
	    /* another purpose */
	    "{\"type\":\"kmscrypt-recovery-escrow\",\"version\":1,\"uuid\":\"" UUID "\","
	    "\"purpose\":\"keyslot\",\"kms\":\"b\",\"provider\":\"local\",\"key_id\":\"k\","
	    "\"key_version\":\"\",\"alg\":\"A256GCM\",\"blob\":\"AQID\"}",
	    /* not a UUID */
	    "{\"type\":\"kmscrypt-recovery-escrow\",\"version\":1,\"uuid\":\"../etc\","
	    "\"purpose\":\"recovery\",\"kms\":\"b\",\"provider\":\"local\",\"key_id\":\"k\","
	    "\"key_version\":\"\",\"alg\":\"A256GCM\",\"blob\":\"AQID\"}",
	    /* a configuration name that is a path */
	    "{\"type\":\"kmscrypt-recovery-escrow\",\"version\":1,\"uuid\":\"" UUID "\","
	    "\"purpose\":\"recovery\",\"kms\":\"../b\",\"provider\":\"local\",\"key_id\":\"k\","
	    "\"key_version\":\"\",\"alg\":\"A256GCM\",\"blob\":\"AQID\"}",
	    /* blob not base64 */
	    "{\"type\":\"kmscrypt-recovery-escrow\",\"version\":1,\"uuid\":\"" UUID "\","
	    "\"purpose\":\"recovery\",\"kms\":\"b\",\"provider\":\"local\",\"key_id\":\"k\","
	    "\"key_version\":\"\",\"alg\":\"A256GCM\",\"blob\":\"!!\"}",
	    /* a control character */
	    "{\"type\":\"kmscrypt-recovery-escrow\",\"version\":1,\"uuid\":\"" UUID "\","
	    "\"purpose\":\"recovery\",\"kms\":\"b\",\"provider\":\"lo\\ncal\",\"key_id\":\"k\","
	    "\"key_version\":\"\",\"alg\":\"A256GCM\",\"blob\":\"AQID\"}",
	    /* key_version missing */
	    "{\"type\":\"kmscrypt-recovery-escrow\",\"version\":1,\"uuid\":\"" UUID "\","
	    "\"purpose\":\"recovery\",\"kms\":\"b\",\"provider\":\"local\",\"key_id\":\"k\","
	    "\"alg\":\"A256GCM\",\"blob\":\"AQID\"}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct escrow e = {};
		char err[256] = "";

		assert_int_equal(escrow_parse(bad[i], strlen(bad[i]), &e, err, sizeof(err)),
				 -EBADMSG);
		assert_true(err[0] != '\0');
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_aad_purpose),
	    cmocka_unit_test(test_recovery_binding),
	    cmocka_unit_test(test_envelope_round_trip),
	    cmocka_unit_test(test_envelope_bad),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
