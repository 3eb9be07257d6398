/* SPDX-License-Identifier: MIT */
/*
 * kmscrypt's KMIP codec against the real PyKMIP server, over mutual TLS.  Run by
 * tests/integration/test_kmip_server.sh, which starts the server and sets
 *   KMIP_TEST_PORT=<port> KMIP_TEST_CERTS=<dir with ca.pem, client.pem, client.key>
 * Without them (a plain unit-test run) every test is skipped.  KMIP_TEST_RECORD=<dir> writes each
 * request and reply as hex (the fixtures in tests/fixtures/kmip/codec/ came from there).
 *
 * The TLS socket code lives here only, as a stand-in for the real transport.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "kms/kmip/kmip_codec.h"
#include "kms/kmip/ttlv_codec.h"
#include "kms/provider.h"
#include "util/cleanup.h"
#include "util/secret.h"

struct conn {
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;
	unsigned seq; /* for record file names */
};

static struct conn conn = {.fd = -1};
static const struct kmip_header v12 = {.major = 1, .minor = 2};
static const struct kmip_header v14 = {.major = 1, .minor = 4};
static const struct kmip_crypto_params cbc = {
    .mode = KMIP_MODE_CBC,
    .padding = KMIP_PAD_PKCS5,
    .algorithm = KMIP_ALG_AES,
};

static int setup(void **state)
{
	const char *port = getenv("KMIP_TEST_PORT"), *certs = getenv("KMIP_TEST_CERTS");
	struct sockaddr_in sa = {.sin_family = AF_INET};
	char path[512];
	long p;

	if (!port || !certs)
		return 0; /* tests skip themselves */
	p = strtol(port, NULL, 10);
	assert_true(p > 0 && p < 65536);
	conn.ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(conn.ctx);
	/* PyKMIP's server speaks TLS 1.2 only */
	assert_int_equal(SSL_CTX_set_min_proto_version(conn.ctx, TLS1_2_VERSION), 1);
	snprintf(path, sizeof(path), "%s/ca.pem", certs);
	assert_int_equal(SSL_CTX_load_verify_locations(conn.ctx, path, NULL), 1);
	snprintf(path, sizeof(path), "%s/client.pem", certs);
	assert_int_equal(SSL_CTX_use_certificate_file(conn.ctx, path, SSL_FILETYPE_PEM), 1);
	snprintf(path, sizeof(path), "%s/client.key", certs);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(conn.ctx, path, SSL_FILETYPE_PEM), 1);
	SSL_CTX_set_verify(conn.ctx, SSL_VERIFY_PEER, NULL);

	conn.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(conn.fd >= 0);
	sa.sin_port = htons((uint16_t)p);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(conn.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	conn.ssl = SSL_new(conn.ctx);
	assert_non_null(conn.ssl);
	/* the server certificate must name 127.0.0.1 */
	assert_int_equal(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(conn.ssl), "127.0.0.1"), 1);
	SSL_set_fd(conn.ssl, conn.fd);
	if (SSL_connect(conn.ssl) != 1) {
		ERR_print_errors_fp(stderr);
		fail_msg("TLS handshake with the KMIP server failed");
	}
	assert_int_equal(SSL_version(conn.ssl), TLS1_2_VERSION);
	return 0;
}

static int teardown(void **state)
{
	if (conn.ssl) {
		(void)SSL_shutdown(conn.ssl);
		SSL_free(conn.ssl);
	}
	SSL_CTX_free(conn.ctx);
	if (conn.fd >= 0)
		close(conn.fd);
	return 0;
}

static void need_server(void)
{
	if (!conn.ssl)
		skip();
}

static void record(const char *what, const char *kind, const uint8_t *p, size_t n)
{
	const char *dir = getenv("KMIP_TEST_RECORD");
	char path[512];
	FILE *f;

	if (!dir)
		return;
	snprintf(path, sizeof(path), "%s/%02u-%s.%s.hex", dir, conn.seq, what, kind);
	f = fopen(path, "we");
	assert_non_null(f);
	fprintf(f, "# kmscrypt KMIP codec %s, PyKMIP 0.10.0 server (test_kmip_live.c: %s)\n",
		strcmp(kind, "req") == 0 ? "request" : "-> PyKMIP reply", what);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%02x%s", p[i], i % 32 == 31 || i + 1 == n ? "\n" : "");
	fclose(f);
}

