/* SPDX-License-Identifier: MIT */
/* The loop: creation and engine choice, the iteration, run / stop / close,
 * and the cross-thread wake-up. */
#include "endpoint.h"
#include "loop.h"
#include "options.h"
#include "pool.h"
#include "signals.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The loop running on this thread (loop.h), so that running a second loop
 * from inside a callback of the first is refused (one loop per thread). */
__thread const pact_loop *pact__loop_running_here PACT_TLS_INITIAL_EXEC;

static _Atomic uint64_t threads_numbered;
__thread uint64_t pact__this_thread_id PACT_TLS_INITIAL_EXEC;

uint64_t pact__thread_id(void)
{
    if (!pact__this_thread_id)
        pact__this_thread_id = atomic_fetch_add_explicit(&threads_numbered, 1,
                                                         memory_order_relaxed) + 1;
    return pact__this_thread_id;
}

/* fork(): the child gets a copy of every loop, but the ring (its memory
 * too), the epoll instance and the eventfd are shared with the parent,
 * and the pool's threads do not exist. A child handler counts forks, and a
 * loop made before the last one answers -ECHILD (pact__loop_forked). A
 * load and a compare per entry point: getpid() would be a system call. */
#ifndef _WIN32
atomic_uint pact__forks_seen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void count_fork_in_child(void)
{
    atomic_fetch_add_explicit(&pact__forks_seen, 1, memory_order_relaxed);
    /* A fork from inside a callback (a binding's Python code, which may
     * start a process pool there): the loop running in the parent is not
     * running here, and the child may run a loop of its own. */
    pact__loop_running_here = NULL;
}

static void install_fork_handler(void)
{
    pthread_atfork(NULL, NULL, count_fork_in_child);
}
#endif

static int forked_misuse(const pact_loop *loop, const char *func)
{
    return pact__misuse(loop, -ECHILD, func,
                        "the loop was inherited through fork(): it belongs "
                        "to the parent process (pact_loop_free() releases "
                        "this copy)");
}

uint64_t pact_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void pact_loop_options_init(pact_loop_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    opts->engine = PACT_ENGINE_AUTO;
    opts->debug = -1;
}

static int debug_from_env(void)
{
    const char *v = getenv("PACT_DEBUG");
    return v && *v && strcmp(v, "0") != 0;
}

/* PACT_ENGINE exists so that the same test binaries run on both engines. */
static pact_engine_kind engine_from_env(pact_engine_kind asked)
{
    if (asked != PACT_ENGINE_AUTO)
        return asked;
    const char *v = getenv("PACT_ENGINE");
    if (v && strcmp(v, "uring") == 0)
        return PACT_ENGINE_URING;
    if (v && strcmp(v, "epoll") == 0)
        return PACT_ENGINE_EPOLL;
    return PACT_ENGINE_AUTO;
}

static int engine_start(pact_loop *loop, const pact_loop_options *opts)
{
#ifdef _WIN32
    /* Windows has one engine: the I/O completion port. */
    char why[sizeof loop->engine_reason] = "";
    if (opts->engine != PACT_ENGINE_AUTO && opts->engine != PACT_ENGINE_IOCP)
        return -ENOTSUP;
    loop->engine = &pact_engine_iocp;
    loop->engine_kind = PACT_ENGINE_IOCP;
    (void)engine_from_env;
    return pact_engine_iocp.init(loop, opts->queue_depth, 0, why, sizeof why);
#else
    pact_engine_kind kind = engine_from_env(opts->engine);
    char reason[sizeof loop->engine_reason] = "";
    if (kind == PACT_ENGINE_URING || kind == PACT_ENGINE_AUTO) {
        loop->engine = &pact_engine_uring;
        int r = pact_engine_uring.init(loop, opts->queue_depth,
                                       opts->fail_uring_setup, reason,
                                       sizeof reason);
        if (r == 0) {
            loop->engine_kind = PACT_ENGINE_URING;
            return 0;
        }
        if (kind == PACT_ENGINE_URING) {
            pact__log(loop, "io_uring was asked for but %s", reason);
            return r;
        }
        snprintf(loop->engine_reason, sizeof loop->engine_reason, "%s",
                 reason);
        if (loop->debug)
            pact__log(loop, "falling back to epoll: %s", reason);
    }
    loop->engine = &pact_engine_epoll;
    loop->engine_kind = PACT_ENGINE_EPOLL;
    return pact_engine_epoll.init(loop, opts->queue_depth, 0, reason,
                                  sizeof reason);
#endif
}

int pact_loop_create(pact_loop **out, const pact_loop_options *opts_in)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    if (opts_in) {
        int r = pact__options_read(&opts, sizeof opts, PACT__LOOP_OPTIONS_V1, opts_in);
        if (r < 0)
            return r;
    }
    if ((int)opts.engine < PACT_ENGINE_AUTO ||
        opts.engine > PACT__ENGINE_LAST)
        return -EINVAL;

    pact_loop *loop = calloc(1, sizeof *loop);
    if (!loop)
        return -ENOMEM;
