/* SPDX-License-Identifier: MIT */
/*
 * Directories whose contents kmscrypt trusts, the state dir (revoked marks, lock, audit log) and
 * the configuration dir (KMS configurations), must be changeable by root only: the rule OpenSSH's
 * StrictModes applies to the files it trusts.  Owned by root (or by the effective user, who is root
 * whenever kmscrypt runs: main.c refuses anyone else) and writable by neither group nor others.
 * Only the directory itself is checked, not its parents: a sticky world-writable parent such as
 * /tmp does not let others replace or rename a directory root owns.
 */
#pragma once
#include <stddef.h>

/* Open @path as a directory (O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC) and check it as above.
 * Return: the fd; -ENOENT; -ENOTDIR; -ELOOP when @path is a symbolic link (not followed); -ENOLINK
 * when its owner or mode is unsafe (systemd's chase() answers an unsafe path with -ENOLINK too).
 * On failure one sentence naming @what (e.g. "State dir"), @path and the fix goes into @why (size
 * @n; may be NULL). */
int dir_open_trusted(const char *path, const char *what, char *why, size_t n);
