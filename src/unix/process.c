/* SPDX-License-Identifier: MIT */
/* Subprocesses: spawn with pipes, wait through a pidfd, and asyncio's
 * subprocess transport/protocol on top (base_subprocess.py), with the
 * lessons of its bugs built in:
 *
 * - Spawning is a vfork-style clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD):
 *   the parent sleeps until the child has exec'd or died, the pidfd comes
 *   with the child (no window in which the pid could be recycled), and the
 *   child reports a failure (chdir, dup, exec) by writing its errno into
 *   memory it shares with the parent, so a failed spawn returns that errno
 *   synchronously, after the dead child has been reaped: no zombie, no fd,
 *   no transport (docs/contract.md §7).
 * - The exit is learned from the kernel only: a poll on the pidfd (POLLIN
 *   means the process is gone, on both engines), then waitid(P_PIDFD)
 *   reaps it. No SIGCHLD handler, no global state.
 * - Signals go through pidfd_send_signal(), which can never hit a recycled
 *   pid; after the exit (or close) they answer -ESRCH (CPython
 *   bpo-23347).
 * - Protocol order (docs/contract.md §6): connection_made first —
 *   events that happen before it (a child that exits at once) are held and
 *   replayed after it — then pipe data, process_exited once, and
 *   connection_lost last, once the process has exited AND every pipe is
 *   closed (_try_finish). Waiters are woken at the exit, not at
 *   connection_lost, so a grandchild that keeps a pipe open cannot hold
 *   them (gh-119710).
 * - close() kills a child that still runs (SIGKILL, not SIGTERM: it may
 *   ignore SIGTERM) and reaps it, but never kills one that has exited and
 *   merely is not reaped yet. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "endpoint.h"
#include "options.h"
#include "loop.h"
#include "stream.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000 /* Linux 5.2 */
#endif
#ifndef P_PIDFD
#define P_PIDFD 3 /* waitid() on a pidfd: Linux 5.4 */
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;

#define CHILD_STACK_SIZE (64 * 1024)

/* One of the child's fds 0-2 when it is a pipe: the parent's end, wrapped
 * in a stream transport whose internal protocol forwards to the process's
 * protocol. */
typedef struct pipe_slot {
    struct pact_process *p;
    int fd; /* 0, 1 or 2 */
    pact_transport *t;
    unsigned lost : 1;       /* its connection_lost has arrived */
    unsigned lost_held : 1;  /* ... before connection_made: replay later */
    int lost_err;
} pipe_slot;

/* The process is an endpoint (endpoint.h) that starts closing when its
 * exit has been reported, and is busy while a pipe is open. */
struct pact_process {
    pact_endpoint ep;
    const pact_subprocess_protocol *proto;
    void *user;
    pid_t pid;
    int pidfd;
    pact_op exit_op; /* the pidfd poll */
    pipe_slot pipes[3];
    int pipes_open;
    int returncode;
    pact_list waiters; /* pact_process_wait() ops, linked by op->link */

    unsigned exited : 1;        /* reaped: returncode is known */
    unsigned exit_reported : 1; /* process_exited has run */
    unsigned closed : 1;        /* pact_process_close() */
};

static void arm_exit_watch(pact_process *p);

/* ---- the child ------------------------------------------------------------
 * The child shares the parent's memory (CLONE_VM) and runs on its own
 * stack while the parent sleeps (CLONE_VFORK). So it may only make raw
 * system calls: no malloc, no locks, no sanitizer runtime. Signals are
 * blocked from before the clone; the child resets every caught signal to
 * its default before unblocking, so no parent handler ever runs on the
 * shared memory. */

typedef struct spawn_ctx {
    char **paths; /* execve candidates (PATH search done by the parent) */
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int src[3]; /* what becomes fd 0-2, or -1 to inherit */
    int new_session, new_pgroup, set_umask;
    mode_t umask;
    volatile int err; /* written by the child: 0, or why it failed */
} spawn_ctx;

/* The kernel's struct sigaction for rt_sigaction(2). */
struct kernel_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

#define CHILD_CODE __attribute__((noinline, no_sanitize("address", "undefined")))

