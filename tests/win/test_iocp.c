/* SPDX-License-Identifier: MIT */
/* The contract on the completion-port engine (docs/contract.md): every
 * started op completes exactly once — when it completed at once or later,
 * when cancelled in time or too late (then with its real result: bytes,
 * an accepted socket), and at loop close with ops in flight — deadlines,
 * the cross-thread wake-up, and the op kinds Windows has: WSARecv/WSASend,
 * AcceptEx, ConnectEx, shutdown, WSARecvFrom/WSASendTo and overlapped
 * ReadFile/WriteFile with offsets on files and named pipes. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "helpers.h"
#include "win/iocp.h" /* pact__iocp_accept_sockets_held() */

typedef struct rec {
    int calls;
    int64_t result;
    int64_t op;
    struct sockaddr_storage addr;
    int addrlen;
} rec;

static void record(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    rec *r = user;
    r->calls++;
    r->result = c->result;
    r->op = c->op;
    if (c->addr) {
        memcpy(&r->addr, c->addr, (size_t)c->addrlen);
        r->addrlen = c->addrlen;
    }
}

Test(iocp, the_engine_is_the_completion_port)
{
    pact_loop *loop = test_loop_new();
    cr_assert_str_eq(pact_loop_engine_name(loop), "iocp");
    cr_assert_eq(pact_loop_backend_fd(loop), -ENOTSUP);
    test_loop_free(loop);
}

/* A recv whose bytes are already there completes at once inside WSARecv;
 * its one packet is its one completion (no second delivery). */
Test(iocp, a_recv_that_completes_at_once_is_delivered_once)
{
    pact_loop *loop = test_loop_new();
    SOCKET c, s;
    make_tcp_pair(&c, &s);
    cr_assert_eq(send(c, "hello", 5, 0), 5);
    Sleep(20);
    char buf[16] = "";
    rec r = {0};
    pact_op op = pact_recv(loop, s, buf, sizeof buf, 0, record, &r);
    cr_assert_gt(op, 0);
    run_until(loop, &r.calls, 2000);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, 5);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    closesocket(c);
    closesocket(s);
    test_loop_free(loop);
}

static void send_later(pact_loop *loop, void *user)
{
    (void)loop;
    SOCKET *c = user;
    cr_assert_eq(send(*c, "later", 5, 0), 5);
}

/* The same recv, pending first: completed by the packet, once. */
Test(iocp, a_pending_recv_is_delivered_once)
{
    pact_loop *loop = test_loop_new();
    SOCKET c, s;
    make_tcp_pair(&c, &s);
    char buf[16] = "";
    rec r = {0};
    cr_assert_gt(pact_recv(loop, s, buf, sizeof buf, 0, record, &r), 0);
    cr_assert_gt(pact_call_later(loop, 30 * MS, send_later, &c), 0);
    run_until(loop, &r.calls, 2000);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, 5, "%s", pact_strerror((int)r.result));
    cr_assert_eq(memcmp(buf, "later", 5), 0);
    closesocket(c);
    closesocket(s);
    test_loop_free(loop);
}

/* 4 MiB each way with send_all and recv, every byte checked. */
typedef struct stream_check {
    pact_loop *loop;
    SOCKET s;
    uint8_t buf[65536];
    uint64_t received, total;
    int done, bad;
} stream_check;

static void on_stream_recv(pact_loop *loop, const pact_completion *c,
                           void *user)
{
    stream_check *sc = user;
    if (c->result <= 0) {
        sc->bad = c->result < 0;
        sc->done = 1;
        return;
    }
    for (int64_t i = 0; i < c->result; i++)
        if (sc->buf[i] != test_pattern_byte(sc->received + (uint64_t)i))
            sc->bad = 1;
    sc->received += (uint64_t)c->result;
    if (sc->received == sc->total) {
        sc->done = 1;
        return;
    }
    cr_assert_gt(pact_recv(loop, sc->s, sc->buf, sizeof sc->buf, 0,
                           on_stream_recv, sc), 0);
}

Test(iocp, send_all_and_recv_carry_every_byte_in_order)
{
    pact_loop *loop = test_loop_new();
    SOCKET c, s;
    make_tcp_pair(&c, &s);
    size_t total = 4u << 20;
    uint8_t *out = malloc(total);
    test_fill_pattern(out, total, 0);
    rec sent = {0};
    cr_assert_gt(pact_send_all(loop, c, out, total, 0, record, &sent), 0);
    stream_check *sc = calloc(1, sizeof *sc);
    sc->s = s;
    sc->total = total;
    cr_assert_gt(pact_recv(loop, s, sc->buf, sizeof sc->buf, 0,
                           on_stream_recv, sc), 0);
    run_until(loop, &sc->done, 20000);
    run_until(loop, &sent.calls, 5000);
    cr_assert_eq(sc->bad, 0);
    cr_assert_eq(sc->received, total);
    cr_assert_eq(sent.calls, 1);
    cr_assert_eq(sent.result, (int64_t)total);
    free(out);
    free(sc);
    closesocket(c);
    closesocket(s);
    test_loop_free(loop);
}

