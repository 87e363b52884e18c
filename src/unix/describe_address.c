/* SPDX-License-Identifier: MIT */
/* Names the code address an object was created from, for debug reports:
 * the symbol and object file dladdr() finds. */
#include <dlfcn.h>
#include <stdio.h>

#include "loop.h"

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
