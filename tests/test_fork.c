/* SPDX-License-Identifier: MIT */
/* fork(): a child process gets a copy of every loop, but the io_uring ring
 * (its submission queue is memory shared with the parent), the epoll
 * instance and the wake-up eventfd stay the parent's, and the pool's
 * threads do not exist in the child. Every entry point of an inherited
 * loop answers -ECHILD there, and pact_loop_free() releases the child's
 * copy without submitting, cancelling or waiting. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/wait.h>

#include "helpers.h"
#include "recorder.h"

TestSuite(fork, .timeout = 60);

/* What the child holds after pact_loop_free(): no more heap than before
 * the loop was made (exactly, under ASan), give or take `slack`.
 * LeakSanitizer cannot be asked in the child: its list of threads is
 * inherited (Criterion's worker has two) and it waits for threads that
 * are not there. */
static int heap_back_to(size_t before, size_t slack)
{
    size_t now = heap_bytes_in_use();
    if (now > before + slack + HEAP_COUNT_NOISE)
        fprintf(stderr, "child: heap %zu, before the loop %zu\n", now, before);
    return now <= before + slack + HEAP_COUNT_NOISE;
}

/* A thread that was running in the parent leaves, in the child, the
 * block glibc allocated for it at pthread_create (its dynamic TLS vector,
 * 368 bytes here): the pool's worker's, not pact's. */
#define POOL_THREAD_SLACK 1024

#define CHILD_CHECK(cond)                                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "child: %s failed (line %d)\n", #cond, __LINE__); \
            _exit(10);                                                      \
        }                                                                   \
    } while (0)

typedef struct {
    int sv[2];
    char buf[64];
    int recv_calls;
    int64_t recv_result;
    int timer_runs;
    int work_calls;
    int64_t work_result;
} parent_state;

static void recv_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    parent_state *p = user;
    p->recv_calls++;
    p->recv_result = c->result;
}

static void timer_cb(pact_loop *loop, void *user)
{
    (void)loop;
    ((parent_state *)user)->timer_runs++;
}

static void never_cb(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    _exit(20); /* a callback ran in the child */
}

static void never_op_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)c;
    (void)user;
    _exit(21);
}

static int64_t slow_work(void *arg)
{
    (void)arg;
    usleep(200 * 1000);
    return 7;
}

static void work_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    parent_state *p = user;
    p->work_calls++;
    p->work_result = c->result;
}

static void hook(pact_loop *loop, int64_t timeout_ns, void *user)
{
    (void)loop;
    (void)timeout_ns;
    (void)user;
}

/* Everything a loop offers, called in the child: -ECHILD each time, and
 * no callback runs. */
static void child_checks(pact_loop *loop, parent_state *p, pact_op recv,
                         size_t heap_before)
{
    char buf[8];
    CHILD_CHECK(pact_loop_run(loop) == -ECHILD);
    CHILD_CHECK(pact_loop_run_once(loop, 0) == -ECHILD);
    CHILD_CHECK(pact_loop_close(loop) == -ECHILD);
    CHILD_CHECK(pact_loop_stop(loop) == -ECHILD);
    CHILD_CHECK(pact_loop_wake(loop) == -ECHILD);
    CHILD_CHECK(pact_call_soon_threadsafe(loop, never_cb, NULL) == -ECHILD);
    CHILD_CHECK(pact_call_soon(loop, never_cb, NULL) == -ECHILD);
    CHILD_CHECK(pact_call_later(loop, 1, never_cb, NULL) == -ECHILD);
    CHILD_CHECK(pact_recv(loop, p->sv[0], buf, sizeof buf, 0, never_op_cb,
                          NULL) == -ECHILD);
    CHILD_CHECK(pact_sleep(loop, 1, never_op_cb, NULL) == -ECHILD);
    CHILD_CHECK(pact_op_cancel(loop, recv) == -ECHILD);
    CHILD_CHECK(pact_op_set_timeout(loop, recv, MS) == -ECHILD);
    CHILD_CHECK(pact_loop_backend_fd(loop) == -ECHILD);
    CHILD_CHECK(pact_loop_backend_timeout(loop) == -ECHILD);
    CHILD_CHECK(pact_loop_set_wait_hooks(loop, hook, hook, NULL) == -ECHILD);
    CHILD_CHECK(pact_loop_set_error_handler(loop, NULL, NULL) == -ECHILD);
    CHILD_CHECK(pact_queue_work(loop, slow_work, never_op_cb, NULL) == -ECHILD);
    pact_transport *t = NULL; /* it owns (here: closes) the fd it is given */
    CHILD_CHECK(pact_transport_open(loop, dup(p->sv[0]), PACT_STREAM_SOCKET,
                                    NULL, NULL, &t) == -ECHILD);
    CHILD_CHECK(pact_loop_free(loop) == 0);
    /* The socket is untouched: the parent's recv still waits on it. */
    struct pollfd pf = {.fd = p->sv[0], .events = POLLIN};
    CHILD_CHECK(poll(&pf, 1, 0) == 0);
    CHILD_CHECK(heap_back_to(heap_before, POOL_THREAD_SLACK));
}

