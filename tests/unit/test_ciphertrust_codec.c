/* SPDX-License-Identifier: MIT */
/* CipherTrust Manager codec: request bodies and paths, reply parsing (tolerant where the
 * documentation is silent), the key rules of seed 000, the stored blob and the error classes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "codec/http_msg.h"
#include "kms/ciphertrust/ciphertrust_codec.h"
#include "kms/provider.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define BASE "https://cm.example.com:8443"

static void resp_set(struct http_response *resp, int status, const char *body)
{
	memset(resp, 0, sizeof(*resp));
	resp->status = status;
	if (body)
		assert_int_equal(secret_from(body, strlen(body), &resp->body), 0);
}

static char *body_of(const struct http_request *req)
{
	assert_non_null(req->body);
	return strndup((const char *)req->body->buf, req->body->len);
}

static struct secret *sec(const char *s)
{
	struct secret *x = NULL;

	assert_int_equal(secret_from(s, strlen(s), &x), 0);
	return x;
}

static void test_build_login(void **state)
{
	_cleanup_secret_ struct secret *pw = sec("p\"w\\1"), *rt = sec("RT-0123");
	struct http_request req = {};
	_cleanup_free_ char *b = NULL, *b2 = NULL;

	(void)state;
	assert_int_equal(ct_build_login_password(BASE, "kms user", pw, "dom1", &req), 0);
	assert_string_equal(req.method, "POST");
	assert_string_equal(req.host, "cm.example.com:8443");
	assert_string_equal(req.path, "/api/v1/auth/tokens");
	assert_string_equal(http_request_header_get(&req, "Content-Type"), "application/json");
	assert_string_equal(http_request_header_get(&req, "Accept"), "application/json");
	assert_null(http_request_header_get(&req, "Authorization"));
	b = body_of(&req);
	assert_string_equal(b, "{\"grant_type\":\"password\",\"username\":\"kms user\","
			       "\"password\":\"p\\\"w\\\\1\",\"domain\":\"dom1\"}");
	http_request_done(&req);

	assert_int_equal(ct_build_login_refresh(BASE, rt, &req), 0);
	b2 = body_of(&req);
	assert_string_equal(b2, "{\"grant_type\":\"refresh_token\",\"refresh_token\":\"RT-0123\"}");
	http_request_done(&req);

	/* no domain member without a domain; bad inputs */
	assert_int_equal(ct_build_login_password(BASE, "u", pw, NULL, &req), 0);
	{
		_cleanup_free_ char *b3 = body_of(&req);
		assert_null(strstr(b3, "domain"));
	}
	http_request_done(&req);
	assert_int_equal(ct_build_login_password(BASE, "", pw, NULL, &req), -EINVAL);
	assert_int_equal(ct_build_login_password("http://cm", "u", pw, NULL, &req), -EINVAL);
}

