/* SPDX-License-Identifier: MIT */
/* Subprocesses: asyncio's subprocess transport/protocol
 * (base_subprocess.py) on top of the system's spawn and exit watch
 * (src/unix/process.c, src/win/process.c), with the lessons of its bugs
 * built in, the same on every system:
 *
 * - Protocol order (docs/contract.md §6): connection_made first —
 *   events that happen before it (a child that exits at once) are held and
 *   replayed after it — then pipe data, process_exited once, and
 *   connection_lost last, once the process has exited AND every pipe is
 *   closed (_try_finish). Waiters are woken at the exit, not at
 *   connection_lost, so a grandchild that keeps a pipe open cannot hold
 *   them (gh-119710).
 * - A failed spawn returns its errno synchronously and leaves nothing
 *   behind (docs/contract.md §7): that is the system half's promise.
 * - Signals after the exit (or close) answer -ESRCH, never reaching a
 *   recycled pid (CPython bpo-23347).
 * - close() kills a child that still runs and never one that has exited
 *   and merely is not reaped yet; its exit is still reported. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"
#include "subprocess.h"
#include "stream.h"

#ifndef SIGKILL
#define SIGKILL 9 /* Windows' CRT has no SIGKILL: pact_process_kill's name */
#endif

/* ---- the pipes' internal protocol ------------------------------------------ */

static void pipe_data(pact_transport *t, const void *data, size_t len,
                      void *arg)
{
    (void)t;
    pact_pipe_slot *s = arg;
    pact_process *p = s->p;
    /* Reading starts in the pipe's connection_made, which runs after the
     * process's (scheduled first), so data never precedes it. */
    if (p->proto->pipe_data_received)
        p->proto->pipe_data_received(p, s->fd, data, len, p->user);
}

static void pipe_lost(pact_transport *t, int err, void *arg)
{
    (void)t;
    pact_pipe_slot *s = arg;
    pact_process *p = s->p;
    s->t = NULL;
    s->lost = 1;
    p->pipes_open--;
    if (!p->ep.made) {
        s->lost_held = 1;
        s->lost_err = err;
        return;
    }
    if (p->proto->pipe_connection_lost)
        p->proto->pipe_connection_lost(p, s->fd, err, p->user);
    pact__endpoint_settle(&p->ep);
}

static const pact_protocol pipe_protocol = {
    .data_received = pipe_data,
    .connection_lost = pipe_lost,
};

/* A pipe transport orphaned by a spawn that failed after it was made. */
static const pact_protocol orphan_protocol = {0};

/* ---- exit, finish ---------------------------------------------------------- */

/* process_exited, once, after connection_made; then connection_lost once
 * every pipe is closed too (the endpoint's final close). */
static void report_exit(pact_process *p)
{
    if (p->exit_reported)
        return;
    p->exit_reported = 1;
    p->ep.closing = 1;
    if (p->proto->process_exited)
        p->proto->process_exited(p, p->user);
    pact__endpoint_settle(&p->ep);
}

/* What a pact_process_wait() callback gets: the returncode. On Windows
 * it is a 32-bit exit code, given unsigned, so that a code such as
 * 0xC0000005 (an NTSTATUS, negative as an int) is never read as a
 * -ECANCELED or -ETIMEDOUT. */
static int64_t wait_result(const pact_process *p)
{
#ifdef _WIN32
    return (int64_t)(uint32_t)p->returncode;
#else
    return p->returncode;
#endif
}

void pact__process_exited(pact_process *p, int returncode)
{
    p->exited = 1;
    p->returncode = returncode;
    pact_list *n;
    while ((n = pact_list_pop_front(&p->waiters))) {
        pact_op_s *op = pact_container_of(n, pact_op_s, link);
        pact_list_init(&op->link);
        pact__op_defer(p->ep.loop, op, wait_result(p));
    }
    if (p->ep.made)
        report_exit(p);
}

static int process_busy(const pact_endpoint *e)
{
    return pact_container_of(e, pact_process, ep)->pipes_open > 0;
}

static void process_lost(pact_endpoint *e)
{
    pact_process *p = pact_container_of(e, pact_process, ep);
    if (p->proto->connection_lost)
        p->proto->connection_lost(p, p->user);
    pact__process_os_release(p);
}

static void process_free(pact_endpoint *e)
{
    free(pact_container_of(e, pact_process, ep));
}

static void process_force_close(pact_endpoint *e)
{
    pact_process_close(pact_container_of(e, pact_process, ep));
}

/* pact_process_set_ref(): the wait for its exit and its pipes follow
 * ref (a pipe made later by spawn does not exist: pipes are made with
 * the process). */
