/* SPDX-License-Identifier: MIT */
/* pact_watch(): a persistent, level-triggered readiness watcher (asyncio's
 * add_reader / add_writer). Level-triggered re-reports, removal at once
 * (inside its own callback, and of a watcher whose readiness is already in
 * the same batch), changing the events, closed fds, loop close, leaks. */
#include <poll.h>
#include <sys/stat.h>

#include "helpers.h"

TestSuite(watch, .timeout = 60);

typedef struct watcher {
    pact_op op;
    int fd;
    int calls;           /* data callbacks */
    uint32_t last_events;
    uint32_t all_events;
    int finals;
    int64_t final_result;
    int read_per_call;   /* bytes to read per call, 0 = none */
    size_t bytes_read;
    /* what to do in the next data callback */
    int cancel_self;
    struct watcher *cancel_other;
    struct watcher *retarget_other;
    unsigned retarget_events;
    unsigned set_own_events;
    int results_of_cancel;
} watcher;

static void watch_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    watcher *w = user;
    if (!c->more) {
        w->finals++;
        w->final_result = c->result;
        cr_assert_null(c->data);
        return;
    }
    cr_assert_eq(w->finals, 0, "a data callback after the final one");
    cr_assert_gt(c->result, 0);
    w->calls++;
    w->last_events = (uint32_t)c->result;
    w->all_events |= (uint32_t)c->result;
    if (w->read_per_call) {
        char buf[64];
        ssize_t n = read(w->fd, buf, (size_t)w->read_per_call);
        if (n > 0)
            w->bytes_read += (size_t)n;
    }
    if (w->cancel_self) {
        w->cancel_self = 0;
        w->results_of_cancel = pact_op_cancel(loop, w->op);
    }
    if (w->cancel_other) {
        w->results_of_cancel = pact_op_cancel(loop, w->cancel_other->op);
        w->cancel_other = NULL;
    }
    if (w->retarget_other) {
        cr_assert_eq(pact_op_set_events(loop, w->retarget_other->op,
                                           w->retarget_events), 0);
        w->retarget_other = NULL;
    }
    if (w->set_own_events) {
        cr_assert_eq(pact_op_set_events(loop, w->op, w->set_own_events), 0);
        w->set_own_events = 0;
    }
}

static void watch_start(pact_loop *loop, watcher *w, int fd, unsigned events)
{
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->op = pact_watch(loop, fd, events, watch_cb, w);
    cr_assert_gt(w->op, 0, "pact_watch: %s", pact_strerror((int)w->op));
}

/* Runs n iterations that do not block for long. */
static void spin(pact_loop *loop, int n)
{
    for (int i = 0; i < n; i++)
        cr_assert_geq(pact_loop_run_once(loop, 5 * (int64_t)MS), 0);
}

/* A callback that reads one byte of ten is called ten times, once per
 * iteration, and not again once the socket is empty. */
Test(watch, a_partial_read_is_reported_again_until_the_data_is_gone)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    cr_assert_eq(write(sv[1], "0123456789", 10), 10);
    watcher w;
    watch_start(loop, &w, sv[0], POLLIN);
    w.read_per_call = 1;
    for (int i = 1; i <= 10; i++) {
        cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
        cr_assert_eq(w.calls, i, "iteration %d: %d calls", i, w.calls);
        cr_assert(w.last_events & POLLIN);
    }
    cr_assert_eq(w.bytes_read, 10);
    spin(loop, 5);
    cr_assert_eq(w.calls, 10, "called with nothing to read");
    /* More data: reported again. */
    cr_assert_eq(write(sv[1], "x", 1), 1);
    spin(loop, 3);
    cr_assert_eq(w.calls, 11);
    cr_assert_eq(pact_op_cancel(loop, w.op), 0);
    spin(loop, 2);
    cr_assert_eq(w.finals, 1);
    cr_assert_eq(w.final_result, -ECANCELED);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* A writer watch on a writable socket is called in every iteration. */
Test(watch, a_writable_socket_is_reported_every_iteration)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    watcher w;
    watch_start(loop, &w, sv[0], POLLOUT);
    for (int i = 1; i <= 5; i++) {
        cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
        cr_assert_eq(w.calls, i);
        cr_assert_eq(w.last_events, POLLOUT);
    }
    cr_assert_eq(pact_op_cancel(loop, w.op), 0);
    test_loop_free(loop);
    cr_assert_eq(w.finals, 1);
    cr_assert_eq(w.final_result, -ECANCELED);
    close(sv[0]);
    close(sv[1]);
}

