/* SPDX-License-Identifier: MIT */
/* Datagrams: the recvfrom/sendto operations and the datagram endpoints
 * (UDP over IPv4 and IPv6, Unix datagram sockets), on both engines.
 *
 * The lesson from asyncio (CPython gh-91227, Tribler#7972): its proactor
 * stopped receiving after one error. Here an error goes to error_received and
 * reception goes on, which several tests check. Every test ends with
 * test_loop_free (no stray completion, no live op) and checks that no fd
 * leaked. */
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "helpers.h"

TestSuite(udp, .timeout = 60);

/* ---- helpers ---------------------------------------------------------------- */

typedef struct rec {
    int calls;
    int64_t result;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int had_addr;
} rec;

static void rec_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    rec *r = user;
    r->calls++;
    r->result = c->result;
    r->had_addr = c->addr != NULL;
    if (c->addr) {
        cr_assert_leq(c->addrlen, sizeof r->addr);
        memcpy(&r->addr, c->addr, c->addrlen);
        r->addrlen = c->addrlen;
    }
}

static void run_until_called(pact_loop *loop, rec *r, unsigned limit_ms)
{
    uint64_t end = pact_now() + limit_ms * MS;
    while (!r->calls) {
        cr_assert(pact_now() < end, "timed out after %u ms", limit_ms);
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    }
}

/* Runs for about ms milliseconds. */
static void run_for(pact_loop *loop, unsigned ms)
{
    uint64_t end = pact_now() + ms * MS;
    while (pact_now() < end)
        cr_assert_geq(pact_loop_run_once(loop, 5 * (int64_t)MS), 0);
}

/* A non-blocking UDP socket bound to host:0. */
static int udp_socket(const char *host, struct sockaddr_storage *ss, socklen_t *len)
{
    cr_assert_eq(pact_sockaddr_parse(host, 0, ss, len), 0);
    int fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)ss, *len), 0, "bind: %s",
                 strerror(errno));
    *len = sizeof *ss;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)ss, len), 0);
    return fd;
}

/* An address on which nothing listens: bound once, then closed. */
static void dead_udp_address(const char *host, struct sockaddr_storage *ss,
                             socklen_t *len)
{
    int fd = udp_socket(host, ss, len);
    close(fd);
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static int ipv6_available(void)
{
    int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* ---- the operations ---------------------------------------------------------- */

Test(udp, op_sendto_recvfrom_reports_the_sender_and_empty_datagrams)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    struct sockaddr_storage aa, ba;
    socklen_t al, bl;
    int a = udp_socket("127.0.0.1", &aa, &al);
    int b = udp_socket("127.0.0.1", &ba, &bl);

    char in[64];
    rec rr = {0}, rs = {0};
    cr_assert_gt(pact_recvfrom(loop, b, in, sizeof in, 0, rec_cb, &rr), 0);
    cr_assert_gt(pact_sendto(loop, a, "hello", 5, 0, (struct sockaddr *)&ba, bl,
                             rec_cb, &rs), 0);
    run_until_called(loop, &rr, 5000);
    run_until_called(loop, &rs, 5000);
    cr_assert_eq(rs.result, 5, "sendto: %s", pact_err_name((int)rs.result));
    cr_assert_eq(rr.result, 5, "recvfrom: %s", pact_err_name((int)rr.result));
    cr_assert_eq(memcmp(in, "hello", 5), 0);
    cr_assert(rr.had_addr);
    cr_assert_eq(rr.addrlen, sizeof(struct sockaddr_in));
    cr_assert_eq(port_of(&rr.addr), port_of(&aa));
    cr_assert_eq(rs.had_addr, 0, "a send reports no address");

    /* An empty datagram: result 0 with the sender's address — not EOF. */
    for (int i = 0; i < 2; i++) {
        memset(&rr, 0, sizeof rr);
        memset(&rs, 0, sizeof rs);
        cr_assert_gt(pact_sendto(loop, a, NULL, 0, 0, (struct sockaddr *)&ba, bl,
                                 rec_cb, &rs), 0);
        cr_assert_gt(pact_recvfrom(loop, b, in, sizeof in, 0, rec_cb, &rr), 0);
        run_until_called(loop, &rs, 5000);
        run_until_called(loop, &rr, 5000);
        cr_assert_eq(rs.result, 0);
        cr_assert_eq(rr.result, 0);
        cr_assert(rr.had_addr, "an empty datagram still names its sender");
        cr_assert_eq(port_of(&rr.addr), port_of(&aa));
    }

    /* Connected: no address needed. */
    cr_assert_eq(connect(a, (struct sockaddr *)&ba, bl), 0);
    memset(&rr, 0, sizeof rr);
    memset(&rs, 0, sizeof rs);
    cr_assert_gt(pact_sendto(loop, a, "xy", 2, 0, NULL, 0, rec_cb, &rs), 0);
    cr_assert_gt(pact_recvfrom(loop, b, in, sizeof in, 0, rec_cb, &rr), 0);
    run_until_called(loop, &rs, 5000);
    run_until_called(loop, &rr, 5000);
    cr_assert_eq(rs.result, 2);
    cr_assert_eq(rr.result, 2);

    /* A datagram longer than the buffer is cut; MSG_TRUNC tells. */
    memset(&rr, 0, sizeof rr);
    memset(&rs, 0, sizeof rs);
    char big[100];
    memset(big, 'z', sizeof big);
    cr_assert_gt(pact_sendto(loop, a, big, sizeof big, 0, NULL, 0, rec_cb, &rs), 0);
    cr_assert_gt(pact_recvfrom(loop, b, in, 10, MSG_TRUNC, rec_cb, &rr), 0);
    run_until_called(loop, &rs, 5000);
    run_until_called(loop, &rr, 5000);
    cr_assert_eq(rr.result, (int64_t)sizeof big);

    test_loop_free(loop);
    close(a);
    close(b);
    cr_assert_eq(count_open_fds(), fds);
}

Test(udp, op_recvfrom_cancel_then_the_next_receive_gets_the_datagram)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    struct sockaddr_storage aa, ba;
    socklen_t al, bl;
    int a = udp_socket("127.0.0.1", &aa, &al);
    int b = udp_socket("127.0.0.1", &ba, &bl);
    char in[64];
    rec rr = {0};
    pact_op op = pact_recvfrom(loop, b, in, sizeof in, 0, rec_cb, &rr);
    cr_assert_gt(op, 0);
    run_for(loop, 20); /* in flight, nothing to receive */
    cr_assert_eq(rr.calls, 0);
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    cr_assert_eq(pact_op_cancel(loop, op), -EALREADY);
    run_until_called(loop, &rr, 5000);
    cr_assert_eq(rr.result, -ECANCELED);
    cr_assert_eq(rr.had_addr, 0);
    cr_assert_eq(pact_op_cancel(loop, op), -ENOENT);

    /* Cancel before submission. */
    memset(&rr, 0, sizeof rr);
    op = pact_recvfrom(loop, b, in, sizeof in, 0, rec_cb, &rr);
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    run_until_called(loop, &rr, 5000);
    cr_assert_eq(rr.result, -ECANCELED);

    /* Nothing was consumed: the next datagram is received whole. */
    cr_assert_eq(sendto(a, "after", 5, 0, (struct sockaddr *)&ba, bl), 5);
    memset(&rr, 0, sizeof rr);
    cr_assert_gt(pact_recvfrom(loop, b, in, sizeof in, 0, rec_cb, &rr), 0);
    run_until_called(loop, &rr, 5000);
    cr_assert_eq(rr.result, 5);
    cr_assert_eq(memcmp(in, "after", 5), 0);

    /* A cancel racing a datagram that is already there: the datagram is
     * delivered (cancel too late) or stays queued (cancel in time). */
    cr_assert_eq(sendto(a, "race", 4, 0, (struct sockaddr *)&ba, bl), 4);
    memset(&rr, 0, sizeof rr);
    op = pact_recvfrom(loop, b, in, sizeof in, 0, rec_cb, &rr);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    pact_op_cancel(loop, op);
    run_until_called(loop, &rr, 5000);
    if (rr.result == -ECANCELED) {
        memset(&rr, 0, sizeof rr);
        cr_assert_gt(pact_recvfrom(loop, b, in, sizeof in, 0, rec_cb, &rr), 0);
        run_until_called(loop, &rr, 5000);
    }
    cr_assert_eq(rr.result, 4, "the datagram was lost: %lld", (long long)rr.result);
    cr_assert_eq(memcmp(in, "race", 4), 0);

    test_loop_free(loop);
    close(a);
    close(b);
    cr_assert_eq(count_open_fds(), fds);
}

