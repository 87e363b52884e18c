/* SPDX-License-Identifier: MIT */
/* Ring and provided-buffer-ring setup shared by the raw liburing servers
 * (raw_uring.c, http_raw_uring.c), written with current best practice:
 * SINGLE_ISSUER | DEFER_TASKRUN (6.1+) | SUBMIT_ALL, falling back to
 * COOP_TASKRUN (5.19) and then to no flags on EINVAL; a registered ring fd
 * (5.18); a provided buffer ring (5.19) registered with
 * io_uring_register_buf_ring (Debian's liburing 2.3 has no
 * io_uring_setup_buf_ring(), so the ring memory is mmap'd here).
 */
#ifndef BENCH_URING_COMMON_H
#define BENCH_URING_COMMON_H
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

/* Returns 0 or a negative errno; feat describes what was set up. */
static int uring_setup(struct io_uring *ring, char *feat, size_t featlen)
{
    static const struct {
        unsigned flags;
        const char *name;
    } tries[] = {
        {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
             IORING_SETUP_DEFER_TASKRUN,
         "SINGLE_ISSUER|DEFER_TASKRUN|SUBMIT_ALL"},
        {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
         "COOP_TASKRUN|SUBMIT_ALL"},
        {0, "none"},
    };
    int r = -EINVAL;
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        struct io_uring_params p = {0};
        p.flags = tries[i].flags | IORING_SETUP_CQSIZE;
        p.cq_entries = 16384;
        r = io_uring_queue_init_params(1024, ring, &p);
        if (r == 0) {
            snprintf(feat, featlen, "setup=%s", tries[i].name);
            break;
        }
        if (r != -EINVAL)
            return r;
    }
    if (r < 0)
        return r;
    struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
    int ok = probe && io_uring_opcode_supported(probe, IORING_OP_RECV) &&
             io_uring_opcode_supported(probe, IORING_OP_SEND) &&
             io_uring_opcode_supported(probe, IORING_OP_ACCEPT) &&
             io_uring_opcode_supported(probe, IORING_OP_CLOSE);
    if (probe)
        io_uring_free_probe(probe);
    if (!ok)
        return -ENOSYS;
    if (io_uring_register_ring_fd(ring) == 1)
        strncat(feat, ",registered-ring-fd", featlen - strlen(feat) - 1);
    return 0;
}

/* Registers a provided buffer ring of nbuf (a power of two) buffers of
 * bufsz bytes as group bgid, all of them handed to the kernel. Returns the
 * ring (the buffers in *bufs) or NULL with errno set. */
static struct io_uring_buf_ring *uring_setup_buf_ring(struct io_uring *ring,
                                                      unsigned nbuf,
                                                      size_t bufsz, int bgid,
                                                      char **bufs)
{
    /* The ring's entries must be page aligned: mmap. */
    struct io_uring_buf_ring *br =
        mmap(NULL, nbuf * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
             MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    *bufs = mmap(NULL, (size_t)nbuf * bufsz, PROT_READ | PROT_WRITE,
                 MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED || *bufs == MAP_FAILED)
        return NULL;
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)br, .ring_entries = nbuf, .bgid = (__u16)bgid};
    int r = io_uring_register_buf_ring(ring, &reg, 0);
    if (r < 0) {
        errno = -r;
        return NULL;
    }
    for (unsigned b = 0; b < nbuf; b++)
        io_uring_buf_ring_add(br, *bufs + (size_t)b * bufsz, (unsigned)bufsz,
                              (unsigned short)b, io_uring_buf_ring_mask(nbuf),
                              (int)b);
    io_uring_buf_ring_advance(br, (int)nbuf);
    return br;
}

#endif
