/* SPDX-License-Identifier: MIT */
/* What keeps pact_loop_run() going (pact.h, pact_loop_run): timers and
 * ops unless unreferenced, signal handlers only when referenced, and
 * transports, servers, datagram endpoints and processes through what they
 * have in flight unless pact_*_set_ref(obj, 0). run() returns with only
 * unreferenced work left, that work stays scheduled or in flight (an
 * unreferenced object still works while the loop runs), and close still
 * completes it exactly once. */
#include <signal.h>

#include "helpers.h"

static void count(pact_loop *loop, void *user)
{
    (void)loop;
    (*(int *)user)++;
}

Test(ref, run_returns_with_only_an_unreferenced_timer_left)
{
    pact_loop *loop = test_loop_new();
    int runs = 0;
    pact_handle h = pact_call_every(loop, 1 * MS, count, &runs);
    cr_assert_eq(pact_handle_set_ref(loop, h, 0), 0);
    cr_assert_eq(pact_handle_set_ref(loop, h, 0), 0, "twice is harmless");
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(runs, 0, "run() returned at once");
    cr_assert_eq(pact_loop_run_once(loop, -1), 0, "run_once does not block");
    /* Still scheduled: with other work keeping the loop alive it ticks. */
    int other = 0;
    pact_call_later(loop, 30 * MS, count, &other);
    cr_assert_eq(pact_loop_alive(loop), 1);
    pact_loop_run(loop);
    cr_assert_eq(other, 1);
    cr_assert_geq(runs, 2, "the background timer ran meanwhile");
    cr_assert_gt(pact_handle_due(loop, h), 0, "and is still scheduled");
    int seen = runs;
    test_loop_free(loop); /* dropped by close, never run, nothing leaks */
    cr_assert_eq(runs, seen);
}

static pact_handle reref_h;
static int reref_runs;
static void reref_tick(pact_loop *loop, void *user)
{
    (void)user;
    reref_runs++;
    if (reref_runs == 1)
        cr_assert_eq(pact_handle_set_ref(loop, reref_h, 1), 0);
    if (reref_runs == 3)
        cr_assert_eq(pact_handle_cancel(loop, reref_h), 0);
}

Test(ref, a_timer_referenced_again_from_its_callback_keeps_the_loop_alive)
{
    pact_loop *loop = test_loop_new();
    reref_runs = 0;
    reref_h = pact_call_every(loop, 2 * MS, reref_tick, NULL);
    pact_handle_set_ref(loop, reref_h, 0);
    int other = 0;
    pact_call_later(loop, 3 * MS, count, &other); /* alive until run 1 */
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(other, 1);
    cr_assert_eq(reref_runs, 3, "referenced from run 1 on: ran until cancelled");
    cr_assert_eq(pact_loop_alive(loop), 0);
    test_loop_free(loop);
}

Test(ref, a_one_shot_timer_unreferenced_then_referenced_runs)
{
    pact_loop *loop = test_loop_new();
    int runs = 0;
    pact_handle h = pact_call_later(loop, 2 * MS, count, &runs);
    cr_assert_eq(pact_handle_set_ref(loop, h, 0), 0);
    pact_loop_run(loop);
    cr_assert_eq(runs, 0);
    cr_assert_eq(pact_handle_set_ref(loop, h, 1), 0);
    pact_loop_run(loop);
    cr_assert_eq(runs, 1);
    cr_assert_eq(pact_handle_set_ref(loop, h, 0), -ENOENT, "stale after it ran");
    pact_handle soon = pact_call_soon(loop, count, &runs);
    cr_assert_eq(pact_handle_set_ref(loop, soon, 0), -EINVAL);
    cr_assert_eq(pact_handle_set_ref(NULL, h, 0), -EINVAL);
    pact_loop_run(loop);
    test_loop_free(loop);
}

static struct {
    int calls;
    int64_t result;
    int more_seen;
} rx;
static void on_recv(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    (void)user;
    rx.calls++;
    rx.result = c->result;
}

