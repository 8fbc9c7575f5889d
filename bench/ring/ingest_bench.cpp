// Agent ingest rate with the first statistics, beside a plain loop that sums the same float values
// from memory. Each iteration: (untimed) a producer fills the ring with 32768 rows of 64 float32
// features; (timed) the reader drains them. Stages are measured separately so that a miss can be
// located:
//   Ingest/PollOnly         SegmentReader::poll (protocol, validation, copy out of the ring)
//   Ingest/PollDecode       + decode_to_double
//   Ingest/PollDecodeStats  + FeatureStats::add: what the ingest thread does per record
//   Ingest/RunOnce          Ingest::run_once (scan, poll, decode, stats, snapshot) on one thread
//   Ingest/SumBaseline      a plain loop summing the same 32768 x 64 floats
//   Ingest/SumBaseline8     the same with 8 accumulators (memory-bound rather than add-latency-bound)
//   Ingest/DecodeStatsOnly  decode + stats on the same floats without the ring
// The argument is rows per record (1: one write per row; 64: write_batch of 64 rows).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include <spdlog/spdlog.h>

#include "bench_util.hpp"
#include "agent/ingest/decode.hpp"
#include "agent/ingest/feature_stats.hpp"
#include "agent/ingest/ingest.hpp"
#include "agent/ingest/segment.hpp"
#include "mltap/stream.hpp"

namespace {

using mltap::Stream;
using mltap::StreamOptions;
namespace bench = mltap::bench;
namespace ingest = mltap::ingest;

constexpr std::size_t kFeatures = 64;
constexpr std::size_t kRowsPerFill = 32768;  // 8 MiB of payload, fits a 16 MiB ring
constexpr std::uint64_t kRingBytes = 16u << 20;

// Feature values the producer writes: normal, with the odd NaN as in real data.
std::vector<float> make_values() {
  std::vector<float> v(kRowsPerFill * kFeatures);
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(10.0f, 3.0f);
  for (auto& x : v) x = dist(rng);
  for (std::size_t i = 0; i < v.size(); i += 9973) v[i] = std::numeric_limits<float>::quiet_NaN();
  return v;
}

const std::vector<float>& values() {
  static const std::vector<float> v = make_values();
  return v;
}

// A producer stream and the agent's view of it, in a private namespace and directory.
struct Ring {
  bench::TempShmDir dir;
  std::unique_ptr<Stream> producer;
  std::unique_ptr<ingest::SegmentReader> reader;

  explicit Ring(bool open_reader = true) {
    StreamOptions o = bench::row_stream_options(dir, kFeatures);
    o.ring_bytes = kRingBytes;
    o.lanes = 1;
    producer = std::make_unique<Stream>("bench/ingest", o);
    if (!producer->has_ring()) throw std::runtime_error("no ring");
    // One row claims the lane (and faults it in) before anything is timed.
    producer->write(std::span<const float>(values().data(), kFeatures));
    if (!open_reader) return;
    ingest::RejectReason why{};
    std::string detail;
    reader = ingest::SegmentReader::open(producer->segment_path(), {}, why, detail);
    if (!reader) throw std::runtime_error("segment refused: " + detail);
    // Read the warm-up row and bring the ring's pages into the reader's mapping.
    class Drain : public ingest::RecordVisitor {
      void on_record(const ingest::RecordView&) override {}
    } drain;
    while (reader->poll(drain).more) {
    }
  }
  ~Ring() {
    reader.reset();
    producer.reset();
  }

