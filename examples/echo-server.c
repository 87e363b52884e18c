/*
 * echo-server: a TCP or Unix echo server on pact's transports.
 *
 * Each connection gets the echo protocol: whatever arrives is written back.
 * Flow control is the classic proxy rule — when the write buffer passes the
 * high mark (the client does not read fast enough), stop reading until it
 * drains — so one slow client cannot make the server buffer without limit.
 * SIGINT or SIGTERM closes the server, waits for the connections to end,
 * then closes the loop.
 *
 *   usage: echo-server [--port P] [--host ADDR] [--unix PATH]
 *                      [--engine auto|uring|epoll] [--reuse-port]
 */
#include <getopt.h>
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

static void echo_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)user;
    pact_transport_write(t, data, len);
}

/* The peer can't read fast enough: stop reading from it until it can. */
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
    .data_received = echo_data,
    .pause_writing = echo_pause_writing,
    .resume_writing = echo_resume_writing,
    /* eof_received NULL: close our side when the peer closes its side. */
};

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
    fprintf(stderr, "echo-server: closed after %lu connection(s)\n",
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
    fprintf(stderr, "echo-server: %s, closing\n", strsignal(signo));
    pact_server_wait_closed(st->server, on_closed, st);
    pact_server_close(st->server);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *unix_path = NULL;
    int port = 7000, reuse_port = 0;
    pact_loop_options opts;
    pact_loop_options_init(&opts);

    static const struct option longopts[] = {
        {"port", required_argument, 0, 'p'},   {"host", required_argument, 0, 'h'},
        {"unix", required_argument, 0, 'u'},   {"engine", required_argument, 0, 'e'},
        {"reuse-port", no_argument, 0, 'r'},   {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "p:h:u:e:r", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': port = atoi(optarg); break;
        case 'h': host = optarg; break;
        case 'u': unix_path = optarg; break;
        case 'r': reuse_port = 1; break;
        case 'e':
            opts.engine = strcmp(optarg, "uring") == 0   ? PACT_ENGINE_URING
                          : strcmp(optarg, "epoll") == 0 ? PACT_ENGINE_EPOLL
                                                         : PACT_ENGINE_AUTO;
            break;
        default:
            fprintf(stderr, "usage: %s [--port P] [--host ADDR] [--unix PATH] "
                            "[--engine auto|uring|epoll] [--reuse-port]\n", argv[0]);
            return 2;
        }
    }

    pact_loop *loop;
    int r = pact_loop_create(&loop, &opts);
    if (r < 0) {
        fprintf(stderr, "echo-server: loop: %s\n", pact_strerror(r));
        return 1;
    }
    server_state st = {0};
    pact_server_options sopts = {.reuse_port = reuse_port, .backlog = 4096};
    r = unix_path ? pact_server_listen_unix(loop, unix_path, &sopts, echo_factory,
                                            &st, &st.server)
                  : pact_server_listen_tcp(loop, host, (uint16_t)port, &sopts,
                                           echo_factory, &st, &st.server);
    if (r < 0) {
        fprintf(stderr, "echo-server: listen: %s\n", pact_strerror(r));
        pact_loop_free(loop);
        return 1;
    }
    pact_signal_add(loop, SIGINT, on_signal, &st);
    pact_signal_add(loop, SIGTERM, on_signal, &st);
    if (unix_path)
        fprintf(stderr, "echo-server: listening on %s (%s)\n", unix_path,
                pact_loop_engine_name(loop));
    else
        fprintf(stderr, "echo-server: listening on %s:%d (%s)\n", host,
                pact_server_port(st.server), pact_loop_engine_name(loop));
    if (pact_loop_engine_reason(loop))
        fprintf(stderr, "echo-server: not on io_uring: %s\n",
                pact_loop_engine_reason(loop));
    pact_loop_run(loop);
    pact_loop_free(loop);
    return 0;
}
