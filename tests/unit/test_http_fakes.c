/* SPDX-License-Identifier: MIT */
/*
 * End to end over the real transport against the team's fake KMS servers (tests/fakes/, 127.0.0.1
 * only): the AWS fake recomputes SigV4 with botocore and speaks IMDSv2; the Vault fake implements
 * transit, AppRole and tokens with Vault's own error texts.  Codec + sigv4 + transport together:
 * IMDS credentials -> DescribeKey/Encrypt/Decrypt/GenerateDataKeyWithoutPlaintext/ReEncrypt/
 * ListAliases paging, error classes from real replies, throttling retried, one TLS connection;
 * AppRole login -> lookup-self -> key read -> encrypt/decrypt with associated_data -> rotate/rewrap
 * -> min_decryption_version, sealed -> -EAGAIN.
 * The fakes' control API is plain HTTP on loopback; it is reached with HTTP_REQ_METADATA (the only
 * way the transport sends plain http, and only to loopback/link-local addresses).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/http_msg.h"
#include "codec/sigv4.h"
#include "kms/aws/aws_codec.h"
#include "kms/provider.h"
#include "kms/vault/vault_codec.h"
#include "transport/http.h"
#include "util/cleanup.h"
#include "util/secret.h"

extern char **environ;

static char dir[] = "/tmp/kmscrypt-fakes-test-XXXXXX";
static char ca[320];
static pid_t pid_aws, pid_vault;
static int aws_port, aws_cport, imds_port, vault_port, vault_cport;
static struct http_client *http;

static int read_port(const char *name, int *ret)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	for (int i = 0; i < 300; i++) {
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

static int spawn(pid_t *pid, char **argv)
{
	posix_spawn_file_actions_t fa;
	int r;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	r = posix_spawn(pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	return r == 0 ? 0 : -1;
}

static int group_setup(void **state)
{
	char cmd[512], certs[300], p1[300], p2[300], p3[300], p4[300], p5[300];
	struct http_client_options o = { .request_timeout_ms = 10000 };
	struct stat st;

	if (stat(KMSCRYPT_SOURCE_DIR "/tests/fakes/fake_aws_kms.py", &st) < 0 ||
	    stat(KMSCRYPT_SOURCE_DIR "/tests/fakes/fake_vault.py", &st) < 0)
		return 0; /* tests skip */
	setenv("NO_PROXY", "127.0.0.1,localhost", 1);
	setenv("no_proxy", "127.0.0.1,localhost", 1);
	if (!mkdtemp(dir))
		return -1;
	snprintf(certs, sizeof(certs), "%s/certs", dir);
	snprintf(cmd, sizeof(cmd), "bash %s/tests/fakes/mkcerts.sh %s >/dev/null 2>&1", KMSCRYPT_SOURCE_DIR, certs);
	if (system(cmd) != 0)
		return -1;
	snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
	snprintf(p1, sizeof(p1), "%s/aws.port", dir);
	snprintf(p2, sizeof(p2), "%s/aws.cport", dir);
	snprintf(p3, sizeof(p3), "%s/imds.port", dir);
	snprintf(p4, sizeof(p4), "%s/vault.port", dir);
	snprintf(p5, sizeof(p5), "%s/vault.cport", dir);
	{
		char *argv[] = { "/usr/bin/python3", KMSCRYPT_SOURCE_DIR "/tests/fakes/fake_aws_kms.py", "--certs",
				 certs, "--portfile", p1, "--control-portfile", p2, "--imds-portfile", p3, NULL };
		if (spawn(&pid_aws, argv) < 0)
			return -1;
	}
	{
		char *argv[] = { "/usr/bin/python3", KMSCRYPT_SOURCE_DIR "/tests/fakes/fake_vault.py", "--certs",
				 certs, "--portfile", p4, "--control-portfile", p5, NULL };
		if (spawn(&pid_vault, argv) < 0)
			return -1;
	}
	if (read_port("aws.port", &aws_port) < 0 || read_port("aws.cport", &aws_cport) < 0 ||
	    read_port("imds.port", &imds_port) < 0 || read_port("vault.port", &vault_port) < 0 ||
	    read_port("vault.cport", &vault_cport) < 0)
		return -1;
	o.ca_file = ca;
	return http_client_new(&o, &http) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	char cmd[512];

	http = http_client_free(http);
	if (pid_aws > 0) {
		kill(pid_aws, SIGTERM);
		waitpid(pid_aws, NULL, 0);
	}
	if (pid_vault > 0) {
		kill(pid_vault, SIGTERM);
		waitpid(pid_vault, NULL, 0);
	}
	if (strchr(dir, 'X'))
		return 0;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* POST /<path> to a fake's control port; returns the parsed reply (NULL for an empty one). */
