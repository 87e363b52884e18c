/* SPDX-License-Identifier: MIT */
/* Messages: misuse reports, the error hook, debug-mode logging, and naming
 * the code address an object was created from. */
#include <dlfcn.h>
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

void pact__describe_address(void *addr, char *buf, size_t len)
{
    Dl_info info;
    if (addr && dladdr(addr, &info) && info.dli_fname) {
        if (info.dli_sname)
            snprintf(buf, len, "%s+0x%lx (%s)", info.dli_sname,
                     (unsigned long)((char *)addr - (char *)info.dli_saddr),
                     info.dli_fname);
        else
            snprintf(buf, len, "%p (%s+0x%lx)", addr, info.dli_fname,
                     (unsigned long)((char *)addr - (char *)info.dli_fbase));
        return;
    }
    snprintf(buf, len, "%p", addr);
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
