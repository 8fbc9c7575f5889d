// Realized performance of one window from its joined (prediction, label) pairs: the
// computations behind core::RealizedMetrics, exact (ROC AUC by ranks with ties averaged).
#pragma once

#include <cstdint>
#include <span>

#include "core/performance_state.hpp"
#include "mltap/format.hpp"

namespace mltap::performance {

struct JoinedPair {
  double prediction;  // binary: P(positive); multiclass: the predicted class; regression: value
  double label;       // binary: 0/1 (non-zero is positive); multiclass: class; regression: value
};

// Clipping of probabilities for the log loss (as scikit-learn's historical eps).
inline constexpr double kLogLossEps = 1e-15;

struct MetricOptions {
  double threshold = 0.5;
  std::uint32_t calibration_bins = 10;
};

// `pairs` is reordered (sorted by prediction for the AUC).
core::RealizedMetrics compute_metrics(format::Task task, std::span<JoinedPair> pairs,
                                      const MetricOptions& options);

// ROC AUC by the Mann-Whitney statistic with average ranks for tied scores; nullopt with one
// class only. Sorts `pairs` by prediction.
std::optional<double> roc_auc(std::span<JoinedPair> pairs);

}  // namespace mltap::performance
