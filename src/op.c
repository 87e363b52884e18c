/* SPDX-License-Identifier: MIT */
/* Operations: start, cancel, deadlines and completion — the engine-agnostic
 * half of the "overlapped" layer. The engines only move ops between the
 * kernel and pact__op_complete() / pact__op_defer(). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifndef _WIN32
#include <poll.h>
#endif

#include "fault.h"
#include "loop.h"
#include "pool.h"

pact_op_s *pact__op_new(pact_loop *loop, pact_op_kind kind, pact_os_sock fd,
                        pact_op_cb cb, void *user, int *err)
{
    uint32_t idx;
    pact_op_s *op = pact_slab_alloc(&loop->ops, &idx);
    if (!op) {
        *err = -ENOMEM;
        return NULL;
    }
    op->kind = (uint8_t)kind;
    op->fd = fd;
    op->cb = cb;
    op->user = user;
    op->offset = -1;
    op->deadline.pos = UINT32_MAX;
    pact_list_init(&op->link);
    return op;
}

pact_op_ext *pact__op_ext(pact_loop *loop, pact_op_s *op)
{
    if (op->ext)
        return op->ext;
    uint32_t idx;
    op->ext = pact_slab_alloc(&loop->op_ext, &idx);
    return op->ext;
}

/* pact__op_begin() once pact__check_loop() has passed (start_io checks
 * the loop itself first). */
static pact_op_s *op_begin_loop_checked(pact_loop *loop, pact_op_kind kind,
                                        pact_os_sock fd, pact_op_cb cb,
                                        void *user, const char *func, int *err)
{
    if (!cb) {
        *err = pact__misuse(loop, -EINVAL, func, "callback is NULL");
        return NULL;
    }
    /* (int64_t): on Windows INVALID_SOCKET, an unsigned ~0, is refused. */
    if (kind != PACT_OP_SLEEP && (int64_t)fd < 0 && fd != AT_FDCWD) {
        *err = pact__misuse(loop, -EBADF, func, "fd is negative");
        return NULL;
    }
    return pact__op_new(loop, kind, fd, cb, user, err);
}

/* The checks every public start function shares (also fs.c's): an open
 * loop owned by this thread, a callback, an fd — AT_FDCWD is let through
 * for the path-based file ops. */
pact_op_s *pact__op_begin(pact_loop *loop, pact_op_kind kind, pact_os_sock fd,
                          pact_op_cb cb, void *user, const char *func,
                          int *err)
{
    *err = pact__check_loop(loop, func);
    if (*err)
        return NULL;
    return op_begin_loop_checked(loop, kind, fd, cb, user, func, err);
}

static int check_buffer(pact_loop *loop, const void *buf, size_t len,
                        const char *func)
{
    if (!buf && len > 0)
        return pact__misuse(loop, -EFAULT, func, "buffer is NULL");
    if (len > (size_t)INT32_MAX)
        return pact__misuse(loop, -EINVAL, func, "length over 2 GiB");
    return 0;
}

/* Whether an op acts on a peer (bytes, a shutdown, a close, a connect):
 * queued by a callback, it must reach the kernel before the run returns,
 * not with the next run's wait (loop.c, hand_over_held_work). */
static int op_goes_out(enum pact_op_kind kind)
{
    return kind == PACT_OP_SEND || kind == PACT_OP_SEND_ALL ||
           kind == PACT_OP_SENDTO || kind == PACT_OP_WRITE ||
           kind == PACT_OP_SHUTDOWN || kind == PACT_OP_CLOSE ||
           kind == PACT_OP_CONNECT;
}

static pact_op op_queue(pact_loop *loop, pact_op_s *op, void *created_at)
{
    op->created_at = created_at;
    op->state = PACT_OP_QUEUED;
    pact_list_push_back(&loop->submit_queue, &op->link);
    if (op_goes_out(op->kind))
        loop->outgoing_queued = 1;
    loop->stats.ops_started++;
    if (!(op->flags & PACT_OPF_INTERNAL))
        loop->user_ops_live++;
    return pact__op_handle(loop, op);
}

pact_op pact__op_start(pact_loop *loop, pact_op_s *op, void *created_at)
{
    return op_queue(loop, op, created_at);
}

pact_op pact__op_start_custom(pact_loop *loop, pact_op_s *op, void *created_at)
{
    op->created_at = created_at;
    op->state = PACT_OP_INFLIGHT;
    loop->stats.ops_started++;
    if (!(op->flags & PACT_OPF_INTERNAL))
        loop->user_ops_live++;
    return pact__op_handle(loop, op);
}

