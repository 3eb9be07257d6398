/* SPDX-License-Identifier: MIT */
/*
 * `kmscrypt watch`: the remote kill switch (kmscrypt(8), WATCH).  Every interval of each KMS
 * configuration it asks the KMS whether the key of each open volume bound to it is still usable,
 * with the most faithful probe there is: an unwrap of the volume's own wrapped secret (wiped at
 * once).  All volumes of one configuration share one round and one connection.  A verdict is
 * usable, denied (revoked, disabled, deleted, credentials revoked), unavailable (network, 5xx,
 * throttled, timeout) or invalid (a malformed reply or token).
 *
 *   denied RevokeAfter times in a row  -> OnRevoke: wipe (the revoke flow: mark, suspend, key wipe),
 *                                         close (wipe, then remove the mapping once unused), alert
 *   unavailable / invalid              -> a warning, however long: an outage never wipes
 *   usable again, AutoRestore=yes      -> a volume the watcher wiped is restored; never one an
 *                                         administrator revoked by hand
 *
 * The watcher holds no lock between rounds; an action takes the state-dir lock like any command.
 * Signals: SIGHUP reloads (configurations and volumes are read again every round anyway; the
 * reload also restarts every configuration's schedule), SIGTERM/SIGINT stop.  sd_notify: READY=1
 * after the first round, STATUS=, WATCHDOG=1 at half of WatchdogSec=, STOPPING=1.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec/prom.h"
#include "config/kms_config.h"
#include "core/flows.h"
#include "kmscrypt/exit.h"
#include "state/state.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/secret.h"
#include "watch/metrics.h"
#include "watch/notify.h"
#include "watch/watch.h"

#define WATCH_ACTION_LOCK_SEC 30 /* an action waits this long for a command holding the lock */

static volatile sig_atomic_t got_hup, got_term;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		got_hup = 1;
	else
		got_term = 1;
}

/* One KMS configuration the watcher has met: its settings, schedule and counters. */
struct wkms {
	char *name;
	char provider[32];
	struct kms_watch_settings ws;
	int load_r;       /* < 0: the configuration cannot be loaded (logged on change) */
	double next_due;  /* monotonic ms */
	double probe_ms;  /* the last round */
	uint64_t probes, errors_denied, errors_unavailable, errors_invalid;
};

/* What the watcher remembers of a volume between rounds (the state file holds it too). */
struct wvol {
	char uuid[40];
	char mapping[128];
	char kms[80];
	char state[32];
	char verdict[16]; /* "" never probed */
	double last_probe;
	unsigned denials;
	unsigned unavailable_rounds;
	bool seen;        /* in the last scan */
};

struct watcher {
	const struct core_ctx *c;
	uint64_t wd_usec;  /* WatchdogSec= in microseconds, 0: none */
	double next_ping;  /* monotonic ms */
	const char *metrics_file;
	struct wkms *kms;
	size_t n_kms;
	struct wvol *vols;
	size_t n_vols;
	uint64_t rounds;
	double round_ms, last_round; /* duration (ms), start (unix seconds) */
	int metrics_r;               /* the last write's result: a failure is logged when it changes */
};

/* A watchdog ping when one is due: between rounds and between the volumes of a round (a round of
 * KMSes that time out can take longer than WatchdogSec=). */
static void watchdog_ping(struct watcher *w)
{
	double now = now_ms();

	if (w->wd_usec && now >= w->next_ping) {
		(void)notify_send("WATCHDOG=1");
		w->next_ping = now + (double)w->wd_usec / 2000.0;
	}
}

static const char *verdict_of(int r)
{
	switch (r) {
	case 0:
		return "usable";
	case -EACCES:
		return "denied";
	case -EBADMSG:
	case -EINVAL:
		return "invalid";
	default:
		return "unavailable";
	}
}

static double jitter(unsigned interval_sec)
{
	/* up to +10%, so that a fleet's watchers do not probe in lockstep */
	return interval_sec * 1000.0 * (1.0 + (double)(random() % 1000) / 10000.0);
}

static struct wkms *kms_find(struct watcher *w, const char *name)
{
	struct wkms *n;

	for (size_t i = 0; i < w->n_kms; i++)
		if (strcmp(w->kms[i].name, name) == 0)
			return &w->kms[i];
	n = realloc(w->kms, (w->n_kms + 1) * sizeof(*w->kms));
	if (!n)
		return NULL;
	w->kms = n;
	n = &w->kms[w->n_kms];
	*n = (struct wkms){.name = strdup(name), .load_r = 1};
	if (!n->name)
		return NULL;
	w->n_kms++;
	return n;
}

