/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the KMIP reply parsers (agent/kms/kmip/).  Linked with kmscrypt_codec only.
 * Besides "no crash, no leak", it checks one property: the decoder is strict, so every accepted
 * input is the canonical encoding of its tree, and re-encoding the tree gives back the same bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kms/kmip/kmip_codec.h"
#include "kms/kmip/ttlv_codec.h"
#include "kms/provider.h"
#include "util/secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int reencode(struct ttlv_writer *w, const struct ttlv_item *it)
{
	const uint8_t *p;
	const char *s;
	size_t n;
	int64_t l;
	int32_t i;
	uint32_t u;
	bool b;
	int r;

	switch (it->type) {
	case TTLV_STRUCTURE:
		r = ttlv_begin(w, it->tag);
		for (const struct ttlv_item *c = it->child; r == 0 && c; c = c->next)
			r = reencode(w, c);
		return r < 0 ? r : ttlv_end(w);
	case TTLV_INTEGER:
		return ttlv_get_int(it, &i) ?: ttlv_put_int(w, it->tag, i);
	case TTLV_LONG_INTEGER:
		return ttlv_get_long(it, &l) ?: ttlv_put_long(w, it->tag, l);
	case TTLV_BIG_INTEGER:
		return ttlv_get_bigint(it, &p, &n) ?: ttlv_put_bigint(w, it->tag, p, n);
	case TTLV_ENUMERATION:
		return ttlv_get_enum(it, &u) ?: ttlv_put_enum(w, it->tag, u);
	case TTLV_BOOLEAN:
		return ttlv_get_bool(it, &b) ?: ttlv_put_bool(w, it->tag, b);
	case TTLV_TEXT_STRING:
		return ttlv_get_text(it, &s, &n) ?: ttlv_put_text(w, it->tag, s, n);
	case TTLV_BYTE_STRING:
		return ttlv_get_bytes(it, &p, &n) ?: ttlv_put_bytes(w, it->tag, p, n);
	case TTLV_DATE_TIME:
		return ttlv_get_datetime(it, &l) ?: ttlv_put_datetime(w, it->tag, l);
	case TTLV_INTERVAL:
		return ttlv_get_interval(it, &u) ?: ttlv_put_interval(w, it->tag, u);
	default:
		return -EINVAL;
	}
}

static void check_canonical(const uint8_t *data, size_t size)
{
	struct ttlv_tree t = {};
	struct ttlv_writer w = {};
	struct secret *out = NULL;

	if (ttlv_parse(data, size, &t) < 0)
		return;
	if (reencode(&w, &t.items[0]) < 0 || ttlv_writer_finish(&w, &out) < 0)
		abort();
	if (out->len != size || memcmp(out->buf, data, size) != 0)
		abort();
	secret_free(out);
	ttlv_writer_done(&w);
	ttlv_tree_done(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t ops[] = {KMIP_OP_CREATE, KMIP_OP_REGISTER, KMIP_OP_ACTIVATE,
				       KMIP_OP_REVOKE, KMIP_OP_DESTROY};
	struct kmip_key_attributes attrs;
	struct kmip_ciphertext ct = {};
	struct kmip_result res;
	struct kms_error err;
	struct secret *s = NULL;
	uint32_t alg;
	int32_t bits;
	size_t count;
	char *uid = NULL;
	uint8_t hdr[TTLV_HEADER_BYTES];
	size_t sz;

	check_canonical(data, size);
	if (size >= TTLV_HEADER_BYTES) {
		memcpy(hdr, data, sizeof(hdr));
		(void)ttlv_message_size(hdr, KMIP_TAG_RESPONSE_MESSAGE, &sz);
	}
	(void)kmip_parse_result(data, size, KMIP_OP_GET, &res, &err);
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		if (kmip_parse_uid_reply(data, size, ops[i], &uid, &err) == 0)
			free(uid);
		uid = NULL;
	}
	if (kmip_parse_locate(data, size, &count, &uid, &err) == 0)
		free(uid);
	if (kmip_parse_get_symmetric_key(data, size, &s, &alg, &bits, &err) == 0)
		s = secret_free(s);
	(void)kmip_parse_get_attributes(data, size, &attrs, &err);
	if (kmip_parse_encrypt(data, size, &ct, &err) == 0)
		kmip_ciphertext_done(&ct);
	if (kmip_parse_decrypt(data, size, &s, &err) == 0)
		s = secret_free(s);
	return 0;
}
