/* SPDX-License-Identifier: MIT */
/* TLS over any stream transport, with OpenSSL and memory BIOs.
 *
 * A TLS transport is a second pact_transport whose `ops` point here (see
 * pact_transport_ops in stream.h), so users see the same transport API as
 * for plain streams. Underneath, the plain transport gets this file's
 * protocol: its data_received feeds ciphertext into the SSL object's read
 * BIO (a memory BIO: a FIFO, so nothing is lost or reordered whatever the
 * timing), and everything OpenSSL writes goes through a custom write BIO
 * straight into pact_transport_write() of the plain transport (one copy,
 * the plain transport's own buffer does the rest: coalescing, flow
 * control, close-after-flush).
 *
 * Pausing: while the user is paused no SSL_read is made, and the plain
 * transport is paused too, so the kernel's buffer fills and TCP pushes
 * back. Ciphertext already in the read BIO stays there and is decrypted
 * and delivered on resume, from a fresh loop callback. Pausing is not
 * cancelling (docs/contract.md §5): the plain transport's end — its EOF,
 * or its connection_lost with an error — comes after every byte it
 * delivered before it, so it is held (plain_eof_held, plain_gone) until
 * the read BIO has been decrypted and delivered, honouring pause at every
 * point; only then is it acted on (read_end). And on resume the plain
 * transport starts reading again only once the read BIO is drained.
 *
 * Flow control: the plain transport's marks are set to (low, low) of the
 * TLS transport, so the plain transport tells us exactly when its buffer
 * falls to our low mark; our own size is plaintext queued before the
 * handshake plus the plain transport's buffer.
 *
 * Lifetime: the TLS transport is a transport of its own (stream.h: an
 * endpoint plus this file's ops table), not a plain transport in disguise.
 * Its endpoint is busy while the plain transport lives, and closing once
 * the plain transport's end has been acted on (tls_finish); the endpoint
 * then calls the user's connection_lost (once, last, and only if
 * connection_made ran) from a fresh loop callback and releases the
 * memory. Both are loop resources, so loop close reports and aborts both.
 *
 * The handshake's outcome goes to a hook, exactly once: the public
 * on_handshake of pact_tls_wrap(), or the client and server helpers'
 * own. A handshake that fails (or is closed, aborted or timed out before
 * it completes) never reaches the protocol: docs/contract.md §6
 * (order) allows no connection_lost without connection_made. */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"
#include "error.h"
#include "server.h"
#include "stream.h"

#define TLS_READ_CHUNK (64 * 1024)
#define DEFAULT_HANDSHAKE_TIMEOUT_NS (60ull * 1000 * 1000 * 1000)
#define DEFAULT_SHUTDOWN_TIMEOUT_NS (30ull * 1000 * 1000 * 1000)
#define SESSION_SLOTS 32

typedef struct session_slot {
    char *host;
    SSL_SESSION *sess;
} session_slot;

/* A context may be shared by loops on several threads (one listener per
 * thread with SO_REUSEPORT, clients on many loops): its reference count
 * and counters are atomic, the client session cache is under a mutex,
 * and everything else is only read once the context is in use (the
 * setters are for before; OpenSSL's SSL_CTX locks itself). */
struct pact_tls_context {
    SSL_CTX *ssl_ctx;
    atomic_int refs;
    int server;
    int verify;
    int check_hostname;
    int session_cache;
    unsigned char *alpn; /* wire format: length-prefixed names */
    size_t alpn_len;
    uint64_t handshake_timeout_ns;
    uint64_t shutdown_timeout_ns;
    atomic_uint_fast64_t handshakes, handshake_failures;
    pthread_mutex_t sessions_lock; /* sessions[] */
    session_slot sessions[SESSION_SLOTS];
    char errmsg[256]; /* why the last setter failed */
};

typedef struct tls_conn tls_conn;
/* Internal hook for the client and server helpers: called when the
 * handshake is done (err 0, before connection_made; it may change the
 * protocol) or failed (then the user's protocol is never called). */
typedef void (*tls_hook)(tls_conn *c, int err, void *arg);

struct tls_conn {
    pact_transport t; /* the public face: an endpoint + tls_ops */
    pact_transport *plain; /* NULL once the plain transport is gone */
    pact_tls_context *ctx;
    SSL *ssl;
    BIO *rbio; /* memory BIO: ciphertext received, not yet decrypted */
    char *hostname;

    unsigned server : 1;
    unsigned started : 1;      /* the handshake has begun */
    unsigned hs_done : 1;      /* ... and completed */
    unsigned silent : 1;       /* hook took the failure: no user callbacks */
    unsigned eof_seen : 1;     /* close_notify received */
    unsigned eof_pending : 1;  /* ... while paused: deliver on resume */
    unsigned shutdown_sent : 1;
    unsigned plain_eof_held : 1; /* the plain transport's EOF, behind the read BIO */
    unsigned plain_gone : 1;     /* its connection_lost, behind the read BIO */
    unsigned lingering : 1;      /* closed: waiting for the peer to close too */
    int plain_err; /* what the plain transport's connection_lost reported */
    int read_failed; /* a bad record: reported behind the plaintext before it */

    pact_handle hs_timer, close_timer, process_handle, start_handle;
    uint64_t handshake_timeout_ns;
    pact_wbuf pending; /* plaintext written before the handshake ended */
    pact_marks marks;
    char *rbuf; /* decrypted plaintext; [rbuf_off, rbuf_len) not yet delivered */
    size_t rbuf_off, rbuf_len;
    long verify_result;
    char alpn[256];
    char errmsg[256];

    tls_hook hook;
    void *hook_arg;
    /* pact_tls_wrap()'s on_handshake (run by wrap_hook). */
    pact_connect_cb on_handshake;
    void *handshake_user;
};

static const pact_transport_ops tls_ops;
static const pact_protocol plain_proto;

static tls_conn *conn_of(const pact_transport *t)
{
    return pact_container_of(t, tls_conn, t);
}

static tls_conn *conn_of_ep(const pact_endpoint *e)
{
    return pact_container_of(e, tls_conn, t.ep);
}

static int is_tls(const pact_transport *t)
{
    return t && pact__endpoint_ops(&t->ep) == &tls_ops.ep;
}

/* ---- the write BIO: straight into the plain transport ------------------- */

static BIO_METHOD *write_method;
static pthread_once_t write_method_once = PTHREAD_ONCE_INIT;

static int wbio_write(BIO *b, const char *data, int len)
{
    tls_conn *c = BIO_get_data(b);
    if (len <= 0)
        return 0;
    /* Once the plain transport is closing or gone, output is dropped: it
     * could not be sent anyway (pact_transport_write refuses it). */
    if (c && c->plain && !pact_transport_is_closing(c->plain))
        pact_transport_write(c->plain, data, (size_t)len);
    return len;
}

static long wbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int wbio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void make_write_method(void)
{
    write_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                                "pact transport");
    if (write_method) {
        BIO_meth_set_write(write_method, wbio_write);
        BIO_meth_set_ctrl(write_method, wbio_ctrl);
        BIO_meth_set_create(write_method, wbio_create);
    }
}

