/* SPDX-License-Identifier: MIT */
/* The thread-safe entry points: pact_call_soon_threadsafe, pact_loop_stop
 * and pact_loop_wake from other threads, and handing a loop to another
 * thread before it first runs. Runs on both engines, and under
 * ThreadSanitizer (tests/meson.build builds it there against the mini
 * Criterion), so everything shared between threads is atomic or passed
 * through the loop. */
#include <pthread.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdatomic.h>

#include "helpers.h"

TestSuite(threadsafe, .timeout = 60);

static void on_keepalive(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    atomic_int *fired = user;
    if (c->result == 0)
        atomic_fetch_add(fired, 1);
}

/* A sleep long enough that the loop never ends on its own in a test. */
static pact_op keep_alive(pact_loop *loop, atomic_int *fired)
{
    pact_op op = pact_sleep(loop, 3600ull * 1000 * MS, on_keepalive, fired);
    cr_assert_gt(op, 0);
    return op;
}

/* ---- call_soon_threadsafe from 4 threads --------------------------------- */

enum { PRODUCERS = 4, PER_PRODUCER = 10000 };

typedef struct ts_state {
    pact_loop *loop;
    pact_op keepalive;
    atomic_int ran;
    atomic_int out_of_order;
    atomic_int errors;
    int next_seq[PRODUCERS]; /* touched by the loop thread only */
    pthread_t loop_thread;
    atomic_int wrong_thread;
} ts_state;

typedef struct producer {
    ts_state *st;
    int id;
} producer;

/* The user pointer carries (producer, sequence): no allocation needed. */
static void *encode(int id, int seq)
{
    return (void *)(uintptr_t)(((uintptr_t)id << 24) | (uintptr_t)seq | (1u << 31));
}

static ts_state *the_state;

static void ts_callback(pact_loop *loop, void *user)
{
    ts_state *st = the_state;
    uintptr_t v = (uintptr_t)user;
    int id = (int)((v >> 24) & 0x7f);
    int seq = (int)(v & 0xffffff);
    if (!pthread_equal(pthread_self(), st->loop_thread))
        atomic_fetch_add(&st->wrong_thread, 1);
    if (seq != st->next_seq[id])
        atomic_fetch_add(&st->out_of_order, 1);
    st->next_seq[id] = seq + 1;
    if (atomic_fetch_add(&st->ran, 1) + 1 == PRODUCERS * PER_PRODUCER)
        pact_op_cancel(loop, st->keepalive);
}

static void *produce(void *arg)
{
    producer *p = arg;
    for (int i = 0; i < PER_PRODUCER; i++)
        if (pact_call_soon_threadsafe(p->st->loop, ts_callback,
                                      encode(p->id, i)) != 0)
            atomic_fetch_add(&p->st->errors, 1);
    return NULL;
}

Test(threadsafe, call_soon_threadsafe_from_4_threads_runs_each_once_in_order)
{
    static ts_state st;
    the_state = &st;
    st.loop = test_loop_new();
    st.loop_thread = pthread_self();
    atomic_int keep_fired = 0;
    st.keepalive = keep_alive(st.loop, &keep_fired);

    pthread_t th[PRODUCERS];
    producer p[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (producer){&st, i};
        cr_assert_eq(pthread_create(&th[i], NULL, produce, &p[i]), 0);
    }
    /* Runs until the last callback cancels the keep-alive. */
    cr_assert_eq(pact_loop_run(st.loop), 0);
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(th[i], NULL);

    cr_assert_eq(atomic_load(&st.errors), 0);
    cr_assert_eq(atomic_load(&st.ran), PRODUCERS * PER_PRODUCER);
    cr_assert_eq(atomic_load(&st.out_of_order), 0, "per-thread order broken");
    cr_assert_eq(atomic_load(&st.wrong_thread), 0, "ran off the loop thread");
    for (int i = 0; i < PRODUCERS; i++)
        cr_assert_eq(st.next_seq[i], PER_PRODUCER);
    cr_assert_eq(atomic_load(&keep_fired), 0);
    /* Nothing more is queued: one more iteration runs nothing. */
    pact_loop_run_once(st.loop, 0);
    cr_assert_eq(atomic_load(&st.ran), PRODUCERS * PER_PRODUCER);
    test_loop_free(st.loop);
}

