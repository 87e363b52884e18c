/* SPDX-License-Identifier: MIT */
/* Fault injection state (see fault.h). Empty unless PACT_FAULT_INJECTION. */
#include "fault.h"

#ifdef PACT_FAULT_INJECTION
static struct {
    unsigned long calls, nth, fired;
    int err;
} sites[PACT_FAULT_SITE_COUNT];

int pact__fault(enum pact_fault_site site)
{
    if (!sites[site].nth)
        return 0;
    if (++sites[site].calls != sites[site].nth)
        return 0;
    sites[site].fired++;
    return sites[site].err;
}

void pact_fault_arm(enum pact_fault_site site, unsigned long nth, int err)
{
    sites[site].calls = 0;
    sites[site].fired = 0;
    sites[site].nth = nth;
    sites[site].err = err;
}

unsigned long pact_fault_fired(enum pact_fault_site site)
{
    return sites[site].fired;
}

unsigned long pact_fault_calls(enum pact_fault_site site)
{
    return sites[site].calls;
}
#else
typedef int pact_fault_unused; /* ISO C forbids an empty file */
#endif
