/* SPDX-License-Identifier: MIT */
/* Named pipes, the way asyncio's proactor learned to do them.
 *
 * The server always has an instance listening: the first one is made when
 * the server opens, and when a client connects the next instance is made
 * before the connected one is handed to the caller. A client therefore
 * never finds no pipe (-ENOENT) while the server is open; it may find
 * every instance busy (ERROR_PIPE_BUSY) between a connection and the next
 * instance.
 *
 * The client's connect retries ERROR_PIPE_BUSY after 1 ms, doubling up to
 * 100 ms, on the loop's timers — never WaitNamedPipe, which would block
 * the loop. CreateFile is synchronous, so there is no moment when a
 * handle exists that the op does not deliver: a cancel during the back-off
 * cancels the timer and the op ends with -ECANCELED, leaving nothing open.
 *
 * Both are PACT_OP_CUSTOM ops. The accept's ConnectNamedPipe is
 * overlapped on the op's OVERLAPPED; its packet reaches pact__pipe_packet
 * through the engine (a custom op's packet). ERROR_PIPE_CONNECTED (the
 * client came between CreateNamedPipe and ConnectNamedPipe) completes at
 * once and queues no packet. */
#include <stdlib.h>
#include <string.h>

#include "win/iocp.h"

#define PIPE_BUFFER (64 * 1024)
#define BACKOFF_FIRST_NS (1000ull * 1000)
#define BACKOFF_MAX_NS (100ull * 1000 * 1000)

struct pact_pipe_server {
    pact_resource res;
    pact_loop *loop;
    char *name;
    HANDLE listening;  /* the instance a client finds; NULL if none */
    pact_op_s *accept; /* the accept in flight, or NULL */
    int closed;
};

static HANDLE new_instance(const char *name, int first)
{
    return CreateNamedPipeA(name,
                            PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED |
                                (first ? FILE_FLAG_FIRST_PIPE_INSTANCE : 0),
                            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT |
                                PIPE_REJECT_REMOTE_CLIENTS,
                            PIPE_UNLIMITED_INSTANCES, PIPE_BUFFER, PIPE_BUFFER,
                            0, NULL);
}

static void server_free(pact_pipe_server *srv)
{
    pact__resource_remove(srv->loop, &srv->res);
    free(srv->name);
    free(srv);
}

/* A client is connected to the listening instance: make the next one
 * first (so clients keep finding one), then hand the connected one over. */
static void hand_over(pact_pipe_server *srv, pact_op_s *op)
{
    HANDLE connected = srv->listening;
    srv->listening = new_instance(srv->name, 0);
    if (srv->listening == INVALID_HANDLE_VALUE) {
        /* Retried at the next accept; the connection is not lost. */
        pact__error(srv->loop, pact__win_error(GetLastError()),
                    "cannot make the next pipe instance of %s", srv->name);
        srv->listening = NULL;
    }
    srv->accept = NULL;
    pact__op_defer(srv->loop, op, (int64_t)(intptr_t)connected);
}

static void accept_end(pact_pipe_server *srv, pact_op_s *op, int64_t result)
{
    srv->accept = NULL;
    pact__op_defer(srv->loop, op, result);
    if (srv->closed)
        server_free(srv);
}

/* Starts (or restarts) ConnectNamedPipe on the listening instance. */
static void accept_start(pact_pipe_server *srv, pact_op_s *op)
{
    for (;;) {
        memset(&op->overlapped, 0, sizeof op->overlapped);
        if (ConnectNamedPipe(srv->listening, &op->overlapped))
            return; /* its packet comes */
        DWORD err = GetLastError();
        if (err == ERROR_IO_PENDING)
            return;
        if (err == ERROR_PIPE_CONNECTED) {
            hand_over(srv, op); /* no packet for this one */
            return;
        }
        if (err == ERROR_NO_DATA) {
            /* A client connected and left already: reuse the instance. */
            DisconnectNamedPipe(srv->listening);
            continue;
        }
        accept_end(srv, op, pact__win_error(err));
        return;
    }
}

void pact__pipe_packet(pact_loop *loop, pact_op_s *op)
{
    (void)loop;
    pact_pipe_server *srv = op->buf;
    NTSTATUS status = (NTSTATUS)op->overlapped.Internal;
    DWORD err = status == 0 ? 0 : RtlNtStatusToDosError(status);
    if (srv->closed) {
        accept_end(srv, op, -ECANCELED);
        return;
    }
    if (err == 0 || err == ERROR_PIPE_CONNECTED) {
        hand_over(srv, op);
        return;
    }
    if ((err == ERROR_NO_DATA || err == ERROR_BROKEN_PIPE) &&
        !(op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT))) {
        DisconnectNamedPipe(srv->listening); /* the client left: go on */
        accept_start(srv, op);
        return;
    }
    accept_end(srv, op, pact__win_error(err));
}

static void accept_cancel(pact_loop *loop, pact_op_s *op)
{
    (void)loop;
    pact_pipe_server *srv = op->buf;
    /* The packet comes either way, with the real result if the client
     * was already connected. */
    CancelIoEx(srv->listening, &op->overlapped);
}

