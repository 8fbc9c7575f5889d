// Producer-side cost of an mltap write, side by side with what the same bytes cost elsewhere:
// a plain memcpy into a rotating buffer (the physical limit), an LTTng-UST tracepoint (active and
// dormant), boost::interprocess::message_queue::try_send, and prometheus-cpp histograms (one
// Observe per feature, what users do today). Groups (benchmark name prefixes):
//   Row/      one row of 64 float32 (256 B)
//   Tensor/   one 1 MiB float32 tensor
//   Sampled/  a write the sampler drops (budget 1 row/s, far exceeded)
//   Threads/  the row write from 1 and 2 threads sharing one stream; first-write lane claims
// bench/ring/run.sh sets up the LTTng session these expect and prints medians and ratios.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include <boost/interprocess/ipc/message_queue.hpp>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "bench_util.hpp"
#include "mltap/stream.hpp"

#ifdef MLTAP_BENCH_LTTNG
#include "tp.h"
#endif

namespace {

using mltap::Stream;
using mltap::StreamOptions;
using mltap::WriteResult;
namespace bench = mltap::bench;
namespace bip = boost::interprocess;

constexpr std::size_t kFeatures = 64;
constexpr std::size_t kRowBytes = kFeatures * sizeof(float);
constexpr std::size_t kTensorFloats = (1u << 20) / sizeof(float);  // 1 MiB
constexpr std::size_t kTensorBytes = kTensorFloats * sizeof(float);

// Everything the benchmarks share, created once in main() so that benchmark threads find it ready.
struct Fixture {
  bench::TempShmDir dir;
  std::unique_ptr<Stream> row;          // 64 float32 features, every row kept
  std::unique_ptr<Stream> tensor[3];    // lanes of 4, 8, 16 MiB: records up to 2, 4, 8 MiB
  std::unique_ptr<Stream> sampled;      // budget 1 row/s
  std::unique_ptr<Stream> sampled_tid;  // budget 1 row/s, rows with trace ids
  std::unique_ptr<Stream> claim;        // lane-claim measurements
  alignas(64) float row_values[kFeatures];
  alignas(64) std::uint32_t row_words[kFeatures];  // the same bits, for LTTng's integer sequence
  std::vector<float> tensor_values;
  std::vector<std::uint32_t> tensor_words;
};
Fixture* g = nullptr;

std::unique_ptr<Stream> make_stream(const char* name, std::uint32_t budget, std::uint64_t ring,
                                    std::uint32_t lanes, bool row_schema) {
  StreamOptions o = bench::row_stream_options(g->dir, row_schema ? kFeatures : 0);
  o.sampling_budget = budget;
  o.ring_bytes = ring;
  o.lanes = lanes;
  if (!row_schema) o.row_shape = {static_cast<std::uint32_t>(kTensorFloats)};
  auto s = std::make_unique<Stream>(name, o);
  if (!s->has_ring()) throw std::runtime_error(std::string("no ring for stream ") + name);
  return s;
}

void setup() {
  g = new Fixture();
  std::mt19937 rng(42);
  std::normal_distribution<float> dist(5.0f, 2.0f);
  for (std::size_t i = 0; i < kFeatures; ++i) g->row_values[i] = dist(rng);
  std::memcpy(g->row_words, g->row_values, kRowBytes);
  g->tensor_values.resize(kTensorFloats);
  for (auto& v : g->tensor_values) v = dist(rng);
  g->tensor_words.resize(kTensorFloats);
  std::memcpy(g->tensor_words.data(), g->tensor_values.data(), kTensorBytes);
  g->row = make_stream("bench/row", 0, 4u << 20, 4, true);
  for (int i = 0; i < 3; ++i) {
    std::string name = "bench/tensor";
    name += std::to_string(4 << i);
    g->tensor[i] = make_stream(name.c_str(), 0, (4ull << 20) << i, 1, false);
  }
  g->sampled = make_stream("bench/sampled", 1, 64u << 10, 4, true);
  g->sampled_tid = make_stream("bench/sampled_tid", 1, 64u << 10, 4, true);
  g->claim = make_stream("bench/claim", 0, 64u << 10, 2, true);
  // Single-threaded benchmarks run on this thread: claim its lanes now, so that no timed run
  // includes the first write's fault-in of a lane (measured on its own in Threads/).
  const std::uint32_t shape[1] = {static_cast<std::uint32_t>(kTensorFloats)};
  for (auto& t : g->tensor) {
    t->write_tensor(g->tensor_values.data(), mltap::DType::float32, shape, 1, {});
  }
  g->row->write(std::span<const float>(g->row_values, kFeatures));
  g->sampled->write(std::span<const float>(g->row_values, kFeatures));
  g->sampled_tid->write(std::span<const float>(g->row_values, kFeatures), mltap::TraceId{0});
}

void teardown() {
  if (!g) return;
  const auto row = g->row->stats();
  std::fprintf(stderr, "bench/row: %llu rows written, %llu committed\n",
               static_cast<unsigned long long>(row.rows_written),
               static_cast<unsigned long long>(row.rows_committed));
  delete g;  // streams unlink their segments (no agent in this namespace), then the dir goes
  g = nullptr;
}

std::span<const float> row_span() { return {g->row_values, kFeatures}; }

// Share of iterations for which `count` happened (summed over threads by Google Benchmark).
benchmark::Counter share(std::uint64_t count) {
  return benchmark::Counter(static_cast<double>(count), benchmark::Counter::kAvgIterations);
}

// ---------------------------------------------------------------------------------------------
// Row: 64 float32.

void Row_MltapWrite(benchmark::State& state) {
  Stream& s = *g->row;
  const auto row = row_span();
  std::uint64_t written = 0;
  for (auto _ : state) {
    const WriteResult r = s.write(row);
    written += r == WriteResult::written;
  }
  state.counters["written_share"] = share(written);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kRowBytes));
}

