/* SPDX-License-Identifier: MIT */
/*
 * Untrusted text never reaches the terminal or the journal raw (issue 8, item 6):
 *   - cescape() and friends (agent/util/escape.c): what is escaped, what passes, truncation;
 *   - log_errno() (agent/util/log.c): one call is one line, one "<N>" journal record, whatever its
 *     arguments hold (a token field "lab\n<0>kmscrypt: FORGED" once made a second, emergency-level
 *     record);
 *   - struct kms_error, the carrier of KMS and server text: kms_error_set(), kms_error_fill()
 *     and the KMIP Result Message parser leave one printable line.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/http_msg.h"
#include "kms/kmip/kmip_codec.h"
#include "kms/kmip/ttlv_codec.h"
#include "kms/provider.h"
#include "util/escape.h"
#include "util/log.h"
#include "util/secret.h"

static void assert_escaped(const char *in, const char *want)
{
	char *got = cescape(in);

	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

/* No byte that a terminal or journald would act on: C0, DEL, raw C1, malformed UTF-8. */
static void assert_printable(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		assert_true(*p >= 0x20 && *p != 0x7f);
	assert_false(cescape_needed(s));
}

static void test_escape_controls(void **state)
{
	assert_escaped("plain text: /dev/vdb 'lab' [x]", "plain text: /dev/vdb 'lab' [x]");
	assert_escaped("lab\n<0>kmscrypt: FORGED", "lab\\n<0>kmscrypt: FORGED");
	assert_escaped("a\rb\tc", "a\\rb\tc"); /* a tab is harmless: kept */
	assert_escaped("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m");
	assert_escaped("del\x7f bell\a", "del\\x7f bell\\x07");
	assert_escaped("", "");
	/* a backslash is not doubled, so escaping twice changes nothing */
	assert_escaped("C:\\dir \\x1b", "C:\\dir \\x1b");
}

static void test_escape_utf8(void **state)
{
	/* well-formed UTF-8 passes: labels and reasons may be in any language */
	assert_escaped("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91",
		       "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91");
	/* C1 controls: raw (CSI 0x9b) and encoded as UTF-8 (U+009B) */
	assert_escaped("\x9b"
		       "2J",
		       "\\x9b2J");
	assert_escaped("\xc2\x9b"
		       "2J",
		       "\\xc2\\x9b2J");
	assert_escaped("\xc2\xa0", "\xc2\xa0"); /* U+00A0 is not a control */
	/* malformed: overlong '/', surrogate, > U+10FFFF, cut sequence, stray continuation */
	assert_escaped("\xc0\xaf", "\\xc0\\xaf");
	assert_escaped("\xed\xa0\x80", "\\xed\\xa0\\x80");
	assert_escaped("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80");
	assert_escaped("x\xe2\x82", "x\\xe2\\x82");
	assert_escaped("\x80", "\\x80");
	assert_escaped("\xff\xfe", "\\xff\\xfe");
}

static void test_escape_idempotent(void **state)
{
	static const char *const in[] = {"lab\n<0>FORGED", "\x1b]0;title\a", "\xc2\x9b\xff", "ok"};

	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		char *once = cescape(in[i]), *twice;

		assert_non_null(once);
		assert_printable(once);
		twice = cescape(once);
		assert_non_null(twice);
		assert_string_equal(once, twice);
		free(once);
		free(twice);
	}
}

