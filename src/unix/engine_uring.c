/* SPDX-License-Identifier: MIT */
/* The io_uring engine: operations become SQEs, completions come back as
 * CQEs. One io_uring_enter per loop iteration submits everything prepared
 * since the last one and waits, with the next timer as its timeout.
 *
 * user_data layout: generation (24 bits) | slab index (32 bits) | tag (8
 * bits). The generation lets a completion for an op that no longer exists
 * be recognised and counted as stray instead of touching a reused op.
 * A send slot's (op.h) is its address with TAG_SLOT or TAG_SLOT_CANCEL in
 * the low three bits, which an op's tags (1-4, 8) never have: its owner
 * keeps it until the last completion owed for it is reaped. An update of
 * the fixed-file table's is fd | slot | TAG_FILES (files_ud). A socket
 * stream's receive op names its stream instead: the stream's address
 * (64-byte aligned) | TAG_STREAM_RECV (see "a stream's receive"). */
#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "fault.h"
#include "fs_blocking.h"
#include "loop.h"
#include "recv_burst.h"
#include "pool.h"
#include "stream.h"

enum uring_tag {
    TAG_OP = 1,           /* the operation itself */
    TAG_CANCEL = 2,       /* an ASYNC_CANCEL aimed at the op */
    TAG_LINK_TIMEOUT = 3, /* the op's linked timeout */
    TAG_SLOT = 5,         /* a send slot's send */
    TAG_SLOT_CANCEL = 6,  /* an ASYNC_CANCEL aimed at it */
    /* A CLOSE of a socket the loop owned (uring_close_socket): no op,
     * the rest of the user_data is the fd. Its low bits (SLOT_TAG_MASK)
     * are neither an op's tag nor a slot's. */
    TAG_CLOSE = 7,
    /* The op itself, a silent send (see there); low three bits 0, as an
     * op's tag must have below TAG_SLOT. */
    TAG_SILENT = 8,
    /* A FILES_UPDATE of the fixed-file table: no op, the rest of the
     * user_data is the fd (-1: emptying) and the slot (files_ud). Its
     * low bits are TAG_CLOSE's; bit 3 tells them apart. */
    TAG_FILES = 15,
    /* A socket stream's receive op (op_ud): the rest of the user_data
     * is the stream's address, 64-byte aligned (stream.c), so its low
     * six bits are this, which no other tag's are (bit 4 is set in
     * none of them, and a slot's low three bits are 5 or 6). */
    TAG_STREAM_RECV = 16,
    /* The readiness watchers' requests (see "readiness watchers"), low
     * bits TAG_CLOSE's too, bit 5 set (bit 4 clear: not a stream's
     * receive): an EPOLL_CTL of their epoll set (the rest of the
     * user_data is the fd), and the wait on the set. */
    TAG_WATCH_CTL = 0x27,
    TAG_WATCH_WAIT = 0x2f,
};
#define SLOT_TAG_MASK 7u
#define STREAM_RECV_MASK 63u

/* IORING_OP_EPOLL_WAIT, newer than the liburing headers pact builds with
 * (include/uapi/linux/io_uring.h: 59 since 6.15). */
#define URING_OP_EPOLL_WAIT 59

