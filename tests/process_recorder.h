/* SPDX-License-Identifier: MIT */
/* A recording subprocess protocol for the process suites (tests/test_process.c
 * on Linux, tests/win/test_process.c on Windows): it checks the order
 * docs/contract.md §6 promises (connection_made first, each pipe lost
 * once, process_exited once, connection_lost last and nothing after it)
 * and keeps what arrived; options pause stdout every so many bytes and
 * call kill, write or close from the callbacks. Include it after the
 * suite's helpers.h (each system has its own). */
#ifndef PACT_TEST_PROCESS_RECORDER_H
#define PACT_TEST_PROCESS_RECORDER_H

#include <signal.h>
#include <string.h>

typedef struct rec {
    pact_process *p;
    int seq;
    int made, exited, lost;  /* sequence numbers, 0 = not yet */
    int pipe_lost[3];        /* sequence numbers */
    int pipe_err[3];
    int after_lost;          /* callbacks after connection_lost: must be 0 */
    int returncode;          /* read in process_exited */
    char out[3][4096];       /* the first bytes of fd 1 and 2 */
    size_t len[3];           /* bytes received per fd */
    uint64_t nonzero;        /* bytes that were not '\0' (large output) */
    /* Flow control on stdout: pause after this many bytes per burst. */
    size_t pause_every;
    size_t since_pause;
    uint64_t pauses;
    /* Things to do in callbacks. */
    int kill_in_exited;      /* call kill in process_exited: expect -ESRCH */
    int kill_result;
    int kill_in_lost_result;
    int close_in_lost_result; /* pact_process_close in connection_lost */
    int write_in_exited;     /* write 1 MiB to stdin in process_exited */
    int write_result;
} rec;

static void on_made(pact_process *p, void *user)
{
    rec *r = user;
    cr_assert_eq(r->made, 0, "connection_made twice");
    cr_assert_eq(r->lost, 0);
    cr_assert_eq(r->exited, 0, "process_exited before connection_made");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(r->pipe_lost[i], 0, "pipe lost before connection_made");
    r->p = p;
    r->made = ++r->seq;
}

static void resume_cb(pact_loop *loop, void *user)
{
    (void)loop;
    rec *r = user;
    pact_transport *t = pact_process_pipe(r->p, 1);
    if (t)
        cr_assert_eq(pact_transport_resume_reading(t), 0);
}

static void on_data(pact_process *p, int fd, const void *data, size_t len,
                    void *user)
{
    rec *r = user;
    cr_assert(r->made, "data before connection_made");
    cr_assert(fd == 1 || fd == 2, "data on fd %d", fd);
    cr_assert_eq(r->pipe_lost[fd], 0, "data after its pipe was lost");
    if (r->lost)
        r->after_lost++;
    size_t room = sizeof r->out[fd] - 1 - (r->len[fd] < sizeof r->out[fd] - 1
                                               ? r->len[fd]
                                               : sizeof r->out[fd] - 1);
    size_t n = len < room ? len : room;
    memcpy(r->out[fd] + r->len[fd], data, n);
    r->len[fd] += len;
    const char *d = data;
    for (size_t i = 0; i < len; i++)
        r->nonzero += d[i] != 0;
    if (r->pause_every && fd == 1) {
        r->since_pause += len;
        if (r->since_pause >= r->pause_every) {
            r->since_pause = 0;
            pact_transport *t = pact_process_pipe(p, 1);
            cr_assert_not_null(t);
            cr_assert_eq(pact_transport_pause_reading(t), 0);
            r->pauses++;
            cr_assert_gt(pact_call_later(pact_transport_loop(t), 1 * MS,
                                         resume_cb, r), 0);
        }
    }
}

static void on_pipe_lost(pact_process *p, int fd, int err, void *user)
{
    (void)p;
    rec *r = user;
    cr_assert(r->made, "pipe lost before connection_made");
    cr_assert(fd >= 0 && fd <= 2);
    cr_assert_eq(r->pipe_lost[fd], 0, "pipe %d lost twice", fd);
    if (r->lost)
        r->after_lost++;
    r->pipe_lost[fd] = ++r->seq;
    r->pipe_err[fd] = err;
}

static void on_exited(pact_process *p, void *user)
{
    rec *r = user;
    cr_assert(r->made, "exited before connection_made");
    cr_assert_eq(r->exited, 0, "process_exited twice");
    if (r->lost)
        r->after_lost++;
    r->exited = ++r->seq;
    cr_assert_eq(pact_process_returncode(p, &r->returncode), 0);
    if (r->kill_in_exited)
        r->kill_result = pact_process_kill(p);
    if (r->write_in_exited) {
        static char big[1 << 20];
        r->write_result = pact_process_write(p, big, sizeof big);
    }
}

static void on_lost(pact_process *p, void *user)
{
    rec *r = user;
    cr_assert(r->made && r->exited, "connection_lost before exit");
    cr_assert_eq(r->lost, 0, "connection_lost twice");
    int rc;
    cr_assert_eq(pact_process_returncode(p, &rc), 0);
    cr_assert_eq(rc, r->returncode);
    r->kill_in_lost_result = pact_process_send_signal(p, SIGTERM);
    /* Nothing is left to close: -EALREADY, whether the process was
     * closed or ended on its own, as a transport answers there. */
    r->close_in_lost_result = pact_process_close(p);
    r->lost = ++r->seq;
}

