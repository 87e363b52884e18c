/* SPDX-License-Identifier: MIT */
/* Scheduled callbacks: call_soon (the ready queue, FIFO) and call_later /
 * call_at / call_every (the timer heap). Timers compare against a fresh
 * clock reading, so they never fire early. A repeating timer keeps its
 * phase: its next deadline is the previous deadline + interval, and ticks
 * that were missed (the loop was busy) are skipped, never run in a burst. */
#include <errno.h>

#include "loop.h"

/* Every field of the handle is set here, none left to the slab's
 * zeroing (a memset of the whole entry, about 20 instructions of the ~120
 * a loop's own callback cost: two per connection in a server of short
 * connections, callgrind). */
static pact_handle_s *handle_alloc(pact_loop *loop, pact_call_cb cb, void *user)
{
    uint32_t idx;
    pact_handle_s *h = pact_slab_alloc_unzeroed(&loop->handles, &idx);
    if (!h)
        return NULL;
    h->state = 0;
    h->flags = 0;
    h->interval = 0;
    h->cb = cb;
    h->user = user;
    pact_list_init(&h->ready.link);
    h->timer = (pact_heap_node){.pos = UINT32_MAX, .kind = PACT_TIMER_HANDLE};
    h->created_at = NULL;
    return h;
}

static pact_handle_s *handle_new(pact_loop *loop, pact_call_cb cb,
                                 void *user, const char *func, int *err)
{
    *err = pact__check_loop(loop, func);
    if (*err)
        return NULL;
    if (!cb) {
        *err = pact__misuse(loop, -EINVAL, func, "callback is NULL");
        return NULL;
    }
    pact_handle_s *h = handle_alloc(loop, cb, user);
    if (!h)
        *err = -ENOMEM;
    return h;
}

/* Timers in the heap that keep the loop alive (not unreferenced). */
static void timer_count(pact_loop *loop, const pact_handle_s *h, int delta)
{
    if (!(h->flags & PACT_HANDLEF_UNREF))
        loop->user_timers += (uint64_t)(int64_t)delta;
}

static void handle_free(pact_loop *loop, pact_handle_s *h)
{
    pact_slab_free(&loop->handles, h->slab.next_free);
}

static void handle_run(pact_loop *loop, pact_handle_s *h);

/* A handle's run in the ready queue (pact_ready). */
static void handle_run_ready(pact_loop *loop, pact_ready *node)
{
    handle_run(loop, pact_container_of(node, pact_handle_s, ready));
}

pact_handle pact_call_soon(pact_loop *loop, pact_call_cb cb, void *user)
{
    int err;
    pact_handle_s *h = handle_new(loop, cb, user, __func__, &err);
    if (!h)
        return err;
    h->created_at = __builtin_return_address(0);
    h->state = PACT_HANDLE_READY;
    pact__ready_push(loop, &h->ready, handle_run_ready);
    return pact_slab_entry_handle(&loop->handles, h);
}

/* The loop's own code (an endpoint's resume) on the loop's thread, with
 * a callback: of pact_call_soon's checks only the loop's state can fail,
 * answered as pact_call_soon does, without a debug-mode misuse report.
 * (connection_made and the final close need no handle: endpoint.h.) */
pact_handle pact__call_soon_internal(pact_loop *loop, pact_call_cb cb, void *user)
{
    if (loop->state != PACT_LOOP_OPEN)
        return -ESHUTDOWN;
    if (pact__loop_forked(loop))
        return -ECHILD;
    pact_handle_s *h = handle_alloc(loop, cb, user);
    if (!h)
        return -ENOMEM;
    h->created_at = __builtin_return_address(0);
    h->state = PACT_HANDLE_READY;
    pact__ready_push(loop, &h->ready, handle_run_ready);
    return pact_slab_entry_handle(&loop->handles, h);
}

pact_handle pact_call_at(pact_loop *loop, uint64_t when_ns, pact_call_cb cb,
                         void *user)
{
    int err;
    pact_handle_s *h = handle_new(loop, cb, user, __func__, &err);
    if (!h)
        return err;
    h->created_at = __builtin_return_address(0);
    h->state = PACT_HANDLE_TIMER;
    h->flags = PACT_HANDLEF_TIMER;
    h->timer.when = when_ns;
    if (pact_heap_insert(&loop->timers, &h->timer) != 0) {
        handle_free(loop, h);
        return -ENOMEM;
    }
    timer_count(loop, h, +1);
    return pact_slab_entry_handle(&loop->handles, h);
}

pact_handle pact_call_later(pact_loop *loop, uint64_t delay_ns,
                            pact_call_cb cb, void *user)
{
    uint64_t now = pact_now();
    uint64_t when = delay_ns > UINT64_MAX - now ? UINT64_MAX : now + delay_ns;
    pact_handle h = pact_call_at(loop, when, cb, user);
    if (h > 0) {
        uint32_t idx;
        pact_handle_s *hs = pact_slab_from_handle(&loop->handles, h, &idx);
        hs->created_at = __builtin_return_address(0);
    }
    return h;
}

