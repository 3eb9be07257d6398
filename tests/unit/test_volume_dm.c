/* SPDX-License-Identifier: MIT */
/*
 * The volume layer against real device-mapper: activate, suspend + key wipe, resume, deactivate,
 * mapping queries.  Every test skips where the kernel has no dm-mod (the build hosts); run it in
 * the VM (KMSCRYPT_REQUIRE_DM=1 turns the skips into failures):
 *   KMSCRYPT_REQUIRE_DM=1 scripts/vm/run.sh --build-dir BUILD -- BUILD/test_volume_dm
 */
#include <errno.h>
#include <libdevmapper.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <cmocka.h>

#include "util/cleanup.h"
#include "util/secret.h"
#include "volume/volume.h"
#include "test_volume_util.h"

#define NVOL 3

static const char *const uuids[NVOL] = {
    "0fd1f9c4-5a3e-4b7e-9c2d-1e2f3a4b5c60",
    "0fd1f9c4-5a3e-4b7e-9c2d-1e2f3a4b5c61",
    "0fd1f9c4-5a3e-4b7e-9c2d-1e2f3a4b5c62",
};
static struct secret *secret;
static char loops[NVOL][64];
static bool have_dm;

static int setup(void **state)
{
	have_dm = access("/sys/module/dm_mod", F_OK) == 0;
	if (!have_dm) /* in the VM, a missing dm must fail, not skip */
		return secure_getenv("KMSCRYPT_REQUIRE_DM") ? -1 : 0;
	test_dir_create();
	secret = test_secret_random();
	for (int i = 0; i < NVOL; i++) {
		char name[32];
		const char *img;
		struct volume_format_params p = {
		    .uuid = uuids[i],
		    .keyslot = 0,
		    .secret = secret,
		    .token_json = test_token_json(0),
		};

		snprintf(name, sizeof(name), "vol%d.img", i);
		img = test_image(name, TEST_IMAGE_BYTES);
		if (volume_format(img, &p) < 0 || test_loop_attach(img, loops[i], 64) < 0)
			return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	if (!have_dm)
		return 0;
	for (int i = 0; i < NVOL; i++)
		test_loop_detach(loops[i]);
	secret = secret_free(secret);
	test_dir_remove();
	return 0;
}

#define REQUIRE_DM()                                                                               \
	do {                                                                                       \
		if (!have_dm)                                                                      \
			skip();                                                                    \
	} while (0)

/* Live keys in /proc/keys whose description contains @needle. */
static int keys_matching(const char *needle)
{
	char line[512];
	int n = 0;
	FILE *f = fopen("/proc/keys", "re");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char flags[8];
		if (sscanf(line, "%*x %7s", flags) == 1 && !strpbrk(flags, "RDi") &&
		    strstr(line, needle))
			n++;
	}
	fclose(f);
	return n;
}

static void print_table(const char *name)
{
	struct volume_mapping m;

	if (volume_mapping_info(name, &m) == 0)
		print_message("  %s: uuid=%s dev=%s suspended=%d key=%d desc='%s'\n", m.name,
			      m.uuid, m.device, m.suspended, m.key, m.key_desc);
}