Test(ref, an_unreferenced_op_stays_in_flight_and_completes_once_at_close)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    memset(&rx, 0, sizeof rx);
    char buf[16];
    pact_op op = pact_recv(loop, sv[0], buf, sizeof buf, 0, on_recv, NULL);
    cr_assert_gt(op, 0);
    cr_assert_eq(pact_op_set_ref(loop, op, 0), 0);
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(rx.calls, 0);
    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    cr_assert_eq(st.ops_live, 1, "still in flight");
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(rx.calls, 1, "exactly once, at close");
    cr_assert_eq(rx.result, -ECANCELED);
    pact_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(ref, an_op_referenced_again_keeps_the_loop_until_it_completes)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    memset(&rx, 0, sizeof rx);
    char buf[16];
    pact_op op = pact_recv(loop, sv[0], buf, sizeof buf, 0, on_recv, NULL);
    cr_assert_eq(pact_op_set_ref(loop, op, 0), 0);
    pact_loop_run(loop);
    cr_assert_eq(rx.calls, 0);
    cr_assert_eq(pact_op_set_ref(loop, op, 1), 0);
    cr_assert_eq(pact_op_set_ref(loop, op, 1), 0, "twice is harmless");
    cr_assert_eq(pact_loop_alive(loop), 1);
    cr_assert_eq(write(sv[1], "ping", 4), 4);
    pact_loop_run(loop);
    cr_assert_eq(rx.calls, 1);
    cr_assert_eq(rx.result, 4);
    cr_assert_eq(pact_op_set_ref(loop, op, 0), -ENOENT, "completed");
    pact_handle timer = pact_call_later(loop, MS, count, &rx.more_seen);
    cr_assert_eq(pact_op_set_ref(loop, timer, 0), -ENOENT, "not an op");
    cr_assert_eq(pact_handle_cancel(loop, timer), 0);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

static void cancel_unref_op(pact_loop *loop, void *user)
{
    cr_assert_eq(pact_op_cancel(loop, *(pact_op *)user), 0);
}

Test(ref, an_unreferenced_op_cancelled_while_other_work_runs_completes_once)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    memset(&rx, 0, sizeof rx);
    char buf[16];
    pact_op op = pact_recv(loop, sv[0], buf, sizeof buf, 0, on_recv, NULL);
    pact_op_set_ref(loop, op, 0);
    pact_call_later(loop, 2 * MS, cancel_unref_op, &op);
    int other = 0;
    pact_call_later(loop, 20 * MS, count, &other);
    pact_loop_run(loop);
    cr_assert_eq(rx.calls, 1);
    cr_assert_eq(rx.result, -ECANCELED);
    cr_assert_eq(pact_loop_alive(loop), 0);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* Both timers due in one iteration (the loop was late, as on a busy
 * machine): the cancel is asked for and the last referenced work ends in
 * the same iteration. The cancelled op's callback still comes before the
 * run returns, on every engine: a cancel in progress keeps the loop
 * alive, as a close in progress does. */
Test(ref, an_unreferenced_op_cancelled_in_the_last_iteration_completes_before_run_returns)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    memset(&rx, 0, sizeof rx);
    char buf[16];
    pact_op op = pact_recv(loop, sv[0], buf, sizeof buf, 0, on_recv, NULL);
    cr_assert_gt(op, 0);
    cr_assert_eq(pact_op_set_ref(loop, op, 0), 0);
    cr_assert_geq(pact_loop_run_once(loop, 0), 0); /* the recv reaches the kernel */
    pact_call_later(loop, 1 * MS, cancel_unref_op, &op);
    int other = 0;
    pact_call_later(loop, 2 * MS, count, &other);
    usleep(20 * 1000); /* both timers are due when the run starts */
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(other, 1);
    cr_assert_eq(rx.calls, 1, "the cancelled op's callback before the run returned");
    cr_assert_eq(rx.result, -ECANCELED);
    cr_assert_eq(pact_loop_alive(loop), 0);
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

static pact_signal sig_h;
static int sig_seen;
static void on_usr1(pact_loop *loop, int signo, void *user)
{
    (void)user;
    cr_assert_eq(signo, SIGUSR1);
    sig_seen++;
    cr_assert_eq(pact_signal_cancel(loop, sig_h), 0);
}

static void send_usr1(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    cr_assert_eq(raise(SIGUSR1), 0);
}

Test(ref, a_referenced_signal_handler_keeps_the_loop_until_removed)
{
    pact_loop *loop = test_loop_new();
    sig_seen = 0;
    sig_h = pact_signal_add(loop, SIGUSR1, on_usr1, NULL);
    cr_assert_gt(sig_h, 0);
    cr_assert_eq(pact_loop_alive(loop), 0, "not by default");
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(sig_seen, 0);
    cr_assert_eq(pact_signal_set_ref(loop, sig_h, 1), 0);
    cr_assert_eq(pact_signal_set_ref(loop, sig_h, 1), 0, "twice is harmless");
    cr_assert_eq(pact_loop_alive(loop), 1);
    pact_call_later(loop, 5 * MS, send_usr1, NULL);
    cr_assert_eq(pact_loop_run(loop), 0, "returns once the handler removed itself");
    cr_assert_eq(sig_seen, 1);
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_signal_set_ref(loop, sig_h, 1), -ENOENT, "removed");
    test_loop_free(loop);
}

