/* SPDX-License-Identifier: MIT */
/* The loop's private state and the functions the layers share. */
#ifndef PACT_LOOP_H
#define PACT_LOOP_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "pact.h"
#include "engine.h"
#include "fault.h"
#include "fd_table.h"
#include "heap.h"
#include "list.h"
#include "op.h"
#include "slab.h"

/* The rare path of a hot function, kept out of line so that the common
 * case needs no stack frame of its own and reaches the next function by
 * a tail call (callgrind counted 10-15 instructions of register saves and
 * restores per such function and request in the 64-byte echo). */
#define PACT_SLOW_PATH __attribute__((noinline))

/* What a timer heap node is embedded in. */
enum pact_timer_kind {
    PACT_TIMER_HANDLE,      /* pact_call_later(): a pact_handle_s */
    PACT_TIMER_OP_SLEEP,    /* pact_sleep(): a pact_op_s */
    PACT_TIMER_OP_DEADLINE, /* pact_op_set_timeout() on the heap */
};

enum pact_handle_state {
    PACT_HANDLE_READY,   /* in the ready queue */
    PACT_HANDLE_TIMER,   /* in the timer heap */
    PACT_HANDLE_RUNNING, /* its callback is running */
};

/* pact_handle_s.flags */
enum pact_handle_flag {
    PACT_HANDLEF_TIMER = 1 << 0,     /* call_later / call_at / call_every */
    PACT_HANDLEF_CANCELLED = 1 << 1, /* a repeating timer cancelled from
                                        its own callback: not re-armed */
    PACT_HANDLEF_UNREF = 1 << 2,     /* pact_handle_set_ref(0): a timer
                                        that does not keep the loop alive */
};

/* A node of the loop's ready queue: what runs on the next iteration, in
 * the order queued. A handle (call_soon) is one; so is the node each
 * endpoint owns for its connection_made and its final close
 * (endpoint.h), which costs no handle allocation per connection. run
 * gets the node back; the queue never looks at what holds it. */
typedef struct pact_ready {
    pact_list link;
    void (*run)(struct pact_loop *loop, struct pact_ready *node);
} pact_ready;

/* A scheduled callback (call_soon / call_later / call_every). The slab
 * does not zero it: handle_alloc (timer.c) sets every field, so a field
 * added here must be set there too. */
typedef struct pact_handle_s {
    pact_slab_entry slab; /* must be first */
    uint8_t state;
    uint8_t flags;
    /* Repeating timers: the next deadline is the last one + interval
     * (0 = runs once). */
    uint64_t interval;
    pact_call_cb cb;
    void *user;
    pact_ready ready; /* in loop->ready while PACT_HANDLE_READY */
    pact_heap_node timer;
    void *created_at;
} pact_handle_s;

/* A callback queued by pact_call_soon_threadsafe(). */
typedef struct pact_ts_item {
    struct pact_ts_item *next;
    pact_call_cb cb;
    void *user;
} pact_ts_item;

enum pact_loop_state { PACT_LOOP_OPEN, PACT_LOOP_CLOSING, PACT_LOOP_CLOSED };

struct pact_resource;

/* What is the same for every resource of a kind, in one static table per
 * kind: the record of each resource only points here (every idle
 * connection is one, and its memory counts: docs/design-notes.md). */
typedef struct pact_resource_kind {
    const char *name; /* in loop-close reports: "transport", "tty", ... */
    /* Aborts the resource; it calls pact__resource_remove() once gone. */
    void (*force_close)(struct pact_resource *res);
} pact_resource_kind;

/* Something that owns fds or ops on the loop (transport, server, process):
 * listed at close, reported in debug mode, and force-closed so that its
 * callbacks still run in order before the loop goes away
 * (docs/contract.md §8). */
typedef struct pact_resource {
    pact_list link;
    void *created_at;
    /* Last: an endpoint's ops are read through it on every request, and
     * it sits next to the endpoint's other hot fields (endpoint.h). */
    const pact_resource_kind *kind;
} pact_resource;

/* The receive buffers when pact_loop_options leaves them at 0, in one
 * place (include/pact.h documents them): 256 of 64 KiB, or where io_uring
 * fills them incrementally (IOU_PBUF_RING_INC, Linux 6.12;
 * src/unix/engine_uring.c says why fewer) as many as hold 2 MiB, 16 at
 * least: 32 of 64 KiB. */
