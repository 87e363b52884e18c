/* SPDX-License-Identifier: MIT */
/* pact_wait_for_handle() on Windows: signalled, timed out, cancelled in
 * time and too late, cancelled twice and stale, a deadline, loop close
 * with waits in flight, a process handle, and the hammer: thousands of
 * waits cancelled while their event is being set on another thread, so
 * that cancels land before, during and after the system's wait callback.
 * Every wait completes exactly once, and its state is freed only after
 * the callback has returned (a use after free would crash or corrupt the
 * counts). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "helpers.h"

typedef struct rec {
    int calls;
    int64_t result;
} rec;

static void record(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    rec *r = user;
    r->calls++;
    r->result = c->result;
}

static HANDLE new_event(void)
{
    HANDLE e = CreateEventW(NULL, TRUE, FALSE, NULL);
    cr_assert_not_null(e);
    return e;
}

Test(wait_handle, a_signalled_event_completes_with_0)
{
    pact_loop *loop = test_loop_new();
    HANDLE e = new_event();
    rec r = {0};
    cr_assert_gt(pact_wait_for_handle(loop, e, 0, record, &r), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 0);
    SetEvent(e);
    run_until(loop, &r.calls, 2000);
    cr_assert_eq(r.result, 0);
    /* Already signalled when the wait starts: at once. */
    rec r2 = {0};
    cr_assert_gt(pact_wait_for_handle(loop, e, 0, record, &r2), 0);
    run_until(loop, &r2.calls, 2000);
    cr_assert_eq(r2.result, 0);
    CloseHandle(e);
    test_loop_free(loop);
}

Test(wait_handle, the_timeout_ends_it_with_etimedout_never_early)
{
    pact_loop *loop = test_loop_new();
    HANDLE e = new_event();
    rec r = {0};
    uint64_t start = pact_now();
    cr_assert_gt(pact_wait_for_handle(loop, e, 50 * MS, record, &r), 0);
    run_until(loop, &r.calls, 3000);
    cr_assert_eq(r.result, -ETIMEDOUT);
    cr_assert_geq(pact_now() - start, 50 * MS);
    /* pact_op_set_timeout works as on every op. */
    rec r2 = {0};
    start = pact_now();
    pact_op op = pact_wait_for_handle(loop, e, 0, record, &r2);
    cr_assert_eq(pact_op_set_timeout(loop, op, 30 * MS), 0);
    run_until(loop, &r2.calls, 3000);
    cr_assert_eq(r2.result, -ETIMEDOUT);
    cr_assert_geq(pact_now() - start, 30 * MS);
    CloseHandle(e);
    test_loop_free(loop);
}

Test(wait_handle, cancel_in_time_twice_and_stale)
{
    pact_loop *loop = test_loop_new();
    HANDLE e = new_event();
    rec r = {0};
    pact_op op = pact_wait_for_handle(loop, e, 0, record, &r);
    cr_assert_gt(op, 0);
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    cr_assert_eq(pact_op_cancel(loop, op), -EALREADY);
    run_until(loop, &r.calls, 2000);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, -ECANCELED);
    cr_assert_eq(pact_op_cancel(loop, op), -ENOENT);
    /* The event set afterwards reaches nobody. */
    SetEvent(e);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 1 * (int64_t)MS);
    cr_assert_eq(r.calls, 1);
    CloseHandle(e);
    test_loop_free(loop);
}

/* The wait fired (its packet is queued) before the cancel: the real
 * result, 0, is delivered. Nothing outside the engine shows when the
 * pool's callback has posted its packet, so each attempt sleeps longer
 * than the one before; an attempt whose cancel still came in time must
 * end -ECANCELED (also a contract outcome), and one attempt must come too
 * late and see 0. A loaded machine can delay the pool thread well past a
 * fixed sleep. */
Test(wait_handle, cancel_too_late_gets_the_real_result)
{
    pact_loop *loop = test_loop_new();
    int saw_real_result = 0;
    for (DWORD sleep_ms = 20; sleep_ms <= 2560 && !saw_real_result;
         sleep_ms *= 2) {
        HANDLE e = new_event();
        rec r = {0};
        pact_op op = pact_wait_for_handle(loop, e, 0, record, &r);
        cr_assert_gt(op, 0);
        SetEvent(e);
        Sleep(sleep_ms);
        cr_assert_eq(pact_op_cancel(loop, op), 0);
        run_until(loop, &r.calls, 2000);
        for (int i = 0; i < 5; i++)
            pact_loop_run_once(loop, 0);
        cr_assert_eq(r.calls, 1);
        cr_assert(r.result == 0 || r.result == -ECANCELED,
                  "after %lu ms: %lld", (unsigned long)sleep_ms,
                  (long long)r.result);
        saw_real_result = r.result == 0;
        CloseHandle(e);
    }
    cr_assert(saw_real_result, "no cancel came after the wait fired");
    test_loop_free(loop);
}

