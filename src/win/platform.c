/* SPDX-License-Identifier: MIT */
/* What the portable core asks of the system, on Windows: naming a code
 * address for debug reports. */
#include <stdio.h>

#include "loop.h"

void pact__describe_address(void *addr, char *buf, size_t len)
{
    HMODULE module = NULL;
    char name[MAX_PATH] = "";
    if (addr &&
        GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS |
                               GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                           (LPCSTR)addr, &module) &&
        GetModuleFileNameA(module, name, sizeof name) > 0) {
        const char *base = strrchr(name, '\\');
        snprintf(buf, len, "%p (%s+0x%llx)", addr, base ? base + 1 : name,
                 (unsigned long long)((char *)addr - (char *)module));
        return;
    }
    snprintf(buf, len, "%p", addr);
}
