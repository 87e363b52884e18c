/* SPDX-License-Identifier: MIT */
/* pact_transport_sendfile on Windows: the file range is an item of the
 * stream's write queue (stream.h), as on Linux — the bytes written before
 * it go first, then the range, then anything written after — sent with
 * TransmitFile on the completion port, at most CHUNK bytes per call.
 *
 * Each TransmitFile is a custom op whose OVERLAPPED carries the file
 * offset (the file's own position is not used, so an overlapped file
 * handle works, and the position of a synchronous one is not what is
 * read). Its packet completes the op with the bytes sent; a cancel is
 * CancelIoEx on that OVERLAPPED, and the packet comes either way, with
 * the real result when the cancel was too late. The op is released only
 * after its packet (src/win/engine_iocp.c). Pipe transports have no
 * TransmitFile: -ENOTSUP there. */
#include <stdlib.h>

#include "win/iocp.h"
#include "stream.h"

#define CHUNK (16u * 1024 * 1024)

static LPFN_TRANSMITFILE transmit_file;
static INIT_ONCE transmit_once = INIT_ONCE_STATIC_INIT;

static BOOL CALLBACK load_transmit_file(PINIT_ONCE once, PVOID param,
                                        PVOID *ctx)
{
    (void)once, (void)ctx;
    SOCKET s = (SOCKET)param;
    GUID guid = WSAID_TRANSMITFILE;
    DWORD bytes = 0;
    WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof guid,
             &transmit_file, sizeof transmit_file, &bytes, NULL, NULL);
    return TRUE;
}

typedef struct win_sendfile {
    pact_write_item item; /* first: the stream's queue holds &item */
    HANDLE file;
    int64_t offset;
    size_t remaining;
    size_t sent;
    pact_op op; /* the TransmitFile in flight */
    int cancelled;
    int scheduled;
    pact_op_cb cb;
    void *user;
} win_sendfile;

static pact_stream *stream(const win_sendfile *sf) { return sf->item.s; }
static pact_loop *loop_of(const win_sendfile *sf) { return sf->item.s->t.ep.loop; }

static void step(win_sendfile *sf);

static void finish(win_sendfile *sf, int err)
{
    pact_stream *s = stream(sf);
    pact_loop *loop = loop_of(sf);
    /* Cancelled because the connection failed: that error, as on Linux. */
    int64_t result = err < 0 ? err : (int64_t)sf->sent;
    if (err == -ECANCELED && s->t.ep.err < 0)
        result = s->t.ep.err;
    pact_completion c = {.op = 0, .result = result, .transferred = sf->sent};
    pact_op_cb cb = sf->cb;
    void *user = sf->user;
    free(sf);
    /* The stream goes on before the callback (a sendfile the callback
     * starts must not be wiped out by item_done afterwards). */
    pact__stream_item_done(s, err);
    cb(loop, &c, user);
}

/* The packet of a TransmitFile: the op's result. */
static void transmit_packet(pact_loop *loop, pact_op_s *op, unsigned long bytes)
{
    NTSTATUS status = (NTSTATUS)op->overlapped.Internal;
    DWORD err = status == 0 ? 0 : RtlNtStatusToDosError(status);
    pact__op_defer(loop, op, err == 0 ? (int64_t)bytes : pact__win_error(err));
}

static const pact_op_extra transmit_extra = {.packet = transmit_packet};

static void transmit_cancel(pact_loop *loop, pact_op_s *op)
{
    (void)loop;
    CancelIoEx((HANDLE)op->fd, &op->overlapped);
}

static void on_chunk(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    win_sendfile *sf = arg;
    sf->op = 0;
    if (c->result < 0) {
        finish(sf, (int)c->result);
        return;
    }
    sf->sent += (size_t)c->result;
    sf->remaining -= (size_t)c->result;
    sf->offset += c->result;
    if (c->result == 0)
        sf->remaining = 0; /* the file ended before count */
    if (sf->cancelled) {
        finish(sf, -ECANCELED);
        return;
    }
    step(sf);
}

