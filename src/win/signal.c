/* SPDX-License-Identifier: MIT */
/* Signals on Windows, the system's half of src/signal.c (signals.h): a
 * console's Ctrl-C (SIGINT) and Ctrl-Break (SIGBREAK), the two a console
 * process receives, with the same API and rules as on Linux.
 *
 * The system calls a console control handler (SetConsoleCtrlHandler) on a
 * thread of its own. That handler only passes the signal to the loop that
 * owns it (pact__signals_post: a packet posted to the loop's completion
 * port); the loop's callbacks then run on the loop thread, in order, as
 * every other callback. The handler is installed while some loop handles
 * a signal and removed after, so Ctrl-C has its default action again once
 * no loop wants it.
 *
 * The registry's lock is held while the handler posts, and a loop gives
 * its signals back (at cancel, or at loop close) under that lock, so the
 * handler never posts to a loop that is gone. A delivery accepted just
 * before close began is dropped by the close, never run after it
 * (pact_call_soon_threadsafe's promise). Nothing is kept per loop: the
 * loop's pact_signal_os stays NULL. */
#include <errno.h>
#include <signal.h>

#include "signals.h"

static int claimed; /* signals with an owner, under the registry's lock */

static int signal_of_event(DWORD type)
{
    switch (type) {
    case CTRL_C_EVENT:
        return SIGINT;
    case CTRL_BREAK_EVENT:
        return SIGBREAK;
    default:
        return 0; /* close, logoff, shutdown: not signals here */
    }
}

/* The console's handler, on a thread the system made. TRUE: a loop took
 * the event (no default action); FALSE: the next handler, and in the end
 * the default (ending the process), decides. */
static BOOL WINAPI console_ctrl(DWORD type)
{
    int signo = signal_of_event(type);
    return signo && pact__signals_post(signo) ? TRUE : FALSE;
}

/* For the tests: what the system does on a console event, where Wine
 * cannot raise one (Ctrl-Break) or the test has no console. */
int pact__win_console_ctrl(DWORD type)
{
    return console_ctrl(type) ? 1 : 0;
}

int pact__signal_os_check(pact_loop *loop, int signo)
{
    if (signo != SIGINT && signo != SIGBREAK)
        return PACT_MISUSE(loop, -ENOTSUP,
                           "Windows delivers only a console's Ctrl-C "
                           "(SIGINT) and Ctrl-Break (SIGBREAK)");
    return 0;
}

int pact__signal_os_claim(pact_loop *loop, pact_signal_os **os, int signo)
{
    (void)loop, (void)os, (void)signo;
    if (claimed == 0 && !SetConsoleCtrlHandler(console_ctrl, TRUE))
        return pact__win_error(GetLastError());
    claimed++;
    return 0;
}

void pact__signal_os_release(pact_loop *loop, pact_signal_os *os, int signo)
{
    (void)loop, (void)os, (void)signo;
    if (--claimed == 0)
        SetConsoleCtrlHandler(console_ctrl, FALSE);
}

/* Console events arrive whether or not a loop waits for them. */
void pact__signal_os_listen(pact_loop *loop, pact_signal_os *os)
{
    (void)loop, (void)os;
}

void pact__signal_os_quiet(pact_loop *loop, pact_signal_os *os)
{
    (void)loop, (void)os;
}

void pact__signal_os_free(pact_signal_os *os)
{
    (void)os;
}
