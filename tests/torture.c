/* SPDX-License-Identifier: MIT */
/* Cancel torture: a seeded, reproducible random driver for the contract
 * (docs/contract.md). It mixes raw operations (recv, send, send_all,
 * accept, connect, poll, sleep, pool jobs, deadlines), stream transports
 * (write, pause/resume, close, abort), a TCP echo server with clients
 * (server close at random) and timers, with cancels at random moments, over
 * many socketpairs and loopback TCP pairs. After every step it checks:
 *
 *   - every op completes exactly once, with a result its kind allows, and
 *     never after its owner (connection) was closed;
 *   - pact_op_cancel() answers 0/-EALREADY for a live op, -ENOENT for a stale
 *     handle; a timer cancelled with 0 never runs;
 *   - per connection and direction, the bytes received are exactly the
 *     bytes the peer's sends reported as sent, in order (every byte's value
 *     depends on its send and its position in it), and after the final
 *     drain, all of them — unless a side was aborted;
 *   - a transport's callbacks come in contract order, no data while paused;
 *   - stray_completions stays 0; at the end ops_live is 0 and the fd count
 *     is back where it started.
 *
 * A failure prints the seed and op count to replay it:
 *   PACT_ENGINE=uring torture --seed N --ops M
 * tests/test_torture.c runs short versions under Criterion (make test);
 * `make torture` runs 10^7 operations per engine. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pact.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "open_fds.h" /* count_open_fds */

/* ---- run state ------------------------------------------------------------ */

static uint64_t tt_seed, tt_step, tt_ops, tt_rng;
static pact_loop *L;
static const char *tt_engine = "?";
static uint64_t tt_cq_overflows;

static uint64_t rnd(void)
{
    /* xorshift64* */
    tt_rng ^= tt_rng >> 12;
    tt_rng ^= tt_rng << 25;
    tt_rng ^= tt_rng >> 27;
    return tt_rng * 0x2545F4914F6CDD1Dull;
}
static unsigned rn(unsigned n) { return (unsigned)(rnd() % n); }
static int chance(unsigned pct) { return rn(100) < pct; }

static void tt_fail(int line, const char *fmt, ...) PACT_PRINTF(2, 3);
static void tt_fail(int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "torture: FAIL (torture.c:%d) engine %s seed %llu step %llu: ",
            line, tt_engine, (unsigned long long)tt_seed,
            (unsigned long long)tt_step);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\ntorture: replay with: PACT_ENGINE=%s torture --seed %llu --ops %llu\n",
            tt_engine, (unsigned long long)tt_seed, (unsigned long long)tt_ops);
    fflush(stderr);
    abort();
}
#define FAIL(...) tt_fail(__LINE__, __VA_ARGS__)
#define CHECK(c, ...)         \
    do {                      \
        if (!(c))             \
            FAIL(__VA_ARGS__); \
    } while (0)

/* ---- byte streams ------------------------------------------------------------
 * One direction of one connection. Sends are recorded in start order (the
 * order the contract keeps on one fd); each reports how many of its bytes
 * went out once it completes. Received bytes are checked against that
 * concatenation as soon as the sends they belong to are known. */

#define QMAX 1024u
typedef struct chunk {
    uint64_t base;
    uint32_t len, sent, vpos;
    uint8_t done;
} chunk;

typedef struct stream {
    uint64_t id;
    const char *what;
    chunk q[QMAX];
    uint32_t head, tail; /* absolute sequence numbers */
    uint8_t *rx;
    size_t rxlen, rxcap;
    uint64_t sent_total, recv_total, verified;
} stream;

static void (*tt_find_hook)(const uint8_t *bytes, size_t n);

static uint8_t pat(uint64_t base, uint32_t j)
{
    uint32_t x = (uint32_t)base ^ (j * 0x9E3779B1u) ^ (uint32_t)(base >> 32);
    x ^= x >> 15;
    x *= 0x85ebca6bu;
    x ^= x >> 13;
    return (uint8_t)x;
}

static void stream_init(stream *s, uint64_t id)
{
    memset(s, 0, sizeof *s);
    s->id = id;
}

static void stream_free(stream *s)
{
    free(s->rx);
    s->rx = NULL;
    s->rxlen = s->rxcap = 0;
}

static int stream_full(const stream *s) { return s->tail - s->head >= QMAX - 1; }

/* Records a send of len bytes; returns its sequence number and fills buf
 * (if given) with its bytes. */
static uint32_t stream_push(stream *s, uint8_t *buf, uint32_t len)
{
    CHECK(!stream_full(s), "stream %llu: send queue full", (unsigned long long)s->id);
    uint32_t seq = s->tail++;
    chunk *c = &s->q[seq % QMAX];
    c->base = (s->id << 32) ^ ((uint64_t)seq * 0x9E3779B97F4A7C15ull);
    c->len = len;
    c->sent = c->vpos = 0;
    c->done = 0;
    if (buf)
        for (uint32_t j = 0; j < len; j++)
            buf[j] = pat(c->base, j);
    return seq;
}