/* Cancelled from inside its own first callback, with data still there:
 * never called with more = 1 again, the final completion once. */
Test(watch, removal_inside_its_own_callback_delivers_nothing_more)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    cr_assert_eq(write(sv[1], "data", 4), 4);
    watcher w;
    watch_start(loop, &w, sv[0], POLLIN);
    w.cancel_self = 1;
    spin(loop, 5);
    cr_assert_eq(w.calls, 1);
    cr_assert_eq(w.results_of_cancel, 0);
    cr_assert_eq(w.finals, 1);
    cr_assert_eq(w.final_result, -ECANCELED);
    /* The data is still in the socket. */
    char buf[8];
    cr_assert_eq(read(sv[0], buf, sizeof buf), 4);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* Two watchers whose fds are both ready before the wait: their readiness
 * arrives in one batch (one epoll_wait, one CQE batch). Whichever is
 * called first removes the other, which is then never called with data —
 * on two fds, and on one fd (a reader and a writer watcher). */
Test(watch, removing_a_watcher_whose_readiness_is_already_in_the_batch)
{
    for (int same_fd = 0; same_fd <= 1; same_fd++) {
        pact_loop *loop = test_loop_new();
        int a[2], b[2];
        make_socketpair(a);
        make_socketpair(b);
        cr_assert_eq(write(a[1], "a", 1), 1);
        cr_assert_eq(write(b[1], "b", 1), 1);
        watcher wa, wb;
        watch_start(loop, &wa, a[0], POLLIN);
        if (same_fd)
            watch_start(loop, &wb, a[0], POLLOUT);
        else
            watch_start(loop, &wb, b[0], POLLIN);
        wa.cancel_other = &wb;
        wb.cancel_other = &wa;
        cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
        cr_assert_eq(wa.calls + wb.calls, 1, "same_fd=%d: %d + %d calls",
                     same_fd, wa.calls, wb.calls);
        watcher *first = wa.calls ? &wa : &wb, *second = wa.calls ? &wb : &wa;
        cr_assert_eq(first->results_of_cancel, 0);
        spin(loop, 3);
        cr_assert_eq(second->calls, 0);
        cr_assert_eq(second->finals, 1);
        cr_assert_eq(second->final_result, -ECANCELED);
        cr_assert_eq(first->finals, 0);
        cr_assert_gt(first->calls, 1, "the survivor goes on being called");
        cr_assert_eq(pact_op_cancel(loop, first->op), 0);
        test_loop_free(loop);
        cr_assert_eq(first->finals, 1);
        close(a[0]);
        close(a[1]);
        close(b[0]);
        close(b[1]);
    }
}

/* pact_op_set_events changes what is watched at once: from reader to
 * writer and back, from inside its own callback, and for another watcher
 * whose (old) readiness is already in the batch — which is then not
 * delivered. */
Test(watch, set_events_takes_effect_at_once)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    watcher w;
    watch_start(loop, &w, sv[0], POLLIN); /* writable, not readable */
    spin(loop, 3);
    cr_assert_eq(w.calls, 0);
    cr_assert_eq(pact_op_set_events(loop, w.op, POLLOUT), 0);
    cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
    cr_assert_eq(w.calls, 1, "%d calls", w.calls);
    cr_assert_eq(w.last_events, POLLOUT);
    /* Back to POLLIN from inside the callback: no more POLLOUT. */
    w.set_own_events = POLLIN;
    spin(loop, 3);
    cr_assert_eq(w.calls, 2);
    cr_assert_eq(w.all_events, POLLOUT);
    cr_assert_eq(write(sv[1], "r", 1), 1);
    cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
    cr_assert_eq(w.calls, 3);
    cr_assert_eq(w.last_events, POLLIN);
    cr_assert_eq(pact_op_set_events(loop, w.op, POLLIN), 0); /* unchanged */
    /* Both: each call reports what is ready of the two. */
    cr_assert_eq(pact_op_set_events(loop, w.op, POLLIN | POLLOUT), 0);
    cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
    cr_assert_eq(w.last_events, POLLIN | POLLOUT);
    cr_assert_eq(pact_op_cancel(loop, w.op), 0);
    cr_assert_eq(pact_op_set_events(loop, w.op, POLLOUT), -EALREADY);

    /* Two writable sockets, both in one batch: whichever is called first
     * turns the other into a reader of an empty socket. */
    int t[2];
    make_socketpair(t);
    watcher x, y;
    watch_start(loop, &x, sv[0], POLLOUT);
    watch_start(loop, &y, t[0], POLLOUT);
    x.retarget_other = &y;
    x.retarget_events = POLLIN;
    y.retarget_other = &x;
    y.retarget_events = POLLIN;
    char drain[8];
    cr_assert_eq(read(sv[0], drain, sizeof drain), 1); /* empty again */
    cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
    cr_assert_eq(x.calls + y.calls, 1, "%d + %d", x.calls, y.calls);
    watcher *first = x.calls ? &x : &y, *second = x.calls ? &y : &x;
    spin(loop, 3);
    cr_assert_eq(second->calls, 0, "a POLLOUT reported before the change was delivered");
    cr_assert_gt(first->calls, 1);
    cr_assert_eq(pact_op_cancel(loop, x.op), 0);
    cr_assert_eq(pact_op_cancel(loop, y.op), 0);
    test_loop_free(loop);
    cr_assert_eq(w.finals + x.finals + y.finals, 3);
    close(sv[0]);
    close(sv[1]);
    close(t[0]);
    close(t[1]);
}

