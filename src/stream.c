/* SPDX-License-Identifier: MIT */
/* Stream transports: asyncio's transport/protocol model on TCP, Unix
 * sockets and pipes, built on the operation layer.
 *
 * Reading: sockets keep one multishot receive in flight
 * (pact_recv_multishot), which reads into buffers the loop lends, so a
 * connection owns no receive buffer; pipes keep one read into a buffer of
 * their own. Pausing cancels the multishot receive, but nothing is lost
 * (what lost data in asyncio, bpo-33694): bytes that still arrive before
 * its final completion are copied into `held` (allocated only then) and
 * handed over on resume, in order, before the next receive is started.
 *
 * Writing: two buffers. `inflight` is what the kernel is sending and is
 * never touched until the send completes (docs/contract.md §2);
 * `pending` collects writes meanwhile and becomes the next send, so queued
 * writes are coalesced into one send. Both are reused, so a steady stream
 * of writes allocates nothing. They live in t->more with the other state
 * only some transports need, allocated on first need (the first write), so
 * an idle connection holds none of it.
 *
 * Teardown: close/abort/error cancel what is in flight, and only once every
 * operation has called back is the fd closed and connection_lost called —
 * from a fresh loop callback, never nested inside another protocol
 * callback. The memory goes after connection_lost has returned. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop.h"
#include "stream.h"

#define READ_BUFFER_SIZE (64 * 1024)
#define DEFAULT_HIGH_WATER (64 * 1024)
#define DEFAULT_LOW_WATER (16 * 1024)

static void start_reading(pact_transport *t);
static void kick_write(pact_transport *t);
static void maybe_finish(pact_transport *t);
static void fatal_error(pact_transport *t, int err);
static void transport_unref(pact_transport *t);

static void transport_ref(pact_transport *t) { t->refs++; }

/* Hands a call to another layer's implementation (see pact_transport_ops). */
#define DELEGATE(t, member, ...)                                         \
    do {                                                                 \
        if ((t) && (t)->ops)                                             \
            return (t)->ops->member ? (t)->ops->member(__VA_ARGS__)      \
                                    : -ENOTSUP;                          \
    } while (0)
#define DELEGATE_QUERY(t, member, ...)                                   \
    do {                                                                 \
        if ((t) && (t)->ops)                                             \
            return (t)->ops->member ? (t)->ops->member(__VA_ARGS__) : 0; \
    } while (0)

/* ---- buffers --------------------------------------------------------------- */

static size_t wbuf_len(const pact_wbuf *b) { return b->end - b->start; }

static int wbuf_append(pact_wbuf *b, const void *data, size_t len)
{
    if (b->end + len > b->cap) {
        /* Slide down first: the buffer is not in flight (only `pending` is
         * ever appended to), so moving its bytes is safe. */
        if (b->start > 0) {
            memmove(b->data, b->data + b->start, b->end - b->start);
            b->end -= b->start;
            b->start = 0;
        }
        if (b->end + len > b->cap) {
            size_t cap = b->cap ? b->cap : 4096;
            while (cap < b->end + len)
                cap *= 2;
            char *data2 = realloc(b->data, cap);
            if (!data2)
                return -ENOMEM;
            b->data = data2;
            b->cap = cap;
        }
    }
    memcpy(b->data + b->end, data, len);
    b->end += len;
    return 0;
}

size_t pact_transport_write_buffer_size(const pact_transport *t)
{
    DELEGATE_QUERY(t, write_buffer_size, t);
    return t && t->more
               ? wbuf_len(&t->more->inflight) + wbuf_len(&t->more->pending)
               : 0;
}

pact_transport_more *pact__transport_more(pact_transport *t)
{
    if (!t->more) {
        t->more = calloc(1, sizeof *t->more);
        if (t->more) {
            t->more->high_water = DEFAULT_HIGH_WATER;
            t->more->low_water = DEFAULT_LOW_WATER;
        }
    }
    return t->more;
}

static size_t held_len(const pact_transport *t)
{
    return t->more ? wbuf_len(&t->more->held) : 0;
}

static pact_op poll_op(const pact_transport *t)
{
    return t->more ? t->more->poll_op : 0;
}

/* ---- lifetime -------------------------------------------------------------- */

