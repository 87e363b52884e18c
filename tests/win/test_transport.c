/* SPDX-License-Identifier: MIT */
/* Stream transports on the completion port: the stream of src/stream.c
 * over loopback TCP sockets (pact_transport_open on a SOCKET) and over
 * named pipes (pact_transport_open_pipe on the HANDLEs of
 * pact_pipe_server_accept and pact_pipe_connect, PACT_STREAM_DUPLEX_PIPE),
 * under Wine. Bytes echoed in order with every byte checked, pause/resume
 * without loss, write flow control, close and abort from the protocol's
 * own callbacks, and connection_lost exactly once in every ending. Each
 * test body runs once per kind: the suite "transport" on TCP, the suite
 * "pipe_transport" on named pipes. */
#include <stdio.h>

#include "helpers.h"

#define MIB (1024u * 1024u)

typedef struct side {
    pact_transport *t;
    int made, lost, lost_err, eof;
    uint64_t received;     /* bytes delivered, each checked */
    int pattern_ok;
    int echo;              /* write back what arrives */
    int close_on_made, close_on_data, abort_on_data;
    uint64_t data_calls_after_close;
    int closed_by_us;
    int paused_writing, resumed_writing;
    /* pause reading every pause_every bytes, resume after resume_ms */
    uint64_t pause_every, next_pause;
    unsigned resume_ms;
    int pauses;
    pact_loop *loop;
} side;

static void on_made(pact_transport *t, void *user)
{
    side *s = user;
    s->made++;
    s->t = t;
    if (s->close_on_made) {
        cr_assert_eq(pact_transport_close(t), 0);
        s->closed_by_us = 1;
    }
}

static void on_resume(pact_loop *loop, void *user)
{
    (void)loop;
    side *s = user;
    if (!s->lost)
        cr_assert_eq(pact_transport_resume_reading(s->t), 0);
}

static void on_data(pact_transport *t, const void *data, size_t len, void *user)
{
    side *s = user;
    if (s->closed_by_us) {
        s->data_calls_after_close++;
        return;
    }
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        if (p[i] != test_pattern_byte(s->received + i))
            s->pattern_ok = 0;
    s->received += len;
    if (s->echo)
        cr_assert_eq(pact_transport_write(t, data, len), 0);
    if (s->close_on_data) {
        cr_assert_eq(pact_transport_close(t), 0);
        s->closed_by_us = 1;
    } else if (s->abort_on_data) {
        cr_assert_eq(pact_transport_abort(t), 0);
        s->closed_by_us = 1;
    } else if (s->pause_every && s->received >= s->next_pause) {
        /* The next boundary of a fixed grid over the stream, not
         * pause_every after wherever this receive ended: the number of
         * pauses then does not depend on how the socket cut the stream
         * into receives (full 64 KiB ones, or 24-32 KiB ones when the
         * reader catches up with the writer under load). */
        s->next_pause += s->pause_every;
        cr_assert_eq(pact_transport_pause_reading(t), 0);
        cr_assert_not(pact_transport_is_reading(t));
        s->pauses++;
        cr_assert_geq(pact_call_later(s->loop, s->resume_ms * MS, on_resume, s), 0);
    }
}

static int on_eof(pact_transport *t, void *user)
{
    (void)t;
    side *s = user;
    s->eof++;
    return 0; /* close */
}

static void on_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    side *s = user;
    s->lost++;
    s->lost_err = err;
}

static void on_pause_writing(pact_transport *t, void *user)
{
    (void)t;
    ((side *)user)->paused_writing++;
}

static void on_resume_writing(pact_transport *t, void *user)
{
    (void)t;
    ((side *)user)->resumed_writing++;
}

static const pact_protocol proto = {
    .connection_made = on_made,
    .data_received = on_data,
    .eof_received = on_eof,
    .connection_lost = on_lost,
    .pause_writing = on_pause_writing,
    .resume_writing = on_resume_writing,
};

static void side_init(side *s, pact_loop *loop)
{
    memset(s, 0, sizeof *s);
    s->pattern_ok = 1;
    s->loop = loop;
}

/* Which pair the test bodies run on: loopback TCP, or a named pipe. */
static int over_pipes;

typedef struct pipe_rec {
    int calls;
    int64_t result;
} pipe_rec;

static void pipe_record(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    pipe_rec *r = user;
    r->calls++;
    r->result = c->result;
}

/* A connected named pipe made by pact: the server's accepted instance and
 * the client's handle, both overlapped. */