Test(iocp, cancel_in_time_completes_once_with_ecanceled)
{
    pact_loop *loop = test_loop_new();
    SOCKET c, s;
    make_tcp_pair(&c, &s);
    char buf[16];
    rec r = {0};
    pact_op op = pact_recv(loop, s, buf, sizeof buf, 0, record, &r);
    cr_assert_eq(pact_loop_run_once(loop, 0) >= 0, 1); /* now in WSARecv */
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    cr_assert_eq(pact_op_cancel(loop, op), -EALREADY, "a second cancel");
    run_until(loop, &r.calls, 2000);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.result, -ECANCELED);
    cr_assert_eq(pact_op_cancel(loop, op), -ENOENT, "a stale handle");
    /* The socket still works: nothing was consumed. */
    cr_assert_eq(send(c, "ok", 2, 0), 2);
    rec r2 = {0};
    cr_assert_gt(pact_recv(loop, s, buf, sizeof buf, 0, record, &r2), 0);
    run_until(loop, &r2.calls, 2000);
    cr_assert_eq(r2.result, 2);
    closesocket(c);
    closesocket(s);
    test_loop_free(loop);
}

/* The recv has completed in the kernel (its packet is queued) when the
 * cancel comes: CancelIoEx finds nothing, and the bytes are delivered. */
Test(iocp, cancel_too_late_delivers_the_data)
{
    pact_loop *loop = test_loop_new();
    int delivered = 0, cancelled = 0;
    for (int round = 0; round < 50; round++) {
        SOCKET c, s;
        make_tcp_pair(&c, &s);
        char buf[16] = "";
        rec r = {0};
        pact_op op = pact_recv(loop, s, buf, sizeof buf, 0, record, &r);
        pact_loop_run_once(loop, 0); /* in WSARecv, pending */
        cr_assert_eq(r.calls, 0);
        cr_assert_eq(send(c, "data!", 5, 0), 5);
        Sleep(round % 5); /* the packet is queued, or about to be */
        int cr = pact_op_cancel(loop, op);
        cr_assert(cr == 0, "cancel of a live op: %d", cr);
        run_until(loop, &r.calls, 2000);
        pact_loop_run_once(loop, 0);
        cr_assert_eq(r.calls, 1);
        if (r.result == -ECANCELED) {
            cancelled++;
            /* Not consumed: the bytes are still in the socket. */
            rec r2 = {0};
            cr_assert_gt(pact_recv(loop, s, buf, sizeof buf, 0, record, &r2), 0);
            run_until(loop, &r2.calls, 2000);
            cr_assert_eq(r2.result, 5);
        } else {
            cr_assert_eq(r.result, 5, "result %lld", (long long)r.result);
            delivered++;
        }
        cr_assert_eq(memcmp(buf, "data!", 5), 0);
        closesocket(c);
        closesocket(s);
    }
    cr_log_info("cancel too late: %d delivered, %d cancelled in time",
                delivered, cancelled);
    cr_assert_gt(delivered, 0, "the too-late case was never reached");
    test_loop_free(loop);
}

/* Loop close with ops in flight on several sockets and a listener: each
 * callback runs exactly once, with -ECANCELED, before close returns. */
Test(iocp, loop_close_completes_every_op_in_flight_once)
{
    pact_loop *loop = test_loop_new();
    enum { N = 8 };
    SOCKET c[N], s[N];
    char buf[N][32];
    rec r[N + 1];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        make_tcp_pair(&c[i], &s[i]);
        cr_assert_gt(pact_recv(loop, s[i], buf[i], sizeof buf[i], 0, record,
                               &r[i]), 0);
    }
    struct sockaddr_in a;
    SOCKET l = test_listener(&a);
    cr_assert_gt(pact_accept(loop, l, record, &r[N]), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(pact_loop_close(loop), 0);
    for (int i = 0; i <= N; i++) {
        cr_assert_eq(r[i].calls, 1, "op %d ran %d times", i, r[i].calls);
        cr_assert_eq(r[i].result, -ECANCELED);
    }
    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    cr_assert_eq(st.ops_started, st.ops_completed);
    cr_assert_eq(st.ops_live, 0);
    cr_assert_eq(pact__iocp_accept_sockets_held(), 0, "the accept's socket");
    pact_loop_free(loop);
    for (int i = 0; i < N; i++) {
        closesocket(c[i]);
        closesocket(s[i]);
    }
    closesocket(l);
}

typedef struct accept_race {
    int calls, accepted, cancelled;
} accept_race;

static void on_race_accept(pact_loop *loop, const pact_completion *c,
                           void *user)
{
    (void)loop;
    accept_race *ar = user;
    ar->calls++;
    if (c->result >= 0) {
        ar->accepted++;
        cr_assert_eq(closesocket((SOCKET)c->result), 0);
    } else {
        cr_assert_eq(c->result, -ECANCELED);
        ar->cancelled++;
    }
}

/* Accept racing cancel: a client connects and the accept is cancelled at
 * once. Either the accept won (the callback owns the socket and closes
 * it) or the cancel did (the pre-made socket is closed by pact, and the
 * connection waits in the backlog for the next accept). No socket leaks. */
