/* SPDX-License-Identifier: MIT */
/* Leaks: every endpoint kind created and closed thousands of times, closed
 * from inside each of its callbacks as well as from outside, on both
 * engines. Afterwards the process must be where it was: the same open fds,
 * the same heap in use, a flat RSS (plain build), no operation or callback
 * handle left live, no stray completion (docs/contract.md §8), and — under
 * ASan — no LeakSanitizer report (tests/run-all.sh fails the suite on one).
 *
 * Each test runs a tenth of its count first (the warm-up: the loop's
 * pools, the allocator's free lists and the kernel's socket caches grow to
 * their steady size), measures, runs the rest and measures again. The
 * numbers are printed ("leaks: ...") for the record. */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "helpers.h"
#include "tls_certs.h"

/* Gives free heap memory back to the kernel, so RSS shows what is held.
 * (Not under ASan: its RSS is not asserted, see expect_flat.) */
static void release_free_memory(void)
{
#ifndef PACT_TEST_ASAN
    malloc_trim(0);
#endif
}

static void suite_setup(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(leaks, .init = suite_setup, .timeout = 120);

/* ---- measuring -------------------------------------------------------------- */

/* Slack for RSS, 1 MiB: glibc keeps free pages between blocks still in use
 * (malloc_trim gives back only whole free pages), page tables and the
 * stack are charged by the page, and on io_uring the loop's provided
 * receive buffers are first touched when a burst reaches them (seen: up to
 * 450 KiB, once, for 10,000 transports). RSS is there for what the heap
 * count cannot see (an mmap, a pipe or ring mapping kept); a leaked struct
 * shows in the heap count long before. */
#define RSS_SLACK_KIB 1024
/* Slack for the heap in use: 48 KiB for the loop's slabs and the fd table,
 * which may grow one more step when a batch peaks higher than the warm-up
 * did (seen: up to 5 KiB), plus the noise of the allocator's count
 * (HEAP_COUNT_NOISE, helpers.h: none under ASan, glibc's tcache else). One
 * leaked struct per object (hundreds of bytes) is megabytes over the 9,000
 * measured; over the 900 processes or the 450 TLS pairs it is over the
 * ASan build's 48 KiB, where LeakSanitizer names it too. */
#define HEAP_SLACK_BYTES (48 * 1024 + HEAP_COUNT_NOISE)

typedef struct usage {
    int fds;
    long rss_kib;
    size_t heap;
    pact_loop_stats st;
} usage;

/* Resident pages, from /proc/self/statm. */
static long rss_kib(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    cr_assert_eq(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static usage measure(pact_loop *loop)
{
    usage u;
    release_free_memory();
    u.fds = count_open_fds();
    u.rss_kib = rss_kib();
    u.heap = heap_bytes_in_use();
    cr_assert_eq(pact_loop_get_stats(loop, &u.st), 0);
    return u;
}

/* One batch: creates n objects (numbered first..first+n-1, the number
 * picks how each is closed), runs the loop until every one is gone. */
typedef void (*batch_fn)(pact_loop *loop, void *ctx, int first, int n);

static void expect_flat(const char *kind, pact_loop *loop, int total,
                        const usage *a)
{
    usage b = measure(loop);
    const char *engine = pact_loop_engine(loop) == PACT_ENGINE_URING ? "uring"
                                                                     : "epoll";
    fprintf(stderr,
            "leaks: %-18s %s %5d made: fds %d -> %d, rss %ld -> %ld KiB, "
            "heap %zu -> %zu B, ops_live %llu -> %llu, handles_live %llu -> "
            "%llu, stray %llu\n",
            kind, engine, total, a->fds, b.fds, a->rss_kib, b.rss_kib, a->heap,
            b.heap, (unsigned long long)a->st.ops_live,
            (unsigned long long)b.st.ops_live,
            (unsigned long long)a->st.handles_live,
            (unsigned long long)b.st.handles_live,
            (unsigned long long)b.st.stray_completions);
    cr_expect_eq(b.fds, a->fds, "%s: %d fds leaked", kind, b.fds - a->fds);
    cr_expect_leq(b.heap, a->heap + HEAP_SLACK_BYTES,
                  "%s: the heap in use grew by %zu bytes", kind, b.heap - a->heap);
#ifndef PACT_TEST_ASAN
    /* Under ASan RSS is printed, not asserted: the shadow of every address
     * its allocator hands out stays resident after the free, and its 256
     * MB quarantine keeps handing out fresh addresses and growing its own
     * free lists (35 MB for 10,000 freed 64 KiB receive buffers, 8 MB for
     * OpenSSL's many small blocks), none of it held by pact. There the
     * allocator's exact count of bytes in use (the heap check) and
     * LeakSanitizer stand for it. */
    cr_expect_leq(b.rss_kib, a->rss_kib + RSS_SLACK_KIB,
                  "%s: RSS grew by %ld KiB", kind, b.rss_kib - a->rss_kib);
#endif
    cr_expect_eq(b.st.ops_live, a->st.ops_live, "%s: ops left live", kind);
    cr_expect_eq(b.st.handles_live, a->st.handles_live,
                 "%s: callback handles left live", kind);
    cr_expect_eq(b.st.stray_completions, 0);
}

/* The warm-up of the loop's receive buffers: on io_uring the kernel
 * fills its provided buffers one after the other (incrementally since
 * 6.12), so they become resident as traffic reaches them, up to their
 * bounded size (count x size), and a warm-up of a few small connections
 * may not have reached them all. Nor does a stream through one
 * transport: a buffer given back is the next one the kernel fills (most
 * recently used first), so 4 MiB through one transport left 192 KiB of
 * the 1 MiB resident (16 buffers then; 2 MiB now), and a batch whose sends reached the kernel before
 * its receives were armed (every receive then finds bytes waiting and
 * takes a buffer in the same batch) made the other 516 KiB resident
 * during the measurement. So the warm-up also has WARM_BURST_PAIRS
 * transports receive WARM_BURST_BYTES each in one batch: more than every
 * buffer holds, all of them in use at once. */
#define WARM_RECEIVE_BYTES (4u << 20)
#define WARM_BURST_PAIRS 40
#define WARM_BURST_BYTES (64u * 1024u)

typedef struct warm_reader {
    size_t got;
    int lost;
} warm_reader;

static void warm_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    (void)data;
    ((warm_reader *)user)->got += len;
}

static void warm_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    ((warm_reader *)user)->lost = 1;
}

static const pact_protocol warm_proto = {.data_received = warm_data,
                                         .connection_lost = warm_lost};

static void warm_receive_buffers(pact_loop *loop)
{
    int sv[2];
    make_socketpair(sv);
    warm_reader w = {0};
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &warm_proto,
                                     &w, &t), 0);
    static char chunk[64 * 1024];
    size_t sent = 0;
    uint64_t end = pact_now() + 20000 * MS;
    while (w.got < WARM_RECEIVE_BYTES) {
        cr_assert(pact_now() < end, "warm-up: %zu of %u bytes", w.got, WARM_RECEIVE_BYTES);
        if (sent < WARM_RECEIVE_BYTES) {
            ssize_t n = send(sv[1], chunk, sizeof chunk, MSG_DONTWAIT);
            if (n > 0)
                sent += (size_t)n;
        }
        cr_assert_geq(pact_loop_run_once(loop, sent < WARM_RECEIVE_BYTES ? 0 : 10 * (int64_t)MS), 0);
    }
    pact_transport_close(t);
    while (!w.lost)
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    close(sv[1]);

    /* The burst: the bytes wait in every socket before its transport's
     * receive is armed, so all receives complete in one batch. */
    int peers[WARM_BURST_PAIRS];
    warm_reader burst[WARM_BURST_PAIRS];
    for (int i = 0; i < WARM_BURST_PAIRS; i++) {
        make_socketpair(sv);
        burst[i] = (warm_reader){0};
        cr_assert_eq(send(sv[1], chunk, WARM_BURST_BYTES, MSG_DONTWAIT),
                     (ssize_t)WARM_BURST_BYTES);
        cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET,
                                         &warm_proto, &burst[i], &t), 0);
        peers[i] = sv[1];
    }
    for (int i = 0; i < WARM_BURST_PAIRS; i++) {
        while (burst[i].got < WARM_BURST_BYTES) {
            cr_assert(pact_now() < end, "warm-up burst: %zu of %u bytes",
                      burst[i].got, WARM_BURST_BYTES);
            cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
        }
        close(peers[i]); /* EOF: the transport closes itself */
    }
    for (int i = 0; i < WARM_BURST_PAIRS; i++)
        while (!burst[i].lost)
            cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
}

