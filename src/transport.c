/* SPDX-License-Identifier: MIT */
/* The public transport API: the checks and state every transport shares,
 * then its ops table (stream.h). Plain streams (stream.c) and TLS
 * (tls.c) are implementations; users see one API whatever is underneath. */
#include <errno.h>
#include <string.h>

#include "stream.h"

void pact__transport_init(pact_transport *t, pact_loop *loop,
                          const pact_transport_ops *ops, pact_stream_kind kind,
                          const pact_protocol *proto, void *user)
{
    pact__endpoint_init(&t->ep, loop, &ops->ep);
    t->kind = (uint8_t)kind;
    t->proto = proto;
    t->user = user;
    t->writes_after_close = 0;
    t->paused = 0;
    t->eof_requested = 0;
    t->write_failed = 0;
}

void pact__transport_writing(pact_endpoint *e, int pause)
{
    pact_transport *t = pact_container_of(e, pact_transport, ep);
    void (*cb)(pact_transport *, void *) =
        pause ? t->proto->pause_writing : t->proto->resume_writing;
    if (cb)
        cb(t, t->user);
}

void pact__transport_flow(pact_transport *t)
{
    const pact_transport_ops *ops = pact__transport_ops(t);
    pact_marks m = ops->marks(t);
    pact__endpoint_flow(&t->ep, &m, ops->write_buffer_size(t));
}

void pact__transport_flow_new_marks(pact_transport *t)
{
    const pact_transport_ops *ops = pact__transport_ops(t);
    pact_marks m = ops->marks(t);
    pact__endpoint_flow_new_marks(&t->ep, &m, ops->write_buffer_size(t));
}

void pact__transport_force_close(pact_endpoint *e)
{
    pact__endpoint_abort(e, 0);
}

/* ---- reading: handing bytes over ---------------------------------------------- */

size_t pact__transport_deliver_buffered(pact_transport *t, const char *data,
                                        size_t len)
{
    /* Copied into the buffers the protocol hands out, as asyncio's
     * proactor does (the bytes sit in a buffer lent for this call only). */
    size_t off = 0;
    while (off < len && !t->ep.closing && !t->paused) {
        size_t n = 0;
        char *dst = t->proto->get_buffer(t, len - off, &n, t->user);
        if (!dst || n == 0) {
            t->unread_dropped = 1; /* stream.c, dropped_unread */
            pact__endpoint_abort(&t->ep, -ENOBUFS);
            return len;
        }
        if (n > len - off)
            n = len - off;
        memcpy(dst, data + off, n);
        off += n;
        if (t->proto->buffer_updated)
            t->proto->buffer_updated(t, n, t->user);
    }
    return off;
}

/* ---- writing ------------------------------------------------------------------ */

static int drains_after_all(pact_transport *t)
{
    const pact_transport_ops *ops = pact__transport_ops(t);
    return ops->drains_after_all && ops->drains_after_all(t);
}

static int write_refused(pact_transport *t)
{
    if (!pact__endpoint_takes_writes(&t->ep) && !drains_after_all(t)) {
        uint32_t before = t->writes_after_close;
        t->writes_after_close += before < UINT32_MAX; /* saturates */
        return pact__endpoint_write_refused(&t->ep, before == 0, "transport",
                                            pact_transport_fd(t));
    }
    if (t->eof_requested || t->write_failed)
        return -EPIPE;
    if (t->kind == PACT_STREAM_READ_PIPE)
        return -ENOTSUP;
    return 0;
}

/* The common case of the checks every write makes (PACT_ENDPOINT_CHECK_OWNER
 * and write_refused): the loop's owner thread writes to an open,
 * writable transport. Inline, so that such a write reaches its
 * transport's table by a tail call; anything else takes the full checks
 * (write_checked). */
static inline int write_fast(const pact_transport *t)
{
    return pact__loop_owner_here(t->ep.loop) && !t->ep.closing &&
           !t->eof_requested && !t->write_failed && t->kind != PACT_STREAM_READ_PIPE;
}

static int write_checked(pact_transport *t)
{
    PACT_ENDPOINT_CHECK_OWNER(t);
    return write_refused(t);
}

