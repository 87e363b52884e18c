/* SPDX-License-Identifier: MIT */
/* Messages: misuse reports, the error hook, debug-mode logging. Naming
 * the code address an object was created from is the system's
 * (src/unix/describe_address.c, src/win/platform.c). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "loop.h"

static void vlog(const char *prefix, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "pact: %s%s\n", prefix, msg);
}

void pact__log(const pact_loop *loop, const char *fmt, ...)
{
    (void)loop;
    va_list ap;
    va_start(ap, fmt);
    vlog("", fmt, ap);
    va_end(ap);
}

int pact__misuse(const pact_loop *loop, int err, const char *func,
                 const char *what)
{
    if (loop && loop->debug)
        pact__log(loop, "%s: %s (%s)", func, what, pact_err_name(err));
    return err;
}

static void error_v(pact_loop *loop, int err, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (loop && loop->on_error) {
        loop->on_error(loop, err, msg, loop->on_error_user);
        return;
    }
    fprintf(stderr, "pact: error: %s: %s\n", msg, pact_strerror(err));
}

void pact__error(pact_loop *loop, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_v(loop, err, fmt, ap);
    va_end(ap);
}

void pact_loop_report_error(pact_loop *loop, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_v(loop, err, fmt ? fmt : "(no message)", ap);
    va_end(ap);
}

void pact__note_callback_time(pact_loop *loop, uint64_t start, void *cb,
                              const char *what)
{
    uint64_t took = pact_now() - start;
    if (took < PACT_SLOW_CALLBACK_NS)
        return;
    loop->stats.slow_callbacks++;
    char where[256];
    pact__describe_address(cb, where, sizeof where);
    pact__log(loop, "slow %s %s took %.1f ms (blocks the loop)", what, where,
              (double)took / 1e6);
}
