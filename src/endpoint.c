/* SPDX-License-Identifier: MIT */
/* The endpoint lifecycle shared by every transport, datagram endpoint,
 * server and process (see endpoint.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"

const pact_marks pact__default_marks = {PACT_DEFAULT_HIGH_WATER,
                                        PACT_DEFAULT_LOW_WATER};

void pact__endpoint_force_close(pact_resource *res)
{
    pact_endpoint *e = pact_container_of(res, pact_endpoint, res);
    pact__endpoint_ops(e)->force_close(e);
}

void pact__endpoint_init(pact_endpoint *e, pact_loop *loop,
                         const pact_endpoint_ops *ops)
{
    memset(e, 0, sizeof *e);
    e->res.kind = &ops->resource;
    e->loop = loop;
    e->refs = 1;
    pact_list_init(&e->res.link);
    pact_list_init(&e->ready.link);
}

void pact__endpoint_register(pact_endpoint *e, void *created_at)
{
    pact__resource_add(e->loop, &e->res, e->res.kind, created_at);
}

void pact__endpoints_forget(pact_loop *loop)
{
    pact_list *n = loop->resources.next;
    while (n != &loop->resources) {
        pact_list *next = n->next; /* forget frees the link with the rest */
        pact_resource *res = pact_container_of(n, pact_resource, link);
        if (res->kind->force_close == pact__endpoint_force_close) { /* an endpoint's */
            pact_endpoint *e = pact_container_of(res, pact_endpoint, res);
            const pact_endpoint_ops *ops = pact__endpoint_ops(e);
            pact_list_remove(n);
            if (ops->forget)
                ops->forget(e);
        }
        n = next;
    }
}

void pact__endpoint_unref(pact_endpoint *e)
{
    if (--e->refs == 0)
        pact__endpoint_ops(e)->free(e);
}

pact_handle pact__endpoint_soon(pact_endpoint *e, pact_call_cb cb)
{
    pact__endpoint_ref(e);
    pact_handle h = pact__call_soon_internal(e->loop, cb, e);
    if (h < 0)
        pact__endpoint_unref(e);
    return h;
}

static pact_endpoint *endpoint_of_ready(pact_ready *node)
{
    return pact_container_of(node, pact_endpoint, ready);
}

/* connection_made from the endpoint's node: entered since it was queued
 * (pact__endpoint_made_soon), so the final close waits until we leave. */
static void made_ready(pact_loop *loop, pact_ready *node)
{
    pact_endpoint *e = endpoint_of_ready(node);
    void (*made)(pact_endpoint *) = pact__endpoint_ops(e)->made;
    e->made = 1;
    PACT_RUN_CALLBACK(loop, made, "callback", made(e));
    pact__endpoint_leave(e); /* settles */
}

void pact__endpoint_made_soon(pact_endpoint *e)
{
    pact__endpoint_enter(e); /* left by made_ready */
    pact__ready_push(e->loop, &e->ready, made_ready);
}

/* The final close: from a fresh loop callback, never nested in another
 * callback of the endpoint's user. */
static void final_close(pact_endpoint *e)
{
    pact__resource_remove(e->loop, &e->res);
    e->lost = 1;
    pact__endpoint_ops(e)->lost(e);
    pact_endpoint *parent = e->parent;
    if (parent) {
        e->parent = NULL;
        parent->children--;
        pact__endpoint_settle(parent);
        pact__endpoint_unref(parent);
    }
    /* The endpoint's own reference (refs = 1 at creation). No other is
     * taken for this callback: one more here leaked every datagram
     * endpoint that closed. */
    pact__endpoint_unref(e);
}

static void final_close_ready(pact_loop *loop, pact_ready *node)
{
    PACT_RUN_CALLBACK(loop, final_close, "callback",
                      final_close(endpoint_of_ready(node)));
}

void pact__endpoint_settle(pact_endpoint *e)
{
    if (!e->closing || e->finishing || e->depth > 0 || e->children > 0)
        return;
    const pact_endpoint_ops *ops = pact__endpoint_ops(e);
    if (ops->busy && ops->busy(e))
        return;
    e->finishing = 1;
    /* The node is free: connection_made has run (depth held it back
     * until then), and nothing else uses it. A loop that is going away
     * (closing, or inherited by a forked child) runs no more ready
     * nodes: the final close runs now, not never. */
    if (e->loop->state != PACT_LOOP_OPEN || pact__loop_forked(e->loop))
        final_close(e);
    else
        pact__ready_push(e->loop, &e->ready, final_close_ready);
}

