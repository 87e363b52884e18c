/* SPDX-License-Identifier: MIT */
/* The one load generator every contender is measured with.
 *
 * Single thread, raw epoll (level-triggered), non-blocking sockets with
 * TCP_NODELAY, closed-loop connections: each connection keeps `window`
 * messages of `size` bytes in flight and sends the next one only when an
 * earlier one has been echoed in full. Every echoed byte is checked against
 * the pattern that was sent (byte at stream offset o is o % 251), so a
 * server that drops, duplicates or reorders bytes fails the run.
 *
 * Modes:
 *   echo   N connections, window W (W = 1 is ping-pong, W > 1 streams).
 *   churn  N concurrent slots; each does connect, one request, close, and
 *          starts over. Latency is connect start to echo received.
 *
 * Latency is recorded per message in a log-bucket histogram (16 linear
 * sub-buckets per power of two: <= 6.25% error), reported as p50/p99/p99.9.
 * Spikes are counted apart, exactly: the longest latency, the messages over
 * 1 ms and over 10 ms, and the longest time in which no message of any
 * connection completed (a stall of the whole server, not of one
 * connection); --spike-log FILE lists each message over 1 ms (its end in
 * microseconds from the window's start, its connection, its latency), to
 * line up with a trace of the server.
 *
 * The steal time of the CPUs the server and the load may run on (the
 * hypervisor's, /proc/stat) is reported for the window too: a VM's CPU
 * taken away stops whatever runs there without it counting as waiting.
 *
 * With --server-pid, the server's CPU time (the nanoseconds in
 * /proc/PID/task/TID/schedstat, every thread summed) is read at
 * the start and the end of the measured window, so CPU per request excludes
 * warm-up, with its runnable time (server_wait_s) and the times it was put
 * on a CPU (server_runs); with --signal-server, SIGUSR1 is sent to the
 * server at both points (bench/alloc_count.c prints its counters then).
 *
 * Output: one line of key=value pairs on stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAT_PERIOD 251
#define MAX_WINDOW 64
#define RBUF (256 * 1024)

static uint8_t *pattern; /* PAT_PERIOD + max size bytes */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- histogram ---------------------------------------------------------- */

#define SUB_BITS 4
#define SUB (1u << SUB_BITS)
static uint64_t hist[64 * SUB];
static uint64_t hist_n;

static unsigned bucket_of(uint64_t v)
{
    if (v < SUB)
        return (unsigned)v;
    unsigned msb = 63 - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (msb - SUB_BITS)) & (SUB - 1);
    return (msb - SUB_BITS + 1) * SUB + sub;
}

static uint64_t bucket_mid(unsigned b)
{
    if (b < SUB)
        return b;
    unsigned msb = b / SUB + SUB_BITS - 1;
    uint64_t lo = ((uint64_t)1 << msb) | ((uint64_t)(b % SUB) << (msb - SUB_BITS));
    return lo + ((uint64_t)1 << (msb - SUB_BITS)) / 2;
}

static void hist_add(uint64_t ns)
{
    hist[bucket_of(ns)]++;
    hist_n++;
}

/* ---- spikes ------------------------------------------------------------- */

#define SPIKE_NS 1000000ull   /* a message over 1 ms is a spike */
#define SPIKE_LOG_MAX 65536
static struct {
    uint64_t max_ns, over_1ms, over_10ms;
    uint64_t last_done_ns, gap_max_ns, gap_end_ns; /* any connection */
    uint64_t t0_ns;                                 /* the window's start */
    FILE *log;
    unsigned logged;
} spikes;

