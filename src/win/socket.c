/* SPDX-License-Identifier: MIT */
/* Stream transports on Windows: what src/stream.c leaves to the system.
 * The stream itself (reading with the multishot receive, the write queue,
 * flow control, pause without loss, the endpoint's close) is the same code
 * as on Linux, on the completion port's operations. */
#include "loop.h"
#include "stream.h"

/* pact_transport_sendfile: TransmitFile would be the way; not yet. */
int pact__stream_sendfile(pact_transport *t, int file_fd, int64_t offset,
                          size_t count, pact_op_cb cb, void *user)
{
    (void)t, (void)file_fd, (void)offset, (void)count, (void)cb, (void)user;
    return -ENOTSUP;
}
