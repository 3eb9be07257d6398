/* SPDX-License-Identifier: MIT */
/* AWS KMS JSON 1.1 and IMDSv2 codec: request bodies byte for byte, reply parsing, error classes. */
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
#include "codec/sigv4.h"
#include "kms/aws/aws_codec.h"
#include "kms/provider.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define FIX KMSCRYPT_SOURCE_DIR "/tests/fixtures/aws/"
#define EP "https://kms.us-east-1.amazonaws.com"

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
	/* fixtures end with a newline; JSON allows trailing whitespace */
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

static void assert_kms_headers(const struct http_request *req, const char *action)
{
	char target[64];

	snprintf(target, sizeof(target), "TrentService.%s", action);
	assert_string_equal(req->method, "POST");
	assert_string_equal(req->scheme, "https");
	assert_string_equal(req->host, "kms.us-east-1.amazonaws.com");
	assert_string_equal(req->path, "/");
	assert_null(req->query);
	assert_string_equal(http_request_header_get(req, "Host"), "kms.us-east-1.amazonaws.com");
	assert_string_equal(http_request_header_get(req, "Content-Type"), "application/x-amz-json-1.1");
	assert_string_equal(http_request_header_get(req, "X-Amz-Target"), target);
}

static const struct aws_kv ctx[] = {
	{ "kmscrypt:volume", "0b6c1d8e-7a1f-4f7e-9d55-0c5ad5b1e0aa" },
	{ "kmscrypt:keyslot", "1" },
};

static void test_endpoint(void **state)
{
	_cleanup_free_ char *ep = NULL;

	assert_int_equal(aws_kms_endpoint("eu-central-1", &ep), 0);
	assert_string_equal(ep, "https://kms.eu-central-1.amazonaws.com");
	assert_int_equal(aws_kms_endpoint("eu/../x", &ep), -EINVAL);
	assert_int_equal(aws_kms_endpoint("", &ep), -EINVAL);
}

static void test_build_encrypt(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_secret_ struct secret *plain = NULL;
	const uint8_t key[4] = { 0xde, 0xad, 0xbe, 0xef };

	assert_int_equal(secret_from(key, sizeof(key), &plain), 0);
	assert_int_equal(aws_build_encrypt(EP, "alias/kmscrypt", ctx, 2, plain, &req), 0);
	assert_kms_headers(&req, "Encrypt");
	assert_body(&req, "{\"KeyId\":\"alias/kmscrypt\",\"Plaintext\":\"3q2+7w==\",\"EncryptionContext\":"
			  "{\"kmscrypt:volume\":\"0b6c1d8e-7a1f-4f7e-9d55-0c5ad5b1e0aa\","
			  "\"kmscrypt:keyslot\":\"1\"}}");
	/* KMS calls are https only; empty or oversized plaintext is refused */
	http_request_done(&req);
	assert_int_equal(aws_build_encrypt("http://kms.example", "k", NULL, 0, plain, &req), -EINVAL);
	plain->len = 0;
	assert_int_equal(aws_build_encrypt(EP, "k", NULL, 0, plain, &req), -EINVAL);
	plain->len = 4;
}

static void test_build_decrypt(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};
	const uint8_t blob[] = { 1, 2, 3, 0xff };

	assert_int_equal(aws_build_decrypt(EP, "arn:aws:kms:us-east-1:111122223333:key/x\"y", ctx, 2, blob,
					   sizeof(blob), &req),
			 0);
	assert_kms_headers(&req, "Decrypt");
	assert_body(&req, "{\"CiphertextBlob\":\"AQID/w==\",\"KeyId\":\"arn:aws:kms:us-east-1:111122223333:"
			  "key/x\\\"y\",\"EncryptionContext\":{\"kmscrypt:volume\":"
			  "\"0b6c1d8e-7a1f-4f7e-9d55-0c5ad5b1e0aa\",\"kmscrypt:keyslot\":\"1\"}}");
	http_request_done(&req);
	assert_int_equal(aws_build_decrypt(EP, NULL, NULL, 0, blob, sizeof(blob), &req), 0);
	assert_body(&req, "{\"CiphertextBlob\":\"AQID/w==\"}");
}

