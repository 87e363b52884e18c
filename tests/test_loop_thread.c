/* SPDX-License-Identifier: MIT */
/* Which thread may drive a loop: a pinned loop (the default) belongs to
 * the thread that first ran it, for good, and a thread that merely got the
 * dead owner's pthread_t is refused; a movable loop
 * (pact_loop_options.movable) may be run on one thread, stopped, and run or
 * closed on another — asyncio's threading.Thread(target=loop.run_forever)
 * then loop.close() on the main thread. Runs under ThreadSanitizer too
 * (build-tsan). */
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/loop.h>

#include "helpers.h"
#include "kernel_features.h"
#include "loop.h" /* send slots, fixed-file slots: which path a move took */

TestSuite(loop_thread, .timeout = 60);

static pact_loop *loop_new(int movable)
{
    return test_loop_new_movable(movable);
}

/* A movable loop starts on io_uring's fast ring (SINGLE_ISSUER,
 * DEFER_TASKRUN, multishot receive into provided buffers), bound to the
 * first thread that runs it, as a pinned loop does: most loops never
 * move. With DEFER_TASKRUN the kernel receives only inside the loop's
 * wait, so a multishot receive does not drain a socket ahead of the
 * protocol while the loop is not running. When another thread runs it,
 * it moves to a ring bound to no thread, which has no DEFER_TASKRUN: from
 * then on it receives through poll and recv. */
static void *run_once_and_return(void *arg)
{
    pact_loop *loop = arg;
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    return NULL;
}

/* Whether a movable io_uring loop may start on the fast ring here: the
 * kernel must end a closed ring's waiting receives without doing them
 * (Linux 6.17, 6.16.9, 6.12.49; see ring_teardown_skips_waiting_io in
 * engine_uring.c), and no test mask may hide that or the setup flags. */
static int movable_loops_start_fast(void)
{
    if (uring_feature_masked("teardown") || uring_feature_masked("setup"))
        return 0;
    return kernel_ring_teardown_skips_waiting_io();
}

Test(loop_thread, a_movable_loop_receives_with_multishot_until_it_changes_threads)
{
    pact_loop *pinned = loop_new(0);
    pact_loop *movable = loop_new(1);
    const char *fast = pact_loop_recv_multishot_mode(pinned);
    if (pact_loop_engine(movable) == PACT_ENGINE_URING && !movable_loops_start_fast())
        fast = "poll"; /* the plain ring from the start: see the next test */
    cr_assert_str_eq(pact_loop_recv_multishot_mode(movable), fast);
    pthread_t a;
    cr_assert_eq(pthread_create(&a, NULL, run_once_and_return, movable), 0);
    pthread_join(a, NULL);
    cr_assert_str_eq(pact_loop_recv_multishot_mode(movable), fast,
                     "running on one thread does not move the loop");
    cr_assert_geq(pact_loop_run_once(movable, 0), 0);
    if (pact_loop_engine(movable) == PACT_ENGINE_URING)
        cr_assert_str_eq(pact_loop_recv_multishot_mode(movable), "poll");
    else
        cr_assert_str_eq(pact_loop_recv_multishot_mode(movable), fast);
    pact_loop_free(movable);
    pact_loop_free(pinned);
}

/* A multishot receive in flight when the loop changes threads: bytes
 * received on thread A, bytes that came while nobody ran the loop, and
 * bytes that come after the move arrive each once, in order, on the
 * thread running the loop; a send A had started completes too. */
typedef struct {
    pact_loop *loop;
    int sv[2];
    char got[64];
    size_t len;
    int chunks, finals;
    int64_t final;
    pthread_t last_thread;
    int sent;
} stream_move;

static void ms_recv_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    stream_move *s = user;
    s->last_thread = pthread_self();
    if (c->more) {
        cr_assert_leq(s->len + (size_t)c->result, sizeof s->got);
        memcpy(s->got + s->len, c->data, (size_t)c->result);
        s->len += (size_t)c->result;
        s->chunks++;
        return;
    }
    s->finals++;
    s->final = c->result;
}

static void ms_send_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    stream_move *s = user;
    cr_assert_eq(c->result, 4);
    s->sent++;
}

static void ms_start(pact_loop *loop, void *user)
{
    stream_move *s = user;
    cr_assert_gt(pact_recv_multishot(loop, s->sv[0], ms_recv_cb, s), 0);
}

static void *ms_run_until_one(void *arg)
{
    stream_move *s = arg;
    uint64_t end = pact_now() + 5000 * MS;
    while (s->len < 3 && pact_now() < end)
        cr_assert_geq(pact_loop_run_once(s->loop, 10 * (int64_t)MS), 0);
    /* A send started here, submitted by this thread's next wait (or
     * left in the SQ for the next thread). */
    cr_assert_gt(pact_send(s->loop, s->sv[0], "back", 4, 0, ms_send_cb, s), 0);
    cr_assert_geq(pact_loop_run_once(s->loop, 0), 0);
    return NULL;
}

Test(loop_thread, a_multishot_receive_carries_over_when_a_movable_loop_changes_threads)
{
    stream_move s = {.loop = loop_new(1)};
    make_socketpair(s.sv);
    cr_assert_gt(pact_call_soon(s.loop, ms_start, &s), 0);
    cr_assert_eq(write(s.sv[1], "one", 3), 3);
    pthread_t a;
    cr_assert_eq(pthread_create(&a, NULL, ms_run_until_one, &s), 0);
    pthread_join(a, NULL);
    cr_assert_eq(s.len, 3);
    cr_assert(pthread_equal(s.last_thread, a));
    /* Nobody runs the loop: these wait in the socket (or in the kernel's
     * CQ of the old ring), never lost nor doubled. */
    cr_assert_eq(write(s.sv[1], "two", 3), 3);
    uint64_t end = pact_now() + 5000 * MS;
    while ((s.len < 6 || s.sent == 0) && pact_now() < end)
        cr_assert_geq(pact_loop_run_once(s.loop, 10 * (int64_t)MS), 0);
    cr_assert_eq(write(s.sv[1], "three", 5), 5);
    while (s.len < 11 && pact_now() < end)
        cr_assert_geq(pact_loop_run_once(s.loop, 10 * (int64_t)MS), 0);
    cr_assert_eq(s.len, 11, "got %zu bytes", s.len);
    cr_assert_eq(memcmp(s.got, "onetwothree", 11), 0);
    cr_assert(pthread_equal(s.last_thread, pthread_self()));
    cr_assert_eq(s.sent, 1);
    char back[8];
    cr_assert_eq(read(s.sv[1], back, sizeof back), 4);
    cr_assert_eq(memcmp(back, "back", 4), 0);
    cr_assert_eq(s.finals, 0);
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(s.loop, &st), 0);
    cr_expect_eq(st.stray_completions, 0);
    test_loop_free(s.loop);
    cr_assert_eq(s.finals, 1);
    cr_assert_eq(s.final, -ECANCELED);
    close(s.sv[0]);
    close(s.sv[1]);
}

/* ---- pinned: pthread_t reuse ------------------------------------------- */

typedef struct {
    pact_loop *loop;
    pthread_t self;
    int result;
} run_once_job;

static void *run_once_thread(void *arg)
{
    run_once_job *j = arg;
    j->self = pthread_self();
    j->result = pact_loop_run_once(j->loop, 0);
    return NULL;
}

/* glibc gives a finished thread's pthread_t (its stack and descriptor) to
 * the next thread it creates. pact named its owner by pthread_t, so that
 * next thread was taken for the dead owner: run went on to a ring bound to
 * a task that no longer exists, whose io_uring_enter fails with EEXIST
 * forever. */
Test(loop_thread, a_pinned_loop_refuses_a_new_thread_that_got_the_dead_owners_pthread_t)
{
    pact_loop *loop = loop_new(0);
    run_once_job first = {.loop = loop}, second = {.loop = loop};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, run_once_thread, &first), 0);
    pthread_join(th, NULL);
    cr_assert_geq(first.result, 0, "first run: %s", pact_strerror(first.result));
    int reused = 0;
    for (int attempt = 0; attempt < 20 && !reused; attempt++) {
        cr_assert_eq(pthread_create(&th, NULL, run_once_thread, &second), 0);
        pthread_join(th, NULL);
        cr_assert_eq(second.result, -EPERM, "attempt %d: %s", attempt,
                     pact_strerror(second.result));
        reused = pthread_equal(first.self, second.self);
    }
    cr_log_info("the dead owner's pthread_t was %s", reused ? "reused" : "never reused");
    /* The owner is gone: nobody may close the loop (its ring answers only
     * the dead thread), so it is left, reachable, for the process's exit
     * to clean up: a pinned loop must be closed by the thread that ran it. */
    cr_assert_eq(pact_loop_close(loop), -EPERM);
    cr_assert_eq(pact_loop_free(loop), -EPERM);
    static pact_loop *abandoned;
    abandoned = loop;
    (void)abandoned;
}

/* ---- movable ------------------------------------------------------------ */

typedef struct {
    pact_loop *loop;
    int sv[2];
    char buf[64];
    atomic_int started;   /* the recv was started (on the running thread) */
    atomic_int calls;     /* recv callbacks */
    atomic_llong result;
    pthread_t cb_thread;
    pact_op recv;
    int run_result;
    atomic_int run_returned;
    /* The runner waits here after its run, asleep, until released. */
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int release;
} moving;

static void recv_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    moving *m = user;
    m->cb_thread = pthread_self();
    atomic_store(&m->result, c->result);
    atomic_fetch_add(&m->calls, 1);
}

static void start_recv(pact_loop *loop, void *user)
{
    moving *m = user;
    m->recv = pact_recv(loop, m->sv[0], m->buf, sizeof m->buf, 0, recv_done, m);
    cr_assert_gt(m->recv, 0);
    atomic_store(&m->started, 1);
}

static void moving_init(moving *m, pact_loop *loop)
{
    memset(m, 0, sizeof *m);
    m->loop = loop;
    make_socketpair(m->sv);
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cv, NULL);
}

static void moving_destroy(moving *m)
{
    close(m->sv[0]);
    close(m->sv[1]);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cv);
}

/* Runs the loop until stopped, then sleeps until released: the thread that
 * submitted the recv is alive but asleep while another thread drives the
 * loop (without DEFER_TASKRUN a completion is finished by the submitter's
 * task work, so this is the case that hangs if that thread is not woken). */
static void *run_then_sleep(void *arg)
{
    moving *m = arg;
    m->run_result = pact_loop_run(m->loop);
    atomic_store(&m->run_returned, 1);
    pthread_mutex_lock(&m->lock);
    while (!m->release)
        pthread_cond_wait(&m->cv, &m->lock);
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

static void release_sleeper(moving *m, pthread_t th)
{
    pthread_mutex_lock(&m->lock);
    m->release = 1;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->lock);
    pthread_join(th, NULL);
}

