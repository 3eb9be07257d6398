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

#include "codec/base64.h"
#include "codec/token.h"

static const char good[] =
	"{\"type\":\"kmscrypt\",\"keyslots\":[\"3\"],\"version\":1,\"kms\":\"lab\",\"provider\":"
	"\"local\",\"key_id\":\"sha256:00\",\"key_version\":\"\",\"alg\":\"A256GCM\",\"blob\":"
	"\"AQID\",\"created\":\"2026-11-30T00:00:00Z\"}";

static void test_parse_good(void **state)
{
	struct kmscrypt_token t = {};
	char err[256] = "";

	assert_int_equal(token_parse(good, &t, err, sizeof(err)), 0);
	assert_int_equal(t.keyslot, 3);
	assert_string_equal(t.kms, "lab");
	assert_string_equal(t.provider, "local");
	assert_int_equal(t.blob_len, 3);
	assert_memory_equal(t.blob, "\x01\x02\x03", 3);
	token_done(&t);
}

static void test_format_round_trip(void **state)
{
	struct kmscrypt_token t = {
		.keyslot = 7, .kms = "k", .provider = "aws", .key_id = "arn:aws:kms:x",
		.key_version = "", .alg = "SYMMETRIC_DEFAULT", .blob = (uint8_t *)"\xff\x00\x10",
		.blob_len = 3,
	};
	struct kmscrypt_token u = {};
	char *json = NULL;

	assert_int_equal(token_format(&t, 86400, &json), 0);
	assert_non_null(strstr(json, "\"keyslots\":[\"7\"]"));
	assert_non_null(strstr(json, "\"created\":\"1970-01-02T00:00:00Z\""));
	assert_non_null(strstr(json, "\"key_id\":\"arn:aws:kms:x\""));
	assert_int_equal(token_parse(json, &u, NULL, 0), 0);
	assert_int_equal(u.keyslot, 7);
	assert_int_equal(u.blob_len, 3);
	assert_memory_equal(u.blob, "\xff\x00\x10", 3);
	free(json);
	token_done(&u);
}

static void expect_bad(const char *from, const char *to, const char *needle)
{
	struct kmscrypt_token t = {};
	char json[1024], err[256] = "";
	const char *p = strstr(good, from);

	assert_non_null(p);
	snprintf(json, sizeof(json), "%.*s%s%s", (int)(p - good), good, to, p + strlen(from));
	assert_int_equal(token_parse(json, &t, err, sizeof(err)), -EBADMSG);
	if (!strstr(err, needle))
		fail_msg("'%s': error '%s' lacks '%s'", json, err, needle);
}

static void test_parse_bad(void **state)
{
	expect_bad("\"type\":\"kmscrypt\"", "\"type\":\"clevis\"", "type");
	expect_bad("[\"3\"]", "[\"3\",\"4\"]", "exactly one");
	expect_bad("[\"3\"]", "[]", "exactly one");
	expect_bad("[\"3\"]", "[\"x\"]", "not a number");
	expect_bad("[\"3\"]", "[\"99\"]", "not a number");
	expect_bad("\"version\":1", "\"version\":3", "not supported");
	expect_bad("\"blob\":\"AQID\"", "\"blob\":\"A*ID\"", "base64");
	expect_bad("\"blob\":\"AQID\"", "\"blob\":\"\"", "empty");
	expect_bad("\"kms\":\"lab\",", "", "'kms' is missing");
	expect_bad("\"kms\":\"lab\"", "\"kms\":5", "not a string");
	expect_bad("}", "", "not valid JSON");
	expect_bad("}", "}x", "not valid JSON");
	/* header fields reach terminals and the journal: no control characters */
	expect_bad("\"kms\":\"lab\"", "\"kms\":\"lab\\n<0>kmscrypt: FORGED\"", "control character");
	expect_bad("\"key_id\":\"sha256:00\"", "\"key_id\":\"\\u001b[31mred\"", "control");
	expect_bad("\"key_version\":\"\"", "\"key_version\":\"\\u007f\"", "control");
	expect_bad("\"created\":\"2026-11-30T00:00:00Z\"", "\"created\":\"x\\ry\"", "control");
	/* the revoked mark: an object, or the token is invalid (fail closed) */
	expect_bad("}", ",\"revoked\":true}", "'revoked' is not an object");
	expect_bad("}", ",\"revoked\":{\"reason\":\"a\\nb\"}}", "control");
}