pact_op pact__op_start_internal(pact_loop *loop, pact_op_s *op)
{
    op->flags |= PACT_OPF_INTERNAL;
    return op_queue(loop, op, __builtin_return_address(0));
}

pact_op_s *pact__op_lookup(pact_loop *loop, pact_op handle)
{
    uint32_t idx;
    return pact_slab_from_handle(&loop->ops, handle, &idx);
}

/* The op a user's handle names: the loop's own ops (its wake-up read) are
 * not the user's to cancel or time out, so they are not found. */
static pact_op_s *user_op_lookup(pact_loop *loop, pact_op handle)
{
    pact_op_s *op = pact__op_lookup(loop, handle);
    return op && !(op->flags & PACT_OPF_INTERNAL) ? op : NULL;
}

/* ---- the public start functions ---------------------------------------- */

#define OP_START(kind, fd)                                                  \
    int err_;                                                               \
    pact_op_s *op = pact__op_begin(loop, (kind), (fd), cb, user, __func__, &err_); \
    if (!op)                                                                \
        return err_;

#define OP_FINISH() return op_queue(loop, op, __builtin_return_address(0))

static pact_op start_io(pact_loop *loop, pact_op_kind kind, pact_os_sock fd, void *buf,
                        size_t len, int flags, int64_t offset, pact_op_cb cb,
                        void *user, const char *func, void *created_at)
{
    int err = pact__check_loop(loop, func);
    if (err)
        return err;
    err = check_buffer(loop, buf, len, func);
    if (err)
        return err;
    /* The loop was checked above: once per op is enough (callgrind, a
     * send from a stream: 29 instructions for the second check). */
    pact_op_s *op = op_begin_loop_checked(loop, kind, fd, cb, user, func, &err);
    if (!op)
        return err;
    op->buf = buf;
    op->len = len;
    op->msg_flags = flags;
    op->offset = offset;
    return op_queue(loop, op, created_at);
}

pact_op pact_recv(pact_loop *loop, pact_os_sock fd, void *buf, size_t len, int flags,
                  pact_op_cb cb, void *user)
{
    return start_io(loop, PACT_OP_RECV, fd, buf, len, flags, -1, cb, user,
                    __func__, __builtin_return_address(0));
}

pact_op pact_recv_multishot(pact_loop *loop, pact_os_sock fd, pact_op_cb cb, void *user)
{
    OP_START(PACT_OP_RECV_MULTI, fd);
    OP_FINISH();
}

pact_op pact__recv_multishot_hooked(pact_loop *loop, pact_os_sock fd,
                                    pact__data_hook data, pact_op_cb cb,
                                    void *user, pact__recv_start start)
{
    int err_;
    pact_op_s *op = pact__op_begin(loop, PACT_OP_RECV_MULTI, fd, cb, user,
                                   "pact_recv_multishot", &err_);
    if (!op)
        return err_;
    op->flags |= PACT_OPF_DATA_HOOK;
    if (start == PACT__RECV_POLL_FIRST)
        op->flags |= PACT_OPF_POLL_FIRST;
    else if (start == PACT__RECV_BY_READINESS)
        op->flags |= PACT_OPF_RECV_BY_READINESS;
    op->data_hook = data;
    OP_FINISH();
}

int pact__recv_reads_large(pact_loop *loop, pact_op handle)
{
    const pact_op_s *op = pact__op_lookup(loop, handle);
    return loop->recv_large && op && op->kind == PACT_OP_RECV_MULTI &&
           (op->flags & (PACT_OPF_RECV_BY_READINESS | PACT_OPF_RECV_SWITCHING));
}

pact_op pact__accept_multishot(pact_loop *loop, pact_os_sock fd, pact_op_cb cb,
                               void *user)
{
    if (loop && !loop->accept_multi)
        return -EOPNOTSUPP;
    OP_START(PACT_OP_ACCEPT_MULTI, fd);
    OP_FINISH();
}

const char *pact_loop_recv_multishot_mode(const pact_loop *loop)
{
    return loop && loop->recv_multi_mode ? loop->recv_multi_mode : "epoll";
}

pact_op pact_send(pact_loop *loop, pact_os_sock fd, const void *buf, size_t len,
                  int flags, pact_op_cb cb, void *user)
{
    return start_io(loop, PACT_OP_SEND, fd, (void *)buf, len,
                    flags | MSG_NOSIGNAL, -1, cb, user, __func__,
                    __builtin_return_address(0));
}

