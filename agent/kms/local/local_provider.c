/* SPDX-License-Identifier: MIT */
/*
 * Local key file provider: the master key is a 256-bit key in a file on this machine.  For tests and
 * labs only: whoever can read the file can unlock every volume bound to it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "kms/local/local_codec.h"
#include "kms/provider.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/secret.h"

struct local_ctx {
	char *path;
	struct secret *key;
	char key_id[48];
};

static const struct kms_option local_options[] = {
	{"KeyFile", "key-file", KMS_OPT_REQUIRED | KMS_OPT_PATH | KMS_OPT_CREDENTIAL,
	 "file holding the 256-bit master key (32 raw bytes or base64)"},
	{"KeyId", "key-id", KMS_OPT_KEY_IDENTITY,
	 "fingerprint of the master key (recorded by 'kms create'; checked on every use)"},
	{NULL, NULL, 0, NULL},
};

static int local_load(const char *path, struct secret **ret_key, char key_id[48],
		      struct kms_error *err)
{
	_cleanup_secret_ struct secret *file = NULL, *key = NULL;
	_cleanup_close_ int fd = -1;
	struct stat st;
	int r;

	/* opened once: the mode checked is that of the file read */
	fd = open_regular_file(path, &st);
	if (fd == -EISDIR || fd == -EBADFD)
		return kms_error_set(err, -EINVAL, "KeyFileInvalid",
				     "master key file '%s' is not a regular file", path);
	if (fd >= 0 && !FILE_MODE_PRIVATE(st.st_mode))
		/* as ssh(1) treats a private key: whoever else can read it holds every volume */
		return kms_error_set(err, -EINVAL, "KeyFileMode",
				     "master key file '%s' is accessible by group or others (mode "
				     "%04o); run 'chmod 600 %s'",
				     path, (unsigned)(st.st_mode & 07777), path);
	r = fd < 0 ? fd : read_fd_secret(fd, 4096, 0, &file);
	if (r == -EACCES || r == -EPERM)
		/* Not the KMS's answer but this host's: the file is there and we may not read it
		 * (owner, mode, MAC policy, or a unit without CAP_DAC_OVERRIDE). */
		return kms_error_set(err, -ENOKEY, "KeyFileUnreadable",
				     "cannot read master key file '%s': %s", path, strerror(-r));
	if (r == -ENOENT)
		/* The key is gone: that is the local equivalent of a revoked key. */
		return kms_error_set(err, -EACCES, "KeyFileUnavailable",
				     "master key file '%s' cannot be read: %s", path, strerror(-r));
	if (r == -EFBIG)
		return kms_error_set(err, -EBADMSG, "KeyFileInvalid",
				     "master key file '%s' is too large for a 256-bit key", path);
	if (r < 0)
		return kms_error_set(err, r, "KeyFileUnavailable", "cannot read '%s': %s", path,
				     strerror(-r));
	r = local_key_parse(file, &key);
	if (r < 0)
		return kms_error_set(err, -EBADMSG, "KeyFileInvalid",
				     "master key file '%s' holds neither 32 raw bytes nor base64 of 32 "
				     "bytes",
				     path);
	r = local_key_id(key, key_id, 48);
	if (r < 0)
		return r;
	*ret_key = TAKE_PTR(key);
	return 0;
}

static int local_provision(struct kms_config *cfg, const struct kms_runtime *rt,
			   struct kms_error *err)
{
	/* Nothing to create remotely: `kms create` records the fingerprint as KeyId (config layer). */
	return 0;
}

static void local_close(void *p)
{
	struct local_ctx *c = p;

	if (!c)
		return;
	secret_free(c->key);
	free(c->path);
	free(c);
}

static int local_open_ctx(const struct kms_config *cfg, const struct kms_runtime *rt, void **ret,
			  struct kms_error *err)
{
	const char *path = kms_config_get(cfg, "KeyFile");
	const char *want = kms_config_get(cfg, "KeyId");
	struct local_ctx *c;
	int r;

