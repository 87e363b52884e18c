/* SPDX-License-Identifier: MIT */
/* TLS: against real peers nobody here wrote (openssl s_server / s_client),
 * pact <-> pact bulk echo on TCP and Unix sockets, the seed race over TLS,
 * STARTTLS with bytes already buffered and on a paused transport,
 * truncation, verification failures, garbage, timeouts, resumption.
 * Certificates are made at test time with the openssl command-line tool. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

#include "helpers.h"
#include "recorder.h"
#include "tls_certs.h"

/* OpenSSL's verification results (<openssl/x509_vfy.h>, which a build
 * without OpenSSL does not have). */
#define X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY 20
#define X509_V_ERR_HOSTNAME_MISMATCH 62

static tls_certs certs;

static void certs_setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    tls_certs_make(&certs, "pact-tls");
}

static void certs_teardown(void)
{
    tls_certs_remove(&certs);
}

TestSuite(tls, .init = certs_setup, .fini = certs_teardown, .timeout = 120);

static pact_tls_context *server_ctx(void)
{
    pact_tls_context *ctx;
    cr_assert_eq(pact_tls_context_create(PACT_TLS_SERVER, &ctx), 0);
    cr_assert_eq(pact_tls_context_set_certificate(ctx, certs.srv_pem, certs.srv_key), 0);
    return ctx;
}

static pact_tls_context *client_ctx(void)
{
    pact_tls_context *ctx;
    cr_assert_eq(pact_tls_context_create(PACT_TLS_CLIENT, &ctx), 0);
    cr_assert_eq(pact_tls_context_set_ca(ctx, certs.ca_pem, NULL), 0);
    return ctx;
}

/* ---- external processes ------------------------------------------------- */

typedef struct child {
    pid_t pid;
    int in, out; /* its stdin (we write), its stdout (we read) */
} child;

