/* SPDX-License-Identifier: MIT */
/*
 * SigV4 against every case of AWS's aws-sig-v4-test-suite (tests/vectors/, a copy of shared/vectors/).
 * The suite's fixed inputs (from its documentation): access key AKIDEXAMPLE, secret
 * wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, region us-east-1, service "service", time
 * 2015-08-30T12:36:00Z.  For every directory with <name>.req we compare the canonical request (.creq),
 * the string to sign (.sts), the Authorization value (.authz) and the signed request (.sreq).
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "codec/http_msg.h"
#include "codec/sigv4.h"
#include "util/cleanup.h"
#include "util/secret.h"

/* The copy kept with the tests (tests/vectors/README.md): the suite runs from any checkout. */
#define SUITE KMSCRYPT_SOURCE_DIR "/tests/vectors/aws-sig-v4-test-suite"
#define STS_TOKEN                                                                                  \
	"AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqT" \
	"flfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9H" \
	"FvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKT" \
	"r4rvx3iSIlTJabIQwj2ICCR/oLxBA=="

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0;

	if (!f)
		return NULL;
	{
		FILE *m = open_memstream(&buf, &len);
		int c;

		while ((c = fgetc(f)) != EOF)
			fputc(c, m);
		fclose(m);
	}
	fclose(f);
	return buf;
}

static void creds_example(struct aws_creds *c, const char *token)
{
	static const char key[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

	memset(c, 0, sizeof(*c));
	c->access_key_id = strdup("AKIDEXAMPLE");
	assert_int_equal(secret_from(key, strlen(key), &c->secret_access_key), 0);
	c->session_token = token ? strdup(token) : NULL;
}

/* Parse the suite's .req format: request line, headers (continuation lines start with a space and
 * are kept in the value after a '\n'), blank line, body.  The request line is not URL-encoded. */
static void parse_req(const char *text, struct http_request *req)
{
	const char *p = text, *eol, *sp, *tail;
	char *target, *q;

	memset(req, 0, sizeof(*req));
	eol = strchr(p, '\n');
	assert_non_null(eol);
	sp = memchr(p, ' ', (size_t)(eol - p));
	assert_non_null(sp);
	tail = eol - strlen(" HTTP/1.1");
	assert_memory_equal(tail, " HTTP/1.1", 9);
	req->method = strndup(p, (size_t)(sp - p));
	target = strndup(sp + 1, (size_t)(tail - sp - 1));
	q = strchr(target, '?');
	if (q) {
		*q = 0;
		req->query = strdup(q + 1);
	}
	req->path = strdup(target);
	free(target);
	req->scheme = strdup("https");
	p = eol + 1;
	for (;;) {
		const char *colon;
		size_t n;

		eol = strchr(p, '\n');
		n = eol ? (size_t)(eol - p) : strlen(p);
		if (n == 0) {
			if (eol)
				assert_int_equal(http_request_set_body(req, eol + 1, strlen(eol + 1)), 0);
			break;
		}
		if (p[0] == ' ' || p[0] == '\t') {
			struct http_header *h = &req->headers[req->n_headers - 1];
			char *v;

			assert_true(asprintf(&v, "%s\n%.*s", h->value, (int)n, p) > 0);
			free(h->value);
			h->value = v;
		} else {
			char *name, *value;

			colon = memchr(p, ':', n);
			assert_non_null(colon);
			name = strndup(p, (size_t)(colon - p));
			value = strndup(colon + 1, n - (size_t)(colon - p) - 1);
			assert_int_equal(http_request_header_add(req, name, value), 0);
			free(name);
			free(value);
		}
		if (!eol)
			break;
		p = eol + 1;
	}
	req->host = strdup(http_request_header_get(req, "Host"));
}

/* The suite's .sreq form: request line as in .req, "Name:value" per header ("Authorization: " with a
 * space, as the suite writes it), then a blank line and the body when there is one. */
static char *serialize(const struct http_request *req)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	fprintf(m, "%s %s%s%s HTTP/1.1", req->method, req->path, req->query ? "?" : "",
		req->query ? req->query : "");
	for (size_t i = 0; i < req->n_headers; i++)
		fprintf(m, "\n%s:%s%s", req->headers[i].name,
			strcmp(req->headers[i].name, "Authorization") == 0 ? " " : "", req->headers[i].value);
	if (req->body) {
		fputs("\n\n", m);
		fwrite(req->body->buf, 1, req->body->len, m);
	}
	fclose(m);
	return buf;
}

