/* SPDX-License-Identifier: MIT */
/* Named pipes on Windows: a server that always has an instance listening,
 * a client that waits out ERROR_PIPE_BUSY with a back-off on the loop's
 * timers and can be cancelled at any point without leaving a handle, and
 * the connected pipes carrying bytes both ways with end of file. */
#include <stdio.h>

#include "helpers.h"

typedef struct rec {
    int calls;
    int64_t result;
    uint64_t at;
} rec;

static void record(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    rec *r = user;
    r->calls++;
    r->result = c->result;
    r->at = pact_now();
}

static const char *pipe_name(void)
{
    static char name[128];
    static int n;
    snprintf(name, sizeof name, "\\\\.\\pipe\\pact-np-%lu-%d",
             (unsigned long)GetCurrentProcessId(), n++);
    return name;
}

static HANDLE as_handle(int64_t result)
{
    return (HANDLE)(intptr_t)result;
}

/* Bytes both ways over an accepted and a connected pipe, then EOF. */
static void exchange(pact_loop *loop, HANDLE a, HANDLE b)
{
    char buf[16] = "";
    rec w = {0}, rd = {0};
    cr_assert_gt(pact_read(loop, b, buf, sizeof buf, -1, record, &rd), 0);
    cr_assert_gt(pact_write(loop, a, "ping", 4, -1, record, &w), 0);
    run_until(loop, &rd.calls, 3000);
    run_until(loop, &w.calls, 3000);
    cr_assert_eq(w.result, 4);
    cr_assert_eq(rd.result, 4);
    cr_assert_eq(memcmp(buf, "ping", 4), 0);
}

Test(named_pipe, a_client_connects_and_bytes_flow_both_ways)
{
    pact_loop *loop = test_loop_new();
    const char *name = pipe_name();
    pact_pipe_server *srv;
    cr_assert_eq(pact_pipe_server_open(loop, name, &srv), 0);
    rec acc = {0}, con = {0};
    cr_assert_gt(pact_pipe_server_accept(srv, record, &acc), 0);
    cr_assert_eq(pact_pipe_server_accept(srv, record, &acc), -EBUSY);
    cr_assert_gt(pact_pipe_connect(loop, name, record, &con), 0);
    run_until(loop, &acc.calls, 3000);
    run_until(loop, &con.calls, 3000);
    cr_assert_gt(acc.result, 0, "accept: %s", pact_strerror((int)acc.result));
    cr_assert_gt(con.result, 0, "connect: %s", pact_strerror((int)con.result));
    exchange(loop, as_handle(acc.result), as_handle(con.result));
    exchange(loop, as_handle(con.result), as_handle(acc.result));
    /* The client goes: the server side reads end of file. */
    char buf[8];
    rec eof = {0};
    cr_assert_gt(pact_read(loop, as_handle(acc.result), buf, sizeof buf, -1,
                           record, &eof), 0);
    pact_loop_run_once(loop, 0);
    CloseHandle(as_handle(con.result));
    run_until(loop, &eof.calls, 3000);
    cr_assert_eq(eof.result, 0);
    CloseHandle(as_handle(acc.result));
    cr_assert_eq(pact_pipe_server_close(srv), 0);
    test_loop_free(loop);
}

/* Wine's ntdll exports wine_get_version; Windows's does not. */
static int under_wine(void)
{
    HMODULE ntdll = GetModuleHandleA("ntdll.dll");
    return ntdll && GetProcAddress(ntdll, "wine_get_version") != NULL;
}

Test(named_pipe, no_server_is_enoent_and_a_second_server_is_eacces)
{
    pact_loop *loop = test_loop_new();
    const char *name = pipe_name();
    rec con = {0};
    cr_assert_gt(pact_pipe_connect(loop, name, record, &con), 0);
    run_until(loop, &con.calls, 3000);
    cr_assert_eq(con.result, -ENOENT, "%s", pact_strerror((int)con.result));
    pact_pipe_server *a, *b;
    cr_assert_eq(pact_pipe_server_open(loop, name, &a), 0);
    int second = pact_pipe_server_open(loop, name, &b);
    if (under_wine() && second == 0) {
        /* Wine 8 does not enforce FILE_FLAG_FIRST_PIPE_INSTANCE; Windows
         * answers ERROR_ACCESS_DENIED. */
        cr_log_info("Wine let a second server open %s", name);
        cr_assert_eq(pact_pipe_server_close(b), 0);
    } else {
        cr_assert_eq(second, -EACCES, "%d %s", second, pact_strerror(second));
        cr_assert_null(b);
    }
    cr_assert_eq(pact_pipe_server_close(a), 0);
    test_loop_free(loop);
}

