/* SPDX-License-Identifier: MIT */
/* The op layer's system calls on POSIX fds, shared by the Linux engines
 * and the thread pool: the buffer of a multishot receive's burst of
 * reads (recv_burst.h), a read or write done at once, and handing over a
 * multishot accept's connections. (The Windows engine
 * starts overlapped calls instead: src/win/engine_iocp.c.) */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fault.h"
#include "loop.h"

/* Aligned to a page, not malloc's 16 bytes: the kernel copies a receive
 * into it with `rep movsb`, which on the AMD EPYC the benchmarks run on
 * is 2.3-3 times slower when the destination's offset in its page is 1
 * to 31 bytes past the source's, and as fast as with equal offsets 32 or
 * more bytes past or any before (bench/recv_copy, 16 KiB recv(2) on
 * loopback). The source is the sender's bytes in the kernel, page aligned
 * when it sends in large pieces, so malloc's buffer, 16 bytes into its
 * page, was the slow case (perf, pact.asyncio's 100 KiB streams echo on
 * epoll: _copy_to_iter 30 % of the server's samples with malloc's buffer,
 * 7-8 % with it aligned to 64 bytes or to a page; uvloop's buffer, 32
 * bytes past a cache line, 6-7 %); a page-aligned one is slow only for
 * bytes that start 1 to 31 bytes before the end of a page. A page costs
 * nothing more at this size, which malloc maps by itself anyway. */
int pact__burst_buf_make(pact_loop *loop)
{
    size_t size = (size_t)loop->recv_buf_size * 4;
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, size) != 0)
        return -ENOMEM;
    loop->burst_buf = buf;
    loop->burst_buf_size = size;
    return 0;
}

int64_t pact__op_rw_now(pact_op_s *op)
{
    ssize_t n;
    if (op->kind == PACT_OP_READ)
        n = op->offset < 0 ? read(op->fd, op->buf, op->len)
                           : pread(op->fd, op->buf, op->len, op->offset);
    else
        n = op->offset < 0 ? write(op->fd, op->buf, op->len)
                           : pwrite(op->fd, op->buf, op->len, op->offset);
    return n < 0 ? -errno : n;
}

int64_t pact__rw_nowait(int fd, int is_write, const struct iovec *iov, int iovcnt,
                        int64_t offset, uint8_t *refuses_rwf_nowait)
{
    ssize_t n;
    if (!*refuses_rwf_nowait) {
        n = is_write ? pwritev2(fd, iov, iovcnt, (off_t)offset, RWF_NOWAIT)
                     : preadv2(fd, iov, iovcnt, (off_t)offset, RWF_NOWAIT);
        if (n >= 0)
            return n;
        if (errno != EOPNOTSUPP && errno != ENOSYS)
            return -errno;
        *refuses_rwf_nowait = 1;
    }
    int fl = pact__fd_make_nonblocking(fd);
    if (fl < 0)
        return fl;
    n = is_write ? pwritev2(fd, iov, iovcnt, (off_t)offset, 0)
                 : preadv2(fd, iov, iovcnt, (off_t)offset, 0);
    int64_t r = n < 0 ? -errno : n;
    if (!(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl);
    return r;
}

void pact__op_deliver_accepted(pact_loop *loop, pact_op_s *op, int fd)
{
    /* Fault injection (tests only): the connection is lost, as if its
     * accept had failed; the listener goes on. */
    int err = PACT_FAULT(PACT_FAULT_ACCEPT);
    if (err) {
        close(fd);
        fd = err;
    }
    pact__op_deliver(loop, op, NULL, fd);
}