/* ---- contexts ------------------------------------------------------------- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    pact_tls_context *ctx = arg;
    unsigned char *sel;
    /* Server preference order; no overlap: go on without ALPN. */
    if (SSL_select_next_proto(&sel, outlen, ctx->alpn, (unsigned)ctx->alpn_len,
                              in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int keep_session(pact_tls_context *ctx, const char *hostname,
                        SSL_SESSION *sess);

static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    tls_conn *c = SSL_get_app_data(ssl);
    if (!c || !c->hostname || !c->ctx->session_cache)
        return 0;
    pact_tls_context *ctx = c->ctx;
    pthread_mutex_lock(&ctx->sessions_lock);
    int kept = keep_session(ctx, c->hostname, sess);
    pthread_mutex_unlock(&ctx->sessions_lock);
    return kept;
}

/* Under sessions_lock: stores sess as host's last session. 1 if kept
 * (OpenSSL's reference is ours then), 0 if not. */
static int keep_session(pact_tls_context *ctx, const char *hostname,
                        SSL_SESSION *sess)
{
    session_slot *slot = NULL;
    for (int i = 0; i < SESSION_SLOTS && !slot; i++)
        if (ctx->sessions[i].host && strcmp(ctx->sessions[i].host, hostname) == 0)
            slot = &ctx->sessions[i];
    for (int i = 0; i < SESSION_SLOTS && !slot; i++)
        if (!ctx->sessions[i].host)
            slot = &ctx->sessions[i];
    if (!slot)
        slot = &ctx->sessions[(uintptr_t)sess % SESSION_SLOTS]; /* evict one */
    if (!slot->host) {
        slot->host = strdup(hostname);
        if (!slot->host)
            return 0;
    } else if (strcmp(slot->host, hostname) != 0) {
        char *h = strdup(hostname);
        if (!h)
            return 0;
        free(slot->host);
        slot->host = h;
    }
    if (slot->sess)
        SSL_SESSION_free(slot->sess);
    slot->sess = sess; /* returning 1 keeps OpenSSL's reference */
    return 1;
}

int pact_tls_context_create(pact_tls_role role, pact_tls_context **out)
{
    if (!out || (role != PACT_TLS_CLIENT && role != PACT_TLS_SERVER))
        return -EINVAL;
    pact_tls_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return -ENOMEM;
    ctx->server = role == PACT_TLS_SERVER;
    ctx->ssl_ctx = SSL_CTX_new(ctx->server ? TLS_server_method() : TLS_client_method());
    if (!ctx->ssl_ctx) {
        free(ctx);
        return -ENOMEM;
    }
    atomic_init(&ctx->refs, 1);
    atomic_init(&ctx->handshakes, 0);
    atomic_init(&ctx->handshake_failures, 0);
    pthread_mutex_init(&ctx->sessions_lock, NULL);
    ctx->verify = !ctx->server;
    ctx->check_hostname = !ctx->server;
    ctx->session_cache = 1;
    ctx->handshake_timeout_ns = DEFAULT_HANDSHAKE_TIMEOUT_NS;
    ctx->shutdown_timeout_ns = DEFAULT_SHUTDOWN_TIMEOUT_NS;
    SSL_CTX *s = ctx->ssl_ctx;
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Writes are whole (SSL_write_ex takes all of it: the write BIO
     * never blocks). */
    SSL_CTX_set_mode(s, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (ctx->server) {
        SSL_CTX_set_verify(s, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_id_context(s, (const unsigned char *)"pact", 4);
    } else {
        SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_default_verify_paths(s);
        SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_CLIENT |
                                              SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(s, new_session);
    }
    *out = ctx;
    return 0;
}

static void context_ref(pact_tls_context *ctx)
{
    atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
}

static void context_unref(pact_tls_context *ctx)
{
    /* acq_rel: whatever another thread did with the context happens
     * before the last reference frees it. */
    if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) > 1)
        return;
    for (int i = 0; i < SESSION_SLOTS; i++) {
        free(ctx->sessions[i].host);
        if (ctx->sessions[i].sess)
            SSL_SESSION_free(ctx->sessions[i].sess);
    }
    pthread_mutex_destroy(&ctx->sessions_lock);
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx->alpn);
    free(ctx);
}

void pact_tls_context_free(pact_tls_context *ctx)
{
    if (ctx)
        context_unref(ctx);
}

/* A setter failed on path (what: "certificate", ...): the errno it
 * answers and, in ctx->errmsg, why — an unreadable file, a file with
 * nothing of the kind in it (/dev/null: -ENODATA), or OpenSSL's reason. */
static int file_error(pact_tls_context *ctx, const char *path, const char *what)
{
    int r, empty = 0, mismatch = 0;
    unsigned long e, first = 0;
    /* The queue runs from the cause to what gave up ("PEM lib"). */
    while ((e = ERR_get_error()) != 0) {
        if (!first)
            first = e;
        if ((ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) ||
            (ERR_GET_LIB(e) == ERR_LIB_X509 &&
             ERR_GET_REASON(e) == X509_R_NO_CERTIFICATE_OR_CRL_FOUND))
            empty = 1;
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            mismatch = 1;
    }
    if (access(path, R_OK) < 0) {
        r = -errno;
        snprintf(ctx->errmsg, sizeof ctx->errmsg, "%s: %s", path, strerror(errno));
    } else if (mismatch) {
        r = -EINVAL;
        snprintf(ctx->errmsg, sizeof ctx->errmsg,
                 "%s: the private key does not match the certificate", path);
    } else if (empty) {
        r = -ENODATA;
        snprintf(ctx->errmsg, sizeof ctx->errmsg, "%s: no %s in the file (PEM expected)",
                 path, what);
    } else {
        const char *why = first ? ERR_reason_error_string(first) : NULL;
        r = -EINVAL;
        snprintf(ctx->errmsg, sizeof ctx->errmsg, "%s: not a usable %s%s%s", path, what,
                 why ? ": " : "", why ? why : "");
    }
    return r;
}

/* A setter's argument was refused: -EINVAL and why. */
static int setting_error(pact_tls_context *ctx, const char *why)
{
    unsigned long e = ERR_peek_last_error();
    const char *ossl = e ? ERR_reason_error_string(e) : NULL;
    snprintf(ctx->errmsg, sizeof ctx->errmsg, "%s%s%s", why, ossl ? ": " : "",
             ossl ? ossl : "");
    ERR_clear_error();
    return -EINVAL;
}

const char *pact_tls_context_error_message(const pact_tls_context *ctx)
{
    return ctx && ctx->errmsg[0] ? ctx->errmsg : NULL;
}

int pact_tls_context_set_certificate(pact_tls_context *ctx, const char *cert_file,
                                     const char *key_file)
{
    if (!ctx || !cert_file)
        return -EINVAL;
    if (!key_file)
        key_file = cert_file;
    ctx->errmsg[0] = 0;
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx->ssl_ctx, cert_file) != 1)
        return file_error(ctx, cert_file, "certificate");
    if (SSL_CTX_use_PrivateKey_file(ctx->ssl_ctx, key_file, SSL_FILETYPE_PEM) != 1)
        return file_error(ctx, key_file, "private key");
    if (SSL_CTX_check_private_key(ctx->ssl_ctx) != 1)
        return setting_error(ctx, "the private key does not match the certificate");
    ERR_clear_error();
    return 0;
}

int pact_tls_context_set_ca(pact_tls_context *ctx, const char *ca_file,
                            const char *ca_dir)
{
    if (!ctx || (!ca_file && !ca_dir))
        return -EINVAL;
    ctx->errmsg[0] = 0;
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(ctx->ssl_ctx, ca_file, ca_dir) != 1)
        return ca_file ? file_error(ctx, ca_file, "CA certificate")
                       : setting_error(ctx, "cannot use the CA directory");
    return 0;
}

static void apply_verify(pact_tls_context *ctx)
{
    int mode = SSL_VERIFY_NONE;
    if (ctx->verify)
        mode = ctx->server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                           : SSL_VERIFY_PEER;
    SSL_CTX_set_verify(ctx->ssl_ctx, mode, NULL);
}

int pact_tls_context_set_verify(pact_tls_context *ctx, int verify)
{
    if (!ctx)
        return -EINVAL;
    ctx->verify = verify != 0;
    apply_verify(ctx);
    return 0;
}

int pact_tls_context_set_check_hostname(pact_tls_context *ctx, int check)
{
    if (!ctx)
        return -EINVAL;
    ctx->check_hostname = check != 0;
    return 0;
}

int pact_tls_context_set_min_version(pact_tls_context *ctx, int version)
{
    if (!ctx || (version != PACT_TLS_VERSION_1_2 && version != PACT_TLS_VERSION_1_3))
        return -EINVAL;
    return SSL_CTX_set_min_proto_version(ctx->ssl_ctx, version) == 1 ? 0 : -EINVAL;
}

int pact_tls_context_set_ciphers(pact_tls_context *ctx, const char *tls12_list,
                                 const char *tls13_suites)
{
    if (!ctx || (!tls12_list && !tls13_suites))
        return -EINVAL;
    ctx->errmsg[0] = 0;
    ERR_clear_error();
    if (tls12_list && SSL_CTX_set_cipher_list(ctx->ssl_ctx, tls12_list) != 1)
        return setting_error(ctx, "no usable cipher in the TLS 1.2 list");
    if (tls13_suites && SSL_CTX_set_ciphersuites(ctx->ssl_ctx, tls13_suites) != 1)
        return setting_error(ctx, "no usable suite in the TLS 1.3 list");
    return 0;
}

