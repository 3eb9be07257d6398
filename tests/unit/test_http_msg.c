/* SPDX-License-Identifier: MIT */
/* http_msg (requests, responses, retry policy, dates) and json_util (scanner and writer). */
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
#include "codec/json_util.h"
#include "kms/provider.h"
#include "util/cleanup.h"
#include "util/secret.h"

static void test_request_url(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};
	_cleanup_free_ char *url = NULL;

	assert_int_equal(http_request_init(&req, "GET", "https://[::1]:8443/a/b?x=1&y=2"), 0);
	assert_string_equal(req.scheme, "https");
	assert_string_equal(req.host, "[::1]:8443");
	assert_string_equal(req.path, "/a/b");
	assert_string_equal(req.query, "x=1&y=2");
	assert_string_equal(http_request_header_get(&req, "host"), "[::1]:8443");
	assert_int_equal(http_request_url(&req, &url), 0);
	assert_string_equal(url, "https://[::1]:8443/a/b?x=1&y=2");
	http_request_done(&req);

	assert_int_equal(http_request_init(&req, "POST", "https://kms.eu-west-1.amazonaws.com"), 0);
	assert_string_equal(req.path, "/");
	assert_null(req.query);
	http_request_done(&req);
	assert_int_equal(http_request_init(&req, "GET", "https://h?q"), 0);
	assert_string_equal(req.path, "/");
	assert_string_equal(req.query, "q");
	http_request_done(&req);

	assert_int_equal(http_request_init(&req, "GET", "ftp://h/"), -EINVAL);
	assert_int_equal(http_request_init(&req, "GET", "https://user:pw@h/"), -EINVAL);
	assert_int_equal(http_request_init(&req, "GET", "https:///x"), -EINVAL);
	assert_int_equal(http_request_init(&req, "GET", "https://h/a b"), -EINVAL);
	assert_int_equal(http_request_init(&req, "GET", "https://h/#frag"), -EINVAL);
	assert_int_equal(http_request_init2(&req, "GET", "https://h", "nope", NULL), -EINVAL);
}

static void test_headers(void **state)
{
	_cleanup_(http_request_done) struct http_request req = {};

	assert_int_equal(http_request_init(&req, "GET", "https://h/"), 0);
	assert_int_equal(http_request_header_add(&req, "A", "1"), 0);
	assert_int_equal(http_request_header_add(&req, "B", "2"), 0);
	assert_int_equal(http_request_header_add(&req, "a", "3"), 0);
	assert_int_equal(req.n_headers, 4);
	assert_int_equal(http_request_header_set(&req, "A", "x"), 0);
	assert_int_equal(req.n_headers, 3);
	assert_string_equal(req.headers[1].name, "A");
	assert_string_equal(req.headers[1].value, "x");
	http_request_header_remove(&req, "b");
	assert_int_equal(req.n_headers, 2);
	assert_null(http_request_header_get(&req, "B"));
	assert_int_equal(http_request_header_add(&req, "Bad Name", "v"), -EINVAL);
	assert_int_equal(http_request_header_add(&req, "Bad:Name", "v"), -EINVAL);
	/* NULL-safe */
	http_request_done(NULL);
	http_response_done(NULL);
	assert_null(http_request_free(NULL));
	assert_null(http_response_free(NULL));
}

static void test_backoff(void **state)
{
	assert_int_equal(kms_backoff_ms(0, 12345), 0);
	/* attempt 1: [0, 200], 2: [0, 400], ... capped at 20 s */
	for (uint32_t rnd = 0; rnd < 100000; rnd += 997) {
		assert_in_range(kms_backoff_ms(1, rnd), 0, 200);
		assert_in_range(kms_backoff_ms(2, rnd), 0, 400);
		assert_in_range(kms_backoff_ms(7, rnd), 0, 12800);
		assert_in_range(kms_backoff_ms(8, rnd), 0, 20000);
		assert_in_range(kms_backoff_ms(1000, rnd), 0, 20000);
	}
	assert_int_equal(kms_backoff_ms(1, 200), 200);
	assert_int_equal(kms_backoff_ms(1, 201), 0);
	assert_int_equal(kms_backoff_ms(100, UINT32_MAX), UINT32_MAX % 20001);
	assert_true(http_status_transient(429));
	assert_true(http_status_transient(503));
	assert_true(http_status_transient(408));
	assert_false(http_status_transient(501));
	assert_false(http_status_transient(403));
	assert_false(http_status_transient(400));
}

