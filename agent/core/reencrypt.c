/* SPDX-License-Identifier: MIT */
/* The reencrypt flow (core/flows.h): a new volume key for an open volume, resumable. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/flows.h"
#include "kmscrypt/exit.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/volume.h"

struct progress_relay {
	const struct core_reencrypt_opts *o;
	struct core_reencrypt_result *res;
};

static int relay_progress(uint64_t size, uint64_t offset, void *userdata)
{
	struct progress_relay *p = userdata;

	p->res->total = size;
	p->res->bytes = offset;
	return p->o->progress ? p->o->progress(size, offset, p->o->userdata) : 0;
}

static void list_keyslots(const int *ks, int n, char *buf, size_t size)
{
	size_t len = 0;

	buf[0] = '\0';
	for (int i = 0; i < n && len < size; i++)
		len += (size_t)snprintf(buf + len, size - len, "%s%d", i ? ", " : "", ks[i]);
}

const char *core_reencrypt_pending(const struct vol *v, char *buf, size_t n)
{
	struct volume_reencrypt_info ri;

	if (volume_reencrypt_info(v->device, &ri) < 0 || (!ri.pending && !ri.journal))
		return NULL;
	snprintf(buf, n,
		 "A re-encryption of '%s' (UUID %s) is pending%s; finish it with 'kmscrypt reencrypt "
		 "--resume %s'.",
		 v->device, v->hdr.uuid,
		 ri.pending == 2	 ? " (interrupted by a crash)"
		 : !ri.journal		 ? " (started by cryptsetup, not kmscrypt)"
		 : ri.new_key_bound	 ? " (data done, keyslots not yet)"
					 : "",
		 v->device);
	return buf;
}

/* The plan before anything changes: which keyslots stay, move, or go. */
static int plan(const struct core_ctx *c, struct vol *v, const struct core_reencrypt_opts *o,
		struct core_reencrypt_result *res)
{
	struct volume_reencrypt_info ri;
	char lost[160], text[1024];
	int rec = -1, r;

	r = volume_reencrypt_info(v->device, &ri);
	if (r < 0) {
		vol_fail(v, r, "Cannot read the LUKS2 header of '%s' (UUID %s): %s.", v->device,
			 v->hdr.uuid, strerror(-r));
		return r;
	}
	if (ri.pending || ri.journal) {
		vol_fail(v, -EALREADY,
			 "A re-encryption of '%s' (UUID %s) is already pending; finish it with "
			 "'kmscrypt reencrypt --resume %s'.",
			 v->device, v->hdr.uuid, v->device);
		return -EALREADY;
	}
	if (o->recovery) {
		rec = volume_keyslot_of(v->device, o->recovery);
		if (rec < 0 || rec == v->tok.keyslot) {
			vol_fail(v, -EPERM,
				 "The recovery key given does not open any keyslot of '%s' (UUID %s) "
				 "other than the kmscrypt one. Nothing was changed.",
				 v->device, v->hdr.uuid);
			return -EPERM;
		}
	}
	for (int i = 0; i < ri.n_active; i++)
		if (ri.active[i] != v->tok.keyslot && ri.active[i] != rec)
			res->removed[res->n_removed++] = ri.active[i];
	list_keyslots(res->removed, res->n_removed, lost, sizeof(lost));
	if (res->n_removed && !o->remove_others) {
		vol_fail(v, -ENOTEMPTY,
			 "Refusing to re-encrypt '%s' (UUID %s): keyslot%s %s open%s it with a "
			 "passphrase kmscrypt does not know, and re-encryption would remove %s. Give "
			 "the recovery key with --recovery-key-file FILE to keep it, or pass "
			 "--remove-other-keyslots (then add a new recovery key with 'cryptsetup "
			 "luksAddKey').",
			 v->device, v->hdr.uuid, res->n_removed == 1 ? "" : "s", lost,
			 res->n_removed == 1 ? "s" : "", res->n_removed == 1 ? "it" : "them");
		return -ENOTEMPTY;
	}
	snprintf(text, sizeof(text),
		 "Re-encrypting '%s' (UUID %s, open as '%s') to a new volume key: keyslot %d "
		 "(KMS '%s') keeps working in the same keyslot.",
		 v->device, v->hdr.uuid, v->mapping, v->tok.keyslot, v->tok.kms);
	if (rec >= 0)
		snprintf(text + strlen(text), sizeof(text) - strlen(text),
			 " The recovery key keeps working; it moves from keyslot %d to a new one.",
			 rec);
	if (res->n_removed) {
		list_keyslots(res->removed, res->n_removed, lost, sizeof(lost));
		snprintf(text + strlen(text), sizeof(text) - strlen(text),
			 "\nKeyslot%s %s (passphrase%s not given) will be REMOVED when it finishes.",
			 res->n_removed == 1 ? "" : "s", lost, res->n_removed == 1 ? "" : "s");
	}
	(void)c;
	if (o->confirm) {
		r = o->confirm(text, res->n_removed > 0, o->userdata);
		if (r < 0) {
			vol_fail(v, r, "Re-encryption of '%s' not started: %s. Nothing was changed.",
				 v->device, r == -ECANCELED ? "not confirmed" : strerror(-r));
			return r;
		}
	}
	return 0;
}