/* ---- stop and wake from another thread ----------------------------------- */

typedef struct waker {
    pact_loop *loop;
    atomic_int round;   /* the loop thread is about to block in round n */
    atomic_int done;    /* the waker has handled rounds <= done */
    atomic_int sent;    /* the wake-up of round n is being sent */
    int rounds;
    int use_stop;
    atomic_int errors;
} waker;

static void *wake_rounds(void *arg)
{
    waker *w = arg;
    for (int n = 1; n <= w->rounds; n++) {
        while (atomic_load(&w->round) < n)
            usleep(100);
        usleep(2000); /* let the loop thread block */
        /* Announced before it is sent: once the loop thread sees sent ==
         * n it must not block again, and until then the wake is still to
         * come (or was absorbed by an iteration that saw sent == n). */
        atomic_store(&w->sent, n);
        int r = w->use_stop ? pact_loop_stop(w->loop) : pact_loop_wake(w->loop);
        if (r != 0)
            atomic_fetch_add(&w->errors, 1);
        atomic_store(&w->done, n);
    }
    return NULL;
}

static void mark_running(pact_loop *loop, void *user)
{
    (void)loop;
    waker *w = user;
    atomic_fetch_add(&w->round, 1);
}

Test(threadsafe, stop_from_another_thread_returns_from_run)
{
    pact_loop *loop = test_loop_new();
    atomic_int keep_fired = 0;
    pact_op keep = keep_alive(loop, &keep_fired);
    static waker w;
    w.loop = loop;
    w.rounds = 5;
    w.use_stop = 1;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, wake_rounds, &w), 0);
    for (int n = 1; n <= w.rounds; n++) {
        /* The callback tells the other thread that run is under way. */
        pact_call_soon(loop, mark_running, &w);
        cr_assert_eq(pact_loop_run(loop), 0);
        /* run returned because of the stop (or a later round's): the
         * hour-long sleep is still pending. */
        cr_assert(pact_loop_alive(loop));
        while (atomic_load(&w.done) < n)
            usleep(100);
    }
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&w.errors), 0);
    cr_assert_eq(atomic_load(&keep_fired), 0);
    cr_assert_eq(pact_op_cancel(loop, keep), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    test_loop_free(loop);
}

Test(threadsafe, wake_from_another_thread_ends_a_blocking_run_once_every_time)
{
    pact_loop *loop = test_loop_new();
    atomic_int keep_fired = 0;
    pact_op keep = keep_alive(loop, &keep_fired);
    static waker w;
    w.loop = loop;
    w.rounds = 50;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, wake_rounds, &w), 0);
    for (int n = 1; n <= w.rounds; n++) {
        atomic_store(&w.round, n);
        /* Blocks until woken: only the wake can end this iteration. A lost
         * wake-up (coalescing flag never cleared) hangs here. */
        do {
            cr_assert_eq(pact_loop_run_once(loop, -1), 1);
        } while (atomic_load(&w.sent) < n);
        while (atomic_load(&w.done) < n)
            usleep(100);
    }
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&w.errors), 0);
    cr_assert_eq(atomic_load(&keep_fired), 0);
    pact_op_cancel(loop, keep);
    pact_loop_run(loop);
    test_loop_free(loop);
}

/* ---- a loop handed to another thread ------------------------------------- */

typedef struct handoff {
    pact_loop *loop;
    int sv[2];
    char buf[16];
    pthread_t runner;
    atomic_int recv_result, sleep_result, cancelled, calls, wrong_thread;
    int run_result, close_result, foreign_close_result;
    atomic_int ran;          /* the runner finished its run */
    atomic_int may_close;    /* the creator has tried, the runner may close */
} handoff;

