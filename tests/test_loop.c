/* SPDX-License-Identifier: MIT */
/* The loop: scheduled callbacks, timers, run / stop / close, misuse, and
 * the choice of engine (including the fallback when io_uring is refused). */
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "helpers.h"
#include "kernel_features.h"

TestSuite(loop, .timeout = 30);

static int order[64];
static int norder;
static void record(pact_loop *loop, void *user)
{
    (void)loop;
    order[norder++] = (int)(intptr_t)user;
}

Test(loop, call_soon_runs_in_fifo_order)
{
    pact_loop *loop = test_loop_new();
    norder = 0;
    for (int i = 0; i < 10; i++)
        cr_assert_gt(pact_call_soon(loop, record, (void *)(intptr_t)i), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(norder, 10);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(order[i], i);
    test_loop_free(loop);
}

static void reschedule(pact_loop *loop, void *user)
{
    (void)user;
    order[norder++] = 100;
    pact_call_soon(loop, record, (void *)(intptr_t)101);
}

Test(loop, call_soon_from_a_callback_waits_for_the_next_iteration)
{
    pact_loop *loop = test_loop_new();
    norder = 0;
    pact_call_soon(loop, reschedule, NULL);
    pact_call_soon(loop, record, (void *)(intptr_t)1);
    cr_assert_eq(pact_loop_run_once(loop, 0), 1);
    cr_assert_eq(norder, 2);
    cr_assert_eq(order[0], 100);
    cr_assert_eq(order[1], 1);
    pact_loop_run(loop);
    cr_assert_eq(order[2], 101);
    test_loop_free(loop);
}

static uint64_t fired_at[64];
static uint64_t due_at[64];
static void timer_record(pact_loop *loop, void *user)
{
    (void)loop;
    int i = (int)(intptr_t)user;
    fired_at[i] = pact_now();
    order[norder++] = i;
}

Test(loop, timers_are_never_early_and_fire_in_order)
{
    pact_loop *loop = test_loop_new();
    norder = 0;
    /* Delays out of order, two equal ones that must keep their order. */
    uint64_t delays_ms[] = {30, 5, 20, 20, 1, 10};
    int n = sizeof delays_ms / sizeof delays_ms[0];
    for (int i = 0; i < n; i++) {
        due_at[i] = pact_now() + delays_ms[i] * MS;
        cr_assert_gt(pact_call_later(loop, delays_ms[i] * MS, timer_record,
                                     (void *)(intptr_t)i), 0);
    }
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(norder, n);
    int expected[] = {4, 1, 5, 2, 3, 0};
    for (int i = 0; i < n; i++) {
        cr_expect_eq(order[i], expected[i], "position %d: %d", i, order[i]);
        cr_expect_geq(fired_at[i], due_at[i], "timer %d fired %lld ns early", i,
                      (long long)(due_at[i] - fired_at[i]));
    }
    test_loop_free(loop);
}

Test(loop, call_at_in_the_past_runs_at_once)
{
    pact_loop *loop = test_loop_new();
    norder = 0;
    pact_call_at(loop, 1, record, (void *)(intptr_t)7);
    pact_loop_run(loop);
    cr_assert_eq(norder, 1);
    test_loop_free(loop);
}

Test(loop, cancelled_handles_never_run_and_stale_cancel_is_enoent)
{
    pact_loop *loop = test_loop_new();
    norder = 0;
    pact_handle soon = pact_call_soon(loop, record, (void *)(intptr_t)1);
    pact_handle later = pact_call_later(loop, 5 * MS, record, (void *)(intptr_t)2);
    pact_handle kept = pact_call_later(loop, 1 * MS, record, (void *)(intptr_t)3);
    cr_assert_eq(pact_handle_cancel(loop, soon), 0);
    cr_assert_eq(pact_handle_cancel(loop, later), 0);
    cr_assert_eq(pact_handle_cancel(loop, later), -ENOENT, "cancel twice");
    pact_loop_run(loop);
    cr_assert_eq(norder, 1);
    cr_assert_eq(order[0], 3);
    cr_assert_eq(pact_handle_cancel(loop, kept), -ENOENT, "after it ran");
    cr_assert_eq(pact_handle_cancel(loop, 0), -ENOENT);
    cr_assert_eq(pact_handle_cancel(loop, -5), -ENOENT);
    cr_assert_eq(pact_handle_cancel(loop, 0x7fffffff00000001ll), -ENOENT);
    test_loop_free(loop);
}

static pact_handle self_handle;
static int self_cancel_result;
static void cancel_self(pact_loop *loop, void *user)
{
    (void)user;
    self_cancel_result = pact_handle_cancel(loop, self_handle);
}

Test(loop, cancelling_a_running_handle_is_ealready)
{
    pact_loop *loop = test_loop_new();
    self_handle = pact_call_soon(loop, cancel_self, NULL);
    pact_loop_run(loop);
    cr_assert_eq(self_cancel_result, -EALREADY);
    test_loop_free(loop);
}

static void stop_loop(pact_loop *loop, void *user)
{
    (void)user;
    pact_loop_stop(loop);
    /* Scheduled here, not beside the stop: a timer set before the run may
     * already be due when a loaded machine gets to the first iteration,
     * and due timers run before ready callbacks. Set now, it cannot run
     * in this iteration, so the stop always comes first. */
    pact_call_later(loop, 2 * MS, record, (void *)(intptr_t)1);
}

Test(loop, stop_returns_from_run_and_run_resumes)
{
    pact_loop *loop = test_loop_new();
    norder = 0;
    pact_call_soon(loop, stop_loop, NULL);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(norder, 0, "stopped before the timer");
    cr_assert(pact_loop_alive(loop));
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(norder, 1);
    cr_assert(!pact_loop_alive(loop));
    test_loop_free(loop);
}

static int nested_result;
static void run_nested(pact_loop *loop, void *user)
{
    pact_loop *other = user;
    nested_result = pact_loop_run(loop);
    cr_assert_eq(pact_loop_close(loop), -EBUSY, "close while running");
    if (other)
        nested_result = pact_loop_run(other) == -EBUSY ? -EBUSY : 0;
}

Test(loop, running_inside_a_callback_is_refused)
{
    pact_loop *loop = test_loop_new();
    pact_call_soon(loop, run_nested, NULL);
    pact_loop_run(loop);
    cr_assert_eq(nested_result, -EBUSY);

    pact_loop *other = test_loop_new();
    pact_call_soon(loop, run_nested, other);
    pact_loop_run(loop);
    cr_assert_eq(nested_result, -EBUSY, "one loop per thread");
    test_loop_free(other);
    test_loop_free(loop);
}

static void noop(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
}

static void noop_op(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)c;
    (void)user;
}

