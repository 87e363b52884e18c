/* SPDX-License-Identifier: MIT */
/* The epoll engine: emulates completions with readiness. Each op first
 * tries its system call at submission; only if that would block does it
 * wait in its fd's read or write queue for epoll to report readiness (the
 * "try first, then wait" order keeps the fast path to one syscall). A
 * receive whose stream socket the last receive drained waits without trying
 * (note_receive).
 *
 * Its per-fd state (wait queues, registration) is appended to the loop's
 * fd entry (fd_table.h), which the op layer's order shares.
 *
 * One epoll registration per fd, EPOLLONESHOT, re-armed while a queue is
 * non-empty; persistent and left alone while a watcher or a multishot op
 * (a transport's receive, a server's accept) is on the fd: edge-triggered
 * for a transport's receive alone, else level-triggered (fd_rearm). The
 * registration heals itself when the user closed an fd and
 * the number came back (MOD answers ENOENT: ADD again). Ops in one queue
 * complete in the order they were started; stream ops reach the engine one
 * per fd and direction already (the op layer's per-fd order, op.c). Reads and writes on other fds (pipes, ttys) must
 * not block the loop and must not change the caller's fd either: they use
 * RWF_NOWAIT per call (rw_nowait()); regular files are read and written
 * directly (they never block on readiness). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fault.h"
#include "fd_table.h"
#include "loop.h"
#include "recv_burst.h"

/* QUEUE_EVENTS holds the fd's poll ops and watchers (pact_watch), told
 * apart by their kind: one list head less per fd than a queue each (the
 * idle-connection memory goal). While an epoll event is dispatched the
 * fd's watchers wait their turn in the engine's `due` list
 * (run_watchers); they still count for the registration. */
enum fd_queue { QUEUE_READ, QUEUE_WRITE, QUEUE_EVENTS, QUEUE_COUNT };

/* The loop's fd entry with the engine's part after it. The small state
 * lives in the shared part's engine_events (the events armed in epoll,
 * 0 = disarmed) and engine_flags (FD_*). */
typedef struct fd_entry {
    pact_fd_entry base; /* must be first */
    /* Read only while FD_ALONE (set with it, set_alone): the stream
     * whose receive is alone on the fd (the op at the head of the read
     * queue delivers to pact__stream_recv_data with it), or NULL if
     * that receive is not a stream's. An event for it reads this line
     * and the stream's, not the op's (run_stream_recv): the op lies
     * apart in the slab, and reading it cost every request one more
     * cache line. */
    void *alone_stream;
    pact_list queues[QUEUE_COUNT];
} fd_entry;

/* Every fd the loop has seen holds one (an idle connection's share of the
 * idle-connection memory goal, docs/design-notes.md): what only a few fds
 * need does not go here. */
_Static_assert(sizeof(fd_entry) <= 80, "the epoll fd entry grew past 80 bytes");

enum {
    /* The registration is a transport's receive alone: EPOLLIN |
     * EPOLLRDHUP, edge-triggered, for a multishot receive at the head of
     * the read queue, with no write waiting, no poll op and no watcher
     * (receive_alone). Kept by fd_rearm, which every change of the
     * queues outside an event's own dispatch goes through. */
    FD_ALONE = 1u << 0,
    FD_LEVEL = 1u << 1,    /* armed without EPOLLONESHOT: a watcher or a
                              multishot op is on the fd */
    /* epoll has (or had) a registration for this fd; the loop clears it
     * when it closes the fd (pact__fd_closing) */
    FD_KNOWN = PACT_FD_REGISTERED,
    /* What the engine found behind the number (three bits, one of the
     * FD_FILE_* values). Not looked at yet; for pact_read / pact_write: a
     * regular file or block device (no readiness: I/O directly), a file
     * that waits for readiness and takes RWF_NOWAIT, or one that refuses
     * it (rw_nowait). For pact_recv (note_receive): a stream socket, or
     * one whose last receive (PACT_OP_RECV) drained it with no readiness
     * reported since, so that the next one does not try first
     * (ep_submit); or a socket that keeps message boundaries (datagram,
     * SOCK_SEQPACKET), whose short receive says nothing of what is left.
     * One field, since a number is one file: a kind learned by one kind
     * of op and met by another only costs the other a look or a try. */
    FD_FILE = 7u << 3,
    FD_FILE_UNKNOWN = 0,
    FD_FILE_REGULAR = 1u << 3,
    FD_FILE_NOWAIT = 2u << 3,
    FD_FILE_NO_RWF_NOWAIT = 3u << 3,
    FD_FILE_STREAM = 4u << 3,
    FD_FILE_STREAM_DRAINED = 5u << 3,
    FD_FILE_MESSAGES = 6u << 3,
    /* FD_LEVEL with EPOLLET: a multishot receive alone on the fd */
    FD_EDGE = 1u << 2,
    /* An edge-triggered registration left in place with nothing waiting
     * (engine_events 0): removed at its next event, re-armed by MOD */
    FD_LINGER = 1u << 6,
};
_Static_assert((PACT_FD_REGISTERED & 0x7fu) == 0, "engine flag bits overlap");

/* The events a registration may ask for fit engine_events. */
_Static_assert(((EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLRDHUP) & ~0xffffu) == 0,
               "epoll events do not fit 16 bits");

typedef struct epoll_engine {
    int epfd;
    /* run_watchers(): the entry whose watchers are being called and those
     * not called yet (callbacks cannot run the loop re-entrantly, so
     * there is one at a time). */
    fd_entry *dispatching;
    pact_list due;
    /* ep_wait's prefetches look three events ahead: the events past the
     * last name this entry (empty queues), so that they need no bounds
     * checks. */
    fd_entry beyond;
} epoll_engine;

#define EPOLL_ENGINE(loop) ((epoll_engine *)(loop)->engine_data)

static int ep_init(pact_loop *loop, unsigned depth, int fail_setup,
                      char *reason, size_t reason_len)
{
    (void)depth;
    (void)fail_setup;
    (void)reason;
    (void)reason_len;
    epoll_engine *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        int r = -errno;
        free(e);
        return r;
    }
    pact_list_init(&e->due);
    for (int q = 0; q < QUEUE_COUNT; q++)
        pact_list_init(&e->beyond.queues[q]);
    pact_fd_table_set_entry_size(&loop->fds, sizeof(fd_entry));
    loop->engine_data = e;
    loop->recv_multi_mode = "epoll";
    loop->accept_multi = 1;
    return 0;
}

static void ep_destroy(pact_loop *loop)
{
    epoll_engine *e = EPOLL_ENGINE(loop);
    if (!e)
        return;
    close(e->epfd);
    free(e);
    loop->engine_data = NULL;
}