Test(iocp, accept_racing_cancel_leaks_no_socket)
{
    pact_loop *loop = test_loop_new();
    struct sockaddr_in a;
    SOCKET l = test_listener(&a);
    DWORD handles_before = 0, handles_after = 0;
    enum { ROUNDS = 200 };
    accept_race ar = {0};
    SOCKET clients[ROUNDS];
    /* The first rounds create the loop's lazily made state. */
    GetProcessHandleCount(GetCurrentProcess(), &handles_before);
    for (int i = 0; i < ROUNDS; i++) {
        int before = ar.calls;
        pact_op op = pact_accept(loop, l, on_race_accept, &ar);
        cr_assert_gt(op, 0);
        pact_loop_run_once(loop, 0); /* AcceptEx is pending */
        clients[i] = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
        int r = 0;
        if (i % 4 == 0) /* cancelled before the client comes */
            r = pact_op_cancel(loop, op);
        cr_assert_eq(connect(clients[i], (struct sockaddr *)&a, sizeof a), 0);
        if (i % 3)
            Sleep(i % 3);
        if (i % 4 != 0)
            r = pact_op_cancel(loop, op);
        /* -ENOENT: a connection left in the backlog by an earlier
         * cancelled round was accepted at once, and its callback ran. */
        cr_assert(r == 0 || r == -EALREADY || r == -ENOENT, "cancel: %d", r);
        while (ar.calls == before)
            pact_loop_run_once(loop, 10 * (int64_t)MS);
    }
    cr_assert_eq(ar.calls, ROUNDS);
    /* The connections whose accept was cancelled are still queued: accept
     * them now; every client got exactly one server side. */
    accept_race rest = {0};
    while (ar.accepted + rest.accepted < ROUNDS) {
        int before = rest.calls;
        cr_assert_gt(pact_accept(loop, l, on_race_accept, &rest), 0);
        uint64_t end = pact_now() + 2000 * MS;
        while (rest.calls == before && pact_now() < end)
            pact_loop_run_once(loop, 10 * (int64_t)MS);
        cr_assert_eq(rest.calls, before + 1, "an accept did not complete");
    }
    cr_log_info("accept/cancel race: %d accepted, %d cancelled", ar.accepted,
                ar.cancelled);
    for (int i = 0; i < ROUNDS; i++)
        closesocket(clients[i]);
    GetProcessHandleCount(GetCurrentProcess(), &handles_after);
    cr_assert_leq(handles_after, handles_before,
                  "handles: %lu before, %lu after", (unsigned long)handles_before,
                  (unsigned long)handles_after);
    /* Wine counts no handles (0 and 0): pact's own count of the accept
     * sockets it made shows that none was left open either way. */
    cr_assert_eq(pact__iocp_accept_sockets_held(), 0);
    closesocket(l);
    test_loop_free(loop);
}

/* ConnectEx on an unbound socket (pact binds it), AcceptEx on the other
 * side; both sockets then work as ordinary connected sockets. */
Test(iocp, accept_and_connect_give_working_sockets)
{
    pact_loop *loop = test_loop_new();
    struct sockaddr_in a;
    SOCKET l = test_listener(&a);
    SOCKET c = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    rec acc = {0}, con = {0};
    cr_assert_gt(pact_accept(loop, l, record, &acc), 0);
    cr_assert_gt(pact_connect(loop, c, (struct sockaddr *)&a, sizeof a, record,
                              &con), 0);
    run_until(loop, &acc.calls, 2000);
    run_until(loop, &con.calls, 2000);
    cr_assert_eq(con.result, 0, "connect: %s", pact_strerror((int)con.result));
    cr_assert_geq(acc.result, 0, "accept: %s", pact_strerror((int)acc.result));
    SOCKET s = (SOCKET)acc.result;
    /* The peer address the accept reported is the client's. */
    struct sockaddr_in local;
    int len = sizeof local;
    cr_assert_eq(getsockname(c, (struct sockaddr *)&local, &len), 0);
    cr_assert_eq(acc.addrlen, (int)sizeof(struct sockaddr_in));
    cr_assert_eq(((struct sockaddr_in *)&acc.addr)->sin_port, local.sin_port);
    /* SO_UPDATE_CONNECT_CONTEXT: getpeername works on the client. */
    struct sockaddr_in peer;
    len = sizeof peer;
    cr_assert_eq(getpeername(c, (struct sockaddr *)&peer, &len), 0);
    cr_assert_eq(peer.sin_port, a.sin_port);
    char buf[8] = "";
    rec sent = {0}, got = {0};
    cr_assert_gt(pact_send(loop, s, "pong", 4, 0, record, &sent), 0);
    cr_assert_gt(pact_recv(loop, c, buf, sizeof buf, 0, record, &got), 0);
    run_until(loop, &got.calls, 2000);
    run_until(loop, &sent.calls, 2000);
    cr_assert_eq(sent.result, 4);
    cr_assert_eq(got.result, 4);
    cr_assert_eq(memcmp(buf, "pong", 4), 0);
    /* shutdown(SHUT_WR) as an op: the peer reads end of stream. */
    rec sh = {0}, eof = {0};
    cr_assert_gt(pact_shutdown(loop, s, SD_SEND, record, &sh), 0);
    cr_assert_gt(pact_recv(loop, c, buf, sizeof buf, 0, record, &eof), 0);
    run_until(loop, &eof.calls, 2000);
    cr_assert_eq(sh.calls, 1);
    cr_assert_eq(sh.result, 0);
    cr_assert_eq(eof.result, 0);
    closesocket(s);
    closesocket(c);
    closesocket(l);
    test_loop_free(loop);
}

