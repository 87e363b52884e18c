/* SPDX-License-Identifier: MIT */
/* The operation ("the overlapped"): the state of one started operation,
 * owned by the loop from start until its callback has run. Everything the
 * kernel may read or write while the op is in flight — the timespec of a
 * linked timeout here, the sockaddr and msghdr in its pact_op_ext — lives
 * as long as this struct, and neither is reused before every completion
 * the kernel owes for the op has been reaped (pending_cqes == 0). */
#ifndef PACT_OP_H
#define PACT_OP_H

#include <stdint.h>
#ifdef _WIN32
#include "win/posix.h" /* the POSIX names the portable core uses */
#else
#include <linux/time_types.h>
#include <sys/socket.h>
#endif

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
    PACT_OP_WORK,        /* pact_queue_work(), the resolver: pool only */
    PACT_OP_OPEN,        /* file ops: native on io_uring when probed, */
    PACT_OP_CLOSE,       /* else run on the thread pool */
    PACT_OP_FSYNC,
    PACT_OP_STATX,
    PACT_OP_RENAME,
    PACT_OP_UNLINK,
    PACT_OP_RECVFROM,    /* recvmsg into a caller buffer, sender in addr */
    PACT_OP_SENDTO,      /* sendmsg, destination copied into addr */
    /* pact_recv_multishot(): many data completions (pact__op_deliver),
     * then one final completion; buffers are the loop's, not the op's. */
    PACT_OP_RECV_MULTI,
    /* pact_watch(): level-triggered readiness of any fd, one data
     * completion (revents) per loop iteration while ready, until
     * cancelled (watch.c; msg_flags holds the events watched). */
    PACT_OP_WATCH,
    /* pact__accept_multishot() (servers): one data completion per
     * accepted connection (result = the fd, or a negative errno that cost
     * only that connection), then one final completion. */
    PACT_OP_ACCEPT_MULTI,
    PACT_OP_CUSTOM, /* a composite op driven by its owner (connect_tcp, ...) */
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
    /* Runs outside the engine, on the loop's thread pool: flush and cancel
     * hand it to pool.c instead of the engine, and a worker thread hands
     * the result back through pact__op_done_offloaded(). */
    PACT_OPF_OFFLOAD = 1u << 5,
    /* Per-fd order (op.c): the op is the one of its fd and direction that
     * the engine has, or it waits in the fd's queue (op->link) for it. */
    PACT_OPF_ORDER_HEAD = 1u << 6,
    PACT_OPF_ORDER_WAITING = 1u << 7,
    /* pact_op_set_ref(0): live, but does not keep the loop alive
     * (counted in loop->unref_ops). */
    PACT_OPF_UNREF = 1u << 8,
    /* A multishot receive whose data completions go to op->data_hook
     * (pact__recv_multishot_hooked); its final completion is a normal one. */
    PACT_OPF_DATA_HOOK = 1u << 10,
    /* A stream's send whose completion may be left out when it sends
     * everything (io_uring: IOSQE_CQE_SKIP_SUCCESS): the engine asks
     * pact__stream_send_may_finish_silently() at each submission, and
     * hands the op its completion itself (engine_uring.c, silent sends). */
    PACT_OPF_SILENT_OK = 1u << 11,
    /* io_uring: the op's SQE names its file by a slot of the ring's
     * fixed-file table, not by op->fd (engine_uring.c, fixed files). */
    PACT_OPF_FIXED_FILE = 1u << 12,
    /* io_uring: a multishot receive whose peer streams (it ran the
     * provided-buffer ring dry, or its receives kept leaving bytes in the
     * socket) reads by readiness into the loop-wide buffer, as poll mode
     * does,
     * until its bursts fit in one provided buffer again, counted in
     * op->recv_count (engine_uring.c, "a receive that streams"); so does
     * one whose completions are large for the receive-buffer hook, and a
     * stream's receive started by readiness (PACT__RECV_BY_READINESS).
     * On epoll and in io_uring's poll mode, where every receive reads by
     * readiness: its reads are large, and land in the receive-buffer
     * hook's memory (recv_burst.h, pact__recv_note_read). */
    PACT_OPF_RECV_BY_READINESS = 1u << 13,
    /* io_uring: the engine asked the kernel to end a multishot receive
     * whose peer streams, to arm it again by readiness (engine_uring.c,
     * "a receive that streams"). */
    PACT_OPF_RECV_SWITCHING = 1u << 14,
    /* io_uring: the first SQE of a multishot receive waits for readiness
     * before it tries to receive (IORING_RECVSEND_POLL_FIRST): a stream's
     * first receive on a fresh connection, whose peer has rarely written
     * yet. A try that finds nothing costs the kernel a socket receive and
     * a provided buffer taken and put back. Cleared once prepared: a
     * receive armed again tries at once. */
    PACT_OPF_POLL_FIRST = 1u << 15,
    /* The 16 bits of op->flags are all used: a new flag needs a wider
     * field, which moves the fields a multishot receive's data completion
     * reads out of the op's first 32 bytes (the _Static_assert below the
     * op's definition). */
};

