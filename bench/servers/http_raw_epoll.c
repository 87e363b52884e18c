/* SPDX-License-Identifier: MIT */
/* HTTP/1.1 keep-alive hello-world on raw edge-triggered epoll: the floor
 * for the wrk scenario. Each socket is registered once (EPOLLIN | EPOLLOUT
 * | EPOLLRDHUP | EPOLLET) and read until EAGAIN into one shared buffer;
 * requests are framed there (http_parse.h) and answered inline with
 * send(2) from a static buffer of repeated responses. What a short send
 * leaves is only a byte count (the answers are all the same bytes), and
 * reading stops until it is out. Only an incomplete request is copied,
 * into a per-connection buffer allocated when first needed.
 *
 * usage: http_raw_epoll PORT
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_parse.h"

#define RBUF (64 * 1024)
#define HELD_CAP (HTTP_MAX_HEAD + HTTP_MAX_BODY)

typedef struct conn {
    int fd;
    int close_after; /* once everything owed is out */
    unsigned long long owed, sent; /* answer-stream bytes */
    size_t bad_sent;               /* of the 400, when owed after them */
    int bad;
    char *held; /* an incomplete request, HELD_CAP bytes */
    size_t held_len;
} conn;

static int listen_fd, ep;
static char rbuf[RBUF];
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void conn_close(conn *c)
{
    close(c->fd);
    free(c->held);
    free(c);
}

/* Sends what is owed. Returns 1 when all is out, 0 when the socket is
 * full, -1 on error. */
static int flush(conn *c)
{
    while (c->sent < c->owed) {
        size_t len;
        const char *p = http_batch_piece(c->sent, c->owed, &len);
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        c->sent += (unsigned long long)n;
    }
    while (c->bad && c->bad_sent < HTTP_BAD_REQUEST_LEN) {
        ssize_t n = send(c->fd, HTTP_BAD_REQUEST + c->bad_sent,
                         HTTP_BAD_REQUEST_LEN - c->bad_sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        c->bad_sent += (size_t)n;
    }
    c->owed = c->sent = 0;
    return 1;
}

/* Frames p[0, n) and sends the answers. Returns -1 to close, 0 when the
 * socket is full (reading stops), 1 to go on reading. */
static int serve(conn *c, const char *p, size_t n)
{
    unsigned answers;
    int close_after, bad;
    size_t used = http_frame(p, n, &answers, &close_after, &bad);
    size_t rest = n - used;
    if (rest) {
        if (!c->held && !(c->held = malloc(HELD_CAP)))
            return -1;
        memmove(c->held, p + used, rest);
    }
    c->held_len = rest;
    c->owed += (unsigned long long)answers * HTTP_RESPONSE_LEN;
    c->bad = bad;
    c->close_after = close_after;
    int r = flush(c);
    if (r == 1 && close_after)
        return -1;
    return r;
}

static void on_conn(conn *c, uint32_t events)
{
    if (c->owed || c->bad) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int r = flush(c);
        if (r < 0 || (r == 1 && c->close_after)) {
            conn_close(c);
            return;
        }
        if (r == 0)
            return;
    }
    /* Edge-triggered: read until EAGAIN (or until sending blocks). */
    for (;;) {
        ssize_t n = recv(c->fd, rbuf, RBUF, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                conn_close(c);
            return;
        }
        if (n == 0) {
            conn_close(c);
            return;
        }
        const char *in = rbuf;
        size_t len = (size_t)n;
        int r = 1;
        while (len && r == 1) {
            if (c->held_len) {
                size_t room = HELD_CAP - c->held_len;
                size_t take = len < room ? len : room;
                memcpy(c->held + c->held_len, in, take);
                c->held_len += take;
                in += take;
                len -= take;
                r = serve(c, c->held, c->held_len);
            } else {
                r = serve(c, in, len);
                len = 0;
            }
        }
        if (r < 0) {
            conn_close(c);
            return;
        }
        if (r == 0) {
            /* Blocked with bytes of this read unframed: keep them as held
             * (they fit: the held buffer was just drained below them). */
            if (len) {
                if (!c->held && !(c->held = malloc(HELD_CAP))) {
                    conn_close(c);
                    return;
                }
                size_t room = HELD_CAP - c->held_len;
                if (len > room) { /* a pipeline deeper than we buffer */
                    conn_close(c);
                    return;
                }
                memcpy(c->held + c->held_len, in, len);
                c->held_len += len;
            }
            return; /* resume on EPOLLOUT */
        }
        if ((size_t)n < RBUF)
            return; /* short read: the socket is drained (saves a recv) */
    }
}

static void on_accept(void)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN, or EMFILE: try again on the next edge */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        struct epoll_event ev = {
            .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            conn_close(c);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: http_raw_epoll PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    http_batch_init();

    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(listen_fd, 4096) < 0) {
        perror("http_raw_epoll: bind/listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &lev);
    fprintf(stderr, "http_raw_epoll: ready features=epoll-et\n");

    struct epoll_event evs[512];
    while (!stop) {
        int n = epoll_wait(ep, evs, 512, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (!evs[i].data.ptr)
                on_accept();
            else
                on_conn(evs[i].data.ptr, evs[i].events);
        }
    }
    return 0;
}