static void read_exact(uint8_t *p, size_t n)
{
	while (n > 0) {
		int k = SSL_read(conn.ssl, p, (int)MIN(n, (size_t)1 << 30));

		if (k <= 0)
			fail_msg("KMIP server closed the connection (SSL error %d)",
				 SSL_get_error(conn.ssl, k));
		p += k;
		n -= (size_t)k;
	}
}

/* One request, one reply; the reply lands in a secret (it may hold key material). */
static struct secret *roundtrip(const char *what, struct secret *req)
{
	struct secret *rsp = NULL;
	uint8_t hdr[TTLV_HEADER_BYTES];
	size_t total;

	assert_non_null(req);
	conn.seq++;
	record(what, "req", req->buf, req->len);
	assert_int_equal(SSL_write(conn.ssl, req->buf, (int)req->len), (int)req->len);
	secret_free(req);
	read_exact(hdr, sizeof(hdr));
	assert_int_equal(ttlv_message_size(hdr, KMIP_TAG_RESPONSE_MESSAGE, &total), 0);
	assert_int_equal(secret_new(total, &rsp), 0);
	memcpy(rsp->buf, hdr, sizeof(hdr));
	read_exact(rsp->buf + sizeof(hdr), total - sizeof(hdr));
	rsp->len = total;
	record(what, "rsp", rsp->buf, rsp->len);
	return rsp;
}

static char *create_active_key(const char *name)
{
	struct secret *req = NULL;
	_cleanup_secret_ struct secret *rsp = NULL, *rsp2 = NULL;
	struct kms_error err = {};
	char *uid = NULL;
	_cleanup_free_ char *uid2 = NULL;

	assert_int_equal(kmip_build_create(&v12, KMIP_ALG_AES, 256,
					   KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, name, &req),
			 0);
	rsp = roundtrip("create", req);
	assert_int_equal(kmip_parse_uid_reply(rsp->buf, rsp->len, KMIP_OP_CREATE, &uid, &err), 0);
	assert_int_equal(kmip_build_activate(&v12, uid, &req), 0);
	rsp2 = roundtrip("activate", req);
	assert_int_equal(kmip_parse_uid_reply(rsp2->buf, rsp2->len, KMIP_OP_ACTIVATE, &uid2, &err),
			 0);
	assert_string_equal(uid, uid2);
	return uid;
}

