/* SPDX-License-Identifier: MIT */
/*
 * Prometheus text exposition format, version 0.0.4:
 * https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
 *
 *   # HELP <name> <text>
 *   # TYPE <name> counter|gauge
 *   <name>{<label>="<value>",...} <value>
 *
 * "All lines for a given metric must be provided as one single group, with the optional HELP
 * and TYPE lines first", and a name has one HELP and one TYPE line at most: so each family is
 * written whole, its samples in the order of the snapshot.  The names and conventions are
 * documented in prom.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/prom.h"
#include "util/cleanup.h"

/* The closed set of probe verdicts (one series each, prom.h). */
static const char *const verdicts[] = {"usable", "denied", "unavailable", "invalid"};

/* A growing text buffer; always NUL-terminated once anything was appended. */
struct prom_out {
	char *buf;
	size_t len, cap;
};

static void prom_out_done(struct prom_out *o)
{
	free(o->buf);
}

static int out_reserve(struct prom_out *o, size_t n)
{
	size_t cap;
	char *p;

	if (n > SIZE_MAX / 2 - o->len)
		return -ENOMEM;
	if (o->len + n + 1 <= o->cap)
		return 0;
	cap = MAX(o->cap * 2, o->len + n + 1);
	cap = MAX(cap, (size_t)4096);
	p = realloc(o->buf, cap);
	if (!p)
		return -ENOMEM;
	o->buf = p;
	o->cap = cap;
	return 0;
}

static int out_mem(struct prom_out *o, const char *s, size_t n)
{
	int r = out_reserve(o, n);

	if (r < 0)
		return r;
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	o->buf[o->len] = 0;
	return 0;
}

static int out_str(struct prom_out *o, const char *s)
{
	return out_mem(o, s, strlen(s));
}

/* Length of the well-formed UTF-8 sequence at @s (RFC 3629 section 4: no overlong forms, no
 * surrogates, nothing above U+10FFFF), 0 when it is not one.  @s is NUL-terminated, and NUL is
 * no continuation byte, so nothing is read past the end. */
static size_t utf8_seq_len(const unsigned char *s)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	/* the second byte's range narrows for E0 (overlong), ED (surrogates), F0, F4 */
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

/* A label value between its quotes: \ " and newline escaped, malformed UTF-8 as U+FFFD. */
static int out_label_value(struct prom_out *o, const char *v)
{
	const unsigned char *s = (const unsigned char *)(v ? v : "");
	int r = 0;

	while (*s && r >= 0) {
		size_t n = utf8_seq_len(s);

		if (*s == '\\')
			r = out_str(o, "\\\\");
		else if (*s == '"')
			r = out_str(o, "\\\"");
		else if (*s == '\n')
			r = out_str(o, "\\n");
		else if (n == 0)
			r = out_str(o, "\xef\xbf\xbd");
		else
			r = out_mem(o, (const char *)s, n);
		s += n ? n : 1;
	}
	return r;
}

/* @v in the shortest text that strtod() reads back as @v: plain decimals between 1e-4 and 1e15
 * (timestamps stay readable: "1764460800.25", not "1.76446080025e+09"), "%g" beyond. */
static void format_double(double v, char buf[static 64])
{
	double a = v < 0 ? -v : v;

	if (!isfinite(v) || v == 0) {
		strcpy(buf, "0");
		return;
	}
	if (a >= 1e-4 && a < 1e15) {
		for (int prec = 0; prec <= 20; prec++) {
			snprintf(buf, 64, "%.*f", prec, v);
			if (strtod(buf, NULL) == v)
				return;
		}
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, 64, "%.*g", prec, v); /* 17 significant digits always read back */
		if (strtod(buf, NULL) == v)
			return;
	}
}

static int out_family(struct prom_out *o, const char *name, const char *type, const char *help)
{
	int r;

	r = out_str(o, "# HELP ");
	if (r >= 0)
		r = out_str(o, name);
	if (r >= 0)
		r = out_str(o, " ");
	if (r >= 0)
		r = out_str(o, help);
	if (r >= 0)
		r = out_str(o, "\n# TYPE ");
	if (r >= 0)
		r = out_str(o, name);
	if (r >= 0)
		r = out_str(o, " ");
	if (r >= 0)
		r = out_str(o, type);
	if (r >= 0)
		r = out_str(o, "\n");
	return r;
}

