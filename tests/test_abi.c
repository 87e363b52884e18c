/* SPDX-License-Identifier: MIT */
/* What docs/abi.md promises: the version macros, the functions and
 * meson.build's project version agree; option structs carry their size
 * and the library reads only the fields the caller knows; pact_strerror()
 * gives the texts docs/errors.md lists. */
#include <stdio.h>
#include <string.h>

#include "helpers.h"

TestSuite(abi, .timeout = 30);

Test(abi, version_macros_functions_and_meson_agree)
{
    char text[32];
    snprintf(text, sizeof text, "%d.%d.%d", PACT_VERSION_MAJOR,
             PACT_VERSION_MINOR, PACT_VERSION_PATCH);
    cr_assert_str_eq(text, PACT_VERSION_STRING);
    cr_assert_str_eq(PACT_VERSION_STRING, PACT_MESON_VERSION);
    cr_assert_str_eq(pact_version_string(), PACT_MESON_VERSION);
    cr_assert_eq(pact_version(), (unsigned)PACT_VERSION);
    cr_assert_eq(PACT_VERSION, (PACT_VERSION_MAJOR << 16) |
                                   (PACT_VERSION_MINOR << 8) | PACT_VERSION_PATCH);
    cr_assert_eq(PACT_SOVERSION, PACT_MESON_SOVERSION);
}

#if PACT_VERSION < PACT_VERSION_NUMBER(0, 1, 0)
#error "PACT_VERSION must be usable in #if"
#endif

Test(abi, version_number_orders_like_the_version)
{
    cr_assert_lt(PACT_VERSION_NUMBER(0, 1, 9), PACT_VERSION_NUMBER(0, 2, 0));
    cr_assert_lt(PACT_VERSION_NUMBER(0, 255, 255), PACT_VERSION_NUMBER(1, 0, 0));
    cr_assert_geq(pact_version(), PACT_VERSION_NUMBER(0, 1, 0));
}

/* ---- option structs carry their size ------------------------------------ */

#include "options.h"

Test(abi, init_functions_and_macros_set_the_size_and_the_defaults)
{
    pact_loop_options lo;
    memset(&lo, 0xa5, sizeof lo);
    pact_loop_options_init(&lo);
    cr_assert_eq(lo.size, sizeof lo);
    cr_assert_eq(lo.engine, PACT_ENGINE_AUTO);
    cr_assert_eq(lo.debug, -1);

    pact_server_options so, so_macro = PACT_SERVER_OPTIONS_INIT;
    memset(&so, 0xa5, sizeof so);
    pact_server_options_init(&so);
    cr_assert_eq(so.size, sizeof so);
    cr_assert_eq(memcmp(&so, &so_macro, sizeof so), 0);

    pact_datagram_options dop, dop_macro = PACT_DATAGRAM_OPTIONS_INIT;
    memset(&dop, 0xa5, sizeof dop);
    pact_datagram_options_init(&dop);
    cr_assert_eq(dop.size, sizeof dop);
    cr_assert_eq(memcmp(&dop, &dop_macro, sizeof dop), 0);

    pact_process_options po, po_macro = PACT_PROCESS_OPTIONS_INIT;
    memset(&po, 0xa5, sizeof po);
    pact_process_options_init(&po);
    cr_assert_eq(po.size, sizeof po);
    cr_assert_eq(memcmp(&po, &po_macro, sizeof po), 0);
}

/* A struct as a future header might have it, and one as an older header
 * had it: the reader copies what the caller knows, defaults the rest. A
 * field is appended at the old sizeof, never in the old layout's tail
 * padding (docs/abi.md), hence the explicit filler. */
typedef struct {
    size_t size;
    int a;
    int unused; /* v1's tail padding, made explicit */
    int b;      /* appended later; default 7 */
} options_v2;
typedef struct {
    size_t size;
    int a;
} options_v1;
#define V1_END PACT__OPTIONS_END(options_v1, a)

