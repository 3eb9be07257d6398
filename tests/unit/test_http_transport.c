/* SPDX-License-Identifier: MIT */
/*
 * transport/http.c against a local TLS server (tests/fixtures/https_echo.py, 127.0.0.1 only) with a
 * throw-away PKI from tests/fakes/mkcerts.sh: verification with the right CA and failure with another
 * one, https-only, connection reuse (sequential and concurrent), retries (429 then 200, 403 not
 * retried, Retry-After), the body cap, timeouts and the proxy environment.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/http_msg.h"
#include "kms/provider.h"
#include "transport/http.h"
#include "util/cleanup.h"
#include "util/secret.h"

extern char **environ;

static char dir[] = "/tmp/kmscrypt-http-test-XXXXXX";
static char ca[256], other_ca[256];
static pid_t pids[3];
static int port_good, port_other, port_plain;

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int start_server(const char *name, const char *cert, pid_t *ret_pid, int *ret_port)
{
	char portfile[300], certf[300], keyf[300];
	char *argv[10];
	int n = 0;

	snprintf(portfile, sizeof(portfile), "%s/%s.port", dir, name);
	argv[n++] = "/usr/bin/python3";
	argv[n++] = KMSCRYPT_SOURCE_DIR "/tests/fixtures/https_echo.py";
	argv[n++] = "--portfile";
	argv[n++] = portfile;
	if (cert) {
		snprintf(certf, sizeof(certf), "%s/%s.pem", dir, cert);
		snprintf(keyf, sizeof(keyf), "%s/%s.key", dir, cert);
		argv[n++] = "--cert";
		argv[n++] = certf;
		argv[n++] = "--key";
		argv[n++] = keyf;
	} else
		argv[n++] = "--plain";
	argv[n] = NULL;
	if (posix_spawn(ret_pid, argv[0], NULL, NULL, argv, environ) != 0)
		return -1;
	for (int i = 0; i < 200; i++) {
		FILE *f = fopen(portfile, "r");
		if (f) {
			int ok = fscanf(f, "%d", ret_port) == 1;
			fclose(f);
			if (ok)
				return 0;
		}
		usleep(50 * 1000);
	}
	return -1;
}

static int group_setup(void **state)
{
	char cmd[512];

	/* loopback only: never a proxy for 127.0.0.1, whatever the environment says */
	setenv("NO_PROXY", "127.0.0.1,localhost", 1);
	setenv("no_proxy", "127.0.0.1,localhost", 1);
	if (!mkdtemp(dir))
		return -1;
	snprintf(cmd, sizeof(cmd), "bash %s/tests/fakes/mkcerts.sh %s >/dev/null 2>&1", KMSCRYPT_SOURCE_DIR, dir);
	if (system(cmd) != 0)
		return -1;
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(other_ca, sizeof(other_ca), "%s/other-ca.pem", dir);
	if (start_server("good", "server", &pids[0], &port_good) < 0 ||
	    start_server("other", "other-server", &pids[1], &port_other) < 0 ||
	    start_server("plain", NULL, &pids[2], &port_plain) < 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[512];

	for (size_t i = 0; i < ARRAY_SIZE(pids); i++)
		if (pids[i] > 0) {
			kill(pids[i], SIGTERM);
			waitpid(pids[i], NULL, 0);
		}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct http_client *client(const char *ca_file, unsigned max_conn, size_t body_max)
{
	struct http_client_options o = {
		.ca_file = ca_file,
		.max_connections = max_conn,
		.body_max = body_max,
		.request_timeout_ms = 5000,
	};
	struct http_client *c;

	assert_int_equal(http_client_new(&o, &c), 0);
	return c;
}

static void req_init(struct http_request *req, const char *method, int port, const char *path)
{
	char url[128];

	snprintf(url, sizeof(url), "https://127.0.0.1:%d%s", port, path);
	assert_int_equal(http_request_init(req, method, url), 0);
}

static int server_connections(struct http_client *c)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct json_object *o, *v;
	int n;

	req_init(&req, "GET", port_good, "/stats");
	assert_int_equal(http_send(c, &req, &resp, NULL), 0);
	{
		char buf[256];

		snprintf(buf, sizeof(buf), "%.*s", (int)resp.body->len, (const char *)resp.body->buf);
		o = json_tokener_parse(buf);
	}
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "connections", &v));
	n = json_object_get_int(v);
	json_object_put(o);
	return n;
}