int pact_tls_context_set_alpn(pact_tls_context *ctx, const char *const *protos,
                              size_t count)
{
    if (!ctx || (!protos && count))
        return -EINVAL;
    size_t len = 0;
    for (size_t i = 0; i < count; i++) {
        size_t n = protos[i] ? strlen(protos[i]) : 0;
        if (n == 0 || n > 255)
            return -EINVAL;
        len += 1 + n;
    }
    unsigned char *wire = len ? malloc(len) : NULL;
    if (len && !wire)
        return -ENOMEM;
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        size_t n = strlen(protos[i]);
        wire[off++] = (unsigned char)n;
        memcpy(wire + off, protos[i], n);
        off += n;
    }
    free(ctx->alpn);
    ctx->alpn = wire;
    ctx->alpn_len = len;
    if (ctx->server) {
        SSL_CTX_set_alpn_select_cb(ctx->ssl_ctx, len ? alpn_select : NULL, ctx);
    } else if (SSL_CTX_set_alpn_protos(ctx->ssl_ctx, wire, (unsigned)len) != 0) {
        return -ENOMEM; /* note: 0 is success for this one */
    }
    return 0;
}

int pact_tls_context_set_session_cache(pact_tls_context *ctx, int on)
{
    if (!ctx)
        return -EINVAL;
    ctx->session_cache = on != 0;
    if (ctx->server)
        SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, on ? SSL_SESS_CACHE_SERVER
                                                        : SSL_SESS_CACHE_OFF);
    if (ctx->server && !on)
        SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_TICKET);
    return 0;
}

int pact_tls_context_set_timeouts(pact_tls_context *ctx, uint64_t handshake_ns,
                                  uint64_t shutdown_ns)
{
    if (!ctx)
        return -EINVAL;
    ctx->handshake_timeout_ns = handshake_ns ? handshake_ns : DEFAULT_HANDSHAKE_TIMEOUT_NS;
    ctx->shutdown_timeout_ns = shutdown_ns ? shutdown_ns : DEFAULT_SHUTDOWN_TIMEOUT_NS;
    return 0;
}

struct ssl_ctx_st *pact_tls_context_ssl_ctx(pact_tls_context *ctx)
{
    return ctx ? ctx->ssl_ctx : NULL;
}

uint64_t pact_tls_context_handshakes(const pact_tls_context *ctx)
{
    return ctx ? atomic_load_explicit(&ctx->handshakes, memory_order_relaxed) : 0;
}

uint64_t pact_tls_context_handshake_failures(const pact_tls_context *ctx)
{
    return ctx ? atomic_load_explicit(&ctx->handshake_failures, memory_order_relaxed) : 0;
}

/* ---- teardown -------------------------------------------------------------- */

static void cancel_handle(pact_loop *loop, pact_handle *h)
{
    if (*h > 0)
        pact_handle_cancel(loop, *h);
    *h = 0;
}

static void tls_free(pact_endpoint *e);

#ifndef _WIN32
/* A forked child frees the loop it inherited (endpoint.h): the memory
 * goes; the handles are slab entries of the loop, freed with it, not
 * cancelled. Its plain transport is an endpoint of its own. */
static void tls_forget(pact_endpoint *e)
{
    tls_conn *c = conn_of_ep(e);
    c->hs_timer = c->close_timer = c->process_handle = c->start_handle = 0;
    tls_free(e);
}
#endif

static void tls_free(pact_endpoint *e)
{
    tls_conn *c = conn_of_ep(e);
    cancel_handle(e->loop, &c->hs_timer);
    cancel_handle(e->loop, &c->close_timer);
    cancel_handle(e->loop, &c->process_handle);
    cancel_handle(e->loop, &c->start_handle);
    SSL_free(c->ssl); /* frees both BIOs */
    context_unref(c->ctx);
    free(c->hostname);
    pact__wbuf_free(&c->pending);
    free(c->rbuf);
    free(c);
}

/* The endpoint's final close: only a protocol that saw connection_made
 * learns of the end (docs/contract.md §6); a failed handshake was
 * reported to the hook instead. */
static void tls_lost(pact_endpoint *e)
{
    tls_conn *c = conn_of_ep(e);
    if (e->made && c->t.proto && c->t.proto->connection_lost)
        c->t.proto->connection_lost(&c->t, e->err, c->t.user);
}

/* The final close waits for the plain transport. */
static int tls_busy(const pact_endpoint *e)
{
    return conn_of_ep(e)->plain != NULL;
}

/* The plain transport is gone and its end acted on: the user's
 * connection_lost, once, last (the endpoint's final close). */
static void tls_finish(tls_conn *c)
{
    c->t.ep.closing = 1;
    /* After the peer's close_notify, the peer may have closed its socket
     * at once: our own close_notify then meets EPIPE/ECONNRESET, which
     * ends a clean close, not an error. Judged only now: a close_notify
     * still in the read BIO when the plain transport went counts too. */
    int err = c->plain_err;
    if (c->eof_seen && (err == -EPIPE || err == -ECONNRESET))
        err = 0;
    if (!c->t.ep.err)
        c->t.ep.err = err;
    pact__endpoint_settle(&c->t.ep);
}

static void enter(tls_conn *c)
{
    pact__endpoint_enter(&c->t.ep);
}

static void leave(tls_conn *c)
{
    pact__endpoint_leave(&c->t.ep);
}

static void close_timed_out(pact_loop *loop, void *arg)
{
    (void)loop;
    tls_conn *c = arg;
    c->close_timer = 0;
    if (c->plain)
        pact_transport_abort(c->plain);
}

/* Closes the plain transport after it has sent what is queued (an alert,
 * close_notify), but no longer than the shutdown timeout. */
static void close_plain(tls_conn *c)
{
    if (!c->plain)
        return;
    pact_transport_close(c->plain);
    if (c->plain && !c->close_timer && pact_transport_write_buffer_size(c->plain) > 0) {
        pact_handle h = pact_call_later(c->t.ep.loop, c->ctx->shutdown_timeout_ns,
                                        close_timed_out, c);
        if (h > 0)
            c->close_timer = pact__endpoint_timer(&c->t.ep, h);
    }
}

/* Closes the plain transport once the peer has closed too (a lingering
 * close): after our close_notify, FIN (write_eof, once what is buffered
 * has gone), then what the peer still sends is read and dropped until
 * its close_notify or EOF. Closing a socket while bytes the peer sent
 * are unread makes the kernel answer with a reset that also destroys
 * what it had not sent yet — our last records and close_notify: the peer
 * sees a truncation. A TLS 1.3 server sends its session tickets unasked,
 * so a client that writes and closes at once meets this whenever the
 * server reads slowly. Bounded by the shutdown timeout. */
static void linger_close(tls_conn *c)
{
    if (!c->plain)
        return;
    if (c->eof_seen || c->plain_eof_held) {
        close_plain(c); /* the peer has said all it will say */
        return;
    }
    c->lingering = 1;
    pact_transport_write_eof(c->plain);
    if (!pact_transport_is_reading(c->plain))
        pact_transport_resume_reading(c->plain);
    if (c->plain && !c->close_timer) {
        pact_handle h = pact_call_later(c->t.ep.loop, c->ctx->shutdown_timeout_ns,
                                        close_timed_out, c);
        if (h > 0)
            c->close_timer = pact__endpoint_timer(&c->t.ep, h);
    }
}

/* While lingering: decrypts and drops what arrives; the peer's
 * close_notify (or a record that fails) ends the wait. */
static void linger_read(tls_conn *c)
{
    char sink[4096];
    for (;;) {
        size_t n = 0;
        ERR_clear_error();
        if (SSL_read_ex(c->ssl, sink, sizeof sink, &n) == 1)
            continue;
        int e = SSL_get_error(c->ssl, 0);
        ERR_clear_error();
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            c->lingering = 0;
            close_plain(c);
        }
        return;
    }
}

