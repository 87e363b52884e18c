/* SPDX-License-Identifier: MIT */
#include "heap.h"

#include <errno.h>
#include <stdlib.h>

void pact_heap_init(pact_heap *h)
{
    h->nodes = NULL;
    h->count = h->capacity = 0;
    h->next_seq = 0;
}

void pact_heap_destroy(pact_heap *h)
{
    free(h->nodes);
    pact_heap_init(h);
}

static int before(const pact_heap_node *a, const pact_heap_node *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void place(pact_heap *h, uint32_t i, pact_heap_node *n)
{
    h->nodes[i] = n;
    n->pos = i;
}

static void sift_up(pact_heap *h, uint32_t i)
{
    pact_heap_node *n = h->nodes[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!before(n, h->nodes[parent]))
            break;
        place(h, i, h->nodes[parent]);
        i = parent;
    }
    place(h, i, n);
}

static void sift_down(pact_heap *h, uint32_t i)
{
    pact_heap_node *n = h->nodes[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= h->count)
            break;
        if (child + 1 < h->count && before(h->nodes[child + 1], h->nodes[child]))
            child++;
        if (!before(h->nodes[child], n))
            break;
        place(h, i, h->nodes[child]);
        i = child;
    }
    place(h, i, n);
}

int pact_heap_insert(pact_heap *h, pact_heap_node *n)
{
    if (h->count == h->capacity) {
        uint32_t cap = h->capacity ? h->capacity * 2 : 64;
        pact_heap_node **nodes = realloc(h->nodes, cap * sizeof *nodes);
        if (!nodes)
            return -ENOMEM;
        h->nodes = nodes;
        h->capacity = cap;
    }
    n->seq = h->next_seq++;
    place(h, h->count++, n);
    sift_up(h, n->pos);
    return 0;
}

void pact_heap_remove(pact_heap *h, pact_heap_node *n)
{
    if (n->pos == UINT32_MAX)
        return;
    uint32_t i = n->pos;
    n->pos = UINT32_MAX;
    h->count--;
    if (i == h->count)
        return;
    place(h, i, h->nodes[h->count]);
    /* The moved node may belong above or below its new place. */
    if (i > 0 && before(h->nodes[i], h->nodes[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}
