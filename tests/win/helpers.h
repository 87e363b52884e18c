/* SPDX-License-Identifier: MIT */
/* tests/helpers.h for the Windows build: the same helpers the portable
 * suites use (a loop, run_until, the test pattern) on the completion-port
 * engine, with the mini Criterion (tests/mini) as the harness, plus
 * loopback socket helpers on Winsock. The Windows suites put this
 * directory first on the include path, so a portable suite's
 * #include "helpers.h" finds this file. */
#ifndef PACT_TEST_HELPERS_H
#define PACT_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <errno.h>
#include <pact.h>
#include <stdlib.h>
#include <string.h>

#define MS (1000ull * 1000ull)

static inline pact_loop *test_loop_new(void)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.debug = 1;
    pact_loop *loop = NULL;
    int r = pact_loop_create(&loop, &o);
    cr_assert_eq(r, 0, "pact_loop_create: %s", pact_strerror(r));
    cr_assert_eq(pact_loop_engine(loop), PACT_ENGINE_IOCP);
    return loop;
}

static inline void test_loop_free(pact_loop *loop)
{
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    cr_expect_eq(st.stray_completions, 0, "stray completions: %llu",
                 (unsigned long long)st.stray_completions);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    cr_expect_eq(st.stray_completions, 0);
    cr_expect_eq(st.ops_live, 0, "ops still live after close: %llu",
                 (unsigned long long)st.ops_live);
    cr_expect_eq(st.ops_started, st.ops_completed,
                 "started %llu, completed %llu",
                 (unsigned long long)st.ops_started,
                 (unsigned long long)st.ops_completed);
    pact_loop_free(loop);
}

static inline void run_until(pact_loop *loop, const volatile int *flag,
                             unsigned limit_ms)
{
    uint64_t end = pact_now() + limit_ms * MS;
    while (!*flag) {
        cr_assert(pact_now() < end, "timed out after %u ms", limit_ms);
        int r = pact_loop_run_once(loop, 10 * (int64_t)MS);
        cr_assert_geq(r, 0, "run_once: %s", pact_strerror(r));
    }
}

static inline uint8_t test_pattern_byte(uint64_t k)
{
    return (uint8_t)((k * 2654435761u) >> 13) ^ (uint8_t)(k >> 16);
}

static inline void test_fill_pattern(uint8_t *buf, size_t len, uint64_t pos)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = test_pattern_byte(pos + i);
}

/* Winsock is started by the first loop; socket helpers may run first. */
static inline void test_winsock(void)
{
    WSADATA d;
    cr_assert_eq(WSAStartup(MAKEWORD(2, 2), &d), 0);
}

/* A socket of type (SOCK_STREAM, SOCK_DGRAM) bound to 127.0.0.1, port
 * chosen by the system; its address in *addr. */
static inline SOCKET test_bound_socket(int type, struct sockaddr_in *addr)
{
    test_winsock();
    SOCKET s = socket(AF_INET, type, type == SOCK_DGRAM ? IPPROTO_UDP : IPPROTO_TCP);
    cr_assert_neq(s, INVALID_SOCKET);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(s, (struct sockaddr *)addr, sizeof *addr), 0);
    int len = sizeof *addr;
    cr_assert_eq(getsockname(s, (struct sockaddr *)addr, &len), 0);
    return s;
}

/* A TCP listener on 127.0.0.1, port chosen by the system; its address in
 * *addr. */
static inline SOCKET test_listener(struct sockaddr_in *addr)
{
    SOCKET l = test_bound_socket(SOCK_STREAM, addr);
    cr_assert_eq(listen(l, 64), 0);
    return l;
}

/* A connected loopback TCP pair made with blocking calls (client, server
 * side); both overlapped-capable, as every Winsock socket() is. */
static inline void make_tcp_pair(SOCKET *client, SOCKET *server)
{
    struct sockaddr_in a;
    SOCKET l = test_listener(&a);
    SOCKET c = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    cr_assert_neq(c, INVALID_SOCKET);
    cr_assert_eq(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    SOCKET s = accept(l, NULL, NULL);
    cr_assert_neq(s, INVALID_SOCKET);
    closesocket(l);
    *client = c;
    *server = s;
}

#endif
