/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "util/secret.h"

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int base64_encode(const void *data, size_t n, int url, char **ret)
{
	const uint8_t *p = data;
	const char *alpha = url ? b64_url : b64_std;
	char *out, *o;
	size_t i;

	out = malloc((n + 2) / 3 * 4 + 1);
	if (!out)
		return -ENOMEM;
	o = out;
	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		*o++ = alpha[v >> 18 & 63];
		*o++ = alpha[v >> 12 & 63];
		*o++ = alpha[v >> 6 & 63];
		*o++ = alpha[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
		*o++ = alpha[v >> 18 & 63];
		*o++ = alpha[v >> 12 & 63];
		if (i + 1 < n)
			*o++ = alpha[v >> 6 & 63];
		else if (!url)
			*o++ = '=';
		if (!url)
			*o++ = '=';
	}
	*o = 0;
	*ret = out;
	return 0;
}

static int b64_val(char c, int url)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == (url ? '-' : '+'))
		return 62;
	if (c == (url ? '_' : '/'))
		return 63;
	return -1;
}

/* Decodes into @out (room for len/4*3+3 bytes); returns the length or -EBADMSG. */
static long b64_decode_into(const char *s, size_t len, int url, uint8_t *out)
{
	size_t pad = 0, n, o = 0;
	uint32_t acc = 0;
	int bits = 0;

	while (len > 0 && s[len - 1] == '=' && pad < 2) {
		len--;
		pad++;
	}
	if (pad && (len + pad) % 4 != 0)
		return -EBADMSG;
	if (len % 4 == 1)
		return -EBADMSG;
	for (n = 0; n < len; n++) {
		int v = b64_val(s[n], url);
		if (v < 0)
			return -EBADMSG;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	/* leftover bits must be zero (canonical encoding) */
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
		return -EBADMSG;
	return (long)o;
}

int base64_decode(const char *s, size_t len, int url, uint8_t **ret, size_t *ret_len)
{
	uint8_t *out = malloc(len / 4 * 3 + 3);
	long k;

	if (!out)
		return -ENOMEM;
	k = b64_decode_into(s, len, url, out);
	if (k < 0) {
		free(out);
		return (int)k;
	}
	*ret = out;
	*ret_len = (size_t)k;
	return 0;
}

int base64_decode_secret(const char *s, size_t len, int url, struct secret **ret)
{
	struct secret *sec;
	long k;
	int r;

	r = secret_new(len / 4 * 3 + 3, &sec);
	if (r < 0)
		return r;
	k = b64_decode_into(s, len, url, sec->buf);
	if (k < 0) {
		secret_free(sec);
		return (int)k;
	}
	sec->len = (size_t)k;
	*ret = sec;
	return 0;
}

int hex_encode(const void *data, size_t n, char **ret)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *p = data;
	char *out = malloc(n * 2 + 1);

	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = 0;
	*ret = out;
	return 0;
}
