/* SPDX-License-Identifier: MIT */
/* The thread pool and the resolver: pool work is an operation — exactly
 * once, cancellable while queued, waited for at close — and getaddrinfo /
 * getnameinfo run on it. Named *_thread so it also runs under TSan. */
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "helpers.h"

TestSuite(pool, .timeout = 60);

/* ---- many small jobs ---------------------------------------------------- */

#define NJOBS 1000
static atomic_int work_runs[NJOBS];
static int done_calls[NJOBS];
static int64_t done_results[NJOBS];
static int ndone;

static int64_t job_index(void *user)
{
    int i = (int)(intptr_t)user;
    atomic_fetch_add(&work_runs[i], 1);
    return i * 3;
}

static void job_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    int i = (int)(intptr_t)user;
    done_calls[i]++;
    done_results[i] = c->result;
    ndone++;
}

Test(pool, a_thousand_jobs_each_complete_exactly_once)
{
    pact_loop *loop = test_loop_new();
    ndone = 0;
    for (int i = 0; i < NJOBS; i++) {
        atomic_store(&work_runs[i], 0);
        done_calls[i] = 0;
        cr_assert_gt(pact_queue_work(loop, job_index, job_done,
                                     (void *)(intptr_t)i), 0);
    }
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(ndone, NJOBS);
    for (int i = 0; i < NJOBS; i++) {
        cr_assert_eq(atomic_load(&work_runs[i]), 1, "job %d ran %d times", i,
                     atomic_load(&work_runs[i]));
        cr_assert_eq(done_calls[i], 1);
        cr_assert_eq(done_results[i], i * 3);
    }
    test_loop_free(loop);
}

/* ---- a job that blocks until released ----------------------------------- */

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open;
static atomic_int blocker_started;

static int64_t blocker(void *user)
{
    atomic_store(&blocker_started, 1);
    pthread_mutex_lock(&gate_lock);
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    return (int64_t)(intptr_t)user;
}

static void gate_reset(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = 0;
    pthread_mutex_unlock(&gate_lock);
    atomic_store(&blocker_started, 0);
}

static void gate_release(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_lock);
}

/* Runs the loop until the blocking job is on a worker. */
static void wait_blocker_started(pact_loop *loop)
{
    uint64_t end = pact_now() + 5000 * MS;
    while (!atomic_load(&blocker_started)) {
        cr_assert(pact_now() < end, "the blocking job never started");
        pact_loop_run_once(loop, 1 * (int64_t)MS);
    }
}

static atomic_int never_runs_ran;
static int64_t never_runs(void *user)
{
    (void)user;
    atomic_store(&never_runs_ran, 1);
    return 0;
}

typedef struct outcome {
    int calls;
    int64_t result;
    int gai_error;
    int had_addrinfo;
} outcome;

static void record_outcome(pact_loop *loop, const pact_completion *c,
                           void *user)
{
    (void)loop;
    outcome *o = user;
    o->calls++;
    o->result = c->result;
    o->gai_error = c->gai_error;
    o->had_addrinfo = c->addrinfo != NULL;
}

Test(pool, cancel_before_start_drops_the_job_and_running_work_finishes)
{
    pact_loop *loop = test_loop_new();
    cr_assert_eq(pact_pool_set_size(loop, 1), 0);
    gate_reset();
    atomic_store(&never_runs_ran, 0);
    outcome a = {0}, b = {0};
    pact_op opa = pact_queue_work(loop, blocker, record_outcome, &a);
    cr_assert_gt(opa, 0);
    /* blocker's user is &a: its result is that pointer's low bits; what
     * matters is that it is the real result, not -ECANCELED. */
    pact_op opb = pact_queue_work(loop, never_runs, record_outcome, &b);
    cr_assert_gt(opb, 0);
    wait_blocker_started(loop);
    /* Two queued behind one thread: b cannot have started. */
    cr_assert_eq(pact_pool_set_size(loop, 1), 0);
    cr_assert_eq(pact_op_cancel(loop, opb), 0);
    cr_assert_eq(pact_op_cancel(loop, opb), -EALREADY, "cancel twice");
    cr_assert_eq(pact_op_cancel(loop, opa), -EALREADY,
                 "running work cannot be cancelled");
    gate_release();
    volatile int *flag = &a.calls;
    run_until(loop, flag, 5000);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(b.result, -ECANCELED);
    cr_assert_eq(atomic_load(&never_runs_ran), 0, "a cancelled job ran");
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(a.result, (int64_t)(intptr_t)&a, "running work keeps its result");
    cr_assert_eq(pact_op_cancel(loop, opa), -ENOENT, "cancel after completion");
    test_loop_free(loop);
}