static void stream_verify(stream *s)
{
    size_t off = 0;
    while (s->head != s->tail) {
        chunk *c = &s->q[s->head % QMAX];
        if (!c->done)
            break;
        uint32_t avail = c->sent - c->vpos;
        size_t m = avail < s->rxlen - off ? avail : s->rxlen - off;
        for (size_t j = 0; j < m; j++) {
            uint8_t want = pat(c->base, c->vpos + (uint32_t)j);
            if (s->rx[off + j] != want) {
                /* Where do the bytes received here belong? (diagnosis) */
                long where = -1;
                size_t have = s->rxlen - off - j < 8 ? s->rxlen - off - j : 8;
                for (uint32_t p = 0; p + have <= c->len && where < 0; p++) {
                    size_t q = 0;
                    while (q < have && s->rx[off + j + q] == pat(c->base, p + (uint32_t)q))
                        q++;
                    if (q == have)
                        where = (long)p;
                }
                if (where < 0 && tt_find_hook)
                    tt_find_hook(s->rx + off + j, have);
                fprintf(stderr, "torture: stream %llu (%s): the bytes received at "
                        "send offset %u are those of offset %ld (-1: not this send)\n",
                        (unsigned long long)s->id, s->what, c->vpos + (unsigned)j, where);
                FAIL("stream %llu: byte %llu is 0x%02x, want 0x%02x (send #%u "
                     "byte %u of %u sent): lost, duplicated or reordered data",
                     (unsigned long long)s->id,
                     (unsigned long long)(s->verified + j), s->rx[off + j], want,
                     s->head, c->vpos + (unsigned)j, c->sent);
            }
        }
        off += m;
        c->vpos += (uint32_t)m;
        s->verified += m;
        if (c->vpos < c->sent)
            break; /* needs more received bytes */
        s->head++;
    }
    if (off < s->rxlen && s->head == s->tail)
        FAIL("stream %llu: %zu bytes received beyond everything sent (%llu)",
             (unsigned long long)s->id, s->rxlen - off,
             (unsigned long long)s->sent_total);
    if (off > 0) { /* rx is NULL until the first bytes arrive */
        memmove(s->rx, s->rx + off, s->rxlen - off);
        s->rxlen -= off;
    }
}

static void stream_sent(stream *s, uint32_t seq, uint32_t k)
{
    chunk *c = &s->q[seq % QMAX];
    CHECK(!c->done, "stream %llu: send #%u completed twice", (unsigned long long)s->id, seq);
    CHECK(k <= c->len, "stream %llu: send #%u reports %u bytes of %u",
          (unsigned long long)s->id, seq, k, c->len);
    c->done = 1;
    c->sent = k;
    s->sent_total += k;
    stream_verify(s);
}

static void stream_rx(stream *s, const void *data, size_t n)
{
    if (s->rxlen + n > s->rxcap) {
        size_t cap = s->rxcap ? s->rxcap : 4096;
        while (cap < s->rxlen + n)
            cap *= 2;
        s->rx = realloc(s->rx, cap);
        CHECK(s->rx, "out of memory");
        s->rxcap = cap;
    }
    memcpy(s->rx + s->rxlen, data, n);
    s->rxlen += n;
    s->recv_total += n;
    stream_verify(s);
}

/* Every send is done and every byte it sent was received. */
static int stream_drained(const stream *s)
{
    return s->head == s->tail && s->rxlen == 0;
}

/* Bytes sent or in flight and not yet checked (bounds memory). */
static uint64_t stream_backlog(const stream *s)
{
    uint64_t n = 0;
    for (uint32_t i = s->head; i != s->tail; i++)
        n += s->q[i % QMAX].len - s->q[i % QMAX].vpos;
    return n;
}

/* ---- op records ------------------------------------------------------------- */

enum rk { RK_RECV, RK_SEND, RK_SEND_ALL, RK_POLL, RK_SLEEP, RK_WORK,
          RK_ACCEPT, RK_CONNECT, RK_COUNT };
static const char *rk_name[] = {"recv", "send", "send_all", "poll", "sleep",
                                "work", "accept", "connect"};

#define REC_MAGIC 0x7e57ab1eu
#define NRAW 12
#define NLIVE 4096

struct rawconn;
typedef struct oprec {
    uint32_t magic;
    int kind, done, live_idx, side, fd;
    pact_op h;
    struct rawconn *rc;
    uint32_t rc_gen, seq;
    uint8_t *buf;
    size_t len;
    int64_t work_value;
    int cancel_said; /* pact_op_cancel answered 0 */
    struct oprec *next_free;
} oprec;

typedef struct rawconn {
    int used, closing, fd[2], tcp;
    uint32_t gen;
    int live_ops, recvs[2], sends[2];
    stream st[2]; /* st[i]: bytes sent from fd[i] */
} rawconn;

static rawconn raws[NRAW];
static oprec *live[NLIVE];
static int nlive;
static oprec *rec_free;
static pact_op stale[64];
static unsigned nstale;
static uint64_t nstarted, ncompleted, ncancels;
static int listen_fd = -1;
static struct sockaddr_in listen_addr;
static int accepts_live, connects_live;
static uint32_t next_stream_id;

static oprec *rec_new(int kind)
{
    oprec *r = rec_free;
    if (r)
        rec_free = r->next_free;
    else
        r = malloc(sizeof *r);
    CHECK(r, "out of memory");
    memset(r, 0, sizeof *r);
    r->magic = REC_MAGIC;
    r->kind = kind;
    r->fd = -1;
    r->live_idx = -1;
    return r;
}

static void rec_track(oprec *r, pact_op h)
{
    CHECK(h > 0, "%s failed to start: %s", rk_name[r->kind], pact_strerror((int)h));
    CHECK(nlive < NLIVE, "too many live ops");
    r->h = h;
    r->live_idx = nlive;
    live[nlive++] = r;
    nstarted++;
    if (r->rc)
        r->rc->live_ops++;
}

static void rec_release(oprec *r)
{
    free(r->buf);
    r->magic = 0;
    r->next_free = rec_free;
    rec_free = r;
}

static void raw_close_fds(rawconn *rc);

static int allowed_error(int64_t res)
{
    return res == -ECANCELED || res == -ETIMEDOUT;
}

