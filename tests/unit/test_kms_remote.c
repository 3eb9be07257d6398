/* SPDX-License-Identifier: MIT */
/*
 * kms/remote.c (the shared piece of the HTTPS providers) against tests/fixtures/bearer_fake.py, a
 * loopback bearer-token API with a throw-away PKI: the token is fetched once and cached until the
 * renewal margin, one login serves concurrent callers, a refused token means one fresh login and
 * one more try (never a loop), Retry-After is honoured, the provider's transient() is used, the
 * run fails fast after a network failure, -v's observer sees every attempt.  Also the pure
 * helpers: kms_url_base() and kms_http_classify().
 */
#include <errno.h>
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
#include "kms/remote.h"
#include "transport/http.h"
#include "util/cleanup.h"
#include "util/secret.h"

extern char **environ;

static char dir[] = "/tmp/kmscrypt-remote-test-XXXXXX";
static char ca[256];
static pid_t pid;
static int port, dead_port;

/* ---- fixture --------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
	char cmd[512], portfile[300], cert[300], key[300];
	char *argv[] = {"/usr/bin/python3",
			KMSCRYPT_SOURCE_DIR "/tests/fixtures/bearer_fake.py",
			"--portfile",
			portfile,
			"--cert",
			cert,
			"--key",
			key,
			NULL};

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
	for (int i = 0; i < 200; i++) {
		FILE *f = fopen(portfile, "r");
		if (f) {
			int ok = fscanf(f, "%d", &port) == 1;
			fclose(f);
			if (ok)
				break;
		}
		usleep(50 * 1000);
	}
	if (!port)
		return -1;
	/* a loopback port nobody listens on (free again once the helper exits: refused) */
	{
		FILE *f = popen("/usr/bin/python3 -c 'import socket; s=socket.socket(); "
				"s.bind((\"127.0.0.1\",0)); print(s.getsockname()[1])'",
				"r");
		if (!f || fscanf(f, "%d", &dead_port) != 1)
			return -1;
		pclose(f);
	}
	return 0;
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

/* ---- a test provider on struct kms_remote ------------------------------------------------------
 */

struct tprov {
	struct kms_remote remote;
	int port;
	time_t lifetime; /* of each token; 0: does not expire */
	int logins;	 /* login() calls */
	int transient_calls;
	int attempts; /* observer events */
	int attempt_errors;
};

static int tprov_login(struct kms_remote *r, void *pctx, struct secret **ret_token,
		       time_t *ret_expires, struct kms_error *err)
{
	struct tprov *p = pctx;
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct json_object *o, *v;
	char url[128];
	int k;

	p->logins++;
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/login", p->port);
	k = http_request_init(&req, "POST", url);
	if (k < 0)
		return k;
	k = kms_remote_send(r, &req, &resp, err);
	if (k < 0)
		return k;
	if (resp.status != 200 || !resp.body)
		return kms_error_set(err, -EACCES, "", "login refused");
	{
		char buf[256];
		snprintf(buf, sizeof(buf), "%.*s", (int)resp.body->len,
			 (const char *)resp.body->buf);
		o = json_tokener_parse(buf);
	}
	if (!o || !json_object_object_get_ex(o, "token", &v)) {
		json_object_put(o);
		return kms_error_set(err, -EBADMSG, "", "bad login reply");
	}
	k = secret_from_cstr(json_object_get_string(v), strlen(json_object_get_string(v)),
			     ret_token);
	json_object_put(o);
	*ret_expires = p->lifetime ? time(NULL) + p->lifetime : 0;
	return k;
}

static int tprov_transient(const struct http_response *resp, void *userdata)
{
	struct tprov *p = userdata;

	p->transient_calls++;
	if (resp->status == 400 && resp->body &&
	    memmem(resp->body->buf, resp->body->len, "Throttled", 9))
		return 1;
	return http_status_transient(resp->status);
}

