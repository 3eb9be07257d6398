/* SPDX-License-Identifier: MIT */
/* The flows every front end shares (core/flows.h): unlock, lock, revoke, restore. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/flows.h"
#include "kmscrypt/exit.h"
#include "kmscrypt/token.h"
#include "state/state.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/volume.h"

#define UNLOCK_PARALLEL 8

/* core_unwrap() of a version-2 token: every KMS of the binding, answers kept in v->answers. */
static int unwrap_multi(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
			const char *verb, struct secret **ret, struct kms_error *ret_err)
{
	struct kms_handle *hs[KMSCRYPT_TOKEN_MAX_WRAPS];
	int hr[KMSCRYPT_TOKEN_MAX_WRAPS];
	char buf[600];
	unsigned ok;
	int r;

	free(v->answers);
	v->answers = calloc(v->tok.n_wraps, sizeof(*v->answers));
	if (!v->answers)
		return v->r = -ENOMEM;
	for (size_t i = 0; i < v->tok.n_wraps; i++)
		hs[i] = kms_set_get(c, ks, v->tok.wraps[i].kms, &hr[i]);
	r = core_token_unwrap(hs, hr, v->hdr.uuid, &v->tok, !strcmp(verb, "check"), ret,
			      v->answers);
	if (r == 0)
		return 0;
	v->r = r;
	ok = core_answers_ok(&v->tok, v->answers);
	core_answers_describe(&v->tok, v->answers, buf, sizeof(buf));
	if (snprintf(v->msg, sizeof(v->msg), "Cannot %s '%s' (UUID %s): %u of its %zu KMSs answered, "
		     "%u needed: %s; %s.",
		 verb, v->device, v->hdr.uuid, ok, v->tok.n_wraps, v->tok.threshold, buf,
		 core_kms_transient(r) ? "retry when enough are reachable"
				       : "too few can ever answer: open it with its recovery key "
					 "and bind a new set ('A KMS of a threshold binding is "
					 "gone' in kmscrypt(8))") >= (int)sizeof(v->msg))
		v->msg[sizeof(v->msg) - 2] = '.'; /* truncated: still one line */
	if (ret_err)
		for (size_t i = 0; i < v->tok.n_wraps; i++)
			if (v->answers[i].r == r) {
				*ret_err = v->answers[i].err;
				break;
			}
	return r;
}

int core_unwrap(const struct core_ctx *c, struct kms_set *ks, struct vol *v, const char *verb,
		struct secret **ret, struct kms_error *ret_err)
{
	struct kms_handle *h;
	struct kms_error err = {};
	char buf[512];
	int r;

	if (v->tok.n_wraps > 1)
		return unwrap_multi(c, ks, v, verb, ret, ret_err);
	h = kms_set_get(c, ks, v->tok.kms, &r);
	if (!h && core_unwrap_fallback(c, ks, v, ret) == 0)
		return 0; /* another kmscrypt token (a rotation in progress) opened it */
	if (!h) {
		v->r = r;
		snprintf(v->msg, sizeof(v->msg),
			 "Cannot %s '%s' (UUID %s): KMS configuration '%s' is unusable (see above).",
			 verb, v->device, v->hdr.uuid, v->tok.kms);
		return r;
	}
	r = kms_handle_unwrap(h, v->hdr.uuid, &v->tok, ret, &err);
	if (r < 0 && core_unwrap_fallback(c, ks, v, ret) == 0)
		return 0; /* another kmscrypt token (a rotation in progress) opened it */
	if (r < 0) {
		kms_error_describe(&err, buf, sizeof(buf));
		v->r = r;
		snprintf(v->msg, sizeof(v->msg), "Cannot %s '%s' (UUID %s): KMS '%s' (%s) %s: %s; %s.",
			 verb, v->device, v->hdr.uuid, v->tok.kms, h->cfg.provider->name,
			 core_kms_failure(r, &err), buf, core_hint_for_error(r, &err));
		if (ret_err)
			*ret_err = err;
	}
	return r;
}

void vol_fail(struct vol *v, int r, const char *fmt, ...)
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
	const struct core_ctx *c;
	struct kms_set *ks; /* fully opened before the threads start: read-only for them */
	struct vol *v;
	struct volume_pool *pool; /* activation workers, or NULL: activate in this process */
};

static bool unlock_candidate(const struct vol *v)
{
	return !v->mapped && !vol_revoked(v) && (v->state_r == 0 || v->state_r == -ENOENT);
}

