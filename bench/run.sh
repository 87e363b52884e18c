#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The side-by-side benchmark suite (`make bench`). See bench/README.md.
#
# Builds build-bench (meson, --buildtype=release, -Dbench=true), then runs:
#   network: 6 echo scenarios x 2 placements x 5 contenders, repetitions
#            interleaved (every contender once per scenario, then again);
#   micro:   timers, call_soon chain, cross-thread wake-ups (pact vs libuv);
#   alloc:   heap allocations per request on the echo path (LD_PRELOAD);
#   idle:    RSS per idle connection (10,000 connections).
# and writes bench/results/{network,micro,alloc,idle}.csv, meta.txt, then
# calls bench/report.py for results.md and the PNG charts.
#
# Environment:
#   BENCH_QUICK=1    ~2 minutes: 2 reps, 0.5 s runs, 1 M timers/callbacks
#   BENCH_REPS=N     repetitions (default 5)
#   BENCH_SECS=S     measured seconds per network run (default 1.5)
#   BENCH_WARMUP=S   warm-up seconds per network run (default 0.5)
#   BENCH_ONLY=LIST  comma list of suites: network,micro,alloc,idle
#   BENCH_BUILD=DIR  build dir (default build-bench)
#   BENCH_OUT=DIR    results dir (default bench/results)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
OUT=${BENCH_OUT:-$HERE/results}
MESON=${MESON:-meson}

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    MODE=quick REPS=${BENCH_REPS:-2} SECS=${BENCH_SECS:-0.5}
    WARM=${BENCH_WARMUP:-0.2} NTIMERS=1000000 NCHAIN=1000000 ASYNC_SECS=0.5
    MICRO_REPS=2
else
    MODE=full REPS=${BENCH_REPS:-5} SECS=${BENCH_SECS:-1.5}
    WARM=${BENCH_WARMUP:-0.5} NTIMERS=10000000 NCHAIN=10000000 ASYNC_SECS=1
    MICRO_REPS=$REPS
fi
NIDLE=10000
ONLY=${BENCH_ONLY:-network,micro,alloc,idle}

# ---- build ------------------------------------------------------------------
if [ ! -f "$BUILD/build.ninja" ]; then
    $MESON setup "$BUILD" "$ROOT" --buildtype=release -Dbench=true -Dtests=false
else
    $MESON configure "$BUILD" -Dbench=true >/dev/null
fi
ninja -C "$BUILD" >/dev/null
B=$BUILD/bench

mkdir -p "$OUT"
NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then SRV_CPU=0 CLI_CPU=1; else SRV_CPU=0 CLI_CPU=0; fi

# ---- machine description (in every file) -----------------------------------
KERNEL=$(uname -r)
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//;s/,/ /g')
GOV=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo n/a)
URING_DISABLED=$(sysctl -n kernel.io_uring_disabled 2>/dev/null || echo n/a)
MACHINE="$CPU x$NCPU; governor=$GOV; io_uring_disabled=$URING_DISABLED"
LIBURING=$(pkg-config --modversion liburing 2>/dev/null || echo '?')
LIBUV=$(pkg-config --modversion libuv 2>/dev/null || echo '?')
COMMIT=${BENCH_PACT_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")}
DIRTY=$(git -C "$ROOT" status --porcelain -- src include 2>/dev/null | grep -q . && echo "+dirty" || true)
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "mode: $MODE (reps=$REPS, measured=${SECS}s, warmup=${WARM}s per network run)"
    echo "kernel: $KERNEL"
    echo "machine: $MACHINE"
    echo "mitigations(spectre_v2): $(cat /sys/devices/system/cpu/vulnerabilities/spectre_v2 2>/dev/null | tr ',' ' ' || echo n/a)"
    echo "liburing: $LIBURING; libuv: $LIBUV; compiler: $(${CC:-cc} --version | head -1)"
    echo "pact: $COMMIT$DIRTY"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows here)"
    echo "placements: split = server taskset -c $SRV_CPU, client -c $CLI_CPU; shared = both -c $SRV_CPU"
} > "$OUT/meta.txt"
META_COLS="\"$KERNEL\",\"$MACHINE\",$MODE"

