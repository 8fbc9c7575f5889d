#include "agent/performance/realized.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mltap::performance {

std::optional<double> roc_auc(std::span<JoinedPair> pairs) {
  std::sort(pairs.begin(), pairs.end(),
            [](const JoinedPair& a, const JoinedPair& b) { return a.prediction < b.prediction; });
  double positives = 0, rank_sum = 0;
  std::size_t i = 0;
  while (i < pairs.size()) {
    std::size_t j = i;
    double pos_in_tie = 0;
    while (j < pairs.size() && pairs[j].prediction == pairs[i].prediction) {
      if (pairs[j].label != 0) ++pos_in_tie;
      ++j;
    }
    // Ranks i+1 .. j share their average.
    const double avg_rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;
    rank_sum += pos_in_tie * avg_rank;
    positives += pos_in_tie;
    i = j;
  }
  const double negatives = static_cast<double>(pairs.size()) - positives;
  if (positives == 0 || negatives == 0) return std::nullopt;
  return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives);
}

core::RealizedMetrics compute_metrics(format::Task task, std::span<JoinedPair> pairs,
                                      const MetricOptions& o) {
  core::RealizedMetrics m;
  const double n = static_cast<double>(pairs.size());
  if (pairs.empty()) return m;
  switch (task) {
    case format::Task::binary: {
      double tp = 0, fp = 0, fn = 0, tn = 0, loss = 0;
      const std::uint32_t bins = std::max<std::uint32_t>(1, o.calibration_bins);
      std::vector<double> bin_n(bins, 0), bin_p(bins, 0), bin_y(bins, 0);
      for (const auto& p : pairs) {
        const bool y = p.label != 0;
        const bool yhat = p.prediction >= o.threshold;
        if (y && yhat) ++tp;
        else if (!y && yhat) ++fp;
        else if (y && !yhat) ++fn;
        else ++tn;
        const double q = std::clamp(p.prediction, kLogLossEps, 1.0 - kLogLossEps);
        loss -= y ? std::log(q) : std::log1p(-q);
        const double c = std::clamp(p.prediction, 0.0, 1.0);
        const auto b = std::min<std::uint32_t>(bins - 1, static_cast<std::uint32_t>(c * bins));
        bin_n[b] += 1;
        bin_p[b] += c;
        bin_y[b] += y ? 1 : 0;
      }
      m.accuracy = (tp + tn) / n;
      if (tp + fp > 0) m.precision = tp / (tp + fp);
      if (tp + fn > 0) m.recall = tp / (tp + fn);
      if (tp + fp + fn > 0) m.f1 = 2 * tp / (2 * tp + fp + fn);
      m.log_loss = loss / n;
      double ece = 0;
      for (std::uint32_t b = 0; b < bins; ++b) {
        if (bin_n[b] > 0) ece += std::fabs(bin_y[b] / bin_n[b] - bin_p[b] / bin_n[b]) * bin_n[b] / n;
      }
      m.calibration_error = ece;
      m.roc_auc = roc_auc(pairs);
      break;
    }
    case format::Task::multiclass: {
      double right = 0;
      for (const auto& p : pairs) right += std::nearbyint(p.prediction) == std::nearbyint(p.label) ? 1 : 0;
      m.accuracy = right / n;
      break;
    }
    case format::Task::regression: {
      double abs = 0, sq = 0;
      for (const auto& p : pairs) {
        const double e = p.prediction - p.label;
        abs += std::fabs(e);
        sq += e * e;
      }
      m.mae = abs / n;
      m.rmse = std::sqrt(sq / n);
      break;
    }
    case format::Task::none: break;
  }
  return m;
}

}  // namespace mltap::performance