Test(iocp, connect_to_a_closed_port_is_refused)
{
    pact_loop *loop = test_loop_new();
    struct sockaddr_in a;
    SOCKET l = test_listener(&a);
    closesocket(l); /* nobody listens on a.sin_port now */
    SOCKET c = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    rec con = {0};
    cr_assert_gt(pact_connect(loop, c, (struct sockaddr *)&a, sizeof a, record,
                              &con), 0);
    run_until(loop, &con.calls, 5000);
    cr_assert_eq(con.result, -ECONNREFUSED, "%s",
                 pact_strerror((int)con.result));
    closesocket(c);
    test_loop_free(loop);
}

/* A deadline cancels the op and reports -ETIMEDOUT, never early. */
Test(iocp, a_deadline_ends_a_recv_with_etimedout)
{
    pact_loop *loop = test_loop_new();
    SOCKET c, s;
    make_tcp_pair(&c, &s);
    char buf[8];
    rec r = {0};
    uint64_t start = pact_now();
    pact_op op = pact_recv(loop, s, buf, sizeof buf, 0, record, &r);
    cr_assert_eq(pact_op_set_timeout(loop, op, 50 * MS), 0);
    run_until(loop, &r.calls, 3000);
    uint64_t took = pact_now() - start;
    cr_assert_eq(r.result, -ETIMEDOUT);
    cr_assert_geq(took, 50 * MS, "fired after %llu ns",
                  (unsigned long long)took);
    closesocket(c);
    closesocket(s);
    test_loop_free(loop);
}

typedef struct timed {
    int calls, order;
    uint64_t at;
    int *next_order;
} timed;

static void on_timed(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    timed *t = user;
    cr_assert_eq(c->result, 0);
    t->calls++;
    t->at = pact_now();
    t->order = (*t->next_order)++;
}

Test(iocp, sleeps_end_in_deadline_order_and_never_early)
{
    pact_loop *loop = test_loop_new();
    int next = 0;
    timed t[3] = {{.next_order = &next}, {.next_order = &next},
                  {.next_order = &next}};
    uint64_t start = pact_now();
    cr_assert_gt(pact_sleep(loop, 30 * MS, on_timed, &t[1]), 0);
    cr_assert_gt(pact_sleep(loop, 10 * MS, on_timed, &t[0]), 0);
    cr_assert_gt(pact_sleep(loop, 60 * MS, on_timed, &t[2]), 0);
    run_until(loop, &t[2].calls, 2000);
    uint64_t want[3] = {10 * MS, 30 * MS, 60 * MS};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(t[i].calls, 1);
        cr_assert_eq(t[i].order, i, "sleep %d ended as number %d", i,
                     t[i].order);
        cr_assert_geq(t[i].at - start, want[i], "sleep %d ended early", i);
    }
    test_loop_free(loop);
}

typedef struct ts_state {
    pact_loop *loop;
    atomic_int ran;
} ts_state;

static void ts_cb(pact_loop *loop, void *user)
{
    (void)loop;
    ts_state *t = user;
    atomic_fetch_add(&t->ran, 1);
}

static void *ts_thread(void *arg)
{
    ts_state *t = arg;
    for (int i = 0; i < 1000; i++) {
        while (pact_call_soon_threadsafe(t->loop, ts_cb, t) == -ENOMEM)
            ;
        if (i % 100 == 0)
            Sleep(1);
    }
    return NULL;
}

/* pact_call_soon_threadsafe() from another thread wakes a loop blocked
 * in GetQueuedCompletionStatusEx (a posted packet). */
Test(iocp, threadsafe_callbacks_wake_the_port)
{
    pact_loop *loop = test_loop_new();
    ts_state t = {.loop = loop};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, ts_thread, &t), 0);
    uint64_t end = pact_now() + 10000 * MS;
    while (atomic_load(&t.ran) < 1000 && pact_now() < end)
        pact_loop_run_once(loop, 1000 * (int64_t)MS); /* blocks until woken */
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&t.ran), 1000);
    test_loop_free(loop);
}

static HANDLE temp_file(char *path, size_t len)
{
    char dir[MAX_PATH];
    GetTempPathA(sizeof dir, dir);
    snprintf(path, len, "%spact-iocp-%lu.tmp", dir,
             (unsigned long)GetCurrentProcessId());
    HANDLE h = CreateFileA(path, GENERIC_READ | GENERIC_WRITE, 0, NULL,
                           CREATE_ALWAYS,
                           FILE_FLAG_OVERLAPPED | FILE_FLAG_DELETE_ON_CLOSE,
                           NULL);
    cr_assert_neq(h, INVALID_HANDLE_VALUE);
    return h;
}

