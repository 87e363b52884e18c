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
#   CG_KEEP=DIR      each callgrind dump is kept as
#                    DIR/SCENARIO.CONTENDER.rREP.callgrind, its requests in
#                    DIR/SCENARIO.CONTENDER.rREP.requests: compare by
#                    function or, built with -g, by source line
#                    (callgrind_annotate --auto=yes; counts / requests)
#   PLACEMENT=split  split: server on CPU 0, load on CPU 1; shared: both 0
#   BASELINE=DIR     another build directory (configured as BUILD_DIR is,
#                    say main's in another checkout): its pact servers run
#                    too, as NAME@base, interleaved with the others
#   PROFILE=0        1: one more load run per contender under perf record
#                    (-e cpu-clock -g at FREQ=4999 Hz), and after the
#                    counts a table per scenario of the server's time per
#                    request by function (ns, self time, kernel [k] and
#                    user [.]; the ROWS=40 largest) and under a few kernel
#                    entry points (inclusive: the reply's tcp_sendmsg, the
#                    peer's receive it runs over loopback, the receive,
#                    schedule...). Sampled time moves with the machine's
#                    load as CPU time does: compare shares, run REPS > 1
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
CG_KEEP=${CG_KEEP:-}
[ -z "$CG_KEEP" ] || { mkdir -p "$CG_KEEP" && CG_KEEP=$(cd "$CG_KEEP" && pwd); }
PROFILE=${PROFILE:-0} FREQ=${FREQ:-4999} ROWS=${ROWS:-40}
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

# perf_window WHO PERF-ARGS...: starts WHO, warms it up with one load run,
# runs the load once more under `perf PERF-ARGS... -p SERVER`, stops the
# server. WINDOW_REQS: the requests of that run; fails if WHO did not start
perf_window() {
    local who=$1 perf_pid
    shift
    WINDOW_REQS=
    start "$who" || return 1
    load 1 >/dev/null
    perf "$@" -p $SRV &
    perf_pid=$!
    perf_attached $perf_pid
    WINDOW_REQS=$(load "$SECS")
    kill -INT $perf_pid
    wait $perf_pid || true
    stop
}

# One line per measurement in $TMP/rows: SCENARIO|CONTENDER|EVENT|VALUE
measure() {
    local sc=$1 who=$2 reqs
    perf_window "$who" stat -x, -e "$PERF_COUNT_EVENTS" -o "$TMP/stat" || return 0
    reqs=$WINDOW_REQS
    if [ "${reqs:-0}" -gt 0 ]; then
        echo "$sc|$who|requests in the perf window|$reqs" >>"$TMP/rows"
        perf_per_request "$TMP/stat" "$reqs" |
            sed "s/^ *\(.*[^ ]\) \+\([0-9.]*\) per request$/$sc|$who|\1|\2/" >>"$TMP/rows"
    else
        echo "c_counts: $sc $who: the load counted no requests" >&2
    fi
    [ "$PROFILE" = 1 ] && profile "$sc" "$who"
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
        if [ -n "$CG_KEEP" ]; then
            callgrind_keep "$CG_KEEP/$sc.$who.r$rep.callgrind"
            echo "$reqs" >"$CG_KEEP/$sc.$who.r$rep.requests"
        fi
    else
        echo "c_counts: $sc $who: no callgrind dump" >&2
    fi
}

