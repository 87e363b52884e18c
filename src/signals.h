/* SPDX-License-Identifier: MIT */
/* Signals delivered as loop callbacks (signal.c). */
#ifndef PACT_SIGNALS_H
#define PACT_SIGNALS_H

#include "loop.h"

/* Loop close, once no op is in flight any more: drops every handler,
 * restores the thread's signal mask, gives the signals back to the
 * process-wide registry, closes the signalfd. */
void pact__signals_close(pact_loop *loop);

#endif
