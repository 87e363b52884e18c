#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Counts per request of the C servers of make bench (bench/lineup.sh) under
# their load generators, what does not depend on how loaded the machine
# is: on a 2-CPU machine shared with others, CPU per request moves by
# ±20 % from run to run, these by a few percent.
#
#   bench/c_counts.sh [BUILD_DIR]      (default build-bench, built first)
# Environment:
#   SCENARIOS="http_c50 http_c500 pp64_c50 pp64_c500"  (names of lineup.sh)
#   CONTENDERS=LIST  only these (comma list; default: every contender of
#                    the scenario's kind, peers first)
#   SECS=3           measured seconds per run (after a 1 s warm-up run)
#   REPS=1           repetitions, interleaved (every contender once, then
#                    again); with more than 1 a cell is median (min-max)
#   CALLGRIND=1      0 skips the runs under valgrind
#   CACHESIM=0       1: callgrind also simulates the caches
#                    (--cache-sim=yes) and D1 misses per request (reads
#                    and writes, of the same window) get a row
#   PLACEMENT=split  split: server on CPU 0, load on CPU 1; shared: both 0
#   BASELINE=DIR     another build directory (configured as BUILD_DIR is,
#                    say main's in another checkout): its pact servers run
#                    too, as NAME@base, interleaved with the others
#
# For each scenario and contender:
# - perf stat on the server over one load run, the software tracepoints of
#   bench/counts_common.sh (system calls by kind, io_uring submissions and
#   completions, context switches, the wake-ups the server makes), divided
#   by the requests the load generator counted. The window is the load
#   generator's whole run (wrk has no warm-up of its own; loadgen runs with
#   --warmup 0 here), after a warm-up run: it includes connecting and
#   closing its connections, a few system calls per connection against
#   thousands of requests.
# - the server under valgrind's callgrind, counters zeroed after a warm-up
#   and dumped after a window of 2 x SECS: user-space instructions per
#   request (the kernel's work is not in them). valgrind makes a server
#   ~50x slower, so each wait finds more requests than it would: compare
#   contenders with each other, not with a run outside valgrind.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build-bench}" && pwd)
SCENARIO_LIST=${SCENARIOS:-"http_c50 http_c500 pp64_c50 pp64_c500"}
SECS=${SECS:-3} REPS=${REPS:-1} CALLGRIND=${CALLGRIND:-1} CACHESIM=${CACHESIM:-0}
PLACEMENT=${PLACEMENT:-split}
. "$HERE/lineup.sh"      # contenders, contender_cmd, SCENARIOS, HTTP_SCENARIOS
. "$HERE/counts_common.sh" # PERF_COUNT_EVENTS, perf_per_request, listening, perf_attached, SRV, stop, callgrind_window
for tool in wrk perf; do
    command -v $tool >/dev/null || { echo "c_counts: no $tool" >&2; exit 2; }
done
[ "$CALLGRIND" = 0 ] || command -v valgrind >/dev/null ||
    { echo "c_counts: no valgrind (CALLGRIND=0 skips it)" >&2; exit 2; }
ninja -C "$BUILD" >/dev/null
B=$BUILD/bench
BASE_B=
if [ -n "${BASELINE:-}" ]; then
    ninja -C "$BASELINE" >/dev/null
    BASE_B=$(cd "$BASELINE" && pwd)/bench
fi
SRV_CPU=0 LOAD_CPU=1
[ "$PLACEMENT" = shared ] && LOAD_CPU=0

TMP=$(mktemp -d)
cleanup() { [ -n "$SRV" ] && kill -KILL "$SRV" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

port=$((24000 + RANDOM % 4000))
# start WHO [WRAPPER...]: the server on SRV_CPU, SRV its pid, once listening
start() {
    local who=$1 dir=$B cmd; shift
    case $who in *@base) dir=$BASE_B who=${who%@base} ;; esac
    port=$((port + 1))
    cmd=$(contender_cmd "$dir" "$who" $port)
    taskset -c $SRV_CPU "$@" $cmd 2>"$TMP/server.log" &
    SRV=$!
    listening $port $SRV && return 0
    echo "c_counts: $who did not start: $(tail -3 "$TMP/server.log")" >&2
    return 1
}

