#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Windows suites: cross-builds pact with mingw-w64 into build-win/
# (cross/mingw-w64.ini, no TLS) and runs every tests/win suite under
# wine64, each test in its own process with its timeout (the mini
# Criterion's Windows runner), in a throwaway Wine prefix inside the build
# tree, with one wineserver kept up for the whole run. Prints the closing
# line of tests/run-all.sh: "tests: N passed, N failed, N skipped".
#
#   BUILD=build-win          the cross build tree
#   TESTS="test_iocp"        which suites (default: all)
set -uo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build-win}
wine=${WINE:-/usr/lib/wine/wine64}
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" --cross-file cross/mingw-w64.ini -Dtls=disabled \
        -Dpython=disabled -Dtests=disabled >/dev/null || exit 2
fi
ninja -C "$build" >/dev/null || { ninja -C "$build"; exit 2; }

export WINEPREFIX="$PWD/$build/wineprefix" WINEDEBUG=-all
# No Mono or Gecko installer prompts in a fresh prefix.
export WINEDLLOVERRIDES="mscoree,mshtml="
wineserver=$(dirname "$wine")/wineserver
[ -x "$wineserver" ] || wineserver=wineserver
# One wineserver for the run (every test process connects to it), and
# the prefix made once; both are torn down at the end.
mkdir -p "$WINEPREFIX"
"$wineserver" -p 60
trap '"$wineserver" -k 2>/dev/null' EXIT
if ! timeout 300 "$wine" wineboot -i >/dev/null 2>&1; then
    echo "wineboot failed: cannot run the Windows suites"; exit 2
fi

passed=0 failed=0 skipped=0 failures=()
log_dir=$(mktemp -d /tmp/pact-wine-tests.XXXXXX)
for exe in "$build"/tests/win/test_*.exe; do
    [ -f "$exe" ] || continue
    name=$(basename "$exe" .exe)
    if [ -n "${TESTS:-}" ] && ! grep -qw "$name" <<<"$TESTS"; then continue; fi
    log="$log_dir/$name.log"
    timeout 600 "$wine" "$exe" >"$log" 2>&1
    rc=$?
    synth=$(grep -a "Synthesis:" "$log" | tail -1)
    t=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$synth")
    p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$synth")
    t=${t:-0} p=${p:-0}
    f=$((t - p))
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
    if [ "$t" = 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f))
    printf '%-11s %-12s %-24s %3d passed %3d failed\n' "$build" iocp "$name" "$p" "$f"
    if [ "$f" != 0 ]; then
        failures+=("$log")
        grep -a -E "\[----\]|\[FAIL\]" "$log" | head -40
    fi
done

if [ ${#failures[@]} -gt 0 ]; then
    echo "failing logs:"; printf '  %s\n' "${failures[@]}"
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
