/* SPDX-License-Identifier: MIT */
/* The Windows engine: one I/O completion port per loop.
 *
 * Every op the engine starts is an overlapped call (WSARecv, WSASend,
 * WSARecvFrom, WSASendTo, AcceptEx, ConnectEx, ReadFile, WriteFile) whose
 * OVERLAPPED is inside the op (op->overlapped). The rules:
 *
 *   - A call that returns success or ERROR_IO_PENDING queues exactly one
 *     completion packet on the port, also when it completed at once: the
 *     handles are not put in FILE_SKIP_COMPLETION_PORT_ON_SUCCESS mode, so
 *     there is one path for a result, the packet, and no double delivery.
 *     (Skipping saves a dequeue per immediate success; it is not safe for
 *     sockets of non-IFS providers and would give two paths to keep
 *     apart. asyncio's proactor makes the same choice.)
 *   - A call that fails at once queues nothing: its error is deferred
 *     (pact__op_defer) and the op is done.
 *   - The op, and so its OVERLAPPED and the buffers the kernel writes (the
 *     AcceptEx address block, WSARecvFrom's sender and its length, in the
 *     op's ext block), is released only after its packet was dequeued:
 *     never on cancel, never at loop close (close cancels every op and
 *     waits for every packet; loop.c).
 *   - Cancel is CancelIoEx on that one OVERLAPPED. Its answer is not
 *     needed: ERROR_NOT_FOUND means the packet is already queued (or on
 *     its way) and carries the real result — bytes received, a connection
 *     accepted — which is delivered as such, never dropped.
 *
 * Deadlines live on the loop's timer heap (no linked timeouts here): the
 * wait's timeout is the next timer, rounded up to whole milliseconds so
 * that no timer fires early. pact_loop_wake() and
 * pact_call_soon_threadsafe() post a packet with IOCP_KEY_WAKE
 * (src/win/wake.c). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"
#include "win/iocp.h"

typedef struct iocp_engine {
    HANDLE port;
    OVERLAPPED_ENTRY entries[64];
} iocp_engine;

#define IOCP_ENGINE(loop) ((iocp_engine *)(loop)->engine_data)

/* The extension functions, looked up once per process (Winsock's base
 * provider serves every socket pact makes). */
/* Accept sockets made by pact and not yet closed or handed to a callback
 * (tests read it: an accept that lost to its cancel must close its
 * socket; Wine cannot count a process's handles). */
static atomic_long accept_sockets_held;

long pact__iocp_accept_sockets_held(void)
{
    return atomic_load(&accept_sockets_held);
}

static void accept_socket_close(SOCKET s)
{
    closesocket(s);
    atomic_fetch_sub(&accept_sockets_held, 1);
}

static LPFN_ACCEPTEX accept_ex;
static LPFN_CONNECTEX connect_ex;
static LPFN_GETACCEPTEXSOCKADDRS get_accept_ex_sockaddrs;
static INIT_ONCE winsock_once = INIT_ONCE_STATIC_INIT;
static int winsock_error;

static int load_extension(SOCKET s, GUID guid, void *fn, size_t size)
{
    DWORD bytes = 0;
    if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof guid,
                 fn, (DWORD)size, &bytes, NULL, NULL) != 0)
        return pact__win_error(WSAGetLastError());
    return 0;
}

static BOOL CALLBACK winsock_init(PINIT_ONCE once, PVOID param, PVOID *ctx)
{
    (void)once, (void)param, (void)ctx;
    WSADATA data;
    int r = WSAStartup(MAKEWORD(2, 2), &data);
    if (r != 0) {
        winsock_error = pact__win_error((DWORD)r);
        return TRUE;
    }
    SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET) {
        winsock_error = pact__win_error(WSAGetLastError());
        return TRUE;
    }
    GUID ga = WSAID_ACCEPTEX, gc = WSAID_CONNECTEX,
         gs = WSAID_GETACCEPTEXSOCKADDRS;
    if ((r = load_extension(s, ga, &accept_ex, sizeof accept_ex)) != 0 ||
        (r = load_extension(s, gc, &connect_ex, sizeof connect_ex)) != 0 ||
        (r = load_extension(s, gs, &get_accept_ex_sockaddrs,
                            sizeof get_accept_ex_sockaddrs)) != 0)
        winsock_error = r;
    closesocket(s);
    return TRUE;
}

