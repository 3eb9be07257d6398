/* SPDX-License-Identifier: MIT */
/*
 * sd_notify(3) by hand: the protocol is one datagram, stable and documented in sd_notify(3)
 * ("NOTES") and systemd's docs/NOTIFY.md; linking libsystemd for it would add a library to the
 * daemon and the token plugin.  Unlike sd_notify() this passes no file descriptors or
 * credentials: the service manager reads the sender's PID from the socket (SO_PASSCRED).
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "watch/notify.h"

/* $NOTIFY_SOCKET as a socket address.  "@name": abstract namespace, sun_path[0] = 0 and the
 * address length counts exactly the name (no trailing NUL, as systemd binds it). */
static int notify_address(const char *e, struct sockaddr_un *ret, socklen_t *ret_len)
{
	size_t n = strlen(e);

	if (e[0] != '/' && e[0] != '@')
		return -EINVAL;
	if (n < 2 || n >= sizeof(ret->sun_path))
		return -EINVAL;
	*ret = (struct sockaddr_un){.sun_family = AF_UNIX};
	memcpy(ret->sun_path, e, n);
	if (e[0] == '@') {
		ret->sun_path[0] = 0;
		*ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		*ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	}
	return 0;
}

int notify_send(const char *state)
{
	_cleanup_close_ int fd = -1;
	struct sockaddr_un sa;
	socklen_t sa_len;
	const char *e;
	size_t len;
	ssize_t k;
	int r;

	if (!state || !*state)
		return -EINVAL;
	e = secure_getenv("NOTIFY_SOCKET");
	if (!e || !*e)
		return 0;
	r = notify_address(e, &sa, &sa_len);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	len = strlen(state);
	/* MSG_NOSIGNAL: a manager gone away must not kill us with SIGPIPE. */
	do
		k = sendto(fd, state, len, MSG_NOSIGNAL, (const struct sockaddr *)&sa, sa_len);
	while (k < 0 && errno == EINTR);
	if (k < 0)
		return -errno;
	if ((size_t)k != len) /* a datagram goes whole or not at all; be sure */
		return -EMSGSIZE;
	return 0;
}

/* A plain decimal number without sign, spaces or overflow; false otherwise. */
static bool parse_u64(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	if (!s || !*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*ret = v;
	return true;
}

uint64_t notify_watchdog_usec(void)
{
	const char *pid = secure_getenv("WATCHDOG_PID");
	uint64_t usec, p;

	if (!parse_u64(secure_getenv("WATCHDOG_USEC"), &usec))
		return 0;
	if (pid) {
		if (!parse_u64(pid, &p) || p != (uint64_t)getpid())
			return 0;
	}
	return usec;
}
