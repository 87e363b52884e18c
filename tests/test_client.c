/* SPDX-License-Identifier: MIT */
/* Clients: pact_connect_tcp (numeric, refused, by name, cancelled) and
 * pact_connect_unix against a full backlog (retry with back-off, cancel
 * during the back-off). */
#include <sys/un.h>

#include "recorder.h"

TestSuite(client, .timeout = 30);

typedef struct conn {
    rec r; /* first: also the protocol's user pointer */
    int cb_calls;
    int err;
    int made_before_cb;
    pact_transport *t;
} conn;

static void on_connect(pact_loop *loop, pact_transport *t, int err, void *user)
{
    (void)loop;
    conn *c = user;
    c->cb_calls++;
    c->err = err;
    c->t = t;
    if (c->r.made)
        c->made_before_cb = 1;
    if (err == 0)
        cr_expect(t != NULL);
    else
        cr_expect(t == NULL);
}

static void conn_init(conn *c)
{
    memset(c, 0, sizeof *c);
    rec_init(&c->r);
    c->r.keep_data = 1;
}

/* A blocking accept with a deadline on a listener the test owns. */
static int accept_within(int lfd, int ms)
{
    uint64_t end = pact_now() + (uint64_t)ms * MS;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0 || pact_now() > end)
            return fd;
        usleep(1000);
    }
}

/* Checks a connected client both ways through a raw server-side fd, then
 * closes the transport and waits for connection_lost. */
static void exchange_and_close(pact_loop *loop, conn *c, int sfd)
{
    RUN_UNTIL(loop, c->r.made, 5000);
    cr_assert_eq(pact_transport_write(c->r.t, "hello", 5), 0);
    char buf[16];
    size_t got = 0;
    RUN_UNTIL(loop, try_read(sfd, buf, 5, &got), 5000);
    cr_assert(memcmp(buf, "hello", 5) == 0);
    cr_assert_eq(send(sfd, "world", 5, MSG_NOSIGNAL), 5);
    RUN_UNTIL(loop, c->r.nbytes == 5, 5000);
    cr_assert(memcmp(c->r.data, "world", 5) == 0);
    pact_transport_close(c->r.t);
    RUN_UNTIL(loop, c->r.lost, 5000);
    rec_expect_done(&c->r);
    cr_expect_eq(c->r.lost_err, 0);
    cr_expect_eq(c->cb_calls, 1);
    cr_expect_eq(c->made_before_cb, 0,
                 "connection_made ran before the transport was delivered");
}

Test(client, tcp_to_a_numeric_address)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int lfd = pact_tcp_listen("127.0.0.1", 0, 8);
    cr_assert_geq(lfd, 0);
    conn c;
    conn_init(&c);
    pact_op op = pact_connect_tcp(loop, "127.0.0.1", (uint16_t)pact_socket_port(lfd),
                                  &rec_protocol, &c, on_connect, &c);
    cr_assert_gt(op, 0);
    RUN_UNTIL(loop, c.cb_calls, 5000);
    cr_assert_eq(c.err, 0, "%s", pact_strerror(c.err));
    cr_expect_eq(pact_op_cancel(loop, op), -ENOENT, "the op is done");
    int sfd = accept_within(lfd, 2000);
    cr_assert_geq(sfd, 0);
    exchange_and_close(loop, &c, sfd);
    close(sfd);
    close(lfd);
    test_loop_free(loop);
    rec_free(&c.r);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(client, tcp_to_a_closed_port_is_refused_without_an_fd_left)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int lfd = pact_tcp_listen("127.0.0.1", 0, 8);
    int port = pact_socket_port(lfd);
    close(lfd); /* nobody listens there now */
    conn c;
    conn_init(&c);
    cr_assert_gt(pact_connect_tcp(loop, "127.0.0.1", (uint16_t)port, &rec_protocol,
                                  &c, on_connect, &c), 0);
    RUN_UNTIL(loop, c.cb_calls, 5000);
    cr_expect_eq(c.err, -ECONNREFUSED, "%s", pact_strerror(c.err));
    run_for(loop, 20);
    cr_expect_eq(c.cb_calls, 1);
    cr_expect_eq(c.r.made + c.r.lost, 0, "protocol called for a failed connect");
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(client, tcp_to_localhost_resolves_on_the_pool)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    /* IPv4 only: if "localhost" gives ::1 first, the client must go on to
     * the next address. */
    int lfd = pact_tcp_listen("127.0.0.1", 0, 8);
    cr_assert_geq(lfd, 0);
    conn c;
    conn_init(&c);
    cr_assert_gt(pact_connect_tcp(loop, "localhost", (uint16_t)pact_socket_port(lfd),
                                  &rec_protocol, &c, on_connect, &c), 0);
    RUN_UNTIL(loop, c.cb_calls, 10000);
    cr_assert_eq(c.err, 0, "%s", pact_strerror(c.err));
    struct sockaddr_storage ss;
    socklen_t len;
    cr_assert_eq(pact_transport_peername(c.t, &ss, &len), 0);
    cr_expect_eq(ss.ss_family, AF_INET);
    int sfd = accept_within(lfd, 2000);
    cr_assert_geq(sfd, 0);
    exchange_and_close(loop, &c, sfd);
    close(sfd);
    close(lfd);

    /* A name that does not resolve is a clean error. */
    rec_free(&c.r);
    conn_init(&c);
    cr_assert_gt(pact_connect_tcp(loop, "no-such-host.invalid", 80, &rec_protocol,
                                  &c, on_connect, &c), 0);
    RUN_UNTIL(loop, c.cb_calls, 10000);
    cr_expect_lt(c.err, 0);
    test_loop_free(loop);
    rec_free(&c.r);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* Fills a TCP listener's accept queue so that further SYNs are dropped and
 * a connect stays in progress. Returns the listener; clients in q[]. */
