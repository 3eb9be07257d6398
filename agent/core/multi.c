/* SPDX-License-Identifier: MIT */
/* Unwrapping a token's secret through every KMS of its binding (core/core.h, core_token_unwrap()):
 * one wrap for version 1, any-of or k of n for version 2 (include/kmscrypt/token.h). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/shamir.h"
#include "codec/token.h"
#include "core/core.h"
#include "kmscrypt/token.h"
#include "util/cleanup.h"
#include "util/secret.h"

/* A KMS that may answer later: the network, a 5xx, throttling. */
bool core_kms_transient(int r)
{
	return r == -EAGAIN || r == -ETIMEDOUT || r == -ECONNREFUSED || r == -EHOSTUNREACH ||
	       r == -ENETUNREACH;
}

struct unwrap_group;

struct wrap_job {
	struct unwrap_group *g;
	struct kms_handle *h;
	const char *uuid;
	struct kmscrypt_token view; /* the wrap as a one-wrap token (copied strings below) */
	struct secret *secret;
	struct core_wrap_answer ans;
	bool started, finished;     /* finished: under g->mu */
};

/* One unwrap of a token: its threads, their answers, and the token's wrap strings they read
 * (copied, so a caller that returned early may free its token). */
struct unwrap_group {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t n;
	unsigned ok, finished;
	struct wrap_job *jobs;
	pthread_t *tids;
	struct kmscrypt_token t;    /* wraps copied from the caller's token */
	char uuid[64];
	/* detached (core_token_unwrap_detached()): the last request to finish calls release and
	 * frees the group; under mu */
	bool detached;
	void (*release)(void *);
	void *release_arg;
	struct unwrap_group *next;  /* on the list of groups with threads still running */
};

/* Groups whose caller returned before every KMS answered: joined by core_unwrap_reap(). */
static pthread_mutex_t pending_mu = PTHREAD_MUTEX_INITIALIZER;
static struct unwrap_group *pending;

static void group_free(struct unwrap_group *g)
{
	for (size_t i = 0; i < g->n; i++) {
		if (g->tids[i])
			pthread_join(g->tids[i], NULL);
		secret_free(g->jobs[i].secret);
	}
	for (size_t i = 0; i < g->t.n_wraps; i++) {
		free(g->t.wraps[i].kms);
		free(g->t.wraps[i].provider);
		free(g->t.wraps[i].key_id);
		free(g->t.wraps[i].key_version);
		free(g->t.wraps[i].alg);
		free(g->t.wraps[i].blob);
	}
	free(g->t.wraps);
	free(g->jobs);
	free(g->tids);
	pthread_mutex_destroy(&g->mu);
	pthread_cond_destroy(&g->cv);
	free(g);
}

void core_unwrap_reap(void)
{
	struct unwrap_group *l;

	pthread_mutex_lock(&pending_mu);
	l = pending;
	pending = NULL;
	pthread_mutex_unlock(&pending_mu);
	while (l) {
		struct unwrap_group *next = l->next;
		group_free(l);
		l = next;
	}
}

static void unwrap_one(struct wrap_job *j)
{
	struct unwrap_group *g = j->g;
	struct kms_error err = {};
	struct secret *secret = NULL;
	bool last;
	int r;

	r = kms_handle_unwrap(j->h, j->uuid, &j->view, &secret, &err);
	if (r == 0 && secret->len != KMSCRYPT_SECRET_BYTES) {
		secret = secret_free(secret);
		r = kms_error_set(&err, -EBADMSG, "WrongLength",
				  "the unwrapped secret is not %d bytes", KMSCRYPT_SECRET_BYTES);
	}
	pthread_mutex_lock(&j->g->mu);
	j->secret = secret;
	j->ans.r = r;
	j->ans.err = err;
	j->finished = true;
	j->g->finished++;
	if (r == 0)
		j->g->ok++;
	last = g->detached && g->finished == g->n;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
	if (last) {
		/* nobody waits for this group any more: its handles and memory go with the last
		 * answer (the threads are detached, group_free() joins none) */
		void (*release)(void *) = g->release;
		void *arg = g->release_arg;

		group_free(g);
		release(arg);
	}
}

static void *unwrap_thread(void *p)
{
	unwrap_one(p);
	return NULL;
}

/* The result of @n answers of a k-of-n binding that did not reach k: denied when fewer than k
 * can ever answer (the others refused for good), else the first transient failure. */