void Row_MltapWriteTraceId(benchmark::State& state) {
  Stream& s = *g->row;
  const auto row = row_span();
  std::uint64_t written = 0, id = 1;
  for (auto _ : state) {
    const WriteResult r = s.write(row, mltap::TraceId{id++});
    written += r == WriteResult::written;
  }
  state.counters["written_share"] = share(written);
}

// The physical limit: the same 256 bytes copied into a 4 MiB rotating buffer (the ring's size).
void Row_Memcpy(benchmark::State& state) {
  constexpr std::size_t kRing = 4u << 20;
  std::vector<std::uint8_t> ring(kRing, 1);  // touched: no page faults while timing
  std::uint64_t pos = 0;
  for (auto _ : state) {
    std::memcpy(ring.data() + (pos & (kRing - 1)), g->row_values, kRowBytes);
    pos += kRowBytes;
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kRowBytes));
}

#ifdef MLTAP_BENCH_LTTNG
void Row_LttngActive(benchmark::State& state) {
  if (!lttng_ust_tracepoint_enabled(mltap_bench, row)) {
    state.SkipWithError("mltap_bench:row is not enabled: run through bench/ring/run.sh");
    return;
  }
  for (auto _ : state) {
    lttng_ust_tracepoint(mltap_bench, row, g->row_words, static_cast<std::uint32_t>(kFeatures));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kRowBytes));
}

void Row_LttngDormant(benchmark::State& state) {
  if (lttng_ust_tracepoint_enabled(mltap_bench, row_dormant)) {
    state.SkipWithError("mltap_bench:row_dormant is enabled: it must not be");
    return;
  }
  for (auto _ : state) {
    lttng_ust_tracepoint(mltap_bench, row_dormant, g->row_words,
                         static_cast<std::uint32_t>(kFeatures));
    benchmark::ClobberMemory();
  }
}
#endif

// A queue of 1024 messages of 256 B in /dev/shm, as iceoryx/boost users would set up.
struct MessageQueue {
  std::string name = "mltap-bench-mq-" + std::to_string(::getpid());
  std::unique_ptr<bip::message_queue> q;
  MessageQueue() {
    bip::message_queue::remove(name.c_str());
    q = std::make_unique<bip::message_queue>(bip::create_only, name.c_str(), 1024, kRowBytes);
  }
  ~MessageQueue() {
    q.reset();
    bip::message_queue::remove(name.c_str());
  }
};

void Row_MqTrySendNoReader(benchmark::State& state) {
  MessageQueue mq;
  std::uint64_t refused = 0;
  for (auto _ : state) {
    refused += mq.q->try_send(g->row_values, kRowBytes, 0) ? 0 : 1;
  }
  state.counters["refused_share"] = share(refused);
}

void Row_MqTrySendWithReader(benchmark::State& state) {
  MessageQueue mq;
  std::atomic<bool> stop{false};
  std::uint64_t received = 0;
  std::thread reader([&] {
    alignas(64) std::uint8_t buf[kRowBytes];
    bip::message_queue::size_type got = 0;
    unsigned int prio = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      if (mq.q->try_receive(buf, sizeof buf, got, prio)) ++received;
    }
  });
  std::uint64_t refused = 0;
  for (auto _ : state) {
    refused += mq.q->try_send(g->row_values, kRowBytes, 0) ? 0 : 1;
  }
  stop.store(true);
  reader.join();
  state.counters["refused_share"] = share(refused);
}

