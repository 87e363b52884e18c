/* SPDX-License-Identifier: MIT */
/* pact_transport_write_received(): writing back bytes that sit in the
 * receive buffer the loop lent to data_received. On io_uring with a
 * provided buffer ring they are sent from that buffer, which goes back to
 * the loop when the send is done; everywhere else they are copied. Either
 * way the bytes, their order with other writes and the flow control are
 * those of pact_transport_write(). The loops here have very few receive
 * buffers, so a buffer that never came back stalls the test. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>

#include "helpers.h"

TestSuite(write_received, .timeout = 60);

/* A loop with two receive buffers of 4 KiB. */
static pact_loop *few_buffers_loop(void)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.recv_buffer_count = 2;
    o.recv_buffer_size = 4096;
    return test_loop_create_with(&o);
}

/* Whether this loop sends from its receive buffers (else it copies). */
static int lends_buffers(pact_loop *loop)
{
    return pact_loop_engine(loop) == PACT_ENGINE_URING &&
           strcmp(pact_loop_recv_multishot_mode(loop), "multishot") == 0;
}

/* ---- an echo server and a checking client on one loop ------------------- */

#define ECHO_TOTAL (4u << 20)
#define ECHO_CHUNK (64u * 1024)

typedef struct echo_test {
    pact_transport *client, *server;
    uint64_t sent, verified, mismatches;
    uint64_t zero_copy; /* writes that left the bytes in the loop's buffer */
    int client_paused;  /* the client's writes are above the high mark */
    int server_paused;  /* the server's echo is: it stopped reading */
    int split;          /* the server echoes in three writes, see echo_data */
    /* The client sends a request of one receive buffer (4 KiB) once the
     * echo of the one before is back, instead of streaming 64 KiB writes
     * up to its high mark. */
    int requests;
    int lost, done;
} echo_test;

#define REQUEST_SIZE 4096u

static void client_write_more(echo_test *e)
{
    static uint8_t chunk[ECHO_CHUNK];
    if (e->requests) {
        if (e->verified == e->sent && e->sent < ECHO_TOTAL) {
            test_fill_pattern(chunk, REQUEST_SIZE, e->sent);
            cr_assert_eq(pact_transport_write(e->client, chunk, REQUEST_SIZE), 0);
            e->sent += REQUEST_SIZE;
        }
        return;
    }
    while (!e->client_paused && e->sent < ECHO_TOTAL) {
        test_fill_pattern(chunk, ECHO_CHUNK, e->sent);
        cr_assert_eq(pact_transport_write(e->client, chunk, ECHO_CHUNK), 0);
        e->sent += ECHO_CHUNK;
    }
}

static void client_made(pact_transport *t, void *user)
{
    echo_test *e = user;
    e->client = t;
    client_write_more(e);
}

static void client_data(pact_transport *t, const void *data, size_t len, void *user)
{
    echo_test *e = user;
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        if (p[i] != test_pattern_byte(e->verified + i))
            e->mismatches++;
    e->verified += len;
    if (e->verified == ECHO_TOTAL)
        pact_transport_close(t);
    else if (e->requests)
        client_write_more(e);
}

static void client_pause_writing(pact_transport *t, void *user)
{
    (void)t;
    ((echo_test *)user)->client_paused = 1;
}

static void client_resume_writing(pact_transport *t, void *user)
{
    (void)t;
    echo_test *e = user;
    e->client_paused = 0;
    client_write_more(e);
}

static void echo_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    echo_test *e = user;
    cr_assert_eq(err, 0, "connection_lost: %s", pact_strerror(err));
    if (++e->lost == 2)
        e->done = 1;
}

static const pact_protocol client_proto = {
    .connection_made = client_made,
    .data_received = client_data,
    .connection_lost = echo_lost,
    .pause_writing = client_pause_writing,
    .resume_writing = client_resume_writing,
};

/* One write_received, counted when it left the bytes where they were
 * (the write buffer grew by exactly len while nothing was queued). */
static void echo_part(echo_test *e, pact_transport *t, const char *p, size_t len)
{
    size_t before = pact_transport_write_buffer_size(t);
    cr_assert_eq(pact_transport_write_received(t, p, len), 0);
    if (before == 0 && pact_transport_write_buffer_size(t) == len)
        e->zero_copy++;
}

