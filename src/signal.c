/* SPDX-License-Identifier: MIT */
/* Signals as loop callbacks, the portable half (signals.h): the handlers
 * of each loop and which loop owns which signal. Handlers run as ordinary
 * callbacks on the loop thread, never in signal context; the system's
 * half (src/unix/signal.c, src/win/signal.c) brings each delivery there.
 *
 * Which loop owns which signal is process-wide, as a signal's disposition
 * and pending set are (and a console's control events): two loops taking
 * one signal would race for every delivery, so the second gets -EBUSY.
 * The registry is pact's only global state. A mutex is enough: it is
 * touched when the first handler for a signal is added or the last
 * removed, and on Windows when a console event is posted. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "signals.h"

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pact_loop *registry[PACT_SIGNAL_LIMIT];

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
    unsigned counts[PACT_SIGNAL_LIMIT]; /* live handlers per signal */
    unsigned nhandlers;                 /* live (not removed) handlers */
    sig_handler *head;
    pact_signal next_id;
    int dispatching;
    pact_signal_os *os; /* the system's state; NULL before a claim */
} pact_signals;

static pact_signals *signals_get(pact_loop *loop)
{
    if (!loop->signals)
        loop->signals = calloc(1, sizeof(pact_signals));
    return loop->signals;
}

/* Takes signo for loop: the registry, then the system. */
static int claim_signal(pact_loop *loop, pact_signals *s, int signo)
{
    int r = 0;
    pthread_mutex_lock(&registry_lock);
    int busy = registry[signo] && registry[signo] != loop;
    if (!busy) {
        registry[signo] = loop;
        r = pact__signal_os_claim(loop, &s->os, signo);
        if (r < 0)
            registry[signo] = NULL;
    }
    pthread_mutex_unlock(&registry_lock);
    if (busy)
        return PACT_MISUSE(loop, -EBUSY,
                           "another loop handles this signal already");
    return r;
}

/* Gives signo back once its last handler is gone. */
static void release_signal(pact_loop *loop, pact_signals *s, int signo)
{
    pthread_mutex_lock(&registry_lock);
    pact__signal_os_release(loop, s->os, signo);
    if (registry[signo] == loop)
        registry[signo] = NULL;
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

static sig_handler *find_live(pact_signals *s, pact_signal id)
{
    sig_handler *h = s ? s->head : NULL;
    while (h && (h->id != id || h->removed))
        h = h->next;
    return h;
}

/* A handler goes: its reference, its count, and with its signal's last
 * handler the signal itself. Freed by the next sweep. */
static void remove_handler(pact_loop *loop, pact_signals *s, sig_handler *h)
{
    h->removed = 1;
    if (h->ref)
        loop->ref_signals--;
    s->nhandlers--;
    if (--s->counts[h->signo] == 0)
        release_signal(loop, s, h->signo);
}

void pact__signals_deliver(pact_loop *loop, int signo)
{
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

static void deliver_posted(pact_loop *loop, void *arg)
{
    pact__signals_deliver(loop, (int)(intptr_t)arg);
}

int pact__signals_post(int signo)
{
    if (signo <= 0 || signo >= PACT_SIGNAL_LIMIT)
        return 0;
    pthread_mutex_lock(&registry_lock);
    pact_loop *loop = registry[signo];
    int taken = loop && pact_call_soon_threadsafe(
                            loop, deliver_posted, (void *)(intptr_t)signo) == 0;
    pthread_mutex_unlock(&registry_lock);
    return taken;
}

pact_signal pact_signal_add(pact_loop *loop, int signo, pact_signal_cb cb,
                            void *user)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (!cb)
        return PACT_MISUSE(loop, -EINVAL, "callback is NULL");
    if (signo <= 0 || signo >= PACT_SIGNAL_LIMIT)
        return PACT_MISUSE(loop, -EINVAL, "not a signal number");
    r = pact__signal_os_check(loop, signo);
    if (r)
        return r;
    pact_signals *s = signals_get(loop);
    sig_handler *h = calloc(1, sizeof *h);
    if (!s || !h) {
        free(h);
        return -ENOMEM;
    }
    if (s->counts[signo] == 0) {
        r = claim_signal(loop, s, signo);
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
    pact__signal_os_listen(loop, s->os);
    return h->id;
}

int pact_signal_cancel(pact_loop *loop, pact_signal id)
{
    int r = pact__check_loop_for_cancel(loop, __func__);
    if (r)
        return r;
    pact_signals *s = loop->signals;
    sig_handler *h = find_live(s, id);
    if (!h)
        return -ENOENT;
    remove_handler(loop, s, h);
    if (s->dispatching == 0)
        sweep_removed(s);
    if (s->nhandlers == 0)
        pact__signal_os_quiet(loop, s->os);
    return 0;
}

int pact_signal_set_ref(pact_loop *loop, pact_signal id, int ref)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    sig_handler *h = find_live(loop->signals, id);
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

/* Frees what is left once every signal is given back. */
static void free_signals(pact_loop *loop, pact_signals *s)
{
    for (sig_handler *h = s->head; h; h = h->next)
        h->removed = 1;
    sweep_removed(s);
    pact__signal_os_free(s->os);
    free(s);
    loop->signals = NULL;
}

#ifndef _WIN32
void pact__signals_forget(pact_loop *loop)
{
    pact_signals *s = loop->signals;
    if (!s)
        return;
    if (s->os)
        pact__signal_os_detach(s->os);
    for (int signo = 1; signo < PACT_SIGNAL_LIMIT; signo++)
        if (s->counts[signo] > 0) {
            s->counts[signo] = 0;
            release_signal(loop, s, signo);
        }
    free_signals(loop, s);
}
#endif

void pact__signals_close(pact_loop *loop)
{
    pact_signals *s = loop->signals;
    if (!s)
        return;
    for (sig_handler *h = s->head; h; h = h->next)
        if (!h->removed)
            remove_handler(loop, s, h);
    free_signals(loop, s);
}