static void observer(const struct http_event *ev, void *userdata)
{
	struct tprov *p = userdata;

	__atomic_add_fetch(&p->attempts, 1, __ATOMIC_SEQ_CST);
	if (ev->error)
		__atomic_add_fetch(&p->attempt_errors, 1, __ATOMIC_SEQ_CST);
}

static const struct kms_remote_ops tprov_ops = {
    .login = tprov_login,
    .transient = tprov_transient,
    .margin_s = 10,
};

struct top {
	const char *path;
};

static int tprov_build(void *pctx, const void *op, struct http_request *ret)
{
	const struct tprov *p = pctx;
	const struct top *o = op;
	char url[256];

	snprintf(url, sizeof(url), "https://127.0.0.1:%d%s", p->port, o->path);
	return http_request_init(ret, "POST", url);
}

static struct tprov *tprov_new(int use_port, int timeout_ms)
{
	struct kms_setting s = {.key = "CaFile", .value = ca};
	struct kms_config cfg = {.name = "test", .settings = &s, .n_settings = 1};
	struct kms_runtime rt = {.timeout_ms = timeout_ms, .http_observer = observer};
	struct kms_error err = {};
	struct tprov *p = calloc(1, sizeof(*p));

	assert_non_null(p);
	p->port = use_port;
	rt.http_observer_data = p;
	assert_int_equal(kms_remote_init(&p->remote, &tprov_ops, p, &cfg, &rt, &err), 0);
	assert_string_equal(p->remote.name, "test");
	return p;
}

static void tprov_free(struct tprov *p)
{
	kms_remote_done(&p->remote);
	free(p);
}

static int call(struct tprov *p, const char *path, struct kms_error *err)
{
	struct http_response resp = {};
	struct top o = {.path = path};
	int k;

	k = kms_remote_call(&p->remote, tprov_build, &o, &resp, err);
	if (k < 0)
		return k;
	k = resp.status;
	http_response_done(&resp);
	return k;
}

static int server_stat(const char *name)
{
	_cleanup_(http_client_freep) struct http_client *c = NULL;
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct http_client_options o = {.ca_file = ca};
	struct json_object *obj, *v;
	char url[128], buf[256];
	int n;

	assert_int_equal(http_client_new(&o, &c), 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/stats", port);
	assert_int_equal(http_request_init(&req, "GET", url), 0);
	assert_int_equal(http_send(c, &req, &resp, NULL), 0);
	snprintf(buf, sizeof(buf), "%.*s", (int)resp.body->len, (const char *)resp.body->buf);
	obj = json_tokener_parse(buf);
	assert_non_null(obj);
	assert_true(json_object_object_get_ex(obj, name, &v));
	n = json_object_get_int(v);
	json_object_put(obj);
	return n;
}

static void server_revoke(void)
{
	_cleanup_(http_client_freep) struct http_client *c = NULL;
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct http_client_options o = {.ca_file = ca};
	char url[128];

	assert_int_equal(http_client_new(&o, &c), 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/ctl/revoke", port);
	assert_int_equal(http_request_init(&req, "POST", url), 0);
	assert_int_equal(http_send(c, &req, &resp, NULL), 0);
	assert_int_equal(resp.status, 200);
}

static uint64_t ms_now(void)
{
	return kms_mono_ms();
}

/* ---- tests
 * --------------------------------------------------------------------------------------- */

static void test_token_cached(void **state)
{
	struct tprov *p = tprov_new(port, 10000);
	struct kms_error err = {};
	int before = server_stat("logins");

	(void)state;
	p->lifetime = 3600;
	for (int i = 0; i < 5; i++)
		assert_int_equal(call(p, "/api/ok", &err), 200);
	assert_int_equal(p->logins, 1);
	assert_int_equal(server_stat("logins"), before + 1);
	/* expires in an hour, renewed margin_s (10 s) early */
	assert_true(p->remote.expires > time(NULL) + 3500);
	assert_int_equal((long)(p->remote.expires - p->remote.renew_at), 10);
	/* the observer of the run saw every attempt: one login and five calls */
	assert_int_equal(p->attempts, 6);
	tprov_free(p);
}

static void test_token_renewed_before_expiry(void **state)
{
	struct tprov *p = tprov_new(port, 10000);
	struct kms_error err = {};
	time_t first_expiry;

	(void)state;
	/* a 4 s lifetime: renewed a quarter early (1 s), not margin_s (10 s) early */
	p->lifetime = 4;
	assert_int_equal(call(p, "/api/ok", &err), 200);
	first_expiry = p->remote.expires;
	assert_int_equal((long)(p->remote.expires - p->remote.renew_at), 1);
	assert_int_equal(call(p, "/api/ok", &err), 200);
	assert_int_equal(p->logins, 1);
	/* just past renew_at, still before the token's own expiry: a new login */
	while (time(NULL) < p->remote.renew_at)
		usleep(100 * 1000);
	assert_true(time(NULL) < first_expiry);
	assert_int_equal(call(p, "/api/ok", &err), 200);
	assert_int_equal(p->logins, 2);
	tprov_free(p);
}

struct thread_arg {
	struct tprov *p;
	int status;
};

static void *worker(void *v)
{
	struct thread_arg *a = v;
	struct kms_error err = {};

	a->status = call(a->p, "/api/ok", &err);
	return NULL;
}

static void test_one_login_for_concurrent_calls(void **state)
{
	struct tprov *p = tprov_new(port, 10000);
	pthread_t t[6];
	struct thread_arg a[6];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		a[i] = (struct thread_arg){.p = p};
		assert_int_equal(pthread_create(&t[i], NULL, worker, &a[i]), 0);
	}
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].status, 200);
	}
	assert_int_equal(p->logins, 1);
	tprov_free(p);
}