static void make_pipe_pair(pact_loop *loop, HANDLE *client, HANDLE *server)
{
    static int n;
    char name[96];
    snprintf(name, sizeof name, "\\\\.\\pipe\\pact-transport-%lu-%d",
             (unsigned long)GetCurrentProcessId(), n++);
    pact_pipe_server *srv = NULL;
    cr_assert_eq(pact_pipe_server_open(loop, name, &srv), 0);
    pipe_rec acc = {0}, con = {0};
    cr_assert_gt(pact_pipe_server_accept(srv, pipe_record, &acc), 0);
    cr_assert_gt(pact_pipe_connect(loop, name, pipe_record, &con), 0);
    run_until(loop, &acc.calls, 5000);
    run_until(loop, &con.calls, 5000);
    cr_assert_gt(acc.result, 0, "accept: %s", pact_strerror((int)acc.result));
    cr_assert_gt(con.result, 0, "connect: %s", pact_strerror((int)con.result));
    cr_assert_eq(pact_pipe_server_close(srv), 0);
    *client = (HANDLE)(intptr_t)con.result;
    *server = (HANDLE)(intptr_t)acc.result;
}

/* Both ends of a loopback pair (or a named pipe) as transports of one
 * loop. */
static void open_pair(pact_loop *loop, side *a, side *b)
{
    pact_transport *ta = NULL, *tb = NULL;
    if (over_pipes) {
        HANDLE ca, cb;
        make_pipe_pair(loop, &ca, &cb);
        cr_assert_eq(pact_transport_open_pipe(loop, ca, PACT_STREAM_DUPLEX_PIPE,
                                              &proto, a, &ta), 0);
        cr_assert_eq(pact_transport_open_pipe(loop, cb, PACT_STREAM_DUPLEX_PIPE,
                                              &proto, b, &tb), 0);
        cr_assert_eq(pact_transport_kind(ta), PACT_STREAM_DUPLEX_PIPE);
        cr_assert_not(pact_transport_can_write_eof(ta));
    } else {
        SOCKET ca, cb;
        make_tcp_pair(&ca, &cb);
        cr_assert_eq(pact_transport_open(loop, ca, PACT_STREAM_SOCKET, &proto,
                                         a, &ta), 0);
        cr_assert_eq(pact_transport_open(loop, cb, PACT_STREAM_SOCKET, &proto,
                                         b, &tb), 0);
    }
    a->t = ta;
    b->t = tb;
    run_until(loop, &b->made, 5000);
    run_until(loop, &a->made, 5000);
}

static void write_pattern(pact_transport *t, uint64_t total)
{
    static uint8_t chunk[64 * 1024];
    for (uint64_t pos = 0; pos < total; pos += sizeof chunk) {
        size_t n = total - pos < sizeof chunk ? (size_t)(total - pos) : sizeof chunk;
        test_fill_pattern(chunk, n, pos);
        cr_assert_eq(pact_transport_write(t, chunk, n), 0);
    }
}

/* pact_loop_run_once_flags()'s flags for run_until_u64: PACT_RUN_AGAIN
 * drives the loop as pact.asyncio does on Linux. */
static unsigned run_flags;

static void run_until_u64(pact_loop *loop, const volatile uint64_t *v,
                          uint64_t want, unsigned limit_ms)
{
    uint64_t end = pact_now() + limit_ms * MS;
    while (*v < want) {
        cr_assert(pact_now() < end, "timed out at %llu of %llu bytes",
                  (unsigned long long)*v, (unsigned long long)want);
        cr_assert_geq(pact_loop_run_once_flags(loop, 10 * (int64_t)MS,
                                               run_flags), 0);
    }
    if (run_flags & PACT_RUN_AGAIN)
        cr_assert_eq(pact_loop_flush(loop), 0);
}

static void echo_4_mib_in_order_then_eof_closes_both_once(void)
{
    pact_loop *loop = test_loop_new();
    side a, b;
    side_init(&a, loop);
    side_init(&b, loop);
    b.echo = 1;
    open_pair(loop, &a, &b);
    write_pattern(a.t, 4 * MIB);
    run_until_u64(loop, &a.received, 4 * MIB, 30000);
    cr_assert(a.pattern_ok);
    cr_assert(b.pattern_ok);
    cr_assert_eq(b.received, 4 * MIB);
    if (over_pipes) {
        /* A pipe has no half-close: a's close is b's end of file. */
        cr_assert_eq(pact_transport_write_eof(a.t), -ENOTSUP);
        cr_assert_eq(pact_transport_close(a.t), 0);
        run_until(loop, &a.lost, 5000);
        run_until(loop, &b.lost, 5000);
        cr_assert_eq(b.eof, 1);
        cr_assert_eq(a.lost, 1);
        cr_assert_eq(b.lost, 1);
        cr_assert_eq(a.lost_err, 0);
        cr_assert_eq(b.lost_err, 0);
        test_loop_free(loop);
        return;
    }
    cr_assert_eq(pact_transport_write_eof(a.t), 0);
    /* b sees EOF and closes (eof_received returned 0); a then sees EOF. */
    run_until(loop, &a.lost, 5000);
    run_until(loop, &b.lost, 5000);
    cr_assert_eq(b.eof, 1);
    cr_assert_eq(a.eof, 1);
    cr_assert_eq(a.lost_err, 0);
    cr_assert_eq(b.lost_err, 0);
    /* More turns of the loop call nothing again. */
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(a.lost, 1);
    cr_assert_eq(b.lost, 1);
    test_loop_free(loop);
}

