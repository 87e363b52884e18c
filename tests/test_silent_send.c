/* SPDX-License-Identifier: MIT */
/* A reply written from a data callback joins the loop's next submission
 * on io_uring; when it sends everything it completes without a
 * completion of its own (engine_uring.c, silent sends), so it costs no
 * wait of its own. These tests hold on every engine: what a reply
 * costs is counted through the wait hooks, and the bytes, short sends
 * and writes queued behind such a send are checked end to end. */
#include <poll.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helpers.h"
#include "kernel_features.h"

/* Counts the send(2) and sendmsg(2) calls the calling thread makes while
 * sends_counting is set: a transport's write that goes to the kernel at
 * once (stream.c, the eager send), not a send that joins an io_uring
 * submission. Defined in the test executable, these take the place of
 * libc's for the whole process (the library is linked in statically),
 * as tests/alloc_counter.h does for the allocator; they make the system
 * call themselves. */
static __thread int sends_counting;
static __thread unsigned long sends_counted;

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    if (sends_counting)
        sends_counted++;
    return syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}

ssize_t sendmsg(int fd, const struct msghdr *mh, int flags)
{
    if (sends_counting)
        sends_counted++;
    return syscall(SYS_sendmsg, fd, mh, flags);
}

typedef struct {
    int before, after, blocking;
    int64_t first_timeout; /* of the first wait since reset */
    int data_calls;
    size_t received;
    int lost;
} counts;

static void count_before(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    counts *c = user;
    if (c->before == 0)
        c->first_timeout = timeout_ns;
    c->before++;
    if (timeout_ns != 0)
        c->blocking++;
}

static void count_after(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    (void)timeout_ns;
    counts *c = user;
    c->after++;
}

/* Replies copy (pact_transport_write) unless zero_copy is set: then
 * they are sent from the loop's receive buffer (write_received). */
static int zero_copy;

static void echo_data(pact_transport *t, const void *data, size_t len, void *user)
{
    counts *c = user;
    c->data_calls++;
    c->received += len;
    cr_assert_eq(zero_copy ? pact_transport_write_received(t, data, len)
                           : pact_transport_write(t, data, len), 0);
}

static void echo_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    counts *c = user;
    c->lost++;
}

static const pact_protocol echo_proto = {
    .data_received = echo_data,
    .connection_lost = echo_lost,
};

/* A movable loop, as pact.asyncio makes, on the engine PACT_ENGINE
 * names: on io_uring's fast ring its streams send through their send
 * slots until it changes threads (never, here), as a pinned loop's do;
 * where it starts on the plain ring, with ops. With `pinned` set (the
 * tests of loops that keep their thread) a loop that does. Slot sends go
 * silently as ops do, and so does a small zero-copy reply (sent from the
 * loop's receive buffer, which its completion gives back); the tests
 * check what holds either way too: the bytes, short sends, writes queued
 * behind, a CQ overflow. */
static int pinned;

static pact_loop *movable_loop_new(void)
{
    return test_loop_new_movable(!pinned);
}

/* Whether replies go without a completion here: io_uring with
 * DEFER_TASKRUN (Linux 6.1), which a movable loop keeps only where the
 * kernel's ring teardown skips waiting receives (Linux 6.17, 6.16.9,
 * 6.12.49; engine_uring.c, ring_teardown_skips_waiting_io), unless a
 * test mask hides one of them. */
static int silent_sends_expected(pact_loop *loop)
{
    if (pact_loop_engine(loop) != PACT_ENGINE_URING)
        return 0;
    if (uring_feature_masked("silent") || uring_feature_masked("setup") ||
        (!pinned && uring_feature_masked("teardown")))
        return 0;
    if (pinned)
        return kernel_at_least(6, 1);
    return kernel_ring_teardown_skips_waiting_io();
}

static void read_exactly(int fd, char *out, size_t want)
{
    size_t got = 0;
    while (got < want) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 10000), 1, "the reply did not come");
        ssize_t n = recv(fd, out + got, want - got, 0);
        cr_assert_gt(n, 0);
        got += (size_t)n;
    }
}

/* The request/reply pattern of a protocol server driven one iteration
 * at a time (pact.asyncio): each request is delivered by one blocking
 * wait, and the reply's send adds no wait of its own — on epoll it is
 * sent at once, on io_uring without a completion. */
static void echo_reply_costs_no_wait_of_its_own(void)
{
    pact_loop *loop = movable_loop_new();
    counts c = {0};
    cr_assert_eq(pact_loop_set_wait_hooks(loop, count_before, count_after, &c), 0);
    int a, b;
    make_tcp_pair(&b, &a);
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &echo_proto,
                                     &c, &t), 0);
    fcntl(b, F_SETFL, 0); /* the client blocks */
    enum { REQUESTS = 50, SIZE = 1024 };
    char req[SIZE], rep[SIZE];
    int waits_per_request[REQUESTS];
    for (int i = 0; i < REQUESTS; i++) {
        memset(req, 'a' + i % 26, sizeof req);
        cr_assert_eq(send(b, req, sizeof req, 0), (ssize_t)sizeof req);
        c.before = c.after = c.blocking = 0;
        size_t want = c.received + SIZE;
        for (int turns = 0; c.received < want; turns++) {
            cr_assert_lt(turns, 100, "request %d was not delivered", i);
            cr_assert_geq(pact_loop_run_once(loop, 5000000000ll), 0);
        }
        read_exactly(b, rep, sizeof rep);
        cr_assert_eq(memcmp(req, rep, sizeof rep), 0, "reply %d differs", i);
        cr_assert_eq(c.before, c.after);
        waits_per_request[i] = c.before;
    }
    /* The first requests may still set up (write state, buffers; on a
     * pinned loop on io_uring the socket's fixed-file slot, filled by
     * an update whose completion ends a wait, with the third request). */
    int expect_one = pact_loop_engine(loop) != PACT_ENGINE_URING ||
                     silent_sends_expected(loop);
    for (int i = 4; i < REQUESTS; i++) {
        if (expect_one)
            cr_assert_eq(waits_per_request[i], 1,
                         "request %d took %d waits (the reply's completion "
                         "ended one of its own?)", i, waits_per_request[i]);
        else /* the reply's completion ends the next wait */
            cr_assert_leq(waits_per_request[i], 2, "request %d took %d waits",
                          i, waits_per_request[i]);
    }
    cr_assert_eq(c.lost, 0);
    pact_transport_close(t);
    pact_loop_run(loop);
    cr_assert_eq(c.lost, 1);
    close(b);
    test_loop_free(loop);
}

