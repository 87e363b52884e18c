/* SPDX-License-Identifier: MIT */
/* The plain stream transport: asyncio's transport/protocol model on TCP,
 * Unix sockets and pipes, built on the operation layer. One
 * implementation of the transport ops (stream.h); its lifecycle is the
 * endpoint's (endpoint.h).
 *
 * Reading: sockets keep one multishot receive in flight
 * (pact_recv_multishot), which reads into buffers the loop lends, so a
 * connection owns no receive buffer; pipes (read and duplex) keep one
 * read into a buffer of their own. On Windows the pipes are overlapped
 * HANDLEs (named pipes), read and written with ReadFile/WriteFile on the
 * completion port through the same pact_read/pact_write. Pausing cancels the multishot receive, but nothing is lost
 * (what lost data in asyncio, bpo-33694): bytes that still arrive before
 * its final completion are copied into `held` (allocated only then) and
 * handed over on resume, in order, before the next receive is started.
 *
 * Writing: eager first. A write with nothing queued, in flight or
 * waiting behind a sendfile is sent at once (sendmsg with MSG_DONTWAIT;
 * a non-blocking write on a write pipe or tty), as asyncio's selector
 * transports and libuv's uv_try_write do: an echo or a reply costs one
 * system call and no copy, and code that writes and then blocks on the
 * peer's answer in the same callback works. Only what the kernel did not
 * take is copied and queued. Any error goes the queued way too, so the
 * send op meets it and reports it as before. One exception, on io_uring:
 * a small write made while the engine runs the callbacks of reaped
 * completions joins the loop's next submission (send_joins_submission).
 *
 * The queue: bytes, with at most one item that is not bytes (a sendfile,
 * sendfile.c) in it. `inflight` is what the kernel is sending and is
 * never touched until the send completes (docs/contract.md §2); `pending`
 * collects writes meanwhile and becomes the next send, so queued writes
 * are coalesced into one send. The item goes once the bytes written
 * before it are out; the bytes written after it wait for it. Both buffers
 * live in s->more with the other state only some streams need, taken on
 * first need; a socket stream whose queue drained gives s->more back to
 * the loop's cache (release_more), so a connection that wrote and went
 * quiet holds none of it and a steady stream of writes allocates
 * nothing.
 *
 * Teardown (the endpoint's): close/abort/error cancel what is in flight,
 * and only once every operation has called back is the fd closed and
 * connection_lost called — from a fresh loop callback, never nested inside
 * another protocol callback. The memory goes after connection_lost has
 * returned. */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include "win/socket_calls.h" /* the socket calls below, on Winsock */
#else
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#endif

#include "loop.h"
#include "stream.h"

#define READ_BUFFER_SIZE (64 * 1024)
/* pact_transport_write_received: see stream_write_received. At most 15
 * (the width of pact_stream.inline_writes). */
#define INLINE_WRITES_AFTER_BACKLOG 15

static void start_reading(pact_stream *s);
static void kick_write(pact_stream *s);
static int write_queue_empty(const pact_stream *s);

static pact_stream *stream_of(const pact_transport *t)
{
    return pact_container_of(t, pact_stream, t);
}

static pact_stream *stream_of_ep(const pact_endpoint *e)
{
    return pact_container_of(e, pact_stream, t.ep);
}

static void fatal_error(pact_stream *s, int err)
{
    pact__endpoint_abort(&s->t.ep, err);
}

static void settle(pact_stream *s)
{
    pact__endpoint_settle(&s->t.ep);
}

static size_t held_len(const pact_stream *s);
static int schedule_resume(pact_stream *s);

/* Sending failed (EPIPE, ECONNRESET, ...). With nothing held for the
 * reader it is the end, at once. But bytes already received and held for
 * a paused reader are handed over first (docs/contract.md §5): the error
 * waits behind them as a read error would, writes answer -EPIPE
 * meanwhile, and close or abort still end it at once (with this error).
 * TLS relies on it: the ciphertext held here may carry the peer's last
 * records and close_notify. asyncio has no such bytes (its selector
 * transports leave them in the kernel), so it never has this choice. */
static void write_failed(pact_stream *s, int err)
{
    pact_transport *t = &s->t;
    if (t->ep.closing || held_len(s) == 0) {
        fatal_error(s, err);
        return;
    }
    t->write_failed = 1;
    if (!t->ep.err)
        t->ep.err = err;
    pact__wbuf_clear(&s->more->inflight); /* its send is back */
    pact__wbuf_clear(&s->more->pending);
    if (s->more->item && s->more->item->started == 0) {
        /* Never started: it ends with -ECANCELED, from the done queue. */
        s->more->item->ops->cancel(s->more->item);
    }
    if (s->read_op)
        pact_op_cancel(t->ep.loop, s->read_op); /* its bytes are held too */
    if (!s->has_held || s->held_result == 0) {
        s->has_held = 1;
        s->held_result = err;
    }
    pact__transport_flow(t); /* a writer paused on a full buffer hears it */
    if (!t->paused)
        schedule_resume(s);
}

/* ---- state only some streams need ----------------------------------------- */

/* The queue's summary (pact_stream_more.queued and bufs_cap, stream.h):
 * what a request checks of send_op, item, inflight and pending is read
 * from the block's first line while they are empty. callgrind
 * --cache-sim at 500 connections on io_uring (bench/c_counts.sh): the
 * second line was a D1 miss per echo. queue_mark goes wherever one of
 * them is set or gets bytes; 0 is written only by queue_idle_verify,
 * which has read them all (on the second line: pending.cap, on the
 * third, is read only where the buffers' capacity changes,
 * queue_caps_changed). */
static inline void queue_mark(pact_stream_more *m)
{
    m->queued = 1;
}

static PACT_SLOW_PATH int queue_idle_verify(pact_stream_more *m)
{
    if (m->send_op || m->item || pact__wbuf_len(&m->inflight) ||
        pact__wbuf_len(&m->pending))
        return 0;
    m->queued = 0;
    return 1;
}

static size_t more_bufs_cap_now(const pact_stream_more *m)
{
    return m->inflight.cap + m->pending.cap;
}

/* The buffers' capacity changed (an append, a trim): bufs_cap follows. */
static void queue_caps_changed(pact_stream_more *m)
{
    size_t cap = more_bufs_cap_now(m);
    m->bufs_cap = cap < UINT32_MAX ? (uint32_t)cap : UINT32_MAX;
}

/* No send op, write item, or bytes in flight or pending (a slot's send
 * is not in it: see sending). Unoptimized builds (debug, the sanitizer
 * trees the tests run in) check that a 0 summary tells the truth: a
 * site that set one of them without queue_mark is found there. */
static inline int queue_idle(pact_stream_more *m)
{
#ifndef __OPTIMIZE__
    size_t cap = more_bufs_cap_now(m);
    assert(m->bufs_cap == (cap < UINT32_MAX ? cap : UINT32_MAX));
    assert(m->queued || (!m->send_op && !m->item && pact__wbuf_len(&m->inflight) == 0 &&
                         pact__wbuf_len(&m->pending) == 0));
#endif
    return !m->queued || queue_idle_verify(m);
}

/* Appends to inflight or pending (0 or -ENOMEM). */
static int queue_append(pact_stream_more *m, pact_wbuf *b, const void *data,
                        size_t len)
{
    queue_mark(m);
    int r = pact__wbuf_append(b, data, len);
    queue_caps_changed(m);
    return r;
}

/* The loop's cache of drained write state: at most this many blocks, and
 * at most this many bytes of write buffers kept in them (a buffer that
 * grew past the per-buffer bound is freed, not cached). A block without
 * buffers (the write state of replies sent from the loop's receive
 * buffers, pact_transport_write_received on io_uring, which holds it
 * until the send is back) is only its own 208 bytes (a 224-byte malloc
 * chunk): the cache takes up to MORE_CACHE_BARE_BLOCKS of them (56 KiB), so that a server answering
 * 100 short connections at a time that way finds one for each reply in
 * flight (bench churn on io_uring: with 64, one connection in 5
 * allocated one). */
#define MORE_CACHE_BLOCKS 64
#define MORE_CACHE_BARE_BLOCKS 256
#define MORE_CACHE_BUFFER_MAX (64 * 1024)
#define MORE_CACHE_BYTES (1024 * 1024)
/* Up to this many socket streams keep their write state when it drains,
 * while its buffers hold at most this many bytes (release_more)... */
#define MORE_KEPT_MAX 64
#define MORE_KEPT_BYTES (16 * 1024)
/* ...and up to this many more keep one whose buffers are small, at most
 * MORE_KEPT_SMALL_BYTES (the write state of replies sent from the
 * loop's receive buffers, which has none, and of short replies copied
 * to join the loop's next submission, write_joined: an HTTP response
 * with a few headers, an echo): 1,024 blocks of 224 bytes and a buffer
 * of at most 256 (a 272-byte chunk), 496 KiB at most, about 50 bytes
 * per connection of 10,000 that all wrote twice and went quiet. Past the bound each reply
 * takes a block from the cache and gives it back (release_more_now),
 * and its slot looks the fd up: callgrind, 64-byte echo at 1,000
 * connections on io_uring (bench/README.md), with 512 that was 0.43
 * times per reply, 714-762 instructions and 9.9-10.6 D1 misses per reply
 * against 629-683 and 8.6-9.7 with 1,024 (2,048: 617-632, 8.6). */
#define MORE_KEPT_SMALL_MAX 1024
#define MORE_KEPT_SMALL_BYTES 256

/* A zeroed block, 64-byte aligned: its first cache line holds what an
 * echo touches (stream.h). Windows has no aligned allocation that
 * free() releases: there it is only as aligned as malloc's. */
static pact_stream_more *more_alloc(void)
{
#ifdef _WIN32
    return calloc(1, sizeof(pact_stream_more));
#else
    void *m;
    if (posix_memalign(&m, 64, sizeof(pact_stream_more)) != 0)
        return NULL;
    memset(m, 0, sizeof(pact_stream_more));
    return m;
#endif
}