int pact__winsock_init(void)
{
    InitOnceExecuteOnce(&winsock_once, winsock_init, NULL, NULL);
    return winsock_error;
}

HANDLE pact__iocp_port(pact_loop *loop)
{
    return IOCP_ENGINE(loop)->port;
}

static int iocp_init(pact_loop *loop, unsigned queue_depth, int fail_setup,
                     char *reason, size_t reason_len)
{
    (void)queue_depth, (void)fail_setup;
    int r = pact__winsock_init();
    if (r != 0) {
        snprintf(reason, reason_len, "Winsock: %s", pact_strerror(r));
        return r;
    }
    iocp_engine *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
    if (!e->port) {
        r = pact__win_error(GetLastError());
        snprintf(reason, reason_len, "CreateIoCompletionPort: %s",
                 pact_strerror(r));
        free(e);
        return r;
    }
    loop->engine_data = e;
    loop->native_kinds = 0; /* file ops by path run on the thread pool */
    loop->recv_multi_mode = "iocp";
    return 0;
}

/* The port is closed by pact__wake_close() (src/win/wake.c), after the
 * loop is marked closed under its lock: a thread calling pact_loop_wake()
 * meanwhile still posts to a live port, never to a closed handle. */
static void iocp_destroy(pact_loop *loop)
{
    (void)loop;
}

void pact__iocp_free(pact_loop *loop)
{
    iocp_engine *e = IOCP_ENGINE(loop);
    if (!e)
        return;
    CloseHandle(e->port);
    free(e);
    loop->engine_data = NULL;
}

/* Completion packets of a handle go to this loop's port. A handle can be
 * associated once: ERROR_INVALID_PARAMETER on a second call means it
 * already is (with this port: a socket belongs to one loop). */
int pact__iocp_associate(pact_loop *loop, HANDLE h)
{
    if (CreateIoCompletionPort(h, IOCP_ENGINE(loop)->port, IOCP_KEY_OP, 0))
        return 0;
    DWORD err = GetLastError();
    return err == ERROR_INVALID_PARAMETER ? 0 : pact__win_error(err);
}

/* The immediate outcome of an overlapped call: pending (a packet will
 * come) or failed at once (no packet: the error is the result now). */
static void started(pact_loop *loop, pact_op_s *op, BOOL ok, DWORD err)
{
    if (ok || err == ERROR_IO_PENDING || err == WSA_IO_PENDING)
        return;
    /* A datagram (or pipe message) longer than the buffer is a warning
     * status, STATUS_BUFFER_OVERFLOW: the call answers WSAEMSGSIZE or
     * ERROR_MORE_DATA, yet it completed and its packet is queued as for a
     * success. Taking it as a failure would complete the op twice. */
    if ((err == WSAEMSGSIZE || err == ERROR_MORE_DATA) &&
        (op->kind == PACT_OP_RECV || op->kind == PACT_OP_RECVFROM ||
         op->kind == PACT_OP_RECV_MULTI || op->kind == PACT_OP_READ))
        return;
    int64_t result = pact__win_error(err);
    /* A read at end of file or of a pipe whose writer is gone: EOF. */
    if ((op->kind == PACT_OP_READ || op->kind == PACT_OP_RECV) &&
        (err == ERROR_HANDLE_EOF || err == ERROR_BROKEN_PIPE))
        result = 0;
    if (op->kind == PACT_OP_WRITE && err == ERROR_BROKEN_PIPE)
        result = -EPIPE;
    if (op->kind == PACT_OP_RECVFROM &&
        (err == WSAECONNRESET || err == ERROR_PORT_UNREACHABLE))
        result = -ECONNREFUSED; /* an ICMP port unreachable, as on Linux */
    if (op->kind == PACT_OP_ACCEPT) {
        accept_socket_close(op->ext->accept_sock);
        op->ext->accept_sock = INVALID_SOCKET;
    }
    pact__op_defer(loop, op, result);
}