/* Opcodes every loop needs; a kernel without one of them gets epoll. */
static const struct {
    int opcode;
    const char *name;
} required_ops[] = {
    {IORING_OP_RECV, "RECV"},
    {IORING_OP_SEND, "SEND"},
    {IORING_OP_ACCEPT, "ACCEPT"},
    {IORING_OP_CONNECT, "CONNECT"},
    {IORING_OP_READ, "READ"},
    {IORING_OP_WRITE, "WRITE"},
    {IORING_OP_POLL_ADD, "POLL_ADD"},
    {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
    {IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"},
    {IORING_OP_SHUTDOWN, "SHUTDOWN"},
};

/* File ops run natively when the probe lists them (OPENAT, CLOSE, STATX
 * 5.6; FSYNC 5.1; RENAMEAT, UNLINKAT 5.11); otherwise fs.c hands them to
 * the thread pool, as on epoll. */
static const struct {
    int opcode;
    pact_op_kind kind;
} file_ops[] = {
    {IORING_OP_OPENAT, PACT_OP_OPEN},     {IORING_OP_CLOSE, PACT_OP_CLOSE},
    {IORING_OP_FSYNC, PACT_OP_FSYNC},     {IORING_OP_STATX, PACT_OP_STATX},
    {IORING_OP_RENAMEAT, PACT_OP_RENAME}, {IORING_OP_UNLINKAT, PACT_OP_UNLINK},
};

/* At most this many silent sends per state (queued, unknown, done);
 * beyond, a send completes as any op does. As many as join one
 * submission (stream.c, JOINED_SENDS_MAX). */
#define SILENT_MAX 64
/* A silent send: an op's, or a stream's send slot's (op NULL; len is
 * its length, its result when it sends everything). */
struct silent_send {
    pact_op_s *op;
    pact_send_slot *slot;
    uint32_t len;
};

/* A number readiness watchers watch (see "readiness watchers"): an
 * entry of the engine's own fd table, which never moves. */
struct watch_fd {
    pact_fd_entry base;   /* base.fd: the number */
    pact_list watchers;   /* its PACT_OP_WATCH ops, by op->link */
    struct epoll_event ev; /* what its registration's next EPOLL_CTL reads */
    uint16_t gen;         /* bumped at each ADD (ev.data's high half) */
    uint8_t added;        /* the set has a registration for the number */
    uint8_t widened;      /* armed for more events since the last report */
};

typedef struct uring_engine {
    struct io_uring ring;
    unsigned setup_flags;
    unsigned features;
    unsigned mask; /* URING_MASK_*: features a test asked to hide */
    int enabled; /* ring created disabled for SINGLE_ISSUER; see below */
    unsigned depth; /* SQ entries, for a ring set up again (adopt_thread) */
    /* The thread the ring is bound to (SINGLE_ISSUER: the one that
     * enabled it), 0 while none is. A movable loop keeps the fast flags
     * until another thread drives it; uring_adopt_thread() then moves it
     * to a ring bound to no thread. */
    uint64_t ring_thread;
    /* uring_adopt_thread() is handling the old ring's last completions:
     * get_sqes() hands out `scratch`, never submitted; every op still in
     * flight is submitted again on the new ring afterwards. */
    int migrating;
    struct io_uring_sqe scratch;
    /* Cancels that found no free SQE, retried at the next wait: dropping
     * one left the op in the kernel for good (a transport's close hung
     * on its read; fault injection, test_faults). */
    pact_op cancel_retry[32];
    unsigned ncancel_retry;
    /* The same for send slots (PACT_SLOTF_CANCEL_RETRY); a slot whose
     * send completes first leaves the list then (slot_cqe). */
    pact_send_slot *slot_cancel_retry[32];
    unsigned nslot_cancel_retry;
    /* A movable loop's send slots (see "a movable loop changes threads"):
     * while track_slots is set (its ring is bound to one thread), every
     * slot with a send in flight, at its engine_index, so that a move can
     * find the sends the old ring owes. After the move the array holds
     * the slots whose completions the move owes them (slots_owed), handed
     * over by the next wait (run_moved_slots). */
    int track_slots;
    pact_send_slot **live_slots;
    unsigned nlive_slots, live_slots_cap;
    /* pact_recv_multishot(). multishot: a provided buffer ring (group
     * RECV_BGID) of nbuf buffers of bufsz bytes, shared by every multishot
     * recv of the loop; a buffer goes back to the ring as soon as the
     * callback that saw its bytes returns. Otherwise ("poll" mode) each
     * op is a POLL_ADD followed by recvs into one loop-wide buffer. */
    int multishot;
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    char *bufs;
    size_t bufs_bytes; /* mapped: nbuf x bufsz, page-rounded */
    unsigned nbuf, bufsz;
    /* Incremental consumption (IOU_PBUF_RING_INC, 6.12): the kernel
     * fills a buffer a receive at a time, each after the bytes of the one
     * before, instead of taking a whole buffer per receive, and says so
     * with IORING_CQE_F_BUF_MORE while it goes on using it. Small
     * messages then share a buffer, so fewer buffers stay hot in the
     * cache. */
    int inc;
    /* Bytes after which a multishot receive ends by itself, its last data
     * completion without F_MORE (sqe->optlen, IORING_RECV_MSHOT_LIM);
     * 0 where the kernel lacks the limit (recv_limit_probe). */
    unsigned recv_limit;
    /* Per buffer (struct recv_buf_state): who still uses it. The kernel
     * (until a completion without BUF_MORE) and each zero-copy write
     * sending from it (pact__recv_buffer_keep) hold a claim; at 0 it goes
     * back to the ring. `off` is where the kernel's next bytes go. */
    struct recv_buf_state {
        uint32_t off;
        uint32_t claims; /* many zero-copy writes may send from one buffer */
        uint32_t slot;   /* its entry in the ring (where it was added) */
        uint8_t in_kernel;
    } *buf_state;
    /* With incremental consumption: the buffer the kernel is filling (its
     * last completion had BUF_MORE), or -1. See refill_buffer_ring. */
    int filling;
    /* Buffers in the ring that no completion has shown the kernel taking
     * yet: when the ring ran dry, a recycled buffer makes this > 0 again.
     * They lie in the ring's entries from free_head on, in the order the
     * kernel takes them. */
    unsigned bufs_free;
    unsigned free_head;
    /* mru (DEFER_TASKRUN): a buffer given back goes on this stack, and
     * refill_buffer_ring puts the stack into the ring before the loop
     * enters the kernel, last given back first. */
    int mru;
    uint16_t *returned;
    unsigned nreturned;
    /* Multishot receives the kernel ended with -ENOBUFS (every buffer was
     * in use): each waits here, linked by op->link and still in flight for
     * the op layer, until a buffer is given back, and is then armed again
     * (rearm_buffer_waiters). Its bytes wait in the socket meanwhile, so
     * nothing is lost and the caller never sees the -ENOBUFS. */
    pact_list buffer_waiters;
    /* Multishot receives to be submitted again as such, linked the same
     * way, until the next wait has refilled the buffer ring
     * (recv_multi_rearm_later). */
    pact_list multishot_rearms;
    /* pact_loop_backend_fd(): an eventfd registered with the ring, made
     * on first request (has_backend_efd). */
    int has_backend_efd;
    int backend_efd;
    /* Cancels asked for while uring_wait handled its completions, whose
     * SQEs wait for the next submission (see retract_unsent_cancel). */
    unsigned batch_cancels;
    /* The epoll set of the readiness watchers (see "readiness
     * watchers"), which also tells whether a file can be polled
     * (file_can_poll); -1 until one of them needs it. */
    int epfd;
    /* The watched numbers (struct watch_fd), the live watchers, the wait
     * on the set in flight, the watchers of the number being reported
     * that are still to be called, and what the kernel has:
     * IORING_OP_EPOLL_WAIT (6.15) and IORING_OP_EPOLL_CTL (5.6). */
    pact_fd_table watch_fds;
    unsigned nwatchers;
    int watch_waiting;
    struct watch_fd *watch_reporting;
    pact_list watch_due;
    int watch_wait_op, watch_ctl_op;
    struct epoll_event watch_events[64];
    /* Sockets are closed by a CLOSE SQE (uring_close_socket). */
    int close_on_ring;
    /* Silent sends (see "silent sends" below): 0 where the kernel or the
     * ring cannot have them. */
    int silent_ok;
    /* Their SQEs not yet taken by the kernel: where in the SQ, the send's
     * own flags, and whether the last submission asked for no
     * completion. */
    struct silent_sqe {
        struct silent_send s;
        unsigned sq_index;
        unsigned msg_flags;
        int armed;
    } silent_queued[SILENT_MAX];
    unsigned nsilent_queued;
    /* Taken by the kernel without a completion, while a CQ overflow kept
     * it from saying whether they sent everything. */
    struct silent_send silent_unknown[SILENT_MAX];
    unsigned nsilent_unknown;
    /* Sent everything: their completions, handed over by the next wait. */
    struct silent_send silent_done[SILENT_MAX];
    unsigned nsilent_done;
    /* Send slots among them whose completions the wait hands over, after
     * the wait hooks, where the CQEs it found run (run_silent_slots). */
    pact_send_slot *silent_slots_ready[SILENT_MAX];
    unsigned nsilent_slots_ready;
    /* loop->sends_joined after the batch's last submit_joined_sends: the
     * joined sends whose write state that did not give back. */
    unsigned joined_still_held;
    /* The fixed-file table (see "fixed files" below): its size, 0 when
     * the loop has none; slots below files_fresh have been handed out,
     * and those given back since wait on the files_free stack. */
    unsigned files_cap;
    unsigned files_fresh;
    uint16_t *files_free;
    unsigned nfiles_free, files_free_cap;
    /* Slots of sockets the loop closed, emptied at the next submission
     * or when the run returns (fixed_slots_empty). */
    uint16_t *files_closing;
    unsigned nfiles_closing, files_closing_cap;
} uring_engine;

#define RECV_BGID 1

#define URING(loop) ((uring_engine *)(loop)->engine_data)

static inline uint64_t encode(const pact_op_s *op, enum uring_tag tag)
{
    return ((uint64_t)(op->slab.gen & 0xffffffu) << 40) |
           ((uint64_t)op->slab.next_free << 8) | (uint64_t)tag;
}

static pact_op_s *decode(pact_loop *loop, uint64_t ud, enum uring_tag *tag)
{
    *tag = (enum uring_tag)(ud & 0xff);
    uint32_t idx = (uint32_t)(ud >> 8);
    uint32_t gen = (uint32_t)(ud >> 40) & 0xffffffu;
    if (idx >= loop->ops.capacity)
        return NULL;
    pact_op_s *op = pact_slab_at(&loop->ops, idx);
    if (!(op->slab.gen & 1) || (op->slab.gen & 0xffffffu) != gen ||
        op->pending_cqes <= 0)
        return NULL;
    return op;
}

/* ---- a stream's receive -------------------------------------------------
 * A socket stream's multishot receive is an op like any other, but the
 * user_data of its SQEs names the stream, not the op: a data completion
 * then reads the stream's hot line (which the stream's hook reads anyway)
 * and not the op's as well. The op lives in the slab apart from its
 * stream, so looking it up cost a D1 miss per request at 500 echoing
 * connections (callgrind --cache-sim, bench/c_counts.sh). Its other
 * completions find the op through the stream (s->read_op, stream_recv_op).
 *
 * This is safe because the stream lives while its receive op does: it
 * finishes only once read_op is 0, which on_read_end sets from the op's
 * final completion, after the kernel's last one for it (pending_cqes).
 * And a stream has one receive op at a time (start_reading_as), so a
 * cancel aimed at its user_data finds that one. */
static inline int is_stream_recv(const pact_op_s *op)
{
    return op->kind == PACT_OP_RECV_MULTI && (op->flags & PACT_OPF_DATA_HOOK) &&
           op->data_hook == pact__stream_recv_data &&
           ((uintptr_t)op->user & STREAM_RECV_MASK) == 0;
}

/* The user_data of op's own SQEs (and what a cancel aimed at it names). */
static inline uint64_t op_ud(const pact_op_s *op)
{
    if (is_stream_recv(op))
        return (uint64_t)(uintptr_t)op->user | TAG_STREAM_RECV;
    return encode(op, TAG_OP);
}

static inline pact_stream *stream_of_ud(uint64_t ud)
{
    return (pact_stream *)(uintptr_t)(ud & ~(uint64_t)STREAM_RECV_MASK);
}

/* The receive op a TAG_STREAM_RECV completion is for, or NULL (a stray:
 * never, see above). */
static pact_op_s *stream_recv_op(pact_loop *loop, uint64_t ud)
{
    pact_stream *s = stream_of_ud(ud);
    pact_op_s *op = pact__op_lookup(loop, s->read_op);
    if (!op || !is_stream_recv(op) || op->user != (void *)s ||
        op->pending_cqes <= 0)
        return NULL;
    return op;
}

/* With SINGLE_ISSUER the kernel binds the ring to the first thread that
 * submits. The ring is created disabled and enabled by the thread that
 * first runs the loop, so a loop may be created on one thread and run on
 * another (but then always run on that one). */
static int ensure_enabled(pact_loop *loop, uring_engine *e)
{
    if (e->enabled)
        return 0;
    /* Debian's liburing 2.3 declares io_uring_enable_rings() but does not
     * export it, so register directly. */
    if (syscall(__NR_io_uring_register, e->ring.ring_fd,
                IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
        return -errno;
    e->enabled = 1;
    e->ring_thread = pact__thread_id();
    /* A registered ring fd saves an fdget per io_uring_enter (5.18), but the
     * registration belongs to the thread that made it: done at creation, a
     * loop run on another thread got EINVAL from every io_uring_enter and
     * spun. The ring is this thread's from now on, so register here
     * (harmless if refused). Not for a movable loop: the registration is a
     * reference to the ring that only this thread can drop, so a ring left
     * behind when the loop moves (uring_adopt_thread) would stay open —
     * with the sockets its requests hold — until this thread exits. */
    if (!loop->movable)
        io_uring_register_ring_fd(&e->ring);
    return 0;
}

/* ---- silent sends ------------------------------------------------------
 * A stream's small reply joins the loop's next submission (stream.c,
 * send_joins_submission). Its send completes at submission, and its
 * completion then ended the wait that follows at once: the loop ran an
 * iteration for it alone (pact.asyncio's protocol echo: two iterations
 * per request, one without any Python work in it). So a send the stream
 * allows (PACT_OPF_SILENT_OK) asks for no completion when it sends
 * everything: IOSQE_CQE_SKIP_SUCCESS, with MSG_DONTWAIT | MSG_WAITALL so
 * that it is done when the system call that submits it returns — it
 * never waits in the kernel (MSG_DONTWAIT), and anything short of the
 * whole length is a failure that posts its completion (MSG_WAITALL on a
 * stream socket: a short send counts as failed, and the completion
 * carries what was sent; nothing at all: -EAGAIN). The stream sends the
 * rest by an ordinary send.
 *
 * So after that system call, a silent send without a completion in the
 * CQ sent everything, unless the CQ overflowed (its completion may wait
 * in the kernel's overflow list: it is known after a later wait). Its
 * completion is handed over by the loop's next wait, at the point the
 * kernel's would have been (after the binding's after-wait hook, before
 * what that wait found), and that wait blocks as if the send had not
 * been made — which is right only while its completion has nothing to
 * do that anyone waits for: the stream is asked at each submission
 * (pact__stream_send_may_finish_silently) and again before each wait
 * (silent_must_poll). Only on rings with DEFER_TASKRUN (6.1 and later,
 * where the kernel has all of the above): completions are posted only
 * inside this thread's io_uring_enter there.
 *
 * A stream's send slot (a ring bound to one thread: every C server, a
 * movable loop until it moves)
 * goes silently the same way (PACT_SLOTF_SILENT_OK,
 * pact__stream_slot_may_finish_silently); its completion is handed
 * over where the wait's CQEs run (run_silent_slots). So does a small
 * zero-copy reply (write_received), whose completion gives its receive
 * buffer back at that point. Measured, 64-byte HTTP replies under wrk
 * and the echo servers (pact_stream_echo, zero-copy and --write copy),
 * perf stat on the server: completions per request 2.0 -> 1.0,
 * io_uring_enter per request 2.0 -> 1.0 with one connection. */

static inline uint64_t slot_ud(const pact_send_slot *slot, enum uring_tag tag);
static inline void slot_untrack(uring_engine *e, pact_send_slot *slot);

static int silent_op_live(const pact_op_s *op)
{
    return (op->slab.gen & 1) && op->state == PACT_OP_INFLIGHT &&
           op->pending_cqes > 0;
}

/* A slot's send is forgotten here when its completion comes (slot_cqe),
 * so an entry names the send the slot has in flight. */
static int silent_live(const struct silent_send *s)
{
    return s->op ? silent_op_live(s->op) : s->slot->pending_cqes > 0;
}

static int silent_allowed(const struct silent_send *s)
{
    if (!s->op)
        return (s->slot->flags & (PACT_SLOTF_SILENT_OK | PACT_SLOTF_CANCEL_REQUESTED)) ==
                   PACT_SLOTF_SILENT_OK &&
               pact__stream_slot_may_finish_silently(s->slot);
    return !(s->op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT)) &&
           pact__stream_send_may_finish_silently(s->op);
}

static uint64_t silent_ud(const struct silent_send *s)
{
    return s->op ? encode(s->op, TAG_SILENT) : slot_ud(s->slot, TAG_SLOT);
}

/* Before a system call that submits: asks for no completion on each
 * queued silent send that may go without one now, and for one on the
 * others (an SQE left in the SQ by a submission that failed may be
 * armed from before). */
static void silent_arm(uring_engine *e)
{
    for (unsigned i = 0; i < e->nsilent_queued; i++) {
        struct silent_sqe *q = &e->silent_queued[i];
        struct io_uring_sqe *sqe =
            &e->ring.sq.sqes[q->sq_index & e->ring.sq.ring_mask];
        q->armed = silent_allowed(&q->s);
        if (q->armed) {
            sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
            sqe->msg_flags = q->msg_flags | MSG_DONTWAIT | MSG_WAITALL;
            sqe->user_data = silent_ud(&q->s);
        } else {
            sqe->flags &= (__u8)~IOSQE_CQE_SKIP_SUCCESS;
            sqe->msg_flags = q->msg_flags;
            sqe->user_data = q->s.op ? encode(q->s.op, TAG_OP)
                                     : slot_ud(q->s.slot, TAG_SLOT);
        }
    }
}

/* Whether a CQE's user_data may be a silent send's (silent_ud): a
 * slot's send, or an op's TAG_SILENT. Most of a CQ is neither. */
static inline int silent_ud_candidate(uint64_t ud)
{
    return (ud & SLOT_TAG_MASK) == TAG_SLOT || (ud & 0xff) == TAG_SILENT;
}

/* Sorts the silent sends the kernel has whose completions are not in
 * the CQ: done (sent everything) unless the CQ overflowed. A sort made
 * while handle_cqes runs (a callback's send found the SQ full and
 * submitted) sees the completions not handled yet: they stay in the CQ
 * until theirs runs. (Copied out in batches first, they did not: a
 * silent send whose short-send completion sat in the rest of the batch
 * was taken for done, the rest of its bytes lost.)
 *
 * One pass over the CQ for all of them: a scan of the CQ per silent
 * send cost the churn bench (connect, one request, close; 100 at a
 * time, callgrind) about 450 instructions per connection, the sends
 * and the CQ of one wait both growing with the batch. */
static void silent_sort_unknown(uring_engine *e)
{
    unsigned n = e->nsilent_unknown;
    if (n == 0 || (IO_URING_READ_ONCE(*e->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW))
        return;
    uint64_t ud[SILENT_MAX];
    uint8_t posted[SILENT_MAX];
    for (unsigned i = 0; i < n; i++) {
        ud[i] = silent_ud(&e->silent_unknown[i]);
        posted[i] = 0;
    }
    unsigned head = *e->ring.cq.khead;
    unsigned tail = io_uring_smp_load_acquire(e->ring.cq.ktail);
    for (unsigned h = head; h != tail; h++) {
        uint64_t c = e->ring.cq.cqes[h & e->ring.cq.ring_mask].user_data;
        if (!silent_ud_candidate(c))
            continue;
        for (unsigned i = 0; i < n; i++)
            posted[i] |= ud[i] == c;
    }
    unsigned keep = 0;
    for (unsigned i = 0; i < n; i++) {
        struct silent_send *s = &e->silent_unknown[i];
        if (!silent_live(s) || posted[i])
            continue; /* its completion ends it as any op's */
        if (e->nsilent_done < SILENT_MAX)
            e->silent_done[e->nsilent_done++] = *s;
        else
            e->silent_unknown[keep++] = *s; /* next time */
    }
    e->nsilent_unknown = keep;
}

/* After a system call that submitted: the silent sends the kernel took
 * become unknown (silent_submitted sorts them at once; uring_wait sorts
 * once for these and any left from before). */
static void silent_taken(uring_engine *e)
{
    if (e->nsilent_queued == 0)
        return;
    unsigned head = IO_URING_READ_ONCE(*e->ring.sq.khead);
    unsigned keep = 0;
    for (unsigned i = 0; i < e->nsilent_queued; i++) {
        struct silent_sqe *q = &e->silent_queued[i];
        if ((int)(head - q->sq_index) <= 0) {
            e->silent_queued[keep++] = *q; /* still in the SQ */
            continue;
        }
        if (q->armed) /* room: the three lists hold SILENT_MAX together */
            e->silent_unknown[e->nsilent_unknown++] = q->s;
    }
    e->nsilent_queued = keep;
}

static void silent_submitted(uring_engine *e)
{
    if (e->nsilent_queued == 0)
        return;
    silent_taken(e);
    silent_sort_unknown(e);
}

static void silent_complete(pact_loop *loop);

/* silent_settle's general case: the three steps, each over its list. */
static PACT_SLOW_PATH void silent_settle_by_lists(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    silent_taken(e);
    silent_sort_unknown(e);
    silent_complete(loop);
}

/* A silent send the kernel took and that sent everything, handed over
 * at once: an op's into the done queue, a slot's to run_silent_slots
 * (see silent_complete). */
static inline void silent_hand_over(pact_loop *loop, uring_engine *e,
                                    const struct silent_send *s)
{
    if (!s->op) {
        s->slot->result = s->len;
        e->silent_slots_ready[e->nsilent_slots_ready++] = s->slot;
        return;
    }
    s->op->pending_cqes = 0;
    pact__op_defer(loop, s->op, (int64_t)(s->op->len - s->op->transferred));
}

/* After a system call that submitted, where the completions are handed
 * over at once (uring_wait, submit_joined_sends): silent_taken,
 * silent_sort_unknown and silent_complete. Their common case in one pass
 * over the queued sends, without copying each through the unknown and
 * done lists: none left unknown or done from before (those come first,
 * in order), no CQ overflow, and at most SILENT_MAX completions in the
 * CQ that may be a silent send's (a failed one: usually none). A send
 * the kernel took now is live (its completion, if it posted one, is in
 * the CQ, not reaped: nothing ran in between), so only the CQ tells
 * whether it sent everything. callgrind, HTTP hello-world under wrk at
 * 500 connections: the three steps cost about 82 instructions per
 * reply, this pass 37 (bench/c_counts.sh, user-space instructions per
 * request: 1,470 -> 1,422 at 50 connections, 1,486 -> 1,448 at 500). */
static void silent_settle(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    unsigned n = e->nsilent_queued;
    if (n == 0 || e->nsilent_unknown || e->nsilent_done ||
        (IO_URING_READ_ONCE(*e->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW)) {
        silent_settle_by_lists(loop);
        return;
    }
    uint64_t posted[SILENT_MAX];
    unsigned nposted = 0;
    unsigned cq_head = *e->ring.cq.khead;
    unsigned cq_tail = io_uring_smp_load_acquire(e->ring.cq.ktail);
    for (unsigned h = cq_head; h != cq_tail; h++) {
        uint64_t c = e->ring.cq.cqes[h & e->ring.cq.ring_mask].user_data;
        if (!silent_ud_candidate(c))
            continue;
        if (nposted == SILENT_MAX) { /* not the common case */
            silent_settle_by_lists(loop);
            return;
        }
        posted[nposted++] = c;
    }
    unsigned sq_head = IO_URING_READ_ONCE(*e->ring.sq.khead);
    unsigned keep = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct silent_sqe *q = &e->silent_queued[i];
        if ((int)(sq_head - q->sq_index) <= 0) {
            e->silent_queued[keep++] = *q; /* still in the SQ */
            continue;
        }
        if (!q->armed)
            continue; /* its completion comes as any op's */
        if (nposted) {
            uint64_t ud = silent_ud(&q->s);
            unsigned j = 0;
            while (j < nposted && posted[j] != ud)
                j++;
            if (j < nposted)
                continue; /* it did not send everything: as any op's */
        }
        silent_hand_over(loop, e, &q->s);
    }
    e->nsilent_queued = keep;
}

/* The next wait may not block: a silent send's completion has work to
 * do now (the stream wrote behind it, closes, ...), whether one sent
 * everything is not known yet (CQ overflow), or they alone keep the loop
 * alive — also those still in the SQ that the wait's own system call
 * submits without a completion (a reply joined in the last iteration,
 * whose op was the last besides it: a one-shot receive's callback
 * wrote it to a transport that does not read). */
static int silent_must_poll(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    if (e->nsilent_unknown || e->nsilent_slots_ready)
        return 1;
    uint64_t held = 0;
    for (unsigned i = 0; i < e->nsilent_done; i++) {
        const struct silent_send *s = &e->silent_done[i];
        if (!silent_allowed(s))
            return 1;
        held += s->op ? !(s->op->flags & (PACT_OPF_INTERNAL | PACT_OPF_UNREF))
                      : !(s->slot->flags & PACT_SLOTF_UNREF);
    }
    /* A queued one that may not go silently posts its completion, which
     * ends the wait: it is not held. */
    for (unsigned i = 0; i < e->nsilent_queued; i++) {
        const struct silent_send *s = &e->silent_queued[i].s;
        if (silent_allowed(s))
            held += s->op ? !(s->op->flags & (PACT_OPF_INTERNAL | PACT_OPF_UNREF))
                          : !(s->slot->flags & PACT_SLOTF_UNREF);
    }
    /* They alone keep the loop alive: nothing else could end the wait,
     * and a run must end once they are done (pact_loop_alive()). */
    return held > 0 && loop->user_ops_live - held <= loop->unref_ops &&
           pact_list_empty(&loop->ready) && loop->user_timers == 0 &&
           loop->ref_signals == 0 && atomic_load(&loop->ts_count) == 0;
}

/* Hands over the completions of the silent sends that sent everything:
 * an op's into the done queue, which the after-wait hook (or uring_wait
 * without hooks) runs before the completions this wait found; a slot's
 * to run_silent_slots, which uring_wait calls at that point too. The
 * slot's send stays in flight until then (pending_cqes): the hook runs
 * the binding's callbacks first, and a write there must queue behind
 * it, not send its bytes again (as an op stays in flight until the done
 * queue runs). */
static void silent_complete(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    unsigned n = e->nsilent_done;
    e->nsilent_done = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct silent_send *s = &e->silent_done[i];
        if (silent_live(s))
            silent_hand_over(loop, e, s);
    }
}

/* The slots' completions silent_complete handed over, in order. */
static void run_silent_slots(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    unsigned n = e->nsilent_slots_ready;
    pact_send_slot *ready[SILENT_MAX];
    memcpy(ready, e->silent_slots_ready, n * sizeof ready[0]);
    e->nsilent_slots_ready = 0;
    for (unsigned i = 0; i < n; i++) {
        ready[i]->pending_cqes = 0;
        slot_untrack(e, ready[i]);
        pact__slot_complete(loop, ready[i]);
    }
}

/* Takes op out of the silent sends that sent everything, if it is one
 * (its completion then goes to the done queue now): 1 if it was. */
static int silent_take(pact_loop *loop, pact_op_s *op)
{
    uring_engine *e = URING(loop);
    for (unsigned i = 0; i < e->nsilent_done; i++) {
        if (e->silent_done[i].op != op)
            continue;
        e->silent_done[i] = e->silent_done[--e->nsilent_done];
        op->pending_cqes = 0;
        pact__op_defer(loop, op, (int64_t)(op->len - op->transferred));
        return 1;
    }
    for (unsigned i = 0; i < e->nsilent_unknown; i++)
        if (e->silent_unknown[i].op == op)
            return 1; /* sorted out by a later wait */
    return 0;
}

/* Whether slot's send sent everything silently and its completion is
 * being handed over (silent_slots_ready, run_silent_slots). */
static int silent_slot_handed_over(const uring_engine *e, const pact_send_slot *slot)
{
    for (unsigned i = 0; i < e->nsilent_slots_ready; i++)
        if (e->silent_slots_ready[i] == slot)
            return 1;
    return 0;
}

/* Whether slot's send is a silent one the kernel has taken: it needs no
 * cancel, its completion comes with the next wait (which polls: a
 * cancelled send may not go silently, silent_must_poll), or is being
 * handed over. */
static int silent_slot_taken(uring_engine *e, const pact_send_slot *slot)
{
    if (silent_slot_handed_over(e, slot))
        return 1;
    for (unsigned i = 0; i < e->nsilent_done; i++)
        if (e->silent_done[i].slot == slot)
            return 1;
    for (unsigned i = 0; i < e->nsilent_unknown; i++)
        if (e->silent_unknown[i].slot == slot)
            return 1;
    return 0;
}

/* A silent send whose completion came (it did not send everything) is
 * no longer unknown: its completion ends it now, and its slab entry (or
 * slot) may be a new send's before the next sort, which must not find
 * the entry live without a completion and take the new send for done. */
static void silent_forget_unknown(uring_engine *e, const pact_op_s *op,
                                  const pact_send_slot *slot)
{
    for (unsigned i = 0; i < e->nsilent_unknown; i++) {
        if (op ? e->silent_unknown[i].op == op : e->silent_unknown[i].slot == slot) {
            e->silent_unknown[i] = e->silent_unknown[--e->nsilent_unknown];
            return;
        }
    }
}

static int migrate(pact_loop *loop, int may_call_back);

/* Tests only (PACT_FAULT_SUBMIT): what io_uring_submit() leaves when the
 * kernel takes none of the SQEs: the SQ's tail handed to the kernel and
 * liburing's own head moved up to it, the kernel's head where it was. */
static int submit_refused(uring_engine *e, int err)
{
    struct io_uring_sq *sq = &e->ring.sq;
    io_uring_smp_store_release(sq->ktail, sq->sqe_tail);
    sq->sqe_head = sq->sqe_tail;
    return err;
}

static int uring_submit_now(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    /* A full SQ between runs, on a thread other than the one the ring is
     * bound to (a movable loop): move to a ring of its own now, if that
     * needs no callback; else the SQE is refused (-EBUSY). */
    if (e->ring_thread && e->ring_thread != pact__thread_id()) {
        int m = migrate(loop, 0);
        if (m < 0)
            return m;
    }
    int r = ensure_enabled(loop, e);
    if (r < 0)
        return r;
    loop->stats.syscalls_enter++;
    silent_arm(e);
    int refused = PACT_FAULT(PACT_FAULT_SUBMIT);
    r = refused ? submit_refused(e, refused) : io_uring_submit(&e->ring);
    silent_submitted(e);
    return r;
}

/* get_sqes() when the SQ has no room for `need`, a move between rings is
 * under way, or a test asks for no SQE. */
static PACT_SLOW_PATH struct io_uring_sqe *get_sqes_slow(pact_loop *loop,
                                                         unsigned need)
{
    uring_engine *e = URING(loop);
    if (PACT_FAULT(PACT_FAULT_GET_SQE)) /* tests only: no SQE to be had */
        return NULL;
    if (e->migrating) {
        memset(&e->scratch, 0, sizeof e->scratch);
        return &e->scratch;
    }
    while (io_uring_sq_space_left(&e->ring) < need) {
        int r = uring_submit_now(loop);
        if (r == -EBUSY && e->ring_thread &&
            e->ring_thread != pact__thread_id())
            return NULL; /* see uring_submit_now */
        if (r < 0 && r != -EBUSY && r != -EAGAIN && r != -EINTR) {
            pact__error(loop, r, "io_uring submit failed");
            return NULL;
        }
        if (r <= 0) {
            /* The kernel holds back: reap completions to make room. */
            io_uring_get_events(&e->ring);
        }
    }
    return io_uring_get_sqe(&e->ring);
}

/* Returns an SQE, submitting what is queued if the SQ is full. `need` SQEs
 * are guaranteed to be free, so a linked pair never straddles a submit.
 * Inline for its common case, room in the SQ: liburing's
 * io_uring_sq_space_left() and io_uring_get_sqe() read the kernel's head
 * and test the ring's flags (SQPOLL, SQE128: never set here) twice
 * (callgrind, 64-byte echo on io_uring: 45 instructions per request for
 * the one SQE of the reply's send). */
static inline int sq_has_room(const uring_engine *e, unsigned need)
{
    const struct io_uring_sq *sq = &e->ring.sq;
    return !e->migrating && !PACT_FAULTS_BUILT_IN &&
           sq->sqe_tail + need - IO_URING_READ_ONCE(*sq->khead) <= sq->ring_entries;
}

/* A thread other than the one the ring is bound to (a movable loop
 * used between runs) finds the SQ full: the submission that would make
 * room moves the loop to a ring of its own (uring_submit_now). */
static int sq_full_off_its_thread(uring_engine *e)
{
    return io_uring_sq_space_left(&e->ring) == 0 && e->ring_thread &&
           e->ring_thread != pact__thread_id();
}

/* The next SQE, once sq_has_room() said there is one. */
static inline struct io_uring_sqe *take_sqe(uring_engine *e)
{
    struct io_uring_sq *sq = &e->ring.sq;
    return &sq->sqes[sq->sqe_tail++ & sq->ring_mask];
}

static inline struct io_uring_sqe *get_sqes(pact_loop *loop, unsigned need)
{
    uring_engine *e = URING(loop);
    if (sq_has_room(e, need))
        return take_sqe(e);
    return get_sqes_slow(loop, need);
}

static void describe_setup_failure(int err, char *reason, size_t len)
{
    const char *hint = "";
    if (err == -EPERM) {
        FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
        int disabled = 0;
        if (f) {
            if (fscanf(f, "%d", &disabled) != 1)
                disabled = 0;
            fclose(f);
        }
        hint = disabled ? " (kernel.io_uring_disabled is set)"
                        : " (a seccomp filter forbids io_uring?)";
    } else if (err == -ENOSYS) {
        hint = " (kernel built without io_uring)";
    } else if (err == -ENOMEM) {
        hint = " (RLIMIT_MEMLOCK too low?)";
    }
    snprintf(reason, len, "io_uring_setup failed: %s%s", pact_strerror(err),
             hint);
}

/* Test hook: PACT_URING_MASK hides optional kernel features so that the
 * suite runs as on an older kernel (tests/run-all.sh's "uring-masked"):
 * "all" or a comma list of setup (plain setup flags: no SUBMIT_ALL,
 * COOP/DEFER_TASKRUN, SINGLE_ISSUER), linktimeout (deadlines on the heap),
 * multishot (no buffer ring: multishot receive in poll mode; servers
 * accept one connection per accept op), pbufinc (a buffer ring without
 * incremental consumption, as before 6.12), files (file
 * ops on the thread pool), teardown (a kernel whose ring teardown may
 * still do a waiting receive: movable loops start on the plain ring, see
 * movable_loop_may_start_fast), silent (every send completes with a
 * completion: no silent sends), fixedfiles (no fixed-file table: every
 * SQE names its file by fd, as before 6.13), mshotlim (no byte limit
 * on multishot receives, as before 6.17: the engine cancels one to end
 * it, see recv_limit_probe), epollwait (readiness watchers wait on
 * their epoll set by a POLL_ADD and an epoll_wait, and arm it by
 * epoll_ctl, as before 6.15), extarg (as on 5.10: pact
 * then refuses io_uring, so "all" leaves it out). Each feature has one check point,
 * marked URING_MASK_. */
enum {
    URING_MASK_SETUP = 1u << 0,
    URING_MASK_LINK_TIMEOUT = 1u << 1,
    URING_MASK_MULTISHOT = 1u << 2,
    URING_MASK_FILES = 1u << 3,
    URING_MASK_EXT_ARG = 1u << 4,
    URING_MASK_PBUF_INC = 1u << 5,
    URING_MASK_TEARDOWN = 1u << 6,
    URING_MASK_SILENT = 1u << 7,
    URING_MASK_FIXED_FILES = 1u << 8,
    URING_MASK_MSHOT_LIM = 1u << 9,
    URING_MASK_EPOLL_WAIT = 1u << 10,
};

static unsigned uring_mask_from_env(void)
{
    const char *v = getenv("PACT_URING_MASK");
    if (!v || !*v)
        return 0;
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        {"setup", URING_MASK_SETUP},       {"linktimeout", URING_MASK_LINK_TIMEOUT},
        {"multishot", URING_MASK_MULTISHOT}, {"files", URING_MASK_FILES},
        {"extarg", URING_MASK_EXT_ARG},    {"pbufinc", URING_MASK_PBUF_INC},
        {"teardown", URING_MASK_TEARDOWN}, {"silent", URING_MASK_SILENT},
        {"fixedfiles", URING_MASK_FIXED_FILES}, {"mshotlim", URING_MASK_MSHOT_LIM},
        {"epollwait", URING_MASK_EPOLL_WAIT},
    };
    unsigned m = 0;
    for (const char *p = v; *p;) {
        size_t n = strcspn(p, ",");
        if (n == 3 && strncmp(p, "all", 3) == 0)
            m |= URING_MASK_SETUP | URING_MASK_LINK_TIMEOUT |
                 URING_MASK_MULTISHOT | URING_MASK_FILES | URING_MASK_PBUF_INC |
                 URING_MASK_TEARDOWN | URING_MASK_SILENT | URING_MASK_FIXED_FILES |
                 URING_MASK_MSHOT_LIM | URING_MASK_EPOLL_WAIT;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strlen(names[i].name) == n && strncmp(p, names[i].name, n) == 0)
                m |= names[i].bit;
        p += n + (p[n] == ',');
    }
    return m;
}

static void recv_buffer_give_back(pact_loop *loop, unsigned id);

#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2 /* io_uring_buf_reg.flags (was `pad`), 6.12 */
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

/* Multishot recv (IORING_RECV_MULTISHOT) needs kernel 6.0; the probe
 * cannot see ioprio flags, so the kernel version decides. */
static int kernel_at_least(int major, int minor)
{
    struct utsname u;
    int ma = 0, mi = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
        return 0;
    return ma > major || (ma == major && mi >= minor);
}

/* Whether the kernel ends a multishot receive by itself once it has
 * received a given number of bytes: sqe->optlen of a multishot
 * IORING_OP_RECV (IORING_RECV_MSHOT_LIM, Linux 6.17). Before, that word
 * was file_index (liburing 2.3's headers still call it so), which a
 * receive had to leave 0: a limit ended it at once with -EINVAL. Neither
 * the opcode probe nor the version can tell (a stable series may take
 * it back), so a receive does, on a ring of its own (the loop's ring
 * may still be disabled, waiting for the thread it binds to): a
 * socketpair with 2 bytes in it, a provided buffer of 64 and a limit of
 * 1. A kernel with the limit ends the receive with the 2 bytes, its
 * completion without F_MORE; one without it answers -EINVAL. Once per
 * process (the answer is the kernel's), a few system calls. */
static int recv_limit_probe(void)
{
    static int known; /* 0: not probed yet, 1: no limit, 2: the limit */
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (k)
        return k == 2;
    int ok = 0;
    struct io_uring r;
    if (io_uring_queue_init(2, &r, 0) != 0)
        return 0; /* not cached: a lack of memory may pass */
    int sv[2] = {-1, -1};
    char *mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem != MAP_FAILED &&
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0 &&
        write(sv[1], "ok", 2) == 2) {
        struct io_uring_buf_ring *br = (struct io_uring_buf_ring *)mem;
        struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)mem,
                                       .ring_entries = 1,
                                       .bgid = 0};
        struct io_uring_sqe *sqe;
        struct io_uring_cqe *cqe;
        if (io_uring_register_buf_ring(&r, &reg, 0) == 0 &&
            (sqe = io_uring_get_sqe(&r)) != NULL) {
            io_uring_buf_ring_init(br);
            io_uring_buf_ring_add(br, mem + 2048, 64, 0, io_uring_buf_ring_mask(1), 0);
            io_uring_buf_ring_advance(br, 1);
            io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = 0;
            sqe->file_index = 1; /* optlen */
            if (io_uring_submit_and_wait(&r, 1) == 1 && io_uring_peek_cqe(&r, &cqe) == 0) {
                ok = cqe->res == 2 && !(cqe->flags & IORING_CQE_F_MORE);
                __atomic_store_n(&known, ok ? 2 : 1, __ATOMIC_RELAXED);
            }
        }
    }
    io_uring_queue_exit(&r); /* ends a receive still armed */
    if (sv[0] >= 0) {
        close(sv[0]);
        close(sv[1]);
    }
    if (mem != MAP_FAILED)
        munmap(mem, 4096);
    return ok;
}

/* The byte limit a multishot receive is armed with where the kernel
 * has one: 16 buffers' worth (1 MiB of the default 64 KiB buffers). A
 * receive takes at most one buffer per completion, so a peer that
 * streams shows itself (STREAMING_EVIDENCE, 8 completions that left
 * bytes in the socket) before the kernel ends the receive, and the
 * engine then arms it by readiness instead of cancelling it (see "a
 * receive that streams"). A request-response receive is armed again
 * every 16 buffers' worth: at 16 KiB requests one SQE per 64 requests
 * (perf stat on the 16 KiB / 50 connections echo: 256 KiB gave 0.065
 * multishot receives submitted per request, 1 MiB 0.015). A receive
 * is not cut at the limit (the kernel caps its byte count only for
 * bundles), so the limit is never below one buffer. */
static unsigned recv_limit_bytes(unsigned bufsz)
{
    uint64_t limit = (uint64_t)bufsz * 16;
    return limit > (1u << 30) ? 1u << 30 : (unsigned)limit;
}

/* A movable loop on a ring bound to no thread: the ring it moved to, or
 * the one it starts on where it may not move (ring_teardown_skips_waiting_io).
 * Any thread may submit there, and the kernel ends with -ECANCELED what a
 * thread that has exited submitted; an op is submitted again
 * (resubmit_orphaned), a send slot's send (which keeps no copy of its
 * arguments) could not be. So such a loop's streams send with ops, and
 * without a fixed-file table its SQEs name their files by fd, as they do
 * once the loop has moved (migrate). */
static int movable_on_plain_ring(const pact_loop *loop, const uring_engine *e)
{
    return loop->movable && !(e->setup_flags & IORING_SETUP_SINGLE_ISSUER);
}

