/* SPDX-License-Identifier: MIT */
/* The version of the library loaded at run time, to compare with the
 * PACT_VERSION the caller was compiled against. */
#include "pact.h"

unsigned pact_version(void)
{
    return PACT_VERSION;
}

const char *pact_version_string(void)
{
    return PACT_VERSION_STRING;
}