static void capture_ssl_error(tls_conn *c, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    if (e) {
        char buf[200];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(c->errmsg, sizeof c->errmsg, "%s: %s", what, buf);
    } else if (!c->errmsg[0]) {
        snprintf(c->errmsg, sizeof c->errmsg, "%s", what);
    }
    ERR_clear_error();
}

static void end_without_plain(tls_conn *c);

/* A TLS protocol error (garbage, a fatal alert, a failed verification):
 * the alert OpenSSL queued is sent, then the plain transport closes. */
static void protocol_error(tls_conn *c, int err)
{
    if (!c->t.ep.err)
        c->t.ep.err = err;
    if (c->t.ep.aborting)
        return;
    c->t.ep.closing = 1;
    c->t.ep.aborting = 1;
    close_plain(c);
    end_without_plain(c);
}

static void handshake_failed(tls_conn *c, int err)
{
    if (c->hs_done || c->t.ep.aborting)
        return;
    cancel_handle(c->t.ep.loop, &c->hs_timer);
    atomic_fetch_add_explicit(&c->ctx->handshake_failures, 1, memory_order_relaxed);
    if (!c->t.ep.err)
        c->t.ep.err = err;
    if (pact_loop_debug(c->t.ep.loop))
        pact__log(c->t.ep.loop, "TLS handshake failed (%s): %s", pact_err_name(err),
                  c->errmsg[0] ? c->errmsg : pact_strerror(err));
    /* Closing already: inside the hook, writes, pause and close of the
     * dying transport are refused, not acted on. */
    c->t.ep.closing = 1;
    if (c->hook) {
        c->silent = 1;
        c->hook(c, c->t.ep.err, c->hook_arg);
    }
    if (err == -ETIMEDOUT) {
        c->t.ep.closing = c->t.ep.aborting = 1;
        if (c->plain)
            pact_transport_abort(c->plain);
        return;
    }
    protocol_error(c, err);
}

/* Maps a failed SSL call to an errno and records the reason. */
static int classify_failure(tls_conn *c, int sslerr, const char *what)
{
    long v = SSL_get_verify_result(c->ssl);
    if (!c->hs_done && v != X509_V_OK) {
        c->verify_result = v;
        snprintf(c->errmsg, sizeof c->errmsg, "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
        return -EKEYREJECTED;
    }
    capture_ssl_error(c, what);
    (void)sslerr;
    return -EPROTO;
}

/* ---- reading ------------------------------------------------------------- */

/* Hands the decrypted plaintext in rbuf[rbuf_off, rbuf_len) to the
 * protocol (pact__transport_deliver). A buffered protocol may pause (or
 * close) between two get_buffer calls: the rest stays in rbuf and goes
 * first after resume; after a close nothing more is delivered. */
static void deliver(tls_conn *c)
{
    size_t off = c->rbuf_off, len = c->rbuf_len - off;
    c->rbuf_off = c->rbuf_len = 0;
    size_t took = pact__transport_deliver(&c->t, c->rbuf + off, len);
    if (took < len && !c->t.ep.closing) {
        c->rbuf_off = off + took;
        c->rbuf_len = off + len;
    }
}

static void close_notify_received(tls_conn *c)
{
    c->eof_pending = 0;
    c->eof_seen = 1;
    int keep = c->t.proto->eof_received ? c->t.proto->eof_received(&c->t, c->t.user) : 0;
    if (!keep)
        pact_transport_close(&c->t);
}

static void read_end(tls_conn *c);

/* Decrypts what the read BIO holds and hands it over, while not paused;
 * once all of it is delivered, what the plain transport reported after
 * it comes next (read_end). */
static void read_app_data(tls_conn *c)
{
    if (!c->rbuf) {
        c->rbuf = malloc(TLS_READ_CHUNK);
        if (!c->rbuf) {
            protocol_error(c, -ENOMEM);
            return;
        }
    }
    while (c->hs_done && !c->t.paused && !c->t.ep.closing) {
        if (c->rbuf_off < c->rbuf_len) {
            /* Plaintext decrypted before a pause: first. */
            deliver(c);
            continue;
        }
        if (c->read_failed) {
            /* A bad record, behind the plaintext before it. */
            protocol_error(c, c->read_failed);
            return;
        }
        if (c->eof_seen) {
            /* After close_notify nothing more is decrypted (half-open as
             * the user chose); what the plain transport says still counts. */
            read_end(c);
            return;
        }
        if (c->eof_pending) {
            close_notify_received(c);
            continue; /* the user may keep the connection half-open */
        }
        /* Up to a chunk of plaintext; close_notify or a bad record ends
         * it and waits behind it (the loop's first steps). */
        size_t got = 0;
        while (got < TLS_READ_CHUNK) {
            size_t n = 0;
            ERR_clear_error();
            if (SSL_read_ex(c->ssl, c->rbuf + got, TLS_READ_CHUNK - got, &n) == 1) {
                got += n;
                continue;
            }
            int e = SSL_get_error(c->ssl, 0);
            if (e == SSL_ERROR_ZERO_RETURN)
                c->eof_pending = 1;
            else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                c->read_failed = classify_failure(c, e, "TLS read");
            break;
        }
        c->rbuf_off = 0;
        c->rbuf_len = got;
        if (!got && !c->eof_pending && !c->read_failed) {
            /* SSL wants more: everything received so far is delivered
             * (a partial record may wait for the rest). */
            read_end(c);
            return;
        }
    }
}

/* Whether anything received still waits to be handed over: plaintext,
 * a close_notify or bad record found behind it, or a whole record in
 * the read BIO (SSL_peek decrypts it without taking it; a partial record
 * is nothing anyone can deliver). */
static int read_pending(tls_conn *c)
{
    if (c->rbuf_off < c->rbuf_len || c->eof_pending || c->read_failed)
        return 1;
    if (c->eof_seen)
        return 0; /* nothing is read after close_notify */
    char byte;
    size_t n = 0;
    ERR_clear_error();
    if (SSL_peek_ex(c->ssl, &byte, 1, &n) == 1)
        return 1;
    int e = SSL_get_error(c->ssl, 0);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        return 0;
    }
    return 1; /* close_notify or a bad record: SSL_read finds it again */
}

/* The read BIO is drained and the user is not paused: the plain
 * transport's end, if it came, is acted on now; else the plain transport
 * reads again (it stays paused while ciphertext waits in the read BIO,
 * so the peer is pushed back and its EOF cannot overtake the data). */
static void read_end(tls_conn *c)
{
    if (c->t.paused || c->t.ep.closing)
        return;
    if (c->plain_gone) {
        tls_finish(c); /* c->t.ep.err comes from the plain transport's end */
        return;
    }
    if (c->plain_eof_held) {
        if (c->eof_seen)
            return; /* after close_notify: half-open as the user chose */
        /* TCP FIN without close_notify: the stream may have been cut. */
        snprintf(c->errmsg, sizeof c->errmsg,
                 "the peer closed the connection without close_notify "
                 "(truncation)");
        if (!c->t.ep.err)
            c->t.ep.err = -ECONNRESET;
        c->t.ep.closing = 1;
        close_plain(c);
        return;
    }
    /* ep.closing, not is_closing(): after a failed send the plain
     * transport must still be resumed to hand over the ciphertext it
     * holds. */
    if (c->plain && !pact_transport_is_reading(c->plain) &&
        !c->plain->ep.closing)
        pact_transport_resume_reading(c->plain);
}

static void check_flow(tls_conn *c);

/* Pushes plaintext through SSL (the output goes to the plain transport). */
static int encrypt(tls_conn *c, const void *data, size_t len)
{
    size_t done = 0;
    ERR_clear_error();
    if (SSL_write_ex(c->ssl, data, len, &done) != 1 || done != len) {
        int e = classify_failure(c, SSL_get_error(c->ssl, 0), "TLS write");
        protocol_error(c, e);
        return -EPIPE;
    }
    return 0;
}

static void send_close_notify(tls_conn *c)
{
    if (c->shutdown_sent || !c->hs_done)
        return;
    c->shutdown_sent = 1;
    ERR_clear_error();
    SSL_shutdown(c->ssl);
    ERR_clear_error();
}

