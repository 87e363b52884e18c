/* SPDX-License-Identifier: MIT */
/* Subprocesses on Windows: the system's half of src/process.c.
 *
 * - The child starts with CreateProcessW. Its pipes are named pipes: the
 *   parent's end overlapped (anonymous pipes cannot be), so it is a pipe
 *   transport on the completion port; the child's end an ordinary
 *   synchronous handle, as programs expect their standard handles. Only
 *   the child's three standard handles are inherited
 *   (PROC_THREAD_ATTRIBUTE_HANDLE_LIST), so a child never holds another
 *   child's pipe open and hides its EOF.
 * - Everything that can fail is made before CreateProcessW; a failure
 *   closes every handle made so far and returns the errno (a missing
 *   program: -ENOENT, found before CreateProcessW is asked, so the error
 *   is the program's and not a guess from a system error code; a child
 *   the system ended before it ran: -EAGAIN).
 * - The exit is learned from the process handle: pact_wait_for_handle()
 *   completes when it is signalled, and only then is GetExitCodeProcess
 *   asked (STILL_ACTIVE, 259, is a valid exit code: asking earlier could
 *   report a running process as exited).
 * - kill, terminate and close end the child with TerminateProcess and
 *   exit code 1, as asyncio and libuv do on Windows: there is no signal
 *   to report, so the returncode is that exit code, not -9. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "win/iocp.h"
#include "subprocess.h"

#ifndef SIGKILL
#define SIGKILL 9
#endif

/* The Windows limit of a command line, terminating NUL included. */
#define COMMAND_LINE_MAX 32767
#define PIPE_BUFFER (64 * 1024)

static volatile LONG pipe_serial;

/* Handles this file holds, for the tests: every handle it made and has
 * not closed or handed to a transport (a failed spawn must leave none;
 * Wine's GetProcessHandleCount answers 0). */
static volatile LONG handles_held;

long pact__win_process_handles_held(void)
{
    return handles_held;
}

/* h as a handle made here (NULL for a failed call's INVALID_HANDLE_VALUE). */
static HANDLE held(HANDLE h)
{
    if (!h || h == INVALID_HANDLE_VALUE)
        return NULL;
    InterlockedIncrement(&handles_held);
    return h;
}

static void handle_close(HANDLE h)
{
    if (h) {
        CloseHandle(h);
        InterlockedDecrement(&handles_held);
    }
}

/* ---- UTF-8 to UTF-16 ----------------------------------------------------------- */

static wchar_t *wide(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0)
        return NULL;
    wchar_t *w = malloc((size_t)n * sizeof *w);
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n) <= 0) {
        free(w);
        return NULL;
    }
    return w;
}

/* ---- the command line ------------------------------------------------------------ */

/* Appends arg quoted so that the C runtime's parser (MSVCRT's rules, which
 * CommandLineToArgvW and mingw-w64 follow) gives it back unchanged: inside
 * quotes, backslashes are literal unless they precede a quote, where each
 * pair becomes one backslash and an odd one escapes the quote. So the
 * backslashes before a quote, and before the closing quote, are doubled. */
static wchar_t *quote_arg(wchar_t *out, const wchar_t *arg)
{
    if (*arg && !wcspbrk(arg, L" \t\n\v\"")) {
        size_t n = wcslen(arg);
        memcpy(out, arg, n * sizeof *out);
        return out + n;
    }
    *out++ = L'"';
    for (const wchar_t *c = arg;; c++) {
        size_t backslashes = 0;
        while (*c == L'\\') {
            c++;
            backslashes++;
        }
        if (!*c) {
            for (size_t i = 0; i < 2 * backslashes; i++)
                *out++ = L'\\';
            break;
        }
        if (*c == L'"') {
            for (size_t i = 0; i < 2 * backslashes + 1; i++)
                *out++ = L'\\';
        } else {
            for (size_t i = 0; i < backslashes; i++)
                *out++ = L'\\';
        }
        *out++ = *c;
    }
    *out++ = L'"';
    return out;
}

/* The command line of argv (UTF-8), or NULL with *err set. argv[0] is
 * parsed by other rules (everything up to the next quote, no escapes), so
 * it is quoted when it has a blank and refused when it has a quote. */
