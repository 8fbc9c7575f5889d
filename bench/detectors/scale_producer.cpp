// Load generator for bench/detectors/stream_scale.py: one process opening many streams with the
// C++ SDK and writing each at a fixed row rate, cheaply enough that 1,000 streams x 100 rows/s of
// 32 features leave the CPU to the agent being measured (the Python producer spent more than the
// agent at that count on 2 cores).
//
//   scale_producer FIRST COUNT FEATURES RATE [RING_BYTES]
//
// Opens streams scale/sFIRST .. scale/s(FIRST+COUNT-1) (float64 features f0..f{F-1}, one lane,
// sampling off, RING_BYTES per lane, default 64 KiB) in $MLTAP_NAMESPACE. Every 100 ms (absolute
// timer) each stream gets one write_batch of RATE/10 rows of standard-normal values, the streams'
// writes spread evenly over the 100 ms so that the agent sees a steady trickle, not a burst.
// Prints "READY" once every stream is open, and on SIGTERM/SIGINT "WRITTEN <rows> <committed>"
// (the SDK's own counters summed over the streams) and exits.
#include <time.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "mltap/stream.hpp"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

constexpr std::int64_t kTickNs = 100'000'000;
constexpr int kSlices = 10;  // each tick's streams are written in 10 groups, 10 ms apart

void add_ns(timespec& t, std::int64_t ns) {
  t.tv_nsec += ns;
  while (t.tv_nsec >= 1'000'000'000) {
    t.tv_nsec -= 1'000'000'000;
    ++t.tv_sec;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5 || argc > 6) {
    std::fprintf(stderr, "usage: %s FIRST COUNT FEATURES RATE [RING_BYTES]\n", argv[0]);
    return 2;
  }
  const long first = std::strtol(argv[1], nullptr, 10);
  const long count = std::strtol(argv[2], nullptr, 10);
  const long features = std::strtol(argv[3], nullptr, 10);
  const double rate = std::strtod(argv[4], nullptr);
  const unsigned long long ring = argc == 6 ? std::strtoull(argv[5], nullptr, 10) : 64ull << 10;
  if (first < 0 || count <= 0 || count > 100000 || features <= 0 || features > 4096 ||
      !(rate > 0) || rate > 1e6) {
    std::fprintf(stderr, "scale_producer: bad arguments\n");
    return 2;
  }
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);

  mltap::StreamOptions o;
  o.component = "scale";
  o.dtype = mltap::DType::float64;
  o.sampling_budget = 0;
  o.ring_bytes = ring;
  o.lanes = 1;
  for (long f = 0; f < features; ++f) o.features.push_back("f" + std::to_string(f));
  std::vector<mltap::Stream> streams;
  streams.reserve(static_cast<std::size_t>(count));
  for (long i = 0; i < count; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "scale/s%04ld", first + i);
    streams.emplace_back(name, o);
  }

  // 64 batches' worth of values; each write starts at a different offset into the pool.
  const std::size_t per_tick = static_cast<std::size_t>(std::max(1.0, rate / 10 + 0.5));
  const std::size_t cols = static_cast<std::size_t>(features);
  std::vector<double> pool((64 + 1) * per_tick * cols);
  std::mt19937_64 rng(static_cast<std::uint64_t>(first) + 1);
  std::normal_distribution<double> normal;
  for (double& v : pool) v = normal(rng);

  std::printf("READY\n");
  std::fflush(stdout);
  timespec next{};
  clock_gettime(CLOCK_MONOTONIC, &next);
  std::uint64_t tick = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    for (int slice = 0; slice < kSlices && !g_stop.load(std::memory_order_relaxed); ++slice) {
      for (std::size_t i = static_cast<std::size_t>(slice); i < streams.size(); i += kSlices) {
        const std::size_t off = ((tick * 7 + i * 13) % 64) * per_tick * cols;
        streams[i].write_batch(pool.data() + off, per_tick, static_cast<std::uint32_t>(cols));
      }
      add_ns(next, kTickNs / kSlices);
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr) != 0 &&
             !g_stop.load(std::memory_order_relaxed)) {
      }
    }
    ++tick;
  }
  std::uint64_t written = 0, committed = 0;
  for (const auto& s : streams) {
    const mltap::StreamStats st = s.stats();
    written += st.rows_written;
    committed += st.rows_committed;
  }
  std::printf("WRITTEN %llu %llu\n", static_cast<unsigned long long>(written),
              static_cast<unsigned long long>(committed));
  std::fflush(stdout);
  return 0;
}
