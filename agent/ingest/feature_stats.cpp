#include "agent/ingest/feature_stats.hpp"

#include <cmath>
#include <limits>

namespace mltap::ingest {

void FeatureStats::reset(std::size_t width, std::uint64_t window_ns, std::uint64_t now_ns) {
  acc_.assign(width, Accum{});
  totals_.assign(width, FeatureTotals{});
  closed_.assign(width, WindowStats{});
  has_closed_ = false;
  window_ns_ = window_ns;
  window_start_ns_ = now_ns;
}

void FeatureStats::add(std::span<const double> values, std::size_t rows, std::size_t cols) noexcept {
  const std::size_t width = acc_.size();
  if (width == 0 || cols < width || values.size() < rows * cols) return;
  for (std::size_t f = 0; f < width; ++f) totals_[f].values += rows;
  for (std::size_t r = 0; r < rows; ++r) {
    const double* row = values.data() + r * cols;
    for (std::size_t f = 0; f < width; ++f) {
      const double v = row[f];
      Accum& a = acc_[f];
      if (std::isfinite(v)) [[likely]] {
        if (a.n == 0) a.shift = v;
        const double d = v - a.shift;
        a.n++;
        a.sum += d;
        a.sumsq += d * d;
        a.min = v < a.min ? v : a.min;
        a.max = v > a.max ? v : a.max;
      } else if (std::isnan(v)) {
        totals_[f].nan++;
      } else {
        totals_[f].inf++;
      }
    }
  }
}

WindowStats FeatureStats::finish(const Accum& a) noexcept {
  WindowStats w;
  w.count = a.n;
  if (a.n == 0) return w;
  const double n = static_cast<double>(a.n);
  const double mean_d = a.sum / n;
  w.mean = a.shift + mean_d;
  // Finite values can still overflow the sums (|x| near 1e300): say so with +Inf, not 0.
  const double var = a.sumsq / n - mean_d * mean_d;
  w.variance = std::isfinite(var) ? std::max(0.0, var) : std::numeric_limits<double>::infinity();
  w.min = a.min;
  w.max = a.max;
  return w;
}

void FeatureStats::tick(std::uint64_t now_ns) noexcept {
  if (window_ns_ == 0 || now_ns < window_start_ns_ + window_ns_) return;
  for (std::size_t f = 0; f < acc_.size(); ++f) {
    // An empty window keeps the previous numbers: a quiet feature is not a zero mean.
    if (acc_[f].n > 0 || !has_closed_) closed_[f] = finish(acc_[f]);
    acc_[f] = Accum{};
  }
  has_closed_ = true;
  window_start_ns_ = now_ns;
}

WindowStats FeatureStats::window(std::size_t f) const noexcept {
  if (f >= acc_.size()) return {};
  return has_closed_ ? closed_[f] : finish(acc_[f]);
}

}  // namespace mltap::ingest
