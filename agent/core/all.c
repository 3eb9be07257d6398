/* SPDX-License-Identifier: MIT */
/* --all: lock, revoke and restore of many volumes at once (core/all.h). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/all.h"
#include "core/flows.h"
#include "util/clock.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "volume/volume.h"

/* What a worker hands back for one volume (in memory shared with the parent). */
struct all_slot {
	int state; /* SLOT_* */
	pid_t pid;
	int r, code;
	const char *result; /* a string literal: the same address in every process of this binary */
	double ms;
	struct volume_wipe_report wipe;
	bool mapped;
	struct volume_mapping map;
	char mapping[128];
	char msg[768];
};

enum { SLOT_FREE, SLOT_CLAIMED, SLOT_DONE };

struct all_run {
	const char *what; /* "lock", "revoke", "restore" */
	const struct core_ctx *c;
	struct vol **vols;
	size_t n;
	void (*fn)(const struct all_run *run, struct vol *v);
	const char *reason;   /* revoke */
	struct kms_set *ks;   /* restore */
	struct volume_pool *pool; /* restore: resume workers, or NULL */
	bool meet;            /* test hook: workers wait for each other (see meet()) */
	/* shared between the workers (processes: MAP_SHARED memory; threads: plain memory) */
	unsigned *next, *active, *max_active;
	struct all_slot *slots; /* processes only */
};

_Static_assert(sizeof(((struct all_slot *)0)->mapping) == sizeof(((struct vol *)0)->mapping),
	       "slot and volume mapping names differ");
_Static_assert(sizeof(((struct all_slot *)0)->msg) == sizeof(((struct vol *)0)->msg),
	       "slot and volume messages differ");

static void run_lock(const struct all_run *run, struct vol *v)
{
	core_lock_volume(run->c, v);
}

static void run_revoke(const struct all_run *run, struct vol *v)
{
	core_revoke(run->c, v, run->reason, false);
}

static void run_restore(const struct all_run *run, struct vol *v)
{
	core_restore_in(run->c, run->ks, v, run->pool);
}

/* KMSCRYPT_TEST_ALL_MEET=1 (tests only): a worker that has taken its first volume waits up to
 * 10 s until a second one is busy too, so a test sees the overlap without timing thresholds. */
static void meet(const struct all_run *run)
{
	double end = now_ms() + 10000;

	while (__atomic_load_n(run->max_active, __ATOMIC_SEQ_CST) < 2 && now_ms() < end)
		usleep(1000);
}

static void busy(const struct all_run *run, int d)
{
	unsigned a = __atomic_add_fetch(run->active, (unsigned)d, __ATOMIC_SEQ_CST);
	unsigned m = __atomic_load_n(run->max_active, __ATOMIC_SEQ_CST);

	while (d > 0 && a > m &&
	       !__atomic_compare_exchange_n(run->max_active, &m, a, false, __ATOMIC_SEQ_CST,
					    __ATOMIC_SEQ_CST))
		;
}

/* Take volumes until none is left; with @slots, hand each outcome back through its slot. */
static void work(const struct all_run *run)
{
	bool first = true;

	for (;;) {
		size_t i = __atomic_fetch_add(run->next, 1, __ATOMIC_SEQ_CST);
		struct vol *v;

		if (i >= run->n)
			return;
		v = run->vols[i];
		if (run->slots) {
			run->slots[i].pid = getpid();
			__atomic_store_n(&run->slots[i].state, SLOT_CLAIMED, __ATOMIC_SEQ_CST);
		}
		busy(run, 1);
		log_debug("%s --all: worker %d took '%s' (%zu of %zu).", run->what, (int)getpid(),
			  v->mapping, i + 1, run->n);
		if (first && run->meet)
			meet(run);
		first = false;
		run->fn(run, v);
		busy(run, -1);
		if (run->slots) {
			struct all_slot *s = &run->slots[i];
			s->r = v->r;
			s->code = v->code;
			s->result = v->result;
			s->ms = v->ms;
			s->wipe = v->wipe;
			s->mapped = v->mapped;
			s->map = v->map;
			memcpy(s->mapping, v->mapping, sizeof(s->mapping));
			memcpy(s->msg, v->msg, sizeof(s->msg));
			__atomic_store_n(&s->state, SLOT_DONE, __ATOMIC_SEQ_CST);
		}
	}
}

static void *work_thread(void *p)
{
	work(p);
	return NULL;
}

static unsigned workers_for(size_t n)
{
	return (unsigned)MIN(n, (size_t)CORE_ALL_PARALLEL);
}

static void debug_summary(const struct all_run *run, unsigned k, const char *kind)
{
	log_debug("%s --all: %zu volumes in %u %s, at most %u at once.", run->what, run->n, k, kind,
		  *run->max_active);
}

