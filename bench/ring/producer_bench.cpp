// Producer-side cost of an mltap write, side by side with what the same bytes cost elsewhere:
// a plain memcpy into a rotating buffer (the physical limit), an LTTng-UST tracepoint (active and
// dormant), boost::interprocess::message_queue::try_send, and prometheus-cpp histograms (one
// Observe per feature, what users do today). Groups (benchmark name prefixes):
//   Write/    one row of 64 float32 (256 B) through every SDK entry point (api: 0 C++
//             Stream::write, 1 C mltap_write_f32, 2 C mltap_write), with and without a trace id,
//             with and without mltapd's reader (the ingest library, polling the namespace on its
//             own thread as in mltapd)
//   Sampled/  the same entry points for a write the sampler drops (budget 1 row/s, far exceeded)
//   Row/      baselines for one row: memcpy, LTTng, message queue, prometheus-cpp
//   Tensor/   one 1 MiB float32 tensor
//   Threads/  the row write from 1 and 2 threads sharing one stream; first-write lane claims
// The C ABI is called through libmltap.so (dlopen, as a C program linking it would: an indirect
// call into the shared library), the C++ API through the static library.
// bench/ring/run.sh sets up the LTTng session these expect and prints medians and ratios.
#include <benchmark/benchmark.h>
#include <dlfcn.h>

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
#include "agent/ingest/ingest.hpp"
#include "mltap/mltap.h"
#include "mltap/stream.hpp"

#include <spdlog/spdlog.h>

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

// The C ABI as a C program sees it: the functions of libmltap.so.
struct CApi {
  void* handle = nullptr;
  decltype(&mltap_stream_options_init) options_init = nullptr;
  decltype(&mltap_stream_open) open = nullptr;
  decltype(&mltap_stream_close) close = nullptr;
  decltype(&mltap_write) write = nullptr;
  decltype(&mltap_write_f32) write_f32 = nullptr;
  decltype(&mltap_get_stats) get_stats = nullptr;

  void load() {
    handle = ::dlopen(MLTAP_SHARED_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (!handle) throw std::runtime_error(std::string("dlopen: ") + ::dlerror());
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(handle, name));
      if (!fn) throw std::runtime_error(std::string("dlsym ") + name);
    };
    sym(options_init, "mltap_stream_options_init");
    sym(open, "mltap_stream_open");
    sym(close, "mltap_stream_close");
    sym(write, "mltap_write");
    sym(write_f32, "mltap_write_f32");
    sym(get_stats, "mltap_get_stats");
  }
};

// Entry points of the Write/ and Sampled/ matrices (benchmark argument `api`).
enum Api : int { kCpp = 0, kCF32 = 1, kCWrite = 2, kApis = 3 };

// One reader condition: streams in a private directory and namespace, and for `reader` the
// agent's ingest library polling that namespace on its own thread, as mltapd does.
struct Side {
  bench::TempShmDir dir;
  std::unique_ptr<mltap::ingest::Ingest> reader;
  std::unique_ptr<Stream> row[kApis];           // kCpp only; every row kept
  mltap_stream* c_row[kApis] = {};              // kCF32, kCWrite
  std::unique_ptr<Stream> sampled[kApis][2];    // [api][trace id]; budget 1 row/s
  mltap_stream* c_sampled[kApis][2] = {};
  std::string row_name[kApis];
};

