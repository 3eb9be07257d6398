/* SPDX-License-Identifier: MIT */
/* kmscrypt unlock | lock | revoke | restore. */
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "core/all.h"
#include "core/flows.h"
#include "core/vol.h"
#include "kmscrypt/exit.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/secret.h"



/* Exit code of @v's outcome. */
static int vol_exit(const struct vol *v)
{
	return v->code ? v->code : cli_exit_code(v->r);
}

static void print_results(const struct cli *c, struct vol **vols, size_t n, bool wipe)
{
	json_object *arr = NULL;

	if (c->json)
		arr = json_object_new_array();
	for (size_t i = 0; i < n; i++) {
		struct vol *v = vols[i];
		if (v->r < 0)
			log_error("%s", v->msg);
		else if (!c->json && !c->quiet)
			printf("%s\n", v->msg);
		else if (c->json)
			log_info("%s", v->msg);
		if (arr) {
			json_object *o = cli_json_volume(v->device, v->hdr.uuid,
							 vol_exit(v), v->msg);
			json_object_object_add(o, "mapping", json_str_or_null(v->mapping));
			json_object_object_add(o, "result",
					       json_object_new_string(v->result ? v->result
										: "error"));
			json_object_object_add(o, "duration_ms", json_ms(v->ms));
			if (wipe && v->r == 0 && v->result && !strcmp(v->result, "revoked")) {
				json_object_object_add(
					o, "suspend_ms",
					json_ms((double)v->wipe.suspend_usec / 1e3));
				json_object_object_add(o, "keys_invalidated",
						       json_object_new_int(v->wipe.keys_invalidated));
				json_object_object_add(o, "dm_key_wiped",
						       json_object_new_boolean(v->wipe.table_key_zero));
			}
			json_object_array_add(arr, o);
		}
	}
	if (arr) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "volumes", arr);
		cli_print_json(o);
	}
}

static int first_failure(struct vol **vols, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (vols[i]->r < 0)
			return vol_exit(vols[i]);
	return 0;
}

/* Release the lock and the volumes; the exit code is @r's, else the first volume's failure. */
static int finish_run(int lock, int r, struct vol **vols, size_t n)
{
	int code = r < 0 ? cli_exit_code(r) : first_failure(vols, n);

	if (lock >= 0)
		close(lock);
	vol_list_free(vols);
	return code;
}

struct target_opts {
	bool all;
	bool allow_wait;    /* set by unlock: accept --wait-kms */
	unsigned wait_kms;  /* unlock --wait-kms SECONDS: retry unavailable KMSes until then */
	const char *name;   /* unlock --name */
	const char *reason; /* revoke --reason */
	const char *target;
};

static int parse_target(int argc, char **argv, bool with_name, bool with_reason,
			struct target_opts *o, const char *usage)
{
	static const struct option opts[] = {{"all", no_argument, NULL, 'a'},
					     {"name", required_argument, NULL, 'n'},
					     {"reason", required_argument, NULL, 'r'},
					     {"wait-kms", required_argument, NULL, 'w'},
					     {}};
	int opt, li = 0;

	optind = 1;
	while ((opt = getopt_long(argc, argv, ":", opts, &li)) >= 0) {
		if (opt == '?' || opt == ':')
			return cli_option_error(argv[0], opt, argv), -EINVAL;
		if (opt == 'a')
			o->all = true;
		else if (opt == 'n' && with_name)
			o->name = optarg;
		else if (opt == 'r' && with_reason)
			o->reason = optarg;
		else if (opt == 'w' && o->allow_wait) {
			char *end;
			unsigned long w;
			errno = 0;
			w = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || optarg[0] == '-' || w > 86400)
				return log_error_errno(EINVAL, "--wait-kms takes seconds (0-86400), "
							       "not '%s'.", optarg);
			o->wait_kms = (unsigned)w;
		} else {
			return log_error_errno(EINVAL, "Option '--%s' does not apply to '%s'. Usage: %s",
					       opts[li].name, argv[0], usage);
		}
	}
	if (optind < argc)
		o->target = argv[optind++];
	if (optind != argc || o->all == (o->target != NULL) || (o->all && o->name))
		goto usage;
	if (o->name && !core_mapping_name_valid(o->name))
		return log_error_errno(EINVAL, "Invalid mapping name '%s'.", o->name);
	if (o->reason && (strlen(o->reason) > 200 || strchr(o->reason, '\n')))
		return log_error_errno(EINVAL, "--reason must be one line of at most 200 characters.");
	return 0;