static void test_relogin_once_when_refused(void **state)
{
	struct tprov *p = tprov_new(port, 10000);
	struct kms_error err = {};
	int api;

	(void)state;
	assert_int_equal(call(p, "/api/ok", &err), 200);
	assert_int_equal(p->logins, 1);
	/* revoked at the server: 401, one fresh login, the request repeated */
	server_revoke();
	api = server_stat("api");
	assert_int_equal(call(p, "/api/ok", &err), 200);
	assert_int_equal(p->logins, 2);
	assert_int_equal(server_stat("api"), api + 2);
	/* refused again after the fresh login: the 401 goes to the codec, no login loop */
	api = server_stat("api");
	assert_int_equal(call(p, "/api/always401", &err), 401);
	assert_int_equal(p->logins, 3);
	assert_int_equal(server_stat("api"), api + 2);
	tprov_free(p);
}

static void test_retry_after_honoured(void **state)
{
	struct tprov *p = tprov_new(port, 10000);
	struct kms_error err = {};
	char path[64];
	uint64_t t0;

	(void)state;
	snprintf(path, sizeof(path), "/api/retry-after/%d/2", (int)getpid());
	t0 = ms_now();
	assert_int_equal(call(p, path, &err), 200);
	assert_true(ms_now() - t0 >= 2000);
	assert_true(ms_now() - t0 < 8000);
	tprov_free(p);
}

static void test_provider_transient_used(void **state)
{
	struct tprov *p = tprov_new(port, 10000);
	struct kms_error err = {};
	char path[64];

	(void)state;
	/* HTTP 400 {"code":"Throttled"}: retried only because the provider's transient() says so */
	snprintf(path, sizeof(path), "/api/vendor-throttle/%d", (int)getpid());
	assert_int_equal(call(p, path, &err), 200);
	assert_true(p->transient_calls >= 1);
	tprov_free(p);
}