/* Whether a movable loop may start on the fast ring (SINGLE_ISSUER,
 * DEFER_TASKRUN) and move off it later (migrate). The move closes the
 * old ring with receives still waiting on it, and counts on the kernel
 * to end them without doing their I/O: with DEFER_TASKRUN a waiting
 * receive whose socket became readable is task work queued for the
 * bound thread, and at teardown (io_ring_exit_work) that work is handed
 * to a kernel worker (io_move_task_work_from_local, then the fallback
 * work). Before Linux 6.17 the work item checked only whether the task
 * was exiting (io_poll_check_events: PF_EXITING), not whether the ring
 * was closing, so it could still receive: a datagram or stream bytes
 * taken from the socket, and the completion dropped with the ring.
 * Commit 3539b1467e94 ("io_uring: include dying ring in task_work
 * \"should cancel\" state", 6.17, backported to 6.16.9 and 6.12.49)
 * makes that check io_should_terminate_tw(ctx), true once the ring's
 * references are dying (percpu_ref_is_dying(&ctx->refs), killed by
 * io_ring_ctx_wait_and_kill before the exit work runs): the request is
 * then cancelled without I/O. On other kernels a movable loop starts on
 * the plain ring it would move to (no move, receives through poll and
 * recv; pact_loop_recv_multishot_mode() says "poll" from the start).
 * Stable series that may have the fix under another number (6.6, 6.1)
 * take the plain ring: slower, never lossy. */
static int ring_teardown_skips_waiting_io(const uring_engine *e)
{
    if (e->mask & URING_MASK_TEARDOWN)
        return 0;
    struct utsname u;
    int ma = 0, mi = 0, patch = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d.%d", &ma, &mi, &patch) < 2)
        return 0;
    if (ma != 6)
        return ma > 6;
    if (mi >= 17)
        return 1;
    return (mi == 16 && patch >= 9) || (mi == 12 && patch >= 49);
}

/* Sets up the provided buffer ring (5.19) for multishot recv (6.0), or
 * falls back to poll mode. PACT_RECV_MULTISHOT=poll forces poll mode (the
 * tests run it that way on new kernels too). Memory per loop: nbuf x
 * bufsz of address space (16 MiB by default) plus nbuf x 16 bytes of ring,
 * mmap'd so that only pages the kernel wrote into are resident.
 *
 * With incremental consumption and the default count, the ring has as
 * many buffers as hold PACT__RECV_BUFFER_BYTES_INCREMENTAL_DEFAULT, and
 * at least PACT__RECV_BUFFER_COUNT_INCREMENTAL_DEFAULT (src/loop.h): 2 MiB,
 * refilled most recently used first, so that only what the load needs is
 * touched and stays in the cache where 16 MiB of buffers taken in turn did not
 * (the kernel copied 16 KiB messages into cold memory), and which small
 * messages from hundreds of connections share instead of taking a buffer
 * each. One socket that streams can take more than 1 MiB in one
 * io_uring_enter (the kernel receives up to 32 times in a row while the
 * socket has bytes); the ring then runs dry and its receives wait for a
 * buffer (recv_buffer_wait) instead of ending. Measured (bench/,
 * interleaved, load 12-19 so within about 10-15 %): server CPU per
 * 16 KiB echo 0.8-1.0x of the 256-buffer ring's, 64 KiB streaming about
 * 0.9x, 64 B echoes unchanged at 50 and 500 connections, with 16 buffers
 * (1 MiB). A receive that finds the ring dry ends (-ENOBUFS) and is
 * submitted again once a buffer is back, an SQE, a poll arming and a
 * completion more: perf stat on pact_stream_echo, per request, 16 -> 32
 * buffers of 64 KiB: 16 KiB / 50 connections SQEs 1.03-1.12 -> 1.006-1.010,
 * poll armings 0.023-0.115 -> 0.002; 64 KiB streaming (10 connections, 4
 * in flight) SQEs 0.52-0.55 -> 0.35-0.36, poll armings 0.14-0.17 -> 0.05,
 * CQEs 1.53-1.56 -> 1.35-1.37. (Server CPU moved within the noise of a
 * machine at load average 8.)
 *
 * What no placement of the buffers fixes: the kernel copies each message
 * into memory that has left this core's cache. With 50 connections
 * echoing 16 KiB, every receive of a wait needs 16 KiB of its own (the
 * kernel runs them all before the loop sees one, and a zero-copy echo
 * holds each buffer until its send is back, a wait later): 26 of the 32
 * buffers (1.6 MiB) were taken in turn, where a readiness loop reads
 * every message into the same 16 KiB. bench/recv_copy: a 16 KiB recv(2)
 * into one of 16 to 104 slots in turn takes x1.29 the time of one into a
 * single buffer used again and again (4 slots x1.23); huge pages, the
 * length asked and the offset in the page change nothing. Only a
 * destination 1 to 31 bytes past its source in the page is slower still
 * (x2.3-3, see src/unix/op_posix.c); here the destinations are page
 * aligned (every receive counted: all 16 KiB, at offsets 0, 16, 32 or 48
 * KiB of a buffer), as are the sources, the load's 16 KiB sends. In the
 * server (perf, cpu-clock, 7 paired runs): raw epoll made to read into
 * 104 slots in turn spent 1.90 us per request in the copy instead of
 * 0.99, pact here 1.51, raw liburing 2.27, pact on epoll and in poll mode
 * 0.85 and 1.16. A smaller ring (8 or 16 buffers of 64 KiB) did not lower
 * CPU per request in 4 paired runs. Nor did reading such messages by
 * readiness into the loop's one buffer (large_receive's switch at 8 KiB
 * without a hook): the copy got as cheap as raw epoll's, but a recv(2)
 * and a send(2) per message cost as much (x1.04 split in 20 paired runs,
 * x1.07 with a multishot poll; bench/README.md, Receive copy). */
static unsigned incremental_default_count(unsigned bufsz)
{
    unsigned n = PACT__RECV_BUFFER_COUNT_INCREMENTAL_DEFAULT;
    while ((uint64_t)n * bufsz < PACT__RECV_BUFFER_BYTES_INCREMENTAL_DEFAULT &&
           n < 32768)
        n <<= 1;
    return n;
}

static void recv_buffers_init(pact_loop *loop, uring_engine *e)
{
    const char *force = getenv("PACT_RECV_MULTISHOT");
    e->filling = -1;
    e->nbuf = loop->recv_buf_count;
    e->bufsz = loop->recv_buf_size;
    /* Without DEFER_TASKRUN (a movable loop that has changed threads, see
     * uring_adopt_thread; an older kernel) a multishot receive would go on
     * draining the socket into provided buffers from task work while the
     * loop is not running, ahead of what the protocol has seen: a peer's
     * small SO_RCVBUF then no longer paces the sender (CPython's
     * test_sendfile, whose server closes after 1 KiB, saw the whole file
     * accepted). Such a loop receives through readiness and recv, one
     * buffer per loop iteration, as epoll does. With DEFER_TASKRUN the
     * kernel receives only inside the loop's own wait. */
    if (!(force && strcmp(force, "poll") == 0) && kernel_at_least(6, 0) &&
        !(e->mask & URING_MASK_MULTISHOT) &&
        (!loop->movable || (e->setup_flags & IORING_SETUP_DEFER_TASKRUN))) {
        e->br_bytes = e->nbuf * sizeof(struct io_uring_buf);
        e->br = mmap(NULL, e->br_bytes, PROT_READ | PROT_WRITE,
                     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        e->bufs = MAP_FAILED;
        e->buf_state = calloc(e->nbuf, sizeof *e->buf_state);
        e->returned = calloc(e->nbuf, sizeof *e->returned);
        if (e->br != MAP_FAILED && e->buf_state && e->returned) {
            io_uring_buf_ring_init(e->br);
            struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)e->br,
                                           .ring_entries = e->nbuf,
                                           .bgid = RECV_BGID};
            /* Incremental consumption where the kernel has it: before
             * 6.12 the flags must be 0 (EINVAL), and the plain ring is
             * registered instead. PACT_BUF_REG_FLAGS names the field as
             * the headers do (meson.build). */
            int r = -EINVAL;
            if (!(e->mask & URING_MASK_PBUF_INC)) {
                reg.PACT_BUF_REG_FLAGS = IOU_PBUF_RING_INC;
                if (loop->recv_buf_count_default &&
                    e->nbuf > incremental_default_count(e->bufsz))
                    reg.ring_entries = incremental_default_count(e->bufsz);
                r = io_uring_register_buf_ring(&e->ring, &reg, 0);
                e->inc = r == 0;
                if (e->inc)
                    e->nbuf = reg.ring_entries;
                reg.PACT_BUF_REG_FLAGS = 0;
                reg.ring_entries = e->nbuf;
            }
            if (r != 0)
                r = io_uring_register_buf_ring(&e->ring, &reg, 0);
            /* The buffers are mapped once the ring's count is known: the
             * plain ring's count x size (256 MiB for 1 MiB buffers) is
             * never mapped where 16 are used, so that an address-space
             * limit (RLIMIT_AS) that leaves room for what the loop uses
             * does not send it to poll mode. */
            if (r == 0) {
                e->bufs_bytes = (size_t)e->nbuf * e->bufsz;
                e->bufs = mmap(NULL, e->bufs_bytes, PROT_READ | PROT_WRITE,
                               MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE,
                               -1, 0);
                if (e->bufs == MAP_FAILED) {
                    io_uring_unregister_buf_ring(&e->ring, RECV_BGID);
                    e->inc = 0;
                    r = -ENOMEM;
                }
            }
            if (r == 0) {
                for (unsigned b = 0; b < e->nbuf; b++) {
                    io_uring_buf_ring_add(e->br, e->bufs + (size_t)b * e->bufsz,
                                          e->bufsz, (unsigned short)b,
                                          io_uring_buf_ring_mask(e->nbuf),
                                          (int)b);
                    e->buf_state[b].slot = b;
                }
                io_uring_buf_ring_advance(e->br, (int)e->nbuf);
                e->bufs_free = e->nbuf;
                e->free_head = 0;
                e->mru = (e->setup_flags & IORING_SETUP_DEFER_TASKRUN) != 0;
                e->multishot = 1;
                e->recv_limit = !(e->mask & URING_MASK_MSHOT_LIM) && recv_limit_probe()
                                    ? recv_limit_bytes(e->bufsz)
                                    : 0;
                loop->recv_multi_mode = "multishot";
                loop->lent.give_back = recv_buffer_give_back;
                return;
            }
        }
        if (e->br != MAP_FAILED)
            munmap(e->br, e->br_bytes);
        if (e->bufs != MAP_FAILED)
            munmap(e->bufs, e->bufs_bytes);
        free(e->buf_state);
        free(e->returned);
        e->returned = NULL;
        e->br = NULL;
        e->bufs = NULL;
        e->buf_state = NULL;
    }
    loop->recv_multi_mode = "poll";
}

/* ---- fixed files --------------------------------------------------------
 * An SQE that names its file by fd makes the kernel look the fd up and
 * take a reference for every request (fget, then fput at completion):
 * about 2 % of a 64-byte echo server's CPU. An SQE that names a slot of
 * the ring's fixed-file table (IOSQE_FIXED_FILE) skips both. So a
 * socket a transport or datagram endpoint owns (pact__fd_owned) gets a
 * slot, kept for its life, and
 * prep_op names that slot instead of the fd for the socket ops (recv,
 * multishot recv, send, ...) of any op on that fd number — the same
 * file as long as the loop owns it. The fd itself stays open and is what
 * every plain system call (the eager send(2), getsockname, ...) uses.
 *
 * Not at once: a slot costs two SQEs (the updates that fill and empty
 * it, each a request the kernel allocates, issues and completes), more
 * than the lookups it saves on a socket that sees one request and goes
 * (a server of short connections — connect, one request, close — makes
 * two SQEs per socket: its multishot receive and its reply). So an owned
 * socket's first FIXED_FILE_USES_BEFORE_SLOT SQEs that could name a slot
 * go by fd, and the next one fills a slot (fixed_file_count_use): in
 * front of itself if it is an op's, which then names the slot, behind
 * itself if it is a send slot's, which names none not yet filled.
 *
 * The slot follows the fd's ownership, through SQEs (FILES_UPDATE,
 * 5.6) that ride in the SQ with the ops and cost no system call of their
 * own; the kernel runs the SQEs of a submission in SQ order, each
 * taking its file when it is issued. Hence:
 * - the update that fills the slot is queued right before the SQE that
 *   takes it, so every SQE naming the slot comes after it;
 * - when the loop closes the fd (pact__fd_closing, from the transport's
 *   final close, which waits until nothing of it is in flight), the fd's
 *   entry stops naming the slot, so later SQEs name the fd, and the slot
 *   waits on files_closing. Right before the loop's next submission an
 *   update emptying it goes at the end of the SQ, behind every SQE that
 *   may still name it (another op on the same number, prepared before
 *   the close, runs on the file it was meant for), and only then is the
 *   slot handed out again, so an update filling it anew comes later
 *   still. Requests the kernel has issued hold the file themselves
 *   (6.13: one reference per file, not per table), and a multishot
 *   receive or its cancel (by user_data) does not care which table the
 *   file came from;
 * - close(fd) does not close the socket while the table holds the
 *   file: the peer sees the FIN when the emptying update runs, at the
 *   loop's next submission, which follows the final close within the
 *   same iteration, or when a run that returns first submits what is
 *   queued (loop.c, hand_over_held_work) — with the socket's CLOSE, if
 *   the ring closes it (uring_close_socket).
 * An update that fails to fill a slot (ENOMEM) leaves it empty: the ops
 * that named it come back with -EBADF and are sent again by fd
 * (fixed_file_refused), as is one that named a slot emptied at once
 * for want of an SQE. A
 * stream's send slot (uring_slot_send), which keeps no copy of its
 * arguments to send again, names the slot only once the filling has
 * completed (its CQE, FIXED_FILE_FILLED), from the next iteration on. One
 * that fails to empty a slot leaves the socket open until the slot is
 * reused or the loop closes, and is reported.
 *
 * Only from Linux 6.13: before, the kernel released the files removed
 * from a table in the order of removal, each once every request issued
 * before it had completed — any long-lived request (another
 * connection's multishot receive) kept every socket closed after it
 * open, its peer waiting for a FIN. A movable loop has the table until
 * it changes threads: its new ring has none (see migrate). Not a movable
 * loop that starts on the plain ring (the move's target; see
 * movable_on_plain_ring). The table has min(RLIMIT_NOFILE, 16384)
 * slots, set up with the ring (kernel memory: 8 bytes a slot); a socket
 * that finds it full, or a kernel without it, uses its fd as before. */

#define FIXED_FILES_MAX 16384u /* fits pact_fd_entry.engine_events - 1 */

/* fd entry engine_flags bits: the update that filled the slot has
 * completed (files_cqe); the loop owns the socket and it may still take
 * a slot (uring_fd_owned); and how many of its SQEs went by fd so far
 * (two bits). uring_fd_closing clears them. */
#define FIXED_FILE_FILLED 0x01u
#define FIXED_FILE_OWNED 0x02u
#define FIXED_FILE_USES_SHIFT 2
#define FIXED_FILE_USES_MASK 0x0cu
#define FIXED_FILE_BITS 0x0fu
/* SQEs by fd before an owned socket takes a slot: what a socket of one
 * request makes (see "fixed files"). */
#define FIXED_FILE_USES_BEFORE_SLOT 2u

/* The slot of fd's file + 1, 0 if none: io_uring keeps it in the fd
 * entry's engine_events, which only epoll uses otherwise (as it does
 * engine_flags, FIXED_FILE_FILLED). */
static inline unsigned fixed_slot1(const pact_fd_entry *f)
{
    return f->engine_events;
}

static inline uint64_t files_ud(int fd, unsigned slot)
{
    return ((uint64_t)(uint32_t)fd << 32) | ((uint64_t)slot << 8) | TAG_FILES;
}

/* PACT_URING_FIXED_FILES=n (tests only): a table of at most n slots, so
 * that a few connections fill it. */
static unsigned fixed_files_limit(void)
{
    const char *v = getenv("PACT_URING_FIXED_FILES");
    unsigned n = FIXED_FILES_MAX;
    struct rlimit rl;
    if (v && *v) {
        unsigned long w = strtoul(v, NULL, 10);
        if (w < n)
            n = (unsigned)w;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < n)
        n = (unsigned)rl.rlim_cur;
    return n;
}

static void fixed_files_init(pact_loop *loop, uring_engine *e,
                             struct io_uring_probe *probe)
{
    if (movable_on_plain_ring(loop, e) || (e->mask & URING_MASK_FIXED_FILES) ||
        !kernel_at_least(6, 13) ||
        !io_uring_opcode_supported(probe, IORING_OP_FILES_UPDATE))
        return;
    unsigned n = fixed_files_limit();
    /* A ring still disabled (SINGLE_ISSUER) takes registrations from any
     * thread: this one need not be the loop's. */
    if (n > 0 && io_uring_register_files_sparse(&e->ring, n) == 0)
        e->files_cap = n;
}

/* What an update that empties a slot reads (the kernel reads it when it
 * runs the update). */
static int no_file = -1;

static void fixed_slot_give_back(uring_engine *e, unsigned slot)
{
    if (e->nfiles_free == e->files_free_cap) {
        unsigned cap = e->files_free_cap ? e->files_free_cap * 2 : 64;
        uint16_t *p = realloc(e->files_free, cap * sizeof *p);
        if (!p)
            return; /* the slot is never used again: nothing is lost */
        e->files_free = p;
        e->files_free_cap = cap;
    }
    e->files_free[e->nfiles_free++] = (uint16_t)slot;
}

static struct io_uring_sqe *get_sqes(pact_loop *loop, unsigned need);

static void uring_fd_owned(pact_loop *loop, int fd)
{
    if (!URING(loop)->files_cap)
        return;
    pact_fd_entry *f = pact_fd_table_get(&loop->fds, fd);
    if (f && !fixed_slot1(f))
        f->engine_flags = (uint8_t)((f->engine_flags & ~FIXED_FILE_BITS) |
                                    FIXED_FILE_OWNED);
}

/* Gives f's socket a slot: the update that fills it goes into the SQ
 * now, in front of every SQE that will name the slot. Without a free slot
 * or an SQE the socket goes by its fd for good. */
static void fixed_slot_fill(pact_loop *loop, pact_fd_entry *f)
{
    uring_engine *e = URING(loop);
    /* Not when the SQE would move the loop to a ring without a table:
     * the socket's next SQE tries again. */
    if (sq_full_off_its_thread(e))
        return;
    f->engine_flags &= (uint8_t)~FIXED_FILE_BITS;
    unsigned slot;
    if (e->nfiles_free)
        slot = e->files_free[--e->nfiles_free];
    else if (e->files_fresh < e->files_cap)
        slot = e->files_fresh++;
    else
        return; /* full */
    struct io_uring_sqe *sqe = get_sqes(loop, 1);
    if (!sqe) {
        fixed_slot_give_back(e, slot);
        return;
    }
    /* The kernel reads the fd when it runs the update: the entry's own
     * copy stays where it is as long as the table (fd_table.h). Tests
     * only: an fd that is not open, which the kernel refuses (-EBADF). */
    static int not_open = INT_MAX;
    int *fdp = PACT_FAULT(PACT_FAULT_FIXED_FILE) ? &not_open : &f->fd;
    io_uring_prep_files_update(sqe, fdp, 1, (int)slot);
    io_uring_sqe_set_data64(sqe, files_ud(f->fd, slot));
    f->engine_events = (uint16_t)(slot + 1);
}

/* An SQE that could name f's slot goes by fd: an owned socket without a
 * slot counts it, and fills one once it has counted
 * FIXED_FILE_USES_BEFORE_SLOT. */
static void fixed_file_count_use(pact_loop *loop, pact_fd_entry *f)
{
    if (!(f->engine_flags & FIXED_FILE_OWNED))
        return;
    unsigned uses = (f->engine_flags & FIXED_FILE_USES_MASK) >> FIXED_FILE_USES_SHIFT;
    if (uses < FIXED_FILE_USES_BEFORE_SLOT)
        f->engine_flags = (uint8_t)(f->engine_flags + (1u << FIXED_FILE_USES_SHIFT));
    else
        fixed_slot_fill(loop, f);
}

static int may_name_fixed_file(const pact_op_s *op);

/* The entry of op's fd where op's SQE may name a fixed-file slot, else
 * NULL: what prep_op_named names the slot by. f: the entry if the op
 * layer has it (uring_submit), else NULL (looked up here). */
static pact_fd_entry *op_fixed_file_entry(pact_loop *loop, const pact_op_s *op,
                                          pact_fd_entry *f)
{
    if (!URING(loop)->files_cap || !may_name_fixed_file(op))
        return NULL;
    return f ? f : pact_fd_table_find(&loop->fds, op->fd);
}

/* Before an op's SQE that could name its fd's slot: the op then names
 * the slot if this filled one (the update goes in front of it). Returns
 * op_fixed_file_entry's entry for prep_op_named. */
static pact_fd_entry *fixed_file_before_sqe(pact_loop *loop, const pact_op_s *op,
                                            pact_fd_entry *f)
{
    f = op_fixed_file_entry(loop, op, f);
    if (f)
        fixed_file_count_use(loop, f);
    return f;
}

/* The loop closes fd's file: the slot is emptied at the next submission
 * (fixed_slots_empty). */
static void fixed_slot_drop(pact_loop *loop, pact_fd_entry *f)
{
    uring_engine *e = URING(loop);
    unsigned slot = fixed_slot1(f) - 1;
    f->engine_events = 0;
    f->engine_flags &= (uint8_t)~FIXED_FILE_BITS; /* no slot again */
    if (e->nfiles_closing == e->files_closing_cap) {
        unsigned cap = e->files_closing_cap ? e->files_closing_cap * 2 : 16;
        uint16_t *p = realloc(e->files_closing, cap * sizeof *p);
        if (!p) {
            /* Empty it now: an SQE still naming it finds it empty and
             * goes by fd (fixed_file_refused). The slot is never used
             * again: nothing can be queued behind an SQE naming it. */
            int r = io_uring_register_files_update(&e->ring, slot, &no_file, 1);
            if (r < 0)
                pact__error(loop, r, "io_uring: cannot empty a fixed-file "
                                     "slot; its socket stays open until the "
                                     "loop closes");
            return;
        }
        e->files_closing = p;
        e->files_closing_cap = cap;
    }
    e->files_closing[e->nfiles_closing++] = (uint16_t)slot;
}

/* Empties the slots of the sockets the loop closed, by updates at the
 * end of the SQ right before it is submitted (without an SQE: at once,
 * by a system call). Either way the slots can be handed out again: what
 * fills one anew is queued or done later. */
static void fixed_slots_empty(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    for (unsigned i = 0; i < e->nfiles_closing; i++) {
        unsigned slot = e->files_closing[i];
        struct io_uring_sqe *sqe = get_sqes(loop, 1);
        if (sqe) {
            io_uring_prep_files_update(sqe, &no_file, 1, (int)slot);
            sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
            io_uring_sqe_set_data64(sqe, files_ud(-1, slot));
        } else {
            int r = io_uring_register_files_update(&e->ring, slot, &no_file, 1);
            if (r < 0)
                pact__error(loop, r, "io_uring: cannot empty a fixed-file "
                                     "slot; its socket stays open until the "
                                     "slot is reused");
        }
        fixed_slot_give_back(e, slot);
    }
    e->nfiles_closing = 0;
}

static void uring_fd_closing(pact_loop *loop, pact_fd_entry *f)
{
    if (!URING(loop)->files_cap)
        return;
    if (fixed_slot1(f))
        fixed_slot_drop(loop, f);
    else
        f->engine_flags &= (uint8_t)~FIXED_FILE_BITS;
}

/* A FILES_UPDATE that filled a slot has completed, or one that emptied
 * a slot failed (success posts nothing there: CQE_SKIP_SUCCESS). */