usage:
	return log_error_errno(EINVAL, "Usage: %s", usage);
}


int cmd_unlock(struct cli *c, int argc, char **argv)
{
	struct target_opts o = {.allow_wait = true};
	struct vol **vols = NULL;
	struct kms_set ks = {};
	size_t n = 0;
	int r, lock;

	r = parse_target(argc, argv, true, false, &o,
			 "kmscrypt unlock DEVICE|UUID=<uuid> [--name MAPPING] | --all "
			 "[--wait-kms SECONDS] [--json]");
	if (r < 0)
		return KMSCRYPT_EXIT_USAGE;
	lock = core_lock(&c->core);
	if (lock < 0)
		return cli_exit_code(lock);
	if (o.all) {
		r = vol_list(&c->core, VOL_LIST_BLOCK_ONLY, &vols);
		if (r < 0) {
			log_error_errno(r, "Cannot list volumes: %m");
			goto out;
		}
	} else {
		struct vol v;
		vols = calloc(2, sizeof(*vols));
		if (!vols) {
			r = -ENOMEM;
			goto out;
		}
		cli_json_target(c, o.target, NULL); /* a failure below is this volume's item */
		if (strncasecmp(o.target, "UUID=", 5) == 0)
			r = vol_from_uuid(&c->core, o.target + 5, &v);
		else
			r = vol_from_device(&c->core, o.target, &v, true);
		if (r < 0) {
			vol_done(&v);
			goto out;
		}
		cli_json_target(c, v.device, v.hdr.uuid);
		if (o.name)
			snprintf(v.mapping, sizeof(v.mapping), "%s", o.name);
		if (!v.mapped && vol_revoked(&v)) {
			char why[sizeof(v.msg)];
			r = log_error_errno(EALREADY, "%s", vol_refusal(&c->core, &v, why, sizeof(why)));
			vol_done(&v);
			goto out;
		}
		vols[0] = malloc(sizeof(struct vol));
		if (!vols[0]) {
			vol_done(&v);
			r = -ENOMEM;
			goto out;
		}
		*vols[0] = v;
	}
	while (vols[n])
		n++;
	r = core_unlock(&c->core, &ks, vols, n);
	if (r < 0)
		goto out;
	/* --wait-kms: retry the volumes whose KMS was unavailable (exit class 4) with exponential
	 * backoff until the deadline; a denial, a bad token or a volume error is final. */
	if (o.wait_kms > 0) {
		double deadline = now_ms() + o.wait_kms * 1000.0;
		unsigned delay_ms = 1000, round = 0;
		for (;;) {
			struct vol **retry = calloc(n + 1, sizeof(*retry));
			size_t nr = 0;
			double left = deadline - now_ms();

			if (!retry) {
				r = -ENOMEM;
				goto out;
			}
			for (size_t i = 0; i < n; i++)
				if (vols[i]->r < 0 &&
				    cli_exit_code(vols[i]->r) == KMSCRYPT_EXIT_UNAVAILABLE)
					retry[nr++] = vols[i];
			if (nr == 0 || left < 1.0) {
				free(retry);
				break;
			}
			if (delay_ms > left)
				delay_ms = (unsigned)left;
			round++;
			log_info("KMS unavailable for %zu volume%s (first: '%s'); retry %u in %.1f s "
				 "(--wait-kms: %.0f s left).",
				 nr, nr == 1 ? "" : "s", retry[0]->device, round, delay_ms / 1e3,
				 left / 1e3);
			/* Do not hold the lock while waiting: a revoke during a slow boot must not
			 * wait for us.  Whatever changed meanwhile (a revoked mark, a mapping opened
			 * by someone else) is read again under the lock before the next try. */
			close(lock);
			lock = -1;
			usleep(delay_ms * 1000u);
			lock = core_lock(&c->core);
			if (lock < 0) {
				free(retry);
				r = lock;
				goto out;
			}
			for (size_t i = 0; i < nr; i++) {
				retry[i]->r = 0;
				retry[i]->result = NULL;
				retry[i]->msg[0] = 0;
				r = vol_refresh(&c->core, retry[i]);
				if (r < 0) {
					vol_fail(retry[i], r,
						 "Cannot unlock '%s': its LUKS2 header or token cannot "
						 "be read any more (%s).",
						 retry[i]->device, strerror(-r));
					retry[i]->result = "error";
				} else if (!o.all && !retry[i]->mapped && vol_revoked(retry[i])) {
					/* revoked while we waited: refused as on the first try */
					char why[sizeof(retry[i]->msg)];
					vol_fail(retry[i], -EALREADY, "%s",
						 vol_refusal(&c->core, retry[i], why, sizeof(why)));
					retry[i]->result = "error";
				}
			}
			/* reopen the configurations: a failed open is cached per run */
			kms_set_done(&ks);
			ks = (struct kms_set){};
			size_t k = 0;
			for (size_t i = 0; i < nr; i++)
				if (retry[i]->r == 0)
					retry[k++] = retry[i];
			r = core_unlock(&c->core, &ks, retry, k);
			free(retry);
			if (r < 0)
				goto out;
			delay_ms = MIN(delay_ms * 2, 30000u);
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct vol *v = vols[i];
		/* A label with a space or a slash cannot name a mapping: say which name was used. */
		if (v->result && !strcmp(v->result, "unlocked") && !o.name && v->hdr.label[0] &&
		    strcmp(v->hdr.label, v->mapping) != 0)
			log_notice("The label '%s' of '%s' cannot be a device-mapper name; opened it as "
				   "/dev/mapper/%s.",
				   v->hdr.label, v->device, v->mapping);
		if (v->result && !strcmp(v->result, "unlocked")) {
			v->st.last_unlock = time(NULL);
			vol_save_state_or_warn(&c->core, v);
		}
		if (v->result && strcmp(v->result, "already-active") != 0)
			vol_audit(&c->core, v, "unlock", NULL);
	}
	print_results(c, vols, n, false);
	if (o.all && n == 0 && !c->json && !c->quiet)
		printf("No kmscrypt volumes found.\n");
	r = 0;
out:
	kms_set_done(&ks);
	return finish_run(lock, r, vols, n);
}

/* Targets for lock/revoke: one resolved target, or every open kmscrypt mapping. */
static int collect_targets(const struct cli *c, const struct target_opts *o, bool all_revoked,
			   bool revoking, struct vol ***ret, size_t *ret_n)
{
	struct vol **vols = NULL, **all = NULL;
	size_t n = 0;
	int r;

	if (!o->all) {
		vols = calloc(2, sizeof(*vols));
		if (!vols)
			return -ENOMEM;
		vols[0] = calloc(1, sizeof(struct vol));
		if (!vols[0]) {
			free(vols);
			return -ENOMEM;
		}
		r = vol_resolve(&c->core, o->target, vols[0]);
		if (r < 0) {
			vol_list_free(vols);
			return r;
		}
		*ret = vols;
		*ret_n = 1;
		return 0;
	}
	size_t total = 0;

	/* restore --all also takes revoked volumes that are closed (image files too) */
	r = vol_list(&c->core,
		     all_revoked ? 0
		     : revoking  ? VOL_LIST_OPEN_ONLY | VOL_LIST_MAPPED_ONLY
				 : VOL_LIST_OPEN_ONLY | VOL_LIST_MAPPED_ONLY | VOL_LIST_PEEK,
		     &all);
	if (r < 0)
		return log_error_errno(r, "Cannot list volumes: %m");
	vols = calloc(1, sizeof(*vols));
	if (!vols) {
		vol_list_free(all);
		return -ENOMEM;
	}
	while (all[total])
		total++;
	for (size_t i = 0; i < total; i++) {
		/* revoke also takes a volume held only by a re-encryption's dm stack */
		bool want = all_revoked ? vol_revoked(all[i])
					: all[i]->mapped || (revoking && all[i]->stacked);
		if (want) {
			struct vol **nl = realloc(vols, (n + 2) * sizeof(*vols));
			if (!nl)
				break;
			vols = nl;
			vols[n++] = all[i];
			vols[n] = NULL;
			all[i] = NULL;
		}
	}
	for (size_t i = 0; i < total; i++)
		if (all[i]) {
			vol_done(all[i]);
			free(all[i]);
		}
	free(all);
	*ret = vols;
	*ret_n = n;
	return 0;
}

/* Parse a target, take the lock, collect the volumes.  0 when the caller goes on (it then owns
 * *ret_lock and *ret_vols and ends with finish_run()); otherwise the exit code, nothing held. */
static int begin_targets(struct cli *c, int argc, char **argv, bool with_reason, bool all_revoked,
			 const char *usage, struct target_opts *o, int *ret_lock,
			 struct vol ***ret_vols, size_t *ret_n)
{
	int r, lock;

	r = parse_target(argc, argv, false, with_reason, o, usage);
	if (r < 0)
		return KMSCRYPT_EXIT_USAGE;
	if (o->target) /* not --all: a failure below is this volume's item (--json) */
		cli_json_target(c, o->target, NULL);
	if (with_reason) /* revoke: a re-encryption of the target holds the lock; stop it */
		(void)core_reencrypt_preempt(&c->core, o->all ? NULL : o->target, NULL);
	lock = core_lock(&c->core);
	if (lock < 0)
		return cli_exit_code(lock);
	r = collect_targets(c, o, all_revoked, with_reason, ret_vols, ret_n);
	if (r < 0)
		return finish_run(lock, r, NULL, 0);
	*ret_lock = lock;
	return 0;
}

int cmd_lock(struct cli *c, int argc, char **argv)
{
	struct target_opts o = {};
	struct vol **vols = NULL;
	size_t n = 0;
	int r, lock;

	r = begin_targets(c, argc, argv, false, false, "kmscrypt lock MAPPING|DEVICE | --all", &o,
			  &lock, &vols, &n);
	if (r)
		return r;
	core_lock_all(&c->core, vols, n); /* several at once (core/all.h) */
	for (size_t i = 0; i < n; i++)
		if (strcmp(vols[i]->result, "already-locked") != 0)
			vol_audit(&c->core, vols[i], "lock", NULL);
	print_results(c, vols, n, false);
	if (o.all && n == 0 && !c->json && !c->quiet)
		printf("No open kmscrypt volumes to lock.\n");
	r = 0;
	return finish_run(lock, r, vols, n);
}


int cmd_revoke(struct cli *c, int argc, char **argv)
{
	struct target_opts o = {};
	struct vol **vols = NULL;
	size_t n = 0;
	int r, lock;

	r = begin_targets(c, argc, argv, true, false,
			  "kmscrypt revoke MAPPING|DEVICE | --all [--reason TEXT] [--json]", &o, &lock,
			  &vols, &n);
	if (r)
		return r;
	core_revoke_all(&c->core, vols, n, o.reason); /* several at once (core/all.h) */
	for (size_t i = 0; i < n; i++)
		vol_audit(&c->core, vols[i], "revoke", o.reason);
	print_results(c, vols, n, true);
	if (o.all && n == 0 && !c->json && !c->quiet)
		printf("No open kmscrypt volumes to revoke.\n");
	r = 0;
	return finish_run(lock, r, vols, n);
}

int cmd_restore(struct cli *c, int argc, char **argv)
{
	struct target_opts o = {};
	struct vol **vols = NULL;
	struct kms_set ks = {};
	size_t n = 0;
	int r, lock;

	r = begin_targets(c, argc, argv, false, true,
			  "kmscrypt restore MAPPING|DEVICE|UUID | --all [--json]", &o, &lock, &vols, &n);
	if (r)
		return r;
	core_restore_all(&c->core, &ks, vols, n); /* several at once; each audits (core/all.h) */
	print_results(c, vols, n, false);
	if (o.all && n == 0 && !c->json && !c->quiet)
		printf("No revoked kmscrypt volumes.\n");
	r = 0;
	kms_set_done(&ks);
	return finish_run(lock, r, vols, n);
}
