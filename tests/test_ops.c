/* SPDX-License-Identifier: MIT */
/* The operations layer: every operation works, on both engines (the runner
 * sets PACT_ENGINE). Results are what the kernel reports — short sends are
 * short, errors are negative errno values — and ops on one socket complete
 * in the order they were started. */
#include <arpa/inet.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "helpers.h"

TestSuite(ops, .timeout = 30);

/* What one op's callback saw. calls counts invocations (exactly once). */
typedef struct rec {
    int calls;
    int64_t result;
    size_t transferred;
    uint64_t at;
    int seq; /* position among completions in a test */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int had_addr;
} rec;

static int completion_seq;

static void rec_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    rec *r = user;
    r->calls++;
    r->result = c->result;
    r->transferred = c->transferred;
    r->at = pact_now();
    r->seq = completion_seq++;
    if (c->addr) {
        cr_assert_leq(c->addrlen, sizeof r->addr);
        memcpy(&r->addr, c->addr, c->addrlen);
        r->addrlen = c->addrlen;
        r->had_addr = 1;
    }
}

/* Runs until every rec in recs[0..n) has been called. */
static void run_until_all(pact_loop *loop, rec *recs, int n, unsigned limit_ms)
{
    uint64_t end = pact_now() + limit_ms * MS;
    for (;;) {
        int done = 1;
        for (int i = 0; i < n; i++)
            done &= recs[i].calls > 0;
        if (done)
            return;
        cr_assert(pact_now() < end, "timed out after %u ms", limit_ms);
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    }
}

static void fill_pattern(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)((i * 131u + seed * 7u + (i >> 11)) & 0xff);
}

/* Reads everything a non-blocking fd has queued right now. */
static size_t drain_fd(int fd, unsigned char *out, size_t cap)
{
    size_t got = 0;
    for (;;) {
        unsigned char tmp[65536];
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n <= 0)
            break;
        if (out && got + (size_t)n <= cap)
            memcpy(out + got, tmp, (size_t)n);
        got += (size_t)n;
    }
    return got;
}

/* ---- recv / send --------------------------------------------------------- */

static void send_recv_roundtrip(int a, int b)
{
    pact_loop *loop = test_loop_new();
    char out[] = "hello, pact";
    char in[64] = {0};
    rec rs = {0}, rr = {0};
    cr_assert_gt(pact_recv(loop, b, in, sizeof in, 0, rec_cb, &rr), 0);
    cr_assert_gt(pact_send(loop, a, out, strlen(out), 0, rec_cb, &rs), 0);
    rec both[2];
    (void)both;
    uint64_t end = pact_now() + 5000 * MS;
    while (!rs.calls || !rr.calls) {
        cr_assert(pact_now() < end);
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    }
    cr_assert_eq(rs.calls, 1);
    cr_assert_eq(rr.calls, 1);
    cr_assert_eq(rs.result, (int64_t)strlen(out), "send: %s",
                 pact_err_name((int)rs.result));
    cr_assert_eq(rr.result, (int64_t)strlen(out), "recv: %lld",
                 (long long)rr.result);
    cr_assert_str_eq(in, out);

    /* And back the other way. */
    memset(in, 0, sizeof in);
    memset(&rs, 0, sizeof rs);
    memset(&rr, 0, sizeof rr);
    cr_assert_gt(pact_send(loop, b, "pong", 4, 0, rec_cb, &rs), 0);
    cr_assert_gt(pact_recv(loop, a, in, sizeof in, 0, rec_cb, &rr), 0);
    while (!rs.calls || !rr.calls) {
        cr_assert(pact_now() < end);
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    }
    cr_assert_eq(rs.result, 4);
    cr_assert_eq(rr.result, 4);
    cr_assert_str_eq(in, "pong");
    test_loop_free(loop);
}

Test(ops, send_and_recv_on_a_socketpair)
{
    int sv[2];
    make_socketpair(sv);
    send_recv_roundtrip(sv[0], sv[1]);
    close(sv[0]);
    close(sv[1]);
}

Test(ops, send_and_recv_on_loopback_tcp)
{
    int c, s;
    make_tcp_pair(&c, &s);
    send_recv_roundtrip(c, s);
    close(c);
    close(s);
}

Test(ops, recv_of_a_closed_peer_gives_0)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char buf[16];
    rec r = {0};
    cr_assert_gt(pact_recv(loop, sv[1], buf, sizeof buf, 0, rec_cb, &r), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 0, "nothing to receive yet");
    close(sv[0]);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.result, 0);
    test_loop_free(loop);
    close(sv[1]);
}

Test(ops, send_reports_a_short_count_when_the_buffer_fills)
{
    int sv[2];
    make_socketpair(sv);
    int small = 4096;
    cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    cr_assert_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    size_t len = 4u << 20;
    unsigned char *out = malloc(len), *in = malloc(len);
    fill_pattern(out, len, 1);

    pact_loop *loop = test_loop_new();
    rec r = {0};
    cr_assert_gt(pact_send(loop, sv[0], out, len, 0, rec_cb, &r), 0);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.calls, 1);
    cr_assert_gt(r.result, 0, "send: %s", pact_err_name((int)r.result));
    cr_assert_lt(r.result, (int64_t)len, "4 MiB cannot fit a 4 KiB buffer");

    /* Exactly the bytes reported went out: the peer has that many, and
     * they are the start of the buffer. */
    size_t got = drain_fd(sv[1], in, len);
    cr_assert_eq(got, (size_t)r.result, "peer got %zu, send said %lld", got,
                 (long long)r.result);
    cr_assert_eq(memcmp(in, out, got), 0);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
    free(out);
    free(in);
}

/* A reader that takes 16 KiB at a time with a pause in between. */
typedef struct slow_reader {
    pact_loop *loop;
    int fd;
    unsigned char *buf;
    size_t len, got;
    unsigned char chunk[16384];
    int done, failed, rounds;
} slow_reader;

static void slow_read_next(pact_loop *loop, const pact_completion *c,
                           void *user);

static void slow_read_done(pact_loop *loop, const pact_completion *c, void *user)
{
    slow_reader *sr = user;
    if (c->result <= 0) {
        sr->failed = c->result < 0 ? (int)c->result : -EPIPE;
        sr->done = 1;
        return;
    }
    if (sr->got + (size_t)c->result > sr->len) {
        sr->failed = -EOVERFLOW;
        sr->done = 1;
        return;
    }
    memcpy(sr->buf + sr->got, sr->chunk, (size_t)c->result);
    sr->got += (size_t)c->result;
    sr->rounds++;
    if (sr->got == sr->len) {
        sr->done = 1;
        return;
    }
    cr_assert_gt(pact_sleep(loop, 100 * 1000, slow_read_next, sr), 0);
}

static void slow_read_next(pact_loop *loop, const pact_completion *c,
                           void *user)
{
    slow_reader *sr = user;
    cr_assert_eq(c->result, 0);
    cr_assert_gt(pact_recv(loop, sr->fd, sr->chunk, sizeof sr->chunk, 0,
                           slow_read_done, sr), 0);
}