static void unlock_one(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
		       struct volume_pool *pool)
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
	r = core_unwrap(c, ks, v, "unlock", &secret, NULL);
	if (r < 0)
		goto out;
	r = volume_pool_activate(pool, v->device, v->mapping, v->tok.keyslot, secret);
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
	if (v->r == 0 && !strcmp(v->result, "unlocked") && v->answers)
		snprintf(v->msg, sizeof(v->msg),
			 "Unlocked '%s' (UUID %s) as /dev/mapper/%s through %u of its %zu KMSs (%u "
			 "needed) in %.0f ms.",
			 v->device, v->hdr.uuid, v->mapping, core_answers_ok(&v->tok, v->answers),
			 v->tok.n_wraps, v->tok.threshold, v->ms);
	else if (v->r == 0 && !strcmp(v->result, "unlocked"))
		snprintf(v->msg, sizeof(v->msg),
			 "Unlocked '%s' (UUID %s) as /dev/mapper/%s through KMS '%s' in %.0f ms.",
			 v->device, v->hdr.uuid, v->mapping, v->tok.kms, v->ms);
	if (v->r < 0)
		v->result = "error";
}

static void *unlock_thread(void *p)
{
	struct unlock_job *j = p;

	unlock_one(j->c, j->ks, j->v, j->pool);
	return NULL;
}

/*
 * Unlock @vols (concurrently when more than one); each volume's outcome is in the volume.
 * The unwraps run in threads; the activations in worker processes (volume_pool_start(), one per
 * CPU, forked here before any thread exists), since one process activates one volume at a time.
 */
int core_unlock(const struct core_ctx *c, struct kms_set *ks, struct vol **vols, size_t n)
{
	struct volume_pool *pool = NULL;
	size_t cands = 0;
	unsigned workers;

	for (size_t i = 0; i < n; i++)
		cands += unlock_candidate(vols[i]);
	workers = (unsigned)MIN((size_t)volume_pool_default_size(), cands);
	if (workers >= 2 && volume_pool_start(workers, &pool) < 0) {
		log_debug("Cannot start activation workers; activating one volume at a time.");
		pool = NULL;
	}
	/* Open each KMS configuration once, before any thread starts. */
	for (size_t i = 0; i < n; i++) {
		int rr;
		if (unlock_candidate(vols[i])) {
			for (size_t w = 0; w < vols[i]->tok.n_wraps; w++)
				(void)kms_set_get(c, ks, vols[i]->tok.wraps[w].kms, &rr);
			/* and those of its other tokens (core_unwrap_fallback()); a header with
			 * one kmscrypt token has none: no second read of it */
			if (vols[i]->hdr.kmscrypt_tokens != 1)
				core_open_token_kms(c, ks, vols[i]);
		}
	}
	if (n == 1) {
		unlock_one(c, ks, vols[0], pool);
	} else if (n > 1) {
		/* Volumes unlock concurrently; one failing does not stop the others. */
		struct unlock_job *jobs = calloc(n, sizeof(*jobs));
		pthread_t *tids = calloc(n, sizeof(*tids));
		if (!jobs || !tids) {
			free(jobs);
			free(tids);
			volume_pool_stop(pool);
			return -ENOMEM;
		}
		for (size_t base = 0; base < n; base += UNLOCK_PARALLEL) {
			size_t end = MIN(n, base + UNLOCK_PARALLEL);
			for (size_t i = base; i < end; i++) {
				jobs[i] = (struct unlock_job){c, ks, vols[i], pool};
				if (pthread_create(&tids[i], NULL, unlock_thread, &jobs[i]) != 0) {
					tids[i] = 0;
					unlock_one(c, ks, vols[i], pool);
				}
			}
			for (size_t i = base; i < end; i++)
				if (tids[i])
					pthread_join(tids[i], NULL);
		}
		free(jobs);
		free(tids);
	}
	volume_pool_stop(pool);
	return 0;
}

void core_lock_volume(const struct core_ctx *c, struct vol *v)
{
	double t0 = now_ms();
	int r;

	if (!v->mapped) {
		v->result = "already-locked";
		snprintf(v->msg, sizeof(v->msg), "'%s' (UUID %s) is not open.", v->device,
			 v->hdr.uuid);
		return;
	}
	r = volume_deactivate(v->map.name);
	v->ms = now_ms() - t0;
	if (r < 0) {
		vol_fail(v, r, "Cannot lock '%s' (UUID %s): %s.", v->map.name, v->hdr.uuid,
			 r == -EBUSY ? "it is in use (unmount it first)" : dm_error_hint(r));
		v->result = "error";
		return;
	}
	v->result = "locked";
	snprintf(v->msg, sizeof(v->msg), "Locked '%s' (UUID %s).", v->map.name, v->hdr.uuid);
	v->mapped = false;
	v->st.last_lock = time(NULL);
	vol_save_state_or_warn(c, v);
}

