/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "codec/shamir.h"

/* Carry-less multiply modulo 0x11b, eight rounds whatever the operands (FIPS-197 section 4.2). */
uint8_t gf256_mul(uint8_t a, uint8_t b)
{
	uint8_t p = 0;

	for (int i = 0; i < 8; i++) {
		p ^= (uint8_t)(-(b & 1) & a);
		a = (uint8_t)((a << 1) ^ (-(a >> 7) & 0x1b));
		b >>= 1;
	}
	return p;
}

/* a^254 = a^-1 in GF(2^8)* (and 0 for 0), by a fixed chain of squarings and multiplications. */
uint8_t gf256_inv(uint8_t a)
{
	uint8_t r = a; /* a^1 */

	/* 254 = 0b11111110: square and multiply for the bits after the leading one, then square */
	for (int i = 0; i < 6; i++)
		r = gf256_mul(gf256_mul(r, r), a);
	return gf256_mul(r, r);
}

int shamir_split(const uint8_t *secret, size_t len, unsigned k, unsigned n, const uint8_t *rnd,
		 uint8_t *ret_shares)
{
	if (k < 1 || n < k || n > SHAMIR_MAX_SHARES || (!secret && len) || (!rnd && k > 1 && len) ||
	    (!ret_shares && len))
		return -EINVAL;
	for (unsigned j = 0; j < n; j++) {
		uint8_t x = (uint8_t)(j + 1);

		for (size_t b = 0; b < len; b++) {
			/* Horner: coefficients a_{k-1} .. a_1 from rnd, a_0 the secret byte */
			uint8_t y = 0;

			for (unsigned c = k - 1; c >= 1; c--)
				y = gf256_mul(y, x) ^ rnd[(c - 1) * len + b];
			ret_shares[j * len + b] = gf256_mul(y, x) ^ secret[b];
		}
	}
	return 0;
}

int shamir_combine(const uint8_t *xs, const uint8_t *const *ys, unsigned k, size_t len, uint8_t *ret)
{
	uint8_t lambda[SHAMIR_MAX_SHARES];

	if (k < 1 || k > SHAMIR_MAX_SHARES)
		return -EINVAL;
	for (unsigned i = 0; i < k; i++) {
		if (xs[i] == 0)
			return -EINVAL;
		for (unsigned j = 0; j < i; j++)
			if (xs[i] == xs[j])
				return -EINVAL;
	}
	/* Lagrange basis at 0: lambda_i = prod_{j != i} x_j / (x_j - x_i); minus is xor here */
	for (unsigned i = 0; i < k; i++) {
		uint8_t num = 1, den = 1;

		for (unsigned j = 0; j < k; j++) {
			if (j == i)
				continue;
			num = gf256_mul(num, xs[j]);
			den = gf256_mul(den, xs[j] ^ xs[i]);
		}
		lambda[i] = gf256_mul(num, gf256_inv(den));
	}
	for (size_t b = 0; b < len; b++) {
		uint8_t s = 0;

		for (unsigned i = 0; i < k; i++)
			s ^= gf256_mul(lambda[i], ys[i][b]);
		ret[b] = s;
	}
	return 0;
}
