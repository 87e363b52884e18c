/* SPDX-License-Identifier: MIT */
/* Raw liburing echo server written with current best practice: the
 * near-limit of what io_uring can do for this protocol.
 *
 *  - ring set up with SINGLE_ISSUER | DEFER_TASKRUN (6.1+) | SUBMIT_ALL,
 *    falling back to COOP_TASKRUN (5.19) and then to no flags on EINVAL;
 *    registered ring fd (5.18), so io_uring_enter skips the fd lookup
 *    (uring_common.h);
 *  - one multishot accept (5.19) for the listener;
 *  - one multishot recv (6.0) per connection, drawing from a provided
 *    buffer ring (5.19);
 *  - the echo is sent straight from the provided buffer (no copy); one send
 *    in flight per connection, later buffers queue behind it in arrival
 *    order; the buffer goes back to the ring when its send has completed;
 *  - one io_uring_submit_and_wait() per loop iteration (batched submission)
 *    and CQEs reaped in bulk.
 * Not used: registered (direct) files and bundles (6.10, not in liburing
 * 2.3's headers).
 *
 * usage: raw_uring PORT [--bufs N] [--buf-size B]
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
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "uring_common.h"

/* Buffer count (a power of two) and size; --bufs / --buf-size override. */
#define MAX_NBUF 4096
static unsigned NBUF = 1024;
static size_t BUFSZ = 64 * 1024; /* as large as raw_epoll's read buffer */
#define BGID 1
#define MAXFD 65536
#define NIL 0xffff

enum { T_ACCEPT = 1, T_RECV, T_SEND, T_CLOSE };
#define UD(t, fd) (((uint64_t)(t) << 32) | (uint32_t)(fd))

typedef struct conn {
    uint8_t open, recv_armed, send_busy, dead;
    uint16_t head, tail; /* FIFO of buffers waiting to be sent */
} conn;

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static uint16_t buf_next[MAX_NBUF];
static uint32_t buf_len[MAX_NBUF], buf_off[MAX_NBUF];
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

static void send_head(int fd)
{
    conn *c = &conns[fd];
    uint16_t b = c->head;
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, fd, bufs + (size_t)b * BUFSZ + buf_off[b],
                       buf_len[b] - buf_off[b], MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(T_SEND, fd));
    c->send_busy = 1;
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
    while (c->head != NIL) {
        uint16_t b = c->head;
        c->head = buf_next[b];
        recycle(b);
    }
    c->open = 0;
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data64(sqe, UD(T_CLOSE, fd));
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
                conns[res] = (conn){.open = 1, .head = NIL, .tail = NIL};
                arm_recv(res);
            }
        }
        if (!(cqe->flags & IORING_CQE_F_MORE) && !stop)
            arm_accept();
        break;
    case T_RECV:
        if (res > 0) {
            uint16_t b = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            if (c->dead) {
                recycle(b);
            } else {
                buf_len[b] = (uint32_t)res;
                buf_off[b] = 0;
                buf_next[b] = NIL;
                if (c->head == NIL)
                    c->head = b;
                else
                    buf_next[c->tail] = b;
                c->tail = b;
                if (!c->send_busy)
                    send_head(fd);
            }
        }
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
            c->recv_armed = 0;
            if (res == -ENOBUFS && !c->dead)
                starved[nstarved++] = fd; /* re-armed once buffers return */
            else if (res > 0 && !c->dead)
                arm_recv(fd);
            else
                maybe_close(fd);
        }
        break;
    case T_SEND:
        c->send_busy = 0;
        if (res < 0) {
            c->dead = 1;
            if (c->recv_armed)
                shutdown(fd, SHUT_RDWR); /* ends the multishot recv */
            maybe_close(fd);
            break;
        }
        {
            uint16_t b = c->head;
            buf_off[b] += (uint32_t)res;
            if (buf_off[b] < buf_len[b]) { /* short send: the rest */
                send_head(fd);
                break;
            }
            c->head = buf_next[b];
            if (c->head == NIL)
                c->tail = NIL;
            recycle(b);
        }
        if (c->head != NIL)
            send_head(fd);
        else
            maybe_close(fd);
        break;
    case T_CLOSE:
        break;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: raw_uring PORT [--bufs N] [--buf-size B]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--bufs") == 0)
            NBUF = (unsigned)atoi(argv[i + 1]);
        if (strcmp(argv[i], "--buf-size") == 0)
            BUFSZ = (size_t)atol(argv[i + 1]);
    }
    if (!NBUF || NBUF > MAX_NBUF || (NBUF & (NBUF - 1)) || BUFSZ < 64) {
        fprintf(stderr, "raw_uring: --bufs is a power of two up to %d\n", MAX_NBUF);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    char feat[256];
    int r = uring_setup(&ring, feat, sizeof feat);
    if (r < 0) {
        fprintf(stderr, "raw_uring: io_uring setup (needs recv/send/accept/"
                        "close): %s\n", strerror(-r));
        return 1;
    }
    br = uring_setup_buf_ring(&ring, NBUF, BUFSZ, BGID, &bufs);
    if (!br) {
        fprintf(stderr, "raw_uring: provided buffer ring (needs 5.19): %s\n",
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
        perror("raw_uring: bind/listen");
        return 1;
    }
    arm_accept();
    fprintf(stderr, "raw_uring: ready features=%s\n", feat);

    while (!stop) {
        r = io_uring_submit_and_wait(&ring, 1);
        if (r < 0 && r != -EINTR && r != -ETIME && r != -EAGAIN &&
            r != -EBUSY) {
            fprintf(stderr, "raw_uring: submit_and_wait: %s\n", strerror(-r));
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
