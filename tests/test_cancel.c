/* SPDX-License-Identifier: MIT */
/* docs/contract.md §1-§4 for operations, on both engines: every started
 * op completes exactly once; nothing is freed because a cancel was asked
 * for; cancel is a harmless request whose return says whether it was in
 * time; and a cancel that loses the race never drops the data (bytes
 * received, an accepted fd). Plus deadlines, and closing a loop with ops in
 * flight. stray_completions == 0 is checked by test_loop_free(). */
#include <poll.h>
#include <stdio.h>

#include "helpers.h"
#include "loop.h" /* the loop's own wake-up op, for the internal-op test */

TestSuite(cancel, .timeout = 30);

/* One op's view of its completion. calls must end at exactly 1. */
typedef struct rec {
    int calls;
    int64_t result;
    size_t transferred;
    uint64_t at;
    pact_op op;
    /* cancel_self: cancel this op from inside its own callback. */
    int cancel_self;
    int self_cancel_result;
    /* cancel_other: cancel this op from inside the callback. */
    pact_op cancel_other;
    int other_cancel_result;
    /* retry_start: try to start new ops from the callback (loop closing). */
    int retry_start;
    int retry_recv_result, retry_sleep_result;
    int retry_fd;
} rec;

static void rec_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    rec *r = user;
    r->calls++;
    r->result = c->result;
    r->transferred = c->transferred;
    r->at = pact_now();
    if (r->op)
        cr_expect_eq(c->op, r->op, "completion names its op");
    if (r->cancel_self)
        r->self_cancel_result = pact_op_cancel(loop, c->op);
    if (r->cancel_other)
        r->other_cancel_result = pact_op_cancel(loop, r->cancel_other);
    if (r->retry_start) {
        static char buf[8];
        r->retry_recv_result =
            (int)pact_recv(loop, r->retry_fd, buf, sizeof buf, 0, rec_cb, r);
        r->retry_sleep_result = (int)pact_sleep(loop, 1, rec_cb, r);
    }
}

static void run_until_calls(pact_loop *loop, rec *r, unsigned limit_ms)
{
    run_until(loop, &r->calls, limit_ms);
}

/* A few more iterations: a second callback would show up here. */
static void settle(pact_loop *loop)
{
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 1 * (int64_t)MS);
}

static size_t read_available(int fd, char *out, size_t cap)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, out + got, cap - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

/* ---- the basic cases ----------------------------------------------------- */