static void transport_free(pact_transport *t)
{
    if (t->more) {
        free(t->more->rbuf);
        free(t->more->held.data);
        free(t->more->inflight.data);
        free(t->more->pending.data);
        free(t->more);
    }
    free(t);
}

/* Scheduled callbacks hold a reference so the memory outlives them. */
static void transport_unref(pact_transport *t)
{
    if (--t->refs == 0)
        transport_free(t);
}

static void final_close(pact_loop *loop, void *arg)
{
    (void)loop;
    pact_transport *t = arg;
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -EBADF;
    }
    pact__resource_remove(t->loop, &t->res);
    t->lost = 1;
    if (t->proto && t->proto->connection_lost)
        t->proto->connection_lost(t, t->lost_err, t->user);
    if (t->on_gone)
        t->on_gone(t, t->on_gone_user);
    transport_unref(t);
}

/* Finishes the teardown once nothing is in flight any more. */
static void maybe_finish(pact_transport *t)
{
    if (!t->closing || t->finishing)
        return;
    if (t->read_op || t->send_op || poll_op(t) || pact__transport_sendfile(t))
        return;
    if (!t->aborting && pact_transport_write_buffer_size(t) > 0)
        return; /* close() flushes first */
    t->finishing = 1;
    /* No extra reference here: final_close drops the transport's own one
     * (refs = 1 at creation); taking another leaked every transport
     * (found by process.c's ASan run: the 64 KiB read buffer and the
     * struct of each closed transport were never freed). */
    if (pact_call_soon(t->loop, final_close, t) < 0) {
        /* The loop is shutting down: finish now rather than never. */
        final_close(t->loop, t);
    }
}

static void cancel_ops(pact_transport *t)
{
    if (t->read_op)
        pact_cancel(t->loop, t->read_op);
    if (t->send_op)
        pact_cancel(t->loop, t->send_op);
    if (poll_op(t))
        pact_cancel(t->loop, poll_op(t));
    if (pact__transport_sendfile(t))
        pact__sendfile_cancel(t);
}

/* An error ends the connection: connection_lost(err) once ops are back. */
static void fatal_error(pact_transport *t, int err)
{
    if (t->aborting)
        return;
    t->aborting = 1;
    t->closing = 1;
    t->lost_err = err;
    t->has_held = 0;
    if (t->more) {
        t->more->held.start = t->more->held.end = 0;
        t->more->inflight.start = t->more->inflight.end = 0;
        t->more->pending.start = t->more->pending.end = 0;
    }
    cancel_ops(t);
    maybe_finish(t);
}

int pact_transport_close(pact_transport *t)
{
    DELEGATE(t, close, t);
    if (!t)
        return -EINVAL;
    if (t->closing)
        return -EALREADY;
    t->closing = 1;
    t->has_held = 0; /* the user closed: nothing more is delivered */
    if (t->more)
        t->more->held.start = t->more->held.end = 0;
    if (t->read_op)
        pact_cancel(t->loop, t->read_op);
    if (poll_op(t))
        pact_cancel(t->loop, poll_op(t));
    kick_write(t);
    maybe_finish(t);
    return 0;
}

int pact_transport_abort(pact_transport *t)
{
    DELEGATE(t, abort, t);
    if (!t)
        return -EINVAL;
    if (t->aborting)
        return -EALREADY;
    fatal_error(t, 0);
    return 0;
}

static void force_close(pact_resource *res)
{
    pact_transport *t = pact_container_of(res, pact_transport, res);
    pact_transport_abort(t);
}

/* ---- reading --------------------------------------------------------------- */

static void resume_delivery(pact_loop *loop, void *arg);

/* Whether received bytes must wait behind others: reading is paused, or
 * older bytes (or a held end of file / error) are still to be handed over,
 * or a resume is scheduled to hand them over. Holding everything behind
 * keeps the byte order (docs/contract.md §5). */
static int must_hold(const pact_transport *t)
{
    return t->paused || t->resume_scheduled || t->has_held || held_len(t) > 0;
}

/* Hands received bytes to the protocol; returns how many it took. A
 * buffered protocol that pauses inside buffer_updated takes no more: after
 * pause_reading no data callback runs until resume, and the caller holds
 * the rest (docs/contract.md §5). After a close the rest is dropped. */