static void test_lifecycle_cbc(void **state)
{
	static const char *const names[] = {"State", "Cryptographic Length",
					    "Cryptographic Usage Mask", "Name"};
	_cleanup_free_ char *uid = NULL, *found = NULL;
	_cleanup_secret_ struct secret *plain = NULL, *back = NULL, *key = NULL;
	_cleanup_(kmip_ciphertext_done) struct kmip_ciphertext ct = {};
	struct kmip_key_attributes attrs = {};
	struct kms_error err = {};
	struct secret *req = NULL, *rsp;
	char name[64];
	size_t count;
	uint32_t alg;
	int32_t bits;

	need_server();
	snprintf(name, sizeof(name), "kmscrypt-live-%d", (int)getpid());
	uid = create_active_key(name);

	assert_int_equal(kmip_build_locate(&v12, KMIP_OBJECT_SYMMETRIC_KEY, name, &req), 0);
	rsp = roundtrip("locate", req);
	assert_int_equal(kmip_parse_locate(rsp->buf, rsp->len, &count, &found, &err), 0);
	assert_int_equal(count, 1);
	assert_string_equal(found, uid);
	secret_free(rsp);

	assert_int_equal(kmip_build_get_attributes(&v12, uid, names, ARRAY_SIZE(names), &req), 0);
	rsp = roundtrip("get_attributes", req);
	assert_int_equal(kmip_parse_get_attributes(rsp->buf, rsp->len, &attrs, &err), 0);
	assert_int_equal(attrs.state, KMIP_STATE_ACTIVE);
	assert_int_equal(attrs.bits, 256);
	assert_true(attrs.has_usage_mask);
	assert_int_equal(attrs.usage_mask, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT);
	assert_string_equal(attrs.name, name);
	secret_free(rsp);

	/* Encrypt without an IV: PyKMIP generates one and returns it */
	assert_int_equal(secret_random(32, &plain), 0);
	assert_int_equal(kmip_build_encrypt(&v12, uid, &cbc, NULL, 0, plain, NULL, 0, &req), 0);
	rsp = roundtrip("encrypt", req);
	assert_int_equal(kmip_parse_encrypt(rsp->buf, rsp->len, &ct, &err), 0);
	assert_int_equal(ct.data_len, 48);
	assert_int_equal(ct.iv_len, 16);
	secret_free(rsp);

	assert_int_equal(kmip_build_decrypt(&v12, uid, &cbc, ct.iv, ct.iv_len, ct.data, ct.data_len,
					    NULL, 0, NULL, 0, &req),
			 0);
	rsp = roundtrip("decrypt", req);
	assert_int_equal(kmip_parse_decrypt(rsp->buf, rsp->len, &back, &err), 0);
	assert_int_equal(back->len, 32);
	assert_memory_equal(back->buf, plain->buf, 32);
	secret_free(rsp);
	back = secret_free(back);

	/* Get: the key itself, into a secret; CBC-decrypting locally must give the plaintext */
	assert_int_equal(kmip_build_get(&v12, uid, &req), 0);
	rsp = roundtrip("get", req);
	assert_int_equal(kmip_parse_get_symmetric_key(rsp->buf, rsp->len, &key, &alg, &bits, &err),
			 0);
	assert_int_equal(alg, KMIP_ALG_AES);
	assert_int_equal(bits, 256);
	assert_int_equal(key->len, 32);
	secret_free(rsp);
	{
		EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
		uint8_t out[64];
		int n1 = 0, n2 = 0;

		assert_non_null(c);
		assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_256_cbc(), NULL, key->buf, ct.iv),
				 1);
		assert_int_equal(EVP_DecryptUpdate(c, out, &n1, ct.data, (int)ct.data_len), 1);
		assert_int_equal(EVP_DecryptFinal_ex(c, out + n1, &n2), 1);
		EVP_CIPHER_CTX_free(c);
		assert_int_equal(n1 + n2, 32);
		assert_memory_equal(out, plain->buf, 32);
		explicit_bzero(out, sizeof(out));
	}

	/* Revoke: decrypt is now denied */
	assert_int_equal(kmip_build_revoke(&v12, uid, KMIP_REVOKE_CESSATION_OF_OPERATION, 0, &req),
			 0);
	rsp = roundtrip("revoke", req);
	assert_int_equal(kmip_parse_uid_reply(rsp->buf, rsp->len, KMIP_OP_REVOKE, NULL, &err), 0);
	secret_free(rsp);
	assert_int_equal(kmip_build_decrypt(&v12, uid, &cbc, ct.iv, ct.iv_len, ct.data, ct.data_len,
					    NULL, 0, NULL, 0, &req),
			 0);
	rsp = roundtrip("decrypt_revoked", req);
	assert_int_equal(kmip_parse_decrypt(rsp->buf, rsp->len, &back, &err), -EACCES);
	assert_null(back);
	fprintf(stderr, "decrypt with revoked key: %s: %s\n", err.code, err.message);
	secret_free(rsp);

	/* Activate again: not allowed from Deactivated */
	assert_int_equal(kmip_build_activate(&v12, uid, &req), 0);
	rsp = roundtrip("activate_revoked", req);
	assert_int_equal(kmip_parse_uid_reply(rsp->buf, rsp->len, KMIP_OP_ACTIVATE, NULL, &err),
			 -EACCES);
	fprintf(stderr, "activate revoked key: %s: %s\n", err.code, err.message);
	secret_free(rsp);

	assert_int_equal(kmip_build_destroy(&v12, uid, &req), 0);
	rsp = roundtrip("destroy", req);
	assert_int_equal(kmip_parse_uid_reply(rsp->buf, rsp->len, KMIP_OP_DESTROY, NULL, &err), 0);
	secret_free(rsp);
	assert_int_equal(kmip_build_get(&v12, uid, &req), 0);
	rsp = roundtrip("get_destroyed", req);
	key = secret_free(key);
	assert_int_equal(kmip_parse_get_symmetric_key(rsp->buf, rsp->len, &key, NULL, NULL, &err),
			 -EACCES);
	assert_string_equal(err.code, "Item Not Found");
	secret_free(rsp);
}