static child spawn(char *const argv[])
{
    int pin[2], pout[2];
    cr_assert_eq(pipe2(pin, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(pout, O_CLOEXEC), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    fcntl(pout[0], F_SETFL, O_NONBLOCK);
    return (child){pid, pin[1], pout[0]};
}

static void child_end(child *c, int sig)
{
    if (c->in >= 0)
        close(c->in);
    if (c->out >= 0)
        close(c->out);
    c->in = c->out = -1;
    if (c->pid > 0) {
        if (sig)
            kill(c->pid, sig);
        waitpid(c->pid, NULL, 0);
        c->pid = 0;
    }
}

/* Appends what the child printed to buf (NUL-terminated). */
static void child_read(child *c, char *buf, size_t cap)
{
    size_t n = strlen(buf);
    ssize_t r;
    while (n + 1 < cap && (r = read(c->out, buf + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
}

static int free_port(void)
{
    int fd = pact_tcp_listen("127.0.0.1", 0, 1);
    cr_assert_geq(fd, 0);
    int port = pact_socket_port(fd);
    close(fd);
    return port;
}

/* Whether something listens on 127.0.0.1:port (without connecting, which
 * would use up one of the server's connections). */
static int is_listening(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[256], want[32];
    int found = 0;
    snprintf(want, sizeof want, "0100007F:%04X", port);
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, want) && strstr(line, " 0A "))
            found = 1;
    if (f)
        fclose(f);
    return found;
}

static child start_s_server(int port, const char *alpn)
{
    char accept[32];
    snprintf(accept, sizeof accept, "127.0.0.1:%d", port);
    char *argv[] = {"openssl", "s_server", "-accept", accept,
                    "-cert", certs.srv_pem, "-key", certs.srv_key,
                    "-rev", "-quiet", "-alpn", (char *)alpn, NULL};
    child c = spawn(argv);
    uint64_t end = pact_now() + 5000 * MS;
    while (!is_listening(port)) {
        cr_assert(pact_now() < end, "s_server did not start");
        usleep(5000);
    }
    return c;
}

/* ---- a recording protocol -------------------------------------------------- */

typedef struct peer {
    pact_transport *t;
    int made, eof, lost, lost_err, after_lost;
    char *got;
    size_t ngot, cap;
    int echo;              /* write back what arrives */
    int keep_open_on_eof;
    const char *reply_on_eof; /* written back (then closed) on eof */
    size_t close_after;    /* close once this many bytes arrived */
    char alpn[32], version[32], errmsg[256];
    int reused;
    int connect_err, connected; /* the connect / on_handshake callback */
    char reason[256];           /* ... its pact_connect_error_message() */
    long verify;                /* ... and pact_connect_verify_result() */
    pact_transport *wrapped;    /* what pact_tls_wrap() returned */
    int pauses, resumes;        /* pause_writing / resume_writing */
    size_t size_at_resume;      /* the write buffer at resume_writing */
} peer;

static void peer_made(pact_transport *t, void *user)
{
    peer *p = user;
    cr_assert_eq(p->made, 0, "connection_made twice");
    cr_assert_eq(p->lost, 0, "connection_made after connection_lost");
    p->made = 1;
    p->t = t;
    const char *a = pact_tls_alpn(t);
    snprintf(p->alpn, sizeof p->alpn, "%s", a ? a : "");
    snprintf(p->version, sizeof p->version, "%s", pact_tls_version(t));
    p->reused = pact_tls_session_reused(t);
}

static void peer_data(pact_transport *t, const void *data, size_t len, void *user)
{
    peer *p = user;
    cr_assert_eq(p->made, 1, "data before connection_made");
    cr_assert_eq(p->eof, 0, "data after eof");
    if (p->lost)
        p->after_lost++;
    if (p->ngot + len + 1 > p->cap) {
        p->cap = (p->ngot + len + 1) * 2;
        p->got = realloc(p->got, p->cap);
    }
    memcpy(p->got + p->ngot, data, len);
    p->ngot += len;
    p->got[p->ngot] = '\0';
    if (p->echo)
        cr_assert_eq(pact_transport_write(t, data, len), 0);
    if (p->close_after && p->ngot >= p->close_after)
        pact_transport_close(t);
}

static int peer_eof(pact_transport *t, void *user)
{
    peer *p = user;
    cr_assert_eq(p->made, 1, "eof before connection_made");
    cr_assert_eq(p->eof, 0, "eof twice");
    p->eof = 1;
    if (p->reply_on_eof) {
        cr_assert_eq(pact_transport_write(t, p->reply_on_eof,
                                          strlen(p->reply_on_eof)), 0);
        pact_transport_close(t);
        return 1;
    }
    return p->keep_open_on_eof;
}

static void peer_lost(pact_transport *t, int err, void *user)
{
    peer *p = user;
    cr_assert_eq(p->lost, 0, "connection_lost twice");
    p->lost = 1;
    p->lost_err = err;
    const char *m = pact_tls_error_message(t);
    snprintf(p->errmsg, sizeof p->errmsg, "%s", m ? m : "");
    p->t = NULL;
}

static void peer_pause_writing(pact_transport *t, void *user)
{
    (void)t;
    ((peer *)user)->pauses++;
}

static void peer_resume_writing(pact_transport *t, void *user)
{
    peer *p = user;
    p->resumes++;
    p->size_at_resume = pact_transport_write_buffer_size(t);
}

static const pact_protocol peer_proto = {
    .connection_made = peer_made,
    .data_received = peer_data,
    .eof_received = peer_eof,
    .connection_lost = peer_lost,
    .pause_writing = peer_pause_writing,
    .resume_writing = peer_resume_writing,
};

static void peer_connected(pact_loop *loop, pact_transport *t, int err, void *user)
{
    peer *p = user;
    cr_assert_eq(p->connected, 0, "connect callback twice");
    p->connected = 1;
    p->connect_err = err;
    const char *why = pact_connect_error_message(loop);
    snprintf(p->reason, sizeof p->reason, "%s", why ? why : "");
    p->verify = pact_connect_verify_result(loop);
    if (!err) {
        cr_assert_null(why, "a reason without a failure: %s", why);
        cr_assert_eq(p->verify, 0);
    }
    cr_assert(err ? t == NULL : t != NULL);
    cr_assert_eq(p->made, 0, "connect callback comes before connection_made");
    cr_assert_eq(p->lost, 0, "connect callback after connection_lost");
    if (t) {
        cr_assert_not_null(pact_tls_version(t), "handshake done before the callback");
        if (p->wrapped)
            cr_assert_eq(t, p->wrapped, "on_handshake gets the wrapped transport");
    } else if (p->wrapped) {
        /* Failed: the transport may still be asked why, during the call. */
        const char *m = pact_tls_error_message(p->wrapped);
        snprintf(p->errmsg, sizeof p->errmsg, "%s", m ? m : "");
        cr_assert_eq(pact_transport_write(p->wrapped, "x", 1), -ESHUTDOWN);
        p->wrapped = NULL; /* gone once this returns */
    }
}

/* A server whose connections all use one peer record (one at a time). */
typedef struct one_server {
    peer *p;
    int calls;
} one_server;

static int one_factory(pact_server *srv, void *user, const pact_protocol **proto,
                       void **proto_user)
{
    (void)srv;
    one_server *o = user;
    o->calls++;
    *proto = &peer_proto;
    *proto_user = o->p;
    return 0;
}

static void run_while(pact_loop *loop, const volatile int *flag, int want, unsigned ms)
{
    uint64_t end = pact_now() + ms * MS;
    while (*flag != want) {
        cr_assert(pact_now() < end, "timed out after %u ms", ms);
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    }
}

/* ---- real peers: openssl s_server and s_client ------------------------ */

Test(tls, client_against_openssl_s_server)
{
    pact_loop *loop = test_loop_new();
    int port = free_port();
    child srv = start_s_server(port, "bar,foo");
    pact_tls_context *ctx = client_ctx();
    const char *alpn[] = {"foo"};
    cr_assert_eq(pact_tls_context_set_alpn(ctx, alpn, 1), 0);
    peer p = {0};
    cr_assert_gt(pact_connect_tcp_tls(loop, "127.0.0.1", (uint16_t)port, ctx,
                                      "localhost", &peer_proto, &p, peer_connected,
                                      &p), 0);
    pact_tls_context_free(ctx); /* the connection keeps its own reference */
    run_while(loop, &p.made, 1, 10000);
    cr_assert_eq(p.connect_err, 0);
    cr_assert_str_eq(p.alpn, "foo");
    cr_assert_str_eq(p.version, "TLSv1.3");
    cr_assert_not_null(pact_tls_cipher(p.t));
    cr_assert_eq(pact_tls_verify_result(p.t), 0);
    unsigned char *der = NULL;
    size_t derlen = 0;
    cr_assert_eq(pact_tls_peer_certificate_der(p.t, &der, &derlen), 0);
    cr_assert_gt(derlen, 100);
    free(der);
    cr_assert_gt(pact_transport_fd(p.t), 0);
    /* A request and its response (s_server -rev reverses each line). */
    cr_assert_eq(pact_transport_write(p.t, "hello\n", 6), 0);
    uint64_t end = pact_now() + 5000 * MS;
    while (!strstr(p.got ? p.got : "", "olleh\n")) {
        cr_assert(pact_now() < end, "no response; got '%s'", p.got ? p.got : "");
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    }
    /* "CLOSE" makes s_server end the connection with close_notify. */
    cr_assert_eq(pact_transport_write(p.t, "CLOSE\n", 6), 0);
    run_while(loop, &p.lost, 1, 10000);
    cr_assert_eq(p.eof, 1, "close_notify seen as eof_received");
    cr_assert_eq(p.lost_err, 0, "clean close: %s (%s)", pact_err_name(p.lost_err),
                 p.errmsg);
    child_end(&srv, SIGTERM);
    free(p.got);
    test_loop_free(loop);
}

/* The pact server side, with s_client as the peer. */
static void s_client_session(int kill_it)
{
    pact_loop *loop = test_loop_new();
    pact_tls_context *ctx = server_ctx();
    const char *alpn[] = {"bar", "foo"};
    cr_assert_eq(pact_tls_context_set_alpn(ctx, alpn, 2), 0);
    peer p = {.echo = 1};
    one_server o = {.p = &p};
    pact_server *srv;
    cr_assert_eq(pact_server_listen_tcp_tls(loop, "127.0.0.1", 0, NULL, ctx,
                                            one_factory, &o, &srv), 0);
    pact_tls_context_free(ctx);
    char connect[32];
    snprintf(connect, sizeof connect, "127.0.0.1:%d", pact_server_port(srv));
    char *argv[] = {"openssl", "s_client", "-connect", connect,
                    "-CAfile", certs.ca_pem,
                    "-servername", "localhost", "-alpn", "foo", "-quiet",
                    "-no_ign_eof", NULL};
    child cl = spawn(argv);
    run_while(loop, &p.made, 1, 10000);
    cr_assert_str_eq(p.alpn, "foo");
    cr_assert_eq(write(cl.in, "ping\n", 5), 5);
    char out[256] = "";
    uint64_t end = pact_now() + 5000 * MS;
    while (!strstr(out, "ping\n")) {
        cr_assert(pact_now() < end, "s_client got no echo: '%s'", out);
        pact_loop_run_once(loop, 5 * (int64_t)MS);
        child_read(&cl, out, sizeof out);
    }
    if (kill_it) {
        /* The process dies: the kernel closes its socket, no close_notify. */
        kill(cl.pid, SIGKILL);
        run_while(loop, &p.lost, 1, 10000);
        cr_assert_eq(p.eof, 0, "a truncation is not an eof");
        cr_assert_eq(p.lost_err, -ECONNRESET, "lost with %s",
                     pact_err_name(p.lost_err));
        cr_assert(strstr(p.errmsg, "truncation"), "message: %s", p.errmsg);
    } else {
        /* End of its input: s_client sends close_notify and exits. */
        close(cl.in);
        cl.in = -1;
        run_while(loop, &p.lost, 1, 10000);
        cr_assert_eq(p.eof, 1);
        cr_assert_eq(p.lost_err, 0, "lost with %s (%s)", pact_err_name(p.lost_err),
                     p.errmsg);
    }
    child_end(&cl, 0);
    pact_server_close(srv);
    pact_loop_run(loop);
    free(p.got);
    test_loop_free(loop);
}

Test(tls, server_against_openssl_s_client)
{
    s_client_session(0);
}

Test(tls, truncation_by_a_killed_s_client_is_reported)
{
    s_client_session(1);
}

/* ---- verification --------------------------------------------------------- */

/* What a TLS server's handshake failure callback heard. */
typedef struct failed_handshakes {
    pact_server *server;
    int calls, err, port;
    long verify;
    char reason[256];
} failed_handshakes;

static void on_handshake_failed(pact_server *server, pact_transport *t, int err,
                                void *user)
{
    failed_handshakes *f = user;
    cr_assert_eq(server, f->server);
    cr_assert_lt(err, 0);
    f->calls++;
    f->err = err;
    const char *m = pact_tls_error_message(t);
    snprintf(f->reason, sizeof f->reason, "%s", m ? m : "");
    f->verify = pact_tls_verify_result(t);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    cr_assert_eq(pact_transport_peername(t, &ss, &len), 0, "who failed is known");
    f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    cr_assert_eq(pact_transport_write(t, "x", 1), -ESHUTDOWN, "the transport is dying");
}

/* A loop in debug mode (as test_loop_new) or not: the reasons do not
 * depend on it. */
static pact_loop *loop_in_mode(int debug)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.debug = debug;
    const char *want = getenv("PACT_ENGINE");
    if (want && strcmp(want, "uring") == 0)
        o.engine = PACT_ENGINE_URING;
    if (want && strcmp(want, "epoll") == 0)
        o.engine = PACT_ENGINE_EPOLL;
    pact_loop *loop = NULL;
    cr_assert_eq(pact_loop_create(&loop, &o), 0);
    return loop;
}

static void connect_expecting_failure(pact_tls_context *cctx, const char *host,
                                      const char *hostname, int want_err,
                                      const char *want_reason, long want_verify,
                                      const char *want_server_reason, int debug)
{
    pact_loop *loop = loop_in_mode(debug);
    pact_tls_context *sctx = server_ctx();
    peer sp = {0};
    one_server o = {.p = &sp};
    pact_server *srv;
    cr_assert_eq(pact_server_listen_tcp_tls(loop, "127.0.0.1", 0, NULL, sctx,
                                            one_factory, &o, &srv), 0);
    failed_handshakes f = {.server = srv};
    cr_assert_eq(pact_server_set_handshake_failed_cb(srv, on_handshake_failed, &f), 0);
    peer p = {0};
    cr_assert_gt(pact_connect_tcp_tls(loop, host, (uint16_t)pact_server_port(srv),
                                      cctx, hostname, &peer_proto, &p,
                                      peer_connected, &p), 0);
    run_while(loop, &p.connected, 1, 10000);
    cr_assert_eq(p.connect_err, want_err, "connect: %s",
                 pact_err_name(p.connect_err));
    /* The reason, in debug mode or not, during the callback only. */
    cr_assert(strstr(p.reason, want_reason), "reason: \"%s\", wanted \"%s\"",
              p.reason, want_reason);
    cr_assert_eq(p.verify, want_verify, "verify result %ld", p.verify);
    cr_assert_null(pact_connect_error_message(loop), "the reason outlived its callback");
    cr_assert_str_eq(pact_strerror(want_err), "TLS certificate verification failed");
    /* The server's side fails too (the client's alert) and never reaches
     * the factory, only the failure callback, with its own reason. */
    uint64_t end = pact_now() + 5000 * MS;
    while (pact_tls_context_handshake_failures(sctx) == 0 && pact_now() < end)
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    cr_assert_eq(pact_tls_context_handshake_failures(sctx), 1);
    cr_assert_eq(o.calls, 0);
    cr_assert_eq(f.calls, 1);
    cr_assert_eq(f.err, -EPROTO, "server: %s", pact_err_name(f.err));
    cr_assert(strstr(f.reason, want_server_reason), "server reason: \"%s\"", f.reason);
    cr_assert_gt(f.port, 0);
    cr_assert_eq(p.made + p.lost, 0, "a failed connect calls no protocol");
    pact_server_close(srv);
    pact_loop_run(loop);
    pact_tls_context_free(sctx);
    test_loop_free(loop);
}

Test(tls, wrong_host_name_is_rejected)
{
    pact_tls_context *c = client_ctx();
    connect_expecting_failure(c, "127.0.0.1", "wrong.example", -EKEYREJECTED,
                              "certificate verify failed: hostname mismatch",
                              X509_V_ERR_HOSTNAME_MISMATCH, "bad certificate", 0);
    pact_tls_context_free(c);
}

Test(tls, untrusted_certificate_is_rejected)
{
    pact_tls_context *c;
    cr_assert_eq(pact_tls_context_create(PACT_TLS_CLIENT, &c), 0); /* no test CA */
    connect_expecting_failure(c, "127.0.0.1", "localhost", -EKEYREJECTED,
                              "certificate verify failed: unable to get local "
                              "issuer certificate",
                              X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                              "unknown ca", 1);
    pact_tls_context_free(c);
}

Test(tls, untrusted_certificate_error_message_names_the_reason)
{
    pact_loop *loop = test_loop_new();
    int a, b;
    make_tcp_pair(&a, &b);
    pact_tls_context *sctx = server_ctx(), *cctx;
    cr_assert_eq(pact_tls_context_create(PACT_TLS_CLIENT, &cctx), 0);
    pact_transport *pa, *pb, *ta, *tb;
    peer pc = {0}, ps = {0};
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &peer_proto,
                                     NULL, &pa), 0);
    cr_assert_eq(pact_transport_open(loop, b, PACT_STREAM_SOCKET, &peer_proto,
                                     NULL, &pb), 0);
    cr_assert_eq(pact_tls_wrap(pa, cctx, "localhost", NULL, 0, 0, &peer_proto, &pc,
                               peer_connected, &pc, &ta), 0);
    pc.wrapped = ta;
    cr_assert_eq(pact_tls_wrap(pb, sctx, NULL, NULL, 0, 0, &peer_proto, &ps,
                               peer_connected, &ps, &tb), 0);
    ps.wrapped = tb;
    run_while(loop, &pc.connected, 1, 10000);
    run_while(loop, &ps.connected, 1, 10000);
    cr_assert_eq(pc.connect_err, -EKEYREJECTED, "client: %s",
                 pact_err_name(pc.connect_err));
    cr_assert(strstr(pc.errmsg, "unable to get local issuer"), "%s", pc.errmsg);
    /* The loop says the same to on_handshake, as to the connect helpers. */
    cr_assert_str_eq(pc.reason, pc.errmsg);
    cr_assert_eq(pc.verify, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
    cr_assert_eq(ps.connect_err, -EPROTO, "server: %s", pact_err_name(ps.connect_err));
    pact_loop_run(loop); /* both torn down, the protocols never called */
    cr_assert_eq(pc.made + pc.lost + ps.made + ps.lost, 0);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    test_loop_free(loop);
}

Test(tls, context_setters_say_why_they_failed)
{
    pact_tls_context *c, *s;
    cr_assert_eq(pact_tls_context_create(PACT_TLS_CLIENT, &c), 0);
    cr_assert_null(pact_tls_context_error_message(c));
    /* A file with no certificate in it: not "Invalid argument". */
    cr_assert_eq(pact_tls_context_set_ca(c, "/dev/null", NULL), -ENODATA);
    cr_assert_str_eq(pact_tls_context_error_message(c),
                     "/dev/null: no CA certificate in the file (PEM expected)");
    char missing[160];
    snprintf(missing, sizeof missing, "%s/missing.pem", certs.dir);
    cr_assert_eq(pact_tls_context_set_ca(c, missing, NULL), -ENOENT);
    cr_assert(strstr(pact_tls_context_error_message(c), "No such file"), "%s",
              pact_tls_context_error_message(c));
    cr_assert_eq(pact_tls_context_set_ca(c, certs.ca_pem, NULL), 0);
    cr_assert_null(pact_tls_context_error_message(c), "a success clears the reason");
    cr_assert_eq(pact_tls_context_set_ciphers(c, "NO-SUCH-CIPHER", NULL), -EINVAL);
    cr_assert(strstr(pact_tls_context_error_message(c), "TLS 1.2"), "%s",
              pact_tls_context_error_message(c));
    cr_assert_eq(pact_tls_context_create(PACT_TLS_SERVER, &s), 0);
    cr_assert_eq(pact_tls_context_set_certificate(s, certs.srv_key, certs.srv_key),
                 -ENODATA);
    cr_assert(strstr(pact_tls_context_error_message(s), "no certificate in the file"),
              "%s", pact_tls_context_error_message(s));
    char ca_key[160];
    snprintf(ca_key, sizeof ca_key, "%s/ca.key", certs.dir);
    cr_assert_eq(pact_tls_context_set_certificate(s, certs.srv_pem, ca_key), -EINVAL);
    cr_assert(strstr(pact_tls_context_error_message(s),
                     "the private key does not match the certificate"),
              "%s", pact_tls_context_error_message(s));
    cr_assert_str_eq(pact_strerror(-ENODATA),
                     "No data available (a file with no certificate in it)");
    pact_tls_context_free(s);
    pact_tls_context_free(c);
}

static void tick(pact_loop *loop, void *user)
{
    (void)loop;
    (*(int *)user)++;
}

Test(tls, unreferenced_tls_transports_keep_no_loop_alive_and_still_work)
{
    pact_loop *loop = test_loop_new();
    int a, b;
    make_tcp_pair(&a, &b);
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    pact_transport *pa, *pb, *ta, *tb;
    peer pc = {0}, ps = {0};
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &peer_proto, NULL, &pa), 0);
    cr_assert_eq(pact_transport_open(loop, b, PACT_STREAM_SOCKET, &peer_proto, NULL, &pb), 0);
    /* The server side is unreferenced before wrapping: TLS keeps it. */
    cr_assert_eq(pact_transport_set_ref(pb, 0), 0);
    cr_assert_eq(pact_tls_wrap(pa, cctx, "localhost", NULL, 0, 0, &peer_proto, &pc,
                               peer_connected, &pc, &ta), 0);
    cr_assert_eq(pact_tls_wrap(pb, sctx, NULL, NULL, 0, 0, &peer_proto, &ps,
                               peer_connected, &ps, &tb), 0);
    run_while(loop, &pc.made, 1, 10000);
    run_while(loop, &ps.made, 1, 10000);
    cr_assert_eq(pact_transport_set_ref(ta, 0), 0);
    cr_assert_eq(pact_loop_alive(loop), 0, "nothing referenced is left");
    cr_assert_eq(pact_loop_run(loop), 0);
    /* They still carry data while other work runs. */
    cr_assert_eq(pact_transport_write(ta, "ping", 4), 0);
    int other = 0;
    pact_call_later(loop, 100 * MS, tick, &other);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(ps.ngot, 4);
    cr_assert_eq(memcmp(ps.got, "ping", 4), 0);
    /* Referenced again, the client keeps the loop until both have closed. */
    cr_assert_eq(pact_transport_set_ref(ta, 1), 0);
    cr_assert_eq(pact_loop_alive(loop), 1);
    ps.close_after = 0;
    cr_assert_eq(pact_transport_close(ta), 0);
    cr_assert_eq(pact_loop_run(loop), 0);
    cr_assert_eq(pc.lost, 1);
    test_loop_free(loop);
    cr_assert_eq(ps.lost, 1, "the unreferenced one too, exactly once");
    free(pc.got);
    free(ps.got);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
}

