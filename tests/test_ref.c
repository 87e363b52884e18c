/* SPDX-License-Identifier: MIT */
/* What keeps pact_loop_run() going (pact.h, pact_loop_run): timers and
 * ops unless unreferenced, signal handlers only when referenced. run()
 * returns with only unreferenced work left, that work stays scheduled or
 * in flight, and close still completes it exactly once. */
#include <signal.h>

#include "helpers.h"

static void count(pact_loop *loop, void *user)
{
    (void)loop;
    (*(int *)user)++;
}

Test(ref, run_returns_with_only_an_unreferenced_timer_left)
{
    pact_loop *loop = test_loop_new();
    int runs = 0;
    pact_handle h = pact_call_every(loop, 1 * MS, count, &runs);
    cr_assert_eq(pact_handle_set_ref(loop, h, 0), 0);
    cr_assert_eq(pact_handle_set_ref(loop, h, 0), 0, "twice is harmless");
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(runs, 0, "run() returned at once");
    cr_assert_eq(pact_loop_run_once(loop, -1), 0, "run_once does not block");
    /* Still scheduled: with other work keeping the loop alive it ticks. */
    int other = 0;
    pact_call_later(loop, 30 * MS, count, &other);
    cr_assert_eq(pact_loop_alive(loop), 1);
    pact_loop_run(loop);
    cr_assert_eq(other, 1);
    cr_assert_geq(runs, 2, "the background timer ran meanwhile");
    cr_assert_gt(pact_handle_due(loop, h), 0, "and is still scheduled");
    int seen = runs;
    test_loop_free(loop); /* dropped by close, never run, nothing leaks */
    cr_assert_eq(runs, seen);
}

static pact_handle reref_h;
static int reref_runs;
static void reref_tick(pact_loop *loop, void *user)
{
    (void)user;
    reref_runs++;
    if (reref_runs == 1)
        cr_assert_eq(pact_handle_set_ref(loop, reref_h, 1), 0);
    if (reref_runs == 3)
        cr_assert_eq(pact_handle_cancel(loop, reref_h), 0);
}

Test(ref, a_timer_referenced_again_from_its_callback_keeps_the_loop_alive)
{
    pact_loop *loop = test_loop_new();
    reref_runs = 0;
    reref_h = pact_call_every(loop, 2 * MS, reref_tick, NULL);
    pact_handle_set_ref(loop, reref_h, 0);
    int other = 0;
    pact_call_later(loop, 3 * MS, count, &other); /* alive until run 1 */
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(other, 1);
    cr_assert_eq(reref_runs, 3, "referenced from run 1 on: ran until cancelled");
    cr_assert_eq(pact_loop_alive(loop), 0);
    test_loop_free(loop);
}

Test(ref, a_one_shot_timer_unreferenced_then_referenced_runs)
{
    pact_loop *loop = test_loop_new();
    int runs = 0;
    pact_handle h = pact_call_later(loop, 2 * MS, count, &runs);
    cr_assert_eq(pact_handle_set_ref(loop, h, 0), 0);
    pact_loop_run(loop);
    cr_assert_eq(runs, 0);
    cr_assert_eq(pact_handle_set_ref(loop, h, 1), 0);
    pact_loop_run(loop);
    cr_assert_eq(runs, 1);
    cr_assert_eq(pact_handle_set_ref(loop, h, 0), -ENOENT, "stale after it ran");
    pact_handle soon = pact_call_soon(loop, count, &runs);
    cr_assert_eq(pact_handle_set_ref(loop, soon, 0), -EINVAL);
    cr_assert_eq(pact_handle_set_ref(NULL, h, 0), -EINVAL);
    pact_loop_run(loop);
    test_loop_free(loop);
}

static struct {
    int calls;
    int64_t result;
    int more_seen;
} rx;
static void on_recv(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)user;
    rx.calls++;
    rx.result = c->result;
}

