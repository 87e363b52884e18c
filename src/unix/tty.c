/* SPDX-License-Identifier: MIT */
/* Terminals: a pact_tty remembers the terminal's mode when it is opened,
 * switches between normal, raw and io modes, reports the window size, and
 * calls back on resize (SIGWINCH through pact_signal_add, unreferenced so
 * it never keeps the loop alive by itself). Closing it — or closing the
 * loop, which closes every tty still open — puts the saved mode back, so
 * a program that exits through pact_loop_close() leaves no raw terminal
 * behind. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "loop.h"

struct pact_tty {
    pact_resource res; /* closed by loop close if still open */
    pact_loop *loop;
    int fd;
    struct termios saved; /* the mode when opened, restored by close */
    pact_tty_mode mode;
    pact_tty_resize_cb on_resize;
    void *user;
    pact_signal winch;    /* 0 without a resize callback */
    unsigned cols, rows;  /* last size reported (or read at open) */
};

static int read_size(int fd, unsigned *cols, unsigned *rows)
{
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) < 0)
        return -errno;
    *cols = ws.ws_col;
    *rows = ws.ws_row;
    return 0;
}

static void on_winch(pact_loop *loop, int signo, void *user)
{
    (void)signo;
    pact_tty *t = user;
    unsigned cols = 0, rows = 0;
    if (read_size(t->fd, &cols, &rows) < 0)
        return;
    /* SIGWINCH is process-wide: report only a change of this terminal. */
    if (cols == t->cols && rows == t->rows)
        return;
    t->cols = cols;
    t->rows = rows;
    /* The callback may close t: nothing of it is touched afterwards. */
    pact_tty_resize_cb cb = t->on_resize;
    PACT_RUN_CALLBACK(loop, cb, "tty resize callback",
                      cb(t, cols, rows, t->user));
}

static void tty_force_close(pact_resource *res)
{
    pact_tty_close(pact_container_of(res, pact_tty, res));
}

int pact_tty_open(pact_loop *loop, int fd, pact_tty_resize_cb on_resize,
                  void *user, pact_tty **out)
{
    int r = pact__check_loop(loop, __func__);
    if (r)
        return r;
    if (!out || fd < 0)
        return PACT_MISUSE(loop, -EINVAL, "out is NULL or fd negative");
    pact_tty *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->loop = loop;
    t->fd = fd;
    t->mode = PACT_TTY_MODE_NORMAL;
    if (tcgetattr(fd, &t->saved) < 0) {
        r = -errno; /* -ENOTTY: not a terminal */
        free(t);
        return r;
    }
    read_size(fd, &t->cols, &t->rows);
    if (on_resize) {
        t->on_resize = on_resize;
        t->user = user;
        pact_signal s = pact_signal_add(loop, SIGWINCH, on_winch, t);
        if (s < 0) {
            free(t);
            return (int)s;
        }
        t->winch = s;
    }
    static const pact_resource_kind tty_kind = {"tty", tty_force_close};
    pact__resource_add(loop, &t->res, &tty_kind, __builtin_return_address(0));
    *out = t;
    return 0;
}

int pact_tty_set_mode(pact_tty *t, pact_tty_mode mode)
{
    if (!t)
        return -EINVAL;
    int r = pact__loop_check_thread(t->loop, __func__);
    if (r)
        return r;
    struct termios tio = t->saved;
    switch (mode) {
    case PACT_TTY_MODE_NORMAL:
        break;
    case PACT_TTY_MODE_RAW:
        /* cfmakeraw(), spelled out: no echo, no line editing, no signal
         * keys, no input or output translation, 8-bit bytes. */
        tio.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR |
                                   IGNCR | ICRNL | IXON);
        tio.c_oflag &= ~(tcflag_t)OPOST;
        tio.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
        tio.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
        tio.c_cflag |= CS8;
        tio.c_cc[VMIN] = 1;
        tio.c_cc[VTIME] = 0;
        break;
    case PACT_TTY_MODE_IO:
        /* Raw input (byte by byte, no echo, ^C is a byte), but output
         * still translated ("\n" -> "\r\n") and signal keys kept off as in
         * raw: libuv's UV_TTY_MODE_IO. */
        tio.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR |
                                   IGNCR | ICRNL | IXON);
        tio.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
        tio.c_cc[VMIN] = 1;
        tio.c_cc[VTIME] = 0;
        break;
    default:
        return -EINVAL;
    }
    /* TCSADRAIN: output already written is sent in the old mode. */
    if (tcsetattr(t->fd, TCSADRAIN, &tio) < 0)
        return -errno;
    t->mode = mode;
    return 0;
}

int pact_tty_get_winsize(const pact_tty *t, unsigned *cols, unsigned *rows)
{
    if (!t || !cols || !rows)
        return -EINVAL;
    return read_size(t->fd, cols, rows);
}

int pact_tty_close(pact_tty *t)
{
    if (!t)
        return -EINVAL;
    int r = pact__loop_check_thread(t->loop, __func__);
    if (r)
        return r;
    if (t->mode != PACT_TTY_MODE_NORMAL &&
        tcsetattr(t->fd, TCSADRAIN, &t->saved) < 0)
        r = -errno;
    if (t->winch)
        pact_signal_cancel(t->loop, t->winch);
    pact__resource_remove(t->loop, &t->res);
    free(t);
    return r;
}

pact_loop *pact_tty_loop(const pact_tty *t)
{
    return t ? t->loop : NULL;
}
