/* SPDX-License-Identifier: MIT */
/* pact echo server on the operation API: one pact_accept at a time on the
 * listener; per connection a recv into the connection's buffer, then
 * pact_send_all of what came in, then the next recv. Kept small on purpose:
 * it will move to the stream/transport API once that lands.
 *
 * usage: pact_echo PORT [--engine uring|epoll]
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pact.h"

#define BUF (16 * 1024)

typedef struct conn {
    int fd;
    char buf[BUF];
} conn;

static int listen_fd;

static void on_recv(pact_loop *loop, const pact_completion *c, void *user);

static void conn_close(conn *cn)
{
    close(cn->fd);
    free(cn);
}

static void on_sent(pact_loop *loop, const pact_completion *c, void *user)
{
    conn *cn = user;
    if (c->result < 0 ||
        pact_recv(loop, cn->fd, cn->buf, BUF, 0, on_recv, cn) < 0)
        conn_close(cn);
}

static void on_recv(pact_loop *loop, const pact_completion *c, void *user)
{
    conn *cn = user;
    if (c->result <= 0 ||
        pact_send_all(loop, cn->fd, cn->buf, (size_t)c->result, 0, on_sent,
                      cn) < 0)
        conn_close(cn);
}

static void on_accept(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)user;
    if (c->result >= 0) {
        int fd = (int)c->result, one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *cn = malloc(sizeof *cn);
        cn->fd = fd;
        if (pact_recv(loop, fd, cn->buf, BUF, 0, on_recv, cn) < 0)
            conn_close(cn);
    }
    if (pact_accept(loop, listen_fd, on_accept, NULL) < 0)
        pact_loop_stop(loop);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pact_echo PORT [--engine uring|epoll]\n");
        return 2;
    }
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    opts.engine = PACT_ENGINE_URING;
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], "--engine") == 0)
            opts.engine = strcmp(argv[i + 1], "epoll") == 0 ? PACT_ENGINE_EPOLL
                                                            : PACT_ENGINE_URING;
    signal(SIGPIPE, SIG_IGN);

    pact_loop *loop;
    int r = pact_loop_create(&loop, &opts);
    if (r < 0) {
        fprintf(stderr, "pact_echo: loop: %s\n", pact_strerror(r));
        return 1;
    }
    listen_fd = pact_tcp_listen("127.0.0.1", (uint16_t)atoi(argv[1]), 4096);
    if (listen_fd < 0) {
        fprintf(stderr, "pact_echo: listen: %s\n", pact_strerror(listen_fd));
        return 1;
    }
    pact_accept(loop, listen_fd, on_accept, NULL);
    fprintf(stderr, "pact_echo: ready features=pact-%s\n",
            pact_loop_engine_name(loop));
    r = pact_loop_run(loop); /* SIGTERM ends the process */
    pact_loop_free(loop);
    return r < 0;
}
