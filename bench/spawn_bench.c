/* SPDX-License-Identifier: MIT */
/* spawn_bench: how many spawn + wait of /bin/true per second, with up to
 * C children at a time (default 1: strictly one after the other).
 *
 *   PACT_ENGINE=uring ./spawn_bench [total=2000] [concurrency=1]
 *
 * Each child gets /dev/null for its stdio (no pipes), so this measures the
 * clone + exec + exit + pidfd poll + waitid path. */
#include <pact.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct bench {
    pact_loop *loop;
    int total, started, finished, failed;
} bench;

static void start_one(bench *b);

static void on_lost(pact_process *p, void *user)
{
    bench *b = user;
    int rc;
    if (pact_process_returncode(p, &rc) != 0 || rc != 0)
        b->failed++;
    b->finished++;
    start_one(b);
}

static const pact_subprocess_protocol proto = {.connection_lost = on_lost};

static void start_one(bench *b)
{
    if (b->started >= b->total)
        return;
    static char *argv[] = {"/bin/true", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    for (int i = 0; i < 3; i++)
        o.stdio[i].kind = PACT_STDIO_DEVNULL;
    pact_process *p;
    int e = pact_process_spawn(b->loop, &o, &proto, b, &p);
    if (e < 0) {
        fprintf(stderr, "spawn: %s\n", pact_strerror(e));
        exit(1);
    }
    b->started++;
}

int main(int argc, char **argv)
{
    bench b = {.total = argc > 1 ? atoi(argv[1]) : 2000};
    int conc = argc > 2 ? atoi(argv[2]) : 1;
    if (pact_loop_create(&b.loop, NULL) < 0)
        return 1;
    uint64_t t0 = pact_now();
    for (int i = 0; i < conc; i++)
        start_one(&b);
    pact_loop_run(b.loop);
    double secs = (double)(pact_now() - t0) / 1e9;
    printf("%s: %d spawn+wait of /bin/true, concurrency %d: %.0f per second "
           "(%.1f us each)%s\n",
           pact_loop_engine_name(b.loop), b.finished, conc,
           b.finished / secs, secs * 1e6 / b.finished,
           b.failed ? " (some failed!)" : "");
    pact_loop_free(b.loop);
    return b.failed != 0;
}
