/* SPDX-License-Identifier: MIT */
/* Servers: many clients, closing while clients connect, resets before
 * accept, running out of descriptors, dual stack, Unix and abstract
 * sockets, wait_closed, and SO_REUSEPORT across loops in several threads. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "alloc_counter.h"
#include "recorder.h"

TestSuite(server, .timeout = 60);

/* ---- a server whose connections echo, each with a recorder ---------------- */

#define MAX_CONNS 512

typedef struct srv_ctx {
    rec recs[MAX_CONNS];
    int n; /* factory calls = connections handed to a protocol */
    int seq;
} srv_ctx;

static int echo_factory(pact_server *s, void *fu, const pact_protocol **proto,
                        void **user)
{
    (void)s;
    srv_ctx *c = fu;
    if (c->n >= MAX_CONNS)
        return -ENOMEM;
    rec *r = &c->recs[c->n++];
    rec_init(r);
    r->echo = 1;
    r->seq = &c->seq;
    *proto = &rec_protocol;
    *user = r;
    return 0;
}

static int srv_made(const srv_ctx *c)
{
    int n = 0;
    for (int i = 0; i < c->n; i++)
        n += c->recs[i].made;
    return n;
}

static int srv_lost(const srv_ctx *c)
{
    int n = 0;
    for (int i = 0; i < c->n; i++)
        n += c->recs[i].lost;
    return n;
}

static size_t srv_bytes(const srv_ctx *c)
{
    size_t n = 0;
    for (int i = 0; i < c->n; i++)
        n += c->recs[i].nbytes;
    return n;
}

static void srv_expect_all_done(const srv_ctx *c)
{
    for (int i = 0; i < c->n; i++) {
        cr_expect_eq(c->recs[i].bad, 0, "server conn %d: %s", i, c->recs[i].why);
        cr_expect_eq(c->recs[i].made, 1, "server conn %d: made %d", i,
                     c->recs[i].made);
        cr_expect_eq(c->recs[i].lost, 1, "server conn %d: lost %d", i,
                     c->recs[i].lost);
    }
}

static int waited;
static int waited_seq;
static int *waited_seq_src;
static void on_wait_closed(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    waited++;
    if (waited_seq_src)
        waited_seq = ++*waited_seq_src;
}

/* Closes the server and runs until its wait_closed callback has run. */
static void close_server_and_wait(pact_loop *loop, pact_server *s)
{
    waited = 0;
    cr_assert_eq(pact_server_close(s), 0);
    cr_assert_eq(pact_server_wait_closed(s, on_wait_closed, NULL), 0);
    RUN_UNTIL(loop, waited, 5000);
    cr_assert_eq(waited, 1);
}

/* ---- clients made with pact_connect_tcp / pact_connect_unix ---------------- */

typedef struct client {
    rec r; /* first: the protocol's user pointer is the client */
    int cb_calls;
    int err;
    int made_before_cb;
    pact_transport *delivered;
    size_t msglen;
    char msg[1024];
    char reason[192]; /* pact_connect_error_message() in the callback */
} client;

static void client_made(pact_transport *t, void *user)
{
    client *c = user;
    rec_made(t, user);
    if (c->cb_calls == 0)
        c->made_before_cb = 1;
    cr_expect_eq(pact_transport_write(t, c->msg, c->msglen), 0);
}

static const pact_protocol client_protocol = {
    .connection_made = client_made,
    .data_received = rec_data,
    .eof_received = rec_eof,
    .connection_lost = rec_lost,
};

static void on_connect(pact_loop *loop, pact_transport *t, int err, void *user)
{
    client *c = user;
    c->cb_calls++;
    c->err = err;
    c->delivered = t;
    const char *why = pact_connect_error_message(loop);
    snprintf(c->reason, sizeof c->reason, "%s", why ? why : "");
    if (err == 0)
        cr_expect(t != NULL, "connected without a transport");
    else
        cr_expect(t == NULL, "failed with a transport");
    if (c->r.made)
        c->made_before_cb = 1;
}

static void client_init(client *c, int id, size_t len)
{
    memset(c, 0, sizeof *c);
    rec_init(&c->r);
    c->r.keep_data = 1;
    c->r.close_after = len; /* close once the echo is back */
    c->msglen = len;
    for (size_t i = 0; i < len; i++)
        c->msg[i] = (char)('a' + (id * 7 + i) % 26);
}

static void client_expect_echoed(client *c, int id)
{
    cr_expect_eq(c->cb_calls, 1, "client %d: connect cb ran %d times", id,
                 c->cb_calls);
    cr_expect_eq(c->err, 0, "client %d: %s", id, pact_strerror(c->err));
    cr_expect_eq(c->made_before_cb, 0,
                 "client %d: connection_made before the transport was delivered",
                 id);
    rec_expect_done(&c->r);
    cr_expect_eq(c->r.nbytes, c->msglen, "client %d: %zu bytes echoed", id,
                 c->r.nbytes);
    if (c->r.nbytes == c->msglen)
        cr_expect(memcmp(c->r.data, c->msg, c->msglen) == 0,
                  "client %d: echo differs", id);
    cr_expect_eq(c->r.lost_err, 0);
}

/* Writes msg on a raw fd and runs the loop until the echo is back. */
static void raw_echo(pact_loop *loop, int fd, const char *msg)
{
    size_t len = strlen(msg), got = 0;
    char buf[256];
    cr_assert_eq(send(fd, msg, len, MSG_NOSIGNAL), (ssize_t)len);
    RUN_UNTIL(loop, try_read(fd, buf, len, &got), 5000);
    cr_assert(memcmp(buf, msg, len) == 0);
}

/* ---- many clients ------------------------------------------------------------ */

#define NCLIENTS 200

static int clients_lost(const client *cl, int n)
{
    int lost = 0;
    for (int i = 0; i < n; i++)
        lost += cl[i].r.lost;
    return lost;
}

Test(server, two_hundred_concurrent_clients_echo)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    srv_ctx *sc = calloc(1, sizeof *sc);
    pact_server *s;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, echo_factory,
                                        sc, &s), 0);
    int port = pact_server_port(s);
    cr_assert_gt(port, 0);

    client *cl = calloc(NCLIENTS, sizeof *cl);
    for (int i = 0; i < NCLIENTS; i++) {
        client_init(&cl[i], i, 100 + (size_t)i * 4);
        pact_op op = pact_connect_tcp(loop, "127.0.0.1", (uint16_t)port,
                                      &client_protocol, &cl[i], on_connect,
                                      &cl[i]);
        cr_assert_gt(op, 0, "connect %d: %s", i, pact_strerror((int)op));
    }
    RUN_UNTIL(loop, clients_lost(cl, NCLIENTS) == NCLIENTS, 20000);
    /* The server side sees each client's EOF and closes too. */
    RUN_UNTIL(loop, srv_lost(sc) == NCLIENTS, 10000);
    cr_expect_eq(sc->n, NCLIENTS);
    cr_expect_eq(pact_server_connections(s), 0);
    for (int i = 0; i < NCLIENTS; i++)
        client_expect_echoed(&cl[i], i);
    srv_expect_all_done(sc);
    for (int i = 0; i < sc->n; i++)
        cr_expect_eq(sc->recs[i].eofs, 1);
    close_server_and_wait(loop, s);
    test_loop_free(loop);
    for (int i = 0; i < NCLIENTS; i++)
        rec_free(&cl[i].r);
    free(cl);
    free(sc);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* ---- closing while clients connect ------------------------------------------ */

