/* SPDX-License-Identifier: MIT */
/* Pipe transports: a read pipe delivers in order and its EOF is
 * eof_received then connection_lost(0); a write pipe's writes arrive, and
 * its reader going away is connection_lost(-EPIPE); pausing a read pipe
 * loses nothing. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include "queued_write.h"
#include "recorder.h"

static void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(pipe, .timeout = 60, .init = ignore_sigpipe);

static unsigned char pattern_byte(size_t i)
{
    return (unsigned char)((i * 131u + (i >> 10) * 7u + 3u) & 0xff);
}

/* A pipe p (pipe2 with O_CLOEXEC and flags) and a pipe transport that
 * records into r on one of its ends: the read end for
 * PACT_STREAM_READ_PIPE, the write end for PACT_STREAM_WRITE_PIPE. The
 * other end is the test's. */
static pact_transport *open_rec_pipe(pact_loop *loop, int p[2], int flags,
                                     pact_stream_kind kind, rec *r)
{
    cr_assert_eq(pipe2(p, O_CLOEXEC | flags), 0);
    rec_init(r);
    int end = kind == PACT_STREAM_READ_PIPE ? p[0] : p[1];
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, end, kind, &rec_protocol, r, &t), 0);
    return t;
}

Test(pipe, read_pipe_delivers_in_order_then_eof_then_lost)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int p[2];
    rec r;
    pact_transport *t = open_rec_pipe(loop, p, 0, PACT_STREAM_READ_PIPE, &r);
    r.keep_data = 1;
    cr_expect_eq(pact_transport_kind(t), PACT_STREAM_READ_PIPE);
    cr_expect_eq(pact_transport_can_write_eof(t), 0);
    cr_expect_eq(pact_transport_write(t, "x", 1), -ENOTSUP);
    struct sockaddr_storage ss;
    socklen_t len;
    cr_expect_eq(pact_transport_sockname(t, &ss, &len), -ENOTSOCK);

    const char *parts[] = {"first ", "second ", "third"};
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(parts[i]);
        cr_assert_eq(write(p[1], parts[i], n), (ssize_t)n);
        total += n;
        RUN_UNTIL(loop, r.nbytes == total, 5000);
    }
    cr_expect_eq(r.eofs, 0);
    close(p[1]);
    RUN_UNTIL(loop, r.lost, 5000);
    cr_expect_eq(r.eofs, 1, "EOF is eof_received");
    cr_expect_eq(r.lost_err, 0, "EOF is not an error: %s", pact_strerror(r.lost_err));
    rec_expect_done(&r);
    cr_assert_eq(r.nbytes, total);
    cr_expect(memcmp(r.data, "first second third", total) == 0);
    run_for(loop, 10);
    rec_expect_done(&r);
    test_loop_free(loop);
    rec_free(&r);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

typedef struct writer {
    int fd;
    size_t total;
    size_t chunk;
    int close_at_end;
} writer;

static void *writer_thread(void *arg)
{
    writer *w = arg;
    unsigned char *buf = malloc(w->chunk);
    size_t off = 0;
    while (off < w->total) {
        size_t n = w->total - off < w->chunk ? w->total - off : w->chunk;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern_byte(off + i);
        size_t done = 0;
        while (done < n) {
            ssize_t k = write(w->fd, buf + done, n - done);
            if (k < 0) {
                if (errno == EINTR)
                    continue;
                free(buf);
                return NULL;
            }
            done += (size_t)k;
        }
        off += n;
    }
    free(buf);
    if (w->close_at_end)
        close(w->fd);
    return NULL;
}

static void expect_pattern(const rec *r, size_t total)
{
    cr_assert_eq(r->nbytes, total);
    for (size_t i = 0; i < total; i++)
        if ((unsigned char)r->data[i] != pattern_byte(i))
            cr_assert_fail("byte %zu differs: lost or reordered data", i);
}