Test(cancel, before_submission_completes_with_ecanceled)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[16];
    rec r = {0};
    r.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &r);
    cr_assert_gt(r.op, 0);
    cr_assert_eq(pact_op_cancel(loop, r.op), 0);
    cr_assert_eq(r.calls, 0, "the callback never runs inside pact_op_cancel");
    run_until_calls(loop, &r, 5000);
    settle(loop);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, -ECANCELED);
    cr_assert_eq(pact_op_cancel(loop, r.op), -ENOENT, "stale handle");
    /* It never reached the kernel: data sent now is all still there. */
    cr_assert_eq(write(sv[0], "abc", 3), 3);
    cr_assert_eq(read_available(sv[1], buf, sizeof buf), 3);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(cancel, in_flight_completes_with_ecanceled)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[16];
    rec r = {0};
    r.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &r);
    pact_loop_run_once(loop, 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 0, "idle socket: still waiting");
    cr_assert_eq(pact_op_cancel(loop, r.op), 0);
    run_until_calls(loop, &r, 5000);
    settle(loop);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, -ECANCELED);
    /* The cancelled recv no longer takes data. */
    cr_assert_eq(write(sv[0], "xyz", 3), 3);
    settle(loop);
    cr_assert_eq(read_available(sv[1], buf, sizeof buf), 3);
    cr_assert_eq(r.calls, 1);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(cancel, twice_is_ealready_and_one_callback)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[16];
    rec queued = {0}, flying = {0};
    queued.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &queued);
    cr_assert_eq(pact_op_cancel(loop, queued.op), 0);
    cr_assert_eq(pact_op_cancel(loop, queued.op), -EALREADY);

    flying.op = pact_recv(loop, sv[0], buf, sizeof buf, 0, rec_cb, &flying);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(pact_op_cancel(loop, flying.op), 0);
    cr_assert_eq(pact_op_cancel(loop, flying.op), -EALREADY);
    run_until_calls(loop, &queued, 5000);
    run_until_calls(loop, &flying, 5000);
    settle(loop);
    cr_assert_eq(queued.calls, 1);
    cr_assert_eq(flying.calls, 1);
    cr_assert_eq(queued.result, -ECANCELED);
    cr_assert_eq(flying.result, -ECANCELED);
    cr_assert_eq(pact_op_cancel(loop, queued.op), -ENOENT);
    cr_assert_eq(pact_op_cancel(loop, flying.op), -ENOENT);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(cancel, after_completion_is_enoent_even_when_the_slot_is_reused)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[16];
    rec done = {0}, next = {0};
    cr_assert_eq(write(sv[0], "hi", 2), 2);
    done.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &done);
    run_until_calls(loop, &done, 5000);
    cr_assert_eq(done.result, 2);
    /* The next op likely takes the same slot; the old handle must not
     * reach it. */
    next.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &next);
    cr_assert_neq(next.op, done.op);
    cr_assert_eq(pact_op_cancel(loop, done.op), -ENOENT);
    cr_assert_eq(pact_op_set_timeout(loop, done.op, MS), -ENOENT);
    settle(loop);
    cr_assert_eq(next.calls, 0, "the stale cancel hit the new op");
    cr_assert_eq(pact_op_cancel(loop, next.op), 0);
    run_until_calls(loop, &next, 5000);
    cr_assert_eq(next.result, -ECANCELED);
    cr_assert_eq(done.calls, 1);
    cr_assert_eq(pact_op_cancel(loop, 0), -ENOENT);
    cr_assert_eq(pact_op_cancel(loop, -3), -ENOENT);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(cancel, from_inside_its_own_callback_is_ealready)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[16];
    rec data = {0}, cancelled = {0}, slept = {0};
    data.cancel_self = cancelled.cancel_self = slept.cancel_self = 1;
    cr_assert_eq(write(sv[0], "ok", 2), 2);
    data.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &data);
    cancelled.op = pact_recv(loop, sv[0], buf, sizeof buf, 0, rec_cb, &cancelled);
    slept.op = pact_sleep(loop, 1 * MS, rec_cb, &slept);
    pact_loop_run_once(loop, 0);
    pact_op_cancel(loop, cancelled.op);
    run_until_calls(loop, &data, 5000);
    run_until_calls(loop, &cancelled, 5000);
    run_until_calls(loop, &slept, 5000);
    settle(loop);
    cr_assert_eq(data.calls, 1);
    cr_assert_eq(data.result, 2);
    cr_assert_eq(data.self_cancel_result, -EALREADY);
    cr_assert_eq(cancelled.calls, 1);
    cr_assert_eq(cancelled.self_cancel_result, -EALREADY);
    cr_assert_eq(slept.calls, 1);
    cr_assert_eq(slept.result, 0);
    cr_assert_eq(slept.self_cancel_result, -EALREADY);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(cancel, from_inside_another_ops_callback)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[16];
    rec victim = {0}, killer = {0};
    victim.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &victim);
    killer.op = pact_sleep(loop, 2 * MS, rec_cb, &killer);
    killer.cancel_other = victim.op;
    run_until_calls(loop, &victim, 5000);
    settle(loop);
    cr_assert_eq(killer.calls, 1);
    cr_assert_eq(killer.other_cancel_result, 0);
    cr_assert_eq(victim.calls, 1);
    cr_assert_eq(victim.result, -ECANCELED);

    /* Two recvs whose data is there: completions arrive together; the
     * first cancelling the second is too late and the second keeps its
     * bytes. */
    rec a = {0}, b = {0};
    char ba[2], bb[2];
    cr_assert_eq(write(sv[0], "1122", 4), 4);
    a.op = pact_recv(loop, sv[1], ba, 2, 0, rec_cb, &a);
    b.op = pact_recv(loop, sv[1], bb, 2, 0, rec_cb, &b);
    a.cancel_other = b.op;
    run_until_calls(loop, &a, 5000);
    run_until_calls(loop, &b, 5000);
    settle(loop);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(a.result, 2);
    cr_assert_eq(memcmp(ba, "11", 2), 0);
    if (b.result == -ECANCELED) {
        cr_assert_eq(a.other_cancel_result, 0);
        cr_assert_eq(read_available(sv[1], buf, sizeof buf), 2, "bytes kept");
    } else {
        cr_assert_eq(b.result, 2, "b: %s", pact_err_name((int)b.result));
        cr_assert_eq(memcmp(bb, "22", 2), 0);
        cr_assert_neq(a.other_cancel_result, -ENOENT,
                      "b had not run yet: its handle was live");
    }
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* Two recvs on two sockets, both woken by one wait: whichever calls back
 * first cancels the other, which completes in that same iteration — with
 * its bytes (too late) or -ECANCELED and the bytes kept — on every
 * engine. On io_uring the cancel's SQE would go out only with the next
 * submission, and its completion hold the other op one iteration more
 * although the kernel had finished it (a write pipe's connection_lost
 * came an iteration after epoll's that way). */
Test(cancel, a_cancel_too_late_for_an_op_woken_by_the_same_wait_costs_no_iteration)
{
    pact_loop *loop = test_loop_new();
    for (int round = 0; round < 20; round++) {
        int s1[2], s2[2];
        make_socketpair(s1);
        make_socketpair(s2);
        rec a = {0}, b = {0};
        char ba[2], bb[2], buf[8];
        a.op = pact_recv(loop, s1[1], ba, 2, 0, rec_cb, &a);
        b.op = pact_recv(loop, s2[1], bb, 2, 0, rec_cb, &b);
        cr_assert_gt(a.op, 0);
        cr_assert_gt(b.op, 0);
        a.cancel_other = b.op;
        b.cancel_other = a.op;
        cr_assert_geq(pact_loop_run_once(loop, 0), 0); /* both wait */
        cr_assert_eq(a.calls + b.calls, 0);
        cr_assert_eq(write(s1[0], "aa", 2), 2);
        cr_assert_eq(write(s2[0], "bb", 2), 2);
        cr_assert_geq(pact_loop_run_once(loop, 5000 * (int64_t)MS), 0);
        cr_assert_eq(a.calls, 1, "round %d: a did not call back", round);
        cr_assert_eq(b.calls, 1, "round %d: the cancelled op called back an "
                                 "iteration late", round);
        rec *r[2] = {&a, &b};
        char *got[2] = {ba, bb};
        const char *want[2] = {"aa", "bb"};
        int fd[2] = {s1[1], s2[1]};
        for (int i = 0; i < 2; i++) {
            if (r[i]->result == -ECANCELED) {
                cr_assert_eq(read_available(fd[i], buf, sizeof buf), 2,
                             "bytes kept");
            } else {
                cr_assert_eq(r[i]->result, 2, "%s",
                             pact_err_name((int)r[i]->result));
                cr_assert_eq(memcmp(got[i], want[i], 2), 0);
            }
        }
        settle(loop);
        cr_assert_eq(a.calls + b.calls, 2);
        close(s1[0]);
        close(s1[1]);
        close(s2[0]);
        close(s2[1]);
    }
    test_loop_free(loop);
}

/* ---- the race: a cancel and a completion carrying data ------------------- */

enum race_variant {
    DATA_FIRST_SUBMITTED,   /* data queued, recv submitted, then cancel */
    DATA_FIRST_UNSUBMITTED, /* data queued, recv started, cancel at once */
    DATA_AFTER_SUBMIT,      /* recv submitted, data arrives, then cancel */
};

static void recv_cancel_race(enum race_variant v, int rounds)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    int delivered = 0, cancelled = 0;
    for (int i = 0; i < rounds; i++) {
        char msg[32], buf[64], rest[64];
        int len = snprintf(msg, sizeof msg, "message %d", i);
        rec r = {0};
        if (v != DATA_AFTER_SUBMIT)
            cr_assert_eq(write(sv[0], msg, (size_t)len), len);
        r.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &r);
        cr_assert_gt(r.op, 0);
        if (v != DATA_FIRST_UNSUBMITTED)
            pact_loop_run_once(loop, 0);
        if (v == DATA_AFTER_SUBMIT)
            cr_assert_eq(write(sv[0], msg, (size_t)len), len);
        int cr = r.calls ? pact_op_cancel(loop, r.op) : pact_op_cancel(loop, r.op);
        if (r.calls)
            cr_assert_eq(cr, -ENOENT, "round %d: cancel after the callback", i);
        else
            cr_assert(cr == 0 || cr == -EALREADY, "round %d: cancel said %s", i,
                      pact_err_name(cr));
        if (v == DATA_FIRST_UNSUBMITTED)
            cr_assert_eq(cr, 0, "never submitted: cancel is in time");
        run_until_calls(loop, &r, 5000);
        settle(loop);
        cr_assert_eq(r.calls, 1, "round %d: %d callbacks", i, r.calls);

        size_t left = read_available(sv[1], rest, sizeof rest);
        if (r.result == -ECANCELED) {
            cancelled++;
            cr_assert_eq(left, (size_t)len, "round %d: cancelled, but %zu of "
                         "%d bytes are still in the socket", i, left, len);
            cr_assert_eq(memcmp(rest, msg, (size_t)len), 0);
            cr_assert_neq(cr, -EALREADY, "-EALREADY means too late");
        } else {
            delivered++;
            cr_assert_gt(r.result, 0, "round %d: %s", i,
                         pact_err_name((int)r.result));
            cr_assert_eq((size_t)r.result + left, (size_t)len,
                         "round %d: %lld delivered + %zu left != %d", i,
                         (long long)r.result, left, len);
            cr_assert_eq(memcmp(buf, msg, (size_t)r.result), 0);
            cr_assert_eq(memcmp(rest, msg + r.result, left), 0);
        }
    }
    cr_assert_eq(delivered + cancelled, rounds);
    if (v == DATA_FIRST_UNSUBMITTED)
        cr_assert_eq(cancelled, rounds);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(cancel, race_data_queued_recv_submitted_then_cancelled)
{
    recv_cancel_race(DATA_FIRST_SUBMITTED, 200);
}

