/* SPDX-License-Identifier: MIT */
/* kmscrypt unlock | lock | revoke | restore. */
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "cli/vol.h"
#include "kmscrypt/exit.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/secret.h"

#define UNLOCK_PARALLEL 8

/* Unwrap @v's secret through its KMS; on failure fill v->r and v->msg. */
static int vol_unwrap(const struct cli *c, struct kms_set *ks, struct vol *v, const char *verb,
		      struct secret **ret)
{
	struct kms_handle *h;
	struct kms_error err = {};
	char buf[512];
	int r;

	h = kms_set_get(c, ks, v->tok.kms, &r);
	if (!h) {
		v->r = r;
		snprintf(v->msg, sizeof(v->msg),
			 "Cannot %s '%s' (UUID %s): KMS configuration '%s' is unusable (see above).",
			 verb, v->device, v->hdr.uuid, v->tok.kms);
		return r;
	}
	r = kms_handle_unwrap(h, v->hdr.uuid, &v->tok, ret, &err);
	if (r < 0) {
		kms_error_describe(&err, buf, sizeof(buf));
		v->r = r;
		snprintf(v->msg, sizeof(v->msg), "Cannot %s '%s' (UUID %s): KMS '%s' (%s) %s: %s; %s.",
			 verb, v->device, v->hdr.uuid, v->tok.kms, h->cfg.provider->name,
			 r == -EACCES	 ? "denied access"
			 : r == -EBADMSG ? "gave an invalid answer"
					 : "could not be reached",
			 buf, cli_hint_for(r));
	}
	return r;
}

static void vol_fail(struct vol *v, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void vol_fail(struct vol *v, int r, const char *fmt, ...)
{
	va_list ap;

	v->r = r;
	va_start(ap, fmt);
	vsnprintf(v->msg, sizeof(v->msg), fmt, ap);
	va_end(ap);
}

static const char *dm_error_hint(int r)
{
	if (r == -ENOTSUP)
		return "this kernel has no device-mapper/dm-crypt (modprobe dm_crypt)";
	if (r == -EEXIST)
		return "a mapping of that name exists; choose another with --name";
	if (r == -EBUSY)
		return "the device is busy";
	return strerror(-r);
}

/* ---- unlock ----------------------------------------------------------------------------------- */

struct unlock_job {
	const struct cli *c;
	struct kms_set *ks; /* fully opened before the threads start: read-only for them */
	struct vol *v;
};

static void unlock_one(const struct cli *c, struct kms_set *ks, struct vol *v)
{
	_cleanup_secret_ struct secret *secret = NULL;
	double t0 = now_ms();
	int r;

	if (v->mapped) {
		v->result = "already-active";
		snprintf(v->msg, sizeof(v->msg), "'%s' (UUID %s) is already open as '%s'.", v->device,
			 v->hdr.uuid, v->map.name);
		return;
	}
	if (v->state_r == -EBADMSG) {
		/* Fail closed: the unreadable state may be the revoked mark. */
		vol_fail(v, -EBADMSG,
			 "Left '%s' (UUID %s) locked: its state file '%s/volumes/%s.json' is corrupt, and "
			 "it may say the volume is revoked. Check it, then fix or remove it.",
			 v->device, v->hdr.uuid, c->state_dir, v->hdr.uuid);
		v->result = "error";
		return;
	}
	if (v->has_state && v->st.revoked) {
		v->result = "skipped-revoked";
		snprintf(v->msg, sizeof(v->msg),
			 "Left '%s' (UUID %s) locked: it is revoked%s%s%s. Run 'kmscrypt restore %s' "
			 "once access is back.",
			 v->device, v->hdr.uuid, v->st.revoke_reason ? " (" : "",
			 v->st.revoke_reason ? v->st.revoke_reason : "", v->st.revoke_reason ? ")" : "",
			 v->mapping);
		return;
	}
	r = vol_unwrap(c, ks, v, "unlock", &secret);
	if (r < 0)
		goto out;
	r = volume_activate(v->device, v->mapping, v->tok.keyslot, secret);
	secret = secret_free(secret);
	if (r == -EPERM) {
		vol_fail(v, -EBADMSG,
			 "Cannot unlock '%s' (UUID %s): the unwrapped secret does not open keyslot %d; "
			 "the token does not belong to this keyslot. Use the recovery key.",
			 v->device, v->hdr.uuid, v->tok.keyslot);
		goto out;
	}
	if (r < 0) {
		vol_fail(v, r, "Cannot activate '%s' (UUID %s) as '%s': %s.", v->device, v->hdr.uuid,
			 v->mapping, dm_error_hint(r));
		goto out;
	}
	v->result = "unlocked";
out:
	v->ms = now_ms() - t0;
	if (v->r == 0 && !strcmp(v->result, "unlocked"))
		snprintf(v->msg, sizeof(v->msg),
			 "Unlocked '%s' (UUID %s) as /dev/mapper/%s through KMS '%s' in %.0f ms.",
			 v->device, v->hdr.uuid, v->mapping, v->tok.kms, v->ms);
	if (v->r < 0)
		v->result = "error";
}

static void *unlock_thread(void *p)
{
	struct unlock_job *j = p;

	unlock_one(j->c, j->ks, j->v);
	return NULL;
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
			json_object *o = json_object_new_object();
			json_object_object_add(o, "device", json_object_new_string(v->device));
			json_object_object_add(o, "uuid", json_object_new_string(v->hdr.uuid));
			json_object_object_add(o, "mapping", json_object_new_string(v->mapping));
			json_object_object_add(o, "result",
					       json_object_new_string(v->result ? v->result
										: "error"));
			json_object_object_add(o, "exit",
					       json_object_new_int(cli_exit_code(v->r)));
			if (v->r < 0)
				json_object_object_add(o, "error", json_object_new_string(v->msg));
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
			return cli_exit_code(vols[i]->r);
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
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
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
		} else
			goto usage;
	}
	if (optind < argc)
		o->target = argv[optind++];
	if (optind != argc || o->all == (o->target != NULL) || (o->all && o->name))
		goto usage;
	if (o->name && !cli_mapping_name_valid(o->name))
		return log_error_errno(EINVAL, "Invalid mapping name '%s'.", o->name);
	if (o->reason && (strlen(o->reason) > 200 || strchr(o->reason, '\n')))
		return log_error_errno(EINVAL, "--reason must be one line of at most 200 characters.");
	return 0;