static void process_set_ref(pact_endpoint *e, int ref)
{
    pact_process *p = pact_container_of(e, pact_process, ep);
    if (p->exit_op)
        pact_op_set_ref(e->loop, p->exit_op, ref);
    for (int i = 0; i < 3; i++)
        if (p->pipes[i].t && !p->pipes[i].lost)
            pact__endpoint_set_ref(&p->pipes[i].t->ep, ref);
}

#ifndef _WIN32
/* A forked child frees the loop it inherited (endpoint.h): its copy of
 * the pidfd closed (the child process is the parent's to wait for), the
 * memory freed. Its pipes are endpoints of their own. */
static void process_forget(pact_endpoint *e)
{
    pact_process *p = pact_container_of(e, pact_process, ep);
    pact__process_os_release(p);
    process_free(e);
}
#endif

static const pact_endpoint_ops process_ops = {
    PACT_ENDPOINT_KIND("process"),
    .force_close = process_force_close,
    .busy = process_busy,
    .lost = process_lost,
    .free = process_free,
    .set_ref = process_set_ref,
#ifndef _WIN32
    .forget = process_forget,
#endif
};

static void process_made(pact_loop *loop, void *arg)
{
    (void)loop;
    pact_process *p = arg;
    p->ep.made = 1;
    if (p->proto->connection_made)
        p->proto->connection_made(p, p->user);
    /* Replay what happened before connection_made, in order. */
    for (int i = 0; i < 3; i++) {
        pact_pipe_slot *s = &p->pipes[i];
        if (s->lost_held) {
            s->lost_held = 0;
            if (p->proto->pipe_connection_lost)
                p->proto->pipe_connection_lost(p, s->fd, s->lost_err, p->user);
        }
    }
    if (p->exited)
        report_exit(p);
}

/* ---- spawning ---------------------------------------------------------------- */

static int check_options(pact_loop *loop, const pact_process_options *o)
{
    if (!o || !o->argv || !o->argv[0])
        return PACT_MISUSE(loop, -EINVAL, "options or argv[0] is NULL");
    if (!(o->file ? o->file : o->argv[0])[0])
        return PACT_MISUSE(loop, -ENOENT, "the program name is empty");
    for (int i = 0; i < 3; i++) {
        pact_stdio_kind k = o->stdio[i].kind;
        if ((int)k < 0 || k > PACT_STDIO_STDOUT ||
            (k == PACT_STDIO_STDOUT && i != 2))
            return PACT_MISUSE(loop, -EINVAL,
                               "bad stdio kind (STDOUT is for stderr only)");
        if (k == PACT_STDIO_FD && o->stdio[i].fd < 0)
            return PACT_MISUSE(loop, -EBADF, "stdio fd is negative");
    }
    return 0;
}

int pact_process_spawn(pact_loop *loop, const pact_process_options *opts,
                       const pact_subprocess_protocol *proto, void *user,
                       pact_process **out)
{
    void *created_at = __builtin_return_address(0);
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (!proto || !out)
        return PACT_MISUSE(loop, -EINVAL, "protocol or out is NULL");
    pact_process_options known;
    pact_process_options_init(&known);
    if (opts && (r = pact__options_read(&known, sizeof known,
                                        PACT__PROCESS_OPTIONS_V1, opts)) < 0)
        return PACT_MISUSE(loop, r, "options not initialised or too new (docs/abi.md)");
    if (opts)
        opts = &known;
    r = check_options(loop, opts);
    if (r)
        return r;

    pact_process *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    int parent_end[3] = {-1, -1, -1};
    r = pact__process_os_spawn(loop, opts, p, parent_end);
    if (r < 0) {
        free(p);
        return r;
    }
    pact__endpoint_init(&p->ep, loop, &process_ops);
    p->proto = proto;
    p->user = user;
    pact_list_init(&p->waiters);
    /* connection_made is scheduled before the pipes' own, so it runs
     * before any pipe can read (or be lost). */
    pact_handle made = pact_call_soon(loop, process_made, p);
    if (made < 0) {
        r = (int)made;
        goto fail_running;
    }
    for (int i = 0; i < 3; i++) {
        pact_pipe_slot *s = &p->pipes[i];
        s->p = p;
        s->fd = i;
        if (parent_end[i] < 0)
            continue;
        int fd = parent_end[i];
        parent_end[i] = -1; /* the transport owns it, also on failure */
        r = pact__transport_create(loop, fd,
                                   i == 0 ? PACT_STREAM_WRITE_PIPE
                                          : PACT_STREAM_READ_PIPE,
                                   &pipe_protocol, s, created_at, &s->t);
        if (r < 0) {
            pact_handle_cancel(loop, made);
            goto fail_running;
        }
        p->pipes_open++;
    }
    pact__process_os_watch(p);
    pact__endpoint_register(&p->ep, created_at);
    *out = p;
    return 0;

fail_running:
    /* The child runs but cannot be handed out: let any pipe transport
     * already made go without calling into p, close the parent's ends no
     * transport took, kill the child and wait until it is gone. */
    for (int i = 0; i < 3; i++) {
        pact_transport *t = p->pipes[i].t;
        if (t) {
            pact_transport_set_protocol(t, &orphan_protocol, NULL);
            pact_transport_abort(t);
        }
    }
    pact__process_os_discard(p);
    for (int i = 0; i < 3; i++)
        if (parent_end[i] >= 0)
            pact__process_os_close_end(parent_end[i]);
    free(p);
    return r;
}

