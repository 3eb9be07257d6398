/* SPDX-License-Identifier: MIT */
/*
 * Concurrent KMS requests (issue 13 item 4): the AWS provider (kms/remote.c over transport/http.c)
 * unwraps N volumes from N threads at once, as `unlock --all` does, against the AWS KMS fake
 * (tests/fakes/fake_aws_kms.py, SigV4 checked with botocore) with 300 ms injected latency, and the
 * fake counts what it saw:
 *   - offering HTTP/2 (--h2): exactly 1 TLS handshake, exactly N Decrypt requests, and more than
 *     one request in flight at once (streams multiplexed on the one connection);
 *   - HTTP/1.1 only: at most KMS_REMOTE_MAX_CONNECTIONS handshakes, still N requests, more than one
 *     in flight (the bounded pool).
 * Counts, not timings: the latency only makes the overlap certain.
 * Also: a child forked after the client's worker thread started still gets its requests answered
 * (on a connection of its own) instead of waiting for a worker that is not in its process.
 */
#include <errno.h>
#include <fcntl.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "codec/http_msg.h"
#include "config/kms_config.h"
#include "kms/provider.h"
#include "kms/remote.h"
#include "transport/http.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define N_VOL 12
#define LATENCY_MS 300

extern char **environ;

static char dir[] = "/tmp/kmscrypt-kmsconc-test-XXXXXX";

struct fake {
	const char *name;
	bool h2;
	pid_t pid;
	int port, cport;
};
static struct fake fakes[2] = {{.name = "h2", .h2 = true}, {.name = "h1", .h2 = false}};

static int read_port(const char *path, int *ret)
{
	for (int i = 0; i < 1200; i++) { /* 60 s: botocore imports slowly on a loaded host */
		FILE *f = fopen(path, "r");
		if (f) {
			int ok = fscanf(f, "%d", ret) == 1;
			fclose(f);
			if (ok)
				return 0;
		}
		usleep(50 * 1000);
	}
	return -1;
}

static int start_fake(struct fake *f)
{
	char certs[300], pf[300], cpf[300], ipf[300];
	char *argv[16];
	posix_spawn_file_actions_t fa;
	int n = 0, r;

	snprintf(certs, sizeof(certs), "%s/certs", dir);
	snprintf(pf, sizeof(pf), "%s/%s.port", dir, f->name);
	snprintf(cpf, sizeof(cpf), "%s/%s.cport", dir, f->name);
	snprintf(ipf, sizeof(ipf), "%s/%s.iport", dir, f->name);
	argv[n++] = "/usr/bin/python3";
	argv[n++] = KMSCRYPT_SOURCE_DIR "/tests/fakes/fake_aws_kms.py";
	argv[n++] = "--certs";
	argv[n++] = certs;
	argv[n++] = "--portfile";
	argv[n++] = pf;
	argv[n++] = "--control-portfile";
	argv[n++] = cpf;
	argv[n++] = "--imds-portfile";
	argv[n++] = ipf;
	if (f->h2)
		argv[n++] = "--h2";
	argv[n] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0); /* its READY line */
	r = posix_spawn(&f->pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return -1;
	return read_port(pf, &f->port) < 0 || read_port(cpf, &f->cport) < 0 ? -1 : 0;
}

static int group_setup(void **state)
{
	char cmd[512];

	setenv("NO_PROXY", "127.0.0.1,localhost", 1);
	setenv("no_proxy", "127.0.0.1,localhost", 1);
	if (!mkdtemp(dir))
		return -1;
	snprintf(cmd, sizeof(cmd), "bash %s/tests/fakes/mkcerts.sh %s/certs >/dev/null 2>&1",
		 KMSCRYPT_SOURCE_DIR, dir);
	if (system(cmd) != 0)
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(fakes); i++)
		if (start_fake(&fakes[i]) < 0)
			return -1;
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[512];

	for (size_t i = 0; i < ARRAY_SIZE(fakes); i++)
		if (fakes[i].pid > 0) {
			kill(fakes[i].pid, SIGTERM);
			waitpid(fakes[i].pid, NULL, 0);
		}
	if (strchr(dir, 'X'))
		return 0;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* The fake's control API (plain HTTP on loopback) through curl(1); the parsed JSON reply. */