/* Where the data completions of a hooked multishot receive go: the op's
 * user, the bytes (more than 0, valid during the call). */
typedef void (*pact__data_hook)(void *user, const void *data, size_t len);

struct pact_op_s;

/* Ops that carry state beyond the common fields (a resolver request, copied
 * paths) describe it here: fill adds it to the completion the callback
 * sees, release frees it after the callback (or when the op could not be
 * started). Either may be NULL. */
typedef struct pact_op_extra {
    void (*fill)(struct pact_op_s *op, pact_completion *c);
    void (*release)(struct pact_op_s *op);
#ifdef _WIN32
    /* A custom op's completion packet (its OVERLAPPED is the op's); the
     * pipe server's accept has none and is src/win/pipe.c's. */
    void (*packet)(struct pact_loop *loop, struct pact_op_s *op,
                   unsigned long bytes);
#endif
} pact_op_extra;

/* What only a few op kinds need, kept out of line so that the op every
 * idle connection holds (its multishot receive) stays small (the
 * idle-connection memory goal in docs/design-notes.md): an address and
 * msghdr the kernel reads or writes, a pool op's function, a file op's
 * copied paths. Allocated from the loop's op_ext slab when the op is set
 * up (pact__op_ext), never malloc'ed, and freed with the op in
 * pact__op_release() — never earlier: the kernel may write the address
 * until the op's last completion has been reaped (docs/contract.md §2).
 * The arms are not a union: the resolver's getnameinfo needs an address
 * and the pool fields at once, and the block only lives while such an op
 * does. */
typedef struct pact_op_ext {
    pact_slab_entry slab; /* must be first */
    /* PACT_OP_ACCEPT, PACT_OP_CONNECT, PACT_OP_RECVFROM, PACT_OP_SENDTO,
     * and pact_getnameinfo()'s PACT_OP_WORK: connect target / accepted
     * peer / sender / destination / address to name. */
    socklen_t addrlen;
    struct sockaddr_storage addr;
    /* PACT_OP_RECVFROM / PACT_OP_SENDTO: the kernel reads (and, receiving,
     * writes) the msghdr, its iovec and `addr` until the completion, so
     * they live here as long as the op (docs/contract.md §2). msg.msg_name is
     * &addr or NULL. */
    struct msghdr msg;
    struct iovec iov;
    /* PACT_OPF_OFFLOAD: what a worker thread runs, and where the op is in
     * the pool (guarded by the pool's mutex). */
    int64_t (*work_fn)(void *arg);
    void *work_arg;
    uint8_t pool_state;
    /* File ops: paths copied at start, since the kernel may read them after
     * submission; owned by the op, freed with it. */
    char *path;
    char *path2;
#ifdef _WIN32
    /* PACT_OP_ACCEPT: the socket AcceptEx accepts into, made with the
     * op; closed unless the callback got it. */
    SOCKET accept_sock;
    /* PACT_OP_RECV_MULTI: the buffer each WSARecv fills, lent to the
     * callback for one data completion; freed when the op ends. */
    char *recv_buf;
#endif
} pact_op_ext;

