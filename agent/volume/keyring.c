/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util/cleanup.h"
#include "util/log.h"
#include "util/secret.h"
#include "volume/keyring.h"
#include "volume/volume.h"

int volume_keyring_add_user(const char *desc, const struct secret *s, unsigned timeout_sec,
			    key_serial_t *ret_id)
{
	key_serial_t id;

	id = add_key("user", desc, s->buf, s->len, KEY_SPEC_PROCESS_KEYRING);
	if (id < 0)
		return -errno;
	/* Bounds the key's life if we die before keyctl_invalidate(). */
	if (keyctl_set_timeout(id, timeout_sec) < 0) {
		int r = -errno;
		(void)keyctl_invalidate(id);
		return r;
	}
	*ret_id = id;
	return 0;
}

/*
 * One line of /proc/keys (security/keys/proc.c, proc_keys_show()):
 *   "%08x %c%c%c%c%c%c%c %5d %4s %08x %5d %5d %-9.9s " then the type's describe():
 *   3c5b1a2f I--Q---     1  29s 3f010000     0     0 user      kmscrypt:<uuid>: 32
 * user and logon keys describe themselves as "<description>: <datalen>" (user_describe()).
 * Only keys the reader may View are listed; we find the ones we possess.
 */
static int keys_parse_line(const char *line, key_serial_t *ret_id, const char **ret_desc)
{
	char flags[8], expiry[8];
	unsigned id;
	int n = 0;

	if (sscanf(line, "%x %7s %*d %7s %*x %*d %*d %*s %n", &id, flags, expiry, &n) != 3 ||
	    n == 0)
		return -EBADMSG;
	/* Flags "IRDQUNi": skip revoked, dead, invalidated and expired keys (GC is lazy). */
	if (strpbrk(flags, "RDi") || strcmp(expiry, "expd") == 0)
		return -ENOKEY;
	*ret_id = (key_serial_t)id;
	*ret_desc = line + n;
	return 0;
}

/* Does the described key (@d, "<description>: <len>") have description @want exactly? */
static bool desc_is(const char *d, const char *want)
{
	size_t n = strlen(want);

	return strncmp(d, want, n) == 0 && (d[n] == ':' || d[n] == '\n' || d[n] == '\0');
}

/* "<prefix><digits>", as in "cryptsetup:<uuid>-d0" (lib/luks2/luks2_digest.c key description) */
static bool desc_is_numbered(const char *d, const char *prefix)
{
	size_t n = strlen(prefix);

	if (strncmp(d, prefix, n) != 0 || !isdigit((unsigned char)d[n]))
		return false;
	for (d += n; isdigit((unsigned char)*d); d++)
		;
	return *d == ':' || *d == '\n' || *d == '\0';
}

int volume_keyring_purge(const char *uuid)
{
	_cleanup_free_ char *line = NULL, *ours = NULL, *theirs = NULL;
	FILE *f;
	size_t cap = 0;
	int count = 0, r = 0;

	if (asprintf(&ours, "kmscrypt:%s", uuid) < 0 ||
	    asprintf(&theirs, "cryptsetup:%s-d", uuid) < 0)
		return -ENOMEM;
	f = fopen("/proc/keys", "re");
	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		const char *desc;
		key_serial_t id;

		if (keys_parse_line(line, &id, &desc) < 0)
			continue;
		if (!desc_is(desc, ours) && !desc_is_numbered(desc, theirs))
			continue;
		if (keyctl_invalidate(id) < 0) {
			/* Gone meanwhile (expired, garbage collected): nothing left to remove. */
			if (errno == ENOKEY || errno == EKEYEXPIRED || errno == EKEYREVOKED)
				continue;
			/* Visible but not possessed (another thread's keyring): out of our reach. */
			if (errno == EACCES) {
				log_debug("Key %d is not ours to invalidate, ignoring.", id);
				continue;
			}
			r = -errno;
			log_debug("Failed to invalidate key %d: %m", id);
			continue;
		}
		count++;
	}
	fclose(f);
	return r < 0 ? r : count;
}

int volume_keyring_count_kmscrypt(void)
{
	_cleanup_free_ char *line = NULL;
	FILE *f;
	size_t cap = 0;
	int count = 0;

	f = fopen("/proc/keys", "re");
	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		const char *desc;
		key_serial_t id;

		if (keys_parse_line(line, &id, &desc) == 0 && strncmp(desc, "kmscrypt:", 9) == 0)
			count++;
	}
	fclose(f);
	return count;
}
