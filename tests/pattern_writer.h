/* SPDX-License-Identifier: MIT */
/* A peer that writes the test stream's pattern (test_pattern_byte) from
 * its own thread, blocking, while the test's loop receives it: stream
 * positions start .. total - 1, then it shuts its writing down, or
 * leaves the socket as it is (keep_open, for a test that writes on).
 * Shared by the receive suites (test_multishot, test_recv_buffer). */
#ifndef PACT_TEST_PATTERN_WRITER_H
#define PACT_TEST_PATTERN_WRITER_H

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pact.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "helpers_both_systems.h" /* test_fill_pattern */

typedef struct pattern_writer {
    pthread_t thread;
    int fd;
    uint64_t start;   /* the first stream position it writes */
    uint64_t total;   /* the end: it writes up to position total - 1 */
    uint64_t written; /* the position it reached */
    int keep_open;    /* no shutdown at the end: the test writes on */
} pattern_writer;

static inline void *pattern_writer_main(void *arg)
{
    pattern_writer *w = arg;
    int fl = fcntl(w->fd, F_GETFL);
    fcntl(w->fd, F_SETFL, fl & ~O_NONBLOCK);
    static __thread uint8_t chunk[64 * 1024];
    w->written = w->start;
    while (w->written < w->total) {
        size_t n = sizeof chunk;
        if (n > w->total - w->written)
            n = (size_t)(w->total - w->written);
        test_fill_pattern(chunk, n, w->written);
        ssize_t r = send(w->fd, chunk, n, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break; /* the reader went away */
        }
        w->written += (uint64_t)r;
    }
    if (!w->keep_open)
        shutdown(w->fd, SHUT_WR);
    return NULL;
}

/* Starts w's thread writing positions start .. total - 1 on fd
 * (keep_open, if set in *w before, is kept). */
static inline void pattern_writer_start(pattern_writer *w, int fd, uint64_t start,
                                        uint64_t total)
{
    w->fd = fd;
    w->start = start;
    w->total = total;
    w->written = start;
    cr_assert_eq(pthread_create(&w->thread, NULL, pattern_writer_main, w), 0);
}

/* Waits for w's thread to end. */
static inline void pattern_writer_wait(pattern_writer *w)
{
    pthread_join(w->thread, NULL);
}

#endif
