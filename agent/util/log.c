/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <pthread.h>
#include <unistd.h>

#include "log.h"
#include "util/cleanup.h"
#include "util/escape.h"

int log_max_level = LOG_INFO;
static int log_to_journal;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char *log_first_err, *log_last_err; /* for --json's error objects (log.h) */
static unsigned log_n_err;

const char *log_first_error(void)
{
	return log_first_err;
}

const char *log_last_error(void)
{
	return log_last_err;
}

unsigned log_error_count(void)
{
	return log_n_err;
}

/* Keep a copy of an error line (called with log_lock held). */
static void log_remember(const char *line)
{
	char *copy = strdup(line);

	if (!copy)
		return;
	log_n_err++;
	if (!log_first_err)
		log_first_err = strdup(line);
	free(log_last_err);
	log_last_err = copy;
}

void log_setup(void)
{
	const char *js = secure_getenv("JOURNAL_STREAM");
	const char *lvl = secure_getenv("KMSCRYPT_LOG_LEVEL");
	struct stat st;

	/* systemd.exec(5): JOURNAL_STREAM is "dev:ino" of the stream stderr is connected to. */
	if (js && fstat(STDERR_FILENO, &st) == 0) {
		unsigned long long dev, ino;
		if (sscanf(js, "%llu:%llu", &dev, &ino) == 2 && dev == (unsigned long long)st.st_dev &&
		    ino == (unsigned long long)st.st_ino)
			log_to_journal = 1;
	}
	if (lvl) {
		static const char *const names[] = {"emerg", "alert",  "crit", "err",
						    "warning", "notice", "info", "debug"};
		for (int i = 0; i < 8; i++)
			if (strcmp(lvl, names[i]) == 0)
				log_max_level = i;
	}
}

void log_set_quiet(int quiet)
{
	if (quiet)
		log_max_level = LOG_ERR;
}

int log_errno(int level, int err, const char *fmt, ...)
{
	_cleanup_free_ char *msg = NULL, *line = NULL;
	char small[512], small_esc[512];
	va_list ap, ap2;

	err = err < 0 ? -err : err;
	if (level <= log_max_level || level <= LOG_ERR) {
		errno = err; /* makes %m work */
		va_start(ap, fmt);
		va_copy(ap2, ap);
		if (vasprintf(&msg, fmt, ap) < 0)
			msg = NULL;
		va_end(ap);
		/* One call, one line, one journal record, whatever the arguments hold: the whole
		 * message is escaped (util/escape.h), so a newline in a token field or a file name
		 * cannot start a forged "<0>" record and an ESC cannot reach the terminal. */
		line = msg ? cescape(msg) : NULL;
		if (!line) {
			errno = err;
			vsnprintf(small, sizeof(small), fmt, ap2);
			cescape_buf(small, small_esc, sizeof(small_esc));
		}
		va_end(ap2);
		pthread_mutex_lock(&log_lock);
		if (level <= LOG_ERR)
			log_remember(line ? line : small_esc);
		if (level > log_max_level)
			; /* an error below the chosen level: remembered only */
		else if (log_to_journal)
			fprintf(stderr, "<%d>%s\n", level, line ? line : small_esc);
		else
			fprintf(stderr, "%s\n", line ? line : small_esc);
		pthread_mutex_unlock(&log_lock);
	}
	return err ? -err : -EIO;
}
