/* SPDX-License-Identifier: MIT */
/* Subprocesses on Windows: the same protocol order as on Linux (checked
 * by tests/process_recorder.h, as there), CreateProcess with every stdio
 * kind, argv quoted so the child's C runtime gives it back
 * unchanged, the child's environment, PATH and directory, kill and
 * terminate (TerminateProcess: exit code 1), close killing a running
 * child and not one that has exited, loop close, waits, and spawn
 * failures leaving no handle — counted by pact and by the system (every
 * handle value GetHandleInformation accepts: Wine's GetProcessHandleCount
 * answers 0). The child is tests/win/child.exe (there is no sh). */
#include <signal.h>
#include <stdio.h>

#include "helpers.h"
#include "../process_recorder.h"
#include "win/posix.h" /* ESHUTDOWN, which the C runtime lacks */

TestSuite(process, .timeout = 120);

long pact__win_process_handles_held(void);

/* ---- Windows helpers ---------------------------------------------------------- */

/* tests/win/child.exe, beside this program. */
static const char *child_path(void)
{
    static char path[MAX_PATH];
    if (!path[0]) {
        DWORD n = GetModuleFileNameA(NULL, path, sizeof path);
        cr_assert(n > 0 && n < sizeof path);
        char *slash = strrchr(path, '\\');
        cr_assert_not_null(slash);
        snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path),
                 "child.exe");
    }
    return path;
}

/* The directory of child.exe, for PATH. */
static const char *child_dir(void)
{
    static char dir[MAX_PATH];
    snprintf(dir, sizeof dir, "%s", child_path());
    *strrchr(dir, '\\') = 0;
    return dir;
}

/* The handles of this process, as the system sees them: every handle
 * value GetHandleInformation accepts. */
static int os_handles(void)
{
    int n = 0;
    for (ULONG_PTR v = 4; v < (1u << 18); v += 4) {
        DWORD flags;
        if (GetHandleInformation((HANDLE)v, &flags))
            n++;
    }
    return n;
}

/* The handles of this process that are pipes, or processes, as the
 * system sees them: exact where os_handles() is not, since the threads
 * the system's pools start and end at will hold neither. The pipes of a
 * child pact spawns are named pipes. */
static int is_pipe(HANDLE h)
{
    return GetFileType(h) == FILE_TYPE_PIPE;
}

static int is_process(HANDLE h)
{
    return GetProcessId(h) != 0;
}

static int os_handles_that(int (*kind)(HANDLE))
{
    int n = 0;
    for (ULONG_PTR v = 4; v < (1u << 18); v += 4) {
        DWORD flags;
        if (GetHandleInformation((HANDLE)v, &flags) && kind((HANDLE)v))
            n++;
    }
    return n;
}

/* A fresh temporary file the child's output goes to (an inheritable-
 * duplicated HANDLE in PACT_STDIO_FD), read back by file_text(). */
typedef struct out_file {
    char path[MAX_PATH];
    HANDLE h;
} out_file;

static void out_file_open(out_file *f)
{
    static int serial;
    char dir[MAX_PATH];
    GetTempPathA(sizeof dir, dir);
    snprintf(f->path, sizeof f->path, "%spact-proc-%lu-%d.txt", dir,
             GetCurrentProcessId(), serial++);
    f->h = CreateFileA(f->path, GENERIC_READ | GENERIC_WRITE,
                       FILE_SHARE_READ | FILE_SHARE_WRITE, NULL, CREATE_ALWAYS,
                       FILE_ATTRIBUTE_TEMPORARY, NULL);
    cr_assert_neq(f->h, INVALID_HANDLE_VALUE);
}

/* The file's bytes as a string (the child has exited). */
static char *out_file_text(out_file *f)
{
    static char text[8192];
    DWORD n = 0;
    cr_assert_neq(SetFilePointer(f->h, 0, NULL, FILE_BEGIN),
                  INVALID_SET_FILE_POINTER);
    cr_assert(ReadFile(f->h, text, sizeof text - 1, &n, NULL));
    text[n] = 0;
    return text;
}

