/* SPDX-License-Identifier: MIT */
/* Sending a file range over a stream transport (asyncio's sendfile, the
 * role TransmitFile plays on Windows).
 *
 * The file range is an item of the stream's write queue (stream.h): the
 * bytes written before the call go first, then the file range, then
 * anything written after. The range
 * is sent with sendfile(2) from the file's page cache, waiting for the
 * socket to become writable through a poll operation when it is full — the
 * same on both engines. Where sendfile(2) does not apply (the source is
 * not a regular file or mmap-able, the target is a pipe on an old kernel)
 * it falls back to read + send operations (a pipe source is read from its
 * current position, since it has no other). A regular file's position
 * is never changed: sendfile(2) and the reads take explicit offsets. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stream.h"

#define CHUNK (1024 * 1024)
#define COPY_BUFFER (64 * 1024)

typedef struct pact_sendfile {
    pact_write_item item; /* first: the stream's queue holds &item */
    int file_fd;
    int64_t offset;
    size_t remaining;
    size_t sent;
    int copying;    /* fallback: read + send operations */
    int unseekable; /* the source is a pipe: read at its position */
    int cancelled;
    int scheduled;  /* run_step is queued on the loop */
    pact_op op;     /* the poll or send in flight */
    char *buf;      /* fallback buffer */
    pact_op_cb cb;
    void *user;
} pact_sendfile;

static void step(pact_sendfile *sf);

static pact_stream *stream(const pact_sendfile *sf) { return sf->item.s; }
static pact_loop *loop_of(const pact_sendfile *sf) { return sf->item.s->t.ep.loop; }

static void finish(pact_sendfile *sf, int err)
{
    pact_stream *s = stream(sf);
    pact_loop *loop = loop_of(sf);
    /* Cancelled because the connection failed (a reset seen by the read
     * side first): the callback gets that error, not -ECANCELED. */
    int64_t result = err < 0 ? err : (int64_t)sf->sent;
    if (err == -ECANCELED && s->t.ep.err < 0)
        result = s->t.ep.err;
    pact_completion c = {.op = 0, .result = result,
                         .transferred = sf->sent};
    pact_op_cb cb = sf->cb;
    void *user = sf->user;
    free(sf->buf);
    free(sf);
    /* The stream goes on before the callback, so that a sendfile the
     * callback starts is not wiped out by item_done afterwards (writes
     * would then pass it and close would not wait for it). */
    pact__stream_item_done(s, err);
    cb(loop, &c, user);
}

/* An operation of the range came back: 1 if that ended the range (a
 * cancel or an error; sf is gone), else 0. */
static int op_ended(pact_sendfile *sf, const pact_completion *c)
{
    sf->op = 0;
    if (sf->cancelled || c->result == -ECANCELED)
        finish(sf, -ECANCELED);
    else if (c->result < 0)
        finish(sf, (int)c->result);
    else
        return 0;
    return 1;
}

static void on_op(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_sendfile *sf = arg;
    if (op_ended(sf, c))
        return;
    if (sf->copying) {
        /* A send_all of the chunk read below completed. */
        sf->sent += (size_t)c->result;
        sf->remaining -= (size_t)c->result;
        sf->offset += c->result;
    }
    step(sf);
}

static int wait_writable(pact_sendfile *sf)
{
    pact_op op = pact_poll(loop_of(sf), stream(sf)->fd, POLLOUT, on_op, sf);
    if (op < 0)
        return (int)op;
    sf->op = pact__endpoint_op(&stream(sf)->t.ep, op);
    return 0;
}

static void on_chunk_read(pact_loop *loop, const pact_completion *c, void *arg);

/* Fallback: read a chunk with a read operation (a pipe may have nothing
 * yet: the loop must not wait for it), then send it with send_all. The
 * offset is the range's for a file, the current position for a pipe. */
static int copy_step(pact_sendfile *sf)
{
    if (!sf->buf && !(sf->buf = malloc(COPY_BUFFER)))
        return -ENOMEM;
    size_t want = sf->remaining < COPY_BUFFER ? sf->remaining : COPY_BUFFER;
    pact_op op = pact_read(loop_of(sf), sf->file_fd, sf->buf, want,
                           sf->unseekable ? -1 : sf->offset, on_chunk_read, sf);
    if (op < 0)
        return (int)op;
    sf->op = pact__endpoint_op(&stream(sf)->t.ep, op);
    return 0;
}

static void on_chunk_read(pact_loop *loop, const pact_completion *c, void *arg)
{
    pact_sendfile *sf = arg;
    if (op_ended(sf, c))
        return;
    if (c->result == 0) {
        sf->remaining = 0; /* the source ended before count */
        finish(sf, 0);
        return;
    }
    size_t n = (size_t)c->result;
    pact_op op = stream(sf)->t.kind == PACT_STREAM_SOCKET
                     ? pact_send_all(loop, stream(sf)->fd, sf->buf, n, 0, on_op, sf)
                     : pact_write(loop, stream(sf)->fd, sf->buf, n, -1, on_op, sf);
    if (op < 0) {
        finish(sf, (int)op);
        return;
    }
    sf->op = pact__endpoint_op(&stream(sf)->t.ep, op);
}

