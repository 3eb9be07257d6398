/* SPDX-License-Identifier: MIT */
/*
 * Shamir's secret sharing over GF(2^8) (pure): the k-of-n split of a keyslot secret for threshold
 * bindings (issue 11).  The field is GF(2)[x]/(x^8 + x^4 + x^3 + x + 1), AES's (0x11b), so the
 * arithmetic can be checked against FIPS-197's worked examples.  Each byte of the secret is the
 * constant term of its own random polynomial of degree k-1; share i is the polynomial evaluated at
 * x = i (1..255).  Any k shares give the secret back by Lagrange interpolation at 0; fewer than k
 * shares give every secret with the same probability.
 *
 * Side channels: multiplication and inversion use no table and no branch on data, so the time taken
 * does not depend on the secret, the shares or the random coefficients.  The x coordinates are public.
 *
 * Randomness comes in from the caller (the codec library does no I/O): @rnd holds (k-1) * len bytes
 * from a CSPRNG; the caller wipes it.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define SHAMIR_MAX_SHARES 255

/* GF(2^8) arithmetic, exposed for tests. */
uint8_t gf256_mul(uint8_t a, uint8_t b);
uint8_t gf256_inv(uint8_t a); /* gf256_inv(0) = 0 */

/* Split @len bytes of @secret into @n shares with threshold @k (1 <= k <= n <= 255): share j (0-based)
 * has x = j + 1 and its @len bytes at @ret_shares + j * len.  Returns 0 or -EINVAL. */
int shamir_split(const uint8_t *secret, size_t len, unsigned k, unsigned n, const uint8_t *rnd,
		 uint8_t *ret_shares);

/* Combine @k shares: @xs[i] (distinct, non-zero) and @ys[i] (@len bytes each) into @ret (@len bytes).
 * Returns 0, or -EINVAL for a zero or repeated x or k == 0.  Any k shares of one split give the same
 * secret; shares of different splits (or fewer than the threshold) give garbage, which the caller
 * detects (the LUKS2 keyslot will not open with it). */
int shamir_combine(const uint8_t *xs, const uint8_t *const *ys, unsigned k, size_t len, uint8_t *ret);