#define PACT__RECV_BUFFER_COUNT_DEFAULT 256u
#define PACT__RECV_BUFFER_COUNT_INCREMENTAL_DEFAULT 16u
#define PACT__RECV_BUFFER_BYTES_INCREMENTAL_DEFAULT (2u << 20)
#define PACT__RECV_BUFFER_SIZE_DEFAULT (64u * 1024u)

struct pact_loop {
    const pact_engine_ops *engine;
    void *engine_data;
    pact_engine_kind engine_kind;
    char engine_reason[192]; /* empty when on io_uring or epoll was asked */

    int debug;
    int state;
    int running; /* inside pact_loop_run / run_once */
    atomic_int stop_requested;
    /* pact_loop_options.movable: the loop may run on one thread, then on
     * another (the io_uring ring is set up without SINGLE_ISSUER and
     * DEFER_TASKRUN). See pact__loop_check_thread(). */
    int movable;
    /* A pinned loop's owner: the thread that first ran (or closed) it,
     * from then on (owned = 1). Before that the creating thread, which
     * only debug mode holds to (a loop may be made on one thread and run
     * on another). Threads are named by pact__thread_id(), never by
     * pthread_t: glibc hands a finished thread's pthread_t to the next
     * thread it creates, which was then taken for the dead owner. */
    uint64_t owner;
    atomic_int owned;
    /* The thread inside run, run_once or close right now, 0 when none:
     * claimed with a compare-and-swap, so that two threads can never
     * drive the loop at once, and released with release order, so that
     * the next thread to claim it sees everything the last one did. */
    _Atomic uint64_t runner;
    /* pact__fork_generation() when the loop was made: a child process
     * (fork) sees a newer one and gets -ECHILD from every entry point. */
    unsigned fork_generation;

    uint64_t now; /* start of the current iteration, then after its wait */
    /* pact__wait_hook_after() read the clock into `now`: iterate() does
     * not read it again after the wait. */
    uint8_t now_after_wait;

    pact_slab ops;
    pact_slab op_ext; /* pact_op_ext: the few ops that need one */
    pact_slab handles;
    uint64_t user_ops_live; /* live ops without PACT_OPF_INTERNAL */

    pact_fd_table fds; /* per-fd state: op.c's order, the engine's (fd_table.h) */
    pact_list ready;        /* pact_ready: handles, endpoints' nodes; FIFO */
    pact_list submit_queue; /* pact_op_s started but not submitted */
    pact_list done_queue;   /* pact_op_s whose callback is due */
    pact_heap timers;
    uint64_t user_timers; /* timers in the heap that keep the loop alive */
    uint64_t unref_ops;   /* live user ops with PACT_OPF_UNREF */
    uint64_t ref_signals; /* signal handlers with pact_signal_set_ref(1) */

    /* Cross-thread wake-up: an eventfd read by an internal op. */
    int wake_fd;
    uint64_t wake_buf;
    pact_op wake_op;
    atomic_int wake_pending; /* an eventfd write is outstanding */
    pthread_mutex_t ts_lock;
    pact_ts_item *ts_head, *ts_tail;
    atomic_int ts_count;

    pact_list resources; /* pact_resource */

    pact_error_cb on_error;
    void *on_error_user;

    /* pact_loop_set_wait_hooks(): called around every engine wait. */
    pact_wait_cb before_wait;
    pact_wait_cb after_wait;
    void *wait_hook_user;

    pact_loop_stats stats;
    /* pact_loop_get_metrics(): time spent blocked in the engine's wait,
     * and callbacks run (PACT_RUN_CALLBACK counts them). */
    uint64_t idle_ns;
    uint64_t wait_started; /* pact__wait_hook_before() */
    uint64_t callbacks_run;

