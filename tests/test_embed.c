/* SPDX-License-Identifier: MIT */
/* Embedding a pact loop in another loop: pact_loop_backend_fd() polled by
 * an outer epoll loop, pact_loop_backend_timeout() as its timeout, and
 * pact_loop_run_once(loop, 0) when either says so. I/O completed by
 * another thread, timers, kernel sleeps, cross-thread callbacks and
 * cancels all arrive, on both engines, without the outer loop spinning. */
#include <pthread.h>
#include <sys/epoll.h>
#include <time.h>

#include "helpers.h"

TestSuite(embed, .timeout = 30);

/* One turn of the outer loop: wait on the backend fd for at most the
 * backend timeout (capped so that a missed wake-up fails instead of
 * hanging), then let pact run. Returns the events epoll_wait reported;
 * *capped is set when a wait with no limit hit the cap. */
static int outer_turn(int outer, pact_loop *loop, int *capped)
{
    int64_t ns = pact_loop_backend_timeout(loop);
    cr_assert(ns >= -1, "backend timeout %lld", (long long)ns);
    int ms = ns < 0 ? 3000 : (int)((ns + 999999) / 1000000);
    struct epoll_event ev[4];
    int n = epoll_wait(outer, ev, 4, ms);
    /* io_uring without COOP_TASKRUN runs its task work by interrupting
     * the thread's system call: EINTR here means a completion came. */
    if (n < 0 && errno == EINTR)
        n = 1;
    cr_assert_geq(n, 0, "epoll_wait: %s", strerror(errno));
    if (n == 0 && ns < 0)
        *capped = 1;
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    return n;
}

static int outer_for(pact_loop *loop)
{
    int outer = epoll_create1(EPOLL_CLOEXEC);
    cr_assert_geq(outer, 0);
    int fd = pact_loop_backend_fd(loop);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pact_loop_backend_fd(loop), fd, "stable");
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 7};
    cr_assert_eq(epoll_ctl(outer, EPOLL_CTL_ADD, fd, &ev), 0);
    return outer;
}

static struct {
    int recv_done, timer_done, sleep_done, ts_done;
    int64_t recv_result, sleep_result;
    char buf[16];
} em;

static void on_recv(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)user;
    em.recv_done++;
    em.recv_result = c->result;
}

static void on_sleep(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)user;
    em.sleep_done++;
    em.sleep_result = c->result;
}

static void on_timer(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    em.timer_done++;
}

static void *write_later(void *arg)
{
    int fd = *(int *)arg;
    struct timespec ts = {0, 60 * 1000 * 1000};
    nanosleep(&ts, NULL);
    cr_assert_eq(write(fd, "hello", 5), 5);
    return NULL;
}

Test(embed, an_outer_epoll_loop_drives_io_timers_and_sleeps)
{
    pact_loop *loop = test_loop_new();
    memset(&em, 0, sizeof em);
    int outer = outer_for(loop);
    int sv[2];
    make_socketpair(sv);
    cr_assert_gt(pact_recv(loop, sv[0], em.buf, sizeof em.buf, 0, on_recv, NULL), 0);
    cr_assert_eq(pact_loop_backend_timeout(loop), 0, "a started op is not submitted yet");
    cr_assert_gt(pact_call_later(loop, 10 * MS, on_timer, NULL), 0);
    cr_assert_gt(pact_sleep(loop, 20 * MS, on_sleep, NULL), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, write_later, &sv[1]), 0);
    int capped = 0, turns = 0, woke_by_fd = 0;
    uint64_t deadline = pact_now() + 10000 * MS;
    while ((!em.recv_done || !em.timer_done || !em.sleep_done) &&
           pact_now() < deadline) {
        if (outer_turn(outer, loop, &capped) > 0)
            woke_by_fd++;
        turns++;
        cr_assert_eq(capped, 0, "the backend fd missed a completion");
    }
    pthread_join(th, NULL);
    cr_assert_eq(em.timer_done, 1);
    cr_assert_eq(em.sleep_done, 1);
    cr_assert_eq(em.sleep_result, 0);
    cr_assert_eq(em.recv_done, 1);
    cr_assert_eq(em.recv_result, 5);
    cr_assert_geq(woke_by_fd, 1, "the written bytes arrived through the fd");
    /* Three things due at 10, 20 and 60 ms: a handful of turns, not a
     * spinning outer loop. */
    cr_assert_lt(turns, 100, "%d turns", turns);
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_loop_backend_timeout(loop), -1, "nothing left: no limit");
    close(outer);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

