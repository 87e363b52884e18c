/* SPDX-License-Identifier: MIT */
/* The endpoint: the one lifecycle every long-lived object on the loop
 * shares — stream and TLS transports, datagram endpoints, servers and
 * processes embed it (the shape of libuv's uv_handle_t/uv_close and of
 * sd-event's single source type).
 *
 * It owns the reference count, the registration on the loop (listed at
 * close, reported in debug mode, force-closed), the states made, closing,
 * aborting, finishing and lost with the error connection_lost reports,
 * the rule "finish once nothing is in flight", and the final close from a
 * fresh loop callback. It also holds the one copy of the write buffer
 * and of the flow-control marks. The kind supplies what differs in a
 * table (pact_endpoint_ops): how to cancel what it has in flight, whether
 * something is still owed, what its final close does, how its memory
 * goes.
 *
 * States, in order (each flag stays set once set):
 *   made       the user's connection_made has run
 *   closing    close, abort or an error: no more data is delivered;
 *              the endpoint finishes once ops->busy says nothing is owed
 *   draining   (beside closing) close found writes queued: until they
 *              are out, writes are still taken and queued behind them,
 *              and flow control goes on, as asyncio's socket and datagram
 *              transports do; cleared when the queue is empty, on abort
 *              or error (pact__endpoint_takes_writes)
 *   aborting   abort or an error: the write buffer is dropped and every
 *              operation cancelled (ops->cancel), err set
 *   finishing  the final close is scheduled (one fresh loop callback)
 *   lost       the final close ran: fds closed, connection_lost called;
 *              the memory goes when the last reference is dropped
 * See docs/design-notes.md ("The endpoint lifecycle"). */
#ifndef PACT_ENDPOINT_H
#define PACT_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"

/* Entry points that change an endpoint's object (transport, server,
 * datagram endpoint, process) answer -EPERM off the loop's owner thread
 * (pact__loop_check_thread); getters are not checked. obj is any object
 * with its endpoint in a member named ep. */
#define PACT_ENDPOINT_CHECK_OWNER(obj)                                        \
    do {                                                                      \
        int owner_err_ = pact__loop_check_thread((obj)->ep.loop, __func__);   \
        if (owner_err_)                                                       \
            return owner_err_;                                                \
    } while (0)

typedef struct pact_endpoint pact_endpoint;

typedef struct pact_endpoint_ops {
    /* First: an endpoint's resource record points here, and that pointer
     * is the endpoint's only pointer to its ops (pact__endpoint_ops); set
     * it with PACT_ENDPOINT_KIND. */
    pact_resource_kind resource;
    /* Loop close: end it now (abort, or the kind's close). */
    void (*force_close)(pact_endpoint *e);
    /* Abort or error: ask every operation in flight to stop. Their
     * completions arrive later and call pact__endpoint_settle(). May be
     * NULL. */
    void (*cancel)(pact_endpoint *e);
    /* Something is still owed (an op in flight; bytes to flush after a
     * close that was no abort; a child): the final close waits. */
    int (*busy)(const pact_endpoint *e);
    /* connection_made, from the endpoint's ready node
     * (pact__endpoint_made_soon): the user's, then what starts after it
     * (reading). made is set; a close inside only marks the endpoint
     * closing. Set by the kinds that call pact__endpoint_made_soon
     * (streams, datagram endpoints); the others set made themselves. */
    void (*made)(pact_endpoint *e);
    /* The final close, from a fresh loop callback: close the fds, tell
     * the user (connection_lost). */
    void (*lost)(pact_endpoint *e);
    /* The last reference is gone. */
    void (*free)(pact_endpoint *e);
    /* Flow control crossed a mark: the protocol's pause_writing (pause
     * = 1) or resume_writing (0). May be NULL. */
    void (*writing)(pact_endpoint *e, int pause);
    /* pact_*_set_ref(): apply ref to the operations and timers in flight
     * now (e->unref is already set); the ones started later go through
     * pact__endpoint_op() / pact__endpoint_timer(). May be NULL. */
    void (*set_ref)(pact_endpoint *e, int ref);
    /* In a forked child that frees the loop it inherited (pact_loop_free):
     * close this process's copies of the endpoint's fds and free its
     * memory — no callback, no operation, no call into the engine: the
     * kernel objects and what is in flight on them are the parent's.
     * May be NULL (nothing of its own to give back). */
    void (*forget)(pact_endpoint *e);
} pact_endpoint_ops;