typedef struct many {
    pact_loop *loop;
    pact_pipe_server *srv;
    int accepted, connected, failed;
    HANDLE handles[64];
    int nhandles;
} many;

static void many_accepted(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    many *m = user;
    if (c->result < 0) {
        m->failed++;
        return;
    }
    m->handles[m->nhandles++] = as_handle(c->result);
    m->accepted++;
    cr_assert_gt(pact_pipe_server_accept(m->srv, many_accepted, m), 0);
}

static void many_connected(pact_loop *loop, const pact_completion *c,
                           void *user)
{
    (void)loop;
    many *m = user;
    if (c->result < 0) {
        m->failed++;
        return;
    }
    m->handles[m->nhandles++] = as_handle(c->result);
    m->connected++;
}

/* Ten clients at once against one accept at a time: all but one find the
 * instance busy and back off; every one connects, none finds no pipe. */
Test(named_pipe, clients_that_find_every_instance_busy_back_off_and_connect)
{
    pact_loop *loop = test_loop_new();
    const char *name = pipe_name();
    many m = {.loop = loop};
    cr_assert_eq(pact_pipe_server_open(loop, name, &m.srv), 0);
    enum { N = 10 };
    for (int i = 0; i < N; i++)
        cr_assert_gt(pact_pipe_connect(loop, name, many_connected, &m), 0);
    cr_assert_gt(pact_pipe_server_accept(m.srv, many_accepted, &m), 0);
    uint64_t end = pact_now() + 10000 * MS;
    while ((m.connected < N || m.accepted < N) && !m.failed &&
           pact_now() < end)
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    cr_assert_eq(m.failed, 0);
    cr_assert_eq(m.connected, N);
    cr_assert_eq(m.accepted, N);
    cr_assert_eq(pact_pipe_server_close(m.srv), 0); /* with an accept in flight */
    for (int i = 0; i < m.nhandles; i++)
        CloseHandle(m.handles[i]);
    test_loop_free(loop);
}

/* While the only instance is taken, a connect waits; it connects soon
 * after an instance appears (the back-off is at most 100 ms), and a
 * cancel during the wait ends it at once with no handle left open. */
Test(named_pipe, the_busy_wait_is_bounded_and_cancellable)
{
    pact_loop *loop = test_loop_new();
    const char *name = pipe_name();
    pact_pipe_server *srv;
    cr_assert_eq(pact_pipe_server_open(loop, name, &srv), 0);
    /* A first client takes the only instance (no accept yet). */
    HANDLE first = CreateFileA(name, GENERIC_READ | GENERIC_WRITE, 0, NULL,
                               OPEN_EXISTING, FILE_FLAG_OVERLAPPED, NULL);
    cr_assert_neq(first, INVALID_HANDLE_VALUE);
    DWORD handles_before = 0, handles_after = 0;
    GetProcessHandleCount(GetCurrentProcess(), &handles_before);
    rec cancelled = {0};
    pact_op op = pact_pipe_connect(loop, name, record, &cancelled);
    uint64_t until = pact_now() + 120 * MS;
    while (pact_now() < until)
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    cr_assert_eq(cancelled.calls, 0, "connected although busy: %lld",
                 (long long)cancelled.result);
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    run_until(loop, &cancelled.calls, 1000);
    cr_assert_eq(cancelled.result, -ECANCELED);
    GetProcessHandleCount(GetCurrentProcess(), &handles_after);
    cr_assert_leq(handles_after, handles_before);

    /* Again, busy for 300 ms: the back-off has reached its 100 ms cap;
     * the accept makes the next instance and the client gets it. */
    rec waiting = {0}, acc = {0};
    cr_assert_gt(pact_pipe_connect(loop, name, record, &waiting), 0);
    until = pact_now() + 300 * MS;
    while (pact_now() < until)
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    cr_assert_eq(waiting.calls, 0);
    uint64_t freed = pact_now();
    cr_assert_gt(pact_pipe_server_accept(srv, record, &acc), 0);
    run_until(loop, &acc.calls, 3000); /* the first client, connected */
    run_until(loop, &waiting.calls, 3000);
    cr_assert_gt(waiting.result, 0, "%s", pact_strerror((int)waiting.result));
    uint64_t took = waiting.at - freed;
    cr_log_info("connected %llu ms after an instance appeared",
                (unsigned long long)(took / MS));
    cr_assert_lt(took, 1000 * MS, "the back-off is capped at 100 ms");
    CloseHandle(as_handle(waiting.result));
    CloseHandle(as_handle(acc.result));
    CloseHandle(first);
    cr_assert_eq(pact_pipe_server_close(srv), 0);
    test_loop_free(loop);
}

