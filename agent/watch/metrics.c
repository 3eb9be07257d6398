/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "codec/prom.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "watch/metrics.h"

int watch_metrics_write(const char *path, const struct watch_metrics *m)
{
	_cleanup_free_ char *text = NULL;
	int r;

	if (!path || !*path)
		return -EINVAL;
	r = watch_metrics_format(m, &text);
	if (r < 0)
		return r;
	return write_file_atomic(path, text, strlen(text), WATCH_METRICS_MODE, 0);
}
