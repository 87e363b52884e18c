#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Counts per request of a Python server under load, per loop: what does not
# depend on how loaded the machine is, where the req/s of bench/python.sh
# on a 2-CPU machine shared with others moves by ±20 % from run to run.
# The server is the aiohttp hello-world (python/bench/aiohttp_hello.py)
# under wrk, or one of uvloop's echo servers (python/bench/echo_server.py,
# as bench/python.sh runs them) under bench/loadgen.
#
#   bench/python_counts.sh BUILD_DIR      (BUILD_DIR/python holds pact.asyncio;
#                                          BUILD_DIR/bench/loadgen for the echo)
# Environment: LOOPS="uvloop pact-uring pact-epoll"
#   BENCH=aiohttp | proto | streams | sock (echo servers)  SIZE=1024 (echo)
#   CONNS=50 for aiohttp (wrk -c), 4 for the echo (loadgen --conns)
#   SECS=5 (measured window, after a 2 s warm-up)  CALLGRIND=1 (0: skip it)
#   CACHESIM=1: callgrind also simulates the caches (--cache-sim=yes) and
#     D1 misses per request are printed (reads + writes), as c_counts.sh
#   CG_KEEP=DIR: each loop's callgrind dump is kept as
#     DIR/LOOP.BENCH-SIZE-cCONNS.callgrind, for a comparison by function:
#     callgrind_annotate --inclusive=no --auto=no FILE, each function's
#     count divided by the requests printed with it
#
# For each loop, two runs of the server on CPU 0 with the load on CPU 1:
# - perf stat on the server, the software tracepoints of counts_common.sh:
#   system calls, io_uring submissions, completions, task-work runs and
#   waits that slept, context switches, and the wake-ups the server makes
#   (sched_waking: mostly of the client, when a reply finds it asleep;
#   replies sent in one burst wake it less) per request (per request the
#   load generator counted in the window);
# - the server under valgrind's callgrind, counters zeroed after a 5 s
#   warm-up and dumped after a window of 2 x SECS: user-space instructions
#   per request (the kernel's work is not in them; the system calls above
#   are). From run to run they vary by about 1 %. valgrind makes the
#   server ~50x slower, so every wait finds many requests there: read it at
#   CONNS=1 too, where every request costs its own iterations.
set -euo pipefail
BUILD=$(cd "${1:?build dir}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LOOPS=${LOOPS:-"uvloop pact-uring pact-epoll"}
BENCH=${BENCH:-aiohttp} SIZE=${SIZE:-1024}
case $BENCH in
    aiohttp) CONNS=${CONNS:-50} ;;
    proto | streams | sock) CONNS=${CONNS:-4} ;;
    *) echo "python_counts: BENCH is aiohttp, proto, streams or sock" >&2; exit 2 ;;
esac
SECS=${SECS:-5} CALLGRIND=${CALLGRIND:-1} CACHESIM=${CACHESIM:-0} CG_KEEP=${CG_KEEP:-}
[ -z "$CG_KEEP" ] || mkdir -p "$CG_KEEP"
. "$HERE/counts_common.sh" # PERF_COUNT_EVENTS, perf_per_request, PYTHON, ECHO, listening, perf_attached, SRV, stop, callgrind_window
HELLO=$ROOT/python/bench/aiohttp_hello.py
LOADGEN=$BUILD/bench/loadgen
TMP=$(mktemp -d)
cleanup() { [ -n "$SRV" ] && kill -KILL "$SRV" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
for tool in perf $([ "$BENCH" = aiohttp ] && echo wrk); do
    command -v $tool >/dev/null || { echo "python_counts: no $tool" >&2; exit 2; }
done
[ "$BENCH" = aiohttp ] || [ -x "$LOADGEN" ] ||
    { echo "python_counts: no $LOADGEN (meson configure -Dbench=true)" >&2; exit 2; }
[ "$CALLGRIND" = 0 ] || command -v valgrind >/dev/null ||
    { echo "python_counts: no valgrind (CALLGRIND=0 skips it)" >&2; exit 2; }

port=$((21000 + RANDOM % 2500)) # below c_counts.sh's ports
# start LOOP [wrapper...]: the server on CPU 0, SRV its pid, once listening
start() {
    local loop=$1; shift
    port=$((port + 1))
    if [ "$BENCH" = aiohttp ]; then
        PYTHONPATH=$BUILD/python taskset -c 0 "$@" $PYTHON "$HELLO" --loop "$loop" \
            --port $port 2>"$TMP/server.log" &
    else
        local flags
        echo_mode_flags "$BENCH"
        PYTHONPATH=$BUILD/python taskset -c 0 "$@" $PYTHON "$ECHO" --loop "$loop" \
            -- $flags --addr 127.0.0.1:$port 2>"$TMP/server.log" &
    fi
    SRV=$!
    listening $port $SRV && return 0
    echo "python_counts: $loop did not start: $(tail -3 "$TMP/server.log")" >&2
    return 1
}
# load SECONDS: the load on CPU 1; requests OUTPUT: how many it counted
if [ "$BENCH" = aiohttp ]; then
    load() { taskset -c 1 wrk -t1 -c"$CONNS" -d"$1"s http://127.0.0.1:$port/ 2>&1; }
    requests() { sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$1"; }
    what="wrk -c$CONNS"
else
    load() { taskset -c 1 "$LOADGEN" --port $port --conns "$CONNS" --size "$SIZE" \
                 --duration "$1" --warmup 0 2>&1; }
    requests() { tr ' ' '\n' <<<"$1" | sed -n 's/^reqs=//p'; }
    what="$BENCH echo $SIZE B, loadgen --conns $CONNS"
fi

echo "python_counts: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $what ${SECS}s, $(uptime)"
for loop in $LOOPS; do
    start "$loop" || continue
    load 2 >/dev/null
    perf stat -x, -e "$PERF_COUNT_EVENTS" -p $SRV -o "$TMP/stat" &
    perf_pid=$!
    perf_attached $perf_pid
    out=$(load "$SECS")
    kill -INT $perf_pid; wait $perf_pid || true
    stop
    reqs=$(requests "$out")
    echo "$loop: $reqs requests"
    perf_per_request "$TMP/stat" "$reqs"
    [ "$CALLGRIND" = 0 ] && continue
    sim=()
    [ "$CACHESIM" = 1 ] && sim=(--cache-sim=yes)
    start "$loop" valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$TMP/cg.%p" || continue
    callgrind_window load 5 $((2 * SECS))
    reqs=$(requests "$CG_LOAD")
    if [ -n "$CG_IR" ] && [ "${reqs:-0}" -gt 0 ]; then
        echo "  user-space instructions        $((CG_IR / reqs)) per request (callgrind, $reqs requests)"
        [ -n "$CG_D1" ] &&
            echo "  D1 misses (callgrind)          $(awk "BEGIN { printf \"%.1f\", $CG_D1 / $reqs }") per request"
        if [ -n "$CG_KEEP" ]; then
            kept=$CG_KEEP/$loop.$BENCH-$SIZE-c$CONNS.callgrind
            callgrind_keep "$kept" && echo "  callgrind dump                 $kept ($reqs requests)"
        fi
        rm -f "$TMP"/cg.*
    else
        echo "  callgrind: no dump" >&2
    fi
done
