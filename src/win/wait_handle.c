/* SPDX-License-Identifier: MIT */
/* pact_wait_for_handle(): waiting for a HANDLE (a process, an event) as
 * one operation (PACT_OP_CUSTOM), on the system thread pool's waits.
 *
 * RegisterWaitForSingleObject runs a callback on a pool thread once the
 * handle is signalled or the wait's timeout passed; the callback only
 * posts a packet to the loop's port (IOCP_KEY_WAIT_FIRED, the op's
 * OVERLAPPED as its address) and touches nothing after that.
 *
 * Cancelling is the delicate part (asyncio learned it the hard way:
 * UnregisterWait returned while the callback still ran, and the memory it
 * used was freed under it). Here the cancel asks UnregisterWaitEx to
 * signal an event once no callback runs any more, and waits for that event
 * with a second registered wait, which posts IOCP_KEY_WAIT_DONE. A fired
 * callback posted its packet before it returned, and the event is set only
 * after it returned, so on the port (first in, first out) FIRED always
 * comes before DONE. DONE is therefore the last word: the op completes
 * there, with the real result if the wait fired first (the cancel came too
 * late) or -ECANCELED, and only then is the state freed. The loop never
 * blocks on a pool thread, and a loop close (which cancels every op) waits
 * for the DONE packets like for any other. */
#include <stdatomic.h>
#include <stdlib.h>

#include "win/iocp.h"

typedef struct wait_state {
    HANDLE port;
    pact_op_s *op;
    HANDLE wait;        /* the registered wait on the user's handle */
    HANDLE cancel_wait; /* the wait on done_event while cancelling */
    HANDLE done_event;  /* set by UnregisterWaitEx: no callback runs */
    atomic_int timed_out;
    int cancelling;
    int fired;          /* FIRED dequeued while cancelling */
    int64_t fired_result;
} wait_state;

static VOID CALLBACK wait_fired(PVOID ctx, BOOLEAN timer_or_wait_fired)
{
    wait_state *st = ctx;
    atomic_store(&st->timed_out, timer_or_wait_fired ? 1 : 0);
    PostQueuedCompletionStatus(st->port, 0, IOCP_KEY_WAIT_FIRED,
                               &st->op->overlapped);
    /* Nothing of st is touched after the post. */
}

static VOID CALLBACK cancel_done(PVOID ctx, BOOLEAN timer_or_wait_fired)
{
    (void)timer_or_wait_fired;
    wait_state *st = ctx;
    PostQueuedCompletionStatus(st->port, 0, IOCP_KEY_WAIT_DONE,
                               &st->op->overlapped);
}

static void wait_state_free(wait_state *st)
{
    if (st->done_event)
        CloseHandle(st->done_event);
    free(st);
}

static void wait_cancel(pact_loop *loop, pact_op_s *op)
{
    wait_state *st = op->buf;
    st->cancelling = 1;
    /* The event is set once no callback of the wait runs or will run;
     * ERROR_IO_PENDING says one is running now, which is fine. */
    if (!UnregisterWaitEx(st->wait, st->done_event) &&
        GetLastError() != ERROR_IO_PENDING) {
        pact__error(loop, pact__win_error(GetLastError()),
                    "UnregisterWaitEx failed");
        SetEvent(st->done_event);
    }
    st->wait = NULL;
    if (!RegisterWaitForSingleObject(&st->cancel_wait, st->done_event,
                                     cancel_done, st, INFINITE,
                                     WT_EXECUTEONLYONCE | WT_EXECUTEINWAITTHREAD)) {
        /* No pool wait to spare: wait here (callbacks only post, so this
         * is short) and post DONE ourselves; the op still completes from
         * the port, never from inside this call. */
        WaitForSingleObject(st->done_event, INFINITE);
        st->cancel_wait = NULL;
        PostQueuedCompletionStatus(st->port, 0, IOCP_KEY_WAIT_DONE,
                                   &op->overlapped);
    }
}

void pact__wait_handle_packet(pact_loop *loop, pact_op_s *op, ULONG_PTR key)
{
    wait_state *st = op->buf;
    if (key == IOCP_KEY_WAIT_FIRED) {
        int64_t result = atomic_load(&st->timed_out) ? -ETIMEDOUT : 0;
        if (st->cancelling) {
            /* DONE follows; the real result wins over the cancel. */
            st->fired = 1;
            st->fired_result = result;
            return;
        }
        /* Fired once (WT_EXECUTEONLYONCE) and its callback is past its
         * last access: release the registration without waiting. */
        UnregisterWaitEx(st->wait, NULL);
        wait_state_free(st);
        op->buf = NULL;
        pact__op_defer(loop, op, result);
        return;
    }
    /* IOCP_KEY_WAIT_DONE: no callback of either wait runs any more. */
    if (st->cancel_wait)
        UnregisterWaitEx(st->cancel_wait, NULL);
    int64_t result = st->fired ? st->fired_result : -ECANCELED;
    wait_state_free(st);
    op->buf = NULL;
    pact__op_defer(loop, op, result);
}

pact_op pact_wait_for_handle(pact_loop *loop, pact_os_fd handle,
                             uint64_t timeout_ns, pact_op_cb cb, void *user)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (!cb)
        return PACT_MISUSE(loop, -EINVAL, "callback is NULL");
    if (!handle || handle == INVALID_HANDLE_VALUE)
        return PACT_MISUSE(loop, -EBADF, "not a handle");
    wait_state *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    st->port = pact__iocp_port(loop);
    st->done_event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (!st->done_event) {
        r = pact__win_error(GetLastError());
        free(st);
        return r;
    }
    pact_op_s *op = pact__op_new(loop, PACT_OP_CUSTOM, (pact_os_sock)handle,
                                 cb, user, &r);
    if (!op) {
        wait_state_free(st);
        return r;
    }
    op->custom_cancel = wait_cancel;
    op->buf = st;
    st->op = op;
    DWORD ms = INFINITE;
    if (timeout_ns) {
        /* Rounded up: never early. */
        uint64_t up = (timeout_ns + 999999) / 1000000;
        ms = up >= INFINITE ? INFINITE - 1 : (DWORD)up;
    }
    if (!RegisterWaitForSingleObject(&st->wait, handle, wait_fired, st, ms,
                                     WT_EXECUTEONLYONCE | WT_EXECUTEINWAITTHREAD)) {
        r = pact__win_error(GetLastError());
        pact__op_release(loop, op);
        wait_state_free(st);
        return r;
    }
    return pact__op_start_custom(loop, op, __builtin_return_address(0));
}
