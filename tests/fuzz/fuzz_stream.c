/* SPDX-License-Identifier: MIT */
/* libFuzzer harness: a stream transport driven by a scripted peer. The
 * fuzzer's bytes are a script: the peer (a raw socketpair end) writes
 * segments of chosen sizes, half-closes or resets; the transport's user
 * pauses, resumes, writes, closes or aborts; the loop runs in between.
 * Checked on every input: callbacks in contract order (made first, data,
 * at most one eof, lost exactly once and last, no data while paused),
 * every byte the peer wrote arrives once and in order (all of it unless
 * the connection was reset, closed or aborted first), what the transport
 * wrote reaches the peer in order, and after loop close no op is live and
 * no fd is left open. Engine: PACT_ENGINE (default epoll). */
#include <errno.h>
#include <pact.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FUZZ_NAME "fuzz_stream"
#include "fuzz_harness.h"

static uint8_t pat(uint64_t i) { return (uint8_t)(i * 131 + (i >> 8) * 7 + 1); }
static uint8_t tpat(uint64_t i) { return (uint8_t)(i * 17 + (i >> 7) + 3); }

typedef struct st {
    pact_transport *t;
    int made, lost, lost_err, eofs, paused, closing;
    uint64_t got;       /* bytes the transport delivered */
    uint64_t peer_sent; /* bytes the peer wrote */
    uint64_t t_sent;    /* bytes the transport was asked to write */
    uint64_t peer_got;  /* of those, read by the peer */
    int peer_eof, peer_reset;
} st;

static void on_made(pact_transport *t, void *u)
{
    st *s = u;
    if (s->made || s->lost)
        BUG("connection_made twice or after lost");
    s->made = 1;
    (void)t;
}

static void on_data(pact_transport *t, const void *d, size_t n, void *u)
{
    (void)t;
    st *s = u;
    if (!s->made || s->lost || s->eofs)
        BUG("data_received out of order");
    if (s->paused)
        BUG("data_received while paused");
    if (n == 0)
        BUG("data_received with 0 bytes");
    const uint8_t *p = d;
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(s->got + i))
            BUG("byte %llu lost, duplicated or reordered",
                (unsigned long long)(s->got + i));
    s->got += n;
    if (s->got > s->peer_sent)
        BUG("more bytes than the peer wrote");
}

static int on_eof(pact_transport *t, void *u)
{
    (void)t;
    st *s = u;
    if (!s->made || s->lost || s->eofs)
        BUG("eof_received out of order");
    if (s->paused)
        BUG("eof_received while paused");
    s->eofs++;
    if (!s->peer_reset && s->got != s->peer_sent)
        BUG("EOF after %llu of %llu bytes", (unsigned long long)s->got,
            (unsigned long long)s->peer_sent);
    return 1; /* stay half-open: the script may still write */
}

static void on_lost(pact_transport *t, int err, void *u)
{
    (void)t;
    st *s = u;
    if (!s->made || s->lost)
        BUG("connection_lost twice or before made");
    s->lost = 1;
    s->lost_err = err;
}

static const pact_protocol proto = {
    .connection_made = on_made,
    .data_received = on_data,
    .eof_received = on_eof,
    .connection_lost = on_lost,
};

