/* SPDX-License-Identifier: MIT */
/* pact_strerror() on Windows gives the same text as on Linux for the errno
 * values pact uses with a meaning of its own (src/error_meanings.h,
 * docs/errors.md), and every value has a name. The Linux suite checks the
 * table against docs/errors.md; this one checks that Windows reads it,
 * with only pact.h's names (a Windows program can name every value pact
 * returns). */
#include <string.h>

#include "helpers.h"
#include "error_meanings.h"

Test(errors, own_meanings_read_as_on_linux)
{
    int rows = 0;
#define CHECK_OWN(e, text)                                                 \
    cr_assert_str_eq(pact_strerror(-(e)), text, "pact_strerror(-%s)", #e); \
    cr_assert_str_eq(pact_err_name(-(e)), #e);                             \
    rows++;
    PACT_OWN_MEANINGS(CHECK_OWN)
#undef CHECK_OWN
    cr_assert_geq(rows, 9);
    cr_assert_str_eq(pact_strerror(-ECONNREFUSED), "connection refused");
    cr_assert_str_eq(pact_strerror(0), "success");
    cr_assert_str_eq(pact_strerror(-100000), "unknown error");
}
