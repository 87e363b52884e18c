/* SPDX-License-Identifier: MIT */
/* UDP datagram endpoints on the completion port: src/datagram.c, the same
 * policy as on Linux, on WSARecvFrom / WSASendTo, under Wine. Datagrams
 * both ways with every byte and sender checked, an error never stopping
 * reception (a datagram longer than the buffer, a peer that is gone),
 * pause without loss, write flow control, close flushing, abort
 * dropping, loop close, and what Windows refuses. */
#include <stdio.h>

#include "helpers.h"
#include "win/posix.h" /* ESHUTDOWN, which the C runtime of mingw-w64 lacks */

typedef struct dside {
    pact_datagram *ep;
    int made, lost, lost_err;
    int received, bad, errors, last_err, err_with_addr;
    int paused_writing, resumed_writing;
    int echo, paused_now, data_while_paused;
    uint16_t last_port;
    size_t last_len;
    struct sockaddr_storage last_from;
    socklen_t last_fromlen;
} dside;

static void d_made(pact_datagram *ep, void *user)
{
    dside *d = user;
    d->made++;
    d->ep = ep;
}

/* Datagram k carries k in its first 4 bytes, then the test pattern from
 * k * 7; its length is k % 1400. */
static size_t make_datagram(uint8_t *buf, uint32_t k)
{
    size_t len = 4 + k % 1400;
    memcpy(buf, &k, 4);
    test_fill_pattern(buf + 4, len - 4, (uint64_t)k * 7);
    return len;
}

static int datagram_ok(const uint8_t *p, size_t len, uint32_t want)
{
    uint32_t k;
    if (len < 4)
        return 0;
    memcpy(&k, p, 4);
    if (k != want || len != 4 + k % 1400)
        return 0;
    for (size_t i = 4; i < len; i++)
        if (p[i] != test_pattern_byte((uint64_t)k * 7 + i - 4))
            return 0;
    return 1;
}

static void d_received(pact_datagram *ep, const void *data, size_t len,
                       const struct sockaddr *addr, socklen_t addrlen,
                       void *user)
{
    dside *d = user;
    if (d->paused_now)
        d->data_while_paused++;
    if (len >= 4 && !datagram_ok(data, len, (uint32_t)d->received))
        d->bad++;
    d->received++;
    d->last_len = len;
    if (addr) {
        memcpy(&d->last_from, addr, (size_t)addrlen);
        d->last_fromlen = addrlen;
        d->last_port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
    }
    if (d->echo)
        cr_assert_eq(pact_datagram_sendto(ep, data, len, addr, addrlen), 0);
}

static void d_error(pact_datagram *ep, int err, const struct sockaddr *addr,
                    socklen_t addrlen, void *user)
{
    (void)ep, (void)addrlen;
    dside *d = user;
    d->errors++;
    d->last_err = err;
    if (addr)
        d->err_with_addr++;
}

static void d_lost(pact_datagram *ep, int err, void *user)
{
    (void)ep;
    dside *d = user;
    d->lost++;
    d->lost_err = err;
}

static void d_pause(pact_datagram *ep, void *user)
{
    (void)ep;
    ((dside *)user)->paused_writing++;
}

static void d_resume(pact_datagram *ep, void *user)
{
    (void)ep;
    ((dside *)user)->resumed_writing++;
}

static const pact_datagram_protocol dproto = {
    .connection_made = d_made,
    .datagram_received = d_received,
    .error_received = d_error,
    .connection_lost = d_lost,
    .pause_writing = d_pause,
    .resume_writing = d_resume,
};

static uint16_t local_port(pact_datagram *ep)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    cr_assert_eq(pact_datagram_sockname(ep, &ss, &len), 0);
    cr_assert_eq(ss.ss_family, AF_INET);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static struct sockaddr_in loopback(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void open_udp(pact_loop *loop, dside *d, const pact_datagram_options *o)
{
    memset(d, 0, sizeof *d);
    pact_datagram *ep = NULL;
    int r = pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, o, &dproto,
                                   d, &ep);
    cr_assert_eq(r, 0, "%s", pact_strerror(r));
    d->ep = ep;
    run_until(loop, &d->made, 3000);
}