/* Sends as much as the socket takes now, then waits for writability. A
 * chunk limit per step keeps one big file from starving the loop. */
static void step(pact_sendfile *sf)
{
    size_t budget = 8 * CHUNK;
    while (sf->remaining > 0) {
        if (sf->copying) {
            int r = copy_step(sf);
            if (r < 0)
                finish(sf, r); /* frees sf */
            return; /* else a read is in flight */
        }
        if (budget == 0) {
            if (wait_writable(sf) < 0)
                finish(sf, -ENOMEM);
            return;
        }
        off_t off = sf->offset;
        size_t want = sf->remaining < CHUNK ? sf->remaining : CHUNK;
        ssize_t n = sendfile(stream(sf)->fd, sf->file_fd, &off, want);
        if (n > 0) {
            sf->offset = off;
            sf->sent += (size_t)n;
            sf->remaining -= (size_t)n;
            budget = budget > (size_t)n ? budget - (size_t)n : 0;
            continue;
        }
        if (n == 0) {
            sf->remaining = 0; /* end of file before count */
            break;
        }
        if (errno == EAGAIN) {
            int r = wait_writable(sf);
            if (r < 0)
                finish(sf, r);
            return;
        }
        if ((errno == EINVAL || errno == ENOSYS || errno == EOVERFLOW ||
             errno == ESPIPE) &&
            sf->sent == 0) {
            /* ESPIPE: the source is a pipe (or socket), which has no
             * offsets; it is read from where it stands. */
            sf->unseekable = errno == ESPIPE;
            sf->copying = 1;
            continue;
        }
        if (errno == EINTR)
            continue;
        finish(sf, -errno);
        return;
    }
    finish(sf, 0);
}

/* Steps run from their own loop callback, so the user's completion never
 * runs inside pact_transport_sendfile() or pact_transport_abort(). */
static void run_step(pact_loop *loop, void *arg)
{
    (void)loop;
    pact_sendfile *sf = arg;
    sf->scheduled = 0;
    if (sf->cancelled)
        finish(sf, -ECANCELED);
    else
        step(sf);
}

static void schedule_step(pact_sendfile *sf)
{
    if (sf->scheduled)
        return;
    sf->scheduled = 1;
    if (pact_call_soon(loop_of(sf), run_step, sf) < 0)
        run_step(loop_of(sf), sf);
}

/* The stream's writer: every byte before the range is out. */
static void item_start(pact_write_item *it)
{
    schedule_step((pact_sendfile *)it);
}

/* The stream is aborting: stop; finish() tells the stream. */
static void item_cancel(pact_write_item *it)
{
    pact_sendfile *sf = (pact_sendfile *)it;
    sf->cancelled = 1;
    if (sf->op)
        pact_op_cancel(loop_of(sf), sf->op);
    else
        schedule_step(sf);
}

/* pact_transport_set_ref() on its stream: the op in flight follows. */
static void item_set_ref(pact_write_item *it, int ref)
{
    pact_sendfile *sf = (pact_sendfile *)it;
    if (sf->op)
        pact_op_set_ref(loop_of(sf), sf->op, ref);
}

static const pact_write_item_ops sendfile_item_ops = {
    .start = item_start,
    .cancel = item_cancel,
    .set_ref = item_set_ref,
};

int pact__stream_sendfile(pact_transport *t, pact_os_fd file_fd, int64_t offset,
                          size_t count, pact_op_cb cb, void *user)
{
    pact_stream *s = pact_container_of(t, pact_stream, t);
    if (s->more && s->more->item)
        return -EBUSY;
    if (count == 0) {
        struct stat st;
        if (fstat(file_fd, &st) < 0)
            return -errno;
        if (!S_ISREG(st.st_mode))
            return -EINVAL; /* "to the end" needs a size */
        count = st.st_size > offset ? (size_t)(st.st_size - offset) : 0;
    }
    /* s->more holds the queue the range joins. */
    pact_sendfile *sf = pact__stream_more(s) ? calloc(1, sizeof *sf) : NULL;
    if (!sf)
        return -ENOMEM;
    sf->item.ops = &sendfile_item_ops;
    sf->file_fd = file_fd;
    sf->offset = offset;
    sf->remaining = count;
    sf->cb = cb;
    sf->user = user;
    /* sendfile(2) has no MSG_DONTWAIT: on a blocking socket it would hold
     * the loop until the peer has read everything. The transport owns the
     * fd, and its other operations do not mind O_NONBLOCK. */
    pact__fd_make_nonblocking(s->fd);
    /* Starts the range now if nothing is buffered, else after the flush. */
    pact__stream_queue_item(s, &sf->item);
    return 0;
}
