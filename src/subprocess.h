/* SPDX-License-Identifier: MIT */
/* Subprocesses (named so, not process.h, which is a CRT header on
 * Windows): the portable transport (src/process.c) and what each
 * system does for it (src/unix/process.c: clone and a pidfd;
 * src/win/process.c: CreateProcess and a wait on the process handle).
 *
 * The portable half owns the protocol order (docs/contract.md §6), the
 * pipes' transports, the waiters and the public functions; the system's
 * half starts the child, learns of its exit, signals it and releases it. */
#ifndef PACT_SUBPROCESS_H
#define PACT_SUBPROCESS_H

#include "endpoint.h"
#include "loop.h"

/* One of the child's fds 0-2 when it is a pipe: the parent's end, wrapped
 * in a stream transport whose internal protocol forwards to the process's
 * protocol. */
typedef struct pact_pipe_slot {
    struct pact_process *p;
    int fd; /* 0, 1 or 2 */
    pact_transport *t;
    unsigned lost : 1;       /* its connection_lost has arrived */
    unsigned lost_held : 1;  /* ... before connection_made: replay later */
    int lost_err;
} pact_pipe_slot;

/* The process is an endpoint (endpoint.h) that starts closing when its
 * exit has been reported, and is busy while a pipe is open. */
struct pact_process {
    pact_endpoint ep;
    const pact_subprocess_protocol *proto;
    void *user;
    pid_t pid;
#ifdef _WIN32
    HANDLE handle;         /* the process handle; waited on for its exit */
    int own_group;         /* CREATE_NEW_PROCESS_GROUP: Ctrl-Break reaches it */
#else
    int pidfd;
#endif
    pact_op exit_op; /* the system's wait for the exit */
    pact_pipe_slot pipes[3];
    int pipes_open;
    int returncode;
    pact_list waiters; /* pact_process_wait() ops, linked by op->link */

    unsigned exited : 1;        /* reaped: returncode is known */
    unsigned exit_reported : 1; /* process_exited has run */
    unsigned closed : 1;        /* pact_process_close() */
};

/* ---- the system's half ---------------------------------------------------- */

/* Starts the child described by opts (already checked by the portable
 * half): sets p->pid and the system's handle of it, and parent_end[i] to
 * the parent's end of each PACT_STDIO_PIPE (-1 for the others). On failure
 * nothing is left behind — no child, no fd, no handle — and the negative
 * errno is returned. */
int pact__process_os_spawn(pact_loop *loop, const pact_process_options *opts,
                           pact_process *p, int parent_end[3]);
/* Starts watching for the exit (p->exit_op); when it comes, calls
 * pact__process_exited(). */
void pact__process_os_watch(pact_process *p);
/* The child of a spawn that cannot be handed out: kill it, wait until it
 * is gone, release the system's handle. Nothing is reported. */
void pact__process_os_discard(pact_process *p);
/* pact_process_send_signal() of a child that has not been reaped and is
 * not closed; signo is 0..64. 0 or a negative errno. */
int pact__process_os_signal(pact_process *p, int signo);
/* pact_process_close() of a child not known to have exited: kill it if it
 * still runs (not one that exited and merely is not reaped yet). Its
 * exit watch then reports it. */
void pact__process_os_stop(pact_process *p);
/* After connection_lost: the system's handle of the child goes. */
void pact__process_os_release(pact_process *p);
/* Closes a parent's end of a pipe no transport took. */
void pact__process_os_close_end(int end);

/* ---- the portable half, for the system's ---------------------------------- */

/* The child is gone with this returncode: wakes every waiter, and reports
 * process_exited now if connection_made has run (else right after it). */
void pact__process_exited(pact_process *p, int returncode);

#endif