static const pact_subprocess_protocol rec_proto = {
    .connection_made = on_made,
    .pipe_data_received = on_data,
    .pipe_connection_lost = on_pipe_lost,
    .process_exited = on_exited,
    .connection_lost = on_lost,
};

/* Checks connection_lost came last, after every pipe was lost. */
static void assert_finished(const rec *r, const pact_process_options *o)
{
    cr_assert(r->lost, "connection_lost never came");
    cr_assert_eq(r->after_lost, 0);
    cr_assert_gt(r->exited, r->made);
    cr_assert_gt(r->lost, r->exited);
    for (int i = 0; i < 3; i++) {
        if (o->stdio[i].kind == PACT_STDIO_PIPE) {
            cr_assert_gt(r->pipe_lost[i], r->made, "pipe %d never lost", i);
            cr_assert_lt(r->pipe_lost[i], r->lost);
        } else {
            cr_assert_eq(r->pipe_lost[i], 0);
        }
    }
}

/* pact_process_spawn for a child the test needs running. -EAGAIN is a
 * child the system could not make now, none of whose code ran: Wine now
 * and then ends a new process before it runs, when the process cannot map
 * its shared user data (docs/windows.md: once in 8000 starts here).
 * The test is about the child that runs, so that one start is made
 * again, at most twice, and said in the log; the failed attempt must have
 * left *out alone. Every other error, and a third -EAGAIN, is the
 * caller's to fail on. Windows only: on Linux -EAGAIN is fork's (a process
 * limit reached), which a test must see. tests/mini/criterion/criterion.h
 * starts its own test processes again after the same loss. */
static int spawn_started(pact_loop *loop, pact_process_options *o,
                         const pact_subprocess_protocol *proto, void *user,
                         pact_process **out)
{
#ifdef _WIN32
    for (int tries = 1;; tries++) {
        pact_process *p = (pact_process *)0x1;
        int e = pact_process_spawn(loop, o, proto, user, &p);
        if (e == 0)
            *out = p;
        if (e != -EAGAIN || tries == 3)
            return e;
        cr_assert_eq(p, (pact_process *)0x1, "*out set on failure");
        cr_log_warn("spawn of %s: %s (try %d): the system made no process; "
                    "starting it again", o->argv[0], pact_strerror(e), tries);
    }
#else
    return pact_process_spawn(loop, o, proto, user, out);
#endif
}

static pact_process *spawn(pact_loop *loop, pact_process_options *o, rec *r)
{
    pact_process *p = NULL;
    int e = spawn_started(loop, o, &rec_proto, r, &p);
    cr_assert_eq(e, 0, "spawn: %s", pact_strerror(e));
    cr_assert_not_null(p);
    cr_assert_gt(pact_process_pid(p), 0);
    return p;
}

/* A spawn that must fail: its error, after checking that *out was left
 * alone and no callback came. */
static int spawn_refused(pact_loop *loop, pact_process_options *o)
{
    rec r = {0};
    pact_process *p = (pact_process *)0x1;
    int e = pact_process_spawn(loop, o, &rec_proto, &r, &p);
    cr_assert_eq(p, (pact_process *)0x1, "*out set on failure");
    pact_loop_run_once(loop, 0);
    cr_assert_eq(r.made, 0, "callbacks after a failed spawn");
    return e;
}

static void set_stdio(pact_process_options *o, pact_stdio_kind in,
                      pact_stdio_kind out, pact_stdio_kind err)
{
    o->stdio[0].kind = in;
    o->stdio[1].kind = out;
    o->stdio[2].kind = err;
}

/* The recorder of an interactive child (a line echoed back per line
 * written): after the first line it writes "second\n", after the second
 * it closes stdin. */
typedef struct chat {
    rec r;
    int lines;
} chat;

static void chat_data(pact_process *p, int fd, const void *data, size_t len,
                      void *user)
{
    chat *c = user;
    on_data(p, fd, data, len, &c->r);
    if (memchr(data, '\n', len)) {
        c->lines++;
        if (c->lines == 1)
            cr_assert_eq(pact_process_write(p, "second\n", 7), 0);
        else
            cr_assert_eq(pact_process_write_eof(p), 0);
    }
}

static void chat_made(pact_process *p, void *u) { on_made(p, &((chat *)u)->r); }
static void chat_pipe_lost(pact_process *p, int fd, int e, void *u)
{
    on_pipe_lost(p, fd, e, &((chat *)u)->r);
}
static void chat_exited(pact_process *p, void *u) { on_exited(p, &((chat *)u)->r); }
static void chat_lost(pact_process *p, void *u) { on_lost(p, &((chat *)u)->r); }
static const pact_subprocess_protocol chat_proto = {
    chat_made, chat_data, chat_pipe_lost, chat_exited, chat_lost};

/* One pact_process_wait's completions; wait_in_exited, a process_exited
 * that starts one into user (a waited). */
typedef struct waited {
    int calls;
    int64_t result;
} waited;

static void wait_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    waited *w = user;
    w->calls++;
    w->result = c->result;
}

static void wait_in_exited(pact_process *p, void *user)
{
    waited *w = user;
    cr_assert_gt(pact_process_wait(p, wait_cb, w), 0);
}

#endif
