/* SPDX-License-Identifier: MIT */
/* pact_recv_multishot(): many data completions into the loop's buffers,
 * then exactly one final completion. Order, EOF, errors, cancel while data
 * keeps arriving (nothing dropped: every byte is delivered or still in the
 * socket), -ENOBUFS back-pressure with a tiny buffer ring, deadlines and
 * loop close. Runs on both engines; PACT_RECV_MULTISHOT=poll exercises
 * io_uring's poll mode. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "helpers.h"
#include "kernel_features.h"
#include "loop.h" /* pact__recv_buffer_keep: hold a receive buffer */
#include "pattern_writer.h"

TestSuite(multishot, .timeout = 60);

/* ---- a peer that writes a pattern from its own thread --------------------- */

/* Waits for the writer and closes its socket. */
static void writer_join(pattern_writer *w)
{
    pattern_writer_wait(w);
    close(w->fd);
}

/* ---- the reader ------------------------------------------------------------ */

typedef struct reader {
    pact_op op;
    uint64_t received;   /* bytes delivered, checked against the pattern */
    uint64_t mismatches;
    uint64_t chunks;     /* data completions */
    int finals;          /* final completions: must end up exactly 1 */
    int64_t final_result;
    int after_final;     /* data completions after the final: must stay 0 */
    int done;
    /* Cancel from inside the data callback once this many bytes arrived
     * (0 = never). */
    uint64_t cancel_at;
    int cancel_rc;
    int cancelled;
    /* Re-arm on -ENOBUFS (counted) instead of finishing. */
    int rearm_on_enobufs;
    int enobufs;
} reader;

static void on_multi(pact_loop *loop, const pact_completion *c, void *user);

static void reader_arm(pact_loop *loop, int fd, reader *rd)
{
    rd->op = pact_recv_multishot(loop, fd, on_multi, rd);
    cr_assert_gt(rd->op, 0, "pact_recv_multishot: %s",
                 pact_strerror((int)rd->op));
}

static int reader_fd; /* the socket the reader reads (for re-arming) */

static void on_multi(pact_loop *loop, const pact_completion *c, void *user)
{
    reader *rd = user;
    cr_assert_eq(c->op, rd->op, "completion for another op");
    if (c->more) {
        if (rd->finals)
            rd->after_final++;
        cr_assert_gt(c->result, 0, "a data completion without data");
        cr_assert_not_null(c->data);
        const uint8_t *p = c->data;
        for (int64_t i = 0; i < c->result; i++)
            if (p[i] != test_pattern_byte(rd->received + (uint64_t)i))
                rd->mismatches++;
        rd->received += (uint64_t)c->result;
        rd->chunks++;
        if (rd->cancel_at && !rd->cancelled && rd->received >= rd->cancel_at) {
            rd->cancelled = 1;
            rd->cancel_rc = pact_op_cancel(loop, rd->op);
            /* Cancelling twice is harmless. */
            cr_assert_eq(pact_op_cancel(loop, rd->op), -EALREADY);
        }
        return;
    }
    cr_assert_null(c->data);
    if (c->result == -ENOBUFS && rd->rearm_on_enobufs) {
        rd->enobufs++;
        reader_arm(loop, reader_fd, rd);
        return;
    }
    rd->finals++;
    rd->final_result = c->result;
    rd->done = 1;
}

/* Reads what is left in the socket (blocking) after the op ended,
 * continuing the pattern check. */
static void drain_rest(int fd, reader *rd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    uint8_t buf[64 * 1024];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        cr_assert_geq(n, 0, "recv: %s", strerror(errno));
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != test_pattern_byte(rd->received + (uint64_t)i))
                rd->mismatches++;
        rd->received += (uint64_t)n;
    }
}

static pact_loop *loop_with_buffers(unsigned count, unsigned size)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.recv_buffer_count = count;
    o.recv_buffer_size = size;
    return test_loop_create_with(&o);
}

/* ---- tests ----------------------------------------------------------------- */

Test(multishot, mode_is_reported)
{
    pact_loop *loop = test_loop_new();
    const char *mode = pact_loop_recv_multishot_mode(loop);
    cr_assert_not_null(mode);
    if (pact_loop_engine(loop) == PACT_ENGINE_EPOLL)
        cr_assert_str_eq(mode, "epoll");
    else
        cr_assert(strcmp(mode, "multishot") == 0 || strcmp(mode, "poll") == 0,
                  "mode %s", mode);
    cr_log_info("recv multishot mode: %s", mode);
    test_loop_free(loop);
}

Test(multishot, data_in_order_then_eof)
{
    pact_loop *loop = test_loop_new();
    int c, s;
    make_tcp_pair(&c, &s);
    const uint64_t total = 32ull << 20;
    pattern_writer w = {0};
    pattern_writer_start(&w, c, 0, total);
    reader rd = {0};
    reader_fd = s;
    reader_arm(loop, s, &rd);
    run_until(loop, &rd.done, 30000);
    writer_join(&w);
    cr_assert_eq(rd.finals, 1);
    cr_assert_eq(rd.final_result, 0, "final %s", pact_strerror((int)rd.final_result));
    cr_assert_eq(rd.received, total, "received %llu of %llu",
                 (unsigned long long)rd.received, (unsigned long long)total);
    cr_assert_eq(rd.mismatches, 0, "bytes out of order or corrupted");
    cr_assert_gt(rd.chunks, 1, "one op, many completions");
    /* No stray completion afterwards. */
    for (int i = 0; i < 3; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(rd.finals, 1);
    cr_assert_eq(rd.after_final, 0);
    close(s);
    test_loop_free(loop);
}

Test(multishot, eof_and_small_message)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    uint8_t msg[5];
    for (int i = 0; i < 5; i++)
        msg[i] = test_pattern_byte((uint64_t)i);
    cr_assert_eq(write(sv[1], msg, 5), 5);
    close(sv[1]);
    reader rd = {0};
    reader_arm(loop, sv[0], &rd);
    run_until(loop, &rd.done, 5000);
    cr_assert_eq(rd.received, 5);
    cr_assert_eq(rd.mismatches, 0);
    cr_assert_eq(rd.final_result, 0);
    cr_assert_eq(rd.finals, 1);
    close(sv[0]);
    test_loop_free(loop);
}