/* Runs total objects in batches of batch (a multiple of the number of
 * ways to close, so that the warm-up sees each of them). */
static void run_kind(const char *kind, int total, int batch, batch_fn fn,
                     void *ctx)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int warm = total / 10;
    for (int i = 0; i < warm; i += batch)
        fn(loop, ctx, i, warm - i < batch ? warm - i : batch);
    warm_receive_buffers(loop);
    usage a = measure(loop);
    for (int i = warm; i < total; i += batch)
        fn(loop, ctx, i, total - i < batch ? total - i : batch);
    expect_flat(kind, loop, total, &a);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "%s: fds leaked by the loop's close",
                 kind);
}

/* ---- stream transports (TCP, Unix, TLS) ------------------------------------------ */

/* How a transport ends. */
enum {
    S_CLOSE_IN_MADE,
    S_ABORT_IN_MADE,
    S_CLOSE_IN_DATA,  /* the peer writes */
    S_CLOSE_IN_EOF,   /* the peer shuts its writing side */
    S_CLOSE_IN_LOST,  /* the peer's EOF closes it; close again in lost */
    S_CLOSE_OUTSIDE,  /* with a write still buffered: close flushes */
    S_PEER_RESET,     /* the peer resets (TCP) or closes (Unix, TLS) */
    S_MODES
};

typedef struct conn {
    int mode;
    int peer; /* the raw peer fd, or -1 */
    pact_transport *t;
    int made, lost, lost_err, bad;
    int close_in_lost; /* what close() answered inside connection_lost */
    /* TLS only */
    int handshakes, handshake_err;
    struct conn *tls_peer; /* the server side of a TLS pair */
} conn;

static void c_made(pact_transport *t, void *user)
{
    conn *c = user;
    if (c->made || c->lost)
        c->bad++;
    c->made = 1;
    c->t = t;
    if (c->mode == S_CLOSE_IN_MADE)
        cr_assert_eq(pact_transport_close(t), 0);
    else if (c->mode == S_ABORT_IN_MADE)
        cr_assert_eq(pact_transport_abort(t), 0);
    else if (c->mode == S_CLOSE_OUTSIDE)
        cr_assert_eq(pact_transport_write(t, "bye", 3), 0);
}

static void c_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)data;
    (void)len;
    conn *c = user;
    if (!c->made || c->lost)
        c->bad++;
    if (c->mode == S_CLOSE_IN_DATA)
        cr_assert_eq(pact_transport_close(t), 0);
}

static int c_eof(pact_transport *t, void *user)
{
    conn *c = user;
    if (!c->made || c->lost)
        c->bad++;
    if (c->mode == S_CLOSE_IN_EOF) {
        cr_assert_eq(pact_transport_close(t), 0);
        return 1;
    }
    return 0;
}

static void c_lost(pact_transport *t, int err, void *user)
{
    conn *c = user;
    if (!c->made || c->lost)
        c->bad++;
    c->lost = 1;
    c->lost_err = err;
    if (c->mode == S_CLOSE_IN_LOST)
        c->close_in_lost = pact_transport_close(t);
}

static const pact_protocol conn_proto = {
    .connection_made = c_made,
    .data_received = c_data,
    .eof_received = c_eof,
    .connection_lost = c_lost,
};

