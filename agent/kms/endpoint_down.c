/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "kms/endpoint_down.h"

uint64_t kms_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int kms_down_check(const struct kms_down *d, struct kms_error *err)
{
	if (d->r >= 0 || kms_mono_ms() >= d->until_ms)
		return 0;
	if (err)
		*err = d->err;
	return d->r;
}

int kms_down_note(struct kms_down *d, int r, const struct kms_error *err)
{
	if ((r != -EAGAIN && r != -ETIMEDOUT) || (err && err->http_status != 0))
		return r;
	d->r = r;
	d->until_ms = kms_mono_ms() + KMS_DOWN_MS;
	if (err)
		d->err = *err;
	else
		memset(&d->err, 0, sizeof(d->err));
	return r;
}
