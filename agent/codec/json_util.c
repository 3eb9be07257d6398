/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "codec/base64.h"
#include "codec/json_util.h"
#include "util/cleanup.h"
#include "util/secret.h"

/* ---- scanner ---------------------------------------------------------------------------------- */

struct scan {
	const char *p, *end;
	const char *const *path;
	size_t path_len;
	const char *found;  /* the opening quote of the target string */
	unsigned n_found;
	bool found_null;
};

static void skip_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int hex4(const char *p, const char *end, uint32_t *ret)
{
	uint32_t v = 0;

	if (end - p < 4)
		return -EBADMSG;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);
		if (h < 0)
			return -EBADMSG;
		v = v << 4 | (uint32_t)h;
	}
	*ret = v;
	return 0;
}

/*
 * Decode the JSON string whose opening quote is at *pp.  Writes at most @cap bytes to @out (when
 * @out is not NULL); *ret_len gets the full decoded length.  Advances *pp past the closing quote.
 * The decoded form is never longer than the quoted text.
 */
static int string_decode(const char **pp, const char *end, uint8_t *out, size_t cap, size_t *ret_len)
{
	const char *p = *pp + 1;
	size_t n = 0;

#define PUT(b)                                                                                     \
	do {                                                                                       \
		if (out && n < cap)                                                                \
			out[n] = (uint8_t)(b);                                                     \
		n++;                                                                               \
	} while (0)

	for (;;) {
		unsigned char c;

		if (p >= end)
			return -EBADMSG;
		c = (unsigned char)*p++;
		if (c == '"')
			break;
		if (c < 0x20)
			return -EBADMSG;
		if (c != '\\') {
			PUT(c);
			continue;
		}
		if (p >= end)
			return -EBADMSG;
		c = (unsigned char)*p++;
		switch (c) {
		case '"': PUT('"'); break;
		case '\\': PUT('\\'); break;
		case '/': PUT('/'); break;
		case 'b': PUT('\b'); break;
		case 'f': PUT('\f'); break;
		case 'n': PUT('\n'); break;
		case 'r': PUT('\r'); break;
		case 't': PUT('\t'); break;
		case 'u': {
			uint32_t cp, lo;

			if (hex4(p, end, &cp) < 0)
				return -EBADMSG;
			p += 4;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				/* a high surrogate must be followed by an escaped low surrogate */
				if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) < 0 ||
				    lo < 0xdc00 || lo > 0xdfff)
					return -EBADMSG;
				p += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			} else if (cp >= 0xdc00 && cp <= 0xdfff)
				return -EBADMSG;
			if (cp < 0x80)
				PUT(cp);
			else if (cp < 0x800) {
				PUT(0xc0 | cp >> 6);
				PUT(0x80 | (cp & 0x3f));
			} else if (cp < 0x10000) {
				PUT(0xe0 | cp >> 12);
				PUT(0x80 | (cp >> 6 & 0x3f));
				PUT(0x80 | (cp & 0x3f));
			} else {
				PUT(0xf0 | cp >> 18);
				PUT(0x80 | (cp >> 12 & 0x3f));
				PUT(0x80 | (cp >> 6 & 0x3f));
				PUT(0x80 | (cp & 0x3f));
			}
			break;
		}
		default:
			return -EBADMSG;
		}
	}
#undef PUT
	*pp = p;
	*ret_len = n;
	return 0;
}

static int scan_number(struct scan *s)
{
	const char *p = s->p;

	if (p < s->end && *p == '-')
		p++;
	if (p >= s->end)
		return -EBADMSG;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (p < s->end && *p >= '0' && *p <= '9')
			p++;
	else
		return -EBADMSG;
	if (p < s->end && *p == '.') {
		p++;
		if (p >= s->end || *p < '0' || *p > '9')
			return -EBADMSG;
		while (p < s->end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < s->end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < s->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= s->end || *p < '0' || *p > '9')
			return -EBADMSG;
		while (p < s->end && *p >= '0' && *p <= '9')
			p++;
	}
	s->p = p;
	return 0;
}

static int scan_literal(struct scan *s, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return -EBADMSG;
	s->p += n;
	return 0;
}

/* @level: how many path components lead here (SIZE_MAX: off the path). */
static int scan_value(struct scan *s, unsigned depth, size_t level);

