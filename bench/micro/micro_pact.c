/* SPDX-License-Identifier: MIT */
/* pact micro-benchmarks (the libuv counterparts are in micro_libuv.c).
 *
 *   micro_pact timers N [--engine E]    N pact_call_later timers (libuv's
 *                                       million_timers shape), scheduled and fired
 *   micro_pact call_soon N [--engine E] a chain of N pact_call_soon callbacks,
 *                                       each scheduling the next
 *   micro_pact async SECS [--engine E]  pact_call_soon_threadsafe ping-pong
 *                                       between two loops on two threads
 *                                       (libuv's async1)
 *   micro_pact idle_transport N [--engine E]  the same as socket transports
 *   micro_pact idle_transport_echoed N [--engine E]  the same after each
 *                                       transport echoed one 64-byte message
 *   micro_pact idle N [--engine E]      N idle connections, each with one
 *                                       pact_recv in flight: RSS delta / N
 *
 * Output: one line of key=value pairs.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "idle_common.h"
#include "pact.h"

static pact_loop_options opts;

static pact_loop *new_loop(void)
{
    pact_loop *loop;
    int r = pact_loop_create(&loop, &opts);
    if (r < 0) {
        fprintf(stderr, "pact_loop_create: %s\n", pact_strerror(r));
        exit(1);
    }
    return loop;
}

/* ---- timers ---- */
static uint64_t fired;
static void timer_cb(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    fired++;
}

static int bench_timers(long n)
{
    pact_loop *loop = new_loop();
    double t0 = bench_now();
    /* As libuv's million_timers: the timeout grows by 1 ms every 1000
     * timers; here every 10,000 so 10 M timers span 1 s, not 10 s. */
    for (long i = 0; i < n; i++) {
        pact_handle h = pact_call_later(loop, (uint64_t)(i / 10000) * 1000000u,
                                        timer_cb, NULL);
        if (h < 0) {
            fprintf(stderr, "pact_call_later: %s\n", pact_strerror((int)h));
            return 1;
        }
    }
    double t1 = bench_now();
    pact_loop_run(loop);
    double t2 = bench_now();
    pact_loop_free(loop);
    double t3 = bench_now();
    if (fired != (uint64_t)n) {
        fprintf(stderr, "fired %llu of %ld\n", (unsigned long long)fired, n);
        return 1;
    }
    printf("n=%ld init_s=%.3f run_s=%.3f cleanup_s=%.3f total_s=%.3f "
           "ns_per_timer=%.1f\n",
           n, t1 - t0, t2 - t1, t3 - t2, t3 - t0, (t3 - t0) * 1e9 / (double)n);
    return 0;
}

/* ---- call_soon chain ---- */
static long chain_left;
static void chain_cb(pact_loop *loop, void *user)
{
    if (--chain_left > 0)
        pact_call_soon(loop, chain_cb, user);
}

static int bench_call_soon(long n)
{
    pact_loop *loop = new_loop();
    chain_left = n;
    double t0 = bench_now();
    pact_call_soon(loop, chain_cb, NULL);
    pact_loop_run(loop);
    double t1 = bench_now();
    pact_loop_free(loop);
    printf("n=%ld total_s=%.3f ns_per_call=%.1f\n", n, t1 - t0,
           (t1 - t0) * 1e9 / (double)n);
    return 0;
}

/* ---- cross-thread ping-pong ---- */
static pact_loop *loop_a, *loop_b;
static uint64_t round_trips;
static double async_deadline;
static atomic_int b_ready;

static void keepalive_cb(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
}

static void ping(pact_loop *loop, void *user);
static void pong(pact_loop *loop, void *user)
{
    (void)loop;
    pact_call_soon_threadsafe(loop_a, ping, user);
}

static void ping(pact_loop *loop, void *user)
{
    round_trips++;
    if ((round_trips & 255) == 0 && bench_now() >= async_deadline) {
        pact_loop_stop(loop_b);
        pact_loop_stop(loop);
        return;
    }
    pact_call_soon_threadsafe(loop_b, pong, user);
}

static void *thread_b(void *arg)
{
    (void)arg;
    loop_b = new_loop();
    pact_call_later(loop_b, 3600ull * 1000000000ull, keepalive_cb, NULL);
    atomic_store(&b_ready, 1);
    pact_loop_run(loop_b);
    /* A loop is closed by the thread that ran it (pact_loop_close answers
     * -EPERM elsewhere). */
    pact_loop_free(loop_b);
    return NULL;
}

