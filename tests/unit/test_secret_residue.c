/* SPDX-License-Identifier: MIT */
/*
 * No secret is left behind in freed heap memory by the code that handles credentials: this test
 * interposes free() and realloc() (forwarding to glibc's __libc_free/__libc_realloc) and, while
 * armed, looks in every block handed to them for a marker that only the secret carries.  realloc()
 * counts too: it may move the bytes and free the old block unwiped.  Covered: configuration parse,
 * set, format and done (config/kms_config.c), read_file_text() (util/fileio.c), and SigV4 signing
 * with a session token (codec/sigv4.c: canonical request and headers).
 * Skipped under AddressSanitizer, which owns malloc.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/http_msg.h"
#include "codec/sigv4.h"
#include "config/kms_config.h"
#include "util/fileio.h"
#include "util/secret.h"

#if defined(__SANITIZE_ADDRESS__)
#define NO_INTERPOSE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NO_INTERPOSE 1
#endif
#endif

/* Assembled at run time so the marker is in no string constant that could be freed. */
static char marker[32];
static size_t marker_len;
static int armed, hits;

#ifndef NO_INTERPOSE
void __libc_free(void *p);
void *__libc_realloc(void *p, size_t n);

static void inspect(void *p)
{
	if (armed && p && marker_len && memmem(p, malloc_usable_size(p), marker, marker_len))
		hits++;
}

void free(void *p)
{
	inspect(p);
	__libc_free(p);
}

void *realloc(void *p, size_t n)
{
	inspect(p);
	return __libc_realloc(p, n);
}
#endif

static int setup(void **state)
{
#ifdef NO_INTERPOSE
	return 0;
#else
	snprintf(marker, sizeof(marker), "%s%d%s", "Zq8", 41 * 1000 + 7, "xResidueMark");
	marker_len = strlen(marker);
	hits = 0;
	return 0;
#endif
}

/* First thing in each test: nothing to check without the interposed allocator. */
static void need_interposition(void)
{
#ifdef NO_INTERPOSE
	skip();
#endif
}

static void arm(void)
{
	hits = 0;
	armed = 1;
}

static int disarm(void)
{
	armed = 0;
	return hits;
}

static const struct kms_option test_options[] = {
    {"Endpoint", "endpoint", KMS_OPT_REQUIRED, "endpoint"},
    {"Token", "token", KMS_OPT_SECRET, "token"},
    {"Description2", "description2", 0, "filler"},
    {}};
static const struct kms_provider test_provider = {
    .name = "restest", .description = "test", .options = test_options};
static const struct kms_provider *const providers[] = {&test_provider, NULL};

/* "<marker>" padded to @n bytes of token text, in a locked buffer */
static struct secret *token_text(size_t n)
{
	struct secret *s = NULL;

	assert_int_equal(secret_new(n + 1, &s), 0);
	memcpy(s->buf, marker, marker_len);
	memset(s->buf + marker_len, 'T', n - marker_len);
	s->buf[n] = 0;
	s->len = n;
	return s;
}

static void test_config(void **state)
{
	struct secret *text = NULL, *tok = NULL;
	struct kms_config c = {};
	struct config_error e = {};
	char *out = NULL, filler[600];
	size_t n;

	need_interposition();
	tok = token_text(200);
	arm();
	/* the configuration text, as core_kms_load() has it: in locked memory */
	assert_int_equal(secret_new(4096, &text), 0);
	n = (size_t)snprintf((char *)text->buf, 4096,
			     "[KMS]\nProvider=restest\nEndpoint=https://kms\n"
			     "Token=%s\n",
			     (const char *)tok->buf);
	text->len = n;
	assert_int_equal(
	    kms_config_parse("r1", (const char *)text->buf, text->len, providers, &c, &e), 0);
	/* replaced, set again, formatted with long settings after the secret (so that a buffer
	 * growing while formatting would move it) */
	assert_int_equal(kms_config_set(&c, "Token", (const char *)tok->buf), 0);
	assert_int_equal(kms_config_set_secret(&c, "Token", tok), 0);
	memset(filler, 'f', sizeof(filler) - 1);
	filler[sizeof(filler) - 1] = 0;
	assert_int_equal(kms_config_set(&c, "Description2", filler), 0);
	assert_int_equal(kms_config_set(&c, "Description", filler), 0);
	assert_int_equal(kms_config_format(&c, &out), 0);
	assert_non_null(strstr(out, marker));
	explicit_bzero(out, strlen(out)); /* as the contract says */
	free(out);
	assert_int_equal(kms_config_unset(&c, "Token"), 0);
	assert_int_equal(kms_config_set_secret(&c, "Token", tok), 0);
	kms_config_done(&c);
	secret_free(text);
	secret_free(tok);
	assert_int_equal(disarm(), 0);
}

static void test_read_file_text(void **state)
{
	char path[] = "/tmp/kmscrypt-residue-XXXXXX", *text = NULL;
	char block[1024];
	size_t len = 0;
	int fd;

	need_interposition();
	/* a configuration-like file of 20 KiB with the secret near the start */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	memset(block, 'x', sizeof(block));
	memcpy(block + 10, marker, marker_len);
	for (int i = 0; i < 20; i++)
		assert_int_equal(write(fd, block, sizeof(block)), (ssize_t)sizeof(block));
	close(fd);

	arm();
	assert_int_equal(read_file_text(path, 64 * 1024, &text, &len), 0);
	assert_int_equal(len, 20 * sizeof(block));
	explicit_bzero(text, len);
	free(text);
	/* over the limit: the partial read is wiped too */
	assert_int_equal(read_file_text(path, 8 * 1024, &text, &len), -EFBIG);
	assert_int_equal(disarm(), 0);
	unlink(path);
}

static void test_sigv4_session_token(void **state)
{
	struct secret *tok = NULL, *sk = NULL;
	struct aws_creds creds = {};
	struct http_request req = {};
	char *creq = NULL, *sts = NULL;

	need_interposition();
	tok = token_text(700);
	arm();
	assert_int_equal(secret_from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 40, &sk), 0);
	creds.access_key_id = strdup("AKIDEXAMPLE");
	creds.secret_access_key = sk;
	creds.session_token = strndup((const char *)tok->buf, tok->len);
	assert_non_null(creds.session_token);
	assert_int_equal(http_request_init(&req, "POST", "https://kms.eu-west-1.amazonaws.com/"),
			 0);
	assert_int_equal(http_request_header_add(&req, "X-Amz-Target", "TrentService.Decrypt"), 0);
	assert_int_equal(
	    http_request_header_add(&req, "Content-Type", "application/x-amz-json-1.1"), 0);
	assert_int_equal(http_request_set_body(&req, "{}", 2), 0);
	assert_int_equal(sigv4_sign(&req, &creds, "eu-west-1", "kms", 1700000000), 0);
	/* sign again (replaces the headers) and take the canonical request out */
	assert_int_equal(
	    sigv4_sign_debug(&req, &creds, "eu-west-1", "kms", 1700000001, &creq, &sts), 0);
	assert_non_null(strstr(creq, marker)); /* the token is signed */
	explicit_bzero(creq, strlen(creq));    /* as sigv4.h asks */
	free(creq);
	free(sts);
	http_request_done(&req);
	aws_creds_done(&creds);
	secret_free(tok);
	assert_int_equal(disarm(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config),
	    cmocka_unit_test(test_read_file_text),
	    cmocka_unit_test(test_sigv4_session_token),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
