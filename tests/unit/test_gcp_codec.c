/* SPDX-License-Identifier: MIT */
/* Google Cloud KMS codec: CRC32C (RFC 3720 B.4), the RS256 JWT assertion (known answer made with
 * google-auth's RSASigner, tests/fixtures/gcp), token and KMS bodies, reply checks, error classes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "codec/http_msg.h"
#include "kms/gcp/gcp_codec.h"
#include "kms/provider.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define FIX KMSCRYPT_SOURCE_DIR "/tests/fixtures/gcp/"
#define KEYNAME "projects/p-1234/locations/global/keyRings/ring/cryptoKeys/vol"

static char *slurp(const char *name, size_t *ret_len)
{
	_cleanup_free_ char *path = NULL;
	char *buf = NULL;
	size_t len = 0;
	FILE *f, *m;
	int c;

	assert_true(asprintf(&path, FIX "%s", name) > 0);
	f = fopen(path, "rb");
	assert_non_null(f);
	m = open_memstream(&buf, &len);
	while ((c = fgetc(f)) != EOF)
		fputc(c, m);
	fclose(m);
	fclose(f);
	if (ret_len)
		*ret_len = len;
	return buf;
}

static void resp_set(struct http_response *resp, int status, const char *body)
{
	memset(resp, 0, sizeof(*resp));
	resp->status = status;
	if (body)
		assert_int_equal(secret_from(body, strlen(body), &resp->body), 0);
}

static char *body_str(const struct http_request *req)
{
	assert_non_null(req->body);
	return strndup((const char *)req->body->buf, req->body->len);
}

/* RFC 3720 appendix B.4 (bytes of the CRC as sent, little endian) and the common check value. */
static void test_crc32c_vectors(void **state)
{
	uint8_t buf[48];
	static const uint8_t pdu[48] = {0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
					0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00,
					0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00,
					0x00, 0x18, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
					0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};

	(void)state;
	memset(buf, 0, 32);
	assert_int_equal(gcp_crc32c(buf, 32), 0x8a9136aa);
	memset(buf, 0xff, 32);
	assert_int_equal(gcp_crc32c(buf, 32), 0x62a8ab43);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(gcp_crc32c(buf, 32), 0x46dd794e);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	assert_int_equal(gcp_crc32c(buf, 32), 0x113fdb5c);
	assert_int_equal(gcp_crc32c(pdu, 48), 0xd9963a56);
	assert_int_equal(gcp_crc32c("123456789", 9), 0xe3069283);
	assert_int_equal(gcp_crc32c("", 0), 0);
}

static void test_key_name_and_endpoints(void **state)
{
	struct gcp_key_ref k = {"p-1234", "global", "ring", "vol", "3"};
	_cleanup_free_ char *a = NULL, *b = NULL, *e1 = NULL, *e2 = NULL, *t1 = NULL, *t2 = NULL,
			    *t3 = NULL, *bad = NULL;

	(void)state;
	assert_int_equal(gcp_key_name(&k, false, &a), 0);
	assert_string_equal(a, KEYNAME);
	assert_int_equal(gcp_key_name(&k, true, &b), 0);
	assert_string_equal(b, KEYNAME "/cryptoKeyVersions/3");
	k.key = "a/b";
	assert_int_equal(gcp_key_name(&k, false, &bad), -EINVAL);
	k.key = "vol";
	k.version = "0";
	assert_int_equal(gcp_key_name(&k, true, &bad), -EINVAL);
	k.project = "P:x";
	assert_int_equal(gcp_key_name(&k, false, &bad), -EINVAL);

	/* seed 004: endpoints are "host[:port]" */
	assert_int_equal(gcp_endpoint_base("cloudkms.googleapis.com", &e1), 0);
	assert_string_equal(e1, "https://cloudkms.googleapis.com");
	assert_int_equal(gcp_endpoint_base("https://127.0.0.1:8443/", &e2), 0);
	assert_string_equal(e2, "https://127.0.0.1:8443");
	assert_int_equal(gcp_endpoint_base("http://kms.example", &bad), -EINVAL);
	assert_int_equal(gcp_endpoint_base("kms.example/x?y", &bad), -EINVAL);
	assert_int_equal(gcp_token_url("oauth2.googleapis.com", &t1), 0);
	assert_string_equal(t1, "https://oauth2.googleapis.com/token");
	assert_int_equal(gcp_token_url("https://127.0.0.1:9/oauth2/v4/token", &t2), 0);
	assert_string_equal(t2, "https://127.0.0.1:9/oauth2/v4/token");
	assert_int_equal(gcp_token_url("https://h:1", &t3), 0);
	assert_string_equal(t3, "https://h:1/token");
	assert_int_equal(gcp_token_url("http://h/token", &bad), -EINVAL);
}