static void files_cqe(pact_loop *loop, uint64_t ud, int res)
{
    int fd = (int)(uint32_t)(ud >> 32);
    unsigned slot = (unsigned)(ud >> 8) & 0xffffffu;
    if (fd >= 0 && res >= 0) {
        pact_fd_entry *f = pact_fd_table_find(&loop->fds, fd);
        if (f && fixed_slot1(f) == slot + 1)
            f->engine_flags |= FIXED_FILE_FILLED;
        return;
    }
    if (fd < 0) {
        pact__error(loop, res, "io_uring: cannot empty a fixed-file slot; "
                               "its socket stays open until the slot is "
                               "reused");
        return;
    }
    /* Not filled: the fd's ops go by fd from now on. The slot is empty
     * already; if the fd was closed meanwhile, it waits on files_closing
     * instead (emptying it again does no harm). */
    pact_fd_entry *f = pact_fd_table_find(&loop->fds, fd);
    if (loop->debug)
        pact__log(loop, "io_uring: fd %d got no fixed-file slot: %s", fd,
                  pact_strerror(res));
    if (f && fixed_slot1(f) == slot + 1) {
        f->engine_events = 0;
        f->engine_flags &= (uint8_t)~FIXED_FILE_BITS; /* no slot again */
        fixed_slot_give_back(URING(loop), slot);
    }
}

static int uring_init(pact_loop *loop, unsigned depth, int fail_setup,
                      char *reason, size_t reason_len)
{
    int fault = PACT_FAULT(PACT_FAULT_URING_SETUP); /* tests only */
    if (fault)
        fail_setup = fault;
    if (fail_setup < 0) {
        describe_setup_failure(fail_setup, reason, reason_len);
        return fail_setup;
    }
    uring_engine *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->mask = uring_mask_from_env();
    e->epfd = -1;
    pact_fd_table_init(&e->watch_fds);
    pact_fd_table_set_entry_size(&e->watch_fds, sizeof(struct watch_fd));
    pact_list_init(&e->watch_due);
    pact_list_init(&e->buffer_waiters);
    pact_list_init(&e->multishot_rearms);
    if (depth == 0)
        depth = 256;
    if (depth < 2)
        depth = 2; /* an op and its linked timeout take two SQEs at once:
                      with one, get_sqes() waited forever (torture,
                      TORTURE_DEPTH=1) */
    if (depth > 32768)
        depth = 32768;

    /* Best flags first, dropped one step at a time on EINVAL (older
     * kernels): DEFER_TASKRUN needs 6.1 and SINGLE_ISSUER 6.0; COOP_TASKRUN
     * 5.19; SUBMIT_ALL 5.18. The CQ is 4x the SQ: multishot ops post many
     * completions per submission. */
    static const unsigned flag_sets[] = {
        /* TASKRUN_FLAG makes the kernel flag deferred completions in the SQ
         * ring, so an iteration with nothing to submit and nothing flagged
         * can skip io_uring_enter (see uring_wait). */
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
            IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED |
            IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
            IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED,
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_SUBMIT_ALL,
        0,
    };
    /* A movable loop (pact_loop_options.movable) may run on one thread,
     * then on another. It starts with the fast flags all the same, bound
     * to the first thread that drives it: most loops never move. When
     * another thread drives it, uring_adopt_thread() moves it to a ring
     * bound to no thread (plain_ring_setup). It never takes COOP_TASKRUN
     * without DEFER_TASKRUN (see there), and on a kernel whose ring
     * teardown may still receive it starts on the plain ring instead
     * (ring_teardown_skips_waiting_io). */
    e->depth = depth;
    int movable_plain = loop->movable && !ring_teardown_skips_waiting_io(e);
    if (movable_plain && loop->debug)
        pact__log(loop, "movable loop on io_uring's plain ring: this "
                        "kernel's ring teardown may still do a waiting "
                        "receive (fixed in 6.17, 6.16.9, 6.12.49)");
    int r = -EINVAL;
    size_t nsets = sizeof flag_sets / sizeof flag_sets[0];
    /* URING_MASK_SETUP: only the last, plain set (0), as on 5.11-5.17. */
    for (size_t i = (e->mask & URING_MASK_SETUP) ? nsets - 1 : 0; i < nsets; i++) {
        if (loop->movable && (flag_sets[i] & IORING_SETUP_COOP_TASKRUN) &&
            !(flag_sets[i] & IORING_SETUP_DEFER_TASKRUN))
            continue;
        if (movable_plain && (flag_sets[i] & (IORING_SETUP_SINGLE_ISSUER |
                                              IORING_SETUP_DEFER_TASKRUN)))
            continue;
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = depth * 4;
        r = io_uring_queue_init_params(depth, &e->ring, &p);
        if (r == 0) {
            e->setup_flags = p.flags;
            e->features = p.features;
            e->enabled = !(p.flags & IORING_SETUP_R_DISABLED);
            break;
        }
        if (r != -EINVAL)
            break;
    }
    if (r < 0) {
        describe_setup_failure(r, reason, reason_len);
        free(e);
        return r;
    }

    if (e->mask & URING_MASK_EXT_ARG)
        e->features &= ~IORING_FEAT_EXT_ARG;
    e->silent_ok = (e->setup_flags & IORING_SETUP_DEFER_TASKRUN) &&
                   !(e->mask & URING_MASK_SILENT); /* URING_MASK_SILENT */
    /* The wait timeout rides on io_uring_enter (EXT_ARG, 5.11) and no CQE
     * is ever dropped (NODROP, 5.5); without them use epoll. */
    if (!(e->features & IORING_FEAT_EXT_ARG) || !(e->features & IORING_FEAT_NODROP)) {
        snprintf(reason, reason_len,
                 "io_uring lacks EXT_ARG or NODROP (kernel older than 5.11)");
        io_uring_queue_exit(&e->ring);
        free(e);
        return -EOPNOTSUPP;
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&e->ring);
    if (!probe) {
        snprintf(reason, reason_len, "io_uring probe failed");
        io_uring_queue_exit(&e->ring);
        free(e);
        return -EOPNOTSUPP;
    }
    for (size_t i = 0; i < sizeof required_ops / sizeof required_ops[0]; i++) {
        if (!io_uring_opcode_supported(probe, required_ops[i].opcode)) {
            snprintf(reason, reason_len,
                     "io_uring lacks IORING_OP_%s (kernel too old)",
                     required_ops[i].name);
            io_uring_free_probe(probe);
            io_uring_queue_exit(&e->ring);
            free(e);
            return -EOPNOTSUPP;
        }
    }
    loop->native_kinds = (1u << PACT_OP_READ) | (1u << PACT_OP_WRITE);
    /* A movable loop's file ops go to the pool: on the ring the kernel
     * runs them on its worker threads with the completion owed to the
     * thread that submitted them, which a move cannot take over (see
     * migrate). Its reads and writes of regular files too
     * (goes_to_the_pool). */
    for (size_t i = 0; i < sizeof file_ops / sizeof file_ops[0]; i++)
        if (io_uring_opcode_supported(probe, file_ops[i].opcode) &&
            !(e->mask & URING_MASK_FILES) && !loop->movable)
            loop->native_kinds |= 1u << file_ops[i].kind;
    fixed_files_init(loop, e, probe);
    e->watch_wait_op = io_uring_opcode_supported(probe, URING_OP_EPOLL_WAIT) &&
                       !(e->mask & URING_MASK_EPOLL_WAIT);
    e->watch_ctl_op = io_uring_opcode_supported(probe, IORING_OP_EPOLL_CTL) &&
                      !(e->mask & URING_MASK_EPOLL_WAIT);
    io_uring_free_probe(probe);
    loop->engine_data = e;
    recv_buffers_init(loop, e);
    /* Multishot accept (IORING_ACCEPT_MULTISHOT) needs 5.19; like the
     * multishot receive's flag, the probe cannot see it. */
    loop->accept_multi = kernel_at_least(5, 19) && !(e->mask & URING_MASK_MULTISHOT);
    /* Streams send through slots (see uring_slot_send). A movable loop's
     * do until it changes threads, while its ring is bound to one: the
     * move completes the sends the old ring owes (migrate), which it
     * finds in live_slots, and its streams send with ops from then on. */
    loop->send_slots = !movable_on_plain_ring(loop, e);
    e->track_slots = loop->movable && loop->send_slots;
    /* IORING_OP_CLOSE is 5.6, but only with CQE_SKIP_SUCCESS (5.17, which
     * the probe cannot see) does a close cost no completion. Not on a
     * movable loop: a move would drop the closes still in the SQ. */
    e->close_on_ring = kernel_at_least(5, 17) && !(e->mask & URING_MASK_FILES) &&
                       !loop->movable && (loop->native_kinds & (1u << PACT_OP_CLOSE));
    return 0;
}

/* Sockets whose CLOSE is still in the SQ are closed here: the loop is
 * being freed, and the ring goes with nothing more submitted (the loop
 * may be freed on a thread the ring does not take submissions from).
 * From the kernel's head, not liburing's sqe_head: a submission the
 * kernel took only part of (io_uring_submit() answering fewer than were
 * queued) leaves the rest between the two, handed to the kernel but
 * never run, and the kernel runs nothing before its head again. */
static void close_queued_sockets(uring_engine *e)
{
    struct io_uring_sq *sq = &e->ring.sq;
    for (unsigned i = IO_URING_READ_ONCE(*sq->khead); i != sq->sqe_tail; i++) {
        const struct io_uring_sqe *sqe = &sq->sqes[i & sq->ring_mask];
        if (sqe->opcode == IORING_OP_CLOSE && (sqe->user_data & SLOT_TAG_MASK) == TAG_CLOSE)
            close(sqe->fd);
    }
}

static void uring_destroy(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    if (!e)
        return;
    if (e->close_on_ring)
        close_queued_sockets(e);
    io_uring_queue_exit(&e->ring);
    if (e->has_backend_efd)
        close(e->backend_efd);
    if (e->epfd >= 0)
        close(e->epfd);
    pact_fd_table_destroy(&e->watch_fds);
    /* The ring is gone, and with it the kernel's use of the buffers. */
    if (e->br)
        munmap(e->br, e->br_bytes);
    if (e->bufs)
        munmap(e->bufs, e->bufs_bytes);
    free(e->buf_state);
    free(e->returned);
    free(e->files_free);
    free(e->files_closing);
    free(e->live_slots);
    free(e);
    loop->engine_data = NULL;
}

/* After fork, in the child: the ring is the parent's (the child shares
 * its file and its memory). Unmap the child's view and close its copy of
 * the fd, nothing else: liburing's exit would also unregister a
 * registered ring fd, a system call on the ring, so that flag is cleared
 * first (the registration belongs to the parent's thread anyway). */
static void uring_forget(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    if (!e)
        return;
    e->ring.int_flags = 0;
    e->close_on_ring = 0; /* the parent's SQ: its closes are its own */
    uring_destroy(loop);
}

static int uring_supports_link_timeout(pact_loop *loop, pact_op_s *op)
{
    /* A movable loop re-submits an op whose submitting thread exited
     * (resubmit_orphaned): a linked timeout would not follow it. */
    if ((URING(loop)->mask & URING_MASK_LINK_TIMEOUT) || loop->movable)
        return 0;
    /* send_all may resubmit after a short send; a link timeout covers only
     * one submission, so its deadline lives on the heap instead. */
    return op->kind != PACT_OP_SEND_ALL && op->kind != PACT_OP_SLEEP &&
           op->kind != PACT_OP_RECV_MULTI && /* re-armed: heap deadline */
           op->kind != PACT_OP_WATCH && op->kind != PACT_OP_ACCEPT_MULTI;
}

/* The socket ops of an fd the loop owns name its fixed-file slot (see
 * "fixed files"). Not an op with a deadline: a linked timeout would not
 * follow it if it had to be sent again by fd (fixed_file_refused). */
static int may_name_fixed_file(const pact_op_s *op)
{
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_RECV_MULTI:
    case PACT_OP_RECV:
    case PACT_OP_SEND:
    case PACT_OP_SEND_ALL:
    case PACT_OP_RECVFROM:
    case PACT_OP_SENDTO:
    case PACT_OP_SHUTDOWN:
        return !op->timeout_ns;
    default:
        return 0;
    }
}

/* The SQE names f's slot if it has one (f: op's fd entry, NULL if the
 * op may name none or the fd has no entry). */
static void name_fixed_file(pact_op_s *op, struct io_uring_sqe *sqe,
                            const pact_fd_entry *f)
{
    op->flags &= (uint16_t)~PACT_OPF_FIXED_FILE;
    if (!f || !fixed_slot1(f))
        return;
    sqe->fd = (int)fixed_slot1(f) - 1;
    sqe->flags |= IOSQE_FIXED_FILE;
    op->flags |= PACT_OPF_FIXED_FILE;
}

static void prep_op_named(pact_loop *loop, pact_op_s *op,
                          struct io_uring_sqe *sqe, const pact_fd_entry *f);

/* An op's SQE, which names the fd's fixed-file slot where it may. */
static void prep_op(pact_loop *loop, pact_op_s *op, struct io_uring_sqe *sqe)
{
    prep_op_named(loop, op, sqe, op_fixed_file_entry(loop, op, NULL));
}

/* prep_op with op's fd entry looked up already (uring_submit's, which
 * counted the use): one lookup per submitted op, not two. */
static void prep_op_named(pact_loop *loop, pact_op_s *op,
                          struct io_uring_sqe *sqe, const pact_fd_entry *f)
{
    switch ((pact_op_kind)op->kind) {
    case PACT_OP_RECV_MULTI:
        if (URING(loop)->multishot && !(op->flags & PACT_OPF_RECV_BY_READINESS)) {
            io_uring_prep_recv_multishot(sqe, op->fd, NULL, 0, 0);
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = RECV_BGID;
            sqe->file_index = URING(loop)->recv_limit; /* optlen */
            if (op->flags & PACT_OPF_POLL_FIRST) /* 5.19, before multishot */
                sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
        } else {
            io_uring_prep_poll_add(sqe, op->fd, POLLIN);
        }
        op->flags &= (uint16_t)~PACT_OPF_POLL_FIRST; /* only the first */
        break;
    case PACT_OP_RECV:
        io_uring_prep_recv(sqe, op->fd, op->buf, op->len, op->msg_flags);
        break;
    case PACT_OP_SEND:
    case PACT_OP_SEND_ALL:
        io_uring_prep_send(sqe, op->fd, (char *)op->buf + op->transferred,
                           op->len - op->transferred, op->msg_flags);
        break;
    case PACT_OP_ACCEPT:
        io_uring_prep_accept(sqe, op->fd, (struct sockaddr *)&op->ext->addr,
                             &op->ext->addrlen, SOCK_CLOEXEC | SOCK_NONBLOCK);
        break;
    case PACT_OP_ACCEPT_MULTI:
        /* No address: every accept of the op would write the same one. */
        io_uring_prep_multishot_accept(sqe, op->fd, NULL, NULL,
                                       SOCK_CLOEXEC | SOCK_NONBLOCK);
        break;
    case PACT_OP_CONNECT:
        io_uring_prep_connect(sqe, op->fd, (struct sockaddr *)&op->ext->addr,
                              op->ext->addrlen);
        break;
    case PACT_OP_SHUTDOWN:
        io_uring_prep_shutdown(sqe, op->fd, op->msg_flags);
        break;
    case PACT_OP_READ:
        io_uring_prep_read(sqe, op->fd, op->buf, (unsigned)op->len,
                           (uint64_t)op->offset);
        break;
    case PACT_OP_WRITE:
        io_uring_prep_write(sqe, op->fd, op->buf, (unsigned)op->len,
                            (uint64_t)op->offset);
        break;
    case PACT_OP_POLL:
        io_uring_prep_poll_add(sqe, op->fd, (unsigned)op->msg_flags);
        break;
    case PACT_OP_OPEN:
        io_uring_prep_openat(sqe, op->fd, op->ext->path, op->msg_flags,
                             (mode_t)op->len);
        break;
    case PACT_OP_CLOSE:
        io_uring_prep_close(sqe, op->fd);
        break;
    case PACT_OP_FSYNC:
        io_uring_prep_fsync(sqe, op->fd,
                            op->msg_flags ? IORING_FSYNC_DATASYNC : 0);
        break;
    case PACT_OP_STATX:
        io_uring_prep_statx(sqe, op->fd,
                            op->ext && op->ext->path ? op->ext->path : "",
                            op->msg_flags, (unsigned)op->len, op->buf);
        break;
    case PACT_OP_RENAME:
        io_uring_prep_renameat(sqe, AT_FDCWD, op->ext->path, AT_FDCWD,
                               op->ext->path2, 0);
        break;
    case PACT_OP_UNLINK:
        io_uring_prep_unlinkat(sqe, AT_FDCWD, op->ext->path, op->msg_flags);
        break;
    case PACT_OP_RECVFROM:
        /* The kernel writes the sender and its length into ext->msg. */
        op->ext->msg.msg_namelen = sizeof op->ext->addr;
        io_uring_prep_recvmsg(sqe, op->fd, &op->ext->msg,
                              (unsigned)op->msg_flags);
        break;
    case PACT_OP_SENDTO:
        io_uring_prep_sendmsg(sqe, op->fd, &op->ext->msg,
                              (unsigned)op->msg_flags);
        break;
    case PACT_OP_WORK: /* never reached: pool ops skip the engine */
    case PACT_OP_WATCH: /* never reached: watch_start */
    case PACT_OP_SLEEP:
    case PACT_OP_CUSTOM:
    case PACT_OP_KIND_COUNT:
        /* Never reached: sleeps live on the timer heap and composite ops
         * are driven by their owners; neither is handed to the engine. */
        io_uring_prep_nop(sqe);
        break;
    }
    io_uring_sqe_set_data64(sqe, op_ud(op));
    if (URING(loop)->files_cap)
        name_fixed_file(op, sqe, f);
    /* Tests only: what a stream's first receive asks of the kernel is
     * seen nowhere else (tests/test_faults.c counts these). */
    if (PACT_FAULTS_BUILT_IN && sqe->opcode == IORING_OP_RECV &&
        (sqe->ioprio & IORING_RECVSEND_POLL_FIRST))
        (void)PACT_FAULT(PACT_FAULT_RECV_POLL_FIRST);
}

static int watch_set_open(uring_engine *e);
static int watch_start(pact_loop *loop, pact_op_s *op);
static void watch_end(pact_loop *loop, pact_op_s *op, int64_t result);
static void watch_wait_arm(pact_loop *loop);
static void watch_wait_cqe(pact_loop *loop, int res);
static void watch_ctl_cqe(pact_loop *loop, int fd, int res);
static void watch_rearm_moved(pact_loop *loop, pact_op_s *op);

/* Whether fd's file can be polled: epoll refuses (EPERM) a file whose
 * driver has no poll method. Asked of the watchers' epoll set; the fd is
 * taken out again at once. */
static int file_can_poll(uring_engine *e, int fd)
{
    if (watch_set_open(e) < 0)
        return 0; /* unknown: the pool is right either way */
    /* (EEXIST: a watched file, pollable.) */
    struct epoll_event ev = {.events = 0};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return errno == EEXIST;
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, &ev);
    return 1;
}

/* A movable loop's read or write of a regular file, a block device or a
 * character device that cannot be polled (/dev/full, say): the kernel
 * may do it on its worker threads (io-wq) with the completion owed to
 * the thread that submitted it, so on the ring it would keep the loop
 * from changing threads (see migrate), and a move after a CQ overflow
 * would end it with -EOVERFLOW. The pool runs it instead, as it does the
 * loop's other file ops (uring_init). Sockets, pipes, eventfds and
 * pollable character devices (ttys) stay on the ring, where the kernel
 * waits for them by poll and does the I/O in the submitting task. Some
 * unpollable devices never need a worker (/dev/null and /dev/zero are
 * FMODE_NOWAIT), which user space cannot see: they go to the pool too. */
static int goes_to_the_pool(pact_loop *loop, const pact_op_s *op)
{
    struct stat st;
    if (!loop->movable ||
        (op->kind != PACT_OP_READ && op->kind != PACT_OP_WRITE) ||
        (op->flags & PACT_OPF_INTERNAL))
        return 0;
    /* fstat failing (a bad fd): the ring answers -EBADF as it would. */
    if (fstat(op->fd, &st) != 0)
        return 0;
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))
        return 1;
    return S_ISCHR(st.st_mode) && !file_can_poll(URING(loop), op->fd);
}

/* Ops of one stream on one fd reach this one at a time, in the order they
 * were started (the op layer's per-fd order, op.c): the kernel wakes poll
 * waiters last-armed-first, so two recvs in the kernel at once got their
 * bytes in reverse order. */
static int uring_submit(pact_loop *loop, pact_op_s *op, pact_fd_entry *entry)
{
    if (op->kind == PACT_OP_WATCH)
        return watch_start(loop, op);
    if (goes_to_the_pool(loop, op)) {
        pact_op_ext *x = pact__op_ext(loop, op);
        if (!x) {
            pact__op_defer(loop, op, -ENOMEM);
            return 0;
        }
        op->flags |= PACT_OPF_OFFLOAD;
        x->work_fn = pact__fs_run_blocking;
        x->work_arg = op;
        return pact__pool_submit(loop, op);
    }
    /* Entries never move (fd_table.h): f is still the fd's at prep. */
    const pact_fd_entry *f = fixed_file_before_sqe(loop, op, entry);
    /* An op that waited its turn has its deadline on the heap already. */
    int linked = op->timeout_ns && !pact_heap_contains(&op->deadline) &&
                 uring_supports_link_timeout(loop, op);
    struct io_uring_sqe *sqe = get_sqes(loop, linked ? 2 : 1);
    if (!sqe) {
        pact__op_defer(loop, op, -ENOMEM);
        return 0;
    }
    prep_op_named(loop, op, sqe, f);
    op->pending_cqes = 1;
    uring_engine *e = URING(loop);
    if ((op->flags & PACT_OPF_SILENT_OK) && op->kind == PACT_OP_SEND && !linked &&
        e->silent_ok && !e->migrating &&
        e->nsilent_queued + e->nsilent_unknown + e->nsilent_done < SILENT_MAX)
        e->silent_queued[e->nsilent_queued++] = (struct silent_sqe){
            .s = {.op = op},
            .sq_index = e->ring.sq.sqe_tail - 1,
            .msg_flags = (unsigned)op->msg_flags,
            .armed = 0};
    if (!linked)
        return 0;
    sqe->flags |= IOSQE_IO_LINK;
    op->ts.tv_sec = (long long)(op->timeout_ns / 1000000000ull);
    op->ts.tv_nsec = (long long)(op->timeout_ns % 1000000000ull);
    struct io_uring_sqe *t = io_uring_get_sqe(&URING(loop)->ring);
    io_uring_prep_link_timeout(t, &op->ts, 0);
    io_uring_sqe_set_data64(t, encode(op, TAG_LINK_TIMEOUT));
    op->pending_cqes = 2;
    op->flags |= PACT_OPF_LINK_TIMEOUT;
    return 1;
}

