/* SPDX-License-Identifier: MIT */
/*
 * TTLV, the binary encoding of KMIP 1.x (OASIS KMIP Specification v1.2, section 9.1): pure, no I/O.
 *
 *   Tag (3 bytes, 0x42xxxx; 0x54xxxx for extensions) | Type (1 byte) | Length (4 bytes, big endian)
 *   | Value (Length bytes) | zero padding up to the next multiple of 8
 *
 * Types and the exact value lengths this decoder accepts:
 *   0x01 Structure     n*8 (the concatenated, padded children; may be 0)
 *   0x02 Integer       4 (signed, 4 bytes of padding)     0x03 Long Integer  8 (signed)
 *   0x04 Big Integer   n*8, n >= 1 (two's complement)     0x05 Enumeration   4 (unsigned, 4
 * padding) 0x06 Boolean       8 (0 or 1 only)                     0x07 Text String   any (UTF-8, no
 * NUL) 0x08 Byte String   any                                 0x09 Date-Time     8 (POSIX seconds)
 *   0x0A Interval      4 (unsigned seconds, 4 padding)
 *
 * The decoder builds a read-only tree whose values point into the caller's buffer (no copies, so a
 * reply that holds key material stays in the caller's struct secret).  The encoder writes into a
 * heap buffer that is wiped whenever it is grown or released, and hands the message out as a struct
 * secret.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct secret;

enum ttlv_type {
	TTLV_STRUCTURE = 0x01,
	TTLV_INTEGER = 0x02,
	TTLV_LONG_INTEGER = 0x03,
	TTLV_BIG_INTEGER = 0x04,
	TTLV_ENUMERATION = 0x05,
	TTLV_BOOLEAN = 0x06,
	TTLV_TEXT_STRING = 0x07,
	TTLV_BYTE_STRING = 0x08,
	TTLV_DATE_TIME = 0x09,
	TTLV_INTERVAL = 0x0A,
};

#define TTLV_HEADER_BYTES 8
#define TTLV_MAX_DEPTH 16	    /* TTLV_MAX_DEPTH or more nested structures are -EBADMSG */
#define TTLV_MAX_MESSAGE (1u << 20) /* a whole message, header included */
#define TTLV_MAX_ITEMS 8192	    /* items (of any type) in one message */

struct ttlv_item {
	uint32_t tag;
	uint8_t type;
	uint32_t len;		       /* value length as on the wire, without padding */
	const uint8_t *value;	       /* into the parsed buffer; children's bytes for structures */
	const struct ttlv_item *child; /* first child (structures only) */
	const struct ttlv_item *next;  /* next sibling */
};

struct ttlv_tree {
	struct ttlv_item *items; /* items[0] is the root */
	size_t n_items;
};

/* ttlv_parse() - decode exactly one item (with its children) spanning all of @buf.
 * Strict: known types only, exact lengths for fixed-size types, zero padding, children filling
 * their structure exactly, Booleans 0/1, Text Strings valid UTF-8 without NUL, fewer than
 * TTLV_MAX_DEPTH nested structures, TTLV_MAX_ITEMS items and TTLV_MAX_MESSAGE bytes.  @ret borrows
 * @buf: keep @buf alive and unchanged while using it.  Return: 0, -EBADMSG (malformed) or -ENOMEM.
 */
int ttlv_parse(const uint8_t *buf, size_t len, struct ttlv_tree *ret);
void ttlv_tree_done(struct ttlv_tree *t);

/* ttlv_message_size() - from the first 8 bytes of a message, the number of bytes of the whole
 * message (header included), so a transport knows how much to read.  Checks the type (must be a
 * Structure),
 * @expect_tag (0: any) and TTLV_MAX_MESSAGE.  Return: 0 or -EBADMSG. */
int ttlv_message_size(const uint8_t hdr[TTLV_HEADER_BYTES], uint32_t expect_tag, size_t *ret);

/* Children of a structure: the first one with @tag (NULL if none or @parent is not a structure),
 * and the next sibling after @it with the same tag. */