static void out_file_close(out_file *f)
{
    CloseHandle(f->h);
    DeleteFileA(f->path);
}

static void set_fd(pact_process_options *o, int i, HANDLE h)
{
    o->stdio[i].kind = PACT_STDIO_FD;
    o->stdio[i].fd = (int)(intptr_t)h;
}

/* Blocks until the child has exited (without the loop seeing it). */
static void wait_exited(pact_process *p)
{
    HANDLE h = OpenProcess(SYNCHRONIZE, FALSE, (DWORD)pact_process_pid(p));
    cr_assert_not_null(h);
    cr_assert_eq(WaitForSingleObject(h, 10000), WAIT_OBJECT_0);
    CloseHandle(h);
}

#define CHILD(...) {(char *)child_path(), __VA_ARGS__, NULL}

/* ---- exit and order -------------------------------------------------------------- */

Test(process, exit_code_in_order)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("exit", "7");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    int rc;
    cr_assert_eq(pact_process_returncode(p, &rc), -EAGAIN);
    cr_assert_eq(pact_process_loop(p), loop);
    cr_assert_eq(pact_process_user(p), &r);
    cr_assert_null(pact_process_pipe(p, 1));
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 7);
    cr_assert_eq(pact__win_process_handles_held(), 0);
    test_loop_free(loop);
}

/* Exits before setup with no pipes at all: the exit is the first event
 * the loop sees, in the same iteration as connection_made or earlier. */
Test(process, exits_before_setup_no_pipes)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("exit", "1");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    wait_exited(p);
    Sleep(50); /* the wait's packet is queued before the loop runs */
    pact_loop_run_once(loop, 0);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 1);
    test_loop_free(loop);
}

/* Exit codes are 32 bits on Windows: one above 255 comes back whole. */
Test(process, wide_exit_code)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("exit", "4660");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 4660);
    test_loop_free(loop);
}

/* An NTSTATUS exit code (a crash: 0xC0000005) is negative as an int; a
 * wait gets it unsigned, so it is never taken for -ECANCELED. */
static void record_wait(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    int64_t *out = user;
    *out = c->result;
}

Test(process, ntstatus_exit_code)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("exit", "0xC0000005");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    int64_t waited = 0;
    cr_assert_gt(pact_process_wait(p, record_wait, &waited), 0);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, (int)0xC0000005u);
    cr_assert_eq(waited, (int64_t)0xC0000005u);
    test_loop_free(loop);
}

/* ---- what the child is given ---------------------------------------------------- */

Test(process, argv_quoted_for_the_c_runtime)
{
    pact_loop *loop = test_loop_new();
    /* Blanks, quotes, backslashes before quotes and at the end, an empty
     * argument, a UNC-like path, tabs: each must arrive unchanged. */
    static const char *args[] = {
        "plain", "two words", "", "\"", "a\"b", "\\", "a\\", "a\\\\",
        "a\\\"b", "a\\\\\"b", "\\\\server\\share\\", "trailing space ",
        "tab\there", "back\\slash\\in\\middle", "\"quoted\"", "x\\\\\\\"y",
        "%PATH%", "semi;colon", "new\nline",
    };
    enum { N = sizeof args / sizeof args[0] };
    char *argv[N + 3];
    argv[0] = (char *)child_path();
    argv[1] = "argv";
    for (int i = 0; i < N; i++)
        argv[i + 2] = (char *)args[i];
    argv[N + 2] = NULL;
    out_file f;
    out_file_open(&f);
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_fd(&o, 1, f.h);
    rec r = {0};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 0);
    char expect[4096] = "", item[512];
    for (int i = 0; i < N; i++) {
        snprintf(item, sizeof item, "%u:%s\n", (unsigned)strlen(args[i]),
                 args[i]);
        strcat(expect, item);
    }
    cr_assert_str_eq(out_file_text(&f), expect);
    out_file_close(&f);
    test_loop_free(loop);
}

