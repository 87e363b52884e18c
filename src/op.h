/* The operation ("the overlapped"): the state of one started operation,
 * owned by the loop from start until its callback has run. Everything the
 * kernel may read or write while the op is in flight — the sockaddr, the
 * timespec of a linked timeout — lives inside this struct, and the struct
 * is not reused before every completion the kernel owes for it has been
 * reaped (pending_cqes == 0). */
#ifndef PACT_OP_H
#define PACT_OP_H

#include <linux/time_types.h>
#include <stdint.h>
#include <sys/socket.h>

#include "pact.h"
#include "heap.h"
#include "list.h"
#include "slab.h"

typedef enum pact_op_kind {
    PACT_OP_RECV,
    PACT_OP_SEND,
    PACT_OP_SEND_ALL,
    PACT_OP_ACCEPT,
    PACT_OP_CONNECT,
    PACT_OP_SHUTDOWN,
    PACT_OP_READ,
    PACT_OP_WRITE,
    PACT_OP_POLL,
    PACT_OP_SLEEP,
    PACT_OP_KIND_COUNT
} pact_op_kind;

typedef enum pact_op_state {
    PACT_OP_QUEUED,   /* started, not yet handed to the engine */
    PACT_OP_INFLIGHT, /* the engine (kernel) has it */
    PACT_OP_DONE,     /* result known, callback pending or running */
} pact_op_state;

enum pact_op_flag {
    PACT_OPF_CANCEL_REQUESTED = 1u << 0,
    PACT_OPF_TIMED_OUT = 1u << 1,     /* its deadline fired */
    PACT_OPF_INTERNAL = 1u << 2,      /* the loop's own; does not keep it alive */
    PACT_OPF_LINK_TIMEOUT = 1u << 3,  /* io_uring linked timeout armed */
    PACT_OPF_CONNECTING = 1u << 4,    /* epoll: connect() said EINPROGRESS */
};

typedef struct pact_op_s {
    pact_slab_entry slab; /* must be first */
    uint8_t kind;
    uint8_t state;
    uint16_t flags;
    /* Completions the kernel still owes for this op (the op itself, its
     * cancel request, its linked timeout). Never freed while > 0. */
    int16_t pending_cqes;
    int fd;
    pact_op_cb cb;
    void *user;
    int64_t result;
    void *buf;
    size_t len;
    size_t transferred; /* pact_send_all() progress */
    int64_t offset;
    int msg_flags; /* recv/send flags, shutdown how, poll events */
    uint64_t timeout_ns;          /* requested deadline, 0 = none */
    pact_heap_node deadline;      /* sleep expiry or heap deadline */
    pact_list link;               /* submit queue, done queue, epoll wait queue */
    struct __kernel_timespec ts;  /* linked timeout; the kernel reads it */
    socklen_t addrlen;
    struct sockaddr_storage addr; /* connect target / accepted peer */
    void *created_at;             /* caller's return address (debug reports) */
} pact_op_s;

#endif