Test(udp, op_connected_socket_gets_econnrefused_after_port_unreachable)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    struct sockaddr_storage dead, aa;
    socklen_t dl, al;
    dead_udp_address("127.0.0.1", &dead, &dl);
    int a = udp_socket("127.0.0.1", &aa, &al);
    cr_assert_eq(connect(a, (struct sockaddr *)&dead, dl), 0);
    char in[16];
    rec rr = {0}, rs = {0};
    cr_assert_gt(pact_recvfrom(loop, a, in, sizeof in, 0, rec_cb, &rr), 0);
    cr_assert_gt(pact_sendto(loop, a, "x", 1, 0, NULL, 0, rec_cb, &rs), 0);
    run_until_called(loop, &rs, 5000);
    run_until_called(loop, &rr, 5000);
    cr_assert_eq(rs.result, 1);
    cr_assert_eq(rr.result, -ECONNREFUSED, "recvfrom: %s",
                 pact_err_name((int)rr.result));
    /* The error was consumed: a new receive waits again. */
    memset(&rr, 0, sizeof rr);
    pact_op op = pact_recvfrom(loop, a, in, sizeof in, 0, rec_cb, &rr);
    run_for(loop, 30);
    cr_assert_eq(rr.calls, 0);
    pact_op_cancel(loop, op);
    run_until_called(loop, &rr, 5000);
    cr_assert_eq(rr.result, -ECANCELED);
    test_loop_free(loop);
    close(a);
    cr_assert_eq(count_open_fds(), fds);
}

/* A UDP socket with IP_RECVERR whose ICMP error (port unreachable) is
 * queued on its error queue and whose pending socket error, also set,
 * was taken (SO_ERROR): the queue alone keeps it polling "ready", with
 * nothing to receive. Connected to the dead address if `connected`. */
static int udp_with_only_its_error_queue_ready(int connected)
{
    struct sockaddr_storage aa, dead;
    socklen_t al, dl;
    int a = udp_socket("127.0.0.1", &aa, &al);
    int one = 1;
    cr_assert_eq(setsockopt(a, SOL_IP, IP_RECVERR, &one, sizeof one), 0);
    dead_udp_address("127.0.0.1", &dead, &dl);
    if (connected)
        cr_assert_eq(connect(a, (struct sockaddr *)&dead, dl), 0);
    cr_assert_eq(sendto(a, "x", 1, 0, connected ? NULL : (struct sockaddr *)&dead,
                        connected ? 0 : dl), 1);
    struct pollfd pfd = {.fd = a, .events = 0};
    cr_assert_eq(poll(&pfd, 1, 2000), 1, "the ICMP error arrives");
    int err = 0;
    socklen_t el = sizeof err;
    cr_assert_eq(getsockopt(a, SOL_SOCKET, SO_ERROR, &err, &el), 0);
    cr_assert_eq(err, ECONNREFUSED);
    return a;
}

/* Once the error queue is read, a receive (pact_recv if `recv`, else
 * pact_recvfrom) waits normally again, without the loop spinning. */
static void a_receive_waits_once_the_error_queue_is_read(pact_loop *loop, int a, int recv)
{
    char data[16], control[256];
    struct iovec iov = {data, sizeof data};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                       .msg_controllen = sizeof control};
    cr_assert_geq(recvmsg(a, &m, MSG_ERRQUEUE | MSG_DONTWAIT), 0);
    char in[16];
    rec rr = {0};
    pact_op op = recv ? pact_recv(loop, a, in, sizeof in, 0, rec_cb, &rr)
                      : pact_recvfrom(loop, a, in, sizeof in, 0, rec_cb, &rr);
    cr_assert_gt(op, 0);
    pact_loop_stats st0, st1;
    pact_loop_get_stats(loop, &st0);
    run_for(loop, 50);
    pact_loop_get_stats(loop, &st1);
    cr_assert_eq(rr.calls, 0);
    cr_assert_lt(st1.iterations - st0.iterations, 100, "the loop spun");
    pact_op_cancel(loop, op);
    run_until_called(loop, &rr, 2000);
}

/* IP_RECVERR: an ICMP error is queued on the error queue and also set as
 * the socket's pending error. If something consumes the pending error
 * only, the queue keeps the socket "ready": a receive must then complete
 * with -EAGAIN on both engines (io_uring does so by itself), never spin. */
Test(udp, op_recvfrom_with_an_undrained_error_queue_completes_with_eagain)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    int a = udp_with_only_its_error_queue_ready(0);
    char in[16];
    rec rr = {0};
    cr_assert_gt(pact_recvfrom(loop, a, in, sizeof in, 0, rec_cb, &rr), 0);
    pact_loop_stats st0, st1;
    pact_loop_get_stats(loop, &st0);
    run_until_called(loop, &rr, 2000);
    pact_loop_get_stats(loop, &st1);
    cr_assert_eq(rr.result, -EAGAIN, "%s", pact_err_name((int)rr.result));
    cr_assert_lt(st1.iterations - st0.iterations, 10, "the loop spun");
    a_receive_waits_once_the_error_queue_is_read(loop, a, 0);
    test_loop_free(loop);
    close(a);
    cr_assert_eq(count_open_fds(), fds);
}

/* The same with pact_recv on a connected socket (recv, not recvmsg). The
 * loop must not spin on that readiness: on epoll the receive completes
 * with -EAGAIN, as pact_recvfrom's does; io_uring's kernel receive waits
 * for a datagram without spinning (in an io-wq worker), and a cancel or a
 * deadline ends it with -ECANCELED or -ETIMEDOUT (not the worker's
 * -EINTR). */
Test(udp, op_recv_with_an_undrained_error_queue_does_not_spin)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    int epoll = pact_loop_engine(loop) == PACT_ENGINE_EPOLL;
    int a = udp_with_only_its_error_queue_ready(1);
    char in[16];
    rec rr = {0};
    pact_op op = pact_recv(loop, a, in, sizeof in, 0, rec_cb, &rr);
    cr_assert_gt(op, 0);
    pact_loop_stats st0, st1;
    pact_loop_get_stats(loop, &st0);
    if (epoll) {
        run_until_called(loop, &rr, 2000);
        pact_loop_get_stats(loop, &st1);
        cr_assert_lt(st1.iterations - st0.iterations, 10, "the loop spun");
    } else {
        run_for(loop, 50);
        pact_loop_get_stats(loop, &st1);
        cr_assert_lt(st1.iterations - st0.iterations, 100, "the loop spun");
        cr_assert_eq(rr.calls, 0, "%s", pact_err_name((int)rr.result));
        cr_assert_eq(pact_op_cancel(loop, op), 0);
        run_until_called(loop, &rr, 2000);
    }
    cr_assert_eq(rr.result, epoll ? -EAGAIN : -ECANCELED, "%s",
                 pact_err_name((int)rr.result));
    memset(&rr, 0, sizeof rr);
    op = pact_recv(loop, a, in, sizeof in, 0, rec_cb, &rr);
    cr_assert_gt(op, 0);
    cr_assert_eq(pact_op_set_timeout(loop, op, 20 * MS), 0);
    run_until_called(loop, &rr, 2000);
    cr_assert_eq(rr.result, epoll ? -EAGAIN : -ETIMEDOUT, "%s",
                 pact_err_name((int)rr.result));
    a_receive_waits_once_the_error_queue_is_read(loop, a, 1);
    test_loop_free(loop);
    close(a);
    cr_assert_eq(count_open_fds(), fds);
}

Test(udp, op_unix_datagram_socketpair_unnamed_sender)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    char in[64];
    rec rr = {0}, rs = {0};
    cr_assert_gt(pact_recvfrom(loop, sv[1], in, sizeof in, 0, rec_cb, &rr), 0);
    cr_assert_gt(pact_sendto(loop, sv[0], "unix", 4, 0, NULL, 0, rec_cb, &rs), 0);
    run_until_called(loop, &rr, 5000);
    run_until_called(loop, &rs, 5000);
    cr_assert_eq(rs.result, 4);
    cr_assert_eq(rr.result, 4);
    cr_assert_eq(rr.had_addr, 0, "an unbound sender has no name");
    /* Empty. */
    memset(&rr, 0, sizeof rr);
    memset(&rs, 0, sizeof rs);
    cr_assert_gt(pact_recvfrom(loop, sv[1], in, sizeof in, 0, rec_cb, &rr), 0);
    cr_assert_gt(pact_sendto(loop, sv[0], "", 0, 0, NULL, 0, rec_cb, &rs), 0);
    run_until_called(loop, &rr, 5000);
    run_until_called(loop, &rs, 5000);
    cr_assert_eq(rs.result, 0);
    cr_assert_eq(rr.result, 0);
    /* Bad input. */
    cr_assert_eq(pact_sendto(loop, sv[0], "x", 1, 0, (struct sockaddr *)in, 0,
                             rec_cb, &rs), -EINVAL);
    cr_assert_eq(pact_recvfrom(loop, -1, in, 1, 0, rec_cb, &rr), -EBADF);
    cr_assert_eq(pact_recvfrom(loop, sv[0], NULL, 1, 0, rec_cb, &rr), -EFAULT);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
    cr_assert_eq(count_open_fds(), fds);
}

