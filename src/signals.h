/* SPDX-License-Identifier: MIT */
/* Signals delivered as loop callbacks (signal.c). */
#ifndef PACT_SIGNALS_H
#define PACT_SIGNALS_H

#include "loop.h"

/* Loop close, once no op is in flight any more: drops every handler,
 * restores the thread's signal mask, gives the signals back to the
 * process-wide registry, closes the signalfd. */
void pact__signals_close(pact_loop *loop);
/* pact_loop_free() in a child process after fork(): frees the handlers,
 * gives the signals back in the process-wide registry (a loop the child
 * makes may take them) and unblocks them on this thread as close would,
 * and closes the child's copy of the signalfd. Submits nothing. */
void pact__signals_forget(pact_loop *loop);

#endif