/* ReadFile/WriteFile overlapped at offsets; end of file reads 0; a file
 * has no current position for overlapped I/O (-ESPIPE). */
Test(iocp, file_reads_and_writes_at_offsets)
{
    pact_loop *loop = test_loop_new();
    char path[MAX_PATH];
    HANDLE h = temp_file(path, sizeof path);
    rec w1 = {0}, w2 = {0}, rd = {0}, eof = {0}, nopos = {0};
    cr_assert_gt(pact_write(loop, h, "world", 5, 4096, record, &w1), 0);
    cr_assert_gt(pact_write(loop, h, "hello", 5, 0, record, &w2), 0);
    run_until(loop, &w1.calls, 2000);
    run_until(loop, &w2.calls, 2000);
    cr_assert_eq(w1.result, 5);
    cr_assert_eq(w2.result, 5);
    char buf[8] = "";
    cr_assert_gt(pact_read(loop, h, buf, 5, 4096, record, &rd), 0);
    run_until(loop, &rd.calls, 2000);
    cr_assert_eq(rd.result, 5);
    cr_assert_eq(memcmp(buf, "world", 5), 0);
    cr_assert_gt(pact_read(loop, h, buf, 5, 1 << 20, record, &eof), 0);
    run_until(loop, &eof.calls, 2000);
    cr_assert_eq(eof.result, 0, "read past the end: %lld",
                 (long long)eof.result);
    cr_assert_gt(pact_read(loop, h, buf, 5, -1, record, &nopos), 0);
    run_until(loop, &nopos.calls, 2000);
    cr_assert_eq(nopos.result, -ESPIPE);
    CloseHandle(h);
    test_loop_free(loop);
}

/* An overlapped named pipe pair (anonymous pipes cannot be overlapped). */
static void pipe_pair(HANDLE *server, HANDLE *client)
{
    char name[128];
    static int n;
    snprintf(name, sizeof name, "\\\\.\\pipe\\pact-test-%lu-%d",
             (unsigned long)GetCurrentProcessId(), n++);
    *server = CreateNamedPipeA(name,
                               PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED |
                                   FILE_FLAG_FIRST_PIPE_INSTANCE,
                               PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT,
                               1, 65536, 65536, 0, NULL);
    cr_assert_neq(*server, INVALID_HANDLE_VALUE);
    *client = CreateFileA(name, GENERIC_READ | GENERIC_WRITE, 0, NULL,
                          OPEN_EXISTING, FILE_FLAG_OVERLAPPED, NULL);
    cr_assert_neq(*client, INVALID_HANDLE_VALUE);
}

Test(iocp, named_pipe_reads_writes_and_eof)
{
    pact_loop *loop = test_loop_new();
    HANDLE srv, cli;
    pipe_pair(&srv, &cli);
    char buf[16] = "";
    rec rd = {0}, wr = {0};
    cr_assert_gt(pact_read(loop, srv, buf, sizeof buf, -1, record, &rd), 0);
    pact_loop_run_once(loop, 0);
    cr_assert_gt(pact_write(loop, cli, "through", 7, -1, record, &wr), 0);
    run_until(loop, &rd.calls, 2000);
    run_until(loop, &wr.calls, 2000);
    cr_assert_eq(wr.result, 7);
    cr_assert_eq(rd.result, 7);
    cr_assert_eq(memcmp(buf, "through", 7), 0);
    /* The writer goes away: the pending read ends with end of file. */
    rec eof = {0};
    cr_assert_gt(pact_read(loop, srv, buf, sizeof buf, -1, record, &eof), 0);
    pact_loop_run_once(loop, 0);
    CloseHandle(cli);
    run_until(loop, &eof.calls, 2000);
    cr_assert_eq(eof.result, 0, "%s", pact_strerror((int)eof.result));
    /* And a write to a pipe whose reader is gone is -EPIPE. */
    rec epipe = {0};
    cr_assert_gt(pact_write(loop, srv, "x", 1, -1, record, &epipe), 0);
    run_until(loop, &epipe.calls, 2000);
    cr_assert_eq(epipe.result, -EPIPE, "%s", pact_strerror((int)epipe.result));
    CloseHandle(srv);
    test_loop_free(loop);
}

/* A pipe read cancelled while pending: once, -ECANCELED; a read cancelled
 * after the writer's bytes arrived delivers them. */