static void echo_data(pact_transport *t, const void *data, size_t len, void *user)
{
    echo_test *e = user;
    const char *p = data;
    if (!e->split || len < 3) {
        echo_part(e, t, p, len);
        return;
    }
    /* Three writes of one chunk, the middle one by pact_transport_write:
     * the order must hold whichever of them is sent from the buffer. */
    size_t a = len / 3, b = len / 3;
    echo_part(e, t, p, a);
    cr_assert_eq(pact_transport_write(t, p + a, b), 0);
    echo_part(e, t, p + a + b, len - a - b);
}

static int echo_eof(pact_transport *t, void *user)
{
    (void)t;
    (void)user;
    return 0;
}

static void echo_pause_writing(pact_transport *t, void *user)
{
    ((echo_test *)user)->server_paused = 1;
    pact_transport_pause_reading(t);
}

static void echo_resume_writing(pact_transport *t, void *user)
{
    ((echo_test *)user)->server_paused = 0;
    pact_transport_resume_reading(t);
}

static const pact_protocol echo_proto = {
    .data_received = echo_data,
    .eof_received = echo_eof,
    .connection_lost = echo_lost,
    .pause_writing = echo_pause_writing,
    .resume_writing = echo_resume_writing,
};

static uint64_t buffer_waits_of(pact_loop *loop)
{
    pact_loop_metrics m = PACT_LOOP_METRICS_INIT;
    cr_assert_eq(pact_loop_get_metrics(loop, &m), 0);
    return m.recv_buffer_waits;
}

/* The echo of 4 MiB through two receive buffers, by requests of one
 * buffer each (sent from the buffer they arrived in while the other
 * receives the next), or streamed: the receive then runs the ring dry
 * and reads by readiness into the loop-wide buffer, whose bytes are
 * copied (engine_uring.c, "a receive that streams"). */
static void run_echo(int split, int requests)
{
    pact_loop *loop = few_buffers_loop();
    int c, s;
    make_tcp_pair(&c, &s);
    echo_test e;
    memset(&e, 0, sizeof e);
    e.split = split;
    e.requests = requests;
    /* A request's echo in three writes would otherwise wait for the
     * client's delayed ACK (Nagle) at every round. */
    int one = 1;
    cr_assert_eq(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), 0);
    cr_assert_eq(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), 0);
    pact_transport *ct, *st;
    cr_assert_eq(pact_transport_open(loop, c, PACT_STREAM_SOCKET, &client_proto, &e, &ct), 0);
    cr_assert_eq(pact_transport_open(loop, s, PACT_STREAM_SOCKET, &echo_proto, &e, &st), 0);
    run_until(loop, &e.done, 30000);
    cr_assert_eq(e.verified, ECHO_TOTAL, "the client got %llu of %u bytes",
                 (unsigned long long)e.verified, ECHO_TOTAL);
    cr_assert_eq(e.mismatches, 0, "%llu bytes wrong or out of order",
                 (unsigned long long)e.mismatches);
    cr_log_info("%llu of the writes sent from the loop's buffer, %llu waits "
                "for a buffer", (unsigned long long)e.zero_copy,
                (unsigned long long)buffer_waits_of(loop));
    if (lends_buffers(loop) && requests)
        cr_assert_gt(e.zero_copy, 0, "no write was sent from the loop's buffer");
    if (lends_buffers(loop) && !requests)
        cr_assert_gt(buffer_waits_of(loop), 0, "two buffers never ran out?");
    test_loop_free(loop);
}

Test(write_received, an_echo_through_two_buffers_keeps_every_byte)
{
    run_echo(0, 1);
}

Test(write_received, mixed_with_copied_writes_the_order_holds)
{
    run_echo(1, 1);
}

Test(write_received, a_streamed_echo_keeps_every_byte_and_its_order)
{
    run_echo(0, 0);
    run_echo(1, 0);
}

/* ---- bytes that are not in the lent buffer ------------------------------ */

typedef struct copy_test {
    int got;
    int lost;
} copy_test;

static void copy_made(pact_transport *t, void *user)
{
    (void)user;
    /* Outside data_received: nothing is lent, so the bytes are copied. */
    char hello[6] = "hello";
    cr_assert_eq(pact_transport_write_received(t, hello, 5), 0);
    memset(hello, 'X', sizeof hello);
}

