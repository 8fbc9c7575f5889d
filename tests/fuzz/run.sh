#!/bin/sh
# Runs every libFuzzer target of a MLTAP_FUZZ=ON build for a bounded time, from the corpus kept
# in the repository, and prints executions per second and corpus size per target.
#
#   tests/fuzz/run.sh BUILD_DIR [SECONDS_PER_TARGET] [TARGET...]
#
# New inputs go to BUILD_DIR/fuzz-work/<target>/ (the repository's corpus is only read); a crash
# leaves its input in BUILD_DIR/fuzz-artifacts/<target>/ and makes the script fail after all
# targets ran. Targets run MLTAP_FUZZ_PARALLEL at a time (default 2, the CI machine's cores).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
secs=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))
targets=${*:-"segment ring_sequence config webhook profile python_input"}
parallel=${MLTAP_FUZZ_PARALLEL:-2}
work="$build/fuzz-work"
arts="$build/fuzz-artifacts"
mkdir -p "$work" "$arts"

# Per-target options: dictionary, input size bound, leak checking.
opts() {
  case "$1" in
    # Rings up to 1 GiB are legal: an input may make the reader fault in and copy 1 GiB.
    segment) echo "-dict=$here/dict/segment.dict -max_len=262144 -timeout=60" ;;
    ring_sequence) echo "-max_len=4096" ;;
    config) echo "-dict=$here/dict/config.dict -max_len=8192" ;;
    webhook) echo "-dict=$here/dict/webhook.dict -max_len=16384" ;;
    profile) echo "-dict=$here/dict/profile.dict -max_len=65536" ;;
    # CPython and NumPy keep caches for the life of the process: not leaks of ours.
    python_input) echo "-max_len=1024 -detect_leaks=0" ;;
  esac
}

run_one() {
  t=$1
  mkdir -p "$work/$t" "$arts/$t"
  # shellcheck disable=SC2046
  "$build/tests/fuzz/fuzz_$t" $(opts "$t") -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$arts/$t/" "$work/$t" "$here/corpus/$t" \
    >"$work/$t.log" 2>&1
}

failed=""
pids=""
running=0
for t in $targets; do
  run_one "$t" &
  pids="$pids $!:$t"
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then
    for p in $pids; do
      wait "${p%%:*}" || failed="$failed ${p#*:}"
    done
    pids=""
    running=0
  fi
done
for p in $pids; do
  wait "${p%%:*}" || failed="$failed ${p#*:}"
done

printf '\n%-14s %10s %12s %10s %12s\n' target execs exec/s corpus corpus_bytes
for t in $targets; do
  log="$work/$t.log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # libFuzzer's last status line: "corp: <inputs>/<size>"
  corp=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -1 | sed 's/corp: //')
  printf '%-14s %10s %12s %10s %12s\n' "$t" "${execs:-?}" "${eps:-?}" "${corp%%/*}" "${corp#*/}"
done
if [ -n "$failed" ]; then
  for t in $failed; do
    echo "==== fuzz_$t failed; its log ends with:"
    tail -40 "$work/$t.log"
    ls -l "$arts/$t"
  done
  echo "fuzzing found crashes in:$failed (inputs in $arts; add them to tests/fuzz/corpus/<target>/)"
  exit 1
fi
