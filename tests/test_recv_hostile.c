/* SPDX-License-Identifier: MIT */
/* pact_recv used as a careless or hostile user would, on both engines:
 * the fd number changed under the loop between receives, a socket shut
 * down for reading or reset by its peer while a receive waits, two
 * receives on one socket, a cancel or a close right after (or inside) a
 * receive's completion. Each asserts the contract (docs/contract.md):
 * every receive completes exactly once (§1), a failure is a negative
 * errno (§9), and no byte is lost or delivered twice (§4). The epoll
 * engine keeps per-number state across receives (engine_epoll.c,
 * note_receive: a stream socket's drained read makes the next receive
 * wait without trying), which is what these cases try to mislead. */
#include "helpers.h"

TestSuite(recv_hostile, .timeout = 30);

/* One receive: its callback's calls and result, its buffer. */
typedef struct recv_rec {
    int calls;
    int64_t result;
    char in[64];
    /* set by the callbacks below that act on completion */
    pact_loop *loop;
    int fd;
    int cancel_self;   /* pact_op_cancel of its own handle, in the callback */
    int cancel_answer;
    pact_op self;
    struct recv_rec *next; /* started (and maybe cancelled) in the callback */
    int cancel_next;
    int cancel_next_answer;
    int close_fd;      /* close(fd) in the callback */
} recv_rec;

static void recv_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    recv_rec *r = user;
    r->calls++;
    r->result = c->result;
    if (r->cancel_self)
        r->cancel_answer = pact_op_cancel(loop, c->op);
    if (r->close_fd)
        close(r->fd);
    if (r->next) {
        r->next->self = pact_recv(loop, r->next->fd, r->next->in, sizeof r->next->in, 0,
                                  recv_cb, r->next);
        cr_assert_gt(r->next->self, 0);
        if (r->cancel_next)
            r->cancel_next_answer = pact_op_cancel(loop, r->next->self);
    }
}

static pact_op start_recv(pact_loop *loop, int fd, recv_rec *r)
{
    r->fd = fd;
    r->self = pact_recv(loop, fd, r->in, sizeof r->in, 0, recv_cb, r);
    cr_assert_gt(r->self, 0, "pact_recv: %s", pact_strerror((int)r->self));
    return r->self;
}

/* A receive whose answer was there when it started completes within three
 * short turns, not after a wait's timeout. */
static void run_until_answered(pact_loop *loop, recv_rec *r, const char *what)
{
    for (int i = 0; i < 3 && !r->calls; i++)
        cr_assert_geq(pact_loop_run_once(loop, 300 * (int64_t)MS), 0);
    cr_assert_eq(r->calls, 1, "%s: the receive did not complete at once", what);
}

/* A few turns in which nothing may complete. */
static void run_idle(pact_loop *loop)
{
    for (int i = 0; i < 3; i++)
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
}

static void expect_bytes(const recv_rec *r, const char *want, const char *what)
{
    size_t n = strlen(want);
    cr_assert_eq(r->calls, 1, "%s: %d completions", what, r->calls);
    cr_assert_eq(r->result, (int64_t)n, "%s: result %s (%lld)", what,
                 pact_err_name((int)r->result), (long long)r->result);
    cr_assert_eq(memcmp(r->in, want, n), 0, "%s: wrong bytes", what);
}

/* A short read of "ab" by r (NULL: a plain receive; else one the caller
 * set up, maybe started already with a callback of its own), waiting
 * first so that epoll has a registration for the socket: on epoll the
 * number's next receive then waits without trying (a drained stream
 * socket). */
static void short_read_after_a_wait(pact_loop *loop, int reader, int writer, recv_rec *r)
{
    recv_rec plain = {0};
    if (!r)
        r = &plain;
    if (!r->self)
        start_recv(loop, reader, r);
    run_idle(loop);
    cr_assert_eq(r->calls, 0);
    cr_assert_eq(send(writer, "ab", 2, 0), 2);
    run_until(loop, &r->calls, 5000);
    expect_bytes(r, "ab", "the short read");
}

/* Reads what fd holds now (non-blocking), NUL-terminated. */
static void drain_into(int fd, char *out, size_t cap)
{
    size_t got = 0;
    ssize_t n;
    while (got + 1 < cap && (n = recv(fd, out + got, cap - 1 - got, MSG_DONTWAIT)) > 0)
        got += (size_t)n;
    out[got] = 0;
}

/* ---- the number changed under the loop --------------------------------- */

