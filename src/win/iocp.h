/* SPDX-License-Identifier: MIT */
/* What the Windows files share about the loop's completion port. */
#ifndef PACT_WIN_IOCP_H
#define PACT_WIN_IOCP_H

#include <winternl.h> /* RtlNtStatusToDosError: a packet's status */

#include "loop.h"

/* Completion keys: an op's packet (its OVERLAPPED is in the op) and the
 * loop's wake-up (no OVERLAPPED). */
#define IOCP_KEY_OP ((ULONG_PTR)1)
#define IOCP_KEY_WAKE ((ULONG_PTR)2)
/* pact_wait_for_handle() (src/win/wait_handle.c): its wait fired, and its
 * cancel finished (no wait callback runs any more). */
#define IOCP_KEY_WAIT_FIRED ((ULONG_PTR)3)
#define IOCP_KEY_WAIT_DONE ((ULONG_PTR)4)

/* Accept sockets pact made and still holds (for tests). */
long pact__iocp_accept_sockets_held(void);
/* Associates a handle with the loop's port (once; 0 or -errno). */
int pact__iocp_associate(pact_loop *loop, HANDLE h);
/* The packet of a pipe server's accept (src/win/pipe.c). */
void pact__pipe_packet(pact_loop *loop, pact_op_s *op);
/* A packet of a pact_wait_for_handle() op. */
void pact__wait_handle_packet(pact_loop *loop, pact_op_s *op, ULONG_PTR key);

/* WSAStartup and the extension functions, once per process; 0 or a
 * negative errno. */
int pact__winsock_init(void);
/* The loop's completion port (valid from engine init to
 * pact__iocp_free). */
HANDLE pact__iocp_port(pact_loop *loop);
/* Closes the port and frees the engine (from pact__wake_close). */
void pact__iocp_free(pact_loop *loop);

#endif