static void test_build_others(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};
	const uint8_t blob[] = { 0, 0, 0 };

	assert_int_equal(aws_build_generate_data_key_without_plaintext(EP, "alias/k", ctx + 1, 1, 32, &req), 0);
	assert_kms_headers(&req, "GenerateDataKeyWithoutPlaintext");
	assert_body(&req, "{\"KeyId\":\"alias/k\",\"EncryptionContext\":{\"kmscrypt:keyslot\":\"1\"},"
			  "\"NumberOfBytes\":32}");
	http_request_done(&req);
	assert_int_equal(aws_build_generate_data_key_without_plaintext(EP, "alias/k", NULL, 0, 0, &req), -EINVAL);

	assert_int_equal(aws_build_describe_key(EP, "alias/k", &req), 0);
	assert_kms_headers(&req, "DescribeKey");
	assert_body(&req, "{\"KeyId\":\"alias/k\"}");
	http_request_done(&req);

	assert_int_equal(aws_build_list_aliases(EP, NULL, 0, NULL, &req), 0);
	assert_kms_headers(&req, "ListAliases");
	assert_body(&req, "{}");
	http_request_done(&req);
	assert_int_equal(aws_build_list_aliases(EP, "k1", 50, "eyJub3QiOiJhIHJlYWwgbWFya2VyIn0=", &req), 0);
	assert_body(&req, "{\"KeyId\":\"k1\",\"Limit\":50,\"Marker\":\"eyJub3QiOiJhIHJlYWwgbWFya2VyIn0=\"}");
	http_request_done(&req);
	assert_int_equal(aws_build_list_aliases(EP, NULL, 101, NULL, &req), -EINVAL);

	assert_int_equal(aws_build_reencrypt(EP, blob, sizeof(blob), "k1", ctx + 1, 1, "k2", ctx + 1, 1, &req), 0);
	assert_kms_headers(&req, "ReEncrypt");
	assert_body(&req, "{\"CiphertextBlob\":\"AAAA\",\"SourceKeyId\":\"k1\",\"SourceEncryptionContext\":"
			  "{\"kmscrypt:keyslot\":\"1\"},\"DestinationKeyId\":\"k2\","
			  "\"DestinationEncryptionContext\":{\"kmscrypt:keyslot\":\"1\"}}");
}

/* A built request signs and the body survives signing untouched. */
static void test_build_then_sign(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(aws_creds_done) struct aws_creds c = {};
	const uint8_t blob[] = { 1, 2, 3 };

	c.access_key_id = strdup("AKIDEXAMPLE");
	assert_int_equal(secret_from("secret", 6, &c.secret_access_key), 0);
	assert_int_equal(aws_build_decrypt(EP, "alias/k", NULL, 0, blob, sizeof(blob), &req), 0);
	assert_int_equal(sigv4_sign(&req, &c, "us-east-1", "kms", 1700000000), 0);
	assert_non_null(strstr(http_request_header_get(&req, "Authorization"),
			       "SignedHeaders=content-type;host;x-amz-date;x-amz-target,"));
	assert_body(&req, "{\"CiphertextBlob\":\"AQID\",\"KeyId\":\"alias/k\"}");
}