static struct json_object *ctl(const struct fake *f, const char *path, const char *json)
{
	char cmd[1024], buf[16384];
	size_t n;
	FILE *p;

	snprintf(cmd, sizeof(cmd),
		 "curl -sS --fail --noproxy '*' %s%s%s 'http://127.0.0.1:%d%s'",
		 json ? "--data-binary '" : "", json ? json : "", json ? "'" : "", f->cport, path);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(buf, 1, sizeof(buf) - 1, p);
	assert_int_equal(pclose(p), 0);
	buf[n] = 0;
	return json_tokener_parse(buf);
}

static int64_t counter(struct json_object *o, const char *name)
{
	struct json_object *v;

	return json_object_object_get_ex(o, name, &v) ? json_object_get_int64(v) : -1;
}

static int64_t decrypts(struct json_object *o)
{
	struct json_object *by, *v;

	if (!json_object_object_get_ex(o, "requests_by_action", &by))
		return -1;
	return json_object_object_get_ex(by, "Decrypt", &v) ? json_object_get_int64(v) : 0;
}

static const char *uuid_of(int i, char buf[40])
{
	snprintf(buf, 40, "22222222-0000-4000-8000-%012d", i + 1);
	return buf;
}

struct job {
	const struct kms_provider *p;
	void *ctx;
	const struct kms_wrapped *w;
	const struct secret *want;
	int i, r;
};

static void *unwrap_thread(void *arg)
{
	struct job *j = arg;
	struct secret *back = NULL;
	struct kms_error err = {};
	char u[40];
	struct kms_aad aad = {.uuid = uuid_of(j->i, u), .keyslot = 1};

	j->r = j->p->unwrap(j->ctx, &aad, j->w, &back, &err);
	if (j->r < 0)
		fprintf(stderr, "volume %d: %s: %s\n", j->i, err.code, err.message);
	else if (back->len != j->want->len || memcmp(back->buf, j->want->buf, back->len) != 0)
		j->r = -EBADMSG;
	secret_free(back);
	return NULL;
}

/* Wrap N secrets, then unwrap them from N threads in one context; return the fake's counters for
 * the unwraps alone. */
static struct json_object *run(const struct fake *f)
{
	const struct kms_provider *p = kms_provider_find("aws");
	struct kms_runtime rt = {.timeout_ms = 20000};
	struct kms_config cfg = {};
	struct config_error cerr = {};
	struct kms_error err = {};
	struct kms_wrapped w[N_VOL] = {};
	struct secret *plain[N_VOL] = {};
	struct job jobs[N_VOL];
	pthread_t tids[N_VOL];
	struct json_object *o, *kid;
	_cleanup_free_ char *text = NULL;
	void *ctx = NULL;
	char lat[64];

	assert_non_null(p);
	o = ctl(f, "/control", "{\"op\":\"create_key\",\"description\":\"kmsconc\"}");
	assert_true(json_object_object_get_ex(o, "KeyId", &kid));
	assert_true(asprintf(&text,
			     "[KMS]\nProvider=aws\nRegion=us-east-1\nKeyId=%s\n"
			     "Endpoint=https://127.0.0.1:%d\nCaFile=%s/certs/ca.pem\n"
			     "AccessKeyId=AKIAFAKEKMS000000001\n"
			     "SecretAccessKey=fakeSecretKeyForKmscryptTests0000000001\n",
			     json_object_get_string(kid), f->port, dir) > 0);
	json_object_put(o);
	assert_int_equal(
	    kms_config_parse("conc", text, strlen(text), kms_provider_all(), &cfg, &cerr), 0);
	assert_int_equal(p->open(&cfg, &rt, &ctx, &err), 0);
	for (int i = 0; i < N_VOL; i++) {
		char u[40];
		struct kms_aad aad = {.uuid = uuid_of(i, u), .keyslot = 1};

		assert_int_equal(secret_random(32, &plain[i]), 0);
		assert_int_equal(p->wrap(ctx, &aad, plain[i], &w[i], &err), 0);
	}
	p->close(ctx); /* a fresh context: the unwraps start without a connection, as a boot does */
	ctx = NULL;
	assert_int_equal(p->open(&cfg, &rt, &ctx, &err), 0);

