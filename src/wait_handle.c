/* SPDX-License-Identifier: MIT */
/* pact_wait_for_handle() waits for a Windows HANDLE (src/win/wait_handle.c).
 * Linux has no such handles: a process or an event there is a pidfd or an
 * eventfd, which pact_poll() waits for. */
#include "loop.h"

pact_op pact_wait_for_handle(pact_loop *loop, pact_os_fd handle,
                             uint64_t timeout_ns, pact_op_cb cb, void *user)
{
    (void)handle, (void)timeout_ns, (void)cb, (void)user;
    int r = pact__check_loop(loop, __func__);
    return r ? r : -ENOTSUP;
}