Test(abi, an_older_caller_gets_the_defaults_of_the_fields_it_does_not_know)
{
    options_v1 theirs = {.size = sizeof theirs, .a = 3};
    options_v2 ours = {.size = sizeof ours, .a = 0, .b = 7};
    _Static_assert(offsetof(options_v2, b) >= sizeof(options_v1), "b is appended");
    cr_assert_eq(pact__options_read(&ours, sizeof ours, V1_END, &theirs), 0);
    cr_assert_eq(ours.a, 3);
    cr_assert_eq(ours.b, 7);
    cr_assert_eq(ours.size, sizeof ours);
    /* the first layout without its tail padding is enough */
    theirs.size = V1_END;
    ours.a = 0;
    cr_assert_eq(pact__options_read(&ours, sizeof ours, V1_END, &theirs), 0);
    cr_assert_eq(ours.a, 3);
    theirs.size = V1_END - 1;
    cr_assert_eq(pact__options_read(&ours, sizeof ours, V1_END, &theirs), -EINVAL);
}

Test(abi, a_newer_caller_is_accepted_while_its_new_fields_are_zero)
{
    options_v2 theirs = {.size = sizeof theirs, .a = 5, .b = 0};
    options_v1 ours = {.size = sizeof ours, .a = 1};
    cr_assert_eq(pact__options_read(&ours, sizeof ours, V1_END, &theirs), 0);
    cr_assert_eq(ours.a, 5);
    cr_assert_eq(ours.size, sizeof ours);
    theirs.b = 1;
    ours.a = 1;
    cr_assert_eq(pact__options_read(&ours, sizeof ours, V1_END, &theirs), -E2BIG);
    cr_assert_eq(ours.a, 1, "a refused struct changes nothing");
}

static int refuse_all(pact_server *server, void *factory_user,
                      const pact_protocol **proto, void **user)
{
    (void)server, (void)factory_user, (void)proto, (void)user;
    return -ECONNREFUSED;
}

static const pact_datagram_protocol no_datagram_callbacks = {0};
static const pact_subprocess_protocol no_process_callbacks = {0};

/* Each public function that takes an option struct: size 0 (never
 * initialised) is -EINVAL; a larger struct with a non-zero unknown field is
 * -E2BIG; with the unknown part zero it works. Nothing is left open. */
