/* SPDX-License-Identifier: MIT */
/*
 * libcryptsetup-token-kmscrypt.so: libcryptsetup's external token plugin for the "kmscrypt" LUKS2
 * token (include/kmscrypt/token.h).  With it installed in $(pkg-config --variable=libdir
 * libcryptsetup)/cryptsetup, `cryptsetup open --token-only`, `cryptsetup luksDump` and
 * systemd-cryptsetup (crypttab) open kmscrypt volumes through the KMS natively.
 *
 * The plugin is a thin edge over the agent's own code: token_parse() (codec), the KMS configuration
 * parser and the provider registry (kms/), kms_handle_unwrap() (core/kms.c), the state dir
 * (state/) and a fresh read of the header (volume/).  There is no second implementation of any provider.
 *
 * ABI (libcryptsetup.h, "external token handler"): libcryptsetup dlopen()s
 * libcryptsetup-token-<type>.so and binds only symbols of version CRYPTSETUP_TOKEN_1.0
 * (token_plugin.sym assigns it and hides everything else).
 *
 * Configuration: the token names a KMS configuration; it is read from $KMSCRYPT_CONFIG_DIR/kms/
 * (default /etc/kmscrypt/kms/).  The revoked mark is read from the token itself and from
 * $KMSCRYPT_STATE_DIR (default /var/lib/kmscrypt); either one refuses.
 *
 * Against `kmscrypt revoke`: the plugin holds the state dir's lock shared from its first check to
 * the hand-over of the secret, reads both marks again (the header from disk) after the unwrap, and
 * leaves an in-flight record (state/inflight.c) for revoke, which holds the lock exclusively, to wait
 * for: libcryptsetup activates only after we returned.  Without a state dir (an initrd) there is
 * nothing to lock; the header's mark is still read twice.  libcryptsetup 2.6 passes a plugin no options of its own (usrptr is the
 * caller's, and systemd-cryptsetup passes none), so the environment is the only override.
 *
 * Rules for code running inside someone else's process: no exit(), nothing on stdout, every message
 * through crypt_log() (cryptsetup prints it, systemd-cryptsetup sends it to the journal), no state
 * kept between calls, the secret stays in a struct secret until it is handed to libcryptsetup.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libcryptsetup.h>

#include "core/core.h"
#include "codec/token.h"
#include "config/kms_config.h"
#include "kmscrypt/token.h"
#include "kmscrypt/version.h"
#include "state/state.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/escape.h"
#include "util/fileio.h"
#include "util/secret.h"
#include "volume/volume.h"

#define PLUGIN_TIMEOUT_MS 30000 /* one KMS operation incl. retries, as `kmscrypt unlock` */
#define PLUGIN_LOCK_TIMEOUT_SEC 120 /* as the CLI's --lock-timeout default */

/* The exported ABI (the target builds with -fvisibility=hidden; token_plugin.sym versions these).
 * Prototypes here keep -Wmissing-prototypes meaningful. */
#define _public_ __attribute__((visibility("default")))
_public_ int cryptsetup_token_open(struct crypt_device *cd, int token, char **buffer,
				   size_t *buffer_len, void *usrptr);
_public_ void cryptsetup_token_buffer_free(void *buffer, size_t buffer_len);
_public_ int cryptsetup_token_validate(struct crypt_device *cd, const char *json);
_public_ void cryptsetup_token_dump(struct crypt_device *cd, const char *json);
_public_ const char *cryptsetup_token_version(void);

