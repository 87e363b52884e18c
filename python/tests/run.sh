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
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
ENGINES=${ENGINES:-"uring epoll"}
CPYTHON_SUITES=${CPYTHON_SUITES:-}
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
    if PACT_ENGINE=$engine timeout 600 $PYTHON -W default -m unittest discover \
            -s python/tests -t python/tests >"$log" 2>&1; then
        tail -3 "$log" | grep -E "^Ran"
    else
        cat "$log"; failed=1
    fi
    echo "== CPython asyncio suites on $engine"
    if ! PACT_ENGINE=$engine timeout 1200 $PYTHON python/tests/cpython_suites.py \
            -v $CPYTHON_SUITES 2>"$log.cpython"; then
        tail -50 "$log.cpython"; failed=1
    fi
    ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "no engine ran"; exit 1; }
if [ "$failed" = 0 ]; then echo "python tests: passed"; else echo "python tests: FAILED"; fi
exit $failed