static wchar_t *command_line(char *const *argv, int *err)
{
    size_t cap = 1;
    for (char *const *a = argv; *a; a++)
        cap += 2 * strlen(*a) + 3;
    if (cap > COMMAND_LINE_MAX) {
        *err = -E2BIG;
        return NULL;
    }
    wchar_t *line = malloc(cap * sizeof *line), *out = line;
    if (!line) {
        *err = -ENOMEM;
        return NULL;
    }
    for (char *const *a = argv; *a; a++) {
        wchar_t *w = wide(*a);
        if (!w) {
            free(line);
            *err = -EILSEQ; /* not UTF-8 */
            return NULL;
        }
        if (a != argv) {
            *out++ = L' ';
            out = quote_arg(out, w);
        } else if (wcschr(w, L'"')) {
            free(w);
            free(line);
            *err = -EINVAL;
            return NULL;
        } else if (!*w || wcspbrk(w, L" \t")) {
            *out++ = L'"';
            wcscpy(out, w);
            out += wcslen(w);
            *out++ = L'"';
        } else {
            wcscpy(out, w);
            out += wcslen(w);
        }
        free(w);
    }
    *out = 0;
    return line;
}

/* The environment block (CREATE_UNICODE_ENVIRONMENT) of envp, or NULL
 * with *err set. */
static wchar_t *environment_block(char *const *envp, int *err)
{
    size_t cap = 2;
    for (char *const *e = envp; *e; e++)
        cap += strlen(*e) + 1; /* UTF-16 never needs more units than UTF-8 bytes */
    wchar_t *block = malloc(cap * sizeof *block), *out = block;
    if (!block) {
        *err = -ENOMEM;
        return NULL;
    }
    for (char *const *e = envp; *e; e++) {
        wchar_t *w = wide(*e);
        if (!w) {
            free(block);
            *err = -EILSEQ;
            return NULL;
        }
        size_t n = wcslen(w);
        memcpy(out, w, (n + 1) * sizeof *out);
        out += n + 1;
        free(w);
    }
    if (out == block)
        *out++ = 0; /* an empty block is two NULs */
    *out = 0;
    return block;
}

/* ---- finding the program ----------------------------------------------------------- */

static int is_file(const wchar_t *path)
{
    DWORD a = GetFileAttributesW(path);
    return a != INVALID_FILE_ATTRIBUTES && !(a & FILE_ATTRIBUTE_DIRECTORY);
}

/* dir\name or dir\name.exe if either is a file: a new string, or NULL. */
static wchar_t *try_program(const wchar_t *dir, size_t dlen,
                            const wchar_t *name)
{
    size_t nlen = wcslen(name);
    wchar_t *path = malloc((dlen + nlen + 6) * sizeof *path);
    if (!path)
        return NULL;
    wchar_t *out = path;
    if (dlen) {
        memcpy(out, dir, dlen * sizeof *out);
        out += dlen;
        if (out[-1] != L'\\' && out[-1] != L'/')
            *out++ = L'\\';
    }
    memcpy(out, name, (nlen + 1) * sizeof *out);
    if (is_file(path))
        return path;
    wcscpy(out + nlen, L".exe");
    if (is_file(path))
        return path;
    free(path);
    return NULL;
}

/* The PATH the child will have (as execvpe and asyncio search it). */
static wchar_t *search_path(char *const *envp)
{
    if (envp) {
        for (char *const *e = envp; *e; e++)
            if (_strnicmp(*e, "PATH=", 5) == 0)
                return wide(*e + 5);
        return NULL;
    }
    DWORD n = GetEnvironmentVariableW(L"PATH", NULL, 0);
    wchar_t *w = n ? malloc(n * sizeof *w) : NULL;
    if (w && GetEnvironmentVariableW(L"PATH", w, n) == 0) {
        free(w);
        return NULL;
    }
    return w;
}

/* The program's path: file as given when it names a directory, else
 * searched in the child's PATH, each candidate also with ".exe". NULL
 * and *err = -ENOENT when there is none. */
static wchar_t *find_program(const char *file, char *const *envp, int *err)
{
    wchar_t *name = wide(file);
    if (!name) {
        *err = -ENOENT;
        return NULL;
    }
    wchar_t *found = NULL;
    if (wcspbrk(name, L"\\/:")) {
        found = try_program(NULL, 0, name);
    } else {
        wchar_t *path = search_path(envp);
        for (wchar_t *dir = path; dir && *dir && !found;) {
            wchar_t *end = wcschr(dir, L';');
            size_t dlen = end ? (size_t)(end - dir) : wcslen(dir);
            if (dlen)
                found = try_program(dir, dlen, name);
            dir = end ? end + 1 : dir + dlen;
        }
        free(path);
    }
    free(name);
    if (!found)
        *err = -ENOENT;
    return found;
}

