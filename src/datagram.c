/* SPDX-License-Identifier: MIT */
/* Datagram endpoints: asyncio's DatagramTransport on UDP (IPv4, IPv6) and
 * Unix datagram sockets, built on pact_recvfrom() / pact_sendto().
 *
 * Reading: one receive in flight into the endpoint's buffer. An error is
 * reported to error_received and reception goes on — asyncio's proactor
 * stopped receiving forever after one error (CPython gh-91227,
 * Tribler#7972); here only a dead socket (EBADF, ENOTSOCK, ...) ends the
 * endpoint. Pausing never cancels the receive: a datagram that arrives
 * while paused is held and handed over on resume.
 *
 * ICMP errors: UDP sockets get IP_RECVERR, so the kernel reports an ICMP
 * error (port unreachable, ...) also on an unconnected socket, queues it
 * with the destination it is about on the socket's error queue, and fails
 * the next receive *or send* with it (sk_err). Whenever an operation fails
 * the error queue is drained here (it would otherwise keep the socket
 * "readable" with EPOLLERR) and each entry goes to error_received with its
 * address. A send that failed only because it picked up such an earlier
 * error did not send its datagram: it is sent again, so one dead peer does
 * not cost the datagrams meant for live ones.
 *
 * Writing: a FIFO of copied datagrams; the head is in flight (one send at
 * a time keeps them in order) and is never freed before its completion
 * (docs/contract.md §2). A send error drops that datagram and reports it to
 * error_received; sending goes on. Sends never wait inside the kernel
 * (MSG_DONTWAIT): on EAGAIN the endpoint polls for POLLOUT and sends the
 * datagram again itself. A Unix datagram socket whose peer's queue is full
 * says EAGAIN only after it has copied the datagram out of the iovec, and
 * io_uring, retrying on its own with that consumed iovec, sent an empty
 * datagram in its place.
 *
 * Teardown as for streams: close flushes, abort drops; the socket is closed
 * and connection_lost called from a fresh loop callback once every
 * operation has called back.
 *
 * Windows: the same endpoint on the completion port (WSARecvFrom,
 * WSASendTo), UDP only (Winsock's AF_UNIX has no datagrams). There is no
 * error queue: an ICMP port unreachable fails the next receive with
 * WSAECONNRESET (SIO_UDP_CONNRESET is left on, its default, so these
 * errors reach error_received as -ECONNREFUSED, as IP_RECVERR makes them
 * on Linux — turning it off would hide them), and reception goes on
 * after it as after any error. A datagram longer than the buffer is
 * reported as -EMSGSIZE (the engine's len + 1 with MSG_TRUNC). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include "win/socket_calls.h" /* the socket calls below, on Winsock */
#else
#include <fcntl.h>
#include <linux/errqueue.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#endif

#include "endpoint.h"
#include "options.h"
#include "loop.h"
#include "stream.h" /* pact__unix_address() */

#define UDP_MAX_DATAGRAM (64 * 1024)
#define UNIX_MAX_DATAGRAM (256 * 1024)
/* Per-datagram overhead in the write buffer size (asyncio counts 8), so
 * that a flood of empty datagrams still pauses the writer. */
#define DATAGRAM_OVERHEAD 8
/* Times one datagram is sent again after picking up an earlier error. */
#define MAX_RETRIES 3
/* Error queue entries read per drain (the rest fail the next op). */
#define MAX_DRAIN 64

typedef struct dgram_item {
    struct dgram_item *next;
    size_t len;
    socklen_t addrlen; /* 0: the connected peer */
    int retries;
    struct sockaddr_storage addr;
    char data[]; /* len bytes; the kernel reads them while in flight */
} dgram_item;

/* The lifecycle (references, states, the error, the final close once
 * nothing is in flight, the marks) is the endpoint's (endpoint.h). */
struct pact_datagram {
    pact_endpoint ep;
    int fd;
    int family;
    const pact_datagram_protocol *proto;
    void *user;

    unsigned paused : 1;
    unsigned has_held : 1;
    unsigned resume_scheduled : 1;
    unsigned connected : 1;
    unsigned recverr : 1; /* IP_RECVERR is on: errors wait in the queue */

    /* Reading. */
    pact_op read_op;
    char *rbuf;
    size_t rbuf_size;
    int64_t held_result;
    struct sockaddr_storage held_addr;
    socklen_t held_addrlen;

    /* Writing: head is in flight while send_op != 0. */
    pact_op send_op;
    dgram_item *head, *tail;
    size_t buffered;
    pact_marks marks;
    pact_datagram_stats stats;

    struct sockaddr_storage peer; /* when connected */
    socklen_t peerlen;

    /* A Unix path we bound: removed at close if it is still ours. */
    char *unlink_path;
#ifndef _WIN32
    dev_t path_dev;
    ino_t path_ino;
#endif
};

static void start_reading(pact_datagram *ep);
static void kick_write(pact_datagram *ep);

static pact_datagram *dgram_of(const pact_endpoint *e)
{
    return pact_container_of(e, pact_datagram, ep);
}

/* Errors that mean the socket itself is unusable: the endpoint ends. The
 * rest (ICMP errors, EMSGSIZE, ENOBUFS, a peer that is gone) are reported
 * and the endpoint goes on. A send's EINVAL or EAFNOSUPPORT is about its
 * own address, so only a dead socket ends the endpoint from a send. */