static void expect_conn_done(const conn *c, int i)
{
    cr_assert_eq(c->made, 1, "transport %d (mode %d): made %d", i, c->mode,
                 c->made);
    cr_assert_eq(c->lost, 1, "transport %d (mode %d): lost %d", i, c->mode,
                 c->lost);
    cr_assert_eq(c->bad, 0, "transport %d (mode %d): callbacks out of order", i,
                 c->mode);
    if (c->mode != S_PEER_RESET)
        cr_assert_eq(c->lost_err, 0, "transport %d (mode %d): lost with %s", i,
                     c->mode, pact_strerror(c->lost_err));
    if (c->mode == S_CLOSE_IN_LOST)
        cr_assert_lt(c->close_in_lost, 0, "close inside connection_lost: %d",
                     c->close_in_lost);
}

typedef struct stream_ctx {
    int family; /* AF_INET: TCP through lfd; AF_UNIX: socket pairs */
    int lfd;
    struct sockaddr_storage addr;
    socklen_t addrlen;
} stream_ctx;

/* A connected pair: *mine (non-blocking, for the transport), *peer. */
static void stream_pair(stream_ctx *sc, int *mine, int *peer)
{
    if (sc->family == AF_UNIX) {
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        *mine = sv[0];
        *peer = sv[1];
    } else {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(c, 0);
        cr_assert_eq(connect(c, (struct sockaddr *)&sc->addr, sc->addrlen), 0,
                     "connect: %s", strerror(errno));
        *mine = accept4(sc->lfd, NULL, NULL, SOCK_CLOEXEC);
        cr_assert_geq(*mine, 0, "accept: %s", strerror(errno));
        *peer = c;
    }
    cr_assert_eq(fcntl(*mine, F_SETFL, O_NONBLOCK), 0);
}

static void peer_acts(conn *c)
{
    switch (c->mode) {
    case S_CLOSE_IN_DATA:
        cr_assert_eq(send(c->peer, "x", 1, MSG_NOSIGNAL), 1);
        break;
    case S_CLOSE_IN_EOF:
    case S_CLOSE_IN_LOST:
        cr_assert_eq(shutdown(c->peer, SHUT_WR), 0);
        break;
    case S_CLOSE_OUTSIDE:
        cr_assert_eq(pact_transport_close(c->t), 0);
        break;
    case S_PEER_RESET: {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->peer);
        c->peer = -1;
        break;
    }
    default:
        break;
    }
}

static int count_made(const conn *cs, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += cs[i].made;
    return k;
}

static int count_lost(const conn *cs, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += cs[i].lost;
    return k;
}

static void stream_batch(pact_loop *loop, void *ctx, int first, int n)
{
    stream_ctx *sc = ctx;
    conn *cs = calloc((size_t)n, sizeof *cs);
    for (int i = 0; i < n; i++) {
        int mine;
        cs[i].mode = (first + i) % S_MODES;
        stream_pair(sc, &mine, &cs[i].peer);
        pact_transport *t;
        cr_assert_eq(pact_transport_open(loop, mine, PACT_STREAM_SOCKET,
                                         &conn_proto, &cs[i], &t), 0);
    }
    RUN_UNTIL(loop, count_made(cs, n) == n, 5000);
    for (int i = 0; i < n; i++)
        if (!cs[i].lost)
            peer_acts(&cs[i]);
    RUN_UNTIL(loop, count_lost(cs, n) == n, 5000);
    for (int i = 0; i < n; i++) {
        expect_conn_done(&cs[i], first + i);
        if (cs[i].peer >= 0)
            close(cs[i].peer);
    }
    free(cs);
}

Test(leaks, tcp_transports)
{
    stream_ctx sc = {.family = AF_INET};
    sc.lfd = pact_tcp_listen("127.0.0.1", 0, 512);
    cr_assert_geq(sc.lfd, 0);
    cr_assert_eq(fcntl(sc.lfd, F_SETFL, 0), 0); /* accept right after connect */
    cr_assert_eq(pact_sockaddr_parse("127.0.0.1", (uint16_t)pact_socket_port(sc.lfd),
                                     &sc.addr, &sc.addrlen), 0);
    run_kind("tcp transport", 10000, 7 * 20, stream_batch, &sc);
    close(sc.lfd);
}

Test(leaks, unix_transports)
{
    stream_ctx sc = {.family = AF_UNIX};
    run_kind("unix transport", 10000, 7 * 20, stream_batch, &sc);
}

/* ---- datagram endpoints (UDP, Unix) ------------------------------------------------ */

enum {
    D_CLOSE_IN_MADE,
    D_ABORT_IN_MADE,
    D_CLOSE_IN_RECEIVED, /* a datagram arrives */
    D_CLOSE_IN_ERROR,    /* UDP: connected to a dead port, ICMP refuses;
                            Unix: a datagram arrives, abort in received */
    D_CLOSE_IN_LOST,     /* closed from outside, again in lost */
    D_CLOSE_QUEUED,      /* a datagram queued: close sends it first */
    D_MODES
};

typedef struct dconn {
    int mode;
    int peer; /* Unix: the other end of the pair */
    pact_datagram *ep;
    int made, lost, lost_err, bad, errors;
    int close_in_lost;
} dconn;

typedef struct dgram_ctx {
    int unix_pairs;
    int sink; /* UDP: where queued datagrams go */
    struct sockaddr_storage sink_addr, dead_addr;
    socklen_t sink_len, dead_len;
} dgram_ctx;

static void d_made(pact_datagram *ep, void *user)
{
    dconn *d = user;
    if (d->made || d->lost)
        d->bad++;
    d->made = 1;
    d->ep = ep;
    if (d->mode == D_CLOSE_IN_MADE)
        cr_assert_eq(pact_datagram_close(ep), 0);
    else if (d->mode == D_ABORT_IN_MADE)
        cr_assert_eq(pact_datagram_abort(ep), 0);
}

static void d_received(pact_datagram *ep, const void *data, size_t len,
                       const struct sockaddr *addr, socklen_t addrlen, void *user)
{
    (void)data;
    (void)len;
    (void)addr;
    (void)addrlen;
    dconn *d = user;
    if (!d->made || d->lost)
        d->bad++;
    if (d->mode == D_CLOSE_IN_RECEIVED)
        cr_assert_eq(pact_datagram_close(ep), 0);
    else if (d->mode == D_CLOSE_IN_ERROR)
        cr_assert_eq(pact_datagram_abort(ep), 0);
}

