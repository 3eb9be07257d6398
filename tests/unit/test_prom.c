/* SPDX-License-Identifier: MIT */
/*
 * The watcher's Prometheus metrics (agent/codec/prom.c, agent/watch/metrics.c, issue 10):
 *   - the whole text for a small snapshot, byte for byte (names, types, labels, one-hot rules);
 *   - label values escaped as the text format wants, malformed UTF-8 replaced;
 *   - numbers Prometheus parses: shortest round-trip form, never NaN/Inf;
 *   - refused snapshots; the metrics file: mode 0644 whatever the umask, replaced atomically
 *     through a temporary name that does not end in ".prom".
 * With KMSCRYPT_PROM_SAMPLE=PATH set it also writes the sample snapshot (sample_metrics) to PATH
 * with watch_metrics_write(); tests/integration/test_prom_parse.sh parses that file with the
 * Prometheus client's parser.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/prom.h"
#include "util/fileio.h"
#include "watch/metrics.h"

/* Two volumes on one configuration, one never probed; a second configuration without volumes.
 * The mapping of the second volume has a quote, a backslash and a newline. */
static const struct watch_metrics_volume sample_vols[] = {
	{.uuid = "0b5e7c3a-1f2d-4e6a-9b8c-7d6e5f4a3b2c",
	 .mapping = "data",
	 .kms = "prod",
	 .state = "active",
	 .verdict = "usable",
	 .last_probe = 1764460800.25,
	 .consecutive_denials = 0},
	{.uuid = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
	 .mapping = "we\"ird\\map\nx",
	 .kms = "prod",
	 .state = "revoked-suspended",
	 .verdict = "denied",
	 .last_probe = 1764460801.5,
	 .consecutive_denials = 2},
	{.uuid = "11111111-2222-4333-8444-555555555555",
	 .mapping = "logs",
	 .kms = "prod",
	 .state = "active",
	 .verdict = NULL,
	 .last_probe = 0,
	 .consecutive_denials = 0},
};
static const struct watch_metrics_kms sample_kms[] = {
	{.name = "prod",
	 .provider = "aws",
	 .probe_seconds = 0.4,
	 .probes = 42,
	 .errors_denied = 3,
	 .errors_unavailable = 5,
	 .errors_invalid = 1},
	{.name = "lab", .provider = "vault", .probe_seconds = 0, .probes = 0},
};
static const struct watch_metrics sample_metrics = {
	.up = true,
	.rounds = 17,
	.round_seconds = 0.4125,
	.last_round = 1764460800,
	.vols = sample_vols,
	.n_vols = 3,
	.kms = sample_kms,
	.n_kms = 2,
};

#define V1 "uuid=\"0b5e7c3a-1f2d-4e6a-9b8c-7d6e5f4a3b2c\",mapping=\"data\",kms=\"prod\""
#define V2                                                                                         \
	"uuid=\"9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a\",mapping=\"we\\\"ird\\\\map\\nx\",kms=\"prod\""