static void test_retry_after(void **state)
{
	const time_t now = (time_t)http_timegm(2015, 10, 21, 7, 28, 0);
	unsigned ms;

	assert_int_equal(http_retry_after_parse("120", now, 600000, &ms), 0);
	assert_int_equal(ms, 120000);
	assert_int_equal(http_retry_after_parse(" 0 ", now, 600000, &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(http_retry_after_parse("99999999999999", now, 20000, &ms), 0);
	assert_int_equal(ms, 20000);
	assert_int_equal(http_retry_after_parse("Wed, 21 Oct 2015 07:28:30 GMT", now, 600000, &ms), 0);
	assert_int_equal(ms, 30000);
	assert_int_equal(http_retry_after_parse("Wednesday, 21-Oct-15 07:29:00 GMT", now, 600000, &ms), 0);
	assert_int_equal(ms, 60000);
	assert_int_equal(http_retry_after_parse("Wed Oct 21 07:28:10 2015", now, 600000, &ms), 0);
	assert_int_equal(ms, 10000);
	assert_int_equal(http_retry_after_parse("Wed, 21 Oct 2015 07:00:00 GMT", now, 600000, &ms), 0);
	assert_int_equal(ms, 0); /* in the past */
	assert_int_equal(http_retry_after_parse("-5", now, 600000, &ms), -EINVAL);
	assert_int_equal(http_retry_after_parse("1.5", now, 600000, &ms), -EINVAL);
	assert_int_equal(http_retry_after_parse("soon", now, 600000, &ms), -EINVAL);
	assert_int_equal(http_retry_after_parse("Wed, 21 Foo 2015 07:28:30 GMT", now, 600000, &ms), -EINVAL);
	assert_int_equal(http_retry_after_parse("Wed, 21 Oct 2015 07:28:30 PST", now, 600000, &ms), -EINVAL);
	assert_int_equal(http_retry_after_parse("", now, 600000, &ms), -EINVAL);
}

static void test_dates(void **state)
{
	time_t t;

	assert_int_equal(http_timegm(1970, 1, 1, 0, 0, 0), 0);
	assert_int_equal(http_timegm(2000, 2, 29, 0, 0, 0), 951782400);
	assert_int_equal(http_timegm(2015, 8, 30, 12, 36, 0), 1440938160);
	assert_int_equal(http_parse_rfc3339("2024-05-01T16:00:00Z", &t), 0);
	assert_int_equal(t, 1714579200);
	assert_int_equal(http_parse_rfc3339("2023-11-14T23:13:20.000000000Z", &t), 0);
	assert_int_equal(t, 1700003600);
	assert_int_equal(http_parse_rfc3339("2024-05-01T18:00:00+02:00", &t), 0);
	assert_int_equal(t, 1714579200);
	assert_int_equal(http_parse_rfc3339("2024-05-01 16:00:00Z", &t), -EINVAL);
	assert_int_equal(http_parse_rfc3339("2024-13-01T16:00:00Z", &t), -EINVAL);
	assert_int_equal(http_parse_rfc3339("2024-05-01T16:00:00", &t), -EINVAL);
}

static void test_error_fill(void **state)
{
	struct kms_error e = {};

	assert_int_equal(kms_error_fill(&e, -EACCES, 403, "Code\n", "req\r1", "line1\nline2\t%d", 3), -EACCES);
	assert_int_equal(e.http_status, 403);
	assert_string_equal(e.code, "Code ");
	assert_string_equal(e.request_id, "req 1");
	assert_string_equal(e.message, "line1 line2 3");
	assert_int_equal(kms_error_fill(NULL, -EAGAIN, 0, NULL, NULL, "x"), -EAGAIN);
}

static void test_json_scanner(void **state)
{
	static const char *const p_a[] = { "a", NULL };
	static const char *const p_ab[] = { "a", "b", NULL };
	_cleanup_secret_ struct secret *s = NULL;
	char *str = NULL;
	uint64_t u;
	bool b;

#define DOC(x) x, strlen(x)
	assert_int_equal(json_find_string_secret(DOC("{\"a\":\"x\\u00e9\\ud83d\\ude00\\n\"}"), p_a, &s), 0);
	assert_int_equal(s->len, 1 + 2 + 4 + 1);
	assert_memory_equal(s->buf, "x\xc3\xa9\xf0\x9f\x98\x80\n", 8);
	s = secret_free(s);
	/* nested, and the same key elsewhere in the tree does not count */
	assert_int_equal(json_find_string(DOC("{\"b\":{\"a\":\"no\"},\"a\":{\"b\":\"yes\",\"c\":[1,{\"b\":2}]}}"),
					  p_ab, &str),
			 0);
	assert_string_equal(str, "yes");
	free(str);
	assert_int_equal(json_find_string(DOC("{\"a\":{\"b\":\"1\"},\"a\":{\"b\":\"2\"}}"), p_ab, &str), -EBADMSG);
	assert_int_equal(json_find_string(DOC("{\"a\":null}"), p_a, &str), -ENOENT);
	assert_int_equal(json_find_string(DOC("{\"x\":1}"), p_a, &str), -ENOENT);
	assert_int_equal(json_find_string(DOC("{\"a\":1}"), p_a, &str), -EBADMSG);
	assert_int_equal(json_find_string(DOC("{\"a\":\"\\u0000\"}"), p_a, &str), -EBADMSG); /* NUL in C str */
	assert_int_equal(json_find_string_secret(DOC("{\"a\":\"\\u0000\"}"), p_a, &s), 0);       /* fine in bytes */
	s = secret_free(s);
	assert_int_equal(json_find_uint(DOC("{\"a\":3600}"), p_a, &u), 0);
	assert_int_equal(u, 3600);
	assert_int_equal(json_find_uint(DOC("{\"a\":-1}"), p_a, &u), -EBADMSG);
	assert_int_equal(json_find_uint(DOC("{\"a\":1.5}"), p_a, &u), -EBADMSG);
	assert_int_equal(json_find_uint(DOC("{\"a\":99999999999999999999999}"), p_a, &u), -EBADMSG);
	assert_int_equal(json_find_bool(DOC("{\"a\":true}"), p_a, &b), 0);
	assert_true(b);
	assert_int_equal(json_find_bool(DOC("{\"a\":\"true\"}"), p_a, &b), -EBADMSG);

	static const char *const invalid[] = {
		"", " ", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "[1,]", "{\"a\":01}", "{\"a\":1.}",
		"{\"a\":.5}", "{\"a\":1e}", "{\"a\":tru}", "{\"a\":\"\\x\"}", "{\"a\":\"\\ud800\"}",
		"{\"a\":\"\\udc00\"}", "{\"a\":\"\x01\"}", "{'a':1}", "{\"a\":1} {}", "{\"a\":NaN}",
		"{\"a\":\"unterminated}",
	};
	for (size_t i = 0; i < ARRAY_SIZE(invalid); i++)
		if (json_validate(invalid[i], strlen(invalid[i])) != -EBADMSG) {
			print_error("accepted invalid JSON #%zu: %s\n", i, invalid[i]);
			fail();
		}
	static const char *const valid[] = {
		"{}", "[]", "1", "-0.5e+10", "\"\"", " {\"a\" : [ true , false , null , {} ] } \n",
		"{\"\\ud83d\\ude00\":\"\\/\\b\\f\\r\\t\"}",
	};
	for (size_t i = 0; i < ARRAY_SIZE(valid); i++)
		assert_int_equal(json_validate(valid[i], strlen(valid[i])), 0);
	{
		/* depth limit */
		char deep[200];
		memset(deep, '[', 100);
		memset(deep + 100, ']', 100);
		assert_int_equal(json_validate(deep, sizeof(deep)), -EBADMSG);
	}
#undef DOC
}

static void test_json_writer(void **state)
{
	_cleanup_secret_ struct secret *out = NULL;
	struct json_writer w;

	assert_int_equal(json_writer_init(&w, 1024), 0);
	json_writer_object_begin(&w, NULL);
	json_writer_string(&w, "s", "q\"b\\c\n\x01");
	json_writer_base64(&w, "b1", "\xff", 1);
	json_writer_base64(&w, "b2", "\xff\xfe", 2);
	json_writer_base64(&w, "b3", "\xff\xfe\xfd", 3);
	json_writer_base64(&w, "b0", "", 0);
	json_writer_uint(&w, "n", 18446744073709551615ull);
	json_writer_bool(&w, "t", true);
	json_writer_array_begin(&w, "a");
	json_writer_string(&w, NULL, "x");
	json_writer_object_begin(&w, NULL);
	json_writer_object_end(&w);
	json_writer_array_end(&w);
	json_writer_object_end(&w);
	assert_int_equal(json_writer_finish(&w, &out), 0);
	{
		const char *want = "{\"s\":\"q\\\"b\\\\c\\u000a\\u0001\",\"b1\":\"/w==\",\"b2\":\"//4=\","
				   "\"b3\":\"//79\",\"b0\":\"\",\"n\":18446744073709551615,\"t\":true,"
				   "\"a\":[\"x\",{}]}";
		assert_int_equal(out->len, strlen(want));
		assert_memory_equal(out->buf, want, out->len);
		assert_int_equal(json_validate(out->buf, out->len), 0);
	}
	/* unbalanced */
	assert_int_equal(json_writer_init(&w, 64), 0);
	json_writer_object_begin(&w, NULL);
	assert_int_equal(json_writer_finish(&w, &out), -EINVAL);
	/* overflow of the fixed capacity (a page at least) is an error, not a truncation */
	assert_int_equal(json_writer_init(&w, 16), 0);
	json_writer_object_begin(&w, NULL);
	for (int i = 0; i < 2000; i++)
		json_writer_string(&w, "k", "v");
	json_writer_object_end(&w);
	assert_int_equal(json_writer_finish(&w, &out), -ENOBUFS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_url),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_retry_after),
		cmocka_unit_test(test_dates),
		cmocka_unit_test(test_error_fill),
		cmocka_unit_test(test_json_scanner),
		cmocka_unit_test(test_json_writer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