/* A write made after the iteration whose reply went silently (nothing
 * was behind it then) queues behind that send; the next wait must not
 * block, or the queued bytes would wait for whatever comes next. The
 * first wait of the next iteration polls (the hooks see timeout 0
 * although the run allows 10 s), and the bytes arrive in order. */
static void write_behind_a_silent_send_does_not_wait(void)
{
    pact_loop *loop = movable_loop_new();
    counts c = {0};
    cr_assert_eq(pact_loop_set_wait_hooks(loop, count_before, count_after, &c), 0);
    int a, b;
    make_tcp_pair(&b, &a);
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &echo_proto,
                                     &c, &t), 0);
    fcntl(b, F_SETFL, 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(send(b, "ping", 4, 0), 4);
        size_t want = c.received + 4;
        for (int turns = 0; c.received < want; turns++) {
            cr_assert_lt(turns, 100);
            cr_assert_geq(pact_loop_run_once(loop, 5000000000ll), 0);
        }
        /* Outside any callback: queued behind the reply's send if that
         * one has not completed for the stream yet. */
        cr_assert_eq(pact_transport_write(t, "more", 4), 0);
        c.before = c.after = 0;
        c.first_timeout = -2;
        char got[8];
        for (int turns = 0; turns < 3 && pact_transport_write_buffer_size(t) > 0;
             turns++)
            cr_assert_geq(pact_loop_run_once(loop, 10000000000ll), 0);
        /* Elsewhere the send's own completion ends that wait. */
        if (silent_sends_expected(loop))
            cr_assert_eq(c.first_timeout, 0,
                         "the wait blocked (timeout %lld ns) with a write "
                         "queued behind a finished send",
                         (long long)c.first_timeout);
        cr_assert_eq(pact_transport_write_buffer_size(t), 0);
        read_exactly(b, got, 8);
        cr_assert_eq(memcmp(got, "pingmore", 8), 0);
    }
    pact_transport_close(t);
    pact_loop_run(loop);
    close(b);
    test_loop_free(loop);
}

/* The after-wait hook runs the binding's callbacks that were ready
 * before the wait (pact.asyncio's handles), ahead of the completions the
 * wait found, a silent send's among them: a write made there, to the
 * transport whose reply went silently, queues behind that send, which is
 * in flight for the stream until its completion has run. The reply goes
 * once, then the write (a send slot handed over too early went again,
 * its bytes twice, and the stream's count of them went wrong). */
typedef struct {
    counts c; /* first: echo_proto's user */
    pact_transport *t;
    int write_in_hook;
} hook_writer;

static void write_in_after_hook(pact_loop *loop, int64_t timeout_ns, void *user)
{
    count_after(loop, timeout_ns, user);
    hook_writer *hw = user;
    if (hw->write_in_hook) {
        hw->write_in_hook = 0;
        cr_assert_eq(pact_transport_write(hw->t, "more", 4), 0);
    }
}

static void write_in_the_hook_behind_a_silent_send(void)
{
    pact_loop *loop = movable_loop_new();
    hook_writer hw = {.c = {0}};
    cr_assert_eq(pact_loop_set_wait_hooks(loop, count_before, write_in_after_hook, &hw), 0);
    int a, b;
    make_tcp_pair(&b, &a);
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &echo_proto,
                                     &hw.c, &hw.t), 0);
    fcntl(b, F_SETFL, 0);
    for (int i = 0; i < 5; i++) {
        char req[4] = {'p', 'i', 'n', (char)('0' + i)};
        cr_assert_eq(send(b, req, 4, 0), 4);
        size_t want = hw.c.received + 4;
        for (int turns = 0; hw.c.received < want; turns++) {
            cr_assert_lt(turns, 100);
            cr_assert_geq(pact_loop_run_once(loop, 5000000000ll), 0);
        }
        /* The reply's send went with the run's end: its completion is
         * the next wait's to hand over, after the hook's write. */
        hw.write_in_hook = 1;
        for (int turns = 0; turns < 3; turns++)
            cr_assert_geq(pact_loop_run_once(loop, 0), 0);
        cr_assert_eq(hw.write_in_hook, 0);
        cr_assert_eq(pact_transport_write_buffer_size(hw.t), 0);
        char got[8];
        read_exactly(b, got, 8);
        cr_assert_eq(memcmp(got, req, 4), 0, "request %d: %.8s", i, got);
        cr_assert_eq(memcmp(got + 4, "more", 4), 0, "request %d: %.8s", i, got);
        struct pollfd p = {.fd = b, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 0), 0, "request %d: more than the reply and the write came", i);
    }
    pact_transport_close(hw.t);
    pact_loop_run(loop);
    cr_assert_eq(hw.c.lost, 1);
    close(b);
    test_loop_free(loop);
}