static void op_done(pact_loop *loop, const pact_completion *c, void *user)
{
    (void)loop;
    oprec *r = user;
    CHECK(r && r->magic == REC_MAGIC, "callback with a freed record (op 0x%llx)",
          (unsigned long long)c->op);
    CHECK(!r->done, "%s op 0x%llx completed twice", rk_name[r->kind],
          (unsigned long long)c->op);
    CHECK(c->op == r->h, "completion names op 0x%llx, started as 0x%llx",
          (unsigned long long)c->op, (unsigned long long)r->h);
    r->done = 1;
    ncompleted++;
    /* Off the live list (swap-remove). */
    oprec *last = live[--nlive];
    live[r->live_idx] = last;
    last->live_idx = r->live_idx;
    stale[nstale++ % 64] = r->h;

    rawconn *rc = r->rc;
    if (rc)
        CHECK(rc->used && rc->gen == r->rc_gen && rc->fd[0] >= 0,
              "%s completed after its connection was closed", rk_name[r->kind]);
    int64_t res = c->result;
    switch (r->kind) {
    case RK_RECV:
        rc->recvs[r->side]--;
        if (res > 0) {
            CHECK((size_t)res <= r->len, "recv of %zu returned %lld", r->len, (long long)res);
            stream_rx(&rc->st[1 - r->side], r->buf, (size_t)res);
        } else {
            CHECK(res != 0, "recv saw EOF on an open pair");
            CHECK(allowed_error(res), "recv: %s", pact_strerror((int)res));
        }
        break;
    case RK_SEND:
    case RK_SEND_ALL: {
        rc->sends[r->side]--;
        uint32_t k;
        if (res >= 0) {
            CHECK(r->kind == RK_SEND || (size_t)res == r->len,
                  "send_all of %zu returned %lld", r->len, (long long)res);
            k = (uint32_t)res;
        } else {
            CHECK(allowed_error(res), "%s: %s", rk_name[r->kind], pact_strerror((int)res));
            k = r->kind == RK_SEND_ALL ? (uint32_t)c->transferred : 0;
        }
        stream_sent(&rc->st[r->side], r->seq, k);
        break;
    }
    case RK_POLL:
        CHECK(res > 0 || allowed_error(res), "poll: %lld", (long long)res);
        break;
    case RK_SLEEP:
        CHECK(res == 0 || res == -ECANCELED, "sleep: %lld", (long long)res);
        break;
    case RK_WORK:
        CHECK(res == r->work_value || allowed_error(res),
              "work returned %lld, want %lld", (long long)res, (long long)r->work_value);
        break;
    case RK_ACCEPT:
        accepts_live--;
        if (res >= 0) {
            CHECK(fcntl((int)res, F_GETFD) >= 0, "accepted fd %lld is not open", (long long)res);
            close((int)res);
        } else {
            CHECK(allowed_error(res), "accept: %s", pact_strerror((int)res));
        }
        break;
    case RK_CONNECT:
        connects_live--;
        CHECK(res == 0 || allowed_error(res) || res == -ECONNREFUSED ||
                  res == -EAGAIN,
              "connect: %s", pact_strerror((int)res));
        close(r->fd);
        break;
    }
    /* r->cancel_said with res >= 0: the cancel lost the race and the real
     * result was delivered (docs/contract.md §4), already checked above. */
    if (rc) {
        rc->live_ops--;
        if (rc->closing && rc->live_ops == 0)
            raw_close_fds(rc);
    }
    rec_release(r);
}

/* ---- raw connections ----------------------------------------------------------- */

static void tcp_pair(int *a, int *b)
{
    int lfd = pact_tcp_listen("127.0.0.1", 0, 4);
    CHECK(lfd >= 0, "listen: %s", pact_strerror(lfd));
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)pact_socket_port(lfd)),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(connect(c, (struct sockaddr *)&sin, sizeof sin) == 0, "connect: %m");
    int s;
    do
        s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    while (s < 0 && errno == EAGAIN);
    CHECK(s >= 0, "accept: %m");
    fcntl(c, F_SETFL, O_NONBLOCK);
    close(lfd);
    *a = c;
    *b = s;
}

static void raw_open(rawconn *rc)
{
    int sv[2];
    rc->tcp = chance(40);
    if (rc->tcp) {
        tcp_pair(&sv[0], &sv[1]);
    } else {
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
              "socketpair: %m");
    }
    /* Small buffers make short sends and blocked sends common. */
    if (chance(50)) {
        int sz = 4096;
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    }
    rc->used = 1;
    rc->closing = 0;
    rc->gen++;
    rc->fd[0] = sv[0];
    rc->fd[1] = sv[1];
    rc->live_ops = rc->recvs[0] = rc->recvs[1] = rc->sends[0] = rc->sends[1] = 0;
    stream_init(&rc->st[0], ++next_stream_id);
    stream_init(&rc->st[1], ++next_stream_id);
    rc->st[0].what = rc->st[1].what = rc->tcp ? "raw tcp" : "raw unix";
}

static void raw_close_fds(rawconn *rc)
{
    close(rc->fd[0]);
    close(rc->fd[1]);
    rc->fd[0] = rc->fd[1] = -1;
    stream_free(&rc->st[0]);
    stream_free(&rc->st[1]);
    rc->used = 0;
}

/* Closing a raw pair: cancel what is in flight, close the fds once every
 * op on them has completed (never before: the kernel could reuse the
 * number under a late completion). */
static void raw_close(rawconn *rc)
{
    rc->closing = 1;
    for (int i = 0; i < nlive; i++)
        if (live[i]->rc == rc) {
            int r = pact_op_cancel(L, live[i]->h);
            CHECK(r == 0 || r == -EALREADY, "cancel of a live op: %s", pact_strerror(r));
        }
    if (rc->live_ops == 0)
        raw_close_fds(rc);
}

static rawconn *raw_pick(void)
{
    rawconn *rc = &raws[rn(NRAW)];
    if (!rc->used) {
        raw_open(rc);
        return rc;
    }
    return rc->closing ? NULL : rc;
}

static void maybe_deadline(oprec *r)
{
    if (!chance(20))
        return;
    uint64_t ns = (uint64_t)(20 + rn(3000)) * 1000;
    int e = pact_op_set_timeout(L, r->h, ns);
    CHECK(e == 0, "set_timeout on a fresh op: %s", pact_strerror(e));
}