Test(loop, misuse_gets_negative_errno_not_a_crash)
{
    cr_assert_eq(pact_loop_create(NULL, NULL), -EINVAL);
    pact_loop_options bad;
    pact_loop_options_init(&bad);
    bad.engine = (pact_engine_kind)42;
    pact_loop *l;
    cr_assert_eq(pact_loop_create(&l, &bad), -EINVAL);

    cr_assert_eq(pact_loop_run(NULL), -EINVAL);
    cr_assert_eq(pact_loop_run_once(NULL, 0), -EINVAL);
    cr_assert_eq(pact_loop_stop(NULL), -EINVAL);
    cr_assert_eq(pact_loop_close(NULL), -EINVAL);
    cr_assert_lt(pact_call_soon(NULL, noop, NULL), 0);
    cr_assert_lt(pact_recv(NULL, 0, NULL, 0, 0, noop_op, NULL), 0);
    cr_assert_eq(pact_op_cancel(NULL, 1), -EINVAL);
    pact_loop_free(NULL);

    pact_loop *loop = test_loop_new();
    cr_assert_eq(pact_call_soon(loop, NULL, NULL), -EINVAL);
    char buf[4];
    cr_assert_eq(pact_recv(loop, -1, buf, 4, 0, noop_op, NULL), -EBADF);
    cr_assert_eq(pact_recv(loop, 0, NULL, 4, 0, noop_op, NULL), -EFAULT);
    cr_assert_eq(pact_recv(loop, 0, buf, 4, 0, NULL, NULL), -EINVAL);
    cr_assert_eq(pact_read(loop, 0, buf, 4, -7, noop_op, NULL), -EINVAL);
    cr_assert_eq(pact_shutdown(loop, 0, 99, noop_op, NULL), -EINVAL);
    cr_assert_eq(pact_poll(loop, 0, 0, noop_op, NULL), -EINVAL);
    cr_assert_eq(pact_connect(loop, 0, NULL, 0, noop_op, NULL), -EINVAL);
    cr_assert_eq(pact_op_cancel(loop, 12345), -ENOENT);
    cr_assert_eq(pact_op_set_timeout(loop, 12345, MS), -ENOENT);

    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(pact_loop_close(loop), -EBADF, "double close");
    cr_assert_eq(pact_loop_run(loop), -ESHUTDOWN);
    cr_assert_eq(pact_loop_run_once(loop, 0), -ESHUTDOWN);
    cr_assert_eq(pact_call_soon(loop, noop, NULL), -ESHUTDOWN);
    cr_assert_eq(pact_call_later(loop, 1, noop, NULL), -ESHUTDOWN);
    cr_assert_eq(pact_call_soon_threadsafe(loop, noop, NULL), -ESHUTDOWN);
    cr_assert_eq(pact_sleep(loop, 1, noop_op, NULL), -ESHUTDOWN);
    cr_assert_eq(pact_recv(loop, 0, buf, 4, 0, noop_op, NULL), -ESHUTDOWN);
    cr_assert_eq(pact_op_cancel(loop, 1), -ESHUTDOWN);
    pact_loop_free(loop);
}

typedef struct free_inside {
    int free_result;
    int close_result;
    int after;
} free_inside;

static void free_from_callback(pact_loop *loop, void *user)
{
    free_inside *f = user;
    f->free_result = pact_loop_free(loop);
    f->close_result = pact_loop_close(loop);
    /* The loop is untouched: it still schedules and runs callbacks. */
    pact_call_soon(loop, record, (void *)(intptr_t)7);
}

/* pact_loop_free() from inside one of the loop's callbacks would free
 * memory the loop's own code is still using: it is refused with -EBUSY
 * and changes nothing; the loop is freed once run has returned. */
