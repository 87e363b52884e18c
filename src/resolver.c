/* SPDX-License-Identifier: MIT */
/* Name resolution: getaddrinfo(3) and getnameinfo(3) run on the loop's
 * thread pool (they block on files, NSS modules and DNS), as ordinary
 * cancellable ops. The request lives in a heap block the op owns
 * (op->ext->work_arg); a worker fills it, the loop thread reads it after the
 * pool handed the op back, and the op's release hook frees it. */
#include <errno.h>
#ifndef _WIN32
#include <netdb.h> /* Windows: ws2tcpip.h, from pact.h */
#endif
#include <stdlib.h>
#include <string.h>

#include "pool.h"

typedef struct resolve_req {
    pact_op_s *op;
    char *host;
    char *service;
    int has_hints;
    struct addrinfo hints;
    struct addrinfo *res; /* NULL once taken or freed */
    int gai_error;
    int ni_flags;
    char host_out[NI_MAXHOST];
    char serv_out[NI_MAXSERV];
} resolve_req;

/* EAI_* codes as negative errno values, so that a resolver failure reads
 * like every other pact error; the EAI code stays in c->gai_error. */
static int64_t gai_to_errno(int eai, int saved_errno)
{
    (void)saved_errno; /* Windows has no EAI_SYSTEM */
    switch (eai) {
    case 0:
        return 0;
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
        return -ENOENT;
    case EAI_SERVICE:
        return -ESRCH;
    case EAI_AGAIN:
        return -EAGAIN;
    case EAI_FAIL:
        return -EIO;
    case EAI_MEMORY:
        return -ENOMEM;
    case EAI_FAMILY:
        return -EAFNOSUPPORT;
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
        return -EADDRNOTAVAIL;
#endif
    case EAI_SOCKTYPE:
        return -ESOCKTNOSUPPORT;
    case EAI_BADFLAGS:
        return -EINVAL;
#ifdef EAI_OVERFLOW
    case EAI_OVERFLOW:
        return -ENAMETOOLONG;
#endif
#ifdef EAI_SYSTEM
    case EAI_SYSTEM:
        return saved_errno > 0 ? -saved_errno : -EIO;
#endif
    default:
        return -EIO;
    }
}

static int64_t getaddrinfo_work(void *arg)
{
    resolve_req *req = arg;
    errno = 0;
    req->gai_error = getaddrinfo(req->host, req->service,
                                 req->has_hints ? &req->hints : NULL,
                                 &req->res);
    return gai_to_errno(req->gai_error, errno);
}

static int64_t getnameinfo_work(void *arg)
{
    resolve_req *req = arg;
    pact_op_s *op = req->op;
    errno = 0;
    req->gai_error = getnameinfo((const struct sockaddr *)&op->ext->addr,
                                 op->ext->addrlen, req->host_out,
                                 sizeof req->host_out, req->serv_out,
                                 sizeof req->serv_out, req->ni_flags);
    return gai_to_errno(req->gai_error, errno);
}

/* The resolver's code and outcome, unless it never ran (cancelled while
 * queued). */
static resolve_req *ran_request(pact_op_s *op, pact_completion *c)
{
    resolve_req *req = op->ext->work_arg;
    if (op->result == -ECANCELED && !req->gai_error)
        return NULL;
    c->gai_error = req->gai_error;
    return op->result < 0 ? NULL : req;
}

static void getaddrinfo_fill(pact_op_s *op, pact_completion *c)
{
    resolve_req *req = ran_request(op, c);
    if (req)
        c->addrinfo = req->res;
}

static void getnameinfo_fill(pact_op_s *op, pact_completion *c)
{
    resolve_req *req = ran_request(op, c);
    if (req) {
        c->host = req->host_out;
        c->service = req->serv_out;
    }
}

static void resolve_req_free(resolve_req *req)
{
    if (req->res)
        freeaddrinfo(req->res);
    free(req->host);
    free(req->service);
    free(req);
}

