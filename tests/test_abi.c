/* SPDX-License-Identifier: MIT */
/* What docs/abi.md promises: the version macros, the functions and
 * meson.build's project version agree; option structs carry their size
 * and the library reads only the fields the caller knows. */
#include <stdio.h>
#include <string.h>

#include "helpers.h"

TestSuite(abi, .timeout = 30);

Test(abi, version_macros_functions_and_meson_agree)
{
    char text[32];
    snprintf(text, sizeof text, "%d.%d.%d", PACT_VERSION_MAJOR,
             PACT_VERSION_MINOR, PACT_VERSION_PATCH);
    cr_assert_str_eq(text, PACT_VERSION_STRING);
    cr_assert_str_eq(PACT_VERSION_STRING, PACT_MESON_VERSION);
    cr_assert_str_eq(pact_version_string(), PACT_MESON_VERSION);
    cr_assert_eq(pact_version(), (unsigned)PACT_VERSION);
    cr_assert_eq(PACT_VERSION, (PACT_VERSION_MAJOR << 16) |
                                   (PACT_VERSION_MINOR << 8) | PACT_VERSION_PATCH);
    cr_assert_eq(PACT_SOVERSION, PACT_MESON_SOVERSION);
}

#if PACT_VERSION < PACT_VERSION_NUMBER(0, 1, 0)
#error "PACT_VERSION must be usable in #if"
#endif

Test(abi, version_number_orders_like_the_version)
{
    cr_assert_lt(PACT_VERSION_NUMBER(0, 1, 9), PACT_VERSION_NUMBER(0, 2, 0));
    cr_assert_lt(PACT_VERSION_NUMBER(0, 255, 255), PACT_VERSION_NUMBER(1, 0, 0));
    cr_assert_geq(pact_version(), PACT_VERSION_NUMBER(0, 1, 0));
}