/* Loop close with a server open (and its accept in flight) and a connect
 * backing off: each op completes once, the server is closed. */
Test(named_pipe, loop_close_ends_the_server_and_the_waiting_connect)
{
    pact_loop *loop = test_loop_new();
    const char *name = pipe_name();
    pact_pipe_server *srv;
    cr_assert_eq(pact_pipe_server_open(loop, name, &srv), 0);
    HANDLE first = CreateFileA(name, GENERIC_READ | GENERIC_WRITE, 0, NULL,
                               OPEN_EXISTING, FILE_FLAG_OVERLAPPED, NULL);
    cr_assert_neq(first, INVALID_HANDLE_VALUE);
    rec con = {0};
    cr_assert_gt(pact_pipe_connect(loop, name, record, &con), 0);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 2 * (int64_t)MS);
    cr_assert_eq(con.calls, 0);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(con.calls, 1);
    cr_assert_eq(con.result, -ECANCELED);
    pact_loop_free(loop);
    CloseHandle(first);
    /* The server is gone with the loop: the name is free again. */
    pact_loop *again = test_loop_new();
    pact_pipe_server *srv2;
    cr_assert_eq(pact_pipe_server_open(again, name, &srv2), 0);
    cr_assert_eq(pact_pipe_server_close(srv2), 0);
    cr_assert_eq(pact_pipe_server_close(srv2 = NULL), -EINVAL);
    test_loop_free(again);
}

/* An accept cancelled before any client came: -ECANCELED once; the
 * instance is still there, and the next accept takes the next client. */
Test(named_pipe, accept_cancel_in_time_keeps_the_server_listening)
{
    pact_loop *loop = test_loop_new();
    const char *name = pipe_name();
    pact_pipe_server *srv;
    cr_assert_eq(pact_pipe_server_open(loop, name, &srv), 0);
    rec acc = {0};
    pact_op op = pact_pipe_server_accept(srv, record, &acc);
    pact_loop_run_once(loop, 0);
    cr_assert_eq(pact_op_cancel(loop, op), 0);
    run_until(loop, &acc.calls, 3000);
    cr_assert_eq(acc.calls, 1);
    cr_assert_eq(acc.result, -ECANCELED);
    rec acc2 = {0}, con = {0};
    cr_assert_gt(pact_pipe_connect(loop, name, record, &con), 0);
    cr_assert_gt(pact_pipe_server_accept(srv, record, &acc2), 0);
    run_until(loop, &acc2.calls, 3000);
    run_until(loop, &con.calls, 3000);
    cr_assert_gt(acc2.result, 0);
    cr_assert_gt(con.result, 0);
    exchange(loop, as_handle(con.result), as_handle(acc2.result));
    CloseHandle(as_handle(acc2.result));
    CloseHandle(as_handle(con.result));
    cr_assert_eq(pact_pipe_server_close(srv), 0);
    test_loop_free(loop);
}

/* ---- the contract on a named pipe ------------------------------------------ */

/* Writes len bytes to an overlapped handle the loop does not use (not on
 * its port), waiting for them. */
static void write_handle(HANDLE h, const void *buf, DWORD len)
{
    OVERLAPPED ov = {0};
    ov.hEvent = CreateEventA(NULL, TRUE, FALSE, NULL);
    DWORD n = 0;
    if (!WriteFile(h, buf, len, NULL, &ov))
        cr_assert_eq(GetLastError(), ERROR_IO_PENDING);
    cr_assert(GetOverlappedResult(h, &ov, &n, TRUE));
    cr_assert_eq(n, len);
    CloseHandle(ov.hEvent);
}