Test(loop, free_from_inside_a_callback_is_ebusy_and_changes_nothing)
{
    pact_loop *loop = test_loop_new();
    free_inside f = {0};
    norder = 0;
    cr_assert_gt(pact_call_soon(loop, free_from_callback, &f), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(f.free_result, -EBUSY);
    cr_assert_eq(f.close_result, -EBUSY);
    cr_assert_eq(norder, 1, "the loop ran on after the refused free");
    cr_assert_eq(order[0], 7);
    cr_assert_eq(pact_loop_free(loop), 0);
    cr_assert_eq(pact_loop_free(NULL), 0);
}

static void block_the_loop(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    usleep(120 * 1000); /* over the 100 ms that make a callback slow */
}

static void block_the_loop_op(pact_loop *loop, const pact_completion *c,
                              void *user)
{
    (void)c;
    block_the_loop(loop, user);
}

/* Counts the slow callbacks of each kind (ready, timer, threadsafe, op)
 * on a loop in debug mode or not. */
static uint64_t slow_callbacks_seen(int debug)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.debug = debug;
    pact_loop *loop;
    cr_assert_eq(pact_loop_create(&loop, &o), 0);
    cr_assert_gt(pact_call_soon(loop, block_the_loop, NULL), 0);
    cr_assert_gt(pact_call_later(loop, 1, block_the_loop, NULL), 0);
    cr_assert_eq(pact_call_soon_threadsafe(loop, block_the_loop, NULL), 0);
    cr_assert_gt(pact_sleep(loop, 1, block_the_loop_op, NULL), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    cr_assert_eq(pact_loop_free(loop), 0);
    return st.slow_callbacks;
}

/* In debug mode every kind of callback that blocks the loop is counted
 * (and logged); outside debug mode nothing is timed. */
Test(loop, slow_callbacks_of_every_kind_are_counted_in_debug_mode)
{
    cr_assert_eq(slow_callbacks_seen(1), 4);
    cr_assert_eq(slow_callbacks_seen(0), 0);
}

static void count_up(pact_loop *loop, void *user)
{
    (void)loop;
    (*(int *)user)++;
}

/* What pact.h promises for threadsafe callbacks and close: accepted ones
 * that have not run when close begins are dropped, never run, not even
 * later; from close on, new ones are refused. */
Test(loop, threadsafe_callbacks_accepted_before_close_are_dropped)
{
    pact_loop *loop = test_loop_new();
    int ran = 0;
    cr_assert_eq(pact_call_soon_threadsafe(loop, count_up, &ran), 0);
    cr_assert_eq(pact_call_soon_threadsafe(loop, count_up, &ran), 0);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(ran, 0);
    cr_assert_eq(pact_call_soon_threadsafe(loop, count_up, &ran), -ESHUTDOWN);
    cr_assert_eq(pact_loop_free(loop), 0);
    cr_assert_eq(ran, 0);
}

Test(loop, close_drops_unrun_callbacks_and_timers)
{
    pact_loop *loop = test_loop_new();
    norder = 0;
    pact_call_soon(loop, record, (void *)(intptr_t)1);
    pact_call_later(loop, 1000 * MS, record, (void *)(intptr_t)2);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(norder, 0);
    pact_loop_free(loop);
}

static int error_seen;
static void on_error(pact_loop *loop, int err, const char *msg, void *user)
{
    (void)loop;
    (void)user;
    error_seen = err;
    cr_assert_str_eq(msg, "callback failed: 42");
}

static void failing_callback(pact_loop *loop, void *user)
{
    (void)user;
    pact_loop_report_error(loop, -EIO, "callback failed: %d", 42);
}

Test(loop, error_hook_receives_callback_failures)
{
    pact_loop *loop = test_loop_new();
    pact_loop_set_error_handler(loop, on_error, NULL);
    pact_call_soon(loop, failing_callback, NULL);
    pact_loop_run(loop);
    cr_assert_eq(error_seen, -EIO);
    test_loop_free(loop);
}

Test(loop, run_once_waits_at_most_its_timeout)
{
    pact_loop *loop = test_loop_new();
    pact_call_later(loop, 10000 * MS, noop, NULL);
    uint64_t t0 = pact_now();
    cr_assert_eq(pact_loop_run_once(loop, 20 * (int64_t)MS), 1);
    uint64_t took = pact_now() - t0;
    cr_assert_geq(took, 19 * MS);
    cr_assert_lt(took, 5000 * MS);
    test_loop_free(loop);
}

/* Wait hooks: what a binding's global lock (Python's GIL) relies on. */
static struct {
    int before, after, inside, nested, ran_inside;
    int64_t last_timeout;
    int set_from_callback;
} hooks;

static void hook_before(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    cr_assert_eq(user, &hooks);
    if (hooks.inside)
        hooks.nested++;
    hooks.inside = 1;
    hooks.before++;
    hooks.last_timeout = timeout_ns;
}

static void hook_after(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    (void)user;
    cr_assert_eq(timeout_ns, hooks.last_timeout);
    hooks.inside = 0;
    hooks.after++;
}

static void hooked_timer(pact_loop *loop, void *user)
{
    (void)user;
    if (hooks.inside)
        hooks.ran_inside++;
    hooks.set_from_callback =
        pact_loop_set_wait_hooks(loop, hook_before, hook_after, &hooks);
}

Test(loop, wait_hooks_wrap_every_wait_in_pairs)
{
    memset(&hooks, 0, sizeof hooks);
    pact_loop *loop = test_loop_new();
    cr_assert_eq(pact_loop_set_wait_hooks(loop, hook_before, NULL, &hooks),
                 -EINVAL);
    cr_assert_eq(pact_loop_set_wait_hooks(loop, NULL, hook_after, &hooks),
                 -EINVAL);
    cr_assert_eq(pact_loop_set_wait_hooks(loop, hook_before, hook_after,
                                          &hooks), 0);
    /* t0 before scheduling: the timer promises 20 ms from its scheduling,
     * and a preemption between the two calls must not count against it. */
    uint64_t t0 = pact_now();
    pact_call_later(loop, 20 * MS, hooked_timer, NULL);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_geq(pact_now() - t0, 20 * MS);
    cr_assert_geq(hooks.before, 1);
    cr_assert_eq(hooks.before, hooks.after);
    cr_assert_eq(hooks.nested, 0);
    cr_assert_eq(hooks.ran_inside, 0, "a callback ran between the hooks");
    cr_assert_eq(hooks.set_from_callback, -EBUSY);
    pact_loop_set_wait_hooks(loop, NULL, NULL, NULL);
    int before = hooks.before;
    pact_call_soon(loop, noop, NULL);
    pact_loop_run(loop);
    cr_assert_eq(hooks.before, before, "removed hooks were still called");
    test_loop_free(loop);
}

static int hooked_fds[2];
static char hooked_buf[8];
static int hooked_recv_done;

static void hooked_recv(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)user;
    cr_assert_eq(c->result, 1);
    if (hooks.inside)
        hooks.ran_inside++;
    hooked_recv_done = 1;
}

