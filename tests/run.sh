#!/bin/sh
# Builds mltap and runs every test, exactly as CI does (.ci/run calls this). Run as root on
# Debian 12: it installs what it needs with apt-get, and the eBPF tests need root.
#
#   tests/run.sh            all builds and all tests
#   tests/run.sh quick      the main build's tests only (no sanitizer builds)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=${1:-all}
jobs=${MLTAP_JOBS:-$(nproc)}

"$root/packaging/install-deps.sh"

step() { printf '\n==== %s ====\n' "$*"; }

# 1. The main build: every test, real processes, real kernel, real servers.
step "build (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
step "tests (main build)"
ctest --test-dir build --output-on-failure --timeout 900

[ "$mode" = quick ] && exit 0

# 2. ASan + UBSan: the C++ tests and the multi-process tests against a sanitized mltapd.
step "build (ASan+UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLTAP_SANITIZE=address \
  -DMLTAP_BUILD_PYTHON=OFF -DMLTAP_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$jobs"
step "tests (ASan+UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure --timeout 900 -LE "python|bench"

# 3. TSan: the lock-free and multi-threaded code.
step "build (TSan)"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLTAP_SANITIZE=thread \
  -DMLTAP_BUILD_PYTHON=OFF -DMLTAP_BUILD_BENCH=OFF -DMLTAP_BUILD_BPF=OFF >/dev/null
cmake --build build-tsan -j "$jobs" --target mltap_tsan_tests
step "tests (TSan)"
# die_after_fork=0: the fork tests start a thread in the child of a threaded parent, which TSan
# refuses by default; the child's behaviour is still asserted.
TSAN_OPTIONS="halt_on_error=1 die_after_fork=0 suppressions=$root/tests/tsan.supp" \
  ctest --test-dir build-tsan --output-on-failure --timeout 900 -L tsan --no-tests=error
step "all tests passed"