/* KMIP 1.4: AES-GCM with additional data bound to the volume; the wrong AAD is refused. */
static void test_gcm_aad(void **state)
{
	static const uint8_t aad[] = "kmscrypt:v1:0b4c2f1e-0000-4000-8000-000000000001:1";
	static const struct kmip_crypto_params gcm = {
	    .mode = KMIP_MODE_GCM,
	    .algorithm = KMIP_ALG_AES,
	    .tag_length = 16,
	};
	_cleanup_free_ char *uid = NULL;
	_cleanup_secret_ struct secret *plain = NULL, *back = NULL;
	_cleanup_(kmip_ciphertext_done) struct kmip_ciphertext ct = {};
	struct kms_error err = {};
	struct secret *req = NULL, *rsp;
	uint8_t iv[12];

	need_server();
	uid = create_active_key(NULL);
	assert_int_equal(secret_random(32, &plain), 0);
	/* our IV this time (96 bits, as GCM wants; PyKMIP would pick 128) */
	memcpy(iv, "kmscrypt-iv1", 12);
	assert_int_equal(
	    kmip_build_encrypt(&v14, uid, &gcm, iv, sizeof(iv), plain, aad, sizeof(aad) - 1, &req),
	    0);
	rsp = roundtrip("encrypt_gcm", req);
	assert_int_equal(kmip_parse_encrypt(rsp->buf, rsp->len, &ct, &err), 0);
	assert_int_equal(ct.data_len, 32);
	assert_non_null(ct.tag);
	assert_int_equal(ct.tag_len, 16);
	assert_null(ct.iv); /* we chose it, the server does not echo it */
	secret_free(rsp);

	assert_int_equal(kmip_build_decrypt(&v14, uid, &gcm, iv, sizeof(iv), ct.data, ct.data_len,
					    aad, sizeof(aad) - 1, ct.tag, ct.tag_len, &req),
			 0);
	rsp = roundtrip("decrypt_gcm", req);
	assert_int_equal(kmip_parse_decrypt(rsp->buf, rsp->len, &back, &err), 0);
	assert_int_equal(back->len, 32);
	assert_memory_equal(back->buf, plain->buf, 32);
	secret_free(rsp);
	back = secret_free(back);

	/* another volume's AAD: the tag does not verify.  PyKMIP 0.10 does not catch the
	 * cryptography.exceptions.InvalidTag of its engine and answers General Failure ("Operation
	 * failed. See the server logs ..."), which classifies as transient (-EAGAIN); a server that
	 * says Cryptographic Failure gets -EACCES. */
	assert_int_equal(kmip_build_decrypt(&v14, uid, &gcm, iv, sizeof(iv), ct.data, ct.data_len,
					    (const uint8_t *)"other", 5, ct.tag, ct.tag_len, &req),
			 0);
	rsp = roundtrip("decrypt_gcm_wrong_aad", req);
	assert_int_equal(kmip_parse_decrypt(rsp->buf, rsp->len, &back, &err), -EAGAIN);
	assert_null(back);
	assert_string_equal(err.code, "General Failure");
	fprintf(stderr, "GCM decrypt with wrong AAD: %s: %s\n", err.code, err.message);
	secret_free(rsp);
}