Test(multishot, error_is_final)
{
    pact_loop *loop = test_loop_new();
    int c, s;
    make_tcp_pair(&c, &s);
    /* An RST: SO_LINGER 0 then close. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    reader rd = {0};
    reader_arm(loop, s, &rd);
    pact_loop_run_once(loop, 0);
    close(c);
    run_until(loop, &rd.done, 5000);
    cr_assert_eq(rd.finals, 1);
    cr_assert_eq(rd.final_result, -ECONNRESET, "final %s",
                 pact_strerror((int)rd.final_result));
    close(s);
    test_loop_free(loop);
}

Test(multishot, cancel_idle)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    reader rd = {0};
    reader_arm(loop, sv[0], &rd);
    pact_loop_run_once(loop, 0); /* in the kernel / waiting for readiness */
    cr_assert_eq(pact_op_cancel(loop, rd.op), 0);
    cr_assert_eq(pact_op_cancel(loop, rd.op), -EALREADY);
    run_until(loop, &rd.done, 5000);
    cr_assert_eq(rd.final_result, -ECANCELED);
    cr_assert_eq(rd.chunks, 0);
    cr_assert_eq(pact_op_cancel(loop, rd.op), -ENOENT, "stale after the final");
    /* The socket is still usable: nothing was consumed. */
    cr_assert_eq(write(sv[1], "x", 1), 1);
    char ch;
    cr_assert_eq(read(sv[0], &ch, 1), 1);
    close(sv[0]);
    close(sv[1]);
    test_loop_free(loop);
}

/* The heart of docs/contract.md §4 for multishot: cancel while a peer
 * floods. Every byte sent is either delivered before the final -ECANCELED
 * or still readable from the socket afterwards, in order. buffers: 0 for
 * the loop's default ring, else that many provided buffers of 4 KiB. */
static void cancel_while_flooding_with(unsigned buffers, uint64_t cancel_at)
{
    pact_loop *loop = buffers ? loop_with_buffers(buffers, 4096) : test_loop_new();
    int c, s;
    make_tcp_pair(&c, &s);
    const uint64_t total = 16ull << 20;
    pattern_writer w = {0};
    pattern_writer_start(&w, c, 0, total);
    reader rd = {.cancel_at = cancel_at};
    reader_fd = s;
    reader_arm(loop, s, &rd);
    run_until(loop, &rd.done, 30000);
    cr_assert_eq(rd.finals, 1);
    cr_assert(rd.final_result == -ECANCELED || rd.final_result == 0,
              "final %s", pact_strerror((int)rd.final_result));
    if (rd.final_result == -ECANCELED)
        cr_assert_eq(rd.cancel_rc, 0);
    uint64_t delivered = rd.received;
    drain_rest(s, &rd);
    writer_join(&w);
    cr_log_info("cancel at %llu: %llu delivered by the op, %llu left in the "
                "socket, %llu chunks",
                (unsigned long long)cancel_at, (unsigned long long)delivered,
                (unsigned long long)(rd.received - delivered),
                (unsigned long long)rd.chunks);
    cr_assert_eq(rd.received, total, "lost %lld bytes",
                 (long long)(total - rd.received));
    cr_assert_eq(rd.mismatches, 0, "bytes out of order or corrupted");
    cr_assert_eq(rd.after_final, 0);
    close(s);
    test_loop_free(loop);
}

static void cancel_while_flooding(uint64_t cancel_at)
{
    cancel_while_flooding_with(0, cancel_at);
}

Test(multishot, cancel_while_data_keeps_arriving)
{
    cancel_while_flooding(1);
    cancel_while_flooding(64 * 1024);
    cancel_while_flooding(4ull << 20);
}

/* The same cancel where a flooded receive leaves the provided buffers on
 * io_uring: two buffers run dry at once, 4,096 do not but its completions
 * leave bytes in the socket (engine_uring.c, "a receive that streams").
 * Cancel points from the first chunk, around the switch (the engine's own
 * cancel of the multishot receive in flight), to deep in the reading by
 * readiness: one final, nothing after it, no byte lost or reordered. */
Test(multishot, cancel_while_a_streaming_receive_switches_to_readiness)
{
    static const uint64_t at[] = {1, 8 * 1024, 36 * 1024, 256 * 1024, 4ull << 20};
    static const unsigned buffers[] = {2, 4096};
    for (size_t b = 0; b < sizeof buffers / sizeof buffers[0]; b++)
        for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
            cancel_while_flooding_with(buffers[b], at[i]);
}

/* Cancel from a timer, outside any callback of the op, many times. */
static void cancel_timer(pact_loop *loop, void *arg)
{
    reader *rd = arg;
    rd->cancelled = 1;
    rd->cancel_rc = pact_op_cancel(loop, rd->op);
}

