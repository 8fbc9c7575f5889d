#!/bin/bash
# Runs the ring benchmarks (bench/ring/) and prints medians and ratios against their baselines.
#
#   bench/ring/run.sh <build-dir> [repetitions]        (as root: LTTng needs its session daemon)
#
# Builds bench_ring_producer and bench_ring_ingest in <build-dir> (configured Release with BPF and
# Python off if it has no CMakeCache.txt yet), starts lttng-sessiond if none runs, creates a
# snapshot-mode (flight recorder) LTTng session under /tmp that enables the benchmark's events,
# runs both benchmarks with --benchmark_repetitions, then destroys the session (and stops the
# session daemon if it started it). Results: <build-dir>/bench-ring/*.json and the table printed.
#
# Environment: MLTAP_BENCH_FILTER (a --benchmark_filter regex, default all),
# MLTAP_BENCH_MIN_TIME (seconds per repetition, default 0.2), MLTAP_BENCH_INGEST_CPU (CPU the
# single-threaded ingest benchmark is pinned to, default the last one; "none" to not pin).
set -euo pipefail

usage() { echo "usage: $0 <build-dir> [repetitions]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
build=$1
reps=${2:-10}
case $reps in '' | *[!0-9]*) usage ;; esac
[ "$reps" -ge 1 ] || usage
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
filter=${MLTAP_BENCH_FILTER:-.}
min_time=${MLTAP_BENCH_MIN_TIME:-0.2}

# --- build -------------------------------------------------------------------------------------
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMLTAP_BUILD_BPF=OFF \
    -DMLTAP_BUILD_PYTHON=OFF >/dev/null
fi
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")
if [ "$build_type" != Release ]; then
  echo "warning: $build is a '$build_type' build; figures are meant for Release" >&2
fi
producer=$build/bench/ring/bench_ring_producer
ingest=$build/bench/ring/bench_ring_ingest
if ! cmake --build "$build" -j"$(nproc)" --target bench_ring_producer bench_ring_ingest \
    >"$build/bench-ring-build.log" 2>&1; then
  if [ -x "$producer" ] && [ -x "$ingest" ]; then
    echo "warning: build failed (see $build/bench-ring-build.log); running the binaries" \
      "already in $build" >&2
  else
    cat "$build/bench-ring-build.log" >&2
    exit 1
  fi
fi
out=$build/bench-ring
mkdir -p "$out"

# --- LTTng: session daemon, one snapshot session, cleaned up whatever happens -------------------
session=mltap-bench-$$
trace_dir=""
started_sessiond=""
lttng_ok=""
cleanup() {
  if [ -n "$lttng_ok" ]; then lttng destroy "$session" >/dev/null 2>&1 || true; fi
  if [ -n "$trace_dir" ]; then rm -rf "$trace_dir"; fi
  if [ -n "$started_sessiond" ]; then kill "$started_sessiond" 2>/dev/null || true; fi
}
trap cleanup EXIT

setup_lttng() {
  command -v lttng >/dev/null && command -v lttng-sessiond >/dev/null || {
    echo "lttng-tools not installed: LTTng baselines skipped" >&2; return 1; }
  if ! lttng list >/dev/null 2>&1; then
    lttng-sessiond --daemonize || { echo "cannot start lttng-sessiond" >&2; return 1; }
    local pidfile=/var/run/lttng/lttng-sessiond.pid
    [ "$(id -u)" = 0 ] || pidfile=$HOME/.lttng/lttng-sessiond.pid
    started_sessiond=$(cat "$pidfile" 2>/dev/null || true)
  fi
  trace_dir=$(mktemp -d /tmp/mltap-bench-lttng.XXXXXX)
  # Snapshot mode: overwrite (flight-recorder) channels that no consumer drains while the
  # benchmark runs, like an mltap ring without a reader; nothing is written to disk meanwhile.
  lttng create "$session" --snapshot --output="$trace_dir" >/dev/null
  lttng_ok=1
  # Rows: LTTng's default per-user channel (4 x 512 KiB sub-buffers per CPU).
  lttng enable-channel --userspace --session="$session" rows >/dev/null
  # Tensors: sub-buffers large enough for a 1 MiB event.
  lttng enable-channel --userspace --session="$session" --subbuf-size=4M --num-subbuf=2 tensors >/dev/null
  # A 1 MiB event in a default channel: more than a sub-buffer holds.
  lttng enable-channel --userspace --session="$session" defaults >/dev/null
  lttng enable-event --userspace --session="$session" --channel=rows mltap_bench:row >/dev/null
  lttng enable-event --userspace --session="$session" --channel=tensors mltap_bench:tensor >/dev/null
  lttng enable-event --userspace --session="$session" --channel=defaults \
    mltap_bench:tensor_default_channel >/dev/null
  lttng start "$session" >/dev/null
}

common=(--benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true
        --benchmark_min_time="$min_time" --benchmark_filter="$filter" --benchmark_out_format=json)

if setup_lttng; then
  echo "LTTng session $session active (snapshot mode, output $trace_dir)" >&2
else
  echo "LTTng session not set up: the LTTng benchmarks will report an error" >&2
fi

echo "== producer ($reps repetitions) ==" >&2
"$producer" "${common[@]}" --benchmark_out="$out/producer.json" >&2

if [ -n "$lttng_ok" ]; then
  lttng stop "$session" >/dev/null
  # A snapshot of the buffers shows what was recorded: bytes per channel (all CPUs). A channel
  # whose events never fit its sub-buffers holds packet headers only.
  : >"$out/lttng-snapshot.txt"
  if lttng snapshot record --session="$session" >/dev/null 2>&1; then
    for ch in rows tensors defaults; do
      bytes=$(find "$trace_dir" -type f -name "${ch}_[0-9]*" -printf '%s\n' | awk '{s += $1} END {print s + 0}')
      echo "$ch $bytes" >>"$out/lttng-snapshot.txt"
    done
  fi
fi

echo "== ingest ($reps repetitions) ==" >&2
cpu=${MLTAP_BENCH_INGEST_CPU:-$(($(nproc) - 1))}
pin=()
if [ "$cpu" != none ] && command -v taskset >/dev/null; then pin=(taskset -c "$cpu"); fi
"${pin[@]}" "$ingest" "${common[@]}" --benchmark_out="$out/ingest.json" >&2

/usr/bin/python3 "$here/report.py" "$out" | tee "$out/table.md"