static void handshake_done(tls_conn *c)
{
    c->hs_done = 1;
    atomic_fetch_add_explicit(&c->ctx->handshakes, 1, memory_order_relaxed);
    cancel_handle(c->t.ep.loop, &c->hs_timer);
    const unsigned char *a = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(c->ssl, &a, &alen);
    if (a && alen) {
        memcpy(c->alpn, a, alen);
        c->alpn[alen] = '\0';
    }
    /* Plaintext written before the handshake goes first, ahead of what
     * the hook or connection_made writes. */
    if (c->pending.end > c->pending.start)
        encrypt(c, c->pending.data + c->pending.start,
                c->pending.end - c->pending.start);
    c->pending.start = c->pending.end = 0;
    if (c->t.eof_requested && !c->t.ep.closing) {
        send_close_notify(c);
        if (c->plain)
            pact_transport_write_eof(c->plain);
    }
    if (c->hook)
        c->hook(c, 0, c->hook_arg); /* may set the protocol, or refuse */
    if (c->silent)
        return;
    /* The hook reported success: connection_made runs now (and so
     * connection_lost, once, later), even if the hook closed or aborted
     * the transport or the queued plaintext could not be encrypted. */
    c->t.ep.made = 1;
    if (c->t.proto->connection_made)
        c->t.proto->connection_made(&c->t, c->t.user);
    check_flow(c);
    if (c->t.paused && c->plain)
        pact_transport_pause_reading(c->plain);
}

/* Runs the handshake and decryption on what has arrived. */
static void drive(tls_conn *c)
{
    if (c->t.ep.aborting || c->t.ep.lost)
        return;
    if (!c->hs_done) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            handshake_failed(c, classify_failure(c, e, "TLS handshake"));
            return;
        }
        handshake_done(c);
        if (c->t.ep.aborting)
            return;
    }
    if (!c->t.ep.closing)
        read_app_data(c);
}

static void handshake_timed_out(pact_loop *loop, void *arg)
{
    (void)loop;
    tls_conn *c = arg;
    c->hs_timer = 0;
    if (c->hs_done || c->t.ep.aborting)
        return;
    enter(c);
    snprintf(c->errmsg, sizeof c->errmsg, "TLS handshake timed out");
    handshake_failed(c, -ETIMEDOUT);
    leave(c);
}

static void start_handshake(tls_conn *c)
{
    if (c->started || c->t.ep.aborting)
        return;
    c->started = 1;
    cancel_handle(c->t.ep.loop, &c->start_handle);
    pact_handle h = pact_call_later(c->t.ep.loop, c->handshake_timeout_ns,
                                    handshake_timed_out, c);
    if (h > 0)
        c->hs_timer = pact__endpoint_timer(&c->t.ep, h);
    drive(c);
}

static void start_soon(pact_loop *loop, void *arg)
{
    (void)loop;
    tls_conn *c = arg;
    c->start_handle = 0;
    enter(c);
    start_handshake(c);
    leave(c);
}

/* Decrypts and delivers what waits, after resume: from a fresh loop
 * callback, never inside the user's call to resume_reading. */
static void process_soon(pact_loop *loop, void *arg)
{
    (void)loop;
    tls_conn *c = arg;
    c->process_handle = 0;
    enter(c);
    if (!c->t.paused && !c->t.ep.closing)
        read_app_data(c);
    leave(c);
}

/* Queues process_soon, once. Returns 0 or -ESHUTDOWN. */
static int schedule_process(tls_conn *c)
{
    if (c->process_handle)
        return 0;
    pact_handle h = pact_call_soon(c->t.ep.loop, process_soon, c);
    if (h < 0)
        return -ESHUTDOWN;
    c->process_handle = h;
    return 0;
}

/* ---- the plain transport's protocol ----------------------------------- */

static void plain_made(pact_transport *plain, void *user)
{
    (void)plain;
    tls_conn *c = user;
    enter(c);
    start_handshake(c);
    leave(c);
}

static void plain_data(pact_transport *plain, const void *data, size_t len,
                       void *user)
{
    (void)plain;
    tls_conn *c = user;
    if (c->t.ep.aborting || (c->t.ep.closing && !c->lingering))
        return; /* nothing is delivered after close */
    enter(c);
    if (BIO_write(c->rbio, data, (int)len) != (int)len)
        protocol_error(c, -ENOMEM);
    else if (c->lingering)
        linger_read(c);
    else if (!c->started)
        start_handshake(c);
    else
        drive(c);
    leave(c);
}

/* The plain transport's EOF: after the ciphertext it delivered before
 * it, so it waits until the read BIO is decrypted and delivered
 * (read_end); the plain transport stays open for our close_notify. */
static int plain_eof(pact_transport *plain, void *user)
{
    (void)plain;
    tls_conn *c = user;
    if (c->t.ep.closing)
        return 0;
    enter(c);
    if (!c->hs_done) {
        /* Every byte before the EOF went to the handshake, which wants
         * more. */
        snprintf(c->errmsg, sizeof c->errmsg,
                 "the peer closed the connection during the TLS handshake");
        handshake_failed(c, -ECONNRESET);
    } else {
        c->plain_eof_held = 1;
        read_app_data(c); /* nothing while paused: resume comes back here */
    }
    leave(c);
    return 1;
}

static void plain_lost(pact_transport *plain, int err, void *user)
{
    (void)plain;
    tls_conn *c = user;
    c->plain = NULL;
    c->plain_gone = 1;
    c->plain_err = err;
    cancel_handle(c->t.ep.loop, &c->hs_timer);
    cancel_handle(c->t.ep.loop, &c->close_timer);
    cancel_handle(c->t.ep.loop, &c->start_handle);
    if (c->t.ep.made && !c->t.ep.closing) {
        /* Gone under an established connection (an error, or the loop
         * closing it): the ciphertext it delivered before is decrypted
         * and delivered first, honouring pause; read_end then ends. A
         * paused user with nothing left to receive learns of it now: the
         * resume may never come (it may wait for its writes to drain). */
        enter(c);
        if (c->t.paused && !read_pending(c)) {
            tls_finish(c); /* when we leave */
        } else {
            /* The write buffer went with the plain transport: a user
             * that paused reading until its writes drain hears so (its
             * writes now fail with -EPIPE) and can resume. */
            check_flow(c);
            read_app_data(c);
        }
        leave(c);
        return;
    }
    cancel_handle(c->t.ep.loop, &c->process_handle);
    if (!c->t.ep.err && !c->hs_done && !c->silent)
        c->t.ep.err = err ? err : -ECONNABORTED; /* closed before the handshake ended */
    if (!c->hs_done && !c->silent && c->hook) {
        /* Gone before the handshake (close, loop close, plain error): the
         * hook learns of it; the protocol never does. */
        c->t.ep.closing = 1;
        c->silent = 1;
        atomic_fetch_add_explicit(&c->ctx->handshake_failures, 1, memory_order_relaxed);
        c->hook(c, c->t.ep.err, c->hook_arg);
    }
    tls_finish(c);
}


static void plain_resume_writing(pact_transport *plain, void *user)
{
    (void)plain;
    tls_conn *c = user;
    enter(c);
    check_flow(c);
    leave(c);
}

static const pact_protocol plain_proto = {
    .connection_made = plain_made,
    .data_received = plain_data,
    .eof_received = plain_eof,
    .connection_lost = plain_lost,
    .resume_writing = plain_resume_writing,
};

/* ---- the TLS transport's operations -------------------------------------- */

static size_t tls_write_buffer_size(const pact_transport *t)
{
    const tls_conn *c = conn_of(t);
    return pact__wbuf_len(&c->pending) +
           (c->plain ? pact_transport_write_buffer_size(c->plain) : 0);
}

static void check_flow(tls_conn *c)
{
    pact__endpoint_flow(&c->t.ep, &c->marks, tls_write_buffer_size(&c->t));
}

/* The user closed or aborted after the plain transport went (its end
 * waits behind data still to deliver): the end comes now (the endpoint's
 * final close runs from a fresh loop callback). */
static void end_without_plain(tls_conn *c)
{
    if (!c->plain_gone)
        return;
    cancel_handle(c->t.ep.loop, &c->process_handle);
    tls_finish(c);
}

