/* SPDX-License-Identifier: MIT */
/* pact_fs_watch(): file-system change notification on inotify, as one
 * long-lived operation (PACT_OP_CUSTOM) that delivers each event as a
 * data completion (more = 1) and ends once: cancelled, the watched path
 * gone (IN_IGNORED), or an error. Each watch has its own inotify fd, read
 * when a pact_poll() on it says it is readable, so both engines run it the
 * same way. The poll is unreferenced: only the watch op itself keeps the
 * loop alive (pact_op_set_ref applies to it). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "loop.h"

typedef struct fs_watch {
    pact_op op;      /* the user's op */
    int ifd;         /* inotify fd, read non-blocking */
    pact_op poll_op; /* 0 while none is in flight */
    int cancelled;   /* custom_cancel ran: end with -ECANCELED */
    /* inotify_event is variable-sized; one read returns whole events. */
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
} fs_watch;

static void watch_poll_done(pact_loop *loop, const pact_completion *c,
                            void *user);

/* Ends the op with result (its final completion) and frees the watch. */
static void watch_finish(pact_loop *loop, fs_watch *w, int64_t result)
{
    uint32_t idx;
    pact_op_s *op = pact_slab_from_handle(&loop->ops, w->op, &idx);
    close(w->ifd);
    if (op)
        pact__op_defer(loop, op, result);
    free(w);
}

static int watch_arm(pact_loop *loop, fs_watch *w)
{
    pact_op p = pact_poll(loop, w->ifd, POLLIN, watch_poll_done, w);
    if (p < 0)
        return (int)p;
    w->poll_op = p;
    pact_op_set_ref(loop, p, 0);
    return 0;
}

/* Reads what inotify has and delivers each event; 1 if the watched path
 * is gone (IN_IGNORED), 0 when the fd is drained, or a negative errno. */
static int watch_read(pact_loop *loop, fs_watch *w)
{
    for (;;) {
        ssize_t n = read(w->ifd, w->buf, sizeof w->buf);
        if (n < 0)
            return errno == EAGAIN ? 0 : -errno;
        int gone = 0;
        for (ssize_t off = 0; off < n;) {
            const struct inotify_event *ev =
                (const struct inotify_event *)(w->buf + off);
            off += (ssize_t)(sizeof *ev + ev->len);
            if (ev->mask & IN_IGNORED) {
                gone = 1;
                continue;
            }
            if (w->cancelled)
                continue; /* cancelled from a callback: nothing after it */
            pact_fs_event fe = {
                .mask = ev->mask,
                .cookie = ev->cookie,
                .name = ev->len ? ev->name : NULL,
            };
            uint32_t idx;
            pact_op_s *op = pact_slab_from_handle(&loop->ops, w->op, &idx);
            pact__op_deliver(loop, op, &fe, (int64_t)sizeof fe);
        }
        if (gone)
            return 1;
    }
}

static void watch_poll_done(pact_loop *loop, const pact_completion *c,
                            void *user)
{
    fs_watch *w = user;
    w->poll_op = 0;
    if (w->cancelled) {
        watch_finish(loop, w, -ECANCELED);
        return;
    }
    if (c->result < 0) {
        /* -ECANCELED here: the loop is closing and cancelled the poll. */
        watch_finish(loop, w, c->result);
        return;
    }
    int r = watch_read(loop, w);
    if (w->cancelled) {
        watch_finish(loop, w, -ECANCELED);
        return;
    }
    if (r != 0) {
        /* 1: the path is gone, the watch ends normally with 0. */
        watch_finish(loop, w, r == 1 ? 0 : r);
        return;
    }
    r = watch_arm(loop, w);
    if (r < 0) /* -ESHUTDOWN once the loop is closing */
        watch_finish(loop, w, r == -ESHUTDOWN ? -ECANCELED : r);
}

static void watch_cancel(pact_loop *loop, pact_op_s *op)
{
    fs_watch *w = op->buf;
    w->cancelled = 1;
    /* From inside an event callback there is no poll in flight: the read
     * loop sees the flag and ends the op. */
    if (w->poll_op)
        pact_op_cancel(loop, w->poll_op);
}

pact_op pact_fs_watch(pact_loop *loop, const char *path, uint32_t events,
                      pact_op_cb cb, void *user)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (!cb || !path)
        return PACT_MISUSE(loop, -EINVAL, "callback or path is NULL");
    if (events == 0 || (events & ~(uint32_t)(IN_ALL_EVENTS | IN_ONLYDIR |
                                             IN_DONT_FOLLOW | IN_EXCL_UNLINK)))
        return PACT_MISUSE(loop, -EINVAL, "events: 0 or not IN_* event bits");
    fs_watch *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->ifd < 0) {
        r = -errno;
        free(w);
        return r;
    }
    if (inotify_add_watch(w->ifd, path, events) < 0) {
        r = -errno;
        close(w->ifd);
        free(w);
        return r;
    }
    pact_op_s *op = pact__op_new(loop, PACT_OP_CUSTOM, -1, cb, user, &r);
    if (!op) {
        close(w->ifd);
        free(w);
        return r;
    }
    op->custom_cancel = watch_cancel;
    op->buf = w;
    r = watch_arm(loop, w);
    if (r < 0) {
        pact__op_release(loop, op);
        close(w->ifd);
        free(w);
        return r;
    }
    w->op = pact__op_start_custom(loop, op, __builtin_return_address(0));
    return w->op;
}