static void start_recv(rawconn *rc, int side)
{
    if (rc->recvs[side] >= 3)
        return;
    oprec *r = rec_new(RK_RECV);
    r->rc = rc;
    r->rc_gen = rc->gen;
    r->side = side;
    r->len = 1 + rn(chance(50) ? 64 : 16384);
    r->buf = malloc(r->len);
    rc->recvs[side]++;
    rec_track(r, pact_recv(L, rc->fd[side], r->buf, r->len, 0, op_done, r));
    maybe_deadline(r);
}

static void start_send(rawconn *rc, int side, int all)
{
    stream *s = &rc->st[side];
    if (rc->sends[side] >= 3 || stream_full(s) || stream_backlog(s) > (1u << 20))
        return;
    oprec *r = rec_new(all ? RK_SEND_ALL : RK_SEND);
    r->rc = rc;
    r->rc_gen = rc->gen;
    r->side = side;
    r->len = 1 + rn(chance(50) ? 256 : 32768);
    r->buf = malloc(r->len);
    r->seq = stream_push(s, r->buf, (uint32_t)r->len);
    rc->sends[side]++;
    pact_op h = all ? pact_send_all(L, rc->fd[side], r->buf, r->len, 0, op_done, r)
                    : pact_send(L, rc->fd[side], r->buf, r->len, 0, op_done, r);
    rec_track(r, h);
    maybe_deadline(r);
}

static void start_poll(rawconn *rc, int side)
{
    oprec *r = rec_new(RK_POLL);
    r->rc = rc;
    r->rc_gen = rc->gen;
    r->side = side;
    rec_track(r, pact_poll(L, rc->fd[side], chance(50) ? POLLIN : POLLOUT, op_done, r));
    maybe_deadline(r);
}

static void start_sleep(void)
{
    oprec *r = rec_new(RK_SLEEP);
    rec_track(r, pact_sleep(L, (uint64_t)rn(2000) * 1000, op_done, r));
}

static int64_t work_fn(void *arg)
{
    int64_t v = ((const oprec *)arg)->work_value; /* read-only while live */
    if ((v & 7) == 0)
        usleep((useconds_t)(v & 0xf0));
    return v;
}

static void start_work(void)
{
    oprec *r = rec_new(RK_WORK);
    r->work_value = (int64_t)rn(1 << 20);
    rec_track(r, pact_queue_work(L, work_fn, op_done, r));
    maybe_deadline(r);
}

static void start_accept(void)
{
    if (listen_fd < 0 || accepts_live >= 2)
        return;
    oprec *r = rec_new(RK_ACCEPT);
    accepts_live++;
    rec_track(r, pact_accept(L, listen_fd, op_done, r));
    maybe_deadline(r);
}

static void start_connect(void)
{
    if (listen_fd < 0 || connects_live >= 4)
        return;
    int fd = pact_tcp_socket(AF_INET);
    CHECK(fd >= 0, "socket: %s", pact_strerror(fd));
    oprec *r = rec_new(RK_CONNECT);
    r->fd = fd;
    connects_live++;
    rec_track(r, pact_connect(L, fd, (struct sockaddr *)&listen_addr,
                              sizeof listen_addr, op_done, r));
    maybe_deadline(r);
}

static void cancel_random(void)
{
    if (chance(15) && nstale) {
        pact_op h = stale[rn(nstale < 64 ? nstale : 64)];
        int e = pact_op_cancel(L, h);
        CHECK(e == -ENOENT, "cancel of a stale handle answered %s", pact_strerror(e));
        return;
    }
    if (!nlive)
        return;
    oprec *r = live[rn((unsigned)nlive)];
    int e = pact_op_cancel(L, r->h);
    CHECK(e == 0 || e == -EALREADY, "cancel of a live %s answered %s",
          rk_name[r->kind], pact_strerror(e));
    if (e == 0)
        r->cancel_said = 1;
    ncancels++;
}

/* ---- transports ------------------------------------------------------------------ */

#define NTP 8
struct tpair;
typedef struct tside {
    pact_transport *t;
    struct tpair *p;
    int idx, made, lost, lost_err, eof, paused, closed, aborted;
    /* TCP: a close with unread received data sends RST, and the kernel
     * drops what was not sent yet — TCP's rule, not pact's. So a close
     * promises full delivery only if nothing was unread when it was
     * called and the peer wrote nothing after (always on Unix sockets). */
    int clean_close;
} tside;

typedef struct tpair {
    int used, tcp;
    tside s[2];
    stream st[2]; /* st[i]: written by side i */
} tpair;

static tpair tps[NTP];
static uint64_t tp_bytes;

static void tp_release_if_done(tpair *p)
{
    if (p->s[0].lost && p->s[1].lost) {
        stream_free(&p->st[0]);
        stream_free(&p->st[1]);
        p->used = 0;
    }
}

static void tp_made(pact_transport *t, void *user)
{
    tside *s = user;
    CHECK(!s->made && !s->lost, "connection_made twice or after lost");
    CHECK(s->t == t, "connection_made for another transport");
    s->made = 1;
}

static void tp_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    tside *s = user;
    CHECK(s->made && !s->lost && !s->eof, "data_received out of order (made %d lost %d eof %d)",
          s->made, s->lost, s->eof);
    CHECK(!s->paused, "data_received while paused");
    CHECK(len > 0, "data_received with 0 bytes");
    tp_bytes += len;
    stream_rx(&s->p->st[1 - s->idx], data, len);
}

