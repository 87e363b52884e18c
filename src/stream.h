/* SPDX-License-Identifier: MIT */
/* Transports: an endpoint (endpoint.h) plus an ops table. transport.c is
 * the public pact_transport_* API: it makes the checks every transport
 * shares and calls the table. The plain stream (stream.c, with sendfile.c
 * as one item of its write queue) is one implementation, TLS (tls.c)
 * another. Shared by transport.c, stream.c, sendfile.c, server.c,
 * client.c, process.c and tls.c. */
#ifndef PACT_STREAM_H
#define PACT_STREAM_H

#ifndef _WIN32
#include <sys/un.h>
#endif

#include "endpoint.h"
#include "loop.h"

/* What differs between transports. Called by transport.c after the
 * shared checks; a NULL member answers -ENOTSUP (or nothing). */
typedef struct pact_transport_ops {
    pact_endpoint_ops ep; /* first: the endpoint's ops point here */
    /* Bytes to send (not closing, no write_eof, not a read pipe). */
    int (*writev)(pact_transport *t, const struct iovec *iov, int iovcnt);
    /* The same for one buffer (pact_transport_write; NULL: writev). */
    int (*write)(pact_transport *t, const void *data, size_t len);
    /* pact_transport_write_received(): the same, for bytes that may sit
     * in the receive buffer the loop lends to the running callback (NULL:
     * write copies them). */
    int (*write_received)(pact_transport *t, const void *data, size_t len);
    /* write_eof was just requested: 0, or a negative errno when the
     * write side is gone already (eof_requested is then cleared). */
    int (*write_eof)(pact_transport *t);
    /* close: the endpoint is closing now; stop reading, flush, settle. */
    void (*close)(pact_transport *t);
    /* A write after close found the transport taking no more writes (not
     * draining): 1 if the close drains after all, known only now
     * (ep.draining is then set), else 0. NULL: 0. The stream's close
     * behind a write's first try (stream.c, stream_close). */
    int (*drains_after_all)(pact_transport *t);
    /* t->paused was just set (pause) or cleared (resume). */
    void (*pause_reading)(pact_transport *t);
    int (*resume_reading)(pact_transport *t);
    size_t (*write_buffer_size)(const pact_transport *t);
    /* New marks (checked already): keep them, check the flow. */
    int (*set_marks)(pact_transport *t, const pact_marks *m);
    pact_marks (*marks)(const pact_transport *t);
    int (*fd)(const pact_transport *t);
    /* getsockname (peer = 0) or getpeername (peer = 1). */
    int (*name)(const pact_transport *t, struct sockaddr_storage *ss,
                socklen_t *len, int peer);
    /* Arguments checked, transport open and writable. */
    int (*sendfile)(pact_transport *t, pact_os_fd file_fd, int64_t offset,
                    size_t count, pact_op_cb cb, void *user);
} pact_transport_ops;

struct pact_transport {
    pact_endpoint ep;
    const pact_protocol *proto;
    void *user;
    /* pact_transport_writes_after_close(); 32 bits, saturating, so that it
     * shares a word with the flags below (a stream's size: see
     * pact_stream). */
    uint32_t writes_after_close;
    uint8_t kind;              /* pact_stream_kind */
    uint8_t paused : 1;        /* pause_reading */
    uint8_t eof_requested : 1; /* write_eof was called */
    /* Sending failed while received bytes still wait for a paused reader:
     * writes answer -EPIPE, the error comes after those bytes. */
    uint8_t write_failed : 1;
    /* io_uring (engine_uring.c, "a stream's receive"): the evidence its
     * stream's multishot receive counts (op.h, recv_count) may not be
     * 0. Without it a data completion that left nothing in the socket
     * needs nothing of the op; here, in the line the stream's receive
     * reads anyway. */
    uint8_t recv_evidence : 1;
    /* Bytes the peer sent were dropped unread by the protocol: a socket
     * is then closed with a reset (stream.c, dropped_unread). */
    uint8_t unread_dropped : 1;
};

