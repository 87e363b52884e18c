/* SPDX-License-Identifier: MIT */
/* File operations by path on Windows (pact_fs_*, on the thread pool, on
 * the C runtime's fds): open/write/read at offsets and at the file
 * position, fsync, close, rename replacing a target, unlink and rmdir
 * with Linux's errors, UTF-8 names, a megabyte with every byte checked,
 * many ops at once, cancel and loop close with ops in flight (each
 * completes once), and -ENOTSUP for what is Linux's (statx, inotify). */
#include <fcntl.h>
#include <io.h>
#include <stdio.h>
#include <sys/stat.h>

#include "helpers.h"
#include "../fs_result.h"
#include "win/posix.h" /* ESHUTDOWN, which the C runtime lacks */

TestSuite(fs, .timeout = 60);

static char dir[MAX_PATH];

static void make_dir(void)
{
    static int serial;
    char tmp[MAX_PATH];
    GetTempPathA(sizeof tmp, tmp);
    snprintf(dir, sizeof dir, "%spact-fs-%lu-%d", tmp, GetCurrentProcessId(),
             serial++);
    cr_assert(CreateDirectoryA(dir, NULL), "CreateDirectory: %lu",
              GetLastError());
}

static const char *in_dir(const char *name)
{
    static char bufs[4][MAX_PATH + 64];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, MAX_PATH + 64, "%s\\%s", dir, name);
    return b;
}

Test(fs, write_read_fsync_close_round_trip)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    const char *path = in_dir("a.txt");
    int fd = (int)DO(loop, pact_fs_open(loop, path, O_CREAT | O_RDWR | O_TRUNC,
                                       0600, record, &r_));
    cr_assert_geq(fd, 0, "open: %s", pact_strerror(fd));
    DWORD flags = 0;
    cr_assert(GetHandleInformation((HANDLE)_get_osfhandle(fd), &flags));
    cr_assert_eq(flags & HANDLE_FLAG_INHERIT, 0, "not inherited (O_CLOEXEC)");
    cr_assert_eq(DO(loop, pact_fs_write(loop, fd, "hello", 5, 0, record, &r_)), 5);
    cr_assert_eq(DO(loop, pact_fs_write(loop, fd, " world\n", 7, 5, record, &r_)), 7);
    char buf[64] = {0};
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, buf, sizeof buf, 0, record, &r_)), 12);
    cr_assert_str_eq(buf, "hello world\n", "binary mode: no \\r added");
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, buf, sizeof buf, 100, record, &r_)), 0,
                 "past the end: 0");
    cr_assert_eq(DO(loop, pact_fs_fsync(loop, fd, 0, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_fsync(loop, fd, 1, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, buf, 4, 0, record, &r_)), -EBADF);

    /* At the file position (offset -1), appended in order. */
    fd = (int)DO(loop, pact_fs_open(loop, path, O_WRONLY | O_APPEND, 0, record, &r_));
    cr_assert_geq(fd, 0);
    cr_assert_eq(DO(loop, pact_fs_write(loop, fd, "abc", 3, -1, record, &r_)), 3);
    cr_assert_eq(DO(loop, pact_fs_write(loop, fd, "def", 3, -1, record, &r_)), 3);
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    fd = (int)DO(loop, pact_fs_open(loop, path, O_RDONLY, 0, record, &r_));
    memset(buf, 0, sizeof buf);
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, buf, 6, -1, record, &r_)), 6);
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, buf + 6, sizeof buf - 7, -1,
                                       record, &r_)), 12);
    cr_assert_str_eq(buf, "hello world\nabcdef");
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, buf, 4, -1, record, &r_)), 0, "EOF");
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, path, 0, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, dir, AT_REMOVEDIR, record, &r_)), 0);
    test_loop_free(loop);
}

