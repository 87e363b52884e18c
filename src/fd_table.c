/* SPDX-License-Identifier: MIT */
#include "fd_table.h"

#include <assert.h>
#include <stdlib.h>

/* Entries per block (a power of two: entry n is found by a shift). */
#define BLOCK_SHIFT 6
#define BLOCK_ENTRIES (1u << BLOCK_SHIFT)

void pact_fd_table_init(pact_fd_table *t)
{
    t->slots = NULL;
    t->mask = 0;
    t->count = 0;
    t->entry_size = sizeof(pact_fd_entry);
    t->blocks = NULL;
    t->nblocks = t->blocks_cap = 0;
}

void pact_fd_table_set_entry_size(pact_fd_table *t, size_t entry_size)
{
    assert(t->count == 0 && entry_size >= sizeof(pact_fd_entry));
    /* Entries follow each other in a block: keep every one aligned. */
    size_t align = _Alignof(pact_fd_entry);
    t->entry_size = (entry_size + align - 1) / align * align;
}

void pact_fd_table_destroy(pact_fd_table *t)
{
    for (uint32_t i = 0; i < t->nblocks; i++)
        free(t->blocks[i]);
    free(t->blocks);
    free(t->slots);
    size_t entry_size = t->entry_size;
    pact_fd_table_init(t);
    t->entry_size = entry_size;
}

static pact_fd_entry *entry_at(const pact_fd_table *t, uint32_t n)
{
    return (pact_fd_entry *)(t->blocks[n >> BLOCK_SHIFT] +
                             (size_t)(n & (BLOCK_ENTRIES - 1)) * t->entry_size);
}

/* Fibonacci hashing: consecutive fds (the common case) spread evenly. */
static uint32_t slot_of(const pact_fd_table *t, int fd)
{
    return (uint32_t)(((uint64_t)(uint32_t)fd * 0x9E3779B97F4A7C15ull) >> 32) &
           t->mask;
}

pact_fd_entry *pact_fd_table_find(const pact_fd_table *t, int fd)
{
    if (!t->slots)
        return NULL;
    for (uint32_t i = slot_of(t, fd);; i = (i + 1) & t->mask) {
        uint32_t s = t->slots[i];
        if (!s)
            return NULL;
        pact_fd_entry *k = entry_at(t, s - 1);
        if (k->fd == fd)
            return k;
    }
}

/* Doubles the slot array (entries stay where they are). */
static int grow(pact_fd_table *t)
{
    uint32_t n = t->slots ? (t->mask + 1) * 2 : 64;
    if (n == 0)
        return -1; /* 2^32 slots: cannot happen with int fds in practice */
    uint32_t *slots = calloc(n, sizeof *slots);
    if (!slots)
        return -1;
    free(t->slots);
    t->slots = slots;
    t->mask = n - 1;
    for (uint32_t e = 0; e < t->count; e++) {
        uint32_t j = slot_of(t, entry_at(t, e)->fd);
        while (t->slots[j])
            j = (j + 1) & t->mask;
        t->slots[j] = e + 1;
    }
    return 0;
}

/* Makes room for entry number t->count: a new block when the last is full. */
static int reserve_entry(pact_fd_table *t)
{
    if ((t->count >> BLOCK_SHIFT) < t->nblocks)
        return 0;
    if (t->nblocks == t->blocks_cap) {
        uint32_t cap = t->blocks_cap ? t->blocks_cap * 2 : 4;
        char **blocks = realloc(t->blocks, cap * sizeof *blocks);
        if (!blocks)
            return -1;
        t->blocks = blocks;
        t->blocks_cap = cap;
    }
    char *b = calloc(BLOCK_ENTRIES, t->entry_size);
    if (!b)
        return -1;
    t->blocks[t->nblocks++] = b;
    return 0;
}

pact_fd_entry *pact_fd_table_get(pact_fd_table *t, int fd)
{
    pact_fd_entry *k = pact_fd_table_find(t, fd);
    if (k)
        return k;
    /* Entry numbers + 1 fit a slot; more entries than that would be more
     * fds than Linux lets a process have. */
    if (t->count == UINT32_MAX - 1)
        return NULL;
    if (reserve_entry(t) != 0)
        return NULL;
    /* At most half full, so probes stay short and find() always ends. */
    if ((!t->slots || (t->count + 1) * 2 > t->mask + 1) && grow(t) != 0)
        return NULL;
    k = entry_at(t, t->count);
    k->fd = fd;
    pact_list_init(&k->order_waiting);
    uint32_t i = slot_of(t, fd);
    while (t->slots[i])
        i = (i + 1) & t->mask;
    t->slots[i] = ++t->count;
    return k;
}