static inline const pact_transport_ops *pact__transport_ops(const pact_transport *t)
{
    return pact_container_of(pact__endpoint_ops(&t->ep), pact_transport_ops, ep);
}

/* Fills the shared part of a transport (refs = 1, not yet listed). */
void pact__transport_init(pact_transport *t, pact_loop *loop,
                          const pact_transport_ops *ops, pact_stream_kind kind,
                          const pact_protocol *proto, void *user);
/* The protocol's pause_writing / resume_writing (endpoint ops `writing`). */
void pact__transport_writing(pact_endpoint *e, int pause);
/* pause_writing / resume_writing as the write buffer crosses the marks. */
void pact__transport_flow(pact_transport *t);
/* pact__endpoint_flow_new_marks for a transport (its ops' marks). */
void pact__transport_flow_new_marks(pact_transport *t);
/* pact__transport_deliver() for a buffered protocol (transport.c). */
size_t pact__transport_deliver_buffered(pact_transport *t, const char *data,
                                        size_t len);
/* Hands received bytes to the protocol (data_received, or a buffered
 * protocol's get_buffer/buffer_updated); returns how many it took. A
 * buffered protocol that pauses inside buffer_updated takes no more:
 * after pause_reading no data callback runs until resume, and the caller
 * holds the rest (docs/contract.md §5). A NULL or empty buffer aborts the
 * transport with -ENOBUFS; after a close the rest is dropped. Inline: it
 * runs for every chunk received, and with the buffered protocol's loop
 * in the same function the common case paid that loop's register saves. */
static inline size_t pact__transport_deliver(pact_transport *t, const char *data,
                                             size_t len)
{
    if (t->proto->get_buffer)
        return pact__transport_deliver_buffered(t, data, len);
    if (t->proto->data_received)
        t->proto->data_received(t, data, len, t->user);
    return len;
}
/* The endpoint ops `force_close` of every transport: abort. */
void pact__transport_force_close(pact_endpoint *e);

/* ---- the plain stream ------------------------------------------------------ */

/* An item of a stream's write queue that is not bytes (a sendfile's file
 * range): the writer starts it once every byte written before it is out,
 * and bytes written after it wait until it calls pact__stream_item_done(). */
typedef struct pact_write_item pact_write_item;
typedef struct pact_write_item_ops {
    void (*start)(pact_write_item *it);  /* its turn */
    void (*cancel)(pact_write_item *it); /* abort: it ends (done) later */
    void (*set_ref)(pact_write_item *it, int ref); /* its op in flight */
} pact_write_item_ops;

struct pact_write_item {
    const pact_write_item_ops *ops;
    struct pact_stream *s;
    size_t bytes_before; /* pending bytes written before it, not yet out */
    unsigned started : 1;
};

/* What only some streams need, kept out of the stream so that an idle
 * socket transport stays small (the idle-connection memory goal of
 * docs/design-notes.md): taken on first need (a write the kernel did not
 * take at once — most writes never need it, stream.c sends eagerly —,
 * bytes held while paused, a pipe's first read, a write pipe's watch, a
 * sendfile, set_write_buffer_limits). A socket stream gives it back once
 * its writes have drained and nothing else is in it, to a small cache on
 * the loop (buffers included), from which the next stream that needs one
 * takes it: a connection that wrote and went quiet holds none, and a
 * steady stream of writes allocates nothing. */