static PACT_SLOW_PATH int writev_checked(pact_transport *t, const struct iovec *iov,
                                         int iovcnt)
{
    int r = write_checked(t);
    if (r)
        return r;
    return pact__transport_ops(t)->writev(t, iov, iovcnt);
}

int pact_transport_writev(pact_transport *t, const struct iovec *iov, int iovcnt)
{
    if (!t || (!iov && iovcnt) || iovcnt < 0)
        return -EINVAL;
    if (!write_fast(t))
        return writev_checked(t, iov, iovcnt);
    return pact__transport_ops(t)->writev(t, iov, iovcnt);
}

static PACT_SLOW_PATH int write_as_writev(pact_transport *t, const void *data,
                                          size_t len)
{
    struct iovec iov = {(void *)data, len};
    return pact__transport_ops(t)->writev(t, &iov, 1);
}

/* One buffer through the table: its write, else writev with one iovec. */
static int write_unchecked(pact_transport *t, const void *data, size_t len)
{
    const pact_transport_ops *ops = pact__transport_ops(t);
    if (ops->write)
        return ops->write(t, data, len);
    return write_as_writev(t, data, len);
}

static PACT_SLOW_PATH int write_one_checked(pact_transport *t, const void *data,
                                             size_t len)
{
    int r = write_checked(t);
    if (r)
        return r;
    return write_unchecked(t, data, len);
}

int pact_transport_write(pact_transport *t, const void *data, size_t len)
{
    if (!t || (!data && len))
        return -EINVAL;
    if (!write_fast(t))
        return write_one_checked(t, data, len);
    return write_unchecked(t, data, len);
}

static int write_received_unchecked(pact_transport *t, const void *data, size_t len)
{
    const pact_transport_ops *ops = pact__transport_ops(t);
    if (ops->write_received)
        return ops->write_received(t, data, len);
    return write_unchecked(t, data, len);
}

static PACT_SLOW_PATH int write_received_checked(pact_transport *t, const void *data,
                                                 size_t len)
{
    int r = write_checked(t);
    if (r)
        return r;
    return write_received_unchecked(t, data, len);
}

int pact_transport_write_received(pact_transport *t, const void *data,
                                  size_t len)
{
    if (!t || (!data && len))
        return -EINVAL;
    if (!write_fast(t))
        return write_received_checked(t, data, len);
    return write_received_unchecked(t, data, len);
}

int pact_transport_can_write_eof(const pact_transport *t)
{
    return t && t->kind != PACT_STREAM_READ_PIPE &&
           t->kind != PACT_STREAM_DUPLEX_PIPE;
}

/* What write_eof and sendfile refuse alike: a read pipe, a closing
 * transport, a write side that is being shut (answered with eof_err). */
static int write_side_refused(const pact_transport *t, int eof_err)
{
    if (t->kind == PACT_STREAM_READ_PIPE)
        return -ENOTSUP;
    if (t->ep.closing)
        return -ESHUTDOWN;
    if (t->write_failed)
        return -EPIPE;
    return t->eof_requested ? eof_err : 0;
}

int pact_transport_write_eof(pact_transport *t)
{
    if (!t)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(t);
    int r = write_side_refused(t, -EALREADY);
    if (r)
        return r;
    if (t->kind == PACT_STREAM_DUPLEX_PIPE)
        return -ENOTSUP; /* one handle for both ways: no half-close */
    t->eof_requested = 1;
    r = pact__transport_ops(t)->write_eof(t);
    if (r)
        t->eof_requested = 0;
    return r;
}

size_t pact_transport_write_buffer_size(const pact_transport *t)
{
    return t ? pact__transport_ops(t)->write_buffer_size(t) : 0;
}

static int set_marks(pact_transport *t, size_t high, size_t low)
{
    pact_marks m;
    int r = pact__marks_check(&m, high, low);
    return r ? r : pact__transport_ops(t)->set_marks(t, &m);
}

int pact_transport_set_write_marks(pact_transport *t, size_t high, size_t low)
{
    if (!t)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(t);
    return set_marks(t, high, low);
}

int pact_transport_set_write_buffer_limits(pact_transport *t, size_t high,
                                           size_t low)
{
    if (!t)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(t);
    return set_marks(t, pact__marks_high_or_default(high), low);
}