static void test_parse_login(void **state)
{
	struct http_response resp;
	struct secret *jwt = NULL;
	struct kms_error err = {};
	time_t exp = 0;

	(void)state;
	resp_set(&resp, 200,
		 "{\"jwt\":\"eyJh.eyJz.c2ln\",\"duration\":300,\"token_type\":\"Bearer\","
		 "\"refresh_token\":\"secret-rt\"}");
	assert_int_equal(ct_parse_login(&resp, 1000, &jwt, &exp, &err), 0);
	assert_int_equal(jwt->len, 14);
	assert_string_equal((const char *)jwt->buf, "eyJh.eyJz.c2ln"); /* NUL-terminated */
	assert_int_equal(exp, 1300);
	jwt = secret_free(jwt);
	http_response_done(&resp);

	/* duration as a string of digits; absent, 0 or fractional: the documented 300 s */
	resp_set(&resp, 200, "{\"jwt\":\"a.b.c\",\"duration\":\"120\"}");
	assert_int_equal(ct_parse_login(&resp, 1000, &jwt, &exp, &err), 0);
	assert_int_equal(exp, 1120);
	jwt = secret_free(jwt);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"jwt\":\"a.b.c\"}");
	assert_int_equal(ct_parse_login(&resp, 1000, &jwt, &exp, &err), 0);
	assert_int_equal(exp, 1300);
	jwt = secret_free(jwt);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"jwt\":\"a.b.c\",\"duration\":299.5}");
	assert_int_equal(ct_parse_login(&resp, 1000, &jwt, &exp, &err), 0);
	assert_int_equal(exp, 1300);
	jwt = secret_free(jwt);
	http_response_done(&resp);

	/* no jwt, a jwt that is no header value, not JSON */
	resp_set(&resp, 200, "{\"duration\":300}");
	assert_int_equal(ct_parse_login(&resp, 1000, &jwt, &exp, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"jwt\":\"a b\"}");
	assert_int_equal(ct_parse_login(&resp, 1000, &jwt, &exp, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"jwt\":\"a.b");
	assert_int_equal(ct_parse_login(&resp, 1000, &jwt, &exp, &err), -EBADMSG);
	http_response_done(&resp);

	/* refused: denied, with CipherTrust's code and message, never the request */
	memset(&err, 0, sizeof(err));
	resp_set(&resp, 401,
		 "{\"code\":2,\"codeDesc\":\"NCERRUnauthorized: Unauthorized\","
		 "\"message\":\"Invalid refresh token\"}");
	assert_int_equal(ct_parse_login(&resp, 1000, &jwt, &exp, &err), -EACCES);
	assert_string_equal(err.code, "NCERRUnauthorized");
	assert_int_equal(err.http_status, 401);
	assert_non_null(strstr(err.message, "Invalid refresh token"));
	http_response_done(&resp);
	assert_null(jwt);
}

static void test_keys(void **state)
{
	struct http_request req = {};
	struct http_response resp;
	struct ct_key k = {};
	struct kms_error err = {};
	bool found = true;

	(void)state;
	assert_int_equal(ct_build_key_find(BASE, "vol key/1+x", &req), 0);
	assert_string_equal(req.method, "GET");
	assert_string_equal(req.path, "/api/v1/vault/keys2");
	assert_string_equal(req.query, "name=vol%20key%2F1%2Bx&limit=100");
	assert_null(req.body);
	http_request_done(&req);
	assert_int_equal(ct_build_key_find(BASE, "a<b", &req), -EINVAL);

	assert_int_equal(ct_build_key_create(BASE, "vol", "AES", 256, &req), 0);
	{
		_cleanup_free_ char *b = body_of(&req);
		assert_string_equal(b, "{\"name\":\"vol\",\"algorithm\":\"aes\",\"size\":256,"
				       "\"usageMask\":12}");
	}
	http_request_done(&req);
	assert_int_equal(ct_build_key_create(BASE, "vol", "rsa", 2048, &req), -EINVAL);
	assert_int_equal(ct_build_key_create(BASE, "vol", "aes", 512, &req), -EINVAL);

	/* the exact name with the highest version wins; a prefix match does not count */
	resp_set(&resp, 200,
		 "{\"skip\":0,\"limit\":100,\"total\":3,\"resources\":["
		 "{\"id\":\"aa\",\"name\":\"vol\",\"state\":\"Active\",\"usageMask\":12,"
		 "\"algorithm\":\"AES\",\"size\":256,\"version\":0},"
		 "{\"id\":\"bb\",\"name\":\"vol\",\"state\":\"Active\",\"usageMask\":12,"
		 "\"algorithm\":\"AES\",\"size\":256,\"version\":\"2\"},"
		 "{\"id\":\"cc\",\"name\":\"vol2\",\"state\":\"Active\",\"version\":7}]}");
	assert_int_equal(ct_parse_key_list(&resp, "vol", &k, &found, &err), 0);
	assert_true(found);
	assert_string_equal(k.id, "bb");
	assert_string_equal(k.version, "2");
	assert_int_equal(k.usage_mask, 12);
	assert_true(k.has_usage_mask);
	assert_int_equal(k.size, 256);
	ct_key_done(&k);
	http_response_done(&resp);

	resp_set(&resp, 200, "{\"skip\":0,\"limit\":100,\"total\":0,\"resources\":[]}");
	assert_int_equal(ct_parse_key_list(&resp, "vol", &k, &found, &err), 0);
	assert_false(found);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"total\":0,\"resources\":null}");
	found = true;
	assert_int_equal(ct_parse_key_list(&resp, "vol", &k, &found, &err), 0);
	assert_false(found);
	http_response_done(&resp);
	/* other keys may look like anything; the key of that name must be well-formed */
	resp_set(&resp, 200,
		 "{\"resources\":[{\"id\":\"x\"},7,{\"name\":\"o\",\"usageMask\":\"a\"}]}");
	found = true;
	assert_int_equal(ct_parse_key_list(&resp, "vol", &k, &found, &err), 0);
	assert_false(found);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"resources\":[{\"name\":\"vol\",\"usageMask\":\"a\"}]}");
	assert_int_equal(ct_parse_key_list(&resp, "vol", &k, &found, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"resources\":[{\"name\":\"vol\",\"version\":-1}]}");
	assert_int_equal(ct_parse_key_list(&resp, "vol", &k, &found, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 403, "{\"code\":3,\"codeDesc\":\"NCERRForbidden: x\",\"message\":\"no\"}");
	assert_int_equal(ct_parse_key_list(&resp, "vol", &k, &found, &err), -EACCES);
	http_response_done(&resp);

	resp_set(&resp, 201,
		 "{\"id\":\"dd\",\"name\":\"vol\",\"state\":\"Active\",\"usageMask\":12,"
		 "\"algorithm\":\"AES\",\"size\":128,\"version\":0}");
	assert_int_equal(ct_parse_key(&resp, &k, &err), 0);
	assert_string_equal(k.id, "dd");
	assert_string_equal(k.version, "0");
	assert_int_equal(ct_key_check(&k, &err), 0);
	ct_key_done(&k);
	http_response_done(&resp);
}

/* Seed 000: Active, Encrypt and Decrypt allowed; one error per criterion. */
static void test_key_check(void **state)
{
	struct ct_key k = {.name = (char *)"vol",
			   .state = (char *)"Active",
			   .algorithm = (char *)"AES",
			   .usage_mask = 12,
			   .has_usage_mask = true};
	struct kms_error err = {};

	(void)state;
	assert_int_equal(ct_key_check(&k, &err), 0);
	k.usage_mask = 12 | 16 | 32;
	assert_int_equal(ct_key_check(&k, &err), 0);

	k.state = (char *)"Deactivated";
	assert_int_equal(ct_key_check(&k, &err), -EACCES);
	assert_string_equal(err.code, "KeyNotActive");
	assert_non_null(strstr(err.message, "Deactivated, not Active"));
	k.state = (char *)"Pre-Active";
	assert_int_equal(ct_key_check(&k, &err), -EACCES);
	k.state = (char *)"Active";

	k.usage_mask = 8;
	assert_int_equal(ct_key_check(&k, &err), -EACCES);
	assert_string_equal(err.code, "KeyUsageEncrypt");
	assert_non_null(strstr(err.message, "does not allow Encrypt"));
	k.usage_mask = 4 | 1;
	assert_int_equal(ct_key_check(&k, &err), -EACCES);
	assert_string_equal(err.code, "KeyUsageDecrypt");
	assert_non_null(strstr(err.message, "does not allow Decrypt"));
	k.usage_mask = 3;
	assert_int_equal(ct_key_check(&k, &err), -EACCES);
	assert_string_equal(err.code, "KeyUsage");
	k.usage_mask = 12;

	k.algorithm = (char *)"RSA";
	assert_int_equal(ct_key_check(&k, &err), -EINVAL);
	assert_string_equal(err.code, "KeyAlgorithm");
	k.algorithm = (char *)"aes";
	assert_int_equal(ct_key_check(&k, &err), 0);
	/* a reduced key view without state or mask is not held against the key */
	k.state = NULL;
	k.has_usage_mask = false;
	k.usage_mask = 0;
	assert_int_equal(ct_key_check(&k, &err), 0);
}

static void test_encrypt_blob_decrypt(void **state)
{
	_cleanup_secret_ struct secret *plain = sec("0123456789abcdef");
	static const char aad[] = "kmscrypt:v1:uuid:1";
	struct http_request req = {};
	struct http_response resp;
	struct kms_error err = {};
	struct secret *out = NULL;
	char ver[24], *blob = NULL;
	size_t blob_len = 0;

	(void)state;
	assert_int_equal(ct_build_encrypt(BASE, "vol", plain, aad, strlen(aad), &req), 0);
	assert_string_equal(req.path, "/api/v1/crypto/encrypt");
	{
		_cleanup_free_ char *b = body_of(&req);
		/* base64("0123456789abcdef"), base64("kmscrypt:v1:uuid:1") */
		assert_string_equal(b,
				    "{\"id\":\"vol\",\"type\":\"name\","
				    "\"plaintext\":\"MDEyMzQ1Njc4OWFiY2RlZg==\",\"mode\":\"gcm\","
				    "\"aad\":\"a21zY3J5cHQ6djE6dXVpZDox\"}");
	}
	http_request_done(&req);

	/* every member kept, the echoed aad too (replaced on decrypt); version 0 is a version */
	resp_set(&resp, 200,
		 "{\"id\":\"k1\",\"version\":0,\"mode\":\"gcm\",\"iv\":\"SVY=\","
		 "\"tag\":\"VEFH\",\"ciphertext\":\"Q1Q=\",\"aad\":\"b2xk\",\"extra\":[1]}");
	assert_int_equal(ct_parse_encrypt(&resp, &blob, &blob_len, ver, sizeof(ver), &err), 0);
	http_response_done(&resp);
	assert_string_equal(ver, "0");
	assert_string_equal(blob, "{\"id\":\"k1\",\"version\":0,\"mode\":\"gcm\",\"iv\":\"SVY=\","
				  "\"tag\":\"VEFH\",\"ciphertext\":\"Q1Q=\",\"aad\":\"b2xk\","
				  "\"extra\":[1]}");
	assert_int_equal(ct_blob_check(blob, blob_len, ver, sizeof(ver)), 0);
	assert_int_equal(ct_build_decrypt(BASE, "vol", blob, blob_len, aad, strlen(aad), &req), 0);
	assert_string_equal(req.path, "/api/v1/crypto/decrypt");
	{
		_cleanup_free_ char *b = body_of(&req);
		assert_string_equal(b,
				    "{\"id\":\"k1\",\"version\":0,\"mode\":\"gcm\",\"iv\":\"SVY=\","
				    "\"tag\":\"VEFH\",\"ciphertext\":\"Q1Q=\",\"extra\":[1],"
				    "\"aad\":\"a21zY3J5cHQ6djE6dXVpZDox\"}");
	}
	http_request_done(&req);
	free(blob);

	/* string version kept as a string; no mode: gcm added; no id: the key by name */
	resp_set(&resp, 200,
		 "{\"version\":\"3\",\"iv\":\"SVY=\",\"tag\":\"VEFH\",\"ciphertext\":\"Q1Q=\"}");
	assert_int_equal(ct_parse_encrypt(&resp, &blob, &blob_len, ver, sizeof(ver), &err), 0);
	http_response_done(&resp);
	assert_string_equal(ver, "3");
	assert_int_equal(ct_build_decrypt(BASE, "vol", blob, blob_len, aad, strlen(aad), &req), 0);
	{
		_cleanup_free_ char *b = body_of(&req);
		assert_string_equal(b, "{\"version\":\"3\",\"iv\":\"SVY=\",\"tag\":\"VEFH\","
				       "\"ciphertext\":\"Q1Q=\",\"mode\":\"gcm\","
				       "\"aad\":\"a21zY3J5cHQ6djE6dXVpZDox\",\"id\":\"vol\","
				       "\"type\":\"name\"}");
	}
	http_request_done(&req);
	free(blob);

	/* malformed replies: a missing field, another mode, a bad version, key material, not JSON
	 */
	static const char *const badreplies[] = {
	    "{\"version\":0,\"iv\":\"SVY=\",\"ciphertext\":\"Q1Q=\"}",
	    "{\"version\":0,\"mode\":\"cbc\",\"iv\":\"SVY=\",\"tag\":\"VEFH\",\"ciphertext\":\"Q1Q="
	    "\"}",
	    "{\"version\":\"v1\",\"iv\":\"SVY=\",\"tag\":\"VEFH\",\"ciphertext\":\"Q1Q=\"}",
	    "{\"version\":1.5,\"iv\":\"SVY=\",\"tag\":\"VEFH\",\"ciphertext\":\"Q1Q=\"}",
	    "{\"iv\":\"SVY=\",\"tag\":\"VEFH\",\"ciphertext\":\"Q1Q=\",\"plaintext\":\"eA==\"}",
	    "{\"iv\":\"\",\"tag\":\"VEFH\",\"ciphertext\":\"Q1Q=\"}",
	    "[1,2]",
	    "{\"iv\":",
	};
	for (size_t i = 0; i < ARRAY_SIZE(badreplies); i++) {
		resp_set(&resp, 200, badreplies[i]);
		assert_int_equal(ct_parse_encrypt(&resp, &blob, &blob_len, ver, sizeof(ver), &err),
				 -EBADMSG);
		http_response_done(&resp);
		assert_int_equal(
		    ct_blob_check(badreplies[i], strlen(badreplies[i]), ver, sizeof(ver)),
		    -EBADMSG);
	}
	assert_int_equal(ct_build_decrypt(BASE, "vol", "{}", 2, aad, strlen(aad), &req), -EINVAL);

	resp_set(&resp, 200,
		 "{\"plaintext\":\"MDEyMzQ1Njc4OWFiY2RlZg==\",\"id\":\"k1\",\"version\":0}");
	assert_int_equal(ct_parse_decrypt(&resp, &out, &err), 0);
	assert_int_equal(out->len, 16);
	assert_memory_equal(out->buf, "0123456789abcdef", 16);
	out = secret_free(out);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"plaintext\":\"***\"}");
	assert_int_equal(ct_parse_decrypt(&resp, &out, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "{}");
	assert_int_equal(ct_parse_decrypt(&resp, &out, &err), -EBADMSG);
	http_response_done(&resp);
}

static void test_version_text(void **state)
{
	static const struct {
		const char *json;
		int r;
		const char *text;
	} cases[] = {
	    {"0", 0, "0"},
	    {"7", 0, "7"},
	    {"\"12\"", 0, "12"},
	    {"3.0", 0, "3"},
	    {"-1", -EBADMSG, NULL},
	    {"\"\"", -EBADMSG, NULL},
	    {"\"1a\"", -EBADMSG, NULL},
	    {"true", -EBADMSG, NULL},
	    {"null", -EBADMSG, NULL},
	    {"2.5", -EBADMSG, NULL},
	};
	char buf[24];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct json_object *o = json_tokener_parse(cases[i].json);
		assert_int_equal(ct_version_text(o, buf, sizeof(buf)), cases[i].r);
		if (cases[i].text)
			assert_string_equal(buf, cases[i].text);
		json_object_put(o);
	}
}