Test(fs, rename_unlink_rmdir_with_linux_errors)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    const char *a = in_dir("a"), *b = in_dir("b");
    int fd = (int)DO(loop, pact_fs_open(loop, a, O_CREAT | O_WRONLY, 0600, record, &r_));
    cr_assert_geq(fd, 0);
    cr_assert_eq(DO(loop, pact_fs_write(loop, fd, "A", 1, 0, record, &r_)), 1);
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    fd = (int)DO(loop, pact_fs_open(loop, b, O_CREAT | O_WRONLY, 0600, record, &r_));
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    /* Exists already: O_EXCL refuses. */
    cr_assert_eq(DO(loop, pact_fs_open(loop, b, O_CREAT | O_EXCL | O_WRONLY, 0600,
                                       record, &r_)), -EEXIST);
    /* rename replaces the target, as rename(2). */
    cr_assert_eq(DO(loop, pact_fs_rename(loop, a, b, record, &r_)), 0);
    cr_assert_eq(GetFileAttributesA(a), INVALID_FILE_ATTRIBUTES);
    fd = (int)DO(loop, pact_fs_open(loop, b, O_RDONLY, 0, record, &r_));
    char c = 0;
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, &c, 1, 0, record, &r_)), 1);
    cr_assert_eq(c, 'A');
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_rename(loop, a, b, record, &r_)), -ENOENT);
    cr_assert_eq(DO(loop, pact_fs_open(loop, a, O_RDONLY, 0, record, &r_)), -ENOENT);

    /* Directories. */
    const char *sub = in_dir("sub");
    cr_assert(CreateDirectoryA(sub, NULL));
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, sub, 0, record, &r_)), -EISDIR);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, b, AT_REMOVEDIR, record, &r_)), -ENOTDIR);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, dir, AT_REMOVEDIR, record, &r_)),
                 -ENOTEMPTY);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, sub, AT_REMOVEDIR, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, b, 0, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, b, 0, record, &r_)), -ENOENT);

    /* UTF-8 names reach the file system as the characters they are. */
    const char *utf8 = in_dir("caf\xc3\xa9-\xe2\x82\xac.txt"); /* café-€ */
    fd = (int)DO(loop, pact_fs_open(loop, utf8, O_CREAT | O_WRONLY, 0600, record, &r_));
    cr_assert_geq(fd, 0, "open: %s", pact_strerror(fd));
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    wchar_t wide[MAX_PATH + 64];
    cr_assert_gt(MultiByteToWideChar(CP_ACP, 0, dir, -1, wide, MAX_PATH), 0);
    wcscat(wide, L"\\caf\x00e9-\x20ac.txt");
    cr_assert_neq(GetFileAttributesW(wide), INVALID_FILE_ATTRIBUTES,
                  "the name is not what UTF-8 said");
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, utf8, 0, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, dir, AT_REMOVEDIR, record, &r_)), 0);
    test_loop_free(loop);
}

Test(fs, a_megabyte_round_trip)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    int fd = (int)DO(loop, pact_fs_open(loop, in_dir("big"), O_CREAT | O_RDWR, 0600,
                                       record, &r_));
    cr_assert_geq(fd, 0);
    static uint8_t out[1 << 20], in[1 << 20];
    test_fill_pattern(out, sizeof out, 7);
    cr_assert_eq(DO(loop, pact_fs_write(loop, fd, out, sizeof out, 4096, record, &r_)),
                 (int64_t)sizeof out);
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, in, sizeof in, 4096, record, &r_)),
                 (int64_t)sizeof in);
    cr_assert_eq(memcmp(in, out, sizeof in), 0);
    /* The hole before it reads as zeros. */
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, in, 4096, 0, record, &r_)), 4096);
    for (int i = 0; i < 4096; i++)
        cr_assert_eq(in[i], 0);
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, in_dir("big"), 0, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, dir, AT_REMOVEDIR, record, &r_)), 0);
    test_loop_free(loop);
}

Test(fs, many_ops_at_once_each_complete_once)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    many_writes_at_once_case(loop, in_dir("f"));
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, dir, AT_REMOVEDIR, record, &r_)), 0);
    test_loop_free(loop);
}

