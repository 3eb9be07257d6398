/* SPDX-License-Identifier: MIT */
/*
 * volume_header_peek(): the LUKS2 header read without libcryptsetup (lock --all's listing).  On
 * image files made by libcryptsetup it must say exactly what volume_read_header() says (UUID,
 * label, which kmscrypt token, its JSON, how many kmscrypt tokens), follow header updates, and
 * refuse (-EAGAIN: ask libcryptsetup) whenever the two header copies do not agree.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/secret.h"
#include "volume/volume.h"
#include "test_volume_util.h"

#define UUID "6a1d2c3b-4e5f-4071-8293-a4b5c6d7e8f9"
#define HDR 16384 /* libcryptsetup's default LUKS2 header size (one copy) */

static struct secret *secret;

static int setup(void **state)
{
	test_dir_create();
	secret = test_secret_random();
	return 0;
}

static int teardown(void **state)
{
	secret = secret_free(secret);
	test_dir_remove();
	return 0;
}

static const char *formatted(const char *name)
{
	const char *img = test_image(name, TEST_IMAGE_BYTES);
	struct volume_format_params p = {
	    .uuid = UUID,
	    .label = "peek-data",
	    .keyslot = 0,
	    .secret = secret,
	    .token_json = test_token_json(0),
	};

	assert_int_equal(volume_format(img, &p), 0);
	return img;
}

/* libcryptsetup writes token @json at @id (both header copies, seqid + 1). */
static void token_set(const char *img, int id, const char *json)
{
	struct crypt_device *cd = NULL;

	assert_int_equal(crypt_init(&cd, img), 0);
	assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
	assert_int_equal(crypt_token_json_set(cd, id, json), id);
	crypt_free(cd);
}

static void assert_same(const char *img)
{
	struct volume_header a = {}, b = {};

	assert_int_equal(volume_read_header(img, &a), 0);
	assert_int_equal(volume_header_peek(img, &b), 0);
	assert_string_equal(a.uuid, b.uuid);
	assert_string_equal(a.label, b.label);
	assert_int_equal(a.token_id, b.token_id);
	assert_int_equal(a.kmscrypt_tokens, b.kmscrypt_tokens);
	if (a.token_json || b.token_json) {
		assert_non_null(a.token_json);
		assert_non_null(b.token_json);
		assert_string_equal(a.token_json, b.token_json);
	}
	volume_header_done(&a);
	volume_header_done(&b);
}

static void test_same_as_libcryptsetup(void **state)
{
	const char *img = formatted("same.img");
	struct volume_header h = {};

	assert_int_equal(volume_header_peek(img, &h), 0);
	assert_string_equal(h.uuid, UUID);
	assert_string_equal(h.label, "peek-data");
	assert_int_equal(h.token_id, 0);
	assert_int_equal(h.kmscrypt_tokens, 1);
	assert_non_null(strstr(h.token_json, "\"type\":\"kmscrypt\""));
	volume_header_done(&h);
	assert_same(img);

	/* someone else's token, a kmscrypt-* one and a second "kmscrypt" one at higher ids: the
	 * lowest "kmscrypt" id is the token, both prefixed ones count */
	token_set(img, 3, "{\"type\":\"systemd-fido2\",\"keyslots\":[],\"fido2-rp\":\"io.a/b\"}");
	token_set(img, 5, "{\"type\":\"kmscrypt-next\",\"keyslots\":[]}");
	token_set(img, 9, test_token_json(0));
	assert_int_equal(volume_header_peek(img, &h), 0);
	assert_int_equal(h.token_id, 0);
	assert_int_equal(h.kmscrypt_tokens, 3);
	volume_header_done(&h);
	assert_same(img);
}

static void test_follows_updates(void **state)
{
	const char *img = formatted("update.img");
	char *json = strdup(test_token_json(0)), *p;
	struct volume_header h = {};

	/* the same token with another blob, written the way revoke marks a token */
	assert_non_null(json);
	p = strstr(json, "\"blob\":\"AAAA\"");
	assert_non_null(p);
	memcpy(p, "\"blob\":\"BBBB\"", strlen("\"blob\":\"BBBB\""));
	token_set(img, 0, json);
	assert_int_equal(volume_header_peek(img, &h), 0);
	assert_non_null(strstr(h.token_json, "\"blob\":\"BBBB\""));
	volume_header_done(&h);
	assert_same(img);
	free(json);
}

static void patch(const char *img, off_t off, const void *bytes, size_t n)
{
	int fd = open(img, O_WRONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, bytes, n, off), (ssize_t)n);
	close(fd);
}

