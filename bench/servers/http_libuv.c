/* SPDX-License-Identifier: MIT */
/* HTTP/1.1 keep-alive hello-world on libuv, written for speed (the same
 * practice as libuv_fast_echo.c):
 *
 *  - one request buffer per connection, handed out by alloc_cb past the
 *    bytes of an incomplete request it already holds (no malloc per read,
 *    no copy of a request that came in pieces);
 *  - answers go out with uv_try_write() straight from a static buffer of
 *    repeated responses (http_parse.h); only an unsent tail is copied, into
 *    a per-connection spill buffer kept for reuse, and queued with the
 *    connection's one embedded uv_write_t;
 *  - reading stops until that write drains.
 *
 * usage: http_libuv PORT
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "http_parse.h"

/* Larger than the longest request framing accepts (head + body), so an
 * incomplete request always leaves room to read into. */
#define RBUF (16 * 1024)

typedef struct conn {
    uv_tcp_t tcp; /* first: the handle pointer is the conn pointer */
    uv_write_t wreq;
    int close_after_write;
    size_t held; /* bytes of an incomplete request at rbuf's start */
    char *spill;
    size_t spill_cap;
    char rbuf[RBUF];
} conn;

static uv_loop_t *loop;

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn *c = (conn *)h;
    buf->base = c->rbuf + c->held;
    buf->len = RBUF - c->held;
}

static void close_cb(uv_handle_t *h)
{
    conn *c = (conn *)h;
    free(c->spill);
    free(c);
}

static void conn_close(conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, close_cb);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void write_cb(uv_write_t *req, int status)
{
    conn *c = (conn *)req->handle;
    if (status < 0 || c->close_after_write ||
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) < 0)
        conn_close(c);
}

/* Sends bufs[0..n): try_write, then the copied tail through wreq. Returns
 * 1 when all went out at once, 0 when a write is queued, -1 on error. */
static int send_bufs(conn *c, uv_buf_t *bufs, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    int sent = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
    if (sent >= 0 && (size_t)sent == total)
        return 1;
    if (sent < 0) {
        if (sent != UV_EAGAIN)
            return -1;
        sent = 0;
    }
    size_t rest = total - (size_t)sent;
    if (rest > c->spill_cap) {
        free(c->spill);
        c->spill = malloc(rest);
        c->spill_cap = c->spill ? rest : 0;
        if (!c->spill)
            return -1;
    }
    size_t skip = (size_t)sent, at = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(c->spill + at, bufs[i].base + skip, len - skip);
        at += len - skip;
        skip = 0;
    }
    uv_buf_t out = uv_buf_init(c->spill, (unsigned)rest);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &out, 1, write_cb) < 0)
        return -1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    return 0;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    conn *c = (conn *)s;
    if (nread <= 0) {
        if (nread < 0) /* UV_EOF or an error; 0 is EAGAIN */
            conn_close(c);
        return;
    }
    size_t n = c->held + (size_t)nread;
    unsigned answers;
    int close_after, bad;
    size_t used = http_frame(c->rbuf, n, &answers, &close_after, &bad);
    c->held = n - used;
    if (c->held && used)
        memmove(c->rbuf, c->rbuf + used, c->held);
    if (!answers && !bad)
        return;

    /* The answers: up to 8 pieces of the static batch, then more rounds
     * only for absurd pipelines. */
    unsigned long long owed = (unsigned long long)answers * HTTP_RESPONSE_LEN;
    unsigned long long sent = 0;
    for (;;) {
        uv_buf_t bufs[9];
        unsigned nb = 0;
        while (sent < owed && nb < 8) {
            size_t len;
            const char *p = http_batch_piece(sent, owed, &len);
            bufs[nb++] = uv_buf_init((char *)p, (unsigned)len);
            sent += len;
        }
        int last = sent == owed;
        if (last && bad)
            bufs[nb++] = uv_buf_init(HTTP_BAD_REQUEST, HTTP_BAD_REQUEST_LEN);
        if (last)
            c->close_after_write = close_after;
        int r = send_bufs(c, bufs, nb);
        if (r < 0) {
            conn_close(c);
            return;
        }
        if (r == 0) {
            /* Queued; an absurd pipeline's further answers are dropped
             * with the connection rather than buffered without bound. */
            if (!last)
                c->close_after_write = 1;
            return;
        }
        if (last)
            break;
    }
    if (close_after)
        conn_close(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    conn *c = malloc(sizeof *c);
    if (!c)
        return;
    c->close_after_write = 0;
    c->held = 0;
    c->spill = NULL;
    c->spill_cap = 0;
    uv_tcp_init(loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) == 0) {
        uv_tcp_nodelay(&c->tcp, 1);
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    } else {
        conn_close(c);
    }
}

static void on_signal(uv_signal_t *h, int sig)
{
    (void)sig;
    uv_stop(h->loop);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: http_libuv PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    http_batch_init();
    loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
    int r = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (!r)
        r = uv_listen((uv_stream_t *)&server, 4096, on_connection);
    if (r) {
        fprintf(stderr, "http_libuv: %s\n", uv_strerror(r));
        return 1;
    }
    uv_signal_t sigterm;
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_unref((uv_handle_t *)&sigterm);
    fprintf(stderr, "http_libuv: ready features=libuv-%s-trywrite\n",
            uv_version_string());
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