Test(multishot, cancel_from_outside_many_times)
{
    for (int round = 0; round < 20; round++) {
        pact_loop *loop = test_loop_new();
        int c, s;
        make_tcp_pair(&c, &s);
        const uint64_t total = 4ull << 20;
        pattern_writer w = {0};
        pattern_writer_start(&w, c, 0, total);
        reader rd = {0};
        reader_fd = s;
        reader_arm(loop, s, &rd);
        cr_assert_geq(pact_call_later(loop, (uint64_t)(round % 5) * 200 * 1000,
                                      cancel_timer, &rd), 0);
        run_until(loop, &rd.done, 30000);
        cr_assert_eq(rd.finals, 1);
        cr_assert(rd.final_result == -ECANCELED || rd.final_result == 0);
        drain_rest(s, &rd);
        writer_join(&w);
        cr_assert_eq(rd.received, total, "round %d lost %lld bytes", round,
                     (long long)(total - rd.received));
        cr_assert_eq(rd.mismatches, 0);
        close(s);
        test_loop_free(loop);
    }
}

static uint64_t buffer_waits_of(pact_loop *loop)
{
    pact_loop_metrics m = PACT_LOOP_METRICS_INIT;
    cr_assert_eq(pact_loop_get_metrics(loop, &m), 0);
    return m.recv_buffer_waits;
}

/* Two buffers of 4 KiB and a peer that floods: io_uring runs out of
 * provided buffers (the kernel ends its multishot receive with -ENOBUFS);
 * the receive waits for a buffer and goes on by itself (by readiness, see
 * the next test), so the caller
 * sees one op, every byte in order, and no final until EOF. (epoll and
 * poll mode read into one loop-wide buffer and never run out; the test
 * then checks the plain stream.) */
Test(multishot, running_out_of_buffers_waits_and_loses_nothing)
{
    pact_loop *loop = loop_with_buffers(2, 4096);
    int c, s;
    make_tcp_pair(&c, &s);
    const uint64_t total = 16ull << 20;
    pattern_writer w = {0};
    pattern_writer_start(&w, c, 0, total);
    reader rd = {.rearm_on_enobufs = 1};
    reader_fd = s;
    reader_arm(loop, s, &rd);
    run_until(loop, &rd.done, 30000);
    writer_join(&w);
    uint64_t waits = buffer_waits_of(loop);
    cr_log_info("mode %s: %llu waits for a buffer, %llu chunks",
                pact_loop_recv_multishot_mode(loop), (unsigned long long)waits,
                (unsigned long long)rd.chunks);
    cr_assert_eq(rd.enobufs, 0, "the caller saw -ENOBUFS %d times", rd.enobufs);
    cr_assert_eq(rd.final_result, 0, "final %s",
                 pact_strerror((int)rd.final_result));
    cr_assert_eq(rd.finals, 1);
    cr_assert_eq(rd.received, total);
    cr_assert_eq(rd.mismatches, 0);
    if (strcmp(pact_loop_recv_multishot_mode(loop), "multishot") == 0)
        cr_assert_gt(waits, 0, "two buffers never ran out?");
    else
        cr_assert_eq(waits, 0);
    close(s);
    test_loop_free(loop);
}

/* A receive whose peer streams reads by readiness into the loop-wide
 * buffer (four buffers' worth), and goes back to the provided buffers
 * once its bursts fit in one. Buffers of 4 KiB and a flood of 64 MiB: a
 * chunk of more than 4 KiB can only come from the loop-wide buffer. Then
 * messages of 100 bytes, each received before the next is sent: after a
 * few, their chunks lie in provided buffers again (pact__recv_buffer_keep
 * claims only those). */
typedef struct streamer {
    pact_op op;
    uint64_t received;
    uint64_t mismatches;
    uint64_t big_chunks; /* more bytes than one provided buffer holds */
    int keep;            /* claim each chunk's buffer, if it has one */
    int kept_id;         /* the last chunk's buffer, or -1 */
    int finals;
} streamer;

static void on_stream(pact_loop *loop, const pact_completion *c, void *user)
{
    streamer *st = user;
    if (!c->more) {
        st->finals++;
        return;
    }
    const uint8_t *p = c->data;
    for (int64_t i = 0; i < c->result; i++)
        if (p[i] != test_pattern_byte(st->received + (uint64_t)i))
            st->mismatches++;
    st->received += (uint64_t)c->result;
    if (c->result > 4096)
        st->big_chunks++;
    if (st->keep)
        st->kept_id = pact__recv_buffer_keep(loop, c->data, (size_t)c->result);
}

/* Request and response: `rounds` messages of `size` bytes (the pattern),
 * each received before the next is sent, each chunk's buffer kept
 * (st->keep) and given back. ring: the loop reads into provided buffers;
 * from round `in_ring_from` on every message must arrive in one (before,
 * it may still be read by readiness); elsewhere none may. Returns how
 * many did. */
