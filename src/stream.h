/* SPDX-License-Identifier: MIT */
/* The stream transport's private state, shared by stream.c, server.c,
 * client.c and sendfile.c. */
#ifndef PACT_STREAM_H
#define PACT_STREAM_H

#include "endpoint.h"
#include "loop.h"


struct pact_sendfile;

/* A transport implemented by another layer (TLS) plugs in here: when
 * t->ops is set, every public pact_transport_* function delegates to it,
 * so users see one transport API whatever is underneath. A NULL member
 * answers -ENOTSUP (or 0 for queries). */
typedef struct pact_transport_ops {
    int (*write)(pact_transport *t, const void *data, size_t len);
    int (*writev)(pact_transport *t, const struct iovec *iov, int iovcnt);
    int (*write_eof)(pact_transport *t);
    int (*can_write_eof)(const pact_transport *t);
    int (*close)(pact_transport *t);
    int (*abort)(pact_transport *t);
    int (*pause_reading)(pact_transport *t);
    int (*resume_reading)(pact_transport *t);
    int (*is_reading)(const pact_transport *t);
    int (*is_closing)(const pact_transport *t);
    size_t (*write_buffer_size)(const pact_transport *t);
    int (*set_write_buffer_limits)(pact_transport *t, size_t high, size_t low);
    void (*get_write_buffer_limits)(const pact_transport *t, size_t *high,
                                    size_t *low);
    int (*set_protocol)(pact_transport *t, const pact_protocol *proto,
                        void *user);
    int (*fd)(const pact_transport *t);
    int (*sockname)(const pact_transport *t, struct sockaddr_storage *ss,
                    socklen_t *len);
    int (*peername)(const pact_transport *t, struct sockaddr_storage *ss,
                    socklen_t *len);
    int (*sendfile)(pact_transport *t, int file_fd, int64_t offset,
                    size_t count, pact_op_cb cb, void *user);
    uint64_t (*writes_after_close)(const pact_transport *t);
} pact_transport_ops;

/* What only some transports need, kept out of the transport so that an
 * idle socket transport stays small (the idle-connection memory goal in
 * docs/design-notes.md): allocated on first need
 * (the first write — once per connection, never per write —, bytes held
 * while paused, a pipe's first read, a write pipe's watch, a sendfile,
 * set_write_buffer_limits) and kept until the transport is freed, so a
 * steady stream of writes allocates nothing. */
typedef struct pact_transport_more {
    pact_wbuf inflight; /* the kernel may be reading it: never touched */
    pact_wbuf pending;  /* writes made meanwhile */
    pact_wbuf held;     /* bytes received while paused, in order */
    char *rbuf;         /* pipes only: sockets read into the loop's buffers */
    size_t high_water, low_water;
    pact_op poll_op;    /* write pipes watch for their reader going away */
    struct pact_sendfile *sendfile; /* in progress (writes queue behind it) */
} pact_transport_more;

struct pact_transport {
    const pact_transport_ops *ops; /* NULL: this file's plain stream */
    void *impl;                    /* the other layer's state */
    pact_resource res; /* listed on the loop until connection_lost */
    pact_loop *loop;
    int fd;
    pact_stream_kind kind;
    const pact_protocol *proto;
    void *user;
    int refs; /* the transport itself + scheduled callbacks */

    unsigned made : 1;             /* connection_made has run */
    unsigned closing : 1;          /* close, abort or error: no more data */
    unsigned aborting : 1;         /* drop the write buffer, cancel all */
    unsigned finishing : 1;        /* final_close is scheduled */
    unsigned lost : 1;             /* connection_lost has run */
    unsigned paused : 1;           /* pause_reading */
    unsigned has_held : 1;         /* a receive result kept while paused */
    unsigned resume_scheduled : 1; /* resume_delivery is queued */
    unsigned eof_seen : 1;         /* the peer's EOF was received */
    unsigned eof_requested : 1;    /* write_eof was called */
    unsigned eof_done : 1;         /* ... and the write side is shut */
    unsigned write_paused : 1;     /* pause_writing was called */
    int lost_err;
    int held_result; /* has_held: EOF (0) or error behind the held bytes */

    pact_op read_op;
    pact_op send_op;
    pact_transport_more *more; /* NULL until needed (see above) */
    uint64_t writes_after_close;

    /* Servers track their connections. */
    pact_list server_link;
    void (*on_gone)(pact_transport *t, void *user);
    void *on_gone_user;
};

/* A server's idle connection is this struct plus its receive op (and the
 * engine's per-fd state): 168 bytes is a 176-byte malloc chunk. Growing it
 * costs memory per idle connection (the idle-connection memory goal in
 * docs/design-notes.md: <= 512 bytes of pact state
 * per idle socket transport, measured by micro_pact idle_transport); what
 * only some transports need goes in pact_transport_more. */
_Static_assert(sizeof(struct pact_transport) <= 168,
               "struct pact_transport grew past 168 bytes");

/* The transport's pact_transport_more, allocated on the first call; NULL
 * on ENOMEM. */
pact_transport_more *pact__transport_more(pact_transport *t);

static inline struct pact_sendfile *pact__transport_sendfile(const pact_transport *t)
{
    return t->more ? t->more->sendfile : NULL;
}

/* Creates a transport; created_at names the caller for debug reports. */
int pact__transport_create(pact_loop *loop, int fd, pact_stream_kind kind,
                           const pact_protocol *proto, void *user,
                           void *created_at, pact_transport **out);

/* Sendfile hooks used by stream.c. */
void pact__sendfile_cancel(pact_transport *t);
/* Buffered bytes that were written before the sendfile and must go first. */
size_t pact__sendfile_bytes_before(const pact_transport *t);
void pact__sendfile_consumed_before(pact_transport *t, size_t n);
/* The bytes before it are out: the sendfile may start. */
void pact__sendfile_ready(pact_transport *t);
/* Lets stream.c's writer run (after a sendfile, or to flush before one). */
void pact__transport_kick_write(pact_transport *t);
/* Called by sendfile.c when it is done, so writes queued behind it go. */
void pact__transport_sendfile_done(pact_transport *t, int err);

#include <sys/un.h>
/* Fills a Unix socket address; '@' at the start = abstract namespace. */
int pact__unix_address(const char *path, struct sockaddr_un *sun, socklen_t *len);

#endif
