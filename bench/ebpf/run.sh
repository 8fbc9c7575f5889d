#!/bin/sh
# Runs the eBPF overhead benchmark (as root) and keeps its JSON next to the build.
#   bench/ebpf/run.sh [BUILD_DIR] [extra mltap_ebpf_overhead args...]
set -eu
build=${1:-build}
[ $# -gt 0 ] && shift
exe="$build/bench/ebpf/mltap_ebpf_overhead"
[ -x "$exe" ] || { echo "build it first: cmake --build $build --target mltap_ebpf_overhead" >&2; exit 1; }
exec "$exe" --json "$build/bench/ebpf/overhead.json" "$@"