static int scan_object(struct scan *s, unsigned depth, size_t level)
{
	s->p++; /* '{' */
	skip_ws(s);
	if (s->p < s->end && *s->p == '}') {
		s->p++;
		return 0;
	}
	for (;;) {
		char key[128];
		size_t klen;
		size_t next = SIZE_MAX;
		int r;

		skip_ws(s);
		if (s->p >= s->end || *s->p != '"')
			return -EBADMSG;
		r = string_decode(&s->p, s->end, (uint8_t *)key, sizeof(key), &klen);
		if (r < 0)
			return r;
		if (level != SIZE_MAX && level < s->path_len && klen < sizeof(key) &&
		    strlen(s->path[level]) == klen && memcmp(key, s->path[level], klen) == 0)
			next = level + 1;
		skip_ws(s);
		if (s->p >= s->end || *s->p != ':')
			return -EBADMSG;
		s->p++;
		skip_ws(s);
		if (next == s->path_len && s->p < s->end) {
			/* the target member (callers check its type) */
			s->found = s->p;
			s->found_null = *s->p == 'n';
			s->n_found++;
		}
		r = scan_value(s, depth + 1, next);
		if (r < 0)
			return r;
		skip_ws(s);
		if (s->p >= s->end)
			return -EBADMSG;
		if (*s->p == ',') {
			s->p++;
			continue;
		}
		if (*s->p == '}') {
			s->p++;
			return 0;
		}
		return -EBADMSG;
	}
}

static int scan_array(struct scan *s, unsigned depth)
{
	s->p++; /* '[' */
	skip_ws(s);
	if (s->p < s->end && *s->p == ']') {
		s->p++;
		return 0;
	}
	for (;;) {
		int r = scan_value(s, depth + 1, SIZE_MAX);
		if (r < 0)
			return r;
		skip_ws(s);
		if (s->p >= s->end)
			return -EBADMSG;
		if (*s->p == ',') {
			s->p++;
			continue;
		}
		if (*s->p == ']') {
			s->p++;
			return 0;
		}
		return -EBADMSG;
	}
}

static int scan_value(struct scan *s, unsigned depth, size_t level)
{
	size_t dummy;

	if (depth > JSON_MAX_DEPTH)
		return -EBADMSG;
	skip_ws(s);
	if (s->p >= s->end)
		return -EBADMSG;
	switch (*s->p) {
	case '{':
		return scan_object(s, depth, level);
	case '[':
		return scan_array(s, depth);
	case '"':
		return string_decode(&s->p, s->end, NULL, 0, &dummy);
	case 't':
		return scan_literal(s, "true");
	case 'f':
		return scan_literal(s, "false");
	case 'n':
		return scan_literal(s, "null");
	default:
		return scan_number(s);
	}
}

static int scan_run(struct scan *s, const void *buf, size_t len, const char *const *path)
{
	int r;

	memset(s, 0, sizeof(*s));
	s->p = buf;
	s->end = s->p + len;
	s->path = path;
	if (path)
		while (path[s->path_len])
			s->path_len++;
	skip_ws(s);
	/* the top level must be an object when looking for a member */
	if (path && (s->p >= s->end || *s->p != '{'))
		return -EBADMSG;
	r = scan_value(s, 0, path ? 0 : SIZE_MAX);
	if (r < 0)
		return r;
	skip_ws(s);
	if (s->p != s->end)
		return -EBADMSG;
	return 0;
}

int json_validate(const void *buf, size_t len)
{
	struct scan s;

	return scan_run(&s, buf, len, NULL);
}

static int find(const void *buf, size_t len, const char *const *path, struct scan *s)
{
	int r;

	if (!buf || !path || !path[0])
		return -EINVAL;
	r = scan_run(s, buf, len, path);
	if (r < 0)
		return r;
	if (s->n_found > 1)
		return -EBADMSG; /* ambiguous: json-c keeps the last, others the first */
	if (s->n_found == 0 || s->found_null)
		return -ENOENT;
	return 0;
}

static int find_string(const void *buf, size_t len, const char *const *path, struct scan *s)
{
	int r = find(buf, len, path, s);

	if (r < 0)
		return r;
	return *s->found == '"' ? 0 : -EBADMSG;
}

