/* SPDX-License-Identifier: MIT */
/* pact_transport_sendfile: ranges, a 100 MB file, order with writes around
 * it, the source's file position, the peer closing midway, a blocking
 * socket, and a sendfile started from another's callback. */
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>

#include "recorder.h"

static void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(sendfile, .timeout = 60, .init = ignore_sigpipe);

static unsigned char pattern_byte(uint64_t i)
{
    return (unsigned char)((i * 2654435761u) >> 13 ^ (i >> 20));
}

/* An unlinked temp file of size bytes with the pattern; *hash is its
 * FNV-1a when hash is non-NULL. */
static int pattern_file(size_t size, uint64_t *hash)
{
    char path[] = "/tmp/pact-sendfile-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    size_t chunk = 1 << 20;
    unsigned char *buf = malloc(chunk);
    uint64_t h = FNV_OFFSET;
    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern_byte(off + i);
        if (hash)
            h = fnv1a(h, buf, n);
        cr_assert_eq(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
    }
    free(buf);
    if (hash)
        *hash = h;
    return fd;
}

typedef struct sf_result {
    int calls;
    int64_t result;
    int lost_at_cb; /* connection_lost had already run */
    rec *sender;
} sf_result;

static void on_sendfile(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    sf_result *s = user;
    s->calls++;
    s->result = c->result;
    if (s->sender && s->sender->lost)
        s->lost_at_cb = 1;
}

/* A sender transport and a receiver transport over loopback TCP. */
static void tcp_transports(pact_loop *loop, rec *snd, rec *rcv, pact_transport **ts,
                           pact_transport **tr)
{
    int c, s;
    make_tcp_pair(&c, &s);
    cr_assert_eq(pact_transport_open(loop, s, PACT_STREAM_SOCKET, &rec_protocol,
                                     snd, ts), 0);
    cr_assert_eq(pact_transport_open(loop, c, PACT_STREAM_SOCKET, &rec_protocol,
                                     rcv, tr), 0);
}

