/* SPDX-License-Identifier: MIT */
#include <blkid/blkid.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "volume/dm.h"
#include "volume/volume.h"

/* blkid's USAGE ("filesystem", "raid", "crypto", "other") as a noun for the message. */
static const char *usage_noun(const char *usage)
{
	if (!usage)
		return "signature";
	if (strcmp(usage, "filesystem") == 0)
		return "filesystem";
	if (strcmp(usage, "crypto") == 0)
		return "header";
	if (strcmp(usage, "raid") == 0)
		return "member";
	return "signature";
}

int volume_probe_blank(const char *device, char **ret_what)
{
	const char *type = NULL, *usage = NULL, *pttype = NULL;
	blkid_probe pr;
	char *what = NULL;
	int r;

	if (volume_dm_device_suspended(device))
		return -EBUSY; /* probing would block until resume */
	errno = 0;
	pr = blkid_new_probe_from_filename(device);
	if (!pr)
		return errno > 0 ? -errno : -EINVAL;
	/* What wipefs(8) and mkfs look for: superblocks (filesystems, LUKS, RAID/LVM members, swap)
	 * and partition tables. */
	(void)blkid_probe_enable_superblocks(pr, 1);
	(void)blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE);
	(void)blkid_probe_enable_partitions(pr, 1);
	(void)blkid_probe_set_partitions_flags(pr, 0);

	errno = 0;
	r = blkid_do_safeprobe(pr);
	if (r == 1) {
		r = 0; /* nothing found */
		goto out;
	}
	if (r == -2) {
		what = strdup("ambivalent signatures");
	} else if (r < 0) {
		r = errno > 0 ? -errno : -EIO;
		goto out;
	} else {
		(void)blkid_probe_lookup_value(pr, "TYPE", &type, NULL);
		(void)blkid_probe_lookup_value(pr, "USAGE", &usage, NULL);
		(void)blkid_probe_lookup_value(pr, "PTTYPE", &pttype, NULL);
		if (type) {
			if (asprintf(&what, "%s %s", type, usage_noun(usage)) < 0)
				what = NULL;
		} else if (pttype) {
			if (asprintf(&what, "%s partition table", pttype) < 0)
				what = NULL;
		} else {
			what = strdup("unknown signature");
		}
	}
	if (!what) {
		r = -ENOMEM;
		goto out;
	}
	log_debug("Found %s on '%s'.", what, device);
	if (ret_what)
		*ret_what = what;
	else
		free(what);
	r = -EEXIST;
out:
	blkid_free_probe(pr);
	return r;
}