static int threshold_class(const struct core_wrap_answer *a, size_t n, unsigned k)
{
	unsigned ok = 0, maybe = 0;
	int transient = 0, denied = 0, other = 0;

	for (size_t i = 0; i < n; i++) {
		if (a[i].r == 0)
			ok++;
		else if (a[i].r > 0 || core_kms_transient(a[i].r)) {
			maybe++; /* no answer yet counts as one that may come */
			if (!transient && a[i].r < 0)
				transient = a[i].r;
		} else if (a[i].r == -EACCES)
			denied = -EACCES;
		else if (!other)
			other = a[i].r;
	}
	if (ok >= k)
		return 0;
	if (ok + maybe >= k)
		return transient ? transient : -ETIMEDOUT;
	return denied ? denied : other ? other : -EACCES;
}

static int dup_wrap(struct kmscrypt_wrap *d, const struct kmscrypt_wrap *w)
{
	*d = (struct kmscrypt_wrap){.share = w->share, .blob_len = w->blob_len};
	d->kms = strdup(w->kms);
	d->provider = strdup(w->provider);
	d->key_id = strdup(w->key_id);
	d->key_version = strdup(w->key_version ? w->key_version : "");
	d->alg = strdup(w->alg);
	d->blob = malloc(w->blob_len ? w->blob_len : 1);
	if (!d->kms || !d->provider || !d->key_id || !d->key_version || !d->alg || !d->blob)
		return -ENOMEM;
	memcpy(d->blob, w->blob, w->blob_len);
	return 0;
}

static int token_unwrap(struct kms_handle *const *hs, const int *hr, const char *uuid,
			const struct kmscrypt_token *t, bool wait_all, struct secret **ret,
			struct core_wrap_answer *ans, void (*release)(void *), void *release_arg)
{
	size_t n = t->n_wraps;
	struct unwrap_group *g;
	bool all_done;
	int r = 0;

	if (n < 1 || n > KMSCRYPT_TOKEN_MAX_WRAPS || t->threshold < 1 || t->threshold > n) {
		r = -EBADMSG;
		goto early;
	}
	g = calloc(1, sizeof(*g));
	if (!g) {
		r = -ENOMEM;
		goto early;
	}
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->n = n;
	g->jobs = calloc(n, sizeof(*g->jobs));
	g->tids = calloc(n, sizeof(*g->tids));
	g->t.wraps = calloc(n, sizeof(*g->t.wraps));
	g->t.n_wraps = n;
	if (!g->jobs || !g->tids || !g->t.wraps) {
		g->n = 0;
		group_free(g);
		r = -ENOMEM;
		goto early;
	}
	for (size_t i = 0; i < n; i++) {
		const struct kmscrypt_wrap *w = &g->t.wraps[i];
		if (dup_wrap(&g->t.wraps[i], &t->wraps[i]) < 0) {
			group_free(g);
			r = -ENOMEM;
			goto early;
		}
		g->jobs[i] = (struct wrap_job){
			.g = g,
			.h = hs[i],
			.uuid = NULL,
			.view = {.version = t->version,
				 .keyslot = t->keyslot,
				 .kms = w->kms,
				 .provider = w->provider,
				 .key_id = w->key_id,
				 .key_version = w->key_version,
				 .alg = w->alg,
				 .blob = w->blob,
				 .blob_len = w->blob_len},
			.ans = {.r = 1},
		};
	}
	snprintf(g->uuid, sizeof(g->uuid), "%s", uuid); /* outlives an early return too */
	/* Every KMS is asked at once (each provider context is thread-safe); a single wrap is
	 * asked on this thread. */
	for (size_t i = 0; i < n; i++) {
		struct wrap_job *j = &g->jobs[i];
		j->uuid = g->uuid;
		if (!hs[i]) {
			j->ans.r = kms_error_set(&j->ans.err, hr[i] < 0 ? hr[i] : -ENOENT,
						 "ConfigurationUnusable",
						 "configuration '%s' cannot be used", t->wraps[i].kms);
			j->finished = true;
			g->finished++;
			continue;
		}
		j->started = true;
		if (n == 1 || pthread_create(&g->tids[i], NULL, unwrap_thread, j) != 0) {
			g->tids[i] = 0;
			unwrap_one(j);
		}
	}
	/* Wait until k answered (or, for check, every KMS), or every KMS has finished. */
	pthread_mutex_lock(&g->mu);
	while (g->finished < n && (wait_all || g->ok < t->threshold))
		pthread_cond_wait(&g->cv, &g->mu);
	for (size_t i = 0; i < n; i++)
		ans[i] = g->jobs[i].finished ? g->jobs[i].ans : (struct core_wrap_answer){.r = 1};
	all_done = g->finished == n;
	pthread_mutex_unlock(&g->mu);