  void fill(std::size_t rows_per_record) {
    const float* v = values().data();
    for (std::size_t r = 0; r < kRowsPerFill; r += rows_per_record) {
      producer->write_batch(v + r * kFeatures, rows_per_record, kFeatures);
    }
  }
};

// What a detector-less ingest thread does per record, in three depths.
enum class Depth { poll, decode, stats };

class Visitor : public ingest::RecordVisitor {
 public:
  explicit Visitor(Depth depth) : depth_(depth) {
    stats_.reset(kFeatures, 10'000'000'000ull, 0);
  }
  void on_record(const ingest::RecordView& r) override {
    const std::size_t cols = static_cast<std::size_t>(r.row_elements);
    const std::size_t n = static_cast<std::size_t>(r.rows) * cols;
    values_ += n;
    if (depth_ == Depth::poll) {
      benchmark::DoNotOptimize(r.payload.data());
      return;
    }
    if (buf_.size() < n) buf_.resize(n);
    ingest::decode_to_double(r.dtype, r.payload.data(), n, buf_.data());
    if (depth_ == Depth::decode) {
      benchmark::DoNotOptimize(buf_.data());
      return;
    }
    stats_.add(std::span<const double>(buf_.data(), n), r.rows, cols);
  }
  std::uint64_t values() const noexcept { return values_; }
  const ingest::FeatureStats& stats() const noexcept { return stats_; }

 private:
  Depth depth_;
  std::vector<double> buf_;
  ingest::FeatureStats stats_;
  std::uint64_t values_ = 0;
};

void run_reader(benchmark::State& state, Depth depth) {
  const auto rows_per_record = static_cast<std::size_t>(state.range(0));
  Ring ring;
  Visitor visitor(depth);
  std::uint64_t lost = 0, invalid = 0;
  for (auto _ : state) {
    state.PauseTiming();
    ring.fill(rows_per_record);
    state.ResumeTiming();
    ingest::PollCounts c;
    do {
      c = ring.reader->poll(visitor);
      lost += c.rows_overwritten;
      invalid += c.rows_invalid;
    } while (c.more);
  }
  // Every row written must have been read: anything else means the benchmark measured less work.
  if (visitor.values() != state.iterations() * kRowsPerFill * kFeatures || lost != 0 || invalid != 0) {
    state.SkipWithError("the reader did not see every row exactly once");
    return;
  }
  if (depth == Depth::stats && visitor.stats().totals(0).values == 0) {
    state.SkipWithError("statistics saw no values");
    return;
  }
  state.counters["values_per_s"] =
      benchmark::Counter(static_cast<double>(visitor.values()), benchmark::Counter::kIsRate);
  state.counters["records_per_iter"] =
      benchmark::Counter(static_cast<double>(kRowsPerFill / rows_per_record));
}

void Ingest_PollOnly(benchmark::State& state) { run_reader(state, Depth::poll); }
void Ingest_PollDecode(benchmark::State& state) { run_reader(state, Depth::decode); }
void Ingest_PollDecodeStats(benchmark::State& state) { run_reader(state, Depth::stats); }

void Ingest_RunOnce(benchmark::State& state) {
  const auto rows_per_record = static_cast<std::size_t>(state.range(0));
  Ring ring(false);
  ingest::IngestConfig cfg;
  cfg.ns = bench::unique_namespace();
  cfg.shm_dir = ring.dir.path();
  ingest::Ingest in(cfg);
  in.run_once();  // discovers the segment and reads the warm-up row
  const auto before = in.snapshot();
  const std::uint64_t base = before->streams.empty() ? 0 : before->streams[0].records_total;
  for (auto _ : state) {
    state.PauseTiming();
    ring.fill(rows_per_record);
    state.ResumeTiming();
    in.run_once();
  }
  const auto snap = in.snapshot();
  const std::uint64_t rows = snap->streams.empty() ? 0 : snap->streams[0].records_total - base;
  if (rows != state.iterations() * kRowsPerFill ||
      snap->streams[0].features.size() != kFeatures) {
    state.SkipWithError("Ingest did not read every row exactly once");
    return;
  }
  state.counters["values_per_s"] = benchmark::Counter(static_cast<double>(rows * kFeatures),
                                                      benchmark::Counter::kIsRate);
}

// The baseline: a plain loop over the same floats, refreshed (untimed) like the ring is.
void Ingest_SumBaseline(benchmark::State& state) {
  std::vector<float> data(values().size());
  double sum = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::memcpy(data.data(), values().data(), data.size() * sizeof(float));
    state.ResumeTiming();
    for (float v : data) sum += v;
    benchmark::DoNotOptimize(sum);
  }
  state.counters["values_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * data.size()), benchmark::Counter::kIsRate);
}

// The same sum with 8 independent accumulators: not bound by the latency of one add chain.
void Ingest_SumBaseline8(benchmark::State& state) {
  std::vector<float> data(values().size());
  double total = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::memcpy(data.data(), values().data(), data.size() * sizeof(float));
    state.ResumeTiming();
    double acc[8] = {};
    for (std::size_t k = 0; k < data.size(); k += 8) {
      for (std::size_t j = 0; j < 8; ++j) acc[j] += data[k + j];
    }
    for (double a : acc) total += a;
    benchmark::DoNotOptimize(total);
  }
  state.counters["values_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * data.size()), benchmark::Counter::kIsRate);
}

// decode + statistics straight from memory: what the ring protocol adds is the difference.
void Ingest_DecodeStatsOnly(benchmark::State& state) {
  const auto rows_per_record = static_cast<std::size_t>(state.range(0));
  std::vector<float> data(values().size());
  std::vector<double> buf(rows_per_record * kFeatures);
  ingest::FeatureStats stats;
  stats.reset(kFeatures, 10'000'000'000ull, 0);
  for (auto _ : state) {
    state.PauseTiming();
    std::memcpy(data.data(), values().data(), data.size() * sizeof(float));
    state.ResumeTiming();
    for (std::size_t r = 0; r < kRowsPerFill; r += rows_per_record) {
      const std::size_t n = rows_per_record * kFeatures;
      ingest::decode_to_double(mltap::DType::float32,
                               reinterpret_cast<const std::uint8_t*>(data.data() + r * kFeatures),
                               n, buf.data());
      stats.add(std::span<const double>(buf.data(), n), rows_per_record, kFeatures);
    }
  }
  benchmark::DoNotOptimize(stats.totals(0).values);
  state.counters["values_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * data.size()), benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(Ingest_SumBaseline)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(Ingest_SumBaseline8)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(Ingest_DecodeStatsOnly)->Arg(1)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(Ingest_PollOnly)->Arg(1)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(Ingest_PollDecode)->Arg(1)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(Ingest_PollDecodeStats)->Arg(1)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(Ingest_RunOnce)->Arg(1)->Arg(64)->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);  // Ingest logs discoveries at info
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
