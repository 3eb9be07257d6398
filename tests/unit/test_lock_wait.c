/* SPDX-License-Identifier: MIT */
/*
 * core_lock() names the process it waits for: "Waiting for the lock ... held by PID N" once after
 * about a second, and the timeout error names that PID too (the holder found in /proc/locks).
 * Needs root (the state dir must be root's, util/safedir.h); skipped otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/core.h"
#include "state/state.h"

static void test_wait_and_timeout_name_the_holder(void **state)
{
	char dir[] = "/tmp/kmscrypt-lockwait-XXXXXX", lock[128], log[128], want[256];
	char buf[4096] = "";
	struct core_ctx c = {.lock_timeout_sec = 2};
	int p[2], fd, saved, r;
	pid_t child;
	char ok;
	FILE *f;

	if (geteuid() != 0)
		skip();
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0700), 0);
	snprintf(lock, sizeof(lock), "%s/lock", dir);
	snprintf(log, sizeof(log), "%s/stderr", dir);
	c.state_dir = dir;
	assert_int_equal(pipe(p), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		int l = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (l < 0 || flock(l, LOCK_EX) < 0)
			_exit(1);
		(void)!write(p[1], "x", 1);
		pause();
		_exit(0);
	}
	close(p[1]);
	assert_int_equal(read(p[0], &ok, 1), 1);
	close(p[0]);

	fflush(stderr);
	saved = dup(STDERR_FILENO);
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0 && saved >= 0);
	dup2(fd, STDERR_FILENO);
	close(fd);
	r = core_lock(&c);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	kill(child, SIGTERM);
	waitpid(child, NULL, 0);

	f = fopen(log, "r");
	assert_non_null(f);
	buf[fread(buf, 1, sizeof(buf) - 1, f)] = 0;
	fclose(f);
	assert_int_equal(r, -EBUSY);
	snprintf(want, sizeof(want), "Waiting for the lock '%s' held by PID %d", lock, (int)child);
	assert_non_null(strstr(buf, want));
	/* said once, not every tenth of a second */
	assert_null(strstr(strstr(buf, want) + 1, "Waiting for the lock"));
	snprintf(want, sizeof(want), "PID %d has held '%s' for 2 s", (int)child, lock);
	assert_non_null(strstr(buf, want));

	/* the holder gone, the lock is taken at once and nothing is said */
	r = core_lock(&c);
	assert_true(r >= 0);
	close(r);
	snprintf(buf, sizeof(buf), "rm -rf '%s'", dir);
	assert_int_equal(system(buf), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wait_and_timeout_name_the_holder),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
