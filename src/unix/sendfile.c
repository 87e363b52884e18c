/* SPDX-License-Identifier: MIT */
/* Sending a file range on Linux, the system's half of src/sendfile.c
 * (sendfile.h): the range is sent with sendfile(2) from the file's page
 * cache, waiting for the socket to become writable through a poll
 * operation when it is full — the same on both engines. Where sendfile(2)
 * does not apply (the source is not a regular file or mmap-able, the
 * target is a pipe on an old kernel) it falls back to read + send
 * operations (a pipe source is read from its current position, since it
 * has no other). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sendfile.h"

#define CHUNK (1024 * 1024)
#define COPY_BUFFER (64 * 1024)

typedef struct unix_sendfile {
    pact_sendfile sf;
    int copying;    /* fallback: read + send operations */
    int unseekable; /* the source is a pipe: read at its position */
    char *buf;      /* fallback buffer */
    size_t buffered; /* bytes read into buf, not sent yet */
} unix_sendfile;

static unix_sendfile *unix_of(pact_sendfile *sf)
{
    return pact_container_of(sf, unix_sendfile, sf);
}

pact_sendfile *pact__sendfile_os_new(pact_stream *s, pact_os_fd file,
                                     int64_t offset, size_t *count, int *err)
{
    if (*count == 0) {
        struct stat st;
        if (fstat(file, &st) < 0) {
            *err = -errno;
            return NULL;
        }
        if (!S_ISREG(st.st_mode)) {
            *err = -EINVAL; /* "to the end" needs a size */
            return NULL;
        }
        *count = st.st_size > offset ? (size_t)(st.st_size - offset) : 0;
    }
    unix_sendfile *u = calloc(1, sizeof *u);
    if (!u) {
        *err = -ENOMEM;
        return NULL;
    }
    /* sendfile(2) has no MSG_DONTWAIT: on a blocking socket it would hold
     * the loop until the peer has read everything. The transport owns the
     * fd, and its other operations do not mind O_NONBLOCK. */
    pact__fd_make_nonblocking(s->fd);
    return &u->sf;
}

void pact__sendfile_os_free(pact_sendfile *sf)
{
    unix_sendfile *u = unix_of(sf);
    free(u->buf);
    free(u);
}

static void on_writable(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    if (!pact__sendfile_op_back(arg, c, 0))
        pact__sendfile_step(arg);
}

static void on_sent(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    unix_of(arg)->buffered = 0;
    if (!pact__sendfile_op_back(arg, c, 1))
        pact__sendfile_step(arg);
}

static void on_chunk_read(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_sendfile *sf = arg;
    if (pact__sendfile_op_back(sf, c, 0))
        return;
    if (c->result == 0)
        sf->remaining = 0; /* the source ended before count */
    else
        unix_of(sf)->buffered = (size_t)c->result;
    pact__sendfile_step(sf);
}

static int track(pact_sendfile *sf, pact_op op)
{
    if (op < 0)
        return (int)op;
    sf->op = pact__endpoint_op(&pact__sendfile_stream(sf)->t.ep, op);
    return 0;
}

static int wait_writable(pact_sendfile *sf)
{
    pact_stream *s = pact__sendfile_stream(sf);
    return track(sf, pact_poll(pact__sendfile_loop(sf), s->fd, POLLOUT,
                               on_writable, sf));
}

/* Fallback: read a chunk with a read operation (a pipe may have nothing
 * yet: the loop must not wait for it), then send it with send_all. The
 * offset is the range's for a file, the current position for a pipe. */
static int copy_chunk(unix_sendfile *u)
{
    pact_sendfile *sf = &u->sf;
    pact_stream *s = pact__sendfile_stream(sf);
    pact_loop *loop = pact__sendfile_loop(sf);
    if (u->buffered)
        return track(sf, s->t.kind == PACT_STREAM_SOCKET
                             ? pact_send_all(loop, s->fd, u->buf, u->buffered,
                                             0, on_sent, sf)
                             : pact_write(loop, s->fd, u->buf, u->buffered,
                                          -1, on_sent, sf));
    if (!u->buf && !(u->buf = malloc(COPY_BUFFER)))
        return -ENOMEM;
    size_t want = sf->remaining < COPY_BUFFER ? sf->remaining : COPY_BUFFER;
    return track(sf, pact_read(loop, sf->file, u->buf, want,
                               u->unseekable ? -1 : sf->offset,
                               on_chunk_read, sf));
}

/* Sends as much as the socket takes now, then waits for writability. A
 * limit per step keeps one big file from starving the loop. */
int pact__sendfile_os_chunk(pact_sendfile *sf)
{
    unix_sendfile *u = unix_of(sf);
    size_t budget = 8 * CHUNK;
    while (sf->remaining > 0) {
        if (u->copying)
            return copy_chunk(u);
        if (budget == 0)
            return wait_writable(sf);
        off_t off = sf->offset;
        size_t want = sf->remaining < CHUNK ? sf->remaining : CHUNK;
        ssize_t n = sendfile(pact__sendfile_stream(sf)->fd, sf->file, &off,
                             want);
        if (n > 0) {
            sf->offset = off;
            sf->sent += (size_t)n;
            sf->remaining -= (size_t)n;
            budget = budget > (size_t)n ? budget - (size_t)n : 0;
            continue;
        }
        if (n == 0)
            return 1; /* end of file before count */
        if (errno == EAGAIN)
            return wait_writable(sf);
        if ((errno == EINVAL || errno == ENOSYS || errno == EOVERFLOW ||
             errno == ESPIPE) &&
            sf->sent == 0) {
            /* ESPIPE: the source is a pipe (or socket), which has no
             * offsets; it is read from where it stands. */
            u->unseekable = errno == ESPIPE;
            u->copying = 1;
            continue;
        }
        if (errno == EINTR)
            continue;
        return -errno;
    }
    return 1;
}
