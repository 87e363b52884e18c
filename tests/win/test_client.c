/* SPDX-License-Identifier: MIT */
/* Clients on the completion port: pact_connect_tcp (names resolved on
 * the thread pool, ConnectEx per address) against a pact server in the
 * same loop, under Wine. */
#include "helpers.h"

typedef struct conn {
    pact_transport *t;
    int made, lost, eof;
    uint64_t received;
    int pattern_ok;
    int echo;
} conn;

typedef struct attempt {
    int calls;
    int err;
    pact_transport *t;
} attempt;

static conn served;

static void on_made(pact_transport *t, void *user)
{
    conn *c = user;
    c->made++;
    c->t = t;
}

static void on_data(pact_transport *t, const void *data, size_t len, void *user)
{
    conn *c = user;
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        if (p[i] != test_pattern_byte(c->received + i))
            c->pattern_ok = 0;
    c->received += len;
    if (c->echo)
        cr_assert_eq(pact_transport_write(t, data, len), 0);
}

static int on_eof(pact_transport *t, void *user)
{
    (void)t;
    ((conn *)user)->eof++;
    return 0;
}

static void on_lost(pact_transport *t, int err, void *user)
{
    (void)t, (void)err;
    ((conn *)user)->lost++;
}

static const pact_protocol proto = {
    .connection_made = on_made,
    .data_received = on_data,
    .eof_received = on_eof,
    .connection_lost = on_lost,
};

static int factory(pact_server *server, void *factory_user,
                   const pact_protocol **p, void **user)
{
    (void)server, (void)factory_user;
    memset(&served, 0, sizeof served);
    served.pattern_ok = 1;
    served.echo = 1;
    *p = &proto;
    *user = &served;
    return 0;
}

static void on_connect(pact_loop *loop, pact_transport *t, int err, void *user)
{
    (void)loop;
    attempt *a = user;
    a->calls++;
    a->err = err;
    a->t = t;
}

static void echo_through(pact_loop *loop, const char *host)
{
    pact_server *server = NULL;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, factory, NULL,
                                        &server), 0);
    conn c = {.pattern_ok = 1};
    attempt a = {0};
    pact_op op = pact_connect_tcp(loop, host, (uint16_t)pact_server_port(server),
                                  &proto, &c, on_connect, &a);
    cr_assert_gt(op, 0);
    run_until(loop, &a.calls, 10000);
    cr_assert_eq(a.err, 0, "connect to %s: %s", host, pact_strerror(a.err));
    cr_assert_not_null(a.t);
    run_until(loop, &c.made, 5000);
    static uint8_t buf[256 * 1024];
    test_fill_pattern(buf, sizeof buf, 0);
    cr_assert_eq(pact_transport_write(a.t, buf, sizeof buf), 0);
    uint64_t end = pact_now() + 20000 * MS;
    while (c.received < sizeof buf) {
        cr_assert(pact_now() < end);
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    }
    cr_assert(c.pattern_ok);
    cr_assert(served.pattern_ok);
    cr_assert_eq(pact_transport_close(a.t), 0);
    run_until(loop, &c.lost, 5000);
    run_until(loop, &served.lost, 5000);
    cr_assert_eq(c.lost, 1);
    cr_assert_eq(served.lost, 1);
    cr_assert_eq(served.eof, 1);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(pact_server_close(server), 0);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 2 * (int64_t)MS);
}

Test(client, connect_tcp_to_a_numeric_address_echoes_every_byte, .timeout = 60)
{
    pact_loop *loop = test_loop_new();
    echo_through(loop, "127.0.0.1");
    test_loop_free(loop);
}

Test(client, connect_tcp_resolves_localhost_on_the_pool, .timeout = 60)
{
    pact_loop *loop = test_loop_new();
    echo_through(loop, "localhost");
    test_loop_free(loop);
}

Test(client, a_refused_connect_calls_back_once_with_the_error, .timeout = 60)
{
    pact_loop *loop = test_loop_new();
    /* A port nobody listens on: take one and close it. */
    struct sockaddr_in addr;
    SOCKET l = test_listener(&addr);
    closesocket(l);
    conn c = {.pattern_ok = 1};
    attempt a = {0};
    pact_op op = pact_connect_tcp(loop, "127.0.0.1", ntohs(addr.sin_port), &proto,
                                  &c, on_connect, &a);
    cr_assert_gt(op, 0);
    run_until(loop, &a.calls, 20000);
    cr_assert_eq(a.err, -ECONNREFUSED, "%s", pact_strerror(a.err));
    cr_assert_null(a.t);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 2 * (int64_t)MS);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(c.made, 0);
    test_loop_free(loop);
}

Test(client, a_cancelled_connect_calls_back_once_and_leaves_nothing)
{
    pact_loop *loop = test_loop_new();
    pact_server *server = NULL;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, factory, NULL,
                                        &server), 0);
    conn c = {.pattern_ok = 1};
    attempt a = {0};
    pact_op op = pact_connect_tcp(loop, "localhost", (uint16_t)pact_server_port(server),
                                  &proto, &c, on_connect, &a);
    cr_assert_gt(op, 0);
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    run_until(loop, &a.calls, 10000);
    /* Cancelled in time, or too late with the transport delivered. */
    if (a.err == 0) {
        cr_assert_not_null(a.t);
        cr_assert_eq(pact_transport_close(a.t), 0);
        run_until(loop, &c.lost, 5000);
    } else {
        cr_assert_eq(a.err, -ECANCELED);
        cr_assert_null(a.t);
    }
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(pact_server_close(server), 0);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 2 * (int64_t)MS);
    test_loop_free(loop);
}

Test(client, unix_connect_is_not_on_windows)
{
    pact_loop *loop = test_loop_new();
    attempt a = {0};
    conn c = {0};
    cr_assert_eq(pact_connect_unix(loop, "pact-unix", &proto, &c, on_connect, &a),
                 -ENOTSUP);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(a.calls, 0);
    test_loop_free(loop);
}