/* For a Winsock call that returns 0 or SOCKET_ERROR; the error is read
 * after the call (argument order is unspecified). */
#define WSA_STARTED(loop, op, call)                                         \
    do {                                                                    \
        BOOL ok_ = (call) == 0;                                             \
        started((loop), (op), ok_, ok_ ? 0 : (DWORD)WSAGetLastError());     \
    } while (0)

static void start_send(pact_loop *loop, pact_op_s *op)
{
    size_t done = op->kind == PACT_OP_SEND_ALL ? op->transferred : 0;
    WSABUF b = {(ULONG)(op->len - done), (char *)op->buf + done};
    memset(&op->overlapped, 0, sizeof op->overlapped);
    WSA_STARTED(loop, op, WSASend(op->fd, &b, 1, NULL, 0, &op->overlapped, NULL));
}

/* ConnectEx wants a bound socket: bind to the wildcard address of the
 * target's family unless the caller bound it. */
static int bind_if_unbound(SOCKET s, int family)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (getsockname(s, (struct sockaddr *)&ss, &len) == 0)
        return 0;
    int err = WSAGetLastError();
    if (err != WSAEINVAL)
        return pact__win_error((DWORD)err);
    memset(&ss, 0, sizeof ss);
    ss.ss_family = (ADDRESS_FAMILY)family;
    len = family == AF_INET6 ? (int)sizeof(struct sockaddr_in6)
                             : (int)sizeof(struct sockaddr_in);
    if (bind(s, (struct sockaddr *)&ss, len) != 0)
        return pact__win_error(WSAGetLastError());
    return 0;
}

/* AcceptEx writes the local and the remote address, each with 16 bytes
 * to spare, into the op's address block. */
#define ACCEPT_ADDR_LEN ((DWORD)sizeof(struct sockaddr_in6) + 16)
_Static_assert(2 * (sizeof(struct sockaddr_in6) + 16) <=
                   sizeof(struct sockaddr_storage),
               "AcceptEx's address block must fit the op's sockaddr_storage");

