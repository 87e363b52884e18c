/* SPDX-License-Identifier: MIT */
/* Says whether a loop can run on the given engine ("uring" or "epoll");
 * the test runner skips an engine this machine cannot run. */
#include <pact.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    pact_loop_options o;
    pact_loop_options_init(&o);
    o.engine = argc > 1 && strcmp(argv[1], "epoll") == 0 ? PACT_ENGINE_EPOLL
                                                         : PACT_ENGINE_URING;
    pact_loop *loop;
    int r = pact_loop_create(&loop, &o);
    if (r < 0) {
        fprintf(stderr, "cannot create a loop: %s\n", pact_strerror(r));
        return 1;
    }
    printf("%s\n", pact_loop_engine_name(loop));
    pact_loop_free(loop);
    return 0;
}