#ifndef _WIN32
    pthread_once(&atfork_once, install_fork_handler);
#endif
    loop->fork_generation = pact__fork_generation();
    loop->debug = opts.debug < 0 ? debug_from_env() : !!opts.debug;
    loop->movable = !!opts.movable;
    loop->owner = pact__thread_id();
    loop->wake_fd = -EBADF;
    pact_slab_init(&loop->ops, sizeof(pact_op_s));
    pact_slab_init(&loop->op_ext, sizeof(pact_op_ext));
    pact_slab_init(&loop->handles, sizeof(pact_handle_s));
    /* Handles carry the loop's number and their kind (see slab.h), so a
     * handle of another loop or kind is -ENOENT, never someone else's op. */
    static atomic_uint loops_created;
    uint32_t number = atomic_fetch_add(&loops_created, 1) + 1;
    loop->ops.tag = (number << 1) | 0;
    loop->handles.tag = (number << 1) | 1;
    /* Before the engine starts: an engine with per-fd state of its own
     * sets the size of the table's entries (epoll). */
    pact_fd_table_init(&loop->fds);
    pact_list_init(&loop->ready);
    pact_list_init(&loop->submit_queue);
    pact_list_init(&loop->done_queue);
    pact_list_init(&loop->offload_done);
    pact_list_init(&loop->resources);
    pact_heap_init(&loop->timers);
    pthread_mutex_init(&loop->ts_lock, NULL);
    loop->now = pact_now();
    /* Multishot receive buffers: a power-of-two count (the buffer ring's
     * requirement) of at most 32768 (buffer ids are 16 bits). */
    unsigned nbuf = opts.recv_buffer_count ? opts.recv_buffer_count
                                           : PACT__RECV_BUFFER_COUNT_DEFAULT;
    loop->recv_buf_count_default = opts.recv_buffer_count == 0;
    if (nbuf > 32768)
        nbuf = 32768;
    loop->recv_buf_count = 1;
    while (loop->recv_buf_count < nbuf)
        loop->recv_buf_count <<= 1;
    /* 64 KiB, not 16: with 16 KiB buffers a 64 KiB message arrives in four
     * completions and the stream benchmark ran at half raw liburing's rate
     * with twice its CPU per request; at 64 KiB it matches it. */
    loop->recv_buf_size = opts.recv_buffer_size ? opts.recv_buffer_size
                                                : PACT__RECV_BUFFER_SIZE_DEFAULT;

    int r = engine_start(loop, &opts);
    if (r != 0)
        goto fail;
    r = pact__wake_open(loop);
    if (r != 0) {
        loop->engine->destroy(loop);
        goto fail;
    }
    *out = loop;
    return 0;

fail:
    pact_fd_table_destroy(&loop->fds);
    pact_slab_destroy(&loop->ops);
    pact_slab_destroy(&loop->op_ext);
    pact_slab_destroy(&loop->handles);
    pact_heap_destroy(&loop->timers);
    pthread_mutex_destroy(&loop->ts_lock);
    free(loop);
    return r;
}

int pact__check_loop_slow(const pact_loop *loop, const char *func)
{
    if (!loop)
        return -EINVAL;
    if (pact__loop_forked(loop))
        return forked_misuse(loop, func);
    if (loop->state != PACT_LOOP_OPEN)
        return pact__misuse(loop, -ESHUTDOWN, func,
                            loop->state == PACT_LOOP_CLOSED
                                ? "the loop is closed"
                                : "the loop is closing");
    return pact__loop_check_thread(loop, func);
}

int pact__check_loop_for_cancel(const pact_loop *loop, const char *func)
{
    if (!loop)
        return -EINVAL;
    if (loop->state == PACT_LOOP_CLOSED)
        return pact__misuse(loop, -ESHUTDOWN, func, "the loop is closed");
    return pact__loop_check_thread(loop, func);
}

int pact__loop_check_thread_slow(const pact_loop *loop, const char *func)
{
    if (pact__loop_forked(loop))
        return forked_misuse(loop, func);
    if (loop->movable) {
        /* Whoever runs it owns it while it runs; between runs any one
         * thread at a time may use it. */
        uint64_t runner = atomic_load_explicit(
            &((pact_loop *)loop)->runner, memory_order_acquire);
        if (runner && runner != pact__thread_id())
            return pact__misuse(loop, -EPERM, func,
                                "called from a thread other than the one "
                                "running the loop");
        return 0;
    }
    /* owner is written before owned is set (release), see check_runner. */
    if ((atomic_load_explicit(&loop->owned, memory_order_acquire) ||
         loop->debug) &&
        loop->owner != pact__thread_id())
        return pact__misuse(loop, -EPERM, func,
                            "called from a thread that does not own the loop");
    return 0;
}

