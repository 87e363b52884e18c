/* SPDX-License-Identifier: MIT */
/* pact_loop_set_recv_buffer_hook(): a receive made by readiness lands in
 * memory the hook gives, and is handed over from there. The hook here
 * gives a fresh malloc block for every read and frees it as soon as the
 * loop may no longer touch it (after the chunk's callback, or at the next
 * call when the read brought nothing), so that under AddressSanitizer a
 * late write into it is a use after free (docs/contract.md §2). Also:
 * which receives read by readiness on io_uring (large ones), a cancel
 * inside a chunk leaves the rest in the socket (§4), a transport paused
 * inside a chunk keeps every byte (§5), a NULL from the hook, misuse. Runs
 * on both engines; PACT_RECV_MULTISHOT=poll exercises io_uring's poll
 * mode. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>

#include "helpers.h"
#include "pattern_writer.h"

TestSuite(recv_buffer, .timeout = 60);

/* ---- the hook --------------------------------------------------------------- */

typedef struct hook {
    size_t len;         /* what each block holds */
    int give_null;      /* answer NULL: the loop's own buffer */
    uint8_t *given;     /* the block of the last call, until it is used */
    unsigned calls;
    unsigned unused;    /* blocks whose read brought nothing */
} hook;

static void *hook_get(pact_loop *loop, size_t *len, void *user)
{
    (void)loop;
    hook *h = user;
    h->calls++;
    if (h->given) {
        /* The read it was given for brought nothing: the loop is done
         * with it. */
        free(h->given);
        h->given = NULL;
        h->unused++;
    }
    if (h->give_null)
        return NULL;
    h->given = malloc(h->len);
    cr_assert_not_null(h->given);
    *len = h->len;
    return h->given;
}

/* A chunk was handed over: whether it lies in the hook's block (which is
 * then freed: the loop may not touch it after this callback). Call at the
 * end of the chunk's callback. */
static int hook_used(hook *h, const void *data)
{
    if (!h->given || data != h->given)
        return 0;
    free(h->given);
    h->given = NULL;
    return 1;
}

static void hook_done(hook *h)
{
    free(h->given);
    h->given = NULL;
}

/* Bytes of a chunk that are not the pattern at its position in the
 * stream: lost, doubled or out of order. */
static uint64_t mismatches_in(const void *data, size_t len, uint64_t pos)
{
    const uint8_t *p = data;
    uint64_t bad = 0;
    for (size_t i = 0; i < len; i++)
        if (p[i] != test_pattern_byte(pos + i))
            bad++;
    return bad;
}

/* ---- a reader: pact_recv_multishot ------------------------------------------ */

typedef struct reader {
    hook *h;
    pact_op op;
    uint64_t received;
    uint64_t mismatches;
    uint64_t landed_bytes;   /* in the hook's memory */
    unsigned landed, elsewhere;
    int last_landed;         /* where the last chunk was */
    uint64_t cancel_at;      /* cancel inside the chunk that reaches it */
    int cancels_again;       /* a second cancel there answered this */
    int finals;
    int64_t final_result;
    int done;
} reader;

static void on_chunk(pact_loop *loop, const pact_completion *c, void *user)
{
    reader *rd = user;
    if (!c->more) {
        rd->finals++;
        rd->final_result = c->result;
        rd->done = 1;
        return;
    }
    rd->mismatches += mismatches_in(c->data, (size_t)c->result, rd->received);
    rd->received += (uint64_t)c->result;
    if (rd->cancel_at && rd->received >= rd->cancel_at) {
        rd->cancel_at = 0;
        cr_assert_eq(pact_op_cancel(loop, rd->op), 0);
        rd->cancels_again = pact_op_cancel(loop, rd->op);
    }
    rd->last_landed = hook_used(rd->h, c->data);
    if (rd->last_landed) {
        rd->landed++;
        rd->landed_bytes += (uint64_t)c->result;
    } else {
        rd->elsewhere++;
    }
}

static pact_loop *hooked_loop(hook *h, size_t len, size_t large)
{
    memset(h, 0, sizeof *h);
    h->len = len;
    pact_loop *loop = test_loop_new();
    cr_assert_eq(pact_loop_set_recv_buffer_hook(loop, hook_get, large, h), 0);
    return loop;
}

