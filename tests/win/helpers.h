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

#include "../helpers_both_systems.h"

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
