/* SPDX-License-Identifier: MIT */
/*
 * The resume jobs of the activation workers (volume/pool.c, volume_pool_resume(): restore --all)
 * without device-mapper: every job sent from many threads comes back with what volume_resume()
 * says in this process for the same arguments; a NULL pool resumes in the process; a worker that
 * died is reported as -ECHILD for the job it was given (only that one), and once every worker is
 * dead the process does the job itself.  The kernel side (real resumes, overlap, keyrings) is
 * tests/vm/test_parallel_restore.sh.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
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

#define JOBS 12
#define NAME "kmscrypt-pool-resume-test-nonexistent"

struct job {
	struct volume_pool *p;
	const struct secret *s;
	int r;
};

static void *run_job(void *arg)
{
	struct job *j = arg;

	j->r = volume_pool_resume(j->p, NAME, 0, j->s);
	return NULL;
}

static void test_resume_jobs_from_threads(void **state)
{
	struct volume_pool *p = NULL;
	struct secret *s = NULL;
	struct job jobs[JOBS];
	pthread_t tids[JOBS];
	int want;

	(void)state;
	assert_int_equal(secret_from("0123456789abcdef0123456789abcdef", 32, &s), 0);
	want = volume_resume(NAME, 0, s); /* no such mapping (or no device-mapper) */
	assert_true(want < 0);
	assert_int_not_equal(want, -ECHILD);
	assert_int_equal(volume_pool_resume(NULL, NAME, 0, s), want);

	assert_int_equal(volume_pool_start(3, &p), 0);
	for (int i = 0; i < JOBS; i++) {
		jobs[i] = (struct job){.p = p, .s = s, .r = 1};
		assert_int_equal(pthread_create(&tids[i], NULL, run_job, &jobs[i]), 0);
	}
	for (int i = 0; i < JOBS; i++) {
		assert_int_equal(pthread_join(tids[i], NULL), 0);
		assert_int_equal(jobs[i].r, want);
	}
	/* bad arguments never reach a worker */
	s->len = 0;
	assert_int_equal(volume_pool_resume(p, NAME, 0, s), -EINVAL);
	s->len = 32;
	volume_pool_stop(p);
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	secret_free(s);
}

/* The PIDs of this thread's children (the workers), from /proc. */
static size_t children(pid_t *pids, size_t max)
{
	char path[64];
	size_t n = 0;
	FILE *f;
	long v;

	snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)gettid());
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (n < max && fscanf(f, "%ld", &v) == 1)
		pids[n++] = (pid_t)v;
	fclose(f);
	return n;
}

static void test_dead_worker(void **state)
{
	struct volume_pool *p = NULL;
	struct secret *s = NULL;
	pid_t pids[8];
	siginfo_t si;
	size_t n;
	int want;

	(void)state;
	assert_int_equal(secret_from("0123456789abcdef0123456789abcdef", 32, &s), 0);
	want = volume_resume(NAME, 0, s);
	assert_int_equal(volume_pool_start(2, &p), 0);
	n = children(pids, 8);
	if (n == 0) {
		volume_pool_stop(p);
		secret_free(s);
		skip(); /* no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN) */
	}
	assert_int_equal(n, 2);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(kill(pids[i], SIGKILL), 0);
		/* dead (not reaped: volume_pool_stop() does that) */
		assert_int_equal(waitid(P_PID, (id_t)pids[i], &si, WEXITED | WNOWAIT), 0);
	}
	/* each job goes to the first idle live worker: each dead one fails its own job once */
	assert_int_equal(volume_pool_resume(p, NAME, 0, s), -ECHILD);
	assert_int_equal(volume_pool_resume(p, NAME, 0, s), -ECHILD);
	/* no worker left: this process does it */
	assert_int_equal(volume_pool_resume(p, NAME, 0, s), want);
	volume_pool_stop(p);
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	secret_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_resume_jobs_from_threads),
	    cmocka_unit_test(test_dead_worker),
	};
	signal(SIGPIPE, SIG_DFL); /* the pool must survive a dead worker's pipe by itself */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
