/* SPDX-License-Identifier: MIT */
/* TTLV encoder and decoder (KMIP Specification v1.2, section 9.1.1); see ttlv_codec.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kms/kmip/ttlv_codec.h"
#include "util/cleanup.h"
#include "util/secret.h"

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static size_t pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static bool tag_valid(uint32_t tag)
{
	/* 0x42xxxx: tags of the specification; 0x54xxxx: extensions (section 9.1.3.1). */
	return (tag >> 16) == 0x42 || (tag >> 16) == 0x54;
}

bool ttlv_text_valid(const char *s, size_t n)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		size_t k;
		uint32_t cp;

		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			k = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			k = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			k = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i + j] & 0x3f);
		}
		/* overlong forms, UTF-16 surrogates, beyond U+10FFFF */
		if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

/* ---- decoder ----------------------------------------------------------------------------------
 */

struct parser {
	struct ttlv_item *items; /* NULL while counting */
	size_t n;
};

/* Parse the item at @buf (@avail bytes left in the enclosing structure or message); on success
 * *ret_used is the item's size including header and padding. */
static int parse_item(struct parser *p, const uint8_t *buf, size_t avail, unsigned depth,
		      struct ttlv_item **ret_item, size_t *ret_used)
{
	struct ttlv_item *it = NULL;
	uint32_t tag, len;
	uint8_t type;
	size_t padded;

	if (avail < TTLV_HEADER_BYTES)
		return -EBADMSG;
	tag = (uint32_t)buf[0] << 16 | (uint32_t)buf[1] << 8 | buf[2];
	type = buf[3];
	len = be32(buf + 4);
	if (!tag_valid(tag))
		return -EBADMSG;
	if (len > avail - TTLV_HEADER_BYTES)
		return -EBADMSG;
	padded = pad8(len);
	if (padded > avail - TTLV_HEADER_BYTES)
		return -EBADMSG;
	for (size_t i = len; i < padded; i++)
		if (buf[TTLV_HEADER_BYTES + i] != 0)
			return -EBADMSG; /* padding must be zero */
	if (p->n >= TTLV_MAX_ITEMS)
		return -EBADMSG;
	if (p->items) {
		it = &p->items[p->n];
		*it = (struct ttlv_item){
		    .tag = tag, .type = type, .len = len, .value = buf + TTLV_HEADER_BYTES};
	}
	p->n++;

	const uint8_t *v = buf + TTLV_HEADER_BYTES;
	switch (type) {
	case TTLV_STRUCTURE: {
		struct ttlv_item *prev = NULL;
		size_t off = 0;

		if (len % 8 != 0)
			return -EBADMSG;
		if (depth + 1 >= TTLV_MAX_DEPTH)
			return -EBADMSG;
		while (off < len) {
			struct ttlv_item *c = NULL;
			size_t used;
			int r = parse_item(p, v + off, len - off, depth + 1, &c, &used);

			if (r < 0)
				return r;
			if (it) {
				if (prev)
					prev->next = c;
				else
					it->child = c;
			}
			prev = c;
			off += used;
		}
		break;
	}
	case TTLV_INTEGER:
	case TTLV_ENUMERATION:
	case TTLV_INTERVAL:
		if (len != 4)
			return -EBADMSG;
		break;
	case TTLV_LONG_INTEGER:
	case TTLV_DATE_TIME:
		if (len != 8)
			return -EBADMSG;
		break;
	case TTLV_BOOLEAN:
		if (len != 8 || be64(v) > 1)
			return -EBADMSG;
		break;
	case TTLV_BIG_INTEGER:
		if (len == 0 || len % 8 != 0)
			return -EBADMSG;
		break;
	case TTLV_TEXT_STRING:
		if (!ttlv_text_valid((const char *)v, len))
			return -EBADMSG;
		break;
	case TTLV_BYTE_STRING:
		break;
	default:
		return -EBADMSG;
	}
	if (ret_item)
		*ret_item = it;
	*ret_used = TTLV_HEADER_BYTES + padded;
	return 0;
}

int ttlv_parse(const uint8_t *buf, size_t len, struct ttlv_tree *ret)
{
	struct parser p = {};
	size_t used;
	int r;

	if (!buf || len > TTLV_MAX_MESSAGE)
		return -EBADMSG;
	/* Pass 1 validates and counts; pass 2 fills an array of exactly that size, so that the
	 * items can point at each other. */
	r = parse_item(&p, buf, len, 0, NULL, &used);
	if (r < 0)
		return r;
	if (used != len)
		return -EBADMSG; /* trailing bytes */
	p.items = calloc(p.n, sizeof(*p.items));
	if (!p.items)
		return -ENOMEM;
	p.n = 0;
	r = parse_item(&p, buf, len, 0, NULL, &used);
	if (r < 0) { /* cannot happen: same input, same checks */
		free(p.items);
		return r;
	}
	*ret = (struct ttlv_tree){.items = p.items, .n_items = p.n};
	return 0;
}

void ttlv_tree_done(struct ttlv_tree *t)
{
	if (!t)
		return;
	free(t->items);
	*t = (struct ttlv_tree){};
}