static int wait_child(pid_t pid)
{
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "child died: status 0x%x", status);
    return WEXITSTATUS(status);
}

/* The parent has a recv in flight, a timer, pool work running and a
 * threadsafe callback queued when it forks. The child gets -ECHILD from
 * every entry point and frees its copy; the parent's loop goes on as if
 * nothing happened: the recv gets the bytes written after the fork (a
 * cancel the child slipped into the shared submission queue would have
 * ended it with -ECANCELED), the timer and the work complete once. */
Test(fork, every_entry_point_of_an_inherited_loop_is_echild_and_the_parent_goes_on)
{
    size_t heap_before = heap_bytes_in_use();
    pact_loop *loop = test_loop_new();
    parent_state p = {0};
    make_socketpair(p.sv);
    pact_op recv = pact_recv(loop, p.sv[0], p.buf, sizeof p.buf, 0, recv_done, &p);
    cr_assert_gt(recv, 0);
    cr_assert_gt(pact_call_later(loop, 20 * MS, timer_cb, &p), 0);
    cr_assert_gt(pact_queue_work(loop, slow_work, work_done, &p), 0);
    cr_assert_eq(pact_call_soon_threadsafe(loop, timer_cb, &p), 0);
    /* Submitted: the recv is in the kernel (io_uring) or epoll. */
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert_eq(p.recv_calls, 0);
    cr_assert_eq(pact_call_soon_threadsafe(loop, timer_cb, &p), 0);

    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        child_checks(loop, &p, recv, heap_before);
        _exit(0);
    }
    cr_assert_eq(wait_child(pid), 0);

    cr_assert_eq(write(p.sv[1], "after fork", 10), 10);
    uint64_t end = pact_now() + 5000 * MS;
    while ((p.recv_calls == 0 || p.timer_runs < 3 || p.work_calls == 0) &&
           pact_now() < end)
        cr_assert_geq(pact_loop_run_once(loop, 10 * (int64_t)MS), 0);
    cr_assert_eq(p.recv_calls, 1);
    cr_assert_eq(p.recv_result, 10, "recv: %s", pact_strerror((int)p.recv_result));
    cr_assert_eq(memcmp(p.buf, "after fork", 10), 0);
    cr_assert_eq(p.timer_runs, 3); /* the timer and two threadsafe calls */
    cr_assert_eq(p.work_calls, 1);
    cr_assert_eq(p.work_result, 7);
    test_loop_free(loop);
    close(p.sv[0]);
    close(p.sv[1]);
}

static void slept(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    *(int64_t *)user = c->result;
}

/* After freeing what it inherited, a child makes its own loop (a fresh
 * ring or epoll instance of its own) and runs it. */