static void test_parse_decrypt(void **state)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_secret_ struct secret *plain = NULL;
	_cleanup_free_ char *key_id = NULL;
	struct kms_error err = {};

	resp_file(&resp, 200, "decrypt_reply.json");
	assert_int_equal(aws_parse_decrypt(&resp, &plain, &key_id, &err), 0);
	assert_int_equal(plain->len, 32);
	for (unsigned i = 0; i < 32; i++)
		assert_int_equal(plain->buf[i], i);
	assert_string_equal(key_id, "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab");
	http_response_done(&resp);

	/* escaped solidus inside the base64 is valid JSON */
	resp_set(&resp, 200, "{\"KeyId\":\"k\",\"Plaintext\":\"AQ\\/\\u002b\"}");
	plain = secret_free(plain);
	assert_int_equal(aws_parse_decrypt(&resp, &plain, NULL, &err), 0);
	assert_int_equal(plain->len, 3);
	assert_int_equal(plain->buf[0], 0x01);
	assert_int_equal(plain->buf[1], 0x0f);
	assert_int_equal(plain->buf[2], 0xfe);
	http_response_done(&resp);

	static const char *const bad[] = {
		"{\"KeyId\":\"k\"}",                                      /* no Plaintext */
		"{\"KeyId\":\"k\",\"Plaintext\":\"AQ==\",\"Plaintext\":\"Ag==\"}", /* twice */
		"{\"KeyId\":\"k\",\"Plaintext\":\"not base64!\"}",
		"{\"KeyId\":\"k\",\"Plaintext\":42}",
		"{\"KeyId\":\"k\",\"Plaintext\":\"AQ==\"",                /* truncated */
		"{\"KeyId\":\"k\",\"Plaintext\":\"AQ==\"} x",
		"{\"Plaintext\":\"AQ==\"}", /* no KeyId */
		"{\"KeyId\":\"k\",\"Plaintext\":\"\"}",
		"[{\"KeyId\":\"k\",\"Plaintext\":\"AQ==\"}]",
		"",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct secret *p = NULL;

		resp_set(&resp, 200, bad[i]);
		assert_int_equal(aws_parse_decrypt(&resp, &p, NULL, &err), -EBADMSG);
		assert_null(p);
		http_response_done(&resp);
	}
}

static void test_parse_ciphertext(void **state)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_(aws_ciphertext_done) struct aws_ciphertext c = {};
	struct kms_error err = {};

	resp_set(&resp, 200, "{\"CiphertextBlob\":\"AQIDBA==\",\"KeyId\":\"arn:k\","
			     "\"EncryptionAlgorithm\":\"SYMMETRIC_DEFAULT\"}");
	assert_int_equal(aws_parse_encrypt(&resp, &c, &err), 0);
	assert_int_equal(c.blob_len, 4);
	assert_string_equal(c.key_id, "arn:k");
	assert_string_equal(c.algorithm, "SYMMETRIC_DEFAULT");
	aws_ciphertext_done(&c);
	http_response_done(&resp);

	resp_set(&resp, 200, "{\"CiphertextBlob\":\"AQIDBA==\",\"KeyId\":\"arn:k2\",\"SourceKeyId\":\"arn:k1\","
			     "\"DestinationEncryptionAlgorithm\":\"SYMMETRIC_DEFAULT\"}");
	assert_int_equal(aws_parse_reencrypt(&resp, &c, &err), 0);
	assert_string_equal(c.source_key_id, "arn:k1");
	assert_string_equal(c.key_id, "arn:k2");
	aws_ciphertext_done(&c);
	http_response_done(&resp);

	resp_set(&resp, 200, "{\"CiphertextBlob\":\"AQIDBA==\",\"KeyId\":\"arn:k\",\"KeyMaterialId\":\"x\"}");
	assert_int_equal(aws_parse_generate_data_key_without_plaintext(&resp, &c, &err), 0);
	aws_ciphertext_done(&c);
	http_response_done(&resp);

	resp_set(&resp, 200, "{\"CiphertextBlob\":\"AQID*A==\",\"KeyId\":\"arn:k\"}");
	assert_int_equal(aws_parse_encrypt(&resp, &c, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"KeyId\":\"arn:k\"}");
	assert_int_equal(aws_parse_encrypt(&resp, &c, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "<html>");
	assert_int_equal(aws_parse_encrypt(&resp, &c, &err), -EBADMSG);
}

static void test_parse_describe_key(void **state)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_(aws_key_metadata_done) struct aws_key_metadata m = {};
	struct kms_error err = {};

	resp_file(&resp, 200, "describe_key.json");
	assert_int_equal(aws_parse_describe_key(&resp, &m, &err), 0);
	assert_string_equal(m.key_id, "1234abcd-12ab-34cd-56ef-1234567890ab");
	assert_string_equal(m.key_state, "Enabled");
	assert_string_equal(m.key_usage, "ENCRYPT_DECRYPT");
	assert_string_equal(m.key_spec, "SYMMETRIC_DEFAULT");
	assert_string_equal(m.key_manager, "CUSTOMER");
	assert_true(m.enabled);
	assert_int_equal(m.deletion_date, 0);
	aws_key_metadata_done(&m);
	http_response_done(&resp);

	resp_file(&resp, 200, "describe_key_pending_deletion.json");
	assert_int_equal(aws_parse_describe_key(&resp, &m, &err), 0);
	assert_false(m.enabled);
	assert_string_equal(m.key_state, "PendingDeletion");
	assert_int_equal(m.deletion_date, 1700086400);
	aws_key_metadata_done(&m);
	http_response_done(&resp);

	resp_set(&resp, 200, "{\"KeyMetadata\":{\"KeyId\":\"k\",\"Enabled\":\"yes\"}}");
	assert_int_equal(aws_parse_describe_key(&resp, &m, &err), -EBADMSG);
}