/* A socket pair and a multishot receive on sv[0] that reads into rd. */
static void start_reader(pact_loop *loop, int sv[2], reader *rd, hook *h)
{
    make_socketpair(sv);
    *rd = (reader){.h = h};
    rd->op = pact_recv_multishot(loop, sv[0], on_chunk, rd);
    cr_assert_gt(rd->op, 0);
}

/* Every receive reads by readiness: epoll, io_uring's poll mode. */
static int reads_by_readiness(pact_loop *loop)
{
    return strcmp(pact_loop_recv_multishot_mode(loop), "multishot") != 0;
}

static void send_pattern(int fd, uint64_t pos, size_t len)
{
    uint8_t *buf = malloc(len);
    cr_assert_not_null(buf);
    test_fill_pattern(buf, len, pos);
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 1000);
            continue;
        }
        cr_assert_gt(n, 0, "send: %s", strerror(errno));
        off += (size_t)n;
    }
    free(buf);
}

static void run_until_received(pact_loop *loop, reader *rd, uint64_t total)
{
    uint64_t end = pact_now() + 10000 * MS;
    while (rd->received < total && !rd->done) {
        cr_assert(pact_now() < end, "received %llu of %llu",
                  (unsigned long long)rd->received, (unsigned long long)total);
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    }
}

/* A few iterations with nothing new to read: a receive that a large
 * completion switched to readiness on io_uring has its switch done (the
 * engine's cancel submitted, its completions reaped, the receive armed
 * by readiness). Without this a peer that wrote everything at once may
 * have it all received from the ring before the switch. */
static void settle(pact_loop *loop)
{
    for (int i = 0; i < 4; i++)
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
}

/* One byte, received before the rest: with large = 1 it switches an
 * io_uring receive to readiness (settle), so that what follows lands in
 * the hook's memory. */
static void first_byte(pact_loop *loop, int peer, reader *rd)
{
    send_pattern(peer, 0, 1);
    run_until_received(loop, rd, 1);
    settle(loop);
}

/* ---- a peer that streams from its own thread -------------------------------- */

/* A multishot receive on a fresh TCP pair reads `total` pattern bytes
 * streamed by a peer thread (after one byte alone when `first` is set,
 * see first_byte) to the end of the stream: every byte once and in
 * order, one final completion, 0. The chunks' places are the caller's to
 * check in *rd. */
static void stream_through(pact_loop *loop, hook *h, reader *rd,
                           uint64_t total, int first)
{
    int c, s;
    make_tcp_pair(&c, &s);
    *rd = (reader){.h = h};
    rd->op = pact_recv_multishot(loop, s, on_chunk, rd);
    cr_assert_gt(rd->op, 0);
    if (first)
        first_byte(loop, c, rd);
    pattern_writer w = {0};
    pattern_writer_start(&w, c, first ? 1 : 0, total);
    run_until(loop, &rd->done, 30000);
    pattern_writer_wait(&w);
    cr_assert_eq(rd->finals, 1);
    cr_assert_eq(rd->final_result, 0, "final %s", pact_strerror((int)rd->final_result));
    cr_assert_eq(rd->received, total);
    cr_assert_eq(rd->mismatches, 0, "bytes lost, doubled or out of order");
    close(c);
    close(s);
}

/* ---- the tests --------------------------------------------------------------- */

Test(recv_buffer, reads_by_readiness_land_in_the_hooks_memory)
{
    hook h;
    /* large = 1: on io_uring the first completion switches the receive to
     * readiness, so nearly every byte lands in the hook's memory. */
    pact_loop *loop = hooked_loop(&h, 3000, 1);
    const uint64_t total = 4u << 20;
    reader rd;
    stream_through(loop, &h, &rd, total, 1);
    cr_assert_gt(rd.landed, total / 3000 / 2, "landed %u times", rd.landed);
    /* Where every receive reads by readiness the first read, the one
     * byte, lands in the loop's buffer: it makes the reads large. */
    if (reads_by_readiness(loop))
        cr_assert_eq(rd.elsewhere, 1, "%u chunks not in the hook's memory",
                     rd.elsewhere);
    else
        cr_assert_geq(rd.landed_bytes, total * 9 / 10,
                      "only %llu bytes in the hook's memory",
                      (unsigned long long)rd.landed_bytes);
    hook_done(&h);
    test_loop_free(loop);
}