static void close_both(pact_loop *loop, dside *a, dside *b)
{
    cr_assert_eq(pact_datagram_close(a->ep), 0);
    cr_assert_eq(pact_datagram_close(b->ep), 0);
    run_until(loop, &a->lost, 3000);
    run_until(loop, &b->lost, 3000);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(a->lost, 1);
    cr_assert_eq(b->lost, 1);
    cr_assert_eq(a->lost_err, 0);
    cr_assert_eq(b->lost_err, 0);
}

/* 500 datagrams of 4..1403 bytes (an empty one too) sent to an echoing
 * endpoint and back: each arrives whole, in order on loopback, from the
 * right port, and the counters add up. */
Test(datagram, datagrams_echo_whole_with_their_sender)
{
    pact_loop *loop = test_loop_new();
    dside a, b;
    open_udp(loop, &a, NULL);
    open_udp(loop, &b, NULL);
    b.echo = 1;
    struct sockaddr_in to = loopback(local_port(b.ep));
    uint16_t a_port = local_port(a.ep);
    enum { N = 500 };
    uint8_t buf[1500];
    for (uint32_t k = 0; k < N; k++) {
        size_t len = make_datagram(buf, k);
        cr_assert_eq(pact_datagram_sendto(a.ep, buf, len, (struct sockaddr *)&to,
                                          sizeof to), 0);
        if (k % 50 == 49) /* loopback UDP drops what overflows its buffer */
            for (int i = 0; i < 20 && a.received < (int)k; i++)
                pact_loop_run_once(loop, 5 * (int64_t)MS);
    }
    uint64_t end = pact_now() + 10000 * MS;
    while (a.received < N && pact_now() < end)
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    cr_assert_eq(b.received, N);
    cr_assert_eq(a.received, N);
    cr_assert_eq(a.bad, 0, "a datagram came back cut, mixed or out of order");
    cr_assert_eq(b.bad, 0);
    cr_assert_eq(b.last_port, a_port, "the sender's address");
    cr_assert_eq(a.last_port, local_port(b.ep));
    /* An empty datagram is a datagram, not end of file. */
    cr_assert_eq(pact_datagram_sendto(a.ep, "", 0, (struct sockaddr *)&to,
                                      sizeof to), 0);
    end = pact_now() + 3000 * MS;
    while (a.received < N + 1 && pact_now() < end)
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    cr_assert_eq(a.received, N + 1);
    cr_assert_eq(a.last_len, 0);
    pact_datagram_stats st;
    cr_assert_eq(pact_datagram_get_stats(a.ep, &st), 0);
    cr_assert_eq(st.sent, N + 1);
    cr_assert_eq(st.received, N + 1);
    cr_assert_eq(st.send_errors + st.dropped + st.receive_errors, 0);
    close_both(loop, &a, &b);
    test_loop_free(loop);
}

/* An error never stops reception: a datagram longer than the receive
 * buffer is reported (-EMSGSIZE, with its sender) and dropped, and the
 * next one is received; the same after datagrams sent to a port nobody
 * listens on (Windows reports the ICMP port unreachable as
 * WSAECONNRESET on the next receive: -ECONNREFUSED here; Wine reports
 * nothing). */
