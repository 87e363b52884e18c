/* SPDX-License-Identifier: MIT */
/* The loop's one table of per-fd state, found by the fd's number: one
 * entry per fd, shared by the op layer (the order of stream ops, op.c)
 * and the engine (epoll's wait queues and registration). One entry, not
 * one per user of it: the memory an idle connection costs is mostly this
 * entry (docs/design-notes.md), and one lookup finds all of it.
 *
 * A hash table that grows with the number of fds in use, never with their
 * value. Any int is a key: an op on fd INT_MAX gets its -EBADF from the
 * kernel, as on fd 5, instead of a table sized by the number (which
 * overflowed at 2^30 and wanted gigabytes near 2^29).
 *
 * Entries are zeroed when created, never move and never go away before
 * the table does: list heads inside them are pointed at by the ops queued
 * there, and epoll keeps a pointer to one per registration. They are cut
 * from blocks of 64 the table allocates (no allocation header or
 * size-class rounding per entry). */
#ifndef PACT_FD_TABLE_H
#define PACT_FD_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "list.h"

struct pact_op_s;

/* The part of an entry every engine has. An engine that keeps state of
 * its own per fd appends it (the epoll engine's entry starts with this
 * struct) and says how big its entry is with pact_fd_table_set_entry_size()
 * before the first entry is made. */
typedef struct pact_fd_entry {
    int fd;
    /* The engine's small per-fd state (epoll: the events armed and a few
     * flags), here in what would otherwise be padding. */
    uint16_t engine_events;
    uint8_t engine_flags;
    /* op.c: per-fd order of stream ops. Two bits per direction (in,
     * out): an op of that direction is with the engine (its head), and
     * order_release() is letting the next ones go. */
    uint8_t order_bits;
    /* The ops of both directions waiting for their turn, in the order
     * they were started. */
    pact_list order_waiting;
} pact_fd_entry;

/* engine_flags bit the loop clears itself: the engine has registered the
 * number with the kernel (epoll). pact__fd_closing() clears it, with
 * engine_events, when the loop closes an fd of its own: the kernel drops a
 * registration with the file, so the number's next one is new. */
#define PACT_FD_REGISTERED 0x80u

/* Every fd the loop has seen holds one (the idle-connection memory goal,
 * docs/design-notes.md): order state only some fds need does not go here. */
_Static_assert(sizeof(pact_fd_entry) <= 24, "pact_fd_entry grew past 24 bytes");

typedef struct pact_fd_table {
    /* Open addressing, linear probing: each slot holds an entry's number +
     * 1, 0 = empty (half the size of a pointer, for a table kept at most
     * half full: 8 bytes per fd instead of 16 or more). */
    uint32_t *slots;
    uint32_t mask;  /* slot count - 1 (a power of two), 0 = none yet */
    uint32_t count; /* entries made; entry n is in block n / 64 */
    size_t entry_size;
    char **blocks;  /* PACT_FD_BLOCK entries each, allocated as needed */
    uint32_t nblocks, blocks_cap;
} pact_fd_table;

void pact_fd_table_init(pact_fd_table *t);
/* For an engine that appends its own state to every entry: entry_size >=
 * sizeof(pact_fd_entry), set before the table has any entry. */
void pact_fd_table_set_entry_size(pact_fd_table *t, size_t entry_size);
/* Frees every entry and the table. */
void pact_fd_table_destroy(pact_fd_table *t);
/* The entry of fd, or NULL if there is none. */
pact_fd_entry *pact_fd_table_find(const pact_fd_table *t, int fd);
/* The entry of fd, created zeroed (order_waiting empty) if there was
 * none; NULL on ENOMEM. */
pact_fd_entry *pact_fd_table_get(pact_fd_table *t, int fd);

#endif
