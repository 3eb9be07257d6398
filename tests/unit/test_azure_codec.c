/* SPDX-License-Identifier: MIT */
/* Azure Key Vault and token codec: request lines, bodies and headers, reply parsing, the key
 * criteria of seed 001, error classes, the volume binding. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec/base64.h"
#include "codec/http_msg.h"
#include "kms/azure/azure_codec.h"
#include "kms/provider.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define VAULT "https://myvault.vault.azure.net"

static void resp_set(struct http_response *resp, int status, const char *body)
{
	memset(resp, 0, sizeof(*resp));
	resp->status = status;
	if (body)
		assert_int_equal(secret_from(body, strlen(body), &resp->body), 0);
}

static void assert_body(const struct http_request *req, const char *want)
{
	assert_non_null(req->body);
	assert_int_equal(req->body->len, strlen(want));
	assert_memory_equal(req->body->buf, want, strlen(want));
}

static void test_vault_url(void **state)
{
	_cleanup_free_ char *b = NULL, *res = NULL, *b2 = NULL, *res2 = NULL, *b3 = NULL,
			    *res3 = NULL;
	char *x = NULL;

	assert_int_equal(azure_vault_url_parse("https://myvault.vault.azure.net/", &b, &res), 0);
	assert_string_equal(b, VAULT);
	assert_string_equal(res, "https://vault.azure.net");
	/* sovereign clouds: the audience follows the vault's DNS suffix */
	assert_int_equal(azure_vault_url_parse("https://kv1.Vault.Azure.CN", &b2, &res2), 0);
	assert_string_equal(res2, "https://vault.azure.cn");
	assert_int_equal(azure_vault_url_parse("https://127.0.0.1:8443", &b3, &res3), 0);
	assert_string_equal(b3, "https://127.0.0.1:8443");
	assert_string_equal(res3, "https://vault.azure.net");
	free(b);
	b = NULL;
	assert_int_equal(azure_vault_url_parse("myvault.vault.azure.net", &b, NULL),
			 0); /* seed 004 */
	assert_string_equal(b, VAULT);
	assert_int_equal(azure_vault_url_parse("http://myvault.vault.azure.net", &x, NULL),
			 -EINVAL);
	assert_int_equal(azure_vault_url_parse("https://myvault.vault.azure.net/keys", &x, NULL),
			 -EINVAL);
	assert_int_equal(azure_vault_url_parse("https://u@myvault.vault.azure.net", &x, NULL),
			 -EINVAL);
	assert_null(x);
	assert_true(azure_key_name_ok("vol-key-1"));
	assert_false(azure_key_name_ok("vol_key"));
	assert_false(azure_key_name_ok(""));
	assert_true(azure_key_version_ok("0123456789abcdef0123456789abcdef"));
	assert_false(azure_key_version_ok("../x"));
	assert_true(azure_tenant_ok("72f988bf-86f1-41af-91ab-2d7cd011db47"));
	assert_true(azure_tenant_ok("contoso.onmicrosoft.com"));
	assert_false(azure_tenant_ok("a/b"));
}

static void test_token_request(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_secret_ struct secret *sec = NULL;

	assert_int_equal(secret_from("s&=+ x~", 7, &sec), 0);
	assert_int_equal(
	    azure_build_token(NULL, "tenant-1", "app-1", sec, "https://vault.azure.net", &req), 0);
	assert_string_equal(req.method, "POST");
	assert_string_equal(req.scheme, "https");
	assert_string_equal(req.host, "login.microsoftonline.com");
	assert_string_equal(req.path, "/tenant-1/oauth2/v2.0/token");
	assert_null(req.query);
	assert_string_equal(http_request_header_get(&req, "Content-Type"),
			    "application/x-www-form-urlencoded");
	assert_body(&req, "client_id=app-1&scope=https%3A%2F%2Fvault.azure.net%2F.default&"
			  "client_secret=s%26%3D%2B%20x~&grant_type=client_credentials");
	http_request_done(&req);
	/* sovereign cloud authority */
	assert_int_equal(azure_build_token("https://login.microsoftonline.us/", "t", "a", sec,
					   "https://vault.usgovcloudapi.net", &req),
			 0);
	assert_string_equal(req.host, "login.microsoftonline.us");
	http_request_done(&req);
	assert_int_equal(
	    azure_build_token(NULL, "t/../x", "a", sec, "https://vault.azure.net", &req), -EINVAL);
	assert_int_equal(
	    azure_build_token("http://login", "t", "a", sec, "https://vault.azure.net", &req),
	    -EINVAL);
}