static void start_accept(pact_loop *loop, pact_op_s *op)
{
    pact_op_ext *x = op->ext;
    WSAPROTOCOL_INFOW info;
    int len = sizeof info;
    if (getsockopt(op->fd, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info,
                   &len) != 0) {
        pact__op_defer(loop, op, pact__win_error(WSAGetLastError()));
        return;
    }
    /* A fresh socket per accept, of the listener's family. */
    x->accept_sock = WSASocketW(info.iAddressFamily, SOCK_STREAM, IPPROTO_TCP,
                                NULL, 0,
                                WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (x->accept_sock == INVALID_SOCKET) {
        pact__op_defer(loop, op, pact__win_error(WSAGetLastError()));
        return;
    }
    atomic_fetch_add(&accept_sockets_held, 1);
    DWORD bytes = 0;
    BOOL ok = accept_ex(op->fd, x->accept_sock, &x->addr, 0, ACCEPT_ADDR_LEN,
                        ACCEPT_ADDR_LEN, &bytes, &op->overlapped);
    started(loop, op, ok, ok ? 0 : (DWORD)WSAGetLastError());
}

static void start_connect(pact_loop *loop, pact_op_s *op)
{
    pact_op_ext *x = op->ext;
    int r = bind_if_unbound(op->fd, x->addr.ss_family);
    if (r != 0) {
        pact__op_defer(loop, op, r);
        return;
    }
    BOOL ok = connect_ex(op->fd, (struct sockaddr *)&x->addr, (int)x->addrlen,
                         NULL, 0, NULL, &op->overlapped);
    started(loop, op, ok, ok ? 0 : (DWORD)WSAGetLastError());
}

static void start_file_io(pact_loop *loop, pact_op_s *op)
{
    HANDLE h = (HANDLE)op->fd;
    if (op->offset < 0 && GetFileType(h) == FILE_TYPE_DISK) {
        /* An overlapped file handle has no current position. */
        pact__op_defer(loop, op, -ESPIPE);
        return;
    }
    if (op->offset > 0) {
        op->overlapped.Offset = (DWORD)((uint64_t)op->offset & 0xffffffffu);
        op->overlapped.OffsetHigh = (DWORD)((uint64_t)op->offset >> 32);
    }
    BOOL ok = op->kind == PACT_OP_READ
                  ? ReadFile(h, op->buf, (DWORD)op->len, NULL, &op->overlapped)
                  : WriteFile(h, op->buf, (DWORD)op->len, NULL, &op->overlapped);
    started(loop, op, ok, ok ? 0 : GetLastError());
}

/* pact_recv_multishot(): one WSARecv at a time into the op's buffer,
 * started again after each chunk has been delivered. */
static void multi_post(pact_loop *loop, pact_op_s *op)
{
    pact_op_ext *x = op->ext;
    WSABUF b = {(ULONG)loop->recv_buf_size, x->recv_buf};
    memset(&op->overlapped, 0, sizeof op->overlapped);
    op->msg_flags = 0;
    WSA_STARTED(loop, op, WSARecv(op->fd, &b, 1, NULL, (DWORD *)&op->msg_flags,
                                  &op->overlapped, NULL));
}

static void multi_end(pact_loop *loop, pact_op_s *op, int64_t result)
{
    free(op->ext->recv_buf);
    op->ext->recv_buf = NULL;
    pact__op_defer(loop, op, result);
}

static void start_recv_multi(pact_loop *loop, pact_op_s *op)
{
    pact_op_ext *x = pact__op_ext(loop, op);
    if (x && !x->recv_buf)
        x->recv_buf = malloc(loop->recv_buf_size);
    if (!x || !x->recv_buf) {
        pact__op_defer(loop, op, -ENOMEM);
        return;
    }
    multi_post(loop, op);
    if (op->state == PACT_OP_DONE) { /* failed at once: no packet */
        free(x->recv_buf);
        x->recv_buf = NULL;
    }
}

/* A multishot receive's packet: bytes are delivered (also after a cancel
 * was asked for: they were taken from the socket), then it goes on, or
 * ends at EOF, on error or when cancelled. */
static void multi_packet(pact_loop *loop, pact_op_s *op, DWORD bytes)
{
    NTSTATUS status = (NTSTATUS)op->overlapped.Internal;
    DWORD err = status == 0 ? 0 : RtlNtStatusToDosError(status);
    if (err != 0 && err != ERROR_MORE_DATA) {
        multi_end(loop, op, pact__win_error(err));
        return;
    }
    if (bytes == 0) {
        multi_end(loop, op, 0);
        return;
    }
    pact__op_deliver(loop, op, op->ext->recv_buf, bytes);
    if (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT)) {
        multi_end(loop, op, -ECANCELED);
        return;
    }
    multi_post(loop, op);
    if (op->state == PACT_OP_DONE) { /* failed at once */
        free(op->ext->recv_buf);
        op->ext->recv_buf = NULL;
    }
}

