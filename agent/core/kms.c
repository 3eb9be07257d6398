/* SPDX-License-Identifier: MIT */
/* The core's KMS side: configurations loaded from the config dir, the KMS handles of one run, the
 * state-dir lock, volume headers as the flows see them, and the advice that goes with errors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codec/token.h"
#include "config/kms_config.h"
#include "core/core.h"
#include "kmscrypt/exit.h"
#include "state/state.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/safedir.h"
#include "util/secret.h"
#include "volume/volume.h"

const char *core_hint_for(int r)
{
	switch (r) {
	case -EACCES:
		return "restore access to the key at the KMS (or fix the credentials with 'kmscrypt kms "
		       "edit'), then retry";
	case -EAGAIN:
	case -ETIMEDOUT:
		return "the KMS could not be reached in time; check the network and endpoint, then retry";
	case -EBADMSG:
		return "the token or the KMS reply is malformed; check the volume with 'kmscrypt check' "
		       "and open it with its recovery key if needed";
	case -EINVAL:
		return "fix what the message names, then retry";
	case -ENOKEY:
		return "make the file named above readable by root (its owner, mode and any SELinux or "
		       "AppArmor label), then retry";
	default:
		return "see 'kmscrypt status' and the audit log";
	}
}

const char *core_kms_failure(int r, const struct kms_error *e)
{
	if (e && e->token_rejected)
		return "rejected the token";
	switch (r) {
	case -EACCES:
		return "denied access";
	case -EBADMSG:
		return "gave an invalid answer";
	case -EINVAL:
		return "has an unusable configuration";
	case -ENOKEY:
		return "cannot be used";
	case -EAGAIN:
	case -ETIMEDOUT:
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
		return "could not be reached";
	default:
		return "failed";
	}
}

const char *core_hint_for_error(int r, const struct kms_error *e)
{
	/* Restoring access at the KMS cannot help a token that is not this volume's. */
	if (e && e->token_rejected)
		return "the token does not belong to this volume or was modified: open the volume with "
		       "its recovery key, then re-bind it ('kmscrypt unbind', then 'kmscrypt bind "
		       "--key-file RECOVERY-KEY-FILE')";
	return core_hint_for(r);
}

static void lock_waiting(pid_t holder, void *userdata)
{
	const struct core_ctx *c = userdata;

	if (holder > 0)
		log_info("Waiting for the lock '%s/lock' held by PID %d (up to %u s)...",
			 c->state_dir, (int)holder, c->lock_timeout_sec);
	else
		log_info("Waiting for the lock '%s/lock' held by another process (up to %u s)...",
			 c->state_dir, c->lock_timeout_sec);
}

int core_lock(const struct core_ctx *c)
{
	pid_t holder = 0;
	int fd;

	fd = state_lock_wait(c->state_dir, c->lock_timeout_sec, lock_waiting, (void *)c, &holder);
	if (fd == -EBUSY && holder > 0)
		return log_error_errno(fd,
				       "PID %d has held '%s/lock' for %u s; wait for it to finish "
				       "(ps -p %d) and retry.",
				       (int)holder, c->state_dir, c->lock_timeout_sec, (int)holder);
	if (fd == -EBUSY)
		return log_error_errno(fd,
				       "Another kmscrypt command has held '%s/lock' for %u s; wait "
				       "for it to finish and retry.",
				       c->state_dir, c->lock_timeout_sec);
	if (fd == -ENOLINK || fd == -ELOOP || fd == -ENOTDIR || fd == -EBADF) {
		char why[1024];
		_cleanup_close_ int dfd = dir_open_trusted(c->state_dir, "State dir", why, sizeof(why));

		if (dfd < 0)
			return log_error_errno(dfd, "%s.", why);
		return log_error_errno(fd,
				       "'%s/lock' is %s, which kmscrypt does not use; remove it and "
				       "retry.",
				       c->state_dir,
				       fd == -ELOOP ? "a symbolic link" : "not a regular file");
	}
	if (fd < 0)
		return log_error_errno(fd, "Cannot take the lock in state dir '%s': %m", c->state_dir);
	return fd;
}