pact_stream_more *pact__stream_more(pact_stream *s)
{
    if (s->more)
        return s->more;
    pact_loop *loop = s->t.ep.loop;
    pact_stream_more *m = loop->stream_more_cache;
    if (m) {
        /* Drained when cached: only the buffers' memory is kept. */
        loop->stream_more_cache = m->next_cached;
        loop->stream_more_cached--;
        loop->stream_more_cached_bytes -= m->inflight.cap + m->pending.cap;
        m->next_cached = NULL;
        queue_caps_changed(m); /* trimmed (give_back_more) */
    } else {
        m = more_alloc();
        if (!m)
            return NULL;
    }
    m->marks = pact__default_marks;
    m->stream = s;
    s->more = m;
    return m;
}

static void wbuf_trim(pact_wbuf *b)
{
    if (b->cap > MORE_CACHE_BUFFER_MAX)
        pact__wbuf_free(b);
    pact__wbuf_clear(b);
}

/* A drained write state (nothing in flight or queued, no held bytes, no
 * pipe buffer) goes to the loop's cache with its write buffers while the
 * cache has room and the loop is not closed (the cache is freed at
 * close), else to the allocator. */
static void give_back_more(pact_loop *loop, pact_stream_more *m)
{
    wbuf_trim(&m->inflight);
    wbuf_trim(&m->pending);
    size_t bytes = m->inflight.cap + m->pending.cap;
    if (loop->stream_more_cached >= (bytes ? MORE_CACHE_BLOCKS : MORE_CACHE_BARE_BLOCKS) ||
        loop->stream_more_cached_bytes + bytes > MORE_CACHE_BYTES ||
        loop->state == PACT_LOOP_CLOSED) {
        pact__wbuf_free(&m->inflight);
        pact__wbuf_free(&m->pending);
        free(m);
        return;
    }
    m->next_cached = loop->stream_more_cache;
    loop->stream_more_cache = m;
    loop->stream_more_cached++;
    loop->stream_more_cached_bytes += bytes;
}

/* A socket stream whose writes have drained gives its s->more back, when
 * nothing else lives in it (held bytes, a sendfile, a pipe's buffer or
 * watch, marks of its own), so an idle connection holds no write state:
 * to the loop's cache while it has room, else to the allocator.
 *
 * Except that the first MORE_KEPT_MAX streams to drain a second time
 * keep theirs (its buffers small): a connection that writes on every
 * request (an echo, a server's replies) took it from the cache and gave
 * it back each time. The bound keeps the memory of idle connections what
 * it was: at most MORE_KEPT_MAX blocks of write state in streams that
 * went quiet, as many as the cache holds anyway. A kept block goes back
 * when its buffers have grown past MORE_KEPT_BYTES or its stream is
 * freed. Not at the first drain: a connection that writes once and
 * closes (connect, one request, close) would keep a block it never uses
 * again, while the next connections' replies, finding the cache empty,
 * allocate theirs.
 *
 * A block with small buffers or none (the replies of
 * pact_transport_write_received on io_uring, and small replies joined to
 * the submission, write_joined) is kept by up to MORE_KEPT_SMALL_MAX
 * streams more (MORE_KEPT_SMALL): an echo or HTTP server with 500
 * connections otherwise gave most replies' write state back and took
 * another stream's, whose send slot had to look up the new fd's entry
 * (callgrind, 64-byte echo at 500 connections: about 160 instructions
 * and 2 D1 misses per reply; HTTP under wrk, copied replies: about 200
 * instructions per reply). Such a block stays kept while its buffers
 * stay small; once they grow, it is kept as the others are or goes
 * back. */
enum { MORE_KEPT = 1, MORE_KEPT_SMALL = 2 };
static PACT_SLOW_PATH void release_more_now(pact_stream *s);

/* A stream that keeps its drained write state (m) keeps it now too. */
static inline int more_stays(const pact_stream *s, const pact_stream_more *m)
{
    return s->more_kept &&
           m->bufs_cap <=
               (s->more_kept == MORE_KEPT ? MORE_KEPT_BYTES : MORE_KEPT_SMALL_BYTES);
}

/* The stream's write state, kept, no longer is. */
static void more_unkeep(pact_loop *loop, pact_stream *s)
{
    if (s->more_kept == MORE_KEPT)
        loop->stream_more_kept--;
    else if (s->more_kept == MORE_KEPT_SMALL)
        loop->stream_more_kept_small--;
    s->more_kept = 0;
}

static inline void release_more(pact_stream *s)
{
    const pact_stream_more *m = s->more;
    if (!m || more_stays(s, m))
        return; /* the common case after a reply: inline */
    release_more_now(s);
}

static PACT_SLOW_PATH void release_more_now(pact_stream *s)
{
    pact_stream_more *m = s->more;
    if (s->t.kind != PACT_STREAM_SOCKET || m->send_op ||
        m->slot.pending_cqes > 0 || m->poll_op ||
        m->item || m->rbuf || m->held.data || pact__wbuf_len(&m->inflight) ||
        pact__wbuf_len(&m->pending) || s->own_marks)
        return;
    pact_loop *loop = s->t.ep.loop;
    size_t bytes = m->inflight.cap + m->pending.cap;
    unsigned was = s->more_kept;
    more_unkeep(loop, s); /* its buffers grew: kept as the others, or not */
    if (s->drained_before && was != MORE_KEPT) {
        if (bytes <= MORE_KEPT_SMALL_BYTES &&
            loop->stream_more_kept_small < MORE_KEPT_SMALL_MAX) {
            s->more_kept = MORE_KEPT_SMALL;
            loop->stream_more_kept_small++;
            return;
        }
        if (bytes <= MORE_KEPT_BYTES && loop->stream_more_kept < MORE_KEPT_MAX) {
            s->more_kept = MORE_KEPT;
            loop->stream_more_kept++;
            return;
        }
    }
    s->drained_before = 1;
    s->more = NULL;
    give_back_more(loop, m);
}

/* ---- the memory of streams ------------------------------------------------ */

/* A server that serves short connections (connect, one request, close)
 * frees a stream and allocates the next one for every connection: the
 * loop keeps up to this many freed streams for the next ones (callgrind,
 * connect / one request / close: calloc and free of the stream were ~400
 * instructions per connection, most of them malloc's bins, not its
 * per-thread cache, which holds 7 chunks of a size). The cache must hold
 * what the number of open connections swings by: with 100 connections at
 * a time (bench churn) and room for 64, one connection in 12 to 15
 * still allocated its stream. 256 streams are 35 KiB at most. Built with
 * AddressSanitizer there is no cache: every stream is freed and stays in
 * ASan's quarantine, so a stream touched after its free is still
 * reported instead of landing in the next connection's stream. */
#if defined(__SANITIZE_ADDRESS__)
#define STREAM_CACHE_MAX 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STREAM_CACHE_MAX 0
#endif
#endif
#ifndef STREAM_CACHE_MAX
#define STREAM_CACHE_MAX 256
#endif

/* What a cached stream's memory holds: the link to the next one. */
typedef struct pact_stream_cached {
    struct pact_stream_cached *next;
} pact_stream_cached;

/* Streams are 64-byte aligned, so that a request's fields of one lie in
 * one cache line (stream.h). callgrind --cache-sim at 500 connections on
 * io_uring (bench/c_counts.sh, medians of 2): D1 misses per request
 * 8.1 -> 6.7 for the 64-byte echo, 13.8 -> 12.8 for HTTP under wrk (the
 * stream's lines: about 2 -> 1). Carved from a malloc'd block
 * STREAM_ALIGN_SLACK bytes longer (malloc aligns to 16: the stream starts
 * 0, 16, 32 or 48 bytes in, alloc_pad says which), not taken from
 * posix_memalign, whose leftover pieces the heap kept: about 110 bytes
 * more per idle connection against these 48 (micro_pact
 * idle_transport). Where malloc aligns to less, the stream is as
 * aligned as its block is: only slower. */
#define STREAM_ALIGN_SLACK 48

static pact_stream *stream_carve(void *block)
{
    uintptr_t pad = (-(uintptr_t)block & 63u) & ~(uintptr_t)15u;
    pact_stream *s = memset((char *)block + pad, 0, sizeof(pact_stream));
    s->alloc_pad = (unsigned)(pad / 16);
    return s;
}

static void stream_memory_free(pact_stream *s)
{
    free((char *)s - (size_t)s->alloc_pad * 16);
}

/* A zeroed stream (alloc_pad aside): from the cache, else the heap. */
static pact_stream *stream_alloc(pact_loop *loop)
{
    pact_stream_cached *c = loop->stream_cache;
    if (!c) {
        void *block = malloc(sizeof(pact_stream) + STREAM_ALIGN_SLACK);
        return block ? stream_carve(block) : NULL;
    }
    loop->stream_cache = c->next;
    loop->stream_cached--;
    pact_stream *s = (pact_stream *)(void *)c;
    unsigned pad = s->alloc_pad;
    memset(s, 0, sizeof *s);
    s->alloc_pad = pad;
    return s;
}

/* A stream's memory, once nothing refers to it: kept for the next
 * stream while the cache has room and the loop is not closed (its cache
 * is freed at close), else freed. */
static void stream_release(pact_loop *loop, pact_stream *s)
{
#if STREAM_CACHE_MAX > 0
    if (loop->stream_cached < STREAM_CACHE_MAX && loop->state != PACT_LOOP_CLOSED) {
        pact_stream_cached *c = (pact_stream_cached *)(void *)s;
        c->next = loop->stream_cache;
        loop->stream_cache = c;
        loop->stream_cached++;
        return;
    }
#else
    (void)loop;
#endif
    stream_memory_free(s);
}

void pact__stream_cache_free(pact_loop *loop)
{
    pact_stream_cached *c = loop->stream_cache;
    while (c) {
        pact_stream_cached *next = c->next;
        stream_memory_free((pact_stream *)(void *)c); /* the link is all it overwrote */
        c = next;
    }
    loop->stream_cache = NULL;
    loop->stream_cached = 0;
    pact_stream_more *m = loop->stream_more_cache;
    while (m) {
        pact_stream_more *next = m->next_cached;
        pact__wbuf_free(&m->inflight);
        pact__wbuf_free(&m->pending);
        free(m);
        m = next;
    }
    loop->stream_more_cache = NULL;
    loop->stream_more_cached = 0;
    loop->stream_more_cached_bytes = 0;
    free(loop->stage);
    loop->stage = NULL;
    loop->stage_used = 0;
    loop->stage_sends = 0;
}