Test(ops, send_all_delivers_megabytes_to_a_slow_reader_in_order)
{
    int c, s;
    make_tcp_pair(&c, &s);
    int small = 16384;
    setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    size_t len = 3u << 20;
    unsigned char *out = malloc(len);
    fill_pattern(out, len, 2);

    pact_loop *loop = test_loop_new();
    slow_reader sr = {.loop = loop, .fd = s, .buf = malloc(len), .len = len};
    rec w = {0};
    cr_assert_gt(pact_send_all(loop, c, out, len, 0, rec_cb, &w), 0);
    cr_assert_gt(pact_recv(loop, s, sr.chunk, sizeof sr.chunk, 0,
                           slow_read_done, &sr), 0);
    uint64_t end = pact_now() + 20000 * MS;
    while (!w.calls || !sr.done) {
        cr_assert(pact_now() < end, "sent %d, read %zu", w.calls, sr.got);
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    }
    cr_assert_eq(w.calls, 1);
    cr_assert_eq(w.result, (int64_t)len, "send_all: %lld (%s), transferred %zu",
                 (long long)w.result, pact_err_name((int)w.result),
                 w.transferred);
    cr_assert_eq(sr.failed, 0, "reader: %s", pact_err_name(sr.failed));
    cr_assert_eq(sr.got, len);
    cr_assert_eq(memcmp(sr.buf, out, len), 0, "bytes arrived out of order");
    cr_assert_gt(sr.rounds, 1);
    test_loop_free(loop);
    close(c);
    close(s);
    free(out);
    free(sr.buf);
}

/* ---- accept / connect / shutdown ----------------------------------------- */

static int connect_blocking(int port, struct sockaddr_in *local)
{
    int fd = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
    if (local) {
        socklen_t ll = sizeof *local;
        cr_assert_eq(getsockname(fd, (struct sockaddr *)local, &ll), 0);
    }
    return fd;
}

Test(ops, accept_gives_a_nonblocking_cloexec_fd_and_the_peer_address)
{
    int lfd = pact_tcp_listen("127.0.0.1", 0, 16);
    cr_assert_geq(lfd, 0);
    pact_loop *loop = test_loop_new();
    rec r = {0};
    cr_assert_gt(pact_accept(loop, lfd, rec_cb, &r), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 0, "no client yet");

    struct sockaddr_in local;
    int cfd = connect_blocking(pact_socket_port(lfd), &local);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.calls, 1);
    cr_assert_geq(r.result, 0, "accept: %s", pact_err_name((int)r.result));
    int afd = (int)r.result;
    int fl = fcntl(afd, F_GETFL);
    cr_assert(fl & O_NONBLOCK, "accepted fd is blocking");
    int fdfl = fcntl(afd, F_GETFD);
    cr_assert(fdfl & FD_CLOEXEC, "accepted fd is not close-on-exec");

    cr_assert(r.had_addr, "no peer address");
    cr_assert_eq(r.addrlen, sizeof(struct sockaddr_in));
    struct sockaddr_in *peer = (struct sockaddr_in *)&r.addr;
    cr_assert_eq(peer->sin_family, AF_INET);
    cr_assert_eq(peer->sin_port, local.sin_port, "peer port %u, client port %u",
                 ntohs(peer->sin_port), ntohs(local.sin_port));
    cr_assert_eq(peer->sin_addr.s_addr, htonl(INADDR_LOOPBACK));

    /* The fd is a live connection to that client. */
    cr_assert_eq(write(cfd, "x", 1), 1);
    char ch = 0;
    struct pollfd p = {.fd = afd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 5000), 1);
    cr_assert_eq(read(afd, &ch, 1), 1);
    cr_assert_eq(ch, 'x');
    test_loop_free(loop);
    close(afd);
    close(cfd);
    close(lfd);
}

Test(ops, accept_of_an_already_queued_client)
{
    int lfd = pact_tcp_listen("127.0.0.1", 0, 16);
    int cfd = connect_blocking(pact_socket_port(lfd), NULL);
    pact_loop *loop = test_loop_new();
    rec r = {0};
    cr_assert_gt(pact_accept(loop, lfd, rec_cb, &r), 0);
    run_until(loop, &r.calls, 5000);
    cr_assert_geq(r.result, 0, "accept: %s", pact_err_name((int)r.result));
    cr_assert(r.had_addr);
    close((int)r.result);
    test_loop_free(loop);
    close(cfd);
    close(lfd);
}

Test(ops, connect_to_a_listener_succeeds)
{
    int lfd = pact_tcp_listen("127.0.0.1", 0, 16);
    cr_assert_geq(lfd, 0);
    struct sockaddr_storage ss;
    socklen_t len;
    cr_assert_eq(pact_sockaddr_parse("127.0.0.1", (uint16_t)pact_socket_port(lfd),
                                     &ss, &len), 0);
    int fd = pact_tcp_socket(AF_INET);
    cr_assert_geq(fd, 0);
    pact_loop *loop = test_loop_new();
    rec r = {0};
    cr_assert_gt(pact_connect(loop, fd, (struct sockaddr *)&ss, len, rec_cb, &r), 0);
    /* The address was copied: scribbling on ours changes nothing. */
    memset(&ss, 0xff, sizeof ss);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, 0, "connect: %s", pact_err_name((int)r.result));

    /* Really connected: the listener has it, and bytes flow. */
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 5000), 1);
    int afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(afd, 0);
    cr_assert_eq(send(fd, "ok", 2, MSG_NOSIGNAL), 2);
    char buf[2];
    p.fd = afd;
    cr_assert_eq(poll(&p, 1, 5000), 1);
    cr_assert_eq(read(afd, buf, 2), 2);
    cr_assert_eq(memcmp(buf, "ok", 2), 0);
    test_loop_free(loop);
    close(afd);
    close(fd);
    close(lfd);
}

Test(ops, connect_to_a_closed_port_is_econnrefused)
{
    /* A port that was just free: bind, read the port, close. */
    int lfd = pact_tcp_listen("127.0.0.1", 0, 1);
    int port = pact_socket_port(lfd);
    close(lfd);
    struct sockaddr_storage ss;
    socklen_t len;
    cr_assert_eq(pact_sockaddr_parse("127.0.0.1", (uint16_t)port, &ss, &len), 0);
    int fd = pact_tcp_socket(AF_INET);
    pact_loop *loop = test_loop_new();
    rec r = {0};
    cr_assert_gt(pact_connect(loop, fd, (struct sockaddr *)&ss, len, rec_cb, &r), 0);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, -ECONNREFUSED, "connect: %s",
                 pact_err_name((int)r.result));
    test_loop_free(loop);
    close(fd);
}

