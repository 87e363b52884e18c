/* SPDX-License-Identifier: MIT */
/* File operations on Windows: the blocking call a pool worker makes for
 * an op of src/fs.c. Files are the C runtime's fds (what pact_fs_open
 * returns and pact_fs_read/write/fsync/close take), opened in binary mode
 * and not inherited; paths are UTF-8. What POSIX and Windows name
 * differently:
 *
 * - a read or write at an offset is ReadFile/WriteFile at that offset on
 *   the fd's handle, which (on a handle opened without overlapped I/O)
 *   also moves the file position, unlike pread/pwrite;
 * - fsync and fdatasync are FlushFileBuffers (_commit);
 * - rename replaces an existing target, as rename(2) does
 *   (MoveFileExW with MOVEFILE_REPLACE_EXISTING);
 * - unlink of a directory is -EISDIR and rmdir of a file -ENOTDIR, as on
 *   Linux, not Windows' "access denied".
 *
 * pact_fs_stat/fstat (struct statx) and pact_fs_watch (inotify) are Linux's
 * and answer -ENOTSUP here. */
#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "fs_blocking.h"
#include "loop.h"

static wchar_t *wide(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0)
        return NULL;
    wchar_t *w = malloc((size_t)n * sizeof *w);
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n) <= 0) {
        free(w);
        return NULL;
    }
    return w;
}

static int is_directory(const wchar_t *path)
{
    DWORD a = GetFileAttributesW(path);
    return a != INVALID_FILE_ATTRIBUTES && (a & FILE_ATTRIBUTE_DIRECTORY);
}

/* A read or write at op->offset (>= 0) on the fd's handle. */
static int64_t rw_at(pact_op_s *op, int fd)
{
    HANDLE h = (HANDLE)_get_osfhandle(fd);
    if (h == INVALID_HANDLE_VALUE)
        return -EBADF;
    OVERLAPPED at = {0};
    at.Offset = (DWORD)((uint64_t)op->offset & 0xffffffffu);
    at.OffsetHigh = (DWORD)((uint64_t)op->offset >> 32);
    DWORD n = 0;
    BOOL ok = op->kind == PACT_OP_READ
                  ? ReadFile(h, op->buf, (DWORD)op->len, &n, &at)
                  : WriteFile(h, op->buf, (DWORD)op->len, &n, &at);
    if (!ok) {
        DWORD err = GetLastError();
        if (err == ERROR_HANDLE_EOF)
            return 0; /* at or past the end, as pread answers */
        return pact__win_error(err);
    }
    return n;
}

/* The operation on path (and path2), which need UTF-16. */
static int64_t by_path(pact_op_s *op)
{
    wchar_t *path = wide(op->ext->path);
    wchar_t *path2 = op->ext->path2 ? wide(op->ext->path2) : NULL;
    int64_t r = 0;
    if (!path || (op->ext->path2 && !path2)) {
        r = -ENOENT; /* not UTF-8: no such name */
        goto out;
    }
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_OPEN: {
        int fd = _wopen(path, op->msg_flags | _O_BINARY,
                        (int)(op->len & (_S_IREAD | _S_IWRITE)));
        r = fd < 0 ? -errno : fd;
        break;
    }
    case PACT_OP_RENAME:
        if (!MoveFileExW(path, path2, MOVEFILE_REPLACE_EXISTING))
            r = pact__win_error(GetLastError());
        break;
    case PACT_OP_UNLINK:
        if (op->msg_flags & AT_REMOVEDIR) {
            if (!RemoveDirectoryW(path))
                r = pact__win_error(GetLastError());
        } else if (!DeleteFileW(path)) {
            DWORD err = GetLastError();
            r = err == ERROR_ACCESS_DENIED && is_directory(path)
                    ? -EISDIR
                    : pact__win_error(err);
        }
        break;
    default:
        r = -EINVAL;
        break;
    }
out:
    free(path);
    free(path2);
    return r;
}

int64_t pact__fs_run_blocking(void *arg)
{
    pact_op_s *op = arg;
    int fd = (int)(intptr_t)op->fd;
    int r;
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_OPEN:
    case PACT_OP_RENAME:
    case PACT_OP_UNLINK:
        return by_path(op);
    case PACT_OP_READ:
    case PACT_OP_WRITE:
        if (op->offset >= 0)
            return rw_at(op, fd);
        r = op->kind == PACT_OP_READ
                ? _read(fd, op->buf, (unsigned)op->len)
                : _write(fd, op->buf, (unsigned)op->len);
        return r < 0 ? -errno : r;
    case PACT_OP_FSYNC:
        return _commit(fd) < 0 ? -errno : 0;
    case PACT_OP_CLOSE:
        return _close(fd) < 0 ? -errno : 0;
    default:
        return -EINVAL;
    }
}