/* dup2 puts another socket on the number between two receives, while the
 * old socket stays open through a second fd (so epoll keeps its old
 * registration, which the number no longer names). The next receives
 * read the new socket, once each; what the old socket gets stays in it. */
static void dup2_between_receives(int cancel_a_wait_first)
{
    pact_loop *loop = test_loop_new();
    int a[2], b[2];
    make_socketpair(a);
    make_socketpair(b);
    int number = a[1];
    short_read_after_a_wait(loop, number, a[0], NULL);
    if (cancel_a_wait_first) {
        /* A receive left waiting (armed) and cancelled: the old socket's
         * registration may stay armed for readiness that comes later. */
        recv_rec w = {0};
        pact_op op = start_recv(loop, number, &w);
        run_idle(loop);
        cr_assert_eq(pact_op_cancel(loop, op), 0);
        run_until(loop, &w.calls, 5000);
        cr_assert_eq(w.result, -ECANCELED);
    }
    int old = dup(number);
    cr_assert_geq(old, 0);
    cr_assert_eq(dup2(b[1], number), number);
    close(b[1]);
    cr_assert_eq(send(a[0], "stale", 5, 0), 5); /* for the old socket */
    cr_assert_eq(send(b[0], "new", 3, 0), 3);
    recv_rec r = {0};
    start_recv(loop, number, &r);
    run_until_answered(loop, &r, "after dup2");
    expect_bytes(&r, "new", "after dup2");
    /* Nothing for the new socket: the receive waits, also while the old
     * socket becomes readable again, and then gets the new bytes. */
    memset(&r, 0, sizeof r);
    start_recv(loop, number, &r);
    run_idle(loop);
    cr_assert_eq(send(a[0], "more", 4, 0), 4);
    run_idle(loop);
    cr_assert_eq(r.calls, 0, "a receive on the new socket completed with %lld",
                 (long long)r.result);
    cr_assert_eq(send(b[0], "next", 4, 0), 4);
    run_until(loop, &r.calls, 5000);
    expect_bytes(&r, "next", "the second receive after dup2");
    char left[64];
    drain_into(old, left, sizeof left);
    cr_assert_str_eq(left, "stalemore", "the old socket's bytes");
    test_loop_free(loop);
    close(old);
    close(number);
    close(a[0]);
    close(b[0]);
}

Test(recv_hostile, dup2_over_the_number_between_receives_reads_the_new_socket)
{
    dup2_between_receives(0);
}

Test(recv_hostile, dup2_after_a_cancelled_wait_reads_the_new_socket)
{
    dup2_between_receives(1);
}

/* ---- the socket's own state changes ------------------------------------ */

/* shutdown(SHUT_RD) by the reader itself: a receive after a short read
 * answers end of file (0) at once; one already waiting is woken with 0. */
static void shut_down_for_reading(int reader, int writer, const char *what)
{
    pact_loop *loop = test_loop_new();
    short_read_after_a_wait(loop, reader, writer, NULL);
    recv_rec waiting = {0};
    start_recv(loop, reader, &waiting);
    run_idle(loop);
    cr_assert_eq(waiting.calls, 0);
    cr_assert_eq(shutdown(reader, SHUT_RD), 0);
    run_until_answered(loop, &waiting, what);
    cr_assert_eq(waiting.result, 0, "%s, waiting: %s", what,
                 pact_err_name((int)waiting.result));
    recv_rec after = {0};
    start_recv(loop, reader, &after);
    run_until_answered(loop, &after, what);
    cr_assert_eq(after.result, 0, "%s, after: %s", what, pact_err_name((int)after.result));
    test_loop_free(loop);
    close(reader);
    close(writer);
}

Test(recv_hostile, a_socket_shut_down_for_reading_answers_0_waiting_or_not)
{
    int sv[2];
    make_socketpair(sv);
    shut_down_for_reading(sv[1], sv[0], "AF_UNIX stream");
    int c, s;
    make_tcp_pair(&c, &s);
    shut_down_for_reading(s, c, "TCP");
}

/* The peer resets the connection (SO_LINGER 0, close): a receive waiting
 * for bytes ends once with -ECONNRESET, and so does one started after a
 * short read when the reset came before it (epoll: started untried). */
static void reset_by_peer(int c)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    cr_assert_eq(setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof l), 0);
    cr_assert_eq(close(c), 0);
}