Test(pipe, read_pipe_carries_megabytes_from_a_thread_in_order)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int p[2];
    rec r;
    open_rec_pipe(loop, p, 0, PACT_STREAM_READ_PIPE, &r); /* ends at EOF */
    r.keep_data = 1;
    writer w = {.fd = p[1], .total = 4 << 20, .chunk = 3000, .close_at_end = 1};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_thread, &w), 0);
    RUN_UNTIL(loop, r.lost, 20000);
    pthread_join(th, NULL);
    rec_expect_done(&r);
    cr_expect_eq(r.eofs, 1);
    cr_expect_eq(r.lost_err, 0);
    expect_pattern(&r, w.total);
    test_loop_free(loop);
    rec_free(&r);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(pipe, write_pipe_writes_arrive_and_close_flushes)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int p[2];
    rec r;
    pact_transport *t = open_rec_pipe(loop, p, 0, PACT_STREAM_WRITE_PIPE, &r);
    cr_expect_eq(pact_transport_can_write_eof(t), 1);
    RUN_UNTIL(loop, r.made, 5000);
    cr_assert_eq(pact_transport_write(t, "hello ", 6), 0);
    struct iovec iov[2] = {{"pipe", 4}, {" world", 6}};
    cr_assert_eq(pact_transport_writev(t, iov, 2), 0);
    /* More than the pipe holds (64 KiB): close must flush it all. */
    size_t big = 256 * 1024;
    char *blob = malloc(big);
    for (size_t i = 0; i < big; i++)
        blob[i] = (char)pattern_byte(i);
    cr_assert_eq(pact_transport_write(t, blob, big), 0);
    cr_assert_eq(pact_transport_close(t), 0);
    cr_expect_eq(pact_transport_close(t), -EALREADY);
    cr_expect_eq(pact_transport_write(t, "late", 4), -ESHUTDOWN);

    fcntl(p[0], F_SETFL, O_NONBLOCK);
    size_t want = 16 + big, got = 0;
    char *buf = malloc(want + 1);
    int eof = 0;
    uint64_t end = pact_now() + 10000 * MS;
    while (!eof) {
        cr_assert(pact_now() < end, "timed out reading the pipe (%zu of %zu)",
                  got, want);
        pact_loop_run_once(loop, 1 * (int64_t)MS);
        ssize_t n;
        while ((n = read(p[0], buf + got, want + 1 - got)) > 0)
            got += (size_t)n;
        if (n == 0)
            eof = 1;
    }
    cr_assert_eq(got, want);
    cr_expect(memcmp(buf, "hello pipe world", 16) == 0);
    cr_expect(memcmp(buf + 16, blob, big) == 0);
    RUN_UNTIL(loop, r.lost, 5000);
    cr_expect_eq(r.lost_err, 0);
    cr_expect_eq(r.eofs, 0);
    rec_expect_done(&r);
    close(p[0]);
    free(buf);
    free(blob);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

static int pipe_read(int fd, char *buf, size_t want, size_t *got)
{
    ssize_t n;
    while (*got < want && (n = read(fd, buf + *got, want - *got)) > 0)
        *got += (size_t)n;
    return *got >= want;
}

Test(pipe, write_pipe_reports_epipe_when_the_reader_goes)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int p[2];
    rec r;
    pact_transport *t = open_rec_pipe(loop, p, 0, PACT_STREAM_WRITE_PIPE, &r);
    cr_assert_eq(pact_transport_write(t, "abc", 3), 0);
    char buf[8];
    size_t got = 0;
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    RUN_UNTIL(loop, pipe_read(p[0], buf, 3, &got), 5000);
    cr_expect(memcmp(buf, "abc", 3) == 0);
    /* The reader goes away while the writer is idle: noticed anyway. */
    close(p[0]);
    RUN_UNTIL(loop, r.lost, 5000);
    cr_expect_eq(r.lost_err, -EPIPE, "%s", pact_strerror(r.lost_err));
    rec_expect_done(&r);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(pipe, write_pipe_write_after_the_reader_went_is_epipe)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int p[2];
    rec r;
    pact_transport *t = open_rec_pipe(loop, p, 0, PACT_STREAM_WRITE_PIPE, &r);
    close(p[0]); /* gone before the first write */
    cr_assert_eq(pact_transport_write(t, "abc", 3), 0);
    RUN_UNTIL(loop, r.lost, 5000);
    cr_expect_eq(r.lost_err, -EPIPE, "%s", pact_strerror(r.lost_err));
    rec_expect_done(&r);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* What a write pipe's connection_lost sees of its write buffer. */
typedef struct {
    rec r;
    size_t unwritten_at_lost;
} lost_rec;

static void lost_rec_lost(pact_transport *t, int err, void *user)
{
    lost_rec *l = user;
    l->unwritten_at_lost = pact_transport_write_buffer_size(t);
    rec_protocol.connection_lost(t, err, &l->r);
}

/* The reader leaves while the writer still has more than the pipe holds
 * (or, with leave_first, before the write, so the write itself fails):
 * connection_lost(-EPIPE) still counts the bytes not written, and only
 * afterwards is the buffer empty. An idle writer's end counts none. */
