/* SPDX-License-Identifier: MIT */
/* Option structs that carry their size (docs/abi.md): reading a caller's
 * struct that may come from an older or a newer header. */
#ifndef PACT_OPTIONS_H
#define PACT_OPTIONS_H

#include <stddef.h>

#include "pact.h"

/* Where a struct's first published layout ends (its last field's end, not
 * sizeof, which may include tail padding a later field could fill). */
#define PACT__OPTIONS_END(type, last) (offsetof(type, last) + sizeof(((type *)0)->last))
#define PACT__LOOP_OPTIONS_V1 PACT__OPTIONS_END(pact_loop_options, recv_buffer_size)
#define PACT__SERVER_OPTIONS_V1 PACT__OPTIONS_END(pact_server_options, ipv6_only)
#define PACT__DATAGRAM_OPTIONS_V1 PACT__OPTIONS_END(pact_datagram_options, max_datagram)
#define PACT__PROCESS_OPTIONS_V1 PACT__OPTIONS_END(pact_process_options, umask)

/* Reads the caller's struct `theirs` (its size_t size first) into `ours`,
 * which holds the defaults and is our_size bytes: the fields the caller
 * knows are copied, newer ones keep their defaults. -EINVAL if the
 * caller's size is below min_size (the first layout; 0 = never
 * initialised), -E2BIG if it is larger than ours and a byte we do not know
 * is not zero. ours->size is our_size afterwards. */
int pact__options_read(void *ours, size_t our_size, size_t min_size,
                       const void *theirs);

#endif