static size_t held_len(const pact_stream *s)
{
    return s->more ? pact__wbuf_len(&s->more->held) : 0;
}

/* A send is in flight: an op or the slot's (the same to the stream). */
static int sending(const pact_stream_more *m)
{
    return m->slot.pending_cqes > 0 || (m->queued && m->send_op);
}

static int send_in_flight(const pact_stream *s)
{
    return s->more && sending(s->more);
}

static pact_op poll_op(const pact_stream *s)
{
    return s->more ? s->more->poll_op : 0;
}

static pact_write_item *write_item(const pact_stream *s)
{
    return s->more ? s->more->item : NULL;
}

static size_t stream_write_buffer_size(const pact_transport *t)
{
    const pact_stream *s = stream_of(t);
    const pact_stream_more *m = s->more;
    if (!m)
        return 0;
    return m->lent_len + (m->queued ? pact__wbuf_len(&m->inflight) +
                                          pact__wbuf_len(&m->pending)
                                    : 0);
}

/* The high mark of a stream's write buffer (its marks are read only when
 * they are its own: at 500 echoing connections the line they lie on is a
 * cache miss per request). */
static inline size_t high_mark(const pact_stream *s)
{
    return s->own_marks ? s->more->marks.high : pact__default_marks.high;
}

/* pact__transport_flow() for a stream. Its common case (writing not
 * paused, the buffer at or below the high mark) changes nothing, and is
 * decided here without the transport table's two indirect calls
 * (callgrind, 64-byte echo on io_uring: 67 instructions per request less
 * for the two checks, the write's and its send's completion's). */
static inline void stream_flow(pact_stream *s)
{
    if (!s->t.ep.write_paused &&
        stream_write_buffer_size(&s->t) <= high_mark(s))
        return;
    pact__transport_flow(&s->t);
}

/* ---- lifetime (the endpoint's ops) ------------------------------------------ */

static int stream_busy(const pact_endpoint *e)
{
    const pact_stream *s = stream_of_ep(e);
    if (s->read_op || send_in_flight(s) || poll_op(s) || write_item(s))
        return 1;
    /* close() flushes first; abort dropped the buffer. */
    return !e->aborting && stream_write_buffer_size(&s->t) > 0;
}

/* Bytes the peer sent were dropped without the protocol taking them: at
 * a close or abort while they were held for a paused reader, received
 * after a close, or behind a get_buffer that failed (transport.c). The
 * kernel resets a connection closed with bytes unread (TCP sends RST: the
 * peer's receive fails with ECONNRESET), and asyncio's socket transport,
 * which leaves such bytes in the socket, gets that reset. pact's receive
 * took them out of the socket, so its final close asks for the reset
 * (SO_LINGER with a zero timeout; stream_lost). Not for a Unix socket,
 * whose peer sees the reset only while our end still holds the bytes. */
static void dropped_unread(pact_stream *s, size_t len)
{
    if (len > 0)
        s->t.unread_dropped = 1;
}

/* Abort or error: nothing more is delivered or sent. */
static void stream_cancel(pact_endpoint *e)
{
    pact_stream *s = stream_of_ep(e);
    dropped_unread(s, held_len(s));
    s->has_held = 0;
    s->held_bytes = 0;
    if (s->more) {
        pact__wbuf_clear(&s->more->held);
        /* A write pipe that ends in an error keeps counting what it could
         * not write until connection_lost has returned: only then can
         * its user tell a reader that left with bytes unwritten (a broken
         * pipe) from one that left after everything was written, as
         * asyncio's write pipe transport does. Nothing sends them. */
        if (!(s->t.kind == PACT_STREAM_WRITE_PIPE && e->err)) {
            pact__wbuf_clear(&s->more->inflight); /* the kernel may still */
            pact__wbuf_clear(&s->more->pending);  /* read it: cleared, not freed */
        }
    }
    if (s->read_op)
        pact_op_cancel(e->loop, s->read_op);
    if (send_in_flight(s)) {
        if (s->more->send_op)
            pact_op_cancel(e->loop, s->more->send_op);
        else
            pact__slot_cancel(e->loop, &s->more->slot);
    }
    if (poll_op(s))
        pact_op_cancel(e->loop, poll_op(s));
    if (write_item(s))
        s->more->item->ops->cancel(s->more->item);
}

/* pact_transport_set_ref(): what is in flight now follows ref. */
static void stream_set_ref(pact_endpoint *e, int ref)
{
    pact_stream *s = stream_of_ep(e);
    if (s->read_op)
        pact_op_set_ref(e->loop, s->read_op, ref);
    if (send_in_flight(s)) {
        if (s->more->send_op)
            pact_op_set_ref(e->loop, s->more->send_op, ref);
        else
            pact__slot_set_ref(e->loop, &s->more->slot, ref);
    }
    if (poll_op(s))
        pact_op_set_ref(e->loop, poll_op(s), ref);
    if (write_item(s) && s->more->item->ops->set_ref)
        s->more->item->ops->set_ref(s->more->item, ref);
}

/* Closes the descriptor a stream owns: a socket, or a pipe (on Windows a
 * HANDLE, which closesocket does not close). */
static void close_fd(int fd, pact_stream_kind kind)
{
#ifdef _WIN32
    if (kind != PACT_STREAM_SOCKET) {
        CloseHandle((HANDLE)(intptr_t)fd);
        return;
    }
#else
    (void)kind;
#endif
    close(fd);
}

static void stream_lost(pact_endpoint *e)
{
    pact_stream *s = stream_of_ep(e);
    if (s->fd >= 0) {
        pact__fd_closing(e->loop, s->fd);
        if (s->t.kind == PACT_STREAM_SOCKET && s->t.unread_dropped) {
            struct linger reset = {1, 0};
            setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
        }
        if (s->t.kind == PACT_STREAM_SOCKET)
            e->loop->engine->close_socket(e->loop, s->fd); /* see engine.h */
        else
            close_fd(s->fd, (pact_stream_kind)s->t.kind);
        s->fd = -EBADF;
    }
    if (s->t.proto && s->t.proto->connection_lost)
        s->t.proto->connection_lost(&s->t, e->err, s->t.user);
    if (s->more) {
        pact__wbuf_clear(&s->more->inflight); /* kept for connection_lost */
        pact__wbuf_clear(&s->more->pending);  /* by stream_cancel */
    }
}

static void stream_free(pact_endpoint *e);

#ifndef _WIN32
/* A forked child frees the loop it inherited (endpoint.h): its copy of
 * the fd is closed by close(2) alone (the engine's table and ring are the
 * parent's), and the memory goes. */
static void stream_forget(pact_endpoint *e)
{
    pact_stream *s = stream_of_ep(e);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -EBADF;
    stream_free(e);
}
#endif

/* A freed stream's write state goes where a drained one goes
 * (give_back_more): a connection that kept its write state for the
 * next write (release_more) and closed leaves it, buffers included, to
 * the next connection, which would otherwise allocate all three again.
 * Its operations are over by now; held bytes and a pipe's read buffer
 * are not kept. */
static void stream_free(pact_endpoint *e)
{
    pact_stream *s = stream_of_ep(e);
    pact_stream_more *m = s->more;
    if (m) {
        more_unkeep(e->loop, s);
        free(m->rbuf);
        m->rbuf = NULL;
        pact__wbuf_free(&m->held);
        if (!m->send_op && m->slot.pending_cqes == 0 && !m->poll_op && !m->item &&
            !m->lent) {
            give_back_more(e->loop, m);
        } else {
            pact__wbuf_free(&m->inflight);
            pact__wbuf_free(&m->pending);
            free(m);
        }
    }
    stream_release(e->loop, s);
}

/* Whether what is queued is only a write's first try, still in flight
 * (first_send_in_flight: joined to the loop's next submission on
 * io_uring) where epoll's eager send would have gone at once. */
static int only_a_first_try_queued(const pact_stream *s)
{
    const pact_stream_more *m = s->more;
    return s->first_send_in_flight && m && !m->item &&
           pact__wbuf_len(&m->pending) == 0;
}

static void stream_close(pact_transport *t)
{
    pact_stream *s = stream_of(t);
    /* A socket closed with writes queued takes more until they are out,
     * and sends them before it closes, as asyncio's socket transport does
     * (its pipes refuse them, and so do pact's). A first try in flight
     * counts as gone, as an eager send that sent everything would be: the
     * close still waits for it, and a write after it asks whether it did
     * (stream_drains_after_all). */
    t->ep.draining = t->kind == PACT_STREAM_SOCKET && !write_queue_empty(s) &&
                     !only_a_first_try_queued(s);
    dropped_unread(s, held_len(s));
    s->has_held = 0; /* the user closed: nothing more is delivered */
    s->held_bytes = 0;
    if (s->more)
        pact__wbuf_clear(&s->more->held);
    if (s->read_op)
        pact_op_cancel(t->ep.loop, s->read_op);
    if (poll_op(s))
        pact_op_cancel(t->ep.loop, poll_op(s));
    kick_write(s);
    settle(s);
}

/* A write after a close that took no more writes. On a socket with
 * bytes still queued that close came behind a write's first try (every
 * other close with writes queued drains, stream_close; once drained, the
 * queue stays empty). Where the socket's send buffer was full, epoll's
 * eager send took nothing of that write and queued it, so its close
 * drains and takes this write (asyncio's transport too, with its buffer
 * left); the first try of io_uring decides the same now: the engine
 * hands it to the kernel if it still waits for the submission (as the
 * eager send went at the write) and says whether it sent everything. A
 * first try already back that sent a part has its rest queued: it drains
 * as the eager send's rest would. Not known (a CQ overflow): gone, as
 * before the kernel answers. Nothing accepted is sent twice or lost
 * either way: only whether this write is taken, behind the queue. */
static int stream_drains_after_all(pact_transport *t)
{
    pact_stream *s = stream_of(t);
    pact_stream_more *m = s->more;
    if (t->kind != PACT_STREAM_SOCKET || t->ep.aborting || write_queue_empty(s))
        return 0;
    if (s->first_send_in_flight) {
        size_t len = m->lent ? m->lent_len : pact__wbuf_len(&m->inflight);
        pact_loop *loop = t->ep.loop;
        int sent = loop->engine->first_try_sent(
            loop, m->slot.pending_cqes > 0 ? &m->slot : NULL, m->send_op, len);
        if (sent != 0)
            return 0;
    }
    t->ep.draining = 1;
    return 1;
}