static void test_imds_request(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};

	assert_int_equal(azure_build_imds_token(NULL, "https://vault.azure.net", NULL, &req), 0);
	assert_string_equal(req.method, "GET");
	assert_string_equal(req.scheme, "http");
	assert_string_equal(req.host, "169.254.169.254");
	assert_string_equal(req.path, "/metadata/identity/oauth2/token");
	assert_string_equal(req.query,
			    "api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net");
	assert_string_equal(http_request_header_get(&req, "Metadata"), "true");
	assert_true(req.flags & HTTP_REQ_METADATA);
	assert_null(req.body);
	http_request_done(&req);
	assert_int_equal(azure_build_imds_token("http://127.0.0.1:8080", "https://vault.azure.net",
						"11111111-2222-3333-4444-555555555555", &req),
			 0);
	assert_string_equal(req.host, "127.0.0.1:8080");
	assert_string_equal(req.query,
			    "api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"
			    "&client_id=11111111-2222-3333-4444-555555555555");
}

static void test_parse_token(void **state)
{
	struct http_response resp;
	struct secret *tok = NULL;
	struct kms_error err = {};
	time_t exp = 0;

	/* identity platform: expires_in is a number */
	resp_set(&resp, 200,
		 "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":3599,"
		 "\"access_token\":\"eyJ0.eyJ1.sig\"}");
	assert_int_equal(azure_parse_token(&resp, 1000, &tok, &exp, &err), 0);
	assert_string_equal((const char *)tok->buf, "eyJ0.eyJ1.sig");
	assert_int_equal(exp, 1000 + 3599);
	tok = secret_free(tok);
	http_response_done(&resp);
	/* IMDS: numbers as strings */
	resp_set(&resp, 200,
		 "{\"access_token\":\"abc\",\"client_id\":\"x\",\"expires_in\":\"86399\","
		 "\"expires_on\":\"1700000000\",\"resource\":\"https://vault.azure.net\","
		 "\"token_type\":\"Bearer\"}");
	assert_int_equal(azure_parse_token(&resp, 5, &tok, &exp, &err), 0);
	assert_int_equal(exp, 5 + 86399);
	tok = secret_free(tok);
	http_response_done(&resp);
	/* only expires_on */
	resp_set(&resp, 200, "{\"access_token\":\"abc\",\"expires_on\":\"1700000000\"}");
	assert_int_equal(azure_parse_token(&resp, 5, &tok, &exp, &err), 0);
	assert_int_equal(exp, 1700000000);
	tok = secret_free(tok);
	http_response_done(&resp);
	/* a bad secret: denied, with the AADSTS code's first line */
	resp_set(&resp, 401,
		 "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: Invalid "
		 "client secret provided.\\r\\nTrace ID: 1\",\"error_codes\":[7000215]}");
	assert_int_equal(azure_parse_token(&resp, 5, &tok, &exp, &err), -EACCES);
	assert_string_equal(err.code, "invalid_client");
	assert_non_null(strstr(err.message, "AADSTS7000215"));
	assert_null(strstr(err.message, "Trace ID"));
	http_response_done(&resp);
	resp_set(&resp, 400,
		 "{\"error\":\"invalid_request\",\"error_description\":\"Identity not found\"}");
	assert_int_equal(azure_parse_token(&resp, 5, &tok, &exp, &err), -EACCES);
	http_response_done(&resp);
	resp_set(&resp, 429, "{\"error\":\"temporarily_unavailable\"}");
	assert_int_equal(azure_parse_token(&resp, 5, &tok, &exp, &err), -EAGAIN);
	http_response_done(&resp);
	resp_set(&resp, 503, "<html>busy</html>");
	assert_int_equal(azure_parse_token(&resp, 5, &tok, &exp, &err), -EAGAIN);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"access_token\":\"abc\",\"expires_in\":\"soon\"}");
	assert_int_equal(azure_parse_token(&resp, 5, &tok, &exp, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"access_token\":\"a b\"}");
	assert_int_equal(azure_parse_token(&resp, 5, &tok, &exp, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"access_tok");
	assert_int_equal(azure_parse_token(&resp, 5, &tok, &exp, &err), -EBADMSG);
	http_response_done(&resp);
	assert_null(tok);
}

static void test_key_requests(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_secret_ struct secret *v = NULL;
	static const uint8_t raw[] = {0x61, 0x62, 0x63, 0xfb, 0xff};

	assert_int_equal(azure_build_key_get(VAULT, "vol", NULL, &req), 0);
	assert_string_equal(req.method, "GET");
	assert_string_equal(req.host, "myvault.vault.azure.net");
	assert_string_equal(req.path, "/keys/vol");
	assert_string_equal(req.query, "api-version=7.4");
	assert_null(req.body);
	http_request_done(&req);
	assert_int_equal(azure_build_key_get(VAULT, "vol", "abc123", &req), 0);
	assert_string_equal(req.path, "/keys/vol/abc123");
	http_request_done(&req);
	assert_int_equal(azure_build_key_create(VAULT, "vol", 3072, &req), 0);
	assert_string_equal(req.method, "POST");
	assert_string_equal(req.path, "/keys/vol/create");
	assert_string_equal(req.query, "api-version=7.4");
	assert_string_equal(http_request_header_get(&req, "Content-Type"), "application/json");
	assert_body(&req,
		    "{\"kty\":\"RSA\",\"key_size\":3072,\"key_ops\":[\"wrapKey\",\"unwrapKey\"],"
		    "\"attributes\":{\"enabled\":true},\"tags\":{\"created-by\":\"kmscrypt\"}}");
	http_request_done(&req);
	assert_int_equal(azure_build_key_create(VAULT, "vol", 1024, &req), -EINVAL);
	assert_int_equal(azure_build_rotation_policy_get(VAULT, "vol", &req), 0);
	assert_string_equal(req.path, "/keys/vol/rotationpolicy");
	http_request_done(&req);
	/* base64url without padding: 61 62 63 fb ff -> "YWJj-_8" */
	assert_int_equal(secret_from(raw, sizeof(raw), &v), 0);
	assert_int_equal(azure_build_wrap(VAULT, "vol", "v1", v, &req), 0);
	assert_string_equal(req.path, "/keys/vol/v1/wrapkey");
	assert_string_equal(req.query, "api-version=7.4");
	assert_body(&req, "{\"alg\":\"RSA-OAEP-256\",\"value\":\"YWJj-_8\"}");
	http_request_done(&req);
	assert_int_equal(azure_build_wrap(VAULT, "vol", NULL, v, &req), 0);
	assert_string_equal(req.path, "/keys/vol/wrapkey");
	http_request_done(&req);
	assert_int_equal(azure_build_unwrap(VAULT, "vol", "v2", raw, 4, &req), 0);
	assert_string_equal(req.path, "/keys/vol/v2/unwrapkey");
	assert_body(&req, "{\"alg\":\"RSA-OAEP-256\",\"value\":\"YWJj-w\"}");
	http_request_done(&req);
	assert_int_equal(azure_build_unwrap(VAULT, "v/ol", "v2", raw, 4, &req), -EINVAL);
	assert_int_equal(azure_build_unwrap(VAULT, "vol", "v.2", raw, 4, &req), -EINVAL);
	assert_int_equal(azure_build_key_get("http://x", "vol", NULL, &req), -EINVAL);
}

#define KEY_JSON(attrs, ops)                                                                       \
	"{\"key\":{\"kid\":\"" VAULT                                                               \
	"/keys/vol/0123456789abcdef0123456789abcdef\",\"kty\":\"RSA\","                            \
	"\"key_ops\":" ops ",\"n\":\"AMkA\",\"e\":\"AQAB\"},\"attributes\":{" attrs                \
	",\"created\":1600000000,\"recoveryLevel\":\"Recoverable\"},\"tags\":{}}"

static int check_key(const char *json, time_t now, struct kms_error *err)
{
	struct http_response resp;
	struct azure_key k = {};
	int r;

	resp_set(&resp, 200, json);
	r = azure_parse_key(&resp, &k, err);
	http_response_done(&resp);
	if (r < 0)
		return r;
	r = azure_key_check(&k, now, err);
	azure_key_done(&k);
	return r;
}

static void test_parse_key_and_criteria(void **state)
{
	struct http_response resp;
	struct azure_key k = {};
	struct kms_error err = {};
	resp_set(&resp, 200, KEY_JSON("\"enabled\":true", "[\"wrapKey\",\"unwrapKey\"]"));
	assert_int_equal(azure_parse_key(&resp, &k, &err), 0);
	assert_string_equal(k.name, "vol");
	assert_string_equal(k.version, "0123456789abcdef0123456789abcdef");
	assert_string_equal(k.kty, "RSA");
	assert_int_equal(k.key_size, 16); /* "AMkA": 00 c9 00, the leading zero byte dropped */
	assert_true(k.enabled && k.op_wrap && k.op_unwrap && !k.has_nbf && !k.has_exp);
	azure_key_done(&k);
	http_response_done(&resp);

	/* seed 001, one error per criterion */
	assert_int_equal(check_key(KEY_JSON("\"enabled\":true", "[\"wrapKey\",\"unwrapKey\"]"),
				   2000000000, &err),
			 0);
	assert_int_equal(
	    check_key(KEY_JSON("\"enabled\":false", "[\"wrapKey\",\"unwrapKey\"]"), 0, &err),
	    -EACCES);
	assert_string_equal(err.code, "KeyDisabled");
	assert_int_equal(check_key(KEY_JSON("\"enabled\":true,\"nbf\":1700000000",
					    "[\"wrapKey\",\"unwrapKey\"]"),
				   1700000001, &err),
			 0);
	assert_int_equal(check_key(KEY_JSON("\"enabled\":true,\"nbf\":1700000000",
					    "[\"wrapKey\",\"unwrapKey\"]"),
				   1699999999, &err),
			 -EACCES);
	assert_string_equal(err.code, "KeyNotYetActive");
	assert_non_null(strstr(err.message, "2023-11-14T22:13:20Z"));
	assert_int_equal(check_key(KEY_JSON("\"enabled\":true,\"exp\":4102444800",
					    "[\"wrapKey\",\"unwrapKey\"]"),
				   1700000000, &err),
			 -EACCES);
	assert_string_equal(err.code, "KeyExpires");
	assert_non_null(strstr(err.message, "2100-01-01T00:00:00Z"));
	assert_int_equal(
	    check_key(KEY_JSON("\"enabled\":true", "[\"encrypt\",\"unwrapKey\"]"), 0, &err),
	    -EACCES);
	assert_string_equal(err.code, "KeyOpsMissing");
	assert_non_null(strstr(err.message, "permit wrapKey;"));
	assert_int_equal(check_key(KEY_JSON("\"enabled\":true", "[]"), 0, &err), -EACCES);
	assert_non_null(strstr(err.message, "wrapKey and unwrapKey"));
	assert_int_equal(check_key("{\"key\":{\"kid\":\"" VAULT "/keys/e/1\",\"kty\":\"EC\","
				   "\"key_ops\":[\"wrapKey\",\"unwrapKey\"]},\"attributes\":"
				   "{\"enabled\":true}}",
				   0, &err),
			 -EACCES);
	assert_string_equal(err.code, "KeyNotRSA");
	/* malformed */
	assert_int_equal(check_key("{\"key\":{\"kid\":\"nope\",\"kty\":\"RSA\"},\"attributes\":"
				   "{\"enabled\":true}}",
				   0, &err),
			 -EBADMSG);
	assert_int_equal(check_key(KEY_JSON("\"enabled\":\"yes\"", "[]"), 0, &err), -EBADMSG);
	assert_int_equal(check_key("[1,2", 0, &err), -EBADMSG);
	/* not found */
	resp_set(&resp, 404,
		 "{\"error\":{\"code\":\"KeyNotFound\",\"message\":\"A key with (name/id) "
		 "vol was not found in this key vault.\"}}");
	assert_int_equal(azure_parse_key(&resp, &k, &err), -EACCES);
	assert_string_equal(err.code, "KeyNotFound");
	assert_int_equal(err.http_status, 404);
	http_response_done(&resp);
}

static void test_key_size(void **state)
{
	struct http_response resp;
	struct azure_key k = {};
	struct kms_error err = {};
	/* a 2048-bit modulus: 256 bytes, top bit set, base64url with a leading zero byte */
	char json[1024];
	uint8_t m[257];
	_cleanup_free_ char *b = NULL;

	memset(m, 0xa5, sizeof(m));
	m[0] = 0;
	assert_int_equal(base64_encode(m, sizeof(m), 1, &b), 0);
	snprintf(json, sizeof(json),
		 "{\"key\":{\"kid\":\"" VAULT "/keys/vol/1\",\"kty\":\"RSA-HSM\",\"n\":\"%s\"},"
		 "\"attributes\":{\"enabled\":true}}",
		 b);
	resp_set(&resp, 200, json);
	assert_int_equal(azure_parse_key(&resp, &k, &err), 0);
	assert_int_equal(k.key_size, 2048);
	assert_false(k.op_wrap); /* no key_ops: nothing permitted */
	azure_key_done(&k);
	http_response_done(&resp);
}

static void test_rotation_policy(void **state)
{
	struct http_response resp;
	struct kms_error err = {};
	bool rot = true;

	resp_set(&resp, 200,
		 "{\"id\":\"" VAULT "/keys/vol/rotationpolicy\",\"lifetimeActions\":[{"
		 "\"trigger\":{\"timeBeforeExpiry\":\"P30D\"},\"action\":{\"type\":\"Notify\"}}],"
		 "\"attributes\":{}}");
	assert_int_equal(azure_parse_rotation_policy(&resp, &rot, &err), 0);
	assert_false(rot);
	http_response_done(&resp);
	resp_set(&resp, 200,
		 "{\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P90D\"},"
		 "\"action\":{\"type\":\"Rotate\"}}],\"attributes\":{\"expiryTime\":\"P2Y\"}}");
	assert_int_equal(azure_parse_rotation_policy(&resp, &rot, &err), 0);
	assert_true(rot);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"lifetimeActions\":[{\"action\":{\"type\":\"rotate\"}}]}");
	assert_int_equal(azure_parse_rotation_policy(&resp, &rot, &err), 0);
	assert_true(rot);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"lifetimeActions\":{}}");
	assert_int_equal(azure_parse_rotation_policy(&resp, &rot, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 403,
		 "{\"error\":{\"code\":\"Forbidden\",\"message\":\"no\",\"innererror\":"
		 "{\"code\":\"AccessDenied\"}}}");
	assert_int_equal(azure_parse_rotation_policy(&resp, &rot, &err), -EACCES);
	assert_string_equal(err.code, "AccessDenied");
	http_response_done(&resp);
}

