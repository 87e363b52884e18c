/* SPDX-License-Identifier: MIT */
/* Subprocesses: spawn with every stdio combination, the protocol order
 * (also for a child that exits before its transport is set up), signals
 * through the pidfd, close kills a running child, spawn failures leave no
 * zombie and no fd, and a thousand short-lived children. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "helpers.h"
#include "process_recorder.h"

TestSuite(process, .timeout = 60);

static void assert_no_children(void)
{
    errno = 0;
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "a child is left (zombie?)");
    cr_assert_eq(errno, ECHILD);
}

/* ---- stdio combinations ------------------------------------------------- */

Test(process, all_pipes)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"sh", "-c", "read x; echo out:$x; echo err:$x >&2; exit 3",
                    NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_PIPE);
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    int rc;
    cr_assert_eq(pact_process_returncode(p, &rc), -EAGAIN);
    cr_assert_not_null(pact_process_pipe(p, 0));
    cr_assert_not_null(pact_process_pipe(p, 1));
    cr_assert_not_null(pact_process_pipe(p, 2));
    cr_assert_null(pact_process_pipe(p, 3));
    cr_assert_eq(pact_process_write(p, "hi\n", 3), 0);
    cr_assert_eq(pact_process_write_eof(p), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 3);
    cr_assert_str_eq(r.out[1], "out:hi\n");
    cr_assert_str_eq(r.out[2], "err:hi\n");
    cr_assert_eq(r.pipe_err[0], 0);
    assert_no_children();
    test_loop_free(loop);
}

Test(process, stderr_to_stdout)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"sh", "-c", "echo a; echo b >&2; echo c", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_DEVNULL, PACT_STDIO_PIPE, PACT_STDIO_STDOUT);
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    cr_assert_null(pact_process_pipe(p, 0));
    cr_assert_null(pact_process_pipe(p, 2));
    cr_assert_eq(pact_process_write(p, "x", 1), -EPIPE);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_str_eq(r.out[1], "a\nb\nc\n");
    cr_assert_eq(r.len[2], 0);
    cr_assert_eq(r.returncode, 0);
    test_loop_free(loop);
}

Test(process, devnull_stdin_gives_eof)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"cat", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_DEVNULL, PACT_STDIO_PIPE, PACT_STDIO_DEVNULL);
    rec r = {0};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.len[1], 0);
    cr_assert_eq(r.returncode, 0);
    test_loop_free(loop);
}

Test(process, given_fds_and_inherit)
{
    pact_loop *loop = test_loop_new();
    int fds_before = count_open_fds();
    /* stdout to a pipe the test owns, stderr to a file; stdin inherited. */
    int pfd[2];
    cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0);
    char path[] = "/tmp/pact-proc-XXXXXX";
    int file = mkstemp(path);
    cr_assert_geq(file, 0);
    unlink(path);
    char *argv[] = {"sh", "-c", "echo to-pipe; echo to-file >&2", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_INHERIT, PACT_STDIO_FD, PACT_STDIO_FD);
    o.stdio[1].fd = pfd[1];
    o.stdio[2].fd = file;
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    for (int i = 0; i < 3; i++)
        cr_assert_null(pact_process_pipe(p, i));
    pact_loop_run(loop);
    assert_finished(&r, &o);
    close(pfd[1]);
    char buf[64] = {0};
    cr_assert_eq(read(pfd[0], buf, sizeof buf - 1), 8);
    cr_assert_str_eq(buf, "to-pipe\n");
    memset(buf, 0, sizeof buf);
    cr_assert_eq(pread(file, buf, sizeof buf - 1, 0), 8);
    cr_assert_str_eq(buf, "to-file\n");
    close(pfd[0]);
    close(file);
    cr_assert_eq(count_open_fds(), fds_before);
    test_loop_free(loop);
}

/* The given fds may be 0-2 themselves, crossed: stdout <- our fd 2 and
 * stderr <- our fd 1 must not clobber each other in the child. */