typedef struct pact_stream_more {
    /* The first cache line (the block is 64-byte aligned,
     * pact__stream_more) holds all an echo or a zero-copy reply touches
     * per request: its send, its zero-copy bytes, and a summary of the
     * queue (`queued`, `bufs_cap`) that stands for the fields on the
     * next line while they are empty. At 500 echoing connections every
     * block is out of the data cache by its stream's next request, so
     * each line read is a miss (callgrind, bench/README.md). What the
     * common case also needs to know about the rest (kept, marks of its
     * own, held bytes) is in pact_stream's bits, which it reads anyway. */
    /* The send in flight (of `inflight` or `lent`): on io_uring the
     * stream's send slot (op.h), in flight while slot.pending_cqes > 0,
     * else an op. Here, not in pact_stream: only a stream with a send in
     * flight needs it, and s->more lives (is not given back) until the
     * send is back. */
    pact_send_slot slot;
    struct pact_stream *stream; /* whose it is now (the slot's done) */
    /* A zero-copy write (pact_transport_write_received) in flight: its
     * bytes are in the loop's receive buffer lent_id, kept from the
     * kernel until the send is back. NULL otherwise. lent_len fits 32
     * bits: the bytes lie in one receive buffer. */
    const char *lent;
    uint32_t lent_len;
    int lent_id;
    /* 0: send_op and item are unset and inflight and pending hold no
     * bytes, so the checks of every request need not read them (on the
     * next line). Set wherever one of them is set or gets bytes
     * (queue_mark in stream.c), cleared only where they have all been
     * read empty (queue_idle). */
    uint32_t queued;
    /* inflight.cap + pending.cap, at most UINT32_MAX (more_stays reads
     * it; pending.cap is on the third line). */
    uint32_t bufs_cap;
    pact_op send_op;
    pact_write_item *item; /* a sendfile queued or running */
    pact_wbuf inflight; /* the kernel may be reading it: never touched */
    pact_wbuf pending;  /* writes made meanwhile */
    /* Read only when pact_stream.own_marks says they are not the
     * defaults. */
    pact_marks marks;
    pact_wbuf held;     /* bytes received while paused, in order */
    char *rbuf;         /* pipes only: sockets read into the loop's buffers */
    pact_op poll_op;       /* write pipes watch for their reader going away */
#ifdef _WIN32
    char hangup_probe[16]; /* ...with a read on their duplex end */
#endif
    struct pact_stream_more *next_cached; /* in the loop's cache */
} pact_stream_more;

/* The layout the comment above relies on. */
_Static_assert(offsetof(pact_stream_more, send_op) == 64,
               "the echo's fields of pact_stream_more outgrew one cache line");

typedef struct pact_stream {
    pact_transport t;
    int fd;
    unsigned has_held : 1;         /* a receive result kept while paused */
    unsigned resume_scheduled : 1; /* resume_delivery is queued */
    unsigned eof_seen : 1;         /* the peer's EOF was received */
    unsigned eof_done : 1;         /* write_eof done: the write side is shut */
    /* A write pipe whose file refuses RWF_NOWAIT (a tty): its eager
     * writes make it non-blocking for the call (pact__rw_nowait). */
    unsigned refuses_rwf_nowait : 1;
    /* An eager send failed with EPIPE: the peer was seen gone by a write,
     * before any receive could say so (on_read_end). */
    unsigned eager_send_epipe : 1;
    /* The send in flight is a write's first try, which only waited for
     * the loop's next submission (io_uring: a write joined to it, or sent
     * from the receive buffer) where epoll's eager send would have gone
     * at once: its EPIPE counts as an eager send's (on_read_end). */
    unsigned first_send_in_flight : 1;
    /* The receive's reset was reported as that send's EPIPE before the
     * send came back: if it went out after all, the reset it was. It
     * does go out first when a callback's write fills the submission
     * queue: the send is submitted there, silently (engine_uring.c), its
     * completion handed over by the next wait, while a later submission
     * in the same batch runs the kernel's deferred work and posts the
     * reset now (tests/test_stream.c,
     * a_reply_whose_success_is_known_after_the_peers_reset_is_econnreset). */
    unsigned epipe_presumed : 1;
    /* pact_transport_write_received found the socket backed up or the
     * stream streaming (a zero-copy send came back short, or a second
     * write came while one was in flight): that many more of them write
     * at once as pact_transport_write does (see stream_write_received). */
    unsigned inline_writes : 4;
    /* Its write state drained once already and went back: the next time
     * it drains the stream may keep it (release_more). */
    unsigned drained_before : 1;
    /* Its drained write state is kept for the next write instead of
     * given back (release_more: MORE_KEPT, counted in
     * loop->stream_more_kept, or MORE_KEPT_SMALL, with small buffers or
     * none, in loop->stream_more_kept_small). */
    unsigned more_kept : 2;
    /* s->more->marks are not pact__default_marks (set_write_buffer_limits
     * set them): without it the writes' checks need not read them. */
    unsigned own_marks : 1;
    /* s->more->held may hold bytes (set before any are put there):
     * without it the receive of every chunk need not read s->more. */
    unsigned held_bytes : 1;
    /* pause_reading ended a receive that read large messages by
     * readiness (pact__recv_reads_large): the next one starts so. */
    unsigned resume_by_readiness : 1;
    /* has_held: EOF (0) or the error (a negative errno: above -2048,
     * as every errno value is) behind the held bytes. */
    signed int held_result : 12;
    /* How far into its malloc'd block the stream lies, in 16-byte steps
     * (stream_alloc in stream.c: a 64-byte aligned stream). */
    unsigned alloc_pad : 2;
    /* Before read_op, which a request does not read: see the
     * _Static_assert below. */
    pact_stream_more *more; /* NULL until needed (see above) */
    pact_op read_op;
} pact_stream;

