/* SPDX-License-Identifier: MIT */
/* Binary min-heap of timer nodes ordered by (when, seq): the earliest
 * deadline is at the top, and nodes due at the same time come out in the
 * order they were inserted, so timers fire in the order they were set. */
#ifndef PACT_HEAP_H
#define PACT_HEAP_H

#include <stdint.h>

typedef struct pact_heap_node {
    uint64_t when;
    uint64_t seq;
    uint32_t pos; /* index in the heap array; UINT32_MAX when not in it */
    uint8_t kind; /* what embeds the node, see loop.h */
} pact_heap_node;

typedef struct pact_heap {
    pact_heap_node **nodes;
    uint32_t count, capacity;
    uint64_t next_seq;
} pact_heap;

void pact_heap_init(pact_heap *h);
void pact_heap_destroy(pact_heap *h);
/* Returns 0 or -ENOMEM. */
int pact_heap_insert(pact_heap *h, pact_heap_node *n);
void pact_heap_remove(pact_heap *h, pact_heap_node *n);

static inline pact_heap_node *pact_heap_top(const pact_heap *h)
{
    return h->count ? h->nodes[0] : 0;
}

static inline int pact_heap_contains(const pact_heap_node *n)
{
    return n->pos != UINT32_MAX;
}

#endif