CONTENDERS=(raw_uring raw_epoll libuv pact_uring pact_epoll pact_stream_uring pact_stream_epoll)
server_cmd() {
    case $1 in
    raw_uring) echo "$B/raw_uring $2" ;;
    raw_epoll) echo "$B/raw_epoll $2" ;;
    libuv) echo "$B/libuv_echo $2" ;;
    pact_uring) echo "$B/pact_echo $2 --engine uring" ;;
    pact_epoll) echo "$B/pact_echo $2 --engine epoll" ;;
    pact_stream_uring) echo "$B/pact_stream_echo $2 --engine uring" ;;
    pact_stream_epoll) echo "$B/pact_stream_echo $2 --engine epoll" ;;
    esac
}

# name|loadgen arguments
SCENARIOS=(
    "pp64_c1|--conns 1 --size 64"
    "pp64_c50|--conns 50 --size 64"
    "pp64_c500|--conns 500 --size 64"
    "pp16k_c50|--conns 50 --size 16384"
    "stream64k_c10|--conns 10 --size 65536 --window 4"
    "churn_c100|--conns 100 --size 64 --mode churn"
)
KEYS="req_s mib_s conns_s p50_us p99_us p999_us server_cpu_s cpu_s_per_mreq server_threads"

PORT=20000
next_port() { PORT=$(( PORT >= 29000 ? 20000 : PORT + 1 )); }