/* Small messages are not read into the hook's memory, nor is the hook
 * asked for them; from a large one on (which itself is not) large
 * messages land in the hook's memory, and a few small ones in a row end
 * that. On io_uring small messages stay in the ring's provided buffers
 * and the large one switches the receive to readiness; on epoll and in
 * io_uring's poll mode reads go to the loop's buffer. */
Test(recv_buffer, large_messages_read_by_readiness_and_small_ones_keep_the_ring)
{
    hook h;
    const size_t large = 16 * 1024;
    pact_loop *loop = hooked_loop(&h, 64 * 1024, large);
    int sv[2];
    reader rd;
    start_reader(loop, sv, &rd, &h);
    uint64_t pos = 0;
    /* One message at a time, each received whole before the next. */
#define MESSAGE(len)                                                          \
    do {                                                                      \
        send_pattern(sv[1], pos, (len));                                      \
        pos += (len);                                                         \
        run_until_received(loop, &rd, pos);                                   \
        settle(loop);                                                         \
    } while (0)
    for (int i = 0; i < 3; i++) {
        MESSAGE(100);
        cr_assert_eq(rd.last_landed, 0, "small message %d", i);
    }
    cr_assert_eq(h.calls, 0, "the hook was asked %u times for small messages",
                 h.calls);
    MESSAGE(large); /* not in the hook's memory, but it switches the receive */
    cr_assert_eq(rd.last_landed, 0);
    for (int i = 0; i < 3; i++) {
        MESSAGE(large + 1000);
        cr_assert(rd.last_landed, "large message %d not in the hook's memory", i);
    }
    /* Small ones land there until a few in a row were small. */
    for (int i = 0; i < 12; i++)
        MESSAGE(100);
    cr_assert_eq(rd.last_landed, 0, "small messages did not go back");
    unsigned calls = h.calls;
    for (int i = 0; i < 3; i++)
        MESSAGE(100);
    cr_assert_eq(h.calls, calls, "the hook was asked for small messages again");
#undef MESSAGE
    cr_assert_eq(rd.mismatches, 0);
    cr_assert_eq(pact_op_cancel(loop, rd.op), 0);
    run_until(loop, &rd.done, 5000);
    cr_assert_eq(rd.finals, 1);
    hook_done(&h);
    close(sv[0]);
    close(sv[1]);
    test_loop_free(loop);
}

/* A cancel from inside a chunk that landed in the hook's memory: nothing
 * more is read, and what the loop did not read is in the socket, in order
 * (docs/contract.md §4). */
Test(recv_buffer, a_cancel_inside_a_chunk_leaves_the_rest_in_the_socket)
{
    hook h;
    pact_loop *loop = hooked_loop(&h, 1000, 1);
    int sv[2];
    reader rd;
    start_reader(loop, sv, &rd, &h);
    first_byte(loop, sv[1], &rd);
    send_pattern(sv[1], 1, 5000);
    rd.cancel_at = 2;
    run_until(loop, &rd.done, 5000);
    cr_assert_eq(rd.finals, 1);
    cr_assert_eq(rd.final_result, -ECANCELED);
    cr_assert(rd.last_landed, "the cancelled chunk was not the hook's");
    cr_assert_eq(rd.received, 1 + 1000, "received %llu",
                 (unsigned long long)rd.received);
    uint8_t rest[8192];
    ssize_t n = recv(sv[0], rest, sizeof rest, MSG_DONTWAIT);
    cr_assert_eq(n, 5000 - 1000, "left in the socket: %zd", n);
    for (ssize_t i = 0; i < n; i++)
        cr_assert_eq(rest[i], test_pattern_byte(rd.received + (uint64_t)i));
    cr_assert_eq(rd.mismatches, 0);
    hook_done(&h);
    close(sv[0]);
    close(sv[1]);
    test_loop_free(loop);
}

