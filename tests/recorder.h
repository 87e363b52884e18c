/* SPDX-License-Identifier: MIT */
/* A per-transport recorder for the stream tests: checks the callback order
 * the contract promises (connection_made first, then data, at most one
 * eof_received, connection_lost exactly once and last, nothing after it)
 * and keeps what arrived. Optional behaviours: echo what arrives, keep the
 * connection half-open on EOF, close once a byte count has arrived. */
#ifndef PACT_TEST_RECORDER_H
#define PACT_TEST_RECORDER_H

#include <stdint.h>
#include <stdio.h>

#include "helpers.h"

typedef struct rec {
    pact_transport *t;
    int made, eofs, lost, lost_err;
    int bad;              /* order violations seen */
    char why[128];        /* the first violation */
    size_t nbytes;        /* bytes received */
    char *data;           /* kept when keep_data is set */
    size_t cap;
    uint64_t hash;        /* FNV-1a of everything received */
    /* behaviour */
    int echo;             /* write back what arrives */
    int keep_data;
    int keep_open;        /* eof_received's return */
    size_t close_after;   /* close once this many bytes arrived (0 = no) */
    int paused_now;       /* set by tests that pause: data then is a bug */
    /* what happened when */
    int made_seq, lost_seq;
    int *seq;             /* shared counter, optional */
} rec;

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME 1099511628211ull

static inline uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

static inline void rec_init(rec *r)
{
    memset(r, 0, sizeof *r);
    r->hash = FNV_OFFSET;
}

static inline void rec_violation(rec *r, const char *what)
{
    if (r->bad++ == 0)
        snprintf(r->why, sizeof r->why, "%s (made %d eofs %d lost %d)", what,
                 r->made, r->eofs, r->lost);
}

static void rec_made(pact_transport *t, void *user)
{
    rec *r = user;
    if (r->made || r->lost)
        rec_violation(r, "connection_made twice or after lost");
    r->made = 1;
    r->t = t;
    if (r->seq)
        r->made_seq = ++*r->seq;
}

static void rec_data(pact_transport *t, const void *data, size_t len, void *user)
{
    rec *r = user;
    if (!r->made || r->eofs || r->lost)
        rec_violation(r, "data_received out of order");
    if (r->paused_now)
        rec_violation(r, "data_received while paused");
    if (len == 0)
        rec_violation(r, "data_received with 0 bytes");
    if (r->keep_data) {
        if (r->nbytes + len > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->nbytes + len)
                cap *= 2;
            r->data = realloc(r->data, cap);
            r->cap = cap;
        }
        memcpy(r->data + r->nbytes, data, len);
    }
    r->nbytes += len;
    r->hash = fnv1a(r->hash, data, len);
    if (r->echo)
        pact_transport_write(t, data, len);
    if (r->close_after && r->nbytes >= r->close_after)
        pact_transport_close(t);
}

static int rec_eof(pact_transport *t, void *user)
{
    (void)t;
    rec *r = user;
    if (!r->made || r->eofs || r->lost)
        rec_violation(r, "eof_received out of order or twice");
    r->eofs++;
    return r->keep_open;
}

static void rec_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    rec *r = user;
    if (!r->made)
        rec_violation(r, "connection_lost before connection_made");
    if (r->lost)
        rec_violation(r, "connection_lost twice");
    r->lost++;
    r->lost_err = err;
    r->t = NULL; /* freed after this returns */
    if (r->seq)
        r->lost_seq = ++*r->seq;
}

static const pact_protocol rec_protocol = {
    .connection_made = rec_made,
    .data_received = rec_data,
    .eof_received = rec_eof,
    .connection_lost = rec_lost,
};

/* The order held, and the transport is gone exactly once. */
#define rec_expect_done(r)                                                   \
    do {                                                                     \
        cr_expect_eq((r)->bad, 0, "order: %s", (r)->why);                    \
        cr_expect_eq((r)->made, 1, "connection_made %d times", (r)->made);   \
        cr_expect_eq((r)->lost, 1, "connection_lost %d times", (r)->lost);   \
    } while (0)

/* Runs the loop for about ms milliseconds. */
static inline void run_for(pact_loop *loop, unsigned ms)
{
    uint64_t end = pact_now() + ms * MS;
    while (pact_now() < end)
        pact_loop_run_once(loop, 5 * (int64_t)MS);
}

/* Reads what is available on a non-blocking or blocking fd without
 * waiting, appending to buf; returns 1 once want bytes are there. */
static inline int try_read(int fd, char *buf, size_t want, size_t *got)
{
    while (*got < want) {
        ssize_t n = recv(fd, buf + *got, want - *got, MSG_DONTWAIT);
        if (n <= 0)
            break;
        *got += (size_t)n;
    }
    return *got >= want;
}

static inline void rec_free(rec *r)
{
    free(r->data);
    r->data = NULL;
}

#endif