SRV_PID=
cleanup() { if [ -n "$SRV_PID" ]; then kill "$SRV_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

# start_server CONTENDER CPU [ENV...]: sets SRV_PID, SRV_ERR
start_server() {
    local who=$1 cpu=$2; shift 2
    next_port
    SRV_ERR=$(mktemp)
    env "$@" taskset -c "$cpu" $(server_cmd "$who" $PORT) 2>"$SRV_ERR" &
    SRV_PID=$!
}
stop_server() {
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=
}
features_of() { sed -n 's/.*ready features=\([^ ]*\).*/\1/p' "$SRV_ERR" | head -1; }
# kv_get "k=v k=v" KEY
kv_get() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

# ---- network ----------------------------------------------------------------
run_network() {
    local csv=$OUT/network.csv
    echo "scenario,placement,contender,rep,$(tr ' ' ',' <<<"$KEYS"),features,kernel,machine,mode" > "$csv"
    local total=$(( REPS * ${#SCENARIOS[@]} * 2 * ${#CONTENDERS[@]} )) n=0
    for rep in $(seq 1 "$REPS"); do
        for sc in "${SCENARIOS[@]}"; do
            local name=${sc%%|*} args=${sc#*|}
            for placement in split shared; do
                local ccpu=$CLI_CPU
                [ $placement = shared ] && ccpu=$SRV_CPU
                for who in "${CONTENDERS[@]}"; do
                    n=$((n + 1))
                    start_server "$who" "$SRV_CPU"
                    local out
                    if ! out=$(taskset -c "$ccpu" "$B/loadgen" --port $PORT $args \
                            --duration "$SECS" --warmup "$WARM" --server-pid $SRV_PID); then
                        echo "bench: FAILED $name $placement $who rep $rep" >&2
                        cat "$SRV_ERR" >&2
                        out=""
                    fi
                    local feat; feat=$(features_of)
                    stop_server
                    rm -f "$SRV_ERR"
                    local row="$name,$placement,$who,$rep"
                    for k in $KEYS; do row="$row,$(kv_get "$out" $k)"; done
                    echo "$row,$feat,$META_COLS" >> "$csv"
                    printf '[%3d/%d] %-14s %-6s %-10s req/s=%s cpu/Mreq=%s\n' $n $total \
                        "$name" $placement "$who" "$(kv_get "$out" req_s)" "$(kv_get "$out" cpu_s_per_mreq)"
                done
            done
        done
    done
}

# ---- micro ------------------------------------------------------------------
run_micro() {
    local csv=$OUT/micro.csv
    echo "bench,contender,rep,n,seconds,per_op_ns,rate_per_s,kernel,machine,mode" > "$csv"
    for rep in $(seq 1 "$MICRO_REPS"); do
        for who in pact libuv; do
            local exe=$B/micro_$who out
            out=$(taskset -c $SRV_CPU "$exe" timers $NTIMERS)
            echo "timers,$who,$rep,$NTIMERS,$(kv_get "$out" total_s),$(kv_get "$out" ns_per_timer),,$META_COLS" >> "$csv"
            echo "timers    $who: $out"
            out=$(taskset -c $SRV_CPU "$exe" call_soon $NCHAIN)
            echo "call_soon,$who,$rep,$NCHAIN,$(kv_get "$out" total_s),$(kv_get "$out" ns_per_call),,$META_COLS" >> "$csv"
            echo "call_soon $who: $out"
            out=$("$exe" async $ASYNC_SECS)
            echo "async,$who,$rep,$(kv_get "$out" round_trips),$(kv_get "$out" secs),,$(kv_get "$out" rt_per_s),$META_COLS" >> "$csv"
            echo "async     $who: $out"
        done
    done
}

# ---- allocations per request ------------------------------------------------
run_alloc() {
    local csv=$OUT/alloc.csv
    echo "contender,scenario,reqs,allocs,frees,allocs_per_req,kernel,machine,mode" > "$csv"
    for who in "${CONTENDERS[@]}"; do
        for sc in "pp64_c50|--conns 50 --size 64" "pp16k_c50|--conns 50 --size 16384"; do
            local name=${sc%%|*} args=${sc#*|}
            start_server "$who" "$SRV_CPU" LD_PRELOAD="$B/alloc_count.so"
            local out
            out=$(taskset -c $CLI_CPU "$B/loadgen" --port $PORT $args --duration "$SECS" \
                    --warmup "$WARM" --server-pid $SRV_PID --signal-server)
            sleep 0.1
            stop_server
            local a0 a1 f0 f1 reqs
            a0=$(grep -m1 '^alloc_count:' "$SRV_ERR" | sed 's/.*allocs=\([0-9]*\).*/\1/')
            a1=$(grep '^alloc_count:' "$SRV_ERR" | tail -1 | sed 's/.*allocs=\([0-9]*\).*/\1/')
            f0=$(grep -m1 '^alloc_count:' "$SRV_ERR" | sed 's/.*frees=\([0-9]*\).*/\1/')
            f1=$(grep '^alloc_count:' "$SRV_ERR" | tail -1 | sed 's/.*frees=\([0-9]*\).*/\1/')
            rm -f "$SRV_ERR"
            reqs=$(kv_get "$out" reqs)
            local per
            per=$(awk -v a=$((a1 - a0)) -v r="$reqs" 'BEGIN{printf "%.4f", r ? a / r : 0}')
            echo "$who,$name,$reqs,$((a1 - a0)),$((f1 - f0)),$per,$META_COLS" >> "$csv"
            echo "alloc $who $name: reqs=$reqs allocs=$((a1 - a0)) per_req=$per"
        done
    done
}

# ---- bytes per idle connection ----------------------------------------------
run_idle() {
    local csv=$OUT/idle.csv
    echo "contender,conns,rss_delta,bytes_per_conn,kernel,machine,mode" > "$csv"
    for who in pact_uring pact_epoll pact_stream_uring pact_stream_epoll libuv; do
        local out
        case $who in
        pact_uring) out=$("$B/micro_pact" idle $NIDLE --engine uring) ;;
        pact_epoll) out=$("$B/micro_pact" idle $NIDLE --engine epoll) ;;
        pact_stream_uring) out=$("$B/micro_pact" idle_transport $NIDLE --engine uring) ;;
        pact_stream_epoll) out=$("$B/micro_pact" idle_transport $NIDLE --engine epoll) ;;
        libuv) out=$("$B/micro_libuv" idle $NIDLE) ;;
        esac
        echo "$who,$NIDLE,$(kv_get "$out" rss_delta),$(kv_get "$out" bytes_per_conn),$META_COLS" >> "$csv"
        echo "idle $who: $out"
    done
}

START=$(date +%s)
for suite in network micro alloc idle; do
    case ",$ONLY," in *",$suite,"*) echo "== $suite"; run_$suite ;; esac
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/meta.txt"
echo "== report ($(( $(date +%s) - START )) s of benchmarks)"
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3 # Debian's, with matplotlib
$PY "$HERE/report.py" "$OUT"
