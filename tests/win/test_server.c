/* SPDX-License-Identifier: MIT */
/* Servers on the completion port: pact_server_listen_tcp accepting with
 * AcceptEx (one socket per accept), each connection a transport with the
 * factory's protocol, under Wine. Clients are transports too, on sockets
 * connected with plain blocking calls. */
#include "helpers.h"

#define CONNS 20
#define PER_CONN (256u * 1024u)

typedef struct conn {
    pact_transport *t;
    int made, lost, lost_err, eof;
    uint64_t received;
    int pattern_ok;
    int echo;
} conn;

typedef struct world {
    conn served[CONNS + 4];
    int nserved;
    int refuse;     /* the factory refuses every connection */
    int lost_total;
    int closed;     /* wait_closed called back */
} world;

static world *the_world;

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
    (void)t;
    conn *c = user;
    c->lost++;
    c->lost_err = err;
    if (the_world)
        the_world->lost_total++;
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
    (void)server;
    world *w = factory_user;
    if (w->refuse)
        return -ECONNREFUSED;
    cr_assert_lt(w->nserved, CONNS + 4);
    conn *c = &w->served[w->nserved++];
    memset(c, 0, sizeof *c);
    c->pattern_ok = 1;
    c->echo = 1;
    *p = &proto;
    *user = c;
    return 0;
}

static SOCKET connect_to(int port)
{
    test_winsock();
    SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    cr_assert_neq(s, INVALID_SOCKET);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((u_short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    return s;
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

static void on_wait_closed(pact_loop *loop, void *user)
{
    (void)loop;
    ((world *)user)->closed++;
}

static pact_server *listen_here(pact_loop *loop, world *w)
{
    pact_server *server = NULL;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, factory, w,
                                        &server), 0);
    cr_assert_gt(pact_server_port(server), 0);
    return server;
}

Test(server, twenty_clients_echoed_every_byte_then_close_ends_each_once, .timeout = 120)
{
    static world w;
    memset(&w, 0, sizeof w);
    the_world = NULL;
    pact_loop *loop = test_loop_new();
    pact_server *server = listen_here(loop, &w);
    int port = pact_server_port(server);
    static conn clients[CONNS];
    for (int i = 0; i < CONNS; i++) {
        memset(&clients[i], 0, sizeof clients[i]);
        clients[i].pattern_ok = 1;
        SOCKET s = connect_to(port);
        pact_transport *t = NULL;
        cr_assert_eq(pact_transport_open(loop, (int)s, PACT_STREAM_SOCKET, &proto,
                                         &clients[i], &t), 0);
        clients[i].t = t;
    }
    for (int i = 0; i < CONNS; i++) {
        run_until(loop, &clients[i].made, 5000);
        write_pattern(clients[i].t, PER_CONN);
    }
    uint64_t end = pact_now() + 60000 * MS;
    for (;;) {
        int done = 0;
        for (int i = 0; i < CONNS; i++)
            done += clients[i].received == PER_CONN;
        if (done == CONNS)
            break;
        cr_assert(pact_now() < end, "%d of %d echoed in full", done, CONNS);
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    }
    cr_assert_eq(w.nserved, CONNS);
    cr_assert_eq(pact_server_connections(server), CONNS);
    for (int i = 0; i < CONNS; i++) {
        cr_assert(clients[i].pattern_ok, "client %d", i);
        cr_assert(w.served[i].pattern_ok, "served %d", i);
        cr_assert_eq(w.served[i].received, PER_CONN);
    }
    /* Closing the server stops the listener; its connections live on
     * until they end, and wait_closed runs once the last is gone. */
    cr_assert_eq(pact_server_wait_closed(server, on_wait_closed, &w), 0);
    cr_assert_eq(pact_server_close(server), 0);
    for (int i = 0; i < 10; i++)
        pact_loop_run_once(loop, 2 * (int64_t)MS);
    cr_assert_eq(w.closed, 0);
    for (int i = 0; i < CONNS; i++)
        cr_assert_eq(pact_transport_close(clients[i].t), 0);
    run_until(loop, &w.closed, 10000);
    for (int i = 0; i < CONNS; i++) {
        run_until(loop, &clients[i].lost, 5000);
        cr_assert_eq(clients[i].lost, 1);
        cr_assert_eq(w.served[i].lost, 1, "served %d", i);
        cr_assert_eq(w.served[i].eof, 1);
    }
    cr_assert_eq(w.closed, 1);
    /* The listener is gone: a new client is refused. */
    SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((u_short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_neq(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    closesocket(s);
    test_loop_free(loop);
}

Test(server, a_refusing_factory_closes_each_connection_and_keeps_listening)
{
    static world w;
    memset(&w, 0, sizeof w);
    w.refuse = 1;
    pact_loop *loop = test_loop_new();
    pact_server *server = listen_here(loop, &w);
    for (int i = 0; i < 3; i++) {
        SOCKET s = connect_to(pact_server_port(server));
        /* The refused connection is closed: the client reads EOF. */
        char byte;
        int n = -2;
        uint64_t end = pact_now() + 5000 * MS;
        u_long nonblocking = 1;
        ioctlsocket(s, FIONBIO, &nonblocking);
        while (pact_now() < end) {
            pact_loop_run_once(loop, 5 * (int64_t)MS);
            n = recv(s, &byte, 1, 0);
            if (n >= 0 || WSAGetLastError() != WSAEWOULDBLOCK)
                break;
        }
        cr_assert_leq(n, 0, "the refused connection stayed open");
        cr_assert_neq(n, -2);
        closesocket(s);
    }
    cr_assert_eq(w.nserved, 0);
    cr_assert_eq(pact_server_connections(server), 0);
    cr_assert_eq(pact_server_close(server), 0);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 2 * (int64_t)MS);
    test_loop_free(loop);
}

Test(server, loop_close_ends_server_and_connections_once)
{
    static world w;
    memset(&w, 0, sizeof w);
    the_world = &w;
    pact_loop *loop = test_loop_new();
    pact_server *server = listen_here(loop, &w);
    SOCKET s1 = connect_to(pact_server_port(server));
    SOCKET s2 = connect_to(pact_server_port(server));
    uint64_t end = pact_now() + 5000 * MS;
    while (w.nserved < 2 || !w.served[0].made || !w.served[1].made) {
        cr_assert(pact_now() < end);
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    }
    cr_assert_eq(pact_server_wait_closed(server, on_wait_closed, &w), 0);
    test_loop_free(loop); /* closes the server and its connections */
    cr_assert_eq(w.served[0].lost, 1);
    cr_assert_eq(w.served[1].lost, 1);
    cr_assert_eq(w.lost_total, 2);
    cr_assert_eq(w.closed, 1);
    the_world = NULL;
    closesocket(s1);
    closesocket(s2);
}

Test(server, bad_arguments_and_what_windows_lacks)
{
    static world w;
    pact_loop *loop = test_loop_new();
    pact_server *server = (pact_server *)&w;
    cr_assert_eq(pact_server_listen_tcp(loop, "localhost", 0, NULL, factory, &w,
                                        &server), -EINVAL);
    pact_server_options o;
    pact_server_options_init(&o);
    o.reuse_port = 1;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, &o, factory, &w,
                                        &server), -ENOTSUP);
    /* A port in use is refused. */
    struct sockaddr_in a;
    SOCKET l = test_listener(&a);
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", ntohs(a.sin_port), NULL,
                                        factory, &w, &server), -EADDRINUSE);
    closesocket(l);
    server = (pact_server *)&w;
    cr_assert_eq(pact_server_listen_unix(loop, "pact-unix", NULL, factory, &w,
                                         &server), -ENOTSUP);
    cr_assert_null(server);
    test_loop_free(loop);
}

