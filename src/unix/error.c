/* SPDX-License-Identifier: MIT */
/* Error names and messages, generated from one X-macro table (libuv's
 * uv_err_name / uv_strerror pattern) so that the two never disagree; the
 * errno values pact gives a meaning of its own get pact's text
 * (PACT_OWN_MEANINGS, listed in docs/errors.md). */
#include <errno.h>
#include <limits.h>
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

/* The errno value a negative error code stands for, or -1 when err is
 * not one (0, positive, or INT_MIN, whose negation does not fit an int). */
static int errno_of(int err)
{
    return err < 0 && err != INT_MIN ? -err : -1;
}

const char *pact_err_name(int err)
{
    if (err == 0)
        return "OK";
    switch (errno_of(err)) {
#define PACT_ERR_NAME_CASE(e) case e: return #e;
        PACT_ERRNO_MAP(PACT_ERR_NAME_CASE)
#undef PACT_ERR_NAME_CASE
    default:
        return "UNKNOWN";
    }
}

const char *pact_strerror(int err)
{
    if (err == 0)
        return "success";
    switch (errno_of(err)) {
#define PACT_OWN_CASE(e, text) case e: return text;
        PACT_OWN_MEANINGS(PACT_OWN_CASE)
#undef PACT_OWN_CASE
    default:
        break;
    }
    switch (errno_of(err)) {
#define PACT_ERR_KNOWN_CASE(e) case e:
        PACT_ERRNO_MAP(PACT_ERR_KNOWN_CASE)
#undef PACT_ERR_KNOWN_CASE
        /* strerrordesc_np() returns a constant string: thread-safe. */
        return strerrordesc_np(-err);
    default:
        return "unknown error";
    }
}
