/* SPDX-License-Identifier: MIT */
/*
 * The KMIP provider (agent/kms/kmip/kmip_provider.c) in one process against the real PyKMIP server:
 * what the CLI cannot show from outside.  Run by tests/integration/test_kmip.sh with
 *   KMIP_TEST_PORT=<port> KMIP_TEST_CERTS=<dir>  KMIP_TEST_RESTART=<shell command restarting the
 *   server on the same port and database>
 * and skipped without them (a plain unit-test run).
 *   - 8 threads unwrap concurrently through one context (as `unlock --all` does), over its pool of
 *     connections;
 *   - after the server restarts, the same context reconnects and unwraps again.
 * test_kmip.sh counts the server's connections (the pool's, then one after the restart);
 * test_kmip_pool.sh checks that requests overlap.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/kms_config.h"
#include "kms/provider.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define N_VOL 8
#define ROUNDS 5

static const char *const uuids[N_VOL] = {
    "11111111-0000-4000-8000-000000000001", "11111111-0000-4000-8000-000000000002",
    "11111111-0000-4000-8000-000000000003", "11111111-0000-4000-8000-000000000004",
    "11111111-0000-4000-8000-000000000005", "11111111-0000-4000-8000-000000000006",
    "11111111-0000-4000-8000-000000000007", "11111111-0000-4000-8000-000000000008",
};

struct job {
	const struct kms_provider *p;
	void *ctx;
	const struct kms_wrapped *w;
	const struct secret *want;
	int i;
	int r;
};

static void *unwrap_thread(void *arg)
{
	struct job *j = arg;

	for (int k = 0; k < ROUNDS && j->r == 0; k++) {
		struct kms_aad aad = {.uuid = uuids[j->i], .keyslot = 1};
		struct secret *back = NULL;
		struct kms_error err = {};

		j->r = j->p->unwrap(j->ctx, &aad, j->w, &back, &err);
		if (j->r < 0)
			fprintf(stderr, "thread %d: %s: %s\n", j->i, err.code, err.message);
		else if (back->len != j->want->len ||
			 memcmp(back->buf, j->want->buf, back->len) != 0)
			j->r = -EBADMSG;
		secret_free(back);
	}
	return NULL;
}

static void run(const char *cipher)
{
	const char *port = getenv("KMIP_TEST_PORT"), *certs = getenv("KMIP_TEST_CERTS");
	const char *restart = getenv("KMIP_TEST_RESTART");
	const struct kms_provider *p = kms_provider_find("kmip");
	struct kms_runtime rt = {.timeout_ms = 20000};
	struct kms_config cfg = {};
	struct config_error cerr = {};
	struct kms_error err = {};
	struct kms_wrapped w[N_VOL] = {};
	struct secret *plain[N_VOL] = {};
	struct job jobs[N_VOL];
	pthread_t tids[N_VOL];
	_cleanup_free_ char *text = NULL;
	void *ctx = NULL;

	if (!port || !certs || !restart)
		skip();
	assert_non_null(p);
	assert_true(
	    asprintf(&text,
		     "[KMS]\nProvider=kmip\nEndpoint=127.0.0.1:%s\nClientCert=%s/client.pem\n"
		     "ClientKey=%s/client.key\nCAFile=%s/ca.pem\nCipher=%s\n",
		     port, certs, certs, certs, cipher) > 0);
	assert_int_equal(
	    kms_config_parse("live", text, strlen(text), kms_provider_all(), &cfg, &cerr), 0);
	assert_int_equal(p->provision(&cfg, &rt, &err), 0);
	assert_non_null(kms_config_get(&cfg, "KeyId"));
	assert_string_equal(kms_config_get(&cfg, "Mode"), "server");
	assert_string_equal(kms_config_get(&cfg, "Cipher"), cipher);

	assert_int_equal(p->open(&cfg, &rt, &ctx, &err), 0);
	for (int i = 0; i < N_VOL; i++) {
		struct kms_aad aad = {.uuid = uuids[i], .keyslot = 1};

		assert_int_equal(secret_random(32, &plain[i]), 0);
		assert_int_equal(p->wrap(ctx, &aad, plain[i], &w[i], &err), 0);
	}
	for (int i = 0; i < N_VOL; i++) {
		jobs[i] = (struct job){.p = p, .ctx = ctx, .w = &w[i], .want = plain[i], .i = i};
		assert_int_equal(pthread_create(&tids[i], NULL, unwrap_thread, &jobs[i]), 0);
	}
	for (int i = 0; i < N_VOL; i++) {
		pthread_join(tids[i], NULL);
		assert_int_equal(jobs[i].r, 0);
	}
	/* a blob opens only for its own volume */
	{
		struct kms_aad other = {.uuid = uuids[1], .keyslot = 1};
		struct secret *back = NULL;

		assert_int_equal(p->unwrap(ctx, &other, &w[0], &back, &err), -EACCES);
		assert_null(back);
		fprintf(stderr, "blob of volume 1 on volume 2 (%s): %s\n", cipher, err.message);
	}

	/* the server restarts (same port, same database): the broken connection is replaced */
	fprintf(stderr, "restarting the server: %s\n", restart);
	assert_int_equal(system(restart), 0);
	for (int i = 0; i < N_VOL; i++) {
		struct kms_aad aad = {.uuid = uuids[i], .keyslot = 1};
		struct secret *back = NULL;

		err = (struct kms_error){};
		assert_int_equal(p->unwrap(ctx, &aad, &w[i], &back, &err), 0);
		assert_memory_equal(back->buf, plain[i]->buf, 32);
		secret_free(back);
	}
	p->close(ctx);
	for (int i = 0; i < N_VOL; i++) {
		kms_wrapped_done(&w[i]);
		secret_free(plain[i]);
	}
	kms_config_done(&cfg);
}

static void test_concurrent_reconnect_gcm(void **state)
{
	run("gcm");
}

static void test_concurrent_reconnect_cbc(void **state)
{
	run("cbc");
}

int main(void)
{
	const char *only = getenv("KMIP_TEST_CIPHER");
	const struct CMUnitTest gcm[] = {cmocka_unit_test(test_concurrent_reconnect_gcm)};
	const struct CMUnitTest cbc[] = {cmocka_unit_test(test_concurrent_reconnect_cbc)};

	/* one cipher per run: the script counts connections around each restart */
	if (only && strcmp(only, "cbc") == 0)
		return cmocka_run_group_tests(cbc, NULL, NULL);
	return cmocka_run_group_tests(gcm, NULL, NULL);
}
