/* SPDX-License-Identifier: MIT */
/* What the test helpers of both systems share (tests/helpers.h on Linux,
 * tests/win/helpers.h on Windows, each including this after Criterion and
 * pact.h): closing a loop with the checks every test makes, running it
 * until a flag is set, and the test stream's byte pattern. */
#ifndef PACT_TEST_HELPERS_BOTH_SYSTEMS_H
#define PACT_TEST_HELPERS_BOTH_SYSTEMS_H

#include <stdint.h>

#define MS (1000ull * 1000ull)

/* Closes the loop and checks the promises every test shares: no stray
 * completion, nothing left live. */
static inline void test_loop_free(pact_loop *loop)
{
    pact_loop_stats st;
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    cr_expect_eq(st.stray_completions, 0, "stray completions: %llu",
                 (unsigned long long)st.stray_completions);
    cr_assert_eq(pact_loop_close(loop), 0);
    cr_assert_eq(pact_loop_get_stats(loop, &st), 0);
    cr_expect_eq(st.stray_completions, 0);
    cr_expect_eq(st.ops_live, 0, "ops still live after close: %llu",
                 (unsigned long long)st.ops_live);
    cr_expect_eq(st.ops_started, st.ops_completed,
                 "started %llu, completed %llu",
                 (unsigned long long)st.ops_started,
                 (unsigned long long)st.ops_completed);
    pact_loop_free(loop);
}

/* Runs the loop until *flag becomes non-zero, or fails after limit_ms. */
static inline void run_until(pact_loop *loop, const volatile int *flag,
                             unsigned limit_ms)
{
    uint64_t end = pact_now() + limit_ms * MS;
    while (!*flag) {
        cr_assert(pact_now() < end, "timed out after %u ms", limit_ms);
        int r = pact_loop_run_once(loop, 10 * (int64_t)MS);
        cr_assert_geq(r, 0, "run_once: %s", pact_strerror(r));
    }
}

/* The byte at position k of a test stream: a pattern in which a lost,
 * doubled or reordered chunk is always noticed. */
static inline uint8_t test_pattern_byte(uint64_t k)
{
    return (uint8_t)((k * 2654435761u) >> 13) ^ (uint8_t)(k >> 16);
}

/* Fills buf with the pattern bytes of stream positions pos, pos + 1, ... */
static inline void test_fill_pattern(uint8_t *buf, size_t len, uint64_t pos)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = test_pattern_byte(pos + i);
}

#endif