pact_op pact_send_all(pact_loop *loop, pact_os_sock fd, const void *buf, size_t len,
                      int flags, pact_op_cb cb, void *user)
{
    return start_io(loop, PACT_OP_SEND_ALL, fd, (void *)buf, len,
                    flags | MSG_NOSIGNAL, -1, cb, user, __func__,
                    __builtin_return_address(0));
}

/* The msghdr lives in the op's ext block, as long as the op: the kernel
 * reads it until the completion. */
static void setup_msg(pact_op_s *op, int with_addr)
{
    pact_op_ext *x = op->ext;
    x->iov.iov_base = op->buf;
    x->iov.iov_len = op->len;
    x->msg.msg_iov = &x->iov;
    x->msg.msg_iovlen = 1;
    x->msg.msg_name = with_addr ? &x->addr : NULL;
    x->msg.msg_namelen = with_addr ? x->addrlen : 0;
}

/* An op that could not get its ext block is dropped unstarted. */
static pact_op op_no_ext(pact_loop *loop, pact_op_s *op)
{
    pact__op_release(loop, op);
    return -ENOMEM;
}

pact_op pact_recvfrom(pact_loop *loop, pact_os_sock fd, void *buf, size_t len,
                      int flags, pact_op_cb cb, void *user)
{
    int err = pact__check_loop(loop, __func__);
    if (err)
        return err;
    err = check_buffer(loop, buf, len, __func__);
    if (err)
        return err;
    pact_op_s *op = pact__op_begin(loop, PACT_OP_RECVFROM, fd, cb, user, __func__,
                             &err);
    if (!op)
        return err;
    pact_op_ext *x = pact__op_ext(loop, op);
    if (!x)
        return op_no_ext(loop, op);
    op->buf = buf;
    op->len = len;
    op->msg_flags = flags;
    x->addrlen = sizeof x->addr;
    setup_msg(op, 1);
    return op_queue(loop, op, __builtin_return_address(0));
}

pact_op pact_sendto(pact_loop *loop, pact_os_sock fd, const void *buf, size_t len,
                    int flags, const struct sockaddr *addr, socklen_t addrlen,
                    pact_op_cb cb, void *user)
{
    int err = pact__check_loop(loop, __func__);
    if (err)
        return err;
    err = check_buffer(loop, buf, len, __func__);
    if (err)
        return err;
    if (addr && (addrlen == 0 || (size_t)addrlen > sizeof(struct sockaddr_storage)))
        return PACT_MISUSE(loop, -EINVAL, "bad address length");
    pact_op_s *op = pact__op_begin(loop, PACT_OP_SENDTO, fd, cb, user, __func__,
                             &err);
    if (!op)
        return err;
    pact_op_ext *x = pact__op_ext(loop, op);
    if (!x)
        return op_no_ext(loop, op);
    op->buf = (void *)buf;
    op->len = len;
    op->msg_flags = flags | MSG_NOSIGNAL;
    if (addr) {
        memcpy(&x->addr, addr, addrlen);
        x->addrlen = addrlen;
    }
    setup_msg(op, addr != NULL);
    return op_queue(loop, op, __builtin_return_address(0));
}

pact_op pact_read(pact_loop *loop, pact_os_fd fd, void *buf, size_t len,
                  int64_t offset, pact_op_cb cb, void *user)
{
    if (offset < -1)
        return PACT_MISUSE(loop, -EINVAL, "offset below -1");
    return start_io(loop, PACT_OP_READ, (pact_os_sock)fd, buf, len, 0, offset, cb, user,
                    __func__, __builtin_return_address(0));
}

pact_op pact_write(pact_loop *loop, pact_os_fd fd, const void *buf, size_t len,
                   int64_t offset, pact_op_cb cb, void *user)
{
    if (offset < -1)
        return PACT_MISUSE(loop, -EINVAL, "offset below -1");
    return start_io(loop, PACT_OP_WRITE, (pact_os_sock)fd, (void *)buf, len, 0, offset, cb,
                    user, __func__, __builtin_return_address(0));
}

pact_op pact_accept(pact_loop *loop, pact_os_sock listen_fd, pact_op_cb cb, void *user)
{
    OP_START(PACT_OP_ACCEPT, listen_fd);
    pact_op_ext *x = pact__op_ext(loop, op);
    if (!x)
        return op_no_ext(loop, op);
    x->addrlen = sizeof x->addr;
    OP_FINISH();
}

