/* SPDX-License-Identifier: MIT */
/*
 * Shared by the remote (HTTPS) providers.
 *
 * "This endpoint was unreachable a moment ago": remembered per provider context for KMS_DOWN_MS, so
 * that the other volumes of one run (e.g. 50 at boot, queued behind one connection) get the same
 * answer at once instead of each waiting out its own deadline.  Only network failures are
 * remembered (an HTTP answer, even a 5xx, is not).  The caller serialises access with its own lock.
 */
#pragma once
#include <stdint.h>

#include "kms/provider.h"

#define KMS_DOWN_MS 20000

struct kms_down {
	int r; /* 0, or the -EAGAIN/-ETIMEDOUT remembered */
	uint64_t until_ms;
	struct kms_error err;
};

struct http_client;

/* The HTTPS client of one remote provider context: trusts @ca_file (NULL: the system store),
 * per-attempt timeout min(@deadline_ms, 15 s), and ONE connection for the whole run, so that all
 * volumes share one TLS session per endpoint (the unlock threads queue for it; HTTP/1.1 cannot
 * multiplex).  On failure fills @err. */
int kms_http_client_new(const char *ca_file, unsigned deadline_ms, struct http_client **ret,
			struct kms_error *err);

uint64_t kms_mono_ms(void);
/* The remembered failure (copied to @err) while it is fresh, else 0. */
int kms_down_check(const struct kms_down *d, struct kms_error *err);
/* Remember @r if it is a network failure without an HTTP status; returns @r. */
int kms_down_note(struct kms_down *d, int r, const struct kms_error *err);