/* ---- the endpoints -------------------------------------------------------------- */

#define MAX_SEQ 10000

typedef struct ep_rec {
    pact_datagram *ep;
    int made, lost, lost_err, after_lost;
    int received, empty_received;
    int errors, last_err;
    struct sockaddr_storage err_addr;
    socklen_t err_addrlen;
    struct sockaddr_storage last_addr;
    socklen_t last_addrlen;
    char last[256];
    size_t last_len;
    int pauses, resumes;
    int echo;           /* send every datagram back to its sender */
    int pause_after;    /* pause reading after this many (0 = never) */
    /* Echo client: numbered datagrams with a window in flight. */
    int client, total, sent, window, out_of_order;
    int next_expected;
    unsigned char seen[MAX_SEQ];
    int done;
} ep_rec;

static void check_live(ep_rec *r)
{
    cr_assert_eq(r->made, 1, "callback before connection_made");
    if (r->lost)
        r->after_lost++;
}

static void p_made(pact_datagram *ep, void *user)
{
    ep_rec *r = user;
    cr_assert_eq(r->made, 0, "connection_made twice");
    cr_assert_eq(r->lost, 0);
    r->made = 1;
    r->ep = ep;
}

static void client_send_next(ep_rec *r)
{
    while (r->sent < r->total && r->sent - r->received < r->window) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "%08d:payload-for-the-echo", r->sent);
        cr_assert_eq(pact_datagram_sendto(r->ep, buf, (size_t)n, NULL, 0), 0);
        r->sent++;
    }
}

static void p_received(pact_datagram *ep, const void *data, size_t len,
                       const struct sockaddr *addr, socklen_t addrlen, void *user)
{
    ep_rec *r = user;
    check_live(r);
    r->received++;
    if (len == 0)
        r->empty_received++;
    r->last_len = len < sizeof r->last ? len : sizeof r->last;
    memcpy(r->last, data, r->last_len);
    r->last_addrlen = addr ? addrlen : 0;
    if (addr)
        memcpy(&r->last_addr, addr, addrlen);
    if (r->echo)
        cr_assert_eq(pact_datagram_sendto(ep, data, len, addr, addrlen), 0);
    if (r->client) {
        int seq = atoi(r->last);
        cr_assert(seq >= 0 && seq < MAX_SEQ);
        cr_assert_eq(r->seen[seq], 0, "datagram %d twice", seq);
        r->seen[seq] = 1;
        if (seq != r->next_expected)
            r->out_of_order++;
        r->next_expected = seq + 1;
        client_send_next(r);
        if (r->received == r->total)
            r->done = 1;
    }
    if (r->pause_after && r->received == r->pause_after)
        cr_assert_eq(pact_datagram_pause_reading(ep), 0);
}

static void p_error(pact_datagram *ep, int err, const struct sockaddr *addr,
                    socklen_t addrlen, void *user)
{
    (void)ep;
    ep_rec *r = user;
    check_live(r);
    r->errors++;
    r->last_err = err;
    r->err_addrlen = addr ? addrlen : 0;
    if (addr)
        memcpy(&r->err_addr, addr, addrlen);
}

static void p_lost(pact_datagram *ep, int err, void *user)
{
    (void)ep;
    ep_rec *r = user;
    cr_assert_eq(r->made, 1, "connection_lost before connection_made");
    cr_assert_eq(r->lost, 0, "connection_lost twice");
    r->lost = 1;
    r->lost_err = err;
}

static void p_pause(pact_datagram *ep, void *user)
{
    (void)ep;
    ep_rec *r = user;
    check_live(r);
    cr_assert_eq(r->pauses, r->resumes, "pause_writing twice in a row");
    r->pauses++;
}

static void p_resume(pact_datagram *ep, void *user)
{
    (void)ep;
    ep_rec *r = user;
    check_live(r);
    cr_assert_eq(r->pauses, r->resumes + 1, "resume_writing without a pause");
    r->resumes++;
}

static const pact_datagram_protocol proto = {
    .connection_made = p_made,
    .datagram_received = p_received,
    .error_received = p_error,
    .connection_lost = p_lost,
    .pause_writing = p_pause,
    .resume_writing = p_resume,
};

static void close_and_wait(pact_loop *loop, pact_datagram *ep, ep_rec *r)
{
    cr_assert_eq(pact_datagram_close(ep), 0);
    cr_assert_eq(pact_datagram_close(ep), -EALREADY);
    run_until(loop, &r->lost, 5000);
    cr_assert_eq(r->lost_err, 0);
    cr_assert_eq(r->after_lost, 0);
}

static void echo_test(const char *host, int total, int window)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    static ep_rec srv, cli; /* static: seen[] is large */
    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    srv.echo = 1;
    pact_datagram *s = NULL, *c = NULL;
    cr_assert_eq(pact_datagram_open_udp(loop, host, 0, NULL, 0, NULL, &proto,
                                        &srv, &s), 0);
    struct sockaddr_storage sa;
    socklen_t sl;
    cr_assert_eq(pact_datagram_sockname(s, &sa, &sl), 0);
    cr_assert_eq(pact_datagram_peername(s, &sa, &sl), -ENOTCONN);
    cr_assert_eq(pact_datagram_sockname(s, &sa, &sl), 0);
    cli.client = 1;
    cli.total = total;
    cli.window = window;
    cr_assert_eq(pact_datagram_open_udp(loop, NULL, 0, host, port_of(&sa), NULL,
                                        &proto, &cli, &c), 0);
    run_until(loop, &cli.made, 5000);
    uint64_t t0 = pact_now();
    client_send_next(&cli);
    run_until(loop, &cli.done, 50000);
    double secs = (double)(pact_now() - t0) / 1e9;
    cr_log_info("%s echo on %s: %d datagrams in %.3f s (%.0f round trips/s)",
                host, pact_loop_engine_name(loop), total, secs, total / secs);
    cr_assert_eq(cli.received, total);
    cr_assert_eq(srv.received, total);
    for (int i = 0; i < total; i++)
        cr_assert_eq(cli.seen[i], 1, "datagram %d missing", i);
    cr_assert_eq(cli.out_of_order, 0, "loopback reordered datagrams");
    cr_assert_eq(srv.errors, 0);
    cr_assert_eq(cli.errors, 0);
    /* The server saw the client's address. */
    struct sockaddr_storage ca;
    socklen_t cl;
    cr_assert_eq(pact_datagram_sockname(c, &ca, &cl), 0);
    cr_assert_eq(port_of(&srv.last_addr), port_of(&ca));
    close_and_wait(loop, c, &cli);
    close_and_wait(loop, s, &srv);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

Test(udp, echo_of_10000_datagrams_ipv4)
{
    echo_test("127.0.0.1", 10000, 64);
}

Test(udp, echo_ipv6)
{
    if (!ipv6_available())
        cr_skip_test("IPv6 loopback (::1) is not available here");
    echo_test("::1", 2000, 64);
}

Test(udp, empty_datagram_through_the_endpoint)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    ep_rec srv = {.echo = 1}, cli = {0};
    pact_datagram *s, *c;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &proto, &srv, &s), 0);
    struct sockaddr_storage sa;
    socklen_t sl;
    cr_assert_eq(pact_datagram_sockname(s, &sa, &sl), 0);
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &proto, &cli, &c), 0);
    /* Queued before connection_made: allowed, sent in order. */
    cr_assert_eq(pact_datagram_sendto(c, "", 0, (struct sockaddr *)&sa, sl), 0);
    cr_assert_eq(pact_datagram_write_buffer_size(c), 8,
                 "an empty datagram counts its overhead");
    cr_assert_eq(pact_datagram_sendto(c, NULL, 0, (struct sockaddr *)&sa, sl), 0);
    uint64_t end = pact_now() + 5000 * MS;
    while (cli.received < 2) {
        cr_assert(pact_now() < end);
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    }
    cr_assert_eq(srv.empty_received, 2);
    cr_assert_eq(cli.empty_received, 2);
    cr_assert_eq(cli.last_len, 0);
    cr_assert_eq(port_of(&cli.last_addr), port_of(&sa));
    cr_assert_eq(pact_datagram_write_buffer_size(c), 0);
    /* Unconnected without an address; closed endpoint. */
    cr_assert_eq(pact_datagram_sendto(c, "x", 1, NULL, 0), -EDESTADDRREQ);
    /* After close (before connection_lost): dropped and counted. */
    cr_assert_eq(pact_datagram_close(c), 0);
    cr_assert_eq(pact_datagram_sendto(c, "x", 1, (struct sockaddr *)&sa, sl),
                 -ESHUTDOWN);
    pact_datagram_stats st;
    cr_assert_eq(pact_datagram_get_stats(c, &st), 0);
    cr_assert_eq(st.sends_after_close, 1);
    cr_assert_eq(st.sent, 2);
    run_until(loop, &cli.lost, 5000);
    cr_assert_eq(cli.lost_err, 0);
    close_and_wait(loop, s, &srv);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

