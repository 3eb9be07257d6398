/* SPDX-License-Identifier: MIT */
/*
 * Rotation (core/flows.h): rotate-master rewraps a volume's secret under the newest version of its
 * master key (or another configuration); rotate-secret puts a new secret in a new keyslot.  Both
 * keep the volume openable at every instant:
 *
 *   rotate-master   T0(k)  ->  T0(k) T1(k)  -> [T1 proven: unwrap + keyslot k opens] ->  T1(k)
 *   rotate-secret   T0(k)  ->  T0(k) P  ->  + keyslot k2  ->  + T2(k2)  -> [T2 proven]  ->
 *                   P T2(k2) + keyslot k (its token gone)  ->  P T2(k2)  ->  T2(k2)
 *
 * P is a LUKS2 token of type "kmscrypt-pending" assigned to no keyslot, {"op": "rotate-secret" or
 * "bind", "old_keyslot", "new_keyslot"}: the header itself says which keyslot a killed run added,
 * so the next run finishes the change (the new token proves itself) or undoes it (the keyslot it
 * added and never bound is destroyed): the keyslot count does not grow across crashes.  Every state
 * above has a first "kmscrypt" token that opens its keyslot, and the unlock path (core_unwrap())
 * falls back to any other kmscrypt token.  The bindings a volume was ever wrapped under are
 * recorded in its state record ("history") and in kms-usage/ before the header changes, so
 * `kms delete` refuses a configuration that a header or a header backup may still need.
 *
 * KMSCRYPT_TEST_CRASH_AT=<point> (tests only) kills the process with SIGKILL at that point.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "core/flows.h"
#include "kmscrypt/exit.h"
#include "kmscrypt/token.h"
#include "state/state.h"
#include "util/cleanup.h"
#include "util/clock.h"
#include "util/secret.h"
#include "volume/volume.h"

#define PENDING_TYPE KMSCRYPT_TOKEN_TYPE "-pending"

static void crash_point(const char *name)
{
	const char *at = getenv("KMSCRYPT_TEST_CRASH_AT");

	if (at && strcmp(at, name) == 0)
		(void)kill(getpid(), SIGKILL);
}

/* The tokens of the header as rotation sees them. */
struct toks {
	struct volume_token *l;
	size_t n;
};

static void toks_done(struct toks *t)
{
	volume_tokens_free(t->l, t->n);
	*t = (struct toks){};
}

static bool is_kmscrypt(const struct volume_token *t)
{
	return strcmp(t->type, KMSCRYPT_TOKEN_TYPE) == 0;
}

static bool is_pending(const struct volume_token *t)
{
	return strcmp(t->type, PENDING_TYPE) == 0;
}

/* The "version" of a token's JSON; 0 when unreadable. */
static int token_json_version(const char *json)
{
	json_object *o = json_tokener_parse(json), *v;
	int ver = 0;

	if (o && json_object_object_get_ex(o, "version", &v) && json_object_is_type(v, json_type_int))
		ver = json_object_get_int(v);
	json_object_put(o);
	return ver;
}

static int pending_get(const struct volume_token *t, const char **ret_op, int *ret_old,
		       int *ret_new, json_object **ret_o)
{
	json_object *o = json_tokener_parse(t->json), *v;

	if (!o)
		return -EBADMSG;
	*ret_op = json_object_object_get_ex(o, "op", &v) ? json_object_get_string(v) : "";
	*ret_old = json_object_object_get_ex(o, "old_keyslot", &v) ? atoi(json_object_get_string(v))
								     : -1;
	*ret_new = json_object_object_get_ex(o, "new_keyslot", &v) ? atoi(json_object_get_string(v))
								     : -1;
	*ret_o = o;
	return 0;
}

static char *pending_json(const char *op, int old_keyslot, int new_keyslot)
{
	char *s = NULL;

	if (asprintf(&s,
		     "{\"type\":\"%s\",\"keyslots\":[],\"op\":\"%s\",\"old_keyslot\":\"%d\","
		     "\"new_keyslot\":\"%d\"}",
		     PENDING_TYPE, op, old_keyslot, new_keyslot) < 0)
		return NULL;
	return s;
}

/* A version-2 token's secret through its KMSs (k of them answer: core_token_unwrap()); -errno
 * with each KMS's answer in @why. */
static int unwrap_multi(const struct core_ctx *c, struct kms_set *ks, const char *uuid,
			const struct kmscrypt_token *t, struct secret **ret, char *why, size_t n)
{
	struct kms_handle *hs[KMSCRYPT_TOKEN_MAX_WRAPS];
	struct core_wrap_answer ans[KMSCRYPT_TOKEN_MAX_WRAPS];
	int hr[KMSCRYPT_TOKEN_MAX_WRAPS];
	char desc[600];
	int r;

	for (size_t i = 0; i < t->n_wraps; i++)
		hs[i] = kms_set_get(c, ks, t->wraps[i].kms, &hr[i]);
	r = core_token_unwrap(hs, hr, uuid, t, false, ret, ans);
	if (r < 0) {
		core_answers_describe(t, ans, desc, sizeof(desc));
		snprintf(why, n, "%u of its %zu KMSs answered, %u needed (%s); %s",
			 core_answers_ok(t, ans), t->n_wraps, t->threshold, desc,
			 core_kms_transient(r) ? "retry when enough are reachable"
					       : "too few can ever answer");
	}
	return r;
}

