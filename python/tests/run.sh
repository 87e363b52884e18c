#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Python tests of pact.asyncio on both engines: our own unittest suites
# (python/tests/test_*.py; test_aiohttp, test_websockets, test_httpx_anyio
# and test_pytest_asyncio run those Debian packages unchanged on pact, over
# loopback), then CPython's asyncio suites with pact as the loop
# (python/tests/cpython_suites.py: SUITES there lists every loop-dependent
# module and says why the others are left out; skips in
# python/tests/cpython-skips.txt with reasons).
#
#   python/tests/run.sh [build-dir]      default: build
#   ENGINES="uring epoll"                which engines
#   CPYTHON_SUITES="test_tasks ..."      which CPython suites (default: all)
#   CPYTHON_WITHOUT="test_ssl ..."       all CPython suites but these modules
#
# A build made with -Db_sanitize=address,undefined (make test-python-asan)
# runs under AddressSanitizer, UndefinedBehaviorSanitizer and
# LeakSanitizer: Debian's interpreter is not instrumented, so the
# sanitizer runtimes are preloaded into it; PYTHONMALLOC=malloc makes every
# Python object a malloc block the sanitizers see; the leak check runs
# before the interpreter finalizes (python/tests/lsan_run.py says why).
# Any sanitizer report fails the run.
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
ENGINES=${ENGINES:-"uring epoll"}
CPYTHON_SUITES=${CPYTHON_SUITES:-}
CPYTHON_WITHOUT=${CPYTHON_WITHOUT:-}
PYTHON=/usr/bin/python3

if ! ls "$build"/python/pact/_pact*.so >/dev/null 2>&1; then
    echo "no $build/python/pact/_pact*.so: configure with -Dpython=enabled (needs python3-dev) and build"
    exit 2
fi
if [ ! -d /usr/lib/python3.11/test/test_asyncio ]; then
    echo "no /usr/lib/python3.11/test/test_asyncio: install libpython3.11-testsuite (make deps)"
    exit 2
fi
export PYTHONPATH=$PWD/$build/python
so=$(ls "$build"/python/pact/_pact*.so | head -1)
asan_lib=$(ldd "$so" | awk '/libasan/ {print $3}')
own=(-m unittest) cpython=(python/tests/cpython_suites.py)
own_timeout=600 cpython_timeout=1200
if [ -n "$asan_lib" ]; then
    ubsan_lib=$(ldd "$so" | awk '/libubsan/ {print $3}')
    export LD_PRELOAD="$asan_lib${ubsan_lib:+ $ubsan_lib}"
    export PYTHONMALLOC=malloc
    export ASAN_OPTIONS=detect_leaks=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    own=(python/tests/lsan_run.py unittest)
    cpython=(python/tests/lsan_run.py cpython_suites)
    own_timeout=1800 cpython_timeout=3600
    echo "sanitized build: $LD_PRELOAD preloaded, PYTHONMALLOC=malloc"
fi
sanitizer_report='ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:'
failed=0 ran=0 rm_logs=()
trap 'rm -f "${rm_logs[@]}"' EXIT
for engine in $ENGINES; do
    if [ "$engine" = uring ] && ! "$build/tests/engine-probe" uring >/dev/null 2>&1; then
        echo "SKIP python/uring: $("$build/tests/engine-probe" uring 2>&1)"
        continue
    fi
    log=$(mktemp /tmp/pact-python-$engine.XXXXXX)
    rm_logs+=("$log" "$log.cpython")
    echo "== pact.asyncio tests on $engine"
    # Not -X dev: it turns asyncio's debug mode on for every loop, and the
    # fast paths (no debug) are the ones to test; debug tests set it.
    if PACT_ENGINE=$engine timeout $own_timeout $PYTHON -W default "${own[@]}" \
            discover -s python/tests -t python/tests >"$log" 2>&1 &&
            ! grep -qE "$sanitizer_report" "$log"; then
        tail -3 "$log" | grep -E "^Ran"
    else
        cat "$log"; failed=1
    fi
    echo "== CPython asyncio suites on $engine"
    if ! PACT_ENGINE=$engine timeout $cpython_timeout $PYTHON "${cpython[@]}" \
            -v --without "${CPYTHON_WITHOUT// /,}" $CPYTHON_SUITES \
            2>"$log.cpython" ||
            grep -qE "$sanitizer_report" "$log.cpython"; then
        grep -E -A30 "$sanitizer_report" "$log.cpython" | head -100
        tail -50 "$log.cpython"; failed=1
    fi
    ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "no engine ran"; exit 1; }
if [ "$failed" = 0 ]; then echo "python tests: passed"; else echo "python tests: FAILED"; fi
exit $failed