    /* Ops finished on another thread (the pool), waiting to be moved to
     * done_queue by the loop thread; guarded by ts_lock. */
    pact_list offload_done;
    atomic_int offload_done_count;
    /* Bit (1 << kind) for each file op kind the engine runs natively;
     * the others are offloaded to the pool. Set by the engine's init. */
    uint32_t native_kinds;
    struct pact_pool *pool;       /* pool.c; NULL until first used */
    unsigned pool_size;           /* max worker threads */
    struct pact_signals *signals; /* signal.c; NULL until first used */
    /* pact_recv_multishot(): the buffers the loop lends (options), and how
     * the engine runs it ("multishot", "poll", "epoll"; set by init). */
    unsigned recv_buf_count;
    unsigned recv_buf_size;
    uint8_t recv_buf_count_default; /* not chosen by the options */
    /* pact_loop_metrics.recv_buffer_waits: multishot receives that found
     * every buffer in use and waited for one (io_uring). */
    uint64_t recv_buffer_waits;
    const char *recv_multi_mode;
    /* The engine runs pact__accept_multishot() (set by init). */
    uint8_t accept_multi;
    /* pact__op_recv_burst() reads into this one loop-wide buffer (epoll,
     * and io_uring's poll mode): no connection owns a receive buffer.
     * Allocated on first use, freed at close. */
    char *burst_buf;
    size_t burst_buf_size;
    /* pact_loop_set_recv_buffer_hook(): the binding's memory for a read
     * by readiness instead of burst_buf (recv_burst.h), and the
     * completion size from which io_uring reads a receive by readiness
     * (0: only a peer that streams does). */
    pact_recv_buffer_cb recv_buffer_get;
    void *recv_buffer_user;
    size_t recv_large;
    /* The receive buffer the engine lends to the data callback running
     * now (io_uring: a provided buffer; NULL when none is lent, and on
     * engines that copy). pact__recv_buffer_keep() claims it during the
     * callback; the engine then does not take it back after the callback
     * but when give_back has been called once per claim. */
    struct {
        const char *base;
        size_t len;
        unsigned id;     /* the engine's name for the buffer */
        unsigned claims; /* pact__recv_buffer_keep() calls meanwhile */
        /* More bytes wait in the socket after these (io_uring's
         * IORING_CQE_F_SOCK_NONEMPTY): the peer is streaming, and the
         * next chunk arrives in this same batch of completions. */
        uint8_t more_in_socket;
        void (*give_back)(struct pact_loop *loop, unsigned id);
    } lent;
    /* Set by the io_uring engine while it runs the callbacks of the
     * completions it reaped: an op started now goes to the kernel in the
     * io_uring_enter that ends this iteration, before the loop sleeps, so
     * a small socket write is queued as a send there instead of costing a
     * send(2) of its own (stream.c, send_joins_submission). */
    uint8_t sends_join_submission;
    /* An op that goes out (op.c, op_goes_out) waits in submit_queue: a
     * run that returns hands the queue over (loop.c, hand_over_held_work). */
    uint8_t outgoing_queued;
    /* How many sends stream.c joined to the next submission since the
     * last one (bounded there, JOINED_SENDS_MAX); a run that returns
     * hands them over with the rest (loop.c, hand_over_held_work). */
    uint16_t sends_joined;
    /* The engine takes send slots (op.h, pact__slot_send): io_uring on a
     * ring bound to one thread (a pinned loop, or a movable one until it
     * changes threads). Set by the engine's init; io_uring clears it when
     * a movable loop moves. */
    uint8_t send_slots;
    /* Slots whose send the kernel has not handed back yet: close waits
     * for them as for its ops. */
    uint32_t send_slots_live;
    /* stream.c: the staging area of replies joined to the next
     * submission (write_joined; allocated at the first, freed at close),
     * the bytes of it taken, and the sends from it not yet back. */
    char *stage;
    uint32_t stage_used;
    uint32_t stage_sends;
    /* stream.c: drained write state of socket streams, kept for the next
     * stream that cannot send at once (bounded; freed at close). */
    struct pact_stream_more *stream_more_cache;
    unsigned stream_more_cached;
    size_t stream_more_cached_bytes;
    /* ...and how many streams keep theirs while drained (bounded), with
     * buffers or with small ones or none (stream.c: release_more). */
    unsigned stream_more_kept;
    unsigned stream_more_kept_small;
    /* stream.c: the memory of freed streams, for the next connection
     * (bounded; freed at close). */
    struct pact_stream_cached *stream_cache;
    unsigned stream_cached;
};

/* Run the callbacks of ops in the done queue. */
int pact__ops_dispatch_done(pact_loop *loop);

/* Engines call these right around the system call of every wait, also
 * one that does not block (timeout_ns 0; around nothing when io_uring has
 * nothing to submit and nothing waiting in the kernel): a binding's lock
 * (pact_loop_set_wait_hooks) is then released only while the thread
 * sleeps, the completions an engine handles inside its wait run their
 * callbacks with it held, and a binding's own ready queue (asyncio's) runs
 * in the after hook, between the poll and the first completion it found.
 * With hooks, iterate() leaves what completed at submission (the epoll
 * engine tries each system call first) in the done queue for here: after
 * the binding's queue, as asyncio runs its ready handles before any I/O
 * callback, and still before what this wait found (a later op of the same
 * fd, a multishot receive's data, must not overtake it). errno is kept
 * for the caller. */