static int iocp_submit(pact_loop *loop, pact_op_s *op, pact_fd_entry *f)
{
    (void)f; /* the completion port keeps no per-fd state of the loop's */
    memset(&op->overlapped, 0, sizeof op->overlapped);
    int r;
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_RECV:
    case PACT_OP_RECV_MULTI:
    case PACT_OP_SEND:
    case PACT_OP_SEND_ALL:
    case PACT_OP_RECVFROM:
    case PACT_OP_SENDTO:
    case PACT_OP_ACCEPT:
    case PACT_OP_CONNECT:
    case PACT_OP_READ:
    case PACT_OP_WRITE:
        r = pact__iocp_associate(loop, (HANDLE)op->fd);
        if (r != 0) {
            pact__op_defer(loop, op, r);
            return 0;
        }
        break;
    default:
        break;
    }
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_RECV: {
        WSABUF b = {(ULONG)op->len, op->buf};
        /* The provider may write the flags when the op completes: they
         * live in the op, as the OVERLAPPED. */
        op->msg_flags &= MSG_PEEK | MSG_OOB;
        WSA_STARTED(loop, op, WSARecv(op->fd, &b, 1, NULL,
                                      (DWORD *)&op->msg_flags,
                                      &op->overlapped, NULL));
        break;
    }
    case PACT_OP_SEND:
    case PACT_OP_SEND_ALL:
        start_send(loop, op);
        break;
    case PACT_OP_RECV_MULTI:
        start_recv_multi(loop, op);
        break;
    case PACT_OP_RECVFROM: {
        pact_op_ext *x = op->ext;
        WSABUF b = {(ULONG)op->len, op->buf};
        x->msg.msg_flags = (DWORD)(op->msg_flags & (MSG_PEEK | MSG_OOB));
        x->msg.msg_namelen = (int)sizeof x->addr;
        WSA_STARTED(loop, op, WSARecvFrom(op->fd, &b, 1, NULL, &x->msg.msg_flags,
                                          (struct sockaddr *)&x->addr,
                                          &x->msg.msg_namelen,
                                          &op->overlapped, NULL));
        break;
    }
    case PACT_OP_SENDTO: {
        pact_op_ext *x = op->ext;
        WSABUF b = {(ULONG)op->len, op->buf};
        WSA_STARTED(loop, op,
                    WSASendTo(op->fd, &b, 1, NULL, 0,
                              x->msg.msg_name ? (struct sockaddr *)&x->addr : NULL,
                              x->msg.msg_name ? (int)x->addrlen : 0,
                              &op->overlapped, NULL));
        break;
    }
    case PACT_OP_ACCEPT:
        start_accept(loop, op);
        break;
    case PACT_OP_CONNECT:
        start_connect(loop, op);
        break;
    case PACT_OP_SHUTDOWN:
        /* Winsock's shutdown does not block: done at once. */
        pact__op_defer(loop, op, shutdown(op->fd, op->msg_flags) == 0
                                     ? 0
                                     : pact__win_error(WSAGetLastError()));
        break;
    case PACT_OP_READ:
    case PACT_OP_WRITE:
        start_file_io(loop, op);
        break;
    default:
        /* poll: not on this engine (completion ports have no readiness). */
        pact__op_defer(loop, op, -ENOTSUP);
        break;
    }
    return 0;
}

static void iocp_cancel(pact_loop *loop, pact_op_s *op)
{
    (void)loop;
    /* Whatever CancelIoEx answers, the op's one packet still comes:
     * ERROR_NOT_FOUND = it is queued already, with the real result. */
    CancelIoEx((HANDLE)op->fd, &op->overlapped);
}