Test(ref, an_unreferenced_op_stays_in_flight_and_completes_once_at_close)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    memset(&rx, 0, sizeof rx);
    char buf[16];
    pact_op op = pact_recv(loop, sv[0], buf, sizeof buf, 0, on_recv, NULL);
    cr_assert_gt(op, 0);
    cr_assert_eq(pact_op_set_ref(loop, op, 0), 0);
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(rx.calls, 0);
    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    cr_assert_eq(st.ops_live, 1, "still in flight");
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(rx.calls, 1, "exactly once, at close");
    cr_assert_eq(rx.result, -ECANCELED);
    pact_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(ref, an_op_referenced_again_keeps_the_loop_until_it_completes)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    memset(&rx, 0, sizeof rx);
    char buf[16];
    pact_op op = pact_recv(loop, sv[0], buf, sizeof buf, 0, on_recv, NULL);
    cr_assert_eq(pact_op_set_ref(loop, op, 0), 0);
    pact_loop_run(loop);
    cr_assert_eq(rx.calls, 0);
    cr_assert_eq(pact_op_set_ref(loop, op, 1), 0);
    cr_assert_eq(pact_op_set_ref(loop, op, 1), 0, "twice is harmless");
    cr_assert_eq(pact_loop_alive(loop), 1);
    cr_assert_eq(write(sv[1], "ping", 4), 4);
    pact_loop_run(loop);
    cr_assert_eq(rx.calls, 1);
    cr_assert_eq(rx.result, 4);
    cr_assert_eq(pact_op_set_ref(loop, op, 0), -ENOENT, "completed");
    pact_handle timer = pact_call_later(loop, MS, count, &rx.more_seen);
    cr_assert_eq(pact_op_set_ref(loop, timer, 0), -ENOENT, "not an op");
    cr_assert_eq(pact_handle_cancel(loop, timer), 0);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

static void cancel_unref_op(pact_loop *loop, void *user)
{
    cr_assert_eq(pact_op_cancel(loop, *(pact_op *)user), 0);
}

Test(ref, an_unreferenced_op_cancelled_while_other_work_runs_completes_once)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    memset(&rx, 0, sizeof rx);
    char buf[16];
    pact_op op = pact_recv(loop, sv[0], buf, sizeof buf, 0, on_recv, NULL);
    pact_op_set_ref(loop, op, 0);
    pact_call_later(loop, 2 * MS, cancel_unref_op, &op);
    int other = 0;
    pact_call_later(loop, 20 * MS, count, &other);
    pact_loop_run(loop);
    cr_assert_eq(rx.calls, 1);
    cr_assert_eq(rx.result, -ECANCELED);
    cr_assert_eq(pact_loop_alive(loop), 0);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

static pact_signal sig_h;
static int sig_seen;
static void on_usr1(pact_loop *loop, int signo, void *user)
{
    (void)user;
    cr_assert_eq(signo, SIGUSR1);
    sig_seen++;
    cr_assert_eq(pact_signal_cancel(loop, sig_h), 0);
}

static void send_usr1(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    cr_assert_eq(raise(SIGUSR1), 0);
}

Test(ref, a_referenced_signal_handler_keeps_the_loop_until_removed)
{
    pact_loop *loop = test_loop_new();
    sig_seen = 0;
    sig_h = pact_signal_add(loop, SIGUSR1, on_usr1, NULL);
    cr_assert_gt(sig_h, 0);
    cr_assert_eq(pact_loop_alive(loop), 0, "not by default");
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(sig_seen, 0);
    cr_assert_eq(pact_signal_set_ref(loop, sig_h, 1), 0);
    cr_assert_eq(pact_signal_set_ref(loop, sig_h, 1), 0, "twice is harmless");
    cr_assert_eq(pact_loop_alive(loop), 1);
    pact_call_later(loop, 5 * MS, send_usr1, NULL);
    cr_assert_eq(pact_loop_run(loop), 0, "returns once the handler removed itself");
    cr_assert_eq(sig_seen, 1);
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_signal_set_ref(loop, sig_h, 1), -ENOENT, "removed");
    test_loop_free(loop);
}

Test(ref, a_referenced_signal_handler_unreferenced_again_and_closed)
{
    pact_loop *loop = test_loop_new();
    pact_signal s = pact_signal_add(loop, SIGUSR2, on_usr1, NULL);
    cr_assert_eq(pact_signal_set_ref(loop, s, 1), 0);
    cr_assert_eq(pact_loop_alive(loop), 1);
    cr_assert_eq(pact_signal_set_ref(loop, s, 0), 0);
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_signal_set_ref(loop, s, 1), 0);
    cr_assert_eq(pact_signal_set_ref(loop, 999, 1), -ENOENT);
    test_loop_free(loop); /* close removes a referenced handler too */
}