#define HELD 16

typedef struct hammer {
    int port;
    atomic_int stop;
    atomic_int connected;
    atomic_int refused;
    int held[HELD];
    int nheld;
} hammer;

/* Connects over and over from a plain thread; keeps the first few
 * connections open, closes the others at once. */
static void *hammer_thread(void *arg)
{
    hammer *h = arg;
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)h->port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    while (!atomic_load(&h->stop)) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            break;
        if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0) {
            atomic_fetch_add(&h->connected, 1);
            if (h->nheld < HELD) {
                h->held[h->nheld++] = fd;
                continue;
            }
        } else if (errno == ECONNREFUSED) {
            atomic_fetch_add(&h->refused, 1);
            usleep(1000);
        }
        close(fd);
    }
    return NULL;
}

/* A TCP socket listening on a loopback port the system chose, made
 * without pact (what pact_server_adopt serves). */
static int plain_tcp_listener(int backlog)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(listen(fd, backlog), 0);
    return fd;
}

/* Closes the TCP server s (serving sc) while a thread connects to it over
 * and over, so that accepts race the close: a connection is handed to a
 * protocol only before the close, each exactly once, the ones made go on
 * serving, wait_closed runs once after the last of them, and no fd is
 * left (fds0: the count before the loop was made). Frees the loop. */
static void close_while_clients_connect_case(pact_loop *loop, pact_server *s,
                                             srv_ctx *sc, int fds0)
{
    hammer *h = calloc(1, sizeof *h);
    h->port = pact_server_port(s);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, hammer_thread, h), 0);

    RUN_UNTIL(loop, srv_made(sc) >= 40, 10000);
    cr_assert_eq(pact_server_close(s), 0);
    cr_assert_eq(pact_server_close(s), -EALREADY);
    waited = 0;
    cr_assert_eq(pact_server_wait_closed(s, on_wait_closed, NULL), 0);
    int handed_at_close = sc->n;

    /* The listener stops accepting once its accept is back: new clients
     * are refused rather than left in a backlog nobody serves. */
    RUN_UNTIL(loop, atomic_load(&h->refused) > 0, 5000);
    run_for(loop, 100);
    cr_expect_eq(sc->n, handed_at_close,
                 "%d connection(s) handed to a protocol after close",
                 sc->n - handed_at_close);
    atomic_store(&h->stop, 1);
    pthread_join(th, NULL);

    /* Connections made before the close go on serving. */
    cr_assert_geq(h->nheld, 1);
    size_t before = srv_bytes(sc);
    raw_echo(loop, h->held[0], "ping");
    cr_expect_eq(srv_bytes(sc), before + 4);
    cr_expect_eq(waited, 0, "wait_closed ran with connections open");

    for (int i = 0; i < h->nheld; i++)
        close(h->held[i]);
    RUN_UNTIL(loop, waited, 5000);
    cr_expect_eq(sc->n, handed_at_close);
    cr_expect_eq(srv_made(sc), sc->n, "every accepted connection was made");
    srv_expect_all_done(sc);
    test_loop_free(loop);
    cr_expect_eq(waited, 1);
    free(h);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(server, close_while_clients_connect)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    srv_ctx *sc = calloc(1, sizeof *sc);
    pact_server *s;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, echo_factory,
                                        sc, &s), 0);
    close_while_clients_connect_case(loop, s, sc, fds0);
    free(sc);
}

/* The same race on a listener made elsewhere: the adopted socket is the
 * server's, closed with it. */
Test(server, close_an_adopted_server_while_clients_connect)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int lfd = plain_tcp_listener(64);
    srv_ctx *sc = calloc(1, sizeof *sc);
    pact_server *s;
    cr_assert_eq(pact_server_adopt(loop, lfd, NULL, echo_factory, sc, &s), 0);
    close_while_clients_connect_case(loop, s, sc, fds0);
    free(sc);
}

/* ---- a reset before accept ---------------------------------------------------- */

Test(server, reset_before_accept_does_not_stop_the_server)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    srv_ctx *sc = calloc(1, sizeof *sc);
    pact_server *s;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, echo_factory,
                                        sc, &s), 0);
    int port = pact_server_port(s);
    /* The loop has not run: the connection waits in the backlog, then is
     * reset before anyone accepts it. */
    for (int i = 0; i < 3; i++) {
        int c1 = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        cr_assert_eq(setsockopt(c1, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
        close(c1);
    }
    int c2 = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
    raw_echo(loop, c2, "after the reset");
    close(c2);
    RUN_UNTIL(loop, pact_server_connections(s) == 0, 5000);
    srv_expect_all_done(sc);
    close_server_and_wait(loop, s);
    test_loop_free(loop);
    free(sc);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* Connections that arrive together are all taken in one iteration (a
 * multishot accept: epoll, io_uring since 5.19), not one per iteration:
 * one accept at a time cost an io_uring_enter per connection, and the
 * churn benchmark served 2.5 times fewer short connections per second
 * on io_uring than on epoll. */
Test(server, a_burst_of_connections_is_accepted_in_one_iteration)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    srv_ctx *sc = calloc(1, sizeof *sc);
    pact_server *s;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, echo_factory,
                                        sc, &s), 0);
    int port = pact_server_port(s);
    pact_loop_run_once(loop, 0); /* the accept is with the kernel */
    enum { BURST = 32 };
    int c[BURST];
    for (int i = 0; i < BURST; i++)
        c[i] = tcp_connect_blocking(AF_INET, "127.0.0.1", port); /* in the backlog */
    int iterations = 0;
    while (sc->n < BURST && iterations < 50) {
        pact_loop_run_once(loop, 100 * (int64_t)MS);
        iterations++;
    }
    cr_assert_eq(sc->n, BURST, "%d of %d accepted", sc->n, BURST);
    /* io_uring without multishot (masked, or before 5.19; its receive is
     * in poll mode then too) accepts one per iteration. */
    if (strcmp(pact_loop_recv_multishot_mode(loop), "poll") != 0)
        cr_assert_leq(iterations, 2, "%d iterations for %d connections",
                      iterations, BURST);
    for (int i = 0; i < BURST; i++)
        raw_echo(loop, c[i], "each is served");
    for (int i = 0; i < BURST; i++)
        close(c[i]);
    RUN_UNTIL(loop, pact_server_connections(s) == 0, 5000);
    srv_expect_all_done(sc);
    cr_assert_eq(pact_server_accept_errors(s), 0);
    close_server_and_wait(loop, s);
    test_loop_free(loop);
    free(sc);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* ---- EMFILE, then recovery ---------------------------------------------------- */

static int max_open_fd(void)
{
    int max = -1;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.' && atoi(e->d_name) > max)
            max = atoi(e->d_name);
    if (d)
        closedir(d);
    return max;
}