/* The plain transport's send failed while it holds ciphertext for us
 * (we paused it for our paused user): its failure waits behind those
 * bytes, which only come once it reads again. Nothing can be sent any
 * more, so pushing back on the peer is moot: resume it, so the ciphertext
 * comes in (kept for our user) and then its end, which plain_lost
 * reports to a paused user with nothing to receive. The plain transport
 * sends eagerly, so what the peer sent last (session tickets, say) is
 * often held there when a send fails. */
static int plain_write_failed(tls_conn *c)
{
    if (!c->plain || !c->plain->write_failed)
        return 0;
    if (!pact_transport_is_reading(c->plain) && !c->plain->ep.closing)
        pact_transport_resume_reading(c->plain);
    return 1;
}

static int tls_writev(pact_transport *t, const struct iovec *iov, int iovcnt)
{
    tls_conn *c = conn_of(t);
    if (c->plain_gone || plain_write_failed(c))
        return -EPIPE; /* nothing can be sent any more */
    int r = 0;
    enter(c);
    for (int i = 0; i < iovcnt && r == 0; i++) {
        if (!iov[i].iov_len)
            continue;
        if (!c->hs_done)
            r = pact__wbuf_append(&c->pending, iov[i].iov_base, iov[i].iov_len);
        else
            r = encrypt(c, iov[i].iov_base, iov[i].iov_len);
    }
    if (r == 0)
        check_flow(c);
    leave(c);
    return r;
}

static int tls_write_eof(pact_transport *t)
{
    tls_conn *c = conn_of(t);
    if (c->plain_gone || plain_write_failed(c))
        return -EPIPE; /* as writes: nothing can be sent any more */
    if (c->hs_done) {
        enter(c);
        send_close_notify(c);
        if (c->plain)
            pact_transport_write_eof(c->plain);
        leave(c);
    }
    return 0;
}

static void tls_close(pact_transport *t)
{
    tls_conn *c = conn_of(t);
    enter(c);
    cancel_handle(t->ep.loop, &c->process_handle);
    if (!c->hs_done) {
        /* As asyncio: closing during the handshake abandons it. */
        c->t.ep.aborting = 1;
        pact__wbuf_clear(&c->pending);
        if (c->plain)
            pact_transport_abort(c->plain);
    } else {
        send_close_notify(c);
        linger_close(c);
    }
    end_without_plain(c);
    leave(c);
}

/* Abort (the endpoint's cancel): the plain transport is aborted; its
 * connection_lost ends this one. */
static void tls_cancel(pact_endpoint *e)
{
    tls_conn *c = conn_of_ep(e);
    cancel_handle(e->loop, &c->process_handle);
    pact__wbuf_clear(&c->pending);
    if (c->plain)
        pact_transport_abort(c->plain);
    end_without_plain(c);
}

static void tls_pause_reading(pact_transport *t)
{
    tls_conn *c = conn_of(t);
    /* During the handshake the plain transport keeps reading (the
     * handshake must go on); afterwards it pushes back on the peer. */
    if (c->hs_done && c->plain)
        pact_transport_pause_reading(c->plain);
}

static int tls_resume_reading(pact_transport *t)
{
    tls_conn *c = conn_of(t);
    if (!c->hs_done)
        return 0;
    /* What the read BIO holds goes first, from a fresh callback; the
     * plain transport resumes only once it is drained (read_end), so its
     * held data, EOF or error can only come behind it. */
    return schedule_process(c);
}

static void set_plain_marks(tls_conn *c)
{
    if (c->plain)
        pact_transport_set_write_marks(c->plain, c->marks.low, c->marks.low);
}

static int tls_set_marks(pact_transport *t, const pact_marks *m)
{
    tls_conn *c = conn_of(t);
    c->marks = *m;
    enter(c);
    set_plain_marks(c);
    pact__transport_flow_new_marks(t);
    leave(c);
    return 0;
}

static pact_marks tls_marks(const pact_transport *t)
{
    return conn_of(t)->marks;
}

static int tls_fd(const pact_transport *t)
{
    const tls_conn *c = conn_of(t);
    return c->plain ? pact_transport_fd(c->plain) : -EBADF;
}

static int tls_name(const pact_transport *t, struct sockaddr_storage *ss,
                    socklen_t *len, int peer)
{
    const tls_conn *c = conn_of(t);
    if (!c->plain)
        return -EBADF;
    return peer ? pact_transport_peername(c->plain, ss, len)
                : pact_transport_sockname(c->plain, ss, len);
}

/* pact_transport_set_ref() on a TLS transport: its plain transport (the
 * reads and writes in flight) and its handshake and close timers. */
static void tls_set_ref(pact_endpoint *e, int ref)
{
    tls_conn *c = conn_of_ep(e);
    if (c->plain)
        pact__endpoint_set_ref(&c->plain->ep, ref);
    if (c->hs_timer)
        pact_handle_set_ref(e->loop, c->hs_timer, ref);
    if (c->close_timer)
        pact_handle_set_ref(e->loop, c->close_timer, ref);
}

static const pact_transport_ops tls_ops = {
    .ep = {
        PACT_ENDPOINT_KIND("TLS transport"),
        /* Loop close: abandon the connection (its hook learns of an
         * unfinished handshake; a protocol that saw connection_made gets
         * connection_lost). */
        .force_close = pact__transport_force_close,
        .cancel = tls_cancel,
        .busy = tls_busy,
        .lost = tls_lost,
        .free = tls_free,
        .writing = pact__transport_writing,
        .set_ref = tls_set_ref,
#ifndef _WIN32
        .forget = tls_forget,
#endif
    },
    .writev = tls_writev,
    .write_eof = tls_write_eof,
    .close = tls_close,
    .pause_reading = tls_pause_reading,
    .resume_reading = tls_resume_reading,
    .write_buffer_size = tls_write_buffer_size,
    .set_marks = tls_set_marks,
    .marks = tls_marks,
    .fd = tls_fd,
    .name = tls_name,
    .sendfile = NULL, /* the kernel cannot encrypt for us: -ENOTSUP */
};

/* ---- wrapping ------------------------------------------------------------- */

static int set_peer_name(tls_conn *c)
{
    pact_tls_context *ctx = c->ctx;
    const char *host = c->hostname;
    unsigned char addr[16];
    int is_ip = host && (inet_pton(AF_INET, host, addr) == 1 ||
                         inet_pton(AF_INET6, host, addr) == 1);
    if (host && !is_ip && SSL_set_tlsext_host_name(c->ssl, host) != 1)
        return -EINVAL;
    if (ctx->verify && ctx->check_hostname) {
        X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host)
                       : X509_VERIFY_PARAM_set1_host(param, host, 0);
        if (ok != 1)
            return -EINVAL;
    }
    if (host && ctx->session_cache) {
        pthread_mutex_lock(&ctx->sessions_lock);
        for (int i = 0; i < SESSION_SLOTS; i++) {
            if (ctx->sessions[i].host && strcmp(ctx->sessions[i].host, host) == 0 &&
                ctx->sessions[i].sess) {
                SSL_set_session(c->ssl, ctx->sessions[i].sess);
                /* TLS 1.3 tickets are for one use: drop it once taken. */
                SSL_SESSION_free(ctx->sessions[i].sess);
                ctx->sessions[i].sess = NULL;
                break;
            }
        }
        pthread_mutex_unlock(&ctx->sessions_lock);
    }
    return 0;
}

