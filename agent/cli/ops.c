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
			 cli_kms_failure(r, &err), buf, cli_hint_for_error(r, &err));
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
	if (v->state_r < 0 && v->state_r != -ENOENT) {
		/* Fail closed: the unreadable state may be the revoked mark. */
		char why[sizeof(v->msg)];
		vol_fail(v, -EBADMSG, "%s", vol_refusal(c, v, why, sizeof(why)));
		v->result = "error";
		return;
	}
	if (vol_revoked(v)) {
		v->result = "skipped-revoked";
		(void)vol_refusal(c, v, v->msg, sizeof(v->msg));
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
			json_object_object_add(o, "exit", json_object_new_int(vol_exit(v)));
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
		if (!vols[i]->mapped && !vol_revoked(vols[i]) &&
		    (vols[i]->state_r == 0 || vols[i]->state_r == -ENOENT))
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
		if (!v.mapped && vol_revoked(&v)) {
			char why[sizeof(v.msg)];
			r = log_error_errno(EALREADY, "%s", vol_refusal(c, &v, why, sizeof(why)));
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
			/* Do not hold the lock while waiting: a revoke during a slow boot must not
			 * wait for us.  Whatever changed meanwhile (a revoked mark, a mapping opened
			 * by someone else) is read again under the lock before the next try. */
			close(lock);
			lock = -1;
			usleep(delay_ms * 1000u);
			lock = cli_lock(c);
			if (lock < 0) {
				free(retry);
				r = lock;
				goto out;
			}
			for (size_t i = 0; i < nr; i++) {
				retry[i]->r = 0;
				retry[i]->result = NULL;
				retry[i]->msg[0] = 0;
				r = vol_refresh(c, retry[i]);
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
						 vol_refusal(c, retry[i], why, sizeof(why)));
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
			r = unlock_pass(c, &ks, retry, k);
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
			vol_save_state_or_warn(c, v);
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
		bool want = all_revoked ? vol_revoked(all[i]) : all[i]->mapped;
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
			vol_save_state_or_warn(c, v);
		}
		vol_audit(c, v, "lock", NULL);
	}
	print_results(c, vols, n, false);
	r = 0;
	return finish_run(lock, r, vols, n);
}

/* How long revoke waits for an unlock through the token plugin that has passed its checks to land
 * (libcryptsetup activates after the plugin returned: milliseconds, seconds on a loaded host). */
#define REVOKE_INFLIGHT_WAIT_MS 30000

/* Wait for the token plugin's unlocks of @v that were in flight when the mark was set (state/
 * inflight.c): until their process is gone or their mapping is live.  0, or -EBUSY with
 * *ret_pid when one has not landed in time. */
static int revoke_wait_inflight(const struct cli *c, const struct vol *v, pid_t *ret_pid)
{
	struct inflight *fl = NULL;
	size_t nf = 0;
	int r;

	r = inflight_list(c->state_dir, v->hdr.uuid, &fl, &nf);
	if (r < 0)
		return r;
	for (size_t i = 0; i < nf; i++) {
		double deadline = now_ms() + REVOKE_INFLIGHT_WAIT_MS;
		for (;;) {
			struct volume_mapping m;
			if (!inflight_alive(&fl[i]))
				break;
			if (volume_mapping_find(v->hdr.uuid, &m) == 0 && m.key != VOLUME_KEY_NONE)
				break; /* it landed: the wipe below takes it */
			if (now_ms() > deadline) {
				*ret_pid = fl[i].pid;
				free(fl);
				return -EBUSY;
			}
			usleep(10 * 1000);
		}
		(void)inflight_remove(c->state_dir, v->hdr.uuid, fl[i].pid);
	}
	free(fl);
	return 0;
}

/* Suspend and wipe every mapping of @v (there is normally one; libcryptsetup can be asked for
 * more).  Fills v->map/v->wipe from the first; -errno of the first failure, -EIO when a table
 * still shows a key. */
