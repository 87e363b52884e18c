/* SPDX-License-Identifier: MIT */
/* Sending a file range over a stream transport (pact_transport_sendfile,
 * asyncio's sendfile): the portable half (src/sendfile.c) and what each
 * system does for it (src/unix/sendfile.c: sendfile(2), or read and send
 * operations where it does not apply; src/win/sendfile.c: TransmitFile).
 *
 * The portable half makes the range an item of the stream's write queue
 * (stream.h) — the bytes written before the call go first, then the
 * range, then anything written after —, runs its steps from loop
 * callbacks, stops it on an abort, and finishes it; the system's half
 * sends the next chunk. A regular file's position is never used: every
 * chunk names its offset. */
#ifndef PACT_SENDFILE_H
#define PACT_SENDFILE_H

#include "stream.h"

typedef struct pact_sendfile {
    pact_write_item item; /* first: the stream's queue holds &item */
    pact_os_fd file;
    int64_t offset;   /* of the next byte to send */
    size_t remaining; /* bytes of the range not sent yet */
    size_t sent;
    pact_op op;       /* the system's op in flight, 0 when none */
    int cancelled;
    int scheduled;    /* a step is queued on the loop */
    pact_op_cb cb;
    void *user;
} pact_sendfile;

/* ---- the system's half ---------------------------------------------------- */

/* Checks that this system can send from file on s, sets *count when it is
 * 0 (to the end of the file, which must have a size), and allocates the
 * range with room for the system's own state, zeroed. NULL with *err. */
pact_sendfile *pact__sendfile_os_new(pact_stream *s, pact_os_fd file,
                                     int64_t offset, size_t *count, int *err);
/* Frees what pact__sendfile_os_new allocated, and what the chunks did. */
void pact__sendfile_os_free(pact_sendfile *sf);
/* Sends on from sf->offset (sf->remaining > 0). What goes out at once
 * moves offset, sent and remaining; then either one op is started
 * (sf->op, tied to the stream's endpoint) whose callback passes through
 * pact__sendfile_op_back() and then pact__sendfile_step(), and 0 is
 * returned; or 1 when the source has ended; or a negative errno. */
int pact__sendfile_os_chunk(pact_sendfile *sf);

/* ---- the portable half, for the system's ---------------------------------- */

/* An op of the range came back; moved: its c->result counts bytes of
 * the range that went out. 1 if that ended the range (a cancel or an
 * error: sf is gone), else 0. */
int pact__sendfile_op_back(pact_sendfile *sf, const pact_completion *c,
                           int moved);
/* The next chunk, or the end of the range when nothing remains. */
void pact__sendfile_step(pact_sendfile *sf);

static inline pact_stream *pact__sendfile_stream(const pact_sendfile *sf)
{
    return sf->item.s;
}

static inline pact_loop *pact__sendfile_loop(const pact_sendfile *sf)
{
    return sf->item.s->t.ep.loop;
}

#endif
