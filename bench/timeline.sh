#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The timeline of each request of a Python echo server under loadgen's
# ping-pong, from the kernel's side: perf records, for TRACE_SECS in the
# middle of a run, every TCP segment with data to or from the server's
# port (tcp:tcp_probe: when request bytes reach the server's socket and
# when reply bytes reach the client's), the server thread's system calls
# (raw_syscalls, with their returns), its sleeps and wakeups (sched) and
# io_uring's tracepoints, and bench/timeline.py folds that into numbers
# per request: system calls, reads and their sizes, sends, sleeps, sleeps
# taken with request bytes already in the socket, and the time from the
# request's last byte to the server's first read of it, to its first
# reply byte and to its last; and for the server and loadgen alike the
# time on a CPU, asleep and runnable but waiting for one, per request.
# Every task switch on the server's CPU is recorded too, so the server's
# runnable time is split by what that CPU ran meanwhile (its idle task,
# kernel threads, other tasks; timeline.py --srv-cpu).
# Load-independent counts (per request) and kernel timestamps; the times
# still stretch under load, so compare loops traced in the same rounds
# (contenders alternate per round).
# The trace costs the server time (every system call is an event): the
# req/s of a traced run are not the bench's.
#
#   bench/timeline.sh BUILD_DIR OUT_DIR   writes OUT_DIR/timeline.csv and
#                                         OUT_DIR/trace-WHO-ROUND.txt
#                                         (KEEP=0: not kept)
# Environment: ROUNDS=1 SECS=4 WARM=0.5 SIZE=102400 PY_CONNS=4
#   MODE=streams|proto|sock SRV_CPU=0 CLI_CPU=1 TRACE_SECS=1
#   WHO="uvloop pact-uring pact-epoll" KEEP=1
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh" # PYTHON, start_echo, listening, stop, kv_get, echo_mode_flags, trace_middle
BUILD=${1:?build dir}
OUT=${2:?results dir}
B=$BUILD/bench
ROUNDS=${ROUNDS:-1} SECS=${SECS:-4} WARM=${WARM:-0.5} SIZE=${SIZE:-102400}
PY_CONNS=${PY_CONNS:-4} MODE=${MODE:-streams} KEEP=${KEEP:-1}
SRV_CPU=${SRV_CPU:-0} CLI_CPU=${CLI_CPU:-1} TRACE_SECS=${TRACE_SECS:-1}
WHO=${WHO:-uvloop pact-uring pact-epoll}
echo_mode_flags "$MODE"
trap stop EXIT
PORT=$((19500 + RANDOM % 400))

mkdir -p "$OUT"
csv=$OUT/timeline.csv
[ -f "$csv" ] || echo "round,contender,loadgen_req_s,$($PYTHON "$HERE/timeline.py" --header)" > "$csv"
for round in $(seq 1 "$ROUNDS"); do
    for who in $WHO; do
        PORT=$((PORT + 1))
        start_echo "$who" $PORT "$BUILD/python"
        if ! listening $PORT $SRV; then
            echo "timeline: $who did not start" >&2; stop; continue
        fi
        taskset -c "$CLI_CPU" "$B/loadgen" --port $PORT --conns "$PY_CONNS" --size "$SIZE" \
            --duration "$SECS" --warmup "$WARM" --server-pid $SRV > "$OUT/.loadgen" 2>&1 &
        LG_PID=$!
        txt=$OUT/trace-$who-$round.txt
        trace_middle "$txt" \
            -e sched:sched_switch --filter "prev_pid == $SRV || next_pid == $SRV || prev_pid == $LG_PID || next_pid == $LG_PID || CPU == $SRV_CPU" \
            -e sched:sched_wakeup --filter "pid == $SRV || pid == $LG_PID" \
            -e 'io_uring:*' \
            -e raw_syscalls:sys_enter --filter "common_pid == $SRV" \
            -e raw_syscalls:sys_exit --filter "common_pid == $SRV"
        row=$($PYTHON "$HERE/timeline.py" --pid $SRV --client-pid $LG_PID --srv-cpu "$SRV_CPU" --port $PORT --size "$SIZE" --csv < "$txt")
        wait $LG_PID || echo "timeline: $who: $(cat "$OUT/.loadgen")" >&2
        out=$(cat "$OUT/.loadgen")
        stop
        rm -f "$OUT/.loadgen" "$OUT/.trace.data" "$OUT/.trace.data.old"
        [ "$KEEP" = 0 ] && rm -f "$txt"
        echo "$round,$who,$(kv_get "$out" req_s),$row" >> "$csv"
        echo "round $round $who: $row"
    done
done