/* After fork, in the child: the epoll instance is shared with the
 * parent, so its registrations are not touched (no EPOLL_CTL_DEL); closing
 * the child's copy of the epoll fd changes nothing for the parent. */
static void ep_forget(pact_loop *loop)
{
    ep_destroy(loop);
}

/* f (an entry of the table, or NULL), its queues made. */
static fd_entry *fd_ready(pact_fd_entry *base)
{
    fd_entry *f = (fd_entry *)base;
    /* Entries start zeroed (the op layer may have made this one first):
     * a NULL list head means the queues are not made yet. */
    if (f && !f->queues[QUEUE_READ].next) {
        for (int q = 0; q < QUEUE_COUNT; q++)
            pact_list_init(&f->queues[q]);
    }
    return f;
}

static fd_entry *fd_get(pact_loop *loop, int fd)
{
    return fd_ready(pact_fd_table_get(&loop->fds, fd));
}

/* The entry of an fd that has had an op with the engine, or NULL. */
static fd_entry *fd_find(pact_loop *loop, int fd)
{
    fd_entry *f = (fd_entry *)pact_fd_table_find(&loop->fds, fd);
    return f && f->queues[QUEUE_READ].next ? f : NULL;
}

static int flag(const fd_entry *f, unsigned bit)
{
    return (f->base.engine_flags & bit) != 0;
}

static void set_flag(fd_entry *f, unsigned bit, int on)
{
    if (on)
        f->base.engine_flags |= (uint8_t)bit;
    else
        f->base.engine_flags &= (uint8_t)~bit;
}

static unsigned file_kind(const fd_entry *f)
{
    return f->base.engine_flags & FD_FILE;
}

static void set_file_kind(fd_entry *f, unsigned kind)
{
    f->base.engine_flags = (uint8_t)((f->base.engine_flags & ~FD_FILE) | kind);
}

static int stream_socket(const fd_entry *f)
{
    return file_kind(f) == FD_FILE_STREAM || file_kind(f) == FD_FILE_STREAM_DRAINED;
}

/* What pact_recv learned of a socket (note_receive). pact_read and
 * pact_write treat a socket as any file that waits for readiness
 * (FD_FILE_NOWAIT) and keep what the receives learned: a socket read by
 * pact_recv and written by pact_write would otherwise lose it at every
 * write, and its next receive pay a try and a getsockopt again. */
static int socket_kind(const fd_entry *f)
{
    return stream_socket(f) || file_kind(f) == FD_FILE_MESSAGES;
}

/* Which queue an op waits in. */
static enum fd_queue queue_of(const pact_op_s *op)
{
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_RECV:
    case PACT_OP_RECV_MULTI:
    case PACT_OP_ACCEPT_MULTI:
    case PACT_OP_RECVFROM:
    case PACT_OP_ACCEPT:
    case PACT_OP_READ:
        return QUEUE_READ;
    case PACT_OP_POLL:
    case PACT_OP_WATCH:
        return QUEUE_EVENTS;
    default:
        return QUEUE_WRITE;
    }
}

/* The watchers being called for the current event (run_watchers), if f
 * is the fd they watch. */
static const pact_list *due_of(const epoll_engine *e, const fd_entry *f)
{
    return e->dispatching == f ? &e->due : NULL;
}

static int has_kind(const pact_list *head, pact_op_kind kind)
{
    for (const pact_list *n = head->next; n != head; n = n->next)
        if (pact_container_of(n, pact_op_s, link)->kind == kind)
            return 1;
    return 0;
}

static int has_watchers(const epoll_engine *e, const fd_entry *f)
{
    const pact_list *due = due_of(e, f);
    return (due && !pact_list_empty(due)) ||
           has_kind(&f->queues[QUEUE_EVENTS], PACT_OP_WATCH);
}

static uint32_t mask_events(const pact_list *head)
{
    uint32_t ev = 0;
    for (const pact_list *n = head->next; n != head; n = n->next) {
        const pact_op_s *op = pact_container_of(n, pact_op_s, link);
        ev |= (uint32_t)op->msg_flags &
              (EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLRDHUP);
    }
    return ev;
}

static uint32_t wanted_events(const epoll_engine *e, const fd_entry *f)
{
    uint32_t ev = 0;
    if (!pact_list_empty(&f->queues[QUEUE_READ]))
        ev |= EPOLLIN | EPOLLRDHUP;
    if (!pact_list_empty(&f->queues[QUEUE_WRITE]))
        ev |= EPOLLOUT;
    ev |= mask_events(&f->queues[QUEUE_EVENTS]);
    const pact_list *due = due_of(e, f);
    if (due)
        ev |= mask_events(due);
    return ev;
}

/* A multishot receive or accept waits at the head of the read queue: it
 * stays there for the life of a connection or a server, reading (or
 * accepting) at each event. Returns its kind, or -1. */
static int multishot_kind(const fd_entry *f)
{
    const pact_list *head = &f->queues[QUEUE_READ];
    if (pact_list_empty(head))
        return -1;
    const pact_op_s *op = pact_container_of(head->next, pact_op_s, link);
    return op->kind == PACT_OP_RECV_MULTI || op->kind == PACT_OP_ACCEPT_MULTI
               ? op->kind
               : -1;
}

/* The op at the head of the fd's read queue (its receive), or NULL.
 * Every entry epoll reports or the engine arms has its queues (fd_get
 * made them before the registration), and so has e->beyond. */
static pact_op_s *read_head(const fd_entry *f)
{
    const pact_list *head = &f->queues[QUEUE_READ];
    return head->next != head ? pact_container_of(head->next, pact_op_s, link)
                              : NULL;
}

/* The stream whose receive heads the fd's read queue (a hooked receive
 * delivering to pact__stream_recv_data), or NULL. */
static void *head_stream(const fd_entry *f)
{
    const pact_op_s *op = read_head(f);
    return op && (op->flags & PACT_OPF_DATA_HOOK) &&
                   op->data_hook == pact__stream_recv_data
               ? op->user
               : NULL;
}

/* FD_ALONE, and with it the stream it names (alone_stream). */
static void set_alone(fd_entry *f, int alone)
{
    set_flag(f, FD_ALONE, alone);
    if (alone)
        f->alone_stream = head_stream(f);
}

/* An armed edge-triggered registration whose fd waits for nothing now
 * (its transport's receive ended): it lingers (see fd_rearm). */
static void edge_linger(fd_entry *f)
{
    f->base.engine_events = 0;
    f->base.engine_flags = (uint8_t)((f->base.engine_flags &
                                      ~(FD_ALONE | FD_LEVEL | FD_EDGE)) |
                                     FD_LINGER);
}