static void handoff_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    handoff *h = user;
    if (!pthread_equal(pthread_self(), h->runner))
        atomic_fetch_add(&h->wrong_thread, 1);
    atomic_fetch_add(&h->calls, 1);
    if (c->result == 0)
        atomic_store(&h->sleep_result, 1);
    else if (c->result == -ECANCELED)
        atomic_fetch_add(&h->cancelled, 1);
    else
        atomic_store(&h->recv_result, (int)c->result);
}

static void *run_and_close(void *arg)
{
    handoff *h = arg;
    h->run_result = pact_loop_run(h->loop);
    atomic_store(&h->ran, 1);
    while (!atomic_load(&h->may_close))
        usleep(100);
    /* Ops started here, on the owner, are cancelled by close. */
    pact_recv(h->loop, h->sv[1], h->buf, sizeof h->buf, 0, handoff_cb, h);
    h->close_result = pact_loop_close(h->loop);
    return NULL;
}

Test(threadsafe, a_loop_created_here_runs_and_closes_on_another_thread)
{
    static handoff h;
    h.loop = test_loop_new();
    make_socketpair(h.sv);
    cr_assert_eq(write(h.sv[0], "moved", 5), 5);
    /* Started on the creating thread, submitted and completed on the
     * runner. */
    cr_assert_gt(pact_recv(h.loop, h.sv[1], h.buf, sizeof h.buf, 0, handoff_cb, &h), 0);
    cr_assert_gt(pact_sleep(h.loop, 2 * MS, handoff_cb, &h), 0);
    cr_assert_eq(pthread_create(&h.runner, NULL, run_and_close, &h), 0);
    while (!atomic_load(&h.ran))
        usleep(100);
    /* The runner owns the loop now; closing it from here is refused (on
     * io_uring it could never finish), not a hang. */
    h.foreign_close_result = pact_loop_close(h.loop);
    atomic_store(&h.may_close, 1);
    pthread_join(h.runner, NULL);

    cr_assert_eq(h.run_result, 0, "run on the new thread: %s",
                 pact_err_name(h.run_result));
    cr_assert_eq(atomic_load(&h.recv_result), 5, "recv: %d",
                 atomic_load(&h.recv_result));
    cr_assert_eq(atomic_load(&h.cancelled), 1, "the op left for close");
    cr_assert_eq(memcmp(h.buf, "moved", 5), 0);
    cr_assert_eq(atomic_load(&h.sleep_result), 1);
    cr_assert_eq(h.foreign_close_result, -EPERM);
    cr_assert_eq(h.close_result, 0);
    cr_assert_eq(atomic_load(&h.calls), 3, "recv, sleep, the recv close cancelled");
    cr_assert_eq(atomic_load(&h.wrong_thread), 0, "a callback ran off the runner");
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(h.loop, &st), 0);
    cr_assert_eq(st.ops_live, 0);
    cr_assert_eq(st.stray_completions, 0);
    pact_loop_free(h.loop);
    close(h.sv[0]);
    close(h.sv[1]);
}

/* ---- producers while the loop closes ------------------------------------- */

typedef struct racer {
    pact_loop *loop;
    atomic_int stop;
    atomic_int accepted, refused, other;
} racer;

static atomic_int race_ran;
static void race_cb(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    atomic_fetch_add(&race_ran, 1);
}

static void *race_producer(void *arg)
{
    racer *r = arg;
    while (!atomic_load(&r->stop)) {
        int rc = pact_call_soon_threadsafe(r->loop, race_cb, NULL);
        if (rc == 0)
            atomic_fetch_add(&r->accepted, 1);
        else if (rc == -ESHUTDOWN)
            atomic_fetch_add(&r->refused, 1);
        else
            atomic_fetch_add(&r->other, 1);
        pact_loop_wake(r->loop);
    }
    return NULL;
}

