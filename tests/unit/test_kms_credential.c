/* SPDX-License-Identifier: MIT */
/* Secret settings by systemd credential reference: "<X>Credential=NAME" in a KMS configuration
 * (config/kms_config.c) and its resolution from $CREDENTIALS_DIRECTORY (cli/common.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/cli.h"
#include "config/kms_config.h"

/* A provider with a required secret option, an optional one and a plain one. */
static const struct kms_option test_options[] = {
	{"Endpoint", "endpoint", KMS_OPT_REQUIRED, "endpoint"},
	{"SecretAccessKey", "secret-access-key", KMS_OPT_SECRET | KMS_OPT_REQUIRED, "secret"},
	{"SessionToken", "session-token", KMS_OPT_SECRET, "token"},
	{}};
static const struct kms_provider test_provider = {
	.name = "credtest", .description = "test", .options = test_options};
static const struct kms_provider *const providers[] = {&test_provider, NULL};

static int parse(const char *text, struct kms_config *c, struct config_error *e)
{
	return kms_config_parse("c1", text, strlen(text), providers, c, e);
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

static void test_credential_option(void **state)
{
	assert_ptr_equal(kms_config_credential_option(&test_provider, "SecretAccessKeyCredential"),
			 &test_options[1]);
	assert_ptr_equal(kms_config_credential_option(&test_provider, "SessionTokenCredential"),
			 &test_options[2]);
	/* only secret options have a credential form */
	assert_null(kms_config_credential_option(&test_provider, "EndpointCredential"));
	assert_null(kms_config_credential_option(&test_provider, "Credential"));
	assert_null(kms_config_credential_option(&test_provider, "SecretAccessKey"));
	assert_null(kms_config_credential_option(&test_provider, "SecretAccessKeyCredentialX"));
	assert_true(kms_config_credential_name_valid("aws-secret"));
	assert_true(kms_config_credential_name_valid("kmscrypt.aws_sk"));
	assert_false(kms_config_credential_name_valid(""));
	assert_false(kms_config_credential_name_valid("."));
	assert_false(kms_config_credential_name_valid(".."));
	assert_false(kms_config_credential_name_valid("a/b"));
	assert_false(kms_config_credential_name_valid("a\tb"));
}

static void test_parse_format(void **state)
{
	struct kms_config c = {};
	struct config_error e = {};
	char *text = NULL;

	/* the credential satisfies the required secret option */
	assert_int_equal(parse("[KMS]\nProvider=credtest\nEndpoint=https://x\n"
			       "SecretAccessKeyCredential=aws-sk\n",
			       &c, &e),
			 0);
	assert_string_equal(kms_config_get(&c, "SecretAccessKeyCredential"), "aws-sk");
	assert_null(kms_config_get(&c, "SecretAccessKey"));
	/* once resolved, the secret is never written back: only the reference is */
	assert_int_equal(kms_config_set(&c, "SecretAccessKey", "s3cr3t"), 0);
	assert_int_equal(kms_config_format(&c, &text), 0);
	assert_non_null(strstr(text, "\nSecretAccessKeyCredential=aws-sk\n"));
	assert_null(strstr(text, "s3cr3t"));
	assert_null(strstr(text, "SecretAccessKey="));
	free(text);
	/* unset: the inline form comes back when the reference is removed */
	assert_int_equal(kms_config_unset(&c, "SecretAccessKeyCredential"), 0);
	assert_null(kms_config_get(&c, "SecretAccessKeyCredential"));
	assert_int_equal(kms_config_unset(&c, "NotSet"), 0);
	assert_int_equal(kms_config_format(&c, &text), 0);
	assert_non_null(strstr(text, "\nSecretAccessKey=s3cr3t\n"));
	free(text);
	kms_config_done(&c);
}

static void test_parse_errors(void **state)
{
	expect_error("[KMS]\nProvider=credtest\nEndpoint=e\nSecretAccessKey=a\n"
		     "SecretAccessKeyCredential=b\n",
		     0, "not both");
	expect_error("[KMS]\nProvider=credtest\nEndpoint=e\nSecretAccessKeyCredential=a/b\n", 4,
		     "not a valid credential name");
	expect_error("[KMS]\nProvider=credtest\nEndpoint=e\nSecretAccessKey=a\n"
		     "EndpointCredential=x\n",
		     5, "unknown setting");
	expect_error("[KMS]\nProvider=credtest\nEndpoint=e\nSessionTokenCredential=t\n", 0,
		     "SecretAccessKey= is required");
}

static char tmpdir[64];

static void write_file(const char *name, const char *data)
{
	char p[128];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	f = fopen(p, "w");
	assert_non_null(f);
	fputs(data, f);
	fclose(f);
}

static void load(struct kms_config *c, const char *extra)
{
	struct config_error e = {};
	char text[512];

	snprintf(text, sizeof(text), "[KMS]\nProvider=credtest\nEndpoint=e\n%s", extra);
	assert_int_equal(parse(text, c, &e), 0);
}

static void test_resolve(void **state)
{
	struct kms_config c = {};

	strcpy(tmpdir, "/tmp/kmscrypt-cred.XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	write_file("aws-sk", "s3cr3t\n"); /* one trailing newline is stripped */
	write_file("tok", "t0ken");
	write_file("two-lines", "a\nb\n");
	write_file("empty", "");

	/* no $CREDENTIALS_DIRECTORY: a clear error, nothing resolved */
	unsetenv("CREDENTIALS_DIRECTORY");
	load(&c, "SecretAccessKeyCredential=aws-sk\n");
	assert_int_equal(core_kms_resolve_credentials(&c), -ENOENT);
	assert_null(kms_config_get(&c, "SecretAccessKey"));
	kms_config_done(&c);

	setenv("CREDENTIALS_DIRECTORY", tmpdir, 1);
	load(&c, "SecretAccessKeyCredential=aws-sk\nSessionTokenCredential=tok\n");
	assert_int_equal(core_kms_resolve_credentials(&c), 0);
	assert_string_equal(kms_config_get(&c, "SecretAccessKey"), "s3cr3t");
	assert_string_equal(kms_config_get(&c, "SessionToken"), "t0ken");
	kms_config_done(&c);

	/* inline secrets are left alone */
	load(&c, "SecretAccessKey=inline\n");
	assert_int_equal(core_kms_resolve_credentials(&c), 0);
	assert_string_equal(kms_config_get(&c, "SecretAccessKey"), "inline");
	kms_config_done(&c);

	load(&c, "SecretAccessKeyCredential=missing\n");
	assert_int_equal(core_kms_resolve_credentials(&c), -ENOENT);
	kms_config_done(&c);
	load(&c, "SecretAccessKeyCredential=two-lines\n");
	assert_int_equal(core_kms_resolve_credentials(&c), -EBADMSG);
	kms_config_done(&c);
	load(&c, "SecretAccessKeyCredential=empty\n");
	assert_int_equal(core_kms_resolve_credentials(&c), -EBADMSG);
	kms_config_done(&c);

	/* a relative $CREDENTIALS_DIRECTORY is not trusted */
	setenv("CREDENTIALS_DIRECTORY", "relative", 1);
	load(&c, "SecretAccessKeyCredential=aws-sk\n");
	assert_int_equal(core_kms_resolve_credentials(&c), -ENOENT);
	kms_config_done(&c);
	unsetenv("CREDENTIALS_DIRECTORY");

	{
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		assert_int_equal(system(cmd), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_credential_option),
		cmocka_unit_test(test_parse_format),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_resolve),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
