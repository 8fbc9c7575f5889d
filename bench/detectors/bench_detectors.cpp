// Detector engine costs, each next to its baselines in the same run:
//   ingest: feature values/s through quality + moments + reference-bin counting (+ staging),
//           vs reading the same values (sum), one prometheus-cpp Histogram::Observe per value,
//           and one KLL sketch update per value;
//   window close at 1,000 features (statistics, decisions, snapshot publish);
//   memory per numeric feature (engine accounting and malloc'ed bytes).
// Run: bench_detectors --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <malloc.h>

#include <algorithm>
#include <random>

#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "agent/detectors/engine.hpp"
#include "agent/detectors/profile.hpp"
#include "agent/detectors/sketches.hpp"

using namespace mltap;
using namespace mltap::detectors;

namespace {

constexpr std::size_t kCols = 30;

std::vector<double> gaussian_rows(std::size_t rows, std::size_t cols, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d;
  std::vector<double> v(rows * cols);
  for (auto& x : v) x = d(g);
  return v;
}

struct Harness {
  DetectorEngine engine;
  core::StreamInfo info;
  std::uint32_t shape[1];
  std::uint64_t now = 1700000000ULL * 1000000000ULL;
  std::size_t cols;
  Harness(EngineConfig c, std::size_t cols_, format::StreamKind kind = format::StreamKind::features)
      : engine(std::move(c)), cols(cols_) {
    info.name = "bench";
    info.kind = kind;
    shape[0] = static_cast<std::uint32_t>(cols);
  }
  void feed(const std::vector<double>& v, std::size_t rows_per_batch) {
    core::DecodedBatch b;
    b.stream = &info;
    b.dtype = format::DType::float64;
    b.row_shape = shape;
    b.cols = cols;
    const std::size_t rows = v.size() / cols;
    for (std::size_t r = 0; r < rows; r += rows_per_batch) {
      b.rows = std::min(rows_per_batch, rows - r);
      b.values = std::span<const double>(v.data() + r * cols, b.rows * cols);
      b.timestamp_ns = now;
      engine.on_batch(b);
    }
  }
};

EngineConfig bench_config() {
  EngineConfig c;
  c.defaults.window_time = std::chrono::nanoseconds(0);
  c.max_features_per_stream = 4096;
  c.defaults.embedding.min_width = 65536;  // 1,000 columns stay 1,000 numeric features here
  return c;
}

// ---- ingest ---------------------------------------------------------------------------------

void BM_Baseline_ReadValues(benchmark::State& st) {
  const auto v = gaussian_rows(65536, kCols, 1);
  for (auto _ : st) {
    double s = 0;
    for (double x : v) s += x;
    benchmark::DoNotOptimize(s);
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * v.size()));
}
BENCHMARK(BM_Baseline_ReadValues);

void BM_Engine_Ingest(benchmark::State& st) {
  Harness h(bench_config(), kCols);
  h.feed(gaussian_rows(25000, kCols, 2), 64);  // pin the reference first
  const auto v = gaussian_rows(65536, kCols, 3);
  const auto rows_per_batch = static_cast<std::size_t>(st.range(0));
  for (auto _ : st) h.feed(v, rows_per_batch);
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * v.size()));
  h.engine.publish_now();
  st.counters["windows"] = static_cast<double>(h.engine.snapshot()->counters.windows_closed);
}
BENCHMARK(BM_Engine_Ingest)->Arg(1)->Arg(16)->Arg(256)->Arg(4096);

// Ingest under `c`, records of range(0) rows, after pinning the reference.
void ingest_with(benchmark::State& st, const EngineConfig& c) {
  Harness h(c, kCols);
  h.feed(gaussian_rows(25000, kCols, 2), 64);
  const auto v = gaussian_rows(65536, kCols, 3);
  const auto rows_per_batch = static_cast<std::size_t>(st.range(0));
  for (auto _ : st) h.feed(v, rows_per_batch);
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * v.size()));
}

// The same without the sequential detectors (CUSUM on every record, Page-Hinkley per block): the
// baseline that prices them in the same run.
void BM_Engine_IngestNoSequential(benchmark::State& st) {
  auto c = bench_config();
  c.defaults.sequential.enabled = false;
  ingest_with(st, c);
}
BENCHMARK(BM_Engine_IngestNoSequential)->Arg(16)->Arg(256);

// The same without window drift's fast looks (drift.look_records 0: windows decide only when they
// close): the baseline that prices the looks in the same run (docs/detectors.md, "Fast looks").
void BM_Engine_IngestNoLooks(benchmark::State& st) {
  auto c = bench_config();
  c.defaults.drift.look_records = 0;
  ingest_with(st, c);
}
BENCHMARK(BM_Engine_IngestNoLooks)->Arg(1)->Arg(16)->Arg(256);

void BM_Engine_IngestEmbeddings768(benchmark::State& st) {
  const std::size_t dims = 768;
  auto c = bench_config();
  c.defaults.embedding.min_width = 256;
  Harness h(c, dims, format::StreamKind::embeddings);
  h.feed(gaussian_rows(21000, dims, 4), 64);
  const auto v = gaussian_rows(4096, dims, 5);
  for (auto _ : st) h.feed(v, 64);
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * v.size()));
}
BENCHMARK(BM_Engine_IngestEmbeddings768);