# The scenario being run: KIND (http: wrk; echo: loadgen) and its load.
scenario() {
    local sc
    for sc in "${HTTP_SCENARIOS[@]}"; do
        [ "${sc%%|*}" = "$1" ] && { KIND=http LOAD_ARGS=${sc#*|}; return 0; }
    done
    for sc in "${SCENARIOS[@]}"; do
        [ "${sc%%|*}" = "$1" ] && { KIND=echo LOAD_ARGS=${sc#*|}; return 0; }
    done
    echo "c_counts: unknown scenario $1 (see bench/lineup.sh)" >&2
    return 1
}
# load SECS: one run of the scenario's load; prints the requests it counted
load() {
    local out
    if [ $KIND = http ]; then
        out=$(taskset -c $LOAD_CPU wrk -t1 -c"$LOAD_ARGS" -d"$1"s http://127.0.0.1:$port/ 2>&1)
        sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$out"
    else
        # shellcheck disable=SC2086 # LOAD_ARGS is a list of arguments
        out=$(taskset -c $LOAD_CPU "$B/loadgen" --port $port $LOAD_ARGS \
            --duration "$1" --warmup 0)
        sed -n 's/^reqs=\([0-9]*\) .*/\1/p' <<<"$out"
    fi
}
selected() { [ -z "${CONTENDERS:-}" ] || case ",$CONTENDERS," in *",${1%@base},"*) return 0 ;; *) return 1 ;; esac; }
# with_base PACT...: each, followed by its baseline's (BASELINE)
with_base() {
    local who
    for who in "$@"; do
        echo "$who"
        [ -n "$BASE_B" ] && echo "$who@base"
    done
    return 0
}

# One line per measurement in $TMP/rows: SCENARIO|CONTENDER|EVENT|VALUE
measure() {
    local sc=$1 who=$2 reqs
    start "$who" || return 0
    load 1 >/dev/null
    perf stat -x, -e "$PERF_COUNT_EVENTS" -p $SRV -o "$TMP/stat" &
    local perf_pid=$!
    perf_attached $perf_pid
    reqs=$(load "$SECS")
    kill -INT $perf_pid
    wait $perf_pid || true
    stop
    if [ "${reqs:-0}" -gt 0 ]; then
        echo "$sc|$who|requests in the perf window|$reqs" >>"$TMP/rows"
        perf_per_request "$TMP/stat" "$reqs" |
            sed "s/^ *\(.*[^ ]\) \+\([0-9.]*\) per request$/$sc|$who|\1|\2/" >>"$TMP/rows"
    else
        echo "c_counts: $sc $who: the load counted no requests" >&2
    fi
    [ "$CALLGRIND" = 0 ] && return 0
    local sim=()
    [ "$CACHESIM" = 1 ] && sim=(--cache-sim=yes)
    start "$who" valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$TMP/cg.%p" || return 0
    callgrind_window load 3 $((2 * SECS))
    reqs=$CG_LOAD
    if [ -n "$CG_IR" ] && [ "${reqs:-0}" -gt 0 ]; then
        echo "$sc|$who|user-space instructions (callgrind)|$((CG_IR / reqs))" >>"$TMP/rows"
        if [ -n "$CG_D1" ]; then
            echo "$sc|$who|D1 misses (callgrind --cache-sim)|$(awk "BEGIN { print $CG_D1 / $reqs }")" >>"$TMP/rows"
        fi
    else
        echo "c_counts: $sc $who: no callgrind dump" >&2
    fi
}

echo "c_counts: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $PLACEMENT, ${SECS}s runs, $REPS rep(s), $(uptime)"
: >"$TMP/rows"
for rep in $(seq "$REPS"); do
    for sc in $SCENARIO_LIST; do
        scenario "$sc"
        if [ $KIND = http ]; then
            mapfile -t list < <(printf '%s\n' "${HTTP_PEERS[@]}"; with_base "${HTTP_PACT[@]}")
        else
            mapfile -t list < <(printf '%s\n' "${ECHO_PEERS[@]}"; with_base "${ECHO_PACT[@]}")
        fi
        for who in "${list[@]}"; do
            selected "$who" || continue
            echo "c_counts: rep $rep $sc $who" >&2
            measure "$sc" "$who"
        done
    done
done

# A table per scenario: an event a row, a contender a column.
awk -F'|' '
    function fmt(v) { return v >= 100 ? sprintf("%.0f", v) : sprintf("%.3f", v) }
    { key = $1 SUBSEP $2 SUBSEP $3
      if (!(key in n)) { n[key] = 0 }
      vals[key, ++n[key]] = $4
      if (!(($1, $2) in seen_c)) { seen_c[$1, $2] = 1; cols[$1] = cols[$1] "|" $2 }
      if (!(($1, $3) in seen_e)) { seen_e[$1, $3] = 1; evs[$1] = evs[$1] "|" $3 }
      if (!($1 in seen_s)) { seen_s[$1] = 1; order[++ns] = $1 } }
    END {
      for (s = 1; s <= ns; s++) {
        sc = order[s]; nc = split(substr(cols[sc], 2), c, "|"); ne = split(substr(evs[sc], 2), e, "|")
        printf "\n### %s (per request)\n\n| |", sc
        for (j = 1; j <= nc; j++) printf " %s |", c[j]
        printf "\n|---|"; for (j = 1; j <= nc; j++) printf "---:|"; printf "\n"
        for (i = 1; i <= ne; i++) {
          printf "| %s |", e[i]
          for (j = 1; j <= nc; j++) {
            key = sc SUBSEP c[j] SUBSEP e[i]; m = n[key] + 0
            if (m == 0) { printf " |"; continue }
            for (k = 1; k <= m; k++) v[k] = vals[key, k] + 0
            for (k = 2; k <= m; k++) for (l = k; l > 1 && v[l - 1] > v[l]; l--) { t = v[l]; v[l] = v[l - 1]; v[l - 1] = t }
            med = (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
            if (m == 1) printf " %s |", fmt(med)
            else printf " %s (%s–%s) |", fmt(med), fmt(v[1]), fmt(v[m])
          }
          printf "\n"
        }
      }
    }' "$TMP/rows"
