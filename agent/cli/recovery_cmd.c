/* SPDX-License-Identifier: MIT */
/* kmscrypt recovery-key show ESCROW_FILE: the recovery key back from the escrow that format
 * --recovery-key-escrow wrote, through the KMS configuration that wrapped it (core/escrow.h). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "core/escrow.h"
#include "kmscrypt/exit.h"
#include "state/state.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/secret.h"

#define USAGE                                                                                      \
	"Usage: kmscrypt recovery-key show ESCROW_FILE [--device DEVICE] [--output FILE|-] "       \
	"[--json]"

static void audit_show(const struct cli *c, const struct escrow *e, const char *device,
		       const char *result)
{
	(void)audit_append(c->core.state_dir, &(struct audit_record){.action = "recovery-key-show",
								     .uuid = e->uuid,
								     .device = device,
								     .kms = e->kms,
								     .result = result,
								     .duration_ms = -1});
}

static int recovery_show(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"device", required_argument, NULL, 'd'}, {"output", required_argument, NULL, 'o'}, {}};
	const char *device = NULL, *output = NULL, *path;
	_cleanup_free_ char *abs = NULL;
	_cleanup_secret_ struct secret *key = NULL;
	struct escrow e = {};
	int opt, r;

	optind = 1;
	while ((opt = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
		if (opt == 'd')
			device = optarg;
		else if (opt == 'o')
			output = optarg;
		else
			return cli_option_error("recovery-key show", opt, argv);
	}
	if (optind + 1 != argc)
		return log_error_errno(EINVAL, USAGE), KMSCRYPT_EXIT_USAGE;
	path = argv[optind];
	/* Where the key goes is decided before the KMS is asked: never into a log by accident. */
	if (c->json && (!output || strcmp(output, "-") == 0))
		return log_error_errno(EINVAL,
				       "--json never carries the recovery key: pass --output "
				       "FILE (a new file, mode 0600)."),
		       KMSCRYPT_EXIT_USAGE;
	if (!output && !isatty(STDOUT_FILENO))
		return log_error_errno(
			   EINVAL, "Refusing to print the recovery key: stdout is not a terminal "
				   "(a pipe or file may end up in a log). Pass --output FILE (a "
				   "new file, mode 0600), or --output - to write it to stdout "
				   "anyway (e.g. into 'cryptsetup open --key-file -')."),
		       KMSCRYPT_EXIT_USAGE;
	if (output && strcmp(output, "-") != 0 && access(output, F_OK) == 0)
		return log_error_errno(EEXIST,
				       "Output file '%s' already exists; choose a new path (it is "
				       "never overwritten).",
				       output),
		       KMSCRYPT_EXIT_CONFLICT;

	r = core_escrow_read(path, &e);
	if (r < 0)
		goto out;
	if (device) {
		abs = realpath(device, NULL);
		if (abs)
			device = abs;
	}
	cli_json_target(c, device ?: e.device ?: path, e.uuid);
	if (device) {
		/* another volume's escrow is refused before the KMS is asked */
		r = core_escrow_check_device(path, &e, device);
		if (r < 0)
			goto out;
	}
	r = core_escrow_unwrap(&c->core, path, &e, &key);
	if (r < 0) {
		audit_show(c, &e, device, "error");
		goto out;
	}
	if (device) {
		r = core_escrow_test_key(path, &e, device, key);
		if (r < 0) {
			audit_show(c, &e, device, "error");
			goto out;
		}
	}
	if (output && strcmp(output, "-") != 0) {
		r = write_file_atomic(output, key->buf, key->len, 0600, 1);
		if (r < 0) {
			log_error_errno(r, "Cannot write the recovery key to '%s': %m", output);
			goto out;
		}
	}
	audit_show(c, &e, device, "ok");
	if (c->json) {
		json_object *o = cli_json_volume(device ?: e.device ?: path, e.uuid, 0, NULL);
		json_object_object_add(o, "kms", json_object_new_string(e.kms));
		json_object_object_add(o, "provider", json_object_new_string(e.provider));
		json_object_object_add(o, "key_id", json_object_new_string(e.key_id));
		json_object_object_add(o, "recovery_key_file", json_object_new_string(output));
		json_object_object_add(o, "tested", json_object_new_boolean(device != NULL));
		json_object_object_add(o, "result", json_object_new_string("recovered"));
		cli_print_volume(o);
	} else if (output && strcmp(output, "-") == 0) {
		/* verbatim, no newline: what 'cryptsetup --key-file -' and 'kmscrypt bind
		 * --key-file -' read; by write(2) from its locked memory, never through the
		 * buffer of stdout (not wiped, it would keep a copy) */
		if (fflush(stdout) != 0 || fd_write_all(STDOUT_FILENO, key->buf, key->len) < 0) {
			r = log_error_errno(EIO, "Cannot write the recovery key to stdout.");
			goto out;
		}
	} else if (output) {
		if (!c->quiet)
			printf("Recovery key of volume %s (escrowed through KMS '%s') written to "
			       "'%s'%s. "
			       "Delete it once the volume is bound again (shred -u).\n",
			       e.uuid, e.kms, output, device ? ", tested on the device" : "");
	} else {
		/* a terminal: the operator reads or types it */
		printf("Recovery key of volume %s%s%s%s (escrowed through KMS '%s')%s:\n\n    ",
		       e.uuid, e.label ? ", label '" : "", e.label ?: "", e.label ? "'" : "", e.kms,
		       device ? ", tested on the device" : "");
		if (fflush(stdout) != 0 || fd_write_all(STDOUT_FILENO, key->buf, key->len) < 0) {
			r = log_error_errno(EIO, "Cannot write the recovery key to stdout.");
			goto out;
		}
		printf("\n\n");
		fflush(stdout);
	}
	r = 0;
out:
	escrow_done(&e);
	return cli_exit_code(r);
}

int cmd_recovery_key(struct cli *c, int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "show") == 0)
		return recovery_show(c, argc - 1, argv + 1);
	if (argc >= 2 && argv[1][0] != '-')
		return log_error_errno(EINVAL, "Unknown recovery-key command '%s'. " USAGE,
				       argv[1]),
		       KMSCRYPT_EXIT_USAGE;
	return log_error_errno(EINVAL, USAGE), KMSCRYPT_EXIT_USAGE;
}