Test(ops, shutdown_gives_the_peer_eof)
{
    int c, s;
    make_tcp_pair(&c, &s);
    pact_loop *loop = test_loop_new();
    char buf[16];
    rec rr = {0}, rs = {0};
    cr_assert_gt(pact_recv(loop, s, buf, sizeof buf, 0, rec_cb, &rr), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(rr.calls, 0);
    cr_assert_gt(pact_shutdown(loop, c, SHUT_WR, rec_cb, &rs), 0);
    run_until(loop, &rs.calls, 5000);
    cr_assert_eq(rs.result, 0, "shutdown: %s", pact_err_name((int)rs.result));
    run_until(loop, &rr.calls, 5000);
    cr_assert_eq(rr.calls, 1);
    cr_assert_eq(rr.result, 0, "the peer sees end of stream");
    /* The other direction still works (half close). */
    cr_assert_eq(send(s, "z", 1, MSG_NOSIGNAL), 1);
    struct pollfd p = {.fd = c, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 5000), 1);
    cr_assert_eq(read(c, buf, 1), 1);
    test_loop_free(loop);
    close(c);
    close(s);
}

/* ---- read / write -------------------------------------------------------- */

Test(ops, read_and_write_on_a_pipe)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    pact_loop *loop = test_loop_new();
    char buf[32] = {0};
    rec rr = {0}, rw = {0};
    /* The read waits: the pipe is empty. */
    cr_assert_gt(pact_read(loop, p[0], buf, sizeof buf, -1, rec_cb, &rr), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(rr.calls, 0, "read of an empty pipe completed: %lld",
                 (long long)rr.result);
    cr_assert_gt(pact_write(loop, p[1], "through the pipe", 16, -1, rec_cb, &rw), 0);
    run_until(loop, &rw.calls, 5000);
    run_until(loop, &rr.calls, 5000);
    cr_assert_eq(rw.result, 16, "write: %s", pact_err_name((int)rw.result));
    cr_assert_eq(rr.result, 16, "read: %s", pact_err_name((int)rr.result));
    cr_assert_str_eq(buf, "through the pipe");

    /* End of file once the writer is gone. */
    memset(&rr, 0, sizeof rr);
    close(p[1]);
    cr_assert_gt(pact_read(loop, p[0], buf, sizeof buf, -1, rec_cb, &rr), 0);
    run_until(loop, &rr.calls, 5000);
    cr_assert_eq(rr.result, 0);
    test_loop_free(loop);
    close(p[0]);
}

static int make_temp_file(void)
{
    char path[] = "/tmp/pact-test-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    return fd;
}

static int64_t op_sync(pact_loop *loop, pact_op started, rec *r)
{
    cr_assert_gt(started, 0, "start: %s", pact_err_name((int)started));
    run_until(loop, &r->calls, 5000);
    cr_assert_eq(r->calls, 1);
    int64_t res = r->result;
    memset(r, 0, sizeof *r);
    return res;
}

/* The caller's file status flags are the caller's: pact_read/pact_write
 * on a blocking pipe leave it blocking once they have completed (io_uring
 * never touched them; epoll used to set O_NONBLOCK for good). Both paths:
 * an op that completes at once, and one that has to wait. */
