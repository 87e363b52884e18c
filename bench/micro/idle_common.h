/* SPDX-License-Identifier: MIT */
/* Shared by micro_pact.c and micro_libuv.c: opens n loopback connections
 * whose client ends live in a forked child (so the fd limit counts only the
 * server ends here), and reads this process's resident set size. */
#ifndef BENCH_IDLE_COMMON_H
#define BENCH_IDLE_COMMON_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_bytes(void)
{
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &pages, &res) != 2)
        res = -1;
    if (f)
        fclose(f);
    return res * sysconf(_SC_PAGESIZE);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

/* Returns an array of n accepted (blocking) server-side fds; *child is the
 * pid holding the client ends (kill it when done). */
static int *open_idle_conns(int n, pid_t *child)
{
    raise_nofile();
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0)
        return NULL;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    pid_t pid = fork();
    if (pid == 0) {
        raise_nofile();
        close(lfd);
        for (int i = 0; i < n; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
                perror("idle client");
                _exit(1);
            }
        }
        pause();
        _exit(0);
    }
    *child = pid;
    int *fds = malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) {
        fds[i] = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fds[i] < 0) {
            perror("idle accept");
            return NULL;
        }
    }
    close(lfd);
    return fds;
}

__attribute__((unused)) static void close_idle_conns(int *fds, int n, pid_t child)
{
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
}
#endif