/* Arms the fd's registration for what its queues wait for. Ops alone get
 * a one-shot registration, re-armed after each event. With a watcher or a
 * multishot op on the fd it is persistent, and stays as it is while the
 * events wanted do not change: a watcher or a transport's receive costs
 * no epoll_ctl per event.
 *
 * A transport's receive (a multishot receive alone on its fd) is
 * edge-triggered: it reads until the socket is drained (EAGAIN or a short
 * read), and each new arrival is a new edge; epoll_wait need not poll the
 * socket once more per event, as it does for a level-triggered one. At
 * its burst limit it has not drained the socket: retrigger() modifies
 * the registration, which reports it again if still readable. When
 * it ends (pause_reading, close) the registration lingers rather than
 * cost an EPOLL_CTL_DEL: edge-triggered, it cannot make the loop spin;
 * its next event removes it (lingered_event), a new receive re-arms it with
 * one MOD, and if the loop closes the fd the kernel drops it with the
 * file (pact__fd_closing: the next registration of the number is an
 * ADD). Watchers and accepts stay level-triggered: a watcher's contract
 * is level (docs/contract.md), and a listener stopped at its burst limit
 * is simply reported again. A level-triggered registration never
 * lingers: it would report a ready file over and over.
 *
 * Returns 1 when the number was registered anew (an ADD: the first
 * registration, or the old one was gone with a file the user closed), 0
 * when an existing registration changed or stayed, or -errno. */
static int fd_rearm(epoll_engine *e, fd_entry *f, int lingered_event)
{
    int fd = f->base.fd;
    uint32_t ev = wanted_events(e, f);
    int watchers = has_watchers(e, f);
    int multishot = multishot_kind(f);
    int persistent = watchers || multishot >= 0;
    int edge = !watchers && multishot == PACT_OP_RECV_MULTI;
    /* (no OUT in ev: no write waits) */
    int alone = edge && ev == (EPOLLIN | EPOLLRDHUP) &&
                pact_list_empty(&f->queues[QUEUE_EVENTS]);
    set_flag(f, FD_ALONE, 0); /* until armed so */
    if (ev == 0) {
        int armed = flag(f, FD_LEVEL) && f->base.engine_events;
        if (armed && flag(f, FD_EDGE)) {
            edge_linger(f);
            return 0;
        } else if (armed || (flag(f, FD_LINGER) && lingered_event)) {
            /* A level-triggered registration does not disarm itself.
             * (An fd closed while still watched has lost it already,
             * unless the file lives on in a dup or a child: then the
             * number no longer names it and it cannot be removed —
             * cancel a watcher before closing its fd.) */
            epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
            set_flag(f, FD_KNOWN | FD_LINGER, 0);
        }
        /* ONESHOT already disarmed it after the last event */
        f->base.engine_events = 0;
        set_flag(f, FD_LEVEL | FD_EDGE, 0);
        return 0;
    }
    if (persistent && flag(f, FD_LEVEL) && f->base.engine_events == ev &&
        flag(f, FD_EDGE) == edge) {
        set_alone(f, alone);
        return 0;
    }
    /* The entry itself: it lives as long as the loop. */
    struct epoll_event event = {
        .events = ev | (!persistent ? EPOLLONESHOT : edge ? EPOLLET : 0),
        .data.ptr = f};
    int op = flag(f, FD_KNOWN) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    int r = epoll_ctl(e->epfd, op, fd, &event);
    int added = op == EPOLL_CTL_ADD;
    if (r < 0 && errno == ENOENT && op == EPOLL_CTL_MOD) {
        r = epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &event); /* fd was reused */
        added = 1;
    } else if (r < 0 && errno == EEXIST && op == EPOLL_CTL_ADD) {
        r = epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &event);
        added = 0;
    }
    if (r < 0)
        return -errno;
    set_flag(f, FD_KNOWN, 1);
    f->base.engine_events = (uint16_t)ev;
    set_flag(f, FD_LEVEL, persistent);
    set_flag(f, FD_EDGE, edge);
    set_flag(f, FD_LINGER, 0);
    set_alone(f, alone);
    return added;
}

/* The fd's registration is its transport's receive alone (FD_ALONE),
 * still armed (pact__fd_closing disarms without the engine). One test
 * where edge_receive_unchanged() walks the queues: ep_wait makes it twice
 * per event. */
static int receive_alone(const fd_entry *f)
{
    return flag(f, FD_ALONE) && f->base.engine_events == (EPOLLIN | EPOLLRDHUP);
}

/* fd_rearm() would change nothing: the fd's transport receive is still
 * alone on its edge-triggered registration. Checked after each event's
 * dispatch, it spares the common case (an event for a connection whose
 * receive goes on) fd_rearm's walk of the fd's queues:
 * that was the largest part of the engine's user-space cost per request
 * in the 64-byte echo (callgrind: 66 of about 480 instructions). Exact:
 * with the write and events queues empty, and no watchers being called
 * (none are outside run_watchers), a multishot receive at the head of
 * the read queue is what fd_rearm arms as EPOLLIN | EPOLLRDHUP with
 * EPOLLET. */
static int edge_receive_unchanged(const fd_entry *f)
{
    return flag(f, FD_EDGE) && f->base.engine_events == (EPOLLIN | EPOLLRDHUP) &&
           pact_list_empty(&f->queues[QUEUE_WRITE]) &&
           pact_list_empty(&f->queues[QUEUE_EVENTS]) &&
           multishot_kind(f) == PACT_OP_RECV_MULTI;
}

/* The fd's edge-triggered receive has ended (EOF, an error, a close)
 * and nothing else waits on the fd: fd_rearm would only let the
 * registration linger, which edge_linger does without fd_rearm's walk
 * of the queues (callgrind, connect / one request / close on epoll: once
 * per connection). Exact: all queues empty and no watcher being called
 * (due_of), so fd_rearm would want no event and find it armed so. */
static int edge_receive_ended(const epoll_engine *e, const fd_entry *f)
{
    return flag(f, FD_EDGE) && flag(f, FD_LEVEL) && f->base.engine_events &&
           pact_list_empty(&f->queues[QUEUE_READ]) &&
           pact_list_empty(&f->queues[QUEUE_WRITE]) &&
           pact_list_empty(&f->queues[QUEUE_EVENTS]) && !due_of(e, f);
}

/* An edge-triggered receive stopped before the socket was drained (its
 * burst limit): the same registration, modified, is reported again at the
 * next wait if the socket is still readable (EPOLL_CTL_MOD polls it). */
static void retrigger(epoll_engine *e, fd_entry *f)
{
    if (!flag(f, FD_EDGE) || !f->base.engine_events)
        return;
    struct epoll_event event = {.events = f->base.engine_events | EPOLLET,
                                .data.ptr = f};
    epoll_ctl(e->epfd, EPOLL_CTL_MOD, f->base.fd, &event);
}