/* (Re)read the settings of @k; logs when it changes between usable and not. */
static void kms_reload(struct watcher *w, struct wkms *k)
{
	struct kms_config cfg = {};
	struct config_error err = {};
	int r;

	r = core_kms_load(w->c, k->name, &cfg);
	if (r == 0)
		r = kms_config_watch_settings(&cfg, &k->ws, &err);
	if (r == 0)
		snprintf(k->provider, sizeof(k->provider), "%s", cfg.provider->name);
	if (r < 0 && k->load_r >= 0)
		log_error("KMS configuration '%s' cannot be used (see above); its volumes are not "
			  "probed until it is fixed (then 'systemctl reload kmscrypt-watch').",
			  k->name);
	k->load_r = r;
	kms_config_done(&cfg);
}

static struct wvol *vol_find(struct watcher *w, const char *uuid)
{
	struct wvol *n;

	for (size_t i = 0; i < w->n_vols; i++)
		if (strcmp(w->vols[i].uuid, uuid) == 0)
			return &w->vols[i];
	n = realloc(w->vols, (w->n_vols + 1) * sizeof(*w->vols));
	if (!n)
		return NULL;
	w->vols = n;
	n = &w->vols[w->n_vols++];
	*n = (struct wvol){};
	snprintf(n->uuid, sizeof(n->uuid), "%s", uuid);
	return n;
}

static void audit(struct watcher *w, const struct vol *v, const char *action, const char *result,
		  const char *reason)
{
	int r = audit_append(w->c->state_dir, &(struct audit_record){
						      .action = action,
						      .uuid = v->hdr.uuid,
						      .mapping = v->mapping,
						      .device = v->device,
						      .kms = v->tok.kms,
						      .reason = reason,
						      .result = result,
						      .duration_ms = -1,
					      });
	if (r < 0)
		log_warning_errno(r, "Cannot append to the audit log in '%s': %m", w->c->state_dir);
}

static const char *times(unsigned n)
{
	static const char *const words[] = {"never", "once", "twice"};
	static __thread char buf[32];

	if (n < 3)
		return words[n];
	snprintf(buf, sizeof(buf), "%u times", n);
	return buf;
}

/* Under the lock, on a fresh view of @v: the action for a volume denied RevokeAfter times. */
/* The probe's outcome is in @v (core_unwrap() fills it): a flow starts from a clean one. */
static void outcome_reset(struct vol *v)
{
	v->r = 0;
	v->code = 0;
	v->result = NULL;
	v->msg[0] = 0;
}

static void act_on_denial(struct watcher *w, struct wkms *k, struct vol *v, struct wvol *wv,
			  const struct kms_error *err)
{
	char reason[160], desc[512];
	int lock;

	kms_error_describe(err, desc, sizeof(desc));
	snprintf(reason, sizeof(reason), "kms-denied: %s", err->code[0] ? err->code : "denied");
	if (k->ws.on_revoke == KMS_ON_REVOKE_ALERT) {
		if (wv->denials == k->ws.revoke_after) {
			log_error("KMS '%s' (%s) denied access %s: %s; alert only (OnRevoke=alert): "
				  "the key of '%s' stays loaded.",
				  k->name, k->provider, times(wv->denials), desc, v->mapping);
			audit(w, v, "watch-alert", desc, reason);
		}
		return;
	}
	/* a re-encryption of this volume holds the lock and would load its keys again: stop it */
	(void)core_reencrypt_preempt(w->c, NULL, v->hdr.uuid);
	lock = core_lock(w->c);
	if (lock < 0)
		return; /* logged; tried again next round */
	outcome_reset(v);
	if (vol_refresh(w->c, v) < 0 || (!v->mapped && !v->stacked))
		goto out;
	/* (held by a re-encryption's dm stack only: core_revoke() wipes every table of it) */
	if (v->stacked ? !vol_revoked(v) : !v->map.suspended || v->map.key == VOLUME_KEY_KEYRING) {
		core_revoke(w->c, v, reason, true);
		if (v->r < 0) {
			log_error("KMS '%s' (%s) denied access %s: %s; wiping the key of '%s' "
				  "failed: %s",
				  k->name, k->provider, times(wv->denials), desc, v->mapping, v->msg);
			audit(w, v, "watch-wipe", v->msg, reason);
			goto out;
		}
		if (v->tok.revoked)
			log_error("KMS '%s' (%s) denied access %s: %s; wiped key of '%s'.", k->name,
				  k->provider, times(wv->denials), desc, v->mapping);
		else
			/* core_revoke() succeeds without the header mark while a re-encryption is
			 * pending (libcryptsetup refuses header changes then): say so */
			log_error("KMS '%s' (%s) denied access %s: %s; wiped key of '%s'. A "
				  "re-encryption is pending, so the revoked mark is in the state dir "
				  "only (this host), not in its LUKS2 header: the KMS's denial is what "
				  "keeps other hosts out.",
				  k->name, k->provider, times(wv->denials), desc, v->mapping);
		audit(w, v, "watch-wipe", "ok", reason); /* the wipe is; status shows the marks */
	}
	if (k->ws.on_revoke == KMS_ON_REVOKE_CLOSE && v->mapped) {
		char name[sizeof(v->mapping)];
		snprintf(name, sizeof(name), "%s", v->map.name);
		outcome_reset(v);
		core_lock_volume(w->c, v);
		if (v->r < 0) {
			if (v->r != -EBUSY)
				log_warning("%s", v->msg);
			/* still in use: the key is wiped; the mapping goes once nothing holds it */
		} else {
			log_notice("Closed '%s' after the KMS denied access (OnRevoke=close).", name);
			audit(w, v, "watch-close", "ok", reason);
		}
	}
out:
	close(lock);
}