static size_t deliver_data(pact_transport *t, const char *data, size_t r)
{
    if (t->proto->get_buffer) {
        /* Buffered protocol: copy into the buffers it hands out, as
         * asyncio's proactor does (the bytes sit in a buffer the loop
         * lends for this call only). */
        size_t off = 0;
        while (off < r && !t->closing && !t->paused) {
            size_t len = 0;
            char *dst = t->proto->get_buffer(t, r - off, &len, t->user);
            if (!dst || len == 0) {
                fatal_error(t, -ENOBUFS);
                return r;
            }
            if (len > r - off)
                len = r - off;
            memcpy(dst, data + off, len);
            off += len;
            if (t->proto->buffer_updated)
                t->proto->buffer_updated(t, len, t->user);
        }
        return off;
    }
    if (t->proto->data_received)
        t->proto->data_received(t, data, r, t->user);
    return r;
}

/* The read side ended: r = 0 at the peer's EOF, else an error. */
static void deliver_end(pact_transport *t, int64_t r)
{
    if (r == 0) {
        t->eof_seen = 1;
        int keep_open = t->proto->eof_received ? t->proto->eof_received(t, t->user) : 0;
        /* A read pipe has no writing side to keep open. */
        if (!keep_open || t->kind == PACT_STREAM_READ_PIPE)
            pact_transport_close(t);
        return;
    }
    fatal_error(t, (int)r);
}

/* Queues resume_delivery (held data, then the next receive) for the next
 * iteration: never from inside the caller, which may be a protocol
 * callback. */
static int schedule_resume(pact_transport *t)
{
    if (t->resume_scheduled)
        return 0;
    transport_ref(t);
    if (pact_call_soon(t->loop, resume_delivery, t) < 0) {
        transport_unref(t);
        return -ESHUTDOWN;
    }
    t->resume_scheduled = 1;
    return 0;
}

/* Bytes from a receive: handed over now, or held (copied: the buffer is
 * the loop's) behind what is still waiting. After a close nothing more is
 * delivered. */
static void on_bytes(pact_transport *t, const char *data, size_t len)
{
    if (t->closing)
        return;
    size_t done = must_hold(t) ? 0 : deliver_data(t, data, len);
    if (done < len && !t->closing) {
        if (!pact__transport_more(t) ||
            wbuf_append(&t->more->held, data + done, len - done) != 0)
            fatal_error(t, -ENOMEM);
    }
}

/* The receive op ended with r: 0 at EOF or a negative errno; -ECANCELED
 * (pause_reading cancelled it), -ENOBUFS (the loop ran out of receive
 * buffers: back-pressure) and r > 0 (a pipe read whose bytes went to
 * on_bytes) only ask for the next receive. */
static void on_read_end(pact_transport *t, int64_t r)
{
    t->read_op = 0;
    if (t->closing) {
        /* The user closed (data after close is not delivered) or an error
         * is tearing the connection down. */
        maybe_finish(t);
        return;
    }
    if (r > 0 || r == -ECANCELED || r == -ENOBUFS) {
        if (t->paused)
            return; /* resume_reading starts the next one */
        /* After -ENOBUFS the next receive starts on the next iteration,
         * once the loop has taken its buffers back. */
        if (r == -ENOBUFS || must_hold(t))
            schedule_resume(t);
        else
            start_reading(t);
        return;
    }
    if (must_hold(t)) {
        /* EOF or an error behind held bytes: it waits its turn. */
        t->has_held = 1;
        t->held_result = (int)r; /* 0 or a negative errno */
        if (!t->paused)
            schedule_resume(t);
        return;
    }
    deliver_end(t, r);
}

/* Sockets: a multishot receive into the loop's buffers. */
static void on_recv_multi(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_transport *t = arg;
    if (c->more)
        on_bytes(t, c->data, (size_t)c->result);
    else
        on_read_end(t, c->result);
}

/* Pipes: one read at a time into the transport's buffer. */
static void on_read(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_transport *t = arg;
    if (c->result > 0)
        on_bytes(t, t->more->rbuf, (size_t)c->result);
    on_read_end(t, c->result);
}

