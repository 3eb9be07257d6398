/* SPDX-License-Identifier: MIT */
/* kmscrypt rotate-master | rotate-secret: arguments in, one line (or --json item) per volume out; the
 * flows are core/rotate.c. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "core/flows.h"
#include "core/vol.h"
#include "kmscrypt/exit.h"
#include "kmscrypt/token.h"
#include "util/log.h"

static int vol_exit(const struct vol *v)
{
	return v->code ? v->code : cli_exit_code(v->r);
}

static json_object *side(const char *kms, const char *version, int keyslot)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "kms", json_str_or_null(kms));
	json_object_object_add(o, "key_version", json_str_or_null(version));
	json_object_object_add(o, "keyslot", keyslot >= 0 ? json_object_new_int(keyslot) : NULL);
	return o;
}

static int rotate(struct cli *c, int argc, char **argv, bool master)
{
	static const struct option opts[] = {{"all", no_argument, NULL, 'a'},
					     {"kms", required_argument, NULL, 'k'},
					     {"replace", required_argument, NULL, 'r'},
					     {}};
	const char *usage = master ? "kmscrypt rotate-master DEVICE|--all [--kms NAME | --replace "
				     "OLD=NEW]"
				   : "kmscrypt rotate-secret DEVICE|--all";
	const char *kms = NULL, *target = NULL, *replace_old = NULL;
	char *replace = NULL;
	struct vol **vols = NULL;
	struct kms_set ks = {};
	json_object *arr = NULL;
	bool all = false;
	size_t n = 0;
	int opt, r, lock = -1, code = 0;

	optind = 1;
	while ((opt = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
		if (opt == 'a')
			all = true;
		else if (opt == 'k' && master)
			kms = optarg;
		else if (opt == 'r' && master)
			replace = optarg;
		else
			return cli_option_error(argv[0], opt, argv);
	}
	if (replace) {
		/* --replace OLD=NEW: one KMS of a (multi-KMS) binding for another */
		char *eq = strchr(replace, '=');
		if (kms || !eq || eq == replace || !eq[1])
			return log_error_errno(EINVAL, "--replace takes OLD=NEW, two KMS configuration "
						       "names, and excludes --kms. Usage: %s",
					       usage),
			       KMSCRYPT_EXIT_USAGE;
		*eq = 0;
		replace_old = replace;
		kms = eq + 1;
	}
	if (optind < argc)
		target = argv[optind++];
	if (optind != argc || all == (target != NULL))
		return log_error_errno(EINVAL, "Usage: %s", usage), KMSCRYPT_EXIT_USAGE;
	if (target)
		cli_json_target(c, target, NULL);
	lock = core_lock(&c->core);
	if (lock < 0)
		return cli_exit_code(lock);
	if (kms) {
		/* an unusable target configuration is one error, before any volume */
		if (!kms_set_get(&c->core, &ks, kms, &r)) {
			code = cli_exit_code(r);
			goto out;
		}
	}
	if (all) {
		r = vol_list_all(&c->core, &vols);
		if (r < 0) {
			code = cli_exit_code(log_error_errno(r, "Cannot list volumes: %m"));
			goto out;
		}
		while (vols[n])
			n++;
	} else {
		vols = calloc(2, sizeof(*vols));
		if (!vols || !(vols[0] = calloc(1, sizeof(struct vol)))) {
			code = KMSCRYPT_EXIT_FAILURE;
			goto out;
		}
		n = 1;
		if (core_token_version(target) > KMSCRYPT_TOKEN_VERSION_MULTI) {
			/* a token of a newer schema is not rewritten by this version */
			code = cli_exit_code(log_error_errno(
				EBADMSG,
				"%s does not know version %d kmscrypt tokens ('%s'); use a newer "
				"kmscrypt. Nothing was changed.",
				argv[0], core_token_version(target), target));
			goto out;
		}
		r = vol_resolve(&c->core, target, vols[0]);
		if (r < 0) {
			code = cli_exit_code(r);
			goto out;
		}
		cli_json_target(c, vols[0]->device, vols[0]->hdr.uuid);
	}
	if (c->json)
		arr = json_object_new_array();
	for (size_t i = 0; i < n; i++) {
		struct vol *v = vols[i];
		struct core_rotation rot;

		if (master)
			core_rotate_master(&c->core, &ks, v, kms, replace_old, &rot);
		else
			core_rotate_secret(&c->core, &ks, v, &rot);
		if (v->r < 0) {
			log_error("%s", v->msg);
			if (!code)
				code = vol_exit(v);
		} else if (!c->json && !c->quiet) {
			printf("%s\n", v->msg);
		}
		if (arr) {
			json_object *o = cli_json_volume(v->device, v->hdr.uuid, vol_exit(v),
							 v->r < 0 ? v->msg : NULL);
			json_object_object_add(o, "result",
					       json_object_new_string(v->result ?: "error"));
			json_object_object_add(o, "old", side(rot.old_kms, rot.old_key_version,
							       rot.old_keyslot));
			json_object_object_add(o, "new", side(rot.new_kms, rot.new_key_version,
							       rot.new_keyslot));
			json_object_object_add(o, "resumed", json_object_new_boolean(rot.resumed));
			json_object_object_add(o, "duration_ms", json_ms(v->ms));
			json_object_array_add(arr, o);
		}
	}
	if (arr) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "volumes", arr);
		cli_print_json(o);
	}
	if (all && n == 0 && !c->json && !c->quiet)
		printf("No kmscrypt volumes found.\n");
out:
	kms_set_done(&ks);
	vol_list_free(vols);
	close(lock);
	return code;
}

int cmd_rotate_master(struct cli *c, int argc, char **argv)
{
	return rotate(c, argc, argv, true);
}

int cmd_rotate_secret(struct cli *c, int argc, char **argv)
{
	return rotate(c, argc, argv, false);
}