static void d_error(pact_datagram *ep, int err, const struct sockaddr *addr,
                    socklen_t addrlen, void *user)
{
    (void)err;
    (void)addr;
    (void)addrlen;
    dconn *d = user;
    if (!d->made || d->lost)
        d->bad++;
    d->errors++;
    if (d->mode == D_CLOSE_IN_ERROR && d->errors == 1)
        cr_assert_eq(pact_datagram_close(ep), 0);
}

static void d_lost(pact_datagram *ep, int err, void *user)
{
    dconn *d = user;
    if (!d->made || d->lost)
        d->bad++;
    d->lost = 1;
    d->lost_err = err;
    if (d->mode == D_CLOSE_IN_LOST)
        d->close_in_lost = pact_datagram_close(ep);
}

static const pact_datagram_protocol dgram_proto = {
    .connection_made = d_made,
    .datagram_received = d_received,
    .error_received = d_error,
    .connection_lost = d_lost,
};

static void dgram_open(pact_loop *loop, dgram_ctx *dc, dconn *d)
{
    if (dc->unix_pairs) {
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
        d->peer = sv[1];
        cr_assert_eq(pact_datagram_adopt(loop, sv[0], NULL, &dgram_proto, d,
                                         &d->ep), 0);
        return;
    }
    d->peer = -1;
    uint16_t dead_port = ntohs(((struct sockaddr_in *)&dc->dead_addr)->sin_port);
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0,
                                        d->mode == D_CLOSE_IN_ERROR ? "127.0.0.1"
                                                                    : NULL,
                                        d->mode == D_CLOSE_IN_ERROR ? dead_port : 0,
                                        NULL, &dgram_proto, d, &d->ep), 0);
}

/* What the other side does once the endpoint is made. */
static void dgram_act(dgram_ctx *dc, dconn *d)
{
    switch (d->mode) {
    case D_CLOSE_IN_RECEIVED:
    case D_CLOSE_IN_ERROR:
        if (dc->unix_pairs) {
            cr_assert_eq(send(d->peer, "x", 1, 0), 1);
        } else if (d->mode == D_CLOSE_IN_RECEIVED) {
            struct sockaddr_storage ss;
            socklen_t len;
            cr_assert_eq(pact_datagram_sockname(d->ep, &ss, &len), 0);
            cr_assert_eq(sendto(dc->sink, "x", 1, 0, (struct sockaddr *)&ss, len),
                         1);
        } else {
            /* Refused by the dead port: error_received(-ECONNREFUSED). */
            cr_assert_eq(pact_datagram_sendto(d->ep, "x", 1, NULL, 0), 0);
        }
        break;
    case D_CLOSE_IN_LOST:
        cr_assert_eq(pact_datagram_close(d->ep), 0);
        break;
    case D_CLOSE_QUEUED:
        if (dc->unix_pairs)
            cr_assert_eq(pact_datagram_sendto(d->ep, "q", 1, NULL, 0), 0);
        else
            cr_assert_eq(pact_datagram_sendto(d->ep, "q", 1,
                                              (struct sockaddr *)&dc->sink_addr,
                                              dc->sink_len), 0);
        cr_assert_eq(pact_datagram_close(d->ep), 0);
        break;
    default:
        break;
    }
}

static void dgram_batch(pact_loop *loop, void *ctx, int first, int n)
{
    dgram_ctx *dc = ctx;
    dconn *ds = calloc((size_t)n, sizeof *ds);
    for (int i = 0; i < n; i++) {
        ds[i].mode = (first + i) % D_MODES;
        dgram_open(loop, dc, &ds[i]);
    }
    int made;
    do {
        made = 0;
        for (int i = 0; i < n; i++)
            made += ds[i].made;
        if (made < n)
            cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    } while (made < n);
    for (int i = 0; i < n; i++)
        if (!ds[i].lost)
            dgram_act(dc, &ds[i]);
    uint64_t end = pact_now() + 5000 * MS;
    for (int i = 0; i < n; i++) {
        while (!ds[i].lost) {
            if (pact_now() >= end) {
                pact_datagram_stats st;
                pact_datagram_get_stats(ds[i].ep, &st);
                cr_assert_fail("endpoint %d (mode %d) not lost: errors %d, "
                               "closing %d, sent %llu, send errors %llu, "
                               "receive errors %llu",
                               first + i, ds[i].mode, ds[i].errors,
                               pact_datagram_is_closing(ds[i].ep),
                               (unsigned long long)st.sent,
                               (unsigned long long)st.send_errors,
                               (unsigned long long)st.receive_errors);
            }
            cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
        }
    }
    for (int i = 0; i < n; i++) {
        dconn *d = &ds[i];
        cr_assert_eq(d->bad, 0, "endpoint %d (mode %d): callbacks out of order",
                     first + i, d->mode);
        cr_assert_eq(d->lost_err, 0, "endpoint %d (mode %d): lost with %s",
                     first + i, d->mode, pact_strerror(d->lost_err));
        if (d->mode == D_CLOSE_IN_LOST)
            cr_assert_lt(d->close_in_lost, 0);
        if (d->mode == D_CLOSE_IN_ERROR && !dc->unix_pairs)
            cr_assert_geq(d->errors, 1);
        if (d->peer >= 0)
            close(d->peer);
    }
    free(ds);
}

Test(leaks, udp_endpoints)
{
    dgram_ctx dc = {0};
    /* A sink that is never read (datagrams beyond its buffer are dropped,
     * as UDP does) and a port on which nothing listens. */
    cr_assert_eq(pact_sockaddr_parse("127.0.0.1", 0, &dc.sink_addr, &dc.sink_len),
                 0);
    dc.sink = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(bind(dc.sink, (struct sockaddr *)&dc.sink_addr, dc.sink_len), 0);
    dc.sink_len = sizeof dc.sink_addr;
    cr_assert_eq(getsockname(dc.sink, (struct sockaddr *)&dc.sink_addr,
                             &dc.sink_len), 0);
    /* The dead port lies below the ephemeral range: one the kernel picked
     * for port 0 would soon be picked again for one of the 10,000
     * endpoints bound to port 0 here, which would then swallow the
     * datagrams meant to be refused. */
    int low = 32768, high;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &low, &high) != 2)
            low = 32768;
        fclose(f);
    }
    int dead = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int port = low - 1;
    for (;; port--) {
        cr_assert_gt(port, 1024, "no free UDP port below %d", low);
        cr_assert_eq(pact_sockaddr_parse("127.0.0.1", (uint16_t)port,
                                         &dc.dead_addr, &dc.dead_len), 0);
        if (bind(dead, (struct sockaddr *)&dc.dead_addr, dc.dead_len) == 0)
            break;
    }
    close(dead);
    run_kind("udp endpoint", 10000, 6 * 20, dgram_batch, &dc);
    close(dc.sink);
}