void BM_Baseline_PrometheusHistogramPerValue(benchmark::State& st) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& fam = prometheus::BuildHistogram().Name("x").Help("x").Register(*registry);
  std::vector<prometheus::Histogram*> hs;
  prometheus::Histogram::BucketBoundaries b;
  for (int i = -10; i <= 10; ++i) b.push_back(i * 0.3);
  for (std::size_t c = 0; c < kCols; ++c) hs.push_back(&fam.Add({{"f", std::to_string(c)}}, b));
  const auto v = gaussian_rows(8192, kCols, 6);
  for (auto _ : st) {
    for (std::size_t i = 0; i < v.size(); ++i) hs[i % kCols]->Observe(v[i]);
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * v.size()));
}
BENCHMARK(BM_Baseline_PrometheusHistogramPerValue);

void BM_Baseline_KllSketchPerValue(benchmark::State& st) {
  std::vector<KllSketch> sk(kCols, KllSketch(200));
  const auto v = gaussian_rows(65536, kCols, 7);
  for (auto _ : st) {
    for (std::size_t i = 0; i < v.size(); ++i) sk[i % kCols].update(v[i]);
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * v.size()));
}
BENCHMARK(BM_Baseline_KllSketchPerValue);

// ---- window close ---------------------------------------------------------------------------

void BM_WindowClose(benchmark::State& st) {
  const auto features = static_cast<std::size_t>(st.range(0));
  auto c = bench_config();
  c.defaults.pin_records = 4000;
  c.defaults.window_records = 1000000000;  // only flush() closes windows here
  Harness h(c, features);
  h.feed(gaussian_rows(4000, features, 8), 64);
  const auto v = gaussian_rows(128, features, 9);
  for (auto _ : st) {
    st.PauseTiming();
    h.feed(v, 128);
    st.ResumeTiming();
    h.now += 1000000000ULL;
    h.engine.flush(h.now);  // every feature's statistics, the decisions, the snapshot
  }
  st.counters["features"] = static_cast<double>(features);
}
BENCHMARK(BM_WindowClose)->Arg(30)->Arg(1000)->Unit(benchmark::kMillisecond);

// ---- profile build --------------------------------------------------------------------------
// build_profile on 10^6 rows x 30 features (edges from a stratified sample, exact counts) next to
// one std::sort of every column (what exact quantile edges cost at least) and one pass reading
// the values, on the same data.

const std::vector<double>& million_rows() {
  static const auto v = gaussian_rows(1000000, kCols, 11);
  return v;
}

void BM_ProfileBuild(benchmark::State& st) {
  const auto& v = million_rows();
  for (auto _ : st) {
    auto p = build_profile(v, kCols, {}, ProfileOptions{});
    benchmark::DoNotOptimize(p.features.data());
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * v.size()));
}
BENCHMARK(BM_ProfileBuild)->Unit(benchmark::kMillisecond);

void BM_Baseline_SortEveryColumn(benchmark::State& st) {
  const auto& v = million_rows();
  const std::size_t n = v.size() / kCols;
  std::vector<double> col(n);
  for (auto _ : st) {
    for (std::size_t j = 0; j < kCols; ++j) {
      for (std::size_t r = 0; r < n; ++r) col[r] = v[r * kCols + j];
      std::sort(col.begin(), col.end());
      benchmark::DoNotOptimize(col.data());
    }
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * v.size()));
}
BENCHMARK(BM_Baseline_SortEveryColumn)->Unit(benchmark::kMillisecond);

void BM_Baseline_ReadMillionRows(benchmark::State& st) {
  const auto& v = million_rows();
  for (auto _ : st) {
    double s = 0;
    for (double x : v) s += x;
    benchmark::DoNotOptimize(s);
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * v.size()));
}
BENCHMARK(BM_Baseline_ReadMillionRows)->Unit(benchmark::kMillisecond);

// ---- memory ---------------------------------------------------------------------------------

void BM_MemoryPerNumericFeature(benchmark::State& st) {
  const std::size_t features = 1000;
  double engine_bytes = 0, malloc_bytes = 0, pinning_bytes = 0;
  for (auto _ : st) {
    const auto rows = gaussian_rows(21000, features, 10);
    const auto before = mallinfo2().uordblks;
    {
      Harness h(bench_config(), features);
      h.feed(std::vector<double>(rows.begin(), rows.begin() + 5000 * features), 64);
      pinning_bytes = static_cast<double>(h.engine.memory_bytes()) / features;
      h.feed(std::vector<double>(rows.begin() + 5000 * features, rows.end()), 64);
      h.engine.flush(h.now);
      engine_bytes = static_cast<double>(h.engine.memory_bytes()) / features;
      malloc_bytes = static_cast<double>(mallinfo2().uordblks - before) / features;
    }
  }
  st.counters["engine_bytes_per_feature"] = engine_bytes;
  st.counters["malloc_bytes_per_feature"] = malloc_bytes;  // incl. the published snapshot
  st.counters["pinning_bytes_per_feature"] = pinning_bytes;
  st.counters["goal_bytes"] = 16384;
}
BENCHMARK(BM_MemoryPerNumericFeature)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