static int tp_eof(pact_transport *t, void *user)
{
    (void)t;
    tside *s = user;
    CHECK(s->made && !s->lost && !s->eof, "eof_received out of order");
    CHECK(!s->paused, "eof_received while paused");
    s->eof = 1;
    tside *peer = &s->p->s[1 - s->idx];
    /* A clean EOF follows every byte the peer wrote, unless it aborted. */
    if (peer->closed && peer->clean_close && !peer->aborted && peer->lost_err == 0)
        CHECK(stream_drained(&s->p->st[1 - s->idx]),
              "%s: EOF after %llu of %llu bytes the peer wrote (peer closed %d "
              "lost %d err %d eof %d paused %d)", s->p->st[0].what,
              (unsigned long long)s->p->st[1 - s->idx].recv_total,
              (unsigned long long)s->p->st[1 - s->idx].sent_total, peer->closed,
              peer->lost, peer->lost_err, peer->eof, peer->paused);
    return 0;
}

static void tp_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    tside *s = user;
    CHECK(s->made && !s->lost, "connection_lost twice or before made");
    s->lost = 1;
    s->lost_err = err;
    s->t = NULL;
    tp_release_if_done(s->p);
}

static const pact_protocol tp_proto = {
    .connection_made = tp_made,
    .data_received = tp_data,
    .eof_received = tp_eof,
    .connection_lost = tp_lost,
};

static void tp_open(tpair *p)
{
    int sv[2];
    int tcp = chance(40);
    if (tcp)
        tcp_pair(&sv[0], &sv[1]);
    else
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
              "socketpair: %m");
    memset(p, 0, sizeof *p);
    p->used = 1;
    p->tcp = tcp;
    for (int i = 0; i < 2; i++) {
        stream_init(&p->st[i], ++next_stream_id);
        p->st[i].what = tcp ? "transport tcp" : "transport unix";
        p->s[i].p = p;
        p->s[i].idx = i;
        int e = pact_transport_open(L, sv[i], PACT_STREAM_SOCKET, &tp_proto,
                                    &p->s[i], &p->s[i].t);
        CHECK(e == 0, "transport_open: %s", pact_strerror(e));
    }
}

static void tp_step(void)
{
    tpair *p = &tps[rn(NTP)];
    if (!p->used) {
        tp_open(p);
        return;
    }
    int i = (int)rn(2);
    tside *s = &p->s[i];
    if (s->lost || s->closed || s->aborted || !s->t)
        return;
    unsigned what = rn(100);
    if (what < 55) {
        if (pact_transport_is_closing(s->t) || stream_full(&p->st[i]) ||
            stream_backlog(&p->st[i]) > (4u << 20))
            return;
        uint32_t len = 1 + rn(chance(70) ? 512 : 65536);
        uint8_t *buf = malloc(len);
        uint32_t seq = stream_push(&p->st[i], buf, len);
        int e = pact_transport_write(s->t, buf, len);
        free(buf);
        CHECK(e == 0, "transport_write: %s", pact_strerror(e));
        stream_sent(&p->st[i], seq, len);
        if (p->tcp && p->s[1 - i].closed)
            p->s[1 - i].clean_close = 0;
    } else if (what < 75) {
        if (!s->paused && pact_transport_pause_reading(s->t) == 0)
            s->paused = 1;
    } else if (what < 93) {
        if (s->paused) {
            int e = pact_transport_resume_reading(s->t);
            CHECK(e == 0 || e == -ESHUTDOWN, "resume: %s", pact_strerror(e));
            s->paused = 0;
        }
    } else if (what < 97) {
        s->closed = 1;
        s->clean_close = !p->tcp || stream_drained(&p->st[1 - i]);
        s->paused = 0; /* close stops reading: nothing more is delivered */
        pact_transport_close(s->t);
    } else {
        s->aborted = 1;
        s->paused = 0;
        pact_transport_abort(s->t);
    }
}

/* ---- echo server and its clients ------------------------------------------------------ */

#define NCL 8
typedef struct sconn {
    pact_transport *t;
    int made, lost, paused;
} sconn;

typedef struct client {
    int used, connecting, closed, aborted, made, lost, eof;
    pact_op op;
    pact_transport *t;
    stream st; /* what the client wrote; received = the echo */
} client;

static pact_server *server;
static int server_closing;
static uint16_t server_port;
static client cls[NCL];
static int sconns_live;

static void sc_made(pact_transport *t, void *user)
{
    sconn *c = user;
    CHECK(!c->made, "server connection_made twice");
    c->made = 1;
    c->t = t;
}

static void sc_data(pact_transport *t, const void *data, size_t len, void *user)
{
    sconn *c = user;
    CHECK(c->made && !c->lost && !c->paused, "server data_received out of order");
    pact_transport_write(t, data, len);
}

static void sc_pause(pact_transport *t, void *user)
{
    sconn *c = user;
    if (!c->paused && pact_transport_pause_reading(t) == 0)
        c->paused = 1;
}

static void sc_resume(pact_transport *t, void *user)
{
    sconn *c = user;
    if (c->paused) {
        c->paused = 0;
        pact_transport_resume_reading(t);
    }
}

static void sc_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    sconn *c = user;
    CHECK(c->made && !c->lost, "server connection_lost out of order");
    c->lost = 1;
    sconns_live--;
    free(c);
}

static const pact_protocol sc_proto = {
    .connection_made = sc_made,
    .data_received = sc_data,
    .connection_lost = sc_lost,
    .pause_writing = sc_pause,
    .resume_writing = sc_resume,
};

static int sc_factory(pact_server *s, void *fu, const pact_protocol **proto, void **user)
{
    (void)s;
    (void)fu;
    sconn *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    sconns_live++;
    *proto = &sc_proto;
    *user = c;
    return 0;
}

static void cl_made(pact_transport *t, void *user)
{
    client *c = user;
    CHECK(!c->made && c->t == t, "client connection_made out of order");
    c->made = 1;
}

static void cl_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    client *c = user;
    CHECK(c->made && !c->lost && !c->eof, "client data_received out of order");
    stream_rx(&c->st, data, len);
}