/* The resource kind at the head of an endpoint ops table: the name given
 * in loop-close reports ("transport", "server", ...), and a force_close
 * that calls the table's force_close with the endpoint. */
void pact__endpoint_force_close(pact_resource *res);
#define PACT_ENDPOINT_KIND(name) .resource = {(name), pact__endpoint_force_close}

struct pact_endpoint {
    /* What a request does not touch first, so that what it does (res.kind
     * and on) ends the endpoint and joins the transport's fields behind
     * it: in a socket stream (stream.h) a request's fields are the 64
     * bytes from offset 64, one cache line of the 64-byte aligned stream,
     * where spread from offset 0 they were three. */
    pact_endpoint *parent; /* a server, for its connections; holds a ref */
    /* The endpoint's own place in the loop's ready queue: first its
     * connection_made, then its final close, so neither allocates a
     * handle (a server of short connections made two per connection).
     * They are never queued at once: while connection_made waits or
     * runs, depth holds the final close back (pact__endpoint_made_soon),
     * and the leave that ends it queues the final close, the node free
     * again by then. That also keeps their order (docs/contract.md). */
    pact_ready ready;
    int refs;              /* the endpoint itself + scheduled callbacks */
    int err;               /* what connection_lost reports (first error) */
    /* Listed on the loop until the final close; res.kind is the ops
     * table (pact__endpoint_ops), set at init, before the listing. */
    pact_resource res;
    pact_loop *loop;
    uint32_t children;     /* adopted endpoints not gone yet */
    uint16_t depth;        /* inside the kind's own code: do not finish */
    uint16_t made : 1;
    uint16_t closing : 1;
    uint16_t aborting : 1;
    uint16_t finishing : 1;
    uint16_t lost : 1;
    uint16_t write_paused : 1; /* pause_writing was called */
    uint16_t draining : 1;     /* closing with writes queued: see above */
    uint16_t unref : 1;        /* pact_*_set_ref(0): keeps no loop alive */
};

/* The kind's ops: the table res.kind points into (one pointer for both,
 * 8 bytes less per endpoint). */
static inline const pact_endpoint_ops *pact__endpoint_ops(const pact_endpoint *e)
{
    return pact_container_of(e->res.kind, const pact_endpoint_ops, resource);
}

/* pact_*_set_ref(): whether what the endpoint has in flight keeps
 * pact_loop_run() going. Returns 0. */
int pact__endpoint_set_ref(pact_endpoint *e, int ref);
/* An operation or timer the endpoint just started (a handle > 0, or an
 * error passed through): unreferenced at once while the endpoint is. */
pact_op pact__endpoint_op(pact_endpoint *e, pact_op op);
pact_handle pact__endpoint_timer(pact_endpoint *e, pact_handle h);

/* Fills e (refs = 1: the endpoint's own, dropped by the final close). */
void pact__endpoint_init(pact_endpoint *e, pact_loop *loop,
                         const pact_endpoint_ops *ops);
/* A forked child frees an inherited loop: every endpoint still listed
 * on it is forgotten (ops->forget). Nothing else of the loop is touched. */
void pact__endpoints_forget(pact_loop *loop);

/* Lists e on the loop (debug report, force-close at loop close) once its
 * creation can no longer fail; created_at names the creator. Listed
 * until the final close. */
void pact__endpoint_register(pact_endpoint *e, void *created_at);

static inline void pact__endpoint_ref(pact_endpoint *e) { e->refs++; }
/* Drops a reference; the last one calls ops->free. */
void pact__endpoint_unref(pact_endpoint *e);

/* Schedules cb(loop, e) for the next iteration, holding a reference the
 * callback drops with pact__endpoint_unref(). Handle or negative errno. */
pact_handle pact__endpoint_soon(pact_endpoint *e, pact_call_cb cb);

/* Queues ops->made for the next iteration in the endpoint's own node; it
 * cannot fail (the endpoint is being made, on an open loop). Until made
 * has run, the endpoint does not finish: a close or abort before it, or
 * inside it, only marks it closing. */