/* Unwrap @json's secret for volume @uuid and prove it opens the token's keyslot.  0, or -errno with
 * @why (one line) and *ret_err. */
static int prove_token(const struct core_ctx *c, struct kms_set *ks, const char *device,
		       const char *uuid, const char *json, struct kmscrypt_token *ret_tok,
		       struct secret **ret_secret, char *why, size_t n)
{
	_cleanup_secret_ struct secret *secret = NULL;
	struct kmscrypt_token t = {};
	struct kms_handle *h;
	struct kms_error err = {};
	char buf[384];
	int r;

	r = token_parse(json, &t, buf, sizeof(buf));
	if (r < 0) {
		snprintf(why, n, "its token is invalid: %s", buf);
		return r;
	}
	if (t.version >= KMSCRYPT_TOKEN_VERSION_MULTI) {
		char desc[256];

		r = unwrap_multi(c, ks, uuid, &t, &secret, why, n);
		if (r < 0) {
			token_done(&t);
			return r;
		}
		core_binding_desc(&t, desc, sizeof(desc));
		r = volume_test_secret(device, t.keyslot, secret);
		if (r < 0) {
			snprintf(why, n, "the secret unwrapped through %s does not open keyslot %d",
				 desc, t.keyslot);
			token_done(&t);
			return r == -EPERM ? -EBADMSG : r;
		}
		goto proven;
	}
	h = kms_set_get(c, ks, t.kms, &r);
	if (!h) {
		snprintf(why, n, "KMS configuration '%s' cannot be used (see above)", t.kms);
		token_done(&t);
		return r;
	}
	r = kms_handle_unwrap(h, uuid, &t, &secret, &err);
	if (r < 0) {
		kms_error_describe(&err, buf, sizeof(buf));
		snprintf(why, n, "KMS '%s' (%s) %s: %s; %s", t.kms, h->cfg.provider->name,
			 core_kms_failure(r, &err), buf, core_hint_for_error(r, &err));
		token_done(&t);
		return r;
	}
	r = volume_test_secret(device, t.keyslot, secret);
	if (r < 0) {
		snprintf(why, n, "the secret unwrapped through KMS '%s' does not open keyslot %d",
			 t.kms, t.keyslot);
		token_done(&t);
		return r == -EPERM ? -EBADMSG : r;
	}
proven:
	if (ret_tok)
		*ret_tok = t;
	else
		token_done(&t);
	if (ret_secret)
		*ret_secret = TAKE_PTR(secret);
	return 0;
}

int core_token_version(const char *device)
{
	struct volume_header h = {};
	int ver = 0;

	if (volume_read_header(device, &h) == 0 && h.token_json)
		ver = token_json_version(h.token_json);
	volume_header_done(&h);
	return ver;
}

/* ---- the unlock path: any kmscrypt token ------------------------------------------------------ */

void core_open_token_kms(const struct core_ctx *c, struct kms_set *ks, const struct vol *v)
{
	struct toks t = {};

	if (volume_tokens_list(v->device, &t.l, &t.n) < 0)
		return;
	for (size_t i = 1; i < t.n; i++) { /* the first is v->tok */
		struct kmscrypt_token tok = {};
		int r;

		if (is_kmscrypt(&t.l[i]) && token_parse(t.l[i].json, &tok, NULL, 0) == 0)
			(void)kms_set_get(c, ks, tok.kms, &r);
		token_done(&tok);
	}
	toks_done(&t);
}

int core_unwrap_fallback(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
			 struct secret **ret)
{
	struct toks t = {};
	int r = -ENOENT;

	if (volume_tokens_list(v->device, &t.l, &t.n) < 0)
		return -ENOENT;
	for (size_t i = 0; i < t.n; i++) {
		struct kmscrypt_token tok = {};
		char why[1024];

		if (!is_kmscrypt(&t.l[i]) || (v->hdr.token_json && !strcmp(t.l[i].json, v->hdr.token_json)))
			continue;
		if (prove_token(c, ks, v->device, v->hdr.uuid, t.l[i].json, &tok, ret, why,
				sizeof(why)) < 0)
			continue;
		if (tok.revoked) { /* never a way around the revoked mark */
			token_done(&tok);
			secret_free(*ret);
			*ret = NULL;
			continue;
		}
		token_done(&v->tok);
		v->tok = tok;
		r = 0;
		break;
	}
	toks_done(&t);
	return r;
}

/* ---- history ---------------------------------------------------------------------------------- */

