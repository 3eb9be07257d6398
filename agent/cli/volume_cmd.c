/* SPDX-License-Identifier: MIT */
/* kmscrypt format | bind | unbind | check: LUKS2 header work; no device-mapper needed. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "core/escrow.h"
#include "core/flows.h"
#include "core/vol.h"
#include "codec/token.h"
#include "config/kms_config.h"
#include "kmscrypt/exit.h"
#include "kmscrypt/token.h"
#include "state/state.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/volume.h"

#define AUTH_KEY_MAX (8 * 1024 * 1024) /* cryptsetup's default key file size limit */

/* format's floor: libcryptsetup's default LUKS2 header (16 MiB: two 16 KiB JSON areas and the
 * keyslots area) plus 1 MiB of data, the least a filesystem or a test image can use. */
#define FORMAT_HEADER_BYTES (16ull << 20)
#define FORMAT_DATA_MIN_BYTES (1ull << 20)

static int device_size(const char *device, uint64_t *ret)
{
	_cleanup_close_ int fd = -1;
	struct stat st;

	fd = open(device, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (S_ISREG(st.st_mode)) {
		*ret = (uint64_t)st.st_size;
		return 0;
	}
	return ioctl(fd, BLKGETSIZE64, ret) < 0 ? -errno : 0;
}

static int device_exists(const char *device)
{
	struct stat st;

	if (stat(device, &st) < 0)
		return log_error_errno(errno, "Cannot use '%s': %m", device);
	if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
		return log_error_errno(EINVAL, "'%s' is neither a block device nor an image file.",
				       device);
	return 0;
}

static int uuid_random(char buf[40])
{
	uint8_t b[16];
	struct secret *s;
	int r;

	r = secret_random(sizeof(b), &s);
	if (r < 0)
		return r;
	memcpy(b, s->buf, sizeof(b));
	secret_free(s);
	b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
	b[8] = (b[8] & 0x3f) | 0x80; /* RFC 4122 variant */
	snprintf(buf, 40,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
		 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15]);
	return 0;
}

/* A printable recovery passphrase: 256 random bits as 64 modhex characters in groups of 8
 * (the alphabet systemd-cryptenroll uses, unambiguous on any keyboard layout). */
static int recovery_generate(struct secret **ret)
{
	static const char modhex[] = "cbdefghijklnrtuv";
	_cleanup_secret_ struct secret *rnd = NULL, *out = NULL;
	int r;

	r = secret_random(32, &rnd);
	if (r < 0)
		return r;
	r = secret_new(80, &out);
	if (r < 0)
		return r;
	for (size_t i = 0; i < 32; i++) {
		if (i > 0 && i % 4 == 0)
			out->buf[out->len++] = '-';
		out->buf[out->len++] = (uint8_t)modhex[rnd->buf[i] >> 4];
		out->buf[out->len++] = (uint8_t)modhex[rnd->buf[i] & 15];
	}
	*ret = TAKE_PTR(out);
	return 0;
}

/* The token of a new binding (core_wrap_token(), core/bind.c); logs on failure. */
static int wrap_token(struct kms_handle *h, const char *uuid, int keyslot,
		      const struct secret *secret, char **ret_json)
{
	char why[768];
	int r = core_wrap_token(&h, 1, 1, false, uuid, keyslot, secret, ret_json, why, sizeof(why));

	return r < 0 ? log_error_errno(r, "%s.", why) : r;
}

/* A version-2 token (include/kmscrypt/token.h) for @n KMSs: the secret wrapped by each (@k 1), or
 * split into @n Shamir shares, k needed, share i wrapped by KMS i.  Logs on failure. */
static int wrap_token_multi(struct kms_handle *hs, size_t n, unsigned k, const char *uuid,
			    int keyslot, const struct secret *secret, char **ret_json)
{
	struct kms_handle *hp[KMSCRYPT_TOKEN_MAX_WRAPS];
	char why[768];
	int r;

	for (size_t i = 0; i < n && i < KMSCRYPT_TOKEN_MAX_WRAPS; i++)
		hp[i] = &hs[i];
	r = core_wrap_token(hp, n, k, true, uuid, keyslot, secret, ret_json, why, sizeof(why));
	return r < 0 ? log_error_errno(r, "%s.", why) : r;
}

/* --kms given more than once (at most KMSCRYPT_TOKEN_MAX_WRAPS, each once). */
static int add_kms_name(const char **names, size_t *n, const char *name)
{
	if (*n >= KMSCRYPT_TOKEN_MAX_WRAPS)
		return log_error_errno(EINVAL, "At most %d --kms options.", KMSCRYPT_TOKEN_MAX_WRAPS);
	for (size_t i = 0; i < *n; i++)
		if (strcmp(names[i], name) == 0)
			return log_error_errno(EINVAL, "--kms '%s' is given twice; each KMS of a "
						       "binding must be a different configuration.",
					       name);
	names[(*n)++] = name;
	return 0;
}