static void pause_and_resume_reading_lose_nothing(void)
{
    pact_loop *loop = test_loop_new();
    side a, b;
    side_init(&a, loop);
    side_init(&b, loop);
    b.pause_every = 100 * 1024;
    b.next_pause = b.pause_every;
    b.resume_ms = 2;
    open_pair(loop, &a, &b);
    write_pattern(a.t, 4 * MIB);
    run_until_u64(loop, &b.received, 4 * MIB, 40000);
    cr_assert(b.pattern_ok, "a byte was lost, doubled or reordered");
    cr_assert_eq(b.received, 4 * MIB);
    /* A receive is at most the loop's 64 KiB buffer, less than
     * pause_every: each 100 KiB boundary falls in a receive of its own
     * and pauses reading once. */
    cr_assert_eq(b.pauses, (int)(4 * MIB / b.pause_every),
                 "%d pauses for %u boundaries", b.pauses,
                 (unsigned)(4 * MIB / b.pause_every));
    cr_assert_eq(pact_transport_close(a.t), 0);
    run_until(loop, &b.lost, 5000);
    run_until(loop, &a.lost, 5000);
    cr_assert_eq(a.lost, 1);
    cr_assert_eq(b.lost, 1);
    test_loop_free(loop);
}

/* high 0: pact_transport_set_write_marks' zero mark (asyncio's high=0),
 * a pause while a byte is buffered, the resume once none is. */
static void a_paused_reader_makes_the_writer_pause_and_resume(size_t high,
                                                              size_t low)
{
    pact_loop *loop = test_loop_new();
    side a, b;
    side_init(&a, loop);
    side_init(&b, loop);
    open_pair(loop, &a, &b);
    cr_assert_eq(pact_transport_set_write_marks(a.t, high, low), 0);
    cr_assert_eq(pact_transport_pause_reading(b.t), 0);
    /* Far more than the socket buffers hold: a's buffer passes its mark. */
    write_pattern(a.t, 16 * MIB);
    cr_assert_eq(a.paused_writing, 1);
    cr_assert_gt(pact_transport_write_buffer_size(a.t), high);
    for (int i = 0; i < 20; i++)
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    cr_assert_eq(a.resumed_writing, 0, "resumed while the reader is paused");
    cr_assert_eq(pact_transport_resume_reading(b.t), 0);
    run_until_u64(loop, &b.received, 16 * MIB, 40000);
    cr_assert(b.pattern_ok);
    cr_assert_eq(a.resumed_writing, 1);
    cr_assert_eq(pact_transport_write_buffer_size(a.t), 0);
    cr_assert_eq(pact_transport_abort(a.t), 0);
    run_until(loop, &a.lost, 5000);
    run_until(loop, &b.lost, 5000);
    test_loop_free(loop);
}

static void close_in_connection_made_loses_once_and_delivers_nothing(void)
{
    pact_loop *loop = test_loop_new();
    side a, b;
    side_init(&a, loop);
    side_init(&b, loop);
    b.close_on_made = 1;
    open_pair(loop, &a, &b);
    cr_assert_eq(pact_transport_write(a.t, "hello", 5), 0);
    run_until(loop, &b.lost, 5000);
    cr_assert_eq(b.lost_err, 0);
    /* b's close is the peer's EOF for a. */
    run_until(loop, &a.lost, 5000);
    cr_assert_eq(b.received, 0);
    cr_assert_eq(b.data_calls_after_close, 0);
    cr_assert_eq(a.lost, 1);
    cr_assert_eq(b.lost, 1);
    test_loop_free(loop);
}

static void close_and_abort_from_data_received_end_once(void)
{
    for (int abort_it = 0; abort_it < 2; abort_it++) {
        pact_loop *loop = test_loop_new();
        side a, b;
        side_init(&a, loop);
        side_init(&b, loop);
        b.echo = 1;
        b.close_on_data = !abort_it;
        b.abort_on_data = abort_it;
        open_pair(loop, &a, &b);
        /* As much as the socket buffers take at once: a has nothing
         * queued, so its own end does not wait for a flush to a peer that
         * stopped reading (Wine ends that peer with a FIN, not a reset). */
        write_pattern(a.t, 64 * 1024);
        run_until(loop, &b.lost, 10000);
        cr_assert_eq(b.lost_err, 0);
        cr_assert_eq(b.data_calls_after_close, 0,
                     "data delivered after close in data_received");
        cr_assert_gt(b.received, 0);
        cr_assert(b.pattern_ok);
        if (!abort_it) {
            /* close flushes: the echo of the first chunk reaches a. */
            run_until_u64(loop, &a.received, b.received, 10000);
            cr_assert(a.pattern_ok);
        }
        run_until(loop, &a.lost, 10000);
        for (int i = 0; i < 5; i++)
            pact_loop_run_once(loop, 0);
        /* b's end is a's EOF, or a reset where b left bytes unread. */
        cr_assert(a.lost_err == 0 || a.lost_err == -ECONNRESET,
                  "connection_lost(%d)", a.lost_err);
        cr_assert_eq(a.lost, 1);
        cr_assert_eq(b.lost, 1);
        test_loop_free(loop);
    }
}

