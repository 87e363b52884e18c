/* SPDX-License-Identifier: MIT */
/* recv_copy: what one recv(2) of a TCP message on loopback costs, by where
 * its bytes land. The kernel's copy into the caller's memory
 * (_copy_to_iter, `rep movsb` on x86) is most of a large echo's receive,
 * and its speed depends on the destination's alignment and on whether
 * the destination is still in this core's cache; a machine without
 * hardware counters cannot see either in a server's profile, so this
 * measures them directly.
 *
 * Receiver on CPU 0, sender on CPU 1 (a thread). Per round the sender
 * sends a shim of SRC bytes on a side connection, then the message, then
 * shim bytes up to the next 32 KiB: the kernel copies a thread's sends
 * into its per-task page fragment (32 KiB), so every message starts SRC
 * bytes into a fresh fragment. Then it waits for a one-byte answer. The
 * receiver waits (SO_RCVLOWAT, poll) until the whole message is queued,
 * then times one recv(2) of LEN bytes asked into DST bytes past the
 * start of slot (round mod SLOTS) of its own area (slots of MSG bytes
 * side by side, as a provided-buffer ring fills them; SLOTS 1 is one
 * buffer used again and again, as a readiness loop's). Configurations
 * take turns round by round, so a drifting machine load moves them alike;
 * the ratio column is the median over rounds of each round's time ÷ the
 * first configuration's time in the same round.
 *
 * usage: recv_copy [--rounds N] [--msg BYTES] CONFIG...
 *   CONFIG = DST[:SRC[:SLOTS[:LEN[:HUGE]]]]  (defaults 0:0:1:65536:0, LEN
 *   at least MSG; HUGE 1 asks for transparent huge pages on the area)
 * example: recv_copy 0 16 0:0:52 0:0:52:65536:1
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXC 32
#define FRAG 32768 /* the kernel's per-task page fragment */

typedef struct config {
    long dst, src, slots, len, huge;
    char *area;
} config;

