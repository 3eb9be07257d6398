/* SPDX-License-Identifier: MIT */
/*
 * kmscrypt exit codes.  Every kmscrypt command exits with one of these; scripts and systemd units may
 * rely on them.  They are also documented in kmscrypt(8), section EXIT STATUS.
 *
 * Commands that act on several volumes (--all) exit 0 only when every volume succeeded; otherwise they
 * exit with the code of the first volume that failed, in device order, and --json shows each result.
 */
#pragma once

enum kmscrypt_exit {
	KMSCRYPT_EXIT_OK = 0,          /* success */
	KMSCRYPT_EXIT_FAILURE = 1,     /* internal or unclassified error (out of memory, I/O on state);
					* not run as root; a local file unreadable for lack of permission;
					* a state or configuration dir others may change */
	KMSCRYPT_EXIT_USAGE = 2,       /* bad command line or bad configuration value */
	KMSCRYPT_EXIT_DENIED = 3,      /* the KMS refused: key revoked/disabled/missing, bad credentials */
	KMSCRYPT_EXIT_UNAVAILABLE = 4, /* the KMS could not be reached in time: network, 5xx, throttled */
	KMSCRYPT_EXIT_VOLUME = 5,      /* LUKS2 header, keyslot, token or device-mapper error */
	KMSCRYPT_EXIT_NOT_FOUND = 6,   /* no such device, mapping, volume binding or KMS configuration */
	KMSCRYPT_EXIT_CONFLICT = 7,    /* state conflict: already exists, in use, busy, revoked */
	KMSCRYPT_EXIT_INVALID = 8,     /* malformed KMS reply, token or configuration file */
};