static int full_tcp_listener(int q[4], int *nq)
{
    int lfd = pact_tcp_listen("127.0.0.1", 0, 1);
    cr_assert_geq(lfd, 0);
    struct sockaddr_storage ss;
    socklen_t len;
    pact_sockaddr_parse("127.0.0.1", (uint16_t)pact_socket_port(lfd), &ss, &len);
    *nq = 0;
    for (int i = 0; i < 4; i++) {
        q[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(q[i], (struct sockaddr *)&ss, len);
        (*nq)++;
    }
    usleep(20000);
    return lfd;
}

Test(client, cancel_of_a_connect_in_progress)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int q[4], nq;
    int lfd = full_tcp_listener(q, &nq);
    int port = pact_socket_port(lfd);

    /* Cancelled while the SYN goes unanswered. */
    conn c;
    conn_init(&c);
    pact_op op = pact_connect_tcp(loop, "127.0.0.1", (uint16_t)port, &rec_protocol,
                                  &c, on_connect, &c);
    cr_assert_gt(op, 0);
    run_for(loop, 50);
    cr_assert_eq(c.cb_calls, 0, "connected to a full backlog? (%s)",
                 pact_strerror(c.err));
    cr_expect_eq(pact_op_cancel(loop, op), 0);
    cr_expect_eq(pact_op_cancel(loop, op), -EALREADY, "cancel twice");
    RUN_UNTIL(loop, c.cb_calls, 5000);
    cr_expect_eq(c.err, -ECANCELED, "%s", pact_strerror(c.err));
    run_for(loop, 10);
    cr_expect_eq(c.cb_calls, 1);
    for (int i = 0; i < nq; i++)
        close(q[i]);
    close(lfd);

    /* Cancelled at once, against a listener that would accept: either
     * cancelled or delivered, never a leaked fd. */
    lfd = pact_tcp_listen("127.0.0.1", 0, 8);
    for (int round = 0; round < 20; round++) {
        conn_init(&c);
        op = pact_connect_tcp(loop, "127.0.0.1", (uint16_t)pact_socket_port(lfd),
                              &rec_protocol, &c, on_connect, &c);
        cr_assert_gt(op, 0);
        if (round & 1)
            pact_loop_run_once(loop, 0);
        int r = pact_op_cancel(loop, op);
        cr_expect(r == 0 || r == -EALREADY || r == -ENOENT, "cancel: %d", r);
        RUN_UNTIL(loop, c.cb_calls, 5000);
        cr_expect(c.err == -ECANCELED || c.err == 0, "%s", pact_strerror(c.err));
        if (c.err == 0) {
            pact_transport_close(c.t);
            RUN_UNTIL(loop, c.r.lost, 5000);
            rec_expect_done(&c.r);
        } else {
            cr_expect_eq(c.r.made, 0);
        }
        int sfd;
        while ((sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
            close(sfd);
        rec_free(&c.r);
    }
    close(lfd);

    /* Cancelled while the name is being resolved. */
    conn_init(&c);
    op = pact_connect_tcp(loop, "localhost", 9, &rec_protocol, &c, on_connect, &c);
    cr_assert_gt(op, 0);
    pact_op_cancel(loop, op);
    RUN_UNTIL(loop, c.cb_calls, 5000);
    cr_expect(c.err == -ECANCELED || c.err < 0, "%s", pact_strerror(c.err));
    run_for(loop, 10);
    cr_expect_eq(c.cb_calls, 1);

    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    cr_expect_eq(st.ops_live, 0);
    test_loop_free(loop);
    rec_free(&c.r);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* ---- Unix: a full backlog -------------------------------------------------------- */

static int unix_addr(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
    size_t n = strlen(path);
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, n);
    if (path[0] == '@')
        sun->sun_path[0] = 0;
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
                       (path[0] == '@' ? 0 : 1));
    return 0;
}

/* A Unix listener with backlog 0 and one connection queued: the next
 * connect gets EAGAIN until someone accepts. */
static int full_unix_listener(const char *path, int *queued)
{
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun;
    socklen_t len;
    cr_assert_eq(unix_addr(path, &sun, &len), 0);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sun, len), 0, "%s", strerror(errno));
    cr_assert_eq(listen(lfd, 0), 0);
    *queued = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert_eq(connect(*queued, (struct sockaddr *)&sun, len), 0);
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert_eq(connect(probe, (struct sockaddr *)&sun, len), -1);
    cr_assert_eq(errno, EAGAIN, "backlog not full: %s", strerror(errno));
    close(probe);
    return lfd;
}

