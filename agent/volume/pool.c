/* SPDX-License-Identifier: MIT */
/*
 * Parallel activation (volume.h, volume_pool_*): worker processes that each run volume_activate()
 * (unlock) or volume_resume() (restore).
 *
 * libcryptsetup 2.6 and libdevmapper keep process-global state (dm.h) and the volume-key keyring
 * switch is process-wide, so one process activates one volume at a time (volume_lock()).  The
 * kernel has no such limit: activations of different volumes run in different processes.  The
 * workers are forked before the caller starts any thread (no lock of another thread is copied
 * held into a child), each serves one activation at a time over two pipes, and exits on EOF.
 * A job carries the secret through the pipe (never argv, the environment or a file; struct
 * secret memory is MADV_DONTFORK, so a child could not inherit it anyway); the worker reads it
 * into its own locked secret, adds the keyring key to its own process keyring (fork() gives a
 * child none of its parent's), activates, purges the keys and wipes the secret.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/volume.h"

#define POOL_SECRET_MAX 4096
#define POOL_STRING_MAX 4096

struct pool_worker {
	pid_t pid;
	int job_fd;    /* parent -> worker */
	int result_fd; /* worker -> parent */
	bool busy;
	bool dead;
};

struct volume_pool {
	pthread_mutex_t lock;
	pthread_cond_t idle;
	unsigned n;
	struct pool_worker w[];
};

enum { POOL_ACTIVATE, POOL_RESUME };

/* The message of one job: this header, then device, name (no NULs) and the secret. */
struct pool_job {
	int32_t op; /* POOL_* */
	int32_t keyslot;
	uint32_t device_len, name_len, secret_len;
};

