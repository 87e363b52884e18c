#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The side-by-side benchmark suite (`make bench`). See bench/README.md.
#
# Builds build-bench (meson, --buildtype=release, -Dbench=true), then runs
# the suites, each a run_NAME function below, in SUITES order:
#   network: echo scenarios x 2 placements x every contender (pact and its
#            peers: raw liburing, raw epoll, libuv written for speed, libuv
#            shaped like its own example), repetitions interleaved (every
#            contender once per scenario and placement, then again);
#   http:    an HTTP/1.1 keep-alive hello-world on pact transports, raw
#            liburing, raw epoll and libuv (best practice) under wrk, same
#            placements and interleaving;
#   micro:   timers, call_soon chain, cross-thread wake-ups (pact vs libuv);
#   alloc:   heap allocations per request, echo and HTTP (LD_PRELOAD);
#   idle:    RSS per idle connection (10,000 connections);
#   python:  pact.asyncio against uvloop and asyncio's loop on uvloop's own
#            echo servers and an aiohttp hello-world (bench/python.sh).
# and writes bench/results/{network,http,micro,alloc,idle,python}.csv, meta.txt,
# then calls bench/report.py for results.md and the PNG charts.
#
# Environment:
#   BENCH_QUICK=1    a few minutes: 2 reps, 0.5 s runs, 1 M timers
#   BENCH_REPS=N     repetitions (default 5)
#   BENCH_SECS=S     measured seconds per network/http run (default 1.5)
#   BENCH_WARMUP=S   warm-up seconds per network/http run (default 0.5)
#   BENCH_ONLY=LIST  comma list of suites: network,http,micro,alloc,idle,python
#   BENCH_CONTENDERS=LIST  only these contenders in network/http/alloc
#                    (names as in results.md; e.g. raw_uring,pact_stream_uring)
#   BENCH_SCENARIOS=LIST   only these network/http scenarios (e.g. pp64_c50)
#   BENCH_BASELINE=DIR     a second build directory configured with
#                    -Dbench=true (say, main built in another worktree):
#                    its pact servers run as extra contenders NAME@base in
#                    the same interleaved run, for before/after numbers
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
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3 # Debian's, with matplotlib
SUITES=(network http micro alloc idle python)
ONLY=${BENCH_ONLY:-$(IFS=,; echo "${SUITES[*]}")}
# selected LIST NAME: is NAME in the comma list (an empty list selects all)?
selected() { [ -z "$1" ] || case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac; }

# ---- build ------------------------------------------------------------------
if [ ! -f "$BUILD/build.ninja" ]; then
    $MESON setup "$BUILD" "$ROOT" --buildtype=release -Dbench=true -Dtests=disabled
else
    $MESON configure "$BUILD" -Dbench=true >/dev/null
fi
ninja -C "$BUILD" >/dev/null
B=$BUILD/bench
BASE_B=
if [ -n "${BENCH_BASELINE:-}" ]; then
    ninja -C "$BENCH_BASELINE" >/dev/null
    BASE_B=$BENCH_BASELINE/bench
fi

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
    [ -n "$BASE_B" ] && echo "baseline (NAME@base): $(git -C "$BENCH_BASELINE/.." rev-parse --short HEAD 2>/dev/null || echo '?') from $BENCH_BASELINE"
    echo "wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows here)"
    echo "placements: split = server taskset -c $SRV_CPU, client -c $CLI_CPU; shared = both -c $SRV_CPU"
} > "$OUT/meta.txt"
META_COLS="\"$KERNEL\",\"$MACHINE\",$MODE"

# The contenders (ECHO_PEERS, ECHO_PACT, HTTP_PEERS, HTTP_PACT), how each
# starts (contender_cmd) and the scenarios (SCENARIOS, HTTP_SCENARIOS).
# NAME@base contenders (BENCH_BASELINE) are pact's servers from the
# baseline build.
. "$HERE/lineup.sh"
# contenders PEERS... -- PACT...: the selected ones, baselines after pact's
contenders() {
    local list=() pact=0 who
    for who in "$@"; do
        if [ "$who" = -- ]; then pact=1; continue; fi
        selected "${BENCH_CONTENDERS:-}" "$who" && list+=("$who")
        if [ $pact = 1 ] && [ -n "$BASE_B" ] && selected "${BENCH_CONTENDERS:-}" "$who"; then
            list+=("$who@base")
        fi
    done
    echo "${list[@]}"
}
server_cmd() {
    local who=$1 port=$2 dir=$B
    case $who in *@base) dir=$BASE_B who=${who%@base} ;; esac
    contender_cmd "$dir" "$who" "$port"
}