Test(tls, verification_off_is_explicit)
{
    pact_loop *loop = test_loop_new();
    pact_tls_context *c;
    cr_assert_eq(pact_tls_context_create(PACT_TLS_CLIENT, &c), 0);
    peer p = {0};
    /* Host-name checking is on by default: no name, no connection. */
    cr_assert_eq(pact_connect_unix_tls(loop, "@nope", c, NULL, &peer_proto, &p,
                                       peer_connected, &p), -EINVAL);
    cr_assert_eq(pact_tls_context_set_verify(c, 0), 0);
    pact_tls_context_free(c);
    test_loop_free(loop);
}

/* ---- ALPN and resumption, pact <-> pact ------------------------------------ */

static void one_connection(pact_loop *loop, pact_server *srv, pact_tls_context *c,
                           peer *p, peer *sp)
{
    memset(p, 0, sizeof *p);
    memset(sp, 0, sizeof *sp);
    sp->echo = 1;
    p->close_after = 4;
    cr_assert_gt(pact_connect_tcp_tls(loop, "127.0.0.1",
                                      (uint16_t)pact_server_port(srv), c, NULL,
                                      &peer_proto, p, peer_connected, p), 0);
    run_while(loop, &p->made, 1, 10000);
    cr_assert_eq(pact_transport_write(p->t, "ping", 4), 0);
    run_while(loop, &p->lost, 1, 10000);
    run_while(loop, &sp->lost, 1, 10000);
    cr_assert_eq(p->lost_err, 0, "%s %s", pact_err_name(p->lost_err), p->errmsg);
    cr_assert_eq(sp->lost_err, 0, "%s %s", pact_err_name(sp->lost_err), sp->errmsg);
    free(p->got);
    free(sp->got);
}

Test(tls, alpn_and_session_resumption)
{
    pact_loop *loop = test_loop_new();
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    const char *sprotos[] = {"h2", "http/1.1"}, *cprotos[] = {"http/1.1", "x"};
    cr_assert_eq(pact_tls_context_set_alpn(sctx, sprotos, 2), 0);
    cr_assert_eq(pact_tls_context_set_alpn(cctx, cprotos, 2), 0);
    peer sp, p;
    one_server o = {.p = &sp};
    pact_server *srv;
    cr_assert_eq(pact_server_listen_tcp_tls(loop, "127.0.0.1", 0, NULL, sctx,
                                            one_factory, &o, &srv), 0);
    one_connection(loop, srv, cctx, &p, &sp);
    cr_assert_str_eq(p.alpn, "http/1.1");
    cr_assert_str_eq(sp.alpn, "http/1.1");
    cr_assert_eq(p.reused, 0);
    one_connection(loop, srv, cctx, &p, &sp);
    cr_assert_eq(p.reused, 1, "the second connection resumes");
    cr_assert_eq(sp.reused, 1);
    /* No protocol in common: the handshake goes on without ALPN. */
    const char *none[] = {"nothing-in-common"};
    cr_assert_eq(pact_tls_context_set_alpn(cctx, none, 1), 0);
    one_connection(loop, srv, cctx, &p, &sp);
    cr_assert_str_eq(p.alpn, "");
    pact_server_close(srv);
    pact_loop_run(loop);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    test_loop_free(loop);
}

/* ---- bulk echo and the seed race over TLS ------------------------------- */

#define PACKET (16 * 1024)

typedef struct race_side {
    pact_transport *t;
    int is_client, pauser, made, lost, lost_err, eof;
    uint64_t toggle_ns;
    pact_handle toggle;
    uint64_t sent, verified, mismatches, pauses, total;
    int write_paused;
    struct race *race;
} race_side;

typedef struct race {
    race_side client, server;
    int done;
    pact_server *srv;
} race;

static void race_toggle(pact_loop *loop, void *arg)
{
    race_side *s = arg;
    s->toggle = 0;
    if (!s->t || pact_transport_is_closing(s->t))
        return;
    if (pact_transport_is_reading(s->t)) {
        cr_assert_eq(pact_transport_pause_reading(s->t), 0);
        s->pauses++;
    } else {
        cr_assert_eq(pact_transport_resume_reading(s->t), 0);
    }
    s->toggle = pact_call_later(loop, s->toggle_ns, race_toggle, s);
}

static void race_write_more(race_side *s)
{
    static uint8_t chunk[PACKET];
    while (!s->write_paused && s->sent < s->total) {
        for (size_t i = 0; i < PACKET; i++)
            chunk[i] = test_pattern_byte(s->sent + i);
        cr_assert_eq(pact_transport_write(s->t, chunk, PACKET), 0);
        s->sent += PACKET;
    }
}

static void race_stop_toggle(race_side *s)
{
    if (s->toggle && s->t)
        pact_handle_cancel(pact_transport_loop(s->t), s->toggle);
    s->toggle = 0;
}

static void race_made(pact_transport *t, void *user)
{
    race_side *s = user;
    cr_assert_eq(s->made, 0);
    s->made = 1;
    s->t = t;
    if (s->pauser)
        s->toggle = pact_call_later(pact_transport_loop(t), s->toggle_ns,
                                    race_toggle, s);
    if (s->is_client)
        race_write_more(s);
}

static void race_data(pact_transport *t, const void *data, size_t len, void *user)
{
    race_side *s = user;
    cr_assert_eq(s->made, 1);
    cr_assert_eq(s->lost, 0);
    if (!pact_transport_is_reading(t))
        cr_assert_fail("data_received while paused");
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        if (p[i] != test_pattern_byte(s->verified + i))
            s->mismatches++;
    s->verified += len;
    if (!s->is_client) {
        cr_assert_eq(pact_transport_write(t, data, len), 0);
    } else if (s->verified == s->total) {
        race_stop_toggle(s);
        pact_transport_close(t);
    }
}

static int race_eof(pact_transport *t, void *user)
{
    (void)t;
    race_side *s = user;
    s->eof = 1;
    race_stop_toggle(s);
    return 0;
}

static void race_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    race_side *s = user;
    cr_assert_eq(s->lost, 0);
    s->lost = 1;
    s->lost_err = err;
    race_stop_toggle(s);
    s->t = NULL;
    if (s->race->client.lost && s->race->server.lost) {
        s->race->done = 1;
        pact_server_close(s->race->srv);
    }
}

static void race_pause_writing(pact_transport *t, void *user)
{
    race_side *s = user;
    s->write_paused = 1;
    if (!s->is_client && !s->pauser)
        pact_transport_pause_reading(t);
}

static void race_resume_writing(pact_transport *t, void *user)
{
    race_side *s = user;
    s->write_paused = 0;
    if (s->is_client)
        race_write_more(s);
    else if (!s->pauser)
        pact_transport_resume_reading(t);
}

static const pact_protocol race_proto = {
    .connection_made = race_made,
    .data_received = race_data,
    .eof_received = race_eof,
    .connection_lost = race_lost,
    .pause_writing = race_pause_writing,
    .resume_writing = race_resume_writing,
};

static int race_factory(pact_server *srv, void *user, const pact_protocol **proto,
                        void **proto_user)
{
    (void)srv;
    race *r = user;
    cr_assert_eq(r->server.made, 0, "one connection only");
    *proto = &race_proto;
    *proto_user = &r->server;
    return 0;
}

static void race_connected(pact_loop *loop, pact_transport *t, int err, void *user)
{
    (void)loop;
    (void)user;
    cr_assert_eq(err, 0, "connect: %s", pact_strerror(err));
    cr_assert_not_null(t);
}

/* pauser: 0 none, 1 client, 2 server. unix_path NULL = TCP. */
static void run_echo(uint64_t total, int pauser, uint64_t toggle_ms,
                     const char *unix_path)
{
    pact_loop *loop = test_loop_new();
    int fds_before = count_open_fds();
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    race r;
    memset(&r, 0, sizeof r);
    r.client.race = r.server.race = &r;
    r.client.is_client = 1;
    r.client.total = r.server.total = total;
    race_side *ps = pauser == 1 ? &r.client : pauser == 2 ? &r.server : NULL;
    if (ps) {
        ps->pauser = 1;
        ps->toggle_ns = toggle_ms * MS;
    }
    if (unix_path) {
        cr_assert_eq(pact_server_listen_unix_tls(loop, unix_path, NULL, sctx,
                                                 race_factory, &r, &r.srv), 0);
        cr_assert_gt(pact_connect_unix_tls(loop, unix_path, cctx, "localhost",
                                           &race_proto, &r.client, race_connected,
                                           NULL), 0);
    } else {
        cr_assert_eq(pact_server_listen_tcp_tls(loop, "127.0.0.1", 0, NULL, sctx,
                                                race_factory, &r, &r.srv), 0);
        /* No server_hostname: the IP address is checked (IP SAN). */
        cr_assert_gt(pact_connect_tcp_tls(loop, "127.0.0.1",
                                          (uint16_t)pact_server_port(r.srv), cctx,
                                          NULL, &race_proto, &r.client,
                                          race_connected, NULL), 0);
    }
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    run_until(loop, &r.done, 100000);
    cr_assert_eq(r.client.sent, total);
    cr_assert_eq(r.server.verified, total, "server got %llu of %llu",
                 (unsigned long long)r.server.verified, (unsigned long long)total);
    cr_assert_eq(r.client.verified, total, "client got %llu of %llu",
                 (unsigned long long)r.client.verified, (unsigned long long)total);
    cr_assert_eq(r.server.mismatches + r.client.mismatches, 0, "wrong bytes");
    if (ps)
        cr_assert_gt(ps->pauses, 0, "the race must actually pause");
    cr_assert_eq(r.client.lost_err, 0, "client: %s", pact_err_name(r.client.lost_err));
    cr_assert_eq(r.server.lost_err, 0, "server: %s", pact_err_name(r.server.lost_err));
    cr_assert_eq(r.server.eof, 1, "the client's close_notify arrived");
    pact_loop_run(loop);
    cr_assert_eq(count_open_fds(), fds_before, "fd leak");
    test_loop_free(loop);
}

#define TEN_MB (640ull * PACKET)
#define RACE_TOTAL (2000ull * PACKET)

Test(tls, echo_10mb_tcp)
{
    run_echo(TEN_MB, 0, 0, NULL);
}

Test(tls, echo_10mb_unix)
{
    char path[96];
    snprintf(path, sizeof path, "@pact-tls-test-%d", (int)getpid());
    run_echo(TEN_MB, 0, 0, path);
}

Test(tls, seed_race_client_pauses_every_100ms)
{
    run_echo(RACE_TOTAL, 1, 100, NULL);
}

Test(tls, seed_race_client_pauses_every_1ms)
{
    run_echo(RACE_TOTAL, 1, 1, NULL);
}

Test(tls, seed_race_server_pauses_every_100ms)
{
    run_echo(RACE_TOTAL, 2, 100, NULL);
}

Test(tls, seed_race_server_pauses_every_1ms)
{
    run_echo(RACE_TOTAL, 2, 1, NULL);
}

/* ---- STARTTLS ---------------------------------------------------------------- */

typedef struct starttls {
    pact_loop *loop;
    pact_tls_context *sctx, *cctx;
    pact_transport *cplain, *splain, *ctls, *stls;
    peer cp, sp;
    int server_pauses;    /* the server pauses, answers GO, wraps later */
    size_t initial_len;   /* bytes after the command, handed to TLS */
    int client_waits_go;
    char cbuf[64];
    size_t ncbuf;
} starttls;

static void st_wrap_server(starttls *st, const void *initial, size_t len)
{
    st->initial_len = len;
    cr_assert_eq(pact_tls_wrap(st->splain, st->sctx, NULL, initial, len, 0,
                               &peer_proto, &st->sp, peer_connected, &st->sp,
                               &st->stls), 0);
}

static void st_later(pact_loop *loop, void *arg)
{
    (void)loop;
    starttls *st = arg;
    cr_assert(!pact_transport_is_reading(st->splain), "still paused");
    st_wrap_server(st, NULL, 0);
}

static void st_server_data(pact_transport *t, const void *data, size_t len,
                           void *user)
{
    starttls *st = user;
    const char *cmd = "STARTTLS\r\n";
    cr_assert_geq(len, 10, "the command arrives whole here");
    cr_assert_eq(memcmp(data, cmd, 10), 0);
    if (st->server_pauses) {
        cr_assert_eq(len, 10);
        cr_assert_eq(pact_transport_pause_reading(t), 0);
        cr_assert_eq(pact_transport_write(t, "GO\r\n", 4), 0);
        pact_call_later(st->loop, 30 * MS, st_later, st);
        return;
    }
    st_wrap_server(st, (const char *)data + 10, len - 10);
}

static void st_server_made(pact_transport *t, void *user)
{
    starttls *st = user;
    if (!st->server_pauses)
        cr_assert_eq(pact_transport_pause_reading(t), 0); /* let bytes pile up */
}

static const pact_protocol st_server_proto = {
    .connection_made = st_server_made,
    .data_received = st_server_data,
};

static void st_client_wrap(starttls *st)
{
    cr_assert_eq(pact_tls_wrap(st->cplain, st->cctx, "localhost", NULL, 0, 0,
                               &peer_proto, &st->cp, peer_connected, &st->cp,
                               &st->ctls), 0);
}