static void write_pattern(const char *name, char c)
{
	char path[160], buf[4096];
	int fd;

	snprintf(path, sizeof(path), "/dev/mapper/%s", name);
	memset(buf, c, sizeof(buf));
	fd = open(path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	assert_int_equal(fsync(fd), 0);
	close(fd);
}

struct reader {
	char path[160];
	char c;
	volatile int done; /* 1: read the pattern, -1: failed */
};

/* O_DIRECT read: it goes to the device, so it blocks while the device is suspended. */
static void *reader_run(void *userdata)
{
	struct reader *rd = userdata;
	void *buf = NULL;
	int fd, ok = 0;

	fd = open(rd->path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd >= 0 && posix_memalign(&buf, 4096, 4096) == 0 && pread(fd, buf, 4096, 0) == 4096) {
		ok = 1;
		for (int i = 0; i < 4096; i++)
			ok = ok && ((char *)buf)[i] == rd->c;
	}
	free(buf);
	if (fd >= 0)
		close(fd);
	rd->done = ok ? 1 : -1;
	return NULL;
}

static void test_lifecycle(void **state)
{
	const char *name = "kmscrypt-test0";
	struct volume_mapping m, **l = NULL;
	struct volume_wipe_report rep = {};
	struct secret *wrong = test_secret_random();
	struct reader rd = {.c = 'K'};
	char wanted[128], **devs = NULL;
	pthread_t t;
	bool listed = false;
	int found = 0;

	REQUIRE_DM();
	/* activate: the table names the logon key, nothing of ours stays in the keyrings */
	assert_int_equal(volume_activate(loops[0], name, 0, secret), 0);
	print_table(name);
	assert_int_equal(volume_mapping_info(name, &m), 0);
	assert_string_equal(m.name, name);
	assert_string_equal(m.uuid, uuids[0]);
	assert_string_equal(m.device, loops[0]);
	assert_false(m.suspended);
	assert_int_equal(m.key, VOLUME_KEY_KEYRING);
	snprintf(wanted, sizeof(wanted), "cryptsetup:%s-d0", uuids[0]);
	assert_string_equal(m.key_desc, wanted);
	assert_int_equal(volume_keyring_count_kmscrypt(), 0);
	assert_int_equal(keys_matching(uuids[0]), 0);

	assert_int_equal(volume_mapping_find(uuids[0], &m), 0);
	assert_string_equal(m.name, name);
	assert_int_equal(volume_mapping_list(&l), 0);
	for (struct volume_mapping **p = l; *p; p++)
		listed = listed || strcmp((*p)->name, name) == 0;
	volume_mapping_list_free(l);
	assert_true(listed);
	assert_int_equal(volume_activate(loops[0], name, 0, secret), -EEXIST);
	assert_int_equal(volume_resume(name, 0, secret), -EALREADY);

	write_pattern(name, rd.c);

	/* revoke */
	assert_int_equal(volume_suspend_wipe(name, &rep), 0);
	print_message("  suspend_wipe: %llu us, %d keys invalidated, key zero %d\n",
		      (unsigned long long)rep.suspend_usec, rep.keys_invalidated,
		      rep.table_key_zero);
	print_table(name);
	assert_true(rep.table_key_zero);
	assert_true(rep.suspend_usec > 0);
	assert_int_equal(volume_mapping_info(name, &m), 0);
	assert_true(m.suspended);
	assert_int_equal(m.key, VOLUME_KEY_WIPED);
	assert_string_equal(m.key_desc, "");
	assert_int_equal(keys_matching(uuids[0]), 0);

	/* scan skips the suspended mapping (reading it would hang) but finds the loop device */
	assert_int_equal(volume_scan(&devs), 0);
	for (char **p = devs; *p; p++) {
		found += strcmp(*p, loops[0]) == 0;
		free(*p);
	}
	free(devs);
	assert_int_equal(found, 1);

	/* nor do header reads or probes open it */
	assert_int_equal(volume_probe_blank("/dev/mapper/kmscrypt-test0", NULL), -EBUSY);
	assert_int_equal(volume_test_secret("/dev/mapper/kmscrypt-test0", 0, secret), -EBUSY);

	/* I/O now blocks (the reader is released by the resume below) */
	snprintf(rd.path, sizeof(rd.path), "/dev/mapper/%s", name);
	assert_int_equal(pthread_create(&t, NULL, reader_run, &rd), 0);
	usleep(300 * 1000);
	assert_int_equal(rd.done, 0);

	/* revoking again is a no-op; a wrong secret leaves it revoked */
	assert_int_equal(volume_suspend_wipe(name, &rep), 0);
	assert_int_equal(rep.suspend_usec, 0);
	assert_true(rep.table_key_zero);
	assert_int_equal(volume_resume(name, 0, wrong), -EPERM);
	assert_int_equal(volume_mapping_info(name, &m), 0);
	assert_true(m.suspended);
	assert_int_equal(m.key, VOLUME_KEY_WIPED);
	assert_int_equal(rd.done, 0);

	/* restore: the right key is back (the pattern reads), again by keyring reference */
	assert_int_equal(volume_resume(name, 0, secret), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(rd.done, 1);
	print_table(name);
	assert_int_equal(volume_mapping_info(name, &m), 0);
	assert_false(m.suspended);
	assert_int_equal(m.key, VOLUME_KEY_KEYRING);
	assert_string_equal(m.key_desc, wanted);
	assert_int_equal(keys_matching(uuids[0]), 0);

	assert_int_equal(volume_deactivate(name), 0);
	assert_int_equal(volume_mapping_info(name, &m), -ENOENT);
	assert_int_equal(volume_mapping_find(uuids[0], &m), -ENOENT);
	assert_int_equal(volume_deactivate(name), -ENOENT);
	secret_free(wrong);
}

static void test_wrong_secret(void **state)
{
	struct secret *wrong = test_secret_random();
	struct volume_mapping m;

	REQUIRE_DM();
	assert_int_equal(volume_activate(loops[0], "kmscrypt-test-wrong", 0, wrong), -EPERM);
	assert_int_equal(volume_mapping_info("kmscrypt-test-wrong", &m), -ENOENT);
	assert_int_equal(volume_keyring_count_kmscrypt(), 0);
	assert_int_equal(keys_matching(uuids[0]), 0);
	secret_free(wrong);
}

static void test_deactivate_suspended(void **state)
{
	const char *name = "kmscrypt-test-lock";
	struct volume_wipe_report rep;
	struct volume_mapping m;

	REQUIRE_DM();
	assert_int_equal(volume_activate(loops[1], name, 0, secret), 0);
	assert_int_equal(volume_suspend_wipe(name, &rep), 0);
	assert_int_equal(volume_deactivate(name), 0);
	assert_int_equal(volume_mapping_info(name, &m), -ENOENT);
}

/* Suspended by someone else without a key wipe: suspend_wipe sends the wipe itself. */
static void test_suspended_elsewhere(void **state)
{
	const char *name = "kmscrypt-test-ext";
	struct volume_wipe_report rep;
	struct volume_mapping m;
	struct dm_task *dmt;

	REQUIRE_DM();
	assert_int_equal(volume_activate(loops[1], name, 0, secret), 0);
	dmt = dm_task_create(DM_DEVICE_SUSPEND);
	assert_non_null(dmt);
	assert_true(dm_task_set_name(dmt, name));
	assert_true(dm_task_run(dmt));
	dm_task_destroy(dmt);
	assert_int_equal(volume_mapping_info(name, &m), 0);
	assert_true(m.suspended);
	assert_int_equal(m.key, VOLUME_KEY_KEYRING);

	assert_int_equal(volume_suspend_wipe(name, &rep), 0);
	assert_int_equal(rep.suspend_usec, 0);
	assert_true(rep.table_key_zero);
	assert_int_equal(volume_mapping_info(name, &m), 0);
	assert_int_equal(m.key, VOLUME_KEY_WIPED);
	assert_int_equal(volume_resume(name, 0, secret), 0);
	assert_int_equal(volume_deactivate(name), 0);
}

/* A mapping made with a hex key (keyring off) shows as HEX; our resume brings back a logon key. */
static void test_hex_key_detected(void **state)
{
	const char *name = "kmscrypt-test-hex";
	struct crypt_device *cd = NULL;
	struct volume_wipe_report rep;
	struct volume_mapping m;

	REQUIRE_DM();
	assert_int_equal(crypt_init(&cd, loops[2]), 0);
	assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
	crypt_volume_key_keyring(cd, 0);
	assert_int_equal(
	    crypt_activate_by_passphrase(cd, name, 0, (const char *)secret->buf, secret->len, 0),
	    0);
	crypt_volume_key_keyring(cd, 1);
	crypt_free(cd);
	assert_int_equal(volume_mapping_info(name, &m), 0);
	assert_int_equal(m.key, VOLUME_KEY_HEX);
	assert_string_equal(m.key_desc, "");

	assert_int_equal(volume_suspend_wipe(name, &rep), 0);
	assert_true(rep.table_key_zero);
	assert_int_equal(volume_resume(name, 0, secret), 0);
	assert_int_equal(volume_mapping_info(name, &m), 0);
	assert_int_equal(m.key, VOLUME_KEY_KEYRING);
	assert_int_equal(volume_deactivate(name), 0);
}

static void dm_simple(int type, const char *name, const char *table)
{
	struct dm_task *dmt = dm_task_create(type);

	assert_non_null(dmt);
	assert_true(dm_task_set_name(dmt, name));
	if (table)
		assert_true(dm_task_add_target(dmt, 0, 8, "linear", table));
	assert_true(dm_task_run(dmt));
	dm_task_destroy(dmt);
}

/* Someone else's mapping (here: linear) is not ours to inspect, revoke or remove. */
static void test_foreign_mapping(void **state)
{
	const char *name = "kmscrypt-test-linear";
	struct volume_mapping m, **l = NULL;
	struct volume_wipe_report rep;
	char table[96];

	REQUIRE_DM();
	snprintf(table, sizeof(table), "%s 0", loops[2]);
	dm_simple(DM_DEVICE_CREATE, name, table);
	assert_int_equal(volume_mapping_info(name, &m), -ENODEV);
	assert_int_equal(volume_suspend_wipe(name, &rep), -ENODEV);
	assert_int_equal(volume_resume(name, 0, secret), -ENODEV);
	assert_int_equal(volume_deactivate(name), -ENODEV);
	assert_int_equal(volume_mapping_list(&l), 0);
	for (struct volume_mapping **p = l; *p; p++)
		assert_string_not_equal((*p)->name, name);
	volume_mapping_list_free(l);
	dm_simple(DM_DEVICE_REMOVE, name, NULL);
}

struct activation {
	int i;
	int result;
};

static void *activate_thread(void *userdata)
{
	struct activation *a = userdata;
	char name[32];

	snprintf(name, sizeof(name), "kmscrypt-test-par%d", a->i);
	a->result = volume_activate(loops[a->i], name, 0, secret);
	return NULL;
}

static void test_parallel_activation(void **state)
{
	struct activation a[NVOL];
	pthread_t t[NVOL];
	struct volume_mapping **l = NULL;
	int n = 0;

	REQUIRE_DM();
	for (int i = 0; i < NVOL; i++) {
		a[i] = (struct activation){.i = i};
		assert_int_equal(pthread_create(&t[i], NULL, activate_thread, &a[i]), 0);
	}
	for (int i = 0; i < NVOL; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(a[i].result, 0);
	}
	assert_int_equal(volume_mapping_list(&l), 0);
	for (struct volume_mapping **p = l; *p; p++) {
		assert_int_equal((*p)->key, VOLUME_KEY_KEYRING);
		n += strncmp((*p)->name, "kmscrypt-test-par", 17) == 0;
	}
	volume_mapping_list_free(l);
	assert_int_equal(n, NVOL);
	assert_int_equal(volume_keyring_count_kmscrypt(), 0);
	for (int i = 0; i < NVOL; i++)
		assert_int_equal(keys_matching(uuids[i]), 0);
	for (int i = 0; i < NVOL; i++) {
		char name[32];
		snprintf(name, sizeof(name), "kmscrypt-test-par%d", i);
		assert_int_equal(volume_deactivate(name), 0);
	}
}

static void test_scan(void **state)
{
	char **l = NULL;
	int found = 0;

	REQUIRE_DM();
	assert_int_equal(volume_scan(&l), 0);
	for (char **p = l; *p; p++) {
		for (int i = 0; i < NVOL; i++)
			found += strcmp(*p, loops[i]) == 0;
		free(*p);
	}
	free(l);
	assert_int_equal(found, NVOL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lifecycle),
	    cmocka_unit_test(test_wrong_secret),
	    cmocka_unit_test(test_deactivate_suspended),
	    cmocka_unit_test(test_suspended_elsewhere),
	    cmocka_unit_test(test_hex_key_detected),
	    cmocka_unit_test(test_foreign_mapping),
	    cmocka_unit_test(test_parallel_activation),
	    cmocka_unit_test(test_scan),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