static void hooked_send(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    cr_assert_eq(write(hooked_fds[1], "x", 1), 1);
}

/* Engines handle kernel completions inside their wait: the hooks wrap the
 * system call only, so an op's callback runs after the after hook. */
Test(loop, wait_hooks_never_wrap_an_op_callback)
{
    memset(&hooks, 0, sizeof hooks);
    hooked_recv_done = 0;
    pact_loop *loop = test_loop_new();
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, hooked_fds), 0);
    cr_assert_eq(pact_loop_set_wait_hooks(loop, hook_before, hook_after,
                                          &hooks), 0);
    cr_assert_gt(pact_recv(loop, hooked_fds[0], hooked_buf, sizeof hooked_buf,
                           0, hooked_recv, NULL), 0);
    pact_call_later(loop, 20 * MS, hooked_send, NULL);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert(hooked_recv_done);
    cr_assert_geq(hooks.before, 1);
    cr_assert_eq(hooks.before, hooks.after);
    cr_assert_eq(hooks.ran_inside, 0, "an op callback ran between the hooks");
    close(hooked_fds[0]);
    close(hooked_fds[1]);
    test_loop_free(loop);
}

static void hooked_wait_timeout(pact_loop *loop, int64_t timeout_ns,
                                void *user)
{
    (void)loop;
    int64_t *longest = user;
    if (timeout_ns > *longest)
        *longest = timeout_ns;
}

Test(loop, wait_hooks_see_the_timeout_of_a_blocking_wait)
{
    pact_loop *loop = test_loop_new();
    int64_t longest = 0;
    cr_assert_eq(pact_loop_set_wait_hooks(loop, hooked_wait_timeout,
                                          hooked_wait_timeout, &longest), 0);
    pact_call_later(loop, 30 * MS, noop, NULL);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_gt(longest, 0);
    cr_assert_leq(longest, (int64_t)(30 * MS));
    test_loop_free(loop);
}

/* The hooks wrap a poll that does not block too, and the after hook comes
 * between the poll and the completions it found: a binding runs there what
 * it had queued before the wait (asyncio runs its ready handles before the
 * I/O callbacks of the same select), so it may call pact functions. */
static struct {
    int written, recv_done, zero_polls;
    int after_saw_data_undelivered, from_hook_ran;
} poll_hooks;

static void poll_hook_before(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    (void)user;
    if (timeout_ns == 0)
        poll_hooks.zero_polls++;
}

static void poll_hook_ran(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    poll_hooks.from_hook_ran = 1;
}

static void poll_hook_after(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)user;
    if (timeout_ns == 0 && poll_hooks.written && !poll_hooks.recv_done &&
        !poll_hooks.after_saw_data_undelivered) {
        poll_hooks.after_saw_data_undelivered = 1;
        cr_assert_gt(pact_call_soon(loop, poll_hook_ran, NULL), 0);
    }
}

static void poll_hook_recv(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)user;
    cr_assert_eq(c->result, 1);
    poll_hooks.recv_done = 1;
}