int core_check_dirs(const struct core_ctx *c)
{
	_cleanup_free_ char *kms_dir = NULL;
	const struct {
		const char *what, *path;
	} dirs[] = {
		{"State dir", c->state_dir},
		{"Configuration dir", c->config_dir},
		{"KMS configuration dir", NULL},
	};

	if (asprintf(&kms_dir, "%s/kms", c->config_dir) < 0)
		return log_error_errno(ENOMEM, "Out of memory.");
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		const char *path = dirs[i].path ?: kms_dir;
		char why[1024];
		int fd = dir_open_trusted(path, dirs[i].what, why, sizeof(why));

		if (fd == -ENOENT)
			continue; /* created when first needed, mode 0700 */
		if (fd < 0)
			return log_error_errno(fd, "%s.", why);
		close(fd);
	}
	return 0;
}

int core_kms_path(const struct core_ctx *c, const char *name, char **ret)
{
	return asprintf(ret, "%s/kms/%s.conf", c->config_dir, name) < 0 ? -ENOMEM : 0;
}

/* Does @c hold a secret in the file itself (not a credential reference)? */
static bool config_holds_secret(const struct kms_config *c)
{
	for (size_t i = 0; i < c->n_settings; i++)
		if (c->settings[i].secret && c->settings[i].secret->len > 0)
			return true;
	return false;
}

int kms_config_load_file(const char *path, const char *name, struct kms_config *ret,
			 struct config_error *err)
{
	_cleanup_secret_ struct secret *text = NULL;
	_cleanup_close_ int fd = -1;
	struct kms_config cfg = {};
	struct stat st;
	int r;

	*err = (struct config_error){};
	/* one open: the mode checked is that of the file parsed */
	fd = open_regular_file(path, &st);
	if (fd < 0)
		return fd;
	/* the text may hold credentials: read it into locked memory, not a heap buffer */
	r = read_fd_secret(fd, KMS_CONFIG_FILE_MAX, 0, &text);
	if (r < 0)
		return r;
	r = kms_config_parse(name, (const char *)text->buf, text->len, kms_provider_all(), &cfg,
			     err);
	if (r < 0)
		return r == -ENOMEM ? r : -EBADMSG;
	if (!FILE_MODE_PRIVATE(st.st_mode) && config_holds_secret(&cfg)) {
		snprintf(err->message, sizeof(err->message),
			 "holds a secret but is accessible by group or others (mode %04o); run "
			 "'chmod 600 %s'",
			 (unsigned)(st.st_mode & 07777), path);
		kms_config_done(&cfg);
		return -EINVAL;
	}
	*ret = cfg;
	return 0;
}

int core_kms_load(const struct core_ctx *c, const char *name, struct kms_config *ret)
{
	_cleanup_free_ char *path = NULL;
	struct config_error err = {};
	int r;

	if (!kms_config_name_valid(name))
		return log_error_errno(EINVAL,
				       "Invalid KMS configuration name '%s': use letters, digits, '.', "
				       "'_' and '-' (at most 64).",
				       name);
	r = core_kms_path(c, name, &path);
	if (r < 0)
		return r;
	r = kms_config_load_file(path, name, ret, &err);
	if (r == -ENOENT)
		return log_error_errno(r,
				       "No KMS configuration '%s' (%s). Create it with 'kmscrypt kms "
				       "create %s --provider ...' or list them with 'kmscrypt kms list'.",
				       name, path, name);
	if (r == -ENOMEM)
		return log_error_errno(r, "Out of memory.");
	if (r == -EINVAL) /* readable by others: fixed with chmod, not by editing the file */
		return log_error_errno(r, "KMS configuration '%s' %s.", path, err.message);
	if (r == -EBADMSG) {
		if (err.line)
			log_error("%s:%u: %s. Fix the file or recreate the configuration.", path,
				  err.line, err.message);
		else
			log_error("%s: %s. Fix the file or recreate the configuration.", path,
				  err.message);
		return r;
	}
	if (r < 0) {
		log_error_errno(r, "Cannot read KMS configuration '%s': %m", path);
		/* this host's permissions, not a KMS denial (exit 3) */
		return r == -EACCES || r == -EPERM ? -ENOKEY : r;
	}
	return 0;
}