Test(recv_hostile, a_peer_reset_during_a_wait_ends_the_receive_once_with_econnreset)
{
    pact_loop *loop = test_loop_new();
    int c, s;
    make_tcp_pair(&c, &s);
    short_read_after_a_wait(loop, s, c, NULL);
    recv_rec r = {0};
    start_recv(loop, s, &r);
    run_idle(loop);
    cr_assert_eq(r.calls, 0);
    reset_by_peer(c);
    run_until(loop, &r.calls, 5000);
    run_idle(loop);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, -ECONNRESET, "%s", pact_err_name((int)r.result));
    test_loop_free(loop);
    close(s);
}

Test(recv_hostile, a_receive_started_after_a_reset_came_answers_econnreset_at_once)
{
    pact_loop *loop = test_loop_new();
    int c, s;
    make_tcp_pair(&c, &s);
    short_read_after_a_wait(loop, s, c, NULL);
    reset_by_peer(c);
    usleep(20 * 1000); /* the reset reaches the socket (loopback) */
    recv_rec r = {0};
    start_recv(loop, s, &r);
    run_until_answered(loop, &r, "after a reset");
    cr_assert_eq(r.result, -ECONNRESET, "%s", pact_err_name((int)r.result));
    test_loop_free(loop);
    close(s);
}

/* ---- two receives on one socket ---------------------------------------- */

/* Two receives started together on a stream socket after a short read:
 * the first gets the first bytes, the second the next ones, each once
 * and in the order started, whether the bytes come in one write or two. */
Test(recv_hostile, two_receives_on_one_stream_socket_split_its_bytes_in_order)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    short_read_after_a_wait(loop, sv[1], sv[0], NULL);
    recv_rec first = {0}, second = {0};
    start_recv(loop, sv[1], &first);
    start_recv(loop, sv[1], &second);
    run_idle(loop);
    cr_assert_eq(first.calls + second.calls, 0);
    cr_assert_eq(send(sv[0], "ab", 2, 0), 2);
    run_until(loop, &first.calls, 5000);
    expect_bytes(&first, "ab", "the first receive");
    run_idle(loop);
    cr_assert_eq(second.calls, 0, "the second took bytes that were not sent");
    cr_assert_eq(send(sv[0], "cd", 2, 0), 2);
    run_until(loop, &second.calls, 5000);
    expect_bytes(&second, "cd", "the second receive");
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* The same on a datagram socket with two datagrams sent at once: one
 * each, in order. */
Test(recv_hostile, two_receives_on_one_datagram_socket_get_one_datagram_each)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    short_read_after_a_wait(loop, sv[1], sv[0], NULL);
    recv_rec first = {0}, second = {0};
    start_recv(loop, sv[1], &first);
    start_recv(loop, sv[1], &second);
    run_idle(loop);
    cr_assert_eq(first.calls + second.calls, 0);
    cr_assert_eq(send(sv[0], "one", 3, 0), 3);
    cr_assert_eq(send(sv[0], "two", 3, 0), 3);
    run_until(loop, &second.calls, 5000);
    expect_bytes(&first, "one", "the first receive");
    expect_bytes(&second, "two", "the second receive");
    char left[8];
    cr_assert_lt(recv(sv[1], left, sizeof left, MSG_DONTWAIT), 0, "a datagram left");
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* After a short read, a peek (MSG_PEEK) sees the next bytes and leaves
 * them; the receive after it takes them, once. */
Test(recv_hostile, a_peek_after_a_drained_read_sees_the_bytes_the_next_receive_takes)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    short_read_after_a_wait(loop, sv[1], sv[0], NULL);
    recv_rec peek = {0};
    peek.fd = sv[1];
    peek.self = pact_recv(loop, sv[1], peek.in, sizeof peek.in, MSG_PEEK, recv_cb, &peek);
    cr_assert_gt(peek.self, 0);
    run_idle(loop);
    cr_assert_eq(peek.calls, 0);
    cr_assert_eq(send(sv[0], "pk", 2, 0), 2);
    run_until(loop, &peek.calls, 5000);
    expect_bytes(&peek, "pk", "the peek");
    recv_rec r = {0};
    start_recv(loop, sv[1], &r);
    run_until_answered(loop, &r, "after the peek");
    expect_bytes(&r, "pk", "the receive after the peek");
    memset(&r, 0, sizeof r);
    start_recv(loop, sv[1], &r);
    run_idle(loop);
    cr_assert_eq(r.calls, 0, "the peeked bytes came twice");
    cr_assert_eq(pact_op_cancel(loop, r.self), 0);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.result, -ECANCELED, "%s", pact_err_name((int)r.result));
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* ---- cancel and close around a completion ------------------------------ */