static void loop_close_with_transports_open_loses_each_once(void)
{
    pact_loop *loop = test_loop_new();
    side a, b;
    side_init(&a, loop);
    side_init(&b, loop);
    open_pair(loop, &a, &b);
    cr_assert_eq(pact_transport_pause_reading(b.t), 0);
    write_pattern(a.t, 8 * MIB); /* a send in flight, bytes queued */
    pact_loop_run_once(loop, 0);
    cr_assert_eq(a.lost, 0);
    cr_assert_eq(b.lost, 0);
    test_loop_free(loop); /* closes them: connection_lost, then freed */
    cr_assert_eq(a.lost, 1);
    cr_assert_eq(b.lost, 1);
}

/* A peer's close is end of file: eof_received, then connection_lost(0),
 * once. (Wine turns closesocket with a zero linger into a FIN, so an
 * abortive close is not shown here.) */
/* Writes len bytes to an overlapped handle the loop does not use yet (not
 * associated with its port), waiting for them. */
static void write_handle(HANDLE h, const void *buf, DWORD len)
{
    OVERLAPPED ov = {0};
    ov.hEvent = CreateEventA(NULL, TRUE, FALSE, NULL);
    DWORD n = 0;
    if (!WriteFile(h, buf, len, NULL, &ov))
        cr_assert_eq(GetLastError(), ERROR_IO_PENDING);
    cr_assert(GetOverlappedResult(h, &ov, &n, TRUE));
    cr_assert_eq(n, len);
    CloseHandle(ov.hEvent);
}

static void peer_close_is_eof_then_one_connection_lost(void)
{
    pact_loop *loop = test_loop_new();
    side b;
    side_init(&b, loop);
    pact_transport *tb = NULL;
    uint8_t buf[1000];
    test_fill_pattern(buf, sizeof buf, 0);
    if (over_pipes) {
        HANDLE ca, cb;
        make_pipe_pair(loop, &ca, &cb);
        cr_assert_eq(pact_transport_open_pipe(loop, cb, PACT_STREAM_DUPLEX_PIPE,
                                              &proto, &b, &tb), 0);
        run_until(loop, &b.made, 5000);
        write_handle(ca, buf, sizeof buf);
        cr_assert(CloseHandle(ca));
    } else {
        SOCKET ca, cb;
        make_tcp_pair(&ca, &cb);
        cr_assert_eq(pact_transport_open(loop, cb, PACT_STREAM_SOCKET, &proto,
                                         &b, &tb), 0);
        run_until(loop, &b.made, 5000);
        cr_assert_eq(send(ca, (const char *)buf, sizeof buf, 0), (int)sizeof buf);
        cr_assert_eq(closesocket(ca), 0);
    }
    run_until(loop, &b.lost, 5000);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(b.received, sizeof buf);
    cr_assert(b.pattern_ok);
    cr_assert_eq(b.eof, 1);
    cr_assert_eq(b.lost, 1);
    cr_assert_eq(b.lost_err, 0);
    test_loop_free(loop);
}

static void names_and_pipe_kinds(void)
{
    pact_loop *loop = test_loop_new();
    side a, b;
    side_init(&a, loop);
    side_init(&b, loop);
    open_pair(loop, &a, &b);
    struct sockaddr_storage ss, ps;
    socklen_t sl = sizeof ss, pl = sizeof ps;
    if (over_pipes) {
        cr_assert_eq(pact_transport_sockname(a.t, &ss, &sl), -ENOTSOCK);
        cr_assert_eq(pact_transport_peername(b.t, &ps, &pl), -ENOTSOCK);
        cr_assert_gt(pact_transport_fd(a.t), 0);
    } else {
        cr_assert_eq(pact_transport_sockname(a.t, &ss, &sl), 0);
        cr_assert_eq(pact_transport_peername(b.t, &ps, &pl), 0);
        cr_assert_eq(ss.ss_family, AF_INET);
        cr_assert_eq(((struct sockaddr_in *)&ss)->sin_port,
                     ((struct sockaddr_in *)&ps)->sin_port);
    }
    /* A pipe kind on a SOCKET, and a socket kind on a HANDLE, are refused,
     * and what was given is closed all the same (the transport owns it on
     * failure). */
    SOCKET spare = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    cr_assert_neq(spare, INVALID_SOCKET);
    pact_transport *t = NULL;
    cr_assert_eq(pact_transport_open(loop, spare, PACT_STREAM_READ_PIPE,
                                     &proto, &a, &t), -EINVAL);
    cr_assert_eq(closesocket(spare), SOCKET_ERROR);
    cr_assert_eq(WSAGetLastError(), WSAENOTSOCK);
    HANDLE ev = CreateEventA(NULL, TRUE, FALSE, NULL);
    cr_assert_eq(pact_transport_open_pipe(loop, ev, PACT_STREAM_SOCKET,
                                          &proto, &a, &t), -EINVAL);
    cr_assert_not(CloseHandle(ev));
    cr_assert_eq(pact_transport_open_pipe(loop, INVALID_HANDLE_VALUE,
                                          PACT_STREAM_DUPLEX_PIPE, &proto, &a,
                                          &t), -EBADF);
    cr_assert_null(t);
    cr_assert_eq(pact_transport_close(a.t), 0);
    cr_assert_eq(pact_transport_close(b.t), 0);
    run_until(loop, &a.lost, 5000);
    run_until(loop, &b.lost, 5000);
    test_loop_free(loop);
}