/* A server's idle connection is this struct plus its receive op (and the
 * engine's per-fd state): 136 bytes, carved 64-byte aligned from a
 * 184-byte block (a 192-byte malloc chunk; stream_alloc), its
 * endpoint's ready node (24 bytes, so that connection_made and the final
 * close allocate no handle) included. Room for the node came from the
 * endpoint's kind name and force_close moving to its ops table
 * (pact_resource_kind) and writes_after_close's 32 bits; 152 was a
 * 160-byte chunk, hence held_result as a bit-field and the send op in
 * `more`: only a stream that writes has one. Growing it costs memory per
 * idle connection (<= 512 bytes of pact state per idle socket transport,
 * measured by micro_pact idle_transport); what only some streams need
 * goes in pact_stream_more. */
_Static_assert(sizeof(pact_stream) <= 136, "pact_stream grew past 136 bytes");
/* What a request reads of its stream (the ops through t.ep.res.kind,
 * loop, the endpoint's states, proto and user, the transport's and the
 * stream's bits, fd, more) lies in the 64 bytes from offset 64: one
 * cache line, as streams are 64-byte aligned (stream_alloc in stream.c).
 * In 72 bytes at a 16-byte aligned address it was two lines per
 * request. */
_Static_assert(offsetof(pact_stream, t.ep.res.kind) == 64 &&
                   offsetof(pact_stream, more) + sizeof(void *) <= 128,
               "a request's fields of pact_stream left its second cache line");

/* The stream's pact_stream_more, taken on the first call (from the
 * loop's cache, else allocated); NULL on ENOMEM. */
pact_stream_more *pact__stream_more(pact_stream *s);

/* Creates a plain stream transport; created_at names the caller for
 * debug reports. Closes fd on failure. */
int pact__transport_create(pact_loop *loop, int fd, pact_stream_kind kind,
                           const pact_protocol *proto, void *user,
                           void *created_at, pact_transport **out);

/* Queues a write item behind the bytes written so far. */
void pact__stream_queue_item(pact_stream *s, pact_write_item *it);
/* The item is over (err < 0: the stream fails with it, unless it was
 * cancelled); the bytes written after it go. */
void pact__stream_item_done(pact_stream *s, int err);
/* The plain stream's pact_transport_sendfile (sendfile.c). */
int pact__stream_sendfile(pact_transport *t, pact_os_fd file_fd, int64_t offset,
                          size_t count, pact_op_cb cb, void *user);

#ifndef _WIN32
/* Fills a Unix socket address; '@' at the start = abstract namespace. */
int pact__unix_address(const char *path, struct sockaddr_un *sun, socklen_t *len);
#endif

#endif