static void peer_read(int fd, st *s)
{
    uint8_t buf[65536];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0)
            return;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != tpat(s->peer_got + (uint64_t)i))
                BUG("peer: transport byte %llu out of order",
                    (unsigned long long)(s->peer_got + (uint64_t)i));
        s->peer_got += (uint64_t)n;
        if (s->peer_got > s->t_sent)
            BUG("peer got more than the transport wrote");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fds0 = count_open_fds();
    int sv[2];
    pact_loop *loop = fuzz_loop_and_socketpair(sv);
    st s = {0};
    if (pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &proto, &s, &s.t) != 0)
        BUG("transport_open");
    int peer = sv[1], peer_wr_closed = 0;
    uint8_t buf[8192];
    for (size_t i = 0; i < size; i++) {
        uint8_t op = data[i] & 15, arg = (uint8_t)(data[i] >> 4);
        size_t len = (size_t)(arg + 1) * (arg > 12 ? 2048 : 97);
        if (len > sizeof buf)
            len = sizeof buf;
        switch (op) {
        case 0: case 1: case 2: /* the peer writes a segment */
            if (peer < 0 || peer_wr_closed)
                break;
            for (size_t j = 0; j < len; j++)
                buf[j] = pat(s.peer_sent + j);
            {
                ssize_t n = send(peer, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n > 0)
                    s.peer_sent += (uint64_t)n;
            }
            break;
        case 3:
            if (!s.lost && !s.closing && !s.paused &&
                pact_transport_pause_reading(s.t) == 0)
                s.paused = 1;
            break;
        case 4:
            if (!s.lost && s.paused) {
                pact_transport_resume_reading(s.t);
                s.paused = 0;
            }
            break;
        case 5: case 6: case 7:
            pact_loop_run_once(loop, 0);
            break;
        case 8: /* the transport writes */
            if (s.lost || s.closing || pact_transport_is_closing(s.t) ||
                pact_transport_write_buffer_size(s.t) > (1u << 20))
                break;
            for (size_t j = 0; j < len; j++)
                buf[j] = tpat(s.t_sent + j);
            if (pact_transport_write(s.t, buf, len) == 0)
                s.t_sent += len;
            break;
        case 9: /* the peer reads */
            if (peer >= 0)
                peer_read(peer, &s);
            break;
        case 10: /* the peer half-closes */
            if (peer >= 0 && !peer_wr_closed && arg < 4) {
                shutdown(peer, SHUT_WR);
                peer_wr_closed = 1;
            }
            break;
        case 11: /* the peer resets */
            if (peer >= 0 && arg < 2) {
                close(peer);
                peer = -1;
                s.peer_reset = 1;
            }
            break;
        case 12: /* close */
            if (!s.lost && !s.closing && arg < 3) {
                s.closing = 1;
                s.paused = 0;
                pact_transport_close(s.t);
            }
            break;
        case 13: /* abort */
            if (!s.lost && !s.closing && arg < 2) {
                s.closing = 1;
                s.paused = 0;
                pact_transport_abort(s.t);
            }
            break;
        default:
            pact_loop_run_once(loop, 1000 * 1000);
            break;
        }
    }
    /* Drain: everything the peer wrote must arrive unless the connection
     * ended first; what the transport wrote reaches the peer. */
    if (!s.lost && s.paused) {
        pact_transport_resume_reading(s.t);
        s.paused = 0;
    }
    uint64_t end = pact_now() + 5ull * 1000 * 1000 * 1000;
    while (!s.lost && !s.closing && !s.peer_reset && s.got < s.peer_sent) {
        if (pact_now() > end)
            BUG("hang: %llu of %llu bytes delivered", (unsigned long long)s.got,
                (unsigned long long)s.peer_sent);
        pact_loop_run_once(loop, 1000 * 1000);
        if (peer >= 0)
            peer_read(peer, &s);
    }
    if (!s.lost && !s.closing && !s.peer_reset && s.got != s.peer_sent)
        BUG("lost bytes: %llu of %llu", (unsigned long long)s.got,
            (unsigned long long)s.peer_sent);
    if (!s.lost && !s.closing) {
        s.closing = 1;
        pact_transport_close(s.t);
    }
    while (!s.lost) {
        if (pact_now() > end + 5ull * 1000 * 1000 * 1000)
            BUG("close hangs");
        pact_loop_run_once(loop, 1000 * 1000);
        if (peer >= 0)
            peer_read(peer, &s);
    }
    if (peer >= 0) {
        peer_read(peer, &s);
        close(peer);
    }
    fuzz_loop_free(loop, fds0);
    return 0;
}
