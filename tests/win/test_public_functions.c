/* SPDX-License-Identifier: MIT */
/* Every function of pact.h is in the Windows library: what Windows does
 * not implement answers -ENOTSUP (stubs generated from pact.h), so a
 * portable program links and learns at run time what is missing. */
#include "helpers.h"

typedef void (*any_function)(void);

/* public_functions.h is generated from pact.h: one entry per function. */
#define PACT_PUBLIC_FUNCTION(name) {#name, (any_function)name},
static const struct {
    const char *name;
    any_function address;
} public_functions[] = {
#include "public_functions.h"
};
#undef PACT_PUBLIC_FUNCTION

Test(public_functions, every_function_of_pact_h_links_on_windows)
{
    size_t n = sizeof public_functions / sizeof public_functions[0];
    /* pact.h has far more than a handful: a list that came out nearly
     * empty would prove nothing. */
    cr_assert_gt(n, 150, "only %u functions listed", (unsigned)n);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(public_functions[i].address, "%s",
                           public_functions[i].name);
}

static void on_signal(pact_loop *loop, int signo, void *user)
{
    (void)loop, (void)signo, (void)user;
}

Test(public_functions, linux_only_functions_answer_enotsup_and_clear_out)
{
    pact_loop *loop = test_loop_new();

    cr_assert_eq(pact_signal_add(loop, 15, on_signal, NULL), -ENOTSUP);

    pact_process_options po = {0};
    pact_tty *tty = (pact_tty *)&po;
    cr_assert_eq(pact_tty_open(loop, 0, NULL, NULL, &tty), -ENOTSUP);
    cr_assert_null(tty);

    pact_server *server = (pact_server *)&po;
    cr_assert_eq(pact_server_listen_unix(loop, "pact-unix", NULL, NULL, NULL,
                                         &server), -ENOTSUP);
    cr_assert_null(server);

    pact_tls_context *ctx = (pact_tls_context *)&po;
    cr_assert_eq(pact_tls_context_create(PACT_TLS_CLIENT, &ctx), -ENOTSUP);
    cr_assert_null(ctx);
    cr_assert_null(pact_op_take_addrinfo(loop, 1));

    /* Nothing was started: the loop closes with nothing in flight. */
    test_loop_free(loop);
}
