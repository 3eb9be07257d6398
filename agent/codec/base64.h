/* SPDX-License-Identifier: MIT */
/* Base64 (RFC 4648 section 4) and base64url (section 5).  Pure. */
#pragma once
#include <stddef.h>
#include <stdint.h>

struct secret;

/* Encode @n bytes to a NUL-terminated heap string; @url selects base64url without padding. */
int base64_encode(const void *data, size_t n, int url, char **ret);
/* Decode @len characters of @s (padding optional; base64url accepted when @url); strict: no
 * whitespace, no characters outside the alphabet, no non-zero trailing bits.  -EBADMSG on bad input. */
int base64_decode(const char *s, size_t len, int url, uint8_t **ret, size_t *ret_len);
/* Same, straight into locked memory (for key material arriving base64-encoded). */
int base64_decode_secret(const char *s, size_t len, int url, struct secret **ret);
/* Hex helpers (lower case). */
int hex_encode(const void *data, size_t n, char **ret);
