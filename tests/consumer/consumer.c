/* SPDX-License-Identifier: MIT */
/* A program that knows pact only as an installed library: built by
 * tests/consumer.sh through pkg-config and through CMake, shared and
 * static. It checks the header and the library agree, runs a timer and an
 * operation on the engine PACT_ENGINE names, and makes a TLS context when
 * the library has TLS (so a static link must pull in OpenSSL). */
#include <errno.h>
#include <pact.h>
#include <stdio.h>
#include <string.h>

static int timer_ran, sleep_result = 1;

static void on_timer(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    timer_ran = 1;
}

static void on_sleep(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)user;
    sleep_result = (int)c->result;
}

int main(void)
{
    if (pact_version() != PACT_VERSION ||
        strcmp(pact_version_string(), PACT_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", PACT_VERSION_STRING,
                pact_version_string());
        return 1;
    }
    pact_loop *loop;
    int err = pact_loop_create(&loop, NULL);
    if (err < 0) {
        fprintf(stderr, "pact_loop_create: %s\n", pact_strerror(err));
        return 1;
    }
    pact_call_later(loop, 1000000, on_timer, NULL);
    if (pact_sleep(loop, 2000000, on_sleep, NULL) < 0)
        return 1;
    if (pact_loop_run(loop) != 0 || !timer_ran || sleep_result != 0) {
        fprintf(stderr, "the loop did not run its callbacks\n");
        return 1;
    }
    pact_tls_context *ctx = NULL;
    err = pact_tls_context_create(PACT_TLS_CLIENT, &ctx);
    const char *tls = err == 0 ? "yes" : err == -ENOTSUP ? "no" : NULL;
    if (!tls) {
        fprintf(stderr, "pact_tls_context_create: %s\n", pact_strerror(err));
        return 1;
    }
    pact_tls_context_free(ctx);
    printf("pact %s on %s, TLS %s\n", pact_version_string(),
           pact_loop_engine_name(loop), tls);
    return pact_loop_free(loop) == 0 ? 0 : 1;
}