int pact_loop_alive(const pact_loop *loop)
{
    if (!loop || loop->state == PACT_LOOP_CLOSED)
        return 0;
    return loop->user_ops_live > loop->unref_ops ||
           !pact_list_empty(&loop->ready) || loop->user_timers > 0 ||
           loop->ref_signals > 0 || atomic_load(&loop->ts_count) > 0;
}

/* Takes every callback queued by other threads (the list, oldest first). */
static pact_ts_item *take_threadsafe(pact_loop *loop)
{
    pthread_mutex_lock(&loop->ts_lock);
    pact_ts_item *item = loop->ts_head;
    loop->ts_head = loop->ts_tail = NULL;
    atomic_store(&loop->ts_count, 0);
    pthread_mutex_unlock(&loop->ts_lock);
    return item;
}

/* Runs the callbacks queued by other threads. */
static void drain_threadsafe(pact_loop *loop)
{
    if (atomic_load(&loop->ts_count) == 0)
        return;
    pact_ts_item *item = take_threadsafe(loop);
    while (item) {
        pact_ts_item *next = item->next;
        PACT_RUN_CALLBACK(loop, item->cb, "threadsafe callback",
                          item->cb(loop, item->user));
        free(item);
        item = next;
    }
}

/* The engine's wait. The binding's hooks (pact_loop_set_wait_hooks) are
 * called by the engines themselves, around the blocking system call only:
 * they run completion callbacks inside their wait, and those must run
 * with the binding's lock held. */
static int wait_and_count_idle(pact_loop *loop, int64_t timeout_ns)
{
    /* Idle time is counted by the engines' pact__wait_hook_before/after,
     * around the blocking system call alone: the callbacks an engine runs
     * inside its wait are work. */
    return loop->engine->wait(loop, timeout_ns);
}

/* What a binding's hooks (wait, receive buffer) may change in: an open
 * loop of this process, on its owner's thread, that does not run (func
 * and what name the setter and its hooks in a misuse message). */
static int hooks_settable(pact_loop *loop, const char *func, const char *what)
{
    if (pact__loop_forked(loop))
        return forked_misuse(loop, func);
    if (loop->state != PACT_LOOP_OPEN)
        return -ESHUTDOWN;
    int r = pact__loop_check_thread(loop, func);
    if (r)
        return r;
    if (loop->running)
        return pact__misuse(loop, -EBUSY, func, what);
    return 0;
}

int pact_loop_set_wait_hooks(pact_loop *loop, pact_wait_cb before,
                             pact_wait_cb after, void *user)
{
    if (!loop || !before != !after)
        return -EINVAL;
    int r = hooks_settable(loop, __func__,
                           "wait hooks cannot change while the loop runs");
    if (r)
        return r;
    loop->before_wait = before;
    loop->after_wait = after;
    loop->wait_hook_user = user;
    return 0;
}

int pact_loop_set_recv_buffer_hook(pact_loop *loop, pact_recv_buffer_cb get,
                                   size_t large, void *user)
{
    if (!loop)
        return -EINVAL;
    int r = hooks_settable(loop, __func__,
                           "the receive-buffer hook cannot change while the loop runs");
    if (r)
        return r;
    loop->recv_buffer_get = get;
    loop->recv_buffer_user = get ? user : NULL;
    loop->recv_large = get ? large : 0;
    return 0;
}

/* Work waiting in the loop's own queues, which the next iteration runs
 * without waiting for the engine. */
static int has_queued_work(const pact_loop *loop)
{
    return !pact_list_empty(&loop->ready) ||
           !pact_list_empty(&loop->done_queue) ||
           !pact_list_empty(&loop->submit_queue) ||
           atomic_load(&loop->ts_count) > 0 ||
           atomic_load(&loop->offload_done_count) > 0 ||
           atomic_load(&loop->stop_requested);
}

/* How long the next wait may block, at most max_wait_ns (-1 = no limit):
 * 0 when work is queued or nothing keeps the loop alive (run() is about
 * to return), else until the next timer. */
static int64_t wait_timeout(const pact_loop *loop, int64_t max_wait_ns)
{
    if (has_queued_work(loop) || !pact_loop_alive(loop))
        return 0;
    int64_t timeout = max_wait_ns;
    int64_t next = pact__timers_next((pact_loop *)loop);
    if (next >= 0 && (timeout < 0 || next < timeout))
        timeout = next;
    return timeout;
}