/* --threshold K against the number of --kms: 0 or -EINVAL (logged). */
static int parse_threshold(const char *arg, size_t n, unsigned *ret)
{
	char *end;
	unsigned long k;

	if (!arg) {
		*ret = 1;
		return 0;
	}
	errno = 0;
	k = strtoul(arg, &end, 10);
	if (errno || *end || end == arg || k < 1 || k > n)
		return log_error_errno(EINVAL, "--threshold must be a number from 1 to the number of "
					       "--kms (%zu).",
				       n);
	if (n == 1)
		return log_error_errno(EINVAL, "--threshold needs two or more --kms.");
	*ret = (unsigned)k;
	return 0;
}

/* "KMS 'a' (local)" or "KMSs 'a', 'b', 'c' (2 of 3 needed)" */
static void binding_desc(const struct kms_handle *hs, size_t n, unsigned k, char *buf, size_t len)
{
	size_t o = 0;

	if (n == 1) {
		snprintf(buf, len, "KMS '%s' (%s)", hs[0].cfg.name, hs[0].cfg.provider->name);
		return;
	}
	o += (size_t)snprintf(buf, len, "KMSs");
	for (size_t i = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s '%s' (%s)", i ? "," : "", hs[i].cfg.name,
				      hs[i].cfg.provider->name);
	if (o < len) {
		if (k == 1)
			snprintf(buf + o, len - o, ", any one of which opens it");
		else
			snprintf(buf + o, len - o, ", %u of which open it", k);
	}
}

/* --json of bind/format with several KMSs: "threshold" and "kms_list". */
static void json_binding(json_object *o, const char *const *names, size_t n, unsigned k)
{
	json_object *arr;

	if (n < 2)
		return;
	arr = json_object_new_array();
	for (size_t i = 0; i < n; i++)
		json_object_array_add(arr, json_object_new_string(names[i]));
	json_object_object_add(o, "threshold", json_object_new_int((int)k));
	json_object_object_add(o, "kms_list", arr);
}

static void record_binding(const struct cli *c, const char *action, const char *uuid,
			   const char *device, const char *const *names, size_t n_names,
			   const char *result)
{
	struct volume_state s = {};
	const char *kms = names[0];
	char all[KMSCRYPT_TOKEN_MAX_WRAPS * 66] = "";

	for (size_t i = 0, o = 0; i < n_names && o < sizeof(all); i++)
		o += (size_t)snprintf(all + o, sizeof(all) - o, "%s%s", i ? "," : "", names[i]);
	if (strcmp(result, "ok") == 0) {
		for (size_t i = 0; i < n_names; i++) {
			int r = usage_record(c->core.state_dir, names[i], uuid, device);
			if (r < 0)
				log_warning_errno(r, "Cannot record that '%s' uses KMS '%s', "
						     "ignoring: %m",
						  device, names[i]);
		}
		if (state_load(c->core.state_dir, uuid, &s) < 0)
			snprintf(s.uuid, sizeof(s.uuid), "%s", uuid);
		free(s.device);
		free(s.kms);
		s.device = strdup(device);
		s.kms = strdup(kms);
		s.revoked = false;
		if (state_save(c->core.state_dir, &s) < 0)
			log_warning("Cannot save state for %s, ignoring.", uuid);
		volume_state_done(&s);
	}
	/* the binding made, as the header now holds it (every KMS, key version and the threshold,
	 * as rotation records name it: core_binding_json()); without one, the names (configuration
	 * names are [A-Za-z0-9._-]: no JSON escaping needed) */
	char nb[sizeof(all) + 32];
	struct volume_header hdr = {};
	struct kmscrypt_token t = {};
	json_object *b = NULL;

	snprintf(nb, sizeof(nb), "{\"kms\":\"%s\"}", all);
	if (strcmp(result, "ok") == 0 && core_read_volume(device, &hdr, &t, false) == 0 &&
	    strcmp(hdr.uuid, uuid) == 0)
		b = core_binding_json(&t);
	(void)audit_append(c->core.state_dir,
			   &(struct audit_record){.action = action,
						  .uuid = uuid,
						  .device = device,
						  .kms = all,
						  .result = result,
						  .duration_ms = -1,
						  .new_binding = b ? json_object_to_json_string(b) : nb});
	json_object_put(b);
	token_done(&t);
	volume_header_done(&hdr);
}

