// Per-stream state stays small and independent of the window size (issue 12): a stream of 32
// features, reference pinned and windows full (current and previous), at most 100 KiB in the
// engine's own accounting, with the default settings. The accounting itself is checked against
// what malloc handed out for the same streams, so that a representation the accounting forgets
// cannot pass unnoticed.
#include <gtest/gtest.h>

#include <malloc.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "agent/detectors/engine.hpp"

using namespace mltap;
using namespace mltap::detectors;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kMallocCounts = false;  // the sanitizers' allocators do not report to mallinfo2
#else
constexpr bool kMallocCounts = true;
#endif

namespace {

constexpr std::size_t kFeatures = 32;
constexpr std::uint64_t kSec = 1000000000ULL;
// Issue 12 asks for 100 KiB. Measured 89 KiB (90,847 bytes): the noise-floor estimates are a
// fixed inline float table per feature (NoiseTable, ~190 bytes instead of ~750 in vectors), and
// numeric features no longer carry empty categorical state or an inactive fleet map (123 KiB
// before these).
constexpr std::size_t kBound = 100 * 1024;

// 28 continuous features (normal, log-normal, rounded) and 4 small integer ones (categorical).
void fill_row(std::mt19937_64& g, double* row, bool continuous) {
  std::normal_distribution<double> z;
  for (std::size_t j = 0; j < kFeatures; ++j) {
    const double x = z(g);
    if (continuous) {  // the costlier case: every feature numeric with fine bins
      row[j] = x;
      continue;
    }
    if (j < 20) row[j] = x * (1 + j) + static_cast<double>(j);
    else if (j < 24) row[j] = std::exp(x);
    else if (j < 28) row[j] = std::round(x * 10) / 10;
    else row[j] = static_cast<double>(static_cast<int>(std::fabs(x) * 3) % 7);
  }
}

struct Streams {
  DetectorEngine engine;
  std::vector<core::StreamInfo> infos;
  std::uint64_t now = 1700000000ULL * kSec;
  std::mt19937_64 g{12};

  bool continuous = false;
  std::size_t batch_rows = 100;

  Streams(EngineConfig c, std::size_t n, bool all_continuous = false, std::size_t rows_per_batch = 100)
      : engine(std::move(c)), infos(n), continuous(all_continuous), batch_rows(rows_per_batch) {
    for (std::size_t i = 0; i < n; ++i) {
      infos[i].name = "state/s" + std::to_string(i);
      infos[i].component = "test";
      infos[i].kind = format::StreamKind::features;
    }
  }
  // rows per stream, in batches of batch_rows rows, streams interleaved; a tick every 100 rows.
  void feed(std::size_t rows) {
    std::vector<double> buf(batch_rows * kFeatures);
    const std::uint32_t shape[1] = {static_cast<std::uint32_t>(kFeatures)};
    for (std::size_t done = 0; done < rows; done += batch_rows) {
      for (auto& info : infos) {
        for (std::size_t r = 0; r < batch_rows; ++r) fill_row(g, buf.data() + r * kFeatures, continuous);
        core::DecodedBatch b;
        b.stream = &info;
        b.timestamp_ns = now;
        b.dtype = format::DType::float64;
        b.row_shape = shape;
        b.rows = static_cast<std::uint32_t>(batch_rows);
        b.cols = kFeatures;
        b.values = buf;
        engine.on_batch(b);
      }
      if ((done + batch_rows) % 100 == 0) {
        now += kSec;
        engine.on_tick(now);
      }
    }
  }
};

EngineConfig config_with_window(std::uint64_t window_records) {
  EngineConfig c;  // defaults: pin 20,000 records, fine bins as configured by default
  c.defaults.window_records = window_records;
  c.defaults.window_time = std::chrono::nanoseconds(0);
  return c;
}

std::uint64_t per_stream_after_two_windows(std::uint64_t window_records, std::size_t streams,
                                           std::size_t* malloc_per_stream = nullptr,
                                           bool continuous = false, std::size_t batch_rows = 100) {
  const auto before = mallinfo2().uordblks;
  Streams s(config_with_window(window_records), streams, continuous, batch_rows);
  s.feed(config_with_window(window_records).defaults.pin_records + 2 * window_records + 100);
  s.engine.checkpoint();  // the pinned documents go to the state store
  s.engine.publish_now();
  const auto snap = s.engine.snapshot();
  EXPECT_EQ(snap->streams.size(), streams);
  for (const auto& st : snap->streams) {
    EXPECT_EQ(st->reference, core::ReferenceSource::pinned) << st->name;
    EXPECT_GE(st->windows_closed, 2u) << st->name << ": current and previous windows both full";
    EXPECT_EQ(st->features_analyzed, kFeatures);
  }
  if (malloc_per_stream) *malloc_per_stream = (mallinfo2().uordblks - before) / streams;
  return s.engine.memory_bytes() / streams;
}

// At most kBound in the engine's accounting, and that accounting covers the state malloc sees
// (the rest: snapshot, engine tables).
void expect_bounded_and_accounted(std::uint64_t bytes, std::size_t malloced) {
  std::printf("engine accounting %zu bytes per stream, malloc'ed %zu (incl. the published snapshot)\n",
              static_cast<std::size_t>(bytes), malloced);
  EXPECT_LE(bytes, kBound);
  if (!kMallocCounts) return;
  EXPECT_LE(bytes, malloced);
  EXPECT_GE(bytes * 2, malloced) << "the engine's accounting misses most of the per-stream memory";
}

TEST(StreamState, AtMost100KiBFor32FeaturesWithDefaults) {
  std::size_t malloced = 0;
  const auto bytes = per_stream_after_two_windows(5000, 4, &malloced);
  RecordProperty("engine_bytes_per_stream", static_cast<int>(bytes));
  RecordProperty("malloc_bytes_per_stream", static_cast<int>(malloced));
  expect_bounded_and_accounted(bytes, malloced);
}

// The benchmark's streams (bench/detectors/stream_scale.py): 32 continuous features, records of
// 10 rows (small records wait in the engine's one staging buffer, not in one per stream).
TEST(StreamState, AtMost100KiBFor32ContinuousFeaturesInSmallRecords) {
  std::size_t malloced = 0;
  const auto bytes = per_stream_after_two_windows(1000, 4, &malloced, true, 10);
  expect_bounded_and_accounted(bytes, malloced);
}

TEST(StreamState, DoesNotGrowWithTheWindowSize) {
  const auto small = per_stream_after_two_windows(2000, 1);
  const auto large = per_stream_after_two_windows(40000, 1);
  std::printf("windows of 2,000: %zu bytes; of 40,000: %zu bytes\n", static_cast<std::size_t>(small),
              static_cast<std::size_t>(large));
  EXPECT_LE(large, kBound);
  // Same bins, same counters: at most a few hundred bytes apart (names, rounding of capacities).
  EXPECT_LE(large, small + 1024);
}

}  // namespace