/* Fills the kernel's buffers from a towards its peer (raw sends on the
 * transport's fd, which the stream does not see); returns the bytes. */
static size_t fill_socket(int a)
{
    return send_zeros_until_full(a, 512);
}

/* The peer's side of a reply that meets a full socket, read from a timer
 * of the running loop (reply_meets_a_full_socket, in_a_run) once a wait
 * has submitted the reply, until every byte has come and the stream has
 * seen its sends complete. */
typedef struct {
    counts *c;
    pact_transport *t;
    int b;
    char *sink;
    size_t have, want;
    size_t replied_at; /* c->received once the request arrived */
    int marked, mark; /* c->after when the request had arrived */
    int ticks;
    pact_handle timer;
} reader_tick;

static void read_after_the_reply_went(pact_loop *loop, void *user)
{
    reader_tick *r = user;
    cr_assert_lt(++r->ticks, 10000, "stopped at %zu of %zu", r->have, r->want);
    if (!r->marked) {
        if (r->c->received < r->replied_at)
            return;
        r->marked = 1;
        r->mark = r->c->after;
        return;
    }
    if (r->c->after == r->mark)
        return; /* no wait has submitted the reply yet */
    for (;;) {
        ssize_t n = recv(r->b, r->sink + r->have, r->want - r->have, MSG_DONTWAIT);
        if (n <= 0)
            break;
        r->have += (size_t)n;
    }
    if (r->have == r->want && pact_transport_write_buffer_size(r->t) == 0) {
        pact_handle_cancel(loop, r->timer);
        pact_loop_stop(loop);
    }
}

/* A reply that meets a full socket (room_before_reply 0: the send takes
 * nothing) or a nearly full one (the peer read some: the send may take
 * part) goes out when there is room, whole and after what was queued
 * before: a silent send that did not send everything completes with what
 * it sent, and the rest waits for room as any short send's.
 *
 * Driven by pact_loop_run_once, the reply goes with the submission
 * pact_loop_flush makes when the run returns, and the next wait hands
 * its completion over. in_a_run: with the loop running (pact_loop_run),
 * where it goes with the next wait's own system call, which hands it
 * over at once (engine_uring.c, silent_settle). */
static void reply_meets_a_full_socket(size_t room_before_reply, int in_a_run)
{
    pact_loop *loop = movable_loop_new();
    counts c = {0};
    if (in_a_run) /* the waits, for read_after_the_reply_went */
        cr_assert_eq(pact_loop_set_wait_hooks(loop, count_before, count_after, &c), 0);
    /* A Unix socket pair: its buffers stay as set (TCP's grow). */
    int sv[2];
    make_socketpair(sv);
    int a = sv[0], b = sv[1];
    /* The kernel's least (4608 B): a 3000-byte reply goes in two
     * pieces of about 2240, so a little room takes only the first. */
    int small = 2048;
    cr_assert_eq(setsockopt(a, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &echo_proto,
                                     &c, &t), 0);
    enum { SIZE = 3000 };
    char req[SIZE], rep[SIZE];
    for (int round = 0; round < 4; round++) {
        /* An echo first: the stream's write state goes back idle. */
        cr_assert_eq(send(b, "x", 1, 0), 1);
        size_t want = c.received + 1;
        for (int turns = 0; c.received < want; turns++) {
            cr_assert_lt(turns, 100);
            pact_loop_run_once(loop, 1000000000ll);
        }
        fcntl(b, F_SETFL, 0);
        read_exactly(b, rep, 1);
        fcntl(b, F_SETFL, O_NONBLOCK);

        size_t filled = fill_socket(a);
        reader_tick r = {.c = &c, .t = t, .b = b, .want = filled + SIZE,
                         .replied_at = c.received + SIZE};
        r.sink = malloc(r.want);
        while (r.have < room_before_reply) {
            ssize_t n = recv(b, r.sink + r.have, room_before_reply - r.have, 0);
            if (n > 0)
                r.have += (size_t)n;
        }
        memset(req, 'a' + round, sizeof req);
        cr_assert_eq(send(b, req, sizeof req, 0), (ssize_t)sizeof req);
        if (in_a_run) {
            r.timer = pact_call_every(loop, 1000000, read_after_the_reply_went, &r);
            cr_assert_gt(r.timer, 0);
            cr_assert_eq(pact_loop_run(loop), 0);
        } else {
            for (int turns = 0; c.received < r.replied_at; turns++) {
                cr_assert_lt(turns, 100);
                pact_loop_run_once(loop, 1000000000ll);
            }
            /* Everything: the filler, then the reply. */
            for (int turns = 0; r.have < r.want; turns++) {
                cr_assert_lt(turns, 100000, "stopped at %zu of %zu", r.have, r.want);
                ssize_t n = recv(b, r.sink + r.have, r.want - r.have, 0);
                if (n > 0)
                    r.have += (size_t)n;
                pact_loop_run_once(loop, n > 0 ? 0 : 1000000);
            }
        }
        cr_assert_eq(r.have, r.want);
        cr_assert_eq(memcmp(r.sink + filled, req, SIZE), 0, "round %d", round);
        free(r.sink);
        cr_assert_eq(pact_transport_write_buffer_size(t), 0);
    }
    cr_assert_eq(c.lost, 0);
    pact_transport_close(t);
    pact_loop_run(loop);
    cr_assert_eq(c.lost, 1);
    close(b);
    test_loop_free(loop);
}

