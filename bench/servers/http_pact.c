/* SPDX-License-Identifier: MIT */
/* HTTP/1.1 keep-alive hello-world on pact transports, written as a pact
 * user would: pact_server_listen_tcp, data_received frames the requests
 * (http_parse.h) and answers each with pact_transport_write() of a
 * constant response. Requests are parsed where they arrive (the loop's
 * receive buffer); only an incomplete request is copied, into a
 * per-connection buffer allocated the first time one is needed. Flow
 * control as in the echo server: pause reading while the write buffer is
 * above its high mark. TCP_NODELAY is pact_server_listen_tcp()'s (every
 * connection it accepts has it), not set a second time here.
 *
 * usage: http_pact PORT [--engine uring|epoll]
 */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "http_parse.h"
#include "pact.h"

#define HELD_CAP (HTTP_MAX_HEAD + HTTP_MAX_BODY)

typedef struct http_conn {
    char *held; /* start of an incomplete request, HELD_CAP bytes */
    size_t held_len;
} http_conn;

static int answer(pact_transport *t, unsigned answers, int bad)
{
    if (answers == 1 && !bad)
        return pact_transport_write(t, HTTP_RESPONSE, HTTP_RESPONSE_LEN);
    unsigned long long owed = (unsigned long long)answers * HTTP_RESPONSE_LEN;
    for (unsigned long long sent = 0; sent < owed;) {
        size_t len;
        const char *p = http_batch_piece(sent, owed, &len);
        int r = pact_transport_write(t, p, len);
        if (r < 0)
            return r;
        sent += len;
    }
    if (bad)
        return pact_transport_write(t, HTTP_BAD_REQUEST, HTTP_BAD_REQUEST_LEN);
    return 0;
}

static void http_data(pact_transport *t, const void *data, size_t len,
                      void *user)
{
    http_conn *c = user;
    const char *in = data;
    while (len) {
        const char *p;
        size_t n;
        if (c->held_len) { /* the rest of a request that came in pieces */
            size_t room = HELD_CAP - c->held_len;
            size_t take = len < room ? len : room;
            memcpy(c->held + c->held_len, in, take);
            c->held_len += take;
            in += take;
            len -= take;
            p = c->held;
            n = c->held_len;
        } else { /* the common case: parsed where it arrived */
            p = in;
            n = len;
            in += len;
            len = 0;
        }
        unsigned answers;
        int close_after, bad;
        size_t used = http_frame(p, n, &answers, &close_after, &bad);
        if ((answers || bad) && answer(t, answers, bad) < 0) {
            pact_transport_abort(t);
            return;
        }
        if (close_after) {
            pact_transport_close(t);
            return;
        }
        /* An incomplete request is shorter than HELD_CAP (framing refuses
         * longer ones), so a full held buffer always makes progress. */
        size_t rest = n - used;
        if (rest && !c->held) {
            c->held = malloc(HELD_CAP);
            if (!c->held) {
                pact_transport_abort(t);
                return;
            }
        }
        if (rest)
            memmove(c->held, p + used, rest);
        c->held_len = rest;
    }
}

static void http_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    http_conn *c = user;
    free(c->held);
    free(c);
}

static void http_pause_writing(pact_transport *t, void *user)
{
    (void)user;
    pact_transport_pause_reading(t);
}

static void http_resume_writing(pact_transport *t, void *user)
{
    (void)user;
    pact_transport_resume_reading(t);
}

static const pact_protocol http_proto = {
    .data_received = http_data,
    .connection_lost = http_lost,
    .pause_writing = http_pause_writing,
    .resume_writing = http_resume_writing,
};

static int factory(pact_server *server, void *factory_user,
                   const pact_protocol **proto, void **user)
{
    (void)server;
    (void)factory_user;
    http_conn *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    *proto = &http_proto;
    *user = c;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: http_pact PORT [--engine uring|epoll]\n");
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
    http_batch_init();

    pact_loop *loop;
    int r = pact_loop_create(&loop, &opts);
    if (r < 0) {
        fprintf(stderr, "http_pact: loop: %s\n", pact_strerror(r));
        return 1;
    }
    pact_server_options so = {.size = sizeof so, .backlog = 4096};
    pact_server *srv;
    r = pact_server_listen_tcp(loop, "127.0.0.1", (uint16_t)atoi(argv[1]), &so,
                               factory, NULL, &srv);
    if (r < 0) {
        fprintf(stderr, "http_pact: listen: %s\n", pact_strerror(r));
        return 1;
    }
    fprintf(stderr, "http_pact: ready features=pact-stream-%s-%s\n",
            pact_loop_engine_name(loop), pact_loop_recv_multishot_mode(loop));
    r = pact_loop_run(loop); /* SIGTERM ends the process */
    pact_loop_free(loop);
    return r < 0;
}