static void copy_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)data;
    copy_test *c = user;
    c->got += (int)len;
    /* Inside data_received, but other memory: copied too. */
    char reply[4] = {'o', 'k', '\n', 0};
    cr_assert_eq(pact_transport_write_received(t, reply, 3), 0);
    memset(reply, 'X', sizeof reply);
    cr_assert_eq(pact_transport_write_received(t, NULL, 0), 0);
    cr_assert_eq(pact_transport_write_received(NULL, reply, 1), -EINVAL);
    cr_assert_eq(pact_transport_write_received(t, NULL, 1), -EINVAL);
}

static void copy_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    ((copy_test *)user)->lost = 1;
}

static const pact_protocol copy_proto = {
    .connection_made = copy_made,
    .data_received = copy_data,
    .connection_lost = copy_lost,
};

static void read_exactly(pact_loop *loop, int fd, char *out, size_t want)
{
    size_t got = 0;
    uint64_t end = pact_now() + 10000 * MS;
    while (got < want) {
        cr_assert(pact_now() < end, "got %zu of %zu bytes", got, want);
        pact_loop_run_once(loop, 0);
        ssize_t n = recv(fd, out + got, want - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        else
            poll(&(struct pollfd){.fd = fd, .events = POLLIN}, 1, 5);
    }
}

Test(write_received, bytes_outside_the_lent_buffer_are_copied)
{
    pact_loop *loop = few_buffers_loop();
    int sv[2];
    make_socketpair(sv);
    copy_test c = {0};
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &copy_proto, &c, &t), 0);
    char buf[16] = {0};
    read_exactly(loop, sv[1], buf, 5);
    cr_assert_str_eq(buf, "hello");
    cr_assert_eq(send(sv[1], "ping", 4, 0), 4);
    memset(buf, 0, sizeof buf);
    read_exactly(loop, sv[1], buf, 3);
    cr_assert_str_eq(buf, "ok\n");
    cr_assert_eq(c.got, 4);
    pact_transport_close(t);
    run_until(loop, &c.lost, 5000);
    close(sv[1]);
    test_loop_free(loop);
}

/* ---- a burst ------------------------------------------------------------- */

/* Three buffers' worth of bytes wait in the socket before the transport
 * reads. On io_uring the kernel says, with each chunk but the last, that
 * more bytes follow (they arrive in the same batch and would find a send
 * from the buffer still in flight): those chunks are written at once, as
 * pact_transport_write writes them, and only the last is sent from the
 * buffer. The echo comes back whole and in order either way. */
typedef struct burst_test {
    size_t got;
    int at_once;     /* the write left nothing queued */
    int from_buffer; /* the write left the bytes in the loop's buffer */
    int last_from_buffer;
} burst_test;

static void burst_data(pact_transport *t, const void *data, size_t len, void *user)
{
    burst_test *b = user;
    size_t before = pact_transport_write_buffer_size(t);
    cr_assert_eq(pact_transport_write_received(t, data, len), 0);
    size_t after = pact_transport_write_buffer_size(t);
    b->last_from_buffer = before == 0 && after == len;
    b->from_buffer += b->last_from_buffer;
    b->at_once += before == 0 && after == 0;
    b->got += len;
}

static const pact_protocol burst_proto = {.data_received = burst_data};

Test(write_received, a_burst_goes_out_at_once_but_its_last_chunk)
{
    pact_loop *loop = few_buffers_loop();
    int c, s;
    make_tcp_pair(&c, &s);
    enum { BURST = 3 * 4096 };
    static char data[BURST], back[BURST];
    test_fill_pattern((uint8_t *)data, BURST, 0);
    cr_assert_eq(send(c, data, BURST, 0), BURST);
    burst_test b = {0};
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, s, PACT_STREAM_SOCKET, &burst_proto, &b, &t), 0);
    read_exactly(loop, c, back, BURST);
    cr_assert_eq(memcmp(back, data, BURST), 0, "the echo differs");
    cr_assert_eq(b.got, BURST);
    cr_log_info("%d writes at once, %d from the buffer", b.at_once, b.from_buffer);
    if (lends_buffers(loop)) {
        cr_assert_geq(b.at_once, 1, "every chunk was sent from the buffer");
        cr_assert_eq(b.from_buffer, 1);
        cr_assert(b.last_from_buffer, "the burst's last chunk was written at once");
    } else {
        cr_assert_eq(b.from_buffer, 0);
    }
    pact_transport_close(t);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 0);
    close(c);
    test_loop_free(loop);
}