static void test_verify_ok_and_echo(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client(ca, 0, 0);
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct kms_error err = {};
	const char body[] = "{\"secret\":\"c2VjcmV0\"}";
	char *text;

	req_init(&req, "POST", port_good, "/echo?x=1");
	assert_int_equal(http_request_header_add(&req, "X-Amz-Target", "TrentService.Decrypt"), 0);
	assert_int_equal(http_request_header_add(&req, "X-Empty", ""), 0);
	assert_int_equal(http_request_set_body(&req, body, strlen(body)), 0);
	assert_int_equal(http_send(c, &req, &resp, &err), 0);
	assert_int_equal(resp.status, 200);
	assert_string_equal(http_response_header_get(&resp, "x-amzn-requestid"), "req-200");
	text = strndup((const char *)resp.body->buf, resp.body->len);
	assert_non_null(strstr(text, "\"method\": \"POST\""));
	assert_non_null(strstr(text, "\"path\": \"/echo?x=1\""));
	assert_non_null(strstr(text, "\"x-amz-target\": \"TrentService.Decrypt\""));
	assert_non_null(strstr(text, "\"x-empty\": \"\""));
	assert_non_null(strstr(text, "\"body_len\": 21"));
	assert_null(strstr(text, "\"expect\""));
	free(text);
	http_response_done(&resp);
	http_request_done(&req);

	req_init(&req, "PUT", port_good, "/echo");
	assert_int_equal(http_send(c, &req, &resp, &err), 0);
	text = strndup((const char *)resp.body->buf, resp.body->len);
	assert_non_null(strstr(text, "\"method\": \"PUT\""));
	free(text);
}

static void test_verify_fails_with_other_ca(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client(ca, 0, 0);
	_cleanup_(http_client_freep) struct http_client *c2 = client(other_ca, 0, 0);
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct kms_error err = {};

	/* server certificate from an unrelated CA */
	req_init(&req, "GET", port_other, "/echo");
	assert_int_equal(http_send(c, &req, &resp, &err), -EACCES);
	assert_non_null(strstr(err.message, "not trusted"));
	assert_non_null(strstr(err.message, "--ca-file"));
	assert_null(resp.body);
	http_request_done(&req);
	/* the client trusting only the other CA refuses the good server */
	req_init(&req, "GET", port_good, "/echo");
	assert_int_equal(http_send(c2, &req, &resp, &err), -EACCES);
	/* and a denied TLS error is never retried */
	assert_int_equal(http_send_retry(c2, &req, NULL, &resp, &err), -EACCES);
	{
		struct http_stats st;
		http_client_get_stats(c2, &st);
		assert_int_equal(st.retries, 0);
	}
}

static void test_https_only(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client(ca, 0, 0);
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct kms_error err = {};
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", port_plain);
	assert_int_equal(http_request_init(&req, "GET", url), 0);
	assert_int_equal(http_send(c, &req, &resp, &err), -EINVAL);
	assert_non_null(strstr(err.message, "https only"));
	/* flagged as a metadata request to a loopback/link-local address: allowed */
	req.flags |= HTTP_REQ_METADATA;
	assert_int_equal(http_send(c, &req, &resp, &err), 0);
	assert_int_equal(resp.status, 200);
	http_response_done(&resp);
	http_request_done(&req);
	/* the metadata flag does not open plain http to other hosts */
	assert_int_equal(http_request_init(&req, "GET", "http://kms.example.com/"), 0);
	req.flags |= HTTP_REQ_METADATA;
	assert_int_equal(http_send(c, &req, &resp, &err), -EINVAL);
	http_request_done(&req);
	/* no header injection */
	req_init(&req, "GET", port_good, "/echo");
	assert_int_equal(http_request_header_add(&req, "X-A", "a\r\nX-B: b"), 0);
	assert_int_equal(http_send(c, &req, &resp, &err), -EINVAL);
}

static void test_reuse_sequential(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client(ca, 0, 0);
	_cleanup_(http_client_freep) struct http_client *probe = client(ca, 0, 0);
	struct http_stats st;
	int before, after;

	before = server_connections(probe);
	for (int i = 0; i < 10; i++) {
		_cleanup_(http_request_done) struct http_request req = {};
		_cleanup_(http_response_done) struct http_response resp = {};

		req_init(&req, i % 2 ? "GET" : "POST", port_good, "/echo");
		if (i % 2 == 0)
			assert_int_equal(http_request_set_body(&req, "{}", 2), 0);
		assert_int_equal(http_send(c, &req, &resp, NULL), 0);
		assert_int_equal(resp.status, 200);
	}
	http_client_get_stats(c, &st);
	assert_int_equal(st.requests, 10);
	assert_int_equal(st.connects, 1);
	after = server_connections(probe);
	assert_int_equal(after - before, 1 + 0); /* probe reuses its own connection too */
}