Test(silent_send, a_reply_that_meets_a_full_socket_is_sent_when_there_is_room)
{
    reply_meets_a_full_socket(0, 0);
}

Test(silent_send, a_reply_that_meets_a_full_socket_in_a_run_is_sent_when_there_is_room)
{
    reply_meets_a_full_socket(0, 1);
}

Test(silent_send, pinned_a_reply_that_meets_a_full_socket_in_a_run_is_sent_when_there_is_room)
{
    pinned = 1;
    reply_meets_a_full_socket(0, 1);
}

Test(silent_send, pinned_a_zero_copy_reply_that_meets_a_nearly_full_socket_in_a_run_is_sent_whole)
{
    pinned = 1;
    zero_copy = 1;
    reply_meets_a_full_socket(1024, 1);
}

Test(silent_send, a_reply_that_meets_a_nearly_full_socket_is_sent_whole)
{
    reply_meets_a_full_socket(1024, 0);
}

/* A batch of completions whose callbacks reply more often than one
 * submission takes joined sends (every keep-alive client of a server
 * answered in one iteration): on io_uring, on a loop that keeps its
 * thread, the joined sends go with a submission of their own before the
 * rest of the batch replies, and each of those replies joins a
 * submission too, none is sent by a system call of its own
 * (engine_uring.c, submit_joined_sends; where replies go silently, see
 * silent_sends_expected); on epoll each reply is sent at once, as every
 * write with nothing queued is. Either way every reply
 * arrives whole. The same with zero-copy replies (write_received), which
 * count with the joined sends. */
static void burst_of_replies_sends_no_reply_alone(int zc)
{
    enum { CONNS = 200, SIZE = 16 };
    zero_copy = zc;
    pinned = 1; /* a loop that keeps its thread: its streams have send slots */
    pact_loop *loop = test_loop_new();
    counts c = {0};
    int clients[CONNS];
    pact_transport *ts[CONNS];
    for (int i = 0; i < CONNS; i++) {
        int a;
        make_tcp_pair(&clients[i], &a);
        cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &echo_proto,
                                         &c, &ts[i]), 0);
    }
    /* Every request is in its socket before the loop first waits: that
     * wait finds them all. */
    for (int i = 0; i < CONNS; i++) {
        char req[SIZE];
        snprintf(req, sizeof req, "request %7d", i);
        cr_assert_eq(write(clients[i], req, SIZE), SIZE);
    }
    sends_counting = 1;
    sends_counted = 0;
    for (int turns = 0; c.received < (size_t)CONNS * SIZE && turns < 1000; turns++)
        cr_assert_geq(pact_loop_run_once(loop, 1000000000), 0);
    sends_counting = 0;
    cr_assert_eq(c.received, (size_t)CONNS * SIZE);
    if (pact_loop_engine(loop) != PACT_ENGINE_URING)
        cr_assert_eq(sends_counted, CONNS, "%lu send calls for %d replies",
                     sends_counted, CONNS);
    else if (silent_sends_expected(loop))
        cr_assert_eq(sends_counted, 0, "%lu of %d replies sent alone",
                     sends_counted, CONNS);
    /* else (no silent sends: a kernel before 6.1, or a test mask) the
     * joined sends hold their write state until their completions are
     * reaped, and the rest of the burst is sent at once, as before. */
    for (int i = 0; i < CONNS; i++) {
        char want[SIZE], got[SIZE];
        snprintf(want, sizeof want, "request %7d", i);
        read_exactly(clients[i], got, SIZE);
        cr_assert_eq(memcmp(got, want, SIZE), 0, "reply %d", i);
    }
    for (int i = 0; i < CONNS; i++) {
        cr_assert_eq(pact_transport_close(ts[i]), 0);
        close(clients[i]);
    }
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(c.lost, CONNS);
    test_loop_free(loop);
}

Test(silent_send, a_burst_of_replies_larger_than_a_submission_sends_no_reply_alone)
{
    burst_of_replies_sends_no_reply_alone(0);
}

Test(silent_send, a_burst_of_zero_copy_replies_larger_than_a_submission_sends_no_reply_alone)
{
    burst_of_replies_sends_no_reply_alone(1);
}

/* The last reply of a transport whose peer has ended its side (its data
 * and its EOF arrive together; eof_received keeps the transport open):
 * the reply's send is all that keeps the loop alive, and pact_loop_run()
 * returns once it is done — the wait that would hand over its completion
 * must not block, as nothing else could end it. */
static int keep_open_at_eof(pact_transport *t, void *user)
{
    (void)t;
    (void)user;
    return 1;
}

static const pact_protocol last_reply_proto = {
    .data_received = echo_data,
    .eof_received = keep_open_at_eof,
    .connection_lost = echo_lost,
};

static void run_kept_alive_only_by_a_silent_send_returns(void)
{
    pact_loop *loop = movable_loop_new();
    counts c = {0};
    int a, b;
    make_tcp_pair(&b, &a);
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET,
                                     &last_reply_proto, &c, &t), 0);
    cr_assert_eq(send(b, "last", 4, 0), 4);
    cr_assert_eq(shutdown(b, SHUT_WR), 0);
    cr_assert_eq(pact_loop_run(loop), 0); /* returns: nothing left to do */
    cr_assert_eq(c.data_calls, 1);
    char got[4];
    fcntl(b, F_SETFL, 0);
    read_exactly(b, got, 4);
    cr_assert_eq(memcmp(got, "last", 4), 0);
    cr_assert_eq(pact_transport_write_buffer_size(t), 0);
    pact_transport_close(t);
    pact_loop_run(loop);
    cr_assert_eq(c.lost, 1);
    close(b);
    test_loop_free(loop);
}