int cmd_format(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"kms", required_argument, NULL, 'k'},
		{"label", required_argument, NULL, 'l'},
		{"recovery-key-file", required_argument, NULL, 'R'},
		{"recovery-key-escrow", required_argument, NULL, 'E'},
		{"no-recovery-key", no_argument, NULL, 'N'},
		{"force", no_argument, NULL, 'f'},
		{"sector-size", required_argument, NULL, 's'},
		{"threshold", required_argument, NULL, 't'},
		{}};
	const char *kms = NULL, *label = NULL, *recovery_path = NULL, *device, *threshold_arg = NULL;
	const char *escrow_kms = NULL; /* --recovery-key-escrow: the file holds the wrapped key */
	struct kms_handle escrow_h = {};
	_cleanup_free_ char *envelope = NULL;
	const char *names[KMSCRYPT_TOKEN_MAX_WRAPS];
	size_t n_kms = 0;
	unsigned threshold = 1;
	char desc[KMSCRYPT_TOKEN_MAX_WRAPS * 80];
	bool force = false, recovery_written = false, no_recovery = false;
	unsigned long sector = 0;
	uint64_t size = 0;
	char mapping[128];
	struct kms_handle hs[KMSCRYPT_TOKEN_MAX_WRAPS] = {};
	_cleanup_secret_ struct secret *secret = NULL, *recovery = NULL;
	_cleanup_free_ char *token = NULL, *what = NULL;
	struct volume_header old = {};
	struct volume_mapping m = {};
	char uuid[40];
	int opt, r, lock = -1;

	optind = 1;
	while ((opt = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
		char *end;
		switch (opt) {
		case 'k':
			if (add_kms_name(names, &n_kms, optarg) < 0)
				return KMSCRYPT_EXIT_USAGE;
			kms = names[0];
			break;
		case 't':
			threshold_arg = optarg;
			break;
		case 'l':
			label = optarg;
			break;
		case 'R':
			recovery_path = optarg;
			break;
		case 'E':
			escrow_kms = optarg;
			break;
		case 'N':
			no_recovery = true;
			break;
		case 'f':
			force = true;
			break;
		case 's':
			errno = 0;
			sector = strtoul(optarg, &end, 10);
			if (errno || *end || (sector != 512 && sector != 1024 && sector != 2048 &&
					      sector != 4096))
				return log_error_errno(EINVAL, "--sector-size must be 512, 1024, "
							       "2048 or 4096."),
				       KMSCRYPT_EXIT_USAGE;
			break;
		default:
			return cli_option_error("format", opt, argv);
		}
	}
	if (optind + 1 != argc || !kms)
		return log_error_errno(EINVAL, "Usage: kmscrypt format DEVICE --kms NAME [--kms NAME2 "
					       "... [--threshold K]] [--label L] "
					       "[--recovery-key-file F [--recovery-key-escrow NAME] "
					       "| --no-recovery-key] [--force]"),
		       KMSCRYPT_EXIT_USAGE;
	if (parse_threshold(threshold_arg, n_kms, &threshold) < 0)
		return KMSCRYPT_EXIT_USAGE;
	if (no_recovery && recovery_path)
		return log_error_errno(EINVAL, "--recovery-key-file and --no-recovery-key exclude "
					       "each other."),
		       KMSCRYPT_EXIT_USAGE;
	if (escrow_kms && (no_recovery || !recovery_path))
		return log_error_errno(EINVAL, "--recovery-key-escrow NAME needs "
					       "--recovery-key-file F (where the wrapped recovery "
					       "key goes) and no --no-recovery-key."),
		       KMSCRYPT_EXIT_USAGE;
	for (size_t i = 0; escrow_kms && i < n_kms; i++)
		if (strcmp(names[i], escrow_kms) == 0)
			return log_error_errno(EINVAL, "--recovery-key-escrow '%s' is also a --kms "
						       "of the volume: the escrow is the way back "
						       "when those are gone, so name another "
						       "configuration.",
					       escrow_kms),
			       KMSCRYPT_EXIT_USAGE;
	device = argv[optind];
	_cleanup_free_ char *abs = realpath(device, NULL);
	if (abs)
		device = abs;
	if (label && (strlen(label) > 47 || strchr(label, '\n')))
		return log_error_errno(EINVAL, "--label must be at most 47 characters."),
		       KMSCRYPT_EXIT_USAGE;
	cli_json_target(c, device, NULL); /* --json: a failure from here on is this volume's item */
	r = device_exists(device);
	if (r < 0)
		return r == -EINVAL ? KMSCRYPT_EXIT_USAGE : cli_exit_code(r);
	r = device_size(device, &size);
	if (r < 0)
		return log_error_errno(r, "Cannot read the size of '%s': %m", device),
		       cli_exit_code(r);
	if (size < FORMAT_HEADER_BYTES + FORMAT_DATA_MIN_BYTES)
		return log_error_errno(ENOSPC,
				       "'%s' holds %llu bytes: too small for a LUKS2 volume, which "
				       "needs 16 MiB of header and at least 1 MiB of data (17 MiB). "
				       "Nothing was written.",
				       device, (unsigned long long)size),
		       cli_exit_code(-ENOSPC);

	/* Ask (format --force over a signature) before taking the state lock: a person reading
	 * the question must not hold up boot unlocks.  What was seen is checked again below. */
	if (volume_read_header(device, &old) == 0 && volume_mapping_find(old.uuid, &m) == 0) {
		r = log_error_errno(EBUSY,
				    "'%s' (UUID %s) is open as '%s'. Lock it first; format never "
				    "touches an open volume.",
				    device, old.uuid, m.name);
		goto out;
	}
	volume_header_done(&old);
	r = volume_probe_blank(device, &what);
	if (r == -EEXIST && !force) {
		log_error("'%s' carries %s. Refusing to format it: that would destroy it. Pass "
			  "--force if you really mean to.",
			  device, what ? what : "a signature");
		goto out;
	}
	if (r == -EEXIST) {
		_cleanup_free_ char *warning = NULL;
		if (asprintf(&warning, "This will overwrite %s on '%s' irrevocably.",
			     what ? what : "the signature", device) < 0) {
			r = -ENOMEM;
			goto out;
		}
		r = cli_confirm(c, "format --force", warning);
		if (r < 0)
			goto out;
	} else if (r < 0) {
		log_error_errno(r, "Cannot probe '%s': %m", device);
		goto out;
	}
	lock = core_lock(&c->core);
	if (lock < 0) {
		r = lock;
		goto out;
	}

	/* Refuse to destroy anything, and never an open volume even with --force. */
	if (volume_read_header(device, &old) == 0) {
		if (volume_mapping_find(old.uuid, &m) == 0) {
			r = log_error_errno(EBUSY,
					    "'%s' (UUID %s) is open as '%s'. Lock it first; format "
					    "never touches an open volume.",
					    device, old.uuid, m.name);
			goto out;
		}
	}
	if (recovery_path && access(recovery_path, F_OK) == 0) {
		r = log_error_errno(EEXIST,
				    "Recovery key file '%s' already exists; choose a new path (it is "
				    "never overwritten).",
				    recovery_path);
		goto out;
	}
	for (size_t i = 0; i < n_kms; i++) {
		r = kms_handle_open(&c->core, names[i], &hs[i]);
		if (r < 0)
			goto out;
	}
	if (escrow_kms) {
		r = kms_handle_open(&c->core, escrow_kms, &escrow_h);
		if (r < 0)
			goto out;
	}
	binding_desc(hs, n_kms, threshold, desc, sizeof(desc));

	/* Wrap before writing anything: a KMS failure leaves the device untouched. */
	r = uuid_random(uuid);
	if (r < 0)
		goto out;
	r = secret_random(KMSCRYPT_SECRET_BYTES, &secret);
	if (r < 0)
		goto out;
	if (n_kms == 1)
		r = wrap_token(&hs[0], uuid, 0, secret, &token);
	else
		r = wrap_token_multi(hs, n_kms, threshold, uuid, 0, secret, &token);
	if (r < 0)
		goto out;
	if (!no_recovery) {
		r = recovery_generate(&recovery);
		if (r < 0)
			goto out;
	}
	if (escrow_kms) {
		/* the file gets the key wrapped by the escrow configuration (codec/escrow.h) */
		r = core_escrow_seal(&escrow_h, uuid, device, label, recovery, &envelope);
		if (r < 0)
			goto out;
	}
	if (recovery_path) {
		/* Written first, so a volume never exists whose recovery key was lost. */
		const void *data = envelope ? (const void *)envelope : (const void *)recovery->buf;
		size_t len = envelope ? strlen(envelope) : recovery->len;
		_cleanup_close_ int fd =
			open(recovery_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
		if (fd < 0 || write(fd, data, len) != (ssize_t)len || fsync(fd) < 0) {
			r = log_error_errno(errno, "Cannot write recovery key file '%s': %m",
					    recovery_path);
			if (fd >= 0)
				(void)unlink(recovery_path);
			goto out;
		}
		recovery_written = true;
	}
	r = volume_format(device, &(struct volume_format_params){
					  .uuid = uuid,
					  .label = label,
					  .keyslot = 0,
					  .secret = secret,
					  .recovery = recovery,
					  .token_json = token,
					  .sector_size = (uint32_t)sector,
				  });
	if (r < 0) {
		log_error_errno(r, "Cannot format '%s': %m", device);
		if (recovery_written)
			(void)unlink(recovery_path);
		record_binding(c, "format", uuid, device, names, n_kms, "error");
		goto out;
	}
	record_binding(c, "format", uuid, device, names, n_kms, "ok");
	if (escrow_kms) {
		/* the escrow needs its configuration while the volume lives: kms delete refuses */
		r = usage_record(c->core.state_dir, escrow_kms, uuid, device);
		if (r < 0)
			log_warning_errno(r, "Cannot record that '%s' uses KMS '%s' for its "
					     "recovery key escrow, ignoring: %m",
					  device, escrow_kms);
		(void)audit_append(c->core.state_dir,
				   &(struct audit_record){.action = "recovery-escrow",
							  .uuid = uuid,
							  .device = device,
							  .kms = escrow_kms,
							  .result = "ok",
							  .duration_ms = -1});
		r = 0;
	}
	core_default_mapping(label, uuid, mapping, sizeof(mapping));
	if (label && strcmp(label, mapping) != 0)
		log_notice("Label '%s' cannot be a device-mapper name; 'kmscrypt unlock' will open "
			   "'%s' as /dev/mapper/%s (choose another with --name).",
			   label, device, mapping);
	if (c->json) {
		json_object *o = cli_json_volume(device, uuid, 0, NULL);
		json_object_object_add(o, "kms", json_object_new_string(kms));
		json_object_object_add(o, "provider", json_object_new_string(hs[0].cfg.provider->name));
		json_object_object_add(o, "keyslot", json_object_new_int(0));
		json_binding(o, names, n_kms, threshold);
		if (recovery)
			json_object_object_add(o, "recovery_keyslot", json_object_new_int(1));
		if (recovery_path)
			json_object_object_add(o, "recovery_key_file",
					       json_object_new_string(recovery_path));
		if (escrow_kms)
			json_object_object_add(o, "recovery_key_escrow",
					       json_object_new_string(escrow_kms));
		/* the only copy of the recovery key: printed from locked memory (cli.h) */
		if (recovery && !recovery_path)
			json_object_object_add(o, "recovery_key",
					       json_object_new_string("@recovery_key@"));
		json_object *doc = json_object_new_object(), *arr = json_object_new_array();
		json_object_array_add(arr, o);
		json_object_object_add(doc, "volumes", arr);
		if (recovery && !recovery_path)
			cli_print_json_secret(doc, "@recovery_key@", recovery);
		else
			cli_print_json(doc);
	} else if (!c->quiet) {
		printf("Formatted '%s' as LUKS2 volume %s, bound to %s in keyslot 0.\n", device, uuid,
		       desc);
		if (recovery_path && escrow_kms)
			printf("Recovery key (keyslot 1) wrapped by KMS '%s' into '%s': keep a copy "
			       "off this host; 'kmscrypt recovery-key show' unwraps it.\n",
			       escrow_kms, recovery_path);
		else if (recovery_path)
			printf("Recovery key (keyslot 1) written to '%s': store it offline.\n",
			       recovery_path);
	}
	if (recovery && !recovery_path && !c->json) {
		/* The only copy, so printed even with -q: stdout is where the caller asked for it. */
		printf("Recovery key (keyslot 1):\n\n    %.*s\n\n", (int)recovery->len,
		       (const char *)recovery->buf);
	}
	if (recovery && !recovery_path) {
		fflush(stdout);
		if (ferror(stdout))
			log_error("Could not print the recovery key of '%s'; add a new one with "
				  "'cryptsetup luksAddKey' while the KMS works.",
				  device);
		else
			log_warning("Store the recovery key of '%s' (UUID %s) offline now: it is shown "
				    "only this once and opens the volume without the KMS (see "
				    "RECOVERY in kmscrypt(8)).",
				    device, uuid);
	}
	if (no_recovery)
		log_warning("'%s' has no recovery key (--no-recovery-key): if KMS '%s' or its key is "
			    "lost, so is the data. Add one with 'cryptsetup luksAddKey'.",
			    device, kms);
out:
	if (lock >= 0)
		close(lock);
	volume_header_done(&old);
	for (size_t i = 0; i < n_kms; i++)
		kms_handle_done(&hs[i]);
	kms_handle_done(&escrow_h);
	return cli_exit_code(r);
}

int cmd_bind(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {{"kms", required_argument, NULL, 'k'},
					     {"key-file", required_argument, NULL, 'K'},
					     {"threshold", required_argument, NULL, 't'},
					     {}};
	const char *kms = NULL, *keyfile = NULL, *device, *threshold_arg = NULL;
	const char *names[KMSCRYPT_TOKEN_MAX_WRAPS];
	size_t n_kms = 0;
	unsigned threshold = 1;
	char desc[KMSCRYPT_TOKEN_MAX_WRAPS * 80];
	struct volume_header hdr = {};
	struct kms_handle hs[KMSCRYPT_TOKEN_MAX_WRAPS] = {};
	_cleanup_secret_ struct secret *auth = NULL, *secret = NULL;
	_cleanup_free_ char *token = NULL;
	int opt, r, lock = -1, keyslot;

	optind = 1;
	while ((opt = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
		if (opt == 'k') {
			if (add_kms_name(names, &n_kms, optarg) < 0)
				return KMSCRYPT_EXIT_USAGE;
			kms = names[0];
		} else if (opt == 't')
			threshold_arg = optarg;
		else if (opt == 'K')
			keyfile = optarg;
		else
			return cli_option_error("bind", opt, argv);
	}
	if (optind + 1 != argc || !kms || !keyfile)
		return log_error_errno(EINVAL, "Usage: kmscrypt bind DEVICE --kms NAME --key-file "
					       "FILE [--kms NAME2 ... [--threshold K]] (an existing "
					       "passphrase or key file; '-' reads stdin)"),
		       KMSCRYPT_EXIT_USAGE;
	if (parse_threshold(threshold_arg, n_kms, &threshold) < 0)
		return KMSCRYPT_EXIT_USAGE;
	device = argv[optind];
	_cleanup_free_ char *abs = realpath(device, NULL);
	if (abs)
		device = abs;
	cli_json_target(c, device, NULL); /* --json: a failure from here on is this volume's item */
	r = device_exists(device);
	if (r < 0)
		return cli_exit_code(r);
	lock = core_lock(&c->core);
	if (lock < 0)
		return cli_exit_code(lock);
	r = volume_read_header(device, &hdr);
	if (r < 0) {
		log_error_errno(r, "'%s' is not a LUKS2 volume (%m). 'kmscrypt bind' adds kmscrypt "
				   "to an existing LUKS2 volume; use 'kmscrypt format' for a new one.",
				device);
		r = r == -EINVAL ? -ENODEV : r;
		goto out;
	}
	cli_json_target(c, device, hdr.uuid);
	{
		/* a bind or rotate-secret killed half-way: finish or undo it first (core/rotate.c) */
		char why[512];
		r = core_pending_cleanup(&c->core, device, hdr.uuid, why, sizeof(why));
		if (r < 0) {
			log_error("Cannot bind '%s' (UUID %s): %s.", device, hdr.uuid, why);
			goto out;
		}
		if (r > 0) {
			volume_header_done(&hdr);
			r = volume_read_header(device, &hdr);
			if (r < 0)
				goto out;
		}
	}
	if (hdr.token_id >= 0) {
		r = log_error_errno(EEXIST,
				    "'%s' (UUID %s) is already bound to kmscrypt (token %d). Unbind it "
				    "first to bind it to another KMS.",
				    device, hdr.uuid, hdr.token_id);
		goto out;
	}
	/* Key files are used verbatim, as cryptsetup --key-file does. */
	r = read_file_secret(keyfile, AUTH_KEY_MAX, 0, &auth);
	if (r < 0) {
		log_error_errno(r, "Cannot read key file '%s': %m", keyfile);
		goto out;
	}
	for (size_t i = 0; i < n_kms; i++) {
		r = kms_handle_open(&c->core, names[i], &hs[i]);
		if (r < 0)
			goto out;
	}
	binding_desc(hs, n_kms, threshold, desc, sizeof(desc));
	r = volume_free_keyslot(device, &keyslot);
	if (r < 0) {
		log_error_errno(r, "No free keyslot on '%s': %m", device);
		goto out;
	}
	r = secret_random(KMSCRYPT_SECRET_BYTES, &secret);
	if (r < 0)
		goto out;
	if (n_kms == 1)
		r = wrap_token(&hs[0], hdr.uuid, keyslot, secret, &token);
	else
		r = wrap_token_multi(hs, n_kms, threshold, hdr.uuid, keyslot, secret, &token);
	if (r < 0)
		goto out;
	r = core_bind_marked(&c->core, device, auth, keyslot, secret, token);
	if (r == -EPERM) {
		log_error("The key file '%s' opens no keyslot of '%s'. Nothing was changed.", keyfile,
			  device);
		goto out;
	}
	if (r < 0) {
		log_error_errno(r, "Cannot bind '%s': %m. The header was left as it was.", device);
		goto out;
	}
	record_binding(c, "bind", hdr.uuid, device, names, n_kms, "ok");
	if (!c->quiet && !c->json && n_kms == 1)
		printf("Bound '%s' (UUID %s) to KMS '%s' in keyslot %d.\n", device, hdr.uuid, kms,
		       keyslot);
	else if (!c->quiet && !c->json)
		printf("Bound '%s' (UUID %s) to %s, in keyslot %d.\n", device, hdr.uuid, desc,
		       keyslot);
	else if (c->json) {
		json_object *o = cli_json_volume(device, hdr.uuid, 0, NULL);
		json_object_object_add(o, "kms", json_object_new_string(kms));
		json_object_object_add(o, "provider", json_object_new_string(hs[0].cfg.provider->name));
		json_object_object_add(o, "keyslot", json_object_new_int(keyslot));
		json_binding(o, names, n_kms, threshold);
		cli_print_volume(o);
	}
out:
	if (lock >= 0)
		close(lock);
	volume_header_done(&hdr);
	for (size_t i = 0; i < n_kms; i++)
		kms_handle_done(&hs[i]);
	return cli_exit_code(r);
}

int cmd_unbind(struct cli *c, int argc, char **argv)
{
	struct volume_header hdr = {};
	struct kmscrypt_token t = {};
	int r, lock = -1, left = 0;

	if (cli_reject_options("unbind", argc, argv) < 0)
		return KMSCRYPT_EXIT_USAGE;
	if (argc != 2 || argv[1][0] == '-')
		return log_error_errno(EINVAL, "Usage: kmscrypt unbind DEVICE"), KMSCRYPT_EXIT_USAGE;
	cli_json_target(c, argv[1], NULL); /* --json: a failure from here on is this volume's item */
	r = core_read_volume(argv[1], &hdr, &t, true);
	if (r < 0 && r != -EBADMSG)
		goto out;
	cli_json_target(c, argv[1], hdr.uuid);
	/* Always asked: unbind removes the KMS way to the data, and LUKS2 does not record whether
	 * a keyslot left is a recovery key someone kept or a passphrase long forgotten. */
	r = volume_unbind_keyslots_left(argv[1], &left);
	if (r == 0 && left > 0) {
		_cleanup_free_ char *warning = NULL;
		if (asprintf(&warning,
			     "This removes the kmscrypt keyslot of '%s' (UUID %s): afterwards only "
			     "the passphrase or recovery key of its %d other keyslot%s opens it.",
			     argv[1], hdr.uuid, left, left == 1 ? "" : "s") < 0) {
			r = -ENOMEM;
			goto out;
		}
		r = cli_confirm(c, "unbind", warning);
		if (r < 0)
			goto out;
	}
	lock = core_lock(&c->core);
	if (lock < 0) {
		r = lock;
		goto out;
	}
	r = volume_unbind(argv[1]);
	if (r == -EPERM) {
		log_error("Refusing to unbind '%s': its kmscrypt keyslot is the only one, and removing "
			  "it would make the volume unopenable. Add a passphrase first "
			  "(cryptsetup luksAddKey).",
			  argv[1]);
		goto out;
	}
	if (r < 0) {
		log_error_errno(r, "Cannot unbind '%s': %m", argv[1]);
		goto out;
	}
	/* an interrupted rotation may have left a second kmscrypt token: it goes too */
	for (int i = 0; i < 32 && volume_unbind(argv[1]) == 0; i++)
		;
	json_object *ob = json_object_new_object();
	json_object_object_add(ob, "kms", json_str_or_null(t.kms));
	(void)audit_append(c->core.state_dir, &(struct audit_record){.action = "unbind",
								 .uuid = hdr.uuid,
								 .device = argv[1],
								 .kms = t.kms,
								 .result = "ok",
								 .duration_ms = -1,
								 .old_binding = json_object_to_json_string(ob)});
	json_object_put(ob);
	if (c->json) {
		json_object *o = cli_json_volume(argv[1], hdr.uuid, 0, NULL);
		json_object_object_add(o, "kms", json_str_or_null(t.kms));
		json_object_object_add(o, "result", json_object_new_string("unbound"));
		cli_print_volume(o);
	} else if (!c->quiet) {
		printf("Removed the kmscrypt token and its keyslot from '%s' (UUID %s). KMS '%s' "
		       "still records the volume.\n",
		       argv[1], hdr.uuid, t.kms ? t.kms : "?");
	}
out:
	if (lock >= 0)
		close(lock);
	token_done(&t);
	volume_header_done(&hdr);
	return cli_exit_code(r);
}

/* check --json of a multi-KMS volume: the binding and each KMS's answer. */
static void check_json_answers(const struct vol *v, json_object *o)
{
	json_object *arr;
	unsigned ok;

	if (v->tok.n_wraps < 2)
		return;
	arr = json_object_new_array();
	ok = v->answers ? core_answers_ok(&v->tok, v->answers) : 0;
	json_object_object_add(o, "threshold", json_object_new_int((int)v->tok.threshold));
	for (size_t i = 0; i < v->tok.n_wraps; i++) {
		json_object *a = json_object_new_object();
		const struct core_wrap_answer *an = v->answers ? &v->answers[i] : NULL;
		const char *res = !an || an->r == 1 ? "not-asked"
				  : an->r == 0	    ? "answered"
						    : cli_exit_name(cli_exit_code(an->r));
		char desc[512] = "";
		if (an && an->r < 0)
			kms_error_describe(&an->err, desc, sizeof(desc));
		json_object_object_add(a, "kms", json_object_new_string(v->tok.wraps[i].kms));
		json_object_object_add(a, "provider",
				       json_object_new_string(v->tok.wraps[i].provider));
		json_object_object_add(a, "result", json_object_new_string(res));
		json_object_object_add(a, "message", desc[0] ? json_object_new_string(desc) : NULL);
		json_object_array_add(arr, a);
	}
	json_object_object_add(o, "kms_answers", arr);
	json_object_object_add(o, "kms_spare",
			       json_object_new_int(ok >= v->tok.threshold
							   ? (int)(ok - v->tok.threshold)
							   : -1));
}

static int check_one(const struct cli *c, struct kms_set *hs, const char *device,
		     json_object *arr)
{
	struct vol v = {};
	struct kms_handle *h;
	struct kms_error err = {};
	_cleanup_secret_ struct secret *secret = NULL;
	char buf[512];
	double t0 = now_ms();
	unsigned errors = log_error_count();
	bool audit = false;
	int r;

	r = vol_from_device(&c->core, device, &v, true);
	if (r < 0)
		goto out;
	{
		char pend[512];
		if (core_reencrypt_pending(&v, pend, sizeof(pend)))
			log_warning("%s", pend);
	}
	/* A revoked volume is not unwrapped, not even to test it: restore is the way back. */
	if (vol_refusal(&c->core, &v, v.msg, sizeof(v.msg))) {
		r = v.state_r < 0 && v.state_r != -ENOENT ? -EBADMSG : -EALREADY;
		log_error("%s", v.msg);
		goto out;
	}
	if (v.tok.n_wraps > 1) {
		/* several KMSs: every one is asked, and each answer reported */
		audit = true;
		r = core_unwrap(&c->core, hs, &v, "check", &secret, NULL);
		if (r < 0) {
			log_error("%s", v.msg);
			goto out;
		}
		goto test;
	}
	h = kms_set_get(&c->core, hs, v.tok.kms, &r);
	if (!h && core_unwrap_fallback(&c->core, hs, &v, &secret) == 0)
		h = kms_set_get(&c->core, hs, v.tok.kms, &r); /* another token's configuration */
	if (!h) {
		/* logged for the first volume bound to it only */
		snprintf(v.msg, sizeof(v.msg),
			 "Cannot check '%s' (UUID %s): KMS configuration '%s' cannot be used (see "
			 "the error logged for it).",
			 device, v.hdr.uuid, v.tok.kms);
		goto out;
	}
	audit = true; /* a KMS round trip with the volume's secret */
	r = kms_handle_unwrap(h, v.hdr.uuid, &v.tok, &secret, &err);
	if (r < 0 && core_unwrap_fallback(&c->core, hs, &v, &secret) == 0)
		r = 0; /* another kmscrypt token opened it (a rotation was interrupted) */
	if (r < 0) {
		kms_error_describe(&err, buf, sizeof(buf));
		log_error_errno(r, "Cannot unwrap the secret of '%s' (UUID %s) through KMS '%s': %s; "
				   "%s.",
				device, v.hdr.uuid, v.tok.kms, buf, core_hint_for_error(r, &err));
		snprintf(v.msg, sizeof(v.msg), "%s", buf);
		goto out;
	}
test:
	r = volume_test_secret(device, v.tok.keyslot, secret);
	if (r < 0) {
		snprintf(v.msg, sizeof(v.msg),
			 "The unwrapped secret does not open keyslot %d of '%s' (UUID %s): the token "
			 "does not match its keyslot. Open the volume with its recovery key and "
			 "re-bind it.",
			 v.tok.keyslot, device, v.hdr.uuid);
		log_error_errno(r == -EPERM ? EBADMSG : r, "%s", v.msg);
		r = r == -EPERM ? -EBADMSG : r;
		goto out;
	}
out:
	v.r = r;
	v.ms = now_ms() - t0;
	if (audit)
		vol_audit(&c->core, &v, "check", NULL);
	if (c->json) {
		/* this volume's own error: the last one logged since it began, else its message */
		const char *msg = r == 0 ? NULL
				  : log_error_count() != errors ? log_last_error()
								 : v.msg;
		json_object *o = cli_json_volume(device, v.hdr.uuid, cli_exit_code(r), msg);
		if (v.has_tok) {
			json_object_object_add(o, "kms", json_object_new_string(v.tok.kms));
			json_object_object_add(o, "provider", json_object_new_string(v.tok.provider));
			json_object_object_add(o, "key_id", json_object_new_string(v.tok.key_id));
			json_object_object_add(o, "keyslot", json_object_new_int(v.tok.keyslot));
			json_object_object_add(o, "revoked", json_object_new_boolean(vol_revoked(&v)));
			check_json_answers(&v, o);
		}
		json_object_object_add(o, "ok", json_object_new_boolean(r == 0));
		json_object_object_add(o, "result",
				       json_object_new_string(cli_exit_name(cli_exit_code(r))));
		json_object_object_add(o, "duration_ms", json_ms(v.ms));
		json_object_array_add(arr, o);
	} else if (r == 0 && !c->quiet && v.answers) {
		char buf2[600];
		unsigned ok = core_answers_ok(&v.tok, v.answers);
		core_answers_describe(&v.tok, v.answers, buf2, sizeof(buf2));
		printf("'%s' (UUID %s): %u of its %zu KMSs answered (%u needed) and the secret opens "
		       "keyslot %d (%.0f ms); %u more may fail before it cannot open: %s.\n",
		       device, v.hdr.uuid, ok, v.tok.n_wraps, v.tok.threshold, v.tok.keyslot, v.ms,
		       ok - v.tok.threshold, buf2);
	} else if (r == 0 && !c->quiet) {
		printf("'%s' (UUID %s): KMS '%s' unwrapped its secret and it opens keyslot %d "
		       "(%.0f ms).\n",
		       device, v.hdr.uuid, v.tok.kms, v.tok.keyslot, v.ms);
	}
	vol_done(&v);
	return r;
}

/* kmscrypt check DEVICE...: several devices are checked in one run (one KMS session each). */
int cmd_check(struct cli *c, int argc, char **argv)
{
	struct kms_set hs = {};
	json_object *arr = NULL;
	int r, first = 0;

	if (cli_reject_options("check", argc, argv) < 0)
		return KMSCRYPT_EXIT_USAGE;
	if (argc < 2)
		goto usage;
	for (int i = 1; i < argc; i++)
		if (argv[i][0] == '-')
			goto usage;
	if (c->json)
		arr = json_object_new_array();
	for (int i = 1; i < argc; i++) {
		r = check_one(c, &hs, argv[i], arr);
		if (r < 0 && first == 0)
			first = r;
	}
	if (arr) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "volumes", arr);
		cli_print_json(o);
	}
	kms_set_done(&hs);
	return cli_exit_code(first);
usage:
	return log_error_errno(EINVAL, "Usage: kmscrypt check DEVICE... [--json]"),
	       KMSCRYPT_EXIT_USAGE;
}
