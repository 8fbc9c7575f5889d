#!/bin/sh
# The join against pandas/scikit-learn at 10^6 predictions (CI runs 10^5: tests/performance).
#   bench/performance/join_oracle_1e6.sh [BUILD_DIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 "$here/../../tests/performance/join_oracle.py" \
  --replay "$build/tests/performance/perf_replay" --rows 1000000 --workdir "$work"
