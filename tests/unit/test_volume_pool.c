/* SPDX-License-Identifier: MIT */
/*
 * The activation workers (volume/pool.c) without device-mapper: every job sent from many threads
 * comes back with what volume_activate() says in this process for the same arguments, each worker
 * is a child process that is gone (reaped) after volume_pool_stop(), and a NULL pool activates in
 * the process.  Also the kmscrypt token count of volume_read_header() (the unlock reads the token
 * list a second time only when it is not 1).  The kernel side (real activations, overlap, keyrings) is
 * tests/vm/test_parallel_unlock.sh.
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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/secret.h"
#include "volume/volume.h"
#include "test_volume_util.h"

#define JOBS 12

struct job {
	struct volume_pool *p;
	char device[64];
	const struct secret *s;
	int r;
};

static void *run_job(void *arg)
{
	struct job *j = arg;

	j->r = volume_pool_activate(j->p, j->device, "kmscrypt-pool-test", 0, j->s);
	return NULL;
}

static void test_jobs_from_threads(void **state)
{
	struct volume_pool *p = NULL;
	struct secret *s = NULL;
	struct job jobs[JOBS];
	pthread_t tids[JOBS];
	int want;

	(void)state;
	assert_int_equal(secret_from("0123456789abcdef0123456789abcdef", 32, &s), 0);
	/* what this process says for a device that does not exist */
	want = volume_activate("/nonexistent/kmscrypt-pool-test", "kmscrypt-pool-test", 0, s);
	assert_true(want < 0);
	assert_int_equal(volume_pool_activate(NULL, "/nonexistent/kmscrypt-pool-test",
					      "kmscrypt-pool-test", 0, s),
			 want);

	assert_int_equal(volume_pool_start(3, &p), 0);
	assert_non_null(p);
	for (int i = 0; i < JOBS; i++) {
		jobs[i] = (struct job){.p = p, .s = s, .r = 1};
		snprintf(jobs[i].device, sizeof(jobs[i].device), "/nonexistent/kmscrypt-pool-test");
		assert_int_equal(pthread_create(&tids[i], NULL, run_job, &jobs[i]), 0);
	}
	for (int i = 0; i < JOBS; i++) {
		assert_int_equal(pthread_join(tids[i], NULL), 0);
		assert_int_equal(jobs[i].r, want);
	}
	/* bad arguments never reach a worker */
	s->len = 0;
	assert_int_equal(volume_pool_activate(p, "/dev/null", "x", 0, s), -EINVAL);
	s->len = 32;
	volume_pool_stop(p);
	/* every worker reaped: no child left */
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	secret_free(s);
}

static void test_default_size(void **state)
{
	(void)state;
	setenv("KMSCRYPT_TEST_WORKERS", "5", 1);
	assert_int_equal(volume_pool_default_size(), 5);
	setenv("KMSCRYPT_TEST_WORKERS", "0", 1); /* out of range: ignored */
	assert_true(volume_pool_default_size() >= 1);
	unsetenv("KMSCRYPT_TEST_WORKERS");
	assert_true(volume_pool_default_size() >= 1);
	assert_int_equal(volume_pool_start(0, &(struct volume_pool *){NULL}), -EINVAL);
}

static void test_header_counts_tokens(void **state)
{
	struct secret *s = test_secret_random();
	struct volume_header h = {};
	const char *img;
	struct volume_format_params p = {
	    .uuid = "0fd1f9c4-5a3e-4b7e-9c2d-1e2f3a4b5c6d",
	    .label = "data",
	    .keyslot = 0,
	    .secret = s,
	    .token_json = test_token_json(0),
	};
	int id;

	(void)state;
	test_dir_create();
	img = test_image("count.img", TEST_IMAGE_BYTES);
	assert_int_equal(volume_format(img, &p), 0);
	assert_int_equal(volume_read_header(img, &h), 0);
	assert_int_equal(h.kmscrypt_tokens, 1);
	volume_header_done(&h);
	/* a rotation's pending token, and a foreign one that does not count */
	assert_int_equal(volume_token_add(img, -1,
					  "{\"type\":\"kmscrypt-pending\",\"keyslots\":[]}", &id), 0);
	assert_int_equal(volume_token_add(img, -1, "{\"type\":\"other\",\"keyslots\":[]}", &id),
			 0);
	assert_int_equal(volume_read_header(img, &h), 0);
	assert_int_equal(h.kmscrypt_tokens, 2);
	volume_header_done(&h);
	secret_free(s);
	test_dir_remove();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_jobs_from_threads),
	    cmocka_unit_test(test_default_size),
	    cmocka_unit_test(test_header_counts_tokens),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
