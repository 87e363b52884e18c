/* SPDX-License-Identifier: MIT */
/* Fault injection (src/fault.h): each scenario runs with one fault armed at
 * call N of one site, for N = 1, 2, 3 ... until a run finishes without the
 * fault firing (the scenario makes fewer than N calls there). Every run
 * must end with the user told (an error in a callback or a return value)
 * or the work done correctly — and always: no byte lost or reordered
 * (what arrived is a prefix of what was sent, all of it on success), no
 * callback twice or out of order, no op left live, no stray completion,
 * no fd left open, no hang. */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <pact.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fault.h"
#include "helpers.h"
#include "kernel_features.h"

#define MAX_N 400

static uint8_t pat(size_t i) { return (uint8_t)((i * 7 + (i >> 8) * 13) ^ 0x5a); }

/* Creates the loop; with a fault at setup or allocation it may fail, and
 * then the error must be clear (negative, known). */
static pact_loop *fault_loop(int *err)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.debug = 0;
    const char *want = getenv("PACT_ENGINE");
    if (want && !strcmp(want, "uring"))
        o.engine = PACT_ENGINE_URING;
    if (want && !strcmp(want, "epoll"))
        o.engine = PACT_ENGINE_EPOLL;
    pact_loop *loop = NULL;
    *err = pact_loop_create(&loop, &o);
    if (*err) {
        cr_assert_lt(*err, 0);
        cr_assert_null(loop);
        return NULL;
    }
    return loop;
}

static void fault_loop_free(pact_loop *loop)
{
    pact_loop_stats st;
    pact_loop_get_stats(loop, &st);
    cr_assert_eq(st.stray_completions, 0);
    cr_assert_eq(pact_loop_close(loop), 0);
    pact_loop_get_stats(loop, &st);
    cr_assert_eq(st.ops_live, 0, "ops live after close: %llu",
                 (unsigned long long)st.ops_live);
    cr_assert_eq(st.ops_started, st.ops_completed);
    cr_assert_eq(st.stray_completions, 0);
    pact_loop_free(loop);
}

/* ---- scenario 1: echo over a pair of transports -------------------------- */

#define ECHO_BYTES (96 * 1024)

typedef struct side {
    pact_transport *t;
    int made, lost, lost_err, eofs, echo;
    size_t got;
    int bad; /* a byte out of place */
} side;

static void s_made(pact_transport *t, void *u)
{
    side *s = u;
    cr_assert(!s->made && !s->lost, "connection_made twice or late");
    s->made = 1;
    s->t = t;
}

static void s_data(pact_transport *t, const void *d, size_t n, void *u)
{
    side *s = u;
    cr_assert(s->made && !s->lost && !s->eofs, "data out of order");
    if (s->echo) {
        pact_transport_write(t, d, n);
        return;
    }
    const uint8_t *p = d;
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(s->got + i))
            s->bad = 1;
    s->got += n;
    if (s->got >= ECHO_BYTES)
        pact_transport_close(t);
}

static int s_eof(pact_transport *t, void *u)
{
    (void)t;
    side *s = u;
    cr_assert(s->made && !s->lost && !s->eofs, "eof out of order");
    s->eofs++;
    return 0;
}

static void s_lost(pact_transport *t, int err, void *u)
{
    (void)t;
    side *s = u;
    cr_assert(s->made && !s->lost, "connection_lost twice or before made");
    s->lost = 1;
    s->lost_err = err;
}

static const pact_protocol side_proto = {
    .connection_made = s_made,
    .data_received = s_data,
    .eof_received = s_eof,
    .connection_lost = s_lost,
};

/* Returns 1 if the echo completed, 0 if an error was reported. */
static int scenario_echo(void)
{
    int fds = count_open_fds();
    int err;
    pact_loop *loop = fault_loop(&err);
    if (!loop)
        return 0;
    int sv[2];
    make_socketpair(sv);
    side a = {0}, b = {.echo = 1};
    pact_transport *ta, *tb;
    int ea = pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &side_proto, &a, &ta);
    int eb = pact_transport_open(loop, sv[1], PACT_STREAM_SOCKET, &side_proto, &b, &tb);
    int ok = 1;
    if (ea || eb) {
        /* A clear error; the transport owns (and closed) its fd. */
        cr_assert(ea < 0 || eb < 0);
        ok = 0;
        if (!ea)
            pact_transport_abort(ta);
        if (!eb)
            pact_transport_abort(tb);
    } else {
        uint8_t buf[4096];
        for (size_t off = 0; off < ECHO_BYTES; off += sizeof buf) {
            for (size_t i = 0; i < sizeof buf; i++)
                buf[i] = pat(off + i);
            int w = pact_transport_write(ta, buf, sizeof buf);
            if (w != 0) {
                cr_assert_lt(w, 0);
                ok = 0;
                break;
            }
        }
        uint64_t end = pact_now() + 5000 * MS;
        while (!(a.lost && b.lost)) {
            cr_assert(pact_now() < end, "hang: a got %zu lost %d, b lost %d",
                      a.got, a.lost, b.lost);
            if (a.lost && !b.lost && !pact_transport_is_closing(tb))
                pact_transport_close(tb);
            pact_loop_run_once(loop, 10 * MS);
        }
        cr_assert(!a.bad, "a byte was lost or reordered");
        if (a.got < ECHO_BYTES || a.lost_err || b.lost_err) {
            ok = 0;
            cr_assert(a.lost_err || b.lost_err || a.eofs,
                      "the echo stopped at %zu bytes without an error", a.got);
        }
    }
    while (pact_loop_run_once(loop, 0) > 0)
        ;
    fault_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds, "fd leak");
    return ok;
}

/* ---- scenario 2: an accept loop keeps serving ---------------------------- */

typedef struct cl {
    int done, failed, lost, made;
    char got[8];
    size_t n;
} cl;

static void c_made(pact_transport *t, void *u)
{
    cl *c = u;
    c->made = 1;
    pact_transport_write(t, "ping", 4);
}

static void c_data(pact_transport *t, const void *d, size_t n, void *u)
{
    cl *c = u;
    if (c->n + n <= sizeof c->got)
        memcpy(c->got + c->n, d, n);
    c->n += n;
    if (c->n >= 4) {
        cr_assert_eq(memcmp(c->got, "ping", 4), 0, "echo corrupted");
        c->done = 1;
        pact_transport_close(t);
    }
}

static void c_lost(pact_transport *t, int err, void *u)
{
    (void)t;
    (void)err;
    cl *c = u;
    c->lost = 1;
    if (!c->done)
        c->failed = 1;
}

static const pact_protocol client_proto = {
    .connection_made = c_made, .data_received = c_data, .connection_lost = c_lost};

static void c_connected(pact_loop *loop, pact_transport *t, int err, void *u)
{
    (void)loop;
    cl *c = u;
    if (!t) {
        cr_assert_lt(err, 0);
        c->failed = c->lost = 1;
    }
}

static void e_data(pact_transport *t, const void *d, size_t n, void *u)
{
    (void)u;
    pact_transport_write(t, d, n);
}

static const pact_protocol echo_proto = {.data_received = e_data};

/* A factory that allocates each connection's user, as a real server's
 * does, and a protocol that frees it in connection_lost: once the factory
 * has returned it, the user must reach connection_lost whatever fails. */
static struct {
    int on;
    unsigned long given, made, freed;
} owned;

typedef struct owned_user {
    unsigned long magic;
    int made;
} owned_user;

static void o_made(pact_transport *t, void *u)
{
    (void)t;
    owned_user *o = u;
    cr_assert_eq(o->magic, 0xfeedUL);
    cr_assert(!o->made, "connection_made twice");
    o->made = 1;
    owned.made++;
}