Test(iocp, named_pipe_read_cancel)
{
    pact_loop *loop = test_loop_new();
    HANDLE srv, cli;
    pipe_pair(&srv, &cli);
    char buf[16] = "";
    rec rd = {0};
    pact_op op = pact_read(loop, srv, buf, sizeof buf, -1, record, &rd);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    run_until(loop, &rd.calls, 2000);
    cr_assert_eq(rd.result, -ECANCELED);
    rec rd2 = {0};
    op = pact_read(loop, srv, buf, sizeof buf, -1, record, &rd2);
    pact_loop_run_once(loop, 0);
    DWORD n = 0;
    OVERLAPPED ov;
    memset(&ov, 0, sizeof ov);
    ov.hEvent = CreateEventA(NULL, TRUE, FALSE, NULL);
    if (!WriteFile(cli, "late", 4, NULL, &ov))
        cr_assert_eq(GetLastError(), ERROR_IO_PENDING);
    cr_assert(GetOverlappedResult(cli, &ov, &n, TRUE));
    CloseHandle(ov.hEvent);
    Sleep(5);
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    run_until(loop, &rd2.calls, 2000);
    cr_assert_eq(rd2.result, 4, "the bytes arrived before the cancel: %lld",
                 (long long)rd2.result);
    cr_assert_eq(memcmp(buf, "late", 4), 0);
    CloseHandle(cli);
    CloseHandle(srv);
    test_loop_free(loop);
}

Test(iocp, udp_sendto_and_recvfrom_name_the_sender)
{
    pact_loop *loop = test_loop_new();
    struct sockaddr_in aa, ba;
    SOCKET a = test_bound_socket(SOCK_DGRAM, &aa);
    SOCKET b = test_bound_socket(SOCK_DGRAM, &ba);
    char buf[32] = "";
    rec got = {0}, sent = {0};
    cr_assert_gt(pact_recvfrom(loop, b, buf, sizeof buf, 0, record, &got), 0);
    cr_assert_gt(pact_sendto(loop, a, "datagram", 8, 0, (struct sockaddr *)&ba,
                             sizeof ba, record, &sent), 0);
    run_until(loop, &got.calls, 2000);
    run_until(loop, &sent.calls, 2000);
    cr_assert_eq(sent.result, 8);
    cr_assert_eq(got.result, 8);
    cr_assert_eq(memcmp(buf, "datagram", 8), 0);
    cr_assert_eq(got.addrlen, (int)sizeof(struct sockaddr_in));
    cr_assert_eq(((struct sockaddr_in *)&got.addr)->sin_port, aa.sin_port);
    closesocket(a);
    closesocket(b);
    test_loop_free(loop);
}

/* A datagram arrives while its WSARecvFrom is being cancelled: either the
 * cancel was in time (-ECANCELED, the datagram still waits in the socket
 * and the next receive gets it) or too late (the op completes with the
 * datagram and its sender). Never lost, never twice: after each round a
 * marker datagram is what the next receive gets. */
Test(iocp, recvfrom_cancel_racing_a_datagram_loses_none_and_gives_none_twice)
{
    pact_loop *loop = test_loop_new();
    struct sockaddr_in aa, ba;
    SOCKET a = test_bound_socket(SOCK_DGRAM, &aa);
    SOCKET b = test_bound_socket(SOCK_DGRAM, &ba);
    int delivered = 0, cancelled = 0;
    for (int round = 0; round < 60; round++) {
        char want[16], marker[16], buf[32] = "";
        int n = snprintf(want, sizeof want, "datagram %02d", round);
        int m = snprintf(marker, sizeof marker, "marker %02d", round);
        rec r = {0};
        pact_op op = pact_recvfrom(loop, b, buf, sizeof buf, 0, record, &r);
        cr_assert_gt(op, 0);
        pact_loop_run_once(loop, 0); /* in WSARecvFrom, pending */
        cr_assert_eq(r.calls, 0);
        /* Odd rounds: the datagram first (the receive may have completed
         * when the cancel comes); even ones: the cancel first, the
         * datagram arriving while it is on its way. */
        if (round % 2) {
            cr_assert_eq(sendto(a, want, n, 0, (struct sockaddr *)&ba, sizeof ba), n);
            Sleep(round % 5); /* the packet is queued, or about to be */
        }
        int cr = pact_op_cancel(loop, op);
        cr_assert(cr == 0, "cancel of a live op: %d", cr);
        if (round % 2 == 0)
            cr_assert_eq(sendto(a, want, n, 0, (struct sockaddr *)&ba, sizeof ba), n);
        run_until(loop, &r.calls, 2000);
        for (int i = 0; i < 3; i++)
            pact_loop_run_once(loop, 0);
        cr_assert_eq(r.calls, 1);
        if (r.result == -ECANCELED) {
            cancelled++;
            /* Not consumed: the datagram still waits in the socket. */
            rec r2 = {0};
            cr_assert_gt(pact_recvfrom(loop, b, buf, sizeof buf, 0, record, &r2), 0);
            run_until(loop, &r2.calls, 2000);
            cr_assert_eq(r2.result, n, "round %d: %lld", round, (long long)r2.result);
            cr_assert_eq(((struct sockaddr_in *)&r2.addr)->sin_port, aa.sin_port);
        } else {
            delivered++;
            cr_assert_eq(r.result, n, "round %d: %lld", round, (long long)r.result);
            cr_assert_eq(r.addrlen, (int)sizeof(struct sockaddr_in),
                         "a late completion without its sender");
            cr_assert_eq(((struct sockaddr_in *)&r.addr)->sin_port, aa.sin_port);
        }
        cr_assert_eq(memcmp(buf, want, (size_t)n), 0, "round %d: %.*s", round, n, buf);
        /* Nothing of this round is left to be received again. */
        rec next = {0};
        cr_assert_gt(pact_recvfrom(loop, b, buf, sizeof buf, 0, record, &next), 0);
        cr_assert_eq(sendto(a, marker, m, 0, (struct sockaddr *)&ba, sizeof ba), m);
        run_until(loop, &next.calls, 2000);
        cr_assert_eq(next.result, m, "round %d: %lld", round, (long long)next.result);
        cr_assert_eq(memcmp(buf, marker, (size_t)m), 0, "round %d: got %.*s", round,
                     (int)next.result, buf);
    }
    cr_log_info("recvfrom cancel: %d delivered, %d cancelled in time",
                delivered, cancelled);
    cr_assert_gt(delivered, 0, "the too-late case was never reached");
    cr_assert_gt(cancelled, 0, "the in-time case was never reached");
    closesocket(a);
    closesocket(b);
    test_loop_free(loop);
}

