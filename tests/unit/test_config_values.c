/* SPDX-License-Identifier: MIT */
/* config/kms_config.c, the one place settings are stored: no key or value with CR, LF or NUL gets
 * in (kms_config_set(), kms_config_set_secret()), the parser yields none, a refused set changes
 * nothing, and values of secret options live in locked memory (struct secret). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/kms_config.h"
#include "util/secret.h"

static const struct kms_option test_options[] = {
    {"Endpoint", "endpoint", KMS_OPT_REQUIRED, "endpoint"},
    {"CaFile", "ca-file", KMS_OPT_PATH, "ca"},
    {"Token", "token", KMS_OPT_SECRET, "token"},
    {}};
static const struct kms_provider test_provider = {
    .name = "valtest", .description = "test", .options = test_options};
static const struct kms_provider *const providers[] = {&test_provider, NULL};

static void load(struct kms_config *c)
{
	static const char text[] = "[KMS]\nProvider=valtest\nEndpoint=https://kms\nToken=t0k\n";
	struct config_error e = {};

	assert_int_equal(kms_config_parse("v1", text, strlen(text), providers, c, &e), 0);
}

static void test_set_refuses_line_breaks(void **state)
{
	static const char *const bad[] = {
	    "/ca.pem\nEndpoint=https://elsewhere", "/ca.pem\r", "\n", "a\rb", "x\r\nEndpoint=y",
	};
	struct kms_config c = {};
	char *before = NULL, *after = NULL;

	load(&c);
	assert_int_equal(kms_config_set(&c, "CaFile", "/ca.pem"), 0);
	assert_int_equal(kms_config_format(&c, &before), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* replacing a setting, adding one, a generic one, a secret one */
		assert_int_equal(kms_config_set(&c, "CaFile", bad[i]), -EINVAL);
		assert_int_equal(kms_config_set(&c, "Description", bad[i]), -EINVAL);
		assert_int_equal(kms_config_set(&c, "Endpoint", bad[i]), -EINVAL);
		assert_int_equal(kms_config_set(&c, "Token", bad[i]), -EINVAL);
	}
	/* keys too: empty, '=' (it would move the value), line breaks */
	assert_int_equal(kms_config_set(&c, "", "x"), -EINVAL);
	assert_int_equal(kms_config_set(&c, "Endpoint=https://elsewhere\nCaFile", "x"), -EINVAL);
	assert_int_equal(kms_config_set(&c, "Description\r", "x"), -EINVAL);
	/* nothing changed */
	assert_string_equal(kms_config_get(&c, "CaFile"), "/ca.pem");
	assert_string_equal(kms_config_get(&c, "Token"), "t0k");
	assert_null(kms_config_get(&c, "Description"));
	assert_int_equal(kms_config_format(&c, &after), 0);
	assert_string_equal(before, after);
	free(before);
	free(after);
	/* what is allowed still is */
	assert_int_equal(kms_config_set(&c, "Description", "tabs\tand = signs are fine"), 0);
	assert_string_equal(kms_config_get(&c, "Description"), "tabs\tand = signs are fine");
	kms_config_done(&c);
}

static void test_set_secret(void **state)
{
	struct kms_config c = {};
	struct secret *s = NULL;
	const struct secret *got;
	char *text = NULL;

	load(&c);
	/* NUL, CR and LF in a secret from a file or a credential */
	assert_int_equal(secret_from("ab\0cd", 5, &s), 0);
	assert_int_equal(kms_config_set_secret(&c, "Token", s), -EINVAL);
	secret_free(s);
	assert_int_equal(secret_from("ab\ncd", 5, &s), 0);
	assert_int_equal(kms_config_set_secret(&c, "Token", s), -EINVAL);
	secret_free(s);
	assert_int_equal(secret_from("ab\rcd", 5, &s), 0);
	assert_int_equal(kms_config_set_secret(&c, "Token", s), -EINVAL);
	secret_free(s);
	assert_string_equal(kms_config_get(&c, "Token"), "t0k");

	assert_int_equal(secret_from("n3w-t0ken", 9, &s), 0);
	assert_int_equal(kms_config_set_secret(&c, "Token", s), 0);
	secret_free(s);
	got = kms_config_get_secret(&c, "Token");
	assert_non_null(got);
	assert_int_equal(got->len, 9);
	assert_memory_equal(got->buf, "n3w-t0ken", 10); /* NUL-terminated */
	/* the string form is the same locked memory, not a heap copy */
	assert_ptr_equal(kms_config_get(&c, "Token"), (const char *)got->buf);
	assert_int_equal(kms_config_format(&c, &text), 0);
	assert_non_null(strstr(text, "\nToken=n3w-t0ken\n"));
	free(text);
	kms_config_done(&c);
}

static void test_secret_options_are_locked(void **state)
{
	struct kms_config c = {};
	const struct secret *got;

	/* from the parser */
	load(&c);
	got = kms_config_get_secret(&c, "Token");
	assert_non_null(got);
	assert_int_equal(got->len, 3);
	assert_ptr_equal(kms_config_get(&c, "Token"), (const char *)got->buf);
	/* other settings are plain strings */
	assert_null(kms_config_get_secret(&c, "Endpoint"));
	assert_null(kms_config_get_secret(&c, "Nope"));
	/* from kms_config_set() */
	assert_int_equal(kms_config_set(&c, "Token", "other"), 0);
	got = kms_config_get_secret(&c, "Token");
	assert_non_null(got);
	assert_string_equal((const char *)got->buf, "other");
	assert_ptr_equal(kms_config_get(&c, "Token"), (const char *)got->buf);
	assert_int_equal(kms_config_unset(&c, "Token"), 0);
	assert_null(kms_config_get_secret(&c, "Token"));
	assert_int_equal(kms_config_set(&c, "Token", "again"), 0);
	assert_non_null(kms_config_get_secret(&c, "Token"));
	kms_config_done(&c);
}

static void test_parser_never_yields_cr(void **state)
{
	static const char crlf[] = "[KMS]\r\nProvider=valtest\r\nEndpoint=https://kms\r\n";
	static const char inner[] = "[KMS]\nProvider=valtest\nEndpoint=https://kms\rCaFile=/x\n";
	static const char inkey[] =
	    "[KMS]\nProvider=valtest\nEndpoint=https://kms\nDesc\rription=x\n";
	struct kms_config c = {};
	struct config_error e = {};

	/* CRLF line ends: the CR goes with the line end */
	assert_int_equal(kms_config_parse("v1", crlf, strlen(crlf), providers, &c, &e), 0);
	assert_string_equal(kms_config_get(&c, "Endpoint"), "https://kms");
	kms_config_done(&c);
	assert_int_equal(kms_config_parse("v1", inner, strlen(inner), providers, &c, &e), -EBADMSG);
	assert_int_equal(e.line, 3);
	assert_non_null(strstr(e.message, "carriage return"));
	assert_int_equal(kms_config_parse("v1", inkey, strlen(inkey), providers, &c, &e), -EBADMSG);
	assert_int_equal(e.line, 4);
	assert_non_null(strstr(e.message, "carriage return"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_set_refuses_line_breaks),
	    cmocka_unit_test(test_set_secret),
	    cmocka_unit_test(test_secret_options_are_locked),
	    cmocka_unit_test(test_parser_never_yields_cr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