Test(ops, read_and_write_leave_a_blocking_pipes_flags_as_they_were)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    int rflags = fcntl(p[0], F_GETFL), wflags = fcntl(p[1], F_GETFL);
    cr_assert_eq(rflags & O_NONBLOCK, 0);
    cr_assert_eq(wflags & O_NONBLOCK, 0);
    pact_loop *loop = test_loop_new();
    char buf[32] = {0};
    rec rr = {0}, rw = {0};
    /* A read that waits (empty pipe), then a write that goes at once. */
    cr_assert_gt(pact_read(loop, p[0], buf, sizeof buf, -1, rec_cb, &rr), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(rr.calls, 0);
    cr_assert_gt(pact_write(loop, p[1], "blocking", 8, -1, rec_cb, &rw), 0);
    run_until(loop, &rw.calls, 5000);
    run_until(loop, &rr.calls, 5000);
    cr_assert_eq(rw.result, 8, "write: %s", pact_err_name((int)rw.result));
    cr_assert_eq(rr.result, 8, "read: %s", pact_err_name((int)rr.result));
    cr_assert_eq(fcntl(p[0], F_GETFL), rflags, "read end's flags changed");
    cr_assert_eq(fcntl(p[1], F_GETFL), wflags, "write end's flags changed");

    /* A read that completes at once (data already there). */
    cr_assert_eq(write(p[1], "ready", 5), 5);
    memset(&rr, 0, sizeof rr);
    cr_assert_gt(pact_read(loop, p[0], buf, sizeof buf, -1, rec_cb, &rr), 0);
    run_until(loop, &rr.calls, 5000);
    cr_assert_eq(rr.result, 5);
    cr_assert_eq(fcntl(p[0], F_GETFL), rflags, "read end's flags changed");

    /* A write that waits: the pipe is full, a read drains it. */
    cr_assert_eq(fcntl(p[1], F_SETFL, wflags | O_NONBLOCK), 0);
    static char fill[4096];
    while (write(p[1], fill, sizeof fill) > 0)
        ;
    cr_assert_eq(fcntl(p[1], F_SETFL, wflags), 0);
    memset(&rw, 0, sizeof rw);
    cr_assert_gt(pact_write(loop, p[1], "late", 4, -1, rec_cb, &rw), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(rw.calls, 0, "a write to a full pipe completed: %lld",
                 (long long)rw.result);
    char drain[4096];
    cr_assert_gt(read(p[0], drain, sizeof drain), 0);
    run_until(loop, &rw.calls, 5000);
    cr_assert_eq(rw.result, 4, "write: %s", pact_err_name((int)rw.result));
    cr_assert_eq(fcntl(p[1], F_GETFL), wflags, "write end's flags changed");
    test_loop_free(loop);
    close(p[0]);
    close(p[1]);
}

/* The same for a file that refuses per-call non-blocking I/O (a pty:
 * RWF_NOWAIT is EOPNOTSUPP there, so epoll sets O_NONBLOCK for the one
 * call only). */
Test(ops, read_leaves_a_blocking_ptys_flags_as_they_were)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    cr_assert_geq(master, 0);
    cr_assert_eq(grantpt(master), 0);
    cr_assert_eq(unlockpt(master), 0);
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    cr_assert_geq(slave, 0);
    int flags = fcntl(master, F_GETFL);
    cr_assert_eq(flags & O_NONBLOCK, 0);
    pact_loop *loop = test_loop_new();
    char buf[32] = {0};
    rec rr = {0};
    cr_assert_gt(pact_read(loop, master, buf, sizeof buf, -1, rec_cb, &rr), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(rr.calls, 0, "read of a silent pty completed: %lld",
                 (long long)rr.result);
    cr_assert_eq(write(slave, "hi\n", 3), 3);
    run_until(loop, &rr.calls, 5000);
    cr_assert_gt(rr.result, 0, "read: %s", pact_err_name((int)rr.result));
    cr_assert_eq(memcmp(buf, "hi", 2), 0);
    cr_assert_eq(fcntl(master, F_GETFL), flags, "the pty's flags changed");
    test_loop_free(loop);
    close(slave);
    close(master);
}

Test(ops, read_and_write_a_regular_file_at_offsets)
{
    int fd = make_temp_file();
    pact_loop *loop = test_loop_new();
    rec r = {0};
    char buf[32];

    cr_assert_eq(op_sync(loop, pact_write(loop, fd, "0123456789", 10, 0, rec_cb, &r), &r), 10);
    cr_assert_eq(op_sync(loop, pact_write(loop, fd, "AB", 2, 4, rec_cb, &r), &r), 2);
    /* Positioned writes leave the file position alone. */
    cr_assert_eq(lseek(fd, 0, SEEK_CUR), 0);

    memset(buf, 0, sizeof buf);
    cr_assert_eq(op_sync(loop, pact_read(loop, fd, buf, sizeof buf, 0, rec_cb, &r), &r), 10);
    cr_assert_str_eq(buf, "0123AB6789");
    memset(buf, 0, sizeof buf);
    cr_assert_eq(op_sync(loop, pact_read(loop, fd, buf, 3, 7, rec_cb, &r), &r), 3);
    cr_assert_str_eq(buf, "789");
    cr_assert_eq(lseek(fd, 0, SEEK_CUR), 0);

    /* -1: the current position, which then moves. */
    cr_assert_eq(lseek(fd, 2, SEEK_SET), 2);
    memset(buf, 0, sizeof buf);
    cr_assert_eq(op_sync(loop, pact_read(loop, fd, buf, 3, -1, rec_cb, &r), &r), 3);
    cr_assert_str_eq(buf, "23A");
    cr_assert_eq(lseek(fd, 0, SEEK_CUR), 5);
    memset(buf, 0, sizeof buf);
    cr_assert_eq(op_sync(loop, pact_read(loop, fd, buf, 2, -1, rec_cb, &r), &r), 2);
    cr_assert_str_eq(buf, "B6");
    cr_assert_eq(lseek(fd, 0, SEEK_CUR), 7);

    cr_assert_eq(lseek(fd, 8, SEEK_SET), 8);
    cr_assert_eq(op_sync(loop, pact_write(loop, fd, "XYZ", 3, -1, rec_cb, &r), &r), 3);
    cr_assert_eq(lseek(fd, 0, SEEK_CUR), 11);

    /* Past the end: 0 bytes, end of file. */
    cr_assert_eq(op_sync(loop, pact_read(loop, fd, buf, sizeof buf, 100, rec_cb, &r), &r), 0);

    char check[16] = {0};
    cr_assert_eq(pread(fd, check, sizeof check, 0), 11);
    cr_assert_str_eq(check, "0123AB67XYZ");
    test_loop_free(loop);
    close(fd);
}

/* ---- poll / sleep -------------------------------------------------------- */

Test(ops, poll_reports_readiness)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    rec out = {0}, in = {0};
    cr_assert_gt(pact_poll(loop, sv[0], POLLOUT, rec_cb, &out), 0);
    cr_assert_gt(pact_poll(loop, sv[1], POLLIN, rec_cb, &in), 0);
    run_until(loop, &out.calls, 5000);
    cr_assert_gt(out.result, 0, "poll: %s", pact_err_name((int)out.result));
    cr_assert(out.result & POLLOUT);
    for (int i = 0; i < 3; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(in.calls, 0, "POLLIN before any data: %lld", (long long)in.result);
    cr_assert_eq(write(sv[0], "d", 1), 1);
    run_until(loop, &in.calls, 5000);
    cr_assert_eq(in.calls, 1);
    cr_assert(in.result > 0 && (in.result & POLLIN), "revents %lld",
              (long long)in.result);
    /* Poll does not consume: the byte is still there. */
    char ch;
    cr_assert_eq(read(sv[1], &ch, 1), 1);
    cr_assert_eq(out.calls, 1);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(ops, sleep_is_never_early_and_sleeps_finish_in_order)
{
    pact_loop *loop = test_loop_new();
    uint64_t delays_ms[] = {25, 1, 10, 10, 0, 5};
    enum { N = sizeof delays_ms / sizeof delays_ms[0] };
    rec r[N];
    uint64_t due[N];
    memset(r, 0, sizeof r);
    completion_seq = 0;
    for (int i = 0; i < N; i++) {
        due[i] = pact_now() + delays_ms[i] * MS;
        cr_assert_gt(pact_sleep(loop, delays_ms[i] * MS, rec_cb, &r[i]), 0);
    }
    cr_assert_eq(pact_loop_run(loop), 0);
    int expected_seq[N] = {5, 1, 3, 4, 0, 2};
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].calls, 1);
        cr_assert_eq(r[i].result, 0);
        cr_expect_geq(r[i].at, due[i], "sleep %d woke %lld ns early", i,
                      (long long)(due[i] - r[i].at));
        cr_expect_eq(r[i].seq, expected_seq[i], "sleep %d finished at %d", i,
                     r[i].seq);
    }
    test_loop_free(loop);
}

/* ---- order and errors ---------------------------------------------------- */

Test(ops, queued_recvs_complete_in_order_with_data_in_order)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    enum { N = 6, CHUNK = 4 };
    char bufs[N][CHUNK];
    rec r[N];
    memset(r, 0, sizeof r);
    completion_seq = 0;
    for (int i = 0; i < N; i++)
        cr_assert_gt(pact_recv(loop, sv[1], bufs[i], CHUNK, 0, rec_cb, &r[i]), 0);
    pact_loop_run_once(loop, 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(r[i].calls, 0);
    /* One write carrying every chunk: each recv takes the next 4 bytes. */
    const char *data = "AAAABBBBCCCCDDDDEEEEFFFF";
    cr_assert_eq(write(sv[0], data, N * CHUNK), N * CHUNK);
    run_until_all(loop, r, N, 5000);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].calls, 1);
        cr_assert_eq(r[i].result, CHUNK, "recv %d: %lld", i, (long long)r[i].result);
        cr_assert_eq(r[i].seq, i, "recv %d completed at position %d", i, r[i].seq);
        cr_assert_eq(memcmp(bufs[i], data + i * CHUNK, CHUNK), 0,
                     "recv %d got %.4s", i, bufs[i]);
    }
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(ops, recvs_started_across_iterations_keep_their_order)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    enum { N = 8 };
    char bufs[N][2];
    rec r[N];
    memset(r, 0, sizeof r);
    completion_seq = 0;
    /* Each recv is submitted in its own iteration. */
    for (int i = 0; i < N; i++) {
        cr_assert_gt(pact_recv(loop, sv[1], bufs[i], 2, 0, rec_cb, &r[i]), 0);
        pact_loop_run_once(loop, 0);
    }
    for (int i = 0; i < N; i++) {
        char two[2] = {(char)('a' + i), (char)('A' + i)};
        cr_assert_eq(write(sv[0], two, 2), 2);
    }
    run_until_all(loop, r, N, 5000);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].result, 2);
        cr_assert_eq(r[i].seq, i);
        cr_assert_eq(bufs[i][0], 'a' + i, "recv %d got %.2s", i, bufs[i]);
        cr_assert_eq(bufs[i][1], 'A' + i);
    }
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* A recv waiting behind another on its socket (per-fd order: it is not
 * with the engine yet) can still time out or be cancelled: it completes at
 * once, takes no data, and the others keep their order. */