static int bench_async(double secs)
{
    pthread_t th;
    pthread_create(&th, NULL, thread_b, NULL);
    while (!atomic_load(&b_ready))
        ;
    loop_a = new_loop();
    pact_call_later(loop_a, 3600ull * 1000000000ull, keepalive_cb, NULL);
    double t0 = bench_now();
    async_deadline = t0 + secs;
    pact_call_soon_threadsafe(loop_b, pong, NULL);
    pact_loop_run(loop_a);
    double t1 = bench_now();
    pthread_join(th, NULL);
    pact_loop_free(loop_a);
    printf("round_trips=%llu secs=%.3f rt_per_s=%.0f\n",
           (unsigned long long)round_trips, t1 - t0,
           (double)round_trips / (t1 - t0));
    return 0;
}

/* ---- idle connections ---- */
static void never_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)c;
    (void)user;
}

static int bench_idle(int n)
{
    pid_t child;
    int *fds = open_idle_conns(n, &child);
    if (!fds)
        return 1;
    pact_loop *loop = new_loop();
    static char sink[64]; /* nothing arrives, so one buffer serves all */
    /* Warm the loop's internal tables with one op, then measure. */
    pact_loop_run_once(loop, 0);
    long rss0 = rss_bytes();
    for (int i = 0; i < n; i++) {
        pact_op op = pact_recv(loop, fds[i], sink, sizeof sink, 0, never_cb,
                               NULL);
        if (op < 0) {
            fprintf(stderr, "pact_recv #%d: %s\n", i, pact_strerror((int)op));
            return 1;
        }
    }
    for (int i = 0; i < 4; i++)
        pact_loop_run_once(loop, 0);
    long rss1 = rss_bytes();
    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    printf("conns=%d rss_delta=%ld bytes_per_conn=%.0f ops_live=%llu\n", n,
           rss1 - rss0, (double)(rss1 - rss0) / n,
           (unsigned long long)st.ops_live);
    pact_loop_free(loop); /* cancels the recvs before the fds close */
    close_idle_conns(fds, n, child);
    return 0;
}

/* The same, as socket transports (what a server holds per connection):
 * the transport, its multishot receive op and the engine's per-fd state.
 * No receive buffer: the loop lends its own. */
static const pact_protocol idle_proto = {0};

static int bench_idle_transport(int n)
{
    pid_t child;
    int *fds = open_idle_conns(n, &child);
    if (!fds)
        return 1;
    pact_loop *loop = new_loop();
    /* Warm the loop's tables (and the engine's per-fd arrays up to the
     * highest fd) with one transport, then measure. */
    pact_transport *warm;
    if (pact_transport_open(loop, fds[n - 1], PACT_STREAM_SOCKET, &idle_proto,
                            NULL, &warm) < 0)
        return 1;
    for (int i = 0; i < 4; i++)
        pact_loop_run_once(loop, 0);
    long rss0 = rss_bytes();
    for (int i = 0; i < n - 1; i++) {
        pact_transport *t;
        int r = pact_transport_open(loop, fds[i], PACT_STREAM_SOCKET,
                                    &idle_proto, NULL, &t);
        if (r < 0) {
            fprintf(stderr, "pact_transport_open #%d: %s\n", i, pact_strerror(r));
            return 1;
        }
    }
    for (int i = 0; i < 4; i++)
        pact_loop_run_once(loop, 0);
    long rss1 = rss_bytes();
    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    printf("conns=%d rss_delta=%ld bytes_per_conn=%.0f ops_live=%llu "
           "recv_mode=%s\n",
           n - 1, rss1 - rss0, (double)(rss1 - rss0) / (n - 1),
           (unsigned long long)st.ops_live, pact_loop_recv_multishot_mode(loop));
    pact_loop_free(loop); /* closes the transports and their fds */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    free(fds);
    return 0;
}