static void uring_cancel(pact_loop *loop, pact_op_s *op)
{
    if (op->kind == PACT_OP_SEND && silent_take(loop, op))
        return; /* done already: its completion comes, with what it sent */
    if (op->kind == PACT_OP_WATCH) {
        /* The kernel holds nothing of a watcher (see "readiness
         * watchers"): it ends here, its callback later. */
        watch_end(loop, op, -ECANCELED);
        return;
    }
    if (op->kind == PACT_OP_RECV_MULTI && pact_list_linked(&op->link)) {
        /* Waiting for a receive buffer (recv_buffer_wait) or for the
         * next wait (recv_multi_rearm_later): the kernel has nothing of
         * it, so it ends here, its callback later. */
        pact_list_remove(&op->link);
        op->pending_cqes--;
        pact__op_defer(loop, op, -ECANCELED);
        return;
    }
    struct io_uring_sqe *sqe = get_sqes(loop, 1);
    if (!sqe) {
        uring_engine *e = URING(loop);
        if (e->ncancel_retry < sizeof e->cancel_retry / sizeof e->cancel_retry[0]) {
            e->cancel_retry[e->ncancel_retry++] = pact__op_handle(loop, op);
            return;
        }
        pact__error(loop, -ENOMEM, "no SQE for a cancel; the op completes "
                                   "on its own");
        return;
    }
    io_uring_prep_cancel64(sqe, op_ud(op), 0);
    io_uring_sqe_set_data64(sqe, encode(op, TAG_CANCEL));
    /* The cancel's own CQE is owed too; nothing is freed before it. */
    op->pending_cqes++;
    URING(loop)->batch_cancels++;
}

/* A send_all that went out short is sent on from where it stopped. */
static int send_all_continue(pact_loop *loop, pact_op_s *op, int res)
{
    if (res <= 0)
        return 0;
    op->transferred += (size_t)res;
    if (op->transferred >= op->len ||
        (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT)))
        return 0;
    struct io_uring_sqe *sqe = get_sqes(loop, 1);
    if (!sqe)
        return 0;
    prep_op(loop, op, sqe);
    op->pending_cqes++;
    return 1;
}

/* Appends a provided buffer to the ring, after those in it. */
static void recv_buffer_append(uring_engine *e, unsigned bid)
{
    e->buf_state[bid].slot = e->br->tail & io_uring_buf_ring_mask(e->nbuf);
    io_uring_buf_ring_add(e->br, e->bufs + (size_t)bid * e->bufsz, e->bufsz,
                          (unsigned short)bid, io_uring_buf_ring_mask(e->nbuf),
                          0);
    io_uring_buf_ring_advance(e->br, 1);
    e->bufs_free++;
}

/* Gives a provided buffer back: into the ring at once, or (mru) onto the
 * stack refill_buffer_ring empties before the next io_uring_enter. */
static void recv_buffer_recycle(uring_engine *e, unsigned bid)
{
    if (e->mru && e->multishot)
        e->returned[e->nreturned++] = (uint16_t)bid;
    else
        recv_buffer_append(e, bid);
}

/* One user of buffer id is done with it: the kernel (a completion
 * without BUF_MORE was handled) or a zero-copy write (its send is back). */
static void recv_buffer_release(uring_engine *e, unsigned id)
{
    if (--e->buf_state[id].claims == 0)
        recv_buffer_recycle(e, id);
}

static void recv_buffer_give_back(pact_loop *loop, unsigned id)
{
    recv_buffer_release(URING(loop), id);
}

static void streaming_evidence(pact_loop *loop, pact_op_s *op, int res,
                               unsigned flags);

/* The state of the provided buffer a completion names, which the
 * kernel has taken. */
static inline struct recv_buf_state *recv_buffer_taken(uring_engine *e,
                                                       unsigned bid)
{
    struct recv_buf_state *b = &e->buf_state[bid];
    if (!b->in_kernel) {
        /* The first completion since the buffer was (re)added: the
         * kernel took it from the front of the free ones. */
        b->in_kernel = 1;
        e->bufs_free--;
        e->free_head = (b->slot + 1) & io_uring_buf_ring_mask(e->nbuf);
        b->claims = 1; /* the kernel's */
        b->off = 0;
    }
    return b;
}

/* The res > 0 bytes of buffer bid, lent to the callback about to run
 * (a zero-copy write may claim the buffer): returns where they are. */
static inline const char *recv_buffer_lend(pact_loop *loop, uring_engine *e,
                                           unsigned bid,
                                           const struct recv_buf_state *b,
                                           int res, unsigned flags)
{
    /* Lent for the callback only; never nested (a callback cannot run
     * the loop), so nothing is lent again afterwards. */
    loop->lent.base = e->bufs + (size_t)bid * e->bufsz + b->off;
    loop->lent.len = (size_t)res;
    loop->lent.id = bid;
    loop->lent.claims = 0;
    loop->lent.more_in_socket = (flags & IORING_CQE_F_SOCK_NONEMPTY) != 0;
    return loop->lent.base;
}

/* The callback is back: its writes' claims are counted, and the buffer
 * goes back unless someone still uses it (the kernel, a zero-copy
 * write). */
static inline void recv_buffer_returned(pact_loop *loop, uring_engine *e,
                                        unsigned bid, struct recv_buf_state *b,
                                        int res, unsigned flags)
{
    if (res > 0) {
        b->claims += loop->lent.claims;
        b->off += (uint32_t)res;
        loop->lent.base = NULL;
        loop->lent.more_in_socket = 0;
    }
    if (!(e->inc && (flags & IORING_CQE_F_BUF_MORE))) {
        b->in_kernel = 0; /* the kernel is done with it */
        if (e->filling == (int)bid)
            e->filling = -1;
        recv_buffer_release(e, bid);
    } else {
        e->filling = (int)bid;
    }
}

/* A completion that used provided buffer bid (res bytes, or none): hands
 * the bytes to the callback, lent (a zero-copy write may claim the
 * buffer), then gives the buffer back unless someone still uses it. */
static void recv_buffer_deliver(pact_loop *loop, pact_op_s *op, int res,
                                unsigned flags)
{
    uring_engine *e = URING(loop);
    unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    /* With incremental consumption a completion without bytes (an EOF)
     * that still names a buffer took nothing from it: the kernel keeps
     * filling it where it was, even though such a completion carries no
     * BUF_MORE (kernels have been seen posting one for multishot reads at
     * EOF). Giving it back here would put it in the ring twice. */
    if (e->inc && res <= 0)
        return;
    struct recv_buf_state *b = recv_buffer_taken(e, bid);
    if (res > 0) {
        pact__op_deliver(loop, op, recv_buffer_lend(loop, e, bid, b, res, flags),
                         res);
        streaming_evidence(loop, op, res, flags);
        /* A stream's receive keeps whether its count is 0 where its
         * data completions look (stream_recv_cqe): the op may only be
         * left alone while it is. */
        if (is_stream_recv(op))
            ((pact_stream *)op->user)->t.recv_evidence = op->recv_count != 0;
    }
    recv_buffer_returned(loop, e, bid, b, res, flags);
}

/* A data completion of a stream's receive (a provided buffer, more to
 * come: not its last) that left nothing in the socket, whose count of
 * evidence is 0 and whose bytes are not large (large_receive): what
 * recv_buffer_deliver does for it, with nothing of the op (see "a
 * stream's receive"). streaming_evidence would find nothing to count:
 * a count of 0 stays 0. */
static inline void stream_recv_deliver(pact_loop *loop, pact_stream *s,
                                       int res, unsigned flags)
{
    uring_engine *e = URING(loop);
    unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    struct recv_buf_state *b = recv_buffer_taken(e, bid);
    const char *data = recv_buffer_lend(loop, e, bid, b, res, flags);
    PACT_RUN_CALLBACK(loop, pact__stream_recv_data, "operation callback",
                      pact__stream_recv_data(s, data, (size_t)res));
    recv_buffer_returned(loop, e, bid, b, res, flags);
}

/* The kernel takes provided buffers in ring order, and a buffer given
 * back goes behind the others: the receives walk through every buffer
 * of the ring (16 by default), so the kernel copies into,
 * and the callbacks read from, memory that has left the cache since its
 * last use. With incremental consumption it also fills a buffer from
 * where its last receive ended and takes the next only when it is full,
 * so a message that meets a buffer's end arrives in two pieces (two
 * callbacks; for a stream that echoes what it reads, two sends). libuv
 * and uvloop read into one buffer again and again.
 *
 * So, before the loop enters the kernel again (mru):
 * - a buffer the kernel is still filling whose bytes have all been
 *   handed over (no zero-copy write sends from it) is given back to the
 *   kernel whole: its ring entry points at its start again, with its
 *   full length, and while the loop keeps up every receive goes to the
 *   start of the same buffer;
 * - the buffers given back since the last time go in front of the free
 *   ones, the last given back first, so that the next buffer the kernel
 *   takes is the one used last.
 *
 * The entries may be rewritten only while the kernel cannot be choosing a
 * buffer: with DEFER_TASKRUN a receive runs only inside this thread's
 * io_uring_enter (as task work, or at submission), and the kernel reads
 * the head entry's address and length afresh for every receive (with
 * incremental consumption it writes back what is left after each). And
 * only once every completion that names a buffer has been handled: one
 * still in the CQ or the overflow list may name bytes in the filling
 * buffer, or a buffer taken that free_head does not know of yet
 * (buffers_settled). Then the buffers given back go behind the others,
 * as without mru. */
static int buffers_settled(const uring_engine *e)
{
    /* Completions may wait in the CQ when the loop enters the kernel
     * again: a burst of SQEs that filled the SQ was submitted in the
     * middle of an iteration (get_sqes), and what completed at that
     * submission (a batch of cancels, say) is reaped by the next wait.
     * Those that name no buffer do not count: with them counted, such a
     * burst left the buffers given back behind the free ones, and the
     * kernel went on through buffers not used for a while. */
    if (IO_URING_READ_ONCE(*e->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW)
        return 0;
    unsigned head;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe((struct io_uring *)&e->ring, head, cqe) {
        if (cqe->flags & IORING_CQE_F_BUFFER)
            return 0;
    }
    return 1;
}

static void refill_buffer_ring(uring_engine *e)
{
    int settled = buffers_settled(e);
    if (e->filling >= 0 && settled) {
        struct recv_buf_state *b = &e->buf_state[e->filling];
        if (b->off > 0 && b->claims == 1 && b->in_kernel) {
            struct io_uring_buf *entry = &e->br->bufs[b->slot];
            entry->addr = (unsigned long)(e->bufs + (size_t)e->filling * e->bufsz);
            entry->len = e->bufsz;
            b->off = 0;
        }
    }
    if (e->nreturned == 0)
        return;
    if (!settled) {
        for (unsigned i = 0; i < e->nreturned; i++)
            recv_buffer_append(e, e->returned[i]);
        e->nreturned = 0;
        return;
    }
    /* The new order: the stack from its top, then the free buffers as
     * they were; written from free_head on. */
    unsigned mask = io_uring_buf_ring_mask(e->nbuf);
    unsigned n = e->nreturned;
    for (unsigned i = 0; i < e->bufs_free; i++)
        e->returned[n++] = e->br->bufs[(e->free_head + i) & mask].bid;
    for (unsigned i = 0; i < e->nreturned / 2; i++) {
        uint16_t t = e->returned[i];
        e->returned[i] = e->returned[e->nreturned - 1 - i];
        e->returned[e->nreturned - 1 - i] = t;
    }
    for (unsigned i = 0; i < n; i++) {
        unsigned slot = (e->free_head + i) & mask;
        unsigned bid = e->returned[i];
        struct io_uring_buf *entry = &e->br->bufs[slot];
        entry->addr = (unsigned long)(e->bufs + (size_t)bid * e->bufsz);
        entry->len = e->bufsz;
        entry->bid = (uint16_t)bid;
        e->buf_state[bid].slot = slot;
    }
    io_uring_buf_ring_advance(e->br, (int)e->nreturned);
    e->bufs_free += e->nreturned;
    e->nreturned = 0;
}

/* Submits a multishot op's SQE again (the kernel ended it early, or the
 * poll of poll mode fired). Returns 1 if it is in flight again. */
static int recv_multi_rearm(pact_loop *loop, pact_op_s *op)
{
    if (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT))
        return 0;
    struct io_uring_sqe *sqe = get_sqes(loop, 1);
    if (!sqe)
        return 0;
    prep_op(loop, op, sqe);
    return 1;
}

/* A multishot receive is submitted again as such (the kernel ended it
 * at its byte limit or early, or it read by readiness and its bursts are
 * small again) only at the start of the next wait, after
 * refill_buffer_ring, not in the middle of a batch of completions, where
 * a wait may submit (joined sends, a watch armed again): the receive's
 * first attempt then took the filling buffer's ring entry as it was,
 * found the socket empty, and the kernel kept that entry's length as the
 * cap of its next receive, made after the entry was rewound to the
 * buffer's start. A message then arrived in two pieces (two callbacks,
 * two sends for an echo), and where chunks landed moved
 * (test_multishot, receives_reuse_the_buffer_used_last: 4 places instead
 * of 2 with the byte limit). Returns 1 if it waits for that (not if a
 * cancel or deadline is ending it). */
static int recv_multi_rearm_later(pact_loop *loop, pact_op_s *op)
{
    if (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT))
        return 0;
    pact_list_push_back(&URING(loop)->multishot_rearms, &op->link);
    return 1;
}

static void rearm_multishots(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    pact_list *n;
    while ((n = pact_list_pop_front(&e->multishot_rearms))) {
        pact_op_s *op = pact_container_of(n, pact_op_s, link);
        if (!recv_multi_rearm(loop, op)) {
            /* No SQE now: tried again at the next wait (a cancel would
             * have taken it off the list). */
            pact_list_push_back(&e->multishot_rearms, n);
            return;
        }
    }
}

/* The kernel ended a multishot receive with -ENOBUFS: every buffer of
 * the ring was in use (a buffer returns once the callback that saw its
 * bytes is back and the zero-copy writes sending from it are done). The
 * bytes stay in the socket; the receive waits for a buffer and goes on
 * (rearm_buffer_waiters), unless a cancel or deadline is ending it.
 * Returns 1 if it waits. */
static int recv_buffer_wait(pact_loop *loop, pact_op_s *op)
{
    if (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT))
        return 0;
    pact_list_push_back(&URING(loop)->buffer_waiters, &op->link);
    loop->recv_buffer_waits++;
    return 1;
}

/* A receive that streams: its peer sends more than the loop reads in one
 * go. A multishot receive then makes the kernel copy up to 32 receives in
 * a row per socket into buffer after buffer of the ring before the loop
 * sees the first, so the copies go to memory that has left the cache:
 * perf on the 64 KiB streaming echo (ten connections, four chunks in
 * flight each), _copy_to_iter 20 % of the server's samples against 15 %
 * for raw epoll, which reads every chunk into one buffer and sends it
 * before the next read. Two signs tell such a receive: it ran the ring
 * dry (in that echo every receive did, about 14 times a second), or its
 * completions keep leaving bytes in the socket (streaming_evidence; a
 * receive alone on a ring larger than its socket's queue never runs it
 * dry). It is then armed again by readiness (PACT_OPF_RECV_BY_READINESS):
 * each readiness completion reads a burst into the loop-wide buffer,
 * reused by every read while it is hot, as poll mode and epoll do; its
 * bytes are not in a provided buffer, so pact_transport_write_received()
 * sends them at once and copies only what the socket does not take.
 * After PACT_READINESS_SMALL_BURSTS bursts in a row that each fit in one
 * provided buffer it is a multishot receive again (recv_poll_cqe): a
 * request-response peer is served from the provided buffers. A receive
 * whose completions are large for the receive-buffer hook reads by
 * readiness too (large_receive). */
static void arm_by_readiness(pact_loop *loop, pact_op_s *op)
{
    if (loop->burst_buf || pact__burst_buf_make(loop) == 0) {
        op->flags |= PACT_OPF_RECV_BY_READINESS;
        op->recv_count = 0; /* small bursts in a row */
    }
}

/* Data completions of a multishot receive that left bytes in the socket
 * (IORING_CQE_F_SOCK_NONEMPTY) count up, the others down (op->recv_count
 * keeps the count): at STREAMING_EVIDENCE its peer streams (see "a
 * receive that streams"). Where the kernel ends a multishot receive at a
 * byte limit (recv_limit_probe), the count waits for that end, and a
 * receive that has the evidence then is armed again by readiness
 * (recv_multi_cqe).
 * Elsewhere the kernel is asked to end it by a cancel of the engine's
 * own, not the caller's (PACT_OPF_RECV_SWITCHING): its final completion
 * arms it again by readiness. A request of 16 KiB arrives whole (perf
 * stat on the 16 KiB / 50 connections echo: no receive switched even at
 * an evidence of 1); in the 64 KiB streaming echo most completions leave
 * bytes behind, and at any evidence from 2 to 16 the receives read by
 * readiness in the steady state (no multishot receive submitted). */
#define STREAMING_EVIDENCE 8u

/* A completion (or a burst by readiness) that brought at least the
 * receive-buffer hook's `large` (pact_loop_set_recv_buffer_hook): such a
 * receive reads by readiness, straight into the binding's memory, where
 * the provided buffers' bytes would be copied into it. One such
 * completion is enough, on every kernel: its switch is the engine's own
 * cancel (the byte limit would wait 16 buffers' worth). By readiness it
 * stays while its bursts bring that much (recv_poll_cqe). Without the
 * hook only a full provided buffer's worth is large (bursts of a receive
 * that streams): requests of 16 KiB read by readiness cost more server
 * CPU, of 32 KiB not clearly less (recv_buffers_init). */
static int large_receive(const pact_loop *loop, size_t bytes)
{
    return loop->recv_large && bytes >= loop->recv_large;
}

static void streaming_evidence(pact_loop *loop, pact_op_s *op, int res,
                               unsigned flags)
{
    if (!large_receive(loop, (size_t)res)) {
        if (!(flags & IORING_CQE_F_SOCK_NONEMPTY)) {
            if (op->recv_count)
                op->recv_count--;
            return;
        }
        if (URING(loop)->recv_limit) {
            if (op->recv_count < STREAMING_EVIDENCE)
                op->recv_count++; /* (the last completions are what counts) */
            return;
        }
        if (++op->recv_count < STREAMING_EVIDENCE)
            return;
    }
    if ((op->flags & (PACT_OPF_RECV_SWITCHING | PACT_OPF_CANCEL_REQUESTED |
                      PACT_OPF_TIMED_OUT)) ||
        (!loop->burst_buf && pact__burst_buf_make(loop) != 0))
        return;
    struct io_uring_sqe *sqe = get_sqes(loop, 1);
    if (!sqe)
        return;
    io_uring_prep_cancel64(sqe, op_ud(op), 0);
    io_uring_sqe_set_data64(sqe, encode(op, TAG_CANCEL));
    op->pending_cqes++; /* the cancel's own CQE */
    op->flags |= PACT_OPF_RECV_SWITCHING;
}

/* Before a submission: once a buffer is back in the ring, the receives
 * waiting for one are armed again, in the order they ran dry, by
 * readiness (arm_by_readiness; as multishot receives if the loop-wide
 * buffer cannot be made). All of them: with incremental consumption one
 * buffer may serve many, and one that finds the ring dry again only
 * waits again. */
static void rearm_buffer_waiters(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    pact_list *n;
    while (e->bufs_free > 0 && (n = pact_list_pop_front(&e->buffer_waiters))) {
        pact_op_s *op = pact_container_of(n, pact_op_s, link);
        arm_by_readiness(loop, op);
        if (!recv_multi_rearm(loop, op)) {
            /* No SQE now: it waits on, tried again at the next wait
             * (a cancel would have taken it off the list). */
            pact_list_push_back(&e->buffer_waiters, n);
            return;
        }
    }
}

/* Poll mode: the poll fired (res = revents) or failed. Reads what is
 * there into the loop-wide buffer. Returns 1 if the op stays in flight,
 * else 0 with the final result in *final. */
/* A movable loop (pact_loop_options.movable) runs on one thread, then on
 * another, and the first may exit. Without DEFER_TASKRUN an op's
 * completion is finished by task work of the thread that submitted it; if
 * that thread has exited the kernel runs the work from a fallback worker,
 * which ends the op with -ECANCELED before it did anything (a poll-driven
 * recv, send, accept or poll; io-wq work not yet started). Nobody asked for
 * that cancel: the op is submitted again, now by the thread running the
 * loop, as if the first submission had never been. Not a connect (a second
 * connect() on a socket in progress answers EALREADY) nor an op with a
 * linked timeout (its -ECANCELED may be the deadline's; a movable loop's
 * deadlines are on the heap). Returns 1 if the op is in flight again. */
static int resubmit_orphaned(pact_loop *loop, pact_op_s *op, int res)
{
    if (res != -ECANCELED || !loop->movable || loop->state != PACT_LOOP_OPEN ||
        (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT |
                      PACT_OPF_LINK_TIMEOUT)) ||
        op->kind == PACT_OP_CONNECT)
        return 0;
    struct io_uring_sqe *sqe = get_sqes(loop, 1);
    if (!sqe)
        return 0;
    prep_op(loop, op, sqe);
    return 1;
}

static int recv_poll_cqe(pact_loop *loop, pact_op_s *op, int res, int *final)
{
    if (res < 0 && resubmit_orphaned(loop, op, res))
        return 1;
    if (res < 0) {
        *final = res;
        return 0;
    }
    int64_t ended;
    size_t bytes = 0;
    uring_engine *e = URING(loop);
    if (!pact__op_recv_burst(loop, op, op->fd, &ended, &bytes, !e->multishot)) {
        *final = (int)ended;
        return 0;
    }
    /* A receive that streamed by readiness goes back to the provided
     * buffers after PACT_READINESS_SMALL_BURSTS bursts in a row that each fit
     * in one (see "a receive that streams") and, with a receive-buffer
     * hook, each brought less than its large (large_receive). */
    if (e->multishot && (op->flags & PACT_OPF_RECV_BY_READINESS)) {
        if (bytes >= e->bufsz || large_receive(loop, bytes)) {
            op->recv_count = 0;
        } else if (++op->recv_count >= PACT_READINESS_SMALL_BURSTS) {
            op->flags &= (uint16_t)~PACT_OPF_RECV_BY_READINESS;
            op->recv_count = 0; /* streaming_evidence's count from here */
            if (recv_multi_rearm_later(loop, op))
                return 1;
        }
    }
    if (recv_multi_rearm(loop, op))
        return 1;
    *final = -ECANCELED;
    return 0;
}

/* A CQE of a multishot recv's own SQE. Data completions are delivered at
 * once (the bytes are in a provided buffer, recycled right after the
 * callback); only a CQE without F_MORE ends the op, and with it the
 * "op CQE" pending_cqes counted at submission. A final CQE may still
 * carry data (the kernel ends a multishot early, e.g. on CQ overflow,
 * or at its byte limit, recv_limit_bytes): deliver it, then arm again
 * unless a cancel was asked for. Returns 1 if
 * the op stays in flight. */