static int sock_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}

/* Performs the op's system call once. Returns the result, or -EAGAIN if it
 * would block (then the op waits for readiness). revents is 0 for the
 * first try at submission. */
/* Pipes, ttys, eventfds...: without blocking and without changing the
 * caller's file flags (pact__rw_nowait, op_posix.c in this directory). */
static int64_t rw_nowait(fd_entry *f, pact_op_s *op)
{
    struct iovec iov = {.iov_base = op->buf, .iov_len = op->len};
    uint8_t refuses = file_kind(f) == FD_FILE_NO_RWF_NOWAIT;
    int64_t r = pact__rw_nowait(op->fd, op->kind != PACT_OP_READ, &iov, 1,
                                op->offset, &refuses);
    if (refuses || !socket_kind(f))
        set_file_kind(f, refuses ? FD_FILE_NO_RWF_NOWAIT : FD_FILE_NOWAIT);
    return r;
}

/* What a short receive says of the socket behind fd: a stream's bytes
 * have no boundaries, so it took all there was (FD_FILE_STREAM); a
 * datagram or SOCK_SEQPACKET record is one of those waiting, however many
 * (FD_FILE_MESSAGES). One getsockopt per number, at its first short
 * receive (and again after the number was found reused, ep_submit). */
static unsigned receive_kind(int fd)
{
    int type;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return FD_FILE_UNKNOWN;
    return type == SOCK_STREAM ? FD_FILE_STREAM : FD_FILE_MESSAGES;
}

/* Readiness came: the stream socket may hold bytes again. */
static void forget_drained(fd_entry *f)
{
    if (file_kind(f) == FD_FILE_STREAM_DRAINED)
        set_file_kind(f, FD_FILE_STREAM);
}

/* After a receive's recv(2) of `asked` bytes, r its result: a stream
 * socket is drained when it had nothing (-EAGAIN) or gave fewer bytes
 * than asked for (bytes that arrive later are a new readiness). Then the
 * next receive on the number waits for readiness at once (ep_submit): in
 * a request-response exchange (a receive started once the reply went out)
 * its try would only answer EAGAIN, one system call per request that the
 * re-arm's epoll_ctl makes useless, since arming checks readiness
 * (EPOLL_CTL_MOD and ADD report a file already ready). A datagram
 * socket's short read is one datagram and says nothing of the others:
 * chained receives over a backlog keep trying first, and read several
 * datagrams a loop turn (tests/test_ops.c,
 * ops/chained_recvs_read_a_udp_backlog_in_few_loop_turns). A wrong guess
 * costs a loop turn, never data (a stream short read with more bytes
 * behind it). A number the user closed and reused is registered anew, and
 * then the receive tries after all and the kind is looked at again
 * (ep_submit); a file the loop closes forgets it (ep_fd_closing). A peek
 * leaves the bytes where they were. */
static void note_receive(fd_entry *f, const pact_op_s *op, int64_t r, size_t asked)
{
    int would_block = r == -EAGAIN || r == -EWOULDBLOCK;
    int short_read = r > 0 && (size_t)r < asked && !(op->msg_flags & MSG_PEEK);
    if (short_read && !stream_socket(f) && file_kind(f) != FD_FILE_MESSAGES)
        set_file_kind(f, receive_kind(op->fd));
    if (stream_socket(f))
        set_file_kind(f, would_block || short_read ? FD_FILE_STREAM_DRAINED
                                                   : FD_FILE_STREAM);
}

/* A receive with MSG_WAITALL on a stream socket, after a recv(2) that
 * answered r: as a blocking recv(2) (and io_uring's receive), it ends
 * once len bytes came, or with the bytes it has at end of file or an
 * error (op->transferred, which a cancel or deadline also answers,
 * ep_cancel: taken from the socket, they are never dropped). Other
 * sockets answer one message, as recv(2) does; a peek takes nothing. */
static int64_t recv_all_step(fd_entry *f, pact_op_s *op, int64_t r)
{
    if (r > 0 && stream_socket(f) && op->transferred + (size_t)r < op->len) {
        op->transferred += (size_t)r;
        return -EAGAIN;
    }
    if (op->transferred == 0)
        return r;
    if (r == -EAGAIN || r == -EWOULDBLOCK || r == -EINTR)
        return -EAGAIN;
    return (int64_t)(op->transferred + (r > 0 ? (size_t)r : 0));
}