int ttlv_message_size(const uint8_t hdr[TTLV_HEADER_BYTES], uint32_t expect_tag, size_t *ret)
{
	uint32_t tag = (uint32_t)hdr[0] << 16 | (uint32_t)hdr[1] << 8 | hdr[2];
	uint32_t len = be32(hdr + 4);

	if (hdr[3] != TTLV_STRUCTURE || !tag_valid(tag) || (expect_tag && tag != expect_tag))
		return -EBADMSG;
	if (len % 8 != 0 || len > TTLV_MAX_MESSAGE - TTLV_HEADER_BYTES)
		return -EBADMSG;
	*ret = TTLV_HEADER_BYTES + (size_t)len;
	return 0;
}

const struct ttlv_item *ttlv_child(const struct ttlv_item *parent, uint32_t tag)
{
	if (!parent || parent->type != TTLV_STRUCTURE)
		return NULL;
	for (const struct ttlv_item *c = parent->child; c; c = c->next)
		if (c->tag == tag)
			return c;
	return NULL;
}

const struct ttlv_item *ttlv_next_same(const struct ttlv_item *it)
{
	if (!it)
		return NULL;
	for (const struct ttlv_item *c = it->next; c; c = c->next)
		if (c->tag == it->tag)
			return c;
	return NULL;
}

size_t ttlv_count(const struct ttlv_item *parent, uint32_t tag)
{
	size_t n = 0;

	for (const struct ttlv_item *c = ttlv_child(parent, tag); c; c = ttlv_next_same(c))
		n++;
	return n;
}

int ttlv_get_int(const struct ttlv_item *it, int32_t *ret)
{
	if (!it || it->type != TTLV_INTEGER)
		return -EBADMSG;
	*ret = (int32_t)be32(it->value);
	return 0;
}

int ttlv_get_long(const struct ttlv_item *it, int64_t *ret)
{
	if (!it || it->type != TTLV_LONG_INTEGER)
		return -EBADMSG;
	*ret = (int64_t)be64(it->value);
	return 0;
}

int ttlv_get_enum(const struct ttlv_item *it, uint32_t *ret)
{
	if (!it || it->type != TTLV_ENUMERATION)
		return -EBADMSG;
	*ret = be32(it->value);
	return 0;
}

int ttlv_get_bool(const struct ttlv_item *it, bool *ret)
{
	if (!it || it->type != TTLV_BOOLEAN)
		return -EBADMSG;
	*ret = be64(it->value) != 0;
	return 0;
}

int ttlv_get_datetime(const struct ttlv_item *it, int64_t *ret)
{
	if (!it || it->type != TTLV_DATE_TIME)
		return -EBADMSG;
	*ret = (int64_t)be64(it->value);
	return 0;
}

int ttlv_get_interval(const struct ttlv_item *it, uint32_t *ret)
{
	if (!it || it->type != TTLV_INTERVAL)
		return -EBADMSG;
	*ret = be32(it->value);
	return 0;
}

static int get_span(const struct ttlv_item *it, uint8_t type, const uint8_t **ret, size_t *ret_len)
{
	if (!it || it->type != type)
		return -EBADMSG;
	*ret = it->value;
	*ret_len = it->len;
	return 0;
}

int ttlv_get_text(const struct ttlv_item *it, const char **ret, size_t *ret_len)
{
	return get_span(it, TTLV_TEXT_STRING, (const uint8_t **)ret, ret_len);
}

int ttlv_get_bytes(const struct ttlv_item *it, const uint8_t **ret, size_t *ret_len)
{
	return get_span(it, TTLV_BYTE_STRING, ret, ret_len);
}

int ttlv_get_bigint(const struct ttlv_item *it, const uint8_t **ret, size_t *ret_len)
{
	return get_span(it, TTLV_BIG_INTEGER, ret, ret_len);
}

int ttlv_child_int(const struct ttlv_item *parent, uint32_t tag, int32_t *ret)
{
	const struct ttlv_item *c = ttlv_child(parent, tag);

	return c ? ttlv_get_int(c, ret) : -ENOENT;
}

int ttlv_child_enum(const struct ttlv_item *parent, uint32_t tag, uint32_t *ret)
{
	const struct ttlv_item *c = ttlv_child(parent, tag);

	return c ? ttlv_get_enum(c, ret) : -ENOENT;
}

int ttlv_child_text(const struct ttlv_item *parent, uint32_t tag, const char **ret, size_t *ret_len)
{
	const struct ttlv_item *c = ttlv_child(parent, tag);

	return c ? ttlv_get_text(c, ret, ret_len) : -ENOENT;
}

int ttlv_child_bytes(const struct ttlv_item *parent, uint32_t tag, const uint8_t **ret,
		     size_t *ret_len)
{
	const struct ttlv_item *c = ttlv_child(parent, tag);

	return c ? ttlv_get_bytes(c, ret, ret_len) : -ENOENT;
}

/* ---- encoder ----------------------------------------------------------------------------------
 */

void ttlv_writer_done(struct ttlv_writer *w)
{
	if (!w)
		return;
	if (w->buf) {
		explicit_bzero(w->buf, w->cap);
		free(w->buf);
	}
	*w = (struct ttlv_writer){};
}

