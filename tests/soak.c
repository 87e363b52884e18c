/* SPDX-License-Identifier: MIT */
/* Soak: a TCP echo server under steady load for SOAK_SECONDS (default
 * 600), while short connections are opened and closed continuously,
 * subprocesses are spawned (some killed) and timers are armed and
 * cancelled. Every few seconds it samples the fd count and RSS; an EMFILE
 * storm (every descriptor up to the limit held) runs in the middle: the
 * server's accepts must fail, and it must serve again after it. At the end everything is
 * closed: the fd count must be back to the start, the RSS drift after the
 * warm-up is printed (and must stay under SOAK_RSS_MAX_MB, default 32).
 *
 *   PACT_ENGINE=uring SOAK_SECONDS=60 ./build/tests/soak        */
#include <errno.h>
#include <fcntl.h>
#include <pact.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "open_fds.h" /* count_open_fds */

#define NLOAD 16   /* long connections under steady echo load */
#define NCHURN 24  /* short connections in flight at a time */
#define NPROC 4    /* subprocesses at a time */
#define NTIMERS 64

static pact_loop *L;
static uint16_t port;
#define NSTORM 16
static int storm_fds[NSTORM];
#define STORM_FD_LIMIT 1024
static int storm_fillers[STORM_FD_LIMIT]; /* /dev/null, held in the storm */
static int nstorm_fillers;
static int storm; /* in the EMFILE storm */
static uint64_t churn_ok, churn_err, churn_started, load_bytes, spawns,
    spawn_err, kills, timers_fired, timers_cancelled, after_storm_ok;

#define DIE(...)                                      \
    do {                                              \
        fprintf(stderr, "soak: FAIL: " __VA_ARGS__);  \
        fprintf(stderr, "\n");                        \
        exit(1);                                      \
    } while (0)

static long rss_kb(void)
{
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ---- the server: echo with flow control ------------------------------- */

typedef struct sconn {
    int paused;
} sconn;

static void s_data(pact_transport *t, const void *d, size_t n, void *u)
{
    (void)u;
    pact_transport_write(t, d, n);
}
static void s_pause(pact_transport *t, void *u)
{
    sconn *c = u;
    if (!c->paused && pact_transport_pause_reading(t) == 0)
        c->paused = 1;
}
static void s_resume(pact_transport *t, void *u)
{
    sconn *c = u;
    if (c->paused) {
        c->paused = 0;
        pact_transport_resume_reading(t);
    }
}
static void s_lost(pact_transport *t, int err, void *u)
{
    (void)t;
    (void)err;
    free(u);
}
static const pact_protocol s_proto = {.data_received = s_data,
                                      .connection_lost = s_lost,
                                      .pause_writing = s_pause,
                                      .resume_writing = s_resume};
static int s_factory(pact_server *s, void *fu, const pact_protocol **p, void **u)
{
    (void)s;
    (void)fu;
    *u = calloc(1, sizeof(sconn));
    if (!*u)
        return -ENOMEM;
    *p = &s_proto;
    return 0;
}

/* ---- load clients: write a pattern, check the echo --------------------- */

typedef struct load {
    pact_transport *t;
    int connecting;
    uint64_t sent, got;
} load;
static load loads[NLOAD];

static uint8_t pat(uint64_t i) { return (uint8_t)(i * 31 + (i >> 9)); }

static void load_send(load *l)
{
    uint8_t buf[4096];
    while (l->t && l->sent - l->got < 64 * 1024) {
        for (size_t i = 0; i < sizeof buf; i++)
            buf[i] = pat(l->sent + i);
        if (pact_transport_write(l->t, buf, sizeof buf) != 0)
            return;
        l->sent += sizeof buf;
    }
}
static void l_made(pact_transport *t, void *u)
{
    load *l = u;
    l->t = t;
    load_send(l);
}
static void l_data(pact_transport *t, const void *d, size_t n, void *u)
{
    (void)t;
    load *l = u;
    const uint8_t *p = d;
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(l->got + i))
            DIE("load echo byte %llu wrong", (unsigned long long)(l->got + i));
    l->got += n;
    load_bytes += n;
    load_send(l);
}
static void l_lost(pact_transport *t, int err, void *u)
{
    (void)t;
    load *l = u;
    if (!storm && err && err != -ECONNRESET)
        fprintf(stderr, "soak: load connection lost: %s\n", pact_strerror(err));
    l->t = NULL;
}
static const pact_protocol l_proto = {.connection_made = l_made,
                                      .data_received = l_data,
                                      .connection_lost = l_lost};