Test(sendfile, a_middle_range_arrives_exactly)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int fd = pattern_file(64 * 1024, NULL);
    cr_assert_eq(lseek(fd, 123, SEEK_SET), 123);
    rec snd, rcv;
    rec_init(&snd);
    rec_init(&rcv);
    rcv.keep_data = 1;
    pact_transport *ts, *tr;
    tcp_transports(loop, &snd, &rcv, &ts, &tr);
    sf_result res = {0};
    cr_assert_eq(pact_transport_sendfile(ts, fd, 1000, 5000, on_sendfile, &res), 0);
    cr_expect_eq(pact_transport_sendfile(ts, fd, 0, 10, on_sendfile, &res), -EBUSY);
    RUN_UNTIL(loop, res.calls, 5000);
    cr_expect_eq(res.result, 5000);
    pact_transport_close(ts);
    RUN_UNTIL(loop, rcv.lost && snd.lost, 5000);
    cr_assert_eq(rcv.nbytes, 5000);
    for (size_t i = 0; i < 5000; i++)
        if ((unsigned char)rcv.data[i] != pattern_byte(1000 + i))
            cr_assert_fail("byte %zu differs", i);
    cr_expect_eq(lseek(fd, 0, SEEK_CUR), 123, "the file position moved");
    rec_expect_done(&snd);
    rec_expect_done(&rcv);
    cr_expect_eq(rcv.eofs, 1);
    cr_expect_eq(snd.lost_err, 0);
    cr_expect_eq(res.calls, 1);
    close(fd);
    test_loop_free(loop);
    rec_free(&rcv);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(sendfile, writes_before_and_after_keep_their_order)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    size_t size = 3 * 1024 * 1024 + 17;
    int fd = pattern_file(size, NULL);
    rec snd, rcv;
    rec_init(&snd);
    rec_init(&rcv);
    rcv.keep_data = 1;
    pact_transport *ts, *tr;
    tcp_transports(loop, &snd, &rcv, &ts, &tr);
    RUN_UNTIL(loop, snd.made, 5000);
    sf_result res = {0};
    cr_assert_eq(pact_transport_write(ts, "HEAD", 4), 0);
    cr_assert_eq(pact_transport_sendfile(ts, fd, 0, 0, on_sendfile, &res), 0);
    cr_assert_eq(pact_transport_write(ts, "TA", 2), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(pact_transport_write(ts, "IL", 2), 0);
    cr_assert_eq(pact_transport_close(ts), 0); /* flushes everything first */
    RUN_UNTIL(loop, rcv.lost && snd.lost, 10000);
    cr_expect_eq(res.calls, 1);
    cr_expect_eq(res.result, (int64_t)size);
    cr_assert_eq(rcv.nbytes, 4 + size + 4);
    cr_expect(memcmp(rcv.data, "HEAD", 4) == 0, "HEAD first");
    for (size_t i = 0; i < size; i++)
        if ((unsigned char)rcv.data[4 + i] != pattern_byte(i))
            cr_assert_fail("file byte %zu differs", i);
    cr_expect(memcmp(rcv.data + 4 + size, "TAIL", 4) == 0, "TAIL last");
    cr_expect_eq(lseek(fd, 0, SEEK_CUR), 0);
    rec_expect_done(&snd);
    rec_expect_done(&rcv);
    cr_expect_eq(snd.lost_err, 0);
    close(fd);
    test_loop_free(loop);
    rec_free(&rcv);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(sendfile, one_hundred_megabytes_checksum)
{
    int fds0 = count_open_fds();
    size_t size = 100u << 20;
    uint64_t want;
    int fd = pattern_file(size, &want);
    pact_loop *loop = test_loop_new();
    rec snd, rcv;
    rec_init(&snd);
    rec_init(&rcv);
    pact_transport *ts, *tr;
    tcp_transports(loop, &snd, &rcv, &ts, &tr);
    sf_result res = {0};
    uint64_t start = pact_now();
    cr_assert_eq(pact_transport_sendfile(ts, fd, 0, 0, on_sendfile, &res), 0);
    RUN_UNTIL(loop, res.calls && rcv.nbytes == size, 30000);
    cr_expect_eq(res.result, (int64_t)size);
    cr_expect_eq(rcv.hash, want, "checksum differs");
    cr_expect_lt(pact_now() - start, 10000 * MS, "took %llu ms",
                 (unsigned long long)((pact_now() - start) / MS));
    cr_expect_eq(lseek(fd, 0, SEEK_CUR), 0);
    pact_transport_close(ts);
    RUN_UNTIL(loop, rcv.lost && snd.lost, 5000);
    rec_expect_done(&snd);
    rec_expect_done(&rcv);
    close(fd);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(sendfile, the_peer_closing_midway_is_an_error_once)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int fd = pattern_file(32u << 20, NULL);
    int c, s;
    make_tcp_pair(&c, &s);
    rec snd;
    rec_init(&snd);
    pact_transport *ts;
    cr_assert_eq(pact_transport_open(loop, s, PACT_STREAM_SOCKET, &rec_protocol,
                                     &snd, &ts), 0);
    sf_result res = {.sender = &snd};
    cr_assert_eq(pact_transport_sendfile(ts, fd, 0, 0, on_sendfile, &res), 0);
    char buf[65536];
    size_t got = 0;
    RUN_UNTIL(loop, try_read(c, buf, sizeof buf, &got), 5000);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c);
    RUN_UNTIL(loop, res.calls && snd.lost, 5000);
    cr_expect_lt(res.result, 0, "sendfile result %lld", (long long)res.result);
    cr_expect(res.result == -EPIPE || res.result == -ECONNRESET,
              "sendfile gave %s", pact_strerror((int)res.result));
    cr_expect_eq(res.lost_at_cb, 0, "the sendfile callback ran after connection_lost");
    cr_expect_lt(snd.lost_err, 0, "connection_lost(%d)", snd.lost_err);
    run_for(loop, 20);
    cr_expect_eq(res.calls, 1);
    rec_expect_done(&snd);
    close(fd);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* The transport was given a blocking socket: sendfile(2) must still never
 * block the loop (the receiver here is on the same loop). */
Test(sendfile, a_blocking_socket_does_not_block_the_loop, .timeout = 30)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    size_t size = 8u << 20;
    uint64_t want;
    int fd = pattern_file(size, &want);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    rec snd, rcv;
    rec_init(&snd);
    rec_init(&rcv);
    pact_transport *ts, *tr;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &rec_protocol,
                                     &snd, &ts), 0);
    cr_assert_eq(pact_transport_open(loop, sv[1], PACT_STREAM_SOCKET, &rec_protocol,
                                     &rcv, &tr), 0);
    sf_result res = {0};
    cr_assert_eq(pact_transport_sendfile(ts, fd, 0, size, on_sendfile, &res), 0);
    RUN_UNTIL(loop, res.calls && rcv.nbytes == size, 20000);
    cr_expect_eq(res.result, (int64_t)size);
    cr_expect_eq(rcv.hash, want);
    pact_transport_close(ts);
    RUN_UNTIL(loop, rcv.lost && snd.lost, 5000);
    rec_expect_done(&snd);
    rec_expect_done(&rcv);
    close(fd);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* A second sendfile started from the first one's callback runs too. */