/* Make room for @n more bytes.  Growing copies into a new buffer and wipes the old one: realloc()
 * could leave plaintext behind in freed memory. */
static int reserve(struct ttlv_writer *w, size_t n)
{
	size_t cap;
	uint8_t *b;

	if (n > TTLV_MAX_MESSAGE - w->len)
		return -E2BIG;
	if (w->len + n <= w->cap)
		return 0;
	cap = w->cap ? w->cap : 256;
	while (cap < w->len + n)
		cap *= 2;
	b = calloc(1, cap);
	if (!b)
		return -ENOMEM;
	if (w->buf) {
		memcpy(b, w->buf, w->len);
		explicit_bzero(w->buf, w->cap);
		free(w->buf);
	}
	w->buf = b;
	w->cap = cap;
	return 0;
}

static int put_item(struct ttlv_writer *w, uint32_t tag, uint8_t type, const void *v, size_t n)
{
	size_t padded = pad8(n);
	uint8_t *p;
	int r;

	if (!tag_valid(tag))
		return -EINVAL;
	if (n > TTLV_MAX_MESSAGE)
		return -E2BIG;
	r = reserve(w, TTLV_HEADER_BYTES + padded);
	if (r < 0)
		return r;
	p = w->buf + w->len;
	p[0] = tag >> 16;
	p[1] = tag >> 8;
	p[2] = tag;
	p[3] = type;
	put_be32(p + 4, (uint32_t)n);
	if (n)
		memcpy(p + TTLV_HEADER_BYTES, v, n);
	memset(p + TTLV_HEADER_BYTES + n, 0, padded - n); /* padding, not a wipe */
	w->len += TTLV_HEADER_BYTES + padded;
	return 0;
}

int ttlv_begin(struct ttlv_writer *w, uint32_t tag)
{
	int r;

	if (w->depth >= TTLV_MAX_DEPTH - 1)
		return -E2BIG;
	w->open[w->depth] = w->len;
	r = put_item(w, tag, TTLV_STRUCTURE, NULL, 0);
	if (r < 0)
		return r;
	w->depth++;
	return 0;
}

int ttlv_end(struct ttlv_writer *w)
{
	size_t start;

	if (w->depth == 0)
		return -EINVAL;
	start = w->open[--w->depth];
	put_be32(w->buf + start + 4, (uint32_t)(w->len - start - TTLV_HEADER_BYTES));
	return 0;
}

int ttlv_put_int(struct ttlv_writer *w, uint32_t tag, int32_t v)
{
	uint8_t b[4];

	put_be32(b, (uint32_t)v);
	return put_item(w, tag, TTLV_INTEGER, b, 4);
}

int ttlv_put_enum(struct ttlv_writer *w, uint32_t tag, uint32_t v)
{
	uint8_t b[4];

	put_be32(b, v);
	return put_item(w, tag, TTLV_ENUMERATION, b, 4);
}

int ttlv_put_interval(struct ttlv_writer *w, uint32_t tag, uint32_t v)
{
	uint8_t b[4];

	put_be32(b, v);
	return put_item(w, tag, TTLV_INTERVAL, b, 4);
}

static int put_64(struct ttlv_writer *w, uint32_t tag, uint8_t type, uint64_t v)
{
	uint8_t b[8];

	put_be32(b, (uint32_t)(v >> 32));
	put_be32(b + 4, (uint32_t)v);
	return put_item(w, tag, type, b, 8);
}

int ttlv_put_long(struct ttlv_writer *w, uint32_t tag, int64_t v)
{
	return put_64(w, tag, TTLV_LONG_INTEGER, (uint64_t)v);
}

int ttlv_put_bool(struct ttlv_writer *w, uint32_t tag, bool v)
{
	return put_64(w, tag, TTLV_BOOLEAN, v ? 1 : 0);
}

int ttlv_put_datetime(struct ttlv_writer *w, uint32_t tag, int64_t v)
{
	return put_64(w, tag, TTLV_DATE_TIME, (uint64_t)v);
}

int ttlv_put_bigint(struct ttlv_writer *w, uint32_t tag, const uint8_t *v, size_t n)
{
	if (n == 0 || n % 8 != 0)
		return -EINVAL;
	return put_item(w, tag, TTLV_BIG_INTEGER, v, n);
}

int ttlv_put_text(struct ttlv_writer *w, uint32_t tag, const char *s, size_t n)
{
	if (!ttlv_text_valid(s, n))
		return -EINVAL;
	return put_item(w, tag, TTLV_TEXT_STRING, s, n);
}

int ttlv_put_bytes(struct ttlv_writer *w, uint32_t tag, const uint8_t *v, size_t n)
{
	return put_item(w, tag, TTLV_BYTE_STRING, v, n);
}

int ttlv_writer_finish(struct ttlv_writer *w, struct secret **ret)
{
	int r;

	if (w->depth != 0 || w->len == 0)
		return -EINVAL;
	r = secret_from(w->buf, w->len, ret);
	ttlv_writer_done(w);
	return r;
}
