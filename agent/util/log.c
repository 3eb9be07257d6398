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

int log_max_level = LOG_INFO;
static int log_to_journal;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

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
	va_list ap;

	err = err < 0 ? -err : err;
	if (level <= log_max_level) {
		pthread_mutex_lock(&log_lock);
		if (log_to_journal)
			fprintf(stderr, "<%d>", level);
		errno = err;
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
		pthread_mutex_unlock(&log_lock);
	}
	return err ? -err : -EIO;
}