static int request_rounds(pact_loop *loop, int fd, streamer *st, int ring,
                          int rounds, size_t size, int in_ring_from,
                          uint64_t end)
{
    static uint8_t msg[16384];
    cr_assert_leq(size, sizeof msg);
    st->keep = 1;
    int in_ring = 0;
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < size; i++)
            msg[i] = test_pattern_byte(st->received + i);
        uint64_t want = st->received + size;
        st->kept_id = -1;
        cr_assert_eq(send(fd, msg, size, 0), (ssize_t)size);
        while (st->received < want && pact_now() < end)
            pact_loop_run_once(loop, 10 * 1000 * 1000);
        cr_assert_eq(st->received, want, "round %d", r);
        if (st->kept_id >= 0)
            pact__recv_buffer_give_back(loop, st->kept_id);
        if (!ring)
            cr_assert_eq(st->kept_id, -1, "a buffer lent outside the ring?");
        else if (r >= in_ring_from)
            cr_assert_geq(st->kept_id, 0, "round %d: not in a provided buffer", r);
        in_ring += st->kept_id >= 0;
    }
    cr_assert_eq(st->mismatches, 0);
    cr_assert_eq(st->finals, 0);
    return in_ring;
}

/* Cancels the streamer's op and waits for its one final completion. */
static void streamer_end(pact_loop *loop, streamer *st, uint64_t end)
{
    cr_assert_eq(pact_op_cancel(loop, st->op), 0);
    while (!st->finals && pact_now() < end)
        pact_loop_run_once(loop, 10 * 1000 * 1000);
    cr_assert_eq(st->finals, 1);
}

/* count buffers of 4 KiB; ring_runs_dry: whether the flood must run
 * them dry (2 buffers) or cannot (4,096 buffers, 16 MiB: more than a
 * socket's receive queue holds, so the streaming shows only in the
 * completions that leave bytes in the socket). The flood is 64 MiB, 32
 * receive queues: what the kernel receives before the loop sees the first
 * completion, or before it ends a multishot receive, is at most a queue,
 * so the rest of the flood is read by readiness. */
static void stream_then_requests(unsigned count, int ring_runs_dry)
{
    pact_loop *loop = loop_with_buffers(count, 4096);
    int ring = strcmp(pact_loop_recv_multishot_mode(loop), "multishot") == 0;
    int c, s;
    make_tcp_pair(&c, &s);
    /* A fixed receive queue (about 2 MiB), not one autotuned up to
     * tcp_rmem's maximum (32 MiB here, more than the 16 MiB ring). */
    int rcvbuf = 1 << 20;
    cr_assert_eq(setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    streamer st = {.kept_id = -1};
    st.op = pact_recv_multishot(loop, s, on_stream, &st);
    cr_assert_gt(st.op, 0);
    const uint64_t total = 64ull << 20;
    pattern_writer w = {.keep_open = 1};
    pattern_writer_start(&w, c, 0, total);
    uint64_t end = pact_now() + 20000000000ull;
    while (st.received < total && pact_now() < end)
        pact_loop_run_once(loop, 10 * 1000 * 1000);
    pattern_writer_wait(&w);
    cr_assert_eq(st.received, total);
    cr_assert_eq(st.mismatches, 0);
    cr_log_info("mode %s: %llu waits for a buffer, %llu chunks over 4 KiB",
                pact_loop_recv_multishot_mode(loop),
                (unsigned long long)buffer_waits_of(loop),
                (unsigned long long)st.big_chunks);
    if (ring) {
        if (ring_runs_dry)
            cr_assert_gt(buffer_waits_of(loop), 0, "two buffers never ran out?");
        else
            cr_assert_eq(buffer_waits_of(loop), 0, "16 MiB of buffers ran out?");
        cr_assert_gt(st.big_chunks, 0, "the receive never read by readiness");
    }
    /* Request and response: 100 bytes at a time, in a provided buffer
     * again READINESS_SMALL_BURSTS (4) small bursts later. */
    int in_ring = request_rounds(loop, c, &st, ring, 10, 100, 4, end);
    cr_log_info("%d of 10 small messages in a provided buffer", in_ring);
    streamer_end(loop, &st, end);
    close(c);
    close(s);
    test_loop_free(loop);
}

Test(multishot, a_receive_that_ran_the_ring_dry_streams_by_readiness_until_its_bursts_are_small)
{
    stream_then_requests(2, 1);
}

Test(multishot, a_receive_whose_peer_streams_reads_by_readiness_before_the_ring_runs_dry)
{
    stream_then_requests(4096, 0);
}

/* Where the kernel has a byte limit for multishot receives (Linux 6.17),
 * the engine arms each with one (engine_uring.c, recv_limit_probe): the
 * kernel ends the receive by itself after so many bytes and the engine
 * arms it again, as a multishot receive again unless its completions
 * kept leaving bytes in the socket. Messages of 16 KiB, each received
 * before the next is sent, 4 MiB in all (the limit, 16 buffers, is 1 MiB
 * of the default 64 KiB ones): every
 * one arrives in order, in a provided buffer (read by readiness, it would
 * not be in one), and the caller sees one op and no final. Without the
 * limit (PACT_URING_MASK=mshotlim, older kernels) the same holds. */
Test(multishot, requests_past_the_receive_byte_limit_stay_in_provided_buffers)
{
    pact_loop *loop = test_loop_new();
    int ring = strcmp(pact_loop_recv_multishot_mode(loop), "multishot") == 0;
    int c, s;
    make_tcp_pair(&c, &s);
    streamer st = {.kept_id = -1};
    st.op = pact_recv_multishot(loop, s, on_stream, &st);
    cr_assert_gt(st.op, 0);
    uint64_t end = pact_now() + 20000000000ull;
    request_rounds(loop, c, &st, ring, 256, 16384, 0, end);
    streamer_end(loop, &st, end);
    close(c);
    close(s);
    test_loop_free(loop);
}

/* Cancel while a flood runs through the default ring, at points around
 * where the kernel ends a multishot receive at its byte limit (1 MiB,
 * see the test above) and the engine arms it again: one final, nothing
 * after it, every byte delivered or still in the socket, in order. */
Test(multishot, cancel_around_the_receive_byte_limit)
{
    static const uint64_t at[] = {1023 * 1024, 1024 * 1024, 1025 * 1024,
                                  2048 * 1024 + 1};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
        cancel_while_flooding(at[i]);
}

/* Where the bytes of each chunk were put, and whether they are right. */
typedef struct spots {
    pact_op op;
    const uint8_t *at[64]; /* distinct start addresses of chunks */
    int n;
    uint64_t received;
    uint64_t mismatches;
    int kept_id;      /* keep: the first chunk's buffer, kept; else -1 */
    int keep;
    const uint8_t *kept;
    size_t kept_len;
} spots;

static void on_spot(pact_loop *loop, const pact_completion *c, void *user)
{
    spots *sp = user;
    if (!c->more)
        return;
    const uint8_t *p = c->data;
    for (int64_t i = 0; i < c->result; i++)
        if (p[i] != test_pattern_byte(sp->received + (uint64_t)i))
            sp->mismatches++;
    if (sp->keep && sp->kept_id < 0 && sp->received == 0) {
        sp->kept_id = pact__recv_buffer_keep(loop, c->data, (size_t)c->result);
        sp->kept = p;
        sp->kept_len = (size_t)c->result;
    }
    sp->received += (uint64_t)c->result;
    int i = 0;
    while (i < sp->n && sp->at[i] != p)
        i++;
    if (i == sp->n && sp->n < 64)
        sp->at[sp->n++] = p;
}

/* Sends `rounds` messages of `size` bytes (the pattern), each received
 * before the next is sent. */
static void send_rounds(pact_loop *loop, int fd, spots *sp, int rounds, size_t size)
{
    static uint8_t msg[16384];
    cr_assert_leq(size, sizeof msg);
    uint64_t sent = sp->received;
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < size; i++)
            msg[i] = test_pattern_byte(sent + i);
        cr_assert_eq(send(fd, msg, size, 0), (ssize_t)size);
        sent += size;
        uint64_t end = pact_now() + 5000000000ull;
        while (sp->received < sent && pact_now() < end)
            pact_loop_run_once(loop, 10 * 1000 * 1000);
        cr_assert_eq(sp->received, sent, "round %d: %llu of %llu bytes", r,
                     (unsigned long long)sp->received, (unsigned long long)sent);
    }
}