static void test_service_account_and_keys(void **state)
{
	_cleanup_(gcp_service_account_done) struct gcp_service_account sa = {};
	_cleanup_free_ char *json = NULL, *b64 = NULL, *pem = NULL;
	struct kms_error err = {};
	EVP_PKEY *k1 = NULL, *k2 = NULL;
	size_t n, nb, np;

	(void)state;
	json = slurp("service_account.json", &n);
	assert_int_equal(gcp_parse_service_account(json, n, &sa, &err), 0);
	assert_string_equal(sa.client_email, "kms-test@kmscrypt-test.iam.gserviceaccount.com");
	assert_string_equal(sa.token_uri, "https://oauth2.googleapis.com/token");
	assert_string_equal(sa.private_key_id, "0123456789abcdef0123456789abcdef01234567");
	assert_non_null(memmem(sa.private_key->buf, sa.private_key->len, "BEGIN PRIVATE KEY", 17));
	assert_int_equal(gcp_load_private_key(sa.private_key->buf, sa.private_key->len, &k1), 0);

	/* seed 004: the private key as bare base64 of the DER, without the PEM markers */
	b64 = slurp("sa_key.b64", &nb);
	assert_int_equal(gcp_load_private_key(b64, nb, &k2), 0);
	assert_int_equal(EVP_PKEY_eq(k1, k2), 1);
	gcp_pkey_free(k2);
	pem = slurp("sa_key.pem", &np);
	assert_int_equal(gcp_load_private_key(pem, np, &k2), 0);
	gcp_pkey_free(k2);
	assert_int_equal(gcp_load_private_key("not a key", 9, &k2), -EBADMSG);
	assert_int_equal(gcp_load_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n", 32, &k2),
			 -EBADMSG);
	gcp_pkey_free(k1);

	/* not a service account key */
	assert_int_equal(gcp_parse_service_account("{\"type\":\"authorized_user\"}", 26,
						   &(struct gcp_service_account){}, &err),
			 -EBADMSG);
	assert_non_null(strstr(err.message, "authorized_user"));
	assert_int_equal(gcp_parse_service_account("{\"client_email\":\"a@b\"}", 22,
						   &(struct gcp_service_account){}, &err),
			 -EBADMSG);
	assert_non_null(strstr(err.message, "private_key"));
	assert_int_equal(
	    gcp_parse_service_account("{nope", 5, &(struct gcp_service_account){}, &err), -EBADMSG);
}