// Everything the benchmarks share, created once in main() so that benchmark threads find it ready.
struct Fixture {
  CApi c;
  Side sides[2];  // [reader]
  bench::TempShmDir dir;
  std::unique_ptr<Stream> row;          // 64 float32 features, every row kept
  std::unique_ptr<Stream> tensor[3];    // lanes of 4, 8, 16 MiB: records up to 2, 4, 8 MiB
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

mltap_stream* open_c_stream(const Side& side, const std::string& name, std::uint32_t budget,
                            std::uint64_t ring) {
  static std::vector<std::string> names;
  if (names.empty()) {
    for (std::size_t i = 0; i < kFeatures; ++i) names.push_back(bench::feature_name(i));
  }
  static std::vector<const char*> pointers;
  if (pointers.empty()) {
    for (const auto& n : names) pointers.push_back(n.c_str());
  }
  mltap_stream_options o;
  g->c.options_init(&o);
  o.component = "bench";
  o.feature_names = pointers.data();
  o.feature_count = static_cast<std::uint32_t>(kFeatures);
  o.dtype = MLTAP_FLOAT32;
  o.sampling_budget = budget;
  o.ring_bytes = ring;
  o.lanes = 4;
  const std::string ns = bench::unique_namespace();
  o.ns = ns.c_str();
  o.shm_dir = side.dir.path().c_str();
  mltap_stream* s = nullptr;
  char err[256] = {};
  if (g->c.open(name.c_str(), &o, &s, err, sizeof err) != 0) {
    throw std::runtime_error("mltap_stream_open " + name + ": " + err);
  }
  return s;
}

// One write of the row through `api`, untimed (warm-ups, lane claims).
void write_row(Side& side, Api api, bool sampled, bool tid, std::uint64_t id) {
  const std::uint32_t shape[1] = {static_cast<std::uint32_t>(kFeatures)};
  const std::size_t t = tid ? 1 : 0;
  if (api == kCpp) {
    Stream& s = sampled ? *side.sampled[api][t] : *side.row[api];
    if (tid) s.write(std::span<const float>(g->row_values, kFeatures), mltap::TraceId{id});
    else s.write(std::span<const float>(g->row_values, kFeatures));
    return;
  }
  mltap_stream* cs = sampled ? side.c_sampled[api][t] : side.c_row[api];
  if (api == kCF32) g->c.write_f32(cs, g->row_values, kFeatures, tid ? 1 : 0, id);
  else g->c.write(cs, g->row_values, MLTAP_FLOAT32, shape, 1, 1, tid ? &id : nullptr);
}

void setup_side(Side& side, bool with_reader) {
  const char* api_names[kApis] = {"cpp", "cf32", "cwrite"};
  for (int a = 0; a < kApis; ++a) {
    side.row_name[a] = std::string("bench/write-") + api_names[a];
    if (a == kCpp) {
      StreamOptions o = bench::row_stream_options(side.dir, kFeatures);
      o.lanes = 4;
      side.row[a] = std::make_unique<Stream>(side.row_name[a], o);
      if (!side.row[a]->has_ring()) throw std::runtime_error("no ring for " + side.row_name[a]);
    } else {
      side.c_row[a] = open_c_stream(side, side.row_name[a], 0, 4u << 20);
    }
    for (int t = 0; t < 2; ++t) {
      const std::string name = std::string("bench/sampled-") + api_names[a] + (t ? "-tid" : "");
      if (a == kCpp) {
        StreamOptions o = bench::row_stream_options(side.dir, kFeatures);
        o.sampling_budget = 1;
        o.ring_bytes = 64u << 10;
        o.lanes = 4;
        side.sampled[a][t] = std::make_unique<Stream>(name, o);
      } else {
        side.c_sampled[a][t] = open_c_stream(side, name, 1, 64u << 10);
      }
    }
    // Claim this thread's lanes now: no timed run includes a lane's first-write fault-in.
    write_row(side, static_cast<Api>(a), false, false, 0);
    for (int t = 0; t < 2; ++t) write_row(side, static_cast<Api>(a), true, t == 1, 0);
  }
  if (!with_reader) return;
  mltap::ingest::IngestConfig cfg;
  cfg.ns = bench::unique_namespace();
  cfg.shm_dir = side.dir.path();
  cfg.scan_interval = std::chrono::milliseconds(10);
  side.reader = std::make_unique<mltap::ingest::Ingest>(cfg);
  side.reader->start();
  // Wait until the reader has attached every segment.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (side.reader->fresh_snapshot(std::chrono::milliseconds(200))->streams.size() < 3 * kApis) {
    if (std::chrono::steady_clock::now() > until) {
      throw std::runtime_error("the reader did not attach the benchmark's segments");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void teardown_side(Side& side) {
  if (side.reader) side.reader->stop();
  for (int a = 0; a < kApis; ++a) {
    if (side.c_row[a]) g->c.close(side.c_row[a]);
    for (int t = 0; t < 2; ++t) {
      if (side.c_sampled[a][t]) g->c.close(side.c_sampled[a][t]);
    }
  }
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
  g->claim = make_stream("bench/claim", 0, 64u << 10, 2, true);
  // Single-threaded benchmarks run on this thread: claim its lanes now, so that no timed run
  // includes the first write's fault-in of a lane (measured on its own in Threads/).
  const std::uint32_t shape[1] = {static_cast<std::uint32_t>(kTensorFloats)};
  for (auto& t : g->tensor) {
    t->write_tensor(g->tensor_values.data(), mltap::DType::float32, shape, 1, {});
  }
  g->row->write(std::span<const float>(g->row_values, kFeatures));
  g->c.load();
  for (int r = 0; r < 2; ++r) setup_side(g->sides[r], r == 1);
}

void teardown() {
  if (!g) return;
  const auto row = g->row->stats();
  std::fprintf(stderr, "bench/row: %llu rows written, %llu committed\n",
               static_cast<unsigned long long>(row.rows_written),
               static_cast<unsigned long long>(row.rows_committed));
  for (auto& side : g->sides) teardown_side(side);
  delete g;  // streams unlink their segments (no agent in this namespace), then the dir goes
  g = nullptr;
}

std::span<const float> row_span() { return {g->row_values, kFeatures}; }

// Share of iterations for which `count` happened (summed over threads by Google Benchmark).
benchmark::Counter share(std::uint64_t count) {
  return benchmark::Counter(static_cast<double>(count), benchmark::Counter::kAvgIterations);
}

// ---------------------------------------------------------------------------------------------
// Write/ and Sampled/: one row of 64 float32 through each SDK entry point.

// Rows of `stream` the reader has decoded so far (0 without a reader).
std::uint64_t rows_read(Side& side, const std::string& stream) {
  if (!side.reader) return 0;
  const auto snap = side.reader->fresh_snapshot(std::chrono::milliseconds(100));
  for (const auto& st : snap->streams) {
    if (st.info.name == stream) return st.records_total;
  }
  return 0;
}

// The timed loop for one entry point; `Result` is what counts as the expected outcome.
template <class Fn>
std::uint64_t run_loop(benchmark::State& state, Fn&& fn) {
  std::uint64_t hits = 0;
  for (auto _ : state) hits += fn() ? 1 : 0;
  return hits;
}

std::uint64_t run_matrix(benchmark::State& state, Side& side, bool sampled) {
  const auto api = static_cast<Api>(state.range(0));
  const bool tid = state.range(1) != 0;
  const float* v = g->row_values;
  const std::uint32_t shape[1] = {static_cast<std::uint32_t>(kFeatures)};
  std::uint64_t id = 1;
  const int want_c = sampled ? MLTAP_SAMPLED_OUT : MLTAP_WRITTEN;
  const WriteResult want = sampled ? WriteResult::sampled_out : WriteResult::written;
  if (api == kCpp) {
    Stream& s = sampled ? *side.sampled[api][tid] : *side.row[api];
    const auto row = row_span();
    if (tid) return run_loop(state, [&] { return s.write(row, mltap::TraceId{id++}) == want; });
    return run_loop(state, [&] { return s.write(row) == want; });
  }
  mltap_stream* cs = sampled ? side.c_sampled[api][tid] : side.c_row[api];
  if (api == kCF32) {
    const auto f = g->c.write_f32;
    if (tid) return run_loop(state, [&] { return f(cs, v, kFeatures, 1, id++) == want_c; });
    return run_loop(state, [&] { return f(cs, v, kFeatures, 0, 0) == want_c; });
  }
  const auto f = g->c.write;
  if (tid) {
    return run_loop(state, [&] {
      ++id;
      return f(cs, v, MLTAP_FLOAT32, shape, 1, 1, &id) == want_c;
    });
  }
  return run_loop(state, [&] { return f(cs, v, MLTAP_FLOAT32, shape, 1, 1, nullptr) == want_c; });
}

// Arguments: api (0 C++ Stream::write, 1 mltap_write_f32, 2 mltap_write), tid (a trace id per
// row), reader (mltapd's ingest library polling the namespace on another thread).
void Write(benchmark::State& state) {
  Side& side = g->sides[state.range(2) != 0];
  const auto api = static_cast<Api>(state.range(0));
  const std::uint64_t read_before = rows_read(side, side.row_name[api]);
  const std::uint64_t written = run_matrix(state, side, false);
  state.counters["written_share"] = share(written);
  if (side.reader) {
    // Share of the written rows the reader decoded during the run (the rest it lost to
    // overwriting, or reads after the run): shows that it really read alongside.
    state.counters["read_share"] = share(rows_read(side, side.row_name[api]) - read_before);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kRowBytes));
}

// The sampler has seen far more than its budget of 1 row/s: it keeps about one row in millions.
void Sampled(benchmark::State& state) {
  Side& side = g->sides[state.range(2) != 0];
  const auto api = static_cast<Api>(state.range(0));
  const bool tid = state.range(1) != 0;
  static bool warm[2][kApis][2] = {};
  bool& w = warm[state.range(2) != 0][api][tid];
  if (!w) {
    // Two sampling windows (~268 ms each) flat out, so that the keep share is set.
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(600);
    std::uint64_t id = 1u << 30;
    while (std::chrono::steady_clock::now() < until) {
      for (int i = 0; i < 1000; ++i) write_row(side, api, true, tid, id++);
    }
    w = true;
  }
  state.counters["sampled_out_share"] = share(run_matrix(state, side, true));
}

// ---------------------------------------------------------------------------------------------
// Row: 64 float32.

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

// First write on the lane of a new 4 MiB stream with one lane. Counter open_us: opening the
// stream (creating the file; SDKs that reserve and fault in the first lane's pages at open,
// so that no write takes a page fault, pay that here instead of at the first write).
void Threads_FirstWriteFreshLane(benchmark::State& state) {
  double open_total = 0;
  for (auto _ : state) {
    StreamOptions o = bench::row_stream_options(g->dir, kFeatures);
    o.lanes = 1;
    const auto t0 = std::chrono::steady_clock::now();
    Stream s("bench/fresh", o);
    const auto t1 = std::chrono::steady_clock::now();
    s.write(row_span());
    const auto t2 = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(t2 - t1).count());
    open_total += std::chrono::duration<double>(t1 - t0).count();
  }
  state.counters["open_us"] = benchmark::Counter(open_total * 1e6 / static_cast<double>(state.iterations()));
}

}  // namespace

BENCHMARK(Write)->ArgsProduct({{kCpp, kCF32, kCWrite}, {0, 1}, {0, 1}})->ArgNames({"api", "tid", "reader"});
BENCHMARK(Sampled)->ArgsProduct({{kCpp, kCF32, kCWrite}, {0, 1}, {0, 1}})->ArgNames({"api", "tid", "reader"});
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


BENCHMARK(Threads_MltapWrite)->Threads(1)->Threads(2);
BENCHMARK(Threads_Memcpy)->Threads(1)->Threads(2);
BENCHMARK(Threads_FirstWriteReusedLane)->UseManualTime()->Iterations(2000);
BENCHMARK(Threads_FirstWriteFreshLane)->UseManualTime()->Iterations(20)->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);  // the reader logs discoveries at info
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