int core_kms_resolve_credentials(struct kms_config *cfg)
{
	for (const struct kms_option *o = cfg->provider->options; o->key; o++) {
		_cleanup_secret_ struct secret *s = NULL;
		_cleanup_free_ char *key = NULL, *path = NULL;
		const char *name, *dir;
		int r;

		if (!(o->flags & KMS_OPT_SECRET))
			continue;
		if (asprintf(&key, "%sCredential", o->key) < 0)
			return -ENOMEM;
		name = kms_config_get(cfg, key);
		if (!name)
			continue;
		dir = secure_getenv("CREDENTIALS_DIRECTORY");
		if (!dir || dir[0] != '/')
			return log_error_errno(ENOENT,
					       "KMS configuration '%s' takes %s from the credential '%s', "
					       "but $CREDENTIALS_DIRECTORY is not set: run kmscrypt from a "
					       "unit with LoadCredential=%s:PATH or "
					       "LoadCredentialEncrypted=%s (systemd-creds).",
					       cfg->name, o->key, name, name, name);
		if (asprintf(&path, "%s/%s", dir, name) < 0)
			return -ENOMEM;
		r = read_file_secret(path, 16384, 1, &s); /* as kms_cmd.c KMS_SECRET_MAX */
		if (r < 0) {
			log_error_errno(r,
					"KMS configuration '%s': cannot read %s from the credential "
					"'%s' (%s): %m",
					cfg->name, o->key, name, path);
			return r == -EACCES || r == -EPERM ? -ENOKEY : r;
		}
		r = s->len == 0 ? -EINVAL : kms_config_set_secret(cfg, o->key, s);
		if (r == -EINVAL)
			return log_error_errno(EBADMSG,
					       "KMS configuration '%s': the credential '%s' (%s) must "
					       "hold one non-empty line of text (no CR or NUL).",
					       cfg->name, name, path);
		if (r < 0)
			return r;
	}
	return 0;
}

int kms_handle_open(const struct core_ctx *c, const char *name, struct kms_handle *ret)
{
	int r;

	memset(ret, 0, sizeof(*ret));
	r = core_kms_load(c, name, &ret->cfg);
	if (r < 0)
		return r;
	r = core_kms_resolve_credentials(&ret->cfg);
	if (r < 0)
		return r;
	ret->open_r = ret->cfg.provider->open(&ret->cfg, &c->rt, &ret->ctx, &ret->open_err);
	return 0;
}

void kms_handle_done(struct kms_handle *h)
{
	if (!h)
		return;
	if (h->ctx)
		h->cfg.provider->close(h->ctx);
	kms_config_done(&h->cfg);
	memset(h, 0, sizeof(*h));
}

int kms_handle_unwrap(struct kms_handle *h, const char *uuid, const struct kmscrypt_token *t,
		      struct secret **ret, struct kms_error *err)
{
	struct kms_aad aad = {.uuid = uuid, .keyslot = t->keyslot};
	struct kms_wrapped w = {
		.key_id = t->key_id,
		.key_version = t->key_version,
		.alg = t->alg,
		.blob = t->blob,
		.blob_len = t->blob_len,
	};

	if (h->open_r < 0) {
		*err = h->open_err;
		return h->open_r;
	}
	if (strcmp(t->provider, h->cfg.provider->name) != 0)
		return kms_error_set(err, -EACCES, "ProviderMismatch",
				     "volume was wrapped by provider %s, but configuration '%s' uses %s",
				     t->provider, h->cfg.name, h->cfg.provider->name);
	return h->cfg.provider->unwrap(h->ctx, &aad, &w, ret, err);
}

struct kms_handle *kms_set_get(const struct core_ctx *c, struct kms_set *s, const char *name,
			       int *ret_r)
{
	struct kms_handle **nh, *h;
	int *nr;

	for (size_t i = 0; i < s->n; i++)
		if (s->h[i]->cfg.name && strcmp(s->h[i]->cfg.name, name) == 0) {
			*ret_r = s->r[i];
			return s->r[i] < 0 ? NULL : s->h[i];
		}
	/* Handles are separate allocations: threads keep pointers to them while the set grows. */
	nh = realloc(s->h, (s->n + 1) * sizeof(*s->h));
	if (!nh)
		goto oom;
	s->h = nh;
	nr = realloc(s->r, (s->n + 1) * sizeof(*s->r));
	if (!nr)
		goto oom;
	s->r = nr;
	h = calloc(1, sizeof(*h));
	if (!h)
		goto oom;
	s->h[s->n] = h;
	s->r[s->n] = kms_handle_open(c, name, h);
	*ret_r = s->r[s->n];
	if (*ret_r < 0) {
		/* remember the failure under this name so it is logged once */
		kms_handle_done(h);
		h->cfg.name = strdup(name);
		s->n++;
		return NULL;
	}
	s->n++;
	return h;
oom:
	*ret_r = log_error_errno(ENOMEM, "Out of memory.");
	return NULL;
}