Test(process, environment_path_and_directory)
{
    pact_loop *loop = test_loop_new();
    /* The program found by name in the PATH of the child's environment
     * (not this process's), with ".exe" added. */
    char path_var[MAX_PATH + 8];
    snprintf(path_var, sizeof path_var, "PATH=%s", child_dir());
    char *envp[] = {"PACT_TEST_VALUE=with spaces = and more", path_var,
                    "SystemRoot=C:\\windows", NULL};
    char *argv[] = {"child", "env", "PACT_TEST_VALUE", NULL};
    out_file f;
    out_file_open(&f);
    pact_process_options o = {.size = sizeof o, .argv = argv, .envp = envp};
    set_fd(&o, 1, f.h);
    rec r = {0};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 0);
    cr_assert_str_eq(out_file_text(&f), "with spaces = and more");
    out_file_close(&f);

    /* Not in this process's environment: unset in an inherited one. */
    char *argv2[] = CHILD("env", "PACT_TEST_VALUE");
    out_file f2;
    out_file_open(&f2);
    pact_process_options o2 = {.size = sizeof o2, .argv = argv2};
    set_fd(&o2, 1, f2.h);
    rec r2 = {0};
    spawn(loop, &o2, &r2);
    pact_loop_run(loop);
    cr_assert_str_eq(out_file_text(&f2), "(unset)");
    out_file_close(&f2);

    /* cwd. */
    char dir[MAX_PATH];
    GetTempPathA(sizeof dir, dir);
    dir[strlen(dir) - 1] = 0; /* no trailing backslash */
    char *argv3[] = CHILD("cwd");
    out_file f3;
    out_file_open(&f3);
    pact_process_options o3 = {.size = sizeof o3, .argv = argv3, .cwd = dir};
    set_fd(&o3, 1, f3.h);
    rec r3 = {0};
    spawn(loop, &o3, &r3);
    pact_loop_run(loop);
    cr_assert_eq(_stricmp(out_file_text(&f3), dir), 0, "%s vs %s",
                 out_file_text(&f3), dir);
    out_file_close(&f3);
    test_loop_free(loop);
}

/* Only the three standard handles reach the child: an inheritable handle
 * of this process does not (another child's pipe end would hide its EOF). */
Test(process, only_the_standard_handles_are_inherited)
{
    pact_loop *loop = test_loop_new();
    SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
    HANDLE ev = CreateEventA(&sa, TRUE, FALSE, NULL);
    cr_assert_not_null(ev);
    char value[32];
    snprintf(value, sizeof value, "%lld", (long long)(intptr_t)ev);
    char *argv[] = CHILD("has-handle", value);
    pact_process_options o = {.size = sizeof o, .argv = argv};
    o.stdio[0].kind = PACT_STDIO_DEVNULL;
    rec r = {0};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 1, "the child holds an inheritable handle "
                                  "it was not given");
    CloseHandle(ev);
    test_loop_free(loop);
}

/* DEVNULL gives EOF at once; STDOUT puts stderr where stdout goes; FD 1
 * is this process's own stdout... here the file (as a HANDLE). */
Test(process, devnull_fd_and_stderr_to_stdout)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("std");
    out_file f;
    out_file_open(&f);
    pact_process_options o = {.size = sizeof o, .argv = argv};
    o.stdio[0].kind = PACT_STDIO_DEVNULL;
    set_fd(&o, 1, f.h);
    o.stdio[2].kind = PACT_STDIO_STDOUT;
    rec r = {0};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 0);
    cr_assert_str_eq(out_file_text(&f), "outerrin:0");
    out_file_close(&f);
    test_loop_free(loop);
}

/* ---- kill, terminate, signals ------------------------------------------------------ */

