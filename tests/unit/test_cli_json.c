/* SPDX-License-Identifier: MIT */
/*
 * --json pieces (issue 12, item 5; agent/cli/json_out.c): configuration keys become snake_case
 * mechanically, acronyms included (kms show); every failing exit status has a hint; a volume
 * item carries error and hint exactly when it failed; the recovery key is placed where its
 * placeholder stood; the first error logged is kept for the error object, also when the log
 * level kept it off stderr.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "cli/cli.h"
#include "util/log.h"
#include "util/secret.h"

static void snake(const char *in, const char *want)
{
	char buf[64];

	cli_snake_case(in, buf, sizeof(buf));
	assert_string_equal(buf, want);
}

static void test_snake_case(void **state)
{
	(void)state;
	snake("KeyFile", "key_file");
	snake("Token", "token");
	snake("SecretAccessKey", "secret_access_key");
	snake("AccessKeyId", "access_key_id");
	snake("KeyArn", "key_arn");
	snake("CAFile", "ca_file");
	snake("CaFile", "ca_file");
	snake("KeyARN", "key_arn");
	snake("ImdsEndpoint", "imds_endpoint");
	snake("WatchInterval", "watch_interval");
	snake("Sha256Sum", "sha256_sum");
	snake("Key-Name", "key_name");
	snake("already_snake", "already_snake");
	{
		char small[6];
		cli_snake_case("SecretAccessKey", small, sizeof(small));
		assert_int_equal(strlen(small), 4); /* truncated, always terminated */
	}
}

static void test_exit_hints(void **state)
{
	(void)state;
	assert_null(cli_exit_hint(0));
	for (int code = 1; code <= 8; code++) {
		assert_non_null(cli_exit_hint(code));
		assert_true(strlen(cli_exit_hint(code)) > 10);
	}
	assert_non_null(cli_exit_hint(99));
}

static void test_volume_item(void **state)
{
	struct json_object *o, *v;

	(void)state;
	o = cli_json_volume("/dev/vdb", "", 0, "ignored");
	assert_true(json_object_object_get_ex(o, "uuid", &v));
	assert_null(v); /* JSON null */
	assert_false(json_object_object_get_ex(o, "error", NULL));
	assert_false(json_object_object_get_ex(o, "hint", NULL));
	json_object_put(o);

	o = cli_json_volume("/dev/vdb", "6f1c0000-0000-4000-8000-000000000000", 3, "denied.");
	assert_true(json_object_object_get_ex(o, "exit", &v));
	assert_int_equal(json_object_get_int(v), 3);
	assert_true(json_object_object_get_ex(o, "error", &v));
	assert_string_equal(json_object_get_string(v), "denied.");
	assert_true(json_object_object_get_ex(o, "hint", &v));
	assert_string_equal(json_object_get_string(v), cli_exit_hint(3));
	json_object_put(o);

	/* no message at all: still an error member that names the exit status */
	o = json_object_new_object();
	cli_json_add_outcome(o, 6, "");
	assert_true(json_object_object_get_ex(o, "error", &v));
	assert_non_null(strstr(json_object_get_string(v), "not-found"));
	json_object_put(o);
}

static void test_secret_placed(void **state)
{
	static const char key[] = "cbdefghi-jklnrtuv";
	struct secret *s;
	struct json_object *o = json_object_new_object(), *it = json_object_new_object();
	char out[512] = "";
	FILE *f = tmpfile();
	int saved = dup(STDOUT_FILENO);

	(void)state;
	assert_non_null(f);
	assert_int_equal(secret_new(sizeof(key) - 1, &s), 0);
	memcpy(s->buf, key, sizeof(key) - 1);
	s->len = sizeof(key) - 1;
	json_object_object_add(it, "device", json_object_new_string("@recovery_key@x"));
	json_object_object_add(it, "recovery_key", json_object_new_string("@recovery_key@"));
	json_object_object_add(o, "item", it);

	fflush(stdout);
	dup2(fileno(f), STDOUT_FILENO);
	cli_print_json_secret(o, "@recovery_key@", s);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	rewind(f);
	assert_true(fread(out, 1, sizeof(out) - 1, f) > 0);
	fclose(f);
	secret_free(s);

	/* only the member whose whole value is the placeholder is replaced */
	assert_true(cli_json_printed());
	assert_non_null(strstr(out, "\"recovery_key\": \"cbdefghi-jklnrtuv\""));
	assert_non_null(strstr(out, "\"device\": \"@recovery_key@x\""));
	struct json_object *back = json_tokener_parse(out);
	assert_non_null(back);
	json_object_put(back);
}

static void test_first_error_kept(void **state)
{
	int saved = log_max_level;
	unsigned n = log_error_count();

	(void)state;
	log_max_level = LOG_CRIT; /* errors kept off stderr */
	log_error("first %d", 1);
	log_error("second");
	log_max_level = saved;
	assert_int_equal(log_error_count(), n + 2);
	assert_string_equal(log_first_error(), "first 1");
	assert_string_equal(log_last_error(), "second");
	log_warning("a warning is no error");
	assert_int_equal(log_error_count(), n + 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_snake_case),	     cmocka_unit_test(test_exit_hints),
	    cmocka_unit_test(test_volume_item),	     cmocka_unit_test(test_secret_placed),
	    cmocka_unit_test(test_first_error_kept),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