Test(ops, a_recv_waiting_its_turn_times_out_and_cancels_without_taking_data)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char b[4][8] = {{0}};
    rec r[4];
    memset(r, 0, sizeof r);
    completion_seq = 0;
    pact_op op[4];
    for (int i = 0; i < 4; i++) {
        op[i] = pact_recv(loop, sv[1], b[i], sizeof b[i], 0, rec_cb, &r[i]);
        cr_assert_gt(op[i], 0);
    }
    cr_assert_eq(pact_op_set_timeout(loop, op[1], 20 * MS), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(pact_op_cancel(loop, op[2]), 0);
    run_until(loop, &r[1].calls, 5000);
    run_until(loop, &r[2].calls, 5000);
    cr_assert_eq(r[1].result, -ETIMEDOUT);
    cr_assert_eq(r[2].result, -ECANCELED);
    cr_assert_eq(r[0].calls, 0, "the head still waits for data");
    cr_assert_eq(send(sv[0], "x", 1, 0), 1);
    run_until(loop, &r[0].calls, 5000);
    cr_assert_eq(send(sv[0], "y", 1, 0), 1);
    run_until(loop, &r[3].calls, 5000);
    cr_assert_eq(r[0].result, 1);
    cr_assert_eq(b[0][0], 'x');
    cr_assert_eq(r[3].result, 1);
    cr_assert_eq(b[3][0], 'y');
    cr_assert_lt(r[0].seq, r[3].seq);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* A receive whose bytes (or end of file) were waiting when it started
 * completes within the next few loop turns, not after a wait's timeout. */
static void run_until_delivered_at_once(pact_loop *loop, rec *r)
{
    uint64_t start = pact_now();
    for (int turn = 0; turn < 3 && !r->calls; turn++)
        cr_assert_geq(pact_loop_run_once(loop, 2000 * (int64_t)MS), 0);
    cr_assert_eq(r->calls, 1, "what was waiting was not delivered");
    cr_assert_lt(pact_now() - start, 1000 * MS, "delivered only after a timeout");
}

/* A receive whose socket the last receive drained (it came back short):
 * the epoll engine starts the next one without trying it first
 * (engine_epoll.c, note_receive). Whatever came meanwhile is still
 * delivered at once: bytes, the end of file, the next datagram, on a
 * socket the loop has not seen readiness for since. */
static void short_read_then(pact_loop *loop, int reader, int writer, int type)
{
    char in[64];
    rec r = {0};
    cr_assert_eq(send(writer, "ab", 2, 0), 2);
    cr_assert_eq(send(writer, "cde", 3, 0), 3); /* a second datagram */
    cr_assert_gt(pact_recv(loop, reader, in, sizeof in, 0, rec_cb, &r), 0);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.result, type == SOCK_STREAM ? 5 : 2, "the short read: %lld",
                 (long long)r.result);
    if (type == SOCK_STREAM) /* what the datagram socket still holds */
        cr_assert_eq(send(writer, "fgh", 3, 0), 3);
    memset(&r, 0, sizeof r);
    memset(in, 0, sizeof in);
    cr_assert_gt(pact_recv(loop, reader, in, sizeof in, 0, rec_cb, &r), 0);
    run_until_delivered_at_once(loop, &r);
    cr_assert_eq(r.result, 3);
    cr_assert_eq(memcmp(in, type == SOCK_STREAM ? "fgh" : "cde", 3), 0);
}

Test(ops, a_recv_after_a_short_read_gets_bytes_that_came_before_it_started)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    short_read_then(loop, sv[1], sv[0], SOCK_STREAM);
    /* The end of file that came before the next receive started. */
    cr_assert_eq(send(sv[0], "i", 1, 0), 1);
    char in[64];
    rec r = {0};
    cr_assert_gt(pact_recv(loop, sv[1], in, sizeof in, 0, rec_cb, &r), 0);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.result, 1);
    cr_assert_eq(shutdown(sv[0], SHUT_WR), 0);
    memset(&r, 0, sizeof r);
    cr_assert_gt(pact_recv(loop, sv[1], in, sizeof in, 0, rec_cb, &r), 0);
    run_until_delivered_at_once(loop, &r);
    cr_assert_eq(r.result, 0, "end of file: %lld", (long long)r.result);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(ops, a_recv_after_a_short_datagram_gets_the_next_one_waiting)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    pact_loop *loop = test_loop_new();
    short_read_then(loop, sv[1], sv[0], SOCK_DGRAM);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* ---- chained receives on a connected datagram socket ------------------- */

/* A backlog of datagrams read by chained receives, each started from the
 * last one's callback (the operation API's way to read a socket). */
enum { BACKLOG = 100 };

typedef struct chain {
    int fd;
    int got;          /* datagrams received, in order */
    int64_t bad;      /* the first wrong result (0: none) */
    int bad_at;
    unsigned char in[64];
} chain;

static void chain_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    chain *ch = user;
    uint32_t seq = 0;
    if (c->result == 8)
        memcpy(&seq, ch->in, sizeof seq);
    if (!ch->bad && (c->result != 8 || seq != (uint32_t)ch->got ||
                     memcmp(ch->in + 4, "dgrm", 4) != 0)) {
        ch->bad = c->result == 8 ? 1000000 + (int64_t)seq : c->result;
        ch->bad_at = ch->got;
        return;
    }
    if (++ch->got < BACKLOG &&
        pact_recv(loop, ch->fd, ch->in, sizeof ch->in, 0, chain_cb, ch) <= 0) {
        ch->bad = -1;
        ch->bad_at = ch->got;
    }
}

/* Each of BACKLOG datagrams (its number, then "dgrm") queued before the
 * first receive starts, read once and in order; the loop turns it takes.
 * A datagram socket's read is always shorter than the 64 bytes asked for,
 * and says nothing about what is left: the next receive must still try
 * first (engine_epoll.c, note_receive), as before a drained stream socket
 * learned to wait (a loop turn per datagram). */