Test(abi, every_option_struct_is_checked_where_it_is_taken)
{
    int fds = count_open_fds();

    struct {
        pact_loop_options o;
        uint64_t future;
    } lo;
    pact_loop_options_init(&lo.o);
    pact_loop *loop = NULL;
    lo.o.size = 0;
    cr_assert_eq(pact_loop_create(&loop, &lo.o), -EINVAL);
    lo.o.size = sizeof lo;
    lo.future = 1;
    cr_assert_eq(pact_loop_create(&loop, &lo.o), -E2BIG);
    cr_assert_null(loop);
    lo.future = 0;
    cr_assert_eq(pact_loop_create(&loop, &lo.o), 0);
    pact_loop_free(loop);
    loop = test_loop_new();

    struct {
        pact_server_options o;
        uint64_t future;
    } so = {.o = PACT_SERVER_OPTIONS_INIT};
    pact_server *server = NULL;
    so.o.size = 0;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, &so.o, refuse_all, NULL, &server),
                 -EINVAL);
    so.o.size = sizeof so;
    so.future = 1;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, &so.o, refuse_all, NULL, &server),
                 -E2BIG);
    so.future = 0;
    cr_assert_eq(pact_server_listen_tcp(loop, "127.0.0.1", 0, &so.o, refuse_all, NULL, &server),
                 0);
    cr_assert_eq(pact_server_close(server), 0);

    struct {
        pact_datagram_options o;
        uint64_t future;
    } dop = {.o = PACT_DATAGRAM_OPTIONS_INIT};
    pact_datagram *ep = NULL;
    dop.o.size = 0;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, &dop.o,
                                        &no_datagram_callbacks, NULL, &ep),
                 -EINVAL);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    cr_assert_eq(pact_datagram_adopt(loop, sv[0], &dop.o, &no_datagram_callbacks, NULL, &ep),
                 -EINVAL, "adopt checks too (and closes the fd it owns)");
    close(sv[1]);
    dop.o.size = sizeof dop;
    dop.future = 1;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, &dop.o,
                                        &no_datagram_callbacks, NULL, &ep),
                 -E2BIG);
    dop.future = 0;
    dop.o.max_datagram = 1000;
    cr_assert_eq(pact_datagram_open_udp(loop, "127.0.0.1", 0, NULL, 0, &dop.o,
                                        &no_datagram_callbacks, NULL, &ep),
                 0);
    cr_assert_eq(pact_datagram_close(ep), 0);

    char *argv[] = {"/bin/true", NULL};
    struct {
        pact_process_options o;
        uint64_t future;
    } po = {.o = PACT_PROCESS_OPTIONS_INIT};
    po.o.argv = argv;
    pact_process *p = NULL;
    po.o.size = 0;
    cr_assert_eq(pact_process_spawn(loop, &po.o, &no_process_callbacks, NULL, &p), -EINVAL);
    po.o.size = sizeof po;
    po.future = 1;
    cr_assert_eq(pact_process_spawn(loop, &po.o, &no_process_callbacks, NULL, &p), -E2BIG);
    po.future = 0;
    cr_assert_eq(pact_process_spawn(loop, &po.o, &no_process_callbacks, NULL, &p), 0);

    cr_assert_eq(pact_loop_run(loop), 0);
    test_loop_free(loop);
    cr_assert_eq(count_open_fds(), fds);
}

/* ---- errors: pact's own meanings, as docs/errors.md lists them ---------- */

/* The errno value a name stands for, as pact_err_name() names it (ENOTSUP
 * is EOPNOTSUPP's other name on Linux). */
static int errno_named(const char *name)
{
    if (strcmp(name, "ENOTSUP") == 0)
        return ENOTSUP;
    for (int e = 1; e < 200; e++)
        if (strcmp(pact_err_name(-e), name) == 0)
            return e;
    return 0;
}

Test(errors, own_meanings_match_the_documentation)
{
    FILE *f = fopen(PACT_SOURCE_DIR "/docs/errors.md", "r");
    cr_assert_not_null(f, "docs/errors.md");
    char line[1024];
    int documented[200] = {0}, rows = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "| `-E", 5) != 0)
            continue;
        char name[32], text[512];
        /* | `-ENAME` | text | where |  */
        cr_assert_eq(sscanf(line, "| `-%31[A-Z0-9]` | %511[^|]|", name, text), 2, "%s", line);
        size_t n = strlen(text);
        while (n && text[n - 1] == ' ')
            text[--n] = '\0';
        int e = errno_named(name);
        cr_assert_gt(e, 0, "docs/errors.md names %s, which pact does not know", name);
        cr_assert_str_eq(pact_strerror(-e), text, "pact_strerror(-%s)", name);
        documented[e] = 1;
        rows++;
    }
    fclose(f);
    cr_assert_geq(rows, 9);
    /* Every value whose text is pact's own is in the table. */
    for (int e = 1; e < 200; e++) {
        if (strcmp(pact_err_name(-e), "UNKNOWN") == 0)
            continue;
        if (strcmp(pact_strerror(-e), strerrordesc_np(e)) != 0)
            cr_assert(documented[e], "pact_strerror(-%s) is pact's own text but "
                      "docs/errors.md does not list it", pact_err_name(-e));
    }
    cr_assert_str_eq(pact_strerror(-EKEYREJECTED), "TLS certificate verification failed");
    cr_assert_str_eq(pact_strerror(-ECONNREFUSED), "Connection refused");
}