static void o_lost(pact_transport *t, int err, void *u)
{
    (void)t;
    (void)err;
    owned_user *o = u;
    cr_assert_eq(o->magic, 0xfeedUL);
    cr_assert(o->made, "connection_lost without connection_made");
    o->magic = 0;
    free(o);
    owned.freed++;
}

static const pact_protocol owned_proto = {
    .connection_made = o_made, .data_received = e_data, .connection_lost = o_lost};

static int echo_factory(pact_server *s, void *fu, const pact_protocol **p, void **u)
{
    (void)s;
    (void)fu;
    if (owned.on) {
        owned_user *o = calloc(1, sizeof *o);
        cr_assert_not_null(o);
        o->magic = 0xfeedUL;
        owned.given++;
        *p = &owned_proto;
        *u = o;
        return 0;
    }
    *p = &echo_proto;
    *u = NULL;
    return 0;
}

static int scenario_accept(void)
{
    int fds = count_open_fds();
    int err;
    pact_loop *loop = fault_loop(&err);
    if (!loop)
        return 0;
    pact_server *srv;
    err = pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, echo_factory, NULL, &srv);
    int ok = 1;
    if (err) {
        cr_assert_lt(err, 0);
        fault_loop_free(loop);
        cr_assert_eq(count_open_fds(), fds);
        return 0;
    }
    uint16_t port = (uint16_t)pact_server_port(srv);
    /* Three clients, each retried after a failure: one fault may cost one
     * connection, never the listener. */
    for (int i = 0; i < 3; i++) {
        int tries = 0;
        for (;;) {
            cl c = {0};
            pact_op op = pact_connect_tcp(loop, "127.0.0.1", port, &client_proto, &c,
                                          c_connected, &c);
            if (op < 0) {
                ok = 0;
            } else {
                uint64_t end = pact_now() + 5000 * MS;
                while (!c.lost) {
                    cr_assert(pact_now() < end, "client %d hangs", i);
                    pact_loop_run_once(loop, 10 * MS);
                }
            }
            if (op >= 0 && c.done)
                break;
            ok = 0;
            cr_assert_lt(++tries, 5, "the server stopped serving");
        }
    }
    pact_server_close(srv);
    while (pact_loop_run_once(loop, 10 * MS) > 0)
        ;
    fault_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds, "fd leak");
    return ok;
}

/* Scenario 2 with a factory that allocates each connection's user: every
 * user the factory handed over reached connection_made and then
 * connection_lost, which freed it — also when the fault hit the transport
 * being made for the connection (then the factory is never asked). */
static int scenario_accept_owned(void)
{
    memset(&owned, 0, sizeof owned);
    owned.on = 1;
    int ok = scenario_accept();
    owned.on = 0;
    cr_assert_eq(owned.freed, owned.given,
                 "factory users leaked: %lu given, %lu freed in connection_lost",
                 owned.given, owned.freed);
    cr_assert_eq(owned.made, owned.given, "%lu given, %lu made", owned.given,
                 owned.made);
    return ok;
}

/* ---- scenario 3: send_all against a raw recv loop ----------------------- */

#define SA_BYTES (512 * 1024)

typedef struct sa {
    pact_loop *loop;
    int fd;
    uint8_t buf[8192];
    size_t got;
    int bad, rdone, sdone;
    int64_t rres, sres;
    size_t transferred;
    pact_op send_op;
} sa;

static void sa_recv(pact_loop *loop, const pact_completion *c, void *u);

static void sa_start_recv(sa *s)
{
    pact_op r = pact_recv(s->loop, s->fd, s->buf, sizeof s->buf, 0, sa_recv, s);
    if (r < 0) {
        s->rdone = 1;
        s->rres = r;
        if (!s->sdone && s->send_op > 0)
            pact_op_cancel(s->loop, s->send_op); /* nobody reads any more */
    }
}

static void sa_recv(pact_loop *loop, const pact_completion *c, void *u)
{
    (void)loop;
    sa *s = u;
    cr_assert(!s->rdone, "recv after the end");
    if (c->result <= 0) {
        s->rdone = 1;
        s->rres = c->result;
        if (!s->sdone)
            pact_op_cancel(s->loop, s->send_op); /* nobody reads any more */
        return;
    }
    for (int64_t i = 0; i < c->result; i++)
        if (s->buf[i] != pat(s->got + (size_t)i))
            s->bad = 1;
    s->got += (size_t)c->result;
    if (s->got >= SA_BYTES) {
        s->rdone = 1;
        return;
    }
    sa_start_recv(s);
}

static void sa_sent(pact_loop *loop, const pact_completion *c, void *u)
{
    (void)loop;
    sa *s = u;
    cr_assert(!s->sdone, "send_all completed twice");
    s->sdone = 1;
    s->sres = c->result;
    s->transferred = c->result >= 0 ? (size_t)c->result : c->transferred;
}

static int scenario_send_all(void)
{
    int fds = count_open_fds();
    int err;
    pact_loop *loop = fault_loop(&err);
    if (!loop)
        return 0;
    int sv[2];
    make_socketpair(sv);
    static uint8_t data[SA_BYTES];
    for (size_t i = 0; i < SA_BYTES; i++)
        data[i] = pat(i);
    sa *s = calloc(1, sizeof *s);
    s->loop = loop;
    s->fd = sv[1];
    int ok = 1;
    s->send_op = pact_send_all(loop, sv[0], data, SA_BYTES, 0, sa_sent, s);
    if (s->send_op < 0) {
        s->sdone = 1;
        s->sres = s->send_op;
        ok = 0;
    }
    sa_start_recv(s);
    uint64_t end = pact_now() + 5000 * MS;
    while (!(s->sdone && s->rdone)) {
        cr_assert(pact_now() < end, "hang: sent %d recv %d got %zu", s->sdone,
                  s->rdone, s->got);
        if (s->sdone && s->sres < 0 && !s->rdone && s->got >= s->transferred)
            shutdown(sv[0], SHUT_WR); /* the sender gave up: let recv see EOF */
        pact_loop_run_once(loop, 10 * MS);
    }
    cr_assert(!s->bad, "a byte was lost or reordered");
    if (s->sres >= 0)
        cr_assert_eq(s->sres, SA_BYTES, "send_all returned %lld", (long long)s->sres);
    if (s->sres < 0 || s->rres < 0 || s->got < SA_BYTES) {
        ok = 0;
        cr_assert(s->sres < 0 || s->rres < 0, "stopped without an error");
        cr_assert_leq(s->got, s->transferred, "received more than was sent");
    } else {
        cr_assert_eq(s->got, SA_BYTES);
    }
    close(sv[0]);
    close(sv[1]);
    free(s);
    fault_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds, "fd leak");
    return ok;
}

/* ---- the sweep ------------------------------------------------------------ */

/* Runs scenario with site failing at call N = 1, 2, ... until a run makes
 * fewer than N calls there. Returns the number of runs in which it fired. */
static int sweep(int (*scenario)(void), enum pact_fault_site site, int err,
                 const char *what)
{
    int fired_runs = 0, errors = 0;
    for (unsigned long n = 1; n <= MAX_N; n++) {
        pact_fault_arm(site, n, err);
        int ok = scenario();
        unsigned long fired = pact_fault_fired(site);
        pact_fault_arm(site, 0, 0);
        if (!fired) {
            cr_assert(ok, "%s: the run without a fault failed", what);
            cr_log_info("%s: %d runs with the fault, %d reported an error",
                        what, fired_runs, errors);
            return fired_runs;
        }
        fired_runs++;
        errors += !ok;
    }
    cr_log_info("%s: stopped after %d faulted runs", what, MAX_N);
    return fired_runs;
}

