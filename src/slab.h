/* SPDX-License-Identifier: MIT */
/* A slab of fixed-size entries addressed by index, with a generation count
 * per entry. Entries never move (chunks are never reallocated), so the
 * kernel may keep pointing into one while it is live, and a handle made of
 * (generation, index) can be checked for staleness: a late cancel or a
 * stray completion is recognised, never mistaken for a reused entry. */
#ifndef PACT_SLAB_H
#define PACT_SLAB_H

#include <stdint.h>
#include <stddef.h>

#define PACT_SLAB_CHUNK_SHIFT 6
#define PACT_SLAB_CHUNK (1u << PACT_SLAB_CHUNK_SHIFT)

/* Every slab entry starts with this header. gen is odd while the entry is
 * live and even while it is free, so a handle to a freed entry never
 * matches. */
typedef struct pact_slab_entry {
    uint32_t gen;
    uint32_t next_free; /* free: next free index; live: this entry's index */
} pact_slab_entry;

typedef struct pact_slab {
    size_t entry_size;
    char **chunks;
    uint32_t nchunks;
    uint32_t capacity;  /* entries in all chunks */
    uint32_t free_head; /* UINT32_MAX = none */
    uint32_t live;
} pact_slab;

void pact_slab_init(pact_slab *s, size_t entry_size);
void pact_slab_destroy(pact_slab *s);

/* Returns a zeroed live entry (header filled in) and its index, or NULL on
 * ENOMEM. */
void *pact_slab_alloc(pact_slab *s, uint32_t *index);

/* Returns an entry to the free list and bumps its generation. */
void pact_slab_free(pact_slab *s, uint32_t index);

static inline void *pact_slab_at(const pact_slab *s, uint32_t index)
{
    return s->chunks[index >> PACT_SLAB_CHUNK_SHIFT] +
           (size_t)(index & (PACT_SLAB_CHUNK - 1)) * s->entry_size;
}

/* The entry a handle names if it is live and its generation matches. */
static inline void *pact_slab_lookup(const pact_slab *s, uint32_t index,
                                     uint32_t gen)
{
    if (index >= s->capacity)
        return NULL;
    pact_slab_entry *e = (pact_slab_entry *)pact_slab_at(s, index);
    return (e->gen == gen && (gen & 1)) ? e : NULL;
}

/* Handles are (gen << 32 | index + 1); always > 0 since gen < 2^31. */
static inline int64_t pact_slab_handle(uint32_t index, uint32_t gen)
{
    return (int64_t)(((uint64_t)gen << 32) | (uint64_t)(index + 1));
}

static inline int64_t pact_slab_entry_handle(const void *entry)
{
    const pact_slab_entry *e = (const pact_slab_entry *)entry;
    return pact_slab_handle(e->next_free, e->gen);
}

static inline void *pact_slab_from_handle(const pact_slab *s, int64_t h,
                                          uint32_t *index)
{
    if (h <= 0)
        return NULL;
    uint32_t lo = (uint32_t)((uint64_t)h & 0xffffffffu);
    if (lo == 0)
        return NULL;
    *index = lo - 1;
    return pact_slab_lookup(s, lo - 1, (uint32_t)((uint64_t)h >> 32));
}

#endif