void pact_transport_get_write_buffer_limits(const pact_transport *t,
                                            size_t *high, size_t *low)
{
    pact_marks m = {0, 0};
    if (t)
        m = pact__transport_ops(t)->marks(t);
    if (high)
        *high = m.high;
    if (low)
        *low = m.low;
}

int pact_transport_sendfile(pact_transport *t, pact_os_fd file_fd, int64_t offset,
                            size_t count, pact_op_cb cb, void *user)
{
    if (!t)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(t);
    const pact_transport_ops *ops = pact__transport_ops(t);
    if (!ops->sendfile)
        return -ENOTSUP; /* TLS: the kernel cannot encrypt for us */
#ifdef _WIN32
    if (!cb || !file_fd || file_fd == INVALID_HANDLE_VALUE || offset < 0)
#else
    if (!cb || file_fd < 0 || offset < 0)
#endif
        return -EINVAL;
    int r = write_side_refused(t, -EPIPE);
    return r ? r : ops->sendfile(t, file_fd, offset, count, cb, user);
}

uint64_t pact_transport_writes_after_close(const pact_transport *t)
{
    return t ? t->writes_after_close : 0;
}

/* ---- closing ------------------------------------------------------------------ */

int pact_transport_close(pact_transport *t)
{
    if (!t)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(t);
    int r = pact__endpoint_begin_close(&t->ep);
    if (r)
        return r;
    pact__transport_ops(t)->close(t);
    return 0;
}

int pact_transport_abort(pact_transport *t)
{
    if (!t)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(t);
    return pact__endpoint_abort(&t->ep, 0);
}

int pact_transport_is_closing(const pact_transport *t)
{
    /* A failed send dooms the transport even while it still hands over
     * the bytes held for a paused reader (writes answer -EPIPE): closing,
     * as asyncio's is_closing() after a fatal error. */
    return t ? t->ep.closing || t->write_failed : 1;
}

/* ---- reading ------------------------------------------------------------------ */

int pact_transport_pause_reading(pact_transport *t)
{
    if (!t)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(t);
    int r = pact__endpoint_may_pause(&t->ep, t->paused, 1);
    if (r)
        return r;
    t->paused = 1;
    const pact_transport_ops *ops = pact__transport_ops(t);
    if (ops->pause_reading)
        ops->pause_reading(t);
    return 0;
}

int pact_transport_resume_reading(pact_transport *t)
{
    if (!t)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(t);
    int r = pact__endpoint_may_pause(&t->ep, t->paused, 0);
    if (r)
        return r;
    t->paused = 0;
    const pact_transport_ops *ops = pact__transport_ops(t);
    return ops->resume_reading ? ops->resume_reading(t) : 0;
}

int pact_transport_is_reading(const pact_transport *t)
{
    return t && !t->ep.closing && !t->paused && t->kind != PACT_STREAM_WRITE_PIPE;
}

/* ---- accessors ---------------------------------------------------------------- */

int pact_transport_set_ref(pact_transport *t, int ref)
{
    if (!t)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(t);
    return pact__endpoint_set_ref(&t->ep, ref);
}

int pact_transport_set_protocol(pact_transport *t, const pact_protocol *proto,
                                void *user)
{
    if (!t || !proto)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(t);
    t->proto = proto;
    t->user = user;
    return 0;
}

pact_loop *pact_transport_loop(const pact_transport *t)
{
    return t ? t->ep.loop : NULL;
}

pact_stream_kind pact_transport_kind(const pact_transport *t)
{
    return t ? (pact_stream_kind)t->kind : PACT_STREAM_SOCKET;
}

void *pact_transport_user(const pact_transport *t)
{
    return t ? t->user : NULL;
}

int pact_transport_fd(const pact_transport *t)
{
    return t ? pact__transport_ops(t)->fd(t) : -EINVAL;
}

int pact_transport_sockname(const pact_transport *t, struct sockaddr_storage *ss,
                            socklen_t *len)
{
    if (!t || !ss || !len)
        return -EINVAL;
    return pact__transport_ops(t)->name(t, ss, len, 0);
}

int pact_transport_peername(const pact_transport *t, struct sockaddr_storage *ss,
                            socklen_t *len)
{
    if (!t || !ss || !len)
        return -EINVAL;
    return pact__transport_ops(t)->name(t, ss, len, 1);
}