/* Thread A runs the loop and starts a recv; the main thread stops it and,
 * without joining A, closes it as soon as A's run has returned (close
 * answers -EBUSY until then): the recv A submitted completes once, on the
 * closing thread, with -ECANCELED. */
Test(loop_thread, a_movable_loop_runs_in_one_thread_and_is_closed_in_another)
{
    pact_loop *loop = loop_new(1);
    moving m;
    moving_init(&m, loop);
    cr_assert_gt(pact_call_soon(loop, start_recv, &m), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, run_then_sleep, &m), 0);
    while (!atomic_load(&m.started))
        usleep(1000);
    /* While A runs it, other threads cannot drive it or change it. */
    cr_assert_eq(pact_loop_run_once(loop, 0), -EBUSY);
    cr_assert_eq(pact_loop_close(loop), -EBUSY);
    cr_assert_eq(pact_call_soon(loop, start_recv, &m), -EPERM);
    cr_assert_eq(pact_op_cancel(loop, m.recv), -EPERM);
    cr_assert_eq(pact_loop_stop(loop), 0);
    int r;
    uint64_t end = pact_now() + 10000 * MS;
    while ((r = pact_loop_close(loop)) == -EBUSY) {
        cr_assert_lt(pact_now(), end, "close stayed -EBUSY");
        usleep(1000);
    }
    cr_assert_eq(r, 0, "close: %s", pact_strerror(r));
    cr_assert_eq(atomic_load(&m.calls), 1);
    cr_assert_eq(atomic_load(&m.result), -ECANCELED);
    cr_assert(pthread_equal(m.cb_thread, pthread_self()));
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    cr_expect_eq(st.stray_completions, 0);
    cr_expect_eq(st.ops_started, st.ops_completed);
    release_sleeper(&m, th);
    cr_assert_eq(m.run_result, 0);
    cr_assert_eq(pact_loop_free(loop), 0);
    moving_destroy(&m);
}

typedef struct {
    moving *m;
    int run_result;
} second_runner;

static void *run_until_received(void *arg)
{
    second_runner *s = arg;
    uint64_t end = pact_now() + 10000 * MS;
    while (atomic_load(&s->m->calls) == 0 && pact_now() < end) {
        int r = pact_loop_run_once(s->m->loop, 10 * (int64_t)MS);
        if (r < 0) {
            s->run_result = r;
            return NULL;
        }
    }
    s->run_result = 0;
    return NULL;
}

/* Thread A runs the loop and starts a recv, then stops and sleeps; the
 * data arrives while nobody runs the loop; thread B runs it and gets the
 * recv's bytes (the op A submitted completes on B); then the main thread
 * runs and closes it. */
Test(loop_thread, a_movable_loop_runs_in_one_thread_then_in_another)
{
    pact_loop *loop = loop_new(1);
    moving m;
    moving_init(&m, loop);
    cr_assert_gt(pact_call_soon(loop, start_recv, &m), 0);
    pthread_t a, b;
    cr_assert_eq(pthread_create(&a, NULL, run_then_sleep, &m), 0);
    while (!atomic_load(&m.started))
        usleep(1000);
    cr_assert_eq(pact_loop_stop(loop), 0);
    /* The bytes come while nobody runs the loop. */
    while (!atomic_load(&m.run_returned))
        usleep(1000);
    cr_assert_eq(write(m.sv[1], "moved", 5), 5);
    second_runner s = {.m = &m, .run_result = -EBUSY};
    uint64_t end = pact_now() + 10000 * MS;
    cr_assert_eq(pthread_create(&b, NULL, run_until_received, &s), 0);
    pthread_join(b, NULL);
    cr_assert_lt(pact_now(), end);
    cr_assert_eq(s.run_result, 0, "B's run: %s", pact_strerror(s.run_result));
    cr_assert_eq(atomic_load(&m.calls), 1);
    cr_assert_eq(atomic_load(&m.result), 5);
    cr_assert_eq(memcmp(m.buf, "moved", 5), 0);
    cr_assert(pthread_equal(m.cb_thread, b));
    /* And a third thread (this one) may run it and close it. */
    atomic_store(&m.calls, 0);
    cr_assert_gt(pact_call_soon(loop, start_recv, &m), 0);
    cr_assert_eq(write(m.sv[1], "third", 5), 5);
    run_until_received(&s);
    cr_assert_eq(s.run_result, 0);
    cr_assert_eq(atomic_load(&m.result), 5);
    cr_assert(pthread_equal(m.cb_thread, pthread_self()));
    release_sleeper(&m, a);
    cr_assert_eq(m.run_result, 0);
    test_loop_free(loop);
    moving_destroy(&m);
}

/* A pinned loop keeps its rule: after thread A ran it, the main thread may
 * neither run, close nor schedule on it (A closes it); a movable one may be
 * used and closed by the thread that made it once A's run is over. */
typedef struct {
    pact_loop *loop;
    int run_result, close_result;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int ran, release;
} owner_job;

static void *run_once_wait_then_close(void *arg)
{
    owner_job *j = arg;
    j->run_result = pact_loop_run_once(j->loop, 0);
    pthread_mutex_lock(&j->lock);
    j->ran = 1;
    pthread_cond_broadcast(&j->cv);
    while (!j->release)
        pthread_cond_wait(&j->cv, &j->lock);
    pthread_mutex_unlock(&j->lock);
    j->close_result = j->release == 1 ? pact_loop_close(j->loop) : 0;
    return NULL;
}

static void noop(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
}

Test(loop_thread, after_a_thread_ran_it_a_pinned_loop_is_eperm_elsewhere_and_a_movable_one_is_not)
{
    for (int movable = 0; movable <= 1; movable++) {
        owner_job j = {.loop = loop_new(movable)};
        pthread_mutex_init(&j.lock, NULL);
        pthread_cond_init(&j.cv, NULL);
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, run_once_wait_then_close, &j), 0);
        pthread_mutex_lock(&j.lock);
        while (!j.ran)
            pthread_cond_wait(&j.cv, &j.lock);
        pthread_mutex_unlock(&j.lock);
        cr_assert_geq(j.run_result, 0);
        if (movable) {
            cr_assert_gt(pact_call_soon(j.loop, noop, NULL), 0);
            cr_assert_eq(pact_loop_run_once(j.loop, 0), 0);
            cr_assert_eq(pact_loop_close(j.loop), 0);
        } else {
            cr_assert_eq(pact_call_soon(j.loop, noop, NULL), -EPERM);
            cr_assert_eq(pact_loop_run_once(j.loop, 0), -EPERM);
            cr_assert_eq(pact_loop_close(j.loop), -EPERM);
            cr_assert_eq(pact_loop_free(j.loop), -EPERM);
        }
        pthread_mutex_lock(&j.lock);
        j.release = movable ? 2 : 1; /* the pinned loop's owner closes it */
        pthread_cond_broadcast(&j.cv);
        pthread_mutex_unlock(&j.lock);
        pthread_join(th, NULL);
        cr_assert_eq(j.close_result, 0, "movable=%d: %s", movable,
                     pact_strerror(j.close_result));
        cr_assert_eq(pact_loop_free(j.loop), 0);
        pthread_mutex_destroy(&j.lock);
        pthread_cond_destroy(&j.cv);
    }
}

/* The asyncio pattern again, with the thread gone: thread A runs the loop,
 * starts a recv and a watcher, is stopped and exits. Without io_uring's
 * DEFER_TASKRUN the kernel finishes an op with task work of the thread
 * that submitted it, and for an exited thread it ends the op with
 * -ECANCELED when its socket becomes ready; nobody cancelled them, so the
 * loop submits them again and they deliver what arrived. */
typedef struct {
    pact_loop *loop;
    int sv[2], wv[2];
    char buf[16];
    int64_t recv_result;
    int recv_calls, watch_calls, watch_finals;
    int64_t watch_final;
    pact_op watch;
    int run_result;
} orphans;

static void orphan_recv_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    orphans *o = user;
    o->recv_calls++;
    o->recv_result = c->result;
}

static void orphan_watch_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    orphans *o = user;
    if (!c->more) {
        o->watch_finals++;
        o->watch_final = c->result;
        return;
    }
    char b[16];
    if (read(o->wv[0], b, sizeof b) > 0)
        o->watch_calls++;
    (void)loop;
}

/* Runs `turns` turns of loop on the calling thread without waiting (the
 * first starts what was queued, the next submits it, from this thread):
 * 0, or the first negative result. */
static int run_turns_here(pact_loop *loop, int turns)
{
    for (int i = 0; i < turns; i++) {
        int r = pact_loop_run_once(loop, 0);
        if (r < 0)
            return r;
    }
    return 0;
}

static void orphan_start(pact_loop *loop, void *user)
{
    orphans *o = user;
    cr_assert_gt(pact_recv(loop, o->sv[0], o->buf, sizeof o->buf, 0,
                           orphan_recv_done, o), 0);
    o->watch = pact_watch(loop, o->wv[0], POLLIN, orphan_watch_cb, o);
    cr_assert_gt(o->watch, 0);
}

static void *orphan_thread(void *arg)
{
    orphans *o = arg;
    o->run_result = run_turns_here(o->loop, 2); /* start, then submit */
    return NULL;
}

Test(loop_thread, ops_started_by_a_thread_that_has_exited_still_deliver_on_a_movable_loop)
{
    orphans o = {.loop = loop_new(1)};
    make_socketpair(o.sv);
    make_socketpair(o.wv);
    cr_assert_gt(pact_call_soon(o.loop, orphan_start, &o), 0);
    pthread_t a;
    cr_assert_eq(pthread_create(&a, NULL, orphan_thread, &o), 0);
    pthread_join(a, NULL);
    cr_assert_eq(o.run_result, 0);
    cr_assert_eq(o.recv_calls, 0);
    cr_assert_eq(write(o.sv[1], "late", 4), 4);
    cr_assert_eq(write(o.wv[1], "w", 1), 1);
    uint64_t end = pact_now() + 5000 * MS;
    while ((o.recv_calls == 0 || o.watch_calls == 0) && pact_now() < end)
        cr_assert_geq(pact_loop_run_once(o.loop, 10 * (int64_t)MS), 0);
    cr_assert_eq(o.recv_calls, 1);
    cr_assert_eq(o.recv_result, 4, "recv: %s", pact_strerror((int)o.recv_result));
    cr_assert_eq(memcmp(o.buf, "late", 4), 0);
    cr_assert_eq(o.watch_calls, 1);
    cr_assert_eq(o.watch_finals, 0);
    cr_assert_eq(pact_op_cancel(o.loop, o.watch), 0);
    test_loop_free(o.loop);
    cr_assert_eq(o.watch_finals, 1);
    cr_assert_eq(o.watch_final, -ECANCELED);
    close(o.sv[0]);
    close(o.sv[1]);
    close(o.wv[0]);
    close(o.wv[1]);
}