static void test_parse_list_aliases_paging(void **state)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_(aws_alias_list_done) struct aws_alias_list l = {};
	_cleanup_(http_request_done) struct http_request req = {};
	struct kms_error err = {};

	resp_file(&resp, 200, "list_aliases_page1.json");
	assert_int_equal(aws_parse_list_aliases(&resp, &l, &err), 0);
	assert_int_equal(l.n_aliases, 2);
	assert_true(l.truncated);
	assert_string_equal(l.aliases[0].name, "alias/aws/ebs");
	assert_string_equal(l.aliases[0].target_key_id, "0987dcba-09fe-87dc-65ba-ab0987654321");
	assert_null(l.aliases[1].target_key_id);
	/* the next page request carries the marker */
	assert_int_equal(aws_build_list_aliases(EP, NULL, 0, l.next_marker, &req), 0);
	assert_body(&req, "{\"Marker\":\"eyJub3QiOiJhIHJlYWwgbWFya2VyIn0=\"}");
	aws_alias_list_done(&l);
	http_response_done(&resp);

	resp_file(&resp, 200, "list_aliases_page2.json");
	assert_int_equal(aws_parse_list_aliases(&resp, &l, &err), 0);
	assert_int_equal(l.n_aliases, 1);
	assert_false(l.truncated);
	assert_null(l.next_marker);
	aws_alias_list_done(&l);
	http_response_done(&resp);

	resp_set(&resp, 200, "{\"Aliases\":[],\"Truncated\":true}");
	assert_int_equal(aws_parse_list_aliases(&resp, &l, &err), -EBADMSG);
}

struct err_case {
	int status;
	const char *body;
	const char *header; /* x-amzn-ErrorType */
	int want;
	const char *code;
};