static void act_on_usable(struct watcher *w, struct wkms *k, struct kms_set *ks, struct vol *v)
{
	int lock;

	lock = core_lock(w->c);
	if (lock < 0)
		return;
	outcome_reset(v);
	if (vol_refresh(w->c, v) < 0)
		goto out;
	/* Only what the watcher itself revoked: an administrator's revoke is theirs to lift. */
	if (!(v->has_state && v->st.revoked && v->st.revoked_by_watcher))
		goto out;
	core_restore(w->c, ks, v);
	if (v->r < 0) {
		log_error("Auto-restore of '%s' failed: %s", v->mapping, v->msg);
		audit(w, v, "watch-restore", v->msg, NULL);
	} else {
		log_notice("KMS '%s' (%s) grants access again; restored '%s' (AutoRestore=yes).",
			   k->name, k->provider, v->mapping);
		audit(w, v, "watch-restore", "ok", NULL);
	}
out:
	close(lock);
}

/* Save what the watcher saw into the volume's state file (informational: skipped, not waited for,
 * while a command holds the lock). */
static void save_watch_state(struct watcher *w, struct vol *v, const struct wvol *wv)
{
	struct core_ctx quick = *w->c;
	int lock;

	quick.lock_timeout_sec = 0;
	lock = state_lock(w->c->state_dir, 0);
	if (lock < 0)
		return;
	volume_state_done(&v->st);
	v->state_r = state_load(w->c->state_dir, v->hdr.uuid, &v->st);
	v->has_state = v->state_r == 0;
	if (v->state_r == 0 || v->state_r == -ENOENT) {
		free(v->st.watch_verdict);
		v->st.watch_verdict = strdup(wv->verdict);
		v->st.watch_last_probe = (time_t)wv->last_probe;
		v->st.watch_denials = wv->denials;
		vol_save_state_or_warn(&quick, v);
	}
	close(lock);
}

/* One probe of @v; updates @wv, logs and audits verdict changes, acts. */
static void probe_volume(struct watcher *w, struct wkms *k, struct kms_set *ks, struct vol *v,
			 struct wvol *wv)
{
	_cleanup_secret_ struct secret *secret = NULL;
	struct kms_error err = {};
	char desc[512], prev[16];
	const char *verdict;
	int r;

	r = core_unwrap(w->c, ks, v, "probe", &secret, &err);
	secret = secret_free(secret); /* the probe needs the answer, never the secret */
	verdict = verdict_of(r);
	k->probes++;
	if (r == -EACCES)
		k->errors_denied++;
	else if (r < 0 && !strcmp(verdict, "invalid"))
		k->errors_invalid++;
	else if (r < 0)
		k->errors_unavailable++;
	snprintf(prev, sizeof(prev), "%s", wv->verdict);
	snprintf(wv->verdict, sizeof(wv->verdict), "%s", verdict);
	wv->last_probe = (double)time(NULL);
	kms_error_describe(&err, desc, sizeof(desc));
	if (r == 0) {
		wv->denials = 0;
		wv->unavailable_rounds = 0;
	} else if (r == -EACCES) {
		wv->denials++;
	} else {
		wv->unavailable_rounds++;
	}
	if (strcmp(prev, verdict) != 0) {
		if (r == 0)
			log_info("KMS '%s' (%s) grants access to '%s'%s.", k->name, k->provider,
				 v->mapping, prev[0] ? " again" : "");
		else if (r == -EACCES)
			log_warning("KMS '%s' (%s) denied access to '%s': %s (%u of %u before "
				    "OnRevoke=%s).",
				    k->name, k->provider, v->mapping, desc, wv->denials,
				    k->ws.revoke_after, kms_on_revoke_name(k->ws.on_revoke));
		else
			log_warning("KMS '%s' (%s) %s for '%s': %s; keeping the key (an outage "
				    "never wipes).",
				    k->name, k->provider,
				    r == -EBADMSG ? "gave an invalid answer" : "could not be reached",
				    v->mapping, desc);
		audit(w, v, "watch-verdict", r == 0 ? "usable" : desc, verdict);
	}
	if (r == -EACCES && wv->denials >= k->ws.revoke_after)
		act_on_denial(w, k, v, wv, &err);
	else if (r == 0 && k->ws.auto_restore && v->has_state && v->st.revoked &&
		 v->st.revoked_by_watcher)
		act_on_usable(w, k, ks, v);
	snprintf(wv->state, sizeof(wv->state), "%s", vol_state_name(v));
	save_watch_state(w, v, wv);
}