Test(leaks, unix_datagram_endpoints)
{
    dgram_ctx dc = {.unix_pairs = 1, .sink = -1};
    run_kind("unix dgram endpoint", 10000, 6 * 20, dgram_batch, &dc);
}

/* ---- servers (TCP, Unix abstract) -------------------------------------------------- */

enum {
    V_CLOSE_NOW,        /* closed right after listen, from outside */
    V_CLOSE_IN_FACTORY, /* the factory closes it and serves the connection */
    V_REFUSE_IN_FACTORY,/* the factory closes it and refuses the connection */
    V_CLOSE_IN_CONN,    /* the connection's connection_made closes both */
    V_CLOSE_OUTSIDE_WITH_CONN, /* closed from outside with a connection open */
    V_MODES
};

typedef struct vconn {
    int mode;
    pact_server *s;
    int client;
    int waited, factory_calls;
    conn c; /* the served connection */
} vconn;

static void v_made(pact_transport *t, void *user)
{
    vconn *v = user;
    c_made(t, &v->c);
    if (v->mode == V_CLOSE_IN_CONN) {
        cr_assert_eq(pact_server_close(v->s), 0);
        cr_assert_eq(pact_transport_close(t), 0);
    }
}

static void v_data(pact_transport *t, const void *d, size_t len, void *user)
{
    c_data(t, d, len, &((vconn *)user)->c);
}

static int v_eof(pact_transport *t, void *user)
{
    return c_eof(t, &((vconn *)user)->c);
}

static void v_lost(pact_transport *t, int err, void *user)
{
    c_lost(t, err, &((vconn *)user)->c);
}

static const pact_protocol served_proto = {
    .connection_made = v_made,
    .data_received = v_data,
    .eof_received = v_eof,
    .connection_lost = v_lost,
};

static int v_factory(pact_server *s, void *fu, const pact_protocol **proto,
                     void **user)
{
    vconn *v = fu;
    v->factory_calls++;
    if (v->mode == V_CLOSE_IN_FACTORY || v->mode == V_REFUSE_IN_FACTORY)
        cr_assert_eq(pact_server_close(s), 0);
    if (v->mode == V_REFUSE_IN_FACTORY)
        return -ECONNREFUSED;
    v->c.mode = S_MODES; /* nothing special: ends by the peer's EOF */
    if (v->mode == V_CLOSE_IN_FACTORY)
        v->c.mode = S_CLOSE_IN_MADE;
    *proto = &served_proto;
    *user = v;
    return 0;
}

static void v_waited(pact_loop *loop, void *user)
{
    (void)loop;
    ((vconn *)user)->waited++;
}

static int v_connect(const vconn *v, int tcp, const char *name)
{
    int fd;
    if (tcp) {
        struct sockaddr_storage ss;
        socklen_t len;
        cr_assert_eq(pact_sockaddr_parse("127.0.0.1",
                                         (uint16_t)pact_server_port(v->s), &ss,
                                         &len), 0);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(connect(fd, (struct sockaddr *)&ss, len), 0);
    } else {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        size_t n = strlen(name);
        memcpy(sun.sun_path, name, n);
        sun.sun_path[0] = '\0'; /* abstract */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(connect(fd, (struct sockaddr *)&sun,
                             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)),
                     0, "connect %s: %s", name, strerror(errno));
    }
    return fd;
}

static void server_batch(pact_loop *loop, void *ctx, int first, int n)
{
    (void)ctx;
    vconn *vs = calloc((size_t)n, sizeof *vs);
    for (int i = 0; i < n; i++) {
        vconn *v = &vs[i];
        int k = first + i;
        v->mode = k % V_MODES;
        v->client = -1;
        int tcp = (k / V_MODES) % 2 == 0;
        char name[64];
        snprintf(name, sizeof name, "@pact-leaks-%d-%d", (int)getpid(), k);
        if (tcp)
            cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL,
                                                v_factory, v, &v->s), 0);
        else
            cr_assert_eq(pact_server_listen_unix(loop, name, NULL, v_factory, v,
                                                 &v->s), 0);
        cr_assert_eq(pact_server_wait_closed(v->s, v_waited, v), 0);
        if (v->mode == V_CLOSE_NOW)
            cr_assert_eq(pact_server_close(v->s), 0);
        else
            v->client = v_connect(v, tcp, name);
    }
    /* Each connection made (or refused) ... */
    uint64_t end = pact_now() + 5000 * MS;
    for (int i = 0; i < n; i++) {
        vconn *v = &vs[i];
        int served = v->mode == V_CLOSE_IN_FACTORY || v->mode == V_CLOSE_IN_CONN ||
                     v->mode == V_CLOSE_OUTSIDE_WITH_CONN;
        while ((v->mode != V_CLOSE_NOW && !v->factory_calls) ||
               (served && !v->c.made)) {
            cr_assert(pact_now() < end, "server %d (mode %d): no connection",
                      first + i, v->mode);
            cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
        }
    }
    /* ... then the rest closed, and the clients go. */
    for (int i = 0; i < n; i++) {
        vconn *v = &vs[i];
        if (v->mode == V_CLOSE_OUTSIDE_WITH_CONN)
            cr_assert_eq(pact_server_close(v->s), 0);
        if (v->client >= 0)
            shutdown(v->client, SHUT_WR);
    }
    end = pact_now() + 5000 * MS;
    for (int i = 0; i < n; i++) {
        while (!vs[i].waited) {
            cr_assert(pact_now() < end, "server %d (mode %d) never finished",
                      first + i, vs[i].mode);
            cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
        }
    }
    for (int i = 0; i < n; i++) {
        vconn *v = &vs[i];
        cr_assert_eq(v->waited, 1);
        int served = v->mode == V_CLOSE_IN_FACTORY || v->mode == V_CLOSE_IN_CONN ||
                     v->mode == V_CLOSE_OUTSIDE_WITH_CONN;
        if (served) {
            cr_assert_eq(v->factory_calls, 1);
            cr_assert_eq(v->c.made, 1, "server %d (mode %d)", first + i, v->mode);
            cr_assert_eq(v->c.lost, 1, "server %d (mode %d)", first + i, v->mode);
            cr_assert_eq(v->c.bad, 0);
        }
        if (v->client >= 0)
            close(v->client);
    }
    free(vs);
}

