#!/bin/sh
# Builds mltap and runs every test, exactly as CI does (.ci/run calls this). Run as root on
# Debian 12: it installs what it needs with apt-get, and the eBPF tests need root.
#
#   tests/run.sh            all builds and all tests
#   tests/run.sh quick      the main build's tests only (no sanitizer builds)
#   tests/run.sh fuzz       the libFuzzer stage only (4. below)
#
# Where the time goes (2 cores, cold cache): four compilations (main, ASan+UBSan, TSan, clang
# libFuzzer) and the main build's end-to-end tests (real Prometheus, Alertmanager, systemd in a
# Debian root). So: the sanitizer builds compile only the C++ test executables (targets
# mltap_cxx_tests and mltap_tsan_tests), in unity batches, and run only them; each stage's tests
# run while the next stage compiles ("Overlap" below); tests run in parallel (ctest -j) except
# those marked RUN_SERIAL or sharing a RESOURCE_LOCK (kernel probes, the Debian root cache);
# ccache is used when installed (never required). Each step's wall time is printed at the end.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=${1:-all}
jobs=${MLTAP_JOBS:-$(nproc)}
test_jobs=${MLTAP_TEST_JOBS:-$jobs}

"$root/packaging/install-deps.sh"

launcher=""
if command -v ccache >/dev/null 2>&1; then
  launcher="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache"
fi
t_start=$(date +%s)
t_last=$t_start
times=""
step() {
  now=$(date +%s)
  [ -n "${current:-}" ] && times="$times
  $(printf '%-28s %5d s' "$current" $((now - t_last)))"
  t_last=$now
  current="$*"
  printf '\n==== %s ====\n' "$*"
}
summary() {
  step "done"
  printf '%s\n  %-28s %5d s\n' "$times" "total" $(($(date +%s) - t_start))
}

# Overlap: a stage's tests mostly wait (real servers, timers, kernel events: the main build's
# 420 tests used 0.54 core-seconds per second of their 391 s on 2 cores), so each stage's tests
# run in the background while the next stage compiles, the compiler at nice 10 so that test
# processes come first. A stage's test log is printed when it ends; any failure fails the run.
# The sanitizer and libFuzzer builds compile in unity batches (CMAKE_UNITY_BUILD: each
# library's sources a few files at a time, headers parsed and templates instantiated once per
# batch); the main build compiles file by file, as a developer's build does.
unity="-DCMAKE_UNITY_BUILD=ON"
bg_pid=""
bg_tests() {  # NAME LOG COMMAND...
  bg_name=$1
  bg_log=$2
  shift 2
  bg_start=$(date +%s)
  printf '\n==== %s (in the background, log %s) ====\n' "$bg_name" "$bg_log"
  ( rc=0; "$@" >"$bg_log" 2>&1 || rc=$?; echo "$rc $(date +%s)" >"$bg_log.rc" ) &
  bg_pid=$!
}
wait_tests() {
  [ -n "$bg_pid" ] || return 0
  step "wait for $bg_name"
  wait "$bg_pid" || true
  bg_pid=""
  printf '\n==== %s: log ====\n' "$bg_name"
  cat "$bg_log"
  rc=1
  bg_end=$(date +%s)
  [ -f "$bg_log.rc" ] && read -r rc bg_end <"$bg_log.rc"
  times="$times
  $(printf '%-28s %5d s (overlapped)' "$bg_name" $((bg_end - bg_start)))"
  if [ "$rc" != 0 ]; then
    summary
    echo "FAILED: $bg_name (exit status $rc)"
    exit 1
  fi
}

# 4. libFuzzer (clang, ASan+UBSan): each target of tests/fuzz runs MLTAP_FUZZ_SECONDS (60) from
#    the corpus kept in the repository, $jobs targets at a time; only the fuzz targets and the
#    libraries they call are compiled. A crash fails the stage (its input is left in
#    build-fuzz/fuzz-artifacts/). tests/fuzz/README.md.
fuzz_build() {
  step "build (clang libFuzzer)"
  # shellcheck disable=SC2086
  cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DMLTAP_FUZZ=ON -DMLTAP_BUILD_BPF=OFF -DMLTAP_BUILD_BENCH=OFF \
    $unity $launcher >/dev/null
  nice -n 10 cmake --build build-fuzz -j "$jobs" --target mltap_fuzzers
}
fuzz_run() {
  step "fuzz (libFuzzer)"
  MLTAP_FUZZ_PARALLEL=$jobs "$root/tests/fuzz/run.sh" build-fuzz "${MLTAP_FUZZ_SECONDS:-60}"
}
if [ "$mode" = fuzz ]; then
  fuzz_build
  fuzz_run
  summary
  exit 0
fi

# 1. The main build: every test, real processes, real kernel, real servers. A fresh machine has
#    no test timings, so ctest starts from tests/ctest-costs.txt (seconds measured here): the
#    longest tests (the systemd boot after the .deb build, the demo pipeline) start first
#    instead of last.
step "build (RelWithDebInfo)"
# shellcheck disable=SC2086
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo $launcher >/dev/null
cmake --build build -j "$jobs"
mkdir -p build/Testing/Temporary
[ -f build/Testing/Temporary/CTestCostData.txt ] ||
  cp "$root/tests/ctest-costs.txt" build/Testing/Temporary/CTestCostData.txt
main_tests="ctest --test-dir build --output-on-failure --timeout 900 -j $test_jobs"
if [ "$mode" = quick ]; then
  step "tests (main build)"
  $main_tests
  summary
  exit 0
fi
# shellcheck disable=SC2086
bg_tests "tests (main build)" build/ctest.log $main_tests

# 2. ASan + UBSan: the C++ tests (label cxx), which exercise the code with real processes, rings,
#    kernel probes and HTTP servers.
step "build (ASan+UBSan)"
# shellcheck disable=SC2086
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLTAP_SANITIZE=address \
  -DMLTAP_BUILD_PYTHON=OFF -DMLTAP_BUILD_BENCH=OFF $unity $launcher >/dev/null
nice -n 10 cmake --build build-asan -j "$jobs" --target mltap_cxx_tests
wait_tests
asan_tests() {
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure --timeout 900 -L cxx -j "$test_jobs" --no-tests=error
}
bg_tests "tests (ASan+UBSan)" build-asan/ctest.log asan_tests

# 3. TSan: the lock-free and multi-threaded code.
step "build (TSan)"
# shellcheck disable=SC2086
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLTAP_SANITIZE=thread \
  -DMLTAP_BUILD_PYTHON=OFF -DMLTAP_BUILD_BENCH=OFF -DMLTAP_BUILD_BPF=OFF $unity $launcher >/dev/null
nice -n 10 cmake --build build-tsan -j "$jobs" --target mltap_tsan_tests
wait_tests
# die_after_fork=0: the fork tests start a thread in the child of a threaded parent, which TSan
# refuses by default; the child's behaviour is still asserted.
tsan_tests() {
  TSAN_OPTIONS="halt_on_error=1 die_after_fork=0 suppressions=$root/tests/tsan.supp" \
    ctest --test-dir build-tsan --output-on-failure --timeout 900 -L tsan -j "$test_jobs" --no-tests=error
}
bg_tests "tests (TSan)" build-tsan/ctest.log tsan_tests

fuzz_build
wait_tests
fuzz_run
summary
echo "all tests passed"