Test(fork, a_child_frees_the_inherited_loop_and_runs_its_own)
{
    size_t heap_before = heap_bytes_in_use();
    pact_loop *loop = test_loop_new();
    int64_t result = 1;
    cr_assert_gt(pact_sleep(loop, 50 * MS, slept, &result), 0);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        CHILD_CHECK(pact_loop_free(loop) == 0);
        CHILD_CHECK(heap_back_to(heap_before, 0));
        pact_loop *own = NULL;
        pact_loop_options o;
        pact_loop_options_init(&o);
        CHILD_CHECK(pact_loop_create(&own, &o) == 0);
        int64_t mine = 1;
        CHILD_CHECK(pact_sleep(own, MS, slept, &mine) > 0);
        int sv[2];
        CHILD_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
        char buf[4];
        int64_t got = 0;
        CHILD_CHECK(pact_recv(own, sv[0], buf, sizeof buf, 0, slept, &got) > 0);
        CHILD_CHECK(write(sv[1], "kid", 3) == 3);
        CHILD_CHECK(pact_loop_run(own) == 0);
        CHILD_CHECK(mine == 0);
        CHILD_CHECK(got == 3);
        CHILD_CHECK(pact_loop_free(own) == 0);
        close(sv[0]);
        close(sv[1]);
        CHILD_CHECK(heap_back_to(heap_before, 0)); /* its own loop too */
        _exit(0);
    }
    cr_assert_eq(wait_child(pid), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(result, 0);
    test_loop_free(loop);
}

/* A fork from inside a callback of a running loop (a binding's Python
 * code starts a process pool there): the child is not inside that run, so
 * it may run a loop of its own. */
static pid_t forked_in_callback;

static void fork_from_callback(pact_loop *loop, void *user)
{
    (void)user;
    pid_t pid = fork();
    if (pid != 0) {
        forked_in_callback = pid;
        return;
    }
    /* Still inside the parent's callback, but not inside its run: every
     * entry point's owner check (whose fast case is "this thread runs
     * the loop", loop.h) must see the fork: an op start has no check of
     * its own for it. */
    CHILD_CHECK(pact_sleep(loop, MS, never_op_cb, NULL) == -ECHILD);
    pact_loop *own = NULL;
    pact_loop_options o;
    pact_loop_options_init(&o);
    CHILD_CHECK(pact_loop_create(&own, &o) == 0);
    int64_t mine = 1;
    CHILD_CHECK(pact_sleep(own, MS, slept, &mine) > 0);
    CHILD_CHECK(pact_loop_run(own) == 0);
    CHILD_CHECK(mine == 0);
    CHILD_CHECK(pact_loop_free(own) == 0);
    CHILD_CHECK(pact_loop_run_once(loop, 0) == -ECHILD); /* the parent's */
    CHILD_CHECK(pact_sleep(loop, MS, never_op_cb, NULL) == -ECHILD);
    _exit(0);
}

Test(fork, a_child_forked_in_a_callback_runs_a_loop_of_its_own)
{
    pact_loop *loop = test_loop_new();
    forked_in_callback = -1;
    cr_assert_gt(pact_call_soon(loop, fork_from_callback, NULL), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_gt(forked_in_callback, 0);
    cr_assert_eq(wait_child(forked_in_callback), 0);
    test_loop_free(loop);
}

/* A loop made in the child after the fork is the child's: the rule is
 * about inherited loops only. And a loop freed in the parent before the
 * fork is of no concern. A closed inherited loop is freed too. */
Test(fork, a_loop_closed_before_the_fork_is_freed_in_the_child)
{
    size_t heap_before = heap_bytes_in_use();
    pact_loop *loop = test_loop_new();
    cr_assert_eq(pact_loop_close(loop), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        CHILD_CHECK(pact_loop_run_once(loop, 0) == -ECHILD);
        CHILD_CHECK(pact_loop_free(loop) == 0);
        CHILD_CHECK(heap_back_to(heap_before, 0));
        _exit(0);
    }
    cr_assert_eq(wait_child(pid), 0);
    cr_assert_eq(pact_loop_free(loop), 0);
}

/* The loop keeps the write state of drained streams (and, outside ASan,
 * the memory of freed streams) for the next ones: a child that frees an
 * inherited loop gives those caches back too. A stream that had to queue
 * a write (more than the socket buffer takes) left its drained write
 * state in the cache when it closed. */
Test(fork, a_child_frees_the_inherited_loops_stream_caches)
{
    size_t heap_before = heap_bytes_in_use();
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    rec r;
    rec_init(&r);
    pact_transport *t = NULL;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET,
                                     &rec_protocol, &r, &t), 0);
    static char out[1 << 20];
    memset(out, 'x', sizeof out);
    cr_assert_eq(pact_transport_write(t, out, sizeof out), 0);
    cr_assert_gt(pact_transport_write_buffer_size(t), 0, "nothing queued");
    size_t got = 0;
    char in[65536];
    uint64_t end = pact_now() + 10000 * MS;
    while (got < sizeof out && pact_now() < end) {
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
        ssize_t n = read(sv[1], in, sizeof in);
        if (n > 0)
            got += (size_t)n;
    }
    cr_assert_eq(got, sizeof out);
    cr_assert_eq(pact_transport_write_buffer_size(t), 0);
    pact_transport_close(t);
    while (!r.lost && pact_now() < end)
        cr_assert_geq(pact_loop_run_once(loop, MS), 0);
    cr_assert_eq(r.lost, 1);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        CHILD_CHECK(pact_loop_free(loop) == 0);
        CHILD_CHECK(heap_back_to(heap_before, 0));
        _exit(0);
    }
    cr_assert_eq(wait_child(pid), 0);
    test_loop_free(loop);
    close(sv[1]);
    rec_expect_done(&r);
}