static void reader_leaves_with_bytes_unwritten(int leave_first)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    lost_rec l = {0};
    rec_init(&l.r);
    pact_protocol proto = rec_protocol;
    proto.connection_lost = lost_rec_lost;
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, p[1], PACT_STREAM_WRITE_PIPE, &proto,
                                     &l, &t), 0);
    RUN_UNTIL(loop, l.r.made, 5000);
    size_t total = 4u << 20; /* more than any pipe holds */
    char *big = calloc(1, total);
    cr_assert_not_null(big);
    if (leave_first)
        close(p[0]);
    cr_assert_eq(pact_transport_write(t, big, total), 0);
    size_t unwritten = pact_transport_write_buffer_size(t);
    cr_assert_gt(unwritten, 0, "the pipe took 4 MiB at once?");
    if (!leave_first) {
        pact_loop_run_once(loop, 0); /* the rest of the write is under way */
        close(p[0]);
    }
    RUN_UNTIL(loop, l.r.lost, 5000);
    cr_expect_eq(l.r.lost_err, -EPIPE, "%s", pact_strerror(l.r.lost_err));
    cr_expect_gt(l.unwritten_at_lost, 0, "connection_lost saw the unwritten bytes as 0");
    cr_expect_leq(l.unwritten_at_lost, unwritten);
    rec_expect_done(&l.r);
    free(big);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(pipe, write_pipe_lost_counts_what_the_leaving_reader_left_unwritten)
{
    for (int i = 0; i < 20; i++)
        reader_leaves_with_bytes_unwritten(0);
}

Test(pipe, write_pipe_lost_counts_a_write_that_failed_at_once)
{
    for (int i = 0; i < 20; i++)
        reader_leaves_with_bytes_unwritten(1);
}

/* The iteration a write pipe's end is reported in, when its reader goes
 * with a write queued: the loop's iteration counter at connection_lost. */
typedef struct {
    rec r;
    uint64_t lost_iteration;
} iteration_rec;

static void iteration_rec_lost(pact_transport *t, int err, void *user)
{
    iteration_rec *l = user;
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(pact_transport_loop(t), &st), 0);
    l->lost_iteration = st.iterations;
    rec_protocol.connection_lost(t, err, &l->r);
}

/* The reader goes while a write waits for room in the pipe (in_kernel:
 * the rest of the write was handed to the engine an iteration before;
 * else it is handed over by the iteration that finds the reader gone).
 * The next iteration finds the write failed and the reader gone, and
 * connection_lost(-EPIPE) comes in it, on every engine (asyncio's write
 * pipe transport ends in that iteration too): on io_uring not one
 * iteration later, after the cancel one of them asks for the other came
 * back, nor after the write's failure the kernel left for its next
 * io_uring_enter. On movable loops (pact.asyncio's) too. */
static void reader_goes_with_a_write_queued(int in_kernel, int movable)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new_movable(movable);
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    iteration_rec l = {0};
    rec_init(&l.r);
    pact_protocol proto = rec_protocol;
    proto.connection_lost = iteration_rec_lost;
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, p[1], PACT_STREAM_WRITE_PIPE, &proto,
                                     &l, &t), 0);
    RUN_UNTIL(loop, l.r.made, 5000);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0); /* the watch is armed */
    size_t total = 4u << 20; /* more than any pipe holds */
    char *big = calloc(1, total);
    cr_assert_not_null(big);
    cr_assert_eq(pact_transport_write(t, big, total), 0);
    cr_assert_gt(pact_transport_write_buffer_size(t), 0);
    if (in_kernel)
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    close(p[0]);
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    uint64_t gone_at = st.iterations;
    RUN_UNTIL(loop, l.r.lost, 5000);
    cr_expect_eq(l.r.lost_err, -EPIPE, "%s", pact_strerror(l.r.lost_err));
    cr_expect_eq(l.lost_iteration, gone_at + 1,
                 "connection_lost came %d iterations after the reader went",
                 (int)(l.lost_iteration - gone_at));
    rec_expect_done(&l.r);
    free(big);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

Test(pipe, write_pipe_reader_goes_with_a_write_queued_ends_in_the_next_iteration)
{
    for (int i = 0; i < 10; i++)
        reader_goes_with_a_write_queued(0, i & 1);
}

Test(pipe, write_pipe_reader_goes_with_a_write_in_the_kernel_ends_in_the_next_iteration)
{
    for (int i = 0; i < 10; i++)
        reader_goes_with_a_write_queued(1, i & 1);
}