/* Worker processes; whatever no worker finished runs here, one after the other. */
static void run_processes(struct all_run *run)
{
	struct {
		unsigned next, active, max_active;
		struct all_slot slot[]; /* aligned for struct all_slot */
	} *ctr;
	size_t size = sizeof(*ctr) + run->n * sizeof(struct all_slot);
	pid_t pids[CORE_ALL_PARALLEL];
	unsigned k = workers_for(run->n), started = 0;
	void *mem;

	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		log_debug("%s --all: no shared memory (%m), one volume after the other.", run->what);
		for (size_t i = 0; i < run->n; i++)
			run->fn(run, run->vols[i]);
		return;
	}
	ctr = mem;
	run->next = &ctr->next;
	run->active = &ctr->active;
	run->max_active = &ctr->max_active;
	run->slots = ctr->slot;
	(void)fflush(NULL); /* nothing buffered is written twice */
	for (unsigned w = 0; w < k; w++) {
		pid_t pid = fork();
		if (pid == 0) {
			work(run);
			_exit(0);
		}
		if (pid < 0) {
			log_debug("%s --all: fork failed (%m); %u worker(s).", run->what, started);
			break;
		}
		pids[started++] = pid;
	}
	for (unsigned w = 0; w < started; w++) {
		int status;
		while (waitpid(pids[w], &status, 0) < 0 && errno == EINTR)
			;
	}
	debug_summary(run, started, "worker processes");
	for (size_t i = 0; i < run->n; i++) {
		struct all_slot *s = &run->slots[i];
		struct vol *v = run->vols[i];

		if (s->state == SLOT_DONE) {
			v->r = s->r;
			v->code = s->code;
			v->result = s->result;
			v->ms = s->ms;
			v->wipe = s->wipe;
			v->mapped = s->mapped;
			v->map = s->map;
			memcpy(v->mapping, s->mapping, sizeof(v->mapping));
			memcpy(v->msg, s->msg, sizeof(v->msg));
		} else if (s->state == SLOT_CLAIMED) {
			vol_fail(v, -EIO,
				 "Cannot %s '%s' (UUID %s): its worker process (PID %d) died; see "
				 "'kmscrypt status %s' and run 'kmscrypt %s %s' again.",
				 run->what, v->mapping, v->hdr.uuid, (int)s->pid, v->mapping, run->what,
				 v->mapping);
			v->result = "error";
		} else {
			run->fn(run, v); /* no worker got to it */
		}
	}
	explicit_bzero(mem, size); /* messages only, but no need to keep them */
	munmap(mem, size);
}

/* Threads sharing this process's KMS connections; the volume layer serialises its own calls. */
static void run_threads(struct all_run *run)
{
	unsigned next = 0, active = 0, max_active = 0;
	pthread_t tids[CORE_ALL_PARALLEL];
	unsigned k = workers_for(run->n), started = 0;

	run->next = &next;
	run->active = &active;
	run->max_active = &max_active;
	run->slots = NULL;
	for (unsigned w = 0; w < k; w++) {
		if (pthread_create(&tids[started], NULL, work_thread, run) != 0)
			break;
		started++;
	}
	if (started == 0)
		work(run); /* no thread: this one does it all */
	for (unsigned w = 0; w < started; w++)
		pthread_join(tids[w], NULL);
	debug_summary(run, started, "threads");
}

static void run_all(struct all_run *run, bool processes)
{
	const char *e = getenv("KMSCRYPT_TEST_ALL_MEET");

	run->meet = e && !strcmp(e, "1");
	if (run->n == 1) {
		run->fn(run, run->vols[0]); /* one volume: as the one-volume command does it */
		return;
	}
	if (run->n == 0)
		return;
	if (processes)
		run_processes(run);
	else
		run_threads(run);
}

void core_lock_all(const struct core_ctx *c, struct vol **vols, size_t n)
{
	struct all_run run = {.what = "lock", .c = c, .vols = vols, .n = n, .fn = run_lock};

	run_all(&run, true);
}

void core_revoke_all(const struct core_ctx *c, struct vol **vols, size_t n, const char *reason)
{
	struct all_run run = {
	    .what = "revoke", .c = c, .vols = vols, .n = n, .fn = run_revoke, .reason = reason};

	run_all(&run, true);
}

void core_restore_all(const struct core_ctx *c, struct kms_set *ks, struct vol **vols, size_t n)
{
	struct all_run run = {
	    .what = "restore", .c = c, .vols = vols, .n = n, .fn = run_restore, .ks = ks};
	size_t todo = 0;
	unsigned workers;

	/* The resumes (keyslot open, key set, resume, table check) in worker processes, one per
	 * CPU, forked before any thread starts (as core_unlock()); the unwraps in threads. */
	for (size_t i = 0; i < n; i++)
		todo += vol_revoked(vols[i]) || !vols[i]->mapped || vols[i]->map.suspended;
	workers = (unsigned)MIN((size_t)volume_pool_default_size(), todo);
	if (n > 1 && workers >= 2 && volume_pool_start(workers, &run.pool) < 0) {
		log_debug("restore --all: cannot start resume workers; one volume at a time.");
		run.pool = NULL;
	}
	/* Open each KMS configuration once, before any thread starts (as core_unlock()). */
	for (size_t i = 0; n > 1 && i < n; i++) {
		int rr;
		for (size_t w = 0; w < vols[i]->tok.n_wraps; w++)
			(void)kms_set_get(c, ks, vols[i]->tok.wraps[w].kms, &rr);
		core_open_token_kms(c, ks, vols[i]);
	}
	run_all(&run, false);
	volume_pool_stop(run.pool);
}
