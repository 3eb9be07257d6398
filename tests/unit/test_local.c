/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kms/local/local_codec.h"
#include "util/secret.h"

/* NIST GCM test case 16 (AES-256, 96-bit IV, with AAD), from "The Galois/Counter Mode of
 * Operation (GCM)", McGrew & Viega: checks local_seal() is plain AES-256-GCM. */
static const uint8_t tc16_key[32] = {
	0xfe, 0xff, 0xe9, 0x92, 0x86, 0x65, 0x73, 0x1c, 0x6d, 0x6a, 0x8f, 0x94, 0x67, 0x30, 0x83, 0x08,
	0xfe, 0xff, 0xe9, 0x92, 0x86, 0x65, 0x73, 0x1c, 0x6d, 0x6a, 0x8f, 0x94, 0x67, 0x30, 0x83, 0x08};
static const uint8_t tc16_iv[12] = {0xca, 0xfe, 0xba, 0xbe, 0xfa, 0xce,
				    0xdb, 0xad, 0xde, 0xca, 0xf8, 0x88};
static const uint8_t tc16_pt[60] = {
	0xd9, 0x31, 0x32, 0x25, 0xf8, 0x84, 0x06, 0xe5, 0xa5, 0x59, 0x09, 0xc5, 0xaf, 0xf5, 0x26,
	0x9a, 0x86, 0xa7, 0xa9, 0x53, 0x15, 0x34, 0xf7, 0xda, 0x2e, 0x4c, 0x30, 0x3d, 0x8a, 0x31,
	0x8a, 0x72, 0x1c, 0x3c, 0x0c, 0x95, 0x95, 0x68, 0x09, 0x53, 0x2f, 0xcf, 0x0e, 0x24, 0x49,
	0xa6, 0xb5, 0x25, 0xb1, 0x6a, 0xed, 0xf5, 0xaa, 0x0d, 0xe6, 0x57, 0xba, 0x63, 0x7b, 0x39};
static const char tc16_aad[] = "\xfe\xed\xfa\xce\xde\xad\xbe\xef\xfe\xed\xfa\xce\xde\xad\xbe\xef"
			       "\xab\xad\xda\xd2";
static const uint8_t tc16_ct[60] = {
	0x52, 0x2d, 0xc1, 0xf0, 0x99, 0x56, 0x7d, 0x07, 0xf4, 0x7f, 0x37, 0xa3, 0x2a, 0x84, 0x42,
	0x7d, 0x64, 0x3a, 0x8c, 0xdc, 0xbf, 0xe5, 0xc0, 0xc9, 0x75, 0x98, 0xa2, 0xbd, 0x25, 0x55,
	0xd1, 0xaa, 0x8c, 0xb0, 0x8e, 0x48, 0x59, 0x0d, 0xbb, 0x3d, 0xa7, 0xb0, 0x8b, 0x10, 0x56,
	0x82, 0x88, 0x38, 0xc5, 0xf6, 0x1e, 0x63, 0x93, 0xba, 0x7a, 0x0a, 0xbc, 0xc9, 0xf6, 0x62};
static const uint8_t tc16_tag[16] = {0x76, 0xfc, 0x6e, 0xce, 0x0f, 0x4e, 0x17, 0x68,
				     0xcd, 0xdf, 0x88, 0x53, 0xbb, 0x2d, 0x55, 0x1b};

static void test_gcm_vector(void **state)
{
	struct secret *key = NULL, *pt = NULL, *back = NULL;
	uint8_t *blob = NULL;
	size_t len = 0;

	assert_int_equal(secret_from(tc16_key, 32, &key), 0);
	assert_int_equal(secret_from(tc16_pt, 60, &pt), 0);
	assert_int_equal(local_seal(key, tc16_iv, tc16_aad, pt, &blob, &len), 0);
	assert_int_equal(len, 12 + 60 + 16);
	assert_memory_equal(blob, tc16_iv, 12);
	assert_memory_equal(blob + 12, tc16_ct, 60);
	assert_memory_equal(blob + 72, tc16_tag, 16);
	assert_int_equal(local_open(key, tc16_aad, blob, len, &back), 0);
	assert_int_equal(back->len, 60);
	assert_memory_equal(back->buf, tc16_pt, 60);
	secret_free(back);
	/* another AAD (another volume or keyslot) must not open it */
	assert_int_equal(local_open(key, "kmscrypt:v1:other:0", blob, len, &back), -EACCES);
	blob[40] ^= 1;
	assert_int_equal(local_open(key, tc16_aad, blob, len, &back), -EACCES);
	assert_int_equal(local_open(key, tc16_aad, blob, 20, &back), -EBADMSG);
	free(blob);
	secret_free(key);
	secret_free(pt);
}

static void test_key_parse(void **state)
{
	struct secret *file = NULL, *key = NULL;
	char id1[48], id2[48];
	/* base64 of 32 bytes 0x00..0x1f, with newline */
	const char b64[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
	uint8_t raw[32];

	for (int i = 0; i < 32; i++)
		raw[i] = (uint8_t)i;
	assert_int_equal(secret_from(b64, strlen(b64), &file), 0);
	assert_int_equal(local_key_parse(file, &key), 0);
	assert_int_equal(key->len, 32);
	assert_memory_equal(key->buf, raw, 32);
	assert_int_equal(local_key_id(key, id1, sizeof(id1)), 0);
	secret_free(key);
	secret_free(file);
	assert_int_equal(secret_from(raw, 32, &file), 0);
	assert_int_equal(local_key_parse(file, &key), 0);
	assert_int_equal(local_key_id(key, id2, sizeof(id2)), 0);
	assert_string_equal(id1, id2);
	assert_int_equal(strlen(id1), 7 + 32);
	assert_memory_equal(id1, "sha256:", 7);
	secret_free(key);
	secret_free(file);
	assert_int_equal(secret_from("short", 5, &file), 0);
	assert_int_equal(local_key_parse(file, &key), -EBADMSG);
	secret_free(file);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gcm_vector),
		cmocka_unit_test(test_key_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