Test(ref, a_referenced_signal_handler_unreferenced_again_and_closed)
{
    pact_loop *loop = test_loop_new();
    pact_signal s = pact_signal_add(loop, SIGUSR2, on_usr1, NULL);
    cr_assert_eq(pact_signal_set_ref(loop, s, 1), 0);
    cr_assert_eq(pact_loop_alive(loop), 1);
    cr_assert_eq(pact_signal_set_ref(loop, s, 0), 0);
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_signal_set_ref(loop, s, 1), 0);
    cr_assert_eq(pact_signal_set_ref(loop, 999, 1), -ENOENT);
    test_loop_free(loop); /* close removes a referenced handler too */
}

/* ---- objects: transports, servers, datagram endpoints, processes --------- */

/* What an object's protocol saw. */
typedef struct seen {
    int made, lost, lost_err, exited;
    size_t got;
} seen;

static void t_made(pact_transport *t, void *u)
{
    (void)t;
    ((seen *)u)->made++;
}

static void t_data(pact_transport *t, const void *d, size_t n, void *u)
{
    (void)t;
    (void)d;
    ((seen *)u)->got += n;
}

static void t_lost(pact_transport *t, int err, void *u)
{
    (void)t;
    seen *s = u;
    cr_assert_eq(s->lost, 0, "connection_lost twice");
    s->lost++;
    s->lost_err = err;
}

static const pact_protocol seen_proto = {
    .connection_made = t_made, .data_received = t_data, .connection_lost = t_lost};

/* Runs the loop while a timer keeps it alive for ms: what unreferenced
 * objects do meanwhile happens. */
static void run_with_other_work(pact_loop *loop, unsigned ms)
{
    int other = 0;
    cr_assert_gt(pact_call_later(loop, ms * MS, count, &other), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(other, 1);
}

Test(ref, an_unreferenced_transport_stays_open_and_reads_while_other_work_runs)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    seen s = {0};
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &seen_proto, &s,
                                     &t), 0);
    cr_assert_eq(pact_transport_set_ref(t, 0), 0);
    cr_assert_eq(pact_transport_set_ref(t, 0), 0, "twice is harmless");
    /* connection_made (a scheduled callback) runs, then only the
     * unreferenced read is left: run() returns with the transport open. */
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(s.made, 1);
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_transport_is_closing(t), 0);
    /* It still reads whenever the loop runs. */
    cr_assert_eq(write(sv[1], "hello", 5), 5);
    run_with_other_work(loop, 50);
    cr_assert_eq(s.got, 5);
    cr_assert_eq(s.lost, 0);
    /* Referenced again it keeps the loop until it ends (the peer closes). */
    cr_assert_eq(pact_transport_set_ref(t, 1), 0);
    cr_assert_eq(pact_loop_alive(loop), 1);
    close(sv[1]);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(s.lost, 1);
    cr_assert_eq(s.lost_err, 0);
    test_loop_free(loop);
    cr_assert_eq(s.lost, 1, "exactly once");
}

Test(ref, an_unreferenced_transport_left_open_is_closed_once_by_loop_close)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    seen s = {0};
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &seen_proto, &s,
                                     &t), 0);
    cr_assert_eq(pact_transport_set_ref(t, 0), 0);
    /* A write in flight of an unreferenced transport does not keep the
     * loop either (a peer that does not read: the kernel buffer fills). */
    static char big[1 << 20];
    cr_assert_eq(pact_transport_write(t, big, sizeof big), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(s.made, 1);
    cr_assert_gt(pact_transport_write_buffer_size(t), 0, "the write is still under way");
    test_loop_free(loop);
    cr_assert_eq(s.lost, 1, "connection_lost exactly once, at loop close");
    cr_assert_eq(pact_transport_set_ref(NULL, 0), -EINVAL);
    close(sv[1]);
}

static int factory_calls;
static seen served;
static int count_factory(pact_server *srv, void *u, const pact_protocol **p, void **pu)
{
    (void)srv;
    (void)u;
    factory_calls++;
    *p = &seen_proto;
    *pu = &served;
    return 0;
}