Test(loop, wait_hooks_wrap_a_poll_and_come_before_its_completions)
{
    memset(&poll_hooks, 0, sizeof poll_hooks);
    pact_loop *loop = test_loop_new();
    int fds[2];
    char buf[8];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    cr_assert_eq(pact_loop_set_wait_hooks(loop, poll_hook_before,
                                          poll_hook_after, NULL), 0);
    cr_assert_gt(pact_recv(loop, fds[0], buf, sizeof buf, 0, poll_hook_recv,
                           NULL), 0);
    /* Submitted (on epoll: tried, nothing to read, watched). */
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert_eq(poll_hooks.recv_done, 0);
    cr_assert_eq(write(fds[1], "x", 1), 1);
    poll_hooks.written = 1;
    for (int i = 0; i < 100 && !poll_hooks.recv_done; i++)
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert(poll_hooks.recv_done);
    cr_assert_gt(poll_hooks.zero_polls, 0, "a poll was not wrapped");
    cr_assert(poll_hooks.after_saw_data_undelivered,
              "the completion ran before the after hook of its poll");
    cr_assert(poll_hooks.from_hook_ran, "pact_call_soon from the hook");
    pact_loop_set_wait_hooks(loop, NULL, NULL, NULL);
    close(fds[0]);
    close(fds[1]);
    test_loop_free(loop);
}

/* A completion an engine has at submission (the epoll engine tries the
 * receive right there and finds the byte) comes after the after hook too:
 * what a binding runs there was queued before the op's callback could be. */
static struct {
    int afters, afters_before_iteration, recv_done, hook_came_first;
} submit_hooks;

static void submit_hook_before(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    (void)timeout_ns;
    (void)user;
}

static void submit_hook_after(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    (void)timeout_ns;
    (void)user;
    submit_hooks.afters++;
}

static void submit_hook_recv(pact_loop *loop, const pact_completion *c,
                             void *user)
{
    (void)loop;
    (void)user;
    cr_assert_eq(c->result, 1);
    submit_hooks.recv_done++;
    submit_hooks.hook_came_first =
        submit_hooks.afters > submit_hooks.afters_before_iteration;
}

Test(loop, wait_hooks_come_before_a_completion_known_at_submission)
{
    memset(&submit_hooks, 0, sizeof submit_hooks);
    pact_loop *loop = test_loop_new();
    int fds[2];
    char buf[8];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    cr_assert_eq(write(fds[1], "x", 1), 1);
    cr_assert_eq(pact_loop_set_wait_hooks(loop, submit_hook_before,
                                          submit_hook_after, NULL), 0);
    cr_assert_gt(pact_recv(loop, fds[0], buf, sizeof buf, 0, submit_hook_recv,
                           NULL), 0);
    for (int i = 0; i < 100 && !submit_hooks.recv_done; i++) {
        submit_hooks.afters_before_iteration = submit_hooks.afters;
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    }
    cr_assert_eq(submit_hooks.recv_done, 1);
    cr_assert(submit_hooks.hook_came_first,
              "the completion ran before its iteration's after hook");
    pact_loop_set_wait_hooks(loop, NULL, NULL, NULL);
    close(fds[0]);
    close(fds[1]);
    test_loop_free(loop);
}

/* Held for the after hook, a completion known at submission still comes
 * before what the wait finds on the same fd: a one-shot receive takes the
 * byte that waits, a multishot receive behind it gets the one the peer
 * writes just before the wait (from the before hook), and the stream's
 * bytes reach their callbacks in order. */
static struct {
    int fd, written;
    char seen[8];
    int nseen;
} behind_hooks;

static void behind_hook_before(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    (void)timeout_ns;
    (void)user;
    if (!behind_hooks.written) {
        behind_hooks.written = 1;
        cr_assert_eq(write(behind_hooks.fd, "b", 1), 1);
    }
}

static void behind_hook_after(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    (void)timeout_ns;
    (void)user;
}

static void behind_hook_recv(pact_loop *loop, const pact_completion *c,
                             void *user)
{
    (void)loop;
    const char *buf = user ? user : c->data;
    for (int64_t i = 0; i < c->result && behind_hooks.nseen < 7; i++)
        behind_hooks.seen[behind_hooks.nseen++] = buf[i];
}

Test(loop, wait_hooks_keep_a_stream_in_order_behind_a_completion_known_at_submission)
{
    memset(&behind_hooks, 0, sizeof behind_hooks);
    pact_loop *loop = test_loop_new();
    int fds[2];
    char buf[1];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    behind_hooks.fd = fds[1];
    cr_assert_eq(write(fds[1], "a", 1), 1);
    cr_assert_eq(pact_loop_set_wait_hooks(loop, behind_hook_before,
                                          behind_hook_after, NULL), 0);
    cr_assert_gt(pact_recv(loop, fds[0], buf, sizeof buf, 0, behind_hook_recv,
                           buf), 0);
    pact_op multi = pact_recv_multishot(loop, fds[0], behind_hook_recv, NULL);
    cr_assert_gt(multi, 0);
    for (int i = 0; i < 100 && behind_hooks.nseen < 2; i++)
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert_str_eq(behind_hooks.seen, "ab");
    pact_op_cancel(loop, multi);
    pact_loop_set_wait_hooks(loop, NULL, NULL, NULL);
    close(fds[0]);
    close(fds[1]);
    test_loop_free(loop);
}

