/* SPDX-License-Identifier: MIT */
/*
 * tls-echo-server: a TLS echo server on pact (OpenSSL underneath).
 *
 * Each connection is served only once its handshake has completed; what
 * arrives is written back, with the proxy flow-control rule (stop reading
 * while the client does not keep up). Talk to it with openssl:
 *
 *   openssl s_client -connect 127.0.0.1:4433 -CAfile ca.pem -servername localhost
 *
 *   usage: tls-echo-server --cert FILE --key FILE [--port P] [--host ADDR]
 *                          [--alpn a,b] [--engine auto|uring|epoll]
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pact.h>

typedef struct server_state {
    pact_server *server;
    unsigned long connections;
    int stopping;
} server_state;

static void echo_made(pact_transport *t, void *user)
{
    (void)user;
    const char *alpn = pact_tls_alpn(t);
    fprintf(stderr, "tls-echo-server: %s %s%s%s\n", pact_tls_version(t),
            pact_tls_cipher(t), alpn ? " alpn " : "", alpn ? alpn : "");
}

static void echo_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)user;
    pact_transport_write(t, data, len);
}

static void echo_lost(pact_transport *t, int err, void *user)
{
    (void)user;
    if (err)
        fprintf(stderr, "tls-echo-server: connection lost: %s (%s)\n",
                pact_strerror(err),
                pact_tls_error_message(t) ? pact_tls_error_message(t) : "");
}

/* A client whose handshake failed never reaches the factory: say who and
 * why ("127.0.0.1:41234: protocol error (...): ... wrong version number"). */
static void handshake_failed(pact_server *server, pact_transport *t, int err,
                             void *user)
{
    (void)server;
    (void)user;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (pact_transport_peername(t, &ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    const char *why = pact_tls_error_message(t);
    fprintf(stderr, "tls-echo-server: handshake with %s:%u failed: %s%s%s\n", host,
            port, pact_strerror(err), why ? ": " : "", why ? why : "");
}

static void echo_pause_writing(pact_transport *t, void *user)
{
    (void)user;
    pact_transport_pause_reading(t);
}

static void echo_resume_writing(pact_transport *t, void *user)
{
    (void)user;
    pact_transport_resume_reading(t);
}

static const pact_protocol echo_protocol = {
    .connection_made = echo_made,
    .data_received = echo_data,
    .connection_lost = echo_lost,
    .pause_writing = echo_pause_writing,
    .resume_writing = echo_resume_writing,
    /* eof_received NULL: the client's close_notify closes our side too. */
};

/* Called after the handshake: failed handshakes never get here. */
static int echo_factory(pact_server *server, void *user,
                        const pact_protocol **proto, void **proto_user)
{
    (void)server;
    server_state *st = user;
    st->connections++;
    *proto = &echo_protocol;
    *proto_user = NULL;
    return 0;
}

static void on_closed(pact_loop *loop, void *user)
{
    server_state *st = user;
    fprintf(stderr, "tls-echo-server: closed after %lu connection(s)\n",
            st->connections);
    pact_loop_stop(loop);
}

static void on_signal(pact_loop *loop, int signo, void *user)
{
    (void)loop;
    server_state *st = user;
    if (st->stopping)
        return;
    st->stopping = 1;
    fprintf(stderr, "tls-echo-server: %s, closing\n", strsignal(signo));
    pact_server_wait_closed(st->server, on_closed, st);
    pact_server_close(st->server);
}

/* "a,b,c" -> ALPN list (modifies s). */
static size_t split_alpn(char *s, const char **out, size_t max)
{
    size_t n = 0;
    for (char *tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ","))
        out[n++] = tok;
    return n;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *cert = NULL, *key = NULL;
    char *alpn = NULL;
    int port = 4433;
    pact_loop_options opts;
    pact_loop_options_init(&opts);

    static const struct option longopts[] = {
        {"port", required_argument, 0, 'p'}, {"host", required_argument, 0, 'h'},
        {"cert", required_argument, 0, 'c'}, {"key", required_argument, 0, 'k'},
        {"alpn", required_argument, 0, 'a'}, {"engine", required_argument, 0, 'e'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "p:h:c:k:a:e:", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': port = atoi(optarg); break;
        case 'h': host = optarg; break;
        case 'c': cert = optarg; break;
        case 'k': key = optarg; break;
        case 'a': alpn = optarg; break;
        case 'e':
            opts.engine = strcmp(optarg, "uring") == 0   ? PACT_ENGINE_URING
                          : strcmp(optarg, "epoll") == 0 ? PACT_ENGINE_EPOLL
                                                         : PACT_ENGINE_AUTO;
            break;
        default:
            cert = NULL;
            optind = argc;
            break;
        }
    }
    if (!cert) {
        fprintf(stderr, "usage: %s --cert FILE --key FILE [--port P] [--host ADDR] "
                        "[--alpn a,b] [--engine auto|uring|epoll]\n", argv[0]);
        return 2;
    }

    pact_tls_context *ctx;
    int r = pact_tls_context_create(PACT_TLS_SERVER, &ctx);
    if (r < 0) {
        fprintf(stderr, "tls-echo-server: context: %s\n", pact_strerror(r));
        return 1;
    }
    r = pact_tls_context_set_certificate(ctx, cert, key);
    if (r < 0) {
        /* "key.pem: the private key does not match the certificate" */
        const char *why = pact_tls_context_error_message(ctx);
        fprintf(stderr, "tls-echo-server: %s%s%s\n", pact_strerror(r),
                why ? ": " : "", why ? why : "");
        return 1;
    }
    if (alpn) {
        const char *protos[16];
        size_t n = split_alpn(alpn, protos, 16);
        pact_tls_context_set_alpn(ctx, protos, n);
    }

    pact_loop *loop;
    r = pact_loop_create(&loop, &opts);
    if (r < 0) {
        fprintf(stderr, "tls-echo-server: loop: %s\n", pact_strerror(r));
        return 1;
    }
    server_state st = {0};
    r = pact_server_listen_tcp_tls(loop, host, (uint16_t)port, NULL, ctx,
                                   echo_factory, &st, &st.server);
    pact_tls_context_free(ctx); /* the server keeps its own reference */
    if (r < 0) {
        fprintf(stderr, "tls-echo-server: listen on %s:%d: %s\n", host, port,
                pact_strerror(r));
        pact_loop_free(loop);
        return 1;
    }
    pact_server_set_handshake_failed_cb(st.server, handshake_failed, NULL);
    pact_signal_add(loop, SIGINT, on_signal, &st);
    pact_signal_add(loop, SIGTERM, on_signal, &st);
    fprintf(stderr, "tls-echo-server: listening on %s:%d (%s)\n", host,
            pact_server_port(st.server), pact_loop_engine_name(loop));
    pact_loop_run(loop);
    pact_loop_free(loop);
    return 0;
}
