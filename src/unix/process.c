/* SPDX-License-Identifier: MIT */
/* Subprocesses on Linux: the system's half of src/process.c (spawn,
 * exit, signals), with the lessons of its bugs built in:
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
 *   pid.
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

#include "subprocess.h"

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

/* ---- exit ----------------------------------------------------------------- */

/* The status the kernel gave for the reaped child. */
static int returncode_of(pact_process *p, const siginfo_t *info, int known)
{
    if (!known) {
        /* Someone else reaped it (SIGCHLD set to SIG_IGN, or a
         * waitpid(-1) elsewhere): the status is lost. asyncio reports 255
         * in this case; so do we, loudly. */
        pact__error(p->ep.loop, -ECHILD,
                    "child pid %d was reaped by someone else (SIGCHLD "
                    "ignored or waitpid(-1)?): exit status unknown, "
                    "reporting 255", (int)p->pid);
        return 255;
    }
    if (info->si_code == CLD_EXITED)
        return info->si_status;
    return -info->si_status; /* killed: minus the signal */
}

/* Reaps the child if it has exited and reports it. Returns 1 if it was
 * reaped. */
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
        pact__process_exited(p, returncode_of(p, NULL, 0));
        return 1;
    }
    if (info.si_pid == 0)
        return 0; /* still running */
    pact__process_exited(p, returncode_of(p, &info, 1));
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
        pact__process_os_watch(p); /* readable but not reapable: not gone yet */
    }
}

/* A pidfd becomes readable when its process exits (Linux 5.3). */
void pact__process_os_watch(pact_process *p)
{
    pact_op op = pact_poll(p->ep.loop, p->pidfd, POLLIN, on_pidfd_ready, p);
    if (op < 0) {
        /* Cannot watch: the loop is going away. Kill and reap now. */
        pidfd_signal(p->pidfd, SIGKILL);
        try_reap(p, 1);
        return;
    }
    p->exit_op = pact__endpoint_op(&p->ep, op);
}

/* ---- the system's half of src/process.c -------------------------------------- */

int pact__process_os_spawn(pact_loop *loop, const pact_process_options *opts,
                           pact_process *p, int parent_end[3])
{
    (void)loop;
    int r;
    /* Everything that can fail is made before the child exists. */
    int child_end[3] = {-1, -1, -1};
    int devnull = -1;
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
    ctx.paths = exec_candidates(opts->file ? opts->file : opts->argv[0],
                                opts->envp);
    if (!ctx.paths) {
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
    int pidfd = clone_child(&ctx, &pid);
    if (pidfd < 0) {
        r = pidfd;
        goto fail;
    }
    free(ctx.paths);
    for (int i = 0; i < 3; i++)
        if (child_end[i] >= 0)
            close(child_end[i]);
    if (devnull >= 0)
        close(devnull);
    p->pid = pid;
    p->pidfd = pidfd;
    return 0;

fail:
    for (int i = 0; i < 3; i++) {
        if (parent_end[i] >= 0)
            close(parent_end[i]);
        parent_end[i] = -1;
        if (child_end[i] >= 0)
            close(child_end[i]);
    }
    if (devnull >= 0)
        close(devnull);
    free(ctx.paths);
    return r;
}

void pact__process_os_discard(pact_process *p)
{
    pidfd_signal(p->pidfd, SIGKILL);
    reap_blocking(p->pidfd);
    close(p->pidfd);
}

void pact__process_os_close_end(int end)
{
    close(end);
}

int pact__process_os_signal(pact_process *p, int signo)
{
    return pidfd_signal(p->pidfd, signo);
}

void pact__process_os_stop(pact_process *p)
{
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

void pact__process_os_release(pact_process *p)
{
    close(p->pidfd);
}