/* One sample line: @labels holds @n_labels name/value pairs (values may be NULL: ""). */
static int out_sample(struct prom_out *o, const char *name, const char *const *labels,
		      size_t n_labels, const char *value)
{
	int r;

	r = out_str(o, name);
	for (size_t i = 0; i < n_labels && r >= 0; i++) {
		r = out_str(o, i == 0 ? "{" : ",");
		if (r >= 0)
			r = out_str(o, labels[2 * i]);
		if (r >= 0)
			r = out_str(o, "=\"");
		if (r >= 0)
			r = out_label_value(o, labels[2 * i + 1]);
		if (r >= 0)
			r = out_str(o, "\"");
	}
	if (r >= 0 && n_labels > 0)
		r = out_str(o, "}");
	if (r >= 0)
		r = out_str(o, " ");
	if (r >= 0)
		r = out_str(o, value);
	if (r >= 0)
		r = out_str(o, "\n");
	return r;
}

static int out_sample_double(struct prom_out *o, const char *name, const char *const *labels,
			     size_t n_labels, double v)
{
	char buf[64];

	format_double(v, buf);
	return out_sample(o, name, labels, n_labels, buf);
}

static int out_sample_u64(struct prom_out *o, const char *name, const char *const *labels,
			  size_t n_labels, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	return out_sample(o, name, labels, n_labels, buf);
}

static bool verdict_known(const char *v)
{
	for (size_t i = 0; i < ARRAY_SIZE(verdicts); i++)
		if (strcmp(v, verdicts[i]) == 0)
			return true;
	return false;
}

static int format_watcher(struct prom_out *o, const struct watch_metrics *m)
{
	int r;

	r = out_family(o, "kmscrypt_watch_up", "gauge", "1 while the kmscrypt watcher runs.");
	if (r >= 0)
		r = out_sample_u64(o, "kmscrypt_watch_up", NULL, 0, m->up ? 1 : 0);
	if (r >= 0)
		r = out_family(o, "kmscrypt_watch_rounds_total", "counter",
			       "Probe rounds the watcher has done since it started.");
	if (r >= 0)
		r = out_sample_u64(o, "kmscrypt_watch_rounds_total", NULL, 0, m->rounds);
	if (r >= 0)
		r = out_family(o, "kmscrypt_watch_round_duration_seconds", "gauge",
			       "Duration of the last probe round.");
	if (r >= 0)
		r = out_sample_double(o, "kmscrypt_watch_round_duration_seconds", NULL, 0,
				      m->round_seconds);
	if (r >= 0)
		r = out_family(o, "kmscrypt_watch_last_round_timestamp_seconds", "gauge",
			       "Unix time the last probe round started (0: none yet).");
	if (r >= 0)
		r = out_sample_double(o, "kmscrypt_watch_last_round_timestamp_seconds", NULL, 0,
				      m->last_round);
	return r;
}