static int64_t try_op(fd_entry *f, pact_op_s *op, uint32_t revents)
{
    ssize_t n;
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_RECV: {
        size_t asked = op->len - op->transferred;
        n = recv(op->fd, (char *)op->buf + op->transferred, asked,
                 op->msg_flags | MSG_DONTWAIT);
        int64_t r = n < 0 ? -errno : n;
        note_receive(f, op, r, asked);
        return (op->msg_flags & (MSG_WAITALL | MSG_PEEK)) == MSG_WAITALL
                   ? recv_all_step(f, op, r)
                   : r;
    }
    case PACT_OP_SEND:
        n = send(op->fd, op->buf, op->len, op->msg_flags | MSG_DONTWAIT);
        return n < 0 ? -errno : n;
    case PACT_OP_SEND_ALL:
        while (op->transferred < op->len) {
            n = send(op->fd, (char *)op->buf + op->transferred,
                     op->len - op->transferred, op->msg_flags | MSG_DONTWAIT);
            if (n < 0)
                return errno == EINTR ? -EAGAIN : -errno;
            op->transferred += (size_t)n;
        }
        return (int64_t)op->transferred;
    case PACT_OP_RECVFROM:
        /* For datagrams 0 is an empty datagram, not end of file. */
        op->ext->msg.msg_namelen = sizeof op->ext->addr;
        n = recvmsg(op->fd, &op->ext->msg, op->msg_flags | MSG_DONTWAIT);
        return n < 0 ? -errno : n;
    case PACT_OP_SENDTO:
        n = sendmsg(op->fd, &op->ext->msg, op->msg_flags | MSG_DONTWAIT);
        return n < 0 ? -errno : n;
    case PACT_OP_ACCEPT:
        op->ext->addrlen = sizeof op->ext->addr;
        n = accept4(op->fd, (struct sockaddr *)&op->ext->addr, &op->ext->addrlen,
                    SOCK_CLOEXEC | SOCK_NONBLOCK);
        return n < 0 ? -errno : n;
    case PACT_OP_CONNECT:
        if (op->flags & PACT_OPF_CONNECTING) {
            if (!(revents & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                return -EAGAIN;
            return sock_error(op->fd);
        }
        if (connect(op->fd, (struct sockaddr *)&op->ext->addr,
                    op->ext->addrlen) == 0)
            return 0;
        if (errno == EINPROGRESS || errno == EAGAIN) {
            op->flags |= PACT_OPF_CONNECTING;
            return -EAGAIN;
        }
        return -errno;
    case PACT_OP_SHUTDOWN:
        return shutdown(op->fd, op->msg_flags) < 0 ? -errno : 0;
    case PACT_OP_READ:
    case PACT_OP_WRITE:
        return file_kind(f) == FD_FILE_REGULAR ? pact__op_rw_now(op)
                                               : rw_nowait(f, op);
    case PACT_OP_POLL: {
        struct pollfd p = {.fd = op->fd, .events = (short)op->msg_flags};
        int r = poll(&p, 1, 0);
        if (r < 0)
            return -errno;
        /* poll(2) reports a closed fd as a "ready" POLLNVAL; the contract
         * (and io_uring's POLL_ADD) says -EBADF. */
        if (r > 0 && (p.revents & POLLNVAL))
            return -EBADF;
        return r == 0 ? -EAGAIN : p.revents;
    }
    default:
        return -EINVAL;
    }
}

/* Sockets get MSG_DONTWAIT per call, other fds RWF_NOWAIT (rw_nowait);
 * regular files and block devices never wait for readiness (a block
 * device answers RWF_NOWAIT with EAGAIN when its pages are not cached,
 * and epoll refuses it with EPERM: the read failed). again: the number
 * may name another file since its last op (ep_submit): looked at anew,
 * keeping what receives learned of a socket that is still a socket
 * (socket_kind; another socket's type is found by the next receive's
 * arm, which registers the number anew). */
static void prepare_fd(fd_entry *f, int fd, int again)
{
    if (file_kind(f) != FD_FILE_UNKNOWN && !again)
        return;
    struct stat st;
    int known = fstat(fd, &st) == 0;
    if (known && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
        set_file_kind(f, FD_FILE_REGULAR);
    else if (!(known && S_ISSOCK(st.st_mode) && socket_kind(f)))
        set_file_kind(f, FD_FILE_NOWAIT);
}

static int ep_submit(pact_loop *loop, pact_op_s *op, pact_fd_entry *entry)
{
    epoll_engine *e = EPOLL_ENGINE(loop);
    fd_entry *f = entry ? fd_ready(entry) : fd_get(loop, op->fd);
    if (!f) {
        pact__op_defer(loop, op, -ENOMEM);
        return 0;
    }
    /* The number may name a new file since its last op (closed, then
     * reused by a pipe): a stale "regular file" would let read() block the
     * loop. Only an op with nothing else waiting on the number can be the
     * first on a new file, so check again for those; socket ops pass
     * MSG_DONTWAIT and need no check (and no fstat per connection). */
    if (op->kind == PACT_OP_READ || op->kind == PACT_OP_WRITE) {
        prepare_fd(f, op->fd,
                   pact_list_empty(&f->queues[QUEUE_READ]) &&
                       pact_list_empty(&f->queues[QUEUE_WRITE]) &&
                       pact_list_empty(&f->queues[QUEUE_EVENTS]) && !has_watchers(e, f));
    }
    enum fd_queue q = queue_of(op);
    /* Behind an op already waiting on this queue (for a poll: behind
     * another poll, not behind a watcher): keep the order. A multishot
     * receive or accept always waits for readiness: its data callbacks
     * must not run from inside submission. */
    int queued = op->kind == PACT_OP_POLL
                     ? has_kind(&f->queues[q], PACT_OP_POLL)
                     : !pact_list_empty(&f->queues[q]);
    int try_first = !queued && op->kind != PACT_OP_RECV_MULTI &&
                    op->kind != PACT_OP_ACCEPT_MULTI && op->kind != PACT_OP_WATCH;
    /* A receive on a socket its last receive drained waits for readiness
     * without trying (note_receive): the registration below reports
     * bytes that came meanwhile. */
    /* MSG_OOB and a zero length answer at once, whatever the socket
     * holds (EINVAL without urgent data; 0): they always try. */
    int untried = try_first && op->kind == PACT_OP_RECV &&
                  file_kind(f) == FD_FILE_STREAM_DRAINED &&
                  op->len > 0 && !(op->msg_flags & MSG_OOB);
    if (try_first && !untried) {
        int64_t r = 0;
        /* Fault injection (tests only): the try reports the armed error
         * instead (-EAGAIN: the op waits for readiness); a regular file
         * never waits, so its I/O is left alone. Counts the tries. */
        if (!((op->kind == PACT_OP_READ || op->kind == PACT_OP_WRITE) &&
              file_kind(f) == FD_FILE_REGULAR))
            r = PACT_FAULT(PACT_FAULT_EPOLL_TRY);
        if (r == 0)
            r = try_op(f, op, 0);
        if (r != -EAGAIN && r != -EWOULDBLOCK && r != -EINTR) {
            pact__op_defer(loop, op, r);
            return 0;
        }
    }
    pact_list_push_back(&f->queues[q], &op->link);
    /* A new watcher registers the number anew even where its events are
     * armed already for another one: that one's file may have been
     * closed under it (epoll dropped its registration) and the number
     * reused, which only MOD can tell (ENOENT: ADD). */
    if (op->kind == PACT_OP_WATCH)
        f->base.engine_events = 0;
    int r = fd_rearm(e, f, 0);
    /* EPERM: not pollable (a regular file that said EAGAIN?); EBADF:
     * closed fd. Either way the op cannot wait: fail it, with its own
     * call's answer if it did not try (ENOTSOCK, or bytes after all), as
     * it would have failed before. Registered anew (r > 0): the number may
     * name a new file since the drained read (the user closed and reused
     * it), one whose receive fails rather than waits (a pipe: ENOTSOCK; a
     * listener: ENOTCONN): an untried receive tries now, and its result
     * says anew what the file is (note_receive). */
    if (r < 0 || (untried && r > 0)) {
        int64_t result = r;
        if (untried) {
            set_file_kind(f, FD_FILE_UNKNOWN);
            int64_t tried = try_op(f, op, 0);
            if (tried != -EAGAIN && tried != -EWOULDBLOCK && tried != -EINTR)
                result = tried;
            else if (r > 0)
                return 0; /* waits, armed */
        }
        pact_list_remove(&op->link);
        pact__op_defer(loop, op, result);
    }
    return 0;
}

static void ep_cancel(pact_loop *loop, pact_op_s *op)
{
    /* Ops that wait are in a queue; cancelling just takes them out. The
     * callback runs from the loop's done phase, never from in here. */
    if (pact_list_linked(&op->link) && op->state == PACT_OP_INFLIGHT) {
        pact_list_remove(&op->link);
        epoll_engine *e = EPOLL_ENGINE(loop);
        fd_entry *f = fd_find(loop, op->fd);
        if (f)
            fd_rearm(e, f, 0);
        /* A MSG_WAITALL receive ends with the bytes it took (recv_all_step). */
        int64_t taken = op->kind == PACT_OP_RECV ? (int64_t)op->transferred : 0;
        pact__op_defer(loop, op, taken > 0 ? taken : -ECANCELED);
    }
}

/* pact_op_set_events(): the registration follows the new events. */
static void ep_watch_update(pact_loop *loop, pact_op_s *op)
{
    epoll_engine *e = EPOLL_ENGINE(loop);
    fd_entry *f = fd_find(loop, op->fd);
    if (!f || !pact_list_linked(&op->link))
        return;
    int r = fd_rearm(e, f, 0);
    if (r < 0)
        pact__error(loop, r, "epoll update of fd %d failed", op->fd);
}

static int ep_supports_link_timeout(pact_loop *loop, pact_op_s *op)
{
    (void)loop;
    (void)op;
    return 0; /* deadlines live on the loop's timer heap */
}

/* A multishot receive at the head of its fd's read queue: reads into the
 * loop-wide buffer and delivers each chunk (the op stays queued) until the
 * socket would block, the batch is used up, or the op ends (EOF, error,
 * or cancelled from a data callback). Returns 1 if the queue must wait for
 * the next readiness event, 0 if the op has left the queue. Inline in
 * ep_wait's path for a receive alone (its frame was 20 of the 64-byte
 * echo's instructions per request). */
static inline __attribute__((always_inline)) int
recv_multi_after_burst(pact_loop *loop, fd_entry *f, pact_op_s *op,
                       uint32_t revents, int r, int64_t final)
{
    /* A short read took the data, not the peer's FIN (or the error) that
     * came with it: an edge-triggered registration will not report that
     * hang-up again, so read on to the end of file. (Only the peer's
     * bytes sent before it can still come: this ends.) */
    while (r == 3 && (revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
           op->state == PACT_OP_INFLIGHT && pact_list_linked(&op->link))
        r = pact__op_recv_burst(loop, op, f->base.fd, &final, NULL, 1);
    if (r == 2 && op->state == PACT_OP_INFLIGHT && pact_list_linked(&op->link))
        retrigger(EPOLL_ENGINE(loop), f);
    if (r)
        return 1;
    /* Cancelled from a data callback: ep_cancel took it out of the queue
     * and its -ECANCELED is on the way. */
    if (op->state != PACT_OP_INFLIGHT)
        return 0;
    pact_list_remove(&op->link);
    op->result = final;
    pact__op_complete(loop, op);
    return 0;
}

static inline __attribute__((always_inline)) int
run_recv_multi(pact_loop *loop, fd_entry *f, pact_op_s *op, uint32_t revents,
               int *completed)
{
    int64_t final;
    (*completed)++;
    int r = pact__op_recv_burst(loop, op, f->base.fd, &final, NULL, 1);
    return recv_multi_after_burst(loop, f, op, revents, r, final);
}

/* run_recv_multi for a stream's receive alone on its fd (alone_stream),
 * reading into the loop's buffer: pact__op_recv_burst without the op.
 * A cancel (pause_reading, close, a deadline) takes a receive out of its
 * queue at once (ep_cancel), so while the fd entry still says its
 * stream's receive is alone, that receive is live, and the stream reads
 * on (a callback that ended its receive and started another left it
 * alone again, as run_queue would read on with the new one). Otherwise
 * (an op on the fd that a callback's cancel let go to the engine at
 * once, in the fd's order: op.c) the op at the head of the queue says:
 * the stream's live receive reads on with the general checks, anything
 * else means it ended. The
 * stream's hook is called directly, as io_uring's stream receive does.
 * callgrind --cache-sim (bench/c_counts.sh, two interleaved runs each):
 * D1 misses per request 3.32 -> 2.41 in the 64-byte echo at 500
 * connections, 4.69 -> 3.60 in HTTP at 500 (instructions within the
 * runs' ranges). The op is found only where the end needs it, not on
 * every event: 64-byte echo at 500 connections 202 -> 196 instructions
 * per request. */
static inline __attribute__((always_inline)) int
run_stream_recv(pact_loop *loop, fd_entry *f, uint32_t revents, int *completed)
{
    void *s = f->alone_stream;
    int fd = f->base.fd;
    int64_t final = 0;
    int r = 2;
    (*completed)++;
    for (int i = 0; i < PACT_RECV_BURST; i++) {
        ssize_t n = recv(fd, loop->burst_buf, loop->burst_buf_size, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;
        if (n <= 0) {
            final = n < 0 ? -errno : 0;
            r = 0;
            break;
        }
        int drained = (size_t)n < loop->burst_buf_size;
        PACT_RUN_CALLBACK(loop, pact__stream_recv_data, "operation callback",
                          pact__stream_recv_data(s, loop->burst_buf, (size_t)n));
        if (!receive_alone(f) || f->alone_stream != s) {
            pact_op_s *op = read_head(f);
            if (!op || op->kind != PACT_OP_RECV_MULTI || head_stream(f) != s ||
                (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT)))
                return 0; /* it ended: the caller runs what the queue holds */
            r = drained ? 3 : pact__op_recv_burst(loop, op, fd, &final, NULL, 1);
            break;
        }
        if (drained) {
            r = 3;
            break;
        }
    }
    if (r == 3 && !(revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        return 1;
    pact_op_s *op = pact_container_of(f->queues[QUEUE_READ].next, pact_op_s, link);
    return recv_multi_after_burst(loop, f, op, revents, r, final);
}

/* Accepts per readiness event before the other fds get their turn (the
 * listener stays armed: the rest waits for the next wait). */
#define ACCEPT_BURST 64

/* A multishot accept at the head of its fd's read queue: accepts and
 * delivers each connection until the listener would block, the burst is
 * used up, or the op ends (cancelled from a data callback, or an error
 * that stops accepting: EMFILE, ENFILE, ENOBUFS, ...). An error that
 * concerns one connection only (it was reset before we took it) is
 * delivered as that connection's result. Returns 1 if the queue must
 * wait for the next readiness event, 0 if the op has left the queue. */
static int run_accept_multi(pact_loop *loop, pact_op_s *op, int *completed)
{
    int64_t final = -ECANCELED;
    (*completed)++;
    for (int i = 0;; i++) {
        if (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT))
            break;
        if (i == ACCEPT_BURST)
            return 1;
        int fd = accept4(op->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            pact__op_deliver_accepted(loop, op, fd);
            continue;
        }
        int err = errno;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            return 1;
        if (err == ECONNABORTED || err == EPROTO || err == EPERM) {
            pact__op_deliver(loop, op, NULL, -err);
            continue;
        }
        final = -err;
        break;
    }
    /* Cancelled from a data callback: ep_cancel took it out of the queue
     * and its -ECANCELED is on the way. */
    if (op->state != PACT_OP_INFLIGHT)
        return 0;
    pact_list_remove(&op->link);
    op->result = final;
    pact__op_complete(loop, op);
    return 0;
}

/* Completes, in order, the waiting ops of a read or write queue until one
 * would still block. */
static int run_queue(pact_loop *loop, fd_entry *f, pact_list *queue,
                     uint32_t revents)
{
    int n = 0;
    while (!pact_list_empty(queue)) {
        pact_op_s *op = pact_container_of(queue->next, pact_op_s, link);
        if (op->kind == PACT_OP_RECV_MULTI) {
            if (run_recv_multi(loop, f, op, revents, &n))
                break;
            continue;
        }
        if (op->kind == PACT_OP_ACCEPT_MULTI) {
            if (run_accept_multi(loop, op, &n))
                break;
            continue;
        }
        int64_t r = try_op(f, op, revents);
        /* A receive woken by EPOLLERR that finds neither data nor a
         * pending error: the socket's error queue (IP_RECVERR, or a TCP
         * socket's MSG_ZEROCOPY and timestamp reports) holds entries,
         * which keep it "ready" until read with MSG_ERRQUEUE. Every re-arm
         * would report it again at once: complete with -EAGAIN (as
         * io_uring's recvmsg does), so the owner drains the queue instead
         * of the loop spinning (tests/test_udp.c,
         * udp/op_recv_with_an_undrained_error_queue_does_not_spin). */
        int errqueue = r == -EAGAIN &&
                       (op->kind == PACT_OP_RECVFROM || op->kind == PACT_OP_RECV) &&
                       (revents & EPOLLERR);
        if ((r == -EAGAIN || r == -EWOULDBLOCK || r == -EINTR) && !errqueue)
            break;
        if (errqueue && op->kind == PACT_OP_RECV && op->transferred)
            r = (int64_t)op->transferred; /* a MSG_WAITALL receive's bytes */
        pact_list_remove(&op->link);
        /* Deferred, not completed here: an earlier op of this queue that
         * finished at submission (try first) still waits in the done
         * queue, and running this one's callback first delivered a
         * stream's bytes out of order (torture, seed 1 on epoll: recv A
         * got X at submit, recv B got Y here, callbacks saw Y then X). */
        pact__op_defer(loop, op, r);
        n++;
    }
    return n;
}

/* Completes every poll op whose events are ready. They are taken out first
 * and completed after, since their callbacks may change the queue. */
static int run_pollers(pact_loop *loop, pact_list *queue, uint32_t revents)
{
    pact_list hits;
    pact_list_init(&hits);
    for (pact_list *it = queue->next; it != queue;) {
        pact_list *next = it->next;
        pact_op_s *op = pact_container_of(it, pact_op_s, link);
        uint32_t hit = revents & ((uint32_t)op->msg_flags | EPOLLERR | EPOLLHUP);
        if (hit && op->kind == PACT_OP_POLL) {
            pact_list_remove(it);
            op->result = hit;
            pact_list_push_back(&hits, it);
        }
        it = next;
    }
    int n = 0;
    pact_list *node;
    while ((node = pact_list_pop_front(&hits))) {
        pact__op_complete(loop, pact_container_of(node, pact_op_s, link));
        n++;
    }
    return n;
}

/* Delivers an epoll event to the fd's watchers, oldest first. They are
 * moved to the engine's `due` list and taken back one at a time right
 * before each is called: a callback that cancels a watcher still due
 * (pact_op_cancel takes it off whichever list it is on) or changes its
 * events removes or filters its delivery, and a watcher a callback adds
 * waits for the next event. */
static int run_watchers(pact_loop *loop, epoll_engine *e, fd_entry *f,
                        uint32_t revents)
{
    pact_list *events = &f->queues[QUEUE_EVENTS];
    for (pact_list *it = events->next; it != events;) {
        pact_list *next = it->next;
        if (pact_container_of(it, pact_op_s, link)->kind == PACT_OP_WATCH) {
            pact_list_remove(it);
            pact_list_push_back(&e->due, it);
        }
        it = next;
    }
    e->dispatching = f;
    int n = 0;
    pact_list *node;
    while ((node = pact_list_pop_front(&e->due))) {
        pact_list_push_back(events, node);
        pact__watch_deliver(loop, pact_container_of(node, pact_op_s, link),
                            revents);
        n++;
    }
    e->dispatching = NULL;
    return n;
}

/* Asks the cache for the lines an event's dispatch will read, ahead of
 * it (ep_wait). With hundreds of connections the kernel's work between
 * two events evicts the loop's per-connection state, and each event then
 * waited on three misses one after the other: the fd's entry, the receive
 * op at the head of its read queue, and the op's callback argument (a
 * transport), each found through the one before; a raw epoll server has
 * one (its connection). perf annotate, 64-byte echo, 500 connections:
 * most of ep_wait's, run_queue's and the stream receive callback's
 * samples sat on the first load from each. A prefetch never faults, so
 * a stale or NULL address costs nothing but the hint. */
static inline void prefetch_lines(const void *p, int lines)
{
    for (int i = 0; i < lines; i++)
        __builtin_prefetch((const char *)p + 64 * i);
}

/* The end of an event's dispatch: its fd's pollers and watchers, then the
 * registration follows what its queues wait for now. Returns the
 * completions delivered. */
static int rearm_after_event(pact_loop *loop, epoll_engine *e, fd_entry *f,
                             uint32_t rev, int lingered)
{
    int seen = 0;
    if (!pact_list_empty(&f->queues[QUEUE_EVENTS]))
        seen += run_pollers(loop, &f->queues[QUEUE_EVENTS], rev);
    if (!pact_list_empty(&f->queues[QUEUE_EVENTS]))
        seen += run_watchers(loop, e, f, rev);
    if (edge_receive_unchanged(f)) {
        set_alone(f, 1); /* what fd_rearm would find */
        return seen;
    }
    if (edge_receive_ended(e, f)) {
        edge_linger(f); /* what fd_rearm would do */
        return seen;
    }
    /* Callbacks above may have closed and reused this fd number; the
     * entry is still the one for the number, and re-arming heals
     * reuse. */
    int r = fd_rearm(e, f, lingered);
    if (r < 0)
        pact__error(loop, r, "epoll re-arm of fd %d failed", f->base.fd);
    return seen;
}

static int ep_wait(pact_loop *loop, int64_t timeout_ns)
{
    epoll_engine *e = EPOLL_ENGINE(loop);
    /* 128 events, and 3 that name e->beyond (the prefetches) */
    struct epoll_event events[128 + 3];
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000ll;
        ts.tv_nsec = timeout_ns % 1000000000ll;
        tsp = &ts;
    }
    loop->stats.syscalls_enter++;
    /* epoll_pwait2 (a nanosecond timeout) needs 5.11, and valgrind 3.19
     * does not know it (ENOSYS: every wait failed, so `make valgrind`
     * found this); then epoll_wait with the timeout rounded up to whole
     * milliseconds, so a timer never fires early. */
    static atomic_int no_pwait2;
    int n = -1;
    pact__wait_hook_before(loop, timeout_ns);
    if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        n = epoll_pwait2(e->epfd, events, 128, tsp, NULL);
        if (n < 0 && errno == ENOSYS)
            atomic_store_explicit(&no_pwait2, 1, memory_order_relaxed);
    }
    if (atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        int64_t ms = timeout_ns < 0 ? -1 : (timeout_ns + 999999) / 1000000;
        n = epoll_wait(e->epfd, events, 128, ms > INT32_MAX ? INT32_MAX : (int)ms);
    }
    pact__wait_hook_after(loop, timeout_ns);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    int seen = 0;
    /* Ahead of the dispatch (prefetch_lines), one step per event: the
     * fd entry three events ahead, the op two ahead (its entry came in
     * meanwhile), the op's argument one ahead (so did the op). Prefetching
     * every entry of the batch at once did not work: most were gone
     * again (or never came) by the time their event was reached. The
     * events past the last name e->beyond, so that none of this needs a
     * bounds check (callgrind: 30 instructions per event with them). */
    for (int i = n; i < n + 3; i++)
        events[i].data.ptr = &e->beyond;
    for (int i = 0; i < n && i < 3; i++)
        prefetch_lines(events[i].data.ptr, 2);
    for (int i = 0; i < n; i++) {
        const pact_op_s *ahead;
        const fd_entry *f1 = events[i + 1].data.ptr;
        prefetch_lines(events[i + 3].data.ptr, 2);
        /* Without a test: a prefetch of a wrong address costs nothing. A
         * stream's receive alone needs no op (run_stream_recv): its
         * stream is named by the entry. */
        const fd_entry *f2 = events[i + 2].data.ptr;
        if (!f2->alone_stream) {
            const pact_list *op_link = f2->queues[QUEUE_READ].next;
            __builtin_prefetch(op_link);
            __builtin_prefetch(&pact_container_of(op_link, pact_op_s, link)->kind);
        }
        if (f1->alone_stream)
            prefetch_lines(f1->alone_stream, 2);
        else if ((ahead = read_head(f1)))
            prefetch_lines(ahead->user, 2);
        fd_entry *f = events[i].data.ptr;
        uint32_t rev = events[i].events;
        if ((rev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) &&
            receive_alone(f)) {
            /* The common event: a transport's receive alone on its
             * edge-triggered registration (nothing to poll, no watcher, no
             * write waiting, not disarmed by ONESHOT). What the general
             * path below does for it, without its tests of the other
             * queues. */
            int waits;
            /* (a receive-buffer hook sets recv_large too; neither
             * changes while the loop runs) */
            if (f->alone_stream && loop->burst_buf && !loop->recv_buffer_get) {
                waits = run_stream_recv(loop, f, rev, &seen);
            } else {
                pact_op_s *op = pact_container_of(f->queues[QUEUE_READ].next,
                                                  pact_op_s, link);
                waits = run_recv_multi(loop, f, op, rev, &seen);
            }
            /* The callbacks it ran changed no queue of this fd (any change
             * would have gone through fd_rearm): nothing to re-arm. */
            if (waits && receive_alone(f))
                continue;
            if (!waits)
                seen += run_queue(loop, f, &f->queues[QUEUE_READ], rev);
            if (rev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                seen += run_queue(loop, f, &f->queues[QUEUE_WRITE], rev);
            seen += rearm_after_event(loop, e, f, rev, 0);
            continue;
        }
        /* An event of a registration left lingering: nothing waited for
         * it (unless a callback below starts something); it goes now. */
        int lingered = flag(f, FD_LINGER);
        if (!flag(f, FD_LEVEL))
            f->base.engine_events = 0; /* ONESHOT */
        /* Errors and hang-ups wake both sides: the syscall reports them.
         * A receive that finds the socket empty again says so itself
         * (note_receive). */
        if (rev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
            forget_drained(f);
            seen += run_queue(loop, f, &f->queues[QUEUE_READ], rev);
        }
        if (rev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            seen += run_queue(loop, f, &f->queues[QUEUE_WRITE], rev);
        seen += rearm_after_event(loop, e, f, rev, lingered);
    }
    return seen;
}

/* The epoll fd itself: readable while an fd in it has an event. */
static int ep_backend_fd(pact_loop *loop)
{
    return EPOLL_ENGINE(loop)->epfd;
}

/* Everything is handed to the kernel at submit (epoll_ctl). */
static int ep_has_unsubmitted(pact_loop *loop)
{
    (void)loop;
    return 0;
}

/* epoll_wait may be called from any thread: a loop moves as it is. */
static int ep_adopt_thread(pact_loop *loop)
{
    (void)loop;
    return 0;
}

static void ep_flush(pact_loop *loop)
{
    (void)loop; /* every write that can go at once went at once */
}

/* No send slots: a stream's queued send waits for writability in the op
 * layer's wait queue, and most writes never queue (stream.c sends
 * eagerly). loop->send_slots stays 0, so these are never called. */
static int ep_slot_send(pact_loop *loop, pact_send_slot *slot, int fd,
                        const void *buf, size_t len, int flags)
{
    (void)loop; (void)slot; (void)fd; (void)buf; (void)len; (void)flags;
    return -EOPNOTSUPP;
}

static void ep_slot_cancel(pact_loop *loop, pact_send_slot *slot)
{
    (void)loop; (void)slot;
}

/* No send waits for a submission here (every write that can go at once
 * went at once): never asked. */
static int ep_first_try_sent(pact_loop *loop, pact_send_slot *slot,
                             pact_op op, size_t len)
{
    (void)loop; (void)slot; (void)op; (void)len;
    return -EOPNOTSUPP;
}

static void ep_close_socket(pact_loop *loop, int fd)
{
    (void)loop;
    close(fd);
}

/* epoll keeps no per-file registration beyond the one pact__fd_closing
 * clears (PACT_FD_REGISTERED). */
static void ep_fd_owned(pact_loop *loop, int fd)
{
    (void)loop;
    (void)fd;
}

/* The loop closes the file: the number's next file is not known yet. */
static void ep_fd_closing(pact_loop *loop, pact_fd_entry *f)
{
    (void)loop;
    set_file_kind((fd_entry *)f, FD_FILE_UNKNOWN);
}

PACT_ENGINE_DEFINE(epoll, ep, "epoll");