static void l_connected(pact_loop *loop, pact_transport *t, int err, void *u)
{
    (void)loop;
    (void)err;
    load *l = u;
    l->connecting = 0;
    if (t) {
        l->sent = l->got = 0;
        l->t = t; /* connection_made follows */
    }
}

/* ---- churn: connect, one echo, close ----------------------------------- */

typedef struct churn {
    int busy;
    size_t got;
    int ok;
} churn;
static churn churns[NCHURN];

static void c_made(pact_transport *t, void *u)
{
    (void)u;
    pact_transport_write(t, "hello, soak", 11);
}
static void c_data(pact_transport *t, const void *d, size_t n, void *u)
{
    (void)d;
    churn *c = u;
    c->got += n;
    if (c->got >= 11) {
        c->ok = 1;
        pact_transport_close(t);
    }
}
static void c_lost(pact_transport *t, int err, void *u)
{
    (void)t;
    (void)err;
    churn *c = u;
    if (c->ok) {
        churn_ok++;
        if (!storm)
            after_storm_ok++;
    } else {
        churn_err++;
    }
    c->busy = 0;
}
static const pact_protocol c_proto = {.connection_made = c_made,
                                      .data_received = c_data,
                                      .connection_lost = c_lost};
static void c_connected(pact_loop *loop, pact_transport *t, int err, void *u)
{
    (void)loop;
    (void)err;
    churn *c = u;
    if (!t) {
        churn_err++;
        c->busy = 0;
    }
}

static void churn_fill(void)
{
    for (int i = 0; i < NCHURN; i++) {
        churn *c = &churns[i];
        if (c->busy)
            continue;
        c->busy = 1;
        c->got = 0;
        c->ok = 0;
        churn_started++;
        pact_op op = pact_connect_tcp(L, "127.0.0.1", port, &c_proto, c, c_connected, c);
        if (op < 0) {
            churn_err++;
            c->busy = 0;
        }
    }
}

/* ---- subprocesses ------------------------------------------------------ */

typedef struct proc {
    pact_process *p;
    int busy;
} proc;
static proc procs[NPROC];

static void p_lost(pact_process *p, void *u)
{
    (void)p;
    proc *x = u;
    x->busy = 0;
    x->p = NULL;
}
static const pact_subprocess_protocol p_proto = {.connection_lost = p_lost};

static void proc_step(unsigned r)
{
    proc *x = &procs[r % NPROC];
    if (x->busy) {
        if (x->p && (r & 3) == 0) {
            pact_process_kill(x->p);
            kills++;
        }
        return;
    }
    static char *argv_sleep[] = {"sleep", "0.05", NULL};
    static char *argv_echo[] = {"echo", "soak", NULL};
    pact_process_options o = PACT_PROCESS_OPTIONS_INIT;
    o.argv = (r & 1) ? argv_sleep : argv_echo;
    o.stdio[0].kind = PACT_STDIO_DEVNULL;
    o.stdio[1].kind = PACT_STDIO_PIPE;
    o.stdio[2].kind = PACT_STDIO_DEVNULL;
    int e = pact_process_spawn(L, &o, &p_proto, x, &x->p);
    if (e == 0) {
        x->busy = 1;
        spawns++;
    } else {
        spawn_err++;
    }
}

/* ---- timers ------------------------------------------------------------- */

static pact_handle timers[NTIMERS];
static void t_fire(pact_loop *loop, void *u)
{
    (void)loop;
    timers[(intptr_t)u] = 0;
    timers_fired++;
}
static void timer_step(unsigned r)
{
    int i = (int)(r % NTIMERS);
    if (timers[i] > 0) {
        if (pact_handle_cancel(L, timers[i]) == 0)
            timers_cancelled++;
        timers[i] = 0;
        return;
    }
    timers[i] = pact_call_later(L, (uint64_t)(r % 50) * 1000 * 1000, t_fire,
                                (void *)(intptr_t)i);
}

/* ---- main ---------------------------------------------------------------- */

