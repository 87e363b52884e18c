/* SPDX-License-Identifier: MIT */
/*
 * echo-client: opens N connections to an echo server and plays ping-pong
 * with M-byte messages for S seconds, checking every echoed byte. Prints
 * requests per second; exits non-zero if a byte came back wrong.
 *
 *   usage: echo-client [--host ADDR] [--port P] [--unix PATH]
 *                      [--connections N] [--size BYTES] [--seconds S]
 *                      [--engine auto|uring|epoll]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pact.h>

typedef struct client {
    struct run *run;
    pact_transport *t;
    unsigned char *expect; /* the message in flight */
    size_t got;            /* bytes of it echoed so far */
    unsigned long seq;
} client;

typedef struct run {
    size_t size;
    int connections, connected, lost;
    unsigned long requests, mismatches;
    int stopping;
    client *clients;
} run;

static void fill_message(client *c)
{
    for (size_t i = 0; i < c->run->size; i++)
        c->expect[i] = (unsigned char)(c->seq * 131 + i * 7 + (size_t)c);
    c->got = 0;
}

static void send_next(client *c)
{
    fill_message(c);
    pact_transport_write(c->t, c->expect, c->run->size);
}

static void on_made(pact_transport *t, void *user)
{
    client *c = user;
    c->t = t;
    c->run->connected++;
    send_next(c);
}

static void on_data(pact_transport *t, const void *data, size_t len, void *user)
{
    client *c = user;
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        if (c->got >= c->run->size || p[i] != c->expect[c->got])
            c->run->mismatches++;
        c->got++;
    }
    if (c->got < c->run->size)
        return; /* the rest of this message is still coming */
    c->run->requests++;
    c->seq++;
    if (c->run->stopping)
        pact_transport_close(t);
    else
        send_next(c);
}

static void on_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    client *c = user;
    if (err && !c->run->stopping)
        fprintf(stderr, "echo-client: connection lost: %s\n", pact_strerror(err));
    c->run->lost++;
    c->t = NULL;
}

static const pact_protocol client_protocol = {
    .connection_made = on_made,
    .data_received = on_data,
    .connection_lost = on_lost,
};

static void on_connected(pact_loop *loop, pact_transport *t, int err, void *user)
{
    (void)t;
    client *c = user;
    if (err) {
        const char *why = pact_connect_error_message(loop);
        fprintf(stderr, "echo-client: %s\n", why ? why : pact_strerror(err));
        c->run->lost++;
    }
}

static void on_deadline(pact_loop *loop, void *user)
{
    (void)loop;
    run *r = user;
    r->stopping = 1; /* each client closes after its current message */
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *unix_path = NULL;
    int port = 7000;
    double seconds = 2;
    run r = {.size = 64, .connections = 50};
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'h'},        {"port", required_argument, 0, 'p'},
        {"unix", required_argument, 0, 'u'},        {"connections", required_argument, 0, 'c'},
        {"size", required_argument, 0, 's'},        {"seconds", required_argument, 0, 't'},
        {"engine", required_argument, 0, 'e'},      {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "h:p:u:c:s:t:e:", longopts, NULL)) != -1) {
        switch (o) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'u': unix_path = optarg; break;
        case 'c': r.connections = atoi(optarg); break;
        case 's': r.size = (size_t)atol(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'e':
            opts.engine = strcmp(optarg, "uring") == 0   ? PACT_ENGINE_URING
                          : strcmp(optarg, "epoll") == 0 ? PACT_ENGINE_EPOLL
                                                         : PACT_ENGINE_AUTO;
            break;
        default:
            fprintf(stderr, "usage: %s [--host H] [--port P] [--unix PATH] "
                            "[--connections N] [--size B] [--seconds S] "
                            "[--engine auto|uring|epoll]\n", argv[0]);
            return 2;
        }
    }
    if (r.connections < 1 || r.size < 1) {
        fprintf(stderr, "echo-client: need at least 1 connection and 1 byte\n");
        return 2;
    }
    pact_loop *loop;
    int err = pact_loop_create(&loop, &opts);
    if (err < 0) {
        fprintf(stderr, "echo-client: loop: %s\n", pact_strerror(err));
        return 1;
    }
    r.clients = calloc((size_t)r.connections, sizeof *r.clients);
    for (int i = 0; i < r.connections; i++) {
        client *c = &r.clients[i];
        c->run = &r;
        c->expect = malloc(r.size);
        pact_op op = unix_path
                         ? pact_connect_unix(loop, unix_path, &client_protocol, c,
                                             on_connected, c)
                         : pact_connect_tcp(loop, host, (uint16_t)port,
                                            &client_protocol, c, on_connected, c);
        if (op < 0) {
            fprintf(stderr, "echo-client: connect: %s\n", pact_strerror((int)op));
            return 1;
        }
    }
    uint64_t start = pact_now();
    pact_call_later(loop, (uint64_t)(seconds * 1e9), on_deadline, &r);
    pact_loop_run(loop);
    double elapsed = (double)(pact_now() - start) / 1e9;
    printf("echo-client: %s, %d connection(s), %zu-byte messages: %lu requests "
           "in %.2f s = %.0f req/s, %lu byte(s) wrong\n",
           pact_loop_engine_name(loop), r.connected, r.size, r.requests, elapsed,
           (double)r.requests / elapsed, r.mismatches);
    pact_loop_free(loop);
    for (int i = 0; i < r.connections; i++)
        free(r.clients[i].expect);
    free(r.clients);
    return r.mismatches || r.connected != r.connections ? 1 : 0;
}