/* A lock released only while the loop sleeps: another thread can take it
 * exactly then, and the loop's callbacks run with it held again. */
static struct {
    pthread_mutex_t lock;
    pact_loop *loop;
    int thread_got_lock;
    int callback_saw_lock_held;
    int stopped;
} gil = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void gil_release(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    (void)timeout_ns;
    (void)user;
    pthread_mutex_unlock(&gil.lock);
}

static void gil_take(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    (void)timeout_ns;
    (void)user;
    pthread_mutex_lock(&gil.lock);
}

static void gil_stop(pact_loop *loop, void *user)
{
    (void)user;
    gil.callback_saw_lock_held = pthread_mutex_trylock(&gil.lock) == EBUSY;
    gil.stopped = 1;
    pact_loop_stop(loop);
}

static void *gil_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&gil.lock);
    gil.thread_got_lock = 1;
    pact_call_soon_threadsafe(gil.loop, gil_stop, NULL);
    pthread_mutex_unlock(&gil.lock);
    return NULL;
}

Test(loop, wait_hooks_let_another_thread_take_a_lock_while_the_loop_sleeps)
{
    pact_loop *loop = test_loop_new();
    gil.loop = loop;
    cr_assert_eq(pact_loop_set_wait_hooks(loop, gil_release, gil_take, NULL), 0);
    pact_handle keep = pact_call_later(loop, 10000 * MS, noop, NULL);
    pthread_mutex_lock(&gil.lock);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, gil_thread, NULL), 0);
    uint64_t t0 = pact_now();
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_lt(pact_now() - t0, 5000 * MS);
    cr_assert(gil.stopped);
    cr_assert(gil.thread_got_lock);
    cr_assert(gil.callback_saw_lock_held,
              "a callback ran while the lock was released");
    pthread_mutex_unlock(&gil.lock);
    pthread_join(th, NULL);
    pact_handle_cancel(loop, keep);
    test_loop_free(loop);
}

Test(loop, errors_have_names_and_messages)
{
    cr_assert_str_eq(pact_err_name(-ECANCELED), "ECANCELED");
    cr_assert_str_eq(pact_err_name(-ETIMEDOUT), "ETIMEDOUT");
    cr_assert_str_eq(pact_err_name(-99999), "UNKNOWN");
    cr_assert_str_eq(pact_strerror(-99999), "unknown error");
    cr_assert_str_neq(pact_strerror(-EAGAIN), "unknown error");
}

/* Every int is a valid argument: INT_MIN cannot be negated, and positive
 * values (a caller passing errno instead of -errno) are not errors. Run
 * under UBSan (build-asan), where a negation of INT_MIN is a report. */
Test(loop, error_names_are_safe_for_every_int)
{
    static const int odd[] = {INT_MIN, INT_MIN + 1, INT_MAX, -INT_MAX, 1,
                              EAGAIN, 4096, -4096};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        cr_assert_str_eq(pact_err_name(odd[i]), "UNKNOWN", "%d", odd[i]);
        cr_assert_str_eq(pact_strerror(odd[i]), "unknown error", "%d", odd[i]);
    }
    cr_assert_str_eq(pact_err_name(0), "OK");
    cr_assert_str_eq(pact_strerror(0), "success");
}

/* ---- engine choice and fallback ------------------------------------------ */

Test(engine, the_environment_picks_the_engine)
{
    pact_loop *loop = test_loop_new();
    const char *want = getenv("PACT_ENGINE");
    cr_assert_not_null(want, "the runner sets PACT_ENGINE");
    cr_assert_str_eq(pact_loop_engine_name(loop),
                     strcmp(want, "uring") == 0 ? "io_uring" : "epoll");
    cr_assert_null(pact_loop_engine_reason(loop));
    test_loop_free(loop);
}

Test(engine, refused_io_uring_falls_back_to_epoll_with_a_reason)
{
    unsetenv("PACT_ENGINE");
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.fail_uring_setup = -EPERM;
    pact_loop *loop;
    cr_assert_eq(pact_loop_create(&loop, &o), 0);
    cr_assert_eq(pact_loop_engine(loop), PACT_ENGINE_EPOLL);
    cr_assert_not_null(pact_loop_engine_reason(loop));
    cr_assert(strstr(pact_loop_engine_reason(loop), "io_uring_setup failed") != NULL,
              "reason: %s", pact_loop_engine_reason(loop));
    pact_loop_free(loop);

    o.engine = PACT_ENGINE_URING; /* asked for explicitly: an error */
    cr_assert_eq(pact_loop_create(&loop, &o), -EPERM);
}

Test(engine, seccomp_filter_forbidding_io_uring_gives_epoll)
{
    unsetenv("PACT_ENGINE");
    /* The Docker default profile answers io_uring_setup with EPERM; do
     * the same to this test process (Criterion runs each test alone). */
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = 4, .filter = filter};
    cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    cr_assert_eq(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog), 0);

    pact_loop *loop;
    cr_assert_eq(pact_loop_create(&loop, NULL), 0);
    cr_assert_eq(pact_loop_engine(loop), PACT_ENGINE_EPOLL);
    cr_assert(strstr(pact_loop_engine_reason(loop), "Operation not permitted") != NULL,
              "reason: %s", pact_loop_engine_reason(loop));
    /* The fallback loop works. */
    norder = 0;
    pact_call_later(loop, 1 * MS, record, (void *)(intptr_t)1);
    pact_loop_run(loop);
    cr_assert_eq(norder, 1);
    pact_loop_free(loop);
}

