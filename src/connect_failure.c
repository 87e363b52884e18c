/* SPDX-License-Identifier: MIT */
/* Why a connect failed, for pact_connect_error_message() and
 * pact_connect_verify_result() (error.h); on Linux and Windows alike. */
#include <stddef.h>

#include "error.h"

/* Per thread: a loop runs on one thread, and the reason is only asked
 * from inside the callback it was set around. */
static __thread pact_connect_failure current;

void pact__connect_failure_begin(pact_connect_failure *saved,
                                 const pact_loop *loop, const char *message,
                                 long verify_result)
{
    *saved = current;
    current.loop = loop;
    current.message = message && message[0] ? message : NULL;
    current.verify_result = verify_result;
}

void pact__connect_failure_end(const pact_connect_failure *saved)
{
    current = *saved;
}

const char *pact_connect_error_message(const pact_loop *loop)
{
    return loop && current.loop == loop ? current.message : NULL;
}

long pact_connect_verify_result(const pact_loop *loop)
{
    return loop && current.loop == loop ? current.verify_result : 0;
}