Test(udp, send_to_a_closed_port_then_reception_goes_on)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    ep_rec ra = {0}, rb = {0};
    pact_datagram *a, *b;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &proto, &ra, &a), 0);
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &proto, &rb, &b), 0);
    struct sockaddr_storage aa, ba, dead;
    socklen_t al, bl, dl;
    cr_assert_eq(pact_datagram_sockname(a, &aa, &al), 0);
    cr_assert_eq(pact_datagram_sockname(b, &ba, &bl), 0);
    dead_udp_address("127.0.0.1", &dead, &dl);
    run_until(loop, &ra.made, 5000);

    for (int round = 0; round < 3; round++) {
        int errors = ra.errors, got_a = ra.received, got_b = rb.received;
        /* To the dead port, then right away to a live one: the second send
         * picks up the ICMP error of the first and is sent again. */
        cr_assert_eq(pact_datagram_sendto(a, "void", 4, (struct sockaddr *)&dead, dl), 0);
        cr_assert_eq(pact_datagram_sendto(a, "live", 4, (struct sockaddr *)&ba, bl), 0);
        uint64_t end = pact_now() + 5000 * MS;
        while (ra.errors == errors || rb.received == got_b) {
            cr_assert(pact_now() < end, "errors %d received %d", ra.errors,
                      rb.received);
            pact_loop_run_once(loop, 10 * (int64_t)MS);
        }
        cr_assert_eq(ra.last_err, -ECONNREFUSED, "%s", pact_err_name(ra.last_err));
        cr_assert_eq(ra.err_addrlen, sizeof(struct sockaddr_in));
        cr_assert_eq(port_of(&ra.err_addr), port_of(&dead),
                     "the error names the dead destination");
        cr_assert_eq(memcmp(rb.last, "live", 4), 0);
        /* Reception goes on after the error. */
        for (int i = 0; i < 5; i++)
            cr_assert_eq(pact_datagram_sendto(b, "back", 4, (struct sockaddr *)&aa, al), 0);
        end = pact_now() + 5000 * MS;
        while (ra.received < got_a + 5) {
            cr_assert(pact_now() < end, "reception stopped after an error");
            pact_loop_run_once(loop, 10 * (int64_t)MS);
        }
        run_for(loop, 20);
        cr_assert_eq(ra.errors, errors + 1, "one ICMP error, one report");
        cr_assert_eq(ra.lost, 0);
    }
    close_and_wait(loop, a, &ra);
    close_and_wait(loop, b, &rb);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

Test(udp, endpoint_drains_an_error_queue_whose_socket_error_was_taken)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    /* Build the state before pact sees the socket, so that no receive in
     * flight can take the pending error first (with the io_uring features
     * masked one does): an ICMP error queued with IP_RECVERR whose pending
     * socket error has already been taken. */
    struct sockaddr_storage aa, dead;
    socklen_t al, dl;
    int fd = udp_socket("127.0.0.1", &aa, &al);
    int on = 1;
    cr_assert_eq(setsockopt(fd, IPPROTO_IP, IP_RECVERR, &on, sizeof on), 0);
    dead_udp_address("127.0.0.1", &dead, &dl);
    cr_assert_eq(sendto(fd, "x", 1, 0, (struct sockaddr *)&dead, dl), 1);
    struct pollfd pfd = {.fd = fd, .events = 0};
    cr_assert_eq(poll(&pfd, 1, 2000), 1, "the ICMP error arrives");
    cr_assert(pfd.revents & POLLERR);
    int err = 0;
    socklen_t el = sizeof err;
    cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el), 0);
    cr_assert_eq(err, ECONNREFUSED);
    ep_rec ra = {0};
    pact_datagram *a;
    cr_assert_eq(pact_datagram_adopt(loop, fd, NULL, &proto, &ra, &a), 0);
    run_until(loop, &ra.made, 5000);
    run_until(loop, &ra.errors, 2000);
    cr_assert_eq(ra.last_err, -ECONNREFUSED);
    cr_assert_eq(port_of(&ra.err_addr), port_of(&dead));
    pact_loop_stats st0, st1;
    pact_loop_get_stats(loop, &st0);
    run_for(loop, 50);
    pact_loop_get_stats(loop, &st1);
    cr_assert_lt(st1.iterations - st0.iterations, 100, "the loop spun");
    cr_assert_eq(ra.errors, 1);
    /* Still receiving. */
    int b = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(sendto(b, "ok", 2, 0, (struct sockaddr *)&aa, al), 2);
    close(b);
    run_until(loop, &ra.received, 2000);
    close_and_wait(loop, a, &ra);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

Test(udp, connected_endpoint_econnrefused_goes_to_error_received)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    /* The peer: a plain socket we close and bind again on the same port. */
    struct sockaddr_storage pa;
    socklen_t pl;
    int peer = udp_socket("127.0.0.1", &pa, &pl);
    ep_rec r = {0};
    pact_datagram *c;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, "127.0.0.1",
                                        port_of(&pa), NULL, &proto, &r, &c), 0);
    struct sockaddr_storage ca;
    socklen_t cl;
    cr_assert_eq(pact_datagram_sockname(c, &ca, &cl), 0);
    run_until(loop, &r.made, 5000);
    /* A different address on a connected endpoint is refused. */
    struct sockaddr_storage other;
    socklen_t ol;
    cr_assert_eq(pact_sockaddr_parse("127.0.0.1", 9, &other, &ol), 0);
    cr_assert_eq(pact_datagram_sendto(c, "x", 1, (struct sockaddr *)&other, ol),
                 -EISCONN);
    /* The peer's own address is fine. */
    cr_assert_eq(pact_datagram_sendto(c, "one", 3, (struct sockaddr *)&pa, pl), 0);
    run_for(loop, 20);
    char buf[16];
    cr_assert_eq(recv(peer, buf, sizeof buf, 0), 3);

    close(peer);
    for (int i = 0; i < 3; i++) {
        int errors = r.errors;
        cr_assert_eq(pact_datagram_sendto(c, "lost", 4, NULL, 0), 0);
        uint64_t end = pact_now() + 5000 * MS;
        while (r.errors == errors) {
            cr_assert(pact_now() < end, "no error_received");
            pact_loop_run_once(loop, 10 * (int64_t)MS);
        }
        cr_assert_eq(r.last_err, -ECONNREFUSED, "%s", pact_err_name(r.last_err));
        cr_assert_eq(r.lost, 0, "an ICMP error is not fatal");
    }
    cr_assert(pact_datagram_is_reading(c));

    /* The peer comes back on the same port: both directions work again. */
    peer = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(bind(peer, (struct sockaddr *)&pa, pl), 0);
    cr_assert_eq(pact_datagram_sendto(c, "again", 5, NULL, 0), 0);
    cr_assert_eq(sendto(peer, "reply", 5, 0, (struct sockaddr *)&ca, cl), 5);
    int got = r.received;
    uint64_t end = pact_now() + 5000 * MS;
    while (r.received == got) {
        cr_assert(pact_now() < end, "reception stopped after errors");
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    }
    cr_assert_eq(memcmp(r.last, "reply", 5), 0);
    run_for(loop, 20);
    ssize_t n = recv(peer, buf, sizeof buf, MSG_DONTWAIT);
    cr_assert_eq(n, 5, "the datagram after the errors was not sent");
    close(peer);
    close_and_wait(loop, c, &r);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

/* ---- flow control ----------------------------------------------------------- */

/* A producer that stops on pause_writing and goes on on resume_writing. */
typedef struct producer {
    ep_rec r;
    int total, sent;
    size_t size;
    int in_resume;
} producer;

static void produce(producer *p)
{
    char buf[4096];
    while (p->sent < p->total && p->r.pauses == p->r.resumes) {
        memset(buf, 'a' + p->sent % 26, p->size);
        snprintf(buf, sizeof buf, "%08d:", p->sent);
        cr_assert_eq(pact_datagram_sendto(p->r.ep, buf, p->size, NULL, 0), 0);
        p->sent++;
    }
}

static void prod_made(pact_datagram *ep, void *user)
{
    p_made(ep, user);
    produce(user);
}

static void prod_resume(pact_datagram *ep, void *user)
{
    p_resume(ep, user);
    produce(user);
}

static const pact_datagram_protocol producer_proto = {
    .connection_made = prod_made,
    .datagram_received = p_received,
    .error_received = p_error,
    .connection_lost = p_lost,
    .pause_writing = p_pause,
    .resume_writing = prod_resume,
};