/* ---- the completion queue overflows -------------------------------------
 * After a CQ overflow, whether a silent send sent everything is unknown
 * until a later wait: its failure completion (a short send) may wait in
 * the kernel's overflow list. A tiny ring (SQ 2, CQ 8) and many
 * connections whose requests arrive in one wait make the CQ overflow at
 * every burst; replies to half of them meet a nearly full socket and go
 * short. Every reply must still arrive whole, once, after what was
 * queued before it, and nothing may be left over or reported stray.
 * (A short send's failure completion reaped while the send was still
 * unknown once left it listed, and its slab entry, reused by the rest's
 * send, was then taken for a send that had sent everything.) */

/* A movable loop (as movable_loop_new; with `pinned`, one that keeps its
 * thread) with an SQ of 2 and a CQ of 8 on io_uring. */
static pact_loop *tiny_movable_loop_new(void)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.movable = !pinned;
    o.queue_depth = 2;
    return test_loop_create_with(&o);
}

enum { OVERFLOW_CONNS = 24, OVERFLOW_REPLY = 3000, OVERFLOW_ROUNDS = 6 };

typedef struct {
    int a, b;       /* the transport's socket, the client's */
    counts c;
    pact_transport *t;
    char *sink;     /* what the client read this round */
    size_t have, want, filled;
} overflow_conn;

static unsigned char overflow_byte(int conn, int round, size_t i)
{
    return (unsigned char)('A' + (conn * 7 + round * 3 + (int)(i % 23)) % 58);
}

static void short_replies_around_a_cq_overflow(void)
{
    pact_loop *loop = tiny_movable_loop_new();
    overflow_conn *cs = calloc(OVERFLOW_CONNS, sizeof *cs);
    cr_assert_not_null(cs);
    for (int i = 0; i < OVERFLOW_CONNS; i++) {
        int sv[2];
        make_socketpair(sv);
        cs[i].a = sv[0];
        cs[i].b = sv[1];
        int small = 2048; /* as reply_meets_a_full_socket */
        cr_assert_eq(setsockopt(cs[i].a, SOL_SOCKET, SO_SNDBUF, &small,
                                sizeof small), 0);
        cr_assert_eq(pact_transport_open(loop, cs[i].a, PACT_STREAM_SOCKET,
                                         &echo_proto, &cs[i].c, &cs[i].t), 0);
    }
    char req[OVERFLOW_REPLY];
    for (int round = 0; round < OVERFLOW_ROUNDS; round++) {
        /* Half the sockets nearly full (the reply goes short), the
         * others empty (it goes whole, silently). */
        for (int i = 0; i < OVERFLOW_CONNS; i++) {
            overflow_conn *k = &cs[i];
            k->filled = (i + round) % 2 ? fill_socket(k->a) : 0;
            k->sink = malloc(k->filled + OVERFLOW_REPLY);
            cr_assert_not_null(k->sink);
            k->have = 0;
            k->want = k->filled + OVERFLOW_REPLY;
            while (k->filled && k->have < 1024) {
                ssize_t n = recv(k->b, k->sink + k->have, 1024 - k->have,
                                 MSG_DONTWAIT);
                if (n > 0)
                    k->have += (size_t)n;
            }
        }
        /* Every request at once: their receives complete together. */
        for (int i = 0; i < OVERFLOW_CONNS; i++) {
            for (size_t j = 0; j < sizeof req; j++)
                req[j] = (char)overflow_byte(i, round, j);
            cr_assert_eq(send(cs[i].b, req, sizeof req, MSG_DONTWAIT),
                         (ssize_t)sizeof req);
        }
        /* Every request delivered (and so every reply written) before
         * the clients read: the nearly full sockets stay so. */
        for (int turns = 0;; turns++) {
            int all = 1;
            for (int i = 0; i < OVERFLOW_CONNS; i++)
                all &= cs[i].c.received == (size_t)OVERFLOW_REPLY * (round + 1);
            if (all)
                break;
            cr_assert_lt(turns, 10000, "round %d: requests stopped", round);
            cr_assert_geq(pact_loop_run_once(loop, 1000000), 0);
        }
        /* The clients read while the loop runs, until every reply is in. */
        for (int turns = 0;; turns++) {
            int done = 1, progress = 0;
            for (int i = 0; i < OVERFLOW_CONNS; i++) {
                overflow_conn *k = &cs[i];
                if (k->have < k->want) {
                    ssize_t n = recv(k->b, k->sink + k->have,
                                     k->want - k->have, MSG_DONTWAIT);
                    if (n > 0) {
                        k->have += (size_t)n;
                        progress = 1;
                    }
                }
                done &= k->have == k->want;
            }
            if (done)
                break;
            cr_assert_lt(turns, 200000, "round %d: replies stopped", round);
            cr_assert_geq(pact_loop_run_once(loop, progress ? 0 : 1000000), 0);
        }
        for (int i = 0; i < OVERFLOW_CONNS; i++) {
            overflow_conn *k = &cs[i];
            for (size_t j = 0; j < OVERFLOW_REPLY; j++)
                cr_assert_eq((unsigned char)k->sink[k->filled + j],
                             overflow_byte(i, round, j),
                             "round %d conn %d: byte %zu of the reply differs",
                             round, i, j);
            char extra;
            cr_assert_eq(recv(k->b, &extra, 1, MSG_DONTWAIT), -1,
                         "round %d conn %d: more than the reply came", round, i);
            free(k->sink);
            k->sink = NULL;
        }
        for (int turns = 0; turns < 100; turns++) {
            int idle = 1;
            for (int i = 0; i < OVERFLOW_CONNS; i++)
                idle &= pact_transport_write_buffer_size(cs[i].t) == 0;
            if (idle)
                break;
            pact_loop_run_once(loop, 1000000);
        }
    }
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    if (pact_loop_engine(loop) == PACT_ENGINE_URING)
        cr_assert_gt(st.cq_overflows, 0, "the CQ never overflowed");
    cr_assert_eq(st.stray_completions, 0);
    for (int i = 0; i < OVERFLOW_CONNS; i++) {
        cr_assert_eq(cs[i].c.received, (size_t)OVERFLOW_REPLY * OVERFLOW_ROUNDS);
        cr_assert_eq(cs[i].c.lost, 0);
        pact_transport_close(cs[i].t);
    }
    pact_loop_run(loop);
    for (int i = 0; i < OVERFLOW_CONNS; i++) {
        cr_assert_eq(cs[i].c.lost, 1);
        close(cs[i].b);
    }
    free(cs);
    test_loop_free(loop);
}