usage:
	return log_error_errno(EINVAL, "Usage: %s", usage);
}

/* Unlock @vols (concurrently when more than one); each volume's outcome is in the volume. */
static int unlock_pass(const struct cli *c, struct kms_set *ks, struct vol **vols, size_t n)
{
	/* Open each KMS configuration once, before any thread starts. */
	for (size_t i = 0; i < n; i++) {
		int rr;
		if (!vols[i]->mapped && !(vols[i]->has_state && vols[i]->st.revoked))
			(void)kms_set_get(c, ks, vols[i]->tok.kms, &rr);
	}
	if (n == 1) {
		unlock_one(c, ks, vols[0]);
	} else if (n > 1) {
		/* Volumes unlock concurrently; one failing does not stop the others. */
		struct unlock_job *jobs = calloc(n, sizeof(*jobs));
		pthread_t *tids = calloc(n, sizeof(*tids));
		if (!jobs || !tids) {
			free(jobs);
			free(tids);
			return -ENOMEM;
		}
		for (size_t base = 0; base < n; base += UNLOCK_PARALLEL) {
			size_t end = MIN(n, base + UNLOCK_PARALLEL);
			for (size_t i = base; i < end; i++) {
				jobs[i] = (struct unlock_job){c, ks, vols[i]};
				if (pthread_create(&tids[i], NULL, unlock_thread, &jobs[i]) != 0) {
					tids[i] = 0;
					unlock_one(c, ks, vols[i]);
				}
			}
			for (size_t i = base; i < end; i++)
				if (tids[i])
					pthread_join(tids[i], NULL);
		}
		free(jobs);
		free(tids);
	}
	return 0;
}

