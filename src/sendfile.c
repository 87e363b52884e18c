/* SPDX-License-Identifier: MIT */
/* Sending a file range over a stream transport, the portable half
 * (sendfile.h): the range in the stream's write queue, its steps, its
 * cancel and its end; the system's half sends each chunk. */
#include <errno.h>
#include <stdlib.h>

#include "sendfile.h"

static void finish(pact_sendfile *sf, int err)
{
    pact_stream *s = pact__sendfile_stream(sf);
    pact_loop *loop = pact__sendfile_loop(sf);
    /* Cancelled because the connection failed (a reset seen by the read
     * side first): the callback gets that error, not -ECANCELED. */
    int64_t result = err < 0 ? err : (int64_t)sf->sent;
    if (err == -ECANCELED && s->t.ep.err < 0)
        result = s->t.ep.err;
    pact_completion c = {.op = 0, .result = result,
                         .transferred = sf->sent};
    pact_op_cb cb = sf->cb;
    void *user = sf->user;
    pact__sendfile_os_free(sf);
    /* The stream goes on before the callback, so that a sendfile the
     * callback starts is not wiped out by item_done afterwards (writes
     * would then pass it and close would not wait for it). */
    pact__stream_item_done(s, err);
    cb(loop, &c, user);
}

int pact__sendfile_op_back(pact_sendfile *sf, const pact_completion *c,
                           int moved)
{
    sf->op = 0;
    /* Bytes that went out count, even when a cancel came too late. */
    if (moved && c->result > 0) {
        sf->sent += (size_t)c->result;
        sf->remaining -= (size_t)c->result;
        sf->offset += c->result;
    }
    if (sf->cancelled || c->result == -ECANCELED)
        finish(sf, -ECANCELED);
    else if (c->result < 0)
        finish(sf, (int)c->result);
    else
        return 0;
    return 1;
}

void pact__sendfile_step(pact_sendfile *sf)
{
    int r = sf->remaining > 0 ? pact__sendfile_os_chunk(sf) : 1;
    if (r != 0)
        finish(sf, r < 0 ? r : 0); /* frees sf */
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
        pact__sendfile_step(sf);
}

static void schedule_step(pact_sendfile *sf)
{
    if (sf->scheduled)
        return;
    sf->scheduled = 1;
    if (pact_call_soon(pact__sendfile_loop(sf), run_step, sf) < 0)
        run_step(pact__sendfile_loop(sf), sf);
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
        pact_op_cancel(pact__sendfile_loop(sf), sf->op);
    else
        schedule_step(sf);
}

/* pact_transport_set_ref() on its stream: the op in flight follows. */
static void item_set_ref(pact_write_item *it, int ref)
{
    pact_sendfile *sf = (pact_sendfile *)it;
    if (sf->op)
        pact_op_set_ref(pact__sendfile_loop(sf), sf->op, ref);
}

static const pact_write_item_ops sendfile_item_ops = {
    .start = item_start,
    .cancel = item_cancel,
    .set_ref = item_set_ref,
};

int pact__stream_sendfile(pact_transport *t, pact_os_fd file, int64_t offset,
                          size_t count, pact_op_cb cb, void *user)
{
    pact_stream *s = pact_container_of(t, pact_stream, t);
    if (s->more && s->more->item)
        return -EBUSY;
    int err = -ENOMEM;
    pact_sendfile *sf = pact__sendfile_os_new(s, file, offset, &count, &err);
    if (!sf)
        return err;
    /* s->more holds the queue the range joins. */
    if (!pact__stream_more(s)) {
        pact__sendfile_os_free(sf);
        return -ENOMEM;
    }
    sf->item.ops = &sendfile_item_ops;
    sf->file = file;
    sf->offset = offset;
    sf->remaining = count;
    sf->cb = cb;
    sf->user = user;
    /* Starts the range now if nothing is buffered, else after the flush. */
    pact__stream_queue_item(s, &sf->item);
    return 0;
}
