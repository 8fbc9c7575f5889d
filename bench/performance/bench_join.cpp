// Labels joined per second per core, and bytes per pending prediction, against a baseline run in
// the same process: the same join done with std::unordered_map (node per entry, no bound, no
// durability, no window bookkeeping). One thread: the join runs on the ingest thread.
//
//   bench_join --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// Each iteration: N predictions inserted (not timed), then N labels joined (timed): items/s is
// labels joined per second. `bytes_per_pending` is the table's size over N at the bound.
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <filesystem>
#include <random>
#include <unordered_map>
#include <vector>

#include "agent/performance/stream_join.hpp"

using namespace mltap;

namespace {

constexpr std::int64_t kS = 1'000'000'000;
constexpr std::int64_t kT0 = 1'700'000'000 * kS;

std::vector<std::uint64_t> ids(std::size_t n) {
  std::mt19937_64 rng(42);
  std::vector<std::uint64_t> v(n);
  for (auto& x : v) x = rng();
  return v;
}

performance::PerformanceConfig config(std::size_t n) {
  performance::PerformanceConfig c;
  c.max_pending = n;
  c.max_pending_bytes = 1ull << 40;
  c.window = std::chrono::hours(1);
  c.label_ttl = std::chrono::hours(24);
  return c;
}

void join_labels(benchmark::State& state, bool durable) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto v = ids(n);
  const std::string dir = durable ? "/var/tmp/mltap-bench-join-" + std::to_string(::getpid()) : "";
  double bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    if (durable) {
      std::filesystem::remove_all(dir);
      std::filesystem::create_directories(dir);
    }
    auto j = std::make_unique<performance::StreamJoin>(
        performance::PendingTable::Identity{"bench/pred", "bench/labels", format::Task::binary, 0},
        config(n), dir);
    for (std::size_t i = 0; i < n; ++i) j->prediction(v[i], kT0 + static_cast<std::int64_t>(i), 0.5, kT0);
    bytes = static_cast<double>(j->state().table_bytes);
    state.ResumeTiming();
    for (std::size_t i = 0; i < n; ++i) j->label(v[i], kT0 + kS, 1.0, kT0 + kS);
    j->flush();
    state.PauseTiming();
    benchmark::DoNotOptimize(j->state().counters.joined);
    j.reset();
    state.ResumeTiming();
  }
  if (durable) std::filesystem::remove_all(dir);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
  state.counters["bytes_per_pending"] = bytes / static_cast<double>(n);
}

void BM_JoinLabels(benchmark::State& state) { join_labels(state, false); }
void BM_JoinLabelsStateDir(benchmark::State& state) { join_labels(state, true); }

// Baseline: find the prediction, move the pair out, erase it.
void BM_UnorderedMapJoin(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto v = ids(n);
  struct Pending {
    std::int64_t ts;
    double value;
  };
  std::vector<std::pair<double, double>> joined;
  joined.reserve(n);
  for (auto _ : state) {
    state.PauseTiming();
    std::unordered_map<std::uint64_t, Pending> m;
    m.reserve(n);
    for (std::size_t i = 0; i < n; ++i) m.emplace(v[i], Pending{kT0 + static_cast<std::int64_t>(i), 0.5});
    joined.clear();
    state.ResumeTiming();
    for (std::size_t i = 0; i < n; ++i) {
      auto it = m.find(v[i]);
      if (it != m.end()) {
        joined.emplace_back(it->second.value, 1.0);
        m.erase(it);
      }
    }
    benchmark::DoNotOptimize(joined.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

}  // namespace

BENCHMARK(BM_UnorderedMapJoin)->Arg(1'000'000)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_JoinLabels)->Arg(1'000'000)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_JoinLabelsStateDir)->Arg(1'000'000)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_JoinLabels)->Arg(10'000'000)->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK_MAIN();