static int revoke_wipe_all(struct vol *v, int *ret_wiped)
{
	struct volume_mapping **maps = NULL;
	int r, first = 0, wiped = 0;

	r = volume_mapping_list(&maps);
	if (r == -ENOTSUP && !v->mapped)
		return 0; /* no device-mapper here: nothing can be open */
	if (r < 0)
		return r;
	for (size_t i = 0; maps[i]; i++) {
		struct volume_wipe_report rep = {};
		if (strcmp(maps[i]->uuid, v->hdr.uuid) != 0)
			continue;
		r = volume_suspend_wipe(maps[i]->name, &rep);
		if (r == 0 && !rep.table_key_zero)
			r = -EIO;
		if (wiped++ == 0 || (r < 0 && first == 0)) {
			v->map = *maps[i];
			v->mapped = true;
			v->wipe = rep;
			snprintf(v->mapping, sizeof(v->mapping), "%s", maps[i]->name);
		}
		if (r < 0 && first == 0)
			first = r;
	}
	volume_mapping_list_free(maps);
	*ret_wiped = wiped;
	return first;
}

static void revoke_one(const struct cli *c, struct vol *v, const char *reason)
{
	char marks[160] = "";
	double t0 = now_ms();
	pid_t pid = 0;
	int r, r_state, r_hdr, wiped = 0;

	/* Mark first, in the state dir and in the LUKS2 header: even if the wipe below fails, no
	 * reboot, no lost /var/lib/kmscrypt and no other host unlocks the volume. */
	v->st.revoked = true;
	v->st.last_revoke = time(NULL);
	free(v->st.revoke_reason);
	v->st.revoke_reason = reason ? strdup(reason) : NULL;
	r_state = vol_save_state(c, v);
	r_hdr = vol_mark_header(v, v->st.last_revoke, reason);
	if (r_state < 0)
		snprintf(marks, sizeof(marks), "in '%s/volumes/%s.json' (%s)", c->state_dir,
			 v->hdr.uuid, strerror(-r_state));
	if (r_hdr < 0)
		snprintf(marks + strlen(marks), sizeof(marks) - strlen(marks), "%sin its LUKS2 header (%s)",
			 marks[0] ? " nor " : "", strerror(-r_hdr));

	/* Then wipe every mapping, after the unlocks through the token plugin that were in flight
	 * have landed: when revoke succeeds, no mapping of the volume holds a key. */
	r = revoke_wait_inflight(c, v, &pid);
	if (r == -EBUSY) {
		(void)revoke_wipe_all(v, &wiped);
		vol_fail(v, -EBUSY,
			 "Cannot finish revoking '%s' (UUID %s): an unlock through the token plugin "
			 "(PID %d) has not finished after %d s and may still open it. Run 'kmscrypt "
			 "revoke %s' again.",
			 v->device, v->hdr.uuid, (int)pid, REVOKE_INFLIGHT_WAIT_MS / 1000, v->device);
		goto out;
	}
	r = revoke_wipe_all(v, &wiped);
	if (r == -EIO) {
		vol_fail(v, -EIO,
			 "Revoke of '%s' (UUID %s) suspended the device but its dm table still holds a "
			 "key; lock it ('kmscrypt lock %s') to remove it.",
			 v->mapping, v->hdr.uuid, v->mapping);
		goto out;
	}
	if (r < 0) {
		vol_fail(v, r,
			 "Cannot revoke '%s' (UUID %s): %s. %s; run 'kmscrypt revoke %s' again or "
			 "lock it.",
			 v->mapping, v->hdr.uuid, dm_error_hint(r),
			 marks[0] ? "It is NOT marked revoked and its key may still be in dm-crypt"
				  : "It is marked revoked, but its key may still be in dm-crypt",
			 v->mapping);
		goto out;
	}
	if (marks[0]) {
		/* Persist or fail: the wipe happened, the promise that it stays so did not. */
		vol_fail(v, r_state < 0 ? r_state : r_hdr,
			 "Revoked '%s' (UUID %s)%s, but the revoked mark could not be saved %s: a "
			 "reboot or another host could unlock it. Fix that and run 'kmscrypt revoke %s' "
			 "again.",
			 v->device, v->hdr.uuid, wiped ? ": key wiped" : " (it is not open)", marks,
			 v->device);
		v->code = r_state < 0 ? KMSCRYPT_EXIT_FAILURE : KMSCRYPT_EXIT_VOLUME;
		goto out;
	}
	v->result = "revoked";
	v->ms = now_ms() - t0;
	if (!wiped)
		snprintf(v->msg, sizeof(v->msg),
			 "Revoked '%s' (UUID %s): it is not open; it stays locked until 'kmscrypt "
			 "restore'.",
			 v->device, v->hdr.uuid);
	else
		snprintf(v->msg, sizeof(v->msg),
			 "Revoked '%s' (UUID %s): suspended, dm-crypt key wiped (%.1f ms), %d keyring "
			 "key%s invalidated; %.1f ms in all. I/O waits until 'kmscrypt restore %s'.",
			 v->mapping, v->hdr.uuid, (double)v->wipe.suspend_usec / 1e3,
			 v->wipe.keys_invalidated, v->wipe.keys_invalidated == 1 ? "" : "s", v->ms,
			 v->mapping);
	return;
out:
	v->result = "error";
	v->ms = now_ms() - t0;
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
		revoke_one(c, vols[i], o.reason);
		vol_audit(c, vols[i], "revoke", o.reason);
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

		if (!vol_revoked(v) && v->mapped && !v->map.suspended) {
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
		/* The KMS has answered and the device is back: now clear both marks, header first
		 * (a crash in between leaves the state mark, which still refuses on this host). */
		r = vol_mark_header(v, 0, NULL);
		v->st.revoked = false;
		free(v->st.revoke_reason);
		v->st.revoke_reason = NULL;
		v->st.last_restore = time(NULL);
		if (!v->mapped)
			v->st.last_unlock = v->st.last_restore;
		if (r < 0) {
			v->st.revoked = true; /* keep the two marks in agreement */
			(void)vol_save_state(c, v);
			vol_fail(v, r,
				 "Restored '%s' (UUID %s): it is %s, but the revoked mark could not be "
				 "removed from its LUKS2 header (%s), so 'unlock' will refuse it after a "
				 "reboot. Fix that and run 'kmscrypt restore %s' again.",
				 v->mapping, v->hdr.uuid, v->mapped ? "resumed" : "open", strerror(-r),
				 v->mapping);
			v->code = KMSCRYPT_EXIT_VOLUME;
			v->result = "error";
			vol_audit(c, v, "restore", NULL);
			continue;
		}
		r = vol_save_state(c, v);
		if (r < 0) {
			vol_fail(v, r,
				 "Restored '%s' (UUID %s): it is %s, but its state '%s/volumes/%s.json' "
				 "could not be saved (%s) and may still say revoked. Fix that and run "
				 "'kmscrypt restore %s' again.",
				 v->mapping, v->hdr.uuid, v->mapped ? "resumed" : "open", c->state_dir,
				 v->hdr.uuid, strerror(-r), v->mapping);
			v->code = KMSCRYPT_EXIT_FAILURE;
			v->result = "error";
			vol_audit(c, v, "restore", NULL);
			continue;
		}
		v->result = "restored";
		snprintf(v->msg, sizeof(v->msg),
			 "Restored '%s' (UUID %s) through KMS '%s': %s in %.0f ms.", v->mapping,
			 v->hdr.uuid, v->tok.kms, v->mapped ? "resumed" : "reopened", v->ms);
		vol_audit(c, v, "restore", NULL);
	}
	print_results(c, vols, n, false);
	if (o.all && n == 0 && !c->json && !c->quiet)
		printf("No revoked kmscrypt volumes.\n");
	r = 0;
	kms_set_done(&ks);
	return finish_run(lock, r, vols, n);
}