pact_op pact_connect(pact_loop *loop, pact_os_sock fd, const struct sockaddr *addr,
                     socklen_t addrlen, pact_op_cb cb, void *user)
{
    if (loop && (!addr || addrlen == 0 || (size_t)addrlen > sizeof(struct sockaddr_storage)))
        return PACT_MISUSE(loop, -EINVAL, "bad address");
    OP_START(PACT_OP_CONNECT, fd);
    pact_op_ext *x = pact__op_ext(loop, op);
    if (!x)
        return op_no_ext(loop, op);
    memcpy(&x->addr, addr, addrlen);
    x->addrlen = addrlen;
    OP_FINISH();
}

pact_op pact_shutdown(pact_loop *loop, pact_os_sock fd, int how, pact_op_cb cb,
                      void *user)
{
    if (loop && how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
        return PACT_MISUSE(loop, -EINVAL, "how is not SHUT_RD/WR/RDWR");
    OP_START(PACT_OP_SHUTDOWN, fd);
    op->msg_flags = how;
    OP_FINISH();
}

pact_op pact_poll(pact_loop *loop, pact_os_sock fd, unsigned events, pact_op_cb cb,
                  void *user)
{
    if (loop && (events & (POLLIN | POLLOUT | POLLPRI | POLLRDHUP)) == 0)
        return PACT_MISUSE(loop, -EINVAL, "no events to wait for");
    OP_START(PACT_OP_POLL, fd);
    op->msg_flags = (int)events;
    OP_FINISH();
}

pact_op pact_sleep(pact_loop *loop, uint64_t delay_ns, pact_op_cb cb,
                   void *user)
{
    OP_START(PACT_OP_SLEEP, -1);
    /* A sleep needs no kernel: it lives in the loop's timer heap on both
     * engines, which costs no system call per timer. */
    uint64_t now = pact_now();
    op->deadline.kind = PACT_TIMER_OP_SLEEP;
    op->deadline.when = delay_ns > UINT64_MAX - now ? UINT64_MAX : now + delay_ns;
    if (pact_heap_insert(&loop->timers, &op->deadline) != 0) {
        pact_slab_free(&loop->ops, op->slab.next_free);
        return -ENOMEM;
    }
    op->created_at = __builtin_return_address(0);
    op->state = PACT_OP_INFLIGHT;
    loop->stats.ops_started++;
    loop->user_ops_live++;
    return pact__op_handle(loop, op);
}

/* ---- deadlines ----------------------------------------------------------- */

static int arm_heap_deadline(pact_loop *loop, pact_op_s *op)
{
    uint64_t now = pact_now();
    op->deadline.kind = PACT_TIMER_OP_DEADLINE;
    op->deadline.when = op->timeout_ns > UINT64_MAX - now ? UINT64_MAX
                                                          : now + op->timeout_ns;
    return pact_heap_insert(&loop->timers, &op->deadline);
}

int pact_op_set_timeout(pact_loop *loop, pact_op handle, uint64_t timeout_ns)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    pact_op_s *op = user_op_lookup(loop, handle);
    if (!op)
        return -ENOENT;
    if (timeout_ns == 0)
        return PACT_MISUSE(loop, -EINVAL, "timeout is 0");
    if (op->kind == PACT_OP_SLEEP)
        return PACT_MISUSE(loop, -EINVAL, "a sleep is its own deadline");
    if (op->state == PACT_OP_DONE || (op->flags & PACT_OPF_CANCEL_REQUESTED))
        return -EALREADY;
    if (op->timeout_ns)
        return PACT_MISUSE(loop, -EBUSY, "the op already has a deadline");
    op->timeout_ns = timeout_ns;
    if (op->state == PACT_OP_QUEUED)
        return 0; /* armed at submission: linked timeout or heap */
    return arm_heap_deadline(loop, op);
}

void pact__op_timer_fired(pact_loop *loop, pact_heap_node *n)
{
    pact_op_s *op = pact_container_of(n, pact_op_s, deadline);
    if (n->kind == PACT_TIMER_OP_SLEEP) {
        op->result = 0;
        pact__op_complete(loop, op);
        return;
    }
    if (op->state == PACT_OP_DONE || (op->flags & PACT_OPF_CANCEL_REQUESTED))
        return;
    op->flags |= PACT_OPF_TIMED_OUT;
    pact__op_cancel(loop, op);
}

/* ---- submission, cancellation, completion -------------------------------- */

/* ---- order on one fd -----------------------------------------------------
 * Ops that consume or produce a byte stream (or datagrams) on one fd
 * complete in the order they were started: two recvs never swap their
 * data, sends queued on a full socket never write the stream backwards.
 * The policy is the op layer's, the same for every engine: per fd and
 * direction only one such op is with the engine (the head); the others
 * wait in the fd's queue and the next goes to the engine once the head's
 * result is known (pact__op_defer / pact__op_complete). The engines need
 * this because io_uring wakes poll waiters last-armed-first (queued recvs
 * got their bytes in reverse order) and epoll's readiness says nothing
 * about which waiter is first. */