void kms_set_done(struct kms_set *s)
{
	core_unwrap_reap(); /* threshold unwraps that returned early may still use these handles */
	for (size_t i = 0; i < s->n; i++) {
		if (s->r[i] < 0) {
			free(s->h[i]->cfg.name);
			s->h[i]->cfg.name = NULL;
		} else {
			kms_handle_done(s->h[i]);
		}
		free(s->h[i]);
	}
	free(s->h);
	free(s->r);
	*s = (struct kms_set){};
}

void kms_error_describe(const struct kms_error *e, char *buf, size_t n)
{
	int k = 0;

	if (e->message[0])
		k = snprintf(buf, n, "%s", e->message);
	else
		k = snprintf(buf, n, "no detail");
	if (k >= 0 && (size_t)k < n && e->code[0])
		k += snprintf(buf + k, n - (size_t)k, " [%s", e->code);
	if (k >= 0 && (size_t)k < n && e->code[0] && e->http_status)
		k += snprintf(buf + k, n - (size_t)k, ", HTTP %d", e->http_status);
	if (k >= 0 && (size_t)k < n && e->code[0] && e->request_id[0])
		k += snprintf(buf + k, n - (size_t)k, ", request %s", e->request_id);
	if (k >= 0 && (size_t)k < n && e->code[0])
		snprintf(buf + k, n - (size_t)k, "]");
}

int core_read_volume(const char *device, struct volume_header *ret_hdr,
		    struct kmscrypt_token *ret_tok, bool log)
{
	struct volume_header h = {};
	int r;

	r = volume_read_header(device, &h);
	if (r < 0) {
		if (!log)
			return r;
		if (r == -ENOENT)
			return log_error_errno(r, "Device '%s' does not exist.", device);
		if (r == -ENODEV || r == -EINVAL)
			return log_error_errno(ENODEV,
					       "'%s' is not a LUKS2 volume. Format it with 'kmscrypt "
					       "format' or bind an existing LUKS2 volume with 'kmscrypt "
					       "bind'.",
					       device);
		return log_error_errno(r, "Cannot read the LUKS2 header of '%s': %m", device);
	}
	return core_volume_from_header(device, &h, ret_hdr, ret_tok, log);
}

int core_volume_from_header(const char *device, struct volume_header *hdr,
			    struct volume_header *ret_hdr, struct kmscrypt_token *ret_tok, bool log)
{
	struct volume_header h = *hdr;
	char why[256] = "";
	int r;

	*hdr = (struct volume_header){.token_id = -1};
	if (h.token_id < 0 || !h.token_json) {
		if (log)
			log_error("'%s' (UUID %s) has no kmscrypt token. Bind it with 'kmscrypt bind "
				  "%s --kms NAME --key-file FILE'.",
				  device, h.uuid, device);
		volume_header_done(&h);
		return -ENODEV;
	}
	if (ret_tok) {
		r = token_parse(h.token_json, ret_tok, why, sizeof(why));
		if (r < 0) {
			if (log)
				log_error("The kmscrypt token %d of '%s' (UUID %s) is invalid: %s. Open "
					  "the volume with its recovery key and re-bind it.",
					  h.token_id, device, h.uuid, why);
			volume_header_done(&h);
			return r;
		}
	}
	*ret_hdr = h;
	return 0;
}

int core_mapping_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 120 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
		      (name[i] >= '0' && name[i] <= '9') || strchr("._-+", name[i])))
			return 0;
	return 1;
}

void core_default_mapping(const char *label, const char *uuid, char *buf, size_t n)
{
	if (label && *label && core_mapping_name_valid(label)) {
		snprintf(buf, n, "%s", label);
		return;
	}
	snprintf(buf, n, "kmscrypt-%.8s", uuid);
}
