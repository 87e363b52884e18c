/* SPDX-License-Identifier: MIT */
/* Why a connect failed, for pact_connect_error_message() (error.c). */
#ifndef PACT_ERROR_H
#define PACT_ERROR_H

#include "pact.h"

/* The reason handed to a failing pact_connect_cb: set around the call
 * (pact__connect_failure_begin before, _end after, with the same saved
 * struct so that a failure reported from inside another one's callback
 * restores the outer one). message may be NULL (nothing to add to
 * pact_strerror(err)); it must stay valid until _end. */
typedef struct pact_connect_failure {
    const pact_loop *loop;
    const char *message;
    long verify_result;
} pact_connect_failure;

void pact__connect_failure_begin(pact_connect_failure *saved,
                                 const pact_loop *loop, const char *message,
                                 long verify_result);
void pact__connect_failure_end(const pact_connect_failure *saved);

#endif