/* A loop closed with a transport open closes the transport's socket at
 * once: its peer reads EOF right after pact_loop_close, also while a
 * forked child that has not freed its copy of the loop lives on (on
 * io_uring the child's copy of the ring fd keeps the ring, and whatever
 * the ring holds, alive). With the transport reading (a receive in
 * flight) and with its reading paused (nothing in flight). */
Test(fork, a_loop_closed_with_a_transport_open_closes_its_socket_while_a_child_lives)
{
    for (int paused = 0; paused < 2; paused++) {
        pact_loop *loop = test_loop_new();
        int sv[2];
        make_socketpair(sv);
        rec r;
        rec_init(&r);
        pact_transport *t = NULL;
        cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET,
                                         &rec_protocol, &r, &t), 0);
        uint64_t end = pact_now() + 5000 * MS;
        while (!r.made && pact_now() < end)
            cr_assert_geq(pact_loop_run_once(loop, MS), 0);
        cr_assert_eq(r.made, 1);
        cr_assert_geq(pact_loop_run_once(loop, 0), 0); /* its receive is in */
        if (paused) {
            cr_assert_eq(pact_transport_pause_reading(t), 0);
            for (int i = 0; i < 5; i++)
                cr_assert_geq(pact_loop_run_once(loop, MS), 0);
        }
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            close(sv[0]); /* the child's copies of the fds: not what is tested */
            close(sv[1]);
            usleep(3000 * 1000); /* holds its copy of the loop meanwhile */
            _exit(0);
        }
        cr_assert_eq(pact_loop_close(loop), 0);
        cr_assert_eq(r.lost, 1);
        struct pollfd p = {.fd = sv[1], .events = POLLIN};
        int ready = poll(&p, 1, 1000);
        char c;
        ssize_t n = ready > 0 ? read(sv[1], &c, 1) : -1;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        cr_assert_eq(ready, 1, "paused %d: the peer saw no EOF within 1 s of "
                               "pact_loop_close", paused);
        cr_assert_eq(n, 0);
        cr_assert_eq(pact_loop_free(loop), 0);
        close(sv[1]);
        rec_expect_done(&r);
    }
}

/* A child that frees an inherited loop with endpoints open in it (a
 * stream transport with a write queued, a datagram endpoint, a server, a
 * process with two pipes)
 * gives back their memory and closes its copies of their fds, without
 * touching what the parent's loop has in flight: the parent's transport
 * goes on sending, its peer gets every byte, and the parent's fds stay
 * open. */
static int no_connections(pact_server *server, void *factory_user,
                          const pact_protocol **proto, void **user)
{
    (void)server;
    (void)factory_user;
    (void)proto;
    (void)user;
    return -ECONNREFUSED; /* no client connects */
}