Test(udp, flow_control_unix_burst_larger_than_the_socket_buffer)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    int small = 8192;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    static producer p;
    static ep_rec rx;
    memset(&p, 0, sizeof p);
    memset(&rx, 0, sizeof rx);
    p.total = 2000;
    p.size = 1000; /* 2 MB through an 8 KiB socket buffer */
    rx.client = 1; /* checks numbering and order, never sends: */
    rx.total = p.total;
    rx.sent = p.total;
    pact_datagram *tx, *rcv;
    cr_assert_eq(pact_datagram_adopt(loop, sv[0], NULL, &producer_proto, &p, &tx), 0);
    cr_assert_eq(pact_datagram_adopt(loop, sv[1], NULL, &proto, &rx, &rcv), 0);
    run_until(loop, &rx.done, 30000);
    cr_assert_eq(rx.received, p.total);
    cr_assert_eq(rx.out_of_order, 0);
    cr_assert_geq(p.r.pauses, 1, "pause_writing never fired");
    /* The last resume runs once the buffer is back under the low mark. */
    run_for(loop, 20);
    cr_assert_eq(p.r.resumes, p.r.pauses);
    cr_assert_eq(pact_datagram_write_buffer_size(tx), 0);
    pact_datagram_stats st;
    cr_assert_eq(pact_datagram_get_stats(tx, &st), 0);
    cr_assert_eq(st.sent, (uint64_t)p.total);
    cr_assert_eq(st.send_errors + st.dropped, 0);
    close_and_wait(loop, tx, &p.r);
    close_and_wait(loop, rcv, &rx);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

/* A Unix datagram socket refuses a datagram with EAGAIN when its peer's
 * receive queue is full (net.unix.max_dgram_qlen, 10 by default) only
 * after copying the datagram out of the sender's iovec. io_uring, waiting
 * for room itself and sending again with the same, consumed, iovec, then
 * sent an empty datagram in its place (Linux 6.18): here one datagram in
 * twelve arrived empty. Every datagram must arrive whole, in order. */
static void full_unix_peer_queue(int movable)
{
    int fds = count_open_fds();
    char dir[] = "/tmp/pact-udp-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/slow-reader.sock", dir);
    int rx = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, path);
    cr_assert_eq(bind(rx, (struct sockaddr *)&sun, sizeof sun), 0);
    pact_loop *loop = test_loop_new();
    if (movable) {
        /* A movable loop's ring has no DEFER_TASKRUN (pact.asyncio's). */
        test_loop_free(loop);
        pact_loop_options o;
        pact_loop_options_init(&o);
        o.debug = 1;
        o.movable = 1;
        cr_assert_eq(pact_loop_create(&loop, &o), 0);
    }
    static ep_rec tx;
    memset(&tx, 0, sizeof tx);
    pact_datagram *ep;
    cr_assert_eq(pact_datagram_open_unix(loop, NULL, path, NULL, &proto, &tx, &ep), 0);
    enum { TOTAL = 200 };
    static char buf[4096];
    for (int i = 0; i < TOTAL; i++) {
        size_t len = 16 + (size_t)(i * 131) % 3000;
        memset(buf, 'a' + i % 26, len);
        snprintf(buf, sizeof buf, "%08d:", i);
        buf[9] = 'a' + i % 26; /* no NUL inside */
        cr_assert_eq(pact_datagram_sendto(ep, buf, len, NULL, 0), 0);
    }
    /* Fill the peer's queue, then read a few at a time, each time after
     * the sender has filled it again. */
    int got = 0;
    uint64_t end = pact_now() + 20000 * MS;
    while (got < TOTAL) {
        cr_assert(pact_now() < end, "only %d of %d datagrams arrived", got, TOTAL);
        uint64_t until = pact_now() + 5 * MS;
        while (pact_now() < until)
            cr_assert_geq(pact_loop_run_once(loop, 1 * (int64_t)MS), 0);
        for (int k = 0; k < 3 && got < TOTAL; k++) {
            ssize_t n = recv(rx, buf, sizeof buf, 0);
            if (n < 0) {
                cr_assert(errno == EAGAIN, "recv: %s", strerror(errno));
                break;
            }
            size_t want = 16 + (size_t)(got * 131) % 3000;
            cr_assert_eq((size_t)n, want, "datagram %d: %zd bytes, not %zu",
                         got, n, want);
            cr_assert_eq(atoi(buf), got, "datagram %d out of order", got);
            for (size_t j = 9; j < want; j++)
                cr_assert_eq(buf[j], 'a' + got % 26, "datagram %d corrupt", got);
            got++;
        }
    }
    cr_assert_eq(tx.errors, 0);
    pact_datagram_stats st;
    cr_assert_eq(pact_datagram_get_stats(ep, &st), 0);
    cr_assert_eq(st.sent, (uint64_t)TOTAL);
    close_and_wait(loop, ep, &tx);
    test_loop_free(loop);
    close(rx);
    unlink(path);
    rmdir(dir);
    cr_assert_eq(count_open_fds(), fds);
}

Test(udp, a_full_unix_peer_queue_delays_datagrams_but_never_empties_them)
{
    full_unix_peer_queue(0);
}

Test(udp, a_full_unix_peer_queue_on_a_movable_loop)
{
    full_unix_peer_queue(1);
}

/* New marks pause a writer past the new high mark (inside the call) and
 * never resume one, as asyncio's set_write_buffer_limits: marks raised
 * above what is queued leave it paused until the sends that drain the
 * queue to the low mark (docs/contract.md, "Where callbacks run"). */
Test(udp, new_marks_pause_but_never_resume)
{
    pact_loop *loop = test_loop_new();
    ep_rec rx = {0}, tx_rec = {0};
    pact_datagram *rcv, *tx;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &proto, &rx, &rcv), 0);
    struct sockaddr_storage ra;
    socklen_t rl;
    cr_assert_eq(pact_datagram_sockname(rcv, &ra, &rl), 0);
    cr_assert_eq(pact_datagram_open_udp(loop, NULL, 0, "127.0.0.1", port_of(&ra),
                                        NULL, &proto, &tx_rec, &tx), 0);
    int small = 4096;
    setsockopt(pact_datagram_fd(tx), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    run_until(loop, &tx_rec.made, 5000);
    static char buf[1200];
    memset(buf, 'u', sizeof buf);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(pact_datagram_sendto(tx, buf, sizeof buf, NULL, 0), 0);
    cr_assert_eq(tx_rec.pauses, 1, "paused past the default high mark");
    cr_assert_eq(pact_datagram_set_write_buffer_limits(tx, 1u << 30, 1u << 29), 0);
    cr_assert_eq(tx_rec.resumes, 0, "new marks resumed it");
    cr_assert_eq(pact_datagram_set_write_buffer_limits(tx, 10, 5), 0);
    cr_assert_eq(tx_rec.pauses, 1, "paused twice");
    cr_assert_eq(pact_datagram_set_write_buffer_limits(tx, 1u << 30, 1u << 29), 0);
    uint64_t end = pact_now() + 10000 * MS;
    while (tx_rec.resumes == 0) {
        cr_assert(pact_now() < end, "never resumed");
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    }
    cr_assert_eq(tx_rec.resumes, 1, "the sends resumed it");
    close_and_wait(loop, tx, &tx_rec);
    close_and_wait(loop, rcv, &rx);
    test_loop_free(loop);
}

/* A high mark of zero (asyncio's high=0, set by
 * pact_datagram_set_write_marks only): a datagram queued pauses (every
 * one is, until its send completes), the send that empties the queue
 * resumes. */
Test(udp, a_zero_high_mark_pauses_while_a_datagram_is_queued)
{
    pact_loop *loop = test_loop_new();
    ep_rec rx = {0}, tx_rec = {0};
    pact_datagram *rcv, *tx;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &proto, &rx, &rcv), 0);
    struct sockaddr_storage ra;
    socklen_t rl;
    cr_assert_eq(pact_datagram_sockname(rcv, &ra, &rl), 0);
    cr_assert_eq(pact_datagram_open_udp(loop, NULL, 0, "127.0.0.1", port_of(&ra),
                                        NULL, &proto, &tx_rec, &tx), 0);
    run_until(loop, &tx_rec.made, 5000);
    size_t high, low;
    cr_assert_eq(pact_datagram_set_write_buffer_limits(tx, 0, 0), 0);
    pact_datagram_get_write_buffer_limits(tx, &high, &low);
    cr_assert_eq(high, 64 * 1024, "set_write_buffer_limits: 0 is the default");
    cr_assert_eq(pact_datagram_set_write_marks(tx, 0, 1), -EINVAL);
    cr_assert_eq(pact_datagram_set_write_marks(NULL, 0, 0), -EINVAL);
    cr_assert_eq(pact_datagram_set_write_marks(tx, 0, 0), 0);
    pact_datagram_get_write_buffer_limits(tx, &high, &low);
    cr_assert_eq(high, 0);
    cr_assert_eq(low, 0);
    cr_assert_eq(tx_rec.pauses, 0, "nothing queued");
    for (int round = 1; round <= 2; round++) {
        cr_assert_eq(pact_datagram_sendto(tx, "z", 1, NULL, 0), 0);
        cr_assert_gt(pact_datagram_write_buffer_size(tx), 0);
        cr_assert_eq(tx_rec.pauses, round, "a datagram queued pauses");
        cr_assert_eq(pact_datagram_sendto(tx, "zz", 2, NULL, 0), 0);
        cr_assert_eq(tx_rec.pauses, round, "paused twice");
        uint64_t end = pact_now() + 10000 * MS;
        while (tx_rec.resumes < round) {
            cr_assert(pact_now() < end, "never resumed");
            pact_loop_run_once(loop, 10 * (int64_t)MS);
        }
        cr_assert_eq(pact_datagram_write_buffer_size(tx), 0, "resumed once empty");
    }
    uint64_t end = pact_now() + 5000 * MS;
    while (rx.received < 4) {
        cr_assert(pact_now() < end, "%d datagrams of 4 arrived", rx.received);
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    }
    close_and_wait(loop, tx, &tx_rec);
    close_and_wait(loop, rcv, &rx);
    test_loop_free(loop);
}