/* Idle transports in real use: every connection echoed one 64-byte
 * message, then went quiet (a keep-alive HTTP server between requests).
 * Whatever a transport keeps after its first write shows here.
 *
 * The client ends live in a forked child driven through a pipe. Before
 * the first RSS reading the loop-wide memory lands: the child ping-pongs
 * WARM_ECHOES messages on one connection (what an echo makes on first
 * use), then, while the loop does not run, writes WARM_BURST_BYTES on
 * each of WARM_BURST_CONNS more connections, which the loop then receives
 * in one wait: more than its receive buffers hold (io_uring: 32 x 64 KiB
 * consumed incrementally), so every page of them is written once. The
 * ping-pong alone no longer did that: io_uring receives go to the buffer
 * used last, from its start, so it wrote one page, and the pages the echo
 * burst below wrote (its 640 KB arrive in a few waits) counted about 60 B
 * per connection. Then the child writes one message on every measured
 * connection, reads each echo back, and says so. */
#define ECHO_MSG 64
#define WARM_ECHOES 4096
#define WARM_BURST_CONNS 128 /* x 24 KiB: 3 MiB */
#define WARM_BURST_BYTES (24 * 1024) /* under a fresh socket's window */

static unsigned long long echoed_bytes;

static void echo_once_data(pact_transport *t, const void *data, size_t len,
                           void *user)
{
    (void)user;
    echoed_bytes += len;
    if (pact_transport_write(t, data, len) < 0)
        pact_transport_abort(t);
}

static const pact_protocol echo_once_proto = {.data_received = echo_once_data};

static unsigned long long burst_received;

static void burst_sink_data(pact_transport *t, const void *data, size_t len,
                            void *user)
{
    (void)t;
    (void)data;
    (void)user;
    burst_received += len;
}

static const pact_protocol burst_sink_proto = {.data_received = burst_sink_data};

/* cfds: n measured-or-warm connections (the last one ping-pongs), then
 * WARM_BURST_CONNS burst connections. */
static void child_echo(int *cfds, int n, int cmd, int done)
{
    static char burst[WARM_BURST_BYTES];
    char msg[ECHO_MSG], back[ECHO_MSG], c;
    memset(msg, 'x', sizeof msg);
    memset(burst, 'b', sizeof burst);
    if (read(cmd, &c, 1) != 1) /* warm */
        _exit(1);
    for (int i = 0; i < WARM_ECHOES; i++)
        if (write(cfds[n - 1], msg, sizeof msg) != (ssize_t)sizeof msg ||
            recv(cfds[n - 1], back, sizeof back, MSG_WAITALL) != (ssize_t)sizeof back)
            _exit(1);
    if (write(done, "w", 1) != 1 || read(cmd, &c, 1) != 1) /* burst */
        _exit(1);
    for (int i = 0; i < WARM_BURST_CONNS; i++)
        if (write(cfds[n + i], burst, sizeof burst) != (ssize_t)sizeof burst)
            _exit(1);
    if (write(done, "b", 1) != 1 || read(cmd, &c, 1) != 1) /* echo */
        _exit(1);
    for (int i = 0; i < n - 1; i++)
        if (write(cfds[i], msg, sizeof msg) != (ssize_t)sizeof msg)
            _exit(1);
    for (int i = 0; i < n - 1; i++)
        if (recv(cfds[i], back, sizeof back, MSG_WAITALL) != (ssize_t)sizeof back)
            _exit(1);
    if (write(done, "e", 1) != 1)
        _exit(1);
    pause();
    _exit(0);
}

/* Runs the loop until the child writes a byte on done (non-blocking). */
static int run_until(pact_loop *loop, int done)
{
    char c;
    double deadline = bench_now() + 120;
    while (read(done, &c, 1) != 1) {
        if (bench_now() > deadline) {
            fprintf(stderr, "idle_transport_echoed: the client stalled\n");
            return -1;
        }
        pact_loop_run_once(loop, 1000000); /* 1 ms */
    }
    return 0;
}