/* A message of connection `conn` ended at `end` after `ns`. */
static void spike_add(int conn, uint64_t end, uint64_t ns)
{
    if (ns > spikes.max_ns)
        spikes.max_ns = ns;
    if (spikes.last_done_ns && end - spikes.last_done_ns > spikes.gap_max_ns) {
        spikes.gap_max_ns = end - spikes.last_done_ns;
        spikes.gap_end_ns = end;
    }
    spikes.last_done_ns = end;
    if (ns <= SPIKE_NS)
        return;
    spikes.over_1ms++;
    if (ns > 10 * SPIKE_NS)
        spikes.over_10ms++;
    if (spikes.log && spikes.logged++ < SPIKE_LOG_MAX)
        fprintf(spikes.log, "%.1f %d %.1f\n", (double)(end - spikes.t0_ns) / 1e3,
                conn, (double)ns / 1e3);
}

static double hist_pct(double p)
{
    if (!hist_n)
        return 0;
    uint64_t want = (uint64_t)(p * (double)hist_n);
    if (want >= hist_n)
        want = hist_n - 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < 64 * SUB; b++) {
        seen += hist[b];
        if (seen > want)
            return (double)bucket_mid(b) / 1000.0; /* microseconds */
    }
    return 0;
}

/* ---- connections -------------------------------------------------------- */

typedef struct conn {
    int fd;
    int index;
    int connecting;
    uint64_t sent;      /* bytes written */
    uint64_t rcvd;      /* bytes read and verified */
    uint64_t msgs_sent; /* messages started */
    uint64_t msgs_done; /* messages echoed in full */
    uint64_t t_start[MAX_WINDOW];
    int want_out;
} conn;

static struct {
    const char *host;
    int port;
    int conns;
    size_t size;
    int window;
    double duration, warmup;
    int churn;
    int server_pid;
    int signal_server;
} cfg = {"127.0.0.1", 9000, 1, 64, 1, 2.0, 0.5, 0, 0, 0};

static int ep;
static struct sockaddr_in addr;
static uint8_t *rbuf;
static uint64_t msgs_total, bytes_total, conns_total, errors;
static int measuring;

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* The server's CPU time in seconds: the nanoseconds every thread of it
 * has run (the first field of /proc/PID/task/TID/schedstat), summed.
 * utime+stime in /proc/PID/stat is the same time, but in clock ticks
 * (10 ms): 1-3% of a run of 0.3-1 s of server CPU, more than some of the
 * differences measured. The ticks are read too (server_cpu_ticks): where
 * schedstat is missing, or a thread ended within the window (its time
 * leaves /proc/PID/task with it, but stays in /proc/PID/stat), they are
 * the answer. */
static double server_cpu_ticks(void);
/* Where it is not NULL, *wait_s gets the time the server's threads spent
 * runnable but not running (the second field of schedstat, summed), and
 * *runs the times they were put on a CPU (the third: one per wakeup from
 * a sleep and one per preemption). The server waits each time it is put
 * on its CPU again, behind the task that holds it or the CPU's wakeup
 * from idle: server_wait_s over server_runs is that wait on average. */
static double server_cpu(double *wait_s, double *runs)
{
    if (!cfg.server_pid)
        return 0;
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task", cfg.server_pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    unsigned long long ns = 0, waited = 0, ran = 0;
    int threads = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        unsigned long long t, w, r;
        snprintf(path, sizeof path, "/proc/%d/task/%.20s/schedstat", cfg.server_pid,
                 de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* the thread ended meanwhile */
        if (fscanf(f, "%llu %llu %llu", &t, &w, &r) == 3) {
            ns += t;
            waited += w;
            ran += r;
            threads++;
        }
        fclose(f);
    }
    closedir(d);
    if (wait_s)
        *wait_s = (double)waited / 1e9;
    if (runs)
        *runs = (double)ran;
    return threads ? (double)ns / 1e9 : -1;
}

/* The time this thread has spent runnable but not running, in seconds;
 * *run_s gets its time on a CPU (load_cpu_s: at 100 KiB the load costs
 * about as much CPU per request as the server, so a load generator near
 * a whole CPU caps req/s whatever the server saves).
 * In a run where both sides share a loaded CPU, a window with few
 * requests and an idle server is told apart by it: the scheduler kept
 * the load off the CPU (it grows by about the length of the gap), or the
 * server did not answer (it does not). */
