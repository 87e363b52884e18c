/* SPDX-License-Identifier: MIT */
/* Signals as loop callbacks: delivery from another thread, the signal
 * mask restored on removal, one owner loop per signal, removal from inside
 * a handler. Signals are sent with tgkill to the loop's thread: a
 * process-directed kill() may land on any thread that does not block it.
 * Named *_thread so it also runs under TSan. */
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>

#include "helpers.h"

TestSuite(signal, .timeout = 30);

static pid_t loop_tid;

typedef struct raise_req {
    pid_t tid;
    int signo;
} raise_req;

static void *raiser(void *arg)
{
    raise_req *r = arg;
    syscall(SYS_tgkill, getpid(), r->tid, r->signo);
    return NULL;
}

/* Sends signo to the loop thread from another thread. */
static void raise_from_thread(int signo)
{
    raise_req r = {loop_tid, signo};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, raiser, &r), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
}

static int is_blocked(int signo)
{
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    return sigismember(&cur, signo);
}

typedef struct hits {
    int count;
    int signo;
    int order[8];
    int norder;
} hits;

static hits shared_hits;

static void on_signal(pact_loop *loop, int signo, void *user)
{
    (void)loop;
    shared_hits.order[shared_hits.norder++ % 8] = (int)(intptr_t)user;
    shared_hits.count++;
    shared_hits.signo = signo;
}

static void setup(void)
{
    loop_tid = (pid_t)syscall(SYS_gettid);
    memset(&shared_hits, 0, sizeof shared_hits);
}

Test(signal, handler_runs_when_another_thread_raises_sigusr1, .init = setup)
{
    pact_loop *loop = test_loop_new();
    cr_assert(!is_blocked(SIGUSR1));
    pact_signal s = pact_signal_add(loop, SIGUSR1, on_signal, (void *)1);
    cr_assert_gt(s, 0);
    cr_assert(is_blocked(SIGUSR1), "blocked while handled");
    raise_from_thread(SIGUSR1);
    volatile int *flag = &shared_hits.count;
    run_until(loop, flag, 5000);
    cr_assert_eq(shared_hits.count, 1);
    cr_assert_eq(shared_hits.signo, SIGUSR1);
    /* A second delivery works too (the read is re-armed). */
    raise_from_thread(SIGUSR1);
    uint64_t end = pact_now() + 5000 * MS;
    while (shared_hits.count < 2 && pact_now() < end)
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    cr_assert_eq(shared_hits.count, 2);
    cr_assert_eq(pact_signal_cancel(loop, s), 0);
    cr_assert_eq(pact_signal_cancel(loop, s), -ENOENT, "removed twice");
    test_loop_free(loop);
}

Test(signal, removing_the_last_handler_restores_the_mask, .init = setup)
{
    pact_loop *loop = test_loop_new();
    cr_assert(!is_blocked(SIGUSR1));
    pact_signal a = pact_signal_add(loop, SIGUSR1, on_signal, (void *)1);
    pact_signal b = pact_signal_add(loop, SIGUSR1, on_signal, (void *)2);
    cr_assert_gt(a, 0);
    cr_assert_gt(b, 0);
    cr_assert_eq(pact_signal_cancel(loop, a), 0);
    cr_assert(is_blocked(SIGUSR1), "b still handles it");
    cr_assert_eq(pact_signal_cancel(loop, b), 0);
    cr_assert(!is_blocked(SIGUSR1), "the old mask is back");

    /* A signal the thread blocked itself stays blocked after removal. */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &one, NULL);
    pact_signal c = pact_signal_add(loop, SIGUSR2, on_signal, NULL);
    cr_assert_gt(c, 0);
    cr_assert_eq(pact_signal_cancel(loop, c), 0);
    cr_assert(is_blocked(SIGUSR2));
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    /* Let the cancelled signalfd read complete. */
    pact_loop_run_once(loop, 0);
    test_loop_free(loop);
}

Test(signal, two_loops_cannot_both_own_one_signal, .init = setup)
{
    pact_loop *a = test_loop_new();
    pact_loop *b = test_loop_new();
    pact_signal sa = pact_signal_add(a, SIGUSR2, on_signal, NULL);
    cr_assert_gt(sa, 0);
    cr_assert_eq(pact_signal_add(b, SIGUSR2, on_signal, NULL), -EBUSY);
    /* Another signal is fine, and a second handler on the owner too. */
    pact_signal sb = pact_signal_add(b, SIGUSR1, on_signal, NULL);
    cr_assert_gt(sb, 0);
    pact_signal sa2 = pact_signal_add(a, SIGUSR2, on_signal, NULL);
    cr_assert_gt(sa2, 0);
    cr_assert_eq(pact_signal_cancel(a, sa), 0);
    cr_assert_eq(pact_signal_add(b, SIGUSR2, on_signal, NULL), -EBUSY,
                 "a still has a handler");
    cr_assert_eq(pact_signal_cancel(a, sa2), 0);
    pact_signal sb2 = pact_signal_add(b, SIGUSR2, on_signal, NULL);
    cr_assert_gt(sb2, 0, "released by a: %s", pact_strerror((int)sb2));
    /* Closing b releases its signals. */
    test_loop_free(b);
    cr_assert(!is_blocked(SIGUSR1));
    cr_assert(!is_blocked(SIGUSR2));
    pact_signal again = pact_signal_add(a, SIGUSR2, on_signal, NULL);
    cr_assert_gt(again, 0);
    test_loop_free(a);
    cr_assert(!is_blocked(SIGUSR2), "close restores the mask");
}