// What users do today: one histogram per feature, one Observe per value.
void Row_PrometheusHistogram64(benchmark::State& state) {
  prometheus::Registry registry;
  auto& family = prometheus::BuildHistogram()
                     .Name("bench_feature_value")
                     .Help("feature values")
                     .Register(registry);
  // prometheus_client's default buckets.
  const prometheus::Histogram::BucketBoundaries buckets{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
                                                        0.5,   0.75, 1.0,   2.5,  5.0,   7.5, 10.0};
  std::vector<prometheus::Histogram*> hist;
  for (std::size_t i = 0; i < kFeatures; ++i) {
    hist.push_back(&family.Add({{"feature", bench::feature_name(i)}}, buckets));
  }
  for (auto _ : state) {
    for (std::size_t i = 0; i < kFeatures; ++i) hist[i]->Observe(g->row_values[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor: 1 MiB float32.

// Argument: ring size in MiB (4, 8 or 16): the cache footprint the writes rotate through.
Stream& tensor_stream(std::int64_t ring_mib) {
  return *g->tensor[ring_mib == 4 ? 0 : ring_mib == 8 ? 1 : 2];
}

void Tensor_MltapWrite(benchmark::State& state) {
  Stream& s = tensor_stream(state.range(0));
  const std::uint32_t shape[1] = {static_cast<std::uint32_t>(kTensorFloats)};
  std::uint64_t written = 0;
  for (auto _ : state) {
    const WriteResult r = s.write_tensor(g->tensor_values.data(), mltap::DType::float32, shape, 1, {});
    written += r == WriteResult::written;
  }
  state.counters["written_share"] = share(written);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kTensorBytes));
}

// The same MiB copied into a rotating buffer of the ring's size (the same cache footprint).
void Tensor_Memcpy(benchmark::State& state) {
  const std::size_t kRing = static_cast<std::size_t>(state.range(0)) << 20;
  std::vector<std::uint8_t> ring(kRing, 1);
  std::uint64_t pos = 0;
  for (auto _ : state) {
    std::memcpy(ring.data() + (pos & (kRing - 1)), g->tensor_values.data(), kTensorBytes);
    pos += kTensorBytes;
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kTensorBytes));
}

// The same MiB copied over and over into one 1 MiB buffer (hot cache; REFERENCE.md's figure).
void Tensor_MemcpyHot(benchmark::State& state) {
  std::vector<std::uint8_t> dst(kTensorBytes, 1);
  for (auto _ : state) {
    std::memcpy(dst.data(), g->tensor_values.data(), kTensorBytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kTensorBytes));
}

#ifdef MLTAP_BENCH_LTTNG
void Tensor_LttngActive(benchmark::State& state) {
  if (!lttng_ust_tracepoint_enabled(mltap_bench, tensor)) {
    state.SkipWithError("mltap_bench:tensor is not enabled: run through bench/ring/run.sh");
    return;
  }
  for (auto _ : state) {
    lttng_ust_tracepoint(mltap_bench, tensor, g->tensor_words.data(),
                         static_cast<std::uint32_t>(kTensorFloats));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kTensorBytes));
}

// In a channel with default subbuffers the event does not fit: LTTng drops it (and counts it).
void Tensor_LttngDefaultChannel(benchmark::State& state) {
  if (!lttng_ust_tracepoint_enabled(mltap_bench, tensor_default_channel)) {
    state.SkipWithError("mltap_bench:tensor_default_channel is not enabled: run through run.sh");
    return;
  }
  for (auto _ : state) {
    lttng_ust_tracepoint(mltap_bench, tensor_default_channel, g->tensor_words.data(),
                         static_cast<std::uint32_t>(kTensorFloats));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kTensorBytes));
}
#endif

// ---------------------------------------------------------------------------------------------
// Sampled out: after a warm-up far above the budget, the sampler keeps ~1 row/s.

// Writes flat out for 0.6 s (two sampling windows of ~268 ms) so that the keep share is set.
void warm_up_sampler(Stream& s, bool trace_ids) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(600);
  std::uint64_t id = 1u << 30;
  while (std::chrono::steady_clock::now() < until) {
    for (int i = 0; i < 1000; ++i) {
      if (trace_ids) s.write(row_span(), mltap::TraceId{id++});
      else s.write(row_span());
    }
  }
}