Test(process, crossed_low_fds)
{
    pact_loop *loop = test_loop_new();
    int a[2], b[2];
    cr_assert_eq(pipe2(a, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(b, O_CLOEXEC), 0);
    int save1 = dup(1), save2 = dup(2);
    cr_assert_eq(dup2(a[1], 1), 1);
    cr_assert_eq(dup2(b[1], 2), 2);
    char *argv[] = {"sh", "-c", "echo out; echo err >&2", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_DEVNULL, PACT_STDIO_FD, PACT_STDIO_FD);
    o.stdio[1].fd = 2;
    o.stdio[2].fd = 1;
    rec r = {0};
    spawn(loop, &o, &r);
    dup2(save1, 1);
    dup2(save2, 2);
    close(save1);
    close(save2);
    close(a[1]);
    close(b[1]);
    pact_loop_run(loop);
    char buf[32] = {0};
    cr_assert_eq(read(a[0], buf, sizeof buf), 4);
    cr_assert_str_eq(buf, "err\n");
    memset(buf, 0, sizeof buf);
    cr_assert_eq(read(b[0], buf, sizeof buf), 4);
    cr_assert_str_eq(buf, "out\n");
    close(a[0]);
    close(b[0]);
    test_loop_free(loop);
}

/* Only fds 0-2 reach the child, even one opened without O_CLOEXEC; and the
 * child's signal mask is empty and SIGPIPE is at its default even though
 * the loop blocks SIGINT (pact_signal_add) and SIGPIPE is ignored. */
static void ignore_signal(pact_loop *loop, int signo, void *user)
{
    (void)loop, (void)signo, (void)user;
}

Test(process, child_environment)
{
    pact_loop *loop = test_loop_new();
    signal(SIGPIPE, SIG_IGN);
    pact_signal sig = pact_signal_add(loop, SIGINT, ignore_signal, NULL);
    cr_assert_gt(sig, 0);
    int leaked = dup2(0, 100); /* no O_CLOEXEC */
    cr_assert_eq(leaked, 100);
    char *argv[] = {"sh", "-c",
                    "ls /proc/self/fd | tr '\\n' ' '; echo; "
                    "grep -E '^Sig(Blk|Ign)' /proc/self/status; "
                    "echo \"$FOO\"; pwd; umask",
                    NULL};
    char *envp[] = {"FOO=bar", "PATH=/usr/bin:/bin", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv, .envp = envp,
                              .cwd = "/tmp", .set_umask = 1, .umask = 027};
    set_stdio(&o, PACT_STDIO_DEVNULL, PACT_STDIO_PIPE, PACT_STDIO_STDOUT);
    rec r = {0};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    close(leaked);
    assert_finished(&r, &o);
    /* ls sees 0, 1, 2 and its own directory fd (3), never 100. */
    cr_assert(strncmp(r.out[1], "0 1 2 3 \n", 9) == 0, "fds: %s", r.out[1]);
    cr_assert(strstr(r.out[1], "SigBlk:\t0000000000000000\n"), "%s", r.out[1]);
    const char *ign = strstr(r.out[1], "SigIgn:\t");
    cr_assert_not_null(ign);
    unsigned long long mask = strtoull(ign + 8, NULL, 16);
    cr_assert_eq(mask & (1ull << (SIGPIPE - 1)), 0, "SIGPIPE still ignored");
    cr_assert(strstr(r.out[1], "\nbar\n/tmp\n0027\n"), "%s", r.out[1]);
    cr_assert_eq(pact_signal_cancel(loop, sig), 0);
    test_loop_free(loop);
}

Test(process, new_session_and_group)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"sleep", "100", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv, .new_session = 1};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    pid_t pid = pact_process_pid(p);
    cr_assert_eq(getsid(pid), pid);
    cr_assert_eq(getpgid(pid), pid);
    cr_assert_eq(pact_process_kill(p), 0);
    pact_loop_run(loop);
    cr_assert_eq(r.returncode, -SIGKILL);

    pact_process_options o2 = {.size = sizeof o2, .argv = argv, .new_process_group = 1};
    rec r2 = {0};
    p = spawn(loop, &o2, &r2);
    pid = pact_process_pid(p);
    cr_assert_eq(getpgid(pid), pid);
    cr_assert_eq(getsid(pid), getsid(0));
    cr_assert_eq(pact_process_terminate(p), 0);
    pact_loop_run(loop);
    cr_assert_eq(r2.returncode, -SIGTERM);
    test_loop_free(loop);
}

/* ---- interactive, large output, broken stdin -------------------------------- */

Test(process, interactive_cat)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"cat", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_INHERIT);
    chat c = {0};
    pact_process *p;
    cr_assert_eq(pact_process_spawn(loop, &o, &chat_proto, &c, &p), 0);
    cr_assert_eq(pact_process_write(p, "first\n", 6), 0);
    pact_loop_run(loop);
    assert_finished(&c.r, &o);
    cr_assert_eq(c.lines, 2);
    cr_assert_str_eq(c.r.out[1], "first\nsecond\n");
    cr_assert_eq(c.r.returncode, 0);
    test_loop_free(loop);
}