static void plog(struct crypt_device *cd, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void plog(struct crypt_device *cd, int level, const char *fmt, ...)
{
	char buf[1024], line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* One call, one line: header fields, file names and KMS messages are escaped (util/escape.h),
	 * so they cannot add lines to systemd-cryptsetup's journal or drive a terminal.  crypt_log()
	 * prints the message as is: cryptsetup does not add a newline. */
	cescape_buf(buf, line, sizeof(line) - 1);
	strcat(line, "\n");
	crypt_log(cd, level, line);
}

static const char *env_dir(const char *name, const char *def)
{
	const char *e = secure_getenv(name);

	return e && *e ? e : def;
}

/* Load KMS configuration @name and open its provider: core_kms_load() + kms_handle_open(), but
 * logging through crypt_log().  Returns 0 (h->open_r may still carry the provider's open error, as
 * with kms_handle_open()) or a libcryptsetup token error. */
static int plugin_kms_open(struct crypt_device *cd, const char *config_dir, const char *name,
			   const struct kms_runtime *rt, struct kms_handle *h)
{
	_cleanup_free_ char *path = NULL;
	struct config_error err = {};
	int r;

	memset(h, 0, sizeof(*h));
	if (!kms_config_name_valid(name)) {
		plog(cd, CRYPT_LOG_ERROR, "kmscrypt: invalid KMS configuration name '%s' in token.",
		     name);
		return -EINVAL;
	}
	if (asprintf(&path, "%s/kms/%s.conf", config_dir, name) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	/* The CLI's own loader: locked memory, and a file holding a secret that group or others
	 * may read is refused. */
	r = kms_config_load_file(path, name, &h->cfg, &err);
	if (r == -ENOENT) {
		plog(cd, CRYPT_LOG_ERROR,
		     "kmscrypt: no KMS configuration '%s' (%s); set KMSCRYPT_CONFIG_DIR or "
		     "create it with 'kmscrypt kms create %s'.",
		     name, path, name);
		return -ENOENT;
	}
	if (r == -ENOMEM)
		return r;
	if (r == -EBADMSG || r == -EINVAL) {
		if (err.line)
			plog(cd, CRYPT_LOG_ERROR, "kmscrypt: %s:%u: %s.", path, err.line,
			     err.message);
		else
			plog(cd, CRYPT_LOG_ERROR, "kmscrypt: %s: %s.", path, err.message);
		return -EINVAL;
	}
	if (r < 0) {
		plog(cd, CRYPT_LOG_ERROR, "kmscrypt: cannot read KMS configuration '%s': %s.", path,
		     strerror(-r));
		return -ENOENT;
	}
	h->open_r = h->cfg.provider->open(&h->cfg, rt, &h->ctx, &h->open_err);
	return 0;
}

/* Provider classes (kms/provider.h) -> crypt_token_open_func results.  -EPERM, -ENOENT, -EAGAIN
 * and -ENOANO let libcryptsetup go on with the next token (another token type may still open the
 * volume); -EAGAIN is the documented "needs something not present right now". */
static int token_errno(int r)
{
	switch (r) {
	case -EAGAIN:
	case -ETIMEDOUT:
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
		return -EAGAIN;
	case -EACCES:
	case -EPERM:
		return -EPERM;
	case -ENOMEM:
		return -ENOMEM;
	case -ENOENT:
		return -ENOENT;
	default: /* -EBADMSG, -EINVAL, anything else: this token cannot be used */
		return -EINVAL;
	}
}

/* The revoked marks of `kmscrypt revoke` hold for the plugin too: the one in the token (@t, read
 * from the header) and the one in the state dir.  A state file that cannot be read counts as
 * revoked: the plugin fails closed (`kmscrypt unlock` and `kmscrypt restore` remain). */
static int check_not_revoked(struct crypt_device *cd, const char *state_dir, const char *uuid,
			     const struct kmscrypt_token *t)
{
	struct volume_state st = {};
	int r;

	if (t->revoked) {
		plog(cd, CRYPT_LOG_ERROR,
		     "kmscrypt: volume %s is revoked (its LUKS2 header is marked%s%s%s%s%s); not "
		     "opening it. Run 'kmscrypt restore' once access is back.",
		     uuid, *t->revoked_at ? " since " : "", t->revoked_at,
		     *t->revoked_reason ? ", '" : "", t->revoked_reason,
		     *t->revoked_reason ? "'" : "");
		return -EPERM;
	}
	r = state_load(state_dir, uuid, &st);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		plog(cd, CRYPT_LOG_ERROR,
		     "kmscrypt: cannot read the state of volume %s in '%s' (%s); not opening "
		     "it. Use 'kmscrypt status' and 'kmscrypt unlock'.",
		     uuid, state_dir, strerror(-r));
		return -EPERM;
	}
	if (st.revoked) {
		plog(cd, CRYPT_LOG_ERROR,
		     "kmscrypt: volume %s is revoked%s%s%s; not opening it. Run 'kmscrypt "
		     "restore' to clear the mark.",
		     uuid, st.revoke_reason ? " ('" : "", st.revoke_reason ? st.revoke_reason : "",
		     st.revoke_reason ? "')" : "");
		r = -EPERM;
	}
	volume_state_done(&st);
	return r;
}

/* The header as it is on disk now (libcryptsetup read @cd's before calling us, and a revoke may
 * have marked it since): its kmscrypt token, parsed. */
static int reread_token(struct crypt_device *cd, struct kmscrypt_token *ret)
{
	_cleanup_free_ char *json = NULL;
	const char *dev = crypt_get_metadata_device_name(cd) ?: crypt_get_device_name(cd);
	char why[256] = "";
	int r;

	if (!dev)
		return -ENODEV;
	r = volume_reread_token(dev, &json);
	if (r < 0)
		return r;
	r = token_parse(json, ret, why, sizeof(why));
	if (r < 0)
		plog(cd, CRYPT_LOG_ERROR, "kmscrypt: the token of '%s' changed and is invalid: %s.",
		     dev, why);
	return r;
}

/* Every unwrap through the plugin goes into the agent's audit log, as `kmscrypt unlock` does, when
 * the state dir exists (a plugin does not create system directories).  Best effort: a failure to
 * record is logged, and does not stop the boot. */
static void plugin_audit(struct crypt_device *cd, const char *state_dir, const char *uuid,
			 const char *kms, const char *result, double t0)
{
	struct audit_record a = {
	    .action = "token-unwrap",
	    .uuid = uuid,
	    .device = crypt_get_device_name(cd),
	    .kms = kms,
	    .result = result,
	    .duration_ms = now_ms() - t0,
	};
	int r;

	if (access(state_dir, W_OK) < 0)
		return;
	r = audit_append(state_dir, &a);
	if (r < 0)
		plog(cd, CRYPT_LOG_VERBOSE, "kmscrypt: cannot append to '%s/audit.log': %s.",
		     state_dir, strerror(-r));
}

/* The handles of one multi-KMS unwrap, on the heap: the KMSs that had not answered when k had keep
 * using them after cryptsetup_token_open() returned (core_token_unwrap_detached()). */
struct plugin_kms {
	struct kms_runtime rt;
	size_t n;
	struct kms_handle h[KMSCRYPT_TOKEN_MAX_WRAPS];
};

static void plugin_kms_release(void *p)
{
	struct plugin_kms *k = p;

	for (size_t i = 0; i < k->n; i++)
		kms_handle_done(&k->h[i]);
	free(k);
}

/* Requests left running after we returned execute this object's code: it must stay mapped even if
 * libcryptsetup dlclose()s the plugin (it does so only at exit today).  Pin it once. */
static void plugin_pin(void)
{
	Dl_info info;

	if (dladdr((void *)plugin_pin, &info) && info.dli_fname)
		(void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

/* A version-2 token: every KMS of the binding asked at once; the secret is handed on as soon as k
 * answered, without waiting for the others (a KMS that hangs does not hold up the boot; its request
 * finishes, or times out, on its own thread).  A configuration that cannot be loaded is one KMS
 * that does not answer.  @desc gets each KMS's answer. */
static int plugin_unwrap_multi(struct crypt_device *cd, const char *config_dir,
			       const struct kms_runtime *rt, const char *uuid,
			       const struct kmscrypt_token *t, struct secret **ret, char *desc,
			       size_t desc_len)
{
	struct kms_handle *hp[KMSCRYPT_TOKEN_MAX_WRAPS];
	struct core_wrap_answer ans[KMSCRYPT_TOKEN_MAX_WRAPS];
	int hr[KMSCRYPT_TOKEN_MAX_WRAPS];
	struct plugin_kms *k;
	int r;

	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->rt = *rt;
	k->n = t->n_wraps;
	for (size_t i = 0; i < t->n_wraps; i++) {
		hr[i] = plugin_kms_open(cd, config_dir, t->wraps[i].kms, &k->rt, &k->h[i]);
		if (hr[i] == -ENOMEM) {
			plugin_kms_release(k);
			return -ENOMEM;
		}
		hp[i] = hr[i] < 0 ? NULL : &k->h[i];
	}
	plugin_pin();
	/* k (and the handles) belong to the requests from here on */
	r = core_token_unwrap_detached(hp, hr, uuid, t, ret, ans, plugin_kms_release, k);
	core_answers_describe(t, ans, desc, desc_len);
	if (r < 0)
		plog(cd, CRYPT_LOG_ERROR,
		     "kmscrypt: %u of the %zu KMSs of volume %s answered, %u needed: %s; %s.",
		     core_answers_ok(t, ans), t->n_wraps, uuid, t->threshold, desc,
		     core_kms_transient(r) ? "retry when enough are reachable"
					   : "too few can ever answer: use the recovery key");
	else
		plog(cd, CRYPT_LOG_DEBUG, "kmscrypt: volume %s: %s.", uuid, desc);
	return r;
}

int cryptsetup_token_open(struct crypt_device *cd, int token, char **buffer, size_t *buffer_len,
			  void *usrptr)
{
	double t0 = now_ms();
	const char *config_dir = env_dir("KMSCRYPT_CONFIG_DIR", "/etc/kmscrypt");
	const char *state_dir = env_dir("KMSCRYPT_STATE_DIR", "/var/lib/kmscrypt");
	const struct kms_runtime rt = {.config_dir = config_dir, .timeout_ms = PLUGIN_TIMEOUT_MS};
	_cleanup_secret_ struct secret *secret = NULL;
	struct kmscrypt_token t = {}, now = {};
	struct kms_handle h = {};
	struct kms_error err = {};
	const char *json = NULL, *uuid;
	int lock = -1;
	char why[256] = "", desc[512];
	char *copy;
	int r;

	r = crypt_token_json_get(cd, token, &json);
	if (r < 0)
		return r == -ENOMEM ? r : -ENOENT;
	uuid = crypt_get_uuid(cd);
	if (!uuid)
		return -EINVAL;
	r = token_parse(json, &t, why, sizeof(why));
	if (r < 0) {
		plog(cd, CRYPT_LOG_ERROR, "kmscrypt: token %d of volume %s is invalid: %s.", token,
		     uuid, why);
		return r == -ENOMEM ? r : -EINVAL;
	}
	/* The state lock, shared, from the first check to the hand-over: `kmscrypt revoke` (exclusive)
	 * either marks before our check, or after we recorded this unlock as in flight, and then
	 * waits for it to land and wipes it.  No state dir (an initrd, a host that never ran
	 * kmscrypt): nothing to serialise with; the header's mark is still read twice. */
	lock = state_lock_shared(state_dir, PLUGIN_LOCK_TIMEOUT_SEC);
	if (lock < 0 && lock != -ENOENT) {
		plog(cd, CRYPT_LOG_ERROR,
		     "kmscrypt: cannot take the lock '%s/lock' (%s); not opening volume %s. %s",
		     state_dir, strerror(-lock),
		     uuid, lock == -EBUSY ? "Another kmscrypt command holds it; retry." : "");
		r = lock == -EBUSY ? -EAGAIN : -EPERM;
		goto out;
	}
	r = check_not_revoked(cd, state_dir, uuid, &t);
	if (r < 0) {
		plugin_audit(cd, state_dir, uuid, t.kms, "refused: revoked or unreadable state",
			     t0);
		goto out;
	}

	if (t.n_wraps > 1) {
		r = plugin_unwrap_multi(cd, config_dir, &rt, uuid, &t, &secret, desc, sizeof(desc));
		if (r < 0) {
			plugin_audit(cd, state_dir, uuid, t.kms, desc, t0);
			r = token_errno(r);
			goto out;
		}
		goto unwrapped;
	}
	r = plugin_kms_open(cd, config_dir, t.kms, &rt, &h);
	if (r < 0)
		goto out;
	r = kms_handle_unwrap(&h, uuid, &t, &secret, &err);
	if (r < 0) {
		kms_error_describe(&err, desc, sizeof(desc));
		plog(cd, CRYPT_LOG_ERROR, "kmscrypt: KMS '%s' (%s) %s for volume %s: %s; %s.", t.kms,
		     h.cfg.provider->name, core_kms_failure(r, &err), uuid, desc,
		     core_hint_for_error(r, &err));
		plugin_audit(cd, state_dir, uuid, t.kms, desc, t0);
		r = token_errno(r);
		goto out;
	}

unwrapped:
	/* Check the marks again, as they are now, before the secret leaves: the unwrap took time. */
	r = reread_token(cd, &now);
	if (r == 0)
		r = check_not_revoked(cd, state_dir, uuid, &now);
	if (r < 0) {
		plugin_audit(cd, state_dir, uuid, t.kms,
			     "refused: revoked (or header changed) during the unwrap", t0);
		r = r == -ENOMEM ? r : -EPERM;
		goto out;
	}
	if (lock >= 0) {
		r = inflight_add(state_dir, uuid);
		if (r < 0) {
			plog(cd, CRYPT_LOG_ERROR,
			     "kmscrypt: cannot record the unlock of volume %s in '%s/inflight' (%s); "
			     "not opening it.",
			     uuid, state_dir, strerror(-r));
			r = -EPERM;
			goto out;
		}
	}

	/* Hand-over: libcryptsetup owns the copy and gives it back to
	 * cryptsetup_token_buffer_free(). */
	copy = malloc(secret->len);
	if (!copy) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(copy, secret->buf, secret->len);
	*buffer = copy;
	*buffer_len = secret->len;
	plog(cd, CRYPT_LOG_DEBUG, "kmscrypt: KMS '%s' (%s) unwrapped the secret of volume %s.",
	     t.kms, t.n_wraps > 1 ? "and others" : h.cfg.provider->name, uuid);
	plugin_audit(cd, state_dir, uuid, t.kms, "ok", t0);
	r = 0;
out:
	if (lock >= 0)
		close(lock);
	kms_handle_done(&h);
	token_done(&now);
	token_done(&t);
	return r;
}

void cryptsetup_token_buffer_free(void *buffer, size_t buffer_len)
{
	if (!buffer)
		return;
	explicit_bzero(buffer, buffer_len);
	free(buffer);
}

int cryptsetup_token_validate(struct crypt_device *cd, const char *json)
{
	struct kmscrypt_token t = {};
	char why[256] = "";
	int r;

	r = token_parse(json, &t, why, sizeof(why));
	if (r < 0) {
		plog(cd, CRYPT_LOG_DEBUG, "kmscrypt: token rejected: %s.", why);
		return r == -ENOMEM ? r : -EINVAL;
	}
	token_done(&t);
	return 0;
}

/* luksDump lines under "  N: kmscrypt", aligned like libcryptsetup's own ("\tKeyslot:    1"). */
void cryptsetup_token_dump(struct crypt_device *cd, const char *json)
{
	struct kmscrypt_token t = {};
	char why[256] = "";

	if (token_parse(json, &t, why, sizeof(why)) < 0) {
		plog(cd, CRYPT_LOG_NORMAL, "\tkmscrypt:   invalid token (%s)", why);
		return;
	}
	plog(cd, CRYPT_LOG_NORMAL, "\tkms:        %s", t.kms);
	plog(cd, CRYPT_LOG_NORMAL, "\tprovider:   %s", t.provider);
	plog(cd, CRYPT_LOG_NORMAL, "\tkey id:     %s", t.key_id);
	plog(cd, CRYPT_LOG_NORMAL, "\tkey ver:    %s",
	     t.key_version && *t.key_version ? t.key_version : "(none)");
	plog(cd, CRYPT_LOG_NORMAL, "\talg:        %s", t.alg);
	plog(cd, CRYPT_LOG_NORMAL, "\twrapped:    %zu bytes", t.blob_len);
	plog(cd, CRYPT_LOG_NORMAL, "\tcreated:    %s", t.created ? t.created : "(unknown)");
	plog(cd, CRYPT_LOG_NORMAL, "\tschema:     %d", t.version);
	if (t.n_wraps > 1) {
		plog(cd, CRYPT_LOG_NORMAL, "\tthreshold:  %u of %zu", t.threshold, t.n_wraps);
		for (size_t i = 1; i < t.n_wraps; i++)
			plog(cd, CRYPT_LOG_NORMAL, "\tkms:        %s (%s, share %u)", t.wraps[i].kms,
			     t.wraps[i].provider, t.wraps[i].share);
	}
	token_done(&t);
}

const char *cryptsetup_token_version(void)
{
	return KMSCRYPT_VERSION;
}