/* A datagram longer than the buffer: WSARecvFrom fails with WSAEMSGSIZE
 * but, that being a warning status (STATUS_BUFFER_OVERFLOW), still queues
 * its packet, also when it failed at once. The op completes once, cut to
 * the buffer (len + 1 with MSG_TRUNC: cut, the full length unknown), and
 * the next datagram is received whole. */
Test(iocp, a_cut_datagram_completes_once_whether_at_once_or_pending)
{
    pact_loop *loop = test_loop_new();
    struct sockaddr_in aa, ba;
    SOCKET a = test_bound_socket(SOCK_DGRAM, &aa);
    SOCKET b = test_bound_socket(SOCK_DGRAM, &ba);
    static char big[2000];
    memset(big, 'x', sizeof big);
    char buf[100];
    for (int trunc = 0; trunc < 2; trunc++) {
        for (int at_once = 0; at_once < 2; at_once++) {
            rec got = {0}, next = {0};
            if (at_once) {
                cr_assert_eq(sendto(a, big, sizeof big, 0, (struct sockaddr *)&ba,
                                    sizeof ba), (int)sizeof big);
                Sleep(20); /* there before WSARecvFrom */
            }
            cr_assert_gt(pact_recvfrom(loop, b, buf, sizeof buf,
                                       trunc ? MSG_TRUNC : 0, record, &got), 0);
            if (!at_once) {
                pact_loop_run_once(loop, 0);
                cr_assert_eq(sendto(a, big, sizeof big, 0, (struct sockaddr *)&ba,
                                    sizeof ba), (int)sizeof big);
            }
            run_until(loop, &got.calls, 2000);
            for (int i = 0; i < 5; i++)
                pact_loop_run_once(loop, 1 * (int64_t)MS);
            cr_assert_eq(got.calls, 1);
            cr_assert_eq(got.result, trunc ? (int64_t)sizeof buf + 1
                                           : (int64_t)sizeof buf,
                         "%lld", (long long)got.result);
            cr_assert_eq(got.addrlen, (int)sizeof(struct sockaddr_in));
            cr_assert_gt(pact_recvfrom(loop, b, buf, sizeof buf, 0, record,
                                       &next), 0);
            cr_assert_eq(sendto(a, "small", 5, 0, (struct sockaddr *)&ba,
                                sizeof ba), 5);
            run_until(loop, &next.calls, 2000);
            cr_assert_eq(next.result, 5);
            cr_assert_eq(memcmp(buf, "small", 5), 0);
        }
    }
    closesocket(a);
    closesocket(b);
    test_loop_free(loop);
}

/* What Windows lacks answers -ENOTSUP in the op's one completion. */
Test(iocp, ops_this_engine_lacks_complete_with_enotsup)
{
    pact_loop *loop = test_loop_new();
    SOCKET c, s;
    make_tcp_pair(&c, &s);
    rec p = {0};
    cr_assert_gt(pact_poll(loop, s, POLLIN, record, &p), 0);
    run_until(loop, &p.calls, 2000);
    cr_assert_eq(p.result, -ENOTSUP);
    closesocket(c);
    closesocket(s);
    test_loop_free(loop);
}

/* pact_recv_multishot() on the port: one WSARecv at a time into the op's
 * buffer, re-armed after each chunk. 4 MiB arrive in order, every byte
 * checked, then EOF ends it with 0. */
typedef struct multi {
    uint64_t received;
    int chunks, finals, bad, more_after_final;
    int64_t final;
    pact_op op;
    int cancel_after; /* cancel from inside the n-th data callback */
} multi;