/* A listening SOCKET the program made itself (as a Python program or a
 * service manager hands one over): pact accepts on it with AcceptEx, the
 * factory sees each connection, and the server closes it at the end. */
static int accepting_seen;

static int adopt_factory(pact_server *server, void *factory_user,
                         const pact_protocol **p, void **user)
{
    pact_transport *t = pact_server_accepting(server);
    cr_assert_not_null(t, "the factory does not see the connection");
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    cr_assert_eq(pact_transport_peername(t, &ss, &len), 0);
    cr_assert_eq(ss.ss_family, AF_INET);
    accepting_seen++;
    return factory(server, factory_user, p, user);
}

Test(server, adopt_a_listening_socket_the_program_made)
{
    static world w;
    memset(&w, 0, sizeof w);
    the_world = NULL;
    accepting_seen = 0;
    test_winsock();
    SOCKET l = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                          WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    cr_assert_neq(l, INVALID_SOCKET);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(l, 16), 0);
    int port = pact_socket_port((int)l);
    cr_assert_gt(port, 0);
    pact_loop *loop = test_loop_new();
    pact_server *server = NULL;
    cr_assert_eq(pact_server_adopt(loop, l, NULL, adopt_factory, &w, &server), 0);
    cr_assert_eq(pact_server_port(server), port);
    cr_assert_null(pact_server_accepting(server));
    static conn client;
    memset(&client, 0, sizeof client);
    client.pattern_ok = 1;
    SOCKET s = connect_to(port);
    pact_transport *t = NULL;
    cr_assert_eq(pact_transport_open(loop, (int)s, PACT_STREAM_SOCKET, &proto,
                                     &client, &t), 0);
    run_until(loop, &client.made, 5000);
    write_pattern(t, 4096);
    uint64_t end = pact_now() + 10000 * MS;
    while (client.received < 4096) {
        cr_assert(pact_now() < end, "echo incomplete: %llu",
                  (unsigned long long)client.received);
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    }
    cr_assert(client.pattern_ok);
    cr_assert_eq(accepting_seen, 1);
    cr_assert_eq(w.nserved, 1);
    cr_assert_eq(pact_server_wait_closed(server, on_wait_closed, &w), 0);
    cr_assert_eq(pact_server_close(server), 0);
    cr_assert_eq(pact_transport_close(t), 0);
    run_until(loop, &w.closed, 10000);
    run_until(loop, &client.lost, 5000);
    /* The server closed the adopted socket: nobody listens there. */
    SOCKET s2 = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    a.sin_port = htons((u_short)port);
    cr_assert_neq(connect(s2, (struct sockaddr *)&a, sizeof a), 0);
    closesocket(s2);
    /* Not listening: refused, and closed. */
    SOCKET u = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    cr_assert_eq(pact_server_adopt(loop, u, NULL, factory, &w, &server), -EINVAL);
    test_loop_free(loop);
}