#define V3 "uuid=\"11111111-2222-4333-8444-555555555555\",mapping=\"logs\",kms=\"prod\""
static const char sample_text[] =
	"# HELP kmscrypt_watch_up 1 while the kmscrypt watcher runs.\n"
	"# TYPE kmscrypt_watch_up gauge\n"
	"kmscrypt_watch_up 1\n"
	"# HELP kmscrypt_watch_rounds_total Probe rounds the watcher has done since it started.\n"
	"# TYPE kmscrypt_watch_rounds_total counter\n"
	"kmscrypt_watch_rounds_total 17\n"
	"# HELP kmscrypt_watch_round_duration_seconds Duration of the last probe round.\n"
	"# TYPE kmscrypt_watch_round_duration_seconds gauge\n"
	"kmscrypt_watch_round_duration_seconds 0.4125\n"
	"# HELP kmscrypt_watch_last_round_timestamp_seconds Unix time the last probe round started "
	"(0: none yet).\n"
	"# TYPE kmscrypt_watch_last_round_timestamp_seconds gauge\n"
	"kmscrypt_watch_last_round_timestamp_seconds 1764460800\n"
	"# HELP kmscrypt_volume_state State of the volume: 1 for its current state only.\n"
	"# TYPE kmscrypt_volume_state gauge\n"
	"kmscrypt_volume_state{" V1 ",state=\"active\"} 1\n"
	"kmscrypt_volume_state{" V2 ",state=\"revoked-suspended\"} 1\n"
	"kmscrypt_volume_state{" V3 ",state=\"active\"} 1\n"
	"# HELP kmscrypt_volume_probe_verdict Verdict of the last KMS probe of the volume's key: 1 "
	"for it, 0 for the others (all 0: never probed).\n"
	"# TYPE kmscrypt_volume_probe_verdict gauge\n"
	"kmscrypt_volume_probe_verdict{" V1 ",verdict=\"usable\"} 1\n"
	"kmscrypt_volume_probe_verdict{" V1 ",verdict=\"denied\"} 0\n"
	"kmscrypt_volume_probe_verdict{" V1 ",verdict=\"unavailable\"} 0\n"
	"kmscrypt_volume_probe_verdict{" V1 ",verdict=\"invalid\"} 0\n"
	"kmscrypt_volume_probe_verdict{" V2 ",verdict=\"usable\"} 0\n"
	"kmscrypt_volume_probe_verdict{" V2 ",verdict=\"denied\"} 1\n"
	"kmscrypt_volume_probe_verdict{" V2 ",verdict=\"unavailable\"} 0\n"
	"kmscrypt_volume_probe_verdict{" V2 ",verdict=\"invalid\"} 0\n"
	"kmscrypt_volume_probe_verdict{" V3 ",verdict=\"usable\"} 0\n"
	"kmscrypt_volume_probe_verdict{" V3 ",verdict=\"denied\"} 0\n"
	"kmscrypt_volume_probe_verdict{" V3 ",verdict=\"unavailable\"} 0\n"
	"kmscrypt_volume_probe_verdict{" V3 ",verdict=\"invalid\"} 0\n"
	"# HELP kmscrypt_volume_last_probe_timestamp_seconds Unix time of the last KMS probe of the "
	"volume's key (0: never).\n"
	"# TYPE kmscrypt_volume_last_probe_timestamp_seconds gauge\n"
	"kmscrypt_volume_last_probe_timestamp_seconds{" V1 "} 1764460800.25\n"
	"kmscrypt_volume_last_probe_timestamp_seconds{" V2 "} 1764460801.5\n"
	"kmscrypt_volume_last_probe_timestamp_seconds{" V3 "} 0\n"
	"# HELP kmscrypt_volume_consecutive_denials KMS probes in a row that denied access to the "
	"volume's key.\n"
	"# TYPE kmscrypt_volume_consecutive_denials gauge\n"
	"kmscrypt_volume_consecutive_denials{" V1 "} 0\n"
	"kmscrypt_volume_consecutive_denials{" V2 "} 2\n"
	"kmscrypt_volume_consecutive_denials{" V3 "} 0\n"
	"# HELP kmscrypt_kms_probe_duration_seconds Time the last round took to probe all volumes "
	"of the KMS configuration.\n"
	"# TYPE kmscrypt_kms_probe_duration_seconds gauge\n"
	"kmscrypt_kms_probe_duration_seconds{kms=\"prod\",provider=\"aws\"} 0.4\n"
	"kmscrypt_kms_probe_duration_seconds{kms=\"lab\",provider=\"vault\"} 0\n"
	"# HELP kmscrypt_kms_probes_total Probes sent to the KMS configuration.\n"
	"# TYPE kmscrypt_kms_probes_total counter\n"
	"kmscrypt_kms_probes_total{kms=\"prod\",provider=\"aws\"} 42\n"
	"kmscrypt_kms_probes_total{kms=\"lab\",provider=\"vault\"} 0\n"
	"# HELP kmscrypt_kms_probe_errors_total Probes of the KMS configuration that failed, by "
	"class.\n"
	"# TYPE kmscrypt_kms_probe_errors_total counter\n"
	"kmscrypt_kms_probe_errors_total{kms=\"prod\",provider=\"aws\",class=\"denied\"} 3\n"
	"kmscrypt_kms_probe_errors_total{kms=\"prod\",provider=\"aws\",class=\"unavailable\"} 5\n"
	"kmscrypt_kms_probe_errors_total{kms=\"prod\",provider=\"aws\",class=\"invalid\"} 1\n"
	"kmscrypt_kms_probe_errors_total{kms=\"lab\",provider=\"vault\",class=\"denied\"} 0\n"
	"kmscrypt_kms_probe_errors_total{kms=\"lab\",provider=\"vault\",class=\"unavailable\"} 0\n"
	"kmscrypt_kms_probe_errors_total{kms=\"lab\",provider=\"vault\",class=\"invalid\"} 0\n";

