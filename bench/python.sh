#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Python part of `make bench` (called by bench/run.sh; runnable alone):
# uvloop 0.17, asyncio's default loop and pact.asyncio on io_uring and on
# epoll, on the echo servers uvloop itself ships (python3-uvloop's
# examples/bench/echoserver.py: protocol, streams, sock_recv/sock_sendall)
# at 1, 10 and 100 KiB, with pact's C transport echo server (pact_stream_echo on
# io_uring) in the same run as the floor, then a UDP echo ping-pong
# (python/bench/udp_echo.py: create_datagram_endpoint, 64 B datagrams, a
# blocking client with one in flight), then an aiohttp hello-world under
# wrk. Both placements; repetitions interleaved (every contender once per
# scenario, then the next repetition), `uptime` recorded with each run.
#
#   bench/python.sh BUILD_DIR OUT_DIR        writes OUT_DIR/python.csv
# Environment (run.sh sets them): REPS SECS WARM SRV_CPU CLI_CPU
#   PY_SIZES="1024 10240 102400"  PY_MODES="proto streams sock" (none: no
#   TCP echo)  PY_LOOPS="uvloop asyncio pact-uring pact-epoll"
#   PY_CONNS=4 (uvloop's vmbench concurrency)  PY_HTTP_CONNS=50
#   PY_UDP=1 (0: no UDP echo)
#   BENCH_BASELINE=DIR  a second build directory (say, main before a change,
#                    built in another worktree): its pact.asyncio runs as
#                    pact-uring@base and pact-epoll@base in the same
#                    interleaved repetitions, for before/after numbers
# A list knob left unset takes the default above; set, it must name what
# to run (an empty value is refused, as is a name the suite does not know,
# instead of running the default or nothing without a word).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh" # ROOT, PYTHON, ECHO, start_echo, listening, SRV, stop, kv_get, server_cpu_s...
BUILD=${1:?build dir}
OUT=${2:?results dir}
B=$BUILD/bench
REPS=${REPS:-5} SECS=${SECS:-1.5} WARM=${WARM:-0.5}
SRV_CPU=${SRV_CPU:-0} CLI_CPU=${CLI_CPU:-1}
# list_knob NAME DEFAULT ITEM_REGEX HINT: sets NAME to DEFAULT if it is
# unset; exits with a message if it is set but names nothing, or names an
# item that does not match ITEM_REGEX (a whole-word extended regex).
list_knob() {
    local name=$1 default=$2 item_re=$3 hint=$4 value item items
    if [ -z "${!name+set}" ]; then
        printf -v "$name" '%s' "$default"
        return
    fi
    value=${!name}
    if [ -z "${value//[[:space:]]/}" ]; then
        echo "bench/python.sh: $name is set but empty: unset it for the default (\"$default\"), or $hint" >&2
        exit 2
    fi
    read -ra items <<<"$value"
    for item in "${items[@]}"; do
        if ! [[ $item =~ ^($item_re)$ ]]; then
            echo "bench/python.sh: $name: unknown \"$item\" (expected: $hint)" >&2
            exit 2
        fi
    done
}
list_knob PY_MODES "proto streams sock" 'proto|streams|sock|none' \
    'some of: proto streams sock, or none for no TCP echo'
list_knob PY_SIZES "1024 10240 102400" '[1-9][0-9]*' \
    'message sizes in bytes (PY_MODES=none: no TCP echo)'
list_knob PY_LOOPS "uvloop asyncio pact-uring pact-epoll" \
    'uvloop|asyncio|pact-uring|pact-epoll' \
    'some of: uvloop asyncio pact-uring pact-epoll'