Test(datagram, an_error_never_stops_reception)
{
    pact_loop *loop = test_loop_new();
    pact_datagram_options o = PACT_DATAGRAM_OPTIONS_INIT;
    o.max_datagram = 512;
    dside a, b;
    open_udp(loop, &a, NULL);
    open_udp(loop, &b, &o);
    struct sockaddr_in to = loopback(local_port(b.ep));
    static uint8_t big[2000];
    uint8_t buf[1500];
    for (uint32_t k = 0; k < 20; k++) {
        /* A cut one, then a whole one, twenty times. */
        cr_assert_eq(pact_datagram_sendto(a.ep, big, sizeof big,
                                          (struct sockaddr *)&to, sizeof to), 0);
        size_t len = make_datagram(buf, k); /* 4 + k bytes: under 512 */
        cr_assert_eq(pact_datagram_sendto(a.ep, buf, len, (struct sockaddr *)&to,
                                          sizeof to), 0);
        uint64_t end = pact_now() + 3000 * MS;
        while ((b.received < (int)k + 1 || b.errors < (int)k + 1) &&
               pact_now() < end)
            pact_loop_run_once(loop, 2 * (int64_t)MS);
        cr_assert_eq(b.received, (int)k + 1, "reception stopped after an error");
        cr_assert_eq(b.errors, (int)k + 1);
        cr_assert_eq(b.last_err, -EMSGSIZE, "%s", pact_strerror(b.last_err));
    }
    cr_assert_eq(b.err_with_addr, 20, "-EMSGSIZE names the sender");
    cr_assert_eq(b.bad, 0);
    pact_datagram_stats st;
    cr_assert_eq(pact_datagram_get_stats(b.ep, &st), 0);
    cr_assert_eq(st.received, 20);
    cr_assert_eq(st.receive_errors, 20);

    /* A peer that is gone: a's datagrams to it, then one from b. */
    SOCKET gone = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
    struct sockaddr_in ga = loopback(0);
    cr_assert_eq(bind(gone, (struct sockaddr *)&ga, sizeof ga), 0);
    int glen = sizeof ga;
    getsockname(gone, (struct sockaddr *)&ga, &glen);
    closesocket(gone);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(pact_datagram_sendto(a.ep, "lost", 4, (struct sockaddr *)&ga,
                                          sizeof ga), 0);
        for (int j = 0; j < 5; j++)
            pact_loop_run_once(loop, 2 * (int64_t)MS);
    }
    struct sockaddr_in back = loopback(local_port(a.ep));
    size_t len = make_datagram(buf, 0);
    cr_assert_eq(pact_datagram_sendto(b.ep, buf, len, (struct sockaddr *)&back,
                                      sizeof back), 0);
    run_until(loop, &a.received, 3000);
    cr_assert_eq(a.received, 1, "reception stopped after an ICMP error");
    cr_assert_eq(a.bad, 0);
    cr_log_info("%d error(s) reported for the gone peer%s", a.errors,
                a.errors ? "" : " (Wine reports no ICMP port unreachable)");
    if (a.errors)
        cr_assert_eq(a.last_err, -ECONNREFUSED, "%s", pact_strerror(a.last_err));
    cr_assert_eq(pact_datagram_get_stats(a.ep, &st), 0);
    cr_assert_eq(st.sent, 40 + 5, "sends go on too");
    close_both(loop, &a, &b);
    test_loop_free(loop);
}

/* Paused, nothing is delivered; what arrived meanwhile comes after
 * resume, every datagram, in order. */
Test(datagram, pause_and_resume_lose_nothing)
{
    pact_loop *loop = test_loop_new();
    dside a, b;
    open_udp(loop, &a, NULL);
    open_udp(loop, &b, NULL);
    struct sockaddr_in to = loopback(local_port(b.ep));
    uint8_t buf[1500];
    uint32_t sent = 0;
    for (int round = 0; round < 10; round++) {
        cr_assert_eq(pact_datagram_pause_reading(b.ep), 0);
        cr_assert_not(pact_datagram_is_reading(b.ep));
        b.paused_now = 1;
        for (int i = 0; i < 20; i++, sent++) {
            size_t len = make_datagram(buf, sent);
            cr_assert_eq(pact_datagram_sendto(a.ep, buf, len,
                                              (struct sockaddr *)&to, sizeof to), 0);
        }
        for (int i = 0; i < 10; i++)
            pact_loop_run_once(loop, 2 * (int64_t)MS);
        b.paused_now = 0;
        cr_assert_eq(pact_datagram_resume_reading(b.ep), 0);
        uint64_t end = pact_now() + 3000 * MS;
        while (b.received < (int)sent && pact_now() < end)
            pact_loop_run_once(loop, 2 * (int64_t)MS);
        cr_assert_eq(b.received, (int)sent);
    }
    cr_assert_eq(b.data_while_paused, 0);
    cr_assert_eq(b.bad, 0);
    close_both(loop, &a, &b);
    test_loop_free(loop);
}

/* A high mark of zero (pact_datagram_set_write_marks, asyncio's high=0):
 * every datagram is queued until its send completes, so the first one
 * pauses, and the send that empties the queue resumes. */
Test(datagram, a_zero_high_mark_pauses_while_a_datagram_is_queued)
{
    pact_loop *loop = test_loop_new();
    dside a, b;
    open_udp(loop, &a, NULL);
    open_udp(loop, &b, NULL);
    struct sockaddr_in to = loopback(local_port(b.ep));
    cr_assert_eq(pact_datagram_set_write_marks(a.ep, 0, 0), 0);
    size_t high, low;
    pact_datagram_get_write_buffer_limits(a.ep, &high, &low);
    cr_assert_eq(high, 0);
    cr_assert_eq(low, 0);
    uint8_t buf[1500];
    size_t len = make_datagram(buf, 0);
    cr_assert_eq(pact_datagram_sendto(a.ep, buf, len, (struct sockaddr *)&to,
                                      sizeof to), 0);
    cr_assert_eq(a.paused_writing, 1);
    uint64_t end = pact_now() + 3000 * MS;
    while ((b.received < 1 || a.resumed_writing < 1) && pact_now() < end)
        pact_loop_run_once(loop, 2 * (int64_t)MS);
    cr_assert_eq(b.received, 1);
    cr_assert_eq(a.resumed_writing, 1);
    cr_assert_eq(pact_datagram_write_buffer_size(a.ep), 0);
    close_both(loop, &a, &b);
    test_loop_free(loop);
}

