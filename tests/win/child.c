/* SPDX-License-Identifier: MIT */
/* The child the Windows process and signal suites start (Windows has no
 * sh): one small program whose first argument says what to do.
 *
 *   exit N            exit with code N
 *   sleep MS          sleep, then exit 0
 *   chat N            read a line from stdin, write "out:LINE" to stdout
 *                     and "err:LINE" to stderr, exit N
 *   early N           write "early\n" to stdout and "late\n" to stderr
 *                     (stdin untouched), exit N
 *   cat               copy stdin to stdout until EOF, exit 0
 *   zeros N           write N bytes of 'z' to stdout, exit 0
 *   argv ARGS...      write each argument as "LEN:ARG\n" to stdout
 *   env NAME          write NAME's value, or "(unset)", to stdout
 *   cwd               write the current directory to stdout
 *   close-stdin MS    close stdin, sleep MS, exit 0
 *   std               write "out" to stdout and "err" to stderr, then
 *                     how many bytes stdin gave until EOF ("in:N")
 *   has-handle H      exit 0 if H (a handle value, in decimal) is a
 *                     handle of this process, else 1
 *   ctrl-c            (in a console of its own) handle SIGINT and SIGBREAK
 *                     on a pact loop and raise them with
 *                     GenerateConsoleCtrlEvent (see ctrl_c() for the
 *                     exit codes) */
#include <pact.h> /* first: winsock2.h before windows.h */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

static void write_all(HANDLE h, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        DWORD n = 0;
        if (!WriteFile(h, p, (DWORD)len, &n, NULL) || n == 0)
            exit(90);
        p += n;
        len -= n;
    }
}

static void say(HANDLE h, const char *s)
{
    write_all(h, s, strlen(s));
}

static HANDLE out(void) { return GetStdHandle(STD_OUTPUT_HANDLE); }
static HANDLE err(void) { return GetStdHandle(STD_ERROR_HANDLE); }
static HANDLE in(void) { return GetStdHandle(STD_INPUT_HANDLE); }

static int seen[64];

static void on_signal(pact_loop *loop, int signo, void *user)
{
    (void)loop, (void)user;
    if (signo > 0 && signo < 64)
        seen[signo]++;
}

/* Runs the loop until signo has been seen count times, for at most 5 s
 * by the clock. The handlers are referenced (ctrl_c()), so each turn
 * waits for the event instead of returning at once: with unreferenced
 * handlers nothing keeps the loop alive, run_once does not block, and 500
 * turns took 20-50 ms under Wine, less than a Ctrl-C takes to arrive on a
 * loaded machine (a new thread in this process runs the handlers). */
static int wait_seen(pact_loop *loop, int signo, int count)
{
    uint64_t end = pact_now() + 5000ull * 1000 * 1000;
    while (seen[signo] < count && pact_now() < end)
        pact_loop_run_once(loop, 10 * 1000 * 1000);
    return seen[signo] == count;
}

/* Ctrl-C twice (two deliveries, none merged), then Ctrl-Break. Exit 0: all delivered once each; 5: Ctrl-C
 * delivered, but the system refused to raise Ctrl-Break (Wine 8); other:
 * failed. */