static void st_client_made(pact_transport *t, void *user)
{
    starttls *st = user;
    cr_assert_eq(pact_transport_write(t, "STARTTLS\r\n", 10), 0);
    if (!st->client_waits_go)
        st_client_wrap(st); /* ClientHello right behind the command */
}

static void st_client_data(pact_transport *t, const void *data, size_t len,
                           void *user)
{
    (void)t;
    starttls *st = user;
    memcpy(st->cbuf + st->ncbuf, data, len);
    st->ncbuf += len;
    if (st->ncbuf == 4) {
        cr_assert_eq(memcmp(st->cbuf, "GO\r\n", 4), 0);
        st_client_wrap(st);
    }
}

static const pact_protocol st_client_proto = {
    .connection_made = st_client_made,
    .data_received = st_client_data,
};

static void run_starttls(int server_pauses)
{
    pact_loop *loop = test_loop_new();
    starttls st;
    memset(&st, 0, sizeof st);
    st.loop = loop;
    st.server_pauses = server_pauses;
    st.client_waits_go = server_pauses;
    st.sctx = server_ctx();
    st.cctx = client_ctx();
    st.sp.echo = 1;
    st.cp.close_after = 5;
    int a, b;
    make_tcp_pair(&a, &b);
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &st_client_proto,
                                     &st, &st.cplain), 0);
    cr_assert_eq(pact_transport_open(loop, b, PACT_STREAM_SOCKET, &st_server_proto,
                                     &st, &st.splain), 0);
    if (!server_pauses) {
        /* Wait until the command and the ClientHello are both queued in the
         * server's socket, then let it read them in one go. */
        int avail = 0;
        uint64_t end = pact_now() + 5000 * MS;
        while (avail <= 100) {
            cr_assert(pact_now() < end, "no ClientHello");
            pact_loop_run_once(loop, 2 * (int64_t)MS);
            ioctl(b, FIONREAD, &avail);
        }
        cr_assert_eq(pact_transport_resume_reading(st.splain), 0);
    }
    run_while(loop, &st.cp.made, 1, 10000);
    run_while(loop, &st.sp.made, 1, 10000);
    if (!server_pauses)
        cr_assert_gt(st.initial_len, 100, "TLS bytes came with the command");
    cr_assert_eq(pact_transport_write(st.ctls, "hello", 5), 0);
    run_while(loop, &st.cp.lost, 1, 10000);
    run_while(loop, &st.sp.lost, 1, 10000);
    cr_assert_str_eq(st.cp.got, "hello");
    cr_assert_str_eq(st.sp.got, "hello");
    cr_assert_eq(st.cp.lost_err, 0, "%s", st.cp.errmsg);
    cr_assert_eq(st.sp.lost_err, 0, "%s", st.sp.errmsg);
    cr_assert_eq(st.cp.connected + st.sp.connected, 2);
    cr_assert_eq(st.cp.connect_err + st.sp.connect_err, 0);
    free(st.cp.got);
    free(st.sp.got);
    pact_tls_context_free(st.sctx);
    pact_tls_context_free(st.cctx);
    test_loop_free(loop);
}

Test(tls, starttls_with_the_first_record_in_the_command_segment)
{
    run_starttls(0);
}

Test(tls, starttls_on_a_paused_transport)
{
    run_starttls(1);
}

/* ---- garbage, timeouts, half-close, loop close ------------------------------ */

/* A TLS end over fd, wrapped at once. */
static pact_transport *tls_end(pact_loop *loop, int fd, pact_tls_context *ctx,
                               peer *p, uint64_t timeout_ns)
{
    pact_transport *plain, *t;
    cr_assert_eq(pact_transport_open(loop, fd, PACT_STREAM_SOCKET, &peer_proto,
                                     NULL, &plain), 0);
    cr_assert_eq(pact_tls_wrap(plain, ctx, "localhost", NULL, 0, timeout_ns,
                               &peer_proto, p, peer_connected, p, &t), 0);
    p->wrapped = t;
    return t;
}

/* ---- write marks ------------------------------------------------------------ */

/* A client and a server TLS transport over a socket pair, the handshake
 * done, the server no longer reading: what the client writes stays in
 * its buffers. */
typedef struct stalled {
    pact_loop *loop;
    pact_tls_context *sctx, *cctx;
    peer cp, sp;
    pact_transport *ct, *st;
} stalled;

static void stalled_open(stalled *x)
{
    memset(x, 0, sizeof *x);
    x->loop = test_loop_new();
    x->sctx = server_ctx();
    x->cctx = client_ctx();
    int sv[2];
    make_socketpair(sv);
    x->ct = tls_end(x->loop, sv[0], x->cctx, &x->cp, 0);
    x->st = tls_end(x->loop, sv[1], x->sctx, &x->sp, 0);
    run_while(x->loop, &x->cp.made, 1, 10000);
    run_while(x->loop, &x->sp.made, 1, 10000);
    cr_assert_eq(pact_transport_pause_reading(x->st), 0);
}

/* The server reads again until n bytes arrived. */
static void stalled_drain(stalled *x, size_t n)
{
    cr_assert_eq(pact_transport_resume_reading(x->st), 0);
    RUN_UNTIL(x->loop, x->sp.ngot >= n, 10000);
    cr_assert_eq(x->sp.ngot, n);
}

static void stalled_close(stalled *x)
{
    cr_assert_eq(pact_transport_close(x->ct), 0);
    run_while(x->loop, &x->cp.lost, 1, 10000);
    run_while(x->loop, &x->sp.lost, 1, 10000);
    cr_assert_eq(x->cp.lost_err, 0, "%s", x->cp.errmsg);
    free(x->cp.got);
    free(x->sp.got);
    pact_loop_run(x->loop);
    pact_tls_context_free(x->sctx);
    pact_tls_context_free(x->cctx);
    test_loop_free(x->loop);
}

/* New marks pause a TLS writer past the new high mark (inside the call)
 * and never resume one, as asyncio's set_write_buffer_limits: marks raised
 * above what is buffered leave it paused until the sends that drain the
 * buffer to the low mark (docs/contract.md, "Where callbacks run"). */
Test(tls, new_marks_pause_but_never_resume)
{
    stalled x;
    stalled_open(&x);
    cr_assert_eq(pact_transport_set_write_buffer_limits(x.ct, 1u << 30, 1u << 29), 0);
    static char big[1 << 20];
    memset(big, 'm', sizeof big);
    cr_assert_eq(pact_transport_write(x.ct, big, sizeof big), 0);
    for (int i = 0; i < 5; i++)
        pact_loop_run_once(x.loop, 0);
    cr_assert_gt(pact_transport_write_buffer_size(x.ct), 1000, "the peer reads nothing");
    cr_assert_eq(x.cp.pauses, 0, "below the high mark");
    cr_assert_eq(pact_transport_set_write_buffer_limits(x.ct, 1000, 100), 0);
    cr_assert_eq(x.cp.pauses, 1, "paused inside the call");
    cr_assert_eq(pact_transport_set_write_buffer_limits(x.ct, 1u << 30, 1u << 29), 0);
    cr_assert_eq(x.cp.resumes, 0, "new marks resumed it");
    pact_loop_run_once(x.loop, 0);
    cr_assert_eq(x.cp.resumes, 0, "resumed with nothing sent");
    cr_assert_eq(pact_transport_set_write_buffer_limits(x.ct, 10, 5), 0);
    cr_assert_eq(x.cp.pauses, 1, "paused twice");
    cr_assert_eq(pact_transport_set_write_buffer_limits(x.ct, 1u << 30, 1u << 29), 0);
    stalled_drain(&x, sizeof big);
    cr_assert_eq(x.cp.resumes, 1, "the drain resumed it");
    cr_assert_eq(x.cp.pauses, 1);
    stalled_close(&x);
}

/* A high mark of zero (asyncio's high=0, which only
 * pact_transport_set_write_marks sets) on a TLS transport: pause_writing
 * while a byte of it is buffered, resume_writing once none is, and no
 * pause for a record the kernel takes at once, also one written inside
 * an I/O callback. */
Test(tls, a_zero_high_mark_pauses_at_the_first_byte_buffered)
{
    stalled x;
    stalled_open(&x);
    x.cp.echo = 1;
    size_t high, low;
    cr_assert_eq(pact_transport_set_write_marks(x.ct, 0, 0), 0);
    pact_transport_get_write_buffer_limits(x.ct, &high, &low);
    cr_assert_eq(high, 0);
    cr_assert_eq(low, 0);
    static char big[1 << 20];
    memset(big, 'y', sizeof big);
    cr_assert_eq(pact_transport_write(x.ct, big, sizeof big), 0);
    cr_assert_gt(pact_transport_write_buffer_size(x.ct), 0);
    cr_assert_eq(x.cp.pauses, 1, "buffered bytes pause");
    stalled_drain(&x, sizeof big);
    cr_assert_eq(x.cp.resumes, 1);
    cr_assert_eq(x.cp.size_at_resume, 0, "resumed once empty");
    /* The kernel has room now: taken at once, nothing buffered. */
    cr_assert_eq(pact_transport_write(x.ct, "z", 1), 0);
    cr_assert_eq(pact_transport_write_buffer_size(x.ct), 0);
    cr_assert_eq(pact_transport_write(x.st, "ping", 4), 0);
    RUN_UNTIL(x.loop, x.sp.ngot >= sizeof big + 5, 10000);
    cr_assert_eq(memcmp(x.sp.got + sizeof big, "zping", 5), 0);
    cr_assert_eq(x.cp.pauses, 1, "a record the kernel took paused");
    cr_assert_eq(x.cp.resumes, 1);
    stalled_close(&x);
}

Test(tls, garbage_during_the_handshake)
{
    pact_loop *loop = test_loop_new();
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    int a, b, c, d;
    make_tcp_pair(&a, &b);
    make_tcp_pair(&c, &d);
    peer sp = {0}, cp = {0};
    tls_end(loop, b, sctx, &sp, 0);  /* server; a is a raw peer */
    tls_end(loop, c, cctx, &cp, 0);  /* client; d is a raw peer */
    const char *junk = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
    cr_assert_eq(send(a, junk, strlen(junk), 0), (ssize_t)strlen(junk));
    /* The raw server answers the ClientHello with garbage. */
    char hello[4096];
    uint64_t end = pact_now() + 5000 * MS;
    ssize_t n = -1;
    while (n <= 0) {
        cr_assert(pact_now() < end);
        pact_loop_run_once(loop, 2 * (int64_t)MS);
        n = recv(d, hello, sizeof hello, MSG_DONTWAIT);
    }
    cr_assert_eq(hello[0], 0x16, "a handshake record");
    cr_assert_eq(send(d, junk, strlen(junk), 0), (ssize_t)strlen(junk));
    run_while(loop, &sp.connected, 1, 10000);
    run_while(loop, &cp.connected, 1, 10000);
    cr_assert_eq(sp.connect_err, -EPROTO, "server: %s", pact_err_name(sp.connect_err));
    cr_assert_eq(cp.connect_err, -EPROTO, "client: %s", pact_err_name(cp.connect_err));
    cr_assert_neq(sp.errmsg[0], 0);
    free(sp.got);
    free(cp.got);
    pact_loop_run(loop);
    cr_assert_eq(sp.made + sp.lost + cp.made + cp.lost, 0, "no protocol callback");
    close(a);
    close(d);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    test_loop_free(loop);
}

Test(tls, garbage_mid_stream)
{
    pact_loop *loop = test_loop_new();
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    int a, b;
    make_tcp_pair(&a, &b);
    peer sp = {.echo = 1}, cp = {0};
    pact_transport *ct = tls_end(loop, a, cctx, &cp, 0);
    tls_end(loop, b, sctx, &sp, 0);
    run_while(loop, &cp.made, 1, 10000);
    run_while(loop, &sp.made, 1, 10000);
    cr_assert_eq(pact_transport_write(ct, "ok", 2), 0);
    while (cp.ngot < 2)
        pact_loop_run_once(loop, 5 * (int64_t)MS);
    /* Bytes that are no TLS record, straight into the server's socket. */
    static const char junk[] = "\x17\x03\x03\x00\x20this is not a valid record!!!!!!";
    cr_assert_eq(send(b, junk, sizeof junk - 1, 0), (ssize_t)(sizeof junk - 1));
    run_while(loop, &cp.lost, 1, 10000);
    run_while(loop, &sp.lost, 1, 10000);
    cr_assert_eq(cp.lost_err, -EPROTO, "client: %s", pact_err_name(cp.lost_err));
    cr_assert(strstr(cp.errmsg, "TLS read"), "%s", cp.errmsg);
    cr_assert_neq(sp.lost_err, 0, "the server sees the client's alert");
    cr_assert_eq(cp.after_lost + sp.after_lost, 0);
    free(cp.got);
    free(sp.got);
    pact_loop_run(loop);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    test_loop_free(loop);
}