Test(fork, a_child_frees_the_endpoints_open_in_an_inherited_loop)
{
    size_t heap_before = heap_bytes_in_use();
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    rec r;
    rec_init(&r);
    pact_transport *t = NULL;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET,
                                     &rec_protocol, &r, &t), 0);
    uint64_t end = pact_now() + 5000 * MS;
    while (!r.made && pact_now() < end)
        cr_assert_geq(pact_loop_run_once(loop, MS), 0);
    static char out[1 << 20];
    memset(out, 'x', sizeof out);
    cr_assert_eq(pact_transport_write(t, out, sizeof out), 0);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert_gt(pact_transport_write_buffer_size(t), 0, "nothing queued");
    static const pact_datagram_protocol dgram_proto = {0};
    pact_datagram *d = NULL;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &dgram_proto, NULL, &d), 0);
    pact_server *srv = NULL;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL,
                                        no_connections, NULL, &srv), 0);
    /* A process with its stdin and stdout piped (each pipe a transport
     * of its own). */
    char *argv[] = {"cat", NULL};
    pact_process_options po = {.size = sizeof po, .argv = argv};
    po.stdio[0].kind = PACT_STDIO_PIPE;
    po.stdio[1].kind = PACT_STDIO_PIPE;
    static const pact_subprocess_protocol process_proto = {0};
    pact_process *proc = NULL;
    cr_assert_eq(pact_process_spawn(loop, &po, &process_proto, NULL, &proc), 0);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    int fds[5] = {sv[0], pact_datagram_fd(d), pact_server_fd(srv),
                  pact_transport_fd(pact_process_pipe(proc, 0)),
                  pact_transport_fd(pact_process_pipe(proc, 1))};
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        CHILD_CHECK(pact_loop_free(loop) == 0);
        CHILD_CHECK(heap_back_to(heap_before, 0));
        for (int i = 0; i < 5; i++)
            CHILD_CHECK(fcntl(fds[i], F_GETFD) == -1 && errno == EBADF);
        _exit(0);
    }
    cr_assert_eq(wait_child(pid), 0);
    for (int i = 0; i < 5; i++) /* the parent's are open */
        cr_assert_geq(fcntl(fds[i], F_GETFD), 0);
    size_t got = 0;
    char in[65536];
    while (got < sizeof out && pact_now() < end) {
        cr_assert_geq(pact_loop_run_once(loop, 0), 0);
        ssize_t n = read(sv[1], in, sizeof in);
        if (n > 0)
            got += (size_t)n;
    }
    cr_assert_eq(got, sizeof out);
    pact_transport_close(t);
    pact_datagram_close(d);
    pact_server_close(srv);
    pact_process_close(proc);
    cr_assert_eq(pact_loop_run(loop), 0); /* until each has ended */
    test_loop_free(loop);
    close(sv[1]);
    rec_expect_done(&r);
}

/* Endpoints whose connection_made or final close waits in their own
 * ready node when the process forks: the child frees the loop without
 * running either (a protocol callback in the child exits it with 22) and
 * gets its memory and fds back; the parent's loop then runs them, in
 * order, once each. */
typedef struct node_rec {
    pid_t parent;
    int made, lost, close_in_made;
} node_rec;

static void node_made(pact_transport *t, void *user)
{
    node_rec *r = user;
    if (getpid() != r->parent)
        _exit(22);
    cr_assert_eq(r->made, 0, "connection_made twice");
    r->made++;
    if (r->close_in_made)
        cr_assert_eq(pact_transport_close(t), 0);
}

static void node_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    node_rec *r = user;
    if (getpid() != r->parent)
        _exit(22);
    cr_assert_eq(r->made, 1, "connection_lost before connection_made");
    cr_assert_eq(r->lost, 0, "connection_lost twice");
    r->lost++;
}

static const pact_protocol node_proto = {.connection_made = node_made,
                                         .connection_lost = node_lost};

