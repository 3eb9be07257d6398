/* SPDX-License-Identifier: MIT */
/*
 * Exit codes by cause, advice by cause (issue 8, item 11), at the provider/CLI seam: the local
 * provider (agent/kms/local/local_provider.c) marks a refused wrapped secret (token modified or
 * copied) as token_rejected, and core_hint_for_error() then points to the recovery key instead of
 * "restore access at the KMS"; a real denial keeps its advice; the new local-cause errnos map to
 * exit 1, not to "denied" (3).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/cli.h"
#include "config/kms_config.h"
#include "kmscrypt/exit.h"
#include "util/secret.h"

struct fixture {
	char dir[64];
	char key[96];
	struct kms_config cfg;
	void *ctx;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	uint8_t raw[32];
	struct kms_error err = {};
	FILE *k;
	char text[256];
	struct config_error cerr = {};

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/kmscrypt-hint-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->key, sizeof(f->key), "%s/lab.key", f->dir);
	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (uint8_t)(i * 7 + 1);
	k = fopen(f->key, "w");
	assert_non_null(k);
	assert_int_equal(fwrite(raw, 1, sizeof(raw), k), sizeof(raw));
	fclose(k);
	assert_int_equal(chmod(f->key, 0600), 0);
	snprintf(text, sizeof(text), "[KMS]\nProvider=local\nKeyFile=%s\n", f->key);
	assert_int_equal(
	    kms_config_parse("lab", text, strlen(text), kms_provider_all(), &f->cfg, &cerr), 0);
	assert_int_equal(f->cfg.provider->open(&f->cfg, NULL, &f->ctx, &err), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	f->cfg.provider->close(f->ctx);
	kms_config_done(&f->cfg);
	unlink(f->key);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void test_tampered_and_copied(void **state)
{
	struct fixture *f = *state;
	const struct kms_provider *p = f->cfg.provider;
	struct kms_aad a = {.uuid = "11111111-2222-4333-8444-555555555555", .keyslot = 0};
	struct kms_aad other = {.uuid = "99999999-2222-4333-8444-555555555555", .keyslot = 0};
	struct secret *plain = NULL, *back = NULL;
	struct kms_wrapped w = {};
	struct kms_error err = {};
	const char *hint;
	int r;

	assert_int_equal(secret_random(32, &plain), 0);
	assert_int_equal(p->wrap(f->ctx, &a, plain, &w, &err), 0);

	/* copied onto another volume: the AAD does not match */
	r = p->unwrap(f->ctx, &other, &w, &back, &err);
	assert_int_equal(r, -EACCES);
	assert_int_equal(cli_exit_code(r), KMSCRYPT_EXIT_DENIED); /* documented: exit 3 */
	assert_true(err.token_rejected);
	hint = core_hint_for_error(r, &err);
	assert_non_null(strstr(hint, "recovery key"));
	assert_non_null(strstr(hint, "does not belong to this volume or was modified"));
	assert_null(strstr(hint, "restore access"));

	/* one byte of the blob changed */
	err = (struct kms_error){};
	w.blob[w.blob_len / 2] ^= 1;
	r = p->unwrap(f->ctx, &a, &w, &back, &err);
	assert_int_equal(r, -EACCES);
	assert_true(err.token_rejected);
	assert_non_null(strstr(core_hint_for_error(r, &err), "recovery key"));
	w.blob[w.blob_len / 2] ^= 1;

	/* a token naming another key */
	err = (struct kms_error){};
	free(w.key_id);
	w.key_id = strdup("sha256:00000000000000000000000000000000");
	r = p->unwrap(f->ctx, &a, &w, &back, &err);
	assert_int_equal(r, -EACCES);
	assert_true(err.token_rejected);

	kms_wrapped_done(&w);
	secret_free(plain);
}

static void test_denial_keeps_its_advice(void **state)
{
	struct kms_error err = {};

	/* a denial that is about the key, not the token (e.g. a revoked key) */
	kms_error_set(&err, -EACCES, "DisabledException", "key is disabled");
	assert_false(err.token_rejected);
	assert_non_null(strstr(core_hint_for_error(-EACCES, &err), "restore access"));
	assert_string_equal(core_hint_for_error(-EACCES, NULL), core_hint_for(-EACCES));
}

static void test_local_causes_exit_1(void **state)
{
	/* a local file root may not read, an unsafe directory, a symbolic link: not "denied" */
	assert_int_equal(cli_exit_code(-ENOKEY), KMSCRYPT_EXIT_FAILURE);
	assert_int_equal(cli_exit_code(-ENOLINK), KMSCRYPT_EXIT_FAILURE);
	assert_int_equal(cli_exit_code(-ELOOP), KMSCRYPT_EXIT_FAILURE);
	assert_non_null(strstr(core_hint_for(-ENOKEY), "readable by root"));
	/* unchanged */
	assert_int_equal(cli_exit_code(-EACCES), KMSCRYPT_EXIT_DENIED);
	assert_int_equal(cli_exit_code(-EBADMSG), KMSCRYPT_EXIT_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_tampered_and_copied, setup, teardown),
	    cmocka_unit_test(test_denial_keeps_its_advice),
	    cmocka_unit_test(test_local_causes_exit_1),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
