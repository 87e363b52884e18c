#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Windows suites: cross-builds pact with mingw-w64 into build-win/
# (cross/mingw-w64.ini, no TLS) and runs every tests/win suite under
# wine64, each test in its own process with its timeout (the mini
# Criterion's Windows runner), in a throwaway Wine prefix inside the build
# tree, with one wineserver kept up for the whole run. Prints the closing
# line of tests/run-all.sh: "tests: N passed, N failed, N skipped".
# Then a child start that Wine loses (tests/win/lose_start.c) is made
# again by the process suite's spawn, and the test passes.
# Then examples/win/echo-server.exe serves the Linux examples/echo-client
# (build/, made here if needed) over loopback, every echoed byte checked,
# with small messages on many connections and large ones on a few; and
# the Windows build of examples/echo-client.c drives the Linux
# examples/echo-server the same way; and the Windows build of
# examples/run.c runs a child with its output through pipes.
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
# One run per build tree at a time: a second run's ninja would relink
# child.exe under the first run's tests (their spawns then fail with
# ENOEXEC: not a program while it is written) and its closing wineserver
# -k would end the first run's processes. The second waits.
exec 9<"$build"
flock 9
ninja -C "$build" >/dev/null || { ninja -C "$build"; exit 2; }

# Wine's messages off, but for its virtual memory errors: the one a child
# start Wine loses leaves ("failed to map the shared user data",
# docs/windows.md), which names the loss in the suite's log.
export WINEPREFIX="$PWD/$build/wineprefix" WINEDEBUG=-all,err+virtual
# No Mono or Gecko installer prompts in a fresh prefix.
export WINEDLLOVERRIDES="mscoree,mshtml="
wineserver=$(dirname "$wine")/wineserver
[ -x "$wineserver" ] || wineserver=wineserver
# One wineserver for the run (every test process connects to it), and
# the prefix made once; both are torn down at the end. Nothing Wine starts
# gets the lock's fd 9 (9<&-): the wineserver and the services wineboot
# starts outlive a run that is killed before its trap, and holding the
# lock they would make the next run wait on flock for good.
mkdir -p "$WINEPREFIX"
"$wineserver" -p 60 9<&-
trap '"$wineserver" -k 2>/dev/null' EXIT
if ! timeout 300 "$wine" wineboot -i >/dev/null 2>&1 9<&-; then
    echo "wineboot failed: cannot run the Windows suites"; exit 2
fi

passed=0 failed=0 skipped=0 failures=()
log_dir=$(mktemp -d /tmp/pact-wine-tests.XXXXXX)
for exe in "$build"/tests/win/test_*.exe; do
    [ -f "$exe" ] || continue
    name=$(basename "$exe" .exe)
    if [ -n "${TESTS:-}" ] && ! grep -qw "$name" <<<"$TESTS"; then continue; fi
    log="$log_dir/$name.log"
    timeout 600 "$wine" "$exe" >"$log" 2>&1 9<&-
    rc=$?
    # The runner's first line is "[====] Running": a log without it is a
    # program Wine lost before its main() ran (seen once, an empty log at
    # load average 10+; Wine's CreateProcess fails the same way now and
    # then, see tests/mini). No test ran, so the suite runs once more, and
    # the log says so.
    if ! grep -qa '^\[====\] Running' "$log"; then
        echo "$name: exit $rc before its first line ($(wc -c <"$log") bytes of output); running it again"
        sed 's/^/    /' "$log"
        mv "$log" "$log.lost"
        timeout 600 "$wine" "$exe" >"$log" 2>&1 9<&-
        rc=$?
    fi
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
        # A failure always shows something: its assertion and [FAIL] lines,
        # else the end of its output, else that there was none; and how the
        # program ended (124: the timeout; 128+N: a Unix signal N).
        echo "    exit code $rc"
        if grep -qa -E "\[----\]|\[FAIL\]" "$log"; then
            grep -a -E "\[----\]|\[FAIL\]" "$log" | head -40
        elif [ -s "$log" ]; then
            tail -20 "$log" | sed 's/^/    /'
        else
            echo "    (no output at all)"
        fi
    fi
done

# A child Wine loses before it runs, as it now and then does when the new
# process cannot map its shared user data (docs/windows.md):
# tests/win/lose_start.c, preloaded into one test's Wine
# processes, ends the child's first start before it reaches the
# wineserver. pact's spawn answers -EAGAIN (src/win/process.c), the
# suite's spawn starts the child again (tests/process_recorder.h), and
# the test passes with the lost start in its log.
if [ -z "${TESTS:-}" ] || grep -qw lost-start <<<"$TESTS"; then
    log="$log_dir/lost-start.log"
    ok=0
    if ${CC:-cc} -shared -fPIC -o "$log_dir/lose_start.so" tests/win/lose_start.c >"$log" 2>&1; then
        : >"$log_dir/lose_start.mark"
        PACT_LOSE_START="$log_dir/lose_start.mark" LD_PRELOAD="$log_dir/lose_start.so" \
            timeout 120 "$wine" "$build/tests/win/test_process.exe" \
            --filter 'process/ntstatus_exit_code' >>"$log" 2>&1 9<&- && ok=1
        grep -q '^lose_start: ending pid' "$log" || ok=0
        grep -q 'resource temporarily unavailable (try 1)' "$log" || ok=0
        grep -q 'Passing: 1 ' "$log" || ok=0
    fi
    if [ "$ok" = 1 ]; then p=1 f=0; else p=0 f=1; failures+=("$log"); cat "$log"; fi
    passed=$((passed + p)); failed=$((failed + f))
    printf '%-11s %-12s %-24s %3d passed %3d failed\n' "$build" iocp "lost child start" "$p" "$f"
