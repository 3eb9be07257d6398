/* SPDX-License-Identifier: MIT */
#pragma once
#include <stddef.h>
#include <sys/types.h>

struct secret;

/* Read a whole regular file (at most @max bytes, else -EFBIG) into a NUL-terminated heap string. */
int read_file_text(const char *path, size_t max, char **ret, size_t *ret_len);
/* Read a secret from a file ("-" is stdin), at most @max bytes, into locked memory.  When @strip is
 * set, one trailing "\n" or "\r\n" is removed (passphrase files written by echo). */
int read_file_secret(const char *path, size_t max, int strip, struct secret **ret);
/* Atomically replace @path: write to a temporary file in the same directory with @mode, fsync it,
 * rename it over @path, fsync the directory.  @excl: fail with -EEXIST if @path exists. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, int excl);
/* mkdir -p with @mode for directories it creates. */
int mkdir_p(const char *path, mode_t mode);
/* Append one line (a '\n' is added) with O_APPEND and fsync; creates the file with @mode. */
int append_line(const char *path, const char *line, mode_t mode);