struct thread_arg {
	struct http_client *c;
	int n;
	int failures;
};

static void *worker(void *p)
{
	struct thread_arg *a = p;

	for (int i = 0; i < a->n; i++) {
		struct http_request req = {};
		struct http_response resp = {};
		char url[128];

		snprintf(url, sizeof(url), "https://127.0.0.1:%d/slow/20", port_good);
		if (http_request_init(&req, "GET", url) < 0 || http_send(a->c, &req, &resp, NULL) < 0 ||
		    resp.status != 200)
			a->failures++;
		http_response_done(&resp);
		http_request_done(&req);
	}
	return NULL;
}

static void run_threads(struct http_client *c, int n_threads, int per_thread)
{
	pthread_t t[16];
	struct thread_arg a[16];

	for (int i = 0; i < n_threads; i++) {
		a[i] = (struct thread_arg){ .c = c, .n = per_thread };
		assert_int_equal(pthread_create(&t[i], NULL, worker, &a[i]), 0);
	}
	for (int i = 0; i < n_threads; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].failures, 0);
	}
}

static void test_reuse_concurrent(void **state)
{
	struct http_stats st;

	{
		/* one connection allowed: 8 threads x 5 requests share it */
		_cleanup_(http_client_freep) struct http_client *c = client(ca, 1, 0);

		run_threads(c, 8, 5);
		http_client_get_stats(c, &st);
		assert_int_equal(st.requests, 40);
		assert_int_equal(st.connects, 1);
	}
	{
		/* four allowed: at most four connections, then sequential requests reuse them */
		_cleanup_(http_client_freep) struct http_client *c = client(ca, 4, 0);
		uint64_t connects;

		run_threads(c, 8, 5);
		http_client_get_stats(c, &st);
		assert_int_equal(st.requests, 40);
		assert_in_range(st.connects, 1, 4);
		connects = st.connects;
		run_threads(c, 1, 10);
		http_client_get_stats(c, &st);
		assert_int_equal(st.connects, connects);
		print_message("concurrent: 40 requests over %" PRIu64 " connections\n", connects);
	}
}

static void test_retry_429_then_200(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client(ca, 0, 0);
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct http_stats st;
	struct kms_error err = {};
	char path[64];

	snprintf(path, sizeof(path), "/flaky/a%d/1", getpid());
	req_init(&req, "POST", port_good, path);
	assert_int_equal(http_send_retry(c, &req, NULL, &resp, &err), 0);
	assert_int_equal(resp.status, 200);
	http_client_get_stats(c, &st);
	assert_int_equal(st.requests, 2);
	assert_int_equal(st.retries, 1);
	http_response_done(&resp);
	http_request_done(&req);

	/* out of attempts: the last (transient) reply comes back for the codec to classify */
	snprintf(path, sizeof(path), "/flaky503/b%d/5", getpid());
	req_init(&req, "GET", port_good, path);
	assert_int_equal(http_send_retry(c, &req, &(struct http_retry){ .max_attempts = 3 }, &resp, &err), 0);
	assert_int_equal(resp.status, 503);
	http_client_get_stats(c, &st);
	assert_int_equal(st.requests, 5);
	assert_int_equal(st.retries, 3);
}

static void test_403_not_retried(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client(ca, 0, 0);
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct http_stats st;

	req_init(&req, "POST", port_good, "/status/403");
	assert_int_equal(http_send_retry(c, &req, NULL, &resp, NULL), 0);
	assert_int_equal(resp.status, 403);
	http_client_get_stats(c, &st);
	assert_int_equal(st.requests, 1);
	assert_int_equal(st.retries, 0);
}

static void test_retry_after(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client(ca, 0, 0);
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	char path[64];
	uint64_t t0;

	snprintf(path, sizeof(path), "/retry-after/c%d/1", getpid());
	req_init(&req, "GET", port_good, path);
	t0 = ms_now();
	assert_int_equal(http_send_retry(c, &req, NULL, &resp, NULL), 0);
	assert_int_equal(resp.status, 200);
	assert_in_range(ms_now() - t0, 1000, 5000);
}