/* Whether an io_uring loop's ring defers its task work to the loop's own
 * wait (IORING_SETUP_DEFER_TASKRUN, Linux 6.1): only then may the loop
 * rewrite its buffer ring between waits. PACT_URING_MASK=setup (or all)
 * hides it. */
static int ring_defers_task_work(void)
{
    return !uring_feature_masked("setup") && kernel_at_least(6, 1);
}

/* While the loop keeps up, the bytes of message after message land in
 * the same one or two places, which stay in the cache: io_uring rewinds
 * the buffer it is filling to its start once its bytes are handed over,
 * and takes the buffer given back last first (where the ring defers its
 * task work); epoll (and io_uring's poll mode) read into one loop-wide
 * buffer. Four 4 KiB buffers and messages
 * of 6000 bytes, more than a buffer each: filled in turn, as the ring
 * hands them out, the chunks started at a dozen places. */
/* Receives `rounds` messages of `size` bytes over a TCP pair with one
 * multishot receive, noting where each chunk landed in *sp, then ends it. */
static void spots_over_tcp(pact_loop *loop, spots *sp, int rounds, size_t size)
{
    int c, s;
    make_tcp_pair(&c, &s);
    sp->kept_id = -1;
    sp->op = pact_recv_multishot(loop, s, on_spot, sp);
    cr_assert_gt(sp->op, 0);
    send_rounds(loop, c, sp, rounds, size);
    cr_assert_eq(sp->mismatches, 0);
    cr_assert_eq(pact_op_cancel(loop, sp->op), 0);
    for (int i = 0; i < 3; i++)
        pact_loop_run_once(loop, 0);
    close(c);
    close(s);
}

Test(multishot, receives_reuse_the_buffer_used_last)
{
    pact_loop *loop = loop_with_buffers(4, 4096);
    spots sp = {0};
    spots_over_tcp(loop, &sp, 40, 6000);
    cr_log_info("mode %s: chunks started at %d places",
                pact_loop_recv_multishot_mode(loop), sp.n);
    /* Without deferred task work the kernel may take a buffer at any
     * time, and the ring is filled as it comes (in turn). */
    if (pact_loop_engine(loop) == PACT_ENGINE_EPOLL || ring_defers_task_work())
        cr_assert_leq(sp.n, 2, "40 messages landed in %d places", sp.n);
    test_loop_free(loop);
}

/* A receive lands at the start of a cache line: the kernel's copy into a
 * buffer 16 bytes past one (malloc's alignment) is several times slower
 * (src/unix/op_posix.c). Epoll and io_uring's poll mode read every chunk
 * into the loop-wide buffer; io_uring's provided buffers are mapped pages,
 * and a chunk after the first may go on where the one before ended. */