static void kill_case(int (*send)(pact_process *))
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("sleep", "60000");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    run_until(loop, &r.made, 5000);
    cr_assert_eq(pact_process_send_signal(p, 0), 0, "still running");
    uint64_t start = pact_now();
    cr_assert_eq(send(p), 0);
    pact_loop_run(loop);
    cr_assert_lt(pact_now() - start, 10000 * MS);
    assert_finished(&r, &o);
    /* TerminateProcess with exit code 1, as asyncio and libuv: Windows
     * has no signal to report. */
    cr_assert_eq(r.returncode, 1);
    test_loop_free(loop);
}

Test(process, kill) { kill_case(pact_process_kill); }
Test(process, terminate) { kill_case(pact_process_terminate); }

Test(process, signal_after_exit_is_esrch)
{
    pact_loop *loop = test_loop_new();
    /* A bystander that must survive. */
    char *sleeper_argv[] = CHILD("sleep", "60000");
    pact_process_options so = {.size = sizeof so, .argv = sleeper_argv};
    rec sr = {0};
    pact_process *sleeper = spawn(loop, &so, &sr);

    char *argv[] = CHILD("exit", "0");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {.kill_in_exited = 1};
    spawn(loop, &o, &r);
    run_until(loop, &r.lost, 10000);
    cr_assert_eq(r.kill_result, -ESRCH);
    cr_assert_eq(r.kill_in_lost_result, -ESRCH);
    cr_assert_eq(r.close_in_lost_result, -EALREADY);
    cr_assert_eq(sr.exited, 0, "the bystander was hit");
    cr_assert_eq(pact_process_send_signal(sleeper, 99), -EINVAL);
    /* What Windows cannot deliver says so. */
    cr_assert_eq(pact_process_send_signal(sleeper, SIGINT), -ENOTSUP);
    cr_assert_eq(pact_process_send_signal(sleeper, SIGBREAK), -ENOTSUP,
                 "Ctrl-Break needs the child's own process group");
    cr_assert_eq(pact_process_close(sleeper), 0);
    cr_assert_eq(pact_process_close(sleeper), -EALREADY);
    cr_assert_eq(pact_process_kill(sleeper), -ESRCH, "signal after close");
    pact_loop_run(loop);
    cr_assert_eq(sr.returncode, 1);
    cr_assert_eq(sr.close_in_lost_result, -EALREADY);
    test_loop_free(loop);
}

/* ---- close ------------------------------------------------------------------------- */

Test(process, close_kills_running)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("sleep", "60000");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    run_until(loop, &r.made, 5000);
    uint64_t start = pact_now();
    cr_assert_eq(pact_process_close(p), 0);
    pact_loop_run(loop);
    cr_assert_lt(pact_now() - start, 10000 * MS);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 1);
    cr_assert_eq(pact__win_process_handles_held(), 0);
    test_loop_free(loop);
}

Test(process, close_does_not_kill_finished)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("exit", "7");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    wait_exited(p);
    cr_assert_eq(pact_process_close(p), 0); /* exited, not reported yet */
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 7);
    test_loop_free(loop);
}

Test(process, close_before_connection_made)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("sleep", "60000");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    cr_assert_eq(pact_process_close(p), 0);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.made, 1);
    cr_assert_eq(r.returncode, 1);
    test_loop_free(loop);
}

Test(process, loop_close_kills_and_waits)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("sleep", "60000");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    HANDLE h = OpenProcess(SYNCHRONIZE, FALSE, (DWORD)pact_process_pid(p));
    cr_assert_not_null(h);
    pact_loop_run_once(loop, 0);
    test_loop_free(loop); /* closes the loop with the process open */
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 1);
    cr_assert_eq(WaitForSingleObject(h, 0), WAIT_OBJECT_0, "still running");
    CloseHandle(h);
    cr_assert_eq(pact__win_process_handles_held(), 0);
}

/* ---- waiting ------------------------------------------------------------------------ */