Test(server, emfile_backs_off_and_recovers)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    srv_ctx *sc = calloc(1, sizeof *sc);
    pact_server *s;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, echo_factory,
                                        sc, &s), 0);
    int port = pact_server_port(s);
    /* The accept is submitted only after the squeeze: io_uring reads the
     * fd limit when it prepares an accept, not when it runs it. */

    /* The client sockets exist before the squeeze and connect after it:
     * the server's accept must then fail with EMFILE. */
    int c[3];
    for (int i = 0; i < 3; i++)
        c[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* Then hold every free descriptor below the new limit. */
    int spare[4];
    for (int i = 0; i < 4; i++)
        spare[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct rlimit old, low;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)max_open_fd() + 1;
    /* Fill any hole below the limit too. */
    int fillers[64], nfill = 0;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    int f;
    while (nfill < 64 && (f = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        fillers[nfill++] = f;
    cr_assert_eq(errno, EMFILE);
    struct sockaddr_storage ss;
    socklen_t sslen;
    pact_sockaddr_parse("127.0.0.1", (uint16_t)port, &ss, &sslen);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(connect(c[i], (struct sockaddr *)&ss, sslen), 0);

    run_for(loop, 350);
    uint64_t errors = pact_server_accept_errors(s);
    cr_expect_gt(errors, 0, "accept never failed with EMFILE");
    cr_expect_eq(sc->n, 0, "accepted %d with no descriptor free? (limit %d, errors %d)", sc->n, (int)low.rlim_cur, (int)errors);

    /* Free descriptors: the server picks the clients up again. */
    for (int i = 0; i < 4; i++)
        close(spare[i]);
    RUN_UNTIL(loop, srv_made(sc) == 3, 5000);
    for (int i = 0; i < nfill; i++)
        close(fillers[i]);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);

    for (int i = 0; i < 3; i++) {
        raw_echo(loop, c[i], "still serving");
        close(c[i]);
    }
    RUN_UNTIL(loop, pact_server_connections(s) == 0, 5000);
    cr_expect_geq(pact_server_accept_errors(s), errors);
    srv_expect_all_done(sc);
    close_server_and_wait(loop, s);
    test_loop_free(loop);
    free(sc);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* ---- dual stack ---------------------------------------------------------------- */

static int ipv6_loopback_works(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int ok = bind(fd, (struct sockaddr *)&sin6, sizeof sin6) == 0;
    close(fd);
    return ok;
}

/* An IPv6-only server on a port whose IPv4 side this test holds: a TCP
 * socket bound to 0.0.0.0 at that port, not listening (a connection to it
 * is refused as to no socket at all) and without SO_REUSEADDR, so no other
 * process can listen on IPv4 there. Unheld, the IPv4 side of an IPv6-only
 * port is free to anyone: a program that had picked "a free port" bound
 * 127.0.0.1 at it once, and the test's IPv4 connect reached that program
 * instead of being refused. A port whose IPv4 side is in use already is
 * given back and another taken. A server that listened on IPv4 too would
 * hold every port it got on both sides, and the bind would never succeed. */
static pact_server *listen_ipv6_only_holding_ipv4(pact_loop *loop, srv_ctx *sc,
                                                  int *port, int *ipv4_side)
{
    pact_server_options o = {.size = sizeof o, .ipv6_only = 1};
    for (int attempt = 0; attempt < 50; attempt++) {
        pact_server *s;
        cr_assert_eq(pact_server_listen_tcp(loop, "::", 0, &o, echo_factory, sc, &s), 0);
        *port = pact_server_port(s);
        *ipv4_side = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(*ipv4_side, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)*port),
                                  .sin_addr.s_addr = htonl(INADDR_ANY)};
        if (bind(*ipv4_side, (struct sockaddr *)&sin, sizeof sin) == 0)
            return s;
        int err = errno;
        close(*ipv4_side);
        cr_assert_eq(err, EADDRINUSE, "bind 0.0.0.0:%d: %s", *port, strerror(err));
        close_server_and_wait(loop, s);
    }
    cr_assert_fail("50 IPv6-only ports, each with its IPv4 side in use: "
                   "does the server listen on IPv4 too?");
    return NULL;
}