void pact__endpoint_made_soon(pact_endpoint *e);

/* close(): -EALREADY if closing already, else marks it closing and
 * returns 0. The caller stops reading, flushes, then settles. */
int pact__endpoint_begin_close(pact_endpoint *e);
/* abort() or an error: closing and aborting, err kept if none yet,
 * everything in flight cancelled, then settled. -EALREADY when aborting
 * already (the first error wins). */
int pact__endpoint_abort(pact_endpoint *e, int err);
/* Once closing and nothing is owed: schedule the final close (once). */
void pact__endpoint_settle(pact_endpoint *e);

/* Brackets the kind's own code that may close or abort e and then still
 * use it: the final close is not scheduled inside; leave settles. */
static inline void pact__endpoint_enter(pact_endpoint *e) { e->depth++; }
void pact__endpoint_leave(pact_endpoint *e);

/* pause_reading (pause = 1) / resume_reading (0) on an endpoint whose
 * reading is `paused` now: -ESHUTDOWN once closing, -EALREADY when it is
 * so already, else 0 (the caller flips its flag). */
int pact__endpoint_may_pause(const pact_endpoint *e, int paused, int pause);

/* child belongs to parent (a server's connection): parent keeps its
 * memory and stays busy until the child is gone. */
void pact__endpoint_adopt(pact_endpoint *child, pact_endpoint *parent);

/* Whether a write (send) is taken: not closing, or closed while the queue
 * still drains (docs/contract.md §6). */
static inline int pact__endpoint_takes_writes(const pact_endpoint *e)
{
    return !e->closing || (e->draining && !e->aborting);
}

/* ---- flow control: the one copy of the write-buffer marks ---------------- */

#define PACT_DEFAULT_HIGH_WATER (64 * 1024)
#define PACT_DEFAULT_LOW_WATER (16 * 1024)

typedef struct pact_marks {
    size_t high, low;
} pact_marks;

extern const pact_marks pact__default_marks;

/* The marks as given (set_write_marks: a high of 0 is a mark of zero);
 * low > high is -EINVAL. Fills *m or returns a negative errno. */
int pact__marks_check(pact_marks *m, size_t high, size_t low);
/* set_write_buffer_limits' older rule, kept for its callers
 * (docs/abi.md): a high of 0 means the default. */
static inline size_t pact__marks_high_or_default(size_t high)
{
    return high ? high : PACT_DEFAULT_HIGH_WATER;
}
/* After the write buffer changed to `buffered` bytes: pause_writing when
 * it grew past the high mark (once connection_made has run), resume_writing
 * when it fell to the low mark; while closing only as long as writes are
 * taken (a close draining its queue). */
void pact__endpoint_flow(pact_endpoint *e, const pact_marks *m,
                         size_t buffered);
/* The same after set_write_buffer_limits, with the new marks: as
 * asyncio's, they may pause the writer but never resume it. A paused
 * writer has bytes queued (it paused past the high mark, and resumes at
 * the low one), so the send that takes them to the new low mark resumes
 * it, as the one that empties the queue would. */
void pact__endpoint_flow_new_marks(pact_endpoint *e, const pact_marks *m,
                                   size_t buffered);
/* A write on a closing endpoint (the caller counts it): said in debug
 * mode if it is the first; returns -ESHUTDOWN. `what` names the kind for
 * the message. */
int pact__endpoint_write_refused(pact_endpoint *e, int first,
                                 const char *what, int fd);

/* ---- the write buffer ------------------------------------------------------ */

/* A byte buffer consumed from `start` and appended at `end`. The data
 * pointer last: the lengths and the capacity are what most checks read
 * (stream.h lays a buffer out across a cache line's end by it). */
typedef struct pact_wbuf {
    size_t start, end, cap;
    char *data;
} pact_wbuf;

static inline size_t pact__wbuf_len(const pact_wbuf *b)
{
    return b->end - b->start;
}
static inline void pact__wbuf_clear(pact_wbuf *b) { b->start = b->end = 0; }
/* Appends len bytes (grows, sliding the unconsumed bytes down first; the
 * buffer must not be in flight). 0 or -ENOMEM. */
int pact__wbuf_append(pact_wbuf *b, const void *data, size_t len);
void pact__wbuf_free(pact_wbuf *b);

#endif
