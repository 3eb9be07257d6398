/* bench/floor.c: the in-process serial libcryptsetup floor of the benchmark (bench/run.sh).
 *
 *   floor open KEYFILE KEYSLOT PREFIX DEVICE...   open DEVICE i as PREFIX<i> (1-based), one
 *                                                 after the other, from one keyslot
 *   floor close MAPPING...                        close each mapping, one after the other
 *   floor relabel PREFIX IMAGE...                 give LUKS2 IMAGE i a new random UUID and the
 *                                                 label PREFIX<i> (the benchmark's set-up: one
 *                                                 process instead of two cryptsetup calls each)
 *
 * One process, no fork or exec per volume: the cheapest way libcryptsetup offers to open N
 * volumes serially, which is what `kmscrypt unlock --all` is compared with. Not installed, not a
 * test: built by bench/run.sh with cc and pkg-config.
 */
#define _GNU_SOURCE
#include <libcryptsetup.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int open_all(const char *keyfile, int keyslot, const char *prefix, char **devs, int n)
{
	char *pass = NULL;
	size_t pass_len = 0;
	struct crypt_device *cd = NULL;
	char name[256];
	int i, r;

	r = crypt_keyfile_device_read(NULL, keyfile, &pass, &pass_len, 0, 0, 0);
	if (r < 0) {
		fprintf(stderr, "floor: cannot read key file %s: %s\n", keyfile, strerror(-r));
		return 1;
	}
	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%s%d", prefix, i + 1);
		r = crypt_init(&cd, devs[i]);
		if (r == 0)
			r = crypt_load(cd, CRYPT_LUKS2, NULL);
		if (r == 0)
			r = crypt_activate_by_passphrase(cd, name, keyslot, pass, pass_len, 0);
		crypt_free(cd);
		cd = NULL;
		if (r < 0) {
			fprintf(stderr, "floor: cannot open %s as %s: %s\n", devs[i], name,
				strerror(-r));
			crypt_safe_free(pass);
			return 1;
		}
	}
	crypt_safe_free(pass);
	return 0;
}

static int close_all(char **names, int n)
{
	struct crypt_device *cd = NULL;
	int i, r;

	for (i = 0; i < n; i++) {
		r = crypt_init_by_name(&cd, names[i]);
		if (r == 0)
			r = crypt_deactivate(cd, names[i]);
		crypt_free(cd);
		cd = NULL;
		if (r < 0) {
			fprintf(stderr, "floor: cannot close %s: %s\n", names[i], strerror(-r));
			return 1;
		}
	}
	return 0;
}

static int relabel_all(const char *prefix, char **images, int n)
{
	struct crypt_device *cd = NULL;
	char label[256];
	int i, r;

	for (i = 0; i < n; i++) {
		snprintf(label, sizeof(label), "%s%d", prefix, i + 1);
		r = crypt_init(&cd, images[i]);
		if (r == 0)
			r = crypt_load(cd, CRYPT_LUKS2, NULL);
		if (r == 0)
			r = crypt_set_uuid(cd, NULL);
		if (r == 0)
			r = crypt_set_label(cd, label, NULL);
		crypt_free(cd);
		cd = NULL;
		if (r < 0) {
			fprintf(stderr, "floor: cannot relabel %s as %s: %s\n", images[i], label,
				strerror(-r));
			return 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 6 && strcmp(argv[1], "open") == 0)
		return open_all(argv[2], atoi(argv[3]), argv[4], argv + 5, argc - 5);
	if (argc >= 3 && strcmp(argv[1], "close") == 0)
		return close_all(argv + 2, argc - 2);
	if (argc >= 4 && strcmp(argv[1], "relabel") == 0)
		return relabel_all(argv[2], argv + 3, argc - 3);
	fprintf(stderr, "usage: floor open KEYFILE KEYSLOT PREFIX DEVICE... | floor close MAPPING... | "
			"floor relabel PREFIX IMAGE...\n");
	return 2;
}