Test(server, dual_stack_accepts_ipv4_and_ipv6)
{
    if (!ipv6_loopback_works())
        cr_skip("IPv6 is not available on this machine (no ::1)");
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    srv_ctx *sc = calloc(1, sizeof *sc);
    pact_server *s;
    /* A dual-stack socket holds its port on IPv4 and IPv6: no other
     * process can listen on either side of it. */
    pact_server_options o = {.size = sizeof o, .ipv6_only = 0};
    cr_assert_eq(pact_server_listen_tcp(loop, "::", 0, &o, echo_factory, sc, &s), 0);
    int port = pact_server_port(s);

    client cl[2];
    const char *hosts[2] = {"127.0.0.1", "::1"};
    for (int i = 0; i < 2; i++) {
        client_init(&cl[i], i, 64);
        cl[i].r.close_after = 0; /* close below, after checking addresses */
        cr_assert_gt(pact_connect_tcp(loop, hosts[i], (uint16_t)port,
                                      &client_protocol, &cl[i], on_connect,
                                      &cl[i]), 0);
    }
    RUN_UNTIL(loop, cl[0].r.nbytes == 64 && cl[1].r.nbytes == 64, 5000);
    cr_assert_eq(sc->n, 2);
    int families[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        cr_assert_eq(pact_transport_sockname(cl[i].r.t, &ss, &len), 0);
        families[i] = ss.ss_family;
        pact_transport_close(cl[i].r.t);
    }
    cr_expect_eq(families[0], AF_INET);
    cr_expect_eq(families[1], AF_INET6);
    RUN_UNTIL(loop, cl[0].r.lost && cl[1].r.lost && srv_lost(sc) == 2, 5000);
    for (int i = 0; i < 2; i++) {
        cl[i].r.close_after = cl[i].msglen;
        client_expect_echoed(&cl[i], i);
        rec_free(&cl[i].r);
    }
    srv_expect_all_done(sc);

    /* ipv6_only = 1 refuses IPv4. */
    close_server_and_wait(loop, s);
    int ipv4_side;
    s = listen_ipv6_only_holding_ipv4(loop, sc, &port, &ipv4_side);
    client_init(&cl[0], 0, 8);
    cr_assert_gt(pact_connect_tcp(loop, "127.0.0.1", (uint16_t)port,
                                  &client_protocol, &cl[0], on_connect, &cl[0]), 0);
    RUN_UNTIL(loop, cl[0].cb_calls, 5000);
    cr_expect_eq(cl[0].err, -ECONNREFUSED);
    close(ipv4_side);
    close_server_and_wait(loop, s);
    test_loop_free(loop);
    free(sc);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* ---- Unix sockets ----------------------------------------------------------------- */

static void unix_echo_once(pact_loop *loop, const char *path)
{
    client c;
    client_init(&c, 3, 200);
    cr_assert_gt(pact_connect_unix(loop, path, &client_protocol, &c, on_connect, &c), 0);
    RUN_UNTIL(loop, c.r.lost, 5000);
    client_expect_echoed(&c, 0);
    rec_free(&c.r);
}

Test(server, unix_path_replaces_a_stale_file_and_refuses_a_live_one)
{
    int fds0 = count_open_fds();
    char dir[] = "/tmp/pact-srv-XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[108];
    snprintf(path, sizeof path, "%s/sock", dir);

    /* A server that died without cleaning up left its socket file. */
    int dead = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    cr_assert_eq(bind(dead, (struct sockaddr *)&sun, sizeof sun), 0);
    cr_assert_eq(listen(dead, 4), 0);
    close(dead);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);

    pact_loop *loop = test_loop_new();
    srv_ctx *sc = calloc(1, sizeof *sc);
    pact_server *s, *s2 = NULL;
    cr_assert_eq(pact_server_listen_unix(loop, path, NULL, echo_factory, sc, &s), 0,
                 "a stale socket file is replaced");
    int fds1 = count_open_fds();
    cr_expect_eq(pact_server_listen_unix(loop, path, NULL, echo_factory, sc, &s2),
                 -EADDRINUSE, "a live server's file is left alone");
    cr_expect_eq(count_open_fds(), fds1, "the refused listen leaked an fd");
    cr_assert_eq(stat(path, &st), 0, "the live server's file was removed");

    unix_echo_once(loop, path);
    unix_echo_once(loop, path);
    /* The refused listen probed the live server with a connect, which it
     * served as a connection of its own: wait for all of them. */
    RUN_UNTIL(loop, pact_server_connections(s) == 0, 5000);
    srv_expect_all_done(sc);
    close_server_and_wait(loop, s);
    cr_expect_neq(stat(path, &st), 0, "the socket file outlived the server");
    test_loop_free(loop);
    free(sc);
    rmdir(dir);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(server, unix_abstract_namespace)
{
    int fds0 = count_open_fds();
    char name[64];
    snprintf(name, sizeof name, "@pact-test-%d-%llu", (int)getpid(),
             (unsigned long long)pact_now());
    pact_loop *loop = test_loop_new();
    srv_ctx *sc = calloc(1, sizeof *sc);
    pact_server *s, *s2 = NULL;
    cr_assert_eq(pact_server_listen_unix(loop, name, NULL, echo_factory, sc, &s), 0);
    cr_expect_eq(pact_server_listen_unix(loop, name, NULL, echo_factory, sc, &s2),
                 -EADDRINUSE);
    unix_echo_once(loop, name);
    RUN_UNTIL(loop, srv_lost(sc) == 1, 5000);
    srv_expect_all_done(sc);
    close_server_and_wait(loop, s);
    /* The name is free again once the server is gone. */
    cr_assert_eq(pact_server_listen_unix(loop, name, NULL, echo_factory, sc, &s), 0);
    close_server_and_wait(loop, s);
    test_loop_free(loop);
    free(sc);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* ---- wait_closed ------------------------------------------------------------------ */

static int waited2;
static void on_wait_closed2(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    waited2++;
}

Test(server, wait_closed_runs_once_after_the_last_connection)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    srv_ctx *sc = calloc(1, sizeof *sc);
    pact_server *s;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, echo_factory,
                                        sc, &s), 0);
    int port = pact_server_port(s);
    int c1 = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
    int c2 = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
    RUN_UNTIL(loop, srv_made(sc) == 2, 5000);

    waited = waited2 = 0;
    waited_seq_src = &sc->seq;
    cr_assert_eq(pact_server_wait_closed(s, on_wait_closed, NULL), 0);
    cr_assert_eq(pact_server_close(s), 0);
    cr_assert_eq(pact_server_wait_closed(s, on_wait_closed2, NULL), 0);
    run_for(loop, 50);
    cr_expect_eq(waited + waited2, 0, "ran with connections open");
    cr_expect_eq(pact_server_connections(s), 2);
    raw_echo(loop, c1, "open");

    close(c1);
    RUN_UNTIL(loop, srv_lost(sc) == 1, 5000);
    run_for(loop, 20);
    cr_expect_eq(waited + waited2, 0, "ran with a connection open");
    close(c2);
    RUN_UNTIL(loop, waited && waited2, 5000);
    run_for(loop, 20);
    cr_expect_eq(waited, 1);
    cr_expect_eq(waited2, 1);
    srv_expect_all_done(sc);
    for (int i = 0; i < sc->n; i++)
        cr_expect_lt(sc->recs[i].lost_seq, waited_seq,
                     "wait_closed ran before connection %d was lost", i);
    waited_seq_src = NULL;

    /* A server without connections: once, right after close. */
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, echo_factory,
                                        sc, &s), 0);
    close_server_and_wait(loop, s);
    run_for(loop, 20);
    cr_expect_eq(waited, 1);
    test_loop_free(loop);
    free(sc);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* ---- close from inside the factory -------------------------------------------------- */

/* "Serve one connection, then stop": the factory closes its own server and
 * still returns a protocol. The connection must be served to its end, and
 * the server freed (wait_closed) only once the connection is gone — the
 * transport points back at its server until then (ASan saw a
 * heap-use-after-free in connection_gone when the server was freed first). */
typedef struct one_shot {
    srv_ctx sc;
    int factory_calls;
    int close_result;
    int wait_result;
} one_shot;

static int one_shot_factory(pact_server *s, void *fu, const pact_protocol **proto,
                            void **user)
{
    one_shot *o = fu;
    o->factory_calls++;
    o->close_result = pact_server_close(s);
    o->wait_result = pact_server_wait_closed(s, on_wait_closed, NULL);
    return echo_factory(s, &o->sc, proto, user);
}

static void serve_one_then_stop(pact_loop *loop, pact_server *s, one_shot *o,
                                int client)
{
    waited = 0;
    waited_seq_src = &o->sc.seq;
    RUN_UNTIL(loop, srv_made(&o->sc) == 1, 5000);
    cr_expect_eq(o->factory_calls, 1);
    cr_expect_eq(o->close_result, 0);
    cr_expect_eq(o->wait_result, 0);
    run_for(loop, 30);
    cr_expect_eq(waited, 0, "the server was freed with its connection open");
    cr_expect_eq(pact_server_connections(s), 1);
    raw_echo(loop, client, "served after close");
    raw_echo(loop, client, "and again");
    cr_expect_eq(waited, 0, "the server was freed with its connection open");
    close(client);
    RUN_UNTIL(loop, waited, 5000);
    run_for(loop, 20);
    cr_expect_eq(waited, 1);
    srv_expect_all_done(&o->sc);
    cr_expect_eq(o->sc.recs[0].nbytes, strlen("served after close") +
                                          strlen("and again"));
    cr_expect_lt(o->sc.recs[0].lost_seq, waited_seq,
                 "wait_closed ran before the connection was lost");
    waited_seq_src = NULL;
}