/* A new socket pair one end of which has the number of a socket just
 * closed: returns that end, *other the other one. */
static int socketpair_reusing(int number, int nv[2], int *other)
{
    make_socketpair(nv);
    int reused = nv[0] == number ? nv[0] : nv[1] == number ? nv[1] : -1;
    cr_assert_geq(reused, 0, "the number was not reused");
    *other = reused == nv[0] ? nv[1] : nv[0];
    return reused;
}

/* The asyncio pattern remove_reader(); sock.close(): the watcher is
 * cancelled, the fd closed at once, its number reused by a new socket with
 * a new watcher. The old watcher only completes (-ECANCELED, once), the new
 * one sees only its own socket, and the closed socket's peer sees the
 * close (nothing keeps the file open). */
Test(watch, cancel_then_close_then_reuse_the_number)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    watcher old;
    watch_start(loop, &old, sv[0], POLLIN);
    old.read_per_call = 8; /* unread bytes would make the close a reset */
    cr_assert_eq(write(sv[1], "old", 3), 3);
    cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
    cr_assert_eq(old.calls, 1);
    int number = sv[0];
    cr_assert_eq(pact_op_cancel(loop, old.op), 0);
    close(sv[0]);
    int nv[2], other;
    int reused = socketpair_reusing(number, nv, &other);
    watcher fresh;
    watch_start(loop, &fresh, reused, POLLIN);
    spin(loop, 3);
    cr_assert_eq(old.calls, 1);
    cr_assert_eq(old.finals, 1);
    cr_assert_eq(old.final_result, -ECANCELED);
    cr_assert_eq(fresh.calls, 0, "the new socket has no data");
    /* The old socket is closed for real: its peer reads end of file. */
    char buf[8];
    cr_assert_eq(read(sv[1], buf, sizeof buf), 0);
    cr_assert_eq(write(other, "new", 3), 3);
    cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
    cr_assert_eq(fresh.calls, 1);
    cr_assert_eq(pact_op_cancel(loop, fresh.op), 0);
    test_loop_free(loop);
    cr_assert_eq(fresh.finals, 1);
    close(sv[1]);
    close(nv[0]);
    close(nv[1]);
}

/* peer, the other end of a socket just closed, reads end of file (within
 * a second): nothing keeps the closed socket's file open. */
static void peer_sees_the_end(int peer)
{
    struct pollfd p = {.fd = peer, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 1000), 1, "the peer saw no end");
    char buf[8];
    cr_assert_eq(read(peer, buf, sizeof buf), 0);
}

/* asyncio allows closing a socket under a reader (a pending sock_recv,
 * an add_reader still registered): epoll forgets a closed file, so the
 * connection ends at once and the peer sees it. A live watcher must not
 * hold the file on either engine. The watcher itself stays, silent, and
 * completes exactly once when cancelled. */
Test(watch, an_fd_closed_under_a_live_watcher_ends_its_connection)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    watcher w;
    watch_start(loop, &w, sv[0], POLLIN);
    spin(loop, 2);
    close(sv[0]);
    peer_sees_the_end(sv[1]);
    spin(loop, 2);
    cr_assert_eq(w.calls, 0);
    int r = pact_op_cancel(loop, w.op);
    cr_assert(r == 0 || r == -ENOENT, "cancel: %s", pact_strerror(r));
    spin(loop, 3);
    cr_assert_eq(w.finals, 1);
    cr_assert(w.final_result == -ECANCELED || w.final_result == -EBADF,
              "final: %s", pact_strerror((int)w.final_result));
    test_loop_free(loop);
    close(sv[1]);
}

