/* SPDX-License-Identifier: MIT */
/* libFuzzer harness: the TLS layer (src/tls.c) as a server, fed arbitrary
 * bytes in arbitrary segments by a raw peer. Input: the first byte seeds
 * the segment sizes, the rest is what the "client" sends, then EOF.
 * Checked on every input: no crash or sanitizer report, on_handshake runs
 * exactly once, a protocol is called only after a successful handshake
 * and in contract order, and after loop close no op is live, no fd left
 * open. The corpus starts from real ClientHellos (tests/fuzz/corpus/tls).
 * Engine: PACT_ENGINE (default epoll). */
#include <errno.h>
#include <pact.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FUZZ_NAME "fuzz_tls"
#include "fuzz_harness.h"

static pact_tls_context *ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char dir[] = "/tmp/pact-fuzz-tls.XXXXXX";
    if (!mkdtemp(dir))
        BUG("mkdtemp");
    char cmd[512], crt[64], key[64];
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -keyout k.pem -out c.pem "
             "-days 2 -subj /CN=localhost 2>/dev/null",
             dir);
    if (system(cmd) != 0)
        BUG("openssl req failed");
    snprintf(crt, sizeof crt, "%s/c.pem", dir);
    snprintf(key, sizeof key, "%s/k.pem", dir);
    if (pact_tls_context_create(PACT_TLS_SERVER, &ctx) != 0 ||
        pact_tls_context_set_certificate(ctx, crt, key) != 0)
        BUG("context");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_tls: could not remove %s\n", dir);
    return 0;
}

typedef struct st {
    int handshakes, made, lost, eofs;
    pact_transport *tls;
} st;

static void on_made(pact_transport *t, void *u)
{
    (void)t;
    st *s = u;
    if (s->handshakes != 1 || s->made || s->lost)
        BUG("connection_made out of order");
    s->made = 1;
}
static void on_data(pact_transport *t, const void *d, size_t n, void *u)
{
    (void)t;
    (void)d;
    (void)n;
    st *s = u;
    if (!s->made || s->lost || s->eofs)
        BUG("data_received out of order");
}
static int on_eof(pact_transport *t, void *u)
{
    (void)t;
    st *s = u;
    if (!s->made || s->lost || s->eofs)
        BUG("eof_received out of order");
    s->eofs++;
    return 0;
}
static void on_lost(pact_transport *t, int err, void *u)
{
    (void)t;
    (void)err;
    st *s = u;
    if (!s->made || s->lost)
        BUG("connection_lost out of order");
    s->lost = 1;
}
static const pact_protocol proto = {.connection_made = on_made,
                                    .data_received = on_data,
                                    .eof_received = on_eof,
                                    .connection_lost = on_lost};

static void on_handshake(pact_loop *loop, pact_transport *t, int err, void *u)
{
    (void)loop;
    st *s = u;
    if (s->handshakes++)
        BUG("on_handshake twice");
    if (t && err)
        BUG("handshake with a transport and an error");
    if (!t && err >= 0)
        BUG("failed handshake without an error");
    s->tls = t;
}

static const pact_protocol plain_proto = {0};

static void drain_peer(int fd)
{
    char buf[16384];
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int fds0 = count_open_fds();
    int sv[2];
    pact_loop *loop = fuzz_loop_and_socketpair(sv);
    pact_transport *plain, *tls;
    if (pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &plain_proto, NULL, &plain) != 0)
        BUG("transport_open");
    st s = {0};
    if (pact_tls_wrap(plain, ctx, NULL, NULL, 0, 2000ull * 1000 * 1000, &proto, &s,
                      on_handshake, &s, &tls) != 0)
        BUG("tls_wrap");
    /* The client's bytes in segments sized by the first byte's bits. */
    unsigned seg_seed = data[0] | 1u;
    size_t off = 1;
    while (off < size) {
        seg_seed = seg_seed * 1103515245u + 12345u;
        size_t seg = 1 + (seg_seed >> 16) % 300;
        if (seg > size - off)
            seg = size - off;
        ssize_t n = send(sv[1], data + off, seg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server closed: nothing more to say */
        off += (size_t)n;
        pact_loop_run_once(loop, 0);
        drain_peer(sv[1]);
    }
    shutdown(sv[1], SHUT_WR);
    uint64_t end = pact_now() + 5ull * 1000 * 1000 * 1000;
    while (!s.handshakes) {
        if (pact_now() > end)
            BUG("no handshake outcome");
        pact_loop_run_once(loop, 1000 * 1000);
        drain_peer(sv[1]);
    }
    if (s.tls && !s.lost) {
        pact_transport_abort(s.tls);
        while (!s.lost) {
            if (pact_now() > end + 5ull * 1000 * 1000 * 1000)
                BUG("abort hangs");
            pact_loop_run_once(loop, 1000 * 1000);
        }
    }
    while (pact_loop_run_once(loop, 0) > 0 && pact_now() < end + 10ull * 1000 * 1000 * 1000)
        drain_peer(sv[1]);
    close(sv[1]);
    fuzz_loop_free(loop, fds0);
    return 0;
}