Test(threadsafe, producers_racing_close_are_refused_cleanly)
{
    static racer r;
    r.loop = test_loop_new();
    atomic_store(&race_ran, 0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, race_producer, &r), 0);
    /* Until the producers are well under way. */
    uint64_t end = pact_now() + 10000 * MS;
    while (atomic_load(&race_ran) < 1000) {
        cr_assert(pact_now() < end, "threadsafe callbacks do not run");
        pact_loop_run_once(r.loop, 1 * (int64_t)MS);
    }
    cr_assert_eq(pact_loop_close(r.loop), 0);
    /* After close has returned, every call is refused. */
    int refused_then = atomic_load(&r.refused);
    while (atomic_load(&r.refused) < refused_then + 100)
        usleep(100);
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&r.other), 0);
    cr_assert_gt(atomic_load(&race_ran), 0);
    cr_assert_leq(atomic_load(&race_ran), atomic_load(&r.accepted));
    pact_loop_free(r.loop);
}

/* ---- calls that are not thread-safe, from a thread that does not own the
 * loop ------------------------------------------------------------------- */

/* What another thread got from each call that is not thread-safe. */
typedef struct foreign_calls {
    pact_loop *loop;
    pact_op op;         /* the owner's op */
    pact_handle handle; /* the owner's scheduled callback */
    int sv;
    int64_t call_soon, call_later, call_at, handle_cancel, cancel,
        set_timeout, recv, sleep, run_once, close, error_handler, wait_hooks;
} foreign_calls;

static void count_ran(pact_loop *loop, void *user)
{
    (void)loop;
    atomic_fetch_add((atomic_int *)user, 1);
}

static void op_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    atomic_store((atomic_int *)user, c->result == 0 ? 1 : (int)c->result);
}

static void *call_from_foreign_thread(void *arg)
{
    foreign_calls *f = arg;
    static char buf[8];
    static atomic_int never;
    f->call_soon = pact_call_soon(f->loop, count_ran, &never);
    f->call_later = pact_call_later(f->loop, MS, count_ran, &never);
    f->call_at = pact_call_at(f->loop, pact_now(), count_ran, &never);
    f->handle_cancel = pact_handle_cancel(f->loop, f->handle);
    f->cancel = pact_op_cancel(f->loop, f->op);
    f->set_timeout = pact_op_set_timeout(f->loop, f->op, MS);
    f->recv = pact_recv(f->loop, f->sv, buf, sizeof buf, 0, op_done, &never);
    f->sleep = pact_sleep(f->loop, MS, op_done, &never);
    f->run_once = pact_loop_run_once(f->loop, 0);
    f->close = pact_loop_close(f->loop);
    f->error_handler = pact_loop_set_error_handler(f->loop, NULL, NULL);
    f->wait_hooks = pact_loop_set_wait_hooks(f->loop, NULL, NULL, NULL);
    return NULL;
}

/* Once a loop has run, the thread that ran it owns it: every call that is
 * not thread-safe answers -EPERM on any other thread, in every mode (not
 * only debug), and changes nothing — the owner's callback and op are
 * untouched. */
