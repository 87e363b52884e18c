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
