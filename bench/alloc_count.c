/* SPDX-License-Identifier: MIT */
/* LD_PRELOAD allocation counter. Interposes malloc, calloc, realloc,
 * free and the aligned allocators, forwarding to glibc's __libc_* entry
 * points (no dlsym, so no bootstrap recursion), and counts calls with
 * relaxed atomics.
 *
 * On SIGUSR1 it writes one line to stderr (async-signal-safe write(2)):
 *   alloc_count: allocs=N frees=M
 * bench/loadgen.c --signal-server sends SIGUSR1 at the start and the end of
 * its measured window, so the difference of the two lines divided by the
 * requests of the window is the allocations per request.
 *
 * usage: LD_PRELOAD=./alloc_count.so server ...
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static atomic_ulong n_alloc, n_free;

#define API __attribute__((visibility("default")))

API void *malloc(size_t n)
{
    atomic_fetch_add_explicit(&n_alloc, 1, memory_order_relaxed);
    return __libc_malloc(n);
}

API void *calloc(size_t a, size_t b)
{
    atomic_fetch_add_explicit(&n_alloc, 1, memory_order_relaxed);
    return __libc_calloc(a, b);
}

API void *realloc(void *p, size_t n)
{
    atomic_fetch_add_explicit(&n_alloc, 1, memory_order_relaxed);
    return __libc_realloc(p, n);
}

API void free(void *p)
{
    if (p)
        atomic_fetch_add_explicit(&n_free, 1, memory_order_relaxed);
    __libc_free(p);
}

API void *memalign(size_t al, size_t n)
{
    atomic_fetch_add_explicit(&n_alloc, 1, memory_order_relaxed);
    return __libc_memalign(al, n);
}

API void *aligned_alloc(size_t al, size_t n)
{
    return memalign(al, n);
}

API int posix_memalign(void **out, size_t al, size_t n)
{
    void *p = memalign(al, n);
    if (!p)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}

static char *put_num(char *p, unsigned long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static void on_usr1(int sig)
{
    (void)sig;
    char line[96], *p = line;
    memcpy(p, "alloc_count: allocs=", 20);
    p = put_num(p + 20, atomic_load(&n_alloc));
    memcpy(p, " frees=", 7);
    p = put_num(p + 7, atomic_load(&n_free));
    *p++ = '\n';
    ssize_t r = write(2, line, (size_t)(p - line));
    (void)r;
}

__attribute__((constructor)) static void init(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
}
