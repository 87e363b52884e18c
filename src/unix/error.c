/* SPDX-License-Identifier: MIT */
/* The errno values Linux names for pact_err_name and pact_strerror
 * (src/error_names.c), one X-macro table (libuv's uv_err_name /
 * uv_strerror pattern) so that names and texts never disagree; the texts
 * are the C library's. */
#include <errno.h>
#include <string.h>

#include "error.h"
#include "error_meanings.h"

#define PACT_ERRNO_MAP(X)                                                   \
    X(EPERM) X(ENOENT) X(ESRCH) X(EINTR) X(EIO) X(ENXIO) X(E2BIG)           \
    X(ENOEXEC) X(EBADF) X(ECHILD) X(EAGAIN) X(ENOMEM) X(EACCES) X(EFAULT)   \
    X(EBUSY) X(EEXIST) X(EXDEV) X(ENODEV) X(ENOTDIR) X(EISDIR) X(EINVAL)    \
    X(ENFILE) X(EMFILE) X(ENOTTY) X(EFBIG) X(ENOSPC) X(ESPIPE) X(EROFS)     \
    X(EMLINK) X(EPIPE) X(ERANGE) X(ENAMETOOLONG) X(ENOSYS) X(ENOTEMPTY)     \
    X(ELOOP) X(ENOTSOCK) X(EDESTADDRREQ) X(EMSGSIZE) X(EPROTOTYPE)          \
    X(ENOPROTOOPT) X(EPROTONOSUPPORT) X(EOPNOTSUPP) X(EAFNOSUPPORT)         \
    X(EADDRINUSE) X(EADDRNOTAVAIL) X(ENETDOWN) X(ENETUNREACH) X(ECONNABORTED)\
    X(ECONNRESET) X(ENOBUFS) X(EISCONN) X(ENOTCONN) X(ESHUTDOWN)            \
    X(ETIMEDOUT) X(ECONNREFUSED) X(EHOSTUNREACH) X(EALREADY) X(EINPROGRESS) \
    X(ECANCELED) X(ETIME) X(EPROTO) X(EOVERFLOW) X(EBADMSG) X(EILSEQ)       \
    X(ENODATA) X(EKEYREJECTED) /* TLS: certificate verification */

const char *pact__errno_name(int e)
{
    switch (e) {
#define PACT_ERR_NAME_CASE(v) case v: return #v;
        PACT_ERRNO_MAP(PACT_ERR_NAME_CASE)
#undef PACT_ERR_NAME_CASE
    default:
        return NULL;
    }
}

const char *pact__errno_text(int e)
{
    switch (e) {
#define PACT_ERR_KNOWN_CASE(v) case v:
        PACT_ERRNO_MAP(PACT_ERR_KNOWN_CASE)
#undef PACT_ERR_KNOWN_CASE
        /* strerrordesc_np() returns a constant string: thread-safe. */
        return strerrordesc_np(e);
    default:
        return NULL;
    }
}
