/* SPDX-License-Identifier: MIT */
/* Vault Transit and auth codec: request bodies and headers, reply parsing, error classes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec/http_msg.h"
#include "kms/provider.h"
#include "kms/vault/vault_codec.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define FIX KMSCRYPT_SOURCE_DIR "/tests/fixtures/vault/"

static const struct vault_target target = {
	.addr = "https://vault.example:8200",
	.ns = "team-a",
	.token = "hvs.TOKEN",
	.mount = "transit",
};

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0;
	FILE *m;
	int c;

	assert_non_null(f);
	m = open_memstream(&buf, &len);
	while ((c = fgetc(f)) != EOF)
		fputc(c, m);
	fclose(m);
	fclose(f);
	return buf;
}

static void resp_set(struct http_response *resp, int status, const char *body)
{
	memset(resp, 0, sizeof(*resp));
	resp->status = status;
	if (body)
		assert_int_equal(secret_from(body, strlen(body), &resp->body), 0);
}

static void resp_file(struct http_response *resp, int status, const char *name)
{
	_cleanup_free_ char *path = NULL, *text = NULL;

	assert_true(asprintf(&path, FIX "%s", name) > 0);
	text = slurp(path);
	resp_set(resp, status, text);
}

static void assert_body(const struct http_request *req, const char *want)
{
	assert_non_null(req->body);
	if (req->body->len != strlen(want) || memcmp(req->body->buf, want, req->body->len) != 0) {
		print_error("body: %.*s\nwant: %s\n", (int)req->body->len, (const char *)req->body->buf, want);
		fail();
	}
}

static void test_build_encrypt_decrypt(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_secret_ struct secret *plain = NULL;
	const struct vault_binding b = { .aad = (const uint8_t *)"kmscrypt:v1:uuid:1", .aad_len = 18 };
	const struct vault_binding d = { .context = (const uint8_t *)"vol", .context_len = 3 };

	assert_int_equal(secret_from("\x01\x02\x03", 3, &plain), 0);
	assert_int_equal(vault_build_encrypt(&target, "kmscrypt", plain, &b, 0, &req), 0);
	assert_string_equal(req.method, "POST");
	assert_string_equal(req.host, "vault.example:8200");
	assert_string_equal(req.path, "/v1/transit/encrypt/kmscrypt");
	assert_string_equal(http_request_header_get(&req, "X-Vault-Token"), "hvs.TOKEN");
	assert_string_equal(http_request_header_get(&req, "X-Vault-Namespace"), "team-a");
	assert_string_equal(http_request_header_get(&req, "X-Vault-Request"), "true");
	assert_string_equal(http_request_header_get(&req, "Content-Type"), "application/json");
	assert_body(&req, "{\"plaintext\":\"AQID\",\"associated_data\":\"a21zY3J5cHQ6djE6dXVpZDox\"}");
	http_request_done(&req);

	assert_int_equal(vault_build_encrypt(&target, "kmscrypt", plain, &d, 2, &req), 0);
	assert_body(&req, "{\"plaintext\":\"AQID\",\"context\":\"dm9s\",\"key_version\":2}");
	http_request_done(&req);

	assert_int_equal(vault_build_decrypt(&target, "kmscrypt", "vault:v3:AAAA", &b, &req), 0);
	assert_string_equal(req.path, "/v1/transit/decrypt/kmscrypt");
	assert_body(&req, "{\"ciphertext\":\"vault:v3:AAAA\",\"associated_data\":\"a21zY3J5cHQ6djE6dXVpZDox\"}");
	http_request_done(&req);

	/* rewrap: context yes, associated_data is refused (Vault's rewrap does not take it) */
	assert_int_equal(vault_build_rewrap(&target, "kmscrypt", "vault:v1:AAAA", &b, &req), -EOPNOTSUPP);
	assert_int_equal(vault_build_rewrap(&target, "kmscrypt", "vault:v1:AAAA", &d, &req), 0);
	assert_string_equal(req.path, "/v1/transit/rewrap/kmscrypt");
	assert_body(&req, "{\"ciphertext\":\"vault:v1:AAAA\",\"context\":\"dm9s\"}");
	http_request_done(&req);

	/* refused: traversal in names, foreign ciphertext, http, header injection */
	assert_int_equal(vault_build_decrypt(&target, "../sys", "vault:v1:AAAA", NULL, &req), -EINVAL);
	assert_int_equal(vault_build_decrypt(&target, "k", "AAAA", NULL, &req), -EINVAL);
	assert_int_equal(vault_build_decrypt(&target, "k", "vault:v0:AAAA", NULL, &req), -EINVAL);
	{
		struct vault_target t = target;

		t.mount = "transit/../sys";
		assert_int_equal(vault_build_key_read(&t, "k", &req), -EINVAL);
		t = target;
		t.addr = "http://vault.example:8200";
		assert_int_equal(vault_build_key_read(&t, "k", &req), -EINVAL);
		t = target;
		t.token = "a\r\nX-Evil: 1";
		assert_int_equal(vault_build_key_read(&t, "k", &req), -EINVAL);
		t = target;
		t.mount = "team/transit";
		t.ns = NULL;
		assert_int_equal(vault_build_key_read(&t, "k", &req), 0);
		assert_string_equal(req.method, "GET");
		assert_string_equal(req.path, "/v1/team/transit/keys/k");
		assert_null(http_request_header_get(&req, "X-Vault-Namespace"));
		assert_null(req.body);
	}
}

