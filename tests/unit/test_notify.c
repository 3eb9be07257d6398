/* SPDX-License-Identifier: MIT */
/*
 * sd_notify(3) without libsystemd (agent/watch/notify.c, issue 10): the datagram reaches a
 * socket bound where $NOTIFY_SOCKET says, as a path and in the abstract namespace ("@name");
 * nothing happens without $NOTIFY_SOCKET; $WATCHDOG_USEC/$WATCHDOG_PID are read as
 * sd_watchdog_enabled(3) reads them.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "watch/notify.h"

/* Bind a datagram socket at @addr/@len, as the service manager does (SO_PASSCRED: it reads
 * the sender's PID from the message). */
static int listen_at(const struct sockaddr_un *addr, socklen_t len)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1;

	assert_true(fd >= 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	assert_int_equal(bind(fd, (const struct sockaddr *)addr, len), 0);
	return fd;
}

/* Receive one datagram (without waiting: notify_send() has returned, so it is queued) and check
 * it is exactly @want, sent by this process. */
static void assert_received(int fd, const char *want)
{
	char buf[4096], cbuf[CMSG_SPACE(sizeof(struct ucred))];
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *c;
	struct ucred cred;
	ssize_t n;

	n = recvmsg(fd, &mh, MSG_DONTWAIT);
	if (n < 0)
		fail_msg("no datagram received: %s", strerror(errno));
	assert_int_equal((size_t)n, strlen(want));
	assert_memory_equal(buf, want, (size_t)n);
	c = CMSG_FIRSTHDR(&mh);
	assert_non_null(c);
	assert_int_equal(c->cmsg_type, SCM_CREDENTIALS);
	memcpy(&cred, CMSG_DATA(c), sizeof(cred));
	assert_int_equal(cred.pid, getpid());
	/* one datagram per call */
	assert_true(recv(fd, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN);
}

static void test_notify_unset(void **state)
{
	assert_int_equal(unsetenv("NOTIFY_SOCKET"), 0);
	assert_int_equal(notify_send("READY=1"), 0);
	assert_int_equal(setenv("NOTIFY_SOCKET", "", 1), 0);
	assert_int_equal(notify_send("READY=1"), 0);
	assert_int_equal(notify_send(""), -EINVAL);
	assert_int_equal(notify_send(NULL), -EINVAL);
	assert_int_equal(unsetenv("NOTIFY_SOCKET"), 0);
}

static void test_notify_path(void **state)
{
	char dir[] = "/tmp/kmscrypt-test-notify.XXXXXX";
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", dir);
	fd = listen_at(&sa, sizeof(sa));
	assert_int_equal(setenv("NOTIFY_SOCKET", sa.sun_path, 1), 0);

	assert_int_equal(notify_send("READY=1\nSTATUS=x"), 0);
	assert_received(fd, "READY=1\nSTATUS=x");
	assert_int_equal(notify_send("STATUS=watching 12 volumes on 3 KMS; last round 0.4 s"), 0);
	assert_received(fd, "STATUS=watching 12 volumes on 3 KMS; last round 0.4 s");
	/* the variable stays set: the watchdog pings go to the same socket */
	assert_string_equal(getenv("NOTIFY_SOCKET"), sa.sun_path);
	assert_int_equal(notify_send("WATCHDOG=1"), 0);
	assert_received(fd, "WATCHDOG=1");

	/* nobody listening any more: an error the caller can log, not a silent 0 */
	close(fd);
	assert_int_equal(notify_send("STOPPING=1"), -ECONNREFUSED);
	assert_int_equal(unlink(sa.sun_path), 0);
	assert_int_equal(notify_send("STOPPING=1"), -ENOENT);
	assert_int_equal(rmdir(dir), 0);
	assert_int_equal(unsetenv("NOTIFY_SOCKET"), 0);
}

static void test_notify_abstract(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char name[64], env[80];
	socklen_t len;
	int fd;

	/* "@name" is sun_path "\0name" with a length that counts the name and nothing more (a
	 * sender that counted a trailing NUL or the whole sun_path would reach another socket) */
	snprintf(name, sizeof(name), "kmscrypt-test-notify/%d/%u", (int)getpid(),
		 (unsigned)random());
	memcpy(sa.sun_path + 1, name, strlen(name));
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
	fd = listen_at(&sa, len);
	snprintf(env, sizeof(env), "@%s", name);
	assert_int_equal(setenv("NOTIFY_SOCKET", env, 1), 0);

	assert_int_equal(notify_send("READY=1\nSTATUS=x"), 0);
	assert_received(fd, "READY=1\nSTATUS=x");
	close(fd);
	assert_int_equal(notify_send("READY=1"), -ECONNREFUSED);
	assert_int_equal(unsetenv("NOTIFY_SOCKET"), 0);
}

static void test_notify_bad_socket(void **state)
{
	char long_path[200];

	assert_int_equal(setenv("NOTIFY_SOCKET", "relative/notify", 1), 0);
	assert_int_equal(notify_send("READY=1"), -EINVAL);
	assert_int_equal(setenv("NOTIFY_SOCKET", "@", 1), 0);
	assert_int_equal(notify_send("READY=1"), -EINVAL);
	memset(long_path, 'a', sizeof(long_path) - 1);
	long_path[0] = '/';
	long_path[sizeof(long_path) - 1] = 0;
	assert_int_equal(setenv("NOTIFY_SOCKET", long_path, 1), 0);
	assert_int_equal(notify_send("READY=1"), -EINVAL);
	assert_int_equal(unsetenv("NOTIFY_SOCKET"), 0);
}

static void set_watchdog(const char *usec, const char *pid)
{
	if (usec)
		assert_int_equal(setenv("WATCHDOG_USEC", usec, 1), 0);
	else
		assert_int_equal(unsetenv("WATCHDOG_USEC"), 0);
	if (pid)
		assert_int_equal(setenv("WATCHDOG_PID", pid, 1), 0);
	else
		assert_int_equal(unsetenv("WATCHDOG_PID"), 0);
}

static void test_watchdog(void **state)
{
	char me[32], other[32];

	snprintf(me, sizeof(me), "%d", (int)getpid());
	snprintf(other, sizeof(other), "%d", (int)getpid() + 1);

	set_watchdog(NULL, NULL);
	assert_int_equal(notify_watchdog_usec(), 0);
	set_watchdog("120000000", NULL); /* WatchdogSec=120 */
	assert_int_equal(notify_watchdog_usec(), 120000000);
	set_watchdog("120000000", me);
	assert_int_equal(notify_watchdog_usec(), 120000000);
	/* meant for another process (we are a child that inherited the environment) */
	set_watchdog("120000000", other);
	assert_int_equal(notify_watchdog_usec(), 0);
	set_watchdog("120000000", "");
	assert_int_equal(notify_watchdog_usec(), 0);
	set_watchdog("120000000", "12ab");
	assert_int_equal(notify_watchdog_usec(), 0);
	/* WATCHDOG_PID without WATCHDOG_USEC */
	set_watchdog(NULL, me);
	assert_int_equal(notify_watchdog_usec(), 0);
	/* not a plain decimal number: no watchdog rather than a guess */
	const char *bad[] = {"", "0x10", "12s", " 5", "-5", "+5", "1e6", "18446744073709551616"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_watchdog(bad[i], NULL);
		if (notify_watchdog_usec() != 0)
			fail_msg("WATCHDOG_USEC='%s' taken as %llu", bad[i],
				 (unsigned long long)notify_watchdog_usec());
	}
	set_watchdog("18446744073709551615", NULL);
	assert_true(notify_watchdog_usec() == UINT64_MAX);
	set_watchdog("0", NULL);
	assert_int_equal(notify_watchdog_usec(), 0);
	set_watchdog(NULL, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_notify_unset),    cmocka_unit_test(test_notify_path),
		cmocka_unit_test(test_notify_abstract), cmocka_unit_test(test_notify_bad_socket),
		cmocka_unit_test(test_watchdog),
	};

	srandom((unsigned)getpid());
	return cmocka_run_group_tests(tests, NULL, NULL);
}