static void test_prom_known_answer(void **state)
{
	char *text = NULL;

	assert_int_equal(watch_metrics_format(&sample_metrics, &text), 0);
	assert_string_equal(text, sample_text);
	free(text);
}

/* No volume and no configuration (a watcher with nothing to watch): the four watcher families,
 * and no HELP/TYPE lines for families without samples. */
static void test_prom_empty(void **state)
{
	const struct watch_metrics m = {.up = false};
	char *text = NULL;

	assert_int_equal(watch_metrics_format(&m, &text), 0);
	assert_non_null(strstr(text, "\nkmscrypt_watch_up 0\n"));
	assert_non_null(strstr(text, "\nkmscrypt_watch_rounds_total 0\n"));
	assert_non_null(strstr(text, "\nkmscrypt_watch_last_round_timestamp_seconds 0\n"));
	assert_null(strstr(text, "kmscrypt_volume_"));
	assert_null(strstr(text, "kmscrypt_kms_"));
	assert_int_equal(text[strlen(text) - 1], '\n');
	free(text);
}

/* The consecutive_denials line of a volume whose mapping is @mapping (NULL: as written). */
static char *denials_line_for(const char *mapping, const char *uuid)
{
	const struct watch_metrics_volume v = {
		.uuid = uuid, .mapping = mapping, .kms = "k", .state = "active"};
	const struct watch_metrics m = {.vols = &v, .n_vols = 1};
	char *text = NULL, *line, *end;

	assert_int_equal(watch_metrics_format(&m, &text), 0);
	line = strstr(text, "\nkmscrypt_volume_consecutive_denials{");
	assert_non_null(line);
	line = strdup(line + 1);
	assert_non_null(line);
	end = strchr(line, '\n');
	assert_non_null(end);
	*end = 0;
	free(text);
	return line;
}

static void assert_mapping_escaped(const char *mapping, const char *want)
{
	char *line = denials_line_for(mapping, "u"), *expect = NULL;

	assert_true(asprintf(&expect,
			     "kmscrypt_volume_consecutive_denials{uuid=\"u\",mapping=\"%s\",kms=\"k\"} 0",
			     want) > 0);
	assert_string_equal(line, expect);
	free(expect);
	free(line);
}

