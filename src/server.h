/* SPDX-License-Identifier: MIT */
/* Servers (server.c): what the TLS helpers ask of one. */
#ifndef PACT_SERVER_H
#define PACT_SERVER_H

#include "pact.h"

/* The server's factory_user if its factory is `factory`, else NULL: how
 * tls.c finds its own state behind a pact_server it made. */
void *pact__server_factory_user(const pact_server *s,
                                pact_protocol_factory_cb factory);

#endif