/* ---- the standard handles ------------------------------------------------------------ */

static SECURITY_ATTRIBUTES inheritable = {sizeof inheritable, NULL, TRUE};

/* A pipe for one of the child's fds: the parent's end overlapped, the
 * child's inheritable and synchronous. 0 or a negative errno. */
static int stdio_pipe(int child_reads, HANDLE *parent, HANDLE *child)
{
    char name[96];
    snprintf(name, sizeof name, "\\\\.\\pipe\\pact-child-%lu-%ld-%p",
             GetCurrentProcessId(), InterlockedIncrement(&pipe_serial),
             (void *)parent);
    /* Duplex on the parent's side: a read pending on a write pipe is how
     * a child that closed its stdin is noticed. */
    *parent = held(CreateNamedPipeA(
        name, PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED | FILE_FLAG_FIRST_PIPE_INSTANCE,
        PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
        1, PIPE_BUFFER, PIPE_BUFFER, 0, NULL));
    if (!*parent)
        return pact__win_error(GetLastError());
    /* The attributes the other direction needs too: a child may ask or
     * set its pipe's state (SetNamedPipeHandleState, as libuv does). */
    *child = held(CreateFileA(name,
                              child_reads ? GENERIC_READ | FILE_WRITE_ATTRIBUTES
                                          : GENERIC_WRITE | FILE_READ_ATTRIBUTES,
                              0, &inheritable, OPEN_EXISTING, 0, NULL));
    if (!*child) {
        int err = pact__win_error(GetLastError());
        handle_close(*parent);
        *parent = NULL;
        return err;
    }
    return 0;
}

/* An inheritable duplicate of h (NULL stays NULL: the child has none). */
static int inheritable_copy(HANDLE h, HANDLE *out)
{
    *out = NULL;
    if (!h || h == INVALID_HANDLE_VALUE)
        return 0;
    if (!DuplicateHandle(GetCurrentProcess(), h, GetCurrentProcess(), out, 0,
                         TRUE, DUPLICATE_SAME_ACCESS)) {
        *out = NULL;
        return pact__win_error(GetLastError());
    }
    held(*out);
    return 0;
}

/* PACT_STDIO_FD's value: a HANDLE; 0, 1 and 2 (never handle values, which
 * are multiples of 4) name this process's own standard handles. */
static HANDLE handle_of_fd(int fd)
{
    static const DWORD std[3] = {STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
                                 STD_ERROR_HANDLE};
    return fd >= 0 && fd < 3 ? GetStdHandle(std[fd]) : (HANDLE)(intptr_t)fd;
}

/* ---- spawning ---------------------------------------------------------------------------- */

/* CreateProcessW's error as an errno, named with the system's code in
 * debug mode (the errno alone loses it: every unmapped code is -EIO).
 * ERROR_INTERNAL_ERROR is a child the system ended before it ran: Wine
 * answers it when the new process is gone, its exit code 0, before its
 * start-up is done, as it now and then is when the new process cannot
 * map its shared user data (docs/windows.md). No process was made and
 * none of the program ran: -EAGAIN, as fork's when the system cannot make
 * a process now, not an input/output error. */
static int create_process_error(pact_loop *loop, DWORD code,
                                const pact_process_options *opts)
{
    int r = code == ERROR_INTERNAL_ERROR ? -EAGAIN : pact__win_error(code);
    if (pact_loop_debug(loop))
        pact__log(loop, "spawn %s: CreateProcessW failed with system error "
                        "%lu (%s)", opts->file ? opts->file : opts->argv[0],
                  (unsigned long)code, pact_err_name(r));
    return r;
}