/* How long revoke waits for an unlock through the token plugin that has passed its checks to land
 * (libcryptsetup activates after the plugin returned: milliseconds, seconds on a loaded host). */
#define REVOKE_INFLIGHT_WAIT_MS 30000

/* Wait for the token plugin's unlocks of @v that were in flight when the mark was set (state/
 * inflight.c): until their process is gone or their mapping is live.  0, or -EBUSY with
 * *ret_pid when one has not landed in time. */
static int revoke_wait_inflight(const struct core_ctx *c, const struct vol *v, pid_t *ret_pid)
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

/* Suspend and wipe every mapping of @v in @maps (volume_mapping_list_of() returned @rl; there is
 * normally one; libcryptsetup can be asked for more).  Fills v->map/v->wipe from the first; -errno
 * of the first failure, -EIO when a table still shows a key. */
static int revoke_wipe_maps(struct vol *v, int rl, struct volume_mapping **maps, int *ret_wiped)
{
	int r, first = 0, wiped = 0;

	if (rl == -ENOTSUP && !v->mapped)
		return 0; /* no device-mapper here: nothing can be open */
	if (rl < 0)
		return rl;
	for (size_t i = 0; maps[i]; i++) {
		struct volume_wipe_report rep = {};
		r = volume_suspend_wipe(maps[i]->name, &rep);
		if (r == 0 && !rep.table_key_zero)
			r = -EIO;
		if (r == 0) {
			/* the list was read before the wipe: v->map tells what is now (status,
			 * the watcher's metrics of this very round) */
			maps[i]->suspended = true;
			maps[i]->key = VOLUME_KEY_WIPED;
			maps[i]->key_desc[0] = 0;
		}
		if (wiped++ == 0 || (r < 0 && first == 0)) {
			v->map = *maps[i];
			v->mapped = true;
			v->wipe = rep;
			snprintf(v->mapping, sizeof(v->mapping), "%s", maps[i]->name);
		}
		if (r < 0 && first == 0)
			first = r;
	}
	*ret_wiped = wiped;
	return first;
}

/* A re-encryption pending (stopped, killed, or not resumed after a crash; a running one was
 * stopped by core_reencrypt_preempt() before the lock): crypt_suspend() refuses, and the keys are
 * in every table of its dm stack (volume/stack.c).  @stack: volume_mapping_list_of() found a dm
 * device of the volume other than plain crypt mappings.  @hdr_written: the revoked mark was just
 * written to the LUKS2 header and read back; libcryptsetup refuses every header change while a
 * re-encryption is pending (its online-reencrypt requirement), so none was, and with no other
 * kmscrypt token (a "kmscrypt-reencrypt" journal) there is no kmscrypt re-encryption either: no
 * second header load then.  One starting since cannot go unseen: an online one builds its stack
 * (seen in the list, read after the mark) and crypt_suspend() refuses a pending one (an error). */
static bool revoke_needs_stack(const struct vol *v, bool stack, bool hdr_written)
{
	struct volume_reencrypt_info ri;

	if (stack)
		return true;
	if (hdr_written && v->hdr.kmscrypt_tokens == 1)
		return false;
	return volume_reencrypt_info(v->device, &ri) == 0 && (ri.pending || ri.journal);
}

/* Suspend and wipe the whole stack; keep what restore needs in the state record. */
static int revoke_wipe_stack(const struct core_ctx *c, struct vol *v, int *ret_wiped)
{
	_cleanup_free_ char *plan = NULL;
	char top[sizeof(v->map.name)];
	int r, k;

	r = volume_stack_suspend_wipe(v->hdr.uuid, &plan, &v->wipe, top, sizeof(top));
	if (r == -ENOENT || (r == -ENOTSUP && !v->mapped))
		return 0; /* not open */
	*ret_wiped = 1;
	v->mapped = true;
	snprintf(v->map.name, sizeof(v->map.name), "%s", top);
	snprintf(v->mapping, sizeof(v->mapping), "%s", top);
	v->map.suspended = true;
	/* a second revoke finds the keys wiped already: keep the first plan */
	if (plan && (plan[0] == 'K' || strstr(plan, "\nK "))) {
		free(v->st.stack_plan);
		v->st.stack_plan = TAKE_PTR(plan);
		k = vol_save_state(c, v);
		if (k < 0 && r == 0)
			r = k;
	}
	if (r == -EBADMSG || (r == 0 && !v->wipe.table_key_zero))
		return -EIO;
	return r;
}