enum { ORDER_IN, ORDER_OUT };
/* pact_fd_entry.order_bits: an op of the direction is with the engine;
 * order_release() is letting the direction's next ones go. */
#define ORDER_BUSY(dir) ((uint8_t)(1u << (dir)))
#define ORDER_RELEASING(dir) ((uint8_t)(4u << (dir)))

/* The order lives in the loop's fd entry (fd_table.h: order_bits,
 * order_waiting), beside the engine's state for the fd. */

/* The direction whose order an op keeps, or -1 for ops that need none
 * (positioned file I/O, accept, connect, poll, ...). */
static int order_direction(const pact_op_s *op)
{
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_RECV:
    case PACT_OP_RECV_MULTI:
    case PACT_OP_RECVFROM:
        return ORDER_IN;
    case PACT_OP_SEND:
    case PACT_OP_SEND_ALL:
    case PACT_OP_SENDTO:
        return ORDER_OUT;
    case PACT_OP_READ:
        return op->offset < 0 ? ORDER_IN : -1;
    case PACT_OP_WRITE:
        return op->offset < 0 ? ORDER_OUT : -1;
    default:
        return -1;
    }
}

/* Hands an op to the engine (or the thread pool); a deadline the engine
 * did not take goes on the loop's heap. f: op's fd entry, if order_wait
 * looked it up (the engine need not look it up again), else NULL. */
static void submit_now(pact_loop *loop, pact_op_s *op, pact_fd_entry *f)
{
    int engine_armed_deadline = (op->flags & PACT_OPF_OFFLOAD)
                                    ? pact__pool_submit(loop, op)
                                    : loop->engine->submit(loop, op, f);
    if (op->timeout_ns && !engine_armed_deadline &&
        op->state == PACT_OP_INFLIGHT && !pact_heap_contains(&op->deadline) &&
        arm_heap_deadline(loop, op) != 0)
        pact__error(loop, -ENOMEM, "cannot arm an operation's deadline");
}

/* Returns 1 if op must wait for an earlier op of its fd (it is queued),
 * 0 if it may go to the engine now (it is its fd's head). *fp: the fd's
 * entry, NULL for an op that keeps no order. */
static int order_wait(pact_loop *loop, pact_op_s *op, pact_fd_entry **fp)
{
    *fp = NULL;
    int dir = order_direction(op);
    if (dir < 0)
        return 0;
    pact_fd_entry *f = *fp = pact_fd_table_get(&loop->fds, op->fd);
    if (!f)
        return 0; /* ENOMEM: unordered rather than not at all */
    if (f->order_bits & ORDER_BUSY(dir)) {
        op->flags |= PACT_OPF_ORDER_WAITING;
        pact_list_push_back(&f->order_waiting, &op->link);
        return 1;
    }
    op->flags |= PACT_OPF_ORDER_HEAD;
    f->order_bits |= ORDER_BUSY(dir);
    return 0;
}

/* The first op of direction dir waiting on f, or NULL. Both directions
 * share one list (one list head less per fd: the idle-connection memory
 * goal); it is empty but for ops started while an earlier one of their
 * fd was still with the engine. */
static pact_op_s *first_waiting(pact_fd_entry *f, int dir)
{
    pact_list *head = &f->order_waiting;
    for (pact_list *n = head->next; n != head; n = n->next) {
        pact_op_s *op = pact_container_of(n, pact_op_s, link);
        if (order_direction(op) == dir)
            return op;
    }
    return NULL;
}

/* op's result is known: the next op of its fd and direction goes to the
 * engine. Iterative, not recursive: a next op that completes at once
 * (epoll tries it at submission) releases from inside submit_now(), which
 * only clears the head; this loop then takes the one after it. While the
 * loop closes, waiting ops are not started: close cancels them. */