if [[ " $PY_MODES " == *[[:space:]]none[[:space:]]* ]]; then
    read -ra modes <<<"$PY_MODES"
    if [ ${#modes[@]} != 1 ]; then
        echo "bench/python.sh: PY_MODES: none (no TCP echo) goes alone" >&2
        exit 2
    fi
    PY_MODES=""
fi
PY_CONNS=${PY_CONNS:-4}
PY_HTTP_CONNS=${PY_HTTP_CONNS:-50}
PY_UDP=${PY_UDP:-1}
HELLO=$ROOT/python/bench/aiohttp_hello.py
UDP_ECHO=$ROOT/python/bench/udp_echo.py
# wrk takes whole seconds
WRK_SECS=$(awk -v s="$SECS" 'BEGIN{ n = int(s + 0.5); print (n < 1 ? 1 : n) }')

have_uvloop=1
$PYTHON -c 'import uvloop' 2>/dev/null || { have_uvloop=0; echo "python bench: no uvloop (apt install python3-uvloop)" >&2; }
have_aiohttp=1
$PYTHON -c 'import aiohttp' 2>/dev/null || { have_aiohttp=0; echo "python bench: no aiohttp" >&2; }
have_wrk=1
command -v wrk >/dev/null || { have_wrk=0; echo "python bench: no wrk" >&2; }
[ -f /usr/share/doc/python3-uvloop/examples/bench/echoserver.py ] || { echo "python bench: uvloop's echoserver.py missing" >&2; exit 1; }
LOOPS=()
for l in $PY_LOOPS; do
    [ $l = uvloop ] && [ $have_uvloop = 0 ] && continue
    LOOPS+=("$l")
done
BASELINE=${BENCH_BASELINE:-}
if [ -n "$BASELINE" ]; then
    if ls "$BASELINE"/python/pact/_pact*.so >/dev/null 2>&1; then
        for l in $PY_LOOPS; do
            case $l in pact-*) LOOPS+=("$l@base") ;; esac
        done
    else
        echo "python bench: no pact.asyncio in $BASELINE/python: no baseline" >&2
    fi
fi
# pypath CONTENDER: the PYTHONPATH its pact.asyncio comes from
pypath() { case $1 in *@base) echo "$BASELINE/python" ;; *) echo "$BUILD/python" ;; esac; }

PORT=12000
next_port() { PORT=$(( PORT >= 19000 ? 12000 : PORT + 1 )); }
trap stop EXIT
# The aiohttp server's CPU time is read as loadgen reads the echo
# servers' (and bench/run.sh the C HTTP servers'): common.sh's
# server_cpu_s, server_cpu_ticks_s and cpu_delta.
load1() { cut -d' ' -f1 /proc/loadavg; }

mkdir -p "$OUT"
# Its own description: the suite may run apart from the C suites' meta.txt.
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "pact: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    [ -n "$BASELINE" ] && echo "baseline (NAME@base): $(git -C "$BASELINE/.." rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "python: $($PYTHON -c 'import sys; print(sys.version.split()[0])'); uvloop: $($PYTHON -c 'import uvloop; print(uvloop.__version__)' 2>/dev/null || echo none); aiohttp: $($PYTHON -c 'import aiohttp; print(aiohttp.__version__)' 2>/dev/null || echo none)"
    echo "reps=$REPS measured=${SECS}s warmup=${WARM}s; split = server on CPU $SRV_CPU, load on CPU $CLI_CPU; shared = both on CPU $SRV_CPU"
    echo "uptime at start: $(uptime)"
} > "$OUT/python-meta.txt"
csv=$OUT/python.csv
# window_s: the measured window loadgen timed (SECS, unless the load
# generator itself was kept off the CPU across its end or its start);
# server_wait_s, load_wait_s: the time the server's threads and the load
# generator spent runnable but not running within it (schedstat). A run
# with few requests and an idle server is a starved one when these grow
# by about the gap, and a server that did not answer when they do not;
# server_steal_s, load_steal_s: the hypervisor's steal time of their CPUs
# within it (a VM's CPU taken away: neither running nor waiting);
# lat_max_us, over_1ms: the longest message and the messages over 1 ms
# (bench/spikes.sh looks at these closer); load_cpu_s: the load
# generator's own CPU time in the window (near window_s in split: the
# load, not the server, sets req/s, as at 100 KiB; bench/README.md "One
# request's timeline"); server_runs: the times the server's threads were
# put on a CPU within it (each wakeup from a sleep, each preemption; its
# runnable time comes in these: bench/README.md "Where a runnable server
# waits").
echo "bench,mode,size,placement,contender,rep,req_s,mib_s,p50_us,p99_us,server_cpu_s,cpu_us_per_req,load1,window_s,server_wait_s,load_wait_s,server_steal_s,load_steal_s,lat_max_us,over_1ms,load_cpu_s,server_runs" > "$csv"

