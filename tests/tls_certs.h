/* SPDX-License-Identifier: MIT */
/* The certificates the TLS tests run with (test_tls, test_tls_thread,
 * test_leaks): a test CA and a certificate it signed for localhost and
 * 127.0.0.1 (P-256, two days, usable by a server and by a client), made
 * by the openssl command in a fresh directory under /tmp. */
#ifndef PACT_TEST_TLS_CERTS_H
#define PACT_TEST_TLS_CERTS_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct tls_certs {
    char dir[64];
    char ca_pem[128];  /* the CA's certificate: what a client trusts */
    char srv_pem[128]; /* the certificate it signed, and its key */
    char srv_key[128];
} tls_certs;

/* Makes them in a new directory /tmp/NAME.XXXXXX; fails the test if
 * openssl cannot. */
static inline void tls_certs_make(tls_certs *c, const char *name)
{
    snprintf(c->dir, sizeof c->dir, "/tmp/%s.XXXXXX", name);
    cr_assert_not_null(mkdtemp(c->dir));
    snprintf(c->ca_pem, sizeof c->ca_pem, "%s/ca.pem", c->dir);
    snprintf(c->srv_pem, sizeof c->srv_pem, "%s/server.pem", c->dir);
    snprintf(c->srv_key, sizeof c->srv_key, "%s/server.key", c->dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s; "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
             "-nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=pact-test-ca "
             "-addext basicConstraints=critical,CA:TRUE "
             "-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null; "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null; "
             "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n"
             "basicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth,clientAuth\\n' "
             "> ext.cnf; "
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
             "-CAcreateserial -out server.pem -days 2 -extfile ext.cnf 2>/dev/null",
             c->dir);
    cr_assert_eq(system(cmd), 0, "making certificates with openssl failed");
}

/* Removes their directory: 0, or -1 (with a message) if rm failed. */
static inline int tls_certs_remove(const tls_certs *c)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", c->dir);
    if (system(cmd) == 0)
        return 0;
    fprintf(stderr, "could not remove %s\n", c->dir);
    return -1;
}

#endif