/* A cancel at each step of io_uring's switch of a receive to readiness
 * (large = 1: the first chunk starts it): asked inside that chunk's
 * callback (before the engine asks the kernel to end the multishot
 * receive), right after the callback (the engine's own cancel queued,
 * PACT_OPF_RECV_SWITCHING: the two cancels race in the kernel), and after
 * 1 to 3 more iterations (the switch done, the receive armed by
 * readiness). Each asked twice, and once more after the end: one final
 * completion, -ECANCELED; the second cancel is -EALREADY, the late one
 * -ENOENT; nothing more is read (docs/contract.md §3, §4). Step -1 is the
 * callback's cancel. */
Test(recv_buffer, a_cancel_racing_the_switch_to_readiness_ends_the_receive_once)
{
    for (int steps = -1; steps <= 3; steps++) {
        hook h;
        pact_loop *loop = hooked_loop(&h, 1000, 1);
        int sv[2];
        reader rd;
        start_reader(loop, sv, &rd, &h);
        send_pattern(sv[1], 0, 1);
        if (steps < 0) {
            rd.cancel_at = 1; /* inside the first chunk: the one that switches */
        } else {
            run_until_received(loop, &rd, 1);
            for (int i = 0; i < steps; i++)
                cr_assert_geq(pact_loop_run_once(loop, 0), 0);
            cr_assert_eq(rd.finals, 0, "step %d", steps);
            cr_assert_eq(pact_op_cancel(loop, rd.op), 0, "step %d", steps);
            rd.cancels_again = pact_op_cancel(loop, rd.op);
        }
        run_until(loop, &rd.done, 5000);
        cr_assert_eq(pact_op_cancel(loop, rd.op), -ENOENT, "step %d", steps);
        cr_assert_eq(rd.finals, 1, "step %d", steps);
        cr_assert_eq(rd.final_result, -ECANCELED, "step %d: %s", steps,
                     pact_err_name((int)rd.final_result));
        cr_assert_eq(rd.cancels_again, -EALREADY, "step %d", steps);
        cr_assert_eq(rd.received, 1, "step %d", steps);
        send_pattern(sv[1], 1, 100);
        settle(loop);
        cr_assert_eq(rd.finals, 1, "step %d: a second final completion", steps);
        uint8_t rest[256];
        cr_assert_eq(recv(sv[0], rest, sizeof rest, MSG_DONTWAIT), 100, "step %d", steps);
        hook_done(&h);
        close(sv[0]);
        close(sv[1]);
        test_loop_free(loop);
    }
}

/* The loop closed while a receive reads into the hook's memory by
 * readiness, with bytes waiting: the receive ends once, -ECANCELED, and
 * the hook's block is not written after (ASan: the hook frees it). */
Test(recv_buffer, loop_close_with_a_hooked_receive_in_flight_ends_it_once)
{
    hook h;
    pact_loop *loop = hooked_loop(&h, 1000, 1);
    int sv[2];
    reader rd;
    start_reader(loop, sv, &rd, &h);
    first_byte(loop, sv[1], &rd);
    send_pattern(sv[1], 1, 3000);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(rd.finals, 1);
    cr_assert_eq(rd.final_result, -ECANCELED);
    cr_assert_eq(rd.received, 1, "a chunk during loop close");
    cr_assert_eq(rd.mismatches, 0);
    hook_done(&h);
    pact_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(recv_buffer, a_null_from_the_hook_reads_into_the_loops_buffer)
{
    hook h;
    pact_loop *loop = hooked_loop(&h, 1000, 1);
    h.give_null = 1;
    reader rd;
    stream_through(loop, &h, &rd, 1u << 20, 1);
    cr_assert_gt(h.calls, 0, "the hook was never asked");
    cr_assert_eq(rd.landed, 0);
    test_loop_free(loop);
}

/* ---- a transport paused inside chunks that landed in the hook's memory ------ */

typedef struct paused_reader {
    hook *h;
    pact_loop *loop;
    uint64_t received, mismatches, total;
    unsigned calls, landed;
    int lost, lost_err;
} paused_reader;

static void resume_later(pact_loop *loop, void *user)
{
    (void)loop;
    pact_transport *t = user;
    cr_assert_eq(pact_transport_resume_reading(t), 0);
}

static void paused_data(pact_transport *t, const void *data, size_t len,
                        void *user)
{
    paused_reader *pr = user;
    pr->mismatches += mismatches_in(data, len, pr->received);
    pr->received += len;
    int landed = hook_used(pr->h, data);
    pr->landed += (unsigned)landed;
    pr->calls++;
    /* Every fourth chunk that landed in the hook's memory pauses: the
     * bytes still read meanwhile (a chunk the pause cuts, a cancelled
     * receive's last ones) are held. (Resumed, an io_uring receive reads
     * by readiness from the start: pact__recv_reads_large.) */
    if (landed && pr->landed % 4 == 0) {
        pact_transport_pause_reading(t);
        cr_assert_gt(pact_call_later(pr->loop, MS, resume_later, t), 0);
    }
    if (pr->received == pr->total)
        pact_transport_close(t);
}

static void paused_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    paused_reader *pr = user;
    pr->lost = 1;
    pr->lost_err = err;
}