static struct json_object *ctl(int port, const char *path, const char *json)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	struct kms_error err = {};
	struct json_object *o = NULL;
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	assert_int_equal(http_request_init(&req, json ? "POST" : "GET", url), 0);
	req.flags |= HTTP_REQ_METADATA;
	if (json) {
		assert_int_equal(http_request_header_add(&req, "Content-Type", "application/json"), 0);
		assert_int_equal(http_request_set_body(&req, json, strlen(json)), 0);
	}
	if (http_send(http, &req, &resp, &err) < 0) {
		print_error("control %s: %s\n", path, err.message);
		fail();
	}
	if (resp.status != 200) {
		print_error("control %s: HTTP %d %.*s\n", path, resp.status,
			    resp.body ? (int)resp.body->len : 0, resp.body ? (const char *)resp.body->buf : "");
		fail();
	}
	if (resp.body && resp.body->len) {
		char *text = strndup((const char *)resp.body->buf, resp.body->len);
		o = json_tokener_parse(text);
		free(text);
	}
	return o;
}

#define SKIP_WITHOUT_FAKES()                                                                       \
	do {                                                                                       \
		if (!http) {                                                                       \
			skip();                                                                    \
			return;                                                                    \
		}                                                                                  \
	} while (0)

static int aws_transient(const struct http_response *resp, void *userdata)
{
	return aws_parse_error(resp, NULL) == -EAGAIN;
}

/* Sign and send with retries; returns what the transport says (the caller parses). */
static int aws_call(struct http_request *req, const struct aws_creds *c, struct http_response *resp)
{
	struct http_retry policy = { .transient = aws_transient, .max_attempts = 4, .deadline_ms = 20000 };
	struct kms_error err = {};
	int r;

	assert_int_equal(sigv4_sign(req, c, "us-east-1", "kms", time(NULL)), 0);
	r = http_send_retry(http, req, &policy, resp, &err);
	if (r < 0)
		print_error("transport: %s\n", err.message);
	return r;
}