Test(silent_send, short_replies_around_a_cq_overflow_arrive_whole_and_once,
     .timeout = 60)
{
    short_replies_around_a_cq_overflow();
}

Test(silent_send, an_echo_reply_costs_no_wait_of_its_own)
{
    echo_reply_costs_no_wait_of_its_own();
}

Test(silent_send, a_write_behind_a_silent_send_does_not_wait_for_the_next_event)
{
    write_behind_a_silent_send_does_not_wait();
}

Test(silent_send, a_run_kept_alive_only_by_a_silent_send_returns, .timeout = 30)
{
    run_kept_alive_only_by_a_silent_send_returns();
}

/* ---- loops that keep their thread --------------------------------------
 * Their streams send through the stream's send slot (op.h), not an op,
 * and the echo through pact_transport_write_received from the loop's
 * receive buffer (zero_copy): the same replies, short sends and CQ
 * overflows, by that path. */

Test(silent_send, pinned_an_echo_reply_costs_no_wait_of_its_own)
{
    pinned = 1;
    echo_reply_costs_no_wait_of_its_own();
}

/* The zero-copy echo (the reply sent from the loop's receive buffer). */
Test(silent_send, pinned_a_zero_copy_echo_reply_costs_no_wait_of_its_own)
{
    pinned = 1;
    zero_copy = 1;
    echo_reply_costs_no_wait_of_its_own();
}

Test(silent_send, pinned_a_write_behind_a_silent_send_does_not_wait_for_the_next_event)
{
    pinned = 1;
    write_behind_a_silent_send_does_not_wait();
}

Test(silent_send, pinned_a_zero_copy_write_behind_a_silent_send_does_not_wait)
{
    pinned = 1;
    zero_copy = 1;
    write_behind_a_silent_send_does_not_wait();
}

Test(silent_send, a_write_in_the_after_wait_hook_queues_behind_a_silent_send)
{
    write_in_the_hook_behind_a_silent_send();
}

Test(silent_send, pinned_a_write_in_the_after_wait_hook_queues_behind_a_silent_send)
{
    pinned = 1;
    write_in_the_hook_behind_a_silent_send();
}

Test(silent_send, pinned_a_reply_that_meets_a_full_socket_is_sent_when_there_is_room)
{
    pinned = 1;
    reply_meets_a_full_socket(0, 0);
}

Test(silent_send, pinned_a_zero_copy_reply_that_meets_a_nearly_full_socket_is_sent_whole)
{
    pinned = 1;
    zero_copy = 1;
    reply_meets_a_full_socket(1024, 0);
}

Test(silent_send, pinned_a_run_kept_alive_only_by_a_silent_send_returns, .timeout = 30)
{
    pinned = 1;
    run_kept_alive_only_by_a_silent_send_returns();
}

Test(silent_send, pinned_short_replies_around_a_cq_overflow_arrive_whole_and_once,
     .timeout = 60)
{
    pinned = 1;
    short_replies_around_a_cq_overflow();
}

Test(silent_send, pinned_short_zero_copy_replies_around_a_cq_overflow_arrive_whole_and_once,
     .timeout = 60)
{
    pinned = 1;
    zero_copy = 1;
    short_replies_around_a_cq_overflow();
}

/* A reply joined to the next submission that is, once its iteration
 * ends, the only thing keeping the loop alive: written to a transport
 * that does not read (paused) from the callback of a one-shot receive,
 * which ends with that callback. The wait that submits the reply must
 * not block — its send completes without a completion on io_uring, and
 * nothing else could end the wait — so the run returns once the reply
 * is out. `again`: the loop driven by pact_loop_run_once_flags() with
 * PACT_RUN_AGAIN, which leaves the reply in the submission queue for
 * the next run's wait, instead of pact_loop_run(). */
typedef struct {
    pact_transport *t;
    char buf[16];
    int calls;
} forward_ctx;

static void forward_received(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    forward_ctx *f = user;
    f->calls++;
    cr_assert_eq(c->result, 4);
    cr_assert_eq(pact_transport_write(f->t, f->buf, 4), 0);
}

