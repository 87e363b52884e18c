/* SPDX-License-Identifier: MIT */
/* File operations: round trips in a temporary directory. The same
 * assertions run on both engines (native io_uring ops, the thread pool on
 * epoll), so the results are identical by construction. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "helpers.h"
#include "fs_result.h"

TestSuite(fs, .timeout = 30);

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/pact-fs-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static const char *in_dir(const char *name)
{
    static char bufs[4][128];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, 128, "%s/%s", dir, name);
    return b;
}

Test(fs, write_read_stat_fsync_close_round_trip)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    const char *path = in_dir("a");
    result r = {0};
    int fd = (int)finish(loop, pact_fs_open(loop, path, O_CREAT | O_RDWR | O_TRUNC,
                                            0640, record, &r), &r);
    cr_assert_geq(fd, 0, "open: %s", pact_strerror(fd));
    cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "O_CLOEXEC is added");

    static const char text[] = "hello world";
    cr_assert_eq(DO(loop, pact_fs_write(loop, fd, text, 11, 0, record, &r_)), 11);
    cr_assert_eq(DO(loop, pact_fs_fsync(loop, fd, 0, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_fsync(loop, fd, 1, record, &r_)), 0);

    struct statx st;
    memset(&st, 0, sizeof st);
    result rs = {0};
    cr_assert_eq(finish(loop, pact_fs_fstat(loop, fd, 0, &st, record, &rs), &rs), 0);
    cr_assert_eq(rs.statx, &st, "the callback sees the caller's buffer");
    cr_assert_eq(st.stx_size, 11);
    cr_assert(S_ISREG(st.stx_mode));

    char buf[32] = {0};
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, buf, 5, 6, record, &r_)), 5);
    cr_assert_eq(memcmp(buf, "world", 5), 0);
    /* offset -1: the file position, which pwrite/pread did not move. */
    memset(buf, 0, sizeof buf);
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, buf, sizeof buf, -1, record, &r_)), 11);
    cr_assert_str_eq(buf, text);
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, buf, sizeof buf, -1, record, &r_)), 0,
                 "end of file");
    cr_assert_eq(DO(loop, pact_fs_write(loop, fd, "!", 1, -1, record, &r_)), 1);
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, buf, sizeof buf, 0, record, &r_)), 12);
    cr_assert_eq(memcmp(buf, "hello world!", 12), 0);

    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    cr_assert_eq(fcntl(fd, F_GETFD), -1, "the fd is closed");

    memset(&st, 0, sizeof st);
    cr_assert_eq(DO(loop, pact_fs_stat(loop, path, 0, STATX_SIZE, &st, record, &r_)), 0);
    cr_assert_eq(st.stx_size, 12);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, path, 0, record, &r_)), 0);
    cr_assert_eq(rmdir(dir), 0);
    test_loop_free(loop);
}

Test(fs, rename_and_unlink)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    const char *a = in_dir("a"), *b = in_dir("b");
    int fd = (int)DO(loop, pact_fs_open(loop, a, O_CREAT | O_WRONLY, 0600, record, &r_));
    cr_assert_geq(fd, 0);
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);

    cr_assert_eq(DO(loop, pact_fs_rename(loop, a, b, record, &r_)), 0);
    struct statx st;
    cr_assert_eq(DO(loop, pact_fs_stat(loop, a, 0, 0, &st, record, &r_)), -ENOENT);
    cr_assert_eq(DO(loop, pact_fs_stat(loop, b, 0, 0, &st, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_rename(loop, a, b, record, &r_)), -ENOENT);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, b, 0, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, b, 0, record, &r_)), -ENOENT);

    cr_assert_eq(mkdir(in_dir("sub"), 0700), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, in_dir("sub"), 0, record, &r_)), -EISDIR);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, in_dir("sub"), AT_REMOVEDIR, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, dir, AT_REMOVEDIR, record, &r_)), 0);
    test_loop_free(loop);
}

Test(fs, errors_are_the_same_on_both_engines)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    cr_assert_eq(DO(loop, pact_fs_open(loop, in_dir("missing"), O_RDONLY, 0, record, &r_)),
                 -ENOENT);
    cr_assert_eq(DO(loop, pact_fs_open(loop, dir, O_WRONLY, 0, record, &r_)), -EISDIR);
    /* An fd number that is not open: the kernel's EBADF, not misuse. */
    int unused = 900;
    cr_assert_eq(fcntl(unused, F_GETFD), -1);
    char buf[4];
    cr_assert_eq(DO(loop, pact_fs_close(loop, unused, record, &r_)), -EBADF);
    cr_assert_eq(DO(loop, pact_fs_fsync(loop, unused, 0, record, &r_)), -EBADF);
    cr_assert_eq(DO(loop, pact_fs_read(loop, unused, buf, 4, 0, record, &r_)), -EBADF);
    struct statx st;
    cr_assert_eq(DO(loop, pact_fs_fstat(loop, unused, 0, &st, record, &r_)), -EBADF);
    cr_assert_eq(rmdir(dir), 0);
    test_loop_free(loop);
}