Test(recv_buffer, a_transport_paused_inside_chunks_keeps_every_byte)
{
    hook h;
    pact_loop *loop = hooked_loop(&h, 2000, 1);
    int c, s;
    make_tcp_pair(&c, &s);
    const uint64_t total = 2u << 20;
    static const pact_protocol proto = {
        .data_received = paused_data,
        .connection_lost = paused_lost,
    };
    paused_reader pr = {.h = &h, .loop = loop, .total = total};
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, s, PACT_STREAM_SOCKET, &proto, &pr, &t), 0);
    /* The first byte alone (see first_byte). */
    send_pattern(c, 0, 1);
    uint64_t end = pact_now() + 5000 * MS;
    while (pr.received < 1) {
        cr_assert(pact_now() < end);
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    }
    settle(loop);
    pattern_writer w = {0};
    pattern_writer_start(&w, c, 1, total);
    run_until(loop, &pr.lost, 30000);
    pattern_writer_wait(&w);
    cr_assert_eq(pr.lost_err, 0, "lost: %s", pact_strerror(pr.lost_err));
    cr_assert_eq(pr.received, total, "received %llu of %llu",
                 (unsigned long long)pr.received, (unsigned long long)total);
    cr_assert_eq(pr.mismatches, 0, "bytes lost, doubled or out of order");
    cr_assert_gt(pr.landed, 0, "no chunk came from the hook's memory");
    hook_done(&h);
    close(c);
    test_loop_free(loop);
}

/* ---- pause and resume keep reading large messages by readiness -------------- */

typedef struct large_reader {
    hook *h;
    uint64_t received, mismatches;
    unsigned chunks, landed;
} large_reader;

static void large_data(pact_transport *t, const void *data, size_t len,
                       void *user)
{
    (void)t;
    large_reader *lr = user;
    lr->mismatches += mismatches_in(data, len, lr->received);
    lr->received += len;
    lr->chunks++;
    lr->landed += (unsigned)hook_used(lr->h, data);
}

static void large_message(pact_loop *loop, int peer, large_reader *lr,
                          size_t len)
{
    uint64_t pos = lr->received;
    send_pattern(peer, pos, len);
    uint64_t end = pact_now() + 5000 * MS;
    while (lr->received < pos + len) {
        cr_assert(pact_now() < end, "received %llu of %llu",
                  (unsigned long long)lr->received,
                  (unsigned long long)(pos + len));
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    }
    settle(loop);
}

/* A transport whose receive reads large messages by readiness, paused
 * and resumed (asyncio's StreamReader does so whenever more than twice
 * its limit is buffered): the receive resume_reading starts reads by
 * readiness at once, so the first large message after it lands in the
 * hook's memory too. On io_uring a receive started on the ring took it
 * into a provided buffer (the binding copies it from there) and needed a
 * cancel to switch again. Every engine: each chunk of a large message
 * lands in the hook's memory. */