Test(faults, baseline) { cr_assert(scenario_echo() && scenario_accept() && scenario_send_all()); }

Test(faults, echo_op_error) { sweep(scenario_echo, PACT_FAULT_OP_ERROR, -ECONNRESET, "echo/ECONNRESET"); }
Test(faults, echo_op_epipe) { sweep(scenario_echo, PACT_FAULT_OP_ERROR, -EPIPE, "echo/EPIPE"); }
Test(faults, echo_short_io) { sweep(scenario_echo, PACT_FAULT_SHORT_IO, 1, "echo/short"); }
Test(faults, echo_enomem) { sweep(scenario_echo, PACT_FAULT_SLAB_ALLOC, 1, "echo/ENOMEM"); }
Test(faults, echo_no_sqe) { sweep(scenario_echo, PACT_FAULT_GET_SQE, 1, "echo/no SQE"); }
Test(faults, echo_setup) { sweep(scenario_echo, PACT_FAULT_URING_SETUP, -EPERM, "echo/setup EPERM"); }

/* ---- round trips: each side replies with write_received ------------------- */

/* On io_uring every reply is an SQE on its socket, so after a few rounds
 * both sockets have taken a fixed-file slot (epoll: none). */
typedef struct pinger {
    pact_transport *t;
    int made, lost, lost_err, rounds, bad, starts;
} pinger;

static void pg_made(pact_transport *t, void *u)
{
    pinger *p = u;
    p->made = 1;
    p->t = t;
    if (p->starts && pact_transport_write(t, "ping", 4) != 0)
        p->bad = 1;
}

static void pg_data(pact_transport *t, const void *d, size_t n, void *u)
{
    pinger *p = u;
    /* One message in flight at a time: it never arrives split or joined. */
    if (n != 4 || memcmp(d, "ping", 4) != 0)
        p->bad = 1;
    if (++p->rounds == p->starts) {
        pact_transport_close(t);
        return;
    }
    if (pact_transport_write_received(t, d, n) != 0)
        p->bad = 1;
}

static void pg_lost(pact_transport *t, int err, void *u)
{
    (void)t;
    pinger *p = u;
    p->lost = 1;
    p->lost_err = err;
}

static const pact_protocol pinger_proto = {
    .connection_made = pg_made,
    .data_received = pg_data,
    .connection_lost = pg_lost,
};

/* `rounds` round trips over a pair of transports, then a closes and b
 * closes at the EOF. Returns 1 once every reply came back intact and
 * both ends were lost without an error. */
static int scenario_round_trips(int rounds)
{
    int fds = count_open_fds();
    int err;
    pact_loop *loop = fault_loop(&err);
    cr_assert_not_null(loop);
    int sv[2];
    make_socketpair(sv);
    pinger a = {.starts = rounds}, b = {0};
    pact_transport *ta, *tb;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &pinger_proto, &a, &ta), 0);
    cr_assert_eq(pact_transport_open(loop, sv[1], PACT_STREAM_SOCKET, &pinger_proto, &b, &tb), 0);
    uint64_t end = pact_now() + 5000 * MS;
    while (!(a.lost && b.lost)) {
        cr_assert(pact_now() < end, "hang: %d rounds, a lost %d, b lost %d",
                  a.rounds, a.lost, b.lost);
        pact_loop_run_once(loop, 10 * MS);
    }
    cr_assert(!a.bad && !b.bad, "a reply was lost, split or refused");
    while (pact_loop_run_once(loop, 0) > 0)
        ;
    fault_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds, "fd leak");
    return a.rounds == rounds && b.rounds == rounds && !a.lost_err && !b.lost_err;
}

/* Whether a loop's sockets take fixed-file slots (io_uring on 6.13 or
 * later, the table neither masked nor sized 0): only then is the update
 * that fills one made, and its fault site reached. The tests that fail
 * that update assert it failed where it can: without, they pass as well
 * when no slot is taken at all, and test nothing of what they name. */
static int fixed_files_expected(void)
{
    int err;
    pact_loop *probe = fault_loop(&err);
    cr_assert_not_null(probe);
    int uring = pact_loop_engine(probe) == PACT_ENGINE_URING;
    fault_loop_free(probe);
    if (!uring)
        return 0;
    if (uring_feature_masked("fixedfiles"))
        return 0;
    const char *size = getenv("PACT_URING_FIXED_FILES");
    if (size && *size && strtoul(size, NULL, 10) == 0)
        return 0;
    return kernel_at_least(6, 13);
}

/* A socket's fixed-file slot that the kernel did not fill (io_uring):
 * the socket's ops go by fd from then on, and the round trips complete
 * with nothing lost, whichever of the two sockets' updates failed. */
Test(faults, round_trips_survive_a_fixed_file_slot_left_empty)
{
    int expected = fixed_files_expected();
    for (unsigned long n = 1; n <= 2; n++) {
        pact_fault_arm(PACT_FAULT_FIXED_FILE, n, 1);
        cr_assert(scenario_round_trips(8), "update %lu failed: the round trips did not complete", n);
        cr_assert_eq(pact_fault_fired(PACT_FAULT_FIXED_FILE), (unsigned long)expected,
                     "update %lu: failed %lu time(s)", n,
                     pact_fault_fired(PACT_FAULT_FIXED_FILE));
        pact_fault_arm(PACT_FAULT_FIXED_FILE, 0, 0);
    }
}

/* A socket that makes two SQEs — its multishot receive and one reply, a
 * short connection's whole life — never takes a fixed-file slot (whose
 * two updates would cost more than they save); one that goes on takes
 * one. Seen through the fault site every update that fills a slot
 * passes: armed to fail the first, it fires only where a slot is taken
 * (never on epoll, nor on kernels without the table). */
Test(faults, a_socket_of_one_request_takes_no_fixed_file_slot)
{
    pact_fault_arm(PACT_FAULT_FIXED_FILE, 1, 1);
    cr_assert(scenario_round_trips(8));
    unsigned long long_lived = pact_fault_fired(PACT_FAULT_FIXED_FILE);
    pact_fault_arm(PACT_FAULT_FIXED_FILE, 0, 0);
    cr_assert_eq(long_lived, (unsigned long)fixed_files_expected(),
                 "8 round trips: %lu update(s) failed", long_lived);

    pact_fault_arm(PACT_FAULT_FIXED_FILE, 1, 1);
    cr_assert(scenario_round_trips(1)); /* b: its receive and one reply */
    cr_assert_eq(pact_fault_fired(PACT_FAULT_FIXED_FILE), 0,
                 "a socket of one request filled a fixed-file slot");
    pact_fault_arm(PACT_FAULT_FIXED_FILE, 0, 0);
}

static void sent_one(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    *(int64_t *)user = c->result;
}

/* The SQE that takes a socket's fixed-file slot (its third: here the
 * ops started on a transport's fd right after the transport was made, and
 * its receive) names the slot in the same submission as the update that
 * was to fill it: with the update failed, it finds the slot empty
 * (-EBADF from the kernel) and is sent again by fd, unseen by its
 * caller. */