Test(process, wait_many_and_cancel)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("sleep", "60000");
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
    run_until(loop, &w[2].calls, 5000);
    cr_assert_eq(w[2].result, -ETIMEDOUT);
    cr_assert_eq(pact_process_terminate(p), 0);
    pact_loop_run(loop);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(w[i].calls, 1);
        cr_assert_eq(w[i].result, 1);
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
    char *argv[] = CHILD("exit", "42");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    waited w = {0};
    pact_process *p;
    cr_assert_eq(spawn_started(loop, &o, &proto, &w, &p), 0);
    pact_loop_run(loop);
    cr_assert_eq(w.calls, 1);
    cr_assert_eq(w.result, 42);
    test_loop_free(loop);
}

/* ---- spawn failures ------------------------------------------------------------------ */

static int spawn_err(pact_loop *loop, pact_process_options *o)
{
    int e = spawn_refused(loop, o);
    cr_assert_eq(pact__win_process_handles_held(), 0, "a handle is left");
    return e;
}

Test(process, spawn_failures_leave_nothing)
{
    pact_loop *loop = test_loop_new();
    pact_process_options o = PACT_PROCESS_OPTIONS_INIT;
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_PIPE);
    /* Warm up what the system keeps open after a first use (the console,
     * the NUL device's driver, the pipe file system). */
    char *nope[] = {"C:\\nonexistent\\pact-no-such-program.exe", NULL};
    o.argv = nope;
    cr_assert_eq(spawn_err(loop, &o), -ENOENT);
    int handles = os_handles();

    cr_assert_eq(spawn_err(loop, &o), -ENOENT);
    char *nope2[] = {"pact-no-such-program-in-path", NULL};
    o.argv = nope2;
    cr_assert_eq(spawn_err(loop, &o), -ENOENT);

    /* A file that is not a program: CreateProcess refuses it after every
     * pipe was made. */
    char path[MAX_PATH], dir[MAX_PATH];
    GetTempPathA(sizeof dir, dir);
    snprintf(path, sizeof path, "%spact-not-a-program-%lu.exe", dir,
             GetCurrentProcessId());
    HANDLE f = CreateFileA(path, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
    cr_assert_neq(f, INVALID_HANDLE_VALUE);
    DWORD n;
    cr_assert(WriteFile(f, "not a program\n", 14, &n, NULL));
    CloseHandle(f);
    char *noexec[] = {path, NULL};
    o.argv = noexec;
    int e = spawn_err(loop, &o);
    cr_assert_eq(e, -ENOEXEC, "got %s", pact_err_name(e));
    DeleteFileA(path);

    char *ok[] = CHILD("exit", "0");
    o.argv = ok;
    o.cwd = "C:\\nonexistent-dir";
    cr_assert_eq(spawn_err(loop, &o), -ENOENT);
    o.cwd = child_path(); /* a file */
    cr_assert_eq(spawn_err(loop, &o), -ENOTDIR);
    o.cwd = NULL;

    /* What Windows does not have. */
    o.new_session = 1;
    cr_assert_eq(spawn_err(loop, &o), -ENOTSUP);
    o.new_session = 0;
    o.set_umask = 1;
    cr_assert_eq(spawn_err(loop, &o), -ENOTSUP);
    o.set_umask = 0;

    /* Misuse. */
    char *quoted0[] = {"child\"", NULL};
    o.argv = quoted0;
    cr_assert_eq(spawn_err(loop, &o), -EINVAL, "a quote in argv[0]");
    o.argv = NULL;
    cr_assert_eq(spawn_err(loop, &o), -EINVAL);
    o.argv = ok;
    o.stdio[1].kind = PACT_STDIO_STDOUT;
    cr_assert_eq(spawn_err(loop, &o), -EINVAL);
    o.stdio[1].kind = PACT_STDIO_FD;
    o.stdio[1].fd = -1;
    cr_assert_eq(spawn_err(loop, &o), -EBADF);
    o.stdio[1].kind = PACT_STDIO_PIPE;
    pact_process *p;
    cr_assert_eq(pact_process_spawn(loop, &o, NULL, NULL, &p), -EINVAL);
    cr_assert_eq(pact_process_spawn(NULL, &o, &rec_proto, NULL, &p), -EINVAL);

    cr_assert_eq(os_handles(), handles, "handle leak: %d before, %d after",
                 handles, os_handles());
    test_loop_free(loop);
}