Test(leaks, servers)
{
    /* Half TCP, half Unix (abstract names: no files to clean up). */
    run_kind("server", 10000, 5 * 20, server_batch, NULL);
}

/* ---- timers (call_later + cancel) ---------------------------------------------------- */

enum {
    T_CANCEL_AT_ONCE,   /* cancelled right after call_later */
    T_FIRES,            /* runs */
    T_CANCEL_SELF,      /* cancels itself from its own callback */
    T_CANCELS_NEXT,     /* its callback cancels the next timer */
    T_CANCELLED_BY_PREV,/* ... this one, never run */
    T_CANCEL_TWICE,     /* cancelled, then cancelled again: -ENOENT */
    T_MODES
};

typedef struct tim {
    int mode;
    pact_handle h;
    int ran;
    struct tim *next;
    int self_cancel;
} tim;

static void t_fired(pact_loop *loop, void *user)
{
    tim *t = user;
    t->ran++;
    if (t->mode == T_CANCEL_SELF)
        t->self_cancel = pact_handle_cancel(loop, t->h);
    if (t->mode == T_CANCELS_NEXT && t->next)
        cr_assert_eq(pact_handle_cancel(loop, t->next->h), 0);
}

static void timer_batch(pact_loop *loop, void *ctx, int first, int n)
{
    (void)ctx;
    tim *ts = calloc((size_t)n, sizeof *ts);
    for (int i = 0; i < n; i++) {
        tim *t = &ts[i];
        t->mode = (first + i) % T_MODES;
        t->next = i + 1 < n ? &ts[i + 1] : NULL;
        /* The cancelled-by-previous one is due later than its canceller. */
        uint64_t delay = (uint64_t)(i % 7) * 100 * 1000 +
                         (t->mode == T_CANCELLED_BY_PREV ? 2 * MS : 0);
        t->h = pact_call_later(loop, delay, t_fired, t);
        cr_assert_gt(t->h, 0);
        if (t->mode == T_CANCEL_AT_ONCE)
            cr_assert_eq(pact_handle_cancel(loop, t->h), 0);
        if (t->mode == T_CANCEL_TWICE) {
            cr_assert_eq(pact_handle_cancel(loop, t->h), 0);
            cr_assert_eq(pact_handle_cancel(loop, t->h), -ENOENT);
        }
    }
    pact_loop_stats st;
    do {
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
        cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    } while (st.handles_live > 0);
    for (int i = 0; i < n; i++) {
        tim *t = &ts[i];
        int should_run = t->mode == T_FIRES || t->mode == T_CANCEL_SELF ||
                         t->mode == T_CANCELS_NEXT;
        if (t->mode == T_CANCELLED_BY_PREV && i == 0)
            should_run = 1; /* no previous one in this batch */
        cr_assert_eq(t->ran, should_run, "timer %d (mode %d) ran %d times",
                     first + i, t->mode, t->ran);
        if (t->mode == T_CANCEL_SELF)
            cr_assert_eq(t->self_cancel, -EALREADY);
    }
    free(ts);
}

Test(leaks, timers)
{
    run_kind("timer", 10000, T_MODES * 100, timer_batch, NULL);
}

/* ---- signal handlers (add / remove) ----------------------------------------------- */

enum {
    G_REMOVE_AT_ONCE,  /* removed right after add, never run */
    G_REMOVE_SELF,     /* removes itself from its own handler */
    G_REMOVES_NEXT,    /* its handler removes the next one ... */
    G_REMOVED_BY_PREV, /* ... this one, so it never runs */
    G_REMOVE_AFTER,    /* runs, removed afterwards from outside */
    G_MODES
};

typedef struct sig {
    int mode;
    pact_signal h;
    int ran, removed;
    struct sig *next;
} sig;

static void g_handler(pact_loop *loop, int signo, void *user)
{
    cr_assert_eq(signo, SIGUSR1);
    sig *g = user;
    g->ran++;
    if (g->mode == G_REMOVE_SELF) {
        cr_assert_eq(pact_signal_cancel(loop, g->h), 0);
        g->removed = 1;
    }
    if (g->mode == G_REMOVES_NEXT && g->next) {
        cr_assert_eq(pact_signal_cancel(loop, g->next->h), 0);
        g->next->removed = 1;
    }
}

static void signal_batch(pact_loop *loop, void *ctx, int first, int n)
{
    (void)ctx;
    sig *gs = calloc((size_t)n, sizeof *gs);
    int expect_runs = 0;
    for (int i = 0; i < n; i++) {
        sig *g = &gs[i];
        g->mode = (first + i) % G_MODES;
        g->next = i + 1 < n ? &gs[i + 1] : NULL;
        g->h = pact_signal_add(loop, SIGUSR1, g_handler, g);
        cr_assert_gt(g->h, 0, "pact_signal_add: %s", pact_strerror((int)g->h));
        if (g->mode == G_REMOVE_AT_ONCE) {
            cr_assert_eq(pact_signal_cancel(loop, g->h), 0);
            g->removed = 1;
        } else if (g->mode != G_REMOVED_BY_PREV || i == 0) {
            expect_runs++;
        }
    }
    /* One signal: every handler still added runs once. It is consumed
     * before the last handler goes (else its default action would kill
     * the test once the mask is restored). */
    cr_assert_eq(raise(SIGUSR1), 0);
    int runs;
    uint64_t end = pact_now() + 5000 * MS;
    do {
        cr_assert(pact_now() < end, "the signal never arrived");
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
        runs = 0;
        for (int i = 0; i < n; i++)
            runs += gs[i].ran;
    } while (runs < expect_runs);
    for (int i = 0; i < n; i++) {
        sig *g = &gs[i];
        int should_run = g->mode != G_REMOVE_AT_ONCE &&
                         (g->mode != G_REMOVED_BY_PREV || i == 0);
        cr_assert_eq(g->ran, should_run, "handler %d (mode %d) ran %d times",
                     first + i, g->mode, g->ran);
        if (!g->removed) {
            cr_assert_eq(pact_signal_cancel(loop, g->h), 0);
            g->removed = 1;
        }
        cr_assert_eq(pact_signal_cancel(loop, g->h), -ENOENT);
    }
    free(gs);
    /* Removing the last handler cancels the loop's wait for the
     * signalfd, which is closed when the engine hands that wait back. */
    for (int i = 0; i < 2; i++)
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
}

