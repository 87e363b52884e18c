/* SPDX-License-Identifier: MIT */
/* The loop's cross-thread wake-up on Windows: a packet posted to the
 * completion port with IOCP_KEY_WAKE, which the engine's wait dequeues
 * and answers by clearing loop->wake_pending. No op and no handle of its
 * own: the port is the one the loop waits on. */
#include "win/iocp.h"

int pact__wake_open(pact_loop *loop)
{
    loop->wake_fd = -1;
    return 0;
}

int pact__wake_post(pact_loop *loop)
{
    if (!PostQueuedCompletionStatus(pact__iocp_port(loop), 0, IOCP_KEY_WAKE,
                                    NULL))
        return pact__win_error(GetLastError());
    return 0;
}

/* Called under the loop's ts_lock once it is closed: no thread posts
 * after this, so the port can go. */
void pact__wake_close(pact_loop *loop)
{
    pact__iocp_free(loop);
}