Test(process, large_output_with_pause_resume)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"head", "-c", "5000000", "/dev/zero", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_DEVNULL, PACT_STDIO_PIPE, PACT_STDIO_PIPE);
    rec r = {.pause_every = 256 * 1024};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.len[1], 5000000, "got %zu bytes", r.len[1]);
    cr_assert_eq(r.nonzero, 0);
    cr_assert_eq(r.len[2], 0);
    cr_assert_gt(r.pauses, 10);
    cr_assert_eq(r.returncode, 0);
    test_loop_free(loop);
}

Test(process, stdin_broken_pipe)
{
    pact_loop *loop = test_loop_new();
    signal(SIGPIPE, SIG_IGN);
    char *argv[] = {"true", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_DEVNULL, PACT_STDIO_DEVNULL);
    /* At the exit, write into the pipe nobody reads (p is valid there;
     * after connection_lost it is freed). */
    rec r = {.write_in_exited = 1};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    int w = r.write_result;
    cr_assert(w == 0 || w == -EPIPE || w == -ESHUTDOWN, "write: %d", w);
    cr_assert_eq(r.pipe_err[0], -EPIPE, "stdin lost with %d", r.pipe_err[0]);
    cr_assert_eq(r.returncode, 0);
    cr_assert_eq(pact_process_write(NULL, "x", 1), -EINVAL);
    test_loop_free(loop);
}

/* ---- order when the child is gone before the transport is set up ------------- */

Test(process, exits_before_setup)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"sh", "-c", "echo early; exit 5", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_PIPE);
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    /* Let the child finish (and become a zombie) before any callback. */
    siginfo_t info = {0};
    cr_assert_eq(waitid(P_PID, (id_t)pact_process_pid(p), &info,
                        WEXITED | WNOWAIT), 0);
    cr_assert_eq(info.si_status, 5);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.made, 1);
    cr_assert_str_eq(r.out[1], "early\n");
    cr_assert_eq(r.returncode, 5);
    assert_no_children();
    test_loop_free(loop);
}

/* Exits before setup with no pipes at all: the exit is the first event. */
Test(process, exits_before_setup_no_pipes)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"false", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    siginfo_t info = {0};
    cr_assert_eq(waitid(P_PID, (id_t)pact_process_pid(p), &info,
                        WEXITED | WNOWAIT), 0);
    /* Run once without blocking: the pidfd poll may complete in the same
     * iteration as connection_made; the order must hold anyway. */
    pact_loop_run_once(loop, 0);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 1);
    test_loop_free(loop);
}

/* ---- signals ------------------------------------------------------------------ */

static void signal_case(int (*send)(pact_process *), int signo, int expect)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"sleep", "100", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    run_until(loop, &r.made, 5000);
    cr_assert_eq(send ? send(p) : pact_process_send_signal(p, signo), 0);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, expect);
    test_loop_free(loop);
}

Test(process, kill) { signal_case(pact_process_kill, 0, -SIGKILL); }
Test(process, terminate) { signal_case(pact_process_terminate, 0, -SIGTERM); }
Test(process, send_signal) { signal_case(NULL, SIGUSR1, -SIGUSR1); }
Test(process, send_sigint) { signal_case(NULL, SIGINT, -SIGINT); }

Test(process, signal_after_exit_is_esrch)
{
    pact_loop *loop = test_loop_new();
    /* A bystander that must survive. */
    char *sleeper_argv[] = {"sleep", "100", NULL};
    pact_process_options so = {.size = sizeof so, .argv = sleeper_argv};
    rec sr = {0};
    pact_process *sleeper = spawn(loop, &so, &sr);

    char *argv[] = {"true", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {.kill_in_exited = 1};
    pact_process *p = spawn(loop, &o, &r);
    run_until(loop, &r.lost, 5000);
    (void)p;
    cr_assert_eq(r.kill_result, -ESRCH);
    cr_assert_eq(r.kill_in_lost_result, -ESRCH);
    cr_assert_eq(r.close_in_lost_result, -EALREADY, "ended on its own: %s",
                 pact_err_name(r.close_in_lost_result));
    cr_assert_eq(sr.exited, 0, "the bystander was hit");
    cr_assert_eq(kill(pact_process_pid(sleeper), 0), 0);
    cr_assert_eq(pact_process_send_signal(sleeper, 99), -EINVAL);
    cr_assert_eq(pact_process_close(sleeper), 0);
    cr_assert_eq(pact_process_close(sleeper), -EALREADY);
    cr_assert_eq(pact_process_kill(sleeper), -ESRCH, "signal after close");
    pact_loop_run(loop);
    cr_assert_eq(sr.returncode, -SIGKILL);
    cr_assert_eq(sr.close_in_lost_result, -EALREADY, "closed by the user");
    test_loop_free(loop);
}

/* ---- close ------------------------------------------------------------------ */

Test(process, close_kills_running)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"sleep", "100", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_PIPE);
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    run_until(loop, &r.made, 5000);
    uint64_t start = pact_now();
    cr_assert_eq(pact_process_close(p), 0);
    pact_loop_run(loop);
    cr_assert_lt(pact_now() - start, 5000 * MS);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, -SIGKILL);
    assert_no_children();
    test_loop_free(loop);
}

