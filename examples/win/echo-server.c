/* SPDX-License-Identifier: MIT */
/*
 * echo-server for Windows: a TCP echo server on pact's operations over the
 * I/O completion port (AcceptEx, WSARecv, WSASend). Whatever a connection
 * sends is written back; the next receive is started only once the echo
 * went out, so a client that does not read cannot make the server buffer
 * without limit. An accept that fails (a client that reset before it was
 * accepted, too many sockets) is reported and the next accept started:
 * one bad connection never stops the server.
 *
 * (The Linux echo-server is built on transports, which Windows does not
 * have yet; this one speaks the same protocol, so the Linux echo-client
 * drives either.)
 *
 *   usage: echo-server [--host ADDR] [--port P] [--seconds S]
 *
 * It prints "listening on ADDR:PORT"; with --seconds it stops accepting
 * after S seconds, ends its connections and prints "closed after N
 * connections".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pact.h>

typedef struct server server;

typedef struct conn {
    server *srv;
    SOCKET s;
    pact_op op; /* the receive or the echo in flight */
    struct conn *prev, *next;
    char buf[64 * 1024];
} conn;

struct server {
    pact_loop *loop;
    SOCKET listener;
    pact_op accept_op;
    conn *conns;
    unsigned long accepted, accept_errors;
    int stopping;
};

static void start_recv(conn *c);

static void conn_end(conn *c)
{
    closesocket(c->s);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

static void on_echoed(pact_loop *loop, const pact_completion *comp, void *user)
{
    (void)loop;
    conn *c = user;
    c->op = 0;
    if (comp->result < 0 || c->srv->stopping) {
        conn_end(c);
        return;
    }
    start_recv(c);
}

static void on_received(pact_loop *loop, const pact_completion *comp,
                        void *user)
{
    conn *c = user;
    c->op = 0;
    if (comp->result <= 0 || c->srv->stopping) { /* end of stream, error */
        conn_end(c);
        return;
    }
    c->op = pact_send_all(loop, c->s, c->buf, (size_t)comp->result, 0,
                          on_echoed, c);
    if (c->op < 0) {
        c->op = 0;
        conn_end(c);
    }
}

static void start_recv(conn *c)
{
    c->op = pact_recv(c->srv->loop, c->s, c->buf, sizeof c->buf, 0,
                      on_received, c);
    if (c->op < 0) {
        c->op = 0;
        conn_end(c);
    }
}

static void start_accept(server *srv);

static void on_accepted(pact_loop *loop, const pact_completion *comp,
                        void *user)
{
    (void)loop;
    server *srv = user;
    srv->accept_op = 0;
    if (comp->result >= 0) {
        SOCKET s = (SOCKET)comp->result;
        conn *c = srv->stopping ? NULL : calloc(1, sizeof *c);
        if (!c) {
            closesocket(s);
        } else {
            int one = 1;
            setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (char *)&one, sizeof one);
            c->srv = srv;
            c->s = s;
            c->next = srv->conns;
            if (srv->conns)
                srv->conns->prev = c;
            srv->conns = c;
            srv->accepted++;
            start_recv(c);
        }
    } else if (comp->result != -ECANCELED) {
        srv->accept_errors++;
        fprintf(stderr, "echo-server: accept failed: %s; accepting on\n",
                pact_strerror((int)comp->result));
    }
    if (!srv->stopping)
        start_accept(srv);
}

static void start_accept(server *srv)
{
    srv->accept_op = pact_accept(srv->loop, srv->listener, on_accepted, srv);
    if (srv->accept_op < 0) {
        fprintf(stderr, "echo-server: pact_accept: %s\n",
                pact_strerror((int)srv->accept_op));
        srv->accept_op = 0;
    }
}

static void stop(pact_loop *loop, void *user)
{
    server *srv = user;
    srv->stopping = 1;
    if (srv->accept_op)
        pact_op_cancel(loop, srv->accept_op);
    for (conn *c = srv->conns; c; c = c->next)
        if (c->op)
            pact_op_cancel(loop, c->op);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0;
    double seconds = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
            host = argv[++i];
        else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--host ADDR] [--port P] [--seconds S]\n",
                    argv[0]);
            return 2;
        }
    }
    server srv = {0};
    int r = pact_loop_create(&srv.loop, NULL);
    if (r < 0) {
        fprintf(stderr, "echo-server: pact_loop_create: %s\n", pact_strerror(r));
        return 1;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((u_short)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "echo-server: not an IPv4 address: %s\n", host);
        return 2;
    }
    srv.listener = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    int len = sizeof addr;
    if (srv.listener == INVALID_SOCKET ||
        bind(srv.listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(srv.listener, SOMAXCONN) != 0 ||
        getsockname(srv.listener, (struct sockaddr *)&addr, &len) != 0) {
        fprintf(stderr, "echo-server: cannot listen on %s:%d (%d)\n", host,
                port, WSAGetLastError());
        return 1;
    }
    printf("echo-server: listening on %s:%u (%s)\n", host,
           ntohs(addr.sin_port), pact_loop_engine_name(srv.loop));
    fflush(stdout);
    start_accept(&srv);
    if (seconds > 0)
        pact_call_later(srv.loop, (uint64_t)(seconds * 1e9), stop, &srv);
    pact_loop_run(srv.loop);
    closesocket(srv.listener);
    printf("echo-server: closed after %lu connections (%lu accept errors)\n",
           srv.accepted, srv.accept_errors);
    fflush(stdout);
    pact_loop_free(srv.loop);
    return srv.conns ? 1 : 0;
}
