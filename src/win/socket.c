/* SPDX-License-Identifier: MIT */
/* Sockets on Windows: what src/stream.c and src/server.c leave to the
 * system, on Winsock. The stream (reading with the multishot receive, the
 * write queue, flow control, pause without loss, the endpoint's close)
 * and the server (accepting with AcceptEx through pact_accept, the
 * factory, the back-off, closing) are the same code as on Linux, on the
 * completion port's operations. */
#include <string.h>

#include "posix.h"
#include "iocp.h"
#include "stream.h"

int pact_socket_port(int fd)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (getsockname((SOCKET)fd, (struct sockaddr *)&ss, &len) != 0)
        return pact__win_error((DWORD)WSAGetLastError());
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EAFNOSUPPORT;
}

/* The listener of pact_server_listen_tcp. Overlapped (AcceptEx) and not
 * inherited by child processes. No SO_REUSEADDR: on Windows it lets
 * another socket take over a port in use, not what it means on Linux
 * (a listener in TIME_WAIT's way is no problem on Windows to begin
 * with); reuse_port has no Windows counterpart and is refused. */
int pact__win_tcp_listener(const struct sockaddr_storage *ss, int len,
                           const pact_server_options *opts)
{
    if (opts->reuse_port)
        return -ENOTSUP;
    int r = pact__winsock_init();
    if (r)
        return r;
    SOCKET s = WSASocketW(ss->ss_family, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                          WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (s == INVALID_SOCKET)
        return pact__win_error((DWORD)WSAGetLastError());
    if (ss->ss_family == AF_INET6) {
        DWORD v6only = opts->ipv6_only ? 1 : 0;
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, (const char *)&v6only,
                   sizeof v6only);
    }
    if (bind(s, (const struct sockaddr *)ss, len) != 0 ||
        listen(s, opts->backlog > 0 ? opts->backlog : SOMAXCONN) != 0) {
        r = pact__win_error((DWORD)WSAGetLastError());
        closesocket(s);
        return r;
    }
    return (int)s;
}

/* A TCP socket for pact_connect_tcp: overlapped (ConnectEx), not
 * inherited, TCP_NODELAY set as on Linux. The fd, or a negative errno. */
int pact__win_tcp_socket(int family)
{
    int r = pact__winsock_init();
    if (r)
        return r;
    SOCKET s = WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                          WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (s == INVALID_SOCKET)
        return pact__win_error((DWORD)WSAGetLastError());
    DWORD one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one);
    return (int)s;
}

/* A UDP socket for the datagram endpoints: overlapped (WSARecvFrom,
 * WSASendTo on the port), not inherited. The fd, or a negative errno. */
int pact__win_udp_socket(int family)
{
    int r = pact__winsock_init();
    if (r)
        return r;
    SOCKET s = WSASocketW(family, SOCK_DGRAM, IPPROTO_UDP, NULL, 0,
                          WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (s == INVALID_SOCKET)
        return pact__win_error((DWORD)WSAGetLastError());
    return (int)s;
}

/* The public helpers, the Windows way: sockets for the completion port
 * (overlapped, not inherited) rather than non-blocking, close-on-exec
 * fds; the listener without SO_REUSEADDR (see pact__win_tcp_listener). */
int pact_tcp_socket(int family)
{
    if (family != AF_INET && family != AF_INET6)
        return -EAFNOSUPPORT;
    return pact__win_tcp_socket(family);
}

int pact_tcp_listen(const char *host, uint16_t port, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int r = pact_sockaddr_parse(host, port, &ss, &len);
    if (r)
        return r;
    pact_server_options o;
    pact_server_options_init(&o);
    o.backlog = backlog;
    return pact__win_tcp_listener(&ss, (int)len, &o);
}