Test(fs, a_megabyte_round_trip)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    size_t n = 1 << 20;
    char *out = malloc(n), *in = calloc(1, n);
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(i * 7 + 3);
    int fd = (int)DO(loop, pact_fs_open(loop, in_dir("big"), O_CREAT | O_RDWR, 0600,
                                       record, &r_));
    cr_assert_geq(fd, 0);
    size_t done = 0;
    while (done < n) {
        int64_t w = DO(loop, pact_fs_write(loop, fd, out + done, n - done,
                                           (int64_t)done, record, &r_));
        cr_assert_gt(w, 0);
        done += (size_t)w;
    }
    done = 0;
    while (done < n) {
        int64_t rd = DO(loop, pact_fs_read(loop, fd, in + done, n - done,
                                           (int64_t)done, record, &r_));
        cr_assert_gt(rd, 0);
        done += (size_t)rd;
    }
    cr_assert_eq(memcmp(in, out, n), 0);
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, in_dir("big"), 0, record, &r_)), 0);
    cr_assert_eq(rmdir(dir), 0);
    free(out);
    free(in);
    test_loop_free(loop);
}

Test(fs, many_ops_at_once_each_complete_once)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    many_writes_at_once_case(loop, in_dir("f"));
    cr_assert_eq(rmdir(dir), 0);
    test_loop_free(loop);
}

Test(fs, cancelled_file_ops_complete_exactly_once)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    struct statx st[8];
    result rs[8] = {{0}};
    pact_op ops[8];
    for (int i = 0; i < 8; i++)
        ops[i] = pact_fs_stat(loop, dir, 0, 0, &st[i], record, &rs[i]);
    /* Not yet submitted: cancelled locally. */
    for (int i = 0; i < 8; i += 2)
        cr_assert_eq(pact_op_cancel(loop, ops[i]), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(rs[i].calls, 1);
        cr_assert_eq(rs[i].value, i % 2 ? 0 : -ECANCELED);
        cr_assert_eq(rs[i].statx, i % 2 ? &st[i] : NULL);
    }
    cr_assert_eq(rmdir(dir), 0);
    test_loop_free(loop);
}

Test(fs, cancel_in_flight_twice_and_after_completion)
{
    pact_loop *loop = test_loop_new();
    make_dir();
    result r = {0};
    int fd = (int)DO(loop, pact_fs_open(loop, in_dir("c"), O_CREAT | O_RDWR, 0600,
                                        record, &r_));
    cr_assert_geq(fd, 0);
    static char big[1 << 20];
    pact_op op = pact_fs_write(loop, fd, big, sizeof big, 0, record, &r);
    cr_assert_gt(op, 0);
    pact_loop_run_once(loop, 0); /* submitted (or handed to the pool) */
    int c1 = pact_op_cancel(loop, op);
    cr_assert(c1 == 0 || c1 == -EALREADY || c1 == -ENOENT, "cancel: %d", c1);
    int c2 = pact_op_cancel(loop, op);
    if (c1 == 0)
        cr_assert_eq(c2, -EALREADY, "cancel twice");
    run_until(loop, &r.calls, 5000);
    /* Exactly once: the real result (the write won) or -ECANCELED. */
    cr_assert_eq(r.calls, 1);
    cr_assert(r.value == (int64_t)sizeof big || r.value == -ECANCELED,
              "result %lld", (long long)r.value);
    cr_assert_eq(pact_op_cancel(loop, op), -ENOENT, "stale after completion");
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, in_dir("c"), 0, record, &r_)), 0);
    cr_assert_eq(rmdir(dir), 0);
    test_loop_free(loop);
}

Test(fs, loop_close_with_file_ops_in_flight_completes_each_once)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    make_dir();
    int fd = open(in_dir("w"), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    close_loop_with_writes_in_flight(loop, fd);
    close(fd);
    cr_assert_eq(unlink(in_dir("w")), 0);
    cr_assert_eq(rmdir(dir), 0);
    cr_assert_eq(count_open_fds(), fds);
}

Test(fs, misuse_is_answered_with_errors)
{
    pact_loop *loop = test_loop_new();
    result r = {0};
    struct statx st;
    char buf[4];
    cr_assert_eq(pact_fs_open(NULL, "/tmp", O_RDONLY, 0, record, &r), -EINVAL);
    cr_assert_eq(pact_fs_open(loop, NULL, O_RDONLY, 0, record, &r), -EINVAL);
    cr_assert_eq(pact_fs_open(loop, "/tmp", O_RDONLY, 0, NULL, &r), -EINVAL);
    cr_assert_eq(pact_fs_read(loop, -1, buf, 4, 0, record, &r), -EBADF);
    cr_assert_eq(pact_fs_read(loop, 0, NULL, 4, 0, record, &r), -EFAULT);
    cr_assert_eq(pact_fs_read(loop, 0, buf, 4, -2, record, &r), -EINVAL);
    cr_assert_eq(pact_fs_close(loop, -1, record, &r), -EBADF);
    cr_assert_eq(pact_fs_stat(loop, "/tmp", 0, 0, NULL, record, &r), -EINVAL);
    cr_assert_eq(pact_fs_rename(loop, "/tmp/x", NULL, record, &r), -EINVAL);
    cr_assert_eq(pact_fs_unlink(loop, "/tmp/x", 12345, record, &r), -EINVAL);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(pact_fs_stat(loop, "/tmp", 0, 0, &st, record, &r), -ESHUTDOWN);
    cr_assert_eq(pact_fs_open(loop, "/tmp", O_RDONLY, 0, record, &r), -ESHUTDOWN);
    pact_loop_free(loop);
    cr_assert_eq(r.calls, 0);
}