/* pact_loop_time() in a callback of what a wait found is the time that
 * wait ended, not the time the iteration started: a thread writes
 * 50 ms after the loop went to sleep, and the receive's callback sees a
 * loop time at or after the write. */
typedef struct {
    int fd;
    uint64_t written_at;
} late_writer;

static void *write_late(void *arg)
{
    late_writer *w = arg;
    usleep(50 * 1000);
    w->written_at = pact_now();
    cr_assert_eq(write(w->fd, "x", 1), 1);
    return NULL;
}

typedef struct {
    int calls;
    uint64_t loop_time;
} timed_recv;

static void recv_timed(pact_loop *loop, const pact_completion *c, void *user)
{
    timed_recv *r = user;
    cr_assert_eq(c->result, 1);
    r->calls++;
    r->loop_time = pact_loop_time(loop);
}

Test(loop, loop_time_in_a_completion_callback_is_after_the_wait)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    char buf[4];
    timed_recv r = {0};
    cr_assert_gt(pact_recv(loop, sv[0], buf, sizeof buf, 0, recv_timed, &r), 0);
    late_writer w = {.fd = sv[1]};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, write_late, &w), 0);
    for (int turns = 0; r.calls == 0; turns++) {
        cr_assert_lt(turns, 100);
        cr_assert_geq(pact_loop_run_once(loop, 5000000000ll), 0);
    }
    pthread_join(th, NULL);
    cr_assert_geq(r.loop_time, w.written_at,
                  "pact_loop_time() %llu ns before the write that ended the wait",
                  (unsigned long long)(w.written_at - r.loop_time));
    close(sv[0]);
    close(sv[1]);
    test_loop_free(loop);
}

/* ---- how many ready completions one run hands over -------------------
 * Receives on many sockets, armed while they are empty, then data for
 * every one of them: all those completions are ready when the next run
 * looks. A run that does not block hands them all over on epoll. On
 * io_uring they wait as deferred task work (DEFER_TASKRUN), of which the
 * kernel runs a bounded number per io_uring_enter (20 on Linux 6.18):
 * the run must ask again until it has them all or its own budget, a
 * CQ's worth per wait (engine_uring.c, uring_wait), is spent. What is
 * beyond the budget comes with the next run, which does not block for
 * it. */
enum { READY_SOCKETS = 64 };

typedef struct {
    int sv[READY_SOCKETS][2];
    char buf[READY_SOCKETS][8];
    int delivered;
} ready_receives;

static void ready_recv_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    cr_assert_eq(c->result, 1);
    ((ready_receives *)user)->delivered++;
}

static pact_loop *ready_receives_start(ready_receives *rr, unsigned queue_depth)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.queue_depth = queue_depth;
    pact_loop *loop = test_loop_create_with(&o);
    memset(rr, 0, sizeof *rr);
    for (int i = 0; i < READY_SOCKETS; i++) {
        make_socketpair(rr->sv[i]);
        cr_assert_gt(pact_recv(loop, rr->sv[i][0], rr->buf[i], sizeof rr->buf[i], 0,
                               ready_recv_done, rr), 0);
    }
    cr_assert_eq(pact_loop_run_once(loop, 0), 1); /* armed, nothing to read */
    cr_assert_eq(rr->delivered, 0);
    for (int i = 0; i < READY_SOCKETS; i++)
        cr_assert_eq(write(rr->sv[i][1], "x", 1), 1);
    return loop;
}

static void ready_receives_free(pact_loop *loop, ready_receives *rr)
{
    test_loop_free(loop);
    for (int i = 0; i < READY_SOCKETS; i++) {
        close(rr->sv[i][0]);
        close(rr->sv[i][1]);
    }
}

Test(loop, a_run_that_does_not_block_hands_over_every_ready_completion)
{
    ready_receives rr;
    pact_loop *loop = ready_receives_start(&rr, 0); /* budget 1024 */
    int alive = pact_loop_run_once(loop, 0);
    cr_assert_eq(rr.delivered, READY_SOCKETS, "%d of %d delivered by one run",
                 rr.delivered, READY_SOCKETS);
    cr_assert_eq(alive, 0);
    ready_receives_free(loop, &rr);
}

/* A wait that slept: the kernel runs only as many deferred task work
 * items as the wait asked completions for (one) when it wakes the loop,
 * and leaves what came meanwhile pending. That is the next run's, as the
 * readiness that comes after an epoll wait is the next wait's, and the
 * next run does not sleep for it: a run that went back to the kernel for
 * it took every request a busy peer sent while the batch was handed over
 * and answered none of them before the last (engine_uring.c,
 * work_left_by_the_kernel). Two polls on one socket (through two fds) are
 * woken by one write, inside one walk of the socket's wait queue, with
 * the writer and the loop on one CPU: the loop cannot run between the
 * two wake-ups, so both are pending when the kernel wakes it. io_uring
 * with DEFER_TASKRUN only: without it the kernel runs all task work as
 * the loop returns to user space, and epoll hands both over in one wait. */
