/* SPDX-License-Identifier: MIT */
/* What the libFuzzer harnesses share (tests/fuzz/fuzz_*.c, each defining
 * FUZZ_NAME, its name in messages, before including this): BUG, which
 * reports a broken promise and aborts (libFuzzer keeps the input); the
 * loop an input runs on; and the checks every input ends with. */
#ifndef PACT_FUZZ_HARNESS_H
#define PACT_FUZZ_HARNESS_H

#include <pact.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../open_fds.h" /* count_open_fds */

#define BUG(...)                                      \
    do {                                              \
        fprintf(stderr, FUZZ_NAME ": " __VA_ARGS__);  \
        fprintf(stderr, "\n");                        \
        abort();                                      \
    } while (0)

/* A loop on the engine PACT_ENGINE names (epoll unless "uring"), without
 * debug mode's messages, and a socket pair in sv. */
static inline pact_loop *fuzz_loop_and_socketpair(int sv[2])
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.debug = 0;
    const char *e = getenv("PACT_ENGINE");
    o.engine = e && !strcmp(e, "uring") ? PACT_ENGINE_URING : PACT_ENGINE_EPOLL;
    pact_loop *loop;
    if (pact_loop_create(&loop, &o) != 0)
        BUG("loop");
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        BUG("socketpair");
    return loop;
}

/* Closes and frees the loop: after its close no op may be live or stray,
 * and the process must have the fds it had before the input (fds0). */
static inline void fuzz_loop_free(pact_loop *loop, int fds0)
{
    pact_loop_stats stt;
    if (pact_loop_close(loop) != 0)
        BUG("loop close");
    pact_loop_get_stats(loop, &stt);
    if (stt.ops_live || stt.stray_completions || stt.ops_started != stt.ops_completed)
        BUG("ops: live %llu stray %llu", (unsigned long long)stt.ops_live,
            (unsigned long long)stt.stray_completions);
    pact_loop_free(loop);
    if (count_open_fds() != fds0)
        BUG("fd leak: %d -> %d", fds0, count_open_fds());
}

#endif