static config conf[MAXC];
static int nconf, rounds = 2000;
static size_t msg = 16384;
static int data_s, data_r, shim_s, shim_r;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void pin(int cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    if (sched_setaffinity(0, sizeof s, &s) != 0)
        die("sched_setaffinity");
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* A connected loopback TCP pair with TCP_NODELAY on both ends. */
static void tcp_pair(int *a, int *b)
{
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&sa, &sl) != 0)
        die("listen");
    *a = socket(AF_INET, SOCK_STREAM, 0);
    if (*a < 0 || connect(*a, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect");
    *b = accept(l, NULL, NULL);
    if (*b < 0)
        die("accept");
    close(l);
    setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(*b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            die("send");
        p += k;
        n -= (size_t)k;
    }
}

static void *sender(void *arg)
{
    (void)arg;
    pin(1);
    static char sink[FRAG];
    size_t src_len = msg > FRAG ? msg : FRAG;
    char *src = malloc(src_len);
    if (!src)
        die("malloc");
    memset(src, 'x', src_len);
    for (int r = 0; r < rounds; r++)
        for (int c = 0; c < nconf; c++) {
            size_t s = (size_t)conf[c].src;
            if (s)
                send_all(shim_s, src, s);
            send_all(data_s, src, msg);
            size_t rest = (FRAG - (s + msg) % FRAG) % FRAG;
            if (rest)
                send_all(shim_s, src, rest);
            while (recv(shim_r, sink, sizeof sink, MSG_DONTWAIT) > 0)
                ;
            char ack;
            if (recv(data_s, &ack, 1, 0) != 1)
                die("recv answer");
        }
    free(src);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Each configuration's own area, 2 MiB-aligned (so that HUGE can map it
 * with one huge page), written once so that no page faults are timed. */
static void make_area(config *c)
{
    size_t need = (size_t)c->slots * msg + (size_t)c->dst + (size_t)c->len + 4096;
    size_t huge = 2u << 20, map = need + huge;
    char *m = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        die("mmap");
    c->area = (char *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
    madvise(c->area, need, c->huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    memset(c->area, 1, need);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--msg") == 0 && i + 1 < argc) {
            msg = (size_t)atol(argv[++i]);
        } else if (nconf < MAXC) {
            config *c = &conf[nconf++];
            *c = (config){.slots = 1, .len = -1};
            sscanf(argv[i], "%ld:%ld:%ld:%ld:%ld", &c->dst, &c->src, &c->slots, &c->len,
                   &c->huge);
        }
    }
    if (nconf == 0 || rounds < 4 || msg == 0 || msg > 4u << 20) {
        fprintf(stderr, "usage: recv_copy [--rounds N] [--msg BYTES] "
                        "DST[:SRC[:SLOTS[:LEN[:HUGE]]]]...\n");
        return 2;
    }
    for (int c = 0; c < nconf; c++) {
        config *k = &conf[c];
        if (k->len == -1) /* 64 KiB, as raw epoll asks, or the message */
            k->len = msg > 65536 ? (long)msg : 65536;
        if (k->dst < 0 || k->dst > 1 << 20 || k->src < 0 || k->src >= FRAG ||
            k->slots < 1 || k->slots > 4096 || k->len < (long)msg || k->len > 64L << 20) {
            fprintf(stderr, "recv_copy: bad configuration %d\n", c + 1);
            return 2;
        }
    }
    tcp_pair(&data_s, &data_r);
    tcp_pair(&shim_s, &shim_r);
    int rcvbuf = 4 << 20, lowat = (int)msg;
    setsockopt(data_r, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    setsockopt(data_r, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
    for (int c = 0; c < nconf; c++)
        make_area(&conf[c]);
    uint64_t *t = calloc((size_t)rounds * (size_t)nconf, sizeof *t);
    double *ratio = calloc((size_t)rounds, sizeof *ratio);
    if (!t || !ratio)
        die("calloc");
    pin(0);
    pthread_t th;
    if (pthread_create(&th, NULL, sender, NULL) != 0)
        die("pthread_create");
    for (int r = 0; r < rounds; r++)
        for (int c = 0; c < nconf; c++) {
            config *k = &conf[c];
            struct pollfd p = {.fd = data_r, .events = POLLIN};
            if (poll(&p, 1, -1) != 1)
                die("poll");
            char *dst = k->area + (size_t)(r % k->slots) * msg + k->dst;
            uint64_t t0 = now_ns();
            ssize_t n = recv(data_r, dst, (size_t)k->len, MSG_DONTWAIT);
            uint64_t t1 = now_ns();
            size_t got = n > 0 ? (size_t)n : 0;
            while (got < msg) { /* not expected: the rest, untimed */
                ssize_t m = recv(data_r, dst + got, msg - got, 0);
                if (m <= 0)
                    die("recv");
                got += (size_t)m;
            }
            t[(size_t)c * (size_t)rounds + (size_t)r] = t1 - t0;
            send_all(data_r, "a", 1);
        }
    pthread_join(th, NULL);
    /* The paired ratios first: sorting a configuration's times below
     * loses which round each came from. */
    double med_ratio[MAXC];
    for (int c = 0; c < nconf; c++) {
        const uint64_t *v = t + (size_t)c * (size_t)rounds;
        for (int r = 0; r < rounds; r++)
            ratio[r] = (double)v[r] / (double)(t[r] ? t[r] : 1);
        qsort(ratio, (size_t)rounds, sizeof *ratio, cmp_double);
        med_ratio[c] = ratio[rounds / 2];
    }
    printf("%-8s %-8s %-6s %-8s %-4s %9s %9s %9s %7s\n", "dst+", "src+", "slots", "len",
           "huge", "median_ns", "q1", "q3", "ratio");
    for (int c = 0; c < nconf; c++) {
        uint64_t *v = t + (size_t)c * (size_t)rounds;
        qsort(v, (size_t)rounds, sizeof *v, cmp_u64);
        printf("%-8ld %-8ld %-6ld %-8ld %-4ld %9lu %9lu %9lu %7.2f\n", conf[c].dst,
               conf[c].src, conf[c].slots, conf[c].len, conf[c].huge,
               (unsigned long)v[rounds / 2], (unsigned long)v[rounds / 4],
               (unsigned long)v[rounds * 3 / 4], med_ratio[c]);
    }
    free(t);
    free(ratio);
    return 0;
}