static int recv_multi_cqe(pact_loop *loop, pact_op_s *op, int res,
                          unsigned flags)
{
    uring_engine *e = URING(loop);
    int final;
    if (!e->multishot || (op->flags & PACT_OPF_RECV_BY_READINESS)) {
        if (recv_poll_cqe(loop, op, res, &final))
            return 1;
    } else {
        if (flags & IORING_CQE_F_BUFFER)
            recv_buffer_deliver(loop, op, res, flags);
        if (flags & IORING_CQE_F_MORE)
            return 1;
        if (op->flags & PACT_OPF_RECV_SWITCHING) {
            /* Ended as streaming_evidence asked (or by itself first):
             * armed again by readiness unless the caller's cancel or a
             * deadline is ending it, or it ended for good (EOF, error).
             * Without an SQE it ends with -ECANCELED below, as any
             * receive that cannot be armed again (its cancel's CQE may
             * still be owed, so it cannot wait on buffer_waiters). */
            op->flags &= (uint16_t)~PACT_OPF_RECV_SWITCHING;
            if (!(op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT)) &&
                (res > 0 || res == -ECANCELED || res == -ENOBUFS)) {
                arm_by_readiness(loop, op);
                if (recv_multi_rearm(loop, op))
                    return 1;
                res = -ECANCELED;
            }
        }
        /* Ended at its byte limit (or early): by readiness if its peer
         * streams (streaming_evidence). */
        if (res > 0 && op->recv_count >= STREAMING_EVIDENCE)
            arm_by_readiness(loop, op);
        if (res > 0 && !(op->flags & PACT_OPF_RECV_BY_READINESS) &&
            recv_multi_rearm_later(loop, op))
            return 1;
        if (res > 0 && recv_multi_rearm(loop, op))
            return 1;
        if (res == -ENOBUFS && recv_buffer_wait(loop, op))
            return 1;
        if (resubmit_orphaned(loop, op, res))
            return 1;
        /* (-ENOBUFS here: a cancel or deadline is ending it anyway.) */
        final = res > 0 || res == -ENOBUFS ? -ECANCELED : res;
    }
    op->pending_cqes--;
    op->result = final;
    return 0;
}

/* ---- readiness watchers (pact_watch) -----------------------------------
 * A poll request holds a reference on its file: a socket the program
 * closed under a watcher's POLL_ADD stayed open in the kernel until the
 * watcher ended, and its peer never saw the end. asyncio allows closing a
 * socket under a reader (a pending sock_recv), and its epoll forgets a
 * closed file. So watchers wait in an epoll set of the engine's (e->epfd,
 * made for the first one), which holds no file, as the epoll engine's
 * set does, and the ring waits on the set: one IORING_OP_EPOLL_WAIT
 * (6.15) in flight while a watcher lives, which writes the reports into
 * e->watch_events; without that op, a POLL_ADD on the set and an
 * epoll_wait(0) when it fires.
 *
 * Each watched number has a record (struct watch_fd) in e->watch_fds,
 * with its watchers and the epoll_event its registration reads. The
 * registration is EPOLLONESHOT, armed again after each report while
 * watchers remain: a MOD, which checks readiness anew, so a callback that
 * left data behind is called again at the next iteration (level-triggered,
 * docs/contract.md), as the poll armed again was. The MOD is an
 * IORING_OP_EPOLL_CTL sent with the loop's next submission (no system
 * call of its own) where the kernel has it. A watcher's removal needs no
 * epoll_ctl: a registration left armed reports once more at most, which
 * is dropped, and is disarmed then; the kernel drops it with its file.
 * So a file that lives on in a dup or a child after its number was
 * closed cannot make the loop spin. Removal takes effect at once: a
 * report goes only to the watchers the record has when it is handled,
 * through pact__watch_deliver (cancel flag, the events watched now).
 *
 * A number's first registration is an ADD by system call: its errors
 * (EBADF, EPERM) end the new watcher at once. epoll keys a registration
 * by file, pact by number: when the file was closed and the number came
 * back with another, MOD answers ENOENT and the number is added anew, so
 * a new watcher registers the number again in any case. Every ADD bumps
 * the record's generation, which each registration carries in its data
 * (fd | gen << 32): a report of an older one (a file that lived on) is
 * dropped. */

static int watch_set_open(uring_engine *e)
{
    if (e->epfd < 0)
        e->epfd = epoll_create1(EPOLL_CLOEXEC);
    return e->epfd < 0 ? -errno : 0;
}

/* fd's record, made if create (NULL: none, or ENOMEM). */
static struct watch_fd *watch_record(uring_engine *e, int fd, int create)
{
    pact_fd_entry *f = create ? pact_fd_table_get(&e->watch_fds, fd)
                              : pact_fd_table_find(&e->watch_fds, fd);
    struct watch_fd *w = (struct watch_fd *)f;
    if (w && !w->watchers.next)
        pact_list_init(&w->watchers); /* new: zeroed */
    return w;
}

static uint32_t events_of(const pact_list *head)
{
    uint32_t ev = 0;
    for (const pact_list *n = head->next; n != head; n = n->next)
        ev |= (uint32_t)pact_container_of(n, pact_op_s, link)->msg_flags;
    return ev;
}

/* Arms w's registration for its watchers' events. Returns 0, or a
 * negative errno when the number cannot be registered. */
static int watch_arm(pact_loop *loop, struct watch_fd *w)
{
    uring_engine *e = URING(loop);
    uint32_t ev = events_of(&w->watchers);
    if (e->watch_reporting == w)
        ev |= events_of(&e->watch_due);
    if (!ev)
        return 0;
    int fd = w->base.fd;
    if (w->added && (ev & ~w->ev.events))
        w->widened = 1; /* (an ADD's reports are all newer) */
    w->ev.events = ev | EPOLLONESHOT;
    if (w->added) {
        struct io_uring_sqe *sqe = e->watch_ctl_op ? get_sqes(loop, 1) : NULL;
        if (sqe) {
            /* The kernel reads w->ev when it takes the SQE. */
            io_uring_prep_epoll_ctl(sqe, e->epfd, fd, EPOLL_CTL_MOD, &w->ev);
            if (e->features & IORING_FEAT_CQE_SKIP)
                sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
            io_uring_sqe_set_data64(sqe, ((uint64_t)(uint32_t)fd << 32) |
                                             TAG_WATCH_CTL);
            return 0;
        }
        if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &w->ev) == 0)
            return 0;
        if (errno != ENOENT)
            return -errno;
    }
    w->added = 0;
    w->gen++;
    w->ev.data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)w->gen << 32;
    /* (EEXIST: added again already, by the first of two MODs that found
     * the number's file gone: watch_ctl_cqe.) */
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &w->ev) != 0 &&
        (errno != EEXIST || epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &w->ev) != 0))
        return -errno;
    w->added = 1;
    return 0;
}

/* Ends a watcher: out of its record now, its final callback later. */
static void watch_end(pact_loop *loop, pact_op_s *op, int64_t result)
{
    pact_list_remove(&op->link);
    URING(loop)->nwatchers--;
    op->pending_cqes--;
    pact__op_defer(loop, op, result);
}

/* w's number can no longer be watched: each watcher ends with err. */
static void watch_end_all(pact_loop *loop, struct watch_fd *w, int err)
{
    uring_engine *e = URING(loop);
    pact_list *n;
    while ((n = pact_list_pop_front(&w->watchers)) != NULL)
        watch_end(loop, pact_container_of(n, pact_op_s, link), err);
    if (e->watch_reporting == w)
        while ((n = pact_list_pop_front(&e->watch_due)) != NULL)
            watch_end(loop, pact_container_of(n, pact_op_s, link), err);
}

/* The wait on the set, while a watcher lives (see uring_wait, which
 * tries again when no SQE was had). */
static void watch_wait_arm(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    if (e->watch_waiting || !e->nwatchers)
        return;
    struct io_uring_sqe *sqe = get_sqes(loop, 1);
    if (!sqe)
        return;
    if (e->watch_wait_op)
        io_uring_prep_rw(URING_OP_EPOLL_WAIT, sqe, e->epfd, e->watch_events,
                         sizeof e->watch_events / sizeof e->watch_events[0], 0);
    else
        io_uring_prep_poll_add(sqe, e->epfd, POLLIN);
    io_uring_sqe_set_data64(sqe, TAG_WATCH_WAIT);
    e->watch_waiting = 1;
}

static int watch_start(pact_loop *loop, pact_op_s *op)
{
    uring_engine *e = URING(loop);
    struct watch_fd *w = NULL;
    int r = watch_set_open(e);
    if (r == 0 && !(w = watch_record(e, op->fd, 1)))
        r = -ENOMEM;
    if (r == 0) {
        pact_list_push_back(&w->watchers, &op->link);
        r = watch_arm(loop, w);
        if (r < 0)
            pact_list_remove(&op->link);
    }
    if (r < 0) {
        pact__op_defer(loop, op, r);
        return 0;
    }
    op->pending_cqes = 1; /* the watcher's, until it ends */
    e->nwatchers++;
    watch_wait_arm(loop);
    return 0;
}

/* pact_op_set_events(): the registration is armed for the new events;
 * what was reported for the old ones is filtered by pact__watch_deliver. */
static void uring_watch_update(pact_loop *loop, pact_op_s *op)
{
    struct watch_fd *w = watch_record(URING(loop), op->fd, 0);
    if (w == URING(loop)->watch_reporting)
        return; /* armed with the new events after the report */
    int r = w ? watch_arm(loop, w) : 0;
    if (r < 0)
        watch_end_all(loop, w, r);
}

/* One report of the set: to the watchers the record has now, each once
 * (a watcher started by one of their callbacks waits for the next). */
static void watch_report(pact_loop *loop, const struct epoll_event *ev)
{
    uring_engine *e = URING(loop);
    int fd = (int)(uint32_t)ev->data.u64;
    struct watch_fd *w = watch_record(e, fd, 0);
    if (!w || !w->added || w->gen != (uint16_t)(ev->data.u64 >> 32))
        return; /* an older registration's */
    uint32_t revents = ev->events;
    if (w->widened) {
        /* The report may be older than events added since (a wait the
         * kernel completed in an earlier submission): ask for those now,
         * so that the callbacks see all of them, as epoll's wait would
         * have reported them. */
        struct pollfd p = {.fd = fd, .events = (short)(w->ev.events & ~EPOLLONESHOT)};
        if (poll(&p, 1, 0) > 0)
            revents |= (uint32_t)p.revents & ~(uint32_t)POLLNVAL;
        w->widened = 0;
    }
    e->watch_reporting = w;
    pact_list_splice(&e->watch_due, &w->watchers);
    pact_list *n;
    while ((n = pact_list_pop_front(&e->watch_due)) != NULL) {
        pact_list_push_back(&w->watchers, n);
        pact__watch_deliver(loop, pact_container_of(n, pact_op_s, link),
                            revents);
    }
    e->watch_reporting = NULL;
    /* Disarmed by the report (EPOLLONESHOT). */
    int r = watch_arm(loop, w);
    if (r < 0)
        watch_end_all(loop, w, r);
}

/* The wait on the set completed: res reports in e->watch_events
 * (EPOLL_WAIT), or the set is readable (POLL_ADD). */
static void watch_wait_cqe(pact_loop *loop, int res)
{
    uring_engine *e = URING(loop);
    e->watch_waiting = 0;
    if (!e->watch_wait_op && res > 0)
        res = epoll_wait(e->epfd, e->watch_events,
                         sizeof e->watch_events / sizeof e->watch_events[0], 0);
    if (res > 0) {
        /* A copy: a callback's submission may take the next wait, which
         * writes into e->watch_events. */
        struct epoll_event got[sizeof e->watch_events / sizeof e->watch_events[0]];
        memcpy(got, e->watch_events, (size_t)res * sizeof got[0]);
        for (int i = 0; i < res; i++)
            watch_report(loop, &got[i]);
    } else if (res < 0 && res != -ECANCELED && res != -EINTR && res != -EAGAIN &&
               e->watch_wait_op) {
        /* A kernel that lists EPOLL_WAIT but refuses this one: wait the
         * older way from now on. */
        pact__log(loop, "io_uring: EPOLL_WAIT failed (%s); watchers wait by "
                        "POLL_ADD", pact_strerror(res));
        e->watch_wait_op = 0;
    }
    watch_wait_arm(loop);
}

/* An EPOLL_CTL of fd's registration failed (success posts nothing, or is
 * nothing to do). ENOENT: the file it was for is gone and the number
 * names another, which is added; otherwise the number can no longer be
 * watched (EBADF: closed). */
static void watch_ctl_cqe(pact_loop *loop, int fd, int res)
{
    struct watch_fd *w = watch_record(URING(loop), fd, 0);
    if (res >= 0 || !w)
        return;
    if (res == -ENOENT) {
        w->added = 0;
        res = watch_arm(loop, w);
    }
    if (res < 0)
        watch_end_all(loop, w, res);
}

/* A movable loop moved to a new ring (migrate): op's registration is
 * armed again, and the wait is submitted on the new ring. */
static void watch_rearm_moved(pact_loop *loop, pact_op_s *op)
{
    struct watch_fd *w = watch_record(URING(loop), op->fd, 0);
    int r = w ? watch_arm(loop, w) : 0;
    if (r < 0)
        watch_end_all(loop, w, r);
    watch_wait_arm(loop);
}

/* A CQE of a multishot accept: each accepted fd is delivered at once (a
 * server then has all of a burst of connections in one iteration, where
 * one accept at a time took an io_uring_enter per connection). Without
 * F_MORE the kernel ended it: after an fd (it stops early at times) it is
 * armed again unless a cancel was asked for; after an error (EMFILE,
 * -ECANCELED, ...) that is the final result. Returns 1 if the op stays
 * in flight. */
static int accept_multi_cqe(pact_loop *loop, pact_op_s *op, int res,
                            unsigned flags)
{
    if (res >= 0)
        pact__op_deliver_accepted(loop, op, res);
    else if (flags & IORING_CQE_F_MORE)
        pact__op_deliver(loop, op, NULL, res); /* one connection's error */
    if (flags & IORING_CQE_F_MORE)
        return 1;
    if (res >= 0 && recv_multi_rearm(loop, op))
        return 1;
    if (resubmit_orphaned(loop, op, res))
        return 1;
    op->pending_cqes--;
    op->result = res >= 0 ? -ECANCELED : res;
    return 0;
}

/* ---- send slots (op.h) ---------------------------------------------------
 * A stream's own send: its SQE is prepared now and goes with the loop's
 * next submission, its CQE comes straight back to the slot. No op, so
 * none of the op layer's per-fd order: the stream keeps at most one send
 * in flight and starts the next from this one's completion. Only on a
 * loop whose ring is bound to one thread (send_slots): a loop that keeps
 * its thread, or a movable one until it changes threads; migrate() then
 * completes the slots' sends the old ring owes (live_slots), and the
 * streams send with ops from then on. */

static inline uint64_t slot_ud(const pact_send_slot *slot, enum uring_tag tag)
{
    return (uint64_t)(uintptr_t)slot | (uint64_t)tag;
}

/* Whether a send to f's fd may name its fixed-file slot without more
 * ado: the kernel has filled it (see uring_slot_send_slow). */
static inline int fixed_file_ready(const pact_fd_entry *f)
{
    return fixed_slot1(f) && (f->engine_flags & FIXED_FILE_FILLED);
}

/* Room in live_slots for one more send (track_slots): grows it. */
static PACT_SLOW_PATH int live_slots_grow(uring_engine *e)
{
    unsigned cap = e->live_slots_cap ? e->live_slots_cap * 2 : 64;
    pact_send_slot **p = realloc(e->live_slots, cap * sizeof *p);
    if (!p)
        return -ENOMEM;
    e->live_slots = p;
    e->live_slots_cap = cap;
    return 0;
}

/* The slot's send is over (its completion runs next): out of
 * live_slots, if it is there. A slot the move completed itself
 * (migrate) or handed over is not: its place may be another's. */
static inline void slot_untrack(uring_engine *e, pact_send_slot *slot)
{
    if (e->nlive_slots == 0) /* every loop that never moves */
        return;
    unsigned i = slot->engine_index;
    if (i >= e->nlive_slots || e->live_slots[i] != slot)
        return;
    pact_send_slot *last = e->live_slots[--e->nlive_slots];
    e->live_slots[i] = last;
    last->engine_index = i;
}

/* Every slot's send may go silently: whether it does is asked at each
 * submission (silent_arm: the stream sets PACT_SLOTF_SILENT_OK on a
 * reply joined to the submission once its send has started). A loop
 * that may still move notes it in live_slots (room made by the caller,
 * uring_slot_send). */
static inline void prep_slot_send(uring_engine *e, struct io_uring_sqe *sqe,
                                  pact_send_slot *slot, int fd, const void *buf,
                                  size_t len, int flags)
{
    io_uring_prep_send(sqe, fd, buf, len, flags);
    io_uring_sqe_set_data64(sqe, slot_ud(slot, TAG_SLOT));
    slot->pending_cqes = 1;
    if (e->track_slots) {
        slot->engine_index = e->nlive_slots;
        e->live_slots[e->nlive_slots++] = slot;
    }
    if (e->silent_ok && len <= UINT32_MAX &&
        e->nsilent_queued + e->nsilent_unknown + e->nsilent_done < SILENT_MAX)
        e->silent_queued[e->nsilent_queued++] = (struct silent_sqe){
            .s = {.slot = slot, .len = (uint32_t)len},
            .sq_index = e->ring.sq.sqe_tail - 1,
            .msg_flags = (unsigned)flags,
            .armed = 0};
}

static PACT_SLOW_PATH int uring_slot_send_slow(pact_loop *loop, pact_send_slot *slot,
                                               int fd, const void *buf,
                                               size_t len, int flags)
{
    /* The submission that makes room would move the loop, whose streams
     * send with ops from then on: the caller starts one (-EOPNOTSUPP). */
    uring_engine *e = URING(loop);
    if (sq_full_off_its_thread(e))
        return -EOPNOTSUPP;
    struct io_uring_sqe *sqe = get_sqes(loop, 1);
    if (!sqe)
        return -ENOMEM; /* the caller's op then meets the same */
    prep_slot_send(URING(loop), sqe, slot, fd, buf, len, flags);
    pact_fd_entry *f = NULL;
    if (URING(loop)->files_cap) {
        /* Only a slot the kernel is known to have filled: a slot's send
         * that found it empty could not be sent again by fd (the slot
         * keeps no copy of its arguments). */
        f = slot->fd_entry;
        if (!f || f->fd != fd)
            f = slot->fd_entry = pact_fd_table_find(&loop->fds, fd);
        if (f && fixed_file_ready(f)) {
            sqe->fd = (int)fixed_slot1(f) - 1;
            sqe->flags |= IOSQE_FIXED_FILE;
        }
    }
    /* Last, with the send queued: an update that fills a slot now goes
     * behind it, as it may (it names no slot not yet filled). Only an fd
     * without a slot counts its uses (fixed_slot_fill clears OWNED). */
    if (f && !fixed_slot1(f))
        fixed_file_count_use(loop, f);
    return 0;
}

/* The send by f's fixed-file slot, once sq_has_room() said there is an
 * SQE. */
static inline void slot_send_fixed(uring_engine *e, pact_send_slot *slot,
                                   const pact_fd_entry *f, const void *buf,
                                   size_t len, int flags)
{
    struct io_uring_sqe *sqe = take_sqe(e);
    prep_slot_send(e, sqe, slot, (int)fixed_slot1(f) - 1, buf, len, flags);
    sqe->flags |= IOSQE_FIXED_FILE;
}

/* The send by fd, once sq_has_room() said there is an SQE: what
 * uring_slot_send_slow does then, without taking the SQE again. f: the
 * fd's entry (NULL: none), whose slot the kernel has not filled. */
static inline void slot_send_by_fd(pact_loop *loop, pact_send_slot *slot,
                                   pact_fd_entry *f, int fd, const void *buf,
                                   size_t len, int flags)
{
    uring_engine *e = URING(loop);
    prep_slot_send(e, take_sqe(e), slot, fd, buf, len, flags);
    if (f && !fixed_slot1(f))
        fixed_file_count_use(loop, f); /* last, as uring_slot_send_slow */
}

/* The slot's last send went to another fd (the stream's write state was
 * another stream's before; sq_has_room() said there is an SQE): its
 * entry is looked up first. A connection's first reply comes here, its
 * socket without a slot yet (connect, one request, close: its only
 * send), and goes by fd at once. */
static PACT_SLOW_PATH int uring_slot_send_other_fd(pact_loop *loop,
                                                   pact_send_slot *slot, int fd,
                                                   const void *buf, size_t len,
                                                   int flags)
{
    pact_fd_entry *f = slot->fd_entry = pact_fd_table_find(&loop->fds, fd);
    if (f && fixed_file_ready(f))
        slot_send_fixed(URING(loop), slot, f, buf, len, flags);
    else
        slot_send_by_fd(loop, slot, f, fd, buf, len, flags);
    return 0;
}

/* A stream's send from its slot. Its common case makes no call (and so
 * needs no frame): room in the SQ, and the fd the slot's last send went
 * to, whose fixed-file slot the kernel has filled or with no table. */
static int uring_slot_send(pact_loop *loop, pact_send_slot *slot, int fd,
                           const void *buf, size_t len, int flags)
{
    uring_engine *e = URING(loop);
    if (e->track_slots && e->nlive_slots == e->live_slots_cap &&
        live_slots_grow(e) < 0)
        return -ENOMEM; /* the caller's op then goes */
    if (!sq_has_room(e, 1))
        return uring_slot_send_slow(loop, slot, fd, buf, len, flags);
    if (!e->files_cap) {
        prep_slot_send(e, take_sqe(e), slot, fd, buf, len, flags);
        return 0;
    }
    const pact_fd_entry *f = slot->fd_entry;
    if (!f || f->fd != fd)
        return uring_slot_send_other_fd(loop, slot, fd, buf, len, flags);
    if (!fixed_file_ready(f))
        return uring_slot_send_slow(loop, slot, fd, buf, len, flags);
    slot_send_fixed(e, slot, f, buf, len, flags);
    return 0;
}

static void uring_slot_cancel(pact_loop *loop, pact_send_slot *slot)
{
    /* A loop that has moved sends no more by slot: this one's completion
     * is owed by the move, and the next wait hands it over
     * (run_moved_slots), -ECANCELED unless it was sent. */
    if (!loop->send_slots)
        return;
    if (silent_slot_taken(URING(loop), slot))
        return; /* done or nearly: its completion comes with the next wait */
    struct io_uring_sqe *sqe = get_sqes(loop, 1);
    if (!sqe) {
        uring_engine *e = URING(loop);
        if (e->nslot_cancel_retry <
            sizeof e->slot_cancel_retry / sizeof e->slot_cancel_retry[0]) {
            e->slot_cancel_retry[e->nslot_cancel_retry++] = slot;
            slot->flags |= PACT_SLOTF_CANCEL_RETRY;
            return;
        }
        pact__error(loop, -ENOMEM, "no SQE for a cancel; the send completes "
                                   "on its own");
        return;
    }
    io_uring_prep_cancel64(sqe, slot_ud(slot, TAG_SLOT), 0);
    io_uring_sqe_set_data64(sqe, slot_ud(slot, TAG_SLOT_CANCEL));
    slot->pending_cqes++; /* the cancel's CQE is owed too */
}

static void forget_slot_cancel(uring_engine *e, pact_send_slot *slot)
{
    slot->flags &= (uint8_t)~PACT_SLOTF_CANCEL_RETRY;
    for (unsigned i = 0; i < e->nslot_cancel_retry; i++) {
        if (e->slot_cancel_retry[i] == slot) {
            e->slot_cancel_retry[i] = e->slot_cancel_retry[--e->nslot_cancel_retry];
            return;
        }
    }
}

static void retry_slot_cancels(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    unsigned n = e->nslot_cancel_retry;
    pact_send_slot *retry[sizeof e->slot_cancel_retry /
                          sizeof e->slot_cancel_retry[0]];
    memcpy(retry, e->slot_cancel_retry, n * sizeof retry[0]);
    e->nslot_cancel_retry = 0;
    for (unsigned i = 0; i < n; i++) {
        retry[i]->flags &= (uint8_t)~PACT_SLOTF_CANCEL_RETRY;
        uring_slot_cancel(loop, retry[i]);
    }
}