static void test_wrap_unwrap_replies(void **state)
{
	struct http_response resp;
	struct kms_error err = {};
	struct secret *plain = NULL;
	char *kid = NULL, *name = NULL, *ver = NULL;
	uint8_t *v = NULL;
	size_t n = 0;

	resp_set(&resp, 200, "{\"kid\":\"" VAULT "/keys/vol/abc\",\"value\":\"YWJj-_8\"}");
	assert_int_equal(azure_parse_wrap(&resp, &kid, &v, &n, &err), 0);
	assert_string_equal(kid, VAULT "/keys/vol/abc");
	assert_int_equal(n, 5);
	assert_memory_equal(v, "abc\xfb\xff", 5);
	assert_int_equal(azure_kid_split(kid, &name, &ver), 0);
	assert_string_equal(name, "vol");
	assert_string_equal(ver, "abc");
	free(kid);
	free(v);
	free(name);
	free(ver);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"kid\":\"" VAULT "/keys/vol/abc\",\"value\":\"YWJj+/8=\"}");
	assert_int_equal(azure_parse_wrap(&resp, &kid, &v, &n, &err), -EBADMSG); /* not base64url */
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"kid\":\"" VAULT "/vol/abc\",\"value\":\"YWJj\"}");
	assert_int_equal(azure_parse_wrap(&resp, &kid, &v, &n, &err), -EBADMSG);
	http_response_done(&resp);

	resp_set(&resp, 200, "{\"kid\":\"" VAULT "/keys/vol/abc\",\"value\":\"c2VjcmV0\"}");
	assert_int_equal(azure_parse_unwrap(&resp, &plain, &err), 0);
	assert_int_equal(plain->len, 6);
	assert_memory_equal(plain->buf, "secret", 6);
	plain = secret_free(plain);
	http_response_done(&resp);

	/* errors: classes and token_rejected only for a value that does not unwrap */
	resp_set(&resp, 400,
		 "{\"error\":{\"code\":\"BadParameter\",\"message\":\"The parameter is "
		 "incorrect.\\r\\n\"}}");
	memset(&err, 0, sizeof(err));
	assert_int_equal(azure_parse_unwrap(&resp, &plain, &err), -EACCES);
	assert_true(err.token_rejected);
	http_response_done(&resp);
	resp_set(&resp, 403,
		 "{\"error\":{\"code\":\"Forbidden\",\"message\":\"Operation \\\"unwrapKey\\\" "
		 "is not allowed on a disabled key.\",\"innererror\":{\"code\":\"KeyDisabled\"}}}");
	memset(&err, 0, sizeof(err));
	assert_int_equal(azure_parse_unwrap(&resp, &plain, &err), -EACCES);
	assert_false(err.token_rejected);
	assert_string_equal(err.code, "KeyDisabled");
	assert_non_null(strstr(err.message, "disabled key"));
	http_response_done(&resp);
	resp_set(&resp, 401,
		 "{\"error\":{\"code\":\"Unauthorized\",\"message\":\"[TokenExpired]\"}}");
	assert_int_equal(azure_parse_unwrap(&resp, &plain, &err), -EACCES);
	http_response_done(&resp);
	resp_set(&resp, 429, "{\"error\":{\"code\":\"Throttled\",\"message\":\"slow down\"}}");
	assert_int_equal(azure_parse_unwrap(&resp, &plain, &err), -EAGAIN);
	http_response_done(&resp);
	resp_set(&resp, 500, NULL);
	assert_int_equal(azure_parse_unwrap(&resp, &plain, &err), -EAGAIN);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"kid\":\"x\",\"value\":\"***\"}");
	assert_int_equal(azure_parse_unwrap(&resp, &plain, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "<html>");
	assert_int_equal(azure_parse_unwrap(&resp, &plain, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 302, NULL);
	assert_int_equal(azure_parse_unwrap(&resp, &plain, &err), -EBADMSG);
	http_response_done(&resp);
	assert_null(plain);
}

static void test_binding(void **state)
{
	struct kms_aad a = {.uuid = "11111111-2222-4333-8444-555555555555", .keyslot = 1};
	struct kms_aad b = {.uuid = "11111111-2222-4333-8444-555555555555", .keyslot = 2};
	struct kms_aad c = {.uuid = "99999999-2222-4333-8444-555555555555", .keyslot = 1};
	_cleanup_secret_ struct secret *s = NULL, *bound = NULL, *back = NULL, *junk = NULL;
	const char *want = "kmscrypt:v1:11111111-2222-4333-8444-555555555555:1";
	struct kms_error err = {};

	assert_int_equal(secret_random(64, &s), 0);
	assert_int_equal(azure_bind(&a, s, &bound), 0);
	assert_int_equal(bound->len, strlen(want) + 1 + 64);
	assert_memory_equal(bound->buf, want, strlen(want) + 1);
	assert_int_equal(azure_unbind(&a, bound, &back, &err), 0);
	assert_int_equal(back->len, 64);
	assert_memory_equal(back->buf, s->buf, 64);
	/* another keyslot, another volume: refused as a copied token */
	assert_int_equal(azure_unbind(&b, bound, &junk, &err), -EACCES);
	assert_true(err.token_rejected);
	assert_string_equal(err.code, "VolumeMismatch");
	memset(&err, 0, sizeof(err));
	assert_int_equal(azure_unbind(&c, bound, &junk, &err), -EACCES);
	assert_true(err.token_rejected);
	/* a value without the binding */
	assert_int_equal(azure_unbind(&a, s, &junk, &err), -EBADMSG);
	assert_null(junk);
	/* RSA-OAEP-256 with a 2048-bit key carries at most 190 bytes: the binding must fit */
	assert_true(bound->len <= 190);
}

static void test_policy(void **state)
{
	_cleanup_free_ char *t = NULL, *t2 = NULL;

	assert_int_equal(azure_policy_text(VAULT, "vol", true, false, "app-1", &t), 0);
	assert_non_null(strstr(t, "--spn app-1 --key-permissions get create wrapKey unwrapKey\n"));
	assert_non_null(strstr(t, "Key Vault Crypto Service Encryption User"));
	assert_non_null(strstr(t, "\"Microsoft.KeyVault/vaults/keys/wrap/action\""));
	assert_non_null(strstr(t, "\"Microsoft.KeyVault/vaults/keys/unwrap/action\""));
	assert_non_null(strstr(t, "\"Microsoft.KeyVault/vaults/keys/create/action\""));
	assert_int_equal(azure_policy_text(VAULT, "vol", false, true, NULL, &t2), 0);
	assert_non_null(strstr(t2, "--key-permissions get wrapKey unwrapKey\n"));
	assert_null(strstr(t2, "keys/create/action\""));
	assert_non_null(strstr(t2, "--object-id"));
	assert_int_equal(t2[strlen(t2) - 1], '\n');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vault_url),
	    cmocka_unit_test(test_token_request),
	    cmocka_unit_test(test_imds_request),
	    cmocka_unit_test(test_parse_token),
	    cmocka_unit_test(test_key_requests),
	    cmocka_unit_test(test_parse_key_and_criteria),
	    cmocka_unit_test(test_key_size),
	    cmocka_unit_test(test_rotation_policy),
	    cmocka_unit_test(test_wrap_unwrap_replies),
	    cmocka_unit_test(test_binding),
	    cmocka_unit_test(test_policy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