/* 0, -EPIPE at a clean EOF before the first byte, -EIO at a short read. */
static int read_full(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	size_t got = 0;

	while (got < n) {
		ssize_t k = read(fd, b + got, n - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return got == 0 ? -EPIPE : -EIO;
		got += (size_t)k;
	}
	return 0;
}

static int read_string(int fd, uint32_t len, char **ret)
{
	char *s;
	int r;

	if (len == 0 || len > POOL_STRING_MAX)
		return -EBADMSG;
	s = malloc(len + 1);
	if (!s)
		return -ENOMEM;
	r = read_full(fd, s, len);
	if (r < 0 || memchr(s, 0, len)) {
		free(s);
		return r < 0 ? r : -EBADMSG;
	}
	s[len] = 0;
	*ret = s;
	return 0;
}

/* One job in the worker: -EPIPE when the parent closed the pipe (no more jobs). */
static int worker_job(int job_fd, int result_fd)
{
	struct pool_job j;
	struct secret *s = NULL;
	char *device = NULL, *name = NULL;
	double t0;
	int r;

	r = read_full(job_fd, &j, sizeof(j));
	if (r < 0)
		return r;
	r = read_string(job_fd, j.device_len, &device);
	if (r == 0)
		r = read_string(job_fd, j.name_len, &name);
	if (r == 0 && (j.secret_len == 0 || j.secret_len > POOL_SECRET_MAX))
		r = -EBADMSG;
	if (r == 0)
		r = secret_new(j.secret_len, &s);
	if (r == 0) {
		r = read_full(job_fd, s->buf, j.secret_len);
		s->len = j.secret_len;
	}
	if (r == 0 && j.op != POOL_ACTIVATE && j.op != POOL_RESUME)
		r = -EBADMSG;
	if (r < 0) {
		/* the stream is out of step: answer this job and stop */
		secret_free(s);
		free(device);
		free(name);
		(void)fd_write_all(result_fd, &r, sizeof(r));
		return -EBADMSG;
	}
	t0 = now_ms();
	if (j.op == POOL_RESUME) {
		log_debug("Activation worker %d: resuming '%s' from %.3f ms.", (int)getpid(), name,
			  t0);
		r = volume_resume(name, j.keyslot, s);
		s = secret_free(s);
		log_debug("Activation worker %d: '%s' %s until %.3f ms.", (int)getpid(), name,
			  r < 0 ? "not resumed" : "resumed", now_ms());
	} else {
		log_debug("Activation worker %d: activating '%s' as '%s' from %.3f ms.",
			  (int)getpid(), device, name, t0);
		r = volume_activate(device, name, j.keyslot, s);
		s = secret_free(s);
		log_debug("Activation worker %d: '%s' as '%s' %s until %.3f ms.", (int)getpid(),
			  device, name, r < 0 ? "failed" : "active", now_ms());
	}
	free(device);
	free(name);
	return fd_write_all(result_fd, &r, sizeof(r));
}

static _Noreturn void worker_main(int job_fd, int result_fd)
{
	/* SIGINT/SIGTERM of the terminal's process group reach us too; let the parent decide
	 * (it closes the job pipe, and we finish the activation in hand and exit). */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	while (worker_job(job_fd, result_fd) == 0)
		;
	_exit(0);
}

unsigned volume_pool_default_size(void)
{
	const char *e = secure_getenv("KMSCRYPT_TEST_WORKERS");
	cpu_set_t set;

	if (e && *e) {
		char *end;
		unsigned long v = strtoul(e, &end, 10);
		if (!*end && v >= 1 && v <= 64)
			return (unsigned)v;
	}
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return (unsigned)CPU_COUNT(&set);
	return 1;
}

void volume_pool_stop(struct volume_pool *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->n; i++)
		if (p->w[i].job_fd >= 0)
			close(p->w[i].job_fd); /* EOF: the worker exits */
	for (unsigned i = 0; i < p->n; i++) {
		if (p->w[i].pid > 0)
			while (waitpid(p->w[i].pid, NULL, 0) < 0 && errno == EINTR)
				;
		if (p->w[i].result_fd >= 0)
			close(p->w[i].result_fd);
	}
	pthread_cond_destroy(&p->idle);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

int volume_pool_start(unsigned workers, struct volume_pool **ret)
{
	struct volume_pool *p;
	int r = 0;

	if (workers == 0)
		return -EINVAL;
	p = calloc(1, sizeof(*p) + workers * sizeof(p->w[0]));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->idle, NULL);
	for (unsigned i = 0; i < workers; i++)
		p->w[i] = (struct pool_worker){.job_fd = -1, .result_fd = -1};
	/* stdio buffers would be written once more by each child */
	fflush(stdout);
	fflush(stderr);
	for (unsigned i = 0; i < workers; i++) {
		int jp[2], rp[2];
		pid_t pid;

		if (pipe2(jp, O_CLOEXEC) < 0) {
			r = -errno;
			break;
		}
		if (pipe2(rp, O_CLOEXEC) < 0) {
			r = -errno;
			close(jp[0]);
			close(jp[1]);
			break;
		}
		pid = fork();
		if (pid < 0) {
			r = -errno;
			close(jp[0]);
			close(jp[1]);
			close(rp[0]);
			close(rp[1]);
			break;
		}
		if (pid == 0) {
			/* the other workers' pipe ends: their EOF must not wait for us */
			for (unsigned k = 0; k < i; k++) {
				close(p->w[k].job_fd);
				close(p->w[k].result_fd);
			}
			close(jp[1]);
			close(rp[0]);
			/* A parent killed meanwhile closes the job pipe: the worker finishes the
			 * activation in hand (as the parent would have) and exits. */
			worker_main(jp[0], rp[1]);
		}
		close(jp[0]);
		close(rp[1]);
		p->w[i] = (struct pool_worker){.pid = pid, .job_fd = jp[1], .result_fd = rp[0]};
		p->n = i + 1;
	}
	if (p->n == 0) {
		volume_pool_stop(p);
		return r < 0 ? r : -ECHILD;
	}
	if (r < 0)
		log_debug("Started %u of %u activation workers: %s.", p->n, workers, strerror(-r));
	*ret = p;
	return 0;
}

