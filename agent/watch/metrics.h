/* SPDX-License-Identifier: MIT */
/*
 * The watcher's metrics file (`kmscrypt watch --metrics-file PATH`) for node_exporter's textfile
 * collector, which reads every "*.prom" file in its directory at each scrape.
 */
#pragma once

struct watch_metrics;

/* Mode of the metrics file: node_exporter (its own user) reads it; it holds no secret, only
 * volume UUIDs, mapping and KMS configuration names, states and counters. */
#define WATCH_METRICS_MODE 0644

/** watch_metrics_write() - replace @path with the text of @m (agent/codec/prom.h), atomically.
 *  A scrape sees the old file or the new one, never a part: the text goes to a temporary file
 *  "@path.tmp.XXXXXX" in the same directory (a name the collector ignores, as it does not end in
 *  ".prom"), which is renamed over @path (write_file_atomic()).  The mode is WATCH_METRICS_MODE
 *  whatever the umask.
 *  Return: 0; -EINVAL (bad snapshot, see watch_metrics_format()); -ENOMEM; -errno of the write
 *  (-ENOENT: the directory does not exist). */
int watch_metrics_write(const char *path, const struct watch_metrics *m);