static const char *volume_error_hint(int r)
{
	switch (r) {
	case -ENOTSUP:
		return "this kernel has no device-mapper/dm-crypt (modprobe dm_crypt)";
	case -ENOSPC:
		return "it needs two free keyslots (three with a recovery key); remove an unused one "
		       "with 'cryptsetup luksKillSlot'";
	case -EBUSY:
		return "its mapping is busy, suspended or not this volume's";
	case -EPERM:
		return "the unwrapped secret does not open its keyslot";
	default:
		return strerror(-r);
	}
}

void core_reencrypt(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
		    const struct core_reencrypt_opts *o, struct core_reencrypt_result *res)
{
	_cleanup_secret_ struct secret *secret = NULL;
	struct progress_relay relay = {o, res};
	struct volume_reencrypt_params p = {
	    .keyslot = v->tok.keyslot,
	    .recovery = o->recovery,
	    .progress = relay_progress,
	    .userdata = &relay,
	};
	double t0 = now_ms();
	char why[320];
	int r;

	*res = (struct core_reencrypt_result){.resumed = o->resume, .keyslot = v->tok.keyslot,
					      .recovery_keyslot = -1};
	v->result = "error";
	if (v->state_r < 0 && v->state_r != -ENOENT) {
		vol_fail(v, -EBADMSG, "%s", vol_refusal(c, v, why, sizeof(why)));
		goto out;
	}
	if (vol_revoked(v)) {
		(void)vol_refusal(c, v, why, sizeof(why));
		vol_fail(v, -EALREADY, "Refusing to re-encrypt a revoked volume: %s", why);
		goto out;
	}
	if (v->mapped && v->map.suspended) {
		vol_fail(v, -EBUSY,
			 "Cannot re-encrypt '%s' (UUID %s): its mapping '%s' is suspended. Resume it "
			 "first.",
			 v->device, v->hdr.uuid, v->map.name);
		goto out;
	}
	if (!o->resume) {
		struct volume_reencrypt_info ri;
		if (volume_reencrypt_info(v->device, &ri) == 0 && (ri.pending || ri.journal)) {
			vol_fail(v, -EALREADY,
				 "A re-encryption of '%s' (UUID %s) is already pending; finish it with "
				 "'kmscrypt reencrypt --resume %s'.",
				 v->device, v->hdr.uuid, v->device);
			goto out;
		}
	}
	if (!v->mapped && !o->resume) {
		vol_fail(v, -EALREADY,
			 "Cannot re-encrypt '%s' (UUID %s): it is not open. 'kmscrypt reencrypt' works "
			 "on an open volume, without unmounting it; unlock it first ('kmscrypt unlock "
			 "%s').",
			 v->device, v->hdr.uuid, v->device);
		goto out;
	}
	if (!o->resume) {
		r = plan(c, v, o, res);
		if (r < 0)
			goto out;
	}
	r = core_unwrap(c, ks, v, "reencrypt", &secret, NULL);
	if (r < 0) {
		strncat(v->msg, " Nothing was changed.", sizeof(v->msg) - strlen(v->msg) - 1);
		goto out;
	}
	/* resuming a volume whose mapping is the top of a re-encryption stack (not recognised as
	 * a crypt mapping): its saved or default name, offline when that is not active */
	p.name = v->mapped ? v->map.name : o->resume ? v->mapping : NULL;
	p.name_optional = !v->mapped;
	p.secret = secret;
	if (o->resume)
		r = volume_reencrypt_resume(v->device, &p, &res->recovery_keyslot);
	else
		r = volume_reencrypt(v->device, &p, &res->recovery_keyslot);
	secret = secret_free(secret);
	v->ms = now_ms() - t0;
	if (r == -ENOENT && o->resume) {
		v->result = "not-pending";
		snprintf(v->msg, sizeof(v->msg),
			 "No re-encryption of '%s' (UUID %s) is pending; nothing to do.", v->device,
			 v->hdr.uuid);
		goto audit;
	}
	if (r == -EMEDIUMTYPE) {
		vol_fail(v, -EBUSY,
			 "The re-encryption pending on '%s' (UUID %s) was not started by kmscrypt; "
			 "finish it with 'cryptsetup reencrypt --resume-only %s'.",
			 v->device, v->hdr.uuid, v->device);
		goto out;
	}
	if (r == -ECANCELED) {
		vol_fail(v, -ECANCELED,
			 "The re-encryption of '%s' (UUID %s) was interrupted before it began; nothing "
			 "was changed and its plan is removed. Run 'kmscrypt reencrypt %s' again.",
			 v->device, v->hdr.uuid, v->device);
		v->code = KMSCRYPT_EXIT_CONFLICT;
		goto out;
	}
	if (r == -EINTR) {
		vol_fail(v, -EINTR,
			 "Re-encryption of '%s' (UUID %s) stopped at %.0f%%; the volume stays usable. "
			 "Finish it with 'kmscrypt reencrypt --resume %s'.",
			 v->device, v->hdr.uuid,
			 res->total ? 100.0 * (double)res->bytes / (double)res->total : 0.0, v->device);
		v->code = KMSCRYPT_EXIT_FAILURE;
		goto out;
	}
	if (r == -EALREADY) {
		vol_fail(v, -EALREADY,
			 "A re-encryption of '%s' (UUID %s) is already pending; finish it with "
			 "'kmscrypt reencrypt --resume %s'.",
			 v->device, v->hdr.uuid, v->device);
		goto out;
	}
	if (r < 0) {
		vol_fail(v, r,
			 "Cannot %s '%s' (UUID %s): %s. If it started, the volume stays usable; run "
			 "'kmscrypt reencrypt --resume %s'.",
			 o->resume ? "resume the re-encryption of" : "re-encrypt", v->device,
			 v->hdr.uuid, volume_error_hint(r), v->device);
		goto out;
	}
	v->result = o->resume ? "resumed" : "reencrypted";
	snprintf(v->msg, sizeof(v->msg),
		 "Re-encrypted '%s' (UUID %s) to a new volume key in %.1f s: keyslot %d (KMS "
		 "'%s') opens it",
		 v->device, v->hdr.uuid, v->ms / 1000.0,
		 v->tok.keyslot, v->tok.kms);
	if (res->recovery_keyslot >= 0)
		snprintf(v->msg + strlen(v->msg), sizeof(v->msg) - strlen(v->msg),
			 ", and the recovery key now opens keyslot %d", res->recovery_keyslot);
	strncat(v->msg, ".", sizeof(v->msg) - strlen(v->msg) - 1);
audit:
	vol_audit(c, v, o->resume ? "reencrypt-resume" : "reencrypt", NULL);
	return;
out:
	v->result = "error";
	v->ms = now_ms() - t0;
	if (v->r != -EALREADY || o->resume)
		vol_audit(c, v, o->resume ? "reencrypt-resume" : "reencrypt", NULL);
}

