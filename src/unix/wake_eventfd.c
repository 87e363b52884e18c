/* SPDX-License-Identifier: MIT */
/* The loop's cross-thread wake-up on Linux: an eventfd that an internal
 * read op keeps armed on either engine. pact_loop_wake(),
 * pact_call_soon_threadsafe() and the thread pool post to it; its
 * completion clears loop->wake_pending. (Windows posts a packet to the
 * completion port instead: src/win/wake.c.) */
#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "loop.h"

static void wake_read_done(pact_loop *loop, const pact_completion *c,
                           void *user);

/* Arms the internal read on the wake-up eventfd. */
static int wake_arm(pact_loop *loop)
{
    int err = 0;
    pact_op_s *op = pact__op_new(loop, PACT_OP_READ, loop->wake_fd,
                                 wake_read_done, NULL, &err);
    if (!op)
        return err;
    op->flags |= PACT_OPF_INTERNAL;
    op->buf = &loop->wake_buf;
    op->len = sizeof loop->wake_buf;
    op->offset = -1;
    loop->wake_op = pact__op_start_internal(loop, op);
    return 0;
}

static void wake_read_done(pact_loop *loop, const pact_completion *c,
                           void *user)
{
    (void)user;
    loop->wake_op = 0;
    if (loop->state != PACT_LOOP_OPEN)
        return;
    /* Clear before the threadsafe queue is drained later in this
     * iteration: a producer that enqueues after this point writes again. */
    atomic_store(&loop->wake_pending, 0);
    if (c->result < 0 && c->result != -EAGAIN && c->result != -EINTR)
        pact__error(loop, (int)c->result, "wake-up eventfd read failed");
    if (wake_arm(loop) != 0)
        pact__error(loop, -ENOMEM, "cannot re-arm the wake-up read");
}

int pact__wake_open(pact_loop *loop)
{
    loop->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->wake_fd < 0)
        return -errno;
    int r = wake_arm(loop);
    if (r != 0) {
        close(loop->wake_fd);
        loop->wake_fd = -EBADF;
    }
    return r;
}

int pact__wake_post(pact_loop *loop)
{
    uint64_t one = 1;
    /* EAGAIN: the counter is full, the loop wakes anyway. */
    if (write(loop->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        return -errno;
    return 0;
}

void pact__wake_close(pact_loop *loop)
{
    close(loop->wake_fd);
    loop->wake_fd = -EBADF;
}