Test(multishot, a_receive_starts_a_cache_line)
{
    pact_loop *loop = test_loop_new();
    spots sp = {0};
    spots_over_tcp(loop, &sp, 4, 6000);
    cr_assert_geq(sp.n, 1);
    cr_assert_eq((uintptr_t)sp.at[0] % 64, 0, "the first chunk at %p", (void *)sp.at[0]);
    if (pact_loop_engine(loop) == PACT_ENGINE_EPOLL)
        for (int i = 0; i < sp.n; i++)
            cr_assert_eq((uintptr_t)sp.at[i] % 64, 0, "a chunk at %p", (void *)sp.at[i]);
    test_loop_free(loop);
}

/* A buffer a zero-copy write still sends from is never rewound: the
 * kernel puts the next bytes after the kept ones, and they stay as they
 * were until the buffer is given back. (epoll lends no buffer beyond the
 * callback: nothing can be kept there.) */
Test(multishot, a_kept_buffer_is_not_rewound)
{
    pact_loop *loop = loop_with_buffers(4, 65536);
    int c, s;
    make_tcp_pair(&c, &s);
    spots sp = {.kept_id = -1, .keep = 1};
    sp.op = pact_recv_multishot(loop, s, on_spot, &sp);
    cr_assert_gt(sp.op, 0);
    send_rounds(loop, c, &sp, 1, 1000);
    if (strcmp(pact_loop_recv_multishot_mode(loop), "multishot") != 0) {
        cr_assert_lt(sp.kept_id, 0, "mode %s lent a buffer beyond the callback",
                     pact_loop_recv_multishot_mode(loop));
    } else {
        cr_assert_geq(sp.kept_id, 0, "the chunk's buffer could not be kept");
        send_rounds(loop, c, &sp, 20, 1000);
        for (size_t i = 0; i < sp.kept_len; i++)
            cr_assert_eq(sp.kept[i], test_pattern_byte(i),
                         "kept byte %zu overwritten", i);
        pact__recv_buffer_give_back(loop, sp.kept_id);
        send_rounds(loop, c, &sp, 20, 1000);
    }
    cr_assert_eq(sp.mismatches, 0);
    cr_assert_eq(pact_op_cancel(loop, sp.op), 0);
    for (int i = 0; i < 3; i++)
        pact_loop_run_once(loop, 0);
    close(c);
    close(s);
    test_loop_free(loop);
}

/* This process's address space (VmSize), in bytes; 0 if unknown. */
static size_t address_space_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %zu kB", &kib) == 1)
            break;
    fclose(f);
    return kib * 1024;
}

/* Whether io_uring fills provided buffers incrementally here (Linux 6.12),
 * so that a loop with the default count uses as many as hold 2 MiB, 16
 * at least (16 of 1 MiB). */
static int ring_fills_buffers_incrementally(void)
{
    return !uring_feature_masked("pbufinc") && kernel_at_least(6, 12);
}

/* The loop's receive mode in a child whose address space may grow by
 * `room` bytes only (RLIMIT_AS): 0 "multishot", 1 "poll", 2 "epoll",
 * 3 the loop could not be created. */
static int mode_with_address_space_room(unsigned size, size_t room)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        size_t used = address_space_bytes();
        struct rlimit lim = {.rlim_cur = used + room, .rlim_max = used + room};
        if (used == 0 || setrlimit(RLIMIT_AS, &lim) != 0)
            _exit(4);
        pact_loop_options o;
        pact_loop_options_init(&o);
        o.recv_buffer_size = size;
        pact_loop *loop = NULL;
        if (pact_loop_create(&loop, &o) != 0)
            _exit(3);
        const char *mode = pact_loop_recv_multishot_mode(loop);
        int code = strcmp(mode, "multishot") == 0 ? 0
                   : strcmp(mode, "poll") == 0    ? 1
                   : strcmp(mode, "epoll") == 0   ? 2
                                                  : 5;
        pact_loop_free(loop);
        _exit(code);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "the child ended by signal %d", WTERMSIG(status));
    cr_assert_neq(WEXITSTATUS(status), 4, "cannot read or limit the address space");
    return WEXITSTATUS(status);
}

/* 1 MiB buffers (pact.asyncio's) with the default count: where io_uring
 * fills them incrementally the loop uses 16 (16 MiB) and must get them
 * with 64 MiB of address space to spare; the plain ring's 256 (256 MiB)
 * were mapped first and trimmed after, so such a limit sent the loop to
 * poll mode. Without incremental consumption the 256 do not fit, and the
 * loop falls back to poll mode instead of failing. */
Test(multishot, an_address_space_limit_with_room_for_the_buffers_used_keeps_multishot)
{
    const unsigned size = 1u << 20;
    /* The child first: it inherits no loop of this process. */
    int code = mode_with_address_space_room(size, (size_t)64 << 20);
    pact_loop *loop = loop_with_buffers(0, size);
    const char *unlimited = pact_loop_recv_multishot_mode(loop);
    int engine = pact_loop_engine(loop);
    cr_log_info("mode %s; with 64 MiB of room: %d", unlimited, code);
    if (engine == PACT_ENGINE_EPOLL)
        cr_assert_eq(code, 2);
    else if (strcmp(unlimited, "multishot") != 0)
        cr_assert_eq(code, 1);
    else if (ring_fills_buffers_incrementally())
        cr_assert_eq(code, 0, "the limit sent the loop to poll mode (%d)", code);
    else
        cr_assert_eq(code, 1, "256 MiB of buffers within a 64 MiB limit (%d)", code);
    test_loop_free(loop);
}

