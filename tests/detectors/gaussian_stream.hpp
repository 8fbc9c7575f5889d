// One stream of N(0,1) features fed to a DetectorEngine, one feature optionally shifted: the
// feeder of the sequential-detection tests (test_sequential.cpp) and of the delay benchmark
// (bench/detectors/cusum_delay.cpp), which must see the same records to be comparable.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "agent/detectors/engine.hpp"
#include "core/batch.hpp"
#include "core/detector_state.hpp"

namespace mltap::detectors::test {

class GaussianStream {
 public:
  GaussianStream(EngineConfig c, std::uint64_t seed, std::size_t cols, std::string name = "s")
      : engine_(std::move(c)), g_(seed), cols_(cols) {
    info_.name = std::move(name);
    info_.component = "test";
  }
  // `rows` records of `cols` N(0,1) values, feature `changed` shifted by `d`, timed at 1,000
  // records/s (only the findings' timestamps depend on it).
  void feed(std::size_t rows, std::size_t changed, double d) {
    const std::pair<std::size_t, double> shift[1] = {{changed, d}};
    feed(rows, shift);
  }
  // The same with several features shifted: (feature, shift) pairs.
  void feed(std::size_t rows, std::span<const std::pair<std::size_t, double>> shifts) {
    buf_.resize(rows * cols_);
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t j = 0; j < cols_; ++j) buf_[r * cols_ + j] = z_(g_);
      for (const auto& [j, d] : shifts) buf_[r * cols_ + j] += d;
    }
    core::DecodedBatch b;
    b.stream = &info_;
    b.timestamp_ns = 1700000000000000000ULL + fed_ * 1000000ULL;
    b.dtype = format::DType::float64;
    const std::uint32_t shape[1] = {static_cast<std::uint32_t>(cols_)};
    b.row_shape = shape;
    b.rows = rows;
    b.cols = cols_;
    b.values = std::span<const double>(buf_.data(), buf_.size());
    engine_.on_batch(b);
    fed_ += rows;
  }
  std::shared_ptr<const core::DetectorSnapshot> snapshot() {
    engine_.publish_now();
    return engine_.snapshot();
  }
  std::uint64_t fed() const noexcept { return fed_; }

 private:
  DetectorEngine engine_;
  core::StreamInfo info_;
  std::mt19937_64 g_;
  std::normal_distribution<double> z_;
  std::size_t cols_;
  std::vector<double> buf_;
  std::uint64_t fed_ = 0;
};

}  // namespace mltap::detectors::test