int json_find_uint(const void *buf, size_t len, const char *const *path, uint64_t *ret)
{
	struct scan s;
	uint64_t v = 0;
	const char *p;
	int r;

	r = find(buf, len, path, &s);
	if (r < 0)
		return r;
	/* a plain non-negative integer: no sign, fraction or exponent */
	for (p = s.found; p < s.end && *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -EBADMSG;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (p == s.found || (p < s.end && (*p == '.' || *p == 'e' || *p == 'E')))
		return -EBADMSG;
	*ret = v;
	return 0;
}

int json_find_bool(const void *buf, size_t len, const char *const *path, bool *ret)
{
	struct scan s;
	int r;

	r = find(buf, len, path, &s);
	if (r < 0)
		return r;
	if (*s.found == 't')
		*ret = true;
	else if (*s.found == 'f')
		*ret = false;
	else
		return -EBADMSG;
	return 0;
}

int json_find_string_secret(const void *buf, size_t len, const char *const *path, struct secret **ret)
{
	_cleanup_secret_ struct secret *out = NULL;
	struct scan s;
	const char *p;
	size_t n;
	int r;

	r = find_string(buf, len, path, &s);
	if (r < 0)
		return r;
	p = s.found;
	r = string_decode(&p, s.end, NULL, 0, &n);
	if (r < 0)
		return r;
	r = secret_new(n, &out);
	if (r < 0)
		return r;
	p = s.found;
	r = string_decode(&p, s.end, out->buf, n, &n);
	if (r < 0)
		return r;
	out->len = n;
	*ret = TAKE_PTR(out);
	return 0;
}

int json_find_b64_secret(const void *buf, size_t len, const char *const *path, struct secret **ret)
{
	_cleanup_secret_ struct secret *text = NULL;
	int r;

	r = json_find_string_secret(buf, len, path, &text);
	if (r < 0)
		return r;
	return base64_decode_secret((const char *)text->buf, text->len, 0, ret);
}

int json_find_string(const void *buf, size_t len, const char *const *path, char **ret)
{
	struct scan s;
	const char *p;
	size_t n;
	char *out;
	int r;

	r = find_string(buf, len, path, &s);
	if (r < 0)
		return r;
	p = s.found;
	r = string_decode(&p, s.end, NULL, 0, &n);
	if (r < 0)
		return r;
	out = malloc(n + 1);
	if (!out)
		return -ENOMEM;
	p = s.found;
	(void)string_decode(&p, s.end, (uint8_t *)out, n, &n);
	out[n] = 0;
	if (strlen(out) != n) {
		free(out);
		return -EBADMSG;
	}
	*ret = out;
	return 0;
}

/* ---- json-c for replies without key material --------------------------------------------------- */

int json_parse_buf(const void *buf, size_t len, struct json_object **ret)
{
	struct json_tokener *tok;
	struct json_object *o;
	enum json_tokener_error err;
	size_t used;

	if (!buf || len == 0 || len > INT32_MAX)
		return -EBADMSG;
	/* json-c accepts things the RFC does not (and reads past a NUL); check the grammar first */
	if (json_validate(buf, len) < 0)
		return -EBADMSG;
	tok = json_tokener_new_ex(JSON_MAX_DEPTH + 1);
	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, buf, (int)len);
	err = json_tokener_get_error(tok);
	used = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!o || err != json_tokener_success) {
		json_object_put(o);
		return -EBADMSG;
	}
	/* only whitespace may follow */
	for (const char *p = (const char *)buf + used; p < (const char *)buf + len; p++)
		if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
			json_object_put(o);
			return -EBADMSG;
		}
	*ret = o;
	return 0;
}

const char *json_get_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

struct json_object *json_get_obj(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_object))
		return NULL;
	return v;
}

int json_get_u32(struct json_object *o, const char *key, uint32_t *ret)
{
	struct json_object *v;
	int64_t i;

	if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
	    json_object_is_type(v, json_type_null))
		return -ENOENT;
	if (!json_object_is_type(v, json_type_int))
		return -EBADMSG;
	errno = 0;
	i = json_object_get_int64(v);
	if (i < 0 || i > UINT32_MAX || errno != 0)
		return -EBADMSG;
	*ret = (uint32_t)i;
	return 0;
}

int json_get_bool(struct json_object *o, const char *key, bool *ret)
{
	struct json_object *v;

	if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
	    json_object_is_type(v, json_type_null))
		return -ENOENT;
	if (!json_object_is_type(v, json_type_boolean))
		return -EBADMSG;
	*ret = json_object_get_boolean(v);
	return 0;
}

