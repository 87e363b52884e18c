/* SPDX-License-Identifier: MIT */
/* Sending a file range on Windows, the system's half of src/sendfile.c
 * (sendfile.h): TransmitFile on the completion port, at most CHUNK bytes
 * per call.
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
#include "sendfile.h"

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

pact_sendfile *pact__sendfile_os_new(pact_stream *s, pact_os_fd file,
                                     int64_t offset, size_t *count, int *err)
{
    if (s->t.kind != PACT_STREAM_SOCKET) {
        *err = -ENOTSUP; /* TransmitFile sends on sockets only */
        return NULL;
    }
    if (!file || file == INVALID_HANDLE_VALUE) {
        *err = -EBADF;
        return NULL;
    }
    if (*count == 0) {
        LARGE_INTEGER size;
        if (!GetFileSizeEx(file, &size)) {
            *err = pact__win_error(GetLastError());
            return NULL;
        }
        *count = size.QuadPart > offset ? (size_t)(size.QuadPart - offset) : 0;
    }
    pact_sendfile *sf = calloc(1, sizeof *sf);
    if (!sf)
        *err = -ENOMEM;
    return sf;
}

void pact__sendfile_os_free(pact_sendfile *sf)
{
    free(sf);
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
    pact_sendfile *sf = arg;
    if (pact__sendfile_op_back(sf, c, 1))
        return;
    if (c->result == 0)
        sf->remaining = 0; /* the file ended before count */
    pact__sendfile_step(sf);
}

/* Starts one TransmitFile of the next chunk. */
int pact__sendfile_os_chunk(pact_sendfile *sf)
{
    pact_loop *loop = pact__sendfile_loop(sf);
    SOCKET sock = (SOCKET)pact__sendfile_stream(sf)->fd;
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
    sf->op = pact__endpoint_op(&pact__sendfile_stream(sf)->t.ep,
                               pact__op_start_custom(loop, op,
                                                     __builtin_return_address(0)));
    if (!transmit_file(sock, sf->file, want, 0, &op->overlapped, NULL, 0)) {
        DWORD err = (DWORD)WSAGetLastError();
        if (err != WSA_IO_PENDING && err != ERROR_IO_PENDING)
            pact__op_defer(loop, op, pact__win_error(err)); /* no packet */
    }
    return 0;
}
