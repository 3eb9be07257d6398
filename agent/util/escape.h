/* SPDX-License-Identifier: MIT */
/*
 * Escaping of untrusted text (LUKS2 header fields, KMS error messages, file names) before it
 * reaches a terminal, a log line or the journal, as systemd's cescape() and OpenSSH's fmprintf()
 * do: a newline in a token field must not start a second journal record ("<0>..."), an ESC must not
 * drive the operator's terminal.
 *
 * Escaped: the C0 controls (bytes below 0x20) as \n, \r or \xNN; DEL as \x7f; every byte that is
 * not part of well-formed UTF-8, and the C1 controls U+0080-U+009F, as \xNN per byte.  Printable
 * ASCII, well-formed UTF-8 and the tab pass unchanged (a tab starts no record and drives no
 * terminal; as OpenSSH's VIS_SAFE, and the token plugin's dump indents with it).  A backslash is
 * not doubled: escaped text holds no byte that would be escaped again, so escaping twice (a KMS
 * message escaped in struct kms_error, then by the logger) changes nothing.  The output is for
 * people, not for a parser.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>

/* Escape NUL-terminated @s into @buf of size @n (NULL @s gives ""); when the result does not fit it
 * is cut at a character boundary and ends with "..." (empty when @n < 4).  Returns @buf. */
char *cescape_buf(const char *s, char *buf, size_t n);
/* The same for @len bytes at @p, which may hold NUL bytes (escaped as \x00). */
char *cescape_mem(const void *p, size_t len, char *buf, size_t n);
/* Escape @s into a new heap string (free()); NULL when out of memory. */
char *cescape(const char *s);
/* true when cescape() would change @s (it holds a control character or malformed UTF-8). */
bool cescape_needed(const char *s);