/* Known answer: the assertion google-auth's RSASigner makes for the same header, claims and key. */
static void test_jwt_known_answer(void **state)
{
	_cleanup_free_ char *pem = NULL, *want = NULL, *body = NULL;
	_cleanup_secret_ struct secret *jwt = NULL;
	_cleanup_(http_request_done) struct http_request req = {};
	EVP_PKEY *key = NULL;
	size_t np, nw;

	(void)state;
	pem = slurp("sa_key.pem", &np);
	want = slurp("jwt_expected.txt", &nw);
	while (nw && (want[nw - 1] == '\n'))
		want[--nw] = 0;
	assert_int_equal(gcp_load_private_key(pem, np, &key), 0);
	assert_int_equal(gcp_jwt_assertion(key, "0123456789abcdef0123456789abcdef01234567",
					   "kms-test@kmscrypt-test.iam.gserviceaccount.com",
					   GCP_TOKEN_URI, GCP_SCOPE, 1700000000, &jwt),
			 0);
	assert_int_equal(jwt->len, nw);
	assert_memory_equal(jwt->buf, want, nw);
	assert_int_equal(jwt->buf[jwt->len], 0);
	/* header and claims as Google documents them (base64url of the JSON) */
	assert_memory_equal(jwt->buf, "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIs", 36);
	/* a different clock gives a different assertion */
	{
		_cleanup_secret_ struct secret *j2 = NULL;
		assert_int_equal(gcp_jwt_assertion(key, NULL, "a@b.c", GCP_TOKEN_URI, GCP_SCOPE,
						   1700000001, &j2),
				 0);
		assert_false(j2->len == jwt->len && memcmp(j2->buf, jwt->buf, jwt->len) == 0);
		assert_int_equal(gcp_jwt_assertion(key, NULL, "a\"@b.c", GCP_TOKEN_URI, GCP_SCOPE,
						   1700000001, &j2),
				 -EINVAL);
	}

	/* the token request: RFC 7523 form body */
	assert_int_equal(gcp_build_token_request("https://oauth2.googleapis.com/token", jwt, &req),
			 0);
	assert_string_equal(req.method, "POST");
	assert_string_equal(req.host, "oauth2.googleapis.com");
	assert_string_equal(req.path, "/token");
	assert_string_equal(http_request_header_get(&req, "Content-Type"),
			    "application/x-www-form-urlencoded");
	body = body_str(&req);
	assert_true(strncmp(body,
			    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&"
			    "assertion=",
			    75) == 0);
	assert_string_equal(body + 75, want);
	gcp_pkey_free(key);
}

static void test_token_replies(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};
	struct http_response resp;
	struct kms_error err = {};
	struct secret *tok = NULL;
	uint32_t exp = 0;

	(void)state;
	assert_int_equal(gcp_build_metadata_token("http://127.0.0.1:1234", &req), 0);
	assert_string_equal(req.method, "GET");
	assert_string_equal(req.path, GCP_METADATA_TOKEN_PATH);
	assert_string_equal(http_request_header_get(&req, "Metadata-Flavor"), "Google");
	assert_true(req.flags & HTTP_REQ_METADATA);

	resp_set(&resp, 200,
		 "{\"access_token\":\"ya29.abc\",\"expires_in\":3599,"
		 "\"token_type\":\"Bearer\"}");
	assert_int_equal(gcp_parse_token(&resp, false, &tok, &exp, &err), 0);
	assert_string_equal((char *)tok->buf, "ya29.abc");
	assert_int_equal(tok->len, 8);
	assert_int_equal(exp, 3599);
	tok = secret_free(tok);
	http_response_done(&resp);

	resp_set(&resp, 400,
		 "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT "
		 "Signature.\"}");
	assert_int_equal(gcp_parse_token(&resp, false, &tok, &exp, &err), -EACCES);
	assert_string_equal(err.code, "invalid_grant");
	assert_non_null(strstr(err.message, "Invalid JWT Signature"));
	http_response_done(&resp);

	resp_set(&resp, 503, "oops");
	assert_int_equal(gcp_parse_token(&resp, true, &tok, &exp, &err), -EAGAIN);
	http_response_done(&resp);
	resp_set(&resp, 404, "Not Found");
	assert_int_equal(gcp_parse_token(&resp, true, &tok, &exp, &err), -EACCES);
	assert_non_null(strstr(err.message, "no service account"));
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"access_token\":\"a b\",\"expires_in\":1}");
	assert_int_equal(gcp_parse_token(&resp, false, &tok, &exp, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"access_token\":\"abc\",\"token_type\":\"MAC\"}");
	assert_int_equal(gcp_parse_token(&resp, false, &tok, &exp, &err), -EBADMSG);
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"expires_in\":10}");
	assert_int_equal(gcp_parse_token(&resp, false, &tok, &exp, &err), -EBADMSG);
	http_response_done(&resp);
}