static pact_signal self_id;
static int self_calls, self_remove_result;
static void remove_myself(pact_loop *loop, int signo, void *user)
{
    (void)signo;
    (void)user;
    self_calls++;
    self_remove_result = pact_signal_cancel(loop, self_id);
}

Test(signal, a_handler_can_remove_itself, .init = setup)
{
    pact_loop *loop = test_loop_new();
    self_calls = 0;
    self_remove_result = 1;
    self_id = pact_signal_add(loop, SIGUSR1, remove_myself, NULL);
    cr_assert_gt(self_id, 0);
    pact_signal other = pact_signal_add(loop, SIGUSR1, on_signal, (void *)7);
    cr_assert_gt(other, 0);
    raise_from_thread(SIGUSR1);
    volatile int *flag = &shared_hits.count;
    run_until(loop, flag, 5000);
    cr_assert_eq(self_calls, 1);
    cr_assert_eq(self_remove_result, 0);
    cr_assert_eq(shared_hits.count, 1, "the next handler still ran");
    raise_from_thread(SIGUSR1);
    uint64_t end = pact_now() + 5000 * MS;
    while (shared_hits.count < 2 && pact_now() < end)
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    cr_assert_eq(shared_hits.count, 2);
    cr_assert_eq(self_calls, 1, "removed handlers are not called");
    cr_assert_eq(pact_signal_cancel(loop, other), 0);
    cr_assert(!is_blocked(SIGUSR1));
    test_loop_free(loop);
}

static pact_signal last_id;
static void remove_last(pact_loop *loop, int signo, void *user)
{
    (void)signo;
    (void)user;
    self_calls++;
    self_remove_result = pact_signal_cancel(loop, last_id);
}

Test(signal, the_only_handler_removing_itself_stops_the_reader, .init = setup)
{
    pact_loop *loop = test_loop_new();
    self_calls = 0;
    last_id = pact_signal_add(loop, SIGUSR2, remove_last, NULL);
    cr_assert_gt(last_id, 0);
    raise_from_thread(SIGUSR2);
    volatile int *flag = &self_calls;
    run_until(loop, flag, 5000);
    cr_assert_eq(self_remove_result, 0);
    cr_assert(!is_blocked(SIGUSR2));
    cr_assert_eq(pact_loop_run(loop), 0, "nothing keeps the loop alive");
    test_loop_free(loop);
}

Test(signal, handlers_run_in_the_order_they_were_added, .init = setup)
{
    pact_loop *loop = test_loop_new();
    pact_signal ids[3];
    for (int i = 0; i < 3; i++) {
        ids[i] = pact_signal_add(loop, SIGUSR1, on_signal, (void *)(intptr_t)(i + 1));
        cr_assert_gt(ids[i], 0);
    }
    raise_from_thread(SIGUSR1);
    uint64_t end = pact_now() + 5000 * MS;
    while (shared_hits.count < 3 && pact_now() < end)
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    cr_assert_eq(shared_hits.count, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shared_hits.order[i], i + 1);
    /* Closing with handlers still registered releases everything. */
    test_loop_free(loop);
    cr_assert(!is_blocked(SIGUSR1));
}

Test(signal, misuse_is_answered_with_errors, .init = setup)
{
    pact_loop *loop = test_loop_new();
    cr_assert_eq(pact_signal_add(NULL, SIGUSR1, on_signal, NULL), -EINVAL);
    cr_assert_eq(pact_signal_add(loop, SIGUSR1, NULL, NULL), -EINVAL);
    cr_assert_eq(pact_signal_add(loop, 0, on_signal, NULL), -EINVAL);
    cr_assert_eq(pact_signal_add(loop, -3, on_signal, NULL), -EINVAL);
    cr_assert_eq(pact_signal_add(loop, 65, on_signal, NULL), -EINVAL);
    cr_assert_eq(pact_signal_add(loop, SIGKILL, on_signal, NULL), -EINVAL);
    cr_assert_eq(pact_signal_add(loop, SIGSTOP, on_signal, NULL), -EINVAL);
    cr_assert_eq(pact_signal_add(loop, SIGSEGV, on_signal, NULL), -EINVAL);
    cr_assert_eq(pact_signal_cancel(loop, 12345), -ENOENT);
    cr_assert_eq(pact_signal_cancel(NULL, 1), -EINVAL);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(pact_signal_add(loop, SIGUSR1, on_signal, NULL), -ESHUTDOWN);
    cr_assert_eq(pact_signal_cancel(loop, 1), -ESHUTDOWN);
    pact_loop_free(loop);
}

/* The last handler gone, the loop's wait for the signalfd is cancelled
 * and the signalfd closed at the next turn, not when the loop closes. */
Test(signal, removing_the_last_handler_closes_the_signalfd, .init = setup)
{
    pact_loop *loop = test_loop_new();
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    int fds0 = count_open_fds();
    pact_signal a = pact_signal_add(loop, SIGUSR1, on_signal, NULL);
    cr_assert_gt(a, 0);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0); /* the wait is in flight */
    cr_assert_eq(count_open_fds(), fds0 + 1, "the signalfd");
    cr_assert_eq(pact_signal_cancel(loop, a), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert_eq(count_open_fds(), fds0, "the signalfd is still open");
    test_loop_free(loop);
}
