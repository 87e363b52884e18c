/* SPDX-License-Identifier: MIT */
/* A receive started right after one that found its socket drained (a
 * short read) on the epoll engine: it waits at once instead of trying a
 * recv that would fail with EAGAIN (one recv per message in a
 * request-response exchange, as a raw epoll server makes), and still
 * misses nothing that came meanwhile — a datagram already queued, bytes
 * sent before it started, end of file. Runs on both engines (the
 * runner sets PACT_ENGINE); the count of recv calls is the epoll
 * engine's (io_uring makes none). */
#include <stdio.h>
#include <sys/syscall.h>

#include "helpers.h"

TestSuite(recv_drained, .timeout = 30);

/* Every recv(2) the library makes in this process, counted: this
 * definition takes the place of libc's for the statically linked library
 * (and of a sanitizer's interceptor). */
static int recv_calls;

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    recv_calls++;
    return syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
}

typedef struct exchange {
    int fd;
    int received; /* completions with data */
    int64_t last;
    int ended;    /* a completion with 0 or an error */
    char buf[64];
} exchange;

/* Like a server's receive: the next one starts from the callback. */
static void on_recv(pact_loop *loop, const pact_completion *c, void *user)
{
    exchange *x = user;
    x->last = c->result;
    if (c->result <= 0) {
        x->ended = 1;
        return;
    }
    x->received++;
    cr_assert_gt(pact_recv(loop, x->fd, x->buf, sizeof x->buf, 0, on_recv, x), 0);
}

/* One receive's result, for the tests that start each one themselves. */
static int64_t last_result;

static void rec_once(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    last_result = c->result;
    *(int *)user = 1;
}

static int on_epoll(pact_loop *loop)
{
    return pact_loop_engine(loop) == PACT_ENGINE_EPOLL;
}

Test(recv_drained, a_request_response_exchange_costs_one_recv_per_message)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    exchange x = {.fd = sv[1]};
    cr_assert_gt(pact_recv(loop, sv[1], x.buf, sizeof x.buf, 0, on_recv, &x), 0);
    pact_loop_run_once(loop, 0);
    int before = recv_calls;
    enum { ROUNDS = 50 };
    for (int i = 0; i < ROUNDS; i++) {
        char msg[8];
        int n = snprintf(msg, sizeof msg, "req%d", i);
        cr_assert_eq(write(sv[0], msg, (size_t)n), n);
        volatile int want = i + 1;
        uint64_t end = pact_now() + 5000 * MS;
        while (x.received < want) {
            cr_assert(pact_now() < end, "round %d timed out", i);
            cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
        }
        cr_assert_eq(x.last, n);
        cr_assert_eq(memcmp(x.buf, msg, (size_t)n), 0);
    }
    if (on_epoll(loop))
        cr_assert_eq(recv_calls - before, ROUNDS,
                     "%d recv calls for %d messages: the receive started "
                     "after each short read tried first",
                     recv_calls - before, ROUNDS);
    close(sv[0]);
    run_until(loop, &x.ended, 5000);
    cr_assert_eq(x.last, 0);
    test_loop_free(loop);
    close(sv[1]);
}

Test(recv_drained, bytes_sent_before_the_next_receive_starts_are_received)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[64];
    /* The first receive reads short; the next one starts only after more
     * bytes are there (no new readiness comes after they were sent). */
    cr_assert_eq(write(sv[0], "abc", 3), 3);
    int done = 0;
    cr_assert_gt(pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_once, &done), 0);
    run_until(loop, &done, 5000);
    cr_assert_eq(last_result, 3);
    cr_assert_eq(write(sv[0], "defg", 4), 4);
    done = 0;
    cr_assert_gt(pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_once, &done), 0);
    run_until(loop, &done, 5000);
    cr_assert_eq(last_result, 4);
    cr_assert_eq(memcmp(buf, "defg", 4), 0);
    /* And end of file after a short read. */
    cr_assert_eq(write(sv[0], "h", 1), 1);
    shutdown(sv[0], SHUT_WR);
    done = 0;
    cr_assert_gt(pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_once, &done), 0);
    run_until(loop, &done, 5000);
    cr_assert_eq(last_result, 1);
    done = 0;
    cr_assert_gt(pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_once, &done), 0);
    run_until(loop, &done, 5000);
    cr_assert_eq(last_result, 0);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(recv_drained, a_datagram_already_queued_is_received_after_a_short_one)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                            0, sv), 0);
    pact_loop *loop = test_loop_new();
    /* Both queued before the first receive: the first reads "a", short of
     * its buffer, yet the socket is not drained. No datagram comes after
     * the second receive starts. */
    cr_assert_eq(write(sv[0], "a", 1), 1);
    cr_assert_eq(write(sv[0], "bb", 2), 2);
    exchange x = {.fd = sv[1]};
    cr_assert_gt(pact_recv(loop, sv[1], x.buf, sizeof x.buf, 0, on_recv, &x), 0);
    uint64_t end = pact_now() + 5000 * MS;
    while (x.received < 2) {
        cr_assert(pact_now() < end, "the queued datagram never came");
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    }
    cr_assert_eq(x.last, 2);
    cr_assert_eq(memcmp(x.buf, "bb", 2), 0);
    /* An empty datagram ends the chain (result 0). */
    cr_assert_eq(write(sv[0], "", 0), 0);
    run_until(loop, &x.ended, 5000);
    cr_assert_eq(x.last, 0);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}