# start_echo_listening CONTENDER MODE: the echo server on the next port,
# SRV its pid, once it listens
start_echo_listening() {
    local who=$1 flags # echo_mode_flags sets it, start_echo reads it
    next_port
    echo_mode_flags "$2"
    start_echo "${who%@base}" $PORT "$(pypath "$who")"
    listening $PORT $SRV
}

echo_row() { # mode size placement who rep out
    local out=$6 reqs cpu per sched=
    reqs=$(kv_get "$out" reqs); cpu=$(kv_get "$out" server_cpu_s)
    per=$(awk -v c="$cpu" -v r="$reqs" 'BEGIN{ if (r > 0 && c != "") printf "%.2f", c * 1e6 / r }')
    echo "echo,$1,$2,$3,$4,$5,$(kv_get "$out" req_s),$(kv_get "$out" mib_s),$(kv_get "$out" p50_us),$(kv_get "$out" p99_us),$cpu,$per,$(load1),$(kv_get "$out" secs),$(kv_get "$out" server_wait_s),$(kv_get "$out" load_wait_s),$(kv_get "$out" server_steal_s),$(kv_get "$out" load_steal_s),$(kv_get "$out" lat_max_us),$(kv_get "$out" over_1ms),$(kv_get "$out" load_cpu_s),$(kv_get "$out" server_runs)" >> "$csv"
    [ -n "$(kv_get "$out" secs)" ] &&
        sched=" window=$(kv_get "$out" secs)s runnable-waiting server/load=$(kv_get "$out" server_wait_s)/$(kv_get "$out" load_wait_s)s load cpu=$(kv_get "$out" load_cpu_s)s server runs=$(kv_get "$out" server_runs) steal=$(kv_get "$out" server_steal_s)/$(kv_get "$out" load_steal_s)s"
    printf '  echo %-7s %6s %-6s %-10s req/s=%-7s cpu/req=%s us%s  (load %s)\n' "$1" "$2" "$3" "$4" \
        "$(kv_get "$out" req_s)" "$per" "$sched" "$(load1)"
}

http_row() { # placement who rep req_s cpu reqs p50 p99
    local per
    per=$(awk -v c="$5" -v r="$6" 'BEGIN{ if (r > 0) printf "%.2f", c * 1e6 / r }')
    echo "aiohttp,hello,0,$1,$2,$3,$4,,$7,$8,$5,$per,$(load1),,,,,,,,," >> "$csv"
    printf '  aiohttp hello  %-6s %-10s req/s=%-7s cpu/req=%s us  (load %s)\n' "$1" "$2" "$4" "$per" "$(load1)"
}

# wrk's "50%  1.23ms" -> microseconds
wrk_lat_us() { awk -v p="$2" '$1 == p { v = $2; m = 1;
        if (v ~ /us$/) { m = 1 } else if (v ~ /ms$/) { m = 1000 } else if (v ~ /s$/) { m = 1000000 }
        sub(/[a-z]+$/, "", v); printf "%.1f", v * m }' <<<"$1"; }