static int cl_eof(pact_transport *t, void *user)
{
    (void)t;
    client *c = user;
    CHECK(c->made && !c->lost && !c->eof, "client eof out of order");
    c->eof = 1;
    return 0;
}

static void cl_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    (void)err;
    client *c = user;
    CHECK(c->made && !c->lost, "client connection_lost out of order");
    c->lost = 1;
    c->t = NULL;
    stream_free(&c->st);
    c->used = 0;
}

static const pact_protocol cl_proto = {
    .connection_made = cl_made,
    .data_received = cl_data,
    .eof_received = cl_eof,
    .connection_lost = cl_lost,
};

static void cl_connected(pact_loop *loop, pact_transport *t, int err, void *user)
{
    (void)loop;
    client *c = user;
    CHECK(c->connecting, "connect callback twice");
    c->connecting = 0;
    c->op = 0;
    if (!t) {
        CHECK(err == -ECANCELED || err == -ECONNREFUSED || err == -ETIMEDOUT ||
                  err == -ECONNRESET,
              "client connect: %s", pact_strerror(err));
        stream_free(&c->st);
        c->used = 0;
        return;
    }
    CHECK(err == 0, "connect gave a transport and an error");
    c->t = t;
}

static void server_start(void)
{
    int e = pact_server_listen_tcp(L, "127.0.0.1", 0, NULL, sc_factory, NULL, &server);
    CHECK(e == 0, "listen: %s", pact_strerror(e));
    server_port = (uint16_t)pact_server_port(server);
    server_closing = 0;
}

static void server_closed_cb(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    CHECK(server_closing, "server wait_closed before close");
    server = NULL;
}

static void server_step(void)
{
    if (!server) {
        server_start();
        return;
    }
    unsigned what = rn(100);
    if (what < 3 && !server_closing) {
        server_closing = 1;
        CHECK(pact_server_close(server) == 0, "server close");
        pact_server_wait_closed(server, server_closed_cb, NULL);
        return;
    }
    client *c = &cls[rn(NCL)];
    if (!c->used) {
        if (server_closing)
            return;
        memset(c, 0, sizeof *c);
        c->used = c->connecting = 1;
        stream_init(&c->st, ++next_stream_id);
        c->st.what = "echo client";
        c->op = pact_connect_tcp(L, "127.0.0.1", server_port, &cl_proto, c,
                                 cl_connected, c);
        CHECK(c->op > 0, "connect_tcp: %s", pact_strerror((int)c->op));
        return;
    }
    if (c->connecting) {
        if (what < 20) {
            int e = pact_op_cancel(L, c->op);
            CHECK(e == 0 || e == -EALREADY, "cancel connect_tcp: %s", pact_strerror(e));
        }
        return;
    }
    if (!c->t || c->closed || c->aborted || c->lost)
        return;
    if (what < 85) {
        if (pact_transport_is_closing(c->t) || stream_full(&c->st) ||
            stream_backlog(&c->st) > (1u << 20))
            return;
        uint32_t len = 1 + rn(chance(80) ? 300 : 20000);
        uint8_t *buf = malloc(len);
        uint32_t seq = stream_push(&c->st, buf, len);
        int e = pact_transport_write(c->t, buf, len);
        free(buf);
        CHECK(e == 0, "client write: %s", pact_strerror(e));
        stream_sent(&c->st, seq, len);
    } else if (what < 95) {
        c->closed = 1;
        pact_transport_close(c->t);
    } else {
        c->aborted = 1;
        pact_transport_abort(c->t);
    }
}

/* ---- timers -------------------------------------------------------------------- */

#define NTM 32
typedef struct ttimer {
    pact_handle h;
    int armed, ran, cancelled;
} ttimer;
static ttimer tms[NTM];

static void tm_fire(pact_loop *loop, void *user)
{
    (void)loop;
    ttimer *t = user;
    CHECK(t->armed && !t->ran, "timer ran twice or unarmed");
    CHECK(!t->cancelled, "a timer cancelled in time ran");
    t->ran = 1;
    t->armed = 0;
}

static void timer_step(void)
{
    ttimer *t = &tms[rn(NTM)];
    if (!t->armed) {
        t->ran = t->cancelled = 0;
        t->armed = 1;
        t->h = chance(30) ? pact_call_soon(L, tm_fire, t)
                          : pact_call_later(L, (uint64_t)rn(3000) * 1000, tm_fire, t);
        CHECK(t->h > 0, "call_later: %s", pact_strerror((int)t->h));
        return;
    }
    int e = pact_handle_cancel(L, t->h);
    CHECK(e == 0, "cancel of a pending timer answered %s", pact_strerror(e));
    t->cancelled = 1;
    t->armed = 0;
    /* Cancelling it again: stale now. */
    e = pact_handle_cancel(L, t->h);
    CHECK(e == -ENOENT || e == -EALREADY, "second timer cancel answered %s", pact_strerror(e));
}

/* Diagnosis: which stream's send holds these bytes? */
static void find_in(const stream *s, const uint8_t *b, size_t n)
{
    for (uint32_t i = s->head; i != s->tail; i++) {
        const chunk *c = &s->q[i % QMAX];
        for (uint32_t p = 0; p + n <= c->len; p++) {
            size_t q = 0;
            while (q < n && b[q] == pat(c->base, p + (uint32_t)q))
                q++;
            if (q == n)
                fprintf(stderr, "torture: those bytes are stream %llu (%s) send #%u "
                        "offset %u (done %d, sent %u, verified to %u)\n",
                        (unsigned long long)s->id, s->what, i, p, c->done, c->sent, c->vpos);
        }
    }
}