static bool same_binding(json_object *a, json_object *b)
{
	static const char *const keys[] = {"kms", "key_id", "key_version", "keyslot"};
	json_object *wa = NULL, *wb = NULL;

	/* a multi-KMS binding: its threshold and every wrap too */
	(void)json_object_object_get_ex(a, "wraps", &wa);
	(void)json_object_object_get_ex(b, "wraps", &wb);
	if (wa && wb) {
		json_object *ka = NULL, *kb = NULL;
		(void)json_object_object_get_ex(a, "threshold", &ka);
		(void)json_object_object_get_ex(b, "threshold", &kb);
		if (json_object_get_int(ka) != json_object_get_int(kb))
			return false;
	}
	if ((wa || wb) && (!wa || !wb || strcmp(json_object_to_json_string(wa),
						json_object_to_json_string(wb)) != 0))
		return false;

	for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++) {
		json_object *x, *y;
		if (!json_object_object_get_ex(a, keys[i], &x) ||
		    !json_object_object_get_ex(b, keys[i], &y) ||
		    strcmp(json_object_get_string(x), json_object_get_string(y)) != 0)
			return false;
	}
	return true;
}

static void add_time(json_object *o, const char *key, time_t t)
{
	char buf[32];

	format_rfc3339(t, buf, sizeof(buf));
	json_object_object_add(o, key, json_object_new_string(buf));
}

/* Add @cur (since its token's creation, when the history is empty) and @next (since now) to @v's
 * history unless there; with @close, end every other open entry now. */
