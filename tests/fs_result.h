/* SPDX-License-Identifier: MIT */
/* The file-operation suites' completion recorder (tests/test_fs.c on
 * Linux, tests/win/test_fs.c on Windows): record() keeps an op's result
 * and counts its callbacks; DO(loop, call) starts one op into a fresh
 * result named r_, runs the loop until it has completed — exactly once —
 * and gives its result. Then the cases both systems run alike. Include
 * it after the suite's helpers.h (each system has its own). */
#ifndef PACT_TEST_FS_RESULT_H
#define PACT_TEST_FS_RESULT_H

#include <fcntl.h>
#include <stdio.h>
#include <string.h>

typedef struct result {
    int calls;
    int64_t value;
    const struct statx *statx;
} result;

static void record(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    result *r = user;
    r->calls++;
    r->value = c->result;
    r->statx = c->statx;
}

/* Runs the loop until the op started into *r has completed; returns its
 * result. */
static int64_t finish(pact_loop *loop, pact_op op, result *r)
{
    cr_assert_gt(op, 0, "start failed: %s", pact_strerror((int)op));
    volatile int *flag = &r->calls;
    run_until(loop, flag, 5000);
    cr_assert_eq(r->calls, 1);
    return r->value;
}

#define DO(loop, call)                                                      \
    ({                                                                      \
        result r_ = {0};                                                    \
        finish((loop), call, &r_);                                          \
    })

/* Sixty-four writes at once into the file at path (made, then removed),
 * each completing once, every block read back where it was written. */
static void many_writes_at_once_case(pact_loop *loop, const char *path)
{
    int fd = (int)DO(loop, pact_fs_open(loop, path, O_CREAT | O_RDWR, 0600,
                                       record, &r_));
    cr_assert_geq(fd, 0);
    static char blocks[64][16];
    result rs[64] = {{0}};
    for (int i = 0; i < 64; i++) {
        snprintf(blocks[i], 16, "block %08d", i);
        cr_assert_gt(pact_fs_write(loop, fd, blocks[i], 15, i * 15, record, &rs[i]), 0);
    }
    cr_assert_eq(pact_loop_run(loop), 0);
    for (int i = 0; i < 64; i++) {
        cr_assert_eq(rs[i].calls, 1);
        cr_assert_eq(rs[i].value, 15);
    }
    char buf[64 * 15];
    cr_assert_eq(DO(loop, pact_fs_read(loop, fd, buf, sizeof buf, 0, record, &r_)),
                 (int64_t)sizeof buf);
    for (int i = 0; i < 64; i++)
        cr_assert_eq(memcmp(buf + i * 15, blocks[i], 15), 0, "block %d", i);
    cr_assert_eq(DO(loop, pact_fs_close(loop, fd, record, &r_)), 0);
    cr_assert_eq(DO(loop, pact_fs_unlink(loop, path, 0, record, &r_)), 0);
}

/* Closes and frees loop with sixteen 1 MiB writes to fd started, some in
 * flight: each completes exactly once (written or -ECANCELED) and the
 * loop holds no op afterwards. fd stays the caller's. */
static void close_loop_with_writes_in_flight(pact_loop *loop, int fd)
{
    static char big[1 << 20];
    result rs[16] = {{0}};
    for (int i = 0; i < 16; i++)
        cr_assert_gt(pact_fs_write(loop, fd, big, sizeof big, (int64_t)i << 20,
                                   record, &rs[i]), 0);
    pact_loop_run_once(loop, 0); /* some in flight, some maybe done */
    cr_assert_eq(pact_loop_close(loop), 0);
    for (int i = 0; i < 16; i++) {
        cr_assert_eq(rs[i].calls, 1, "op %d completed %d times", i, rs[i].calls);
        cr_assert(rs[i].value == (int64_t)sizeof big || rs[i].value == -ECANCELED,
                  "op %d: %lld", i, (long long)rs[i].value);
    }
    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    cr_assert_eq(st.ops_live, 0);
    cr_assert_eq(st.stray_completions, 0);
    cr_assert_eq(st.ops_started, st.ops_completed);
    pact_loop_free(loop);
}

#endif