static int format_volumes(struct prom_out *o, const struct watch_metrics *m)
{
	int r;

	if (m->n_vols == 0)
		return 0;
	r = out_family(o, "kmscrypt_volume_state", "gauge",
		       "State of the volume: 1 for its current state only.");
	for (size_t i = 0; i < m->n_vols && r >= 0; i++) {
		const struct watch_metrics_volume *v = &m->vols[i];
		const char *l[] = {"uuid", v->uuid, "mapping", v->mapping, "kms", v->kms,
				   "state", v->state};

		r = out_sample_u64(o, "kmscrypt_volume_state", l, ARRAY_SIZE(l) / 2, 1);
	}
	if (r >= 0)
		r = out_family(o, "kmscrypt_volume_probe_verdict", "gauge",
			       "Verdict of the last KMS probe of the volume's key: 1 for it, 0 for "
			       "the others (all 0: never probed).");
	for (size_t i = 0; i < m->n_vols && r >= 0; i++) {
		const struct watch_metrics_volume *v = &m->vols[i];

		for (size_t j = 0; j < ARRAY_SIZE(verdicts) && r >= 0; j++) {
			const char *l[] = {"uuid", v->uuid, "mapping", v->mapping, "kms", v->kms,
					   "verdict", verdicts[j]};
			bool on = v->verdict && strcmp(v->verdict, verdicts[j]) == 0;

			r = out_sample_u64(o, "kmscrypt_volume_probe_verdict", l,
					   ARRAY_SIZE(l) / 2, on ? 1 : 0);
		}
	}
	if (r >= 0)
		r = out_family(o, "kmscrypt_volume_last_probe_timestamp_seconds", "gauge",
			       "Unix time of the last KMS probe of the volume's key (0: never).");
	for (size_t i = 0; i < m->n_vols && r >= 0; i++) {
		const struct watch_metrics_volume *v = &m->vols[i];
		const char *l[] = {"uuid", v->uuid, "mapping", v->mapping, "kms", v->kms};

		r = out_sample_double(o, "kmscrypt_volume_last_probe_timestamp_seconds", l,
				      ARRAY_SIZE(l) / 2, v->last_probe);
	}
	if (r >= 0)
		r = out_family(o, "kmscrypt_volume_consecutive_denials", "gauge",
			       "KMS probes in a row that denied access to the volume's key.");
	for (size_t i = 0; i < m->n_vols && r >= 0; i++) {
		const struct watch_metrics_volume *v = &m->vols[i];
		const char *l[] = {"uuid", v->uuid, "mapping", v->mapping, "kms", v->kms};

		r = out_sample_u64(o, "kmscrypt_volume_consecutive_denials", l, ARRAY_SIZE(l) / 2,
				   v->consecutive_denials);
	}
	return r;
}

static int format_kms(struct prom_out *o, const struct watch_metrics *m)
{
	int r;

	if (m->n_kms == 0)
		return 0;
	r = out_family(o, "kmscrypt_kms_probe_duration_seconds", "gauge",
		       "Time the last round took to probe all volumes of the KMS configuration.");
	for (size_t i = 0; i < m->n_kms && r >= 0; i++) {
		const char *l[] = {"kms", m->kms[i].name, "provider", m->kms[i].provider};

		r = out_sample_double(o, "kmscrypt_kms_probe_duration_seconds", l,
				      ARRAY_SIZE(l) / 2, m->kms[i].probe_seconds);
	}
	if (r >= 0)
		r = out_family(o, "kmscrypt_kms_probes_total", "counter",
			       "Probes sent to the KMS configuration.");
	for (size_t i = 0; i < m->n_kms && r >= 0; i++) {
		const char *l[] = {"kms", m->kms[i].name, "provider", m->kms[i].provider};

		r = out_sample_u64(o, "kmscrypt_kms_probes_total", l, ARRAY_SIZE(l) / 2,
				   m->kms[i].probes);
	}
	if (r >= 0)
		r = out_family(o, "kmscrypt_kms_probe_errors_total", "counter",
			       "Probes of the KMS configuration that failed, by class.");
	for (size_t i = 0; i < m->n_kms && r >= 0; i++) {
		const struct watch_metrics_kms *k = &m->kms[i];
		const struct {
			const char *class;
			uint64_t n;
		} errs[] = {{"denied", k->errors_denied},
			    {"unavailable", k->errors_unavailable},
			    {"invalid", k->errors_invalid}};

		for (size_t j = 0; j < ARRAY_SIZE(errs) && r >= 0; j++) {
			const char *l[] = {"kms", k->name, "provider", k->provider, "class",
					   errs[j].class};

			r = out_sample_u64(o, "kmscrypt_kms_probe_errors_total", l,
					   ARRAY_SIZE(l) / 2, errs[j].n);
		}
	}
	return r;
}

int watch_metrics_format(const struct watch_metrics *m, char **ret_text)
{
	_cleanup_(prom_out_done) struct prom_out o = {};
	int r;

	if (!m || !ret_text || (m->n_vols > 0 && !m->vols) || (m->n_kms > 0 && !m->kms))
		return -EINVAL;
	/* Check first, so that a bad snapshot is refused whole rather than cut. */
	for (size_t i = 0; i < m->n_vols; i++)
		if (!m->vols[i].state || (m->vols[i].verdict && !verdict_known(m->vols[i].verdict)))
			return -EINVAL;

	r = format_watcher(&o, m);
	if (r >= 0)
		r = format_volumes(&o, m);
	if (r >= 0)
		r = format_kms(&o, m);
	if (r < 0)
		return r;
	*ret_text = TAKE_PTR(o.buf);
	return 0;
}