static double own_wait(double *run_s)
{
    unsigned long long t, w;
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    *run_s = 0;
    if (!f)
        return 0;
    int n = fscanf(f, "%llu %llu", &t, &w);
    fclose(f);
    if (n != 2)
        return 0;
    *run_s = (double)t / 1e9;
    return (double)w / 1e9;
}

/* Steal time: what the hypervisor ran instead of this VM's CPUs, per CPU
 * (the eighth number of /proc/stat's cpuN lines, in clock ticks). On a
 * kernel that accounts steal (CONFIG_PARAVIRT_TIME_ACCOUNTING, the bench
 * VMs') a thread whose CPU is stolen neither runs (its schedstat time
 * excludes steal) nor waits in the run queue: a window with an idle server and
 * idle load but steal on their CPUs is the machine's, not a late wakeup.
 * Fills ticks[cpu]; the number of CPUs read. */
#define STEAL_CPUS 256
static int read_steal(unsigned long long *ticks)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        int cpu;
        unsigned long long st;
        /* "cpuN ...", not the aggregate "cpu  ..." line (%d would skip
         * its blanks and read the user ticks as a CPU number). */
        if (line[0] == 'c' && line[3] >= '0' && line[3] <= '9' &&
            sscanf(line, "cpu%d %*u %*u %*u %*u %*u %*u %*u %llu", &cpu, &st) == 2 &&
            cpu >= 0 && cpu < STEAL_CPUS) {
            ticks[cpu] = st;
            if (cpu + 1 > n)
                n = cpu + 1;
        }
    }
    fclose(f);
    return n;
}

/* The steal, in seconds, of the CPUs thread `pid` (0: this one) may run
 * on between the two readings. */
static double steal_of(pid_t pid, const unsigned long long *t0,
                       const unsigned long long *t1, int ncpus)
{
    cpu_set_t set;
    if (sched_getaffinity(pid, sizeof set, &set) != 0)
        return -1;
    unsigned long long sum = 0;
    for (int c = 0; c < ncpus; c++)
        if (CPU_ISSET(c, &set))
            sum += t1[c] - t0[c];
    return (double)sum / (double)sysconf(_SC_CLK_TCK);
}