Test(threadsafe, calls_that_are_not_threadsafe_are_eperm_off_the_owner_thread)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.debug = 0; /* the check is not a debug-mode extra */
    static foreign_calls f;
    cr_assert_eq(pact_loop_create(&f.loop, &o), 0);
    int sv[2];
    make_socketpair(sv);
    f.sv = sv[1];
    atomic_int ran = 0, slept = 0;
    f.op = pact_sleep(f.loop, 30 * MS, op_done, &slept);
    cr_assert_gt(f.op, 0);
    cr_assert_geq(pact_loop_run_once(f.loop, 0), 0); /* this thread owns it */
    f.handle = pact_call_soon(f.loop, count_ran, &ran);
    cr_assert_gt(f.handle, 0);

    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, call_from_foreign_thread, &f), 0);
    pthread_join(th, NULL);
    cr_assert_eq(f.call_soon, -EPERM);
    cr_assert_eq(f.call_later, -EPERM);
    cr_assert_eq(f.call_at, -EPERM);
    cr_assert_eq(f.handle_cancel, -EPERM);
    cr_assert_eq(f.cancel, -EPERM);
    cr_assert_eq(f.set_timeout, -EPERM);
    cr_assert_eq(f.recv, -EPERM);
    cr_assert_eq(f.sleep, -EPERM);
    cr_assert_eq(f.run_once, -EPERM);
    cr_assert_eq(f.close, -EPERM);
    cr_assert_eq(f.error_handler, -EPERM);
    cr_assert_eq(f.wait_hooks, -EPERM);

    uint64_t end = pact_now() + 5000 * MS;
    while ((!atomic_load(&ran) || !atomic_load(&slept)) && pact_now() < end)
        pact_loop_run_once(f.loop, 10 * (int64_t)MS);
    cr_assert_eq(atomic_load(&ran), 1, "the owner's callback ran once");
    cr_assert_eq(atomic_load(&slept), 1, "the owner's sleep was not cancelled");
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(f.loop, &st), 0);
    cr_assert_eq(st.ops_live, 0, "nothing the other thread started is live");
    cr_assert_eq(st.handles_live, 0);
    cr_assert_eq(pact_loop_close(f.loop), 0);
    pact_loop_free(f.loop);
    close(sv[0]);
    close(sv[1]);
}

/* The thread that runs the loop; it also closes it once the test has
 * checked that no other thread may (the owner's io_uring cannot be used
 * from elsewhere, so only it can close the loop). */
typedef struct adopted {
    pact_loop *loop;
    pact_handle call_soon;
    int run, ran, close;
    atomic_int checked_elsewhere, ran_on_owner;
} adopted;

static void *schedule_run_and_close(void *arg)
{
    adopted *a = arg;
    static atomic_int ran;
    atomic_store(&ran, 0);
    a->call_soon = pact_call_soon(a->loop, count_ran, &ran);
    a->run = pact_loop_run(a->loop);
    a->ran = atomic_load(&ran);
    atomic_store(&a->ran_on_owner, 1);
    while (!atomic_load(&a->checked_elsewhere))
        usleep(100);
    a->close = pact_loop_close(a->loop);
    return NULL;
}

/* A loop that has never run has no owner yet: it may be created on one
 * thread and set up and run on another (asyncio's pattern). */
Test(threadsafe, a_loop_that_never_ran_may_be_used_from_another_thread)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.debug = 0;
    static adopted a;
    cr_assert_eq(pact_loop_create(&a.loop, &o), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, schedule_run_and_close, &a), 0);
    while (!atomic_load(&a.ran_on_owner))
        usleep(100);
    /* It belongs to that thread now. */
    static atomic_int never;
    int late = (int)pact_call_soon(a.loop, count_ran, &never);
    int close_here = pact_loop_close(a.loop);
    atomic_store(&a.checked_elsewhere, 1);
    pthread_join(th, NULL);
    cr_assert_gt(a.call_soon, 0, "call_soon: %s", pact_err_name((int)a.call_soon));
    cr_assert_eq(a.run, 0);
    cr_assert_eq(a.ran, 1, "the callback ran on the new thread");
    cr_assert_eq(late, -EPERM);
    cr_assert_eq(close_here, -EPERM);
    cr_assert_eq(a.close, 0);
    cr_assert_eq(atomic_load(&never), 0);
    pact_loop_free(a.loop);
}

/* ---- objects the loop made: owner-thread checks ---------------------------- */

/* ThreadSanitizer cannot follow pact's vfork-style clone (its runtime
 * aborts in the child), so a TSan build checks every kind but processes. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

typedef struct foreign_objects {
    pact_transport *t;
    pact_server *srv;
    pact_datagram *dg;
    pact_process *proc;
    int file_fd;
    /* the results, one per call, from the other thread */
    int t_write, t_writev, t_write_eof, t_sendfile, t_limits, t_marks, t_pause,
        t_resume, t_set_protocol, t_close, t_abort;
    int s_close, s_wait_closed;
    int d_sendto, d_limits, d_marks, d_pause, d_resume, d_close, d_abort;
    int p_write, p_write_eof, p_signal, p_terminate, p_kill, p_close;
    int64_t p_wait;
    atomic_int lost, dg_lost, proc_lost, waited;
} foreign_objects;

