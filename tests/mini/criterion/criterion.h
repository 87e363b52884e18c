/* SPDX-License-Identifier: MIT */
/* A small stand-in for Criterion, used by the ThreadSanitizer build and by
 * the Windows build (Criterion is not built for mingw-w64; see the end).
 *
 * Why: Criterion (through BoxFort) maps its shared arena at a random
 * address between 0x2000'0000'0000 and 0x6000'0000'0000 and gives up after
 * a few tries. ThreadSanitizer (clang 14 and gcc 12 here) reserves almost
 * all of that range for its shadow memory, so 19 starts in 20 abort with
 * "Could not initialize inheritable arena". tests/meson.build builds the
 * binaries that run under TSan (those named *thread*) against this header
 * instead, when they compile with it.
 *
 * It keeps what the suites rely on: Test()/TestSuite() with .timeout,
 * .init, .fini, .disabled, .exit_code, .signal; one forked process per test
 * (a test that crashes or hangs fails alone); the cr_assert / cr_expect
 * families; and Criterion's closing "Synthesis:" line, which
 * tests/run-all.sh reads. Tests run one at a time (--jobs is accepted and
 * ignored); --filter takes a glob on "suite/name"; --list lists. */
#ifndef PACT_MINI_CRITERION_H
#define PACT_MINI_CRITERION_H

#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <winsock2.h> /* before windows.h, as Winsock wants */
#include <windows.h>
#else
#include <fnmatch.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

struct mc_opts {
    int unused_;
    double timeout;
    void (*init)(void);
    void (*fini)(void);
    int disabled;
    const char *description;
    int exit_code;
    int signal;
};

struct mc_test {
    const char *suite, *name;
    void (*fn)(void);
    const struct mc_opts *opts;
};

struct mc_suite {
    const char *name;
    const struct mc_opts *opts;
};

static struct mc_test mc_tests[256];
static int mc_ntests;
static struct mc_suite mc_suites[32];
static int mc_nsuites;
static int mc_failed; /* in the test's process */

static inline void mc_register(const char *suite, const char *name,
                               void (*fn)(void), const struct mc_opts *opts)
{
    if (mc_ntests < (int)(sizeof mc_tests / sizeof mc_tests[0]))
        mc_tests[mc_ntests++] = (struct mc_test){suite, name, fn, opts};
}

static inline void mc_register_suite(const char *name,
                                     const struct mc_opts *opts)
{
    if (mc_nsuites < (int)(sizeof mc_suites / sizeof mc_suites[0]))
        mc_suites[mc_nsuites++] = (struct mc_suite){name, opts};
}

#define TestSuite(sname, ...)                                               \
    static const struct mc_opts mc_suite_opts_##sname = {.unused_ = 0,     \
                                                         __VA_ARGS__};     \
    __attribute__((constructor)) static void mc_reg_suite_##sname(void)     \
    {                                                                       \
        mc_register_suite(#sname, &mc_suite_opts_##sname);                  \
    }                                                                       \
    extern int mc_swallow_semicolon_

#define Test(sname, tname, ...)                                             \
    static void mc_test_##sname##_##tname(void);                            \
    static const struct mc_opts mc_opts_##sname##_##tname = {.unused_ = 0, \
                                                             __VA_ARGS__}; \
    __attribute__((constructor)) static void mc_reg_##sname##_##tname(void) \
    {                                                                       \
        mc_register(#sname, #tname, mc_test_##sname##_##tname,              \
                    &mc_opts_##sname##_##tname);                            \
    }                                                                       \
    static void mc_test_##sname##_##tname(void)

__attribute__((format(printf, 5, 6))) static inline void
mc_report(int fatal, const char *file, int line, const char *expr,
          const char *fmt, ...)
{
    char msg[1024] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[----] %s:%d: Assertion Failed\n[----]   %s\n", file,
            line, msg[0] ? msg : expr);
    fflush(stderr);
    mc_failed = 1;
    if (fatal)
        exit(1);
}

/* "" __VA_ARGS__ turns an absent message into "" and glues a present one
 * (always a string literal first, as in Criterion) onto it. */
#define MC_CHECK(fatal, cond, expr, ...)                                    \
    do {                                                                    \
        if (!(cond))                                                        \
            mc_report((fatal), __FILE__, __LINE__,                          \
                      "The expression " expr " is false.",                  \
                      "" __VA_ARGS__);                                      \
    } while (0)