/* The race behind asyncio's lost-data bug (bpo-33694): 2000 writes of
 * 16 KiB echoed back, while a timer pauses and resumes reading on both
 * ends every period: every byte arrives, in order, both ways. */
typedef struct toggler {
    pact_loop *loop;
    side *ends[2];
    uint64_t period_ns;
    int paused, toggles, stop;
} toggler;

static void toggle(pact_loop *loop, void *user)
{
    toggler *tg = user;
    if (tg->stop)
        return;
    tg->paused = !tg->paused;
    for (int i = 0; i < 2; i++) {
        side *s = tg->ends[i];
        if (s->lost || s->closed_by_us)
            continue;
        if (tg->paused)
            cr_assert_eq(pact_transport_pause_reading(s->t), 0);
        else
            cr_assert_eq(pact_transport_resume_reading(s->t), 0);
    }
    tg->toggles++;
    cr_assert_geq(pact_call_later(loop, tg->period_ns, toggle, tg), 0);
}

static void seed_race(uint64_t period_ns)
{
    pact_loop *loop = test_loop_new();
    side a, b;
    side_init(&a, loop);
    side_init(&b, loop);
    b.echo = 1;
    open_pair(loop, &a, &b);
    toggler tg = {.loop = loop, .ends = {&a, &b}, .period_ns = period_ns};
    cr_assert_geq(pact_call_later(loop, period_ns, toggle, &tg), 0);
    const uint64_t total = 2000ull * 16 * 1024;
    static uint8_t chunk[16 * 1024];
    for (uint64_t pos = 0; pos < total; pos += sizeof chunk) {
        test_fill_pattern(chunk, sizeof chunk, pos);
        cr_assert_eq(pact_transport_write(a.t, chunk, sizeof chunk), 0);
    }
    run_until_u64(loop, &a.received, total, 120000);
    tg.stop = 1;
    cr_assert_eq(b.received, total);
    cr_assert(b.pattern_ok, "the echo server lost or reordered bytes");
    cr_assert(a.pattern_ok, "the client lost or reordered bytes");
    cr_assert_gt(tg.toggles, 2);
    cr_log_info("%d pauses and resumes", tg.toggles);
    /* Leave both reading, then end both once. */
    if (tg.paused) {
        cr_assert_eq(pact_transport_resume_reading(a.t), 0);
        cr_assert_eq(pact_transport_resume_reading(b.t), 0);
    }
    cr_assert_eq(pact_transport_close(a.t), 0);
    run_until(loop, &a.lost, 10000);
    run_until(loop, &b.lost, 10000);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(a.lost, 1);
    cr_assert_eq(b.lost, 1);
    test_loop_free(loop);
}

static void seed_race_2000_x_16_kib_pausing_every_100_ms(void)
{
    seed_race(100 * MS);
}

static void seed_race_2000_x_16_kib_pausing_every_1_ms(void)
{
    seed_race(1 * MS);
}

/* ---- each body on TCP and on a named pipe ---- */

Test(transport, echo_4_mib_in_order_then_eof_closes_both_once, .timeout = 60)
{
    echo_4_mib_in_order_then_eof_closes_both_once();
}

Test(pipe_transport, echo_4_mib_in_order_then_eof_closes_both_once, .timeout = 60)
{
    over_pipes = 1;
    echo_4_mib_in_order_then_eof_closes_both_once();
}

/* The completion port takes PACT_RUN_AGAIN: every write that can go at
 * once went at once, so a run has nothing to hand over when it returns,
 * and pact_loop_flush() nothing either. */
Test(transport, echo_4_mib_in_order_running_again_at_once, .timeout = 60)
{
    run_flags = PACT_RUN_AGAIN;
    echo_4_mib_in_order_then_eof_closes_both_once();
}

Test(transport, run_once_flags_refuses_an_unknown_flag)
{
    pact_loop *loop = test_loop_new();
    cr_assert_eq(pact_loop_run_once_flags(loop, 0, 1u << 7), -EINVAL);
    cr_assert_eq(pact_loop_run_once_flags(loop, 0, PACT_RUN_AGAIN), 0);
    cr_assert_eq(pact_loop_flush(loop), 0);
    test_loop_free(loop);
}