Test(cancel, race_data_queued_recv_cancelled_before_running)
{
    recv_cancel_race(DATA_FIRST_UNSUBMITTED, 200);
}

Test(cancel, race_data_arrives_after_submit_then_cancel)
{
    recv_cancel_race(DATA_AFTER_SUBMIT, 200);
}

static void accept_cancel_race(int submit_first, int rounds)
{
    int lfd = pact_tcp_listen("127.0.0.1", 0, 64);
    cr_assert_geq(lfd, 0);
    struct sockaddr_storage ss;
    socklen_t len;
    pact_sockaddr_parse("127.0.0.1", (uint16_t)pact_socket_port(lfd), &ss, &len);
    pact_loop *loop = test_loop_new();
    int fds_before = count_open_fds();
    int delivered = 0, cancelled = 0;
    for (int i = 0; i < rounds; i++) {
        int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(connect(cfd, (struct sockaddr *)&ss, len), 0);
        rec r = {0};
        r.op = pact_accept(loop, lfd, rec_cb, &r);
        if (submit_first)
            pact_loop_run_once(loop, 0);
        int cr = pact_op_cancel(loop, r.op);
        if (r.calls)
            cr_assert_eq(cr, -ENOENT);
        run_until_calls(loop, &r, 5000);
        settle(loop);
        cr_assert_eq(r.calls, 1);
        int backlog = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (r.result == -ECANCELED) {
            cancelled++;
            cr_assert_geq(backlog, 0, "round %d: accept cancelled and the "
                          "connection is gone from the backlog", i);
            close(backlog);
        } else {
            delivered++;
            cr_assert_geq(r.result, 0, "round %d: %s", i,
                          pact_err_name((int)r.result));
            cr_assert_lt(backlog, 0, "one connection, accepted twice?");
            close((int)r.result);
        }
        close(cfd);
    }
    cr_assert_eq(count_open_fds(), fds_before, "an accepted fd leaked");
    cr_assert_eq(delivered + cancelled, rounds);
    if (!submit_first)
        cr_assert_eq(cancelled, rounds);
    test_loop_free(loop);
    close(lfd);
}