static void test_encrypt_decrypt_bodies(void **state)
{
	_cleanup_(http_request_done) struct http_request enc = {}, dec = {}, get = {};
	_cleanup_secret_ struct secret *plain = NULL;
	_cleanup_free_ char *eb = NULL, *db = NULL;
	static const char aad[] = "kmscrypt:v1:uuid:1";
	uint8_t ct[3] = {1, 2, 3};
	char want[64];

	(void)state;
	assert_int_equal(secret_from("0123456789", 10, &plain), 0);
	assert_int_equal(gcp_build_encrypt("https://cloudkms.googleapis.com", KEYNAME, plain, aad,
					   strlen(aad), &enc),
			 0);
	assert_string_equal(enc.path, "/v1/" KEYNAME ":encrypt");
	assert_string_equal(http_request_header_get(&enc, "Content-Type"), "application/json");
	eb = body_str(&enc);
	assert_non_null(strstr(eb, "\"plaintext\":\"MDEyMzQ1Njc4OQ==\""));
	snprintf(want, sizeof(want), "\"plaintextCrc32c\":\"%u\"", gcp_crc32c("0123456789", 10));
	assert_non_null(strstr(eb, want));
	assert_non_null(strstr(eb, "\"additionalAuthenticatedData\":\"a21zY3J5cHQ6djE6dXVpZDox\""));
	snprintf(want, sizeof(want), "\"additionalAuthenticatedDataCrc32c\":\"%u\"",
		 gcp_crc32c(aad, strlen(aad)));
	assert_non_null(strstr(eb, want));

	assert_int_equal(gcp_build_decrypt("https://h:1", KEYNAME, ct, 3, aad, strlen(aad), &dec),
			 0);
	assert_string_equal(dec.path, "/v1/" KEYNAME ":decrypt");
	assert_string_equal(dec.host, "h:1");
	db = body_str(&dec);
	assert_non_null(strstr(db, "\"ciphertext\":\"AQID\""));
	snprintf(want, sizeof(want), "\"ciphertextCrc32c\":\"%u\"", gcp_crc32c(ct, 3));
	assert_non_null(strstr(db, want));
	assert_non_null(strstr(db, "\"additionalAuthenticatedDataCrc32c\""));
	/* decrypt names the CryptoKey, never a version */
	assert_int_equal(gcp_build_decrypt("https://h", KEYNAME "/cryptoKeyVersions/2", ct, 3, NULL,
					   0, &(struct http_request){}),
			 -EINVAL);
	assert_int_equal(
	    gcp_build_encrypt("http://h", KEYNAME, plain, NULL, 0, &(struct http_request){}),
	    -EINVAL);
	assert_int_equal(gcp_build_get_key("https://h", KEYNAME, &get), 0);
	assert_string_equal(get.method, "GET");
	assert_string_equal(get.path, "/v1/" KEYNAME);
	assert_null(get.body);
}

static char *encrypt_reply(const char *name, const char *ct64, long crc, const char *vp,
			   const char *va)
{
	char *s = NULL;
	char crcs[64] = "";

	if (crc >= 0)
		snprintf(crcs, sizeof(crcs), ",\"ciphertextCrc32c\":\"%ld\"", crc);
	assert_true(asprintf(&s,
			     "{\"name\":\"%s\",\"ciphertext\":\"%s\"%s%s%s%s%s,"
			     "\"protectionLevel\":\"SOFTWARE\"}",
			     name, ct64, crcs, vp ? ",\"verifiedPlaintextCrc32c\":" : "",
			     vp ? vp : "",
			     va ? ",\"verifiedAdditionalAuthenticatedDataCrc32c\":" : "",
			     va ? va : "") > 0);
	return s;
}

