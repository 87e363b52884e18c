/* SPDX-License-Identifier: MIT */
/* pact_loop_get_metrics(): idle time (blocking waits only), iterations,
 * events and callbacks counted exactly, and the sized struct's rules
 * (docs/abi.md). */
#include <pthread.h>
#include <time.h>

#include "helpers.h"

static pact_loop_metrics metrics_of(pact_loop *loop)
{
    pact_loop_metrics m = PACT_LOOP_METRICS_INIT;
    cr_assert_eq(pact_loop_get_metrics(loop, &m), 0);
    cr_assert_eq(m.size, sizeof m);
    return m;
}

static void spin(pact_loop *loop, void *user)
{
    (void)loop;
    uint64_t until = pact_now() + *(uint64_t *)user;
    while (pact_now() < until)
        ;
}

Test(metrics, busy_callbacks_are_not_idle_time)
{
    pact_loop *loop = test_loop_new();
    pact_loop_metrics before = metrics_of(loop);
    uint64_t busy = 30 * MS;
    pact_call_soon(loop, spin, &busy);
    uint64_t t0 = pact_now();
    pact_loop_run(loop);
    uint64_t wall = pact_now() - t0;
    pact_loop_metrics after = metrics_of(loop);
    cr_assert_geq(wall, busy);
    /* The only wait was a zero-timeout poll (a callback was ready). */
    cr_assert_eq(after.idle_ns, before.idle_ns, "idle %llu ns",
                 (unsigned long long)(after.idle_ns - before.idle_ns));
    cr_assert_eq(after.callbacks - before.callbacks, 1);
    cr_assert_eq(after.iterations - before.iterations, 1);
    test_loop_free(loop);
}

static void spin_in_op_callback(pact_loop *loop, const pact_completion *c,
                                void *user)
{
    (void)c;
    spin(loop, user);
}

static void *write_soon(void *arg)
{
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
    cr_assert_eq(write(*(int *)arg, "x", 1), 1);
    return NULL;
}

/* Engines run I/O completion callbacks inside their wait: only the
 * blocking system call is idle time, not the callbacks after it. */
Test(metrics, a_busy_io_callback_is_not_idle_time)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    char buf[4];
    pact_loop_metrics before = metrics_of(loop);
    uint64_t busy = 40 * MS;
    uint64_t t0 = pact_now();
    cr_assert_gt(pact_recv(loop, sv[0], buf, sizeof buf, 0, spin_in_op_callback,
                           &busy), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, write_soon, &sv[1]), 0);
    pact_loop_run(loop);
    pthread_join(th, NULL);
    uint64_t wall = pact_now() - t0;
    pact_loop_metrics after = metrics_of(loop);
    uint64_t idle = after.idle_ns - before.idle_ns;
    cr_assert_geq(wall, busy);
    cr_assert_leq(idle, wall - busy, "idle %llu ns, wall %llu, busy %llu",
                  (unsigned long long)idle, (unsigned long long)wall,
                  (unsigned long long)busy);
    cr_assert_gt(idle, 0, "the recv was waited for");
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

static void noop(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
}

Test(metrics, waiting_for_a_timer_is_idle_time)
{
    pact_loop *loop = test_loop_new();
    pact_loop_metrics before = metrics_of(loop);
    uint64_t t0 = pact_now();
    pact_call_later(loop, 60 * MS, noop, NULL);
    pact_loop_run(loop);
    uint64_t wall = pact_now() - t0;
    pact_loop_metrics after = metrics_of(loop);
    uint64_t idle = after.idle_ns - before.idle_ns;
    cr_assert_leq(idle, wall);
    /* Nearly all of the 60 ms is spent in the wait; what is not is the
     * loop's own few microseconds per iteration. */
    cr_assert_geq(idle, 30 * MS, "idle %llu ns of %llu", (unsigned long long)idle,
                  (unsigned long long)wall);
    cr_assert_eq(after.callbacks - before.callbacks, 1);
    test_loop_free(loop);
}

static void chain(pact_loop *loop, void *user)
{
    int *left = user;
    if (--*left > 0)
        pact_call_soon(loop, chain, left);
}

static void slept(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)c;
    (*(int *)user)++;
}

