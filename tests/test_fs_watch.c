/* SPDX-License-Identifier: MIT */
/* pact_fs_watch(): inotify events as data completions of one op, then
 * exactly one final completion — cancelled from outside, from inside its
 * callback, by loop close, or 0 when the watched path is gone — with no fd
 * left behind. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>

#include "helpers.h"

#define MAX_EV 32

static struct {
    char dir[64];
    int events, finals;
    uint32_t mask[MAX_EV];
    char name[MAX_EV][32];
    int64_t final;
    int after_final;
    int cancel_on;     /* cancel from the callback at this event (1-based) */
    int cancel_result;
    pact_op op;
} fw;

static void make_dir(void)
{
    snprintf(fw.dir, sizeof fw.dir, "/tmp/pact-fswatch-XXXXXX");
    cr_assert_not_null(mkdtemp(fw.dir));
}

static void path_in(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", fw.dir, name);
}

static void on_event(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)user;
    if (fw.finals)
        fw.after_final++;
    if (!c->more) {
        fw.finals++;
        fw.final = c->result;
        cr_assert_null(c->data);
        return;
    }
    cr_assert_gt(c->result, 0);
    const pact_fs_event *ev = c->data;
    cr_assert_not_null(ev);
    cr_assert_lt(fw.events, MAX_EV);
    fw.mask[fw.events] = ev->mask;
    snprintf(fw.name[fw.events], sizeof fw.name[0], "%s", ev->name ? ev->name : "");
    fw.events++;
    if (fw.events == fw.cancel_on)
        fw.cancel_result = pact_op_cancel(loop, fw.op);
}

static void touch_and_remove(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    char p[128];
    path_in(p, sizeof p, "a.txt");
    int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(unlink(p), 0);
    path_in(p, sizeof p, "b.txt");
    fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    close(fd);
    cr_assert_eq(unlink(p), 0);
}

static void stop_cb(pact_loop *loop, void *user)
{
    (void)user;
    pact_loop_stop(loop);
}

Test(fs_watch, events_arrive_in_order_and_a_cancel_from_the_callback_ends_it)
{
    pact_loop *loop = test_loop_new();
    memset(&fw, 0, sizeof fw);
    make_dir();
    int fds = count_open_fds();
    fw.cancel_on = 3; /* create a, delete a, create b: cancel there */
    fw.op = pact_fs_watch(loop, fw.dir, IN_CREATE | IN_DELETE, on_event, NULL);
    cr_assert_gt(fw.op, 0, "%s", pact_strerror((int)fw.op));
    pact_call_later(loop, 5 * MS, touch_and_remove, NULL);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(fw.finals, 1);
    cr_assert_eq(fw.final, -ECANCELED);
    cr_assert_eq(fw.after_final, 0);
    cr_assert_eq(fw.cancel_result, 0);
    cr_assert_eq(fw.events, 3, "nothing delivered after the cancel");
    cr_assert(fw.mask[0] & IN_CREATE);
    cr_assert_str_eq(fw.name[0], "a.txt");
    cr_assert(fw.mask[1] & IN_DELETE);
    cr_assert_str_eq(fw.name[1], "a.txt");
    cr_assert(fw.mask[2] & IN_CREATE);
    cr_assert_str_eq(fw.name[2], "b.txt");
    cr_assert_eq(pact_op_cancel(loop, fw.op), -ENOENT, "stale after");
    cr_assert_eq(count_open_fds(), fds, "the inotify fd is closed");
    test_loop_free(loop);
    rmdir(fw.dir);
}

static void cancel_watch(pact_loop *loop, void *user)
{
    (void)user;
    fw.cancel_result = pact_op_cancel(loop, fw.op);
}

Test(fs_watch, a_cancel_from_outside_completes_it_once)
{
    pact_loop *loop = test_loop_new();
    memset(&fw, 0, sizeof fw);
    make_dir();
    int fds = count_open_fds();
    fw.op = pact_fs_watch(loop, fw.dir, IN_CREATE, on_event, NULL);
    cr_assert_gt(fw.op, 0);
    pact_call_later(loop, 5 * MS, cancel_watch, NULL);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(fw.cancel_result, 0);
    cr_assert_eq(fw.finals, 1);
    cr_assert_eq(fw.final, -ECANCELED);
    cr_assert_eq(fw.events, 0);
    cr_assert_eq(count_open_fds(), fds);
    test_loop_free(loop);
    rmdir(fw.dir);
}

/* The race §1 is about: the kernel has already reported the event (the
 * file exists, the watch's poll has completed in the kernel) but the loop
 * has not handled that report yet when the cancel comes. After
 * pact_op_cancel returns no event may be delivered, and the op still ends
 * exactly once. Both halves of the race are taken: the event reported
 * before the cancel, and several events queued. */
