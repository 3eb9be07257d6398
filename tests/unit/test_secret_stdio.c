/* SPDX-License-Identifier: MIT */
/*
 * A recovery key printed on stdout goes there by write(2) from its locked memory, never through
 * stdio: the buffer of stdout is not wiped (and glibc's lives on the heap), so a copy of the key
 * would outlive the run's secret_free().  stdout is swapped for a stdio stream whose write
 * callback records every byte stdio hands it; fd 1 goes to a file.  The key must reach the file and
 * never pass through the stream.  Covered: format's recovery key (text and --json, through
 * cli_print_json_secret()) and 'recovery-key show --output -'.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/cli.h"
#include "util/log.h"

static char seen[1 << 16]; /* what went through the stdio stream */
static size_t seen_len;

static ssize_t cookie_write(void *arg, const char *buf, size_t n)
{
	(void)arg;
	if (seen_len + n < sizeof(seen)) {
		memcpy(seen + seen_len, buf, n);
		seen_len += n;
	}
	return write(STDOUT_FILENO, buf, n) < 0 ? -1 : (ssize_t)n;
}

static char out[1 << 16]; /* what reached fd 1 */
static char dir[] = "/tmp/kmscrypt-stdio-XXXXXX";

/* Run @cmd with stdout swapped; out gets fd 1's bytes, seen stdio's. */
static int run(int (*cmd)(struct cli *, int, char **), bool json, int argc, char **argv)
{
	char cfg[128], st[128];
	struct cli c = {.core = {.config_dir = cfg, .state_dir = st, .lock_timeout_sec = 5},
			.timeout_sec = 10,
			.quiet = true,
			.batch = true,
			.json = json};
	FILE *saved_stdout = stdout, *f;
	int saved_fd = dup(STDOUT_FILENO), fd, r;
	ssize_t n;

	snprintf(cfg, sizeof(cfg), "%s/etc", dir);
	snprintf(st, sizeof(st), "%s/state", dir);
	c.core.rt.config_dir = cfg;
	c.core.rt.timeout_ms = 10000;
	fd = open(dir, O_TMPFILE | O_RDWR, 0600);
	assert_true(fd >= 0 && saved_fd >= 0);
	fflush(stdout);
	dup2(fd, STDOUT_FILENO);
	f = fopencookie(NULL, "w", (cookie_io_functions_t){.write = cookie_write});
	assert_non_null(f);
	seen_len = 0;
	stdout = f;
	r = cmd(&c, argc, argv);
	fflush(stdout);
	stdout = saved_stdout;
	fclose(f);
	dup2(saved_fd, STDOUT_FILENO);
	close(saved_fd);
	n = pread(fd, out, sizeof(out) - 1, 0);
	assert_true(n >= 0);
	out[n] = '\0';
	close(fd);
	return r;
}

static bool seen_has(const char *key)
{
	return memmem(seen, seen_len, key, strlen(key)) != NULL;
}

static void make_kms(const char *name)
{
	char key[160];
	char *argv[] = {"kms", "create", (char *)name, "--provider", "local", "--key-file", key,
			"--generate", NULL};

	snprintf(key, sizeof(key), "%s/%s.key", dir, name);
	assert_int_equal(run(cmd_kms, false, 8, argv), 0);
}

static void make_image(char *path, size_t len, const char *name)
{
	int fd;

	snprintf(path, len, "%s/%s.img", dir, name);
	fd = open(path, O_CREAT | O_WRONLY | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 20 << 20), 0);
	close(fd);
}

/* The 71 characters after @prefix in out. */
static void key_after(const char *prefix, char key[72])
{
	const char *p = strstr(out, prefix);

	assert_non_null(p);
	assert_true(strlen(p + strlen(prefix)) >= 71);
	memcpy(key, p + strlen(prefix), 71);
	key[71] = '\0';
	assert_int_equal(strspn(key, "cbdefghijklnrtuv-"), 71);
}

static void test_format_text(void **state)
{
	char img[160], key[72];
	char *argv[] = {"format", img, "--kms", "a", NULL};

	(void)state;
	make_image(img, sizeof(img), "text");
	assert_int_equal(run(cmd_format, false, 4, argv), 0);
	key_after("Recovery key (keyslot 1):\n\n    ", key);
	assert_string_equal(out + strlen(out) - 2, "\n\n");
	assert_false(seen_has(key));
}

static void test_format_json(void **state)
{
	char img[160], key[72];
	char *argv[] = {"format", img, "--kms", "a", NULL};

	(void)state;
	make_image(img, sizeof(img), "json");
	assert_int_equal(run(cmd_format, true, 4, argv), 0);
	key_after("\"recovery_key\": \"", key);
	assert_false(seen_has(key));
	assert_true(seen_has("\"recovery_key\": \"")); /* the document around it is stdio's */
}

static void test_recovery_show_stdout(void **state)
{
	char img[160], esc[160], key[72];
	char *fmt[] = {"format",	       img, "--kms", "a", "--recovery-key-file", esc,
		       "--recovery-key-escrow", "b", NULL};
	char *show[] = {"recovery-key", "show", esc, "--output", "-", NULL};

	(void)state;
	make_image(img, sizeof(img), "esc");
	snprintf(esc, sizeof(esc), "%s/esc.json", dir);
	assert_int_equal(run(cmd_format, false, 8, fmt), 0);
	assert_int_equal(run(cmd_recovery_key, false, 5, show), 0);
	assert_int_equal(strlen(out), 71); /* verbatim, no newline */
	memcpy(key, out, sizeof(key));
	key[71] = '\0';
	assert_int_equal(strspn(key, "cbdefghijklnrtuv-"), 71);
	assert_false(seen_has(key));
}

static int setup(void **state)
{
	(void)state;
	log_max_level = LOG_CRIT; /* the warnings about the recovery key kept off stderr */
	assert_non_null(mkdtemp(dir));
	make_kms("a");
	make_kms("b");
	return 0;
}

static int teardown(void **state)
{
	char cmd[256];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_text),
		cmocka_unit_test(test_format_json),
		cmocka_unit_test(test_recovery_show_stdout),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