static int ctrl_c(void)
{
    pact_loop *loop = NULL;
    if (pact_loop_create(&loop, NULL) != 0)
        return 2;
    pact_signal on_int = pact_signal_add(loop, SIGINT, on_signal, NULL);
    pact_signal on_break = pact_signal_add(loop, SIGBREAK, on_signal, NULL);
    if (on_int <= 0 || on_break <= 0 || pact_signal_set_ref(loop, on_int, 1) != 0 ||
        pact_signal_set_ref(loop, on_break, 1) != 0)
        return 3;
    for (int k = 1; k <= 2; k++) {
        if (!GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0))
            return 4;
        if (!wait_seen(loop, SIGINT, k))
            return 10 + k;
    }
    int rc = 0;
    if (!GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, 0))
        rc = 5;
    else if (!wait_seen(loop, SIGBREAK, 1))
        rc = 6;
    /* A Ctrl-C delivered twice would show by now. */
    uint64_t settle = pact_now() + 100ull * 1000 * 1000;
    while (pact_now() < settle)
        pact_loop_run_once(loop, 10 * 1000 * 1000);
    if (seen[SIGINT] != 2)
        rc = 7;
    pact_loop_free(loop);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 100;
    const char *what = argv[1];
    if (strcmp(what, "exit") == 0 && argc > 2)
        ExitProcess((UINT)strtoul(argv[2], NULL, 0)); /* all 32 bits */
    if (strcmp(what, "sleep") == 0 && argc > 2) {
        Sleep((DWORD)atoi(argv[2]));
        return 0;
    }
    if (strcmp(what, "chat") == 0 && argc > 2) {
        char line[256];
        size_t n = 0;
        DWORD got;
        while (n < sizeof line - 1 && ReadFile(in(), line + n, 1, &got, NULL) &&
               got == 1 && line[n] != '\n')
            n++;
        line[n] = 0;
        char buf[300];
        snprintf(buf, sizeof buf, "out:%s\n", line);
        say(out(), buf);
        snprintf(buf, sizeof buf, "err:%s\n", line);
        say(err(), buf);
        return atoi(argv[2]);
    }
    if (strcmp(what, "early") == 0 && argc > 2) {
        say(out(), "early\n");
        say(err(), "late\n");
        return atoi(argv[2]);
    }
    if (strcmp(what, "cat") == 0) {
        char buf[16384];
        DWORD got;
        while (ReadFile(in(), buf, sizeof buf, &got, NULL) && got > 0)
            write_all(out(), buf, got);
        return 0;
    }
    if (strcmp(what, "zeros") == 0 && argc > 2) {
        static char buf[65536];
        memset(buf, 'z', sizeof buf);
        long long left = atoll(argv[2]);
        while (left > 0) {
            size_t n = left < (long long)sizeof buf ? (size_t)left : sizeof buf;
            write_all(out(), buf, n);
            left -= (long long)n;
        }
        return 0;
    }
    if (strcmp(what, "argv") == 0) {
        for (int i = 2; i < argc; i++) {
            char head[32];
            snprintf(head, sizeof head, "%u:", (unsigned)strlen(argv[i]));
            say(out(), head);
            say(out(), argv[i]);
            say(out(), "\n");
        }
        return 0;
    }
    if (strcmp(what, "env") == 0 && argc > 2) {
        const char *v = getenv(argv[2]);
        say(out(), v ? v : "(unset)");
        return 0;
    }
    if (strcmp(what, "cwd") == 0) {
        char dir[MAX_PATH];
        DWORD n = GetCurrentDirectoryA(sizeof dir, dir);
        write_all(out(), dir, n);
        return 0;
    }
    if (strcmp(what, "close-stdin") == 0 && argc > 2) {
        CloseHandle(in());
        Sleep((DWORD)atoi(argv[2]));
        return 0;
    }
    if (strcmp(what, "std") == 0) {
        say(out(), "out");
        say(err(), "err");
        char buf[4096], msg[64];
        DWORD got;
        long total = 0;
        HANDLE h = in();
        while (h && h != INVALID_HANDLE_VALUE &&
               ReadFile(h, buf, sizeof buf, &got, NULL) && got > 0)
            total += (long)got;
        snprintf(msg, sizeof msg, "in:%ld", total);
        say(out(), msg);
        return 0;
    }
    if (strcmp(what, "has-handle") == 0 && argc > 2) {
        DWORD flags;
        return GetHandleInformation((HANDLE)(intptr_t)atoll(argv[2]), &flags)
                   ? 0
                   : 1;
    }
    if (strcmp(what, "ctrl-c") == 0)
        return ctrl_c();
    return 100;
}