/* Starts one TransmitFile of the next chunk. */
static int transmit_chunk(win_sendfile *sf)
{
    pact_loop *loop = loop_of(sf);
    SOCKET sock = (SOCKET)stream(sf)->fd;
    InitOnceExecuteOnce(&transmit_once, load_transmit_file, (PVOID)sock, NULL);
    if (!transmit_file)
        return -ENOTSUP;
    int r = pact__iocp_associate(loop, (HANDLE)sock);
    if (r)
        return r;
    pact_op_s *op = pact__op_new(loop, PACT_OP_CUSTOM, sock, on_chunk, sf, &r);
    if (!op)
        return r;
    op->custom_cancel = transmit_cancel;
    op->extra = &transmit_extra;
    op->overlapped.Offset = (DWORD)((uint64_t)sf->offset & 0xffffffffu);
    op->overlapped.OffsetHigh = (DWORD)((uint64_t)sf->offset >> 32);
    DWORD want = sf->remaining < CHUNK ? (DWORD)sf->remaining : CHUNK;
    sf->op = pact__endpoint_op(&stream(sf)->t.ep,
                               pact__op_start_custom(loop, op,
                                                     __builtin_return_address(0)));
    if (!transmit_file(sock, sf->file, want, 0, &op->overlapped, NULL, 0)) {
        DWORD err = (DWORD)WSAGetLastError();
        if (err != WSA_IO_PENDING && err != ERROR_IO_PENDING)
            pact__op_defer(loop, op, pact__win_error(err)); /* no packet */
    }
    return 0;
}

static void step(win_sendfile *sf)
{
    if (sf->remaining == 0) {
        finish(sf, 0);
        return;
    }
    int r = transmit_chunk(sf);
    if (r < 0)
        finish(sf, r);
}

/* Steps run from their own loop callback, so the user's completion never
 * runs inside pact_transport_sendfile() or pact_transport_abort(). */
static void run_step(pact_loop *loop, void *arg)
{
    (void)loop;
    win_sendfile *sf = arg;
    sf->scheduled = 0;
    if (sf->cancelled)
        finish(sf, -ECANCELED);
    else
        step(sf);
}

static void schedule_step(win_sendfile *sf)
{
    if (sf->scheduled)
        return;
    sf->scheduled = 1;
    if (pact_call_soon(loop_of(sf), run_step, sf) < 0)
        run_step(loop_of(sf), sf);
}

static void item_start(pact_write_item *it)
{
    schedule_step((win_sendfile *)it);
}

static void item_cancel(pact_write_item *it)
{
    win_sendfile *sf = (win_sendfile *)it;
    sf->cancelled = 1;
    if (sf->op)
        pact_op_cancel(loop_of(sf), sf->op);
    else
        schedule_step(sf);
}

static void item_set_ref(pact_write_item *it, int ref)
{
    win_sendfile *sf = (win_sendfile *)it;
    if (sf->op)
        pact_op_set_ref(loop_of(sf), sf->op, ref);
}

static const pact_write_item_ops sendfile_item_ops = {
    .start = item_start,
    .cancel = item_cancel,
    .set_ref = item_set_ref,
};

int pact__stream_sendfile(pact_transport *t, pact_os_fd file, int64_t offset,
                          size_t count, pact_op_cb cb, void *user)
{
    pact_stream *s = pact_container_of(t, pact_stream, t);
    if (t->kind != PACT_STREAM_SOCKET)
        return -ENOTSUP; /* TransmitFile sends on sockets only */
    if (s->more && s->more->item)
        return -EBUSY;
    if (!file || file == INVALID_HANDLE_VALUE)
        return -EBADF;
    if (count == 0) {
        LARGE_INTEGER size;
        if (!GetFileSizeEx(file, &size))
            return pact__win_error(GetLastError());
        count = size.QuadPart > offset ? (size_t)(size.QuadPart - offset) : 0;
    }
    win_sendfile *sf = pact__stream_more(s) ? calloc(1, sizeof *sf) : NULL;
    if (!sf)
        return -ENOMEM;
    sf->item.ops = &sendfile_item_ops;
    sf->file = file;
    sf->offset = offset;
    sf->remaining = count;
    sf->cb = cb;
    sf->user = user;
    pact__stream_queue_item(s, &sf->item);
    return 0;
}
