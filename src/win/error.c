/* SPDX-License-Identifier: MIT */
/* Errors on Windows: pact speaks negative errno values there too. The
 * Windows and Winsock errors an operation can end with are mapped here
 * (as libuv's uv_translate_sys_error), and the names and messages come
 * from one table, since the C runtime of mingw-w64 knows only part of the
 * POSIX set and has no strerrordesc_np. The values pact gives a meaning
 * of its own read as on Linux (error_meanings.h). */
#include <string.h>

#include "error_meanings.h"
#include "loop.h"

#define PACT_WIN_ERRNO_MAP(X)                                               \
    X(EPERM, "operation not permitted")                                     \
    X(ENOENT, "no such file or directory")                                  \
    X(ESRCH, "no such process")                                             \
    X(ECHILD, "no child processes")                                         \
    X(EINTR, "interrupted system call")                                     \
    X(EIO, "input/output error")                                            \
    X(ENXIO, "no such device or address")                                   \
    X(E2BIG, "argument list too long")                                      \
    X(ENOEXEC, "exec format error")                                         \
    X(EBADF, "bad file descriptor")                                         \
    X(EAGAIN, "resource temporarily unavailable")                           \
    X(ENOMEM, "cannot allocate memory")                                     \
    X(EACCES, "permission denied")                                          \
    X(EFAULT, "bad address")                                                \
    X(EBUSY, "device or resource busy")                                     \
    X(EEXIST, "file exists")                                                \
    X(EXDEV, "invalid cross-device link")                                   \
    X(ENODEV, "no such device")                                             \
    X(ENOTDIR, "not a directory")                                           \
    X(EISDIR, "is a directory")                                             \
    X(EINVAL, "invalid argument")                                           \
    X(ENFILE, "too many open files in system")                              \
    X(EMFILE, "too many open files")                                        \
    X(ENOSPC, "no space left on device")                                    \
    X(ESPIPE, "illegal seek")                                               \
    X(EPIPE, "broken pipe")                                                 \
    X(ERANGE, "numerical result out of range")                              \
    X(ENAMETOOLONG, "file name too long")                                   \
    X(ENOSYS, "function not implemented")                                   \
    X(ENOTEMPTY, "directory not empty")                                     \
    X(EILSEQ, "invalid or incomplete multibyte or wide character")          \
    X(ENOTSOCK, "socket operation on non-socket")                           \
    X(EDESTADDRREQ, "destination address required")                         \
    X(EMSGSIZE, "message too long")                                         \
    X(EPROTOTYPE, "protocol wrong type for socket")                         \
    X(ENOPROTOOPT, "protocol not available")                                \
    X(ESOCKTNOSUPPORT, "socket type not supported")                         \
    X(ENOTSUP, "operation not supported")                                   \
    X(EOPNOTSUPP, "operation not supported")                                \
    X(EAFNOSUPPORT, "address family not supported by protocol")             \
    X(EADDRINUSE, "address already in use")                                 \
    X(EADDRNOTAVAIL, "cannot assign requested address")                     \
    X(ENETDOWN, "network is down")                                          \
    X(ENETUNREACH, "network is unreachable")                                \
    X(ECONNABORTED, "software caused connection abort")                     \
    X(ECONNRESET, "connection reset by peer")                               \
    X(ENOBUFS, "no buffer space available")                                 \
    X(EISCONN, "transport endpoint is already connected")                   \
    X(ENOTCONN, "transport endpoint is not connected")                      \
    X(ESHUTDOWN, "cannot send after transport endpoint shutdown")           \
    X(ETIMEDOUT, "connection timed out")                                    \
    X(ECONNREFUSED, "connection refused")                                   \
    X(EHOSTUNREACH, "no route to host")                                     \
    X(EALREADY, "operation already in progress")                            \
    X(EINPROGRESS, "operation now in progress")                             \
    X(ECANCELED, "operation canceled")                                      \
    X(ETIME, "timer expired")                                               \
    X(EPROTO, "protocol error")                                             \
    X(EOVERFLOW, "value too large for defined data type")                   \
    X(ENODATA, "no data available")                                         \
    X(EKEYREJECTED, "key was rejected by service")

const char *pact__errno_name(int e)
{
    switch (e) {
#define PACT_ERR_NAME_CASE(v, text) case v: return #v;
        PACT_WIN_ERRNO_MAP(PACT_ERR_NAME_CASE)
#undef PACT_ERR_NAME_CASE
    default:
        return NULL;
    }
}