/* A read of a regular file started on a thread that has exited: pact
 * itself starts such reads (pact_sendfile's copy fallback). On io_uring
 * the kernel may do one on its worker threads with the completion owed to
 * the thread that submitted it, so a movable loop sends them to the
 * thread pool, like its other file ops, and a move never has to wait for
 * one. The move used to be refused with -EBUSY while one was in flight,
 * for run, run_once and close alike: with its last thread gone, the loop
 * could be neither run nor closed. The file's pages are dropped from the
 * cache so that the read is still with the kernel (or a pool worker) when
 * the thread exits. */
#define FILE_READ_BYTES (8u << 20)

typedef struct {
    pact_loop *loop;
    int fd;
    unsigned char *buf;
    int calls;
    int64_t result;
    int run_result;
} file_read_move;

static void file_read_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    file_read_move *f = user;
    f->calls++;
    f->result = c->result;
}

static void file_read_start(pact_loop *loop, void *user)
{
    file_read_move *f = user;
    cr_assert_gt(pact_read(loop, f->fd, f->buf, FILE_READ_BYTES, 0,
                           file_read_done, f), 0);
}

static void *file_read_thread(void *arg)
{
    file_read_move *f = arg;
    f->run_result = run_turns_here(f->loop, 2); /* start, then submit */
    return NULL;
}

static int uncached_file(size_t len)
{
    char path[] = "/var/tmp/pact-movable-read-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    unsigned char *chunk = malloc(1 << 16);
    cr_assert_not_null(chunk);
    for (size_t off = 0; off < len; off += 1 << 16) {
        for (size_t i = 0; i < 1 << 16; i++)
            chunk[i] = (unsigned char)((off + i) * 7 + 3);
        cr_assert_eq(pwrite(fd, chunk, 1 << 16, (off_t)off), 1 << 16);
    }
    free(chunk);
    cr_assert_eq(fsync(fd), 0);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return fd;
}

static void read_crosses_threads(int fd, int close_only)
{
    file_read_move f = {.loop = loop_new(1), .fd = fd};
    f.buf = malloc(FILE_READ_BYTES);
    cr_assert_not_null(f.buf);
    cr_assert_gt(pact_call_soon(f.loop, file_read_start, &f), 0);
    pthread_t a;
    cr_assert_eq(pthread_create(&a, NULL, file_read_thread, &f), 0);
    pthread_join(a, NULL);
    cr_assert_eq(f.run_result, 0, "run on A: %s", pact_strerror(f.run_result));
    cr_log_info("the read was %s when A exited",
                f.calls ? "done" : "in flight");
    if (!close_only) {
        uint64_t end = pact_now() + 10000 * MS;
        while (f.calls == 0 && pact_now() < end) {
            int r = pact_loop_run_once(f.loop, 10 * (int64_t)MS);
            cr_assert_geq(r, 0, "run_once here: %s", pact_strerror(r));
        }
        cr_assert_eq(f.calls, 1);
        cr_assert_eq(f.result, (int64_t)FILE_READ_BYTES, "read: %s",
                     pact_strerror((int)f.result));
        for (size_t i = 0; i < FILE_READ_BYTES; i += 4093)
            cr_assert_eq(f.buf[i], (unsigned char)(i * 7 + 3), "byte %zu", i);
    }
    int r = pact_loop_close(f.loop);
    cr_assert_eq(r, 0, "close here: %s", pact_strerror(r));
    /* Exactly once: completed here, or (close_only) by the close. */
    cr_assert_eq(f.calls, 1);
    if (!close_only)
        cr_assert_eq(f.result, (int64_t)FILE_READ_BYTES);
    cr_assert_eq(pact_loop_free(f.loop), 0);
    free(f.buf);
}

static void file_read_crosses_threads(int close_only)
{
    int fd = uncached_file(FILE_READ_BYTES);
    read_crosses_threads(fd, close_only);
    close(fd);
}

Test(loop_thread, a_file_read_in_flight_carries_over_when_its_thread_has_exited)
{
    file_read_crosses_threads(0);
}

Test(loop_thread, a_movable_loop_with_a_file_read_in_flight_closes_after_its_thread_exited)
{
    file_read_crosses_threads(1);
}

/* The old ring's CQ overflowed: completions the kernel keeps in its
 * overflow list for the thread the ring is bound to, which another
 * thread cannot reap (io_uring answers it EEXIST). The move used to log
 * that and submit every op still in flight again, so a send whose
 * completion was in that list was sent twice. Now such an op ends with
 * -EOVERFLOW: done or not, never done twice. A queue depth of 2 (a CQ
 * of 8) and 16 sends that complete at once, each on its own socket (the
 * sends of one socket go one at a time): the turn that submits them
 * reaps one CQ's worth and leaves the rest in the overflow list. */
#define OVERFLOW_SENDS 16

typedef struct {
    pact_loop *loop;
    int sv[OVERFLOW_SENDS][2];
    unsigned char byte[OVERFLOW_SENDS];
    int calls[OVERFLOW_SENDS];
    int64_t result[OVERFLOW_SENDS];
    int run_result;
} overflow_sends;

typedef struct {
    overflow_sends *o;
    int i;
} overflow_send;

static overflow_send overflow_slots[OVERFLOW_SENDS];

static void overflow_send_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    overflow_send *s = user;
    s->o->calls[s->i]++;
    s->o->result[s->i] = c->result;
}

static void overflow_start(pact_loop *loop, void *user)
{
    overflow_sends *o = user;
    for (int i = 0; i < OVERFLOW_SENDS; i++) {
        overflow_slots[i] = (overflow_send){o, i};
        o->byte[i] = (unsigned char)('a' + i);
        cr_assert_gt(pact_send(loop, o->sv[i][0], &o->byte[i], 1, 0,
                               overflow_send_done, &overflow_slots[i]), 0);
    }
}

static void *overflow_thread(void *arg)
{
    overflow_sends *o = arg;
    o->run_result = run_turns_here(o->loop, 2); /* start, then submit */
    return NULL;
}

Test(loop_thread, a_send_whose_completion_overflowed_is_not_sent_again_after_a_move)
{
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    opts.debug = 1;
    opts.movable = 1;
    opts.queue_depth = 2;
    overflow_sends o = {0};
    cr_assert_eq(pact_loop_create(&o.loop, &opts), 0);
    for (int i = 0; i < OVERFLOW_SENDS; i++)
        make_socketpair(o.sv[i]);
    cr_assert_gt(pact_call_soon(o.loop, overflow_start, &o), 0);
    pthread_t a;
    cr_assert_eq(pthread_create(&a, NULL, overflow_thread, &o), 0);
    pthread_join(a, NULL);
    cr_assert_eq(o.run_result, 0, "run on A: %s", pact_strerror(o.run_result));
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(o.loop, &st), 0);
    int done_on_a = 0;
    for (int i = 0; i < OVERFLOW_SENDS; i++)
        done_on_a += o.calls[i];
    cr_log_info("%d of %d sends completed on A, CQ overflows %llu", done_on_a,
                OVERFLOW_SENDS, (unsigned long long)st.cq_overflows);
    if (pact_loop_engine(o.loop) == PACT_ENGINE_URING)
        cr_assert_gt(st.cq_overflows, 0, "the CQ did not overflow: no test");
    uint64_t end = pact_now() + 5000 * MS;
    int all;
    do {
        cr_assert_geq(pact_loop_run_once(o.loop, 10 * (int64_t)MS), 0);
        all = 1;
        for (int i = 0; i < OVERFLOW_SENDS; i++)
            all &= o.calls[i] > 0;
    } while (!all && pact_now() < end);
    int failed = 0;
    for (int i = 0; i < OVERFLOW_SENDS; i++) {
        cr_assert_eq(o.calls[i], 1, "send %d: %d callbacks", i, o.calls[i]);
        unsigned char got[4];
        ssize_t n = read(o.sv[i][1], got, sizeof got);
        /* Sent once, or (its completion lost) reported as such; never twice. */
        if (o.result[i] == 1) {
            cr_assert_eq(n, 1, "send %d: %zd bytes arrived", i, n);
            cr_assert_eq(got[0], o.byte[i]);
        } else {
            cr_assert_eq(o.result[i], -EOVERFLOW, "send %d: %s", i,
                         pact_strerror((int)o.result[i]));
            cr_assert(n == 1 || (n < 0 && errno == EAGAIN),
                      "send %d: %zd bytes arrived", i, n);
            failed++;
        }
    }
    cr_log_info("%d sends ended with -EOVERFLOW", failed);
    test_loop_free(o.loop);
    for (int i = 0; i < OVERFLOW_SENDS; i++) {
        close(o.sv[i][0]);
        close(o.sv[i][1]);
    }
}

/* On a kernel whose ring teardown may still do a waiting receive (before
 * Linux 6.17, 6.16.9, 6.12.49: a datagram taken from the socket with its
 * completion dropped when a move closes the old ring), a movable loop
 * starts on the plain ring it would have moved to, and never moves.
 * PACT_URING_MASK=teardown makes this kernel look like one of those.
 * Bytes received on thread A, sent while nobody runs the loop, and sent
 * after the main thread took over arrive each once, in order (a stream
 * socket: pact_recv_multishot is for streams). */
typedef struct {
    pact_loop *loop;
    int rx, tx;
    int got[8];
    int ngot, finals;
} plain_ring_move;

static void pr_recv_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    plain_ring_move *d = user;
    if (!c->more) {
        d->finals++;
        return;
    }
    for (int64_t i = 0; i < c->result; i++) {
        cr_assert_lt(d->ngot, 8);
        d->got[d->ngot++] = ((const unsigned char *)c->data)[i];
    }
}

static void pr_start(pact_loop *loop, void *user)
{
    plain_ring_move *d = user;
    cr_assert_gt(pact_recv_multishot(loop, d->rx, pr_recv_cb, d), 0);
}

static void pr_run_until(plain_ring_move *d, int n)
{
    uint64_t end = pact_now() + 5000 * MS;
    while (d->ngot < n && pact_now() < end)
        cr_assert_geq(pact_loop_run_once(d->loop, 10 * (int64_t)MS), 0);
    cr_assert_eq(d->ngot, n, "%d of %d bytes (%d finals)", d->ngot, n, d->finals);
}

static void *pr_thread(void *arg)
{
    pr_run_until(arg, 1);
    return NULL;
}

static void pr_send(plain_ring_move *d, int byte)
{
    unsigned char b = (unsigned char)byte;
    cr_assert_eq(send(d->tx, &b, 1, 0), 1);
}

