// The calibration map of a predictions stream's reference (docs/performance.md, "Estimates"):
// isotonic regression of the label on the score, fitted by pool-adjacent-violators on labelled
// (score, label) pairs, and kept only when it lowers the expected calibration error on held-out
// folds. Predicting interpolates linearly between the fitted points and clips outside them, as
// scikit-learn's IsotonicRegression(out_of_bounds="clip") does, so an independent oracle can
// check it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "agent/performance/realized.hpp"

namespace mltap::performance {

class IsotonicMap {
 public:
  IsotonicMap() = default;
  // Non-decreasing least-squares fit of label on prediction. Equal predictions are pooled first
  // (their mean label, weighted by count), as scikit-learn does. Empty input: the identity.
  static IsotonicMap fit(std::span<const JoinedPair> pairs);
  // The fitted value at x (linear between the fitted points, clipped outside; NaN stays NaN).
  double operator()(double x) const noexcept;
  const std::vector<double>& xs() const noexcept { return x_; }
  const std::vector<double>& ys() const noexcept { return y_; }

 private:
  // Predictions, ascending, and their fitted values: the ends of each constant run.
  std::vector<double> x_, y_;
};

// Binned expected calibration error: `bins` equal-width bins on [0, 1] (probabilities clipped),
// sum over bins of n_b / N * |mean(label)_b - mean(p)_b|; labels non-zero are positive.
// `probabilities[i]` goes with `pairs[i].label`. 0 for no pairs.
double expected_calibration_error(std::span<const double> probabilities, std::span<const JoinedPair> pairs,
                                  std::uint32_t bins);

// What the reference's pairs say about calibrating: the map, and whether to use it. Fold f holds
// pairs i with i % folds == f (the order they were collected in); each fold is predicted by the
// map fitted on the others; the isotonic map is used only when the held-out ECE of the pooled
// out-of-fold predictions is lower than the raw scores' ECE on the same pairs.
struct CalibrationChoice {
  IsotonicMap map;             // fitted on all pairs
  bool calibrated = false;     // map used (else the raw scores are taken as probabilities)
  double ece_raw = 0;
  double ece_calibrated = 0;   // held-out (out-of-fold)
  double apply(double score) const noexcept {
    return calibrated ? map(score) : score;
  }
};
CalibrationChoice choose_calibration(std::span<const JoinedPair> pairs, std::uint32_t folds,
                                     std::uint32_t bins);

}  // namespace mltap::performance