/* The result a dequeued packet carries for op. */
static int64_t packet_result(pact_loop *loop, pact_op_s *op, DWORD bytes)
{
    NTSTATUS status = (NTSTATUS)op->overlapped.Internal;
    DWORD err = status == 0 ? 0 : RtlNtStatusToDosError(status);
    pact_op_ext *x = pact__op_ext_of(op);
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_RECV:
    case PACT_OP_READ:
        if (err == 0 || err == ERROR_MORE_DATA)
            return bytes;
        if (err == ERROR_HANDLE_EOF || err == ERROR_BROKEN_PIPE)
            return 0;
        break;
    case PACT_OP_WRITE:
        if (err == 0)
            return bytes;
        if (err == ERROR_BROKEN_PIPE || err == ERROR_NO_DATA)
            return -EPIPE;
        break;
    case PACT_OP_SEND:
        if (err == 0)
            return bytes;
        break;
    case PACT_OP_SEND_ALL:
        op->transferred += bytes;
        if (err == 0)
            return (int64_t)op->transferred;
        break;
    case PACT_OP_RECVFROM:
        /* A datagram longer than the buffer is cut, as on Linux. Asked
         * for with MSG_TRUNC, the result says so by exceeding the buffer;
         * Windows does not tell the full length: len + 1. */
        if (err == ERROR_MORE_DATA && (op->msg_flags & MSG_TRUNC))
            return (int64_t)op->len + 1;
        if (err == 0 || err == ERROR_MORE_DATA)
            return bytes;
        /* On a datagram socket a reset is an ICMP port unreachable for
         * an earlier send, which Linux names ECONNREFUSED. */
        if (err == ERROR_PORT_UNREACHABLE || err == WSAECONNRESET ||
            err == ERROR_NETNAME_DELETED)
            return -ECONNREFUSED;
        break;
    case PACT_OP_SENDTO:
        if (err == 0)
            return bytes;
        break;
    case PACT_OP_ACCEPT: {
        SOCKET s = x->accept_sock;
        x->accept_sock = INVALID_SOCKET;
        if (err != 0) {
            accept_socket_close(s);
            break;
        }
        atomic_fetch_sub(&accept_sockets_held, 1); /* the callback's now */
        /* Accepted, also when a cancel came too late: the callback owns
         * the socket. It inherits the listener's properties, and its
         * packets go to this loop's port. */
        setsockopt(s, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&op->fd,
                   sizeof op->fd);
        struct sockaddr *local = NULL, *remote = NULL;
        int llen = 0, rlen = 0;
        get_accept_ex_sockaddrs(&x->addr, 0, ACCEPT_ADDR_LEN, ACCEPT_ADDR_LEN,
                                &local, &llen, &remote, &rlen);
        struct sockaddr_storage peer;
        memset(&peer, 0, sizeof peer);
        if (remote && rlen > 0 && (size_t)rlen <= sizeof peer)
            memcpy(&peer, remote, (size_t)rlen);
        memcpy(&x->addr, &peer, sizeof peer);
        x->addrlen = rlen > 0 ? rlen : 0;
        pact__iocp_associate(loop, (HANDLE)s);
        return (int64_t)s;
    }
    case PACT_OP_CONNECT:
        if (err == 0) {
            /* getpeername, shutdown, ... work on the socket only after
             * this. */
            setsockopt(op->fd, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0);
            return 0;
        }
        break;
    default:
        break;
    }
    return pact__win_error(err);
}

static void packet_dequeued(pact_loop *loop, pact_op_s *op, DWORD bytes)
{
    if (op->kind == PACT_OP_CUSTOM) {
        if (op->extra && op->extra->packet)
            op->extra->packet(loop, op, bytes); /* a TransmitFile, ... */
        else
            pact__pipe_packet(loop, op); /* a pipe server's accept */
        return;
    }
    if (op->kind == PACT_OP_RECV_MULTI) {
        multi_packet(loop, op, bytes);
        return;
    }
    int64_t result = packet_result(loop, op, bytes);
    /* send_all goes on until every byte is out (an overlapped stream send
     * completes whole in practice; a short one is continued). */
    if (op->kind == PACT_OP_SEND_ALL && result >= 0 &&
        op->transferred < op->len &&
        !(op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT))) {
        start_send(loop, op);
        return;
    }
    pact__op_defer(loop, op, result);
}

