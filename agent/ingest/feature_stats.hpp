// First statistics per feature of a stream: lifetime counts of values, NaN and Inf, and the
// count, mean, variance, min and max of finite values over tumbling time windows. Updated on the
// ingest thread; the last closed window is what the gauges show.
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace mltap::ingest {

struct WindowStats {
  std::uint64_t count = 0;  // finite values
  double mean = 0;
  double variance = 0;      // population variance of the window's finite values
  double min = 0;
  double max = 0;
};

struct FeatureTotals {
  std::uint64_t values = 0;  // finite or not
  std::uint64_t nan = 0;
  std::uint64_t inf = 0;
};

class FeatureStats {
 public:
  FeatureStats() = default;
  // Tracks the first `width` columns of each row (width <= the stream's columns).
  void reset(std::size_t width, std::uint64_t window_ns, std::uint64_t now_ns);
  std::size_t width() const noexcept { return acc_.size(); }

  // `values` holds rows x cols, row-major; cols >= width().
  void add(std::span<const double> values, std::size_t rows, std::size_t cols) noexcept;
  // Closes the window if it has run its length.
  void tick(std::uint64_t now_ns) noexcept;

  const FeatureTotals& totals(std::size_t f) const noexcept { return totals_[f]; }
  // Last closed window; the running one until the first window closes.
  WindowStats window(std::size_t f) const noexcept;
  bool has_closed_window() const noexcept { return has_closed_; }

 private:
  struct Accum {
    std::uint64_t n = 0;
    double shift = 0;  // first value of the window: sums of (x - shift) keep variance accurate
    double sum = 0;
    double sumsq = 0;
    double min = std::numeric_limits<double>::infinity();
    double max = -std::numeric_limits<double>::infinity();
  };
  static WindowStats finish(const Accum& a) noexcept;

  std::vector<Accum> acc_;
  std::vector<FeatureTotals> totals_;
  std::vector<WindowStats> closed_;
  bool has_closed_ = false;
  std::uint64_t window_ns_ = 0;
  std::uint64_t window_start_ns_ = 0;
};

}  // namespace mltap::ingest