Test(udp, flow_control_udp_burst_every_datagram_sent_or_reported)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    ep_rec rx = {0}, tx_rec = {0};
    pact_datagram *rcv, *tx;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &proto, &rx, &rcv), 0);
    struct sockaddr_storage ra;
    socklen_t rl;
    cr_assert_eq(pact_datagram_sockname(rcv, &ra, &rl), 0);
    cr_assert_eq(pact_datagram_open_udp(loop, NULL, 0, "127.0.0.1", port_of(&ra),
                                        NULL, &proto, &tx_rec, &tx), 0);
    int small = 4096;
    setsockopt(pact_datagram_fd(tx), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    run_until(loop, &tx_rec.made, 5000);
    /* A burst queued at once, well over the high mark and the socket
     * buffer; one datagram too long for UDP in the middle. */
    static char buf[70000];
    memset(buf, 'u', sizeof buf);
    const int total = 400;
    for (int i = 0; i < total; i++)
        cr_assert_eq(pact_datagram_sendto(tx, buf, i == 200 ? sizeof buf : 1200,
                                          NULL, 0), 0);
    cr_assert_eq(tx_rec.pauses, 1, "pause_writing fires once over the mark");
    cr_assert_gt(pact_datagram_write_buffer_size(tx), 64 * 1024);
    uint64_t end = pact_now() + 10000 * MS;
    while (pact_datagram_write_buffer_size(tx) > 0) {
        cr_assert(pact_now() < end, "the burst never drained");
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    }
    cr_assert_eq(tx_rec.resumes, 1);
    pact_datagram_stats st;
    cr_assert_eq(pact_datagram_get_stats(tx, &st), 0);
    cr_assert_eq(st.sent + st.send_errors, (uint64_t)total,
                 "sent %llu, errors %llu", (unsigned long long)st.sent,
                 (unsigned long long)st.send_errors);
    cr_assert_eq(st.send_errors, 1);
    cr_assert_eq(tx_rec.errors, 1);
    cr_assert_eq(tx_rec.last_err, -EMSGSIZE, "%s", pact_err_name(tx_rec.last_err));
    run_for(loop, 50);
    /* Loopback may drop what overflows the receiver; most arrive. */
    cr_assert_gt(rx.received, 0);
    cr_assert_leq(rx.received, total - 1);
    cr_log_info("udp burst on %s: %d of %d datagrams arrived",
                pact_loop_engine_name(loop), rx.received, total - 1);
    close_and_wait(loop, tx, &tx_rec);
    close_and_wait(loop, rcv, &rx);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

/* ---- Unix datagram endpoints ------------------------------------------------ */

Test(udp, unix_endpoints_with_paths_echo_and_clean_up)
{
    int fds = count_open_fds();
    char dir[] = "/tmp/pact-udp-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char spath[128], cpath[128];
    snprintf(spath, sizeof spath, "%s/server.sock", dir);
    snprintf(cpath, sizeof cpath, "%s/client.sock", dir);
    /* A stale socket file at the server's path is replaced. */
    {
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        strcpy(sun.sun_path, spath);
        cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
        close(fd);
    }
    pact_loop *loop = test_loop_new();
    static ep_rec srv, cli;
    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    srv.echo = 1;
    cli.client = 1;
    cli.total = 1000;
    cli.window = 32;
    pact_datagram *s, *c, *dup;
    cr_assert_eq(pact_datagram_open_unix(loop, spath, NULL, NULL, &proto, &srv, &s), 0);
    /* A live one is not. */
    ep_rec dr = {0};
    cr_assert_eq(pact_datagram_open_unix(loop, spath, NULL, NULL, &proto, &dr, &dup),
                 -EADDRINUSE);
    cr_assert_eq(pact_datagram_open_unix(loop, cpath, spath, NULL, &proto, &cli, &c), 0);
    run_until(loop, &cli.made, 5000);
    client_send_next(&cli);
    run_until(loop, &cli.done, 20000);
    cr_assert_eq(cli.out_of_order, 0);
    cr_assert_eq(srv.received, 1000);
    /* The server saw the client's path. */
    struct sockaddr_un *from = (struct sockaddr_un *)&srv.last_addr;
    cr_assert_eq(from->sun_family, AF_UNIX);
    cr_assert_str_eq(from->sun_path, cpath);
    /* Empty datagram. */
    cli.client = 0;
    int got = cli.received;
    cr_assert_eq(pact_datagram_sendto(c, "", 0, NULL, 0), 0);
    uint64_t end = pact_now() + 5000 * MS;
    while (cli.received == got) {
        cr_assert(pact_now() < end);
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    }
    cr_assert_eq(cli.last_len, 0);
    cr_assert_eq(srv.empty_received, 1);
    close_and_wait(loop, c, &cli);
    close_and_wait(loop, s, &srv);
    struct stat st;
    cr_assert_eq(stat(spath, &st), -1, "the server's socket file was left");
    cr_assert_eq(stat(cpath, &st), -1, "the client's socket file was left");
    test_loop_free(loop);
    cr_assert_eq(rmdir(dir), 0);
    cr_assert_eq(count_open_fds(), fds);
}

Test(udp, unix_abstract_unnamed_sender_and_a_peer_that_goes_away)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    char name[64];
    snprintf(name, sizeof name, "@pact-udp-test-%d", (int)getpid());
    ep_rec srv = {0}, cli = {0};
    pact_datagram *s, *c;
    cr_assert_eq(pact_datagram_open_unix(loop, name, NULL, NULL, &proto, &srv, &s), 0);
    cr_assert_eq(pact_datagram_open_unix(loop, NULL, name, NULL, &proto, &cli, &c), 0);
    cr_assert_eq(pact_datagram_sendto(c, "anon", 4, NULL, 0), 0);
    run_until(loop, &srv.received, 5000);
    cr_assert_eq(srv.last_addrlen, 0, "an unnamed sender has no address");
    /* The server goes away: sending fails, reported, not fatal. */
    close_and_wait(loop, s, &srv);
    cr_assert_eq(pact_datagram_sendto(c, "gone", 4, NULL, 0), 0);
    run_until(loop, &cli.errors, 5000);
    cr_assert(cli.last_err == -ECONNREFUSED || cli.last_err == -ECONNRESET,
              "%s", pact_err_name(cli.last_err));
    cr_assert_eq(cli.lost, 0);
    /* An unconnected, unnamed endpoint sending to a missing path. */
    ep_rec u = {0};
    pact_datagram *ue;
    cr_assert_eq(pact_datagram_open_unix(loop, NULL, NULL, NULL, &proto, &u, &ue), 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, "/nonexistent/pact.sock");
    cr_assert_eq(pact_datagram_sendto(ue, "x", 1, (struct sockaddr *)&sun, sizeof sun), 0);
    run_until(loop, &u.errors, 5000);
    cr_assert_eq(u.last_err, -ENOENT, "%s", pact_err_name(u.last_err));
    cr_assert_str_eq(((struct sockaddr_un *)&u.err_addr)->sun_path, sun.sun_path);
    close_and_wait(loop, ue, &u);
    close_and_wait(loop, c, &cli);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

/* ---- pause, close, abort, loop close ---------------------------------------- */

Test(udp, pause_reading_holds_datagrams_and_resume_delivers_them_in_order)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    static ep_rec rx;
    memset(&rx, 0, sizeof rx);
    rx.client = 1;
    rx.total = rx.sent = 10;
    rx.pause_after = 3;
    ep_rec tx = {0};
    pact_datagram *t, *r;
    cr_assert_eq(pact_datagram_adopt(loop, sv[0], NULL, &proto, &tx, &t), 0);
    cr_assert_eq(pact_datagram_adopt(loop, sv[1], NULL, &proto, &rx, &r), 0);
    for (int i = 0; i < 10; i++) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%08d:", i);
        cr_assert_eq(pact_datagram_sendto(t, buf, (size_t)n, NULL, 0), 0);
    }
    run_for(loop, 50);
    cr_assert_eq(rx.received, 3);
    cr_assert_eq(pact_datagram_is_reading(r), 0);
    cr_assert_eq(pact_datagram_pause_reading(r), -EALREADY);
    cr_assert_eq(pact_datagram_resume_reading(r), 0);
    cr_assert_eq(pact_datagram_resume_reading(r), -EALREADY);
    run_until(loop, &rx.done, 5000);
    cr_assert_eq(rx.received, 10);
    cr_assert_eq(rx.out_of_order, 0);
    close_and_wait(loop, t, &tx);
    close_and_wait(loop, r, &rx);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

