#include "agent/performance/calibration.hpp"

#include <algorithm>
#include <cmath>

namespace mltap::performance {

IsotonicMap IsotonicMap::fit(std::span<const JoinedPair> pairs) {
  IsotonicMap m;
  std::vector<JoinedPair> sorted(pairs.begin(), pairs.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const JoinedPair& a, const JoinedPair& b) { return a.prediction < b.prediction; });
  // Unique predictions with their pooled labels (weight = count).
  std::vector<double> xs, ys, ws;
  for (const auto& p : sorted) {
    const double y = p.label != 0 ? 1.0 : 0.0;
    if (!xs.empty() && xs.back() == p.prediction) {
      ys.back() += y;
      ws.back() += 1;
    } else {
      xs.push_back(p.prediction);
      ys.push_back(y);
      ws.push_back(1);
    }
  }
  for (std::size_t i = 0; i < ys.size(); ++i) ys[i] /= ws[i];
  // Pool adjacent violators: a stack of blocks (mean, weight, number of unique points); a new
  // point merges backwards while it would make the sequence decrease.
  struct Block {
    double mean, weight;
    std::size_t count;
  };
  std::vector<Block> blocks;
  blocks.reserve(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    Block b{ys[i], ws[i], 1};
    while (!blocks.empty() && blocks.back().mean >= b.mean) {
      const Block& top = blocks.back();
      const double w = top.weight + b.weight;
      b = Block{(top.mean * top.weight + b.mean * b.weight) / w, w, top.count + b.count};
      blocks.pop_back();
    }
    blocks.push_back(b);
  }
  std::vector<double> fitted;
  fitted.reserve(xs.size());
  for (const Block& b : blocks) fitted.insert(fitted.end(), b.count, b.mean);
  // Only the first and last point of each constant run matter to the interpolation (as
  // scikit-learn drops the others): a few dozen points, so a prediction's binary search stays in
  // the cache.
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (i == 0 || i + 1 == xs.size() || fitted[i] != fitted[i - 1] || fitted[i] != fitted[i + 1]) {
      m.x_.push_back(xs[i]);
      m.y_.push_back(fitted[i]);
    }
  }
  return m;
}

double IsotonicMap::operator()(double x) const noexcept {
  if (x_.empty() || std::isnan(x)) return x;
  if (x <= x_.front()) return y_.front();
  if (x >= x_.back()) return y_.back();
  const auto it = std::upper_bound(x_.begin(), x_.end(), x);
  const auto hi = static_cast<std::size_t>(it - x_.begin());
  const std::size_t lo = hi - 1;
  const double t = (x - x_[lo]) / (x_[hi] - x_[lo]);
  return y_[lo] + t * (y_[hi] - y_[lo]);
}

double expected_calibration_error(std::span<const double> probabilities, std::span<const JoinedPair> pairs,
                                  std::uint32_t bins) {
  bins = std::max<std::uint32_t>(1, bins);
  std::vector<double> n(bins), p(bins), y(bins);
  const std::size_t count = std::min(probabilities.size(), pairs.size());
  if (count == 0) return 0;
  for (std::size_t i = 0; i < count; ++i) {
    const double c = std::clamp(probabilities[i], 0.0, 1.0);
    const auto b = std::min<std::uint32_t>(bins - 1, static_cast<std::uint32_t>(c * bins));
    n[b] += 1;
    p[b] += c;
    y[b] += pairs[i].label != 0 ? 1 : 0;
  }
  double ece = 0;
  for (std::uint32_t b = 0; b < bins; ++b) {
    if (n[b] > 0) ece += std::fabs(y[b] / n[b] - p[b] / n[b]) * n[b] / static_cast<double>(count);
  }
  return ece;
}

CalibrationChoice choose_calibration(std::span<const JoinedPair> pairs, std::uint32_t folds,
                                     std::uint32_t bins) {
  CalibrationChoice c;
  c.map = IsotonicMap::fit(pairs);
  folds = std::max<std::uint32_t>(2, folds);
  std::vector<double> raw(pairs.size()), held_out(pairs.size());
  for (std::size_t i = 0; i < pairs.size(); ++i) raw[i] = pairs[i].prediction;
  std::vector<JoinedPair> train;
  train.reserve(pairs.size());
  for (std::uint32_t f = 0; f < folds; ++f) {
    train.clear();
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      if (i % folds != f) train.push_back(pairs[i]);
    }
    const IsotonicMap m = IsotonicMap::fit(train);
    for (std::size_t i = f; i < pairs.size(); i += folds) held_out[i] = m(pairs[i].prediction);
  }
  c.ece_raw = expected_calibration_error(raw, pairs, bins);
  c.ece_calibrated = expected_calibration_error(held_out, pairs, bins);
  c.calibrated = pairs.size() >= folds && c.ece_calibrated < c.ece_raw;
  return c;
}

}  // namespace mltap::performance
