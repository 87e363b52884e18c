/* SPDX-License-Identifier: MIT */
/* Error names and texts: the errno values pact uses with a meaning of its
 * own and its text for them (one table for every system), and what each
 * system knows of the others (src/unix/error.c, src/win/error.c), which
 * src/error_names.c makes pact_err_name and pact_strerror of. */
#ifndef PACT_ERROR_MEANINGS_H
#define PACT_ERROR_MEANINGS_H

/* Where the kernel also returns the value (EPROTO, ENOBUFS, E2BIG,
 * ...) the text covers both, and it begins as the C library's does. EPERM
 * (pact's owner-thread check) keeps the C library's text: the kernel
 * answers it far more often. docs/errors.md lists the same; a test
 * (errors/own_meanings_match_the_documentation) keeps them together. */
#define PACT_OWN_MEANINGS(X)                                                \
    X(EKEYREJECTED, "TLS certificate verification failed")                 \
    X(EPROTO, "Protocol error (TLS: the peer broke the protocol or sent "   \
              "a fatal alert)")                                            \
    X(ESHUTDOWN, "The loop or object is closing or closed")                 \
    X(EALREADY, "Operation already in progress (or done: a cancel too "     \
                "late, a close already begun)")                            \
    X(ENOBUFS, "No buffer space available (a buffered protocol gave no "   \
               "buffer)")                                                  \
    X(E2BIG, "Argument list too long, or an option struct larger than "    \
             "this library knows with unknown fields set")                 \
    X(ENOTSUP, "Operation not supported (by this kind of object, this "     \
               "kernel, or a library built without TLS)")                  \
    X(ETIMEDOUT, "Connection timed out (or an operation's deadline, or a "  \
                 "TLS handshake)")                                         \
    X(ENODATA, "No data available (a file with no certificate in it)")

/* The system's name ("ENOENT") and text of errno value e (positive), or
 * NULL for a value it does not know. */
const char *pact__errno_name(int e);
const char *pact__errno_text(int e);

#endif