static inline void pact__wait_hook_before(pact_loop *loop, int64_t timeout_ns)
{
    if (loop->before_wait)
        loop->before_wait(loop, timeout_ns, loop->wait_hook_user);
    /* pact_loop_get_metrics()'s idle time: the blocking call alone (not
     * the hooks, not the callbacks the engine runs after it); a poll does
     * not block, and is not worth two clock reads. */
    if (timeout_ns != 0)
        loop->wait_started = pact_now();
}

static inline void pact__wait_hook_after(pact_loop *loop, int64_t timeout_ns)
{
    /* One reading for the idle time and the loop's time after the wait
     * (pact_loop_time() for what this iteration runs from here on). */
    uint64_t now = pact_now();
    loop->now = now;
    loop->now_after_wait = 1;
    if (timeout_ns != 0)
        loop->idle_ns += now - loop->wait_started;
    if (loop->after_wait) {
        int saved = errno;
        loop->after_wait(loop, timeout_ns, loop->wait_hook_user);
        pact__ops_dispatch_done(loop);
        errno = saved;
    }
}

/* The cross-thread wake-up (src/unix/wake_eventfd.c, src/win/wake.c). open
 * sets it up once the engine runs (0 or -errno); post, from any thread,
 * makes the engine's wait return and clear wake_pending (callers set
 * wake_pending first, so only one post is outstanding); close, after every
 * op has completed, under ts_lock, releases it. */
int pact__wake_open(pact_loop *loop);
int pact__wake_post(pact_loop *loop);
void pact__wake_close(pact_loop *loop);

/* Misuse is answered with a negative errno, and a message in debug mode. */
int pact__misuse(const pact_loop *loop, int err, const char *func,
                 const char *what);
#define PACT_MISUSE(loop, err, what) pact__misuse((loop), (err), __func__, (what))

/* Logging (stderr, or the error hook for errors). */
void pact__log(const pact_loop *loop, const char *fmt, ...) PACT_PRINTF(2, 3);
void pact__error(pact_loop *loop, int err, const char *fmt, ...)
    PACT_PRINTF(3, 4);
/* Writes "symbol+0xoff (object)" for a code address into buf. */
void pact__describe_address(void *addr, char *buf, size_t len);

/* A number for the calling thread, unique for the life of the process
 * (never reused, unlike pthread_t), never 0. */
uint64_t pact__thread_id(void);
/* pact__thread_id()'s number for the calling thread; 0 until it first
 * asks (loop.c). Every write and op start reads it (the owner-thread
 * check): on ELF the initial-exec model makes that one load from the
 * thread pointer, where libpact.so's default (general dynamic) model
 * calls __tls_get_addr each time. What that costs is the library's TLS
 * block (this, pact__loop_running_here below and connect_failure.c's, a
 * few dozen bytes) in the static TLS that glibc keeps for libraries
 * loaded later (dlopen, as Python loads its extension). Only on glibc:
 * musl (and Android's bionic) refuse to dlopen a library with
 * initial-exec TLS, so there the variable keeps the default model (TLS
 * descriptors on x86_64, see meson.build). */
#if defined(__ELF__) && defined(__GLIBC__)
#define PACT_TLS_INITIAL_EXEC __attribute__((tls_model("initial-exec")))
#else
#define PACT_TLS_INITIAL_EXEC
#endif
extern __thread uint64_t pact__this_thread_id PACT_TLS_INITIAL_EXEC;
/* The loop whose run (pact_loop_run, run_once, flush) this thread is in,
 * else NULL: set by run_begin after the owner and runner checks, cleared by
 * run_end and by the fork child handler (loop.c). */
extern __thread const pact_loop *pact__loop_running_here PACT_TLS_INITIAL_EXEC;

/* Counts fork()s into child processes (a pthread_atfork child handler,
 * installed by the first pact_loop_create). */
#ifndef _WIN32
extern atomic_uint pact__forks_seen;
static inline unsigned pact__fork_generation(void)
{
    return atomic_load_explicit(&pact__forks_seen, memory_order_relaxed);
}
#else
static inline unsigned pact__fork_generation(void)
{
    return 0; /* no fork() */
}
#endif