Test(tls, handshake_timeout)
{
    pact_loop *loop = test_loop_new();
    pact_tls_context *sctx = server_ctx();
    int a, b;
    make_tcp_pair(&a, &b);
    peer sp = {0};
    tls_end(loop, b, sctx, &sp, 100 * MS);
    uint64_t start = pact_now();
    run_while(loop, &sp.connected, 1, 10000);
    cr_assert_geq(pact_now() - start, 100 * MS);
    cr_assert_eq(sp.connect_err, -ETIMEDOUT);
    pact_loop_run(loop);
    cr_assert_eq(sp.made + sp.lost, 0, "no protocol callback");
    close(a);
    pact_tls_context_free(sctx);
    test_loop_free(loop);
}

Test(tls, write_eof_is_close_notify_and_reading_goes_on)
{
    pact_loop *loop = test_loop_new();
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    int a, b;
    make_tcp_pair(&a, &b);
    peer sp = {.reply_on_eof = "answer"}, cp = {0};
    pact_transport *ct = tls_end(loop, a, cctx, &cp, 0);
    tls_end(loop, b, sctx, &sp, 0);
    /* Written before the handshake: queued, sent first. */
    cr_assert_eq(pact_transport_write(ct, "ask", 3), 0);
    cr_assert_eq(pact_transport_write_eof(ct), 0);
    cr_assert_eq(pact_transport_write(ct, "late", 4), -EPIPE);
    run_while(loop, &cp.lost, 1, 10000);
    run_while(loop, &sp.lost, 1, 10000);
    cr_assert_str_eq(sp.got, "ask");
    cr_assert_eq(sp.eof, 1);
    cr_assert_str_eq(cp.got, "answer");
    cr_assert_eq(cp.eof, 1);
    cr_assert_eq(cp.lost_err, 0, "%s", cp.errmsg);
    cr_assert_eq(sp.lost_err, 0, "%s", sp.errmsg);
    free(cp.got);
    free(sp.got);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    test_loop_free(loop);
}

Test(tls, loop_close_with_tls_transports_open)
{
    int fds_before = count_open_fds();
    pact_loop *loop = test_loop_new();
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    int a, b, c, d;
    make_tcp_pair(&a, &b);
    make_tcp_pair(&c, &d);
    peer sp = {0}, cp = {0}, half = {0};
    tls_end(loop, a, cctx, &cp, 0);
    tls_end(loop, b, sctx, &sp, 0);
    tls_end(loop, c, cctx, &half, 0); /* d never answers: mid-handshake */
    run_while(loop, &cp.made, 1, 10000);
    run_while(loop, &sp.made, 1, 10000);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    /* Debug mode names each TLS transport left open: catch stderr. */
    char logpath[] = "/tmp/pact-tls-log.XXXXXX";
    int logfd = mkstemp(logpath);
    cr_assert_geq(logfd, 0);
    unlink(logpath);
    fflush(stderr);
    int saved = dup(2);
    dup2(logfd, 2);
    int r = pact_loop_close(loop);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char log[8192];
    ssize_t n = pread(logfd, log, sizeof log - 1, 0);
    close(logfd);
    log[n > 0 ? n : 0] = '\0';
    cr_assert_eq(r, 0);
    int reported = 0;
    for (const char *q = log; (q = strstr(q, "a TLS transport still open")); q++)
        reported++;
    cr_assert_eq(reported, 3, "loop close reports 3 TLS transports:\n%s", log);
    /* The established ones: made, then lost once. */
    cr_assert_eq(cp.made + sp.made, 2);
    cr_assert_eq(cp.lost + sp.lost, 2);
    /* Mid-handshake: only on_handshake learns of it. */
    cr_assert_eq(half.connected, 1);
    cr_assert_eq(half.connect_err, -ECONNABORTED, "%s",
                 pact_err_name(half.connect_err));
    cr_assert_eq(half.made + half.lost, 0, "no protocol callback");
    pact_loop_free(loop);
    close(d);
    cr_assert_eq(count_open_fds(), fds_before);
}

Test(tls, misuse_is_refused)
{
    pact_loop *loop = test_loop_new();
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    pact_transport *t, *plain;
    cr_assert_eq(pact_tls_wrap(NULL, sctx, NULL, NULL, 0, 0, &peer_proto, NULL,
                               peer_connected, NULL, &t), -EINVAL);
    cr_assert_eq(pact_tls_context_create(7, NULL), -EINVAL);
    cr_assert_eq(pact_tls_context_set_certificate(sctx, "/nonexistent", NULL),
                 -ENOENT);
    cr_assert_eq(pact_tls_context_set_min_version(sctx, 0x0301), -EINVAL);
    cr_assert_eq(pact_tls_context_set_ciphers(sctx, "NO-SUCH-CIPHER", NULL), -EINVAL);
    int a, b;
    make_tcp_pair(&a, &b);
    peer p = {0};
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &peer_proto, &p,
                                     &plain), 0);
    cr_assert_eq(pact_transport_is_tls(plain), 0);
    cr_assert_null(pact_tls_version(plain));
    cr_assert_eq(pact_tls_wrap(plain, cctx, NULL, NULL, 0, 0, &peer_proto, &p,
                               peer_connected, &p, &t),
                 -EINVAL, "a host name is needed while checking is on");
    cr_assert_eq(pact_tls_wrap(plain, cctx, "localhost", NULL, 0, 0, &peer_proto,
                               &p, NULL, NULL, &t),
                 -EINVAL, "on_handshake is required");
    cr_assert_eq(pact_tls_wrap(plain, cctx, "localhost", NULL, 0, 0, &peer_proto,
                               &p, peer_connected, &p, &t), 0);
    p.wrapped = t;
    cr_assert_eq(pact_transport_is_tls(t), 1);
    pact_transport *t2;
    cr_assert_eq(pact_tls_wrap(t, cctx, "localhost", NULL, 0, 0, &peer_proto, &p,
                               peer_connected, &p, &t2), -ENOTSUP);
    cr_assert_eq(pact_transport_sendfile(t, 0, 0, 1, NULL, NULL), -ENOTSUP);
    cr_assert_eq(pact_transport_close(t), 0);
    cr_assert_eq(pact_transport_close(t), -EALREADY);
    cr_assert_eq(pact_transport_write(t, "x", 1), -ESHUTDOWN);
    cr_assert_eq(p.connected, 0, "never from inside the caller");
    pact_loop_run(loop);
    cr_assert_eq(p.connected, 1);
    cr_assert_eq(p.connect_err, -ECONNABORTED, "closed before the handshake");
    cr_assert_eq(p.made + p.lost, 0, "the protocol never hears of it");
    free(p.got);
    close(b);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    test_loop_free(loop);
}

/* ---- docs/contract.md §6 (order) on every close path ------------------- */

/* The protocol's order (recorder.h: made first, data, at most one eof,
 * lost once and last, nothing after) on each way a TLS connection ends,
 * and on_handshake exactly once, before any protocol callback; a failed
 * handshake calls no protocol at all. */
enum order_path {
    OP_CLOSE,                 /* the client closes: close_notify */
    OP_ABORT,                 /* the client aborts: the server sees truncation */
    OP_PEER_CLOSE,            /* the server closes */
    OP_WRITE_EOF,             /* the client half-closes, the server answers */
    OP_TRUNCATION,            /* TCP FIN without close_notify */
    OP_GARBAGE,               /* a bad record mid-stream */
    OP_PAUSED_PEER_CLOSE,     /* data and close_notify arrive while paused */
    OP_CLOSE_IN_ON_HANDSHAKE, /* on_handshake(t, 0) closes t */
    OP_ABORT_IN_ON_HANDSHAKE, /* on_handshake(t, 0) aborts t */
    OP_CLOSE_BEFORE_HANDSHAKE,
    OP_LOOP_CLOSE,
};

typedef struct order_end {
    rec r;
    int hs_calls, hs_err;
    int action; /* in on_handshake(t, 0): 1 close, 2 abort */
} order_end;

static void order_handshake(pact_loop *loop, pact_transport *t, int err,
                            void *user)
{
    (void)loop;
    order_end *e = user;
    if (e->hs_calls++)
        rec_violation(&e->r, "on_handshake twice");
    if (e->r.made || e->r.lost)
        rec_violation(&e->r, "on_handshake after a protocol callback");
    if ((err != 0) != (t == NULL))
        rec_violation(&e->r, "on_handshake: t and err disagree");
    e->hs_err = err;
    if (t && e->action == 1)
        cr_assert_eq(pact_transport_close(t), 0);
    if (t && e->action == 2)
        cr_assert_eq(pact_transport_abort(t), 0);
}

/* The end is over: its handshake failed, or its protocol saw the end. */
static int order_over(const order_end *e)
{
    return e->hs_calls && (e->hs_err || e->r.lost);
}

static void order_check(const order_end *e, const char *who)
{
    cr_expect_eq(e->hs_calls, 1, "%s: on_handshake %d times", who, e->hs_calls);
    cr_expect_eq(e->r.bad, 0, "%s: %s", who, e->r.why);
    if (e->hs_err) {
        cr_expect_eq(e->r.made + e->r.lost + e->r.eofs, 0,
                     "%s: a failed handshake calls no protocol", who);
        cr_expect_eq(e->r.nbytes, 0);
    } else {
        rec_expect_done(&e->r);
        cr_expect_lt(e->r.made_seq, e->r.lost_seq, "%s: made before lost", who);
        cr_expect_leq(e->r.eofs, 1);
    }
}

static void order_case(enum order_path path)
{
    signal(SIGPIPE, SIG_IGN);
    int fds_before = count_open_fds();
    pact_loop *loop = test_loop_new();
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    int a, b, seq = 0;
    make_tcp_pair(&a, &b);
    order_end ce, se;
    memset(&ce, 0, sizeof ce);
    memset(&se, 0, sizeof se);
    rec_init(&ce.r);
    rec_init(&se.r);
    ce.r.seq = se.r.seq = &seq;
    se.r.echo = 1;
    ce.action = path == OP_CLOSE_IN_ON_HANDSHAKE   ? 1
                : path == OP_ABORT_IN_ON_HANDSHAKE ? 2
                                                   : 0;
    pact_transport *pa, *pb, *ct, *st;
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &rec_protocol,
                                     NULL, &pa), 0);
    cr_assert_eq(pact_transport_open(loop, b, PACT_STREAM_SOCKET, &rec_protocol,
                                     NULL, &pb), 0);
    cr_assert_eq(pact_tls_wrap(pa, cctx, "localhost", NULL, 0, 0, &rec_protocol,
                               &ce.r, order_handshake, &ce, &ct), 0);
    cr_assert_eq(pact_tls_wrap(pb, sctx, NULL, NULL, 0, 0, &rec_protocol, &se.r,
                               order_handshake, &se, &st), 0);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    if (path == OP_CLOSE_BEFORE_HANDSHAKE) {
        cr_assert_eq(pact_transport_close(ct), 0);
        RUN_UNTIL(loop, order_over(&ce) && order_over(&se), 10000);
        cr_assert_eq(ce.hs_err, -ECONNABORTED, "%s", pact_err_name(ce.hs_err));
        cr_assert_neq(se.hs_err, 0, "the server's handshake cannot finish");
    } else if (ce.action) {
        RUN_UNTIL(loop, order_over(&ce) && order_over(&se), 10000);
        cr_assert_eq(ce.hs_err, 0);
        cr_assert_eq(ce.r.nbytes, 0);
    } else {
        RUN_UNTIL(loop, ce.r.made && se.r.made, 10000);
        cr_assert_eq(pact_transport_write(ce.r.t, "ping", 4), 0);
        RUN_UNTIL(loop, ce.r.nbytes == 4, 10000);
        /* A whole application-data record (32 bytes) that fails to decrypt. */
        static const char junk[] = "\x17\x03\x03\x00\x20not a valid record!!!!!!!!!!!!!!";
        _Static_assert(sizeof junk - 1 == 5 + 32, "a whole record");
        switch (path) {
        case OP_CLOSE:
            cr_assert_eq(pact_transport_close(ce.r.t), 0);
            break;
        case OP_ABORT:
            cr_assert_eq(pact_transport_abort(ce.r.t), 0);
            break;
        case OP_PEER_CLOSE:
            cr_assert_eq(pact_transport_close(se.r.t), 0);
            break;
        case OP_WRITE_EOF:
            cr_assert_eq(pact_transport_write_eof(ce.r.t), 0);
            break;
        case OP_TRUNCATION:
            cr_assert_eq(shutdown(pact_transport_fd(se.r.t), SHUT_WR), 0);
            break;
        case OP_GARBAGE:
            cr_assert_eq(send(pact_transport_fd(se.r.t), junk, sizeof junk - 1, 0),
                         (ssize_t)(sizeof junk - 1));
            break;
        case OP_PAUSED_PEER_CLOSE:
            cr_assert_eq(pact_transport_pause_reading(ce.r.t), 0);
            ce.r.paused_now = 1;
            cr_assert_eq(pact_transport_write(se.r.t, "pong", 4), 0);
            cr_assert_eq(pact_transport_close(se.r.t), 0);
            run_for(loop, 50);
            cr_assert_eq(ce.r.nbytes, 4, "nothing while paused");
            cr_assert_eq(ce.r.eofs + ce.r.lost, 0, "no eof or lost while paused");
            ce.r.paused_now = 0;
            cr_assert_eq(pact_transport_resume_reading(ce.r.t), 0);
            break;
        case OP_LOOP_CLOSE:
            cr_assert_eq(pact_loop_close(loop), 0);
            break;
        default:
            break;
        }
        if (path != OP_LOOP_CLOSE)
            RUN_UNTIL(loop, ce.r.lost && se.r.lost, 10000);
        cr_assert_eq(ce.hs_err + se.hs_err, 0);
    }
    if (path != OP_LOOP_CLOSE)
        pact_loop_run(loop); /* whatever is left: nothing may follow lost */
    order_check(&ce, "client");
    order_check(&se, "server");
    switch (path) {
    case OP_CLOSE:
        cr_expect_eq(ce.r.lost_err, 0);
        cr_expect_eq(se.r.eofs, 1, "the server sees close_notify");
        cr_expect_eq(se.r.lost_err, 0);
        break;
    case OP_ABORT:
        cr_expect_eq(ce.r.lost_err, 0);
        cr_expect_eq(se.r.eofs, 0);
        cr_expect_eq(se.r.lost_err, -ECONNRESET, "%s", pact_err_name(se.r.lost_err));
        break;
    case OP_PEER_CLOSE:
    case OP_WRITE_EOF:
        /* The closer does not wait for the answering close_notify. */
        cr_expect_eq(ce.r.eofs + se.r.eofs, path == OP_WRITE_EOF ? 2 : 1);
        cr_expect_eq(ce.r.eofs, 1);
        cr_expect_eq(ce.r.lost_err, 0, "%s", pact_err_name(ce.r.lost_err));
        cr_expect_eq(se.r.lost_err, 0, "%s", pact_err_name(se.r.lost_err));
        break;
    case OP_TRUNCATION:
        cr_expect_eq(ce.r.eofs, 0);
        cr_expect_eq(ce.r.lost_err, -ECONNRESET, "%s", pact_err_name(ce.r.lost_err));
        break;
    case OP_GARBAGE:
        cr_expect_eq(ce.r.lost_err, -EPROTO, "%s", pact_err_name(ce.r.lost_err));
        break;
    case OP_PAUSED_PEER_CLOSE:
        cr_expect_eq(ce.r.nbytes, 8, "pong after ping");
        cr_expect_eq(ce.r.eofs, 1);
        cr_expect_eq(ce.r.lost_err, 0, "%s", pact_err_name(ce.r.lost_err));
        break;
    default:
        break;
    }
    if (path == OP_LOOP_CLOSE)
        pact_loop_free(loop);
    else
        test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds_before, "fd leak");
}