CHILD_CODE static void child_fail(spawn_ctx *c, int err)
{
    c->err = err ? err : EINVAL;
    syscall(SYS_exit_group, 127);
}

CHILD_CODE static int child_main(void *arg)
{
    spawn_ctx *c = arg;
    /* Caught signals back to their defaults (a parent handler must not run
     * here, nor survive exec as a disposition). Ignored ones stay ignored,
     * as exec does (nohup) — except SIGPIPE, which a parent that writes to
     * pipes ignores and which children expect at its default (Python's
     * restore_signals does the same). */
    for (int sig = 1; sig <= 64; sig++) {
        struct kernel_sigaction old, dfl = {0};
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (syscall(SYS_rt_sigaction, sig, NULL, &old, 8) != 0)
            continue;
        if (old.handler == (void *)SIG_DFL ||
            (old.handler == (void *)SIG_IGN && sig != SIGPIPE))
            continue;
        dfl.handler = (void *)SIG_DFL;
        syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
    }
    if (c->new_session && syscall(SYS_setsid) < 0)
        child_fail(c, errno);
    if (c->new_pgroup && !c->new_session && syscall(SYS_setpgid, 0, 0) < 0)
        child_fail(c, errno);
    if (c->set_umask)
        syscall(SYS_umask, c->umask);
    if (c->cwd && syscall(SYS_chdir, c->cwd) < 0)
        child_fail(c, errno);
    /* fd 0-2. A source that is itself one of 0-2 (but not its own target)
     * is moved up first, so no dup3 below overwrites a source still
     * needed. */
    int src[3] = {c->src[0], c->src[1], c->src[2]};
    for (int i = 0; i < 3; i++) {
        if (src[i] >= 0 && src[i] < 3 && src[i] != i) {
            long r = syscall(SYS_fcntl, src[i], F_DUPFD_CLOEXEC, 3);
            if (r < 0)
                child_fail(c, errno);
            src[i] = (int)r;
        }
    }
    for (int i = 0; i < 3; i++) {
        if (src[i] < 0)
            continue;
        long r = src[i] == i ? syscall(SYS_fcntl, i, F_SETFD, 0)
                             : syscall(SYS_dup3, src[i], i, 0);
        if (r < 0)
            child_fail(c, errno);
    }
    /* Only 0-2 reach the program, even fds some other code opened without
     * O_CLOEXEC (Linux 5.9; on older kernels pact's own fds are O_CLOEXEC
     * anyway). CLOEXEC rather than closing: the kernel does it at exec. */
    syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
    /* An empty mask: the loop thread may block signals for its signalfd
     * (pact_signal_add), and the mask survives exec. */
    uint64_t empty = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, 8);
    /* execvpe()'s search rules: EACCES on one candidate is remembered and
     * the search goes on; "not there" errors go on; anything else stops. */
    int err = ENOENT, saw_eacces = 0;
    for (char **path = c->paths; *path; path++) {
        syscall(SYS_execve, *path, c->argv, c->envp);
        err = errno;
        if (err == EACCES)
            saw_eacces = 1;
        else if (err != ENOENT && err != ENOTDIR && err != ESTALE &&
                 err != ENODEV && err != ETIMEDOUT)
            break;
    }
    if (saw_eacces && (err == ENOENT || err == ENOTDIR || err == ESTALE ||
                       err == ENODEV || err == ETIMEDOUT || err == EACCES))
        err = EACCES;
    child_fail(c, err);
    return 127;
}

/* ---- spawning (parent side) ------------------------------------------------ */

/* The PATH of the child's environment (execvpe uses the caller's; asyncio
 * and Python's subprocess use the one the child gets). */
static const char *search_path(char *const *envp)
{
    if (envp) {
        for (char *const *e = envp; *e; e++)
            if (strncmp(*e, "PATH=", 5) == 0)
                return *e + 5;
    } else {
        const char *p = getenv("PATH");
        if (p)
            return p;
    }
    return "/bin:/usr/bin";
}