static int iocp_wait(pact_loop *loop, int64_t timeout_ns)
{
    iocp_engine *e = IOCP_ENGINE(loop);
    DWORD ms;
    if (timeout_ns < 0)
        ms = INFINITE;
    else {
        /* Rounded up: a timer never fires early. */
        uint64_t up = ((uint64_t)timeout_ns + 999999) / 1000000;
        ms = up >= INFINITE ? INFINITE - 1 : (DWORD)up;
    }
    ULONG n = 0;
    pact__wait_hook_before(loop, timeout_ns);
    BOOL ok = GetQueuedCompletionStatusEx(e->port, e->entries,
                                          sizeof e->entries / sizeof e->entries[0],
                                          &n, ms, FALSE);
    DWORD err = ok ? 0 : GetLastError();
    pact__wait_hook_after(loop, timeout_ns);
    if (!ok)
        return err == WAIT_TIMEOUT ? 0 : pact__win_error(err);
    int seen = 0;
    for (ULONG i = 0; i < n; i++) {
        OVERLAPPED_ENTRY *ent = &e->entries[i];
        if (ent->lpCompletionKey == IOCP_KEY_WAKE) {
            /* Cleared before the threadsafe queue is drained later in this
             * iteration: a producer that enqueues after this posts again. */
            atomic_store(&loop->wake_pending, 0);
            continue;
        }
        if (!ent->lpOverlapped) {
            loop->stats.stray_completions++;
            continue;
        }
        pact_op_s *op = pact_container_of(ent->lpOverlapped, pact_op_s,
                                          overlapped);
        if (ent->lpCompletionKey == IOCP_KEY_WAIT_FIRED ||
            ent->lpCompletionKey == IOCP_KEY_WAIT_DONE)
            pact__wait_handle_packet(loop, op, ent->lpCompletionKey);
        else
            packet_dequeued(loop, op, ent->dwNumberOfBytesTransferred);
        seen++;
    }
    return seen;
}

static int iocp_supports_link_timeout(pact_loop *loop, pact_op_s *op)
{
    (void)loop, (void)op;
    return 0;
}

static int iocp_backend_fd(pact_loop *loop)
{
    (void)loop;
    return -ENOTSUP; /* a completion port cannot be polled as an fd */
}

static int iocp_has_unsubmitted(pact_loop *loop)
{
    (void)loop;
    return 0;
}

/* No fork() on Windows: never called. */
static void iocp_forget(pact_loop *loop)
{
    iocp_destroy(loop);
}

/* pact_watch() is not built on Windows (readiness of any fd has no
 * completion-port equivalent): never called. */
static void iocp_watch_update(pact_loop *loop, pact_op_s *op)
{
    (void)loop;
    (void)op;
}

/* Any thread may dequeue from a completion port: a loop moves as it is. */
static int iocp_adopt_thread(pact_loop *loop)
{
    (void)loop;
    return 0;
}

static void iocp_flush(pact_loop *loop)
{
    (void)loop; /* every write that can go at once went at once */
}

/* No send slots (a slot would need an OVERLAPPED of its own and its
 * own packet dispatch): streams send with ops. loop->send_slots stays 0,
 * so these are never called. */
static int iocp_slot_send(pact_loop *loop, pact_send_slot *slot, int fd,
                        const void *buf, size_t len, int flags)
{
    (void)loop; (void)slot; (void)fd; (void)buf; (void)len; (void)flags;
    return -EOPNOTSUPP;
}

static void iocp_slot_cancel(pact_loop *loop, pact_send_slot *slot)
{
    (void)loop; (void)slot;
}

/* No send waits for a submission here (every send is an overlapped
 * WSASend started by the write): never asked. */
static int iocp_first_try_sent(pact_loop *loop, pact_send_slot *slot,
                               pact_op op, size_t len)
{
    (void)loop; (void)slot; (void)op; (void)len;
    return -EOPNOTSUPP;
}

static void iocp_close_socket(pact_loop *loop, int fd)
{
    (void)loop;
    closesocket((SOCKET)fd);
}

/* IOCP keeps nothing per file that must go before the loop closes it. */
static void iocp_fd_owned(pact_loop *loop, int fd)
{
    (void)loop;
    (void)fd;
}

static void iocp_fd_closing(pact_loop *loop, pact_fd_entry *f)
{
    (void)loop;
    (void)f;
}

PACT_ENGINE_DEFINE(iocp, iocp, "iocp");