#define cr_assert(c, ...) MC_CHECK(1, (c), #c, __VA_ARGS__)
#define cr_expect(c, ...) MC_CHECK(0, (c), #c, __VA_ARGS__)
#define cr_assert_not(c, ...) MC_CHECK(1, !(c), "!(" #c ")", __VA_ARGS__)
#define cr_expect_not(c, ...) MC_CHECK(0, !(c), "!(" #c ")", __VA_ARGS__)
#define MC_CMP(f, a, op, b, ...)                                            \
    MC_CHECK(f, (a)op(b), "(" #a ") " #op " (" #b ")", __VA_ARGS__)
#define cr_assert_eq(a, b, ...) MC_CMP(1, a, ==, b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) MC_CMP(1, a, !=, b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...) MC_CMP(1, a, <, b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) MC_CMP(1, a, <=, b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...) MC_CMP(1, a, >, b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) MC_CMP(1, a, >=, b, __VA_ARGS__)
#define cr_expect_eq(a, b, ...) MC_CMP(0, a, ==, b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...) MC_CMP(0, a, !=, b, __VA_ARGS__)
#define cr_expect_lt(a, b, ...) MC_CMP(0, a, <, b, __VA_ARGS__)
#define cr_expect_leq(a, b, ...) MC_CMP(0, a, <=, b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...) MC_CMP(0, a, >, b, __VA_ARGS__)
#define cr_expect_geq(a, b, ...) MC_CMP(0, a, >=, b, __VA_ARGS__)
#define cr_assert_null(p, ...) MC_CHECK(1, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...) MC_CHECK(1, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_expect_null(p, ...) MC_CHECK(0, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_expect_not_null(p, ...) MC_CHECK(0, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...)                                         \
    MC_CHECK(1, strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...)                                        \
    MC_CHECK(1, strcmp((a), (b)) != 0, #a " differs from " #b, __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...)                                         \
    MC_CHECK(0, strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_expect_str_neq(a, b, ...)                                        \
    MC_CHECK(0, strcmp((a), (b)) != 0, #a " differs from " #b, __VA_ARGS__)
#define cr_assert_fail(...) MC_CHECK(1, 0, "failure", __VA_ARGS__)
#define cr_expect_fail(...) MC_CHECK(0, 0, "failure", __VA_ARGS__)
#define cr_fail(...) cr_assert_fail(__VA_ARGS__)
#define cr_log_info(...) (fprintf(stderr, "[----] " __VA_ARGS__), fputc('\n', stderr))
#define cr_log_warn(...) cr_log_info(__VA_ARGS__)
#define cr_log_error(...) cr_log_info(__VA_ARGS__)
#define cr_skip_test(...) exit(0)

static inline const struct mc_opts *mc_suite_opts(const char *suite)
{
    for (int i = 0; i < mc_nsuites; i++)
        if (strcmp(mc_suites[i].name, suite) == 0)
            return mc_suites[i].opts;
    return NULL;
}

static inline double mc_timeout(const struct mc_test *t)
{
    const struct mc_opts *so = mc_suite_opts(t->suite);
    return t->opts->timeout > 0 ? t->opts->timeout
           : so && so->timeout > 0 ? so->timeout
                                   : 60;
}

/* Runs one test's body in this process, then exits with its verdict. */
static inline void mc_run_here(const struct mc_test *t)
{
    const struct mc_opts *so = mc_suite_opts(t->suite);
    void (*init)(void) = t->opts->init ? t->opts->init : so ? so->init : NULL;
    void (*fini)(void) = t->opts->fini ? t->opts->fini : so ? so->fini : NULL;
    mc_failed = 0;
    if (init)
        init();
    t->fn();
    if (fini)
        fini();
    fflush(NULL);
    _exit(mc_failed ? 1 : t->opts->exit_code);
}

#ifdef _WIN32
/* Windows has no fork: each test runs in a fresh copy of this program,
 * started with --mc-run suite/name, waited for with its timeout and
 * terminated when it runs over. A crash is an exception exit code. */
static inline int mc_run_one(const struct mc_test *t)
{
    char self[MAX_PATH], cmd[MAX_PATH + 300];
    GetModuleFileNameA(NULL, self, sizeof self);
    snprintf(cmd, sizeof cmd, "\"%s\" --mc-run %s/%s", self, t->suite,
             t->name);
    STARTUPINFOA si;
    PROCESS_INFORMATION pi;
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    fflush(NULL);
    /* Wine now and then loses a new process before it runs (2 starts in
     * about 1800 at load average 10-14; docs/windows.md: it cannot map
     * its shared user data): the process ends during its start-up with
     * exit code 0 and CreateProcess fails with ERROR_INTERNAL_ERROR. The
     * test did not run, so it is started again (said in the log); any
     * other failure is the test's. tests/process_recorder.h does the same
     * for the children the process suites start. */
    for (int tries = 1;; tries++) {
        if (CreateProcessA(self, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi))
            break;
        DWORD err = GetLastError();
        if (err == ERROR_INTERNAL_ERROR && tries < 3) {
            fprintf(stderr, "[----] %s::%s: CreateProcess failed (%lu): the "
                            "process ended before it ran; starting it again\n",
                    t->suite, t->name, err);
            continue;
        }
        fprintf(stderr, "[FAIL] %s::%s: CreateProcess failed (%lu)\n", t->suite,
                t->name, err);
        return 2;
    }
    DWORD ms = (DWORD)(mc_timeout(t) * 1000);
    int timed_out = WaitForSingleObject(pi.hProcess, ms) == WAIT_TIMEOUT;
    if (timed_out) {
        TerminateProcess(pi.hProcess, 99);
        WaitForSingleObject(pi.hProcess, INFINITE);
    }
    DWORD code = 1;
    GetExitCodeProcess(pi.hProcess, &code);
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
    if (timed_out || code >= 0xC0000000u) {
        fprintf(stderr, "[----] %s::%s: %s\n", t->suite, t->name,
                timed_out ? "Timed out" : "CRASH");
        fprintf(stderr, "[FAIL] %s::%s: %s (code 0x%lx)\n", t->suite, t->name,
                timed_out ? "Timed out" : "CRASH", (unsigned long)code);
        return 2;
    }
    if ((int)code == t->opts->exit_code)
        return 0;
    fprintf(stderr, "[FAIL] %s::%s (exit %lu)\n", t->suite, t->name,
            (unsigned long)code);
    return 1;
}

/* --filter's glob: '*' and '?' are enough for "suite/name" patterns. */
static inline int mc_glob(const char *p, const char *s)
{
    if (*p == '\0')
        return *s == '\0';
    if (*p == '*')
        return mc_glob(p + 1, s) || (*s && mc_glob(p, s + 1));
    return *s && (*p == '?' || *p == *s) && mc_glob(p + 1, s + 1);
}
#define MC_MATCHES(pattern, name) mc_glob((pattern), (name))
#else
#define MC_MATCHES(pattern, name) (fnmatch((pattern), (name), 0) == 0)

/* Runs one test in its own process; returns 0 pass, 1 fail, 2 crash. */
static inline int mc_run_one(const struct mc_test *t)
{
    const struct mc_opts *so = mc_suite_opts(t->suite);
    double timeout = t->opts->timeout > 0 ? t->opts->timeout
                     : so && so->timeout > 0 ? so->timeout
                                             : 60;
    void (*init)(void) = t->opts->init ? t->opts->init : so ? so->init : NULL;
    void (*fini)(void) = t->opts->fini ? t->opts->fini : so ? so->fini : NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        alarm((unsigned)(timeout + 0.999));
        mc_failed = 0;
        if (init)
            init();
        t->fn();
        if (fini)
            fini();
        fflush(NULL);
        _exit(mc_failed ? 1 : t->opts->exit_code);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        ;
    int want_signal = t->opts->signal;
    if (WIFSIGNALED(status)) {
        if (want_signal && WTERMSIG(status) == want_signal)
            return 0;
        fprintf(stderr, "[----] %s::%s: %s\n", t->suite, t->name,
                WTERMSIG(status) == SIGALRM ? "Timed out" : "CRASH");
        fprintf(stderr, "[FAIL] %s::%s: %s (signal %d)\n", t->suite, t->name,
                WTERMSIG(status) == SIGALRM ? "Timed out" : "CRASH",
                WTERMSIG(status));
        return 2;
    }
    int code = WEXITSTATUS(status);
    if (!want_signal && code == t->opts->exit_code)
        return 0;
    fprintf(stderr, "[FAIL] %s::%s (exit %d)\n", t->suite, t->name, code);
    return 1;
}
#endif

int main(int argc, char **argv)
{
    const char *filter = NULL;
    int list = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc)
            filter = argv[++i];
        else if (strncmp(argv[i], "--filter=", 9) == 0)
            filter = argv[i] + 9;
        else if (strcmp(argv[i], "--mc-run") == 0 && i + 1 < argc) {
            /* A test's own process (the Windows runner starts these). */
            for (int k = 0; k < mc_ntests; k++) {
                char full[256];
                snprintf(full, sizeof full, "%s/%s", mc_tests[k].suite,
                         mc_tests[k].name);
                if (strcmp(full, argv[i + 1]) == 0)
                    mc_run_here(&mc_tests[k]);
            }
            fprintf(stderr, "no test %s\n", argv[i + 1]);
            return 2;
        } else if (strcmp(argv[i], "--list") == 0)
            list = 1;
        else if (strcmp(argv[i], "--jobs") == 0 || strcmp(argv[i], "-j") == 0)
            i++;
    }
    int tested = 0, passing = 0, failing = 0, crashing = 0;
#ifdef _WIN32
    /* The first line: a log without it is a program that never reached
     * main() (tests/run-windows.sh tells the two apart). */
    if (!list)
        fprintf(stderr, "[====] Running the tests of %s\n", argv[0]);
#endif
    for (int i = 0; i < mc_ntests; i++) {
        const struct mc_test *t = &mc_tests[i];
        char full[256];
        snprintf(full, sizeof full, "%s/%s", t->suite, t->name);
        if (filter && !MC_MATCHES(filter, full))
            continue;
        if (list) {
            printf("%s\n", full);
            continue;
        }
        const struct mc_opts *so = mc_suite_opts(t->suite);
        if (t->opts->disabled || (so && so->disabled))
            continue;
        tested++;
        int r = mc_run_one(t);
        if (r == 0) {
            passing++;
            fprintf(stderr, "[PASS] %s::%s\n", t->suite, t->name);
        } else if (r == 1) {
            failing++;
        } else {
            crashing++;
        }
    }
    if (list)
        return 0;
    fprintf(stderr,
            "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | "
            "Crashing: %d \n",
            tested, passing, failing + crashing, crashing);
    return failing + crashing ? 1 : 0;
}

#endif