static void reply_alone_keeps_the_loop_alive(int again)
{
    pact_loop *loop = movable_loop_new();
    counts c = {0};
    int in_client, in_server, out_client, out_server;
    make_tcp_pair(&in_client, &in_server);
    make_tcp_pair(&out_client, &out_server);
    forward_ctx f = {0};
    cr_assert_eq(pact_transport_open(loop, out_server, PACT_STREAM_SOCKET,
                                     &echo_proto, &c, &f.t), 0);
    cr_assert_eq(pact_transport_pause_reading(f.t), 0);
    cr_assert_eq(pact_loop_run(loop), 0); /* the cancelled read ends */
    for (int round = 0; round < 3; round++) {
        cr_assert_gt(pact_recv(loop, in_server, f.buf, sizeof f.buf, 0,
                               forward_received, &f), 0);
        cr_assert_eq(send(in_client, "next", 4, 0), 4);
        if (again) {
            int turns = 0, r;
            while ((r = pact_loop_run_once_flags(loop, -1, PACT_RUN_AGAIN)) > 0)
                cr_assert_lt(++turns, 100);
            cr_assert_eq(r, 0);
        } else {
            cr_assert_eq(pact_loop_run(loop), 0);
        }
        cr_assert_eq(f.calls, round + 1);
        char got[4];
        fcntl(out_client, F_SETFL, 0);
        read_exactly(out_client, got, 4);
        cr_assert_eq(memcmp(got, "next", 4), 0);
        cr_assert_eq(pact_transport_write_buffer_size(f.t), 0);
    }
    pact_transport_close(f.t);
    pact_loop_run(loop);
    cr_assert_eq(c.lost, 1);
    close(in_client);
    close(in_server);
    close(out_client);
    test_loop_free(loop);
}

Test(silent_send, a_reply_that_alone_keeps_the_loop_alive_does_not_block_the_run,
     .timeout = 30)
{
    reply_alone_keeps_the_loop_alive(0);
}

Test(silent_send, a_reply_that_alone_keeps_the_loop_alive_does_not_block_run_again,
     .timeout = 30)
{
    reply_alone_keeps_the_loop_alive(1);
}

/* ---- runs that run again at once (PACT_RUN_AGAIN) ---------------------- */

static uint64_t enters(pact_loop *loop)
{
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    return st.syscalls_enter;
}

/* The protocol echo driven one run at a time, as pact.asyncio drives it:
 * with PACT_RUN_AGAIN the reply a run's data callback wrote is handed to
 * the kernel by the next run's wait, so a request costs no system call
 * but its waits (on io_uring one io_uring_enter that submits the reply
 * and waits for the next request; on epoll the reply was sent at once).
 * A run without the flag hands the reply over when it returns: a system
 * call of its own. Both loops: their replies go silently (one wait per
 * request), through send slots. */
static void echo_run_again(int movable)
{
    pinned = !movable;
    pact_loop *loop = test_loop_new_movable(movable);
    counts c = {0};
    cr_assert_eq(pact_loop_set_wait_hooks(loop, count_before, count_after, &c), 0);
    int a, b;
    make_tcp_pair(&b, &a);
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &echo_proto,
                                     &c, &t), 0);
    fcntl(b, F_SETFL, 0);
    enum { REQUESTS = 50, SIZE = 1024 };
    char req[REQUESTS][SIZE], rep[SIZE];
    for (int i = 0; i < REQUESTS; i++) {
        memset(req[i], 'a' + i % 26, SIZE);
        cr_assert_eq(send(b, req[i], SIZE, 0), (ssize_t)SIZE);
        c.before = 0;
        uint64_t enters_before = enters(loop);
        size_t want = c.received + SIZE;
        for (int turns = 0; c.received < want; turns++) {
            cr_assert_lt(turns, 100, "request %d was not delivered", i);
            cr_assert_geq(pact_loop_run_once_flags(loop, 5000000000ll,
                                                   PACT_RUN_AGAIN), 0);
        }
        uint64_t used = enters(loop) - enters_before;
        /* Every system call of the engine was a wait: none of its own
         * for the previous reply (the first wait handed it over). */
        cr_assert_leq(used, (uint64_t)c.before,
                      "request %d: %llu system calls for %d waits", i,
                      (unsigned long long)used, c.before);
        if (i >= 4 && silent_sends_expected(loop))
            cr_assert_eq(used, 1, "request %d: %llu io_uring_enter calls", i,
                         (unsigned long long)used);
        if (i > 0) {
            read_exactly(b, rep, SIZE);
            cr_assert_eq(memcmp(req[i - 1], rep, SIZE), 0, "reply %d", i - 1);
        }
    }
    /* The last reply: the next run would hand it over; this caller
     * stops, and pact_loop_flush() does it, without running the loop. */
    if (movable && pact_loop_engine(loop) == PACT_ENGINE_URING) {
        struct pollfd p = {.fd = b, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 50), 0, "the reply went out when the run "
                                         "returned");
    }
    cr_assert_eq(pact_loop_flush(loop), 0);
    read_exactly(b, rep, SIZE);
    cr_assert_eq(memcmp(req[REQUESTS - 1], rep, SIZE), 0);
    cr_assert_eq(c.lost, 0);
    pact_transport_close(t);
    pact_loop_run(loop);
    cr_assert_eq(c.lost, 1);
    close(b);
    test_loop_free(loop);
}

Test(silent_send, a_run_again_leaves_the_reply_to_the_next_wait_movable_loop)
{
    echo_run_again(1);
}

