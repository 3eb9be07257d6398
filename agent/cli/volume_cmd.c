/* SPDX-License-Identifier: MIT */
/* kmscrypt format | bind | unbind | check: options in, text/JSON out; the flows are core/format.c's
 * (format, bind, unbind) and core/check.c's (check). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "core/check.h"
#include "core/format.h"
#include "core/vol.h"
#include "codec/token.h"
#include "kmscrypt/exit.h"
#include "kmscrypt/token.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/secret.h"

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

/* The only copy of the recovery key, on stdout from its locked memory: stdio would leave it in
 * the unwiped buffer of stdout.  0 or -EIO. */
static int print_recovery_key(const struct secret *key)
{
	int r;

	printf("Recovery key (keyslot 1):\n\n    ");
	if (fflush(stdout) != 0)
		return -EIO;
	r = fd_write_all(STDOUT_FILENO, key->buf, key->len);
	printf("\n\n");
	return r < 0 ? r : 0;
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
	const char *names[KMSCRYPT_TOKEN_MAX_WRAPS];
	size_t n_kms = 0;
	unsigned threshold = 1;
	bool force = false, no_recovery = false, print_failed = false;
	unsigned long sector = 0;
	struct core_format_result res = {};
	_cleanup_free_ char *what = NULL;
	int opt, r;

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

	/* Ask (format --force over a signature) before core_format() takes the state lock: a
	 * person reading the question must not hold up boot unlocks. */
	r = core_format_probe(device, &what);
	if (r == -EEXIST && !force) {
		log_error("'%s' carries %s. Refusing to format it: that would destroy it. Pass "
			  "--force if you really mean to.",
			  device, what ? what : "a signature");
		return cli_exit_code(r);
	}
	if (r == -EEXIST) {
		_cleanup_free_ char *warning = NULL;
		if (asprintf(&warning, "This will overwrite %s on '%s' irrevocably.",
			     what ? what : "the signature", device) < 0)
			return cli_exit_code(-ENOMEM);
		r = cli_confirm(c, "format --force", warning);
	}
	if (r < 0)
		return cli_exit_code(r);
	r = core_format(&c->core,
			&(struct core_format_req){.device = device,
						  .kms = names,
						  .n_kms = n_kms,
						  .threshold = threshold,
						  .label = label,
						  .recovery_path = recovery_path,
						  .escrow_kms = escrow_kms,
						  .no_recovery = no_recovery,
						  .sector_size = (uint32_t)sector},
			&res);
	if (r < 0)
		goto out;
	if (c->json) {
		json_object *o = cli_json_volume(device, res.uuid, 0, NULL);
		json_object_object_add(o, "kms", json_object_new_string(kms));
		json_object_object_add(o, "provider", json_object_new_string(res.provider));
		json_object_object_add(o, "keyslot", json_object_new_int(0));
		json_binding(o, names, n_kms, threshold);
		if (!no_recovery)
			json_object_object_add(o, "recovery_keyslot", json_object_new_int(1));
		if (recovery_path)
			json_object_object_add(o, "recovery_key_file",
					       json_object_new_string(recovery_path));
		if (escrow_kms)
			json_object_object_add(o, "recovery_key_escrow",
					       json_object_new_string(escrow_kms));
		/* the only copy of the recovery key: printed from locked memory (cli.h) */
		if (res.recovery)
			json_object_object_add(o, "recovery_key",
					       json_object_new_string("@recovery_key@"));
		json_object *doc = json_object_new_object(), *arr = json_object_new_array();
		json_object_array_add(arr, o);
		json_object_object_add(doc, "volumes", arr);
		if (res.recovery && cli_print_json_secret(doc, "@recovery_key@", res.recovery) < 0)
			print_failed = true;
		else if (!res.recovery)
			cli_print_json(doc);
	} else if (!c->quiet) {
		printf("Formatted '%s' as LUKS2 volume %s, bound to %s in keyslot 0.\n", device,
		       res.uuid, res.desc);
		if (recovery_path && escrow_kms)
			printf("Recovery key (keyslot 1) wrapped by KMS '%s' into '%s': keep a copy "
			       "off this host; 'kmscrypt recovery-key show' unwraps it.\n",
			       escrow_kms, recovery_path);
		else if (recovery_path)
			printf("Recovery key (keyslot 1) written to '%s': store it offline.\n",
			       recovery_path);
	}
	if (res.recovery && !c->json) {
		/* The only copy, so printed even with -q: stdout is where the caller asked for it. */
		if (print_recovery_key(res.recovery) < 0)
			print_failed = true;
	}
	if (res.recovery) {
		fflush(stdout);
		if (ferror(stdout) || print_failed)
			log_error("Could not print the recovery key of '%s'; add a new one with "
				  "'cryptsetup luksAddKey' while the KMS works.",
				  device);
		else
			log_warning("Store the recovery key of '%s' (UUID %s) offline now: it is shown "
				    "only this once and opens the volume without the KMS (see "
				    "RECOVERY in kmscrypt(8)).",
				    device, res.uuid);
	}
	if (no_recovery)
		log_warning("'%s' has no recovery key (--no-recovery-key): if KMS '%s' or its key is "
			    "lost, so is the data. Add one with 'cryptsetup luksAddKey'.",
			    device, kms);
out:
	core_format_result_done(&res);
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
	struct core_bind_result res = {};
	int opt, r;

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
	r = core_bind(&c->core,
		      &(struct core_bind_req){.device = device,
					      .kms = names,
					      .n_kms = n_kms,
					      .threshold = threshold,
					      .keyfile = keyfile},
		      &res);
	if (res.uuid[0])
		cli_json_target(c, device, res.uuid);
	if (r < 0)
		return cli_exit_code(r);
	if (!c->quiet && !c->json && n_kms == 1)
		printf("Bound '%s' (UUID %s) to KMS '%s' in keyslot %d.\n", device, res.uuid, kms,
		       res.keyslot);
	else if (!c->quiet && !c->json)
		printf("Bound '%s' (UUID %s) to %s, in keyslot %d.\n", device, res.uuid, res.desc,
		       res.keyslot);
	else if (c->json) {
		json_object *o = cli_json_volume(device, res.uuid, 0, NULL);
		json_object_object_add(o, "kms", json_object_new_string(kms));
		json_object_object_add(o, "provider", json_object_new_string(res.provider));
		json_object_object_add(o, "keyslot", json_object_new_int(res.keyslot));
		json_binding(o, names, n_kms, threshold);
		cli_print_volume(o);
	}
	return cli_exit_code(0);
}