/* ---- many short-lived children ------------------------------------------------------ */

#define MANY_TOTAL 60
#define MANY_CONCURRENT 10

typedef struct many {
    pact_loop *loop;
    int started, finished, bad;
} many;

static void many_start(many *m);

static void many_lost(pact_process *p, void *user)
{
    many *m = user;
    int rc;
    if (pact_process_returncode(p, &rc) != 0 || rc != 3)
        m->bad++;
    m->finished++;
    many_start(m);
}

static void many_start(many *m)
{
    static const pact_subprocess_protocol proto = {.connection_lost = many_lost};
    if (m->started == MANY_TOTAL)
        return;
    char *argv[] = CHILD("exit", "3");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    pact_process *p;
    int r = spawn_started(m->loop, &o, &proto, m, &p);
    /* Seen once under heavy load, before this said why: name the error. */
    cr_assert_eq(r, 0, "spawn %d of %d: %s (%s)", m->started + 1, MANY_TOTAL,
                 pact_err_name(r), pact_strerror(r));
    m->started++;
}

Test(process, many_children)
{
    pact_loop *loop = test_loop_new();
    /* One first: the system's wait threads, made on first use, stay. */
    char *argv[] = CHILD("exit", "3");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    rec r = {0};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    int handles = os_handles();
    int processes = os_handles_that(is_process);
    many m = {.loop = loop};
    for (int i = 0; i < MANY_CONCURRENT; i++)
        many_start(&m);
    pact_loop_run(loop);
    cr_assert_eq(m.finished, MANY_TOTAL);
    cr_assert_eq(m.bad, 0);
    cr_assert_eq(pact__win_process_handles_held(), 0);
    /* The system's pool threads (waits, and the thread pool's own) come
     * and go and hold a handle each, so the count may move by a few; a
     * handle left per child would add MANY_TOTAL. */
    int after = os_handles();
    cr_assert_leq(after, handles + 3, "handle leak: %d before, %d after",
                  handles, after);
    /* Exactly: no child's process handle is left. */
    cr_assert_eq(os_handles_that(is_process), processes,
                 "process handle leak: %d before, %d after", processes,
                 os_handles_that(is_process));
    test_loop_free(loop);
}

/* ---- pipes ------------------------------------------------------------------------------ */

Test(process, all_pipes)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("chat", "3");
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
    cr_assert_eq(pact__win_process_handles_held(), 0);
    test_loop_free(loop);
}

Test(process, stderr_to_stdout_pipe)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("std");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_DEVNULL, PACT_STDIO_PIPE, PACT_STDIO_STDOUT);
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    cr_assert_null(pact_process_pipe(p, 0));
    cr_assert_null(pact_process_pipe(p, 2));
    cr_assert_eq(pact_process_write(p, "x", 1), -EPIPE);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_str_eq(r.out[1], "outerrin:0");
    cr_assert_eq(r.len[2], 0);
    cr_assert_eq(r.returncode, 0);
    test_loop_free(loop);
}

Test(process, interactive_cat)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("cat");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_INHERIT);
    chat c = {0};
    pact_process *p;
    cr_assert_eq(spawn_started(loop, &o, &chat_proto, &c, &p), 0);
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
    char *argv[] = CHILD("zeros", "5000000");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_DEVNULL, PACT_STDIO_PIPE, PACT_STDIO_PIPE);
    rec r = {.pause_every = 256 * 1024};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.len[1], 5000000, "got %llu bytes", (unsigned long long)r.len[1]);
    cr_assert_eq(r.nonzero, 5000000, "every byte is 'z'... counted");
    cr_assert_eq(r.len[2], 0);
    cr_assert_gt(r.pauses, 10);
    cr_assert_eq(r.returncode, 0);
    test_loop_free(loop);
}