	json_object_put(ctl(f, "/counters/reset", "{}"));
	snprintf(lat, sizeof(lat), "{\"latency_ms\": %d, \"action\": \"Decrypt\"}", LATENCY_MS);
	json_object_put(ctl(f, "/faults", lat));
	for (int i = 0; i < N_VOL; i++) {
		jobs[i] = (struct job){.p = p, .ctx = ctx, .w = &w[i], .want = plain[i], .i = i};
		assert_int_equal(pthread_create(&tids[i], NULL, unwrap_thread, &jobs[i]), 0);
	}
	for (int i = 0; i < N_VOL; i++)
		pthread_join(tids[i], NULL);
	p->close(ctx);
	o = ctl(f, "/counters", NULL);
	json_object_put(ctl(f, "/faults/reset", "{}"));
	for (int i = 0; i < N_VOL; i++) {
		assert_int_equal(jobs[i].r, 0);
		kms_wrapped_done(&w[i]);
		secret_free(plain[i]);
	}
	kms_config_done(&cfg);
	fprintf(stderr,
		"%s fake: %d unwraps: %lld TLS handshakes (%lld resumed), %lld HTTP/2 connections, "
		"%lld requests, %lld in flight at most\n",
		f->name, N_VOL, (long long)counter(o, "tls_handshakes"),
		(long long)counter(o, "tls_resumed"), (long long)counter(o, "h2_connections"),
		(long long)counter(o, "requests"), (long long)counter(o, "in_flight_max"));
	return o;
}

static void test_h2_one_connection(void **state)
{
	struct json_object *o = run(&fakes[0]);

	assert_int_equal(counter(o, "tls_handshakes"), 1);
	assert_int_equal(counter(o, "h2_connections"), 1);
	assert_int_equal(counter(o, "requests"), N_VOL);
	assert_int_equal(decrypts(o), N_VOL);
	assert_true(counter(o, "in_flight_max") > 1);
	json_object_put(o);
}

static void test_h1_bounded_pool(void **state)
{
	struct json_object *o = run(&fakes[1]);

	assert_in_range(counter(o, "tls_handshakes"), 1, KMS_REMOTE_MAX_CONNECTIONS);
	assert_int_equal(counter(o, "h2_connections"), 0);
	assert_int_equal(counter(o, "requests"), N_VOL);
	assert_int_equal(decrypts(o), N_VOL);
	assert_true(counter(o, "in_flight_max") > 1);
	assert_true(counter(o, "in_flight_max") <= KMS_REMOTE_MAX_CONNECTIONS);
	json_object_put(o);
}

static int health(struct http_client *c, const struct fake *f)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	char url[100];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", f->cport);
	if (http_request_init(&req, "GET", url) < 0)
		return -1;
	req.flags |= HTTP_REQ_METADATA; /* plain http, loopback only */
	if (http_send(c, &req, &resp, NULL) < 0)
		return -1;
	return resp.status;
}

static void test_fork_after_first_request(void **state)
{
	struct http_client *c = NULL;
	int status = 0;
	pid_t pid;

	assert_int_equal(http_client_new(NULL, &c), 0);
	assert_int_equal(health(c, &fakes[0]), 200); /* the worker runs now */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(30); /* a hang is a failure, not a stuck test */
		int st = health(c, &fakes[0]);
		http_client_free(c);
		_exit(st == 200 ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(health(c, &fakes[0]), 200); /* the parent's client still works */
	http_client_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_h2_one_connection),
	    cmocka_unit_test(test_h1_bounded_pool),
	    cmocka_unit_test(test_fork_after_first_request),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