Test(loop_thread, a_movable_loop_starts_on_the_plain_ring_where_closing_a_ring_may_still_receive)
{
    const char *was = getenv("PACT_URING_MASK");
    char mask[128];
    snprintf(mask, sizeof mask, "%s%steardown", was ? was : "",
             was && *was ? "," : "");
    cr_assert_eq(setenv("PACT_URING_MASK", mask, 1), 0);
    plain_ring_move d = {.loop = loop_new(1)}; /* reads the mask */
    if (was)
        setenv("PACT_URING_MASK", was, 1);
    else
        unsetenv("PACT_URING_MASK");
    int uring = pact_loop_engine(d.loop) == PACT_ENGINE_URING;
    const char *mode = uring ? "poll" : "epoll";
    cr_assert_str_eq(pact_loop_recv_multishot_mode(d.loop), mode,
                     "a movable loop starts on the plain ring");
    int sv[2];
    make_socketpair(sv);
    d.rx = sv[0];
    d.tx = sv[1];
    cr_assert_gt(pact_call_soon(d.loop, pr_start, &d), 0);
    pr_send(&d, 0);
    pthread_t a;
    cr_assert_eq(pthread_create(&a, NULL, pr_thread, &d), 0);
    pthread_join(a, NULL);
    pr_send(&d, 1); /* nobody runs the loop */
    pr_send(&d, 2);
    pr_run_until(&d, 3);
    pr_send(&d, 3);
    pr_run_until(&d, 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(d.got[i], i, "byte %d was %d", i, d.got[i]);
    cr_assert_str_eq(pact_loop_recv_multishot_mode(d.loop), mode);
    cr_assert_eq(d.finals, 0);
    test_loop_free(d.loop);
    cr_assert_eq(d.finals, 1);
    close(d.rx);
    close(d.tx);
}

/* The loop's signal wait and a device read in flight when a move finds
 * the old CQ overflowed (the same 16 sends as above fill it on A):
 * - a signal: the signalfd was read by an io_uring read op, so a
 *   completion in the lost overflow list took the signal with it. The
 *   loop now waits for readiness and reads on its own thread; the
 *   signal (process-directed, blocked on every thread here) is still
 *   pending after the move and its handler runs once.
 * - a read of /dev/full, a character device the kernel cannot poll (it
 *   reads it on a worker, the completion owed to A): it stayed on the
 *   ring and ended with -EOVERFLOW. Now the pool reads it, as it does
 *   regular files and block devices, and it completes with its bytes. */
#define CHAR_READ_BYTES 4096

typedef struct {
    overflow_sends o;
    int full_fd;
    unsigned char full_buf[CHAR_READ_BYTES];
    int full_calls;
    int64_t full_result;
    int signals;
} overflow_own;

static void own_signal_cb(pact_loop *loop, int signo, void *user)
{
    (void)loop;
    cr_assert_eq(signo, SIGUSR1);
    ((overflow_own *)user)->signals++;
}

static void own_full_read_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    overflow_own *w = user;
    w->full_calls++;
    w->full_result = c->result;
}

static void own_start(pact_loop *loop, void *user)
{
    overflow_own *w = user;
    overflow_start(loop, &w->o); /* 16 sends first: they fill the CQ */
    cr_assert_gt(pact_read(loop, w->full_fd, w->full_buf, CHAR_READ_BYTES, -1,
                           own_full_read_done, w), 0);
    cr_assert_gt(pact_signal_add(loop, SIGUSR1, own_signal_cb, w), 0);
    /* Pending before the next wait submits the signalfd wait, so that
     * its completion comes after the sends'. */
    cr_assert_eq(kill(getpid(), SIGUSR1), 0);
}

/* Whether every thread of the process blocks signo (SigBlk in
 * /proc/self/task/N/status): Criterion runs a thread of its own in the
 * test's process, which blocks nearly every signal. */
static int every_thread_blocks(int signo)
{
    DIR *d = opendir("/proc/self/task");
    cr_assert_not_null(d);
    int all = 1;
    struct dirent *t;
    while ((t = readdir(d)) != NULL && all) {
        if (t->d_name[0] == '.')
            continue;
        char path[300], line[256];
        snprintf(path, sizeof path, "/proc/self/task/%s/status", t->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* the thread has exited */
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "SigBlk:", 7) == 0)
                all = (strtoull(line + 7, NULL, 16) >> (signo - 1)) & 1;
        fclose(f);
    }
    closedir(d);
    return all;
}

Test(loop_thread, the_loops_own_waits_and_device_reads_survive_a_move_after_an_overflow)
{
    /* Blocked on every thread of the test (A inherits it), so that the
     * process-directed signal waits for a signalfd read. */
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, &usr1, &old), 0);
    if (!every_thread_blocks(SIGUSR1))
        cr_skip_test("a thread of the test's process does not block SIGUSR1: "
                     "kill() could end the process");
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    opts.debug = 1;
    opts.movable = 1;
    opts.queue_depth = 2;
    static overflow_own w;
    memset(&w, 0, sizeof w);
    w.full_fd = open("/dev/full", O_RDONLY | O_CLOEXEC);
    cr_assert_geq(w.full_fd, 0, "/dev/full: %s", strerror(errno));
    cr_assert_eq(pact_loop_create(&w.o.loop, &opts), 0);
    for (int i = 0; i < OVERFLOW_SENDS; i++)
        make_socketpair(w.o.sv[i]);
    cr_assert_gt(pact_call_soon(w.o.loop, own_start, &w), 0);
    pthread_t a;
    cr_assert_eq(pthread_create(&a, NULL, overflow_thread, &w.o), 0);
    pthread_join(a, NULL);
    cr_assert_eq(w.o.run_result, 0, "run on A: %s", pact_strerror(w.o.run_result));
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(w.o.loop, &st), 0);
    cr_log_info("on A: %d signals, /dev/full read %s; CQ overflows %llu",
                w.signals, w.full_calls ? "done" : "in flight",
                (unsigned long long)st.cq_overflows);
    if (pact_loop_engine(w.o.loop) == PACT_ENGINE_URING && movable_loops_start_fast())
        cr_assert_gt(st.cq_overflows, 0, "the CQ did not overflow: no test");

    uint64_t end = pact_now() + 5000 * MS;
    while ((w.signals == 0 || w.full_calls == 0) && pact_now() < end)
        cr_assert_geq(pact_loop_run_once(w.o.loop, 10 * (int64_t)MS), 0);
    cr_assert_eq(w.signals, 1, "the signal raised on A: %d deliveries", w.signals);
    cr_assert_eq(w.full_calls, 1);
    cr_assert_eq(w.full_result, CHAR_READ_BYTES, "/dev/full read: %s",
                 pact_strerror((int)w.full_result));
    for (int i = 0; i < CHAR_READ_BYTES; i++)
        cr_assert_eq(w.full_buf[i], 0);

    /* Another signal after the move: still one delivery each. */
    cr_assert_eq(kill(getpid(), SIGUSR1), 0);
    end = pact_now() + 5000 * MS;
    while (w.signals < 2 && pact_now() < end)
        cr_assert_geq(pact_loop_run_once(w.o.loop, 10 * (int64_t)MS), 0);
    cr_assert_eq(w.signals, 2);

    test_loop_free(w.o.loop);
    for (int i = 0; i < OVERFLOW_SENDS; i++) {
        close(w.o.sv[i][0]);
        close(w.o.sv[i][1]);
    }
    close(w.full_fd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* The wake-up read's completion in the lost overflow list: the read had
 * emptied the eventfd, and wake_pending (set by the waker, cleared by
 * that completion) stayed set, so no later waker wrote again and the
 * moved loop slept through pact_call_soon_threadsafe(). A, in four
 * turns: arms the wake-up read; starts 16 sends; submits them (8 of
 * their completions overflow) and wakes itself; its last wait moves the
 * 8 into the CQ, reads the eventfd and finds the CQ full again. */
static void wake_self(pact_loop *loop, void *user)
{
    (void)user;
    cr_assert_eq(pact_loop_wake(loop), 0);
}

static void wake_start(pact_loop *loop, void *user)
{
    overflow_start(loop, user);
    cr_assert_gt(pact_call_soon(loop, wake_self, user), 0);
}

static void wake_start_next_turn(pact_loop *loop, void *user)
{
    cr_assert_gt(pact_call_soon(loop, wake_start, user), 0);
}

static void *four_turns(void *arg)
{
    overflow_sends *o = arg;
    o->run_result = run_turns_here(o->loop, 4);
    return NULL;
}

static void ignore_poll(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)user;
    cr_assert_eq(c->result, -ECANCELED);
}

static atomic_int woken_calls;

static void woken(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    atomic_fetch_add(&woken_calls, 1);
}

static void *call_threadsafe_later(void *arg)
{
    usleep(100 * 1000); /* the loop is asleep in its wait by then */
    cr_assert_eq(pact_call_soon_threadsafe(arg, woken, NULL), 0);
    return NULL;
}

Test(loop_thread, a_moved_loop_still_wakes_when_its_wake_up_read_overflowed)
{
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    opts.debug = 1;
    opts.movable = 1;
    opts.queue_depth = 2;
    static overflow_sends o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(pact_loop_create(&o.loop, &opts), 0);
    for (int i = 0; i < OVERFLOW_SENDS; i++)
        make_socketpair(o.sv[i]);
    cr_assert_gt(pact_call_soon(o.loop, wake_start_next_turn, &o), 0);
    pthread_t a;
    cr_assert_eq(pthread_create(&a, NULL, four_turns, &o), 0);
    pthread_join(a, NULL);
    cr_assert_eq(o.run_result, 0, "run on A: %s", pact_strerror(o.run_result));
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(o.loop, &st), 0);
    if (pact_loop_engine(o.loop) == PACT_ENGINE_URING && movable_loops_start_fast())
        cr_assert_gt(st.cq_overflows, 0, "the CQ did not overflow: no test");
    /* The move, and the sends' callbacks. */
    for (int i = 0; i < 3; i++)
        cr_assert_geq(pact_loop_run_once(o.loop, 10 * (int64_t)MS), 0);
    for (int i = 0; i < OVERFLOW_SENDS; i++)
        cr_assert_eq(o.calls[i], 1, "send %d: %d callbacks", i, o.calls[i]);
    /* Something to wait for, so that run_once sleeps. */
    int idle[2];
    make_socketpair(idle);
    pact_op keep = pact_poll(o.loop, idle[0], POLLIN, ignore_poll, NULL);
    cr_assert_gt(keep, 0);
    cr_assert_geq(pact_loop_run_once(o.loop, 0), 0);
    atomic_store(&woken_calls, 0);
    pthread_t b;
    cr_assert_eq(pthread_create(&b, NULL, call_threadsafe_later, o.loop), 0);
    uint64_t t0 = pact_now();
    cr_assert_geq(pact_loop_run_once(o.loop, 3000 * (int64_t)MS), 0);
    uint64_t waited = pact_now() - t0;
    pthread_join(b, NULL);
    cr_assert_lt(waited, 2000 * MS, "the wake-up took %llu ms",
                 (unsigned long long)(waited / MS));
    if (atomic_load(&woken_calls) == 0)
        cr_assert_geq(pact_loop_run_once(o.loop, 0), 0);
    cr_assert_eq(atomic_load(&woken_calls), 1);
    cr_assert_eq(pact_op_cancel(o.loop, keep), 0);
    test_loop_free(o.loop);
    close(idle[0]);
    close(idle[1]);
    for (int i = 0; i < OVERFLOW_SENDS; i++) {
        close(o.sv[i][0]);
        close(o.sv[i][1]);
    }
}