KEYS="req_s mib_s conns_s p50_us p99_us p999_us server_cpu_s cpu_s_per_mreq server_threads"

# rotated K LIST...: LIST from its (K mod length)-th element on, wrapping
# round. Each repetition of network and http starts its interleaved order
# at another contender, so that what the runs before a contender leave
# behind falls on every contender in turn, not on the same ones each
# time. A fixed order did not spread it: in the quiet run of d669437
# (bench/results/network.csv), the two contenders that always ran first in
# split churn (raw_uring, raw_epoll) had no run with a latency tail (p99
# over 30 ms) in 10, the seven after them 14 in 35, and tail runs
# averaged 11.9k connections per second against 13.1k (a churn run, for one,
# leaves the kernel's TIME_WAIT table fuller for the runs after it).
rotated() {
    local k=$1 i; shift
    local a=("$@")
    for ((i = 0; i < ${#a[@]}; i++)); do echo "${a[(i + k) % ${#a[@]}]}"; done
}

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
    local cmd; cmd=$(server_cmd "$who" $PORT)
    env "$@" taskset -c "$cpu" $cmd 2>"$SRV_ERR" &
    SRV_PID=$!
}
stop_server() {
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=
}
features_of() { sed -n 's/.*ready features=\([^ ]*\).*/\1/p' "$SRV_ERR" | head -1 | tr , +; }
# kv_get "k=v k=v" KEY, and the server's CPU time as loadgen reads it
# (server_cpu_s, server_cpu_ticks_s, cpu_delta)
. "$HERE/common.sh"
# wait_port PORT: until the server accepts (at most 10 s)
wait_port() {
    local i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# ---- network ----------------------------------------------------------------
run_network() {
    local csv=$OUT/network.csv
    echo "scenario,placement,contender,rep,$(tr ' ' ',' <<<"$KEYS"),features,kernel,machine,mode" > "$csv"
    local who_list scs=() sc
    read -ra who_list <<<"$(contenders "${ECHO_PEERS[@]}" -- "${ECHO_PACT[@]}")"
    for sc in "${SCENARIOS[@]}"; do selected "${BENCH_SCENARIOS:-}" "${sc%%|*}" && scs+=("$sc"); done
    local total=$(( REPS * ${#scs[@]} * 2 * ${#who_list[@]} )) n=0
    for rep in $(seq 1 "$REPS"); do
        for sc in "${scs[@]}"; do
            local name=${sc%%|*} args=${sc#*|}
            for placement in split shared; do
                local ccpu=$CLI_CPU
                [ $placement = shared ] && ccpu=$SRV_CPU
                for who in $(rotated $((rep - 1)) "${who_list[@]}"); do
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
                    printf '[%3d/%d] %-14s %-6s %-18s req/s=%s cpu/Mreq=%s\n' $n $total \
                        "$name" $placement "$who" "$(kv_get "$out" req_s)" "$(kv_get "$out" cpu_s_per_mreq)"
                done
            done
        done
    done
}

# ---- http (wrk) -------------------------------------------------------------
# wrk_value OUTPUT PERCENT: a latency percentile of `wrk --latency` in µs
wrk_pct() {
    awk -v p="$2%" '$1 == p {
        v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        m = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1000000 : (u == "m") ? 60000000 : -1;
        if (m > 0) printf "%.1f", v * m; exit }' <<<"$1"
}
run_http() {
    local csv=$OUT/http.csv
    echo "scenario,placement,contender,rep,req_s,p50_us,p99_us,server_cpu_s,cpu_s_per_mreq,requests,errors,server_threads,features,kernel,machine,mode" > "$csv"
    local who_list scs=() sc who
    read -ra who_list <<<"$(contenders "${HTTP_PEERS[@]}" -- "${HTTP_PACT[@]}")"
    for sc in "${HTTP_SCENARIOS[@]}"; do selected "${BENCH_SCENARIOS:-}" "${sc%%|*}" && scs+=("$sc"); done
    # Every server must speak HTTP/1.1 correctly before it is measured.
    for who in "${who_list[@]}"; do
        start_server "$who" "$SRV_CPU"
        if ! $PY "$HERE/http_check.py" $PORT >/dev/null; then
            $PY "$HERE/http_check.py" $PORT || true
            echo "bench: $who fails the HTTP check" >&2
            stop_server
            exit 1
        fi
        stop_server
        rm -f "$SRV_ERR"
    done
    # wrk measures whole seconds.
    local secs_int; secs_int=$(awk -v s="$SECS" 'BEGIN { s = int(s + 0.5); print s < 1 ? 1 : s }')
    local warm_ms; warm_ms=$(awk -v s="$WARM" 'BEGIN { print int(s * 1000) }')
    local total=$(( REPS * ${#scs[@]} * 2 * ${#who_list[@]} )) n=0
    for rep in $(seq 1 "$REPS"); do
        for sc in "${scs[@]}"; do
            local name=${sc%%|*} conns=${sc#*|}
            for placement in split shared; do
                local ccpu=$CLI_CPU
                [ $placement = shared ] && ccpu=$SRV_CPU
                for who in $(rotated $((rep - 1)) "${who_list[@]}"); do
                    n=$((n + 1))
                    start_server "$who" "$SRV_CPU"
                    local url=http://127.0.0.1:$PORT/ out="" cpu0 cpu1 tick0 tick1 threads=""
                    wait_port $PORT || echo "bench: $who did not listen" >&2
                    # wrk has no warm-up of its own and takes whole seconds:
                    # a run cut short by timeout first.
                    if [ "$warm_ms" -gt 0 ]; then
                        timeout "$WARM" taskset -c "$ccpu" wrk -t1 -c"$conns" -d60s "$url" >/dev/null 2>&1 || true
                    fi
                    cpu0=$(server_cpu_s $SRV_PID) tick0=$(server_cpu_ticks_s $SRV_PID)
                    if ! out=$(taskset -c "$ccpu" wrk -t1 -c"$conns" -d"${secs_int}s" --latency "$url" 2>&1); then
                        echo "bench: FAILED $name $placement $who rep $rep: $out" >&2
                        out=""
                    fi
                    cpu1=$(server_cpu_s $SRV_PID) tick1=$(server_cpu_ticks_s $SRV_PID)
                    threads=$(awk '/^Threads:/ { print $2 }' /proc/$SRV_PID/status 2>/dev/null || true)
                    local feat; feat=$(features_of)
                    stop_server
                    rm -f "$SRV_ERR"
                    local reqs req_s errs cpu per p50 p99
                    reqs=$(awk '/requests in/ { print $1; exit }' <<<"$out")
                    req_s=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
                    errs=$(awk '/Socket errors:/ { gsub(/[^0-9 ]/, " "); s = 0; for (i = 1; i <= NF; i++) s += $i; e += s }
                                /Non-2xx/ { e += $NF } END { print e + 0 }' <<<"$out")
                    cpu=$(cpu_delta "$cpu0" "$cpu1" "$tick0" "$tick1")
                    per=$(awk -v c="$cpu" -v r="${reqs:-0}" 'BEGIN { if (r > 0) printf "%.3f", c / r * 1e6 }')
                    p50=$(wrk_pct "$out" 50)
                    p99=$(wrk_pct "$out" 99)
                    echo "$name,$placement,$who,$rep,$req_s,$p50,$p99,$cpu,$per,$reqs,$errs,$threads,$feat,$META_COLS" >> "$csv"
                    printf '[%3d/%d] %-10s %-6s %-18s req/s=%s p50=%sus p99=%sus cpu/req=%sus errors=%s\n' $n $total \
                        "$name" $placement "$who" "$req_s" "$p50" "$p99" "$per" "$errs"
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
    local who_list
    read -ra who_list <<<"$(contenders "${ECHO_PEERS[@]}" -- "${ECHO_PACT[@]}")"
    for who in "${who_list[@]}"; do
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
    # HTTP under wrk: SIGUSR1 around one wrk run. wrk opens its 50
    # connections inside the window, so what a server allocates per
    # connection is counted too (50 connections for some 10^4 requests).
    read -ra who_list <<<"$(contenders "${HTTP_PEERS[@]}" -- "${HTTP_PACT[@]}")"
    local secs_int; secs_int=$(awk -v s="$SECS" 'BEGIN { s = int(s + 0.5); print s < 1 ? 1 : s }')
    for who in "${who_list[@]}"; do
        start_server "$who" "$SRV_CPU" LD_PRELOAD="$B/alloc_count.so"
        wait_port $PORT || true
        local url=http://127.0.0.1:$PORT/ out reqs a0 a1 f0 f1 per
        timeout "$WARM" taskset -c $CLI_CPU wrk -t1 -c50 -d60s "$url" >/dev/null 2>&1 || true
        kill -USR1 $SRV_PID
        out=$(taskset -c $CLI_CPU wrk -t1 -c50 -d"${secs_int}s" "$url" 2>&1 || true)
        kill -USR1 $SRV_PID
        sleep 0.1
        stop_server
        a0=$(grep -m1 '^alloc_count:' "$SRV_ERR" | sed 's/.*allocs=\([0-9]*\).*/\1/')
        a1=$(grep '^alloc_count:' "$SRV_ERR" | tail -1 | sed 's/.*allocs=\([0-9]*\).*/\1/')
        f0=$(grep -m1 '^alloc_count:' "$SRV_ERR" | sed 's/.*frees=\([0-9]*\).*/\1/')
        f1=$(grep '^alloc_count:' "$SRV_ERR" | tail -1 | sed 's/.*frees=\([0-9]*\).*/\1/')
        rm -f "$SRV_ERR"
        reqs=$(awk '/requests in/ { print $1; exit }' <<<"$out")
        per=$(awk -v a=$((a1 - a0)) -v r="${reqs:-0}" 'BEGIN{printf "%.4f", r ? a / r : 0}')
        echo "$who,http_c50,$reqs,$((a1 - a0)),$((f1 - f0)),$per,$META_COLS" >> "$csv"
        echo "alloc $who http_c50: reqs=$reqs allocs=$((a1 - a0)) per_req=$per"
    done
}

# ---- bytes per idle connection ----------------------------------------------
run_idle() {
    local csv=$OUT/idle.csv
    echo "contender,conns,rss_delta,bytes_per_conn,kernel,machine,mode" > "$csv"
    for who in pact_uring pact_epoll pact_stream_uring pact_stream_epoll \
            pact_stream_uring_echoed pact_stream_epoll_echoed libuv; do
        local out
        case $who in
        pact_uring) out=$("$B/micro_pact" idle $NIDLE --engine uring) ;;
        pact_epoll) out=$("$B/micro_pact" idle $NIDLE --engine epoll) ;;
        pact_stream_uring) out=$("$B/micro_pact" idle_transport $NIDLE --engine uring) ;;
        pact_stream_epoll) out=$("$B/micro_pact" idle_transport $NIDLE --engine epoll) ;;
        pact_stream_uring_echoed) out=$("$B/micro_pact" idle_transport_echoed $NIDLE --engine uring) ;;
        pact_stream_epoll_echoed) out=$("$B/micro_pact" idle_transport_echoed $NIDLE --engine epoll) ;;
        libuv) out=$("$B/micro_libuv" idle $NIDLE) ;;
        esac
        echo "$who,$NIDLE,$(kv_get "$out" rss_delta),$(kv_get "$out" bytes_per_conn),$META_COLS" >> "$csv"
        echo "idle $who: $out"
    done
}

# ---- Python: pact.asyncio against uvloop and asyncio -----------------------
run_python() {
    if ! ls "$BUILD"/python/pact/_pact*.so >/dev/null 2>&1; then
        echo "bench: no pact.asyncio in $BUILD (needs python3-dev): python suite skipped" >&2
        return 0
    fi
    REPS=$REPS SECS=$SECS WARM=$WARM SRV_CPU=$SRV_CPU CLI_CPU=$CLI_CPU \
        "$HERE/python.sh" "$BUILD" "$OUT"
}

START=$(date +%s)
for suite in "${SUITES[@]}"; do
    if selected "$ONLY" "$suite"; then
        echo "== $suite (load average $(cut -d' ' -f1-3 /proc/loadavg))"
        run_$suite
    fi
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/meta.txt"
echo "== report ($(( $(date +%s) - START )) s of benchmarks)"
$PY "$HERE/report.py" "$OUT"
