/* SPDX-License-Identifier: MIT */
/* pact echo server on the transport API, as an asyncio user would write
 * it: pact_server_listen_tcp, a protocol whose data_received writes the
 * bytes back, and flow control (pause reading while the write buffer is
 * above its high mark). Socket transports read through
 * pact_recv_multishot(), so a connection holds no receive buffer. No
 * connection_made: every connection pact_server_listen_tcp() accepts has
 * TCP_NODELAY (inherited from its listener on Linux; setting it again
 * cost a system call per connection in the churn scenario).
 *
 * The echo is pact_transport_write_received(): on io_uring the bytes are
 * sent from the loop's provided buffer they arrived in, by an SQE that
 * joins the loop's next submission (on epoll they are written at once).
 * --write copy uses pact_transport_write() instead: an inline send(2)
 * from data_received, only what the kernel does not take copied.
 *
 * usage: pact_stream_echo PORT [--engine uring|epoll] [--write received|copy]
 *                              [--recv-buffer-size BYTES] [--recv-buffer-count N]
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pact.h"

static int write_copy;

static void echo_data(pact_transport *t, const void *data, size_t len,
                      void *user)
{
    (void)user;
    int r = write_copy ? pact_transport_write(t, data, len)
                       : pact_transport_write_received(t, data, len);
    if (r < 0)
        pact_transport_abort(t);
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

static const pact_protocol echo_proto = {
    .data_received = echo_data,
    .pause_writing = echo_pause_writing,
    .resume_writing = echo_resume_writing,
};

static int factory(pact_server *server, void *factory_user,
                   const pact_protocol **proto, void **user)
{
    (void)server;
    (void)factory_user;
    *proto = &echo_proto;
    *user = NULL;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pact_stream_echo PORT [--engine uring|epoll] "
                        "[--write received|copy] [--recv-buffer-size BYTES] "
                        "[--recv-buffer-count N]\n");
        return 2;
    }
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    opts.engine = PACT_ENGINE_URING;
    for (int i = 2; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--engine") == 0)
            opts.engine = strcmp(argv[i + 1], "epoll") == 0 ? PACT_ENGINE_EPOLL
                                                            : PACT_ENGINE_URING;
        if (strcmp(argv[i], "--write") == 0)
            write_copy = strcmp(argv[i + 1], "copy") == 0;
        if (strcmp(argv[i], "--recv-buffer-size") == 0)
            opts.recv_buffer_size = (unsigned)atoi(argv[i + 1]);
        if (strcmp(argv[i], "--recv-buffer-count") == 0)
            opts.recv_buffer_count = (unsigned)atoi(argv[i + 1]);
    }
    signal(SIGPIPE, SIG_IGN);

    pact_loop *loop;
    int r = pact_loop_create(&loop, &opts);
    if (r < 0) {
        fprintf(stderr, "pact_stream_echo: loop: %s\n", pact_strerror(r));
        return 1;
    }
    pact_server_options so = {.size = sizeof so, .backlog = 4096};
    pact_server *srv;
    r = pact_server_listen_tcp(loop, "127.0.0.1", (uint16_t)atoi(argv[1]), &so,
                               factory, NULL, &srv);
    if (r < 0) {
        fprintf(stderr, "pact_stream_echo: listen: %s\n", pact_strerror(r));
        return 1;
    }
    fprintf(stderr, "pact_stream_echo: ready features=pact-stream-%s-%s,write-%s\n",
            pact_loop_engine_name(loop), pact_loop_recv_multishot_mode(loop),
            write_copy ? "copy" : "received");
    r = pact_loop_run(loop); /* SIGTERM ends the process */
    pact_loop_free(loop);
    return r < 0;
}
