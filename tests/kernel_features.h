/* SPDX-License-Identifier: MIT */
/* What the tests expect of the running kernel: which io_uring features a
 * loop gets depends on the kernel's version and on the features a test
 * run hides (PACT_URING_MASK, as tests/run-all.sh's uring-masked engine
 * does), and the tests that check for a feature ask here, so that each
 * reads the version and the mask the same way. */
#ifndef PACT_TEST_KERNEL_FEATURES_H
#define PACT_TEST_KERNEL_FEATURES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

/* The running kernel's version (a missing patch level reads as 0): 0, or
 * -1 if it cannot be read. */
static inline int kernel_version(int *major, int *minor, int *patch)
{
    struct utsname u;
    *major = *minor = *patch = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d.%d", major, minor, patch) < 2)
        return -1;
    return 0;
}

/* Whether the running kernel is Linux major.minor or later (not if its
 * version cannot be read). */
static inline int kernel_at_least(int major, int minor)
{
    int ma, mi, patch;
    if (kernel_version(&ma, &mi, &patch) != 0)
        return 0;
    return ma > major || (ma == major && mi >= minor);
}

/* Whether PACT_URING_MASK hides the io_uring feature whose mask name
 * contains `name`, or all of them: the loop then runs as on a kernel
 * without it. */
static inline int uring_feature_masked(const char *name)
{
    const char *mask = getenv("PACT_URING_MASK");
    return mask && (strstr(mask, name) || strstr(mask, "all"));
}

/* Whether the kernel ends a closed ring's waiting receives without doing
 * them (Linux 6.17, backported to 6.16.9 and 6.12.49; engine_uring.c,
 * ring_teardown_skips_waiting_io), which a movable loop needs to start on
 * the fast ring. */
static inline int kernel_ring_teardown_skips_waiting_io(void)
{
    int ma, mi, patch;
    if (kernel_version(&ma, &mi, &patch) != 0)
        return 0;
    if (ma != 6)
        return ma > 6;
    return mi >= 17 || (mi == 16 && patch >= 9) || (mi == 12 && patch >= 49);
}

#endif