Test(udp, close_sends_what_is_queued_then_connection_lost)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    static ep_rec rx;
    memset(&rx, 0, sizeof rx);
    rx.client = 1;
    rx.total = rx.sent = 300;
    ep_rec tx = {0};
    pact_datagram *t, *r;
    cr_assert_eq(pact_datagram_adopt(loop, sv[0], NULL, &proto, &tx, &t), 0);
    cr_assert_eq(pact_datagram_adopt(loop, sv[1], NULL, &proto, &rx, &r), 0);
    static char buf[2000];
    for (int i = 0; i < 300; i++) {
        snprintf(buf, sizeof buf, "%08d:", i);
        cr_assert_eq(pact_datagram_sendto(t, buf, sizeof buf, NULL, 0), 0);
    }
    /* Before connection_made, even: close still flushes. */
    cr_assert_eq(pact_datagram_close(t), 0);
    cr_assert(pact_datagram_is_closing(t));
    run_until(loop, &tx.lost, 10000);
    cr_assert_eq(tx.made, 1, "connection_made still runs first");
    cr_assert_eq(tx.lost_err, 0);
    run_until(loop, &rx.done, 5000);
    cr_assert_eq(rx.received, 300);
    close_and_wait(loop, r, &rx);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

/* A datagram sent after close while the queue still drains is queued behind
 * it and sent before connection_lost, as asyncio's datagram transport
 * does; once the queue is empty the close is under way and a send is
 * refused (-ESHUTDOWN, counted). */
Test(udp, a_datagram_sent_after_close_while_the_queue_drains_is_sent)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    static ep_rec rx;
    memset(&rx, 0, sizeof rx);
    rx.client = 1;
    rx.total = rx.sent = 302;
    ep_rec tx = {0};
    pact_datagram *t, *r;
    cr_assert_eq(pact_datagram_adopt(loop, sv[0], NULL, &proto, &tx, &t), 0);
    run_until(loop, &tx.made, 5000);
    static char buf[2000];
    for (int i = 0; i < 300; i++) {
        snprintf(buf, sizeof buf, "%08d:", i);
        cr_assert_eq(pact_datagram_sendto(t, buf, sizeof buf, NULL, 0), 0);
    }
    pact_loop_run_once(loop, 0); /* the receiver is not reading yet */
    cr_assert_gt(pact_datagram_write_buffer_size(t), 0);
    cr_assert_eq(pact_datagram_close(t), 0);
    snprintf(buf, sizeof buf, "%08d:", 300);
    cr_assert_eq(pact_datagram_sendto(t, buf, sizeof buf, NULL, 0), 0);
    pact_loop_run_once(loop, 0);
    snprintf(buf, sizeof buf, "%08d:", 301);
    cr_assert_eq(pact_datagram_sendto(t, buf, sizeof buf, NULL, 0), 0);
    pact_datagram_stats st;
    cr_assert_eq(pact_datagram_get_stats(t, &st), 0);
    cr_assert_eq(st.sends_after_close, 0);
    cr_assert_eq(pact_datagram_adopt(loop, sv[1], NULL, &proto, &rx, &r), 0);
    run_until(loop, &tx.lost, 10000);
    cr_assert_eq(tx.lost_err, 0);
    run_until(loop, &rx.done, 5000);
    cr_assert_eq(rx.received, 302);
    cr_assert_eq(rx.out_of_order, 0);
    close_and_wait(loop, r, &rx);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

/* A reply sent from datagram_received goes to the kernel when the run
 * that delivered the request returns (pact_loop_run_once, no
 * PACT_RUN_AGAIN): a caller that runs the loop no more still gets it to
 * the peer. Before, its send waited in the loop's queue of ops to start
 * for the next run. */
typedef struct {
    int requests;
} replier;

static void reply_received(pact_datagram *ep, const void *data, size_t len,
                           const struct sockaddr *addr, socklen_t addrlen,
                           void *user)
{
    (void)addr;
    (void)addrlen;
    replier *r = user;
    r->requests++;
    cr_assert_eq(pact_datagram_sendto(ep, data, len, NULL, 0), 0);
}

static const pact_datagram_protocol reply_proto = {
    .datagram_received = reply_received,
};

Test(udp, a_reply_from_datagram_received_goes_out_when_the_run_returns)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    replier rep = {0};
    pact_datagram *ep;
    cr_assert_eq(pact_datagram_adopt(loop, sv[0], NULL, &reply_proto, &rep, &ep), 0);
    for (int i = 0; i < 3; i++) {
        char req[16], got[16];
        int n = snprintf(req, sizeof req, "request %d", i);
        cr_assert_eq(send(sv[1], req, (size_t)n, 0), n);
        for (int turns = 0; rep.requests == i; turns++) {
            cr_assert_lt(turns, 100, "request %d was not delivered", i);
            cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
        }
        /* The loop does not run until the reply is here. */
        struct pollfd p = {.fd = sv[1], .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 2000), 1, "reply %d waits for a run that "
                                           "does not come", i);
        cr_assert_eq(recv(sv[1], got, sizeof got, 0), n);
        cr_assert_eq(memcmp(got, req, (size_t)n), 0);
    }
    cr_assert_eq(pact_datagram_close(ep), 0);
    pact_loop_run(loop);
    close(sv[1]);
    test_loop_free(loop);
}

Test(udp, abort_drops_the_queue_and_loop_close_closes_endpoints)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    ep_rec tx = {0}, rx = {0}, idle = {0};
    pact_datagram *t, *r, *i;
    cr_assert_eq(pact_datagram_adopt(loop, sv[0], NULL, &proto, &tx, &t), 0);
    cr_assert_eq(pact_datagram_adopt(loop, sv[1], NULL, &proto, &rx, &r), 0);
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &proto, &idle, &i), 0);
    run_until(loop, &tx.made, 5000);
    static char buf[2000];
    for (int k = 0; k < 300; k++)
        cr_assert_eq(pact_datagram_sendto(t, buf, sizeof buf, NULL, 0), 0);
    pact_loop_run_once(loop, 0); /* some are in flight */
    cr_assert_eq(pact_datagram_abort(t), 0);
    cr_assert_eq(pact_datagram_abort(t), -EALREADY);
    cr_assert_eq(pact_datagram_close(t), -EALREADY);
    pact_datagram_stats st;
    run_until(loop, &tx.lost, 5000);
    cr_assert_eq(tx.lost_err, 0);
    cr_assert_eq(tx.after_lost, 0);
    (void)st;
    /* The receiver and the idle endpoint are left open: the loop closes
     * them, each with connection_lost exactly once. */
    test_loop_free(loop);
    cr_assert_eq(rx.lost, 1);
    cr_assert_eq(idle.lost, 1);
    cr_assert_eq(rx.after_lost + idle.after_lost, 0);
    cr_assert_leq(rx.received, 300);
    cr_assert_eq(count_open_fds(), fds);
}

static void close_in_made(pact_datagram *ep, void *user)
{
    p_made(ep, user);
    cr_assert_eq(pact_datagram_close(ep), 0);
}

static void abort_in_received(pact_datagram *ep, const void *data, size_t len,
                              const struct sockaddr *addr, socklen_t addrlen,
                              void *user)
{
    p_received(ep, data, len, addr, addrlen, user);
    cr_assert_eq(pact_datagram_abort(ep), 0);
}

Test(udp, close_or_abort_from_inside_callbacks)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    pact_datagram_protocol p1 = proto, p2 = proto;
    p1.connection_made = close_in_made;
    p2.datagram_received = abort_in_received;
    ep_rec a = {0}, b = {0};
    pact_datagram *ea, *eb;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &p1, &a, &ea), 0);
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &p2, &b, &eb), 0);
    struct sockaddr_storage ba;
    socklen_t bl;
    cr_assert_eq(pact_datagram_sockname(eb, &ba, &bl), 0);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    for (int k = 0; k < 5; k++)
        cr_assert_eq(sendto(fd, "k", 1, 0, (struct sockaddr *)&ba, bl), 1);
    close(fd);
    run_until(loop, &a.lost, 5000);
    run_until(loop, &b.lost, 5000);
    cr_assert_eq(a.received, 0);
    cr_assert_eq(b.received, 1, "nothing after abort");
    cr_assert_eq(a.after_lost + b.after_lost, 0);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

/* connection_made and the final close share the endpoint's one ready
 * node: a close before connection_made ran, and a loop closed with
 * connection_made still queued, each give connection_made first, then
 * connection_lost once, and leave nothing behind. */