static void find_bytes(const uint8_t *b, size_t n)
{
    for (int i = 0; i < NRAW; i++)
        if (raws[i].used)
            for (int j = 0; j < 2; j++)
                find_in(&raws[i].st[j], b, n);
    for (int i = 0; i < NTP; i++)
        if (tps[i].used)
            for (int j = 0; j < 2; j++)
                find_in(&tps[i].st[j], b, n);
    for (int i = 0; i < NCL; i++)
        if (cls[i].used)
            find_in(&cls[i].st, b, n);
}

/* ---- the driver ------------------------------------------------------------------- */

static void check_step(void)
{
    pact_loop_stats st;
    pact_loop_get_stats(L, &st);
    CHECK(st.stray_completions == 0, "%llu stray completions",
          (unsigned long long)st.stray_completions);
    CHECK(st.ops_live >= (uint64_t)nlive, "loop counts %llu live ops, %d are ours",
          (unsigned long long)st.ops_live, nlive);
}

static void run_once(int64_t timeout_ns)
{
    int e = pact_loop_run_once(L, timeout_ns);
    CHECK(e >= 0, "run_once: %s", pact_strerror(e));
    check_step();
}

static void one_step(void)
{
    unsigned what = rn(1000);
    if (what < 200) {
        rawconn *rc = raw_pick();
        if (rc)
            start_recv(rc, (int)rn(2));
    } else if (what < 380) {
        rawconn *rc = raw_pick();
        if (rc)
            start_send(rc, (int)rn(2), chance(40));
    } else if (what < 410) {
        rawconn *rc = raw_pick();
        if (rc)
            start_poll(rc, (int)rn(2));
    } else if (what < 430) {
        start_sleep();
    } else if (what < 450) {
        start_work();
    } else if (what < 470) {
        start_accept();
    } else if (what < 490) {
        start_connect();
    } else if (what < 620) {
        cancel_random();
    } else if (what < 627) {
        rawconn *rc = &raws[rn(NRAW)];
        if (rc->used && !rc->closing)
            raw_close(rc);
    } else if (what < 800) {
        tp_step();
    } else if (what < 900) {
        server_step();
    } else if (what < 940) {
        timer_step();
    } else {
        run_once(chance(90) ? 0 : (int64_t)rn(500) * 1000);
    }
}

static int all_drained(void)
{
    for (int i = 0; i < NRAW; i++) {
        rawconn *rc = &raws[i];
        if (rc->used && !rc->closing &&
            (!stream_drained(&rc->st[0]) || !stream_drained(&rc->st[1])))
            return 0;
    }
    for (int i = 0; i < NTP; i++) {
        tpair *p = &tps[i];
        if (!p->used)
            continue;
        int clean = !p->s[0].closed && !p->s[0].aborted && !p->s[0].lost &&
                    !p->s[1].closed && !p->s[1].aborted && !p->s[1].lost;
        if (clean && (!stream_drained(&p->st[0]) || !stream_drained(&p->st[1])))
            return 0;
    }
    for (int i = 0; i < NCL; i++) {
        client *c = &cls[i];
        if (c->used && c->t && !c->closed && !c->aborted && !c->lost && !c->eof &&
            server && !stream_drained(&c->st))
            return 0;
    }
    return 1;
}

/* Stops the random actions and lets every open connection deliver all it
 * sent: then the received bytes must equal the sent bytes exactly. */
static void drain(void)
{
    for (int i = nlive - 1; i >= 0; i--)
        if (i < nlive && live[i]->kind != RK_RECV && live[i]->kind != RK_SEND &&
            live[i]->kind != RK_SEND_ALL)
            pact_op_cancel(L, live[i]->h);
    for (int i = 0; i < NTP; i++)
        for (int j = 0; j < 2; j++)
            if (tps[i].used && tps[i].s[j].paused && tps[i].s[j].t) {
                pact_transport_resume_reading(tps[i].s[j].t);
                tps[i].s[j].paused = 0;
            }
    uint64_t end = pact_now() + 30ull * 1000 * 1000 * 1000;
    while (!all_drained()) {
        CHECK(pact_now() < end, "not drained after 30 s");
        for (int i = 0; i < NRAW; i++)
            if (raws[i].used && !raws[i].closing)
                for (int s = 0; s < 2; s++)
                    if (raws[i].recvs[s] == 0 && !stream_drained(&raws[i].st[1 - s]))
                        start_recv(&raws[i], s);
        run_once(1000 * 1000);
    }
}

static void close_everything(void)
{
    for (int i = 0; i < NRAW; i++)
        if (raws[i].used && !raws[i].closing)
            raw_close(&raws[i]);
    for (int i = 0; i < NTP; i++)
        for (int j = 0; j < 2; j++)
            if (tps[i].used && tps[i].s[j].t && !tps[i].s[j].lost)
                pact_transport_close(tps[i].s[j].t);
    for (int i = 0; i < NCL; i++) {
        if (cls[i].used && cls[i].connecting)
            pact_op_cancel(L, cls[i].op);
        else if (cls[i].used && cls[i].t)
            pact_transport_close(cls[i].t);
    }
    if (server && !server_closing) {
        server_closing = 1;
        pact_server_close(server);
        pact_server_wait_closed(server, server_closed_cb, NULL);
    }
    for (int i = 0; i < nlive; i++)
        pact_op_cancel(L, live[i]->h);
    for (int i = 0; i < NTM; i++)
        if (tms[i].armed) {
            CHECK(pact_handle_cancel(L, tms[i].h) == 0, "timer cancel at the end");
            tms[i].armed = 0;
        }
    uint64_t end = pact_now() + 30ull * 1000 * 1000 * 1000;
    for (;;) {
        int busy = nlive > 0 || server != NULL || sconns_live > 0;
        for (int i = 0; i < NRAW; i++)
            busy |= raws[i].used;
        for (int i = 0; i < NTP; i++)
            busy |= tps[i].used;
        for (int i = 0; i < NCL; i++)
            busy |= cls[i].used;
        if (!busy)
            break;
        CHECK(pact_now() < end, "not closed after 30 s (%d ops live)", nlive);
        run_once(1000 * 1000);
    }
    /* Anything the loop still runs (a last callback) finishes now. */
    while (pact_loop_run_once(L, 0) > 0)
        ;
}