/* Multishot receives whose completions (naming provided buffers) were in
 * the lost overflow list: those buffers never go back to the old ring.
 * That costs nothing: the new ring has no buffer ring (poll mode), so a
 * receive started after the move gets every byte of a stream far larger
 * than the old ring's buffers. The receives that were in flight end
 * once, with their bytes or -EOVERFLOW. */
#define LOST_RECVS 4
#define AFTER_MOVE_BYTES (4u << 20)

typedef struct {
    overflow_sends o;
    int rv[LOST_RECVS][2];
    int calls[LOST_RECVS], finals[LOST_RECVS];
    int64_t final[LOST_RECVS];
} overflow_recvs;

typedef struct {
    overflow_recvs *r;
    int i;
} overflow_recv;

static overflow_recv overflow_recv_slots[LOST_RECVS];

static void lost_recv_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    overflow_recv *x = user;
    if (c->more) {
        x->r->calls[x->i]++;
        return;
    }
    x->r->finals[x->i]++;
    x->r->final[x->i] = c->result;
}

static void lost_recvs_start(pact_loop *loop, void *user)
{
    overflow_recvs *r = user;
    overflow_start(loop, &r->o); /* the sends fill the CQ */
    for (int i = 0; i < LOST_RECVS; i++) {
        overflow_recv_slots[i] = (overflow_recv){r, i};
        cr_assert_gt(pact_recv_multishot(loop, r->rv[i][0], lost_recv_cb,
                                         &overflow_recv_slots[i]), 0);
    }
}

typedef struct {
    unsigned char *got;
    size_t len;
    int finals;
} big_stream;

static void big_recv_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    big_stream *b = user;
    if (!c->more) {
        b->finals++;
        return;
    }
    cr_assert_leq(b->len + (size_t)c->result, AFTER_MOVE_BYTES);
    memcpy(b->got + b->len, c->data, (size_t)c->result);
    b->len += (size_t)c->result;
}

Test(loop_thread, a_moved_loop_receives_after_an_overflow_lost_buffer_completions)
{
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    opts.debug = 1;
    opts.movable = 1;
    opts.queue_depth = 2;
    static overflow_recvs r;
    memset(&r, 0, sizeof r);
    cr_assert_eq(pact_loop_create(&r.o.loop, &opts), 0);
    for (int i = 0; i < OVERFLOW_SENDS; i++)
        make_socketpair(r.o.sv[i]);
    for (int i = 0; i < LOST_RECVS; i++) {
        make_socketpair(r.rv[i]);
        /* Waiting before the receives are submitted: each completes at
         * once, into a provided buffer, after the sends. */
        cr_assert_eq(write(r.rv[i][1], "0123456789", 10), 10);
    }
    cr_assert_gt(pact_call_soon(r.o.loop, lost_recvs_start, &r), 0);
    pthread_t a;
    cr_assert_eq(pthread_create(&a, NULL, overflow_thread, &r.o), 0);
    pthread_join(a, NULL);
    cr_assert_eq(r.o.run_result, 0, "run on A: %s", pact_strerror(r.o.run_result));
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(r.o.loop, &st), 0);
    if (pact_loop_engine(r.o.loop) == PACT_ENGINE_URING && movable_loops_start_fast())
        cr_assert_gt(st.cq_overflows, 0, "the CQ did not overflow: no test");
    big_stream b = {.got = malloc(AFTER_MOVE_BYTES)};
    cr_assert_not_null(b.got);
    int sv[2];
    make_socketpair(sv);
    cr_assert_gt(pact_recv_multishot(r.o.loop, sv[0], big_recv_cb, &b), 0);
    unsigned char *chunk = malloc(1 << 16);
    cr_assert_not_null(chunk);
    size_t sent = 0;
    uint64_t end = pact_now() + 10000 * MS;
    while (b.len < AFTER_MOVE_BYTES && pact_now() < end) {
        while (sent < AFTER_MOVE_BYTES) {
            size_t want = AFTER_MOVE_BYTES - sent < (1u << 16)
                              ? AFTER_MOVE_BYTES - sent : (1u << 16);
            for (size_t k = 0; k < want; k++)
                chunk[k] = (unsigned char)((sent + k) * 13 + 1);
            ssize_t n = write(sv[1], chunk, want);
            if (n < 0) {
                cr_assert_eq(errno, EAGAIN);
                break;
            }
            sent += (size_t)n;
        }
        cr_assert_geq(pact_loop_run_once(r.o.loop, 10 * (int64_t)MS), 0);
    }
    cr_assert_eq(b.len, AFTER_MOVE_BYTES, "%zu of %u bytes after the move", b.len,
                 AFTER_MOVE_BYTES);
    for (size_t k = 0; k < AFTER_MOVE_BYTES; k += 4093)
        cr_assert_eq(b.got[k], (unsigned char)(k * 13 + 1), "byte %zu", k);
    int lost = 0;
    for (int i = 0; i < LOST_RECVS; i++)
        lost += r.finals[i] == 1 && r.calls[i] == 0;
    cr_log_info("%d of %d receives ended with -EOVERFLOW before delivering; "
                "CQ overflows %llu", lost, LOST_RECVS,
                (unsigned long long)st.cq_overflows);
    for (int i = 0; i < LOST_RECVS; i++) {
        cr_assert_leq(r.finals[i], 1);
        if (r.finals[i])
            cr_assert_eq(r.final[i], -EOVERFLOW, "receive %d: %s", i,
                         pact_strerror((int)r.final[i]));
    }
    test_loop_free(r.o.loop);
    for (int i = 0; i < LOST_RECVS; i++) {
        cr_assert_eq(r.finals[i], 1, "receive %d: %d final callbacks", i, r.finals[i]);
        close(r.rv[i][0]);
        close(r.rv[i][1]);
    }
    cr_assert_eq(b.finals, 1);
    for (int i = 0; i < OVERFLOW_SENDS; i++) {
        close(r.o.sv[i][0]);
        close(r.o.sv[i][1]);
    }
    close(sv[0]);
    close(sv[1]);
    free(chunk);
    free(b.got);
}

/* The same read from a block device: a loop device over such a file
 * (io_uring may read a block device on a worker too; a movable loop
 * sends it to the pool, fstat's S_ISBLK). Making one needs
 * CAP_SYS_ADMIN and /dev/loop-control: where either is missing the test
 * says so and is skipped. */
static int make_loop_device(int backing, char *path, size_t len, int *ctl_out)
{
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return -errno;
    /* Another process (this binary's other test, run in parallel) may
     * bind the free device first: LOOP_SET_FD then answers EBUSY, and
     * the next free one is asked for. */
    for (int attempt = 0;; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) {
            int e = -errno;
            close(ctl);
            return e;
        }
        snprintf(path, len, "/dev/loop%d", n);
        int dev = open(path, O_RDWR | O_CLOEXEC);
        if (dev >= 0 && ioctl(dev, LOOP_SET_FD, backing) == 0) {
            /* Detached when its last fd is closed: also when a failed
             * assertion ends the test before LOOP_CLR_FD. */
            struct loop_info64 info = {.lo_flags = LO_FLAGS_AUTOCLEAR};
            cr_assert_eq(ioctl(dev, LOOP_SET_STATUS64, &info), 0,
                         "LOOP_SET_STATUS64: %s", strerror(errno));
            *ctl_out = ctl;
            return dev;
        }
        int e = -errno;
        if (dev >= 0)
            close(dev);
        if (e != -EBUSY || attempt == 16) {
            close(ctl);
            return e;
        }
    }
}

static void block_device_read_crosses_threads(int close_only)
{
    int backing = uncached_file(FILE_READ_BYTES);
    char path[64];
    int ctl = -1;
    int dev = make_loop_device(backing, path, sizeof path, &ctl);
    if (dev < 0) {
        close(backing);
        cr_skip_test("no loop device to read: %s (needs CAP_SYS_ADMIN and "
                     "/dev/loop-control)", strerror(-dev));
    }
    struct stat st;
    cr_assert_eq(fstat(dev, &st), 0);
    cr_assert(S_ISBLK(st.st_mode), "%s is a block device", path);
    posix_fadvise(dev, 0, 0, POSIX_FADV_DONTNEED);
    read_crosses_threads(dev, close_only);
    ioctl(dev, LOOP_CLR_FD, 0);
    close(dev);
    close(ctl);
    close(backing);
}

Test(loop_thread, a_block_device_read_in_flight_carries_over_when_its_thread_has_exited)
{
    block_device_read_crosses_threads(0);
}

Test(loop_thread, a_movable_loop_with_a_block_device_read_in_flight_closes_after_its_thread_exited)
{
    block_device_read_crosses_threads(1);
}

/* ---- streams' sends across a move ----------------------------------------
 * A thread that ran the loop stays alive, asleep, while another takes the
 * loop over (mover): its ring is closed by the move. */
typedef struct {
    pact_loop *loop;
    pact_transport *t;
    int a, b; /* the transport's socket, the peer's */
    size_t received;
    int lost;
    /* What thread A does before it sleeps (the arg is the mover). */
    void (*on_a)(void *);
    int a_exits; /* A exits instead of sleeping */
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int a_done, release;
} mover;

static void mover_init(mover *m, const pact_protocol *proto)
{
    memset(m, 0, sizeof *m);
    m->loop = loop_new(1);
    int sv[2];
    make_socketpair(sv);
    m->a = sv[0];
    m->b = sv[1];
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cv, NULL);
    cr_assert_eq(pact_transport_open(m->loop, m->a, PACT_STREAM_SOCKET, proto,
                                     m, &m->t), 0);
}