Test(process, close_does_not_kill_finished)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"sh", "-c", "exit 7", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    siginfo_t info = {0};
    cr_assert_eq(waitid(P_PID, (id_t)pact_process_pid(p), &info,
                        WEXITED | WNOWAIT), 0);
    cr_assert_eq(pact_process_close(p), 0); /* exited, not reaped yet */
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 7);
    test_loop_free(loop);
}

Test(process, close_in_connection_made)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"sleep", "100", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_INHERIT);
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    cr_assert_eq(pact_process_close(p), 0); /* before connection_made */
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, -SIGKILL);
    test_loop_free(loop);
}

Test(process, loop_close_kills_and_reaps)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"sleep", "100", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_PIPE);
    rec r = {0};
    spawn(loop, &o, &r);
    pact_loop_run_once(loop, 0);
    test_loop_free(loop); /* closes the loop with the process open */
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, -SIGKILL);
    assert_no_children();
}

/* ---- waiting ------------------------------------------------------------------ */

Test(process, wait_many_and_cancel)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"sleep", "100", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    waited w[4] = {0};
    pact_op ops[4];
    for (int i = 0; i < 4; i++) {
        ops[i] = pact_process_wait(p, wait_cb, &w[i]);
        cr_assert_gt(ops[i], 0);
    }
    cr_assert_eq(pact_op_cancel(loop, ops[3]), 0);
    cr_assert_eq(pact_op_cancel(loop, ops[3]), -EALREADY);
    cr_assert_eq(pact_op_set_timeout(loop, ops[2], 10 * MS), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(w[3].calls, 1);
    cr_assert_eq(w[3].result, -ECANCELED);
    cr_assert_eq(pact_op_cancel(loop, ops[3]), -ENOENT);
    run_until(loop, &w[2].calls, 5000);
    cr_assert_eq(w[2].result, -ETIMEDOUT);
    cr_assert_eq(pact_process_terminate(p), 0);
    pact_loop_run(loop);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(w[i].calls, 1);
        cr_assert_eq(w[i].result, -SIGTERM);
    }
    cr_assert_eq(w[2].calls, 1);
    cr_assert_eq(w[3].calls, 1);
    test_loop_free(loop);
}

Test(process, wait_after_exit)
{
    pact_loop *loop = test_loop_new();
    static const pact_subprocess_protocol proto = {
        .process_exited = wait_in_exited};
    char *argv[] = {"sh", "-c", "exit 42", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    waited w = {0};
    pact_process *p;
    cr_assert_eq(pact_process_spawn(loop, &o, &proto, &w, &p), 0);
    pact_loop_run(loop);
    cr_assert_eq(w.calls, 1);
    cr_assert_eq(w.result, 42);
    test_loop_free(loop);
}

/* ---- spawn failures --------------------------------------------------------- */

Test(process, spawn_failures_leave_nothing)
{
    pact_loop *loop = test_loop_new();
    int fds = count_open_fds();
    pact_process_options o = PACT_PROCESS_OPTIONS_INIT;
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_PIPE);

    char *nope[] = {"/nonexistent/pact-no-such-program", NULL};
    o.argv = nope;
    cr_assert_eq(spawn_refused(loop, &o), -ENOENT);
    char *nope2[] = {"pact-no-such-program-in-path", NULL};
    o.argv = nope2;
    cr_assert_eq(spawn_refused(loop, &o), -ENOENT);

    char path[] = "/tmp/pact-noexec-XXXXXX";
    int f = mkstemp(path);
    cr_assert_geq(f, 0);
    cr_assert_eq(write(f, "#!/bin/sh\n", 10), 10);
    close(f);
    chmod(path, 0644);
    char *noexec[] = {path, NULL};
    o.argv = noexec;
    cr_assert_eq(spawn_refused(loop, &o), -EACCES);
    unlink(path);

    char *ok[] = {"true", NULL};
    o.argv = ok;
    o.cwd = "/nonexistent-dir";
    cr_assert_eq(spawn_refused(loop, &o), -ENOENT);
    o.cwd = NULL;

    /* Misuse. */
    o.argv = NULL;
    cr_assert_eq(spawn_refused(loop, &o), -EINVAL);
    o.argv = ok;
    o.stdio[1].kind = PACT_STDIO_STDOUT;
    cr_assert_eq(spawn_refused(loop, &o), -EINVAL);
    o.stdio[1].kind = PACT_STDIO_FD;
    o.stdio[1].fd = -1;
    cr_assert_eq(spawn_refused(loop, &o), -EBADF);
    o.stdio[1].kind = PACT_STDIO_PIPE;
    pact_process *p;
    cr_assert_eq(pact_process_spawn(loop, &o, NULL, NULL, &p), -EINVAL);
    cr_assert_eq(pact_process_spawn(NULL, &o, &rec_proto, NULL, &p), -EINVAL);

    /* fd exhaustion: room for only part of the pipes. */
    struct rlimit old, lim;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)count_open_fds() + 3;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    int e = spawn_refused(loop, &o);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    cr_assert_eq(e, -EMFILE, "got %s", pact_err_name(e));

    cr_assert_eq(count_open_fds(), fds, "fd leak");
    assert_no_children();
    test_loop_free(loop);
}

