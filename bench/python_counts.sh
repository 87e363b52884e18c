#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Counts per request of the aiohttp hello-world server
# (python/bench/aiohttp_hello.py) under wrk, per loop: what does not depend
# on how loaded the machine is, where the req/s of bench/python.sh on a
# 2-CPU machine shared with others moves by ±20 % from run to run.
#
#   bench/python_counts.sh BUILD_DIR      (BUILD_DIR/python holds pact.asyncio)
# Environment: LOOPS="uvloop pact-uring pact-epoll"  CONNS=50 (wrk -c)
#   SECS=5 (measured window, after a 2 s warm-up)  CALLGRIND=1 (0: skip it)
#
# For each loop, two runs of the server on CPU 0 with wrk on CPU 1:
# - perf stat on the server, software tracepoints: system calls, io_uring
#   submissions and completions, context switches, and the wake-ups the
#   server makes (sched_wakeup: mostly of wrk, when a reply finds it
#   asleep; replies sent in one burst wake it less) per request (per
#   request wrk counted in the window);
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
CONNS=${CONNS:-50} SECS=${SECS:-5} CALLGRIND=${CALLGRIND:-1}
PYTHON=/usr/bin/python3
HELLO=$ROOT/python/bench/aiohttp_hello.py
TMP=$(mktemp -d)
SRV=
cleanup() { [ -n "$SRV" ] && kill -KILL "$SRV" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
for tool in wrk perf; do
    command -v $tool >/dev/null || { echo "python_counts: no $tool" >&2; exit 2; }
done
[ "$CALLGRIND" = 0 ] || command -v valgrind >/dev/null ||
    { echo "python_counts: no valgrind (CALLGRIND=0 skips it)" >&2; exit 2; }

port=$((21000 + RANDOM % 4000))
# start LOOP [wrapper...]: the server on CPU 0, SRV its pid, once listening
start() {
    local loop=$1; shift
    port=$((port + 1))
    PYTHONPATH=$BUILD/python taskset -c 0 "$@" $PYTHON "$HELLO" --loop "$loop" \
        --port $port 2>"$TMP/server.log" &
    SRV=$!
    for _ in $(seq 600); do
        ss -Hltn "sport = :$port" | grep -q . && return 0
        kill -0 $SRV 2>/dev/null || break
        sleep 0.1
    done
    echo "python_counts: $loop did not start: $(tail -3 "$TMP/server.log")" >&2
    return 1
}
stop() { kill -KILL $SRV 2>/dev/null || true; wait $SRV 2>/dev/null || true; SRV=; }
load() { taskset -c 1 wrk -t1 -c"$CONNS" -d"$1"s http://127.0.0.1:$port/ 2>&1; }
requests() { sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$1"; }

events=syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_pwait2,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_getpid,io_uring:io_uring_submit_req,io_uring:io_uring_complete,context-switches,sched:sched_wakeup
echo "python_counts: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), wrk -c$CONNS ${SECS}s, $(uptime)"
for loop in $LOOPS; do
    start "$loop" || continue
    load 2 >/dev/null
    perf stat -x, -e "$events" -p $SRV -o "$TMP/stat" &
    perf_pid=$!
    sleep 0.3
    out=$(load "$SECS")
    kill -INT $perf_pid; wait $perf_pid || true
    stop
    reqs=$(requests "$out")
    echo "$loop: $reqs requests"
    awk -F, -v r="$reqs" '$1 ~ /^[0-9]+$/ && $1 > 0 { sub(/^syscalls:sys_enter_/, "", $3);
        printf "  %-30s %7.3f per request\n", $3, $1 / r }' "$TMP/stat"
    [ "$CALLGRIND" = 0 ] && continue
    start "$loop" valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" || continue
    load 5 >/dev/null
    callgrind_control -z $SRV >/dev/null 2>&1
    out=$(load $((2 * SECS)))
    callgrind_control -d $SRV >/dev/null 2>&1
    vpid=$SRV
    stop
    reqs=$(requests "$out")
    ir=$(sed -n 's/^summary: *//p' "$TMP/cg.$vpid.1" 2>/dev/null || true)
    if [ -n "$ir" ] && [ "${reqs:-0}" -gt 0 ]; then
        echo "  user-space instructions        $((ir / reqs)) per request (callgrind, $reqs requests)"
    else
        echo "  callgrind: no dump" >&2
    fi
done
