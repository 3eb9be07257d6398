/* SPDX-License-Identifier: MIT */
/* Token version 2 (multi-KMS bindings, include/kmscrypt/token.h): parse, format, validation, and a
 * version-1 token as the previous release wrote it (tests/fixtures/token/v1_local.json). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec/token.h"
#include "kmscrypt/token.h"

#define FIX KMSCRYPT_SOURCE_DIR "/tests/fixtures/token/"

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = calloc(1, 65536);
	size_t n;

	assert_non_null(f);
	assert_non_null(buf);
	n = fread(buf, 1, 65535, f);
	fclose(f);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	return buf;
}

/* "wraps" of @n wraps with shares @shares (NULL: 1..n) and KMS names k0..k(n-1) */
static char *v2_json(unsigned k, unsigned n, const int *shares, const char *extra)
{
	static char buf[16384];
	size_t o = 0;

	o += (size_t)snprintf(buf + o, sizeof(buf) - o,
			      "{\"type\":\"kmscrypt\",\"keyslots\":[\"1\"],\"version\":2,"
			      "\"threshold\":%u,\"wraps\":[",
			      k);
	for (unsigned i = 0; i < n; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o,
				      "%s{\"kms\":\"k%u\",\"provider\":\"local\",\"key_id\":\"sha256:%u\","
				      "\"key_version\":\"\",\"alg\":\"A256GCM\",\"blob\":\"AQID\","
				      "\"share\":%d}",
				      i ? "," : "", i, i, shares ? shares[i] : (int)i + 1);
	snprintf(buf + o, sizeof(buf) - o, "],\"created\":\"2026-12-04T00:00:00Z\"%s}",
		 extra ? extra : "");
	return buf;
}

static void test_v1_fixture(void **state)
{
	char *json = slurp(FIX "v1_local.json");
	struct kmscrypt_token t = {};
	char err[256] = "", *again = NULL;

	assert_int_equal(token_parse(json, &t, err, sizeof(err)), 0);
	assert_int_equal(t.version, 1);
	assert_int_equal(t.keyslot, 0);
	assert_string_equal(t.kms, "a");
	assert_string_equal(t.provider, "local");
	assert_int_equal(t.blob_len, 60); /* 12-byte IV, 32-byte secret, 16-byte tag */
	/* one wrap mirroring the v1 fields, threshold 1 */
	assert_int_equal(t.n_wraps, 1);
	assert_int_equal(t.threshold, 1);
	assert_string_equal(t.wraps[0].kms, "a");
	assert_string_equal(t.wraps[0].key_id, t.key_id);
	assert_int_equal(t.wraps[0].share, 0);
	assert_int_equal(t.wraps[0].blob_len, t.blob_len);
	assert_memory_equal(t.wraps[0].blob, t.blob, t.blob_len);
	/* written back as version 1, byte for byte */
	assert_int_equal(token_format(&t, 0, &again), 0);
	assert_string_equal(again, json);
	free(again);
	token_done(&t);
	free(json);
}

static void test_v2_parse_threshold(void **state)
{
	struct kmscrypt_token t = {};
	char err[256] = "";

	assert_int_equal(token_parse(v2_json(2, 3, NULL, NULL), &t, err, sizeof(err)), 0);
	assert_int_equal(t.version, 2);
	assert_int_equal(t.threshold, 2);
	assert_int_equal(t.n_wraps, 3);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(t.wraps[i].share, i + 1);
	assert_string_equal(t.wraps[2].kms, "k2");
	/* the v1 fields are the first wrap's */
	assert_string_equal(t.kms, "k0");
	assert_string_equal(t.key_id, "sha256:0");
	assert_int_equal(t.blob_len, 3);
	token_done(&t);
}

static void test_v2_any_of(void **state)
{
	static const int zero[4] = {0, 0, 0, 0};
	struct kmscrypt_token t = {};
	char err[256] = "";

	assert_int_equal(token_parse(v2_json(1, 4, zero, NULL), &t, err, sizeof(err)), 0);
	assert_int_equal(t.threshold, 1);
	assert_int_equal(t.n_wraps, 4);
	token_done(&t);
	/* any-of wraps hold the whole secret: a share number is invalid */
	assert_int_equal(token_parse(v2_json(1, 3, NULL, NULL), &t, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "share 0"));
}

static void expect_bad(const char *json, const char *needle)
{
	struct kmscrypt_token t = {};
	char err[256] = "";

	assert_int_equal(token_parse(json, &t, err, sizeof(err)), -EBADMSG);
	if (!strstr(err, needle))
		fail_msg("error '%s' lacks '%s'", err, needle);
	assert_null(t.wraps); /* nothing leaks into @ret on failure */
}