Test(tls, order_close) { order_case(OP_CLOSE); }
Test(tls, order_abort) { order_case(OP_ABORT); }
Test(tls, order_peer_close) { order_case(OP_PEER_CLOSE); }
Test(tls, order_write_eof) { order_case(OP_WRITE_EOF); }
Test(tls, order_truncation) { order_case(OP_TRUNCATION); }
Test(tls, order_garbage) { order_case(OP_GARBAGE); }
Test(tls, order_paused_peer_close) { order_case(OP_PAUSED_PEER_CLOSE); }
Test(tls, order_close_in_on_handshake) { order_case(OP_CLOSE_IN_ON_HANDSHAKE); }
Test(tls, order_abort_in_on_handshake) { order_case(OP_ABORT_IN_ON_HANDSHAKE); }
Test(tls, order_close_before_handshake) { order_case(OP_CLOSE_BEFORE_HANDSHAKE); }
Test(tls, order_loop_close) { order_case(OP_LOOP_CLOSE); }

/* ---- pausing is not cancelling -------------------------------------------- */

/* A client that pauses reading inside data_received and resumes a moment
 * later, against a server that sends a stream and closes cleanly
 * (close_notify, then FIN). Every byte must arrive, in order, and the
 * clean close must be reported as clean: eof_received, then
 * connection_lost(0) — never truncation. While paused, and after
 * connection_lost, the protocol hears nothing. */
#define PAUSED_TOTAL (200 * 1024)

typedef struct paused_reader {
    pact_loop *loop;
    pact_transport *t;
    unsigned seed;        /* 0: pause on every delivery, resume after delay_ms */
    unsigned delay_ms;    /* 0: from the next iteration (pact_call_soon) */
    int end_action;       /* 0 resume; 1 close, 2 abort while paused */
    uint64_t end_after;   /* ... once this many bytes have arrived */
    int made, eofs, lost, lost_err, paused, bad;
    char why[160];
    uint64_t got, mismatches, pauses;
    pact_handle resume;
    char errmsg[256];
} paused_reader;

static void pr_violation(paused_reader *p, const char *what)
{
    if (p->bad++ == 0)
        snprintf(p->why, sizeof p->why, "%s (got %llu, made %d eofs %d lost %d)",
                 what, (unsigned long long)p->got, p->made, p->eofs, p->lost);
}

static unsigned pr_rand(paused_reader *p)
{
    return (unsigned)rand_r(&p->seed);
}

static void pr_resume(pact_loop *loop, void *arg)
{
    (void)loop;
    paused_reader *p = arg;
    p->resume = 0;
    if (p->lost)
        return;
    p->paused = 0;
    if (p->end_after && p->got >= p->end_after && p->end_action) {
        /* Ends while paused, with ciphertext still buffered. */
        int r = p->end_action == 1 ? pact_transport_close(p->t)
                                   : pact_transport_abort(p->t);
        if (r)
            pr_violation(p, "close/abort while paused refused");
        p->end_action = 0;
        return;
    }
    if (pact_transport_resume_reading(p->t) != 0)
        pr_violation(p, "resume_reading refused");
    /* Sometimes pause again at once: the resume must not let anything
     * through meanwhile. */
    if (p->seed && pr_rand(p) % 4 == 0) {
        if (pact_transport_pause_reading(p->t) != 0)
            pr_violation(p, "pause_reading refused");
        p->paused = 1;
        p->pauses++;
        p->resume = pact_call_later(p->loop, (pr_rand(p) % 3) * MS, pr_resume, p);
    }
}

static void pr_pause(paused_reader *p)
{
    if (pact_transport_pause_reading(p->t) != 0)
        pr_violation(p, "pause_reading refused");
    p->paused = 1;
    p->pauses++;
    uint64_t delay = (p->seed ? pr_rand(p) % 4 : p->delay_ms) * MS;
    p->resume = delay ? pact_call_later(p->loop, delay, pr_resume, p)
                      : pact_call_soon(p->loop, pr_resume, p);
    if (p->resume <= 0)
        pr_violation(p, "could not schedule the resume");
}

static void pr_made(pact_transport *t, void *user)
{
    paused_reader *p = user;
    if (p->made++ || p->lost)
        pr_violation(p, "connection_made twice or after lost");
    p->t = t;
}

static void pr_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    paused_reader *p = user;
    if (!p->made || p->eofs || p->lost)
        pr_violation(p, "data_received out of order");
    if (p->paused)
        pr_violation(p, "data_received while paused");
    const uint8_t *b = data;
    for (size_t i = 0; i < len; i++)
        if (b[i] != test_pattern_byte(p->got + i))
            p->mismatches++;
    p->got += len;
    /* Seeded: every other delivery or so, but at least once; ending while
     * paused: on every delivery, so the end meets a paused reader. */
    if (!p->seed || p->end_action || p->pauses == 0 || pr_rand(p) % 2 == 0)
        pr_pause(p);
}

static int pr_eof(pact_transport *t, void *user)
{
    (void)t;
    paused_reader *p = user;
    if (!p->made || p->eofs++ || p->lost)
        pr_violation(p, "eof_received out of order or twice");
    if (p->paused)
        pr_violation(p, "eof_received while paused");
    return 0;
}

static void pr_lost(pact_transport *t, int err, void *user)
{
    paused_reader *p = user;
    if (!p->made || p->lost++)
        pr_violation(p, "connection_lost before made or twice");
    p->lost_err = err;
    const char *m = pact_tls_error_message(t);
    snprintf(p->errmsg, sizeof p->errmsg, "%s", m ? m : "");
    if (p->resume)
        pact_handle_cancel(p->loop, p->resume);
    p->resume = 0;
    p->t = NULL;
}

static const pact_protocol pr_proto = {
    .connection_made = pr_made,
    .data_received = pr_data,
    .eof_received = pr_eof,
    .connection_lost = pr_lost,
};

/* The sending side: the stream in chunks (random sizes, spread over loop
 * iterations when seeded), then a clean close. */
typedef struct pr_sender {
    pact_loop *loop;
    pact_transport *t;
    unsigned seed;
    uint64_t sent, total;
    int abort_when_done; /* abort instead of close: the peer just goes */
    int made, lost, lost_err;
} pr_sender;

static void sender_more(pact_loop *loop, void *arg)
{
    (void)loop;
    pr_sender *s = arg;
    if (!s->t || pact_transport_is_closing(s->t))
        return; /* the reader closed or aborted first */
    static uint8_t chunk[64 * 1024];
    do {
        size_t n = s->seed ? 1 + (size_t)rand_r(&s->seed) % sizeof chunk
                           : sizeof chunk;
        if (n > s->total - s->sent)
            n = (size_t)(s->total - s->sent);
        test_fill_pattern(chunk, n, s->sent);
        cr_assert_eq(pact_transport_write(s->t, chunk, n), 0);
        s->sent += n;
    } while (s->sent < s->total && (!s->seed || rand_r(&s->seed) % 2));
    if (s->sent < s->total)
        cr_assert_gt(pact_call_soon(s->loop, sender_more, s), 0);
    else if (s->abort_when_done)
        cr_assert_eq(pact_transport_abort(s->t), 0);
    else
        cr_assert_eq(pact_transport_close(s->t), 0);
}

static void sender_made(pact_transport *t, void *user)
{
    pr_sender *s = user;
    s->made = 1;
    s->t = t;
    sender_more(s->loop, s);
}

static int sender_eof(pact_transport *t, void *user)
{
    (void)t;
    (void)user;
    return 0;
}

static void sender_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    pr_sender *s = user;
    s->lost = 1;
    s->lost_err = err;
    s->t = NULL;
}

static const pact_protocol sender_proto = {
    .connection_made = sender_made,
    .eof_received = sender_eof,
    .connection_lost = sender_lost,
};

static void pr_handshake(pact_loop *loop, pact_transport *t, int err, void *user)
{
    (void)loop;
    (void)t;
    cr_assert_eq(err, 0, "%s: handshake: %s", (const char *)user, pact_err_name(err));
}

/* One connection over loopback TCP: one end sends total bytes and
 * closes, the other reads with pauses (the client, unless reader_is_server).
 * Returns once both ends are gone. */
static void paused_run_roles(paused_reader *p, pr_sender *s, int reader_is_server)
{
    signal(SIGPIPE, SIG_IGN);
    int fds_before = count_open_fds();
    pact_loop *loop = test_loop_new();
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    int a, b;
    make_tcp_pair(&a, &b);
    p->loop = s->loop = loop;
    pact_transport *pa, *pb, *t;
    cr_assert_eq(pact_transport_open(loop, a, PACT_STREAM_SOCKET, &pr_proto, p,
                                     &pa), 0);
    cr_assert_eq(pact_transport_open(loop, b, PACT_STREAM_SOCKET, &sender_proto,
                                     s, &pb), 0);
    if (reader_is_server) {
        pact_transport *swap = pa;
        pa = pb;
        pb = swap;
        cr_assert_eq(pact_transport_set_protocol(pa, &pr_proto, p), 0);
        cr_assert_eq(pact_transport_set_protocol(pb, &sender_proto, s), 0);
    }
    pact_tls_context *reader_ctx = reader_is_server ? sctx : cctx;
    pact_tls_context *sender_ctx = reader_is_server ? cctx : sctx;
    cr_assert_eq(pact_tls_wrap(pa, reader_ctx, reader_is_server ? NULL : "localhost",
                               NULL, 0, 0, &pr_proto, p, pr_handshake, "reader",
                               &t), 0);
    cr_assert_eq(pact_tls_wrap(pb, sender_ctx, reader_is_server ? "localhost" : NULL,
                               NULL, 0, 0, &sender_proto, s, pr_handshake, "sender",
                               &t), 0);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    RUN_UNTIL(loop, p->lost && s->lost, 20000);
    pact_loop_run(loop); /* whatever is left: nothing may follow lost */
    cr_assert_eq(p->lost, 1);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds_before, "fd leak");
}

static void paused_run(paused_reader *p, pr_sender *s)
{
    paused_run_roles(p, s, 0);
}