static double server_cpu_ticks(void)
{
    if (!cfg.server_pid)
        return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", cfg.server_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may contain spaces */
    if (!p)
        return -1;
    unsigned long utime = 0, stime = 0;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static int server_threads(void)
{
    if (!cfg.server_pid)
        return 0;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", cfg.server_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

static void set_interest(conn *c, int out)
{
    if (c->want_out == out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0),
                             .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl mod");
    c->want_out = out;
}

static void conn_open(conn *c)
{
    int index = c->index; /* a churn slot keeps its number */
    memset(c, 0, sizeof *c);
    c->index = index;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->t_start[0] = now_ns();
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        if (errno != EINPROGRESS)
            die("connect");
        c->connecting = 1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    c->want_out = 1;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl add");
}

/* Writes as much of the current messages as the window allows. */
static void pump_out(conn *c)
{
    for (;;) {
        uint64_t msg_end = c->msgs_sent * cfg.size; /* end of started msgs */
        if (c->sent == msg_end) {
            if (c->msgs_sent - c->msgs_done >= (uint64_t)cfg.window)
                break;
            if (cfg.churn && c->msgs_sent == 1)
                break;
            if (!cfg.churn)
                c->t_start[c->msgs_sent % MAX_WINDOW] = now_ns();
            c->msgs_sent++;
            msg_end += cfg.size;
        }
        size_t len = (size_t)(msg_end - c->sent);
        ssize_t n = send(c->fd, pattern + c->sent % PAT_PERIOD, len,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                set_interest(c, 1);
                return;
            }
            die("send");
        }
        c->sent += (uint64_t)n;
        if ((size_t)n < len) {
            set_interest(c, 1);
            return;
        }
    }
    set_interest(c, 0);
}

static void on_readable(conn *c)
{
    ssize_t n = recv(c->fd, rbuf, RBUF, 0);
    if (n < 0) {
        if (errno == EAGAIN)
            return;
        die("recv");
    }
    if (n == 0) {
        fprintf(stderr, "loadgen: server closed a connection\n");
        exit(2);
    }
    if ((uint64_t)n > c->sent - c->rcvd) {
        fprintf(stderr, "loadgen: received more than was sent\n");
        exit(2);
    }
    /* The pattern buffer holds PAT_PERIOD + size bytes: check in pieces. */
    for (size_t off = 0; off < (size_t)n;) {
        size_t piece = (size_t)n - off < cfg.size ? (size_t)n - off : cfg.size;
        if (memcmp(rbuf + off, pattern + (c->rcvd + off) % PAT_PERIOD,
                   piece) != 0) {
            fprintf(stderr, "loadgen: echoed bytes differ near offset %llu\n",
                    (unsigned long long)(c->rcvd + off));
            exit(2);
        }
        off += piece;
    }
    c->rcvd += (uint64_t)n;
    if (measuring)
        bytes_total += (uint64_t)n;
    uint64_t t = 0;
    while (c->rcvd >= (c->msgs_done + 1) * cfg.size) {
        if (!t)
            t = now_ns();
        uint64_t start = c->t_start[c->msgs_done % MAX_WINDOW];
        c->msgs_done++;
        if (measuring) {
            msgs_total++;
            hist_add(t - start);
            spike_add(c->index, t, t - start);
        }
    }
    if (cfg.churn && c->msgs_done == 1) {
        close(c->fd); /* also removes it from the epoll set */
        if (measuring)
            conns_total++;
        conn_open(c);
        return;
    }
    pump_out(c);
}

static void wait_for_server(void)
{
    uint64_t deadline = now_ns() + 10000000000ull;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
            close(fd);
            return;
        }
        close(fd);
        if (now_ns() > deadline)
            die("server not reachable");
        usleep(10000);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen [--host H] [--port P] [--conns N] [--size B]\n"
            "  [--window W] [--duration S] [--warmup S] [--mode echo|churn]\n"
            "  [--server-pid PID] [--signal-server] [--spike-log FILE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},
        {"conns", 1, 0, 'c'},    {"size", 1, 0, 's'},
        {"window", 1, 0, 'w'},   {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'W'},   {"mode", 1, 0, 'm'},
        {"server-pid", 1, 0, 'P'}, {"signal-server", 0, 0, 'S'},
        {"spike-log", 1, 0, 'L'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h': cfg.host = optarg; break;
        case 'p': cfg.port = atoi(optarg); break;
        case 'c': cfg.conns = atoi(optarg); break;
        case 's': cfg.size = (size_t)atol(optarg); break;
        case 'w': cfg.window = atoi(optarg); break;
        case 'd': cfg.duration = atof(optarg); break;
        case 'W': cfg.warmup = atof(optarg); break;
        case 'm': cfg.churn = strcmp(optarg, "churn") == 0; break;
        case 'P': cfg.server_pid = atoi(optarg); break;
        case 'S': cfg.signal_server = 1; break;
        case 'L':
            spikes.log = fopen(optarg, "w");
            if (!spikes.log)
                die(optarg);
            break;
        default: usage();
        }
    }
    if (cfg.conns < 1 || cfg.size < 1 || cfg.window < 1 ||
        cfg.window > MAX_WINDOW)
        usage();
    if (cfg.churn)
        cfg.window = 1;

    pattern = malloc(PAT_PERIOD + cfg.size);
    for (size_t i = 0; i < PAT_PERIOD + cfg.size; i++)
        pattern[i] = (uint8_t)(i % PAT_PERIOD);
    rbuf = malloc(RBUF);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)cfg.port);
    if (inet_pton(AF_INET, cfg.host, &addr.sin_addr) != 1)
        usage();
    signal(SIGPIPE, SIG_IGN);
    wait_for_server();

    ep = epoll_create1(EPOLL_CLOEXEC);
    conn *cs = calloc((size_t)cfg.conns, sizeof *cs);
    for (int i = 0; i < cfg.conns; i++) {
        cs[i].index = i;
        conn_open(&cs[i]);
    }

    uint64_t t0 = now_ns();
    uint64_t t_measure = t0 + (uint64_t)(cfg.warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(cfg.duration * 1e9);
    double cpu0 = 0, ticks0 = 0, srv_wait0 = 0, srv_runs0 = 0, own_wait0 = 0, own_run0 = 0;
    static unsigned long long steal0[STEAL_CPUS], steal1[STEAL_CPUS];
    uint64_t tm0 = 0;
    struct epoll_event evs[256];
    for (;;) {
        uint64_t t = now_ns();
        if (!measuring && t >= t_measure) {
            measuring = 1;
            tm0 = t;
            spikes.t0_ns = t;
            spikes.last_done_ns = t;
            cpu0 = server_cpu(&srv_wait0, &srv_runs0);
            own_wait0 = own_wait(&own_run0);
            ticks0 = server_cpu_ticks();
            read_steal(steal0);
            if (cfg.signal_server)
                kill(cfg.server_pid, SIGUSR1);
        }
        if (t >= t_end)
            break;
        int n = epoll_wait(ep, evs, 256, 50);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->connecting) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    errno = err;
                    die("connect (async)");
                }
                c->connecting = 0;
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(c);
            else if (evs[i].events & EPOLLOUT)
                pump_out(c);
        }
    }
    uint64_t tm1 = now_ns();
    double srv_wait1 = 0, srv_runs1 = 0;
    double own_run1;
    double own_wait1 = own_wait(&own_run1);
    double cpu1 = server_cpu(&srv_wait1, &srv_runs1);
    double ticks1 = server_cpu_ticks();
    int ncpus = read_steal(steal1);
    if (cfg.signal_server)
        kill(cfg.server_pid, SIGUSR1);
    int threads = server_threads();
    double secs = (double)(tm1 - tm0) / 1e9;
    double cpu = cpu1 - cpu0, ticks = ticks1 - ticks0;
    /* Ticks truncate to 10 ms at both ends: more than that apart, some
     * thread's time has gone from /proc/PID/task (or there is none). */
    if (cpu0 < 0 || cpu1 < 0 || ticks - cpu > 0.02)
        cpu = ticks;
    printf("reqs=%llu secs=%.3f req_s=%.0f mib_s=%.1f conns_s=%.0f "
           "p50_us=%.1f p99_us=%.1f p999_us=%.1f server_cpu_s=%.4f "
           "cpu_s_per_mreq=%.3f server_threads=%d errors=%llu "
           "server_wait_s=%.4f load_wait_s=%.4f lat_max_us=%.1f over_1ms=%llu "
           "over_10ms=%llu gap_max_us=%.1f gap_at_ms=%.1f server_steal_s=%.2f "
           "load_steal_s=%.2f load_cpu_s=%.4f server_runs=%.0f\n",
           (unsigned long long)msgs_total, secs, (double)msgs_total / secs,
           (double)bytes_total / secs / 1048576.0,
           (double)conns_total / secs, hist_pct(0.50), hist_pct(0.99),
           hist_pct(0.999), cpu,
           msgs_total ? cpu / ((double)msgs_total / 1e6) : 0.0, threads,
           (unsigned long long)errors, srv_wait1 - srv_wait0, own_wait1 - own_wait0,
           (double)spikes.max_ns / 1e3, (unsigned long long)spikes.over_1ms,
           (unsigned long long)spikes.over_10ms, (double)spikes.gap_max_ns / 1e3,
           spikes.gap_end_ns ? (double)(spikes.gap_end_ns - tm0) / 1e6 : 0.0,
           cfg.server_pid ? steal_of(cfg.server_pid, steal0, steal1, ncpus) : 0.0,
           steal_of(0, steal0, steal1, ncpus), own_run1 - own_run0,
           srv_runs1 - srv_runs0);
    if (spikes.log)
        fclose(spikes.log);
    return 0;
}
