/* SPDX-License-Identifier: MIT */
/* Signals on Windows: a console's Ctrl-C (SIGINT) and Ctrl-Break
 * (SIGBREAK), the two a console process receives, as loop callbacks with
 * the same API and rules as on Linux (src/unix/signal.c).
 *
 * The system calls a console control handler (SetConsoleCtrlHandler) on a
 * thread of its own. That handler only passes the signal to the loop that
 * owns it, with pact_call_soon_threadsafe (a packet posted to the loop's
 * completion port); the loop's callbacks then run on the loop thread, in
 * order, as every other callback. The handler is installed while some
 * loop handles a signal and removed after, so Ctrl-C has its default
 * action again once no loop wants it.
 *
 * Which loop owns which signal is process-wide, as the console's events
 * are: a second loop gets -EBUSY. The registry's lock is held while the
 * handler posts, and a loop gives its signals back (at cancel, or at loop
 * close) under that lock, so the handler never posts to a loop that is
 * gone. A delivery accepted just before close began is dropped by the
 * close, never run after it (pact_call_soon_threadsafe's promise). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "signals.h"

#define SIGNAL_LIMIT 64 /* signo 1..63 are signal numbers; others -EINVAL */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pact_loop *registry[SIGNAL_LIMIT];
static int claimed; /* signals with an owner: the handler is installed */

typedef struct sig_handler {
    struct sig_handler *next;
    pact_signal id;
    int signo;
    int removed; /* kept in the list until no dispatch walks it */
    int ref;     /* pact_signal_set_ref(1): keeps the loop alive */
    pact_signal_cb cb;
    void *user;
} sig_handler;

typedef struct pact_signals {
    unsigned counts[SIGNAL_LIMIT];
    unsigned nhandlers; /* live (not removed) handlers */
    sig_handler *head;
    pact_signal next_id;
    int dispatching;
} pact_signals;

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

static void deliver(pact_loop *loop, void *arg);

/* The console's handler, on a thread the system made. TRUE: a loop took
 * the event (no default action); FALSE: the next handler, and in the end
 * the default (ending the process), decides. */
static BOOL WINAPI console_ctrl(DWORD type)
{
    int signo = signal_of_event(type);
    if (!signo)
        return FALSE;
    pthread_mutex_lock(&registry_lock);
    pact_loop *loop = registry[signo];
    int taken = loop && pact_call_soon_threadsafe(
                            loop, deliver, (void *)(intptr_t)signo) == 0;
    pthread_mutex_unlock(&registry_lock);
    return taken ? TRUE : FALSE;
}

/* For the tests: what the system does on a console event, where Wine
 * cannot raise one (Ctrl-Break) or the test has no console. */
int pact__win_console_ctrl(DWORD type)
{
    return console_ctrl(type) ? 1 : 0;
}

static pact_signals *signals_get(pact_loop *loop)
{
    if (!loop->signals)
        loop->signals = calloc(1, sizeof(pact_signals));
    return loop->signals;
}

static int claim_signal(pact_loop *loop, int signo)
{
    int r = 0;
    pthread_mutex_lock(&registry_lock);
    if (registry[signo] && registry[signo] != loop) {
        r = -EBUSY;
    } else if (claimed == 0 && !SetConsoleCtrlHandler(console_ctrl, TRUE)) {
        r = pact__win_error(GetLastError());
    } else {
        registry[signo] = loop;
        claimed++;
    }
    pthread_mutex_unlock(&registry_lock);
    if (r == -EBUSY)
        return PACT_MISUSE(loop, -EBUSY,
                           "another loop handles this signal already");
    return r;
}