static int bench_idle_transport_echoed(int n)
{
    raise_nofile();
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    int cmd[2], done[2];
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(lfd, 4096) < 0 || getsockname(lfd, (struct sockaddr *)&a, &al) < 0 ||
        pipe(cmd) < 0 || pipe2(done, O_NONBLOCK) < 0)
        return 1;
    pid_t child = fork();
    if (child == 0) {
        close(lfd);
        int *cfds = malloc(sizeof(int) * (size_t)(n + WARM_BURST_CONNS));
        for (int i = 0; i < n + WARM_BURST_CONNS; i++) {
            cfds[i] = socket(AF_INET, SOCK_STREAM, 0);
            setsockopt(cfds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (connect(cfds[i], (struct sockaddr *)&a, sizeof a) < 0) {
                perror("idle client");
                _exit(1);
            }
        }
        child_echo(cfds, n, cmd[0], done[1]);
    }
    int *fds = malloc(sizeof(int) * (size_t)(n + WARM_BURST_CONNS));
    for (int i = 0; i < n + WARM_BURST_CONNS; i++) {
        fds[i] = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fds[i] < 0) {
            perror("idle accept");
            return 1;
        }
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    close(lfd);
    pact_loop *loop = new_loop();
    pact_transport *warm;
    if (pact_transport_open(loop, fds[n - 1], PACT_STREAM_SOCKET,
                            &echo_once_proto, NULL, &warm) < 0)
        return 1;
    for (int i = 0; i < WARM_BURST_CONNS; i++)
        if (pact_transport_open(loop, fds[n + i], PACT_STREAM_SOCKET,
                                &burst_sink_proto, NULL, &warm) < 0)
            return 1;
    if (write(cmd[1], "w", 1) != 1 || run_until(loop, done[0]) < 0)
        return 1;
    /* The burst is written while the loop does not run (waiting in poll
     * for done), so that it is received in one wait. */
    char c;
    struct pollfd pfd = {.fd = done[0], .events = POLLIN};
    if (write(cmd[1], "b", 1) != 1 || poll(&pfd, 1, 120 * 1000) != 1 ||
        read(done[0], &c, 1) != 1) {
        fprintf(stderr, "idle_transport_echoed: the burst was not written\n");
        return 1;
    }
    double deadline = bench_now() + 120;
    while (burst_received < (unsigned long long)WARM_BURST_CONNS * WARM_BURST_BYTES) {
        if (bench_now() > deadline) {
            fprintf(stderr, "idle_transport_echoed: the burst stalled\n");
            return 1;
        }
        pact_loop_run_once(loop, 1000000); /* 1 ms */
    }
    for (int i = 0; i < 4; i++)
        pact_loop_run_once(loop, 0);
    long rss0 = rss_bytes();
    echoed_bytes = 0;
    for (int i = 0; i < n - 1; i++) {
        pact_transport *t;
        int r = pact_transport_open(loop, fds[i], PACT_STREAM_SOCKET,
                                    &echo_once_proto, NULL, &t);
        if (r < 0) {
            fprintf(stderr, "pact_transport_open #%d: %s\n", i, pact_strerror(r));
            return 1;
        }
    }
    if (write(cmd[1], "e", 1) != 1 || run_until(loop, done[0]) < 0)
        return 1;
    for (int i = 0; i < 4; i++)
        pact_loop_run_once(loop, 0);
    long rss1 = rss_bytes();
    printf("conns=%d rss_delta=%ld bytes_per_conn=%.0f echoed=%llu "
           "recv_mode=%s\n",
           n - 1, rss1 - rss0, (double)(rss1 - rss0) / (n - 1), echoed_bytes,
           pact_loop_recv_multishot_mode(loop));
    pact_loop_free(loop); /* closes the transports and their fds */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    free(fds);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: micro_pact timers|call_soon|async|idle ARG "
                        "[--engine uring|epoll]\n");
        return 2;
    }
    pact_loop_options_init(&opts);
    opts.engine = PACT_ENGINE_URING;
    for (int i = 3; i + 1 < argc; i++)
        if (strcmp(argv[i], "--engine") == 0)
            opts.engine = strcmp(argv[i + 1], "epoll") == 0 ? PACT_ENGINE_EPOLL
                                                            : PACT_ENGINE_URING;
    if (strcmp(argv[1], "timers") == 0)
        return bench_timers(atol(argv[2]));
    if (strcmp(argv[1], "call_soon") == 0)
        return bench_call_soon(atol(argv[2]));
    if (strcmp(argv[1], "async") == 0)
        return bench_async(atof(argv[2]));
    if (strcmp(argv[1], "idle") == 0)
        return bench_idle(atoi(argv[2]));
    if (strcmp(argv[1], "idle_transport") == 0)
        return bench_idle_transport(atoi(argv[2]));
    if (strcmp(argv[1], "idle_transport_echoed") == 0)
        return bench_idle_transport_echoed(atoi(argv[2]));
    fprintf(stderr, "unknown benchmark %s\n", argv[1]);
    return 2;
}