/* Socket transports hold no receive buffer: pact_recv_multishot() lends
 * the loop's, for the duration of each callback (so 10,000 idle
 * connections cost no buffers at all). Pipes read into a buffer of their
 * own, allocated on the first read. */
static void start_reading(pact_transport *t)
{
    if (t->read_op || t->closing || must_hold(t) || !t->made ||
        t->eof_seen || t->kind == PACT_STREAM_WRITE_PIPE)
        return;
    pact_op op;
    if (t->kind == PACT_STREAM_SOCKET) {
        op = pact_recv_multishot(t->loop, t->fd, on_recv_multi, t);
    } else {
        if (!pact__transport_more(t) ||
            (!t->more->rbuf && !(t->more->rbuf = malloc(READ_BUFFER_SIZE)))) {
            fatal_error(t, -ENOMEM);
            return;
        }
        op = pact_read(t->loop, t->fd, t->more->rbuf, READ_BUFFER_SIZE, -1,
                       on_read, t);
    }
    if (op < 0) {
        fatal_error(t, (int)op);
        return;
    }
    t->read_op = op;
}

int pact_transport_pause_reading(pact_transport *t)
{
    DELEGATE(t, pause_reading, t);
    if (!t)
        return -EINVAL;
    if (t->closing)
        return -ESHUTDOWN;
    if (t->paused)
        return -EALREADY;
    t->paused = 1;
    /* A multishot receive would go on receiving: ask for it to stop. The
     * bytes it still delivers before its final -ECANCELED are held (a
     * cancel never drops data, docs/contract.md §4) and handed over on resume.
     * A pipe's one-shot read is left in flight; its result is held too. */
    if (t->read_op && t->kind == PACT_STREAM_SOCKET)
        pact_cancel(t->loop, t->read_op);
    return 0;
}

static void resume_delivery(pact_loop *loop, void *arg)
{
    (void)loop;
    pact_transport *t = arg;
    t->resume_scheduled = 0;
    if (!t->closing && !t->paused && held_len(t) > 0) {
        /* Taken out first: the protocol may pause and resume again. */
        pact_wbuf held = t->more->held;
        memset(&t->more->held, 0, sizeof t->more->held);
        size_t done = deliver_data(t, held.data + held.start, wbuf_len(&held));
        if (done < wbuf_len(&held) && !t->closing) {
            /* Paused again: the rest goes back to the front, ahead of
             * anything held meanwhile. */
            held.start += done;
            pact_wbuf later = t->more->held;
            t->more->held = held;
            if (wbuf_len(&later) > 0 &&
                wbuf_append(&t->more->held, later.data + later.start,
                            wbuf_len(&later)) != 0)
                fatal_error(t, -ENOMEM);
            free(later.data);
        } else {
            free(held.data);
        }
    }
    if (!t->closing && !t->paused && held_len(t) == 0) {
        if (t->has_held) {
            t->has_held = 0;
            deliver_end(t, t->held_result);
        } else {
            /* Nothing if the cancelled receive has not ended yet: its
             * final completion starts the next one. */
            start_reading(t);
        }
    }
    transport_unref(t);
}

int pact_transport_resume_reading(pact_transport *t)
{
    DELEGATE(t, resume_reading, t);
    if (!t)
        return -EINVAL;
    if (t->closing)
        return -ESHUTDOWN;
    if (!t->paused)
        return -EALREADY;
    t->paused = 0;
    if (!t->made)
        return 0; /* reading starts after connection_made */
    /* Held data goes out on the next iteration, never from inside the
     * caller (which may be a protocol callback). */
    if (must_hold(t))
        return schedule_resume(t);
    start_reading(t);
    return 0;
}

int pact_transport_is_reading(const pact_transport *t)
{
    DELEGATE_QUERY(t, is_reading, t);
    return t && !t->closing && !t->paused && t->kind != PACT_STREAM_WRITE_PIPE;
}

int pact_transport_is_closing(const pact_transport *t)
{
    DELEGATE_QUERY(t, is_closing, t);
    return t ? t->closing : 1;
}

/* ---- writing --------------------------------------------------------------- */

static size_t high_water(const pact_transport *t)
{
    return t->more ? t->more->high_water : DEFAULT_HIGH_WATER;
}