/* Register a key we know, then check the server's CBC encryption against OpenSSL's. */
static void test_register(void **state)
{
	_cleanup_free_ char *uid = NULL, *uid2 = NULL;
	_cleanup_secret_ struct secret *key = NULL, *plain = NULL;
	_cleanup_(kmip_ciphertext_done) struct kmip_ciphertext ct = {};
	struct kms_error err = {};
	struct secret *req = NULL, *rsp;
	uint8_t iv[16], want[48];
	int n1 = 0, n2 = 0;
	EVP_CIPHER_CTX *c;

	need_server();
	assert_int_equal(secret_random(32, &key), 0);
	assert_int_equal(kmip_build_register(&v12, KMIP_ALG_AES, key,
					     KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, NULL, &req),
			 0);
	rsp = roundtrip("register", req);
	assert_int_equal(kmip_parse_uid_reply(rsp->buf, rsp->len, KMIP_OP_REGISTER, &uid, &err), 0);
	secret_free(rsp);
	assert_int_equal(kmip_build_activate(&v12, uid, &req), 0);
	rsp = roundtrip("activate_registered", req);
	assert_int_equal(kmip_parse_uid_reply(rsp->buf, rsp->len, KMIP_OP_ACTIVATE, &uid2, &err),
			 0);
	secret_free(rsp);

	assert_int_equal(secret_random(32, &plain), 0);
	memset(iv, 0x5a, sizeof(iv));
	assert_int_equal(kmip_build_encrypt(&v12, uid, &cbc, iv, sizeof(iv), plain, NULL, 0, &req),
			 0);
	rsp = roundtrip("encrypt_registered", req);
	assert_int_equal(kmip_parse_encrypt(rsp->buf, rsp->len, &ct, &err), 0);
	secret_free(rsp);

	c = EVP_CIPHER_CTX_new();
	assert_non_null(c);
	assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_cbc(), NULL, key->buf, iv), 1);
	assert_int_equal(EVP_EncryptUpdate(c, want, &n1, plain->buf, 32), 1);
	assert_int_equal(EVP_EncryptFinal_ex(c, want + n1, &n2), 1);
	EVP_CIPHER_CTX_free(c);
	assert_int_equal(ct.data_len, (size_t)(n1 + n2));
	assert_memory_equal(ct.data, want, ct.data_len);
}

/* Bad input the server must refuse: an unknown key, a key without Encrypt usage. */
static void test_refusals(void **state)
{
	_cleanup_secret_ struct secret *plain = NULL, *rsp = NULL, *rsp2 = NULL, *rsp3 = NULL;
	_cleanup_(kmip_ciphertext_done) struct kmip_ciphertext ct = {};
	_cleanup_free_ char *uid = NULL;
	struct kms_error err = {};
	struct secret *req = NULL;

	need_server();
	assert_int_equal(secret_from("x", 1, &plain), 0);
	assert_int_equal(
	    kmip_build_encrypt(&v12, "no-such-key", &cbc, NULL, 0, plain, NULL, 0, &req), 0);
	rsp = roundtrip("encrypt_unknown", req);
	assert_int_equal(kmip_parse_encrypt(rsp->buf, rsp->len, &ct, &err), -EACCES);
	assert_string_equal(err.code, "Item Not Found");

	/* Cryptographic Parameters left out: PyKMIP wants them (Invalid Field) */
	assert_int_equal(kmip_build_create(&v12, KMIP_ALG_AES, 256, KMIP_USAGE_DECRYPT, NULL, &req),
			 0);
	rsp2 = roundtrip("create_decrypt_only", req);
	assert_int_equal(kmip_parse_uid_reply(rsp2->buf, rsp2->len, KMIP_OP_CREATE, &uid, &err), 0);
	assert_int_equal(kmip_build_encrypt(&v12, uid, NULL, NULL, 0, plain, NULL, 0, &req), 0);
	rsp3 = roundtrip("encrypt_no_params", req);
	assert_int_equal(kmip_parse_encrypt(rsp3->buf, rsp3->len, &ct, &err), -EBADMSG);
	fprintf(stderr, "encrypt without parameters: %s: %s\n", err.code, err.message);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lifecycle_cbc),
	    cmocka_unit_test(test_gcm_aad),
	    cmocka_unit_test(test_register),
	    cmocka_unit_test(test_refusals),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