Test(recv_buffer, a_transport_resumed_after_large_reads_reads_by_readiness_at_once)
{
    hook h;
    const size_t large = 16 * 1024;
    pact_loop *loop = hooked_loop(&h, 256 * 1024, large);
    int c, s;
    make_tcp_pair(&c, &s);
    static const pact_protocol proto = {.data_received = large_data};
    large_reader lr = {.h = &h};
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, s, PACT_STREAM_SOCKET, &proto, &lr, &t), 0);
    large_message(loop, c, &lr, 2 * large); /* switches an io_uring receive */
    for (int round = 0; round < 3; round++) {
        unsigned chunks = lr.chunks, landed = lr.landed;
        large_message(loop, c, &lr, 2 * large);
        cr_assert_eq(lr.landed - landed, lr.chunks - chunks,
                     "round %d: %u of %u chunks before the pause in the hook's memory",
                     round, lr.landed - landed, lr.chunks - chunks);
        pact_transport_pause_reading(t);
        settle(loop); /* the paused receive has ended */
        cr_assert_eq(pact_transport_resume_reading(t), 0);
        chunks = lr.chunks;
        landed = lr.landed;
        large_message(loop, c, &lr, 2 * large);
        cr_assert_eq(lr.landed - landed, lr.chunks - chunks,
                     "round %d: %u of %u chunks after resume_reading in the hook's memory",
                     round, lr.landed - landed, lr.chunks - chunks);
    }
    cr_assert_eq(lr.mismatches, 0, "bytes lost, doubled or out of order");
    pact_transport_close(t);
    settle(loop);
    hook_done(&h);
    close(c);
    test_loop_free(loop);
}

/* ---- misuse ------------------------------------------------------------------ */

static int set_from_callback;

static void set_inside(pact_loop *loop, void *user)
{
    set_from_callback = pact_loop_set_recv_buffer_hook(loop, hook_get, 0, user);
}

Test(recv_buffer, misuse_is_refused)
{
    hook h = {.len = 100};
    cr_assert_eq(pact_loop_set_recv_buffer_hook(NULL, hook_get, 0, &h), -EINVAL);
    pact_loop *loop = test_loop_new();
    pact_call_soon(loop, set_inside, &h);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(set_from_callback, -EBUSY);
    cr_assert_eq(pact_loop_set_recv_buffer_hook(loop, hook_get, 0, &h), 0);
    cr_assert_eq(pact_loop_set_recv_buffer_hook(loop, NULL, 0, NULL), 0);
    /* Removed: a receive by readiness does not ask it. */
    int sv[2];
    make_socketpair(sv);
    reader rd = {.h = &h};
    rd.op = pact_recv_multishot(loop, sv[0], on_chunk, &rd);
    send_pattern(sv[1], 0, 10);
    run_until_received(loop, &rd, 10);
    cr_assert_eq(h.calls, 0);
    pact_op_cancel(loop, rd.op);
    run_until(loop, &rd.done, 5000);
    close(sv[0]);
    close(sv[1]);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(pact_loop_set_recv_buffer_hook(loop, hook_get, 0, &h), -ESHUTDOWN);
    pact_loop_free(loop);
}

/* A hook whose blocks are smaller than its large: where every receive
 * reads by readiness (epoll, io_uring's poll mode) a peer that streams
 * fills every block, which counts as large, so nearly every byte lands
 * in the hook's memory, as when the blocks are larger (recv_burst.h,
 * pact__recv_note_read). (io_uring's multishot mode counts whole bursts,
 * which depend on timing: only the bytes are checked there.) */
Test(recv_buffer, a_hook_with_blocks_smaller_than_its_large_keeps_a_streaming_receive)
{
    hook h;
    pact_loop *loop = hooked_loop(&h, 3000, 4000);
    const uint64_t total = 4u << 20;
    reader rd;
    stream_through(loop, &h, &rd, total, 0);
    if (reads_by_readiness(loop))
        cr_assert_geq(rd.landed_bytes, total * 9 / 10,
                      "only %llu of %llu bytes in the hook's memory (%u chunks elsewhere)",
                      (unsigned long long)rd.landed_bytes, (unsigned long long)total,
                      rd.elsewhere);
    hook_done(&h);
    test_loop_free(loop);
}