pact_op pact_pipe_server_accept(pact_pipe_server *srv, pact_op_cb cb,
                                void *user)
{
    if (!srv)
        return -EINVAL;
    pact_loop *loop = srv->loop;
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (!cb)
        return PACT_MISUSE(loop, -EINVAL, "callback is NULL");
    if (srv->closed)
        return PACT_MISUSE(loop, -ESHUTDOWN, "the pipe server is closed");
    if (srv->accept)
        return PACT_MISUSE(loop, -EBUSY, "an accept is in flight already");
    if (!srv->listening) {
        srv->listening = new_instance(srv->name, 0);
        if (srv->listening == INVALID_HANDLE_VALUE) {
            srv->listening = NULL;
            return pact__win_error(GetLastError());
        }
    }
    r = pact__iocp_associate(loop, srv->listening);
    if (r)
        return r;
    pact_op_s *op = pact__op_new(loop, PACT_OP_CUSTOM,
                                 (pact_os_sock)srv->listening, cb, user, &r);
    if (!op)
        return r;
    op->custom_cancel = accept_cancel;
    op->buf = srv;
    srv->accept = op;
    pact_op handle = pact__op_start_custom(loop, op, __builtin_return_address(0));
    accept_start(srv, op);
    return handle;
}

static void server_force_close(pact_resource *res)
{
    pact_pipe_server_close(pact_container_of(res, pact_pipe_server, res));
}

int pact_pipe_server_open(pact_loop *loop, const char *name,
                          pact_pipe_server **out)
{
    if (out)
        *out = NULL;
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (!name || !out)
        return PACT_MISUSE(loop, -EINVAL, "name or out is NULL");
    pact_pipe_server *srv = calloc(1, sizeof *srv);
    if (!srv || !(srv->name = strdup(name))) {
        free(srv);
        return -ENOMEM;
    }
    srv->loop = loop;
    /* FILE_FLAG_FIRST_PIPE_INSTANCE: a second server on the name fails. */
    srv->listening = new_instance(name, 1);
    if (srv->listening == INVALID_HANDLE_VALUE) {
        r = pact__win_error(GetLastError());
        free(srv->name);
        free(srv);
        return r;
    }
    static const pact_resource_kind server_kind = {"pipe server",
                                                   server_force_close};
    pact__resource_add(loop, &srv->res, &server_kind,
                       __builtin_return_address(0));
    *out = srv;
    return 0;
}

int pact_pipe_server_close(pact_pipe_server *srv)
{
    if (!srv)
        return -EINVAL;
    int r = pact__loop_check_thread(srv->loop, __func__);
    if (r)
        return r;
    if (srv->closed)
        return -EALREADY;
    srv->closed = 1;
    /* Closing the instance aborts a ConnectNamedPipe in flight; its op
     * (and OVERLAPPED) stays until the packet, which frees the server. */
    if (srv->listening)
        CloseHandle(srv->listening);
    srv->listening = NULL;
    if (!srv->accept)
        server_free(srv);
    return 0;
}

/* ---- the client ---------------------------------------------------------- */

typedef struct pipe_connect {
    pact_loop *loop;
    pact_op_s *op;
    char *name;
    pact_handle retry;
    uint64_t delay_ns;
} pipe_connect;

static void connect_attempt(pact_loop *loop, void *user);

static void connect_try(pipe_connect *pc)
{
    HANDLE h = CreateFileA(pc->name, GENERIC_READ | GENERIC_WRITE, 0, NULL,
                           OPEN_EXISTING, FILE_FLAG_OVERLAPPED, NULL);
    if (h != INVALID_HANDLE_VALUE) {
        pact_loop *loop = pc->loop;
        pact_op_s *op = pc->op;
        free(pc->name);
        free(pc);
        op->buf = NULL;
        pact__op_defer(loop, op, (int64_t)(intptr_t)h);
        return;
    }
    DWORD err = GetLastError();
    if (err == ERROR_PIPE_BUSY) {
        /* Every instance is taken: try again later, never blocking. */
        pc->retry = pact_call_later(pc->loop, pc->delay_ns, connect_attempt, pc);
        pc->delay_ns = pc->delay_ns * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS
                                                         : pc->delay_ns * 2;
        if (pc->retry > 0)
            return;
        err = ERROR_OPERATION_ABORTED; /* the loop is closing */
    }
    pact_loop *loop = pc->loop;
    pact_op_s *op = pc->op;
    free(pc->name);
    free(pc);
    op->buf = NULL;
    pact__op_defer(loop, op, pact__win_error(err));
}

static void connect_attempt(pact_loop *loop, void *user)
{
    (void)loop;
    pipe_connect *pc = user;
    pc->retry = 0;
    connect_try(pc);
}

static void connect_cancel(pact_loop *loop, pact_op_s *op)
{
    pipe_connect *pc = op->buf;
    /* Only ever cancelled while waiting to retry: CreateFile is done at
     * once, so no handle is open here. */
    if (pc->retry > 0)
        pact_handle_cancel(loop, pc->retry);
    free(pc->name);
    free(pc);
    op->buf = NULL;
    pact__op_defer(loop, op, -ECANCELED);
}

pact_op pact_pipe_connect(pact_loop *loop, const char *name, pact_op_cb cb,
                          void *user)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (!cb || !name)
        return PACT_MISUSE(loop, -EINVAL, "callback or name is NULL");
    pipe_connect *pc = calloc(1, sizeof *pc);
    if (!pc || !(pc->name = strdup(name))) {
        free(pc);
        return -ENOMEM;
    }
    pact_op_s *op = pact__op_new(loop, PACT_OP_CUSTOM, 0, cb, user, &r);
    if (!op) {
        free(pc->name);
        free(pc);
        return r;
    }
    pc->loop = loop;
    pc->op = op;
    pc->delay_ns = BACKOFF_FIRST_NS;
    op->custom_cancel = connect_cancel;
    op->buf = pc;
    pact_op handle = pact__op_start_custom(loop, op, __builtin_return_address(0));
    connect_try(pc); /* completes through the done queue, never here */
    return handle;
}