Test(faults, an_op_that_names_a_fixed_file_slot_left_empty_goes_by_fd)
{
    int fds = count_open_fds();
    int err;
    pact_fault_arm(PACT_FAULT_FIXED_FILE, 1, 1);
    pact_loop *loop = fault_loop(&err);
    cr_assert_not_null(loop);
    int sv[2];
    make_socketpair(sv);
    side b = {.echo = 1};
    pact_transport *tb;
    cr_assert_eq(pact_transport_open(loop, sv[1], PACT_STREAM_SOCKET, &side_proto,
                                     &b, &tb), 0);
    int64_t result[3] = {1, 1, 1};
    static const char *const msg[3] = {"o1", "o2", "o3"};
    for (int i = 0; i < 3; i++)
        cr_assert_gt(pact_send(loop, sv[1], msg[i], 2, 0, sent_one, &result[i]), 0);
    uint64_t end = pact_now() + 5000 * MS;
    while (result[2] == 1) {
        cr_assert(pact_now() < end, "the sends never completed");
        pact_loop_run_once(loop, 10 * MS);
    }
    for (int i = 0; i < 3; i++)
        cr_assert_eq(result[i], 2, "send %d: %s", i, pact_strerror((int)result[i]));
    char got[6];
    cr_assert_eq(recv(sv[0], got, 6, MSG_WAITALL), 6);
    cr_assert_eq(memcmp(got, "o1o2o3", 6), 0);
    /* The transport's own receive went by fd too, or named the slot
     * filled anew. */
    cr_assert_eq(send(sv[0], "ab", 2, 0), 2);
    while (recv(sv[0], got, 2, MSG_DONTWAIT) != 2) {
        cr_assert(pact_now() < end, "no echo");
        pact_loop_run_once(loop, 10 * MS);
    }
    cr_assert_eq(memcmp(got, "ab", 2), 0);
    cr_assert_eq(pact_fault_fired(PACT_FAULT_FIXED_FILE),
                 (unsigned long)fixed_files_expected(),
                 "the update that was to fill the slot did not fail");
    pact_fault_arm(PACT_FAULT_FIXED_FILE, 0, 0);
    cr_assert_eq(pact_transport_close(tb), 0);
    while (!b.lost)
        pact_loop_run_once(loop, 10 * MS);
    cr_assert_eq(b.lost_err, 0);
    cr_assert_eq(recv(sv[0], got, 1, MSG_DONTWAIT), 0, "no EOF after the close");
    close(sv[0]);
    fault_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds, "fd leak");
}

/* Whether loop closes its transports' sockets by a CLOSE in the ring
 * (io_uring on 5.17 or later, a loop that keeps its thread, file ops
 * not masked). */
static int close_on_ring_expected(pact_loop *loop)
{
    if (pact_loop_engine(loop) != PACT_ENGINE_URING)
        return 0;
    return !uring_feature_masked("files") && kernel_at_least(5, 17);
}

/* io_uring closes a transport's socket by a CLOSE that goes with the
 * loop's next submission. One the kernel took none of (-EAGAIN) leaves
 * it in the ring, behind liburing's own head: the loop freed right after
 * must still close that socket, once (the scan of the CLOSEs left in the
 * ring starts at the kernel's head). Elsewhere the fault site is never
 * reached and the socket is closed at once. (The loop's close submits
 * the CLOSE again here: the scan misses it only when the last
 * submission before the ring goes is the one cut short, which this
 * fault cannot arrange.) */
Test(faults, a_socket_close_left_in_the_ring_by_a_refused_submission_is_closed)
{
    int fds = count_open_fds();
    int err;
    pact_loop *loop = fault_loop(&err);
    cr_assert_not_null(loop);
    int sv[2];
    make_socketpair(sv);
    side a = {0};
    pact_transport *ta;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &side_proto,
                                     &a, &ta), 0);
    for (int i = 0; i < 3; i++)
        pact_loop_run_once(loop, 0);
    cr_assert_eq(a.made, 1);
    pact_fault_arm(PACT_FAULT_SUBMIT, 1, -EAGAIN);
    cr_assert_eq(pact_transport_close(ta), 0);
    uint64_t end = pact_now() + 5000 * MS;
    while (!a.lost) {
        cr_assert(pact_now() < end, "the transport was not lost");
        pact_loop_run_once(loop, 10 * MS);
    }
    unsigned long refused = pact_fault_fired(PACT_FAULT_SUBMIT);
    pact_fault_arm(PACT_FAULT_SUBMIT, 0, 0);
    if (close_on_ring_expected(loop)) {
        cr_assert_eq(refused, 1, "the submission with the CLOSE was not refused");
        errno = 0;
        cr_assert_geq(fcntl(sv[0], F_GETFD), 0, "the refused CLOSE ran");
    }
    fault_loop_free(loop);
    errno = 0;
    cr_assert_eq(fcntl(sv[0], F_GETFD), -1, "fd %d still open (%lu submission(s) "
                 "refused)", sv[0], refused);
    cr_assert_eq(errno, EBADF);
    char ch;
    cr_assert_eq(recv(sv[1], &ch, 1, MSG_DONTWAIT), 0, "the peer saw no close");
    close(sv[1]);
    cr_assert_eq(count_open_fds(), fds, "fd leak");
}

Test(faults, accept_emfile) { sweep(scenario_accept, PACT_FAULT_ACCEPT, -EMFILE, "accept/EMFILE"); }
Test(faults, accept_op_error) { sweep(scenario_accept, PACT_FAULT_OP_ERROR, -ECONNRESET, "accept/ECONNRESET"); }
Test(faults, accept_enomem) { sweep(scenario_accept, PACT_FAULT_SLAB_ALLOC, 1, "accept/ENOMEM"); }
Test(faults, accept_factory_user_reaches_connection_lost_when_memory_runs_out)
{
    sweep(scenario_accept_owned, PACT_FAULT_SLAB_ALLOC, 1, "accept owned/ENOMEM");
}
Test(faults, accept_factory_user_reaches_connection_lost_without_sqes)
{
    sweep(scenario_accept_owned, PACT_FAULT_GET_SQE, 1, "accept owned/no SQE");
}
Test(faults, accept_no_sqe) { sweep(scenario_accept, PACT_FAULT_GET_SQE, 1, "accept/no SQE"); }

Test(faults, send_all_op_error) { sweep(scenario_send_all, PACT_FAULT_OP_ERROR, -EPIPE, "send_all/EPIPE"); }
Test(faults, send_all_short_io) { sweep(scenario_send_all, PACT_FAULT_SHORT_IO, 1, "send_all/short"); }
Test(faults, send_all_enomem) { sweep(scenario_send_all, PACT_FAULT_SLAB_ALLOC, 1, "send_all/ENOMEM"); }
Test(faults, send_all_no_sqe) { sweep(scenario_send_all, PACT_FAULT_GET_SQE, 1, "send_all/no SQE"); }

/* ---- a final close that cannot be scheduled -------------------------------- */

/* A datagram endpoint closed from inside datagram_received while the loop
 * cannot allocate the callback that would run its final close: the
 * final close must still not run nested inside datagram_received (where
 * the endpoint's own code still uses it afterwards), and connection_lost
 * comes once, after datagram_received has returned. */
typedef struct nested_close {
    int in_received, lost, lost_inside, received;
} nested_close;

static void nc_received(pact_datagram *ep, const void *data, size_t len,
                        const struct sockaddr *addr, socklen_t addrlen, void *user)
{
    (void)data;
    (void)len;
    (void)addr;
    (void)addrlen;
    nested_close *n = user;
    n->received++;
    n->in_received = 1;
    pact_fault_arm(PACT_FAULT_SLAB_ALLOC, 1, 1); /* the next callback: -ENOMEM */
    pact_datagram_close(ep);
    pact_fault_arm(PACT_FAULT_SLAB_ALLOC, 0, 0);
    n->in_received = 0;
}

static void nc_lost(pact_datagram *ep, int err, void *user)
{
    (void)ep;
    (void)err;
    nested_close *n = user;
    n->lost++;
    n->lost_inside += n->in_received;
}