static void test_escape_bounded(void **state)
{
	char buf[64];

	/* fits exactly */
	assert_string_equal(cescape_buf("\n\n", buf, 5), "\\n\\n");
	/* cut at a unit boundary, never inside "\n" or "\x1b", and marked */
	assert_string_equal(cescape_buf("\n\n\n\n", buf, 8), "\\n\\n...");
	assert_string_equal(cescape_buf("ab\x1b[0m", buf, 8), "ab...");
	assert_int_equal(strlen(cescape_buf("\x1b\x1b\x1b\x1b\x1b\x1b", buf, 12)), 11);
	assert_string_equal(buf, "\\x1b\\x1b...");
	/* never inside a UTF-8 sequence */
	assert_string_equal(cescape_buf("\xc3\xa9\xc3\xa9\xc3\xa9", buf, 7),
			    "\xc3\xa9\xc3\xa9\xc3\xa9");
	assert_string_equal(cescape_buf("\xc3\xa9\xc3\xa9\xc3\xa9", buf, 6), "\xc3\xa9...");
	/* NULL and tiny buffers */
	assert_string_equal(cescape_buf(NULL, buf, sizeof(buf)), "");
	assert_string_equal(cescape_buf("ab", buf, 3), "ab");
	assert_string_equal(cescape_buf("abc", buf, 3), "");
	assert_string_equal(cescape_buf("abc", buf, 1), "");
	/* bytes with a NUL inside (a KMIP Text String may hold one) */
	assert_string_equal(cescape_mem("a\0b\n", 4, buf, sizeof(buf)), "a\\x00b\\n");
	assert_true(cescape_needed("a\nb"));
	assert_true(cescape_needed("\xff"));
	assert_false(cescape_needed("caf\xc3\xa9"));
}

/* ---- log.c: one call, one line, one journal record ----------------------------------------- */

/* Run @fn with stderr on a temporary file that $JOURNAL_STREAM names (as systemd does for a unit
 * with StandardError=journal), and return what was written. */