/* The NULL-terminated list of paths to try, in one allocation. */
static char **exec_candidates(const char *file, char *const *envp)
{
    if (strchr(file, '/')) {
        size_t len = strlen(file) + 1;
        char **list = malloc(2 * sizeof(char *) + len);
        if (!list)
            return NULL;
        list[0] = (char *)(list + 2);
        memcpy(list[0], file, len);
        list[1] = NULL;
        return list;
    }
    const char *path = search_path(envp);
    size_t n = 1, flen = strlen(file);
    for (const char *s = path; *s; s++)
        n += *s == ':';
    size_t size = (n + 1) * sizeof(char *) + strlen(path) + n * (flen + 3);
    char **list = malloc(size);
    if (!list)
        return NULL;
    char *out = (char *)(list + n + 1);
    size_t k = 0;
    const char *dir = path;
    for (;;) {
        const char *end = strchrnul(dir, ':');
        size_t dlen = (size_t)(end - dir);
        list[k++] = out;
        if (dlen == 0) { /* an empty entry means the current directory */
            *out++ = '.';
        } else {
            memcpy(out, dir, dlen);
            out += dlen;
        }
        *out++ = '/';
        memcpy(out, file, flen + 1);
        out += flen + 1;
        if (!*end)
            break;
        dir = end + 1;
    }
    list[k] = NULL;
    return list;
}

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

/* Blocks until the (dead or dying) child is reaped; the pidfd stays open. */
static void reap_blocking(int pidfd)
{
    siginfo_t info;
    while (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED) < 0 &&
           errno == EINTR)
        ;
}

static int pidfd_signal(int pidfd, int signo)
{
    return syscall(SYS_pidfd_send_signal, pidfd, signo, NULL, 0) < 0 ? -errno
                                                                     : 0;
}

/* Clones the child; returns the pidfd (and *pid) or a negative errno. A
 * child that failed before exec has been reaped when this returns. */
static int clone_child(spawn_ctx *ctx, pid_t *pid)
{
    char *stack = malloc(CHILD_STACK_SIZE);
    if (!stack)
        return -ENOMEM;
    /* Block every signal (glibc's internal ones too) across the clone, so
     * nothing runs a handler in the child before it has reset them. */
    uint64_t all = ~0ull, old;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, 8);
    int pidfd = -1;
    pid_t r = clone(child_main, stack + CHILD_STACK_SIZE,
                    CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, ctx,
                    &pidfd, NULL, NULL);
    int clone_err = errno;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, 8);
    free(stack);
    if (r < 0)
        return clone_err == EINVAL ? -ENOSYS : -clone_err; /* < Linux 5.2 */
    /* CLONE_VFORK: the child has exec'd or died by now. */
    if (ctx->err) {
        int err = ctx->err;
        reap_blocking(pidfd);
        close(pidfd);
        return -err;
    }
    *pid = r;
    return pidfd;
}

/* ---- the pipes' internal protocol ------------------------------------------ */

static void pipe_data(pact_transport *t, const void *data, size_t len,
                      void *arg)
{
    (void)t;
    pipe_slot *s = arg;
    pact_process *p = s->p;
    /* Reading starts in the pipe's connection_made, which runs after the
     * process's (scheduled first), so data never precedes it. */
    if (p->proto->pipe_data_received)
        p->proto->pipe_data_received(p, s->fd, data, len, p->user);
}

