/* SPDX-License-Identifier: MIT */
/* The cancel torture (tests/torture.c) in short runs, so that `make test`
 * runs it on both engines (and under ASan). A failure aborts with the seed
 * and op count printed: replay with `torture --seed N --ops M`. */
#define TORTURE_NO_MAIN
#include "torture.c"

#include <criterion/criterion.h>

/* Fixed seeds keep `make test` reproducible; `make torture` takes new ones. */
static void run_seeds(uint64_t first, int n, uint64_t ops)
{
    for (int i = 0; i < n; i++) {
        torture_result r = torture_run(first + (uint64_t)i, ops);
        cr_expect_eq(r.started, r.completed);
    }
}

Test(torture, short_seeds_a, .timeout = 240) { run_seeds(1, 3, 20000); }
Test(torture, short_seeds_b, .timeout = 240) { run_seeds(101, 3, 20000); }

/* A tiny ring (SQ 2, CQ 8 on io_uring): the SQ fills and the CQ overflows
 * all the time, and the contract must hold all the same. */
Test(torture, tiny_ring, .timeout = 240)
{
    setenv("TORTURE_DEPTH", "2", 1);
    run_seeds(201, 2, 20000);
}