void Sampled_MltapWrite(benchmark::State& state) {
  static bool warm = false;
  Stream& s = *g->sampled;
  if (!warm) warm_up_sampler(s, false);
  warm = true;
  const auto row = row_span();
  std::uint64_t sampled_out = 0;
  for (auto _ : state) {
    sampled_out += s.write(row) == WriteResult::sampled_out;
  }
  state.counters["sampled_out_share"] = share(sampled_out);
}

void Sampled_MltapWriteTraceId(benchmark::State& state) {
  static bool warm = false;
  Stream& s = *g->sampled_tid;
  if (!warm) warm_up_sampler(s, true);
  warm = true;
  const auto row = row_span();
  std::uint64_t sampled_out = 0, id = 1;
  for (auto _ : state) {
    sampled_out += s.write(row, mltap::TraceId{id++}) == WriteResult::sampled_out;
  }
  state.counters["sampled_out_share"] = share(sampled_out);
}

// ---------------------------------------------------------------------------------------------
// Threads: one stream written by 1 or 2 threads (each owns a lane). Google Benchmark reports
// CPU time per write per thread.

void Threads_MltapWrite(benchmark::State& state) {
  Stream& s = *g->row;
  const auto row = row_span();
  std::uint64_t written = 0;
  for (auto _ : state) {
    written += s.write(row) == WriteResult::written;
  }
  state.counters["written_share"] = share(written);
}

void Threads_Memcpy(benchmark::State& state) {
  constexpr std::size_t kRing = 4u << 20;
  std::vector<std::uint8_t> ring(kRing, 1);  // per thread, like a lane
  std::uint64_t pos = 0;
  for (auto _ : state) {
    std::memcpy(ring.data() + (pos & (kRing - 1)), g->row_values, kRowBytes);
    pos += kRowBytes;
    benchmark::ClobberMemory();
  }
}

// First write of a new thread: claims a lane that an earlier (exited) thread released.
// Manual time: only the first write is timed; `second_write_ns` is the next write.
void Threads_FirstWriteReusedLane(benchmark::State& state) {
  Stream& s = *g->claim;
  double second_total = 0;
  for (auto _ : state) {
    double first = 0, second = 0;
    std::thread t([&] {
      const auto t0 = std::chrono::steady_clock::now();
      s.write(row_span());
      const auto t1 = std::chrono::steady_clock::now();
      s.write(row_span());
      const auto t2 = std::chrono::steady_clock::now();
      first = std::chrono::duration<double>(t1 - t0).count();
      second = std::chrono::duration<double>(t2 - t1).count();
    });
    t.join();
    state.SetIterationTime(first);
    second_total += second;
  }
  state.counters["second_write_ns"] = benchmark::Counter(
      second_total * 1e9 / static_cast<double>(state.iterations()));
}

// First write on a never-used lane of a new 4 MiB stream: the lane's pages are faulted in
// then, so that later writes never take a page fault.
void Threads_FirstWriteFreshLane(benchmark::State& state) {
  for (auto _ : state) {
    StreamOptions o = bench::row_stream_options(g->dir, kFeatures);
    o.lanes = 1;
    Stream s("bench/fresh", o);
    const auto t0 = std::chrono::steady_clock::now();
    s.write(row_span());
    const auto t1 = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
}

}  // namespace

BENCHMARK(Row_MltapWrite);
BENCHMARK(Row_MltapWriteTraceId);
BENCHMARK(Row_Memcpy);
#ifdef MLTAP_BENCH_LTTNG
BENCHMARK(Row_LttngActive);
BENCHMARK(Row_LttngDormant);
#endif
BENCHMARK(Row_MqTrySendNoReader);
BENCHMARK(Row_MqTrySendWithReader);
BENCHMARK(Row_PrometheusHistogram64);

BENCHMARK(Tensor_MltapWrite)->Arg(4)->Arg(8)->Arg(16);
BENCHMARK(Tensor_Memcpy)->Arg(4)->Arg(8)->Arg(16);
BENCHMARK(Tensor_MemcpyHot);
#ifdef MLTAP_BENCH_LTTNG
BENCHMARK(Tensor_LttngActive);
BENCHMARK(Tensor_LttngDefaultChannel);
#endif

BENCHMARK(Sampled_MltapWrite);
BENCHMARK(Sampled_MltapWriteTraceId);

BENCHMARK(Threads_MltapWrite)->Threads(1)->Threads(2);
BENCHMARK(Threads_Memcpy)->Threads(1)->Threads(2);
BENCHMARK(Threads_FirstWriteReusedLane)->UseManualTime()->Iterations(2000);
BENCHMARK(Threads_FirstWriteFreshLane)->UseManualTime()->Iterations(20)->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  try {
    setup();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ring_producer: %s\n", e.what());
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  teardown();
  return 0;
}