static void chained_recvs_read_a_backlog(int reader, int writer, const char *what)
{
    for (uint32_t i = 0; i < BACKLOG; i++) {
        unsigned char d[8];
        memcpy(d, &i, sizeof i);
        memcpy(d + 4, "dgrm", 4);
        cr_assert_eq(send(writer, d, sizeof d, 0), 8, "%s: queue datagram %u: %s",
                     what, i, strerror(errno));
    }
    pact_loop *loop = test_loop_new();
    chain ch = {.fd = reader};
    pact_loop_stats before, after;
    cr_assert_eq(pact_loop_get_stats(loop, &before), 0);
    cr_assert_gt(pact_recv(loop, reader, ch.in, sizeof ch.in, 0, chain_cb, &ch), 0);
    uint64_t end = pact_now() + 5000 * MS;
    while (ch.got < BACKLOG && !ch.bad) {
        cr_assert(pact_now() < end, "%s: %d of %d datagrams in 5 s", what, ch.got,
                  BACKLOG);
        cr_assert_geq(pact_loop_run_once(loop, 100 * (int64_t)MS), 0);
    }
    cr_assert_eq(pact_loop_get_stats(loop, &after), 0);
    cr_assert_eq(ch.bad, 0, "%s: datagram %d: result %lld", what, ch.bad_at,
                 (long long)ch.bad);
    unsigned char extra[8];
    cr_assert_lt(recv(reader, extra, sizeof extra, MSG_DONTWAIT), 0,
                 "%s: a datagram left or delivered twice", what);
    uint64_t turns = after.iterations - before.iterations;
    /* epoll: a receive tried at submission completes at once, and a turn
     * runs the callbacks of several in a row (20 turns for the 100,
     * measured; 98 when each waited for readiness instead). io_uring:
     * each receive is an SQE the next wait submits, a turn per datagram. */
    uint64_t most = pact_loop_engine(loop) == PACT_ENGINE_EPOLL ? BACKLOG / 4 : BACKLOG + 2;
    cr_assert_leq(turns, most, "%s: %d datagrams took %llu loop turns", what, BACKLOG,
                  (unsigned long long)turns);
    test_loop_free(loop);
}

Test(ops, chained_recvs_read_a_unix_datagram_backlog_in_few_loop_turns)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    chained_recvs_read_a_backlog(sv[1], sv[0], "AF_UNIX SOCK_DGRAM");
    close(sv[0]);
    close(sv[1]);
}

Test(ops, chained_recvs_read_a_unix_seqpacket_backlog_in_few_loop_turns)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv),
                 0);
    chained_recvs_read_a_backlog(sv[1], sv[0], "AF_UNIX SOCK_SEQPACKET");
    close(sv[0]);
    close(sv[1]);
}

/* A connected pair of UDP sockets on loopback. */
static void make_udp_pair(int sv[2])
{
    struct sockaddr_in a[2];
    for (int i = 0; i < 2; i++) {
        sv[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        cr_assert_geq(sv[i], 0);
        a[i] = (struct sockaddr_in){.sin_family = AF_INET,
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a[i];
        cr_assert_eq(bind(sv[i], (struct sockaddr *)&a[i], len), 0);
        cr_assert_eq(getsockname(sv[i], (struct sockaddr *)&a[i], &len), 0);
    }
    for (int i = 0; i < 2; i++)
        cr_assert_eq(connect(sv[i], (struct sockaddr *)&a[1 - i], sizeof a[1 - i]), 0);
}

Test(ops, chained_recvs_read_a_udp_backlog_in_few_loop_turns)
{
    int sv[2];
    make_udp_pair(sv);
    chained_recvs_read_a_backlog(sv[1], sv[0], "connected UDP");
    close(sv[0]);
    close(sv[1]);
}

/* A receive that waits after a short read is an op like any other: a
 * cancel ends it with -ECANCELED and the bytes sent after stay in the
 * socket; loop close ends one still waiting, once (docs/contract.md §3,
 * §4, §1). */
Test(ops, a_recv_waiting_after_a_short_read_cancels_without_taking_data)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char in[64];
    rec r = {0};
    cr_assert_eq(send(sv[0], "ab", 2, 0), 2);
    cr_assert_gt(pact_recv(loop, sv[1], in, sizeof in, 0, rec_cb, &r), 0);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.result, 2);
    memset(&r, 0, sizeof r);
    pact_op op = pact_recv(loop, sv[1], in, sizeof in, 0, rec_cb, &r);
    cr_assert_gt(op, 0);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert_eq(r.calls, 0, "nothing to receive yet");
    cr_assert_eq(send(sv[0], "cd", 2, 0), 2);
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.calls, 1);
    /* epoll: the receive waits in the engine's queue, and the cancel
     * takes it out before any readiness reaches it. io_uring may have
     * received the bytes already (the kernel won the race): then they are
     * its result, never lost (§4). */
    char out[8];
    if (pact_loop_engine(loop) == PACT_ENGINE_EPOLL || r.result == -ECANCELED) {
        cr_assert_eq(r.result, -ECANCELED, "%lld", (long long)r.result);
        cr_assert_eq(recv(sv[1], out, sizeof out, MSG_DONTWAIT), 2,
                     "the bytes left in the socket");
        cr_assert_eq(memcmp(out, "cd", 2), 0);
    } else {
        cr_assert_eq(r.result, 2, "%lld", (long long)r.result);
        cr_assert_eq(memcmp(in, "cd", 2), 0);
        cr_assert_lt(recv(sv[1], out, sizeof out, MSG_DONTWAIT), 0, "received twice");
    }
    /* One more short read, then one left waiting at loop close. */
    cr_assert_eq(send(sv[0], "e", 1, 0), 1);
    rec last = {0}, closed = {0};
    cr_assert_gt(pact_recv(loop, sv[1], in, sizeof in, 0, rec_cb, &last), 0);
    run_until(loop, &last.calls, 5000);
    cr_assert_eq(last.result, 1);
    cr_assert_gt(pact_recv(loop, sv[1], in, sizeof in, 0, rec_cb, &closed), 0);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    test_loop_free(loop);
    cr_assert_eq(closed.calls, 1);
    cr_assert_eq(closed.result, -ECANCELED);
    close(sv[0]);
    close(sv[1]);
}

/* A short read on an fd number, then the number closed and given to a
 * new socket with bytes already waiting: its receive gets them at once
 * (what the engine knew of the old socket says nothing of the new one). */
Test(ops, a_recv_on_a_reused_fd_number_after_a_short_read_gets_its_bytes)
{
    int sv[2];
    make_socketpair(sv);
    pact_loop *loop = test_loop_new();
    char in[64];
    rec r = {0};
    /* Waits first, so the old socket was registered with epoll. */
    cr_assert_gt(pact_recv(loop, sv[1], in, sizeof in, 0, rec_cb, &r), 0);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert_eq(send(sv[0], "ab", 2, 0), 2);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.result, 2);
    int number = sv[1];
    close(sv[1]);
    int nv[2];
    make_socketpair(nv);
    int reused = nv[0] == number ? nv[0] : nv[1] == number ? nv[1] : -1;
    cr_assert_geq(reused, 0, "the number was not reused");
    int other = reused == nv[0] ? nv[1] : nv[0];
    cr_assert_eq(send(other, "xyz", 3, 0), 3);
    memset(&r, 0, sizeof r);
    cr_assert_gt(pact_recv(loop, reused, in, sizeof in, 0, rec_cb, &r), 0);
    run_until_delivered_at_once(loop, &r);
    cr_assert_eq(r.result, 3);
    cr_assert_eq(memcmp(in, "xyz", 3), 0);
    test_loop_free(loop);
    close(sv[0]);
    close(nv[0]);
    close(nv[1]);
}