fi

# The Windows echo server under Wine, the Linux load generator on the host.
client=build/examples/echo-client
if [ -z "${TESTS:-}" ] || grep -qw echo-server <<<"$TESTS"; then
    if [ ! -x "$client" ] && [ -f build/build.ninja ]; then
        ninja -C build examples/echo-client >/dev/null
    fi
    if [ ! -x "$client" ]; then
        echo "SKIP echo-server: no Linux $client (configure build/ first)"
        skipped=$((skipped + 1))
    else
        for load in "--connections 50 --size 64" "--connections 8 --size 262144"; do
            log="$log_dir/echo-server-${load// /_}.log"
            "$wine" "$build/examples/win/echo-server.exe" --port 0 --seconds 8 >"$log" 2>&1 9<&- &
            server=$!
            port=""
            for _ in $(seq 100); do
                port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log")
                [ -n "$port" ] && break
                sleep 0.1
            done
            ok=0
            if [ -n "$port" ] && timeout 60 "$client" --port "$port" $load --seconds 2 >"$log.client" 2>&1; then
                ok=1
            fi
            timeout 60 tail --pid="$server" -f /dev/null; wait "$server" || ok=0
            grep -q "closed after" "$log" || ok=0
            grep -q ' [1-9][0-9]* requests in' "$log.client" || ok=0
            sed 's/^/    /' "$log.client"
            if [ "$ok" = 1 ]; then p=1 f=0; else p=0 f=1; failures+=("$log"); cat "$log"; fi
            passed=$((passed + p)); failed=$((failed + f))
            printf '%-11s %-12s %-24s %3d passed %3d failed\n' "$build" iocp "echo-server ${load##*--size }B" "$p" "$f"
        done
    fi
fi

# The other way round: the Windows build of examples/echo-client.c under
# Wine against the Linux examples/echo-server on the host, every echoed
# byte checked by the client (its exit status).
linux_server=build/examples/echo-server
if [ -z "${TESTS:-}" ] || grep -qw echo-client <<<"$TESTS"; then
    if [ ! -x "$linux_server" ] && [ -f build/build.ninja ]; then
        ninja -C build examples/echo-server >/dev/null
    fi
    if [ ! -x "$linux_server" ]; then
        echo "SKIP echo-client.exe: no Linux $linux_server (configure build/ first)"
        skipped=$((skipped + 1))
    else
        log="$log_dir/echo-client-exe.log"
        "$linux_server" --port 0 >"$log.server" 2>&1 &
        server=$!
        port=""
        for _ in $(seq 100); do
            port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log.server")
            [ -n "$port" ] && break
            sleep 0.1
        done
        ok=0
        if [ -n "$port" ] && timeout 120 "$wine" "$build/examples/win/echo-client.exe" \
                --port "$port" --connections 20 --size 4096 --seconds 2 >"$log" 2>&1; then
            ok=1
        fi
        kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null
        grep -q ' [1-9][0-9]* requests in' "$log" || ok=0
        grep -q ' 0 byte(s) wrong' "$log" || ok=0
        sed 's/^/    /' "$log"
        if [ "$ok" = 1 ]; then p=1 f=0; else p=0 f=1; failures+=("$log"); cat "$log.server"; fi
        passed=$((passed + p)); failed=$((failed + f))
        printf '%-11s %-12s %-24s %3d passed %3d failed\n' "$build" iocp "echo-client.exe 4096B" "$p" "$f"
    fi
fi

# examples/run.c built for Windows: runs tests/win/child.exe with its
# stdin inherited and stdout/stderr through pipe transports, and exits
# with its code.
if [ -z "${TESTS:-}" ] || grep -qw run.exe <<<"$TESTS"; then
    log="$log_dir/run-exe.log"
    echo hello | timeout 60 "$wine" "$build/examples/win/run.exe" \
        "$build/tests/win/child.exe" chat 3 >"$log" 2>"$log.err"
    rc=$?
    ok=1
    [ "$rc" = 3 ] || ok=0
    grep -qx 'out:hello' "$log" || ok=0
    grep -qx 'err:hello' "$log.err" || ok=0
    if [ "$ok" = 1 ]; then p=1 f=0; else p=0 f=1; failures+=("$log"); echo "    exit $rc"; cat "$log" "$log.err"; fi
    passed=$((passed + p)); failed=$((failed + f))
    printf '%-11s %-12s %-24s %3d passed %3d failed\n' "$build" iocp "run.exe child.exe" "$p" "$f"
fi

if [ ${#failures[@]} -gt 0 ]; then
    echo "failing logs:"; printf '  %s\n' "${failures[@]}"
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