static int history_update(struct vol *v, json_object *cur, const char *cur_since, json_object *next,
			  bool close)
{
	json_object *h = v->st.history ? json_tokener_parse(v->st.history) : NULL;
	json_object *found = NULL;
	char *text;

	if (!h || !json_object_is_type(h, json_type_array)) {
		json_object_put(h);
		h = json_object_new_array();
	}
	if (json_object_array_length(h) == 0 && cur) {
		json_object *e = json_tokener_parse(json_object_to_json_string(cur));
		json_object_object_add(e, "since", json_object_new_string(cur_since ?: ""));
		json_object_array_add(h, e);
	}
	for (size_t i = 0; i < json_object_array_length(h); i++) {
		json_object *e = json_object_array_get_idx(h, i), *u;
		if (same_binding(e, next) && !json_object_object_get_ex(e, "until", &u))
			found = e;
	}
	if (!found) {
		found = json_tokener_parse(json_object_to_json_string(next));
		add_time(found, "since", time(NULL));
		json_object_array_add(h, found);
	}
	if (close)
		for (size_t i = 0; i < json_object_array_length(h); i++) {
			json_object *e = json_object_array_get_idx(h, i), *u;
			if (e != found && !json_object_object_get_ex(e, "until", &u))
				add_time(e, "until", time(NULL));
		}
	text = strdup(json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN |
							    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(h);
	if (!text)
		return -ENOMEM;
	free(v->st.history);
	v->st.history = text;
	return 0;
}

/* Save the state with @v->st.kms set to @kms (the binding of the header now, or about to be). */
static int save_state_kms(const struct core_ctx *c, struct vol *v)
{
	return vol_save_state(c, v);
}

/* The rotation's sides for the front end: a multi-KMS binding's configurations and key versions
 * joined by ",". */
static void side_of(const struct kmscrypt_token *t, char *kms, size_t kn, char *ver, size_t vn)
{
	size_t ko = 0, vo = 0;

	if (t->version < KMSCRYPT_TOKEN_VERSION_MULTI) {
		snprintf(kms, kn, "%s", t->kms ?: "");
		snprintf(ver, vn, "%s", t->key_version ?: "");
		return;
	}
	kms[0] = ver[0] = 0;
	for (size_t i = 0; i < t->n_wraps; i++) {
		if (ko < kn)
			ko += (size_t)snprintf(kms + ko, kn - ko, "%s%s", i ? "," : "", t->wraps[i].kms);
		if (vo < vn)
			vo += (size_t)snprintf(ver + vo, vn - vo, "%s%s", i ? "," : "",
					       t->wraps[i].key_version ?: "");
	}
}

static void audit(const struct core_ctx *c, struct vol *v, const char *action, json_object *old,
		  json_object *new)
{
	char kms[KMSCRYPT_TOKEN_MAX_WRAPS * 66] = "", ver[8];

	/* a multi-KMS binding: every configuration, as bind's record names them */
	if (v->has_tok)
		side_of(&v->tok, kms, sizeof(kms), ver, sizeof(ver));
	int r = audit_append(c->state_dir,
			     &(struct audit_record){
				 .action = action,
				 .uuid = v->hdr.uuid,
				 .mapping = v->mapping,
				 .device = v->device,
				 .kms = v->has_tok ? kms : NULL,
				 .result = v->r == 0 ? (v->result ?: "ok") : v->msg,
				 .duration_ms = v->ms,
				 .old_binding = old ? json_object_to_json_string(old) : NULL,
				 .new_binding = new ? json_object_to_json_string(new) : NULL,
			     });
	(void)r; /* the caller's one line says what happened; the audit log is best effort here */
}

/* ---- a change left by a killed run ------------------------------------------------------------ */

/* Finish or undo what a killed bind or rotate-secret left (a "kmscrypt-pending" token).  0 when
 * there was nothing, 1 when it finished a rotate-secret (the new keyslot proved itself and the old
 * one is gone), 2 when it undid a change; -errno with @why. */
static int pending_resolve(const struct core_ctx *c, struct kms_set *ks, const char *device,
			   const char *uuid, char *why, size_t n)
{
	struct toks t = {};
	int r, ret = 0;

	r = volume_tokens_list(device, &t.l, &t.n);
	if (r < 0) {
		snprintf(why, n, "cannot read its tokens: %s", strerror(-r));
		return r;
	}
	for (size_t i = 0; i < t.n; i++) {
		const char *op;
		int old_ks, new_ks;
		json_object *o = NULL;
		const char *proven = NULL;

		if (!is_pending(&t.l[i]))
			continue;
		r = pending_get(&t.l[i], &op, &old_ks, &new_ks, &o);
		if (r < 0 || new_ks < 0) {
			json_object_put(o);
			snprintf(why, n, "its pending-change token %d is invalid; remove it with "
				 "'cryptsetup token remove --token-id %d'", t.l[i].id, t.l[i].id);
			r = -EBADMSG;
			goto out;
		}
		/* Is there a kmscrypt token on the new keyslot that proves itself? */
		for (size_t j = 0; j < t.n && !proven; j++) {
			char w[1024];
			if (!is_kmscrypt(&t.l[j]) || t.l[j].keyslot != new_ks)
				continue;
			if (strcmp(op, "bind") == 0) {
				proven = t.l[j].json; /* bind imports a token it made itself */
				continue;
			}
			r = prove_token(c, ks, device, uuid, t.l[j].json, NULL, NULL, w, sizeof(w));
			if (r == 0)
				proven = t.l[j].json;
			else if (r != -EBADMSG) {
				/* the KMS could not say: neither finish nor undo */
				snprintf(why, n, "an interrupted %s cannot be finished: %s", op, w);
				json_object_put(o);
				goto out;
			}
		}
		if (proven) {
			/* finish: the old keyslot and its tokens go (rotate-secret), then the marker */
			if (strcmp(op, "rotate-secret") == 0 && old_ks >= 0) {
				for (size_t j = 0; j < t.n; j++)
					if (is_kmscrypt(&t.l[j]) && t.l[j].json != proven &&
					    (t.l[j].keyslot == old_ks || t.l[j].keyslot < 0)) {
						r = volume_token_remove(device, t.l[j].id, t.l[j].json);
						if (r < 0 && r != -ENOENT)
							goto fail;
					}
				crash_point("rotate-secret:old-token-removed");
				r = volume_keyslot_destroy(device, old_ks);
				if (r < 0)
					goto fail;
				crash_point("rotate-secret:old-keyslot-destroyed");
				ret = 1;
			}
		} else {
			/* undo: the keyslot it added opens nothing kmscrypt knows */
			for (size_t j = 0; j < t.n; j++)
				if (is_kmscrypt(&t.l[j]) && t.l[j].keyslot == new_ks) {
					r = volume_token_remove(device, t.l[j].id, t.l[j].json);
					if (r < 0 && r != -ENOENT)
						goto fail;
				}
			r = volume_keyslot_destroy(device, new_ks);
			if (r < 0)
				goto fail;
			ret = ret ?: 2;
		}
		r = volume_token_remove(device, t.l[i].id, t.l[i].json);
		if (r < 0 && r != -ENOENT)
			goto fail;
		json_object_put(o);
		continue;
	fail:
		json_object_put(o);
		snprintf(why, n, "cannot finish an interrupted %s: %s", op, strerror(-r));
		goto out;
	}
	r = ret;
out:
	toks_done(&t);
	return r;
}

/* ---- rotate-master ------------------------------------------------------------------------------ */

/* The binding that opens the volume now: the first kmscrypt token that proves itself (a killed
 * rotation may have left two).  Fills v->msg on failure. */
static int current_binding(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
			   const char *verb, struct toks *t, struct kmscrypt_token *ret_tok,
			   struct secret **ret_secret, const char **ret_json)
{
	char why[1024] = "", first[1024] = "";
	int r, first_r = -ENODEV;

	r = volume_tokens_list(v->device, &t->l, &t->n);
	if (r < 0) {
		vol_fail(v, r, "Cannot %s '%s' (UUID %s): cannot read its tokens: %s.", verb,
			 v->device, v->hdr.uuid, strerror(-r));
		return r;
	}
	for (size_t i = 0; i < t->n; i++) {
		if (!is_kmscrypt(&t->l[i]))
			continue;
		r = prove_token(c, ks, v->device, v->hdr.uuid, t->l[i].json, ret_tok, ret_secret,
				why, sizeof(why));
		if (r == 0) {
			*ret_json = t->l[i].json;
			return 0;
		}
		if (!first[0]) {
			snprintf(first, sizeof(first), "%s", why);
			first_r = r;
		}
	}
	vol_fail(v, first_r,
		 "Cannot %s '%s' (UUID %s): %s; nothing was changed. Run it again once the KMS "
		 "answers.",
		 verb, v->device, v->hdr.uuid, first[0] ? first : "it has no kmscrypt token");
	return first_r;
}

static bool refuse_revoked(const struct core_ctx *c, struct vol *v, const char *verb)
{
	char why[sizeof(v->msg)];

	if (!vol_refusal(c, v, why, sizeof(why)))
		return false;
	vol_fail(v, v->state_r < 0 && v->state_r != -ENOENT ? -EBADMSG : -EALREADY,
		 "Cannot %s '%s' (UUID %s): it is revoked or its state is unreadable; 'kmscrypt "
		 "restore' it first.",
		 verb, v->device, v->hdr.uuid);
	return true;
}

/* The KMS handles of the new binding: those of @cur's wraps, with @replace_old's configuration
 * replaced by @kms (--replace OLD=NEW); for a version-1 binding @kms (--kms) or its own.  A
 * multi-KMS binding refuses a bare --kms: which of its KMSs it would replace is not said, and
 * collapsing it onto one KMS would silently give up the redundancy it was made for.  Fills v->msg
 * on failure; nothing has changed yet. */
static int new_binding_handles(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
			       const char *verb, const struct kmscrypt_token *cur, const char *kms,
			       const char *replace_old, struct kms_handle **hs, size_t *ret_n)
{
	const char *names[KMSCRYPT_TOKEN_MAX_WRAPS];
	bool multi = cur->version >= KMSCRYPT_TOKEN_VERSION_MULTI, found = false;
	size_t n = multi ? cur->n_wraps : 1;
	char desc[256];
	int r;

	core_binding_desc(cur, desc, sizeof(desc));
	if (!multi) {
		if (replace_old && strcmp(replace_old, cur->kms) != 0) {
			vol_fail(v, -EINVAL,
				 "Cannot %s '%s' (UUID %s): --replace names KMS '%s', but it is bound "
				 "to KMS '%s'; nothing was changed.",
				 verb, v->device, v->hdr.uuid, replace_old, cur->kms);
			v->code = KMSCRYPT_EXIT_USAGE;
			return -EINVAL;
		}
		names[0] = kms ?: cur->kms;
	} else {
		if (kms && !replace_old) {
			vol_fail(v, -EINVAL,
				 "Cannot %s '%s' (UUID %s): it is bound to %s, and --kms names one KMS; "
				 "replace one of them with --replace OLD=%s, or rotate all without "
				 "--kms. Nothing was changed.",
				 verb, v->device, v->hdr.uuid, desc, kms);
			v->code = KMSCRYPT_EXIT_USAGE;
			return -EINVAL;
		}
		for (size_t i = 0; i < n; i++) {
			names[i] = cur->wraps[i].kms;
			if (replace_old && strcmp(names[i], replace_old) == 0) {
				names[i] = kms;
				found = true;
			} else if (replace_old && strcmp(names[i], kms) == 0) {
				vol_fail(v, -EINVAL,
					 "Cannot %s '%s' (UUID %s): KMS '%s' is already one of %s; "
					 "replace with a configuration not yet bound. Nothing was "
					 "changed.",
					 verb, v->device, v->hdr.uuid, kms, desc);
				v->code = KMSCRYPT_EXIT_USAGE;
				return -EINVAL;
			}
		}
		if (replace_old && !found) {
			vol_fail(v, -EINVAL,
				 "Cannot %s '%s' (UUID %s): --replace names KMS '%s', which is not "
				 "one of %s; nothing was changed.",
				 verb, v->device, v->hdr.uuid, replace_old, desc);
			v->code = KMSCRYPT_EXIT_USAGE;
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < n; i++) {
		hs[i] = kms_set_get(c, ks, names[i], &r);
		if (!hs[i]) {
			vol_fail(v, r,
				 "Cannot %s '%s' (UUID %s): KMS configuration '%s' cannot be used "
				 "(see above); nothing was changed.",
				 verb, v->device, v->hdr.uuid, names[i]);
			return r;
		}
	}
	*ret_n = n;
	return 0;
}

void core_rotate_master(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
			const char *kms, const char *replace_old, struct core_rotation *out)
{
	_cleanup_secret_ struct secret *secret = NULL;
	_cleanup_free_ char *new_json = NULL;
	struct kmscrypt_token cur = {}, now = {};
	struct kms_handle *hs[KMSCRYPT_TOKEN_MAX_WRAPS];
	struct toks t = {};
	json_object *old_b = NULL, *new_b = NULL;
	const char *cur_json = NULL;
	char why[1024], old_desc[256] = "", new_desc[256] = "";
	double t0 = now_ms();
	size_t nh = 0;
	bool multi;
	int r, new_id = -1;

	*out = (struct core_rotation){.old_keyslot = -1, .new_keyslot = -1};
	if (refuse_revoked(c, v, "rotate-master"))
		goto out;
	r = pending_resolve(c, ks, v->device, v->hdr.uuid, why, sizeof(why));
	if (r < 0) {
		vol_fail(v, r, "Cannot rotate-master '%s' (UUID %s): %s.", v->device, v->hdr.uuid,
			 why);
		goto out;
	}
	r = current_binding(c, ks, v, "rotate-master", &t, &cur, &secret, &cur_json);
	if (r < 0)
		goto out;
	multi = cur.version >= KMSCRYPT_TOKEN_VERSION_MULTI;
	r = new_binding_handles(c, ks, v, "rotate-master", &cur, kms, replace_old, hs, &nh);
	if (r < 0)
		goto out;
	/* The same secret; a multi-KMS binding's shares are split afresh (k answered, every KMS of
	 * the new binding wraps). */
	r = core_wrap_token(hs, nh, multi ? cur.threshold : 1, multi, v->hdr.uuid, cur.keyslot,
			    secret, &new_json, why, sizeof(why));
	if (r < 0) {
		vol_fail(v, r, "Cannot rotate-master '%s' (UUID %s): %s; nothing was changed.",
			 v->device, v->hdr.uuid, why);
		goto out;
	}
	r = token_parse(new_json, &now, NULL, 0);
	if (r < 0) {
		vol_fail(v, r, "Cannot rotate-master '%s' (UUID %s): the new token does not parse; "
			 "nothing was changed.", v->device, v->hdr.uuid);
		goto out;
	}
	old_b = core_binding_json(&cur);
	new_b = core_binding_json(&now);
	core_binding_desc(&cur, old_desc, sizeof(old_desc));
	core_binding_desc(&now, new_desc, sizeof(new_desc));
	side_of(&cur, out->old_kms, sizeof(out->old_kms), out->old_key_version,
		sizeof(out->old_key_version));
	side_of(&now, out->new_kms, sizeof(out->new_kms), out->new_key_version,
		sizeof(out->new_key_version));
	out->old_keyslot = out->new_keyslot = cur.keyslot;

	/* Recorded before the header changes: kms delete refuses what a header may need. */
	r = 0;
	for (size_t i = 0; i < nh && r == 0; i++)
		r = usage_record(c->state_dir, hs[i]->cfg.name, v->hdr.uuid, v->device);
	if (r == 0)
		r = history_update(v, old_b, cur.created, new_b, false);
	if (r == 0)
		r = save_state_kms(c, v);
	if (r < 0) {
		vol_fail(v, r,
			 "Cannot rotate-master '%s' (UUID %s): cannot record the new binding in "
			 "'%s' (%s); nothing was changed.",
			 v->device, v->hdr.uuid, c->state_dir, strerror(-r));
		v->code = KMSCRYPT_EXIT_FAILURE;
		goto out;
	}
	crash_point("rotate-master:recorded");
	r = volume_token_add(v->device, cur.keyslot, new_json, &new_id);
	if (r < 0) {
		vol_fail(v, r, "Cannot rotate-master '%s' (UUID %s): cannot add the new token (%s); "
			 "nothing was changed.", v->device, v->hdr.uuid, strerror(-r));
		goto out;
	}
	crash_point("rotate-master:token-added");
	/* Prove the new token as it reads back from the header. */
	r = prove_token(c, ks, v->device, v->hdr.uuid, new_json, NULL, NULL, why, sizeof(why));
	if (r < 0) {
		int k = volume_token_remove(v->device, new_id, new_json);
		vol_fail(v, r,
			 "Cannot rotate-master '%s' (UUID %s): the new token does not open the "
			 "volume: %s; %s.",
			 v->device, v->hdr.uuid, why,
			 k < 0 ? "it could not be removed again (run rotate-master again)"
			       : "it was removed again and the old binding stays");
		goto out;
	}
	/* The old token(s) go only now. */
	for (size_t i = 0; i < t.n; i++) {
		if (!is_kmscrypt(&t.l[i]) || t.l[i].id == new_id)
			continue;
		r = volume_token_remove(v->device, t.l[i].id, t.l[i].json);
		if (r < 0 && r != -ENOENT) {
			vol_fail(v, r,
				 "Rotated '%s' (UUID %s) to %s, but its old token %d could not be "
				 "removed (%s); run rotate-master again.",
				 v->device, v->hdr.uuid, new_desc, t.l[i].id, strerror(-r));
			v->code = KMSCRYPT_EXIT_VOLUME;
			goto out;
		}
		crash_point("rotate-master:old-token-removed");
	}
	r = vol_refresh(c, v);
	if (r == 0)
		r = history_update(v, NULL, NULL, new_b, true);
	if (r == 0)
		r = save_state_kms(c, v);
	if (r < 0) {
		vol_fail(v, r,
			 "Rotated '%s' (UUID %s) to %s, but its state record could not be saved "
			 "(%s).",
			 v->device, v->hdr.uuid, new_desc, strerror(-r));
		v->code = KMSCRYPT_EXIT_FAILURE;
		goto out;
	}
	v->result = "rotated";
	v->ms = now_ms() - t0;
	if (multi)
		snprintf(v->msg, sizeof(v->msg),
			 "Rotated the master keys of '%s' (UUID %s): %s -> %s, each share wrapped "
			 "under the newest key version, keyslot %d, proven to open (%.0f ms).",
			 v->device, v->hdr.uuid, old_desc, new_desc, cur.keyslot, v->ms);
	else
		snprintf(v->msg, sizeof(v->msg),
			 "Rotated the master key of '%s' (UUID %s): KMS '%s'%s%s -> KMS '%s'%s%s, "
			 "keyslot %d, proven to open (%.0f ms).",
			 v->device, v->hdr.uuid, cur.kms, *cur.key_version ? " version " : "",
			 cur.key_version, now.kms, now.key_version && *now.key_version ? " version " : "",
			 now.key_version ?: "", cur.keyslot, v->ms);
out:
	if (!v->result)
		v->result = v->r < 0 ? "error" : "rotated";
	if (v->r < 0)
		v->result = "error";
	v->ms = now_ms() - t0;
	audit(c, v, "rotate-master", old_b, new_b);
	json_object_put(old_b);
	json_object_put(new_b);
	token_done(&cur);
	token_done(&now);
	toks_done(&t);
}

/* ---- rotate-secret ---------------------------------------------------------------------------- */

void core_rotate_secret(const struct core_ctx *c, struct kms_set *ks, struct vol *v,
			struct core_rotation *out)
{
	_cleanup_secret_ struct secret *secret = NULL, *fresh = NULL;
	_cleanup_free_ char *new_json = NULL, *p_json = NULL;
	struct kmscrypt_token cur = {}, now = {};
	struct kms_handle *hs[KMSCRYPT_TOKEN_MAX_WRAPS];
	struct toks t = {};
	json_object *old_b = NULL, *new_b = NULL;
	const char *cur_json = NULL;
	char why[1024], new_desc[256] = "";
	double t0 = now_ms();
	size_t nh = 0;
	bool multi;
	int r, k2 = -1, new_id = -1, p_id = -1;

	*out = (struct core_rotation){.old_keyslot = -1, .new_keyslot = -1};
	if (refuse_revoked(c, v, "rotate-secret"))
		goto out;
	r = pending_resolve(c, ks, v->device, v->hdr.uuid, why, sizeof(why));
	if (r < 0) {
		vol_fail(v, r, "Cannot rotate-secret '%s' (UUID %s): %s.", v->device, v->hdr.uuid,
			 why);
		goto out;
	}
	if (r == 1) {
		/* a killed run's new keyslot proved itself and the old one is gone: that is this
		 * run's rotation */
		out->resumed = true;
		(void)vol_refresh(c, v);
		v->result = "rotated";
		v->ms = now_ms() - t0;
		core_binding_desc(&v->tok, new_desc, sizeof(new_desc));
		snprintf(v->msg, sizeof(v->msg),
			 "Finished the interrupted rotate-secret of '%s' (UUID %s): keyslot %d, %s, "
			 "proven to open.",
			 v->device, v->hdr.uuid, v->tok.keyslot, new_desc);
		out->new_keyslot = v->tok.keyslot;
		side_of(&v->tok, out->new_kms, sizeof(out->new_kms), out->new_key_version,
			sizeof(out->new_key_version));
		snprintf(out->old_kms, sizeof(out->old_kms), "%s", out->new_kms);
		new_b = core_binding_json(&v->tok);
		if (history_update(v, NULL, NULL, new_b, true) == 0)
			(void)save_state_kms(c, v);
		goto out;
	}
	r = current_binding(c, ks, v, "rotate-secret", &t, &cur, &secret, &cur_json);
	if (r < 0)
		goto out;
	multi = cur.version >= KMSCRYPT_TOKEN_VERSION_MULTI;
	r = new_binding_handles(c, ks, v, "rotate-secret", &cur, NULL, NULL, hs, &nh);
	if (r < 0)
		goto out;
	r = volume_free_keyslot(v->device, &k2);
	if (r < 0) {
		vol_fail(v, r, "Cannot rotate-secret '%s' (UUID %s): no free keyslot; nothing was "
			 "changed.", v->device, v->hdr.uuid);
		goto out;
	}
	r = secret_random(KMSCRYPT_SECRET_BYTES, &fresh);
	if (r < 0)
		goto fail_nothing;
	/* every KMS of the binding wraps the new secret (or its new share) before the header
	 * changes: one that cannot leaves everything as it was */
	r = core_wrap_token(hs, nh, multi ? cur.threshold : 1, multi, v->hdr.uuid, k2, fresh,
			    &new_json, why, sizeof(why));
	if (r < 0) {
		vol_fail(v, r, "Cannot rotate-secret '%s' (UUID %s): %s; nothing was changed.",
			 v->device, v->hdr.uuid, why);
		goto out;
	}
	r = token_parse(new_json, &now, NULL, 0);
	if (r < 0)
		goto fail_nothing;
	old_b = core_binding_json(&cur);
	new_b = core_binding_json(&now);
	core_binding_desc(&now, new_desc, sizeof(new_desc));
	side_of(&cur, out->old_kms, sizeof(out->old_kms), out->old_key_version,
		sizeof(out->old_key_version));
	side_of(&now, out->new_kms, sizeof(out->new_kms), out->new_key_version,
		sizeof(out->new_key_version));
	out->old_keyslot = cur.keyslot;
	out->new_keyslot = k2;
	r = history_update(v, old_b, cur.created, new_b, false);
	if (r == 0)
		r = save_state_kms(c, v);
	if (r < 0) {
		vol_fail(v, r, "Cannot rotate-secret '%s' (UUID %s): cannot record the new binding "
			 "in '%s' (%s); nothing was changed.", v->device, v->hdr.uuid,
			 c->state_dir, strerror(-r));
		v->code = KMSCRYPT_EXIT_FAILURE;
		goto out;
	}
	/* The marker first: a killed run leaves a header that says which keyslot it added. */
	p_json = pending_json("rotate-secret", cur.keyslot, k2);
	if (!p_json) {
		r = -ENOMEM;
		goto fail_nothing;
	}
	r = volume_token_add(v->device, -1, p_json, &p_id);
	if (r < 0)
		goto fail_nothing;
	crash_point("rotate-secret:marked");
	r = volume_keyslot_add(v->device, k2, secret, fresh);
	if (r < 0)
		goto undo;
	crash_point("rotate-secret:keyslot-added");
	r = volume_token_add(v->device, k2, new_json, &new_id);
	if (r < 0)
		goto undo;
	crash_point("rotate-secret:token-added");
	r = prove_token(c, ks, v->device, v->hdr.uuid, new_json, NULL, NULL, why, sizeof(why));
	if (r < 0) {
		vol_fail(v, r, "Cannot rotate-secret '%s' (UUID %s): the new keyslot %d does not "
			 "open through its token: %s; it is removed again and the old keyslot stays.",
			 v->device, v->hdr.uuid, k2, why);
		goto undo_quiet;
	}
	/* Proven: the old keyslot's tokens, then the old keyslot, then the marker. */
	r = pending_resolve(c, ks, v->device, v->hdr.uuid, why, sizeof(why));
	if (r != 1) {
		vol_fail(v, r < 0 ? r : -EIO,
			 "Rotated the secret of '%s' (UUID %s) into keyslot %d, but the old keyslot "
			 "%d could not be removed (%s); run rotate-secret again.",
			 v->device, v->hdr.uuid, k2, cur.keyslot, r < 0 ? why : "unexpected state");
		v->code = KMSCRYPT_EXIT_VOLUME;
		goto out;
	}
	r = vol_refresh(c, v);
	if (r == 0)
		r = history_update(v, NULL, NULL, new_b, true);
	if (r == 0)
		r = save_state_kms(c, v);
	if (r < 0) {
		vol_fail(v, r, "Rotated the secret of '%s' (UUID %s), but its state record could "
			 "not be saved (%s).", v->device, v->hdr.uuid, strerror(-r));
		v->code = KMSCRYPT_EXIT_FAILURE;
		goto out;
	}
	v->result = "rotated";
	v->ms = now_ms() - t0;
	snprintf(v->msg, sizeof(v->msg),
		 "Rotated the secret of '%s' (UUID %s): new secret in keyslot %d through %s%s, "
		 "proven to open; keyslot %d destroyed (%.0f ms).",
		 v->device, v->hdr.uuid, k2, new_desc, multi && cur.threshold > 1 ? ", split afresh" : "",
		 cur.keyslot, v->ms);
	goto out;

undo:
	vol_fail(v, r, "Cannot rotate-secret '%s' (UUID %s): %s; the old keyslot stays.",
		 v->device, v->hdr.uuid, strerror(-r));
undo_quiet:
	if (new_id >= 0)
		(void)volume_token_remove(v->device, new_id, new_json);
	(void)volume_keyslot_destroy(v->device, k2);
	if (p_id >= 0)
		(void)volume_token_remove(v->device, p_id, p_json);
	goto out;
fail_nothing:
	vol_fail(v, r, "Cannot rotate-secret '%s' (UUID %s): %s; nothing was changed.", v->device,
		 v->hdr.uuid, strerror(-r));
out:
	if (v->r < 0)
		v->result = "error";
	v->ms = now_ms() - t0;
	audit(c, v, "rotate-secret", old_b, new_b);
	json_object_put(old_b);
	json_object_put(new_b);
	token_done(&cur);
	token_done(&now);
	toks_done(&t);
}

/* ---- bind with a marker ----------------------------------------------------------------------- */

int core_bind_marked(const struct core_ctx *c, const char *device, const struct secret *auth,
		     int keyslot, const struct secret *secret, const char *token_json)
{
	_cleanup_free_ char *p_json = NULL;
	int r, p_id = -1;

	(void)c;
	/* a key file that opens nothing changes nothing, not even by a marker */
	r = volume_test_secret(device, -1, auth);
	if (r < 0)
		return r;
	p_json = pending_json("bind", -1, keyslot);
	if (!p_json)
		return -ENOMEM;
	r = volume_token_add(device, -1, p_json, &p_id);
	if (r < 0)
		return r;
	crash_point("bind:marked");
	r = volume_bind(device, auth, keyslot, secret, token_json);
	if (r < 0) {
		(void)volume_token_remove(device, p_id, p_json);
		return r;
	}
	crash_point("bind:bound");
	r = volume_token_remove(device, p_id, p_json);
	return r == -ENOENT ? 0 : r;
}

int core_pending_cleanup(const struct core_ctx *c, const char *device, const char *uuid,
			 char *why, size_t n)
{
	struct kms_set ks = {};
	int r = pending_resolve(c, &ks, device, uuid, why, n);

	kms_set_done(&ks);
	return r;
}