static size_t low_water(const pact_transport *t)
{
    return t->more ? t->more->low_water : DEFAULT_LOW_WATER;
}

static void check_resume_writing(pact_transport *t)
{
    if (t->write_paused && pact_transport_write_buffer_size(t) <= low_water(t)) {
        t->write_paused = 0;
        if (t->proto->resume_writing && !t->closing)
            t->proto->resume_writing(t, t->user);
    }
}

static void shutdown_write_side(pact_transport *t)
{
    if (!t->eof_requested || t->eof_done || pact_transport_write_buffer_size(t) > 0 ||
        pact__transport_sendfile(t))
        return;
    t->eof_done = 1;
    if (t->kind == PACT_STREAM_SOCKET) {
        if (shutdown(t->fd, SHUT_WR) < 0 && errno != ENOTCONN)
            fatal_error(t, -errno);
    } else if (t->kind == PACT_STREAM_WRITE_PIPE) {
        pact_transport_close(t); /* a pipe's EOF is its close */
    }
}

static void on_send(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_transport *t = arg;
    t->send_op = 0;
    if (t->aborting) {
        maybe_finish(t);
        return;
    }
    if (c->result < 0) {
        fatal_error(t, c->result == -ECANCELED ? -ECONNABORTED : (int)c->result);
        return;
    }
    /* A send ran: t->more holds its buffer. */
    t->more->inflight.start += (size_t)c->result;
    if (wbuf_len(&t->more->inflight) == 0)
        t->more->inflight.start = t->more->inflight.end = 0;
    kick_write(t); /* the rest of a short send, or the next batch */
    check_resume_writing(t);
    if (!t->send_op) {
        shutdown_write_side(t);
        maybe_finish(t);
    }
}

/* Starts the next send if none is in flight: the rest of the in-flight
 * buffer after a short send, else what is pending, coalesced. While a
 * sendfile waits or runs, only the bytes written before it may go. */
static void kick_write(pact_transport *t)
{
    if (t->send_op || t->aborting || !t->more)
        return; /* no t->more: nothing was ever written or sent */
    pact_transport_more *m = t->more;
    if (wbuf_len(&m->inflight) == 0) {
        size_t pending = wbuf_len(&m->pending);
        size_t allowed = m->sendfile ? pact__sendfile_bytes_before(t) : pending;
        if (pending == 0 || allowed == 0) {
            if (m->sendfile && allowed == 0)
                pact__sendfile_ready(t); /* its turn */
            return;
        }
        if (allowed >= pending) {
            pact_wbuf tmp = m->inflight;
            m->inflight = m->pending;
            m->pending = tmp;
            m->pending.start = m->pending.end = 0;
        } else {
            /* Split: only the part written before the sendfile. */
            m->inflight.start = m->inflight.end = 0;
            if (wbuf_append(&m->inflight, m->pending.data + m->pending.start,
                            allowed) != 0) {
                fatal_error(t, -ENOMEM);
                return;
            }
            m->pending.start += allowed;
        }
        if (m->sendfile)
            pact__sendfile_consumed_before(t, wbuf_len(&m->inflight));
    }
    const char *data = m->inflight.data + m->inflight.start;
    size_t len = wbuf_len(&m->inflight);
    pact_op op = t->kind == PACT_STREAM_SOCKET
                     ? pact_send(t->loop, t->fd, data, len, 0, on_send, t)
                     : pact_write(t->loop, t->fd, data, len, -1, on_send, t);
    if (op < 0) {
        fatal_error(t, (int)op);
        return;
    }
    t->send_op = op;
}

void pact__transport_kick_write(pact_transport *t)
{
    kick_write(t);
}

static int write_refused(pact_transport *t)
{
    if (t->closing) {
        /* asyncio drops these and warns; say so once in debug mode. */
        if (t->writes_after_close++ == 0 && pact_loop_debug(t->loop))
            pact__log(t->loop, "write on a closing transport (fd %d) dropped",
                      t->fd);
        return -ESHUTDOWN;
    }
    if (t->eof_requested)
        return -EPIPE;
    if (t->kind == PACT_STREAM_READ_PIPE)
        return -ENOTSUP;
    return 0;
}