static const pact_datagram_protocol nc_proto = {
    .datagram_received = nc_received,
    .connection_lost = nc_lost,
};

Test(faults, datagram_closed_in_its_callback_when_no_callback_can_be_scheduled)
{
    int err;
    pact_loop *loop = fault_loop(&err);
    cr_assert_not_null(loop);
    nested_close n = {0};
    pact_datagram *ep;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL, &nc_proto, &n,
                                        &ep), 0);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    cr_assert_eq(pact_datagram_sockname(ep, &ss, &sl), 0);
    for (int i = 0; i < 3; i++)
        pact_loop_run_once(loop, 0); /* made, receiving */
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(sendto(s, "x", 1, 0, (struct sockaddr *)&ss, sl), 1);
    uint64_t end = pact_now() + 5000 * MS;
    while (!n.lost && pact_now() < end)
        pact_loop_run_once(loop, 10 * (int64_t)MS);
    close(s);
    cr_assert_eq(n.received, 1);
    cr_assert_eq(n.lost, 1);
    cr_assert_eq(n.lost_inside, 0, "connection_lost ran inside datagram_received");
    fault_loop_free(loop);
}

/* A silent send that names a fixed-file slot the kernel did not fill.
 * Silent sends (io_uring, a reply joined to the next submission that
 * asks for no completion when it sends everything) are op sends; on a
 * loop that keeps its thread a stream sends through its send slot, which
 * names a fixed-file slot only once the kernel confirmed the fill, and
 * falls back to an op send only when the slot's send finds no SQE. So: a
 * transport that has made the two SQEs a socket makes by fd (its receive
 * and one reply) is written to from a data callback while no SQE is to
 * be had: the write's op send is its third SQE, fills its slot (the fill
 * fails in the kernel) and is silent and names the slot, in the
 * submission right behind the failed fill. The kernel refuses it
 * (-EBADF, which posts a completion although it asked for none), it is
 * sent again by fd, and the bytes arrive once. On epoll the same
 * scenario is a plain write. */
typedef struct {
    int sv[2];
    side y;
    pact_transport *ty;
    int wrote;
} late_writer;

static void write_in_callback(pact_transport *t, const void *d, size_t n, void *u)
{
    (void)d;
    (void)n;
    late_writer *l = u;
    if (l->wrote++)
        return;
    pact_fault_arm(PACT_FAULT_FIXED_FILE, 1, 1);
    pact_fault_arm(PACT_FAULT_GET_SQE, 1, 1);
    cr_assert_eq(pact_transport_write(l->ty, "silent", 6), 0);
    if (pact_loop_engine(pact_transport_loop(t)) == PACT_ENGINE_URING)
        cr_assert_eq(pact_fault_fired(PACT_FAULT_GET_SQE), 1,
                     "the slot's send found an SQE");
    pact_fault_arm(PACT_FAULT_GET_SQE, 0, 0);
}

Test(faults, a_silent_send_naming_a_fixed_file_slot_left_empty_goes_by_fd)
{
    int fds = count_open_fds();
    int err;
    pact_loop *loop = fault_loop(&err);
    cr_assert_not_null(loop);
    late_writer l = {.y = {.echo = 1}};
    make_socketpair(l.sv);
    cr_assert_eq(pact_transport_open(loop, l.sv[1], PACT_STREAM_SOCKET, &side_proto,
                                     &l.y, &l.ty), 0);
    int xv[2];
    make_socketpair(xv);
    static const pact_protocol x_proto = {.data_received = write_in_callback};
    pact_transport *tx;
    cr_assert_eq(pact_transport_open(loop, xv[1], PACT_STREAM_SOCKET, &x_proto,
                                     &l, &tx), 0);
    /* y's receive and its reply: two SQEs by fd. */
    cr_assert_eq(send(l.sv[0], "hi", 2, 0), 2);
    uint64_t end = pact_now() + 5000 * MS;
    char got[8];
    while (recv(l.sv[0], got, 2, MSG_DONTWAIT) != 2) {
        cr_assert(pact_now() < end, "no echo");
        pact_loop_run_once(loop, 10 * MS);
    }
    cr_assert_eq(memcmp(got, "hi", 2), 0);
    cr_assert_eq(send(xv[0], "go", 2, 0), 2);
    size_t have = 0;
    while (have < 6) {
        cr_assert(pact_now() < end, "the write never arrived (%zu bytes)", have);
        pact_loop_run_once(loop, 10 * MS);
        ssize_t r = recv(l.sv[0], got + have, sizeof got - have, MSG_DONTWAIT);
        if (r > 0)
            have += (size_t)r;
    }
    cr_assert_eq(have, 6);
    cr_assert_eq(memcmp(got, "silent", 6), 0);
    cr_assert_eq(pact_fault_fired(PACT_FAULT_FIXED_FILE),
                 (unsigned long)fixed_files_expected(),
                 "the update that was to fill the slot did not fail");
    pact_fault_arm(PACT_FAULT_FIXED_FILE, 0, 0);
    cr_assert_eq(pact_transport_close(l.ty), 0);
    cr_assert_eq(pact_transport_close(tx), 0);
    while (!l.y.lost)
        pact_loop_run_once(loop, 10 * MS);
    cr_assert_eq(l.y.lost_err, 0);
    cr_assert_eq(recv(l.sv[0], got, 1, MSG_DONTWAIT), 0, "no EOF after the close");
    for (int i = 0; i < 10; i++)
        pact_loop_run_once(loop, 1 * MS);
    close(l.sv[0]);
    close(xv[0]);
    fault_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds, "fd leak");
}

/* ---- a loop close whose resources outlive its wait -------------------------- */

/* pact_loop_close force-closes what is open and runs the loop until all
 * of it is gone, for at most 10 s; a resource that outlives that (an op
 * the kernel does not give back) is left behind and the close goes on.
 * What the endpoints still have queued in their own ready nodes then —
 * connection_made, or their final close — runs inside the close
 * (pact__handles_drop_all), a path nothing else reaches: within the
 * 10 s the loop runs every node it finds. The fault ends that wait at
 * once, so what was queued when pact_loop_close was called is still
 * queued there. Each endpoint must still get connection_made first, then
 * connection_lost once (docs/contract.md), with no op live and no fd open
 * after the close. */
typedef struct dg_side {
    int made, lost;
} dg_side;

static void dg_made(pact_datagram *ep, void *user)
{
    (void)ep;
    dg_side *d = user;
    cr_assert(!d->made && !d->lost, "connection_made twice or late");
    d->made = 1;
}

static void dg_lost(pact_datagram *ep, int err, void *user)
{
    (void)ep;
    (void)err;
    dg_side *d = user;
    cr_assert(d->made && !d->lost, "connection_lost twice or before made");
    d->lost = 1;
}

static const pact_datagram_protocol dg_side_proto = {
    .connection_made = dg_made,
    .connection_lost = dg_lost,
};

/* Closes the loop with its wait for the resources ended at once. */
static void close_past_the_deadline(pact_loop *loop)
{
    pact_fault_arm(PACT_FAULT_CLOSE_DEADLINE, 1, 1);
    fault_loop_free(loop);
    unsigned long fired = pact_fault_fired(PACT_FAULT_CLOSE_DEADLINE);
    pact_fault_arm(PACT_FAULT_CLOSE_DEADLINE, 0, 0);
    cr_assert_eq(fired, 1, "the close did not wait for open resources");
}

/* Never run: two transports' and a datagram endpoint's connection_made
 * are queued when the loop closes. */