const struct ttlv_item *ttlv_child(const struct ttlv_item *parent, uint32_t tag);
const struct ttlv_item *ttlv_next_same(const struct ttlv_item *it);
size_t ttlv_count(const struct ttlv_item *parent, uint32_t tag);

/* Typed reads.  Each returns -EBADMSG when @it has another type, 0 otherwise.  Text and byte
 * strings point into the parsed buffer and are not NUL-terminated. */
int ttlv_get_int(const struct ttlv_item *it, int32_t *ret);
int ttlv_get_long(const struct ttlv_item *it, int64_t *ret);
int ttlv_get_enum(const struct ttlv_item *it, uint32_t *ret);
int ttlv_get_bool(const struct ttlv_item *it, bool *ret);
int ttlv_get_datetime(const struct ttlv_item *it, int64_t *ret);
int ttlv_get_interval(const struct ttlv_item *it, uint32_t *ret);
int ttlv_get_text(const struct ttlv_item *it, const char **ret, size_t *ret_len);
int ttlv_get_bytes(const struct ttlv_item *it, const uint8_t **ret, size_t *ret_len);
int ttlv_get_bigint(const struct ttlv_item *it, const uint8_t **ret, size_t *ret_len);

/* The same, looking up the child @tag of @parent first: -ENOENT when it is missing. */
int ttlv_child_int(const struct ttlv_item *parent, uint32_t tag, int32_t *ret);
int ttlv_child_enum(const struct ttlv_item *parent, uint32_t tag, uint32_t *ret);
int ttlv_child_text(const struct ttlv_item *parent, uint32_t tag, const char **ret,
		    size_t *ret_len);
int ttlv_child_bytes(const struct ttlv_item *parent, uint32_t tag, const uint8_t **ret,
		     size_t *ret_len);

/* Encoder.  Start with `struct ttlv_writer w = {};`, release with ttlv_writer_done() (wipes). */
struct ttlv_writer {
	uint8_t *buf;
	size_t len;
	size_t cap;
	size_t open[TTLV_MAX_DEPTH]; /* offsets of the headers of open structures */
	unsigned depth;
};
void ttlv_writer_done(struct ttlv_writer *w);

/* Each returns 0, -ENOMEM, -E2BIG (message over TTLV_MAX_MESSAGE or structures nested too deep),
 * -EINVAL (bad tag, unbalanced structures, NUL or invalid UTF-8 in a text string). */
int ttlv_begin(struct ttlv_writer *w, uint32_t tag); /* opens a Structure */
int ttlv_end(struct ttlv_writer *w);		     /* closes it, filling in its length */
int ttlv_put_int(struct ttlv_writer *w, uint32_t tag, int32_t v);
int ttlv_put_long(struct ttlv_writer *w, uint32_t tag, int64_t v);
int ttlv_put_bigint(struct ttlv_writer *w, uint32_t tag, const uint8_t *v,
		    size_t n); /* n % 8 == 0 */
int ttlv_put_enum(struct ttlv_writer *w, uint32_t tag, uint32_t v);
int ttlv_put_bool(struct ttlv_writer *w, uint32_t tag, bool v);
int ttlv_put_text(struct ttlv_writer *w, uint32_t tag, const char *s, size_t n);
int ttlv_put_bytes(struct ttlv_writer *w, uint32_t tag, const uint8_t *v, size_t n);
int ttlv_put_datetime(struct ttlv_writer *w, uint32_t tag, int64_t v);
int ttlv_put_interval(struct ttlv_writer *w, uint32_t tag, uint32_t v);

/* ttlv_writer_finish() - all structures closed: move the encoding into a new secret (the writer's
 * buffer is wiped).  Return: 0, -EINVAL (structures still open, nothing written) or -ENOMEM. */
int ttlv_writer_finish(struct ttlv_writer *w, struct secret **ret);

/* True when @s (of @n bytes) is valid UTF-8 (no overlongs, no surrogates) without NUL. */
bool ttlv_text_valid(const char *s, size_t n);
