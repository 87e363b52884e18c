/* SPDX-License-Identifier: MIT */
/* What only Windows has, on Linux: pact_wait_for_handle() waits for a
 * HANDLE (a process or an event there is a pidfd or an eventfd, which
 * pact_poll() waits for), and named pipes (Unix sockets are their
 * counterpart). Each answers -ENOTSUP and starts nothing; the Windows
 * code is in src/win/. */
#include "loop.h"

pact_op pact_wait_for_handle(pact_loop *loop, pact_os_fd handle,
                             uint64_t timeout_ns, pact_op_cb cb, void *user)
{
    (void)handle, (void)timeout_ns, (void)cb, (void)user;
    int r = pact__check_loop(loop, __func__);
    return r ? r : -ENOTSUP;
}

int pact_pipe_server_open(pact_loop *loop, const char *name,
                          pact_pipe_server **out)
{
    (void)name;
    if (out)
        *out = NULL;
    int r = pact__check_loop(loop, __func__);
    return r ? r : -ENOTSUP;
}

pact_op pact_pipe_server_accept(pact_pipe_server *server, pact_op_cb cb,
                                void *user)
{
    (void)server, (void)cb, (void)user;
    return -ENOTSUP;
}

int pact_pipe_server_close(pact_pipe_server *server)
{
    (void)server;
    return -ENOTSUP;
}

pact_op pact_pipe_connect(pact_loop *loop, const char *name, pact_op_cb cb,
                          void *user)
{
    (void)name, (void)cb, (void)user;
    int r = pact__check_loop(loop, __func__);
    return r ? r : -ENOTSUP;
}
