/* SPDX-License-Identifier: MIT */
/* File operations on Linux: the blocking system call a pool worker makes
 * for an op of src/fs.c (epoll, and kernels whose io_uring lacks it). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h> /* renameat */
#include <sys/stat.h>
#include <unistd.h>

#include "fs_blocking.h"
#include "loop.h"

/* The pool's half: the same call the kernel would make, made blocking. */
int64_t pact__fs_run_blocking(void *arg)
{
    pact_op_s *op = arg;
    int r;
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_OPEN:
        r = openat(op->fd, op->ext->path, op->msg_flags, (mode_t)op->len);
        return r < 0 ? -errno : r;
    case PACT_OP_READ:
    case PACT_OP_WRITE:
        return pact__op_rw_now(op);
    case PACT_OP_FSYNC:
        r = op->msg_flags ? fdatasync(op->fd) : fsync(op->fd);
        return r < 0 ? -errno : 0;
    case PACT_OP_STATX:
        r = statx(op->fd, op->ext->path ? op->ext->path : "", op->msg_flags,
                  (unsigned)op->len, op->buf);
        return r < 0 ? -errno : 0;
    case PACT_OP_CLOSE:
        /* Linux releases the fd even when close reports an error (EINTR
         * included), so it is never retried. */
        r = close(op->fd);
        return r < 0 ? -errno : 0;
    case PACT_OP_RENAME:
        r = renameat(AT_FDCWD, op->ext->path, AT_FDCWD, op->ext->path2);
        return r < 0 ? -errno : 0;
    case PACT_OP_UNLINK:
        r = unlinkat(AT_FDCWD, op->ext->path, op->msg_flags);
        return r < 0 ? -errno : 0;
    default:
        return -EINVAL;
    }
}
