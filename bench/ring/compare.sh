#!/bin/bash
# Before/after on a shared machine: runs the producer benchmark of two builds in alternating
# rounds (so that both see the same load over time) and prints, per benchmark, the median over
# the rounds of each round's median, with the range, and after/before.
#
#   bench/ring/compare.sh <before-build-dir> <after-build-dir> [rounds]      (default 5)
#
# Both build dirs must hold bench/ring/bench_ring_producer (bench/ring/run.sh builds it; the
# benchmark compiles against older SDKs too). MLTAP_BENCH_FILTER (default the Write/ and
# Sampled/ matrices and the memcpy baseline), MLTAP_BENCH_MIN_TIME (default 0.2 s). Results:
# <after-build-dir>/bench-compare/{before,after}.<round>.json and the table printed.
set -euo pipefail
[ $# -ge 2 ] && [ $# -le 3 ] || { echo "usage: $0 <before-build> <after-build> [rounds]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
before=$1/bench/ring/bench_ring_producer
after=$2/bench/ring/bench_ring_producer
rounds=${3:-5}
for b in "$before" "$after"; do [ -x "$b" ] || { echo "$b: not built" >&2; exit 1; }; done
out=$2/bench-compare
rm -rf "$out" && mkdir -p "$out"
filter=${MLTAP_BENCH_FILTER:-'^(Write|Sampled|Row_Memcpy)'}
min_time=${MLTAP_BENCH_MIN_TIME:-0.2}
nice=()
[ "$(id -u)" = 0 ] && nice=(nice -n -10)  # ahead of compilers sharing the machine
for i in $(seq 1 "$rounds"); do
  for side in before after; do
    bin=$before; [ $side = after ] && bin=$after
    echo "round $i/$rounds: $side" >&2
    "${nice[@]}" "$bin" --benchmark_filter="$filter" --benchmark_min_time="$min_time" \
      --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
      --benchmark_out_format=json --benchmark_out="$out/$side.$i.json" >/dev/null 2>&1
  done
done
/usr/bin/python3 "$here/compare.py" "$out"