static char *capture_journal(void (*fn)(void))
{
	char path[] = "/tmp/kmscrypt-test-log-XXXXXX", js[64], *text;
	int saved = dup(STDERR_FILENO), fd = mkstemp(path);
	struct stat st;
	long n;
	FILE *f;

	assert_true(saved >= 0 && fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	assert_int_equal(setenv("JOURNAL_STREAM", js, 1), 0);
	fflush(stderr);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	log_setup(); /* stderr is now the "journal stream": "<N>" prefixes */
	fn();
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	unsetenv("JOURNAL_STREAM");
	log_setup();
	f = fdopen(fd, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)n + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	unlink(path);
	return text;
}

static void log_forged(void)
{
	/* as core_kms_load() logs a token's "kms" field, and a device name from the command line */
	log_error("Invalid KMS configuration name '%s': use letters.", "lab\n<0>kmscrypt: FORGED");
	log_error_errno(ENOENT, "Device '%s' does not exist: %m", "/tmp/x\n<0>FORGED\x1b[2J");
	log_warning("KMS said: %s", "\r<1>alert\x1b]0;pwned\a");
}

static void test_log_one_record_per_call(void **state)
{
	char *out = capture_journal(log_forged);
	size_t lines = 0;

	for (char *p = out; *p; p++)
		if (*p == '\n')
			lines++;
	assert_int_equal(lines, 3);
	/* each record starts with the logger's own prefix, at the level of the call */
	assert_non_null(
	    strstr(out, "<3>Invalid KMS configuration name 'lab\\n<0>kmscrypt: FORGED'"));
	assert_non_null(strstr(out, "\n<3>Device '/tmp/x\\n<0>FORGED\\x1b[2J' does not exist: No "
				    "such file or directory\n"));
	assert_non_null(strstr(out, "\n<4>KMS said: \\r<1>alert\\x1b]0;pwned\\x07\n"));
	for (char *line = out; *line; line = strchr(line, '\n') + 1) {
		assert_true(line[0] == '<' && line[2] == '>');
		assert_true(line[1] == '3' || line[1] == '4');
	}
	for (char *p = out; *p; p++)
		assert_true(*p == '\n' || ((unsigned char)*p >= 0x20 && *p != 0x7f));
	free(out);
}

/* ---- struct kms_error: one printable line --------------------------------------------------- */

static void test_kms_error_set(void **state)
{
	struct kms_error e = {};

	assert_int_equal(kms_error_set(&e, -EACCES, "Code\x1b[0m", "key '%s' is %s", "k\x1b[31m",
				       "gone\nforged\tline\r\x7f"),
			 -EACCES);
	assert_printable(e.message);
	assert_printable(e.code);
	/* line breaks and tabs fold into spaces as before; other controls show as escapes */
	assert_string_equal(e.message, "key 'k\\x1b[31m' is gone forged line \\x7f");
	assert_string_equal(e.code, "Code\\x1b[0m");
	assert_false(e.token_rejected);
	assert_int_equal(kms_error_reject(&e, -EACCES, "InvalidCiphertext", "%s", "x"), -EACCES);
	assert_true(e.token_rejected);

	/* a server's text that fills the field: escaped, cut to the field, still one line */
	char big[1000];
	memset(big, '\x1b', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	kms_error_set(&e, -EACCES, "", "%s", big);
	assert_printable(e.message);
	assert_true(strlen(e.message) < sizeof(e.message));
	assert_non_null(strstr(e.message, "..."));
}

static void test_kms_error_fill(void **state)
{
	struct kms_error e = {.token_rejected = true};

	kms_error_fill(&e, -EACCES, 400, "Invalid\x1b", "req\n1", "AWS KMS: %s",
		       "bad\x1b[2Jthing\n");
	assert_printable(e.message);
	assert_printable(e.code);
	assert_printable(e.request_id);
	assert_string_equal(e.message, "AWS KMS: bad\\x1b[2Jthing ");
	assert_false(e.token_rejected); /* a new reply: the codec decides again */
}

/* A failed KMIP reply whose Result Message tries to forge a line and drive a terminal. */
static void test_kmip_result_message(void **state)
{
	static const char msg[] = "denied\n<0>kmscrypt: FORGED\x1b[2J\x7ftail";
	struct ttlv_writer w = {};
	struct secret *s = NULL;
	struct kms_error e = {};

	assert_int_equal(ttlv_begin(&w, KMIP_TAG_RESPONSE_MESSAGE), 0);
	assert_int_equal(ttlv_begin(&w, KMIP_TAG_RESPONSE_HEADER), 0);
	assert_int_equal(ttlv_begin(&w, KMIP_TAG_PROTOCOL_VERSION), 0);
	assert_int_equal(ttlv_put_int(&w, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1), 0);
	assert_int_equal(ttlv_put_int(&w, KMIP_TAG_PROTOCOL_VERSION_MINOR, 2), 0);
	assert_int_equal(ttlv_end(&w), 0);
	assert_int_equal(ttlv_put_datetime(&w, KMIP_TAG_TIME_STAMP, 1700000000), 0);
	assert_int_equal(ttlv_put_int(&w, KMIP_TAG_BATCH_COUNT, 1), 0);
	assert_int_equal(ttlv_end(&w), 0);
	assert_int_equal(ttlv_begin(&w, KMIP_TAG_BATCH_ITEM), 0);
	assert_int_equal(ttlv_put_enum(&w, KMIP_TAG_OPERATION, KMIP_OP_GET), 0);
	assert_int_equal(ttlv_put_enum(&w, KMIP_TAG_RESULT_STATUS, KMIP_STATUS_OPERATION_FAILED),
			 0);
	assert_int_equal(ttlv_put_enum(&w, KMIP_TAG_RESULT_REASON, KMIP_REASON_PERMISSION_DENIED),
			 0);
	assert_int_equal(ttlv_put_text(&w, KMIP_TAG_RESULT_MESSAGE, msg, sizeof(msg) - 1), 0);
	assert_int_equal(ttlv_end(&w), 0);
	assert_int_equal(ttlv_end(&w), 0);
	assert_int_equal(ttlv_writer_finish(&w, &s), 0);

	assert_int_equal(kmip_parse_result(s->buf, s->len, KMIP_OP_GET, NULL, &e), -EACCES);
	assert_printable(e.message);
	assert_string_equal(e.message, "denied <0>kmscrypt: FORGED\\x1b[2J\\x7ftail");
	secret_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_escape_controls),
	    cmocka_unit_test(test_escape_utf8),
	    cmocka_unit_test(test_escape_idempotent),
	    cmocka_unit_test(test_escape_bounded),
	    cmocka_unit_test(test_log_one_record_per_call),
	    cmocka_unit_test(test_kms_error_set),
	    cmocka_unit_test(test_kms_error_fill),
	    cmocka_unit_test(test_kmip_result_message),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