pact_handle pact_call_every(pact_loop *loop, uint64_t interval_ns,
                            pact_call_cb cb, void *user)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (interval_ns == 0)
        return pact__misuse(loop, -EINVAL, __func__,
                            "interval is 0 (it would spin the loop)");
    uint64_t now = pact_now();
    uint64_t when = interval_ns > UINT64_MAX - now ? UINT64_MAX
                                                   : now + interval_ns;
    pact_handle h = pact_call_at(loop, when, cb, user);
    if (h > 0) {
        uint32_t idx;
        pact_handle_s *hs = pact_slab_from_handle(&loop->handles, h, &idx);
        hs->created_at = __builtin_return_address(0);
        hs->interval = interval_ns;
    }
    return h;
}

/* The live timer behind handle, for the calls that only timers take:
 * -ENOENT for a stale or cancelled handle, -EINVAL for a call_soon one. */
static int live_timer(pact_loop *loop, pact_handle handle, const char *func,
                      pact_handle_s **out)
{
    int r = pact__check_loop(loop, func);
    if (r)
        return r;
    uint32_t idx;
    pact_handle_s *h = pact_slab_from_handle(&loop->handles, handle, &idx);
    if (!h || (h->flags & PACT_HANDLEF_CANCELLED))
        return -ENOENT;
    if (!(h->flags & PACT_HANDLEF_TIMER))
        return pact__misuse(loop, -EINVAL, func,
                            "the handle is a pact_call_soon() callback, "
                            "not a timer");
    *out = h;
    return 0;
}

int pact_handle_set_interval(pact_loop *loop, pact_handle handle,
                             uint64_t interval_ns)
{
    /* NULL: live_timer sets it whenever it answers 0, which a release
     * build's gcc cannot see (it does not know pact__misuse never
     * answers 0) and warned about. */
    pact_handle_s *h = NULL;
    int r = live_timer(loop, handle, __func__, &h);
    if (r)
        return r;
    h->interval = interval_ns;
    return 0;
}

int pact_handle_set_ref(pact_loop *loop, pact_handle handle, int ref)
{
    pact_handle_s *h = NULL; /* see pact_handle_set_interval */
    int r = live_timer(loop, handle, __func__, &h);
    if (r)
        return r;
    if (!ref == !!(h->flags & PACT_HANDLEF_UNREF))
        return 0;
    /* Only a timer in the heap is counted; a running one is counted
     * again (or not) when it is re-armed. */
    if (h->state == PACT_HANDLE_TIMER)
        timer_count(loop, h, -1);
    if (ref)
        h->flags &= (uint8_t)~PACT_HANDLEF_UNREF;
    else
        h->flags |= PACT_HANDLEF_UNREF;
    if (h->state == PACT_HANDLE_TIMER)
        timer_count(loop, h, +1);
    return 0;
}

int64_t pact_handle_due(const pact_loop *loop, pact_handle handle)
{
    if (!loop)
        return -EINVAL;
    uint32_t idx;
    pact_handle_s *h = pact_slab_from_handle(&loop->handles, handle, &idx);
    if (!h || (h->flags & PACT_HANDLEF_CANCELLED))
        return -ENOENT;
    if (!(h->flags & PACT_HANDLEF_TIMER))
        return -EINVAL;
    return h->timer.when > INT64_MAX ? INT64_MAX : (int64_t)h->timer.when;
}

int pact_handle_cancel(pact_loop *loop, pact_handle handle)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    uint32_t idx;
    pact_handle_s *h = pact_slab_from_handle(&loop->handles, handle, &idx);
    if (!h || (h->flags & PACT_HANDLEF_CANCELLED))
        return -ENOENT;
    switch (h->state) {
    case PACT_HANDLE_READY:
        pact_list_remove(&h->ready.link);
        break;
    case PACT_HANDLE_TIMER:
        pact_heap_remove(&loop->timers, &h->timer);
        timer_count(loop, h, -1);
        break;
    default:
        /* Running now. A repeating timer's future runs are what a cancel
         * from its own callback is about: they are cancelled in time, and
         * the handle goes when the callback returns. */
        if (h->interval == 0)
            return -EALREADY;
        h->flags |= PACT_HANDLEF_CANCELLED;
        return 0;
    }
    handle_free(loop, h);
    return 0;
}

/* The deadline after `last` for a timer repeating every `interval`: the
 * first of last + k * interval (k >= 1) that is still ahead of now, so a
 * late loop skips the ticks it missed instead of running them back to
 * back, and the timer never drifts: its ticks stay on the grid of its
 * first deadline. */