/* ---- revoke stops a running re-encryption ------------------------------------------------------ */

#define REENCRYPT_RUN_FILE "reencrypt.run"

/* Field 22 of /proc/PID/stat (start time in clock ticks since boot); 0 when the process is gone
 * or a zombie (its state-dir lock is released by then). */
static unsigned long long proc_start(pid_t pid)
{
	_cleanup_free_ char *text = NULL;
	unsigned long long start = 0;
	char path[64], state = 0;
	const char *p;
	size_t len;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (read_file_text(path, 4096, &text, &len) < 0)
		return 0;
	p = strrchr(text, ')');
	if (!p || sscanf(p + 1, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
				"%*d %*d %llu", &state, &start) != 2)
		return 0;
	return state == 'Z' || state == 'X' ? 0 : start;
}

int core_reencrypt_record(const struct core_ctx *c, const struct vol *v)
{
	_cleanup_free_ char *path = NULL;
	char line[768];
	int n;

	if (asprintf(&path, "%s/" REENCRYPT_RUN_FILE, c->state_dir) < 0)
		return -ENOMEM;
	n = snprintf(line, sizeof(line), "%d %llu %s %s %s\n", (int)getpid(), proc_start(getpid()),
		     v->hdr.uuid, v->mapping[0] ? v->mapping : "-", v->device);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -ENAMETOOLONG;
	return write_file_atomic(path, line, (size_t)n, 0600, 0);
}

