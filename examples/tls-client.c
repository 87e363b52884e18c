/* SPDX-License-Identifier: MIT */
/*
 * tls-client: a small TLS client on pact, openssl s_client's little sibling.
 *
 * Connects, verifies the server's certificate (against --ca, or the system
 * store) and its name, then copies standard input to the server and what
 * the server sends to standard output. At the end of the input it sends
 * close_notify (write_eof) and waits for the server to finish. Try it with
 *
 *   openssl s_server -accept 4433 -cert server.pem -key server.key -rev
 *   echo hello | tls-client --port 4433 --ca ca.pem --servername localhost
 *
 *   usage: tls-client [--host H] [--port P] [--ca FILE] [--servername NAME]
 *                     [--alpn a,b] [--insecure] [--engine auto|uring|epoll]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pact.h>

typedef struct client {
    pact_transport *tls, *input;
    int status;
} client;

static void tls_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    (void)user;
    fwrite(data, 1, len, stdout);
    fflush(stdout);
}

static void tls_lost(pact_transport *t, int err, void *user)
{
    client *c = user;
    if (err) {
        const char *why = pact_tls_error_message(t);
        fprintf(stderr, "tls-client: %s%s%s\n", pact_strerror(err),
                why ? ": " : "", why ? why : "");
        c->status = 1;
    }
    c->tls = NULL;
    if (c->input)
        pact_transport_close(c->input);
}

static const pact_protocol tls_protocol = {
    .data_received = tls_data,
    .connection_lost = tls_lost,
    /* eof_received NULL: the server's close_notify ends the connection. */
};

/* Standard input, forwarded to the server. */
static void input_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    client *c = user;
    if (c->tls)
        pact_transport_write(c->tls, data, len);
}

static int input_eof(pact_transport *t, void *user)
{
    (void)t;
    client *c = user;
    if (c->tls)
        pact_transport_write_eof(c->tls); /* close_notify, then FIN */
    return 0;
}

static void input_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    client *c = user;
    c->input = NULL;
}

static const pact_protocol input_protocol = {
    .data_received = input_data,
    .eof_received = input_eof,
    .connection_lost = input_lost,
};

static void connected(pact_loop *loop, pact_transport *t, int err, void *user)
{
    client *c = user;
    if (err) {
        /* The reason ("certificate verify failed: hostname mismatch") is
         * there only during this call. */
        const char *why = pact_connect_error_message(loop);
        fprintf(stderr, "tls-client: %s%s%s\n", pact_strerror(err),
                why ? ": " : "", why ? why : "");
        c->status = 1;
        return;
    }
    c->tls = t;
    const char *alpn = pact_tls_alpn(t);
    fprintf(stderr, "tls-client: %s %s%s%s\n", pact_tls_version(t),
            pact_tls_cipher(t), alpn ? " alpn " : "", alpn ? alpn : "");
    int fd = dup(0);
    if (fd < 0 || pact_transport_open(loop, fd, PACT_STREAM_READ_PIPE,
                                      &input_protocol, c, &c->input) < 0) {
        c->input = NULL;
        pact_transport_write_eof(t);
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *ca = NULL, *name = NULL;
    char *alpn = NULL;
    int port = 4433, insecure = 0;
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'h'}, {"port", required_argument, 0, 'p'},
        {"ca", required_argument, 0, 'c'},   {"servername", required_argument, 0, 'n'},
        {"alpn", required_argument, 0, 'a'}, {"insecure", no_argument, 0, 'k'},
        {"engine", required_argument, 0, 'e'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "h:p:c:n:a:ke:", longopts, NULL)) != -1) {
        switch (o) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': ca = optarg; break;
        case 'n': name = optarg; break;
        case 'a': alpn = optarg; break;
        case 'k': insecure = 1; break;
        case 'e':
            opts.engine = strcmp(optarg, "uring") == 0   ? PACT_ENGINE_URING
                          : strcmp(optarg, "epoll") == 0 ? PACT_ENGINE_EPOLL
                                                         : PACT_ENGINE_AUTO;
            break;
        default:
            fprintf(stderr, "usage: %s [--host H] [--port P] [--ca FILE] "
                            "[--servername NAME] [--alpn a,b] [--insecure] "
                            "[--engine auto|uring|epoll]\n", argv[0]);
            return 2;
        }
    }
    pact_tls_context *ctx;
    int r = pact_tls_context_create(PACT_TLS_CLIENT, &ctx);
    if (r == 0 && ca)
        r = pact_tls_context_set_ca(ctx, ca, NULL);
    if (r == 0 && insecure)
        r = pact_tls_context_set_verify(ctx, 0); /* explicit, never a default */
    if (r == 0 && alpn) {
        const char *protos[16];
        size_t n = 0;
        for (char *tok = strtok(alpn, ","); tok && n < 16; tok = strtok(NULL, ","))
            protos[n++] = tok;
        r = pact_tls_context_set_alpn(ctx, protos, n);
    }
    if (r < 0) {
        const char *why = pact_tls_context_error_message(ctx);
        fprintf(stderr, "tls-client: %s%s%s\n", pact_strerror(r),
                why ? ": " : "", why ? why : "");
        return 1;
    }
    pact_loop *loop;
    r = pact_loop_create(&loop, &opts);
    if (r < 0) {
        fprintf(stderr, "tls-client: loop: %s\n", pact_strerror(r));
        return 1;
    }
    client c = {0};
    pact_op op = pact_connect_tcp_tls(loop, host, (uint16_t)port, ctx, name,
                                      &tls_protocol, &c, connected, &c);
    pact_tls_context_free(ctx);
    if (op < 0) {
        fprintf(stderr, "tls-client: %s\n", pact_strerror((int)op));
        pact_loop_free(loop);
        return 1;
    }
    pact_loop_run(loop);
    pact_loop_free(loop);
    return c.status;
}