static void test_body_cap(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client(ca, 0, 64 * 1024);
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct kms_error err = {};

	req_init(&req, "GET", port_good, "/big/70000");
	assert_int_equal(http_send(c, &req, &resp, &err), -EBADMSG);
	assert_non_null(strstr(err.message, "larger than 65536 bytes"));
	assert_null(resp.body);
	assert_int_equal(http_send_retry(c, &req, NULL, &resp, &err), -EBADMSG); /* not retried */
	http_request_done(&req);
	req_init(&req, "GET", port_good, "/big/60000");
	assert_int_equal(http_send(c, &req, &resp, &err), 0);
	assert_int_equal(resp.body->len, 60000);
	http_response_done(&resp);
	/* default cap: 1 MiB */
	{
		_cleanup_(http_client_freep) struct http_client *d = client(ca, 0, 0);

		http_request_done(&req);
		req_init(&req, "GET", port_good, "/big/1048577");
		assert_int_equal(http_send(d, &req, &resp, &err), -EBADMSG);
		http_request_done(&req);
		req_init(&req, "GET", port_good, "/big/1048576");
		assert_int_equal(http_send(d, &req, &resp, &err), 0);
		assert_int_equal(resp.body->len, 1048576);
	}
}

static void test_network_errors_and_deadline(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client(ca, 0, 0);
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct kms_error err = {};
	struct http_stats st;
	uint64_t t0;

	/* port 1 on loopback: connection refused -> transient, retried */
	assert_int_equal(http_request_init(&req, "GET", "https://127.0.0.1:1/"), 0);
	assert_int_equal(http_send(c, &req, &resp, &err), -EAGAIN);
	assert_non_null(strstr(err.message, "could not connect to '127.0.0.1:1'"));
	assert_int_equal(http_send_retry(c, &req, &(struct http_retry){ .max_attempts = 2 }, &resp, &err),
			 -EAGAIN);
	http_client_get_stats(c, &st);
	assert_int_equal(st.retries, 1);
	http_request_done(&req);

	/* a slow server and an overall deadline: -ETIMEDOUT well before the per-request timeout */
	req_init(&req, "GET", port_good, "/slow/3000");
	t0 = ms_now();
	assert_int_equal(http_send_retry(c, &req, &(struct http_retry){ .deadline_ms = 700 }, &resp, &err),
			 -ETIMEDOUT);
	assert_in_range(ms_now() - t0, 600, 2500);
	assert_non_null(strstr(err.message, "deadline reached"));
	/* per-request timeout */
	req.timeout_ms = 300;
	assert_int_equal(http_send(c, &req, &resp, &err), -EAGAIN);
	assert_non_null(strstr(err.message, "timed out"));
}

static void test_proxy_environment_honoured(void **state)
{
	_cleanup_(http_client_freep) struct http_client *c = client(ca, 0, 0);
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct kms_error err = {};

	/* a proxy that does not exist: the request must try it (and fail) ... */
	setenv("HTTPS_PROXY", "http://127.0.0.1:1", 1);
	setenv("https_proxy", "http://127.0.0.1:1", 1);
	unsetenv("NO_PROXY");
	unsetenv("no_proxy");
	req_init(&req, "GET", port_good, "/echo");
	assert_int_equal(http_send(c, &req, &resp, &err), -EAGAIN);
	/* ... unless NO_PROXY exempts the host */
	setenv("NO_PROXY", "127.0.0.1,localhost", 1);
	setenv("no_proxy", "127.0.0.1,localhost", 1);
	assert_int_equal(http_send(c, &req, &resp, &err), 0);
	assert_int_equal(resp.status, 200);
	http_response_done(&resp);
	unsetenv("HTTPS_PROXY");
	unsetenv("https_proxy");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_verify_ok_and_echo),
		cmocka_unit_test(test_verify_fails_with_other_ca),
		cmocka_unit_test(test_https_only),
		cmocka_unit_test(test_reuse_sequential),
		cmocka_unit_test(test_reuse_concurrent),
		cmocka_unit_test(test_retry_429_then_200),
		cmocka_unit_test(test_403_not_retried),
		cmocka_unit_test(test_retry_after),
		cmocka_unit_test(test_body_cap),
		cmocka_unit_test(test_network_errors_and_deadline),
		cmocka_unit_test(test_proxy_environment_honoured),
	};

	/* a proxy from the environment must not catch the loopback test traffic */
	unsetenv("HTTPS_PROXY");
	unsetenv("https_proxy");
	unsetenv("ALL_PROXY");
	unsetenv("all_proxy");
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