/* A queue above the high mark pauses the writer once; it resumes once
 * below the low mark; close sends what is queued before the endpoint
 * ends; abort drops it. */
Test(datagram, flow_control_close_flushes_abort_drops)
{
    pact_loop *loop = test_loop_new();
    dside a, b;
    open_udp(loop, &a, NULL);
    open_udp(loop, &b, NULL);
    struct sockaddr_in to = loopback(local_port(b.ep));
    cr_assert_eq(pact_datagram_set_write_buffer_limits(a.ep, 100, 20), 0);
    uint8_t buf[1500];
    for (uint32_t k = 0; k < 10; k++) {
        size_t len = make_datagram(buf, k);
        cr_assert_eq(pact_datagram_sendto(a.ep, buf, len, (struct sockaddr *)&to,
                                          sizeof to), 0);
    }
    cr_assert_eq(a.paused_writing, 1);
    cr_assert_gt(pact_datagram_write_buffer_size(a.ep), 100);
    uint64_t end = pact_now() + 3000 * MS;
    while (b.received < 10 && pact_now() < end)
        pact_loop_run_once(loop, 2 * (int64_t)MS);
    cr_assert_eq(b.received, 10);
    cr_assert_eq(a.resumed_writing, 1);
    cr_assert_eq(pact_datagram_write_buffer_size(a.ep), 0);

    /* close flushes */
    for (uint32_t k = 10; k < 15; k++) {
        size_t len = make_datagram(buf, k);
        cr_assert_eq(pact_datagram_sendto(a.ep, buf, len, (struct sockaddr *)&to,
                                          sizeof to), 0);
    }
    /* ... and what is sent after it while the queue drains, as asyncio */
    cr_assert_gt(pact_datagram_write_buffer_size(a.ep), 0);
    cr_assert_eq(pact_datagram_close(a.ep), 0);
    size_t len = make_datagram(buf, 15);
    cr_assert_eq(pact_datagram_sendto(a.ep, buf, len, (struct sockaddr *)&to,
                                      sizeof to), 0);
    run_until(loop, &a.lost, 3000);
    end = pact_now() + 3000 * MS;
    while (b.received < 16 && pact_now() < end)
        pact_loop_run_once(loop, 2 * (int64_t)MS);
    cr_assert_eq(b.received, 16, "close sent what was queued");
    cr_assert_eq(b.bad, 0);
    cr_assert_eq(a.lost, 1);
    cr_assert_eq(a.lost_err, 0);

    /* abort drops */
    dside c;
    open_udp(loop, &c, NULL);
    for (uint32_t k = 0; k < 50; k++) {
        size_t len = make_datagram(buf, k);
        cr_assert_eq(pact_datagram_sendto(c.ep, buf, len, (struct sockaddr *)&to,
                                          sizeof to), 0);
    }
    pact_datagram_stats st;
    cr_assert_eq(pact_datagram_abort(c.ep), 0);
    run_until(loop, &c.lost, 3000);
    cr_assert_eq(pact_datagram_get_stats(c.ep, &st), 0);
    cr_assert_eq(st.sent + st.dropped, 50, "each queued datagram once");
    cr_assert_gt(st.dropped, 0);
    cr_assert_eq(c.lost, 1);
    cr_assert_eq(pact_datagram_close(b.ep), 0);
    run_until(loop, &b.lost, 3000);
    test_loop_free(loop);
}

/* A connected endpoint sends with no address and refuses another one;
 * an unconnected one needs an address. */