Test(silent_send, a_run_again_leaves_the_reply_to_the_next_wait_pinned_loop)
{
    echo_run_again(0);
}

/* pact_loop_run() runs again at once by itself: an iteration costs at
 * most one system call of the engine, its wait (the replies of the last
 * one go with it), and the run hands over what is left when it returns.
 * A client and an echo server on one loop exchange requests until the
 * client closes. */
typedef struct {
    int sent, received, lost;
    pact_transport *t;
} ping_client;

static void ping_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)data;
    ping_client *p = user;
    p->received += (int)len;
    if (p->received % 64 != 0)
        return;
    if (p->sent < 200) {
        static const char msg[64] = "ping";
        cr_assert_eq(pact_transport_write(t, msg, sizeof msg), 0);
        p->sent++;
    } else {
        cr_assert_eq(pact_transport_close(t), 0);
    }
}

static void ping_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    ping_client *p = user;
    p->lost++;
}

static const pact_protocol ping_proto = {
    .data_received = ping_data,
    .connection_lost = ping_lost,
};

static void run_costs_one_call_per_iteration(int movable)
{
    pact_loop *loop = test_loop_new_movable(movable);
    counts c = {0};
    ping_client p = {0};
    int a, b;
    make_tcp_pair(&b, &a);
    pact_transport *server, *client;
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &echo_proto,
                                     &c, &server), 0);
    cr_assert_eq(pact_transport_open(loop, b, PACT_STREAM_SOCKET, &ping_proto,
                                     &p, &client), 0);
    static const char first[64] = "ping";
    cr_assert_eq(pact_transport_write(client, first, sizeof first), 0);
    p.sent = 1;
    pact_loop_stats st0, st1;
    cr_assert_eq(pact_loop_get_stats(loop, &st0), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(pact_loop_get_stats(loop, &st1), 0);
    cr_assert_eq(p.received, 200 * 64);
    cr_assert_eq(p.lost, 1);
    cr_assert_eq(c.lost, 1);
    uint64_t iterations = st1.iterations - st0.iterations;
    uint64_t calls = st1.syscalls_enter - st0.syscalls_enter;
    cr_assert_geq(iterations, 100);
    /* One hand-over when the run returns, at most. */
    cr_assert_leq(calls, iterations + 1, "%llu system calls in %llu iterations",
                  (unsigned long long)calls, (unsigned long long)iterations);
    test_loop_free(loop);
}

Test(silent_send, pact_loop_run_makes_one_system_call_per_iteration_movable_loop)
{
    run_costs_one_call_per_iteration(1);
}

Test(silent_send, pact_loop_run_makes_one_system_call_per_iteration_pinned_loop)
{
    run_costs_one_call_per_iteration(0);
}

/* A transport closed by a run with PACT_RUN_AGAIN: io_uring closes its
 * socket with the next submission, which pact_loop_flush() makes when
 * the caller does not run the loop again. */
static void close_on_data(pact_transport *t, const void *data, size_t len,
                          void *user)
{
    (void)data;
    counts *c = user;
    c->received += len;
    cr_assert_eq(pact_transport_close(t), 0);
}

static const pact_protocol close_proto = {
    .data_received = close_on_data,
    .connection_lost = echo_lost,
};

Test(silent_send, pact_loop_flush_closes_what_a_run_again_closed)
{
    pact_loop *loop = test_loop_new();
    counts c = {0};
    int a, b;
    make_tcp_pair(&b, &a);
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &close_proto,
                                     &c, &t), 0);
    cr_assert_eq(send(b, "bye", 3, 0), 3);
    for (int turns = 0; c.lost == 0; turns++) {
        cr_assert_lt(turns, 100);
        cr_assert_geq(pact_loop_run_once_flags(loop, 1000000000ll,
                                               PACT_RUN_AGAIN), 0);
    }
    cr_assert_eq(pact_loop_flush(loop), 0);
    /* The loop does not run from here. */
    errno = 0;
    cr_assert_eq(fcntl(a, F_GETFD), -1, "fd %d still open", a);
    cr_assert_eq(errno, EBADF);
    struct pollfd p = {.fd = b, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 2000), 1, "the peer saw no close");
    char ch;
    cr_assert_eq(recv(b, &ch, 1, 0), 0, "the peer did not read EOF");
    close(b);
    test_loop_free(loop);
}

static void flush_from_callback(pact_loop *loop, void *user)
{
    *(int *)user = pact_loop_flush(loop);
}

Test(silent_send, run_once_flags_and_flush_answer_misuse)
{
    pact_loop *loop = test_loop_new();
    cr_assert_eq(pact_loop_run_once_flags(loop, 0, 1u << 7), -EINVAL);
    cr_assert_eq(pact_loop_run_once_flags(NULL, 0, PACT_RUN_AGAIN), -EINVAL);
    cr_assert_eq(pact_loop_flush(NULL), -EINVAL);
    cr_assert_eq(pact_loop_flush(loop), 0); /* nothing held: nothing to do */
    int from_callback = 1;
    cr_assert_gt(pact_call_soon(loop, flush_from_callback, &from_callback), 0);
    cr_assert_eq(pact_loop_run_once_flags(loop, 0, PACT_RUN_AGAIN), 0);
    cr_assert_eq(from_callback, -EBUSY);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(pact_loop_flush(loop), -ESHUTDOWN);
    cr_assert_eq(pact_loop_run_once_flags(loop, 0, 0), -ESHUTDOWN);
    pact_loop_free(loop);
}