static void test_prom_escaping(void **state)
{
	assert_mapping_escaped("plain", "plain");
	assert_mapping_escaped("a\"b", "a\\\"b");
	assert_mapping_escaped("a\\b", "a\\\\b");
	assert_mapping_escaped("a\nb", "a\\nb");
	/* a backslash before a quote: both escaped, so the quote cannot end the value */
	assert_mapping_escaped("x\\\"} 1\nkmscrypt_watch_up 0", "x\\\\\\\"} 1\\nkmscrypt_watch_up 0");
	assert_mapping_escaped("\\\\", "\\\\\\\\");
	assert_mapping_escaped("", "");
	assert_mapping_escaped(NULL, "");
	/* tab, CR and other UTF-8 pass: the format escapes only \ " and newline */
	assert_mapping_escaped("t\tc\r\xc3\xa9\xe2\x82\xac\xf0\x9f\x94\x91",
			       "t\tc\r\xc3\xa9\xe2\x82\xac\xf0\x9f\x94\x91");
	/* malformed UTF-8 (stray continuation, overlong, surrogate, > U+10FFFF, cut sequence)
	 * becomes U+FFFD per byte: Prometheus drops a file with one invalid label value */
	assert_mapping_escaped("a\x80z", "a\xef\xbf\xbdz");
	assert_mapping_escaped("\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd");
	assert_mapping_escaped("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	assert_mapping_escaped("\xf4\x90\x80\x80",
			       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	assert_mapping_escaped("x\xe2\x82", "x\xef\xbf\xbd\xef\xbf\xbd");
	assert_mapping_escaped("\xe2\x82\"", "\xef\xbf\xbd\xef\xbf\xbd\\\"");

	/* every label is escaped, not only the mapping */
	char *line = denials_line_for("m", "u\"\\\n");
	assert_string_equal(line, "kmscrypt_volume_consecutive_denials{uuid=\"u\\\"\\\\\\n\","
				  "mapping=\"m\",kms=\"k\"} 0");
	free(line);
}

/* The value of the kmscrypt_watch_round_duration_seconds sample for @v. */
static void assert_number(double v, const char *want)
{
	const struct watch_metrics m = {.round_seconds = v};
	char *text = NULL, *expect = NULL;

	assert_int_equal(watch_metrics_format(&m, &text), 0);
	assert_true(asprintf(&expect, "\nkmscrypt_watch_round_duration_seconds %s\n", want) > 0);
	if (!strstr(text, expect))
		fail_msg("%g: want '%s' in:\n%s", v, want, text);
	free(expect);
	free(text);
}

static void test_prom_numbers(void **state)
{
	assert_number(0, "0");
	assert_number(-0.0, "0");
	assert_number(0.4, "0.4");
	assert_number(0.1 + 0.2, "0.30000000000000004"); /* 17 digits when it takes them */
	assert_number(1764460800.125, "1764460800.125");
	assert_number(12, "12");
	assert_number(1e-7, "1e-07");
	assert_number(0.000123, "0.000123");
	assert_number(5e-5, "5e-05");
	assert_number(1e15, "1e+15");
	assert_number(999999999999999, "999999999999999");
	assert_number(-1.5, "-1.5"); /* a clock stepped back: legal for a gauge */
	assert_number(1e300, "1e+300");
	/* never NaN or Inf, which would need Prometheus' spelling and mean nothing here */
	assert_number(NAN, "0");
	assert_number(INFINITY, "0");
	assert_number(-INFINITY, "0");

	/* counters: full uint64 range in decimal */
	const struct watch_metrics m = {.rounds = UINT64_MAX};
	char *text = NULL;
	assert_int_equal(watch_metrics_format(&m, &text), 0);
	assert_non_null(strstr(text, "\nkmscrypt_watch_rounds_total 18446744073709551615\n"));
	free(text);
}

static void test_prom_refused(void **state)
{
	struct watch_metrics_volume v = {.uuid = "u", .mapping = "m", .kms = "k", .state = "active"};
	struct watch_metrics m = {.vols = &v, .n_vols = 1};
	char *text = (char *)"untouched";

	v.state = NULL;
	assert_int_equal(watch_metrics_format(&m, &text), -EINVAL);
	v.state = "active";
	v.verdict = "maybe"; /* not one of the four */
	assert_int_equal(watch_metrics_format(&m, &text), -EINVAL);
	v.verdict = "USABLE";
	assert_int_equal(watch_metrics_format(&m, &text), -EINVAL);
	m.vols = NULL;
	v.verdict = "usable";
	assert_int_equal(watch_metrics_format(&m, &text), -EINVAL);
	m.vols = &v;
	m.n_kms = 1; /* kms NULL */
	assert_int_equal(watch_metrics_format(&m, &text), -EINVAL);
	assert_int_equal(watch_metrics_format(NULL, &text), -EINVAL);
	assert_string_equal(text, "untouched"); /* ret_text written only on success */
	m.n_kms = 0;
	assert_int_equal(watch_metrics_format(&m, &text), 0);
	free(text);
}

static char *read_all(const char *path)
{
	char *text = NULL;
	size_t len = 0;

	assert_int_equal(read_file_text(path, 1 << 20, &text, &len), 0);
	return text;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The file node_exporter reads: mode 0644 under the unit's UMask=0077, the whole new text, and
 * no name ending in ".prom" other than the file itself ever appears in the directory (the
 * collector would read a half-written temporary file: inotify sees every name created). */
static void test_metrics_write(void **state)
{
	char dir[] = "/tmp/kmscrypt-test-prom.XXXXXX", path[PATH_MAX], ev_buf[8192];
	struct watch_metrics m = sample_metrics;
	struct stat st;
	char *text;
	int in, created = 0, moved = 0;
	mode_t old_umask;
	ssize_t n;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/kmscrypt.prom", dir);
	in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	assert_true(in >= 0);
	assert_true(inotify_add_watch(in, dir, IN_CREATE | IN_MOVED_TO) >= 0);

	old_umask = umask(0077);
	assert_int_equal(watch_metrics_write(path, &m), 0);
	m.rounds = 18;
	assert_int_equal(watch_metrics_write(path, &m), 0);
	umask(old_umask);

	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	text = read_all(path);
	assert_non_null(strstr(text, "\nkmscrypt_watch_rounds_total 18\n"));
	free(text);

	n = read(in, ev_buf, sizeof(ev_buf));
	assert_true(n > 0);
	for (char *p = ev_buf; p < ev_buf + n;) {
		const struct inotify_event *ev = (const struct inotify_event *)p;

		assert_true(ev->len > 0);
		if (ev->mask & IN_CREATE) {
			created++;
			if (ends_with(ev->name, ".prom"))
				fail_msg("temporary file '%s' ends in .prom", ev->name);
			assert_int_equal(strncmp(ev->name, "kmscrypt.prom.", 14), 0);
		}
		if (ev->mask & IN_MOVED_TO) {
			moved++;
			assert_string_equal(ev->name, "kmscrypt.prom");
		}
		p += sizeof(*ev) + ev->len;
	}
	assert_int_equal(created, 2);
	assert_int_equal(moved, 2);
	close(in);

	/* nothing but the file is left */
	DIR *d = opendir(dir);
	struct dirent *de;
	int entries = 0;
	assert_non_null(d);
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		assert_string_equal(de->d_name, "kmscrypt.prom");
		entries++;
	}
	closedir(d);
	assert_int_equal(entries, 1);

	/* a bad snapshot leaves the old file alone */
	struct watch_metrics_volume bad = {.state = NULL};
	m.vols = &bad;
	m.n_vols = 1;
	assert_int_equal(watch_metrics_write(path, &m), -EINVAL);
	text = read_all(path);
	assert_non_null(strstr(text, "\nkmscrypt_watch_rounds_total 18\n"));
	free(text);

	/* a directory that does not exist: -ENOENT, for the daemon to report */
	snprintf(path, sizeof(path), "%s/missing/kmscrypt.prom", dir);
	assert_int_equal(watch_metrics_write(path, &sample_metrics), -ENOENT);

	snprintf(path, sizeof(path), "%s/kmscrypt.prom", dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const char *sample = getenv("KMSCRYPT_PROM_SAMPLE");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prom_known_answer), cmocka_unit_test(test_prom_empty),
		cmocka_unit_test(test_prom_escaping),     cmocka_unit_test(test_prom_numbers),
		cmocka_unit_test(test_prom_refused),      cmocka_unit_test(test_metrics_write),
	};

	if (sample) {
		int r = watch_metrics_write(sample, &sample_metrics);

		if (r < 0) {
			fprintf(stderr, "cannot write '%s': %s\n", sample, strerror(-r));
			return 1;
		}
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