static void slot_cqe(pact_loop *loop, uint64_t ud, int res)
{
    pact_send_slot *slot =
        (pact_send_slot *)(uintptr_t)(ud & ~(uint64_t)SLOT_TAG_MASK);
    if (slot->pending_cqes <= 0) {
        loop->stats.stray_completions++; /* never: see slot_ud */
        pact__log(loop, "stray completion: user_data 0x%llx res %d names a "
                        "send slot that is not in flight",
                  (unsigned long long)ud, res);
        return;
    }
    if ((ud & SLOT_TAG_MASK) == TAG_SLOT) {
        slot->result = res;
        /* Nobody asked for this cancel: the kernel ended the send of a
         * thread that exited (as resubmit_orphaned for an op). Nothing
         * was sent; the stream sends it again (by op once the loop has
         * moved), as the rest of a silent send the socket took nothing
         * of. */
        if (res == -ECANCELED && loop->movable &&
            !(slot->flags & PACT_SLOTF_CANCEL_REQUESTED))
            slot->result = -EAGAIN;
        if (URING(loop)->nsilent_unknown) /* a silent send that failed? */
            silent_forget_unknown(URING(loop), NULL, slot);
    }
    /* else the cancel's: 0, -ENOENT or -EALREADY; the send's own CQE
     * carries its result either way. */
    if (--slot->pending_cqes > 0)
        return;
    if (slot->flags & PACT_SLOTF_CANCEL_RETRY)
        forget_slot_cancel(URING(loop), slot);
    slot_untrack(URING(loop), slot);
    pact__slot_complete(loop, slot);
}

/* An op that named a fixed-file slot found it empty (-EBADF): the update
 * that was to fill it failed (files_cqe). The fd's slot goes, and the op
 * is sent again by fd, unless it is being cancelled. Returns 1 if it is
 * in flight again. */
static int fixed_file_refused(pact_loop *loop, pact_op_s *op)
{
    op->flags &= (uint16_t)~PACT_OPF_FIXED_FILE;
    pact_fd_entry *f = pact_fd_table_find(&loop->fds, op->fd);
    if (f && fixed_slot1(f))
        fixed_slot_drop(loop, f);
    if (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT))
        return 0;
    struct io_uring_sqe *sqe = get_sqes(loop, 1);
    if (!sqe)
        return 0;
    prep_op(loop, op, sqe);
    return 1;
}

/* A cancel is asked for with an SQE that goes with the next submission.
 * When the op's own final completion comes first (in the batch being
 * handled: a write pipe whose write failed because the reader went, and
 * whose watch for the reader fired in the same wait), the kernel owes
 * only the cancel's completion, which would hold the op — and its owner:
 * a transport's connection_lost — for one more wait, an iteration after
 * epoll's. If that cancel's SQE is still in the SQ, the kernel has not
 * seen it: it becomes a NOP that posts nothing (CQE_SKIP_SUCCESS, 5.17),
 * nothing more is owed, and the op completes now. The kernel holds
 * nothing of the op's any more, so its memory may be reused
 * (docs/contract.md §2). Returns 1 if it did. */
static int retract_unsent_cancel(pact_loop *loop, pact_op_s *op)
{
    uring_engine *e = URING(loop);
    if (op->pending_cqes != 1 || !(op->flags & PACT_OPF_CANCEL_REQUESTED) ||
        !(e->features & IORING_FEAT_CQE_SKIP))
        return 0;
    uint64_t ud = encode(op, TAG_CANCEL);
    struct io_uring_sq *sq = &e->ring.sq;
    unsigned head = IO_URING_READ_ONCE(*sq->khead);
    for (unsigned i = head; i != sq->sqe_tail; i++) {
        struct io_uring_sqe *sqe = &sq->sqes[i & sq->ring_mask];
        if (sqe->user_data != ud || sqe->opcode != IORING_OP_ASYNC_CANCEL)
            continue;
        io_uring_prep_nop(sqe);
        sqe->flags = IOSQE_CQE_SKIP_SUCCESS;
        sqe->user_data = 0; /* posts nothing; would be a stray if it did */
        op->pending_cqes = 0;
        if (e->batch_cancels)
            e->batch_cancels--;
        return 1;
    }
    return 0;
}

/* Whether the kernel owes an op nothing more, after its final completion
 * was handled: none owed, or only its cancel, withdrawn from the SQ. */
static int nothing_more_owed(pact_loop *loop, pact_op_s *op)
{
    return op->pending_cqes == 0 || retract_unsent_cancel(loop, op);
}

static void handle_op_cqe(pact_loop *loop, uint64_t ud, int res, unsigned flags);

/* The two completions of every echo or reply go straight where they
 * are handled, without the frame and the tests of the general case
 * (callgrind, 64-byte echo on io_uring: about 40 instructions per
 * request): a send slot's, and a multishot receive's bytes in a provided
 * buffer with more to come (IORING_CQE_F_MORE: not its last completion,
 * which the general case ends it with). A stream's receive's without
 * its op when its count of evidence stays 0 (stream_recv_deliver); the
 * flags it needs for that are all in the completion, so the test reads
 * only the stream's line. */
static inline void handle_cqe(pact_loop *loop, uint64_t ud, int res,
                              unsigned flags)
{
    if ((ud & SLOT_TAG_MASK) == TAG_SLOT) {
        slot_cqe(loop, ud, res);
        return;
    }
    const unsigned buffer_more = IORING_CQE_F_BUFFER | IORING_CQE_F_MORE;
    if ((ud & STREAM_RECV_MASK) == TAG_STREAM_RECV &&
        (flags & (buffer_more | IORING_CQE_F_SOCK_NONEMPTY)) == buffer_more &&
        res > 0 && !large_receive(loop, (size_t)res) && URING(loop)->multishot) {
        pact_stream *s = stream_of_ud(ud);
        /* Unoptimized builds (the sanitizer trees the tests run in) also
         * check what this path trusts without reading the op: that the
         * stream at this address still has this receive live ("a
         * stream's receive"). One that does not goes the general way,
         * which counts it in stats.stray_completions (design-notes). */
#ifndef __OPTIMIZE__
        if (!stream_recv_op(loop, ud)) {
            handle_op_cqe(loop, ud, res, flags);
            return;
        }
#endif
        if (!s->t.recv_evidence) {
            stream_recv_deliver(loop, s, res, flags);
            return;
        }
    }
    if ((ud & 0xff) == TAG_OP && (flags & buffer_more) == buffer_more) {
        enum uring_tag tag;
        pact_op_s *op = decode(loop, ud, &tag);
        if (op && op->kind == PACT_OP_RECV_MULTI && URING(loop)->multishot) {
            recv_buffer_deliver(loop, op, res, flags);
            return;
        }
    }
    handle_op_cqe(loop, ud, res, flags);
}

static void handle_op_cqe(pact_loop *loop, uint64_t ud, int res, unsigned flags)
{
    if ((ud & SLOT_TAG_MASK) == TAG_CLOSE) {
        if ((ud & 0xff) == TAG_FILES) {
            files_cqe(loop, ud, res);
            return;
        }
        if ((ud & 0xff) == TAG_WATCH_WAIT) {
            watch_wait_cqe(loop, res);
            return;
        }
        if ((ud & 0xff) == TAG_WATCH_CTL) {
            watch_ctl_cqe(loop, (int)(ud >> 32), res);
            return;
        }
        /* Only a failure posts one (CQE_SKIP_SUCCESS): a bug, as close(2)
         * failing on an fd the loop owned would be. */
        pact__error(loop, res, "io_uring: closing socket fd %d failed",
                    (int)(ud >> 32));
        return;
    }
    if ((ud & SLOT_TAG_MASK) >= TAG_SLOT) {
        slot_cqe(loop, ud, res);
        return;
    }
    enum uring_tag tag = TAG_OP;
    pact_op_s *op = (ud & STREAM_RECV_MASK) == TAG_STREAM_RECV
                        ? stream_recv_op(loop, ud)
                        : decode(loop, ud, &tag);
    if (tag == TAG_SILENT) {
        tag = TAG_OP; /* a silent send that did not send everything */
        if (op)
            silent_forget_unknown(URING(loop), op, NULL);
    }
    if (op && tag == TAG_OP && res == -EBADF &&
        (op->flags & PACT_OPF_FIXED_FILE)) {
        if (fixed_file_refused(loop, op))
            return;
        res = -ECANCELED;
    }
    if (!op) {
        loop->stats.stray_completions++;
        pact__log(loop, "stray completion: user_data 0x%llx res %d matches "
                        "no live operation",
                  (unsigned long long)ud, res);
        return;
    }
    if (tag == TAG_OP && op->kind == PACT_OP_RECV_MULTI) {
        if (!recv_multi_cqe(loop, op, res, flags) && nothing_more_owed(loop, op))
            pact__op_complete(loop, op);
        return;
    }
    if (tag == TAG_OP && op->kind == PACT_OP_ACCEPT_MULTI) {
        if (!accept_multi_cqe(loop, op, res, flags) && nothing_more_owed(loop, op))
            pact__op_complete(loop, op);
        return;
    }
    if (tag == TAG_OP && resubmit_orphaned(loop, op, res))
        return;
    op->pending_cqes--;
    switch (tag) {
    case TAG_OP:
        if (op->kind == PACT_OP_SEND_ALL) {
            if (send_all_continue(loop, op, res))
                return;
            if (res < 0)
                op->result = res;
            else if (op->transferred < op->len &&
                     (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT)))
                op->result = -ECANCELED; /* transferred says how much went */
            else if (op->transferred < op->len)
                /* The rest could not be submitted (no SQE): an error, not
                 * a silently short send_all (found by test_faults). */
                op->result = -ENOMEM;
            else
                op->result = (int64_t)op->transferred;
        } else {
            op->result = res;
        }
        break; /* the next op on its fd starts once this one completes */
    case TAG_LINK_TIMEOUT:
        if (res == -ETIME)
            op->flags |= PACT_OPF_TIMED_OUT;
        break;
    case TAG_CANCEL:
        /* 0, -ENOENT or -EALREADY: either way the op posts its own CQE,
         * which carries the real result if it won the race. */
        break;
    default:
        loop->stats.stray_completions++;
        return;
    }
    if (nothing_more_owed(loop, op)) {
        /* Only now, not at the op's own CQE, is the engine done with it
         * (pact__op_complete lets the next op of its fd go): a linked
         * timeout's CQE is posted later from task work, after a next recv
         * that completes inline at submission, so that recv's callback ran
         * first and delivered its bytes before this op's (torture on
         * io_uring, raw TCP recvs with deadlines). */
        /* The kernel ran the op in an io-wq worker as a blocking call
         * (a receive on a socket whose error queue keeps it polling
         * ready gets there after io_uring's poll retries), and a cancel
         * interrupted the worker: -EINTR, nothing done. Only the user's
         * cancel or the linked timeout's does that (a worker takes no
         * signals), and the timeout's CQE then says -ENOENT, not -ETIME.
         * The contract's answers are -ECANCELED and -ETIMEDOUT
         * (docs/contract.md §3; pact__op_complete turns the one into the
         * other for a deadline). */
        if (op->result == -EINTR &&
            (op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT |
                          PACT_OPF_LINK_TIMEOUT))) {
            if (!(op->flags & PACT_OPF_CANCEL_REQUESTED))
                op->flags |= PACT_OPF_TIMED_OUT;
            op->result = -ECANCELED;
        }
        pact__op_complete(loop, op);
    }
}

/* ---- a movable loop changes threads ------------------------------------
 * A movable loop starts on a ring with the fast flags (SINGLE_ISSUER,
 * DEFER_TASKRUN), bound to the first thread that drives it. Another
 * thread can neither submit to that ring nor reap what the kernel
 * finished for it (both answer EEXIST). So when another thread drives
 * the loop (run, run_once, close, or a full SQ between runs), the loop
 * moves to a new ring set up as for a loop that may change threads at
 * any time: bound to no thread, without DEFER_TASKRUN, receiving through
 * poll and recv (see recv_buffers_init). It stays there.
 *
 * The move is safe because the old thread is not in the loop's wait
 * (the new one claimed the loop): with DEFER_TASKRUN the kernel does a
 * waiting socket op's I/O only in task work that the bound thread runs
 * inside io_uring_enter, and posts its completion in the same step.
 * What the old ring did is in its CQ; what it did not do it never will:
 * closing the ring cancels its requests, whose task work then ends
 * without I/O — on kernels that check for a closing ring there
 * (ring_teardown_skips_waiting_io; elsewhere a movable loop never
 * starts on this ring). So the completions in the CQ are handled, the ring is
 * closed and every op still in flight is submitted again on the new ring
 * as if for the first time. Not resubmitted: ops a cancel or deadline
 * was asked for (they end with -ECANCELED, as they would have), and a
 * connect the kernel had started (connect() a second time answers
 * EALREADY; it ends with -ECANCELED, as on a movable loop whose thread
 * has exited). Nothing the kernel may be running on one of its worker
 * threads (io-wq: a read or write of a regular file or block device,
 * whose I/O may be done or under way with the completion owed to the old
 * thread) is on the ring: a movable loop sends those to the thread pool
 * (goes_to_the_pool, uring_init), whose ops carry over as they are.
 *
 * If the old ring's CQ overflowed, the kernel keeps the completions that
 * did not fit in a list that only the bound thread can have flushed into
 * the CQ (for another, io_uring_enter answers EEXIST), and closing the
 * ring drops them. An op still in flight may then be done with its
 * completion in that list: submitting it again could send twice, and
 * its received bytes or accepted connection are gone. So each such op
 * whose doing has an effect ends with -EOVERFLOW (done or not, once at
 * most) instead; only readiness (poll, watch) and the loop's own ops
 * are armed again. Signals lose nothing: they are waited for as
 * readiness (signal.c) and stay pending until the loop reads them. The
 * wake-up read may have emptied its eventfd with the completion lost:
 * the move then wakes the loop once itself (see migrate).
 *
 * The overflow list cannot be had another way: io_uring_enter with
 * GETEVENTS from another thread answers EEXIST on a DEFER_TASKRUN ring
 * before it flushes anything (io_cqring_wait: io_allowed_run_tw), and so
 * does every registration call on a SINGLE_ISSUER ring; the old thread
 * may have exited. Provided buffers that completions in the list held
 * are not lost either: the new ring has no buffer ring (poll mode), and
 * the buffers stay mapped until the loop is freed. */

/* An SQE with this user_data is still in the SQ: the kernel has not
 * seen it (an op's, op_ud, or a slot's, slot_ud). */
static int ud_waits_in_the_sq(uring_engine *e, uint64_t ud)
{
    unsigned head = IO_URING_READ_ONCE(*e->ring.sq.khead);
    for (unsigned i = head; i != e->ring.sq.sqe_tail; i++)
        if (e->ring.sq.sqes[i & e->ring.sq.ring_mask].user_data == ud)
            return 1;
    return 0;
}

/* A silent slot send's length if the kernel sent all of it
 * (silent_done, sorted after the old CQ was drained), else -1. */
static int64_t slot_sent_silently(const uring_engine *e, const pact_send_slot *slot)
{
    for (unsigned i = 0; i < e->nsilent_done; i++)
        if (!e->silent_done[i].op && e->silent_done[i].slot == slot)
            return e->silent_done[i].len;
    return -1;
}

/* The move, before the old ring closes: the sends of live_slots whose
 * completions were not in its CQ. Each gets the result the move gives
 * it and stays in live_slots, owed to the slot (slots_owed), until the
 * next wait hands it over (run_moved_slots): not here, where a callback
 * may not run (uring_submit_now's move), and from there the stream's
 * next send goes by op on the new ring. The result:
 * - sent silently (every byte, no completion): its length;
 * - a cancel was asked for: -ECANCELED, as for an op;
 * - still in the SQ, or taken by the kernel without being done (with
 *   DEFER_TASKRUN the kernel does a waiting send's I/O only in the old
 *   thread's task work, and the ring's close ends it without, see
 *   above): -EAGAIN, nothing sent — the stream sends it again, as it
 *   does the rest of a silent send the socket took nothing of;
 * - taken by the kernel when the CQ had overflowed: it may have been
 *   done with its completion lost, -EOVERFLOW, as for an op.
 * The silent sends among them leave silent_done (ops' stay). */
static void settle_moved_slots(uring_engine *e, int overflowed)
{
    unsigned keep = 0;
    for (unsigned i = 0; i < e->nlive_slots; i++) {
        pact_send_slot *slot = e->live_slots[i];
        if (slot->pending_cqes <= 0 || silent_slot_handed_over(e, slot))
            continue; /* handed over already: run_silent_slots runs it */
        int64_t sent = slot_sent_silently(e, slot);
        if (sent >= 0)
            slot->result = sent;
        else if (slot->flags & PACT_SLOTF_CANCEL_REQUESTED)
            slot->result = -ECANCELED;
        else if (overflowed && !ud_waits_in_the_sq(e, slot_ud(slot, TAG_SLOT)))
            slot->result = -EOVERFLOW;
        else
            slot->result = -EAGAIN;
        slot->pending_cqes = 1; /* owed by the move now, not a cancel too */
        slot->flags &= (uint8_t)~PACT_SLOTF_CANCEL_RETRY;
        slot->engine_index = keep;
        e->live_slots[keep++] = slot;
    }
    e->nlive_slots = keep;
    e->nslot_cancel_retry = 0;
    unsigned ops = 0;
    for (unsigned i = 0; i < e->nsilent_done; i++)
        if (e->silent_done[i].op)
            e->silent_done[ops++] = e->silent_done[i];
    e->nsilent_done = ops;
}

/* Slot sends whose completions a move owes (settle_moved_slots). */
static inline int slots_owed(const uring_engine *e)
{
    return e->nlive_slots && !e->track_slots;
}

/* Hands them over, in the order they were in, at the wait's place for
 * completions (as run_silent_slots). A send the move found not done
 * whose cancel was asked for since ends with -ECANCELED. The list goes:
 * no slot sends again after a move. */
static PACT_SLOW_PATH void run_moved_slots(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    pact_send_slot **owed = e->live_slots;
    unsigned n = e->nlive_slots;
    e->live_slots = NULL;
    e->nlive_slots = e->live_slots_cap = 0;
    for (unsigned i = 0; i < n; i++) {
        pact_send_slot *slot = owed[i];
        if (slot->result == -EAGAIN && (slot->flags & PACT_SLOTF_CANCEL_REQUESTED))
            slot->result = -ECANCELED;
        slot->pending_cqes = 0;
        pact__slot_complete(loop, slot);
    }
    free(owed);
}

/* The ring of a loop that may change threads at any time: no
 * SINGLE_ISSUER, no DEFER_TASKRUN, and no COOP_TASKRUN either — without
 * DEFER_TASKRUN a completion is finished by task work of the thread that
 * *submitted* the op, and COOP_TASKRUN does not wake that thread: if it
 * sleeps (joining the thread that now runs the loop, say), the completion
 * would wait for it forever. Plain task work interrupts its sleep. */
