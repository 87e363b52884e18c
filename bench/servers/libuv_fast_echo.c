/* SPDX-License-Identifier: MIT */
/* libuv echo server written for speed, the way someone who profiles libuv
 * writes it (libuv_echo.c is the example-shaped one):
 *
 *  - one receive buffer per connection, allocated with the connection and
 *    handed out by alloc_cb every time (no malloc per read);
 *  - the echo goes out with uv_try_write() first, straight from that
 *    buffer: in the common case the whole reply is one send(2), no copy,
 *    no uv_write_t;
 *  - only the unsent tail is copied (into a per-connection spill buffer
 *    that is kept and reused) and queued with the connection's one
 *    embedded uv_write_t;
 *  - reading stops until that write drains (back-pressure), so there is
 *    never more than one write request per connection.
 *
 * usage: libuv_fast_echo PORT
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* As large as libuv's suggested size and raw_epoll's read buffer. Pages
 * that are never read into are never touched, so small messages keep only
 * the first page of each connection's buffer warm. */
#define RBUF (64 * 1024)

typedef struct conn {
    uv_tcp_t tcp; /* first: the handle pointer is the conn pointer */
    uv_write_t wreq;
    char *spill; /* unsent tail of the last echo, while wreq is in flight */
    size_t spill_cap;
    char rbuf[RBUF];
} conn;

static uv_loop_t *loop;

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn *c = (conn *)h;
    buf->base = c->rbuf;
    buf->len = RBUF;
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
    if (status < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) < 0)
        conn_close(c);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = (conn *)s;
    if (nread <= 0) {
        if (nread < 0) /* UV_EOF or an error; 0 is EAGAIN */
            conn_close(c);
        return;
    }
    uv_buf_t out = uv_buf_init(buf->base, (unsigned)nread);
    int sent = uv_try_write(s, &out, 1);
    if (sent == nread)
        return;
    if (sent < 0) {
        if (sent != UV_EAGAIN) {
            conn_close(c);
            return;
        }
        sent = 0;
    }
    size_t rest = (size_t)nread - (size_t)sent;
    if (rest > c->spill_cap) {
        free(c->spill);
        c->spill = malloc(rest);
        if (!c->spill) {
            c->spill_cap = 0;
            conn_close(c);
            return;
        }
        c->spill_cap = rest;
    }
    memcpy(c->spill, buf->base + sent, rest);
    out = uv_buf_init(c->spill, (unsigned)rest);
    if (uv_write(&c->wreq, s, &out, 1, write_cb) < 0) {
        conn_close(c);
        return;
    }
    uv_read_stop(s); /* until the tail is out: one write in flight at most */
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    conn *c = malloc(sizeof *c);
    if (!c)
        return;
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
        fprintf(stderr, "usage: libuv_fast_echo PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
    int r = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (!r)
        r = uv_listen((uv_stream_t *)&server, 4096, on_connection);
    if (r) {
        fprintf(stderr, "libuv_fast_echo: %s\n", uv_strerror(r));
        return 1;
    }
    uv_signal_t sigterm;
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_unref((uv_handle_t *)&sigterm);
    fprintf(stderr, "libuv_fast_echo: ready features=libuv-%s-trywrite\n",
            uv_version_string());
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
