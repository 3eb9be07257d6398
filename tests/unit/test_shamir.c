/* SPDX-License-Identifier: MIT */
/*
 * Shamir's secret sharing over GF(2^8) (agent/codec/shamir.c), the split and combination of threshold
 * bindings (issue 11):
 *   - the field arithmetic against FIPS-197's worked examples ({57}.{83} = {c1}, {57}.{13} = {fe},
 *     {53}^-1 = {ca}) and against a slow reference (repeated doubling) for every pair of bytes;
 *   - a known answer: shares of a fixed secret and fixed coefficients, computed independently (a
 *     Python evaluation of the polynomial term by term, not Horner's rule);
 *   - every k-subset of n shares reconstructs the same secret, for every 1 <= k <= n <= 6, in any order;
 *   - fewer than k shares do not; mixed splits do not; bad arguments are refused.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "codec/shamir.h"

static uint8_t slow_mul(uint8_t a, uint8_t b)
{
	unsigned p = 0, aa = a;

	for (; b; b >>= 1) {
		if (b & 1)
			p ^= aa;
		aa <<= 1;
		if (aa & 0x100)
			aa ^= 0x11b;
	}
	return (uint8_t)p;
}

static void test_field(void **state)
{
	(void)state;
	assert_int_equal(gf256_mul(0x57, 0x83), 0xc1);
	assert_int_equal(gf256_mul(0x57, 0x13), 0xfe);
	assert_int_equal(gf256_inv(0x53), 0xca);
	assert_int_equal(gf256_inv(0), 0);
	for (unsigned a = 0; a < 256; a++) {
		for (unsigned b = 0; b < 256; b++)
			assert_int_equal(gf256_mul((uint8_t)a, (uint8_t)b), slow_mul((uint8_t)a, (uint8_t)b));
		if (a)
			assert_int_equal(gf256_mul((uint8_t)a, gf256_inv((uint8_t)a)), 1);
	}
}

static const char *const kat_shares[5] = {
    "40a1e2a364c5c647a8e9aa4bcccd6eaf", "71471ae2a0d63b68443ff9a1d52ea35d",
    "21f7ea52d006eb38f4cf49f105fed3ed", "fb09e3f42c7322b83c0c911c466d107f",
    "abb913445ca3f2e88cfc214c96bd60cf",
};

static void hex(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
}

/* secret 10 11 .. 1f, k = 3, n = 5, coefficient bytes rnd[i] = 37 i + 11 (mod 256) */
static void test_known_answer(void **state)
{
	uint8_t secret[16], rnd[32], shares[5 * 16], back[16];
	char h[33];

	(void)state;
	for (int i = 0; i < 16; i++)
		secret[i] = (uint8_t)(0x10 + i);
	for (int i = 0; i < 32; i++)
		rnd[i] = (uint8_t)(i * 37 + 11);
	assert_int_equal(shamir_split(secret, 16, 3, 5, rnd, shares), 0);
	for (int j = 0; j < 5; j++) {
		hex(shares + j * 16, 16, h);
		assert_string_equal(h, kat_shares[j]);
	}
	{
		const uint8_t xs[3] = {5, 2, 4};
		const uint8_t *ys[3] = {shares + 4 * 16, shares + 1 * 16, shares + 3 * 16};

		assert_int_equal(shamir_combine(xs, ys, 3, 16, back), 0);
		assert_memory_equal(back, secret, 16);
	}
}

static void test_every_subset(void **state)
{
	uint8_t secret[32], rnd[5 * 32], shares[6 * 32], back[32];

	(void)state;
	for (int i = 0; i < 32; i++)
		secret[i] = (uint8_t)(0xa5 ^ (i * 29));
	for (int i = 0; i < 5 * 32; i++)
		rnd[i] = (uint8_t)(i * 101 + 7);
	for (unsigned n = 1; n <= 6; n++)
		for (unsigned k = 1; k <= n; k++) {
			assert_int_equal(shamir_split(secret, 32, k, n, rnd, shares), 0);
			for (unsigned mask = 1; mask < (1u << n); mask++) {
				uint8_t xs[6];
				const uint8_t *ys[6];
				unsigned m = 0;

				/* the chosen shares, highest x first: order must not matter */
				for (int j = (int)n - 1; j >= 0; j--)
					if (mask & (1u << j)) {
						xs[m] = (uint8_t)(j + 1);
						ys[m++] = shares + j * 32;
					}
				assert_int_equal(shamir_combine(xs, ys, m, 32, back), 0);
				if (m >= k)
					assert_memory_equal(back, secret, 32);
				else
					assert_memory_not_equal(back, secret, 32);
			}
		}
}

static void test_mixed_splits_and_bad_input(void **state)
{
	uint8_t secret[8] = {1, 2, 3, 4, 5, 6, 7, 8}, r1[8], r2[8], s1[3 * 8], s2[3 * 8], back[8];
	const uint8_t xs[2] = {1, 2}, dup[2] = {1, 1}, zero[2] = {0, 1};
	const uint8_t *ys[2];

	(void)state;
	memset(r1, 0x11, sizeof(r1));
	memset(r2, 0x22, sizeof(r2));
	assert_int_equal(shamir_split(secret, 8, 2, 3, r1, s1), 0);
	assert_int_equal(shamir_split(secret, 8, 2, 3, r2, s2), 0);
	assert_memory_not_equal(s1, s2, 8);
	ys[0] = s1;
	ys[1] = s2 + 8;
	assert_int_equal(shamir_combine(xs, ys, 2, 8, back), 0);
	assert_memory_not_equal(back, secret, 8);
	assert_int_equal(shamir_combine(dup, ys, 2, 8, back), -EINVAL);
	assert_int_equal(shamir_combine(zero, ys, 2, 8, back), -EINVAL);
	assert_int_equal(shamir_combine(xs, ys, 0, 8, back), -EINVAL);
	assert_int_equal(shamir_split(secret, 8, 0, 3, r1, s1), -EINVAL);
	assert_int_equal(shamir_split(secret, 8, 4, 3, r1, s1), -EINVAL);
	assert_int_equal(shamir_split(secret, 8, 2, 256, r1, s1), -EINVAL);
	/* k = 1: every share is the secret itself (any-of needs no split, but 1-of-n must still work) */
	assert_int_equal(shamir_split(secret, 8, 1, 3, NULL, s1), 0);
	assert_memory_equal(s1 + 16, secret, 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_field),
	    cmocka_unit_test(test_known_answer),
	    cmocka_unit_test(test_every_subset),
	    cmocka_unit_test(test_mixed_splits_and_bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