static void test_v2_invalid(void **state)
{
	static const int dup[3] = {1, 2, 1}, zero_x[3] = {0, 1, 2}, big[2] = {1, 256};
	char json[4096];

	expect_bad(v2_json(2, 3, dup, NULL), "same share 1");
	expect_bad(v2_json(2, 3, zero_x, NULL), "share 0, not 1 to 255");
	expect_bad(v2_json(2, 2, big, NULL), "share 256");
	expect_bad(v2_json(4, 3, NULL, NULL), "threshold 4");
	expect_bad(v2_json(0, 3, NULL, NULL), "threshold 0");
	expect_bad(v2_json(2, 17, NULL, NULL), "1 to 16 wraps");
	expect_bad(v2_json(1, 0, NULL, NULL), "1 to 16 wraps");
	/* two wraps of one KMS configuration */
	snprintf(json, sizeof(json), "%s", v2_json(2, 2, NULL, NULL));
	memcpy(strstr(json, "\"k1\""), "\"k0\"", 4);
	expect_bad(json, "same KMS 'k0'");
	/* threshold and wraps are required and typed */
	expect_bad("{\"type\":\"kmscrypt\",\"keyslots\":[\"1\"],\"version\":2,\"wraps\":[]}",
		   "'threshold'");
	expect_bad("{\"type\":\"kmscrypt\",\"keyslots\":[\"1\"],\"version\":2,\"threshold\":1}",
		   "'wraps'");
	expect_bad("{\"type\":\"kmscrypt\",\"keyslots\":[\"1\"],\"version\":2,\"threshold\":1,"
		   "\"wraps\":[1]}",
		   "wrap 0 is not an object");
	/* a wrap missing its blob, or its share */
	snprintf(json, sizeof(json), "%s", v2_json(2, 2, NULL, NULL));
	memcpy(strstr(json, "\"blob\""), "\"blub\"", 6);
	expect_bad(json, "'blob'");
	snprintf(json, sizeof(json), "%s", v2_json(2, 2, NULL, NULL));
	memcpy(strstr(json, "\"share\""), "\"shore\"", 7);
	expect_bad(json, "'share'");
	/* control characters are refused in wraps as at the top level */
	snprintf(json, sizeof(json), "%s", v2_json(2, 2, NULL, NULL));
	memcpy(strstr(json, "A256GCM\",\"blob\":\"AQID\",\"share\":2"), "A\\u001b", 7);
	expect_bad(json, "control character");
	/* version 3 is not read */
	snprintf(json, sizeof(json), "%s", v2_json(2, 2, NULL, NULL));
	memcpy(strstr(json, "\"version\":2"), "\"version\":3", 11);
	expect_bad(json, "version 3");
}

static void test_v2_revoked_mark(void **state)
{
	struct kmscrypt_token t = {};
	char err[256] = "", *marked = NULL;

	assert_int_equal(token_json_set_revoked(v2_json(2, 3, NULL, NULL), 1764806400, "incident",
						&marked),
			 0);
	assert_int_equal(token_parse(marked, &t, err, sizeof(err)), 0);
	assert_true(t.revoked);
	assert_string_equal(t.revoked_reason, "incident");
	assert_int_equal(t.n_wraps, 3); /* the wraps survive the mark */
	token_done(&t);
	free(marked);
}

static void test_v2_format_round_trip(void **state)
{
	uint8_t b0[3] = {1, 2, 3}, b1[2] = {0xff, 0}, b2[1] = {7};
	struct kmscrypt_wrap w[3] = {
		{.kms = "a", .provider = "local", .key_id = "sha256:a", .key_version = "",
		 .alg = "A256GCM", .blob = b0, .blob_len = 3, .share = 1},
		{.kms = "b", .provider = "vault", .key_id = "vol", .key_version = "2",
		 .alg = "aes256-gcm96", .blob = b1, .blob_len = 2, .share = 2},
		{.kms = "c", .provider = "aws", .key_id = "arn:x", .key_version = NULL,
		 .alg = "SYMMETRIC_DEFAULT", .blob = b2, .blob_len = 1, .share = 3},
	};
	struct kmscrypt_token t = {.version = 2, .keyslot = 4, .threshold = 2, .n_wraps = 3,
				   .wraps = w},
			      p = {};
	char err[256] = "", *json = NULL;

	assert_int_equal(token_format(&t, 1764806400, &json), 0);
	assert_non_null(strstr(json, "\"version\":2"));
	assert_non_null(strstr(json, "\"created\":\"2025-12-04T00:00:00Z\""));
	assert_null(strstr(json, "\"kms\":\"a\",\"provider\":\"local\",\"key_id\":\"sha256:a\","
				 "\"key_version\":\"\",\"alg\":\"A256GCM\",\"blob\":\"AQID\",\"created"));
	assert_int_equal(token_parse(json, &p, err, sizeof(err)), 0);
	assert_int_equal(p.keyslot, 4);
	assert_int_equal(p.threshold, 2);
	assert_int_equal(p.n_wraps, 3);
	assert_string_equal(p.wraps[1].provider, "vault");
	assert_string_equal(p.wraps[1].key_version, "2");
	assert_string_equal(p.wraps[2].key_version, "");
	assert_int_equal(p.wraps[1].blob_len, 2);
	assert_memory_equal(p.wraps[1].blob, b1, 2);
	assert_int_equal(p.wraps[2].share, 3);
	token_done(&p);
	free(json);

	/* format refuses what parse would refuse */
	json = NULL;
	w[2].share = 2;
	assert_int_equal(token_format(&t, 0, &json), -EINVAL);
	w[2].share = 3;
	t.threshold = 4;
	assert_int_equal(token_format(&t, 0, &json), -EINVAL);
	t.threshold = 1; /* any-of with share numbers */
	assert_int_equal(token_format(&t, 0, &json), -EINVAL);
	t.threshold = 2;
	w[1].kms = "a";
	assert_int_equal(token_format(&t, 0, &json), -EINVAL);
	w[1].kms = "b";
	t.n_wraps = 0;
	assert_int_equal(token_format(&t, 0, &json), -EINVAL);
	assert_null(json);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_fixture),
		cmocka_unit_test(test_v2_parse_threshold),
		cmocka_unit_test(test_v2_any_of),
		cmocka_unit_test(test_v2_invalid),
		cmocka_unit_test(test_v2_revoked_mark),
		cmocka_unit_test(test_v2_format_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