/* ---- close while work runs ---------------------------------------------- */

static int64_t slow_answer(void *user)
{
    (void)user;
    atomic_store(&blocker_started, 1);
    struct timespec ts = {0, 150 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return 42;
}

Test(pool, close_waits_for_running_work_and_delivers_its_result)
{
    pact_loop *loop = test_loop_new();
    atomic_store(&blocker_started, 0);
    outcome running = {0}, queued = {0};
    cr_assert_eq(pact_pool_set_size(loop, 1), 0);
    cr_assert_gt(pact_queue_work(loop, slow_answer, record_outcome, &running), 0);
    cr_assert_gt(pact_queue_work(loop, job_index, record_outcome, &queued), 0);
    wait_blocker_started(loop);
    uint64_t t0 = pact_now();
    test_loop_free(loop); /* closes: checks started == completed */
    cr_assert_eq(running.calls, 1);
    cr_assert_eq(running.result, 42);
    cr_assert_eq(queued.calls, 1);
    cr_assert_eq(queued.result, -ECANCELED);
    cr_assert_geq(pact_now() - t0, 50 * MS, "close did not wait");
}

Test(pool, close_with_only_queued_work_never_starts_it)
{
    pact_loop *loop = test_loop_new();
    atomic_store(&never_runs_ran, 0);
    outcome o = {0};
    cr_assert_gt(pact_queue_work(loop, never_runs, record_outcome, &o), 0);
    test_loop_free(loop);
    cr_assert_eq(o.calls, 1);
    cr_assert_eq(o.result, -ECANCELED);
    cr_assert_eq(atomic_load(&never_runs_ran), 0);
}

Test(pool, misuse_is_answered_with_errors)
{
    pact_loop *loop = test_loop_new();
    outcome o = {0};
    cr_assert_eq(pact_queue_work(NULL, job_index, record_outcome, &o), -EINVAL);
    cr_assert_eq(pact_queue_work(loop, NULL, record_outcome, &o), -EINVAL);
    cr_assert_eq(pact_queue_work(loop, job_index, NULL, &o), -EINVAL);
    cr_assert_eq(pact_pool_set_size(loop, 0), -EINVAL);
    cr_assert_eq(pact_getaddrinfo(loop, NULL, NULL, NULL, record_outcome, &o),
                 -EINVAL);
    cr_assert_eq(pact_getnameinfo(loop, NULL, 0, 0, record_outcome, &o),
                 -EINVAL);
    cr_assert_null(pact_op_take_addrinfo(loop, 12345));
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(pact_queue_work(loop, job_index, record_outcome, &o),
                 -ESHUTDOWN);
    cr_assert_eq(pact_getaddrinfo(loop, "localhost", NULL, NULL,
                                  record_outcome, &o),
                 -ESHUTDOWN);
    cr_assert_eq(pact_pool_set_size(loop, 2), -ESHUTDOWN);
    pact_loop_free(loop);
    cr_assert_eq(o.calls, 0);
}

/* ---- the resolver ------------------------------------------------------- */

static struct addrinfo *taken;
static int saw_loopback;

static void localhost_done(pact_loop *loop, const pact_completion *c,
                           void *user)
{
    record_outcome(loop, c, user);
    for (const struct addrinfo *ai = c->addrinfo; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            const struct sockaddr_in *sin = (const void *)ai->ai_addr;
            if (sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK) &&
                ntohs(sin->sin_port) == 8080)
                saw_loopback = 1;
        }
    }
    taken = pact_op_take_addrinfo(loop, c->op);
    cr_assert_null(pact_op_take_addrinfo(loop, c->op), "taken twice");
}