const char *pact__errno_text(int e)
{
    switch (e) {
#define PACT_ERR_TEXT_CASE(v, text) case v: return text;
        PACT_WIN_ERRNO_MAP(PACT_ERR_TEXT_CASE)
#undef PACT_ERR_TEXT_CASE
    default:
        return NULL;
    }
}

int pact__win_error(DWORD err)
{
    switch (err) {
    case 0:
        return 0;
    case ERROR_OPERATION_ABORTED:
    case WSAEINTR:
        return -ECANCELED;
    case ERROR_NETNAME_DELETED:
    case WSAECONNRESET:
    case WSAENETRESET:
    case ERROR_CONNECTION_ABORTED:
        return -ECONNRESET;
    case WSAECONNABORTED:
        return -ECONNABORTED;
    case ERROR_CONNECTION_REFUSED:
    case WSAECONNREFUSED:
    case ERROR_PORT_UNREACHABLE:
        return -ECONNREFUSED;
    case ERROR_BROKEN_PIPE:
    case ERROR_NO_DATA:
    case ERROR_PIPE_NOT_CONNECTED:
        return -EPIPE;
    case WSAESHUTDOWN:
        return -EPIPE;
    case WSAENOTCONN:
    case ERROR_GRACEFUL_DISCONNECT:
        return -ENOTCONN;
    case WSAEISCONN:
        return -EISCONN;
    case WSAENOTSOCK:
        return -ENOTSOCK;
    case ERROR_INVALID_HANDLE:
    case WSAEBADF:
        return -EBADF;
    case WSAEADDRINUSE:
    case ERROR_ADDRESS_ALREADY_ASSOCIATED:
        return -EADDRINUSE;
    case WSAEADDRNOTAVAIL:
        return -EADDRNOTAVAIL;
    case WSAEAFNOSUPPORT:
        return -EAFNOSUPPORT;
    case WSAEMSGSIZE:
    case ERROR_MORE_DATA:
        return -EMSGSIZE;
    case WSAENETDOWN:
        return -ENETDOWN;
    case WSAENETUNREACH:
    case ERROR_NETWORK_UNREACHABLE:
        return -ENETUNREACH;
    case WSAEHOSTUNREACH:
    case ERROR_HOST_UNREACHABLE:
        return -EHOSTUNREACH;
    case WSAETIMEDOUT:
    case ERROR_SEM_TIMEOUT:
    case WAIT_TIMEOUT:
        return -ETIMEDOUT;
    case WSAENOBUFS:
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
        return -ENOMEM;
    case WSAEMFILE:
    case ERROR_TOO_MANY_OPEN_FILES:
        return -EMFILE;
    case WSAEWOULDBLOCK:
        return -EAGAIN;
    case WSAEALREADY:
        return -EALREADY;
    case WSAEINPROGRESS:
        return -EINPROGRESS;
    case WSAEFAULT:
    case ERROR_NOACCESS:
        return -EFAULT;
    case WSAEINVAL:
    case ERROR_INVALID_PARAMETER:
        return -EINVAL;
    case WSAEACCES:
    case ERROR_ACCESS_DENIED:
        return -EACCES;
    case WSAEOPNOTSUPP:
    case ERROR_NOT_SUPPORTED:
        return -ENOTSUP;
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_NAME:
        return -ENOENT;
    case ERROR_DIRECTORY:
        return -ENOTDIR;
    case ERROR_BAD_EXE_FORMAT:
    case ERROR_EXE_MACHINE_TYPE_MISMATCH:
        return -ENOEXEC;
    case ERROR_DIR_NOT_EMPTY:
        return -ENOTEMPTY;
    case ERROR_NOT_SAME_DEVICE:
        return -EXDEV;
    case ERROR_SHARING_VIOLATION:
    case ERROR_LOCK_VIOLATION:
        return -EBUSY;
    case ERROR_FILENAME_EXCED_RANGE:
        return -ENAMETOOLONG;
    case ERROR_FILE_EXISTS:
    case ERROR_ALREADY_EXISTS:
        return -EEXIST;
    case ERROR_PIPE_BUSY:
        return -EBUSY;
    case ERROR_HANDLE_EOF:
        return -EPIPE;
    case ERROR_DISK_FULL:
        return -ENOSPC;
    default:
        return -EIO;
    }
}