# profile SCENARIO CONTENDER: one load run under perf record; the time per
# request by symbol (self) and under ENTRY_POINTS (inclusive) go to
# $TMP/prof as SCENARIO|CONTENDER|KIND|SYMBOL|NS
ENTRY_POINTS="tcp_sendmsg net_rx_action tcp_recvmsg io_poll_task_func __io_run_local_work ksys_read ksys_write do_epoll_wait schedule"
profile() {
    local sc=$1 who=$2 reqs
    perf_window "$who" record -q -e cpu-clock -F "$FREQ" -g -o "$TMP/perf.data" || return 0
    reqs=$WINDOW_REQS
    [ "${reqs:-0}" -gt 0 ] || return 0
    # A sample is 1/FREQ s of the server's CPU: ns per request =
    # samples / FREQ / requests. Self samples by symbol, then the share
    # of all samples under each entry point (--children).
    perf report -i "$TMP/perf.data" --no-children -g none --sort sym \
        -F sample,sym --stdio 2>/dev/null |
        awk '$1 ~ /^[0-9]+$/ && $2 ~ /^\[.\]$/ { print "self|" $2 " " $3 "|" $1 }' >"$TMP/prof.n"
    perf report -i "$TMP/perf.data" --children -g none --sort sym --stdio 2>/dev/null |
        awk -v eps="$ENTRY_POINTS" '
            BEGIN { n = split(eps, e, " "); for (i = 1; i <= n; i++) want[e[i]] = 1 }
            $1 ~ /%$/ && $3 ~ /^\[.\]$/ && ($4 in want) { sub(/%/, "", $1)
                print "share|" $4 "|" $1 }' >>"$TMP/prof.n"
    awk -F'|' -v f="$FREQ" -v r="$reqs" -v s="$sc" -v w="$who" '
        function ns(samples) { return samples / f / r * 1e9 }
        { kind[NR] = $1; sym[NR] = $2; val[NR] = $3
          if ($1 == "self") all += $3
          if ($1 == "self" && $2 ~ /^\[\.\]/) user += $3 }
        END {
            printf "%s|%s|under|(all samples)|%.0f\n", s, w, ns(all)
            printf "%s|%s|under|(user space)|%.0f\n", s, w, ns(user)
            for (i = 1; i <= NR; i++)
                if (kind[i] == "self") printf "%s|%s|self|%s|%.0f\n", s, w, sym[i], ns(val[i])
                else printf "%s|%s|under|%s|%.0f\n", s, w, sym[i], ns(val[i] / 100 * all)
        }' "$TMP/prof.n" >>"$TMP/prof"
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

# table FILE TITLE [whole]: a table per scenario of FILE's
# SCENARIO|CONTENDER|ROW|VALUE lines, a row a row (in the order they first
# come), a contender a column, "### SCENARIO (TITLE)" over it; whole:
# values as whole numbers
table() {
awk -F'|' -v title="$2" -v whole="${3:-}" '
    function fmt(v) { return v >= 100 || whole ? sprintf("%.0f", v) : sprintf("%.3f", v) }
    { key = $1 SUBSEP $2 SUBSEP $3
      if (!(key in n)) { n[key] = 0 }
      vals[key, ++n[key]] = $4
      if (!(($1, $2) in seen_c)) { seen_c[$1, $2] = 1; cols[$1] = cols[$1] "|" $2 }
      if (!(($1, $3) in seen_e)) { seen_e[$1, $3] = 1; evs[$1] = evs[$1] "|" $3 }
      if (!($1 in seen_s)) { seen_s[$1] = 1; order[++ns] = $1 } }
    END {
      for (s = 1; s <= ns; s++) {
        sc = order[s]; nc = split(substr(cols[sc], 2), c, "|"); ne = split(substr(evs[sc], 2), e, "|")
        printf "\n### %s (%s)\n\n| |", sc, title
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
    }' "$1"
}
table "$TMP/rows" "per request"
if [ "$PROFILE" = 1 ] && [ -s "$TMP/prof" ]; then
    # Entry points in ENTRY_POINTS' order, then the ROWS symbols with the
    # most self time in any contender, largest first.
    for ep in "(all samples)" "(user space)" $ENTRY_POINTS; do
        awk -F'|' -v e="$ep" '$3 == "under" && $4 == e { print $1 "|" $2 "|" $4 "|" $5 }' "$TMP/prof"
    done >"$TMP/prof.under"
    table "$TMP/prof.under" "server CPU per request, ns, perf record: all, user space, and under these kernel functions" whole
    awk -F'|' '$3 == "self" { k = $1 "|" $4; if ($5 > top[k]) top[k] = $5 }
        END { for (k in top) print top[k] "|" k }' "$TMP/prof" |
        sort -t'|' -k2,2 -k1,1nr | awk -F'|' -v n="$ROWS" '++seen[$2] <= n { print $2 "|" $3 }' >"$TMP/prof.top"
    awk -F'|' 'NR == FNR { want[$1 "|" $2] = FNR; next }
        $3 == "self" && (($1 "|" $4) in want) { print want[$1 "|" $4] "|" $1 "|" $2 "|" $4 "|" $5 }' \
        "$TMP/prof.top" "$TMP/prof" | sort -s -t'|' -k1,1n | cut -d'|' -f2- >"$TMP/prof.self"
    table "$TMP/prof.self" "server CPU per request, ns, perf record: self time of the $ROWS largest functions" whole
fi