static void pipe_lost(pact_transport *t, int err, void *arg)
{
    (void)t;
    pipe_slot *s = arg;
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

static int process_busy(const pact_endpoint *e)
{
    return pact_container_of(e, pact_process, ep)->pipes_open > 0;
}

static void process_lost(pact_endpoint *e)
{
    pact_process *p = pact_container_of(e, pact_process, ep);
    if (p->proto->connection_lost)
        p->proto->connection_lost(p, p->user);
    close(p->pidfd);
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

static const pact_endpoint_ops process_ops = {
    .kind = "process",
    .force_close = process_force_close,
    .busy = process_busy,
    .lost = process_lost,
    .free = process_free,
    .set_ref = process_set_ref,
};

/* Records the status the kernel gave for the reaped child and wakes every
 * waiter with it. */
static void set_exited(pact_process *p, const siginfo_t *info, int known)
{
    p->exited = 1;
    if (!known) {
        /* Someone else reaped it (SIGCHLD set to SIG_IGN, or a
         * waitpid(-1) elsewhere): the status is lost. asyncio reports 255
         * in this case; so do we, loudly. */
        p->returncode = 255;
        pact__error(p->ep.loop, -ECHILD,
                    "child pid %d was reaped by someone else (SIGCHLD "
                    "ignored or waitpid(-1)?): exit status unknown, "
                    "reporting 255", (int)p->pid);
    } else if (info->si_code == CLD_EXITED) {
        p->returncode = info->si_status;
    } else {
        p->returncode = -info->si_status; /* killed: minus the signal */
    }
    pact_list *n;
    while ((n = pact_list_pop_front(&p->waiters))) {
        pact_op_s *op = pact_container_of(n, pact_op_s, link);
        pact_list_init(&op->link);
        pact__op_defer(p->ep.loop, op, p->returncode);
    }
}

/* Reaps the child if it has exited. Returns 1 if it was reaped. */
static int try_reap(pact_process *p, int block)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int r;
    do {
        r = waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &info,
                   WEXITED | (block ? 0 : WNOHANG));
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        set_exited(p, NULL, 0);
        return 1;
    }
    if (info.si_pid == 0)
        return 0; /* still running */
    set_exited(p, &info, 1);
    return 1;
}

static void on_pidfd_ready(pact_loop *loop, const pact_completion *c, void *arg)
{
    (void)loop;
    pact_process *p = arg;
    p->exit_op = 0;
    if (c->result < 0) {
        /* Only a loop that gave up waiting on its resources cancels this.
         * Do not guess: make sure it dies, then let the kernel say so. */
        if (c->result != -ECANCELED)
            pact__error(p->ep.loop, (int)c->result,
                        "waiting for child pid %d failed; killing it",
                        (int)p->pid);
        pidfd_signal(p->pidfd, SIGKILL);
        try_reap(p, 1);
    } else if (!try_reap(p, 0)) {
        arm_exit_watch(p); /* readable but not reapable: not gone yet */
        return;
    }
    if (p->ep.made)
        report_exit(p);
}

/* A pidfd becomes readable when its process exits (Linux 5.3). */
static void arm_exit_watch(pact_process *p)
{
    pact_op op = pact_poll(p->ep.loop, p->pidfd, POLLIN, on_pidfd_ready, p);
    if (op < 0) {
        /* Cannot watch: the loop is going away. Kill and reap now. */
        pidfd_signal(p->pidfd, SIGKILL);
        try_reap(p, 1);
        if (p->ep.made)
            report_exit(p);
        return;
    }
    p->exit_op = pact__endpoint_op(&p->ep, op);
}

static void process_made(pact_loop *loop, void *arg)
{
    (void)loop;
    pact_process *p = arg;
    p->ep.made = 1;
    if (p->proto->connection_made)
        p->proto->connection_made(p, p->user);
    /* Replay what happened before connection_made, in order. */
    for (int i = 0; i < 3; i++) {
        pipe_slot *s = &p->pipes[i];
        if (s->lost_held) {
            s->lost_held = 0;
            if (p->proto->pipe_connection_lost)
                p->proto->pipe_connection_lost(p, s->fd, s->lost_err, p->user);
        }
    }
    if (p->exited)
        report_exit(p);
}

