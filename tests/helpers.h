/* SPDX-License-Identifier: MIT */
/* Shared test helpers: a loop on the engine PACT_ENGINE names (the runner
 * runs every suite on both), socket pairs, fd-leak checks. */
#ifndef PACT_TEST_HELPERS_H
#define PACT_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pact.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers_both_systems.h"
#include "open_fds.h" /* count_open_fds */

/* A loop made with the test's options (o->debug is set here) on the
 * engine the runner asked for; fails the test if the loop silently fell
 * back (a forced engine must be the one we get). */
static inline pact_loop *test_loop_create_with(pact_loop_options *o)
{
    o->debug = 1;
    pact_loop *loop = NULL;
    int r = pact_loop_create(&loop, o);
    cr_assert_eq(r, 0, "pact_loop_create: %s", pact_strerror(r));
    const char *want = getenv("PACT_ENGINE");
    if (want && strcmp(want, "uring") == 0)
        cr_assert_eq(pact_loop_engine(loop), PACT_ENGINE_URING);
    if (want && strcmp(want, "epoll") == 0)
        cr_assert_eq(pact_loop_engine(loop), PACT_ENGINE_EPOLL);
    return loop;
}

/* A test loop; movable: may be run by another thread later, as
 * pact.asyncio's loops are. */
static inline pact_loop *test_loop_new_movable(int movable)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.movable = movable;
    return test_loop_create_with(&o);
}

static inline pact_loop *test_loop_new(void)
{
    return test_loop_new_movable(0);
}

/* Runs the loop until expr holds, failing after ms milliseconds. */
#define RUN_UNTIL(loop, expr, ms)                                            \
    do {                                                                     \
        uint64_t end_ = pact_now() + (uint64_t)(ms) * MS;                    \
        while (!(expr)) {                                                    \
            cr_assert(pact_now() < end_, "timed out after %d ms waiting "    \
                      "for %s", (int)(ms), #expr);                           \
            int r_ = pact_loop_run_once((loop), 10 * (int64_t)MS);          \
            cr_assert_geq(r_, 0, "run_once: %s", pact_strerror(r_));         \
        }                                                                    \
    } while (0)

static inline void make_socketpair(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                            0, sv), 0);
}

/* Sends zeros on fd, chunk bytes at a time (at most 64 KiB), until the
 * kernel takes no more (raw sends: a transport on fd does not see them);
 * returns the bytes. Smaller chunks fill the last bit of room too. */
static inline size_t send_zeros_until_full(int fd, size_t chunk)
{
    static uint8_t zeros[1 << 16];
    if (chunk > sizeof zeros)
        chunk = sizeof zeros;
    size_t filled = 0;
    for (;;) {
        ssize_t w = send(fd, zeros, chunk, MSG_DONTWAIT);
        if (w <= 0)
            return filled;
        filled += (size_t)w;
    }
}

/* Small kernel buffers on a, b (a Unix stream pair: TCP with such small
 * windows crawls), filled from a (zeros) until a takes no more, so that a
 * transport's next byte on a waits; returns the bytes. */
static inline size_t fill_kernel_buffers(int a, int b)
{
    int small = 4096;
    setsockopt(a, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(b, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    return send_zeros_until_full(a, 1 << 16);
}

/* A blocking TCP socket connected to host:port (a loopback listener's
 * backlog completes the connect without the listener's loop running). */
static inline int tcp_connect_blocking(int family, const char *host, int port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    cr_assert_eq(pact_sockaddr_parse(host, (uint16_t)port, &ss, &len), 0);
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&ss, len), 0, "connect: %s",
                 strerror(errno));
    return fd;
}

/* A connected loopback TCP pair (client, server side). */
static inline void make_tcp_pair(int *client, int *server)
{
    int lfd = pact_tcp_listen("127.0.0.1", 0, 16);
    cr_assert_geq(lfd, 0);
    int c = tcp_connect_blocking(AF_INET, "127.0.0.1", pact_socket_port(lfd));
    int s;
    do {
        s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    } while (s < 0 && errno == EAGAIN);
    cr_assert_geq(s, 0);
    fcntl(c, F_SETFL, O_NONBLOCK);
    fcntl(s, F_SETFL, O_NONBLOCK);
    close(lfd);
    *client = c;
    *server = s;
}

/* Bytes of heap the process has allocated and not freed: what a leak
 * makes grow, whether or not the kernel has backed the pages yet (an
 * untouched 64 KiB buffer does not show in RSS). ASan replaces malloc, so
 * there its allocator answers; else glibc's mallinfo2 (main arena plus
 * mmapped chunks: call it from the thread that allocates). */
#if defined(__SANITIZE_ADDRESS__)
#define PACT_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PACT_TEST_ASAN 1
#endif
#endif
#ifdef PACT_TEST_ASAN
/* How far heap_bytes_in_use() may move with nothing leaked: ASan counts
 * exactly. */
#define HEAP_COUNT_NOISE 0
/* Declared here: gcc installs no sanitizer/allocator_interface.h. */
size_t __sanitizer_get_current_allocated_bytes(void);
static inline size_t heap_bytes_in_use(void)
{
    return __sanitizer_get_current_allocated_bytes();
}
#else
#include <malloc.h>
/* glibc counts the blocks parked in its per-thread cache (tcache: up to 7
 * free blocks of each size up to 1 KiB, about 230 KB in all) as in use, so
 * the count moves by up to that much with nothing leaked. */
#define HEAP_COUNT_NOISE (256 * 1024)
static inline size_t heap_bytes_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}
#endif

#endif