Test(server, close_from_the_factory_serves_the_connection_then_frees_tcp)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    one_shot *o = calloc(1, sizeof *o);
    pact_server *s;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL,
                                        one_shot_factory, o, &s), 0);
    int client = tcp_connect_blocking(AF_INET, "127.0.0.1", pact_server_port(s));
    serve_one_then_stop(loop, s, o, client);
    test_loop_free(loop);
    free(o);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(server, close_from_the_factory_serves_the_connection_then_frees_unix)
{
    int fds0 = count_open_fds();
    char dir[] = "/tmp/pact-srv-XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[108];
    snprintf(path, sizeof path, "%s/sock", dir);
    pact_loop *loop = test_loop_new();
    one_shot *o = calloc(1, sizeof *o);
    pact_server *s;
    cr_assert_eq(pact_server_listen_unix(loop, path, NULL, one_shot_factory, o,
                                         &s), 0);
    int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    cr_assert_eq(connect(client, (struct sockaddr *)&sun, sizeof sun), 0);
    serve_one_then_stop(loop, s, o, client);
    struct stat st;
    cr_expect_neq(stat(path, &st), 0, "the socket file outlived the server");
    test_loop_free(loop);
    free(o);
    rmdir(dir);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* ---- SO_REUSEPORT: one listener per loop, one loop per thread ---------------------- */

typedef struct worker {
    pthread_t th;
    int port; /* in: 0 = pick; out: the port */
    atomic_int ready;
    atomic_int quit;
    pact_loop *loop;
    srv_ctx *sc;
    int err;
    int bad;     /* order violations or leftover ops/strays */
    int made, lost;
    char why[160];
} worker;

static int wait_closed_flag;
static void worker_wait_closed(pact_loop *loop, void *user)
{
    (void)loop;
    *(int *)user = 1;
}

/* No Criterion assertions in here: they belong to the main thread. */
static void *worker_main(void *arg)
{
    worker *w = arg;
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.debug = 1;
    w->err = pact_loop_create(&w->loop, &o);
    if (w->err) {
        atomic_store(&w->ready, -1);
        return NULL;
    }
    pact_server *s;
    pact_server_options so = {.size = sizeof so, .reuse_port = 1};
    w->err = pact_server_listen_tcp(w->loop, "127.0.0.1", (uint16_t)w->port, &so,
                                    echo_factory, w->sc, &s);
    if (w->err) {
        pact_loop_free(w->loop);
        atomic_store(&w->ready, -1);
        return NULL;
    }
    w->port = pact_server_port(s);
    atomic_store(&w->ready, 1);
    while (!atomic_load(&w->quit))
        pact_loop_run_once(w->loop, 10 * (int64_t)MS);
    int closed = 0;
    pact_server_close(s);
    pact_server_wait_closed(s, worker_wait_closed, &closed);
    uint64_t end = pact_now() + 5000 * MS;
    while (!closed && pact_now() < end)
        pact_loop_run_once(w->loop, 10 * (int64_t)MS);
    if (!closed)
        snprintf(w->why, sizeof w->why, "server never closed");
    for (int i = 0; i < w->sc->n; i++) {
        rec *r = &w->sc->recs[i];
        w->made += r->made;
        w->lost += r->lost;
        if (r->bad && !w->why[0])
            snprintf(w->why, sizeof w->why, "conn %d: %s", i, r->why);
        w->bad += r->bad;
    }
    pact_loop_stats st;
    pact_loop_close(w->loop);
    pact_loop_get_stats(w->loop, &st);
    if (st.ops_live || st.stray_completions) {
        w->bad++;
        snprintf(w->why, sizeof w->why, "ops live %llu, strays %llu",
                 (unsigned long long)st.ops_live,
                 (unsigned long long)st.stray_completions);
    }
    pact_loop_free(w->loop);
    return NULL;
}

#define REUSE_CLIENTS 64

Test(server, reuse_port_spreads_clients_over_loops_in_threads)
{
    int fds0 = count_open_fds();
    worker w[2];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 2; i++) {
        w[i].sc = calloc(1, sizeof *w[i].sc);
        if (i == 1)
            w[1].port = w[0].port;
        cr_assert_eq(pthread_create(&w[i].th, NULL, worker_main, &w[i]), 0);
        while (atomic_load(&w[i].ready) == 0)
            usleep(1000);
        cr_assert_eq(atomic_load(&w[i].ready), 1, "listen on loop %d: %s", i,
                     pact_strerror(w[i].err));
    }
    cr_assert_eq(w[0].port, w[1].port);

    int c[REUSE_CLIENTS];
    for (int i = 0; i < REUSE_CLIENTS; i++)
        c[i] = tcp_connect_blocking(AF_INET, "127.0.0.1", w[0].port);
    for (int i = 0; i < REUSE_CLIENTS; i++) {
        char msg[32], buf[32];
        int n = snprintf(msg, sizeof msg, "client %d", i);
        cr_assert_eq(send(c[i], msg, (size_t)n, MSG_NOSIGNAL), n);
        struct timeval tv = {.tv_sec = 5};
        setsockopt(c[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        size_t got = 0;
        while (got < (size_t)n) {
            ssize_t k = recv(c[i], buf + got, (size_t)n - got, 0);
            cr_assert_gt(k, 0, "client %d: no echo", i);
            got += (size_t)k;
        }
        cr_assert(memcmp(buf, msg, (size_t)n) == 0);
        close(c[i]);
    }
    /* Let each loop see the EOFs before stopping it. */
    uint64_t end = pact_now() + 5000 * MS;
    while (pact_now() < end) {
        int lost = 0;
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < w[k].sc->n; i++)
                lost += w[k].sc->recs[i].lost; /* racy read: only a hint */
        if (lost == REUSE_CLIENTS)
            break;
        usleep(2000);
    }
    for (int i = 0; i < 2; i++) {
        atomic_store(&w[i].quit, 1);
        pthread_join(w[i].th, NULL);
    }
    (void)wait_closed_flag;
    cr_expect_eq(w[0].made + w[1].made, REUSE_CLIENTS);
    cr_expect_eq(w[0].lost + w[1].lost, REUSE_CLIENTS);
    cr_expect_gt(w[0].made, 0, "loop 0 got no client");
    cr_expect_gt(w[1].made, 0, "loop 1 got no client");
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(w[i].bad, 0, "loop %d: %s", i, w[i].why);
        cr_expect_eq(w[i].why[0], 0, "loop %d: %s", i, w[i].why);
        free(w[i].sc);
    }
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* ---- TCP_NODELAY and the reason a connect failed -------------------------- */

static int nodelay(const pact_transport *t)
{
    int v = -1;
    socklen_t len = sizeof v;
    cr_assert_eq(getsockopt(pact_transport_fd(t), IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    return v;
}

Test(server, accepted_and_connected_tcp_transports_have_nodelay)
{
    pact_loop *loop = test_loop_new();
    srv_ctx sc = {0};
    pact_server *srv;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, echo_factory,
                                        &sc, &srv), 0);
    /* The listening socket pact made has it too: the accepted sockets
     * inherit it from there (an adopted listener is left as it is, and
     * each accepted one is given it: adopt_a_listening_tcp_socket...). */
    int v = -1;
    socklen_t len = sizeof v;
    cr_assert_eq(getsockopt(pact_server_fd(srv), IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    cr_assert_eq(v, 1);
    client c;
    client_init(&c, 0, 16);
    c.r.close_after = 0;
    cr_assert_gt(pact_connect_tcp(loop, "127.0.0.1", (uint16_t)pact_server_port(srv),
                                  &client_protocol, &c, on_connect, &c), 0);
    RUN_UNTIL(loop, c.r.nbytes == c.msglen && sc.n == 1 && sc.recs[0].made, 5000);
    cr_assert_eq(nodelay(sc.recs[0].t), 1, "accepted transport without TCP_NODELAY");
    cr_assert_eq(nodelay(c.r.t), 1, "connected transport without TCP_NODELAY");
    cr_assert_str_eq(c.reason, "", "a reason without a failure");
    pact_transport_close(c.r.t);
    close_server_and_wait(loop, srv);
    test_loop_free(loop);
    rec_free(&c.r);
    for (int i = 0; i < sc.n; i++)
        rec_free(&sc.recs[i]);
}

/* An echo server on an ephemeral port of 127.0.0.1: its port. */
static int listen_echo_tcp(pact_loop *loop, srv_ctx *sc, pact_server **srv)
{
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, echo_factory,
                                        sc, srv), 0);
    return pact_server_port(*srv);
}

/* A server of short connections keeps the memory of closed streams for
 * the next ones: a connection served after others that were paused, had
 * marks of their own and were written to after close starts as a fresh
 * one — reading, the default marks, nothing buffered or counted. */
Test(server, a_connection_after_closed_ones_starts_fresh)
{
    pact_loop *loop = test_loop_new();
    srv_ctx sc = {0};
    pact_server *srv;
    int port = listen_echo_tcp(loop, &sc, &srv);
    size_t high0 = 0, low0 = 0;
    for (int i = 0; i < 4; i++) {
        int fd = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
        raw_echo(loop, fd, "ping"); /* made, reading, echoing */
        cr_assert_eq(sc.n, i + 1);
        pact_transport *t = sc.recs[i].t;
        cr_assert_eq(pact_transport_is_reading(t), 1, "connection %d", i);
        cr_assert_eq(pact_transport_is_closing(t), 0, "connection %d", i);
        /* The echo's send may still be in flight on io_uring. */
        RUN_UNTIL(loop, pact_transport_write_buffer_size(t) == 0, 5000);
        cr_assert_eq(pact_transport_writes_after_close(t), 0, "connection %d", i);
        size_t high, low;
        pact_transport_get_write_buffer_limits(t, &high, &low);
        if (i == 0) {
            high0 = high;
            low0 = low;
        }
        cr_assert_eq(high, high0, "connection %d kept marks of another", i);
        cr_assert_eq(low, low0, "connection %d kept marks of another", i);
        /* Leave it in a state no new connection may start in. */
        cr_assert_eq(pact_transport_pause_reading(t), 0);
        cr_assert_eq(pact_transport_set_write_buffer_limits(t, high0 * 2 + 1, 7), 0);
        cr_assert_eq(pact_transport_close(t), 0);
        cr_assert_eq(pact_transport_write(t, "late", 4), -ESHUTDOWN);
        cr_assert_eq(pact_transport_writes_after_close(t), 1);
        RUN_UNTIL(loop, sc.recs[i].lost == 1, 5000); /* its memory is gone */
        close(fd);
    }
    srv_expect_all_done(&sc);
    close_server_and_wait(loop, srv);
    test_loop_free(loop);
    for (int i = 0; i < sc.n; i++)
        rec_free(&sc.recs[i]);
}

/* A connection's first receive may find its peer's bytes already there
 * or not yet: io_uring waits for them before it first tries (a fresh
 * connection's peer has rarely written yet), and must still deliver what
 * was there before, or came after, and the EOF. Three kinds of client,
 * all connected before the loop runs: bytes and EOF sent before the
 * server made the connection; bytes before, EOF after; both after. */
Test(server, the_first_receive_gets_bytes_sent_before_or_after_the_connection_was_made)
{
    enum { N = 9 };
    pact_loop *loop = test_loop_new();
    srv_ctx sc = {0};
    pact_server *srv;
    int port = listen_echo_tcp(loop, &sc, &srv);
    int fds[N];
    char msg[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(msg[i], sizeof msg[i], "request %d", i);
        fds[i] = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
        if (i % 3 != 2)
            cr_assert_eq(send(fds[i], msg[i], strlen(msg[i]), MSG_NOSIGNAL),
                         (ssize_t)strlen(msg[i]));
        if (i % 3 == 0)
            cr_assert_eq(shutdown(fds[i], SHUT_WR), 0);
    }
    RUN_UNTIL(loop, sc.n == N && srv_made(&sc) == N, 5000);
    /* Every receive has been submitted: a turn more for the ones made last. */
    pact_loop_run_once(loop, 0);
    for (int i = 0; i < N; i++) {
        if (i % 3 == 2)
            cr_assert_eq(send(fds[i], msg[i], strlen(msg[i]), MSG_NOSIGNAL),
                         (ssize_t)strlen(msg[i]));
        if (i % 3 != 0)
            cr_assert_eq(shutdown(fds[i], SHUT_WR), 0);
    }
    RUN_UNTIL(loop, srv_lost(&sc) == N, 5000);
    srv_expect_all_done(&sc);
    size_t want = 0;
    for (int i = 0; i < N; i++) {
        cr_expect_eq(sc.recs[i].eofs, 1, "server connection %d: %d EOFs", i,
                     sc.recs[i].eofs);
        want += strlen(msg[i]);
    }
    cr_expect_eq(srv_bytes(&sc), want);
    for (int i = 0; i < N; i++) {
        /* The echo, then the EOF (the server closes on the client's). */
        char buf[32];
        size_t got = 0, len = strlen(msg[i]);
        cr_assert(try_read(fds[i], buf, len, &got), "client %d: %zu of %zu bytes",
                  i, got, len);
        cr_expect(memcmp(buf, msg[i], len) == 0, "client %d: echo differs", i);
        cr_expect_eq(recv(fds[i], buf, sizeof buf, MSG_DONTWAIT), 0,
                     "client %d: no EOF", i);
        close(fds[i]);
    }
    close_server_and_wait(loop, srv);
    test_loop_free(loop);
    for (int i = 0; i < sc.n; i++)
        rec_free(&sc.recs[i]);
}

/* A server of short connections (connect, one request answered, close)
 * allocates nothing per connection once the loop is warm: the stream
 * comes from the memory of closed ones and the reply's write state from
 * the loop's cache, where the closed connection's write state went back.
 * A build with AddressSanitizer keeps no closed streams (stream.c: a
 * stream touched after its free must be reported): one allocation per
 * connection there. */
#ifdef PACT_TEST_ASAN
#define ALLOCS_PER_SHORT_CONNECTION 1
#else
#define ALLOCS_PER_SHORT_CONNECTION 0
#endif
enum { SHORT_WARM_UP = 8, SHORT_COUNTED = 32 };

static uint64_t ops_live(pact_loop *loop)
{
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    return st.ops_live;
}

/* A TCP server on an ephemeral port whose accept has started: its port,
 * and in *server_ops the operations it alone keeps live (its accept), to
 * which the loop returns once a closed connection's memory is given back. */
static int listen_counting_server_ops(pact_loop *loop, pact_protocol_factory_cb factory,
                                      void *factory_user, pact_server **srv,
                                      uint64_t *server_ops)
{
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, factory,
                                        factory_user, srv), 0);
    int port = pact_server_port(*srv);
    pact_loop_run_once(loop, 0);
    *server_ops = ops_live(loop);
    return port;
}