/* From a short read's callback: its own cancel is -EALREADY, and a
 * receive started there and cancelled at once ends once with -ECANCELED
 * (nothing was sent), taking nothing: the bytes sent next go to the
 * receive after it. */
Test(recv_hostile, a_receive_cancelled_right_after_a_drained_completion_takes_nothing)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    recv_rec next = {.fd = sv[1]};
    recv_rec r = {.cancel_self = 1, .next = &next, .cancel_next = 1};
    short_read_after_a_wait(loop, sv[1], sv[0], &r);
    run_until(loop, &next.calls, 5000);
    cr_assert_eq(r.cancel_answer, -EALREADY, "its own cancel: %s",
                 pact_strerror(r.cancel_answer));
    cr_assert_eq(r.cancel_next_answer, 0, "%s", pact_strerror(r.cancel_next_answer));
    cr_assert_eq(next.result, -ECANCELED, "%s", pact_err_name((int)next.result));
    cr_assert_eq(pact_op_cancel(loop, r.self), -ENOENT);
    cr_assert_eq(pact_op_cancel(loop, next.self), -ENOENT);
    run_idle(loop);
    cr_assert_eq(next.calls, 1);
    cr_assert_eq(send(sv[0], "cd", 2, 0), 2);
    recv_rec after = {0};
    start_recv(loop, sv[1], &after);
    run_until(loop, &after.calls, 5000);
    expect_bytes(&after, "cd", "the receive after the cancel");
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* A short read's callback closes the socket: a receive on the closed
 * number is -EBADF at once (epoll: started untried, the arm fails and
 * it tries). */
Test(recv_hostile, a_receive_on_a_number_closed_in_the_last_callback_is_ebadf)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    recv_rec r = {.close_fd = 1};
    short_read_after_a_wait(loop, sv[1], sv[0], &r);
    recv_rec after = {0};
    start_recv(loop, sv[1], &after);
    run_until_answered(loop, &after, "on the closed number");
    cr_assert_eq(after.result, -EBADF, "%s", pact_err_name((int)after.result));
    test_loop_free(loop);
    close(sv[0]);
}

/* The callback closes the socket and the number comes back at once as a
 * new socket with bytes waiting; a receive started there gets them. */
static int reused;
static int reused_peer;

static void close_and_reuse_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    recv_rec *r = user;
    r->calls++;
    r->result = c->result;
    close(r->fd);
    int nv[2];
    make_socketpair(nv);
    cr_assert(nv[0] == r->fd || nv[1] == r->fd, "the number was not reused");
    reused = r->fd;
    reused_peer = nv[0] == r->fd ? nv[1] : nv[0];
    cr_assert_eq(send(reused_peer, "fresh", 5, 0), 5);
    r->next->self = pact_recv(loop, reused, r->next->in, sizeof r->next->in, 0, recv_cb,
                              r->next);
    cr_assert_gt(r->next->self, 0);
}

Test(recv_hostile, a_number_closed_and_reused_in_the_callback_reads_the_new_socket)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    recv_rec next = {0};
    recv_rec r = {.fd = sv[1], .next = &next};
    r.self = pact_recv(loop, sv[1], r.in, sizeof r.in, 0, close_and_reuse_cb, &r);
    cr_assert_gt(r.self, 0);
    short_read_after_a_wait(loop, sv[1], sv[0], &r);
    for (int i = 0; i < 3 && !next.calls; i++)
        cr_assert_geq(pact_loop_run_once(loop, 300 * (int64_t)MS), 0);
    expect_bytes(&next, "fresh", "the receive on the reused number");
    test_loop_free(loop);
    close(sv[0]);
    close(reused);
    close(reused_peer);
}

/* A second receive queued behind the first on the same socket, and the
 * first one's callback closes the socket: the second still ends exactly
 * once, with a negative errno, at the latest when cancelled, and loop
 * close ends one left waiting. (io_uring submits it after the callback:
 * -EBADF. epoll handed it to the engine before the callback ran, armed on
 * the socket the close then took away: it waits until cancelled, as any
 * op does whose fd the user closes under it, docs/contract.md §1.) */
Test(recv_hostile, a_receive_queued_behind_one_whose_callback_closes_the_socket_ends_once)
{
    for (int cancel = 0; cancel < 2; cancel++) {
        pact_loop *loop = test_loop_new();
        int sv[2];
        make_socketpair(sv);
        recv_rec first = {.close_fd = 1}, second = {0};
        start_recv(loop, sv[1], &first);
        start_recv(loop, sv[1], &second);
        short_read_after_a_wait(loop, sv[1], sv[0], &first);
        run_idle(loop);
        if (cancel && !second.calls) {
            int r = pact_op_cancel(loop, second.self);
            cr_assert(r == 0 || r == -ENOENT, "%s", pact_strerror(r));
            run_until(loop, &second.calls, 5000);
        }
        cr_assert_leq(second.calls, 1);
        test_loop_free(loop);
        cr_assert_eq(second.calls, 1, "the second receive never completed");
        cr_assert_lt(second.result, 0, "the second receive: %lld",
                     (long long)second.result);
        close(sv[0]);
    }
}