static void test_parse_error(void **state)
{
	static const struct err_case cases[] = {
		{ 400, "{\"__type\":\"com.amazonaws.kms#AccessDeniedException\",\"message\":\"no\"}", NULL,
		  -EACCES, "AccessDeniedException" },
		{ 400, "{\"__type\":\"DisabledException\",\"message\":\"disabled\"}", NULL, -EACCES,
		  "DisabledException" },
		{ 400, "{\"__type\":\"KMSInvalidStateException\"}", NULL, -EACCES, "KMSInvalidStateException" },
		{ 400, "{\"__type\":\"NotFoundException\"}", NULL, -EACCES, "NotFoundException" },
		{ 400, "{\"__type\":\"InvalidCiphertextException\"}", NULL, -EACCES, "InvalidCiphertextException" },
		{ 400, "{\"__type\":\"IncorrectKeyException\"}", NULL, -EACCES, "IncorrectKeyException" },
		{ 400, "{\"__type\":\"InvalidKeyUsageException\"}", NULL, -EACCES, "InvalidKeyUsageException" },
		{ 400, "{\"__type\":\"com.amazon.coral.service#InvalidSignatureException\",\"message\":\"x\"}",
		  NULL, -EACCES, "InvalidSignatureException" },
		{ 400, "{\"__type\":\"UnrecognizedClientException\"}", NULL, -EACCES, "UnrecognizedClientException" },
		{ 403, "{\"__type\":\"IncompleteSignature\"}", NULL, -EACCES, "IncompleteSignature" },
		{ 400, "{\"__type\":\"ExpiredTokenException\",\"Message\":\"expired\"}", NULL, -EACCES,
		  "ExpiredTokenException" },
		{ 400, "{\"__type\":\"ThrottlingException\"}", NULL, -EAGAIN, "ThrottlingException" },
		{ 400, "{\"__type\":\"LimitExceededException\"}", NULL, -EAGAIN, "LimitExceededException" },
		{ 500, "{\"__type\":\"KMSInternalException\"}", NULL, -EAGAIN, "KMSInternalException" },
		{ 503, "{\"__type\":\"DependencyTimeoutException\"}", NULL, -EAGAIN, "DependencyTimeoutException" },
		{ 502, "<html>bad gateway</html>", NULL, -EAGAIN, "" },
		{ 503, NULL, NULL, -EAGAIN, "" },
		{ 429, NULL, NULL, -EAGAIN, "" },
		/* the code from the header when the body has none */
		{ 400, "", "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/",
		  -EACCES, "AccessDeniedException" },
		{ 400, "{}", "ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.service/",
		  -EAGAIN, "ThrottlingException" },
		/* an unknown named 4xx is an answer; an unnamed 400 with garbage is malformed */
		{ 400, "{\"__type\":\"SomeNewException\"}", NULL, -EACCES, "SomeNewException" },
		{ 400, "garbage", NULL, -EBADMSG, "" },
		{ 403, "<html>proxy says no</html>", NULL, -EACCES, "" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct http_response resp;
		struct kms_error err = {};
		const char *rid = "c0ffee00-1111-2222-3333-444455556666";

		resp_set(&resp, cases[i].status, cases[i].body);
		assert_int_equal(http_response_header_add(&resp, "x-amzn-RequestId", 16, rid, strlen(rid)), 0);
		if (cases[i].header)
			assert_int_equal(http_response_header_add(&resp, "x-amzn-ErrorType", 16, cases[i].header,
								  strlen(cases[i].header)),
					 0);
		if (aws_parse_error(&resp, &err) != cases[i].want) {
			print_error("case %zu: %s\n", i, err.message);
			fail();
		}
		assert_string_equal(err.code, cases[i].code);
		assert_string_equal(err.request_id, rid);
		assert_int_equal(err.http_status, cases[i].status);
		assert_null(strchr(err.message, '\n'));
		http_response_done(&resp);
	}
}

static void test_error_fixtures_and_dispatch(void **state)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	struct secret *plain = NULL;
	struct kms_error err = {};

	resp_file(&resp, 400, "error_access_denied.json");
	assert_int_equal(aws_parse_decrypt(&resp, &plain, NULL, &err), -EACCES);
	assert_null(plain);
	assert_string_equal(err.code, "AccessDeniedException");
	assert_non_null(strstr(err.message, "not authorized to perform: kms:Decrypt"));
	http_response_done(&resp);
	resp_file(&resp, 400, "error_throttling.json");
	assert_int_equal(aws_parse_decrypt(&resp, &plain, NULL, &err), -EAGAIN);
	http_response_done(&resp);
	resp_file(&resp, 400, "error_invalid_signature.json");
	assert_int_equal(aws_parse_decrypt(&resp, &plain, NULL, &err), -EACCES);
	assert_string_equal(err.code, "InvalidSignatureException");
}