/* The server's end (accepted by pact) and a client's end opened directly,
 * which the test writes with blocking overlapped calls. */
static void server_and_raw_client(pact_loop *loop, HANDLE *server,
                                  HANDLE *client)
{
    const char *name = pipe_name();
    pact_pipe_server *srv;
    cr_assert_eq(pact_pipe_server_open(loop, name, &srv), 0);
    rec acc = {0};
    cr_assert_gt(pact_pipe_server_accept(srv, record, &acc), 0);
    *client = CreateFileA(name, GENERIC_READ | GENERIC_WRITE, 0, NULL,
                          OPEN_EXISTING, FILE_FLAG_OVERLAPPED, NULL);
    cr_assert_neq(*client, INVALID_HANDLE_VALUE);
    run_until(loop, &acc.calls, 3000);
    cr_assert_gt(acc.result, 0);
    *server = as_handle(acc.result);
    cr_assert_eq(pact_pipe_server_close(srv), 0);
}

/* A read cancelled while nothing has arrived ends -ECANCELED; one whose
 * bytes were there already (ReadFile done at once, its packet queued)
 * delivers them: the cancel came too late, and no byte is lost. 50 rounds
 * of each. */
Test(named_pipe, a_read_cancelled_in_time_or_too_late_with_data)
{
    pact_loop *loop = test_loop_new();
    HANDLE server, client;
    server_and_raw_client(loop, &server, &client);
    char buf[256];
    int in_time = 0, too_late = 0;
    for (int round = 0; round < 50; round++) {
        rec r = {0};
        pact_op op = pact_read(loop, server, buf, sizeof buf, -1, record, &r);
        cr_assert_gt(op, 0);
        pact_loop_run_once(loop, 0); /* ReadFile is pending now */
        cr_assert_eq(r.calls, 0);
        cr_assert_eq(pact_op_cancel(loop, op), 0);
        run_until(loop, &r.calls, 3000);
        cr_assert_eq(r.result, -ECANCELED);
        in_time++;

        /* The bytes reach the pending ReadFile, whose packet is queued
         * before the cancel. */
        char msg[100];
        test_fill_pattern((uint8_t *)msg, sizeof msg, (uint64_t)round * 100);
        rec d = {0};
        op = pact_read(loop, server, buf, sizeof buf, -1, record, &d);
        cr_assert_gt(op, 0);
        pact_loop_run_once(loop, 0);
        cr_assert_eq(d.calls, 0);
        write_handle(client, msg, sizeof msg);
        Sleep(round % 3);
        cr_assert_eq(pact_op_cancel(loop, op), 0);
        run_until(loop, &d.calls, 3000);
        pact_loop_run_once(loop, 0);
        cr_assert_eq(d.calls, 1);
        if (d.result == -ECANCELED) {
            /* In time after all: the bytes are still in the pipe. */
            in_time++;
            rec again = {0};
            cr_assert_gt(pact_read(loop, server, buf, sizeof buf, -1, record,
                                   &again), 0);
            run_until(loop, &again.calls, 3000);
            cr_assert_eq(again.result, (int64_t)sizeof msg);
        } else {
            cr_assert_eq(d.result, (int64_t)sizeof msg, "%s",
                         pact_strerror((int)d.result));
            too_late++;
        }
        cr_assert_eq(memcmp(buf, msg, sizeof msg), 0);
    }
    cr_assert_gt(too_late, 0, "the too-late case was never reached");
    cr_log_info("%d cancelled in time, %d too late with their data", in_time,
                too_late);
    CloseHandle(client);
    CloseHandle(server);
    test_loop_free(loop);
}

typedef struct trickle {
    HANDLE h;
    uint64_t total;
} trickle;

static DWORD WINAPI trickle_writer(LPVOID arg)
{
    trickle *t = arg;
    uint8_t chunk[997];
    for (uint64_t pos = 0; pos < t->total; pos += sizeof chunk) {
        DWORD n = t->total - pos < sizeof chunk ? (DWORD)(t->total - pos)
                                                : (DWORD)sizeof chunk;
        test_fill_pattern(chunk, n, pos);
        write_handle(t->h, chunk, n);
        if ((pos / sizeof chunk) % 8 == 0)
            Sleep(1);
    }
    return 0;
}