Test(process, stdin_broken_pipe)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("exit", "0");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_DEVNULL, PACT_STDIO_DEVNULL);
    /* At the exit, write into the pipe nobody reads. */
    rec r = {.write_in_exited = 1};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    assert_finished(&r, &o);
    int w = r.write_result;
    cr_assert(w == 0 || w == -EPIPE || w == -ESHUTDOWN, "write: %d", w);
    cr_assert_eq(r.pipe_err[0], -EPIPE, "stdin lost with %d", r.pipe_err[0]);
    cr_assert_eq(r.returncode, 0);
    test_loop_free(loop);
}

/* The child is gone, its output waiting in the pipes, before any
 * callback: the order holds and nothing is lost. */
Test(process, exits_before_setup_with_pipes)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("early", "5");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_PIPE);
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    wait_exited(p);
    Sleep(50); /* the wait's packet is queued before the loop runs */
    pact_loop_run(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.made, 1);
    cr_assert_str_eq(r.out[1], "early\n");
    cr_assert_str_eq(r.out[2], "late\n");
    cr_assert_eq(r.returncode, 5);
    test_loop_free(loop);
}

Test(process, close_kills_running_with_pipes)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("sleep", "60000");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_PIPE);
    rec r = {0};
    pact_process *p = spawn(loop, &o, &r);
    run_until(loop, &r.made, 5000);
    uint64_t start = pact_now();
    cr_assert_eq(pact_process_close(p), 0);
    pact_loop_run(loop);
    cr_assert_lt(pact_now() - start, 10000 * MS);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 1);
    test_loop_free(loop);
}

Test(process, loop_close_with_pipes_open)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("sleep", "60000");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_PIPE);
    rec r = {0};
    spawn(loop, &o, &r);
    pact_loop_run_once(loop, 0);
    test_loop_free(loop);
    assert_finished(&r, &o);
    cr_assert_eq(r.returncode, 1);
    cr_assert_eq(pact__win_process_handles_held(), 0);
}

/* A failure after every pipe was made (no program to start) leaves no
 * pipe end open: the system's count says so. */
Test(process, pipes_of_a_failed_spawn_are_closed)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = CHILD("exit", "0");
    pact_process_options o = {.size = sizeof o, .argv = argv};
    set_stdio(&o, PACT_STDIO_PIPE, PACT_STDIO_PIPE, PACT_STDIO_PIPE);
    /* Warm up: one child with pipes. */
    rec r = {0};
    spawn(loop, &o, &r);
    pact_loop_run(loop);
    int pipes = os_handles_that(is_pipe);
    o.cwd = child_path(); /* a file: -ENOTDIR, checked before the pipes */
    cr_assert_eq(spawn_err(loop, &o), -ENOTDIR);
    o.cwd = NULL;
    char path[MAX_PATH], dir[MAX_PATH];
    GetTempPathA(sizeof dir, dir);
    snprintf(path, sizeof path, "%spact-no-program-%lu.exe", dir,
             GetCurrentProcessId());
    HANDLE f = CreateFileA(path, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
    cr_assert_neq(f, INVALID_HANDLE_VALUE);
    CloseHandle(f); /* empty: no program */
    char *noexec[] = {path, NULL};
    o.argv = noexec;
    int e = spawn_err(loop, &o);
    cr_assert_eq(e, -ENOEXEC, "got %s", pact_err_name(e));
    DeleteFileA(path);
    /* Pipes only: the warm-up child's wait thread may end meanwhile and
     * take its handle with it; a failed spawn leaving its pipes would
     * add six. */
    int after = os_handles_that(is_pipe);
    cr_assert_eq(after, pipes, "pipe handle leak: %d before, %d after",
                 pipes, after);
    test_loop_free(loop);
}