	if (!path)
		return kms_error_set(err, -EINVAL, "", "KeyFile= is not set");
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->path = strdup(path);
	if (!c->path) {
		local_close(c);
		return -ENOMEM;
	}
	r = local_load(path, &c->key, c->key_id, err);
	if (r < 0) {
		local_close(c);
		return r;
	}
	if (want && strcmp(want, c->key_id) != 0) {
		r = kms_error_set(err, -EACCES, "KeyMismatch",
				  "master key file '%s' holds key %s, but configuration '%s' is for key "
				  "%s",
				  path, c->key_id, cfg->name, want);
		local_close(c);
		return r;
	}
	*ret = c;
	return 0;
}

static int local_describe(void *p, struct kms_key_info *ret, struct kms_error *err)
{
	struct local_ctx *c = p;

	snprintf(ret->key_id, sizeof(ret->key_id), "%s", c->key_id);
	snprintf(ret->key_version, sizeof(ret->key_version), "%s", "");
	snprintf(ret->state, sizeof(ret->state), "%s", "enabled");
	snprintf(ret->description, sizeof(ret->description), "AES-256-GCM key file '%s'", c->path);
	return 0;
}

static int local_wrap(void *p, const struct kms_aad *aad, const struct secret *plain,
		      struct kms_wrapped *ret, struct kms_error *err)
{
	struct local_ctx *c = p;
	uint8_t nonce[LOCAL_NONCE_BYTES];
	char aadbuf[128];
	struct kms_wrapped w = {};
	int r;

	r = kms_aad_format(aad, aadbuf, sizeof(aadbuf));
	if (r < 0)
		return r;
	if (getrandom(nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
		return -errno;
	r = local_seal(c->key, nonce, aadbuf, plain, &w.blob, &w.blob_len);
	if (r < 0)
		return kms_error_set(err, r, "", "AES-256-GCM encryption failed");
	w.key_id = strdup(c->key_id);
	w.key_version = strdup("");
	w.alg = strdup(LOCAL_ALG);
	if (!w.key_id || !w.key_version || !w.alg) {
		kms_wrapped_done(&w);
		return -ENOMEM;
	}
	*ret = w;
	return 0;
}

static int local_unwrap(void *p, const struct kms_aad *aad, const struct kms_wrapped *w,
			struct secret **ret, struct kms_error *err)
{
	struct local_ctx *c = p;
	if (!w->alg || strcmp(w->alg, LOCAL_ALG) != 0)
		return kms_error_set(err, -EBADMSG, "UnsupportedAlgorithm",
				     "token algorithm '%s' is not %s", w->alg ? w->alg : "",
				     LOCAL_ALG);
	if (w->key_id && strcmp(w->key_id, c->key_id) != 0)
		return kms_error_reject(err, -EACCES, "KeyMismatch",
				     "secret was wrapped with key %s, but '%s' holds key %s", w->key_id,
				     c->path, c->key_id);
	return local_open_volume(c->key, aad, w->blob, w->blob_len, ret, err);
}

/* `kms policy`: no KMS, so no permissions; what the key file must look like instead. */
static int local_policy(const struct kms_config *cfg, char **ret, struct kms_error *err)
{
	const char *path = kms_config_get(cfg, "KeyFile");

	if (!path)
		return kms_error_set(err, -EINVAL, "", "KeyFile= must be set");
	if (asprintf(ret,
		     "# kmscrypt KMS configuration '%s' (provider local) needs no KMS permissions:\n"
		     "# the master key is the file %s.  Whoever can read it can unlock every volume\n"
		     "# bound to it (tests and labs only).  Requirements:\n"
		     "#   - a regular file holding 32 raw bytes or their base64;\n"
		     "#   - not accessible by group or others (kmscrypt refuses it otherwise):\n"
		     "#       chown root:root %s && chmod 600 %s\n"
		     "#   - in a directory only root can write (e.g. /etc/kmscrypt, mode 0700).\n",
		     cfg->name ? cfg->name : "", path, path, path) < 0)
		return -ENOMEM;
	return 0;
}

const struct kms_provider kms_provider_local = {
	.name = "local",
	.description = "master key in a local file (tests and labs only)",
	.warning = "the local provider keeps the master key on this machine: for tests and labs only, "
		   "not for production",
	.options = local_options,
	.identity_key = "KeyId",
	.provision = local_provision,
	.open = local_open_ctx,
	.close = local_close,
	.describe = local_describe,
	.wrap = local_wrap,
	.unwrap = local_unwrap,
	.policy = local_policy,
};
