/* SPDX-License-Identifier: MIT */
/* Fault injection for tests (tests/test_faults.c): makes the Nth call of a
 * chosen site fail with a chosen error. Compiled in only with
 * -DPACT_FAULT_INJECTION (tests/meson.build builds a separate copy of the
 * library that way for test_faults); otherwise every hook is the constant
 * 0 and costs nothing. Each hook is one PACT_FAULT(site) call, commented
 * at its site. Not thread-safe by design: the scenarios run on one loop
 * thread (the pool's workers call no hook). */
#ifndef PACT_FAULT_H
#define PACT_FAULT_H

enum pact_fault_site {
    PACT_FAULT_OP_ERROR,   /* op.c: a completed recv/send/read/write/connect
                              that succeeded reports err instead */
    PACT_FAULT_SHORT_IO,   /* op.c: recv/send/read/write asks the kernel for
                              half its length (a short read or send) */
    PACT_FAULT_ACCEPT,     /* op.c: an accepted fd is closed and the accept
                              reports err (EMFILE, ENFILE, ...) */
    PACT_FAULT_SLAB_ALLOC, /* slab.c: an op/handle allocation: -ENOMEM */
    PACT_FAULT_GET_SQE,    /* engine_uring.c: no SQE (SQ full, ring stuck) */
    PACT_FAULT_URING_SETUP,/* engine_uring.c: io_uring_setup fails with err */
    PACT_FAULT_FIXED_FILE, /* engine_uring.c: the update that fills a
                              socket's fixed-file slot fails (in the
                              kernel, as without memory): the slot stays
                              empty */
    PACT_FAULT_SUBMIT,     /* engine_uring.c: a submission outside a wait
                              (uring_submit_now) that the kernel takes
                              none of, answering err (-EAGAIN, as when it
                              cannot allocate requests): the SQEs wait in
                              the ring for the next submission */
    PACT_FAULT_CLOSE_DEADLINE, /* loop.c: pact_loop_close's wait for the
                              resources it force-closed ends at once, as
                              if its 10 s had passed (any err): what they
                              still have queued runs inside the close */
    PACT_FAULT_RECV_POLL_FIRST, /* engine_uring.c: a receive SQE that waits
                              for readiness before it first tries
                              (IORING_RECVSEND_POLL_FIRST), seen in the SQE
                              as the kernel gets it: counted only
                              (pact_fault_calls while armed), nothing to
                              inject */
    PACT_FAULT_EPOLL_TRY,  /* engine_epoll.c: an op's try of its system
                              call at submission is not made and reports
                              err instead (-EAGAIN: the op waits for
                              readiness, as if the call would block); not
                              for a regular file's I/O, which never waits */
    PACT_FAULT_SITE_COUNT
};

#ifdef PACT_FAULT_INJECTION
/* The error to inject at this call of site (counting calls from 1), or 0. */
int pact__fault(enum pact_fault_site site);
/* Test API: arm site to fail its nth call (from now) with err; nth 0
 * disarms. Returns how often the armed fault fired since arming. */
void pact_fault_arm(enum pact_fault_site site, unsigned long nth, int err);
unsigned long pact_fault_fired(enum pact_fault_site site);
unsigned long pact_fault_calls(enum pact_fault_site site);
#define PACT_FAULT(site) pact__fault(site)
/* 1 in the library built for fault injection: a fast path that would skip
 * a hook takes the slow path there. */
#define PACT_FAULTS_BUILT_IN 1
#else
#define PACT_FAULT(site) 0
#define PACT_FAULTS_BUILT_IN 0
#endif

#endif