int pact__process_os_spawn(pact_loop *loop, const pact_process_options *opts,
                           pact_process *p, int parent_end[3])
{
    if (opts->new_session)
        return PACT_MISUSE(loop, -ENOTSUP,
                           "new_session: Windows has no sessions to start "
                           "(new_process_group is CREATE_NEW_PROCESS_GROUP)");
    if (opts->set_umask)
        return PACT_MISUSE(loop, -ENOTSUP, "set_umask: Windows has no umask");
    int r = 0;
    HANDLE parent[3] = {NULL, NULL, NULL}, child[3] = {NULL, NULL, NULL};
    wchar_t *program = NULL, *line = NULL, *env = NULL, *cwd = NULL;
    LPPROC_THREAD_ATTRIBUTE_LIST attrs = NULL;

    line = command_line(opts->argv, &r);
    if (!line)
        goto fail;
    program = find_program(opts->file ? opts->file : opts->argv[0],
                           opts->envp, &r);
    if (!program)
        goto fail;
    if (opts->envp && !(env = environment_block(opts->envp, &r)))
        goto fail;
    if (opts->cwd) {
        cwd = wide(opts->cwd);
        DWORD a = cwd ? GetFileAttributesW(cwd) : INVALID_FILE_ATTRIBUTES;
        if (a == INVALID_FILE_ATTRIBUTES) {
            r = cwd ? pact__win_error(GetLastError()) : -ENOENT;
            goto fail;
        }
        if (!(a & FILE_ATTRIBUTE_DIRECTORY)) {
            r = -ENOTDIR;
            goto fail;
        }
    }

    static const DWORD std[3] = {STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
                                 STD_ERROR_HANDLE};
    for (int i = 0; i < 3 && r == 0; i++) {
        switch (opts->stdio[i].kind) {
        case PACT_STDIO_PIPE:
            r = stdio_pipe(i == 0, &parent[i], &child[i]);
            break;
        case PACT_STDIO_DEVNULL:
            child[i] = held(CreateFileW(L"NUL", GENERIC_READ | GENERIC_WRITE,
                                        FILE_SHARE_READ | FILE_SHARE_WRITE,
                                        &inheritable, OPEN_EXISTING, 0, NULL));
            if (!child[i])
                r = pact__win_error(GetLastError());
            break;
        case PACT_STDIO_FD:
            r = inheritable_copy(handle_of_fd(opts->stdio[i].fd), &child[i]);
            break;
        case PACT_STDIO_STDOUT:
            r = inheritable_copy(child[1] ? child[1] : GetStdHandle(std[1]),
                                 &child[i]);
            break;
        case PACT_STDIO_INHERIT:
            r = inheritable_copy(GetStdHandle(std[i]), &child[i]);
            break;
        }
    }
    if (r)
        goto fail;

    /* Only these handles reach the child, whatever else is inheritable. */
    HANDLE list[3];
    int n = 0;
    for (int i = 0; i < 3; i++)
        if (child[i])
            list[n++] = child[i];
    SIZE_T size = 0;
    InitializeProcThreadAttributeList(NULL, 1, 0, &size);
    attrs = malloc(size);
    if (!attrs) {
        r = -ENOMEM;
        goto fail;
    }
    if (!InitializeProcThreadAttributeList(attrs, 1, 0, &size)) {
        free(attrs);
        attrs = NULL;
        r = pact__win_error(GetLastError());
        goto fail;
    }
    if (n > 0 && !UpdateProcThreadAttribute(attrs, 0,
                                            PROC_THREAD_ATTRIBUTE_HANDLE_LIST,
                                            list, n * sizeof list[0], NULL,
                                            NULL)) {
        r = pact__win_error(GetLastError());
        goto fail;
    }
    STARTUPINFOEXW si;
    memset(&si, 0, sizeof si);
    si.StartupInfo.cb = sizeof si;
    si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
    si.StartupInfo.hStdInput = child[0];
    si.StartupInfo.hStdOutput = child[1];
    si.StartupInfo.hStdError = child[2];
    si.lpAttributeList = attrs;
    PROCESS_INFORMATION pi;
    DWORD flags = CREATE_UNICODE_ENVIRONMENT | EXTENDED_STARTUPINFO_PRESENT |
                  (opts->new_process_group ? CREATE_NEW_PROCESS_GROUP : 0);
    if (!CreateProcessW(program, line, NULL, NULL, n > 0, flags, env, cwd,
                        &si.StartupInfo, &pi)) {
        r = create_process_error(loop, GetLastError(), opts);
        goto fail;
    }
    if (!pi.hProcess) {
        /* Wine hands a file that is no Windows program to the host
         * system and answers success with no process to wait for. */
        handle_close(held(pi.hThread));
        r = -ENOEXEC;
        goto fail;
    }
    CloseHandle(pi.hThread);
    p->handle = held(pi.hProcess);
    p->pid = (pid_t)pi.dwProcessId;
    p->own_group = !!opts->new_process_group;
    for (int i = 0; i < 3; i++) {
        /* The transports own the parent's ends from here on. */
        if (parent[i]) {
            parent_end[i] = (int)(intptr_t)parent[i];
            InterlockedDecrement(&handles_held);
        }
        handle_close(child[i]);
    }
    DeleteProcThreadAttributeList(attrs);
    free(attrs);
    free(program);
    free(line);
    free(env);
    free(cwd);
    return 0;

fail:
    for (int i = 0; i < 3; i++) {
        handle_close(parent[i]);
        handle_close(child[i]);
    }
    if (attrs) {
        DeleteProcThreadAttributeList(attrs);
        free(attrs);
    }
    free(program);
    free(line);
    free(env);
    free(cwd);
    return r;
}