typedef struct torture_result {
    uint64_t steps, started, completed, cancels, tp_bytes, cq_overflows;
} torture_result;

static void reset_state(void)
{
    memset(raws, 0, sizeof raws);
    memset(tps, 0, sizeof tps);
    memset(cls, 0, sizeof cls);
    memset(tms, 0, sizeof tms);
    nlive = 0;
    nstale = 0;
    nstarted = ncompleted = ncancels = tp_bytes = 0;
    accepts_live = connects_live = sconns_live = 0;
    server = NULL;
    server_closing = 0;
    while (rec_free) {
        oprec *r = rec_free;
        rec_free = r->next_free;
        free(r);
    }
}

/* Runs `ops` random steps with `seed`; aborts with the seed printed on
 * the first violation. */
static torture_result torture_run(uint64_t seed, uint64_t ops)
{
    reset_state();
    tt_seed = seed;
    tt_ops = ops;
    tt_rng = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    if (!tt_rng)
        tt_rng = 1;
    tt_step = 0;
    tt_find_hook = find_bytes;
    int fds_before = count_open_fds();

    pact_loop_options o;
    pact_loop_options_init(&o);
    o.debug = 0;
    /* TORTURE_DEPTH=2: a tiny ring (SQ 2, CQ 8), so the SQ fills and the
     * CQ overflows under load. */
    const char *depth = getenv("TORTURE_DEPTH");
    if (depth)
        o.queue_depth = (unsigned)atoi(depth);
    int e = pact_loop_create(&L, &o);
    CHECK(e == 0, "loop_create: %s", pact_strerror(e));
    tt_engine = pact_loop_engine(L) == PACT_ENGINE_URING ? "uring" : "epoll";
    const char *want = getenv("PACT_ENGINE");
    if (want && strcmp(want, tt_engine) != 0)
        FAIL("asked for engine %s, got %s (%s)", want, tt_engine,
             pact_loop_engine_reason(L) ? pact_loop_engine_reason(L) : "");

    listen_fd = pact_tcp_listen("127.0.0.1", 0, 8);
    CHECK(listen_fd >= 0, "listen: %s", pact_strerror(listen_fd));
    listen_addr.sin_family = AF_INET;
    listen_addr.sin_port = htons((uint16_t)pact_socket_port(listen_fd));
    listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    for (tt_step = 0; tt_step < ops; tt_step++) {
        one_step();
        if ((tt_step & 15) == 0)
            check_step();
    }
    drain();
    close_everything();

    pact_loop_stats st;
    pact_loop_get_stats(L, &st);
    CHECK(st.stray_completions == 0, "stray completions: %llu",
          (unsigned long long)st.stray_completions);
    tt_cq_overflows = st.cq_overflows;
    CHECK(st.ops_live == 0, "ops live after everything closed: %llu",
          (unsigned long long)st.ops_live);
    CHECK(nstarted == ncompleted, "started %llu ops, %llu completed",
          (unsigned long long)nstarted, (unsigned long long)ncompleted);
    close(listen_fd);
    listen_fd = -1;
    e = pact_loop_close(L);
    CHECK(e == 0, "loop_close: %s", pact_strerror(e));
    pact_loop_get_stats(L, &st);
    CHECK(st.ops_live == 0 && st.stray_completions == 0 &&
              st.ops_started == st.ops_completed,
          "after close: live %llu stray %llu started %llu completed %llu",
          (unsigned long long)st.ops_live, (unsigned long long)st.stray_completions,
          (unsigned long long)st.ops_started, (unsigned long long)st.ops_completed);
    pact_loop_free(L);
    L = NULL;
    int fds_after = count_open_fds();
    CHECK(fds_after == fds_before, "fds: %d before, %d after", fds_before, fds_after);
    torture_result res = {ops, nstarted, ncompleted, ncancels, tp_bytes, tt_cq_overflows};
    reset_state();
    return res;
}

#ifndef TORTURE_NO_MAIN
int main(int argc, char **argv)
{
    uint64_t seed = 0, ops = 100000, seeds = 1;
    int have_seed = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 0);
            have_seed = 1;
        } else if (!strcmp(argv[i], "--ops") && i + 1 < argc) {
            ops = strtoull(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
            seeds = strtoull(argv[++i], NULL, 0);
        } else {
            fprintf(stderr, "usage: torture [--seed N] [--ops M] [--seeds K]\n"
                            "  runs K seeds (N, N+1, ...) of M random steps each;\n"
                            "  PACT_ENGINE=uring|epoll picks the engine\n");
            return 2;
        }
    }
    if (!have_seed)
        seed = (uint64_t)time(NULL);
    uint64_t total = 0, started = 0, cancels = 0, bytes = 0, overflows = 0;
    uint64_t t0 = pact_now();
    for (uint64_t k = 0; k < seeds; k++) {
        torture_result r = torture_run(seed + k, ops);
        total += r.steps;
        started += r.started;
        cancels += r.cancels;
        bytes += r.tp_bytes;
        overflows += r.cq_overflows;
    }
    double secs = (double)(pact_now() - t0) / 1e9;
    printf("torture: engine %s, seeds %llu..%llu: %llu steps, %llu ops started "
           "and completed once, %llu cancels, %llu transport bytes checked, "
           "%llu CQ overflows, %.1f s: ok\n",
           tt_engine, (unsigned long long)seed, (unsigned long long)(seed + seeds - 1),
           (unsigned long long)total, (unsigned long long)started,
           (unsigned long long)cancels, (unsigned long long)bytes,
           (unsigned long long)overflows, secs);
    return 0;
}
#endif
