/* SPDX-License-Identifier: MIT */
/* hello: the smallest pact program — a timer, two sleeps, one cancel. */
#include <stdio.h>

#include <pact.h>

#define MS 1000000ull

static void on_timer(pact_loop *loop, void *user)
{
    (void)loop;
    printf("timer: %s\n", (const char *)user);
}

static void on_sleep(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    printf("sleep %s: %s\n", (const char *)user,
           c->result == 0 ? "done" : pact_err_name((int)c->result));
}

int main(void)
{
    pact_loop *loop;
    if (pact_loop_create(&loop, NULL) != 0)
        return 1;
    printf("engine: %s\n", pact_loop_engine_name(loop));

    pact_call_later(loop, 10 * MS, on_timer, "10 ms passed");
    pact_sleep(loop, 20 * MS, on_sleep, "20 ms");
    pact_op doomed = pact_sleep(loop, 60000 * MS, on_sleep, "60 s");
    /* Cancel is a request: the callback still runs, once, with -ECANCELED. */
    pact_op_cancel(loop, doomed);

    pact_loop_run(loop); /* returns when nothing is left to do */
    pact_loop_close(loop);
    pact_loop_free(loop);
    return 0;
}