int cmd_unbind(struct cli *c, int argc, char **argv)
{
	struct core_unbind u = {};
	int r;

	if (cli_reject_options("unbind", argc, argv) < 0)
		return KMSCRYPT_EXIT_USAGE;
	if (argc != 2 || argv[1][0] == '-')
		return log_error_errno(EINVAL, "Usage: kmscrypt unbind DEVICE"), KMSCRYPT_EXIT_USAGE;
	cli_json_target(c, argv[1], NULL); /* --json: a failure from here on is this volume's item */
	r = core_unbind_prepare(argv[1], &u);
	if (r < 0)
		goto out;
	cli_json_target(c, argv[1], u.hdr.uuid);
	/* Always asked: unbind removes the KMS way to the data, and LUKS2 does not record whether
	 * a keyslot left is a recovery key someone kept or a passphrase long forgotten. */
	if (u.left > 0) {
		_cleanup_free_ char *warning = NULL;
		if (asprintf(&warning,
			     "This removes the kmscrypt keyslot of '%s' (UUID %s): afterwards only "
			     "the passphrase or recovery key of its %d other keyslot%s opens it.",
			     argv[1], u.hdr.uuid, u.left, u.left == 1 ? "" : "s") < 0) {
			r = -ENOMEM;
			goto out;
		}
		r = cli_confirm(c, "unbind", warning);
		if (r < 0)
			goto out;
	}
	r = core_unbind(&c->core, &u);
	if (r < 0)
		goto out;
	if (c->json) {
		json_object *o = cli_json_volume(argv[1], u.hdr.uuid, 0, NULL);
		json_object_object_add(o, "kms", json_str_or_null(u.tok.kms));
		json_object_object_add(o, "result", json_object_new_string("unbound"));
		cli_print_volume(o);
	} else if (!c->quiet) {
		printf("Removed the kmscrypt token and its keyslot from '%s' (UUID %s). KMS '%s' "
		       "still records the volume.\n",
		       argv[1], u.hdr.uuid, u.tok.kms ? u.tok.kms : "?");
	}
out:
	core_unbind_done(&u);
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

/* One volume of `check`: the flow is core_check_volume()'s; this prints its outcome. */
static int check_one(const struct cli *c, struct kms_set *hs, const char *device,
		     json_object *arr)
{
	struct vol v;
	unsigned errors = log_error_count();
	int r;

	r = core_check_volume(&c->core, hs, device, &v);
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