typedef struct pact_op_s {
    pact_slab_entry slab; /* must be first */
    uint8_t kind;
    uint8_t state;
    uint16_t flags;
    /* Completions the kernel still owes for this op (the op itself, its
     * cancel request, its linked timeout). Never freed while > 0. */
    int16_t pending_cqes;
    /* io_uring's multishot receive: the count its readiness switch keeps
     * (engine_uring.c, streaming_evidence and recv_poll_cqe), read by
     * every data completion: here, in the line the completion reads
     * anyway (see user below), not in len. */
    uint16_t recv_count;
    /* user and the data hook come next, so that with the header they fill
     * the entry's first 32 bytes, which lie in one cache line (the slab's
     * chunks are 64-byte aligned and an op is 160 bytes): a multishot
     * receive's data completion reads only those (the lookup, then
     * data_hook(user, ...)). With them at 32 and 48 the lookup and the
     * hook were on two lines for about every other op: callgrind
     * --cache-sim, 64-byte echo at 500 connections (bench/c_counts.sh),
     * 0.7 D1 misses per request there. */
    void *user;
    union {
        void *buf;
        /* PACT_OPF_DATA_HOOK (a multishot receive has no buffer of its
         * own: it reads into the loop's). */
        pact__data_hook data_hook;
    };
    pact_os_sock fd; /* on Windows a SOCKET, or a HANDLE cast to one */
    int msg_flags; /* recv/send flags, shutdown how, poll events */
    pact_op_cb cb;
    int64_t result;
    size_t len;
    /* One slot, three uses; which is valid follows from the kind alone
     * (see pact__op_ext_of):
     *   PACT_OP_SEND, PACT_OP_SEND_ALL, PACT_OP_RECV: transferred
     *     (send_all progress; the epoll engine's MSG_WAITALL receive
     *     progress; else always 0)
     *   PACT_OP_CUSTOM: custom_cancel
     *   every other kind: ext, NULL unless the op needs one (accept,
     *     connect, recvfrom, sendto, pool work, file ops with paths,
     *     offloaded file reads and writes). */
    union {
        size_t transferred;
        /* PACT_OP_CUSTOM: asked to cancel; must complete the op later
         * through pact__op_defer(), never from inside this call. */
        void (*custom_cancel)(struct pact_loop *loop, struct pact_op_s *op);
        pact_op_ext *ext;
    };
    int64_t offset;
    uint64_t timeout_ns;          /* requested deadline, 0 = none */
    pact_heap_node deadline;      /* sleep expiry or heap deadline */
    pact_list link;               /* submit queue, done queue, epoll wait queue,
                                     io_uring's receives waiting for a buffer */
#ifdef _WIN32
    /* The kernel writes it until the op's completion packet has been
     * dequeued; the op is not freed before (src/win/engine_iocp.c). */
    OVERLAPPED overlapped;
#else
    struct __kernel_timespec ts;  /* linked timeout; the kernel reads it */
#endif
    void *created_at;             /* caller's return address (debug reports) */
    const pact_op_extra *extra;
} pact_op_s;

/* The layout the comment at `user` relies on. */
_Static_assert(offsetof(pact_op_s, data_hook) + sizeof(pact__data_hook) <= 32,
               "a data completion's fields of pact_op_s outgrew 32 bytes");

/* PACT_OPF_SILENT_OK: 1 if the send op may now go without a completion
 * when it sends everything (stream.c). */
int pact__stream_send_may_finish_silently(const pact_op_s *op);

/* Every live connection holds one op (its multishot receive): an op that
 * grows past this costs memory per idle connection (the idle-connection
 * memory goal in docs/design-notes.md: <= 512 bytes of pact state per
 * idle socket transport, measured by micro_pact idle_transport). Move
 * what only some kinds need to pact_op_ext. */
