/* SPDX-License-Identifier: MIT */
/*
 * demo: an echo server and many clients in one process, run on each engine.
 *
 * Built from the operation API alone: pact_accept, pact_connect, pact_recv
 * and pact_send_all. Each client sends a 64-byte message, reads until all
 * 64 bytes have come back (recv may return fewer), checks every byte, and
 * sends the next. A message carries its sequence number, so a lost,
 * duplicated or reordered byte shows up as a mismatch.
 *
 * Every connection has exactly one operation in flight at a time. That is
 * what makes closing simple: inside the callback of its operation nothing is
 * in flight on the fd any more, so that is where the fd may be closed.
 *
 * When --seconds have passed, a timer cancels every pending operation. Each
 * callback then sees -ECANCELED (or its real result, if the kernel finished
 * first), closes its fd and starts nothing new, so pact_loop_run() returns
 * once the last one has completed.
 *
 *   usage: demo [--seconds S] [--connections N]
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <pact.h>

#define MSG_SIZE 64
#define NS_PER_SEC 1000000000ull

struct demo;

/* What the server side and the client side of a connection share. */
struct conn {
    struct demo *demo;
    int fd;
    pact_op op; /* the one operation in flight; 0 while none is */
};

/* The server's side of a connection: sends back whatever arrives. */
struct echo_conn {
    struct conn base;
    unsigned char buf[4096];
};

struct client {
    struct conn base;
    uint32_t id;
    uint64_t seq;    /* sequence number of the message in flight */
    size_t received; /* bytes of its echo received so far */
    unsigned char tx[MSG_SIZE];
    unsigned char rx[MSG_SIZE];
};

struct demo {
    pact_loop *loop;
    int nconns;
    int listen_fd;
    pact_op accept_op;
    struct sockaddr_storage addr; /* where the server listens */
    socklen_t addrlen;
    struct echo_conn *servers; /* nconns of them, filled in by accept */
    int accepted;
    struct client *clients;
    int connected;
    bool stopping;
    uint64_t started_ns, stopped_ns;
    uint64_t requests; /* echoes received in full and checked */
    uint64_t bytes_ok;
    uint64_t bytes_bad;
    int errors;
};

static void fail(struct demo *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "demo: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    d->errors++;
}

static void conn_close(struct conn *c)
{
    close(c->fd);
    c->fd = -1;
}

/* Records the operation a connection just started. A negative handle means
 * it was not started and its callback will never run: the connection ends
 * here. */
static void conn_track(struct conn *c, pact_op op, const char *what)
{
    if (op < 0) {
        fail(c->demo, "%s: %s", what, pact_strerror((int)op));
        conn_close(c);
        return;
    }
    c->op = op;
}

/* Every operation callback starts here. Returns false, having closed the
 * fd, if the connection ends: the op failed, or the demo is stopping (then
 * even a successful result ends it: an op that beat its cancel must not
 * start another). */
static bool conn_continues(struct conn *c, int64_t result, const char *what)
{
    c->op = 0;
    if (!c->demo->stopping && result < 0)
        fail(c->demo, "%s: %s", what, pact_strerror((int)result));
    if (c->demo->stopping || result < 0) {
        conn_close(c);
        return false;
    }
    return true;
}

/* ---- the echo server ---------------------------------------------------- */

static void echo_on_received(pact_loop *loop, const pact_completion *c,
                             void *user);

static void echo_on_sent(pact_loop *loop, const pact_completion *c, void *user)
{
    struct echo_conn *s = user;
    if (!conn_continues(&s->base, c->result, "server send_all"))
        return;
    conn_track(&s->base,
               pact_recv(loop, s->base.fd, s->buf, sizeof s->buf, 0,
                         echo_on_received, s),
               "server recv");
}

static void echo_on_received(pact_loop *loop, const pact_completion *c,
                             void *user)
{
    struct echo_conn *s = user;
    if (!conn_continues(&s->base, c->result, "server recv"))
        return;
    if (c->result == 0) { /* the client closed: so do we */
        conn_close(&s->base);
        return;
    }
    /* send_all, not send: a short send would otherwise drop the rest. */
    conn_track(&s->base,
               pact_send_all(loop, s->base.fd, s->buf, (size_t)c->result, 0,
                             echo_on_sent, s),
               "server send_all");
}

