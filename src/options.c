/* SPDX-License-Identifier: MIT */
/* Option structs that carry their size, so fields can be appended without
 * breaking callers compiled against an older or newer pact.h (docs/abi.md).
 * The rule for a larger size is the kernel's for openat2()/clone3(). */
#include <errno.h>
#include <string.h>

#include "options.h"

int pact__options_read(void *ours, size_t our_size, size_t min_size,
                       const void *theirs)
{
    size_t size;
    memcpy(&size, theirs, sizeof size);
    if (size < min_size)
        return -EINVAL;
    if (size > our_size) {
        const unsigned char *extra = (const unsigned char *)theirs + our_size;
        for (size_t i = 0; i < size - our_size; i++)
            if (extra[i])
                return -E2BIG;
    }
    memcpy(ours, theirs, size < our_size ? size : our_size);
    memcpy(ours, &our_size, sizeof our_size);
    return 0;
}

void pact_server_options_init(pact_server_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

void pact_datagram_options_init(pact_datagram_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

void pact_process_options_init(pact_process_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}