/* ---- public API -------------------------------------------------------------- */

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

    /* Everything that can fail is made before the child exists. */
    int parent_end[3] = {-1, -1, -1}, child_end[3] = {-1, -1, -1};
    int devnull = -1, pidfd = -1;
    spawn_ctx ctx = {
        .argv = opts->argv,
        .envp = opts->envp ? opts->envp : environ,
        .cwd = opts->cwd,
        .src = {-1, -1, -1},
        .new_session = opts->new_session,
        .new_pgroup = opts->new_process_group,
        .set_umask = opts->set_umask,
        .umask = opts->umask,
    };
    pact_process *p = calloc(1, sizeof *p);
    ctx.paths = exec_candidates(opts->file ? opts->file : opts->argv[0],
                                opts->envp);
    if (!p || !ctx.paths) {
        r = -ENOMEM;
        goto fail;
    }
    for (int i = 0; i < 3; i++) {
        switch (opts->stdio[i].kind) {
        case PACT_STDIO_PIPE: {
            int fds[2];
            if (pipe2(fds, O_CLOEXEC) < 0) {
                r = -errno;
                goto fail;
            }
            parent_end[i] = i == 0 ? fds[1] : fds[0];
            child_end[i] = i == 0 ? fds[0] : fds[1];
            ctx.src[i] = child_end[i];
            break;
        }
        case PACT_STDIO_DEVNULL:
            if (devnull < 0) {
                devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (devnull < 0) {
                    r = -errno;
                    goto fail;
                }
            }
            ctx.src[i] = devnull;
            break;
        case PACT_STDIO_FD:
            ctx.src[i] = opts->stdio[i].fd;
            break;
        case PACT_STDIO_STDOUT:
            ctx.src[i] = ctx.src[1] >= 0 ? ctx.src[1] : 1;
            break;
        case PACT_STDIO_INHERIT:
            break;
        }
    }

    pid_t pid = 0;
    pidfd = clone_child(&ctx, &pid);
    if (pidfd < 0) {
        r = pidfd;
        pidfd = -1;
        goto fail;
    }
    free(ctx.paths);
    ctx.paths = NULL;
    for (int i = 0; i < 3; i++) {
        if (child_end[i] >= 0)
            close(child_end[i]);
        child_end[i] = -1;
    }
    if (devnull >= 0)
        close(devnull);
    devnull = -1;

    pact__endpoint_init(&p->ep, loop, &process_ops);
    p->proto = proto;
    p->user = user;
    p->pid = pid;
    p->pidfd = pidfd;
    pact_list_init(&p->waiters);
    /* connection_made is scheduled before the pipes' own, so it runs
     * before any pipe can read (or be lost). */
    pact_handle made = pact_call_soon(loop, process_made, p);
    if (made < 0) {
        r = (int)made;
        goto fail_running;
    }
    for (int i = 0; i < 3; i++) {
        pipe_slot *s = &p->pipes[i];
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
    arm_exit_watch(p);
    pact__endpoint_register(&p->ep, created_at);
    *out = p;
    return 0;

fail_running:
    /* The child runs but cannot be handed out: kill it, reap it, and let
     * any pipe transport already made go without calling into p. */
    for (int i = 0; i < 3; i++) {
        pact_transport *t = p->pipes[i].t;
        if (t) {
            pact_transport_set_protocol(t, &orphan_protocol, NULL);
            pact_transport_abort(t);
        }
    }
    pidfd_signal(pidfd, SIGKILL);
    reap_blocking(pidfd);
fail:
    for (int i = 0; i < 3; i++) {
        if (parent_end[i] >= 0)
            close(parent_end[i]);
        if (child_end[i] >= 0)
            close(child_end[i]);
    }
    if (devnull >= 0)
        close(devnull);
    if (pidfd >= 0)
        close(pidfd);
    free(ctx.paths);
    free(p);
    return r;
}

pid_t pact_process_pid(const pact_process *p)
{
    return p ? p->pid : -EINVAL;
}

void *pact_process_user(const pact_process *p)
{
    return p ? p->user : NULL;
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
    /* After the reap the pid may belong to someone else; the pidfd would
     * refuse too, but say it plainly. */
    if (p->exited || p->closed)
        return -ESRCH;
    return pidfd_signal(p->pidfd, signo);
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
        pact__op_defer(loop, op, p->returncode);
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
    if (!p->exited) {
        /* Exited but not reaped yet (a zombie) is not "running": peek
         * without reaping, so its real status is still reported. */
        siginfo_t info;
        memset(&info, 0, sizeof info);
        int r = waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &info,
                       WEXITED | WNOHANG | WNOWAIT);
        if (r == 0 && info.si_pid == 0) {
            if (pact_loop_debug(p->ep.loop))
                pact__log(p->ep.loop, "close: killing running child pid %d",
                          (int)p->pid);
            pidfd_signal(p->pidfd, SIGKILL);
        }
        /* The pidfd poll reaps it and finishes the transport. */
    }
    return 0;
}

pact_loop *pact_process_loop(const pact_process *p)
{
    return p ? p->ep.loop : NULL;
}