static void pause_in_made(pact_transport *t, void *user)
{
    (void)user;
    cr_assert_eq(pact_transport_pause_reading(t), 0); /* no receive op */
}

/* A transport's connection_made and its final close run from the
 * endpoint's own ready node, not from a handle: each still counts as one
 * callback. Paused in connection_made, the transport starts no op whose
 * completion would count too. */
Test(metrics, a_transports_connection_made_and_final_close_are_callbacks)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    static const pact_protocol proto = {.connection_made = pause_in_made};
    pact_transport *t = NULL;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &proto,
                                     NULL, &t), 0);
    pact_loop_metrics before = metrics_of(loop);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    pact_loop_metrics made = metrics_of(loop);
    cr_assert_eq(made.callbacks - before.callbacks, 1);
    cr_assert_eq(pact_transport_close(t), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    pact_loop_metrics lost = metrics_of(loop);
    cr_assert_eq(lost.callbacks - made.callbacks, 1);
    test_loop_free(loop);
    close(sv[1]);
}

Test(metrics, events_callbacks_and_iterations_are_counted_exactly)
{
    pact_loop *loop = test_loop_new();
    pact_loop_metrics before = metrics_of(loop);
    pact_loop_stats st0;
    pact_loop_get_stats(loop, &st0);
    int left = 5, sleeps = 0;
    pact_call_soon(loop, chain, &left);
    cr_assert_gt(pact_sleep(loop, 2 * MS, slept, &sleeps), 0);
    cr_assert_gt(pact_sleep(loop, 1 * MS, slept, &sleeps), 0);
    pact_loop_run(loop);
    cr_assert_eq(left, 0);
    cr_assert_eq(sleeps, 2);
    pact_loop_metrics after = metrics_of(loop);
    pact_loop_stats st1;
    pact_loop_get_stats(loop, &st1);
    cr_assert_eq(after.callbacks - before.callbacks, 5 + 2);
    cr_assert_eq(after.events - before.events, 2, "two sleeps completed");
    cr_assert_eq(after.iterations - before.iterations,
                 st1.iterations - st0.iterations);
    cr_assert_geq(after.iterations - before.iterations, 5,
                  "each chained callback waits for the next iteration");
    test_loop_free(loop);
}

Test(metrics, the_struct_carries_its_size)
{
    pact_loop *loop = test_loop_new();
    pact_loop_metrics m = {0};
    cr_assert_eq(pact_loop_get_metrics(loop, &m), -EINVAL, "size 0");
    m.size = offsetof(pact_loop_metrics, callbacks);
    cr_assert_eq(pact_loop_get_metrics(loop, &m), -EINVAL, "below the first layout");
    cr_assert_eq(pact_loop_get_metrics(loop, NULL), -EINVAL);
    cr_assert_eq(pact_loop_get_metrics(NULL, &m), -EINVAL);
    /* A caller compiled against a newer header: a bigger struct whose
     * unknown tail comes back zeroed. */
    struct {
        pact_loop_metrics known;
        uint64_t newer[4];
    } big;
    memset(&big, 0xab, sizeof big);
    big.known.size = sizeof big;
    pact_call_soon(loop, noop, NULL);
    pact_loop_run(loop);
    cr_assert_eq(pact_loop_get_metrics(loop, &big.known), 0);
    cr_assert_eq(big.known.size, sizeof big, "size left as it was");
    cr_assert_geq(big.known.iterations, 1);
    cr_assert_geq(big.known.callbacks, 1);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(big.newer[i], 0);
    test_loop_free(loop);
}

static void stop_soon(pact_loop *loop, void *user)
{
    (void)user;
    pact_loop_stop(loop);
}

Test(metrics, readable_after_close)
{
    pact_loop *loop = test_loop_new();
    pact_call_every(loop, 1 * MS, noop, NULL);
    pact_call_later(loop, 10 * MS, stop_soon, NULL);
    pact_loop_run(loop);
    pact_loop_metrics m = metrics_of(loop);
    cr_assert_geq(m.callbacks, 2);
    cr_assert_eq(pact_loop_close(loop), 0);
    pact_loop_metrics closed = PACT_LOOP_METRICS_INIT;
    cr_assert_eq(pact_loop_get_metrics(loop, &closed), 0);
    cr_assert_geq(closed.iterations, m.iterations);
    pact_loop_free(loop);
}