static void on_accept(pact_loop *loop, const pact_completion *c, void *user)
{
    struct demo *d = user;
    d->accept_op = 0;
    if (c->result < 0 || d->stopping) {
        if (c->result >= 0)
            close((int)c->result); /* it beat our cancel: still ours */
        else if (!d->stopping)
            fail(d, "accept: %s", pact_strerror((int)c->result));
        close(d->listen_fd);
        d->listen_fd = -1;
        return;
    }

    int fd = (int)c->result;
    if (d->accepted == d->nconns) {
        close(fd); /* not one of our clients */
    } else {
        struct echo_conn *s = &d->servers[d->accepted++];
        s->base.fd = fd;
        /* Without it, an echo split by a short read waits for Nagle. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_track(&s->base,
                   pact_recv(loop, fd, s->buf, sizeof s->buf, 0,
                             echo_on_received, s),
                   "server recv");
    }

    /* Keep one accept pending until the end; the deadline cancels it. */
    d->accept_op = pact_accept(loop, d->listen_fd, on_accept, d);
    if (d->accept_op < 0) {
        fail(d, "accept: %s", pact_strerror((int)d->accept_op));
        d->accept_op = 0;
        close(d->listen_fd);
        d->listen_fd = -1;
    }
}

/* ---- the clients -------------------------------------------------------- */

/* Message seq of client id: the sequence number, the client's id, then
 * filler that depends on both and on the position. */
static void make_message(unsigned char *msg, uint32_t id, uint64_t seq)
{
    memcpy(msg, &seq, sizeof seq);
    memcpy(msg + sizeof seq, &id, sizeof id);
    for (size_t i = sizeof seq + sizeof id; i < MSG_SIZE; i++)
        msg[i] = (unsigned char)(seq * 131 + id * 7 + i);
}

static void check_echo(struct client *cl)
{
    struct demo *d = cl->base.demo;
    unsigned char expected[MSG_SIZE];
    make_message(expected, cl->id, cl->seq);
    unsigned bad = 0;
    for (size_t i = 0; i < MSG_SIZE; i++) {
        if (cl->rx[i] == expected[i])
            continue;
        if (bad == 0 && d->bytes_bad == 0)
            fprintf(stderr, "demo: client %u message %llu byte %zu: "
                            "got 0x%02x, expected 0x%02x\n",
                    cl->id, (unsigned long long)cl->seq, i, cl->rx[i],
                    expected[i]);
        bad++;
    }
    d->requests++;
    d->bytes_ok += MSG_SIZE - bad;
    d->bytes_bad += bad;
}

static void client_on_sent(pact_loop *loop, const pact_completion *c,
                           void *user);
static void client_on_echo(pact_loop *loop, const pact_completion *c,
                           void *user);

static void client_send_next(struct client *cl)
{
    make_message(cl->tx, cl->id, cl->seq);
    cl->received = 0;
    conn_track(&cl->base,
               pact_send_all(cl->base.demo->loop, cl->base.fd, cl->tx,
                             MSG_SIZE, 0, client_on_sent, cl),
               "client send_all");
}

static void client_recv_rest(struct client *cl)
{
    conn_track(&cl->base,
               pact_recv(cl->base.demo->loop, cl->base.fd,
                         cl->rx + cl->received, MSG_SIZE - cl->received, 0,
                         client_on_echo, cl),
               "client recv");
}

static void client_on_connected(pact_loop *loop, const pact_completion *c,
                                void *user)
{
    (void)loop;
    struct client *cl = user;
    if (!conn_continues(&cl->base, c->result, "connect"))
        return;
    cl->base.demo->connected++;
    client_send_next(cl);
}

static void client_on_sent(pact_loop *loop, const pact_completion *c,
                           void *user)
{
    (void)loop;
    struct client *cl = user;
    if (!conn_continues(&cl->base, c->result, "client send_all"))
        return;
    client_recv_rest(cl);
}

static void client_on_echo(pact_loop *loop, const pact_completion *c,
                           void *user)
{
    (void)loop;
    struct client *cl = user;
    if (!conn_continues(&cl->base, c->result, "client recv"))
        return;
    if (c->result == 0) {
        fail(cl->base.demo, "client %u: the server closed the connection",
             cl->id);
        conn_close(&cl->base);
        return;
    }
    cl->received += (size_t)c->result;
    if (cl->received < MSG_SIZE) { /* a short read: wait for the rest */
        client_recv_rest(cl);
        return;
    }
    check_echo(cl);
    cl->seq++;
    client_send_next(cl);
}

/* ---- running it --------------------------------------------------------- */

static void cancel_if_pending(pact_loop *loop, pact_op op)
{
    /* The callback still runs, exactly once; it closes the fd. */
    if (op > 0)
        pact_op_cancel(loop, op);
}

static void on_deadline(pact_loop *loop, void *user)
{
    struct demo *d = user;
    d->stopping = true;
    d->stopped_ns = pact_now();
    cancel_if_pending(loop, d->accept_op);
    for (int i = 0; i < d->nconns; i++) {
        cancel_if_pending(loop, d->clients[i].base.op);
        cancel_if_pending(loop, d->servers[i].base.op);
    }
}

static void start_clients(struct demo *d)
{
    for (int i = 0; i < d->nconns; i++) {
        struct client *cl = &d->clients[i];
        cl->base.fd = pact_tcp_socket(AF_INET);
        if (cl->base.fd < 0) {
            fail(d, "socket: %s", pact_strerror(cl->base.fd));
            cl->base.fd = -1;
            continue;
        }
        conn_track(&cl->base,
                   pact_connect(d->loop, cl->base.fd,
                                (struct sockaddr *)&d->addr, d->addrlen,
                                client_on_connected, cl),
                   "connect");
    }
}

/* The checks that make a run trustworthy beyond its byte count. */
static void check_clean_stop(struct demo *d, const char *when)
{
    pact_loop_stats st;
    pact_loop_get_stats(d->loop, &st);
    if (st.stray_completions != 0)
        fail(d, "%s: %llu stray completion(s)", when,
             (unsigned long long)st.stray_completions);
    if (st.ops_live != 0)
        fail(d, "%s: %llu operation(s) still live", when,
             (unsigned long long)st.ops_live);
}

static bool setup(struct demo *d, pact_engine_kind engine)
{
    pact_loop_options opts;
    pact_loop_options_init(&opts);
    opts.engine = engine;
    int r = pact_loop_create(&d->loop, &opts);
    if (r < 0) {
        fail(d, "pact_loop_create: %s", pact_strerror(r));
        return false;
    }
    d->listen_fd = pact_tcp_listen("127.0.0.1", 0, d->nconns);
    if (d->listen_fd < 0) {
        fail(d, "listen: %s", pact_strerror(d->listen_fd));
        return false;
    }
    pact_sockaddr_parse("127.0.0.1", (uint16_t)pact_socket_port(d->listen_fd),
                        &d->addr, &d->addrlen);
    d->servers = calloc((size_t)d->nconns, sizeof *d->servers);
    d->clients = calloc((size_t)d->nconns, sizeof *d->clients);
    if (!d->servers || !d->clients) {
        fail(d, "out of memory");
        return false;
    }
    for (int i = 0; i < d->nconns; i++) {
        d->servers[i].base = (struct conn){.demo = d, .fd = -1};
        d->clients[i].base = (struct conn){.demo = d, .fd = -1};
        d->clients[i].id = (uint32_t)i;
    }
    return true;
}

/* Runs the demo on one engine and prints its line. Returns true if it
 * passed. */
static bool run_on(pact_engine_kind engine, const char *label, double seconds,
                   int nconns)
{
    struct demo d = {.nconns = nconns, .listen_fd = -1};
    if (!setup(&d, engine))
        goto out;

    d.accept_op = pact_accept(d.loop, d.listen_fd, on_accept, &d);
    if (d.accept_op < 0) {
        fail(&d, "accept: %s", pact_strerror((int)d.accept_op));
        goto out;
    }
    start_clients(&d);
    pact_handle deadline = pact_call_later(
        d.loop, (uint64_t)(seconds * NS_PER_SEC), on_deadline, &d);
    if (deadline < 0) {
        fail(&d, "pact_call_later: %s", pact_strerror((int)deadline));
        on_deadline(d.loop, &d); /* stop now rather than never */
    }

    d.started_ns = pact_now();
    int r = pact_loop_run(d.loop);
    if (r < 0)
        fail(&d, "pact_loop_run: %s", pact_strerror(r));

    if (d.connected != nconns || d.accepted != nconns)
        fail(&d, "%d of %d clients connected and %d accepted in %g s "
                 "(too short a run?)",
             d.connected, nconns, d.accepted, seconds);
    if (d.requests == 0)
        fail(&d, "no request completed");
    if (d.listen_fd >= 0)
        fail(&d, "the listening socket is still open");
    for (int i = 0; i < nconns; i++)
        if (d.clients[i].base.fd >= 0 || d.servers[i].base.fd >= 0)
            fail(&d, "connection %d still open after the run", i);
    check_clean_stop(&d, "after the run");
    r = pact_loop_close(d.loop);
    if (r < 0)
        fail(&d, "pact_loop_close: %s", pact_strerror(r));
    check_clean_stop(&d, "after close");

out:;
    bool ok = d.errors == 0 && d.bytes_bad == 0;
    const char *engine_name = d.loop ? pact_loop_engine_name(d.loop) : "-";
    const char *reason = d.loop ? pact_loop_engine_reason(d.loop) : NULL;
    double elapsed = d.stopped_ns > d.started_ns
                         ? (double)(d.stopped_ns - d.started_ns) / NS_PER_SEC
                         : 0;
    char name[64];
    snprintf(name, sizeof name, "%s%s", label, engine_name);
    printf("%-16s %11d %10llu %10.0f %14llu  %s\n", name, nconns,
           (unsigned long long)d.requests,
           elapsed > 0 ? (double)d.requests / elapsed : 0.0,
           (unsigned long long)d.bytes_ok, ok ? "OK" : "FAIL");
    if (reason)
        printf("  (auto chose %s: %s)\n", engine_name, reason);
    if (d.bytes_bad)
        printf("  %llu byte(s) mismatched\n", (unsigned long long)d.bytes_bad);
    fflush(stdout);

    /* After close no operation is in flight, so whatever a failure left
     * open may be closed now. */
    pact_loop_free(d.loop);
    if (d.listen_fd >= 0)
        close(d.listen_fd);
    for (int i = 0; d.clients && d.servers && i < nconns; i++) {
        if (d.clients[i].base.fd >= 0)
            close(d.clients[i].base.fd);
        if (d.servers[i].base.fd >= 0)
            close(d.servers[i].base.fd);
    }
    free(d.servers);
    free(d.clients);
    return ok;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: demo [--seconds S] [--connections N]\n"
            "  --seconds S       how long to run on each engine (default 2)\n"
            "  --connections N   client connections (default 50)\n");
}

int main(int argc, char **argv)
{
    double seconds = 2;
    int nconns = 50;
    static const struct option options[] = {
        {"seconds", required_argument, NULL, 's'},
        {"connections", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "s:c:h", options, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 's':
            seconds = strtod(optarg, &end);
            if (*end || !(seconds > 0 && seconds <= 3600)) {
                fprintf(stderr,
                        "demo: --seconds wants a number in (0, 3600]\n");
                return 2;
            }
            break;
        case 'c':
            nconns = (int)strtol(optarg, &end, 10);
            if (*end || nconns < 1 || nconns > 100000) {
                fprintf(stderr, "demo: --connections wants 1 to 100000\n");
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }

    printf("pact demo: echo server and %d clients on 127.0.0.1, %d-byte "
           "ping-pong, %g s per engine\n\n",
           nconns, MSG_SIZE, seconds);
    printf("%-16s %11s %10s %10s %14s  %s\n", "engine", "connections",
           "requests", "req/s", "bytes verified", "result");
    bool ok = run_on(PACT_ENGINE_AUTO, "auto: ", seconds, nconns);
    ok &= run_on(PACT_ENGINE_EPOLL, "", seconds, nconns);
    return ok ? 0 : 1;
}