void core_reencrypt_unrecord(const struct core_ctx *c)
{
	_cleanup_free_ char *path = NULL;

	if (asprintf(&path, "%s/" REENCRYPT_RUN_FILE, c->state_dir) >= 0)
		(void)unlink(path);
}

static bool same_blockdev(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && S_ISBLK(sa.st_mode) &&
	       S_ISBLK(sb.st_mode) && sa.st_rdev == sb.st_rdev;
}

static bool target_matches(const char *target, const char *uuid, const char *mapping,
			   const char *device)
{
	if (strncasecmp(target, "UUID=", 5) == 0)
		return strcasecmp(target + 5, uuid) == 0;
	if (strcasecmp(target, uuid) == 0 || strcmp(target, device) == 0)
		return true;
	if (strcmp(mapping, "-") != 0 &&
	    (strcmp(target, mapping) == 0 ||
	     (strncmp(target, "/dev/mapper/", 12) == 0 && strcmp(target + 12, mapping) == 0)))
		return true;
	return same_blockdev(target, device);
}

static bool wait_gone(pid_t pid, unsigned long long start, unsigned sec)
{
	double deadline = now_ms() + sec * 1000.0;

	for (;;) {
		if (proc_start(pid) != start)
			return true;
		if (now_ms() > deadline)
			return false;
		usleep(50 * 1000);
	}
}

int core_reencrypt_preempt(const struct core_ctx *c, const char *target, const char *uuid)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	char r_uuid[64], r_map[160], r_dev[512];
	unsigned long long start;
	size_t len;
	int pid;

	if (asprintf(&path, "%s/" REENCRYPT_RUN_FILE, c->state_dir) < 0)
		return -ENOMEM;
	if (read_file_text(path, 4096, &text, &len) < 0)
		return 0; /* none recorded */
	if (sscanf(text, "%d %llu %63s %159s %511s", &pid, &start, r_uuid, r_map, r_dev) != 5 ||
	    pid <= 1 || pid == getpid() || start == 0 || proc_start(pid) != start)
		return 0; /* stale: that process is gone */
	if (uuid ? strcasecmp(uuid, r_uuid) != 0
		 : target && !target_matches(target, r_uuid, r_map, r_dev))
		return 0;
	log_notice("Stopping the re-encryption of '%s' (UUID %s, PID %d) to revoke it; after "
		   "'kmscrypt restore', 'kmscrypt reencrypt --resume %s' finishes it.",
		   r_dev, r_uuid, pid, r_dev);
	(void)kill(pid, SIGTERM); /* stops after the current step */
	if (wait_gone(pid, start, CORE_REENCRYPT_STOP_SEC))
		return 0;
	log_warning("The re-encryption of '%s' (PID %d) did not stop within %d s; killing it "
		    "(it is crash-safe and resumable).",
		    r_dev, pid, CORE_REENCRYPT_STOP_SEC);
	(void)kill(pid, SIGKILL);
	if (wait_gone(pid, start, 10))
		return 0;
	return log_error_errno(EBUSY,
			       "The re-encryption of '%s' (PID %d) survived SIGKILL (blocked in the "
			       "kernel); revoke waits for the state lock it holds.",
			       r_dev, pid);
}
