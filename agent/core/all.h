/* SPDX-License-Identifier: MIT */
/*
 * --all: lock, revoke and restore of many volumes at once (issue 13).  Each runs the one-volume flow
 * of core/flows.h on every volume, concurrently and bounded; one volume failing does not stop the
 * others, and each volume's outcome (v->r, v->code, v->result, v->msg, v->ms, v->wipe, its mapping)
 * is exactly what the one-volume flow leaves.  The caller holds the state lock, prints and audits
 * (restore audits inside core_restore()).
 *
 * lock and revoke run in worker processes: libcryptsetup and libdevmapper keep process-wide state,
 * so the volume layer serialises every call inside one process (volume/dm.h), while the kernel
 * work (DM_DEVICE_SUSPEND, the key wipe, the header writes, udev synchronisation on remove) can
 * overlap across processes.  Restore runs in threads: the KMS round trips overlap on the run's
 * shared KMS connections, and its secrets are locked memory that a child does not inherit
 * (MADV_DONTFORK); each thread hands the resume (keyslot open, key set, resume, table check) with
 * its secret through a pipe to a worker process (volume/pool.c, one per CPU), as unlock does.
 */
#pragma once
#include <stddef.h>

#include "core/core.h"
#include "core/vol.h"

/* At most this many volumes are worked on at once. */
#define CORE_ALL_PARALLEL 8

void core_lock_all(const struct core_ctx *c, struct vol **vols, size_t n);
void core_revoke_all(const struct core_ctx *c, struct vol **vols, size_t n, const char *reason);
/* Every KMS configuration the volumes need is opened in @ks before the threads start. */
void core_restore_all(const struct core_ctx *c, struct kms_set *ks, struct vol **vols, size_t n);