int cmd_unlock(struct cli *c, int argc, char **argv)
{
	struct target_opts o = {.allow_wait = true};
	struct vol **vols = NULL;
	struct kms_set ks = {};
	size_t n = 0;
	int r, lock;

	r = parse_target(argc, argv, true, false, &o,
			 "kmscrypt unlock DEVICE [--name MAPPING] | --all [--wait-kms SECONDS] "
			 "[--json]");
	if (r < 0)
		return KMSCRYPT_EXIT_USAGE;
	lock = cli_lock(c);
	if (lock < 0)
		return cli_exit_code(lock);
	if (o.all) {
		r = vol_list_all(c, &vols);
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
		r = vol_from_device(c, o.target, &v, true);
		if (r < 0) {
			vol_done(&v);
			goto out;
		}
		if (o.name)
			snprintf(v.mapping, sizeof(v.mapping), "%s", o.name);
		if (v.has_state && v.st.revoked) {
			r = log_error_errno(EALREADY,
					    "'%s' (UUID %s) is revoked; 'unlock' leaves it locked. Run "
					    "'kmscrypt restore %s' to reopen it through the KMS.",
					    o.target, v.hdr.uuid, o.target);
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
	r = unlock_pass(c, &ks, vols, n);
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
			usleep(delay_ms * 1000u);
			for (size_t i = 0; i < nr; i++) {
				retry[i]->r = 0;
				retry[i]->result = NULL;
				retry[i]->msg[0] = 0;
			}
			/* reopen the configurations: a failed open is cached per run */
			kms_set_done(&ks);
			ks = (struct kms_set){};
			r = unlock_pass(c, &ks, retry, nr);
			free(retry);
			if (r < 0)
				goto out;
			delay_ms = MIN(delay_ms * 2, 30000u);
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct vol *v = vols[i];
		if (v->result && !strcmp(v->result, "unlocked")) {
			v->st.last_unlock = time(NULL);
			vol_save_state(c, v);
		}
		if (v->result && strcmp(v->result, "already-active") != 0)
			vol_audit(c, v, "unlock", NULL);
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
			   struct vol ***ret, size_t *ret_n)
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
		r = vol_resolve(c, o->target, vols[0]);
		if (r < 0) {
			vol_list_free(vols);
			return r;
		}
		*ret = vols;
		*ret_n = 1;
		return 0;
	}
	size_t total = 0;

	r = vol_list_all(c, &all);
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
		bool want = all_revoked ? (all[i]->has_state && all[i]->st.revoked) : all[i]->mapped;
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
	lock = cli_lock(c);
	if (lock < 0)
		return cli_exit_code(lock);
	r = collect_targets(c, o, all_revoked, ret_vols, ret_n);
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
	for (size_t i = 0; i < n; i++) {
		struct vol *v = vols[i];
		double t0 = now_ms();
		if (!v->mapped) {
			v->result = "already-locked";
			snprintf(v->msg, sizeof(v->msg), "'%s' (UUID %s) is not open.", v->device,
				 v->hdr.uuid);
			continue;
		}
		r = volume_deactivate(v->map.name);
		v->ms = now_ms() - t0;
		if (r < 0) {
			vol_fail(v, r, "Cannot lock '%s' (UUID %s): %s.", v->map.name, v->hdr.uuid,
				 r == -EBUSY ? "it is in use (unmount it first)" : dm_error_hint(r));
			v->result = "error";
		} else {
			v->result = "locked";
			snprintf(v->msg, sizeof(v->msg), "Locked '%s' (UUID %s).", v->map.name,
				 v->hdr.uuid);
			v->st.last_lock = time(NULL);
			vol_save_state(c, v);
		}
		vol_audit(c, v, "lock", NULL);
	}
	print_results(c, vols, n, false);
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
	for (size_t i = 0; i < n; i++) {
		struct vol *v = vols[i];
		double t0 = now_ms();

		/* Mark first: even if the wipe fails below, a reboot must not unlock the volume. */
		v->st.revoked = true;
		v->st.last_revoke = time(NULL);
		free(v->st.revoke_reason);
		v->st.revoke_reason = o.reason ? strdup(o.reason) : NULL;
		vol_save_state(c, v);
		if (!v->mapped) {
			v->result = "revoked";
			v->ms = now_ms() - t0;
			snprintf(v->msg, sizeof(v->msg),
				 "Revoked '%s' (UUID %s): it is not open; it stays locked until "
				 "'kmscrypt restore'.",
				 v->device, v->hdr.uuid);
			vol_audit(c, v, "revoke", o.reason);
			continue;
		}
		r = volume_suspend_wipe(v->map.name, &v->wipe);
		v->ms = now_ms() - t0;
		if (r < 0) {
			vol_fail(v, r, "Cannot revoke '%s' (UUID %s): %s. It is marked revoked, but "
				       "its key may still be in dm-crypt; run 'kmscrypt revoke %s' "
				       "again or lock it.",
				 v->map.name, v->hdr.uuid, dm_error_hint(r), v->map.name);
			v->result = "error";
		} else if (!v->wipe.table_key_zero) {
			vol_fail(v, -EIO,
				 "Revoke of '%s' (UUID %s) suspended the device but its dm table "
				 "still holds a key; lock it ('kmscrypt lock %s') to remove it.",
				 v->map.name, v->hdr.uuid, v->map.name);
			v->result = "error";
		} else {
			v->result = "revoked";
			snprintf(v->msg, sizeof(v->msg),
				 "Revoked '%s' (UUID %s): suspended, dm-crypt key wiped (%.1f ms), %d "
				 "keyring key%s invalidated; %.1f ms in all. I/O waits until "
				 "'kmscrypt restore %s'.",
				 v->map.name, v->hdr.uuid, (double)v->wipe.suspend_usec / 1e3,
				 v->wipe.keys_invalidated, v->wipe.keys_invalidated == 1 ? "" : "s",
				 v->ms, v->map.name);
		}
		vol_audit(c, v, "revoke", o.reason);
	}
	print_results(c, vols, n, true);
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
	for (size_t i = 0; i < n; i++) {
		struct vol *v = vols[i];
		_cleanup_secret_ struct secret *secret = NULL;
		double t0 = now_ms();

		if (!(v->has_state && v->st.revoked) && v->mapped && !v->map.suspended) {
			v->result = "not-revoked";
			snprintf(v->msg, sizeof(v->msg), "'%s' (UUID %s) is not revoked; nothing to do.",
				 v->mapping, v->hdr.uuid);
			continue;
		}
		r = vol_unwrap(c, &ks, v, "restore", &secret);
		if (r < 0) {
			if (v->mapped && v->map.suspended)
				strncat(v->msg, " The device stays suspended, its data intact.",
					sizeof(v->msg) - strlen(v->msg) - 1);
			else
				strncat(v->msg, " The volume stays locked.",
					sizeof(v->msg) - strlen(v->msg) - 1);
			v->result = "error";
			v->ms = now_ms() - t0;
			vol_audit(c, v, "restore", NULL);
			continue;
		}
		if (v->mapped && v->map.suspended)
			r = volume_resume(v->map.name, v->tok.keyslot, secret);
		else if (!v->mapped)
			r = volume_activate(v->device, v->mapping, v->tok.keyslot, secret);
		else
			r = 0;
		secret = secret_free(secret);
		v->ms = now_ms() - t0;
		if (r < 0) {
			vol_fail(v, r == -EPERM ? -EBADMSG : r,
				 "Cannot restore '%s' (UUID %s): %s.", v->mapping, v->hdr.uuid,
				 r == -EPERM ? "the unwrapped secret does not open its keyslot"
					     : dm_error_hint(r));
			v->result = "error";
			vol_audit(c, v, "restore", NULL);
			continue;
		}
		v->result = "restored";
		snprintf(v->msg, sizeof(v->msg),
			 "Restored '%s' (UUID %s) through KMS '%s': %s in %.0f ms.", v->mapping,
			 v->hdr.uuid, v->tok.kms, v->mapped ? "resumed" : "reopened", v->ms);
		v->st.revoked = false;
		free(v->st.revoke_reason);
		v->st.revoke_reason = NULL;
		v->st.last_restore = time(NULL);
		if (!v->mapped)
			v->st.last_unlock = v->st.last_restore;
		vol_save_state(c, v);
		vol_audit(c, v, "restore", NULL);
	}
	print_results(c, vols, n, false);
	if (o.all && n == 0 && !c->json && !c->quiet)
		printf("No revoked kmscrypt volumes.\n");
	r = 0;
	kms_set_done(&ks);
	return finish_run(lock, r, vols, n);
}