void core_revoke(const struct core_ctx *c, struct vol *v, const char *reason, bool by_watcher)
{
	char marks[160] = "";
	double t0 = now_ms();
	pid_t pid = 0;
	bool hdr_refused = false, stack = false;
	struct volume_mapping **maps = NULL;
	int r, rl, r_state, r_hdr, wiped = 0;

	/* Mark first, in the state dir and in the LUKS2 header: even if the wipe below fails, no
	 * reboot, no lost /var/lib/kmscrypt and no other host unlocks the volume. */
	v->st.revoked = true;
	v->st.revoked_by_watcher = by_watcher;
	v->st.last_revoke = time(NULL);
	free(v->st.revoke_reason);
	v->st.revoke_reason = reason ? strdup(reason) : NULL;
	r_state = vol_save_state(c, v);
	r_hdr = vol_mark_header(v, v->st.last_revoke, reason);
	if (r_hdr == -EBADMSG && r_state == 0) {
		/* libcryptsetup 2.6 refuses every LUKS2 header change while a re-encryption is
		 * pending (its online-reencrypt requirement): the state mark holds on this host */
		struct volume_reencrypt_info ri;
		if (volume_reencrypt_info(v->device, &ri) == 0 && (ri.pending || ri.journal)) {
			r_hdr = 0;
			hdr_refused = true;
		}
	}
	if (r_state < 0)
		snprintf(marks, sizeof(marks), "in '%s/volumes/%s.json' (%s)", c->state_dir,
			 v->hdr.uuid, strerror(-r_state));
	if (r_hdr < 0)
		snprintf(marks + strlen(marks), sizeof(marks) - strlen(marks), "%sin its LUKS2 header (%s)",
			 marks[0] ? " nor " : "", strerror(-r_hdr));

	/* Then wipe every mapping, after the unlocks through the token plugin that were in flight
	 * have landed: when revoke succeeds, no mapping of the volume holds a key. */
	r = revoke_wait_inflight(c, v, &pid);
	/* The volume's dm devices, read now, after its mark (an unlock checks the mark first, and
	 * those in flight through the token plugin have landed): one DM_DEVICE_LIST and the tables
	 * of this volume's own devices only, whatever else is open (volume_mapping_list_of()). */
	rl = volume_mapping_list_of(v->hdr.uuid, &maps, &stack);
	if (r == -EBUSY) {
		(void)revoke_wipe_maps(v, rl, maps, &wiped);
		vol_fail(v, -EBUSY,
			 "Cannot finish revoking '%s' (UUID %s): an unlock through the token plugin "
			 "(PID %d) has not finished after %d s and may still open it. Run 'kmscrypt "
			 "revoke %s' again.",
			 v->device, v->hdr.uuid, (int)pid, REVOKE_INFLIGHT_WAIT_MS / 1000, v->device);
		goto out;
	}
	if (revoke_needs_stack(v, rl == 0 && stack, r_hdr == 0 && !hdr_refused)) {
		r = revoke_wipe_stack(c, v, &wiped);
		if (r == -EIO) {
			vol_fail(v, -EIO,
				 "Revoke of '%s' (UUID %s) FAILED: a dm table of its pending "
				 "re-encryption still holds a key after the wipe ('dmsetup table "
				 "--showkeys'); power it off or remove its dm devices.",
				 v->device, v->hdr.uuid);
			goto out;
		}
	} else
		r = revoke_wipe_maps(v, rl, maps, &wiped);
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
	if (hdr_refused)
		strncat(v->msg,
			" A re-encryption is pending: libcryptsetup refuses LUKS2 header changes "
			"until it finishes, so the revoked mark is in the state dir only (this host); "
			"revoke access at the KMS to stop other hosts.",
			sizeof(v->msg) - strlen(v->msg) - 1);
	volume_mapping_list_free(maps);
	return;
out:
	volume_mapping_list_free(maps);
	v->result = "error";
	v->ms = now_ms() - t0;
}

/* The restore flow (core/flows.h). */
void core_restore(const struct core_ctx *c, struct kms_set *ks, struct vol *v)
{
	core_restore_in(c, ks, v, NULL);
}

/* After a resume or an activation that worked: v->map says what is now (the watcher's state of
 * this round), not what was read before. */