typedef struct chain {
    pact_transport *t;
    int fd;
    int calls;
    int64_t results[2];
} chain;

static void on_chained(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    chain *ch = user;
    ch->results[ch->calls++] = c->result;
    if (ch->calls == 1) {
        cr_expect_eq(pact_transport_sendfile(ch->t, ch->fd, 100, 50, on_chained, ch),
                     0);
        /* Written after it, and close waits for it. */
        cr_expect_eq(pact_transport_write(ch->t, "END", 3), 0);
        cr_expect_eq(pact_transport_close(ch->t), 0);
    }
}

Test(sendfile, a_sendfile_started_from_the_callback_runs)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int fd = pattern_file(4096, NULL);
    rec snd, rcv;
    rec_init(&snd);
    rec_init(&rcv);
    rcv.keep_data = 1;
    pact_transport *ts, *tr;
    tcp_transports(loop, &snd, &rcv, &ts, &tr);
    chain ch = {.t = ts, .fd = fd};
    cr_assert_eq(pact_transport_sendfile(ts, fd, 0, 10, on_chained, &ch), 0);
    RUN_UNTIL(loop, ch.calls == 2, 5000);
    cr_expect_eq(ch.results[0], 10);
    cr_expect_eq(ch.results[1], 50);
    RUN_UNTIL(loop, rcv.lost && snd.lost, 5000);
    cr_assert_eq(rcv.nbytes, 63);
    cr_expect(memcmp(rcv.data + 60, "END", 3) == 0);
    for (size_t i = 0; i < 60; i++)
        cr_assert_eq((unsigned char)rcv.data[i],
                     pattern_byte(i < 10 ? i : 100 + (i - 10)));
    rec_expect_done(&snd);
    rec_expect_done(&rcv);
    close(fd);
    test_loop_free(loop);
    rec_free(&rcv);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* A pipe as the source: sendfile(2) refuses it (ESPIPE); the transport
 * falls back to reading and sending, in order with the writes around it.
 * The second half reaches the pipe only later, from a timer on the same
 * loop: a fallback that blocked on the pipe would never see it. */
typedef struct pipe_feed {
    int wfd;
    const unsigned char *data;
    size_t off, len;
} pipe_feed;

static void feed_rest(pact_loop *loop, void *user)
{
    (void)loop;
    pipe_feed *f = user;
    while (f->off < f->len) {
        ssize_t n = write(f->wfd, f->data + f->off, f->len - f->off);
        cr_assert_gt(n, 0);
        f->off += (size_t)n;
    }
    close(f->wfd);
    f->wfd = -1;
}

