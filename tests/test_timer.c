/* SPDX-License-Identifier: MIT */
/* Repeating timers (pact_call_every, pact_handle_set_interval,
 * pact_handle_due): ticks on the grid of the first deadline, never early,
 * missed ticks skipped rather than run in a burst, cancel and interval
 * changes from inside the timer's own callback, close with one pending. */
#include <stdint.h>
#include <time.h>

#include "helpers.h"

#define MAX_TICKS 64

static struct {
    pact_handle h;
    int runs;
    int stop_after;          /* cancel itself on this run */
    int block_on;            /* run that sleeps block_ns (0 = none) */
    uint64_t block_ns;
    uint64_t block_end;
    int64_t due[MAX_TICKS];  /* pact_handle_due() inside each run */
    uint64_t fired[MAX_TICKS];
    int cancel_result, cancel_again, set_after_cancel;
} tk;

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void tick(pact_loop *loop, void *user)
{
    (void)user;
    int i = tk.runs++;
    cr_assert_lt(i, MAX_TICKS);
    tk.fired[i] = pact_now();
    tk.due[i] = pact_handle_due(loop, tk.h);
    if (tk.block_on && i + 1 == tk.block_on) {
        sleep_ns(tk.block_ns);
        tk.block_end = pact_now();
    }
    if (tk.runs == tk.stop_after) {
        tk.cancel_result = pact_handle_cancel(loop, tk.h);
        tk.cancel_again = pact_handle_cancel(loop, tk.h);
        tk.set_after_cancel = pact_handle_set_interval(loop, tk.h, MS);
    }
}

/* What holds for every run however loaded the machine is: each deadline
 * is on the grid of the first one, no run is early, and each deadline is
 * after the previous run (a late run never leads to a burst). */
static void assert_ticks_on_grid(int64_t first, uint64_t interval)
{
    for (int i = 0; i < tk.runs; i++) {
        cr_assert_geq(tk.due[i], first);
        cr_assert_eq((tk.due[i] - first) % (int64_t)interval, 0,
                     "run %d due off the grid", i);
        cr_assert_geq(tk.fired[i], (uint64_t)tk.due[i], "run %d early", i);
        if (i > 0)
            cr_assert_gt((uint64_t)tk.due[i], tk.fired[i - 1],
                         "run %d due before run %d ran: a burst", i, i - 1);
    }
}

Test(timer, every_ticks_on_its_grid_never_early_and_cancels_itself)
{
    pact_loop *loop = test_loop_new();
    memset(&tk, 0, sizeof tk);
    tk.stop_after = 5;
    uint64_t interval = 10 * MS;
    uint64_t before = pact_now();
    tk.h = pact_call_every(loop, interval, tick, NULL);
    cr_assert_gt(tk.h, 0);
    int64_t first = pact_handle_due(loop, tk.h);
    cr_assert_geq((uint64_t)first, before + interval);
    cr_assert_eq(pact_loop_run(loop), 0, "run returns once it cancelled itself");
    cr_assert_eq(tk.runs, 5);
    cr_assert_eq(tk.due[0], first);
    assert_ticks_on_grid(first, interval);
    cr_assert_eq(tk.cancel_result, 0, "cancel from its own callback");
    cr_assert_eq(tk.cancel_again, -ENOENT, "cancel twice");
    cr_assert_eq(tk.set_after_cancel, -ENOENT);
    cr_assert_eq(pact_handle_cancel(loop, tk.h), -ENOENT, "stale after");
    cr_assert_eq(pact_handle_due(loop, tk.h), -ENOENT);
    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    cr_assert_eq(st.handles_live, 0);
    test_loop_free(loop);
}

Test(timer, missed_ticks_are_skipped_not_run_in_a_burst)
{
    pact_loop *loop = test_loop_new();
    memset(&tk, 0, sizeof tk);
    uint64_t interval = 10 * MS;
    tk.block_on = 2;
    tk.block_ns = 35 * MS; /* misses 3 or 4 ticks */
    tk.stop_after = 4;
    tk.h = pact_call_every(loop, interval, tick, NULL);
    int64_t first = pact_handle_due(loop, tk.h);
    pact_loop_run(loop);
    cr_assert_eq(tk.runs, 4);
    assert_ticks_on_grid(first, interval);
    /* The run after the blocked one is due at a grid point after the
     * block ended: the ticks missed meanwhile were skipped. */
    cr_assert_gt((uint64_t)tk.due[2], tk.block_end,
                 "a missed tick was run late instead of skipped");
    cr_assert_geq(tk.due[2] - tk.due[1], (int64_t)(4 * interval));
    test_loop_free(loop);
}

static int retune_runs;
static pact_handle retune_h;
static int64_t retune_due[8];
static void retune(pact_loop *loop, void *user)
{
    (void)user;
    retune_due[retune_runs++] = pact_handle_due(loop, retune_h);
    if (retune_runs == 2)
        cr_assert_eq(pact_handle_set_interval(loop, retune_h, 20 * MS), 0);
    if (retune_runs == 4)
        cr_assert_eq(pact_handle_set_interval(loop, retune_h, 0), 0,
                     "0 from its callback: this run is the last");
}

