/* SPDX-License-Identifier: MIT */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/escape.h"

/* Length of the well-formed UTF-8 sequence at @p (at most @left bytes) that is not a C1 control,
 * else 0.  Well-formed as in RFC 3629 section 4: no overlong forms, no surrogates, <= U+10FFFF. */
static size_t utf8_ok(const uint8_t *p, size_t left)
{
	uint8_t lo = 0x80, hi = 0xbf;
	size_t n;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4;
	else
		return 0; /* 0x80-0xc1 (continuation or overlong lead), 0xf5-0xff */
	if (left < n)
		return 0;
	if (p[0] == 0xc2)
		lo = 0xa0; /* U+0080-U+009F are the C1 controls (0x9b is CSI) */
	else if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f; /* surrogates */
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/* The next unit at @p: either @ret_len bytes to copy as they are (return NULL), or one byte to
 * write as the returned escape sequence (in @tmp). */
static const char *next_unit(const uint8_t *p, size_t left, char tmp[5], size_t *ret_len)
{
	static const char hex[] = "0123456789abcdef";
	size_t n;

	*ret_len = 1;
	if ((p[0] >= 0x20 && p[0] < 0x7f) || p[0] == '\t')
		return NULL;
	if (p[0] >= 0x80 && (n = utf8_ok(p, left)) > 0) {
		*ret_len = n;
		return NULL;
	}
	switch (p[0]) {
	case '\n':
		return "\\n";
	case '\r':
		return "\\r";
	default:
		tmp[0] = '\\';
		tmp[1] = 'x';
		tmp[2] = hex[p[0] >> 4];
		tmp[3] = hex[p[0] & 15];
		tmp[4] = 0;
		return tmp;
	}
}

/* Escaped length of @len bytes at @p, without the NUL. */
static size_t escaped_len(const uint8_t *p, size_t len)
{
	size_t out = 0;

	for (size_t i = 0; i < len;) {
		char tmp[5];
		size_t n;
		const char *esc = next_unit(p + i, len - i, tmp, &n);

		out += esc ? strlen(esc) : n;
		i += n;
	}
	return out;
}

char *cescape_mem(const void *s, size_t len, char *buf, size_t n)
{
	const uint8_t *p = s;
	size_t limit, o = 0;

	if (n == 0)
		return buf;
	/* Everything fits, or we stop where "..." still fits behind (nothing when even that
	 * does not fit). */
	if (escaped_len(p, len) < n)
		limit = n - 1;
	else if (n >= 4)
		limit = n - 4;
	else {
		buf[0] = 0;
		return buf;
	}
	for (size_t i = 0; i < len;) {
		char tmp[5];
		size_t k;
		const char *esc = next_unit(p + i, len - i, tmp, &k);
		size_t w = esc ? strlen(esc) : k;

		if (o + w > limit) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(buf + o, esc ? esc : (const char *)p + i, w);
		o += w;
		i += k;
	}
	buf[o] = 0;
	return buf;
}

char *cescape_buf(const char *s, char *buf, size_t n)
{
	return cescape_mem(s ? s : "", s ? strlen(s) : 0, buf, n);
}

char *cescape(const char *s)
{
	size_t len = strlen(s), n = escaped_len((const uint8_t *)s, len) + 1;
	char *buf = malloc(n);

	return buf ? cescape_mem(s, len, buf, n) : NULL;
}

bool cescape_needed(const char *s)
{
	size_t len = strlen(s);

	return escaped_len((const uint8_t *)s, len) != len;
}