static void test_revoked_mark(void **state)
{
	struct kmscrypt_token t = {};
	char *marked = NULL, *cleared = NULL, *odd = NULL;
	char buf[64];

	assert_int_equal(token_parse(good, &t, NULL, 0), 0);
	assert_false(t.revoked);
	token_done(&t);

	/* set: "at" in RFC 3339, the reason, every other field kept (including unknown ones) */
	assert_int_equal(token_json_set_revoked("{\"type\":\"kmscrypt\",\"future\":[1,2]}", 86400,
						"drill", &odd),
			 0);
	assert_non_null(strstr(odd, "\"future\":[1,2]"));
	assert_non_null(strstr(odd, "\"revoked\":{\"at\":\"1970-01-02T00:00:00Z\",\"reason\":\"drill\"}"));
	free(odd);
	assert_int_equal(token_json_set_revoked(good, 1764979200, "incident 7", &marked), 0);
	assert_int_equal(token_parse(marked, &t, NULL, 0), 0);
	assert_true(t.revoked);
	assert_string_equal(t.revoked_at, "2025-12-06T00:00:00Z");
	assert_string_equal(t.revoked_reason, "incident 7");
	assert_int_equal(t.blob_len, 3);
	assert_string_equal(t.kms, "lab");
	token_done(&t);
	/* no reason: no "reason" */
	assert_int_equal(token_json_set_revoked(good, 1, NULL, &odd), 0);
	assert_null(strstr(odd, "reason"));
	assert_int_equal(token_parse(odd, &t, NULL, 0), 0);
	assert_true(t.revoked);
	assert_string_equal(t.revoked_reason, "");
	token_done(&t);
	free(odd);

	/* clear */
	assert_int_equal(token_json_set_revoked(marked, 0, NULL, &cleared), 0);
	assert_null(strstr(cleared, "revoked"));
	assert_int_equal(token_parse(cleared, &t, NULL, 0), 0);
	assert_false(t.revoked);
	token_done(&t);

	/* a reason that would inject a line, a header that is not an object */
	assert_int_equal(token_json_set_revoked(good, 1, "a\nb", &odd), -EINVAL);
	assert_int_equal(token_json_set_revoked("[1]", 1, NULL, &odd), -EBADMSG);
	assert_int_equal(token_json_set_revoked("{", 1, NULL, &odd), -EBADMSG);
	free(marked);
	free(cleared);

	/* times outside RFC 3339's years never print garbage */
	assert_int_equal(format_rfc3339(0, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "1970-01-01T00:00:00Z");
	assert_int_equal(format_rfc3339((time_t)1 << 60, buf, sizeof(buf)), -ERANGE);
	assert_string_equal(buf, "(invalid time)");
	assert_int_equal(format_rfc3339((time_t)300000000000LL, buf, sizeof(buf)), -ERANGE);
	assert_string_equal(buf, "(invalid time)");
	assert_int_equal(format_rfc3339(-(time_t)70000000000LL, buf, sizeof(buf)), -ERANGE);
}

static void test_base64(void **state)
{
	char *s = NULL;
	uint8_t *b = NULL;
	size_t n = 0;

	/* RFC 4648 section 10 vectors */
	static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
					  "Zm9vYmFy"};
	for (size_t i = 0; i < 7; i++) {
		assert_int_equal(base64_encode(plain[i], strlen(plain[i]), 0, &s), 0);
		assert_string_equal(s, enc[i]);
		free(s);
		assert_int_equal(base64_decode(enc[i], strlen(enc[i]), 0, &b, &n), 0);
		assert_int_equal(n, strlen(plain[i]));
		assert_memory_equal(b, plain[i], n);
		free(b);
	}
	assert_int_equal(base64_encode("\xfb\xff", 2, 1, &s), 0);
	assert_string_equal(s, "-_8");
	free(s);
	assert_int_equal(base64_decode("-_8", 3, 1, &b, &n), 0);
	assert_int_equal(n, 2);
	free(b);
	assert_int_equal(base64_decode("-_8", 3, 0, &b, &n), -EBADMSG);
	assert_int_equal(base64_decode("Zm9=", 4, 0, &b, &n), -EBADMSG); /* non-zero trailing bits */
	assert_int_equal(base64_decode("Z", 1, 0, &b, &n), -EBADMSG);
	assert_int_equal(base64_decode("Zm 9v", 5, 0, &b, &n), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_format_round_trip),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_revoked_mark),
		cmocka_unit_test(test_base64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
