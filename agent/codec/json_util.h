/* SPDX-License-Identifier: MIT */
/*
 * JSON helpers (pure) for the KMS codecs.
 *
 * Secrets never enter json-c: json-c copies every string into its own heap and frees it without
 * wiping.  So:
 *   - request bodies that carry key material are written as JSON text straight into a struct secret
 *     by struct json_writer (base64 is encoded in place, no heap copy of the plaintext);
 *   - reply bodies that carry key material are read by json_find_*(): a small validating scanner
 *     (RFC 8259 grammar, depth-limited) that walks the text, finds one string member by its key path
 *     and decodes it straight into locked memory.  Nothing else of the document is copied.
 * Replies without key material (errors, DescribeKey, key metadata) go through json-c via
 * json_parse_buf().
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct secret;
struct json_object;

#define JSON_MAX_DEPTH 64

/* Find the string member at @path (a NULL-terminated list of object keys from the top-level object,
 * e.g. {"data", "plaintext", NULL}) in the JSON text @buf/@len and decode it into a new locked secret.
 * The whole text must be valid JSON.  Return: 0; -ENOENT when the member is absent or null;
 * -EBADMSG when the text is malformed, the member is not a string or appears twice; -ENOMEM. */
int json_find_string_secret(const void *buf, size_t len, const char *const *path, struct secret **ret);
/* Same, then base64-decode (RFC 4648 section 4) into a second locked secret; the intermediate is wiped. */
int json_find_b64_secret(const void *buf, size_t len, const char *const *path, struct secret **ret);
/* Same for a value that is not secret: a heap C string (an embedded NUL is -EBADMSG). */
int json_find_string(const void *buf, size_t len, const char *const *path, char **ret);
/* Non-negative integer / boolean members, found the same way (for documents json-c must not see). */
int json_find_uint(const void *buf, size_t len, const char *const *path, uint64_t *ret);
int json_find_bool(const void *buf, size_t len, const char *const *path, bool *ret);
/* Validate the text only (for fuzzing and for replies read piecewise).  0 or -EBADMSG. */
int json_validate(const void *buf, size_t len);

/* Parse a reply that carries no key material with json-c (strict mode, whole input, depth-limited).
 * Return: 0, -EBADMSG, -ENOMEM. */
int json_parse_buf(const void *buf, size_t len, struct json_object **ret);
/* Member @key of object @o when it is a string, else NULL. */
const char *json_get_str(struct json_object *o, const char *key);
/* Member @key of object @o when it is an object, else NULL. */
struct json_object *json_get_obj(struct json_object *o, const char *key);
/* Integer member: 0, -ENOENT (absent/null) or -EBADMSG (not an integer, negative or > UINT32_MAX). */
int json_get_u32(struct json_object *o, const char *key, uint32_t *ret);
/* Boolean member: 0, -ENOENT or -EBADMSG. */
int json_get_bool(struct json_object *o, const char *key, bool *ret);

/* Writes JSON text into a struct secret.  Errors are sticky and reported by json_writer_finish(). */
struct json_writer {
	struct secret *out;
	int r;
	unsigned depth;
	bool need_comma[JSON_MAX_DEPTH];
};
/* @cap: the most bytes the document may take. */
int json_writer_init(struct json_writer *w, size_t cap);
/* @key: member name inside an object; NULL at the top level or inside an array. */
void json_writer_object_begin(struct json_writer *w, const char *key);
void json_writer_object_end(struct json_writer *w);
void json_writer_array_begin(struct json_writer *w, const char *key);
void json_writer_array_end(struct json_writer *w);
void json_writer_string(struct json_writer *w, const char *key, const char *value);
void json_writer_string_n(struct json_writer *w, const char *key, const void *value, size_t n);
/* Base64 (standard alphabet, padded) of @n bytes, encoded straight into the output. */
void json_writer_base64(struct json_writer *w, const char *key, const void *data, size_t n);
void json_writer_uint(struct json_writer *w, const char *key, uint64_t v);
void json_writer_bool(struct json_writer *w, const char *key, bool v);
/* Return the document (owned by the caller) or the first error; the writer is done either way. */
int json_writer_finish(struct json_writer *w, struct secret **ret);
void json_writer_done(struct json_writer *w);
