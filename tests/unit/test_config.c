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

#include "config/kms_config.h"

static int parse(const char *text, struct kms_config *c, struct config_error *e)
{
	return kms_config_parse("lab", text, strlen(text), kms_provider_all(), c, e);
}

static void test_parse_ok(void **state)
{
	struct kms_config c = {};
	struct config_error e = {};

	assert_int_equal(parse("# comment\n\n[KMS]\nProvider = local\nKeyFile=/k\n ; x\n"
			       "KeyId=sha256:ab\nCreated=2026-01-01T00:00:00Z\n",
			       &c, &e),
			 0);
	assert_string_equal(c.provider->name, "local");
	assert_string_equal(kms_config_get(&c, "KeyFile"), "/k");
	assert_string_equal(kms_config_get(&c, "KeyId"), "sha256:ab");
	assert_null(kms_config_get(&c, "Nope"));
	kms_config_done(&c);
}

static void expect_error(const char *text, unsigned line, const char *needle)
{
	struct kms_config c = {};
	struct config_error e = {};

	assert_int_equal(parse(text, &c, &e), -EBADMSG);
	assert_int_equal(e.line, line);
	if (!strstr(e.message, needle))
		fail_msg("message '%s' lacks '%s'", e.message, needle);
}

static void test_parse_errors(void **state)
{
	expect_error("[KMS]\nProvider=local\nKeyFile=/k\nColour=blue\n", 4, "unknown setting");
	expect_error("[KMS]\nProvider=local\nKeyFile=/k\nKeyFile=/j\n", 4, "set twice");
	expect_error("Provider=local\n", 1, "outside");
	expect_error("[Other]\n", 1, "unknown section");
	expect_error("[KMS]\nProvider=local\n", 0, "KeyFile= is required");
	expect_error("[KMS]\nProvider=nosuch\nKeyFile=/k\n", 2, "unknown provider");
	expect_error("[KMS]\nKeyFile=/k\n", 0, "Provider= is missing");
	expect_error("[KMS]\nProvider=local\nKeyFile=relative\n", 0, "absolute");
	expect_error("[KMS]\nProvider=local\nKeyFile\n", 3, "Key=Value");
	expect_error("[KMS]\n[KMS]\n", 2, "repeated");
}

static void test_name_valid(void **state)
{
	assert_true(kms_config_name_valid("lab"));
	assert_true(kms_config_name_valid("aws-prod.eu_1"));
	assert_false(kms_config_name_valid(""));
	assert_false(kms_config_name_valid("../etc"));
	assert_false(kms_config_name_valid(".hidden"));
	assert_false(kms_config_name_valid("a/b"));
	assert_false(kms_config_name_valid("a b"));
}

static void test_round_trip(void **state)
{
	struct kms_config c = {}, d = {};
	struct config_error e = {};
	char *text = NULL;

	assert_int_equal(parse("[KMS]\nCreated=x\nKeyId=sha256:1\nKeyFile=/k\nProvider=local\n", &c,
			       &e),
			 0);
	assert_int_equal(kms_config_set(&c, "KeyFile", "/new"), 0);
	assert_int_equal(kms_config_format(&c, &text), 0);
	assert_non_null(strstr(text, "[KMS]\nProvider=local\nKeyFile=/new\nKeyId=sha256:1\n"));
	assert_int_equal(parse(text, &d, &e), 0);
	assert_string_equal(kms_config_get(&d, "KeyFile"), "/new");
	assert_string_equal(kms_config_get(&d, "Created"), "x");
	free(text);
	kms_config_done(&c);
	kms_config_done(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_name_valid),
		cmocka_unit_test(test_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