Test(faults, a_close_past_its_deadline_runs_a_queued_connection_made_then_lost_once)
{
    int fds = count_open_fds();
    int err;
    pact_loop *loop = fault_loop(&err);
    cr_assert_not_null(loop);
    int sv[2][2];
    side s[2] = {{0}, {0}};
    for (int i = 0; i < 2; i++) {
        make_socketpair(sv[i]);
        pact_transport *t;
        cr_assert_eq(pact_transport_open(loop, sv[i][0], PACT_STREAM_SOCKET, &side_proto,
                                         &s[i], &t), 0);
    }
    dg_side d = {0};
    pact_datagram *ep;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, NULL,
                                        &dg_side_proto, &d, &ep), 0);
    close_past_the_deadline(loop);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(s[i].made, 1, "transport %d: no connection_made", i);
        cr_assert_eq(s[i].lost, 1, "transport %d: no connection_lost", i);
        char ch;
        cr_assert_eq(recv(sv[i][1], &ch, 1, MSG_DONTWAIT), 0, "transport %d: "
                     "the peer saw no close", i);
        close(sv[i][1]);
    }
    cr_assert_eq(d.made, 1, "datagram endpoint: no connection_made");
    cr_assert_eq(d.lost, 1, "datagram endpoint: no connection_lost");
    cr_assert_eq(count_open_fds(), fds, "fd leak");
}

static void made_then_close(pact_transport *t, void *u)
{
    s_made(t, u);
    cr_assert_eq(pact_transport_close(t), 0);
}

static void made_then_pause(pact_transport *t, void *u)
{
    s_made(t, u);
    pact_transport_pause_reading(t);
}

/* One transport closed itself inside connection_made, the other was
 * closed after it while paused (nothing in flight): both final closes
 * wait in their nodes for the next iteration when the loop closes. */
Test(faults, a_close_past_its_deadline_runs_a_queued_final_close_once)
{
    int fds = count_open_fds();
    int err;
    pact_loop *loop = fault_loop(&err);
    cr_assert_not_null(loop);
    static const pact_protocol closing = {.connection_made = made_then_close,
                                          .connection_lost = s_lost};
    static const pact_protocol pausing = {.connection_made = made_then_pause,
                                          .connection_lost = s_lost};
    int sv[2][2];
    side s[2] = {{0}, {0}};
    pact_transport *t[2];
    for (int i = 0; i < 2; i++) {
        make_socketpair(sv[i]);
        cr_assert_eq(pact_transport_open(loop, sv[i][0], PACT_STREAM_SOCKET,
                                         i ? &pausing : &closing, &s[i], &t[i]), 0);
    }
    cr_assert_geq(pact_loop_run_once(loop, 0), 0);
    cr_assert_eq(s[0].made + s[1].made, 2);
    cr_assert_eq(s[0].lost, 0, "the final close ran inside connection_made's iteration");
    cr_assert_eq(pact_transport_close(t[1]), 0);
    cr_assert_eq(s[1].lost, 0, "connection_lost from inside close");
    close_past_the_deadline(loop);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(s[i].lost, 1, "transport %d: no connection_lost", i);
        close(sv[i][1]);
    }
    cr_assert_eq(count_open_fds(), fds, "fd leak");
}

/* ---- SQEs a watch's own callback spends ------------------------------------ */

/* In this build every SQE the io_uring engine takes passes get_sqes' slow
 * path (PACT_FAULTS_BUILT_IN), so pact_fault_calls(PACT_FAULT_GET_SQE)
 * counts SQEs while the site is armed (here for a call it never
 * reaches). A watch cancelled, or given new events, from inside its
 * own callback needs none: the registration that callback reports has
 * fired, and the engine arms it again after the report with the events
 * of that moment, if any (engine_uring.c, "readiness watchers";
 * asyncio's sock_recv removes its reader there). A cancel from outside a
 * callback needs none either: the kernel holds nothing of a watcher. The
 * wait on the watchers' epoll set takes one, which shows the count sees
 * SQEs. epoll takes none at all. */
typedef struct own_watch {
    pact_op op;
    int calls, finals;
    int64_t final_result;
    unsigned last_events;
    unsigned new_events;        /* 0: cancels itself in its first callback */
    int call_result;            /* of that cancel or pact_op_set_events */
    unsigned long sqes_in_call; /* SQEs it took */
} own_watch;

static void own_watch_cb(pact_loop *loop, const pact_completion *c, void *user)
{
    own_watch *w = user;
    if (!c->more) {
        w->finals++;
        w->final_result = c->result;
        return;
    }
    w->calls++;
    w->last_events = (unsigned)c->result;
    if (w->calls != 1)
        return;
    unsigned long before = pact_fault_calls(PACT_FAULT_GET_SQE);
    w->call_result = w->new_events ? pact_op_set_events(loop, w->op, w->new_events)
                                   : pact_op_cancel(loop, w->op);
    w->sqes_in_call = pact_fault_calls(PACT_FAULT_GET_SQE) - before;
}

static void spin_briefly(pact_loop *loop, int n)
{
    for (int i = 0; i < n; i++)
        cr_assert_geq(pact_loop_run_once(loop, 5 * 1000 * 1000), 0);
}

Test(faults, a_watch_cancelled_or_changed_in_its_own_callback_takes_no_sqe)
{
    int err;
    pact_loop *loop = fault_loop(&err);
    cr_assert_not_null(loop, "loop: %s", pact_strerror(err));
    int uring = pact_loop_engine(loop) == PACT_ENGINE_URING;
    pact_fault_arm(PACT_FAULT_GET_SQE, ULONG_MAX, -ENOMEM); /* counts only */
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    cr_assert_eq(write(sv[1], "data", 4), 4);

    /* Cancelled inside its first callback, the data still there: the
     * final completion once, nothing more delivered, no SQE. */
    own_watch a = {0};
    spin_briefly(loop, 1); /* the loop's own SQEs of its first run */
    unsigned long at_start = pact_fault_calls(PACT_FAULT_GET_SQE);
    a.op = pact_watch(loop, sv[0], POLLIN, own_watch_cb, &a);
    cr_assert_gt(a.op, 0, "pact_watch: %s", pact_strerror((int)a.op));
    spin_briefly(loop, 5);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(a.call_result, 0);
    cr_assert_eq(a.sqes_in_call, 0, "the cancel took %lu SQEs", a.sqes_in_call);
    cr_assert_eq(pact_fault_calls(PACT_FAULT_GET_SQE) - at_start, uring ? 1u : 0u,
                 "the watch took %lu SQEs from start to end, the wait's only",
                 pact_fault_calls(PACT_FAULT_GET_SQE) - at_start);
    cr_assert_eq(a.finals, 1);
    cr_assert_eq(a.final_result, -ECANCELED);
    char buf[8];
    cr_assert_eq(read(sv[0], buf, sizeof buf), 4, "the data stayed in the socket");

    /* A writer that turns itself into a reader inside its first
     * callback: no SQE for the change, then only readability. */
    own_watch b = {0};
    b.new_events = POLLIN;
    b.op = pact_watch(loop, sv[0], POLLOUT, own_watch_cb, &b);
    cr_assert_gt(b.op, 0, "pact_watch: %s", pact_strerror((int)b.op));
    spin_briefly(loop, 3);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(b.call_result, 0);
    cr_assert_eq(b.sqes_in_call, 0, "the change took %lu SQEs", b.sqes_in_call);
    cr_assert_eq(write(sv[1], "r", 1), 1);
    spin_briefly(loop, 1);
    cr_assert_eq(b.calls, 2, "%d calls", b.calls);
    cr_assert_eq(b.last_events, POLLIN);

    /* The same watch cancelled from outside its callback. */
    unsigned long before = pact_fault_calls(PACT_FAULT_GET_SQE);
    cr_assert_eq(pact_op_cancel(loop, b.op), 0);
    cr_assert_eq(pact_fault_calls(PACT_FAULT_GET_SQE) - before, 0,
                 "a cancel from outside took an SQE");
    spin_briefly(loop, 2);
    cr_assert_eq(b.finals, 1);
    cr_assert_eq(b.final_result, -ECANCELED);
    if (!uring)
        cr_assert_eq(pact_fault_calls(PACT_FAULT_GET_SQE), 0, "epoll has no SQEs");
    cr_assert_eq(pact_fault_fired(PACT_FAULT_GET_SQE), 0);
    pact_fault_arm(PACT_FAULT_GET_SQE, 0, 0);
    close(sv[0]);
    close(sv[1]);
    fault_loop_free(loop);
}

