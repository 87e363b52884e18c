/* SPDX-License-Identifier: MIT */
/* HTTP/1.1 keep-alive hello-world on raw liburing, best practice (the ring
 * set up as in raw_uring.c, uring_common.h): one multishot accept, one
 * multishot recv per connection on a provided buffer ring of small hot
 * buffers, requests framed in the provided buffer (http_parse.h) which
 * goes straight back to the ring, and answers sent from a static buffer of
 * repeated responses: a connection owes only a byte count, so nothing is
 * ever copied except an incomplete request. One send in flight per
 * connection; one io_uring_submit_and_wait() per loop iteration.
 *
 * usage: http_raw_uring PORT
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_parse.h"
#include "uring_common.h"

#define NBUF 1024   /* power of two */
#define BUFSZ 4096  /* requests are ~100 bytes */
#define BGID 1
#define MAXFD 65536
#define HELD_CAP (HTTP_MAX_HEAD + HTTP_MAX_BODY)

enum { T_ACCEPT = 1, T_RECV, T_SEND, T_CLOSE };
#define UD(t, fd) (((uint64_t)(t) << 32) | (uint32_t)(fd))

typedef struct conn {
    uint8_t open, recv_armed, send_busy, dead, close_after, bad;
    unsigned long long owed, sent; /* answer-stream bytes */
    size_t bad_sent;
    char *held; /* an incomplete request, HELD_CAP bytes */
    size_t held_len;
} conn;

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static int recycled;
static conn conns[MAXFD];
static int starved[MAXFD], nstarved;
static int listen_fd;
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (!sqe) {
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

static void arm_accept(void)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(T_ACCEPT, listen_fd));
}

static void arm_recv(int fd)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, UD(T_RECV, fd));
    conns[fd].recv_armed = 1;
}

static void recycle(uint16_t b)
{
    io_uring_buf_ring_add(br, bufs + (size_t)b * BUFSZ, BUFSZ, b,
                          io_uring_buf_ring_mask(NBUF), recycled++);
}

/* Closes once neither a recv nor a send is in flight (so no completion can
 * arrive for a reused fd number). */
static void maybe_close(int fd)
{
    conn *c = &conns[fd];
    if (c->recv_armed || c->send_busy || !c->open)
        return;
    free(c->held);
    c->held = NULL;
    c->open = 0;
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data64(sqe, UD(T_CLOSE, fd));
}

static void kill_conn(int fd)
{
    conn *c = &conns[fd];
    c->dead = 1;
    if (c->recv_armed)
        shutdown(fd, SHUT_RDWR); /* ends the multishot recv */
    maybe_close(fd);
}

/* Starts the next send of what is owed, if none is in flight. */
static void send_next(int fd)
{
    conn *c = &conns[fd];
    if (c->send_busy || c->dead)
        return;
    const char *p;
    size_t len;
    if (c->sent < c->owed) {
        p = http_batch_piece(c->sent, c->owed, &len);
    } else if (c->bad && c->bad_sent < HTTP_BAD_REQUEST_LEN) {
        p = HTTP_BAD_REQUEST + c->bad_sent;
        len = HTTP_BAD_REQUEST_LEN - c->bad_sent;
    } else {
        c->owed = c->sent = 0;
        if (c->close_after)
            kill_conn(fd);
        return;
    }
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, fd, p, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(T_SEND, fd));
    c->send_busy = 1;
}

/* Frames p[0, n), adds the answers to what is owed, keeps the rest.
 * Returns -1 when the connection must die. */
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
    c->bad = (uint8_t)bad;
    c->close_after = (uint8_t)close_after;
    return 0;
}

static void on_data(int fd, const char *in, size_t len)
{
    conn *c = &conns[fd];
    while (len && !c->close_after) {
        int r;
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
        if (r < 0) {
            kill_conn(fd);
            return;
        }
    }
    send_next(fd);
}

static void on_cqe(struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    int type = (int)(ud >> 32), fd = (int)(uint32_t)ud;
    int res = cqe->res;
    conn *c = &conns[fd];

    switch (type) {
    case T_ACCEPT:
        if (res >= 0) {
            if (res >= MAXFD) {
                close(res);
            } else {
                int one = 1;
                setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                conns[res] = (conn){.open = 1};
                arm_recv(res);
            }
        }
        if (!(cqe->flags & IORING_CQE_F_MORE) && !stop)
            arm_accept();
        break;
    case T_RECV:
        if (res > 0) {
            uint16_t b = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            if (!c->dead)
                on_data(fd, bufs + (size_t)b * BUFSZ, (size_t)res);
            recycle(b); /* framed: the answers do not point into it */
        }
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
            c->recv_armed = 0;
            if (res == -ENOBUFS && !c->dead)
                starved[nstarved++] = fd; /* re-armed once buffers return */
            else if (res > 0 && !c->dead)
                arm_recv(fd);
            else
                kill_conn(fd);
        }
        break;
    case T_SEND:
        c->send_busy = 0;
        if (res < 0) {
            kill_conn(fd);
            break;
        }
        if (c->sent < c->owed)
            c->sent += (unsigned long long)res;
        else
            c->bad_sent += (size_t)res;
        if (c->dead)
            maybe_close(fd);
        else
            send_next(fd);
        break;
    case T_CLOSE:
        break;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: http_raw_uring PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    http_batch_init();

    char feat[256];
    int r = uring_setup(&ring, feat, sizeof feat);
    if (r < 0) {
        fprintf(stderr, "http_raw_uring: io_uring setup: %s\n", strerror(-r));
        return 1;
    }
    br = uring_setup_buf_ring(&ring, NBUF, BUFSZ, BGID, &bufs);
    if (!br) {
        fprintf(stderr, "http_raw_uring: provided buffer ring: %s\n",
                strerror(errno));
        return 1;
    }
    strcat(feat, ",multishot-accept,multishot-recv,buf-ring");

    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(listen_fd, 4096) < 0) {
        perror("http_raw_uring: bind/listen");
        return 1;
    }
    arm_accept();
    fprintf(stderr, "http_raw_uring: ready features=%s\n", feat);

    while (!stop) {
        r = io_uring_submit_and_wait(&ring, 1);
        if (r < 0 && r != -EINTR && r != -ETIME && r != -EAGAIN &&
            r != -EBUSY) {
            fprintf(stderr, "http_raw_uring: submit_and_wait: %s\n",
                    strerror(-r));
            return 1;
        }
        unsigned head, n = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(&ring, head, cqe)
        {
            on_cqe(cqe);
            n++;
        }
        io_uring_cq_advance(&ring, n);
        if (recycled) {
            io_uring_buf_ring_advance(br, recycled);
            recycled = 0;
            while (nstarved) {
                int fd = starved[--nstarved];
                if (conns[fd].open && !conns[fd].dead)
                    arm_recv(fd);
            }
        }
    }
    return 0;
}