static void paused_expect_all(paused_reader *p, pr_sender *s, const char *what)
{
    cr_assert_eq(p->bad, 0, "%s: %s", what, p->why);
    cr_assert_eq(s->sent, s->total);
    cr_assert_eq(p->got, s->total, "%s: received %llu of %llu, then %s (%s)", what,
                 (unsigned long long)p->got, (unsigned long long)s->total,
                 pact_err_name(p->lost_err), p->errmsg);
    cr_assert_eq(p->mismatches, 0, "%s: bytes out of place", what);
    cr_assert_eq(p->eofs, 1, "%s: the clean close is an eof", what);
    cr_assert_eq(p->lost_err, 0, "%s: clean close reported as %s (%s)", what,
                 pact_err_name(p->lost_err), p->errmsg);
    cr_assert_gt(p->pauses, 0, "%s: the reader must actually pause", what);
    cr_assert_eq(s->lost_err, 0, "%s: server: %s", what, pact_err_name(s->lost_err));
}

Test(tls, pause_in_data_received_resume_later_loses_nothing)
{
    static const unsigned delays_ms[] = {0, 1, 5};
    for (size_t i = 0; i < sizeof delays_ms / sizeof delays_ms[0]; i++) {
        paused_reader p = {.delay_ms = delays_ms[i]};
        pr_sender s = {.total = PAUSED_TOTAL};
        paused_run(&p, &s);
        char what[64];
        snprintf(what, sizeof what, "resume after %u ms", delays_ms[i]);
        paused_expect_all(&p, &s, what);
    }
}

Test(tls, random_pause_resume_loses_nothing_50_seeds)
{
    for (unsigned seed = 1; seed <= 50; seed++) {
        paused_reader p = {.seed = seed};
        pr_sender s = {.total = PAUSED_TOTAL, .seed = seed * 7919u};
        paused_run(&p, &s);
        char what[32];
        snprintf(what, sizeof what, "seed %u", seed);
        paused_expect_all(&p, &s, what);
    }
}

/* The same with the roles swapped: the TLS server reads with pauses
 * while the client sends and closes. */
Test(tls, server_reader_random_pause_resume_loses_nothing_20_seeds)
{
    for (unsigned seed = 1; seed <= 20; seed++) {
        paused_reader p = {.seed = seed};
        pr_sender s = {.total = PAUSED_TOTAL, .seed = seed * 7919u};
        paused_run_roles(&p, &s, 1);
        char what[32];
        snprintf(what, sizeof what, "seed %u", seed);
        paused_expect_all(&p, &s, what);
    }
}

/* Closing or aborting while paused, with the rest of the stream (and the
 * close_notify) still buffered: connection_lost once, nothing after it,
 * and no data once close or abort was called. */
static void paused_then_end(int action)
{
    for (unsigned seed = 0; seed <= 10; seed++) {
        paused_reader p = {.seed = seed, .delay_ms = 1, .end_action = action,
                           .end_after = 64 * 1024};
        pr_sender s = {.total = PAUSED_TOTAL, .seed = seed * 31u};
        paused_run(&p, &s);
        cr_assert_eq(p.bad, 0, "seed %u: %s", seed, p.why);
        cr_assert_eq(p.end_action, 0, "seed %u: ended while paused", seed);
        cr_assert_lt(p.got, PAUSED_TOTAL, "seed %u", seed);
        cr_assert_eq(p.mismatches, 0);
        cr_assert_eq(p.eofs, 0, "seed %u: no eof after close/abort", seed);
        cr_assert_eq(p.lost_err, 0, "seed %u: %s", seed, pact_err_name(p.lost_err));
    }
}

Test(tls, close_while_paused_with_data_buffered)
{
    paused_then_end(1);
}

Test(tls, abort_while_paused_with_data_buffered)
{
    paused_then_end(2);
}

/* A buffered protocol (get_buffer/buffer_updated) that pauses inside
 * buffer_updated: no get_buffer or buffer_updated until resume; the rest
 * of the decrypted chunk is held and handed over after resume_reading,
 * every byte in its place, and the clean close stays clean. */
typedef struct buffered_reader {
    paused_reader p; /* the checks and counters; its t, loop, resume */
    char buf[1500];  /* smaller than a record: a chunk takes many calls */
    int in_buffer;
} buffered_reader;

static void *br_get_buffer(pact_transport *t, size_t hint, size_t *len, void *user)
{
    (void)t;
    buffered_reader *b = user;
    if (hint == 0)
        pr_violation(&b->p, "get_buffer with a size hint of 0");
    if (b->p.paused)
        pr_violation(&b->p, "get_buffer while paused");
    if (!b->p.made || b->p.eofs || b->p.lost)
        pr_violation(&b->p, "get_buffer out of order");
    b->in_buffer = 1;
    *len = sizeof b->buf;
    return b->buf;
}

static void br_updated(pact_transport *t, size_t n, void *user)
{
    (void)t;
    buffered_reader *b = user;
    if (!b->in_buffer)
        pr_violation(&b->p, "buffer_updated without get_buffer");
    b->in_buffer = 0;
    if (b->p.paused)
        pr_violation(&b->p, "buffer_updated while paused");
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)b->buf[i] != test_pattern_byte(b->p.got + i))
            b->p.mismatches++;
    b->p.got += n;
    if (!b->p.seed || b->p.pauses == 0 || pr_rand(&b->p) % 3 == 0)
        pr_pause(&b->p);
}

static void br_made(pact_transport *t, void *user)
{
    pr_made(t, &((buffered_reader *)user)->p);
}

static int br_eof(pact_transport *t, void *user)
{
    return pr_eof(t, &((buffered_reader *)user)->p);
}

static void br_lost(pact_transport *t, int err, void *user)
{
    pr_lost(t, err, &((buffered_reader *)user)->p);
}

static const pact_protocol br_proto = {
    .connection_made = br_made,
    .eof_received = br_eof,
    .connection_lost = br_lost,
    .get_buffer = br_get_buffer,
    .buffer_updated = br_updated,
};

Test(tls, buffered_protocol_pause_in_buffer_updated_holds_the_rest)
{
    for (unsigned seed = 0; seed <= 10; seed++) {
        signal(SIGPIPE, SIG_IGN);
        buffered_reader b;
        memset(&b, 0, sizeof b);
        b.p.seed = seed;
        b.p.delay_ms = 1;
        pr_sender s = {.total = 64 * 1024, .seed = seed * 13u};
        int fds_before = count_open_fds();
        pact_loop *loop = test_loop_new();
        pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
        int fa, fb;
        make_tcp_pair(&fa, &fb);
        b.p.loop = s.loop = loop;
        pact_transport *pa, *pb, *t;
        cr_assert_eq(pact_transport_open(loop, fa, PACT_STREAM_SOCKET, &br_proto,
                                         &b, &pa), 0);
        cr_assert_eq(pact_transport_open(loop, fb, PACT_STREAM_SOCKET,
                                         &sender_proto, &s, &pb), 0);
        cr_assert_eq(pact_tls_wrap(pa, cctx, "localhost", NULL, 0, 0, &br_proto,
                                   &b, pr_handshake, "client", &t), 0);
        cr_assert_eq(pact_tls_wrap(pb, sctx, NULL, NULL, 0, 0, &sender_proto, &s,
                                   pr_handshake, "server", &t), 0);
        pact_tls_context_free(sctx);
        pact_tls_context_free(cctx);
        RUN_UNTIL(loop, b.p.lost && s.lost, 20000);
        pact_loop_run(loop);
        test_loop_free(loop);
        cr_assert_eq(count_open_fds(), fds_before, "fd leak");
        char what[32];
        snprintf(what, sizeof what, "seed %u", seed);
        paused_expect_all(&b.p, &s, what);
    }
}

/* The plain transport fails under a paused reader (its write meets EPIPE
 * or ECONNRESET once the peer has gone): what was received before the
 * failure is delivered first, in order, honouring pause; then
 * connection_lost, once, last — clean if the peer's close_notify was
 * among it. Over a Unix socket pair, many seeds. */
typedef struct writing_reader {
    paused_reader p;
} writing_reader;

static void wr_data(pact_transport *t, const void *data, size_t len, void *user)
{
    writing_reader *w = user;
    pr_data(t, data, len, &w->p);
    /* Keeps writing: once the peer is gone, a write fails the plain
     * transport while ciphertext may still wait to be decrypted. */
    int r = pact_transport_write(t, "ack", 3);
    if (r != 0 && r != -EPIPE)
        pr_violation(&w->p, "write refused with an unexpected error");
}

static void wr_made(pact_transport *t, void *user)
{
    pr_made(t, &((writing_reader *)user)->p);
}

static int wr_eof(pact_transport *t, void *user)
{
    return pr_eof(t, &((writing_reader *)user)->p);
}

static void wr_lost(pact_transport *t, int err, void *user)
{
    pr_lost(t, err, &((writing_reader *)user)->p);
}

static const pact_protocol wr_proto = {
    .connection_made = wr_made,
    .data_received = wr_data,
    .eof_received = wr_eof,
    .connection_lost = wr_lost,
};

Test(tls, plain_failure_under_a_paused_reader_comes_after_the_data)
{
    signal(SIGPIPE, SIG_IGN);
    unsigned clean = 0;
    for (unsigned seed = 1; seed <= 30; seed++) {
        writing_reader w;
        memset(&w, 0, sizeof w);
        w.p.seed = seed;
        pr_sender s = {.total = PAUSED_TOTAL, .seed = seed * 101u};
        int fds_before = count_open_fds();
        pact_loop *loop = test_loop_new();
        pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
        int sv[2];
        make_socketpair(sv);
        w.p.loop = s.loop = loop;
        pact_transport *pa, *pb, *t;
        cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &wr_proto,
                                         &w, &pa), 0);
        cr_assert_eq(pact_transport_open(loop, sv[1], PACT_STREAM_SOCKET,
                                         &sender_proto, &s, &pb), 0);
        cr_assert_eq(pact_tls_wrap(pa, cctx, "localhost", NULL, 0, 0, &wr_proto,
                                   &w, pr_handshake, "client", &t), 0);
        cr_assert_eq(pact_tls_wrap(pb, sctx, NULL, NULL, 0, 0, &sender_proto, &s,
                                   pr_handshake, "server", &t), 0);
        pact_tls_context_free(sctx);
        pact_tls_context_free(cctx);
        RUN_UNTIL(loop, w.p.lost && s.lost, 20000);
        pact_loop_run(loop);
        test_loop_free(loop);
        cr_assert_eq(count_open_fds(), fds_before, "fd leak");
        cr_assert_eq(w.p.bad, 0, "seed %u: %s", seed, w.p.why);
        cr_assert_eq(w.p.mismatches, 0, "seed %u: bytes out of place", seed);
        cr_assert_leq(w.p.got, PAUSED_TOTAL);
        if (w.p.eofs) {
            cr_assert_eq(w.p.got, PAUSED_TOTAL, "seed %u: eof before the end", seed);
            cr_assert_eq(w.p.lost_err, 0, "seed %u: clean close reported as %s (%s)",
                         seed, pact_err_name(w.p.lost_err), w.p.errmsg);
            clean++;
        } else {
            cr_assert(w.p.lost_err == -EPIPE || w.p.lost_err == -ECONNRESET,
                      "seed %u: %s (%s)", seed, pact_err_name(w.p.lost_err),
                      w.p.errmsg);
        }
    }
    cr_log_info("%u of 30 seeds saw the whole stream and a clean close", clean);
}

/* A reader paused for good (it waits for something else, e.g. its own
 * writes to drain) while the peer goes away: its writes fail the plain
 * transport. Nothing waits to be delivered, so connection_lost comes at
 * once, with the error — it must not wait for a resume that never
 * comes. */
typedef struct stuck_reader {
    pact_loop *loop;
    pact_transport *t;
    pact_handle tick;
    int made, lost, lost_err, data, eofs, writes_failed;
} stuck_reader;

static void stuck_tick(pact_loop *loop, void *arg)
{
    stuck_reader *r = arg;
    r->tick = 0;
    if (!r->t)
        return;
    if (pact_transport_write(r->t, "x", 1) != 0)
        r->writes_failed++;
    r->tick = pact_call_later(loop, 2 * MS, stuck_tick, r);
}

static void stuck_made(pact_transport *t, void *user)
{
    stuck_reader *r = user;
    r->made = 1;
    r->t = t;
    cr_assert_eq(pact_transport_pause_reading(t), 0);
    r->tick = pact_call_later(r->loop, 2 * MS, stuck_tick, r);
}

static void stuck_data(pact_transport *t, const void *data, size_t len, void *user)
{
    (void)t;
    (void)data;
    (void)len;
    ((stuck_reader *)user)->data++;
}

static int stuck_eof(pact_transport *t, void *user)
{
    (void)t;
    ((stuck_reader *)user)->eofs++;
    return 0;
}