static void iterate(pact_loop *loop, int64_t max_wait_ns)
{
    loop->stats.iterations++;
    loop->now = pact_now();
    pact__ops_flush(loop);
    /* Ops that completed at submission (the epoll engine tries each system
     * call first) run their callbacks now, not after a wasted zero-timeout
     * wait, and what those callbacks start is submitted in the same turn.
     * Bounded, so a callback chain cannot keep the loop from polling.
     * With wait hooks, not here: a binding runs in the after hook what it
     * had queued before this iteration, and a completion is never ahead of
     * that (asyncio runs its ready handles before any I/O callback); the
     * queued work makes the wait a poll, and pact__wait_hook_after runs
     * them right after the binding's hook. */
    for (int round = 0; round < 4 && !loop->after_wait &&
                       !pact_list_empty(&loop->done_queue);
         round++) {
        pact__ops_dispatch_done(loop);
        pact__ops_flush(loop);
    }

    int64_t timeout = wait_timeout(loop, max_wait_ns);
    int r = wait_and_count_idle(loop, timeout);
    if (r < 0 && r != -EINTR && r != -ETIME)
        pact__error(loop, r, "%s wait failed", loop->engine->name);

    pact__ops_dispatch_done(loop);
    /* Every engine's wait reads the clock in pact__wait_hook_after(); a
     * wait that failed before its system call did not. */
    if (!loop->now_after_wait)
        loop->now = pact_now();
    loop->now_after_wait = 0;
    pact__timers_run(loop);
    drain_threadsafe(loop);
    pact__ops_drain_offloaded(loop);
    pact__handles_run_ready(loop);
    /* Callbacks above may have cancelled ops locally. */
    pact__ops_dispatch_done(loop);
}

/* A pinned loop: the thread that first runs it owns it from then on;
 * before that the loop may be handed to another thread. io_uring binds the
 * ring to the first thread that submits (SINGLE_ISSUER), after which any
 * other thread's io_uring_enter fails: run or close there would spin
 * forever, so they are refused in every mode, not only in debug mode. A
 * movable loop has no lasting owner: claim_runner() alone keeps two
 * threads from driving it at once. */
static int check_runner(pact_loop *loop, const char *func)
{
    if (loop->movable)
        return 0;
    if (!atomic_load_explicit(&loop->owned, memory_order_relaxed)) {
        loop->owner = pact__thread_id();
        atomic_store_explicit(&loop->owned, 1, memory_order_release);
    } else if (loop->owner != pact__thread_id())
        return pact__misuse(loop, -EPERM, func,
                            "called from a thread that does not own the loop "
                            "(the thread that first ran it; a loop made with "
                            "pact_loop_options.movable may change threads)");
    return 0;
}

/* Makes the calling thread the one driving the loop (run, run_once,
 * close): -EBUSY if a thread does already — this one (a callback of the
 * loop) or another. The acquire pairs with release_runner()'s release: a
 * loop run on thread A, then on B, hands B everything A wrote. */
static int claim_runner(pact_loop *loop, const char *func)
{
    uint64_t me = pact__thread_id(), idle = 0;
    if (atomic_compare_exchange_strong_explicit(&loop->runner, &idle, me,
                                                memory_order_acquire,
                                                memory_order_acquire))
        return 0;
    return pact__misuse(loop, -EBUSY, func,
                        idle == me ? "the loop is already running (called "
                                     "from one of its callbacks?)"
                                   : "the loop is running on another thread");
}

static void release_runner(pact_loop *loop)
{
    atomic_store_explicit(&loop->runner, 0, memory_order_release);
}

static void run_end(pact_loop *loop, unsigned flags);

/* Makes the calling thread the loop's runner (run or flush), an open
 * loop it may use; release_runner() gives it back. A pinned loop's owner
 * is settled first: only it may claim the loop. A movable loop is
 * claimed first: its state is then this thread's to read, and a thread
 * that finds it running elsewhere gets -EBUSY. */
static int claim_loop(pact_loop *loop, const char *func)
{
    int r = 0;
    if (!loop->movable && loop->state == PACT_LOOP_OPEN)
        r = check_runner(loop, func);
    if (r)
        return r;
    r = claim_runner(loop, func);
    if (r)
        return r;
    r = pact__check_loop(loop, func);
    if (r)
        release_runner(loop);
    return r;
}

static int run_begin(pact_loop *loop, const char *func)
{
    if (!loop)
        return -EINVAL;
    if (pact__loop_forked(loop))
        return forked_misuse(loop, func);
    if (pact__loop_running_here && pact__loop_running_here != loop)
        return pact__misuse(loop, -EBUSY, func,
                            "this thread is already running another loop "
                            "(one loop per thread)");
    int r = claim_loop(loop, func);
    if (r)
        return r;
    loop->running = 1;
    pact__loop_running_here = loop;
    /* A movable loop's engine may be bound to the thread that ran it
     * before (io_uring's fast flags): it moves here first. */
    if (loop->movable && (r = loop->engine->adopt_thread(loop)) != 0) {
        run_end(loop, 0);
        return r;
    }
    return 0;
}