/* ---- reading --------------------------------------------------------------- */

static void resume_delivery(pact_loop *loop, void *arg);

/* Whether received bytes must wait behind others: reading is paused, or
 * older bytes (or a held end of file / error) are still to be handed over,
 * or a resume is scheduled to hand them over. Holding everything behind
 * keeps the byte order (docs/contract.md §5). */
static int must_hold(const pact_stream *s)
{
    return s->t.paused || s->resume_scheduled || s->has_held ||
           (s->held_bytes && held_len(s) > 0);
}

/* The read side ended: r = 0 at the peer's EOF, else an error. */
static void deliver_end(pact_stream *s, int64_t r)
{
    pact_transport *t = &s->t;
    if (r == 0) {
        s->eof_seen = 1;
        int keep_open = t->proto->eof_received ? t->proto->eof_received(t, t->user) : 0;
        /* A read pipe has no writing side to keep open. The loop's own
         * close, on its thread: pact_transport_close without the public
         * checks (once per connection the peer ends). */
        if ((!keep_open || t->kind == PACT_STREAM_READ_PIPE) &&
            pact__endpoint_begin_close(&t->ep) == 0)
            stream_close(t);
        return;
    }
    fatal_error(s, (int)r);
}

/* Queues resume_delivery (held data, then the next receive) for the next
 * iteration: never from inside the caller, which may be a protocol
 * callback. */
static int schedule_resume(pact_stream *s)
{
    if (s->resume_scheduled)
        return 0;
    if (pact__endpoint_soon(&s->t.ep, resume_delivery) < 0)
        return -ESHUTDOWN;
    s->resume_scheduled = 1;
    return 0;
}

/* Bytes from a receive: handed over now, or held (copied: the buffer is
 * the loop's) behind what is still waiting. After a close nothing more is
 * delivered. */
static void on_bytes(pact_stream *s, const char *data, size_t len)
{
    if (s->t.ep.closing) {
        dropped_unread(s, len);
        return;
    }
    size_t done = must_hold(s) ? 0 : pact__transport_deliver(&s->t, data, len);
    if (done == len)
        return;
    if (s->t.ep.closing) {
        dropped_unread(s, len - done); /* the protocol closed meanwhile */
        return;
    }
    s->held_bytes = 1;
    if (!pact__stream_more(s) ||
        pact__wbuf_append(&s->more->held, data + done, len - done) != 0) {
        dropped_unread(s, len - done);
        fatal_error(s, -ENOMEM);
    }
}

/* The peer reset the connection and no receive has taken the error yet
 * (getsockopt(SO_ERROR) takes it now: the connection is ending). */
static int socket_reset_pending(pact_stream *s)
{
#ifndef _WIN32
    int err = 0;
    socklen_t len = sizeof err;
    return s->t.kind == PACT_STREAM_SOCKET && s->fd >= 0 &&
           getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
           err == ECONNRESET;
#else
    (void)s;
    return 0; /* not asked there: only the receive reports a reset */
#endif
}

/* The receive op ended with r: 0 at EOF or a negative errno; -ECANCELED
 * (pause_reading cancelled it), -ENOBUFS (the loop ran out of receive
 * buffers: back-pressure) and r > 0 (a pipe read whose bytes went to
 * on_bytes) only ask for the next receive. */
static void on_read_end(pact_stream *s, int64_t r)
{
    s->read_op = 0;
    if (s->t.ep.closing) {
        /* The user closed (data after close is not delivered) or an error
         * is tearing the connection down. A peer that went with our bytes
         * unread fails the send (EPIPE) and the receive (ECONNRESET) at
         * once; io_uring completes them in either order (the op armed
         * last first), epoll and asyncio's selector loop read first. So
         * a receive that the kernel failed with ECONNRESET before the
         * teardown cancelled it names the end: connection_lost gets
         * ECONNRESET on every engine (docs/contract.md §6). Unless a
         * write met the EPIPE at once (an eager send, before the loop
         * looked at the socket again): asyncio's write() fails then too,
         * with BrokenPipeError. A receive the teardown cancelled first
         * (poll mode, or its completion a wait behind the send's) never
         * took the error: the socket still holds it. */
        if (s->t.ep.err == -EPIPE && !s->eager_send_epipe &&
            (r == -ECONNRESET || (r == -ECANCELED && socket_reset_pending(s))))
            s->t.ep.err = -ECONNRESET;
        settle(s);
        return;
    }
    /* The receive saw the reset before the send's failure came back,
     * but a write met the EPIPE at once: that names the end (above).
     * So does a write whose first send waits for the loop's next
     * submission: made before the reset was seen, it meets the EPIPE
     * when it goes, where epoll's eager send met it at once. */
    if (r == -ECONNRESET && (s->eager_send_epipe || s->first_send_in_flight)) {
        s->epipe_presumed = !s->eager_send_epipe;
        r = -EPIPE;
    }
    if (r > 0 || r == -ECANCELED || r == -ENOBUFS) {
        if (s->t.paused)
            return; /* resume_reading starts the next one */
        /* After -ENOBUFS the next receive starts on the next iteration,
         * once the loop has taken its buffers back. */
        if (r == -ENOBUFS || must_hold(s))
            schedule_resume(s);
        else
            start_reading(s);
        return;
    }
    if (must_hold(s)) {
        /* EOF or an error behind held bytes: it waits its turn (after a
         * write failure, that failure is the end already). */
        if (!s->has_held) {
            s->has_held = 1;
            s->held_result = (int)r; /* 0 or a negative errno */
        }
        if (!s->t.paused)
            schedule_resume(s);
        return;
    }
    deliver_end(s, r);
}

/* Sockets: a multishot receive into the loop's buffers. Its chunks come
 * to pact__stream_recv_data (a hooked receive: no pact_completion per
 * chunk; on io_uring straight from the completion, which names the
 * stream: op.h), its end to on_recv_end. */
static PACT_SLOW_PATH void on_bytes_out_of_line(pact_stream *s, const void *data,
                                                 size_t len)
{
    on_bytes(s, data, len);
}

void pact__stream_recv_data(void *arg, const void *data, size_t len)
{
    pact_stream *s = arg;
    pact_transport *t = &s->t;
    /* on_bytes' common case, a tail call into the protocol (its frame
     * cost the 64-byte echo 10 instructions per request): data_received
     * takes every byte, so nothing is left to hold after it. */
    if (!t->ep.closing && !must_hold(s) && !t->proto->get_buffer &&
        t->proto->data_received) {
        t->proto->data_received(t, data, len, t->user);
        return;
    }
    on_bytes_out_of_line(s, data, len);
}

static void on_recv_end(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    on_read_end(arg, c->result);
}

/* Pipes (read and duplex): one read at a time into the stream's buffer. */
static void on_read(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_stream *s = arg;
    if (c->result > 0)
        on_bytes(s, s->more->rbuf, (size_t)c->result);
    on_read_end(s, c->result);
}

/* Socket transports hold no receive buffer: pact_recv_multishot() lends
 * the loop's, for the duration of each callback (so 10,000 idle
 * connections cost no buffers at all). Pipes read into a buffer of their
 * own, allocated on the first read. first: the receive connection_made
 * starts, on a connection whose peer has rarely written yet (an accepted
 * one's client writes once its connect returns; a connected one's server
 * mostly waits for a request), so io_uring waits for readiness before it
 * first tries (PACT_OPF_POLL_FIRST). */
static void start_reading_as(pact_stream *s, int first)
{
    pact_transport *t = &s->t;
    if (s->read_op || t->ep.closing || must_hold(s) || !t->ep.made ||
        s->eof_seen || t->kind == PACT_STREAM_WRITE_PIPE)
        return;
    pact_op op;
    if (t->kind == PACT_STREAM_SOCKET) {
        pact__recv_start how = first ? PACT__RECV_POLL_FIRST
                               : s->resume_by_readiness ? PACT__RECV_BY_READINESS
                                                        : PACT__RECV_AT_ONCE;
        s->resume_by_readiness = 0;
        op = pact__recv_multishot_hooked(t->ep.loop, s->fd, pact__stream_recv_data,
                                         on_recv_end, s, how);
    } else {
        if (!pact__stream_more(s) ||
            (!s->more->rbuf && !(s->more->rbuf = malloc(READ_BUFFER_SIZE)))) {
            fatal_error(s, -ENOMEM);
            return;
        }
        op = pact_read(t->ep.loop, (pact_os_fd)(intptr_t)s->fd, s->more->rbuf,
                       READ_BUFFER_SIZE, -1, on_read, s);
    }
    if (op < 0) {
        fatal_error(s, (int)op);
        return;
    }
    s->read_op = pact__endpoint_op(&t->ep, op); /* unreferenced with t */
}

static void start_reading(pact_stream *s)
{
    start_reading_as(s, 0);
}

static void stream_pause_reading(pact_transport *t)
{
    pact_stream *s = stream_of(t);
    /* A multishot receive would go on receiving: ask for it to stop. The
     * bytes it still delivers before its final -ECANCELED are held (a
     * cancel never drops data, docs/contract.md §4) and handed over on
     * resume. A pipe's one-shot read is left in flight; its result is
     * held too. A receive that read large messages by readiness ends
     * with it: the one resume_reading starts reads so from the start
     * (asyncio's StreamReader pauses above twice its limit, so a long
     * stream of large reads pauses again and again). */
    if (s->read_op && t->kind == PACT_STREAM_SOCKET) {
        s->resume_by_readiness =
            (unsigned)pact__recv_reads_large(t->ep.loop, s->read_op);
        pact_op_cancel(t->ep.loop, s->read_op);
    }
}

