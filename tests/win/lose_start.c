/* SPDX-License-Identifier: MIT */
/* A Linux library preloaded (LD_PRELOAD) into the Wine processes of a
 * test by tests/run-windows.sh: it makes Wine lose the start of one
 * child, as Wine now and then does when the new process cannot map its
 * shared user data (docs/windows.md). The Wine process that runs
 * tests/win/child.exe by its path ends before it connects to the
 * wineserver, with exit code 0, when the file PACT_LOSE_START names
 * exists; the file is removed, so one start is lost. The parent's
 * CreateProcess then fails with ERROR_INTERNAL_ERROR, which pact answers
 * with -EAGAIN (src/win/process.c). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void lose_start(void)
{
    const char *mark = getenv("PACT_LOSE_START");
    if (!mark)
        return;
    char cmd[4096];
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, cmd, sizeof cmd - 1);
    close(fd);
    if (n <= 0)
        return;
    cmd[n] = 0;
    /* "wine64\0Z:\...\child.exe\0exit\00\0": the program Wine runs is
     * the second string. */
    const char *program = cmd + strlen(cmd) + 1;
    size_t len = program < cmd + n ? strlen(program) : 0;
    if (len < 9 || strcmp(program + len - 9, "child.exe") != 0)
        return;
    if (unlink(mark) == 0) {
        fprintf(stderr, "lose_start: ending pid %d (%s) before it runs\n",
                (int)getpid(), program);
        _exit(0);
    }
}