static void test_fail_fast_after_network_failure(void **state)
{
	struct tprov *p = tprov_new(dead_port, 3000);
	struct kms_error err = {}, err2 = {};
	int k, attempts;
	uint64_t t0;

	(void)state;
	k = call(p, "/api/ok", &err);
	assert_true(k == -EAGAIN || k == -ETIMEDOUT);
	assert_true(err.message[0] != 0);
	attempts = p->attempts;
	assert_true(attempts >= 1);
	assert_int_equal(p->attempt_errors, attempts);
	/* the next call (another volume of the run) gets the same answer at once, no attempt */
	t0 = ms_now();
	assert_int_equal(call(p, "/api/ok", &err2), k);
	assert_true(ms_now() - t0 < 100);
	assert_int_equal(p->attempts, attempts);
	assert_string_equal(err2.message, err.message);
	/* unauthenticated requests of the same remote too */
	{
		_cleanup_(http_request_done) struct http_request req = {};
		struct http_response resp = {};
		char url[128];

		snprintf(url, sizeof(url), "https://127.0.0.1:%d/login", dead_port);
		assert_int_equal(http_request_init(&req, "POST", url), 0);
		assert_int_equal(kms_remote_send(&p->remote, &req, &resp, &err2), k);
		assert_int_equal(p->attempts, attempts);
	}
	tprov_free(p);
}

static void test_named_endpoint_failure(void **state)
{
	struct tprov *p = tprov_new(port, 3000);
	_cleanup_(http_request_done) struct http_request req = {};
	struct http_response resp = {};
	struct kms_error err = {}, err2 = {};
	char url[128];
	int k;

	(void)state;
	/* a metadata endpoint that is not there: its own message, repeated to the next caller */
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/login", dead_port);
	assert_int_equal(http_request_init(&req, "POST", url), 0);
	k = kms_remote_send_named(&p->remote, &req, "ImdsUnavailable",
				  "metadata service not reachable", &resp, &err);
	assert_true(k == -EAGAIN || k == -ETIMEDOUT);
	assert_string_equal(err.code, "ImdsUnavailable");
	assert_ptr_equal(strstr(err.message, "metadata service not reachable: "), err.message);
	assert_int_equal(call(p, "/api/ok", &err2), k);
	assert_string_equal(err2.message, err.message);
	/* an HTTP answer is left as it is */
	http_request_done(&req);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/nowhere", port);
	assert_int_equal(http_request_init(&req, "GET", url), 0);
	tprov_free(p);
	p = tprov_new(port, 3000);
	memset(&err, 0, sizeof(err));
	assert_int_equal(kms_remote_send_named(&p->remote, &req, "X", "not reachable", &resp, &err),
			 0);
	assert_int_equal(resp.status, 404);
	assert_null(strstr(err.message, "not reachable"));
	http_response_done(&resp);
	tprov_free(p);
}

static void test_http_answer_not_remembered(void **state)
{
	struct tprov *p = tprov_new(port, 10000);
	struct kms_error err = {};

	(void)state;
	/* a 401 is an answer, not an unreachable endpoint: the next call goes out */
	assert_int_equal(call(p, "/api/always401", &err), 401);
	assert_int_equal(call(p, "/api/ok", &err), 200);
	tprov_free(p);
}

/* bearer default and a refused credential without login(): no retry, no login */
static const struct kms_remote_ops fixed_ops = {0};

static void test_fixed_token(void **state)
{
	struct kms_setting s = {.key = "CaFile", .value = ca};
	struct kms_config cfg = {.name = "fixed", .settings = &s, .n_settings = 1};
	struct kms_error err = {};
	struct tprov *p = calloc(1, sizeof(*p));
	struct http_response resp = {};
	struct top o = {.path = "/api/ok"};
	int api;

	(void)state;
	assert_non_null(p);
	p->port = port;
	assert_int_equal(kms_remote_init(&p->remote, &fixed_ops, p, &cfg, NULL, &err), 0);
	assert_int_equal(p->remote.deadline_ms, KMS_REMOTE_DEFAULT_DEADLINE_MS);
	assert_int_equal(secret_from_cstr("tok-unknown", 11, &p->remote.token), 0);
	api = server_stat("api");
	assert_int_equal(kms_remote_call(&p->remote, tprov_build, &o, &resp, &err), 0);
	assert_int_equal(resp.status, 401);
	http_response_done(&resp);
	assert_int_equal(server_stat("api"), api + 1);
	kms_remote_done(&p->remote);
	free(p);
}