static void order_release(pact_loop *loop, pact_op_s *op)
{
    if (!(op->flags & PACT_OPF_ORDER_HEAD))
        return;
    op->flags &= ~PACT_OPF_ORDER_HEAD;
    int dir = order_direction(op);
    pact_fd_entry *f = pact_fd_table_find(&loop->fds, op->fd);
    f->order_bits &= (uint8_t)~ORDER_BUSY(dir);
    /* Nothing waits (the common case: a stream keeps one op of each
     * direction with the engine): nothing to let go. */
    if (pact_list_empty(&f->order_waiting) || (f->order_bits & ORDER_RELEASING(dir)))
        return;
    f->order_bits |= ORDER_RELEASING(dir);
    pact_op_s *next;
    while (!(f->order_bits & ORDER_BUSY(dir)) &&
           loop->state == PACT_LOOP_OPEN && (next = first_waiting(f, dir))) {
        pact_list_remove(&next->link);
        next->flags &= ~PACT_OPF_ORDER_WAITING;
        next->flags |= PACT_OPF_ORDER_HEAD;
        f->order_bits |= ORDER_BUSY(dir);
        submit_now(loop, next, f);
    }
    f->order_bits &= (uint8_t)~ORDER_RELEASING(dir);
}

void pact__fd_owned(pact_loop *loop, int fd)
{
    loop->engine->fd_owned(loop, fd);
}

void pact__fd_closing(pact_loop *loop, int fd)
{
    /* One lookup for the engine and the loop (callgrind, connect / one
     * request / close on io_uring: the engine's own was ~25 instructions
     * per connection). */
    pact_fd_entry *f = pact_fd_table_find(&loop->fds, fd);
    if (!f)
        return;
    loop->engine->fd_closing(loop, f);
    f->engine_flags &= (uint8_t)~PACT_FD_REGISTERED;
    f->engine_events = 0;
}

void pact__ops_flush(pact_loop *loop)
{
    pact_list *node;
    loop->outgoing_queued = 0; /* all of them go now */
    while ((node = pact_list_pop_front(&loop->submit_queue))) {
        pact_op_s *op = pact_container_of(node, pact_op_s, link);
        op->state = PACT_OP_INFLIGHT;
        /* Fault injection (tests only): the kernel is asked for half the
         * length, as a short read or send would give. */
        if ((op->kind == PACT_OP_RECV || op->kind == PACT_OP_SEND ||
             op->kind == PACT_OP_READ || op->kind == PACT_OP_WRITE) &&
            op->len > 1 && !(op->flags & PACT_OPF_INTERNAL) &&
            PACT_FAULT(PACT_FAULT_SHORT_IO))
            op->len = (op->len + 1) / 2;
        pact_fd_entry *f;
        if (order_wait(loop, op, &f)) {
            /* Waits its turn; its deadline runs from now, on the heap. */
            if (op->timeout_ns && arm_heap_deadline(loop, op) != 0)
                pact__error(loop, -ENOMEM, "cannot arm an operation's deadline");
            continue;
        }
        submit_now(loop, op, f);
    }
}

int pact__op_cancel(pact_loop *loop, pact_op_s *op)
{
    if (op->state == PACT_OP_DONE || (op->flags & PACT_OPF_CANCEL_REQUESTED))
        return -EALREADY;
    op->flags |= PACT_OPF_CANCEL_REQUESTED;
    if (op->state == PACT_OP_QUEUED || (op->flags & PACT_OPF_ORDER_WAITING)) {
        /* Never reached the engine (not flushed yet, or waiting for an
         * earlier op of its fd): cancel locally, callback later. */
        op->flags &= ~PACT_OPF_ORDER_WAITING;
        pact_list_remove(&op->link);
        pact__op_defer(loop, op, -ECANCELED);
        return 0;
    }
    if (op->kind == PACT_OP_SLEEP) {
        pact_heap_remove(&loop->timers, &op->deadline);
        pact__op_defer(loop, op, -ECANCELED);
        return 0;
    }
    if (op->kind == PACT_OP_CUSTOM) {
        if (pact_heap_contains(&op->deadline))
            pact_heap_remove(&loop->timers, &op->deadline);
        op->custom_cancel(loop, op);
        return 0;
    }
    if (op->flags & PACT_OPF_OFFLOAD)
        return pact__pool_cancel(loop, op); /* 0, or -EALREADY if running */
    loop->engine->cancel(loop, op);
    return 0;
}

int pact_op_cancel(pact_loop *loop, pact_op handle)
{
    int r = pact__check_loop_for_cancel(loop, __func__);
    if (r)
        return r;
    pact_op_s *op = user_op_lookup(loop, handle);
    if (!op)
        return -ENOENT;
    r = pact__op_cancel(loop, op);
    /* A cancel in progress keeps the loop alive until the callback, as a
     * close in progress does in libuv: io_uring answers a cancel at the
     * next wait, and a run that returned first (the last referenced work
     * ended in the same iteration) would leave the callback to a later
     * run or to pact_loop_free, where epoll delivers it before the run
     * returns. */
    if (r == 0 && (op->flags & PACT_OPF_UNREF)) {
        op->flags &= (uint16_t)~PACT_OPF_UNREF;
        loop->unref_ops--;
    }
    return r;
}