/* Gives signo back once its last handler is gone. */
static void release_signal(pact_loop *loop, int signo)
{
    pthread_mutex_lock(&registry_lock);
    if (registry[signo] == loop) {
        registry[signo] = NULL;
        if (--claimed == 0)
            SetConsoleCtrlHandler(console_ctrl, FALSE);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* Frees handlers removed while a dispatch was walking the list. */
static void sweep_removed(pact_signals *s)
{
    sig_handler **pp = &s->head;
    while (*pp) {
        sig_handler *h = *pp;
        if (h->removed) {
            *pp = h->next;
            free(h);
        } else {
            pp = &h->next;
        }
    }
}

/* One console event, on the loop thread. */
static void deliver(pact_loop *loop, void *arg)
{
    int signo = (int)(intptr_t)arg;
    pact_signals *s = loop->signals;
    if (!s || loop->state != PACT_LOOP_OPEN)
        return;
    /* Handlers added by a handler wait for the next delivery. */
    sig_handler *last = s->head;
    while (last && last->next)
        last = last->next;
    s->dispatching++;
    for (sig_handler *h = s->head; h; h = h->next) {
        if (!h->removed && h->signo == signo)
            PACT_RUN_CALLBACK(loop, h->cb, "signal handler",
                              h->cb(loop, signo, h->user));
        if (h == last)
            break;
    }
    s->dispatching--;
    if (s->dispatching == 0)
        sweep_removed(s);
}

pact_signal pact_signal_add(pact_loop *loop, int signo, pact_signal_cb cb,
                            void *user)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (!cb)
        return PACT_MISUSE(loop, -EINVAL, "callback is NULL");
    if (signo <= 0 || signo >= SIGNAL_LIMIT)
        return PACT_MISUSE(loop, -EINVAL, "not a signal number");
    if (signo != SIGINT && signo != SIGBREAK)
        return PACT_MISUSE(loop, -ENOTSUP,
                           "Windows delivers only a console's Ctrl-C "
                           "(SIGINT) and Ctrl-Break (SIGBREAK)");
    pact_signals *s = signals_get(loop);
    sig_handler *h = calloc(1, sizeof *h);
    if (!s || !h) {
        free(h);
        return -ENOMEM;
    }
    if (s->counts[signo] == 0) {
        r = claim_signal(loop, signo);
        if (r < 0) {
            free(h);
            return r;
        }
    }
    s->counts[signo]++;
    s->nhandlers++;
    h->id = ++s->next_id;
    h->signo = signo;
    h->cb = cb;
    h->user = user;
    sig_handler **pp = &s->head;
    while (*pp)
        pp = &(*pp)->next;
    *pp = h;
    return h->id;
}

int pact_signal_cancel(pact_loop *loop, pact_signal id)
{
    if (!loop)
        return -EINVAL;
    if (loop->state == PACT_LOOP_CLOSED)
        return PACT_MISUSE(loop, -ESHUTDOWN, "the loop is closed");
    int r = pact__loop_check_thread(loop, __func__);
    if (r)
        return r;
    pact_signals *s = loop->signals;
    sig_handler *h = s ? s->head : NULL;
    while (h && (h->id != id || h->removed))
        h = h->next;
    if (!h)
        return -ENOENT;
    h->removed = 1;
    if (h->ref)
        loop->ref_signals--;
    s->nhandlers--;
    if (--s->counts[h->signo] == 0)
        release_signal(loop, h->signo);
    if (s->dispatching == 0)
        sweep_removed(s);
    return 0;
}

int pact_signal_set_ref(pact_loop *loop, pact_signal id, int ref)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    pact_signals *s = loop->signals;
    sig_handler *h = s ? s->head : NULL;
    while (h && (h->id != id || h->removed))
        h = h->next;
    if (!h)
        return -ENOENT;
    if (!ref != !h->ref) {
        h->ref = !!ref;
        if (ref)
            loop->ref_signals++;
        else
            loop->ref_signals--;
    }
    return 0;
}

void pact__signals_close(pact_loop *loop)
{
    pact_signals *s = loop->signals;
    if (!s)
        return;
    for (sig_handler *h = s->head; h; h = h->next) {
        if (h->removed)
            continue;
        h->removed = 1;
        if (h->ref)
            loop->ref_signals--;
        if (--s->counts[h->signo] == 0)
            release_signal(loop, h->signo);
    }
    sweep_removed(s);
    free(s);
    loop->signals = NULL;
}