Test(fs_watch, a_cancel_after_the_kernel_reported_an_event_delivers_no_event)
{
    for (int queued = 1; queued <= 3; queued++) {
        pact_loop *loop = test_loop_new();
        memset(&fw, 0, sizeof fw);
        make_dir();
        int fds = count_open_fds();
        fw.op = pact_fs_watch(loop, fw.dir, IN_CREATE, on_event, NULL);
        cr_assert_gt(fw.op, 0);
        /* Hand the watch's poll to the kernel, then make it ready. */
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
        for (int i = 0; i < queued; i++) {
            char p[128], name[16];
            snprintf(name, sizeof name, "f%d", i);
            path_in(p, sizeof p, name);
            int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
            cr_assert_geq(fd, 0);
            close(fd);
            cr_assert_eq(unlink(p), 0);
        }
        struct timespec settle = {0, 5 * 1000 * 1000};
        nanosleep(&settle, NULL); /* the poll's completion is in the ring */
        cr_assert_eq(pact_op_cancel(loop, fw.op), 0);
        cr_assert_eq(pact_loop_run(loop), 0);
        cr_assert_eq(fw.events, 0, "an event after the cancel returned");
        cr_assert_eq(fw.finals, 1);
        cr_assert_eq(fw.final, -ECANCELED);
        cr_assert_eq(fw.after_final, 0);
        cr_assert_eq(count_open_fds(), fds, "the inotify fd is closed");
        test_loop_free(loop);
        rmdir(fw.dir);
    }
}

static void remove_file(pact_loop *loop, void *user)
{
    (void)loop;
    cr_assert_eq(unlink(user), 0);
}

Test(fs_watch, the_watched_path_going_away_ends_it_with_0)
{
    pact_loop *loop = test_loop_new();
    memset(&fw, 0, sizeof fw);
    make_dir();
    char p[128];
    path_in(p, sizeof p, "watched");
    int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    fw.op = pact_fs_watch(loop, p, IN_DELETE_SELF, on_event, NULL);
    cr_assert_gt(fw.op, 0);
    pact_call_later(loop, 5 * MS, remove_file, p);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(fw.finals, 1);
    cr_assert_eq(fw.final, 0);
    cr_assert_eq(fw.events, 1);
    cr_assert(fw.mask[0] & IN_DELETE_SELF);
    cr_assert_str_eq(fw.name[0], "", "the watched path itself has no name");
    test_loop_free(loop);
    rmdir(fw.dir);
}

Test(fs_watch, loop_close_completes_a_pending_watch_once)
{
    int fds = count_open_fds(); /* before the loop's own fds */
    pact_loop *loop = test_loop_new();
    memset(&fw, 0, sizeof fw);
    make_dir();
    fw.op = pact_fs_watch(loop, fw.dir, IN_CREATE, on_event, NULL);
    cr_assert_gt(fw.op, 0);
    pact_call_later(loop, 5 * MS, stop_cb, NULL);
    pact_loop_run(loop);
    cr_assert_eq(fw.finals, 0);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(fw.finals, 1);
    cr_assert_eq(fw.final, -ECANCELED);
    pact_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds, "the inotify fd is closed");
    rmdir(fw.dir);
}

Test(fs_watch, an_unreferenced_watch_does_not_keep_run_going)
{
    pact_loop *loop = test_loop_new();
    memset(&fw, 0, sizeof fw);
    make_dir();
    fw.op = pact_fs_watch(loop, fw.dir, IN_CREATE, on_event, NULL);
    cr_assert_eq(pact_op_set_ref(loop, fw.op, 0), 0);
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(fw.finals, 0);
    test_loop_free(loop);
    cr_assert_eq(fw.finals, 1, "closed once by the loop's close");
    rmdir(fw.dir);
}

Test(fs_watch, bad_input_is_refused_and_leaves_nothing)
{
    pact_loop *loop = test_loop_new();
    int fds = count_open_fds();
    cr_assert_eq(pact_fs_watch(loop, "/nonexistent/pact", IN_CREATE, on_event, NULL), -ENOENT);
    cr_assert_eq(pact_fs_watch(loop, "/tmp", 0, on_event, NULL), -EINVAL);
    cr_assert_eq(pact_fs_watch(loop, "/tmp", IN_CREATE, NULL, NULL), -EINVAL);
    cr_assert_eq(pact_fs_watch(loop, NULL, IN_CREATE, on_event, NULL), -EINVAL);
    cr_assert_eq(pact_fs_watch(NULL, "/tmp", IN_CREATE, on_event, NULL), -EINVAL);
    cr_assert_eq(pact_fs_watch(loop, "/etc/hostname", IN_CREATE | IN_ONLYDIR, on_event, NULL),
                 -ENOTDIR);
    cr_assert_eq(count_open_fds(), fds);
    cr_assert_eq(pact_loop_alive(loop), 0);
    test_loop_free(loop);
}
