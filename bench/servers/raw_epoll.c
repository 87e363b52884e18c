/* SPDX-License-Identifier: MIT */
/* Raw edge-triggered epoll echo server: the "floor" every loop is compared
 * with. One thread. Each socket is registered once (EPOLLIN | EPOLLOUT |
 * EPOLLRDHUP | EPOLLET), so no epoll_ctl per request. Reads go into one
 * shared buffer and are written straight back; only what a short write
 * leaves over is copied into the connection, and reading stops until it
 * has drained (back-pressure).
 *
 * usage: raw_epoll PORT
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

#define BUF (64 * 1024)

typedef struct conn {
    int fd;
    char *pending; /* unsent bytes after a short write, or NULL */
    size_t pend_off, pend_len;
} conn;

static int listen_fd, ep;
static char rbuf[BUF];
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void conn_close(conn *c)
{
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Writes len bytes; keeps what does not fit. Returns -1 on error. */
static int write_out(conn *c, const char *p, size_t len)
{
    while (len) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -1;
            if (!c->pending)
                c->pending = malloc(BUF);
            memcpy(c->pending, p, len);
            c->pend_off = 0;
            c->pend_len = len;
            return 0;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Flushes pending bytes. Returns 1 when drained, 0 when still blocked,
 * -1 on error. */
static int flush_pending(conn *c)
{
    while (c->pend_len) {
        ssize_t n = send(c->fd, c->pending + c->pend_off, c->pend_len,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        c->pend_off += (size_t)n;
        c->pend_len -= (size_t)n;
    }
    return 1;
}

static void on_conn(conn *c, uint32_t events)
{
    if (c->pend_len) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int r = flush_pending(c);
        if (r < 0) {
            conn_close(c);
            return;
        }
        if (r == 0)
            return;
    }
    /* Edge-triggered: read until EAGAIN (or until writing blocks). */
    for (;;) {
        ssize_t n = recv(c->fd, rbuf, BUF, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            conn_close(c);
            return;
        }
        if (n == 0) {
            conn_close(c);
            return;
        }
        if (write_out(c, rbuf, (size_t)n) < 0) {
            conn_close(c);
            return;
        }
        if (c->pend_len)
            return; /* resume on EPOLLOUT */
        if (n < BUF)
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
        c->fd = fd;
        struct epoll_event ev = {
            .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            conn_close(c);
            continue;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: raw_epoll PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(listen_fd, 4096) < 0) {
        perror("raw_epoll: bind/listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &lev);
    fprintf(stderr, "raw_epoll: ready features=epoll-et\n");

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
