/* SPDX-License-Identifier: MIT */
/* check and the proof of a KMS configuration: a KMS round trip, nothing written but audit
 * (core/check.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "codec/kms_error.h"
#include "config/kms_config.h"
#include "core/check.h"
#include "core/flows.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/volume.h"

int core_check_volume(const struct core_ctx *c, struct kms_set *ks, const char *device,
		      struct vol *v)
{
	struct kms_handle *h;
	struct kms_error err = {};
	_cleanup_secret_ struct secret *secret = NULL;
	char buf[512];
	double t0 = now_ms();
	bool audit = false;
	int r;

	*v = (struct vol){};
	r = vol_from_device(c, device, v, true);
	if (r < 0)
		goto out;
	{
		char pend[512];
		if (core_reencrypt_pending(v, pend, sizeof(pend)))
			log_warning("%s", pend);
	}
	/* A revoked volume is not unwrapped, not even to test it: restore is the way back. */
	if (vol_refusal(c, v, v->msg, sizeof(v->msg))) {
		r = v->state_r < 0 && v->state_r != -ENOENT ? -EBADMSG : -EALREADY;
		log_error("%s", v->msg);
		goto out;
	}
	if (v->tok.n_wraps > 1) {
		/* several KMSs: every one is asked, and each answer reported */
		audit = true;
		r = core_unwrap(c, ks, v, "check", &secret, NULL);
		if (r < 0) {
			log_error("%s", v->msg);
			goto out;
		}
		goto test;
	}
	h = kms_set_get(c, ks, v->tok.kms, &r);
	if (!h && core_unwrap_fallback(c, ks, v, &secret) == 0)
		h = kms_set_get(c, ks, v->tok.kms, &r); /* another token's configuration */
	if (!h) {
		/* logged for the first volume bound to it only */
		snprintf(v->msg, sizeof(v->msg),
			 "Cannot check '%s' (UUID %s): KMS configuration '%s' cannot be used (see "
			 "the error logged for it).",
			 device, v->hdr.uuid, v->tok.kms);
		goto out;
	}
	audit = true; /* a KMS round trip with the volume's secret */
	r = kms_handle_unwrap(h, v->hdr.uuid, &v->tok, &secret, &err);
	if (r < 0 && core_unwrap_fallback(c, ks, v, &secret) == 0)
		r = 0; /* another kmscrypt token opened it (a rotation was interrupted) */
	if (r < 0) {
		kms_error_describe(&err, buf, sizeof(buf));
		log_error_errno(r,
				"Cannot unwrap the secret of '%s' (UUID %s) through KMS '%s': %s; "
				"%s.",
				device, v->hdr.uuid, v->tok.kms, buf, core_hint_for_error(r, &err));
		snprintf(v->msg, sizeof(v->msg), "%s", buf);
		goto out;
	}
test:
	r = volume_test_secret(device, v->tok.keyslot, secret);
	if (r < 0) {
		snprintf(v->msg, sizeof(v->msg),
			 "The unwrapped secret does not open keyslot %d of '%s' (UUID %s): the "
			 "token does not match its keyslot. Open the volume with its recovery key "
			 "and re-bind it.",
			 v->tok.keyslot, device, v->hdr.uuid);
		log_error_errno(r == -EPERM ? EBADMSG : r, "%s", v->msg);
		r = r == -EPERM ? -EBADMSG : r;
		goto out;
	}
out:
	v->r = r;
	v->ms = now_ms() - t0;
	if (audit)
		vol_audit(c, v, "check", NULL);
	return r;
}

int core_kms_prove(const struct core_ctx *c, const struct kms_config *cfg,
		   struct kms_key_info *info, double *ret_ms, struct kms_error *err)
{
	_cleanup_secret_ struct secret *probe = NULL, *back = NULL;
	/* a UUID no volume has: the test wrap binds to nothing real */
	struct kms_aad aad = {.uuid = "00000000-0000-4000-8000-000000000000", .keyslot = 0};
	struct kms_wrapped w = {};
	void *ctx = NULL;
	double t0 = now_ms();
	int r;

	r = cfg->provider->open(cfg, &c->rt, &ctx, err);
	if (r < 0) {
		*ret_ms = now_ms() - t0;
		return r;
	}
	r = cfg->provider->describe(ctx, info, err);
	if (r < 0)
		goto out;
	r = secret_random(32, &probe);
	if (r < 0)
		goto out;
	r = cfg->provider->wrap(ctx, &aad, probe, &w, err);
	if (r < 0)
		goto out;
	r = cfg->provider->unwrap(ctx, &aad, &w, &back, err);
	if (r < 0)
		goto out;
	if (back->len != probe->len || secret_memcmp(back->buf, probe->buf, probe->len) != 0)
		r = kms_error_set(err, -EBADMSG, "RoundTripMismatch",
				  "the KMS returned different bytes than were wrapped");
out:
	kms_wrapped_done(&w);
	cfg->provider->close(ctx);
	*ret_ms = now_ms() - t0;
	return r;
}

int core_kms_check(const struct core_ctx *c, const char *name, struct core_kms_check *res)
{
	char buf[512];
	int r;

	*res = (struct core_kms_check){};
	r = core_kms_load(c, name, &res->cfg);
	if (r >= 0)
		r = core_kms_resolve_credentials(&res->cfg);
	if (r < 0)
		return res->r = r; /* both log */
	res->proved = true;
	r = core_kms_prove(c, &res->cfg, &res->info, &res->ms, &res->err);
	if (r < 0) {
		kms_error_describe(&res->err, buf, sizeof(buf));
		log_error_errno(r, "KMS configuration '%s' (%s) failed its check: %s; %s.",
				res->cfg.name, res->cfg.provider->name, buf, core_hint_for(r));
	}
	return res->r = r;
}

void core_kms_check_done(struct core_kms_check *res)
{
	kms_config_done(&res->cfg);
}
