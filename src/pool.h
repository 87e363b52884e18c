/* SPDX-License-Identifier: MIT */
/* The loop's thread pool: runs offloaded ops (PACT_OPF_OFFLOAD) — user
 * work, name resolution, file ops the engine cannot do natively — on
 * worker threads, and hands each result back to the loop thread through
 * pact__op_done_offloaded(). */
#ifndef PACT_POOL_H
#define PACT_POOL_H

#include "loop.h"

#define PACT_POOL_DEFAULT_SIZE 4
#define PACT_POOL_MAX_SIZE 1024

/* Starts op (fresh from pact__op_new) as an offloaded op that runs
 * fn(arg) on a worker; fn's return value becomes the op's result. If its
 * ext block cannot be had, releases op (its extra->release runs) and
 * returns -ENOMEM. */
pact_op pact__pool_start(pact_loop *loop, pact_op_s *op,
                         int64_t (*fn)(void *arg), void *arg,
                         void *created_at);

/* The op layer's hooks (pact__ops_flush, pact__op_cancel). submit returns 0
 * (the pool arms no deadline itself); cancel returns 0 if the op was still
 * queued (it completes with -ECANCELED) or -EALREADY if a worker is
 * running it (it completes with its real result). */
int pact__pool_submit(pact_loop *loop, pact_op_s *op);
int pact__pool_cancel(pact_loop *loop, pact_op_s *op);

/* Loop close: completes still-queued ops with -ECANCELED, waits for the
 * running ones, joins the threads and frees the pool. The finished ops are
 * then in loop->offload_done. */
void pact__pool_shutdown(pact_loop *loop);
/* pact_loop_free() in a child process after fork(): the workers do not
 * exist there, and the pool's mutex may have been held by one of them
 * when the parent forked, so frees the memory only (the ops are freed
 * with the loop's slab). */
void pact__pool_forget(pact_loop *loop);

#endif
