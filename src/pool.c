/* SPDX-License-Identifier: MIT */
/* The thread pool (asyncio's run_in_executor, libuv's uv_queue_work).
 *
 * Pool work is an ordinary pact operation: it has a handle, completes
 * exactly once on the loop thread and can be cancelled. Only its
 * submission, cancellation and completion differ from engine ops, and the
 * op layer dispatches those three here for ops flagged PACT_OPF_OFFLOAD.
 *
 * The pool belongs to its loop (no global state: several loops, or
 * Python's asyncio on top of this core, each get their own). Threads start
 * lazily, one more whenever queued work outnumbers idle threads, up to the
 * loop's pool size. They block every signal, so that signals meant for the
 * loop's signalfd are never taken by a worker.
 *
 * Ownership: a queued op sits in pool->queue (op->link); a running one is
 * owned by its worker until pact__op_done_offloaded() hands it back. Every
 * pool field and op->pool_state are guarded by pool->lock; the loop thread
 * does not touch a running op except to read pool_state under that lock. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#include "pool.h"

enum pool_state {
    POOL_NONE = 0,
    POOL_QUEUED,   /* in pool->queue: cancel removes it */
    POOL_RUNNING,  /* a worker runs it: cancel cannot stop it */
    POOL_FINISHED, /* result handed to the loop, not yet drained */
};

typedef struct pact_pool {
    pact_loop *loop;
    pthread_mutex_t lock;
    pthread_cond_t work_cv;
    pact_list queue; /* pact_op_s by link, FIFO */
    unsigned queued;
    unsigned idle;   /* workers waiting on work_cv */
    int stopping;
    pthread_t *threads;
    unsigned nthreads;
} pact_pool;

static void *worker_main(void *arg)
{
    pact_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (pact_list_empty(&p->queue) && !p->stopping) {
            p->idle++;
            pthread_cond_wait(&p->work_cv, &p->lock);
            p->idle--;
        }
        pact_list *node = pact_list_pop_front(&p->queue);
        if (!node)
            break; /* stopping and nothing queued */
        p->queued--;
        pact_op_s *op = pact_container_of(node, pact_op_s, link);
        op->ext->pool_state = POOL_RUNNING;
        int64_t (*fn)(void *) = op->ext->work_fn;
        void *fn_arg = op->ext->work_arg;
        pthread_mutex_unlock(&p->lock);

        int64_t result = fn(fn_arg);

        pthread_mutex_lock(&p->lock);
        op->ext->pool_state = POOL_FINISHED;
        pthread_mutex_unlock(&p->lock);
        /* From here on the loop thread may complete and free op. */
        pact__op_done_offloaded(p->loop, op, result);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static pact_pool *pool_get(pact_loop *loop)
{
    if (loop->pool)
        return loop->pool;
    pact_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->threads = calloc(PACT_POOL_MAX_SIZE, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return NULL;
    }
    p->loop = loop;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pact_list_init(&p->queue);
    loop->pool = p;
    return p;
}

static unsigned pool_size(const pact_loop *loop)
{
    return loop->pool_size ? loop->pool_size : PACT_POOL_DEFAULT_SIZE;
}

/* Called with p->lock held. Workers inherit a fully blocked signal mask:
 * a process-directed signal must reach the loop thread's signalfd, not a
 * worker that happens not to block it. */
static int spawn_worker(pact_pool *p)
{
#ifdef _WIN32 /* no signal masks */
    int r = pthread_create(&p->threads[p->nthreads], NULL, worker_main, p);
#else
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&p->threads[p->nthreads], NULL, worker_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
#endif
    if (r != 0)
        return -r;
    p->nthreads++;
    return 0;
}

int pact__pool_submit(pact_loop *loop, pact_op_s *op)
{
    pact_pool *p = pool_get(loop);
    if (!p) {
        pact__op_defer(loop, op, -ENOMEM);
        return 0;
    }
    pthread_mutex_lock(&p->lock);
    op->ext->pool_state = POOL_QUEUED;
    pact_list_push_back(&p->queue, &op->link);
    p->queued++;
    if (p->queued > p->idle && p->nthreads < pool_size(loop)) {
        int r = spawn_worker(p);
        if (r < 0 && p->nthreads == 0) {
            /* No thread at all will ever run it: fail the op. */
            pact_list_remove(&op->link);
            p->queued--;
            op->ext->pool_state = POOL_NONE;
            pthread_mutex_unlock(&p->lock);
            pact__error(loop, r, "cannot start a thread pool worker");
            pact__op_defer(loop, op, r);
            return 0;
        }
    }
    if (p->idle > 0)
        pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

int pact__pool_cancel(pact_loop *loop, pact_op_s *op)
{
    pact_pool *p = loop->pool;
    pthread_mutex_lock(&p->lock);
    int queued = op->ext->pool_state == POOL_QUEUED;
    if (queued) {
        pact_list_remove(&op->link);
        p->queued--;
        op->ext->pool_state = POOL_NONE;
    }
    pthread_mutex_unlock(&p->lock);
    if (!queued)
        return -EALREADY; /* running or finished: the real result comes */
    pact__op_defer(loop, op, -ECANCELED);
    return 0;
}

void pact__pool_shutdown(pact_loop *loop)
{
    pact_pool *p = loop->pool;
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pact_list *node;
    while ((node = pact_list_pop_front(&p->queue))) {
        pact_op_s *op = pact_container_of(node, pact_op_s, link);
        op->ext->pool_state = POOL_NONE;
        pact__op_defer(loop, op, -ECANCELED);
    }
    p->queued = 0;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    /* Running work finishes first: its op and buffers stay alive until the
     * worker hands it back (docs/contract.md §2), and its callback gets the
     * real result. */
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
    loop->pool = NULL;
}

void pact__pool_forget(pact_loop *loop)
{
    pact_pool *p = loop->pool;
    if (!p)
        return;
    free(p->threads);
    free(p);
    loop->pool = NULL;
}

pact_op pact__pool_start(pact_loop *loop, pact_op_s *op,
                         int64_t (*fn)(void *arg), void *arg,
                         void *created_at)
{
    pact_op_ext *x = pact__op_ext(loop, op);
    if (!x) {
        pact__op_release(loop, op);
        return -ENOMEM;
    }
    op->flags |= PACT_OPF_OFFLOAD;
    x->work_fn = fn;
    x->work_arg = arg;
    return pact__op_start(loop, op, created_at);
}

pact_op pact_queue_work(pact_loop *loop, pact_work_cb work, pact_op_cb done,
                        void *user)
{
    int err = pact__check_loop(loop, __func__);
    if (err)
        return err;
    if (!work || !done)
        return PACT_MISUSE(loop, -EINVAL, "work function or callback is NULL");
    pact_op_s *op = pact__op_new(loop, PACT_OP_WORK, -1, done, user, &err);
    if (!op)
        return err;
    return pact__pool_start(loop, op, work, user, __builtin_return_address(0));
}

int pact_pool_set_size(pact_loop *loop, unsigned n)
{
    int err = pact__check_loop(loop, __func__);
    if (err)
        return err;
    if (n == 0 || n > PACT_POOL_MAX_SIZE)
        return PACT_MISUSE(loop, -EINVAL, "pool size must be 1..1024");
    if (loop->pool) {
        pthread_mutex_lock(&loop->pool->lock);
        unsigned running = loop->pool->nthreads;
        pthread_mutex_unlock(&loop->pool->lock);
        if (running > n)
            return PACT_MISUSE(loop, -EBUSY,
                               "more threads than that are already running");
    }
    loop->pool_size = n;
    return 0;
}
