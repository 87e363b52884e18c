/* SPDX-License-Identifier: MIT */
/* The op layer's burst of reads for a multishot receive on a readable
 * socket, shared by the epoll engine and io_uring's poll mode. Inline in
 * both: it runs for every readiness event of every connection, and as a
 * call of its own it cost the 64-byte echo a frame per request (about 15
 * of its 40 instructions, callgrind). */
#ifndef PACT_RECV_BURST_H
#define PACT_RECV_BURST_H

#include <errno.h>
#include <sys/socket.h>

#include "loop.h"

/* Where the next read by readiness lands: the binding's memory
 * (pact_loop_set_recv_buffer_hook), else the loop-wide buffer, made on
 * first use. *cap is its size; NULL if that buffer cannot be made. The
 * read is a recv(2) made right after: nothing is left for the kernel to
 * write into the binding's memory later (docs/contract.md §2). */
static inline char *pact__recv_burst_target(pact_loop *loop, size_t *cap)
{
    if (loop->recv_buffer_get) {
        size_t len = 0;
        char *mem = loop->recv_buffer_get(loop, &len, loop->recv_buffer_user);
        if (mem && len > 0) {
            *cap = len;
            return mem;
        }
    }
    if (!loop->burst_buf && pact__burst_buf_make(loop) != 0)
        return NULL;
    *cap = loop->burst_buf_size;
    return loop->burst_buf;
}

/* A multishot receive whose socket is readable (epoll, io_uring poll
 * mode): reads into the loop-wide buffer (or the binding's memory, see
 * pact__recv_burst_target) and delivers each chunk, up to
 * PACT_RECV_BURST reads, until the socket would block or a read comes back
 * short (the socket is drained: later bytes are a new readiness event),
 * the op ends (EOF, error) or a cancel or deadline was asked for (from a
 * data callback: bytes not read stay in the socket, docs/contract.md §4).
 * Returns non-zero if the op goes on waiting for readiness: 1 after
 * EAGAIN, 3 after a short read (the data is drained, but a hang-up that
 * came with it has not been read yet), 2 at PACT_RECV_BURST with the
 * socket maybe not drained (an edge-triggered caller must have it
 * reported again); 0 if it ends, with its result in
 * *final (0 at EOF, -errno, -ECANCELED when cancelled). The engine only
 * translates: re-arm, or finish the op. *bytes (if not NULL) grows by the
 * bytes delivered. */
static inline int pact__op_recv_burst(pact_loop *loop, pact_op_s *op, int64_t *final,
                                      size_t *bytes)
{
    int drained = 0;
    for (int i = 0; i < PACT_RECV_BURST; i++) {
        if (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT)) {
            *final = -ECANCELED;
            return 0;
        }
        size_t cap;
        char *buf = pact__recv_burst_target(loop, &cap);
        if (!buf) {
            *final = -ENOMEM;
            return 0;
        }
        ssize_t n = recv(op->fd, buf, cap, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;
        if (n <= 0) {
            *final = n < 0 ? -errno : 0;
            return 0;
        }
        pact__op_deliver(loop, op, buf, n);
        if (bytes)
            *bytes += (size_t)n;
        /* A read that did not fill the buffer took everything the socket
         * had: one more recv would only answer EAGAIN (0.7 wasted system
         * calls per request in the 64-byte echo). Bytes that arrive
         * meanwhile are a new event for both callers (epoll's
         * edge-triggered registration sees each arrival, an io_uring poll
         * checks the socket when armed), never lost. */
        if ((size_t)n < cap) {
            drained = 1;
            break;
        }
    }
    if (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT)) {
        *final = -ECANCELED;
        return 0;
    }
    return drained ? 3 : 2;
}

#endif