Test(ops, order_holds_on_many_sockets_at_once)
{
    /* Enough sockets that per-fd bookkeeping grows while queues are full. */
    enum { PAIRS = 80, PER = 3 };
    int sv[PAIRS][2];
    char bufs[PAIRS][PER][3];
    static rec r[PAIRS][PER];
    memset(r, 0, sizeof r);
    pact_loop *loop = test_loop_new();
    for (int p = 0; p < PAIRS; p++) {
        make_socketpair(sv[p]);
        for (int i = 0; i < PER; i++)
            cr_assert_gt(pact_recv(loop, sv[p][1], bufs[p][i], 3, 0, rec_cb,
                                   &r[p][i]), 0);
        pact_loop_run_once(loop, 0);
    }
    for (int p = 0; p < PAIRS; p++) {
        char msg[3 * PER];
        for (int i = 0; i < PER; i++) {
            msg[3 * i] = (char)('a' + i);
            msg[3 * i + 1] = (char)('0' + p % 10);
            msg[3 * i + 2] = (char)('0' + p / 10);
        }
        cr_assert_eq(write(sv[p][0], msg, sizeof msg), (ssize_t)sizeof msg);
    }
    run_until_all(loop, &r[0][0], PAIRS * PER, 5000);
    for (int p = 0; p < PAIRS; p++)
        for (int i = 0; i < PER; i++) {
            cr_assert_eq(r[p][i].calls, 1);
            cr_assert_eq(r[p][i].result, 3);
            cr_assert_eq(bufs[p][i][0], 'a' + i, "pair %d recv %d got %.3s", p,
                         i, bufs[p][i]);
            cr_assert_eq(bufs[p][i][1], '0' + p % 10);
            if (i > 0)
                cr_assert_gt(r[p][i].seq, r[p][i - 1].seq);
        }
    test_loop_free(loop);
    for (int p = 0; p < PAIRS; p++) {
        close(sv[p][0]);
        close(sv[p][1]);
    }
}

Test(ops, sends_queued_on_a_full_socket_keep_stream_order)
{
    int sv[2];
    make_socketpair(sv);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    /* Fill the socket so that every send below has to wait. */
    size_t filled = 0;
    char junk[4096];
    memset(junk, '.', sizeof junk);
    ssize_t n;
    while ((n = send(sv[0], junk, sizeof junk, MSG_DONTWAIT)) > 0)
        filled += (size_t)n;
    cr_assert_gt(filled, 0);

    pact_loop *loop = test_loop_new();
    enum { N = 5, LEN = 300 };
    static char bufs[N][LEN];
    rec r[N];
    memset(r, 0, sizeof r);
    completion_seq = 0;
    for (int i = 0; i < N; i++) {
        memset(bufs[i], 'A' + i, LEN);
        cr_assert_gt(pact_send_all(loop, sv[0], bufs[i], LEN, 0, rec_cb, &r[i]), 0);
    }
    pact_loop_run_once(loop, 0);
    static unsigned char in[1 << 20];
    size_t got = 0;
    uint64_t end = pact_now() + 5000 * MS;
    for (;;) {
        got += drain_fd(sv[1], in + got, sizeof in - got);
        int done = 1;
        for (int i = 0; i < N; i++)
            done &= r[i].calls;
        if (done)
            break;
        cr_assert(pact_now() < end);
        pact_loop_run_once(loop, 1 * (int64_t)MS);
    }
    got += drain_fd(sv[1], in + got, sizeof in - got);
    cr_assert_eq(got, filled + N * LEN);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r[i].result, LEN);
        cr_assert_eq(r[i].seq, i, "send %d completed at %d", i, r[i].seq);
        for (int k = 0; k < LEN; k++)
            cr_assert_eq(in[filled + (size_t)i * LEN + (size_t)k], 'A' + i,
                         "stream byte %d of send %d is '%c'", k, i,
                         in[filled + (size_t)i * LEN + (size_t)k]);
    }
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* Starts one op of each fd-taking kind on `dead` (not an open fd) and
 * checks that each completes once with -EBADF. */
static void expect_every_op_ebadf(pact_loop *loop, int dead)
{
    char buf[8] = "abc";
    struct sockaddr_storage ss;
    socklen_t len;
    pact_sockaddr_parse("127.0.0.1", 9, &ss, &len);
    enum { N = 9 };
    rec r[N];
    memset(r, 0, sizeof r);
    const char *names[N] = {"recv", "send", "send_all", "accept", "connect",
                            "shutdown", "read", "write", "poll"};
    cr_assert_gt(pact_recv(loop, dead, buf, sizeof buf, 0, rec_cb, &r[0]), 0);
    cr_assert_gt(pact_send(loop, dead, buf, 3, 0, rec_cb, &r[1]), 0);
    cr_assert_gt(pact_send_all(loop, dead, buf, 3, 0, rec_cb, &r[2]), 0);
    cr_assert_gt(pact_accept(loop, dead, rec_cb, &r[3]), 0);
    cr_assert_gt(pact_connect(loop, dead, (struct sockaddr *)&ss, len, rec_cb, &r[4]), 0);
    cr_assert_gt(pact_shutdown(loop, dead, SHUT_RDWR, rec_cb, &r[5]), 0);
    cr_assert_gt(pact_read(loop, dead, buf, sizeof buf, -1, rec_cb, &r[6]), 0);
    cr_assert_gt(pact_write(loop, dead, buf, 3, -1, rec_cb, &r[7]), 0);
    cr_assert_gt(pact_poll(loop, dead, POLLIN, rec_cb, &r[8]), 0);
    run_until_all(loop, r, N, 5000);
    for (int i = 0; i < N; i++) {
        cr_expect_eq(r[i].calls, 1, "%s: %d calls", names[i], r[i].calls);
        cr_expect_eq(r[i].result, -EBADF, "%s on a closed fd: %lld (%s)",
                     names[i], (long long)r[i].result,
                     pact_err_name((int)r[i].result));
    }
}

Test(ops, ops_on_a_closed_fd_fail_with_a_negative_errno)
{
    /* The loop first: its own fds must not take the dead number. */
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    int dead = sv[0];
    close(sv[0]);
    close(sv[1]);
    cr_assert_eq(fcntl(dead, F_GETFD), -1, "fd %d is closed", dead);
    expect_every_op_ebadf(loop, dead);
    test_loop_free(loop);
}

/* Resident memory of this process, in KiB. */
static long resident_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    long size = 0, resident = 0;
    cr_assert_eq(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* The engines keep per-fd state (ordering queues, epoll registrations). A
 * table indexed by the fd's value overflowed its size for fds >= 2^30
 * (INT_MAX: the next run_once spun forever) and wanted gigabytes for
 * fds near 2^29. Any int is a valid fd number to ask about: the op fails
 * with -EBADF, and the memory pact uses does not grow with the number. */
Test(ops, ops_on_huge_fd_numbers_fail_with_ebadf_and_cost_no_memory)
{
    pact_loop *loop = test_loop_new();
    long before = resident_kib();
    const int huge[] = {INT_MAX, INT_MAX - 1, 1 << 30, (1 << 29) + 7,
                        1 << 24};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        cr_assert_eq(fcntl(huge[i], F_GETFD), -1, "fd %d is closed", huge[i]);
        expect_every_op_ebadf(loop, huge[i]);
    }
    long grown = resident_kib() - before;
    cr_expect_lt(grown, 4096, "ops on huge fd numbers cost %ld KiB", grown);
    test_loop_free(loop);
}