Test(timer, set_interval_from_its_callback_changes_the_spacing_and_0_stops_it)
{
    pact_loop *loop = test_loop_new();
    retune_runs = 0;
    retune_h = pact_call_every(loop, 5 * MS, retune, NULL);
    pact_loop_run(loop);
    cr_assert_eq(retune_runs, 4);
    /* Multiples, not equal: a run late by a whole interval skips ticks. */
    cr_assert_eq((retune_due[1] - retune_due[0]) % (int64_t)(5 * MS), 0);
    cr_assert_gt(retune_due[1], retune_due[0]);
    for (int i = 2; i < 4; i++) {
        cr_assert_gt(retune_due[i], retune_due[i - 1]);
        cr_assert_eq((retune_due[i] - retune_due[i - 1]) % (int64_t)(20 * MS), 0,
                     "run %d: the new interval counts from the last deadline", i);
    }
    cr_assert_eq(pact_handle_cancel(loop, retune_h), -ENOENT);
    test_loop_free(loop);
}

static int oneshot_runs;
static pact_handle oneshot_h;
static void oneshot_becomes_repeating(pact_loop *loop, void *user)
{
    (void)user;
    oneshot_runs++;
    if (oneshot_runs == 1)
        cr_assert_eq(pact_handle_set_interval(loop, oneshot_h, 2 * MS), 0);
    if (oneshot_runs == 3)
        cr_assert_eq(pact_handle_cancel(loop, oneshot_h), 0);
}

Test(timer, a_one_shot_timer_made_repeating_from_its_callback)
{
    pact_loop *loop = test_loop_new();
    oneshot_runs = 0;
    oneshot_h = pact_call_later(loop, 1 * MS, oneshot_becomes_repeating, NULL);
    pact_loop_run(loop);
    cr_assert_eq(oneshot_runs, 3);
    test_loop_free(loop);
}

static void count(pact_loop *loop, void *user)
{
    (void)loop;
    (*(int *)user)++;
}

Test(timer, set_interval_0_on_a_pending_timer_runs_it_once_more)
{
    pact_loop *loop = test_loop_new();
    int runs = 0;
    pact_handle h = pact_call_every(loop, 2 * MS, count, &runs);
    cr_assert_eq(pact_handle_set_interval(loop, h, 0), 0);
    pact_loop_run(loop);
    cr_assert_eq(runs, 1);
    test_loop_free(loop);
}

static pact_handle victim;
static void cancel_victim(pact_loop *loop, void *user)
{
    (void)user;
    cr_assert_eq(pact_handle_cancel(loop, victim), 0);
}
static void victim_tick(pact_loop *loop, void *user)
{
    if (++*(int *)user == 2)
        cr_assert_gt(pact_call_soon(loop, cancel_victim, NULL), 0);
}

Test(timer, cancelled_from_another_callback_it_never_runs_again)
{
    pact_loop *loop = test_loop_new();
    int runs = 0;
    victim = pact_call_every(loop, 2 * MS, victim_tick, &runs);
    pact_loop_run(loop);
    cr_assert_eq(runs, 2, "cancelled while pending after its second run");
    cr_assert_eq(pact_handle_cancel(loop, victim), -ENOENT);
    test_loop_free(loop);
}

Test(timer, bad_input_is_refused)
{
    pact_loop *loop = test_loop_new();
    int runs = 0;
    cr_assert_eq(pact_call_every(loop, 0, count, &runs), -EINVAL);
    cr_assert_eq(pact_call_every(loop, MS, NULL, &runs), -EINVAL);
    cr_assert_eq(pact_call_every(NULL, MS, count, &runs), -EINVAL);
    pact_handle soon = pact_call_soon(loop, count, &runs);
    cr_assert_eq(pact_handle_set_interval(loop, soon, MS), -EINVAL);
    cr_assert_eq(pact_handle_due(loop, soon), -EINVAL);
    cr_assert_eq(pact_handle_set_interval(loop, 12345, MS), -ENOENT);
    cr_assert_eq(pact_handle_due(loop, -1), -ENOENT);
    cr_assert_eq(pact_handle_due(NULL, soon), -EINVAL);
    pact_loop_run(loop);
    cr_assert_eq(runs, 1);
    test_loop_free(loop);
}

/* Stops the loop on the timer's third run: a deadline of its own would
 * race the timer on a loaded machine (a wait that oversleeps finds both
 * due and the stop may come after one run). */
static void count_then_stop(pact_loop *loop, void *user)
{
    if (++*(int *)user == 3)
        pact_loop_stop(loop);
}

Test(timer, close_drops_a_pending_repeating_timer)
{
    pact_loop *loop = test_loop_new();
    int runs = 0;
    pact_handle h = pact_call_every(loop, 1 * MS, count_then_stop, &runs);
    cr_assert_gt(h, 0);
    pact_loop_run(loop);
    cr_assert_eq(runs, 3);
    cr_assert_eq(pact_loop_alive(loop), 1, "a repeating timer keeps it alive");
    int seen = runs;
    test_loop_free(loop); /* ASan: nothing of it leaks */
    cr_assert_eq(runs, seen, "never run by close");
}

/* Many repeating timers with different intervals in one loop, each
 * cancelling itself on its (i+1)th run: each runs exactly that often. */
static struct {
    pact_handle h[16];
    int runs[16];
} many;
static void many_tick(pact_loop *loop, void *user)
{
    int i = (int)(intptr_t)user;
    many.runs[i]++;
    if (many.runs[i] == i + 1)
        cr_assert_eq(pact_handle_cancel(loop, many.h[i]), 0);
}

Test(timer, many_repeating_timers_each_run_exactly_as_often_as_asked)
{
    pact_loop *loop = test_loop_new();
    memset(&many, 0, sizeof many);
    for (int i = 0; i < 16; i++)
        many.h[i] = pact_call_every(loop, (uint64_t)(1 + i % 3) * MS, many_tick,
                                    (void *)(intptr_t)i);
    pact_loop_run(loop);
    for (int i = 0; i < 16; i++)
        cr_assert_eq(many.runs[i], i + 1, "timer %d", i);
    test_loop_free(loop);
}