/* ---- a new connection's first receive waits for readiness ------------------ */

/* On io_uring the receive connection_made starts waits for readiness
 * before it first tries (IORING_RECVSEND_POLL_FIRST, src/stream.c
 * start_reading_as): a fresh connection's peer has rarely written yet,
 * and a try that finds nothing costs the kernel a socket receive. Every
 * receive armed later tries at once, such as the one resume_reading
 * starts after a pause. Seen through the fault build's count of the
 * receive SQEs that carry the flag (the site armed for a call it never
 * reaches). Only a multishot receive carries it: poll mode (a readiness
 * poll) and epoll wait for readiness anyway. */
#define PF_CONNS 4

typedef struct pf_conn {
    pact_transport *t;
    int made, lost;
} pf_conn;

typedef struct pf_server {
    pf_conn conns[PF_CONNS];
    int n;
} pf_server;

static void pf_made(pact_transport *t, void *u)
{
    pf_conn *c = u;
    cr_assert(!c->made, "connection_made twice");
    c->made = 1;
    c->t = t;
}

static void pf_lost(pact_transport *t, int err, void *u)
{
    (void)t;
    (void)err;
    pf_conn *c = u;
    cr_assert(c->made && !c->lost, "connection_lost twice or before made");
    c->lost = 1;
}

static const pact_protocol pf_proto = {
    .connection_made = pf_made, .data_received = e_data, .connection_lost = pf_lost};

static int pf_factory(pact_server *s, void *fu, const pact_protocol **p, void **u)
{
    (void)s;
    pf_server *ps = fu;
    cr_assert_lt(ps->n, PF_CONNS, "more connections than clients");
    *p = &pf_proto;
    *u = &ps->conns[ps->n++];
    return 0;
}

/* Sends one byte on fd and runs the loop until the server echoed it. */
static void pf_echo(pact_loop *loop, int fd, char byte)
{
    cr_assert_eq(send(fd, &byte, 1, 0), 1);
    uint64_t end = pact_now() + 5000 * MS;
    char got;
    while (recv(fd, &got, 1, MSG_DONTWAIT) != 1) {
        cr_assert(pact_now() < end, "no echo of '%c'", byte);
        pact_loop_run_once(loop, 10 * MS);
    }
    cr_assert_eq(got, byte);
}

Test(faults, a_new_connections_first_receive_waits_for_readiness_a_resumed_one_does_not)
{
    int fds = count_open_fds();
    int err;
    pact_loop *loop = fault_loop(&err);
    cr_assert_not_null(loop, "loop: %s", pact_strerror(err));
    unsigned long per_conn =
        strcmp(pact_loop_recv_multishot_mode(loop), "multishot") == 0 ? 1 : 0;
    pact_fault_arm(PACT_FAULT_RECV_POLL_FIRST, ULONG_MAX, 1); /* counts only */
    pf_server ps = {0};
    pact_server *srv;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, NULL, pf_factory, &ps, &srv), 0);
    int port = pact_server_port(srv);

    /* Three connections, each echoing once: one such receive each. */
    int cl[PF_CONNS];
    for (int i = 0; i < 3; i++)
        cl[i] = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
    for (int i = 0; i < 3; i++)
        pf_echo(loop, cl[i], (char)('a' + i));
    cr_assert_eq(ps.n, 3);
    cr_assert_eq(pact_fault_calls(PACT_FAULT_RECV_POLL_FIRST), 3 * per_conn,
                 "3 connections made %lu first receives that wait for readiness",
                 pact_fault_calls(PACT_FAULT_RECV_POLL_FIRST));

    /* Paused, its receive ends; resumed, a new one is armed (the bytes sent
     * meanwhile come back), which tries at once. */
    pact_transport *t = ps.conns[0].t;
    cr_assert_eq(pact_transport_pause_reading(t), 0);
    spin_briefly(loop, 3);
    cr_assert_eq(send(cl[0], "p", 1, 0), 1);
    spin_briefly(loop, 3);
    char got;
    cr_assert_eq(recv(cl[0], &got, 1, MSG_DONTWAIT), -1, "an echo while paused");
    cr_assert_eq(pact_transport_resume_reading(t), 0);
    uint64_t end = pact_now() + 5000 * MS;
    while (recv(cl[0], &got, 1, MSG_DONTWAIT) != 1) {
        cr_assert(pact_now() < end, "no echo after resume");
        pact_loop_run_once(loop, 10 * MS);
    }
    cr_assert_eq(got, 'p');
    pf_echo(loop, cl[0], 'q');
    cr_assert_eq(pact_fault_calls(PACT_FAULT_RECV_POLL_FIRST), 3 * per_conn,
                 "the receive armed after resume waited for readiness first");

    /* A fourth connection gets its own. */
    cl[3] = tcp_connect_blocking(AF_INET, "127.0.0.1", port);
    pf_echo(loop, cl[3], 'd');
    cr_assert_eq(ps.n, 4);
    cr_assert_eq(pact_fault_calls(PACT_FAULT_RECV_POLL_FIRST), 4 * per_conn);
    cr_assert_eq(pact_fault_fired(PACT_FAULT_RECV_POLL_FIRST), 0);
    pact_fault_arm(PACT_FAULT_RECV_POLL_FIRST, 0, 0);

    for (int i = 0; i < PF_CONNS; i++)
        close(cl[i]);
    end = pact_now() + 5000 * MS;
    for (int i = 0; i < PF_CONNS; i++)
        while (!ps.conns[i].lost) {
            cr_assert(pact_now() < end, "connection %d not lost", i);
            pact_loop_run_once(loop, 10 * MS);
        }
    pact_server_close(srv);
    while (pact_loop_run_once(loop, 10 * MS) > 0)
        ;
    fault_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds, "fd leak");
}

/* The same receive armed again in the kernel carries no wait either: one
 * whose first SQE ran the loop's two small buffers dry reads by readiness
 * (a poll), then, after small reads in a row, is a multishot receive
 * again (engine_uring.c, "a receive that streams"). */