/* A real fd as high as the process may have one (RLIMIT_NOFILE - 1): its
 * ops work like any other's. */
Test(ops, ops_on_the_highest_allowed_fd_work)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < rl.rlim_max) { /* as high as allowed */
        rl.rlim_cur = rl.rlim_max > (1u << 20) ? (1u << 20) : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    int high = (int)(rl.rlim_cur > INT_MAX ? INT_MAX : rl.rlim_cur - 1);
    pact_loop *loop = test_loop_new();
    long before = resident_kib();
    int sv[2];
    make_socketpair(sv);
    cr_assert_eq(dup2(sv[0], high), high, "dup2 to %d: %s", high,
                 strerror(errno));
    close(sv[0]);
    char in[8] = {0};
    rec r[3];
    memset(r, 0, sizeof r);
    cr_assert_gt(pact_recv(loop, high, in, sizeof in, 0, rec_cb, &r[0]), 0);
    cr_assert_gt(pact_send(loop, sv[1], "ping", 4, 0, rec_cb, &r[1]), 0);
    cr_assert_gt(pact_send(loop, high, "pong", 4, 0, rec_cb, &r[2]), 0);
    run_until_all(loop, r, 3, 5000);
    cr_assert_eq(r[0].result, 4);
    cr_assert_eq(memcmp(in, "ping", 4), 0);
    cr_assert_eq(r[2].result, 4);
    char out[8] = {0};
    cr_assert_eq(recv(sv[1], out, sizeof out, 0), 4);
    cr_assert_eq(memcmp(out, "pong", 4), 0);
    long grown = resident_kib() - before;
    cr_expect_lt(grown, 4096, "ops on fd %d cost %ld KiB", high, grown);
    test_loop_free(loop);
    close(high);
    close(sv[1]);
}

Test(ops, socket_ops_on_a_non_socket_fail_cleanly)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    pact_loop *loop = test_loop_new();
    char buf[8];
    rec r = {0};
    cr_assert_gt(pact_recv(loop, p[0], buf, sizeof buf, 0, rec_cb, &r), 0);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.result, -ENOTSOCK, "recv on a pipe: %s",
                 pact_err_name((int)r.result));
    test_loop_free(loop);
    close(p[0]);
    close(p[1]);
}

/* pact_wait_for_handle() and named pipes are Windows's; Linux answers
 * -ENOTSUP and starts nothing. */
Test(ops, windows_only_calls_are_enotsup_on_linux)
{
    pact_loop *loop = test_loop_new();
    rec r = {0};
    pact_loop_stats before, after;
    pact_loop_get_stats(loop, &before);
    cr_assert_eq(pact_wait_for_handle(loop, 0, 0, rec_cb, &r), -ENOTSUP);
    pact_pipe_server *srv = (pact_pipe_server *)&r;
    cr_assert_eq(pact_pipe_server_open(loop, "pact", &srv), -ENOTSUP);
    cr_assert_null(srv);
    cr_assert_eq(pact_pipe_server_accept(NULL, rec_cb, &r), -ENOTSUP);
    cr_assert_eq(pact_pipe_server_close(NULL), -ENOTSUP);
    cr_assert_eq(pact_pipe_connect(loop, "pact", rec_cb, &r), -ENOTSUP);
    pact_loop_get_stats(loop, &after);
    cr_assert_eq(after.ops_started, before.ops_started);
    cr_assert_eq(after.ops_live, 0);
    cr_assert_eq(r.calls, 0);
    test_loop_free(loop);
}

/* A short read on one end of a fresh socket pair (on epoll the next
 * receive on the number then waits for readiness without trying); the
 * user then closes that end, so the number is free for reuse. Returns
 * the number; sv[0], the other end, stays open. */
static int short_read_then_close(pact_loop *loop, int sv[2])
{
    char in[64];
    rec r = {0};
    make_socketpair(sv);
    cr_assert_eq(send(sv[0], "ab", 2, 0), 2);
    cr_assert_gt(pact_recv(loop, sv[1], in, sizeof in, 0, rec_cb, &r), 0);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.result, 2);
    close(sv[1]);
    return sv[1];
}

/* A receive on fd answers `expected` within three short runs: it fails at
 * once rather than waiting for bytes that never come. */
static void recv_answers_at_once(pact_loop *loop, int fd, int flags,
                                 int64_t expected, const char *what)
{
    char in[64];
    rec r = {0};
    cr_assert_gt(pact_recv(loop, fd, in, sizeof in, flags, rec_cb, &r), 0);
    for (int i = 0; i < 3 && !r.calls; i++)
        pact_loop_run_once(loop, 300 * (int64_t)MS);
    cr_assert_eq(r.calls, 1, "the receive on %s did not complete", what);
    cr_assert_eq(r.result, expected, "%s: %s", what, pact_err_name((int)r.result));
}

/* The number reused by a pipe with nothing to read: -ENOTSOCK at once, as
 * on a fresh pipe. */
Test(ops, a_recv_on_a_number_reused_by_a_pipe_after_a_short_read_is_enotsock_at_once)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    int number = short_read_then_close(loop, sv);
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    cr_assert(p[0] == number || p[1] == number, "number not reused");
    recv_answers_at_once(loop, number, 0, -ENOTSOCK, "a number reused by a pipe");
    test_loop_free(loop);
    close(sv[0]);
    close(p[0]);
    close(p[1]);
}

/* The same with a listening socket on the number: -ENOTCONN at once, not
 * once a client connects. */
Test(ops, a_recv_on_a_number_reused_by_a_listener_after_a_short_read_is_enotconn_at_once)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    int number = short_read_then_close(loop, sv);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert_eq(l, number);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(l, 4), 0);
    recv_answers_at_once(loop, l, 0, -ENOTCONN, "a number reused by a listener");
    test_loop_free(loop);
    close(sv[0]);
    close(l);
}

/* After a short read, a MSG_OOB receive with no urgent data: -EINVAL at
 * once (it never waits for readiness). */
Test(ops, an_oob_recv_after_a_short_read_is_einval_at_once)
{
    int c, s;
    make_tcp_pair(&c, &s);
    pact_loop *loop = test_loop_new();
    char in[64];
    rec r = {0};
    cr_assert_eq(send(c, "ab", 2, 0), 2);
    cr_assert_gt(pact_recv(loop, s, in, sizeof in, 0, rec_cb, &r), 0);
    run_until(loop, &r.calls, 5000);
    cr_assert_eq(r.result, 2);
    recv_answers_at_once(loop, s, MSG_OOB, -EINVAL,
                         "a MSG_OOB receive with no urgent data");
    test_loop_free(loop);
    close(c);
    close(s);
}