static void test_imds(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_(aws_creds_done) struct aws_creds c = {};
	_cleanup_free_ char *token = NULL, *role = NULL;
	struct kms_error err = {};

	assert_int_equal(aws_imds_build_token(NULL, 21600, &req), 0);
	assert_string_equal(req.method, "PUT");
	assert_string_equal(req.scheme, "http");
	assert_string_equal(req.host, "169.254.169.254");
	assert_string_equal(req.path, "/latest/api/token");
	assert_true(req.flags & HTTP_REQ_METADATA);
	assert_string_equal(http_request_header_get(&req, "X-aws-ec2-metadata-token-ttl-seconds"), "21600");
	http_request_done(&req);
	assert_int_equal(aws_imds_build_token(NULL, 21601, &req), -EINVAL);

	resp_set(&resp, 200, "AQAEAFAKE-TOKEN==");
	assert_int_equal(aws_imds_parse_token(&resp, &token, &err), 0);
	assert_string_equal(token, "AQAEAFAKE-TOKEN==");
	http_response_done(&resp);
	resp_set(&resp, 403, "");
	assert_int_equal(aws_imds_parse_token(&resp, &role, &err), -EACCES);
	http_response_done(&resp);
	resp_set(&resp, 503, "");
	assert_int_equal(aws_imds_parse_token(&resp, &role, &err), -EAGAIN);
	http_response_done(&resp);

	assert_int_equal(aws_imds_build_role("http://127.0.0.1:9", token, &req), 0);
	assert_string_equal(req.path, "/latest/meta-data/iam/security-credentials/");
	assert_string_equal(http_request_header_get(&req, "X-aws-ec2-metadata-token"), token);
	http_request_done(&req);

	resp_set(&resp, 200, "kmscrypt-node-role\n");
	assert_int_equal(aws_imds_parse_role(&resp, &role, &err), 0);
	assert_string_equal(role, "kmscrypt-node-role");
	http_response_done(&resp);
	resp_set(&resp, 404, "");
	assert_int_equal(aws_imds_parse_role(&resp, &token, &err), -EACCES);
	http_response_done(&resp);

	assert_int_equal(aws_imds_build_credentials(NULL, token, role, &req), 0);
	assert_string_equal(req.path, "/latest/meta-data/iam/security-credentials/kmscrypt-node-role");
	http_request_done(&req);
	assert_int_equal(aws_imds_build_credentials(NULL, token, "../x", &req), -EINVAL);

	resp_file(&resp, 200, "imds_credentials.json");
	assert_int_equal(aws_imds_parse_credentials(&resp, &c, &err), 0);
	assert_string_equal(c.access_key_id, "ASIAEXAMPLEIMDS00001");
	assert_int_equal(c.secret_access_key->len, strlen("imdsSecretKeyExample/0000000000000000000+"));
	assert_memory_equal(c.secret_access_key->buf, "imdsSecretKeyExample/0000000000000000000+",
			    c.secret_access_key->len);
	assert_string_equal(c.session_token, "IQoJb3JpZ2luX2VjEXAMPLETOKEN==");
	assert_int_equal(c.expiration, 1714579200);
	http_response_done(&resp);

	resp_set(&resp, 200, "{\"Code\":\"Failure\",\"Message\":\"x\"}");
	aws_creds_done(&c);
	assert_int_equal(aws_imds_parse_credentials(&resp, &c, &err), -EAGAIN);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"Code\":\"Success\",\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\"}");
	assert_int_equal(aws_imds_parse_credentials(&resp, &c, &err), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_endpoint),
		cmocka_unit_test(test_build_encrypt),
		cmocka_unit_test(test_build_decrypt),
		cmocka_unit_test(test_build_others),
		cmocka_unit_test(test_build_then_sign),
		cmocka_unit_test(test_parse_decrypt),
		cmocka_unit_test(test_parse_ciphertext),
		cmocka_unit_test(test_parse_describe_key),
		cmocka_unit_test(test_parse_list_aliases_paging),
		cmocka_unit_test(test_parse_error),
		cmocka_unit_test(test_error_fixtures_and_dispatch),
		cmocka_unit_test(test_imds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