Test(faults, a_first_receive_armed_again_does_not_wait_for_readiness_first)
{
    int fds = count_open_fds();
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.recv_buffer_count = 2;
    o.recv_buffer_size = 4096;
    const char *want = getenv("PACT_ENGINE");
    if (want && !strcmp(want, "epoll"))
        o.engine = PACT_ENGINE_EPOLL;
    pact_loop *loop = NULL;
    cr_assert_eq(pact_loop_create(&loop, &o), 0);
    unsigned long expected =
        strcmp(pact_loop_recv_multishot_mode(loop), "multishot") == 0 ? 1 : 0;
    pact_fault_arm(PACT_FAULT_RECV_POLL_FIRST, ULONG_MAX, 1); /* counts only */
    int sv[2];
    make_socketpair(sv);
    enum { FLOOD = 64 * 1024 };
    static char flood[FLOOD], back[FLOOD];
    memset(flood, 'f', sizeof flood);
    cr_assert_eq(send(sv[0], flood, sizeof flood, 0), (ssize_t)sizeof flood);
    pf_conn c = {0};
    pact_transport *t;
    cr_assert_eq(pact_transport_open(loop, sv[1], PACT_STREAM_SOCKET, &pf_proto, &c, &t), 0);
    size_t got = 0;
    uint64_t end = pact_now() + 5000 * MS;
    while (got < sizeof back) {
        cr_assert(pact_now() < end, "%zu of %d bytes echoed", got, FLOOD);
        pact_loop_run_once(loop, 10 * MS);
        ssize_t n = recv(sv[0], back + got, sizeof back - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
    }
    cr_assert_eq(memcmp(back, flood, sizeof back), 0);
    for (int i = 0; i < 12; i++)
        pf_echo(loop, sv[0], (char)('a' + i));
    cr_assert_eq(pact_fault_calls(PACT_FAULT_RECV_POLL_FIRST), expected,
                 "%lu receive SQEs waited for readiness first",
                 pact_fault_calls(PACT_FAULT_RECV_POLL_FIRST));
    pact_fault_arm(PACT_FAULT_RECV_POLL_FIRST, 0, 0);
    cr_assert_eq(pact_transport_close(t), 0);
    end = pact_now() + 5000 * MS;
    while (!c.lost) {
        cr_assert(pact_now() < end, "not lost");
        pact_loop_run_once(loop, 10 * MS);
    }
    close(sv[0]);
    fault_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds, "fd leak");
}

/* ---- an op whose try at submission says it would block -------------------- */

/* epoll only (the site is the epoll engine's try first): each op whose
 * try is refused waits for readiness instead, which must lose, repeat or
 * reorder nothing. */
Test(faults, send_all_try_would_block) { sweep(scenario_send_all, PACT_FAULT_EPOLL_TRY, -EAGAIN, "send_all/try EAGAIN"); }
Test(faults, accept_try_would_block) { sweep(scenario_accept, PACT_FAULT_EPOLL_TRY, -EAGAIN, "accept/try EAGAIN"); }

/* ---- system calls of a request-response exchange over ops ----------------- */

/* Two ends of a socketpair on one loop exchange a 64-byte message and its
 * echo, each with pact_send_all then pact_recv (bench/servers/pact_echo.c's
 * shape). pact_fault_calls(PACT_FAULT_EPOLL_TRY), armed for a call it never
 * reaches, counts the epoll engine's tries at submission. A receive
 * started right after its end's reply went out finds nothing yet: its
 * last receive was short, so the socket was drained, and it waits for
 * readiness without a recv that could only say EAGAIN (the re-arm that
 * follows checks readiness anyway). Only the sends try. */
#define PP_ROUNDS 200
#define PP_MSG 64

typedef struct pp_end {
    pact_loop *loop;
    int fd;
    int echo;      /* answers what it receives; else starts each round */
    int by_write;  /* sends with pact_write, not pact_send_all */
    int rounds;    /* messages received */
    int failed;
    uint8_t out[PP_MSG], in[1024];
} pp_end;

static void pp_recv(pact_loop *loop, const pact_completion *c, void *u);

static void pp_sent(pact_loop *loop, const pact_completion *c, void *u)
{
    pp_end *p = u;
    if (c->result != PP_MSG) {
        p->failed = 1;
        return;
    }
    if (pact_recv(loop, p->fd, p->in, sizeof p->in, 0, pp_recv, p) < 0)
        p->failed = 1;
}

/* Sends p->out (a 64-byte write to a socketpair goes whole). */
static void pp_out(pp_end *p)
{
    pact_op op = p->by_write ? pact_write(p->loop, p->fd, p->out, PP_MSG, -1, pp_sent, p)
                             : pact_send_all(p->loop, p->fd, p->out, PP_MSG, 0, pp_sent, p);
    if (op < 0)
        p->failed = 1;
}

static void pp_send(pp_end *p)
{
    for (size_t i = 0; i < PP_MSG; i++)
        p->out[i] = pat((size_t)p->rounds * PP_MSG + i);
    pp_out(p);
}

static void pp_recv(pact_loop *loop, const pact_completion *c, void *u)
{
    (void)loop;
    pp_end *p = u;
    if (c->result == -ECANCELED)
        return; /* the echoing end's last receive, at loop close */
    if (c->result != PP_MSG) {
        p->failed = 1;
        return;
    }
    for (size_t i = 0; i < PP_MSG; i++)
        if (p->in[i] != pat((size_t)p->rounds * PP_MSG + i))
            p->failed = 1;
    p->rounds++;
    if (p->echo) {
        memcpy(p->out, p->in, PP_MSG);
        pp_out(p);
    } else if (p->rounds < PP_ROUNDS) {
        pp_send(p);
    }
}

/* The exchange, its messages sent with pact_send_all or (by_write) with
 * pact_write: a write on the socket keeps what the receives learned of
 * it (engine_epoll.c, socket_kind). */
static void receives_after_the_reply_do_not_try_first(int by_write)
{
    int err;
    pact_loop *loop = fault_loop(&err);
    cr_assert_not_null(loop, "loop: %s", pact_strerror(err));
    int epoll = pact_loop_engine(loop) == PACT_ENGINE_EPOLL;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    pp_end a = {.loop = loop, .fd = sv[0], .by_write = by_write},
           b = {.loop = loop, .fd = sv[1], .echo = 1, .by_write = by_write};
    cr_assert_geq(pact_loop_run_once(loop, 0), 0); /* the loop's own ops */
    pact_fault_arm(PACT_FAULT_EPOLL_TRY, ULONG_MAX, -EAGAIN); /* counts only */
    cr_assert_gt(pact_recv(loop, b.fd, b.in, sizeof b.in, 0, pp_recv, &b), 0);
    pp_send(&a);
    uint64_t end = pact_now() + 5000 * MS;
    while (a.rounds < PP_ROUNDS && !a.failed && !b.failed) {
        cr_assert(pact_now() < end, "hang after %d rounds", a.rounds);
        cr_assert_geq(pact_loop_run_once(loop, 10 * MS), 0);
    }
    unsigned long tries = pact_fault_calls(PACT_FAULT_EPOLL_TRY);
    cr_assert_eq(pact_fault_fired(PACT_FAULT_EPOLL_TRY), 0);
    pact_fault_arm(PACT_FAULT_EPOLL_TRY, 0, 0);
    cr_assert(!a.failed && !b.failed, "a message was lost, cut or changed");
    cr_assert_eq(a.rounds, PP_ROUNDS);
    cr_assert_eq(b.rounds, PP_ROUNDS);
    /* Every send tries (a's messages and b's echoes), and each end's
     * first receive: nothing was known of its socket then. */
    unsigned long expected = 2ul * PP_ROUNDS + 2;
    if (epoll)
        cr_assert_eq(tries, expected, "%lu tries, %lu expected: %ld receives tried first",
                     tries, expected, (long)(tries - expected));
    else
        cr_assert_eq(tries, 0, "io_uring has no try at submission");
    fault_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

Test(faults, a_receive_started_after_its_reply_does_not_try_first_on_epoll)
{
    receives_after_the_reply_do_not_try_first(0);
}

Test(faults, a_receive_started_after_a_reply_by_pact_write_does_not_try_first_on_epoll)
{
    receives_after_the_reply_do_not_try_first(1);
}
