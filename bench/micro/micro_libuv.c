/* SPDX-License-Identifier: MIT */
/* libuv counterparts of micro_pact.c, shaped like libuv's own benchmarks.
 *
 *   micro_libuv timers N     uv_timer_t array, uv_timer_start, run, close
 *                            all (test/benchmark-million-timers.c)
 *   micro_libuv call_soon N  an idle handle whose callback runs N times
 *                            (libuv has no call_soon; idle runs once per
 *                            loop iteration, as a call_soon chain does)
 *   micro_libuv async SECS   uv_async_send ping-pong between two loops on
 *                            two threads (test/benchmark-async.c, async1)
 *   micro_libuv idle N       N idle uv_tcp_t with uv_read_start: RSS / N
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "idle_common.h"

/* ---- timers ---- */
static long fired, closed;
static void timer_cb(uv_timer_t *h)
{
    (void)h;
    fired++;
}
static void close_cb(uv_handle_t *h)
{
    (void)h;
    closed++;
}

static int bench_timers(long n)
{
    uv_loop_t *loop = uv_default_loop();
    uv_timer_t *timers = malloc((size_t)n * sizeof *timers);
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        uv_timer_init(loop, timers + i);
        uv_timer_start(timers + i, timer_cb, (uint64_t)(i / 10000), 0);
    }
    double t1 = bench_now();
    uv_run(loop, UV_RUN_DEFAULT);
    double t2 = bench_now();
    for (long i = 0; i < n; i++)
        uv_close((uv_handle_t *)(timers + i), close_cb);
    uv_run(loop, UV_RUN_DEFAULT);
    double t3 = bench_now();
    if (fired != n || closed != n)
        return 1;
    printf("n=%ld init_s=%.3f run_s=%.3f cleanup_s=%.3f total_s=%.3f "
           "ns_per_timer=%.1f\n",
           n, t1 - t0, t2 - t1, t3 - t2, t3 - t0, (t3 - t0) * 1e9 / (double)n);
    free(timers);
    return 0;
}

/* ---- idle chain ---- */
static long idle_left;
static void idle_cb(uv_idle_t *h)
{
    if (--idle_left <= 0)
        uv_idle_stop(h);
}

static int bench_call_soon(long n)
{
    uv_loop_t *loop = uv_default_loop();
    uv_idle_t idle;
    uv_idle_init(loop, &idle);
    idle_left = n;
    double t0 = bench_now();
    uv_idle_start(&idle, idle_cb);
    uv_run(loop, UV_RUN_DEFAULT);
    double t1 = bench_now();
    printf("n=%ld total_s=%.3f ns_per_call=%.1f\n", n, t1 - t0,
           (t1 - t0) * 1e9 / (double)n);
    return 0;
}

/* ---- async ping-pong ---- */
static uv_loop_t loop_b;
static uv_async_t async_a, async_b;
static atomic_int stopping;
static uint64_t round_trips;
static double deadline;

static void b_cb(uv_async_t *h)
{
    if (atomic_load(&stopping)) {
        uv_close((uv_handle_t *)h, NULL);
        return;
    }
    uv_async_send(&async_a);
}

static void a_cb(uv_async_t *h)
{
    round_trips++;
    if ((round_trips & 255) == 0 && bench_now() >= deadline) {
        atomic_store(&stopping, 1);
        uv_async_send(&async_b);
        uv_close((uv_handle_t *)h, NULL);
        return;
    }
    uv_async_send(&async_b);
}

static void *thread_b(void *arg)
{
    (void)arg;
    uv_run(&loop_b, UV_RUN_DEFAULT);
    return NULL;
}

static int bench_async(double secs)
{
    uv_loop_t *loop = uv_default_loop();
    uv_loop_init(&loop_b);
    uv_async_init(&loop_b, &async_b, b_cb);
    uv_async_init(loop, &async_a, a_cb);
    pthread_t th;
    pthread_create(&th, NULL, thread_b, NULL);
    double t0 = bench_now();
    deadline = t0 + secs;
    uv_async_send(&async_b);
    uv_run(loop, UV_RUN_DEFAULT);
    double t1 = bench_now();
    pthread_join(th, NULL);
    uv_loop_close(&loop_b);
    printf("round_trips=%llu secs=%.3f rt_per_s=%.0f\n",
           (unsigned long long)round_trips, t1 - t0,
           (double)round_trips / (t1 - t0));
    return 0;
}

/* ---- idle connections ---- */
static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(sz);
    buf->len = sz;
}
static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)s;
    (void)n;
    free(buf->base);
}

static int bench_idle(int n)
{
    pid_t child;
    int *fds = open_idle_conns(n, &child);
    if (!fds)
        return 1;
    uv_loop_t *loop = uv_default_loop();
    uv_run(loop, UV_RUN_NOWAIT);
    long rss0 = rss_bytes();
    for (int i = 0; i < n; i++) {
        uv_tcp_t *t = malloc(sizeof *t);
        uv_tcp_init(loop, t);
        uv_tcp_open(t, fds[i]);
        uv_read_start((uv_stream_t *)t, alloc_cb, read_cb);
    }
    for (int i = 0; i < 4; i++)
        uv_run(loop, UV_RUN_NOWAIT);
    long rss1 = rss_bytes();
    printf("conns=%d rss_delta=%ld bytes_per_conn=%.0f sizeof_uv_tcp_t=%zu\n",
           n, rss1 - rss0, (double)(rss1 - rss0) / n, sizeof(uv_tcp_t));
    /* The handles stay open: only the numbers matter here. */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    free(fds);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: micro_libuv timers|call_soon|async|idle ARG\n");
        return 2;
    }
    if (strcmp(argv[1], "timers") == 0)
        return bench_timers(atol(argv[2]));
    if (strcmp(argv[1], "call_soon") == 0)
        return bench_call_soon(atol(argv[2]));
    if (strcmp(argv[1], "async") == 0)
        return bench_async(atof(argv[2]));
    if (strcmp(argv[1], "idle") == 0)
        return bench_idle(atoi(argv[2]));
    fprintf(stderr, "unknown benchmark %s\n", argv[1]);
    return 2;
}