Test(fs, cancel_in_flight_twice_and_after_completion)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    int fd = (int)DO(loop, pact_fs_open(loop, in_dir("c"), O_CREAT | O_RDWR, 0600,
                                       record, &r_));
    cr_assert_geq(fd, 0);
    static char big[1 << 20];
    /* Not yet handed to the pool: cancelled here. */
    result early = {0};
    pact_op op0 = pact_fs_write(loop, fd, big, sizeof big, 0, record, &early);
    cr_assert_gt(op0, 0);
    int c0 = pact_op_cancel(loop, op0);
    cr_assert(c0 == 0 || c0 == -EALREADY, "cancel: %d", c0);
    result r = {0};
    pact_op op = pact_fs_write(loop, fd, big, sizeof big, 0, record, &r);
    cr_assert_gt(op, 0);
    pact_loop_run_once(loop, 0); /* handed to the pool */
    int c1 = pact_op_cancel(loop, op);
    cr_assert(c1 == 0 || c1 == -EALREADY || c1 == -ENOENT, "cancel: %d", c1);
    int c2 = pact_op_cancel(loop, op);
    if (c1 == 0)
        cr_assert_eq(c2, -EALREADY, "cancel twice");
    run_until(loop, &r.calls, 5000);
    run_until(loop, &early.calls, 5000);
    /* Exactly once each: the real result (the write won) or -ECANCELED. */
    cr_assert_eq(r.calls, 1);
    cr_assert(r.value == (int64_t)sizeof big || r.value == -ECANCELED,
              "result %lld", (long long)r.value);
    cr_assert_eq(early.calls, 1);
    cr_assert(early.value == (int64_t)sizeof big || early.value == -ECANCELED);
    cr_assert_eq(pact_op_cancel(loop, op), -ENOENT, "stale after completion");
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, in_dir("c"), 0, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, dir, AT_REMOVEDIR, record, &r_)), 0);
    test_loop_free(loop);
}

Test(fs, loop_close_with_file_ops_in_flight_completes_each_once)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    int fd = _open(in_dir("w"), _O_CREAT | _O_RDWR | _O_BINARY, _S_IREAD | _S_IWRITE);
    cr_assert_geq(fd, 0);
    close_loop_with_writes_in_flight(loop, fd);
    _close(fd);
    cr_assert(DeleteFileA(in_dir("w")));
    cr_assert(RemoveDirectoryA(dir));
}

static void on_event(pact_loop *loop, const pact_completion *c, void *user)
{
    record(loop, c, user);
}

Test(fs, linux_only_and_misuse)
{
    pact_loop *loop = test_loop_new();
    result r = {0};
    char buf[4];
    char st[512]; /* stands in for a struct statx */
    /* statx and inotify are Linux's. */
    cr_assert_eq(pact_fs_stat(loop, "C:\\", 0, 0, (struct statx *)st, record, &r),
                 -ENOTSUP);
    cr_assert_eq(pact_fs_fstat(loop, 0, 0, (struct statx *)st, record, &r), -ENOTSUP);
    cr_assert_eq(pact_fs_watch(loop, "C:\\", 2, on_event, &r), -ENOTSUP);

    cr_assert_eq(pact_fs_open(NULL, "C:\\", O_RDONLY, 0, record, &r), -EINVAL);
    cr_assert_eq(pact_fs_open(loop, NULL, O_RDONLY, 0, record, &r), -EINVAL);
    cr_assert_eq(pact_fs_open(loop, "C:\\", O_RDONLY, 0, NULL, &r), -EINVAL);
    cr_assert_eq(pact_fs_read(loop, -1, buf, 4, 0, record, &r), -EBADF);
    cr_assert_eq(pact_fs_read(loop, 0, NULL, 4, 0, record, &r), -EFAULT);
    cr_assert_eq(pact_fs_read(loop, 0, buf, 4, -2, record, &r), -EINVAL);
    cr_assert_eq(pact_fs_close(loop, -1, record, &r), -EBADF);
    cr_assert_eq(pact_fs_fsync(loop, -1, 0, record, &r), -EBADF);
    cr_assert_eq(pact_fs_rename(loop, "x", NULL, record, &r), -EINVAL);
    cr_assert_eq(pact_fs_unlink(loop, "x", 12345, record, &r), -EINVAL);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(pact_fs_open(loop, "C:\\", O_RDONLY, 0, record, &r), -ESHUTDOWN);
    pact_loop_free(loop);
    cr_assert_eq(r.calls, 0);
}
