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
    /* Put into every handle of this slab (see pact_slab_entry_handle);
     * set by the owner after init. */
    uint32_t tag;
} pact_slab;

void pact_slab_init(pact_slab *s, size_t entry_size);
void pact_slab_destroy(pact_slab *s);

/* Returns a zeroed live entry (header filled in) and its index, or NULL on
 * ENOMEM. */
void *pact_slab_alloc(pact_slab *s, uint32_t *index);
/* The same without zeroing: the caller fills every field after the
 * header itself (what an entry's last life left there is stale). */
void *pact_slab_alloc_unzeroed(pact_slab *s, uint32_t *index);

/* Returns an entry to the free list and bumps its generation. */
void pact_slab_free(pact_slab *s, uint32_t index);

static inline void *pact_slab_at(const pact_slab *s, uint32_t index)
{
    return s->chunks[index >> PACT_SLAB_CHUNK_SHIFT] +
           (size_t)(index & (PACT_SLAB_CHUNK - 1)) * s->entry_size;
}

/* Handles given to users (pact_op, pact_handle) name an entry, the slab it
 * is in and the loop that slab belongs to, so that a handle of another
 * kind or another loop is answered -ENOENT instead of reaching a live
 * entry that happens to sit at the same index:
 *
 *   bits  0..23  index + 1 (never 0, so a handle is always > 0)
 *   bits 24..45  the entry's generation, low 22 bits (odd: live)
 *   bits 46..62  the slab's tag (pact_slab.tag: loop number and kind)
 *   bit  63      0 (handles are positive; errors are negative errno)
 *
 * A stale handle is recognised until its entry has been reused 2^21
 * times. */
#define PACT_SLAB_HANDLE_INDEX_BITS 24
#define PACT_SLAB_HANDLE_GEN_BITS 22
#define PACT_SLAB_HANDLE_TAG_BITS 17
#define PACT_SLAB_HANDLE_GEN_MASK ((1u << PACT_SLAB_HANDLE_GEN_BITS) - 1)
#define PACT_SLAB_HANDLE_TAG_MASK ((1u << PACT_SLAB_HANDLE_TAG_BITS) - 1)
/* Entries a slab with handles can hold (index + 1 fits its 24 bits). */
#define PACT_SLAB_MAX_ENTRIES                                              \
    ((1u << PACT_SLAB_HANDLE_INDEX_BITS) - PACT_SLAB_CHUNK)

static inline int64_t pact_slab_entry_handle(const pact_slab *s,
                                             const void *entry)
{
    const pact_slab_entry *e = (const pact_slab_entry *)entry;
    uint64_t h = (uint64_t)(s->tag & PACT_SLAB_HANDLE_TAG_MASK)
                     << (PACT_SLAB_HANDLE_INDEX_BITS + PACT_SLAB_HANDLE_GEN_BITS) |
                 (uint64_t)(e->gen & PACT_SLAB_HANDLE_GEN_MASK)
                     << PACT_SLAB_HANDLE_INDEX_BITS |
                 (uint64_t)(e->next_free + 1);
    return (int64_t)h;
}

/* The live entry a handle names, or NULL if the handle is stale, of
 * another slab (kind or loop), or no handle at all. */
static inline void *pact_slab_from_handle(const pact_slab *s, int64_t h,
                                          uint32_t *index)
{
    if (h <= 0)
        return NULL;
    uint64_t u = (uint64_t)h;
    uint32_t lo = (uint32_t)(u & ((1u << PACT_SLAB_HANDLE_INDEX_BITS) - 1));
    uint32_t gen = (uint32_t)(u >> PACT_SLAB_HANDLE_INDEX_BITS) &
                   PACT_SLAB_HANDLE_GEN_MASK;
    uint32_t tag = (uint32_t)(u >> (PACT_SLAB_HANDLE_INDEX_BITS +
                                    PACT_SLAB_HANDLE_GEN_BITS));
    if (lo == 0 || lo > s->capacity || tag != (s->tag & PACT_SLAB_HANDLE_TAG_MASK))
        return NULL;
    pact_slab_entry *e = (pact_slab_entry *)pact_slab_at(s, lo - 1);
    if (!(e->gen & 1) || (e->gen & PACT_SLAB_HANDLE_GEN_MASK) != gen)
        return NULL;
    *index = lo - 1;
    return e;
}

#endif