/* A write queued behind a write that waits for room in the pipe goes to
 * the kernel when the run that completes the first one returns
 * (tests/queued_write.h). */
Test(pipe, a_write_queued_behind_a_write_goes_out_when_the_run_returns)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int p[2];
    rec r;
    pact_transport *t =
        open_rec_pipe(loop, p, O_NONBLOCK, PACT_STREAM_WRITE_PIPE, &r);
    RUN_UNTIL(loop, r.made, 5000);
    static char fill[1 << 16];
    size_t filled = 0;
    for (ssize_t w; (w = write(p[1], fill, sizeof fill)) > 0;)
        filled += (size_t)w;
    check_queued_write_goes_out_when_the_run_returns(loop, t, p[0], filled);
    cr_assert_eq(pact_transport_close(t), 0);
    RUN_UNTIL(loop, r.lost, 5000);
    cr_expect_eq(r.lost_err, 0, "%s", pact_strerror(r.lost_err));
    close(p[0]);
    test_loop_free(loop);
    rec_free(&r);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* ---- pause / resume -------------------------------------------------------------- */

typedef struct toggler {
    pact_transport *t;
    rec *r;
    int stop;
    int toggles;
} toggler;

static void toggle(pact_loop *loop, void *user)
{
    toggler *tg = user;
    if (tg->stop || tg->r->lost)
        return;
    if (tg->r->paused_now) {
        tg->r->paused_now = 0;
        cr_expect_eq(pact_transport_resume_reading(tg->t), 0);
    } else if (!pact_transport_is_closing(tg->t)) {
        cr_expect_eq(pact_transport_pause_reading(tg->t), 0);
        tg->r->paused_now = 1;
    }
    tg->toggles++;
    pact_call_later(loop, 1 * MS, toggle, tg);
}

Test(pipe, pause_and_resume_on_a_read_pipe_lose_nothing)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int p[2];
    rec r;
    pact_transport *t = open_rec_pipe(loop, p, 0, PACT_STREAM_READ_PIPE, &r);
    r.keep_data = 1;
    toggler tg = {.t = t, .r = &r};
    pact_call_soon(loop, toggle, &tg);
    writer w = {.fd = p[1], .total = 2 << 20, .chunk = 16 * 1024, .close_at_end = 0};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_thread, &w), 0);
    RUN_UNTIL(loop, r.nbytes == w.total, 30000);
    pthread_join(th, NULL);
    tg.stop = 1;
    if (r.paused_now) {
        r.paused_now = 0;
        cr_expect_eq(pact_transport_resume_reading(t), 0);
    }
    cr_expect_gt(tg.toggles, 4);
    cr_expect_eq(pact_transport_resume_reading(t), -EALREADY);
    close(p[1]);
    RUN_UNTIL(loop, r.lost, 5000);
    rec_expect_done(&r);
    cr_expect_eq(r.lost_err, 0);
    expect_pattern(&r, w.total);
    run_for(loop, 5); /* let the last toggle timer go */
    test_loop_free(loop);
    rec_free(&r);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* The epoll engine caches per fd number whether it made the fd
 * non-blocking. A pipe that gets the number of a closed socket must still
 * be made non-blocking, or its first read blocks the whole loop. */
Test(pipe, read_pipe_on_a_reused_fd_number_does_not_block_the_loop)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    rec r0;
    rec_init(&r0);
    pact_transport *t0;
    int num = sv[0];
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &rec_protocol,
                                     &r0, &t0), 0);
    cr_assert_eq(send(sv[1], "x", 1, 0), 1);
    RUN_UNTIL(loop, r0.nbytes == 1, 5000);
    pact_transport_close(t0);
    RUN_UNTIL(loop, r0.lost, 5000);
    rec_expect_done(&r0);

    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0); /* blocking, as a user may give */
    if (p[0] != num) {
        /* Move the read end onto the socket's old number. */
        cr_assert_eq(dup3(p[0], num, O_CLOEXEC), num);
        close(p[0]);
        p[0] = num;
    }
    rec r;
    rec_init(&r);
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, p[0], PACT_STREAM_READ_PIPE,
                                     &rec_protocol, &r, &t), 0);
    uint64_t start = pact_now();
    run_for(loop, 50); /* a blocking read would never come back */
    cr_expect_lt(pact_now() - start, 1000 * MS);
    cr_assert_eq(write(p[1], "late", 4), 4);
    RUN_UNTIL(loop, r.nbytes == 4, 5000);
    close(p[1]);
    RUN_UNTIL(loop, r.lost, 5000);
    rec_expect_done(&r);
    close(sv[1]);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* ---- duplex pipes and pact_transport_open_pipe ------------------------------- */