static void resolve_release(pact_op_s *op)
{
    resolve_req_free(op->ext->work_arg);
}

static const pact_op_extra getaddrinfo_extra = {.fill = getaddrinfo_fill,
                                                .release = resolve_release};
static const pact_op_extra getnameinfo_extra = {.fill = getnameinfo_fill,
                                                .release = resolve_release};

/* The shared start: a PACT_OP_WORK op owning req. */
static pact_op resolve_start(pact_loop *loop, resolve_req *req,
                             int64_t (*fn)(void *), const pact_op_extra *extra,
                             pact_op_cb cb, void *user, void *created_at,
                             const struct sockaddr *addr, socklen_t addrlen)
{
    int err = 0;
    pact_op_s *op = pact__op_new(loop, PACT_OP_WORK, -1, cb, user, &err);
    if (!op) {
        resolve_req_free(req);
        return err;
    }
    /* The ext block first: once extra is set, releasing the op frees req
     * through ext->work_arg (pact__pool_start finds the block there). */
    pact_op_ext *x = pact__op_ext(loop, op);
    if (!x) {
        pact__op_release(loop, op);
        resolve_req_free(req);
        return -ENOMEM;
    }
    req->op = op;
    x->work_arg = req;
    op->extra = extra;
    if (addr) {
        memcpy(&x->addr, addr, addrlen);
        x->addrlen = addrlen;
    }
    return pact__pool_start(loop, op, fn, req, created_at);
}

pact_op pact_getaddrinfo(pact_loop *loop, const char *host,
                         const char *service, const struct addrinfo *hints,
                         pact_op_cb cb, void *user)
{
    int err = pact__check_loop(loop, __func__);
    if (err)
        return err;
    if (!cb)
        return PACT_MISUSE(loop, -EINVAL, "callback is NULL");
    if (!host && !service)
        return PACT_MISUSE(loop, -EINVAL, "neither host nor service given");
    resolve_req *req = calloc(1, sizeof *req);
    if (!req)
        return -ENOMEM;
    req->host = host ? strdup(host) : NULL;
    req->service = service ? strdup(service) : NULL;
    if ((host && !req->host) || (service && !req->service)) {
        resolve_req_free(req);
        return -ENOMEM;
    }
    if (hints) {
        /* Only the four fields getaddrinfo reads from hints. */
        req->has_hints = 1;
        req->hints.ai_flags = hints->ai_flags;
        req->hints.ai_family = hints->ai_family;
        req->hints.ai_socktype = hints->ai_socktype;
        req->hints.ai_protocol = hints->ai_protocol;
    }
    return resolve_start(loop, req, getaddrinfo_work, &getaddrinfo_extra, cb,
                         user, __builtin_return_address(0), NULL, 0);
}

struct addrinfo *pact_op_take_addrinfo(pact_loop *loop, pact_op handle)
{
    if (!loop)
        return NULL;
    pact_op_s *op = pact__op_lookup(loop, handle);
    if (!op || op->extra != &getaddrinfo_extra || op->state != PACT_OP_DONE)
        return NULL;
    resolve_req *req = op->ext->work_arg;
    struct addrinfo *res = req->res;
    req->res = NULL;
    return res;
}

pact_op pact_getnameinfo(pact_loop *loop, const struct sockaddr *addr,
                         socklen_t addrlen, int flags, pact_op_cb cb,
                         void *user)
{
    int err = pact__check_loop(loop, __func__);
    if (err)
        return err;
    if (!cb)
        return PACT_MISUSE(loop, -EINVAL, "callback is NULL");
    if (!addr || addrlen == 0 || (size_t)addrlen > sizeof(struct sockaddr_storage))
        return PACT_MISUSE(loop, -EINVAL, "bad address");
    resolve_req *req = calloc(1, sizeof *req);
    if (!req)
        return -ENOMEM;
    req->ni_flags = flags;
    return resolve_start(loop, req, getnameinfo_work, &getnameinfo_extra, cb,
                         user, __builtin_return_address(0), addr, addrlen);
}
