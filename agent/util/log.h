/* SPDX-License-Identifier: MIT */
/*
 * Logging to stderr, understood by journald (sd-daemon(3) "<N>" prefixes when stderr is the journal
 * stream).  Never log key material, tokens, request or response bodies.  User strings go in 'quotes'.
 * The log level and target (and, for --json, the first error logged) are the only globals in
 * kmscrypt.  Each call writes exactly one line
 * (one journal record): the formatted message is escaped (util/escape.h), so arguments may hold
 * untrusted text (header fields, KMS messages, file names).
 */
#pragma once
#include <syslog.h>

extern int log_max_level;

void log_setup(void); /* reads $JOURNAL_STREAM and $KMSCRYPT_LOG_LEVEL (debug, info, ...) */
void log_set_quiet(int quiet);
/* Logs at @level; sets errno to |err| first so that %m works.  Return: -|err| (or -EIO when 0). */
int log_errno(int level, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The first LOG_ERR (or worse) message of the process, escaped as it was written (also when the
 * level kept it off stderr); NULL when none.  --json puts it in its error object (cli/). */
const char *log_first_error(void);
/* The last such message and how many were logged: a front end that logs several errors in one
 * run (check DEVICE...) tells each item's own message apart. */
const char *log_last_error(void);
unsigned log_error_count(void);

#define log_error_errno(e, ...) log_errno(LOG_ERR, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_errno(LOG_WARNING, (e), __VA_ARGS__)
#define log_error(...) ((void)log_errno(LOG_ERR, 0, __VA_ARGS__))
#define log_warning(...) ((void)log_errno(LOG_WARNING, 0, __VA_ARGS__))
#define log_notice(...) ((void)log_errno(LOG_NOTICE, 0, __VA_ARGS__))
#define log_info(...) ((void)log_errno(LOG_INFO, 0, __VA_ARGS__))
#define log_debug(...) ((void)log_errno(LOG_DEBUG, 0, __VA_ARGS__))