Test(ref, an_unreferenced_server_still_accepts_while_other_work_runs)
{
    pact_loop *loop = test_loop_new();
    factory_calls = 0;
    memset(&served, 0, sizeof served);
    pact_server *srv;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, count_factory, NULL,
                                        &srv), 0);
    cr_assert_eq(pact_loop_alive(loop), 1, "a listening server keeps the loop alive");
    cr_assert_eq(pact_server_set_ref(srv, 0), 0);
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    /* A client connects; the server accepts while a timer keeps the loop
     * running, and the connection it made is referenced on its own. */
    struct sockaddr_storage ss;
    socklen_t len;
    cr_assert_eq(pact_sockaddr_parse("127.0.0.1", (uint16_t)pact_server_port(srv), &ss,
                                     &len), 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(connect(c, (struct sockaddr *)&ss, len), 0);
    run_until(loop, &served.made, 5000);
    cr_assert_eq(factory_calls, 1);
    cr_assert_eq(pact_loop_alive(loop), 1, "the accepted connection keeps it alive");
    close(c);
    cr_assert_eq(pact_loop_run(loop), 0, "until that connection ends");
    cr_assert_eq(served.lost, 1);
    /* Referenced again: alive until closed. */
    cr_assert_eq(pact_server_set_ref(srv, 1), 0);
    cr_assert_eq(pact_loop_alive(loop), 1);
    cr_assert_eq(pact_server_close(srv), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    test_loop_free(loop);
}

static void d_made(pact_datagram *ep, void *u)
{
    (void)ep;
    ((seen *)u)->made++;
}

static void d_received(pact_datagram *ep, const void *d, size_t n,
                       const struct sockaddr *a, socklen_t al, void *u)
{
    (void)ep;
    (void)d;
    (void)a;
    (void)al;
    ((seen *)u)->got += n;
}

static void d_lost(pact_datagram *ep, int err, void *u)
{
    (void)ep;
    seen *s = u;
    cr_assert_eq(s->lost, 0, "connection_lost twice");
    s->lost++;
    s->lost_err = err;
}

static const pact_datagram_protocol d_proto = {
    .connection_made = d_made, .datagram_received = d_received, .connection_lost = d_lost};

Test(ref, an_unreferenced_datagram_endpoint_still_receives_while_other_work_runs)
{
    pact_loop *loop = test_loop_new();
    seen s = {0};
    pact_datagram *ep;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL, &d_proto, &s,
                                        &ep), 0);
    cr_assert_eq(pact_datagram_set_ref(ep, 0), 0);
    cr_assert_eq(pact_loop_run(loop), 0, "returns once connection_made ran");
    cr_assert_eq(s.made, 1);
    cr_assert_eq(pact_loop_alive(loop), 0);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    cr_assert_eq(pact_datagram_sockname(ep, &ss, &len), 0);
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(sendto(u, "abc", 3, 0, (struct sockaddr *)&ss, len), 3);
    run_with_other_work(loop, 50);
    cr_assert_eq(s.got, 3);
    cr_assert_eq(pact_datagram_set_ref(ep, 1), 0);
    cr_assert_eq(pact_loop_alive(loop), 1);
    cr_assert_eq(pact_datagram_close(ep), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(s.lost, 1);
    close(u);
    test_loop_free(loop);
}

static void p_exited(pact_process *p, void *u)
{
    (void)p;
    ((seen *)u)->exited++;
}

static void p_lost(pact_process *p, void *u)
{
    (void)p;
    ((seen *)u)->lost++;
}

static const pact_subprocess_protocol p_proto = {.process_exited = p_exited,
                                                 .connection_lost = p_lost};

Test(ref, an_unreferenced_process_runs_on_and_is_reaped_when_the_loop_runs_again)
{
    pact_loop *loop = test_loop_new();
    char *argv[] = {"sh", "-c", "read x; exit 7", NULL};
    pact_process_options o = {.size = sizeof o, .argv = argv};
    o.stdio[0].kind = PACT_STDIO_PIPE;
    seen s = {0};
    pact_process *p;
    cr_assert_eq(pact_process_spawn(loop, &o, &p_proto, &s, &p), 0);
    cr_assert_eq(pact_process_set_ref(p, 0), 0);
    /* Neither its exit wait nor its stdin pipe keeps the loop. */
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(pact_loop_alive(loop), 0);
    cr_assert_eq(s.exited, 0, "the child waits for its stdin");
    cr_assert_eq(pact_process_write(p, "go\n", 3), 0);
    cr_assert_eq(pact_process_write_eof(p), 0);
    /* Referenced again: run() waits for its exit and its end. */
    cr_assert_eq(pact_process_set_ref(p, 1), 0);
    cr_assert_eq(pact_loop_alive(loop), 1);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(s.exited, 1);
    cr_assert_eq(s.lost, 1);
    test_loop_free(loop);
}