/* Is @v one the watcher probes?  Open with its key loaded; or wiped by the watcher itself (to
 * restore it, to close it, or to report its verdict). */
static bool watched(const struct vol *v)
{
	if (!v->mapped && !v->stacked)
		return false;
	if ((v->stacked || !v->map.suspended) && !vol_revoked(v))
		return true;
	return v->has_state && v->st.revoked && v->st.revoked_by_watcher;
}

static void write_metrics(struct watcher *w, bool up)
{
	struct watch_metrics_volume *mv = calloc(w->n_vols + 1, sizeof(*mv));
	struct watch_metrics_kms *mk = calloc(w->n_kms + 1, sizeof(*mk));
	size_t nv = 0, nk = 0;
	int r;

	if (!w->metrics_file || !mv || !mk)
		goto out;
	for (size_t i = 0; i < w->n_vols; i++) {
		struct wvol *v = &w->vols[i];
		if (!v->seen)
			continue;
		mv[nv++] = (struct watch_metrics_volume){
			.uuid = v->uuid,
			.mapping = v->mapping,
			.kms = v->kms,
			.state = v->state[0] ? v->state : "active",
			.verdict = v->verdict[0] ? v->verdict : NULL,
			.last_probe = v->last_probe,
			.consecutive_denials = v->denials,
		};
	}
	for (size_t i = 0; i < w->n_kms; i++) {
		struct wkms *k = &w->kms[i];
		mk[nk++] = (struct watch_metrics_kms){
			.name = k->name,
			.provider = k->provider,
			.probe_seconds = k->probe_ms / 1e3,
			.probes = k->probes,
			.errors_denied = k->errors_denied,
			.errors_unavailable = k->errors_unavailable,
			.errors_invalid = k->errors_invalid,
		};
	}
	r = watch_metrics_write(w->metrics_file, &(struct watch_metrics){
							 .up = up,
							 .rounds = w->rounds,
							 .round_seconds = w->round_ms / 1e3,
							 .last_round = w->last_round,
							 .vols = mv,
							 .n_vols = nv,
							 .kms = mk,
							 .n_kms = nk,
						 });
	if (r < 0 && r != w->metrics_r)
		log_warning_errno(r, "Cannot write the metrics file '%s'%s: %m", w->metrics_file,
				  r == -ENOENT ? " (is node_exporter's textfile directory there?)" : "");
	else if (r == 0 && w->metrics_r < 0)
		log_info("Writing the metrics file '%s' again.", w->metrics_file);
	w->metrics_r = r;
out:
	free(mv);
	free(mk);
}