static void restore_landed(struct vol *v)
{
	if (!v->mapped)
		snprintf(v->map.name, sizeof(v->map.name), "%s", v->mapping);
	v->mapped = true;
	v->map.suspended = false;
	v->map.key = VOLUME_KEY_KEYRING;
}

void core_restore_in(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
		     struct volume_pool *pool)
{
	_cleanup_secret_ struct secret *secret = NULL;
	double t0 = now_ms();
	int r;

	if (!vol_revoked(v) && v->mapped && !v->map.suspended) {
		v->result = "not-revoked";
		snprintf(v->msg, sizeof(v->msg), "'%s' (UUID %s) is not revoked; nothing to do.",
			 v->mapping, v->hdr.uuid);
		return;
	}
	/* revoked while a re-encryption was pending: its dm stack, as revoke left it */
	if (!(v->has_state && v->st.stack_plan) && vol_revoked(v) &&
	    volume_stack_present(v->hdr.uuid) > 0) {
		vol_fail(v, -ENOKEY,
			 "Cannot restore '%s' (UUID %s) in place: the record of its re-encryption's "
			 "dm keys is missing from '%s/volumes/%s.json'; reboot (or unmount and "
			 "'dmsetup remove --force' its devices), then 'kmscrypt restore %s' and "
			 "'kmscrypt reencrypt --resume %s'.",
			 v->device, v->hdr.uuid, c->state_dir, v->hdr.uuid, v->device, v->device);
		v->result = "error";
		v->ms = now_ms() - t0;
		vol_audit(c, v, "restore", NULL);
		return;
	}
	r = core_unwrap(c, ks, v, "restore", &secret, NULL);
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
		return;
	}
	if (v->has_state && v->st.stack_plan) {
		r = volume_stack_resume(v->hdr.uuid, v->device, secret, v->st.stack_plan);
		if (r == 0 || r == -ENOENT) {
			free(v->st.stack_plan);
			v->st.stack_plan = NULL;
			v->mapped = r == 0;
		}
		if (r == -ENOENT) /* closed since: open it again */
			r = volume_activate(v->device, v->mapping, v->tok.keyslot, secret);
	} else if (v->mapped && v->map.suspended)
		r = volume_pool_resume(pool, v->map.name, v->tok.keyslot, secret);
	else if (!v->mapped)
		r = volume_pool_activate(pool, v->device, v->mapping, v->tok.keyslot, secret);
	else
		r = 0;
	secret = secret_free(secret);
	v->ms = now_ms() - t0;
	if (r == -ECHILD) {
		vol_fail(v, -EIO,
			 "Cannot restore '%s' (UUID %s): its worker process died while resuming it; "
			 "see 'kmscrypt status %s' and run 'kmscrypt restore %s' again.",
			 v->mapping, v->hdr.uuid, v->mapping, v->mapping);
		v->result = "error";
		vol_audit(c, v, "restore", NULL);
		return;
	}
	if (r < 0) {
		vol_fail(v, r == -EPERM ? -EBADMSG : r,
			 "Cannot restore '%s' (UUID %s): %s.", v->mapping, v->hdr.uuid,
			 r == -EPERM ? "the unwrapped secret does not open its keyslot"
				     : dm_error_hint(r));
		v->result = "error";
		vol_audit(c, v, "restore", NULL);
		return;
	}
	/* The KMS has answered and the device is back: now clear both marks, header first
	 * (a crash in between leaves the state mark, which still refuses on this host). */
	r = vol_mark_header(v, 0, NULL);
	v->st.revoked = false;
	v->st.revoked_by_watcher = false;
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
		restore_landed(v);
		vol_audit(c, v, "restore", NULL);
		return;
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
		restore_landed(v);
		vol_audit(c, v, "restore", NULL);
		return;
	}
	v->result = "restored";
	if (v->answers)
		snprintf(v->msg, sizeof(v->msg),
			 "Restored '%s' (UUID %s) through %u of its %zu KMSs: %s in %.0f ms.",
			 v->mapping, v->hdr.uuid, core_answers_ok(&v->tok, v->answers),
			 v->tok.n_wraps, v->mapped ? "resumed" : "reopened", v->ms);
	else
		snprintf(v->msg, sizeof(v->msg),
			 "Restored '%s' (UUID %s) through KMS '%s': %s in %.0f ms.", v->mapping,
			 v->hdr.uuid, v->tok.kms, v->mapped ? "resumed" : "reopened", v->ms);
	restore_landed(v);
	vol_audit(c, v, "restore", NULL);
}

