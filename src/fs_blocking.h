/* SPDX-License-Identifier: MIT */
/* File operations (src/fs.c): the blocking call a pool worker makes for
 * one, each system its own (src/unix/fs.c, src/win/fs.c). */
#ifndef PACT_FS_BLOCKING_H
#define PACT_FS_BLOCKING_H

#include <stdint.h>

/* Runs the file op arg (a pact_op_s *: its kind, fd, paths, buffer,
 * offset, flags) to its end; its result: >= 0, or a negative errno. */
int64_t pact__fs_run_blocking(void *arg);

#endif