static void sendfile_from_a_pipe(size_t count, size_t fed, int64_t want_result)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    size_t size = 48 * 1024; /* fits in the pipe's buffer */
    unsigned char *data = malloc(size);
    for (size_t i = 0; i < size; i++)
        data[i] = pattern_byte(i);
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    pipe_feed feed = {.wfd = p[1], .data = data, .len = fed};
    size_t first = fed / 2;
    cr_assert_eq(write(p[1], data, first), (ssize_t)first);
    feed.off = first;
    rec snd, rcv;
    rec_init(&snd);
    rec_init(&rcv);
    rcv.keep_data = 1;
    pact_transport *ts, *tr;
    tcp_transports(loop, &snd, &rcv, &ts, &tr);
    RUN_UNTIL(loop, snd.made, 5000);
    sf_result res = {0};
    cr_assert_eq(pact_transport_write(ts, "HEAD", 4), 0);
    cr_assert_eq(pact_transport_sendfile(ts, p[0], 0, count, on_sendfile, &res), 0);
    cr_assert_eq(pact_transport_write(ts, "TAIL", 4), 0);
    cr_assert_gt(pact_call_later(loop, 20 * 1000 * 1000, feed_rest, &feed), 0);
    RUN_UNTIL(loop, res.calls == 1, 5000);
    cr_expect_eq(res.result, want_result, "sendfile gave %lld",
                 (long long)res.result);
    cr_expect_eq(snd.lost, 0, "the transport was torn down");
    cr_assert_eq(pact_transport_close(ts), 0);
    RUN_UNTIL(loop, rcv.lost && snd.lost, 5000);
    cr_expect_eq(snd.lost_err, 0, "connection_lost(%s)", pact_err_name(snd.lost_err));
    size_t body = (size_t)want_result;
    cr_assert_eq(rcv.nbytes, 4 + body + 4);
    cr_expect(memcmp(rcv.data, "HEAD", 4) == 0, "HEAD first");
    cr_expect(memcmp(rcv.data + 4, data, body) == 0, "the pipe's bytes, in order");
    cr_expect(memcmp(rcv.data + 4 + body, "TAIL", 4) == 0, "TAIL last");
    rec_expect_done(&snd);
    rec_expect_done(&rcv);
    close(p[0]);
    if (feed.wfd >= 0)
        close(feed.wfd);
    test_loop_free(loop);
    rec_free(&rcv);
    free(data);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(sendfile, a_pipe_source_falls_back_to_read_and_send)
{
    sendfile_from_a_pipe(48 * 1024, 48 * 1024, 48 * 1024);
}

Test(sendfile, a_pipe_source_that_ends_early_sends_what_it_had)
{
    /* Asked for more than the writer ever writes: its close ends the
     * range, as the end of a short file does. */
    sendfile_from_a_pipe(48 * 1024, 10000, 10000);
}

/* A chunk of the fallback (read + send) is sent by an op that the read's
 * completion starts: no callback of the caller waits for it, so a run
 * that ran that completion has handed the send to the kernel when it
 * returns (pact_loop_run_once in include/pact.h: the next send a
 * transport started when the one before completed), as it hands over a
 * write queued behind a send. The read is the range's first op to
 * complete (its send the second), and the socket takes the whole chunk
 * at once. */
static uint64_t ops_completed(pact_loop *loop)
{
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    return st.ops_completed;
}

Test(sendfile, a_chunk_read_by_a_run_is_sent_when_the_run_returns)
{
    pact_loop *loop = test_loop_new();
    enum { SIZE = 1000 };
    char data[SIZE], got[SIZE];
    memset(data, 'f', sizeof data);
    int p[2], sv[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    cr_assert_eq(write(p[1], data, SIZE), SIZE);
    make_socketpair(sv);
    rec r;
    rec_init(&r);
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &rec_protocol,
                                     &r, &t), 0);
    sf_result res = {0};
    cr_assert_eq(pact_transport_sendfile(t, p[0], 0, SIZE, on_sendfile, &res), 0);
    uint64_t base = ops_completed(loop);
    int at_peer = 0;
    for (int runs = 0; at_peer < SIZE; runs++) {
        cr_assert_lt(runs, 100, "%d bytes at the peer", at_peer);
        pact_loop_run_once(loop, 10 * (int64_t)MS);
        cr_assert_eq(ioctl(sv[1], FIONREAD, &at_peer), 0);
        if (ops_completed(loop) > base) /* the read's callback ran */
            cr_assert_eq(at_peer, SIZE, "run %d read the chunk and returned with "
                         "%d bytes at the peer", runs, at_peer);
    }
    cr_assert_eq(read(sv[1], got, SIZE), SIZE);
    cr_assert_eq(memcmp(got, data, SIZE), 0);
    RUN_UNTIL(loop, res.calls == 1, 5000);
    cr_assert_eq(res.result, SIZE);
    cr_assert_eq(pact_transport_close(t), 0);
    RUN_UNTIL(loop, r.lost, 5000);
    close(p[0]);
    close(p[1]);
    close(sv[1]);
    test_loop_free(loop);
    rec_free(&r);
}