/* ---- flags ---------------------------------------------------------------- */

/* MSG_WAITALL on a stream socket: the receive completes once len bytes
 * came (as recv(2) and io_uring's receive do), not with the first ones;
 * the end of file or a cancel before that completes it with the bytes it
 * has (never -ECANCELED for bytes taken from the socket, §4). */
static void waitall(int cancel, const char *what)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    recv_rec r = {0};
    r.fd = sv[1];
    r.self = pact_recv(loop, sv[1], r.in, 4, MSG_WAITALL, recv_cb, &r);
    cr_assert_gt(r.self, 0);
    run_idle(loop);
    cr_assert_eq(send(sv[0], "ab", 2, 0), 2);
    run_idle(loop);
    for (int i = 0; i < 3 && !r.calls; i++)
        cr_assert_geq(pact_loop_run_once(loop, 20 * (int64_t)MS), 0);
    cr_assert_eq(r.calls, 0, "%s: completed with %lld of 4 bytes", what,
                 (long long)r.result);
    if (cancel == 0) {
        cr_assert_eq(send(sv[0], "cdef", 4, 0), 4);
        run_until(loop, &r.calls, 5000);
        expect_bytes(&r, "abcd", what);
        char left[8];
        drain_into(sv[1], left, sizeof left);
        cr_assert_str_eq(left, "ef", "%s: the bytes past len", what);
    } else if (cancel == 1) {
        cr_assert_eq(pact_op_cancel(loop, r.self), 0);
        cr_assert_eq(pact_op_cancel(loop, r.self), -EALREADY, "%s", what);
        run_until(loop, &r.calls, 5000);
        expect_bytes(&r, "ab", what);
    } else if (cancel == 3) {
        cr_assert_eq(pact_op_set_timeout(loop, r.self, 30 * MS), 0);
        run_until(loop, &r.calls, 5000);
        expect_bytes(&r, "ab", what);
    } else {
        cr_assert_eq(shutdown(sv[0], SHUT_WR), 0);
        run_until(loop, &r.calls, 5000);
        expect_bytes(&r, "ab", what);
    }
    /* Exactly once: nothing more comes, and the op is gone. */
    if (cancel != 2) /* sv[0] shut down for writing in case 2 */
        cr_assert_eq(send(sv[0], "gh", 2, 0), 2);
    run_idle(loop);
    cr_assert_eq(r.calls, 1, "%s: %d completions", what, r.calls);
    cr_assert_eq(pact_op_cancel(loop, r.self), -ENOENT, "%s", what);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(recv_hostile, a_waitall_receive_completes_once_all_its_bytes_came)
{
    waitall(0, "all bytes");
}

Test(recv_hostile, a_waitall_receive_cancelled_halfway_gives_the_bytes_it_took)
{
    waitall(1, "cancelled halfway");
}

Test(recv_hostile, a_waitall_receive_ended_by_eof_halfway_gives_the_bytes_it_took)
{
    waitall(2, "end of file halfway");
}

Test(recv_hostile, a_waitall_receive_whose_deadline_passes_halfway_gives_the_bytes_it_took)
{
    waitall(3, "deadline halfway");
}

/* On a datagram socket MSG_WAITALL changes nothing: one datagram, shorter
 * than len, completes the receive (recv(2) does the same). */
Test(recv_hostile, a_waitall_receive_on_a_datagram_socket_gets_one_datagram)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    cr_assert_eq(send(sv[0], "ab", 2, 0), 2);
    cr_assert_eq(send(sv[0], "cd", 2, 0), 2);
    recv_rec r = {0};
    r.fd = sv[1];
    r.self = pact_recv(loop, sv[1], r.in, 4, MSG_WAITALL, recv_cb, &r);
    cr_assert_gt(r.self, 0);
    run_until_answered(loop, &r, "a datagram");
    expect_bytes(&r, "ab", "the first datagram");
    char left[8];
    cr_assert_eq(recv(sv[1], left, sizeof left, MSG_DONTWAIT), 2, "the second datagram");
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}