Test(cancel, race_accept_with_a_waiting_client_submitted_then_cancelled)
{
    accept_cancel_race(1, 100);
}

Test(cancel, race_accept_with_a_waiting_client_cancelled_before_running)
{
    accept_cancel_race(0, 100);
}

/* Many ops, cancelled at different moments, some with data racing in:
 * every one completes exactly once and no byte is lost. */
Test(cancel, exactly_once_under_a_mix_of_cancels)
{
    enum { PAIRS = 40 };
    int sv[PAIRS][2];
    static rec r[PAIRS];
    static char bufs[PAIRS][8];
    memset(r, 0, sizeof r);
    pact_loop *loop = test_loop_new();
    for (int p = 0; p < PAIRS; p++) {
        make_socketpair(sv[p]);
        if (p % 3 == 0)
            cr_assert_eq(write(sv[p][0], "abcd", 4), 4);
        r[p].op = pact_recv(loop, sv[p][1], bufs[p], sizeof bufs[p], 0, rec_cb, &r[p]);
    }
    for (int p = 0; p < PAIRS; p += 4)
        pact_op_cancel(loop, r[p].op); /* before submission */
    pact_loop_run_once(loop, 0);
    for (int p = 0; p < PAIRS; p++)
        if (p % 3 == 1)
            cr_assert_eq(write(sv[p][0], "efgh", 4), 4);
    for (int p = 1; p < PAIRS; p += 2)
        pact_op_cancel(loop, r[p].op); /* in flight, some with data racing */
    for (int i = 0; i < 20; i++)
        pact_loop_run_once(loop, 1 * (int64_t)MS);
    for (int p = 0; p < PAIRS; p++)
        pact_op_cancel(loop, r[p].op); /* whatever is left */
    uint64_t end = pact_now() + 5000 * MS;
    for (int p = 0; p < PAIRS; p++)
        while (!r[p].calls) {
            cr_assert(pact_now() < end);
            pact_loop_run_once(loop, 1 * (int64_t)MS);
        }
    settle(loop);
    for (int p = 0; p < PAIRS; p++) {
        cr_assert_eq(r[p].calls, 1, "op %d ran %d times", p, r[p].calls);
        char rest[8];
        size_t left = read_available(sv[p][1], rest, sizeof rest);
        size_t sent = p % 3 == 2 ? 0 : 4;
        if (r[p].result == -ECANCELED)
            cr_assert_eq(left, sent, "op %d: cancelled, %zu of %zu left", p,
                         left, sent);
        else
            cr_assert_eq((size_t)r[p].result + left, sent,
                         "op %d: %lld + %zu != %zu", p, (long long)r[p].result,
                         left, sent);
    }
    test_loop_free(loop);
    for (int p = 0; p < PAIRS; p++) {
        close(sv[p][0]);
        close(sv[p][1]);
    }
}

