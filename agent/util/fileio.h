/* SPDX-License-Identifier: MIT */
#pragma once
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

struct secret;

/* Read a whole regular file (at most @max bytes, else -EFBIG) into a NUL-terminated heap string.
 * The buffer is sized from fstat(); should the file grow meanwhile, the buffer grows by copying and
 * wiping the old one, so no stray copy of the text is left in freed memory. */
int read_file_text(const char *path, size_t max, char **ret, size_t *ret_len);
/* Read a secret from a file ("-" is stdin), at most @max bytes, into locked memory.  When @strip is
 * set, one trailing "\n" or "\r\n" is removed (passphrase files written by echo). */
int read_file_secret(const char *path, size_t max, int strip, struct secret **ret);
/* The same from an open file descriptor (read to its end; not closed). */
int read_fd_secret(int fd, size_t max, int strip, struct secret **ret);

/* Open @path read-only and fstat() what was opened into *@ret_st: checks and reads then use the
 * returned fd, never the path again (a file swapped in between is not the one read).
 * Return: the fd; -errno of open/fstat; -EISDIR or -EBADFD when not a regular file. */
int open_regular_file(const char *path, struct stat *ret_st);
/* May a file holding a private key or a secret have @mode?  Not when group or others have any
 * permission bit, the rule ssh(1) applies to private keys.  Callers refuse such a file, naming
 * 'chmod 600 PATH'. */
#define FILE_MODE_PRIVATE(mode) (((mode) & 0077) == 0)
/* Atomically replace @path: write to a temporary file in the same directory with @mode, fsync it,
 * rename it over @path, fsync the directory.  @excl: fail with -EEXIST if @path exists. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, int excl);
/* write(2) all @len bytes of @data to @fd, again after EINTR and short writes (a secret goes out
 * this way from its locked memory, never through a stdio buffer).  0 or -errno. */
int fd_write_all(int fd, const void *data, size_t len);
/* mkdir -p with @mode for directories it creates. */
int mkdir_p(const char *path, mode_t mode);
/* Append one line (a '\n' is added) with O_APPEND and fsync; creates the file with @mode. */
int append_line(const char *path, const char *line, mode_t mode);