	if (g->ok < t->threshold) {
		r = threshold_class(ans, n, t->threshold);
		goto out;
	}
	if (t->threshold == 1) {
		for (size_t i = 0; i < n; i++)
			if (ans[i].r == 0) {
				r = secret_from(g->jobs[i].secret->buf, g->jobs[i].secret->len, ret);
				break;
			}
	} else {
		_cleanup_secret_ struct secret *s = NULL;
		const uint8_t *ys[KMSCRYPT_TOKEN_MAX_WRAPS];
		uint8_t xs[KMSCRYPT_TOKEN_MAX_WRAPS];
		unsigned k = 0;

		/* only finished jobs (ans[i].r == 0), whose threads no longer write them */
		for (size_t i = 0; i < n && k < t->threshold; i++)
			if (ans[i].r == 0) {
				xs[k] = (uint8_t)t->wraps[i].share;
				ys[k++] = g->jobs[i].secret->buf;
			}
		r = secret_new(KMSCRYPT_SECRET_BYTES, &s);
		if (r == 0)
			r = shamir_combine(xs, ys, k, KMSCRYPT_SECRET_BYTES, s->buf);
		if (r == 0) {
			s->len = KMSCRYPT_SECRET_BYTES;
			*ret = TAKE_PTR(s);
		}
	}
out:
	if (!all_done && release) {
		/* The caller goes on and will not wait: the requests still running are detached,
		 * and the last to finish frees the group and calls release. */
		pthread_mutex_lock(&g->mu);
		all_done = g->finished == n;
		if (!all_done) {
			for (size_t i = 0; i < n; i++)
				if (g->tids[i]) {
					pthread_detach(g->tids[i]);
					g->tids[i] = 0;
				}
			g->detached = true;
			g->release = release;
			g->release_arg = release_arg;
		}
		pthread_mutex_unlock(&g->mu);
		if (all_done) {
			group_free(g);
			release(release_arg);
		}
	} else if (all_done) {
		group_free(g);
		if (release)
			release(release_arg);
	} else {
		/* Enough answered: the caller goes on, the others finish in the background and
		 * are joined by core_unwrap_reap() before their handles are closed. */
		pthread_mutex_lock(&pending_mu);
		g->next = pending;
		pending = g;
		pthread_mutex_unlock(&pending_mu);
	}
	return r;
early:
	if (release) /* no request started: nothing runs on with the handles */
		release(release_arg);
	return r;
}

int core_token_unwrap(struct kms_handle *const *hs, const int *hr, const char *uuid,
		      const struct kmscrypt_token *t, bool wait_all, struct secret **ret,
		      struct core_wrap_answer *ans)
{
	return token_unwrap(hs, hr, uuid, t, wait_all, ret, ans, NULL, NULL);
}

int core_token_unwrap_detached(struct kms_handle *const *hs, const int *hr, const char *uuid,
			       const struct kmscrypt_token *t, struct secret **ret,
			       struct core_wrap_answer *ans, void (*release)(void *), void *arg)
{
	return token_unwrap(hs, hr, uuid, t, false, ret, ans, release, arg);
}

void core_answers_describe(const struct kmscrypt_token *t, const struct core_wrap_answer *a,
			   char *buf, size_t n)
{
	size_t len = 0;

	buf[0] = 0;
	for (size_t i = 0; i < t->n_wraps && len < n; i++) {
		const char *what;
		char desc[256] = "";

		if (a[i].r == 0)
			what = "answered";
		else if (a[i].r == 1)
			what = "had not answered when enough had";
		else
			what = core_kms_failure(a[i].r, &a[i].err);
		if (a[i].r < 0 && (a[i].err.code[0] || a[i].err.message[0]))
			kms_error_describe(&a[i].err, desc, sizeof(desc));
		len += (size_t)snprintf(buf + len, n - len, "%sKMS '%s' %s%s%s%s", i ? "; " : "",
					t->wraps[i].kms, what, desc[0] ? " (" : "", desc,
					desc[0] ? ")" : "");
	}
}

unsigned core_answers_ok(const struct kmscrypt_token *t, const struct core_wrap_answer *a)
{
	unsigned ok = 0;

	for (size_t i = 0; i < t->n_wraps; i++)
		if (a[i].r == 0)
			ok++;
	return ok;
}
