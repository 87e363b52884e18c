/* SPDX-License-Identifier: MIT */
/* pact_watch(): a persistent, level-triggered readiness watcher for any
 * fd (asyncio's add_reader / add_writer). One long-lived op
 * (PACT_OP_WATCH) whose data completions carry revents, like
 * pact_recv_multishot's chunks, and whose final completion comes exactly
 * once (docs/contract.md §1).
 *
 * Both engines wait in an epoll set, which holds no file: an fd closed
 * under a watcher ends its file at once, as asyncio's epoll selector lets
 * it (a poll request would hold the file until the watcher ended). They
 * differ in how the set is armed and waited on:
 *   - epoll: a level-triggered registration (no EPOLLONESHOT) for as long
 *     as a watcher is on the fd, so a watcher costs no system call per
 *     event; epoll reports the fd again at the next wait while it is
 *     ready.
 *   - io_uring: a one-shot registration in a set of the engine's own,
 *     armed again after each delivery by an EPOLL_CTL SQE; the ring waits
 *     on the set (see "readiness watchers" in engine_uring.c). Arming
 *     checks readiness, so a callback that left data in the socket is
 *     called again at the next iteration.
 * Removal is synchronous on both: pact_op_cancel() takes the watcher off
 * its fd before it returns, and pact__watch_deliver() drops any readiness
 * the kernel reported before that for events no longer watched. */
#include <errno.h>
#include <poll.h>
#include <sys/stat.h>

#include "loop.h"

#define WATCHABLE (POLLIN | POLLOUT | POLLPRI | POLLRDHUP)

void pact__watch_deliver(pact_loop *loop, pact_op_s *op, uint32_t revents)
{
    if (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT))
        return;
    uint32_t hit = revents & ((uint32_t)op->msg_flags | POLLERR | POLLHUP);
    if (hit)
        pact__op_deliver(loop, op, NULL, hit);
}

static int check_events(pact_loop *loop, unsigned events, const char *func)
{
    if (events == 0 || (events & ~(unsigned)WATCHABLE))
        return pact__misuse(loop, -EINVAL, func,
                            "events must be a non-empty mix of POLLIN, "
                            "POLLOUT, POLLPRI and POLLRDHUP");
    return 0;
}

pact_op pact_watch(pact_loop *loop, int fd, unsigned events, pact_op_cb cb,
                   void *user)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    r = check_events(loop, events, __func__);
    if (r)
        return r;
    if (fd < 0)
        return PACT_MISUSE(loop, -EBADF, "fd is negative");
    /* Checked here, the same on both engines: epoll refuses regular files
     * and directories (EPERM), while an io_uring poll would call back
     * forever (they are always "ready"). */
    struct stat st;
    if (fstat(fd, &st) != 0)
        return PACT_MISUSE(loop, -errno, "cannot stat the fd");
    if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))
        return PACT_MISUSE(loop, -EPERM,
                           "a regular file or directory is always ready "
                           "(epoll refuses it)");
    pact_op_s *op = pact__op_begin(loop, PACT_OP_WATCH, fd, cb, user,
                                   __func__, &r);
    if (!op)
        return r;
    op->msg_flags = (int)events;
    return pact__op_start(loop, op, __builtin_return_address(0));
}

int pact_op_set_events(pact_loop *loop, pact_op watch, unsigned events)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    pact_op_s *op = pact__op_lookup(loop, watch);
    if (!op || (op->flags & PACT_OPF_INTERNAL))
        return -ENOENT;
    if (op->kind != PACT_OP_WATCH)
        return PACT_MISUSE(loop, -EINVAL, "the op is not a pact_watch()");
    r = check_events(loop, events, __func__);
    if (r)
        return r;
    if (op->state == PACT_OP_DONE ||
        (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT)))
        return -EALREADY;
    if ((unsigned)op->msg_flags == events)
        return 0;
    /* From here on pact__watch_deliver() filters with the new events:
     * what the kernel reported for the old ones is not delivered. */
    op->msg_flags = (int)events;
    if (op->state == PACT_OP_INFLIGHT)
        loop->engine->watch_update(loop, op);
    return 0;
}