void pact__endpoint_leave(pact_endpoint *e)
{
    if (--e->depth == 0)
        pact__endpoint_settle(e);
}

int pact__endpoint_begin_close(pact_endpoint *e)
{
    if (e->closing)
        return -EALREADY;
    e->closing = 1;
    return 0;
}

int pact__endpoint_abort(pact_endpoint *e, int err)
{
    if (e->aborting)
        return -EALREADY;
    e->aborting = 1;
    e->closing = 1;
    if (!e->err)
        e->err = err;
    const pact_endpoint_ops *ops = pact__endpoint_ops(e);
    pact__endpoint_enter(e);
    if (ops->cancel)
        ops->cancel(e);
    pact__endpoint_leave(e);
    return 0;
}

int pact__endpoint_may_pause(const pact_endpoint *e, int paused, int pause)
{
    if (e->closing)
        return -ESHUTDOWN;
    return !paused == !pause ? -EALREADY : 0;
}

void pact__endpoint_adopt(pact_endpoint *child, pact_endpoint *parent)
{
    child->parent = parent;
    parent->children++;
    pact__endpoint_ref(parent);
}

/* ---- flow control ------------------------------------------------------------ */

int pact__marks_check(pact_marks *m, size_t high, size_t low)
{
    if (low > high)
        return -EINVAL;
    m->high = high;
    m->low = low;
    return 0;
}

void pact__endpoint_flow(pact_endpoint *e, const pact_marks *m, size_t buffered)
{
    int takes = pact__endpoint_takes_writes(e);
    const pact_endpoint_ops *ops = pact__endpoint_ops(e);
    if (!e->write_paused) {
        if (e->made && takes && buffered > m->high) {
            e->write_paused = 1;
            if (ops->writing)
                ops->writing(e, 1);
        }
    } else if (buffered <= m->low) {
        e->write_paused = 0;
        if (ops->writing && takes)
            ops->writing(e, 0);
    }
}

void pact__endpoint_flow_new_marks(pact_endpoint *e, const pact_marks *m,
                                   size_t buffered)
{
    if (!e->write_paused)
        pact__endpoint_flow(e, m, buffered);
}

int pact__endpoint_write_refused(pact_endpoint *e, int first,
                                 const char *what, int fd)
{
    /* asyncio drops these and warns; say so once in debug mode. */
    if (first && pact_loop_debug(e->loop))
        pact__log(e->loop, "write on a closing %s (fd %d) dropped", what, fd);
    return -ESHUTDOWN;
}

/* ---- the write buffer ---------------------------------------------------------- */

/* The first capacity a write buffer tries (then doubled until the bytes
 * fit): a malloc chunk of 80 bytes. */
#define PACT_WBUF_MIN_CAP 64

int pact__wbuf_append(pact_wbuf *b, const void *data, size_t len)
{
    if (b->end + len > b->cap) {
        /* Slide down first: the buffer is not in flight (only a buffer
         * the kernel is not reading is ever appended to). */
        if (b->start > 0) {
            memmove(b->data, b->data + b->start, b->end - b->start);
            b->end -= b->start;
            b->start = 0;
        }
        if (b->end + len > b->cap) {
            /* From the size of the first write up, not from a page: a
             * stream's small reply copied for a send that joins the next
             * submission kept 4 KiB in the loop's cache of drained write
             * state for a 64-byte message (two such buffers per cached
             * state), memory an idle server held for its busiest moment.
             * Doubling keeps a growing queue's copies amortized. */
            size_t cap = b->cap ? b->cap : PACT_WBUF_MIN_CAP;
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

void pact__wbuf_free(pact_wbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---- what keeps the loop alive ------------------------------------------- */

int pact__endpoint_set_ref(pact_endpoint *e, int ref)
{
    const pact_endpoint_ops *ops = pact__endpoint_ops(e);
    e->unref = !ref;
    if (ops->set_ref)
        ops->set_ref(e, ref);
    return 0;
}

pact_op pact__endpoint_op(pact_endpoint *e, pact_op op)
{
    if (op > 0 && e->unref)
        pact_op_set_ref(e->loop, op, 0);
    return op;
}

pact_handle pact__endpoint_timer(pact_endpoint *e, pact_handle h)
{
    if (h > 0 && e->unref)
        pact_handle_set_ref(e->loop, h, 0);
    return h;
}