/* ---- deadlines ----------------------------------------------------------- */

Test(cancel, deadline_on_an_idle_recv_is_etimedout_and_never_early)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[16];
    rec r = {0};
    r.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &r);
    uint64_t set_at = pact_now();
    cr_assert_eq(pact_op_set_timeout(loop, r.op, 30 * MS), 0);
    run_until_calls(loop, &r, 5000);
    settle(loop);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, -ETIMEDOUT, "%s", pact_err_name((int)r.result));
    cr_assert_geq(r.at, set_at + 30 * MS, "deadline fired %lld ns early",
                  (long long)(set_at + 30 * MS - r.at));
    /* The timed-out recv took nothing. */
    cr_assert_eq(write(sv[0], "late", 4), 4);
    cr_assert_eq(read_available(sv[1], buf, sizeof buf), 4);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(cancel, deadline_loses_to_data_that_arrives_first)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[16] = {0};
    rec r = {0};
    r.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &r);
    cr_assert_eq(pact_op_set_timeout(loop, r.op, 2000 * MS), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(write(sv[0], "early", 5), 5);
    run_until_calls(loop, &r, 5000);
    cr_assert_eq(r.result, 5);
    cr_assert_str_eq(buf, "early");
    /* Nothing of the deadline is left: the loop has no work. */
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(r.calls, 1);
    cr_assert(!pact_loop_alive(loop));
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(cancel, deadline_set_after_submission_uses_the_heap)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[16];
    rec r = {0}, data = {0};
    r.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &r);
    pact_loop_run_once(loop, 0);
    uint64_t set_at = pact_now();
    cr_assert_eq(pact_op_set_timeout(loop, r.op, 25 * MS), 0);
    cr_assert_eq(pact_op_set_timeout(loop, r.op, 25 * MS), -EBUSY, "twice");
    run_until_calls(loop, &r, 5000);
    settle(loop);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, -ETIMEDOUT, "%s", pact_err_name((int)r.result));
    cr_assert_geq(r.at, set_at + 25 * MS, "deadline fired early");

    /* Same path, data first: the real bytes win. */
    char dbuf[8] = {0};
    data.op = pact_recv(loop, sv[1], dbuf, sizeof dbuf, 0, rec_cb, &data);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(pact_op_set_timeout(loop, data.op, 2000 * MS), 0);
    cr_assert_eq(write(sv[0], "bytes", 5), 5);
    run_until_calls(loop, &data, 5000);
    cr_assert_eq(data.result, 5);
    cr_assert_str_eq(dbuf, "bytes");
    cr_assert_eq(pact_loop_run(loop), 0, "no deadline left behind");
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(cancel, deadline_misuse_gets_errors)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[8];
    rec r = {0}, s = {0};
    r.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &r);
    cr_assert_eq(pact_op_set_timeout(loop, r.op, 0), -EINVAL);
    s.op = pact_sleep(loop, MS, rec_cb, &s);
    cr_assert_eq(pact_op_set_timeout(loop, s.op, MS), -EINVAL);
    cr_assert_eq(pact_op_cancel(loop, r.op), 0);
    cr_assert_eq(pact_op_set_timeout(loop, r.op, MS), -EALREADY);
    run_until_calls(loop, &r, 5000);
    run_until_calls(loop, &s, 5000);
    cr_assert_eq(pact_op_set_timeout(loop, r.op, MS), -ENOENT);
    cr_assert_eq(r.result, -ECANCELED, "cancel, not a timeout");
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* The errors pact_op_set_timeout() documents, each where pact.h says. */
Test(cancel, deadline_errors_are_the_documented_ones)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[8];
    rec q = {0}, f = {0}, s = {0};
    /* Queued (not yet submitted): a second deadline is -EBUSY. */
    q.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &q);
    cr_assert_eq(pact_op_set_timeout(loop, q.op, 3600 * 1000 * MS), 0);
    cr_assert_eq(pact_op_set_timeout(loop, q.op, MS), -EBUSY);
    /* In flight: the same. */
    f.op = pact_recv(loop, sv[0], buf, sizeof buf, 0, rec_cb, &f);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(f.calls, 0);
    cr_assert_eq(pact_op_set_timeout(loop, f.op, 3600 * 1000 * MS), 0);
    cr_assert_eq(pact_op_set_timeout(loop, f.op, MS), -EBUSY);
    /* 0, or a sleep (which is its own deadline): -EINVAL. */
    cr_assert_eq(pact_op_set_timeout(loop, f.op, 0), -EINVAL);
    s.op = pact_sleep(loop, MS, rec_cb, &s);
    cr_assert_eq(pact_op_set_timeout(loop, s.op, MS), -EINVAL);
    /* Cancel requested: -EALREADY. */
    cr_assert_eq(pact_op_cancel(loop, q.op), 0);
    cr_assert_eq(pact_op_set_timeout(loop, q.op, MS), -EALREADY);
    cr_assert_eq(pact_op_cancel(loop, f.op), 0);
    run_until_calls(loop, &q, 5000);
    run_until_calls(loop, &f, 5000);
    run_until_calls(loop, &s, 5000);
    /* Completed: the handle is stale. */
    cr_assert_eq(pact_op_set_timeout(loop, f.op, MS), -ENOENT);
    cr_assert_eq(q.result, -ECANCELED);
    cr_assert_eq(f.result, -ECANCELED);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(cancel, deadline_on_send_all_to_a_full_socket_reports_what_went_out)
{
    int sv[2];
    make_socketpair(sv);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    size_t len = 1u << 20;
    char *out = malloc(len);
    memset(out, 's', len);
    pact_loop *loop = test_loop_new();
    rec r = {0};
    r.op = pact_send_all(loop, sv[0], out, len, 0, rec_cb, &r);
    uint64_t set_at = pact_now();
    cr_assert_eq(pact_op_set_timeout(loop, r.op, 30 * MS), 0);
    run_until_calls(loop, &r, 5000);
    settle(loop);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, -ETIMEDOUT, "%s", pact_err_name((int)r.result));
    cr_assert_geq(r.at, set_at + 30 * MS);
    cr_assert_gt(r.transferred, 0);
    cr_assert_lt(r.transferred, len);
    char *in = malloc(len);
    cr_assert_eq(read_available(sv[1], in, len), r.transferred,
                 "the peer has exactly what transferred says");
    test_loop_free(loop);
    free(in);
    free(out);
    close(sv[0]);
    close(sv[1]);
}