static int check_file(const char *dir, const char *name, const char *ext, const char *got)
{
	_cleanup_free_ char *path = NULL, *want = NULL;

	assert_true(asprintf(&path, "%s/%s.%s", dir, name, ext) > 0);
	want = slurp(path);
	if (!want) {
		print_error("missing %s\n", path);
		return -1;
	}
	if (strcmp(want, got) != 0) {
		print_error("%s.%s differs:\n--- want\n%s\n--- got\n%s\n", name, ext, want, got);
		return -1;
	}
	return 0;
}

static unsigned n_cases, n_matched;

static void run_case(const char *dir, const char *name)
{
	_cleanup_free_ char *path = NULL, *text = NULL, *creq = NULL, *sts = NULL, *sreq = NULL;
	struct http_request req;
	struct aws_creds c;
	const time_t now = (time_t)http_timegm(2015, 8, 30, 12, 36, 0);
	/* post-sts-header-after adds the token after signing; all others sign what is there */
	bool token_after = strcmp(name, "post-sts-header-after") == 0;
	bool token_before = strcmp(name, "post-sts-header-before") == 0;
	int bad = 0;

	assert_true(asprintf(&path, "%s/%s.req", dir, name) > 0);
	text = slurp(path);
	assert_non_null(text);
	parse_req(text, &req);
	creds_example(&c, token_before ? STS_TOKEN : NULL);
	assert_int_equal(sigv4_sign_debug(&req, &c, "us-east-1", "service", now, &creq, &sts), 0);
	if (token_after) {
		/* the unsigned token goes in after signing (the suite lists it before Authorization) */
		_cleanup_free_ char *authz = strdup(http_request_header_get(&req, "Authorization"));

		http_request_header_remove(&req, "Authorization");
		assert_int_equal(http_request_header_add(&req, "X-Amz-Security-Token", STS_TOKEN), 0);
		assert_int_equal(http_request_header_add(&req, "Authorization", authz), 0);
	}
	sreq = serialize(&req);
	bad |= check_file(dir, name, "creq", creq);
	bad |= check_file(dir, name, "sts", sts);
	bad |= check_file(dir, name, "authz", http_request_header_get(&req, "Authorization"));
	bad |= check_file(dir, name, "sreq", sreq);
	n_cases++;
	if (!bad)
		n_matched++;
	else
		print_error("vector %s: MISMATCH\n", name);
	http_request_done(&req);
	aws_creds_done(&c);
}

static void walk(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	const char *base = strrchr(dir, '/') + 1;
	_cleanup_free_ char *req = NULL;
	struct stat st;

	assert_non_null(d);
	assert_true(asprintf(&req, "%s/%s.req", dir, base) > 0);
	if (stat(req, &st) == 0)
		run_case(dir, base);
	while ((e = readdir(d))) {
		_cleanup_free_ char *sub = NULL;

		if (e->d_name[0] == '.')
			continue;
		assert_true(asprintf(&sub, "%s/%s", dir, e->d_name) > 0);
		if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			walk(sub);
	}
	closedir(d);
}

static void test_suite_all_vectors(void **state)
{
	walk(SUITE);
	print_message("sigv4: %u of %u vectors matched\n", n_matched, n_cases);
	assert_int_equal(n_cases, 31);
	assert_int_equal(n_matched, n_cases);
}

/* A KMS-shaped request: POST / with a JSON body, session token signed, re-signing replaces the old
 * signature instead of adding a second one. */