Test(datagram, connected_and_unconnected_addresses)
{
    pact_loop *loop = test_loop_new();
    dside a, b;
    open_udp(loop, &b, NULL);
    memset(&a, 0, sizeof a);
    pact_datagram *ep = NULL;
    cr_assert_eq(pact_datagram_open_udp(loop, NULL, 0, "127.0.0.1",
                                        local_port(b.ep), NULL, &dproto, &a,
                                        &ep), 0);
    a.ep = ep;
    run_until(loop, &a.made, 3000);
    struct sockaddr_storage ps;
    socklen_t pl = sizeof ps;
    cr_assert_eq(pact_datagram_peername(ep, &ps, &pl), 0);
    cr_assert_eq(ntohs(((struct sockaddr_in *)&ps)->sin_port), local_port(b.ep));
    uint8_t buf[1500];
    size_t len = make_datagram(buf, 0);
    cr_assert_eq(pact_datagram_sendto(ep, buf, len, NULL, 0), 0);
    struct sockaddr_in other = loopback(9);
    cr_assert_eq(pact_datagram_sendto(ep, "x", 1, (struct sockaddr *)&other,
                                      sizeof other), -EISCONN);
    cr_assert_eq(pact_datagram_sendto(b.ep, "x", 1, NULL, 0), -EDESTADDRREQ);
    run_until(loop, &b.received, 3000);
    cr_assert_eq(b.bad, 0);
    /* b answers the connected endpoint at its address. */
    len = make_datagram(buf, 0);
    cr_assert_eq(pact_datagram_sendto(b.ep, buf, len,
                                      (struct sockaddr *)&b.last_from,
                                      b.last_fromlen), 0);
    run_until(loop, &a.received, 3000);
    cr_assert_eq(a.bad, 0);
    close_both(loop, &a, &b);
    test_loop_free(loop);
}

/* Loop close with endpoints open, a receive in flight and datagrams
 * queued: each connection_lost once. */
Test(datagram, loop_close_ends_each_endpoint_once)
{
    pact_loop *loop = test_loop_new();
    dside a, b;
    open_udp(loop, &a, NULL);
    open_udp(loop, &b, NULL);
    struct sockaddr_in to = loopback(local_port(b.ep));
    uint8_t buf[1500];
    for (uint32_t k = 0; k < 30; k++) {
        size_t len = make_datagram(buf, k);
        cr_assert_eq(pact_datagram_sendto(a.ep, buf, len, (struct sockaddr *)&to,
                                          sizeof to), 0);
    }
    test_loop_free(loop);
    cr_assert_eq(a.lost, 1);
    cr_assert_eq(b.lost, 1);
}

/* What Windows has not: Unix datagrams and SO_REUSEPORT. A SOCKET made
 * by the caller is adopted. */
Test(datagram, refusals_and_adopt)
{
    pact_loop *loop = test_loop_new();
    dside d;
    memset(&d, 0, sizeof d);
    pact_datagram *ep = NULL;
    cr_assert_eq(pact_datagram_open_unix(loop, "x", NULL, NULL, &dproto, &d, &ep),
                 -ENOTSUP);
    pact_datagram_options o = PACT_DATAGRAM_OPTIONS_INIT;
    o.reuse_port = 1;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, &o,
                                        &dproto, &d, &ep), -ENOTSUP);
    cr_assert_null(ep);
    test_winsock();
    SOCKET s = WSASocketW(AF_INET, SOCK_DGRAM, IPPROTO_UDP, NULL, 0,
                          WSA_FLAG_OVERLAPPED);
    struct sockaddr_in la = loopback(0);
    cr_assert_eq(bind(s, (struct sockaddr *)&la, sizeof la), 0);
    cr_assert_eq(pact_datagram_adopt(loop, s, NULL, &dproto, &d, &ep), 0);
    run_until(loop, &d.made, 3000);
    cr_assert_eq(pact_datagram_fd(ep), (int)s);
    cr_assert_eq(pact_datagram_set_ttl(ep, 10), 0);
    cr_assert_eq(pact_datagram_set_broadcast(ep, 1), 0);
    cr_assert_eq(pact_datagram_join_group(ep, "239.1.2.3", "eth0"), -ENOTSUP);
    /* A stream socket is not a datagram socket; it is closed all the same. */
    SOCKET t = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    pact_datagram *ep2 = NULL;
    cr_assert_eq(pact_datagram_adopt(loop, t, NULL, &dproto, &d, &ep2),
                 -EPROTOTYPE);
    cr_assert_eq(closesocket(t), SOCKET_ERROR);
    cr_assert_eq(pact_datagram_close(ep), 0);
    run_until(loop, &d.lost, 3000);
    test_loop_free(loop);
}