/* Send one job to @w and wait for its answer (the worker is ours while busy). */
static int pool_run(struct pool_worker *w, int op, const char *device, const char *name,
		    int keyslot, const struct secret *secret)
{
	struct pool_job j = {
	    .op = op,
	    .keyslot = keyslot,
	    .device_len = (uint32_t)strlen(device),
	    .name_len = (uint32_t)strlen(name),
	    .secret_len = (uint32_t)secret->len,
	};
	int r, answer;

	if (j.device_len == 0 || j.device_len > POOL_STRING_MAX || j.name_len == 0 ||
	    j.name_len > POOL_STRING_MAX || j.secret_len == 0 || secret->len > POOL_SECRET_MAX)
		return -EINVAL;
	r = fd_write_all(w->job_fd, &j, sizeof(j));
	if (r == 0)
		r = fd_write_all(w->job_fd, device, j.device_len);
	if (r == 0)
		r = fd_write_all(w->job_fd, name, j.name_len);
	if (r == 0)
		r = fd_write_all(w->job_fd, secret->buf, secret->len);
	if (r < 0)
		return -ECHILD;
	r = read_full(w->result_fd, &answer, sizeof(answer));
	if (r < 0)
		return -ECHILD;
	return answer;
}

/* volume_activate() or volume_resume() in this process. */
static int pool_here(int op, const char *device, const char *name, int keyslot,
		     const struct secret *secret)
{
	if (op == POOL_RESUME)
		return volume_resume(name, keyslot, secret);
	return volume_activate(device, name, keyslot, secret);
}

/* Run one job in an idle worker: its result, or -ECHILD when the worker died. */
static int pool_submit(struct volume_pool *p, int op, const char *device, const char *name,
		       int keyslot, const struct secret *secret)
{
	struct pool_worker *w = NULL;
	sigset_t pipe_set, old;
	int r;

	if (!p)
		return pool_here(op, device, name, keyslot, secret);
	pthread_mutex_lock(&p->lock);
	for (;;) {
		bool alive = false;
		for (unsigned i = 0; i < p->n && !w; i++) {
			alive = alive || !p->w[i].dead;
			if (!p->w[i].dead && !p->w[i].busy)
				w = &p->w[i];
		}
		if (w || !alive)
			break;
		pthread_cond_wait(&p->idle, &p->lock);
	}
	if (w)
		w->busy = true;
	pthread_mutex_unlock(&p->lock);
	if (!w) /* every worker died: this process does it, one at a time */
		return pool_here(op, device, name, keyslot, secret);

	/* A dead worker's pipe must fail the write, not kill us. */
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	r = pool_run(w, op, device, name, keyslot, secret);
	if (r == -ECHILD) {
		struct timespec zero = {0, 0};
		siginfo_t si;
		/* drop a SIGPIPE raised by this thread's write before unblocking */
		while (sigtimedwait(&pipe_set, &si, &zero) > 0)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	pthread_mutex_lock(&p->lock);
	w->busy = false;
	if (r == -ECHILD) {
		log_debug("Activation worker %d died while %s '%s'.", (int)w->pid,
			  op == POOL_RESUME ? "resuming" : "activating",
			  op == POOL_RESUME ? name : device);
		w->dead = true;
	}
	pthread_cond_broadcast(&p->idle);
	pthread_mutex_unlock(&p->lock);
	return r;
}

int volume_pool_activate(struct volume_pool *p, const char *device, const char *name, int keyslot,
			 const struct secret *secret)
{
	int r = pool_submit(p, POOL_ACTIVATE, device, name, keyslot, secret);

	return r == -ECHILD ? -EIO : r;
}

int volume_pool_resume(struct volume_pool *p, const char *name, int keyslot,
		       const struct secret *secret)
{
	/* the name goes in both strings of the job (the device is not needed) */
	return pool_submit(p, POOL_RESUME, name, name, keyslot, secret);
}