typedef struct canceller {
    pact_loop *loop;
    HANDLE h;
    uint8_t buf[4096];
    uint64_t received;
    pact_op op;
    int pattern_ok, reads, cancelled, late, eof;
} canceller;

static void cancel_read_done(pact_loop *loop, const pact_completion *c,
                             void *user);

/* On the next iteration, once the read is with the system. */
static void cancel_soon(pact_loop *loop, void *user)
{
    canceller *k = user;
    int r = pact_op_cancel(loop, k->op);
    cr_assert(r == 0 || r == -EALREADY || r == -ENOENT, "%d", r);
}

static void start_cancelled_read(canceller *k)
{
    pact_op op = pact_read(k->loop, k->h, k->buf, sizeof k->buf, -1,
                           cancel_read_done, k);
    cr_assert_gt(op, 0);
    k->reads++;
    k->op = op;
    /* Every other read is cancelled, in flight, racing bytes that arrive
     * from the writer thread meanwhile. */
    if (k->reads % 2 == 0)
        cr_assert_geq(pact_call_soon(k->loop, cancel_soon, k), 0);
}

static void cancel_read_done(pact_loop *loop, const pact_completion *c,
                             void *user)
{
    (void)loop;
    canceller *k = user;
    if (c->result == -ECANCELED) {
        k->cancelled++;
    } else if (c->result > 0) {
        for (int64_t i = 0; i < c->result; i++)
            if (k->buf[i] != test_pattern_byte(k->received + (uint64_t)i))
                k->pattern_ok = 0;
        k->received += (uint64_t)c->result;
        if (k->reads % 2 == 0)
            k->late++;
    } else {
        k->eof = 1;
        cr_assert_eq(c->result, 0, "%s", pact_strerror((int)c->result));
        return;
    }
    start_cancelled_read(k);
}

/* Reads cancelled while a thread writes: whatever each cancel meets, the
 * bytes arrive complete and in order, then EOF. */
Test(named_pipe, reads_cancelled_while_bytes_arrive_lose_nothing, .timeout = 60)
{
    pact_loop *loop = test_loop_new();
    HANDLE server, client;
    server_and_raw_client(loop, &server, &client);
    trickle t = {.h = client, .total = 512 * 1024};
    canceller k = {.loop = loop, .h = server, .pattern_ok = 1};
    start_cancelled_read(&k);
    HANDLE th = CreateThread(NULL, 0, trickle_writer, &t, 0, NULL);
    cr_assert_not_null(th);
    uint64_t end = pact_now() + 40000 * MS;
    while (k.received < t.total && pact_now() < end)
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    WaitForSingleObject(th, INFINITE);
    CloseHandle(th);
    CloseHandle(client);
    run_until(loop, &k.eof, 5000);
    cr_assert_eq(k.received, t.total);
    cr_assert(k.pattern_ok, "a byte was lost, doubled or reordered");
    cr_log_info("%d reads: %d cancelled in time, %d too late with data",
                k.reads, k.cancelled, k.late);
    cr_assert_gt(k.cancelled, 0);
    CloseHandle(server);
    test_loop_free(loop);
}

/* Loop close with a read on each end and a write bigger than the pipe's
 * buffer in flight: each callback runs once (cancelled, or with what was
 * done), and nothing is left. */
Test(named_pipe, loop_close_with_pipe_ops_in_flight_calls_each_once)
{
    pact_loop *loop = test_loop_new();
    HANDLE server, client;
    server_and_raw_client(loop, &server, &client);
    static char big[1024 * 1024];
    char b1[64], b2[64];
    rec w = {0}, r1 = {0}, r2 = {0};
    cr_assert_gt(pact_write(loop, server, big, sizeof big, -1, record, &w), 0);
    cr_assert_gt(pact_read(loop, server, b1, sizeof b1, -1, record, &r1), 0);
    cr_assert_gt(pact_read(loop, client, b2, sizeof b2, -1, record, &r2), 0);
    for (int i = 0; i < 3; i++)
        pact_loop_run_once(loop, 1 * (int64_t)MS);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(w.calls, 1);
    cr_assert_eq(r1.calls, 1);
    cr_assert_eq(r2.calls, 1);
    cr_assert_eq(r1.result, -ECANCELED);
    /* The client read may have taken the first bytes of the write. */
    cr_assert(r2.result == -ECANCELED || r2.result > 0, "%lld",
              (long long)r2.result);
    cr_assert(w.result == -ECANCELED || (w.result >= 0 && w.result < (int64_t)sizeof big),
              "%lld", (long long)w.result);
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    cr_assert_eq(st.ops_live, 0);
    cr_assert_eq(st.ops_started, st.ops_completed);
    pact_loop_free(loop);
    CloseHandle(client);
    CloseHandle(server);
}