static void resume_delivery(pact_loop *loop, void *arg)
{
    (void)loop;
    pact_stream *s = stream_of_ep(arg);
    pact_transport *t = &s->t;
    s->resume_scheduled = 0;
    pact__endpoint_enter(&t->ep); /* the protocol may close it inside */
    if (!t->ep.closing && !t->paused && held_len(s) > 0) {
        /* Taken out first: the protocol may pause and resume again. */
        pact_wbuf held = s->more->held;
        memset(&s->more->held, 0, sizeof s->more->held);
        size_t done = pact__transport_deliver(&s->t, held.data + held.start, pact__wbuf_len(&held));
        if (done < pact__wbuf_len(&held) && !t->ep.closing) {
            /* Paused again: the rest goes back to the front, ahead of
             * anything held meanwhile. */
            held.start += done;
            pact_wbuf later = s->more->held;
            s->more->held = held;
            if (pact__wbuf_len(&later) > 0 &&
                pact__wbuf_append(&s->more->held, later.data + later.start,
                                  pact__wbuf_len(&later)) != 0)
                fatal_error(s, -ENOMEM);
            free(later.data);
        } else {
            free(held.data);
        }
    }
    if (held_len(s) == 0)
        s->held_bytes = 0;
    release_more(s); /* the held bytes were its last use */
    if (!t->ep.closing && !t->paused && held_len(s) == 0) {
        if (s->has_held) {
            s->has_held = 0;
            deliver_end(s, s->held_result);
        } else {
            /* Nothing if the cancelled receive has not ended yet: its
             * final completion starts the next one. */
            start_reading(s);
        }
    }
    pact__endpoint_leave(&t->ep);
    pact__endpoint_unref(&t->ep);
}

static int stream_resume_reading(pact_transport *t)
{
    pact_stream *s = stream_of(t);
    if (!t->ep.made)
        return 0; /* reading starts after connection_made */
    /* Held data goes out on the next iteration, never from inside the
     * caller (which may be a protocol callback). */
    if (must_hold(s))
        return schedule_resume(s);
    start_reading(s);
    return 0;
}

/* ---- writing --------------------------------------------------------------- */

static void shutdown_write_side(pact_stream *s)
{
    pact_transport *t = &s->t;
    if (!t->eof_requested || t->write_failed || s->eof_done ||
        send_in_flight(s) || stream_write_buffer_size(t) > 0 || write_item(s))
        return;
    s->eof_done = 1;
    if (t->kind == PACT_STREAM_SOCKET) {
        if (shutdown(s->fd, SHUT_WR) < 0 && errno != ENOTCONN)
            fatal_error(s, -errno);
    } else if (t->kind == PACT_STREAM_WRITE_PIPE) {
        pact_transport_close(t); /* a pipe's EOF is its close */
    }
}

/* The writer made progress (a send or the write item is over): the next
 * send, the flow marks, write_eof, the final close. */
static PACT_SLOW_PATH void write_progress_general(pact_stream *s);

/* After a send's end (its completion handled): nothing more to send or
 * in flight, the marks not crossed, nobody waiting for the drain (close,
 * write_eof) — every echo and reply. Progress is then only that the
 * write state may go; write_progress_general decides the same in about
 * twice the instructions (callgrind, 64-byte echo on io_uring). m is
 * s->more. */
static inline int quiet_after_send(const pact_stream *s, pact_stream_more *m)
{
    const pact_transport *t = &s->t;
    return m->slot.pending_cqes == 0 && queue_idle(m) && !t->ep.write_paused &&
           !t->ep.draining && !t->ep.closing && !t->eof_requested;
}

static inline void write_progress(pact_stream *s)
{
    pact_stream_more *m = s->more;
    if (m && !m->lent && quiet_after_send(s, m)) {
        release_more(s);
        return;
    }
    write_progress_general(s);
}

static PACT_SLOW_PATH void write_progress_general(pact_stream *s)
{
    kick_write(s); /* the rest of a short send, or the next batch */
    stream_flow(s); /* resume_writing may write, also closing */
    if (s->t.ep.draining && write_queue_empty(s))
        s->t.ep.draining = 0; /* all out: a close goes on, writes are refused */
    if (!send_in_flight(s)) {
        release_more(s); /* drained (resume_writing may have written) */
        shutdown_write_side(s);
        settle(s);
    }
}

/* A send is back: if it was a write's first try (first_send_in_flight),
 * its EPIPE is an eager send's (see on_read_end). */
static void first_send_back(pact_stream *s, int64_t result)
{
    if (s->first_send_in_flight && result == -EPIPE)
        s->eager_send_epipe = 1;
    /* connection_lost waits for this completion (docs/contract.md §2):
     * the end it reports may still be corrected, also one held behind
     * bytes for a paused reader. */
    if (s->epipe_presumed && result >= 0) {
        if (s->t.ep.err == -EPIPE)
            s->t.ep.err = -ECONNRESET;
        if (s->has_held && s->held_result == -EPIPE)
            s->held_result = -ECONNRESET;
    }
    s->first_send_in_flight = 0;
    s->epipe_presumed = 0;
}

static void on_send(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_stream *s = arg;
    s->more->send_op = 0;
    first_send_back(s, c->result);
    if (s->t.ep.aborting) {
        settle(s);
        return;
    }
    /* -EAGAIN: a silent send (send_may_finish_silently) the socket took
     * nothing of; the rest goes as any short send's, by a send that
     * waits. */
    if (c->result < 0 && c->result != -EAGAIN) {
        write_failed(s, c->result == -ECANCELED ? -ECONNABORTED : (int)c->result);
        return;
    }
    /* A send ran: s->more holds its buffer. */
    s->more->inflight.start += c->result > 0 ? (size_t)c->result : 0;
    if (pact__wbuf_len(&s->more->inflight) == 0)
        pact__wbuf_clear(&s->more->inflight);
    write_progress(s);
}

/* The same for a send from the stream's slot (op.h). Its common case, a
 * joined reply's (write_joined), is on_send's for a send that sent all
 * of `inflight` and was a write's first try without a presumed EPIPE:
 * without a pact_completion to fill and first_send_back's call
 * (callgrind, HTTP hello-world under wrk at 500 connections on io_uring:
 * 58 -> 52 instructions per request). */
static void on_send_slot(pact_loop *loop, pact_send_slot *slot, int64_t result)
{
    pact_stream_more *m = pact_container_of(slot, pact_stream_more, slot);
    pact_stream *s = m->stream;
    if (result > 0 && (uint64_t)result == pact__wbuf_len(&m->inflight) &&
        !s->epipe_presumed && !s->t.ep.aborting) {
        s->first_send_in_flight = 0;
        pact__wbuf_clear(&m->inflight);
        write_progress(s);
        return;
    }
    pact_completion c = {.result = result};
    on_send(loop, &c, s);
}

/* ---- the staging area of joined replies ---------------------------------------
 * A reply joined to the next submission (write_joined) is copied into
 * the loop's staging area and sent from there, as a zero-copy write is
 * sent from its receive buffer (lent_id LENT_STAGED): the same few KiB
 * take every batch's replies and stay in the data cache, where the copy
 * into the stream's own `inflight` buffer wrote lines the stream's last
 * reply had left long before (callgrind --cache-sim, HTTP under wrk at
 * 500 connections: about 1.5 D1 write misses per reply, and the
 * buffer's fields a read miss). Sent with MSG_DONTWAIT, so that it is
 * back at the system call that submits it; what it did not send is
 * copied into `inflight` then (send_lent_done), so a slow reader never
 * holds the area. Its bytes are taken from the start while sends from
 * it are out, and it starts over when they are all back; a reply that
 * does not fit is copied into `inflight` as before. */
#define STAGE_BYTES (16 * 1024)
#define LENT_STAGED (-1) /* lent_id: the bytes are in the staging area */

/* len bytes of the staging area for one send, or NULL. */
static char *stage_take(pact_loop *loop, size_t len)
{
    size_t need = (len + 15) & ~(size_t)15; /* each reply 16-byte aligned */
    if (!loop->stage && !(loop->stage = malloc(STAGE_BYTES)))
        return NULL;
    if (need > STAGE_BYTES - loop->stage_used)
        return NULL;
    char *p = loop->stage + loop->stage_used;
    loop->stage_used += (uint32_t)need;
    loop->stage_sends++;
    return p;
}

/* A send from the staging area is back. */
static void stage_give_back(pact_loop *loop)
{
    if (--loop->stage_sends == 0)
        loop->stage_used = 0;
}

/* A lent send is back: its bytes' buffer goes back to the loop. */
static inline void lent_give_back(pact_loop *loop, int id)
{
    if (id == LENT_STAGED)
        stage_give_back(loop);
    else
        pact__recv_buffer_give_back(loop, id);
}

/* A zero-copy write's send is back, or a joined reply's from the
 * staging area. What it did not send (all of it after -EAGAIN: it was
 * sent with MSG_DONTWAIT) is copied into `inflight`, ahead of what was
 * written meanwhile, and goes out as any queued write; the loop gets its
 * buffer back either way. */
static PACT_SLOW_PATH void send_lent_done(pact_loop *loop, pact_stream *s,
                                          int64_t result)
{
    pact_stream_more *m = s->more;
    size_t sent = result > 0 ? (size_t)result : 0;
    int err = result < 0 && result != -EAGAIN ? (int)result : 0;
    int id = m->lent_id;
    m->send_op = 0;
    first_send_back(s, result);
    if (!s->t.ep.aborting && err == 0 && sent < m->lent_len) {
        if (id != LENT_STAGED)
            s->inline_writes = INLINE_WRITES_AFTER_BACKLOG;
        if (queue_append(m, &m->inflight, m->lent + sent, m->lent_len - sent) != 0)
            err = -ENOMEM;
    }
    m->lent = NULL;
    m->lent_len = 0;
    if (s->t.ep.aborting) {
        settle(s);
    } else if (err == -ENOMEM) {
        fatal_error(s, err);
    } else if (err < 0) {
        write_failed(s, err == -ECANCELED ? -ECONNABORTED : err);
    } else {
        write_progress(s);
    }
    /* Last, as a tail call (callgrind, 64-byte echo on io_uring: 7
     * instructions per request less): nothing above reads the buffer,
     * what was not sent is copied already. */
    lent_give_back(loop, id);
}

static void on_send_lent(pact_loop *loop, const pact_completion *c, void *arg)
{
    send_lent_done(loop, arg, c->result);
}

/* From the stream's slot. Its common case — everything sent, nothing
 * behind it, the write state stays — is send_lent_done's without a copy,
 * an error or progress to make: it gives the buffer back by a tail call
 * and needs no frame (callgrind, 64-byte echo on io_uring: about 25
 * instructions per request less). */