static void obj_t_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    atomic_fetch_add(&((foreign_objects *)user)->lost, 1);
}

static const pact_protocol obj_t_proto = {.connection_lost = obj_t_lost};

static int obj_factory(pact_server *s, void *fu, const pact_protocol **proto,
                       void **user)
{
    (void)s;
    *proto = &obj_t_proto;
    *user = fu;
    return 0;
}

static void obj_dg_lost(pact_datagram *ep, int err, void *user)
{
    (void)ep;
    (void)err;
    atomic_fetch_add(&((foreign_objects *)user)->dg_lost, 1);
}

static const pact_datagram_protocol obj_dg_proto = {.connection_lost = obj_dg_lost};

static void obj_proc_lost(pact_process *p, void *user)
{
    (void)p;
    atomic_fetch_add(&((foreign_objects *)user)->proc_lost, 1);
}

static const pact_subprocess_protocol obj_proc_proto = {.connection_lost = obj_proc_lost};

static void obj_never(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    cr_assert_fail("a callback registered from another thread ran");
}

static void obj_op_never(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)c;
    (void)user;
    cr_assert_fail("an op started from another thread completed");
}

static void *call_objects_from_foreign_thread(void *arg)
{
    foreign_objects *f = arg;
    struct iovec iov = {"x", 1};
    struct sockaddr_in to = {.sin_family = AF_INET,
                             .sin_port = htons(9),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    f->t_write = pact_transport_write(f->t, "x", 1);
    f->t_writev = pact_transport_writev(f->t, &iov, 1);
    f->t_write_eof = pact_transport_write_eof(f->t);
    f->t_sendfile = pact_transport_sendfile(f->t, f->file_fd, 0, 1, obj_op_never, NULL);
    f->t_limits = pact_transport_set_write_buffer_limits(f->t, 100, 10);
    f->t_marks = pact_transport_set_write_marks(f->t, 0, 0);
    f->t_pause = pact_transport_pause_reading(f->t);
    f->t_resume = pact_transport_resume_reading(f->t);
    f->t_set_protocol = pact_transport_set_protocol(f->t, &obj_t_proto, NULL);
    f->t_close = pact_transport_close(f->t);
    f->t_abort = pact_transport_abort(f->t);
    f->s_close = pact_server_close(f->srv);
    f->s_wait_closed = pact_server_wait_closed(f->srv, obj_never, NULL);
    f->d_sendto = pact_datagram_sendto(f->dg, "x", 1, (struct sockaddr *)&to, sizeof to);
    f->d_limits = pact_datagram_set_write_buffer_limits(f->dg, 100, 10);
    f->d_marks = pact_datagram_set_write_marks(f->dg, 0, 0);
    f->d_pause = pact_datagram_pause_reading(f->dg);
    f->d_resume = pact_datagram_resume_reading(f->dg);
    f->d_close = pact_datagram_close(f->dg);
    f->d_abort = pact_datagram_abort(f->dg);
    if (!f->proc)
        return NULL;
    f->p_write = pact_process_write(f->proc, "x", 1);
    f->p_write_eof = pact_process_write_eof(f->proc);
    f->p_signal = pact_process_send_signal(f->proc, SIGTERM);
    f->p_terminate = pact_process_terminate(f->proc);
    f->p_kill = pact_process_kill(f->proc);
    f->p_wait = pact_process_wait(f->proc, obj_op_never, NULL);
    f->p_close = pact_process_close(f->proc);
    return NULL;
}

/* The calls that change a transport, server, datagram endpoint or
 * process answer -EPERM on a thread that does not own the loop, in every
 * mode, and change nothing: each object is still open and idle, and the
 * owner then closes each one with its usual connection_lost. */
Test(threadsafe, object_calls_are_eperm_off_the_owner_thread)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.debug = 0;
    pact_loop *loop;
    cr_assert_eq(pact_loop_create(&loop, &o), 0);
    static foreign_objects f;
    memset(&f, 0, sizeof f);
    int sv[2];
    make_socketpair(sv);
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &obj_t_proto, &f, &f.t), 0);
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, obj_factory, &f, &f.srv), 0);
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL, &obj_dg_proto, &f, &f.dg), 0);
    char *argv[] = {"/bin/cat", NULL};
    pact_process_options po;
    pact_process_options_init(&po);
    po.argv = argv;
    po.stdio[0].kind = PACT_STDIO_PIPE;
    po.stdio[1].kind = PACT_STDIO_DEVNULL;
    if (!UNDER_TSAN)
        cr_assert_eq(pact_process_spawn(loop, &po, &obj_proc_proto, &f, &f.proc), 0);
    f.file_fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    cr_assert_geq(f.file_fd, 0);
    for (int i = 0; i < 5; i++) /* this thread owns the loop; all made */
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);

    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, call_objects_from_foreign_thread, &f), 0);
    pthread_join(th, NULL);
    int results[] = {f.t_write, f.t_writev, f.t_write_eof, f.t_sendfile, f.t_limits,
                     f.t_marks, f.t_pause, f.t_resume, f.t_set_protocol, f.t_close,
                     f.t_abort, f.s_close, f.s_wait_closed, f.d_sendto, f.d_limits,
                     f.d_marks, f.d_pause,
                     f.d_resume, f.d_close, f.d_abort, f.p_write, f.p_write_eof,
                     f.p_signal, f.p_terminate, f.p_kill, (int)f.p_wait, f.p_close};
    size_t checked = sizeof results / sizeof results[0];
    if (!f.proc)
        checked -= 7; /* the process calls, not made under TSan */
    for (size_t i = 0; i < checked; i++)
        cr_assert_eq(results[i], -EPERM, "call %zu answered %d (%s)", i, results[i],
                     pact_err_name(results[i]));

    /* Nothing changed. */
    cr_assert_eq(pact_transport_is_closing(f.t), 0);
    cr_assert_eq(pact_transport_is_reading(f.t), 1);
    cr_assert_eq(pact_transport_write_buffer_size(f.t), 0);
    size_t high, low;
    pact_transport_get_write_buffer_limits(f.t, &high, &low);
    cr_assert_neq(high, 100);
    cr_assert_eq(pact_transport_user(f.t), &f);
    cr_assert_eq(pact_datagram_is_closing(f.dg), 0);
    cr_assert_eq(pact_datagram_is_reading(f.dg), 1);
    cr_assert_eq(pact_datagram_write_buffer_size(f.dg), 0);
    int rc;
    if (f.proc)
        cr_assert_eq(pact_process_returncode(f.proc, &rc), -EAGAIN);
    for (int i = 0; i < 5; i++)
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert_eq(atomic_load(&f.lost) + atomic_load(&f.dg_lost) + atomic_load(&f.proc_lost), 0);
    if (f.proc)
        cr_assert_eq(pact_process_returncode(f.proc, &rc), -EAGAIN, "cat still runs");

    /* The owner closes each, once. */
    cr_assert_eq(pact_transport_close(f.t), 0);
    cr_assert_eq(pact_server_close(f.srv), 0);
    cr_assert_eq(pact_datagram_close(f.dg), 0);
    if (f.proc)
        cr_assert_eq(pact_process_close(f.proc), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(atomic_load(&f.lost), 1);
    cr_assert_eq(atomic_load(&f.dg_lost), 1);
    cr_assert_eq(atomic_load(&f.proc_lost), f.proc ? 1 : 0);
    cr_assert_eq(pact_loop_close(loop), 0);
    pact_loop_free(loop);
    close(f.file_fd);
    close(sv[1]);
}