/* ---- closing the loop with ops in flight --------------------------------- */

enum { CL_RECV, CL_RECV_QUEUED, CL_RECV_DEADLINE, CL_ACCEPT, CL_POLL, CL_SLEEP,
       CL_SEND_ALL, CL_READ_PIPE, CL_COUNT };

static void close_with_ops_in_flight(int submit_first)
{
    int fds_before = count_open_fds();
    int sv[2], full[2], p[2];
    make_socketpair(sv);
    make_socketpair(full); /* send_all target nobody reads */
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    int small = 4096;
    setsockopt(full[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    int lfd = pact_tcp_listen("127.0.0.1", 0, 4);
    size_t big = 1u << 20;
    char *out = malloc(big);
    memset(out, 'q', big);
    static char bufs[CL_COUNT][64];

    pact_loop *loop = test_loop_new();
    static rec r[CL_COUNT];
    memset(r, 0, sizeof r);
    for (int i = 0; i < CL_COUNT; i++) {
        r[i].retry_start = 1;
        r[i].retry_fd = sv[1];
    }
    r[CL_RECV].op = pact_recv(loop, sv[1], bufs[0], 64, 0, rec_cb, &r[CL_RECV]);
    r[CL_RECV_DEADLINE].op = pact_recv(loop, sv[1], bufs[1], 64, 0, rec_cb,
                                       &r[CL_RECV_DEADLINE]);
    pact_op_set_timeout(loop, r[CL_RECV_DEADLINE].op, 10000 * MS);
    r[CL_ACCEPT].op = pact_accept(loop, lfd, rec_cb, &r[CL_ACCEPT]);
    r[CL_POLL].op = pact_poll(loop, sv[1], POLLIN, rec_cb, &r[CL_POLL]);
    r[CL_SLEEP].op = pact_sleep(loop, 10000 * MS, rec_cb, &r[CL_SLEEP]);
    r[CL_SEND_ALL].op = pact_send_all(loop, full[0], out, big, 0, rec_cb,
                                      &r[CL_SEND_ALL]);
    r[CL_READ_PIPE].op = pact_read(loop, p[0], bufs[2], 64, -1, rec_cb,
                                   &r[CL_READ_PIPE]);
    if (submit_first) {
        for (int i = 0; i < 3; i++)
            pact_loop_run_once(loop, 0);
    }
    r[CL_RECV_QUEUED].op = pact_recv(loop, sv[1], bufs[3], 64, 0, rec_cb,
                                     &r[CL_RECV_QUEUED]);
    for (int i = 0; i < CL_COUNT; i++) {
        cr_assert_gt(r[i].op, 0, "op %d did not start", i);
        cr_assert_eq(r[i].calls, 0, "op %d completed before close", i);
    }
    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    cr_assert_eq(st.ops_live, CL_COUNT);

    cr_assert_eq(pact_loop_close(loop), 0);
    for (int i = 0; i < CL_COUNT; i++) {
        cr_assert_eq(r[i].calls, 1, "op %d: %d callbacks", i, r[i].calls);
        if (i == CL_SEND_ALL && r[i].result != -ECANCELED)
            cr_assert_eq(r[i].result, (int64_t)big);
        else
            cr_assert_eq(r[i].result, -ECANCELED, "op %d: %s", i,
                         pact_err_name((int)r[i].result));
        cr_assert_eq(r[i].retry_recv_result, -ESHUTDOWN, "op %d", i);
        cr_assert_eq(r[i].retry_sleep_result, -ESHUTDOWN, "op %d", i);
    }
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    cr_assert_eq(st.ops_live, 0);
    cr_assert_eq(st.stray_completions, 0);
    cr_assert_eq(st.ops_started, st.ops_completed);
    cr_assert_eq(pact_op_cancel(loop, r[CL_RECV].op), -ESHUTDOWN);
    pact_loop_free(loop);

    /* The send_all's bytes that went out are all there, and the cancelled
     * recvs left the socket alone. */
    char *in = malloc(big);
    size_t got = read_available(full[1], in, big);
    cr_assert_eq(got, r[CL_SEND_ALL].transferred);
    cr_assert_eq(write(sv[0], "after", 5), 5);
    cr_assert_eq(read_available(sv[1], in, big), 5);
    close(sv[0]);
    close(sv[1]);
    close(full[0]);
    close(full[1]);
    close(p[0]);
    close(p[1]);
    close(lfd);
    free(in);
    free(out);
    cr_assert_eq(count_open_fds(), fds_before, "the loop leaked an fd");
}

Test(cancel, close_with_ops_in_flight_completes_each_once)
{
    close_with_ops_in_flight(1);
}

Test(cancel, close_with_ops_never_submitted_completes_each_once)
{
    close_with_ops_in_flight(0);
}

Test(cancel, close_after_completions_arrived_but_before_callbacks_ran)
{
    /* Data is there for every recv: on io_uring the completions are
     * reaped at close; on epoll they complete at submission. Either way
     * the bytes are delivered, once. */
    int fds_before = count_open_fds();
    enum { N = 8 };
    int sv[N][2];
    static rec r[N];
    static char bufs[N][8];
    memset(r, 0, sizeof r);
    pact_loop *loop = test_loop_new();
    for (int i = 0; i < N; i++) {
        make_socketpair(sv[i]);
        cr_assert_eq(write(sv[i][0], "data", 4), 4);
        r[i].op = pact_recv(loop, sv[i][1], bufs[i], sizeof bufs[i], 0, rec_cb, &r[i]);
    }
    cr_assert_eq(pact_loop_close(loop), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].calls, 1);
        char rest[8];
        size_t left = read_available(sv[i][1], rest, sizeof rest);
        if (r[i].result == -ECANCELED)
            cr_assert_eq(left, 4);
        else
            cr_assert_eq((size_t)r[i].result + left, 4);
    }
    pact_loop_free(loop);
    for (int i = 0; i < N; i++) {
        close(sv[i][0]);
        close(sv[i][1]);
    }
    cr_assert_eq(count_open_fds(), fds_before);
}

