/* SPDX-License-Identifier: MIT */
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
 *                      [--threads N]   (N loops, one per thread)
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pact.h>

/* One loop per thread, each with its own listener on the same port
 * (SO_REUSEPORT): the kernel spreads connections over the threads, so the
 * server uses every core with no locking between loops. */
typedef struct worker {
    pact_loop *loop;
    pact_server *server;
    pthread_t thread;
    unsigned long connections;
    int stopping;
} worker;

static worker *workers;
static int nworkers = 1;

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
    worker *w = user;
    w->connections++;
    *proto = &echo_protocol;
    *proto_user = NULL;
    return 0;
}

static void on_closed(pact_loop *loop, void *user)
{
    (void)user;
    pact_loop_stop(loop);
}

/* Runs on each worker's own loop thread (scheduled thread-safely). */
static void worker_stop(pact_loop *loop, void *user)
{
    (void)loop;
    worker *w = user;
    if (w->stopping)
        return;
    w->stopping = 1;
    pact_server_wait_closed(w->server, on_closed, w);
    pact_server_close(w->server);
}

static void on_signal(pact_loop *loop, int signo, void *user)
{
    (void)loop;
    (void)user;
    static int signalled;
    if (signalled++)
        return; /* the workers may be gone already */
    fprintf(stderr, "echo-server: %s, closing\n", strsignal(signo));
    for (int i = 0; i < nworkers; i++)
        pact_call_soon_threadsafe(workers[i].loop, worker_stop, &workers[i]);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pact_loop_run(w->loop);
    /* A loop is closed by the thread that ran it. */
    pact_loop_free(w->loop);
    return NULL;
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
        {"reuse-port", no_argument, 0, 'r'},   {"threads", required_argument, 0, 't'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "p:h:u:e:rt:", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': port = atoi(optarg); break;
        case 'h': host = optarg; break;
        case 'u': unix_path = optarg; break;
        case 'r': reuse_port = 1; break;
        case 't': nworkers = atoi(optarg); break;
        case 'e':
            opts.engine = strcmp(optarg, "uring") == 0   ? PACT_ENGINE_URING
                          : strcmp(optarg, "epoll") == 0 ? PACT_ENGINE_EPOLL
                                                         : PACT_ENGINE_AUTO;
            break;
        default:
            fprintf(stderr, "usage: %s [--port P] [--host ADDR] [--unix PATH] "
                            "[--engine auto|uring|epoll] [--reuse-port] "
                            "[--threads N]\n", argv[0]);
            return 2;
        }
    }

    if (nworkers < 1 || (unix_path && nworkers > 1)) {
        fprintf(stderr, "echo-server: --threads needs N >= 1 (and TCP)\n");
        return 2;
    }
    /* Only the main loop takes SIGINT/SIGTERM: block them before any
     * worker thread exists, so the workers inherit the blocked mask. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    workers = calloc((size_t)nworkers, sizeof *workers);
    pact_server_options sopts = {.size = sizeof sopts,
                                 .reuse_port = nworkers > 1 || reuse_port,
                                 .backlog = 4096};
    for (int i = 0; i < nworkers; i++) {
        worker *w = &workers[i];
        int r = pact_loop_create(&w->loop, &opts);
        if (r < 0) {
            fprintf(stderr, "echo-server: loop: %s\n", pact_strerror(r));
            return 1;
        }
        r = unix_path ? pact_server_listen_unix(w->loop, unix_path, &sopts,
                                                echo_factory, w, &w->server)
                      : pact_server_listen_tcp(w->loop, host, (uint16_t)port,
                                               &sopts, echo_factory, w, &w->server);
        if (r < 0) {
            fprintf(stderr, "echo-server: listen: %s\n", pact_strerror(r));
            return 1;
        }
        if (i == 0 && port == 0 && !unix_path)
            port = pact_server_port(w->server); /* the others join it */
    }
    pact_loop *main_loop = workers[0].loop;
    pact_signal_add(main_loop, SIGINT, on_signal, NULL);
    pact_signal_add(main_loop, SIGTERM, on_signal, NULL);
    if (unix_path)
        fprintf(stderr, "echo-server: listening on %s (%s)\n", unix_path,
                pact_loop_engine_name(main_loop));
    else
        fprintf(stderr, "echo-server: listening on %s:%d (%s, %d thread(s))\n",
                host, port, pact_loop_engine_name(main_loop), nworkers);
    if (pact_loop_engine_reason(main_loop))
        fprintf(stderr, "echo-server: not on io_uring: %s\n",
                pact_loop_engine_reason(main_loop));
    for (int i = 1; i < nworkers; i++)
        pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
    /* The signal handlers alone do not keep a loop running: run until the
     * server has closed (worker_stop stops the loop then). */
    while (!workers[0].stopping || pact_loop_alive(main_loop))
        if (pact_loop_run(main_loop) < 0)
            break;
    unsigned long total = workers[0].connections;
    for (int i = 1; i < nworkers; i++) {
        pthread_join(workers[i].thread, NULL);
        total += workers[i].connections;
    }
    pact_loop_free(main_loop);
    fprintf(stderr, "echo-server: closed after %lu connection(s)\n", total);
    free(workers);
    return 0;
}