/* ---- public API -------------------------------------------------------------- */

pid_t pact_process_pid(const pact_process *p)
{
    return p ? p->pid : -EINVAL;
}

void *pact_process_user(const pact_process *p)
{
    return p ? p->user : NULL;
}

pact_loop *pact_process_loop(const pact_process *p)
{
    return p ? p->ep.loop : NULL;
}

int pact_process_returncode(const pact_process *p, int *returncode)
{
    if (!p || !returncode)
        return -EINVAL;
    if (!p->exited)
        return -EAGAIN;
    *returncode = p->returncode;
    return 0;
}

pact_transport *pact_process_pipe(const pact_process *p, int fd)
{
    if (!p || fd < 0 || fd > 2)
        return NULL;
    return p->pipes[fd].t;
}

int pact_process_write(pact_process *p, const void *data, size_t len)
{
    if (!p)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(p);
    if (!p->pipes[0].t)
        return -EPIPE;
    return pact_transport_write(p->pipes[0].t, data, len);
}

int pact_process_write_eof(pact_process *p)
{
    if (!p)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(p);
    if (!p->pipes[0].t)
        return -EPIPE;
    return pact_transport_write_eof(p->pipes[0].t);
}

int pact_process_send_signal(pact_process *p, int signo)
{
    if (!p)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(p);
    if (signo < 0 || signo > 64)
        return PACT_MISUSE(p->ep.loop, -EINVAL, "bad signal number");
    /* After the reap the pid may belong to someone else; the system
     * would refuse too, but say it plainly. */
    if (p->exited || p->closed)
        return -ESRCH;
    return pact__process_os_signal(p, signo);
}

int pact_process_terminate(pact_process *p)
{
    return pact_process_send_signal(p, SIGTERM);
}

int pact_process_kill(pact_process *p)
{
    return pact_process_send_signal(p, SIGKILL);
}

static void wait_cancel(pact_loop *loop, pact_op_s *op)
{
    /* The wait is only a list entry: it is torn down right here, and the
     * op completes (with -ECANCELED) from the done queue. */
    pact_list_remove(&op->link);
    pact__op_defer(loop, op, -ECANCELED);
}

pact_op pact_process_wait(pact_process *p, pact_op_cb cb, void *user)
{
    if (!p)
        return -EINVAL;
    pact_loop *loop = p->ep.loop;
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (!cb)
        return PACT_MISUSE(loop, -EINVAL, "callback is NULL");
    if (p->ep.lost && !p->exited)
        return -ESRCH;
    pact_op_s *op = pact__op_new(loop, PACT_OP_CUSTOM, -1, cb, user, &r);
    if (!op)
        return r;
    op->custom_cancel = wait_cancel;
    op->buf = p;
    pact_op handle = pact__op_start_custom(loop, op, __builtin_return_address(0));
    if (p->exited)
        pact__op_defer(loop, op, wait_result(p));
    else
        pact_list_push_back(&p->waiters, &op->link);
    return handle;
}

int pact_process_set_ref(pact_process *p, int ref)
{
    if (!p)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(p);
    return pact__endpoint_set_ref(&p->ep, ref);
}

int pact_process_close(pact_process *p)
{
    if (!p)
        return -EINVAL;
    PACT_ENDPOINT_CHECK_OWNER(p);
    /* As a transport: -EALREADY once its end is under way with nothing
     * left for close to do — closed already, or (exited and every pipe
     * gone) its connection_lost is scheduled or running. */
    if (p->closed || p->ep.finishing)
        return -EALREADY;
    p->closed = 1;
    for (int i = 0; i < 3; i++)
        if (p->pipes[i].t)
            pact_transport_close(p->pipes[i].t);
    if (!p->exited)
        pact__process_os_stop(p); /* its exit watch reports it */
    return 0;
}