static void *mover_thread_a(void *arg)
{
    mover *m = arg;
    m->on_a(m);
    pthread_mutex_lock(&m->lock);
    m->a_done = 1;
    pthread_cond_broadcast(&m->cv);
    while (!m->release && !m->a_exits)
        pthread_cond_wait(&m->cv, &m->lock);
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* Starts thread A and returns once A has done its part (it then sleeps
 * until mover_release). */
static pthread_t mover_run_a(mover *m)
{
    pthread_t a;
    cr_assert_eq(pthread_create(&a, NULL, mover_thread_a, m), 0);
    pthread_mutex_lock(&m->lock);
    while (!m->a_done)
        pthread_cond_wait(&m->cv, &m->lock);
    pthread_mutex_unlock(&m->lock);
    if (m->a_exits)
        pthread_join(a, NULL);
    return a;
}

static void mover_release(mover *m, pthread_t a)
{
    if (m->a_exits)
        return; /* joined already */
    pthread_mutex_lock(&m->lock);
    m->release = 1;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->lock);
    pthread_join(a, NULL);
}

static void mover_finish(mover *m)
{
    pact_transport_close(m->t);
    cr_assert_eq(pact_loop_run(m->loop), 0);
    cr_assert_eq(m->lost, 1);
    test_loop_free(m->loop);
    close(m->b);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cv);
}

static void mover_echo(pact_transport *t, const void *data, size_t len, void *user)
{
    mover *m = user;
    m->received += len;
    cr_assert_eq(pact_transport_write(t, data, len), 0);
}

static void mover_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    mover *m = user;
    m->lost++;
}

static const pact_protocol mover_echo_proto = {
    .data_received = mover_echo,
    .connection_lost = mover_lost,
};

static void mover_run_until_received(mover *m, size_t want)
{
    uint64_t end = pact_now() + 5000 * MS;
    while (m->received < want) {
        cr_assert_lt(pact_now(), end, "%zu of %zu bytes", m->received, want);
        cr_assert_geq(pact_loop_run_once(m->loop, 10 * (int64_t)MS), 0);
    }
}

static void peer_reads_exactly(int fd, const char *want, size_t len)
{
    char got[64];
    size_t have = 0;
    cr_assert_leq(len, sizeof got);
    while (have < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 5000), 1, "the reply did not come");
        ssize_t n = recv(fd, got + have, len - have, MSG_DONTWAIT);
        cr_assert_gt(n, 0);
        have += (size_t)n;
    }
    cr_assert_eq(memcmp(got, want, len), 0, "%.*s", (int)len, got);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 0), 0, "more than the reply came");
}

/* On thread A: one request is echoed; the run returns with the reply's
 * send submitted (a run submits the sends joined to the next
 * submission), where it sends everything without a completion: the
 * silent send is held, its completion owed by the loop's next wait. */
static void echo_one_request_on_a(void *arg)
{
    mover *m = arg;
    cr_assert_eq(send(m->b, "ping", 4, 0), 4);
    mover_run_until_received(m, 4);
}

/* The thread A ran the loop on holds a silent send when the main thread
 * takes the loop over; a write is queued behind that send meanwhile. The
 * move hands the send's completion over (it sent everything) and the
 * queued bytes go after it; nothing is sent twice or lost, and later
 * requests are echoed on the loop's new ring. */
Test(loop_thread, a_silent_send_held_when_a_movable_loop_changes_threads_completes_once)
{
    for (int round = 0; round < 2; round++) {
        mover m;
        mover_init(&m, &mover_echo_proto);
        m.on_a = echo_one_request_on_a;
        pthread_t a = mover_run_a(&m);
        pact_loop_stats st;
        cr_assert_eq(pact_loop_get_stats(m.loop, &st), 0);
        uint64_t live_on_a = st.ops_live;
        peer_reads_exactly(m.b, "ping", 4); /* the send was done */
        if (round == 1) /* behind the held send, outside any callback */
            cr_assert_eq(pact_transport_write(m.t, "more", 4), 0);
        /* The move: the main thread runs the loop. */
        for (int turns = 0; turns < 3; turns++)
            cr_assert_geq(pact_loop_run_once(m.loop, 0), 0);
        cr_assert_eq(pact_transport_write_buffer_size(m.t), 0);
        if (round == 1)
            peer_reads_exactly(m.b, "more", 4);
        cr_assert_eq(pact_loop_get_stats(m.loop, &st), 0);
        if (pact_loop_engine(m.loop) == PACT_ENGINE_URING &&
            movable_loops_start_fast() && !getenv("PACT_URING_MASK"))
            cr_assert_eq(st.ops_live + 1, live_on_a,
                         "the held send's completion was not handed over "
                         "(live ops %llu on A, %llu after the move)",
                         (unsigned long long)live_on_a,
                         (unsigned long long)st.ops_live);
        for (int i = 0; i < 5; i++) {
            char req[5] = {'r', 'e', 'q', (char)('0' + i), '!'};
            cr_assert_eq(send(m.b, req, 5, 0), 5);
            mover_run_until_received(&m, 4 + 5 * (size_t)(i + 1));
            for (int turns = 0; turns < 3; turns++)
                cr_assert_geq(pact_loop_run_once(m.loop, 0), 0);
            peer_reads_exactly(m.b, req, 5);
        }
        mover_release(&m, a);
        mover_finish(&m);
    }
}

/* A move closes the old ring with a send still waiting in the kernel for
 * room, and submits it again on the new ring: that is right only if the
 * old ring can no longer do it (every other round thread A has exited
 * before the move, which ends its requests on that ring). A peer that reads all the while makes
 * room at any moment, also between the move's reaping of the old CQ and
 * its closing of the ring (with DEFER_TASKRUN the kernel does the send
 * only in task work that the old ring's thread runs inside its own
 * io_uring_enter, and at teardown ends it without I/O: see
 * ring_teardown_skips_waiting_io in engine_uring.c). Every byte must
 * arrive exactly once, in order: a send done by the old ring and again
 * by the new one would repeat a stretch of the pattern. */
enum { MOVE_WRITE = 1 << 20 };

static unsigned char move_pattern(size_t i)
{
    return (unsigned char)((i * 131u + (i >> 12) * 7u + 5u) & 0xff);
}

static void ignore_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    (void)data;
    (void)len;
    (void)user;
}

static const pact_protocol mover_writer_proto = {
    .data_received = ignore_data,
    .connection_lost = mover_lost,
};

/* On thread A: more than the socket holds is written; the rest waits in
 * the kernel (a send op: a movable loop has no send slots) when A stops. */
static void write_big_on_a(void *arg)
{
    mover *m = arg;
    unsigned char *buf = malloc(MOVE_WRITE);
    cr_assert_not_null(buf);
    for (size_t i = 0; i < MOVE_WRITE; i++)
        buf[i] = move_pattern(i);
    cr_assert_eq(pact_transport_write(m->t, buf, MOVE_WRITE), 0);
    free(buf);
    for (int turns = 0; turns < 3; turns++)
        cr_assert_geq(pact_loop_run_once(m->loop, 0), 0);
    cr_assert_gt(pact_transport_write_buffer_size(m->t), 0);
}

typedef struct {
    int fd;
    size_t got;
    size_t bad_at; /* first wrong byte + 1, 0 if none */
    int eof;
} move_reader;

static void *read_all(void *arg)
{
    move_reader *r = arg;
    unsigned char buf[4096];
    for (;;) {
        ssize_t n = recv(r->fd, buf, sizeof buf, 0);
        if (n <= 0) {
            r->eof = n == 0;
            return NULL;
        }
        for (ssize_t i = 0; i < n; i++)
            if (!r->bad_at && buf[i] != move_pattern(r->got + (size_t)i))
                r->bad_at = r->got + (size_t)i + 1;
        r->got += (size_t)n;
    }
}

