/* SPDX-License-Identifier: MIT */
/* The POSIX socket calls of the stream transport and the server
 * (src/stream.c, src/server.c), on Winsock, so that one implementation of
 * each serves both systems. On Windows a transport or a listener is a
 * SOCKET (held in an int fd: Windows handle values fit in 32 bits), and
 * these calls report their failure in errno as the POSIX ones do. Only
 * the portable endpoint files (stream, server, client, datagram) include
 * this. */
#ifndef PACT_WIN_SOCKET_CALLS_H
#define PACT_WIN_SOCKET_CALLS_H

#include <io.h>
#include <unistd.h> /* close() is declared before it is renamed below */

#include "posix.h"
#include <afunix.h> /* struct sockaddr_un, for the size of a path */

static inline int pact__win_socket_result(int r)
{
    if (r != 0) {
        errno = -pact__win_error((DWORD)WSAGetLastError());
        return -1;
    }
    return 0;
}

static inline int pact__win_close_socket(int fd)
{
    return pact__win_socket_result(closesocket((SOCKET)fd));
}

static inline int pact__win_shutdown(int fd, int how)
{
    return pact__win_socket_result(shutdown((SOCKET)fd, how));
}

static inline int pact__win_sockname(int fd, struct sockaddr *sa, int *len,
                                     int peer)
{
    return pact__win_socket_result(peer ? getpeername((SOCKET)fd, sa, len)
                                        : getsockname((SOCKET)fd, sa, len));
}

static inline int pact__win_bind(int fd, const struct sockaddr *sa, int len)
{
    return pact__win_socket_result(bind((SOCKET)fd, sa, len));
}

static inline int pact__win_connect(int fd, const struct sockaddr *sa, int len)
{
    return pact__win_socket_result(connect((SOCKET)fd, sa, len));
}

static inline int pact__win_getsockopt(int fd, int level, int name,
                                       void *value, int *len)
{
    return pact__win_socket_result(
        getsockopt((SOCKET)fd, level, name, (char *)value, len));
}

static inline int pact__win_setsockopt(int fd, int level, int name,
                                       const void *value, int len)
{
    return pact__win_socket_result(
        setsockopt((SOCKET)fd, level, name, (const char *)value, len));
}

/* No eager send: a SOCKET has no per-call "do not block" flag (making it
 * non-blocking would change every overlapped call on it), so every write
 * goes the queued way, as one WSASend on the completion port. */
static inline long pact__win_no_eager_send(void)
{
    errno = EAGAIN;
    return -1;
}

/* A listening TCP socket for pact_server_listen_tcp (src/win/socket.c):
 * the fd, or a negative errno. */
int pact__win_tcp_listener(const struct sockaddr_storage *ss, int len,
                           const pact_server_options *opts);

/* A connecting TCP socket for pact_connect_tcp (src/win/socket.c). */
int pact__win_tcp_socket(int family);

/* A UDP socket for the datagram endpoints (src/win/socket.c): overlapped,
 * not inherited. The fd, or a negative errno. */
int pact__win_udp_socket(int family);

#define close(fd) pact__win_close_socket(fd)
/* Winsock takes the option value as a char pointer. */
#define setsockopt(fd, level, name, value, len)                               \
    pact__win_setsockopt(fd, level, name, value, len)
#define getsockopt(fd, level, name, value, len)                               \
    pact__win_getsockopt(fd, level, name, value, len)
#define bind(fd, sa, len) pact__win_bind(fd, sa, len)
#define connect(fd, sa, len) pact__win_connect(fd, sa, len)
#define listen(fd, backlog) pact__win_socket_result(listen((SOCKET)(fd), backlog))
#define shutdown(fd, how) pact__win_shutdown(fd, how)
#define getsockname(fd, sa, len) pact__win_sockname(fd, sa, len, 0)
#define getpeername(fd, sa, len) pact__win_sockname(fd, sa, len, 1)
#define send(fd, buf, len, flags) ((void)(fd), (void)(buf), pact__win_no_eager_send())
#define sendmsg(fd, mh, flags) ((void)(fd), (void)(mh), pact__win_no_eager_send())
/* Write pipes are not transports on Windows yet: never reached. */
#define pwritev2(fd, iov, n, off, flags) ((void)(fd), pact__win_no_eager_send())
#define RWF_NOWAIT 0

#endif