/* 1 in a child process that inherited the loop through fork(): its ring
 * or epoll fd, eventfd and thread pool belong to the parent, so every
 * entry point answers -ECHILD and never touches them. */
static inline int pact__loop_forked(const pact_loop *loop)
{
    return loop->fork_generation != pact__fork_generation();
}

/* For every entry point that is not thread-safe (all but those pact.h
 * marks "Thread-safe"): -EPERM when called from a thread that does not own
 * the loop, else 0. Cheap (one atomic load, pthread_self), so it is done
 * in every mode: unchecked, such a call changed the loop's lists under the
 * running owner without a lock. A loop that has never run has no owner
 * yet and may be used from any thread (debug mode holds its creating
 * thread to it until then). Layers whose entry points take a transport,
 * endpoint, ... rather than the loop call this with its loop. */
int pact__loop_check_thread_slow(const pact_loop *loop, const char *func);
/* Inline, since every write and most entry points make it: the common
 * cases (a pinned loop used by the thread that runs it; a movable loop
 * used from inside its run by the thread running it, which is where a
 * binding's callbacks write), in the process that made the loop, cost a
 * few loads and no call. Anything else takes the full check. `owned` is
 * read first, as the full check does: owner is written before it is set
 * (release). A runner of 0 never matches: pact__this_thread_id is 0 only
 * in a thread that has never been numbered, which has run no loop. */
static inline int pact__loop_owner_here(const pact_loop *loop)
{
    /* Inside the loop's run on this thread (a callback's write or op
     * start, the common case): one TLS load. Set only by a run that passed
     * the full check below (claim_loop), cleared when it ends and in a
     * forked child, so it never answers 1 where that check would not. */
    if (pact__loop_running_here == loop)
        return 1;
    if (loop->movable) {
        /* Relaxed: only this thread stores its own number there. */
        uint64_t me = pact__this_thread_id;
        return me != 0 &&
               atomic_load_explicit(&((pact_loop *)loop)->runner,
                                    memory_order_relaxed) == me &&
               !pact__loop_forked(loop);
    }
    return atomic_load_explicit(&loop->owned, memory_order_acquire) &&
           loop->owner == pact__this_thread_id && !pact__loop_forked(loop);
}
static inline int pact__loop_check_thread(const pact_loop *loop, const char *func)
{
    if (pact__loop_owner_here(loop))
        return 0;
    return pact__loop_check_thread_slow(loop, func);
}

/* Checks that the loop is open and the calling thread may use it
 * (pact__loop_check_thread). Returns 0 or a negative errno. Inline for
 * its common case, an open loop on its owner's thread (every op start,
 * every transport made): the call was about 25 instructions. */
int pact__check_loop_slow(const pact_loop *loop, const char *func);
static inline int pact__check_loop(const pact_loop *loop, const char *func)
{
    if (loop && loop->state == PACT_LOOP_OPEN && pact__loop_owner_here(loop))
        return 0;
    return pact__check_loop_slow(loop, func);
}
/* The same for a cancel (pact_op_cancel, pact_signal_cancel), which a
 * closing loop still takes: pact_loop_close runs the callbacks of what it
 * closes, and those may cancel what is left. Only a closed loop answers
 * -ESHUTDOWN. Returns 0 or a negative errno. */
int pact__check_loop_for_cancel(const pact_loop *loop, const char *func);

/* Ops. */
/* The live op a handle names, or NULL (stale, another loop's, a callback
 * handle). Internal ops are found too: the user-facing calls refuse them. */
pact_op_s *pact__op_lookup(pact_loop *loop, pact_op handle);
static inline pact_op pact__op_handle(const pact_loop *loop,
                                      const pact_op_s *op)
{
    return pact_slab_entry_handle(&loop->ops, op);
}
/* The engine is done with op (no more completions owed): run its callback
 * now and release it. */
void pact__op_complete(pact_loop *loop, pact_op_s *op);
/* Starts slot's send of len bytes at buf on a socket (MSG_NOSIGNAL is
 * added to flags); ref 0: it does not keep the loop alive. Returns 0, or
 * a negative errno with nothing started — -EOPNOTSUPP where the engine
 * takes no slots or the loop is not open: the caller starts a pact_send
 * op instead, which says what is wrong. slot->done runs once the kernel
 * owes no completion for it, never from inside this call. Inline: a
 * stream's every reply starts here (callgrind, 64-byte echo on io_uring:
 * the call of its own was about 20 instructions per request). Counted
 * as a live user op, as op.c's "send slots" says. */