static void on_send_lent_slot(pact_loop *loop, pact_send_slot *slot,
                              int64_t result)
{
    pact_stream_more *m = pact_container_of(slot, pact_stream_more, slot);
    pact_stream *s = m->stream;
    if (result != (int64_t)m->lent_len || !more_stays(s, m) || !quiet_after_send(s, m)) {
        send_lent_done(loop, s, result);
        return;
    }
    int id = m->lent_id;
    first_send_back(s, result);
    m->lent = NULL;
    m->lent_len = 0;
    lent_give_back(loop, id);
}

/* Starts a socket stream's send of len bytes at data (s->more is taken):
 * from the stream's slot where the engine takes slots (io_uring: no op,
 * no submit queue, no per-fd order; the stream has one send in flight at
 * most and starts the next from its completion), else as a pact_send op.
 * callgrind, 64-byte echo on io_uring (bench/servers/pact_stream_echo,
 * user-space instructions per request): 1,177 -> 757 at 50 connections,
 * 1,169 -> 736 at 500. */
static PACT_SLOW_PATH int start_send_op(pact_stream *s, const void *data,
                                        size_t len, int flags, pact_op_cb op_done)
{
    pact_op op = pact_send(s->t.ep.loop, s->fd, data, len, flags, op_done, s);
    if (op < 0)
        return (int)op;
    s->more->send_op = pact__endpoint_op(&s->t.ep, op);
    queue_mark(s->more);
    return 0;
}

static inline int start_send(pact_stream *s, const void *data, size_t len,
                             int flags, pact_send_slot_done slot_done,
                             pact_op_cb op_done)
{
    pact_stream_more *m = s->more;
    pact_loop *loop = s->t.ep.loop;
    if (loop->send_slots) {
        m->slot.done = slot_done;
        if (pact__slot_send(loop, &m->slot, s->fd, data, len, flags,
                            !s->t.ep.unref) == 0)
            return 0;
    }
    return start_send_op(s, data, len, flags, op_done);
}

/* Starts the next send if none is in flight: the rest of the in-flight
 * buffer after a short send, else what is pending, coalesced. While a
 * write item waits or runs, only the bytes written before it may go;
 * once they are out it is the item's turn. */
static void kick_write(pact_stream *s)
{
    if (!s->more || sending(s->more) || s->t.ep.aborting)
        return; /* no s->more: nothing was ever written or sent */
    pact_stream_more *m = s->more;
    pact_write_item *it = m->item;
    if (pact__wbuf_len(&m->inflight) == 0) {
        size_t pending = pact__wbuf_len(&m->pending);
        size_t allowed = it ? it->bytes_before : pending;
        if (allowed == 0) {
            if (it && !it->started) {
                it->started = 1;
                it->ops->start(it); /* its turn */
            }
            return;
        }
        if (allowed >= pending) {
            pact_wbuf tmp = m->inflight;
            m->inflight = m->pending;
            m->pending = tmp;
            pact__wbuf_clear(&m->pending);
        } else {
            /* Split: only the part written before the item. */
            pact__wbuf_clear(&m->inflight);
            if (queue_append(m, &m->inflight, m->pending.data + m->pending.start,
                             allowed) != 0) {
                fatal_error(s, -ENOMEM);
                return;
            }
            m->pending.start += allowed;
        }
        if (it)
            it->bytes_before -= pact__wbuf_len(&m->inflight);
    }
    const char *data = m->inflight.data + m->inflight.start;
    size_t len = pact__wbuf_len(&m->inflight);
    if (s->t.kind == PACT_STREAM_SOCKET) {
        int r = start_send(s, data, len, 0, on_send_slot, on_send);
        if (r < 0)
            fatal_error(s, r);
        return;
    }
    pact_op op = pact_write(s->t.ep.loop, (pact_os_fd)(intptr_t)s->fd, data, len,
                           -1, on_send, s);
    if (op < 0) {
        fatal_error(s, (int)op);
        return;
    }
    m->send_op = pact__endpoint_op(&s->t.ep, op);
    queue_mark(m);
}

void pact__stream_queue_item(pact_stream *s, pact_write_item *it)
{
    it->s = s;
    it->started = 0;
    /* What is in flight goes first by itself; what is pending must be let
     * through before the item, and nothing written after. */
    it->bytes_before = pact__wbuf_len(&s->more->pending);
    s->more->item = it;
    queue_mark(s->more);
    kick_write(s); /* starts it now if nothing is buffered */
}

void pact__stream_item_done(pact_stream *s, int err)
{
    s->more->item = NULL;
    if (err < 0 && err != -ECANCELED) {
        write_failed(s, err);
        return;
    }
    if (s->t.ep.aborting) {
        settle(s);
        return;
    }
    write_progress(s);
}

/* Nothing queued, in flight or waiting behind a write item: a write may
 * go to the kernel at once without overtaking anything. */
static int write_queue_empty(const pact_stream *s)
{
    pact_stream_more *m = s->more;
    return !m || (m->slot.pending_cqes == 0 && queue_idle(m));
}

/* The eager send: what the kernel takes now, without waiting; 0 when it
 * takes nothing or fails (the queued send then meets the error and
 * reports it as it always has). Sockets: MSG_DONTWAIT whatever the fd's
 * flags. Write pipes and ttys: as the epoll engine writes them
 * (pact__rw_nowait: RWF_NOWAIT, or O_NONBLOCK for this call only on a tty,
 * which refuses RWF_NOWAIT; asyncio writes its ptys at once too). */