/* Hands the kernel what the run's callbacks left for the next wait that
 * a peer waits for, so that no byte and no close waits for a run that
 * may not come: the ops that go out (op.c, op_goes_out: a write's send,
 * the next chunk of a sendfile, a send queued behind one that completed,
 * a datagram, a shutdown), and whatever the engine holds for the kernel
 * (io_uring: the SQ — send slots, the rest of a send_all that went out
 * short, socket closes, the updates that empty fixed-file slots, cancels;
 * uring_flush makes no system call when it is empty).
 * One rule for every starter, decided here and by the op's kind, not a
 * flag each starter must remember to set. Ops that only wait for
 * something (a receive, a poll) go with the next run's wait: handed over
 * now they would cost a system call of their own per run. Measured with
 * perf stat (syscalls:sys_enter_io_uring_enter) per test of
 * tests/test_silent_send.c: the same counts as the flags set by each
 * starter gave. */
static void hand_over_held_work(pact_loop *loop)
{
    if (loop->outgoing_queued)
        pact__ops_flush(loop);
    loop->engine->flush(loop);
}

/* flags: pact_loop_run_once_flags()'s; PACT_RUN_AGAIN leaves the held work
 * to the next run's wait, one system call for both. */
static void run_end(pact_loop *loop, unsigned flags)
{
    if (!(flags & PACT_RUN_AGAIN))
        hand_over_held_work(loop);
    loop->running = 0;
    pact__loop_running_here = NULL;
    release_runner(loop);
}

int pact_loop_run(pact_loop *loop)
{
    int r = run_begin(loop, __func__);
    if (r)
        return r;
    while (pact_loop_alive(loop)) {
        iterate(loop, -1);
        if (atomic_exchange(&loop->stop_requested, 0))
            break;
    }
    run_end(loop, 0);
    return 0;
}

static int run_once(pact_loop *loop, int64_t timeout_ns, unsigned flags,
                    const char *func)
{
    int r = run_begin(loop, func);
    if (r)
        return r;
    iterate(loop, timeout_ns);
    atomic_store(&loop->stop_requested, 0);
    run_end(loop, flags);
    return pact_loop_alive(loop);
}

int pact_loop_run_once(pact_loop *loop, int64_t timeout_ns)
{
    return run_once(loop, timeout_ns, 0, __func__);
}

int pact_loop_run_once_flags(pact_loop *loop, int64_t timeout_ns,
                             unsigned flags)
{
    if (flags & ~(unsigned)PACT_RUN_AGAIN)
        return PACT_MISUSE(loop, -EINVAL, "flags has a bit that is no "
                                           "pact_run_flag");
    return run_once(loop, timeout_ns, flags, __func__);
}

int pact_loop_flush(pact_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (pact__loop_forked(loop))
        return forked_misuse(loop, __func__);
    /* Claimed as a run claims it: the engine's queues are the runner's,
     * and a callback of the loop (or another thread running it) gets
     * -EBUSY; the run hands its work over itself. */
    int r = claim_loop(loop, __func__);
    if (r)
        return r;
    /* Everything, not only what hand_over_held_work() hands over: the
     * caller asks for it and runs no wait soon. */
    pact__ops_flush(loop);
    loop->engine->flush(loop);
    release_runner(loop);
    return 0;
}

int pact_loop_stop(pact_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (pact__loop_forked(loop))
        return forked_misuse(loop, __func__);
    atomic_store(&loop->stop_requested, 1);
    return pact_loop_wake(loop);
}

/* Called with ts_lock held. Other threads read loop->state and wake_fd only
 * under ts_lock, and close changes both under it: unlocked, a waker racing
 * close could write into the closed wake_fd's number after another file
 * took it, and a producer could queue a callback after close drained the
 * queue (leaked, never run). */
static int wake_locked(pact_loop *loop)
{
    if (loop->state == PACT_LOOP_CLOSED)
        return -ESHUTDOWN;
    /* Coalesce: only the first waker since the loop last drained writes. */
    if (atomic_exchange(&loop->wake_pending, 1) == 0)
        return pact__wake_post(loop);
    return 0;
}

int pact_loop_wake(pact_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (pact__loop_forked(loop)) /* the eventfd is the parent's too */
        return forked_misuse(loop, __func__);
    pthread_mutex_lock(&loop->ts_lock);
    int r = wake_locked(loop);
    pthread_mutex_unlock(&loop->ts_lock);
    return r;
}

