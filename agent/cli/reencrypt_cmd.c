/* SPDX-License-Identifier: MIT */
/* kmscrypt reencrypt DEVICE [--resume] [--recovery-key-file F] [--remove-other-keyslots]. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "core/flows.h"
#include "core/vol.h"
#include "kmscrypt/exit.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/secret.h"

#define RECOVERY_KEY_MAX (8 * 1024 * 1024) /* cryptsetup's default key file size limit */

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

struct reenc_ui {
	const struct cli *c;
	bool tty;            /* stderr is a terminal: progress line rewritten in place */
	bool drew;           /* a progress line is on screen */
	double last_ms;
};

static int ui_progress(uint64_t size, uint64_t offset, void *userdata)
{
	struct reenc_ui *ui = userdata;
	double now = now_ms();

	if (ui->tty && !ui->c->quiet && (now - ui->last_ms >= 200 || offset >= size)) {
		ui->last_ms = now;
		fprintf(stderr, "\rRe-encrypting: %5.1f%% (%llu of %llu MiB)", size
				? 100.0 * (double)offset / (double)size : 100.0,
			(unsigned long long)(offset >> 20), (unsigned long long)(size >> 20));
		fflush(stderr);
		ui->drew = true;
	}
	/* Ctrl-C or SIGTERM: stop after this step; the header says where (resumable) */
	return stop_requested ? 1 : 0;
}

static int ui_confirm(const char *plan, bool destructive, void *userdata)
{
	struct reenc_ui *ui = userdata;

	if (destructive)
		return cli_confirm(ui->c, "reencrypt --remove-other-keyslots", plan);
	/* told before anything changes, on stderr so --json stays one document */
	if (!ui->c->quiet)
		log_notice("%s", plan);
	return 0;
}

int cmd_reencrypt(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"resume", no_argument, NULL, 'r'},
		{"recovery-key-file", required_argument, NULL, 'R'},
		{"remove-other-keyslots", no_argument, NULL, 'X'},
		{}};
	static const char usage[] = "Usage: kmscrypt reencrypt DEVICE|MAPPING [--recovery-key-file "
				    "FILE] [--remove-other-keyslots] [--json]\n"
				    "       kmscrypt reencrypt --resume DEVICE|MAPPING [--json]";
	_cleanup_secret_ struct secret *recovery = NULL;
	struct reenc_ui ui = {.c = c, .tty = isatty(STDERR_FILENO) == 1};
	struct core_reencrypt_opts o = {.confirm = ui_confirm, .progress = ui_progress,
					.userdata = &ui};
	struct core_reencrypt_result res = {};
	struct sigaction sa = {.sa_handler = on_stop_signal}, old_int, old_term;
	const char *recovery_path = NULL;
	struct kms_set ks = {};
	struct vol v = {};
	int opt, r, lock = -1, code;

	optind = 1;
	while ((opt = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
		if (opt == 'r')
			o.resume = true;
		else if (opt == 'R')
			recovery_path = optarg;
		else if (opt == 'X')
			o.remove_others = true;
		else
			return cli_option_error("reencrypt", opt, argv);
	}
	if (optind + 1 != argc)
		return log_error_errno(EINVAL, "%s", usage), KMSCRYPT_EXIT_USAGE;
	if (o.resume && (recovery_path || o.remove_others))
		return log_error_errno(EINVAL, "--resume takes no other option: the plan of the "
					       "interrupted run is in the LUKS2 header."),
		       KMSCRYPT_EXIT_USAGE;
	cli_json_target(c, argv[optind], NULL);
	if (recovery_path) {
		/* verbatim, as cryptsetup --key-file and 'kmscrypt format --recovery-key-file' */
		r = read_file_secret(recovery_path, RECOVERY_KEY_MAX, 0, &recovery);
		if (r < 0)
			return log_error_errno(r, "Cannot read recovery key file '%s': %m",
					       recovery_path),
			       cli_exit_code(r);
		o.recovery = recovery;
	}
	/* Held for the whole run: restore and unlock wait (a revoke must not race the table
	 * reloads of the re-encryption, which would load the key again: revoke stops this process
	 * first, through the record below, core_reencrypt_preempt()). */
	lock = core_lock(&c->core);
	if (lock < 0)
		return cli_exit_code(lock);
	r = vol_resolve(&c->core, argv[optind], &v);
	if (r < 0)
		goto out;
	cli_json_target(c, v.device, v.hdr.uuid);

	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	r = core_reencrypt_record(&c->core, &v);
	if (r < 0) {
		log_error_errno(r, "Cannot write '%s/reencrypt.run' (how revoke finds this run): %m. "
				   "Nothing was changed.",
				c->core.state_dir);
		goto out;
	}
	core_reencrypt(&c->core, &ks, &v, &o, &res);
	core_reencrypt_unrecord(&c->core);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	if (ui.drew)
		fputc('\n', stderr);
	r = v.r;

	if (v.r < 0)
		log_error("%s", v.msg);
	else if (!c->json && !c->quiet)
		printf("%s\n", v.msg);
	else if (c->json)
		log_info("%s", v.msg);
	if (c->json) {
		code = v.code ? v.code : cli_exit_code(v.r);
		json_object *it = cli_json_volume(v.device, v.hdr.uuid, code, v.msg);
		json_object *pr = json_object_new_object();
		json_object *rm = json_object_new_array();
		json_object_object_add(it, "mapping", json_str_or_null(v.mapping));
		json_object_object_add(it, "result",
				       json_object_new_string(v.result ? v.result : "error"));
		json_object_object_add(it, "resumed", json_object_new_boolean(res.resumed));
		json_object_object_add(it, "keyslot", json_object_new_int(res.keyslot));
		json_object_object_add(it, "recovery_keyslot",
				       res.recovery_keyslot >= 0
					       ? json_object_new_int(res.recovery_keyslot)
					       : NULL);
		for (int i = 0; i < res.n_removed && v.r == 0; i++)
			json_object_array_add(rm, json_object_new_int(res.removed[i]));
		json_object_object_add(it, "removed_keyslots", rm);
		json_object_object_add(pr, "bytes_done", json_object_new_int64((int64_t)res.bytes));
		json_object_object_add(pr, "bytes_total", json_object_new_int64((int64_t)res.total));
		json_object_object_add(pr, "percent",
				       json_object_new_double(res.total ? 100.0 * (double)res.bytes /
										 (double)res.total
									: (v.r == 0 ? 100.0 : 0.0)));
		json_object_object_add(it, "progress", pr);
		json_object_object_add(it, "duration_ms", json_ms(v.ms));
		cli_print_volume(it);
	}
out:
	code = v.code ? v.code : cli_exit_code(r);
	if (lock >= 0)
		close(lock);
	kms_set_done(&ks);
	vol_done(&v);
	return code;
}
