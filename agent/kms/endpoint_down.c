/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "kms/endpoint_down.h"
#include "transport/http.h"
#include "util/cleanup.h"

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

int kms_http_client_new(const char *ca_file, unsigned deadline_ms, struct http_client **ret,
			struct kms_error *err)
{
	struct http_client_options o = {
		.ca_file = ca_file,
		.request_timeout_ms = MIN(deadline_ms, 15000u),
		.max_connections = 1,
	};
	int r;

	r = http_client_new(&o, ret);
	if (r < 0)
		return kms_error_set(err, r, "", "cannot set up the HTTPS client%s%s",
				     ca_file ? " with CaFile=" : "", ca_file ? ca_file : "");
	return 0;
}