static void check_pause_writing(pact_transport *t)
{
    if (!t->write_paused && pact_transport_write_buffer_size(t) > high_water(t)) {
        t->write_paused = 1;
        if (t->proto->pause_writing)
            t->proto->pause_writing(t, t->user);
    }
}

int pact_transport_write(pact_transport *t, const void *data, size_t len)
{
    DELEGATE(t, write, t, data, len);
    if (!t || (!data && len))
        return -EINVAL;
    int r = write_refused(t);
    if (r)
        return r;
    if (len == 0)
        return 0;
    if (!pact__transport_more(t) || wbuf_append(&t->more->pending, data, len) != 0)
        return -ENOMEM;
    kick_write(t);
    check_pause_writing(t);
    return 0;
}

int pact_transport_writev(pact_transport *t, const struct iovec *iov, int iovcnt)
{
    DELEGATE(t, writev, t, iov, iovcnt);
    if (!t || (!iov && iovcnt) || iovcnt < 0)
        return -EINVAL;
    int r = write_refused(t);
    if (r)
        return r;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len &&
            (!pact__transport_more(t) ||
             wbuf_append(&t->more->pending, iov[i].iov_base,
                         iov[i].iov_len) != 0))
            return -ENOMEM;
    }
    kick_write(t);
    check_pause_writing(t);
    return 0;
}

int pact_transport_can_write_eof(const pact_transport *t)
{
    DELEGATE_QUERY(t, can_write_eof, t);
    return t && t->kind != PACT_STREAM_READ_PIPE;
}

int pact_transport_write_eof(pact_transport *t)
{
    DELEGATE(t, write_eof, t);
    if (!t)
        return -EINVAL;
    if (t->kind == PACT_STREAM_READ_PIPE)
        return -ENOTSUP;
    if (t->closing)
        return -ESHUTDOWN;
    if (t->eof_requested)
        return -EALREADY;
    t->eof_requested = 1;
    if (!t->send_op)
        shutdown_write_side(t);
    return 0;
}

int pact_transport_set_write_buffer_limits(pact_transport *t, size_t high,
                                           size_t low)
{
    DELEGATE(t, set_write_buffer_limits, t, high, low);
    if (!t)
        return -EINVAL;
    if (high == 0)
        high = DEFAULT_HIGH_WATER;
    if (low > high)
        return -EINVAL;
    if (!pact__transport_more(t))
        return -ENOMEM;
    t->more->high_water = high;
    t->more->low_water = low;
    check_pause_writing(t);
    check_resume_writing(t);
    return 0;
}

void pact_transport_get_write_buffer_limits(const pact_transport *t,
                                            size_t *high, size_t *low)
{
    if (t && t->ops && t->ops->get_write_buffer_limits) {
        t->ops->get_write_buffer_limits(t, high, low);
        return;
    }
    if (high)
        *high = t ? high_water(t) : 0;
    if (low)
        *low = t ? low_water(t) : 0;
}

/* ---- write pipes: noticing that the reader went away ---------------------- */

static void on_pipe_hangup(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_transport *t = arg;
    t->more->poll_op = 0;
    if (c->result == -ECANCELED || t->closing) {
        maybe_finish(t);
        return;
    }
    if (c->result < 0 || (c->result & (POLLERR | POLLHUP)))
        fatal_error(t, c->result < 0 ? (int)c->result : -EPIPE);
}

/* A write pipe is never readable: POLLIN waits only for POLLERR/POLLHUP,
 * which the kernel reports when the last reader closes. */
static void watch_pipe_reader(pact_transport *t)
{
    if (!pact__transport_more(t))
        return; /* as when the poll cannot start: writes still fail */
    pact_op op = pact_poll(t->loop, t->fd, POLLIN, on_pipe_hangup, t);
    if (op > 0)
        t->more->poll_op = op;
}

/* ---- creation -------------------------------------------------------------- */

static void connection_made(pact_loop *loop, void *arg)
{
    (void)loop;
    pact_transport *t = arg;
    t->made = 1;
    if (t->proto->connection_made)
        t->proto->connection_made(t, t->user);
    if (!t->closing) {
        start_reading(t);
        if (t->kind == PACT_STREAM_WRITE_PIPE && !poll_op(t))
            watch_pipe_reader(t);
    }
    maybe_finish(t);
    transport_unref(t);
}

