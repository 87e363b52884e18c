# SPDX-License-Identifier: MIT
# What the bench scripts that start a server and load it share, sourced
# by bench/python.sh, spikes.sh, timeline.sh, run.sh and (through
# counts_common.sh) c_counts.sh and python_counts.sh: the server under
# measurement (start, wait until it listens, stop), its CPU time, the
# key=value lines of the load generators, and the perf trace of a window
# in the middle of a run. One place each, so that a fix to one (a port
# taken by another run, a thread that ended within the window) reaches
# every script.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) # the checkout
PYTHON=/usr/bin/python3 # Debian's, the one pact.asyncio is built for
# uvloop's own echo servers (its examples/bench/echoserver.py)
ECHO=$ROOT/python/bench/echo_server.py

# One value of a key=value line (loadgen's output, missed_wakeups.py's).
kv_get() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

# listening PORT PID: waits (at most 60 s) until process PID listens on
# PORT (not any process: another run may have taken the port); fails if
# PID ends first
listening() {
    for _ in $(seq 600); do
        ss -Hltnp "sport = :$1" | grep -q "pid=$2," && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# The server under measurement: SRV, its pid (set by the caller's start).
SRV=
stop() { kill -KILL $SRV 2>/dev/null || true; wait $SRV 2>/dev/null || true; SRV=; }

# python/bench/echo_server.py's flags for an echo MODE (uvloop's
# echoserver.py: protocol, streams, sock_recv/sock_sendall), in $flags.
echo_mode_flags() {
    case $1 in proto) flags=--proto ;; streams) flags=--streams ;; sock) flags= ;;
        *) echo "$0: MODE: proto, streams or sock" >&2; exit 2 ;; esac
}

# start_echo WHO PORT PYTHON_DIR: the echo server of contender WHO on
# SRV_CPU, SRV its pid: c-floor is pact's C transport echo server
# (pact_stream_echo on io_uring, from $B), any other a loop of
# echo_server.py (--loop WHO) in the mode of $flags (echo_mode_flags),
# with pact.asyncio from PYTHON_DIR. Does not wait for it (listening).
start_echo() {
    if [ "$1" = c-floor ]; then
        taskset -c "$SRV_CPU" "$B/pact_stream_echo" "$2" --engine uring 2>/dev/null &
    else
        # shellcheck disable=SC2086 # $flags: none or one flag
        PYTHONPATH=$3 taskset -c "$SRV_CPU" $PYTHON "$ECHO" --loop "$1" \
            -- $flags --addr 127.0.0.1:"$2" 2>/dev/null &
    fi
    SRV=$!
}

# A server's CPU time in seconds, as loadgen reads it: the nanoseconds
# every thread has run (/proc/PID/task/*/schedstat), summed
# (server_cpu_s PID); and its utime+stime (/proc/PID/stat), which counts
# threads that have ended too but only in clock ticks (10 ms, a tenth of a
# 1.5 s run's CPU at 2 % steps) (server_cpu_ticks_s PID).
CLK_TCK=$(getconf CLK_TCK)
server_cpu_s() {
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.6f", s / 1e9 }'
}
server_cpu_ticks_s() {
    awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz }' "/proc/$1/stat"
}
# cpu_delta NS0 NS1 TICKS0 TICKS1: the schedstat difference, unless the
# ticks show more than 2 ticks beyond it (a thread ended in the window)
cpu_delta() {
    awk -v a="$1" -v b="$2" -v c="$3" -v d="$4" \
        'BEGIN { ns = b - a; t = d - c; printf "%.4f", (t - ns > 0.02 || b == 0) ? t : ns }'
}

# trace_middle TXT PERF_EVENTS...: for TRACE_SECS in the middle of the
# load that has just started (WARM + SECS), perf records every TCP
# segment with data to or from PORT and PERF_EVENTS (perf record's -e and
# --filter arguments), with OUT/.trace.data as its buffer; TXT gets
# perf script's text of it.
trace_middle() {
    local txt=$1; shift
    sleep "$(awk -v w="$WARM" -v s="$SECS" -v t="$TRACE_SECS" 'BEGIN { d = w + (s - t) / 2; print (d > 0 ? d : 0) }')"
    perf record -q -a -m 16M -o "$OUT/.trace.data" \
        -e tcp:tcp_probe --filter "data_len > 0 && (sport == $PORT || dport == $PORT)" \
        "$@" -- sleep "$TRACE_SECS" 2>/dev/null
    perf script --show-lost-events -F comm,tid,cpu,time,event,trace -i "$OUT/.trace.data" \
        > "$txt" 2>/dev/null
}