void pact__op_defer(pact_loop *loop, pact_op_s *op, int64_t result)
{
    op->result = result;
    op->state = PACT_OP_DONE;
    pact_list_push_back(&loop->done_queue, &op->link);
    order_release(loop, op);
}

void pact__op_deliver_completion(pact_loop *loop, pact_op_s *op,
                                 const void *data, int64_t len)
{
    pact_completion c = {
        .op = pact__op_handle(loop, op),
        .result = len,
        .data = data,
        .more = 1,
    };
    PACT_RUN_CALLBACK(loop, op->cb, "operation callback",
                      op->cb(loop, &c, op->user));
}

#ifdef PACT_FAULT_INJECTION
/* Fault injection (tests only): a success turns into the armed error; an
 * accepted fd is closed first, as if accept itself had failed. */
static void fault_result(pact_op_s *op)
{
    if (op->result < 0)
        return;
    int err;
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_RECV: case PACT_OP_SEND: case PACT_OP_SEND_ALL:
    case PACT_OP_READ: case PACT_OP_WRITE: case PACT_OP_CONNECT:
        if ((err = PACT_FAULT(PACT_FAULT_OP_ERROR)) != 0)
            op->result = err;
        break;
    case PACT_OP_ACCEPT:
        if ((err = PACT_FAULT(PACT_FAULT_ACCEPT)) != 0) {
            close((int)op->result);
            op->result = err;
        }
        break;
    default:
        break;
    }
}
#endif

void pact__op_complete(pact_loop *loop, pact_op_s *op)
{
#ifdef PACT_FAULT_INJECTION
    fault_result(op);
#endif
    order_release(loop, op); /* before the callback, as the engine's done */
    if (pact_heap_contains(&op->deadline))
        pact_heap_remove(&loop->timers, &op->deadline);
    if ((op->flags & PACT_OPF_TIMED_OUT) && op->result == -ECANCELED)
        op->result = -ETIMEDOUT;
    op->state = PACT_OP_DONE;

    pact_completion c = {
        .op = pact__op_handle(loop, op),
        .result = op->result,
    };
    if (op->kind == PACT_OP_SEND || op->kind == PACT_OP_SEND_ALL)
        c.transferred = op->transferred;
    if (op->kind == PACT_OP_ACCEPT && op->result >= 0) {
        c.addr = (const struct sockaddr *)&op->ext->addr;
        c.addrlen = op->ext->addrlen;
    }
    /* recvfrom: the sender, when the kernel named one (an unbound Unix
     * socket has no name: addr stays NULL). */
    if (op->kind == PACT_OP_RECVFROM && op->result >= 0 &&
        op->ext->msg.msg_namelen > 0) {
        c.addr = (const struct sockaddr *)&op->ext->addr;
        c.addrlen = op->ext->msg.msg_namelen;
    }
    if (op->extra && op->extra->fill)
        op->extra->fill(op, &c);
    loop->stats.ops_completed++;
    PACT_RUN_CALLBACK(loop, op->cb, "operation callback",
                      op->cb(loop, &c, op->user));
    if (!(op->flags & PACT_OPF_INTERNAL))
        loop->user_ops_live--;
    if (op->flags & PACT_OPF_UNREF)
        loop->unref_ops--;
    pact__op_release(loop, op);
}

void pact__op_release(pact_loop *loop, pact_op_s *op)
{
    if (op->extra && op->extra->release)
        op->extra->release(op);
    pact_op_ext *x = pact__op_ext_of(op);
    if (x) {
        free(x->path);
        free(x->path2);
        pact_slab_free(&loop->op_ext, x->slab.next_free);
    }
    pact_slab_free(&loop->ops, op->slab.next_free);
}

/* ---- send slots (op.h) ------------------------------------------------
 * The accounting of an op without the op: a slot's send counts as a live
 * user op (pact_loop_alive, pact_loop_stats' ops_live, started and
 * completed) from its start to its done, as the pact_send it replaces. */

int pact__slot_cancel(pact_loop *loop, pact_send_slot *slot)
{
    if (slot->pending_cqes <= 0 || (slot->flags & PACT_SLOTF_CANCEL_REQUESTED))
        return -EALREADY;
    slot->flags |= PACT_SLOTF_CANCEL_REQUESTED;
    loop->engine->slot_cancel(loop, slot);
    /* As pact_op_cancel: a cancel in progress keeps the loop alive. */
    if (slot->flags & PACT_SLOTF_UNREF) {
        slot->flags &= ~PACT_SLOTF_UNREF;
        loop->unref_ops--;
    }
    return 0;
}

