#!/usr/bin/env bash
# Runs fuzz harnesses, JOBS at a time, each for SECONDS; fails when any of them fails.
#   run_harnesses.sh PYTHON SECONDS JOBS "EXTRA_LIBFUZZER_ARGS" HARNESS...
# Each harness writes build/fuzz/<harness>.log. A harness that exits non-zero (a crash,
# a property failure, a timeout or the RSS limit) has its log's tail printed once all are done,
# so two harnesses' output never interleave.
set -u
py=$1 seconds=$2 jobs=$3 args=$4
shift 4
mkdir -p build/fuzz
if ! [ "$jobs" -ge 1 ] 2>/dev/null; then
    echo "FUZZ_JOBS must be a positive integer, got '$jobs'" >&2
    exit 2
fi

logs=()
for harness in "$@"; do
    # Keep at most $jobs harnesses running; `wait -n` returns as soon as one of them ends.
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    log=build/fuzz/$(basename "$harness" .py).log
    rm -f "$log.rc"
    echo "== $harness (${seconds}s, log $log)"
    # The exit status goes to a file: `wait -n` has already reaped some of these jobs.
    # shellcheck disable=SC2086  # $args is a list of libFuzzer flags
    ( "$py" "$harness" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 \
        -print_final_stats=1 $args > "$log" 2>&1; echo $? > "$log.rc" ) &
    logs+=("$log")
done
wait

failed=0
for log in "${logs[@]}"; do
    rc=$(cat "$log.rc" 2>/dev/null || echo missing)
    if [ "$rc" = 0 ]; then
        echo "== $log"
        grep -E "DONE|stat::number_of_executed_units" "$log"
    else
        echo "== FAILED (exit status $rc): $log"
        tail -n 60 "$log"
        failed=1
    fi
    rm -f "$log.rc"
done
exit $failed
