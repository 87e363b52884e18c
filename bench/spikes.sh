#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Latency spikes of the Python echo servers, not their throughput: each
# contender's echo server (as bench/python.sh starts it) under loadgen's
# ping-pong (PY_CONNS connections, one message each in flight), counting
# every message over 1 ms and over 10 ms, the longest one and the longest
# time in which no message of any connection completed (loadgen's spike
# counts), with the time the server was idle: the window less its CPU and
# its runnable-but-waiting time. The hypervisor's steal of its CPU counts
# in neither, so it is printed apart (a VM's CPU taken away looks like an
# idle server). A delayed wakeup (a completion that waits
# for an unrelated event or a timeout) shows as spikes and a gap with an
# idle server; a machine that took the CPU away shows as waiting time.
# Contenders run in rounds, each once per round in turn, so that the
# machine's own stalls fall on all alike. With TRACE=1 the kernel's view
# too, which the machine's load does not fake: perf records the server's
# sleeps and wakeups and every TCP segment with data for TRACE_SECS in
# the middle of each run, and bench/missed_wakeups.py counts the wakeups
# that came late after a request and the sleeps taken with a request in
# hand, and of those the ones the loop would owe (*_other: not woken in
# the call that delivered the request, whose CPU the machine stalled).
# perf and root needed; the trace costs the run some throughput. A run
# whose trace lost events (trace_lost > 0) counts wrong: discard it.
# TRACE=2 also records the server's system calls and io_uring's
# tracepoints, and keeps the text of each traced run that had a late
# wakeup or a request held over 1 ms as OUT_DIR/trace-WHO-ROUND.txt, to read what the
# server did around it.
#
#   bench/spikes.sh BUILD_DIR OUT_DIR     writes OUT_DIR/spikes.csv and, per
#                                         run, OUT_DIR/spikes-WHO-ROUND.log
#                                         (every message over 1 ms)
# Environment: ROUNDS=6 SECS=10 WARM=0.5 SIZE=1024 PY_CONNS=4
#   MODE=proto|streams|sock  SRV_CPU=0 CLI_CPU=1 (the same: shared)
#   WHO="c-floor uvloop pact-uring pact-epoll"  TRACE=0 TRACE_SECS=3
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh" # PYTHON, start_echo, listening, stop, kv_get, echo_mode_flags, trace_middle
BUILD=${1:?build dir}
OUT=${2:?results dir}
B=$BUILD/bench
ROUNDS=${ROUNDS:-6} SECS=${SECS:-10} WARM=${WARM:-0.5} SIZE=${SIZE:-1024}
PY_CONNS=${PY_CONNS:-4} MODE=${MODE:-proto}
SRV_CPU=${SRV_CPU:-0} CLI_CPU=${CLI_CPU:-1}
WHO=${WHO:-c-floor uvloop pact-uring pact-epoll}
TRACE=${TRACE:-0} TRACE_SECS=${TRACE_SECS:-3}
echo_mode_flags "$MODE"
trap stop EXIT
PORT=$((19100 + RANDOM % 400))

mkdir -p "$OUT"
csv=$OUT/spikes.csv
echo "round,contender,reqs,req_s,p50_us,p99_us,lat_max_us,over_1ms,over_10ms,gap_max_us,window_s,server_cpu_s,server_wait_s,server_idle_s,load_wait_s,server_steal_s,load_steal_s,load1,trace_lost,traced_requests,server_sleeps,wake_p99_us,wake_max_us,late_wakeups,late_other,held_sleeps,held_max_us,held_other" > "$csv"
for round in $(seq 1 "$ROUNDS"); do
    for who in $WHO; do
        PORT=$((PORT + 1))
        start_echo "$who" $PORT "$BUILD/python"
        if ! listening $PORT $SRV; then
            echo "spikes: $who did not start" >&2; stop; continue
        fi
        taskset -c "$CLI_CPU" "$B/loadgen" --port $PORT --conns "$PY_CONNS" --size "$SIZE" \
            --duration "$SECS" --warmup "$WARM" --server-pid $SRV \
            --spike-log "$OUT/spikes-$who-$round.log" > "$OUT/.loadgen" 2>&1 &
        LG_PID=$!
        wk=
        if [ "$TRACE" != 0 ]; then
            more=()
            [ "$TRACE" = 2 ] && more=(-e 'io_uring:*'
                -e raw_syscalls:sys_enter --filter "common_pid == $SRV"
                -e raw_syscalls:sys_exit --filter "common_pid == $SRV")
            trace_middle "$OUT/.trace.txt" \
                -e sched:sched_switch --filter "prev_pid == $SRV || next_pid == $SRV" \
                -e sched:sched_wakeup --filter "pid == $SRV" "${more[@]}"
            wk=$($PYTHON "$HERE/missed_wakeups.py" --pid $SRV --port $PORT --pingpong --list \
                 < "$OUT/.trace.txt" 2> "$OUT/wakeups-$who-$round.log")
            if [ "$TRACE" = 2 ] && [[ ! " $wk " =~ " late=0 " || ! " $wk " =~ " held_1ms=0 " ]]; then
                mv "$OUT/.trace.txt" "$OUT/trace-$who-$round.txt"
            fi
        fi
        wait $LG_PID || echo "spikes: $who: $(cat "$OUT/.loadgen")" >&2
        out=$(cat "$OUT/.loadgen")
        stop
        rm -f "$OUT/.loadgen" "$OUT/.trace.data" "$OUT/.trace.data.old" "$OUT/.trace.txt"
        g() { kv_get "$out" "$1"; }
        idle=$(awk -v w="$(g secs)" -v c="$(g server_cpu_s)" -v q="$(g server_wait_s)" \
               'BEGIN { printf "%.3f", w - c - q }')
        load=$(cut -d' ' -f1 /proc/loadavg)
        w() { kv_get "$wk" "$1"; }
        echo "$round,$who,$(g reqs),$(g req_s),$(g p50_us),$(g p99_us),$(g lat_max_us),$(g over_1ms),$(g over_10ms),$(g gap_max_us),$(g secs),$(g server_cpu_s),$(g server_wait_s),$idle,$(g load_wait_s),$(g server_steal_s),$(g load_steal_s),$load,$(w lost),$(w requests),$(w sleeps),$(w wake_p99_us),$(w wake_max_us),$(w late),$(w late_other),$(w held),$(w held_max_us),$(w held_other)" >> "$csv"
        printf 'round %s %-10s req/s=%-6s p99=%-7s max=%-8s >1ms=%-5s >10ms=%-4s gap=%-8s idle=%ss wait=%s/%ss steal=%s/%ss (load %s)\n' \
            "$round" "$who" "$(g req_s)" "$(g p99_us)" "$(g lat_max_us)" "$(g over_1ms)" \
            "$(g over_10ms)" "$(g gap_max_us)" "$idle" "$(g server_wait_s)" "$(g load_wait_s)" "$(g server_steal_s)" "$(g load_steal_s)" "$load"
        [ -z "$wk" ] || printf '         traced: %s\n' "$wk"
    done
done