typedef struct {
    int fd;
    pid_t waiter;
    int slept;     /* the writer saw the loop asleep */
    ssize_t wrote; /* its write(2) */
} write_when_asleep;

/* Whether thread tid sleeps in io_uring_enter (426 on x86-64 and
 * aarch64: the generic system call table). */
static int sleeps_in_io_uring_enter(pid_t tid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    if (!paren || paren[1] != ' ' || paren[2] != 'S')
        return 0;
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    int nr = -1;
    int ok = fscanf(f, "%d", &nr) == 1;
    fclose(f);
    return ok && nr == SYS_io_uring_enter;
}

static void *write_once_the_loop_sleeps(void *arg)
{
    /* Criterion's asserts belong to the test's thread: report, the test
     * checks. */
    write_when_asleep *w = arg;
    for (int i = 0; i < 10000 && !sleeps_in_io_uring_enter(w->waiter); i++)
        usleep(1000);
    w->slept = sleeps_in_io_uring_enter(w->waiter);
    w->wrote = write(w->fd, "x", 1);
    return NULL;
}

static void count_poll(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    cr_assert_gt(c->result, 0);
    (*(int *)user)++;
}

/* Two readiness waits; a writer makes both ready while the loop sleeps in
 * a run that hands over one. The next run, with next_timeout_ns, must
 * hand over the other at once. */
static void slept_then_next_run(int64_t next_timeout_ns)
{
    pact_loop *loop = test_loop_new();
    if (pact_loop_engine(loop) != PACT_ENGINE_URING || uring_feature_masked("setup")) {
        test_loop_free(loop);
        cr_skip_test("io_uring with DEFER_TASKRUN only");
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    cr_assert_eq(sched_setaffinity(0, sizeof one, &one), 0);
    int sv[2];
    make_socketpair(sv);
    int again = dup(sv[0]);
    cr_assert_geq(again, 0);
    int polled = 0;
    cr_assert_gt(pact_poll(loop, sv[0], POLLIN, count_poll, &polled), 0);
    cr_assert_gt(pact_poll(loop, again, POLLIN, count_poll, &polled), 0);
    cr_assert_eq(pact_loop_run_once(loop, 0), 1); /* armed, nothing ready */
    cr_assert_eq(polled, 0);
    write_when_asleep w = {.fd = sv[1], .waiter = (pid_t)syscall(SYS_gettid)};
    pthread_t writer;
    pthread_attr_t attr;
    cr_assert_eq(pthread_attr_init(&attr), 0);
    cr_assert_eq(pthread_attr_setaffinity_np(&attr, sizeof one, &one), 0);
    cr_assert_eq(pthread_create(&writer, &attr, write_once_the_loop_sleeps, &w), 0);
    pthread_attr_destroy(&attr);
    cr_assert_geq(pact_loop_run_once(loop, 20000 * (int64_t)MS), 0);
    cr_assert_eq(pthread_join(writer, NULL), 0);
    cr_assert(w.slept, "the loop never slept");
    cr_assert_eq(w.wrote, 1);
    cr_assert_eq(polled, 1, "the run that slept handed over %d", polled);
    uint64_t t0 = pact_now();
    cr_assert_eq(pact_loop_run_once(loop, next_timeout_ns), 0);
    cr_assert_lt(pact_now() - t0, 1000 * MS, "the next run slept for it");
    cr_assert_eq(polled, 2, "the next run (timeout %lld ns) handed over %d",
                 (long long)next_timeout_ns, polled - 1);
    test_loop_free(loop);
    close(again);
    close(sv[0]);
    close(sv[1]);
}

Test(loop, a_wait_that_slept_leaves_what_came_meanwhile_to_the_next_run)
{
    slept_then_next_run(5000 * (int64_t)MS);
}

/* A run that does not block (asyncio's, with handles ready) looks at the
 * kernel too: the work the wait left is flagged (IORING_SQ_TASKRUN), so
 * its turn without a system call (uring_wait) is not taken. */
Test(loop, a_run_that_does_not_block_hands_over_what_a_wait_that_slept_left)
{
    slept_then_next_run(0);
}

Test(loop, completions_beyond_a_runs_budget_come_with_the_next_run_at_once)
{
    ready_receives rr;
    /* The smallest ring: its CQ holds 8, a wait hands over 8 (io_uring). */
    pact_loop *loop = ready_receives_start(&rr, 2);
    int runs = 0;
    while (rr.delivered < READY_SOCKETS) {
        cr_assert_lt(runs, READY_SOCKETS / 8, "%d delivered after %d runs",
                     rr.delivered, runs);
        int before = rr.delivered;
        uint64_t t0 = pact_now();
        cr_assert_geq(pact_loop_run_once(loop, 5000 * (int64_t)MS), 0);
        cr_assert_lt(pact_now() - t0, 1000 * MS, "a run blocked with completions owed");
        cr_assert_geq(rr.delivered - before,
                      READY_SOCKETS - before < 8 ? READY_SOCKETS - before : 8,
                      "run %d handed over %d", runs, rr.delivered - before);
        runs++;
    }
    ready_receives_free(loop, &rr);
}
