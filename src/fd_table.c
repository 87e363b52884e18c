/* SPDX-License-Identifier: MIT */
#include "fd_table.h"

#include <stdlib.h>

void pact_fd_table_init(pact_fd_table *t, size_t entry_size)
{
    t->slots = NULL;
    t->mask = 0;
    t->count = 0;
    t->entry_size = entry_size;
}

void pact_fd_table_destroy(pact_fd_table *t)
{
    if (t->slots)
        for (uint32_t i = 0; i <= t->mask; i++)
            free(t->slots[i]);
    free(t->slots);
    pact_fd_table_init(t, t->entry_size);
}

/* Fibonacci hashing: consecutive fds (the common case) spread evenly. */
static uint32_t slot_of(const pact_fd_table *t, int fd)
{
    return (uint32_t)(((uint64_t)(uint32_t)fd * 0x9E3779B97F4A7C15ull) >> 32) &
           t->mask;
}

void *pact_fd_table_find(const pact_fd_table *t, int fd)
{
    if (!t->slots)
        return NULL;
    for (uint32_t i = slot_of(t, fd);; i = (i + 1) & t->mask) {
        pact_fd_key *k = t->slots[i];
        if (!k || k->fd == fd)
            return k;
    }
}

/* Doubles the slot array (entries stay where they are). */
static int grow(pact_fd_table *t)
{
    uint32_t n = t->slots ? (t->mask + 1) * 2 : 64;
    if (n == 0)
        return -1; /* 2^32 slots: cannot happen with int fds in practice */
    pact_fd_key **slots = calloc(n, sizeof *slots);
    if (!slots)
        return -1;
    pact_fd_table old = *t;
    t->slots = slots;
    t->mask = n - 1;
    if (old.slots) {
        for (uint32_t i = 0; i <= old.mask; i++) {
            pact_fd_key *k = old.slots[i];
            if (!k)
                continue;
            uint32_t j = slot_of(t, k->fd);
            while (t->slots[j])
                j = (j + 1) & t->mask;
            t->slots[j] = k;
        }
        free(old.slots);
    }
    return 0;
}

void *pact_fd_table_get(pact_fd_table *t, int fd, int *created)
{
    *created = 0;
    pact_fd_key *k = pact_fd_table_find(t, fd);
    if (k)
        return k;
    /* At most half full, so probes stay short and find() always ends. */
    if ((!t->slots || (t->count + 1) * 2 > t->mask + 1) && grow(t) != 0)
        return NULL;
    k = calloc(1, t->entry_size);
    if (!k)
        return NULL;
    k->fd = fd;
    uint32_t i = slot_of(t, fd);
    while (t->slots[i])
        i = (i + 1) & t->mask;
    t->slots[i] = k;
    t->count++;
    *created = 1;
    return k;
}