/* ---- handles are per loop and per kind ----------------------------------- */

static void count_call(pact_loop *loop, void *user)
{
    (void)loop;
    (*(int *)user)++;
}

/* Op handles and callback handles are different kinds: one is never taken
 * for the other, even when both are the first of their kind on the loop. */
Test(cancel, a_handle_of_the_other_kind_is_enoent_and_touches_nothing)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    int ran = 0;
    pact_handle h = pact_call_soon(loop, count_call, &ran);
    pact_handle t = pact_call_later(loop, 1 * MS, count_call, &ran);
    cr_assert_gt(h, 0);
    cr_assert_gt(t, 0);
    char buf[8];
    rec r = {0};
    r.op = pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &r);
    cr_assert_gt(r.op, 0);
    /* A callback handle given to the op functions, and the reverse. */
    cr_assert_eq(pact_op_cancel(loop, h), -ENOENT);
    cr_assert_eq(pact_op_cancel(loop, t), -ENOENT);
    cr_assert_eq(pact_op_set_timeout(loop, h, MS), -ENOENT);
    cr_assert_eq(pact_handle_cancel(loop, r.op), -ENOENT);
    /* Nothing was cancelled: both callbacks run, the recv gets its data. */
    uint64_t end = pact_now() + 5000 * MS;
    while (ran < 2 && pact_now() < end)
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    cr_assert_eq(ran, 2);
    cr_assert_eq(send(sv[0], "x", 1, 0), 1);
    run_until_calls(loop, &r, 5000);
    cr_assert_eq(r.result, 1);
    settle(loop);
    cr_assert_eq(r.calls, 1);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* A handle belongs to the loop that gave it: another loop answers -ENOENT
 * even where the same slot of its own is live. */
