/* SPDX-License-Identifier: MIT */
/* The POSIX names the portable core (loop, ops, timers) uses, on Windows:
 * the socket headers, and the few constants and structs Winsock spells
 * differently or lacks. Only what the portable core needs is here; code
 * that needs more is Linux-only and not built on Windows. */
#ifndef PACT_WIN_POSIX_H
#define PACT_WIN_POSIX_H

#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
#include <errno.h>

#include "pact.h"

/* Windows never raises SIGPIPE: sends need no flag. */
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif
#ifndef MSG_DONTWAIT
#define MSG_DONTWAIT 0
#endif
#ifndef SHUT_RD
#define SHUT_RD SD_RECEIVE
#define SHUT_WR SD_SEND
#define SHUT_RDWR SD_BOTH
#endif
/* The path-based file ops' "no directory fd" marker; never a socket. */
#ifndef AT_FDCWD
#define AT_FDCWD ((pact_os_sock)-100)
#endif
#ifndef POLLRDHUP
#define POLLRDHUP 0x2000
#endif
/* errno values the CRT of mingw-w64 lacks (pact_strerror names them;
 * ESHUTDOWN and EKEYREJECTED, which callers see, are in pact.h). */
#ifndef ESOCKTNOSUPPORT
#define ESOCKTNOSUPPORT 182
#endif

typedef ADDRESS_FAMILY sa_family_t;

/* recvfrom / sendto keep their buffer and address in the op's ext block,
 * as on Linux; the names follow struct msghdr. */
struct msghdr {
    void *msg_name;
    int msg_namelen; /* WSARecvFrom writes the sender's length here */
    struct iovec *msg_iov;
    size_t msg_iovlen;
    DWORD msg_flags; /* WSARecv/WSARecvFrom flags, in and out */
};

/* A Windows error (GetLastError, WSAGetLastError) as a negative errno. */
int pact__win_error(DWORD err);

#endif