Test(leaks, signal_handlers)
{
    /* Every batch ends with no handler left: the signal is unblocked and
     * the signalfd closed each time, so 1,000 rounds of 10 cover the
     * first-add / last-remove path as often as the rest. */
    run_kind("signal handler", 10000, G_MODES * 2, signal_batch, NULL);
}

/* ---- processes ---------------------------------------------------------------------- */

enum {
    P_NATURAL,          /* /bin/true runs to its end, never closed */
    P_CLOSE_IN_MADE,    /* closed (and killed if still running) at once */
    P_CLOSE_IN_DATA,    /* /bin/echo: closed in pipe_data_received */
    P_CLOSE_IN_PIPE_LOST, /* closed in pipe_connection_lost (stdout) */
    P_CLOSE_IN_EXITED,  /* closed in process_exited */
    P_CLOSE_IN_LOST,    /* closed again in connection_lost */
    P_MODES
};

typedef struct proc {
    int mode;
    pact_process *p;
    int made, exited, lost, bad, data, pipes_lost;
    int close_in_lost;
} proc;

static void p_made(pact_process *p, void *user)
{
    proc *x = user;
    if (x->made || x->lost)
        x->bad++;
    x->made = 1;
    if (x->mode == P_CLOSE_IN_MADE)
        cr_assert_eq(pact_process_close(p), 0);
}

static void p_data(pact_process *p, int fd, const void *data, size_t len,
                   void *user)
{
    (void)fd;
    (void)data;
    (void)len;
    proc *x = user;
    if (!x->made || x->lost)
        x->bad++;
    if (x->mode == P_CLOSE_IN_DATA && x->data++ == 0)
        cr_assert_eq(pact_process_close(p), 0);
}

static void p_pipe_lost(pact_process *p, int fd, int err, void *user)
{
    (void)err;
    proc *x = user;
    if (!x->made || x->lost)
        x->bad++;
    if (x->mode == P_CLOSE_IN_PIPE_LOST && fd == 1 && x->pipes_lost++ == 0) {
        int r = pact_process_close(p);
        cr_assert(r == 0 || r == -EALREADY, "close in pipe_connection_lost: %d", r);
    }
}

static void p_exited(pact_process *p, void *user)
{
    proc *x = user;
    if (!x->made || x->lost || x->exited)
        x->bad++;
    x->exited = 1;
    if (x->mode == P_CLOSE_IN_EXITED) {
        int r = pact_process_close(p);
        cr_assert(r == 0 || r == -EALREADY, "close in process_exited: %d", r);
    }
}

static void p_lost(pact_process *p, void *user)
{
    proc *x = user;
    if (!x->made || !x->exited || x->lost)
        x->bad++;
    x->lost = 1;
    if (x->mode == P_CLOSE_IN_LOST)
        x->close_in_lost = pact_process_close(p);
}

static const pact_subprocess_protocol proc_proto = {
    .connection_made = p_made,
    .pipe_data_received = p_data,
    .pipe_connection_lost = p_pipe_lost,
    .process_exited = p_exited,
    .connection_lost = p_lost,
};

static void process_batch(pact_loop *loop, void *ctx, int first, int n)
{
    (void)ctx;
    static char *const true_argv[] = {"/bin/true", NULL};
    static char *const echo_argv[] = {"/bin/echo", "x", NULL};
    proc *xs = calloc((size_t)n, sizeof *xs);
    for (int i = 0; i < n; i++) {
        proc *x = &xs[i];
        x->mode = (first + i) % P_MODES;
        pact_process_options o = PACT_PROCESS_OPTIONS_INIT;
        o.argv = x->mode == P_CLOSE_IN_DATA ? echo_argv : true_argv;
        o.stdio[0].kind = PACT_STDIO_DEVNULL;
        o.stdio[1].kind = PACT_STDIO_PIPE;
        o.stdio[2].kind = PACT_STDIO_DEVNULL;
        cr_assert_eq(pact_process_spawn(loop, &o, &proc_proto, x, &x->p), 0);
    }
    uint64_t end = pact_now() + 10000 * MS;
    for (int i = 0; i < n; i++) {
        while (!xs[i].lost) {
            cr_assert(pact_now() < end, "process %d (mode %d) never lost",
                      first + i, xs[i].mode);
            cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
        }
    }
    for (int i = 0; i < n; i++) {
        proc *x = &xs[i];
        cr_assert_eq(x->bad, 0, "process %d (mode %d): callbacks out of order",
                     first + i, x->mode);
        cr_assert_eq(x->exited, 1);
        /* It ended by itself: close() from connection_lost is harmless,
         * 0 or -EALREADY, and calls nothing (bad counts any call). */
        if (x->mode == P_CLOSE_IN_LOST)
            cr_assert(x->close_in_lost == 0 || x->close_in_lost == -EALREADY,
                      "close in connection_lost: %d", x->close_in_lost);
    }
    free(xs);
}

Test(leaks, processes)
{
    /* 1,000, not 10,000: a spawn is a clone and an exec of /bin/true
     * (about 1 ms, more under ASan), and the pidfd, pipes and transports
     * each cycle exercises are the same at any count. */
    run_kind("process", 1000, P_MODES * 10, process_batch, NULL);
}