/* ---- a reader that does not read ---------------------------------------- */

/* The peer of `stuck` never reads: the echo fills its socket, and what a
 * send from the loop's buffer could not hand over is copied, so the
 * buffer goes back at once and another connection on the loop (with
 * only two buffers) keeps being served. Then the peer reads everything,
 * in order. */
typedef struct stuck_test {
    pact_transport *stuck;
    uint64_t echoed_in; /* bytes the stuck echo was given */
    uint64_t filler;    /* bytes written around it, read first */
    int stuck_lost;
    int paused;
} stuck_test;

static void stuck_data(pact_transport *t, const void *data, size_t len, void *user)
{
    stuck_test *st = user;
    st->echoed_in += len;
    cr_assert_eq(pact_transport_write_received(t, data, len), 0);
}

static void stuck_pause_writing(pact_transport *t, void *user)
{
    ((stuck_test *)user)->paused = 1;
    pact_transport_pause_reading(t);
}

static void stuck_resume_writing(pact_transport *t, void *user)
{
    ((stuck_test *)user)->paused = 0;
    pact_transport_resume_reading(t);
}

static void stuck_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    cr_assert_eq(err, 0);
    ((stuck_test *)user)->stuck_lost = 1;
}

static const pact_protocol stuck_proto = {
    .data_received = stuck_data,
    .connection_lost = stuck_lost,
    .pause_writing = stuck_pause_writing,
    .resume_writing = stuck_resume_writing,
};

/* Feeds a stuck echo (peer c never reads) until it stops reading: its
 * write buffer is above the high mark, everything the kernel would not
 * take was copied. Returns the bytes fed. */
static uint64_t feed_until_paused(pact_loop *loop, int c, stuck_test *st)
{
    static uint8_t chunk[16384];
    /* First the socket is filled behind the transport's back (the peer
     * reads these filler bytes first, see drain_stuck): the echo's first
     * send then finds no room at all. */
    memset(chunk, 'F', sizeof chunk);
    ssize_t n;
    while ((n = send(pact_transport_fd(st->stuck), chunk, sizeof chunk, MSG_DONTWAIT)) > 0)
        st->filler += (uint64_t)n;
    cr_assert_gt(st->filler, 0);
    uint64_t fed = 0;
    uint64_t end = pact_now() + 10000 * MS;
    while (!st->paused) {
        cr_assert(pact_now() < end, "the stuck echo never paused (fed %llu)",
                  (unsigned long long)fed);
        test_fill_pattern(chunk, sizeof chunk, fed);
        n = send(c, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n > 0)
            fed += (uint64_t)n;
        pact_loop_run_once(loop, 1 * (int64_t)MS);
    }
    cr_assert_gt(pact_transport_write_buffer_size(st->stuck), 0);
    return fed;
}

/* The stuck peer reads now: every byte it fed comes back, in order. */
static void drain_stuck(pact_loop *loop, int c, stuck_test *st, uint64_t fed)
{
    static uint8_t chunk[16384];
    uint64_t back = 0, wrong = 0, filler = 0;
    shutdown(c, SHUT_WR);
    while (filler < st->filler) {
        size_t want = st->filler - filler < sizeof chunk ? st->filler - filler : sizeof chunk;
        ssize_t n = recv(c, chunk, want, MSG_DONTWAIT);
        if (n > 0) {
            for (ssize_t i = 0; i < n; i++)
                cr_assert_eq(chunk[i], 'F');
            filler += (uint64_t)n;
        } else {
            pact_loop_run_once(loop, 0);
            poll(&(struct pollfd){.fd = c, .events = POLLIN}, 1, 1);
        }
    }
    uint64_t end = pact_now() + 20000 * MS;
    while (back < fed) {
        cr_assert(pact_now() < end, "got %llu of %llu bytes back",
                  (unsigned long long)back, (unsigned long long)fed);
        pact_loop_run_once(loop, 0);
        ssize_t n = recv(c, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n > 0) {
            for (ssize_t i = 0; i < n; i++)
                if (chunk[i] != test_pattern_byte(back + (uint64_t)i))
                    wrong++;
            back += (uint64_t)n;
        } else {
            poll(&(struct pollfd){.fd = c, .events = POLLIN}, 1, 1);
        }
    }
    cr_assert_eq(back, fed);
    cr_assert_eq(wrong, 0, "%llu bytes wrong or out of order", (unsigned long long)wrong);
    cr_assert_eq(st->echoed_in, fed);
    run_until(loop, &st->stuck_lost, 10000); /* the EOF closes it */
    close(c);
}

