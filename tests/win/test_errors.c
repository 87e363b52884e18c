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

int pact__win_error(DWORD err);

/* Every value pact returns on Windows has a name and a text: whatever a
 * Windows or Winsock error code maps to, and what pact answers of its own
 * accord (a file that is no program, an argv that is not UTF-8, what a
 * datagram endpoint refuses). A spawn that failed with ENOEXEC once read
 * "UNKNOWN (unknown error)". */
Test(errors, every_value_pact_returns_has_a_name)
{
    for (DWORD code = 1; code < 16000; code++) {
        int e = pact__win_error(code);
        cr_assert_lt(e, 0, "Windows error %lu maps to %d", code, e);
        cr_assert_str_neq(pact_err_name(e), "UNKNOWN", "Windows error %lu -> %d",
                          code, e);
        cr_assert_str_neq(pact_strerror(e), "unknown error", "Windows error %lu",
                          code);
    }
    static const int own[] = {ENOEXEC, EILSEQ, E2BIG, EDESTADDRREQ, EPROTOTYPE,
                              ENOPROTOOPT, ENODEV, EOPNOTSUPP, ENOTSUP,
                              ENOTEMPTY, EXDEV, ESHUTDOWN, EKEYREJECTED};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
        cr_assert_str_neq(pact_err_name(-own[i]), "UNKNOWN", "errno %d", own[i]);
        cr_assert_str_neq(pact_strerror(-own[i]), "unknown error", "errno %d", own[i]);
    }
    cr_assert_str_eq(pact_err_name(-ENOEXEC), "ENOEXEC");
    cr_assert_str_eq(pact_strerror(-ENOEXEC), "exec format error");
}