static void test_build_auth(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_secret_ struct secret *sid = NULL;
	struct vault_target t = target;

	t.token = NULL;
	assert_int_equal(secret_from("s3cr\"t", 6, &sid), 0);
	assert_int_equal(vault_build_approle_login(&t, NULL, "role-1", sid, &req), 0);
	assert_string_equal(req.path, "/v1/auth/approle/login");
	assert_null(http_request_header_get(&req, "X-Vault-Token"));
	assert_body(&req, "{\"role_id\":\"role-1\",\"secret_id\":\"s3cr\\\"t\"}");
	http_request_done(&req);
	assert_int_equal(vault_build_approle_login(&t, "approle-kms", "role-1", sid, &req), 0);
	assert_string_equal(req.path, "/v1/auth/approle-kms/login");
	http_request_done(&req);

	assert_int_equal(vault_build_token_lookup_self(&target, &req), 0);
	assert_string_equal(req.method, "GET");
	assert_string_equal(req.path, "/v1/auth/token/lookup-self");
	assert_int_equal(vault_build_token_lookup_self(&t, &req), -EINVAL); /* no token */
}

static void test_ciphertext_version(void **state)
{
	unsigned v;

	assert_int_equal(vault_ciphertext_version("vault:v1:AAAA", &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(vault_ciphertext_version("vault:v123:ab+/cd==", &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(vault_ciphertext_version("vault:v:AAAA", &v), -EBADMSG);
	assert_int_equal(vault_ciphertext_version("vault:v01:AAAA", &v), -EBADMSG);
	assert_int_equal(vault_ciphertext_version("vault:v1:", &v), -EBADMSG);
	assert_int_equal(vault_ciphertext_version("vault:v1:AA AA", &v), -EBADMSG);
	assert_int_equal(vault_ciphertext_version("vault:v99999999999:AAAA", &v), -EBADMSG);
	assert_int_equal(vault_ciphertext_version("kms:v1:AAAA", &v), -EBADMSG);
}

static void test_parse_replies(void **state)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_(vault_ciphertext_done) struct vault_ciphertext c = {};
	_cleanup_(vault_key_info_done) struct vault_key_info k = {};
	_cleanup_(vault_auth_done) struct vault_auth a = {};
	_cleanup_(vault_token_info_done) struct vault_token_info ti = {};
	_cleanup_secret_ struct secret *plain = NULL;
	struct kms_error err = {};

	resp_file(&resp, 200, "encrypt_reply.json");
	assert_int_equal(vault_parse_encrypt(&resp, &c, &err), 0);
	assert_int_equal(c.key_version, 3);
	assert_string_equal(c.ciphertext, "vault:v3:Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5");
	http_response_done(&resp);

	resp_file(&resp, 200, "decrypt_reply.json");
	assert_int_equal(vault_parse_decrypt(&resp, &plain, &err), 0);
	assert_int_equal(plain->len, 32);
	assert_int_equal(plain->buf[31], 31);
	http_response_done(&resp);

	resp_file(&resp, 200, "key_read.json");
	assert_int_equal(vault_parse_key(&resp, &k, &err), 0);
	assert_string_equal(k.type, "aes256-gcm96");
	assert_string_equal(k.name, "kmscrypt");
	assert_int_equal(k.latest_version, 3);
	assert_int_equal(k.min_decryption_version, 2);
	assert_int_equal(k.min_encryption_version, 0);
	assert_true(k.aead);
	assert_true(k.supports_encryption && k.supports_decryption);
	assert_false(k.deletion_allowed || k.derived || k.exportable);
	http_response_done(&resp);

	resp_file(&resp, 200, "approle_login.json");
	assert_int_equal(vault_parse_approle_login(&resp, &a, &err), 0);
	assert_string_equal(a.client_token, "hvs.CAESIexampleTokenForKmscryptTests");
	assert_int_equal(a.lease_duration, 3600);
	assert_true(a.renewable);
	http_response_done(&resp);

	resp_file(&resp, 200, "lookup_self.json");
	assert_int_equal(vault_parse_token_lookup_self(&resp, &ti, &err), 0);
	assert_int_equal(ti.ttl, 3000);
	assert_true(ti.renewable);
	assert_string_equal(ti.display_name, "approle");
	http_response_done(&resp);

	static const char *const bad_decrypt[] = {
		"{\"data\":{}}",
		"{\"data\":{\"plaintext\":\"AQ==\"},\"data\":{\"plaintext\":\"Ag==\"}}",
		"{\"data\":{\"plaintext\":\"%%%\"}}",
		"{\"data\":{\"plaintext\":null}}",
		"{\"data\":\"plaintext\"}",
		"{\"data\":{\"plaintext\":\"AQ==\"}",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad_decrypt); i++) {
		struct secret *p = NULL;

		resp_set(&resp, 200, bad_decrypt[i]);
		assert_int_equal(vault_parse_decrypt(&resp, &p, &err), -EBADMSG);
		assert_null(p);
		http_response_done(&resp);
	}
	resp_set(&resp, 200, "{\"data\":{\"ciphertext\":\"aws:v1:AAAA\"}}");
	assert_int_equal(vault_parse_encrypt(&resp, &c, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"data\":{\"type\":\"aes256-gcm96\",\"latest_version\":-1,"
			     "\"min_decryption_version\":1}}");
	assert_int_equal(vault_parse_key(&resp, &k, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"auth\":{\"client_token\":\"a b\"}}");
	assert_int_equal(vault_parse_approle_login(&resp, &a, &err), -EBADMSG);
}

struct err_case {
	int status;
	const char *body;
	int want;
};

static void test_parse_error(void **state)
{
	static const struct err_case cases[] = {
		{ 403, "{\"errors\":[\"permission denied\"]}", -EACCES },
		{ 403, "{\"errors\":[\"1 error occurred:\\n\\t* permission denied\\n\\n\"]}", -EACCES },
		{ 400, "{\"errors\":[\"cipher: message authentication failed\"]}", -EACCES },
		{ 400, "{\"errors\":[\"ciphertext or signature version is disallowed by policy (too old)\"]}",
		  -EACCES },
		{ 400, "{\"errors\":[\"encryption key not found\"]}", -EACCES },
		{ 400, "{\"errors\":[\"invalid ciphertext: no prefix\"]}", -EBADMSG },
		{ 400, "{\"errors\":[\"invalid ciphertext: unable to decode ciphertext as base64\"]}", -EBADMSG },
		{ 404, "{\"errors\":[]}", -EACCES },
		{ 429, "{\"errors\":[\"request path \\\"transit/decrypt/k\\\": rate limit quota exceeded\"]}",
		  -EAGAIN },
		{ 500, "{\"errors\":[\"internal error\"]}", -EAGAIN },
		{ 503, "{\"errors\":[\"Vault is sealed\"]}", -EAGAIN },
		{ 412, "{\"errors\":[\"required index state not present\"]}", -EAGAIN },
		{ 502, "<html>", -EAGAIN },
		{ 400, "{\"errors\":[\"something new\"]}", -EACCES },
		{ 400, "garbage", -EBADMSG },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct http_response resp;
		struct kms_error err = {};
		int r;

		resp_set(&resp, cases[i].status, cases[i].body);
		r = vault_parse_error(&resp, &err);
		if (r != cases[i].want) {
			print_error("case %zu: got %d: %s\n", i, r, err.message);
			fail();
		}
		assert_int_equal(err.http_status, cases[i].status);
		assert_null(strchr(err.message, '\n'));
		assert_null(strchr(err.message, '\t'));
		http_response_done(&resp);
	}
	/* dispatch from a parser */
	{
		struct http_response resp;
		struct secret *p = NULL;
		struct kms_error err = {};

		resp_set(&resp, 403, "{\"errors\":[\"permission denied\"]}");
		assert_int_equal(vault_parse_decrypt(&resp, &p, &err), -EACCES);
		assert_non_null(strstr(err.message, "permission denied"));
		http_response_done(&resp);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build_encrypt_decrypt),
		cmocka_unit_test(test_build_auth),
		cmocka_unit_test(test_ciphertext_version),
		cmocka_unit_test(test_parse_replies),
		cmocka_unit_test(test_parse_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