static uint64_t next_deadline(uint64_t last, uint64_t interval, uint64_t now)
{
    if (last > UINT64_MAX - interval)
        return UINT64_MAX;
    uint64_t next = last + interval;
    if (next > now)
        return next;
    uint64_t missed = (now - last) / interval; /* >= 1 */
    if (missed >= (UINT64_MAX - last) / interval)
        return UINT64_MAX;
    return last + (missed + 1) * interval;
}

static void handle_run(pact_loop *loop, pact_handle_s *h)
{
    h->state = PACT_HANDLE_RUNNING;
    PACT_RUN_CALLBACK(loop, h->cb, "callback", h->cb(loop, h->user));
    /* The slab never moves entries, so h is still this handle even if the
     * callback scheduled more. */
    if (h->interval == 0 || (h->flags & PACT_HANDLEF_CANCELLED)) {
        handle_free(loop, h);
        return;
    }
    h->timer.when = next_deadline(h->timer.when, h->interval, pact_now());
    if (pact_heap_insert(&loop->timers, &h->timer) != 0) {
        pact__error(loop, -ENOMEM, "a repeating timer could not be re-armed "
                                   "(out of memory); it stops");
        handle_free(loop, h);
        return;
    }
    h->state = PACT_HANDLE_TIMER;
    timer_count(loop, h, +1);
}

int pact__handles_run_ready(pact_loop *loop)
{
    /* Only what is ready now: callbacks scheduled by these callbacks wait
     * for the next iteration, so I/O is never starved. */
    pact_list batch;
    pact_list_init(&batch);
    pact_list_splice(&batch, &loop->ready);
    int n = 0;
    pact_list *node;
    while ((node = pact_list_pop_front(&batch))) {
        pact_ready *r = pact_container_of(node, pact_ready, link);
        r->run(loop, r);
        n++;
    }
    return n;
}

int64_t pact__timers_next(pact_loop *loop)
{
    pact_heap_node *top = pact_heap_top(&loop->timers);
    if (!top)
        return -1;
    uint64_t now = pact_now();
    if (top->when <= now)
        return 0;
    uint64_t wait = top->when - now;
    return wait > INT64_MAX ? INT64_MAX : (int64_t)wait;
}

void pact__timers_run(pact_loop *loop)
{
    /* No timer (a server's common iteration): no clock reading. */
    if (!pact_heap_top(&loop->timers))
        return;
    uint64_t now = pact_now();
    /* Timers added by these callbacks wait for the next iteration, so a
     * timer that re-arms itself with delay 0 cannot spin this loop. */
    uint64_t seq_limit = loop->timers.next_seq;
    pact_heap_node *top;
    while ((top = pact_heap_top(&loop->timers)) && top->when <= now &&
           top->seq < seq_limit) {
        pact_heap_remove(&loop->timers, top);
        if (top->kind == PACT_TIMER_HANDLE) {
            pact_handle_s *h = pact_container_of(top, pact_handle_s, timer);
            timer_count(loop, h, -1);
            handle_run(loop, h);
        } else {
            pact__op_timer_fired(loop, top);
        }
    }
}

void pact__handles_drop_all(pact_loop *loop)
{
    /* An endpoint's node (connection_made, its final close) is no
     * callback to drop: it is the loop's promise to the endpoint's user
     * (docs/contract.md: connection_made first, connection_lost exactly
     * once), and an endpoint whose connection_made never ran would never
     * finish. It runs now; with the loop closing, whatever it settles
     * runs inline (endpoint.c), nothing is queued again. Only a close
     * whose resources outlived close_resources' deadline gets here with
     * any: before that, a queued node keeps its endpoint listed and the
     * loop iterating. Handles wait in `kept` for the walk below. */
    pact_list kept;
    pact_list_init(&kept);
    pact_list *node;
    while ((node = pact_list_pop_front(&loop->ready))) {
        pact_ready *r = pact_container_of(node, pact_ready, link);
        if (r->run == handle_run_ready)
            pact_list_push_back(&kept, node);
        else
            r->run(loop, r);
    }
    pact_list_splice(&loop->ready, &kept);
    for (uint32_t i = 0; i < loop->handles.capacity; i++) {
        pact_handle_s *h = pact_slab_at(&loop->handles, i);
        if (!(h->slab.gen & 1) || h->state == PACT_HANDLE_RUNNING)
            continue;
        if (loop->debug) {
            char where[256];
            pact__describe_address(h->created_at, where, sizeof where);
            pact__log(loop, "loop closed with a %s callback not run "
                            "(scheduled at %s)",
                      h->state == PACT_HANDLE_TIMER ? "timer" : "ready", where);
        }
        if (h->state == PACT_HANDLE_READY) {
            pact_list_remove(&h->ready.link);
        } else {
            pact_heap_remove(&loop->timers, &h->timer);
            timer_count(loop, h, -1);
        }
        handle_free(loop, h);
    }
}