static void test_parse_encrypt(void **state)
{
	struct gcp_ciphertext c = {};
	struct http_response resp;
	struct kms_error err = {};
	uint8_t ct[3] = {1, 2, 3};
	long crc = (long)gcp_crc32c(ct, 3);
	char *s;

	(void)state;
	s = encrypt_reply(KEYNAME "/cryptoKeyVersions/7", "AQID", crc, "true", "true");
	resp_set(&resp, 200, s);
	free(s);
	assert_int_equal(gcp_parse_encrypt(&resp, KEYNAME, true, &c, &err), 0);
	assert_int_equal(c.ct_len, 3);
	assert_memory_equal(c.ct, ct, 3);
	assert_string_equal(c.version, "7");
	assert_string_equal(c.version_name, KEYNAME "/cryptoKeyVersions/7");
	gcp_ciphertext_done(&c);
	http_response_done(&resp);

	/* a bare number is accepted too */
	assert_true(asprintf(&s,
			     "{\"name\":\"%s/cryptoKeyVersions/1\",\"ciphertext\":\"AQID\","
			     "\"ciphertextCrc32c\":%ld,\"verifiedPlaintextCrc32c\":true}",
			     KEYNAME, crc) > 0);
	resp_set(&resp, 200, s);
	free(s);
	assert_int_equal(gcp_parse_encrypt(&resp, KEYNAME, false, &c, &err), 0);
	gcp_ciphertext_done(&c);
	http_response_done(&resp);

	/* every integrity failure is -EBADMSG */
	struct {
		const char *name, *ct, *vp, *va;
		long crc;
		const char *code;
	} bad[] = {
	    {KEYNAME "/cryptoKeyVersions/7", "AQID", "true", "true", crc + 1, "Crc32cMismatch"},
	    {KEYNAME "/cryptoKeyVersions/7", "AQID", "true", "true", -1, "Crc32cMismatch"},
	    {KEYNAME "/cryptoKeyVersions/7", "AQID", "false", "true", crc, "Crc32cMismatch"},
	    {KEYNAME "/cryptoKeyVersions/7", "AQID", NULL, "true", crc, "Crc32cMismatch"},
	    {KEYNAME "/cryptoKeyVersions/7", "AQID", "true", "false", crc, "Crc32cMismatch"},
	    {KEYNAME "/cryptoKeyVersions/7", "AQID", "true", NULL, crc, "Crc32cMismatch"},
	    {KEYNAME "x/cryptoKeyVersions/7", "AQID", "true", "true", crc, "UnexpectedKeyVersion"},
	    {"projects/q/locations/global/keyRings/ring/cryptoKeys/vol/cryptoKeyVersions/7", "AQID",
	     "true", "true", crc, "UnexpectedKeyVersion"},
	    {KEYNAME, "AQID", "true", "true", crc, "UnexpectedKeyVersion"},
	    {KEYNAME "/cryptoKeyVersions/7", "AQ!D", "true", "true", crc, ""},
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		s = encrypt_reply(bad[i].name, bad[i].ct, bad[i].crc, bad[i].vp, bad[i].va);
		resp_set(&resp, 200, s);
		free(s);
		memset(&err, 0, sizeof(err));
		assert_int_equal(gcp_parse_encrypt(&resp, KEYNAME, true, &c, &err), -EBADMSG);
		assert_string_equal(err.code, bad[i].code);
		http_response_done(&resp);
	}
	resp_set(&resp, 200, "{\"ciphertext\":");
	assert_int_equal(gcp_parse_encrypt(&resp, KEYNAME, true, &c, &err), -EBADMSG);
	http_response_done(&resp);
}