static void ts_cb(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    em.ts_done++;
}

static void *call_later_from_thread(void *arg)
{
    struct timespec ts = {0, 30 * 1000 * 1000};
    nanosleep(&ts, NULL);
    cr_assert_eq(pact_call_soon_threadsafe(arg, ts_cb, NULL), 0);
    return NULL;
}

Test(embed, a_threadsafe_callback_wakes_the_outer_loop)
{
    pact_loop *loop = test_loop_new();
    memset(&em, 0, sizeof em);
    int outer = outer_for(loop);
    cr_assert_eq(pact_loop_run_once(loop, 0), 0); /* owner thread set */
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, call_later_from_thread, loop), 0);
    int capped = 0, turns = 0;
    while (!em.ts_done && turns < 20 && !capped) {
        outer_turn(outer, loop, &capped);
        turns++;
    }
    pthread_join(th, NULL);
    cr_assert_eq(capped, 0, "the wake-up did not make the fd readable");
    cr_assert_eq(em.ts_done, 1);
    cr_assert_lt(turns, 10, "%d turns", turns);
    close(outer);
    test_loop_free(loop);
}

Test(embed, a_cancel_from_outside_callbacks_is_delivered_without_blocking)
{
    pact_loop *loop = test_loop_new();
    memset(&em, 0, sizeof em);
    int outer = outer_for(loop);
    int sv[2];
    make_socketpair(sv);
    pact_op op = pact_recv(loop, sv[0], em.buf, sizeof em.buf, 0, on_recv, NULL);
    cr_assert_gt(op, 0);
    cr_assert_eq(pact_loop_run_once(loop, 0), 1);
    cr_assert_eq(pact_loop_backend_timeout(loop), -1, "only the fd can bring the recv");
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    int capped = 0, turns = 0;
    while (!em.recv_done && turns < 10 && !capped) {
        outer_turn(outer, loop, &capped);
        turns++;
    }
    cr_assert_eq(capped, 0, "the cancel was never handed to the kernel");
    cr_assert_eq(em.recv_done, 1);
    cr_assert_eq(em.recv_result, -ECANCELED);
    close(outer);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

static void noop(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
}

Test(embed, the_timeout_follows_the_loop)
{
    pact_loop *loop = test_loop_new();
    /* A fresh loop's own wake-up read is handed to the kernel by the
     * first iteration; after that nothing but the fd can bring work. */
    cr_assert_eq(pact_loop_run_once(loop, 0), 0);
    cr_assert_eq(pact_loop_backend_timeout(loop), -1, "no limit");
    pact_handle soon = pact_call_soon(loop, noop, NULL);
    cr_assert_eq(pact_loop_backend_timeout(loop), 0, "a callback is ready");
    cr_assert_eq(pact_handle_cancel(loop, soon), 0);
    pact_handle t = pact_call_later(loop, 50 * MS, noop, NULL);
    int64_t ns = pact_loop_backend_timeout(loop);
    cr_assert(ns > 0 && ns <= (int64_t)(50 * MS), "%lld", (long long)ns);
    cr_assert_eq(pact_handle_set_ref(loop, t, 0), 0);
    ns = pact_loop_backend_timeout(loop);
    cr_assert(ns > 0 && ns <= (int64_t)(50 * MS),
              "an unreferenced timer still bounds the wait: %lld", (long long)ns);
    cr_assert_eq(pact_loop_backend_timeout(NULL), -EINVAL);
    cr_assert_eq(pact_loop_backend_fd(NULL), -EINVAL);
    int fd = pact_loop_backend_fd(loop);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(pact_loop_backend_timeout(loop), -ESHUTDOWN);
    cr_assert_eq(pact_loop_backend_fd(loop), -ESHUTDOWN);
    pact_loop_free(loop);
}
