/* SPDX-License-Identifier: MIT */
/* File operations as completions. On io_uring they are native ops when
 * the kernel's probe lists them (loop->native_kinds, set by the engine);
 * everywhere else (epoll, older kernels, Windows) a pool worker runs the
 * blocking system call (pact__fs_run_blocking: src/unix/fs.c,
 * src/win/fs.c), because regular files are always "ready" and neither
 * epoll nor a completion port for a file opened without
 * FILE_FLAG_OVERLAPPED can tell when a read from disk would block. Paths
 * are copied into the op: io_uring may read them after submission, a
 * worker certainly does. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fs_blocking.h"
#include "pool.h"

#ifdef _WIN32
/* Not inherited by children: the C runtime's close-on-exec. */
#define O_CLOEXEC _O_NOINHERIT
#endif

static pact_op fs_start(pact_loop *loop, pact_op_s *op, void *created_at)
{
    if (loop->native_kinds & (1u << op->kind))
        return pact__op_start(loop, op, created_at);
    return pact__pool_start(loop, op, pact__fs_run_blocking, op, created_at);
}

/* Copies a path into the op's ext block: path2 if second, else path
 * (NULL path: -EINVAL). */
static int copy_path(pact_loop *loop, pact_op_s *op, int second,
                     const char *path, const char *func)
{
    if (!path)
        return pact__misuse(loop, -EINVAL, func, "path is NULL");
    pact_op_ext *x = pact__op_ext(loop, op);
    if (!x)
        return -ENOMEM;
    char **dst = second ? &x->path2 : &x->path;
    *dst = strdup(path);
    return *dst ? 0 : -ENOMEM;
}

#define FS_BEGIN(kind, fd)                                                  \
    int err_;                                                               \
    pact_op_s *op = pact__op_begin(loop, (kind), (fd), cb, user, __func__, &err_); \
    if (!op)                                                                \
        return err_;

/* Drops an op that failed before it was started. */
#define FS_FAIL(err)                                                        \
    do {                                                                    \
        pact__op_release(loop, op);                                         \
        return (err);                                                       \
    } while (0)

#define FS_FINISH() return fs_start(loop, op, __builtin_return_address(0))

pact_op pact_fs_open(pact_loop *loop, const char *path, int flags,
                     unsigned mode, pact_op_cb cb, void *user)
{
    FS_BEGIN(PACT_OP_OPEN, AT_FDCWD);
    int r = copy_path(loop, op, 0, path, __func__);
    if (r)
        FS_FAIL(r);
    op->msg_flags = flags | O_CLOEXEC;
    op->len = mode;
    FS_FINISH();
}

static pact_op fs_io(pact_loop *loop, pact_op_kind kind, int fd, void *buf,
                     size_t len, int64_t offset, pact_op_cb cb, void *user,
                     const char *func, void *created_at)
{
    if (loop && !buf && len > 0)
        return pact__misuse(loop, -EFAULT, func, "buffer is NULL");
    if (loop && len > (size_t)INT32_MAX)
        return pact__misuse(loop, -EINVAL, func, "length over 2 GiB");
    if (loop && offset < -1)
        return pact__misuse(loop, -EINVAL, func, "offset below -1");
    int err;
    pact_op_s *op = pact__op_begin(loop, kind, fd, cb, user, func, &err);
    if (!op)
        return err;
    op->buf = buf;
    op->len = len;
    op->offset = offset;
    return fs_start(loop, op, created_at);
}

pact_op pact_fs_read(pact_loop *loop, int fd, void *buf, size_t len,
                     int64_t offset, pact_op_cb cb, void *user)
{
    return fs_io(loop, PACT_OP_READ, fd, buf, len, offset, cb, user, __func__,
                 __builtin_return_address(0));
}

pact_op pact_fs_write(pact_loop *loop, int fd, const void *buf, size_t len,
                      int64_t offset, pact_op_cb cb, void *user)
{
    return fs_io(loop, PACT_OP_WRITE, fd, (void *)buf, len, offset, cb, user,
                 __func__, __builtin_return_address(0));
}

pact_op pact_fs_fsync(pact_loop *loop, int fd, int datasync, pact_op_cb cb,
                      void *user)
{
    if (loop && fd < 0)
        return PACT_MISUSE(loop, -EBADF, "fd is negative");
    FS_BEGIN(PACT_OP_FSYNC, fd);
    op->msg_flags = !!datasync;
    FS_FINISH();
}

#ifndef _WIN32 /* struct statx is Linux's: pact_fs_stat answers -ENOTSUP there */
/* The caller's statx buffer, handed to the callback once filled. */
static void stat_fill(pact_op_s *op, pact_completion *c)
{
    if (op->result == 0)
        c->statx = op->buf;
}

static const pact_op_extra stat_extra = {.fill = stat_fill};

pact_op pact_fs_stat(pact_loop *loop, const char *path, int flags,
                     unsigned mask, struct statx *out, pact_op_cb cb,
                     void *user)
{
    if (loop && !out)
        return PACT_MISUSE(loop, -EINVAL, "statx buffer is NULL");
    FS_BEGIN(PACT_OP_STATX, AT_FDCWD);
    int r = copy_path(loop, op, 0, path, __func__);
    if (r)
        FS_FAIL(r);
    op->extra = &stat_extra;
    op->buf = out;
    op->msg_flags = flags;
    op->len = mask ? mask : STATX_BASIC_STATS;
    FS_FINISH();
}

pact_op pact_fs_fstat(pact_loop *loop, int fd, unsigned mask,
                      struct statx *out, pact_op_cb cb, void *user)
{
    if (loop && !out)
        return PACT_MISUSE(loop, -EINVAL, "statx buffer is NULL");
    if (loop && fd < 0)
        return PACT_MISUSE(loop, -EBADF, "fd is negative");
    FS_BEGIN(PACT_OP_STATX, fd);
    op->extra = &stat_extra;
    op->buf = out;
    op->msg_flags = AT_EMPTY_PATH; /* path NULL: statx(fd, "", ...) */
    op->len = mask ? mask : STATX_BASIC_STATS;
    FS_FINISH();
}

#endif

pact_op pact_fs_close(pact_loop *loop, int fd, pact_op_cb cb, void *user)
{
    if (loop && fd < 0)
        return PACT_MISUSE(loop, -EBADF, "fd is negative");
    FS_BEGIN(PACT_OP_CLOSE, fd);
    FS_FINISH();
}

pact_op pact_fs_rename(pact_loop *loop, const char *from, const char *to,
                       pact_op_cb cb, void *user)
{
    FS_BEGIN(PACT_OP_RENAME, AT_FDCWD);
    int r = copy_path(loop, op, 0, from, __func__);
    if (!r)
        r = copy_path(loop, op, 1, to, __func__);
    if (r)
        FS_FAIL(r);
    FS_FINISH();
}

pact_op pact_fs_unlink(pact_loop *loop, const char *path, int flags,
                       pact_op_cb cb, void *user)
{
    if (loop && (flags & ~AT_REMOVEDIR))
        return PACT_MISUSE(loop, -EINVAL, "flags other than AT_REMOVEDIR");
    FS_BEGIN(PACT_OP_UNLINK, AT_FDCWD);
    int r = copy_path(loop, op, 0, path, __func__);
    if (r)
        FS_FAIL(r);
    op->msg_flags = flags;
    FS_FINISH();
}