static void test_parse_error(void **state)
{
	static const struct {
		int status;
		enum ct_op op;
		int r;
		bool rejected;
	} cases[] = {
	    {400, CT_OP_DECRYPT, -EACCES, true},  {422, CT_OP_DECRYPT, -EACCES, true},
	    {403, CT_OP_DECRYPT, -EACCES, false}, {404, CT_OP_DECRYPT, -EACCES, false},
	    {401, CT_OP_DECRYPT, -EACCES, false}, {400, CT_OP_ENCRYPT, -EACCES, false},
	    {401, CT_OP_LOGIN, -EACCES, false},	  {429, CT_OP_ENCRYPT, -EAGAIN, false},
	    {503, CT_OP_KEYS, -EAGAIN, false},	  {500, CT_OP_DECRYPT, -EAGAIN, false},
	    {408, CT_OP_LOGIN, -EAGAIN, false},	  {302, CT_OP_KEYS, -EBADMSG, false},
	};
	struct http_response resp;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct kms_error err = {};

		resp_set(&resp, cases[i].status,
			 "{\"code\":13,\"codeDesc\":\"NCERRCryptoOperationFailed: Crypto failed\","
			 "\"message\":\"cipher: message\\nauthentication failed\"}");
		assert_int_equal(ct_parse_error(&resp, cases[i].op, &err), cases[i].r);
		assert_int_equal(err.token_rejected, cases[i].rejected);
		assert_int_equal(err.http_status, cases[i].status);
		assert_string_equal(err.code, "NCERRCryptoOperationFailed");
		assert_non_null(strstr(err.message, "authentication failed"));
		assert_null(strchr(err.message, '\n'));
		http_response_done(&resp);
	}
	/* a body that is not CipherTrust's: status only; other error shapes */
	{
		struct kms_error err = {};
		resp_set(&resp, 502, "<html>bad gateway</html>");
		assert_int_equal(ct_parse_error(&resp, CT_OP_KEYS, &err), -EAGAIN);
		assert_string_equal(err.message, "CipherTrust: HTTP 502");
		assert_string_equal(err.code, "");
		http_response_done(&resp);
		resp_set(&resp, 400, "{\"error\":\"invalid_grant\"}");
		assert_int_equal(ct_parse_error(&resp, CT_OP_LOGIN, &err), -EACCES);
		assert_non_null(strstr(err.message, "invalid_grant"));
		http_response_done(&resp);
	}
}