/* Receives waiting for a buffer end as asked: a cancel, a deadline and
 * the loop's close each end one while the ring is dry (a zero-copy-like
 * claim holds the only buffer), with -ECANCELED, -ETIMEDOUT and
 * -ECANCELED, and their bytes stay in the socket. */
typedef struct holder {
    pact_op op;
    int id;          /* the buffer kept from the first chunk, or -1 */
    uint64_t got;
    int finals;
    int64_t final_result;
} holder;

static void on_hold(pact_loop *loop, const pact_completion *c, void *user)
{
    holder *h = user;
    if (c->more) {
        if (h->id < 0)
            h->id = pact__recv_buffer_keep(loop, c->data, (size_t)c->result);
        h->got += (uint64_t)c->result;
        return;
    }
    h->finals++;
    h->final_result = c->result;
}

static void end_a_waiting_receive(int how)
{
    pact_loop *loop = loop_with_buffers(1, 4096);
    if (strcmp(pact_loop_recv_multishot_mode(loop), "multishot") != 0) {
        cr_log_info("mode %s: no buffer ring to run dry",
                    pact_loop_recv_multishot_mode(loop));
        test_loop_free(loop);
        return;
    }
    int sv[2];
    make_socketpair(sv);
    static uint8_t data[64 * 1024];
    memset(data, 'x', sizeof data);
    cr_assert_eq(send(sv[1], data, 4096, 0), 4096);
    holder h = {.id = -1};
    h.op = pact_recv_multishot(loop, sv[0], on_hold, &h);
    cr_assert_gt(h.op, 0);
    if (how == 1)
        cr_assert_eq(pact_op_set_timeout(loop, h.op, 200 * 1000 * 1000ull), 0);
    uint64_t end = pact_now() + 5000000000ull;
    while (h.got < 4096 && pact_now() < end)
        pact_loop_run_once(loop, 10 * 1000 * 1000);
    cr_assert_eq(h.got, 4096);
    cr_assert_geq(h.id, 0, "the chunk's buffer could not be kept");
    /* The one buffer is kept: the next bytes find the ring dry. */
    cr_assert_eq(send(sv[1], data, 1000, 0), 1000);
    while (buffer_waits_of(loop) == 0 && pact_now() < end)
        pact_loop_run_once(loop, 10 * 1000 * 1000);
    cr_assert_gt(buffer_waits_of(loop), 0, "the receive never ran dry");
    cr_assert_eq(h.finals, 0, "final %s", pact_strerror((int)h.final_result));
    for (int i = 0; i < 3; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(h.got, 4096, "bytes delivered without a buffer?");
    if (how == 0) {
        cr_assert_eq(pact_op_cancel(loop, h.op), 0);
        cr_assert_eq(pact_op_cancel(loop, h.op), -EALREADY);
        cr_assert_eq(h.finals, 0, "the callback ran inside pact_op_cancel");
    }
    if (how == 2) {
        test_loop_free(loop); /* close completes it */
        cr_assert_eq(h.finals, 1);
        cr_assert_eq(h.final_result, -ECANCELED);
    } else {
        while (!h.finals && pact_now() < end)
            pact_loop_run_once(loop, 10 * 1000 * 1000);
        cr_assert_eq(h.finals, 1);
        cr_assert_eq(h.final_result, how == 0 ? -ECANCELED : -ETIMEDOUT, "final %s",
                     pact_strerror((int)h.final_result));
        pact__recv_buffer_give_back(loop, h.id);
        for (int i = 0; i < 3; i++)
            pact_loop_run_once(loop, 0);
        cr_assert_eq(h.finals, 1);
        test_loop_free(loop);
    }
    /* The 1000 bytes were never taken from the socket. */
    char buf[2048];
    cr_assert_eq(recv(sv[0], buf, sizeof buf, MSG_DONTWAIT), 1000);
    close(sv[0]);
    close(sv[1]);
}

Test(multishot, a_receive_waiting_for_a_buffer_is_cancelled)
{
    end_a_waiting_receive(0);
}

Test(multishot, a_receive_waiting_for_a_buffer_times_out)
{
    end_a_waiting_receive(1);
}

Test(multishot, a_receive_waiting_for_a_buffer_ends_with_the_loop)
{
    end_a_waiting_receive(2);
}

/* A peer's EOF ends a receive with 0 bytes but still names the buffer
 * the kernel had picked for it. With incremental consumption the kernel
 * took nothing from that buffer and goes on filling it where it was, yet
 * the completion has no BUF_MORE: the buffer must stay the kernel's, at
 * its offset, or it would be put in the ring a second time and the next
 * connection's bytes handed over from the wrong place. Two 4 KiB
 * buffers: the first is kept (as a zero-copy write keeps one) so that
 * the ring has a free slot for a duplicate to land in. */
Test(multishot, a_peer_eof_leaves_the_buffer_it_named_with_the_kernel)
{
    pact_loop *loop = loop_with_buffers(2, 4096);
    int multishot = strcmp(pact_loop_recv_multishot_mode(loop), "multishot") == 0;
    int x[2], a[2], b[2];
    make_socketpair(x);
    make_socketpair(a);
    make_socketpair(b);
    static uint8_t fill[4096];
    memset(fill, 'x', sizeof fill);
    cr_assert_eq(send(x[1], fill, sizeof fill, 0), (ssize_t)sizeof fill);
    holder h = {.id = -1};
    h.op = pact_recv_multishot(loop, x[0], on_hold, &h);
    cr_assert_gt(h.op, 0);
    uint64_t end = pact_now() + 5000000000ull;
    while (h.got < sizeof fill && pact_now() < end)
        pact_loop_run_once(loop, 10 * 1000 * 1000);
    cr_assert_eq(h.got, sizeof fill);
    if (multishot)
        cr_assert_geq(h.id, 0, "the filled buffer could not be kept");
    cr_assert_eq(pact_op_cancel(loop, h.op), 0);
    while (!h.finals && pact_now() < end)
        pact_loop_run_once(loop, 10 * 1000 * 1000);

    /* Ten bytes, then the EOF, into the other buffer. */
    uint8_t msg[10];
    for (int i = 0; i < 10; i++)
        msg[i] = test_pattern_byte((uint64_t)i);
    cr_assert_eq(write(a[1], msg, sizeof msg), (ssize_t)sizeof msg);
    close(a[1]);
    reader ra = {0};
    reader_arm(loop, a[0], &ra);
    run_until(loop, &ra.done, 5000);
    cr_assert_eq(ra.received, 10);
    cr_assert_eq(ra.final_result, 0, "final %s", pact_strerror((int)ra.final_result));

    /* The next connection's bytes arrive as sent. */
    uint8_t more[1000];
    for (int i = 0; i < (int)sizeof more; i++)
        more[i] = test_pattern_byte((uint64_t)i);
    cr_assert_eq(write(b[1], more, sizeof more), (ssize_t)sizeof more);
    close(b[1]);
    reader rb = {0};
    reader_arm(loop, b[0], &rb);
    run_until(loop, &rb.done, 5000);
    cr_assert_eq(rb.received, sizeof more);
    cr_assert_eq(rb.mismatches, 0, "%llu of %zu bytes handed over from the "
                 "wrong place", (unsigned long long)rb.mismatches, sizeof more);
    cr_assert_eq(rb.final_result, 0);

    if (h.id >= 0)
        pact__recv_buffer_give_back(loop, h.id);
    test_loop_free(loop);
    close(x[0]);
    close(x[1]);
    close(a[0]);
    close(b[0]);
}

/* More bytes wait in the socket than one readiness event reads (the
 * burst limit: 16 reads of the loop's buffer, here 4 KiB on epoll and in
 * io_uring's poll mode), and nothing new arrives after them: the rest is
 * still delivered. An edge-triggered registration gets no new edge for
 * it; the receive must have the socket reported again itself. */
Test(multishot, bytes_left_at_the_burst_limit_arrive_without_new_data)
{
    pact_loop *loop = loop_with_buffers(8, 1024);
    int sv[2];
    make_socketpair(sv);
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    /* All of it in the receiver's queue before the receive starts. */
    const uint64_t total = 256 * 1024;
    static uint8_t data[256 * 1024];
    for (uint64_t i = 0; i < total; i++)
        data[i] = test_pattern_byte(i);
    cr_assert_eq(send(sv[1], data, total, MSG_DONTWAIT), (ssize_t)total,
                 "the socket pair took less than %llu bytes at once",
                 (unsigned long long)total);
    reader rd = {.rearm_on_enobufs = 1};
    reader_fd = sv[0];
    reader_arm(loop, sv[0], &rd);
    uint64_t end = pact_now() + 5000000000ull;
    while (rd.received < total && pact_now() < end)
        pact_loop_run_once(loop, 10000000); /* 10 ms */
    cr_assert_eq(rd.received, total, "%llu of %llu bytes, then nothing",
                 (unsigned long long)rd.received, (unsigned long long)total);
    cr_assert_eq(rd.mismatches, 0);
    cr_assert_eq(rd.finals, 0);
    pact_op_cancel(loop, rd.op);
    run_until(loop, &rd.done, 5000);
    close(sv[0]);
    close(sv[1]);
    test_loop_free(loop);
}

Test(multishot, deadline_ends_it_with_etimedout)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    reader rd = {0};
    reader_arm(loop, sv[0], &rd);
    cr_assert_eq(pact_op_set_timeout(loop, rd.op, 20 * MS), 0);
    run_until(loop, &rd.done, 5000);
    cr_assert_eq(rd.final_result, -ETIMEDOUT, "final %s",
                 pact_strerror((int)rd.final_result));
    cr_assert_eq(rd.finals, 1);
    close(sv[0]);
    close(sv[1]);
    test_loop_free(loop);
}

/* Closing the loop with a multishot in flight: one final completion. */
static int close_finals;
static int64_t close_result;
static void on_close_final(pact_loop *loop, const pact_completion *c, void *u)
{
    (void)loop;
    (void)u;
    if (!c->more) {
        close_finals++;
        close_result = c->result;
    }
}

Test(multishot, loop_close_completes_it_once)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    cr_assert_gt(pact_recv_multishot(loop, sv[0], on_close_final, NULL), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(write(sv[1], "abc", 3), 3);
    close_finals = 0;
    test_loop_free(loop);
    cr_assert_eq(close_finals, 1);
    cr_assert(close_result == -ECANCELED || close_result == 0);
    close(sv[0]);
    close(sv[1]);
}

Test(multishot, bad_arguments)
{
    pact_loop *loop = test_loop_new();
    cr_assert_eq(pact_recv_multishot(loop, -1, on_close_final, NULL), -EBADF);
    cr_assert_eq(pact_recv_multishot(loop, 0, NULL, NULL), -EINVAL);
    cr_assert_eq(pact_recv_multishot(NULL, 0, on_close_final, NULL), -EINVAL);
    test_loop_free(loop);
}