static size_t send_now(pact_stream *s, const struct iovec *iov, int iovcnt)
{
    ssize_t n;
    if (s->t.kind == PACT_STREAM_SOCKET && iovcnt == 1) {
        /* send(2): sendmsg's msghdr and iovec cost the kernel a copy and
         * an import per call (perf, 64-byte echo on epoll: about 1% of
         * the server's CPU per request). */
        n = send(s->fd, iov[0].iov_base, iov[0].iov_len, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else if (s->t.kind == PACT_STREAM_SOCKET) {
        struct msghdr mh = {.msg_iov = (struct iovec *)iov,
                            .msg_iovlen = (size_t)iovcnt};
        n = sendmsg(s->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
#ifndef _WIN32 /* a HANDLE has no per-call "do not block" either */
    } else if (s->t.kind == PACT_STREAM_WRITE_PIPE ||
               s->t.kind == PACT_STREAM_DUPLEX_PIPE) {
        uint8_t refuses = s->refuses_rwf_nowait;
        n = pact__rw_nowait(s->fd, 1, iov, iovcnt, -1, &refuses);
        s->refuses_rwf_nowait = refuses;
#endif
    } else {
        return 0;
    }
    if (n < 0 && errno == EPIPE)
        s->eager_send_epipe = 1; /* see on_read_end */
    return n > 0 ? (size_t)n : 0;
}

/* A write with nothing queued, made while the io_uring engine runs the
 * callbacks of the completions it reaped, is queued as a send instead of
 * sent at once: the io_uring_enter that ends the iteration submits it
 * with the iteration's other sends and waits in the same system call
 * (N replies: one system call, not N send(2) and then the wait), and a
 * run that returns first submits it (loop.c, run_end). Only small writes
 * (the copy must cost less than the system call it saves) that stay
 * below the high mark (no pause_writing for a write eagerness would have
 * sent), and not while the peer streams (the data callback running now
 * has more bytes behind it in the socket, delivered in this same batch:
 * what it writes then would find the queued send still waiting and be
 * copied behind it, and write_received could no longer send from the
 * loop's buffer; see stream_write_received). Measured (bench/, io_uring,
 * 5-7 interleaved repetitions against the eager send under load average
 * 5-12, paired medians of server CPU per request): 64-byte echo through
 * pact_transport_write 0.86-0.93x at 50 and 500 connections in both
 * placements, HTTP hello-world under wrk 0.96-1.07x (within the noise);
 * 16 KiB writes go at once (above JOINED_SEND_MAX) as before. Writes made
 * in a binding's after-wait hook (pact.asyncio runs its ready handles,
 * task steps, there) go at once too: joined, they would wait for the
 * next iteration's wait, which submits them and sleeps in one call.
 * Tried on pact.asyncio's streams echo (1 KiB, 4 connections, 3 paired
 * runs at load average 4-7): 0.68 system calls per request instead of
 * 1.68, but 0.12 waits that slept instead of 0.05, server CPU per
 * request 1.17-1.64x and req/s 0.69-0.84x. */
#define JOINED_SEND_MAX 4096
/* A joined send holds its stream's write state (s->more and the copy)
 * until the send completes, where an eager send(2) holds none. At most
 * this many join one submission, as many as the loop's cache of drained
 * write state keeps: a burst of replies over thousands of connections
 * (every keep-alive client answered in one iteration) would otherwise
 * allocate a write state for each, and the heap keeps that high-water
 * mark resident after they drain: measured (bench/ idle suite, 10,000
 * connections after one echo each) 1,144 B per idle transport on
 * io_uring without this bound against 449 B with none joined. On a loop
 * whose streams send through send slots (io_uring on a ring bound to one
 * thread), the engine then submits the joined sends before the batch's
 * next completions run, and hands their completions over at once, which
 * gives their write state back (engine_uring.c, submit_joined_sends):
 * the next replies join the next submission and take the same blocks
 * (wrk, 500 connections: 0.83 -> 0.05 system calls per request). On a
 * movable loop that has moved the rest of the burst is sent at once.
 * Zero-copy replies (write_received_lent) count here too. */
#define JOINED_SENDS_MAX MORE_CACHE_BLOCKS

/* Whether a joined send's completion may be left out when it sends
 * everything (the engine asks at each submission, engine_uring.c's silent
 * sends): only when its completion has nothing to do that anyone waits
 * for — no bytes or write item behind it, no close, write_eof or paused
 * writer waiting for it. Its completion then comes with the loop's next
 * wait, whenever that ends, and releases the write state. */
static int send_may_finish_silently(const pact_stream *s, int lent_ok)
{
    const pact_stream_more *m = s->more;
    return m && (lent_ok || !m->lent) &&
           (!m->queued || (!m->item && pact__wbuf_len(&m->pending) == 0)) &&
           !s->t.ep.closing &&
           !s->t.ep.write_paused && !s->t.eof_requested;
}

int pact__stream_send_may_finish_silently(const pact_op_s *op)
{
    return send_may_finish_silently(op->user, 0);
}

/* A slot's zero-copy reply (write_received_lent) may go silently too:
 * its completion gives the receive buffer back, with the next wait. */
int pact__stream_slot_may_finish_silently(const pact_send_slot *slot)
{
    return send_may_finish_silently(
        pact_container_of(slot, pact_stream_more, slot)->stream, 1);
}

static int send_joins_submission(const pact_stream *s, size_t total)
{
    const pact_loop *loop = s->t.ep.loop;
    return loop->sends_join_submission && s->t.kind == PACT_STREAM_SOCKET &&
           !loop->lent.more_in_socket && total <= JOINED_SEND_MAX &&
           loop->sends_joined < JOINED_SENDS_MAX &&
           total <= high_mark(s);
}

/* What the eager send left over (the first `sent` bytes of iov are out):
 * copied into the queue, and its send started. */
static int queue_unsent(pact_stream *s, const struct iovec *iov, int iovcnt,
                        size_t sent)
{
    size_t skip = sent;
    for (int i = 0; i < iovcnt; i++) {
        size_t len = iov[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        if (!pact__stream_more(s) ||
            queue_append(s->more, &s->more->pending,
                         (const char *)iov[i].iov_base + skip, len - skip) != 0) {
            /* Part of this write is out already: without the rest the
             * stream is broken, not merely refused. */
            if (sent > 0)
                fatal_error(s, -ENOMEM);
            return -ENOMEM;
        }
        skip = 0;
    }
    kick_write(s);
    stream_flow(s);
    return 0;
}

/* A write that joins the loop's next submission (send_joins_submission:
 * nothing queued, in flight or behind a write item; total bytes): copied
 * into the loop's staging area where the streams send through slots and
 * it has room (see stage_take), else straight into `inflight`, and its
 * send starts now (its SQE waits for the submission), without the steps
 * of a queued write (queue_unsent's copy into `pending`, kick_write's
 * swap and its write item), and sent silently where the engine can.
 * Kept small, its write state stays with the stream (MORE_KEPT_SMALL).
 * callgrind, user-space instructions per request on io_uring
 * (bench/c_counts.sh), with on_send_slot's common case and
 * MORE_KEPT_SMALL: HTTP hello-world under wrk 1,580 -> 1,472 at 50
 * connections, 1,748 -> 1,538 at 500; 64-byte echo through
 * pact_transport_write 796 -> 682 and 920 -> 720. */
static PACT_SLOW_PATH int write_joined(pact_stream *s, const struct iovec *iov,
                                       int iovcnt, size_t total)
{
    pact_stream_more *m = pact__stream_more(s);
    if (!m)
        return -ENOMEM;
    pact_loop *loop = s->t.ep.loop;
    char *staged = loop->send_slots ? stage_take(loop, total) : NULL;
    if (staged) {
        size_t at = 0;
        for (int i = 0; i < iovcnt; i++) {
            if (iov[i].iov_len > 0)
                memcpy(staged + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
    } else if (iovcnt == 1 && iov[0].iov_len <= m->inflight.cap) {
        /* A kept write state (MORE_KEPT_SMALL): its empty buffer has
         * room, so no pact__wbuf_append. */
        queue_mark(m);
        memcpy(m->inflight.data, iov[0].iov_base, iov[0].iov_len);
        m->inflight.start = 0;
        m->inflight.end = iov[0].iov_len;
    } else {
        for (int i = 0; i < iovcnt; i++) {
            if (queue_append(m, &m->inflight, iov[i].iov_base, iov[i].iov_len) != 0) {
                pact__wbuf_clear(&m->inflight); /* nothing of it is out */
                return -ENOMEM;
            }
        }
    }
    loop->sends_joined++;
    int r = staged ? start_send(s, staged, total, MSG_DONTWAIT, on_send_lent_slot,
                                on_send_lent)
                   : start_send(s, m->inflight.data + m->inflight.start,
                                pact__wbuf_len(&m->inflight), 0, on_send_slot, on_send);
    if (r < 0) {
        if (staged)
            stage_give_back(loop);
        fatal_error(s, r); /* as kick_write: the stream is broken */
        return 0;
    }
    if (staged) {
        m->lent = staged;
        m->lent_len = (uint32_t)total; /* at most JOINED_SEND_MAX */
        m->lent_id = LENT_STAGED;
    }
    s->first_send_in_flight = 1;
    if (m->slot.pending_cqes > 0) {
        m->slot.flags |= PACT_SLOTF_SILENT_OK;
    } else {
        /* Its completion ended the loop's next wait at once on io_uring
         * (the send completes at submission), which cost an iteration
         * without work; a retry after a short send is never silent. The
         * same by the slot, above. */
        pact_op_s *op = pact__op_lookup(loop, m->send_op);
        if (op)
            op->flags |= PACT_OPF_SILENT_OK;
    }
    stream_flow(s);
    return 0;
}

/* may_join 0: never joins the submission (write_received's streaming
 * rule sends at once). */
static int stream_writev_many(pact_stream *s, const struct iovec *iov, int iovcnt,
                              int may_join)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total == 0)
        return 0;
    size_t sent = 0;
    if (write_queue_empty(s)) {
        if (may_join && send_joins_submission(s, total))
            return write_joined(s, iov, iovcnt, total);
        sent = send_now(s, iov, iovcnt);
    }
    if (sent == total)
        return 0; /* all out: nothing buffered, the marks are not crossed */
    return queue_unsent(s, iov, iovcnt, sent);
}

static PACT_SLOW_PATH int write_slow(pact_stream *s, const void *data, size_t len)
{
    struct iovec iov = {(void *)data, len};
    if (len > 0 && send_joins_submission(s, len) && write_queue_empty(s))
        return write_joined(s, &iov, 1, len); /* stream_writev_many's, sooner */
    return stream_writev_many(s, &iov, 1, 1);
}

static PACT_SLOW_PATH int write_at_once(pact_stream *s, const void *data, size_t len)
{
    struct iovec iov = {(void *)data, len};
    return stream_writev_many(s, &iov, 1, 0);
}

static PACT_SLOW_PATH int write_unsent(pact_stream *s, const void *data, size_t len,
                                       ssize_t sent)
{
    if (sent < 0 && errno == EPIPE)
        s->eager_send_epipe = 1; /* see on_read_end */
    struct iovec iov = {(void *)data, len};
    return queue_unsent(s, &iov, 1, sent > 0 ? (size_t)sent : 0);
}

/* One buffer, the common write (an echo, a reply). A socket stream
 * without write state (s->more: a stream whose writes all went out at
 * once never takes it, and one whose queue drained gives it back or
 * keeps it drained) has nothing queued, in flight or behind a write
 * item, so the bytes go to
 * send(2) from here; the rest of the general path (stream_writev_many)
 * is out of line, and so is the copy of what the kernel did not take.
 * So is a write made while the io_uring engine runs completion callbacks
 * (sends_join_submission: it may join the submission, write_slow).
 * callgrind, 64-byte echo on epoll, from pact_transport_write_received
 * to send(2): 135 -> 70 instructions per request. */
static inline int stream_write(pact_stream *s, const void *data, size_t len)
{
    if (s->t.ep.loop->sends_join_submission || (s->more && !write_queue_empty(s)) ||
        s->t.kind != PACT_STREAM_SOCKET || len == 0)
        return write_slow(s, data, len);
    ssize_t n = send(s->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == (ssize_t)len)
        return 0; /* all out: nothing buffered, the marks are not crossed */
    return write_unsent(s, data, len, n);
}

static int stream_write_op(pact_transport *t, const void *data, size_t len)
{
    return stream_write(stream_of(t), data, len);
}

static int stream_writev(pact_transport *t, const struct iovec *iov, int iovcnt)
{
    pact_stream *s = stream_of(t);
    if (iovcnt == 1)
        return stream_write(s, iov[0].iov_base, iov[0].iov_len);
    return stream_writev_many(s, iov, iovcnt, 1);
}

/* pact_transport_write_received(): with nothing queued, bytes that lie
 * in the receive buffer the loop lent to this callback are sent from
 * there (io_uring: the send joins the loop's next submission, with the
 * other sends of this iteration, and the buffer goes back to the ring
 * when it completes). MSG_DONTWAIT: a send the socket cannot take at once
 * ends with what it took, and the rest is copied then (on_send_lent), so
 * a slow reader never keeps a loop buffer from the other connections. In
 * every other case the bytes are copied as by pact_transport_write.
 *
 * Measured (bench/, echo on loopback): the batched send costs less server
 * CPU per message than send(2) from data_received at 64 B and 16 KiB
 * ping-pong (one message per connection per iteration), but more when a
 * connection streams (64 KiB chunks, four in flight): every write made
 * while the zero-copy send is in flight is copied and waits for it, and
 * a short send costs an iteration and a second send. So a chunk that
 * more bytes follow in the socket (the kernel says so: they arrive in
 * this same batch, and would find this send in flight) goes out at once,
 * as pact_transport_write sends it; only the last chunk of a burst is
 * sent from the buffer. And once a stream shows a write behind the
 * buffer's send or a short send, its next INLINE_WRITES_AFTER_BACKLOG
 * writes that find nothing queued go out at once too. Measured (64 KiB
 * streaming, 10 connections, 4 chunks in flight each): without the
 * first rule 6 % of the writes were copied behind a send from the
 * buffer, with it none; server CPU per chunk 0.94x in both placements
 * (8 interleaved repetitions; 0.89x and 1.14x in a noisier run of 5). */
static PACT_SLOW_PATH int write_received_lent(pact_transport *t, const void *data,
                                              size_t len)
{
    pact_stream *s = stream_of(t);
    pact_loop *loop = t->ep.loop;
    int id;
    if (len == 0 || t->kind != PACT_STREAM_SOCKET || len > UINT32_MAX)
        return stream_write(s, data, len);
    if (!write_queue_empty(s)) {
        if (s->more->lent && s->more->lent_id != LENT_STAGED)
            s->inline_writes = INLINE_WRITES_AFTER_BACKLOG; /* streaming */
        return stream_write(s, data, len);
    }
    if (loop->lent.more_in_socket)
        return stream_write(s, data, len); /* the peer streams: see above */
    /* Lent without send slots: io_uring's move between rings (migrate
     * runs the old ring's callbacks), where an op's send would wait for
     * the new ring and a close behind it could not learn whether it sent
     * everything (docs/contract.md §6). Written at once, as on epoll.
     * "Lent without send slots" means "in the move" only because the
     * rings without send slots (a movable loop's plain ring, a moved
     * loop's) receive in poll mode and never lend (engine_uring.c): a
     * change there must revisit this test, or zero-copy replies stop. */
    if (!loop->send_slots)
        return stream_write(s, data, len);
    if (s->inline_writes) {
        s->inline_writes--;
        return write_at_once(s, data, len);
    }
    if ((id = pact__recv_buffer_keep(loop, data, len)) < 0)
        return stream_write(s, data, len);
    int r = pact__stream_more(s)
                ? start_send(s, data, len, MSG_DONTWAIT, on_send_lent_slot,
                             on_send_lent)
                : -ENOMEM;
    if (r < 0) {
        loop->lent.claims--; /* not kept after all */
        return stream_write(s, data, len);
    }
    s->more->lent = data;
    s->more->lent_len = (uint32_t)len;
    s->more->lent_id = id;
    s->first_send_in_flight = 1;
    /* A small reply sent from its slot goes silently (as a copied one
     * joined to the submission); its buffer then comes back with the
     * next wait, not before it blocks, so larger ones keep their
     * completion (the loop's few receive buffers hold 16 KiB messages
     * by fours). */
    if (len <= JOINED_SEND_MAX && s->more->slot.pending_cqes > 0) {
        s->more->slot.flags |= PACT_SLOTF_SILENT_OK;
        /* It counts with the sends joined to the submission: as many as
         * go silently at once, and the engine submits them before the
         * batch's next replies (engine_uring.c, submit_joined_sends). */
        loop->sends_joined++;
    }
    stream_flow(s);
    return 0;
}

static int stream_write_received(pact_transport *t, const void *data, size_t len)
{
    /* Nothing lent (epoll, io_uring's poll mode, a write outside a
     * receive callback) and no backlog count to keep: a plain write. */
    if (!t->ep.loop->lent.base && !stream_of(t)->inline_writes)
        return stream_write(stream_of(t), data, len);
    return write_received_lent(t, data, len);
}

static int stream_write_eof(pact_transport *t)
{
    shutdown_write_side(stream_of(t));
    return 0;
}

static int stream_set_marks(pact_transport *t, const pact_marks *m)
{
    pact_stream *s = stream_of(t);
    if (!pact__stream_more(s))
        return -ENOMEM;
    s->more->marks = *m;
    s->own_marks = m->high != pact__default_marks.high ||
                   m->low != pact__default_marks.low;
    pact__transport_flow_new_marks(t);
    return 0;
}

static pact_marks stream_marks(const pact_transport *t)
{
    const pact_stream *s = stream_of(t);
    return s->more ? s->more->marks : pact__default_marks;
}

/* ---- write pipes: noticing that the reader went away ---------------------- */

#ifdef _WIN32
static void watch_pipe_reader(pact_stream *s);

/* A completion port has no readiness: a write pipe's end is watched with a
 * read of its own (a named pipe's end is duplex), which ends when the
 * reader closes its end (end of file, ERROR_BROKEN_PIPE). Bytes the
 * reader sent back are not this transport's to deliver: read again. An
 * end opened for writing only refuses the read (access denied): then
 * only a write tells, as before. */
static void on_pipe_hangup(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_stream *s = arg;
    s->more->poll_op = 0;
    if (c->result == -ECANCELED || s->t.ep.closing) {
        settle(s);
        return;
    }
    if (c->result > 0)
        watch_pipe_reader(s);
    else if (c->result == 0 || c->result == -EPIPE)
        fatal_error(s, -EPIPE);
    else
        settle(s); /* no watch on this end */
}

static void watch_pipe_reader(pact_stream *s)
{
    if (!pact__stream_more(s))
        return;
    pact_op op = pact_read(s->t.ep.loop, (pact_os_fd)(intptr_t)s->fd,
                           s->more->hangup_probe, sizeof s->more->hangup_probe,
                           -1, on_pipe_hangup, s);
    if (op > 0)
        s->more->poll_op = pact__endpoint_op(&s->t.ep, op);
}
#else
static void on_pipe_hangup(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_stream *s = arg;
    s->more->poll_op = 0;
    if (c->result == -ECANCELED || s->t.ep.closing) {
        settle(s);
        return;
    }
    if (c->result < 0 || (c->result & (POLLERR | POLLHUP)))
        fatal_error(s, c->result < 0 ? (int)c->result : -EPIPE);
}

/* A write pipe is never readable: POLLIN waits only for POLLERR/POLLHUP,
 * which the kernel reports when the last reader closes. */
static void watch_pipe_reader(pact_stream *s)
{
    if (!pact__stream_more(s))
        return; /* as when the poll cannot start: writes still fail */
    pact_op op = pact_poll(s->t.ep.loop, s->fd, POLLIN, on_pipe_hangup, s);
    if (op > 0)
        s->more->poll_op = pact__endpoint_op(&s->t.ep, op);
}
#endif

/* ---- accessors ------------------------------------------------------------- */

static int stream_fd(const pact_transport *t)
{
    return stream_of(t)->fd;
}

static int stream_name(const pact_transport *t, struct sockaddr_storage *ss,
                       socklen_t *len, int peer)
{
    const pact_stream *s = stream_of(t);
    if (t->kind != PACT_STREAM_SOCKET)
        return -ENOTSOCK;
    if (s->fd < 0)
        return -EBADF;
    *len = sizeof *ss;
    int r = peer ? getpeername(s->fd, (struct sockaddr *)ss, len)
                 : getsockname(s->fd, (struct sockaddr *)ss, len);
    return r < 0 ? -errno : 0;
}

static void connection_made(pact_endpoint *e);

static const pact_transport_ops stream_ops = {
    .ep = {
        PACT_ENDPOINT_KIND("transport"),
        .force_close = pact__transport_force_close,
        .cancel = stream_cancel,
        .busy = stream_busy,
        .made = connection_made,
        .lost = stream_lost,
        .free = stream_free,
        .writing = pact__transport_writing,
        .set_ref = stream_set_ref,
#ifndef _WIN32
        .forget = stream_forget,
#endif
    },
    .writev = stream_writev,
    .write = stream_write_op,
    .write_received = stream_write_received,
    .write_eof = stream_write_eof,
    .close = stream_close,
    .drains_after_all = stream_drains_after_all,
    .pause_reading = stream_pause_reading,
    .resume_reading = stream_resume_reading,
    .write_buffer_size = stream_write_buffer_size,
    .set_marks = stream_set_marks,
    .marks = stream_marks,
    .fd = stream_fd,
    .name = stream_name,
    .sendfile = pact__stream_sendfile,
};

/* ---- creation -------------------------------------------------------------- */

/* The endpoint's made (pact__endpoint_made_soon): it may have been closed
 * before, or be closed inside; the final close waits until it returns. */
static void connection_made(pact_endpoint *e)
{
    pact_stream *s = stream_of_ep(e);
    pact_transport *t = &s->t;
    if (t->proto->connection_made)
        t->proto->connection_made(t, t->user);
    if (!t->ep.closing) {
        start_reading_as(s, 1);
        if (t->kind == PACT_STREAM_WRITE_PIPE && !poll_op(s))
            watch_pipe_reader(s);
        stream_flow(s); /* writes before connection_made */
    }
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
    if (r == 0 && (int)kind > PACT_STREAM_DUPLEX_PIPE)
        r = PACT_MISUSE(loop, -EINVAL, "unknown stream kind");
    pact_stream *s = r == 0 ? stream_alloc(loop) : NULL;
    if (r == 0 && !s)
        r = -ENOMEM;
    if (r != 0) {
        if (fd >= 0)
            close_fd(fd, kind);
        return r;
    }
    pact__transport_init(&s->t, loop, &stream_ops, kind, proto, user);
    s->fd = fd;
    /* connection_made on the next iteration, as asyncio does: the caller
     * gets the transport before any protocol callback runs. */
    pact__endpoint_made_soon(&s->t.ep);
    pact__endpoint_register(&s->t.ep, created_at);
    /* The socket is the stream's until stream_lost closes it (after
     * pact__fd_closing): the engine may register the file meanwhile. */
    if (kind == PACT_STREAM_SOCKET)
        pact__fd_owned(loop, fd);
    *out = &s->t;
    return 0;
}

int pact_transport_open(pact_loop *loop, pact_os_sock fd, pact_stream_kind kind,
                        const pact_protocol *proto, void *user,
                        pact_transport **out)
{
#ifdef _WIN32
    /* A SOCKET: pipes are HANDLEs, given to pact_transport_open_pipe. The
     * socket is the transport's on failure too. */
    if (kind != PACT_STREAM_SOCKET) {
        if (fd != INVALID_SOCKET)
            closesocket(fd);
        return PACT_MISUSE(loop, -EINVAL,
                           "a pipe kind: use pact_transport_open_pipe");
    }
#endif
    /* Windows socket values fit in 32 bits; INVALID_SOCKET becomes -1. */
    return pact__transport_create(loop, (int)fd, kind, proto, user,
                                  __builtin_return_address(0), out);
}

int pact_transport_open_pipe(pact_loop *loop, pact_os_fd fd,
                             pact_stream_kind kind, const pact_protocol *proto,
                             void *user, pact_transport **out)
{
#ifdef _WIN32
    /* Handle values fit in 32 bits and are sign-extended back; NULL and
     * INVALID_HANDLE_VALUE are no pipe. */
    int ifd = fd && fd != INVALID_HANDLE_VALUE &&
                      (intptr_t)(int)(intptr_t)fd == (intptr_t)fd
                  ? (int)(intptr_t)fd
                  : -1;
    if (ifd < 0 && fd && fd != INVALID_HANDLE_VALUE)
        CloseHandle(fd);
#else
    int ifd = fd;
#endif
    if (kind != PACT_STREAM_READ_PIPE && kind != PACT_STREAM_WRITE_PIPE &&
        kind != PACT_STREAM_DUPLEX_PIPE) {
        if (ifd >= 0)
            close_fd(ifd, PACT_STREAM_READ_PIPE);
        return PACT_MISUSE(loop, -EINVAL, "not a pipe kind");
    }
    return pact__transport_create(loop, ifd, kind, proto, user,
                                  __builtin_return_address(0), out);
}
