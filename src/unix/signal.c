/* SPDX-License-Identifier: MIT */
/* Signals as loop callbacks: a signal with handlers is blocked on the loop
 * thread and read from a signalfd by an internal pact_read op (as the
 * wake-up eventfd is read in loop.c), so handlers run as ordinary
 * callbacks on the loop, never in signal context, on both engines.
 *
 * The signalfd is non-blocking: io_uring then tries the read in the
 * submitting thread and retries it from a poll wake-up in that same
 * thread's task work, so it dequeues the loop thread's signals (a read
 * punted to an io-wq worker would look at the worker's). */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "signals.h"

/* Which loop owns which signal, process-wide. A signal's disposition and
 * its process-directed pending set are process-wide, so two loops reading
 * one signal through two signalfds would race for every delivery; with
 * this table the second loop gets -EBUSY instead. It is pact's only global
 * state. A mutex is enough: it is touched only when the first handler for
 * a signal is added or the last removed. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pact_loop *registry[_NSIG];

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
    int fd;                /* signalfd, -EBADF when none */
    sigset_t set;          /* signals with handlers: what fd reads */
    sigset_t was_blocked;  /* of those, blocked before we blocked them */
    unsigned counts[_NSIG];
    unsigned nhandlers;    /* live (not removed) handlers */
    sig_handler *head;
    pact_signal next_id;
    pact_op read_op;       /* 0 when no read is in flight */
    int dispatching;
    struct signalfd_siginfo buf[8];
} pact_signals;

static int signo_is_valid(int signo)
{
    if (signo <= 0 || signo >= _NSIG)
        return 0;
    switch (signo) {
    case SIGKILL:
    case SIGSTOP:
    /* Raised synchronously by a faulting instruction: the kernel forces
     * them onto the faulting thread even when blocked; a signalfd never
     * sees them. */
    case SIGSEGV:
    case SIGBUS:
    case SIGFPE:
    case SIGILL:
        return 0;
    default:
        return 1;
    }
}

static pact_signals *signals_get(pact_loop *loop)
{
    if (loop->signals)
        return loop->signals;
    pact_signals *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fd = -EBADF;
    sigemptyset(&s->set);
    sigemptyset(&s->was_blocked);
    loop->signals = s;
    return s;
}

