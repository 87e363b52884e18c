/* SPDX-License-Identifier: MIT */
/* Signals delivered as loop callbacks: the portable half (src/signal.c)
 * and what each system does for it (src/unix/signal.c: a signalfd read by
 * an op; src/win/signal.c: a console's control events).
 *
 * The portable half owns the handlers (their order, a cancel during a
 * delivery, pact_signal_set_ref) and which loop owns which signal
 * process-wide; the system's half makes a claimed signal arrive on the
 * loop thread and hands it to pact__signals_deliver(). */
#ifndef PACT_SIGNALS_H
#define PACT_SIGNALS_H

#include <signal.h>

#include "loop.h"

/* Loop close, once no op is in flight any more: drops every handler,
 * gives the signals back to the process-wide registry (Linux: restores
 * the thread's signal mask and closes the signalfd). */
void pact__signals_close(pact_loop *loop);
#ifndef _WIN32
/* pact_loop_free() in a child process after fork(): frees the handlers,
 * gives the signals back in the process-wide registry (a loop the child
 * makes may take them) and unblocks them on this thread as close would,
 * and closes the child's copy of the signalfd. Submits nothing. */
void pact__signals_forget(pact_loop *loop);
#endif

/* ---- the system's half ---------------------------------------------------- */

/* Signal numbers are 1 .. PACT_SIGNAL_LIMIT - 1. */
#ifdef _WIN32
#define PACT_SIGNAL_LIMIT 64
#else
#define PACT_SIGNAL_LIMIT _NSIG
#endif

/* One loop's system state for its signals; made by the first claim. */
typedef struct pact_signal_os pact_signal_os;

/* 0 if signo (already in range) can have handlers here, else the negative
 * errno, reported as a misuse. */
int pact__signal_os_check(pact_loop *loop, int signo);
/* Starts delivering signo to loop: its first handler is being added. Runs
 * under the registry's lock, which has given signo to loop; makes *os on
 * first use. On failure nothing is left behind and the registry lets
 * signo go again. */
int pact__signal_os_claim(pact_loop *loop, pact_signal_os **os, int signo);
/* Stops delivering signo: its last handler is gone. Runs under the
 * registry's lock, so that no delivery is made to a loop that gave its
 * signal back. One still pending has the signal's default action. */
void pact__signal_os_release(pact_loop *loop, pact_signal_os *os, int signo);
/* A handler was added: deliveries are awaited (Linux: a read in
 * flight). */
void pact__signal_os_listen(pact_loop *loop, pact_signal_os *os);
/* The last handler is gone: stop awaiting deliveries. */
void pact__signal_os_quiet(pact_loop *loop, pact_signal_os *os);
/* Loop close (nothing in flight) or fork's child: frees os. */
void pact__signal_os_free(pact_signal_os *os);
#ifndef _WIN32
/* fork's child: lets go of what it shares with the parent (the signalfd,
 * whose set the parent's loop still reads), before the releases that
 * then only undo this thread's mask. */
void pact__signal_os_detach(pact_signal_os *os);
#endif

/* ---- the portable half, for the system's ---------------------------------- */

/* One delivery of signo, on the loop thread: runs its handlers. */
void pact__signals_deliver(pact_loop *loop, int signo);
/* From any thread: passes signo to the loop that owns it (to run as
 * pact__signals_deliver there); 1 if a loop took it, 0 if none owns it.
 * Under the registry's lock, so a loop that has given the signal back or
 * closed is never posted to. */
int pact__signals_post(int signo);

#endif
