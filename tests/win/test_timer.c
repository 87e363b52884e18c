/* SPDX-License-Identifier: MIT */
/* The portable timer suite (tests/test_timer.c), unchanged, on Windows:
 * this directory's helpers.h is included first, and its include guard
 * keeps the suite's own #include "helpers.h" (the Linux one, found next to
 * the suite) from being read. */
#include "helpers.h"
#include "../test_timer.c"
