/* SPDX-License-Identifier: MIT */
/* Signals on Linux, the system's half of src/signal.c (signals.h): a
 * signal with handlers is blocked on the loop thread and read from a
 * signalfd by an internal pact_read op (as the wake-up eventfd is read in
 * loop.c), so handlers run as ordinary callbacks on the loop, never in
 * signal context, on both engines.
 *
 * The op waits for the signalfd to be readable (pact_poll's kind) and
 * the callback reads it, on the loop's thread: the kernel never dequeues
 * a signal on the loop's behalf. A read op did: its bytes were taken
 * from the signalfd when the kernel did the read, so a completion that
 * never reached the loop took its signals with it. That happens when a
 * movable loop moves after its io_uring CQ overflowed (the completions
 * that did not fit die with the old ring, see engine_uring.c): the
 * signal was gone. Readiness lost that way costs nothing, the signal
 * is still pending and the wait armed again on the new ring sees it. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "signals.h"

struct pact_signal_os {
    int fd;                /* signalfd, -EBADF when none */
    sigset_t set;          /* signals with handlers: what fd reads */
    sigset_t was_blocked;  /* of those, blocked before we blocked them */
    unsigned claimed;      /* signals in set: 0 once no handler is left */
    pact_op read_op;       /* the wait for readability; 0 when none */
    struct signalfd_siginfo buf[8];
};

int pact__signal_os_check(pact_loop *loop, int signo)
{
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
        return PACT_MISUSE(loop, -EINVAL,
                           "not a signal a signalfd can receive");
    default:
        return 0;
    }
}

/* Creates the signalfd, or changes the set an existing one reads. */
static int update_fd(pact_signal_os *s)
{
    int fd = signalfd(s->fd >= 0 ? s->fd : -1, &s->set,
                      SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    s->fd = fd;
    return 0;
}

static void close_fd(pact_signal_os *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -EBADF;
}

static void thread_unblock(int signo)
{
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
}

/* Takes signo: thread mask, signalfd set. */
int pact__signal_os_claim(pact_loop *loop, pact_signal_os **os, int signo)
{
    (void)loop;
    pact_signal_os *s = *os;
    if (!s) {
        if (!(s = calloc(1, sizeof *s)))
            return -ENOMEM;
        s->fd = -EBADF;
        sigemptyset(&s->set);
        sigemptyset(&s->was_blocked);
        *os = s;
    }
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
            thread_unblock(signo);
        sigdelset(&s->was_blocked, signo);
        return r;
    }
    s->claimed++;
    return 0;
}

/* A signal that is pending at this point is delivered with its
 * disposition once unblocked, as if the handler had never been added. */
void pact__signal_os_release(pact_loop *loop, pact_signal_os *s, int signo)
{
    sigdelset(&s->set, signo);
    s->claimed--;
    int r = s->fd >= 0 ? update_fd(s) : 0;
    if (r < 0)
        pact__error(loop, r, "cannot update the signalfd");
    if (!sigismember(&s->was_blocked, signo))
        thread_unblock(signo);
    sigdelset(&s->was_blocked, signo);
}

static void read_done(pact_loop *loop, const pact_completion *c, void *user);

/* Keeps one wait for the signalfd in flight while there are handlers. */
void pact__signal_os_listen(pact_loop *loop, pact_signal_os *s)
{
    if (s->read_op || s->fd < 0 || s->claimed == 0 ||
        loop->state != PACT_LOOP_OPEN)
        return;
    int err = 0;
    pact_op_s *op = pact__op_new(loop, PACT_OP_POLL, s->fd, read_done, s,
                                 &err);
    if (!op) {
        pact__error(loop, err, "cannot start the signalfd wait");
        return;
    }
    op->msg_flags = POLLIN;
    s->read_op = pact__op_start_internal(loop, op);
}

/* The last handler is gone: stop waiting. The wait's callback closes the
 * fd once the engine has handed the op back. pact_op_cancel() does not
 * find the loop's own ops (they are not the user's to cancel): it
 * answered -ENOENT here, and the signalfd stayed open, waited for, until
 * the loop closed. */
void pact__signal_os_quiet(pact_loop *loop, pact_signal_os *s)
{
    pact_op_s *op = s->read_op ? pact__op_lookup(loop, s->read_op) : NULL;
    if (op)
        pact__op_cancel(loop, op);
}

static void read_done(pact_loop *loop, const pact_completion *c, void *user)
{
    pact_signal_os *s = user;
    s->read_op = 0;
    int broken = 0;
    if (c->result >= 0 && s->fd >= 0) {
        /* Readable: one read (up to 8 signals); if more wait, the next
         * wait answers at once. Another reader may have been first. */
        ssize_t got = read(s->fd, s->buf, sizeof s->buf);
        if (got > 0) {
            size_t n = (size_t)got / sizeof s->buf[0];
            for (size_t i = 0; i < n; i++)
                pact__signals_deliver(loop, (int)s->buf[i].ssi_signo);
        } else if (got < 0 && errno != EAGAIN && errno != EINTR) {
            pact__error(loop, -errno, "signalfd read failed");
            broken = 1; /* re-arming would spin on the same error */
        }
    } else if (c->result < 0 && c->result != -ECANCELED &&
               c->result != -EAGAIN && c->result != -EINTR) {
        pact__error(loop, (int)c->result, "signalfd wait failed");
        broken = 1;
    }
    if (s->claimed == 0 || loop->state != PACT_LOOP_OPEN) {
        close_fd(s); /* no op is in flight on it any more */
        return;
    }
    if (!broken)
        pact__signal_os_listen(loop, s);
}

void pact__signal_os_detach(pact_signal_os *s)
{
    close_fd(s); /* not updated: the parent's loop reads through it */
}

void pact__signal_os_free(pact_signal_os *s)
{
    if (!s)
        return;
    close_fd(s);
    free(s);
}
