/* SPDX-License-Identifier: MIT */
/* Terminals on a pseudo-terminal: modes switched and restored (by
 * pact_tty_close and by loop close), the window size, resize callbacks
 * only on a real change, closing from the resize callback, and a fd that
 * is not a terminal. */
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>

#include "helpers.h"

static int open_pty(int *master)
{
    *master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    cr_assert_geq(*master, 0);
    cr_assert_eq(grantpt(*master), 0);
    cr_assert_eq(unlockpt(*master), 0);
    const char *name = ptsname(*master);
    cr_assert_not_null(name);
    int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    cr_assert_geq(slave, 0);
    return slave;
}

static void set_size(int master, unsigned cols, unsigned rows)
{
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    cr_assert_eq(ioctl(master, TIOCSWINSZ, &ws), 0);
}

Test(tty, modes_switch_and_close_restores_the_original)
{
    pact_loop *loop = test_loop_new();
    int master, slave = open_pty(&master);
    struct termios before;
    cr_assert_eq(tcgetattr(slave, &before), 0);
    cr_assert(before.c_lflag & ICANON);
    pact_tty *t = NULL;
    cr_assert_eq(pact_tty_open(loop, slave, NULL, NULL, &t), 0);
    cr_assert_eq(pact_tty_loop(t), loop);
    struct termios now;
    cr_assert_eq(pact_tty_set_mode(t, PACT_TTY_MODE_RAW), 0);
    tcgetattr(slave, &now);
    cr_assert_eq(now.c_lflag & (ICANON | ECHO | ISIG), 0);
    cr_assert_eq(now.c_oflag & OPOST, 0);
    cr_assert_eq(pact_tty_set_mode(t, PACT_TTY_MODE_IO), 0);
    tcgetattr(slave, &now);
    cr_assert_eq(now.c_lflag & (ICANON | ECHO), 0);
    cr_assert_eq(now.c_oflag & OPOST, before.c_oflag & OPOST, "output kept");
    cr_assert_eq(pact_tty_set_mode(t, PACT_TTY_MODE_NORMAL), 0);
    tcgetattr(slave, &now);
    cr_assert_eq(now.c_lflag, before.c_lflag);
    cr_assert_eq(pact_tty_set_mode(t, (pact_tty_mode)9), -EINVAL);
    cr_assert_eq(pact_tty_set_mode(t, PACT_TTY_MODE_RAW), 0);
    cr_assert_eq(pact_tty_close(t), 0);
    tcgetattr(slave, &now);
    cr_assert_eq(now.c_lflag, before.c_lflag, "close restored the mode");
    cr_assert_eq(now.c_iflag, before.c_iflag);
    cr_assert_eq(now.c_oflag, before.c_oflag);
    test_loop_free(loop);
    close(slave);
    close(master);
}

Test(tty, loop_close_restores_a_tty_left_raw)
{
    pact_loop *loop = test_loop_new();
    int master, slave = open_pty(&master);
    struct termios before, now;
    tcgetattr(slave, &before);
    pact_tty *t = NULL;
    cr_assert_eq(pact_tty_open(loop, slave, NULL, NULL, &t), 0);
    cr_assert_eq(pact_tty_set_mode(t, PACT_TTY_MODE_RAW), 0);
    test_loop_free(loop); /* ASan: the tty is freed too */
    tcgetattr(slave, &now);
    cr_assert_eq(now.c_lflag, before.c_lflag);
    close(slave);
    close(master);
}

static struct {
    int calls;
    unsigned cols, rows;
    int close_in_cb;
    int close_result;
} rz;

static void on_resize(pact_tty *t, unsigned cols, unsigned rows, void *user)
{
    (void)user;
    rz.calls++;
    rz.cols = cols;
    rz.rows = rows;
    if (rz.close_in_cb)
        rz.close_result = pact_tty_close(t);
}

static void winch(pact_loop *loop, void *user)
{
    (void)loop;
    (void)user;
    cr_assert_eq(raise(SIGWINCH), 0);
}

static void stop_cb(pact_loop *loop, void *user)
{
    (void)user;
    pact_loop_stop(loop);
}

static void grow(pact_loop *loop, void *user)
{
    (void)loop;
    cr_assert_eq(rz.calls, 0, "SIGWINCH without a change was reported");
    set_size(*(int *)user, 120, 40);
}

Test(tty, resize_is_reported_once_per_change)
{
    pact_loop *loop = test_loop_new();
    memset(&rz, 0, sizeof rz);
    int master, slave = open_pty(&master);
    set_size(master, 80, 24);
    pact_tty *t = NULL;
    cr_assert_eq(pact_tty_open(loop, slave, on_resize, NULL, &t), 0);
    unsigned c, r;
    cr_assert_eq(pact_tty_get_winsize(t, &c, &r), 0);
    cr_assert_eq(c, 80);
    cr_assert_eq(r, 24);
    cr_assert_eq(pact_loop_alive(loop), 0, "the resize handler alone does not keep it");
    /* Our process is not the pty's foreground group, so the kernel's
     * SIGWINCH goes elsewhere: send it ourselves, as a terminal would. */
    pact_call_later(loop, 2 * MS, winch, NULL); /* same size: no call */
    pact_call_later(loop, 6 * MS, grow, &master);
    pact_call_later(loop, 10 * MS, winch, NULL);
    pact_call_later(loop, 14 * MS, winch, NULL); /* no change since: no call */
    pact_call_later(loop, 30 * MS, stop_cb, NULL);
    pact_loop_run(loop);
    cr_assert_eq(rz.calls, 1);
    cr_assert_eq(rz.cols, 120);
    cr_assert_eq(rz.rows, 40);
    cr_assert_eq(pact_tty_close(t), 0);
    test_loop_free(loop);
    close(slave);
    close(master);
}

Test(tty, close_from_the_resize_callback)
{
    pact_loop *loop = test_loop_new();
    memset(&rz, 0, sizeof rz);
    rz.close_in_cb = 1;
    int master, slave = open_pty(&master);
    set_size(master, 80, 24);
    pact_tty *t = NULL;
    cr_assert_eq(pact_tty_open(loop, slave, on_resize, NULL, &t), 0);
    set_size(master, 100, 30);
    pact_call_later(loop, 2 * MS, winch, NULL);
    pact_call_later(loop, 20 * MS, winch, NULL); /* after close: no call */
    pact_loop_run(loop);
    cr_assert_eq(rz.calls, 1);
    cr_assert_eq(rz.close_result, 0);
    test_loop_free(loop);
    close(slave);
    close(master);
}

Test(tty, not_a_terminal_and_bad_input)
{
    pact_loop *loop = test_loop_new();
    int sv[2];
    make_socketpair(sv);
    pact_tty *t = NULL;
    cr_assert_eq(pact_tty_open(loop, sv[0], NULL, NULL, &t), -ENOTTY);
    cr_assert_eq(pact_tty_open(loop, -1, NULL, NULL, &t), -EINVAL);
    cr_assert_eq(pact_tty_open(loop, 0, NULL, NULL, NULL), -EINVAL);
    cr_assert_eq(pact_tty_open(NULL, 0, NULL, NULL, &t), -EINVAL);
    cr_assert_eq(pact_tty_set_mode(NULL, PACT_TTY_MODE_RAW), -EINVAL);
    cr_assert_eq(pact_tty_close(NULL), -EINVAL);
    cr_assert_null(pact_tty_loop(NULL));
    test_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}