static inline int pact__slot_send(pact_loop *loop, pact_send_slot *slot, int fd,
                                  const void *buf, size_t len, int flags, int ref)
{
    if (!loop->send_slots || loop->state != PACT_LOOP_OPEN)
        return -EOPNOTSUPP;
    /* Fault injection (tests only): half the length, as pact__ops_flush
     * asks for an op's. */
    if (len > 1 && PACT_FAULT(PACT_FAULT_SHORT_IO))
        len = (len + 1) / 2;
    slot->flags = ref ? 0 : PACT_SLOTF_UNREF;
    int r = loop->engine->slot_send(loop, slot, fd, buf, len, flags | MSG_NOSIGNAL);
    if (r < 0)
        return r;
    loop->stats.ops_started++;
    loop->user_ops_live++;
    loop->unref_ops += !ref;
    loop->send_slots_live++;
    return 0;
}
/* Asks for slot's send to be cancelled: 0, or -EALREADY when it is not
 * in flight or a cancel was asked already. done still runs, later. */
int pact__slot_cancel(pact_loop *loop, pact_send_slot *slot);
/* pact_op_set_ref() for a slot's send in flight. */
void pact__slot_set_ref(pact_loop *loop, pact_send_slot *slot, int ref);
/* The engine owes slot no more completions: runs its done. */
void pact__slot_complete(pact_loop *loop, pact_send_slot *slot);
/* Records result and queues the callback for the loop's done phase (never
 * runs it from inside the caller: cancel and submit must not re-enter). */
void pact__op_defer(pact_loop *loop, pact_op_s *op, int64_t result);
/* Starts an op the loop itself owns (the wake-up read). */
pact_op pact__op_start_internal(pact_loop *loop, pact_op_s *op);
/* Allocates and fills the common part of an op; NULL with *err set. */
pact_op_s *pact__op_new(pact_loop *loop, pact_op_kind kind, pact_os_sock fd,
                        pact_op_cb cb, void *user, int *err);
/* pact__op_new() after the checks every public start function shares:
 * open loop, owner thread, callback, fd (AT_FDCWD allowed). */
pact_op_s *pact__op_begin(pact_loop *loop, pact_op_kind kind, pact_os_sock fd,
                          pact_op_cb cb, void *user, const char *func,
                          int *err);
/* The op's out-of-line block (see pact_op_ext), allocated zeroed on the
 * first call; NULL on ENOMEM. Not for SEND, SEND_ALL or CUSTOM ops. */
pact_op_ext *pact__op_ext(pact_loop *loop, pact_op_s *op);
/* Performs a PACT_OP_READ / PACT_OP_WRITE now with read/pread or
 * write/pwrite (offset -1 = the current position): the epoll engine's
 * attempt and the thread pool's file fallback. Result or -errno. */
int64_t pact__op_rw_now(pact_op_s *op);
/* A read or write on a pipe, tty, eventfd... that must not block the loop
 * and must leave the caller's file status flags as they were (epoll used
 * to set O_NONBLOCK on the caller's pipe for good; io_uring never touches
 * it): RWF_NOWAIT on this one call where the file supports it (pipes and
 * sockets do), else O_NONBLOCK for the duration of the call only, put back
 * at once. *refuses_rwf_nowait remembers a file that refused RWF_NOWAIT
 * (ttys do). Offset -1 is the current position. Result or -errno (-EAGAIN
 * when it would block). Used by the epoll engine's reads and writes and
 * the stream transport's eager write (src/unix/op_posix.c). */
struct iovec;
int64_t pact__rw_nowait(int fd, int is_write, const struct iovec *iov, int iovcnt,
                        int64_t offset, uint8_t *refuses_rwf_nowait);
/* Queues a freshly filled op for submission and returns its handle. */
pact_op pact__op_start(pact_loop *loop, pact_op_s *op, void *created_at);
/* How a stream transport's receive starts (pact__recv_multishot_hooked). */
typedef enum pact__recv_start {
    PACT__RECV_AT_ONCE,
    /* The connection's first receive, whose bytes are likely not there
     * yet (PACT_OPF_POLL_FIRST). */
    PACT__RECV_POLL_FIRST,
    /* The receive before it was reading large messages by readiness
     * (pact__recv_reads_large): this one starts so
     * (PACT_OPF_RECV_BY_READINESS), where one started on io_uring's ring
     * would take its first large chunk into a provided buffer, to be
     * copied, and a cancel to switch again, and elsewhere its first large
     * read would land in the loop's buffer, to be copied. */
    PACT__RECV_BY_READINESS,
} pact__recv_start;
/* pact_recv_multishot() whose data completions go to data (with user),
 * and only its final completion to cb: a stream transport's receive. */