int pact__transport_create(pact_loop *loop, int fd, pact_stream_kind kind,
                           const pact_protocol *proto, void *user,
                           void *created_at, pact_transport **out)
{
    int r = pact__check_loop(loop, "pact_transport_open");
    if (r == 0 && (!proto || !out))
        r = PACT_MISUSE(loop, -EINVAL, "protocol or out is NULL");
    if (r == 0 && fd < 0)
        r = PACT_MISUSE(loop, -EBADF, "fd is negative");
    if (r == 0 && (int)kind > PACT_STREAM_WRITE_PIPE)
        r = PACT_MISUSE(loop, -EINVAL, "unknown stream kind");
    pact_transport *t = r == 0 ? calloc(1, sizeof *t) : NULL;
    if (r == 0 && !t)
        r = -ENOMEM;
    if (r != 0) {
        if (fd >= 0)
            close(fd);
        return r;
    }
    t->loop = loop;
    t->fd = fd;
    t->kind = kind;
    t->proto = proto;
    t->user = user;
    t->refs = 1; /* dropped by final_close */
    pact_list_init(&t->server_link);
    /* connection_made on the next iteration, as asyncio does: the caller
     * gets the transport before any protocol callback runs. */
    transport_ref(t);
    if (pact_call_soon(loop, connection_made, t) < 0) {
        close(fd);
        free(t);
        return -ENOMEM;
    }
    pact__resource_add(loop, &t->res, "transport", force_close, created_at);
    *out = t;
    return 0;
}

int pact_transport_open(pact_loop *loop, int fd, pact_stream_kind kind,
                        const pact_protocol *proto, void *user,
                        pact_transport **out)
{
    return pact__transport_create(loop, fd, kind, proto, user,
                                  __builtin_return_address(0), out);
}

/* ---- accessors ------------------------------------------------------------- */

int pact_transport_set_protocol(pact_transport *t, const pact_protocol *proto,
                                void *user)
{
    DELEGATE(t, set_protocol, t, proto, user);
    if (!t || !proto)
        return -EINVAL;
    t->proto = proto;
    t->user = user;
    return 0;
}

pact_loop *pact_transport_loop(const pact_transport *t)
{
    return t ? t->loop : NULL;
}

int pact_transport_fd(const pact_transport *t)
{
    DELEGATE(t, fd, t);
    return t ? t->fd : -EINVAL;
}

pact_stream_kind pact_transport_kind(const pact_transport *t)
{
    return t ? t->kind : PACT_STREAM_SOCKET;
}

void *pact_transport_user(const pact_transport *t)
{
    return t ? t->user : NULL;
}

uint64_t pact_transport_writes_after_close(const pact_transport *t)
{
    DELEGATE_QUERY(t, writes_after_close, t);
    return t ? t->writes_after_close : 0;
}

static int socket_name(const pact_transport *t, struct sockaddr_storage *ss,
                       socklen_t *len, int peer)
{
    if (!t || !ss || !len)
        return -EINVAL;
    if (t->kind != PACT_STREAM_SOCKET)
        return -ENOTSOCK;
    if (t->fd < 0)
        return -EBADF;
    *len = sizeof *ss;
    int r = peer ? getpeername(t->fd, (struct sockaddr *)ss, len)
                 : getsockname(t->fd, (struct sockaddr *)ss, len);
    return r < 0 ? -errno : 0;
}

int pact_transport_sockname(const pact_transport *t, struct sockaddr_storage *ss,
                            socklen_t *len)
{
    DELEGATE(t, sockname, t, ss, len);
    return socket_name(t, ss, len, 0);
}

int pact_transport_peername(const pact_transport *t, struct sockaddr_storage *ss,
                            socklen_t *len)
{
    DELEGATE(t, peername, t, ss, len);
    return socket_name(t, ss, len, 1);
}

void pact__transport_sendfile_done(pact_transport *t, int err)
{
    t->more->sendfile = NULL;
    if (err < 0 && err != -ECANCELED) {
        fatal_error(t, err);
        return;
    }
    if (t->aborting) {
        maybe_finish(t);
        return;
    }
    kick_write(t);
    if (!t->send_op) {
        shutdown_write_side(t);
        maybe_finish(t);
    }
}
