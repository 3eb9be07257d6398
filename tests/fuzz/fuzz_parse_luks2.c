/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: the LUKS2 header parser of volume_header_peek() (volume/peek.c).  Byte 0 picks which
 * field of the secondary copy to disturb (none, seqid, UUID, one JSON byte) and whether to cut the
 * buffer short; the rest is the JSON area of both copies.  The raw input is parsed as a header too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "volume/volume.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HDR 16384

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct volume_header h;
	unsigned char *b;
	size_t n, len = 2 * HDR;
	uint8_t flags;

	(void)volume_header_peek_parse(data, size, &h);
	volume_header_done(&h);
	if (size < 1)
		return 0;
	flags = data[0];
	data++, size--;
	n = size < HDR - 4096 ? size : HDR - 4096;
	b = calloc(2, HDR);
	if (!b)
		return 0;
	for (int c = 0; c < 2; c++) {
		unsigned char *p = b + (size_t)c * HDR;
		memcpy(p, c ? "SKUL\xba\xbe" : "LUKS\xba\xbe", 6);
		p[7] = 2;
		p[8 + 6] = HDR >> 8;
		p[16 + 7] = 1;
		memcpy(p + 24, "label", 5);
		memcpy(p + 168, "6a1d2c3b-4e5f-4071-8293-a4b5c6d7e8f9", 36);
		if (c)
			p[256 + 6] = HDR >> 8;
		memcpy(p + 4096, data, n);
	}
	switch (flags & 3) {
	case 1: b[HDR + 16 + 7] = 2; break;
	case 2: b[HDR + 168] = '7'; break;
	case 3: b[HDR + 4096 + (flags >> 2) % (n + 1)] ^= 1; break;
	}
	if (flags & 0x80)
		len -= 1 + (flags & 0x7f);
	(void)volume_header_peek_parse(b, len, &h);
	volume_header_done(&h);
	free(b);
	return 0;
}