/* kms policy: the key usage mask and the four key permissions of seed 000, from the settings. */
static void test_policy(void **state)
{
	extern const struct kms_provider kms_provider_ciphertrust;
	struct kms_setting set[] = {
	    {.key = (char *)"Url", .value = (char *)"https://cm.example.com"},
	    {.key = (char *)"KeyName", .value = (char *)"vol"},
	    {.key = (char *)"Username", .value = (char *)"kms"},
	};
	struct kms_config cfg = {.name = (char *)"prod",
				 .provider = &kms_provider_ciphertrust,
				 .settings = set,
				 .n_settings = ARRAY_SIZE(set)};
	struct kms_error err = {};
	char *out = NULL, *json;
	struct json_object *o, *perm, *v;

	(void)state;
	assert_non_null(kms_provider_ciphertrust.policy);
	assert_int_equal(kms_provider_ciphertrust.policy(&cfg, &out, &err), 0);
	assert_non_null(strstr(out, "user 'kms'"));
	assert_non_null(strstr(out, "key 'vol'"));
	assert_int_equal(out[strlen(out) - 1], '\n');
	/* the JSON part parses and names exactly the permissions of the seed */
	json = strchr(out, '{');
	assert_non_null(json);
	*strrchr(json, '}') = 0;
	strcat(json, "}");
	o = json_tokener_parse(json);
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "usageMask", &v));
	assert_int_equal(json_object_get_int(v), 12);
	assert_true(json_object_object_get_ex(o, "meta", &v));
	assert_true(json_object_object_get_ex(v, "permissions", &perm));
	assert_int_equal(json_object_object_length(perm), 4);
	static const char *const names[] = {"ReadKey", "UseKey", "EncryptWithKey",
					    "DecryptWithKey"};
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		assert_true(json_object_object_get_ex(perm, names[i], &v));
		assert_string_equal(json_object_get_string(json_object_array_get_idx(v, 0)),
				    "kmscrypt-prod");
	}
	json_object_put(o);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_build_login),
	    cmocka_unit_test(test_parse_login),
	    cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_key_check),
	    cmocka_unit_test(test_encrypt_blob_decrypt),
	    cmocka_unit_test(test_version_text),
	    cmocka_unit_test(test_parse_error),
	    cmocka_unit_test(test_policy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
