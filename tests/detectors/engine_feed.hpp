// Helpers of the engine tests (test_engine.cpp, test_findings.cpp): a small configuration and a
// feed that drives one stream through a DetectorEngine in agent time.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "agent/detectors/engine.hpp"
#include "core/batch.hpp"
#include "core/detector_state.hpp"

namespace mltap::detectors::test {

using core::DetectorSnapshot;
using core::Finding;
using core::FindingKind;
namespace fs = std::filesystem;

inline constexpr std::uint64_t kSec = 1000000000ULL;

inline EngineConfig small_config() {
  EngineConfig c;
  auto& d = c.defaults;
  d.pin_records = 4000;
  d.window_records = 2000;
  d.min_window_records = 500;
  d.window_time = std::chrono::nanoseconds(0);
  d.throughput.enabled = false;
  d.staleness.enabled = false;
  return c;
}

// Drives one stream: rows from `gen`, batches of `batch_rows`, `rate` rows per second of agent
// time, with a tick per batch.
struct Feed {
  DetectorEngine& engine;
  core::StreamInfo info;
  std::size_t cols;
  std::uint64_t now = 1700000000 * kSec;
  double rate = 1000;
  format::DType dtype = format::DType::float64;
  std::vector<std::uint32_t> shape;
  std::vector<double> buf;

  Feed(DetectorEngine& e, std::string name, std::size_t c, format::StreamKind kind = format::StreamKind::features)
      : engine(e), cols(c) {
    info.name = std::move(name);
    info.component = "test";
    info.kind = kind;
  }
  void run(std::size_t n, std::size_t batch_rows, const std::function<void(double*)>& gen) {
    for (std::size_t done = 0; done < n;) {
      const std::size_t rows = std::min(batch_rows, n - done);
      buf.assign(rows * cols, 0.0);
      for (std::size_t r = 0; r < rows; ++r) gen(buf.data() + r * cols);
      core::DecodedBatch b;
      b.stream = &info;
      b.timestamp_ns = now;
      b.dtype = dtype;
      std::vector<std::uint32_t> sh = shape.empty() ? std::vector<std::uint32_t>{static_cast<std::uint32_t>(cols)} : shape;
      b.row_shape = sh;
      b.rows = rows;
      b.cols = cols;
      b.values = buf;
      engine.on_batch(b);
      now += static_cast<std::uint64_t>(static_cast<double>(rows) / rate * 1e9);
      engine.on_tick(now);
      done += rows;
    }
    engine.publish_now();
  }
  void idle(double seconds, double tick = 1.0) {
    for (double t = 0; t < seconds; t += tick) {
      now += static_cast<std::uint64_t>(tick * 1e9);
      engine.on_tick(now);
    }
    engine.publish_now();
  }
};

inline const Finding* open_finding(const DetectorSnapshot& s, const std::string& stream, FindingKind k) {
  for (const auto& f : s.open_findings) {
    if (f.stream == stream && f.kind == k) return &f;
  }
  return nullptr;
}

inline std::size_t count_open(const DetectorSnapshot& s) { return s.open_findings.size(); }

inline fs::path tmpdir() {
  auto p = fs::temp_directory_path() / ("mltap-eng-" + std::to_string(::getpid()));
  fs::create_directories(p);
  return p;
}

}  // namespace mltap::detectors::test
