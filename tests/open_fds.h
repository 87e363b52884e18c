/* SPDX-License-Identifier: MIT */
/* How many fds this process has open: what an fd leak makes grow. Shared
 * by the Criterion suites (through helpers.h) and by the standalone
 * drivers that have no Criterion (torture.c, soak.c). */
#ifndef PACT_TEST_OPEN_FDS_H
#define PACT_TEST_OPEN_FDS_H

#include <dirent.h>

static inline int count_open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    if (d)
        closedir(d);
    return n - 1; /* the DIR's own fd */
}

#endif