/* ---- writer ----------------------------------------------------------------------------------- */

int json_writer_init(struct json_writer *w, size_t cap)
{
	memset(w, 0, sizeof(*w));
	return secret_new(cap, &w->out);
}

static void put(struct json_writer *w, const void *data, size_t n)
{
	if (w->r < 0)
		return;
	if (!w->out) {
		w->r = -EINVAL;
		return;
	}
	w->r = secret_append(w->out, data, n);
}

static void put_escaped(struct json_writer *w, const uint8_t *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	put(w, "\"", 1);
	for (size_t i = 0; i < n && w->r >= 0; i++) {
		uint8_t c = s[i];
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			put(w, e, 2);
		} else if (c < 0x20 || c == 0x7f) {
			char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			put(w, e, 6);
		} else
			put(w, &c, 1);
	}
	put(w, "\"", 1);
}

/* comma and key before a value */
static void member(struct json_writer *w, const char *key)
{
	if (w->r < 0)
		return;
	if (w->need_comma[w->depth])
		put(w, ",", 1);
	w->need_comma[w->depth] = true;
	if (key) {
		put_escaped(w, (const uint8_t *)key, strlen(key));
		put(w, ":", 1);
	}
}

static void open_(struct json_writer *w, const char *key, const char *c)
{
	member(w, key);
	put(w, c, 1);
	if (w->r < 0)
		return;
	if (w->depth + 1 >= JSON_MAX_DEPTH) {
		w->r = -E2BIG;
		return;
	}
	w->depth++;
	w->need_comma[w->depth] = false;
}

static void close_(struct json_writer *w, const char *c)
{
	if (w->r < 0)
		return;
	if (w->depth == 0) {
		w->r = -EINVAL;
		return;
	}
	w->depth--;
	put(w, c, 1);
}

void json_writer_object_begin(struct json_writer *w, const char *key)
{
	open_(w, key, "{");
}

void json_writer_object_end(struct json_writer *w)
{
	close_(w, "}");
}

void json_writer_array_begin(struct json_writer *w, const char *key)
{
	open_(w, key, "[");
}

void json_writer_array_end(struct json_writer *w)
{
	close_(w, "]");
}

void json_writer_string_n(struct json_writer *w, const char *key, const void *value, size_t n)
{
	member(w, key);
	put_escaped(w, value, n);
}

void json_writer_string(struct json_writer *w, const char *key, const char *value)
{
	json_writer_string_n(w, key, value, strlen(value));
}

void json_writer_base64(struct json_writer *w, const char *key, const void *data, size_t n)
{
	static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const uint8_t *p = data;
	char q[4];
	size_t i;

	member(w, key);
	put(w, "\"", 1);
	for (i = 0; i + 2 < n && w->r >= 0; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		q[0] = alpha[v >> 18 & 63];
		q[1] = alpha[v >> 12 & 63];
		q[2] = alpha[v >> 6 & 63];
		q[3] = alpha[v & 63];
		put(w, q, 4);
		explicit_bzero(&v, sizeof(v));
	}
	if (i < n) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
		q[0] = alpha[v >> 18 & 63];
		q[1] = alpha[v >> 12 & 63];
		q[2] = i + 1 < n ? alpha[v >> 6 & 63] : '=';
		q[3] = '=';
		put(w, q, 4);
		explicit_bzero(&v, sizeof(v));
	}
	explicit_bzero(q, sizeof(q));
	put(w, "\"", 1);
}

void json_writer_uint(struct json_writer *w, const char *key, uint64_t v)
{
	char b[24];
	int k = snprintf(b, sizeof(b), "%" PRIu64, v);

	member(w, key);
	put(w, b, (size_t)k);
}

void json_writer_bool(struct json_writer *w, const char *key, bool v)
{
	member(w, key);
	put(w, v ? "true" : "false", v ? 4 : 5);
}

int json_writer_finish(struct json_writer *w, struct secret **ret)
{
	int r = w->r;

	if (r >= 0 && w->depth != 0)
		r = -EINVAL;
	if (r < 0) {
		json_writer_done(w);
		return r;
	}
	*ret = TAKE_PTR(w->out);
	json_writer_done(w);
	return 0;
}

void json_writer_done(struct json_writer *w)
{
	w->out = secret_free(w->out);
	w->depth = 0;
}