static void imds_credentials(struct aws_creds *ret)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_free_ char *token = NULL, *role = NULL;
	struct kms_error err = {};
	char base[64];

	snprintf(base, sizeof(base), "http://127.0.0.1:%d", imds_port);
	assert_int_equal(aws_imds_build_token(base, 300, &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(aws_imds_parse_token(&resp, &token, &err), 0);
	http_request_done(&req);
	http_response_done(&resp);
	assert_int_equal(aws_imds_build_role(base, token, &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(aws_imds_parse_role(&resp, &role, &err), 0);
	http_request_done(&req);
	http_response_done(&resp);
	assert_int_equal(aws_imds_build_credentials(base, token, role, &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(aws_imds_parse_credentials(&resp, ret, &err), 0);
	assert_non_null(ret->session_token);
	assert_true(ret->expiration > time(NULL));
}

static void test_aws_end_to_end(void **state)
{
	_cleanup_(aws_creds_done) struct aws_creds c = {};
	_cleanup_secret_ struct secret *plain = NULL, *back = NULL;
	_cleanup_(aws_ciphertext_done) struct aws_ciphertext ct = {}, dk = {}, re = {};
	_cleanup_(aws_key_metadata_done) struct aws_key_metadata md = {};
	_cleanup_free_ char *ep = NULL, *key_id = NULL, *arn = NULL, *used = NULL, *marker = NULL;
	struct http_request req = {};
	struct http_response resp = {};
	struct kms_error err = {};
	struct json_object *o, *v;
	const struct aws_kv ctx[] = { { "kmscrypt:volume", "0b6c1d8e-7a1f-4f7e-9d55-0c5ad5b1e0aa" },
				      { "kmscrypt:keyslot", "1" } };
	const struct aws_kv wrong[] = { { "kmscrypt:volume", "0b6c1d8e-7a1f-4f7e-9d55-0c5ad5b1e0aa" },
					{ "kmscrypt:keyslot", "2" } };
	bool found_alias = false;
	struct http_stats st0, st1;

	SKIP_WITHOUT_FAKES();
	assert_true(asprintf(&ep, "https://127.0.0.1:%d", aws_port) > 0);
	o = ctl(aws_cport, "/control", "{\"op\":\"create_key\",\"description\":\"kmscrypt e2e\"}");
	assert_true(json_object_object_get_ex(o, "KeyId", &v));
	key_id = strdup(json_object_get_string(v));
	assert_true(json_object_object_get_ex(o, "Arn", &v));
	arn = strdup(json_object_get_string(v));
	json_object_put(o);
	for (int i = 0; i < 3; i++) {
		char body[256];
		snprintf(body, sizeof(body), "{\"op\":\"create_alias\",\"alias\":\"alias/kmscrypt-e2e-%d\","
			 "\"key_id\":\"%s\"}", i, key_id);
		json_object_put(ctl(aws_cport, "/control", body));
	}
	json_object_put(ctl(aws_cport, "/counters/reset", "{}"));

	imds_credentials(&c);
	http_client_get_stats(http, &st0);

	/* DescribeKey */
	assert_int_equal(aws_build_describe_key(ep, "alias/kmscrypt-e2e-0", &req), 0);
	assert_int_equal(aws_call(&req, &c, &resp), 0);
	assert_int_equal(aws_parse_describe_key(&resp, &md, &err), 0);
	assert_true(md.enabled);
	assert_string_equal(md.key_state, "Enabled");
	assert_string_equal(md.arn, arn);
	http_request_done(&req);
	http_response_done(&resp);

	/* Encrypt -> Decrypt, bound to the context */
	assert_int_equal(secret_random(32, &plain), 0);
	assert_int_equal(aws_build_encrypt(ep, key_id, ctx, 2, plain, &req), 0);
	assert_int_equal(aws_call(&req, &c, &resp), 0);
	assert_int_equal(aws_parse_encrypt(&resp, &ct, &err), 0);
	assert_string_equal(ct.key_id, arn);
	http_request_done(&req);
	http_response_done(&resp);

	assert_int_equal(aws_build_decrypt(ep, key_id, ctx, 2, ct.blob, ct.blob_len, &req), 0);
	assert_int_equal(aws_call(&req, &c, &resp), 0);
	assert_int_equal(aws_parse_decrypt(&resp, &back, &used, &err), 0);
	assert_int_equal(back->len, 32);
	assert_memory_equal(back->buf, plain->buf, 32);
	assert_string_equal(used, arn);
	http_request_done(&req);
	http_response_done(&resp);

	/* another volume's context: the blob does not open -> denied */
	assert_int_equal(aws_build_decrypt(ep, key_id, wrong, 2, ct.blob, ct.blob_len, &req), 0);
	assert_int_equal(aws_call(&req, &c, &resp), 0);
	assert_int_equal(aws_parse_decrypt(&resp, &back, NULL, &err), -EACCES);
	assert_string_equal(err.code, "InvalidCiphertextException");
	assert_true(*err.request_id);
	http_request_done(&req);
	http_response_done(&resp);

	/* GenerateDataKeyWithoutPlaintext, ReEncrypt */
	assert_int_equal(aws_build_generate_data_key_without_plaintext(ep, key_id, ctx, 2, 32, &req), 0);
	assert_int_equal(aws_call(&req, &c, &resp), 0);
	assert_int_equal(aws_parse_generate_data_key_without_plaintext(&resp, &dk, &err), 0);
	http_request_done(&req);
	http_response_done(&resp);
	assert_int_equal(aws_build_reencrypt(ep, dk.blob, dk.blob_len, key_id, ctx, 2, key_id, wrong, 2, &req), 0);
	assert_int_equal(aws_call(&req, &c, &resp), 0);
	assert_int_equal(aws_parse_reencrypt(&resp, &re, &err), 0);
	assert_string_equal(re.source_key_id, arn);
	http_request_done(&req);
	http_response_done(&resp);

	/* ListAliases, one per page */
	for (int page = 0; page < 20; page++) {
		struct aws_alias_list l = {};

		assert_int_equal(aws_build_list_aliases(ep, NULL, 1, marker, &req), 0);
		assert_int_equal(aws_call(&req, &c, &resp), 0);
		assert_int_equal(aws_parse_list_aliases(&resp, &l, &err), 0);
		for (size_t i = 0; i < l.n_aliases; i++)
			if (strcmp(l.aliases[i].name, "alias/kmscrypt-e2e-2") == 0)
				found_alias = true;
		free(marker);
		marker = l.next_marker ? strdup(l.next_marker) : NULL;
		aws_alias_list_done(&l);
		http_request_done(&req);
		http_response_done(&resp);
		if (!marker)
			break;
	}
	assert_true(found_alias);

	/* throttled twice (HTTP 400 ThrottlingException), then served */
	json_object_put(ctl(aws_cport, "/faults", "{\"throttle\":2,\"action\":\"Decrypt\"}"));
	assert_int_equal(aws_build_decrypt(ep, key_id, ctx, 2, ct.blob, ct.blob_len, &req), 0);
	assert_int_equal(aws_call(&req, &c, &resp), 0);
	back = secret_free(back);
	assert_int_equal(aws_parse_decrypt(&resp, &back, NULL, &err), 0);
	http_request_done(&req);
	http_response_done(&resp);
	json_object_put(ctl(aws_cport, "/faults/reset", "{}"));

	/* a disabled key is an answer, not retried */
	{
		char body[256];
		snprintf(body, sizeof(body), "{\"op\":\"disable_key\",\"key_id\":\"%s\"}", key_id);
		json_object_put(ctl(aws_cport, "/control", body));
	}
	assert_int_equal(aws_build_decrypt(ep, key_id, ctx, 2, ct.blob, ct.blob_len, &req), 0);
	assert_int_equal(aws_call(&req, &c, &resp), 0);
	assert_int_equal(aws_parse_decrypt(&resp, &back, NULL, &err), -EACCES);
	assert_string_equal(err.code, "DisabledException");
	http_request_done(&req);
	http_response_done(&resp);

	/* a wrong secret key: signature error, denied */
	{
		struct aws_creds bad = {};

		bad.access_key_id = strdup(c.access_key_id);
		bad.session_token = strdup(c.session_token);
		assert_int_equal(secret_from("not-the-secret", 14, &bad.secret_access_key), 0);
		assert_int_equal(aws_build_describe_key(ep, key_id, &req), 0);
		assert_int_equal(aws_call(&req, &bad, &resp), 0);
		assert_int_equal(aws_parse_describe_key(&resp, &md, &err), -EACCES);
		assert_string_equal(err.code, "InvalidSignatureException");
		aws_creds_done(&bad);
		http_request_done(&req);
		http_response_done(&resp);
	}

	/* all of the above on one TLS connection to KMS */
	http_client_get_stats(http, &st1);
	o = ctl(aws_cport, "/counters", NULL);
	assert_true(json_object_object_get_ex(o, "tls_handshakes", &v));
	print_message("aws: %d TLS handshakes, %" PRIu64 " new client connections (KMS+control)\n",
		      json_object_get_int(v), st1.connects - st0.connects);
	assert_int_equal(json_object_get_int(v), 1);
	json_object_put(o);
}

static void test_vault_end_to_end(void **state)
{
	_cleanup_(vault_auth_done) struct vault_auth auth = {};
	_cleanup_(vault_token_info_done) struct vault_token_info ti = {};
	_cleanup_(vault_key_info_done) struct vault_key_info ki = {};
	_cleanup_(vault_ciphertext_done) struct vault_ciphertext ct = {}, rw = {};
	_cleanup_secret_ struct secret *plain = NULL, *back = NULL, *sid = NULL;
	_cleanup_free_ char *addr = NULL, *role_id = NULL;
	struct vault_target t = { .mount = "transit" };
	const char aad[] = "kmscrypt:v1:0b6c1d8e-7a1f-4f7e-9d55-0c5ad5b1e0aa:1";
	const struct vault_binding b = { .aad = (const uint8_t *)aad, .aad_len = strlen(aad) };
	const struct vault_binding wrong = { .aad = (const uint8_t *)"other", .aad_len = 5 };
	struct http_request req = {};
	struct http_response resp = {};
	struct kms_error err = {};
	struct json_object *o, *v;

	SKIP_WITHOUT_FAKES();
	assert_true(asprintf(&addr, "https://127.0.0.1:%d", vault_port) > 0);
	t.addr = addr;
	json_object_put(ctl(vault_cport, "/control", "{\"op\":\"create_key\",\"name\":\"kmscrypt\"}"));
	json_object_put(ctl(vault_cport, "/control",
			    "{\"op\":\"set_policy\",\"name\":\"kmscrypt\",\"rules\":{\"transit/encrypt/kmscrypt\":"
			    "[\"update\"],\"transit/decrypt/kmscrypt\":[\"update\"],\"transit/rewrap/kmscrypt\":"
			    "[\"update\"],\"transit/keys/kmscrypt\":[\"read\"]}}"));
	o = ctl(vault_cport, "/control", "{\"op\":\"create_approle\",\"name\":\"kmscrypt\",\"policies\":"
					 "[\"default\",\"kmscrypt\"]}");
	assert_true(json_object_object_get_ex(o, "role_id", &v));
	role_id = strdup(json_object_get_string(v));
	assert_true(json_object_object_get_ex(o, "secret_id", &v));
	assert_int_equal(secret_from(json_object_get_string(v), strlen(json_object_get_string(v)), &sid), 0);
	json_object_put(o);

	/* AppRole login, lookup-self */
	assert_int_equal(vault_build_approle_login(&t, NULL, role_id, sid, &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(vault_parse_approle_login(&resp, &auth, &err), 0);
	http_request_done(&req);
	http_response_done(&resp);
	t.token = auth.client_token;
	assert_int_equal(vault_build_token_lookup_self(&t, &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(vault_parse_token_lookup_self(&resp, &ti, &err), 0);
	assert_true(ti.ttl > 0);
	http_request_done(&req);
	http_response_done(&resp);

	/* key read */
	assert_int_equal(vault_build_key_read(&t, "kmscrypt", &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(vault_parse_key(&resp, &ki, &err), 0);
	assert_true(ki.aead);
	assert_int_equal(ki.latest_version, 1);
	http_request_done(&req);
	http_response_done(&resp);

	/* encrypt/decrypt with associated_data */
	assert_int_equal(secret_random(32, &plain), 0);
	assert_int_equal(vault_build_encrypt(&t, "kmscrypt", plain, &b, 0, &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(vault_parse_encrypt(&resp, &ct, &err), 0);
	assert_int_equal(ct.key_version, 1);
	http_request_done(&req);
	http_response_done(&resp);
	assert_int_equal(vault_build_decrypt(&t, "kmscrypt", ct.ciphertext, &b, &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(vault_parse_decrypt(&resp, &back, &err), 0);
	assert_int_equal(back->len, 32);
	assert_memory_equal(back->buf, plain->buf, 32);
	http_request_done(&req);
	http_response_done(&resp);
	assert_int_equal(vault_build_decrypt(&t, "kmscrypt", ct.ciphertext, &wrong, &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(vault_parse_decrypt(&resp, &back, &err), -EACCES);
	http_request_done(&req);
	http_response_done(&resp);

	/* rotate; an AAD-bound ciphertext cannot be rewrapped, so decrypt + encrypt to v2; then v1 is
	 * too old */
	json_object_put(ctl(vault_cport, "/control", "{\"op\":\"rotate_key\",\"name\":\"kmscrypt\"}"));
	assert_int_equal(vault_build_rewrap(&t, "kmscrypt", ct.ciphertext, &b, &req), -EOPNOTSUPP);
	assert_int_equal(vault_build_encrypt(&t, "kmscrypt", back, &b, 0, &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(vault_parse_encrypt(&resp, &rw, &err), 0);
	assert_int_equal(rw.key_version, 2);
	http_request_done(&req);
	http_response_done(&resp);
	{
		/* rewrap itself, on a ciphertext without associated_data */
		_cleanup_(vault_ciphertext_done) struct vault_ciphertext c1 = {}, c2 = {};

		assert_int_equal(vault_build_encrypt(&t, "kmscrypt", plain, NULL, 1, &req), 0);
		assert_int_equal(http_send(http, &req, &resp, &err), 0);
		assert_int_equal(vault_parse_encrypt(&resp, &c1, &err), 0);
		assert_int_equal(c1.key_version, 1);
		http_request_done(&req);
		http_response_done(&resp);
		assert_int_equal(vault_build_rewrap(&t, "kmscrypt", c1.ciphertext, NULL, &req), 0);
		assert_int_equal(http_send(http, &req, &resp, &err), 0);
		assert_int_equal(vault_parse_rewrap(&resp, &c2, &err), 0);
		assert_int_equal(c2.key_version, 2);
		http_request_done(&req);
		http_response_done(&resp);
	}
	json_object_put(ctl(vault_cport, "/control",
			    "{\"op\":\"key_config\",\"name\":\"kmscrypt\",\"min_decryption_version\":2}"));
	assert_int_equal(vault_build_decrypt(&t, "kmscrypt", ct.ciphertext, &b, &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(vault_parse_decrypt(&resp, &back, &err), -EACCES);
	print_message("vault: old version: %s\n", err.message);
	http_request_done(&req);
	http_response_done(&resp);

	/* sealed: transient; the retry loop gives up after max attempts and the codec says -EAGAIN */
	json_object_put(ctl(vault_cport, "/control", "{\"op\":\"seal\"}"));
	assert_int_equal(vault_build_decrypt(&t, "kmscrypt", rw.ciphertext, &b, &req), 0);
	assert_int_equal(http_send_retry(http, &req, &(struct http_retry){ .max_attempts = 2 }, &resp, &err), 0);
	assert_int_equal(resp.status, 503);
	assert_int_equal(vault_parse_decrypt(&resp, &back, &err), -EAGAIN);
	http_response_done(&resp);
	json_object_put(ctl(vault_cport, "/control", "{\"op\":\"unseal\"}"));
	assert_int_equal(http_send_retry(http, &req, NULL, &resp, &err), 0);
	back = secret_free(back);
	assert_int_equal(vault_parse_decrypt(&resp, &back, &err), 0);
	assert_memory_equal(back->buf, plain->buf, 32);
	http_request_done(&req);
	http_response_done(&resp);

	/* a bad token: denied */
	t.token = "hvs.not-a-token";
	assert_int_equal(vault_build_decrypt(&t, "kmscrypt", rw.ciphertext, &b, &req), 0);
	assert_int_equal(http_send(http, &req, &resp, &err), 0);
	assert_int_equal(vault_parse_decrypt(&resp, &back, &err), -EACCES);
	http_request_done(&req);
	http_response_done(&resp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_aws_end_to_end),
		cmocka_unit_test(test_vault_end_to_end),
	};

	unsetenv("HTTPS_PROXY");
	unsetenv("https_proxy");
	unsetenv("ALL_PROXY");
	unsetenv("all_proxy");
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