/* One pass: scan the volumes, probe those of every configuration that is due (all when @all). */
static int round_once(struct watcher *w, bool all, size_t *ret_watched)
{
	struct vol **vols = NULL;
	double t0 = now_ms();
	size_t watched_n = 0;
	int r;

	r = vol_list_all(w->c, &vols);
	if (r < 0)
		return log_error_errno(r, "Cannot list volumes: %m");
	for (size_t i = 0; i < w->n_vols; i++)
		w->vols[i].seen = false;
	/* Every watched volume and its configuration, first: a configuration met for the first time
	 * is due at once (next_due 0). */
	for (size_t j = 0; vols[j]; j++) {
		struct vol *v = vols[j];
		struct wvol *wv;
		if (!v->has_tok || !watched(v))
			continue;
		watched_n++;
		if (!kms_find(w, v->tok.kms))
			break;
		wv = vol_find(w, v->hdr.uuid);
		if (!wv)
			break;
		wv->seen = true;
		snprintf(wv->mapping, sizeof(wv->mapping), "%s", v->mapping);
		snprintf(wv->kms, sizeof(wv->kms), "%s", v->tok.kms);
		snprintf(wv->state, sizeof(wv->state), "%s", vol_state_name(v));
	}
	for (size_t i = 0; i < w->n_kms; i++) {
		struct wkms *k = &w->kms[i];
		struct kms_set ks = {};
		double k0 = now_ms();
		bool due = all || k0 >= k->next_due, any = false;

		if (!due)
			goto mark_seen;
		for (size_t j = 0; vols[j]; j++) {
			struct vol *v = vols[j];
			struct wvol *wv;
			if (!v->has_tok || strcmp(v->tok.kms, k->name) != 0 || !watched(v))
				continue;
			if (!any) {
				kms_reload(w, k);
				any = true;
			}
			if (k->load_r < 0)
				break;
			wv = vol_find(w, v->hdr.uuid);
			if (!wv)
				break;
			probe_volume(w, k, &ks, v, wv);
			watchdog_ping(w);
		}
		kms_set_done(&ks); /* one connection per configuration and round */
		if (any)
			k->probe_ms = now_ms() - k0;
		k->next_due = now_ms() + jitter(k->load_r < 0 ? KMS_WATCH_INTERVAL_DEFAULT
							     : k->ws.interval_sec);
	mark_seen:
		continue;
	}
	vol_list_free(vols);
	w->rounds++;
	w->round_ms = now_ms() - t0;
	w->last_round = (double)time(NULL);
	*ret_watched = watched_n;
	return 0;
}

static int watch_usage(FILE *f)
{
	fputs("Usage: kmscrypt watch [--once] [--metrics-file PATH]\n", f);
	return KMSCRYPT_EXIT_USAGE;
}

int watch_main(const struct core_ctx *c, int argc, char **argv)
{
	static const struct option opts[] = {{"once", no_argument, NULL, 'o'},
					     {"metrics-file", required_argument, NULL, 'm'},
					     {}};
	struct watcher w = {.c = c};
	struct sigaction sa = {.sa_handler = on_signal};
	bool once = false, ready = false;
	int opt, r = 0;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		if (opt == 'o')
			once = true;
		else if (opt == 'm')
			w.metrics_file = optarg;
		else
			return watch_usage(stderr);
	}
	if (optind != argc)
		return watch_usage(stderr);
	w.wd_usec = notify_watchdog_usec();
	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	sigemptyset(&sa.sa_mask);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	for (bool first = true; !got_term; first = false) {
		size_t n_watched = 0;
		char status[160];

		if (got_hup) {
			got_hup = 0;
			log_info("Reloading: KMS configurations and volumes are read again.");
			for (size_t i = 0; i < w.n_kms; i++)
				w.kms[i].next_due = 0;
		}
		r = round_once(&w, first, &n_watched);
		if (r < 0 && once)
			break;
		write_metrics(&w, true);
		snprintf(status, sizeof(status), "STATUS=watching %zu volume%s on %zu KMS; last round "
						 "%.1f s",
			 n_watched, n_watched == 1 ? "" : "s", w.n_kms, w.round_ms / 1e3);
		if (!ready) {
			char msg[200];
			snprintf(msg, sizeof(msg), "READY=1\n%s", status);
			(void)notify_send(msg);
			ready = true;
			log_info("Watching %zu volume%s on %zu KMS configuration%s.", n_watched,
				 n_watched == 1 ? "" : "s", w.n_kms, w.n_kms == 1 ? "" : "s");
		} else {
			(void)notify_send(status);
		}
		if (once)
			break;
		/* Sleep until the next configuration is due, waking for signals and watchdog pings. */
		for (;;) {
			double now = now_ms(), due = now + 1000.0 * 3600;
			for (size_t i = 0; i < w.n_kms; i++)
				if (w.kms[i].next_due < due)
					due = w.kms[i].next_due;
			if (w.n_kms == 0)
				due = now + 1000.0 * KMS_WATCH_INTERVAL_DEFAULT / 6; /* look for volumes */
			watchdog_ping(&w);
			if (got_term || got_hup || now >= due)
				break;
			usleep(100 * 1000);
		}
	}
	(void)notify_send("STOPPING=1");
	write_metrics(&w, false);
	for (size_t i = 0; i < w.n_kms; i++)
		free(w.kms[i].name);
	free(w.kms);
	free(w.vols);
	return r < 0 ? KMSCRYPT_EXIT_FAILURE : 0;
}