/* ---- TLS transports ------------------------------------------------------------------ */

#ifndef TLS_TOTAL
#define TLS_TOTAL 500
#endif

/* Two more ways for a TLS transport to end, besides the stream ones. */
enum {
    L_CLOSE_BEFORE_HANDSHAKE = S_MODES, /* closed right after pact_tls_wrap */
    L_CLOSE_IN_HANDSHAKE,               /* closed from on_handshake */
    L_MODES
};

typedef struct tls_ctx {
    pact_tls_context *cctx, *sctx;
} tls_ctx;

static const pact_protocol plain_proto = {0};

static void l_handshake(pact_loop *loop, pact_transport *t, int err, void *user)
{
    (void)loop;
    conn *c = user;
    c->handshakes++;
    c->handshake_err = err;
    if (!err && c->mode == L_CLOSE_IN_HANDSHAKE)
        cr_assert_eq(pact_transport_close(t), 0);
}

/* The handshake has failed, or the transport is lost. */
static int tls_done(const conn *c)
{
    return c->handshakes && (c->handshake_err || c->lost);
}

static void tls_wrap_side(pact_loop *loop, int fd, pact_tls_context *ctx,
                          const char *name, conn *c, pact_transport **tls)
{
    pact_transport *plain;
    cr_assert_eq(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    cr_assert_eq(pact_transport_open(loop, fd, PACT_STREAM_SOCKET, &plain_proto,
                                     NULL, &plain), 0);
    cr_assert_eq(pact_tls_wrap(plain, ctx, name, NULL, 0, 0, &conn_proto, c,
                               l_handshake, c, tls), 0);
}

static void tls_batch(pact_loop *loop, void *ctx, int first, int n)
{
    tls_ctx *tc = ctx;
    conn *cs = calloc((size_t)n, sizeof *cs), *ss = calloc((size_t)n, sizeof *ss);
    for (int i = 0; i < n; i++) {
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        cs[i].mode = (first + i) % L_MODES;
        cs[i].peer = ss[i].peer = -1;
        ss[i].mode = L_MODES; /* the server side only answers */
        cs[i].tls_peer = &ss[i];
        pact_transport *ct, *st;
        tls_wrap_side(loop, sv[0], tc->cctx, "localhost", &cs[i], &ct);
        tls_wrap_side(loop, sv[1], tc->sctx, NULL, &ss[i], &st);
        if (cs[i].mode == L_CLOSE_BEFORE_HANDSHAKE)
            cr_assert_eq(pact_transport_close(ct), 0);
    }
    /* Both handshakes over (or failed), then the server side acts. */
    uint64_t end = pact_now() + 10000 * MS;
    for (int i = 0; i < n; i++) {
        while (!cs[i].handshakes || !ss[i].handshakes) {
            cr_assert(pact_now() < end, "TLS pair %d (mode %d): no handshake",
                      first + i, cs[i].mode);
            cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
        }
    }
    for (int i = 0; i < n; i++) {
        conn *c = &cs[i], *s = &ss[i];
        if (c->lost || s->lost || c->handshake_err || s->handshake_err)
            continue;
        switch (c->mode) {
        case S_CLOSE_IN_DATA:
            cr_assert_eq(pact_transport_write(s->t, "x", 1), 0);
            break;
        case S_CLOSE_IN_EOF:
        case S_CLOSE_IN_LOST:
            cr_assert_eq(pact_transport_close(s->t), 0); /* close_notify */
            break;
        case S_CLOSE_OUTSIDE:
            cr_assert_eq(pact_transport_close(c->t), 0);
            break;
        case S_PEER_RESET:
            cr_assert_eq(pact_transport_abort(s->t), 0);
            break;
        default:
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        while (!tls_done(&cs[i]) || !tls_done(&ss[i])) {
            cr_assert(pact_now() < end, "TLS pair %d (mode %d) not torn down",
                      first + i, cs[i].mode);
            cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
        }
    }
    for (int i = 0; i < n; i++) {
        conn *c = &cs[i];
        cr_assert_eq(c->handshakes, 1);
        cr_assert_eq(ss[i].handshakes, 1);
        if (c->mode == L_CLOSE_BEFORE_HANDSHAKE) {
            cr_assert_lt(c->handshake_err, 0);
            cr_assert_eq(c->made + c->lost, 0, "protocol called after a failed "
                         "handshake");
            continue;
        }
        cr_assert_eq(c->handshake_err, 0, "TLS pair %d (mode %d): %s", first + i,
                     c->mode, pact_strerror(c->handshake_err));
        expect_conn_done(c, first + i);
        cr_assert_eq(ss[i].bad, 0);
        /* An abort right after the client's handshake may drop its last
         * handshake message: the server's handshake then fails. */
        cr_assert(ss[i].lost == 1 ||
                      (ss[i].handshake_err && ss[i].made + ss[i].lost == 0 &&
                       c->mode == S_ABORT_IN_MADE),
                  "TLS pair %d (mode %d): server side %s, made %d lost %d",
                  first + i, c->mode, pact_strerror(ss[i].handshake_err),
                  ss[i].made, ss[i].lost);
    }
    free(cs);
    free(ss);
}

Test(leaks, tls_transports)
{
    tls_certs certs;
    tls_certs_make(&certs, "pact-leaks-tls");
    tls_ctx tc;
    cr_assert_eq(pact_tls_context_create(PACT_TLS_CLIENT, &tc.cctx), 0);
    cr_assert_eq(pact_tls_context_set_ca(tc.cctx, certs.ca_pem, NULL), 0);
    cr_assert_eq(pact_tls_context_create(PACT_TLS_SERVER, &tc.sctx), 0);
    cr_assert_eq(pact_tls_context_set_certificate(tc.sctx, certs.srv_pem, certs.srv_key),
                 0);
    cr_assert_eq(tls_certs_remove(&certs), 0);
    run_kind("tls transport", TLS_TOTAL, L_MODES * 5, tls_batch, &tc);
    pact_tls_context_free(tc.cctx);
    pact_tls_context_free(tc.sctx);
}