#ifdef _WIN32
/* Windows: 8-byte handles and a 32-byte OVERLAPPED instead of the timespec. */
_Static_assert(sizeof(pact_op_s) <= 184, "pact_op_s grew past 184 bytes");
#else
_Static_assert(sizeof(pact_op_s) <= 160, "pact_op_s grew past 160 bytes");
#endif

/* A send slot: one send owned by its stream, outside the op layer. A
 * byte stream keeps at most one send with the kernel, in order, and ends
 * it itself (stream.c), so what the op layer adds for every op — a slab
 * entry and handle, the submit queue, the per-fd order, the completion
 * record and indirect callback — buys it nothing. On io_uring its SQE is
 * prepared when the send starts (it goes with the loop's next
 * submission, as a queued op would) and its CQE comes straight back to
 * `done`. Embedded in its owner, which must keep it (and the bytes) alive
 * until `done` has been called: the kernel may read the buffer until the
 * last completion owed for the send, its cancel's included, has been
 * reaped (docs/contract.md §2). It counts as a live op for the loop
 * (pact_loop_alive, pact_loop_stats) as the op it replaces did. */
typedef struct pact_send_slot pact_send_slot;
typedef void (*pact_send_slot_done)(struct pact_loop *loop,
                                    pact_send_slot *slot, int64_t result);
enum pact_send_slot_flag {
    PACT_SLOTF_CANCEL_REQUESTED = 1u << 0,
    PACT_SLOTF_UNREF = 1u << 1,        /* counted in loop->unref_ops */
    PACT_SLOTF_CANCEL_RETRY = 1u << 2, /* io_uring: its cancel found no SQE */
    /* The owner lets the send complete without a completion when it
     * sends everything (io_uring's silent sends: set on a reply joined to
     * the next submission, asked again with
     * pact__stream_slot_may_finish_silently at each submission). */
    PACT_SLOTF_SILENT_OK = 1u << 3,
};
struct pact_send_slot {
    pact_send_slot_done done;
    int64_t result;
    /* The engine's: the fd table entry (fd_table.h) of the fd its last
     * send went to, or NULL. An entry stays the one of its fd number for
     * the table's life, so it is still the right one whenever its fd is
     * the next send's (io_uring reads the fd's fixed-file slot there
     * without a lookup per send). */
    struct pact_fd_entry *fd_entry;
    /* Completions the kernel still owes (the send, its cancel); the slot
     * is in flight while > 0. */
    int16_t pending_cqes;
    uint8_t flags;
    /* The engine's: io_uring's index of the send in the loop's list of
     * live slot sends while the loop may still change threads (in the
     * padding: the echo's fields of pact_stream_more fill its first
     * cache line). */
    uint32_t engine_index;
};

/* PACT_SLOTF_SILENT_OK: 1 if the stream's slot send may now go without a
 * completion when it sends everything (stream.c). */
int pact__stream_slot_may_finish_silently(const pact_send_slot *slot);

/* A socket stream's receive hook (stream.c): its multishot receive's
 * data completions, the stream as user. On io_uring the receive's SQE
 * names the stream itself, not the op (engine_uring.c, "a stream's
 * receive"): the op lives in the slab apart from its stream, and a data
 * completion that looked the op up read one cache line more per request
 * than the stream's own. */
void pact__stream_recv_data(void *stream, const void *data, size_t len);

/* The op's out-of-line block, or NULL if its kind uses the shared slot
 * for something else or it has none. */
static inline pact_op_ext *pact__op_ext_of(const pact_op_s *op)
{
    switch (op->kind) {
    case PACT_OP_SEND:
    case PACT_OP_SEND_ALL:
    case PACT_OP_RECV:
    case PACT_OP_CUSTOM:
        return NULL;
    default:
        return op->ext;
    }
}

#endif
