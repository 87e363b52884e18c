/* SPDX-License-Identifier: MIT */
/* pact_err_name and pact_strerror, for every system: the values pact gives
 * a meaning of its own read as pact says (PACT_OWN_MEANINGS, listed in
 * docs/errors.md), every other the system's name and text
 * (error_meanings.h). */
#include <errno.h>
#include <limits.h>

#include "error_meanings.h"
#include "pact.h"

/* The errno value a negative error code stands for, or -1 when err is
 * not one (0, positive, or INT_MIN, whose negation does not fit an int). */
static int errno_of(int err)
{
    return err < 0 && err != INT_MIN ? -err : -1;
}

const char *pact_err_name(int err)
{
    if (err == 0)
        return "OK";
    int e = errno_of(err);
    const char *name = e > 0 ? pact__errno_name(e) : NULL;
    return name ? name : "UNKNOWN";
}

const char *pact_strerror(int err)
{
    if (err == 0)
        return "success";
    int e = errno_of(err);
    switch (e) {
#define PACT_OWN_CASE(v, text) case v: return text;
        PACT_OWN_MEANINGS(PACT_OWN_CASE)
#undef PACT_OWN_CASE
    default:
        break;
    }
    const char *text = e > 0 ? pact__errno_text(e) : NULL;
    return text ? text : "unknown error";
}
