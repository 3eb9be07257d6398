/* SPDX-License-Identifier: MIT */
/*
 * Both TLS transports set SSL_OP_CLEANSE_PLAINTEXT on every TLS context they use, so OpenSSL wipes
 * decrypted records (Decrypt and Get replies carry key material) once they are read:
 * transport/http.c through CURLOPT_SSL_CTX_FUNCTION on a real connection to a local TLS server
 * (tests/fixtures/https_echo.py), transport/kmip_tls.c on the context kmip_tls_new() builds.  The
 * tls_ctx_hook of each sees the context as the transport left it.  Also: the KMIP client key must
 * be private (mode checked on the opened file).
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "codec/http_msg.h"
#include "kms/provider.h"
#include "transport/http.h"
#include "transport/kmip_tls.h"
#include "util/cleanup.h"
#include "util/secret.h"

extern char **environ;

static char dir[] = "/tmp/kmscrypt-tls-cleanse-XXXXXX";
static char path_ca[256], path_cert[256], path_key[256];
static pid_t server_pid;
static int server_port;

struct seen {
	int contexts;  /* TLS contexts the hook saw */
	int cleansing; /* of them, with SSL_OP_CLEANSE_PLAINTEXT */
};

static void on_ctx(void *ssl_ctx, void *userdata)
{
	struct seen *s = userdata;

	s->contexts++;
	if (SSL_CTX_get_options(ssl_ctx) & SSL_OP_CLEANSE_PLAINTEXT)
		s->cleansing++;
}

static int group_setup(void **state)
{
	char cmd[512], portfile[300], cert[300], key[300];
	char *argv[] = {"/usr/bin/python3",
			KMSCRYPT_SOURCE_DIR "/tests/fixtures/https_echo.py",
			"--portfile",
			portfile,
			"--cert",
			cert,
			"--key",
			key,
			NULL};

	setenv("NO_PROXY", "127.0.0.1,localhost", 1);
	setenv("no_proxy", "127.0.0.1,localhost", 1);
	unsetenv("HTTPS_PROXY");
	unsetenv("https_proxy");
	if (!mkdtemp(dir))
		return -1;
	snprintf(cmd, sizeof(cmd), "bash %s/tests/fakes/mkcerts.sh %s >/dev/null 2>&1",
		 KMSCRYPT_SOURCE_DIR, dir);
	if (system(cmd) != 0)
		return -1;
	snprintf(path_ca, sizeof(path_ca), "%s/ca.pem", dir);
	snprintf(path_cert, sizeof(path_cert), "%s/client.pem", dir);
	snprintf(path_key, sizeof(path_key), "%s/client.key", dir);
	snprintf(portfile, sizeof(portfile), "%s/server.port", dir);
	snprintf(cert, sizeof(cert), "%s/server.pem", dir);
	snprintf(key, sizeof(key), "%s/server.key", dir);
	if (posix_spawn(&server_pid, argv[0], NULL, NULL, argv, environ) != 0)
		return -1;
	for (int i = 0; i < 200; i++) {
		FILE *f = fopen(portfile, "r");
		if (f) {
			int ok = fscanf(f, "%d", &server_port) == 1;
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

	if (server_pid > 0) {
		kill(server_pid, SIGTERM);
		waitpid(server_pid, NULL, 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_http_contexts_cleanse(void **state)
{
	struct seen seen = {};
	struct http_client_options o = {
	    .ca_file = path_ca,
	    .request_timeout_ms = 5000,
	    .tls_ctx_hook = on_ctx,
	    .tls_ctx_hook_data = &seen,
	};
	_cleanup_(http_client_freep) struct http_client *c = NULL;
	char url[128];

	assert_int_equal(http_client_new(&o, &c), 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/echo", server_port);
	for (int i = 0; i < 2; i++) {
		_cleanup_(http_request_done) struct http_request req = {};
		_cleanup_(http_response_done) struct http_response resp = {};
		struct kms_error err = {};

		assert_int_equal(http_request_init(&req, "POST", url), 0);
		assert_int_equal(http_request_set_body(&req, "{}", 2), 0);
		assert_int_equal(http_send(c, &req, &resp, &err), 0);
		assert_int_equal(resp.status, 200);
	}
	/* one connection (reused by the second request), and its context cleanses */
	assert_int_equal(seen.contexts, 1);
	assert_int_equal(seen.cleansing, 1);
}

static void test_kmip_context_cleanses(void **state)
{
	struct seen seen = {};
	struct kmip_tls_options o = {
	    .host = "127.0.0.1",
	    .port = 1, /* never contacted: kmip_tls_new() does no network I/O */
	    .ca_file = path_ca,
	    .cert_file = path_cert,
	    .key_file = path_key,
	    .tls_ctx_hook = on_ctx,
	    .tls_ctx_hook_data = &seen,
	};
	struct kms_error err = {};
	struct kmip_tls *t = NULL;

	assert_int_equal(kmip_tls_new(&o, &t, &err), 0);
	assert_int_equal(seen.contexts, 1);
	assert_int_equal(seen.cleansing, 1);
	kmip_tls_free(t);
}

static void test_kmip_client_key_must_be_private(void **state)
{
	struct seen seen = {};
	struct kmip_tls_options o = {
	    .host = "127.0.0.1",
	    .port = 1,
	    .ca_file = path_ca,
	    .cert_file = path_cert,
	    .key_file = path_key,
	    .tls_ctx_hook = on_ctx,
	    .tls_ctx_hook_data = &seen,
	};
	static const mode_t refused[] = {0644, 0640, 0604, 0660, 0606, 0601};
	struct kms_error err = {};
	struct kmip_tls *t = NULL;
	char want[300];

	snprintf(want, sizeof(want), "run 'chmod 600 %s'", path_key);
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		assert_int_equal(chmod(path_key, refused[i]), 0);
		memset(&err, 0, sizeof(err));
		assert_int_equal(kmip_tls_new(&o, &t, &err), -EINVAL);
		if (!strstr(err.message, want))
			fail_msg("mode %04o: message '%s' lacks \"%s\"", (unsigned)refused[i],
				 err.message, want);
	}
	assert_int_equal(seen.contexts, 0);
	assert_int_equal(chmod(path_key, 0400), 0);
	assert_int_equal(kmip_tls_new(&o, &t, &err), 0);
	kmip_tls_free(t);
	assert_int_equal(chmod(path_key, 0600), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_http_contexts_cleanse),
	    cmocka_unit_test(test_kmip_context_cleanses),
	    cmocka_unit_test(test_kmip_client_key_must_be_private),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
