/* SPDX-License-Identifier: MIT */
/*
 * The retry budget of http_send_retry() for a rate limit (issue 13, the boot storm): a throttled
 * reply (HTTP 429) gets policy->max_attempts_throttled attempts, a failure (503) only
 * max_attempts, so that a KMS that is down still fails fast while a fleet booting against a
 * quota keeps trying within its deadline.  Against tests/fixtures/https_echo.py on 127.0.0.1
 * (/flaky/ID/N: N replies 429 then 200; /flaky503/ID/N likewise with 503).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/http_msg.h"
#include "kms/provider.h"
#include "transport/http.h"
#include "util/cleanup.h"

extern char **environ;

static char dir[] = "/tmp/kmscrypt-throttle-test-XXXXXX";
static char ca[256];
static pid_t pid;
static int port;

static int group_setup(void **state)
{
	char cmd[512], portfile[300], cert[300], key[300];
	char *argv[] = {"/usr/bin/python3", KMSCRYPT_SOURCE_DIR "/tests/fixtures/https_echo.py",
			"--portfile", portfile, "--cert", cert, "--key", key, NULL};

	(void)state;
	setenv("NO_PROXY", "127.0.0.1,localhost", 1);
	setenv("no_proxy", "127.0.0.1,localhost", 1);
	if (!mkdtemp(dir))
		return -1;
	snprintf(cmd, sizeof(cmd), "bash %s/tests/fakes/mkcerts.sh %s >/dev/null 2>&1",
		 KMSCRYPT_SOURCE_DIR, dir);
	if (system(cmd) != 0)
		return -1;
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(portfile, sizeof(portfile), "%s/port", dir);
	snprintf(cert, sizeof(cert), "%s/server.pem", dir);
	snprintf(key, sizeof(key), "%s/server.key", dir);
	if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0)
		return -1;
	for (int i = 0; i < 200 && !port; i++) {
		FILE *f = fopen(portfile, "r");

		if (f) {
			if (fscanf(f, "%d", &port) != 1)
				port = 0;
			fclose(f);
		}
		if (!port)
			usleep(50 * 1000);
	}
	return port ? 0 : -1;
}

static int group_teardown(void **state)
{
	char cmd[512];

	(void)state;
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Send @path with @policy on a fresh client: the final status and the requests made. */
static int send_counted(const char *path, const struct http_retry *policy, uint64_t *ret_requests)
{
	struct http_client_options o = {.ca_file = ca, .request_timeout_ms = 5000};
	_cleanup_(http_client_freep) struct http_client *c = NULL;
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct kms_error err = {};
	struct http_stats st;
	char url[160];

	assert_int_equal(http_client_new(&o, &c), 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d%s", port, path);
	assert_int_equal(http_request_init(&req, "GET", url), 0);
	assert_int_equal(http_send_retry(c, &req, policy, &resp, &err), 0);
	http_client_get_stats(c, &st);
	*ret_requests = st.requests;
	return resp.status;
}

static const struct http_retry storm_policy = {
    .max_attempts = 3,
    .deadline_ms = 30000,
    .max_attempts_throttled = 10,
};

static void test_throttled_gets_more_attempts(void **state)
{
	uint64_t n;
	char path[64];

	(void)state;
	/* four 429s, then 200: five attempts, beyond the 3 a failure gets */
	snprintf(path, sizeof(path), "/flaky/storm%d/4", (int)getpid());
	assert_int_equal(send_counted(path, &storm_policy, &n), 200);
	assert_int_equal(n, 5);
}

static void test_throttled_budget_is_bounded(void **state)
{
	uint64_t n;
	char path[64];

	(void)state;
	/* more 429s than the budget: exactly max_attempts_throttled requests, the 429 returned */
	snprintf(path, sizeof(path), "/flaky/bound%d/12", (int)getpid());
	assert_int_equal(send_counted(path, &(struct http_retry){.max_attempts = 2,
								 .deadline_ms = 30000,
								 .max_attempts_throttled = 4},
				      &n),
			 429);
	assert_int_equal(n, 4);
}

static void test_failure_keeps_three_attempts(void **state)
{
	uint64_t n;
	char path[64];

	(void)state;
	/* 503 is a failure, not a rate limit: 3 attempts, then the 503 for the codec */
	snprintf(path, sizeof(path), "/flaky503/down%d/4", (int)getpid());
	assert_int_equal(send_counted(path, &storm_policy, &n), 503);
	assert_int_equal(n, 3);
}

static void test_without_throttled_budget(void **state)
{
	uint64_t n;
	char path[64];

	(void)state;
	/* no max_attempts_throttled (every other caller): 429 gets max_attempts, as before */
	snprintf(path, sizeof(path), "/flaky/plain%d/4", (int)getpid());
	assert_int_equal(send_counted(path, &(struct http_retry){.max_attempts = 3}, &n), 429);
	assert_int_equal(n, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_throttled_gets_more_attempts),
	    cmocka_unit_test(test_throttled_budget_is_bounded),
	    cmocka_unit_test(test_failure_keeps_three_attempts),
	    cmocka_unit_test(test_without_throttled_budget),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