static int plain_ring_setup(uring_engine *e, struct io_uring *ring,
                            unsigned *flags)
{
    static const unsigned sets[] = {IORING_SETUP_SUBMIT_ALL, 0};
    int r = -EINVAL;
    for (size_t i = (e->mask & URING_MASK_SETUP) ? 1 : 0; i < 2; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = sets[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = e->depth * 4;
        r = io_uring_queue_init_params(e->depth, ring, &p);
        if (r == 0) {
            *flags = p.flags;
            return 0;
        }
        if (r != -EINVAL)
            break;
    }
    return r;
}

/* Moves the loop to a ring bound to no thread (see above). may_call_back
 * = 0: only if that runs no callback (the old CQ is empty). Returns 0, or
 * a negative errno with nothing changed. */
static int migrate(pact_loop *loop, int may_call_back)
{
    uring_engine *e = URING(loop);
    if (!may_call_back && io_uring_cq_ready(&e->ring))
        return -EBUSY;
    struct io_uring fresh;
    unsigned fresh_flags = 0;
    int r = plain_ring_setup(e, &fresh, &fresh_flags);
    if (r < 0) {
        pact__error(loop, r, "io_uring: cannot set up a ring for the loop's "
                             "new thread");
        return r;
    }
    /* Streams send with ops from here on, those the callbacks below
     * start too; the slots' sends in flight are settled below. */
    loop->send_slots = 0;
    e->track_slots = 0;
    /* Read before the CQ is drained below: draining does not flush the
     * overflow list into it (only the bound thread's io_uring_enter does). */
    int overflowed =
        (IO_URING_READ_ONCE(*e->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW) != 0;

    /* The old ring's completions, with its mode (multishot buffers)
     * still in place; what they start or re-arm goes to scratch SQEs. */
    e->migrating = 1;
    for (;;) {
        unsigned head, n = 0;
        struct io_uring_cqe *cqe;
        struct {
            uint64_t ud;
            int res;
            unsigned flags;
        } batch[64];
        io_uring_for_each_cqe(&e->ring, head, cqe) {
            batch[n].ud = cqe->user_data;
            batch[n].res = cqe->res;
            batch[n].flags = cqe->flags;
            if (++n == 64)
                break;
        }
        if (n == 0)
            break;
        io_uring_cq_advance(&e->ring, n);
        for (unsigned i = 0; i < n; i++)
            handle_cqe(loop, batch[i].ud, batch[i].res, batch[i].flags);
    }
    e->migrating = 0;
    /* Silent sends: those known to have sent everything complete; the
     * others are ops in flight like any (the new ring has none). A
     * slot's send is settled with the others the old ring owes. */
    silent_sort_unknown(e);
    settle_moved_slots(e, overflowed);
    silent_complete(loop);
    e->nsilent_queued = e->nsilent_unknown = 0;
    e->silent_ok = 0;

    /* Ops the kernel has not seen (still in the SQ) may go again: a
     * connect, and after an overflow any op (none of its completions can
     * be in the overflow list). */
    for (uint32_t i = 0; i < loop->ops.capacity; i++) {
        pact_op_s *op = pact_slab_at(&loop->ops, i);
        /* LINK_TIMEOUT is reused as a mark; no op names a fixed file on
         * the new ring, which has no table (the old one goes with its
         * ring, and with it the sockets closed meanwhile). */
        op->flags &= (uint16_t)~(PACT_OPF_LINK_TIMEOUT | PACT_OPF_FIXED_FILE);
        if ((op->slab.gen & 1) && op->pending_cqes > 0 &&
            (op->kind == PACT_OP_CONNECT || overflowed) &&
            ud_waits_in_the_sq(e, op_ud(op)))
            op->flags |= PACT_OPF_LINK_TIMEOUT;
    }
    io_uring_queue_exit(&e->ring); /* the kernel cancels what it holds */
    e->ring = fresh;
    e->setup_flags = fresh_flags;
    e->enabled = 1;
    e->ring_thread = 0;
    e->ncancel_retry = 0; /* their ops end below, cancelled */
    e->watch_waiting = 0; /* armed again below */
    /* No fixed-file table on the new ring: every SQE names its fd (the
     * fd entries' slot numbers are read only where files_cap is set). */
    e->files_cap = e->files_fresh = 0;
    e->nfiles_free = e->nfiles_closing = 0;
    if (e->multishot) {
        /* The buffers stay mapped until the loop closes: a write may
         * still send from one (pact__recv_buffer_keep). */
        e->multishot = 0;
        loop->recv_multi_mode = "poll";
    }
    /* Receives waiting for a buffer (recv_buffer_wait) or for the next
     * wait (recv_multi_rearm_later) are in flight like the others: they
     * are armed again below, in poll mode. */
    while (pact_list_pop_front(&e->buffer_waiters))
        ;
    while (pact_list_pop_front(&e->multishot_rearms))
        ;
    if (e->has_backend_efd &&
        io_uring_register_eventfd(&e->ring, e->backend_efd) < 0)
        pact__error(loop, -EIO, "io_uring: cannot register the backend "
                                "eventfd with the loop's new ring");

    for (uint32_t i = 0; i < loop->ops.capacity; i++) {
        pact_op_s *op = pact_slab_at(&loop->ops, i);
        if (!(op->slab.gen & 1) || op->pending_cqes <= 0)
            continue;
        if (op->kind == PACT_OP_WATCH) {
            /* Not on a ring: its registration is armed again, since a
             * report in the old ring's lost completions (or a MOD left
             * in its SQ) would leave it disarmed. */
            watch_rearm_moved(loop, op);
            continue;
        }
        int unseen = (op->flags & PACT_OPF_LINK_TIMEOUT) != 0;
        op->flags &= (uint16_t)~(PACT_OPF_LINK_TIMEOUT | PACT_OPF_RECV_SWITCHING);
        op->pending_cqes = 0;
        if ((op->flags & (PACT_OPF_CANCEL_REQUESTED | PACT_OPF_TIMED_OUT)) ||
            (op->kind == PACT_OP_CONNECT && !unseen)) {
            pact__op_defer(loop, op, -ECANCELED);
            continue;
        }
        if (overflowed && !unseen && !(op->flags & PACT_OPF_INTERNAL) &&
            op->kind != PACT_OP_POLL) {
            pact__op_defer(loop, op, -EOVERFLOW);
            continue;
        }
        struct io_uring_sqe *sqe = get_sqes(loop, 1);
        if (!sqe) {
            pact__op_defer(loop, op, -ENOMEM);
            continue;
        }
        prep_op(loop, op, sqe);
        op->pending_cqes = 1;
    }
    if (overflowed && loop->wake_op) {
        /* The wake-up read may have emptied the eventfd with its
         * completion in the lost list: wake_pending, set by the waker and
         * cleared by that completion, stayed set, so no waker would write
         * again and the loop would sleep through every pact_loop_wake()
         * and pact_call_soon_threadsafe(). One wake-up of its own
         * completes the read armed again above, which clears it. */
        atomic_store(&loop->wake_pending, 1);
        int w = pact__wake_post(loop);
        if (w < 0)
            pact__error(loop, w, "io_uring: cannot wake the moved loop");
    }
    return 0;
}

static int uring_adopt_thread(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    if (!e->ring_thread || e->ring_thread == pact__thread_id())
        return 0;
    return migrate(loop, 1);
}

/* Submits the cancels that found no SQE before (see cancel_retry). */
static void retry_cancels(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    unsigned n = e->ncancel_retry;
    e->ncancel_retry = 0;
    for (unsigned i = 0; i < n; i++) {
        pact_op_s *op = pact__op_lookup(loop, e->cancel_retry[i]);
        if (op && op->state == PACT_OP_INFLIGHT && op->pending_cqes > 0)
            uring_cancel(loop, op);
    }
}

/* Handles the CQEs from head to end where they lie in the CQ. Each one's
 * CQ slot is released before its callback runs, so that the CQ has room
 * for whatever the callback causes. Not copied out in batches first, and
 * out of uring_wait so that what the loop needs stays in registers across
 * the callbacks (callgrind, 64-byte echo on io_uring: about 12
 * instructions per completion less). The local head stays true because
 * nothing a callback can do reaps the CQ: only a wait and migrate() do,
 * both reached by running the loop, which a callback cannot; a
 * submission it causes only reads the CQ (silent_sort_unknown). */
static __attribute__((noinline)) void handle_cqes(pact_loop *loop,
                                                  unsigned head, unsigned end)
{
    struct io_uring_cq *cq = &URING(loop)->ring.cq;
    const struct io_uring_cqe *cqes = cq->cqes;
    unsigned mask = cq->ring_mask;
    while (head != end) {
        const struct io_uring_cqe *cqe = &cqes[head & mask];
        uint64_t ud = cqe->user_data;
        int res = cqe->res;
        unsigned flags = cqe->flags;
        io_uring_smp_store_release(cq->khead, ++head);
        handle_cqe(loop, ud, res, flags);
    }
}

/* How many deferred task work items the kernel runs per io_uring_enter
 * that does not sleep (Linux 6.18: IO_LOCAL_TW_DEFAULT_MAX). */
#define KERNEL_TASK_WORK_PER_ENTER 20

/* Whether the io_uring_enter just made left deferred task work that was
 * pending when it looked (see uring_wait): the kernel flags pending work
 * (IORING_SQ_TASKRUN), and the call stopped at its bound, so it posted at
 * least that many completions. The flag alone also rises for work queued
 * after the kernel looked: a peer's bytes that came in while the wait
 * returned, and after a wait that slept, the kernel runs only as many
 * items as the wait asked completions for (one; io_cqring_wait), so the
 * rest came while it was waking the loop. epoll hands such readiness over
 * at its next wait, and so does this engine: asking again for them made
 * the batch grow as long as a peer kept sending, and held back the
 * replies of the whole batch (pact.asyncio's streams echo with four
 * connections, traced: a wait that slept took its four requests in three
 * calls, 1 + 2 + 1, and answered all four at the end). Their completions
 * come with the next wait, which does not sleep for them: it runs pending
 * work before it blocks. cq_ready: the completions in the CQ, read right
 * after the call. */
static inline int work_left_by_the_kernel(const uring_engine *e, unsigned cq_ready)
{
    return (e->setup_flags & IORING_SETUP_DEFER_TASKRUN) &&
           cq_ready >= KERNEL_TASK_WORK_PER_ENTER &&
           (IO_URING_READ_ONCE(*e->ring.sq.kflags) & IORING_SQ_TASKRUN);
}

/* The sends the callbacks of a batch of completions joined to the next
 * submission (stream.c, send_joins_submission) go before the batch ends
 * when a system call is made anyway, or when they are as many as one
 * submission takes (JOINED_SENDS_MAX there, SILENT_MAX here) and more
 * completions wait: else each reply the rest of the batch makes goes out
 * by a send(2) of its own (wrk with 500 keep-alive connections: 0.8 of
 * every request's reply). The completions of the silent ones among them
 * (all that sent everything, where silent sends are possible) are
 * handed over at once, as the wait that submits them would, and their
 * write state goes back to the loop's cache for the next replies; the
 * others still hold theirs until their completions are reaped, and
 * still count in loop->sends_joined, so that at most a submission's
 * worth of write state is held at a time, as before. Only on a loop
 * whose streams send through send slots (a ring bound to one thread:
 * every C server, a movable loop until it moves); an op's completion would wait in the done queue for
 * the end of the batch. get_events: the batch makes a system call next
 * anyway (for the work the kernel left): submit whatever joined since. */
static int joined_sends_go_now(const pact_loop *loop, int get_events)
{
    const uring_engine *e = URING(loop);
    return loop->send_slots && loop->sends_joined > e->joined_still_held &&
           (get_events || loop->sends_joined >= SILENT_MAX);
}

static void submit_joined_sends(pact_loop *loop, int get_events)
{
    uring_engine *e = URING(loop);
    /* Slots already handed over (by an earlier sort) are not this batch's
     * joined sends: only those this submission completes give one back. */
    unsigned ready_before = e->nsilent_slots_ready;
    loop->stats.syscalls_enter++;
    silent_arm(e);
    int r = get_events ? io_uring_submit_and_get_events(&e->ring)
                       : io_uring_submit(&e->ring);
    silent_settle(loop);
    if (r < 0 && r != -EBUSY && r != -EAGAIN && r != -EINTR)
        pact__error(loop, r, "io_uring submit failed");
    unsigned given_back = e->nsilent_slots_ready - ready_before;
    if (e->nsilent_slots_ready)
        run_silent_slots(loop);
    loop->sends_joined = loop->sends_joined > given_back
                             ? (uint16_t)(loop->sends_joined - given_back)
                             : 0;
    e->joined_still_held = loop->sends_joined;
}

static int uring_wait(pact_loop *loop, int64_t timeout_ns)
{
    uring_engine *e = URING(loop);
    int r = ensure_enabled(loop, e);
    if (r < 0)
        return r;
    if (e->ncancel_retry)
        retry_cancels(loop);
    if (e->nslot_cancel_retry)
        retry_slot_cancels(loop);
    if (e->mru && e->multishot && (e->filling >= 0 || e->nreturned))
        refill_buffer_ring(e);
    if (!pact_list_empty(&e->buffer_waiters))
        rearm_buffer_waiters(loop);
    if (!pact_list_empty(&e->multishot_rearms))
        rearm_multishots(loop);
    if (e->nwatchers && !e->watch_waiting)
        watch_wait_arm(loop); /* it found no SQE before */
    if (e->has_backend_efd) {
        /* Reset before reaping: a completion that comes after this read
         * signals the eventfd again, so the outer loop wakes for it. */
        uint64_t count;
        while (read(e->backend_efd, &count, sizeof count) > 0)
            ;
    }
    loop->sends_joined = 0; /* the system call below submits them */
    e->joined_still_held = 0;
    if (timeout_ns != 0 &&
        (e->nsilent_unknown || e->nsilent_done || e->nsilent_queued) &&
        silent_must_poll(loop))
        timeout_ns = 0;
    if (slots_owed(e) || e->nsilent_slots_ready)
        timeout_ns = 0; /* their completions are this wait's to hand over */
    /* The kernel runs a bounded number of deferred task work items per
     * io_uring_enter (20 on Linux 6.18, IO_LOCAL_TW_DEFAULT_MAX) and
     * leaves the rest pending, flagged IORING_SQ_TASKRUN: completions
     * that were ready when this wait looked, which epoll would have
     * handed over now (work_left_by_the_kernel: only when the call
     * stopped at that bound). Read right after the system call, before a
     * hook or callback can queue new work, so an iteration whose wait ran
     * it all makes no system call for it (tests/test_loop.c, "how many
     * ready completions one run hands over"). */
    int work_left = 0;
    if (e->nfiles_closing)
        fixed_slots_empty(loop);
    if (timeout_ns == 0 && io_uring_sq_ready(&e->ring) == 0 &&
        (e->setup_flags & IORING_SETUP_DEFER_TASKRUN) &&
        (e->setup_flags & IORING_SETUP_TASKRUN_FLAG) &&
        !(IO_URING_READ_ONCE(*e->ring.sq.kflags) &
          (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW))) {
        /* A non-blocking turn with nothing to submit and no completion
         * waiting in the kernel (it would have set IORING_SQ_TASKRUN): the
         * system call would find nothing, so only look at the CQ. This
         * keeps callback chains (call_soon, timers due now) off the
         * kernel. */
        pact__wait_hook_before(loop, timeout_ns);
        silent_complete(loop);
        pact__wait_hook_after(loop, timeout_ns);
        r = 0;
    } else if (timeout_ns == 0) {
        /* Submit and run deferred task work without blocking. */
        loop->stats.syscalls_enter++;
        pact__wait_hook_before(loop, timeout_ns);
        silent_arm(e);
        r = io_uring_submit_and_get_events(&e->ring);
        work_left = work_left_by_the_kernel(e, io_uring_cq_ready(&e->ring));
        silent_settle(loop);
        pact__wait_hook_after(loop, timeout_ns);
    } else {
        loop->stats.syscalls_enter++;
        struct __kernel_timespec ts;
        struct io_uring_cqe *cqe;
        if (timeout_ns > 0) {
            ts.tv_sec = timeout_ns / 1000000000ll;
            ts.tv_nsec = timeout_ns % 1000000000ll;
        }
        pact__wait_hook_before(loop, timeout_ns);
        silent_arm(e);
        r = io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1,
                                             timeout_ns > 0 ? &ts : NULL, NULL);
        work_left = work_left_by_the_kernel(e, io_uring_cq_ready(&e->ring));
        silent_settle(loop);
        pact__wait_hook_after(loop, timeout_ns);
    }
    /* Without hooks the done queue (silent sends) runs here: before the
     * completions this wait found, as the kernel's would have. So do the
     * send slots' that went silently. */
    if (!loop->after_wait && !pact_list_empty(&loop->done_queue))
        pact__ops_dispatch_done(loop);
    if (e->nsilent_slots_ready)
        run_silent_slots(loop);
    if (slots_owed(e))
        run_moved_slots(loop);
    if (IO_URING_READ_ONCE(*e->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW)
        loop->stats.cq_overflows++;

    int seen = 0;
    int cancel_rounds = 1;
    e->batch_cancels = 0;
    /* One wait hands over at most a CQ's worth of completions. Callbacks
     * make more (an eager send to a socket this loop reads, on loopback,
     * completes the peer's receive at once): reaping until the CQ stays
     * empty never ended under a steady load (the soak's io_uring loop
     * never got back to its timers). What is left is reaped by the next
     * wait, which then does not block. */
    unsigned budget = e->ring.cq.ring_entries;
    for (;;) {
        /* Only what is posted already: io_uring_peek_batch_cqe enters the
         * kernel for pending task work when the CQ is empty, which is what
         * kept this loop going. The tail is read once per batch, not per
         * CQE as io_uring_for_each_cqe does (with a test of the ring's
         * flags for CQE32, never set here). */
        unsigned n = 0, head = 0;
        if ((unsigned)seen < budget) {
            head = *e->ring.cq.khead;
            unsigned ready = io_uring_smp_load_acquire(e->ring.cq.ktail) - head;
            n = ready < 64 ? ready : 64;
        }
        if (n == 0 && e->batch_cancels && cancel_rounds-- > 0 &&
            (IO_URING_READ_ONCE(*e->ring.sq.kflags) & IORING_SQ_TASKRUN)) {
            /* A completion cancelled another op (a write pipe's watch saw
             * the reader go, and ends the write waiting for room), and the
             * kernel has work pending that it left when this wait had its
             * first completions: the cancelled op's own completion may be
             * in it (the write's failure). Epoll would see both now; so
             * run that work, submitting nothing, and the op completes in
             * this iteration without its cancel (retract_unsent_cancel). */
            e->batch_cancels = 0;
            loop->stats.syscalls_enter++;
            io_uring_get_events(&e->ring);
            continue;
        }
        if (n == 0 && work_left && (unsigned)seen < budget) {
            /* Only the work that wait left, and the sends joined since
             * (submit_joined_sends). Again only while that call too
             * stopped at the kernel's bound: work that came since is the
             * next wait's, and work that posts nothing (a poll woken with
             * nothing to do, queued again) would keep the flag up and
             * this loop going without handing anything over. */
            if (joined_sends_go_now(loop, 1)) {
                submit_joined_sends(loop, 1);
            } else {
                loop->stats.syscalls_enter++;
                io_uring_get_events(&e->ring);
            }
            work_left = work_left_by_the_kernel(e, io_uring_cq_ready(&e->ring));
            continue;
        }
        if (n == 0)
            break;
        loop->sends_join_submission = 1;
        handle_cqes(loop, head, head + n);
        loop->sends_join_submission = 0;
        seen += (int)n;
        if (joined_sends_go_now(loop, 0) && (unsigned)seen < budget &&
            io_uring_cq_ready(&e->ring) > 0)
            submit_joined_sends(loop, 0);
    }
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN)
        return r;
    return seen;
}

/* Not the ring fd: with DEFER_TASKRUN a completion waits as task work
 * for this thread's next io_uring_enter(GETEVENTS), and queueing that work
 * does not wake a poller of the ring fd (an outer epoll on it slept
 * through every completion, test_embed). A registered eventfd is
 * signalled both when task work is queued and when a CQE is posted.
 * uring_wait() resets it before reaping. */
static int uring_backend_fd(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    if (e->has_backend_efd)
        return e->backend_efd;
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return -errno;
    int r = io_uring_register_eventfd(&e->ring, fd);
    if (r < 0) {
        close(fd);
        return r;
    }
    e->backend_efd = fd;
    e->has_backend_efd = 1;
    return fd;
}

static int uring_has_unsubmitted(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    /* A silent send's completion that must run before the loop sleeps
     * (silent_must_poll) is handed over only by a wait, and a multishot
     * receive to be armed again (recv_multi_rearm_later) is submitted only
     * by one. */
    return io_uring_sq_ready(&e->ring) > 0 || e->ncancel_retry > 0 ||
           e->nslot_cancel_retry > 0 || !pact_list_empty(&e->multishot_rearms) ||
           slots_owed(e) ||
           ((e->nsilent_unknown || e->nsilent_done) && silent_must_poll(loop));
}

static void uring_flush(pact_loop *loop)
{
    uring_engine *e = URING(loop);
    loop->sends_joined = 0;
    e->joined_still_held = 0;
    if (e->nfiles_closing)
        fixed_slots_empty(loop);
    if (io_uring_sq_ready(&e->ring) == 0)
        return;
    int r = uring_submit_now(loop);
    if (r < 0 && r != -EBUSY && r != -EAGAIN && r != -EINTR)
        pact__error(loop, r, "io_uring submit failed");
}

/* ---- a close behind a first try ----------------------------------------
 * A write's first try joined to the next submission (stream.c) goes
 * where epoll's eager send went at the write. A close behind it takes
 * later writes only if it did not send everything (docs/contract.md §6),
 * which the stream asks when such a write comes (uring_first_try_sent).
 * The send's fate is then read where it lies: still in the SQ (the
 * kernel has not tried it: it is submitted now, as the eager send would
 * have gone, and read again), handed over as sent, its completion in the
 * CQ, not reaped yet, or a silent send's list; a send the kernel took
 * without a completion and that is no silent one waits for room. */
enum { FIRST_TRY_IN_THE_SQ = 2, FIRST_TRY_QUEUED = 3 };

/* The result of an unreaped CQE that carries ud or ud2, if one does. */
static int cqe_not_reaped(const uring_engine *e, uint64_t ud, uint64_t ud2,
                          int *res)
{
    unsigned head = *e->ring.cq.khead;
    unsigned tail = io_uring_smp_load_acquire(e->ring.cq.ktail);
    for (unsigned h = head; h != tail; h++) {
        const struct io_uring_cqe *c = &e->ring.cq.cqes[h & e->ring.cq.ring_mask];
        if (c->user_data == ud || c->user_data == ud2) {
            *res = c->res;
            return 1;
        }
    }
    return 0;
}

/* uring_first_try_sent's answer without a submission, or
 * FIRST_TRY_IN_THE_SQ, or FIRST_TRY_QUEUED (an op's send still in the op
 * layer's queue: streams send by op where the ring has no send slots). */
static int first_try_fate(pact_loop *loop, pact_send_slot *slot, pact_op h,
                          size_t len)
{
    uring_engine *e = URING(loop);
    pact_op_s *op = NULL;
    uint64_t ud, ud2; /* an op's may carry TAG_SILENT (silent_arm) */
    if (slot) {
        if (silent_slot_handed_over(e, slot))
            return 1;
        if (!loop->send_slots) /* the loop moved: settle_moved_slots */
            return slot->result == (int64_t)len ? 1
                   : slot->result == -EAGAIN    ? 0 /* sent again, whole */
                                                : -EAGAIN;
        ud = ud2 = slot_ud(slot, TAG_SLOT);
    } else {
        op = pact__op_lookup(loop, h);
        if (!op)
            return -ENOENT;
        if (op->state == PACT_OP_DONE) /* handed over (silent_hand_over) */
            return op->result == (int64_t)len;
        if (op->state == PACT_OP_QUEUED || (op->flags & PACT_OPF_ORDER_WAITING))
            return FIRST_TRY_QUEUED;
        if (op->state != PACT_OP_INFLIGHT)
            return -EAGAIN;
        ud = encode(op, TAG_OP);
        ud2 = encode(op, TAG_SILENT);
    }
    if (ud_waits_in_the_sq(e, ud) || (ud2 != ud && ud_waits_in_the_sq(e, ud2)))
        return FIRST_TRY_IN_THE_SQ;
    int res;
    if (cqe_not_reaped(e, ud, ud2, &res))
        return res == (int64_t)len;
    for (unsigned i = 0; i < e->nsilent_done; i++)
        if (e->silent_done[i].op == op && e->silent_done[i].slot == slot)
            return 1;
    for (unsigned i = 0; i < e->nsilent_unknown; i++)
        if (e->silent_unknown[i].op == op && e->silent_unknown[i].slot == slot)
            return -EAGAIN; /* the CQ overflowed: sorted by a later wait */
    if (IO_URING_READ_ONCE(*e->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW)
        return -EAGAIN; /* its completion may wait in the overflow list */
    return 0; /* the kernel holds it: the socket had no room */
}

static int uring_first_try_sent(pact_loop *loop, pact_send_slot *slot, pact_op op,
                                size_t len)
{
    int r = first_try_fate(loop, slot, op, len);
    if (r != FIRST_TRY_IN_THE_SQ && r != FIRST_TRY_QUEUED)
        return r;
    /* In a move (migrate) nothing goes to the old ring, whose thread is
     * another, and the new one is not set up yet: the send goes again
     * on the new ring, and whether it will send everything is not known
     * (counted as sent, as before the kernel answers). The move's own
     * callbacks make no first try (stream.c sends their writes at once). */
    if (URING(loop)->migrating)
        return -EAGAIN;
    if (r == FIRST_TRY_QUEUED) {
        /* Into the SQ with what was queued before it, in order, as the
         * run's end would hand them over (pact__ops_flush). */
        pact__ops_flush(loop);
        r = first_try_fate(loop, slot, op, len);
        if (r != FIRST_TRY_IN_THE_SQ)
            return r == FIRST_TRY_QUEUED ? -EAGAIN : r; /* waits its fd's turn */
    }
    /* Its completion, if the kernel posts one at once, stays in the CQ
     * for the next wait (as a submission that makes room in a full SQ
     * leaves them). */
    uring_submit_now(loop);
    r = first_try_fate(loop, slot, op, len);
    return r == FIRST_TRY_IN_THE_SQ ? -EAGAIN : r; /* the kernel took none */
}

/* A socket the loop owned is closed by a CLOSE that goes with the next
 * submission: no close(2) of its own, one system call per connection
 * less in a server of short connections (connect, one request, close).
 * The peer sees the FIN when it is submitted: within this iteration (the
 * wait submits), or when the run returns (uring_flush). The fd number
 * stays taken until then, so nothing else can get it and be closed by
 * mistake. Without an SQE, or where closes cannot wait in the SQ (see
 * close_on_ring), close(2). */
static void uring_close_socket(pact_loop *loop, int fd)
{
    uring_engine *e = URING(loop);
    struct io_uring_sqe *sqe = NULL;
    if (e->close_on_ring && !e->migrating &&
        (!e->ring_thread || e->ring_thread == pact__thread_id()))
        sqe = get_sqes(loop, 1);
    if (!sqe) {
        close(fd);
        return;
    }
    io_uring_prep_close(sqe, fd);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, ((uint64_t)(uint32_t)fd << 32) | TAG_CLOSE);
}

PACT_ENGINE_DEFINE(uring, uring, "io_uring");