Test(transport, pause_and_resume_reading_lose_nothing, .timeout = 60)
{
    pause_and_resume_reading_lose_nothing();
}

Test(pipe_transport, pause_and_resume_reading_lose_nothing, .timeout = 60)
{
    over_pipes = 1;
    pause_and_resume_reading_lose_nothing();
}

Test(transport, a_paused_reader_makes_the_writer_pause_and_resume, .timeout = 60)
{
    a_paused_reader_makes_the_writer_pause_and_resume(64 * 1024, 16 * 1024);
}

Test(pipe_transport, a_paused_reader_makes_the_writer_pause_and_resume, .timeout = 60)
{
    over_pipes = 1;
    a_paused_reader_makes_the_writer_pause_and_resume(64 * 1024, 16 * 1024);
}

Test(transport, a_zero_high_mark_pauses_and_resumes_once_empty, .timeout = 60)
{
    a_paused_reader_makes_the_writer_pause_and_resume(0, 0);
}

Test(pipe_transport, a_zero_high_mark_pauses_and_resumes_once_empty, .timeout = 60)
{
    over_pipes = 1;
    a_paused_reader_makes_the_writer_pause_and_resume(0, 0);
}

Test(transport, close_in_connection_made_loses_once_and_delivers_nothing)
{
    close_in_connection_made_loses_once_and_delivers_nothing();
}

Test(pipe_transport, close_in_connection_made_loses_once_and_delivers_nothing)
{
    over_pipes = 1;
    close_in_connection_made_loses_once_and_delivers_nothing();
}

Test(transport, close_and_abort_from_data_received_end_once)
{
    close_and_abort_from_data_received_end_once();
}

Test(pipe_transport, close_and_abort_from_data_received_end_once)
{
    over_pipes = 1;
    close_and_abort_from_data_received_end_once();
}

Test(transport, loop_close_with_transports_open_loses_each_once)
{
    loop_close_with_transports_open_loses_each_once();
}

Test(pipe_transport, loop_close_with_transports_open_loses_each_once)
{
    over_pipes = 1;
    loop_close_with_transports_open_loses_each_once();
}

Test(transport, peer_close_is_eof_then_one_connection_lost)
{
    peer_close_is_eof_then_one_connection_lost();
}

Test(pipe_transport, peer_close_is_eof_then_one_connection_lost)
{
    over_pipes = 1;
    peer_close_is_eof_then_one_connection_lost();
}

Test(transport, names_and_pipe_kinds)
{
    names_and_pipe_kinds();
}

Test(pipe_transport, names_and_pipe_kinds)
{
    over_pipes = 1;
    names_and_pipe_kinds();
}

Test(transport, seed_race_2000_x_16_kib_pausing_every_100_ms, .timeout = 180)
{
    seed_race_2000_x_16_kib_pausing_every_100_ms();
}

Test(pipe_transport, seed_race_2000_x_16_kib_pausing_every_100_ms, .timeout = 180)
{
    over_pipes = 1;
    seed_race_2000_x_16_kib_pausing_every_100_ms();
}

Test(transport, seed_race_2000_x_16_kib_pausing_every_1_ms, .timeout = 180)
{
    seed_race_2000_x_16_kib_pausing_every_1_ms();
}

Test(pipe_transport, seed_race_2000_x_16_kib_pausing_every_1_ms, .timeout = 180)
{
    over_pipes = 1;
    seed_race_2000_x_16_kib_pausing_every_1_ms();
}

/* ---- sendfile (TransmitFile) and the socket helpers: TCP only -------------- */

typedef struct sf_rec {
    int calls;
    int64_t result;
} sf_rec;

static void sf_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    sf_rec *r = user;
    r->calls++;
    r->result = c->result;
}

/* A file of `size` pattern bytes; its handle, opened for reading without
 * FILE_FLAG_OVERLAPPED (as most callers have one). */
static HANDLE pattern_file(uint64_t size, char *path, size_t path_len)
{
    char dir[MAX_PATH];
    GetTempPathA(sizeof dir, dir);
    snprintf(path, path_len, "%spact-sendfile-%lu.bin", dir,
             (unsigned long)GetCurrentProcessId());
    HANDLE w = CreateFileA(path, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
    cr_assert_neq(w, INVALID_HANDLE_VALUE);
    static uint8_t chunk[64 * 1024];
    for (uint64_t pos = 0; pos < size; pos += sizeof chunk) {
        DWORD n = size - pos < sizeof chunk ? (DWORD)(size - pos) : (DWORD)sizeof chunk;
        test_fill_pattern(chunk, n, pos);
        DWORD done = 0;
        cr_assert(WriteFile(w, chunk, n, &done, NULL));
        cr_assert_eq(done, n);
    }
    CloseHandle(w);
    HANDLE r = CreateFileA(path, GENERIC_READ, FILE_SHARE_READ, NULL,
                           OPEN_EXISTING, FILE_FLAG_SEQUENTIAL_SCAN, NULL);
    cr_assert_neq(r, INVALID_HANDLE_VALUE);
    return r;
}

/* Collects what arrives: expects `head`, then file bytes from `from`,
 * then `tail`. */
typedef struct collector {
    uint64_t got;
    uint64_t file_len, from;
    const char *head, *tail;
    int bad, lost;
} collector;

static void col_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    collector *c = user;
    const uint8_t *p = data;
    size_t hl = strlen(c->head);
    for (size_t i = 0; i < len; i++, c->got++) {
        uint8_t want;
        if (c->got < hl)
            want = (uint8_t)c->head[c->got];
        else if (c->got < hl + c->file_len)
            want = test_pattern_byte(c->from + c->got - hl);
        else
            want = (uint8_t)c->tail[c->got - hl - c->file_len];
        if (p[i] != want)
            c->bad++;
    }
}