/* Creates the signalfd, or changes the set an existing one reads. */
static int update_fd(pact_signals *s)
{
    int fd = signalfd(s->fd >= 0 ? s->fd : -1, &s->set,
                      SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    s->fd = fd;
    return 0;
}

static void close_fd(pact_signals *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -EBADF;
}

static void read_done(pact_loop *loop, const pact_completion *c, void *user);

/* Keeps one read in flight on the signalfd while there are handlers. */
static void ensure_reading(pact_loop *loop, pact_signals *s)
{
    if (s->read_op || s->fd < 0 || s->nhandlers == 0 ||
        loop->state != PACT_LOOP_OPEN)
        return;
    int err = 0;
    pact_op_s *op = pact__op_new(loop, PACT_OP_READ, s->fd, read_done, s,
                                 &err);
    if (!op) {
        pact__error(loop, err, "cannot start the signalfd read");
        return;
    }
    op->buf = s->buf;
    op->len = sizeof s->buf;
    op->offset = -1;
    s->read_op = pact__op_start_internal(loop, op);
}

/* Takes signo: registry, thread mask, signalfd set. */
static int claim_signal(pact_loop *loop, pact_signals *s, int signo)
{
    pthread_mutex_lock(&registry_lock);
    if (registry[signo] && registry[signo] != loop) {
        pthread_mutex_unlock(&registry_lock);
        return PACT_MISUSE(loop, -EBUSY,
                           "another loop handles this signal already");
    }
    registry[signo] = loop;
    pthread_mutex_unlock(&registry_lock);

    sigset_t one, old;
    sigemptyset(&one);
    sigaddset(&one, signo);
    pthread_sigmask(SIG_BLOCK, &one, &old);
    if (sigismember(&old, signo))
        sigaddset(&s->was_blocked, signo);
    sigaddset(&s->set, signo);
    int r = update_fd(s);
    if (r < 0) {
        sigdelset(&s->set, signo);
        if (!sigismember(&s->was_blocked, signo))
            pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        sigdelset(&s->was_blocked, signo);
        pthread_mutex_lock(&registry_lock);
        registry[signo] = NULL;
        pthread_mutex_unlock(&registry_lock);
    }
    return r;
}

/* Gives signo back once its last handler is gone. A signal that is
 * pending at this point is delivered with its disposition once
 * unblocked, as if the handler had never been added. */
static void release_signal(pact_loop *loop, pact_signals *s, int signo)
{
    sigdelset(&s->set, signo);
    int r = s->fd >= 0 ? update_fd(s) : 0;
    if (r < 0)
        pact__error(loop, r, "cannot update the signalfd");
    if (!sigismember(&s->was_blocked, signo)) {
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, signo);
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    }
    sigdelset(&s->was_blocked, signo);
    pthread_mutex_lock(&registry_lock);
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

static void dispatch(pact_loop *loop, pact_signals *s, int signo)
{
    /* Handlers added by a handler wait for the next delivery. */
    sig_handler *last = s->head;
    while (last && last->next)
        last = last->next;
    s->dispatching++;
    for (sig_handler *h = s->head; h; h = h->next) {
        if (!h->removed && h->signo == signo) {
            PACT_RUN_CALLBACK(loop, h->cb, "signal handler",
                              h->cb(loop, signo, h->user));
        }
        if (h == last)
            break;
    }
    s->dispatching--;
}

static void read_done(pact_loop *loop, const pact_completion *c, void *user)
{
    pact_signals *s = user;
    s->read_op = 0;
    int broken = 0;
    if (c->result > 0) {
        size_t n = (size_t)c->result / sizeof s->buf[0];
        for (size_t i = 0; i < n && loop->state == PACT_LOOP_OPEN; i++)
            dispatch(loop, s, (int)s->buf[i].ssi_signo);
        if (s->dispatching == 0)
            sweep_removed(s);
    } else if (c->result != -ECANCELED && c->result != -EAGAIN &&
               c->result != -EINTR) {
        pact__error(loop, (int)c->result, "signalfd read failed");
        broken = 1; /* re-arming would spin on the same error */
    }
    if (s->nhandlers == 0 || loop->state != PACT_LOOP_OPEN) {
        close_fd(s); /* no op is in flight on it any more */
        return;
    }
    if (!broken)
        ensure_reading(loop, s);
}

pact_signal pact_signal_add(pact_loop *loop, int signo, pact_signal_cb cb,
                            void *user)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (!cb)
        return PACT_MISUSE(loop, -EINVAL, "callback is NULL");
    if (!signo_is_valid(signo))
        return PACT_MISUSE(loop, -EINVAL,
                           "not a signal a signalfd can receive");
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
    ensure_reading(loop, s);
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
        release_signal(loop, s, h->signo);
    if (s->dispatching == 0)
        sweep_removed(s);
    /* The last handler is gone: stop reading. The read's callback closes
     * the fd once the engine has handed the read back. */
    if (s->nhandlers == 0 && s->read_op)
        pact_op_cancel(loop, s->read_op);
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

void pact__signals_forget(pact_loop *loop)
{
    pact_signals *s = loop->signals;
    if (!s)
        return;
    for (int signo = 1; signo < _NSIG; signo++)
        if (s->counts[signo] > 0) {
            s->counts[signo] = 0;
            close_fd(s); /* not updated: release_signal only unblocks */
            release_signal(loop, s, signo);
        }
    for (sig_handler *h = s->head; h; h = h->next)
        h->removed = 1;
    sweep_removed(s);
    close_fd(s);
    free(s);
    loop->signals = NULL;
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
            release_signal(loop, s, h->signo);
    }
    sweep_removed(s);
    close_fd(s);
    free(s);
    loop->signals = NULL;
}