static void test_parse_decrypt(void **state)
{
	struct http_response resp;
	struct kms_error err = {};
	struct secret *p = NULL;
	char *s;

	(void)state;
	assert_true(asprintf(&s,
			     "{\"plaintext\":\"MDEyMzQ1Njc4OQ==\",\"plaintextCrc32c\":\"%u\","
			     "\"usedPrimary\":true,\"protectionLevel\":\"SOFTWARE\"}",
			     gcp_crc32c("0123456789", 10)) > 0);
	resp_set(&resp, 200, s);
	free(s);
	assert_int_equal(gcp_parse_decrypt(&resp, &p, &err), 0);
	assert_int_equal(p->len, 10);
	assert_memory_equal(p->buf, "0123456789", 10);
	p = secret_free(p);
	http_response_done(&resp);

	assert_true(asprintf(&s, "{\"plaintext\":\"MDEyMzQ1Njc4OQ==\",\"plaintextCrc32c\":%u}",
			     gcp_crc32c("0123456789", 10)) > 0);
	resp_set(&resp, 200, s);
	free(s);
	assert_int_equal(gcp_parse_decrypt(&resp, &p, &err), 0);
	p = secret_free(p);
	http_response_done(&resp);

	assert_true(asprintf(&s, "{\"plaintext\":\"MDEyMzQ1Njc4OQ==\",\"plaintextCrc32c\":\"%u\"}",
			     gcp_crc32c("0123456789", 10) ^ 1) > 0);
	resp_set(&resp, 200, s);
	free(s);
	assert_int_equal(gcp_parse_decrypt(&resp, &p, &err), -EBADMSG);
	assert_string_equal(err.code, "Crc32cMismatch");
	http_response_done(&resp);

	resp_set(&resp, 200, "{\"plaintext\":\"MDEyMzQ1Njc4OQ==\"}");
	assert_int_equal(gcp_parse_decrypt(&resp, &p, &err), -EBADMSG);
	assert_string_equal(err.code, "Crc32cMismatch");
	http_response_done(&resp);
	resp_set(&resp, 200, "{\"plaintext\":\"@@\",\"plaintextCrc32c\":\"0\"}");
	assert_int_equal(gcp_parse_decrypt(&resp, &p, &err), -EBADMSG);
	http_response_done(&resp);
}

static void test_parse_key(void **state)
{
	_cleanup_(gcp_key_info_done) struct gcp_key_info k = {};
	struct http_response resp;
	struct kms_error err = {};

	(void)state;
	resp_set(&resp, 200,
		 "{\"name\":\"" KEYNAME "\",\"primary\":{\"name\":\"" KEYNAME
		 "/cryptoKeyVersions/2\",\"state\":\"ENABLED\",\"protectionLevel\":\"SOFTWARE\","
		 "\"algorithm\":\"GOOGLE_SYMMETRIC_ENCRYPTION\"},\"purpose\":\"ENCRYPT_DECRYPT\","
		 "\"createTime\":\"2026-01-01T00:00:00Z\",\"rotationPeriod\":\"7776000s\"}");
	assert_int_equal(gcp_parse_key(&resp, &k, &err), 0);
	assert_string_equal(k.primary_state, "ENABLED");
	assert_string_equal(k.algorithm, "GOOGLE_SYMMETRIC_ENCRYPTION");
	assert_string_equal(k.rotation_period, "7776000s");
	assert_int_equal(gcp_check_key(&k, &err), 0);
	free(k.primary_state);
	k.primary_state = strdup("DISABLED");
	assert_int_equal(gcp_check_key(&k, &err), -EACCES);
	assert_non_null(strstr(err.message, "DISABLED"));
	free(k.purpose);
	k.purpose = strdup("ASYMMETRIC_DECRYPT");
	assert_int_equal(gcp_check_key(&k, &err), -EINVAL);
	assert_non_null(strstr(err.message, "ENCRYPT_DECRYPT"));
	gcp_key_info_done(&k);
	http_response_done(&resp);

	resp_set(&resp, 200, "{\"name\":\"" KEYNAME "\",\"purpose\":\"ENCRYPT_DECRYPT\"}");
	assert_int_equal(gcp_parse_key(&resp, &k, &err), 0);
	assert_int_equal(gcp_check_key(&k, &err), -EACCES);
	assert_string_equal(err.code, "NoPrimaryVersion");
	http_response_done(&resp);
}

