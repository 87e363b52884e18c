#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every test binary on both engines, in each build tree, and prints a
# closing line "tests: N passed, N failed". Each binary is a Criterion suite
# (one process per test, per-test timeout). PACT_ENGINE picks the engine.
#
#   BUILDS="build build-asan"   which build trees (default: all three)
#   ENGINES="uring epoll uring-masked"  which engines; uring-masked is
#                               io_uring with every optional kernel feature
#                               hidden (PACT_URING_MASK=all: as on a 5.11-
#                               5.18 kernel), run in the plain build only
#   TESTS="test_ops"            which binaries (default: all, and then
#                               the fuzz harnesses of FUZZ_BUILD, default
#                               build-fuzz, for FUZZ_CI_SECONDS each)
set -uo pipefail
cd "$(dirname "$0")/.."

BUILDS=${BUILDS:-"build build-asan build-tsan"}
ENGINES=${ENGINES:-"uring epoll uring-masked"}
passed=0 failed=0 skipped=0
# A sanitizer report fails its suite whatever Criterion counted: Criterion
# runs each test in a forked child whose LeakSanitizer report (printed when
# the child exits) and UBSan messages do not change the test's verdict.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
sanitizer_report='ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|runtime error:|SUMMARY: [A-Za-z]*Sanitizer'

failures=()
log_dir=$(mktemp -d /tmp/pact-tests.XXXXXX)

for build in $BUILDS; do
    [ -d "$build/tests" ] || { echo "no $build/tests: run make first"; exit 2; }
    [ -x "$build/tests/engine-probe" ] || { echo "no $build/tests/engine-probe: build $build fully first"; exit 2; }
    for engine in $ENGINES; do
        # The masked-kernel run costs a whole suite: the plain build only.
        if [ "$engine" = uring-masked ] && [ "$build" != build ] && [ -z "${MASKED_ALL_BUILDS:-}" ]; then continue; fi
        mask="" pact_engine=$engine
        if [ "$engine" = uring-masked ]; then mask=all pact_engine=uring; fi
        if [ "$pact_engine" = uring ] && ! "$build/tests/engine-probe" uring >/dev/null 2>&1; then
            echo "SKIP $build/uring: $("$build/tests/engine-probe" uring 2>&1)"
            skipped=$((skipped + 1))
            continue
        fi
        for bin in "$build"/tests/test_*; do
            [ -f "$bin" ] && [ -x "$bin" ] || continue
            name=$(basename "$bin")
            if [ -n "${TESTS:-}" ] && ! grep -qw "$name" <<<"$TESTS"; then continue; fi
            # ThreadSanitizer is for the cross-thread parts.
            if [ "$build" = build-tsan ] && [[ "$name" != *thread* ]]; then continue; fi
            log="$log_dir/$build-$engine-$name.log"
            # Two tests at a time. Criterion 2.4's timeout watchdog (its
            # bundled BoxFort, bxfi_push_timeout) queues a test's deadline
            # in front of a later one without linking the later one
            # behind it: a test whose .timeout ends after that of a test
            # started while it runs is never timed out (only by the
            # `timeout 600` here), and its 48-byte request leaks in the
            # runner (LeakSanitizer's report at exit). Shown without pact:
            # TestSuite(s, .timeout = 1); Test(s, a, .timeout = 3) {
            # sleep(6); } Test(s, b) {} passes a after 6 s with --jobs 2.
            # Hence the suites keep one timeout per file, or per-test ones
            # that only grow in the order the tests run (by name).
            PACT_ENGINE=$pact_engine PACT_URING_MASK=$mask timeout 600 "$bin" --jobs 2 >"$log" 2>&1
            rc=$?
            synth=$(grep -a "Synthesis:" "$log" | tail -1)
            t=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$synth")
            p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$synth")
            t=${t:-0} p=${p:-0}
            f=$((t - p))
            if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
            # A suite that ran no test failed to start (Criterion under
            # TSan exits 0 without a summary): never count it as passing.
            if [ "$t" = 0 ]; then f=1; fi
            reports=$(grep -a -c -E "$sanitizer_report" "$log")
            if [ "$reports" != 0 ]; then
                echo "$build $engine $name: $reports sanitizer report line(s)"
                if [ "$f" = 0 ]; then f=1; p=$((p > 0 ? p - 1 : 0)); fi
            fi
            passed=$((passed + p)); failed=$((failed + f))
            printf '%-11s %-12s %-24s %3d passed %3d failed\n' "$build" "$engine" "$name" "$p" "$f"
            if [ "$f" != 0 ]; then
                failures+=("$log")
                grep -a -E "\[----\]|\[FAIL\]|CRASH|ERROR|Sanitizer|runtime error|^    #[0-9]" "$log" | head -60
            fi
        done
    done
done

# Fuzzing, briefly (make fuzz runs longer): each libFuzzer harness in
# build-fuzz/ on both engines for FUZZ_CI_SECONDS (default 8) from the
# corpus in tests/fuzz/corpus/, counted as one test per run.
fuzz_seconds=${FUZZ_CI_SECONDS:-8}
fuzz_build=${FUZZ_BUILD:-build-fuzz}
if [ "$fuzz_seconds" != 0 ] && [ -d "$fuzz_build/tests/fuzz" ] && [ -z "${TESTS:-}" ]; then
    for bin in "$fuzz_build"/tests/fuzz/fuzz_*; do
        [ -f "$bin" ] && [ -x "$bin" ] || continue
        name=$(basename "$bin") corpus=tests/fuzz/corpus/${name#fuzz_}
        for engine in uring epoll; do
            grep -qw "$engine" <<<"$ENGINES" || continue
            log="$log_dir/fuzz-$engine-$name.log"
            work=$(mktemp -d /tmp/pact-fuzz.XXXXXX)
            (cd "$work" && PACT_ENGINE=$engine timeout $((fuzz_seconds + 60)) \
                "$OLDPWD/$bin" -max_total_time="$fuzz_seconds" -max_len=2048 \
                -print_final_stats=1 "$work" "$OLDPWD/$corpus") >"$log" 2>&1
            rc=$?
            rm -rf "$work"
            runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
            if [ "$rc" = 0 ] && ! grep -a -q -E "$sanitizer_report" "$log"; then p=1 f=0; else p=0 f=1; failures+=("$log"); fi
            passed=$((passed + p)); failed=$((failed + f))
            printf '%-11s %-12s %-24s %3d passed %3d failed (%s inputs)\n' "$fuzz_build" "$engine" "$name" "$p" "$f" "${runs:-?}"
            [ "$f" = 0 ] || grep -a -E "fuzz_|ERROR|Sanitizer" "$log" | head -20
        done
    done
fi

if [ ${#failures[@]} -gt 0 ]; then
    echo "failing logs:"; printf '  %s\n' "${failures[@]}"
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