Test(server, short_connections_on_a_warm_loop_allocate_nothing)
{
    pact_loop *loop = test_loop_new();
    srv_ctx sc = {0};
    pact_server *srv;
    uint64_t ops_of_the_server;
    int port = listen_counting_server_ops(loop, echo_factory, &sc, &srv,
                                          &ops_of_the_server);
    unsigned long allocs = 0;
    for (int i = 0; i < SHORT_WARM_UP + SHORT_COUNTED; i++) {
        if (i == SHORT_WARM_UP)
            alloc_counter_start();
        int fd = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
        raw_echo(loop, fd, "ping");
        close(fd);
        RUN_UNTIL(loop, sc.n == i + 1 && sc.recs[i].lost == 1, 5000);
        /* The closed stream's memory is given back once nothing refers to
         * it: its operations are over. */
        RUN_UNTIL(loop, ops_live(loop) <= ops_of_the_server, 5000);
    }
    allocs = alloc_counter_stop();
    cr_assert_eq(allocs, (unsigned long)ALLOCS_PER_SHORT_CONNECTION * SHORT_COUNTED,
                 "%lu heap allocations for %d short connections", allocs,
                 SHORT_COUNTED);
    srv_expect_all_done(&sc);
    close_server_and_wait(loop, srv);
    test_loop_free(loop);
}