static void col_lost(pact_transport *t, int err, void *user)
{
    (void)t, (void)err;
    ((collector *)user)->lost++;
}

static const pact_protocol col_proto = {
    .data_received = col_data,
    .connection_lost = col_lost,
};

/* Bytes written before a sendfile go first, then the file range (from an
 * offset, sent with TransmitFile), then bytes written while it runs; the
 * callback gets the count; the file's position is not moved; count 0
 * sends to the end of the file. */
Test(transport, sendfile_sends_the_range_between_the_writes, .timeout = 60)
{
    pact_loop *loop = test_loop_new();
    SOCKET cs, ss;
    make_tcp_pair(&cs, &ss);
    side a;
    side_init(&a, loop);
    pact_transport *ta = NULL, *tb = NULL;
    cr_assert_eq(pact_transport_open(loop, cs, PACT_STREAM_SOCKET, &proto, &a,
                                     &ta), 0);
    collector col = {.file_len = 3 * MIB - 1000, .from = 1000,
                     .head = "head:", .tail = ":tail"};
    cr_assert_eq(pact_transport_open(loop, ss, PACT_STREAM_SOCKET, &col_proto,
                                     &col, &tb), 0);
    run_until(loop, &a.made, 3000);
    char path[MAX_PATH];
    HANDLE f = pattern_file(3 * MIB, path, sizeof path);
    cr_assert_eq(pact_transport_write(ta, "head:", 5), 0);
    sf_rec r = {0};
    cr_assert_eq(pact_transport_sendfile(ta, f, 1000, 0, sf_done, &r), 0);
    cr_assert_eq(pact_transport_sendfile(ta, f, 0, 1, sf_done, &r), -EBUSY);
    cr_assert_eq(pact_transport_write(ta, ":tail", 5), 0);
    uint64_t total = 5 + col.file_len + 5;
    run_until_u64(loop, &col.got, total, 30000);
    run_until(loop, &r.calls, 3000);
    cr_assert_eq(r.result, (int64_t)col.file_len);
    cr_assert_eq(col.bad, 0, "bytes out of order or wrong");
    LARGE_INTEGER zero = {0}, pos;
    cr_assert(SetFilePointerEx(f, zero, &pos, FILE_CURRENT));
    cr_assert_eq(pos.QuadPart, 0, "the file's position moved");
    /* A second range, given a count. */
    collector *c2 = &col;
    c2->got = 0;
    c2->from = 7;
    c2->file_len = 100000;
    c2->head = "";
    c2->tail = "";
    sf_rec r2 = {0};
    cr_assert_eq(pact_transport_sendfile(ta, f, 7, 100000, sf_done, &r2), 0);
    run_until(loop, &r2.calls, 10000);
    run_until_u64(loop, &col.got, 100000, 10000);
    cr_assert_eq(r2.result, 100000);
    cr_assert_eq(col.bad, 0);
    cr_assert_eq(pact_transport_sendfile(ta, INVALID_HANDLE_VALUE, 0, 1, sf_done,
                                         &r2), -EINVAL);
    cr_assert_eq(pact_transport_close(ta), 0);
    cr_assert_eq(pact_transport_close(tb), 0);
    run_until(loop, &a.lost, 5000);
    run_until(loop, &col.lost, 5000);
    CloseHandle(f);
    DeleteFileA(path);
    test_loop_free(loop);
}

/* An abort while the range is being sent: the sendfile's callback once
 * (cancelled, or with what was sent), connection_lost once. */
