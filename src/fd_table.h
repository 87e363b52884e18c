/* SPDX-License-Identifier: MIT */
/* Per-fd state found by the fd's number: a hash table that grows with the
 * number of fds in use, never with their value. Any int is a key: an op on
 * fd INT_MAX gets its -EBADF from the kernel, as on fd 5, instead of a
 * table sized by the number (which overflowed at 2^30 and wanted
 * gigabytes near 2^29).
 *
 * Entries are allocated one by one, zeroed, and never move or go away
 * before the table does: list heads inside them are pointed at by the ops
 * queued there, and epoll keeps a pointer to one per registration. Every
 * entry starts with a pact_fd_key. */
#ifndef PACT_FD_TABLE_H
#define PACT_FD_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct pact_fd_key {
    int fd;
} pact_fd_key;

typedef struct pact_fd_table {
    pact_fd_key **slots; /* open addressing, linear probing; NULL = empty */
    uint32_t mask;       /* slot count - 1 (a power of two), 0 = none yet */
    uint32_t count;
    size_t entry_size;
} pact_fd_table;

void pact_fd_table_init(pact_fd_table *t, size_t entry_size);
/* Frees every entry and the table. */
void pact_fd_table_destroy(pact_fd_table *t);
/* The entry of fd, or NULL if there is none. */
void *pact_fd_table_find(const pact_fd_table *t, int fd);
/* The entry of fd, created zeroed (*created = 1) if there was none; NULL
 * on ENOMEM. */
void *pact_fd_table_get(pact_fd_table *t, int fd, int *created);

#endif