static void test_kms_request_and_resign(void **state)
{
	struct http_request req;
	struct aws_creds c;
	_cleanup_free_ char *creq = NULL, *sts = NULL;
	const char body[] = "{\"KeyId\":\"alias/x\"}";
	size_t n_auth = 0;

	assert_int_equal(http_request_init(&req, "POST", "https://kms.eu-west-1.amazonaws.com/"), 0);
	assert_int_equal(http_request_header_add(&req, "Content-Type", "application/x-amz-json-1.1"), 0);
	assert_int_equal(http_request_header_add(&req, "X-Amz-Target", "TrentService.DescribeKey"), 0);
	assert_int_equal(http_request_set_body(&req, body, strlen(body)), 0);
	creds_example(&c, "TOKEN");
	assert_int_equal(sigv4_sign(&req, &c, "eu-west-1", "kms", 1700000000), 0);
	assert_int_equal(sigv4_sign_debug(&req, &c, "eu-west-1", "kms", 1700000001, &creq, &sts), 0);
	for (size_t i = 0; i < req.n_headers; i++)
		n_auth += strcmp(req.headers[i].name, "Authorization") == 0;
	assert_int_equal(n_auth, 1);
	assert_string_equal(http_request_header_get(&req, "X-Amz-Date"), "20231114T221321Z");
	assert_string_equal(http_request_header_get(&req, "X-Amz-Security-Token"), "TOKEN");
	assert_non_null(strstr(creq, "\ncontent-type;host;x-amz-date;x-amz-security-token;x-amz-target\n"));
	assert_non_null(strstr(sts, "\n20231114/eu-west-1/kms/aws4_request\n"));
	assert_non_null(strstr(http_request_header_get(&req, "Authorization"),
			       "Credential=AKIDEXAMPLE/20231114/eu-west-1/kms/aws4_request, "
			       "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, "
			       "Signature="));
	http_request_done(&req);
	aws_creds_done(&c);
}

/* Known answer computed with botocore's SigV4Auth (tests/fixtures/aws/sigv4_kms_known_answer.txt). */
static void test_botocore_known_answer(void **state)
{
	_cleanup_free_ char *want = NULL;
	struct http_request req;
	struct aws_creds c;
	const char body[] = "{\"CiphertextBlob\":\"AQID\",\"KeyId\":\"alias/kmscrypt\"}";
	char *nl;

	want = slurp(KMSCRYPT_SOURCE_DIR "/tests/fixtures/aws/sigv4_kms_known_answer.txt");
	if (!want) {
		skip();
		return;
	}
	nl = strchr(want, '\n');
	if (nl)
		*nl = 0;
	assert_int_equal(http_request_init(&req, "POST", "https://kms.us-east-1.amazonaws.com/"), 0);
	assert_int_equal(http_request_header_add(&req, "Content-Type", "application/x-amz-json-1.1"), 0);
	assert_int_equal(http_request_header_add(&req, "X-Amz-Target", "TrentService.Decrypt"), 0);
	assert_int_equal(http_request_set_body(&req, body, strlen(body)), 0);
	creds_example(&c, "SESSIONTOKEN");
	assert_int_equal(sigv4_sign(&req, &c, "us-east-1", "kms", 1700000000), 0);
	assert_string_equal(http_request_header_get(&req, "Authorization"), want);
	http_request_done(&req);
	aws_creds_done(&c);
}

static void test_bad_input(void **state)
{
	struct http_request req;
	struct aws_creds c;

	assert_int_equal(http_request_init(&req, "GET", "https://example.com/"), 0);
	creds_example(&c, NULL);
	assert_int_equal(sigv4_sign(&req, &c, "", "kms", 1700000000), -EINVAL);
	assert_int_equal(sigv4_sign(&req, &c, "us-east-1", "km/s", 1700000000), -EINVAL);
	http_request_header_remove(&req, "Host");
	assert_int_equal(sigv4_sign(&req, &c, "us-east-1", "kms", 1700000000), -EINVAL);
	http_request_done(&req);
	aws_creds_done(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_suite_all_vectors),
		cmocka_unit_test(test_kms_request_and_resign),
		cmocka_unit_test(test_botocore_known_answer),
		cmocka_unit_test(test_bad_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