/* ---- exit ------------------------------------------------------------------------------ */

/* The handle is signalled: the process is gone and its code final. */
static void report_code(pact_process *p)
{
    DWORD code = 255;
    if (!GetExitCodeProcess(p->handle, &code))
        pact__error(p->ep.loop, pact__win_error(GetLastError()),
                    "no exit code for child pid %d: reporting 255",
                    (int)p->pid);
    pact__process_exited(p, (int)code);
}

/* Ends the child now, without the loop: at loop close, or when its exit
 * cannot be watched. */
static void terminate_and_wait(pact_process *p)
{
    if (WaitForSingleObject(p->handle, 0) == WAIT_TIMEOUT)
        TerminateProcess(p->handle, 1);
    WaitForSingleObject(p->handle, INFINITE);
}

static void on_exit_signalled(pact_loop *loop, const pact_completion *c,
                              void *arg)
{
    (void)loop;
    pact_process *p = arg;
    p->exit_op = 0;
    if (c->result < 0) {
        /* Only a loop that gave up waiting (its close) cancels this. */
        if (c->result != -ECANCELED)
            pact__error(p->ep.loop, (int)c->result,
                        "waiting for child pid %d failed; terminating it",
                        (int)p->pid);
        terminate_and_wait(p);
    }
    report_code(p);
}

void pact__process_os_watch(pact_process *p)
{
    pact_op op = pact_wait_for_handle(p->ep.loop, p->handle, 0,
                                      on_exit_signalled, p);
    if (op < 0) {
        terminate_and_wait(p);
        report_code(p);
        return;
    }
    p->exit_op = pact__endpoint_op(&p->ep, op);
}

void pact__process_os_discard(pact_process *p)
{
    terminate_and_wait(p);
    pact__process_os_release(p);
}

void pact__process_os_close_end(int end)
{
    CloseHandle((HANDLE)(intptr_t)end);
}

int pact__process_os_signal(pact_process *p, int signo)
{
    int running = WaitForSingleObject(p->handle, 0) == WAIT_TIMEOUT;
    switch (signo) {
    case 0:
        return 0;
    case SIGTERM:
    case SIGKILL:
        /* Refused when the process is exiting already: then it is done. */
        if (!TerminateProcess(p->handle, 1) && running &&
            WaitForSingleObject(p->handle, 0) == WAIT_TIMEOUT)
            return pact__win_error(GetLastError());
        return 0;
    case SIGBREAK:
        /* A console's Ctrl-Break reaches a process group: the child's own,
         * if it has one (never this process's group as well). */
        if (!p->own_group)
            return PACT_MISUSE(p->ep.loop, -ENOTSUP,
                               "SIGBREAK needs new_process_group");
        if (!GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, (DWORD)p->pid))
            return pact__win_error(GetLastError());
        return 0;
    default:
        return PACT_MISUSE(p->ep.loop, -ENOTSUP,
                           "Windows delivers SIGTERM and SIGKILL "
                           "(TerminateProcess) and SIGBREAK only");
    }
}

void pact__process_os_stop(pact_process *p)
{
    if (WaitForSingleObject(p->handle, 0) == WAIT_TIMEOUT) {
        if (pact_loop_debug(p->ep.loop))
            pact__log(p->ep.loop, "close: terminating running child pid %d",
                      (int)p->pid);
        TerminateProcess(p->handle, 1);
    }
    /* The wait on its handle reports it and finishes the transport. */
}

void pact__process_os_release(pact_process *p)
{
    handle_close(p->handle);
    p->handle = NULL;
}