Test(loop_thread, a_send_in_flight_when_a_movable_loop_changes_threads_goes_once)
{
    for (int round = 0; round < 20; round++) {
        mover m;
        mover_init(&m, &mover_writer_proto);
        int small = 4096;
        cr_assert_eq(setsockopt(m.a, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
        fcntl(m.b, F_SETFL, 0);
        m.on_a = write_big_on_a;
        m.a_exits = round % 2; /* the kernel cancels its requests then */
        pthread_t a = mover_run_a(&m);
        move_reader r = {.fd = m.b};
        pthread_t rt;
        cr_assert_eq(pthread_create(&rt, NULL, read_all, &r), 0);
        /* The reader makes room while the main thread moves the loop. */
        uint64_t end = pact_now() + 20000 * MS;
        while (pact_transport_write_buffer_size(m.t) > 0) {
            cr_assert_lt(pact_now(), end, "the write stopped");
            cr_assert_geq(pact_loop_run_once(m.loop, 10 * (int64_t)MS), 0);
        }
        pact_transport_close(m.t);
        cr_assert_eq(pact_loop_run(m.loop), 0);
        pthread_join(rt, NULL);
        cr_assert_eq(r.bad_at, 0, "round %d: byte %zu is wrong (a stretch "
                                  "sent twice?)", round, r.bad_at - 1);
        cr_assert_eq(r.got, (size_t)MOVE_WRITE, "round %d: %zu bytes arrived",
                     round, r.got);
        cr_assert(r.eof);
        cr_assert_eq(m.lost, 1);
        mover_release(&m, a);
        test_loop_free(m.loop);
        close(m.b);
        pthread_mutex_destroy(&m.lock);
        pthread_cond_destroy(&m.cv);
    }
}

/* ---- send slots and fixed files until the move ---------------------------
 * A movable loop on io_uring's fast ring sends with its streams' send
 * slots and names its sockets by fixed-file slots, as a pinned loop
 * does, until it changes threads. The move completes the slot sends the
 * old ring still owes — what the kernel did not do goes again by op on
 * the new ring — and drops the fixed-file table with the old ring. The
 * checks of the loop's own state (loop.h) only make sure the path the
 * test names was taken; what is asserted is the behaviour. */

/* Whether this loop sends with slots until it moves (io_uring's fast
 * ring; on epoll and the plain ring streams send with ops throughout). */
static int slots_until_the_move(pact_loop *loop)
{
    return pact_loop_engine(loop) == PACT_ENGINE_URING && movable_loops_start_fast();
}

/* io_uring keeps a socket's fixed-file slot + 1 in its fd entry's
 * engine_events (engine_uring.c, fixed_slot1); 0: it names its fd. */
static int fd_has_fixed_file(pact_loop *loop, int fd)
{
    const pact_fd_entry *f = pact_fd_table_find(&loop->fds, fd);
    return f && f->engine_events != 0;
}

static void write_pattern(pact_transport *t, size_t from, size_t len)
{
    unsigned char *buf = malloc(len);
    cr_assert_not_null(buf);
    for (size_t i = 0; i < len; i++)
        buf[i] = move_pattern(from + i);
    cr_assert_eq(pact_transport_write(t, buf, len), 0);
    free(buf);
}

typedef struct {
    mover m; /* first: the protocol's user is the mover */
    int mode;
    atomic_int paused, resumed;
    pthread_t resumed_on;
} slot_mover;

static void sm_paused(pact_transport *t, void *user)
{
    (void)t;
    atomic_fetch_add(&((slot_mover *)user)->paused, 1);
}

static void sm_resumed(pact_transport *t, void *user)
{
    (void)t;
    slot_mover *sm = user;
    sm->resumed_on = pthread_self();
    atomic_fetch_add(&sm->resumed, 1);
}

static const pact_protocol slot_mover_proto = {
    .data_received = ignore_data,
    .connection_lost = mover_lost,
    .pause_writing = sm_paused,
    .resume_writing = sm_resumed,
};

/* On thread A: the loop runs (and its ring is bound to A); in modes 0
 * and 1 more than the socket holds is written, the rest waiting in the
 * kernel in a slot's send when A stops. */
static void slot_mover_on_a(void *arg)
{
    slot_mover *sm = arg;
    if (sm->mode != 2) {
        write_big_on_a(&sm->m);
        return;
    }
    for (int turns = 0; turns < 3; turns++)
        cr_assert_geq(pact_loop_run_once(sm->m.loop, 0), 0);
}

/* A slot's send in flight when the loop changes threads: waiting in the
 * kernel for room when thread A sleeps (mode 0) or has exited (mode 1),
 * or still in the SQ, queued by the main thread's write between runs
 * (mode 2). A reader makes room all the while. Every byte arrives once,
 * in order; the write's completion runs once, on the thread that runs
 * the loop then (resume_writing there, once); no send is left live. */
Test(loop_thread, a_slot_send_in_flight_when_a_movable_loop_changes_threads_completes_once_there)
{
    for (int round = 0; round < 9; round++) {
        slot_mover sm;
        memset(&sm, 0, sizeof sm);
        mover *m = &sm.m;
        mover_init(m, &slot_mover_proto);
        /* mover_init passed m, the first member, as the protocol's user. */
        sm.mode = round % 3;
        int small = 4096;
        cr_assert_eq(setsockopt(m->a, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
        fcntl(m->b, F_SETFL, 0);
        m->on_a = slot_mover_on_a;
        m->a_exits = sm.mode == 1;
        pthread_t a = mover_run_a(m);
        if (sm.mode == 2) /* between runs, before the loop moves */
            write_pattern(m->t, 0, MOVE_WRITE);
        cr_assert_eq(atomic_load(&sm.paused), 1);
        int slots = slots_until_the_move(m->loop);
        if (slots) {
            cr_assert_eq(m->loop->send_slots, 1, "round %d: no send slots before the move", round);
            cr_assert_eq(m->loop->send_slots_live, 1,
                         "round %d: no slot send in flight at the move", round);
        }
        move_reader r = {.fd = m->b};
        pthread_t rt;
        cr_assert_eq(pthread_create(&rt, NULL, read_all, &r), 0);
        uint64_t end = pact_now() + 20000 * MS;
        while (pact_transport_write_buffer_size(m->t) > 0) {
            cr_assert_lt(pact_now(), end, "round %d: the write stopped", round);
            cr_assert_geq(pact_loop_run_once(m->loop, 10 * (int64_t)MS), 0);
        }
        cr_assert_eq(atomic_load(&sm.resumed), 1, "round %d: resume_writing ran %d times",
                     round, atomic_load(&sm.resumed));
        cr_assert(pthread_equal(sm.resumed_on, pthread_self()));
        if (slots)
            cr_assert_eq(m->loop->send_slots, 0, "round %d: the loop did not move", round);
        pact_transport_close(m->t);
        cr_assert_eq(pact_loop_run(m->loop), 0);
        pthread_join(rt, NULL);
        cr_assert_eq(r.bad_at, 0, "round %d: byte %zu is wrong", round, r.bad_at - 1);
        cr_assert_eq(r.got, (size_t)MOVE_WRITE, "round %d: %zu bytes arrived", round, r.got);
        cr_assert(r.eof);
        cr_assert_eq(m->lost, 1);
        pact_loop_stats st;
        cr_assert_eq(pact_loop_get_stats(m->loop, &st), 0);
        cr_assert_eq(st.ops_live, 0);
        cr_assert_eq(st.stray_completions, 0);
        cr_assert_eq(m->loop->send_slots_live, 0);
        mover_release(m, a);
        test_loop_free(m->loop); /* and every op started completed */
        close(m->b);
        pthread_mutex_destroy(&m->lock);
        pthread_cond_destroy(&m->cv);
    }
}

typedef struct {
    mover m; /* first: the protocol's user is the mover */
    int requests;
} ff_mover;

static void echo_requests(mover *m, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char req[5] = {'r', 'e', 'q', (char)('0' + i), '!'};
        cr_assert_eq(send(m->b, req, 5, 0), 5);
        mover_run_until_received(m, 5 * (size_t)(i + 1));
        for (int turns = 0; turns < 3; turns++)
            cr_assert_geq(pact_loop_run_once(m->loop, 0), 0);
        peer_reads_exactly(m->b, req, 5);
    }
}

static void ff_on_a(void *arg)
{
    ff_mover *fm = arg;
    for (int turns = 0; turns < 3; turns++) /* the ring is A's from here */
        cr_assert_geq(pact_loop_run_once(fm->m.loop, 0), 0);
    echo_requests(&fm->m, 0, fm->requests);
}

/* The loop moves after 0 to 5 requests echoed on thread A: before the
 * socket has a fixed-file slot, right after the update that fills it
 * went with a reply, and once replies name it. Requests echo on the new
 * ring, and when the transport closes the peer sees the end: the old
 * ring's table held the socket, and it went with that ring, also while
 * thread A lives on (A sleeps in even rounds, has exited in odd ones). */
Test(loop_thread, a_move_right_after_a_socket_took_a_fixed_file_slot)
{
    for (int round = 0; round < 12; round++) {
        ff_mover fm;
        memset(&fm, 0, sizeof fm);
        mover *m = &fm.m;
        mover_init(m, &mover_echo_proto);
        fm.requests = round / 2;
        m->on_a = ff_on_a;
        m->a_exits = round % 2;
        pthread_t a = mover_run_a(m);
        int slots = slots_until_the_move(m->loop);
        if (slots && fm.requests == 5)
            cr_assert(fd_has_fixed_file(m->loop, m->a),
                      "5 requests and the socket has no fixed-file slot");
        echo_requests(m, fm.requests, 3);
        if (slots)
            cr_assert_eq(m->loop->send_slots, 0, "round %d: the loop did not move", round);
        pact_transport_close(m->t);
        cr_assert_eq(pact_loop_run(m->loop), 0);
        cr_assert_eq(m->lost, 1);
        struct pollfd p = {.fd = m->b, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 5000), 1, "round %d: the peer never saw the end", round);
        char c;
        cr_assert_eq(recv(m->b, &c, 1, MSG_DONTWAIT), 0, "round %d", round);
        mover_release(m, a);
        test_loop_free(m->loop);
        close(m->b);
        pthread_mutex_destroy(&m->lock);
        pthread_cond_destroy(&m->cv);
    }
}

/* A thread that runs what it is given, then waits for more. */
typedef struct {
    pthread_t th;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    void (*fn)(void *);
    void *arg;
    int quit;
} worker;

static void *worker_main(void *p)
{
    worker *w = p;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->fn && !w->quit)
            pthread_cond_wait(&w->cv, &w->lock);
        if (!w->fn)
            break;
        void (*fn)(void *) = w->fn;
        pthread_mutex_unlock(&w->lock);
        fn(w->arg);
        pthread_mutex_lock(&w->lock);
        w->fn = NULL;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static void worker_start(worker *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cv, NULL);
    cr_assert_eq(pthread_create(&w->th, NULL, worker_main, w), 0);
}

/* Runs fn(arg) on the worker and returns when it is done. */
static void worker_do(worker *w, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&w->lock);
    w->fn = fn;
    w->arg = arg;
    pthread_cond_broadcast(&w->cv);
    while (w->fn)
        pthread_cond_wait(&w->cv, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

static void worker_stop(worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->quit = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->th, NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cv);
}

typedef struct {
    mover *m;
    size_t written;
    int slots_before; /* slot sends live when the phase ended */
} back_and_forth;

/* A phase: 1 MiB more of the pattern written, the loop run a few turns;
 * the write is still going when the phase ends. */
static void bf_phase(void *arg)
{
    back_and_forth *bf = arg;
    write_pattern(bf->m->t, bf->written, MOVE_WRITE);
    bf->written += MOVE_WRITE;
    for (int turns = 0; turns < 3; turns++)
        cr_assert_geq(pact_loop_run_once(bf->m->loop, 0), 0);
    cr_assert_gt(pact_transport_write_buffer_size(bf->m->t), 0);
    bf->slots_before = (int)bf->m->loop->send_slots_live;
}

/* The rest written, the transport closed, on whichever thread. */
static void bf_finish(void *arg)
{
    back_and_forth *bf = arg;
    uint64_t end = pact_now() + 20000 * MS;
    while (pact_transport_write_buffer_size(bf->m->t) > 0) {
        cr_assert_lt(pact_now(), end, "the write stopped");
        cr_assert_geq(pact_loop_run_once(bf->m->loop, 10 * (int64_t)MS), 0);
    }
    pact_transport_close(bf->m->t);
    cr_assert_eq(pact_loop_run(bf->m->loop), 0);
}

/* A write in flight at each change of threads: worker A, the main
 * thread, A again, and the main thread to finish. Only the first change
 * moves the loop off A's ring (it stays on the ring bound to no thread);
 * the bytes of all three writes arrive once, in order. */
Test(loop_thread, a_movable_loop_moves_with_a_slot_send_in_flight_and_back)
{
    for (int round = 0; round < 4; round++) {
        mover m;
        mover_init(&m, &mover_writer_proto);
        int small = 4096;
        cr_assert_eq(setsockopt(m.a, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
        fcntl(m.b, F_SETFL, 0);
        move_reader r = {.fd = m.b};
        pthread_t rt;
        cr_assert_eq(pthread_create(&rt, NULL, read_all, &r), 0);
        back_and_forth bf = {.m = &m};
        worker a;
        worker_start(&a);
        worker_do(&a, bf_phase, &bf);
        if (slots_until_the_move(m.loop))
            cr_assert_eq(bf.slots_before, 1, "round %d: no slot send in flight on A", round);
        bf_phase(&bf); /* the move */
        cr_assert_eq(m.loop->send_slots, 0);
        cr_assert_eq(bf.slots_before, 0);
        worker_do(&a, bf_phase, &bf); /* and back */
        if (round % 2)
            worker_do(&a, bf_finish, &bf);
        else
            bf_finish(&bf);
        worker_stop(&a);
        pthread_join(rt, NULL);
        cr_assert_eq(r.bad_at, 0, "round %d: byte %zu is wrong", round, r.bad_at - 1);
        cr_assert_eq(r.got, bf.written, "round %d: %zu of %zu bytes arrived", round,
                     r.got, bf.written);
        cr_assert(r.eof);
        cr_assert_eq(m.lost, 1);
        pact_loop_stats st;
        cr_assert_eq(pact_loop_get_stats(m.loop, &st), 0);
        cr_assert_eq(st.ops_live, 0);
        cr_assert_eq(m.loop->send_slots_live, 0);
        test_loop_free(m.loop); /* and every op started completed */
        close(m.b);
        pthread_mutex_destroy(&m.lock);
        pthread_cond_destroy(&m.cv);
    }
}

typedef struct {
    mover m; /* first: the protocol's user is the mover */
    int lost_err;
    pthread_t lost_on;
} close_mover;

static void cm_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    close_mover *cm = user;
    cm->lost_err = err;
    cm->lost_on = pthread_self();
    cm->m.lost++;
}

static const pact_protocol close_mover_proto = {
    .data_received = ignore_data,
    .connection_lost = cm_lost,
};

/* The loop is closed from another thread while a slot's send waits in
 * the kernel (nobody reads the peer): the close moves the loop, the send
 * the old ring owed completes once, the transport is lost once, on the
 * closing thread, and no send is left live. What the peer gets is the
 * pattern's start, in order. */
Test(loop_thread, a_movable_loop_closed_on_another_thread_with_a_slot_send_in_flight)
{
    for (int round = 0; round < 4; round++) {
        close_mover cm;
        memset(&cm, 0, sizeof cm);
        mover *m = &cm.m;
        mover_init(m, &close_mover_proto);
        int small = 4096;
        cr_assert_eq(setsockopt(m->a, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
        fcntl(m->b, F_SETFL, 0);
        m->on_a = write_big_on_a;
        m->a_exits = round % 2;
        pthread_t a = mover_run_a(m);
        if (slots_until_the_move(m->loop))
            cr_assert_eq(m->loop->send_slots_live, 1, "round %d: no slot send in flight", round);
        cr_assert_eq(pact_loop_close(m->loop), 0);
        cr_assert_eq(m->lost, 1);
        cr_assert(pthread_equal(cm.lost_on, pthread_self()));
        pact_loop_stats st;
        cr_assert_eq(pact_loop_get_stats(m->loop, &st), 0);
        cr_assert_eq(st.ops_live, 0);
        cr_assert_eq(st.ops_started, st.ops_completed);
        cr_assert_eq(st.stray_completions, 0);
        cr_assert_eq(m->loop->send_slots_live, 0);
        move_reader r = {.fd = m->b};
        read_all(&r); /* to the end: the socket is closed */
        cr_assert_eq(r.bad_at, 0, "round %d: byte %zu is wrong", round, r.bad_at - 1);
        cr_assert_lt(r.got, (size_t)MOVE_WRITE);
        mover_release(m, a);
        cr_assert_eq(pact_loop_free(m->loop), 0);
        close(m->b);
        pthread_mutex_destroy(&m->lock);
        pthread_cond_destroy(&m->cv);
    }
}

/* ---- a close behind a reply, in the move ---------------------------------
 * docs/contract.md §6: a close right behind a write takes later writes
 * only where the write did not go out at once (epoll's eager send found
 * the socket full and queued it), as asyncio's transport does with a
 * buffer left; else the later write is refused and the close ends the
 * stream after the reply. On io_uring a movable loop's move handles the
 * completions the old ring holds on the new thread (migrate), between
 * rings: a data callback there replies, closes and writes again. Thread A
 * binds the ring and only hands the peer's request to the kernel
 * (pact_loop_flush: the receive completes at submission, its completion
 * waits in the old ring's CQ), so on io_uring's fast ring the callback
 * runs in the move; elsewhere (epoll, the plain ring) in the main
 * thread's run. The reply is a plain write or write_received (on the fast
 * ring a zero-copy send from the receive buffer, which in the move goes
 * by op). Every byte accepted arrives once, in order, and the late write
 * is taken exactly where epoll takes it. */
typedef struct {
    mover m; /* first: the protocol's user is the mover */
    int write_received; /* the reply by pact_transport_write_received */
    int replied;
    int late_write;
    int in_the_move; /* the callback ran while the loop changed rings */
    int spare[2];
    int nudged;
    pthread_t replied_on;
} reply_mover;

static void rm_data(pact_transport *t, const void *data, size_t len, void *user)
{
    reply_mover *rm = user;
    if (rm->replied++)
        return;
    rm->replied_on = pthread_self();
    /* migrate() switches the receive mode to poll once the old ring's
     * completions are handled; send slots end when it begins. */
    rm->in_the_move = !rm->m.loop->send_slots &&
                      strcmp(pact_loop_recv_multishot_mode(rm->m.loop), "poll") != 0;
    cr_assert_eq(len, 2);
    cr_assert_eq(rm->write_received ? pact_transport_write_received(t, data, len)
                                    : pact_transport_write(t, data, len),
                 0);
    cr_assert_eq(pact_transport_close(t), 0);
    rm->late_write = pact_transport_write(t, "late", 4);
}

static const pact_protocol reply_mover_proto = {
    .data_received = rm_data,
    .connection_lost = mover_lost,
};

/* A send of its own whose submission carries the transport's receive to
 * the old ring's CQ (see request_in_the_old_cq_on_a). */
static void rm_nudge_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    reply_mover *rm = user;
    cr_assert_eq(c->result, 1);
    rm->nudged++;
}

/* On thread A: the loop runs (its ring is bound to A; the transport's
 * first receive waits in the kernel for readiness), then the request
 * comes, and a submission with no run behind it (pact_loop_flush of a
 * send of the loop's own) goes to the kernel: on io_uring's fast ring
 * the kernel does the receive's deferred work in that system call
 * (liburing asks for it when the kernel flags work pending), so the
 * request's completion waits in the old ring's CQ for the move. No
 * callback of the transport runs here. */
static void request_in_the_old_cq_on_a(void *arg)
{
    reply_mover *rm = arg;
    mover *m = &rm->m;
    for (int turns = 0; turns < 3; turns++)
        cr_assert_geq(pact_loop_run_once(m->loop, 0), 0);
    cr_assert_eq(send(m->b, "go", 2, 0), 2);
    cr_assert_gt(pact_send(m->loop, rm->spare[0], "x", 1, 0, rm_nudge_done, rm), 0);
    cr_assert_eq(pact_loop_flush(m->loop), 0);
}

typedef struct {
    int fd;
    uint8_t *got;
    size_t cap, len;
} eof_reader;

static void *read_to_eof(void *arg)
{
    eof_reader *r = arg;
    for (;;) {
        ssize_t n = recv(r->fd, r->got + r->len, r->cap - r->len, 0);
        if (n <= 0)
            return NULL;
        r->len += (size_t)n;
        cr_assert_lt(r->len, r->cap, "more than was written arrived");
    }
}

static void close_behind_a_reply_in_the_move(int full, int write_received)
{
    for (int round = 0; round < 4; round++) {
        reply_mover rm;
        memset(&rm, 0, sizeof rm);
        mover *m = &rm.m;
        mover_init(m, &reply_mover_proto);
        rm.write_received = write_received;
        size_t filled = full ? fill_kernel_buffers(m->a, m->b) : 0;
        make_socketpair(rm.spare);
        m->on_a = request_in_the_old_cq_on_a;
        m->a_exits = round % 2;
        pthread_t a = mover_run_a(m);
        cr_assert_eq(rm.replied, 0, "round %d: a callback ran on A", round);
        uint64_t end = pact_now() + 5000 * MS;
        while (!rm.replied) {
            cr_assert_lt(pact_now(), end, "round %d: the request was not delivered", round);
            cr_assert_geq(pact_loop_run_once(m->loop, 10 * (int64_t)MS), 0);
        }
        cr_assert(pthread_equal(rm.replied_on, pthread_self()));
        if (slots_until_the_move(m->loop))
            cr_assert(rm.in_the_move, "round %d: the reply was not made in the move", round);
        /* Only now does the peer read: the late write came before. */
        fcntl(m->b, F_SETFL, 0);
        eof_reader r = {.fd = m->b, .cap = filled + 4096};
        r.got = malloc(r.cap);
        cr_assert_not_null(r.got);
        pthread_t rt;
        cr_assert_eq(pthread_create(&rt, NULL, read_to_eof, &r), 0);
        cr_assert_eq(pact_loop_run(m->loop), 0);
        pthread_join(rt, NULL);
        cr_assert_eq(m->lost, 1, "round %d", round);
        if (full) {
            cr_assert_eq(rm.late_write, 0, "round %d: the late write was refused (%d)",
                         round, rm.late_write);
            cr_assert_eq(r.len, filled + 6, "round %d: %zu of %zu bytes", round, r.len,
                         filled + 6);
            cr_assert_eq(memcmp(r.got + filled, "golate", 6), 0, "round %d: %.6s", round,
                         (const char *)r.got + filled);
        } else {
            cr_assert_eq(rm.late_write, -ESHUTDOWN, "round %d: the late write said %d",
                         round, rm.late_write);
            cr_assert_eq(r.len, 2, "round %d: %zu bytes", round, r.len);
            cr_assert_eq(memcmp(r.got, "go", 2), 0);
        }
        pact_loop_stats st;
        cr_assert_eq(pact_loop_get_stats(m->loop, &st), 0);
        cr_assert_eq(st.ops_live, 0);
        cr_assert_eq(st.stray_completions, 0);
        cr_assert_eq(rm.nudged, 1);
        free(r.got);
        close(rm.spare[0]);
        close(rm.spare[1]);
        mover_release(m, a);
        test_loop_free(m->loop);
        close(m->b);
        pthread_mutex_destroy(&m->lock);
        pthread_cond_destroy(&m->cv);
    }
}

Test(loop_thread, a_close_in_the_move_behind_a_reply_refuses_later_writes)
{
    close_behind_a_reply_in_the_move(0, 0);
}

Test(loop_thread, a_close_in_the_move_behind_a_reply_to_a_full_socket_takes_later_writes)
{
    close_behind_a_reply_in_the_move(1, 0);
}

Test(loop_thread, a_close_in_the_move_behind_a_received_reply_refuses_later_writes)
{
    close_behind_a_reply_in_the_move(0, 1);
}

Test(loop_thread, a_close_in_the_move_behind_a_received_reply_to_a_full_socket_takes_later_writes)
{
    close_behind_a_reply_in_the_move(1, 1);
}