Test(udp, a_close_before_connection_made_or_a_loop_close_still_runs_it_first)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    ep_rec a = {0}, b = {0}, c = {0};
    pact_datagram *ea, *eb, *ec;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &proto, &a, &ea), 0);
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &proto, &b, &eb), 0);
    cr_assert_eq(pact_datagram_close(ea), 0);
    cr_assert_eq(pact_datagram_abort(eb), 0);
    cr_assert_eq(a.made + b.made, 0, "made from inside close");
    run_until(loop, &a.lost, 5000);
    run_until(loop, &b.lost, 5000);
    cr_assert_eq(a.made + b.made, 2);
    /* Now a loop closed with connection_made still queued. */
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &proto, &c, &ec), 0);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(c.made, 1);
    cr_assert_eq(c.lost, 1);
    cr_assert_eq(a.after_lost + b.after_lost + c.after_lost, 0);
    pact_loop_free(loop);
    cr_assert_eq(a.lost + b.lost + c.lost, 3);
    cr_assert_eq(count_open_fds(), fds);
}

/* ---- closed endpoints leave nothing behind ---------------------------------- */

/* Opens n endpoints (UDP on loopback, or Unix socket pairs), lets each
 * start receiving, closes them all and runs until every one is lost. */
static void open_and_close_endpoints(pact_loop *loop, int n, int unix_pairs)
{
    ep_rec *recs = calloc((size_t)n, sizeof *recs);
    pact_datagram **eps = calloc((size_t)n, sizeof *eps);
    for (int k = 0; k < n; k += unix_pairs ? 2 : 1) {
        if (unix_pairs) {
            int sv[2];
            cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
            cr_assert_eq(pact_datagram_adopt(loop, sv[0], NULL, &proto, &recs[k],
                                             &eps[k]), 0);
            cr_assert_eq(pact_datagram_adopt(loop, sv[1], NULL, &proto,
                                             &recs[k + 1], &eps[k + 1]), 0);
        } else {
            cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0,
                                                NULL, &proto, &recs[k], &eps[k]),
                         0);
        }
    }
    for (int k = 0; k < n; k++)
        run_until(loop, &recs[k].made, 5000);
    pact_loop_run_once(loop, 0); /* the receives are in flight */
    for (int k = 0; k < n; k++)
        cr_assert_eq(pact_datagram_close(eps[k]), 0);
    for (int k = 0; k < n; k++) {
        run_until(loop, &recs[k].lost, 5000);
        cr_assert_eq(recs[k].lost_err, 0);
        cr_assert_eq(recs[k].after_lost, 0);
    }
    free(recs);
    free(eps);
}

/* Each closed endpoint used to keep its struct and its receive buffer
 * (64 KiB for UDP, 256 KiB for Unix): the teardown took a reference that
 * nothing dropped. The heap in use must come back to where it was; the
 * slack covers the loop's own pools settling and the allocator's count
 * (HEAP_COUNT_NOISE), far below the 32 MB that 500 kept buffers are. */
static void expect_endpoints_freed(int unix_pairs)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    open_and_close_endpoints(loop, 20, unix_pairs); /* warm up the pools */
    size_t before = heap_bytes_in_use();
    for (int round = 0; round < 10; round++)
        open_and_close_endpoints(loop, 50, unix_pairs);
    size_t after = heap_bytes_in_use();
    cr_expect_leq(after, before + 16 * 1024 + HEAP_COUNT_NOISE,
                  "500 closed endpoints kept %zu bytes of heap (%zu -> %zu)",
                  after - before, before, after);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

Test(udp, closed_udp_endpoints_free_their_memory)
{
    expect_endpoints_freed(0);
}

Test(udp, closed_unix_endpoints_free_their_memory)
{
    expect_endpoints_freed(1);
}

/* ---- options and bad input ------------------------------------------------- */

Test(udp, socket_options_and_bad_input)
{
    int fds = count_open_fds();
    pact_loop *loop = test_loop_new();
    ep_rec r = {0};
    pact_datagram *ep;
    pact_datagram_options o = {.size = sizeof o, .allow_broadcast = 1,
                               .reuse_port = 1};
    cr_assert_eq(pact_datagram_open_udp(loop, "0.0.0.0", 0, NULL, 0, &o, &proto,
                                        &r, &ep), 0);
    int fd = pact_datagram_fd(ep), v = 0;
    socklen_t vl = sizeof v;
    cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_BROADCAST, &v, &vl), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(pact_datagram_set_broadcast(ep, 0), 0);
    cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_BROADCAST, &v, &vl), 0);
    cr_assert_eq(v, 0);
    cr_assert_eq(pact_datagram_set_ttl(ep, 7), 0);
    cr_assert_eq(getsockopt(fd, IPPROTO_IP, IP_TTL, &v, &vl), 0);
    cr_assert_eq(v, 7);
    cr_assert_eq(pact_datagram_set_ttl(ep, 0), -EINVAL);
    cr_assert_eq(pact_datagram_set_multicast_ttl(ep, 3), 0);
    cr_assert_eq(pact_datagram_set_multicast_loop(ep, 1), 0);
    int j = pact_datagram_join_group(ep, "239.255.0.1", "lo");
    if (j == 0)
        cr_assert_eq(pact_datagram_leave_group(ep, "239.255.0.1", "lo"), 0);
    else
        cr_log_warn("multicast join on lo: %s", pact_err_name(j));
    cr_assert_eq(pact_datagram_join_group(ep, "239.255.0.1", "no-such-if0"), -ENODEV);
    cr_assert_eq(pact_datagram_join_group(ep, "not-an-address", NULL), -EINVAL);
    size_t hi, lo;
    pact_datagram_get_write_buffer_limits(ep, &hi, &lo);
    cr_assert_eq(hi, 64 * 1024);
    cr_assert_eq(lo, 16 * 1024);
    cr_assert_eq(pact_datagram_set_write_buffer_limits(ep, 10, 20), -EINVAL);
    cr_assert_eq(pact_datagram_set_write_buffer_limits(ep, 0, 0), 0);
    pact_datagram_get_write_buffer_limits(ep, &hi, &lo);
    cr_assert_eq(hi, 64 * 1024);
    cr_assert_eq(pact_datagram_user(ep), &r);
    cr_assert_eq(pact_datagram_loop(ep), loop);

    /* Bad input gets errors, never a crash. */
    pact_datagram *x = NULL;
    cr_assert_eq(pact_datagram_open_udp(loop, NULL, 0, NULL, 0, NULL, &proto, &r, &x), -EINVAL);
    cr_assert_eq(pact_datagram_open_udp(loop, "nonsense", 0, NULL, 0, NULL, &proto, &r, &x), -EINVAL);
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL, NULL, &r, &x), -EINVAL);
    cr_assert_eq(pact_datagram_open(loop, NULL, 0, NULL, 0, NULL, &proto, &r, &x), -EINVAL);
    struct sockaddr_storage a4, a6;
    socklen_t l4, l6;
    cr_assert_eq(pact_sockaddr_parse("127.0.0.1", 0, &a4, &l4), 0);
    cr_assert_eq(pact_sockaddr_parse("::1", 1, &a6, &l6), 0);
    cr_assert_eq(pact_datagram_open(loop, (struct sockaddr *)&a4, l4,
                                    (struct sockaddr *)&a6, l6, NULL, &proto, &r, &x),
                 -EINVAL);
    int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(pact_datagram_adopt(loop, tcp, NULL, &proto, &r, &x), -EPROTOTYPE);
    cr_assert_eq(pact_datagram_adopt(loop, -1, NULL, &proto, &r, &x), -EBADF);
    cr_assert_eq(pact_datagram_sendto(ep, NULL, 5, (struct sockaddr *)&a4, l4), -EINVAL);
    cr_assert_eq(pact_datagram_sendto(ep, "x", 1, (struct sockaddr *)&a4, 1), -EINVAL);
    cr_assert_null(x);
    /* A datagram the kernel refuses for its address is reported; the
     * endpoint goes on. */
    run_until(loop, &r.made, 5000);
    cr_assert_eq(pact_datagram_sendto(ep, "x", 1, (struct sockaddr *)&a6, l6), 0);
    run_until(loop, &r.errors, 5000);
    cr_assert(r.last_err == -EAFNOSUPPORT || r.last_err == -EINVAL, "%s",
              pact_err_name(r.last_err));
    cr_assert_eq(r.lost, 0);
    cr_assert(pact_datagram_is_reading(ep));
    close_and_wait(loop, ep, &r);

    /* A Unix endpoint has no IP options. */
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    close(sv[1]);
    ep_rec u = {0};
    cr_assert_eq(pact_datagram_adopt(loop, sv[0], NULL, &proto, &u, &ep), 0);
    cr_assert_eq(pact_datagram_set_ttl(ep, 5), -ENOPROTOOPT);
    close_and_wait(loop, ep, &u);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}