static int tls_wrap(pact_transport *plain, pact_tls_context *ctx,
                    const char *server_hostname, const void *initial_data,
                    size_t initial_len, uint64_t handshake_timeout_ns,
                    const pact_protocol *proto, void *user, tls_hook hook,
                    void *hook_arg, void *created_at, pact_transport **out)
{
    if (!plain || !ctx || !proto || !hook || !out || (!initial_data && initial_len))
        return -EINVAL;
    pact_loop *loop = plain->ep.loop;
    if (is_tls(plain))
        return PACT_MISUSE(loop, -ENOTSUP, "the transport is already TLS");
    if (plain->kind != PACT_STREAM_SOCKET)
        return PACT_MISUSE(loop, -ENOTSUP, "TLS needs a stream socket");
    if (pact_transport_is_closing(plain))
        return PACT_MISUSE(loop, -ESHUTDOWN, "the transport is closing");
    if (!ctx->server && ctx->verify && ctx->check_hostname && !server_hostname)
        return PACT_MISUSE(loop, -EINVAL,
                           "server_hostname is required while host-name "
                           "checking is on (pact_tls_context_set_check_hostname)");
    pthread_once(&write_method_once, make_write_method);
    if (!write_method)
        return -ENOMEM;
    tls_conn *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    pact__transport_init(&c->t, loop, &tls_ops, (pact_stream_kind)plain->kind,
                         proto, user);
    c->ctx = ctx;
    c->server = ctx->server;
    c->t.ep.unref = plain->ep.unref; /* STARTTLS keeps the plain one's choice */
    c->marks = pact__default_marks;
    c->verify_result = X509_V_OK;
    c->hook = hook;
    c->hook_arg = hook_arg;
    c->handshake_timeout_ns = handshake_timeout_ns ? handshake_timeout_ns
                                                   : ctx->handshake_timeout_ns;
    int r = -ENOMEM;
    if (server_hostname && !(c->hostname = strdup(server_hostname)))
        goto fail;
    c->ssl = SSL_new(ctx->ssl_ctx);
    if (!c->ssl)
        goto fail;
    c->rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(write_method);
    if (!c->rbio || !wbio) {
        BIO_free(c->rbio);
        BIO_free(wbio);
        c->rbio = NULL;
        goto fail;
    }
    BIO_set_mem_eof_return(c->rbio, -1); /* empty = "want more", not EOF */
    BIO_set_data(wbio, c);
    SSL_set_bio(c->ssl, c->rbio, wbio);
    SSL_set_app_data(c->ssl, c);
    if (c->server) {
        SSL_set_accept_state(c->ssl);
    } else {
        SSL_set_connect_state(c->ssl);
        r = set_peer_name(c);
        if (r)
            goto fail;
    }
    if (initial_len && BIO_write(c->rbio, initial_data, (int)initial_len) !=
                           (int)initial_len) {
        r = -ENOMEM;
        goto fail;
    }
    if (plain->ep.made) {
        pact_handle h = pact_call_soon(loop, start_soon, c);
        if (h < 0) {
            r = (int)h;
            goto fail;
        }
        c->start_handle = h;
    }
    /* From here on, every byte the plain transport reads goes to TLS; a
     * paused plain transport resumes (its held data follows initial_data,
     * in order). */
    context_ref(ctx);
    c->plain = plain;
    pact_transport_set_protocol(plain, &plain_proto, c);
    set_plain_marks(c);
    if (!pact_transport_is_reading(plain))
        pact_transport_resume_reading(plain);
    pact__endpoint_register(&c->t.ep, created_at);
    *out = &c->t;
    return 0;
fail:
    if (c->ssl)
        SSL_free(c->ssl);
    free(c->hostname);
    free(c);
    return r;
}

/* A failed handshake's reason and verification result, for
 * pact_connect_error_message() during the user's callback. */
static void call_connect_cb(tls_conn *c, int err, pact_connect_cb cb, void *user)
{
    if (!err) {
        cb(c->t.ep.loop, &c->t, 0, user);
        return;
    }
    pact_connect_failure saved;
    pact__connect_failure_begin(&saved, c->t.ep.loop, c->errmsg,
                                pact_tls_verify_result(&c->t));
    cb(c->t.ep.loop, NULL, err, user);
    pact__connect_failure_end(&saved);
}

/* pact_tls_wrap()'s hook: the outcome to the user's on_handshake, once. */
static void wrap_hook(tls_conn *c, int err, void *arg)
{
    (void)arg;
    c->hook = NULL;
    call_connect_cb(c, err, c->on_handshake, c->handshake_user);
}

int pact_tls_wrap(pact_transport *plain, pact_tls_context *ctx,
                  const char *server_hostname, const void *initial_data,
                  size_t initial_len, uint64_t handshake_timeout_ns,
                  const pact_protocol *proto, void *user,
                  pact_connect_cb on_handshake, void *handshake_user,
                  pact_transport **out)
{
    if (!on_handshake)
        return PACT_MISUSE(plain ? plain->ep.loop : NULL, -EINVAL,
                           "on_handshake is required (the handshake's outcome "
                           "is reported there, never to the protocol)");
    int r = tls_wrap(plain, ctx, server_hostname, initial_data, initial_len,
                     handshake_timeout_ns, proto, user, wrap_hook, NULL,
                     __builtin_return_address(0), out);
    if (r == 0) {
        /* Set before any hook can run: the handshake starts from a later
         * loop callback, never from inside tls_wrap(). */
        tls_conn *c = conn_of(*out);
        c->on_handshake = on_handshake;
        c->handshake_user = handshake_user;
    }
    return r;
}

/* ---- information ---------------------------------------------------------- */

int pact_transport_is_tls(const pact_transport *t)
{
    return is_tls(t);
}

const char *pact_tls_version(const pact_transport *t)
{
    return is_tls(t) && conn_of(t)->hs_done ? SSL_get_version(conn_of(t)->ssl) : NULL;
}

const char *pact_tls_cipher(const pact_transport *t)
{
    return is_tls(t) && conn_of(t)->hs_done ? SSL_get_cipher_name(conn_of(t)->ssl)
                                            : NULL;
}

const char *pact_tls_alpn(const pact_transport *t)
{
    return is_tls(t) && conn_of(t)->alpn[0] ? conn_of(t)->alpn : NULL;
}

int pact_tls_session_reused(const pact_transport *t)
{
    return is_tls(t) && conn_of(t)->hs_done ? SSL_session_reused(conn_of(t)->ssl) : 0;
}

struct x509_st *pact_tls_peer_certificate(const pact_transport *t)
{
    return is_tls(t) ? SSL_get1_peer_certificate(conn_of(t)->ssl) : NULL;
}

int pact_tls_peer_certificate_der(const pact_transport *t, unsigned char **der,
                                  size_t *len)
{
    if (!is_tls(t) || !der || !len)
        return -EINVAL;
    X509 *x = SSL_get1_peer_certificate(conn_of(t)->ssl);
    if (!x)
        return -ENOENT;
    unsigned char *buf = NULL;
    int n = i2d_X509(x, &buf);
    X509_free(x);
    if (n <= 0)
        return -ENOMEM;
    /* Hand back memory the caller frees with free(), not OPENSSL_free. */
    *der = malloc((size_t)n);
    if (!*der) {
        OPENSSL_free(buf);
        return -ENOMEM;
    }
    memcpy(*der, buf, (size_t)n);
    OPENSSL_free(buf);
    *len = (size_t)n;
    return 0;
}

long pact_tls_verify_result(const pact_transport *t)
{
    if (!is_tls(t))
        return -1;
    const tls_conn *c = conn_of(t);
    return c->verify_result != X509_V_OK ? c->verify_result
                                         : SSL_get_verify_result(c->ssl);
}

const char *pact_tls_error_message(const pact_transport *t)
{
    return is_tls(t) && conn_of(t)->errmsg[0] ? conn_of(t)->errmsg : NULL;
}

struct ssl_st *pact_tls_ssl(const pact_transport *t)
{
    return is_tls(t) ? conn_of(t)->ssl : NULL;
}

/* ---- clients ---------------------------------------------------------------- */

/* A placeholder protocol for the plain transport until it is wrapped:
 * reading stays paused, so no byte can reach a protocol that drops it. */
static void hold_made(pact_transport *t, void *user)
{
    (void)user;
    if (t->proto == &plain_proto)
        return;
    pact_transport_pause_reading(t);
}

static const pact_protocol hold_proto = {.connection_made = hold_made};

typedef struct tls_connect_req {
    pact_tls_context *ctx;
    char *hostname;
    const pact_protocol *proto;
    void *proto_user;
    pact_connect_cb cb;
    void *user;
    void *created_at; /* the caller of pact_connect_*_tls */
} tls_connect_req;

static void connect_req_free(tls_connect_req *req)
{
    context_unref(req->ctx);
    free(req->hostname);
    free(req);
}

