/* SPDX-License-Identifier: MIT */
/* run: runs a command, streams its stdout and stderr, forwards SIGINT and
 * SIGTERM to it, and exits with its status (128 + N when a signal N killed
 * it, as a shell reports it).
 *
 *   ./run sh -c 'echo hello; echo oops >&2; exit 3'; echo $?   -> 3
 *
 * A terminal's ^C already goes to the child too (same process group); the
 * forwarding matters when only `run` is signalled (kill -INT <pid>). */
#include <errno.h>
#include <pact.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#ifdef _WIN32
#include <fcntl.h>
#include <io.h>
#endif

typedef struct run {
    pact_process *proc;
    int returncode;
    int done;
} run;

static void write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* our own stdout is gone: nothing sensible to do */
        data += n;
        len -= (size_t)n;
    }
}

static void on_data(pact_process *p, int fd, const void *data, size_t len,
                    void *user)
{
    (void)p, (void)user;
    write_all(fd, data, len); /* the child's fd 1 -> our 1, 2 -> our 2 */
}

static void on_exited(pact_process *p, void *user)
{
    run *r = user;
    pact_process_returncode(p, &r->returncode);
}

static void on_lost(pact_process *p, void *user)
{
    (void)p;
    run *r = user;
    r->proc = NULL; /* freed after this returns */
    r->done = 1;
}

static const pact_subprocess_protocol proto = {
    .pipe_data_received = on_data,
    .process_exited = on_exited,
    .connection_lost = on_lost,
};

static void forward(pact_loop *loop, int signo, void *user)
{
    (void)loop;
    run *r = user;
    if (r->proc)
        pact_process_send_signal(r->proc, signo); /* -ESRCH once it exited */
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s command [args...]\n", argv[0]);
        return 2;
    }
#ifdef SIGPIPE /* Windows has none */
    signal(SIGPIPE, SIG_IGN); /* a closed stdout of ours is not fatal */
#endif
#ifdef _WIN32
    /* The child's bytes pass through as they are (no \r added). */
    _setmode(1, _O_BINARY);
    _setmode(2, _O_BINARY);
#endif
    pact_loop *loop;
    int e = pact_loop_create(&loop, NULL);
    if (e < 0) {
        fprintf(stderr, "run: loop: %s\n", pact_strerror(e));
        return 1;
    }
    run r = {0};
    pact_signal sigs[2] = {pact_signal_add(loop, SIGINT, forward, &r),
                           pact_signal_add(loop, SIGTERM, forward, &r)};
    pact_process_options o = {.size = sizeof o, .argv = argv + 1};
    o.stdio[0].kind = PACT_STDIO_INHERIT;
    o.stdio[1].kind = PACT_STDIO_PIPE;
    o.stdio[2].kind = PACT_STDIO_PIPE;
    e = pact_process_spawn(loop, &o, &proto, &r, &r.proc);
    if (e < 0) {
        fprintf(stderr, "run: %s: %s\n", argv[1], pact_strerror(e));
        pact_loop_free(loop);
        return e == -ENOENT ? 127 : 126; /* what a shell says */
    }
    while (!r.done)
        pact_loop_run_once(loop, -1);
    for (int i = 0; i < 2; i++)
        if (sigs[i] > 0)
            pact_signal_cancel(loop, sigs[i]);
    pact_loop_free(loop);
    return r.returncode >= 0 ? r.returncode : 128 - r.returncode;
}