static int is_fatal_send(int err)
{
    return err == -EBADF || err == -ENOTSOCK;
}

static int is_fatal(int err)
{
    switch (-err) {
    case EBADF:
    case ENOTSOCK:
    case EFAULT:
    case EINVAL:
    case EOPNOTSUPP:
    case ESHUTDOWN:
        return 1;
    default:
        return 0;
    }
}

/* ---- the write queue ------------------------------------------------------ */

static void free_item(pact_datagram *ep, dgram_item *it)
{
    ep->buffered -= it->len + DATAGRAM_OVERHEAD;
    free(it);
}

static dgram_item *pop_head(pact_datagram *ep)
{
    dgram_item *it = ep->head;
    if (it) {
        ep->head = it->next;
        if (!ep->head)
            ep->tail = NULL;
        it->next = NULL;
    }
    return it;
}

static void push_front(pact_datagram *ep, dgram_item *it)
{
    it->next = ep->head;
    ep->head = it;
    if (!ep->tail)
        ep->tail = it;
}

/* Frees every queued datagram except one the kernel may still be reading. */
static void drop_queue(pact_datagram *ep)
{
    dgram_item *keep = ep->send_op ? pop_head(ep) : NULL;
    dgram_item *it;
    while ((it = pop_head(ep))) {
        ep->stats.dropped++;
        free_item(ep, it);
    }
    if (keep)
        push_front(ep, keep);
}

/* ---- lifetime ------------------------------------------------------------- */

static int dgram_busy(const pact_endpoint *e)
{
    const pact_datagram *ep = dgram_of(e);
    /* close() sends what is queued first; abort dropped it. */
    return ep->read_op || ep->send_op || (!e->aborting && ep->head);
}

static void dgram_cancel(pact_endpoint *e)
{
    pact_datagram *ep = dgram_of(e);
    ep->has_held = 0;
    drop_queue(ep);
    if (ep->read_op)
        pact_op_cancel(e->loop, ep->read_op);
    if (ep->send_op)
        pact_op_cancel(e->loop, ep->send_op);
}

static void dgram_lost(pact_endpoint *e)
{
    pact_datagram *ep = dgram_of(e);
    if (ep->fd >= 0) {
        pact__fd_closing(e->loop, ep->fd);
        close(ep->fd);
        ep->fd = -EBADF;
    }
#ifndef _WIN32
    if (ep->unlink_path) {
        struct stat st;
        if (stat(ep->unlink_path, &st) == 0 && st.st_dev == ep->path_dev &&
            st.st_ino == ep->path_ino)
            unlink(ep->unlink_path);
    }
#endif
    dgram_item *it;
    while ((it = pop_head(ep))) {
        ep->stats.dropped++; /* none left after a close that flushed */
        free_item(ep, it);
    }
    if (ep->proto->connection_lost)
        ep->proto->connection_lost(ep, e->err, ep->user);
}

static void dgram_free(pact_endpoint *e)
{
    pact_datagram *ep = dgram_of(e);
    free(ep->rbuf);
    free(ep->unlink_path);
    free(ep);
}

static void dgram_writing(pact_endpoint *e, int pause)
{
    pact_datagram *ep = dgram_of(e);
    void (*cb)(pact_datagram *, void *) =
        pause ? ep->proto->pause_writing : ep->proto->resume_writing;
    if (cb)
        cb(ep, ep->user);
}

static void dgram_force_close(pact_endpoint *e)
{
    pact__endpoint_abort(e, 0);
}

/* pact_datagram_set_ref(): its receive and send in flight follow ref. */
static void dgram_set_ref(pact_endpoint *e, int ref)
{
    pact_datagram *ep = pact_container_of(e, pact_datagram, ep);
    if (ep->read_op)
        pact_op_set_ref(e->loop, ep->read_op, ref);
    if (ep->send_op)
        pact_op_set_ref(e->loop, ep->send_op, ref);
}

#ifndef _WIN32
/* A forked child frees the loop it inherited (endpoint.h): its copy of
 * the fd closed, the queued datagrams and the memory freed; the socket's
 * path is the parent's, not unlinked. */
static void dgram_forget(pact_endpoint *e)
{
    pact_datagram *ep = dgram_of(e);
    if (ep->fd >= 0)
        close(ep->fd);
    ep->fd = -EBADF;
    dgram_item *it;
    while ((it = pop_head(ep)))
        free_item(ep, it);
    dgram_free(e);
}
#endif

static void connection_made(pact_endpoint *e);

static const pact_endpoint_ops dgram_ops = {
    PACT_ENDPOINT_KIND("datagram endpoint"),
    .force_close = dgram_force_close,
    .cancel = dgram_cancel,
    .busy = dgram_busy,
    .made = connection_made,
    .lost = dgram_lost,
    .free = dgram_free,
    .writing = dgram_writing,
    .set_ref = dgram_set_ref,
#ifndef _WIN32
    .forget = dgram_forget,
#endif
};

static void fatal_error(pact_datagram *ep, int err)
{
    pact__endpoint_abort(&ep->ep, err);
}

int pact_datagram_set_ref(pact_datagram *ep, int ref)
{
    if (!ep)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(ep);
    return pact__endpoint_set_ref(&ep->ep, ref);
}