pact_op pact__recv_multishot_hooked(pact_loop *loop, pact_os_sock fd,
                                    pact__data_hook data, pact_op_cb cb,
                                    void *user, pact__recv_start start);
/* 1 if the multishot receive `handle` reads large messages by readiness
 * into the receive-buffer hook's memory, or is being switched to it, on
 * a loop whose hook has a `large` (pact_loop_set_recv_buffer_hook).
 * A stream asks before it pauses reading, whose cancel ends the receive,
 * so that the receive resume_reading starts reads the same way. */
int pact__recv_reads_large(pact_loop *loop, pact_op handle);
/* Zero-copy writes of received bytes: if [data, data + len) lies in the
 * receive buffer lent to the callback running now, claims that buffer
 * (the engine keeps it out of the kernel's hands) and returns its id for
 * pact__recv_buffer_give_back(); else -1 (the caller copies). */
static inline int pact__recv_buffer_keep(pact_loop *loop, const void *data,
                                         size_t len)
{
    const char *p = data;
    if (!loop->lent.base || p < loop->lent.base ||
        len > loop->lent.len || (size_t)(p - loop->lent.base) > loop->lent.len - len)
        return -1;
    loop->lent.claims++;
    return (int)loop->lent.id;
}
static inline void pact__recv_buffer_give_back(pact_loop *loop, int id)
{
    loop->lent.give_back(loop, (unsigned)id);
}
/* Reads per readiness event for one multishot receive, so one busy socket
 * cannot starve the others (it stays armed: it is reported again). */
#define PACT_RECV_BURST 16
/* pact__op_recv_burst() (src/unix/recv_burst.h) reads into
 * loop->burst_buf: made on first use, 0 or -ENOMEM (src/unix/op_posix.c). */
int pact__burst_buf_make(pact_loop *loop);
/* A PACT_OP_WATCH's fd was found ready for revents (engines call this
 * from their wait): runs the watcher's callback with more = 1 and the
 * events it asked for that are ready (POLLERR and POLLHUP always count),
 * unless there are none or a cancel or deadline was asked for — so a
 * readiness the kernel reported before pact_op_cancel() or
 * pact_op_set_events() returned is never delivered after it. */
void pact__watch_deliver(pact_loop *loop, pact_op_s *op, uint32_t revents);

/* Many accepts as one op (servers): each accepted fd is a data
 * completion (c->more = 1, c->result = the fd, or a negative errno that
 * cost only that connection; the peer's address is not given), then one
 * final completion (-ECANCELED, or the error that stopped accepting:
 * EMFILE, ENFILE, ...). -EOPNOTSUPP when the engine cannot (io_uring
 * before 5.19): use pact_accept. */
pact_op pact__accept_multishot(pact_loop *loop, pact_os_sock fd, pact_op_cb cb,
                               void *user);
/* Engines: hands one accepted fd to a multishot accept's callback. */
void pact__op_deliver_accepted(pact_loop *loop, pact_op_s *op, int fd);
/* Requests cancellation of a live op; returns as pact_op_cancel(). */
int pact__op_cancel(pact_loop *loop, pact_op_s *op);
/* The loop owns fd from now on (a socket transport's) and will close it
 * itself, after pact__fd_closing(): the engine may register the file
 * with the kernel until then (engine fd_owned). */
void pact__fd_owned(pact_loop *loop, int fd);
/* The loop is about to close fd, one of its own (a transport's): the
 * engine's registration of the number goes with the file (fd_table.h,
 * PACT_FD_REGISTERED), and so does what it keeps for the file (engine
 * fd_closing). Call right before close(). */
void pact__fd_closing(pact_loop *loop, int fd);
/* Submit every queued op to the engine. */
void pact__ops_flush(pact_loop *loop);
/* A timer heap node of an op fired. */
void pact__op_timer_fired(pact_loop *loop, pact_heap_node *n);

/* Starts a PACT_OP_CUSTOM op (in flight until its owner defers a result). */
pact_op pact__op_start_custom(pact_loop *loop, pact_op_s *op, void *created_at);

