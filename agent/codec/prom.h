/* SPDX-License-Identifier: MIT */
/*
 * The watcher's metrics in the Prometheus text exposition format (version 0.0.4), for
 * node_exporter's textfile collector (issue 10; the names are fixed by notes/watch-contract.md).
 * Pure: a snapshot in, text out; the caller writes the file (agent/watch/metrics.h).
 *
 * Families, in this order, each with one "# HELP" and one "# TYPE" line before its samples; a
 * family without samples (no volume, no KMS configuration) is left out whole:
 *   kmscrypt_watch_up                             gauge    1 while the watcher runs, else 0
 *   kmscrypt_watch_rounds_total                   counter  probe rounds done
 *   kmscrypt_watch_round_duration_seconds         gauge    the last round
 *   kmscrypt_watch_last_round_timestamp_seconds   gauge    unix time; 0: no round yet
 *   kmscrypt_volume_state                         gauge    {uuid,mapping,kms,state}
 *   kmscrypt_volume_probe_verdict                 gauge    {uuid,mapping,kms,verdict}
 *   kmscrypt_volume_last_probe_timestamp_seconds  gauge    {uuid,mapping,kms}; 0: never probed
 *   kmscrypt_volume_consecutive_denials           gauge    {uuid,mapping,kms}
 *   kmscrypt_kms_probe_duration_seconds           gauge    {kms,provider}
 *   kmscrypt_kms_probes_total                     counter  {kms,provider}
 *   kmscrypt_kms_probe_errors_total               counter  {kms,provider,class}
 *
 * One-hot conventions:
 *   - kmscrypt_volume_state has ONE sample per volume, for its current state, with value 1 (the
 *     set of states belongs to agent/state and grows; a query is `kmscrypt_volume_state{state=
 *     "revoked-suspended"} == 1`, or `... unless ...` for absence).
 *   - kmscrypt_volume_probe_verdict has FOUR samples per volume, one per verdict ("usable",
 *     "denied", "unavailable", "invalid"): the current verdict 1, the others 0; all four are 0 for
 *     a volume never probed.  The set is closed, so every series exists from the first scrape.
 *   - kmscrypt_kms_probe_errors_total has three samples per configuration, class="denied",
 *     "unavailable" and "invalid", each from 0 on.
 *
 * Label values are escaped as the format requires (backslash as \\, double quote as \", newline
 * as \n); bytes that are not well-formed UTF-8 become U+FFFD, since Prometheus rejects the whole
 * file over one invalid label value.  A NULL label value is "".  The caller keeps the (uuid,
 * mapping, kms) and (kms, provider) tuples unique: a duplicated series makes node_exporter drop
 * the file.
 *
 * Numbers: counters and integers in decimal; other values in the shortest form that reads back
 * as the same double, plain between 1e-4 and 1e15 ("0.4", "1764460800.25"), else "%g" with at
 * most 17 significant digits ("1e-07").  NaN, an infinity and -0 are written as 0, so the file
 * always parses.  The decimal point is the C locale's: kmscrypt never calls setlocale().
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct watch_metrics_volume {
	const char *uuid, *mapping, *kms;
	const char *state;   /* required, e.g. "active", "revoked-suspended" */
	const char *verdict; /* "usable", "denied", "unavailable", "invalid"; NULL: never probed */
	double last_probe;   /* unix seconds, 0: never */
	unsigned consecutive_denials;
};

struct watch_metrics_kms {
	const char *name, *provider;
	double probe_seconds; /* the last round, all volumes of this configuration */
	uint64_t probes, errors_denied, errors_unavailable, errors_invalid;
};

struct watch_metrics {
	bool up;
	uint64_t rounds;
	/* the last round: its duration, and when it started (unix seconds, 0: none yet) */
	double round_seconds, last_round;
	const struct watch_metrics_volume *vols;
	size_t n_vols;
	const struct watch_metrics_kms *kms;
	size_t n_kms;
};

/** watch_metrics_format() - the text of a metrics file for @m.
 *  @ret_text: on success, a NUL-terminated heap string (free()), ending in "\n".
 *  Return: 0; -EINVAL when a volume has no state or a verdict other than the four above (or @m
 *  is NULL, or n_vols/n_kms > 0 with a NULL array); -ENOMEM. */
int watch_metrics_format(const struct watch_metrics *m, char **ret_text);