Test(cancel, a_handle_of_another_loop_is_enoent_and_touches_nothing)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *a = test_loop_new();
    pact_loop *b = test_loop_new();
    char buf_a[8], buf_b[8];
    rec ra = {0}, rb = {0};
    ra.op = pact_recv(a, sv[1], buf_a, sizeof buf_a, 0, rec_cb, &ra);
    rb.op = pact_recv(b, sv[0], buf_b, sizeof buf_b, 0, rec_cb, &rb);
    cr_assert_gt(ra.op, 0);
    cr_assert_gt(rb.op, 0);
    int ran_a = 0, ran_b = 0;
    pact_handle ha = pact_call_soon(a, count_call, &ran_a);
    pact_handle hb = pact_call_soon(b, count_call, &ran_b);
    cr_assert_eq(pact_op_cancel(b, ra.op), -ENOENT);
    cr_assert_eq(pact_op_set_timeout(b, ra.op, MS), -ENOENT);
    cr_assert_eq(pact_op_cancel(a, rb.op), -ENOENT);
    cr_assert_eq(pact_handle_cancel(b, ha), -ENOENT);
    cr_assert_eq(pact_handle_cancel(a, hb), -ENOENT);
    /* Both loops' ops and callbacks are untouched. */
    cr_assert_eq(send(sv[0], "a", 1, 0), 1);
    cr_assert_eq(send(sv[1], "b", 1, 0), 1);
    uint64_t end = pact_now() + 5000 * MS;
    while ((!ra.calls || !rb.calls || !ran_a || !ran_b) && pact_now() < end) {
        pact_loop_run_once(a, 1 * (int64_t)MS);
        pact_loop_run_once(b, 1 * (int64_t)MS);
    }
    cr_assert_eq(ran_a, 1);
    cr_assert_eq(ran_b, 1);
    cr_assert_eq(ra.result, 1, "loop a's recv: %s", pact_err_name((int)ra.result));
    cr_assert_eq(rb.result, 1, "loop b's recv: %s", pact_err_name((int)rb.result));
    test_loop_free(a);
    test_loop_free(b);
    close(sv[0]);
    close(sv[1]);
}

static void note_wake(pact_loop *loop, void *user)
{
    (void)loop;
    *(volatile int *)user = 1;
}

static void *wake_from_thread(void *arg)
{
    void **a = arg;
    usleep(20 * 1000);
    pact_call_soon_threadsafe(a[0], note_wake, a[1]);
    return NULL;
}

/* The loop's own operations (its wake-up read) are not the user's to
 * cancel: whatever handle is passed, they stay armed. The handle is the
 * one the loop keeps for itself (read from its private state). */
Test(cancel, the_loops_internal_op_cannot_be_cancelled_by_a_user)
{
    pact_loop *loop = test_loop_new();
    pact_op wake = loop->wake_op;
    cr_assert_gt(wake, 0);
    cr_assert_eq(pact_op_cancel(loop, wake), -ENOENT);
    cr_assert_eq(pact_op_set_timeout(loop, wake, 1), -ENOENT);
    /* The first callback handle of a loop: the same slot and generation
     * as the wake-up read's op. */
    int ran = 0;
    pact_handle h = pact_call_soon(loop, count_call, &ran);
    cr_assert_eq(pact_op_cancel(loop, h), -ENOENT);
    run_until(loop, &ran, 5000);
    /* The wake-up read still works: another thread's callback runs. */
    volatile int woke = 0;
    void *args[2] = {loop, (void *)&woke};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, wake_from_thread, args), 0);
    run_until(loop, (const volatile int *)&woke, 5000);
    pthread_join(th, NULL);
    test_loop_free(loop);
}
