/* SPDX-License-Identifier: MIT */
/* Intrusive circular doubly linked list: O(1) insert and remove without
 * allocation, used for the ready queue, the submit queue, the done queue and
 * the epoll engine's per-fd wait queues. */
#ifndef PACT_LIST_H
#define PACT_LIST_H

#include <stddef.h>

typedef struct pact_list {
    struct pact_list *next, *prev;
} pact_list;

#define pact_container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

static inline void pact_list_init(pact_list *l) { l->next = l->prev = l; }

static inline int pact_list_empty(const pact_list *l) { return l->next == l; }

/* A node that is in no list points to itself, so removing it twice is
 * harmless. */
static inline int pact_list_linked(const pact_list *n) { return n->next != n; }

static inline void pact_list_push_back(pact_list *l, pact_list *n)
{
    n->prev = l->prev;
    n->next = l;
    l->prev->next = n;
    l->prev = n;
}

static inline void pact_list_remove(pact_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

static inline pact_list *pact_list_pop_front(pact_list *l)
{
    if (pact_list_empty(l))
        return NULL;
    pact_list *n = l->next;
    pact_list_remove(n);
    return n;
}

/* Moves every node of src to the end of dst, leaving src empty. */
static inline void pact_list_splice(pact_list *dst, pact_list *src)
{
    if (pact_list_empty(src))
        return;
    src->next->prev = dst->prev;
    dst->prev->next = src->next;
    src->prev->next = dst;
    dst->prev = src->prev;
    pact_list_init(src);
}

#endif