static void test_copies_disagree(void **state)
{
	struct volume_header h = {};
	const char *img;

	/* the secondary copy's JSON differs (a torn write, or bit rot): ask libcryptsetup */
	img = formatted("torn.img");
	patch(img, HDR + 4096 + 2, "X", 1);
	assert_int_equal(volume_header_peek(img, &h), -EAGAIN);
	assert_null(h.token_json);

	/* the seqids differ */
	img = formatted("seqid.img");
	patch(img, HDR + 16 + 7, "\x7f", 1);
	assert_int_equal(volume_header_peek(img, &h), -EAGAIN);

	/* the UUIDs differ */
	img = formatted("uuid.img");
	patch(img, HDR + 168, "7", 1);
	assert_int_equal(volume_header_peek(img, &h), -EAGAIN);

	/* no primary copy (libcryptsetup can recover from the secondary one) */
	img = formatted("noprimary.img");
	patch(img, 0, "\0\0\0\0\0\0", 6);
	assert_int_equal(volume_header_peek(img, &h), -EAGAIN);

	/* not LUKS at all */
	img = test_image("zero.img", 1 << 20);
	assert_int_equal(volume_header_peek(img, &h), -EAGAIN);
	assert_int_equal(volume_header_peek("/nonexistent/kmscrypt-peek", &h), -ENOENT);
}

/* A buffer with two copies of a header whose JSON area is @json (the rest as LUKS2 puts it). */
static unsigned char *two_copies(const char *json, size_t *ret_len)
{
	unsigned char *b = calloc(2, HDR);

	assert_non_null(b);
	for (int c = 0; c < 2; c++) {
		unsigned char *p = b + (size_t)c * HDR;
		memcpy(p, c ? "SKUL\xba\xbe" : "LUKS\xba\xbe", 6);
		p[7] = 2;
		p[8 + 6] = HDR >> 8; /* hdr_size 16384, big-endian */
		p[16 + 7] = 3;	     /* seqid */
		memcpy(p + 24, "lbl", 3);
		memcpy(p + 168, UUID, strlen(UUID));
		if (c)
			p[256 + 6] = HDR >> 8; /* hdr_offset of the secondary copy */
		memcpy(p + 4096, json, strlen(json));
	}
	*ret_len = 2 * HDR;
	return b;
}

static void test_parse(void **state)
{
	struct volume_header h = {};
	unsigned char *b;
	size_t n;

	b = two_copies("{\"tokens\":{\"2\":{\"type\":\"kmscrypt\",\"keyslots\":[\"1\"]}},\"keyslots\":{}}",
		       &n);
	assert_int_equal(volume_header_peek_size(b, 4096), 2 * HDR);
	assert_int_equal(volume_header_peek_parse(b, n, &h), 0);
	assert_string_equal(h.uuid, UUID);
	assert_string_equal(h.label, "lbl");
	assert_int_equal(h.token_id, 2);
	assert_string_equal(h.token_json, "{\"type\":\"kmscrypt\",\"keyslots\":[\"1\"]}");
	volume_header_done(&h);
	/* short of the secondary copy */
	assert_int_equal(volume_header_peek_parse(b, n - 1, &h), -EAGAIN);
	/* a header size LUKS2 does not allow */
	b[8 + 6] = 0x50, b[HDR + 8 + 6] = 0x50;
	assert_int_equal(volume_header_peek_size(b, 4096), 0);
	assert_int_equal(volume_header_peek_parse(b, n, &h), -EAGAIN);
	free(b);

	/* no tokens object; a token id that is not a number; trailing bytes; not an object */
	static const char *bad[] = {
	    "{\"keyslots\":{}}",
	    "{\"tokens\":{\"x\":{\"type\":\"kmscrypt\"}}}",
	    "{\"tokens\":{\"32\":{\"type\":\"kmscrypt\"}}}",
	    "{\"tokens\":{\"0\":{\"type\":7}}}",
	    "{\"tokens\":{}} {}",
	    "[1,2]",
	    "{\"tokens\":{\"0\":{\"type\":\"kmscrypt\"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b = two_copies(bad[i], &n);
		assert_int_equal(volume_header_peek_parse(b, n, &h), -EAGAIN);
		assert_null(h.token_json);
		free(b);
	}
	/* no kmscrypt token: parsed, none found */
	b = two_copies("{\"tokens\":{\"0\":{\"type\":\"luks2-keyring\",\"keyslots\":[]}}}", &n);
	assert_int_equal(volume_header_peek_parse(b, n, &h), 0);
	assert_int_equal(h.token_id, -1);
	assert_int_equal(h.kmscrypt_tokens, 0);
	volume_header_done(&h);
	/* not LUKS2 */
	b[0] = 'X';
	assert_int_equal(volume_header_peek_parse(b, n, &h), -ENODEV);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_same_as_libcryptsetup),
	    cmocka_unit_test(test_follows_updates),
	    cmocka_unit_test(test_copies_disagree),
	    cmocka_unit_test(test_parse),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