/* Resources. */
void pact__resource_add(pact_loop *loop, pact_resource *res,
                        const pact_resource_kind *kind, void *created_at);
void pact__resource_remove(pact_loop *loop, pact_resource *res);

/* Frees an op's extra state, copied paths and slab entry (after its
 * callback, or instead of it when the op could not be started). */
void pact__op_release(pact_loop *loop, pact_op_s *op);
/* Frees the loop's caches of drained stream write state and of freed
 * streams (stream.c), at close once every operation is done. */
void pact__stream_cache_free(pact_loop *loop);
/* Called on a worker thread: op finished outside the engine with result.
 * Queues it for the loop thread and wakes the loop. */
void pact__op_done_offloaded(pact_loop *loop, pact_op_s *op, int64_t result);
/* Loop thread: moves ops finished on other threads to the done queue. */
void pact__ops_drain_offloaded(pact_loop *loop);

/* Timers. */
void pact__timers_run(pact_loop *loop);
/* Nanoseconds until the next timer, or -1 if there is none. */
int64_t pact__timers_next(pact_loop *loop);
/* At close, once the resources are closed: drops the handles not run
 * (said in debug mode) and runs what endpoints still have queued in their
 * own nodes (timer.c says why). */
void pact__handles_drop_all(pact_loop *loop);
int pact__handles_run_ready(pact_loop *loop);
/* Queues node (not queued now) to run on the next iteration. */
static inline void pact__ready_push(pact_loop *loop, pact_ready *node,
                                    void (*run)(pact_loop *, pact_ready *))
{
    node->run = run;
    pact_list_push_back(&loop->ready, &node->link);
}
/* pact_call_soon() for the loop's own callbacks, from its thread: only
 * the loop's state is checked (-ESHUTDOWN once closing, -ECHILD in a
 * forked child). Handle or negative errno. */
pact_handle pact__call_soon_internal(pact_loop *loop, pact_call_cb cb, void *user);

/* Sets O_NONBLOCK on fd (socket.c): for the system calls that have no
 * per-call MSG_DONTWAIT (read/write on pipes, sendfile). Returns the
 * flags the fd had before (so a caller can put them back) or -errno. */
int pact__fd_make_nonblocking(int fd);

/* Slow callbacks are logged in debug mode. */
#define PACT_SLOW_CALLBACK_NS (100ull * 1000 * 1000)
void pact__note_callback_time(pact_loop *loop, uint64_t start, void *cb,
                              const char *what);
/* Runs `call`, a user callback whose code is at fn, and in debug mode
 * counts and logs it if it took PACT_SLOW_CALLBACK_NS or more (it blocked
 * the loop). Every place that calls user code goes through this, so the
 * timing is written once. debug is fixed when the loop is made, so it is
 * tested once, before the call: a test after it too, and the start kept
 * across the call for it, cost the 64-byte echo on epoll 2 to 3 of its
 * about 196 instructions per request (callgrind, bench/c_counts.sh). */
#define PACT_RUN_CALLBACK(loop, fn, what, call)                             \
    do {                                                                    \
        (loop)->callbacks_run++;                                            \
        if (__builtin_expect((loop)->debug != 0, 0)) {                      \
            uint64_t pact_cb_start_ = pact_now();                           \
            call;                                                           \
            pact__note_callback_time((loop), pact_cb_start_, (void *)(fn),  \
                                     (what));                               \
        } else {                                                            \
            call;                                                           \
        }                                                                   \
    } while (0)

/* A multishot op's data completion: runs its callback with more = 1 and
 * the bytes at data (valid during the call); the op stays live. Or, for
 * a hooked receive, its data hook with the bytes: the public completion
 * is not built (the op's handle, a zeroed struct of 13 fields, read back
 * by the callback) for the one consumer that needs none of it, a
 * stream transport's receive. Inline: the engines run it for every
 * chunk received. */
void pact__op_deliver_completion(pact_loop *loop, pact_op_s *op,
                                 const void *data, int64_t len);
static inline void pact__op_deliver(pact_loop *loop, pact_op_s *op,
                                    const void *data, int64_t len)
{
    if (op->flags & PACT_OPF_DATA_HOOK) {
        PACT_RUN_CALLBACK(loop, op->data_hook, "operation callback",
                          op->data_hook(op->user, data, (size_t)len));
        return;
    }
    pact__op_deliver_completion(loop, op, data, len);
}

#endif