/* The same with many connections at a time, each answered from the
 * loop's receive buffer (pact_transport_write_received: on io_uring its
 * send holds the stream's write state until it is back, so a hundred
 * replies in flight hold a hundred) and closed by its client. */
enum { CHURN_AT_ONCE = 100, CHURN_WARM_ROUNDS = 3, CHURN_ROUNDS = 3 };

typedef struct churn_ctx {
    int made, replies, lost;
} churn_ctx;

static void churn_data(pact_transport *t, const void *data, size_t len, void *user)
{
    churn_ctx *c = user;
    c->replies++;
    cr_assert_eq(pact_transport_write_received(t, data, len), 0);
}

static void churn_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    ((churn_ctx *)user)->lost++;
}

static const pact_protocol churn_protocol = {
    .data_received = churn_data,
    .connection_lost = churn_lost,
};

static int churn_factory(pact_server *s, void *fu, const pact_protocol **proto,
                         void **user)
{
    (void)s;
    churn_ctx *c = fu;
    c->made++;
    *proto = &churn_protocol;
    *user = c;
    return 0;
}

Test(server, many_short_connections_at_a_time_on_a_warm_loop_allocate_nothing)
{
    pact_loop *loop = test_loop_new();
    churn_ctx cc = {0};
    pact_server *srv;
    uint64_t ops_of_the_server;
    int port = listen_counting_server_ops(loop, churn_factory, &cc, &srv,
                                          &ops_of_the_server);
    int fds[CHURN_AT_ONCE];
    for (int round = 0; round < CHURN_WARM_ROUNDS + CHURN_ROUNDS; round++) {
        if (round == CHURN_WARM_ROUNDS)
            alloc_counter_start();
        for (int i = 0; i < CHURN_AT_ONCE; i++)
            fds[i] = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
        for (int i = 0; i < CHURN_AT_ONCE; i++)
            cr_assert_eq(send(fds[i], "ping", 4, MSG_NOSIGNAL), 4);
        for (int i = 0; i < CHURN_AT_ONCE; i++) {
            size_t got = 0;
            char buf[4];
            RUN_UNTIL(loop, try_read(fds[i], buf, sizeof buf, &got), 5000);
            cr_assert(memcmp(buf, "ping", 4) == 0);
        }
        for (int i = 0; i < CHURN_AT_ONCE; i++)
            close(fds[i]);
        RUN_UNTIL(loop, cc.lost == (round + 1) * CHURN_AT_ONCE, 5000);
        RUN_UNTIL(loop, ops_live(loop) <= ops_of_the_server, 5000);
    }
    unsigned long allocs = alloc_counter_stop();
    cr_assert_eq(allocs,
                 (unsigned long)ALLOCS_PER_SHORT_CONNECTION * CHURN_AT_ONCE * CHURN_ROUNDS,
                 "%lu heap allocations for %d rounds of %d short connections",
                 allocs, CHURN_ROUNDS, CHURN_AT_ONCE);
    cr_assert_eq(cc.made, (CHURN_WARM_ROUNDS + CHURN_ROUNDS) * CHURN_AT_ONCE);
    cr_assert_eq(cc.replies, cc.made);
    close_server_and_wait(loop, srv);
    test_loop_free(loop);
}

/* A transport's socket is closed once its connection_lost has run and
 * the run has returned, whatever the engine defers (io_uring closes it
 * with the loop's next submission): the fd is gone and the peer reads
 * EOF without the loop running again. */
Test(server, the_socket_is_closed_when_the_run_returns_after_connection_lost)
{
    pact_loop *loop = test_loop_new();
    srv_ctx sc = {0};
    pact_server *srv;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, echo_factory,
                                        &sc, &srv), 0);
    int peer = tcp_connect_blocking(AF_INET, "127.0.0.1", pact_server_port(srv));
    raw_echo(loop, peer, "ping");
    cr_assert_eq(sc.n, 1);
    int fd = pact_transport_fd(sc.recs[0].t);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pact_transport_close(sc.recs[0].t), 0);
    RUN_UNTIL(loop, sc.recs[0].lost == 1, 5000);
    /* The loop does not run from here until the checks are done. */
    errno = 0;
    cr_assert_eq(fcntl(fd, F_GETFD), -1, "fd %d still open", fd);
    cr_assert_eq(errno, EBADF);
    struct pollfd p = {.fd = peer, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 2000), 1, "the peer saw no close");
    char c;
    cr_assert_eq(recv(peer, &c, 1, 0), 0, "the peer did not read EOF");
    close(peer);
    srv_expect_all_done(&sc);
    close_server_and_wait(loop, srv);
    test_loop_free(loop);
    rec_free(&sc.recs[0]);
}

