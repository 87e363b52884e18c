/* SPDX-License-Identifier: MIT */
/* The check that a write queued behind a write waiting for room goes to
 * the kernel when the run that completes the first one returns, shared
 * by the pipe (tests/test_pipe.c) and socket (tests/test_stream.c)
 * transports. */
#ifndef PACT_TEST_QUEUED_WRITE_H
#define PACT_TEST_QUEUED_WRITE_H

#include <poll.h>

#include "helpers.h"

/* t writes into a kernel buffer that holds `filled` bytes already and
 * takes no more; rfd is its other end. Two writes are queued, the first
 * meets the full buffer; only the filler is read. The run in which the
 * first write completes starts the second from its completion, and when
 * that run returns (pact_loop_run_once, no PACT_RUN_AGAIN) the second's
 * bytes are in the kernel: a caller that runs the loop no more (or blocks
 * on something else) still gets them to the peer. Before, the write
 * stayed in io_uring's submission queue (or, on epoll and on a movable
 * loop, in the loop's queue of ops to start) until the next run. */
static inline void check_queued_write_goes_out_when_the_run_returns(
    pact_loop *loop, pact_transport *t, int rfd, size_t filled)
{
    enum { PART = 100 };
    char first[PART], second[PART];
    memset(first, 'f', sizeof first);
    memset(second, 's', sizeof second);
    cr_assert_eq(pact_transport_write(t, first, sizeof first), 0);
    cr_assert_eq(pact_transport_write(t, second, sizeof second), 0);
    cr_assert_eq(pact_transport_write_buffer_size(t), 2 * PART);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0); /* the first meets a full buffer */
    /* Room: the filler read, and no more. */
    char *got = malloc(filled + 2 * PART);
    size_t have = 0;
    while (have < filled) {
        ssize_t n = read(rfd, got + have, filled - have);
        cr_assert_gt(n, 0);
        have += (size_t)n;
    }
    /* Until the first write has completed: its completion starts the
     * second's, which the run that ran it must hand to the kernel. */
    for (int turns = 0; pact_transport_write_buffer_size(t) > PART; turns++) {
        cr_assert_lt(turns, 100, "the first write did not complete");
        cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
    }
    cr_assert_eq(pact_transport_write_buffer_size(t), PART);
    /* The loop does not run from here. */
    while (have < filled + 2 * PART) {
        struct pollfd pf = {.fd = rfd, .events = POLLIN};
        cr_assert_eq(poll(&pf, 1, 2000), 1,
                     "%zu of %d bytes came: the rest waits for a run that "
                     "does not come", have - filled, 2 * PART);
        ssize_t n = read(rfd, got + have, filled + 2 * PART - have);
        cr_assert_gt(n, 0);
        have += (size_t)n;
    }
    cr_assert_eq(memcmp(got + filled, first, PART), 0);
    cr_assert_eq(memcmp(got + filled + PART, second, PART), 0);
    free(got);
}

#endif