/* ---- many short-lived children ------------------------------------------------ */

#define MANY_TOTAL 1000
#define MANY_CONCURRENT 50

typedef struct many {
    pact_loop *loop;
    int started, finished, bad;
} many;

static void many_start(many *m);

static void many_lost(pact_process *p, void *user)
{
    many *m = user;
    int rc = -1;
    if (pact_process_returncode(p, &rc) != 0 || rc != 0)
        m->bad++;
    m->finished++;
    many_start(m);
}

static const pact_subprocess_protocol many_proto = {.connection_lost = many_lost};

static void many_start(many *m)
{
    if (m->started >= MANY_TOTAL)
        return;
    char *argv[] = {"/bin/true", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_DEVNULL, PACT_STDIO_PIPE, PACT_STDIO_DEVNULL);
    pact_process *p;
    int e = pact_process_spawn(m->loop, &o, &many_proto, m, &p);
    cr_assert_eq(e, 0, "spawn #%d: %s", m->started, pact_strerror(e));
    m->started++;
}

Test(process, thousand_children)
{
    pact_loop *loop = test_loop_new();
    int fds = count_open_fds();
    many m = {.loop = loop};
    for (int i = 0; i < MANY_CONCURRENT; i++)
        many_start(&m);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(m.finished, MANY_TOTAL);
    cr_assert_eq(m.bad, 0);
    cr_assert_eq(count_open_fds(), fds, "fd leak");
    assert_no_children();
    test_loop_free(loop);
}

/* ---- pact_process_loop: the loop, from callbacks that get the process -- */

static struct {
    pact_loop *made_loop, *lost_loop;
    pact_signal sig;
    int remove_result;
} getter;

static void getter_made(pact_process *p, void *user)
{
    (void)user;
    getter.made_loop = pact_process_loop(p);
}

static void getter_lost(pact_process *p, void *user)
{
    (void)user;
    getter.lost_loop = pact_process_loop(p);
    getter.remove_result = pact_signal_cancel(getter.lost_loop, getter.sig);
}

static void getter_on_sig(pact_loop *loop, int signo, void *user)
{
    (void)loop;
    (void)signo;
    (void)user;
}

Test(process, its_loop_is_reachable_from_its_callbacks)
{
    pact_loop *loop = test_loop_new();
    memset(&getter, 0, sizeof getter);
    cr_assert_null(pact_process_loop(NULL));
    /* A referenced SIGUSR2 handler keeps the loop alive until
     * connection_lost removes it through pact_process_loop(). */
    getter.sig = pact_signal_add(loop, SIGUSR2, getter_on_sig, NULL);
    cr_assert_gt(getter.sig, 0);
    cr_assert_eq(pact_signal_set_ref(loop, getter.sig, 1), 0);
    static const pact_subprocess_protocol proto = {
        .connection_made = getter_made,
        .connection_lost = getter_lost,
    };
    char *argv[] = {"/bin/true", NULL};
    pact_process_options o;
    pact_process_options_init(&o);
    o.argv = argv;
    pact_process *p = NULL;
    cr_assert_eq(pact_process_spawn(loop, &o, &proto, NULL, &p), 0);
    cr_assert_eq(pact_process_loop(p), loop);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(getter.made_loop, loop);
    cr_assert_eq(getter.lost_loop, loop);
    cr_assert_eq(getter.remove_result, 0);
    cr_assert_eq(pact_loop_alive(loop), 0);
    test_loop_free(loop);
}