static void stuck_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    stuck_reader *r = user;
    r->lost++;
    r->lost_err = err;
    r->t = NULL;
    if (r->tick)
        pact_handle_cancel(r->loop, r->tick);
    r->tick = 0;
}

static const pact_protocol stuck_proto = {
    .connection_made = stuck_made,
    .data_received = stuck_data,
    .eof_received = stuck_eof,
    .connection_lost = stuck_lost,
};

Test(tls, plain_failure_under_a_reader_paused_for_good_is_reported)
{
    signal(SIGPIPE, SIG_IGN);
    int fds_before = count_open_fds();
    pact_loop *loop = test_loop_new();
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    int sv[2];
    make_socketpair(sv);
    stuck_reader r = {.loop = loop};
    /* Goes away right after the handshake (a close would wait for this
     * reader, which never reads its close_notify). */
    pr_sender s = {.loop = loop, .total = 0, .abort_when_done = 1};
    pact_transport *pa, *pb, *t;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &stuck_proto,
                                     &r, &pa), 0);
    cr_assert_eq(pact_transport_open(loop, sv[1], PACT_STREAM_SOCKET, &sender_proto,
                                     &s, &pb), 0);
    cr_assert_eq(pact_tls_wrap(pa, cctx, "localhost", NULL, 0, 0, &stuck_proto, &r,
                               pr_handshake, "client", &t), 0);
    cr_assert_eq(pact_tls_wrap(pb, sctx, NULL, NULL, 0, 0, &sender_proto, &s,
                               pr_handshake, "server", &t), 0);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    RUN_UNTIL(loop, s.lost, 10000);
    RUN_UNTIL(loop, r.lost, 5000);
    pact_loop_run(loop);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds_before, "fd leak");
    cr_assert_eq(r.made, 1);
    cr_assert_eq(r.lost, 1);
    cr_assert_eq(r.data + r.eofs, 0, "nothing delivered while paused");
    cr_assert(r.lost_err == -EPIPE || r.lost_err == -ECONNRESET, "%s",
              pact_err_name(r.lost_err));
}

/* A reader that pauses reading while its own writes are above the high
 * mark (race_proto's server does the same) when the peer goes away with
 * data still waiting: the write buffer went with the connection, so
 * resume_writing comes, the reader resumes, gets what was received, in
 * order, then connection_lost — never a hang waiting for each other. */
typedef struct flow_reader {
    paused_reader p;
    int wrote, write_paused;
} flow_reader;

static void fr_data(pact_transport *t, const void *data, size_t len, void *user)
{
    flow_reader *f = user;
    if (f->write_paused)
        pr_violation(&f->p, "data_received while paused (write side)");
    const uint8_t *b = data;
    for (size_t i = 0; i < len; i++)
        if (b[i] != test_pattern_byte(f->p.got + i))
            f->p.mismatches++;
    f->p.got += len;
    if (!f->wrote) {
        /* More than the peer reads before it closes: pause_writing. */
        static char big[1024 * 1024];
        f->wrote = 1;
        int r = pact_transport_write(t, big, sizeof big);
        if (r != 0)
            pr_violation(&f->p, "the big write was refused");
    }
}

static void fr_pause_writing(pact_transport *t, void *user)
{
    flow_reader *f = user;
    f->write_paused = 1;
    f->p.pauses++;
    if (pact_transport_pause_reading(t) != 0)
        pr_violation(&f->p, "pause_reading refused");
}

static void fr_resume_writing(pact_transport *t, void *user)
{
    flow_reader *f = user;
    f->write_paused = 0;
    if (pact_transport_resume_reading(t) != 0)
        pr_violation(&f->p, "resume_reading refused");
}

static void fr_made(pact_transport *t, void *user)
{
    pr_made(t, &((flow_reader *)user)->p);
}

static int fr_eof(pact_transport *t, void *user)
{
    return pr_eof(t, &((flow_reader *)user)->p);
}

static void fr_lost(pact_transport *t, int err, void *user)
{
    pr_lost(t, err, &((flow_reader *)user)->p);
}

static const pact_protocol fr_proto = {
    .connection_made = fr_made,
    .data_received = fr_data,
    .eof_received = fr_eof,
    .connection_lost = fr_lost,
    .pause_writing = fr_pause_writing,
    .resume_writing = fr_resume_writing,
};

Test(tls, reader_paused_until_its_writes_drain_hears_of_a_lost_peer)
{
    signal(SIGPIPE, SIG_IGN);
    for (unsigned seed = 1; seed <= 10; seed++) {
        flow_reader f;
        memset(&f, 0, sizeof f);
        pr_sender s = {.total = PAUSED_TOTAL, .seed = seed * 17u};
        int fds_before = count_open_fds();
        pact_loop *loop = test_loop_new();
        pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
        int sv[2];
        make_socketpair(sv);
        f.p.loop = s.loop = loop;
        pact_transport *pa, *pb, *t;
        cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &fr_proto,
                                         &f, &pa), 0);
        cr_assert_eq(pact_transport_open(loop, sv[1], PACT_STREAM_SOCKET,
                                         &sender_proto, &s, &pb), 0);
        cr_assert_eq(pact_tls_wrap(pa, cctx, "localhost", NULL, 0, 0, &fr_proto,
                                   &f, pr_handshake, "client", &t), 0);
        cr_assert_eq(pact_tls_wrap(pb, sctx, NULL, NULL, 0, 0, &sender_proto, &s,
                                   pr_handshake, "server", &t), 0);
        pact_tls_context_free(sctx);
        pact_tls_context_free(cctx);
        RUN_UNTIL(loop, s.lost, 10000);
        RUN_UNTIL(loop, f.p.lost, 5000);
        pact_loop_run(loop);
        test_loop_free(loop);
        cr_assert_eq(count_open_fds(), fds_before, "fd leak");
        cr_assert_eq(f.p.bad, 0, "seed %u: %s", seed, f.p.why);
        cr_assert_eq(f.p.mismatches, 0, "seed %u: bytes out of place", seed);
        cr_assert_gt(f.p.pauses, 0, "seed %u: the reader must pause", seed);
        if (f.p.eofs)
            cr_assert_eq(f.p.got, PAUSED_TOTAL, "seed %u", seed);
        else
            cr_assert_neq(f.p.lost_err, 0, "seed %u: an end without close_notify "
                          "is an error", seed);
    }
}

/* Closing waits for the peer to close too (so the peer's unread bytes
 * cannot make the kernel reset the connection), but no longer than the
 * shutdown timeout: here the peer never reads again. */
Test(tls, close_waits_for_the_peer_no_longer_than_the_shutdown_timeout)
{
    signal(SIGPIPE, SIG_IGN);
    int fds_before = count_open_fds();
    pact_loop *loop = test_loop_new();
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    cr_assert_eq(pact_tls_context_set_timeouts(cctx, 0, 300 * MS), 0);
    int sv[2];
    make_socketpair(sv);
    stuck_reader r = {.loop = loop}; /* pauses in connection_made, for good */
    pr_sender s = {.loop = loop, .total = 4096}; /* then closes */
    pact_transport *pa, *pb, *t;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &sender_proto,
                                     &s, &pa), 0);
    cr_assert_eq(pact_transport_open(loop, sv[1], PACT_STREAM_SOCKET, &stuck_proto,
                                     &r, &pb), 0);
    cr_assert_eq(pact_tls_wrap(pa, cctx, "localhost", NULL, 0, 0, &sender_proto, &s,
                               pr_handshake, "client", &t), 0);
    cr_assert_eq(pact_tls_wrap(pb, sctx, NULL, NULL, 0, 0, &stuck_proto, &r,
                               pr_handshake, "server", &t), 0);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    RUN_UNTIL(loop, s.made && r.made, 10000);
    uint64_t start = pact_now();
    RUN_UNTIL(loop, s.lost, 5000);
    uint64_t took = pact_now() - start;
    cr_assert_geq(took, 250 * MS, "closed after %llu ms: it did not wait",
                  (unsigned long long)(took / MS));
    cr_assert_eq(s.lost_err, 0, "%s", pact_err_name(s.lost_err));
    cr_assert_eq(r.lost, 0);
    cr_assert_eq(pact_transport_abort(r.t), 0);
    RUN_UNTIL(loop, r.lost, 5000);
    pact_loop_run(loop);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds_before, "fd leak");
}

/* The connection under an established TLS transport is gone (its write
 * met EPIPE) while the paused reader still has ciphertext to receive: the
 * transport stays open until that is handed over, and every call that
 * would send answers -EPIPE — write_eof as write does, not 0 as if a
 * close_notify could still go. */
typedef struct gone_writer {
    pact_loop *loop;
    pact_transport *t, *server;
    pact_handle tick;
    size_t got;
    int paused, write_err, write_eof_err, second_eof_err, lost, lost_err;
} gone_writer;

static void gw_tick(pact_loop *loop, void *arg)
{
    gone_writer *g = arg;
    g->tick = 0;
    if (g->lost)
        return;
    int r = pact_transport_write(g->t, "x", 1);
    if (r == -EPIPE && !pact_transport_is_closing(g->t)) {
        g->write_err = r;
        g->write_eof_err = pact_transport_write_eof(g->t);
        g->second_eof_err = pact_transport_write_eof(g->t);
        cr_assert_eq(pact_transport_resume_reading(g->t), 0);
        return;
    }
    g->tick = pact_call_later(loop, 1 * MS, gw_tick, g);
}

/* A buffered protocol with small buffers: what was decrypted but not
 * taken when it pauses stays with the TLS transport, on both engines. */
static void *gw_get_buffer(pact_transport *t, size_t hint, size_t *len, void *user)
{
    (void)t;
    (void)hint;
    (void)user;
    static char buf[1024];
    *len = sizeof buf;
    return buf;
}

static void gw_updated(pact_transport *t, size_t len, void *user)
{
    gone_writer *g = user;
    g->got += len;
    if (!g->paused) {
        /* Pause with the rest still to hand over, and take the peer away. */
        g->paused = 1;
        cr_assert_eq(pact_transport_pause_reading(t), 0);
        cr_assert_eq(pact_transport_abort(g->server), 0);
        g->tick = pact_call_later(g->loop, 1 * MS, gw_tick, g);
    }
}

static void gw_made(pact_transport *t, void *user)
{
    ((gone_writer *)user)->t = t;
}

static void gw_lost(pact_transport *t, int err, void *user)
{
    (void)t;
    gone_writer *g = user;
    g->lost++;
    g->lost_err = err;
    if (g->tick)
        pact_handle_cancel(g->loop, g->tick);
    g->tick = 0;
}

static const pact_protocol gw_proto = {
    .connection_made = gw_made,
    .get_buffer = gw_get_buffer,
    .buffer_updated = gw_updated,
    .connection_lost = gw_lost,
};

static void gw_server_made(pact_transport *t, void *user)
{
    (void)user;
    static char chunk[200 * 1024];
    memset(chunk, 'a', sizeof chunk);
    cr_assert_eq(pact_transport_write(t, chunk, sizeof chunk), 0);
}

static const pact_protocol gw_server_proto = {.connection_made = gw_server_made};

Test(tls, write_eof_after_the_connection_underneath_is_gone_is_epipe)
{
    signal(SIGPIPE, SIG_IGN);
    gone_writer g;
    memset(&g, 0, sizeof g);
    int fds_before = count_open_fds();
    pact_loop *loop = test_loop_new();
    g.loop = loop;
    pact_tls_context *sctx = server_ctx(), *cctx = client_ctx();
    int sv[2];
    make_socketpair(sv);
    pact_transport *pa, *pb, *t;
    cr_assert_eq(pact_transport_open(loop, sv[0], PACT_STREAM_SOCKET, &gw_proto, &g, &pa), 0);
    cr_assert_eq(pact_transport_open(loop, sv[1], PACT_STREAM_SOCKET, &gw_server_proto,
                                     NULL, &pb), 0);
    cr_assert_eq(pact_tls_wrap(pa, cctx, "localhost", NULL, 0, 0, &gw_proto, &g,
                               pr_handshake, "client", &t), 0);
    cr_assert_eq(pact_tls_wrap(pb, sctx, NULL, NULL, 0, 0, &gw_server_proto, NULL,
                               pr_handshake, "server", &g.server), 0);
    pact_tls_context_free(sctx);
    pact_tls_context_free(cctx);
    RUN_UNTIL(loop, g.lost, 20000);
    pact_loop_run(loop);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds_before, "fd leak");
    cr_assert_eq(g.write_err, -EPIPE, "the connection underneath went while paused (got %zu, lost %s)", g.got, pact_err_name(g.lost_err));
    cr_assert_eq(g.write_eof_err, -EPIPE, "write_eof answered %s",
                 pact_err_name(g.write_eof_err));
    cr_assert_eq(g.second_eof_err, -EPIPE, "still -EPIPE, not -EALREADY: nothing was done");
    cr_assert_eq(g.lost, 1);
    cr_assert_gt(g.got, 0);
}