int pact_datagram_close(pact_datagram *ep)
{
    if (!ep)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(ep);
    int r = pact__endpoint_begin_close(&ep->ep);
    if (r)
        return r;
    ep->has_held = 0; /* the user closed: nothing more is delivered */
    /* Datagrams queued: more are taken behind them until the queue is
     * empty, as asyncio's datagram transport does. */
    ep->ep.draining = ep->head != NULL;
    if (ep->read_op)
        pact_op_cancel(ep->ep.loop, ep->read_op);
    kick_write(ep);
    pact__endpoint_settle(&ep->ep);
    return 0;
}

int pact_datagram_abort(pact_datagram *ep)
{
    if (!ep)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(ep);
    return pact__endpoint_abort(&ep->ep, 0);
}

/* ---- errors --------------------------------------------------------------- */

static void report(pact_datagram *ep, int err, const struct sockaddr *addr,
                   socklen_t addrlen)
{
    if (ep->ep.lost || ep->ep.aborting || !ep->proto->error_received)
        return;
    ep->proto->error_received(ep, err, addrlen ? addr : NULL, addrlen,
                              ep->user);
}

/* Reads the socket's error queue (IP_RECVERR) and reports each entry with
 * the destination it is about. Returns how many were reported. */
static int drain_errors(pact_datagram *ep)
{
#ifdef _WIN32
    (void)ep;
    return 0; /* no error queue: each error is its op's result */
#else
    if (!ep->recverr)
        return 0;
    int n = 0;
    for (int i = 0; i < MAX_DRAIN && !ep->ep.aborting && ep->fd >= 0; i++) {
        char data[64];
        union {
            char buf[512];
            struct cmsghdr align;
        } control;
        struct sockaddr_storage ss;
        struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
        struct msghdr m = {
            .msg_name = &ss,
            .msg_namelen = sizeof ss,
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = control.buf,
            .msg_controllen = sizeof control.buf,
        };
        if (recvmsg(ep->fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
            break;
        int err = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
            if ((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
                (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)) {
                struct sock_extended_err ee;
                memcpy(&ee, CMSG_DATA(cm), sizeof ee);
                err = (int)ee.ee_errno;
            }
        }
        if (err == 0)
            continue;
        n++;
        report(ep, -err, (struct sockaddr *)&ss, m.msg_namelen);
    }
    return n;
#endif
}

/* ---- reading -------------------------------------------------------------- */

static void deliver(pact_datagram *ep, int64_t r, const struct sockaddr *addr,
                    socklen_t addrlen)
{
    if (r >= 0) {
        if ((size_t)r > ep->rbuf_size) {
            /* Cut by the receive buffer (MSG_TRUNC gave its real length):
             * never hand over part of a datagram as if it were whole. */
            ep->stats.receive_errors++;
            report(ep, -EMSGSIZE, addr, addrlen);
        } else {
            ep->stats.received++;
            if (ep->proto->datagram_received)
                ep->proto->datagram_received(ep, ep->rbuf, (size_t)r, addr,
                                             addrlen, ep->user);
        }
    } else if (is_fatal((int)r)) {
        fatal_error(ep, (int)r);
        return;
    } else if (r == -EAGAIN || r == -EINTR) {
        /* Woken by entries in the error queue with no pending socket
         * error (both engines say -EAGAIN then): drain, no datagram. */
        ep->stats.receive_errors += (uint64_t)drain_errors(ep);
    } else {
        int n = drain_errors(ep);
        ep->stats.receive_errors += n ? (uint64_t)n : 1;
        if (n == 0) /* not from the error queue: a Unix peer gone, ... */
            report(ep, (int)r, NULL, 0);
    }
    start_reading(ep); /* an error never stops reception */
}

static void on_recv(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_datagram *ep = arg;
    ep->read_op = 0;
    if (ep->ep.closing || c->result == -ECANCELED) {
        pact__endpoint_settle(&ep->ep);
        return;
    }
    if (ep->paused) {
        /* Paused after this receive started: keep it (rbuf is not reused
         * before resume). */
        ep->held_result = c->result;
        ep->held_addrlen = c->addr ? c->addrlen : 0;
        if (c->addr)
            memcpy(&ep->held_addr, c->addr, c->addrlen);
        ep->has_held = 1;
        return;
    }
    /* The protocol may close it inside: deliver goes on using it, so the
     * final close waits until we leave (it runs from a fresh callback, or
     * here at the latest when none can be scheduled). */
    pact__endpoint_enter(&ep->ep);
    deliver(ep, c->result, c->addr, c->addr ? c->addrlen : 0);
    pact__endpoint_leave(&ep->ep);
}

static void start_reading(pact_datagram *ep)
{
    if (ep->read_op || ep->ep.closing || ep->paused || ep->has_held || !ep->ep.made)
        return;
    if (!ep->rbuf) {
        ep->rbuf = malloc(ep->rbuf_size);
        if (!ep->rbuf) {
            fatal_error(ep, -ENOMEM);
            return;
        }
    }
    pact_op op = pact_recvfrom(ep->ep.loop, ep->fd, ep->rbuf, ep->rbuf_size,
                               MSG_TRUNC, on_recv, ep);
    if (op < 0) {
        fatal_error(ep, (int)op);
        return;
    }
    ep->read_op = pact__endpoint_op(&ep->ep, op);
}

int pact_datagram_pause_reading(pact_datagram *ep)
{
    if (!ep)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(ep);
    int r = pact__endpoint_may_pause(&ep->ep, ep->paused, 1);
    if (r == 0)
        ep->paused = 1;
    return r;
}

static void resume_delivery(pact_loop *loop, void *arg)
{
    (void)loop;
    pact_datagram *ep = arg;
    ep->resume_scheduled = 0;
    pact__endpoint_enter(&ep->ep);
    if (!ep->ep.closing && !ep->paused) {
        if (ep->has_held) {
            ep->has_held = 0;
            deliver(ep, ep->held_result, (struct sockaddr *)&ep->held_addr,
                    ep->held_addrlen); /* also restarts reading */
        } else {
            start_reading(ep);
        }
    }
    pact__endpoint_leave(&ep->ep);
    pact__endpoint_unref(&ep->ep);
}

int pact_datagram_resume_reading(pact_datagram *ep)
{
    if (!ep)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(ep);
    int r = pact__endpoint_may_pause(&ep->ep, ep->paused, 0);
    if (r)
        return r;
    ep->paused = 0;
    if (!ep->ep.made)
        return 0; /* reading starts after connection_made */
    if (!ep->has_held) {
        start_reading(ep);
        return 0;
    }
    /* The held datagram goes out on the next iteration, never from inside
     * the caller (which may be a protocol callback). */
    if (!ep->resume_scheduled) {
        if (pact__endpoint_soon(&ep->ep, resume_delivery) < 0)
            return -ESHUTDOWN;
        ep->resume_scheduled = 1;
    }
    return 0;
}

int pact_datagram_is_reading(const pact_datagram *ep)
{
    return ep && !ep->ep.closing && !ep->paused;
}

int pact_datagram_is_closing(const pact_datagram *ep)
{
    return ep ? ep->ep.closing : 1;
}

/* ---- writing -------------------------------------------------------------- */

/* pause_writing / resume_writing as the queue crosses the marks. */
static void check_flow(pact_datagram *ep)
{
    pact__endpoint_flow(&ep->ep, &ep->marks, ep->buffered);
}

static void send_done(pact_datagram *ep, const pact_completion *c);

/* The socket said EAGAIN: the head goes again once it polls writable (or
 * fails: the send then says why). send_op holds the poll meanwhile, so
 * close, abort and set_ref treat it as the send in flight. */
static void on_writable(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    (void)c;
    pact_datagram *ep = arg;
    ep->send_op = 0;
    pact__endpoint_enter(&ep->ep);
    kick_write(ep); /* nothing after an abort, the rest after a close */
    pact__endpoint_leave(&ep->ep); /* settles */
}

static void wait_writable(pact_datagram *ep)
{
    pact_op op = pact_poll(ep->ep.loop, ep->fd, POLLOUT, on_writable, ep);
    if (op < 0) {
        fatal_error(ep, (int)op);
        return;
    }
    ep->send_op = pact__endpoint_op(&ep->ep, op);
}

static void on_send(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_datagram *ep = arg;
    ep->send_op = 0;
    /* error_received may close it; send_done goes on using it. */
    pact__endpoint_enter(&ep->ep);
    send_done(ep, c);
    pact__endpoint_leave(&ep->ep); /* settles */
}

static void send_done(pact_datagram *ep, const pact_completion *c)
{
    dgram_item *it = pop_head(ep);
    int64_t r = c->result;
    if (r >= 0) {
        ep->stats.sent++;
        free_item(ep, it);
    } else if (ep->ep.aborting || r == -ECANCELED) {
        ep->stats.dropped++;
        free_item(ep, it);
    } else if (is_fatal_send((int)r)) {
        ep->stats.dropped++;
        free_item(ep, it);
        fatal_error(ep, (int)r);
        return;
    } else if (r == -EAGAIN || r == -EINTR) {
        /* Not sent: again once the socket has room. */
        drain_errors(ep);
        ep->stats.send_retries++;
        if (ep->ep.aborting) {
            ep->stats.dropped++;
            free_item(ep, it);
        } else {
            push_front(ep, it);
            if (r == -EAGAIN)
                wait_writable(ep);
        }
    } else {
        /* An ICMP error for an earlier datagram fails the next send too
         * (the kernel's pending socket error): report it from the error
         * queue and send this datagram again. Else the error is this
         * datagram's own. */
        int earlier = it->retries < MAX_RETRIES ? drain_errors(ep) : 0;
        if (ep->ep.aborting) {
            ep->stats.dropped++;
            free_item(ep, it);
        } else if (earlier) {
            it->retries++;
            ep->stats.send_retries++;
            push_front(ep, it);
        } else {
            ep->stats.send_errors++;
            const struct sockaddr *dst =
                it->addrlen ? (struct sockaddr *)&it->addr
                            : (struct sockaddr *)&ep->peer;
            report(ep, (int)r, dst, it->addrlen ? it->addrlen : ep->peerlen);
            free_item(ep, it);
        }
    }
    kick_write(ep);
    check_flow(ep); /* resume_writing may send, also closing */
    if (!ep->head)
        ep->ep.draining = 0; /* all out: a close goes on, sends are refused */
}

static void kick_write(pact_datagram *ep)
{
    /* Not before connection_made: a send error would reach error_received
     * first. connection_made kicks what was queued before it. */
    if (ep->send_op || ep->ep.aborting || !ep->head || !ep->ep.made)
        return;
    dgram_item *it = ep->head;
    pact_op op = pact_sendto(ep->ep.loop, ep->fd, it->data, it->len, MSG_DONTWAIT,
                             it->addrlen ? (struct sockaddr *)&it->addr : NULL,
                             it->addrlen, on_send, ep);
    if (op < 0) {
        fatal_error(ep, (int)op);
        return;
    }
    ep->send_op = pact__endpoint_op(&ep->ep, op);
}

static int sockaddr_equal(const struct sockaddr *a, socklen_t alen,
                          const struct sockaddr *b, socklen_t blen)
{
    if (a->sa_family != b->sa_family)
        return 0;
    if (a->sa_family == AF_INET && (size_t)alen >= sizeof(struct sockaddr_in) &&
        (size_t)blen >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port &&
               x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6 && (size_t)alen >= sizeof(struct sockaddr_in6) &&
        (size_t)blen >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return alen == blen && memcmp(a, b, alen) == 0;
}

int pact_datagram_sendto(pact_datagram *ep, const void *data, size_t len,
                         const struct sockaddr *addr, socklen_t addrlen)
{
    if (!ep || (!data && len))
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(ep);
    if (addr && ((size_t)addrlen < sizeof(sa_family_t) ||
                 (size_t)addrlen > sizeof(struct sockaddr_storage)))
        return PACT_MISUSE(ep->ep.loop, -EINVAL, "bad address length");
    if (!pact__endpoint_takes_writes(&ep->ep))
        return pact__endpoint_write_refused(&ep->ep,
                                            ep->stats.sends_after_close++ == 0,
                                            "datagram endpoint", ep->fd);
    if (len > (size_t)INT32_MAX)
        return -EMSGSIZE;
    if (ep->connected && addr) {
        if (!sockaddr_equal(addr, addrlen, (struct sockaddr *)&ep->peer,
                            ep->peerlen))
            return PACT_MISUSE(ep->ep.loop, -EISCONN,
                               "address differs from the connected peer");
        addr = NULL; /* send() to the peer */
        addrlen = 0;
    } else if (!ep->connected && !addr) {
        return PACT_MISUSE(ep->ep.loop, -EDESTADDRREQ,
                           "no address on an unconnected endpoint");
    }
    dgram_item *it = malloc(sizeof *it + len);
    if (!it)
        return -ENOMEM;
    it->next = NULL;
    it->len = len;
    it->retries = 0;
    it->addrlen = addr ? addrlen : 0;
    if (addr)
        memcpy(&it->addr, addr, addrlen);
    if (len)
        memcpy(it->data, data, len);
    if (ep->tail)
        ep->tail->next = it;
    else
        ep->head = it;
    ep->tail = it;
    ep->buffered += len + DATAGRAM_OVERHEAD;
    kick_write(ep);
    check_flow(ep);
    return 0;
}

size_t pact_datagram_write_buffer_size(const pact_datagram *ep)
{
    return ep ? ep->buffered : 0;
}

static int set_marks(pact_datagram *ep, size_t high, size_t low)
{
    int r = pact__marks_check(&ep->marks, high, low);
    if (r == 0)
        pact__endpoint_flow_new_marks(&ep->ep, &ep->marks, ep->buffered);
    return r;
}

int pact_datagram_set_write_marks(pact_datagram *ep, size_t high, size_t low)
{
    if (!ep)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(ep);
    return set_marks(ep, high, low);
}

int pact_datagram_set_write_buffer_limits(pact_datagram *ep, size_t high,
                                          size_t low)
{
    if (!ep)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(ep);
    return set_marks(ep, pact__marks_high_or_default(high), low);
}

void pact_datagram_get_write_buffer_limits(const pact_datagram *ep,
                                           size_t *high, size_t *low)
{
    if (high)
        *high = ep ? ep->marks.high : 0;
    if (low)
        *low = ep ? ep->marks.low : 0;
}

int pact_datagram_get_stats(const pact_datagram *ep, pact_datagram_stats *out)
{
    if (!ep || !out)
        return -EINVAL;
    *out = ep->stats;
    return 0;
}

/* ---- creation ------------------------------------------------------------- */

/* The endpoint's made (pact__endpoint_made_soon): it may have been closed
 * before, or be closed inside. */
static void connection_made(pact_endpoint *e)
{
    pact_datagram *ep = pact_container_of(e, pact_datagram, ep);
    if (ep->proto->connection_made)
        ep->proto->connection_made(ep, ep->user);
    if (!ep->ep.closing) {
        start_reading(ep);
        check_flow(ep); /* sendto() before connection_made */
    }
    kick_write(ep); /* also after close(): it flushes */
}

#ifndef _WIN32
static int enable_recverr(int fd, int family)
{
    int one = 1, ok = 0;
    if (setsockopt(fd, SOL_IP, IP_RECVERR, &one, sizeof one) == 0)
        ok = 1;
    if (family == AF_INET6 &&
        setsockopt(fd, SOL_IPV6, IPV6_RECVERR, &one, sizeof one) == 0)
        ok = 1;
    return ok;
}
#endif

/* Wraps a datagram socket; closes fd on failure. */
static int dgram_create(pact_loop *loop, int fd,
                        const pact_datagram_options *opts,
                        const pact_datagram_protocol *proto, void *user,
                        char *unlink_path, void *created_at,
                        pact_datagram **out)
{
    pact_datagram_options o;
    pact_datagram_options_init(&o);
    int r = opts ? pact__options_read(&o, sizeof o, PACT__DATAGRAM_OPTIONS_V1,
                                      opts)
                 : 0;
    struct sockaddr_storage local;
    socklen_t local_len = sizeof local;
    int type = 0;
    socklen_t tlen = sizeof type;
    if (r < 0)
        PACT_MISUSE(loop, r, "options not initialised or too new (docs/abi.md)");
    else if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0)
        r = -errno;
    else if (type != SOCK_DGRAM)
        r = PACT_MISUSE(loop, -EPROTOTYPE, "not a datagram socket");
    else if (getsockname(fd, (struct sockaddr *)&local, &local_len) < 0)
        r = -errno;
    pact_datagram *ep = r == 0 ? calloc(1, sizeof *ep) : NULL;
    if (r == 0 && !ep)
        r = -ENOMEM;
    if (r != 0) {
        free(unlink_path);
        close(fd);
        return r;
    }
    pact__endpoint_init(&ep->ep, loop, &dgram_ops);
    ep->fd = fd;
    ep->family = local.ss_family;
    ep->proto = proto;
    ep->user = user;
    ep->marks = pact__default_marks;
    ep->rbuf_size = o.max_datagram ? o.max_datagram
                    : ep->family == AF_UNIX    ? UNIX_MAX_DATAGRAM
                                               : UDP_MAX_DATAGRAM;
    ep->peerlen = sizeof ep->peer;
    if (getpeername(fd, (struct sockaddr *)&ep->peer, &ep->peerlen) == 0)
        ep->connected = 1;
    else
        ep->peerlen = 0;
#ifndef _WIN32
    if (ep->family == AF_INET || ep->family == AF_INET6)
        ep->recverr = (unsigned)enable_recverr(fd, ep->family);
    if (unlink_path) {
        struct stat st;
        if (stat(unlink_path, &st) == 0) {
            ep->unlink_path = unlink_path;
            ep->path_dev = st.st_dev;
            ep->path_ino = st.st_ino;
        } else {
            free(unlink_path);
        }
    }
    pact__fd_make_nonblocking(fd);
#else
    free(unlink_path); /* none: no Unix datagrams */
#endif
    /* connection_made on the next iteration: the caller gets the endpoint
     * before any protocol callback runs. */
    pact__endpoint_made_soon(&ep->ep);
    pact__endpoint_register(&ep->ep, created_at);
    /* The socket is the endpoint's until dgram_lost closes it (after
     * pact__fd_closing): the engine may register the file meanwhile. */
    pact__fd_owned(ep->ep.loop, fd);
    *out = ep;
    return 0;
}

static int check_args(pact_loop *loop, const pact_datagram_protocol *proto,
                      pact_datagram **out, const char *func)
{
    int r = pact__check_loop(loop, func);
    if (r == 0 && (!proto || !out))
        r = pact__misuse(loop, -EINVAL, func, "protocol or out is NULL");
    return r;
}

#ifndef _WIN32
/* A Unix socket file nobody is bound to any more: sending is refused. */
static int is_stale_unix(const struct sockaddr_un *sun, socklen_t len)
{
    struct stat st;
    if (sun->sun_path[0] == '\0' || stat(sun->sun_path, &st) < 0 ||
        !S_ISSOCK(st.st_mode))
        return 0;
    int probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0)
        return 0;
    int stale = connect(probe, (const struct sockaddr *)sun, len) < 0 &&
                errno == ECONNREFUSED;
    close(probe);
    return stale;
}
#endif

static int open_socket(pact_loop *loop, const struct sockaddr *local,
                       socklen_t local_len, const struct sockaddr *remote,
                       socklen_t remote_len, const pact_datagram_options *opts,
                       const pact_datagram_protocol *proto, void *user,
                       void *created_at, pact_datagram **out)
{
    int r = check_args(loop, proto, out, "pact_datagram_open");
    if (r)
        return r;
    if (!local && !remote)
        return PACT_MISUSE(loop, -EINVAL, "neither a local nor a remote address");
    if ((local && ((size_t)local_len < sizeof(sa_family_t) ||
                   (size_t)local_len > sizeof(struct sockaddr_storage))) ||
        (remote && ((size_t)remote_len < sizeof(sa_family_t) ||
                    (size_t)remote_len > sizeof(struct sockaddr_storage))))
        return PACT_MISUSE(loop, -EINVAL, "bad address length");
    int family = local ? local->sa_family : remote->sa_family;
    if (local && remote && local->sa_family != remote->sa_family)
        return PACT_MISUSE(loop, -EINVAL, "local and remote families differ");
    if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
        return PACT_MISUSE(loop, -EAFNOSUPPORT, "not AF_INET, AF_INET6 or AF_UNIX");
#ifdef _WIN32
    if (family == AF_UNIX)
        return PACT_MISUSE(loop, -EAFNOSUPPORT, "no Unix datagrams on Windows");
#endif
    pact_datagram_options known;
    pact_datagram_options_init(&known);
    if (opts && (r = pact__options_read(&known, sizeof known,
                                        PACT__DATAGRAM_OPTIONS_V1, opts)) < 0)
        return PACT_MISUSE(loop, r, "options not initialised or too new (docs/abi.md)");
    opts = &known;

#ifdef _WIN32
    if (opts->reuse_port)
        return PACT_MISUSE(loop, -ENOTSUP, "reuse_port: Windows has no SO_REUSEPORT");
    int fd = pact__win_udp_socket(family); /* overlapped, not inherited */
    if (fd < 0)
        return fd;
#else
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
#endif
    int one = 1;
    if (opts->reuse_addr)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
#ifndef _WIN32
    if (opts->reuse_port &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        goto fail;
#endif
    if (opts->allow_broadcast &&
        setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) < 0)
        goto fail;
    if (family == AF_INET6) {
        int v6only = opts->ipv6_only ? 1 : 0;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    }
    char *unlink_path = NULL;
    if (local) {
        int b = bind(fd, local, local_len);
#ifndef _WIN32
        if (b < 0 && errno == EADDRINUSE && family == AF_UNIX &&
            is_stale_unix((const struct sockaddr_un *)local, local_len)) {
            unlink(((const struct sockaddr_un *)local)->sun_path);
            b = bind(fd, local, local_len);
        }
#endif
        if (b < 0)
            goto fail;
        const struct sockaddr_un *sun = (const struct sockaddr_un *)local;
        if (family == AF_UNIX && sun->sun_path[0] != '\0') {
            unlink_path = strdup(sun->sun_path);
            if (!unlink_path) {
                unlink(sun->sun_path);
                errno = ENOMEM;
                goto fail;
            }
        }
    }
    if (remote && connect(fd, remote, remote_len) < 0) {
        r = -errno;
#ifndef _WIN32
        if (unlink_path)
            unlink(unlink_path);
#endif
        free(unlink_path);
        close(fd);
        return r;
    }
    return dgram_create(loop, fd, opts, proto, user, unlink_path, created_at,
                        out);
fail:
    r = -errno;
    close(fd);
    return r;
}

int pact_datagram_open(pact_loop *loop, const struct sockaddr *local,
                       socklen_t local_len, const struct sockaddr *remote,
                       socklen_t remote_len, const pact_datagram_options *opts,
                       const pact_datagram_protocol *proto, void *user,
                       pact_datagram **out)
{
    return open_socket(loop, local, local_len, remote, remote_len, opts, proto,
                       user, __builtin_return_address(0), out);
}

int pact_datagram_open_udp(pact_loop *loop, const char *local_host,
                           uint16_t local_port, const char *remote_host,
                           uint16_t remote_port,
                           const pact_datagram_options *opts,
                           const pact_datagram_protocol *proto, void *user,
                           pact_datagram **out)
{
    int r = check_args(loop, proto, out, __func__);
    if (r)
        return r;
    struct sockaddr_storage l, rm;
    socklen_t llen = 0, rlen = 0;
    if (local_host && pact_sockaddr_parse(local_host, local_port, &l, &llen) != 0)
        return PACT_MISUSE(loop, -EINVAL, "local host is not a numeric address");
    if (remote_host &&
        pact_sockaddr_parse(remote_host, remote_port, &rm, &rlen) != 0)
        return PACT_MISUSE(loop, -EINVAL, "remote host is not a numeric address");
    if (!local_host && !remote_host)
        return PACT_MISUSE(loop, -EINVAL, "neither a local nor a remote host");
    return open_socket(loop, local_host ? (struct sockaddr *)&l : NULL, llen,
                       remote_host ? (struct sockaddr *)&rm : NULL, rlen, opts,
                       proto, user, __builtin_return_address(0), out);
}

int pact_datagram_open_unix(pact_loop *loop, const char *local_path,
                            const char *remote_path,
                            const pact_datagram_options *opts,
                            const pact_datagram_protocol *proto, void *user,
                            pact_datagram **out)
{
    int r = check_args(loop, proto, out, __func__);
    if (r)
        return r;
#ifdef _WIN32
    (void)local_path, (void)remote_path, (void)opts, (void)user;
    return PACT_MISUSE(loop, -ENOTSUP, "no Unix datagrams on Windows");
#else
    struct sockaddr_un l, rm;
    socklen_t llen = 0, rlen = 0;
    if (local_path && pact__unix_address(local_path, &l, &llen) != 0)
        return PACT_MISUSE(loop, -EINVAL, "bad local Unix socket path");
    if (remote_path && pact__unix_address(remote_path, &rm, &rlen) != 0)
        return PACT_MISUSE(loop, -EINVAL, "bad remote Unix socket path");
    if (!local_path && !remote_path) {
        /* Unnamed and unconnected: it can still send to paths. */
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        return dgram_create(loop, fd, opts, proto, user, NULL,
                            __builtin_return_address(0), out);
    }
    return open_socket(loop, local_path ? (struct sockaddr *)&l : NULL, llen,
                       remote_path ? (struct sockaddr *)&rm : NULL, rlen, opts,
                       proto, user, __builtin_return_address(0), out);
#endif
}

int pact_datagram_adopt(pact_loop *loop, pact_os_sock sock,
                        const pact_datagram_options *opts,
                        const pact_datagram_protocol *proto, void *user,
                        pact_datagram **out)
{
    int fd = (int)sock; /* Windows socket values fit in 32 bits */
    int r = check_args(loop, proto, out, __func__);
    if (r == 0 && fd < 0)
        r = PACT_MISUSE(loop, -EBADF, "fd is negative");
    if (r) {
        if (fd >= 0)
            close(fd);
        return r;
    }
    return dgram_create(loop, fd, opts, proto, user, NULL,
                        __builtin_return_address(0), out);
}

/* ---- accessors ------------------------------------------------------------ */

int pact_datagram_fd(const pact_datagram *ep)
{
    return ep ? ep->fd : -EINVAL;
}

pact_loop *pact_datagram_loop(const pact_datagram *ep)
{
    return ep ? ep->ep.loop : NULL;
}

void *pact_datagram_user(const pact_datagram *ep)
{
    return ep ? ep->user : NULL;
}

static int socket_name(const pact_datagram *ep, struct sockaddr_storage *ss,
                       socklen_t *len, int peer)
{
    if (!ep || !ss || !len)
        return -EINVAL;
    if (ep->fd < 0)
        return -EBADF;
    *len = sizeof *ss;
    int r = peer ? getpeername(ep->fd, (struct sockaddr *)ss, len)
                 : getsockname(ep->fd, (struct sockaddr *)ss, len);
    return r < 0 ? -errno : 0;
}

int pact_datagram_sockname(const pact_datagram *ep, struct sockaddr_storage *ss,
                           socklen_t *len)
{
    return socket_name(ep, ss, len, 0);
}

int pact_datagram_peername(const pact_datagram *ep, struct sockaddr_storage *ss,
                           socklen_t *len)
{
    return socket_name(ep, ss, len, 1);
}

/* ---- socket options ------------------------------------------------------- */

static int set_int(pact_datagram *ep, int level, int name, int value)
{
    if (!ep)
        return -EINVAL;
    if (ep->fd < 0)
        return -EBADF;
    return setsockopt(ep->fd, level, name, &value, sizeof value) < 0 ? -errno : 0;
}

static int inet_only(const pact_datagram *ep)
{
    if (!ep)
        return -EINVAL;
    return ep->family == AF_INET || ep->family == AF_INET6 ? 0 : -ENOPROTOOPT;
}

int pact_datagram_set_broadcast(pact_datagram *ep, int on)
{
    return set_int(ep, SOL_SOCKET, SO_BROADCAST, on ? 1 : 0);
}

int pact_datagram_set_ttl(pact_datagram *ep, int ttl)
{
    int r = inet_only(ep);
    if (r)
        return r;
    if (ttl < 1 || ttl > 255)
        return -EINVAL;
    return ep->family == AF_INET6
               ? set_int(ep, IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl)
               : set_int(ep, IPPROTO_IP, IP_TTL, ttl);
}

int pact_datagram_set_multicast_ttl(pact_datagram *ep, int ttl)
{
    int r = inet_only(ep);
    if (r)
        return r;
    if (ttl < 0 || ttl > 255)
        return -EINVAL;
    return ep->family == AF_INET6
               ? set_int(ep, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, ttl)
               : set_int(ep, IPPROTO_IP, IP_MULTICAST_TTL, ttl);
}

int pact_datagram_set_multicast_loop(pact_datagram *ep, int on)
{
    int r = inet_only(ep);
    if (r)
        return r;
    return ep->family == AF_INET6
               ? set_int(ep, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, on ? 1 : 0)
               : set_int(ep, IPPROTO_IP, IP_MULTICAST_LOOP, on ? 1 : 0);
}

static int membership(pact_datagram *ep, const char *group, const char *ifname,
                      int join)
{
    int r = inet_only(ep);
    if (r)
        return r;
    if (!group)
        return -EINVAL;
    if (ep->fd < 0)
        return -EBADF;
    unsigned ifindex = 0;
#ifdef _WIN32
    if (ifname)
        return -ENOTSUP; /* the system's default interface only */
#else
    if (ifname && !(ifindex = if_nametoindex(ifname)))
        return -ENODEV;
#endif
    struct sockaddr_storage ss;
    socklen_t len;
    if (pact_sockaddr_parse(group, 0, &ss, &len) != 0)
        return -EINVAL;
    if (ss.ss_family == AF_INET) {
#ifdef _WIN32
        struct ip_mreq m = {
            .imr_multiaddr = ((struct sockaddr_in *)&ss)->sin_addr,
        };
#else
        struct ip_mreqn m = {
            .imr_multiaddr = ((struct sockaddr_in *)&ss)->sin_addr,
            .imr_ifindex = (int)ifindex,
        };
#endif
        r = setsockopt(ep->fd, IPPROTO_IP,
                       join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, &m,
                       sizeof m);
    } else {
        if (ep->family != AF_INET6)
            return -EAFNOSUPPORT;
        struct ipv6_mreq m = {
            .ipv6mr_multiaddr = ((struct sockaddr_in6 *)&ss)->sin6_addr,
            .ipv6mr_interface = ifindex,
        };
        r = setsockopt(ep->fd, IPPROTO_IPV6,
                       join ? IPV6_JOIN_GROUP : IPV6_LEAVE_GROUP, &m, sizeof m);
    }
    return r < 0 ? -errno : 0;
}

int pact_datagram_join_group(pact_datagram *ep, const char *group,
                             const char *ifname)
{
    return membership(ep, group, ifname, 1);
}

int pact_datagram_leave_group(pact_datagram *ep, const char *group,
                              const char *ifname)
{
    return membership(ep, group, ifname, 0);
}