/* The same after the watcher was reported once (armed again for the next
 * readiness), and for a watcher of POLLOUT. */
Test(watch, an_fd_closed_after_a_report_ends_its_connection)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    watcher in, out;
    watch_start(loop, &in, sv[0], POLLIN);
    in.read_per_call = 8;
    cr_assert_eq(write(sv[1], "data", 4), 4);
    cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
    cr_assert_eq(in.calls, 1);
    spin(loop, 1);
    watch_start(loop, &out, sv[0], POLLOUT);
    spin(loop, 1);
    cr_assert_gt(out.calls, 0);
    cr_assert_eq(pact_op_cancel(loop, out.op), 0);
    close(sv[0]);
    peer_sees_the_end(sv[1]);
    cr_assert_eq(pact_op_cancel(loop, in.op), 0);
    test_loop_free(loop);
    cr_assert_eq(in.finals, 1);
    cr_assert_eq(out.finals, 1);
    close(sv[1]);
}

/* Two sockets, and the number of the closed one comes back for a third
 * socket: a watcher started on it watches the new file, whether the
 * watcher of the closed file was cancelled first or is still live (that
 * one watches the number too: on both engines it may be called for the
 * new file). */
static void reuse_the_number(int cancel_the_old_first)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    watcher old;
    watch_start(loop, &old, sv[0], POLLIN);
    spin(loop, 2);
    int number = sv[0];
    close(sv[0]);
    peer_sees_the_end(sv[1]);
    if (cancel_the_old_first)
        cr_assert_eq(pact_op_cancel(loop, old.op), 0);
    spin(loop, 1);
    int nv[2], other;
    int reused = socketpair_reusing(number, nv, &other);
    /* Two, started in one turn: each registers the number (on io_uring
     * both registrations are sent with one submission, and both find the
     * number's old file gone). */
    watcher fresh, also;
    watch_start(loop, &fresh, reused, POLLIN);
    watch_start(loop, &also, reused, POLLIN | POLLRDHUP);
    spin(loop, 2);
    cr_assert_eq(fresh.calls, 0, "the new socket has no data");
    cr_assert_eq(write(other, "new", 3), 3);
    for (int i = 0; i < 10 && !fresh.calls; i++)
        cr_assert_geq(pact_loop_run_once(loop, 100 * (int64_t)MS), 0);
    cr_assert_eq(fresh.calls, 1, "the watcher of the reused number was "
                                 "not called");
    cr_assert(fresh.last_events & POLLIN);
    cr_assert_eq(also.calls, 1);
    cr_assert_eq(pact_op_cancel(loop, fresh.op), 0);
    cr_assert_eq(pact_op_cancel(loop, also.op), 0);
    if (!cancel_the_old_first)
        cr_assert_eq(pact_op_cancel(loop, old.op), 0);
    test_loop_free(loop);
    cr_assert_eq(old.finals, 1);
    cr_assert_eq(fresh.finals, 1);
    cr_assert_eq(fresh.final_result, -ECANCELED);
    cr_assert_eq(also.finals, 1);
    cr_assert_eq(also.final_result, -ECANCELED);
    close(sv[1]);
    close(nv[0]);
    close(nv[1]);
}

Test(watch, a_watch_on_a_reused_number_after_the_old_one_was_cancelled)
{
    reuse_the_number(1);
}

Test(watch, a_watch_on_a_reused_number_while_the_old_one_is_live)
{
    reuse_the_number(0);
}

/* Closing the loop with watchers live — one being reported, one idle, one
 * already cancelled — completes each exactly once with -ECANCELED. */
Test(watch, loop_close_with_watchers_live_completes_each_once)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    cr_assert_eq(write(sv[1], "busy", 4), 4);
    watcher busy, idle, cancelled;
    watch_start(loop, &busy, sv[0], POLLIN);
    watch_start(loop, &idle, sv[1], POLLIN);
    watch_start(loop, &cancelled, sv[1], POLLOUT);
    spin(loop, 2);
    cr_assert_gt(busy.calls, 0);
    cr_assert_eq(idle.calls, 0);
    cr_assert_eq(pact_op_cancel(loop, cancelled.op), 0);
    test_loop_free(loop);
    watcher *all[] = {&busy, &idle, &cancelled};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(all[i]->finals, 1, "watcher %d", i);
        cr_assert_eq(all[i]->final_result, -ECANCELED, "watcher %d", i);
    }
    close(sv[0]);
    close(sv[1]);
}