int main(void)
{
    const char *sv = getenv("SOAK_SECONDS");
    double seconds = sv ? atof(sv) : 600;
    const char *mv = getenv("SOAK_RSS_MAX_MB");
    long rss_max_kb = (mv ? atol(mv) : 32) * 1024;
    signal(SIGPIPE, SIG_IGN);
    /* The storm fills the fd table up to the soft limit, so keep that
     * small; set before the server exists, since io_uring reads the limit
     * when it prepares an accept (a multishot accept keeps the limit of
     * its arming: lowering it later reaches only epoll's accept4). */
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    if (lim.rlim_cur > STORM_FD_LIMIT) {
        lim.rlim_cur = STORM_FD_LIMIT;
        if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
            DIE("setrlimit: %m");
    }
    int fds0 = count_open_fds();
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.debug = 0;
    if (pact_loop_create(&L, &o) != 0)
        DIE("loop");
    pact_server *srv;
    pact_server_options so = {.size = sizeof so, .backlog = 1024};
    if (pact_server_listen_tcp(L, "127.0.0.1", 0, &so, s_factory, NULL, &srv) != 0)
        DIE("listen");
    port = (uint16_t)pact_server_port(srv);
    printf("soak: engine %s, %.0f s, port %u\n", pact_loop_engine_name(L), seconds, port);

    uint64_t t0 = pact_now(), end = t0 + (uint64_t)(seconds * 1e9);
    uint64_t storm_at = t0 + (uint64_t)(seconds * 0.5e9), storm_end = 0;
    uint64_t next_sample = t0, sample_every = 5ull * 1000 * 1000 * 1000;
    if (seconds < 60)
        sample_every = (uint64_t)(seconds * 1e9 / 10);
    long rss_warm = 0;
    int fds_warm = 0, storm_done = 0;
    uint64_t storm_errors_before = 0;
    unsigned r = 12345;
    while (pact_now() < end) {
        uint64_t now = pact_now();
        for (int i = 0; i < NLOAD; i++)
            if (!loads[i].t && !loads[i].connecting && !storm) {
                loads[i].connecting = 1;
                if (pact_connect_tcp(L, "127.0.0.1", port, &l_proto, &loads[i],
                                     l_connected, &loads[i]) < 0)
                    loads[i].connecting = 0;
            }
        churn_fill();
        r = r * 1103515245u + 12345u;
        if ((r >> 8) % 64 == 0)
            proc_step(r >> 12);
        timer_step(r >> 10);
        if (!storm_done && !storm && now >= storm_at) {
            /* EMFILE storm: 16 clients connect (the kernel queues them in
             * the backlog) and send a byte, then no fd is left for 3 s:
             * the server's accepts fail with EMFILE, as do the clients'
             * sockets. After it, the server must accept and echo them. */
            struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port),
                                      .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            for (int i = 0; i < NSTORM; i++) {
                storm_fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (storm_fds[i] < 0 ||
                    connect(storm_fds[i], (struct sockaddr *)&sin, sizeof sin) != 0 ||
                    send(storm_fds[i], "x", 1, 0) != 1)
                    DIE("storm client %d: %m", i);
            }
            storm_errors_before = pact_server_accept_errors(srv);
            int f, open_err = 0;
            while (nstorm_fillers < STORM_FD_LIMIT) {
                if ((f = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
                    open_err = errno;
                    break;
                }
                storm_fillers[nstorm_fillers++] = f;
            }
            if (open_err != EMFILE)
                DIE("filling the fd table ended without EMFILE (%s)",
                    open_err ? strerror(open_err) : "limit not reached");
            storm = 1;
            storm_end = now + 3ull * 1000 * 1000 * 1000;
            after_storm_ok = 0;
            printf("soak: EMFILE storm for 3 s (%d more fds held, limit %llu)\n",
                   nstorm_fillers, (unsigned long long)lim.rlim_cur);
        }
        if (storm && now >= storm_end) {
            while (nstorm_fillers > 0)
                close(storm_fillers[--nstorm_fillers]);
            storm = 0;
            storm_done = 1;
            uint64_t absorbed = pact_server_accept_errors(srv) - storm_errors_before;
            printf("soak: storm over; server accept errors absorbed: %llu\n",
                   (unsigned long long)absorbed);
            if (absorbed == 0)
                DIE("no accept failed in the EMFILE storm: it tested nothing");
        }
        if (now >= next_sample) {
            int fds = count_open_fds();
            long rss = rss_kb();
            if (!rss_warm && now - t0 >= (uint64_t)(seconds * 0.1e9)) {
                rss_warm = rss;
                fds_warm = fds;
            }
            printf("soak: t=%5.0fs fds %4d rss %6ld KiB conns %8llu ok %llu err, "
                   "load %llu MiB, %llu spawns (%llu killed), timers %llu/%llu\n",
                   (double)(now - t0) / 1e9, fds, rss,
                   (unsigned long long)churn_ok, (unsigned long long)churn_err,
                   (unsigned long long)(load_bytes >> 20), (unsigned long long)spawns,
                   (unsigned long long)kills, (unsigned long long)timers_fired,
                   (unsigned long long)timers_cancelled);
            fflush(stdout);
            next_sample = now + sample_every;
        }
        /* The storm's clients: each must get its byte echoed after it. */
        for (int i = 0; storm_done && i < NSTORM; i++) {
            char c = 0;
            if (storm_fds[i] >= 0 && recv(storm_fds[i], &c, 1, MSG_DONTWAIT) == 1) {
                if (c != 'x')
                    DIE("storm client %d: wrong echo", i);
                close(storm_fds[i]);
                storm_fds[i] = -1;
            }
        }
        int e = pact_loop_run_once(L, 1000 * 1000);
        if (e < 0)
            DIE("run_once: %s", pact_strerror(e));
    }
    if (!storm_done)
        DIE("the run ended before the storm was over");
    if (after_storm_ok == 0)
        DIE("no connection served after the EMFILE storm: the server stopped");
    for (int i = 0; i < NSTORM; i++)
        if (storm_fds[i] >= 0)
            DIE("storm client %d was never served (the EMFILE storm stopped "
                "the server)", i);
    int fds_end_run = count_open_fds();
    long rss_end = rss_kb();

    /* Close everything; the fd count must come back to the start. */
    for (int i = 0; i < NLOAD; i++)
        if (loads[i].t)
            pact_transport_close(loads[i].t);
    for (int i = 0; i < NPROC; i++)
        if (procs[i].p)
            pact_process_close(procs[i].p);
    for (int i = 0; i < NTIMERS; i++)
        if (timers[i] > 0)
            pact_handle_cancel(L, timers[i]);
    pact_server_close(srv);
    uint64_t stop = pact_now() + 10ull * 1000 * 1000 * 1000;
    int busy = 1;
    while (busy && pact_now() < stop) {
        pact_loop_run_once(L, 10 * 1000 * 1000);
        busy = 0;
        for (int i = 0; i < NCHURN; i++)
            busy |= churns[i].busy;
        for (int i = 0; i < NLOAD; i++)
            busy |= loads[i].t != NULL || loads[i].connecting;
        for (int i = 0; i < NPROC; i++)
            busy |= procs[i].busy;
    }
    pact_loop_stats st;
    pact_loop_get_stats(L, &st);
    if (st.stray_completions)
        DIE("%llu stray completions", (unsigned long long)st.stray_completions);
    pact_loop_close(L);
    pact_loop_get_stats(L, &st);
    if (st.ops_live)
        DIE("%llu ops live after close", (unsigned long long)st.ops_live);
    pact_loop_free(L);
    int fds_end = count_open_fds();
    printf("soak: done: %llu connections opened and closed (%llu errors, most "
           "in the storm), %llu MiB echoed, %llu subprocesses, %llu timers\n",
           (unsigned long long)churn_ok, (unsigned long long)churn_err,
           (unsigned long long)(load_bytes >> 20), (unsigned long long)spawns,
           (unsigned long long)(timers_fired + timers_cancelled));
    printf("soak: drift after warm-up: fds %+d (%d -> %d while running), rss %+ld KiB "
           "(%ld -> %ld); fds at start %d, after close %d\n",
           fds_end_run - fds_warm, fds_warm, fds_end_run, rss_end - rss_warm,
           rss_warm, rss_end, fds0, fds_end);
    if (fds_end != fds0)
        DIE("fds: %d at start, %d after close", fds0, fds_end);
    if (rss_warm && rss_end - rss_warm > rss_max_kb)
        DIE("rss grew by %ld KiB", rss_end - rss_warm);
    printf("soak: ok\n");
    return 0;
}