static void on_multi(pact_loop *loop, const pact_completion *c, void *user)
{
    multi *m = user;
    if (m->finals)
        m->more_after_final = 1;
    if (!c->more) {
        m->finals++;
        m->final = c->result;
        cr_assert_null(c->data);
        return;
    }
    cr_assert_gt(c->result, 0);
    const uint8_t *d = c->data;
    for (int64_t i = 0; i < c->result; i++)
        if (d[i] != test_pattern_byte(m->received + (uint64_t)i))
            m->bad = 1;
    m->received += (uint64_t)c->result;
    m->chunks++;
    if (m->cancel_after && m->chunks == m->cancel_after)
        cr_assert_eq(pact_op_cancel(loop, m->op), 0);
}

Test(iocp, multishot_receive_delivers_the_stream_in_order_then_eof)
{
    pact_loop *loop = test_loop_new();
    cr_assert_str_eq(pact_loop_recv_multishot_mode(loop), "iocp");
    SOCKET c, s;
    make_tcp_pair(&c, &s);
    size_t total = 4u << 20;
    uint8_t *out = malloc(total);
    test_fill_pattern(out, total, 0);
    multi m = {0};
    m.op = pact_recv_multishot(loop, s, on_multi, &m);
    cr_assert_gt(m.op, 0);
    rec sent = {0};
    cr_assert_gt(pact_send_all(loop, c, out, total, 0, record, &sent), 0);
    run_until(loop, &sent.calls, 20000);
    cr_assert_eq(sent.result, (int64_t)total);
    shutdown(c, SD_SEND);
    run_until(loop, &m.finals, 20000);
    cr_assert_eq(m.bad, 0);
    cr_assert_eq(m.received, total);
    cr_assert_eq(m.final, 0, "%s", pact_strerror((int)m.final));
    cr_assert_eq(m.more_after_final, 0);
    cr_log_info("4 MiB in %d chunks", m.chunks);
    free(out);
    closesocket(c);
    closesocket(s);
    test_loop_free(loop);
}

/* Cancelled from inside a data callback: nothing more is delivered after
 * the final -ECANCELED, and what the kernel did not consume stays in the
 * socket for the next receive. Cancelled while idle: -ECANCELED once. */
Test(iocp, multishot_receive_cancel_from_its_callback_and_while_idle)
{
    pact_loop *loop = test_loop_new();
    SOCKET c, s;
    make_tcp_pair(&c, &s);
    uint8_t out[3000];
    test_fill_pattern(out, sizeof out, 0);
    multi m = {.cancel_after = 1};
    m.op = pact_recv_multishot(loop, s, on_multi, &m);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(send(c, (char *)out, 1000, 0), 1000);
    run_until(loop, &m.finals, 3000);
    cr_assert_eq(m.final, -ECANCELED);
    cr_assert_eq(m.chunks, 1);
    cr_assert_eq(m.bad, 0);
    cr_assert_eq(m.more_after_final, 0);
    /* The rest of the stream is still there for the next receiver. */
    cr_assert_eq(send(c, (char *)out + m.received, 3000 - (int)m.received, 0),
                 3000 - (int)m.received);
    multi m2 = {.received = m.received};
    m2.op = pact_recv_multishot(loop, s, on_multi, &m2);
    uint64_t end = pact_now() + 3000 * MS;
    while (m2.received < 3000 && pact_now() < end)
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    cr_assert_eq(m2.received, 3000);
    cr_assert_eq(m2.bad, 0);
    cr_assert_eq(pact_op_cancel(loop, m2.op), 0);
    run_until(loop, &m2.finals, 3000);
    cr_assert_eq(m2.final, -ECANCELED);
    closesocket(c);
    closesocket(s);
    test_loop_free(loop);
}

/* The loop's thread pool (winpthreads) hands results back through the
 * port's wake-up: 64 work items, each done once on the loop thread with
 * what its work returned. */
typedef struct work_item {
    intptr_t n;
    int calls;
    int64_t result;
    DWORD done_thread;
} work_item;

static int64_t square(void *user)
{
    work_item *w = user;
    Sleep(1);
    return (int64_t)w->n * w->n;
}

static void on_work_done(pact_loop *loop, const pact_completion *c,
                         void *user)
{
    (void)loop;
    work_item *w = user;
    w->calls++;
    w->result = c->result;
    w->done_thread = GetCurrentThreadId();
}

Test(iocp, pool_work_completes_on_the_loop_thread_once_each)
{
    pact_loop *loop = test_loop_new();
    enum { N = 64 };
    work_item w[N];
    memset(w, 0, sizeof w);
    for (int i = 0; i < N; i++) {
        w[i].n = i + 1;
        cr_assert_gt(pact_queue_work(loop, square, on_work_done, &w[i]), 0);
    }
    uint64_t end = pact_now() + 10000 * MS;
    int done = 0;
    while (done < N && pact_now() < end) {
        pact_loop_run_once(loop, 100 * (int64_t)MS);
        done = 0;
        for (int i = 0; i < N; i++)
            done += w[i].calls;
    }
    for (int i = 0; i < N; i++) {
        cr_assert_eq(w[i].calls, 1, "item %d done %d times", i, w[i].calls);
        cr_assert_eq(w[i].result, (int64_t)w[i].n * w[i].n);
        cr_assert_eq(w[i].done_thread, GetCurrentThreadId());
    }
    test_loop_free(loop);
}
