/* SPDX-License-Identifier: MIT */
/* The engine interface: the only thing that differs between io_uring and
 * epoll. Everything above it (loop, operations, streams) is
 * engine-agnostic, so the contract tests run unchanged on both.
 *
 * Every engine defines its table with PACT_ENGINE_DEFINE(table, prefix,
 * name), which
 * names every member: an engine that lacks a function fails to compile
 * instead of crashing at run time (libxev's lesson). */
#ifndef PACT_ENGINE_H
#define PACT_ENGINE_H

#include <stdint.h>

#include "op.h"

struct pact_loop;
struct pact_fd_entry; /* fd_table.h */

typedef struct pact_engine_ops {
    const char *name;
    /* Sets up loop->engine_data. Returns 0 or a negative errno; on failure
     * writes a human-readable reason into reason[reason_len]. */
    int (*init)(struct pact_loop *loop, unsigned queue_depth, int fail_setup,
                char *reason, size_t reason_len);
    /* Frees the engine. Called only when no op is in flight. */
    void (*destroy)(struct pact_loop *loop);
    /* In a child process that inherited the loop through fork(): frees the
     * engine's memory and closes this process's copies of its fds, with
     * no system call on the ring or epoll instance (the parent's). */
    void (*forget)(struct pact_loop *loop);
    /* Hands an op to the kernel (or tries it now, on epoll). Returns 1 if
     * the engine armed op->timeout_ns itself (io_uring linked timeout),
     * else 0. May complete the op at once through pact__op_defer(). f:
     * the entry of op's fd when the op layer has it (an op that keeps its
     * fd's order, op.c), else NULL: an engine that needs it then looks it
     * up itself. */
    int (*submit)(struct pact_loop *loop, pact_op_s *op, struct pact_fd_entry *f);
    /* Asks for an in-flight op to be cancelled. The op completes later
     * through pact__op_kernel_done() / pact__op_defer(), never from
     * inside this call. */
    void (*cancel)(struct pact_loop *loop, pact_op_s *op);
    /* Submits what is pending, waits up to timeout_ns (-1 = no limit, 0 =
     * poll) for completions and delivers them. Returns the number of
     * completions seen or a negative errno. */
    int (*wait)(struct pact_loop *loop, int64_t timeout_ns);
    /* A PACT_OP_WATCH in flight has new events in op->msg_flags: makes
     * the kernel wait for those from now on (pact_op_set_events()).
     * Never calls back. */
    void (*watch_update)(struct pact_loop *loop, pact_op_s *op);
    /* Whether an op kind may carry an io_uring linked timeout. */
    int (*supports_link_timeout)(struct pact_loop *loop, pact_op_s *op);
    /* pact_loop_backend_fd(): an fd that polls readable while wait() has
     * completions to deliver. */
    int (*backend_fd)(struct pact_loop *loop);
    /* 1 if the engine holds work only a wait() call hands to the kernel
     * (io_uring SQEs not yet submitted, cancels to retry): an outer loop
     * must not block on backend_fd before the next wait(). */
    int (*has_unsubmitted)(struct pact_loop *loop);
    /* A movable loop (pact_loop_options.movable) is about to be driven
     * (run, run_once, close) by the calling thread, which has claimed it;
     * callbacks may run. An engine bound to the thread that drove it
     * before makes itself usable here (io_uring: moves to a ring of its
     * own), or answers a negative errno and changes nothing. */
    int (*adopt_thread)(struct pact_loop *loop);
    /* A run (pact_loop_run, run_once) returns and callbacks queued sends
     * that were to go with the next wait (loop->sends_joined): hands them
     * to the kernel now, without waiting, so that the bytes of a write
     * never wait for a run that may not come. */
    void (*flush)(struct pact_loop *loop);
    /* A send slot's send (op.h): makes it part of the next submission.
     * Called only when loop->send_slots is set (by this engine).
     * Returns 0 (slot->pending_cqes set), or a negative errno with
     * nothing started. The engine calls pact__slot_complete() once it
     * owes the slot no completion. */
    int (*slot_send)(struct pact_loop *loop, pact_send_slot *slot, int fd,
                     const void *buf, size_t len, int flags);
    /* Asks for a slot's send in flight to be cancelled; never calls back
     * from inside. */
    void (*slot_cancel)(struct pact_loop *loop, pact_send_slot *slot);
    /* A stream's send of len bytes in flight, a write's first try that
     * may still wait for the next submission (stream.c, the close behind
     * it): by slot (in flight from it), else the op. Hands it to the
     * kernel now if it waits in the submission queue, as an eager send
     * would have gone at the write, and says whether it sent all len
     * bytes: 1 yes, 0 no (it waits for room, sent a part, or failed), a
     * negative errno when that is not known. Never calls back. Engines
     * whose sends never wait for a submission are never asked
     * (-EOPNOTSUPP). */
    int (*first_try_sent)(struct pact_loop *loop, pact_send_slot *slot,
                          pact_op op, size_t len);
    /* Closes fd, a socket the loop owned (pact__fd_closing was called):
     * io_uring queues the close with the loop's next submission, which
     * saves a system call per connection; the others close it now. */
    void (*close_socket)(struct pact_loop *loop, int fd);
    /* The loop owns fd from now on (a socket transport's) and closes it
     * itself, after fd_closing: the engine may keep the file registered
     * with the kernel until then (io_uring: its fixed-file table).
     * Never calls back. */
    void (*fd_owned)(struct pact_loop *loop, int fd);
    /* The loop is about to close the fd of f, one it owns: what the
     * engine keeps for the file goes (pact__fd_closing, which found f:
     * an fd without an entry has nothing kept). Never calls back. */
    void (*fd_closing)(struct pact_loop *loop, struct pact_fd_entry *f);
} pact_engine_ops;

#define PACT_ENGINE_DEFINE(table, prefix, display_name)                   \
    const pact_engine_ops pact_engine_##table = {                         \
        .name = display_name,                                             \
        .init = prefix##_init,                                            \
        .destroy = prefix##_destroy,                                      \
        .forget = prefix##_forget,                                        \
        .submit = prefix##_submit,                                        \
        .cancel = prefix##_cancel,                                        \
        .wait = prefix##_wait,                                            \
        .watch_update = prefix##_watch_update,                            \
        .supports_link_timeout = prefix##_supports_link_timeout,          \
        .backend_fd = prefix##_backend_fd,                                \
        .has_unsubmitted = prefix##_has_unsubmitted,                      \
        .adopt_thread = prefix##_adopt_thread,                            \
        .flush = prefix##_flush,                                          \
        .slot_send = prefix##_slot_send,                                  \
        .slot_cancel = prefix##_slot_cancel,                              \
        .first_try_sent = prefix##_first_try_sent,                        \
        .close_socket = prefix##_close_socket,                            \
        .fd_owned = prefix##_fd_owned,                                    \
        .fd_closing = prefix##_fd_closing,                                \
    }

#ifdef _WIN32
extern const pact_engine_ops pact_engine_iocp; /* src/win/engine_iocp.c */
#define PACT__ENGINE_LAST PACT_ENGINE_IOCP
#else
extern const pact_engine_ops pact_engine_uring;
extern const pact_engine_ops pact_engine_epoll;
#define PACT__ENGINE_LAST PACT_ENGINE_EPOLL
#endif

#endif