static void test_errors(void **state)
{
	struct {
		int status;
		const char *st, *msg;
		int want;
		bool reject;
	} t[] = {
	    {403, "PERMISSION_DENIED",
	     "Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied", -EACCES, false},
	    {401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", -EACCES,
	     false},
	    {404, "NOT_FOUND", KEYNAME " not found.", -EACCES, false},
	    {400, "FAILED_PRECONDITION",
	     KEYNAME "/cryptoKeyVersions/1 is not enabled, current state "
		     "is: DISABLED.",
	     -EACCES, false},
	    {400, "INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid.", -EACCES,
	     true},
	    {400, "INVALID_ARGUMENT",
	     "The checksum in field ciphertext_crc32c did not match the data "
	     "in field ciphertext.",
	     -EBADMSG, false},
	    {400, "INVALID_ARGUMENT", "Invalid value at 'plaintext' (TYPE_BYTES)", -EBADMSG, false},
	    {429, "RESOURCE_EXHAUSTED", "Quota exceeded", -EAGAIN, false},
	    {503, "UNAVAILABLE", "The service is currently unavailable.", -EAGAIN, false},
	    {500, "INTERNAL", "Internal error", -EAGAIN, false},
	};
	struct http_response resp;
	struct kms_error err;
	char *s;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		assert_true(asprintf(&s,
				     "{\"error\":{\"code\":%d,\"message\":\"%s\",\"status\":"
				     "\"%s\"}}",
				     t[i].status, t[i].msg, t[i].st) > 0);
		resp_set(&resp, t[i].status, s);
		free(s);
		memset(&err, 0, sizeof(err));
		assert_int_equal(gcp_parse_error(&resp, &err), t[i].want);
		assert_string_equal(err.code, t[i].st);
		assert_int_equal(err.http_status, t[i].status);
		assert_int_equal(err.token_rejected, t[i].reject);
		assert_null(strchr(err.message, '\n'));
		http_response_done(&resp);
	}
	resp_set(&resp, 502, "<html>bad gateway</html>");
	assert_int_equal(gcp_parse_error(&resp, &(struct kms_error){}), -EAGAIN);
	http_response_done(&resp);
	resp_set(&resp, 403, NULL);
	assert_int_equal(gcp_parse_error(&resp, &(struct kms_error){}), -EACCES);
	assert_true(gcp_token_refused(&(struct http_response){.status = 401}));
	assert_false(gcp_token_refused(&(struct http_response){.status = 403}));
	resp_set(&resp, 418, "{}");
	assert_int_equal(gcp_parse_error(&resp, &(struct kms_error){}), -EBADMSG);
	http_response_done(&resp);
}

static void test_policy(void **state)
{
	struct gcp_key_ref k = {"p-1234", "europe-west1", "ring", "vol", NULL};
	_cleanup_free_ char *t = NULL, *t2 = NULL;

	(void)state;
	assert_int_equal(gcp_policy_text(&k, "serviceAccount:a@p-1234.iam.gserviceaccount.com", &t),
			 0);
	assert_non_null(strstr(t, "gcloud kms keys add-iam-policy-binding vol --project p-1234 "
				  "--location europe-west1 --keyring ring"));
	assert_non_null(strstr(t, "--member 'serviceAccount:a@p-1234.iam.gserviceaccount.com' "
				  "--role roles/cloudkms.cryptoKeyEncrypterDecrypter"));
	assert_non_null(strstr(t, "--permissions cloudkms.cryptoKeys.get"));
	assert_non_null(
	    strstr(t, "\"role\": \"roles/cloudkms.cryptoKeyEncrypterDecrypter\", "
		      "\"members\": [\"serviceAccount:a@p-1234.iam.gserviceaccount.com\"]"));
	assert_int_equal(t[strlen(t) - 1], '\n');
	assert_int_equal(gcp_policy_text(&k, NULL, &t2), 0);
	assert_non_null(strstr(t2, "SERVICE_ACCOUNT_EMAIL"));
	assert_non_null(strstr(t2, "replace SERVICE_ACCOUNT_EMAIL by the instance"));
	assert_null(strstr(t, "replace SERVICE_ACCOUNT_EMAIL"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc32c_vectors),
	    cmocka_unit_test(test_key_name_and_endpoints),
	    cmocka_unit_test(test_service_account_and_keys),
	    cmocka_unit_test(test_jwt_known_answer),
	    cmocka_unit_test(test_token_replies),
	    cmocka_unit_test(test_encrypt_decrypt_bodies),
	    cmocka_unit_test(test_parse_encrypt),
	    cmocka_unit_test(test_parse_decrypt),
	    cmocka_unit_test(test_parse_key),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_policy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
