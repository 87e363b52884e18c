/* SPDX-License-Identifier: MIT */
#include "fault.h"
#include "slab.h"

#include <stdlib.h>
#include <string.h>

void pact_slab_init(pact_slab *s, size_t entry_size)
{
    memset(s, 0, sizeof *s);
    /* Keep entries 16-byte aligned: ops hold struct sockaddr_storage. */
    s->entry_size = (entry_size + 15) & ~(size_t)15;
    s->free_head = UINT32_MAX;
}

void pact_slab_destroy(pact_slab *s)
{
    for (uint32_t i = 0; i < s->nchunks; i++)
        free(s->chunks[i]);
    free(s->chunks);
    s->chunks = NULL;
    s->nchunks = s->capacity = 0;
    s->free_head = UINT32_MAX;
    s->live = 0;
}

static int slab_grow(pact_slab *s)
{
    if (s->capacity >= PACT_SLAB_MAX_ENTRIES)
        return -1; /* handles have 24 bits of index */
    char **chunks = realloc(s->chunks, (s->nchunks + 1) * sizeof *chunks);
    if (!chunks)
        return -1;
    s->chunks = chunks;
#ifdef _WIN32 /* no aligned_alloc; malloc is 16-byte aligned on x64 */
    char *chunk = malloc(s->entry_size * PACT_SLAB_CHUNK);
#else
    /* Cache-line aligned: an op's first 32 bytes then lie in one line
     * (op.h, pact_op_s). The size is a multiple of 64 (PACT_SLAB_CHUNK
     * entries), as aligned_alloc wants. */
    char *chunk = aligned_alloc(64, s->entry_size * PACT_SLAB_CHUNK);
#endif
    if (!chunk)
        return -1;
    memset(chunk, 0, s->entry_size * PACT_SLAB_CHUNK);
    s->chunks[s->nchunks++] = chunk;
    uint32_t base = s->capacity;
    s->capacity += PACT_SLAB_CHUNK;
    /* Thread the new entries onto the free list in index order. */
    for (uint32_t i = PACT_SLAB_CHUNK; i-- > 0;) {
        pact_slab_entry *e = (pact_slab_entry *)(chunk + i * s->entry_size);
        e->gen = 0;
        e->next_free = s->free_head;
        s->free_head = base + i;
    }
    return 0;
}

static inline void *slab_alloc(pact_slab *s, uint32_t *index, int zero)
{
    if (PACT_FAULT(PACT_FAULT_SLAB_ALLOC)) /* tests only: -ENOMEM */
        return NULL;
    if (s->free_head == UINT32_MAX && slab_grow(s) != 0)
        return NULL;
    uint32_t i = s->free_head;
    pact_slab_entry *e = (pact_slab_entry *)pact_slab_at(s, i);
    s->free_head = e->next_free;
    uint32_t gen = e->gen + 1; /* even -> odd: live */
    if (gen >= 0x7fffffffu)
        gen = 1;
    if (zero)
        memset(e, 0, s->entry_size);
    e->gen = gen;
    e->next_free = i; /* while live, the field holds the entry's own index */
    s->live++;
    *index = i;
    return e;
}

void *pact_slab_alloc(pact_slab *s, uint32_t *index)
{
    return slab_alloc(s, index, 1);
}

void *pact_slab_alloc_unzeroed(pact_slab *s, uint32_t *index)
{
    return slab_alloc(s, index, 0);
}

void pact_slab_free(pact_slab *s, uint32_t index)
{
    pact_slab_entry *e = (pact_slab_entry *)pact_slab_at(s, index);
    e->gen++; /* odd -> even: free */
    e->next_free = s->free_head;
    s->free_head = index;
    s->live--;
}
