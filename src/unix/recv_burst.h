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

/* A receive reading by readiness whose bursts were small this many
 * times in a row reads as it did before: on io_uring it goes back to the
 * ring's provided buffers (bursts that each fit in one and brought less
 * than the receive-buffer hook's `large`; engine_uring.c "a receive that
 * streams"), on epoll and in io_uring's poll mode its reads go back to
 * the loop's buffer (reads below `large`, pact__recv_note_read). One
 * small burst is not enough: a peer that streams leaves a short read now
 * and then, and on io_uring each return to the ring costs the ring's
 * whole contents before it runs dry again. */
#define PACT_READINESS_SMALL_BURSTS 4u

/* Where every receive reads by readiness (epoll, io_uring's poll mode),
 * a receive-buffer hook with a `large` is asked only while the
 * receive's reads are large (PACT_OPF_RECV_BY_READINESS): from a read of
 * at least large, made into the loop's buffer (the binding copies that
 * one), until PACT_READINESS_SMALL_BURSTS reads in a row have brought
 * less (counted in op->recv_count); as io_uring switches a receive
 * between its ring and readiness. A binding that copies small chunks out
 * gains nothing from its memory there, and asking cost every small read
 * (pact.asyncio's 1 KiB protocol echo on epoll, callgrind, two runs each:
 * 2,129 / 2,153 instructions per request asking, 2,110 / 2,137 not: a
 * few tens, within what two runs of one build differ by). */
static inline void pact__recv_note_read(pact_op_s *op, size_t n, size_t cap,
                                        size_t large)
{
    /* A read that filled its memory counts as large too: a hook whose
     * blocks are smaller than large would otherwise send a streaming
     * receive back to the loop's buffer every few reads. */
    if (n >= large || n == cap) {
        op->flags |= PACT_OPF_RECV_BY_READINESS;
        op->recv_count = 0;
    } else if ((op->flags & PACT_OPF_RECV_BY_READINESS) &&
               ++op->recv_count >= PACT_READINESS_SMALL_BURSTS) {
        op->flags &= (uint16_t)~PACT_OPF_RECV_BY_READINESS;
        op->recv_count = 0;
    }
}

/* Where the next read by readiness lands: the binding's memory
 * (pact_loop_set_recv_buffer_hook; with a `large`, only for a receive
 * whose reads are large: PACT_OPF_RECV_BY_READINESS), else the loop-wide
 * buffer, made on first use. *cap is its size; NULL if that buffer
 * cannot be made. The read is a recv(2) made right after: nothing is
 * left for the kernel to write into the binding's memory later
 * (docs/contract.md §2). */
static inline char *pact__recv_burst_target(pact_loop *loop, const pact_op_s *op,
                                            size_t *cap)
{
    if (loop->recv_buffer_get &&
        (!loop->recv_large || (op->flags & PACT_OPF_RECV_BY_READINESS))) {
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
 * bytes delivered. each_read: every receive reads by readiness (epoll,
 * io_uring's poll mode), so each read decides where the next lands
 * (pact__recv_note_read); io_uring's receives that read by readiness for
 * a while count whole bursts instead. fd: op->fd, from where the caller
 * has it at hand (epoll: its fd entry, which it has read already; the
 * op's fd lies on a second cache line for every other op, as ops are
 * 160 bytes: callgrind --cache-sim, 64-byte echo at 500 connections,
 * 0.5 D1 misses per request). */
static inline int pact__op_recv_burst(pact_loop *loop, pact_op_s *op, int fd,
                                      int64_t *final, size_t *bytes,
                                      int each_read)
{
    int drained = 0;
    for (int i = 0; i < PACT_RECV_BURST; i++) {
        if (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT)) {
            *final = -ECANCELED;
            return 0;
        }
        size_t cap;
        char *buf = pact__recv_burst_target(loop, op, &cap);
        if (!buf) {
            *final = -ENOMEM;
            return 0;
        }
        ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;
        if (n <= 0) {
            *final = n < 0 ? -errno : 0;
            return 0;
        }
        if (each_read && loop->recv_large)
            pact__recv_note_read(op, (size_t)n, cap, loop->recv_large);
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