Test(pool, getaddrinfo_resolves_localhost)
{
    pact_loop *loop = test_loop_new();
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    outcome o = {0};
    taken = NULL;
    saw_loopback = 0;
    cr_assert_gt(pact_getaddrinfo(loop, "localhost", "8080", &hints,
                                  localhost_done, &o), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(o.calls, 1);
    cr_assert_eq(o.result, 0, "%s", pact_strerror((int)o.result));
    cr_assert_eq(o.gai_error, 0);
    cr_assert(o.had_addrinfo);
    cr_assert(saw_loopback);
    cr_assert_not_null(taken, "the callback took the list");
    freeaddrinfo(taken); /* ours now: ASan would flag a double free */
    test_loop_free(loop);
}

Test(pool, getaddrinfo_of_a_name_that_does_not_resolve_fails)
{
    pact_loop *loop = test_loop_new();
    outcome o = {0};
    cr_assert_gt(pact_getaddrinfo(loop, "nonexistent.invalid", NULL, NULL,
                                  record_outcome, &o), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(o.calls, 1);
    cr_assert_lt(o.result, 0);
    cr_assert_neq(o.gai_error, 0);
    cr_assert(!o.had_addrinfo);
    if (o.gai_error == EAI_NONAME)
        cr_assert_eq(o.result, -ENOENT);
    test_loop_free(loop);
}

Test(pool, getaddrinfo_cancelled_while_queued)
{
    pact_loop *loop = test_loop_new();
    cr_assert_eq(pact_pool_set_size(loop, 1), 0);
    gate_reset();
    outcome a = {0}, o = {0};
    cr_assert_gt(pact_queue_work(loop, blocker, record_outcome, &a), 0);
    pact_op op = pact_getaddrinfo(loop, "localhost", NULL, NULL,
                                  record_outcome, &o);
    cr_assert_gt(op, 0);
    wait_blocker_started(loop);
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    gate_release();
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(o.calls, 1);
    cr_assert_eq(o.result, -ECANCELED);
    cr_assert_eq(o.gai_error, 0);
    cr_assert(!o.had_addrinfo);
    test_loop_free(loop);
}

static char name_host[256], name_serv[64];
static void name_done(pact_loop *loop, const pact_completion *c, void *user)
{
    record_outcome(loop, c, user);
    if (c->result == 0) {
        snprintf(name_host, sizeof name_host, "%s", c->host);
        snprintf(name_serv, sizeof name_serv, "%s", c->service);
    }
}

Test(pool, getnameinfo_of_127_0_0_1)
{
    pact_loop *loop = test_loop_new();
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons(8080),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    outcome o = {0};
    cr_assert_gt(pact_getnameinfo(loop, (struct sockaddr *)&sin, sizeof sin,
                                  NI_NUMERICHOST | NI_NUMERICSERV, name_done,
                                  &o), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(o.calls, 1);
    cr_assert_eq(o.result, 0);
    cr_assert_str_eq(name_host, "127.0.0.1");
    cr_assert_str_eq(name_serv, "8080");

    /* By name: /etc/hosts maps 127.0.0.1 to localhost. */
    o = (outcome){0};
    cr_assert_gt(pact_getnameinfo(loop, (struct sockaddr *)&sin, sizeof sin,
                                  NI_NUMERICSERV, name_done, &o), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(o.result, 0);
    cr_assert_str_eq(name_host, "localhost");
    test_loop_free(loop);
}