Test(transport, abort_during_sendfile_calls_back_once, .timeout = 60)
{
    pact_loop *loop = test_loop_new();
    side a, b;
    side_init(&a, loop);
    side_init(&b, loop);
    open_pair(loop, &a, &b);
    cr_assert_eq(pact_transport_pause_reading(b.t), 0); /* the range waits */
    char path[MAX_PATH];
    HANDLE f = pattern_file(16 * MIB, path, sizeof path);
    sf_rec r = {0};
    cr_assert_eq(pact_transport_sendfile(a.t, f, 0, 0, sf_done, &r), 0);
    for (int i = 0; i < 10; i++)
        pact_loop_run_once(loop, 2 * (int64_t)MS);
    cr_assert_eq(r.calls, 0);
    cr_assert_eq(pact_transport_abort(a.t), 0);
    run_until(loop, &r.calls, 5000);
    run_until(loop, &a.lost, 5000);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 1 * (int64_t)MS);
    cr_assert_eq(r.calls, 1);
    cr_assert(r.result == -ECANCELED || (r.result >= 0 && r.result < 16 * (int64_t)MIB),
              "%lld", (long long)r.result);
    cr_assert_eq(a.lost, 1);
    cr_assert_eq(pact_transport_close(b.t), 0);
    run_until(loop, &b.lost, 5000);
    CloseHandle(f);
    DeleteFileA(path);
    test_loop_free(loop);
}

/* pact_tcp_listen and pact_tcp_socket make sockets for the port: a
 * listener on a chosen port and a socket that connects to it, both
 * carrying transports. */
Test(transport, tcp_listen_and_tcp_socket_make_port_sockets)
{
    pact_loop *loop = test_loop_new();
    int l = pact_tcp_listen("127.0.0.1", 0, 16);
    cr_assert_geq(l, 0, "%s", pact_strerror(l));
    int port = pact_socket_port(l);
    cr_assert_gt(port, 0);
    cr_assert_eq(pact_tcp_listen("not-an-address", 0, 16), -EINVAL);
    cr_assert_eq(pact_tcp_socket(AF_UNIX), -EAFNOSUPPORT);
    int c = pact_tcp_socket(AF_INET);
    cr_assert_geq(c, 0, "%s", pact_strerror(c));
    struct sockaddr_storage to;
    socklen_t tolen;
    cr_assert_eq(pact_sockaddr_parse("127.0.0.1", (uint16_t)port, &to, &tolen), 0);
    sf_rec con = {0}, acc = {0};
    cr_assert_gt(pact_connect(loop, (SOCKET)c, (struct sockaddr *)&to, tolen,
                              sf_done, &con), 0);
    cr_assert_gt(pact_accept(loop, (SOCKET)l, sf_done, &acc), 0);
    run_until(loop, &con.calls, 5000);
    run_until(loop, &acc.calls, 5000);
    cr_assert_eq(con.result, 0, "%s", pact_strerror((int)con.result));
    cr_assert_gt(acc.result, 0);
    side a, b;
    side_init(&a, loop);
    side_init(&b, loop);
    b.echo = 1;
    cr_assert_eq(pact_transport_open(loop, (SOCKET)c, PACT_STREAM_SOCKET, &proto,
                                     &a, &a.t), 0);
    cr_assert_eq(pact_transport_open(loop, (SOCKET)acc.result, PACT_STREAM_SOCKET,
                                     &proto, &b, &b.t), 0);
    write_pattern(a.t, 256 * 1024);
    run_until_u64(loop, &a.received, 256 * 1024, 10000);
    cr_assert(a.pattern_ok);
    cr_assert(b.pattern_ok);
    cr_assert_eq(pact_transport_close(a.t), 0);
    run_until(loop, &a.lost, 5000);
    run_until(loop, &b.lost, 5000);
    closesocket((SOCKET)l);
    test_loop_free(loop);
}

/* docs/contract.md §6 on Windows: a reply written from data_received to a
 * peer that went with our bytes unread. There is no eager send here
 * (every write is an overlapped WSASend) and Windows fails both the send
 * and the receive as a reset (WSAECONNRESET): connection_lost reports
 * ECONNRESET, where the Linux engines report the reply's EPIPE. */
Test(transport, a_reply_to_a_peer_gone_with_our_bytes_unread_is_econnreset)
{
    pact_loop *loop = test_loop_new();
    side b;
    side_init(&b, loop);
    b.echo = 1;
    pact_transport *tb = NULL;
    SOCKET ca, cb;
    make_tcp_pair(&ca, &cb);
    cr_assert_eq(pact_transport_open(loop, cb, PACT_STREAM_SOCKET, &proto, &b, &tb), 0);
    run_until(loop, &b.made, 5000);
    cr_assert_eq(pact_transport_write(tb, "unread", 6), 0);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 2 * MS);
    cr_assert_eq(pact_transport_write_buffer_size(tb), 0);
    uint8_t request[7];
    test_fill_pattern(request, sizeof request, 0);
    cr_assert_eq(send(ca, (const char *)request, sizeof request, 0), (int)sizeof request);
    cr_assert_eq(closesocket(ca), 0); /* with our bytes unread: a reset */
    run_until(loop, &b.lost, 5000);
    cr_assert_eq(b.received, sizeof request);
    cr_assert(b.pattern_ok);
    cr_assert_eq(b.lost, 1);
    cr_assert_eq(b.lost_err, -ECONNRESET, "lost with %s", pact_strerror(b.lost_err));
    test_loop_free(loop);
}