Test(server, a_refused_connect_says_where_and_why)
{
    pact_loop *loop = test_loop_new();
    int fd = pact_tcp_listen("127.0.0.1", 0, 1);
    cr_assert_geq(fd, 0);
    int port = pact_socket_port(fd);
    close(fd); /* nobody listens there now */
    client c;
    client_init(&c, 0, 4);
    cr_assert_gt(pact_connect_tcp(loop, "127.0.0.1", (uint16_t)port, &client_protocol,
                                  &c, on_connect, &c), 0);
    RUN_UNTIL(loop, c.cb_calls == 1, 5000);
    cr_assert_eq(c.err, -ECONNREFUSED);
    char want[96];
    snprintf(want, sizeof want, "connect to 127.0.0.1 port %d: Connection refused", port);
    cr_assert_str_eq(c.reason, want);
    cr_assert_null(pact_connect_error_message(loop), "the reason outlived its callback");
    /* A Unix path nobody listens on. */
    client u;
    client_init(&u, 0, 4);
    cr_assert_gt(pact_connect_unix(loop, "@pact-test-nobody-listens-here", &client_protocol,
                                   &u, on_connect, &u), 0);
    RUN_UNTIL(loop, u.cb_calls == 1, 5000);
    cr_assert_eq(u.err, -ECONNREFUSED);
    cr_assert_str_eq(u.reason, "connect to @pact-test-nobody-listens-here: Connection refused");
    test_loop_free(loop);
    rec_free(&c.r);
    rec_free(&u.r);
}

/* ---- adopting a listening socket ------------------------------------------- */

typedef struct adopt_ctx {
    srv_ctx sc;
    int accepting_seen;   /* factory calls that saw the connection */
    int peer_ports[8];
} adopt_ctx;

static int adopt_factory(pact_server *s, void *fu, const pact_protocol **proto,
                         void **user)
{
    adopt_ctx *a = fu;
    pact_transport *t = pact_server_accepting(s);
    if (t) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        cr_expect_geq(pact_transport_fd(t), 0);
        if (pact_transport_peername(t, &ss, &len) == 0 && a->accepting_seen < 8) {
            a->peer_ports[a->accepting_seen] =
                ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port) : -1;
        }
        a->accepting_seen++;
    }
    return echo_factory(s, &a->sc, proto, user);
}

static int fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

Test(server, adopt_a_listening_tcp_socket_serves_it_and_closes_it)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int lfd = plain_tcp_listener(16);
    int port = pact_socket_port(lfd);
    cr_assert_gt(port, 0);
    static adopt_ctx a;
    memset(&a, 0, sizeof a);
    pact_server *srv;
    pact_server_options o = PACT_SERVER_OPTIONS_INIT;
    o.backlog = 64; /* listen() again with it */
    cr_assert_eq(pact_server_adopt(loop, lfd, &o, adopt_factory, &a, &srv), 0);
    cr_assert_eq(pact_server_fd(srv), lfd);
    cr_assert_eq(pact_server_port(srv), port);
    cr_assert_null(pact_server_accepting(srv), "outside the factory");
    cr_assert_null(pact_server_accepting(NULL));
    int clients[3];
    for (int i = 0; i < 3; i++) {
        clients[i] = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
        raw_echo(loop, clients[i], "through an adopted listener");
    }
    cr_assert_eq(a.sc.n, 3);
    cr_assert_eq(a.accepting_seen, 3, "the factory did not see the connection");
    for (int i = 0; i < 3; i++) {
        struct sockaddr_in me;
        socklen_t len = sizeof me;
        cr_assert_eq(getsockname(clients[i], (struct sockaddr *)&me, &len), 0);
        cr_assert_eq(a.peer_ports[i], ntohs(me.sin_port),
                     "the factory saw another peer");
        cr_assert_eq(nodelay(a.sc.recs[i].t), 1, "accepted without TCP_NODELAY");
    }
    cr_assert_eq(pact_server_connections(srv), 3);
    for (int i = 0; i < 3; i++)
        close(clients[i]);
    RUN_UNTIL(loop, srv_lost(&a.sc) == 3, 5000);
    close_server_and_wait(loop, srv);
    /* The server owned the socket: closed, and nobody listens there. */
    cr_assert(!fd_is_open(lfd) || pact_socket_port(lfd) != port);
    int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_neq(connect(probe, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(errno, ECONNREFUSED);
    close(probe);
    srv_expect_all_done(&a.sc);
    test_loop_free(loop);
    for (int i = 0; i < a.sc.n; i++)
        rec_free(&a.sc.recs[i]);
    cr_assert_eq(count_open_fds(), fds0);
}

Test(server, adopt_a_unix_listener_leaves_its_file)
{
    int fds0 = count_open_fds();
    char dir[] = "/tmp/pact-adopt-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s/listener.sock", dir);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sun, sizeof sun), 0);
    cr_assert_eq(listen(lfd, 16), 0);
    pact_loop *loop = test_loop_new();
    static adopt_ctx a;
    memset(&a, 0, sizeof a);
    pact_server *srv;
    cr_assert_eq(pact_server_adopt(loop, lfd, NULL, adopt_factory, &a, &srv), 0);
    cr_assert_eq(pact_server_port(srv), -ENOTSUP);
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(connect(c, (struct sockaddr *)&sun, sizeof sun), 0);
    raw_echo(loop, c, "over a Unix socket someone else bound");
    cr_assert_eq(a.accepting_seen, 1);
    int v = -1;
    socklen_t vlen = sizeof v;
    cr_assert_neq(getsockopt(pact_transport_fd(a.sc.recs[0].t), IPPROTO_TCP,
                             TCP_NODELAY, &v, &vlen), 0, "TCP_NODELAY on a Unix socket?");
    close(c);
    RUN_UNTIL(loop, srv_lost(&a.sc) == 1, 5000);
    close_server_and_wait(loop, srv);
    struct stat st;
    cr_assert_eq(stat(sun.sun_path, &st), 0, "the adopted socket's file was removed");
    unlink(sun.sun_path);
    rmdir(dir);
    test_loop_free(loop);
    rec_free(&a.sc.recs[0]);
    cr_assert_eq(count_open_fds(), fds0);
}

Test(server, adopt_refuses_what_it_cannot_serve_and_closes_it)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    adopt_ctx a = {0};
    pact_server *srv = NULL;
    /* Bound, not listening. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(pact_server_adopt(loop, fd, NULL, adopt_factory, &a, &srv), -EINVAL);
    cr_assert(!fd_is_open(fd), "refused, and left open");
    /* A datagram socket. */
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(pact_server_adopt(loop, fd, NULL, adopt_factory, &a, &srv), -EINVAL);
    cr_assert(!fd_is_open(fd));
    /* Not a socket. */
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(pact_server_adopt(loop, p[0], NULL, adopt_factory, &a, &srv), -ENOTSOCK);
    cr_assert(!fd_is_open(p[0]));
    close(p[1]);
    /* Options that cannot apply, no factory, no fd. */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(listen(fd, 4), 0);
    pact_server_options o = PACT_SERVER_OPTIONS_INIT;
    o.reuse_port = 1;
    cr_assert_eq(pact_server_adopt(loop, fd, &o, adopt_factory, &a, &srv), -EINVAL);
    cr_assert(!fd_is_open(fd));
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(pact_server_adopt(loop, fd, NULL, NULL, &a, &srv), -EINVAL);
    cr_assert(!fd_is_open(fd));
    cr_assert_eq(pact_server_adopt(loop, -1, NULL, adopt_factory, &a, &srv), -EBADF);
    cr_assert_null(srv);
    cr_assert_eq(a.sc.n, 0);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds0);
}