Test(fork, a_child_frees_endpoints_whose_connection_made_or_final_close_is_queued)
{
    size_t heap_before = heap_bytes_in_use();
    pact_loop *loop = test_loop_new();
    int sv1[2], sv2[2];
    make_socketpair(sv1);
    make_socketpair(sv2);
    node_rec closing = {.parent = getpid(), .close_in_made = 1};
    node_rec fresh = {.parent = getpid()};
    pact_transport *t1 = NULL, *t2 = NULL;
    cr_assert_eq(pact_transport_open(loop, sv1[0], PACT_STREAM_SOCKET,
                                     &node_proto, &closing, &t1), 0);
    /* connection_made runs and closes: nothing in flight, so the final
     * close waits in the node when the iteration ends. */
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert_eq(closing.made, 1);
    cr_assert_eq(closing.lost, 0);
    cr_assert_eq(pact_transport_open(loop, sv2[0], PACT_STREAM_SOCKET,
                                     &node_proto, &fresh, &t2), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        CHILD_CHECK(pact_loop_free(loop) == 0);
        CHILD_CHECK(heap_back_to(heap_before, 0));
        CHILD_CHECK(fcntl(sv1[0], F_GETFD) == -1 && errno == EBADF);
        CHILD_CHECK(fcntl(sv2[0], F_GETFD) == -1 && errno == EBADF);
        _exit(0);
    }
    cr_assert_eq(wait_child(pid), 0);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert_eq(closing.lost, 1);
    cr_assert_eq(fresh.made, 1);
    cr_assert_eq(fresh.lost, 0);
    cr_assert_eq(pact_transport_close(t2), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(fresh.lost, 1);
    test_loop_free(loop);
    close(sv1[1]);
    close(sv2[1]);
}

/* The same for a TLS transport in its handshake (a client whose
 * ClientHello nobody answers) over its plain transport. */
static void handshake_never_ends(pact_loop *loop, pact_transport *t, int err,
                                 void *user)
{
    (void)loop;
    (void)t;
    (void)err;
    (*(int *)user)++;
}

/* A TLS client transport on a fresh loop, in its handshake. */
static pact_loop *loop_with_tls_client(int sv[2], int *handshakes,
                                       pact_transport **tls)
{
    pact_loop *loop = test_loop_new();
    make_socketpair(sv);
    pact_tls_context *ctx = NULL;
    cr_assert_eq(pact_tls_context_create(PACT_TLS_CLIENT, &ctx), 0);
    static const pact_protocol plain_proto = {0};
    pact_transport *plain = NULL;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET,
                                     &plain_proto, NULL, &plain), 0);
    cr_assert_eq(pact_tls_wrap(plain, ctx, "localhost", NULL, 0, 0,
                               &rec_protocol, NULL, handshake_never_ends,
                               handshakes, tls), 0);
    pact_tls_context_free(ctx); /* the transport holds its own */
    for (int i = 0; i < 3; i++)
        cr_assert_geq(pact_loop_run_once(loop, MS), 0);
    return loop;
}

Test(fork, a_child_frees_a_tls_transport_open_in_an_inherited_loop)
{
    /* OpenSSL sets up its own state on first use, for good: once before
     * the heap is counted. */
    int sv[2], handshakes = 0;
    pact_transport *tls = NULL;
    pact_loop *warm = loop_with_tls_client(sv, &handshakes, &tls);
    pact_transport_close(tls);
    cr_assert_eq(pact_loop_run(warm), 0);
    cr_assert_eq(pact_loop_close(warm), 0);
    cr_assert_eq(pact_loop_free(warm), 0);
    close(sv[1]);
    cr_assert_eq(handshakes, 1);

    size_t heap_before = heap_bytes_in_use();
    handshakes = 0;
    pact_loop *loop = loop_with_tls_client(sv, &handshakes, &tls);
    cr_assert_eq(handshakes, 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        CHILD_CHECK(pact_loop_free(loop) == 0);
        CHILD_CHECK(heap_back_to(heap_before, 0));
        CHILD_CHECK(fcntl(sv[0], F_GETFD) == -1 && errno == EBADF);
        _exit(0);
    }
    cr_assert_eq(wait_child(pid), 0);
    cr_assert_geq(fcntl(sv[0], F_GETFD), 0, "the parent's socket is open");
    pact_transport_close(tls);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(handshakes, 1);
    test_loop_free(loop);
    close(sv[1]);
}