int pact_call_soon_threadsafe(pact_loop *loop, pact_call_cb cb, void *user)
{
    if (!loop || !cb)
        return -EINVAL;
    if (pact__loop_forked(loop))
        return forked_misuse(loop, __func__);
    pact_ts_item *item = malloc(sizeof *item);
    if (!item)
        return -ENOMEM;
    item->next = NULL;
    item->cb = cb;
    item->user = user;
    pthread_mutex_lock(&loop->ts_lock);
    if (loop->state != PACT_LOOP_OPEN) { /* see wake_locked() */
        pthread_mutex_unlock(&loop->ts_lock);
        free(item);
        return -ESHUTDOWN;
    }
    if (loop->ts_tail)
        loop->ts_tail->next = item;
    else
        loop->ts_head = item;
    loop->ts_tail = item;
    atomic_fetch_add(&loop->ts_count, 1);
    int r = wake_locked(loop);
    pthread_mutex_unlock(&loop->ts_lock);
    return r;
}

/* Lists, in debug mode, each operation still live at close. */
static void report_live_ops(pact_loop *loop)
{
    static const char *const kind_names[PACT_OP_KIND_COUNT] = {
        [PACT_OP_RECV] = "recv", [PACT_OP_SEND] = "send",
        [PACT_OP_SEND_ALL] = "send_all", [PACT_OP_ACCEPT] = "accept",
        [PACT_OP_CONNECT] = "connect", [PACT_OP_SHUTDOWN] = "shutdown",
        [PACT_OP_READ] = "read", [PACT_OP_WRITE] = "write",
        [PACT_OP_POLL] = "poll", [PACT_OP_SLEEP] = "sleep",
        [PACT_OP_CUSTOM] = "composite", [PACT_OP_WORK] = "pool work",
        [PACT_OP_ACCEPT_MULTI] = "multishot accept",
        [PACT_OP_OPEN] = "open", [PACT_OP_CLOSE] = "close",
        [PACT_OP_FSYNC] = "fsync", [PACT_OP_STATX] = "statx",
        [PACT_OP_RENAME] = "rename", [PACT_OP_UNLINK] = "unlink",
        [PACT_OP_RECVFROM] = "recvfrom", [PACT_OP_SENDTO] = "sendto",
        [PACT_OP_RECV_MULTI] = "multishot recv", [PACT_OP_WATCH] = "watch"};
    for (uint32_t i = 0; i < loop->ops.capacity; i++) {
        pact_op_s *op = pact_slab_at(&loop->ops, i);
        if (!(op->slab.gen & 1) || (op->flags & PACT_OPF_INTERNAL))
            continue;
        char where[256];
        pact__describe_address(op->created_at, where, sizeof where);
        pact__log(loop, "loop closed with %s operation on fd %d in flight "
                        "(started at %s); it completes with -ECANCELED",
                  kind_names[op->kind] ? kind_names[op->kind] : "file/pool",
                  (int)op->fd, where);
    }
}

void pact__resource_add(pact_loop *loop, pact_resource *res,
                        const pact_resource_kind *kind, void *created_at)
{
    res->kind = kind;
    res->created_at = created_at;
    pact_list_push_back(&loop->resources, &res->link);
}

void pact__resource_remove(pact_loop *loop, pact_resource *res)
{
    (void)loop;
    if (pact_list_linked(&res->link))
        pact_list_remove(&res->link);
}

static int close_claimed(pact_loop *loop);

/* Force-closes what is still open (transports, servers, processes) while
 * the loop can still run their callbacks, so each of them still sees its
 * connection_lost, in order, before the loop goes away. */
static void close_resources(pact_loop *loop)
{
    if (pact_list_empty(&loop->resources))
        return;
    for (pact_list *n = loop->resources.next; n != &loop->resources; n = n->next) {
        pact_resource *res = pact_container_of(n, pact_resource, link);
        if (loop->debug) {
            char where[256];
            pact__describe_address(res->created_at, where, sizeof where);
            pact__log(loop, "loop closed with a %s still open (created at "
                            "%s); closing it", res->kind->name, where);
        }
    }
    /* force_close may remove the resource (and others): restart each time. */
    pact_list pending;
    pact_list_init(&pending);
    pact_list_splice(&pending, &loop->resources);
    pact_list *n;
    while ((n = pact_list_pop_front(&pending))) {
        pact_list_push_back(&loop->resources, n);
        pact_resource *res = pact_container_of(n, pact_resource, link);
        res->kind->force_close(res);
    }
    uint64_t deadline = pact_now() + 10ull * 1000000000ull;
    if (PACT_FAULT(PACT_FAULT_CLOSE_DEADLINE)) /* tests only: no wait */
        deadline = 0;
    loop->running = 1; /* callbacks may not run the loop re-entrantly */
    while (!pact_list_empty(&loop->resources) && pact_now() < deadline)
        iterate(loop, 10 * 1000 * 1000);
    loop->running = 0;
    if (!pact_list_empty(&loop->resources))
        pact__log(loop, "close: resources still open after 10 s; their "
                        "operations are cancelled below");
}

int pact_loop_close(pact_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (pact__loop_forked(loop))
        return forked_misuse(loop, __func__);
    /* Claimed first: state and running are the runner's to read. */
    int r = claim_runner(loop, __func__);
    if (r == -EBUSY && loop->movable)
        return r; /* running on another thread */
    if (r)
        return pact__misuse(loop, -EBUSY, __func__,
                            "cannot close a running loop");
    r = close_claimed(loop);
    release_runner(loop);
    return r;
}