static void test_init_bad_ca(void **state)
{
	struct kms_setting s = {.key = "CaFile", .value = "/nonexistent/ca.pem"};
	struct kms_config cfg = {.name = "x", .settings = &s, .n_settings = 1};
	struct kms_remote r;
	struct kms_error err = {};
	int k;

	(void)state;
	k = kms_remote_init(&r, &fixed_ops, NULL, &cfg, NULL, &err);
	if (k < 0)
		assert_non_null(strstr(err.message, "/nonexistent/ca.pem"));
	kms_remote_done(&r); /* safe after a failed init, and after a good one */
}

static void test_url_base(void **state)
{
	char *s = NULL;

	(void)state;
	assert_int_equal(kms_url_base("https://vault.example:8200/", &s), 0);
	assert_string_equal(s, "https://vault.example:8200");
	free(s);
	assert_int_equal(kms_url_base("https://[::1]:8443", &s), 0);
	assert_string_equal(s, "https://[::1]:8443");
	free(s);
	assert_int_equal(kms_url_base("http://vault.example", &s), -EINVAL);
	assert_int_equal(kms_url_base("https://", &s), -EINVAL);
	assert_int_equal(kms_url_base("https:///", &s), -EINVAL);
	assert_int_equal(kms_url_base("https://h/v1", &s), -EINVAL);
	assert_int_equal(kms_url_base("https://h?x=1", &s), -EINVAL);
	assert_int_equal(kms_url_base("https://u:p@h", &s), -EINVAL);
	assert_int_equal(kms_url_base("https://h#frag", &s), -EINVAL);
}

static void test_classify(void **state)
{
	static const struct kms_code_class codes[] = {
	    {"Throttled", -EAGAIN},
	    {"BadCiphertext", -EACCES},
	    {"Malformed", -EBADMSG},
	    {NULL, 0},
	};

	(void)state;
	assert_int_equal(kms_http_classify(200, NULL, NULL), 0);
	assert_int_equal(kms_http_classify(204, "", codes), 0);
	assert_int_equal(kms_http_classify(400, "Throttled", codes), -EAGAIN);
	assert_int_equal(kms_http_classify(400, "Malformed", codes), -EBADMSG);
	assert_int_equal(kms_http_classify(400, "BadCiphertext", codes), -EACCES);
	assert_int_equal(kms_http_classify(400, "SomethingElse", codes), -EACCES);
	assert_int_equal(kms_http_classify(400, "", codes), -EBADMSG);
	assert_int_equal(kms_http_classify(401, NULL, NULL), -EACCES);
	assert_int_equal(kms_http_classify(403, NULL, NULL), -EACCES);
	assert_int_equal(kms_http_classify(404, NULL, NULL), -EACCES);
	assert_int_equal(kms_http_classify(429, NULL, NULL), -EAGAIN);
	assert_int_equal(kms_http_classify(503, "AnyCode", codes), -EAGAIN);
	assert_int_equal(kms_http_classify(500, NULL, NULL), -EAGAIN);
	assert_int_equal(kms_http_classify(302, NULL, NULL), -EBADMSG);
	assert_int_equal(kms_http_classify(0, NULL, NULL), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_url_base),
	    cmocka_unit_test(test_classify),
	    cmocka_unit_test(test_init_bad_ca),
	    cmocka_unit_test(test_token_cached),
	    cmocka_unit_test(test_token_renewed_before_expiry),
	    cmocka_unit_test(test_one_login_for_concurrent_calls),
	    cmocka_unit_test(test_relogin_once_when_refused),
	    cmocka_unit_test(test_retry_after_honoured),
	    cmocka_unit_test(test_provider_transient_used),
	    cmocka_unit_test(test_fail_fast_after_network_failure),
	    cmocka_unit_test(test_named_endpoint_failure),
	    cmocka_unit_test(test_http_answer_not_remembered),
	    cmocka_unit_test(test_fixed_token),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