Test(wait_handle, loop_close_completes_waits_in_flight_once)
{
    pact_loop *loop = test_loop_new();
    enum { N = 16 };
    HANDLE e[N];
    rec r[N];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        e[i] = new_event();
        cr_assert_gt(pact_wait_for_handle(loop, e[i], 0, record, &r[i]), 0);
    }
    SetEvent(e[0]); /* one may fire while the loop closes */
    cr_assert_eq(pact_loop_close(loop), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].calls, 1);
        cr_assert(r[i].result == -ECANCELED || (i == 0 && r[i].result == 0),
                  "wait %d: %lld", i, (long long)r[i].result);
    }
    pact_loop_free(loop);
    for (int i = 0; i < N; i++)
        CloseHandle(e[i]);
}

/* A process handle: signalled when the child exits; its exit code is read
 * after that. */
Test(wait_handle, a_process_handle_is_signalled_at_exit)
{
    pact_loop *loop = test_loop_new();
    char cmd[] = "cmd.exe /c exit 3";
    STARTUPINFOA si = {.cb = sizeof si};
    PROCESS_INFORMATION pi;
    cr_assert(CreateProcessA(NULL, cmd, NULL, NULL, FALSE, 0, NULL, NULL, &si,
                             &pi), "CreateProcess: %lu", GetLastError());
    rec r = {0};
    cr_assert_gt(pact_wait_for_handle(loop, pi.hProcess, 0, record, &r), 0);
    run_until(loop, &r.calls, 20000);
    cr_assert_eq(r.result, 0);
    DWORD code = 0;
    cr_assert(GetExitCodeProcess(pi.hProcess, &code));
    cr_assert_eq(code, 3);
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
    test_loop_free(loop);
}

/* The hammer. Each round, a setter thread sets the event after a varying
 * spin while the loop thread cancels after another. */
typedef struct hammer {
    HANDLE event;
    atomic_int round; /* the round the setter should set */
    atomic_int stop;
    unsigned spin;
} hammer;

static void *setter(void *arg)
{
    hammer *h = arg;
    int done = 0;
    while (!atomic_load(&h->stop)) {
        int want = atomic_load(&h->round);
        if (want == done) {
            SwitchToThread();
            continue;
        }
        for (volatile unsigned i = 0; i < h->spin; i++)
            ;
        SetEvent(h->event);
        done = want;
    }
    return NULL;
}

Test(wait_handle, cancel_racing_the_wait_callback_thousands_of_rounds,
     .timeout = 240)
{
    pact_loop *loop = test_loop_new();
    enum { ROUNDS = 3000 };
    hammer h = {.event = new_event()};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, setter, &h), 0);
    int fired = 0, cancelled = 0;
    uint64_t seed = 88172645463325252ull;
    for (int i = 1; i <= ROUNDS; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        ResetEvent(h.event);
        rec r = {0};
        pact_op op = pact_wait_for_handle(loop, h.event, 0, record, &r);
        cr_assert_gt(op, 0);
        h.spin = (unsigned)(seed % 20000);
        atomic_store(&h.round, i);
        /* Cancel at once, after a short spin, or after the callback
         * probably ran: the three outcomes and the edges between them. */
        switch ((seed >> 40) % 3) {
        case 0:
            break;
        case 1:
            for (volatile unsigned k = 0; k < (unsigned)((seed >> 20) % 200000); k++)
                ;
            break;
        default:
            Sleep((DWORD)((seed >> 20) % 3));
            break;
        }
        int c = pact_op_cancel(loop, op);
        cr_assert(c == 0, "cancel: %d", c);
        run_until(loop, &r.calls, 5000);
        pact_loop_run_once(loop, 0);
        cr_assert_eq(r.calls, 1, "round %d: %d calls", i, r.calls);
        cr_assert(r.result == 0 || r.result == -ECANCELED, "round %d: %lld", i,
                  (long long)r.result);
        if (r.result == 0)
            fired++;
        else
            cancelled++;
        /* The setter is done with this round before the next resets. */
        while (WaitForSingleObject(h.event, 0) != WAIT_OBJECT_0)
            SwitchToThread();
    }
    atomic_store(&h.stop, 1);
    pthread_join(th, NULL);
    cr_log_info("%d waits: %d got the real result, %d cancelled", ROUNDS,
                fired, cancelled);
    cr_assert_eq(fired + cancelled, ROUNDS);
    CloseHandle(h.event);
    test_loop_free(loop);
}