for rep in $(seq 1 "$REPS"); do
    echo "python bench rep $rep/$REPS: $(uptime)"
    for mode in $PY_MODES; do
        for size in $PY_SIZES; do
            for placement in split shared; do
                ccpu=$CLI_CPU
                [ $placement = shared ] && ccpu=$SRV_CPU
                for who in c-floor "${LOOPS[@]}"; do
                    # The floor is the same C server for every mode: run it once.
                    [ $who = c-floor ] && [ $mode != proto ] && continue
                    if ! start_echo_listening "$who" "$mode"; then
                        echo "python bench: $who $mode did not start" >&2; stop; continue
                    fi
                    out=$(taskset -c "$ccpu" "$B/loadgen" --port $PORT --conns "$PY_CONNS" --size "$size" \
                          --duration "$SECS" --warmup "$WARM" --server-pid $SRV 2>&1) || {
                        echo "python bench: FAILED $mode $size $placement $who: $out" >&2; out=""; }
                    stop
                    echo_row $mode $size $placement $who $rep "$out"
                done
            done
        done
    done
    # UDP echo: the server says "ready" on stderr once bound.
    for placement in split shared; do
        [ "$PY_UDP" = 1 ] || break
        ccpu=$CLI_CPU
        [ $placement = shared ] && ccpu=$SRV_CPU
        for who in "${LOOPS[@]}"; do
            next_port
            ready=$OUT/.udp-ready
            : > "$ready"
            PYTHONPATH=$(pypath "$who") taskset -c "$SRV_CPU" $PYTHON "$UDP_ECHO" server \
                --loop "${who%@base}" --port $PORT 2>"$ready" &
            SRV=$!
            for _ in $(seq 200); do grep -q ready "$ready" && break; sleep 0.025; done
            if ! grep -q ready "$ready"; then
                echo "python bench: UDP echo on $who did not start" >&2; stop; continue
            fi
            out=$(taskset -c "$ccpu" $PYTHON "$UDP_ECHO" client --port $PORT --server-pid $SRV \
                  --size 64 --duration "$SECS" --warmup "$WARM" 2>&1) || {
                echo "python bench: FAILED udp $placement $who: $out" >&2; out=""; }
            stop
            echo_row udp 64 $placement $who $rep "$out"
        done
    done
    rm -f "$OUT/.udp-ready"
    [ $have_aiohttp = 1 ] && [ $have_wrk = 1 ] || continue
    for placement in split shared; do
        ccpu=$CLI_CPU
        [ $placement = shared ] && ccpu=$SRV_CPU
        for who in "${LOOPS[@]}"; do
            next_port
            PYTHONPATH=$(pypath "$who") taskset -c "$SRV_CPU" $PYTHON "$HELLO" --loop "${who%@base}" \
                --port $PORT 2>/dev/null &
            SRV=$!
            if ! listening $PORT $SRV; then
                echo "python bench: aiohttp on $who did not start" >&2; stop; continue
            fi
            taskset -c "$ccpu" wrk -t1 -c"$PY_HTTP_CONNS" -d1s http://127.0.0.1:$PORT/ >/dev/null 2>&1 || true
            ns0=$(server_cpu_s $SRV); ticks0=$(server_cpu_ticks_s $SRV)
            out=$(taskset -c "$ccpu" wrk -t1 -c"$PY_HTTP_CONNS" -d"${WRK_SECS}s" --latency http://127.0.0.1:$PORT/ 2>&1) || true
            ns1=$(server_cpu_s $SRV); ticks1=$(server_cpu_ticks_s $SRV)
            stop
            reqs=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$out")
            rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
            cpu=$(cpu_delta "$ns0" "$ns1" "$ticks0" "$ticks1")
            http_row $placement $who $rep "$rps" "$cpu" "${reqs:-0}" "$(wrk_lat_us "$out" 50%)" "$(wrk_lat_us "$out" 99%)"
        done
    done
done
echo "uptime at end: $(uptime)" >> "$OUT/python-meta.txt"
echo "python bench done: $(uptime)"
