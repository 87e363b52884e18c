/* SPDX-License-Identifier: MIT */
/*
 * proxy: a TCP proxy that shows flow control between two transports.
 *
 * Each client accepted on --listen gets a connection to --upstream; bytes
 * from one side are written to the other. When the side we write to cannot
 * keep up (its write buffer passes the high mark, pause_writing), we stop
 * reading from the side that produces; when it drains (resume_writing), we
 * read again. So a fast sender and a slow receiver never make the proxy
 * buffer more than about one high mark per direction.
 *
 *   usage: proxy --listen PORT --upstream HOST:PORT [--engine auto|uring|epoll]
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pact.h>

/* One proxied connection: two halves, each knowing its peer. */
typedef struct half {
    pact_transport *t;
    struct half *peer;
    struct pair *pair;
} half;

typedef struct pair {
    half client, upstream;
    int lost; /* halves whose connection_lost has run */
} pair;

static const char *upstream_host;
static uint16_t upstream_port;

static void half_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    half *h = user;
    if (h->peer->t)
        pact_transport_write(h->peer->t, data, len);
}

/* Our peer's buffer is full: stop reading from the side that feeds it. */
static void half_pause_writing(pact_transport *t, void *user)
{
    (void)t;
    half *h = user;
    if (h->peer->t)
        pact_transport_pause_reading(h->peer->t);
}

static void half_resume_writing(pact_transport *t, void *user)
{
    (void)t;
    half *h = user;
    if (h->peer->t)
        pact_transport_resume_reading(h->peer->t);
}

/* One side finished sending: pass the half-close on, keep the other way. */
static int half_eof(pact_transport *t, void *user)
{
    (void)t;
    half *h = user;
    if (h->peer->t)
        pact_transport_write_eof(h->peer->t);
    return 1;
}

static void half_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    half *h = user;
    h->t = NULL;
    if (h->peer->t)
        pact_transport_close(h->peer->t); /* flushes what it still has */
    if (++h->pair->lost == 2)
        free(h->pair);
}

static const pact_protocol half_protocol = {
    .data_received = half_data,
    .eof_received = half_eof,
    .connection_lost = half_lost,
    .pause_writing = half_pause_writing,
    .resume_writing = half_resume_writing,
};

static void client_made(pact_transport *t, void *user)
{
    half *h = user;
    h->t = t;
    /* Read nothing from the client until the upstream is connected. */
    pact_transport_pause_reading(t);
}

static const pact_protocol client_protocol = {
    .connection_made = client_made,
    .data_received = half_data,
    .eof_received = half_eof,
    .connection_lost = half_lost,
    .pause_writing = half_pause_writing,
    .resume_writing = half_resume_writing,
};

static void upstream_connected(pact_loop *loop, pact_transport *t, int err,
                               void *user)
{
    pair *p = user;
    if (err) {
        const char *why = pact_connect_error_message(loop);
        fprintf(stderr, "proxy: upstream: %s\n", why ? why : pact_strerror(err));
        p->lost++; /* the upstream half never existed */
        if (p->client.t)
            pact_transport_close(p->client.t);
        return;
    }
    p->upstream.t = t;
    if (p->client.t)
        pact_transport_resume_reading(p->client.t);
    else
        pact_transport_close(t); /* the client left meanwhile */
}

static int client_factory(pact_server *server, void *user,
                          const pact_protocol **proto, void **proto_user)
{
    (void)user;
    pair *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM; /* the connection is refused */
    p->client.peer = &p->upstream;
    p->upstream.peer = &p->client;
    p->client.pair = p->upstream.pair = p;
    pact_op op = pact_connect_tcp(pact_server_loop(server), upstream_host,
                                  upstream_port, &half_protocol, &p->upstream,
                                  upstream_connected, p);
    if (op < 0) {
        free(p);
        return (int)op;
    }
    *proto = &client_protocol;
    *proto_user = &p->client;
    return 0;
}

static void on_signal(pact_loop *loop, int signo, void *user)
{
    (void)signo;
    pact_server_close(user);
    pact_loop_stop(loop);
}

int main(int argc, char **argv)
{
    int listen_port = 0;
    char *upstream = NULL;
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    static const struct option longopts[] = {
        {"listen", required_argument, 0, 'l'}, {"upstream", required_argument, 0, 'u'},
        {"engine", required_argument, 0, 'e'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "l:u:e:", longopts, NULL)) != -1) {
        switch (c) {
        case 'l': listen_port = atoi(optarg); break;
        case 'u': upstream = optarg; break;
        case 'e':
            opts.engine = strcmp(optarg, "uring") == 0   ? PACT_ENGINE_URING
                          : strcmp(optarg, "epoll") == 0 ? PACT_ENGINE_EPOLL
                                                         : PACT_ENGINE_AUTO;
            break;
        default: upstream = NULL; optind = argc; break;
        }
    }
    char *colon = upstream ? strrchr(upstream, ':') : NULL;
    if (!listen_port || !colon) {
        fprintf(stderr, "usage: %s --listen PORT --upstream HOST:PORT "
                        "[--engine auto|uring|epoll]\n", argv[0]);
        return 2;
    }
    *colon = '\0';
    upstream_host = upstream;
    upstream_port = (uint16_t)atoi(colon + 1);

    pact_loop *loop;
    int r = pact_loop_create(&loop, &opts);
    if (r < 0) {
        fprintf(stderr, "proxy: loop: %s\n", pact_strerror(r));
        return 1;
    }
    pact_server *server;
    r = pact_server_listen_tcp(loop, "127.0.0.1", (uint16_t)listen_port, NULL,
                               client_factory, NULL, &server);
    if (r < 0) {
        fprintf(stderr, "proxy: listen: %s\n", pact_strerror(r));
        return 1;
    }
    pact_signal_add(loop, SIGINT, on_signal, server);
    pact_signal_add(loop, SIGTERM, on_signal, server);
    fprintf(stderr, "proxy: 127.0.0.1:%d -> %s:%u (%s)\n", listen_port,
            upstream_host, upstream_port, pact_loop_engine_name(loop));
    pact_loop_run(loop);
    pact_loop_free(loop); /* closes what is still open */
    return 0;
}