static int close_claimed(pact_loop *loop)
{
    if (loop->state == PACT_LOOP_CLOSED)
        return pact__misuse(loop, -EBADF, "pact_loop_close",
                            "the loop is closed already");
    if (loop->state == PACT_LOOP_CLOSING || loop->running)
        return pact__misuse(loop, -EBUSY, "pact_loop_close",
                            "cannot close a running loop");
    int owner_err = check_runner(loop, "pact_loop_close");
    if (owner_err)
        return owner_err;
    if (loop->movable) { /* see run_begin() */
        loop->running = 1;
        int r = loop->engine->adopt_thread(loop);
        loop->running = 0;
        if (r)
            return r;
    }
    close_resources(loop);
    pthread_mutex_lock(&loop->ts_lock); /* see wake_locked() */
    loop->state = PACT_LOOP_CLOSING;
    pthread_mutex_unlock(&loop->ts_lock);
    loop->running = 1;

    if (loop->debug)
        report_live_ops(loop);
    pact__handles_drop_all(loop);

    /* Cancel every op; each still completes exactly once below. */
    for (uint32_t i = 0; i < loop->ops.capacity; i++) {
        pact_op_s *op = pact_slab_at(&loop->ops, i);
        if ((op->slab.gen & 1) && op->state != PACT_OP_DONE &&
            !(op->flags & PACT_OPF_CANCEL_REQUESTED))
            pact__op_cancel(loop, op);
    }
    /* Queued pool work was cancelled above; running work is waited for
     * here and completes below with its real result. */
    pact__pool_shutdown(loop);
    pact__ops_drain_offloaded(loop);
    /* Wait for the kernel to hand back every op before its memory (and the
     * ring it may write into) goes away; and every send slot's send, whose
     * stream is gone by now unless it outlived close_resources (its abort
     * cancelled the send). */
    uint64_t started = pact_now();
    int warned = 0;
    while (loop->ops.live > 0 || loop->send_slots_live > 0) {
        if (pact__ops_dispatch_done(loop) > 0)
            continue;
        int r = wait_and_count_idle(loop, 100 * 1000 * 1000);
        if (r < 0 && r != -EINTR && r != -ETIME) {
            /* Nothing may be freed while the kernel owes a completion, so
             * keep waiting — but say it once and do not spin hot. */
            if (!warned)
                pact__error(loop, r, "wait during close failed");
            warned = 1;
            struct timespec pause = {0, 10 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
        pact__ops_dispatch_done(loop);
        if (!warned && pact_now() - started > 5ull * 1000000000ull) {
            pact__log(loop, "close: still waiting for %u operation(s) the "
                            "kernel has not returned", loop->ops.live);
            warned = 1;
        }
    }
    loop->running = 0;
    /* Every op is done, the signalfd read too: release signal ownership and
     * restore the thread's signal mask. */
    pact__signals_close(loop);

    /* Callbacks queued from other threads are dropped, not run. */
    pact_ts_item *item = take_threadsafe(loop);
    while (item) {
        pact_ts_item *next = item->next;
        if (loop->debug)
            pact__log(loop, "loop closed with a threadsafe callback not run");
        free(item);
        item = next;
    }

    loop->engine->destroy(loop);
    pthread_mutex_lock(&loop->ts_lock); /* see wake_locked() */
    loop->state = PACT_LOOP_CLOSED;
    pact__wake_close(loop);
    pthread_mutex_unlock(&loop->ts_lock);
    if (loop->stats.stray_completions)
        pact__log(loop, "%llu completion(s) matched no live operation",
                  (unsigned long long)loop->stats.stray_completions);
    pact_slab_destroy(&loop->ops);
    pact_slab_destroy(&loop->op_ext);
    pact_slab_destroy(&loop->handles);
    pact_heap_destroy(&loop->timers);
    free(loop->burst_buf);
    loop->burst_buf = NULL;
    pact__stream_cache_free(loop);
    pact_fd_table_destroy(&loop->fds);
    return 0;
}

#ifndef _WIN32
/* pact_loop_free() in a child process that inherited the loop through
 * fork(): releases this process's copy — memory, and the child's copies
 * of the fds — without running a callback, submitting, cancelling or
 * waiting: the kernel objects are the parent's and its ops are the
 * parent's to complete. The pool's threads do not exist here and its
 * mutex may have been held by one of them at the fork: neither is
 * touched. */
static void forget_in_child(pact_loop *loop)
{
    if (loop->state != PACT_LOOP_CLOSED) {
        for (uint32_t i = 0; i < loop->ops.capacity; i++) {
            pact_op_s *op = pact_slab_at(&loop->ops, i);
            pact_op_ext *x = (op->slab.gen & 1) ? pact__op_ext_of(op) : NULL;
            if (x) {
                free(x->path);
                free(x->path2);
            }
        }
        pact__endpoints_forget(loop); /* before the stream caches go */
        pact__signals_forget(loop);
        pact__pool_forget(loop);
        pact_ts_item *item = loop->ts_head;
        while (item) {
            pact_ts_item *next = item->next;
            free(item);
            item = next;
        }
        loop->engine->forget(loop);
        if (loop->wake_fd >= 0)
            close(loop->wake_fd);
        pact_slab_destroy(&loop->ops);
        pact_slab_destroy(&loop->op_ext);
        pact_slab_destroy(&loop->handles);
        pact_heap_destroy(&loop->timers);
        free(loop->burst_buf);
        pact__stream_cache_free(loop); /* memory only, no fd, no op */
        pact_fd_table_destroy(&loop->fds);
    }
    free(loop);
}
#endif

int pact_loop_free(pact_loop *loop)
{
    if (!loop)
        return 0;
#ifndef _WIN32
    if (pact__loop_forked(loop)) {
        forget_in_child(loop);
        return 0;
    }
#endif
    if (loop->state != PACT_LOOP_CLOSED) {
        /* Refused (running, another thread): the loop is left as it was,
         * rather than freeing memory its own code still uses. */
        int r = pact_loop_close(loop);
        if (r != 0)
            return pact__misuse(loop, r, __func__,
                                "cannot close the loop from here; it is "
                                "not freed");
    }
    pthread_mutex_destroy(&loop->ts_lock);
    free(loop);
    return 0;
}

uint64_t pact_loop_time(const pact_loop *loop)
{
    return loop ? loop->now : 0;
}

pact_engine_kind pact_loop_engine(const pact_loop *loop)
{
    return loop ? loop->engine_kind : PACT_ENGINE_AUTO;
}

const char *pact_loop_engine_name(const pact_loop *loop)
{
    return loop && loop->engine ? loop->engine->name : "none";
}

const char *pact_loop_engine_reason(const pact_loop *loop)
{
    return loop && loop->engine_reason[0] ? loop->engine_reason : NULL;
}

int pact_loop_debug(const pact_loop *loop)
{
    return loop ? loop->debug : 0;
}

int pact_loop_get_stats(const pact_loop *loop, pact_loop_stats *out)
{
    if (!loop || !out)
        return -EINVAL;
    *out = loop->stats;
    out->ops_live = loop->user_ops_live;
    out->handles_live = loop->handles.live;
    return 0;
}

int pact_loop_backend_fd(const pact_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (pact__loop_forked(loop))
        return forked_misuse(loop, __func__);
    if (loop->state == PACT_LOOP_CLOSED)
        return -ESHUTDOWN;
    return loop->engine->backend_fd((pact_loop *)loop);
}

int64_t pact_loop_backend_timeout(const pact_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (pact__loop_forked(loop))
        return forked_misuse(loop, __func__);
    if (loop->state == PACT_LOOP_CLOSED)
        return -ESHUTDOWN;
    /* Unlike wait_timeout(), a loop with nothing that keeps it alive is
     * not "due now": an outer loop would spin. Its unreferenced timers
     * still count, so they run on time. */
    if (has_queued_work(loop) || loop->engine->has_unsubmitted((pact_loop *)loop))
        return 0;
    return pact__timers_next((pact_loop *)loop);
}

/* The first published layout of pact_loop_metrics (docs/abi.md). */
#define PACT__LOOP_METRICS_V1 PACT__OPTIONS_END(pact_loop_metrics, callbacks)

int pact_loop_get_metrics(const pact_loop *loop, pact_loop_metrics *out)
{
    if (!loop || !out)
        return -EINVAL;
    size_t size = out->size;
    if (size < PACT__LOOP_METRICS_V1)
        return -EINVAL;
    pact_loop_metrics m = {
        .size = size,
        .iterations = loop->stats.iterations,
        .idle_ns = loop->idle_ns,
        .events = loop->stats.ops_completed,
        .callbacks = loop->callbacks_run,
        .recv_buffer_waits = loop->recv_buffer_waits,
    };
    /* A caller compiled against an older header gets the fields it knows;
     * a newer one gets zero in the fields this library does not have. */
    if (size > sizeof m) {
        memset((char *)out + sizeof m, 0, size - sizeof m);
        size = sizeof m;
    }
    memcpy(out, &m, size);
    return 0;
}

int pact_loop_set_error_handler(pact_loop *loop, pact_error_cb handler,
                                void *user)
{
    if (!loop)
        return -EINVAL;
    int r = pact__loop_check_thread(loop, __func__);
    if (r)
        return r;
    loop->on_error = handler;
    loop->on_error_user = user;
    return 0;
}