/* A hung-up peer is reported (with POLLHUP or POLLRDHUP as the kernel
 * says) to a reader, every iteration, until it is cancelled. A deadline
 * ends a watch with -ETIMEDOUT. */
Test(watch, a_hang_up_is_reported_and_a_deadline_ends_it)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    watcher w;
    watch_start(loop, &w, sv[0], POLLIN | POLLRDHUP);
    cr_assert_eq(pact_op_set_timeout(loop, w.op, 200 * MS), 0);
    close(sv[1]);
    spin(loop, 3);
    cr_assert_geq(w.calls, 3);
    cr_assert(w.last_events & (POLLHUP | POLLRDHUP), "events 0x%x", w.last_events);
    uint64_t end = pact_now() + 5000 * MS;
    while (!w.finals && pact_now() < end)
        cr_assert_geq(pact_loop_run_once(loop, 5 * (int64_t)MS), 0);
    cr_assert_eq(w.finals, 1);
    cr_assert_eq(w.final_result, -ETIMEDOUT);
    test_loop_free(loop);
    close(sv[0]);
}

static void noop_op(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)c;
    (void)user;
}

Test(watch, bad_arguments_are_refused)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    cr_assert_eq(pact_watch(loop, sv[0], 0, noop_op, NULL), -EINVAL);
    cr_assert_eq(pact_watch(loop, sv[0], POLLERR, noop_op, NULL), -EINVAL);
    cr_assert_eq(pact_watch(loop, sv[0], POLLIN, NULL, NULL), -EINVAL);
    cr_assert_eq(pact_watch(loop, -1, POLLIN, noop_op, NULL), -EBADF);
    cr_assert_eq(pact_watch(loop, 999999, POLLIN, noop_op, NULL), -EBADF);
    cr_assert_eq(pact_watch(NULL, sv[0], POLLIN, noop_op, NULL), -EINVAL);
    char path[] = "/tmp/pact-watch-XXXXXX";
    int file = mkstemp(path);
    cr_assert_geq(file, 0);
    unlink(path);
    cr_assert_eq(pact_watch(loop, file, POLLIN, noop_op, NULL), -EPERM);
    close(file);
    pact_op poll = pact_poll(loop, sv[0], POLLOUT, noop_op, NULL);
    cr_assert_gt(poll, 0);
    cr_assert_eq(pact_op_set_events(loop, poll, POLLIN), -EINVAL);
    pact_op w = pact_watch(loop, sv[0], POLLIN, noop_op, NULL);
    cr_assert_gt(w, 0);
    cr_assert_eq(pact_op_set_events(loop, w, 0), -EINVAL);
    cr_assert_eq(pact_op_set_events(loop, w, 1u << 20), -EINVAL);
    cr_assert_eq(pact_op_cancel(loop, w), 0);
    cr_assert_eq(pact_op_cancel(loop, w), -EALREADY);
    cr_assert_eq(pact_op_set_events(loop, w, POLLOUT), -EALREADY);
    spin(loop, 2);
    cr_assert_eq(pact_op_cancel(loop, w), -ENOENT);
    cr_assert_eq(pact_op_set_events(loop, w, POLLOUT), -ENOENT);
    pact_loop_stats st;
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(pact_watch(loop, sv[0], POLLIN, noop_op, NULL), -ESHUTDOWN);
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    cr_assert_eq(st.ops_started, st.ops_completed);
    cr_assert_eq(st.stray_completions, 0);
    pact_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* 20000 watchers started, reported and cancelled: heap and fds flat. */
Test(watch, many_watchers_leak_nothing)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    watcher w;
    size_t heap_before = 0;
    int fds_before = 0;
    for (int round = 0; round < 20000; round++) {
        if (round == 1000) {
            heap_before = heap_bytes_in_use();
            fds_before = count_open_fds();
        }
        watch_start(loop, &w, sv[round & 1], POLLOUT);
        cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
        cr_assert_eq(w.calls, 1);
        cr_assert_eq(pact_op_cancel(loop, w.op), 0);
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
        if (!w.finals)
            cr_assert_geq(pact_loop_run_once(loop, 1000 * (int64_t)MS), 0);
        cr_assert_eq(w.finals, 1, "round %d", round);
    }
    size_t heap_after = heap_bytes_in_use();
    cr_assert_leq(heap_after, heap_before + HEAP_COUNT_NOISE,
                  "heap grew from %zu to %zu", heap_before, heap_after);
    cr_assert_eq(count_open_fds(), fds_before);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}
