/* SPDX-License-Identifier: MIT */
/*
 * The -v observer of transport/http.c (http_client_options.observer) against the local TLS server
 * tests/fixtures/https_echo.py: one event per attempt with method, URL without its query, status,
 * request id, attempt number and the backoff before the next attempt; transport failures carry
 * their message; a reused connection is flagged.
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
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/http_msg.h"
#include "codec/kms_error.h"
#include "transport/http.h"
#include "util/cleanup.h"

extern char **environ;

static char dir[] = "/tmp/kmscrypt-httpobs-test-XXXXXX";
static char ca[256];
static pid_t pid;
static int port;

struct seen {
	char method[16], url[256], request_id[96], message[256];
	int status, error;
	unsigned attempt, backoff_ms, latency_ms;
	bool retrying;
	bool reused;
};
static struct seen events[8];
static size_t n_events;

static void observe(const struct http_event *ev, void *userdata)
{
	struct seen *s;

	assert_ptr_equal(userdata, &n_events);
	assert_true(n_events < ARRAY_SIZE(events));
	s = &events[n_events++];
	snprintf(s->method, sizeof(s->method), "%s", ev->method);
	snprintf(s->url, sizeof(s->url), "%s", ev->url);
	snprintf(s->request_id, sizeof(s->request_id), "%s", ev->request_id ? ev->request_id : "");
	snprintf(s->message, sizeof(s->message), "%s", ev->message ? ev->message : "(null)");
	s->status = ev->status;
	s->error = ev->error;
	s->attempt = ev->attempt;
	s->backoff_ms = ev->backoff_ms;
	s->retrying = ev->retrying;
	s->latency_ms = ev->latency_ms;
	s->reused = ev->reused;
}

static int group_setup(void **state)
{
	char cmd[512], portfile[300], certf[300], keyf[300];
	char *argv[] = {"/usr/bin/python3", KMSCRYPT_SOURCE_DIR "/tests/fixtures/https_echo.py",
			"--portfile", portfile, "--cert", certf, "--key", keyf, NULL};

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
	snprintf(certf, sizeof(certf), "%s/server.pem", dir);
	snprintf(keyf, sizeof(keyf), "%s/server.key", dir);
	if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0)
		return -1;
	for (int i = 0; i < 200; i++) {
		FILE *f = fopen(portfile, "r");
		if (f) {
			int ok = fscanf(f, "%d", &port) == 1;
			fclose(f);
			if (ok)
				return 0;
		}
		usleep(50 * 1000);
	}
	return -1;
}

static int group_teardown(void **state)
{
	char cmd[512];

	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct http_client *client(void)
{
	struct http_client_options o = {
		.ca_file = ca,
		.request_timeout_ms = 5000,
		.max_connections = 1,
		.observer = observe,
		.observer_data = &n_events,
	};
	struct http_client *c;

	assert_int_equal(http_client_new(&o, &c), 0);
	n_events = 0;
	memset(events, 0, sizeof(events));
	return c;
}

static void req_init(struct http_request *req, const char *method, const char *path)
{
	char url[256];

	snprintf(url, sizeof(url), "https://127.0.0.1:%d%s", port, path);
	assert_int_equal(http_request_init(req, method, url), 0);
}

/* 503, then 200: two events, the first with the wait before the second attempt. */
static void test_retry_reported(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client();
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	char path[128], url[256];

	snprintf(path, sizeof(path), "/flaky503/obs%d/1?X-Amz-Signature=secret", getpid());
	req_init(&req, "POST", path);
	assert_int_equal(http_request_header_add(&req, "Authorization", "Bearer tok-secret"), 0);
	assert_int_equal(http_send_retry(c, &req, NULL, &resp, NULL), 0);
	assert_int_equal(resp.status, 200);

	assert_int_equal(n_events, 2);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/flaky503/obs%d/1", port, getpid());
	for (size_t i = 0; i < 2; i++) {
		assert_string_equal(events[i].method, "POST");
		assert_string_equal(events[i].url, url); /* no query */
		assert_int_equal(events[i].error, 0);
		assert_string_equal(events[i].message, "");
		assert_int_equal(events[i].attempt, i + 1);
		assert_true(events[i].latency_ms < 5000);
	}
	assert_int_equal(events[0].status, 503);
	assert_string_equal(events[0].request_id, "req-503");
	assert_true(events[0].retrying); /* full jitter may make the wait itself 0 */
	assert_in_range(events[0].backoff_ms, 0, 30000);
	assert_false(events[0].reused);
	assert_int_equal(events[1].status, 200);
	assert_string_equal(events[1].request_id, "req-200");
	assert_false(events[1].retrying);
	assert_int_equal(events[1].backoff_ms, 0);
	assert_true(events[1].reused); /* same connection, kept alive */
}

/* A 4xx answer is not retried: one event, no backoff. */
static void test_final_answer(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client();
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};

	req_init(&req, "GET", "/status/403");
	assert_int_equal(http_send_retry(c, &req, NULL, &resp, NULL), 0);
	assert_int_equal(n_events, 1);
	assert_string_equal(events[0].method, "GET");
	assert_int_equal(events[0].status, 403);
	assert_int_equal(events[0].attempt, 1);
	assert_false(events[0].retrying);
	assert_int_equal(events[0].backoff_ms, 0);
	http_response_done(&resp);

	/* http_send(): one attempt, reported the same way */
	assert_int_equal(http_send(c, &req, &resp, NULL), 0);
	assert_int_equal(n_events, 2);
	assert_int_equal(events[1].status, 403);
	assert_int_equal(events[1].attempt, 1);
	assert_true(events[1].reused);
}

/* Connection refused: status 0, the transport error and its message; every attempt but the last
 * announces its backoff. */
static void test_transport_failure(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client();
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	const struct http_retry twice = {.max_attempts = 2};

	assert_int_equal(http_request_init(&req, "POST", "https://127.0.0.1:1/v1/transit/decrypt/k"),
			 0);
	assert_int_equal(http_send_retry(c, &req, &twice, &resp, NULL), -EAGAIN);
	assert_int_equal(n_events, 2);
	for (size_t i = 0; i < 2; i++) {
		assert_string_equal(events[i].url, "https://127.0.0.1:1/v1/transit/decrypt/k");
		assert_int_equal(events[i].status, 0);
		assert_int_equal(events[i].error, -EAGAIN);
		assert_non_null(strstr(events[i].message, "could not connect to '127.0.0.1:1'"));
		assert_string_equal(events[i].request_id, "");
		assert_int_equal(events[i].attempt, i + 1);
	}
	assert_true(events[0].retrying);
	assert_false(events[1].retrying);
	assert_int_equal(events[1].backoff_ms, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_reported),
		cmocka_unit_test(test_final_answer),
		cmocka_unit_test(test_transport_failure),
	};

	unsetenv("HTTPS_PROXY");
	unsetenv("https_proxy");
	unsetenv("ALL_PROXY");
	unsetenv("all_proxy");
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