/* The busy back-off cancelled at every point of its schedule (before the
 * first retry, between retries, as a retry connects) never leaves a client
 * handle open. Wine cannot count a process's handles, so the server side
 * tells: every instance the server accepted must read end of file once
 * the test has closed every handle its connects delivered — a leaked
 * client handle would keep one reading forever. */
typedef struct sweep {
    pact_loop *loop;
    pact_pipe_server *srv;
    int accepted, reads_done, read_errors, connects_done, connected,
        cancelled, other;
    char buf[64][8];
    HANDLE handles[64];
} sweep;

static void sweep_read_done(pact_loop *loop, const pact_completion *c,
                            void *user)
{
    (void)loop;
    sweep *s = user;
    s->reads_done++;
    if (c->result != 0)
        s->read_errors++;
}

static void sweep_accepted(pact_loop *loop, const pact_completion *c,
                           void *user)
{
    sweep *s = user;
    if (c->result < 0)
        return; /* the server closed */
    HANDLE h = as_handle(c->result);
    cr_assert_lt(s->accepted, 64);
    /* Read until EOF; the handle is closed after the test. */
    cr_assert_gt(pact_read(loop, h, s->buf[s->accepted], 8, -1,
                           sweep_read_done, s), 0);
    s->handles[s->accepted++] = h;
    cr_assert_gt(pact_pipe_server_accept(s->srv, sweep_accepted, s), 0);
}

static void sweep_connected(pact_loop *loop, const pact_completion *c,
                            void *user)
{
    (void)loop;
    sweep *s = user;
    s->connects_done++;
    if (c->result > 0) {
        s->connected++;
        CloseHandle(as_handle(c->result));
    } else if (c->result == -ECANCELED) {
        s->cancelled++;
    } else {
        s->other++;
    }
}

Test(named_pipe, the_back_off_cancelled_at_any_point_leaves_no_handle,
     .timeout = 60)
{
    pact_loop *loop = test_loop_new();
    const char *name = pipe_name();
    sweep s = {.loop = loop};
    cr_assert_eq(pact_pipe_server_open(loop, name, &s.srv), 0);
    cr_assert_gt(pact_pipe_server_accept(s.srv, sweep_accepted, &s), 0);
    int started = 0;
    for (int round = 0; round < 10; round++) {
        /* Five at once: four find the instance busy and back off. */
        pact_op ops[5];
        for (int i = 0; i < 5; i++) {
            ops[i] = pact_pipe_connect(loop, name, sweep_connected, &s);
            cr_assert_gt(ops[i], 0);
            started++;
        }
        /* Cancel one after 0, 1, 2, ... ms (0: before the loop ran). */
        uint64_t until = pact_now() + (uint64_t)round * MS;
        while (pact_now() < until)
            pact_loop_run_once(loop, 1 * (int64_t)MS);
        int r = pact_op_cancel(loop, ops[round % 5]);
        cr_assert(r == 0 || r == -EALREADY || r == -ENOENT, "%d", r);
        for (int i = 0; i < 5; i++)
            if (i != round % 5 && round % 2)
                pact_op_cancel(loop, ops[i]); /* and the rest, every other round */
    }
    uint64_t end = pact_now() + 10000 * MS;
    while ((s.connects_done < started || s.reads_done < s.accepted) &&
           pact_now() < end)
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    /* A little longer: a leaked client would be accepted now. */
    for (int i = 0; i < 20; i++)
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    cr_log_info("%d connects: %d connected, %d cancelled", started, s.connected,
                s.cancelled);
    cr_assert_eq(s.connects_done, started);
    cr_assert_eq(s.other, 0);
    cr_assert_eq(s.connected + s.cancelled, started);
    cr_assert_gt(s.cancelled, 0);
    cr_assert_eq(s.accepted, s.connected, "an instance was taken by a client "
                 "nobody was given");
    cr_assert_eq(s.reads_done, s.accepted, "a client handle is still open");
    cr_assert_eq(s.read_errors, 0);
    cr_assert_eq(pact_pipe_server_close(s.srv), 0);
    for (int i = 0; i < s.accepted; i++)
        CloseHandle(s.handles[i]);
    test_loop_free(loop);
}