Test(client, unix_connect_retries_while_the_backlog_is_full)
{
    int fds0 = count_open_fds();
    char name[64];
    snprintf(name, sizeof name, "@pact-client-%d-%llu", (int)getpid(),
             (unsigned long long)pact_now());
    pact_loop *loop = test_loop_new();
    int queued;
    int lfd = full_unix_listener(name, &queued);
    conn c;
    conn_init(&c);
    cr_assert_gt(pact_connect_unix(loop, name, &rec_protocol, &c, on_connect, &c), 0);
    run_for(loop, 60);
    cr_assert_eq(c.cb_calls, 0, "gave up or connected with a full backlog: %s",
                 pact_strerror(c.err));
    /* The server accepts the queued one: room for ours. */
    int s1 = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(s1, 0);
    RUN_UNTIL(loop, c.cb_calls, 2000);
    cr_assert_eq(c.err, 0, "%s", pact_strerror(c.err));
    int s2 = accept_within(lfd, 2000);
    cr_assert_geq(s2, 0);
    exchange_and_close(loop, &c, s2);
    close(s1);
    close(s2);
    close(queued);
    close(lfd);
    test_loop_free(loop);
    rec_free(&c.r);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(client, unix_connect_cancelled_during_the_back_off_leaves_nothing)
{
    int fds0 = count_open_fds();
    char dir[] = "/tmp/pact-cli-XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[108];
    snprintf(path, sizeof path, "%s/sock", dir);
    pact_loop *loop = test_loop_new();
    int queued;
    int lfd = full_unix_listener(path, &queued);
    int fds1 = count_open_fds();
    conn c;
    conn_init(&c);
    pact_op op = pact_connect_unix(loop, path, &rec_protocol, &c, on_connect, &c);
    cr_assert_gt(op, 0);
    run_for(loop, 30);
    cr_assert_eq(c.cb_calls, 0);
    cr_expect_eq(pact_op_cancel(loop, op), 0);
    RUN_UNTIL(loop, c.cb_calls, 2000);
    cr_expect_eq(c.err, -ECANCELED, "%s", pact_strerror(c.err));
    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    cr_expect_eq(st.ops_live, 0, "a back-off timer or connect is still live");
    cr_expect_eq(pact_loop_alive(loop), 0, "something keeps the loop alive");
    cr_expect_eq(count_open_fds(), fds1, "the connecting socket leaked");
    /* The listener never saw a connection from us. */
    int s1 = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    cr_assert_geq(s1, 0);
    close(s1);
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    int s2 = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    cr_expect_lt(s2, 0, "a cancelled connect reached the server");
    if (s2 >= 0)
        close(s2);
    close(queued);
    close(lfd);
    unlink(path);
    rmdir(dir);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(client, unix_connect_to_nobody_fails_cleanly)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    conn c;
    conn_init(&c);
    cr_assert_gt(pact_connect_unix(loop, "/tmp/pact-no-such-socket", &rec_protocol,
                                   &c, on_connect, &c), 0);
    RUN_UNTIL(loop, c.cb_calls, 2000);
    cr_expect_eq(c.err, -ENOENT, "%s", pact_strerror(c.err));
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}
