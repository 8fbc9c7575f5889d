#!/bin/sh
# Runs the main job: builds mltap, starts mltapd on its embedded defaults and the demo pipeline
# feeding it, and tells you where to look. Run as root on Debian 12; Ctrl-C stops everything.
#
#   examples/demo/run.sh [--duration SECONDS] [pipeline.py options, see --help]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
"$root/packaging/install-deps.sh"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target mltapd mltap mltap_python

mount | grep -q " /sys/kernel/tracing " || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
log=$(mktemp /tmp/mltapd-demo.XXXXXX.log)
./build/agent/mltapd/mltapd >"$log" 2>&1 &
agent=$!
demo=""
cleanup() {
  [ -n "$demo" ] && kill "$demo" 2>/dev/null
  kill "$agent" 2>/dev/null
  wait 2>/dev/null
}
trap cleanup EXIT INT TERM
for _ in $(seq 50); do
  curl -sf http://127.0.0.1:9645/healthz >/dev/null 2>&1 && break
  kill -0 "$agent" 2>/dev/null || { cat "$log"; echo "mltapd did not start"; exit 1; }
  sleep 0.1
done

cat <<MSG

  mltapd is running (log: $log) and the demo pipeline is starting.
  Four processes: cleaning -> featuregen -> model, and feedback writing the labels seconds later.
  Faults are injected at t=60s (model swap), t=120s (unit bug, clinic 1), t=160s (NaN burst),
  t=200s (concept shift: clinic 2's labels flip).
  Where to look, from another terminal:

    ./build/agent/cli/mltap status                      streams, producers, rates, drops, accuracy
    ./build/agent/cli/mltap performance demo/predictions  accuracy, coverage, estimates per window
    curl -s http://127.0.0.1:9645/metrics | grep mltap_ Prometheus metrics
    curl -s http://127.0.0.1:9645/api/v1/findings       what the detectors found
    ./build/agent/cli/mltap explain demo/predictions    findings with related system events

MSG
PYTHONPATH="$root/build/python" /usr/bin/python3 examples/demo/pipeline.py "$@" &
demo=$!
wait "$demo" || true
demo=""