/* ---- one-way pipe transports on a named pipe's ends ------------------------ */

typedef struct oneway {
    int made, lost, lost_err, eofs;
    size_t received;
    char data[64];
} oneway;

static void ow_made(pact_transport *t, void *user)
{
    (void)t;
    ((oneway *)user)->made++;
}

static void ow_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    oneway *o = user;
    if (o->received + len <= sizeof o->data)
        memcpy(o->data + o->received, data, len);
    o->received += len;
}

static int ow_eof(pact_transport *t, void *user)
{
    (void)t;
    ((oneway *)user)->eofs++;
    return 0;
}

static void ow_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    oneway *o = user;
    o->lost++;
    o->lost_err = err;
}

static const pact_protocol ow_proto = {
    .connection_made = ow_made,
    .data_received = ow_data,
    .eof_received = ow_eof,
    .connection_lost = ow_lost,
};

static void read_handle(HANDLE h, void *buf, DWORD len)
{
    OVERLAPPED ov = {0};
    ov.hEvent = CreateEventA(NULL, TRUE, FALSE, NULL);
    DWORD n = 0, got = 0;
    while (got < len) {
        if (!ReadFile(h, (char *)buf + got, len - got, NULL, &ov))
            cr_assert_eq(GetLastError(), ERROR_IO_PENDING);
        cr_assert(GetOverlappedResult(h, &ov, &n, TRUE));
        got += n;
    }
    CloseHandle(ov.hEvent);
}

/* A write pipe transport hears its reader leave without writing again
 * (its end is duplex: a read of its own ends at the reader's close), and
 * ends with connection_lost(-EPIPE), once. */
Test(named_pipe, a_write_pipe_transport_hears_its_reader_leave)
{
    pact_loop *loop = test_loop_new();
    HANDLE server, client;
    server_and_raw_client(loop, &server, &client);
    oneway o = {0};
    pact_transport *t = NULL;
    cr_assert_eq(pact_transport_open_pipe(loop, server, PACT_STREAM_WRITE_PIPE,
                                          &ow_proto, &o, &t), 0);
    run_until(loop, &o.made, 3000);
    cr_assert_not(pact_transport_is_reading(t));
    cr_assert_eq(pact_transport_write(t, "hello", 5), 0);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 1 * (int64_t)MS);
    char buf[5];
    read_handle(client, buf, sizeof buf);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    cr_assert_eq(o.lost, 0);
    CloseHandle(client);
    run_until(loop, &o.lost, 3000);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(loop, 1 * (int64_t)MS);
    cr_assert_eq(o.lost, 1);
    cr_assert_eq(o.lost_err, -EPIPE);
    test_loop_free(loop);
}

/* A read pipe transport on a named pipe's end: bytes in order, the
 * writer's close is EOF, then connection_lost(0); writing is refused. */
Test(named_pipe, a_read_pipe_transport_reads_to_eof)
{
    pact_loop *loop = test_loop_new();
    HANDLE server, client;
    server_and_raw_client(loop, &server, &client);
    oneway o = {0};
    pact_transport *t = NULL;
    cr_assert_eq(pact_transport_open_pipe(loop, server, PACT_STREAM_READ_PIPE,
                                          &ow_proto, &o, &t), 0);
    cr_assert_eq(pact_transport_write(t, "x", 1), -ENOTSUP);
    run_until(loop, &o.made, 3000);
    write_handle(client, "first ", 6);
    write_handle(client, "second", 6);
    uint64_t end = pact_now() + 3000 * MS;
    while (o.received < 12 && pact_now() < end)
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    cr_assert_eq(o.received, 12);
    cr_assert_eq(memcmp(o.data, "first second", 12), 0);
    CloseHandle(client);
    run_until(loop, &o.lost, 3000);
    cr_assert_eq(o.eofs, 1);
    cr_assert_eq(o.lost, 1);
    cr_assert_eq(o.lost_err, 0);
    test_loop_free(loop);
}