static void connect_hook(tls_conn *c, int err, void *arg)
{
    tls_connect_req *req = arg;
    c->hook = NULL;
    pact_connect_cb cb = req->cb;
    void *user = req->user;
    connect_req_free(req);
    call_connect_cb(c, err, cb, user);
}

static void tcp_connected(pact_loop *loop, pact_transport *plain, int err, void *arg)
{
    tls_connect_req *req = arg;
    if (err) {
        pact_connect_cb cb = req->cb;
        void *user = req->user;
        connect_req_free(req);
        cb(loop, NULL, err, user);
        return;
    }
    pact_transport *t;
    int r = tls_wrap(plain, req->ctx, req->hostname, NULL, 0, 0, req->proto,
                     req->proto_user, connect_hook, req, req->created_at, &t);
    if (r < 0) {
        pact_transport_abort(plain);
        pact_connect_cb cb = req->cb;
        void *user = req->user;
        connect_req_free(req);
        cb(loop, NULL, r, user);
    }
}

static tls_connect_req *connect_req_new(pact_loop *loop, pact_tls_context *ctx,
                                        const char *hostname,
                                        const pact_protocol *proto,
                                        void *proto_user, pact_connect_cb cb,
                                        void *user, int *err)
{
    *err = pact__check_loop(loop, "pact_connect_tls");
    if (*err)
        return NULL;
    if (!ctx || !proto || !cb || ctx->server) {
        *err = PACT_MISUSE(loop, -EINVAL, "needs a client context, a protocol "
                                          "and a callback");
        return NULL;
    }
    if (ctx->verify && ctx->check_hostname && !hostname) {
        *err = PACT_MISUSE(loop, -EINVAL, "server_hostname is required while "
                                          "host-name checking is on");
        return NULL;
    }
    tls_connect_req *req = calloc(1, sizeof *req);
    if (!req || (hostname && !(req->hostname = strdup(hostname)))) {
        free(req);
        *err = -ENOMEM;
        return NULL;
    }
    req->ctx = ctx;
    context_ref(ctx);
    req->proto = proto;
    req->proto_user = proto_user;
    req->cb = cb;
    req->user = user;
    return req;
}

pact_op pact_connect_tcp_tls(pact_loop *loop, const char *host, uint16_t port,
                             pact_tls_context *ctx, const char *server_hostname,
                             const pact_protocol *proto, void *proto_user,
                             pact_connect_cb cb, void *user)
{
    int err;
    if (!host)
        return -EINVAL;
    tls_connect_req *req = connect_req_new(loop, ctx,
                                           server_hostname ? server_hostname : host,
                                           proto, proto_user, cb, user, &err);
    if (!req)
        return err;
    req->created_at = __builtin_return_address(0);
    pact_op op = pact_connect_tcp(loop, host, port, &hold_proto, NULL,
                                  tcp_connected, req);
    if (op < 0)
        connect_req_free(req);
    return op;
}

pact_op pact_connect_unix_tls(pact_loop *loop, const char *path,
                              pact_tls_context *ctx, const char *server_hostname,
                              const pact_protocol *proto, void *proto_user,
                              pact_connect_cb cb, void *user)
{
    int err;
    tls_connect_req *req = connect_req_new(loop, ctx, server_hostname, proto,
                                           proto_user, cb, user, &err);
    if (!req)
        return err;
    req->created_at = __builtin_return_address(0);
    pact_op op = pact_connect_unix(loop, path, &hold_proto, NULL, tcp_connected, req);
    if (op < 0)
        connect_req_free(req);
    return op;
}

/* ---- servers ---------------------------------------------------------------- */

typedef struct tls_server {
    pact_tls_context *ctx;
    pact_protocol_factory_cb factory;
    void *factory_user;
    pact_server *server;
    void *created_at; /* the caller of pact_server_listen_*_tls */
    pact_handshake_failed_cb failed_cb;
    void *failed_user;
} tls_server;

/* After the handshake: the user's factory chooses the protocol. A refusal
 * closes the connection (the peer sees close_notify). */
static void server_hook(tls_conn *c, int err, void *arg)
{
    tls_server *ts = arg;
    c->hook = NULL;
    if (err) {
        /* The protocol never hears of it; the failure callback, if any,
         * may ask the dying transport why and who. */
        if (ts->failed_cb)
            ts->failed_cb(ts->server, &c->t, err, ts->failed_user);
        return;
    }
    const pact_protocol *proto = NULL;
    void *user = NULL;
    int r = ts->factory(ts->server, ts->factory_user, &proto, &user);
    if (r < 0 || !proto) {
        c->silent = 1;
        c->t.ep.closing = 1;
        send_close_notify(c);
        close_plain(c);
        return;
    }
    c->t.proto = proto;
    c->t.user = user;
}

static void accepted_made(pact_transport *plain, void *arg)
{
    tls_server *ts = arg;
    pact_transport *t;
    static const pact_protocol unused = {0};
    int r = tls_wrap(plain, ts->ctx, NULL, NULL, 0, 0, &unused, NULL, server_hook,
                     ts, ts->created_at, &t);
    if (r < 0) {
        pact_transport_abort(plain);
        return;
    }
    /* Wrapped from inside the plain connection_made: start now. */
    plain_made(plain, conn_of(t));
}

static const pact_protocol accepted_proto = {.connection_made = accepted_made};

static int tls_server_factory(pact_server *server, void *arg,
                              const pact_protocol **proto, void **user)
{
    tls_server *ts = arg;
    ts->server = server;
    *proto = &accepted_proto;
    *user = ts;
    return 0;
}

static void tls_server_closed(pact_loop *loop, void *arg)
{
    (void)loop;
    tls_server *ts = arg;
    context_unref(ts->ctx);
    free(ts);
}

static tls_server *tls_server_new(pact_tls_context *ctx,
                                  pact_protocol_factory_cb factory,
                                  void *factory_user)
{
    if (!ctx || !ctx->server || !factory)
        return NULL;
    tls_server *ts = calloc(1, sizeof *ts);
    if (!ts)
        return NULL;
    ts->ctx = ctx;
    context_ref(ctx);
    ts->factory = factory;
    ts->factory_user = factory_user;
    return ts;
}

static int tls_server_started(tls_server *ts, int r, pact_server *srv)
{
    if (r < 0) {
        tls_server_closed(NULL, ts);
        return r;
    }
    ts->server = srv;
    pact_server_wait_closed(srv, tls_server_closed, ts);
    return 0;
}

int pact_server_listen_tcp_tls(pact_loop *loop, const char *host, uint16_t port,
                               const pact_server_options *opts,
                               pact_tls_context *ctx,
                               pact_protocol_factory_cb factory, void *factory_user,
                               pact_server **out)
{
    if (!out)
        return -EINVAL;
    tls_server *ts = tls_server_new(ctx, factory, factory_user);
    if (!ts)
        return ctx && ctx->server && factory ? -ENOMEM : -EINVAL;
    ts->created_at = __builtin_return_address(0);
    int r = pact_server_listen_tcp(loop, host, port, opts, tls_server_factory, ts, out);
    return tls_server_started(ts, r, r < 0 ? NULL : *out);
}

int pact_server_listen_unix_tls(pact_loop *loop, const char *path,
                                const pact_server_options *opts,
                                pact_tls_context *ctx,
                                pact_protocol_factory_cb factory, void *factory_user,
                                pact_server **out)
{
    if (!out)
        return -EINVAL;
    tls_server *ts = tls_server_new(ctx, factory, factory_user);
    if (!ts)
        return ctx && ctx->server && factory ? -ENOMEM : -EINVAL;
    ts->created_at = __builtin_return_address(0);
    int r = pact_server_listen_unix(loop, path, opts, tls_server_factory, ts, out);
    return tls_server_started(ts, r, r < 0 ? NULL : *out);
}

int pact_server_set_handshake_failed_cb(pact_server *server,
                                        pact_handshake_failed_cb cb, void *user)
{
    tls_server *ts = pact__server_factory_user(server, tls_server_factory);
    if (!ts)
        return -EINVAL;
    int r = pact__loop_check_thread(pact_server_loop(server), __func__);
    if (r)
        return r;
    ts->failed_cb = cb;
    ts->failed_user = user;
    return 0;
}
