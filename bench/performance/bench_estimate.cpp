// The per-prediction cost of label-free estimates (CBPE): predictions entered into the join with
// estimates (a fitted reference: each prediction is calibrated and added to its window's sums)
// against the same join without (performance.reference_pairs = 0), in the same process. The
// ratio of the medians is the cost of estimation relative to the join itself.
//
//   bench_estimate --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// Each iteration: a new in-memory StreamJoin (and, with estimates, its reference of 2,000 joined
// pairs: not timed), then N predictions with random scores (timed): items/s is predictions.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "agent/performance/stream_join.hpp"

using namespace mltap;

namespace {

constexpr std::int64_t kS = 1'000'000'000;
constexpr std::int64_t kT0 = 1'700'000'000 * kS;
constexpr std::uint64_t kReference = 2000;

void predictions(benchmark::State& state, bool estimates) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<std::uint64_t> ids(n + kReference);
  std::vector<double> scores(n + kReference);
  for (auto& x : ids) x = rng();
  for (auto& s : scores) s = u(rng);
  performance::PerformanceConfig c;
  c.max_pending = n + kReference;
  c.max_pending_bytes = 1ull << 40;
  c.window = std::chrono::minutes(1);  // many windows: the sums of several are touched
  c.label_ttl = std::chrono::hours(24);
  c.reference_pairs = estimates ? kReference : 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto j = std::make_unique<performance::StreamJoin>(
        performance::PendingTable::Identity{"bench/pred", "bench/labels", format::Task::binary, 0}, c, "");
    for (std::size_t i = 0; i < kReference; ++i) {
      j->prediction(ids[i], kT0, scores[i], kT0);
      j->label(ids[i], kT0 + kS, u(rng) < scores[i] * scores[i] ? 1.0 : 0.0, kT0 + kS);
    }
    state.ResumeTiming();
    for (std::size_t i = kReference; i < n + kReference; ++i) {
      const std::int64_t ts = kT0 + static_cast<std::int64_t>(i) * 1'000'000;  // 1 ms apart
      j->prediction(ids[i], ts, scores[i], ts);
    }
    state.PauseTiming();
    benchmark::DoNotOptimize(j->state().counters.predictions);
    j.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

void BM_PredictionsJoinOnly(benchmark::State& state) { predictions(state, false); }
void BM_PredictionsWithEstimates(benchmark::State& state) { predictions(state, true); }

}  // namespace

BENCHMARK(BM_PredictionsJoinOnly)->Arg(1'000'000)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_PredictionsWithEstimates)->Arg(1'000'000)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_MAIN();
