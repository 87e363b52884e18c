/* SPDX-License-Identifier: MIT */
/* Counts the heap allocations the calling thread makes between
 * alloc_counter_start() and alloc_counter_stop(): malloc, calloc, realloc
 * and the aligned allocators, whoever calls them (pact, libc, the test).
 *
 * Include it in one test file only: without AddressSanitizer it defines
 * the allocator's entry points in the test executable, which take the
 * place of glibc's for the whole process (as bench/alloc_count.c does
 * with LD_PRELOAD) and forward to glibc's __libc_* functions. ASan owns
 * malloc, so there the count comes from its malloc hook instead.
 *
 * Only the counting thread's allocations count (Criterion's own threads
 * and the loop's helper threads do not), and nothing here allocates. */
#ifndef PACT_TEST_ALLOC_COUNTER_H
#define PACT_TEST_ALLOC_COUNTER_H

#include <stddef.h>

#include "helpers.h"

static __thread int alloc_counting;
static __thread unsigned long alloc_counted;

static inline void alloc_counter_note(void)
{
    if (alloc_counting)
        alloc_counted++;
}

#ifdef PACT_TEST_ASAN
/* Declared here: gcc installs no sanitizer/allocator_interface.h. */
int __sanitizer_install_malloc_and_free_hooks(
    void (*malloc_hook)(const volatile void *, size_t),
    void (*free_hook)(const volatile void *));

static void alloc_counter_malloc_hook(const volatile void *p, size_t n)
{
    (void)p;
    (void)n;
    alloc_counter_note();
}

static void alloc_counter_free_hook(const volatile void *p) { (void)p; }

static inline void alloc_counter_install(void)
{
    static int installed;
    if (!installed)
        cr_assert(__sanitizer_install_malloc_and_free_hooks(alloc_counter_malloc_hook,
                                                            alloc_counter_free_hook),
                  "ASan took no malloc hook");
    installed = 1;
}
#else
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

void *malloc(size_t n)
{
    alloc_counter_note();
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    alloc_counter_note();
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    alloc_counter_note();
    return __libc_realloc(p, n);
}

void *memalign(size_t al, size_t n)
{
    alloc_counter_note();
    return __libc_memalign(al, n);
}

void *aligned_alloc(size_t al, size_t n)
{
    return memalign(al, n);
}

int posix_memalign(void **out, size_t al, size_t n)
{
    void *p = memalign(al, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

static inline void alloc_counter_install(void) {}
#endif

static inline void alloc_counter_start(void)
{
    alloc_counter_install();
    alloc_counted = 0;
    alloc_counting = 1;
}

/* The allocations counted since alloc_counter_start(). */
static inline unsigned long alloc_counter_stop(void)
{
    alloc_counting = 0;
    return alloc_counted;
}

#endif