typedef struct echo_checker {
    int fd;
    size_t total;
    size_t got;
    int bad;
} echo_checker;

/* Reads the echo back and checks every byte. */
static void *echo_reader_thread(void *arg)
{
    echo_checker *e = arg;
    unsigned char buf[8192];
    while (e->got < e->total) {
        ssize_t n = read(e->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern_byte(e->got + (size_t)i))
                e->bad++;
        e->got += (size_t)n;
    }
    return NULL;
}

/* One descriptor read and written as a pipe (a socket here: the loop reads
 * and writes it as a file, as it does a Windows named pipe): 2 MiB echoed
 * back while reading pauses and resumes every millisecond, every byte
 * checked both ways; no half-close; the peer's close is EOF, then
 * connection_lost(0) once. */
Test(pipe, duplex_pipe_echoes_megabytes_while_pausing_and_ends_once)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    /* The test's threads use the peer blocking. */
    cr_assert_eq(fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) & ~O_NONBLOCK), 0);
    rec r;
    rec_init(&r);
    r.keep_data = 1;
    r.echo = 1;
    pact_transport *t;
    cr_assert_eq(pact_transport_open_pipe(loop, sv[0], PACT_STREAM_DUPLEX_PIPE,
                                          &rec_protocol, &r, &t), 0);
    cr_expect_eq(pact_transport_kind(t), PACT_STREAM_DUPLEX_PIPE);
    cr_expect_eq(pact_transport_can_write_eof(t), 0);
    cr_expect_eq(pact_transport_write_eof(t), -ENOTSUP);
    struct sockaddr_storage ss;
    socklen_t len;
    cr_expect_eq(pact_transport_sockname(t, &ss, &len), -ENOTSOCK);
    toggler tg = {.t = t, .r = &r};
    pact_call_soon(loop, toggle, &tg);
    writer w = {.fd = sv[1], .total = 2 << 20, .chunk = 16 * 1024};
    echo_checker e = {.fd = sv[1], .total = w.total};
    pthread_t wt, rt;
    cr_assert_eq(pthread_create(&wt, NULL, writer_thread, &w), 0);
    cr_assert_eq(pthread_create(&rt, NULL, echo_reader_thread, &e), 0);
    RUN_UNTIL(loop, r.nbytes == w.total && pact_transport_write_buffer_size(t) == 0,
              30000);
    pthread_join(wt, NULL);
    pthread_join(rt, NULL);
    tg.stop = 1;
    if (r.paused_now) {
        r.paused_now = 0;
        cr_expect_eq(pact_transport_resume_reading(t), 0);
    }
    cr_expect_gt(tg.toggles, 4);
    expect_pattern(&r, w.total);
    cr_expect_eq(e.got, w.total);
    cr_expect_eq(e.bad, 0, "the echo lost or reordered bytes");
    close(sv[1]);
    RUN_UNTIL(loop, r.lost, 5000);
    rec_expect_done(&r);
    cr_expect_eq(r.eofs, 1);
    cr_expect_eq(r.lost_err, 0);
    run_for(loop, 5);
    test_loop_free(loop);
    rec_free(&r);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}

/* pact_transport_open_pipe takes the pipe kinds only; refused, the fd is
 * closed all the same (the transport owns it on failure). */
Test(pipe, open_pipe_refuses_a_socket_kind_and_closes_the_fd)
{
    int fds0 = count_open_fds();
    pact_loop *loop = test_loop_new();
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    pact_transport *t = NULL;
    cr_assert_eq(pact_transport_open_pipe(loop, p[0], PACT_STREAM_SOCKET,
                                          &rec_protocol, NULL, &t), -EINVAL);
    cr_assert_null(t);
    cr_expect_eq(fcntl(p[0], F_GETFD), -1, "the fd was left open");
    cr_assert_eq(pact_transport_open_pipe(loop, p[1], (pact_stream_kind)7,
                                          &rec_protocol, NULL, &t), -EINVAL);
    cr_expect_eq(fcntl(p[1], F_GETFD), -1, "the fd was left open");
    cr_assert_eq(pact_transport_open_pipe(loop, -1, PACT_STREAM_READ_PIPE,
                                          &rec_protocol, NULL, &t), -EBADF);
    test_loop_free(loop);
    cr_expect_eq(count_open_fds(), fds0, "fd leak");
}