Test(write_received, a_reader_that_does_not_read_holds_no_loop_buffer)
{
    pact_loop *loop = few_buffers_loop();
    /* As many stuck echoes as the loop has buffers: had each kept one
     * for a send waiting on its reader, no other connection could be
     * read any more. */
    enum { NSTUCK = 2 };
    int c[NSTUCK];
    stuck_test st[NSTUCK];
    uint64_t fed[NSTUCK];
    memset(st, 0, sizeof st);
    for (int i = 0; i < NSTUCK; i++) {
        int s;
        make_tcp_pair(&c[i], &s);
        int small = 4096;
        cr_assert_eq(setsockopt(c[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
        cr_assert_eq(setsockopt(s, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
        cr_assert_eq(pact_transport_open(loop, s, PACT_STREAM_SOCKET, &stuck_proto,
                                         &st[i], &st[i].stuck), 0);
        fed[i] = feed_until_paused(loop, c[i], &st[i]);
    }

    /* Meanwhile another connection on the same two buffers is served. */
    echo_test e;
    memset(&e, 0, sizeof e);
    int c2, s2;
    make_tcp_pair(&c2, &s2);
    pact_transport *ct, *et;
    cr_assert_eq(pact_transport_open(loop, c2, PACT_STREAM_SOCKET, &client_proto, &e, &ct), 0);
    cr_assert_eq(pact_transport_open(loop, s2, PACT_STREAM_SOCKET, &echo_proto, &e, &et), 0);
    run_until(loop, &e.done, 30000);
    cr_assert_eq(e.verified, ECHO_TOTAL);
    cr_assert_eq(e.mismatches, 0);

    for (int i = 0; i < NSTUCK; i++)
        drain_stuck(loop, c[i], &st[i], fed[i]);
    test_loop_free(loop);
}

/* ---- abort with a send from the buffer in flight ------------------------ */

typedef struct abort_test {
    int lost, lost_err;
    uint64_t zero_copy;
} abort_test;

static void abort_data(pact_transport *t, const void *data, size_t len, void *user)
{
    abort_test *a = user;
    cr_assert_eq(pact_transport_write_received(t, data, len), 0);
    if (pact_transport_write_buffer_size(t) == len)
        a->zero_copy++;
    cr_assert_eq(pact_transport_abort(t), 0);
}

static void abort_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    abort_test *a = user;
    a->lost++;
    a->lost_err = err;
}

static const pact_protocol abort_proto = {
    .data_received = abort_data,
    .connection_lost = abort_lost,
};

Test(write_received, abort_with_a_send_from_the_buffer_in_flight_loses_once)
{
    pact_loop *loop = few_buffers_loop();
    /* More aborted connections than the loop has buffers: each one's
     * buffer must come back, or the later ones would never be read. */
    for (int i = 0; i < 8; i++) {
        int sv[2];
        make_socketpair(sv);
        abort_test a = {0};
        pact_transport *t;
        cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &abort_proto,
                                         &a, &t), 0);
        cr_assert_eq(send(sv[1], "abort me", 8, 0), 8);
        run_until(loop, &a.lost, 5000);
        cr_assert_eq(a.lost, 1);
        cr_assert_eq(a.lost_err, 0);
        if (lends_buffers(loop))
            cr_assert_eq(a.zero_copy, 1, "the write did not wait for the submission");
        pact_loop_run_once(loop, 0);
        cr_assert_eq(a.lost, 1, "connection_lost twice");
        close(sv[1]);
    }
    test_loop_free(loop);
}
