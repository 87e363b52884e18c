/* SPDX-License-Identifier: MIT */
/* udp-echo: a UDP echo server and a client that measures datagrams/s.
 *
 *   udp-echo                       server in a child process, client here
 *   udp-echo server [PORT]         only the server (127.0.0.1)
 *   udp-echo client PORT [N] [W]   N datagrams, W in flight (default
 *                                  200000 and 64)
 *
 * The client is connected and keeps a window of W datagrams in flight, so
 * loopback buffers never overflow; each one comes back through the server.
 * The engine follows PACT_ENGINE (uring or epoll). Datagrams/s counts both
 * directions (2 per round trip). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pact.h>

#define PAYLOAD 64

/* ---- server ---------------------------------------------------------- */

static void echo_back(pact_datagram *ep, const void *data, size_t len,
                      const struct sockaddr *addr, socklen_t addrlen,
                      void *user)
{
    (void)user;
    pact_datagram_sendto(ep, data, len, addr, addrlen);
}

static void report_error(pact_datagram *ep, int err,
                         const struct sockaddr *addr, socklen_t addrlen,
                         void *user)
{
    (void)ep, (void)addr, (void)addrlen, (void)user;
    fprintf(stderr, "udp-echo: %s (reception goes on)\n", pact_strerror(err));
}

static const pact_datagram_protocol server_proto = {
    .datagram_received = echo_back,
    .error_received = report_error,
};

static int run_server(uint16_t port, int ready_fd)
{
    pact_loop *loop;
    if (pact_loop_create(&loop, NULL) != 0)
        return 1;
    pact_datagram *ep;
    int r = pact_datagram_open_udp(loop, "127.0.0.1", port, NULL, 0, NULL,
                                   &server_proto, NULL, &ep);
    if (r != 0) {
        fprintf(stderr, "udp-echo server: %s\n", pact_strerror(r));
        return 1;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    pact_datagram_sockname(ep, &ss, &len);
    int bound = pact_socket_port(pact_datagram_fd(ep));
    if (ready_fd >= 0) {
        if (write(ready_fd, &bound, sizeof bound) != sizeof bound)
            return 1;
        close(ready_fd);
    } else {
        printf("udp echo server on 127.0.0.1:%d (%s)\n", bound,
               pact_loop_engine_name(loop));
        fflush(stdout);
    }
    pact_loop_run(loop); /* until killed */
    pact_loop_free(loop);
    return 0;
}

/* ---- client ---------------------------------------------------------- */

typedef struct client {
    pact_loop *loop;
    pact_datagram *ep;
    long total, sent, received, window;
    uint64_t start;
} client;

static void send_more(client *c)
{
    char buf[PAYLOAD];
    memset(buf, 'p', sizeof buf);
    while (c->sent < c->total && c->sent - c->received < c->window) {
        memcpy(buf, &c->sent, sizeof c->sent);
        pact_datagram_sendto(c->ep, buf, sizeof buf, NULL, 0);
        c->sent++;
    }
}

static void client_made(pact_datagram *ep, void *user)
{
    client *c = user;
    c->ep = ep;
    c->start = pact_now();
    send_more(c);
}

static void client_received(pact_datagram *ep, const void *data, size_t len,
                            const struct sockaddr *addr, socklen_t addrlen,
                            void *user)
{
    (void)data, (void)len, (void)addr, (void)addrlen;
    client *c = user;
    c->received++;
    if (c->received == c->total)
        pact_datagram_close(ep);
    else
        send_more(c);
}

static const pact_datagram_protocol client_proto = {
    .connection_made = client_made,
    .datagram_received = client_received,
    .error_received = report_error,
};

static int run_client(uint16_t port, long total, long window)
{
    pact_loop *loop;
    if (pact_loop_create(&loop, NULL) != 0)
        return 1;
    client c = {.loop = loop, .total = total, .window = window};
    pact_datagram *ep;
    int r = pact_datagram_open_udp(loop, NULL, 0, "127.0.0.1", port, NULL,
                                   &client_proto, &c, &ep);
    if (r != 0) {
        fprintf(stderr, "udp-echo client: %s\n", pact_strerror(r));
        return 1;
    }
    /* UDP may drop (a window larger than the server's receive buffer):
     * stop when nothing has come back for a second. */
    long seen = -1;
    uint64_t last = pact_now();
    while (c.received < total) {
        if (pact_loop_run_once(loop, 100 * 1000 * 1000ll) < 0)
            break;
        if (c.received != seen) {
            seen = c.received;
            last = pact_now();
        } else if (pact_now() - last > 1000 * 1000 * 1000ull) {
            fprintf(stderr, "udp-echo: %ld datagrams lost (no answer for 1 s)\n",
                    c.sent - c.received);
            break;
        }
    }
    double secs = (double)(pact_now() - c.start) / 1e9;
    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    if (getenv("UDP_ECHO_STATS"))
        printf("iterations %llu, enter/epoll_wait calls %llu\n",
               (unsigned long long)st.iterations,
               (unsigned long long)st.syscalls_enter);
    printf("%-8s %ld round trips (window %ld, %d-byte datagrams) in %.3f s: "
           "%.0f round trips/s, %.0f datagrams/s\n",
           pact_loop_engine_name(loop), c.received, window, PAYLOAD, secs,
           c.received / secs, 2 * c.received / secs);
    pact_loop_free(loop); /* closes the endpoint if it is still open */
    return c.received == total ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "server") == 0)
        return run_server(argc >= 3 ? (uint16_t)atoi(argv[2]) : 0, -1);
    long total = 200000, window = 64;
    if (argc >= 2 && strcmp(argv[1], "client") == 0) {
        if (argc < 3) {
            fprintf(stderr, "usage: udp-echo client PORT [N] [WINDOW]\n");
            return 2;
        }
        if (argc >= 4)
            total = atol(argv[3]);
        if (argc >= 5)
            window = atol(argv[4]);
        return run_client((uint16_t)atoi(argv[2]), total, window);
    }
    if (argc >= 2)
        total = atol(argv[1]);
    if (argc >= 3)
        window = atol(argv[2]);
    /* Both: the server in a child, told to us through a pipe. */
    int p[2];
    if (pipe(p) != 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        _exit(run_server(0, p[1]));
    }
    close(p[1]);
    int port = 0;
    if (read(p[0], &port, sizeof port) != sizeof port)
        return 1;
    close(p[0]);
    int rc = run_client((uint16_t)port, total, window);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return rc;
}