void pact__slot_set_ref(pact_loop *loop, pact_send_slot *slot, int ref)
{
    if (slot->pending_cqes <= 0 || !ref == !!(slot->flags & PACT_SLOTF_UNREF))
        return;
    slot->flags ^= PACT_SLOTF_UNREF;
    if (ref)
        loop->unref_ops--;
    else
        loop->unref_ops++;
}

static PACT_SLOW_PATH void slot_done_timed(pact_loop *loop, pact_send_slot *slot,
                                           pact_send_slot_done done)
{
    PACT_RUN_CALLBACK(loop, done, "send slot callback",
                      done(loop, slot, slot->result));
}

void pact__slot_complete(pact_loop *loop, pact_send_slot *slot)
{
#ifdef PACT_FAULT_INJECTION
    int err;
    if (slot->result >= 0 && (err = PACT_FAULT(PACT_FAULT_OP_ERROR)) != 0)
        slot->result = err; /* as fault_result does for an op */
#endif
    loop->stats.ops_completed++;
    loop->user_ops_live--;
    loop->unref_ops -= (slot->flags & PACT_SLOTF_UNREF) != 0;
    loop->send_slots_live--;
    /* Read before the call: done may start the slot's next send. */
    pact_send_slot_done done = slot->done;
    if (loop->debug) {
        slot_done_timed(loop, slot, done);
        return;
    }
    /* PACT_RUN_CALLBACK without the timing only debug mode does: the
     * call is the last thing here, a tail call without a frame (a
     * stream's every reply comes this way). */
    loop->callbacks_run++;
    done(loop, slot, slot->result);
}

/* ---- ops finished on other threads --------------------------------------
 * The thread pool runs ops outside the engine, so their completions cannot
 * come back through the engine's wait. A worker queues the finished op
 * here under ts_lock and wakes the loop the same way as pact_call_soon_threadsafe()
 * (pact__wake_post); the loop thread drains the queue each iteration,
 * after the wake-up has cleared wake_pending (so a worker that queues
 * later wakes it again and is never missed). From
 * then on the op is an ordinary completed op on the loop thread. */

void pact__op_done_offloaded(pact_loop *loop, pact_op_s *op, int64_t result)
{
    pthread_mutex_lock(&loop->ts_lock);
    op->result = result;
    pact_list_push_back(&loop->offload_done, &op->link);
    atomic_fetch_add(&loop->offload_done_count, 1);
    pthread_mutex_unlock(&loop->ts_lock);
    /* Not pact_loop_wake(): it reads loop->state, which the loop thread
     * writes during close while it waits for this very worker. The loop
     * joins its workers before it closes wake_fd. */
    if (atomic_exchange(&loop->wake_pending, 1) == 0)
        pact__wake_post(loop);
}

void pact__ops_drain_offloaded(pact_loop *loop)
{
    if (atomic_load(&loop->offload_done_count) == 0)
        return;
    pact_list batch;
    pact_list_init(&batch);
    pthread_mutex_lock(&loop->ts_lock);
    pact_list_splice(&batch, &loop->offload_done);
    atomic_store(&loop->offload_done_count, 0);
    pthread_mutex_unlock(&loop->ts_lock);
    pact_list *node;
    while ((node = pact_list_pop_front(&batch))) {
        pact_op_s *op = pact_container_of(node, pact_op_s, link);
        pact__op_defer(loop, op, op->result);
    }
}

int pact__ops_dispatch_done(pact_loop *loop)
{
    pact_list batch;
    pact_list_init(&batch);
    pact_list_splice(&batch, &loop->done_queue);
    int n = 0;
    pact_list *node;
    while ((node = pact_list_pop_front(&batch))) {
        pact__op_complete(loop, pact_container_of(node, pact_op_s, link));
        n++;
    }
    return n;
}

int pact_op_set_ref(pact_loop *loop, pact_op handle, int ref)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    pact_op_s *op = user_op_lookup(loop, handle);
    if (!op)
        return -ENOENT;
    if (ref && (op->flags & PACT_OPF_UNREF)) {
        op->flags &= (uint16_t)~PACT_OPF_UNREF;
        loop->unref_ops--;
    } else if (!ref && !(op->flags & PACT_OPF_UNREF)) {
        op->flags |= PACT_OPF_UNREF;
        loop->unref_ops++;
    }
    return 0;
}
